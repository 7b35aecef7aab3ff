//! Model-based test of the delivery queue on SQLite: random sequences of enqueues, claims,
//! attempt results, lease expiries, clock moves, replays, discards and restarts (close and
//! reopen the same file), each checked against a small in-memory model of the queue.
//!
//! After every step every delivery must exist in exactly the state the model predicts
//! (nothing lost, across restarts too), and:
//! - a claim returns exactly the due, unblocked deliveries the model picks (oldest due first,
//!   at most `limit`): never one that is not due, never one whose ordering key has an earlier
//!   blocking delivery (pending, or dead-lettered with `hold_on_dead`), never one another
//!   owner still holds, never one already delivered;
//! - a result from anyone but the current holder of the current generation changes nothing
//!   (`Ok(false)`), in particular after the delivery succeeded;
//! - `attempts` equals the counted results of the current generation, and every result
//!   (applied or not) is in the attempt history.

use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::prelude::*;
use proptest::sample::Index;
use std::collections::BTreeMap;
use std::path::Path;
use switchyard_core::delivery::{ErrorClass, Lane};
use switchyard_store::conformance::{delivery, event};
use switchyard_store::{
    AttemptNext, AttemptResult, ClaimRequest, DeliveryFilter, DeliveryRecord, DeliveryState, Error,
    LeaseRequest, Replay, SharedStore, StoreOptions,
};

const LEASE_SECONDS: i64 = 30;
const OWNERS: [&str; 2] = ["node-a", "node-b"];
const DESTINATIONS: [&str; 2] = ["wms", "erp"];
const KEYS: [&str; 2] = ["order-1", "order-2"];
const LANE: Lane = Lane::Standard;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 8, 0, 0).unwrap()
}

/// How an attempt ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Delivered,
    /// `retry_wait`, due this many seconds after the result.
    Retry(i64),
    Dead,
    /// A credential failure: `retry_wait`, not counted.
    Pause(i64),
}

#[derive(Debug, Clone)]
enum Op {
    /// Appends an event routed to one delivery, optionally written leased to an owner (the
    /// ingest hand-off).
    Enqueue {
        dest: usize,
        key: Option<usize>,
        hold_on_dead: bool,
        lease_to: Option<usize>,
    },
    Claim {
        owner: usize,
        limit: usize,
    },
    /// The holder of a delivery currently leased reports the attempt's result.
    Complete {
        pick: Index,
        outcome: Outcome,
    },
    /// Someone who once held a delivery (any generation) reports a result, perhaps long
    /// after losing it.
    Stale {
        pick: Index,
        outcome: Outcome,
    },
    /// Both clocks move past every lease granted so far.
    LeaseExpiry,
    /// Both clocks move.
    Advance(i64),
    /// Business time alone moves (a scaled clock).
    AdvanceBusiness(i64),
    /// Replays a dead letter (or, with `any`, any delivery: a conflict unless dead).
    Replay {
        pick: Index,
        any: bool,
    },
    Discard {
        pick: Index,
        any: bool,
    },
    Restart,
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        3 => Just(Outcome::Delivered),
        2 => (0i64..=20).prop_map(Outcome::Retry),
        2 => Just(Outcome::Dead),
        1 => (0i64..=10).prop_map(Outcome::Pause),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..DESTINATIONS.len(), prop::option::weighted(0.7, 0..KEYS.len()), any::<bool>(),
              prop::option::weighted(0.2, 0..OWNERS.len()))
            .prop_map(|(dest, key, hold_on_dead, lease_to)| Op::Enqueue { dest, key, hold_on_dead, lease_to }),
        7 => (0..OWNERS.len(), 1usize..=3).prop_map(|(owner, limit)| Op::Claim { owner, limit }),
        8 => (any::<Index>(), outcome()).prop_map(|(pick, outcome)| Op::Complete { pick, outcome }),
        2 => (any::<Index>(), outcome()).prop_map(|(pick, outcome)| Op::Stale { pick, outcome }),
        1 => Just(Op::LeaseExpiry),
        3 => (1i64..=15).prop_map(Op::Advance),
        1 => (1i64..=15).prop_map(Op::AdvanceBusiness),
        2 => (any::<Index>(), prop::bool::weighted(0.15)).prop_map(|(pick, any)| Op::Replay { pick, any }),
        1 => (any::<Index>(), prop::bool::weighted(0.15)).prop_map(|(pick, any)| Op::Discard { pick, any }),
        1 => Just(Op::Restart),
    ]
}

