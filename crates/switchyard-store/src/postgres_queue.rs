//! The delivery queue on PostgreSQL: the same statements as `sqlite_queue`, for several
//! nodes sharing one database.
//!
//! Concurrency (several Switchyard processes, each with its own pool):
//! - Claims lock their candidates with `FOR UPDATE SKIP LOCKED`, so two claimers never take
//!   the same delivery; a candidate changed meanwhile by a committed claim is re-checked
//!   against the new row (its state is no longer due) and dropped.
//! - The ordering-key rule is read from the claim's snapshot: an earlier delivery of the
//!   key that is `scheduled`, `retry_wait` or `delivering` (or dead-lettered while holding
//!   its key) is visible whether or not another claimer has it locked, so the later one
//!   waits. It only stops blocking once it reached a final state, which is what the rule
//!   asks.
//! - What a snapshot cannot see is an earlier delivery still uncommitted: `id`s come from a
//!   sequence at insert time, so a later id could commit first. Every transaction that
//!   creates keyed deliveries therefore first takes a transaction-scoped advisory lock per
//!   (destination, ordering key), in sorted order. Deliveries of one key are then created
//!   by one transaction at a time, and their ids follow their commit order, as on SQLite
//!   whose single writer commits in id order.

use crate::delivery::*;
use crate::postgres::{audit_insert, map_err};
use crate::util::{
    decode_json, discard_audit, from_micros, micros, opt_from_micros, replay_audit, resume_audit,
};
use crate::{Error, Result};
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use std::collections::{BTreeSet, HashMap, HashSet};
use switchyard_core::delivery::{ErrorClass, Lane};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

const COLS: &str = "id, event_seq, event_source, event_id, event_type, received_at, flow, flow_version, destination, lane, ordering_key, hold_on_dead, state, payload, traceparent, generation, attempts, created_at, updated_at, next_attempt_at, delivered_at, lease_owner, lease_until, error_class, last_error, last_status, error_detail, cursor";

/// Rows that keep later deliveries of their (destination, ordering key) waiting.
const BLOCKING: &str = "(p.state IN ('scheduled', 'retry_wait', 'delivering') OR (p.hold_on_dead AND p.state IN ('dead', 'mapping_failed', 'invalid')))";

fn record(r: &Row) -> Result<DeliveryRecord> {
    let lane: i16 = r.get(9);
    let state: &str = r.get(12);
    let payload: Option<&str> = r.get(13);
    let class: Option<&str> = r.get(23);
    let detail: Option<&str> = r.get(26);
    let cursor: Option<&str> = r.get(27);
    Ok(DeliveryRecord {
        id: r.get(0),
        event_seq: r.get(1),
        event_source: r.get(2),
        event_id: r.get(3),
        event_type: r.get(4),
        received_at: from_micros(r.get(5))?,
        flow: r.get(6),
        flow_version: r.get(7),
        destination: r.get(8),
        lane: Lane::from_rank(lane)
            .ok_or_else(|| Error::Corrupt(format!("unknown lane {lane}")))?,
        ordering_key: r.get(10),
        hold_on_dead: r.get(11),
        state: DeliveryState::parse(state)
            .ok_or_else(|| Error::Corrupt(format!("unknown delivery state {state}")))?,
        payload: payload.map(decode_json).transpose()?,
        traceparent: r.get(14),
        generation: r.get(15),
        attempts: r.get(16),
        created_at: from_micros(r.get(17))?,
        updated_at: from_micros(r.get(18))?,
        next_attempt_at: opt_from_micros(r.get(19))?,
        delivered_at: opt_from_micros(r.get(20))?,
        lease_owner: r.get(21),
        lease_until: opt_from_micros(r.get(22))?,
        error_class: class.and_then(ErrorClass::parse),
        last_error: r.get(24),
        last_status: r.get(25),
        error_detail: detail.map(decode_json).transpose()?,
        cursor: cursor.map(decode_json).transpose()?,
    })
}

fn records(rows: &[Row]) -> Result<Vec<DeliveryRecord>> {
    rows.iter().map(record).collect()
}

