//! The delivery commands as an operator meets them: the real binary with a flow to a real
//! HTTP receiver on loopback (`dlq`, `backfill`, `deliveries`, `destinations`).

mod support;

use serde_json::{Value, json};
use std::process::Command;
use std::time::Duration;
use support::{Instance, Receiver, cli, fails, ok, text};
use switchyard_core::delivery::idempotency_key;

const WAIT: Duration = Duration::from_secs(60);

fn flow_config(url: &str) -> String {
    format!(
        r#"
[delivery]
poll_ms = 50

# The receiver counts every request it gets: no HEAD probes of the destination.
[probes]
destinations = false

[[destinations]]
name = "wms"
url = "{url}"
credential_cooldown_seconds = 3600

[[flows]]
name = "orders"
destination = "wms"
match = {{ source = "/shop", type = ["order.*"] }}
map = "{{order: .data.id, qty: .data.qty}}"
schema = {{ type = "object", required = ["order", "qty"], properties = {{ order = {{ type = "string" }}, qty = {{ type = "integer", minimum = 1 }} }} }}
"#
    )
}

fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn ingest(inst: &Instance, token: &str, ids: &[&str]) {
    let http = reqwest::blocking::Client::new();
    let batch: Vec<Value> = ids
        .iter()
        .map(|id| {
            json!({"specversion": "1.0", "id": id, "source": "/shop", "type": "order.created",
                   "data": {"id": format!("S-{id}"), "qty": 1}})
        })
        .collect();
    let r = http
        .post(format!("{}/v1/events", inst.base()))
        .bearer_auth(token)
        .header("content-type", "application/cloudevents-batch+json")
        .body(Value::Array(batch).to_string())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 202, "{}", r.text().unwrap());
}

fn api(inst: &Instance, token: &str, path: &str) -> Value {
    let r = reqwest::blocking::Client::new()
        .get(format!("{}{path}", inst.base()))
        .bearer_auth(token)
        .send()
        .unwrap();
    assert!(r.status().is_success(), "GET {path}: {}", r.status());
    r.json().unwrap()
}