/// What the model knows of one delivery.
#[derive(Debug, Clone)]
struct Model {
    id: i64,
    dest: &'static str,
    key: Option<&'static str>,
    hold_on_dead: bool,
    state: DeliveryState,
    generation: i64,
    attempts: i64,
    next_attempt_at: Option<DateTime<Utc>>,
    delivered_at: Option<DateTime<Utc>>,
    owner: Option<&'static str>,
    lease_until: Option<DateTime<Utc>>,
    /// Every result reported for it, applied or not (the attempt history).
    results: usize,
}

impl Model {
    fn blocks_its_key(&self) -> bool {
        self.state.is_pending() || (self.hold_on_dead && self.state.is_dead_letter())
    }
}

struct World {
    store: SharedStore,
    url: String,
    /// Business time.
    now: DateTime<Utc>,
    /// Real time (leases).
    real_now: DateTime<Utc>,
    deliveries: BTreeMap<i64, Model>,
    /// Every lease ever granted: (delivery, owner, generation).
    leases: Vec<(i64, &'static str, i64)>,
    events: usize,
}

impl World {
    /// Whether an earlier delivery of the same destination and ordering key keeps `d` waiting.
    fn blocked(&self, d: &Model) -> bool {
        let Some(key) = d.key else { return false };
        self.deliveries
            .values()
            .any(|p| p.id < d.id && p.dest == d.dest && p.key == Some(key) && p.blocks_its_key())
    }

    fn result(&self, id: i64, owner: &str, generation: i64, outcome: Outcome) -> AttemptResult {
        let (next, class, status) = match outcome {
            Outcome::Delivered => (AttemptNext::Delivered, None, 200),
            Outcome::Retry(s) => (
                AttemptNext::RetryAt(self.now + Duration::seconds(s)),
                Some(ErrorClass::Transient),
                503,
            ),
            Outcome::Dead => (
                AttemptNext::Dead("permanent failure: 422".into()),
                Some(ErrorClass::Permanent),
                422,
            ),
            Outcome::Pause(s) => (
                AttemptNext::Pause {
                    retry_at: self.now + Duration::seconds(s),
                    resume_after: self.now + Duration::seconds(300),
                },
                Some(ErrorClass::Credential),
                401,
            ),
        };
        AttemptResult {
            delivery_id: id,
            owner: owner.into(),
            node: owner.into(),
            generation,
            started_at: self.now,
            duration_ms: 1.0,
            status: Some(status),
            response_excerpt: None,
            class,
            error: class.map(|c| format!("{} failure", c.as_str())),
            next,
            now: self.now,
            cursor: None,
        }
    }

    /// Reports a result as `owner` for `generation` and checks the store applies it exactly
    /// when the model says `owner` still holds that generation's lease.
    async fn complete(
        &mut self,
        id: i64,
        owner: &'static str,
        generation: i64,
        outcome: Outcome,
    ) -> Result<(), TestCaseError> {
        let result = self.result(id, owner, generation, outcome);
        let applied = self.store.complete_attempt(result).await.map_err(fail)?;
        let now = self.now;
        let m = self.deliveries.get_mut(&id).expect("known delivery");
        m.results += 1;
        let held = m.state == DeliveryState::Delivering
            && m.owner == Some(owner)
            && m.generation == generation;
        prop_assert_eq!(
            applied,
            held,
            "result {:?} by {} (generation {}) for delivery {:?}",
            outcome,
            owner,
            generation,
            m
        );
        if m.state == DeliveryState::Delivered {
            prop_assert!(!applied, "a result was applied after success: {:?}", m);
        }
        if !held {
            return Ok(());
        }
        m.owner = None;
        m.lease_until = None;
        m.delivered_at = None;
        match outcome {
            Outcome::Delivered => {
                m.state = DeliveryState::Delivered;
                m.attempts += 1;
                m.next_attempt_at = None;
                m.delivered_at = Some(now);
            }
            Outcome::Retry(s) => {
                m.state = DeliveryState::RetryWait;
                m.attempts += 1;
                m.next_attempt_at = Some(now + Duration::seconds(s));
            }
            Outcome::Dead => {
                m.state = DeliveryState::Dead;
                m.attempts += 1;
                m.next_attempt_at = None;
            }
            Outcome::Pause(s) => {
                m.state = DeliveryState::RetryWait;
                m.next_attempt_at = Some(now + Duration::seconds(s));
            }
        }
        Ok(())
    }

