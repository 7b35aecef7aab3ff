//! Storage: the one place Switchyard's durable state lives.
//!
//! [`Store`] is the seam. Two backends implement it, chosen by URL in [`open`]:
//! [`sqlite`] (embedded default: one writer thread that group-commits, readers on a pool)
//! and [`postgres`] (shared by several nodes). Neither may add a table the other lacks;
//! [`conformance`] is the one test suite both must pass.
//!
//! Invariants every backend keeps:
//! - `append_events` returns only after the events are durably committed; an error means
//!   nothing of that call was stored.
//! - `(source, id)` is stored once; a repeat is reported as a duplicate with the first seq.
//! - [`Store::read_log`] never skips an event: once a reader has passed a position, no event
//!   will later commit before it ("commit-ordered cursor").
//! - Singleton work is fenced: a write made under a [`Lease`] fails once another node holds
//!   a newer epoch of that lease.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use switchyard_core::CloudEvent;
use switchyard_core::token::Role;

pub use alerts::{
    AlertFilter, AlertRecord, AlertState, AlertsCommit, AttemptStat, GroupRow, IncidentAction,
    IncidentActionKind, IncidentEntry, IncidentFilter, IncidentRecord, IncidentStatus,
    NewIncidentEntry, NewSilence, SilenceRecord,
};
pub use delivery::{
    AttemptNext, AttemptRecord, AttemptResult, ClaimRequest, CreatedDelivery, DeliveryFilter,
    DeliveryRecord, DeliveryStat, DeliveryState, DestinationPause, LeaseRequest, NewDelivery,
    Replay,
};
pub use monitor::{
    CYCLE_BINS_SECONDS, ClosedCount, FindingFilter, FindingRecord, InstanceCount, InstanceFilter,
    InstanceRecord, InstanceWrite, MonitorCommit, MonitorCommitted, RunFilter, RunRecord, RunWrite,
    SUBJECT_BATCH, SUBJECT_RECONCILIATION, SUBJECT_WORKFLOW, WorkflowAlias, WorkflowVersion,
};

pub mod alerts;
pub mod conformance;
pub mod delivery;
pub mod monitor;
pub mod postgres;
mod postgres_alerts;
mod postgres_monitor;
mod postgres_queue;
pub mod sqlite;
mod sqlite_alerts;
mod sqlite_monitor;
mod sqlite_queue;
mod util;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The write queue is full: ingest should answer 429 and the sender retry.
    #[error("the store's write queue is full")]
    Saturated,
    /// The store cannot commit right now (disk full, locked, connection lost).
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// A singleton write was refused because another node took the lease over.
    #[error("lease {name} epoch {epoch} is no longer held")]
    Fenced { name: String, epoch: i64 },
    #[error("not found: {0}")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("invalid store URL: {0}")]
    Url(String),
    /// Stored data could not be decoded (a bug or a manual edit).
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    #[error("migration failed: {0}")]
    Migration(String),
    /// The store has been closed (shutdown).
    #[error("the store is closed")]
    Closed,
}

/// Which backend a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// An event to append, with the business time it was received.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event: CloudEvent,
    pub received_at: DateTime<Utc>,
    /// Business keys the event carries (from its source's declared jq extractions).
    pub keys: Vec<BusinessKey>,
    /// The event routed through every flow that selects it: written in the event's own
    /// transaction (the outbox), and only if the event is new (not a duplicate).
    pub deliveries: Vec<NewDelivery>,
}

pub use switchyard_core::sources::BusinessKey;

/// What happened to one appended event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Appended {
    Stored {
        seq: i64,
    },
    /// Already stored under the same `(source, id)`; `seq` is the first copy's.
    Duplicate {
        seq: i64,
    },
}

impl Appended {
    pub fn seq(self) -> i64 {
        match self {
            Appended::Stored { seq } | Appended::Duplicate { seq } => seq,
        }
    }
}

/// A place in the event log. Positions are totally ordered and a reader that has passed one
/// never sees an event appear before it. `tx` is the committing transaction's order key
/// (always 0 on SQLite, whose single writer commits in `seq` order).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogPosition {
    pub tx: i64,
    pub seq: i64,
}

impl LogPosition {
    pub const START: LogPosition = LogPosition { tx: 0, seq: 0 };
}

impl fmt::Display for LogPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.tx, self.seq)
    }
}

