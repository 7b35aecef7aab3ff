//! The delivery queue on SQLite: statements run on the writer thread (changes) or a pooled
//! reader (listings). The single writer serialises claims, so no two claims ever see the
//! same row as free.

use crate::delivery::*;
use crate::util::{
    decode_json, discard_audit, from_micros, micros, opt_from_micros, replay_audit, resume_audit,
};
use crate::{Error, NewAudit, Result};
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};
use switchyard_core::delivery::{ErrorClass, Lane};

fn map_err(e: rusqlite::Error) -> Error {
    crate::sqlite::map_err(e)
}

pub(crate) const COLS: &str = "id, event_seq, event_source, event_id, event_type, received_at, flow, flow_version, destination, lane, ordering_key, hold_on_dead, state, payload, traceparent, generation, attempts, created_at, updated_at, next_attempt_at, delivered_at, lease_owner, lease_until, error_class, last_error, last_status, error_detail, cursor";

/// Rows that keep later deliveries of their (destination, ordering key) waiting.
const BLOCKING: &str = "(p.state IN ('scheduled', 'retry_wait', 'delivering') OR (p.hold_on_dead <> 0 AND p.state IN ('dead', 'mapping_failed', 'invalid')))";

pub(crate) fn record(r: &rusqlite::Row) -> rusqlite::Result<Result<DeliveryRecord>> {
    let lane: i16 = r.get(9)?;
    let state: String = r.get(12)?;
    let payload: Option<String> = r.get(13)?;
    let class: Option<String> = r.get(23)?;
    let detail: Option<String> = r.get(26)?;
    let cursor: Option<String> = r.get(27)?;
    let received_at: i64 = r.get(5)?;
    let created_at: i64 = r.get(17)?;
    let updated_at: i64 = r.get(18)?;
    let next: Option<i64> = r.get(19)?;
    let delivered: Option<i64> = r.get(20)?;
    let lease_until: Option<i64> = r.get(22)?;
    let (id, event_seq, event_source, event_id, event_type) =
        (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?);
    let (flow, flow_version, destination, ordering_key) =
        (r.get(6)?, r.get(7)?, r.get(8)?, r.get(10)?);
    let hold: bool = r.get(11)?;
    let traceparent = r.get(14)?;
    let (generation, attempts) = (r.get(15)?, r.get(16)?);
    let lease_owner = r.get(21)?;
    let last_error = r.get(24)?;
    let last_status = r.get(25)?;
    Ok((|| {
        Ok(DeliveryRecord {
            id,
            event_seq,
            event_source,
            event_id,
            event_type,
            received_at: from_micros(received_at)?,
            flow,
            flow_version,
            destination,
            lane: Lane::from_rank(lane)
                .ok_or_else(|| Error::Corrupt(format!("unknown lane {lane}")))?,
            ordering_key,
            hold_on_dead: hold,
            state: DeliveryState::parse(&state)
                .ok_or_else(|| Error::Corrupt(format!("unknown delivery state {state}")))?,
            payload: payload.as_deref().map(decode_json).transpose()?,
            traceparent,
            generation,
            attempts,
            created_at: from_micros(created_at)?,
            updated_at: from_micros(updated_at)?,
            next_attempt_at: opt_from_micros(next)?,
            delivered_at: opt_from_micros(delivered)?,
            lease_owner,
            lease_until: opt_from_micros(lease_until)?,
            error_class: class.as_deref().and_then(ErrorClass::parse),
            last_error,
            last_status,
            error_detail: detail.as_deref().map(decode_json).transpose()?,
            cursor: cursor.as_deref().map(decode_json).transpose()?,
        })
    })())
}

fn collect(
    rows: impl Iterator<Item = rusqlite::Result<Result<DeliveryRecord>>>,
) -> Result<Vec<DeliveryRecord>> {
    rows.map(|r| r.map_err(map_err)?).collect()
}

/// Inserts one delivery for event `seq` in the caller's transaction. `None` when the
/// (event, flow) pair already has one.
/// The attributes of the event a delivery is for.
pub(crate) struct EventAttrs<'a> {
    pub source: &'a str,
    pub id: &'a str,
    pub ty: &'a str,
    pub received: i64,
    /// When the delivery is created: the event's reception at ingest, now for a backfill.
    pub created: i64,
}

