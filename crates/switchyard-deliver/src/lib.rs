//! The delivery engine: takes due deliveries from the store's queue and sends them.
//!
//! - **Lanes.** One claim loop per priority lane (`critical`, `standard`, `bulk`), each with
//!   its own concurrency, so a bulk backlog never holds a critical delivery back. At a
//!   destination, free slots go to the most urgent lane first ([`gate::PriorityGate`]).
//! - **Hand-off.** Ingest routes an event ([`Engine::route`]) before it commits; deliveries
//!   for which its lane has a free slot are written already leased to this node, and
//!   [`Engine::handoff`] starts them the moment the commit returns — no second round trip.
//!   Everything else is claimed by the lanes from the store (any node may claim it).
//! - **Durability.** The result of an attempt is committed before anything else happens to
//!   the delivery; a node that dies mid-attempt leaves a lease that expires, and the delivery
//!   is sent again (at least once; the `Idempotency-Key` makes it exactly once for receivers
//!   that deduplicate).
//! - **Protection.** Per destination: a concurrency limit, a rate limit shared by all nodes
//!   (each takes rate ÷ live nodes), a circuit breaker, and a pause after a credential
//!   failure that lasts until an operator resumes it or a trial delivery after the
//!   cool-down succeeds.

pub mod destination;
pub mod gate;
pub mod odoo;
pub mod router;
pub mod smtp;

use chrono::{DateTime, Duration, Utc};
use destination::{Destination, HttpDestination, Outbound, Outcome};
use gate::{Admit, Circuit, CircuitState, Limiter, PriorityGate};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use switchyard_core::config::DeliveryConfig;
use switchyard_core::delivery::{ErrorClass, Lane, Next, idempotency_key, trace_id};
use switchyard_core::flows::{DestinationKind, Flows};
use switchyard_core::{CloudEvent, SharedClock};
use switchyard_store::{
    AttemptNext, AttemptResult, ClaimRequest, CreatedDelivery, DeliveryRecord, DeliveryState,
    DestinationPause, LeaseRequest, NewDelivery, SharedStore,
};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A destination with its protections.
struct Dest {
    sender: Arc<dyn Destination>,
    gate: Arc<PriorityGate>,
    limiter: Limiter,
    circuit: Circuit,
    cooldown: Duration,
    timeout: std::time::Duration,
    /// A trial delivery after a credential pause is out.
    trial: AtomicBool,
}

struct LaneState {
    slots: Arc<Semaphore>,
    concurrency: usize,
    wake: Notify,
    /// Attempts running now.
    active: AtomicUsize,
}

/// Counts an attempt as running in its lane while alive.
struct Active<'a>(&'a AtomicUsize);

