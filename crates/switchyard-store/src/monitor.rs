//! The workflow monitor's rows: instances (with their aliases and their next timer),
//! findings, and the workflow definition versions instances started under.
//!
//! Instances are held in the store, not in memory: the monitor loads the ones an event's
//! keys name, changes them, and writes them back with their findings and its log checkpoint
//! in one transaction fenced by its singleton lease. Timers are the `due_at` column, the
//! earliest instant the instance's state machine will change by time alone.

use crate::{Error, Lease, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;
use switchyard_core::batch::{BatchRun, RunStatus};
use switchyard_core::instance::{Evidence, Finding, FindingKind, Instance, InstanceState};
use switchyard_core::sources::BusinessKey;

/// An instance as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstanceRecord {
    pub id: i64,
    #[serde(flatten)]
    pub instance: Instance,
    /// The next instant a timer of the instance fires (none when closed).
    pub due_at: Option<DateTime<Utc>>,
    /// When the monitor last wrote it (business time).
    pub updated_at: DateTime<Utc>,
}

/// One instance to write in a [`MonitorCommit`].
#[derive(Debug, Clone)]
pub struct InstanceWrite {
    /// `None` for a new instance (the commit assigns its id).
    pub id: Option<i64>,
    pub instance: Instance,
    pub due_at: Option<DateTime<Utc>>,
    /// Point the instance's aliases at it: a new instance, new keys, a merge. A write that
    /// only moves time on (timers) leaves the aliases alone.
    pub relink: bool,
    /// Findings raised on it; inserted unless the instance already has one of the same
    /// (step, kind) (the unique constraint that stops a stale owner recording one twice).
    pub findings: Vec<Finding>,
    /// Stored instances merged into this one: their findings move to it (except those of a
    /// (step, kind) it already has), their aliases now name it, their rows are deleted.
    pub absorbed: Vec<i64>,
}

/// A workflow definition version (the compiled definition's JSON and its hash).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkflowVersion {
    pub workflow: String,
    pub version: String,
    pub definition: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

/// Everything one step of the monitor changes, committed as one transaction.
#[derive(Debug, Clone)]
pub struct MonitorCommit {
    /// The monitor's singleton lease: the commit applies only while it is held with this
    /// epoch (`Fenced` otherwise, nothing written).
    pub lease: Lease,
    /// Saved as the lease's state (the monitor's log checkpoint) when set.
    pub checkpoint: Option<serde_json::Value>,
    /// Inserted if new (`(workflow, version)` is unique).
    pub versions: Vec<WorkflowVersion>,
    pub writes: Vec<InstanceWrite>,
    /// Batch runs to write, with their findings.
    pub runs: Vec<RunWrite>,
    /// Business time of the commit: `updated_at` of the instances and runs, `detected_at` of
    /// findings.
    pub now: DateTime<Utc>,
    /// Insert only the findings of the (existing) instances and runs written, not their rows:
    /// timers make their findings visible at once and write the instances after; if that
    /// second commit never happens, the timers fire again and the unique constraint keeps
    /// the findings single.
    pub findings_only: bool,
}

/// What a [`MonitorCommit`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MonitorCommitted {
    /// The id of each instance write, in order (new ones assigned by the commit).
    pub instances: Vec<i64>,
    /// The id of each run write, in order (new ones assigned by the commit).
    pub runs: Vec<i64>,
    /// How many findings were inserted (instances' and runs').
    pub findings: u64,
}

/// One batch run to write in a [`MonitorCommit`].
#[derive(Debug, Clone)]
pub struct RunWrite {
    /// `None` for a new run.
    pub id: Option<i64>,
    /// [`SUBJECT_BATCH`] for a batch job's run, [`SUBJECT_RECONCILIATION`] for a
    /// reconciliation's: the subject of its findings.
    pub subject: &'static str,
    pub run: BatchRun,
    /// Findings about the run; each (run, step, kind) once.
    pub findings: Vec<Finding>,
}

/// A batch run as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRecord {
    pub id: i64,
    #[serde(flatten)]
    pub run: BatchRun,
    pub updated_at: DateTime<Utc>,
}

/// Narrows [`crate::Store::list_runs`]. Newest first (by id).
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub monitor: Option<String>,
    /// Any of these (all when empty).
    pub statuses: Vec<RunStatus>,
    /// Runs of exactly this scheduled instant.
    pub slot: Option<DateTime<Utc>>,
    /// The job's own run id.
    pub run_id: Option<String>,
    /// Started at or after.
    pub started_since: Option<DateTime<Utc>>,
    pub before_id: Option<i64>,
    pub limit: usize,
}

/// What a finding is about: a workflow instance or a batch run (`instance_id` is then the
/// run's id, `workflow` the monitor's name, `step` is `run`).
pub const SUBJECT_WORKFLOW: &str = "workflow";
pub const SUBJECT_BATCH: &str = "batch";
/// A reconciliation's run: `step` is the record's key (a product), one finding per mismatch.
pub const SUBJECT_RECONCILIATION: &str = "reconciliation";

/// A finding as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FindingRecord {
    pub id: i64,
    /// [`SUBJECT_WORKFLOW`] or [`SUBJECT_BATCH`].
    pub subject: String,
    pub instance_id: i64,
    pub workflow: String,
    /// The instance's label when the finding was raised (its key, or another while
    /// provisional).
    pub instance_key: String,
    #[serde(flatten)]
    pub finding: Finding,
    /// When the monitor recorded it (business time); `at` is when it became true.
    pub detected_at: DateTime<Utc>,
}