/// The error class a delivery created (or re-routed) in a dead-letter state starts with.
fn initial_class(state: DeliveryState) -> Option<&'static str> {
    match state {
        DeliveryState::MappingFailed => Some(ErrorClass::Mapping.as_str()),
        DeliveryState::Invalid => Some(ErrorClass::Invalid.as_str()),
        _ => None,
    }
}

/// The advisory lock of one (destination, ordering key): a stable 64-bit FNV-1a hash, the
/// same in every process. A collision only makes two keys wait for each other.
fn key_lock(destination: &str, key: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in destination
        .bytes()
        .chain(std::iter::once(0xff))
        .chain(key.bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

/// Takes the advisory locks of the ordering keys these deliveries carry, in sorted order
/// (so two transactions never wait for each other in a cycle). Called first in the
/// transaction, before any row is written or locked; held until it ends.
pub(crate) async fn lock_keys<'a>(
    c: &impl GenericClient,
    deliveries: impl Iterator<Item = &'a NewDelivery>,
) -> Result<()> {
    let locks: BTreeSet<i64> = deliveries
        .filter(|d| d.state != DeliveryState::Filtered)
        .filter_map(|d| Some(key_lock(&d.destination, d.ordering_key.as_deref()?)))
        .collect();
    if locks.is_empty() {
        return Ok(());
    }
    let locks: Vec<i64> = locks.into_iter().collect();
    // A function scan over the array locks in array order.
    let stmt = c
        .prepare_cached("SELECT pg_advisory_xact_lock(k) FROM UNNEST($1::bigint[]) AS k")
        .await
        .map_err(map_err)?;
    c.execute(&stmt, &[&locks]).await.map_err(map_err)?;
    Ok(())
}

/// One delivery to create, with the attributes of its event.
pub(crate) struct Item<'a> {
    pub seq: i64,
    pub source: &'a str,
    pub id: &'a str,
    pub ty: &'a str,
    pub received: i64,
    /// When the delivery is created: the event's reception at ingest, now for a backfill.
    pub created: i64,
    pub delivery: &'a NewDelivery,
}