/// Reads the attributes of stored event `seq` (a backfill).
pub(crate) fn event_attrs(
    c: &Connection,
    seq: i64,
) -> Result<Option<(String, String, String, i64)>> {
    c.prepare_cached("SELECT source, event_id, type, received_at FROM events WHERE seq = ?1")
        .and_then(|mut s| {
            s.query_row([seq], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .optional()
        })
        .map_err(map_err)
}

pub(crate) fn insert(
    c: &Connection,
    seq: i64,
    ev: &EventAttrs,
    d: &NewDelivery,
) -> Result<Option<CreatedDelivery>> {
    let (source, id, ty, received, created) = (ev.source, ev.id, ev.ty, ev.received, ev.created);
    let blocked = match &d.ordering_key {
        Some(key) if d.lease.is_some() => c
            .prepare_cached(&format!(
                "SELECT EXISTS (SELECT 1 FROM deliveries p WHERE p.destination = ?1 AND p.ordering_key = ?2 AND {BLOCKING})"
            ))
            .and_then(|mut s| s.query_row(params![d.destination, key], |r| r.get::<_, bool>(0)))
            .map_err(map_err)?,
        _ => false,
    };
    let lease = match &d.lease {
        Some(l) if d.state == DeliveryState::Scheduled && !blocked => Some(l),
        _ => None,
    };
    let state = if lease.is_some() {
        DeliveryState::Delivering
    } else {
        d.state
    };
    let next = (d.state == DeliveryState::Scheduled).then_some(created);
    let class = match d.state {
        DeliveryState::MappingFailed => Some(ErrorClass::Mapping.as_str()),
        DeliveryState::Invalid => Some(ErrorClass::Invalid.as_str()),
        _ => None,
    };
    let id: Option<i64> = c
        .prepare_cached(
            "INSERT INTO deliveries (event_seq, event_source, event_id, event_type, received_at, flow, flow_version, destination, lane, ordering_key, hold_on_dead, state, payload, traceparent, created_at, updated_at, next_attempt_at, lease_owner, lease_until, error_class, last_error, error_detail)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?21, ?21, ?15, ?16, ?17, ?18, ?19, ?20)
             ON CONFLICT (event_seq, flow) DO NOTHING RETURNING id",
        )
        .and_then(|mut s| {
            s.query_row(
                params![
                    seq,
                    source,
                    id,
                    ty,
                    received,
                    d.flow,
                    d.flow_version,
                    d.destination,
                    d.lane.rank(),
                    d.ordering_key,
                    d.hold_on_dead,
                    state.as_str(),
                    d.payload.as_ref().map(|p| p.to_string()),
                    d.traceparent,
                    next,
                    lease.map(|l| l.owner.clone()),
                    lease.map(|l| micros(l.until)),
                    class,
                    d.error,
                    d.error_detail.as_ref().map(|v| v.to_string()),
                    created,
                ],
                |r| r.get(0),
            )
            .optional()
        })
        .map_err(map_err)?;
    Ok(id.map(|id| CreatedDelivery {
        id,
        leased: lease.is_some(),
    }))
}

pub(crate) fn claim(c: &Connection, req: &ClaimRequest) -> Result<Vec<DeliveryRecord>> {
    // Leases that ended: their holder died or hung; the delivery is due again.
    c.prepare_cached(
        "UPDATE deliveries SET state = 'scheduled', lease_owner = NULL, lease_until = NULL
         WHERE state = 'delivering' AND lease_until < ?1",
    )
    .and_then(|mut s| s.execute([micros(req.real_now)]))
    .map_err(map_err)?;
    let mut sql = format!(
        "UPDATE deliveries SET state = 'delivering', lease_owner = ?1, lease_until = ?2
         WHERE id IN (
           SELECT d.id FROM deliveries d
           WHERE d.lane = ?3 AND d.state IN ('scheduled', 'retry_wait') AND d.next_attempt_at <= ?4
             AND (d.ordering_key IS NULL OR NOT EXISTS (
               SELECT 1 FROM deliveries p WHERE p.destination = d.destination AND p.ordering_key = d.ordering_key
                 AND p.id < d.id AND {BLOCKING}))"
    );
    let mut args: Vec<rusqlite::types::Value> = vec![
        req.owner.clone().into(),
        micros(req.lease_until).into(),
        i64::from(req.lane.rank()).into(),
        micros(req.now).into(),
    ];
    if let Some(only) = &req.only {
        args.push(only.clone().into());
        sql.push_str(&format!(" AND d.destination = ?{}", args.len()));
    }
    for ex in &req.exclude {
        args.push(ex.clone().into());
        sql.push_str(&format!(" AND d.destination <> ?{}", args.len()));
    }
    args.push((req.limit.clamp(1, 10_000) as i64).into());
    sql.push_str(&format!(
        " ORDER BY d.next_attempt_at, d.id LIMIT ?{}) RETURNING {COLS}",
        args.len()
    ));
    let mut s = c.prepare_cached(&sql).map_err(map_err)?;
    let rows = s
        .query_map(params_from_iter(args), record)
        .map_err(map_err)?;
    let mut out = collect(rows)?;
    out.sort_by_key(|d| (d.next_attempt_at, d.id));
    Ok(out)
}

pub(crate) fn complete(c: &Connection, r: &AttemptResult) -> Result<bool> {
    let row: Option<(i64, String, Option<String>, i64)> = c
        .prepare_cached(
            "SELECT attempts, state, lease_owner, generation FROM deliveries WHERE id = ?1",
        )
        .and_then(|mut s| {
            s.query_row([r.delivery_id], |x| {
                Ok((x.get(0)?, x.get(1)?, x.get(2)?, x.get(3)?))
            })
            .optional()
        })
        .map_err(map_err)?;
    let Some((attempts, state, owner, generation)) = row else {
        return Err(Error::NotFound(format!("delivery {}", r.delivery_id)));
    };
    let held =
        state == "delivering" && owner.as_deref() == Some(&r.owner) && generation == r.generation;
    let counted = !matches!(r.next, AttemptNext::Pause { .. });
    let attempt = attempts + 1;
    let outcome = r.class.map_or("delivered", ErrorClass::as_str);
    c.prepare_cached(
        "INSERT INTO delivery_attempts (delivery_id, generation, attempt, node, started_at, duration_us, outcome, status, response_excerpt, error)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )
    .and_then(|mut s| {
        s.execute(params![
            r.delivery_id,
            r.generation,
            attempt,
            r.node,
            micros(r.started_at),
            (r.duration_ms * 1000.0) as i64,
            outcome,
            r.status,
            r.response_excerpt,
            r.error,
        ])
    })
    .map_err(map_err)?;
    if !held {
        return Ok(false);
    }
    let now = micros(r.now);
    let new_attempts = if counted { attempt } else { attempts };
    let class = r.class.map(ErrorClass::as_str);
    let (state, next, delivered, error) = match &r.next {
        AttemptNext::Delivered => ("delivered", None, Some(now), None),
        AttemptNext::RetryAt(at) => ("retry_wait", Some(micros(*at)), None, r.error.clone()),
        AttemptNext::Dead(reason) => ("dead", None, None, Some(reason.clone())),
        AttemptNext::Pause { retry_at, .. } => {
            ("retry_wait", Some(micros(*retry_at)), None, r.error.clone())
        }
    };
    c.prepare_cached(
        "UPDATE deliveries SET state = ?2, attempts = ?3, next_attempt_at = ?4, delivered_at = ?5, lease_owner = NULL, lease_until = NULL,
             updated_at = ?6, error_class = ?7, last_error = ?8, last_status = ?9, cursor = COALESCE(?10, cursor)
         WHERE id = ?1",
    )
    .and_then(|mut s| {
        s.execute(params![
            r.delivery_id,
            state,
            new_attempts,
            next,
            delivered,
            now,
            class,
            error,
            r.status,
            r.cursor.as_ref().map(|c| c.to_string())
        ])
    })
    .map_err(map_err)?;
    if let AttemptNext::Pause { resume_after, .. } = &r.next {
        let destination: String = c
            .query_row(
                "SELECT destination FROM deliveries WHERE id = ?1",
                [r.delivery_id],
                |x| x.get(0),
            )
            .map_err(map_err)?;
        c.prepare_cached(
            "INSERT INTO destination_pauses (destination, paused_at, resume_after, reason) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (destination) DO UPDATE SET resume_after = excluded.resume_after, reason = excluded.reason",
        )
        .and_then(|mut s| {
            s.execute(params![
                destination,
                now,
                micros(*resume_after),
                r.error.clone().unwrap_or_else(|| "credentials refused".into())
            ])
        })
        .map_err(map_err)?;
    }
    Ok(true)
}

pub(crate) fn release(c: &Connection, ids: &[i64], owner: &str) -> Result<u64> {
    let mut s = c
        .prepare_cached(
            "UPDATE deliveries SET state = 'scheduled', lease_owner = NULL, lease_until = NULL
             WHERE id = ?1 AND state = 'delivering' AND lease_owner = ?2",
        )
        .map_err(map_err)?;
    let mut n = 0;
    for id in ids {
        n += s.execute(params![id, owner]).map_err(map_err)? as u64;
    }
    Ok(n)
}

pub(crate) fn extend(c: &Connection, id: i64, owner: &str, until: DateTime<Utc>) -> Result<bool> {
    Ok(c
        .execute(
            "UPDATE deliveries SET lease_until = ?3 WHERE id = ?1 AND state = 'delivering' AND lease_owner = ?2",
            params![id, owner, micros(until)],
        )
        .map_err(map_err)?
        == 1)
}

pub(crate) fn get(c: &Connection, id: i64) -> Result<Option<DeliveryRecord>> {
    c.prepare_cached(&format!("SELECT {COLS} FROM deliveries WHERE id = ?1"))
        .and_then(|mut s| s.query_row([id], record).optional())
        .map_err(map_err)?
        .transpose()
}

pub(crate) fn list(c: &Connection, f: &DeliveryFilter) -> Result<Vec<DeliveryRecord>> {
    let mut sql = format!("SELECT {COLS} FROM deliveries WHERE id > ?1");
    let mut args: Vec<rusqlite::types::Value> = vec![f.after.into()];
    let mut push =
        |cond: &str, v: rusqlite::types::Value, args: &mut Vec<rusqlite::types::Value>| {
            args.push(v);
            sql.push_str(&format!(" AND {cond} ?{}", args.len()));
        };
    if let Some(x) = &f.flow {
        push("flow =", x.clone().into(), &mut args);
    }
    if let Some(x) = &f.destination {
        push("destination =", x.clone().into(), &mut args);
    }
    if let Some(x) = f.class {
        push("error_class =", x.as_str().to_string().into(), &mut args);
    }
    if let Some(x) = f.event_seq {
        push("event_seq =", x.into(), &mut args);
    }
    if let Some(x) = &f.ordering_key {
        push("ordering_key =", x.clone().into(), &mut args);
    }
    if let Some(x) = f.since {
        push("created_at >=", micros(x).into(), &mut args);
    }
    if let Some(x) = f.until {
        push("created_at <", micros(x).into(), &mut args);
    }
    if let Some(x) = f.updated_since {
        push("updated_at >=", micros(x).into(), &mut args);
    }
    if !f.states.is_empty() {
        let list: Vec<String> = f
            .states
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect();
        sql.push_str(&format!(" AND state IN ({})", list.join(", ")));
    }
    args.push((f.limit.clamp(1, 10_000) as i64).into());
    sql.push_str(&format!(" ORDER BY id LIMIT ?{}", args.len()));
    let mut s = c.prepare(&sql).map_err(map_err)?;
    let rows = s
        .query_map(params_from_iter(args), record)
        .map_err(map_err)?;
    collect(rows)
}

pub(crate) fn attempts(c: &Connection, delivery_id: i64) -> Result<Vec<AttemptRecord>> {
    let mut s = c
        .prepare_cached(
            "SELECT id, delivery_id, generation, attempt, node, started_at, duration_us, outcome, status, response_excerpt, error
             FROM delivery_attempts WHERE delivery_id = ?1 ORDER BY id",
        )
        .map_err(map_err)?;
    let rows = s
        .query_map([delivery_id], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, i64>(6)?,
                r.get::<_, String>(7)?,
                r.get::<_, Option<i32>>(8)?,
                r.get::<_, Option<String>>(9)?,
                r.get::<_, Option<String>>(10)?,
            ))
        })
        .map_err(map_err)?;
    rows.map(|r| {
        let r = r.map_err(map_err)?;
        Ok(AttemptRecord {
            id: r.0,
            delivery_id: r.1,
            generation: r.2,
            attempt: r.3,
            node: r.4,
            started_at: from_micros(r.5)?,
            duration_ms: r.6 as f64 / 1000.0,
            outcome: r.7,
            status: r.8,
            response_excerpt: r.9,
            error: r.10,
        })
    })
    .collect()
}

