//! Several Switchyard processes on one PostgreSQL database: two stores (two connection pools)
//! on the same schema claim from one delivery queue at once. Every delivery must be claimed
//! exactly once, and deliveries sharing an ordering key one at a time, in id order.
//! The server's URL comes from `SWITCHYARD_TEST_PG_URL`; without it these tests skip with a
//! notice (CI always sets it, and fails if it is missing).

use chrono::{DateTime, Duration, TimeZone, Utc};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use switchyard_core::delivery::Lane;
use switchyard_store::conformance::{delivery, event};
use switchyard_store::{
    AttemptNext, AttemptResult, ClaimRequest, DeliveryFilter, DeliveryRecord, DeliveryState,
    LeaseRequest, NewDelivery, NewEvent, SharedStore, StoreOptions, open,
};

/// Two stores on one fresh schema, as two processes would open it.
async fn two_nodes() -> Option<(SharedStore, SharedStore)> {
    let Ok(base) = std::env::var("SWITCHYARD_TEST_PG_URL") else {
        assert!(
            std::env::var("CI").is_err(),
            "SWITCHYARD_TEST_PG_URL must be set in CI"
        );
        eprintln!("SKIPPED: PostgreSQL multi-node test (set SWITCHYARD_TEST_PG_URL to run it)");
        return None;
    };
    let schema = format!("sy_test_{}", uuid::Uuid::new_v4().simple());
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}schema={schema}");
    let a = open(&url, &StoreOptions::default())
        .await
        .expect("open node a");
    let b = open(&url, &StoreOptions::default())
        .await
        .expect("open node b");
    Some((a, b))
}

/// The business time of the test events (`conformance::event`'s `received_at`).
fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 8, 0, 0).unwrap()
}

/// Claims as `owner` at business time `t0 + 1h` (everything is due), leases in real time.
fn claim_req(owner: &str, limit: usize) -> ClaimRequest {
    let real_now = Utc::now();
    ClaimRequest {
        owner: owner.into(),
        lane: Lane::Standard,
        limit,
        now: t0() + Duration::hours(1),
        real_now,
        lease_until: real_now + Duration::seconds(120),
        exclude: Vec::new(),
        only: None,
    }
}

fn delivered(d: &DeliveryRecord, owner: &str) -> AttemptResult {
    let now = t0() + Duration::hours(1);
    AttemptResult {
        delivery_id: d.id,
        owner: owner.into(),
        node: owner.into(),
        generation: d.generation,
        started_at: now,
        duration_ms: 1.0,
        status: Some(200),
        response_excerpt: None,
        class: None,
        error: None,
        next: AttemptNext::Delivered,
        now,
        cursor: None,
    }
}

fn keyed(key: &str) -> NewDelivery {
    let mut d = delivery("f", "d", Lane::Standard);
    d.ordering_key = Some(key.into());
    d
}

/// Appends one event per delivery (in batches of 50) and returns the delivery ids in order.
async fn enqueue(store: &SharedStore, prefix: &str, ds: Vec<NewDelivery>) -> Vec<i64> {
    let mut ids = Vec::with_capacity(ds.len());
    let events: Vec<NewEvent> = ds
        .into_iter()
        .enumerate()
        .map(|(i, d)| {
            let mut e = event("urn:multinode", &format!("{prefix}-{i}"), "order.created");
            e.deliveries = vec![d];
            e
        })
        .collect();
    for chunk in events.chunks(50) {
        for (_, created) in store.append_routed(chunk.to_vec()).await.unwrap() {
            assert_eq!(created.len(), 1);
            ids.push(created[0].id);
        }
    }
    ids
}