    async fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::Enqueue {
                dest,
                key,
                hold_on_dead,
                lease_to,
            } => {
                self.events += 1;
                let mut e = event("urn:model", &format!("e-{}", self.events), "order.created");
                e.received_at = self.now;
                let mut d = delivery("orders", DESTINATIONS[dest], LANE);
                d.ordering_key = key.map(|k| KEYS[k].to_string());
                d.hold_on_dead = hold_on_dead;
                let lease_until = self.real_now + Duration::seconds(LEASE_SECONDS);
                d.lease = lease_to.map(|o| LeaseRequest {
                    owner: OWNERS[o].into(),
                    until: lease_until,
                });
                e.deliveries = vec![d];
                let out = self.store.append_routed(vec![e]).await.map_err(fail)?;
                prop_assert_eq!(out.len(), 1);
                prop_assert_eq!(out[0].1.len(), 1, "one delivery per new event");
                let created = out[0].1[0];
                prop_assert!(
                    !self.deliveries.contains_key(&created.id),
                    "delivery id {} reused",
                    created.id
                );
                let mut m = Model {
                    id: created.id,
                    dest: DESTINATIONS[dest],
                    key: key.map(|k| KEYS[k]),
                    hold_on_dead,
                    state: DeliveryState::Scheduled,
                    generation: 0,
                    attempts: 0,
                    next_attempt_at: Some(self.now),
                    delivered_at: None,
                    owner: None,
                    lease_until: None,
                    results: 0,
                };
                // The hand-off lease is granted unless an earlier delivery holds the key
                // (the new delivery is the latest, so every other one is earlier).
                let blocked = self.blocked(&m);
                prop_assert_eq!(
                    created.leased,
                    lease_to.is_some() && !blocked,
                    "hand-off lease of {:?} (key blocked: {})",
                    m,
                    blocked
                );
                if let (true, Some(o)) = (created.leased, lease_to) {
                    m.state = DeliveryState::Delivering;
                    m.owner = Some(OWNERS[o]);
                    m.lease_until = Some(lease_until);
                    self.leases.push((m.id, OWNERS[o], 0));
                }
                self.deliveries.insert(m.id, m);
            }
            Op::Claim { owner, limit } => {
                let owner = OWNERS[owner];
                let lease_until = self.real_now + Duration::seconds(LEASE_SECONDS);
                let got = self
                    .store
                    .claim_deliveries(ClaimRequest {
                        owner: owner.into(),
                        lane: LANE,
                        limit,
                        now: self.now,
                        real_now: self.real_now,
                        lease_until,
                        exclude: Vec::new(),
                        only: None,
                    })
                    .await
                    .map_err(fail)?;
                // Leases that ended are given back first.
                let before = self.deliveries.clone();
                for m in self.deliveries.values_mut() {
                    if m.state == DeliveryState::Delivering
                        && m.lease_until.is_some_and(|u| u < self.real_now)
                    {
                        m.state = DeliveryState::Scheduled;
                        m.owner = None;
                        m.lease_until = None;
                    }
                }
                let mut due: Vec<&Model> = self
                    .deliveries
                    .values()
                    .filter(|m| {
                        matches!(m.state, DeliveryState::Scheduled | DeliveryState::RetryWait)
                            && m.next_attempt_at.is_some_and(|t| t <= self.now)
                            && !self.blocked(m)
                    })
                    .collect();
                due.sort_by_key(|m| (m.next_attempt_at, m.id));
                let expected: Vec<i64> = due.iter().take(limit).map(|m| m.id).collect();
                let ids: Vec<i64> = got.iter().map(|d| d.id).collect();
                // The properties one by one (clearer failures than the exact comparison).
                for d in &got {
                    let prior = &before[&d.id];
                    prop_assert!(
                        prior.state != DeliveryState::Delivered,
                        "delivery {} claimed again after it was delivered",
                        d.id
                    );
                    if prior.state == DeliveryState::Delivering {
                        prop_assert!(
                            prior.lease_until.is_some_and(|u| u < self.real_now),
                            "delivery {} claimed by {} while {:?} still held it",
                            d.id,
                            owner,
                            prior.owner
                        );
                    } else {
                        prop_assert!(
                            prior.next_attempt_at.is_some_and(|t| t <= self.now),
                            "delivery {} claimed before it was due: {:?} at {}",
                            d.id,
                            prior,
                            self.now
                        );
                    }
                    let m = &self.deliveries[&d.id];
                    prop_assert!(
                        !self.blocked(m),
                        "delivery {} claimed while an earlier delivery holds key {:?}: {:?}",
                        d.id,
                        m.key,
                        self.deliveries
                            .values()
                            .filter(|p| p.id < m.id && p.dest == m.dest && p.key == m.key)
                            .collect::<Vec<_>>()
                    );
                }
                prop_assert_eq!(&ids, &expected, "claimed by {} (limit {})", owner, limit);
                for d in &got {
                    let m = self.deliveries.get_mut(&d.id).expect("known delivery");
                    m.state = DeliveryState::Delivering;
                    m.owner = Some(owner);
                    m.lease_until = Some(lease_until);
                    self.leases.push((m.id, owner, m.generation));
                    check_record(d, m)?;
                }
            }
            Op::Complete { pick, outcome } => {
                let held: Vec<(i64, &'static str, i64)> = self
                    .deliveries
                    .values()
                    .filter(|m| m.state == DeliveryState::Delivering)
                    .map(|m| {
                        (
                            m.id,
                            m.owner.expect("a leased delivery has an owner"),
                            m.generation,
                        )
                    })
                    .collect();
                if !held.is_empty() {
                    let (id, owner, generation) = *pick.get(&held);
                    self.complete(id, owner, generation, outcome).await?;
                }
            }
            Op::Stale { pick, outcome } => {
                if !self.leases.is_empty() {
                    let (id, owner, generation) = *pick.get(&self.leases);
                    self.complete(id, owner, generation, outcome).await?;
                }
            }
            Op::LeaseExpiry => {
                let step = Duration::seconds(LEASE_SECONDS + 1);
                self.now += step;
                self.real_now += step;
            }
            Op::Advance(s) => {
                self.now += Duration::seconds(s);
                self.real_now += Duration::seconds(s);
            }
            Op::AdvanceBusiness(s) => self.now += Duration::seconds(s),
            Op::Replay { pick, any } => {
                let Some(id) = self.pick(pick, any) else {
                    return Ok(());
                };
                let out = self
                    .store
                    .replay_delivery(Replay {
                        id,
                        actor: "model".into(),
                        reason: "replay".into(),
                        at: self.now,
                        state: DeliveryState::Scheduled,
                        payload: None,
                        flow_version: None,
                        ordering_key: None,
                        error: None,
                        error_detail: None,
                        action: "dlq.replay".into(),
                    })
                    .await;
                let now = self.now;
                let m = self.deliveries.get_mut(&id).expect("known delivery");
                if m.state.is_dead_letter() {
                    let d = out.map_err(fail)?;
                    m.state = DeliveryState::Scheduled;
                    m.generation += 1;
                    m.attempts = 0;
                    m.next_attempt_at = Some(now);
                    m.delivered_at = None;
                    m.owner = None;
                    m.lease_until = None;
                    check_record(&d, m)?;
                } else {
                    prop_assert!(
                        matches!(out, Err(Error::Conflict(_))),
                        "replay of a {:?} delivery: {:?}",
                        m.state,
                        out
                    );
                }
            }
            Op::Discard { pick, any } => {
                let Some(id) = self.pick(pick, any) else {
                    return Ok(());
                };
                let out = self
                    .store
                    .discard_delivery(id, "model", "discard", self.now)
                    .await;
                let m = self.deliveries.get_mut(&id).expect("known delivery");
                if m.state.is_dead_letter() {
                    let d = out.map_err(fail)?;
                    m.state = DeliveryState::Discarded;
                    m.next_attempt_at = None;
                    check_record(&d, m)?;
                } else {
                    prop_assert!(
                        matches!(out, Err(Error::Conflict(_))),
                        "discard of a {:?} delivery: {:?}",
                        m.state,
                        out
                    );
                }
            }
            Op::Restart => {
                self.store.close().await;
                self.store = switchyard_store::open(&self.url, &StoreOptions::default())
                    .await
                    .map_err(fail)?;
            }
        }
        Ok(())
    }