pub(crate) fn stats(c: &Connection) -> Result<Vec<DeliveryStat>> {
    let mut s = c
        .prepare_cached(
            "SELECT flow, destination, lane, state, COUNT(*), MIN(created_at) FROM deliveries
             GROUP BY flow, destination, lane, state ORDER BY flow, destination, lane, state",
        )
        .map_err(map_err)?;
    let rows = s
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i16>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, i64>(5)?,
            ))
        })
        .map_err(map_err)?;
    rows.map(|r| {
        let r = r.map_err(map_err)?;
        Ok(DeliveryStat {
            flow: r.0,
            destination: r.1,
            lane: Lane::from_rank(r.2)
                .ok_or_else(|| Error::Corrupt(format!("unknown lane {}", r.2)))?,
            state: DeliveryState::parse(&r.3)
                .ok_or_else(|| Error::Corrupt(format!("unknown delivery state {}", r.3)))?,
            count: r.4,
            oldest_created_at: from_micros(r.5)?,
        })
    })
    .collect()
}

fn dead_letter(c: &Connection, id: i64) -> Result<DeliveryRecord> {
    let d = get(c, id)?.ok_or_else(|| Error::NotFound(format!("delivery {id}")))?;
    if !d.state.is_dead_letter() {
        return Err(Error::Conflict(format!(
            "delivery {id} is {}, not a dead letter",
            d.state.as_str()
        )));
    }
    Ok(d)
}

