//! Two Switchyard nodes on one PostgreSQL database share the delivery work without
//! delivering anything twice (claims with `FOR UPDATE SKIP LOCKED`). Needs
//! `SWITCHYARD_TEST_PG_URL`; skips with a notice without it (CI always sets it).

mod support;

use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;
use support::*;

fn pg_url() -> Option<String> {
    match std::env::var("SWITCHYARD_TEST_PG_URL") {
        Ok(u) => Some(u),
        Err(_) => {
            assert!(
                std::env::var("CI").is_err(),
                "SWITCHYARD_TEST_PG_URL must be set in CI"
            );
            eprintln!("SKIPPED: multi-node delivery test (set SWITCHYARD_TEST_PG_URL to run it)");
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_share_deliveries_without_delivering_twice() {
    let Some(base) = pg_url() else { return };
    let schema = format!("sy_test_{}", uuid::Uuid::new_v4().simple());
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}schema={schema}");
    // A slow receiver and narrow lanes: most deliveries cannot be started at ingest and go
    // through the shared queue, where both nodes claim.
    let rx = Receiver::start(|_, _| (200, vec![], Duration::from_millis(5))).await;
    let cfg = format!(
        r#"
[delivery]
poll_ms = 10
lanes = {{ critical = 2, standard = 2, bulk = 2 }}

[[destinations]]
name = "wms"
url = "{}"
concurrency = 4

[[flows]]
name = "orders"
destination = "wms"
match = {{ type = ["order.created"] }}
"#,
        rx.url
    );
    let a = start(Setup {
        flows: Some(cfg.clone()),
        store_url: Some(url.clone()),
        node_id: Some("node-a".into()),
        max_body: 1024 * 1024,
        ..Default::default()
    })
    .await;
    let b = start(Setup {
        flows: Some(cfg),
        store_url: Some(url),
        node_id: Some("node-b".into()),
        ..Default::default()
    })
    .await;
    let total = 400;
    let batch: Vec<Value> = (0..total)
        .map(|i| ce("shop", &format!("o-{i}"), "order.created", json!({"i": i})))
        .collect();
    let r = a
        .http
        .post(format!("{}/v1/events", a.base))
        .bearer_auth(&a.ingest)
        .header("content-type", "application/cloudevents-batch+json")
        .body(Value::Array(batch).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    rx.wait_count(total).await;
    // Every delivery recorded as delivered, by one node or the other.
    let mut by_node: HashMap<String, usize> = HashMap::new();
    let mut after = 0;
    let mut delivered = 0;
    loop {
        let (_, page) = a
            .get_as(
                &format!("/v1/deliveries?state=delivered&limit=1000&after={after}"),
                &a.admin,
            )
            .await;
        let items = page["deliveries"].as_array().unwrap().clone();
        if items.is_empty() {
            break;
        }
        for d in &items {
            let id = d["id"].as_i64().unwrap();
            after = id;
            delivered += 1;
            let (_, one) = a.get_as(&format!("/v1/deliveries/{id}"), &a.admin).await;
            let attempts = one["attempts"].as_array().unwrap();
            assert_eq!(attempts.len(), 1, "one attempt each: {one}");
            *by_node
                .entry(attempts[0]["node"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    // Give a stray double delivery the chance to show, then count by idempotency key.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut keys: HashMap<String, usize> = HashMap::new();
    for r in rx.requests() {
        *keys
            .entry(r.headers["idempotency-key"].to_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(keys.len(), total, "every event delivered");
    assert!(keys.values().all(|&n| n == 1), "nothing delivered twice");
    assert_eq!(delivered, total);
    assert!(
        by_node.get("node-a").copied().unwrap_or(0) > 0
            && by_node.get("node-b").copied().unwrap_or(0) > 0,
        "both nodes took a share: {by_node:?}"
    );
    drop(b);
}
