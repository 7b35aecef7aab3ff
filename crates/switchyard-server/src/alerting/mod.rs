//! The alerting service: the holder of lease `alerts` folds new findings into alerts,
//! evaluates measure and delivery rules, clears what no longer holds, applies silences,
//! maintenance windows and inhibition, groups alerts per route and sends each group's
//! notifications through the delivery engine (critical lane), as events of source
//! [`ALERT_SOURCE`] that the receivers' notifier flows carry. State changes and the
//! checkpoint are one fenced commit per pass; notification events are appended first,
//! with ids fixed by the group and its sequence number, so a pass repeated after a crash
//! sends nothing twice.

pub mod state;

use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};
use state::{Checkpoint, Observation, State};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use switchyard_core::SharedClock;
use switchyard_core::alerts::{
    ALERT_SOURCE, Alerting, Cause, DeliveryOutcome, Labels, Measure, NOTIFICATION_TYPE,
    NotifierKind, PUSH_TYPE, RuleKind, Severity, delivery_cause,
};
use switchyard_core::config::Config;
use switchyard_core::instance::{FindingKind, InstanceState};
use switchyard_core::workflows::Workflows;
use switchyard_store::{
    AlertFilter, AlertRecord, AlertState, DeliveryFilter, DeliveryState, FindingFilter,
    FindingRecord, IncidentFilter, IncidentStatus, NewEvent, RunFilter, SUBJECT_BATCH,
    SUBJECT_RECONCILIATION, SUBJECT_WORKFLOW, SharedStore,
};
use tokio_util::sync::CancellationToken;

pub const LEASE: &str = "alerts";
const LEASE_TTL_SECONDS: i64 = 30;
const FINDING_PAGE: usize = 1000;

/// The alerting service of one node (it works only while holding the lease).
pub struct AlertService {
    store: SharedStore,
    clock: SharedClock,
    engine: switchyard_deliver::Engine,
    cfg: Arc<Alerting>,
    workflows: Arc<Workflows>,
    /// Destinations of type odoo (their failures are Odoo's causes).
    odoo_destinations: HashSet<String>,
    /// Probe targets that are Odoo connections.
    odoo_targets: HashSet<String>,
    node: String,
    /// Real time between passes at most.
    pub tick: std::time::Duration,
    state: tokio::sync::Mutex<Option<(i64, State)>>,
    /// Woken when a manual clock moves.
    wake: Arc<tokio::sync::Notify>,
}

impl AlertService {
    pub fn new(
        config: &Config,
        store: SharedStore,
        clock: SharedClock,
        engine: switchyard_deliver::Engine,
        workflows: Arc<Workflows>,
        node: &str,
    ) -> Result<AlertService, String> {
        let cfg = Alerting::compile(config).map_err(|p| format!("alerting: {p:?}"))?;
        let wake = Arc::new(tokio::sync::Notify::new());
        let w = wake.clone();
        clock.on_change(Arc::new(move || w.notify_one()));
        Ok(AlertService {
            wake,
            store,
            clock,
            engine,
            cfg: Arc::new(cfg),
            workflows,
            odoo_destinations: config
                .destinations
                .iter()
                .filter(|d| d.kind == switchyard_core::flows::DestinationKind::Odoo)
                .map(|d| d.name.clone())
                .collect(),
            odoo_targets: config.odoo.iter().map(|o| o.name.clone()).collect(),
            node: node.to_string(),
            tick: std::time::Duration::from_millis(200),
            state: tokio::sync::Mutex::new(None),
        })
    }