pub(crate) fn replay(
    c: &Connection,
    r: &Replay,
    audit: impl Fn(&Connection, &NewAudit) -> Result<i64>,
) -> Result<DeliveryRecord> {
    let before = dead_letter(c, r.id)?;
    let at = micros(r.at);
    let payload = r.payload.as_ref().or(before.payload.as_ref());
    let ordering_key = r
        .ordering_key
        .clone()
        .unwrap_or(before.ordering_key.clone());
    let scheduled = r.state == DeliveryState::Scheduled;
    // A step cursor is about the payload it was made with.
    let keep_cursor = r.payload.is_none() || r.payload == before.payload;
    let class = match r.state {
        DeliveryState::MappingFailed => Some(ErrorClass::Mapping.as_str()),
        DeliveryState::Invalid => Some(ErrorClass::Invalid.as_str()),
        _ => None,
    };
    c.execute(
        "UPDATE deliveries SET state = ?2, payload = ?3, flow_version = COALESCE(?4, flow_version), ordering_key = ?5,
             generation = generation + 1, attempts = 0, next_attempt_at = ?6, delivered_at = NULL,
             lease_owner = NULL, lease_until = NULL, updated_at = ?7, created_at = ?7, error_class = ?8, last_error = ?9,
             last_status = NULL, error_detail = ?10, cursor = CASE WHEN ?11 THEN cursor END
         WHERE id = ?1",
        params![
            r.id,
            r.state.as_str(),
            payload.map(|p| p.to_string()),
            r.flow_version,
            ordering_key,
            scheduled.then_some(at),
            at,
            class,
            r.error,
            r.error_detail.as_ref().map(|v| v.to_string()),
            keep_cursor,
        ],
    )
    .map_err(map_err)?;
    let after = get(c, r.id)?.ok_or_else(|| Error::NotFound(format!("delivery {}", r.id)))?;
    audit(c, &replay_audit(r, &before, &after))?;
    Ok(after)
}

