//! Per-destination protection: a concurrency limit that serves the most urgent lane first,
//! a token-bucket rate limit (governor), and a circuit breaker.

use chrono::{DateTime, Duration, Utc};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::Serialize;
use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use switchyard_core::delivery::Lane;
use tokio::sync::oneshot;

/// A counting semaphore whose waiters are served by lane (critical first), then in arrival
/// order: a bulk backlog waiting for a slow destination never makes a critical delivery
/// wait longer than for the next free slot.
pub struct PriorityGate {
    state: Mutex<GateState>,
}

struct GateState {
    free: usize,
    waiters: [VecDeque<oneshot::Sender<()>>; 3],
}

/// Holds one slot; dropping it gives the slot to the most urgent waiter.
pub struct Slot {
    gate: Arc<PriorityGate>,
}

impl PriorityGate {
    pub fn new(slots: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(GateState {
                free: slots,
                waiters: Default::default(),
            }),
        })
    }

    pub async fn acquire(self: &Arc<Self>, lane: Lane) -> Slot {
        let rx = {
            let mut s = self.state.lock().expect("gate lock");
            if s.free > 0 {
                s.free -= 1;
                return Slot { gate: self.clone() };
            }
            let (tx, rx) = oneshot::channel();
            s.waiters[lane.rank() as usize].push_back(tx);
            rx
        };
        // The sender hands the slot over by sending; if it is dropped unsent (cannot
        // happen while the gate lives) fall back to competing again.
        match rx.await {
            Ok(()) => Slot { gate: self.clone() },
            Err(_) => Box::pin(self.acquire(lane)).await,
        }
    }

    fn release(&self) {
        let mut s = self.state.lock().expect("gate lock");
        for q in s.waiters.iter_mut() {
            while let Some(w) = q.pop_front() {
                if w.send(()).is_ok() {
                    return;
                }
                // that waiter gave up (its task was cancelled); try the next
            }
        }
        s.free += 1;
    }

    /// Waiting acquirers per lane (critical, standard, bulk).
    pub fn waiting(&self) -> [usize; 3] {
        let s = self.state.lock().expect("gate lock");
        [s.waiters[0].len(), s.waiters[1].len(), s.waiters[2].len()]
    }

    pub fn free(&self) -> usize {
        self.state.lock().expect("gate lock").free
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.gate.release();
    }
}

/// The node's share of a destination's rate limit: the configured rate divided by the
/// nodes alive, so several nodes together stay within it.
pub struct Limiter {
    rate: Option<f64>,
    burst: Option<u32>,
    current: Mutex<(usize, Option<Arc<DefaultDirectRateLimiter>>)>,
}

impl Limiter {
    pub fn new(rate: Option<f64>, burst: Option<u32>) -> Self {
        let l = Self {
            rate,
            burst,
            current: Mutex::new((0, None)),
        };
        l.set_nodes(1);
        l
    }

    /// Rebuilds the bucket when the number of live nodes changed.
    pub fn set_nodes(&self, nodes: usize) {
        let nodes = nodes.max(1);
        let mut cur = self.current.lock().expect("limiter lock");
        if cur.0 == nodes {
            return;
        }
        let limiter = self.rate.map(|rate| {
            let share = (rate / nodes as f64).max(0.001);
            let period = std::time::Duration::from_secs_f64(1.0 / share);
            let burst = self
                .burst
                .map(|b| (b as usize).div_ceil(nodes) as u32)
                .unwrap_or_else(|| share.ceil() as u32)
                .max(1);
            let quota = Quota::with_period(period)
                .expect("period is positive")
                .allow_burst(NonZeroU32::new(burst).expect("burst is at least 1"));
            Arc::new(RateLimiter::direct(quota))
        });
        *cur = (nodes, limiter);
    }

    /// Waits for a token (real time).
    pub async fn until_ready(&self) {
        let l = self.current.lock().expect("limiter lock").1.clone();
        if let Some(l) = l {
            l.until_ready().await;
        }
    }

    /// This node's share in requests per second, if limited.
    pub fn share(&self) -> Option<f64> {
        let cur = self.current.lock().expect("limiter lock");
        self.rate.map(|r| r / cur.0 as f64)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    Closed,
    /// One probe delivery is allowed.
    HalfOpen,
    Open,
}

impl CircuitState {
    pub fn gauge(self) -> f64 {
        match self {
            CircuitState::Closed => 0.0,
            CircuitState::HalfOpen => 1.0,
            CircuitState::Open => 2.0,
        }
    }
}

/// Opens after `threshold` consecutive transient failures; after `open_for` (business time)
/// lets one probe through (half-open); closes on its success, opens again on its failure.
pub struct Circuit {
    threshold: u32,
    open_for: Duration,
    state: Mutex<CircuitInner>,
}

#[derive(Debug, Clone, Copy)]
struct CircuitInner {
    failures: u32,
    open_until: Option<DateTime<Utc>>,
    probing: bool,
    opened_total: u64,
}

/// What the circuit lets through now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    All,
    /// Only one probe (and this caller may send it).
    Probe,
    None,
}

