//! `switchyard serve`: opens the store, builds the clock, starts every service on one
//! `TaskTracker`, and shuts them down in order on SIGTERM/SIGINT: stop accepting, finish
//! in-flight requests, stop background services, flush the store's writer, exit 0.

use crate::{ServeArgs, redact_url, store_options};
use anyhow::Context;
use std::sync::Arc;
use std::time::Duration;
use switchyard_core::{Clock, Config, ScaledClock, ScaledOrigin, SharedClock, SystemClock};
use switchyard_server::retention::{Retention, Usage};
use switchyard_server::{AppState, Limits, jobs::JobRunner, node::Heartbeat};
use switchyard_store::SharedStore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const CLOCK_ORIGIN_KEY: &str = "clock.origin";

/// The business clock: real time, or a scaled clock whose origin is kept in the store so a
/// restart continues the same simulated day.
pub async fn business_clock(store: &SharedStore, scale: f64) -> anyhow::Result<SharedClock> {
    if scale == 1.0 {
        return Ok(Arc::new(SystemClock));
    }
    let previous = match store.get_meta(CLOCK_ORIGIN_KEY).await? {
        Some(text) => serde_json::from_str::<ScaledOrigin>(&text).ok(),
        None => None,
    };
    let origin = ScaledOrigin::resume(previous, scale, SystemClock.now());
    store
        .set_meta(CLOCK_ORIGIN_KEY, &serde_json::to_string(&origin)?)
        .await?;
    tracing::info!(
        scale,
        business_now = %ScaledClock::new(origin).now(),
        resumed = previous.is_some(),
        "business time is scaled"
    );
    Ok(Arc::new(ScaledClock::new(origin)))
}

pub fn node_id(config: &Config) -> String {
    if let Some(id) = &config.node.id {
        return id.clone();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".into());
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..6];
    format!("{host}-{suffix}")
}

/// A cancellation token fired by SIGTERM or SIGINT.
pub fn shutdown_signal() -> CancellationToken {
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term => {},
        }
        tracing::info!("shutdown requested");
        c.cancel();
    });
    cancel
}

/// A running server: its address, and how to stop it.
pub struct Running {
    pub addr: std::net::SocketAddr,
    pub state: AppState,
    cancel: CancellationToken,
    tracker: TaskTracker,
    store: SharedStore,
    _lock: Option<ServerLock>,
}

/// One server per SQLite file: an exclusive `flock` on `<file>.lock`, held while serving and
/// released by the kernel when the process ends, even by SIGKILL. (`token create` and
/// `migrate` do not take it: SQLite's own locking serialises them with the server.)
pub struct ServerLock(#[allow(dead_code)] std::fs::File);

impl ServerLock {
    fn take(db: &std::path::Path) -> anyhow::Result<ServerLock> {
        use std::os::fd::AsRawFd;
        let path = std::path::PathBuf::from(format!("{}.lock", db.display()));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        // SAFETY: flock on a file descriptor we own; no memory is shared.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        anyhow::ensure!(
            r == 0,
            "another `switchyard serve` is already using {} (lock {} is held)",
            db.display(),
            path.display()
        );
        Ok(ServerLock(file))
    }
}

impl Running {
    /// Waits until `cancel` fires and every service has stopped; flushes the store.
    pub async fn wait(self) {
        self.cancel.cancelled().await;
        self.tracker.close();
        self.tracker.wait().await;
        self.store.close().await;
        tracing::info!("stopped; the store is flushed");
    }
}

