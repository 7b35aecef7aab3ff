//! Switchyard's HTTP surface: CloudEvents ingest, the `/v1` API, health, readiness and
//! Prometheus metrics, with one error shape (RFC 9457) for all of it.
//!
//! This crate owns no state of its own beyond caches: everything durable goes through the
//! store, and the binary decides what runs (it builds an [`AppState`] and calls [`serve`]).

pub mod alerting;
pub mod alerts_api;
pub mod api;
pub mod auth;
pub mod delivery_api;
pub mod error;
pub mod ingest;
pub mod jobs;
pub mod monitor_api;
pub mod node;
pub mod odoo_capture;
pub mod odoo_hooks;
pub mod probes;
pub mod reconcile;
pub mod retention;
pub mod web;
pub mod webhooks;

use crate::error::{ApiError, Problem};
use axum::Router;
use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use switchyard_core::SharedClock;
use switchyard_core::sources::Sources;
use switchyard_core::token::Permission;
use switchyard_store::SharedStore;
use tokio_util::sync::CancellationToken;

pub use auth::Caller;

/// Request limits on ingest.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub allowed_origins: Vec<String>,
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: SharedStore,
    pub clock: SharedClock,
    pub tokens: Arc<auth::TokenCache>,
    pub limits: Arc<Limits>,
    pub node_id: Arc<str>,
    pub metrics: PrometheusHandle,
    pub sources: Arc<Sources>,
    /// Stored bytes per source, for quotas (refreshed by `retention::Usage`).
    pub usage: Arc<retention::UsageMap>,
    /// Routes ingested events and sends their deliveries.
    pub engine: switchyard_deliver::Engine,
    /// API-health probes of Odoo connections and HTTP destinations.
    pub probes: Arc<probes::Prober>,
    /// The pollers and webhook hints of the odoo sources.
    pub capture: Arc<odoo_capture::Capture>,
    /// The workflows the monitor follows (as configured now).
    pub workflows: Arc<switchyard_core::workflows::Workflows>,
    /// The batch monitors heartbeats are for.
    pub batch: Arc<switchyard_core::batch::BatchMonitors>,
    /// The configured reconciliations.
    pub reconciliations: Arc<switchyard_core::reconcile::Reconciliations>,
    /// Alert rules, routes and receivers (for `/v1/routes/test`).
    pub alerting: Arc<switchyard_core::alerts::Alerting>,
}

impl AppState {
    pub fn new(store: SharedStore, clock: SharedClock, limits: Limits, node_id: &str) -> Self {
        Self {
            store: store.clone(),
            clock: clock.clone(),
            tokens: Arc::new(auth::TokenCache::default()),
            limits: Arc::new(limits),
            node_id: Arc::from(node_id),
            metrics: metrics_handle(),
            sources: Arc::new(Sources::default()),
            usage: Arc::new(retention::UsageMap::default()),
            engine: switchyard_deliver::Engine::new(
                store.clone(),
                clock.clone(),
                Arc::new(switchyard_core::flows::Flows::default()),
                node_id.to_string(),
                switchyard_core::config::DeliveryConfig::default(),
            )
            .expect("an engine without destinations always builds"),
            probes: Arc::new(probes::Prober::new(
                vec![],
                store.clone(),
                clock.clone(),
                node_id.to_string(),
                switchyard_core::odoo::ProbeConfig::default(),
            )),
            capture: Arc::new(odoo_capture::Capture::default()),
            workflows: Arc::default(),
            batch: Arc::default(),
            reconciliations: Arc::default(),
            alerting: Arc::new(switchyard_core::alerts::Alerting::empty()),
        }
    }

    /// The configured reconciliations (default: none).
    /// The compiled alerting configuration (default: nothing configured).
    pub fn with_alerting(mut self, alerting: Arc<switchyard_core::alerts::Alerting>) -> Self {
        self.alerting = alerting;
        self
    }

    pub fn with_reconciliations(
        mut self,
        recs: Arc<switchyard_core::reconcile::Reconciliations>,
    ) -> Self {
        self.reconciliations = recs;
        self
    }

