//! The alerting rows on PostgreSQL: the same statements as `sqlite_alerts`. The fenced
//! commit starts with the lease row's update (held locked until the commit ends, like the
//! monitor's); hand actions lock their incident row (`FOR UPDATE`) so an automatic resolve
//! and an ack never overwrite each other.

use crate::alerts::*;
use crate::postgres::map_err;
use crate::util::{decode_json, from_micros, micros};
use crate::{Error, Result};
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;

fn decode<T: serde::de::DeserializeOwned>(text: &str) -> Result<T> {
    serde_json::from_value(decode_json(text)?).map_err(|e| Error::Corrupt(e.to_string()))
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("serialisable")
}

pub(crate) async fn commit(c: &impl GenericClient, m: &AlertsCommit) -> Result<()> {
    let l = &m.lease;
    let checkpoint = m.checkpoint.as_ref().map(|v| v.to_string());
    let n = c
        .execute(
            "UPDATE leases SET state = COALESCE($4::text, state) WHERE name = $1 AND owner = $2 AND epoch = $3",
            &[&l.name, &l.owner, &l.epoch, &checkpoint],
        )
        .await
        .map_err(map_err)?;
    if n == 0 {
        return Err(Error::Fenced {
            name: l.name.clone(),
            epoch: l.epoch,
        });
    }
    if !m.alerts.is_empty() {
        // One statement for every alert of the pass (10,000 findings folded at once).
        let mut fps = Vec::with_capacity(m.alerts.len());
        let mut rules = Vec::with_capacity(m.alerts.len());
        let mut states = Vec::with_capacity(m.alerts.len());
        let mut incidents = Vec::with_capacity(m.alerts.len());
        let mut starts = Vec::with_capacity(m.alerts.len());
        let mut updated = Vec::with_capacity(m.alerts.len());
        let mut bodies = Vec::with_capacity(m.alerts.len());
        for a in &m.alerts {
            fps.push(a.fingerprint.clone());
            rules.push(a.rule.clone());
            states.push(a.state.as_str().to_string());
            incidents.push(a.incident_id);
            starts.push(micros(a.starts_at));
            updated.push(micros(a.updated_at));
            bodies.push(json(a));
        }
        c.execute(
            "INSERT INTO alerts (fingerprint, rule, state, incident_id, starts_at, updated_at, body)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[], $5::int8[], $6::int8[], $7::text[])
             ON CONFLICT (fingerprint) DO UPDATE SET rule = excluded.rule, state = excluded.state,
               incident_id = excluded.incident_id, starts_at = excluded.starts_at,
               updated_at = excluded.updated_at, body = excluded.body",
            &[&fps, &rules, &states, &incidents, &starts, &updated, &bodies],
        )
        .await
        .map_err(map_err)?;
    }
    if !m.delete_alerts.is_empty() {
        c.execute(
            "DELETE FROM alerts WHERE fingerprint = ANY($1)",
            &[&m.delete_alerts],
        )
        .await
        .map_err(map_err)?;
    }
    if !m.groups.is_empty() {
        let keys: Vec<String> = m.groups.iter().map(|g| g.key.clone()).collect();
        let bodies: Vec<String> = m.groups.iter().map(|g| g.body.to_string()).collect();
        c.execute(
            "INSERT INTO alert_groups (key, body) SELECT * FROM unnest($1::text[], $2::text[])
             ON CONFLICT (key) DO UPDATE SET body = excluded.body",
            &[&keys, &bodies],
        )
        .await
        .map_err(map_err)?;
    }
    if !m.delete_groups.is_empty() {
        c.execute(
            "DELETE FROM alert_groups WHERE key = ANY($1)",
            &[&m.delete_groups],
        )
        .await
        .map_err(map_err)?;
    }
    for i in &m.open_incidents {
        c.execute(
            "INSERT INTO incidents (id, status, team, opened_at, body) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (id) DO NOTHING",
            &[
                &i.id,
                &i.status.as_str(),
                &i.team,
                &micros(i.opened_at),
                &json(i),
            ],
        )
        .await
        .map_err(map_err)?;
    }
    for (id, at) in &m.notified_incidents {
        update_incident(c, *id, |i| mark_notified(i, *at)).await?;
    }
    for (id, at) in &m.resolve_incidents {
        update_incident(c, *id, |i| auto_resolve(i, *at)).await?;
    }
    for e in &m.entries {
        insert_entry(c, e).await?;
    }
    Ok(())
}

