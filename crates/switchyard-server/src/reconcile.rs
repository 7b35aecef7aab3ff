//! Reconciliations: on each scheduled instant, read Odoo's side (`search_read` through the
//! connection's client) and the other system's (a GET of a JSON document), compare them by
//! key within the tolerance, and record the run with its summary and one finding per
//! difference, with both values.
//!
//! One node runs each reconciliation: the holder of lease `reconcile:<name>`. The run, its
//! findings and the instant it was for are one `monitor_commit` fenced by that lease, so a
//! node that lost the lease records nothing. A reconciliation compares a snapshot: after
//! downtime it runs once for the latest missed instant, not once per missed instant.

use crate::probes::client_config;
use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};
use std::sync::Arc;
use switchyard_core::SharedClock;
use switchyard_core::batch::{BatchRun, RunStatus};
use switchyard_core::config::Config;
use switchyard_core::instance::{Finding, FindingKind};
use switchyard_core::reconcile::{Difference, Reconciliation, Reconciliations, Summary};
use switchyard_odoo::{CallOptions, OdooClient, SearchRead};
use switchyard_store::{MonitorCommit, RunWrite, SUBJECT_RECONCILIATION, SharedStore};
use tokio_util::sync::CancellationToken;

const LEASE_TTL_SECONDS: i64 = 120;

struct Job {
    rec: Reconciliation,
    odoo: OdooClient,
}

/// Runs every configured reconciliation on its schedule.
pub struct Reconciler {
    store: SharedStore,
    clock: SharedClock,
    node: String,
    jobs: Vec<Job>,
    http: reqwest::Client,
    /// Real time between looks at the schedules.
    pub tick: std::time::Duration,
}

impl Reconciler {
    pub fn from_config(
        config: &Config,
        store: SharedStore,
        clock: SharedClock,
        node: &str,
    ) -> Result<Reconciler, String> {
        let recs: Reconciliations = config
            .compiled_reconciliations()
            .map_err(|p| format!("reconciliations: {p:?}"))?;
        let mut jobs = Vec::new();
        for rec in recs.list {
            let conn = config
                .odoo
                .iter()
                .find(|c| c.name == rec.odoo.connection)
                .ok_or_else(|| format!("no [[odoo]] \"{}\"", rec.odoo.connection))?;
            let odoo = OdooClient::new(client_config(conn)?)
                .map_err(|e| format!("odoo \"{}\": {e}", conn.name))?;
            jobs.push(Job { rec, odoo });
        }
        Ok(Reconciler {
            store,
            clock,
            node: node.to_string(),
            jobs,
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .build()
                .map_err(|e| e.to_string())?,
            tick: std::time::Duration::from_secs(1),
        })
    }

    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        if self.jobs.is_empty() {
            return;
        }
        loop {
            for job in &self.jobs {
                if cancel.is_cancelled() {
                    return;
                }
                if let Err(e) = self.job(job).await {
                    tracing::warn!(reconciliation = %job.rec.name, error = %e, "reconciliation step failed");
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(self.tick) => {}
            }
        }
    }