impl FromStr for LogPosition {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("\"{s}\" is not a log cursor (expected TX.SEQ, e.g. 0.42)");
        let (tx, seq) = s.split_once('.').ok_or_else(bad)?;
        Ok(LogPosition {
            tx: tx.parse().map_err(|_| bad())?,
            seq: seq.parse().map_err(|_| bad())?,
        })
    }
}

impl Serialize for LogPosition {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for LogPosition {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub seq: i64,
    pub position: LogPosition,
    pub received_at: DateTime<Utc>,
    pub event: CloudEvent,
    /// Sorted by name, then value.
    pub keys: Vec<BusinessKey>,
    /// Retention dropped this event's data; its attributes and keys remain.
    pub payload_purged: bool,
}

/// Narrows a log read. Empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub source: Option<String>,
    pub ty: Option<String>,
    pub subject: Option<String>,
    /// Events carrying a business key with this value...
    pub key: Option<String>,
    /// ...of this name (any name when unset; only used with `key`).
    pub key_name: Option<String>,
    /// Received at or after (business time).
    pub since: Option<DateTime<Utc>>,
    /// Received before (business time).
    pub until: Option<DateTime<Utc>>,
}

/// Which sources an operation applies to: those equal to one of `exact` or starting with
/// one of `prefixes`, or, with `invert`, every other source. `SourceScope::all()` is every
/// source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceScope {
    pub exact: Vec<String>,
    pub prefixes: Vec<String>,
    pub invert: bool,
}

impl SourceScope {
    pub fn all() -> Self {
        SourceScope {
            invert: true,
            ..Default::default()
        }
    }

    pub fn only(source: &str) -> Self {
        SourceScope {
            exact: vec![source.to_string()],
            ..Default::default()
        }
    }

    /// The SQL condition on column `source`, with its parameters; `prefix_cond(i)` writes
    /// the backend's "starts with parameter i" and `ph(i)` a placeholder, from `first`.
    pub(crate) fn sql(
        &self,
        first: usize,
        ph: impl Fn(usize) -> String,
        prefix_cond: impl Fn(usize) -> String,
    ) -> (String, Vec<String>) {
        let mut conds = Vec::new();
        let mut params = Vec::new();
        for e in &self.exact {
            conds.push(format!("source = {}", ph(first + params.len())));
            params.push(e.clone());
        }
        for p in &self.prefixes {
            conds.push(prefix_cond(first + params.len()));
            params.push(p.clone());
        }
        let any = if conds.is_empty() {
            "1 = 0".to_string()
        } else {
            format!("({})", conds.join(" OR "))
        };
        let cond = if self.invert {
            format!("NOT {any}")
        } else {
            any
        };
        (cond, params)
    }
}

/// How much one CloudEvents source occupies in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceUsage {
    pub source: String,
    pub events: i64,
    /// Events whose payload retention already dropped.
    pub payloads_purged: i64,
    pub bytes: i64,
    /// When its newest stored event was received (business time).
    pub last_received_at: Option<DateTime<Utc>>,
}

/// What one CloudEvents source sent in a recent window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceActivity {
    pub source: String,
    pub events: i64,
    /// Mean and largest lag (received − event `time`) in milliseconds, over the events that
    /// carry a `time`.
    pub avg_lag_ms: Option<f64>,
    pub max_lag_ms: Option<i64>,
}

/// One page of the log and the position to continue from.
#[derive(Debug, Clone)]
pub struct LogPage {
    pub events: Vec<StoredEvent>,
    /// Pass this as `after` to continue; equal to the request's `after` when nothing new.
    pub next: LogPosition,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenRecord {
    pub id: i64,
    pub name: String,
    pub role: Role,
    #[serde(skip)]
    pub hash: String,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct NewToken {
    pub name: String,
    pub role: Role,
    pub hash: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditRecord {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: serde_json::Value,
}

#[derive(Debug, Clone)]
pub struct NewAudit {
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: serde_json::Value,
}

/// A node sharing the store, with its last heartbeat (real time).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeRecord {
    pub id: String,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
    pub info: serde_json::Value,
}

/// A held singleton lease. `epoch` grows by one at every change of owner; writes made under
/// the lease carry it and fail once it is stale.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lease {
    pub name: String,
    pub owner: String,
    pub epoch: i64,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
        }
    }
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "queued" => JobState::Queued,
            "running" => JobState::Running,
            "succeeded" => JobState::Succeeded,
            "failed" => JobState::Failed,
            other => return Err(Error::Corrupt(format!("unknown job state {other}"))),
        })
    }
}

