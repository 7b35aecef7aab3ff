//! The workflow monitor on SQLite: its fenced commit runs on the writer thread (inside the
//! caller's savepoint, so an error leaves nothing of it behind), lookups and listings on a
//! pooled reader. The same statements as `postgres_monitor`.

use crate::monitor::*;
use crate::util::{decode_json, from_micros, micros, opt_from_micros};
use crate::{Error, Result};
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};
use std::collections::BTreeMap;

fn map_err(e: rusqlite::Error) -> Error {
    crate::sqlite::map_err(e)
}

/// Aliases looked up per statement (three parameters each).
const FIND_CHUNK: usize = 300;

const COLS: &str = "id, body, due_at, updated_at";
const FINDING_COLS: &str = "id, instance_id, workflow, instance_key, step, kind, at, detected_at, message, evidence, subject";
const RUN_COLS: &str =
    "id, monitor, run_id, slot, started_at, finished_at, status, count, message, updated_at";

type InstanceRow = (i64, String, Option<i64>, i64);

fn instance_row(r: &rusqlite::Row) -> rusqlite::Result<InstanceRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

fn instance_record(row: InstanceRow) -> Result<InstanceRecord> {
    let (id, body, due_at, updated_at) = row;
    Ok(InstanceRecord {
        id,
        instance: decode_instance(&body)?,
        due_at: opt_from_micros(due_at)?,
        updated_at: from_micros(updated_at)?,
    })
}

/// Runs a query selecting [`COLS`].
fn instances(
    c: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<InstanceRecord>> {
    let mut s = c.prepare_cached(sql).map_err(map_err)?;
    let rows = s.query_map(params, instance_row).map_err(map_err)?;
    rows.map(|r| instance_record(r.map_err(map_err)?)).collect()
}

type FindingRow = (
    i64,
    i64,
    String,
    String,
    String,
    String,
    i64,
    i64,
    String,
    String,
    String,
);

fn finding_row(r: &rusqlite::Row) -> rusqlite::Result<FindingRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
        r.get(9)?,
        r.get(10)?,
    ))
}

fn finding_record(f: FindingRow) -> Result<FindingRecord> {
    Ok(FindingRecord {
        subject: f.10,
        id: f.0,
        instance_id: f.1,
        workflow: f.2,
        instance_key: f.3,
        finding: switchyard_core::instance::Finding {
            step: f.4,
            kind: parse_kind(&f.5)?,
            at: from_micros(f.6)?,
            message: f.8,
            evidence: decode_evidence(&f.9)?,
        },
        detected_at: from_micros(f.7)?,
    })
}

type RunRow = (
    i64,
    String,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    String,
    Option<i64>,
    Option<String>,
    i64,
);

fn run_row(r: &rusqlite::Row) -> rusqlite::Result<RunRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
        r.get(9)?,
    ))
}

fn run_record(r: RunRow) -> Result<RunRecord> {
    Ok(RunRecord {
        id: r.0,
        run: switchyard_core::batch::BatchRun {
            monitor: r.1,
            run_id: r.2,
            slot: opt_from_micros(r.3)?,
            started_at: opt_from_micros(r.4)?,
            finished_at: opt_from_micros(r.5)?,
            status: parse_run_status(&r.6)?,
            count: r.7,
            message: r.8,
        },
        updated_at: from_micros(r.9)?,
    })
}

pub(crate) fn find(c: &Connection, aliases: &[WorkflowAlias]) -> Result<Vec<InstanceRecord>> {
    let mut found = BTreeMap::new();
    for chunk in aliases.chunks(FIND_CHUNK) {
        let keys = (0..chunk.len())
            .map(|i| format!("(?{}, ?{}, ?{})", 3 * i + 1, 3 * i + 2, 3 * i + 3))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "WITH k (workflow, name, value) AS (VALUES {keys})
             SELECT {COLS} FROM wf_instances WHERE id IN (
                SELECT a.instance_id FROM k JOIN wf_aliases a
                  ON a.workflow = k.workflow AND a.name = k.name AND a.value = k.value)"
        );
        let params = chunk
            .iter()
            .flat_map(|(wf, k)| [wf.as_str(), k.name.as_str(), k.value.as_str()]);
        for r in instances(c, &sql, params_from_iter(params))? {
            found.insert(r.id, r);
        }
    }
    Ok(found.into_values().collect())
}