    /// A dead letter (or, with `any`, any delivery).
    fn pick(&self, pick: Index, any: bool) -> Option<i64> {
        let ids: Vec<i64> = self
            .deliveries
            .values()
            .filter(|m| any || m.state.is_dead_letter())
            .map(|m| m.id)
            .collect();
        (!ids.is_empty()).then(|| *pick.get(&ids))
    }

    /// Every delivery is stored, in the state the model predicts.
    async fn check_all(&self, with_history: bool) -> Result<(), TestCaseError> {
        let stored = self
            .store
            .list_deliveries(&DeliveryFilter {
                limit: 10_000,
                ..DeliveryFilter::default()
            })
            .await
            .map_err(fail)?;
        let ids: Vec<i64> = stored.iter().map(|d| d.id).collect();
        let known: Vec<i64> = self.deliveries.keys().copied().collect();
        prop_assert_eq!(
            ids,
            known,
            "the stored deliveries are not the enqueued ones"
        );
        for d in &stored {
            let m = &self.deliveries[&d.id];
            check_record(d, m)?;
            if with_history {
                let attempts = self.store.list_attempts(d.id).await.map_err(fail)?;
                prop_assert_eq!(
                    attempts.len(),
                    m.results,
                    "attempt history of delivery {}",
                    d.id
                );
            }
        }
        // No delivery is held twice: each leased delivery has exactly one owner, and the
        // model agrees on which.
        for d in stored
            .iter()
            .filter(|d| d.state == DeliveryState::Delivering)
        {
            prop_assert!(d.lease_owner.is_some() && d.lease_until.is_some());
        }
        Ok(())
    }
}