    /// Runs `job` if this node holds its lease and an instant of its schedule has come.
    async fn job(&self, job: &Job) -> Result<(), switchyard_store::Error> {
        let rec = &job.rec;
        let name = format!("reconcile:{}", rec.name);
        let Some(lease) = self
            .store
            .acquire_lease(
                &name,
                &self.node,
                self.clock.real_now(),
                Duration::seconds(LEASE_TTL_SECONDS),
            )
            .await?
        else {
            return Ok(());
        };
        let now = self.clock.now();
        let last: Option<DateTime<Utc>> = self
            .store
            .lease_state(&name)
            .await?
            .and_then(|s| s.get("last")?.as_str()?.parse().ok());
        let Some(last) = last else {
            // First time: the schedule counts from now.
            return self
                .store
                .save_lease_state(&lease, json!({ "last": now.to_rfc3339() }))
                .await;
        };
        let Some(slot) = rec.slots(last, now).last().copied() else {
            return Ok(());
        };
        let started = self.clock.now();
        let outcome = self.compare(job).await;
        let finished = self.clock.now();
        let (status, summary, findings) = match outcome {
            Ok((summary, diffs)) => {
                let findings = diffs.iter().map(|d| finding(rec, d, finished)).collect();
                (RunStatus::Succeeded, summary, findings)
            }
            Err(e) => (
                RunStatus::Failed,
                Summary::default(),
                vec![Finding {
                    step: "run".into(),
                    kind: FindingKind::RunFailed,
                    at: finished,
                    message: format!("{}: the reconciliation could not run: {e}", rec.title),
                    evidence: Vec::new(),
                }],
            ),
        };
        let failed = status == RunStatus::Failed;
        let message = if failed {
            findings.first().map(|f| f.message.clone())
        } else {
            Some(json!(summary).to_string())
        };
        metrics::counter!("switchyard_reconciliation_runs_total", "reconciliation" => rec.name.clone(), "status" => status.as_str())
            .increment(1);
        metrics::gauge!("switchyard_reconciliation_differences", "reconciliation" => rec.name.clone())
            .set((summary.mismatched + summary.missing_in_odoo + summary.missing_in_other) as f64);
        self.store
            .monitor_commit(MonitorCommit {
                lease,
                checkpoint: Some(json!({ "last": slot.to_rfc3339() })),
                versions: Vec::new(),
                writes: Vec::new(),
                runs: vec![RunWrite {
                    id: None,
                    subject: SUBJECT_RECONCILIATION,
                    run: BatchRun {
                        monitor: rec.name.clone(),
                        run_id: None,
                        slot: Some(slot),
                        started_at: Some(started),
                        finished_at: Some(finished),
                        status,
                        count: Some(summary.compared as i64),
                        message,
                    },
                    findings,
                }],
                now: finished,
                findings_only: false,
            })
            .await?;
        Ok(())
    }

    /// Reads both sides and compares them.
    async fn compare(&self, job: &Job) -> Result<(Summary, Vec<Difference>), String> {
        let rec = &job.rec;
        let fields: Vec<&str> = rec.odoo.fields.iter().map(String::as_str).collect();
        let rows = job
            .odoo
            .search_read(
                &rec.odoo.model,
                &SearchRead {
                    domain: rec.odoo.domain.clone().unwrap_or(Value::Array(Vec::new())),
                    fields: &fields,
                    ..Default::default()
                },
                &CallOptions::default(),
            )
            .await
            .map_err(|e| format!("Odoo: {e}"))?;
        let rows: Vec<Value> = rows.into_iter().map(Value::Object).collect();
        let (odoo, odoo_bad) = rec.side(&rows, &rec.odoo_key, &rec.odoo_value);
        let mut req = self.http.get(&rec.other.url);
        for (k, v) in &rec.other.headers {
            req = req.header(k, v);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("{}: {e}", rec.other_name))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("{}: HTTP {status}", rec.other_name));
        }
        let doc: Value = resp
            .json()
            .await
            .map_err(|e| format!("{}: not JSON: {e}", rec.other_name))?;
        let records = rec
            .other_records(&doc)
            .map_err(|e| format!("{}: items: {e}", rec.other_name))?;
        let (other, other_bad) = rec.side(&records, &rec.other_key, &rec.other_value);
        let (mut summary, diffs) = rec.compare(&odoo, &other);
        summary.unreadable = odoo_bad + other_bad;
        Ok((summary, diffs))
    }
}

fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// A difference in words, with both values.
fn finding(rec: &Reconciliation, d: &Difference, at: DateTime<Utc>) -> Finding {
    let (key, kind, message) = match d {
        Difference::Mismatch { key, odoo, other } => (
            key,
            FindingKind::Mismatch,
            format!(
                "{}: {key}: Odoo {}, {} {} (tolerance {})",
                rec.title,
                number(*odoo),
                rec.other_name,
                number(*other),
                number(rec.tolerance)
            ),
        ),
        Difference::MissingInOdoo { key, other } => (
            key,
            FindingKind::MissingInOdoo,
            format!(
                "{}: {key}: not in Odoo, {} {}",
                rec.title,
                rec.other_name,
                number(*other)
            ),
        ),
        Difference::MissingInOther { key, odoo } => (
            key,
            FindingKind::MissingInOther,
            format!(
                "{}: {key}: Odoo {}, not in {}",
                rec.title,
                number(*odoo),
                rec.other_name
            ),
        ),
    };
    Finding {
        step: key.clone(),
        kind,
        at,
        message,
        evidence: Vec::new(),
    }
}
