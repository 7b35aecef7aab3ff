//! Retention and storage use, per source.
//!
//! [`Retention`] is a singleton (one node at a time, through the `retention` lease): every
//! few seconds it drops payloads older than each source's `payload_days` and forgets slim
//! rows older than `dedupe_days`, in small batches so the writer is never held long, and
//! stops as soon as its lease is taken over.
//!
//! [`Usage`] runs on every node: it measures what each source occupies, exports it as
//! metrics, and feeds the per-source quota that ingest enforces (429 for that source only).

use chrono::Duration;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use switchyard_core::SharedClock;
use switchyard_core::sources::{RetentionRule, Sources};
use switchyard_store::{Error, Lease, SharedStore, SourceScope};
use tokio_util::sync::CancellationToken;

/// Rows per purge statement.
const BATCH: usize = 500;
const LEASE: &str = "retention";

/// Stored bytes per source label, as last measured.
#[derive(Debug, Default)]
pub struct UsageMap(RwLock<HashMap<String, u64>>);

impl UsageMap {
    pub fn bytes(&self, label: &str) -> u64 {
        self.0
            .read()
            .expect("usage map")
            .get(label)
            .copied()
            .unwrap_or(0)
    }

    pub fn set(&self, m: HashMap<String, u64>) {
        *self.0.write().expect("usage map") = m;
    }
}

fn scope(rule: &RetentionRule) -> SourceScope {
    SourceScope {
        exact: rule.exact.clone(),
        prefixes: rule.prefixes.clone(),
        invert: rule.invert,
    }
}

pub struct Retention {
    pub store: SharedStore,
    pub clock: SharedClock,
    pub sources: Arc<Sources>,
    pub node_id: String,
    pub every: std::time::Duration,
}

impl Retention {
    pub async fn run(self, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(self.every);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(e) = self.pass(&cancel).await {
                tracing::warn!(error = %e, "retention pass stopped");
            }
        }
    }

    fn lease_ttl(&self) -> Duration {
        Duration::from_std(self.every * 3).unwrap_or(Duration::minutes(3))
    }

    /// One pass over every rule, if this node holds (or takes) the lease. Returns what it
    /// purged: (payloads dropped, rows forgotten).
    pub async fn pass(&self, cancel: &CancellationToken) -> Result<(u64, u64), Error> {
        let now = self.clock.real_now();
        let Some(mut lease) = self
            .store
            .acquire_lease(LEASE, &self.node_id, now, self.lease_ttl())
            .await?
        else {
            return Ok((0, 0)); // another node runs retention
        };
        let business_now = self.clock.now();
        let (mut dropped, mut forgotten) = (0, 0);
        for rule in self.sources.retention_rules() {
            let scope = scope(&rule);
            let payload_cut = business_now - Duration::days(rule.retention.payload_days.into());
            let dedupe_cut = business_now - Duration::days(rule.retention.dedupe_days.into());
            loop {
                if cancel.is_cancelled() {
                    return Ok((dropped, forgotten));
                }
                let n = self
                    .store
                    .purge_payloads(payload_cut, &scope, BATCH)
                    .await?;
                dropped += n;
                metrics::counter!("switchyard_retention_payloads_purged_total", "source" => rule.label.clone())
                    .increment(n);
                lease = self.renew(&lease).await?;
                if n < BATCH as u64 {
                    break;
                }
            }
            loop {
                if cancel.is_cancelled() {
                    return Ok((dropped, forgotten));
                }
                let n = self.store.purge_events(dedupe_cut, &scope, BATCH).await?;
                forgotten += n;
                metrics::counter!("switchyard_retention_events_forgotten_total", "source" => rule.label.clone())
                    .increment(n);
                lease = self.renew(&lease).await?;
                if n < BATCH as u64 {
                    break;
                }
            }
        }
        if dropped + forgotten > 0 {
            tracing::info!(payloads = dropped, rows = forgotten, "retention purged");
        }
        Ok((dropped, forgotten))
    }

    /// Renews between batches; a takeover (`Fenced`) ends the pass.
    async fn renew(&self, lease: &Lease) -> Result<Lease, Error> {
        self.store
            .renew_lease(lease, self.clock.real_now(), self.lease_ttl())
            .await
    }
}

pub struct Usage {
    pub store: SharedStore,
    pub sources: Arc<Sources>,
    pub map: Arc<UsageMap>,
    pub every: std::time::Duration,
}

impl Usage {
    pub async fn measure(&self) -> Result<(), Error> {
        let mut bytes: HashMap<String, u64> = HashMap::new();
        let mut events: HashMap<String, u64> = HashMap::new();
        for u in self.store.usage_by_source().await? {
            let label = self.sources.label_for(&u.source);
            *bytes.entry(label.clone()).or_default() += u.bytes.max(0) as u64;
            *events.entry(label).or_default() += u.events.max(0) as u64;
        }
        for s in self.sources.all() {
            bytes.entry(s.name.clone()).or_default();
            events.entry(s.name.clone()).or_default();
        }
        for (label, b) in &bytes {
            metrics::gauge!("switchyard_source_stored_bytes", "source" => label.clone())
                .set(*b as f64);
        }
        for (label, n) in &events {
            metrics::gauge!("switchyard_source_stored_events", "source" => label.clone())
                .set(*n as f64);
        }
        self.map.set(bytes);
        Ok(())
    }

    pub async fn run(self, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(self.every);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(e) = self.measure().await {
                tracing::warn!(error = %e, "cannot measure storage per source");
            }
        }
    }
}
