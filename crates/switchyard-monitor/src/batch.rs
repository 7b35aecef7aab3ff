//! Batch monitors, run by the workflow monitor's owner: heartbeats (events of type
//! `switchyard.heartbeat.start|finish|fail` in the log, whether posted to
//! `/v1/heartbeats/{monitor}` or sent as CloudEvents) become runs; the schedule, the
//! maximum duration and the run windows are timers. Each heartbeat is committed on its own
//! with the log checkpoint just after it, so the next one sees its run.

use crate::{Error, Monitor, Owned};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use switchyard_core::batch::{BatchMonitor, BatchRun, RunStatus};
use switchyard_core::instance::{Evidence, Finding, FindingKind};
use switchyard_store::{RunFilter, RunRecord, RunWrite, StoredEvent};

/// The CloudEvents type prefix of heartbeats.
pub const HEARTBEAT_TYPE: &str = "switchyard.heartbeat.";

/// A heartbeat's data.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    pub monitor: String,
    #[serde(default)]
    pub run_id: Option<String>,
    #[serde(default)]
    pub count: Option<i64>,
    #[serde(default)]
    pub message: Option<String>,
}

/// What a heartbeat says, from its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beat {
    Start,
    Finish,
    Fail,
}

impl Beat {
    pub fn from_type(ty: &str) -> Option<Beat> {
        match ty.strip_prefix(HEARTBEAT_TYPE)? {
            "start" => Some(Beat::Start),
            "finish" => Some(Beat::Finish),
            "fail" => Some(Beat::Fail),
            _ => None,
        }
    }
}

pub fn is_heartbeat(ev: &StoredEvent) -> bool {
    ev.event.ty.starts_with(HEARTBEAT_TYPE)
}

fn finding(
    kind: FindingKind,
    at: DateTime<Utc>,
    message: String,
    ev: Option<&StoredEvent>,
) -> Finding {
    Finding {
        step: "run".into(),
        kind,
        at,
        message,
        evidence: ev
            .map(|e| Evidence {
                seq: e.seq,
                source: e.event.source.clone(),
                id: e.event.id.clone(),
            })
            .into_iter()
            .collect(),
    }
}

/// The place of a run that did not come.
fn missed(m: &BatchMonitor, slot: DateTime<Utc>) -> BatchRun {
    BatchRun {
        monitor: m.name.clone(),
        run_id: None,
        slot: Some(slot),
        started_at: None,
        finished_at: None,
        status: RunStatus::Missed,
        count: None,
        message: None,
    }
}

fn fmt_time(m: &BatchMonitor, t: DateTime<Utc>) -> String {
    t.with_timezone(&m.timezone)
        .format("%Y-%m-%d %H:%M %Z")
        .to_string()
}

impl Monitor {
    fn run_filter(&self, monitor: &str) -> RunFilter {
        RunFilter {
            monitor: Some(monitor.to_string()),
            limit: 1,
            ..Default::default()
        }
    }

    /// Applies one heartbeat event; commits its run with the checkpoint after it.
    pub(crate) async fn apply_heartbeat(
        &self,
        o: &mut Owned,
        ev: &StoredEvent,
    ) -> Result<(), Error> {
        let now = self.clock.now();
        let writes = match self.heartbeat_runs(ev).await {
            Ok(w) => w,
            Err(Some(e)) => return Err(e),
            Err(None) => Vec::new(), // not a heartbeat of a known monitor: nothing to do
        };
        o.batch_next = None;
        self.commit_runs(o, writes, ev.position, now).await
    }

