//! The business-workflow monitor: follows the event log, applies every event to the
//! instances of the workflows it belongs to (found by business key, across systems), and
//! fires the instances' timers at their SLA instants.
//!
//! One node at a time owns it, through the singleton lease `monitor`; every change (instances,
//! findings, the log checkpoint) is one [`MonitorCommit`] fenced by that lease's epoch, so a
//! node that lost the lease cannot record anything, and a successor resumes from the last
//! committed checkpoint: events are applied at least once and applying one twice changes
//! nothing (an instance remembers the events it holds).
//!
//! Instances live in the store; memory holds only one page of events and the instances it
//! touches. Timers are the instances' `due_at`: the loop sleeps until the earliest one (or
//! until a manual clock moves), never on a polling tick, so a breach is recorded at its
//! instant. It must never apply an event before the events committed ahead of it.

mod batch;

pub use batch::{HEARTBEAT_TYPE, Heartbeat};

use chrono::{DateTime, Utc};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use switchyard_core::SharedClock;
use switchyard_core::batch::BatchMonitors;
use switchyard_core::instance::{Finding, Hit, Instance, InstanceState};
use switchyard_core::jq::Prepared;
use switchyard_core::sources::{BusinessKey, Sources};
use switchyard_core::workflows::{Role, Workflow, Workflows};
use switchyard_store::{
    DeliveryFilter, DeliveryState, EventFilter, InstanceRecord, InstanceWrite, Lease, LogPosition,
    MonitorCommit, SharedStore, StoredEvent, WorkflowVersion,
};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

/// The singleton lease of the monitor.
pub const LEASE: &str = "monitor";

/// Instances whose timers are fired together: many SLAs often end at the same instant
/// (orders imported in one batch), and their findings are committed in one transaction.
const TIMER_BATCH: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] switchyard_store::Error),
    #[error("stored workflow {workflow} version {version}: {message}")]
    Definition {
        workflow: String,
        version: String,
        message: String,
    },
}

/// How the monitor runs (per node).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Events applied per transaction.
    pub page_size: usize,
    /// Real time between looks at the log when nothing woke the monitor.
    pub poll: std::time::Duration,
    /// Real time the lease lasts without renewal.
    pub lease_ttl: chrono::Duration,
    /// Real time between looks for new dead letters of the instances' events.
    pub dead_letter_scan: std::time::Duration,
    /// Closed instances are archived (removed with their aliases; findings stay) this long
    /// after they closed (business time).
    pub archive_after: chrono::Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            page_size: 500,
            poll: std::time::Duration::from_millis(200),
            lease_ttl: chrono::Duration::seconds(15),
            dead_letter_scan: std::time::Duration::from_secs(1),
            archive_after: chrono::Duration::days(30),
        }
    }
}

/// How far the monitor has got: events up to `position` applied and timers up to `time`
/// fired. Tests wait on it instead of sleeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    pub position: LogPosition,
    pub time: Option<DateTime<Utc>>,
    /// The lease epoch while this node owns the monitor.
    pub epoch: Option<i64>,
}

pub struct Monitor {
    store: SharedStore,
    clock: SharedClock,
    sources: Arc<Sources>,
    workflows: Arc<Workflows>,
    batch: Arc<BatchMonitors>,
    node: String,
    settings: Settings,
    wake: Arc<Notify>,
    progress: watch::Sender<Progress>,
    /// A count of instances for the gauges is running.
    counting: Arc<std::sync::atomic::AtomicBool>,
}