/// Polls `GET path` until its `deliveries` number `n`.
fn wait_deliveries(inst: &Instance, token: &str, path: &str, n: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let v = api(inst, token, path);
        let items = v["deliveries"].as_array().unwrap().clone();
        if items.len() == n {
            return items;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{path}: {} deliveries, expected {n}: {items:?}",
            items.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn key(id: &str, generation: i64) -> String {
    idempotency_key("orders", "/shop", id, generation)
}

#[test]
fn dead_letters_are_listed_shown_replayed_and_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start(422, Duration::ZERO);
    let url = format!("sqlite://{}", dir.path().join("d.db").display());
    let mut inst = Instance::new(dir.path(), "dlq", &url, &flow_config(&rx.url));
    let admin = inst.create_token("admin", "alice");
    let ingest_token = inst.create_token("ingest", "shop");
    let viewer = inst.create_token("viewer", "vic");
    inst.start();

    // The receiver refuses every payload (422): each delivery is dead-lettered at once.
    ingest(&inst, &ingest_token, &["o1", "o2", "o3", "o4", "o5"]);
    wait_deliveries(&inst, &admin, "/v1/dlq?flow=orders", 5);
    assert_eq!(rx.count(), 5, "one attempt each: 422 is permanent");

    let table = ok(&inst, &viewer, &["dlq", "list"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 6, "a header and five dead letters:\n{table}");
    assert!(lines[0].contains("last error"), "{table}");
    for l in &lines[1..] {
        assert!(
            l.contains("orders") && l.contains("wms") && l.contains("dead"),
            "{l}"
        );
        assert!(l.contains("permanent") && l.contains("422"), "{l}");
    }
    let listed = json_lines(&ok(&inst, &viewer, &["dlq", "list", "--json"]));
    assert_eq!(listed.len(), 5);
    let id_of = |event_id: &str| -> String {
        listed
            .iter()
            .find(|d| d["event_id"] == event_id)
            .unwrap_or_else(|| panic!("no dead letter for {event_id}"))["id"]
            .to_string()
    };
    let (d1, d2, d5) = (id_of("o1"), id_of("o2"), id_of("o5"));
    // filters and paging go to the API
    let page = cli(&inst, &viewer, &["dlq", "list", "--json", "--limit", "2"]);
    assert_eq!(json_lines(&text(&page.stdout)).len(), 2);
    assert!(text(&page.stderr).contains("next: --after"), "{page:?}");
    let none = ok(
        &inst,
        &viewer,
        &["dlq", "list", "--json", "--class", "transient"],
    );
    assert!(none.is_empty(), "{none}");
    let bad = fails(&inst, &viewer, &["dlq", "list", "--class", "nope"]);
    assert!(
        bad.contains("HTTP 400") && bad.contains("unknown class"),
        "{bad}"
    );

    // show: the event, the mapped payload, the attempt history
    let shown = ok(&inst, &viewer, &["dlq", "show", &d1]);
    assert!(shown.contains("\"order\": \"S-o1\""), "{shown}");
    assert!(shown.contains("attempts (1):"), "{shown}");
    assert!(
        shown.contains("permanent") && shown.contains("422"),
        "{shown}"
    );
    assert!(
        shown.contains(&key("o1", 0)),
        "the Idempotency-Key:\n{shown}"
    );
    let v: Value =
        serde_json::from_str(&ok(&inst, &viewer, &["dlq", "show", &d1, "--json"])).unwrap();
    assert_eq!(v["event"]["event"]["id"], "o1");
    assert_eq!(v["delivery"]["payload"], json!({"order": "S-o1", "qty": 1}));
    assert_eq!(v["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(v["attempts"][0]["status"], 422);
    let missing = fails(&inst, &viewer, &["dlq", "show", "999999"]);
    assert!(missing.contains("HTTP 404"), "{missing}");

    // a viewer may look but not replay
    let denied = fails(&inst, &viewer, &["dlq", "replay", &d1, "--reason", "x"]);
    assert!(denied.contains("HTTP 403"), "{denied}");

    // The receiver is fixed. An edit is checked against the flow's schema first.
    rx.set_status(200);
    let refused = fails(
        &inst,
        &admin,
        &[
            "dlq",
            "replay",
            &d1,
            "--reason",
            "fix",
            "--payload",
            r#"{"order": 7}"#,
        ],
    );
    assert!(
        refused.contains("HTTP 400") && refused.contains("nothing was replayed"),
        "{refused}"
    );
    let replayed = ok(
        &inst,
        &admin,
        &[
            "dlq",
            "replay",
            &d1,
            "--reason",
            "wms fixed; corrected order",
            "--payload",
            r#"{"order": "S-o1-edited", "qty": 2}"#,
        ],
    );
    assert!(
        replayed.contains("with the edited payload as generation 1"),
        "{replayed}"
    );
    assert!(replayed.contains(&key("o1", 1)), "{replayed}");
    let file = dir.path().join("edit.json");
    std::fs::write(&file, r#"{"order": "S-o2-file", "qty": 3}"#).unwrap();
    ok(
        &inst,
        &admin,
        &[
            "dlq",
            "replay",
            &d2,
            "--reason",
            "from a file",
            "--payload-file",
            file.to_str().unwrap(),
        ],
    );
    let got = rx.wait_until("both edits delivered", WAIT, |r| {
        r.iter().any(|r| r.key == key("o1", 1)) && r.iter().any(|r| r.key == key("o2", 1))
    });
    let body_of = |k: &str| got.iter().find(|r| r.key == k).unwrap().body.clone();
    assert_eq!(
        body_of(&key("o1", 1)),
        json!({"order": "S-o1-edited", "qty": 2})
    );
    assert_eq!(
        body_of(&key("o2", 1)),
        json!({"order": "S-o2-file", "qty": 3})
    );

    // discard one by id
    let discarded = ok(
        &inst,
        &admin,
        &["dlq", "discard", &d5, "--reason", "obsolete"],
    );
    assert!(discarded.contains("discarded delivery"), "{discarded}");
    let gone = json_lines(&ok(
        &inst,
        &viewer,
        &["deliveries", "list", "--state", "discarded", "--json"],
    ));
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0]["id"].to_string(), d5);

    // the rest in bulk: a `dlq.replay` job, followed to its end
    let bulk = ok(
        &inst,
        &admin,
        &[
            "dlq",
            "replay",
            "--all",
            "--flow",
            "orders",
            "--reason",
            "receiver fixed",
        ],
    );
    assert!(
        bulk.contains("succeeded: 2 dead letter(s) replayed"),
        "{bulk}"
    );
    rx.wait_until("the bulk replay delivered", WAIT, |r| {
        r.iter().any(|r| r.key == key("o3", 1)) && r.iter().any(|r| r.key == key("o4", 1))
    });
    wait_deliveries(&inst, &viewer, "/v1/deliveries?state=delivered", 4);
    let empty = cli(&inst, &viewer, &["dlq", "list"]);
    assert_eq!(text(&empty.stdout).lines().count(), 1, "only the header");
    assert!(text(&empty.stderr).contains("0 dead letter(s)"));

    // deliveries: filters by state (comma-separated or repeated) and by event
    let delivered = json_lines(&ok(
        &inst,
        &viewer,
        &["deliveries", "list", "--state", "delivered", "--json"],
    ));
    assert_eq!(delivered.len(), 4);
    let both = json_lines(&ok(
        &inst,
        &viewer,
        &[
            "deliveries",
            "list",
            "--state",
            "delivered,discarded",
            "--flow",
            "orders",
            "--json",
        ],
    ));
    assert_eq!(both.len(), 5);
    let seq = delivered[0]["event_seq"].to_string();
    let one = ok(&inst, &viewer, &["deliveries", "list", "--event-seq", &seq]);
    assert_eq!(one.lines().count(), 2, "{one}");
    assert!(one.contains("delivered at"), "{one}");
    let bad_state = fails(&inst, &viewer, &["deliveries", "list", "--state", "lost"]);
    assert!(bad_state.contains("unknown state"), "{bad_state}");

    // a delivered one is no dead letter; `deliveries show` has its whole history
    let conflict = fails(&inst, &admin, &["dlq", "replay", &d1, "--reason", "again"]);
    assert!(conflict.contains("HTTP 409"), "{conflict}");
    let not_dead = fails(&inst, &viewer, &["dlq", "show", &d1]);
    assert!(not_dead.contains("HTTP 404"), "{not_dead}");
    let history = ok(&inst, &viewer, &["deliveries", "show", &d1]);
    assert!(history.contains("attempts (2):"), "{history}");
    assert!(
        history.contains("delivered, generation 1") && history.contains(&key("o1", 1)),
        "{history}"
    );
    assert!(history.contains("\"order\": \"S-o1-edited\""), "{history}");

    // bulk discard
    rx.set_status(422);
    ingest(&inst, &ingest_token, &["o6", "o7"]);
    wait_deliveries(&inst, &viewer, "/v1/dlq", 2);
    let out = ok(
        &inst,
        &admin,
        &[
            "dlq",
            "discard",
            "--all",
            "--class",
            "permanent",
            "--reason",
            "duplicates of o1",
        ],
    );
    assert!(
        out.contains("succeeded: 2 dead letter(s) discarded"),
        "{out}"
    );
    wait_deliveries(&inst, &viewer, "/v1/dlq", 0);
    let jobs = ok(&inst, &viewer, &["jobs", "list"]);
    assert!(
        jobs.contains("dlq.replay") && jobs.contains("dlq.discard"),
        "{jobs}"
    );

    // destinations: healthy, so nothing to resume
    let dests = ok(&inst, &viewer, &["destinations", "list"]);
    assert!(dests.contains("wms") && dests.contains("closed"), "{dests}");
    let not_paused = fails(
        &inst,
        &admin,
        &["destinations", "resume", "wms", "--reason", "x"],
    );
    assert!(
        not_paused.contains("HTTP 409") && not_paused.contains("not paused"),
        "{not_paused}"
    );
    let unknown = fails(
        &inst,
        &admin,
        &["destinations", "resume", "nope", "--reason", "x"],
    );
    assert!(unknown.contains("HTTP 404"), "{unknown}");

    // credentials refused (401): the destination pauses; the operator resumes it
    rx.set_status(401);
    ingest(&inst, &ingest_token, &["o8"]);
    let deadline = std::time::Instant::now() + WAIT;
    while api(&inst, &viewer, "/v1/destinations")["destinations"][0]["paused"].is_null() {
        assert!(std::time::Instant::now() < deadline, "never paused");
        std::thread::sleep(Duration::from_millis(50));
    }
    let paused = ok(&inst, &viewer, &["destinations", "list"]);
    assert!(
        paused.contains("since") && paused.contains("401"),
        "{paused}"
    );
    let pj = json_lines(&ok(&inst, &viewer, &["destinations", "list", "--json"]));
    assert_eq!(pj[0]["name"], "wms");
    assert!(!pj[0]["paused"].is_null());
    rx.set_status(200);
    let resumed = ok(
        &inst,
        &admin,
        &["destinations", "resume", "wms", "--reason", "token rotated"],
    );
    assert!(resumed.contains("resumed destination wms"), "{resumed}");
    rx.wait_until("o8 delivered after the resume", WAIT, |r| {
        r.iter().filter(|r| r.key == key("o8", 0)).count() >= 2
    });
    wait_deliveries(&inst, &viewer, "/v1/deliveries?state=delivered", 5);

    assert!(inst.sigterm().success());
}

#[test]
fn delivery_commands_check_their_arguments() {
    let run = |args: &[&str]| {
        Command::new(support::bin())
            .args(args)
            .args(["--url", "http://127.0.0.1:1", "--token", "t"])
            .output()
            .unwrap()
    };
    for args in [
        &["dlq", "replay", "--reason", "r"][..], // neither an id nor --all
        &["dlq", "replay", "1", "--all", "--reason", "r"], // both
        &["dlq", "replay", "1", "--flow", "f", "--reason", "r"], // filters only with --all
        &["dlq", "replay", "1", "--payload", "{nope", "--reason", "r"], // not JSON
        &["dlq", "replay", "--all", "--payload", "{}", "--reason", "r"], // no edit in bulk
        &["dlq", "discard", "1"],                // no reason
        &[
            "dlq",
            "discard",
            "1",
            "--class",
            "permanent",
            "--reason",
            "r",
        ],
        &["backfill", "--since", "2026-01-01T00:00:00Z"], // no flow
    ] {
        let out = run(args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    let unreachable = run(&["dlq", "list"]);
    assert_eq!(unreachable.status.code(), Some(1));
    assert!(text(&unreachable.stderr).contains("cannot reach the server"));
}

#[test]
fn backfill_delivers_events_stored_before_the_flow_existed() {
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start(200, Duration::ZERO);
    let url = format!("sqlite://{}", dir.path().join("b.db").display());
    let since = (chrono::Utc::now() - chrono::Duration::minutes(1)).to_rfc3339();

    // Events arrive while no flow is configured: nothing is routed.
    let mut before = Instance::new(dir.path(), "noflow", &url, "");
    let admin = before.create_token("admin", "alice");
    let ingest_token = before.create_token("ingest", "shop");
    before.start();
    ingest(&before, &ingest_token, &["b1", "b2", "b3"]);
    // one event the flow does not select
    let r = reqwest::blocking::Client::new()
        .post(format!("{}/v1/events", before.base()))
        .bearer_auth(&ingest_token)
        .header("content-type", "application/cloudevents+json")
        .body(r#"{"specversion":"1.0","id":"x1","source":"/crm","type":"lead.created"}"#)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    assert!(before.sigterm().success());

    // The same store, now with the flow.
    let mut inst = Instance::new(dir.path(), "withflow", &url, &flow_config(&rx.url));
    inst.start();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(rx.count(), 0, "a flow applies to events arriving after it");
    let empty = ok(&inst, &admin, &["deliveries", "list", "--json"]);
    assert!(empty.is_empty(), "{empty}");

    let out = ok(
        &inst,
        &admin,
        &["backfill", "--flow", "orders", "--since", &since],
    );
    assert!(
        out.contains("succeeded: flow orders: 4 event(s) read, 3 selected, 3 new deliveries"),
        "{out}"
    );
    let got = rx.wait_until("the backfilled events delivered", WAIT, |r| r.len() >= 3);
    let mut keys: Vec<String> = got.iter().map(|r| r.key.clone()).collect();
    keys.sort();
    let mut want: Vec<String> = ["b1", "b2", "b3"].iter().map(|id| key(id, 0)).collect();
    want.sort();
    assert_eq!(keys, want);
    wait_deliveries(&inst, &admin, "/v1/deliveries?state=delivered", 3);

    // Run twice: nothing new. An explicit window that ends before the events finds none.
    let again = ok(
        &inst,
        &admin,
        &["backfill", "--flow", "orders", "--since", &since],
    );
    assert!(
        again.contains("0 new deliveries (3 already had one)"),
        "{again}"
    );
    let early = ok(
        &inst,
        &admin,
        &[
            "backfill",
            "--flow",
            "orders",
            "--since",
            "2000-01-01T00:00:00Z",
            "--until",
            "2000-01-02T00:00:00Z",
        ],
    );
    assert!(early.contains("0 event(s) read"), "{early}");
    let queued = ok(
        &inst,
        &admin,
        &[
            "backfill",
            "--flow",
            "orders",
            "--since",
            &since,
            "--no-wait",
        ],
    );
    assert!(queued.trim().parse::<i64>().is_ok(), "the job id: {queued}");

    // Unknown flow: the job fails, and so does the command.
    let err = fails(
        &inst,
        &admin,
        &["backfill", "--flow", "nope", "--since", &since],
    );
    assert!(
        err.contains("failed") && err.contains("no flow named \"nope\""),
        "{err}"
    );
    let bad = fails(
        &inst,
        &admin,
        &["backfill", "--flow", "orders", "--since", "yesterday"],
    );
    assert!(bad.contains("HTTP 400"), "{bad}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(rx.count(), 3, "every event delivered once");
    assert!(inst.sigterm().success());
}
