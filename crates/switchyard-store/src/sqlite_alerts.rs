//! The alerting rows on SQLite: the fenced commit and the hand actions run on the writer
//! thread (inside the caller's savepoint), listings on a pooled reader. The same statements
//! as `postgres_alerts`.

use crate::alerts::*;
use crate::util::{decode_json, from_micros, micros};
use crate::{Error, Result};
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

fn map_err(e: rusqlite::Error) -> Error {
    crate::sqlite::map_err(e)
}

fn decode<T: serde::de::DeserializeOwned>(text: &str) -> Result<T> {
    serde_json::from_value(decode_json(text)?).map_err(|e| Error::Corrupt(e.to_string()))
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("serialisable")
}

pub(crate) fn commit(c: &Connection, m: &AlertsCommit) -> Result<()> {
    let l = &m.lease;
    let n = c
        .execute(
            "UPDATE leases SET state = COALESCE(?4, state) WHERE name = ?1 AND owner = ?2 AND epoch = ?3",
            params![l.name, l.owner, l.epoch, m.checkpoint.as_ref().map(|v| v.to_string())],
        )
        .map_err(map_err)?;
    if n == 0 {
        return Err(Error::Fenced {
            name: l.name.clone(),
            epoch: l.epoch,
        });
    }
    let mut upsert = c
        .prepare_cached(
            "INSERT INTO alerts (fingerprint, rule, state, incident_id, starts_at, updated_at, body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (fingerprint) DO UPDATE SET rule = excluded.rule, state = excluded.state,
               incident_id = excluded.incident_id, starts_at = excluded.starts_at,
               updated_at = excluded.updated_at, body = excluded.body",
        )
        .map_err(map_err)?;
    for a in &m.alerts {
        upsert
            .execute(params![
                a.fingerprint,
                a.rule,
                a.state.as_str(),
                a.incident_id,
                micros(a.starts_at),
                micros(a.updated_at),
                json(a)
            ])
            .map_err(map_err)?;
    }
    for f in &m.delete_alerts {
        c.execute("DELETE FROM alerts WHERE fingerprint = ?1", params![f])
            .map_err(map_err)?;
    }
    let mut group = c
        .prepare_cached(
            "INSERT INTO alert_groups (key, body) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET body = excluded.body",
        )
        .map_err(map_err)?;
    for g in &m.groups {
        group
            .execute(params![g.key, g.body.to_string()])
            .map_err(map_err)?;
    }
    for k in &m.delete_groups {
        c.execute("DELETE FROM alert_groups WHERE key = ?1", params![k])
            .map_err(map_err)?;
    }
    for i in &m.open_incidents {
        c.execute(
            "INSERT INTO incidents (id, status, team, opened_at, body) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (id) DO NOTHING",
            params![
                i.id,
                i.status.as_str(),
                i.team,
                micros(i.opened_at),
                json(i)
            ],
        )
        .map_err(map_err)?;
    }
    for (id, at) in &m.notified_incidents {
        update_incident(c, *id, |i| mark_notified(i, *at))?;
    }
    for (id, at) in &m.resolve_incidents {
        update_incident(c, *id, |i| auto_resolve(i, *at))?;
    }
    for e in &m.entries {
        insert_entry(c, e)?;
    }
    Ok(())
}