impl<'a> Active<'a> {
    fn new(n: &'a AtomicUsize) -> Self {
        n.fetch_add(1, Ordering::Relaxed);
        Active(n)
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why a delivery is sent apart from the lanes' normal claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    /// The circuit is half-open.
    Circuit,
    /// The credential pause's cool-down is over.
    Trial,
}

struct Inner {
    store: SharedStore,
    clock: SharedClock,
    flows: Arc<Flows>,
    node: String,
    config: DeliveryConfig,
    dests: HashMap<String, Arc<Dest>>,
    lanes: [LaneState; 3],
    pauses: Mutex<HashMap<String, DestinationPause>>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    started: AtomicBool,
    /// Numbers lease owner tokens (`node#n`): one per claim or hand-off.
    claims: std::sync::atomic::AtomicU64,
    /// The lease a claim takes: `[delivery].lease_seconds`, at least the slowest
    /// destination's timeouts plus a margin, so an attempt rarely has to extend it.
    lease: Duration,
}

/// The engine; cheap to clone.
#[derive(Clone)]
pub struct Engine(Arc<Inner>);

/// Ingest's routing of one event: the deliveries to write with it, and the lane slots
/// reserved for those written leased.
pub struct Routing {
    pub deliveries: Vec<NewDelivery>,
    slots: Vec<Option<OwnedSemaphorePermit>>,
}

impl Routing {
    pub fn is_empty(&self) -> bool {
        self.deliveries.is_empty()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DestinationStatus {
    pub name: String,
    pub circuit: CircuitState,
    pub consecutive_failures: u32,
    pub circuit_open_until: Option<DateTime<Utc>>,
    pub circuit_opened_total: u64,
    pub paused: Option<DestinationPause>,
    pub slots_free: usize,
    /// Deliveries waiting for a slot, per lane.
    pub waiting: HashMap<&'static str, usize>,
    /// This node's share of the rate limit (requests/s), if limited.
    pub rate_share: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LaneStatus {
    pub lane: Lane,
    pub concurrency: usize,
    /// Deliveries of this lane being attempted (or waiting for a destination slot) now.
    pub in_flight: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("destination {name}: {message}")]
    Destination { name: String, message: String },
}

impl Engine {
    /// Builds the engine for `flows` (HTTP, Odoo and SMTP destinations from the configuration).
    /// Nothing runs until [`Engine::start`].
    pub fn new(
        store: SharedStore,
        clock: SharedClock,
        flows: Arc<Flows>,
        node: String,
        config: DeliveryConfig,
    ) -> Result<Engine, Error> {
        let mut dests = HashMap::new();
        // Per destination: deliveries that may wait for a request beyond its concurrency.
        let mut batching: HashMap<String, usize> = HashMap::new();
        for d in flows.destinations() {
            let c = &d.config;
            let failed = |message| Error::Destination {
                name: c.name.clone(),
                message,
            };
            let sender: Arc<dyn Destination> = match (c.kind, &d.odoo) {
                (DestinationKind::Odoo, Some(conn)) => Arc::new(
                    odoo::OdooDestination::new(&c.name, conn, &flows, c.concurrency as usize)
                        .map_err(failed)?,
                ),
                (DestinationKind::Odoo, None) => {
                    return Err(failed("no [[odoo]] connection".into()));
                }
                (DestinationKind::Http, _) => Arc::new(HttpDestination::new(c).map_err(failed)?),
                (DestinationKind::Smtp, _) => {
                    Arc::new(smtp::SmtpDestination::new(c).map_err(failed)?)
                }
            };
            // A destination that batches holds a full batch per request in flight plus the
            // next batch gathering while they all are: else every slot is taken by batches
            // in flight and the next call leaves with whatever arrived since.
            let batch = sender.batch_size().max(1);
            let waiting = if batch > 1 { batch } else { 0 };
            let capacity = c.concurrency as usize * batch + waiting;
            batching.insert(c.name.clone(), capacity - c.concurrency as usize);
            dests.insert(
                c.name.clone(),
                Arc::new(Dest {
                    sender,
                    gate: PriorityGate::new(capacity),
                    limiter: Limiter::new(c.rate_per_second, c.burst),
                    circuit: Circuit::new(
                        c.circuit.failures,
                        Duration::seconds(c.circuit.open_seconds as i64),
                    ),
                    cooldown: Duration::seconds(c.credential_cooldown_seconds as i64),
                    timeout: std::time::Duration::from_millis(budget_ms(d)),
                    trial: AtomicBool::new(false),
                }),
            );
        }
        let slowest = flows
            .destinations()
            .iter()
            .map(budget_ms)
            .max()
            .unwrap_or(0);
        let lease = Duration::seconds(config.lease_seconds as i64)
            .max(Duration::milliseconds(slowest as i64) + Duration::seconds(10));
        // A lane's concurrency counts requests: deliveries waiting to ride along in a batch
        // get slots of their own.
        let lane = |l: Lane| {
            let waiting: usize = flows
                .flows()
                .iter()
                .filter(|f| f.lane == l)
                .map(|f| f.destination.as_str())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .map(|d| batching.get(d).copied().unwrap_or(0))
                .sum();
            let n = config.lanes.of(l).max(1) as usize + waiting;
            LaneState {
                slots: Arc::new(Semaphore::new(n)),
                concurrency: n,
                wake: Notify::new(),
                active: AtomicUsize::new(0),
            }
        };
        let lanes = [lane(Lane::Critical), lane(Lane::Standard), lane(Lane::Bulk)];
        Ok(Engine(Arc::new(Inner {
            store,
            clock,
            flows,
            node,
            lanes,
            config,
            dests,
            pauses: Mutex::new(HashMap::new()),
            cancel: CancellationToken::new(),
            tracker: TaskTracker::new(),
            started: AtomicBool::new(false),
            claims: std::sync::atomic::AtomicU64::new(0),
            lease,
        })))
    }

    pub fn flows(&self) -> &Arc<Flows> {
        &self.0.flows
    }

    /// Starts the lane loops and the background refreshers (pauses, live nodes, queue
    /// gauges). Does nothing when there are no flows.
    pub async fn start(&self) {
        if self.0.flows.is_empty() || self.0.started.swap(true, Ordering::SeqCst) {
            return;
        }
        self.0.refresh_pauses().await;
        for lane in Lane::ALL {
            let inner = self.0.clone();
            self.0
                .tracker
                .spawn(async move { inner.lane_loop(lane).await });
        }
        let inner = self.0.clone();
        self.0.tracker.spawn(async move { inner.refresher().await });
    }

    /// Stops claiming, waits up to `grace` for attempts in flight to finish and record their
    /// result. Attempts still running after that are abandoned; their leases expire and
    /// the deliveries are sent again.
    pub async fn shutdown(&self, grace: std::time::Duration) {
        self.0.cancel.cancel();
        self.0.tracker.close();
        if tokio::time::timeout(grace, self.0.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "delivery attempts still running at shutdown; their leases will expire and they will be sent again"
            );
        }
    }

    /// Routes an event through every flow that selects it, reserving lane slots for the
    /// deliveries this node can start at once (those are written leased to it).
    pub fn route(&self, event: &CloudEvent) -> Routing {
        let inner = &self.0;
        let mut deliveries = router::route(&inner.flows, event);
        let mut slots = Vec::with_capacity(deliveries.len());
        let started = inner.started.load(Ordering::Relaxed) && !inner.cancel.is_cancelled();
        let now = inner.clock.now();
        for d in &mut deliveries {
            let mut slot = None;
            if started
                && d.state == DeliveryState::Scheduled
                && inner.open_for_handoff(&d.destination, now)
                && let Ok(p) = inner.lanes[d.lane.rank() as usize]
                    .slots
                    .clone()
                    .try_acquire_owned()
            {
                d.lease = Some(LeaseRequest {
                    owner: inner.owner_token(),
                    until: Utc::now() + inner.lease(),
                });
                slot = Some(p);
            }
            slots.push(slot);
        }
        Routing { deliveries, slots }
    }

    /// After the event's commit: starts the deliveries written leased to this node, and
    /// wakes the lanes for the others.
    pub fn handoff(
        &self,
        event: &CloudEvent,
        seq: i64,
        received_at: DateTime<Utc>,
        routing: Routing,
        created: Vec<CreatedDelivery>,
    ) {
        let inner = &self.0;
        if created.is_empty() {
            return; // a duplicate: its first copy's deliveries stand
        }
        let mut wake = [false; 3];
        for ((d, slot), c) in routing
            .deliveries
            .into_iter()
            .zip(routing.slots)
            .zip(created)
        {
            metrics::counter!("switchyard_routing_outcomes_total", "flow" => d.flow.clone(), "outcome" => d.state.as_str())
                .increment(1);
            match (c.leased, slot) {
                (true, Some(slot)) => {
                    let record = DeliveryRecord {
                        id: c.id,
                        event_seq: seq,
                        event_source: event.source.clone(),
                        event_id: event.id.clone(),
                        event_type: event.ty.clone(),
                        received_at,
                        flow: d.flow,
                        flow_version: d.flow_version,
                        destination: d.destination,
                        lane: d.lane,
                        ordering_key: d.ordering_key,
                        hold_on_dead: d.hold_on_dead,
                        state: DeliveryState::Delivering,
                        payload: d.payload,
                        traceparent: d.traceparent,
                        generation: 0,
                        attempts: 0,
                        created_at: received_at,
                        updated_at: received_at,
                        next_attempt_at: Some(received_at),
                        delivered_at: None,
                        lease_until: d.lease.as_ref().map(|l| l.until),
                        lease_owner: d.lease.map(|l| l.owner),
                        error_class: None,
                        last_error: None,
                        last_status: None,
                        error_detail: None,
                        cursor: None,
                    };
                    let task = inner.clone();
                    inner
                        .tracker
                        .spawn(async move { task.attempt(record, slot, None).await });
                }
                (_, slot) => {
                    drop(slot);
                    if d.state == DeliveryState::Scheduled {
                        wake[d.lane.rank() as usize] = true;
                    }
                }
            }
        }
        for lane in Lane::ALL {
            if wake[lane.rank() as usize] {
                inner.lanes[lane.rank() as usize].wake.notify_one();
            }
        }
    }

    /// Wakes every lane (new work written by a replay or a backfill).
    pub fn wake(&self) {
        for l in &self.0.lanes {
            l.wake.notify_one();
        }
    }

    /// Forgets a pause this node knew of (an operator resumed the destination).
    pub fn resumed(&self, destination: &str) {
        self.0.pauses.lock().expect("pauses").remove(destination);
        if let Some(d) = self.0.dests.get(destination) {
            d.trial.store(false, Ordering::SeqCst);
        }
        self.wake();
    }

    pub fn destinations(&self) -> Vec<DestinationStatus> {
        let now = self.0.clock.now();
        let pauses = self.0.pauses.lock().expect("pauses").clone();
        let mut out: Vec<DestinationStatus> = self
            .0
            .dests
            .iter()
            .map(|(name, d)| {
                let w = d.gate.waiting();
                DestinationStatus {
                    name: name.clone(),
                    circuit: d.circuit.state(now),
                    consecutive_failures: d.circuit.consecutive_failures(),
                    circuit_open_until: d.circuit.open_until(),
                    circuit_opened_total: d.circuit.opened_total(),
                    paused: pauses.get(name).cloned(),
                    slots_free: d.gate.free(),
                    waiting: Lane::ALL
                        .into_iter()
                        .map(|l| (l.as_str(), w[l.rank() as usize]))
                        .collect(),
                    rate_share: d.limiter.share(),
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    pub fn lanes(&self) -> Vec<LaneStatus> {
        Lane::ALL
            .into_iter()
            .map(|l| {
                let s = &self.0.lanes[l.rank() as usize];
                LaneStatus {
                    lane: l,
                    concurrency: s.concurrency,
                    in_flight: s.active.load(Ordering::Relaxed),
                }
            })
            .collect()
    }
}

/// The longest one attempt at `d` may take: an HTTP request's timeouts, or for Odoo a few
/// of the connection's calls (an operation reads before it writes; a call runs steps).
fn budget_ms(d: &switchyard_core::flows::Destination) -> u64 {
    match &d.odoo {
        Some(o) => o.timeout_seconds * 1000 * 3,
        None => d.config.timeout_ms + d.config.connect_timeout_ms,
    }
}

impl Inner {
    fn lease(&self) -> Duration {
        self.lease
    }

    /// A fresh lease owner token for this node.
    fn owner_token(&self) -> String {
        let n = self.claims.fetch_add(1, Ordering::Relaxed);
        format!("{}#{n}", self.node)
    }

    /// Whether a new delivery to `destination` may be started at once (not paused, circuit
    /// closed).
    fn open_for_handoff(&self, destination: &str, now: DateTime<Utc>) -> bool {
        let Some(d) = self.dests.get(destination) else {
            return false;
        };
        d.circuit.state(now) == CircuitState::Closed
            && !self
                .pauses
                .lock()
                .expect("pauses")
                .contains_key(destination)
    }

    /// Destinations the lanes must not claim for, and the probes and trials due now (each
    /// reserved: one at a time per destination).
    fn blocked(&self, now: DateTime<Utc>) -> (Vec<String>, Vec<(String, Probe)>) {
        let pauses = self.pauses.lock().expect("pauses").clone();
        let mut exclude = Vec::new();
        let mut probes = Vec::new();
        for (name, d) in &self.dests {
            if let Some(p) = pauses.get(name) {
                exclude.push(name.clone());
                if now >= p.resume_after && !d.trial.swap(true, Ordering::SeqCst) {
                    probes.push((name.clone(), Probe::Trial));
                }
                continue;
            }
            match d.circuit.admit(now) {
                Admit::All => {}
                Admit::Probe => {
                    exclude.push(name.clone());
                    probes.push((name.clone(), Probe::Circuit));
                }
                Admit::None => exclude.push(name.clone()),
            }
        }
        (exclude, probes)
    }

    fn cancel_probe(&self, dest: &str, probe: Probe) {
        if let Some(d) = self.dests.get(dest) {
            match probe {
                Probe::Circuit => d.circuit.cancel_probe(),
                Probe::Trial => d.trial.store(false, Ordering::SeqCst),
            }
        }
    }

    async fn lane_loop(self: Arc<Self>, lane: Lane) {
        let state = &self.lanes[lane.rank() as usize];
        let poll = std::time::Duration::from_millis(self.config.poll_ms);
        loop {
            let first = tokio::select! {
                p = state.slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                _ = self.cancel.cancelled() => return,
            };
            let mut slots = vec![first];
            while slots.len() < 256 {
                match state.slots.clone().try_acquire_owned() {
                    Ok(p) => slots.push(p),
                    Err(_) => break,
                }
            }
            let now = self.clock.now();
            let (exclude, probes) = self.blocked(now);
            let mut claimed = 0usize;
            for (dest, probe) in probes {
                let got = if slots.is_empty() {
                    Vec::new()
                } else {
                    self.claim(lane, 1, Vec::new(), Some(dest.clone()), now)
                        .await
                };
                match got.into_iter().next() {
                    Some(d) => {
                        claimed += 1;
                        let slot = slots.pop().expect("a slot per claim");
                        let task = self.clone();
                        self.tracker
                            .spawn(async move { task.attempt(d, slot, Some(probe)).await });
                    }
                    None => self.cancel_probe(&dest, probe),
                }
            }
            if !slots.is_empty() {
                let got = self.claim(lane, slots.len(), exclude, None, now).await;
                for d in got {
                    claimed += 1;
                    let slot = slots.pop().expect("claims never exceed the limit");
                    let task = self.clone();
                    self.tracker
                        .spawn(async move { task.attempt(d, slot, None).await });
                }
            }
            let all_used = slots.is_empty();
            drop(slots);
            if claimed == 0 || !all_used {
                tokio::select! {
                    _ = state.wake.notified() => {}
                    _ = tokio::time::sleep(poll) => {}
                    _ = self.cancel.cancelled() => return,
                }
            }
        }
    }

    async fn claim(
        &self,
        lane: Lane,
        limit: usize,
        exclude: Vec<String>,
        only: Option<String>,
        now: DateTime<Utc>,
    ) -> Vec<DeliveryRecord> {
        let real_now = Utc::now();
        let req = ClaimRequest {
            owner: self.owner_token(),
            lane,
            limit,
            now,
            real_now,
            lease_until: real_now + self.lease(),
            exclude,
            only,
        };
        match self.store.claim_deliveries(req).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, lane = lane.as_str(), "cannot claim deliveries");
                metrics::counter!("switchyard_delivery_claim_errors_total").increment(1);
                Vec::new()
            }
        }
    }

    /// One attempt of one delivery, its result recorded durably.
    async fn attempt(
        self: Arc<Self>,
        d: DeliveryRecord,
        _slot: OwnedSemaphorePermit,
        probe: Option<Probe>,
    ) {
        let _active = Active::new(&self.lanes[d.lane.rank() as usize].active);
        let labels = [
            ("flow", d.flow.clone()),
            ("destination", d.destination.clone()),
        ];
        let Some(dest) = self.dests.get(&d.destination).cloned() else {
            let reason = format!(
                "destination \"{}\" is no longer configured; replay after adding it back",
                d.destination
            );
            self.dead_untried(&d, ErrorClass::Permanent, reason).await;
            return;
        };
        let Some(payload) = d.payload.clone() else {
            if let Some(p) = probe {
                self.cancel_probe(&d.destination, p);
            }
            let reason =
                "no payload to send (mapping never succeeded); replay re-routes it".to_string();
            self.dead_untried(&d, ErrorClass::Mapping, reason).await;
            return;
        };
        let owner = d.lease_owner.as_deref().unwrap_or_default();
        let gate = dest.gate.acquire(d.lane).await;
        dest.limiter.until_ready().await;
        // The circuit may have opened, or the destination been paused, while this delivery
        // waited: give it back untried rather than send into a known failure.
        if probe.is_none() {
            let now = self.clock.now();
            let paused = self
                .pauses
                .lock()
                .expect("pauses")
                .contains_key(&d.destination);
            if paused || dest.circuit.state(now) != CircuitState::Closed {
                if let Err(e) = self.store.release_deliveries(vec![d.id], owner).await {
                    tracing::warn!(error = %e, delivery = d.id, "cannot give a delivery back; its lease will expire");
                }
                return;
            }
        }
        // Waiting for a slot or a token may have taken a while: keep the lease comfortably
        // ahead of the request's own timeout.
        if let Some(until) = d.lease_until {
            let need = Utc::now()
                + Duration::from_std(dest.timeout).unwrap_or(Duration::seconds(30))
                + Duration::seconds(5);
            if until < need {
                match self
                    .store
                    .extend_delivery_lease(d.id, owner, need + self.lease())
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::debug!(
                            delivery = d.id,
                            "lease lost while waiting; the delivery was claimed again"
                        );
                        if let Some(p) = probe {
                            self.cancel_probe(&d.destination, p);
                        }
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, delivery = d.id, "cannot extend a lease; leaving the delivery for later");
                        if let Some(p) = probe {
                            self.cancel_probe(&d.destination, p);
                        }
                        return;
                    }
                }
            }
        }
        let key = idempotency_key(&d.flow, &d.event_source, &d.event_id, d.generation);
        let span: u64 = rand::random::<u64>() | 1;
        let traceparent = format!(
            "00-{}-{span:016x}-01",
            trace_id(d.traceparent.as_deref(), &d.event_source, &d.event_id)
        );
        let out = Outbound {
            payload: &payload,
            idempotency_key: &key,
            traceparent: &traceparent,
            flow: &d.flow,
            event_source: &d.event_source,
            event_id: &d.event_id,
            event_type: &d.event_type,
            cursor: d.cursor.as_ref(),
        };
        let started_real = std::time::Instant::now();
        let started = self.clock.now();
        let (outcome, cursor) = dest.sender.send_from_cursor(&out, started).await;
        // The request is over: its destination slot is free for the next one while the
        // result commits (the lane slot is held until then).
        drop(gate);
        let elapsed = started_real.elapsed().as_secs_f64();
        metrics::histogram!("switchyard_delivery_attempt_seconds", &labels).record(elapsed);
        let now = self.clock.now();
        let retry = self
            .flows
            .flow(&d.flow)
            .map(|f| f.retry)
            .unwrap_or_default();
        match outcome {
            Outcome::Delivered { status, excerpt } => {
                dest.circuit.success();
                self.record(
                    &d,
                    Some(started),
                    elapsed,
                    status,
                    excerpt,
                    None,
                    None,
                    AttemptNext::Delivered,
                    cursor,
                )
                .await;
                metrics::counter!("switchyard_deliveries_total", &labels).increment(1);
                let latency = (now - d.received_at).num_microseconds().unwrap_or(0) as f64 / 1e6;
                metrics::histogram!("switchyard_delivery_latency_seconds", &labels)
                    .record(latency.max(0.0));
                if probe == Some(Probe::Trial) {
                    match self
                        .store
                        .resume_destination(
                            &d.destination,
                            "system",
                            "a trial delivery after the cool-down succeeded",
                            now,
                        )
                        .await
                    {
                        Ok(_) => {
                            self.pauses.lock().expect("pauses").remove(&d.destination);
                            tracing::info!(destination = %d.destination, "destination resumed after a successful trial delivery");
                        }
                        Err(e) => tracing::warn!(error = %e, "cannot record the resumption"),
                    }
                    dest.trial.store(false, Ordering::SeqCst);
                    self.wake_all();
                }
            }
            Outcome::Failed {
                failure,
                status,
                excerpt,
                retry_after,
                message,
            } => {
                let class = dest.sender.classify(failure, excerpt.as_deref());
                metrics::counter!("switchyard_delivery_failures_total", "flow" => d.flow.clone(), "destination" => d.destination.clone(), "class" => class.as_str())
                    .increment(1);
                let next = match class {
                    ErrorClass::Transient => {
                        if dest.circuit.failure(now) {
                            tracing::warn!(destination = %d.destination, "circuit opened after consecutive transient failures");
                        }
                        let jitter: f64 = rand::random();
                        match retry.next(
                            (d.attempts + 1) as u32,
                            d.created_at,
                            now,
                            jitter,
                            retry_after,
                            &message,
                        ) {
                            Next::RetryAt(at) => {
                                metrics::counter!("switchyard_delivery_retries_total", &labels)
                                    .increment(1);
                                AttemptNext::RetryAt(at)
                            }
                            Next::Dead(reason) => AttemptNext::Dead(reason),
                        }
                    }
                    ErrorClass::Credential => {
                        if probe == Some(Probe::Circuit) {
                            // the pause governs now; the circuit's probe is not spent
                            dest.circuit.cancel_probe();
                        }
                        let resume_after = now + dest.cooldown;
                        self.pauses.lock().expect("pauses").insert(
                            d.destination.clone(),
                            DestinationPause {
                                destination: d.destination.clone(),
                                paused_at: now,
                                resume_after,
                                reason: message.clone(),
                            },
                        );
                        if probe == Some(Probe::Trial) {
                            dest.trial.store(false, Ordering::SeqCst);
                        }
                        tracing::warn!(destination = %d.destination, error = %message, "credentials refused: destination paused");
                        AttemptNext::Pause {
                            retry_at: now,
                            resume_after,
                        }
                    }
                    ErrorClass::Permanent | ErrorClass::Mapping | ErrorClass::Invalid => {
                        // The destination answered: it is up, this payload is the problem.
                        dest.circuit.success();
                        AttemptNext::Dead(format!("{} failure: {message}", class.as_str()))
                    }
                };
                if let AttemptNext::Dead(_) = next {
                    metrics::counter!("switchyard_dead_letters_total", "flow" => d.flow.clone(), "destination" => d.destination.clone(), "class" => class.as_str())
                        .increment(1);
                }
                self.record(
                    &d,
                    Some(started),
                    elapsed,
                    status,
                    excerpt,
                    Some(class),
                    Some(message),
                    next,
                    cursor,
                )
                .await;
                if probe == Some(Probe::Trial) && class != ErrorClass::Credential {
                    dest.trial.store(false, Ordering::SeqCst);
                }
            }
        }
        if d.ordering_key.is_some() {
            self.lanes[d.lane.rank() as usize].wake.notify_one();
        }
    }

