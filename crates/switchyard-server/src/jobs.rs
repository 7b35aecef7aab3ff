//! Server-side jobs: long operator actions (purge, backfill, bulk dead-letter replay and
//! discard) that run on one node, report progress in the store, and survive the death of that node (its
//! running jobs are requeued once its heartbeat is stale; every kind must be safe to run
//! again from the start).
//!
//! Each kind is described once here: its name, the role that may start it, how its params
//! are checked, and how it runs.

use crate::error::{ApiError, FieldError, Problem};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use std::time::Duration;
use switchyard_core::SharedClock;
use switchyard_core::token::Permission;
use switchyard_store::{JobRecord, JobState, SharedStore, SourceScope};
use tokio_util::sync::CancellationToken;

/// How often an idle runner looks for queued jobs.
pub const POLL_EVERY: Duration = Duration::from_millis(500);
/// Rows per purge transaction: small enough not to hold the writer long.
const PURGE_BATCH: usize = 1000;

/// The kinds of job, with what they need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    /// Delete events received before a time, optionally from one source.
    EventsPurge,
    /// Run a flow over stored events received in a window (those it has no delivery for).
    FlowsBackfill,
    /// Replay every dead letter matching a filter.
    DlqReplay,
    /// Discard every dead letter matching a filter.
    DlqDiscard,
}

impl JobKind {
    pub fn parse(s: &str) -> Option<JobKind> {
        match s {
            "events.purge" => Some(JobKind::EventsPurge),
            "flows.backfill" => Some(JobKind::FlowsBackfill),
            "dlq.replay" => Some(JobKind::DlqReplay),
            "dlq.discard" => Some(JobKind::DlqDiscard),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            JobKind::EventsPurge => "events.purge",
            JobKind::FlowsBackfill => "flows.backfill",
            JobKind::DlqReplay => "dlq.replay",
            JobKind::DlqDiscard => "dlq.discard",
        }
    }

    pub fn permission(self) -> Permission {
        match self {
            // destroys data: administrators only
            JobKind::EventsPurge => Permission::Administer,
            JobKind::FlowsBackfill | JobKind::DlqReplay | JobKind::DlqDiscard => {
                Permission::Operate
            }
        }
    }