/// Inserts deliveries in the caller's transaction (after [`lock_keys`]), in order, in one
/// statement, with the semantics of `sqlite_queue::insert` applied one after the other:
/// `None` for an (event, flow) that already has a delivery (`backfill`: checked against
/// the table; always against the earlier items), and a requested lease granted only to a
/// `scheduled` delivery whose key no earlier delivery (stored or earlier in `items`) holds.
pub(crate) async fn insert(
    c: &impl GenericClient,
    items: &[Item<'_>],
    backfill: bool,
) -> Result<Vec<Option<CreatedDelivery>>> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    // (event, flow) pairs that will not be inserted.
    let mut taken: HashSet<(i64, &str)> = HashSet::new();
    if backfill {
        let seqs: Vec<i64> = items.iter().map(|i| i.seq).collect();
        let flows: Vec<&str> = items.iter().map(|i| i.delivery.flow.as_str()).collect();
        let rows = c
            .query(
                "SELECT d.event_seq, d.flow FROM deliveries d
                 JOIN UNNEST($1::bigint[], $2::text[]) AS k(seq, flow)
                   ON d.event_seq = k.seq AND d.flow = k.flow",
                &[&seqs, &flows],
            )
            .await
            .map_err(map_err)?;
        for r in &rows {
            let (seq, flow): (i64, &str) = (r.get(0), r.get(1));
            if let Some(i) = items
                .iter()
                .find(|i| i.seq == seq && i.delivery.flow == flow)
            {
                taken.insert((i.seq, i.delivery.flow.as_str()));
            }
        }
    }
    // Keys already held by a stored delivery, for the deliveries that ask for a lease.
    let asks: HashSet<(&str, &str)> = items
        .iter()
        .filter(|i| i.delivery.lease.is_some() && i.delivery.state == DeliveryState::Scheduled)
        .filter_map(|i| {
            Some((
                i.delivery.destination.as_str(),
                i.delivery.ordering_key.as_deref()?,
            ))
        })
        .collect();
    let mut held: HashSet<(String, String)> = HashSet::new();
    if !asks.is_empty() {
        let (dests, keys): (Vec<&str>, Vec<&str>) = asks.iter().copied().unzip();
        let rows = c
            .query(
                &format!(
                    "SELECT k.destination, k.ordering_key FROM UNNEST($1::text[], $2::text[]) AS k(destination, ordering_key)
                     WHERE EXISTS (SELECT 1 FROM deliveries p
                                   WHERE p.destination = k.destination AND p.ordering_key = k.ordering_key AND {BLOCKING})"
                ),
                &[&dests, &keys],
            )
            .await
            .map_err(map_err)?;
        held.extend(rows.iter().map(|r| (r.get(0), r.get(1))));
    }

    let n = items.len();
    let mut inserted = vec![false; n];
    let mut leased = vec![false; n];
    let mut created: Vec<i64> = Vec::with_capacity(n);
    let (mut seq, mut source, mut eid, mut ty, mut received) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut flow, mut version, mut dest, mut lane, mut okey, mut hold) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut state, mut payload, mut trace, mut next) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut owner, mut until, mut class, mut error, mut detail) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for (k, it) in items.iter().enumerate() {
        let d = it.delivery;
        if !taken.insert((it.seq, d.flow.as_str())) {
            continue;
        }
        inserted[k] = true;
        let blocked = match &d.ordering_key {
            Some(key) if d.lease.is_some() => held.contains(&(d.destination.clone(), key.clone())),
            _ => false,
        };
        let lease = match &d.lease {
            Some(l) if d.state == DeliveryState::Scheduled && !blocked => Some(l),
            _ => None,
        };
        leased[k] = lease.is_some();
        let st = if lease.is_some() {
            DeliveryState::Delivering
        } else {
            d.state
        };
        // From here on this delivery holds its key for the ones after it.
        if let Some(key) = &d.ordering_key {
            let blocking = matches!(st, DeliveryState::Scheduled | DeliveryState::Delivering)
                || (d.hold_on_dead && st.is_dead_letter());
            if blocking {
                held.insert((d.destination.clone(), key.clone()));
            }
        }
        seq.push(it.seq);
        source.push(it.source);
        eid.push(it.id);
        ty.push(it.ty);
        received.push(it.received);
        flow.push(d.flow.as_str());
        version.push(d.flow_version.as_str());
        dest.push(d.destination.as_str());
        lane.push(d.lane.rank());
        okey.push(d.ordering_key.as_deref());
        hold.push(d.hold_on_dead);
        state.push(st.as_str());
        payload.push(d.payload.as_ref().map(|p| p.to_string()));
        trace.push(d.traceparent.as_deref());
        next.push((d.state == DeliveryState::Scheduled).then_some(it.created));
        created.push(it.created);
        owner.push(lease.map(|l| l.owner.as_str()));
        until.push(lease.map(|l| micros(l.until)));
        class.push(initial_class(d.state));
        error.push(d.error.as_deref());
        detail.push(d.error_detail.as_ref().map(|v| v.to_string()));
    }
    let mut ids: HashMap<(i64, String), i64> = HashMap::new();
    if !seq.is_empty() {
        let stmt = c
            .prepare_cached(
                "INSERT INTO deliveries (event_seq, event_source, event_id, event_type, received_at, flow, flow_version, destination, lane, ordering_key, hold_on_dead, state, payload, traceparent, created_at, updated_at, next_attempt_at, lease_owner, lease_until, error_class, last_error, error_detail)
                 SELECT u.seq, u.source, u.eid, u.ty, u.received, u.flow, u.version, u.dest, u.lane, u.okey, u.hold, u.state, u.payload, u.trace, u.created, u.created, u.next, u.owner, u.until, u.class, u.error, u.detail
                 FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[], $7::text[], $8::text[], $9::int2[], $10::text[],
                             $11::bool[], $12::text[], $13::text[], $14::text[], $15::bigint[], $16::text[], $17::bigint[], $18::text[], $19::text[], $20::text[], $21::bigint[])
                      WITH ORDINALITY AS u(seq, source, eid, ty, received, flow, version, dest, lane, okey, hold, state, payload, trace, next, owner, until, class, error, detail, created, ord)
                 ORDER BY u.ord
                 ON CONFLICT (event_seq, flow) DO NOTHING
                 RETURNING id, event_seq, flow",
            )
            .await
            .map_err(map_err)?;
        let params: [&(dyn ToSql + Sync); 21] = [
            &seq, &source, &eid, &ty, &received, &flow, &version, &dest, &lane, &okey, &hold,
            &state, &payload, &trace, &next, &owner, &until, &class, &error, &detail, &created,
        ];
        let rows = c.query(&stmt, &params).await.map_err(map_err)?;
        ids.extend(rows.iter().map(|r| ((r.get(1), r.get(2)), r.get(0))));
    }
    Ok(items
        .iter()
        .enumerate()
        .map(|(k, it)| {
            if !inserted[k] {
                return None;
            }
            // Absent: a concurrent backfill created the same (event, flow) first.
            let id = ids.remove(&(it.seq, it.delivery.flow.clone()))?;
            Some(CreatedDelivery {
                id,
                leased: leased[k],
            })
        })
        .collect())
}

