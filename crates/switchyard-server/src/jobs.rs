//! Server-side jobs: long operator actions (purge now; backfill and bulk replay later) that
//! run on one node, report progress in the store, and survive the death of that node (its
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
}

impl JobKind {
    pub fn parse(s: &str) -> Option<JobKind> {
        match s {
            "events.purge" => Some(JobKind::EventsPurge),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            JobKind::EventsPurge => "events.purge",
        }
    }

    pub fn permission(self) -> Permission {
        match self {
            // destroys data: administrators only
            JobKind::EventsPurge => Permission::Administer,
        }
    }

    /// Checks params before the job is queued, so a bad job is refused, not failed later.
    pub fn check(self, params: &serde_json::Value) -> Result<(), ApiError> {
        match self {
            JobKind::EventsPurge => PurgeParams::from_json(params).map(|_| ()),
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

/// Claims and runs queued jobs on this node.
pub struct JobRunner {
    pub store: SharedStore,
    pub clock: SharedClock,
    pub node_id: String,
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

    async fn progress(&self, id: i64, done: i64, total: Option<i64>) {
        if let Err(e) = self.store.update_job_progress(id, done, total).await {
            tracing::warn!(job_id = id, error = %e, "cannot record job progress");
        }
    }
}