async fn insert_entry(c: &impl GenericClient, e: &NewIncidentEntry) -> Result<()> {
    c.execute(
        "INSERT INTO incident_entries (incident_id, at, kind, actor, text) VALUES ($1, $2, $3, $4, $5)",
        &[&e.incident_id, &micros(e.at), &e.kind, &e.actor, &e.text],
    )
    .await
    .map_err(map_err)?;
    Ok(())
}

async fn locked_incident(c: &impl GenericClient, id: i64) -> Result<Option<IncidentRecord>> {
    c.query_opt(
        "SELECT body FROM incidents WHERE id = $1 FOR UPDATE",
        &[&id],
    )
    .await
    .map_err(map_err)?
    .map(|r| decode(r.get(0)))
    .transpose()
}

async fn update_incident(
    c: &impl GenericClient,
    id: i64,
    change: impl FnOnce(&mut IncidentRecord),
) -> Result<Option<IncidentRecord>> {
    let Some(mut i) = locked_incident(c, id).await? else {
        return Ok(None);
    };
    change(&mut i);
    c.execute(
        "UPDATE incidents SET status = $2, body = $3 WHERE id = $1",
        &[&id, &i.status.as_str(), &json(&i)],
    )
    .await
    .map_err(map_err)?;
    Ok(Some(i))
}

pub(crate) async fn get_incident(
    c: &impl GenericClient,
    id: i64,
) -> Result<Option<IncidentRecord>> {
    c.query_opt("SELECT body FROM incidents WHERE id = $1", &[&id])
        .await
        .map_err(map_err)?
        .map(|r| decode(r.get(0)))
        .transpose()
}

pub(crate) async fn action(c: &impl GenericClient, a: &IncidentAction) -> Result<IncidentRecord> {
    let Some(current) = locked_incident(c, a.id).await? else {
        return Err(Error::NotFound(format!("incident {}", a.id)));
    };
    let Some((updated, kind)) = apply_action(&current, a)? else {
        return Ok(current);
    };
    c.execute(
        "UPDATE incidents SET status = $2, body = $3 WHERE id = $1",
        &[&a.id, &updated.status.as_str(), &json(&updated)],
    )
    .await
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
    )
    .await?;
    Ok(updated)
}

pub(crate) async fn list_incidents(
    c: &impl GenericClient,
    f: &IncidentFilter,
) -> Result<Vec<IncidentRecord>> {
    let statuses: Vec<String> = f.status.iter().map(|s| s.as_str().to_string()).collect();
    let status = (!statuses.is_empty()).then_some(statuses);
    let rows = c
        .query(
            "SELECT body FROM incidents
             WHERE ($1::text[] IS NULL OR status = ANY($1))
               AND ($2::text IS NULL OR team = $2)
               AND ($3::int8 IS NULL OR opened_at >= $3)
               AND ($4::int8 IS NULL OR id < $4)
             ORDER BY id DESC LIMIT $5",
            &[
                &status,
                &f.team,
                &f.since.map(micros),
                &f.before_id,
                &(f.limit.clamp(1, 10_000) as i64),
            ],
        )
        .await
        .map_err(map_err)?;
    rows.iter().map(|r| decode(r.get(0))).collect()
}

pub(crate) async fn timeline(c: &impl GenericClient, id: i64) -> Result<Vec<IncidentEntry>> {
    let rows = c
        .query(
            "SELECT id, incident_id, at, kind, actor, text FROM incident_entries
             WHERE incident_id = $1 ORDER BY id",
            &[&id],
        )
        .await
        .map_err(map_err)?;
    rows.iter()
        .map(|r| {
            Ok(IncidentEntry {
                id: r.get(0),
                incident_id: r.get(1),
                at: from_micros(r.get(2))?,
                kind: r.get(3),
                actor: r.get(4),
                text: r.get(5),
            })
        })
        .collect()
}

pub(crate) async fn list_alerts(
    c: &impl GenericClient,
    f: &AlertFilter,
) -> Result<Vec<AlertRecord>> {
    let rows = c
        .query(
            "SELECT body FROM alerts
             WHERE ($1::text IS NULL OR state = $1) AND ($2::int8 IS NULL OR incident_id = $2)
               AND ($3::int8 IS NULL OR starts_at >= $3)
             ORDER BY updated_at DESC, fingerprint LIMIT $4",
            &[
                &f.state.map(AlertState::as_str),
                &f.incident_id,
                &f.since.map(micros),
                &(f.limit.clamp(1, 100_000) as i64),
            ],
        )
        .await
        .map_err(map_err)?;
    rows.iter().map(|r| decode(r.get(0))).collect()
}

