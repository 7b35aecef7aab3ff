//! The alerting service's rows: alerts (one per fingerprint, with a count), the state of
//! each notification group, incidents with their timelines, and silences.
//!
//! Alerts and groups are written only by the holder of lease `alerts`, in one
//! [`AlertsCommit`] fenced by its epoch (like the workflow monitor). Incidents are opened
//! and resolved automatically by that commit, and acknowledged, commented on or resolved
//! by hand through [`crate::Store::incident_action`]; silences are created and expired by
//! operators. Both hand paths change only their own columns, so neither overwrites the
//! other.

use crate::Lease;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use switchyard_core::alerts::{Cause, Labels, Severity};

/// Whether an alert's condition holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Firing,
    Resolved,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
    }

    pub fn parse(s: &str) -> Option<AlertState> {
        match s {
            "firing" => Some(AlertState::Firing),
            "resolved" => Some(AlertState::Resolved),
            _ => None,
        }
    }
}

/// One alert: the same (rule, labels) is one alert, however often its condition is seen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRecord {
    pub fingerprint: String,
    /// The rule's name (also the `alertname` label).
    pub rule: String,
    pub labels: Labels,
    pub state: AlertState,
    pub severity: Severity,
    pub cause: Cause,
    /// In business terms, with the evidence's highlights.
    pub summary: String,
    /// How many times its condition was seen (findings folded in, evaluations that held).
    pub count: i64,
    /// Instance keys, event ids, error texts, the measured value; and what the service
    /// needs to decide when it clears.
    pub evidence: Value,
    /// Why nobody is told: `silenced:<id>`, `inhibited`, `maintenance:<name>`; `None` when
    /// it is active.
    pub suppressed: Option<String>,
    pub starts_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub ends_at: Option<DateTime<Utc>>,
    /// The incident it belongs to (the first group's).
    pub incident_id: Option<i64>,
    /// When its incident was acknowledged while it fired, and by whom.
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub acknowledged_by: Option<String>,
}

/// Narrows [`crate::Store::list_alerts`]. Newest first (by `updated_at`).
#[derive(Debug, Clone, Default)]
pub struct AlertFilter {
    pub state: Option<AlertState>,
    pub incident_id: Option<i64>,
    /// Started at or after.
    pub since: Option<DateTime<Utc>>,
    pub limit: usize,
}

/// The state of one notification group (a route and the values of its `group_by`
/// labels), as the alerting service keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupRow {
    pub key: String,
    pub body: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IncidentStatus {
    Open,
    Acknowledged,
    Resolved,
}

impl IncidentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentStatus::Open => "open",
            IncidentStatus::Acknowledged => "acknowledged",
            IncidentStatus::Resolved => "resolved",
        }
    }

    pub fn parse(s: &str) -> Option<IncidentStatus> {
        match s {
            "open" => Some(IncidentStatus::Open),
            "acknowledged" => Some(IncidentStatus::Acknowledged),
            "resolved" => Some(IncidentStatus::Resolved),
            _ => None,
        }
    }
}

/// An incident: a notification group that fired, owned by its receiver's team.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentRecord {
    /// Assigned by the alerting service (1, 2, …).
    pub id: i64,
    pub group_key: String,
    pub group_labels: Labels,
    pub receiver: String,
    pub team: String,
    pub title: String,
    pub severity: Severity,
    pub cause: Cause,
    pub status: IncidentStatus,
    pub opened_at: DateTime<Utc>,
    pub notified_at: Option<DateTime<Utc>>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub acknowledged_by: Option<String>,
    pub resolved_at: Option<DateTime<Utc>>,
    /// `switchyard` when it resolved because its alerts cleared.
    pub resolved_by: Option<String>,
    /// Instance keys and event ids of its alerts when it opened (links).
    pub links: Value,
}

/// Narrows [`crate::Store::list_incidents`]. Newest first (by id).
#[derive(Debug, Clone, Default)]
pub struct IncidentFilter {
    pub status: Vec<IncidentStatus>,
    pub team: Option<String>,
    /// Opened at or after.
    pub since: Option<DateTime<Utc>>,
    pub before_id: Option<i64>,
    pub limit: usize,
}

/// One line of an incident's timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentEntry {
    pub id: i64,
    pub incident_id: i64,
    pub at: DateTime<Utc>,
    /// `opened`, `notified`, `alert_fired`, `alert_cleared`, `acknowledged`, `comment`,
    /// `resolved`.
    pub kind: String,
    pub actor: Option<String>,
    pub text: String,
}

/// A timeline line to add.
#[derive(Debug, Clone, PartialEq)]
pub struct NewIncidentEntry {
    pub incident_id: i64,
    pub at: DateTime<Utc>,
    pub kind: String,
    pub actor: Option<String>,
    pub text: String,
}

/// What a person does to an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncidentActionKind {
    Acknowledge,
    Resolve,
    Comment,
}

#[derive(Debug, Clone, PartialEq)]
pub struct IncidentAction {
    pub id: i64,
    pub kind: IncidentActionKind,
    pub actor: String,
    pub at: DateTime<Utc>,
    /// The comment (or a note with an ack or resolve).
    pub text: String,
}