    /// The configured batch monitors (default: none).
    pub fn with_batch_monitors(
        mut self,
        batch: Arc<switchyard_core::batch::BatchMonitors>,
    ) -> Self {
        self.batch = batch;
        self
    }

    /// The configured workflows (default: none).
    pub fn with_workflows(mut self, workflows: Arc<switchyard_core::workflows::Workflows>) -> Self {
        self.workflows = workflows;
        self
    }

    /// Change capture of the odoo sources (default: none).
    pub fn with_capture(mut self, capture: odoo_capture::Capture) -> Self {
        self.capture = Arc::new(capture);
        self
    }

    /// The probes (default: none).
    pub fn with_probes(mut self, probes: probes::Prober) -> Self {
        self.probes = Arc::new(probes);
        self
    }

    /// The delivery engine (default: no flows; nothing is routed).
    pub fn with_engine(mut self, engine: switchyard_deliver::Engine) -> Self {
        self.engine = engine;
        self
    }

    /// The declared sources (default: none, undeclared senders accepted).
    pub fn with_sources(mut self, sources: Sources) -> Self {
        self.sources = Arc::new(sources);
        self
    }

    pub async fn authorize(
        &self,
        headers: &HeaderMap,
        need: Permission,
    ) -> Result<Caller, ApiError> {
        auth::authorize(&self.tokens, &self.store, headers, need).await
    }
}

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let latency = [
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ];
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("switchyard_delivery_latency_seconds".into()),
                    &[
                        0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                        10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0,
                    ],
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("switchyard_store_writer_batch_size".into()),
                        &[
                            1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
                        ],
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency)
                })
                .expect("bucket lists are non-empty")
                .build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder is installed (e.g. by an embedding test).
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

