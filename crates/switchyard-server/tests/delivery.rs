//! The delivery engine end to end: real HTTP receivers on loopback, a real SQLite store,
//! the real server; a manual clock wherever time matters (waits poll state, never time).

mod support;

use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use support::*;
use switchyard_core::ManualClock;

fn config(url: &str, extra_flow: &str, extra_dest: &str) -> String {
    format!(
        r#"
[delivery]
poll_ms = 10

[[destinations]]
name = "wms"
url = "{url}"
{extra_dest}

[[flows]]
name = "orders"
version = "2"
destination = "wms"
match = {{ source = "shop*", type = ["order.*"] }}
map = "{{order: .data.id, qty: .data.qty}}"
schema = {{ type = "object", required = ["order", "qty"], properties = {{ order = {{ type = "string" }}, qty = {{ type = "integer", minimum = 1 }} }} }}
retry = {{ max_attempts = 4, initial_ms = 1000, max_backoff_seconds = 60, max_age_seconds = 3600 }}
{extra_flow}
"#
    )
}

fn t0() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339("2026-11-23T08:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc)
}

async fn server(cfg: String, clock: Option<Arc<ManualClock>>) -> Server {
    start(Setup {
        flows: Some(cfg),
        clock: clock.map(|c| c as switchyard_core::SharedClock),
        ..Default::default()
    })
    .await
}