/// A long operator action (backfill, bulk replay, purge) run by the server.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobRecord {
    pub id: i64,
    pub kind: String,
    pub params: serde_json::Value,
    pub state: JobState,
    pub done: i64,
    pub total: Option<i64>,
    pub message: Option<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub owner: Option<String>,
}

#[derive(Debug, Clone)]
pub struct NewJob {
    pub kind: String,
    pub params: serde_json::Value,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

/// The storage seam. No backend-specific notion leaks through it.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    fn backend(&self) -> Backend;

    /// Commits a trivial write; `Ok` means the store is writable now (readiness).
    async fn check_writable(&self) -> Result<()>;

    /// Waits for in-flight writes and stops the writer. Later calls fail with `Closed`.
    async fn close(&self);

    // ---- event log ----

    /// Appends events in one transaction (all or nothing), deduplicated by `(source, id)`.
    /// Returns one outcome per input, in order, after the commit is durable. Answers
    /// `Saturated` at once, storing nothing, when the write queue is full.
    async fn append_events(&self, events: Vec<NewEvent>) -> Result<Vec<Appended>> {
        Ok(self
            .append_routed(events)
            .await?
            .into_iter()
            .map(|(a, _)| a)
            .collect())
    }

    /// [`Store::append_events`], also returning the deliveries created for each new event
    /// (none for a duplicate), in the order they were given.
    async fn append_routed(
        &self,
        events: Vec<NewEvent>,
    ) -> Result<Vec<(Appended, Vec<CreatedDelivery>)>>;

    async fn get_event(&self, seq: i64) -> Result<Option<StoredEvent>>;

    async fn find_event(&self, source: &str, id: &str) -> Result<Option<StoredEvent>>;

    /// Events after `after` in commit order, up to `limit`, matching `filter`.
    async fn read_log(
        &self,
        after: LogPosition,
        limit: usize,
        filter: &EventFilter,
    ) -> Result<LogPage>;

    async fn count_events(&self) -> Result<i64>;

    /// Deletes up to `limit` of the oldest events received before `before` whose source is
    /// in `scope`, keys included, and returns how many. Their `(source, id)` is forgotten
    /// too: a later event with the same id is stored as new. Positions are never reused.
    async fn purge_events(
        &self,
        before: DateTime<Utc>,
        scope: &SourceScope,
        limit: usize,
    ) -> Result<u64>;

    /// How many events `purge_events` would delete in all.
    async fn count_events_before(&self, before: DateTime<Utc>, scope: &SourceScope) -> Result<i64>;

    /// Retention's first stage: drops the data (payload) of up to `limit` events received
    /// before `before` in `scope`, keeping the slim row (source, id, type, subject, times,
    /// business keys), so a late retry is still recognised as a duplicate and the event can
    /// still be traced by key. Returns how many.
    async fn purge_payloads(
        &self,
        before: DateTime<Utc>,
        scope: &SourceScope,
        limit: usize,
    ) -> Result<u64>;

    /// Stored events and bytes per CloudEvents `source` (bytes: the stored envelopes).
    async fn usage_by_source(&self) -> Result<Vec<SourceUsage>>;

    /// Events received since `since` per source, with their lag.
    async fn source_activity(&self, since: DateTime<Utc>) -> Result<Vec<SourceActivity>>;

    /// The position of the newest event a reader can see now (`START` if none): reading
    /// after it returns only events committed later (`events tail`).
    async fn log_head(&self) -> Result<LogPosition>;

    /// Test seam for the commit-order proof: inserts like `append_events`, signals
    /// `inserted`, then holds the transaction open until `release` fires, then commits.
    #[doc(hidden)]
    async fn append_events_held(
        &self,
        events: Vec<NewEvent>,
        inserted: tokio::sync::oneshot::Sender<()>,
        release: tokio::sync::oneshot::Receiver<()>,
    ) -> Result<Vec<Appended>>;

    // ---- tokens and audit ----

    /// Creates a token and its audit record (`token.create` by `actor`) in one transaction.
    /// A name already used by an active token is a `Conflict`.
    async fn create_token(&self, token: NewToken, actor: &str) -> Result<TokenRecord>;

    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>>;

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>>;

    /// Revokes a token and records `token.revoke` by `actor`. `NotFound` if no active token
    /// has that id.
    async fn revoke_token(&self, id: i64, actor: &str, at: DateTime<Utc>) -> Result<TokenRecord>;

    async fn append_audit(&self, entry: NewAudit) -> Result<i64>;