pub(crate) fn discard(
    c: &Connection,
    id: i64,
    actor: &str,
    reason: &str,
    at: DateTime<Utc>,
    audit: impl Fn(&Connection, &NewAudit) -> Result<i64>,
) -> Result<DeliveryRecord> {
    let before = dead_letter(c, id)?;
    c.execute(
        "UPDATE deliveries SET state = 'discarded', updated_at = ?2, next_attempt_at = NULL WHERE id = ?1",
        params![id, micros(at)],
    )
    .map_err(map_err)?;
    audit(c, &discard_audit(&before, actor, reason, at))?;
    get(c, id)?.ok_or_else(|| Error::NotFound(format!("delivery {id}")))
}

pub(crate) fn pauses(c: &Connection) -> Result<Vec<DestinationPause>> {
    let mut s = c
        .prepare_cached("SELECT destination, paused_at, resume_after, reason FROM destination_pauses ORDER BY destination")
        .map_err(map_err)?;
    let rows = s
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
            ))
        })
        .map_err(map_err)?;
    rows.map(|r| {
        let r = r.map_err(map_err)?;
        Ok(DestinationPause {
            destination: r.0,
            paused_at: from_micros(r.1)?,
            resume_after: from_micros(r.2)?,
            reason: r.3,
        })
    })
    .collect()
}

pub(crate) fn resume(
    c: &Connection,
    destination: &str,
    actor: &str,
    reason: &str,
    at: DateTime<Utc>,
    audit: impl Fn(&Connection, &NewAudit) -> Result<i64>,
) -> Result<bool> {
    let n = c
        .execute(
            "DELETE FROM destination_pauses WHERE destination = ?1",
            [destination],
        )
        .map_err(map_err)?;
    if n == 0 {
        return Ok(false);
    }
    audit(c, &resume_audit(destination, actor, reason, at))?;
    Ok(true)
}