/// Creates deliveries for stored events (a backfill), in the caller's transaction.
pub(crate) async fn backfill(
    c: &impl GenericClient,
    items: &[(i64, NewDelivery)],
    now: DateTime<Utc>,
) -> Result<Vec<Option<CreatedDelivery>>> {
    lock_keys(c, items.iter().map(|(_, d)| d)).await?;
    let seqs: Vec<i64> = items.iter().map(|(s, _)| *s).collect();
    let rows = c
        .query(
            "SELECT seq, source, event_id, type, received_at FROM events WHERE seq = ANY($1)",
            &[&seqs],
        )
        .await
        .map_err(map_err)?;
    let attrs: HashMap<i64, (String, String, String, i64)> = rows
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3), r.get(4))))
        .collect();
    let mut list = Vec::with_capacity(items.len());
    for (seq, d) in items {
        let Some((source, id, ty, received)) = attrs.get(seq) else {
            return Err(Error::NotFound(format!("event {seq}")));
        };
        list.push(Item {
            seq: *seq,
            source,
            id,
            ty,
            received: *received,
            created: micros(now),
            delivery: d,
        });
    }
    insert(c, &list, true).await
}

/// Claims due deliveries, in the caller's transaction.
pub(crate) async fn claim(
    c: &impl GenericClient,
    req: &ClaimRequest,
) -> Result<Vec<DeliveryRecord>> {
    // Leases that ended: their holder died or hung; the delivery is due again. Rows another
    // transaction has locked (being completed or reclaimed) are left to it.
    let stmt = c
        .prepare_cached(
            "UPDATE deliveries SET state = 'scheduled', lease_owner = NULL, lease_until = NULL
             WHERE id IN (SELECT id FROM deliveries WHERE state = 'delivering' AND lease_until < $1
                          FOR UPDATE SKIP LOCKED)
               AND state = 'delivering' AND lease_until < $1",
        )
        .await
        .map_err(map_err)?;
    c.execute(&stmt, &[&micros(req.real_now)])
        .await
        .map_err(map_err)?;
    // MATERIALIZED: the locking subquery runs once (a re-scan would skip-lock further rows).
    let stmt = c
        .prepare_cached(&format!(
            "WITH picked AS MATERIALIZED (
               SELECT d.id AS pick FROM deliveries d
               WHERE d.lane = $3 AND d.state IN ('scheduled', 'retry_wait') AND d.next_attempt_at <= $4
                 AND (d.ordering_key IS NULL OR NOT EXISTS (
                   SELECT 1 FROM deliveries p WHERE p.destination = d.destination AND p.ordering_key = d.ordering_key
                     AND p.id < d.id AND {BLOCKING}))
                 AND ($5::text IS NULL OR d.destination = $5)
                 AND NOT (d.destination = ANY($6::text[]))
               ORDER BY d.next_attempt_at, d.id
               LIMIT $7
               FOR UPDATE OF d SKIP LOCKED)
             UPDATE deliveries SET state = 'delivering', lease_owner = $1, lease_until = $2
             FROM picked WHERE deliveries.id = picked.pick
             RETURNING {COLS}"
        ))
        .await
        .map_err(map_err)?;
    let limit = req.limit.clamp(1, 10_000) as i64;
    let rows = c
        .query(
            &stmt,
            &[
                &req.owner,
                &micros(req.lease_until),
                &req.lane.rank(),
                &micros(req.now),
                &req.only,
                &req.exclude,
                &limit,
            ],
        )
        .await
        .map_err(map_err)?;
    let mut out = records(&rows)?;
    out.sort_by_key(|d| (d.next_attempt_at, d.id));
    Ok(out)
}