    /// Dead-letters a delivery that cannot even be attempted (recorded as an attempt that
    /// sent nothing).
    async fn dead_untried(&self, d: &DeliveryRecord, class: ErrorClass, reason: String) {
        metrics::counter!("switchyard_dead_letters_total", "flow" => d.flow.clone(), "destination" => d.destination.clone(), "class" => class.as_str())
            .increment(1);
        self.record(
            d,
            None,
            0.0,
            None,
            None,
            Some(class),
            Some(reason.clone()),
            AttemptNext::Dead(reason),
            None,
        )
        .await;
    }

    fn wake_all(&self) {
        for l in &self.lanes {
            l.wake.notify_one();
        }
    }

    /// Commits an attempt's result, retrying while the store is unavailable (the lease
    /// keeps the delivery ours meanwhile; if it expires first, the delivery is sent again).
    #[allow(clippy::too_many_arguments)]
    async fn record(
        &self,
        d: &DeliveryRecord,
        started: Option<DateTime<Utc>>,
        elapsed: f64,
        status: Option<u16>,
        excerpt: Option<String>,
        class: Option<ErrorClass>,
        error: Option<String>,
        next: AttemptNext,
        cursor: Option<serde_json::Value>,
    ) {
        let now = self.clock.now();
        let result = AttemptResult {
            delivery_id: d.id,
            owner: d.lease_owner.clone().unwrap_or_default(),
            node: self.node.clone(),
            generation: d.generation,
            started_at: started.unwrap_or(now),
            duration_ms: elapsed * 1000.0,
            status: status.map(i32::from),
            response_excerpt: excerpt,
            class,
            error,
            next,
            now,
            cursor,
        };
        let mut wait = std::time::Duration::from_millis(50);
        loop {
            match self.store.complete_attempt(result.clone()).await {
                Ok(true) => return,
                Ok(false) => {
                    tracing::info!(
                        delivery = d.id,
                        "attempt recorded, but the lease had passed on (expired and claimed again)"
                    );
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, delivery = d.id, "cannot record an attempt; retrying");
                    metrics::counter!("switchyard_delivery_record_errors_total").increment(1);
                    if self.cancel.is_cancelled() && wait > std::time::Duration::from_secs(2) {
                        return;
                    }
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(std::time::Duration::from_secs(5));
                }
            }
        }
    }

    async fn refresh_pauses(&self) {
        match self.store.destination_pauses().await {
            Ok(list) => {
                let mut p = self.pauses.lock().expect("pauses");
                *p = list
                    .into_iter()
                    .map(|x| (x.destination.clone(), x))
                    .collect();
                for name in self.dests.keys() {
                    metrics::gauge!("switchyard_destination_paused", "destination" => name.clone())
                        .set(if p.contains_key(name) { 1.0 } else { 0.0 });
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read destination pauses"),
        }
    }

    /// Pauses (every second), live nodes for the shared rate limits and the queue gauges
    /// (every 5 seconds), circuit gauges.
    async fn refresher(self: Arc<Self>) {
        let mut tick = 0u64;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                _ = self.cancel.cancelled() => return,
            }
            tick += 1;
            self.refresh_pauses().await;
            let now = self.clock.now();
            for (name, d) in &self.dests {
                metrics::gauge!("switchyard_destination_circuit_state", "destination" => name.clone())
                    .set(d.circuit.state(now).gauge());
            }
            if tick % 5 == 1 {
                self.sample_queue(now).await;
                if let Ok(nodes) = self.store.list_nodes().await {
                    let live_since = Utc::now() - Duration::seconds(30);
                    let live = nodes
                        .iter()
                        .filter(|n| n.heartbeat_at >= live_since)
                        .count();
                    for d in self.dests.values() {
                        d.limiter.set_nodes(live.max(1));
                    }
                }
            }
        }
    }

    async fn sample_queue(&self, now: DateTime<Utc>) {
        let Ok(stats) = self.store.delivery_stats().await else {
            return;
        };
        let mut depth: HashMap<(String, String, Lane), i64> = HashMap::new();
        let mut oldest: HashMap<(String, String), DateTime<Utc>> = HashMap::new();
        for f in self.flows.flows() {
            depth.insert((f.name.clone(), f.destination.clone(), f.lane), 0);
            oldest.insert((f.name.clone(), f.destination.clone()), now);
        }
        for s in &stats {
            if s.state.is_pending() {
                *depth
                    .entry((s.flow.clone(), s.destination.clone(), s.lane))
                    .or_default() += s.count;
                let o = oldest
                    .entry((s.flow.clone(), s.destination.clone()))
                    .or_insert(now);
                *o = (*o).min(s.oldest_created_at);
            }
        }
        for ((flow, destination, lane), n) in depth {
            metrics::gauge!("switchyard_delivery_queue_depth", "flow" => flow, "destination" => destination, "lane" => lane.as_str())
                .set(n as f64);
        }
        for ((flow, destination), t) in oldest {
            let age = (now - t).num_milliseconds().max(0) as f64 / 1000.0;
            metrics::gauge!("switchyard_delivery_oldest_undelivered_seconds", "flow" => flow, "destination" => destination)
                .set(age);
        }
        // Every (flow, state) of the configured flows is set, zero included, so a state
        // that emptied does not keep its last count.
        let mut records: HashMap<(String, String, &'static str), i64> = HashMap::new();
        for f in self.flows.flows() {
            for st in DeliveryState::ALL {
                records.insert((f.name.clone(), f.destination.clone(), st.as_str()), 0);
            }
        }
        for s in stats {
            *records
                .entry((s.flow, s.destination, s.state.as_str()))
                .or_default() += s.count;
        }
        for ((flow, destination, state), n) in records {
            metrics::gauge!("switchyard_delivery_records", "flow" => flow, "destination" => destination, "state" => state)
                .set(n as f64);
        }
    }
}