    /// The run writes of one heartbeat; `Err(None)` when it concerns no known monitor.
    async fn heartbeat_runs(&self, ev: &StoredEvent) -> Result<Vec<RunWrite>, Option<Error>> {
        let beat = Beat::from_type(&ev.event.ty).ok_or(None)?;
        let data = match &ev.event.data {
            Some(switchyard_core::Data::Json(v)) => v.clone(),
            _ => return Err(None),
        };
        let hb: Heartbeat = serde_json::from_value(data).map_err(|_| None)?;
        let m = self.batch.get(&hb.monitor).ok_or(None)?;
        let at = crate::occurred_at(ev);
        let store = &self.store;
        // The run this heartbeat is about.
        let by_id = match &hb.run_id {
            Some(id) => store
                .list_runs(&RunFilter {
                    run_id: Some(id.clone()),
                    ..self.run_filter(&m.name)
                })
                .await
                .map_err(|e| Some(e.into()))?
                .pop(),
            None => None,
        };
        let mut findings = Vec::new();
        let existing = match (beat, by_id) {
            (_, Some(r)) => Some(r),
            (Beat::Start, None) => None,
            (_, None) => store
                .list_runs(&RunFilter {
                    statuses: vec![RunStatus::Running],
                    ..self.run_filter(&m.name)
                })
                .await
                .map_err(|e| Some(e.into()))?
                .pop(),
        };
        let (id, mut run) = match existing {
            Some(RunRecord { id, run, .. }) => (Some(id), run),
            None => {
                // A new start (or a finish that never reported its start).
                let slot = m.slot_of(at);
                let missed = match slot {
                    Some(s) => store
                        .list_runs(&RunFilter {
                            slot: Some(s),
                            ..self.run_filter(&m.name)
                        })
                        .await
                        .map_err(|e| Some(e.into()))?
                        .pop()
                        .filter(|r| r.run.status == RunStatus::Missed),
                    None => None,
                };
                if let Some(s) = slot
                    && at > s + m.grace
                {
                    findings.push(finding(
                        FindingKind::LateRun,
                        at,
                        format!(
                            "{}: the run due at {} started at {}, {} min late (grace {} min)",
                            m.title,
                            fmt_time(m, s),
                            fmt_time(m, at),
                            (at - s).num_minutes(),
                            m.grace.num_minutes()
                        ),
                        Some(ev),
                    ));
                }
                let run = BatchRun {
                    monitor: m.name.clone(),
                    run_id: hb.run_id.clone(),
                    slot,
                    started_at: Some(at),
                    finished_at: None,
                    status: RunStatus::Running,
                    count: None,
                    message: None,
                };
                (missed.map(|r| r.id), run)
            }
        };
        if run.status == RunStatus::Missed {
            run.status = RunStatus::Running;
            run.started_at = Some(at);
        }
        if run.run_id.is_none() {
            run.run_id = hb.run_id.clone();
        }
        if beat != Beat::Start {
            run.finished_at = Some(at);
            run.count = hb.count.or(run.count);
            run.message = hb.message.clone().or(run.message);
            if beat == Beat::Fail {
                run.status = RunStatus::Failed;
                findings.push(finding(
                    FindingKind::RunFailed,
                    at,
                    format!(
                        "{}: the run {} failed{}",
                        m.title,
                        run.label(),
                        hb.message
                            .as_deref()
                            .map(|msg| format!(": {msg}"))
                            .unwrap_or_default()
                    ),
                    Some(ev),
                ));
            } else {
                run.status = RunStatus::Succeeded;
                if let Some(count) = run.count {
                    let recent: Vec<i64> = store
                        .list_runs(&RunFilter {
                            statuses: vec![RunStatus::Succeeded],
                            limit: 50,
                            ..self.run_filter(&m.name)
                        })
                        .await
                        .map_err(|e| Some(e.into()))?
                        .into_iter()
                        .filter(|r| Some(r.id) != id)
                        .filter_map(|r| r.run.count)
                        .collect();
                    if let Some((low, high)) = m.count_range(&recent)
                        && !(low..=high).contains(&count)
                    {
                        findings.push(finding(
                            FindingKind::CountOutOfRange,
                            at,
                            format!(
                                "{}: the run {} succeeded with {count} records; expected {low} to {high}",
                                m.title,
                                run.label()
                            ),
                            Some(ev),
                        ));
                    }
                }
            }
        }
        Ok(vec![RunWrite {
            id,
            subject: switchyard_store::SUBJECT_BATCH,
            run,
            findings,
        }])
    }

    async fn commit_runs(
        &self,
        o: &mut Owned,
        runs: Vec<RunWrite>,
        position: switchyard_store::LogPosition,
        now: DateTime<Utc>,
    ) -> Result<(), Error> {
        self.commit_with(o, Vec::new(), runs, position, now, false)
            .await
    }

