//! Webhook timing, as recorded from Odoo 18 (transcripts 06_04/06_06, 06_20-06_23, 07_23):
//! the notification is sent from inside the transaction, before it commits. A receiver
//! that reads the record back while handling the webhook sees the state *before* the
//! call; a call that fails after the webhook still delivered it (a phantom event); a call
//! whose commit keeps conflicting sends it once per try (5), then fails.

use axum::extract::State;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use switchyard_core::clock::SystemClock;
use switchyard_odoo_sim::faults::Faults;
use switchyard_odoo_sim::{SimConfig, Simulator};

const PASSWORD: &str = "timing-test";

/// One webhook as the receiver saw it: the payload and what a separate JSON-RPC
/// `search_read` of its `_id` returned while the webhook was being handled.
#[derive(Debug, Clone)]
struct Seen {
    body: Value,
    committed: Value,
}

#[derive(Clone)]
struct Receiver {
    odoo: String,
    http: reqwest::Client,
    seen: Arc<Mutex<Vec<Seen>>>,
}

async fn call(http: &reqwest::Client, odoo: &str, model: &str, method: &str, args: Value) -> Value {
    let body = json!({
        "jsonrpc": "2.0", "method": "call", "id": 1,
        "params": {"service": "object", "method": "execute_kw",
                   "args": ["odoopeer", 2, PASSWORD, model, method, args]},
    });
    http.post(format!("{odoo}/jsonrpc"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn hook(State(r): State<Receiver>, body: String) -> &'static str {
    let body: Value = serde_json::from_str(&body).unwrap();
    let id = body["_id"].clone();
    let committed = call(
        &r.http,
        &r.odoo,
        "sale.order",
        "search_read",
        json!([[["id", "=", id]], ["name", "state"]]),
    )
    .await["result"]
        .clone();
    r.seen.lock().unwrap().push(Seen { body, committed });
    "{\"ok\": true}"
}

async fn start() -> (String, reqwest::Client, Arc<Mutex<Vec<Seen>>>, Simulator) {
    let sim = Simulator::new(
        SimConfig {
            admin_password: PASSWORD.into(),
            ..SimConfig::instant()
        },
        Arc::new(SystemClock),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let odoo = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(switchyard_odoo_sim::http::serve(sim.clone(), l));
    let http = reqwest::Client::new();
    let seen = Arc::new(Mutex::new(vec![]));
    let receiver = Receiver {
        odoo: odoo.clone(),
        http: http.clone(),
        seen: seen.clone(),
    };
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(hook))
        .with_state(receiver);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!("http://{}/hook", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    // On sale.order (ir.model 606), on creation and state changes (field 7986), send
    // name and state (7983, 7986); a second rule fails after its webhook for orders
    // whose reference is ROLLBACK.
    let rules = call(
        &http,
        &odoo,
        "base.automation",
        "create",
        json!([[
            {"name": "Orders", "model_id": 606, "trigger": "on_create_or_write",
             "trigger_field_ids": [[6, 0, [7986]]],
             "action_server_ids": [[0, 0, {"name": "Notify", "state": "webhook", "model_id": 606,
                 "webhook_url": hook_url, "webhook_field_ids": [[6, 0, [7983, 7986]]]}]]},
            {"name": "Rollback", "model_id": 606, "trigger": "on_create_or_write",
             "filter_domain": "[('client_order_ref', '=', 'ROLLBACK')]",
             "action_server_ids": [
                 [0, 0, {"name": "Fail", "state": "code", "model_id": 606, "sequence": 2,
                         "code": "raise UserError('failing after the webhook')"}],
                 [0, 0, {"name": "Hook first", "state": "webhook", "model_id": 606, "sequence": 1,
                         "webhook_url": hook_url, "webhook_field_ids": [[6, 0, [7983]]]}]]},
        ]]),
    )
    .await;
    assert!(rules["result"].is_array(), "{rules}");
    (odoo, http, seen, sim)
}

fn take(seen: &Arc<Mutex<Vec<Seen>>>) -> Vec<Seen> {
    std::mem::take(&mut *seen.lock().unwrap())
}

async fn order_state(http: &reqwest::Client, odoo: &str, id: &Value) -> Value {
    call(
        http,
        odoo,
        "sale.order",
        "search_read",
        json!([[["id", "=", id]], ["state"]]),
    )
    .await["result"]
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_reading_back_sees_the_state_before_the_call() {
    let (odoo, http, seen, _sim) = start().await;
    let partner = call(
        &http,
        &odoo,
        "res.partner",
        "create",
        json!([{"name": "Acme"}]),
    )
    .await;
    let partner = partner["result"].clone();

    // Create: the webhook arrives before the order is committed.
    let created = call(
        &http,
        &odoo,
        "sale.order",
        "create",
        json!([{"partner_id": partner}]),
    )
    .await;
    let id = created["result"].clone();
    assert!(id.is_i64(), "{created}");
    let got = take(&seen);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].body["_id"], id);
    assert_eq!(got[0].body["state"], "draft");
    assert_eq!(got[0].body["_action"], "Send Webhook Notification(#518)");
    assert_eq!(got[0].committed, json!([]), "not committed at receipt");
    assert_eq!(order_state(&http, &odoo, &id).await[0]["state"], "draft");

    // Confirm: the payload says "sale", the database still says "draft" at receipt.
    let confirmed = call(&http, &odoo, "sale.order", "action_confirm", json!([[id]])).await;
    assert_eq!(confirmed["result"], json!(true), "{confirmed}");
    let got = take(&seen);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].body["state"], "sale");
    assert_eq!(
        got[0].committed[0]["state"], "draft",
        "old state at receipt"
    );
    assert_eq!(order_state(&http, &odoo, &id).await[0]["state"], "sale");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_fails_after_its_webhook_still_delivered_it() {
    let (odoo, http, seen, _sim) = start().await;
    let partner = call(
        &http,
        &odoo,
        "res.partner",
        "create",
        json!([{"name": "Acme"}]),
    )
    .await;
    let failed = call(
        &http,
        &odoo,
        "sale.order",
        "create",
        json!([{"partner_id": partner["result"], "client_order_ref": "ROLLBACK"}]),
    )
    .await;
    assert_eq!(
        failed["error"]["data"]["name"], "odoo.exceptions.UserError",
        "{failed}"
    );
    assert_eq!(
        failed["error"]["data"]["message"],
        "failing after the webhook"
    );
    // Both rules' webhooks went out; the failing rule's webhook action (#520, created
    // after its code action) ran first, by sequence.
    let got = take(&seen);
    assert_eq!(got.len(), 2, "{got:?}");
    let id = got[0].body["_id"].clone();
    assert!(got.iter().all(|s| s.body["_id"] == id));
    assert_eq!(got[1].body["_action"], "Send Webhook Notification(#520)");
    assert!(got.iter().all(|s| s.committed == json!([])));
    // The announced record never existed.
    assert_eq!(order_state(&http, &odoo, &id).await, json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflicting_commit_is_retried_and_notifies_once_per_try() {
    let (odoo, http, seen, sim) = start().await;
    let partner = call(
        &http,
        &odoo,
        "res.partner",
        "create",
        json!([{"name": "Acme"}]),
    )
    .await;
    let created = call(
        &http,
        &odoo,
        "sale.order",
        "create",
        json!([{"partner_id": partner["result"]}]),
    )
    .await;
    let id = created["result"].clone();
    take(&seen);
    sim.set_faults(Faults {
        serialization_failures: 1,
        ..Faults::default()
    });
    let failed = call(&http, &odoo, "sale.order", "action_confirm", json!([[id]])).await;
    assert_eq!(
        failed["error"]["data"]["name"], "psycopg2.errors.SerializationFailure",
        "{failed}"
    );
    let got = take(&seen);
    assert_eq!(got.len(), 5, "one webhook per try: {got:?}");
    assert!(got.iter().all(|s| s.body["state"] == "sale"));
    assert!(got.iter().all(|s| s.committed[0]["state"] == "draft"));
    assert_eq!(order_state(&http, &odoo, &id).await[0]["state"], "draft");
    // Without the fault the next call goes through on its first try.
    let ok = call(&http, &odoo, "sale.order", "action_confirm", json!([[id]])).await;
    assert_eq!(ok["result"], json!(true), "{ok}");
    assert_eq!(take(&seen).len(), 1);
}