/// Narrows [`crate::Store::list_instances`]. Results are newest first (by id).
#[derive(Debug, Clone, Default)]
pub struct InstanceFilter {
    pub workflow: Option<String>,
    /// Any of these states (all when empty).
    pub states: Vec<InstanceState>,
    /// A dimension's value (`warehouse` = `WH2`).
    pub dimension: Option<(String, String)>,
    /// Started at or after / before.
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Instances with an id below this (paging).
    pub before_id: Option<i64>,
    pub limit: usize,
}

/// Narrows [`crate::Store::list_findings`]. Results are in id order (oldest first).
#[derive(Debug, Clone, Default)]
pub struct FindingFilter {
    /// [`SUBJECT_WORKFLOW`] or [`SUBJECT_BATCH`] (both when unset).
    pub subject: Option<String>,
    pub workflow: Option<String>,
    pub kind: Option<FindingKind>,
    pub instance_id: Option<i64>,
    /// Became true at or after.
    pub since: Option<DateTime<Utc>>,
    /// Findings with an id above this (paging, and a cursor for followers such as alerts).
    pub after_id: i64,
    pub limit: usize,
}

/// Instances of one workflow in one state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceCount {
    pub workflow: String,
    pub state: InstanceState,
    pub count: i64,
}

/// Upper bounds (exclusive) of the cycle-time bins of [`ClosedCount`]: under 1 min, 5 min,
/// 15 min, 1 h, 4 h, 1 day, 3 days; the last bin holds the rest.
pub const CYCLE_BINS_SECONDS: [i64; 7] = [60, 300, 900, 3_600, 14_400, 86_400, 259_200];

/// Closed instances of one workflow in one time bucket (by `closed_at`), one final state and
/// one cycle-time bin (start to close; index into [`CYCLE_BINS_SECONDS`], or its length for
/// the longest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClosedCount {
    pub bucket: DateTime<Utc>,
    pub state: InstanceState,
    pub cycle_bin: usize,
    pub count: i64,
}

/// The query of [`crate::Store::closed_counts`], the same on both backends: `$1` workflow,
/// `$2` closed at or after (µs), `$3` bucket width (µs).
pub(crate) fn closed_counts_sql() -> String {
    let mut case = String::from("CASE");
    for (i, b) in CYCLE_BINS_SECONDS.iter().enumerate() {
        case.push_str(&format!(
            " WHEN closed_at - started_at < {} THEN {i}",
            b * 1_000_000
        ));
    }
    case.push_str(&format!(" ELSE {} END", CYCLE_BINS_SECONDS.len()));
    format!(
        "SELECT (closed_at / $3) * $3 AS b, state, {case} AS bin, COUNT(*)
         FROM wf_instances WHERE workflow = $1 AND closed_at >= $2
         GROUP BY b, state, bin ORDER BY b, state, bin"
    )
}

/// A key an event carried, within one workflow.
pub type WorkflowAlias = (String, BusinessKey);

// ---- the columns both backends store, encoded and decoded the same way ----

/// An instance's `body` column: the whole instance as JSON.
pub(crate) fn encode_instance(instance: &Instance) -> Result<String> {
    serde_json::to_string(instance)
        .map_err(|e| Error::Corrupt(format!("cannot encode workflow instance: {e}")))
}

pub(crate) fn decode_instance(body: &str) -> Result<Instance> {
    serde_json::from_str(body).map_err(|e| Error::Corrupt(format!("stored workflow instance: {e}")))
}

/// A finding's `evidence` column: a JSON array of events.
pub(crate) fn encode_evidence(evidence: &[Evidence]) -> Result<String> {
    serde_json::to_string(evidence)
        .map_err(|e| Error::Corrupt(format!("cannot encode finding evidence: {e}")))
}

pub(crate) fn decode_evidence(text: &str) -> Result<Vec<Evidence>> {
    serde_json::from_str(text).map_err(|e| Error::Corrupt(format!("stored finding evidence: {e}")))
}

pub(crate) fn parse_state(s: &str) -> Result<InstanceState> {
    InstanceState::parse(s).ok_or_else(|| Error::Corrupt(format!("unknown instance state {s}")))
}

pub(crate) fn parse_kind(s: &str) -> Result<FindingKind> {
    FindingKind::parse(s).ok_or_else(|| Error::Corrupt(format!("unknown finding kind {s}")))
}

pub(crate) fn parse_run_status(s: &str) -> Result<RunStatus> {
    RunStatus::parse(s).ok_or_else(|| Error::Corrupt(format!("unknown batch run status {s}")))
}

/// The subjects a [`FindingFilter`] matches: its own, or every one. A list rather than
/// "any when unset", so that `subject` stays the leading column the unique index is
/// searched by when only `instance_id` is given.
pub(crate) fn finding_subjects(f: &FindingFilter) -> Vec<&str> {
    match &f.subject {
        Some(s) => vec![s.as_str()],
        None => vec![SUBJECT_WORKFLOW, SUBJECT_BATCH, SUBJECT_RECONCILIATION],
    }
}
