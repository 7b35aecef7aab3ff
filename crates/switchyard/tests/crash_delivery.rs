//! Crash test for delivery: the real binary is killed with SIGKILL while deliveries are in
//! flight to a real HTTP receiver, and restarted on the same store (SQLite file; PostgreSQL
//! too when `SWITCHYARD_TEST_PG_URL` is set). Every event whose
//! ingest was acknowledged must reach the receiver (at least once), the receiver must see
//! exactly the acknowledged events once deduplicated by `Idempotency-Key`, and the store
//! must record every delivery as delivered.

mod support;

use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};
use support::{Instance, Receiver};
use switchyard_core::delivery::idempotency_key;

const EVENTS: usize = 2000;
const BATCH: usize = 100;
const FLOW: &str = "crash";
const SOURCE: &str = "/crash-delivery";
/// Deliveries in flight per lane (the default `standard` lane concurrency): at most this
/// many requests can have been sent without their result committed when the plug is pulled.
const LANE: usize = 64;
/// Requests the receiver has seen when the process is killed (at least).
const KILL_AFTER: usize = 200;

fn config(url: &str) -> String {
    // A destination slow enough (4 at a time, 5 ms each: at most 800/s) that deliveries are
    // still under way when ingest is done.
    format!(
        r#"
[delivery]
lease_seconds = 5
poll_ms = 100

# The receiver counts every request it gets: no HEAD probes of the destination.
[probes]
destinations = false

[[destinations]]
name = "sink"
url = "{url}"
concurrency = 4
timeout_ms = 5000

[[flows]]
name = "{FLOW}"
destination = "sink"
match = {{ source = "{SOURCE}", type = ["load.*"] }}
"#
    )
}

fn wait_for(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every delivery in `state` (or every one), paging through `/v1/deliveries` with `after`.
fn all_deliveries(
    http: &reqwest::blocking::Client,
    base: &str,
    token: &str,
    state: Option<&str>,
) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = 0i64;
    loop {
        let state = state.map(|s| format!("&state={s}")).unwrap_or_default();
        let page: Value = http
            .get(format!(
                "{base}/v1/deliveries?after={after}&limit=1000{state}"
            ))
            .bearer_auth(token)
            .send()
            .unwrap()
            .json()
            .unwrap();
        let items = page["deliveries"].as_array().unwrap();
        out.extend(items.iter().cloned());
        match page["next_after"].as_i64() {
            Some(n) => after = n,
            None => return out,
        }
    }
}

#[test]
fn kill_9_with_deliveries_in_flight_delivers_every_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    for (backend, url) in support::store_urls(dir.path()) {
        crash_and_recover(backend, dir.path(), &url);
    }
}