pub(crate) fn due(c: &Connection, until: DateTime<Utc>, limit: i64) -> Result<Vec<InstanceRecord>> {
    instances(
        c,
        &format!("SELECT {COLS} FROM wf_instances WHERE due_at <= ?1 ORDER BY due_at, id LIMIT ?2"),
        params![micros(until), limit],
    )
}

pub(crate) fn next_due(c: &Connection) -> Result<Option<DateTime<Utc>>> {
    let due: Option<i64> = c
        .query_row("SELECT MIN(due_at) FROM wf_instances", [], |r| r.get(0))
        .map_err(map_err)?;
    opt_from_micros(due)
}

/// The whole monitor step; the fence comes first, so a stale owner writes nothing.
pub(crate) fn commit(c: &Connection, m: &MonitorCommit) -> Result<MonitorCommitted> {
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
    let mut version = c
        .prepare_cached(
            "INSERT INTO wf_versions (workflow, version, definition, created_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (workflow, version) DO NOTHING",
        )
        .map_err(map_err)?;
    for v in &m.versions {
        version
            .execute(params![
                v.workflow,
                v.version,
                v.definition.to_string(),
                micros(v.created_at)
            ])
            .map_err(map_err)?;
    }
    let now = micros(m.now);
    let mut ids = Vec::with_capacity(m.writes.len());
    let mut inserted = 0;
    for w in &m.writes {
        if m.findings_only {
            let id = w
                .id
                .ok_or_else(|| Error::NotFound("findings of an instance not yet stored".into()))?;
            inserted += insert_instance_findings(c, id, w, now)?;
            ids.push(id);
            continue;
        }
        let id = write_instance(c, w, now)?;
        absorb(c, id, &w.absorbed)?;
        inserted += insert_instance_findings(c, id, w, now)?;
        ids.push(id);
    }
    let mut runs = Vec::with_capacity(m.runs.len());
    for w in &m.runs {
        let id = match (m.findings_only, w.id) {
            (true, Some(id)) => id,
            (true, None) => return Err(Error::NotFound("findings of a run not yet stored".into())),
            (false, _) => write_run(c, w, now)?,
        };
        let r = &w.run;
        inserted += insert_findings(c, w.subject, id, &r.monitor, &r.label(), &w.findings, now)?;
        runs.push(id);
    }
    Ok(MonitorCommitted {
        instances: ids,
        runs,
        findings: inserted,
    })
}

/// Inserts or updates the run's row; returns its id.
fn write_run(c: &Connection, w: &RunWrite, now: i64) -> Result<i64> {
    let r = &w.run;
    let (slot, started, finished) = (
        r.slot.map(micros),
        r.started_at.map(micros),
        r.finished_at.map(micros),
    );
    let status = r.status.as_str();
    match w.id {
        None => c
            .prepare_cached(
                "INSERT INTO batch_runs (monitor, run_id, slot, started_at, finished_at, status, count, message, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) RETURNING id",
            )
            .and_then(|mut s| {
                s.query_row(
                    params![r.monitor, r.run_id, slot, started, finished, status, r.count, r.message, now],
                    |r| r.get(0),
                )
            })
            .map_err(map_err),
        Some(id) => {
            let n = c
                .prepare_cached(
                    "UPDATE batch_runs SET monitor = ?1, run_id = ?2, slot = ?3, started_at = ?4, finished_at = ?5,
                        status = ?6, count = ?7, message = ?8, updated_at = ?9
                     WHERE id = ?10",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        r.monitor, r.run_id, slot, started, finished, status, r.count, r.message, now, id
                    ])
                })
                .map_err(map_err)?;
            if n == 0 {
                return Err(Error::NotFound(format!("batch run {id}")));
            }
            Ok(id)
        }
    }
}