fn insert_entry(c: &Connection, e: &NewIncidentEntry) -> Result<()> {
    c.prepare_cached(
        "INSERT INTO incident_entries (incident_id, at, kind, actor, text) VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .map_err(map_err)?
    .execute(params![e.incident_id, micros(e.at), e.kind, e.actor, e.text])
    .map_err(map_err)?;
    Ok(())
}

/// Reads, changes and writes back one incident; `None` when there is none.
fn update_incident(
    c: &Connection,
    id: i64,
    change: impl FnOnce(&mut IncidentRecord),
) -> Result<Option<IncidentRecord>> {
    let Some(mut i) = get_incident(c, id)? else {
        return Ok(None);
    };
    change(&mut i);
    c.execute(
        "UPDATE incidents SET status = ?2, body = ?3 WHERE id = ?1",
        params![id, i.status.as_str(), json(&i)],
    )
    .map_err(map_err)?;
    Ok(Some(i))
}

pub(crate) fn get_incident(c: &Connection, id: i64) -> Result<Option<IncidentRecord>> {
    let body: Option<String> = c
        .query_row(
            "SELECT body FROM incidents WHERE id = ?1",
            params![id],
            |r| r.get(0),
        )
        .optional()
        .map_err(map_err)?;
    body.map(|b| decode(&b)).transpose()
}

pub(crate) fn action(c: &Connection, a: &IncidentAction) -> Result<IncidentRecord> {
    let Some(current) = get_incident(c, a.id)? else {
        return Err(Error::NotFound(format!("incident {}", a.id)));
    };
    let Some((updated, kind)) = apply_action(&current, a)? else {
        return Ok(current);
    };
    c.execute(
        "UPDATE incidents SET status = ?2, body = ?3 WHERE id = ?1",
        params![a.id, updated.status.as_str(), json(&updated)],
    )
    .map_err(map_err)?;
    insert_entry(
        c,
        &NewIncidentEntry {
            incident_id: a.id,
            at: a.at,
            kind: kind.into(),
            actor: Some(a.actor.clone()),
            text: a.text.clone(),
        },
    )?;
    Ok(updated)
}

pub(crate) fn list_incidents(c: &Connection, f: &IncidentFilter) -> Result<Vec<IncidentRecord>> {
    let statuses: Vec<&str> = f.status.iter().map(|s| s.as_str()).collect();
    let mut s = c
        .prepare_cached(
            "SELECT body FROM incidents
             WHERE (?1 IS NULL OR instr(?1, ',' || status || ',') > 0)
               AND (?2 IS NULL OR team = ?2)
               AND (?3 IS NULL OR opened_at >= ?3)
               AND (?4 IS NULL OR id < ?4)
             ORDER BY id DESC LIMIT ?5",
        )
        .map_err(map_err)?;
    let status = (!statuses.is_empty()).then(|| format!(",{},", statuses.join(",")));
    let rows = s
        .query_map(
            params![
                status,
                f.team,
                f.since.map(micros),
                f.before_id,
                f.limit.clamp(1, 10_000) as i64
            ],
            |r| r.get::<_, String>(0),
        )
        .map_err(map_err)?;
    rows.map(|r| decode(&r.map_err(map_err)?)).collect()
}

pub(crate) fn timeline(c: &Connection, id: i64) -> Result<Vec<IncidentEntry>> {
    let mut s = c
        .prepare_cached(
            "SELECT id, incident_id, at, kind, actor, text FROM incident_entries
             WHERE incident_id = ?1 ORDER BY id",
        )
        .map_err(map_err)?;
    let rows = s
        .query_map(params![id], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, String>(5)?,
            ))
        })
        .map_err(map_err)?;
    rows.map(|r| {
        let (id, incident_id, at, kind, actor, text) = r.map_err(map_err)?;
        Ok(IncidentEntry {
            id,
            incident_id,
            at: from_micros(at)?,
            kind,
            actor,
            text,
        })
    })
    .collect()
}

pub(crate) fn list_alerts(c: &Connection, f: &AlertFilter) -> Result<Vec<AlertRecord>> {
    let mut s = c
        .prepare_cached(
            "SELECT body FROM alerts
             WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR incident_id = ?2)
               AND (?3 IS NULL OR starts_at >= ?3)
             ORDER BY updated_at DESC, fingerprint LIMIT ?4",
        )
        .map_err(map_err)?;
    let rows = s
        .query_map(
            params![
                f.state.map(AlertState::as_str),
                f.incident_id,
                f.since.map(micros),
                f.limit.clamp(1, 100_000) as i64
            ],
            |r| r.get::<_, String>(0),
        )
        .map_err(map_err)?;
    rows.map(|r| decode(&r.map_err(map_err)?)).collect()
}

pub(crate) fn get_alert(c: &Connection, fingerprint: &str) -> Result<Option<AlertRecord>> {
    let body: Option<String> = c
        .query_row(
            "SELECT body FROM alerts WHERE fingerprint = ?1",
            params![fingerprint],
            |r| r.get(0),
        )
        .optional()
        .map_err(map_err)?;
    body.map(|b| decode(&b)).transpose()
}