async fn delivery_of(s: &Server, event_id: &str) -> Value {
    let (_, list) = s.get_as("/v1/deliveries?limit=1000", &s.admin).await;
    list["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["event_id"] == event_id)
        .cloned()
        .unwrap_or_else(|| panic!("no delivery for {event_id}: {list}"))
}

async fn wait_state(s: &Server, id: i64, state: &str) -> Value {
    s.wait_for(&format!("/v1/deliveries/{id}"), |b| {
        b["delivery"]["state"] == state
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn maps_validates_and_delivers_with_idempotency_key_and_traceparent() {
    let rx = Receiver::ok().await;
    let s = server(config(&rx.url, "", ""), None).await;
    let r = s
        .structured(&ce(
            "shop-eu",
            "o-1",
            "order.created",
            json!({"id": "S1", "qty": 3}),
        ))
        .await;
    assert_eq!(r.status(), 202);
    let got = rx.wait_count(1).await;
    assert_eq!(got[0].body, json!({"order": "S1", "qty": 3}));
    let key = got[0].headers["idempotency-key"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(
        key,
        switchyard_core::delivery::idempotency_key("orders", "shop-eu", "o-1", 0)
    );
    let tp = got[0].headers["traceparent"].to_str().unwrap();
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4);
    assert_eq!(parts[0], "00");
    assert_eq!(parts[1].len(), 32);
    assert_eq!(parts[2].len(), 16);
    assert_eq!(got[0].headers["content-type"], "application/json");
    let d = delivery_of(&s, "o-1").await;
    let done = wait_state(&s, d["id"].as_i64().unwrap(), "delivered").await;
    assert_eq!(done["delivery"]["flow_version"], "2");
    assert_eq!(done["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(done["attempts"][0]["outcome"], "delivered");
    assert_eq!(done["attempts"][0]["status"], 200);
    assert_eq!(done["event"]["event"]["id"], "o-1");
    // Unselected events make no delivery; a duplicate makes no second one.
    s.structured(&ce("wms", "w-1", "order.created", json!({})))
        .await;
    s.structured(&ce(
        "shop-eu",
        "o-1",
        "order.created",
        json!({"id": "S1", "qty": 3}),
    ))
    .await;
    let (_, list) = s.get_as("/v1/deliveries", &s.admin).await;
    assert_eq!(list["deliveries"].as_array().unwrap().len(), 1);
    assert_eq!(rx.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mapping_and_schema_failures_are_recorded_and_replayable_after_a_fix() {
    let rx = Receiver::ok().await;
    let s = server(config(&rx.url, "", ""), None).await;
    // qty 0 breaks the schema; a string id with arithmetic breaks nothing here, but a
    // missing qty does.
    s.structured(&ce(
        "shop",
        "bad-1",
        "order.created",
        json!({"id": "S1", "qty": 0}),
    ))
    .await;
    s.structured(&ce(
        "shop",
        "bad-2",
        "order.created",
        json!({"id": 7, "qty": 2}),
    ))
    .await;
    let (_, dlq) = s.get_as("/v1/dlq", &s.viewer).await;
    let items = dlq["deliveries"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{dlq}");
    for d in items {
        assert_eq!(d["state"], "invalid");
        assert_eq!(d["error_class"], "invalid");
        assert!(d["error_detail"][0]["pointer"].is_string(), "{d}");
    }
    assert_eq!(items[0]["error_detail"][0]["pointer"], "/qty");
    assert_eq!(items[1]["error_detail"][0]["pointer"], "/order");
    assert_eq!(rx.count(), 0, "nothing invalid is sent");

    // An edit that is still invalid is refused with the schema errors, changing nothing.
    let id1 = items[0]["id"].as_i64().unwrap();
    let r = s
        .post_as(
            &format!("/v1/dlq/{id1}/replay"),
            &s.admin,
            &json!({"reason": "fix qty", "payload": {"order": "S1", "qty": "x"}}),
        )
        .await;
    let body = problem(r, 400, "invalid-request").await;
    assert_eq!(body["errors"][0]["pointer"], "/payload/qty");
    // A valid edit is sent, with the replay generation in its idempotency key.
    let r = s
        .post_as(
            &format!("/v1/dlq/{id1}/replay"),
            &s.admin,
            &json!({"reason": "qty confirmed by phone", "payload": {"order": "S1", "qty": 1}}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let got = rx.wait_count(1).await;
    assert_eq!(got[0].body, json!({"order": "S1", "qty": 1}));
    assert!(
        got[0].headers["idempotency-key"]
            .to_str()
            .unwrap()
            .ends_with(".r1")
    );
    wait_state(&s, id1, "delivered").await;

    // Replaying the other one re-maps the stored event with the current flow; the flow is
    // unchanged, so it is still invalid and is refused.
    let id2 = items[1]["id"].as_i64().unwrap();
    let r = s
        .post_as(
            &format!("/v1/dlq/{id2}/replay"),
            &s.admin,
            &json!({"reason": "retry"}),
        )
        .await;
    problem(r, 400, "invalid-request").await;
    // Replay and edit are audited with actor, reason and what changed.
    let (_, audit) = s.get_as("/v1/audit", &s.admin).await;
    let entries: Vec<&Value> = audit["audit"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "dlq.edit")
        .collect();
    assert_eq!(entries.len(), 1, "{audit}");
    assert_eq!(entries[0]["actor"], "admin");
    assert_eq!(entries[0]["detail"]["reason"], "qty confirmed by phone");
    assert_eq!(
        entries[0]["detail"]["changed"]["payload"]["after"]["qty"],
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fixed_flow_replays_mapping_failures() {
    let rx = Receiver::ok().await;
    let fixed = config(&rx.url, "", "");
    // The configuration before the fix: the mapping fails on a string qty.
    let broken = fixed.replace(
        "map = \"{order: .data.id, qty: .data.qty}\"",
        "map = \"{order: .data.id, qty: (.data.qty + 0)}\"",
    );
    let s = server(fixed.clone(), None).await;
    // The event was routed (and its failure recorded) under the broken configuration, as if
    // before a restart with the corrected one.
    let old = switchyard_core::Config::parse(&broken, "old.toml", Vec::new()).unwrap();
    let old = switchyard_core::flows::Flows::compile(&old).unwrap();
    let event = switchyard_core::CloudEvent::from_json(ce(
        "shop",
        "m-1",
        "order.created",
        json!({"id": "S9", "qty": "2"}),
    ))
    .unwrap()
    .event;
    let deliveries = switchyard_deliver::router::route(&old, &event);
    assert_eq!(
        deliveries[0].state,
        switchyard_store::DeliveryState::MappingFailed
    );
    s.store
        .append_routed(vec![switchyard_store::NewEvent {
            event,
            received_at: chrono::Utc::now(),
            keys: vec![],
            deliveries,
        }])
        .await
        .unwrap();
    let (_, dlq) = s.get_as("/v1/dlq?class=mapping", &s.viewer).await;
    let d = &dlq["deliveries"][0];
    assert_eq!(d["state"], "mapping_failed", "{dlq}");
    assert!(d["last_error"].as_str().unwrap().starts_with("map:"), "{d}");
    let id = d["id"].as_i64().unwrap();
    // The fixed flow maps it (qty stays a string: the schema now refuses it)...
    let r = s
        .post_as(
            &format!("/v1/dlq/{id}/replay"),
            &s.admin,
            &json!({"reason": "flow fixed"}),
        )
        .await;
    let body = problem(r, 400, "invalid-request").await;
    assert_eq!(body["errors"][0]["pointer"], "/payload/qty", "{body}");
    // ...so the operator edits it, and it is delivered.
    let r = s
        .post_as(
            &format!("/v1/dlq/{id}/replay"),
            &s.admin,
            &json!({"reason": "qty as number", "payload": {"order": "S9", "qty": 2}}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let got = rx.wait_count(1).await;
    assert_eq!(got[0].body, json!({"order": "S9", "qty": 2}));
    wait_state(&s, id, "delivered").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn remap_after_fix_delivers_without_an_edit() {
    let rx = Receiver::ok().await;
    let fixed = config(&rx.url, "", "").replace(
        "map = \"{order: .data.id, qty: .data.qty}\"",
        "map = \"{order: (.data.id | tostring), qty: .data.qty}\"",
    );
    let s = server(fixed, None).await;
    let old = config(&rx.url, "", "");
    let old = switchyard_core::Config::parse(&old, "old.toml", Vec::new()).unwrap();
    let old = switchyard_core::flows::Flows::compile(&old).unwrap();
    let event = switchyard_core::CloudEvent::from_json(ce(
        "shop",
        "n-1",
        "order.created",
        json!({"id": 42, "qty": 2}),
    ))
    .unwrap()
    .event;
    let deliveries = switchyard_deliver::router::route(&old, &event);
    assert_eq!(
        deliveries[0].state,
        switchyard_store::DeliveryState::Invalid
    );
    s.store
        .append_routed(vec![switchyard_store::NewEvent {
            event,
            received_at: chrono::Utc::now(),
            keys: vec![],
            deliveries,
        }])
        .await
        .unwrap();
    let (_, dlq) = s.get_as("/v1/dlq", &s.viewer).await;
    let id = dlq["deliveries"][0]["id"].as_i64().unwrap();
    let r = s
        .post_as(
            &format!("/v1/dlq/{id}/replay"),
            &s.admin,
            &json!({"reason": "ids are text now"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let got = rx.wait_count(1).await;
    assert_eq!(got[0].body, json!({"order": "42", "qty": 2}));
    wait_state(&s, id, "delivered").await;
    let (_, audit) = s.get_as("/v1/audit", &s.admin).await;
    let text = audit.to_string();
    assert!(
        text.contains("dlq.replay") && text.contains("ids are text now"),
        "{audit}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retry_schedule_honours_retry_after_then_dead_letters() {
    let clock = Arc::new(ManualClock::new(t0()));
    let rx = Receiver::start(|n, _| match n {
        0 => (503, vec![], Duration::ZERO),
        1 => (429, vec![("retry-after", "120".into())], Duration::ZERO),
        _ => (500, vec![], Duration::ZERO),
    })
    .await;
    let s = server(config(&rx.url, "", ""), Some(clock.clone())).await;
    s.structured(&ce(
        "shop",
        "r-1",
        "order.created",
        json!({"id": "S1", "qty": 1}),
    ))
    .await;
    let id = delivery_of(&s, "r-1").await["id"].as_i64().unwrap();
    let d = wait_state(&s, id, "retry_wait").await;
    let next = |d: &Value| {
        chrono::DateTime::parse_from_rfc3339(d["delivery"]["next_attempt_at"].as_str().unwrap())
            .unwrap()
            .with_timezone(&chrono::Utc)
    };
    // First retry: full jitter under a 1 s ceiling.
    let n1 = next(&d);
    assert!(
        n1 >= t0() && n1 <= t0() + chrono::Duration::seconds(1),
        "{n1}"
    );
    assert_eq!(d["delivery"]["attempts"], 1);
    assert_eq!(d["delivery"]["error_class"], "transient");
    assert_eq!(d["delivery"]["last_status"], 503);
    // Not sent again before it is due.
    assert_eq!(rx.count(), 1);
    clock.set(n1);
    rx.wait_count(2).await;
    let d = s
        .wait_for(&format!("/v1/deliveries/{id}"), |b| {
            b["delivery"]["attempts"] == 2
        })
        .await;
    // 429 with Retry-After: 120 s wins over the ≤ 2 s backoff.
    assert_eq!(next(&d), n1 + chrono::Duration::seconds(120));
    clock.set(n1 + chrono::Duration::seconds(119));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(rx.count(), 2, "Retry-After is honoured");
    clock.set(n1 + chrono::Duration::seconds(120));
    rx.wait_count(3).await;
    let d = s
        .wait_for(&format!("/v1/deliveries/{id}"), |b| {
            b["delivery"]["attempts"] == 3
        })
        .await;
    clock.set(next(&d));
    rx.wait_count(4).await;
    // max_attempts = 4: dead-lettered with the full reason.
    let d = wait_state(&s, id, "dead").await;
    assert!(
        d["delivery"]["last_error"]
            .as_str()
            .unwrap()
            .contains("gave up after 4 attempts"),
        "{d}"
    );
    let outcomes: Vec<(Value, Value)> = d["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["outcome"].clone(), a["status"].clone()))
        .collect();
    assert_eq!(
        outcomes,
        vec![
            (json!("transient"), json!(503)),
            (json!("transient"), json!(429)),
            (json!("transient"), json!(500)),
            (json!("transient"), json!(500)),
        ]
    );
    // All attempts of one delivery carry the same idempotency key.
    let keys: std::collections::HashSet<String> = rx
        .requests()
        .iter()
        .map(|r| r.headers["idempotency-key"].to_str().unwrap().to_string())
        .collect();
    assert_eq!(keys.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn classifier_table_over_real_http() {
    // Each status, once, then what happens to the delivery.
    let cases: &[(u16, &str)] = &[
        (400, "dead"),
        (404, "dead"),
        (422, "dead"),
        (408, "retry_wait"),
        (409, "retry_wait"),
        (423, "retry_wait"),
        (425, "retry_wait"),
        (429, "retry_wait"),
        (500, "retry_wait"),
        (503, "retry_wait"),
        (401, "retry_wait"),
        (403, "retry_wait"),
    ];
    for (status, expect) in cases {
        let clock = Arc::new(ManualClock::new(t0()));
        let st = *status;
        let rx = Receiver::start(move |_, _| (st, vec![], Duration::ZERO)).await;
        let s = server(config(&rx.url, "", ""), Some(clock)).await;
        s.structured(&ce(
            "shop",
            "c-1",
            "order.created",
            json!({"id": "S1", "qty": 1}),
        ))
        .await;
        let id = delivery_of(&s, "c-1").await["id"].as_i64().unwrap();
        let d = wait_state(&s, id, expect).await;
        let class = match st {
            401 | 403 => "credential",
            400 | 404 | 422 => "permanent",
            _ => "transient",
        };
        assert_eq!(d["delivery"]["error_class"], class, "status {st}: {d}");
        assert_eq!(d["attempts"][0]["status"], st);
        if class == "credential" {
            let (_, dests) = s.get_as("/v1/destinations", &s.viewer).await;
            assert!(dests["destinations"][0]["paused"].is_object(), "{dests}");
        }
    }
    // A refused connection is transient.
    let clock = Arc::new(ManualClock::new(t0()));
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let s = server(
        config(&format!("http://127.0.0.1:{port}/x"), "", ""),
        Some(clock),
    )
    .await;
    s.structured(&ce(
        "shop",
        "c-2",
        "order.created",
        json!({"id": "S1", "qty": 1}),
    ))
    .await;
    let id = delivery_of(&s, "c-2").await["id"].as_i64().unwrap();
    let d = wait_state(&s, id, "retry_wait").await;
    assert_eq!(d["delivery"]["error_class"], "transient");
    assert!(
        d["attempts"][0]["error"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("connect"),
        "{d}"
    );
}

async fn destinations(s: &Server) -> Value {
    s.get_as("/v1/destinations", &s.viewer).await.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn credential_failure_pauses_until_resumed_by_hand_or_a_trial() {
    let clock = Arc::new(ManualClock::new(t0()));
    let rx = Receiver::start(|n, _| {
        if n == 0 {
            (401, vec![], Duration::ZERO)
        } else {
            (200, vec![], Duration::ZERO)
        }
    })
    .await;
    let s = server(
        config(&rx.url, "", "credential_cooldown_seconds = 300"),
        Some(clock.clone()),
    )
    .await;
    s.structured(&ce(
        "shop",
        "p-1",
        "order.created",
        json!({"id": "S1", "qty": 1}),
    ))
    .await;
    let id1 = delivery_of(&s, "p-1").await["id"].as_i64().unwrap();
    let d = wait_state(&s, id1, "retry_wait").await;
    assert_eq!(d["delivery"]["error_class"], "credential");
    assert_eq!(
        d["delivery"]["attempts"], 0,
        "a pause spends no retry budget"
    );
    let dests = destinations(&s).await;
    let paused = &dests["destinations"][0]["paused"];
    assert!(
        paused["reason"].as_str().unwrap().contains("401"),
        "{dests}"
    );
    // While paused nothing goes out, not even new events, and nothing is dead-lettered.
    s.structured(&ce(
        "shop",
        "p-2",
        "order.created",
        json!({"id": "S2", "qty": 1}),
    ))
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rx.count(), 1);
    let (_, dlq) = s.get_as("/v1/dlq", &s.viewer).await;
    assert!(dlq["deliveries"].as_array().unwrap().is_empty());
    // Resumed by hand (an operator; audited): both go out.
    let r = s
        .post_as(
            "/v1/destinations/wms/resume",
            &s.viewer,
            &json!({"reason": "x"}),
        )
        .await;
    problem(r, 403, "forbidden").await;
    let r = s
        .post_as(
            "/v1/destinations/wms/resume",
            &s.admin,
            &json!({"reason": "new API key deployed"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    rx.wait_count(3).await;
    wait_state(&s, id1, "delivered").await;
    let (_, audit) = s.get_as("/v1/audit", &s.admin).await;
    let resume: Vec<&Value> = audit["audit"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "destination.resume")
        .collect();
    assert_eq!(resume.len(), 1);
    assert_eq!(resume[0]["detail"]["reason"], "new API key deployed");

    // Paused again; after the cool-down one trial delivery resumes it by itself.
    rx.set(|n, _| {
        if n == 3 {
            (403, vec![], Duration::ZERO)
        } else {
            (200, vec![], Duration::ZERO)
        }
    });
    s.structured(&ce(
        "shop",
        "p-3",
        "order.created",
        json!({"id": "S3", "qty": 1}),
    ))
    .await;
    s.wait_for("/v1/destinations", |b| {
        b["destinations"][0]["paused"].is_object()
    })
    .await;
    s.structured(&ce(
        "shop",
        "p-4",
        "order.created",
        json!({"id": "S4", "qty": 1}),
    ))
    .await;
    clock.advance(chrono::Duration::seconds(299));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rx.count(), 4, "still cooling down");
    clock.advance(chrono::Duration::seconds(2));
    rx.wait_count(6).await;
    s.wait_for("/v1/destinations", |b| {
        b["destinations"][0]["paused"].is_null()
    })
    .await;
    let (_, audit) = s.get_as("/v1/audit", &s.admin).await;
    assert!(
        audit["audit"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "destination.resume" && e["actor"] == "system"),
        "{audit}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn circuit_opens_probes_and_closes_when_the_receiver_recovers() {
    let clock = Arc::new(ManualClock::new(t0()));
    let rx = Receiver::start(|_, _| (503, vec![], Duration::ZERO)).await;
    let s = server(
        config(&rx.url, "", "circuit = { failures = 3, open_seconds = 30 }"),
        Some(clock.clone()),
    )
    .await;
    for i in 0..3 {
        s.structured(&ce(
            "shop",
            &format!("k-{i}"),
            "order.created",
            json!({"id": "S", "qty": 1}),
        ))
        .await;
    }
    rx.wait_count(3).await;
    let dests = s
        .wait_for("/v1/destinations", |b| {
            b["destinations"][0]["circuit"] == "open"
        })
        .await;
    assert_eq!(dests["destinations"][0]["consecutive_failures"], 3);
    rx.set(|_, _| (200, vec![], Duration::ZERO));
    // Retries are due (≤ 1 s backoff) but the circuit is open: nothing goes out.
    clock.advance(chrono::Duration::seconds(5));
    s.structured(&ce(
        "shop",
        "k-3",
        "order.created",
        json!({"id": "S", "qty": 1}),
    ))
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rx.count(), 3, "an open circuit sends nothing");
    // Half-open after 30 s: one probe, which succeeds and closes the circuit.
    clock.advance(chrono::Duration::seconds(26));
    rx.wait_count(7).await;
    s.wait_for("/v1/destinations", |b| {
        b["destinations"][0]["circuit"] == "closed"
    })
    .await;
    // The receiver counts a request before the hub has committed its result: wait for it.
    s.wait_for("/v1/deliveries?state=delivered", |b| {
        b["deliveries"].as_array().map_or(0, Vec::len) >= 4
    })
    .await;
    let (_, list) = s.get_as("/v1/deliveries?state=delivered", &s.admin).await;
    assert_eq!(list["deliveries"].as_array().unwrap().len(), 4);
    let metrics = s
        .http
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("switchyard_delivery_failures_total"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn per_key_ordering_holds_only_the_failing_key() {
    let clock = Arc::new(ManualClock::new(t0()));
    // The first request (A1) fails; everything else succeeds.
    let rx = Receiver::start(|n, _| {
        if n == 0 {
            (503, vec![], Duration::ZERO)
        } else {
            (200, vec![], Duration::ZERO)
        }
    })
    .await;
    let s = server(
        config(&rx.url, "ordering = { key = \".data.id\" }", ""),
        Some(clock.clone()),
    )
    .await;
    s.structured(&ce(
        "shop",
        "A1",
        "order.created",
        json!({"id": "A", "qty": 1}),
    ))
    .await;
    rx.wait_count(1).await;
    for (id, key) in [("A2", "A"), ("B1", "B"), ("A3", "A"), ("B2", "B")] {
        s.structured(&ce(
            "shop",
            id,
            "order.created",
            json!({"id": key, "qty": 1}),
        ))
        .await;
    }
    // B goes through; A waits behind its failing head.
    let got = rx.wait_count(3).await;
    let ids = |got: &[Received]| -> Vec<String> {
        got.iter()
            .map(|r| {
                r.headers["x-switchyard-event-id"]
                    .to_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    assert_eq!(ids(&got), vec!["A1", "B1", "B2"]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rx.count(), 3, "A2 and A3 wait for A1");
    clock.advance(chrono::Duration::seconds(2));
    let got = rx.wait_count(6).await;
    assert_eq!(ids(&got)[3..], ["A1", "A2", "A3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn critical_is_scheduled_ahead_of_a_50k_bulk_backlog() {
    // One slow receiver behind one destination with 2 slots; a bulk flow with a 50,000
    // event backlog and a critical flow to the same destination.
    let rx = Receiver::start(|_, r| {
        let slow = r.headers["x-switchyard-flow"] == "bulk-sync";
        (
            200,
            vec![],
            if slow {
                Duration::from_millis(20)
            } else {
                Duration::ZERO
            },
        )
    })
    .await;
    let cfg = format!(
        r#"
[delivery]
poll_ms = 10
lanes = {{ critical = 4, standard = 4, bulk = 4 }}

[[destinations]]
name = "wms"
url = "{}"
concurrency = 2

[[flows]]
name = "bulk-sync"
destination = "wms"
priority = "bulk"
match = {{ type = ["stock.level"] }}

[[flows]]
name = "urgent"
destination = "wms"
priority = "critical"
match = {{ type = ["order.rush"] }}
"#,
        rx.url
    );
    let s = start(Setup {
        flows: Some(cfg),
        max_body: 1024 * 1024,
        ..Default::default()
    })
    .await;
    let mut n = 0;
    while n < 50_000 {
        let batch: Vec<Value> = (n..n + 2_000)
            .map(|i| ce("wms", &format!("s-{i}"), "stock.level", json!({"sku": i})))
            .collect();
        let r = s
            .http
            .post(format!("{}/v1/events", s.base))
            .bearer_auth(&s.ingest)
            .header("content-type", "application/cloudevents-batch+json")
            .body(Value::Array(batch).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        n += 2_000;
    }
    let before = rx.count();
    for i in 0..10 {
        s.structured(&ce(
            "shop",
            &format!("rush-{i}"),
            "order.rush",
            json!({"i": i}),
        ))
        .await;
    }
    // Every critical delivery is done while the bulk backlog is still almost all there.
    s.wait_for("/v1/deliveries?flow=urgent&state=delivered", |b| {
        b["deliveries"].as_array().is_some_and(|d| d.len() == 10)
    })
    .await;
    let got = rx.requests();
    let last_urgent = got
        .iter()
        .rposition(|r| r.headers["x-switchyard-flow"] == "urgent")
        .unwrap();
    let bulk_before_last_urgent = got[..last_urgent]
        .iter()
        .filter(|r| r.headers["x-switchyard-flow"] == "bulk-sync")
        .count();
    // At most the bulk requests already sent or holding a slot when the rush began, plus
    // the ones that took a slot between two critical ones.
    assert!(
        bulk_before_last_urgent <= before + 4 + 2 + 10,
        "{bulk_before_last_urgent} bulk deliveries went before the last critical one (before the rush: {before})"
    );
    let (_, flows) = s.get_as("/v1/flows", &s.viewer).await;
    let bulk = flows["flows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "bulk-sync")
        .unwrap();
    let pending = bulk["deliveries"]["scheduled"].as_i64().unwrap_or(0)
        + bulk["deliveries"]["delivering"].as_i64().unwrap_or(0);
    assert!(pending > 45_000, "the backlog is still there: {bulk}");
    let dests = destinations(&s).await;
    let lanes = dests["lanes"].as_array().unwrap();
    let bulk_lane = lanes.iter().find(|l| l["lane"] == "bulk").unwrap();
    // The bulk lane is busy with its backlog (between two attempts it may dip by one).
    assert!(bulk_lane["in_flight"].as_u64().unwrap() >= 1, "{dests}");
    assert_eq!(dests["destinations"][0]["slots_free"], 0, "{dests}");
    let critical_lane = lanes.iter().find(|l| l["lane"] == "critical").unwrap();
    assert_eq!(critical_lane["in_flight"], 0, "{dests}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outbound_auth_and_standard_webhooks_signature() {
    let rx = Receiver::ok().await;
    // SAFETY-free: the secrets are referenced from files.
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret-token\n").unwrap();
    let signing = dir.path().join("whsec");
    let key = b"0123456789abcdef0123456789abcdef";
    use base64::Engine as _;
    let whsec = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    );
    std::fs::write(&signing, &whsec).unwrap();
    let extra = format!(
        "auth = {{ type = \"bearer\", token = \"file:{}\" }}\nsigning_secret = \"file:{}\"\nheaders = {{ \"X-Tenant\" = \"acme\" }}",
        token.display(),
        signing.display()
    );
    let s = server(config(&rx.url, "", &extra), None).await;
    s.structured(&ce(
        "shop",
        "w-1",
        "order.created",
        json!({"id": "S1", "qty": 3}),
    ))
    .await;
    let got = rx.wait_count(1).await;
    let h = &got[0].headers;
    assert_eq!(h["authorization"], "Bearer s3cret-token");
    assert_eq!(h["x-tenant"], "acme");
    let id = h["webhook-id"].to_str().unwrap();
    assert_eq!(id, h["idempotency-key"].to_str().unwrap());
    let ts: i64 = h["webhook-timestamp"].to_str().unwrap().parse().unwrap();
    assert!((chrono::Utc::now().timestamp() - ts).abs() < 60);
    // Verify as a Standard Webhooks receiver would, over the exact bytes sent.
    let body = serde_json::to_vec(&got[0].body).unwrap();
    let expected = switchyard_deliver::destination::sign(key, id, ts, &body);
    assert_eq!(h["webhook-signature"].to_str().unwrap(), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redirects_are_not_followed() {
    let rx = Receiver::start(|_, _| {
        (
            302,
            vec![("location", "http://127.0.0.1:9/elsewhere".into())],
            Duration::ZERO,
        )
    })
    .await;
    let s = server(config(&rx.url, "", ""), None).await;
    s.structured(&ce(
        "shop",
        "x-1",
        "order.created",
        json!({"id": "S1", "qty": 1}),
    ))
    .await;
    let id = delivery_of(&s, "x-1").await["id"].as_i64().unwrap();
    let d = wait_state(&s, id, "dead").await;
    assert_eq!(d["attempts"][0]["status"], 302);
    assert_eq!(d["delivery"]["error_class"], "permanent");
    assert_eq!(rx.count(), 1);
}