    pub fn alerting(&self) -> &Arc<Alerting> {
        &self.cfg
    }

    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        if self.cfg.rules.is_empty() {
            return;
        }
        loop {
            if let Err(e) = self.pass().await {
                tracing::warn!(error = %e, "alerting pass failed");
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(self.tick) => {}
                _ = self.wake.notified() => {}
            }
        }
    }

    /// One pass: take or keep the lease, fold, evaluate, flush, commit. Public for tests.
    pub async fn pass(&self) -> Result<(), switchyard_store::Error> {
        let Some(lease) = self
            .store
            .acquire_lease(
                LEASE,
                &self.node,
                self.clock.real_now(),
                Duration::seconds(LEASE_TTL_SECONDS),
            )
            .await?
        else {
            *self.state.lock().await = None;
            return Ok(());
        };
        let mut guard = self.state.lock().await;
        if guard
            .as_ref()
            .is_none_or(|(epoch, _)| *epoch != lease.epoch)
        {
            *guard = Some((lease.epoch, self.load().await?));
        }
        let (_, st) = guard.as_mut().expect("loaded");
        let now = self.clock.now();

        // Findings since the cursor.
        loop {
            let page = self
                .store
                .list_findings(&FindingFilter {
                    after_id: st.cp.finding_after,
                    limit: FINDING_PAGE,
                    ..Default::default()
                })
                .await?;
            let Some(last) = page.last().map(|f| f.id) else {
                break;
            };
            self.fold_findings(st, &page, now).await?;
            st.cp.finding_after = last;
            if page.len() < FINDING_PAGE {
                break;
            }
        }

        // Hand changes to incidents.
        let open = self
            .store
            .list_incidents(&IncidentFilter {
                status: vec![IncidentStatus::Open, IncidentStatus::Acknowledged],
                limit: 10_000,
                ..Default::default()
            })
            .await?;
        let open_ids: HashSet<i64> = open.iter().map(|i| i.id).collect();
        let mut changed = Vec::new();
        for i in open {
            if st.incidents.get(&i.id) != Some(&i) {
                changed.push(i);
            }
        }
        let vanished: Vec<i64> = st
            .incidents
            .values()
            .filter(|i| i.status != IncidentStatus::Resolved && !open_ids.contains(&i.id))
            .map(|i| i.id)
            .collect();
        for id in vanished {
            if let Some(i) = self.store.get_incident(id).await? {
                changed.push(i);
            }
        }
        for i in changed {
            st.incident_changed(i, now, clears_on_ack);
        }

        let due_eval = st.cp.last_eval.is_none_or(|t| {
            now >= t + Duration::seconds(self.cfg.settings.evaluation_interval_seconds as i64)
        });
        if due_eval {
            self.evaluate(st, now).await?;
            self.clear_findings(st, now).await?;
            st.cp.last_eval = Some(now);
        }

        let silences = self.store.list_silences(Some(now)).await?;
        st.suppress(&silences, now);
        st.group(now);
        let outgoing = st.flush(now);
        st.prune(now, Duration::hours(1));
        for o in &outgoing {
            self.emit(
                &o.id,
                NOTIFICATION_TYPE,
                serde_json::to_value(&o.notification).expect("json"),
                now,
            )
            .await?;
            metrics::counter!("switchyard_alert_notifications_total", "receiver" => o.notification.receiver.clone())
                .increment(1);
        }
        self.push(st, now).await?;
        let commit = st.take_commit(lease);
        let firing = st
            .alerts
            .values()
            .filter(|a| a.state == AlertState::Firing)
            .count();
        metrics::gauge!("switchyard_alerts_firing").set(firing as f64);
        if let Err(e) = self.store.alerts_commit(commit).await {
            // Whatever this pass changed is reloaded from the store next time.
            *guard = None;
            return Err(e);
        }
        Ok(())
    }

    async fn load(&self) -> Result<State, switchyard_store::Error> {
        let cp: Option<Checkpoint> = self
            .store
            .lease_state(LEASE)
            .await?
            .and_then(|v| serde_json::from_value(v).ok());
        let alerts = self
            .store
            .list_alerts(&AlertFilter {
                state: Some(AlertState::Firing),
                limit: 100_000,
                ..Default::default()
            })
            .await?;
        let groups = self.store.alert_groups().await?;
        // Resolved alerts a group still holds (their resolution not yet told).
        let held: HashSet<String> = groups
            .iter()
            .filter_map(|g| g.body.get("members")?.as_array().cloned())
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        let mut alerts = alerts;
        let known: HashSet<String> = alerts.iter().map(|a| a.fingerprint.clone()).collect();
        for fp in held.difference(&known) {
            if let Some(a) = self.store.get_alert(fp).await? {
                alerts.push(a);
            }
        }
        let incidents = self
            .store
            .list_incidents(&IncidentFilter {
                status: vec![IncidentStatus::Open, IncidentStatus::Acknowledged],
                limit: 10_000,
                ..Default::default()
            })
            .await?;
        Ok(State::restore(
            self.cfg.clone(),
            cp,
            alerts,
            groups,
            incidents,
        ))
    }

    /// Appends one event of the alerting source, routed to the notifier flows.
    async fn emit(
        &self,
        id: &str,
        ty: &str,
        data: Value,
        now: DateTime<Utc>,
    ) -> Result<(), switchyard_store::Error> {
        let envelope = json!({
            "specversion": "1.0",
            "id": id,
            "source": ALERT_SOURCE,
            "type": ty,
            "time": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "datacontenttype": "application/json",
            "data": data,
        });
        let event = switchyard_core::CloudEvent::from_json(envelope)
            .map_err(|v| switchyard_store::Error::Corrupt(format!("notification event: {v:?}")))?
            .event;
        let routing = self.engine.route(&event);
        let received_at = self.clock.now();
        let mut results = self
            .store
            .append_routed(vec![NewEvent {
                event: event.clone(),
                received_at,
                keys: Vec::new(),
                deliveries: routing.deliveries.clone(),
            }])
            .await?;
        if let Some((switchyard_store::Appended::Stored { seq }, created)) = results.pop() {
            self.engine
                .handoff(&event, seq, received_at, routing, created);
        }
        Ok(())
    }

    /// Every `resend_seconds`, pushes the active alerts (and those resolved since the last
    /// push, with `endsAt`) to each Alertmanager notifier of the receivers they route to.
    async fn push(
        &self,
        st: &mut State,
        now: DateTime<Utc>,
    ) -> Result<(), switchyard_store::Error> {
        let due = st
            .cp
            .last_push
            .is_none_or(|t| now >= t + Duration::seconds(self.cfg.settings.resend_seconds as i64));
        if !due {
            return Ok(());
        }
        let targets: Vec<(String, usize)> = self
            .cfg
            .receivers
            .iter()
            .flat_map(|r| {
                r.notify
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| n.kind == NotifierKind::Alertmanager)
                    .map(|(i, _)| (r.name.clone(), i))
                    .collect::<Vec<_>>()
            })
            .collect();
        if targets.is_empty() {
            return Ok(());
        }
        let since = st.cp.last_push;
        let base = self
            .cfg
            .settings
            .external_url
            .trim_end_matches('/')
            .to_string();
        let mut per: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        let mut fps: Vec<&String> = st.alerts.keys().collect();
        fps.sort();
        for fp in fps {
            let a = &st.alerts[fp];
            let include = match a.state {
                AlertState::Firing => true,
                AlertState::Resolved => a.ends_at.zip(since).is_some_and(|(e, s)| e > s),
            };
            if !include {
                continue;
            }
            for r in self.cfg.routes_for(&a.labels) {
                per.entry(r.receiver.clone())
                    .or_default()
                    .push(serde_json::to_value(state::notified(a, &base)).expect("json"));
            }
        }
        st.cp.push_seq += 1;
        for (receiver, i) in targets {
            let alerts = per.get(&receiver).cloned().unwrap_or_default();
            if alerts.is_empty() {
                continue;
            }
            let id = format!("push-{receiver}-{i}-{}", st.cp.push_seq);
            self.emit(
                &id,
                PUSH_TYPE,
                json!({"receiver": receiver, "notifier": i, "alerts": alerts}),
                now,
            )
            .await?;
        }
        st.cp.last_push = Some(now);
        Ok(())
    }

    /// Folds a page of findings into alerts.
    async fn fold_findings(
        &self,
        st: &mut State,
        page: &[FindingRecord],
        now: DateTime<Utc>,
    ) -> Result<(), switchyard_store::Error> {
        let ids: Vec<i64> = page
            .iter()
            .filter(|f| f.subject == SUBJECT_WORKFLOW)
            .map(|f| f.instance_id)
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let instances: HashMap<i64, switchyard_store::InstanceRecord> = if ids.is_empty() {
            HashMap::new()
        } else {
            self.store
                .instances_by_ids(ids)
                .await?
                .into_iter()
                .map(|i| (i.id, i))
                .collect()
        };
        let mut causes: HashMap<i64, Option<(Cause, String)>> = HashMap::new();
        for f in page {
            let rules: Vec<&switchyard_core::alerts::AlertRule> = self
                .cfg
                .rules
                .iter()
                .filter(|r| r.covers_finding(f.finding.kind, &f.workflow))
                .collect();
            if rules.is_empty() {
                continue;
            }
            let kind = f.finding.kind;
            let mut labels = Labels::new();
            let mut severity = Severity::Warning;
            let mut technical: Option<(Cause, String)> = None;
            let base_cause = match f.subject.as_str() {
                SUBJECT_BATCH => {
                    labels.insert("monitor".into(), f.workflow.clone());
                    Cause::BatchFailure
                }
                SUBJECT_RECONCILIATION => {
                    labels.insert("reconciliation".into(), f.workflow.clone());
                    if kind == FindingKind::RunFailed {
                        Cause::BatchFailure
                    } else {
                        Cause::DataMismatch
                    }
                }
                _ => {
                    labels.insert("workflow".into(), f.workflow.clone());
                    labels.insert("step".into(), f.finding.step.clone());
                    if let Some(w) = self.workflows.get(&f.workflow)
                        && let Some(s) = self.cfg.settings.severity.of(w.criticality.as_str())
                    {
                        severity = s;
                    }
                    if let Some(i) = instances.get(&f.instance_id) {
                        for (k, v) in &i.instance.dimensions {
                            labels.insert(k.clone(), v.clone());
                        }
                    }
                    if matches!(
                        kind,
                        FindingKind::Breach
                            | FindingKind::AtRisk
                            | FindingKind::Stalled
                            | FindingKind::DeliveryFailed
                    ) {
                        if let std::collections::hash_map::Entry::Vacant(slot) =
                            causes.entry(f.instance_id)
                        {
                            let c = self
                                .technical_cause(
                                    instances.get(&f.instance_id),
                                    &f.finding.step,
                                    now,
                                )
                                .await?;
                            slot.insert(c);
                        }
                        technical = causes[&f.instance_id].clone();
                    }
                    Cause::BusinessProcess
                }
            };
            let cause = technical.as_ref().map(|(c, _)| *c).unwrap_or(base_cause);
            let opens = clears_with_instance(kind) && f.subject == SUBJECT_WORKFLOW;
            let mut evidence = json!({
                "instances": [f.instance_key],
                "events": f.finding.evidence.iter().map(|e| format!("{} {}", e.source, e.id)).collect::<Vec<_>>(),
                "kinds": [kind.as_str()],
                "message": f.finding.message,
            });
            if opens {
                evidence["open"] = json!([f.instance_id]);
            }
            if f.subject != SUBJECT_WORKFLOW {
                evidence["runs"] = json!([f.instance_id]);
                evidence["since"] = json!(f.finding.at);
            }
            if let Some((_, why)) = &technical {
                evidence["error"] = json!(why);
            }
            for rule in rules {
                let mut l = labels.clone();
                l.insert("kind".into(), kind.as_str().into());
                for (k, v) in &rule.labels {
                    l.insert(k.clone(), v.clone());
                }
                let sev = rule.severity.unwrap_or(severity);
                let cause = rule.cause.unwrap_or(cause);
                let summary = match &technical {
                    Some((c, why)) => {
                        format!("{} (cause: {}: {why})", f.finding.message, c.describe())
                    }
                    None => f.finding.message.clone(),
                };
                let mut o = Observation {
                    rule: rule.name.clone(),
                    labels: l,
                    severity: sev,
                    cause,
                    summary,
                    evidence: evidence.clone(),
                    count: 1,
                };
                let fp = switchyard_core::alerts::fingerprint(&o.labels());
                if let Some(a) = st.alerts.get(&fp)
                    && a.state == AlertState::Firing
                    && a.count >= 1
                {
                    o.summary = format!(
                        "{} — {} times so far (latest: {})",
                        rule_headline(&o, kind),
                        a.count + 1,
                        o.summary
                    );
                }
                if let Some(s) = &rule.summary {
                    let input = json!({"labels": o.labels(), "count": o.count, "evidence": o.evidence, "message": f.finding.message});
                    if let Ok(v) = s.run(&input, &[])
                        && let Some(Value::String(t)) = v.first()
                    {
                        o.summary = t.clone();
                    }
                }
                st.fire(o, now);
            }
        }
        Ok(())
    }

    /// What a late or stalled instance is waiting on, when that is technical: a delivery of
    /// one of its events failing, or the awaited step's source lagging or silent.
    async fn technical_cause(
        &self,
        instance: Option<&switchyard_store::InstanceRecord>,
        step: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<(Cause, String)>, switchyard_store::Error> {
        let Some(i) = instance else {
            return Ok(None);
        };
        for hit in i.instance.hits.iter().rev().take(5) {
            let ds = self
                .store
                .list_deliveries(&DeliveryFilter {
                    event_seq: Some(hit.seq),
                    states: vec![
                        DeliveryState::RetryWait,
                        DeliveryState::Dead,
                        DeliveryState::Delivering,
                    ],
                    limit: 10,
                    ..Default::default()
                })
                .await?;
            if let Some(d) = ds
                .iter()
                .find(|d| d.error_class.is_some() || d.last_status.is_some())
            {
                let cause = delivery_cause(
                    d.error_class.map(|c| c.as_str()),
                    d.last_status.and_then(|s| u16::try_from(s).ok()),
                    self.odoo_destinations.contains(&d.destination),
                );
                let why = format!(
                    "delivery of {} to {} is {}: {}",
                    d.event_id,
                    d.destination,
                    d.state.as_str(),
                    d.last_error.clone().unwrap_or_default()
                );
                return Ok(Some((cause, why)));
            }
        }
        // The awaited step's source: lagging by more than half the step's SLA.
        let Some(w) = self.workflows.get(&i.instance.workflow) else {
            return Ok(None);
        };
        let Some(s) = w.steps.iter().find(|s| s.name == step) else {
            return Ok(None);
        };
        let window = s.sla.unwrap_or(Duration::minutes(15));
        let activity = self.store.source_activity(now - window).await?;
        let seen = activity.iter().find(|a| a.source == s.on.source);
        let lag_limit = window.num_milliseconds() / 2;
        // A quiet source is not evidence by itself (a small company's Odoo may post nothing
        // for an hour); silence has its own measure (`source_silence_seconds`). Events that
        // arrive late are: the source is backed up.
        match seen {
            Some(a) if a.max_lag_ms.unwrap_or(0) > lag_limit => Ok(Some((
                Cause::UpstreamBacklog,
                format!(
                    "events from {} arrive up to {} late",
                    s.on.source,
                    human(Duration::milliseconds(a.max_lag_ms.unwrap_or(0)))
                ),
            ))),
            _ => Ok(None),
        }
    }

    /// Whether no delivery of the step's events is dead any more: each was delivered after a
    /// replay, or its dead letter discarded.
    async fn step_delivered(
        &self,
        i: &switchyard_store::InstanceRecord,
        step: &str,
    ) -> Result<bool, switchyard_store::Error> {
        for hit in i.instance.hits.iter().filter(|h| h.step == step) {
            let dead = self
                .store
                .list_deliveries(&DeliveryFilter {
                    event_seq: Some(hit.seq),
                    states: DeliveryState::DEAD_LETTERS.to_vec(),
                    limit: 1,
                    ..Default::default()
                })
                .await?;
            if !dead.is_empty() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Resolves finding alerts whose condition ended: instances closed or moving, steps
    /// arrived, a good run after a failed one, the quiet period over.
    async fn clear_findings(
        &self,
        st: &mut State,
        now: DateTime<Utc>,
    ) -> Result<(), switchyard_store::Error> {
        let firing: Vec<AlertRecord> = st
            .alerts
            .values()
            .filter(|a| a.state == AlertState::Firing && a.evidence.get("kinds").is_some())
            .cloned()
            .collect();
        let mut ids = HashSet::new();
        for a in &firing {
            if let Some(open) = a.evidence.get("open").and_then(Value::as_array) {
                ids.extend(open.iter().filter_map(Value::as_i64));
            }
        }
        let instances: HashMap<i64, switchyard_store::InstanceRecord> = if ids.is_empty() {
            HashMap::new()
        } else {
            self.store
                .instances_by_ids(ids.iter().copied().collect())
                .await?
                .into_iter()
                .map(|i| (i.id, i))
                .collect()
        };
        for a in firing {
            let kind = a.labels.get("kind").and_then(|k| FindingKind::parse(k));
            let Some(kind) = kind else { continue };
            if clears_with_instance(kind) {
                let open: Vec<i64> = a
                    .evidence
                    .get("open")
                    .and_then(Value::as_array)
                    .map(|l| l.iter().filter_map(Value::as_i64).collect())
                    .unwrap_or_default();
                let step = a.labels.get("step").cloned().unwrap_or_default();
                let since: DateTime<Utc> = a.starts_at;
                let mut closed = HashSet::new();
                for id in open {
                    let Some(i) = instances.get(&id) else {
                        closed.insert(id);
                        continue;
                    };
                    let done = matches!(
                        i.instance.state,
                        InstanceState::Completed
                            | InstanceState::CompletedLate
                            | InstanceState::Cancelled
                    );
                    let over = done
                        || match kind {
                            FindingKind::Stalled => i.instance.progressed_at > since,
                            FindingKind::Missing => i.instance.hits.iter().any(|h| h.step == step),
                            FindingKind::DeliveryFailed => self.step_delivered(i, &step).await?,
                            _ => false,
                        };
                    if over {
                        closed.insert(id);
                    }
                }
                if !closed.is_empty() {
                    st.close_refs(
                        &a.fingerprint,
                        &closed,
                        now,
                        "the instances closed or moved on",
                    );
                }
            } else if matches!(kind, FindingKind::Duplicate | FindingKind::OutOfSequence) {
                let quiet = self
                    .cfg
                    .rules
                    .iter()
                    .find(|r| r.name == a.rule)
                    .and_then(|r| r.quiet)
                    .unwrap_or(Duration::seconds(
                        self.cfg.settings.quiet_period_seconds as i64,
                    ));
                let last: DateTime<Utc> = a
                    .evidence
                    .get("last_seen")
                    .and_then(|v| serde_json::from_value(v.clone()).ok())
                    .unwrap_or(a.updated_at);
                if now >= last + quiet {
                    st.resolve(&a.fingerprint, now, "quiet period over");
                }
            } else {
                // Batch and reconciliation alerts: the next good run clears them.
                // Batch monitors and reconciliations share the runs table; their names
                // are unique across both.
                let Some(name) = a
                    .labels
                    .get("monitor")
                    .or_else(|| a.labels.get("reconciliation"))
                    .cloned()
                else {
                    continue;
                };
                let since: DateTime<Utc> = a
                    .evidence
                    .get("last_seen")
                    .and_then(|v| serde_json::from_value(v.clone()).ok())
                    .unwrap_or(a.updated_at);
                let runs = self
                    .store
                    .list_runs(&RunFilter {
                        monitor: Some(name.clone()),
                        limit: 5,
                        ..Default::default()
                    })
                    .await?;
                let flagged: HashSet<i64> = a
                    .evidence
                    .get("runs")
                    .and_then(Value::as_array)
                    .map(|l| l.iter().filter_map(Value::as_i64).collect())
                    .unwrap_or_default();
                let good = runs.iter().any(|r| {
                    r.run.status == switchyard_core::batch::RunStatus::Succeeded
                        && !flagged.contains(&r.id)
                        && r.run.finished_at.is_some_and(|f| f > since)
                });
                if good {
                    // A good run of a reconciliation is one without differences: its
                    // findings would have been folded into this alert (flagged).
                    st.resolve(&a.fingerprint, now, "the next run was good");
                }
            }
        }
        Ok(())
    }

    /// Measure and delivery rules.
    async fn evaluate(
        &self,
        st: &mut State,
        now: DateTime<Utc>,
    ) -> Result<(), switchyard_store::Error> {
        let mut seen: HashSet<String> = HashSet::new();
        let mut cache = Measures::default();
        for rule in &self.cfg.rules {
            let series: Vec<Series> = match &rule.kind {
                RuleKind::Finding { .. } => continue,
                RuleKind::Measure {
                    measure, window, ..
                } => self.measure(&mut cache, *measure, *window, now).await?,
                RuleKind::Delivery { outcome } => {
                    self.delivery_series(&mut cache, *outcome, now).await?
                }
            };
            for s in series {
                if let Some(f) = s.labels.get("flow")
                    && !rule.covers_flow(f)
                {
                    continue;
                }
                if let Some(d) = s.labels.get("destination")
                    && !rule.covers_destination(d)
                {
                    continue;
                }
                let mut labels = s.labels.clone();
                for (k, v) in &rule.labels {
                    labels.insert(k.clone(), v.clone());
                }
                let holds = match &rule.kind {
                    RuleKind::Measure { cmp, threshold, .. } => cmp.holds(s.value, *threshold),
                    _ => true,
                };
                let o = Observation {
                    rule: rule.name.clone(),
                    labels,
                    severity: rule.severity.unwrap_or(Severity::Warning),
                    cause: rule.cause.unwrap_or(s.cause),
                    summary: match &rule.kind {
                        RuleKind::Measure {
                            cmp,
                            threshold,
                            measure,
                            ..
                        } => format!(
                            "{}: {} = {} ({} {})",
                            s.about,
                            measure.as_str(),
                            round(s.value),
                            cmp.as_str(),
                            threshold
                        ),
                        _ => s.about.clone(),
                    },
                    evidence: s.evidence.clone(),
                    count: 1,
                };
                let fp = switchyard_core::alerts::fingerprint(&o.labels());
                if !holds {
                    continue;
                }
                seen.insert(fp.clone());
                let firing = st
                    .alerts
                    .get(&fp)
                    .is_some_and(|a| a.state == AlertState::Firing);
                if firing {
                    st.hold(o, now);
                    continue;
                }
                let (for_, consecutive) = match &rule.kind {
                    RuleKind::Measure {
                        for_, consecutive, ..
                    } => (*for_, *consecutive),
                    _ => (Duration::zero(), 1),
                };
                let (since, n) = st.cp.pending.get(&fp).copied().unwrap_or((now, 0));
                let n = n + 1;
                if now - since >= for_ && n >= consecutive {
                    st.cp.pending.remove(&fp);
                    st.hold(o, now);
                } else {
                    st.cp.pending.insert(fp, (since, n));
                }
            }
        }
        // Series that no longer hold: pending ones reset, firing ones resolve.
        st.cp.pending.retain(|fp, _| seen.contains(fp));
        let rules: HashSet<&str> = self
            .cfg
            .rules
            .iter()
            .filter(|r| !matches!(r.kind, RuleKind::Finding { .. }))
            .map(|r| r.name.as_str())
            .collect();
        let stale: Vec<String> = st
            .alerts
            .values()
            .filter(|a| {
                a.state == AlertState::Firing
                    && rules.contains(a.rule.as_str())
                    && !seen.contains(&a.fingerprint)
            })
            .map(|a| a.fingerprint.clone())
            .collect();
        for fp in stale {
            st.resolve(&fp, now, "the condition no longer holds");
        }
        Ok(())
    }

    async fn measure(
        &self,
        cache: &mut Measures,
        m: Measure,
        window: Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<Series>, switchyard_store::Error> {
        let mut out = Vec::new();
        match m {
            Measure::QueueDepth | Measure::OldestUndeliveredSeconds | Measure::DeadLetters => {
                let stats = cache.stats(&self.store).await?;
                let mut agg: BTreeMap<(String, String), Tally> = BTreeMap::new();
                for s in stats {
                    let counts = match m {
                        Measure::DeadLetters => s.state == DeliveryState::Dead,
                        _ => matches!(
                            s.state,
                            DeliveryState::Scheduled
                                | DeliveryState::Delivering
                                | DeliveryState::RetryWait
                        ),
                    };
                    if !counts {
                        continue;
                    }
                    let e = agg
                        .entry((s.flow.clone(), s.destination.clone()))
                        .or_insert((0.0, None));
                    e.0 += s.count as f64;
                    e.1 = Some(e.1.map_or(s.oldest_created_at, |o: DateTime<Utc>| {
                        o.min(s.oldest_created_at)
                    }));
                }
                for ((flow, destination), (count, oldest)) in agg {
                    let value = match m {
                        Measure::OldestUndeliveredSeconds => {
                            oldest.map_or(0.0, |o| (now - o).num_milliseconds() as f64 / 1000.0)
                        }
                        _ => count,
                    };
                    let odoo = self.odoo_destinations.contains(&destination);
                    out.push(Series {
                        labels: labels(&[
                            ("flow", flow.as_str()),
                            ("destination", destination.as_str()),
                            ("measure", m.as_str()),
                        ]),
                        value,
                        cause: m.cause(odoo),
                        about: format!("flow {flow} to {destination}"),
                        evidence: json!({"value": value}),
                    });
                }
            }
            Measure::ErrorRate | Measure::ThrottleRate => {
                for s in self.store.attempt_stats(now - window).await? {
                    let value = match m {
                        Measure::ErrorRate => s.failed as f64 / s.attempts.max(1) as f64,
                        _ => s.throttled as f64 / s.attempts.max(1) as f64,
                    };
                    let odoo = self.odoo_destinations.contains(&s.destination);
                    out.push(Series {
                        labels: labels(&[("destination", s.destination.as_str()), ("measure", m.as_str())]),
                        value,
                        cause: m.cause(odoo),
                        about: format!(
                            "destination {}: {} of {} attempts failed, {} throttled (last: {})",
                            s.destination,
                            s.failed,
                            s.attempts,
                            s.throttled,
                            s.last_error.clone().unwrap_or_else(|| s.last_outcome.clone())
                        ),
                        evidence: json!({"value": value, "error": s.last_error, "status": s.last_status}),
                    });
                }
            }
            Measure::ShareWithinSla => {
                let counts = self.store.instance_counts().await?;
                let mut per: BTreeMap<String, (i64, i64)> = BTreeMap::new();
                for c in counts {
                    let e = per.entry(c.workflow.clone()).or_default();
                    match c.state {
                        InstanceState::Completed => {
                            e.0 += c.count;
                            e.1 += c.count
                        }
                        InstanceState::CompletedLate | InstanceState::Breached => e.1 += c.count,
                        _ => {}
                    }
                }
                for (w, (ok, all)) in per {
                    if all == 0 {
                        continue;
                    }
                    let value = ok as f64 / all as f64;
                    out.push(Series {
                        labels: labels(&[("workflow", w.as_str()), ("measure", m.as_str())]),
                        value,
                        cause: m.cause(false),
                        about: format!("workflow {w}: {ok} of {all} instances within SLA"),
                        evidence: json!({"value": value}),
                    });
                }
            }
            Measure::ProbeFailure | Measure::ProbeLatencyMs => {
                for l in self.store.list_leases().await? {
                    let Some(target) = l.name.strip_prefix("probe:") else {
                        continue;
                    };
                    let Some(state) = self.store.lease_state(&l.name).await? else {
                        continue;
                    };
                    let ok = state.get("ok").and_then(Value::as_bool).unwrap_or(true);
                    let latency = state
                        .get("latency_ms")
                        .and_then(Value::as_f64)
                        .unwrap_or(0.0);
                    let error = state.get("error").cloned().unwrap_or(Value::Null);
                    let value = if m == Measure::ProbeFailure {
                        if ok { 0.0 } else { 1.0 }
                    } else {
                        latency
                    };
                    let odoo = self.odoo_targets.contains(target);
                    let mut labels: Labels = labels(&[("measure", m.as_str())]);
                    labels.insert(
                        if odoo {
                            "odoo".into()
                        } else {
                            "destination".into()
                        },
                        target.to_string(),
                    );
                    let class = state
                        .get("class")
                        .and_then(Value::as_str)
                        .map(str::to_string);
                    let cause = match class.as_deref() {
                        Some("credential") => Cause::CredentialExpiry,
                        _ => m.cause(odoo),
                    };
                    out.push(Series {
                        labels,
                        value,
                        cause,
                        about: format!(
                            "{} {target}: probe {}{}",
                            if odoo { "Odoo" } else { "destination" },
                            if ok { "succeeded" } else { "failed" },
                            match &error {
                                Value::String(e) => format!(": {e}"),
                                _ => String::new(),
                            }
                        ),
                        evidence: json!({"value": value, "error": error}),
                    });
                }
            }
            Measure::SourceSilenceSeconds => {
                let activity = self.store.source_activity(now - window).await?;
                let active: HashSet<&str> = activity.iter().map(|a| a.source.as_str()).collect();
                for s in self
                    .workflows
                    .list
                    .iter()
                    .flat_map(|w| w.steps.iter().map(|s| s.on.source.clone()))
                    .collect::<std::collections::BTreeSet<_>>()
                {
                    let value = if active.contains(s.as_str()) {
                        0.0
                    } else {
                        window.num_seconds() as f64
                    };
                    out.push(Series {
                        labels: labels(&[("source", s.as_str()), ("measure", m.as_str())]),
                        value,
                        cause: m.cause(false),
                        about: format!("source {s}: no events for at least {}", human(window)),
                        evidence: json!({"value": value}),
                    });
                }
            }
        }
        Ok(out)
    }

    async fn delivery_series(
        &self,
        cache: &mut Measures,
        outcome: DeliveryOutcome,
        now: DateTime<Utc>,
    ) -> Result<Vec<Series>, switchyard_store::Error> {
        let mut out = Vec::new();
        match outcome {
            DeliveryOutcome::DeadLetter => {
                // Dead letters of every kind (undeliverable, mapping failed, invalid), per
                // flow and destination.
                let mut per_flow: BTreeMap<(String, String), i64> = BTreeMap::new();
                for s in cache.stats(&self.store).await? {
                    if s.state.is_dead_letter() {
                        *per_flow
                            .entry((s.flow.clone(), s.destination.clone()))
                            .or_default() += s.count;
                    }
                }
                for ((flow, destination), count) in per_flow {
                    let last = self
                        .store
                        .list_deliveries(&DeliveryFilter {
                            flow: Some(flow.clone()),
                            states: DeliveryState::DEAD_LETTERS.to_vec(),
                            limit: 1,
                            ..Default::default()
                        })
                        .await?;
                    let d = last.first();
                    let odoo = self.odoo_destinations.contains(&destination);
                    let cause = d.map_or(Cause::MappingDrift, |d| match d.state {
                        DeliveryState::MappingFailed | DeliveryState::Invalid => {
                            Cause::MappingDrift
                        }
                        _ => delivery_cause(
                            d.error_class.map(|c| c.as_str()),
                            d.last_status.and_then(|v| u16::try_from(v).ok()),
                            odoo,
                        ),
                    });
                    let error = d.and_then(|d| d.last_error.clone()).unwrap_or_default();
                    out.push(Series {
                        labels: labels(&[("flow", flow.as_str()), ("destination", destination.as_str())]),
                        value: count as f64,
                        cause,
                        about: format!(
                            "{} dead letter{} in flow {} to {}: {error}",
                            count,
                            if count == 1 { "" } else { "s" },
                            flow,
                            destination
                        ),
                        evidence: json!({
                            "value": count,
                            "error": error,
                            "events": d.map(|d| vec![format!("{} {}", d.event_source, d.event_id)]).unwrap_or_default(),
                        }),
                    });
                }
            }
            DeliveryOutcome::Credential => {
                for p in self.store.destination_pauses().await? {
                    out.push(Series {
                        labels: labels(&[("destination", p.destination.as_str())]),
                        value: 1.0,
                        cause: Cause::CredentialExpiry,
                        about: format!(
                            "destination {} is paused after a credential failure: {}",
                            p.destination,
                            serde_json::to_value(&p)
                                .ok()
                                .and_then(|v| v
                                    .get("error")
                                    .and_then(Value::as_str)
                                    .map(str::to_string))
                                .unwrap_or_default()
                        ),
                        evidence: json!({"since": p.paused_at}),
                    });
                }
            }
            DeliveryOutcome::Failing => {
                for s in self.store.attempt_stats(now - Duration::minutes(5)).await? {
                    if s.failed == 0 || s.failed < s.attempts || s.attempts < 3 {
                        continue;
                    }
                    let odoo = self.odoo_destinations.contains(&s.destination);
                    let cause = delivery_cause(
                        Some(s.last_outcome.as_str()),
                        s.last_status.and_then(|v| u16::try_from(v).ok()),
                        odoo,
                    );
                    out.push(Series {
                        labels: labels(&[("destination", s.destination.as_str())]),
                        value: s.failed as f64,
                        cause,
                        about: format!(
                            "destination {}: all {} attempts in the last 5 minutes failed (last: {})",
                            s.destination,
                            s.attempts,
                            s.last_error.clone().unwrap_or_else(|| s.last_outcome.clone())
                        ),
                        evidence: json!({"value": s.failed, "error": s.last_error, "status": s.last_status}),
                    });
                }
            }
        }
        Ok(out)
    }
}

/// A count and the oldest creation time, per (flow, destination).
type Tally = (f64, Option<DateTime<Utc>>);

/// One measured series.
struct Series {
    labels: Labels,
    value: f64,
    cause: Cause,
    about: String,
    evidence: Value,
}

/// Store reads shared by the rules of one evaluation.
#[derive(Default)]
struct Measures {
    stats: Option<Vec<switchyard_store::DeliveryStat>>,
}

impl Measures {
    async fn stats(
        &mut self,
        store: &SharedStore,
    ) -> Result<&Vec<switchyard_store::DeliveryStat>, switchyard_store::Error> {
        if self.stats.is_none() {
            self.stats = Some(store.delivery_stats().await?);
        }
        Ok(self.stats.as_ref().expect("set"))
    }
}

/// Finding kinds whose alert clears when the instance closes (or moves, or the step
/// arrives).
fn clears_with_instance(kind: FindingKind) -> bool {
    matches!(
        kind,
        FindingKind::Breach
            | FindingKind::AtRisk
            | FindingKind::Stalled
            | FindingKind::Missing
            | FindingKind::DeliveryFailed
    )
}

/// Alerts that clear when their incident is acknowledged (duplicate, out of sequence).
fn clears_on_ack(a: &AlertRecord) -> bool {
    matches!(
        a.labels.get("kind").map(String::as_str),
        Some("duplicate" | "out_of_sequence")
    )
}

fn rule_headline(o: &Observation, kind: FindingKind) -> String {
    let about = ["workflow", "monitor", "reconciliation"]
        .iter()
        .find_map(|k| o.labels.get(*k))
        .cloned()
        .unwrap_or_default();
    match o.labels.get("step") {
        Some(step) => format!(
            "{about}: {} at step \"{step}\"",
            kind.as_str().replace('_', " ")
        ),
        None => format!("{about}: {}", kind.as_str().replace('_', " ")),
    }
}

/// A label set from (name, value) pairs.
fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn human(d: Duration) -> String {
    let s = d.num_seconds();
    if s >= 3600 && s % 3600 == 0 {
        format!("{}h", s / 3600)
    } else if s >= 60 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}