/// What the owner keeps between steps.
pub(crate) struct Owned {
    lease: Lease,
    position: LogPosition,
    /// Every definition version instances may use, by (workflow, version).
    versions: HashMap<(String, String), Arc<Workflow>>,
    /// Per workflow, every key name any of its versions links by.
    key_names: HashMap<String, BTreeSet<String>>,
    /// Current versions not yet known to the store.
    unsaved: Vec<WorkflowVersion>,
    last_archive: Option<std::time::Instant>,
    last_gauges: Option<std::time::Instant>,
    /// The instances due at the next timer instant, loaded shortly before it; dropped as
    /// soon as events change any instance.
    prefetched: Option<(DateTime<Utc>, Vec<InstanceRecord>)>,
    /// Dead letters changed since then are still to be looked at (saved with the checkpoint).
    dead_since: DateTime<Utc>,
    last_dead_letters: Option<std::time::Instant>,
    /// Per batch monitor, the instant up to which its schedule and windows were checked
    /// (saved with the checkpoint).
    batch_checked: HashMap<String, DateTime<Utc>>,
    /// `batch_checked` changed since the last commit.
    batch_dirty: bool,
    /// When a batch monitor's timer fires next (none: look again).
    batch_next: Option<DateTime<Utc>>,
    /// Runs already reported as never finished by this owner.
    never_finished: HashSet<i64>,
}

/// An instance being changed in one step.
struct Slot {
    id: Option<i64>,
    instance: Instance,
    findings: Vec<Finding>,
    absorbed: Vec<i64>,
    dirty: bool,
    /// Its keys changed (new instance, new keys, merge): the store points them at it.
    relink: bool,
    gone: bool,
}

/// The instances one page of events touches, and which of them owns each alias.
#[derive(Default)]
struct Working {
    slots: Vec<Slot>,
    by_alias: HashMap<(String, BusinessKey), usize>,
}

impl Working {
    fn add(&mut self, slot: Slot) -> usize {
        let i = self.slots.len();
        for a in &slot.instance.aliases {
            self.by_alias
                .insert((slot.instance.workflow.clone(), a.clone()), i);
        }
        self.slots.push(slot);
        i
    }

    fn load(records: Vec<InstanceRecord>) -> Working {
        let mut w = Working::default();
        for r in records {
            w.add(Slot {
                id: Some(r.id),
                instance: r.instance,
                findings: Vec::new(),
                absorbed: Vec::new(),
                dirty: false,
                relink: false,
                gone: false,
            });
        }
        w
    }
}

impl Monitor {
    pub fn new(
        store: SharedStore,
        clock: SharedClock,
        sources: Arc<Sources>,
        workflows: Arc<Workflows>,
        node: impl Into<String>,
        settings: Settings,
    ) -> Monitor {
        let wake = Arc::new(Notify::new());
        let w = wake.clone();
        clock.on_change(Arc::new(move || w.notify_one()));
        Monitor {
            store,
            clock,
            sources,
            workflows,
            batch: Arc::default(),
            node: node.into(),
            settings,
            wake,
            progress: watch::channel(Progress::default()).0,
            counting: Arc::default(),
        }
    }

    /// The batch monitors it also runs (default: none).
    pub fn with_batch_monitors(mut self, batch: Arc<BatchMonitors>) -> Monitor {
        self.batch = batch;
        self
    }

    pub fn progress(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }

    /// Wakes the loop (new events were committed).
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    pub async fn run(self, cancel: CancellationToken) {
        let mut owned: Option<Owned> = None;
        loop {
            if cancel.is_cancelled() {
                if let Some(o) = owned.take() {
                    let _ = self.store.release_lease(&o.lease).await;
                }
                return;
            }
            let idle = match self.step(&mut owned).await {
                Ok(idle) => idle,
                Err(Error::Store(switchyard_store::Error::Fenced { .. })) => {
                    tracing::warn!("the monitor's lease was taken over; stopping here");
                    owned = None;
                    true
                }
                Err(e) => {
                    tracing::warn!(error = %e, "workflow monitor step failed; retrying");
                    true
                }
            };
            if !idle {
                continue;
            }
            let wait = self.wait_time(owned.as_mut()).await;
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = self.wake.notified() => {}
            }
        }
    }

    /// How long to sleep: until the next timer, at most one poll. Shortly before a timer
    /// instant, loads the instances due at it, so at the instant only their findings are
    /// left to commit.
    async fn wait_time(&self, owned: Option<&mut Owned>) -> std::time::Duration {
        let Some(o) = owned else {
            return self.settings.poll;
        };
        let instances = self.store.monitor_next_due().await.ok().flatten();
        let Some(due) = [instances, o.batch_next].into_iter().flatten().min() else {
            return self.settings.poll;
        };
        let now = self.clock.now();
        if due <= now {
            return std::time::Duration::ZERO;
        }
        let wait = self.clock.real_duration(due - now);
        if Some(due) == instances
            && wait <= self.settings.poll * 2
            && o.prefetched.as_ref().is_none_or(|p| p.0 != due)
        {
            match self.store.monitor_due(due, TIMER_BATCH).await {
                Ok(records) => o.prefetched = Some((due, records)),
                Err(e) => tracing::debug!(error = %e, "prefetching due instances"),
            }
        }
        self.clock
            .real_duration(due - self.clock.now())
            .min(self.settings.poll)
    }

    /// One step: take or renew the lease, apply one page of events or fire due timers.
    /// `Ok(true)` when there was nothing to do.
    async fn step(&self, owned: &mut Option<Owned>) -> Result<bool, Error> {
        let real = self.clock.real_now();
        match owned {
            Some(o) if o.lease.expires_at - real > self.settings.lease_ttl * 2 / 3 => {}
            Some(o) => {
                o.lease = self
                    .store
                    .renew_lease(&o.lease, real, self.settings.lease_ttl)
                    .await?;
            }
            None => {
                let Some(lease) = self
                    .store
                    .acquire_lease(LEASE, &self.node, real, self.settings.lease_ttl)
                    .await?
                else {
                    self.progress.send_modify(|p| p.epoch = None);
                    return Ok(true);
                };
                *owned = Some(self.take_over(lease).await?);
            }
        }
        let o = owned.as_mut().expect("owned");
        let page = self
            .store
            .read_log(o.position, self.settings.page_size, &EventFilter::default())
            .await?;
        if !page.events.is_empty() {
            // A heartbeat is committed on its own, so the next one sees its run.
            match page.events.iter().position(batch::is_heartbeat) {
                Some(0) => self.apply_heartbeat(o, &page.events[0]).await?,
                Some(h) => {
                    let upto = page.events[h - 1].position;
                    self.apply_events(o, &page.events[..h], upto).await?
                }
                None => self.apply_events(o, &page.events, page.next).await?,
            }
            return Ok(false);
        }
        let now = self.clock.now();
        let due = match o.prefetched.take() {
            // loaded ahead of the instant: only the commit is left to do at it
            Some((until, due)) if until <= now => due,
            ahead => {
                o.prefetched = ahead;
                self.store.monitor_due(now, TIMER_BATCH).await?
            }
        };
        if !due.is_empty() {
            self.fire(o, due, now).await?;
            return Ok(false);
        }
        if self.batch_timers(o, now).await? {
            return Ok(false);
        }
        self.housekeeping(o, now).await?;
        let (position, epoch) = (o.position, o.lease.epoch);
        self.progress.send_replace(Progress {
            position,
            time: Some(now),
            epoch: Some(epoch),
        });
        Ok(true)
    }

    /// Becomes the owner: the checkpoint and every definition version instances may use.
    async fn take_over(&self, lease: Lease) -> Result<Owned, Error> {
        let state = self.store.lease_state(LEASE).await?;
        let position = state
            .as_ref()
            .and_then(|s| s.get("position")?.as_str()?.parse().ok())
            .unwrap_or_default();
        // Dead letters are followed from the checkpoint; the first owner starts now.
        let dead_since = state
            .as_ref()
            .and_then(|s| s.get("dead_since")?.as_str()?.parse().ok())
            .unwrap_or_else(|| self.clock.now());
        let batch_checked: HashMap<String, DateTime<Utc>> = state
            .as_ref()
            .and_then(|s| serde_json::from_value(s.get("batch")?.clone()).ok())
            .unwrap_or_default();
        let mut versions = HashMap::new();
        let stored = self.store.workflow_versions().await?;
        for v in &stored {
            let wf =
                Workflow::from_definition(&v.definition).map_err(|message| Error::Definition {
                    workflow: v.workflow.clone(),
                    version: v.version.clone(),
                    message,
                })?;
            versions.insert((v.workflow.clone(), v.version.clone()), Arc::new(wf));
        }
        let mut unsaved = Vec::new();
        for wf in &self.workflows.list {
            let k = (wf.name.clone(), wf.version.clone());
            if !versions.contains_key(&k) {
                unsaved.push(WorkflowVersion {
                    workflow: wf.name.clone(),
                    version: wf.version.clone(),
                    definition: wf.definition.clone(),
                    created_at: self.clock.now(),
                });
            }
            versions.insert(k, wf.clone());
        }
        let mut key_names: HashMap<String, BTreeSet<String>> = HashMap::new();
        for ((name, _), wf) in &versions {
            key_names
                .entry(name.clone())
                .or_default()
                .extend(wf.keys.iter().cloned());
        }
        tracing::info!(epoch = lease.epoch, %position, "this node now runs the workflow monitor");
        Ok(Owned {
            lease,
            position,
            versions,
            key_names,
            unsaved,
            last_archive: None,
            last_gauges: None,
            last_dead_letters: None,
            prefetched: None,
            dead_since,
            batch_checked,
            batch_dirty: false,
            batch_next: None,
            never_finished: HashSet::new(),
        })
    }

    async fn commit(
        &self,
        o: &mut Owned,
        writes: Vec<InstanceWrite>,
        position: LogPosition,
        now: DateTime<Utc>,
    ) -> Result<(), Error> {
        self.commit_with(o, writes, Vec::new(), position, now, false)
            .await
    }

    /// One fenced commit; `findings_only` writes only the findings of stored instances.
    pub(crate) async fn commit_with(
        &self,
        o: &mut Owned,
        writes: Vec<InstanceWrite>,
        runs: Vec<switchyard_store::RunWrite>,
        position: LogPosition,
        now: DateTime<Utc>,
        findings_only: bool,
    ) -> Result<(), Error> {
        let findings: Vec<(String, &'static str)> = writes
            .iter()
            .flat_map(|w| {
                w.findings
                    .iter()
                    .map(|f| (w.instance.workflow.clone(), f.kind.as_str()))
            })
            .chain(runs.iter().flat_map(|r| {
                r.findings
                    .iter()
                    .map(|f| (r.run.monitor.clone(), f.kind.as_str()))
            }))
            .collect();
        let commit = MonitorCommit {
            lease: o.lease.clone(),
            checkpoint: Some(serde_json::json!({
                "position": position.to_string(),
                "dead_since": o.dead_since.to_rfc3339(),
                "batch": o.batch_checked,
            })),
            versions: o.unsaved.clone(),
            writes,
            runs,
            now,
            findings_only,
        };
        self.store.monitor_commit(commit).await?;
        o.batch_dirty = false;
        o.unsaved.clear();
        o.position = position;
        for (workflow, kind) in findings {
            metrics::counter!("switchyard_workflow_findings_total", "workflow" => workflow, "kind" => kind)
                .increment(1);
        }
        Ok(())
    }

    /// Applies a page of events in log order and commits it with the new checkpoint.
    async fn apply_events(
        &self,
        o: &mut Owned,
        events: &[StoredEvent],
        next: LogPosition,
    ) -> Result<(), Error> {
        // Which workflows each event may belong to (cheap: declared source and type only).
        let mut relevant: Vec<(usize, Vec<Arc<Workflow>>)> = Vec::new();
        let mut wanted: BTreeSet<(String, BusinessKey)> = BTreeSet::new();
        for (i, ev) in events.iter().enumerate() {
            let source = self.sources.label_for(&ev.event.source);
            let wfs: Vec<Arc<Workflow>> = self
                .workflows
                .list
                .iter()
                .filter(|wf| {
                    o.versions
                        .iter()
                        .filter(|((name, _), _)| *name == wf.name)
                        .any(|(_, v)| v.may_match(&source, &ev.event.ty))
                })
                .cloned()
                .collect();
            if wfs.is_empty() {
                continue;
            }
            for wf in &wfs {
                self.want_aliases(o, &wf.name, ev, &mut wanted);
            }
            relevant.push((i, wfs));
        }
        let mut work = if wanted.is_empty() {
            Working::default()
        } else {
            Working::load(
                self.store
                    .monitor_find(wanted.into_iter().collect())
                    .await?,
            )
        };
        let mut applied = 0u64;
        for (i, wfs) in relevant {
            let ev = &events[i];
            let source = self.sources.label_for(&ev.event.source);
            let Ok(prepared) = Prepared::new(&ev.event.to_json()) else {
                continue;
            };
            for wf in wfs {
                if self.apply_one(o, &mut work, &wf, ev, &source, &prepared) {
                    applied += 1;
                    metrics::counter!("switchyard_workflow_events_applied_total", "workflow" => wf.name.clone())
                        .increment(1);
                }
            }
        }
        let writes = self.writes(o, work);
        if !writes.is_empty() {
            o.prefetched = None;
        }
        tracing::debug!(
            events = events.len(),
            applied,
            writes = writes.len(),
            "monitor page"
        );
        self.commit(o, writes, next, self.clock.now()).await
    }

    /// Every key name any version of the workflow links by (computed at take-over: the
    /// versions do not change while this node owns the monitor).
    fn key_names<'a>(&self, o: &'a Owned, workflow: &str) -> &'a BTreeSet<String> {
        static NONE: BTreeSet<String> = BTreeSet::new();
        o.key_names.get(workflow).unwrap_or(&NONE)
    }

    /// Adds the (workflow, key) aliases of `ev` the workflow links by.
    fn want_aliases(
        &self,
        o: &Owned,
        workflow: &str,
        ev: &StoredEvent,
        wanted: &mut BTreeSet<(String, BusinessKey)>,
    ) {
        let names = self.key_names(o, workflow);
        for k in ev.keys.iter().filter(|k| names.contains(&k.name)) {
            wanted.insert((workflow.to_string(), k.clone()));
        }
    }

    /// Applies one event to one workflow; `true` if it changed an instance.
    fn apply_one(
        &self,
        o: &Owned,
        work: &mut Working,
        current: &Arc<Workflow>,
        ev: &StoredEvent,
        source: &str,
        prepared: &Prepared,
    ) -> bool {
        let names = self.key_names(o, &current.name);
        let aliases: Vec<BusinessKey> = ev
            .keys
            .iter()
            .filter(|k| names.contains(&k.name))
            .cloned()
            .collect();
        if aliases.is_empty() {
            return false;
        }
        // The instances these keys name, and which of them are one order.
        let mut owners: Vec<usize> = aliases
            .iter()
            .filter_map(|a| {
                work.by_alias
                    .get(&(current.name.clone(), a.clone()))
                    .copied()
            })
            .collect();
        owners.sort_unstable();
        owners.dedup();
        let primary = aliases
            .iter()
            .find(|a| a.name == current.key)
            .map(|a| a.value.clone());
        let target_key = primary.clone().or_else(|| {
            owners
                .iter()
                .filter_map(|&s| {
                    let i = &work.slots[s].instance;
                    i.key.clone().map(|k| (i.started_at, k))
                })
                .min()
                .map(|(_, k)| k)
        });
        let mergeable: Vec<usize> = owners
            .iter()
            .copied()
            .filter(|&s| {
                let k = &work.slots[s].instance.key;
                k.is_none() || *k == target_key
            })
            .collect();
        let survivor = mergeable
            .iter()
            .copied()
            .find(|&s| {
                work.slots[s].instance.key.is_some() && work.slots[s].instance.key == target_key
            })
            .or_else(|| {
                mergeable
                    .iter()
                    .copied()
                    .min_by_key(|&s| work.slots[s].instance.started_at)
            });
        let wf = match survivor {
            Some(s) => {
                let i = &work.slots[s].instance;
                match o.versions.get(&(i.workflow.clone(), i.version.clone())) {
                    Some(wf) => wf.clone(),
                    None => return false,
                }
            }
            None => current.clone(),
        };
        let Some((role, key)) = wf.role(source, &ev.event.ty, prepared) else {
            return false;
        };
        if !aliases.iter().any(|a| a.name == key) {
            metrics::counter!("switchyard_workflow_unkeyed_events_total", "workflow" => wf.name.clone())
                .increment(1);
            return false;
        }
        // Keys another (differently keyed) instance owns stay with it.
        let own: Vec<BusinessKey> = aliases
            .into_iter()
            .filter(|a| {
                work.by_alias
                    .get(&(wf.name.clone(), a.clone()))
                    .is_none_or(|s| mergeable.contains(s))
            })
            .collect();
        let received_at = ev.received_at;
        let occurred_at = occurred_at(ev);
        let slot = match (role, survivor) {
            (Role::Cancel, None) => return false,
            (_, Some(s)) => s,
            (Role::Step(i), None) => {
                let hit = hit(&wf, i, ev, occurred_at);
                work.add(Slot {
                    id: None,
                    instance: Instance::start(&wf, &hit, Vec::new()),
                    findings: Vec::new(),
                    absorbed: Vec::new(),
                    dirty: true,
                    relink: true,
                    gone: false,
                })
            }
        };
        for other in mergeable.into_iter().filter(|&s| s != slot) {
            // Merges are rare: the emptied slot keeps a copy it never writes.
            let placeholder = work.slots[slot].instance.clone();
            let absorbed = std::mem::replace(
                &mut work.slots[other],
                Slot {
                    id: None,
                    instance: placeholder,
                    findings: Vec::new(),
                    absorbed: Vec::new(),
                    dirty: false,
                    relink: false,
                    gone: true,
                },
            );
            let s = &mut work.slots[slot];
            let raised = s.instance.absorb(&wf, absorbed.instance);
            s.findings.extend(absorbed.findings);
            s.findings.extend(raised);
            s.absorbed.extend(absorbed.id);
            s.absorbed.extend(absorbed.absorbed);
            s.dirty = true;
            s.relink = true;
            for v in work.by_alias.values_mut() {
                if *v == other {
                    *v = slot;
                }
            }
        }
        let s = &mut work.slots[slot];
        let before = s.instance.aliases.len();
        s.instance.add_aliases(&wf, own.iter().cloned());
        if s.instance.aliases.len() != before {
            s.relink = true;
            s.dirty = true;
        }
        for a in own {
            work.by_alias.insert((wf.name.clone(), a), slot);
        }
        let s = &mut work.slots[slot];
        match role {
            Role::Step(i) => {
                s.instance.add_dimensions(wf.dimension_values(prepared));
                let step = &wf.steps[i].name;
                let first = !s.instance.hits.iter().any(|h| h.step == *step);
                let was_open = s.instance.is_open();
                let applied = s.instance.apply(&wf, hit(&wf, i, ev, occurred_at));
                s.findings.extend(applied.findings);
                s.dirty |= !applied.repeat;
                if !applied.repeat {
                    measure(&wf, &s.instance, step, first, was_open, s.id.is_none());
                }
            }
            Role::Cancel => {
                let f = s.instance.cancel(&wf, received_at);
                s.findings.extend(f);
                s.dirty = true;
            }
        }
        true
    }

    fn writes(&self, o: &Owned, work: Working) -> Vec<InstanceWrite> {
        work.slots
            .into_iter()
            .filter(|s| s.dirty && !s.gone)
            .map(|s| {
                let due_at = o
                    .versions
                    .get(&(s.instance.workflow.clone(), s.instance.version.clone()))
                    .and_then(|wf| s.instance.next_due(wf));
                InstanceWrite {
                    id: s.id,
                    instance: s.instance,
                    due_at,
                    relink: s.relink,
                    findings: s.findings,
                    absorbed: s.absorbed,
                }
            })
            .collect()
    }

    /// Fires the timers of instances due by `now`.
    async fn fire(
        &self,
        o: &mut Owned,
        due: Vec<InstanceRecord>,
        now: DateTime<Utc>,
    ) -> Result<(), Error> {
        let mut writes = Vec::new();
        for r in due {
            let mut instance = r.instance;
            let key = (instance.workflow.clone(), instance.version.clone());
            let (findings, due_at) = match o.versions.get(&key) {
                Some(wf) => {
                    let f = instance.advance(wf, now);
                    let next = instance.next_due(wf).filter(|d| *d > now);
                    (f, next)
                }
                None => {
                    tracing::warn!(workflow = %key.0, version = %key.1, "instance of an unknown workflow version; its timers are dropped");
                    (Vec::new(), None)
                }
            };
            for f in &findings {
                let delay = (self.clock.now() - f.at).num_milliseconds().max(0) as f64 / 1000.0;
                metrics::histogram!("switchyard_workflow_finding_delay_seconds", "kind" => f.kind.as_str())
                    .record(delay);
            }
            writes.push(InstanceWrite {
                id: Some(r.id),
                instance,
                due_at,
                relink: false,
                findings,
                absorbed: Vec::new(),
            });
        }
        // The findings first, on their own (small rows, one transaction): they are what
        // someone waits for at the SLA instant. Then the instances with their next timers.
        let position = o.position;
        let with_findings: Vec<InstanceWrite> = writes
            .iter_mut()
            .filter(|w| !w.findings.is_empty())
            .map(|w| InstanceWrite {
                id: w.id,
                // the store reads only the workflow and the label of a findings-only write
                instance: Instance {
                    aliases: w.instance.aliases.iter().take(1).cloned().collect(),
                    hits: Vec::new(),
                    raised: Vec::new(),
                    dimensions: Default::default(),
                    workflow: w.instance.workflow.clone(),
                    version: String::new(),
                    key: w.instance.key.clone(),
                    state: w.instance.state,
                    started_at: w.instance.started_at,
                    progressed_at: w.instance.progressed_at,
                    closed_at: w.instance.closed_at,
                },
                due_at: None,
                relink: false,
                findings: std::mem::take(&mut w.findings),
                absorbed: Vec::new(),
            })
            .collect();
        if !with_findings.is_empty() {
            self.commit_with(o, with_findings, Vec::new(), position, now, true)
                .await?;
        }
        self.commit_with(o, writes, Vec::new(), position, now, false)
            .await
    }

    /// Deliveries of the instances' events that became dead letters since the last look
    /// become `delivery_failed` findings on the instance (once per step). A dead letter of
    /// an event the monitor has not applied yet is looked at again later.
    async fn dead_letters(&self, o: &mut Owned, now: DateTime<Utc>) -> Result<(), Error> {
        if o.last_dead_letters
            .is_some_and(|t| t.elapsed() < self.settings.dead_letter_scan)
        {
            return Ok(());
        }
        o.last_dead_letters = Some(std::time::Instant::now());
        let found = self
            .store
            .list_deliveries(&DeliveryFilter {
                states: DeliveryState::DEAD_LETTERS.to_vec(),
                updated_since: Some(o.dead_since),
                limit: 1000,
                ..Default::default()
            })
            .await?;
        if found.is_empty() {
            return Ok(());
        }
        let mut next = found
            .iter()
            .map(|d| d.updated_at)
            .max()
            .unwrap_or(o.dead_since)
            + chrono::Duration::microseconds(1);
        let mut wanted: BTreeSet<(String, BusinessKey)> = BTreeSet::new();
        let mut items = Vec::new();
        for d in found {
            let Some(ev) = self.store.get_event(d.event_seq).await? else {
                continue;
            };
            if ev.position > o.position {
                next = next.min(d.updated_at);
                continue;
            }
            for wf in &self.workflows.list {
                self.want_aliases(o, &wf.name, &ev, &mut wanted);
            }
            items.push(d);
        }
        let mut work = if wanted.is_empty() {
            Working::default()
        } else {
            Working::load(
                self.store
                    .monitor_find(wanted.into_iter().collect())
                    .await?,
            )
        };
        for d in &items {
            let reason = d
                .last_error
                .clone()
                .unwrap_or_else(|| d.state.as_str().replace('_', " "));
            for slot in work.slots.iter_mut() {
                if !slot.instance.hits.iter().any(|h| h.seq == d.event_seq) {
                    continue;
                }
                let key = (
                    slot.instance.workflow.clone(),
                    slot.instance.version.clone(),
                );
                let Some(wf) = o.versions.get(&key) else {
                    continue;
                };
                if let Some(f) =
                    slot.instance
                        .delivery_failed(wf, d.event_seq, &d.flow, &reason, d.updated_at)
                {
                    slot.findings.push(f);
                    slot.dirty = true;
                }
            }
        }
        let writes = self.writes(o, work);
        o.dead_since = next;
        if !writes.is_empty() {
            o.prefetched = None;
        }
        let position = o.position;
        self.commit(o, writes, position, now).await
    }

    /// Archives closed instances and refreshes the instance gauges, now and then.
    async fn housekeeping(&self, o: &mut Owned, now: DateTime<Utc>) -> Result<(), Error> {
        self.dead_letters(o, now).await?;
        let every = std::time::Duration::from_secs(60);
        if o.last_archive.is_none_or(|t| t.elapsed() >= every) {
            o.last_archive = Some(std::time::Instant::now());
            let n = self
                .store
                .archive_instances(now - self.settings.archive_after, 1000)
                .await?;
            if n > 0 {
                tracing::info!(archived = n, "archived closed workflow instances");
            }
        }
        let every = std::time::Duration::from_secs(5);
        if o.last_gauges.is_none_or(|t| t.elapsed() >= every)
            && !self
                .counting
                .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            o.last_gauges = Some(std::time::Instant::now());
            let counting = self.counting.clone();
            // Counting every instance scans the table (hundreds of ms with a million): a
            // read of its own, so the loop is free when the next timer comes due.
            let store = self.store.clone();
            tokio::spawn(async move {
                match store.instance_counts().await {
                    Ok(counts) => {
                        for c in counts {
                            metrics::gauge!("switchyard_workflow_instances", "workflow" => c.workflow, "state" => c.state.as_str())
                                .set(c.count as f64);
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "counting workflow instances"),
                }
                counting.store(false, std::sync::atomic::Ordering::Release);
            });
        }
        Ok(())
    }
}

