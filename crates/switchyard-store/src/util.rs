//! Conversions shared by both backends: times as integer microseconds (UTC), events as their
//! JSON envelope.

use crate::{Error, Result};
use chrono::{DateTime, Utc};
use switchyard_core::CloudEvent;

pub fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

pub fn from_micros(us: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_micros(us)
        .ok_or_else(|| Error::Corrupt(format!("timestamp {us} out of range")))
}

pub fn opt_from_micros(us: Option<i64>) -> Result<Option<DateTime<Utc>>> {
    us.map(from_micros).transpose()
}

pub fn envelope(event: &CloudEvent) -> String {
    event.to_json().to_string()
}

pub fn decode_envelope(text: &str) -> Result<CloudEvent> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| Error::Corrupt(format!("event envelope: {e}")))?;
    CloudEvent::from_stored_json(value)
        .ok_or_else(|| Error::Corrupt("event envelope lacks id, source or type".into()))
}

pub fn decode_json(text: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text).map_err(|e| Error::Corrupt(format!("stored JSON: {e}")))
}

pub fn parse_role(s: &str) -> Result<switchyard_core::token::Role> {
    s.parse().map_err(Error::Corrupt)
}

/// Group commit: after the first request, takes every request already waiting (up to `max`)
/// and records the group's size and what is left in the queue.
pub fn drain_group<T>(rx: &mut tokio::sync::mpsc::Receiver<T>, group: &mut Vec<T>, max: usize) {
    while group.len() < max {
        match rx.try_recv() {
            Ok(r) => group.push(r),
            Err(_) => break,
        }
    }
    metrics::gauge!("switchyard_store_writer_queue_depth").set(rx.len() as f64);
    metrics::histogram!("switchyard_store_writer_batch_size").record(group.len() as f64);
}

/// The audit record of a job's creation, written in the job's own transaction.
pub fn job_audit(job: &crate::JobRecord) -> crate::NewAudit {
    crate::NewAudit {
        at: job.created_at,
        actor: job.created_by.clone(),
        action: "job.create".into(),
        target: format!("job:{}", job.id),
        detail: serde_json::json!({"kind": job.kind, "params": job.params}),
    }
}

/// Lag of an event in milliseconds: when it was received minus its own `time`, if it has one.
pub fn lag_ms(e: &crate::NewEvent) -> Option<i64> {
    let t = DateTime::parse_from_rfc3339(e.event.time.as_deref()?).ok()?;
    Some((e.received_at - t.with_timezone(&Utc)).num_milliseconds())
}

// ---- audit records of the delivery queue, written by both backends ----

/// The audit record of a replay: who, why, and what changed.
pub(crate) fn replay_audit(
    r: &crate::delivery::Replay,
    before: &crate::delivery::DeliveryRecord,
    after: &crate::delivery::DeliveryRecord,
) -> crate::NewAudit {
    let mut changed = serde_json::Map::new();
    if before.payload != after.payload {
        changed.insert(
            "payload".into(),
            serde_json::json!({"before": before.payload, "after": after.payload}),
        );
    }
    if before.flow_version != after.flow_version {
        changed.insert(
            "flow_version".into(),
            serde_json::json!({"before": before.flow_version, "after": after.flow_version}),
        );
    }
    changed.insert(
        "state".into(),
        serde_json::json!({"before": before.state, "after": after.state}),
    );
    crate::NewAudit {
        at: r.at,
        actor: r.actor.clone(),
        action: r.action.clone(),
        target: format!("delivery:{}", r.id),
        detail: serde_json::json!({
            "reason": r.reason,
            "flow": after.flow,
            "event": {"source": after.event_source, "id": after.event_id},
            "generation": after.generation,
            "changed": changed,
        }),
    }
}

/// The audit record of a dead letter's discard.
pub(crate) fn discard_audit(
    before: &crate::delivery::DeliveryRecord,
    actor: &str,
    reason: &str,
    at: DateTime<Utc>,
) -> crate::NewAudit {
    crate::NewAudit {
        at,
        actor: actor.to_string(),
        action: "dlq.discard".into(),
        target: format!("delivery:{}", before.id),
        detail: serde_json::json!({
            "reason": reason,
            "flow": before.flow,
            "event": {"source": before.event_source, "id": before.event_id},
            "generation": before.generation,
            "changed": {"state": {"before": before.state, "after": "discarded"}},
        }),
    }
}

/// The audit record of an operator lifting a destination's pause.
pub(crate) fn resume_audit(
    destination: &str,
    actor: &str,
    reason: &str,
    at: DateTime<Utc>,
) -> crate::NewAudit {
    crate::NewAudit {
        at,
        actor: actor.to_string(),
        action: "destination.resume".into(),
        target: format!("destination:{destination}"),
        detail: serde_json::json!({"reason": reason}),
    }
}
