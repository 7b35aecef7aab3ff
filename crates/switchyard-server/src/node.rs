//! This node's presence in the store: a heartbeat row other nodes (and `/v1/cluster`) see.
//! Heartbeats use real time, never the scaled business clock.

use chrono::Duration;
use std::time::Duration as StdDuration;
use switchyard_core::SharedClock;
use switchyard_store::SharedStore;
use tokio_util::sync::CancellationToken;

pub const HEARTBEAT_EVERY: StdDuration = StdDuration::from_secs(10);
/// A node whose last heartbeat is older than this is considered gone.
pub const LIVE_WITHIN: Duration = Duration::seconds(30);
/// A node gone this long is removed from the registry.
pub const FORGET_AFTER: Duration = Duration::days(1);

pub struct Heartbeat {
    pub store: SharedStore,
    pub clock: SharedClock,
    pub node_id: String,
    pub info: serde_json::Value,
}

impl Heartbeat {
    pub async fn beat(&self) -> switchyard_store::Result<()> {
        self.store
            .heartbeat_node(&self.node_id, self.info.clone(), self.clock.real_now())
            .await
    }

    pub async fn run(self, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tick.tick() => {
                    if let Err(e) = self.beat().await {
                        tracing::warn!(error = %e, node = %self.node_id, "heartbeat failed");
                    }
                    let stale = self.clock.real_now() - FORGET_AFTER;
                    if let Err(e) = self.store.forget_nodes(stale).await {
                        tracing::warn!(error = %e, "cannot prune the node registry");
                    }
                }
            }
        }
    }
}