/// Inserts or updates the instance's row and points its aliases at it; returns its id.
fn write_instance(c: &Connection, w: &InstanceWrite, now: i64) -> Result<i64> {
    let i = &w.instance;
    let body = encode_instance(i)?;
    let (started, closed, due) = (
        micros(i.started_at),
        i.closed_at.map(micros),
        w.due_at.map(micros),
    );
    let state = i.state.as_str();
    let id = match w.id {
        None => c
            .prepare_cached(
                "INSERT INTO wf_instances (workflow, version, key, state, started_at, updated_at, closed_at, due_at, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) RETURNING id",
            )
            .and_then(|mut s| {
                s.query_row(
                    params![i.workflow, i.version, i.key, state, started, now, closed, due, body],
                    |r| r.get(0),
                )
            })
            .map_err(map_err)?,
        Some(id) => {
            let n = c
                .prepare_cached(
                    "UPDATE wf_instances SET workflow = ?1, version = ?2, key = ?3, state = ?4, started_at = ?5,
                        updated_at = ?6, closed_at = ?7, due_at = ?8, body = ?9
                     WHERE id = ?10",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        i.workflow, i.version, i.key, state, started, now, closed, due, body, id
                    ])
                })
                .map_err(map_err)?;
            if n == 0 {
                return Err(Error::NotFound(format!("workflow instance {id}")));
            }
            id
        }
    };
    if !w.relink {
        return Ok(id);
    }
    let mut alias = c
        .prepare_cached(
            "INSERT INTO wf_aliases (workflow, name, value, instance_id) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (workflow, name, value) DO UPDATE SET instance_id = excluded.instance_id",
        )
        .map_err(map_err)?;
    for a in &i.aliases {
        alias
            .execute(params![i.workflow, a.name, a.value, id])
            .map_err(map_err)?;
    }
    Ok(id)
}

/// Moves the findings of instances merged into `id` (but those of a (step, kind) it
/// already has, which go) with their ids, so followers do not see them twice; then drops
/// their remaining aliases and their rows. Only workflow findings: a batch run's findings
/// share the `instance_id` numbers (the run's id) and are not the instances'.
fn absorb(c: &Connection, id: i64, absorbed: &[i64]) -> Result<()> {
    // One at a time: two of them may have findings of the same (step, kind).
    for &other in absorbed.iter().filter(|&&o| o != id) {
        c.prepare_cached(
            "UPDATE wf_findings SET instance_id = ?1
             WHERE subject = 'workflow' AND instance_id = ?2
               AND NOT EXISTS (SELECT 1 FROM wf_findings f
                               WHERE f.subject = 'workflow' AND f.instance_id = ?1
                                 AND f.step = wf_findings.step AND f.kind = wf_findings.kind)",
        )
        .and_then(|mut s| s.execute(params![id, other]))
        .map_err(map_err)?;
        for sql in [
            "DELETE FROM wf_findings WHERE subject = 'workflow' AND instance_id = ?1",
            "DELETE FROM wf_aliases WHERE instance_id = ?1",
            "DELETE FROM wf_instances WHERE id = ?1",
        ] {
            c.prepare_cached(sql)
                .and_then(|mut s| s.execute([other]))
                .map_err(map_err)?;
        }
    }
    Ok(())
}

/// Inserts the write's findings unless the instance has one of the same (step, kind);
/// returns how many were new.
fn insert_instance_findings(c: &Connection, id: i64, w: &InstanceWrite, now: i64) -> Result<u64> {
    if w.findings.is_empty() {
        return Ok(0);
    }
    let i = &w.instance;
    insert_findings(
        c,
        SUBJECT_WORKFLOW,
        id,
        &i.workflow,
        &i.label(),
        &w.findings,
        now,
    )
}

/// Inserts findings about one instance or run (`id` of `subject`), each unless it already
/// has one of the same (step, kind); returns how many were new.
fn insert_findings(
    c: &Connection,
    subject: &str,
    id: i64,
    workflow: &str,
    label: &str,
    findings: &[switchyard_core::instance::Finding],
    now: i64,
) -> Result<u64> {
    if findings.is_empty() {
        return Ok(0);
    }
    let mut s = c
        .prepare_cached(
            "INSERT INTO wf_findings (subject, instance_id, workflow, instance_key, step, kind, at, detected_at, message, evidence)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
             ON CONFLICT (subject, instance_id, step, kind) DO NOTHING",
        )
        .map_err(map_err)?;
    let mut inserted = 0;
    for f in findings {
        inserted += s
            .execute(params![
                subject,
                id,
                workflow,
                label,
                f.step,
                f.kind.as_str(),
                micros(f.at),
                now,
                f.message,
                encode_evidence(&f.evidence)?
            ])
            .map_err(map_err)? as u64;
    }
    Ok(inserted)
}