async fn all_deliveries(store: &SharedStore) -> Vec<DeliveryRecord> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = store
            .list_deliveries(&DeliveryFilter {
                after,
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap();
        let Some(last) = page.last() else {
            return out;
        };
        after = last.id;
        out.extend(page);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn two_nodes_claim_each_delivery_exactly_once() {
    let Some((a, b)) = two_nodes().await else {
        return;
    };
    let ids = enqueue(
        &a,
        "once",
        (0..500)
            .map(|_| delivery("f", "d", Lane::Standard))
            .collect(),
    )
    .await;
    let start = Arc::new(tokio::sync::Barrier::new(8));
    let mut tasks = Vec::new();
    for (node, store) in [("a", &a), ("b", &b)] {
        for n in 0..4 {
            let (store, start) = (store.clone(), start.clone());
            let owner = format!("node-{node}-{n}");
            tasks.push(tokio::spawn(async move {
                start.wait().await;
                let mut mine = Vec::new();
                loop {
                    let got = store.claim_deliveries(claim_req(&owner, 5)).await.unwrap();
                    if got.is_empty() {
                        return (node, mine);
                    }
                    assert!(got.len() <= 5, "a claim never exceeds its limit");
                    for d in got {
                        assert_eq!(d.state, DeliveryState::Delivering);
                        assert_eq!(d.lease_owner.as_deref(), Some(owner.as_str()));
                        assert!(
                            store.complete_attempt(delivered(&d, &owner)).await.unwrap(),
                            "the claimer still holds the lease"
                        );
                        mine.push(d.id);
                    }
                }
            }));
        }
    }
    let mut per_node: HashMap<&str, usize> = HashMap::new();
    let mut claimed = Vec::new();
    for t in tasks {
        let (node, mine) = t.await.unwrap();
        *per_node.entry(node).or_default() += mine.len();
        claimed.extend(mine);
    }
    let unique: HashSet<i64> = claimed.iter().copied().collect();
    assert_eq!(unique.len(), claimed.len(), "no delivery claimed twice");
    claimed.sort();
    assert_eq!(claimed, ids, "every delivery claimed exactly once");
    assert!(
        per_node.get("a").copied().unwrap_or(0) > 0 && per_node.get("b").copied().unwrap_or(0) > 0,
        "both nodes got a share: {per_node:?}"
    );
    let all = all_deliveries(&b).await;
    assert_eq!(all.len(), 500);
    assert!(all.iter().all(|d| d.state == DeliveryState::Delivered));
    for d in all.iter().take(20) {
        let attempts = b.list_attempts(d.id).await.unwrap();
        assert_eq!(attempts.len(), 1, "one attempt per delivery");
    }
    a.close().await;
    b.close().await;
}

/// Who holds which key, and in what order each key's deliveries were taken.
#[derive(Default)]
struct KeyLog {
    in_flight: HashMap<String, i64>,
    order: BTreeMap<String, Vec<i64>>,
}

impl KeyLog {
    fn take(&mut self, d: &DeliveryRecord) {
        let key = d.ordering_key.clone().expect("keyed delivery");
        if let Some(other) = self.in_flight.insert(key.clone(), d.id) {
            panic!(
                "deliveries {other} and {} of key {key} are in flight at once",
                d.id
            );
        }
        self.order.entry(key).or_default().push(d.id);
    }

    fn done(&mut self, d: &DeliveryRecord) {
        let key = d.ordering_key.as_ref().expect("keyed delivery");
        assert_eq!(self.in_flight.remove(key), Some(d.id));
    }
}

/// Claims and delivers (both nodes, four tasks each) until `total` deliveries are delivered.
async fn drain_keyed(a: &SharedStore, b: &SharedStore, total: usize, log: Arc<Mutex<KeyLog>>) {
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for (node, store) in [("a", a), ("b", b)] {
        for n in 0..4 {
            let (store, log, done) = (store.clone(), log.clone(), done.clone());
            let owner = format!("node-{node}-{n}");
            tasks.push(tokio::spawn(async move {
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
                let mut mine = 0;
                while done.load(Ordering::SeqCst) < total {
                    assert!(std::time::Instant::now() < deadline, "draining timed out");
                    let got = store.claim_deliveries(claim_req(&owner, 5)).await.unwrap();
                    if got.is_empty() {
                        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                        continue;
                    }
                    for d in &got {
                        log.lock().unwrap().take(d);
                    }
                    for d in got {
                        // Let the others try to claim the key meanwhile.
                        tokio::task::yield_now().await;
                        log.lock().unwrap().done(&d);
                        assert!(store.complete_attempt(delivered(&d, &owner)).await.unwrap());
                        done.fetch_add(1, Ordering::SeqCst);
                        mine += 1;
                    }
                }
                (node, mine)
            }));
        }
    }
    let mut per_node: HashMap<&str, usize> = HashMap::new();
    for t in tasks {
        let (node, mine) = t.await.unwrap();
        *per_node.entry(node).or_default() += mine;
    }
    assert_eq!(per_node.values().sum::<usize>(), total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn two_nodes_deliver_each_ordering_key_in_id_order() {
    let Some((a, b)) = two_nodes().await else {
        return;
    };
    let keys = ["k0", "k1", "k2", "k3", "k4"];
    let ids = enqueue(
        &a,
        "ord",
        (0..50).map(|i| keyed(keys[i % keys.len()])).collect(),
    )
    .await;
    let log = Arc::new(Mutex::new(KeyLog::default()));
    drain_keyed(&a, &b, ids.len(), log.clone()).await;
    let order = std::mem::take(&mut log.lock().unwrap().order);
    assert_eq!(order.len(), keys.len());
    for (i, key) in keys.iter().enumerate() {
        let expected: Vec<i64> = ids.iter().skip(i).step_by(keys.len()).copied().collect();
        assert_eq!(order[*key], expected, "key {key} delivered in id order");
    }
    assert!(
        all_deliveries(&a)
            .await
            .iter()
            .all(|d| d.state == DeliveryState::Delivered)
    );
    a.close().await;
    b.close().await;
}

/// Both nodes ingest keyed events (half of them asking for the outbox lease) while both
/// claim: a delivery created later must never overtake an earlier one of its key, even when
/// their transactions commit in the other order.
#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn two_nodes_ingesting_and_claiming_keep_key_order() {
    let Some((a, b)) = two_nodes().await else {
        return;
    };
    let keys = ["k0", "k1", "k2"];
    let (batches, per_batch) = (20, 5);
    let total = 2 * batches * per_batch;
    let log = Arc::new(Mutex::new(KeyLog::default()));
    let leased: Arc<Mutex<Vec<(String, DeliveryRecord)>>> = Arc::default();
    let mut writers = Vec::new();
    for (node, store) in [("a", &a), ("b", &b)] {
        let (store, log, leased) = (store.clone(), log.clone(), leased.clone());
        writers.push(tokio::spawn(async move {
            for batch in 0..batches {
                let events: Vec<NewEvent> = (0..per_batch)
                    .map(|i| {
                        let n = batch * per_batch + i;
                        let mut e = event("urn:multinode", &format!("{node}-{n}"), "t");
                        let mut d = keyed(keys[n % keys.len()]);
                        if n % 2 == 0 {
                            d.lease = Some(LeaseRequest {
                                owner: format!("ingest-{node}"),
                                until: Utc::now() + Duration::seconds(120),
                            });
                        }
                        e.deliveries = vec![d];
                        e
                    })
                    .collect();
                for (_, created) in store.append_routed(events).await.unwrap() {
                    if created[0].leased {
                        let d = store.get_delivery(created[0].id).await.unwrap().unwrap();
                        log.lock().unwrap().take(&d);
                        leased.lock().unwrap().push((format!("ingest-{node}"), d));
                    }
                }
            }
        }));
    }
    // The ingesting nodes deliver what they leased themselves.
    let finisher = {
        let (a, leased, log) = (a.clone(), leased.clone(), log.clone());
        tokio::spawn(async move {
            let mut n = 0;
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            loop {
                let next = leased.lock().unwrap().pop();
                match next {
                    Some((owner, d)) => {
                        log.lock().unwrap().done(&d);
                        assert!(a.complete_attempt(delivered(&d, &owner)).await.unwrap());
                        n += 1;
                    }
                    None if std::time::Instant::now() > deadline => return n,
                    None => tokio::time::sleep(std::time::Duration::from_millis(2)).await,
                }
            }
        })
    };
    let claimers = {
        let (a, b, log) = (a.clone(), b.clone(), log.clone());
        tokio::spawn(async move {
            // Claimers stop once everything not leased at ingest is delivered; they do not
            // know that number in advance, so they run until every delivery is final.
            let done = Arc::new(AtomicUsize::new(0));
            let mut tasks = Vec::new();
            for (node, store) in [("a", &a), ("b", &b)] {
                for n in 0..3 {
                    let (store, log, done) = (store.clone(), log.clone(), done.clone());
                    let owner = format!("node-{node}-{n}");
                    tasks.push(tokio::spawn(async move {
                        let deadline =
                            std::time::Instant::now() + std::time::Duration::from_secs(60);
                        loop {
                            assert!(std::time::Instant::now() < deadline, "claiming timed out");
                            let got = store.claim_deliveries(claim_req(&owner, 5)).await.unwrap();
                            if got.is_empty() {
                                let stats = store.delivery_stats().await.unwrap();
                                let delivered: i64 = stats
                                    .iter()
                                    .filter(|s| s.state == DeliveryState::Delivered)
                                    .map(|s| s.count)
                                    .sum();
                                if delivered as usize == total {
                                    return;
                                }
                                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                                continue;
                            }
                            for d in &got {
                                log.lock().unwrap().take(d);
                            }
                            for d in got {
                                tokio::task::yield_now().await;
                                log.lock().unwrap().done(&d);
                                assert!(
                                    store.complete_attempt(delivered(&d, &owner)).await.unwrap()
                                );
                                done.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                    }));
                }
            }
            for t in tasks {
                t.await.unwrap();
            }
            done.load(Ordering::SeqCst)
        })
    };
    for w in writers {
        w.await.unwrap();
    }
    let claimed = claimers.await.unwrap();
    let all = all_deliveries(&a).await;
    assert_eq!(all.len(), total);
    assert!(all.iter().all(|d| d.state == DeliveryState::Delivered));
    finisher.abort();
    let order = std::mem::take(&mut log.lock().unwrap().order);
    assert!(claimed > 0, "the claimers delivered some");
    assert!(claimed < total, "some were leased at ingest");
    for (key, ids) in &order {
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, &sorted, "key {key} delivered in id order");
    }
    assert_eq!(order.values().map(Vec::len).sum::<usize>(), total);
    a.close().await;
    b.close().await;
}