impl Circuit {
    pub fn new(threshold: u32, open_for: Duration) -> Self {
        Self {
            threshold,
            open_for,
            state: Mutex::new(CircuitInner {
                failures: 0,
                open_until: None,
                probing: false,
                opened_total: 0,
            }),
        }
    }

    pub fn state(&self, now: DateTime<Utc>) -> CircuitState {
        let s = self.state.lock().expect("circuit lock");
        match s.open_until {
            None => CircuitState::Closed,
            Some(t) if now >= t => CircuitState::HalfOpen,
            Some(_) => CircuitState::Open,
        }
    }

    /// Whether claims for this destination may go ahead; `Probe` reserves the one probe.
    pub fn admit(&self, now: DateTime<Utc>) -> Admit {
        let mut s = self.state.lock().expect("circuit lock");
        match s.open_until {
            None => Admit::All,
            Some(t) if now >= t && !s.probing => {
                s.probing = true;
                Admit::Probe
            }
            Some(_) => Admit::None,
        }
    }

    /// Gives an unused probe back (nothing was due).
    pub fn cancel_probe(&self) {
        self.state.lock().expect("circuit lock").probing = false;
    }

    pub fn success(&self) {
        let mut s = self.state.lock().expect("circuit lock");
        s.failures = 0;
        s.open_until = None;
        s.probing = false;
    }

    /// A transient failure; `true` when it opened the circuit.
    pub fn failure(&self, now: DateTime<Utc>) -> bool {
        let mut s = self.state.lock().expect("circuit lock");
        s.failures += 1;
        let was_open = s.open_until.is_some();
        if s.probing || s.failures >= self.threshold {
            s.open_until = Some(now + self.open_for);
            s.probing = false;
            if !was_open {
                s.opened_total += 1;
                return true;
            }
        }
        false
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.state.lock().expect("circuit lock").failures
    }

    pub fn open_until(&self) -> Option<DateTime<Utc>> {
        self.state.lock().expect("circuit lock").open_until
    }

    pub fn opened_total(&self) -> u64 {
        self.state.lock().expect("circuit lock").opened_total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn critical_waiters_get_the_next_slot() {
        let gate = PriorityGate::new(1);
        let held = gate.acquire(Lane::Bulk).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (i, lane) in [Lane::Bulk, Lane::Bulk, Lane::Critical, Lane::Standard]
            .into_iter()
            .enumerate()
        {
            let (g, order) = (gate.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _slot = g.acquire(lane).await;
                order.lock().unwrap().push((i, lane));
            }));
            // let each waiter queue before the next
            while gate.waiting().iter().sum::<usize>() < i + 1 {
                tokio::task::yield_now().await;
            }
        }
        assert_eq!(gate.waiting(), [1, 1, 2]);
        drop(held);
        for t in tasks {
            t.await.unwrap();
        }
        let lanes: Vec<Lane> = order.lock().unwrap().iter().map(|x| x.1).collect();
        assert_eq!(
            lanes,
            vec![Lane::Critical, Lane::Standard, Lane::Bulk, Lane::Bulk]
        );
        assert_eq!(gate.free(), 1);
    }

    #[test]
    fn circuit_opens_probes_and_closes() {
        let t = Utc::now();
        let c = Circuit::new(3, Duration::seconds(30));
        assert_eq!(c.admit(t), Admit::All);
        assert!(!c.failure(t));
        assert!(!c.failure(t));
        assert!(c.failure(t), "third consecutive failure opens");
        assert_eq!(c.state(t), CircuitState::Open);
        assert_eq!(c.admit(t + Duration::seconds(29)), Admit::None);
        let later = t + Duration::seconds(30);
        assert_eq!(c.state(later), CircuitState::HalfOpen);
        assert_eq!(c.admit(later), Admit::Probe);
        assert_eq!(c.admit(later), Admit::None, "one probe at a time");
        // The probe fails: open again for another period.
        c.failure(later);
        assert_eq!(c.state(later + Duration::seconds(1)), CircuitState::Open);
        let again = later + Duration::seconds(30);
        assert_eq!(c.admit(again), Admit::Probe);
        c.success();
        assert_eq!(c.state(again), CircuitState::Closed);
        assert_eq!(c.admit(again), Admit::All);
        assert_eq!(c.opened_total(), 1);
        // A success resets the count.
        c.failure(again);
        c.failure(again);
        c.success();
        c.failure(again);
        assert_eq!(c.state(again), CircuitState::Closed);
    }

    #[test]
    fn limiter_share_divides_by_nodes() {
        let l = Limiter::new(Some(100.0), Some(10));
        assert_eq!(l.share(), Some(100.0));
        l.set_nodes(4);
        assert_eq!(l.share(), Some(25.0));
        assert_eq!(Limiter::new(None, None).share(), None);
    }
}