fn fail(e: Error) -> TestCaseError {
    TestCaseError::fail(format!("store error: {e}"))
}

fn check_record(d: &DeliveryRecord, m: &Model) -> Result<(), TestCaseError> {
    let ctx = || format!("delivery {}: stored {d:?}\nmodel {m:?}", d.id);
    prop_assert_eq!(d.id, m.id);
    prop_assert_eq!(d.state, m.state, "state; {}", ctx());
    prop_assert_eq!(d.generation, m.generation, "generation; {}", ctx());
    prop_assert_eq!(d.attempts, m.attempts, "attempts; {}", ctx());
    prop_assert_eq!(
        d.next_attempt_at,
        m.next_attempt_at,
        "next_attempt_at; {}",
        ctx()
    );
    prop_assert_eq!(d.delivered_at, m.delivered_at, "delivered_at; {}", ctx());
    prop_assert_eq!(d.lease_owner.as_deref(), m.owner, "lease_owner; {}", ctx());
    prop_assert_eq!(d.lease_until, m.lease_until, "lease_until; {}", ctx());
    prop_assert_eq!(d.destination.as_str(), m.dest, "destination; {}", ctx());
    prop_assert_eq!(d.ordering_key.as_deref(), m.key, "ordering_key; {}", ctx());
    prop_assert_eq!(d.hold_on_dead, m.hold_on_dead, "hold_on_dead; {}", ctx());
    prop_assert_eq!(d.lane, LANE);
    Ok(())
}

async fn run(dir: &Path, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let url = format!("sqlite://{}", dir.join("queue.db").display());
    let store = switchyard_store::open(&url, &StoreOptions::default())
        .await
        .map_err(fail)?;
    let mut world = World {
        store,
        url,
        now: t0(),
        real_now: t0(),
        deliveries: BTreeMap::new(),
        leases: Vec::new(),
        events: 0,
    };
    for (i, op) in ops.iter().enumerate() {
        world
            .step(op)
            .await
            .map_err(|e| TestCaseError::fail(format!("step {i} {op:?}: {e}")))?;
        world
            .check_all(false)
            .await
            .map_err(|e| TestCaseError::fail(format!("after step {i} {op:?}: {e}")))?;
    }
    world.check_all(true).await?;
    world.store.close().await;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        max_shrink_iters: 2_000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn queue_matches_model(ops in prop::collection::vec(op(), 1..60)) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let dir = tempfile::tempdir().expect("temp dir");
        rt.block_on(run(dir.path(), ops))?;
    }
}