pub(crate) fn versions(c: &Connection) -> Result<Vec<WorkflowVersion>> {
    let mut s = c
        .prepare_cached(
            "SELECT workflow, version, definition, created_at FROM wf_versions
             ORDER BY created_at, workflow, version",
        )
        .map_err(map_err)?;
    let rows = s
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })
        .map_err(map_err)?;
    rows.map(|r| {
        let (workflow, version, definition, created_at) = r.map_err(map_err)?;
        Ok(WorkflowVersion {
            workflow,
            version,
            definition: decode_json(&definition)?,
            created_at: from_micros(created_at)?,
        })
    })
    .collect()
}

pub(crate) fn get(c: &Connection, id: i64) -> Result<Option<InstanceRecord>> {
    c.prepare_cached(&format!("SELECT {COLS} FROM wf_instances WHERE id = ?1"))
        .and_then(|mut s| s.query_row([id], instance_row).optional())
        .map_err(map_err)?
        .map(instance_record)
        .transpose()
}

pub(crate) fn by_ids(c: &Connection, ids: &[i64]) -> Result<Vec<InstanceRecord>> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(500) {
        let marks = vec!["?"; chunk.len()].join(", ");
        out.extend(instances(
            c,
            &format!("SELECT {COLS} FROM wf_instances WHERE id IN ({marks}) ORDER BY id"),
            params_from_iter(chunk.iter()),
        )?);
    }
    Ok(out)
}

pub(crate) fn list(c: &Connection, f: &InstanceFilter, limit: i64) -> Result<Vec<InstanceRecord>> {
    let states = (!f.states.is_empty()).then(|| {
        serde_json::Value::from(f.states.iter().map(|s| s.as_str()).collect::<Vec<_>>()).to_string()
    });
    let (dim_name, dim_value) = match &f.dimension {
        Some((n, v)) => (Some(n.as_str()), Some(v.as_str())),
        None => (None, None),
    };
    // The dimension is read with json_each rather than a JSON path, so no name needs quoting.
    instances(
        c,
        &format!(
            "SELECT {COLS} FROM wf_instances
             WHERE (?1 IS NULL OR workflow = ?1)
               AND (?2 IS NULL OR state IN (SELECT value FROM json_each(?2)))
               AND (?3 IS NULL OR EXISTS (SELECT 1 FROM json_each(body, '$.dimensions') d
                                          WHERE d.key = ?3 AND d.value = ?4))
               AND (?5 IS NULL OR started_at >= ?5)
               AND (?6 IS NULL OR started_at < ?6)
               AND (?7 IS NULL OR id < ?7)
             ORDER BY id DESC LIMIT ?8"
        ),
        params![
            f.workflow,
            states,
            dim_name,
            dim_value,
            f.since.map(micros),
            f.until.map(micros),
            f.before_id,
            limit
        ],
    )
}

pub(crate) fn by_key(
    c: &Connection,
    value: &str,
    workflow: Option<&str>,
    limit: i64,
) -> Result<Vec<InstanceRecord>> {
    instances(
        c,
        &format!(
            "SELECT {COLS} FROM wf_instances
             WHERE id IN (SELECT instance_id FROM wf_aliases WHERE value = ?1 AND (?2 IS NULL OR workflow = ?2))
             ORDER BY id DESC LIMIT ?3"
        ),
        params![value, workflow, limit],
    )
}

pub(crate) fn findings(
    c: &Connection,
    f: &FindingFilter,
    limit: i64,
) -> Result<Vec<FindingRecord>> {
    let mut s = c
        .prepare_cached(&format!(
            "SELECT {FINDING_COLS} FROM wf_findings
             WHERE id > ?1
               AND (?2 IS NULL OR workflow = ?2)
               AND (?3 IS NULL OR kind = ?3)
               AND (?4 IS NULL OR instance_id = ?4)
               AND (?5 IS NULL OR at >= ?5)
               AND subject IN (SELECT value FROM json_each(?6))
             ORDER BY id LIMIT ?7"
        ))
        .map_err(map_err)?;
    let subjects = serde_json::Value::from(finding_subjects(f)).to_string();
    let rows = s
        .query_map(
            params![
                f.after_id,
                f.workflow,
                f.kind.map(|k| k.as_str()),
                f.instance_id,
                f.since.map(micros),
                subjects,
                limit
            ],
            finding_row,
        )
        .map_err(map_err)?;
    rows.map(|r| finding_record(r.map_err(map_err)?)).collect()
}

