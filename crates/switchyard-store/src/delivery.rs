//! The durable delivery queue's types: one record per (event, flow), its attempts, and the
//! paused destinations.
//!
//! Lifecycle of a delivery (states in `snake_case` as stored and shown):
//!
//! ```text
//!  routing ─┬─ filtered                       (the flow's jq filter said no; final)
//!           ├─ mapping_failed ─┐              (jq error)            ┐
//!           ├─ invalid ────────┤              (schema errors)       ├ the dead-letter queue
//!           └─ scheduled ──► delivering ──► delivered               │  replay ► scheduled
//!                 ▲   ▲          │ ├──► retry_wait ──(due)──► …     │  discard ► discarded
//!                 │   └─(lease expired, crash)                      │
//!                 └──────────────┴──► dead ─────────────────────────┘
//! ```

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use switchyard_core::delivery::{ErrorClass, Lane};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    Filtered,
    MappingFailed,
    Invalid,
    Scheduled,
    Delivering,
    RetryWait,
    Delivered,
    Dead,
    Discarded,
}

impl DeliveryState {
    pub const ALL: [DeliveryState; 9] = [
        DeliveryState::Filtered,
        DeliveryState::MappingFailed,
        DeliveryState::Invalid,
        DeliveryState::Scheduled,
        DeliveryState::Delivering,
        DeliveryState::RetryWait,
        DeliveryState::Delivered,
        DeliveryState::Dead,
        DeliveryState::Discarded,
    ];
    /// Waiting for or in a delivery attempt.
    pub const PENDING: [DeliveryState; 3] = [
        DeliveryState::Scheduled,
        DeliveryState::Delivering,
        DeliveryState::RetryWait,
    ];
    /// The dead-letter queue: replayable or discardable by an operator.
    pub const DEAD_LETTERS: [DeliveryState; 3] = [
        DeliveryState::MappingFailed,
        DeliveryState::Invalid,
        DeliveryState::Dead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Filtered => "filtered",
            DeliveryState::MappingFailed => "mapping_failed",
            DeliveryState::Invalid => "invalid",
            DeliveryState::Scheduled => "scheduled",
            DeliveryState::Delivering => "delivering",
            DeliveryState::RetryWait => "retry_wait",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Dead => "dead",
            DeliveryState::Discarded => "discarded",
        }
    }

    pub fn parse(s: &str) -> Option<DeliveryState> {
        DeliveryState::ALL.into_iter().find(|d| d.as_str() == s)
    }

    pub fn is_pending(self) -> bool {
        DeliveryState::PENDING.contains(&self)
    }

    pub fn is_dead_letter(self) -> bool {
        DeliveryState::DEAD_LETTERS.contains(&self)
    }
}

/// Lease a new delivery to this node at once (the outbox hand-off: the node that ingested
/// the event sends it without another round trip to the store). Granted only when the
/// delivery is `scheduled` and no earlier delivery holds its ordering key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRequest {
    pub owner: String,
    /// Real time.
    pub until: DateTime<Utc>,
}

/// A delivery created by routing an event through a flow, written in the event's own
/// transaction (or by a backfill).
#[derive(Debug, Clone, PartialEq)]
pub struct NewDelivery {
    pub flow: String,
    pub flow_version: String,
    pub destination: String,
    pub lane: Lane,
    pub ordering_key: Option<String>,
    /// A dead-lettered delivery keeps holding its ordering key (`on_failure = "hold"`).
    pub hold_on_dead: bool,
    /// `filtered`, `mapping_failed`, `invalid` or `scheduled`.
    pub state: DeliveryState,
    pub payload: Option<Value>,
    /// The jq error or a summary of the schema errors.
    pub error: Option<String>,
    /// Structured detail: the schema errors with their JSON pointers.
    pub error_detail: Option<Value>,
    pub traceparent: Option<String>,
    pub lease: Option<LeaseRequest>,
}

/// What the store made of one [`NewDelivery`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreatedDelivery {
    pub id: i64,
    /// The lease was granted: the delivery is `delivering`, owned by the requester.
    pub leased: bool,
}

/// A delivery as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeliveryRecord {
    pub id: i64,
    pub event_seq: i64,
    pub event_source: String,
    pub event_id: String,
    pub event_type: String,
    /// When the event was received (business time).
    pub received_at: DateTime<Utc>,
    pub flow: String,
    pub flow_version: String,
    pub destination: String,
    pub lane: Lane,
    pub ordering_key: Option<String>,
    pub hold_on_dead: bool,
    pub state: DeliveryState,
    pub payload: Option<Value>,
    pub traceparent: Option<String>,
    /// 0, then +1 at every operator replay or edit.
    pub generation: i64,
    /// Attempts in this generation.
    pub attempts: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub lease_owner: Option<String>,
    /// Real time.
    pub lease_until: Option<DateTime<Utc>>,
    pub error_class: Option<ErrorClass>,
    pub last_error: Option<String>,
    pub last_status: Option<i32>,
    pub error_detail: Option<Value>,
    /// The destination's progress through a multi-step delivery (an Odoo call's step
    /// cursor and what earlier steps found), saved with each attempt's result so the next
    /// attempt resumes there. Cleared when a replay changes the payload.
    pub cursor: Option<Value>,
}

