//! Change capture against the Odoo simulator over loopback HTTP, on a manual clock: the
//! poller misses and duplicates nothing with a late commit (04_09-04_12) and with two
//! commits in one second, across restarts; initial sync (with more rows in one second than
//! a page) and gap resync; webhook hints confirmed by read-back, phantom hints of a
//! rolled-back call emit nothing, hint and poller give one event per change; the webhook
//! rule is installed idempotently.

use chrono::{DateTime, Duration, Utc};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use switchyard_core::clock::ManualClock;
use switchyard_core::sources::Sources;
use switchyard_core::{Config, SharedClock};
use switchyard_odoo::{CallOptions, OdooClient, OdooConfig};
use switchyard_odoo_sim::{SimConfig, Simulator};
use switchyard_server::odoo_capture::{Capture, PollReport};
use switchyard_server::odoo_hooks::{HookSpec, Installed, On, install_webhook};
use switchyard_server::{AppState, Limits};
use switchyard_store::{EventFilter, LogPosition, SharedStore, StoreOptions};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "hint-token-3f9a";

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

struct World {
    clock: Arc<ManualClock>,
    sim: Simulator,
    odoo: OdooClient,
    config: Config,
    db: String,
    _dir: tempfile::TempDir,
}

/// The simulator on loopback, and a configuration with one odoo source of `sale.order`.
async fn world(source_extra: &str) -> World {
    let clock = Arc::new(ManualClock::new(at("2026-11-23T18:00:00Z")));
    let shared: SharedClock = clock.clone();
    let sim = Simulator::new(SimConfig::instant(), shared);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(switchyard_odoo_sim::http::serve(sim.clone(), l));
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("odoo.secret");
    std::fs::write(&secret, "admin\n").unwrap();
    let token = dir.path().join("hint.token");
    std::fs::write(&token, TOKEN).unwrap();
    let text = format!(
        r#"
[[odoo]]
name = "erp"
url = "{url}"
database = "odoopeer"
login = "admin"
secret = "file:{}"
protocol = "jsonrpc"
probe = false

[[sources]]
name = "odoo-orders"
kind = "odoo"
odoo = "erp"
model = "sale.order"
fields = ["name", "state", "client_order_ref", "partner_id"]
page_size = 10
overlap_seconds = 120
keys = {{ sale_order = ".data.name" }}
{source_extra}
[sources.verify]
kind = "path-token"
secrets = ["file:{}"]
"#,
        secret.display(),
        token.display()
    );
    let config = Config::parse(&text, "t.toml", vec![]).unwrap_or_else(|e| panic!("{e}"));
    let odoo = OdooClient::new(OdooConfig::new(&url, "odoopeer", "admin", "admin")).unwrap();
    let db = format!("sqlite://{}", dir.path().join("hub.db").display());
    World {
        clock,
        sim,
        odoo,
        config,
        db,
        _dir: dir,
    }
}

/// A hub node over the world's store, serving HTTP (for the hints).
struct Hub {
    state: AppState,
    base: String,
    cancel: CancellationToken,
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn hub(w: &World) -> Hub {
    hub_as(w, "test-node").await
}

async fn hub_as(w: &World, node: &str) -> Hub {
    let store: SharedStore = switchyard_store::open(&w.db, &StoreOptions::default())
        .await
        .unwrap();
    let sources = Sources::compile(&w.config).unwrap();
    let capture = Capture::from_config(&w.config, &sources, node).unwrap();
    let state = AppState::new(
        store,
        w.clock.clone(),
        Limits {
            max_body_bytes: 1 << 20,
            allowed_origins: vec![],
        },
        node,
    )
    .with_sources(sources)
    .with_capture(capture);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    let cancel = CancellationToken::new();
    tokio::spawn(switchyard_server::serve(
        l,
        state.clone(),
        cancel.clone(),
        std::time::Duration::from_secs(1),
    ));
    Hub {
        state,
        base,
        cancel,
    }
}

impl Hub {
    async fn poll(&self) -> PollReport {
        self.state
            .capture
            .poll(&self.state, "odoo-orders")
            .await
            .unwrap_or_else(|e| panic!("poll: {e}"))
    }