/// Runs a query selecting [`RUN_COLS`].
fn runs(c: &Connection, sql: &str, params: impl rusqlite::Params) -> Result<Vec<RunRecord>> {
    let mut s = c.prepare_cached(sql).map_err(map_err)?;
    let rows = s.query_map(params, run_row).map_err(map_err)?;
    rows.map(|r| run_record(r.map_err(map_err)?)).collect()
}

pub(crate) fn list_runs(c: &Connection, f: &RunFilter, limit: i64) -> Result<Vec<RunRecord>> {
    let statuses = (!f.statuses.is_empty()).then(|| {
        serde_json::Value::from(f.statuses.iter().map(|s| s.as_str()).collect::<Vec<_>>())
            .to_string()
    });
    runs(
        c,
        &format!(
            "SELECT {RUN_COLS} FROM batch_runs
             WHERE (?1 IS NULL OR monitor = ?1)
               AND (?2 IS NULL OR status IN (SELECT value FROM json_each(?2)))
               AND (?3 IS NULL OR slot = ?3)
               AND (?4 IS NULL OR run_id = ?4)
               AND (?5 IS NULL OR started_at >= ?5)
               AND (?6 IS NULL OR id < ?6)
             ORDER BY id DESC LIMIT ?7"
        ),
        params![
            f.monitor,
            statuses,
            f.slot.map(micros),
            f.run_id,
            f.started_since.map(micros),
            f.before_id,
            limit
        ],
    )
}

pub(crate) fn get_run(c: &Connection, id: i64) -> Result<Option<RunRecord>> {
    c.prepare_cached(&format!("SELECT {RUN_COLS} FROM batch_runs WHERE id = ?1"))
        .and_then(|mut s| s.query_row([id], run_row).optional())
        .map_err(map_err)?
        .map(run_record)
        .transpose()
}

pub(crate) fn counts(c: &Connection) -> Result<Vec<InstanceCount>> {
    let mut s = c
        .prepare_cached(
            "SELECT workflow, state, COUNT(*) FROM wf_instances
             GROUP BY workflow, state ORDER BY workflow, state",
        )
        .map_err(map_err)?;
    let rows = s
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .map_err(map_err)?;
    rows.map(|r| {
        let (workflow, state, count) = r.map_err(map_err)?;
        Ok(InstanceCount {
            workflow,
            state: parse_state(&state)?,
            count,
        })
    })
    .collect()
}

pub(crate) fn closed_counts(
    c: &Connection,
    workflow: &str,
    since: DateTime<Utc>,
    bucket_seconds: i64,
) -> Result<Vec<ClosedCount>> {
    let width = bucket_seconds.max(1) * 1_000_000;
    let mut s = c
        .prepare_cached(&closed_counts_sql().replace('$', "?"))
        .map_err(map_err)?;
    let rows = s
        .query_map(params![workflow, micros(since), width], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })
        .map_err(map_err)?;
    rows.map(|r| {
        let (b, state, bin, count) = r.map_err(map_err)?;
        Ok(ClosedCount {
            bucket: from_micros(b)?,
            state: parse_state(&state)?,
            cycle_bin: bin as usize,
            count,
        })
    })
    .collect()
}

/// Deletes up to `limit` instances closed before `closed_before`, oldest closed first,
/// with their aliases (findings stay).
pub(crate) fn archive(c: &Connection, closed_before: DateTime<Utc>, limit: i64) -> Result<u64> {
    let mut s = c
        .prepare_cached(
            "SELECT id FROM wf_instances WHERE closed_at < ?1 ORDER BY closed_at, id LIMIT ?2",
        )
        .map_err(map_err)?;
    let ids = s
        .query_map(params![micros(closed_before), limit], |r| {
            r.get::<_, i64>(0)
        })
        .map_err(map_err)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(map_err)?;
    for &id in &ids {
        for sql in [
            "DELETE FROM wf_aliases WHERE instance_id = ?1",
            "DELETE FROM wf_instances WHERE id = ?1",
        ] {
            c.prepare_cached(sql)
                .and_then(|mut s| s.execute([id]))
                .map_err(map_err)?;
        }
    }
    Ok(ids.len() as u64)
}