pub(crate) fn groups(c: &Connection) -> Result<Vec<GroupRow>> {
    let mut s = c
        .prepare_cached("SELECT key, body FROM alert_groups ORDER BY key")
        .map_err(map_err)?;
    let rows = s
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .map_err(map_err)?;
    rows.map(|r| {
        let (key, body) = r.map_err(map_err)?;
        Ok(GroupRow {
            key,
            body: decode_json(&body)?,
        })
    })
    .collect()
}

fn silence(id: i64, body: &str) -> Result<SilenceRecord> {
    let mut s: SilenceRecord = decode(body)?;
    s.id = id;
    Ok(s)
}

pub(crate) fn create_silence(c: &Connection, n: &NewSilence) -> Result<SilenceRecord> {
    let mut rec = SilenceRecord::from_new(n);
    c.execute(
        "INSERT INTO silences (starts_at, ends_at, body) VALUES (?1, ?2, ?3)",
        params![micros(n.starts_at), micros(n.ends_at), json(&rec)],
    )
    .map_err(map_err)?;
    rec.id = c.last_insert_rowid();
    Ok(rec)
}

pub(crate) fn list_silences(
    c: &Connection,
    active_at: Option<DateTime<Utc>>,
) -> Result<Vec<SilenceRecord>> {
    let mut s = c
        .prepare_cached(
            "SELECT id, body FROM silences
             WHERE ?1 IS NULL OR (starts_at <= ?1 AND ends_at > ?1 AND expired_at IS NULL)
             ORDER BY id DESC LIMIT 10000",
        )
        .map_err(map_err)?;
    let rows = s
        .query_map(params![active_at.map(micros)], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })
        .map_err(map_err)?;
    rows.map(|r| {
        let (id, body) = r.map_err(map_err)?;
        silence(id, &body)
    })
    .collect()
}

pub(crate) fn expire_silence(
    c: &Connection,
    id: i64,
    actor: &str,
    at: DateTime<Utc>,
) -> Result<SilenceRecord> {
    let body: Option<String> = c
        .query_row(
            "SELECT body FROM silences WHERE id = ?1",
            params![id],
            |r| r.get(0),
        )
        .optional()
        .map_err(map_err)?;
    let Some(body) = body else {
        return Err(Error::NotFound(format!("silence {id}")));
    };
    let mut s = silence(id, &body)?;
    if !s.expire(actor, at) {
        return Ok(s);
    }
    c.execute(
        "UPDATE silences SET expired_at = ?2, body = ?3 WHERE id = ?1",
        params![id, micros(at), json(&s)],
    )
    .map_err(map_err)?;
    Ok(s)
}

pub(crate) fn attempt_stats(c: &Connection, since: DateTime<Utc>) -> Result<Vec<AttemptStat>> {
    let mut s = c
        .prepare_cached(
            "WITH w AS (
               SELECT d.destination, a.id, a.outcome, a.status, a.error
               FROM delivery_attempts a JOIN deliveries d ON d.id = a.delivery_id
               WHERE a.started_at >= ?1
             ), last AS (
               SELECT destination, MAX(id) AS id FROM w GROUP BY destination
             )
             SELECT w.destination, COUNT(*),
                    SUM(CASE WHEN w.outcome <> 'delivered' THEN 1 ELSE 0 END),
                    SUM(CASE WHEN w.status = 429 THEN 1 ELSE 0 END),
                    MAX(CASE WHEN w.id = last.id THEN w.outcome END),
                    MAX(CASE WHEN w.id = last.id THEN w.status END),
                    MAX(CASE WHEN w.id = last.id THEN w.error END)
             FROM w JOIN last ON last.destination = w.destination
             GROUP BY w.destination ORDER BY w.destination",
        )
        .map_err(map_err)?;
    let rows = s
        .query_map(params![micros(since)], |r| {
            Ok(AttemptStat {
                destination: r.get(0)?,
                attempts: r.get(1)?,
                failed: r.get(2)?,
                throttled: r.get(3)?,
                last_outcome: r.get::<_, Option<String>>(4)?.unwrap_or_default(),
                last_status: r.get(5)?,
                last_error: r.get(6)?,
            })
        })
        .map_err(map_err)?;
    rows.map(|r| r.map_err(map_err)).collect()
}