/// Ingests, kills the server mid-delivery, restarts it on the same store and checks the
/// receiver and the store.
fn crash_and_recover(backend: &str, dir: &std::path::Path, url: &str) {
    let rx = Receiver::start(200, Duration::from_millis(5));
    let mut inst = Instance::new(dir, backend, url, &config(&rx.url));
    let ingest = inst.create_token("ingest", "load");
    let viewer = inst.create_token("viewer", "checker");
    inst.start();
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();

    // Ingest in batches; record every event of an acknowledged request.
    let mut acked: HashSet<String> = HashSet::new();
    let ingest_started = Instant::now();
    for b in 0..EVENTS / BATCH {
        let ids: Vec<String> = (0..BATCH).map(|i| format!("e{b}-{i}")).collect();
        let batch: Vec<Value> = ids
            .iter()
            .map(|id| {
                json!({"specversion": "1.0", "id": id, "source": SOURCE, "type": "load.event",
                       "data": {"n": id}})
            })
            .collect();
        let r = http
            .post(format!("{}/v1/events", inst.base()))
            .bearer_auth(&ingest)
            .header("content-type", "application/cloudevents-batch+json")
            .body(Value::Array(batch).to_string())
            .send()
            .unwrap();
        let status = r.status().as_u16();
        assert!(
            status == 202 || status == 200,
            "[{backend}] batch {b}: HTTP {status}"
        );
        acked.extend(ids);
    }
    assert_eq!(acked.len(), EVENTS);
    eprintln!(
        "[{backend}] {EVENTS} events acknowledged in {:.2}s; {} delivered meanwhile",
        ingest_started.elapsed().as_secs_f64(),
        rx.count()
    );

    // Pull the plug while deliveries are under way: some delivered, and requests at the
    // receiver that have not been answered yet.
    let deadline = Instant::now() + Duration::from_secs(120);
    while rx.count() < KILL_AFTER || rx.in_flight() == 0 {
        assert!(
            Instant::now() < deadline,
            "[{backend}] deliveries did not get under way"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let pid = inst.pid();
    let unanswered = rx.in_flight();
    inst.kill9();
    // (requests already in the socket when the process died still arrive: let them land)
    std::thread::sleep(Duration::from_millis(500));
    let at_kill = rx.by_key();
    let requests_at_kill = rx.count();
    assert!(
        at_kill.len() < EVENTS,
        "[{backend}] every event was delivered before the kill; the test proved nothing (slow the receiver)"
    );
    eprintln!(
        "[{backend}] killed pid {pid} with SIGKILL after {requests_at_kill} request(s) for {} of {EVENTS} event(s), {unanswered} of them unanswered",
        at_kill.len()
    );

    // Restart on the same file; the deliveries leased to the dead node come back when their
    // leases expire.
    let restarted = Instant::now();
    inst.start();
    let expected: HashSet<String> = acked
        .iter()
        .map(|id| idempotency_key(FLOW, SOURCE, id, 0))
        .collect();
    wait_for(
        &format!("[{backend}] every acknowledged event delivered"),
        Duration::from_secs(300),
        || expected.iter().all(|k| rx.by_key().contains_key(k)),
    );
    eprintln!(
        "[{backend}] all {EVENTS} delivered {:.1}s after the restart",
        restarted.elapsed().as_secs_f64()
    );
    // ...and recorded as delivered (the receiver may be a little ahead of the store).
    wait_for(
        &format!("[{backend}] every delivery recorded as delivered"),
        Duration::from_secs(120),
        || all_deliveries(&http, &inst.base(), &viewer, Some("delivered")).len() >= EVENTS,
    );

    let by_key: HashMap<String, usize> = rx.by_key();
    let received: HashSet<String> = by_key.keys().cloned().collect();
    let missing: Vec<_> = expected.difference(&received).collect();
    assert!(
        missing.is_empty(),
        "[{backend}] acknowledged but never delivered: {missing:?}"
    );
    let unexpected: Vec<_> = received.difference(&expected).collect();
    assert!(
        unexpected.is_empty(),
        "[{backend}] delivered but never acknowledged: {unexpected:?}"
    );
    assert_eq!(
        received, expected,
        "[{backend}] exactly once, deduplicated by key"
    );

    let delivered = all_deliveries(&http, &inst.base(), &viewer, Some("delivered"));
    assert_eq!(delivered.len(), EVENTS, "[{backend}]");
    let everything = all_deliveries(&http, &inst.base(), &viewer, None);
    assert_eq!(
        everything.len(),
        EVENTS,
        "[{backend}] one delivery per event, every one delivered: {:?}",
        everything
            .iter()
            .filter(|d| d["state"] != "delivered")
            .take(5)
            .collect::<Vec<_>>()
    );
    let event_ids: HashSet<String> = delivered
        .iter()
        .map(|d| d["event_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        event_ids, acked,
        "[{backend}] the store's deliveries are the acknowledged events"
    );

    let total_requests: usize = by_key.values().sum();
    let duplicates = total_requests - received.len();
    let redelivered: Vec<(&String, &usize)> = by_key.iter().filter(|(_, n)| **n > 1).collect();
    let in_flight_at_kill: Vec<_> = redelivered
        .iter()
        .filter(|(k, _)| at_kill.contains_key(*k))
        .collect();
    eprintln!(
        "[{backend}] {total_requests} request(s) for {} event(s): {duplicates} duplicate(s) caused by the kill ({} key(s) sent more than once, {} of them already received before the kill)",
        received.len(),
        redelivered.len(),
        in_flight_at_kill.len()
    );
    // A request is sent again only if its result was not committed when the process died:
    // that bounds redeliveries by what can be in flight at once.
    assert!(
        redelivered.len() <= LANE,
        "[{backend}] {} events were delivered more than once; at most {LANE} can be in flight",
        redelivered.len()
    );
    assert!(
        redelivered.iter().all(|(k, _)| at_kill.contains_key(*k)),
        "[{backend}] only requests the receiver had seen before the kill may be repeated"
    );

    let status = inst.sigterm();
    assert!(
        status.success(),
        "[{backend}] SIGTERM exit status {status:?}"
    );
}
