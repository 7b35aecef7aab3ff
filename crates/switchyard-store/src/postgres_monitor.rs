//! The workflow monitor on PostgreSQL: the same statements as `sqlite_monitor`.
//!
//! The fenced commit runs in the caller's transaction and starts with the lease row's
//! update, which holds that row locked until the commit ends: a node taking the lease over
//! waits for a commit in flight, and a commit after the takeover finds the epoch changed
//! and writes nothing.

use crate::monitor::*;
use crate::postgres::map_err;
use crate::util::{decode_json, from_micros, micros, opt_from_micros};
use crate::{Error, Result};
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use std::collections::BTreeSet;
use tokio_postgres::Row;

const COLS: &str = "id, body, due_at, updated_at";
const FINDING_COLS: &str = "id, instance_id, workflow, instance_key, step, kind, at, detected_at, message, evidence, subject";
const RUN_COLS: &str =
    "id, monitor, run_id, slot, started_at, finished_at, status, count, message, updated_at";

fn instance_record(r: &Row) -> Result<InstanceRecord> {
    Ok(InstanceRecord {
        id: r.get(0),
        instance: decode_instance(r.get(1))?,
        due_at: opt_from_micros(r.get(2))?,
        updated_at: from_micros(r.get(3))?,
    })
}

fn instance_records(rows: &[Row]) -> Result<Vec<InstanceRecord>> {
    rows.iter().map(instance_record).collect()
}

fn finding_record(r: &Row) -> Result<FindingRecord> {
    Ok(FindingRecord {
        subject: r.get(10),
        id: r.get(0),
        instance_id: r.get(1),
        workflow: r.get(2),
        instance_key: r.get(3),
        finding: switchyard_core::instance::Finding {
            step: r.get(4),
            kind: parse_kind(r.get(5))?,
            at: from_micros(r.get(6))?,
            message: r.get(8),
            evidence: decode_evidence(r.get(9))?,
        },
        detected_at: from_micros(r.get(7))?,
    })
}

fn run_record(r: &Row) -> Result<RunRecord> {
    Ok(RunRecord {
        id: r.get(0),
        run: switchyard_core::batch::BatchRun {
            monitor: r.get(1),
            run_id: r.get(2),
            slot: opt_from_micros(r.get(3))?,
            started_at: opt_from_micros(r.get(4))?,
            finished_at: opt_from_micros(r.get(5))?,
            status: parse_run_status(r.get(6))?,
            count: r.get(7),
            message: r.get(8),
        },
        updated_at: from_micros(r.get(9))?,
    })
}

pub(crate) async fn find(
    c: &impl GenericClient,
    aliases: &[WorkflowAlias],
) -> Result<Vec<InstanceRecord>> {
    let workflows: Vec<&str> = aliases.iter().map(|(w, _)| w.as_str()).collect();
    let names: Vec<&str> = aliases.iter().map(|(_, k)| k.name.as_str()).collect();
    let values: Vec<&str> = aliases.iter().map(|(_, k)| k.value.as_str()).collect();
    let stmt = c
        .prepare_cached(&format!(
            "SELECT {COLS} FROM wf_instances WHERE id IN (
                SELECT a.instance_id FROM unnest($1::text[], $2::text[], $3::text[]) AS k (workflow, name, value)
                JOIN wf_aliases a ON a.workflow = k.workflow AND a.name = k.name AND a.value = k.value)
             ORDER BY id"
        ))
        .await
        .map_err(map_err)?;
    let rows = c
        .query(&stmt, &[&workflows, &names, &values])
        .await
        .map_err(map_err)?;
    instance_records(&rows)
}