    /// Every stored change as (record id, name, state), in commit order.
    async fn changes(&self) -> Vec<(i64, String, String)> {
        let page = self
            .state
            .store
            .read_log(LogPosition::START, 10_000, &EventFilter::default())
            .await
            .unwrap();
        page.events
            .iter()
            .map(|e| {
                let d = match &e.event.data {
                    Some(switchyard_core::Data::Json(v)) => v.clone(),
                    other => panic!("not JSON: {other:?}"),
                };
                assert_eq!(e.event.ty, "odoo.sale.order.changed");
                (
                    d["id"].as_i64().unwrap(),
                    d["name"].as_str().unwrap_or("").to_string(),
                    d["state"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    async fn settle(&self) {
        for _ in 0..400 {
            if self.state.capture.hints_settled() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("hints did not settle");
    }
}

async fn call(w: &World, model: &str, method: &str, args: Vec<Value>) -> Value {
    w.odoo
        .execute_kw(model, method, args, Map::new(), &CallOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{model}.{method}: {e}"))
}

async fn partner(w: &World) -> i64 {
    call(w, "res.partner", "create", vec![json!({"name": "Acme"})])
        .await
        .as_i64()
        .unwrap()
}

async fn order(w: &World, partner: i64, reference: &str) -> i64 {
    call(
        w,
        "sale.order",
        "create",
        vec![json!({"partner_id": partner, "client_order_ref": reference})],
    )
    .await
    .as_i64()
    .unwrap()
}

fn advance(w: &World, ms: i64) {
    w.clock.advance(Duration::milliseconds(ms));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_commit_and_two_commits_in_one_second_are_each_seen_once_across_restarts() {
    let w = world("").await;
    let p = partner(&w).await;
    let a = hub(&w).await;
    // The first run syncs the (empty) model.
    let r = a.poll().await;
    assert_eq!((r.stored, r.sync.as_deref()), (0, Some("initial")));

    // 04_09-04_12: C is written at 18:05:53 in a transaction that commits late; D is
    // created at 18:05:55 and commits at once.
    w.clock.set(at("2026-11-23T18:05:50Z"));
    let c = order(&w, p, "C").await;
    advance(&w, 3_000);
    let late = w
        .sim
        .write_uncommitted(
            2,
            "sale.order",
            &[c],
            json!({"client_order_ref": "C-late"})
                .as_object()
                .unwrap()
                .clone(),
        )
        .unwrap();
    advance(&w, 2_000);
    let d = order(&w, p, "D").await;
    advance(&w, 1_000);
    let r = a.poll().await;
    assert_eq!(r.stored, 2, "C as first committed, and D: {r:?}");

    // C's late commit keeps write_date 18:05:53, older than D's: the overlap finds it.
    late.commit();
    advance(&w, 10_000);
    let r = a.poll().await;
    assert_eq!(r.stored, 1, "{r:?}");
    let changes = a.changes().await;
    assert_eq!(changes.len(), 3);
    assert_eq!(changes[2].0, c);

    // Two commits to the same record in one second: two states, two events.
    w.clock.set(at("2026-11-23T18:07:00.100Z"));
    call(
        &w,
        "sale.order",
        "write",
        vec![json!([d]), json!({"client_order_ref": "D1"})],
    )
    .await;
    let r = a.poll().await;
    assert_eq!(r.stored, 1, "{r:?}");
    w.clock.set(at("2026-11-23T18:07:00.600Z"));
    call(
        &w,
        "sale.order",
        "write",
        vec![json!([d]), json!({"client_order_ref": "D2"})],
    )
    .await;
    // and another record committed in the same second, after the poll read that second
    let e = order(&w, p, "E").await;
    w.clock.set(at("2026-11-23T18:07:05Z"));
    let r = a.poll().await;
    assert_eq!(r.stored, 2, "D2 and E: {r:?}");
    assert_eq!(a.changes().await.len(), 6);

    // A restart (new process memory, same store): the cursor is where it was; the overlap
    // is read again and nothing is stored twice.
    drop(a);
    let b = hub(&w).await;
    let cursor = b
        .state
        .capture
        .cursor(&b.state, "odoo-orders")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cursor.high_water.as_deref(), Some("2026-11-23 18:07:00"));
    let r = b.poll().await;
    assert_eq!((r.stored, r.sync.as_deref()), (0, None), "{r:?}");
    assert_eq!(r.duplicates, 3, "the overlap was read again: {r:?}");
    let ids: Vec<i64> = b.changes().await.iter().map(|c| c.0).collect();
    assert_eq!(ids, [c, d, c, d, d, e]);
    // every event carries its business key
    let found = b
        .state
        .store
        .read_log(
            LogPosition::START,
            10,
            &EventFilter {
                key: Some("S00002".into()),
                key_name: Some("sale_order".into()),
                ..EventFilter::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(found.events.len(), 3, "D's three states");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_initial_sync_pages_through_one_crowded_second_and_a_gap_is_resynced() {
    let w = world("").await;
    let p = partner(&w).await;
    // 25 orders written in the same instant (one import transaction would do this), then 3
    // more a second later: more rows in one second than a page holds.
    let mut ids = Vec::new();
    for i in 0..25 {
        ids.push(order(&w, p, &format!("batch-{i}")).await);
    }
    advance(&w, 1_000);
    for i in 0..3 {
        ids.push(order(&w, p, &format!("later-{i}")).await);
    }
    let a = hub(&w).await;
    let r = a.poll().await;
    assert_eq!(r.sync.as_deref(), Some("initial"));
    assert_eq!(r.stored, 28, "{r:?}");
    assert!(r.pages >= 4, "{r:?}");
    let mut seen: Vec<i64> = a.changes().await.iter().map(|c| c.0).collect();
    seen.sort_unstable();
    assert_eq!(seen, ids);
    let cursor = a
        .state
        .capture
        .cursor(&a.state, "odoo-orders")
        .await
        .unwrap()
        .unwrap();
    assert!(cursor.sync.is_none());
    assert_eq!(cursor.events, 28);

    // Polls stop for an hour (longer than the overlap) while 15 orders change.
    w.clock.advance(Duration::hours(1));
    for id in &ids[..15] {
        advance(&w, 1_000);
        call(
            &w,
            "sale.order",
            "write",
            vec![json!([id]), json!({"client_order_ref": "changed"})],
        )
        .await;
    }
    let r = a.poll().await;
    assert_eq!(r.sync.as_deref(), Some("gap"), "{r:?}");
    assert_eq!(r.stored, 15, "{r:?}");
    assert_eq!(a.changes().await.len(), 43);
    // and the next poll, soon after, is an ordinary one
    advance(&w, 5_000);
    let r = a.poll().await;
    assert_eq!((r.stored, r.sync.as_deref()), (0, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_now_emits_only_later_changes() {
    let w = world("initial = \"now\"").await;
    let p = partner(&w).await;
    let old = order(&w, p, "old").await;
    advance(&w, 200_000);
    let a = hub(&w).await;
    let r = a.poll().await;
    assert_eq!(r.stored, 0, "{r:?}");
    advance(&w, 1_000);
    let new = order(&w, p, "new").await;
    advance(&w, 1_000);
    let r = a.poll().await;
    assert_eq!(r.stored, 1, "{r:?}");
    assert_eq!(a.changes().await[0].0, new);
    assert_ne!(old, new);
}

fn hook_spec(hub: &Hub, name: &str) -> HookSpec {
    HookSpec {
        name: name.into(),
        model: "sale.order".into(),
        on: vec![On::Create, On::Write],
        fields: vec!["name".into(), "state".into()],
        trigger_fields: vec![],
        url: format!("{}/v1/webhooks/odoo-orders/{TOKEN}", hub.base),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_hints_are_read_back_and_give_one_event_per_change_with_the_poller() {
    let w = world("hint_wait_seconds = 2").await;
    let a = hub(&w).await;
    assert_eq!(a.poll().await.stored, 0);

    // install-webhooks: created once, unchanged the second time
    let spec = hook_spec(&a, "Switchyard: sale.order → odoo-orders");
    let first = install_webhook(&w.odoo, &spec).await.unwrap();
    assert!(matches!(first, Installed::Created { .. }), "{first:?}");
    let again = install_webhook(&w.odoo, &spec).await.unwrap();
    assert!(matches!(again, Installed::Unchanged { .. }), "{again:?}");
    let mut other = spec.clone();
    other.trigger_fields = vec!["state".into()];
    let changed = install_webhook(&w.odoo, &other).await.unwrap();
    assert!(
        matches!(&changed, Installed::Updated { changed, .. } if changed == &["trigger_field_ids"]),
        "{changed:?}"
    );
    assert!(matches!(
        install_webhook(&w.odoo, &other).await.unwrap(),
        Installed::Unchanged { .. }
    ));
    let rules = call(&w, "base.automation", "search_count", vec![json!([])]).await;
    assert_eq!(rules, json!(1));
    // back to any write
    install_webhook(&w.odoo, &spec).await.unwrap();

    // A create: the hint arrives before the commit; the read-back waits for it.
    let p = partner(&w).await;
    let o = order(&w, p, "hinted").await;
    a.settle().await;
    let changes = a.changes().await;
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].0, o);
    // The poller then reads the same committed state: the same event, not a second one.
    advance(&w, 2_000);
    let r = a.poll().await;
    assert_eq!(r.stored, 0, "{r:?}");

    // Confirm: the hint says "sale" before Odoo commits it; the event has the committed state.
    advance(&w, 1_000);
    call(&w, "sale.order", "action_confirm", vec![json!([o])]).await;
    a.settle().await;
    let changes = a.changes().await;
    assert_eq!(changes.len(), 2);
    assert_eq!(changes[1].2, "sale");

    // A phantom: a rule that fails after its webhook rolls the create back. The hint came,
    // the record never commits, nothing is emitted.
    call(
        &w,
        "base.automation",
        "create",
        vec![
            json!({"name": "Rollback", "model_id": 606, "trigger": "on_create_or_write",
            "filter_domain": "[('client_order_ref', '=', 'ROLLBACK')]",
            "action_server_ids": [[0, 0, {"name": "Fail", "state": "code", "model_id": 606,
                "sequence": 20, "code": "raise UserError('failing after the webhook')"}]]}),
        ],
    )
    .await;
    advance(&w, 1_000);
    let failed = w
        .odoo
        .execute_kw(
            "sale.order",
            "create",
            vec![json!({"partner_id": p, "client_order_ref": "ROLLBACK"})],
            Map::new(),
            &CallOptions::default(),
        )
        .await;
    assert!(failed.is_err(), "{failed:?}");
    // and a write that rolls back: the hint names a state that never commits
    let failed = w
        .odoo
        .execute_kw(
            "sale.order",
            "write",
            vec![json!([o]), json!({"client_order_ref": "ROLLBACK"})],
            Map::new(),
            &CallOptions::default(),
        )
        .await;
    assert!(failed.is_err(), "{failed:?}");
    a.settle().await;
    assert_eq!(a.changes().await.len(), 2, "phantom hints emit nothing");
    advance(&w, 2_000);
    assert_eq!(a.poll().await.stored, 0);

    // A change the webhook missed (a hint lost on the way) is the poller's; a hint that
    // comes after the poller stored the change is a duplicate.
    advance(&w, 1_000);
    let lost = w
        .sim
        .write_uncommitted(
            2,
            "sale.order",
            &[o],
            json!({"client_order_ref": "quiet"})
                .as_object()
                .unwrap()
                .clone(),
        )
        .unwrap();
    lost.commit();
    advance(&w, 1_000);
    assert_eq!(a.poll().await.stored, 1);
    let body = call(
        &w,
        "sale.order",
        "read",
        vec![json!([o]), json!(["name", "state", "write_date"])],
    )
    .await;
    let mut hint = body[0].as_object().unwrap().clone();
    hint.insert("_id".into(), json!(o));
    hint.insert("_model".into(), json!("sale.order"));
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/webhooks/odoo-orders/{TOKEN}", a.base))
        .json(&hint)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    a.settle().await;
    assert_eq!(a.changes().await.len(), 3);

    // A wrong token stores nothing and says why; a notification for another model is refused.
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/webhooks/odoo-orders/wrong", a.base))
        .json(&hint)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    hint.insert("_model".into(), json!("res.partner"));
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/webhooks/odoo-orders/{TOKEN}", a.base))
        .json(&hint)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    // POST /v1/events may not claim the source's ids
    let source = a.state.sources.odoo("odoo-orders").unwrap();
    assert!(
        a.state
            .sources
            .webhook_with_source(match &source.pattern {
                switchyard_core::sources::SourcePattern::Exact(s) => s,
                switchyard_core::sources::SourcePattern::Prefix(s) => s,
            })
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_polls_a_source_at_a_time() {
    let w = world("interval_seconds = 10").await;
    let p = partner(&w).await;
    order(&w, p, "x").await;
    let a = hub(&w).await;
    let b = hub_as(&w, "node-b").await;
    assert_eq!(a.poll().await.stored, 1);
    let r = b.poll().await;
    assert!(!r.ran, "A holds poll:odoo-orders: {r:?}");
    // A stops (as if it died): its lease lapses after three intervals (at least 60 s) and B
    // continues from A's cursor.
    w.clock.advance(Duration::seconds(61));
    order(&w, p, "y").await;
    advance(&w, 1_000);
    let r = b.poll().await;
    assert!(r.ran);
    assert_eq!(r.stored, 1, "only the new order: {r:?}");
    let cursor = b
        .state
        .capture
        .cursor(&b.state, "odoo-orders")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cursor.node, "node-b");
    assert_eq!(cursor.events, 2);
}