async fn track_requests(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().as_str().to_owned();
    let started = Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    metrics::counter!("switchyard_http_requests_total", "route" => route.clone(), "method" => method, "status" => status)
        .increment(1);
    metrics::histogram!("switchyard_http_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    resp
}

async fn healthz() -> Response {
    axum::Json(serde_json::json!({"status": "ok"})).into_response()
}

async fn readyz(State(state): State<AppState>) -> Response {
    match tokio::time::timeout(Duration::from_secs(2), state.store.check_writable()).await {
        Ok(Ok(())) => {
            axum::Json(serde_json::json!({"status": "ready", "backend": state.store.backend()}))
                .into_response()
        }
        Ok(Err(e)) => ApiError::from(e).into_response(),
        Err(_) => ApiError::new(
            Problem::StoreUnavailable,
            "the store did not commit a probe write within 2 s",
        )
        .into_response(),
    }
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// `GET /problems/{code}`: what a problem `type` means, so the URI in every error body
/// resolves to an explanation.
async fn problem_doc(Path(code): Path<String>) -> Response {
    match Problem::from_code(&code) {
        Some(p) => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!(
                "{code}\nHTTP {}\n{}\nSee docs/http-api.md for when Switchyard answers it and what to do.\n",
                p.status(),
                p.title()
            ),
        )
            .into_response(),
        None => ApiError::new(Problem::NotFound, format!("no problem type \"{code}\"")).into_response(),
    }
}

fn count_unmatched(req: &Request, status: u16) {
    metrics::counter!("switchyard_http_requests_total", "route" => "unmatched", "method" => req.method().as_str().to_owned(), "status" => status.to_string())
        .increment(1);
}

async fn not_found(req: Request) -> Response {
    count_unmatched(&req, 404);
    ApiError::new(
        Problem::NotFound,
        format!("no route for {} {}", req.method(), req.uri().path()),
    )
    .into_response()
}

async fn method_not_allowed(req: Request) -> Response {
    count_unmatched(&req, 405);
    ApiError::new(
        Problem::MethodNotAllowed,
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
    .into_response()
}

/// Every route of the server.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/v1/events",
            axum::routing::post(ingest::post_events)
                .options(ingest::options_events)
                .get(api::list_events),
        )
        .route("/v1/events/one", get(api::get_one_event))
        .route("/v1/webhooks/{name}", axum::routing::post(webhooks::post))
        .route(
            "/v1/webhooks/{name}/{token}",
            axum::routing::post(webhooks::post_with_token),
        )
        .route("/v1/events/{seq}", get(api::get_event))
        .route("/v1/tokens", get(api::list_tokens).post(api::create_token))
        .route("/v1/tokens/{id}", axum::routing::delete(api::revoke_token))
        .route("/v1/jobs", get(api::list_jobs).post(api::create_job))
        .route("/v1/jobs/{id}", get(api::get_job))
        .route("/v1/audit", get(api::list_audit))
        .route("/v1/cluster", get(api::cluster))
        .route("/v1/me", get(api::me))
        .route("/v1/sources", get(api::sources))
        .route("/v1/probes", get(api::probes))
        .route("/v1/flows", get(delivery_api::list_flows))
        .route("/v1/deliveries", get(delivery_api::list_deliveries))
        .route("/v1/deliveries/{id}", get(delivery_api::get_delivery))
        .route("/v1/dlq", get(delivery_api::list_dlq))
        .route("/v1/dlq/{id}", get(delivery_api::get_dead_letter))
        .route(
            "/v1/dlq/{id}/replay",
            axum::routing::post(delivery_api::replay_dlq),
        )
        .route(
            "/v1/dlq/{id}/discard",
            axum::routing::post(delivery_api::discard_dlq),
        )
        .route("/v1/destinations", get(delivery_api::list_destinations))
        .route(
            "/v1/destinations/{name}/resume",
            axum::routing::post(delivery_api::resume_destination),
        )
        .route("/v1/workflows", get(monitor_api::list_workflows))
        .route(
            "/v1/workflows/{name}/instances",
            get(monitor_api::list_instances),
        )
        .route(
            "/v1/workflows/{name}/summary",
            get(monitor_api::workflow_summary),
        )
        .route("/v1/instances", get(monitor_api::find_instances))
        .route("/v1/instances/{id}", get(monitor_api::get_instance))
        .route("/v1/findings", get(monitor_api::list_findings))
        .route("/v1/alerts", get(alerts_api::list_alerts))
        .route("/v1/incidents", get(alerts_api::list_incidents))
        .route("/v1/incidents/stats", get(alerts_api::stats))
        .route("/v1/incidents/{id}", get(alerts_api::get_incident))
        .route(
            "/v1/incidents/{id}/ack",
            axum::routing::post(alerts_api::ack),
        )
        .route(
            "/v1/incidents/{id}/resolve",
            axum::routing::post(alerts_api::resolve),
        )
        .route(
            "/v1/incidents/{id}/comments",
            axum::routing::post(alerts_api::comment),
        )
        .route(
            "/v1/silences",
            get(alerts_api::list_silences).post(alerts_api::create_silence),
        )
        .route(
            "/v1/silences/{id}/expire",
            axum::routing::post(alerts_api::expire_silence),
        )
        .route(
            "/v1/routes/test",
            axum::routing::post(alerts_api::test_routes),
        )
        .route("/v1/trace", get(monitor_api::trace))
        .route(
            "/v1/heartbeats/{monitor}",
            axum::routing::post(monitor_api::post_heartbeat),
        )
        .route("/v1/batch-monitors", get(monitor_api::list_batch_monitors))
        .route(
            "/v1/reconciliations",
            get(monitor_api::list_reconciliations),
        )
        .route("/", get(web::index))
        .route("/ui/{file}", get(web::asset))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/problems/{code}", get(problem_doc))
        .route_layer(middleware::from_fn(track_requests))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// Serves until `cancel` fires, then stops accepting and lets in-flight requests finish
/// (at most `grace`). Returns once no request is running.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    cancel: CancellationToken,
    grace: Duration,
) -> std::io::Result<()> {
    let app = router(state);
    let stop = cancel.clone();
    let server =
        axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await });
    let mut server = std::pin::pin!(server.into_future());
    tokio::select! {
        r = &mut server => r,
        _ = async { cancel.cancelled().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(grace_seconds = grace.as_secs(), "in-flight requests did not finish in time; closing them");
            Ok(())
        }
    }
}