/// Opens everything and starts serving; returns at once with a handle.
pub async fn start(
    config: &Config,
    args: &ServeArgs,
    cancel: CancellationToken,
) -> anyhow::Result<Running> {
    let url = &config.store.url;
    let lock = match switchyard_store::sqlite_path(url) {
        Some(db) => Some(ServerLock::take(&db)?),
        None => None,
    };
    let store = switchyard_store::open(url, &store_options(config)?)
        .await
        .with_context(|| format!("opening the store {}", redact_url(url)))?;
    let scale = args.time_scale.unwrap_or(config.clock.scale);
    anyhow::ensure!(
        scale.is_finite() && scale > 0.0,
        "--time-scale must be a positive number"
    );
    let clock = business_clock(&store, scale).await?;
    let listen = args.listen.unwrap_or(config.server.listen);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let node = node_id(config);
    let state = AppState::new(
        store.clone(),
        clock.clone(),
        Limits {
            max_body_bytes: config.ingest.max_body_bytes,
            allowed_origins: config.ingest.allowed_origins.clone(),
        },
        &node,
    )
    .with_sources(
        switchyard_core::sources::Sources::compile(config)
            .map_err(|p| anyhow::anyhow!("sources: {p:?}"))?,
    );
    let flows = switchyard_core::flows::Flows::compile(config)
        .map_err(|p| anyhow::anyhow!("flows: {p:?}"))?;
    let engine = switchyard_deliver::Engine::new(
        store.clone(),
        clock.clone(),
        std::sync::Arc::new(flows),
        node.clone(),
        config.delivery.clone(),
    )
    .context("building the delivery engine")?;
    let state = state.with_engine(engine.clone());
    let probe_targets =
        switchyard_server::probes::targets(config).map_err(|e| anyhow::anyhow!(e))?;
    let state = state.with_probes(switchyard_server::probes::Prober::new(
        probe_targets,
        store.clone(),
        clock.clone(),
        node.clone(),
        config.probes.clone(),
    ));
    let capture =
        switchyard_server::odoo_capture::Capture::from_config(config, &state.sources, &node)
            .map_err(|e| anyhow::anyhow!(e))?;
    let state = state.with_capture(capture);
    let workflows = std::sync::Arc::new(
        switchyard_core::workflows::Workflows::compile(config)
            .map_err(|p| anyhow::anyhow!("workflows: {p:?}"))?,
    );
    let state = state.with_workflows(workflows.clone());
    let batch = std::sync::Arc::new(
        switchyard_core::batch::BatchMonitors::compile(&config.batch_monitors)
            .map_err(|p| anyhow::anyhow!("batch monitors: {p:?}"))?,
    );
    let state = state.with_batch_monitors(batch.clone());
    let state = state.with_reconciliations(std::sync::Arc::new(
        config
            .compiled_reconciliations()
            .map_err(|p| anyhow::anyhow!("reconciliations: {p:?}"))?,
    ));
    let reconciler = std::sync::Arc::new(
        switchyard_server::reconcile::Reconciler::from_config(
            config,
            store.clone(),
            clock.clone(),
            &node,
        )
        .map_err(|e| anyhow::anyhow!(e))?,
    );
    let alerts = std::sync::Arc::new(
        switchyard_server::alerting::AlertService::new(
            config,
            store.clone(),
            clock.clone(),
            state.engine.clone(),
            workflows.clone(),
            &node,
        )
        .map_err(|e| anyhow::anyhow!(e))?,
    );
    let state = state.with_alerting(alerts.alerting().clone());
    let monitor = switchyard_monitor::Monitor::new(
        store.clone(),
        clock.clone(),
        state.sources.clone(),
        workflows,
        node.clone(),
        switchyard_monitor::Settings {
            page_size: config.monitor.page_size as usize,
            archive_after: chrono::Duration::days(config.monitor.archive_after_days.into()),
            ..Default::default()
        },
    )
    .with_batch_monitors(batch);
    let usage = Usage {
        store: store.clone(),
        clock: clock.clone(),
        sources: state.sources.clone(),
        map: state.usage.clone(),
        every: Duration::from_secs(30),
    };
    usage
        .measure()
        .await
        .context("measuring storage per source")?;

    let heartbeat = Heartbeat {
        store: store.clone(),
        clock: clock.clone(),
        node_id: node.clone(),
        info: serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "listen": addr.to_string(),
            "pid": std::process::id(),
        }),
    };
    heartbeat.beat().await.context("registering this node")?;

    let tracker = TaskTracker::new();
    tracker.spawn(heartbeat.run(cancel.clone()));
    tracker.spawn(state.probes.clone().run(cancel.clone()));
    tracker.spawn(state.capture.clone().run(state.clone(), cancel.clone()));
    tracker.spawn(usage.run(cancel.clone()));
    tracker.spawn(monitor.run(cancel.clone()));
    tracker.spawn(reconciler.run(cancel.clone()));
    tracker.spawn(alerts.run(cancel.clone()));
    tracker.spawn(
        Retention {
            store: store.clone(),
            clock: clock.clone(),
            sources: state.sources.clone(),
            node_id: node.clone(),
            every: Duration::from_secs(config.retention.every_seconds),
        }
        .run(cancel.clone()),
    );
    tracker.spawn(
        JobRunner {
            store: store.clone(),
            clock: clock.clone(),
            node_id: node.clone(),
            state: Some(state.clone()),
        }
        .run(cancel.clone()),
    );
    engine.start().await;
    let engine_grace = Duration::from_secs(config.server.shutdown_grace_seconds);
    let engine_cancel = cancel.clone();
    tracker.spawn(async move {
        engine_cancel.cancelled().await;
        engine.shutdown(engine_grace).await;
    });
    let grace = Duration::from_secs(config.server.shutdown_grace_seconds);
    let http_state = state.clone();
    let http_cancel = cancel.clone();
    tracker.spawn(async move {
        if let Err(e) =
            switchyard_server::serve(listener, http_state, http_cancel.clone(), grace).await
        {
            tracing::error!(error = %e, "HTTP server failed");
            http_cancel.cancel();
        }
    });
    tracing::info!(%addr, node = %node, store = %redact_url(url), "switchyard is serving");
    Ok(Running {
        addr,
        state,
        cancel,
        tracker,
        store,
        _lock: lock,
    })
}

pub async fn run(config: Config, args: ServeArgs) -> anyhow::Result<()> {
    let cancel = shutdown_signal();
    let running = start(&config, &args, cancel).await?;
    println!("switchyard listening on http://{}", running.addr);
    if running.state.store.list_tokens().await?.is_empty() {
        tracing::warn!(
            "no API tokens exist yet; create the first with `switchyard token create --role admin --name admin`"
        );
    }
    running.wait().await;
    Ok(())
}