    /// Fires the batch monitors' timers due by `now`: missed runs, runs that never
    /// finished, windows with too few runs. Returns whether anything was written.
    pub(crate) async fn batch_timers(
        &self,
        o: &mut Owned,
        now: DateTime<Utc>,
    ) -> Result<bool, Error> {
        if o.batch_next.is_some_and(|t| t > now) {
            return Ok(false);
        }
        let mut runs = Vec::new();
        let mut next: Option<DateTime<Utc>> = None;
        let mut soonest = |t: DateTime<Utc>| next = Some(next.map_or(t, |n| n.min(t)));
        for m in &self.batch.list {
            let checked = *o.batch_checked.entry(m.name.clone()).or_insert(now);
            // scheduled runs that did not start in time
            if m.schedule.is_some() {
                for slot in m.slots(checked, now - m.grace) {
                    let started = self
                        .store
                        .list_runs(&RunFilter {
                            slot: Some(slot),
                            ..self.run_filter(&m.name)
                        })
                        .await?;
                    if started.is_empty() {
                        let run = missed(m, slot);
                        let at = slot + m.grace;
                        runs.push(RunWrite {
                            subject: switchyard_store::SUBJECT_BATCH,
                            id: None,
                            findings: vec![finding(
                                FindingKind::MissedRun,
                                at,
                                format!(
                                    "{}: the run due at {} did not start within {} min",
                                    m.title,
                                    fmt_time(m, slot),
                                    m.grace.num_minutes()
                                ),
                                None,
                            )],
                            run,
                        });
                    }
                    o.batch_checked.insert(m.name.clone(), slot);
                    o.batch_dirty = true;
                }
                let checked = o.batch_checked[&m.name];
                if let Some(s) = m.next_slot(checked.max(now - m.grace)) {
                    soonest(s + m.grace);
                }
            }
            // windows with too few runs
            if let Some((len, min)) = m.window {
                let mut end = m.window_of(checked).map(|w| w.1);
                while let Some(e) = end.filter(|e| *e <= now) {
                    let started = self
                        .store
                        .list_runs(&RunFilter {
                            started_since: Some(e - len),
                            limit: 10_000,
                            ..self.run_filter(&m.name)
                        })
                        .await?
                        .into_iter()
                        .filter(|r| r.run.started_at.is_some_and(|t| t < e))
                        .count();
                    if started < min as usize {
                        runs.push(RunWrite {
                            subject: switchyard_store::SUBJECT_BATCH,
                            id: None,
                            findings: vec![finding(
                                FindingKind::MissedRun,
                                e,
                                format!(
                                    "{}: {started} run(s) started between {} and {}; expected at least {min}",
                                    m.title,
                                    fmt_time(m, e - len),
                                    fmt_time(m, e)
                                ),
                                None,
                            )],
                            run: missed(m, e),
                        });
                    }
                    o.batch_checked.insert(m.name.clone(), e);
                    o.batch_dirty = true;
                    end = Some(e + len);
                }
                if let Some(e) = end {
                    soonest(e);
                }
            }
            // started and never finished
            if let Some(max) = m.max_duration {
                let running = self
                    .store
                    .list_runs(&RunFilter {
                        statuses: vec![RunStatus::Running],
                        limit: 1000,
                        ..self.run_filter(&m.name)
                    })
                    .await?;
                for r in running {
                    let Some(started) = r.run.started_at else {
                        continue;
                    };
                    if o.never_finished.contains(&r.id) {
                        continue;
                    }
                    let at = started + max;
                    if at > now {
                        soonest(at);
                        continue;
                    }
                    let label = r.run.label();
                    o.never_finished.insert(r.id);
                    runs.push(RunWrite {
                        subject: switchyard_store::SUBJECT_BATCH,
                        id: Some(r.id),
                        findings: vec![finding(
                            FindingKind::NeverFinished,
                            at,
                            format!(
                                "{}: the run {label} started at {} and has not finished after {} min",
                                m.title,
                                fmt_time(m, started),
                                max.num_minutes()
                            ),
                            None,
                        )],
                        run: r.run,
                    });
                }
            }
        }
        let wrote = !runs.is_empty();
        if wrote || o.batch_dirty {
            let position = o.position;
            self.commit_with(o, Vec::new(), runs, position, now, false)
                .await?;
        }
        o.batch_next = next;
        Ok(wrote)
    }
}