pub(crate) async fn due(
    c: &impl GenericClient,
    until: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<InstanceRecord>> {
    let rows = c
        .query(
            &format!(
                "SELECT {COLS} FROM wf_instances WHERE due_at <= $1 ORDER BY due_at, id LIMIT $2"
            ),
            &[&micros(until), &limit],
        )
        .await
        .map_err(map_err)?;
    instance_records(&rows)
}

pub(crate) async fn next_due(c: &impl GenericClient) -> Result<Option<DateTime<Utc>>> {
    let due: Option<i64> = c
        .query_one("SELECT MIN(due_at) FROM wf_instances", &[])
        .await
        .map_err(map_err)?
        .get(0);
    opt_from_micros(due)
}

/// The whole monitor step; the fence comes first, so a stale owner writes nothing.
pub(crate) async fn commit(c: &impl GenericClient, m: &MonitorCommit) -> Result<MonitorCommitted> {
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
    if !m.versions.is_empty() {
        let stmt = c
            .prepare_cached(
                "INSERT INTO wf_versions (workflow, version, definition, created_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (workflow, version) DO NOTHING",
            )
            .await
            .map_err(map_err)?;
        for v in &m.versions {
            c.execute(
                &stmt,
                &[
                    &v.workflow,
                    &v.version,
                    &v.definition.to_string(),
                    &micros(v.created_at),
                ],
            )
            .await
            .map_err(map_err)?;
        }
    }
    let now = micros(m.now);
    let mut ids = Vec::with_capacity(m.writes.len());
    // Every finding of the commit goes in one statement at the end (10,000 timers firing at
    // one instant are one round trip, not 10,000).
    let mut findings = FindingRows::default();
    for w in &m.writes {
        if m.findings_only {
            let id = w
                .id
                .ok_or_else(|| Error::NotFound("findings of an instance not yet stored".into()))?;
            findings.push(
                SUBJECT_WORKFLOW,
                id,
                &w.instance.workflow,
                &w.instance.label(),
                &w.findings,
            )?;
            ids.push(id);
            continue;
        }
        let id = write_instance(c, w, now).await?;
        absorb(c, id, &w.absorbed).await?;
        findings.push(
            SUBJECT_WORKFLOW,
            id,
            &w.instance.workflow,
            &w.instance.label(),
            &w.findings,
        )?;
        ids.push(id);
    }
    let mut runs = Vec::with_capacity(m.runs.len());
    for w in &m.runs {
        let id = match (m.findings_only, w.id) {
            (true, Some(id)) => id,
            (true, None) => return Err(Error::NotFound("findings of a run not yet stored".into())),
            (false, _) => write_run(c, w, now).await?,
        };
        let r = &w.run;
        findings.push(w.subject, id, &r.monitor, &r.label(), &w.findings)?;
        runs.push(id);
    }
    let inserted = findings.insert(c, now).await?;
    Ok(MonitorCommitted {
        instances: ids,
        runs,
        findings: inserted,
    })
}

/// Inserts or updates the run's row; returns its id.
async fn write_run(c: &impl GenericClient, w: &RunWrite, now: i64) -> Result<i64> {
    let r = &w.run;
    let (slot, started, finished) = (
        r.slot.map(micros),
        r.started_at.map(micros),
        r.finished_at.map(micros),
    );
    let status = r.status.as_str();
    match w.id {
        None => {
            let stmt = c
                .prepare_cached(
                    "INSERT INTO batch_runs (monitor, run_id, slot, started_at, finished_at, status, count, message, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
                )
                .await
                .map_err(map_err)?;
            Ok(c.query_one(
                &stmt,
                &[
                    &r.monitor, &r.run_id, &slot, &started, &finished, &status, &r.count,
                    &r.message, &now,
                ],
            )
            .await
            .map_err(map_err)?
            .get(0))
        }
        Some(id) => {
            let stmt = c
                .prepare_cached(
                    "UPDATE batch_runs SET monitor = $1, run_id = $2, slot = $3, started_at = $4, finished_at = $5,
                        status = $6, count = $7, message = $8, updated_at = $9
                     WHERE id = $10",
                )
                .await
                .map_err(map_err)?;
            let n = c
                .execute(
                    &stmt,
                    &[
                        &r.monitor, &r.run_id, &slot, &started, &finished, &status, &r.count,
                        &r.message, &now, &id,
                    ],
                )
                .await
                .map_err(map_err)?;
            if n == 0 {
                return Err(Error::NotFound(format!("batch run {id}")));
            }
            Ok(id)
        }
    }
}

/// Inserts or updates the instance's row and points its aliases at it; returns its id.
async fn write_instance(c: &impl GenericClient, w: &InstanceWrite, now: i64) -> Result<i64> {
    let i = &w.instance;
    let body = encode_instance(i)?;
    let (started, closed, due) = (
        micros(i.started_at),
        i.closed_at.map(micros),
        w.due_at.map(micros),
    );
    let state = i.state.as_str();
    let id = match w.id {
        None => {
            let stmt = c
                .prepare_cached(
                    "INSERT INTO wf_instances (workflow, version, key, state, started_at, updated_at, closed_at, due_at, body)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
                )
                .await
                .map_err(map_err)?;
            c.query_one(
                &stmt,
                &[
                    &i.workflow,
                    &i.version,
                    &i.key,
                    &state,
                    &started,
                    &now,
                    &closed,
                    &due,
                    &body,
                ],
            )
            .await
            .map_err(map_err)?
            .get(0)
        }
        Some(id) => {
            let stmt = c
                .prepare_cached(
                    "UPDATE wf_instances SET workflow = $1, version = $2, key = $3, state = $4, started_at = $5,
                        updated_at = $6, closed_at = $7, due_at = $8, body = $9
                     WHERE id = $10",
                )
                .await
                .map_err(map_err)?;
            let n = c
                .execute(
                    &stmt,
                    &[
                        &i.workflow,
                        &i.version,
                        &i.key,
                        &state,
                        &started,
                        &now,
                        &closed,
                        &due,
                        &body,
                        &id,
                    ],
                )
                .await
                .map_err(map_err)?;
            if n == 0 {
                return Err(Error::NotFound(format!("workflow instance {id}")));
            }
            id
        }
    };
    // Each alias once: one statement may not update the same row twice.
    let aliases: BTreeSet<(&str, &str)> = i
        .aliases
        .iter()
        .map(|a| (a.name.as_str(), a.value.as_str()))
        .collect();
    if w.relink && !aliases.is_empty() {
        let (names, values): (Vec<&str>, Vec<&str>) = aliases.into_iter().unzip();
        let stmt = c
            .prepare_cached(
                "INSERT INTO wf_aliases (workflow, name, value, instance_id)
                 SELECT $1, k.name, k.value, $4 FROM unnest($2::text[], $3::text[]) AS k (name, value)
                 ON CONFLICT (workflow, name, value) DO UPDATE SET instance_id = excluded.instance_id",
            )
            .await
            .map_err(map_err)?;
        c.execute(&stmt, &[&i.workflow, &names, &values, &id])
            .await
            .map_err(map_err)?;
    }
    Ok(id)
}

/// Moves the findings of instances merged into `id` (but those of a (step, kind) it
/// already has, which go) with their ids, so followers do not see them twice; then drops
/// their remaining aliases and their rows. Only workflow findings: a batch run's findings
/// share the `instance_id` numbers (the run's id) and are not the instances'.
async fn absorb(c: &impl GenericClient, id: i64, absorbed: &[i64]) -> Result<()> {
    // One at a time: two of them may have findings of the same (step, kind).
    for &other in absorbed.iter().filter(|&&o| o != id) {
        let stmt = c
            .prepare_cached(
                "UPDATE wf_findings SET instance_id = $1
                 WHERE subject = 'workflow' AND instance_id = $2
                   AND NOT EXISTS (SELECT 1 FROM wf_findings f
                                   WHERE f.subject = 'workflow' AND f.instance_id = $1
                                     AND f.step = wf_findings.step AND f.kind = wf_findings.kind)",
            )
            .await
            .map_err(map_err)?;
        c.execute(&stmt, &[&id, &other]).await.map_err(map_err)?;
        for sql in [
            "DELETE FROM wf_findings WHERE subject = 'workflow' AND instance_id = $1",
            "DELETE FROM wf_aliases WHERE instance_id = $1",
            "DELETE FROM wf_instances WHERE id = $1",
        ] {
            let stmt = c.prepare_cached(sql).await.map_err(map_err)?;
            c.execute(&stmt, &[&other]).await.map_err(map_err)?;
        }
    }
    Ok(())
}

/// Findings to insert, as columns.
#[derive(Default)]
struct FindingRows {
    subject: Vec<&'static str>,
    id: Vec<i64>,
    workflow: Vec<String>,
    label: Vec<String>,
    step: Vec<String>,
    kind: Vec<&'static str>,
    at: Vec<i64>,
    message: Vec<String>,
    evidence: Vec<String>,
}

impl FindingRows {
    fn push(
        &mut self,
        subject: &'static str,
        id: i64,
        workflow: &str,
        label: &str,
        findings: &[switchyard_core::instance::Finding],
    ) -> Result<()> {
        for f in findings {
            self.subject.push(subject);
            self.id.push(id);
            self.workflow.push(workflow.to_string());
            self.label.push(label.to_string());
            self.step.push(f.step.clone());
            self.kind.push(f.kind.as_str());
            self.at.push(micros(f.at));
            self.message.push(f.message.clone());
            self.evidence.push(encode_evidence(&f.evidence)?);
        }
        Ok(())
    }

    /// One statement; a (subject, instance, step, kind) already recorded is left alone.
    /// Returns how many were inserted.
    async fn insert(self, c: &impl GenericClient, now: i64) -> Result<u64> {
        if self.id.is_empty() {
            return Ok(0);
        }
        c.execute(
            "INSERT INTO wf_findings (subject, instance_id, workflow, instance_key, step, kind, at, detected_at, message, evidence)
             SELECT s, i, w, l, st, k, a, $10, m, e
             FROM unnest($1::text[], $2::int8[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int8[], $8::text[], $9::text[])
                  AS t(s, i, w, l, st, k, a, m, e)
             ON CONFLICT (subject, instance_id, step, kind) DO NOTHING",
            &[
                &self.subject,
                &self.id,
                &self.workflow,
                &self.label,
                &self.step,
                &self.kind,
                &self.at,
                &self.message,
                &self.evidence,
                &now,
            ],
        )
        .await
        .map_err(map_err)
    }
}

pub(crate) async fn versions(c: &impl GenericClient) -> Result<Vec<WorkflowVersion>> {
    c.query(
        "SELECT workflow, version, definition, created_at FROM wf_versions
         ORDER BY created_at, workflow, version",
        &[],
    )
    .await
    .map_err(map_err)?
    .iter()
    .map(|r| {
        Ok(WorkflowVersion {
            workflow: r.get(0),
            version: r.get(1),
            definition: decode_json(r.get(2))?,
            created_at: from_micros(r.get(3))?,
        })
    })
    .collect()
}

pub(crate) async fn get(c: &impl GenericClient, id: i64) -> Result<Option<InstanceRecord>> {
    c.query_opt(
        &format!("SELECT {COLS} FROM wf_instances WHERE id = $1"),
        &[&id],
    )
    .await
    .map_err(map_err)?
    .map(|r| instance_record(&r))
    .transpose()
}

pub(crate) async fn by_ids(c: &impl GenericClient, ids: &[i64]) -> Result<Vec<InstanceRecord>> {
    c.query(
        &format!("SELECT {COLS} FROM wf_instances WHERE id = ANY($1) ORDER BY id"),
        &[&ids],
    )
    .await
    .map_err(map_err)?
    .iter()
    .map(instance_record)
    .collect()
}

pub(crate) async fn list(
    c: &impl GenericClient,
    f: &InstanceFilter,
    limit: i64,
) -> Result<Vec<InstanceRecord>> {
    let states: Vec<&str> = f.states.iter().map(|s| s.as_str()).collect();
    let (dim_name, dim_value) = match &f.dimension {
        Some((n, v)) => (Some(n.as_str()), Some(v.as_str())),
        None => (None, None),
    };
    let stmt = c
        .prepare_cached(&format!(
            "SELECT {COLS} FROM wf_instances
             WHERE ($1::text IS NULL OR workflow = $1)
               AND (cardinality($2::text[]) = 0 OR state = ANY($2))
               AND ($3::text IS NULL OR (body::jsonb -> 'dimensions' ->> $3) = $4::text)
               AND ($5::bigint IS NULL OR started_at >= $5)
               AND ($6::bigint IS NULL OR started_at < $6)
               AND ($7::bigint IS NULL OR id < $7)
             ORDER BY id DESC LIMIT $8"
        ))
        .await
        .map_err(map_err)?;
    let rows = c
        .query(
            &stmt,
            &[
                &f.workflow,
                &states,
                &dim_name,
                &dim_value,
                &f.since.map(micros),
                &f.until.map(micros),
                &f.before_id,
                &limit,
            ],
        )
        .await
        .map_err(map_err)?;
    instance_records(&rows)
}

pub(crate) async fn by_key(
    c: &impl GenericClient,
    value: &str,
    workflow: Option<&str>,
    limit: i64,
) -> Result<Vec<InstanceRecord>> {
    let rows = c
        .query(
            &format!(
                "SELECT {COLS} FROM wf_instances
                 WHERE id IN (SELECT instance_id FROM wf_aliases WHERE value = $1 AND ($2::text IS NULL OR workflow = $2))
                 ORDER BY id DESC LIMIT $3"
            ),
            &[&value, &workflow, &limit],
        )
        .await
        .map_err(map_err)?;
    instance_records(&rows)
}

pub(crate) async fn findings(
    c: &impl GenericClient,
    f: &FindingFilter,
    limit: i64,
) -> Result<Vec<FindingRecord>> {
    let stmt = c
        .prepare_cached(&format!(
            "SELECT {FINDING_COLS} FROM wf_findings
             WHERE id > $1
               AND ($2::text IS NULL OR workflow = $2)
               AND ($3::text IS NULL OR kind = $3)
               AND ($4::bigint IS NULL OR instance_id = $4)
               AND ($5::bigint IS NULL OR at >= $5)
               AND subject = ANY($6::text[])
             ORDER BY id LIMIT $7"
        ))
        .await
        .map_err(map_err)?;
    c.query(
        &stmt,
        &[
            &f.after_id,
            &f.workflow,
            &f.kind.map(|k| k.as_str()),
            &f.instance_id,
            &f.since.map(micros),
            &finding_subjects(f),
            &limit,
        ],
    )
    .await
    .map_err(map_err)?
    .iter()
    .map(finding_record)
    .collect()
}

pub(crate) async fn list_runs(
    c: &impl GenericClient,
    f: &RunFilter,
    limit: i64,
) -> Result<Vec<RunRecord>> {
    let statuses: Vec<&str> = f.statuses.iter().map(|s| s.as_str()).collect();
    let stmt = c
        .prepare_cached(&format!(
            "SELECT {RUN_COLS} FROM batch_runs
             WHERE ($1::text IS NULL OR monitor = $1)
               AND (cardinality($2::text[]) = 0 OR status = ANY($2))
               AND ($3::bigint IS NULL OR slot = $3)
               AND ($4::text IS NULL OR run_id = $4)
               AND ($5::bigint IS NULL OR started_at >= $5)
               AND ($6::bigint IS NULL OR id < $6)
             ORDER BY id DESC LIMIT $7"
        ))
        .await
        .map_err(map_err)?;
    c.query(
        &stmt,
        &[
            &f.monitor,
            &statuses,
            &f.slot.map(micros),
            &f.run_id,
            &f.started_since.map(micros),
            &f.before_id,
            &limit,
        ],
    )
    .await
    .map_err(map_err)?
    .iter()
    .map(run_record)
    .collect()
}

pub(crate) async fn get_run(c: &impl GenericClient, id: i64) -> Result<Option<RunRecord>> {
    c.query_opt(
        &format!("SELECT {RUN_COLS} FROM batch_runs WHERE id = $1"),
        &[&id],
    )
    .await
    .map_err(map_err)?
    .map(|r| run_record(&r))
    .transpose()
}

pub(crate) async fn counts(c: &impl GenericClient) -> Result<Vec<InstanceCount>> {
    c.query(
        "SELECT workflow, state, COUNT(*) FROM wf_instances
         GROUP BY workflow, state ORDER BY workflow, state",
        &[],
    )
    .await
    .map_err(map_err)?
    .iter()
    .map(|r| {
        Ok(InstanceCount {
            workflow: r.get(0),
            state: parse_state(r.get(1))?,
            count: r.get(2),
        })
    })
    .collect()
}

pub(crate) async fn closed_counts(
    c: &impl GenericClient,
    workflow: &str,
    since: DateTime<Utc>,
    bucket_seconds: i64,
) -> Result<Vec<ClosedCount>> {
    let width = bucket_seconds.max(1) * 1_000_000;
    c.query(&closed_counts_sql(), &[&workflow, &micros(since), &width])
        .await
        .map_err(map_err)?
        .iter()
        .map(|r| {
            Ok(ClosedCount {
                bucket: from_micros(r.get(0))?,
                state: parse_state(r.get(1))?,
                cycle_bin: r.get::<_, i32>(2) as usize,
                count: r.get(3),
            })
        })
        .collect()
}

/// Deletes up to `limit` instances closed before `closed_before`, oldest closed first,
/// with their aliases (findings stay); one statement.
pub(crate) async fn archive(
    c: &impl GenericClient,
    closed_before: DateTime<Utc>,
    limit: i64,
) -> Result<u64> {
    let row = c
        .query_one(
            "WITH gone AS (
                DELETE FROM wf_instances WHERE id IN (
                    SELECT id FROM wf_instances WHERE closed_at < $1 ORDER BY closed_at, id LIMIT $2)
                RETURNING id),
             aliases AS (
                DELETE FROM wf_aliases WHERE instance_id IN (SELECT id FROM gone))
             SELECT COUNT(*) FROM gone",
            &[&micros(closed_before), &limit],
        )
        .await
        .map_err(map_err)?;
    Ok(row.get::<_, i64>(0) as u64)
}