/// Everything the alerting service changes in one pass, in one transaction fenced by its
/// lease epoch.
#[derive(Debug, Clone)]
pub struct AlertsCommit {
    pub lease: Lease,
    /// The service's own state (its finding cursor, the next incident id, …).
    pub checkpoint: Option<Value>,
    /// Upserted by fingerprint.
    pub alerts: Vec<AlertRecord>,
    /// Resolved alerts old enough to forget.
    pub delete_alerts: Vec<String>,
    /// Upserted by key.
    pub groups: Vec<GroupRow>,
    pub delete_groups: Vec<String>,
    /// New incidents (their ids come from the service's checkpoint).
    pub open_incidents: Vec<IncidentRecord>,
    /// Incidents whose alerts all cleared: resolved by `switchyard` unless already
    /// resolved by hand.
    pub resolve_incidents: Vec<(i64, DateTime<Utc>)>,
    /// The first notification of an incident was sent.
    pub notified_incidents: Vec<(i64, DateTime<Utc>)>,
    pub entries: Vec<NewIncidentEntry>,
}

impl AlertsCommit {
    pub fn new(lease: Lease) -> AlertsCommit {
        AlertsCommit {
            lease,
            checkpoint: None,
            alerts: Vec::new(),
            delete_alerts: Vec::new(),
            groups: Vec::new(),
            delete_groups: Vec::new(),
            open_incidents: Vec::new(),
            resolve_incidents: Vec::new(),
            notified_incidents: Vec::new(),
            entries: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.checkpoint.is_none()
            && self.alerts.is_empty()
            && self.delete_alerts.is_empty()
            && self.groups.is_empty()
            && self.delete_groups.is_empty()
            && self.open_incidents.is_empty()
            && self.resolve_incidents.is_empty()
            && self.notified_incidents.is_empty()
            && self.entries.is_empty()
    }
}

/// A silence: matching alerts notify nobody between `starts_at` and `ends_at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SilenceRecord {
    pub id: i64,
    /// Matchers in Alertmanager's syntax.
    pub matchers: Vec<String>,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub created_by: String,
    pub comment: String,
    pub created_at: DateTime<Utc>,
    /// Ended early by hand.
    pub expired_at: Option<DateTime<Utc>>,
    pub expired_by: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewSilence {
    pub matchers: Vec<String>,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub created_by: String,
    pub comment: String,
    pub created_at: DateTime<Utc>,
}

/// Attempts to one destination since an instant.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttemptStat {
    pub destination: String,
    pub attempts: i64,
    /// Not delivered.
    pub failed: i64,
    /// Answered 429.
    pub throttled: i64,
    /// The most recent attempt's outcome, status and error (what the alert quotes).
    pub last_outcome: String,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
}

/// What a hand action makes of an incident, the same on every backend: the incident after
/// it and the timeline kind to record, or `None` when it changes nothing (a second ack).
/// `Conflict` to ack or resolve a resolved incident; a comment is always taken.
pub(crate) fn apply_action(
    current: &IncidentRecord,
    a: &IncidentAction,
) -> crate::Result<Option<(IncidentRecord, &'static str)>> {
    let mut i = current.clone();
    let kind = match a.kind {
        IncidentActionKind::Comment => "comment",
        IncidentActionKind::Acknowledge | IncidentActionKind::Resolve
            if current.status == IncidentStatus::Resolved =>
        {
            return Err(crate::Error::Conflict(format!(
                "incident {} is already resolved",
                a.id
            )));
        }
        IncidentActionKind::Acknowledge if current.status == IncidentStatus::Acknowledged => {
            return Ok(None);
        }
        IncidentActionKind::Acknowledge => {
            i.status = IncidentStatus::Acknowledged;
            i.acknowledged_at = Some(a.at);
            i.acknowledged_by = Some(a.actor.clone());
            "acknowledged"
        }
        IncidentActionKind::Resolve => {
            // Resolving an unacknowledged incident acknowledges it then (for MTTA).
            if i.acknowledged_at.is_none() {
                i.acknowledged_at = Some(a.at);
                i.acknowledged_by = Some(a.actor.clone());
            }
            i.status = IncidentStatus::Resolved;
            i.resolved_at = Some(a.at);
            i.resolved_by = Some(a.actor.clone());
            "resolved"
        }
    };
    Ok(Some((i, kind)))
}

/// The automatic resolve of an incident whose alerts all cleared; one resolved by hand
/// keeps the hand's resolve.
pub(crate) fn auto_resolve(i: &mut IncidentRecord, at: DateTime<Utc>) {
    if i.status != IncidentStatus::Resolved {
        i.status = IncidentStatus::Resolved;
        i.resolved_at = Some(at);
        i.resolved_by = Some("switchyard".into());
    }
}

/// Records when an incident's first notification went out.
pub(crate) fn mark_notified(i: &mut IncidentRecord, at: DateTime<Utc>) {
    if i.notified_at.is_none() {
        i.notified_at = Some(at);
    }
}

impl SilenceRecord {
    /// A new silence as it is stored (its id comes from the insert).
    pub(crate) fn from_new(n: &NewSilence) -> SilenceRecord {
        SilenceRecord {
            id: 0,
            matchers: n.matchers.clone(),
            starts_at: n.starts_at,
            ends_at: n.ends_at,
            created_by: n.created_by.clone(),
            comment: n.comment.clone(),
            created_at: n.created_at,
            expired_at: None,
            expired_by: None,
        }
    }

    /// Ends it early at `at`; `false` when it had already ended (nothing changes).
    pub(crate) fn expire(&mut self, actor: &str, at: DateTime<Utc>) -> bool {
        if self.expired_at.is_some() || self.ends_at <= at {
            return false;
        }
        self.expired_at = Some(at);
        self.expired_by = Some(actor.to_string());
        true
    }
}