    /// Audit records with id greater than `after`, oldest first.
    /// Audit records with an id above `after`, oldest first; only those about `target`
    /// (`delivery:7`) when given.
    async fn list_audit(
        &self,
        after: i64,
        target: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>>;

    // ---- small persistent settings (e.g. the scaled clock's origin) ----

    async fn get_meta(&self, key: &str) -> Result<Option<String>>;

    async fn set_meta(&self, key: &str, value: &str) -> Result<()>;

    // ---- nodes and singletons ----

    /// Registers or refreshes a node's heartbeat (real time).
    async fn heartbeat_node(
        &self,
        id: &str,
        info: serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<()>;

    async fn list_nodes(&self) -> Result<Vec<NodeRecord>>;

    /// Removes nodes whose last heartbeat is before `stale_before`; returns how many.
    async fn forget_nodes(&self, stale_before: DateTime<Utc>) -> Result<u64>;

    /// Takes lease `name` for `owner` until `now + ttl` if it is free, expired, or already
    /// `owner`'s. A change of owner bumps the epoch. `None` if another node holds it.
    async fn acquire_lease(
        &self,
        name: &str,
        owner: &str,
        now: DateTime<Utc>,
        ttl: chrono::Duration,
    ) -> Result<Option<Lease>>;

    /// Extends a held lease; `Fenced` if another node has taken it over.
    async fn renew_lease(
        &self,
        lease: &Lease,
        now: DateTime<Utc>,
        ttl: chrono::Duration,
    ) -> Result<Lease>;

    /// Gives a lease up so another node may take it at once.
    async fn release_lease(&self, lease: &Lease) -> Result<()>;

    /// Saves a singleton job's checkpoint under its lease (the fencing check and the write
    /// are one statement); `Fenced` if the epoch is stale.
    async fn save_lease_state(&self, lease: &Lease, state: serde_json::Value) -> Result<()>;

    async fn lease_state(&self, name: &str) -> Result<Option<serde_json::Value>>;

    async fn list_leases(&self) -> Result<Vec<Lease>>;

    // ---- jobs ----

    /// Queues a job and records `job.create` by its creator in the same transaction.
    async fn create_job(&self, job: NewJob) -> Result<JobRecord>;

    async fn get_job(&self, id: i64) -> Result<Option<JobRecord>>;

    /// Newest first.
    async fn list_jobs(&self, limit: usize) -> Result<Vec<JobRecord>>;

    /// Claims the oldest queued job for `node` (each job is claimed by one node only).
    async fn claim_job(&self, node: &str, now: DateTime<Utc>) -> Result<Option<JobRecord>>;

    async fn update_job_progress(&self, id: i64, done: i64, total: Option<i64>) -> Result<()>;

    async fn finish_job(
        &self,
        id: i64,
        state: JobState,
        message: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<()>;

    /// Puts `running` jobs back in the queue whose owner has not heartbeaten since
    /// `live_since` (their node died) or is `restarted` (a node starting again under the
    /// same id: what it was running died with its previous process); returns how many.
    async fn requeue_orphaned_jobs(
        &self,
        live_since: DateTime<Utc>,
        restarted: Option<&str>,
    ) -> Result<u64>;

    // ---- the delivery queue ----

    /// Creates deliveries for stored events (a backfill), created at `now` (their retry
    /// age counts from then); a delivery already existing for the same (event, flow) is
    /// left alone (`None`).
    async fn insert_deliveries(
        &self,
        items: Vec<(i64, NewDelivery)>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Option<CreatedDelivery>>>;

    /// Leases up to `limit` due deliveries of one lane to `owner` (each to one owner only;
    /// on PostgreSQL with `FOR UPDATE SKIP LOCKED`), oldest due first. A delivery whose
    /// ordering key has an earlier delivery still pending (or dead-lettered, when it holds
    /// its key) is not claimed. Deliveries whose lease expired count as due.
    async fn claim_deliveries(&self, req: ClaimRequest) -> Result<Vec<DeliveryRecord>>;

    /// Records an attempt and, if `owner` still holds the lease of that generation, moves
    /// the delivery on. `Ok(false)`: the lease was lost (expired and taken over, or the
    /// delivery was replayed); the attempt is recorded, the state left alone.
    async fn complete_attempt(&self, result: AttemptResult) -> Result<bool>;

    /// Gives leased deliveries back (`scheduled`, due now) that `owner` will not attempt
    /// (shutdown, a destination that closed meanwhile).
    async fn release_deliveries(&self, ids: Vec<i64>, owner: &str) -> Result<u64>;

    /// Extends a lease still held by `owner`; `false` if it was lost.
    async fn extend_delivery_lease(
        &self,
        id: i64,
        owner: &str,
        until: DateTime<Utc>,
    ) -> Result<bool>;

    async fn get_delivery(&self, id: i64) -> Result<Option<DeliveryRecord>>;

    async fn list_deliveries(&self, filter: &DeliveryFilter) -> Result<Vec<DeliveryRecord>>;

    /// Oldest first.
    async fn list_attempts(&self, delivery_id: i64) -> Result<Vec<AttemptRecord>>;

    /// Counts per (flow, destination, lane, state) with the oldest creation time: queue
    /// depth and the age of the oldest undelivered event.
    async fn delivery_stats(&self) -> Result<Vec<DeliveryStat>>;

    /// Starts a new generation of a dead letter (see [`Replay`]) and writes its audit record
    /// in the same transaction. `Conflict` unless the delivery is in the dead-letter queue.
    async fn replay_delivery(&self, replay: Replay) -> Result<DeliveryRecord>;

    /// Moves a dead letter to `discarded`, audited (`dlq.discard`) in the same transaction.
    async fn discard_delivery(
        &self,
        id: i64,
        actor: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<DeliveryRecord>;

    async fn destination_pauses(&self) -> Result<Vec<DestinationPause>>;

    /// Lifts a pause. `actor` `system` after a successful trial delivery, or an operator's
    /// token name (audited as `destination.resume`). `false` if it was not paused.
    async fn resume_destination(
        &self,
        destination: &str,
        actor: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<bool>;

    // ---- workflow monitor (see `monitor.rs`) ----

    /// The instances owning any of these (workflow, key) aliases, each once, by id.
    async fn monitor_find(&self, aliases: Vec<WorkflowAlias>) -> Result<Vec<InstanceRecord>>;

    /// Instances whose `due_at` is at or before `until`, earliest first, up to `limit`.
    async fn monitor_due(&self, until: DateTime<Utc>, limit: usize) -> Result<Vec<InstanceRecord>>;

    /// The earliest `due_at` of any instance.
    async fn monitor_next_due(&self) -> Result<Option<DateTime<Utc>>>;

    /// Writes one monitor step in one transaction, fenced by `commit.lease` (see
    /// [`MonitorCommit`]). Returns the id of each instance write and of each run write, in
    /// order (new ones assigned here), and how many findings were inserted.
    async fn monitor_commit(&self, commit: MonitorCommit) -> Result<MonitorCommitted>;

    /// Every stored workflow definition version, oldest first.
    async fn workflow_versions(&self) -> Result<Vec<WorkflowVersion>>;

    async fn get_instance(&self, id: i64) -> Result<Option<InstanceRecord>>;

    async fn list_instances(&self, filter: &InstanceFilter) -> Result<Vec<InstanceRecord>>;

    /// Instances with an alias of this value (any key name), of one workflow or all,
    /// newest first, up to `limit`.
    async fn instances_by_key(
        &self,
        value: &str,
        workflow: Option<&str>,
        limit: usize,
    ) -> Result<Vec<InstanceRecord>>;

    async fn list_findings(&self, filter: &FindingFilter) -> Result<Vec<FindingRecord>>;

    /// Instances per workflow and state.
    async fn instance_counts(&self) -> Result<Vec<InstanceCount>>;

    /// Instances of `workflow` closed at or after `since`, counted per time bucket of
    /// `bucket_seconds` (aligned to the epoch), final state and cycle-time bin: SLA
    /// compliance over time and the cycle-time histogram. Archived instances are gone.
    async fn closed_counts(
        &self,
        workflow: &str,
        since: DateTime<Utc>,
        bucket_seconds: i64,
    ) -> Result<Vec<ClosedCount>>;

    /// Batch runs, newest first.
    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>>;

    async fn get_run(&self, id: i64) -> Result<Option<RunRecord>>;

    /// Deletes up to `limit` closed instances closed before `closed_before` (with their
    /// aliases; their findings stay as history). Returns how many.
    async fn archive_instances(&self, closed_before: DateTime<Utc>, limit: usize) -> Result<u64>;

    /// Instances by id (those that exist; archived or merged ones are left out).
    async fn instances_by_ids(&self, ids: Vec<i64>) -> Result<Vec<InstanceRecord>>;

    // ---- alerting (see `alerts.rs`) ----

    /// Writes one pass of the alerting service: alerts, groups, incidents opened, resolved
    /// or notified, timeline entries and its checkpoint (as the lease's state), all or
    /// nothing; `Fenced` when the lease's epoch moved on.
    async fn alerts_commit(&self, commit: AlertsCommit) -> Result<()>;

    /// Alerts, most recently changed first.
    async fn list_alerts(&self, filter: &AlertFilter) -> Result<Vec<AlertRecord>>;

    async fn get_alert(&self, fingerprint: &str) -> Result<Option<AlertRecord>>;

    /// Every notification group's state.
    async fn alert_groups(&self) -> Result<Vec<GroupRow>>;

    async fn get_incident(&self, id: i64) -> Result<Option<IncidentRecord>>;

    /// Incidents, newest first.
    async fn list_incidents(&self, filter: &IncidentFilter) -> Result<Vec<IncidentRecord>>;

    /// An incident's timeline, oldest first.
    async fn incident_timeline(&self, id: i64) -> Result<Vec<IncidentEntry>>;

    /// Acknowledges, resolves or comments on an incident and adds the timeline line.
    /// `NotFound` for an unknown incident; `Conflict` for an ack or resolve of a resolved
    /// one (a comment is always taken); an ack of an acknowledged one changes nothing.
    async fn incident_action(&self, action: IncidentAction) -> Result<IncidentRecord>;

    async fn create_silence(&self, silence: NewSilence) -> Result<SilenceRecord>;

    /// Silences in force at `active_at` (not expired, started, not ended), or every one
    /// (newest first) when `None`.
    async fn list_silences(&self, active_at: Option<DateTime<Utc>>) -> Result<Vec<SilenceRecord>>;

    /// Ends a silence now. `NotFound` for an unknown one; an ended one is returned as is.
    async fn expire_silence(
        &self,
        id: i64,
        actor: &str,
        at: DateTime<Utc>,
    ) -> Result<SilenceRecord>;

    /// Attempts per destination started at or after `since`.
    async fn attempt_stats(&self, since: DateTime<Utc>) -> Result<Vec<AttemptStat>>;
}

pub type SharedStore = Arc<dyn Store>;

/// Options for opening a store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub pool_size: u32,
    pub writer_queue: usize,
    /// PostgreSQL password when not in the URL.
    pub password: Option<String>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            pool_size: 8,
            writer_queue: 4096,
            password: None,
        }
    }
}

/// Checks a store URL without opening anything: its scheme, its parameters, and for SQLite
/// that the file's directory exists. What `switchyard check` reports for `store.url`.
pub fn check_url(url: &str) -> Result<()> {
    if let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        let (path, _) = sqlite::split_params(path)?;
        if path.is_empty() {
            return Err(Error::Url("sqlite URL has no path".into()));
        }
        let dir = std::path::Path::new(path).parent();
        if let Some(dir) = dir
            && !dir.as_os_str().is_empty()
            && !dir.is_dir()
        {
            return Err(Error::Url(format!(
                "directory {} does not exist",
                dir.display()
            )));
        }
        Ok(())
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        postgres::check_url(url)
    } else {
        Err(Error::Url(format!(
            "\"{url}\" is neither sqlite:// nor postgres://"
        )))
    }
}

/// The file of a SQLite store URL (`None` for other backends).
pub fn sqlite_path(url: &str) -> Option<std::path::PathBuf> {
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let (path, _) = sqlite::split_params(path).ok()?;
    Some(std::path::PathBuf::from(path))
}

/// Opens the store a URL names and applies pending migrations.
/// `sqlite://PATH` (relative or absolute; `sqlite:///abs/path` also works; an optional
/// `?max_size_mib=N` caps the file, after which writes fail as if the disk were full) or
/// `postgres://…` (an optional `schema=NAME` query parameter selects a schema).
pub async fn open(url: &str, opts: &StoreOptions) -> Result<SharedStore> {
    if let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        if path.is_empty() {
            return Err(Error::Url("sqlite URL has no path".into()));
        }
        let (path, max_size_mib) = sqlite::split_params(path)?;
        let store =
            sqlite::SqliteStore::open(std::path::Path::new(path), max_size_mib, opts).await?;
        Ok(Arc::new(store))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let store = postgres::PgStore::open(url, opts).await?;
        Ok(Arc::new(store))
    } else {
        Err(Error::Url(format!(
            "\"{url}\" is neither sqlite:// nor postgres://"
        )))
    }
}