    /// Checks params before the job is queued, so a bad job is refused, not failed later.
    pub fn check(self, params: &serde_json::Value) -> Result<(), ApiError> {
        match self {
            JobKind::EventsPurge => PurgeParams::from_json(params).map(|_| ()),
            JobKind::FlowsBackfill => BackfillParams::from_json(params).map(|_| ()),
            JobKind::DlqReplay | JobKind::DlqDiscard => {
                let p = BulkParams::from_json(params)?;
                p.dead_letters()?;
                if p.reason.trim().is_empty() {
                    return Err(params_error("reason", "say why"));
                }
                Ok(())
            }
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurgeParams {
    /// Events received (business time) before this are deleted.
    pub before: DateTime<Utc>,
    pub source: Option<String>,
    /// Only count what would be deleted.
    #[serde(default)]
    pub dry_run: bool,
}

impl PurgeParams {
    fn from_json(v: &serde_json::Value) -> Result<PurgeParams, ApiError> {
        serde_json::from_value(v.clone()).map_err(|e| {
            ApiError::new(
                Problem::Invalid,
                format!("events.purge params must be {{\"before\": RFC 3339 time, \"source\"?: string, \"dry_run\"?: bool}}: {e}"),
            )
            .with_errors(vec![FieldError {
                index: None,
                field: "params".into(),
                pointer: Some("/params".into()),
                header: None,
                detail: e.to_string(),
            }])
        })
    }
}

fn params_error(field: &str, detail: impl Into<String>) -> ApiError {
    let detail = detail.into();
    ApiError::new(Problem::Invalid, format!("params.{field}: {detail}")).with_errors(vec![
        FieldError {
            index: None,
            field: format!("params.{field}"),
            pointer: Some(format!("/params/{field}")),
            header: None,
            detail,
        },
    ])
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackfillParams {
    pub flow: String,
    /// Events received (business time) at or after this...
    pub since: DateTime<Utc>,
    /// ...and before this (default: when the job starts).
    pub until: Option<DateTime<Utc>>,
}

impl BackfillParams {
    fn from_json(v: &serde_json::Value) -> Result<BackfillParams, ApiError> {
        serde_json::from_value(v.clone()).map_err(|e| {
            params_error(
                "flow",
                format!("flows.backfill params must be {{\"flow\": string, \"since\": RFC 3339, \"until\"?: RFC 3339}}: {e}"),
            )
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkParams {
    /// Which dead letters (the `/v1/dlq` filters; `after` and `limit` are ignored).
    #[serde(default)]
    pub filter: crate::delivery_api::DeliveryQuery,
    pub reason: String,
}

impl BulkParams {
    /// The filter over dead letters (its `after` and `limit` do not apply to a bulk job).
    fn dead_letters(&self) -> Result<switchyard_store::DeliveryFilter, ApiError> {
        let mut q = self.filter.clone();
        q.after = None;
        q.limit = None;
        q.filter(true)
    }

    fn from_json(v: &serde_json::Value) -> Result<BulkParams, ApiError> {
        serde_json::from_value(v.clone()).map_err(|e| {
            params_error(
                "filter",
                format!("params must be {{\"filter\"?: {{flow, destination, class, state, since, until}}, \"reason\": string}}: {e}"),
            )
        })
    }
}

/// Events per backfill transaction, dead letters per bulk step.
const BATCH: usize = 500;

/// Claims and runs queued jobs on this node.
pub struct JobRunner {
    pub store: SharedStore,
    pub clock: SharedClock,
    pub node_id: String,
    /// Flows (backfill) and the replay logic the API shares.
    pub state: Option<crate::AppState>,
}

impl JobRunner {
    pub async fn run(self, cancel: CancellationToken) {
        let mut last_requeue: Option<std::time::Instant> = None;
        loop {
            if last_requeue.is_none_or(|t| t.elapsed() > Duration::from_secs(15)) {
                // the first pass also takes back what this node ran before a restart
                let restarted = last_requeue.is_none().then_some(self.node_id.as_str());
                last_requeue = Some(std::time::Instant::now());
                let live_since = self.clock.real_now() - crate::node::LIVE_WITHIN;
                match self
                    .store
                    .requeue_orphaned_jobs(live_since, restarted)
                    .await
                {
                    Ok(0) => {}
                    Ok(n) => tracing::warn!(jobs = n, "requeued jobs of nodes that stopped"),
                    Err(e) => tracing::warn!(error = %e, "cannot requeue orphaned jobs"),
                }
            }
            match self.store.claim_job(&self.node_id, self.clock.now()).await {
                Ok(Some(job)) => self.execute(job, &cancel).await,
                Ok(None) => {
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(POLL_EVERY) => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot claim jobs");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(POLL_EVERY * 4) => {}
                    }
                }
            }
            if cancel.is_cancelled() {
                return;
            }
        }
    }

    async fn execute(&self, job: JobRecord, cancel: &CancellationToken) {
        tracing::info!(job_id = job.id, kind = %job.kind, actor = %job.created_by, "job started");
        let result = match JobKind::parse(&job.kind) {
            Some(JobKind::EventsPurge) => self.purge(&job, cancel).await,
            Some(JobKind::FlowsBackfill) => self.backfill(&job, cancel).await,
            Some(JobKind::DlqReplay) => self.bulk(&job, cancel, true).await,
            Some(JobKind::DlqDiscard) => self.bulk(&job, cancel, false).await,
            None => Err(format!("unknown job kind \"{}\"", job.kind)),
        };
        let (state, message) = match result {
            Ok(Some(m)) => (JobState::Succeeded, m),
            // cancelled: leave it running; it is requeued once this node's heartbeat is stale
            Ok(None) => return,
            Err(m) => (JobState::Failed, m),
        };
        tracing::info!(job_id = job.id, state = state.as_str(), message = %message, "job ended");
        if let Err(e) = self
            .store
            .finish_job(job.id, state, Some(message), self.clock.now())
            .await
        {
            tracing::error!(job_id = job.id, error = %e, "cannot record the end of a job");
        }
    }

    /// `Ok(None)` when interrupted by shutdown.
    async fn purge(
        &self,
        job: &JobRecord,
        cancel: &CancellationToken,
    ) -> Result<Option<String>, String> {
        let p = PurgeParams::from_json(&job.params).map_err(|e| e.detail)?;
        let scope = match &p.source {
            Some(s) => SourceScope::only(s),
            None => SourceScope::all(),
        };
        let total = self
            .store
            .count_events_before(p.before, &scope)
            .await
            .map_err(|e| e.to_string())?;
        if p.dry_run {
            self.progress(job.id, total, Some(total)).await;
            return Ok(Some(format!(
                "dry run: would delete {total} event(s) received before {}{}",
                p.before.to_rfc3339(),
                p.source.map(|s| format!(" from {s}")).unwrap_or_default()
            )));
        }
        let mut done = 0i64;
        self.progress(job.id, done, Some(total)).await;
        loop {
            if cancel.is_cancelled() {
                return Ok(None);
            }
            let n = self
                .store
                .purge_events(p.before, &scope, PURGE_BATCH)
                .await
                .map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            done += n as i64;
            self.progress(job.id, done, Some(total.max(done))).await;
        }
        Ok(Some(format!(
            "deleted {done} event(s) received before {}{}",
            p.before.to_rfc3339(),
            p.source.map(|s| format!(" from {s}")).unwrap_or_default()
        )))
    }

    fn app(&self) -> Result<&crate::AppState, String> {
        self.state
            .as_ref()
            .ok_or_else(|| "this node runs no delivery engine".to_string())
    }

    /// Routes stored events of a window through one flow; events it already has a delivery
    /// for are skipped (a backfill can be run twice safely).
    async fn backfill(
        &self,
        job: &JobRecord,
        cancel: &CancellationToken,
    ) -> Result<Option<String>, String> {
        let p = BackfillParams::from_json(&job.params).map_err(|e| e.detail)?;
        let state = self.app()?;
        let flow = state
            .engine
            .flows()
            .flow(&p.flow)
            .ok_or_else(|| format!("no flow named \"{}\"", p.flow))?
            .clone();
        let until = p.until.unwrap_or_else(|| self.clock.now());
        let filter = switchyard_store::EventFilter {
            since: Some(p.since),
            until: Some(until),
            ..Default::default()
        };
        // Total for the progress bar: events in the window (an upper bound on the work).
        let mut total = 0i64;
        let mut pos = switchyard_store::LogPosition::START;
        loop {
            let page = self
                .store
                .read_log(pos, 10_000, &filter)
                .await
                .map_err(|e| e.to_string())?;
            if page.events.is_empty() {
                break;
            }
            total += page.events.len() as i64;
            pos = page.next;
        }
        self.progress(job.id, 0, Some(total)).await;
        let (mut seen, mut created, mut selected) = (0i64, 0i64, 0i64);
        let mut pos = switchyard_store::LogPosition::START;
        loop {
            if cancel.is_cancelled() {
                return Ok(None);
            }
            let page = self
                .store
                .read_log(pos, BATCH, &filter)
                .await
                .map_err(|e| e.to_string())?;
            if page.events.is_empty() {
                break;
            }
            pos = page.next;
            let mut items = Vec::new();
            for e in &page.events {
                seen += 1;
                if e.payload_purged || !flow.selects(&e.event) {
                    continue;
                }
                selected += 1;
                let routed = flow.route_event(&e.event);
                items.push((
                    e.seq,
                    switchyard_deliver::router::delivery(&flow, &e.event, routed),
                ));
            }
            if !items.is_empty() {
                let out = self
                    .store
                    .insert_deliveries(items, self.clock.now())
                    .await
                    .map_err(|e| e.to_string())?;
                created += out.iter().filter(|c| c.is_some()).count() as i64;
                state.engine.wake();
            }
            self.progress(job.id, seen, Some(total.max(seen))).await;
        }
        Ok(Some(format!(
            "flow {}: {seen} event(s) read, {selected} selected, {created} new deliveries ({} already had one)",
            p.flow,
            selected - created
        )))
    }

    /// Replays or discards every dead letter matching a filter, each audited.
    async fn bulk(
        &self,
        job: &JobRecord,
        cancel: &CancellationToken,
        replay: bool,
    ) -> Result<Option<String>, String> {
        let p = BulkParams::from_json(&job.params).map_err(|e| e.detail)?;
        let state = self.app()?;
        let mut filter = p.dead_letters().map_err(|e| e.detail)?;
        filter.limit = BATCH;
        filter.after = 0;
        // Snapshot the matching ids first: replayed letters leave the queue and may come
        // back later as new dead letters, which this job must not loop over.
        let mut ids = Vec::new();
        loop {
            let page = self
                .store
                .list_deliveries(&filter)
                .await
                .map_err(|e| e.to_string())?;
            let Some(last) = page.last() else { break };
            filter.after = last.id;
            ids.extend(page.iter().map(|d| d.id));
        }
        let total = ids.len() as i64;
        self.progress(job.id, 0, Some(total)).await;
        let (mut ok, mut failed) = (0i64, 0i64);
        let mut first_error = None;
        for (i, id) in ids.into_iter().enumerate() {
            if cancel.is_cancelled() {
                return Ok(None);
            }
            let r = if replay {
                crate::delivery_api::replay(state, id, &job.created_by, &p.reason, None, false)
                    .await
                    .map(|_| ())
            } else {
                self.store
                    .discard_delivery(id, &job.created_by, &p.reason, self.clock.now())
                    .await
                    .map(|_| ())
                    .map_err(crate::error::ApiError::from)
            };
            match r {
                Ok(()) => ok += 1,
                Err(e) => {
                    failed += 1;
                    first_error.get_or_insert(format!("delivery {id}: {}", e.detail));
                }
            }
            if i % 50 == 49 {
                self.progress(job.id, i as i64 + 1, Some(total)).await;
            }
        }
        self.progress(job.id, total, Some(total)).await;
        let verb = if replay { "replayed" } else { "discarded" };
        let mut m = format!("{ok} dead letter(s) {verb}");
        if failed > 0 {
            m.push_str(&format!(
                "; {failed} refused (first: {})",
                first_error.unwrap_or_default()
            ));
        }
        Ok(Some(m))
    }

    async fn progress(&self, id: i64, done: i64, total: Option<i64>) {
        if let Err(e) = self.store.update_job_progress(id, done, total).await {
            tracing::warn!(job_id = id, error = %e, "cannot record job progress");
        }
    }
}