/// One recorded attempt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttemptRecord {
    pub id: i64,
    pub delivery_id: i64,
    pub generation: i64,
    /// 1-based within its generation.
    pub attempt: i64,
    pub node: String,
    pub started_at: DateTime<Utc>,
    pub duration_ms: f64,
    /// `delivered` or the error class.
    pub outcome: String,
    pub status: Option<i32>,
    pub response_excerpt: Option<String>,
    pub error: Option<String>,
}

/// What follows an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptNext {
    Delivered,
    /// `retry_wait` until then (business time).
    RetryAt(DateTime<Utc>),
    /// Dead-letter with this reason.
    Dead(String),
    /// A credential failure: the delivery waits (`retry_wait`, due at `retry_at`, the attempt
    /// not counted against its budget) and the destination is paused until
    /// `resume_after`, when one trial delivery may test it.
    Pause {
        retry_at: DateTime<Utc>,
        resume_after: DateTime<Utc>,
    },
}

/// The result of one attempt, recorded with the delivery's new state in one transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptResult {
    pub delivery_id: i64,
    /// The lease holder (the claim's owner token); the state changes only while it still
    /// holds the lease.
    pub owner: String,
    /// The node that made the attempt (recorded with it).
    pub node: String,
    pub generation: i64,
    pub started_at: DateTime<Utc>,
    pub duration_ms: f64,
    pub status: Option<i32>,
    pub response_excerpt: Option<String>,
    /// `None` when delivered.
    pub class: Option<ErrorClass>,
    pub error: Option<String>,
    pub next: AttemptNext,
    /// Business time of the result.
    pub now: DateTime<Utc>,
    /// The delivery's new [`DeliveryRecord::cursor`]; `None` keeps the stored one.
    pub cursor: Option<Value>,
}

/// Claim due deliveries of one lane for `owner`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimRequest {
    /// The lease owner written on the claimed deliveries. The engine makes it unique per
    /// claim (`node#n`), so a delivery claimed again by the same node after its lease
    /// expired cannot be extended or completed by the earlier, stale holder.
    pub owner: String,
    pub lane: Lane,
    pub limit: usize,
    /// Business time: `scheduled`/`retry_wait` deliveries due at or before it are claimed.
    pub now: DateTime<Utc>,
    /// Real time: `delivering` deliveries whose lease ended before it are claimed again.
    pub real_now: DateTime<Utc>,
    /// Real time the new leases end.
    pub lease_until: DateTime<Utc>,
    /// Skip these destinations (paused, circuit open, rate-limited).
    pub exclude: Vec<String>,
    /// Only this destination (a trial or probe delivery).
    pub only: Option<String>,
}

/// Narrows a delivery listing. Empty fields match everything; results are in id order after
/// `after`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeliveryFilter {
    pub flow: Option<String>,
    pub destination: Option<String>,
    pub states: Vec<DeliveryState>,
    pub class: Option<ErrorClass>,
    pub event_seq: Option<i64>,
    pub ordering_key: Option<String>,
    /// Created at or after (business time).
    pub since: Option<DateTime<Utc>>,
    /// Created before.
    pub until: Option<DateTime<Utc>>,
    /// Changed (state, attempt) at or after (business time).
    pub updated_since: Option<DateTime<Utc>>,
    pub after: i64,
    pub limit: usize,
}

/// How many deliveries of one flow are in one state, and the oldest of them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeliveryStat {
    pub flow: String,
    pub destination: String,
    pub lane: Lane,
    pub state: DeliveryState,
    pub count: i64,
    pub oldest_created_at: DateTime<Utc>,
}

/// A destination paused after a credential failure (shared by every node).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DestinationPause {
    pub destination: String,
    pub paused_at: DateTime<Utc>,
    /// After this (business time) one trial delivery may test the destination.
    pub resume_after: DateTime<Utc>,
    pub reason: String,
}

/// An operator's replay (optionally with an edited payload) or a re-routing after a flow was
/// fixed: the delivery starts a new generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Replay {
    pub id: i64,
    pub actor: String,
    pub reason: String,
    pub at: DateTime<Utc>,
    /// The new state: `scheduled`, or `mapping_failed`/`invalid` when re-routing failed again.
    pub state: DeliveryState,
    /// Replace the payload (an edit, or a fresh mapping); `None` keeps it.
    pub payload: Option<Value>,
    pub flow_version: Option<String>,
    pub ordering_key: Option<Option<String>>,
    pub error: Option<String>,
    pub error_detail: Option<Value>,
    /// `dlq.replay` or `dlq.edit` (audited with what changed).
    pub action: String,
}