/// Records an attempt and moves the delivery on if the lease is still held, in the caller's
/// transaction.
pub(crate) async fn complete(c: &impl GenericClient, r: &AttemptResult) -> Result<bool> {
    let row = c
        .query_opt(
            "SELECT attempts, state, lease_owner, generation, destination FROM deliveries WHERE id = $1 FOR UPDATE",
            &[&r.delivery_id],
        )
        .await
        .map_err(map_err)?
        .ok_or_else(|| Error::NotFound(format!("delivery {}", r.delivery_id)))?;
    let (attempts, state, owner, generation, destination): (i64, &str, Option<&str>, i64, &str) =
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    let held =
        state == "delivering" && owner == Some(r.owner.as_str()) && generation == r.generation;
    let counted = !matches!(r.next, AttemptNext::Pause { .. });
    let attempt = attempts + 1;
    let outcome = r.class.map_or("delivered", ErrorClass::as_str);
    let stmt = c
        .prepare_cached(
            "INSERT INTO delivery_attempts (delivery_id, generation, attempt, node, started_at, duration_us, outcome, status, response_excerpt, error)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .await
        .map_err(map_err)?;
    c.execute(
        &stmt,
        &[
            &r.delivery_id,
            &r.generation,
            &attempt,
            &r.node,
            &micros(r.started_at),
            &((r.duration_ms * 1000.0) as i64),
            &outcome,
            &r.status,
            &r.response_excerpt,
            &r.error,
        ],
    )
    .await
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
    let stmt = c
        .prepare_cached(
            "UPDATE deliveries SET state = $2, attempts = $3, next_attempt_at = $4, delivered_at = $5, lease_owner = NULL, lease_until = NULL,
                 updated_at = $6, error_class = $7, last_error = $8, last_status = $9, cursor = COALESCE($10, cursor)
             WHERE id = $1",
        )
        .await
        .map_err(map_err)?;
    c.execute(
        &stmt,
        &[
            &r.delivery_id,
            &state,
            &new_attempts,
            &next,
            &delivered,
            &now,
            &class,
            &error,
            &r.status,
            &r.cursor.as_ref().map(|c| c.to_string()),
        ],
    )
    .await
    .map_err(map_err)?;
    if let AttemptNext::Pause { resume_after, .. } = &r.next {
        let reason = r
            .error
            .clone()
            .unwrap_or_else(|| "credentials refused".into());
        c.execute(
            "INSERT INTO destination_pauses (destination, paused_at, resume_after, reason) VALUES ($1, $2, $3, $4)
             ON CONFLICT (destination) DO UPDATE SET resume_after = excluded.resume_after, reason = excluded.reason",
            &[&destination, &now, &micros(*resume_after), &reason],
        )
        .await
        .map_err(map_err)?;
    }
    Ok(true)
}

pub(crate) async fn release(c: &impl GenericClient, ids: &[i64], owner: &str) -> Result<u64> {
    c.execute(
        "UPDATE deliveries SET state = 'scheduled', lease_owner = NULL, lease_until = NULL
         WHERE id = ANY($1) AND state = 'delivering' AND lease_owner = $2",
        &[&ids, &owner],
    )
    .await
    .map_err(map_err)
}

pub(crate) async fn extend(
    c: &impl GenericClient,
    id: i64,
    owner: &str,
    until: DateTime<Utc>,
) -> Result<bool> {
    Ok(c
        .execute(
            "UPDATE deliveries SET lease_until = $3 WHERE id = $1 AND state = 'delivering' AND lease_owner = $2",
            &[&id, &owner, &micros(until)],
        )
        .await
        .map_err(map_err)?
        == 1)
}

pub(crate) async fn get(c: &impl GenericClient, id: i64) -> Result<Option<DeliveryRecord>> {
    let stmt = c
        .prepare_cached(&format!("SELECT {COLS} FROM deliveries WHERE id = $1"))
        .await
        .map_err(map_err)?;
    c.query_opt(&stmt, &[&id])
        .await
        .map_err(map_err)?
        .map(|r| record(&r))
        .transpose()
}

pub(crate) async fn list(
    c: &impl GenericClient,
    f: &DeliveryFilter,
) -> Result<Vec<DeliveryRecord>> {
    let mut sql = format!("SELECT {COLS} FROM deliveries WHERE id > $1");
    let mut args: Vec<Box<dyn ToSql + Sync + Send>> = vec![Box::new(f.after)];
    let mut push = |cond: &str, v: Box<dyn ToSql + Sync + Send>| {
        args.push(v);
        sql.push_str(&format!(" AND {cond} ${}", args.len()));
    };
    if let Some(x) = &f.flow {
        push("flow =", Box::new(x.clone()));
    }
    if let Some(x) = &f.destination {
        push("destination =", Box::new(x.clone()));
    }
    if let Some(x) = f.class {
        push("error_class =", Box::new(x.as_str()));
    }
    if let Some(x) = f.event_seq {
        push("event_seq =", Box::new(x));
    }
    if let Some(x) = &f.ordering_key {
        push("ordering_key =", Box::new(x.clone()));
    }
    if let Some(x) = f.since {
        push("created_at >=", Box::new(micros(x)));
    }
    if let Some(x) = f.until {
        push("created_at <", Box::new(micros(x)));
    }
    if let Some(x) = f.updated_since {
        push("updated_at >=", Box::new(micros(x)));
    }
    if !f.states.is_empty() {
        let states: Vec<&'static str> = f.states.iter().map(|s| s.as_str()).collect();
        args.push(Box::new(states));
        sql.push_str(&format!(" AND state = ANY(${})", args.len()));
    }
    args.push(Box::new(f.limit.clamp(1, 10_000) as i64));
    sql.push_str(&format!(" ORDER BY id LIMIT ${}", args.len()));
    let params: Vec<&(dyn ToSql + Sync)> = args
        .iter()
        .map(|a| a.as_ref() as &(dyn ToSql + Sync))
        .collect();
    let rows = c.query(&sql, &params).await.map_err(map_err)?;
    records(&rows)
}

pub(crate) async fn attempts(
    c: &impl GenericClient,
    delivery_id: i64,
) -> Result<Vec<AttemptRecord>> {
    c.query(
        "SELECT id, delivery_id, generation, attempt, node, started_at, duration_us, outcome, status, response_excerpt, error
         FROM delivery_attempts WHERE delivery_id = $1 ORDER BY id",
        &[&delivery_id],
    )
    .await
    .map_err(map_err)?
    .iter()
    .map(|r| {
        Ok(AttemptRecord {
            id: r.get(0),
            delivery_id: r.get(1),
            generation: r.get(2),
            attempt: r.get(3),
            node: r.get(4),
            started_at: from_micros(r.get(5))?,
            duration_ms: r.get::<_, i64>(6) as f64 / 1000.0,
            outcome: r.get(7),
            status: r.get(8),
            response_excerpt: r.get(9),
            error: r.get(10),
        })
    })
    .collect()
}

/// Text is compared byte-wise (`COLLATE "C"`), so listings sort as on SQLite.
pub(crate) async fn stats(c: &impl GenericClient) -> Result<Vec<DeliveryStat>> {
    c.query(
        "SELECT flow, destination, lane, state, COUNT(*), MIN(created_at) FROM deliveries
         GROUP BY flow, destination, lane, state
         ORDER BY flow COLLATE \"C\", destination COLLATE \"C\", lane, state COLLATE \"C\"",
        &[],
    )
    .await
    .map_err(map_err)?
    .iter()
    .map(|r| {
        let lane: i16 = r.get(2);
        let state: &str = r.get(3);
        Ok(DeliveryStat {
            flow: r.get(0),
            destination: r.get(1),
            lane: Lane::from_rank(lane)
                .ok_or_else(|| Error::Corrupt(format!("unknown lane {lane}")))?,
            state: DeliveryState::parse(state)
                .ok_or_else(|| Error::Corrupt(format!("unknown delivery state {state}")))?,
            count: r.get(4),
            oldest_created_at: from_micros(r.get(5))?,
        })
    })
    .collect()
}

/// Locks delivery `id` for the caller's transaction and checks it is a dead letter.
async fn dead_letter(c: &impl GenericClient, id: i64) -> Result<DeliveryRecord> {
    let d = c
        .query_opt(
            &format!("SELECT {COLS} FROM deliveries WHERE id = $1 FOR UPDATE"),
            &[&id],
        )
        .await
        .map_err(map_err)?
        .map(|r| record(&r))
        .transpose()?
        .ok_or_else(|| Error::NotFound(format!("delivery {id}")))?;
    if !d.state.is_dead_letter() {
        return Err(Error::Conflict(format!(
            "delivery {id} is {}, not a dead letter",
            d.state.as_str()
        )));
    }
    Ok(d)
}

/// A replay and its audit record, in the caller's transaction.
pub(crate) async fn replay(c: &impl GenericClient, r: &Replay) -> Result<DeliveryRecord> {
    let before = dead_letter(c, r.id).await?;
    let at = micros(r.at);
    let payload = r.payload.as_ref().or(before.payload.as_ref());
    let ordering_key = r
        .ordering_key
        .clone()
        .unwrap_or(before.ordering_key.clone());
    let scheduled = r.state == DeliveryState::Scheduled;
    // A step cursor is about the payload it was made with.
    let keep_cursor = r.payload.is_none() || r.payload == before.payload;
    let row = c
        .query_one(
            &format!(
                "UPDATE deliveries SET state = $2, payload = $3, flow_version = COALESCE($4, flow_version), ordering_key = $5,
                     generation = generation + 1, attempts = 0, next_attempt_at = $6, delivered_at = NULL,
                     lease_owner = NULL, lease_until = NULL, updated_at = $7, created_at = $7, error_class = $8, last_error = $9,
                     last_status = NULL, error_detail = $10, cursor = CASE WHEN $11 THEN cursor END
                 WHERE id = $1 RETURNING {COLS}"
            ),
            &[
                &r.id,
                &r.state.as_str(),
                &payload.map(|p| p.to_string()),
                &r.flow_version,
                &ordering_key,
                &scheduled.then_some(at),
                &at,
                &initial_class(r.state),
                &r.error,
                &r.error_detail.as_ref().map(|v| v.to_string()),
                &keep_cursor,
            ],
        )
        .await
        .map_err(map_err)?;
    let after = record(&row)?;
    audit_insert(c, &replay_audit(r, &before, &after)).await?;
    Ok(after)
}

/// A discard and its audit record, in the caller's transaction.
pub(crate) async fn discard(
    c: &impl GenericClient,
    id: i64,
    actor: &str,
    reason: &str,
    at: DateTime<Utc>,
) -> Result<DeliveryRecord> {
    let before = dead_letter(c, id).await?;
    let row = c
        .query_one(
            &format!(
                "UPDATE deliveries SET state = 'discarded', updated_at = $2, next_attempt_at = NULL WHERE id = $1 RETURNING {COLS}"
            ),
            &[&id, &micros(at)],
        )
        .await
        .map_err(map_err)?;
    audit_insert(c, &discard_audit(&before, actor, reason, at)).await?;
    record(&row)
}

pub(crate) async fn pauses(c: &impl GenericClient) -> Result<Vec<DestinationPause>> {
    c.query(
        "SELECT destination, paused_at, resume_after, reason FROM destination_pauses ORDER BY destination COLLATE \"C\"",
        &[],
    )
    .await
    .map_err(map_err)?
    .iter()
    .map(|r| {
        Ok(DestinationPause {
            destination: r.get(0),
            paused_at: from_micros(r.get(1))?,
            resume_after: from_micros(r.get(2))?,
            reason: r.get(3),
        })
    })
    .collect()
}

/// Lifts a pause and audits it, in the caller's transaction.
pub(crate) async fn resume(
    c: &impl GenericClient,
    destination: &str,
    actor: &str,
    reason: &str,
    at: DateTime<Utc>,
) -> Result<bool> {
    let n = c
        .execute(
            "DELETE FROM destination_pauses WHERE destination = $1",
            &[&destination],
        )
        .await
        .map_err(map_err)?;
    if n == 0 {
        return Ok(false);
    }
    audit_insert(c, &resume_audit(destination, actor, reason, at)).await?;
    Ok(true)
}