/// When an event's step happened: its `time`, never later than its receipt (which stands in
/// when it has none).
pub(crate) fn occurred_at(ev: &StoredEvent) -> DateTime<Utc> {
    ev.event
        .time
        .as_deref()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc).min(ev.received_at))
        .unwrap_or(ev.received_at)
}

/// The business measures of an applied step, as metrics (per workflow and step; dimensions
/// are not labels, to keep the series bounded).
fn measure(wf: &Workflow, i: &Instance, step: &str, first: bool, was_open: bool, new: bool) {
    let name = wf.name.clone();
    if new && i.hits.len() == 1 {
        metrics::counter!("switchyard_workflow_instances_started_total", "workflow" => name.clone())
            .increment(1);
    }
    if first && let Some(h) = i.hits.iter().find(|h| h.step == step) {
        let secs = (h.occurred_at - i.started_at).num_milliseconds().max(0) as f64 / 1000.0;
        metrics::histogram!("switchyard_workflow_step_seconds", "workflow" => name.clone(), "step" => step.to_string())
            .record(secs);
    }
    if was_open && !i.is_open() {
        let within = i.state == InstanceState::Completed;
        metrics::counter!("switchyard_workflow_instances_completed_total", "workflow" => name, "within_sla" => if within { "true" } else { "false" })
            .increment(1);
    }
}

fn hit(wf: &Workflow, step: usize, ev: &StoredEvent, occurred_at: DateTime<Utc>) -> Hit {
    Hit {
        step: wf.steps[step].name.clone(),
        seq: ev.seq,
        source: ev.event.source.clone(),
        id: ev.event.id.clone(),
        ty: ev.event.ty.clone(),
        occurred_at,
        received_at: ev.received_at,
    }
}