pub(crate) async fn get_alert(
    c: &impl GenericClient,
    fingerprint: &str,
) -> Result<Option<AlertRecord>> {
    c.query_opt(
        "SELECT body FROM alerts WHERE fingerprint = $1",
        &[&fingerprint],
    )
    .await
    .map_err(map_err)?
    .map(|r| decode(r.get(0)))
    .transpose()
}

pub(crate) async fn groups(c: &impl GenericClient) -> Result<Vec<GroupRow>> {
    let rows = c
        .query("SELECT key, body FROM alert_groups ORDER BY key", &[])
        .await
        .map_err(map_err)?;
    rows.iter()
        .map(|r| {
            Ok(GroupRow {
                key: r.get(0),
                body: decode_json(r.get(1))?,
            })
        })
        .collect()
}

fn silence(id: i64, body: &str) -> Result<SilenceRecord> {
    let mut s: SilenceRecord = decode(body)?;
    s.id = id;
    Ok(s)
}

pub(crate) async fn create_silence(
    c: &impl GenericClient,
    n: &NewSilence,
) -> Result<SilenceRecord> {
    let mut rec = SilenceRecord::from_new(n);
    let row = c
        .query_one(
            "INSERT INTO silences (starts_at, ends_at, body) VALUES ($1, $2, $3) RETURNING id",
            &[&micros(n.starts_at), &micros(n.ends_at), &json(&rec)],
        )
        .await
        .map_err(map_err)?;
    rec.id = row.get(0);
    Ok(rec)
}

pub(crate) async fn list_silences(
    c: &impl GenericClient,
    active_at: Option<DateTime<Utc>>,
) -> Result<Vec<SilenceRecord>> {
    let rows = c
        .query(
            "SELECT id, body FROM silences
             WHERE $1::int8 IS NULL OR (starts_at <= $1 AND ends_at > $1 AND expired_at IS NULL)
             ORDER BY id DESC LIMIT 10000",
            &[&active_at.map(micros)],
        )
        .await
        .map_err(map_err)?;
    rows.iter().map(|r| silence(r.get(0), r.get(1))).collect()
}

pub(crate) async fn expire_silence(
    c: &impl GenericClient,
    id: i64,
    actor: &str,
    at: DateTime<Utc>,
) -> Result<SilenceRecord> {
    let Some(row) = c
        .query_opt("SELECT body FROM silences WHERE id = $1 FOR UPDATE", &[&id])
        .await
        .map_err(map_err)?
    else {
        return Err(Error::NotFound(format!("silence {id}")));
    };
    let mut s = silence(id, row.get(0))?;
    if !s.expire(actor, at) {
        return Ok(s);
    }
    c.execute(
        "UPDATE silences SET expired_at = $2, body = $3 WHERE id = $1",
        &[&id, &micros(at), &json(&s)],
    )
    .await
    .map_err(map_err)?;
    Ok(s)
}

pub(crate) async fn attempt_stats(
    c: &impl GenericClient,
    since: DateTime<Utc>,
) -> Result<Vec<AttemptStat>> {
    let rows = c
        .query(
            "WITH w AS (
               SELECT d.destination, a.id, a.outcome, a.status, a.error
               FROM delivery_attempts a JOIN deliveries d ON d.id = a.delivery_id
               WHERE a.started_at >= $1
             ), last AS (
               SELECT DISTINCT ON (destination) destination, outcome, status, error
               FROM w ORDER BY destination, id DESC
             )
             SELECT w.destination, COUNT(*)::int8,
                    COUNT(*) FILTER (WHERE w.outcome <> 'delivered')::int8,
                    COUNT(*) FILTER (WHERE w.status = 429)::int8,
                    MAX(last.outcome), MAX(last.status), MAX(last.error)
             FROM w JOIN last ON last.destination = w.destination
             GROUP BY w.destination ORDER BY w.destination",
            &[&micros(since)],
        )
        .await
        .map_err(map_err)?;
    Ok(rows
        .iter()
        .map(|r| AttemptStat {
            destination: r.get(0),
            attempts: r.get(1),
            failed: r.get(2),
            throttled: r.get(3),
            last_outcome: r.get::<_, Option<String>>(4).unwrap_or_default(),
            last_status: r.get(5),
            last_error: r.get(6),
        })
        .collect())
}
