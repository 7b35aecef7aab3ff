//! The Odoo destination through the real engine, against the Odoo simulator over loopback
//! HTTP: exactly-once effects when Odoo commits and the answer is lost, retries that resume
//! at the right step, the many2one and line-command traps, and writes that would change
//! nothing skipped. Every check counts what the simulator's state holds afterwards.
//!
//! Lost answers come from a small proxy between the hub and the simulator: it forwards a
//! call, lets the simulator commit it, and then drops the connection instead of answering
//! (what the simulator's own `lose_responses` does, aimed here at one method).

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use chrono::Utc;
use serde_json::{Map, Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchyard_core::config::{Config, DeliveryConfig};
use switchyard_core::flows::Flows;
use switchyard_core::{CloudEvent, SystemClock};
use switchyard_deliver::Engine;
use switchyard_odoo::{CallOptions, OdooClient, OdooConfig, Protocol};
use switchyard_odoo_sim::{SimConfig, Simulator};
use switchyard_store::{DeliveryRecord, DeliveryState, NewEvent, SharedStore, StoreOptions};

/// What the proxy does to the calls whose body contains `needle`: after `skip` of them
/// pass, the next `count` lose their answer (`refuse = false`, forwarded and committed) or
/// are refused with HTTP 503 before reaching Odoo (`refuse = true`).
#[derive(Clone)]
struct Rule {
    needle: String,
    skip: u32,
    count: u32,
    refuse: bool,
}

#[derive(Clone)]
struct Proxy {
    upstream: String,
    http: reqwest::Client,
    rules: Arc<Mutex<Vec<Rule>>>,
}

impl Proxy {
    fn lose(&self, needle: &str, skip: u32, count: u32) {
        self.rules.lock().unwrap().push(Rule {
            needle: needle.into(),
            skip,
            count,
            refuse: false,
        });
    }

    fn refuse(&self, needle: &str, count: u32) {
        self.rules.lock().unwrap().push(Rule {
            needle: needle.into(),
            skip: 0,
            count,
            refuse: true,
        });
    }

    /// The rule that applies to this body, spent by one.
    fn take(&self, body: &str) -> Option<bool> {
        let mut rules = self.rules.lock().unwrap();
        for r in rules.iter_mut().filter(|r| body.contains(&r.needle)) {
            if r.skip > 0 {
                r.skip -= 1;
                continue;
            }
            if r.count > 0 {
                r.count -= 1;
                return Some(r.refuse);
            }
        }
        None
    }
}

async fn forward(State(p): State<Proxy>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let text = String::from_utf8_lossy(&body).into_owned();
    let rule = p.take(&text);
    if rule == Some(true) {
        return Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .body(Body::from("busy"))
            .unwrap();
    }
    let mut req = p.http.post(format!("{}{}", p.upstream, uri.path()));
    if let Some(ct) = headers.get("content-type") {
        req = req.header("content-type", ct.clone());
    }
    let answer = req.body(body).send().await.unwrap();
    let status = answer.status().as_u16();
    let content_type = answer.headers().get("content-type").cloned();
    let bytes = answer.bytes().await.unwrap();
    if rule == Some(false) {
        // Committed; the connection drops before the answer arrives.
        let stream = futures_util_stream();
        return Response::builder()
            .status(StatusCode::OK)
            .header("content-length", "4096")
            .body(Body::from_stream(stream))
            .unwrap();
    }
    let mut r = Response::builder().status(status);
    if let Some(ct) = content_type {
        r = r.header("content-type", ct);
    }
    r.body(Body::from(bytes)).unwrap()
}

fn futures_util_stream()
-> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    futures::stream::iter(vec![Err(std::io::Error::other("answer lost"))])
}

struct Hub {
    sim: Simulator,
    proxy: Proxy,
    store: SharedStore,
    engine: Engine,
    odoo: OdooClient,
    _dir: tempfile::TempDir,
}

const FLOWS: &str = r#"
[[destinations]]
name = "erp"
type = "odoo"
odoo = "sim"

[[flows]]
name = "customers"
destination = "erp"
match = { type = ["customer.*"] }
retry = { initial_ms = 20, max_backoff_seconds = 1 }
[flows.odoo]
model = "res.partner"
operation = "upsert"
external_id = '"shop.customer_" + .id'
values = "del(.id)"

[[destinations]]
name = "bulk"
type = "odoo"
odoo = "sim"
concurrency = 1

[[flows]]
name = "bulk-customers"
destination = "bulk"
match = { type = ["bulk.customer"] }
retry = { initial_ms = 20, max_backoff_seconds = 1 }
[flows.odoo]
model = "res.partner"
operation = "upsert"
external_id = '"shop.bulk_" + .id'
values = "del(.id)"

[[flows]]
name = "bulk-contacts"
destination = "bulk"
match = { type = ["bulk.contact"] }
retry = { initial_ms = 20, max_backoff_seconds = 1 }
[flows.odoo]
model = "res.partner"
operation = "upsert"
key = ["ref"]

[[flows]]
name = "contacts"
destination = "erp"
match = { type = ["contact.*"] }
retry = { initial_ms = 20, max_backoff_seconds = 1 }
[flows.odoo]
model = "res.partner"
operation = "upsert"
key = ["ref"]

[[flows]]
name = "order-lines"
destination = "erp"
match = { type = ["order.lines"] }
retry = { initial_ms = 20, max_backoff_seconds = 1 }
[flows.odoo]
model = "sale.order"
operation = "write"
key = ["name"]

[[flows]]
name = "ship"
destination = "erp"
match = { type = ["order.ship"] }
retry = { initial_ms = 20, max_backoff_seconds = 1 }
[flows.odoo]
operation = "call"
[[flows.odoo.steps]]
name = "order"
model = "sale.order"
find = { domain = '[["name", "=", .order]]' }
[[flows.odoo.steps]]
name = "confirm"
model = "sale.order"
method = "action_confirm"
ids = "$steps.order.id"
done_when = { domain = '[["id", "=", $steps.order.id], ["state", "in", ["sale", "done"]]]', fields = ["picking_ids"] }
[[flows.odoo.steps]]
name = "picking"
model = "stock.picking"
find = { domain = '[["id", "in", $steps.confirm.picking_ids], ["backorder_id", "=", false]]' }
[[flows.odoo.steps]]
name = "validate"
model = "stock.picking"
method = "button_validate"
ids = "$steps.picking.id"
wizards = { "stock.backorder.confirmation" = "process", "confirm.stock.sms" = "dont_send_sms" }
done_when = { domain = '[["id", "=", $steps.picking.id], ["state", "=", "done"]]' }
"#;

async fn hub() -> Hub {
    let sim = Simulator::new(SimConfig::instant(), Arc::new(SystemClock));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(switchyard_odoo_sim::http::serve(sim.clone(), listener));
    let proxy = Proxy {
        upstream: upstream.clone(),
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        rules: Arc::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .fallback(axum::routing::any(forward))
        .with_state(proxy.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("odoo-password");
    std::fs::write(&secret, "admin").unwrap();
    let text = format!(
        "[[odoo]]\nname = \"sim\"\nurl = \"{base}\"\ndatabase = \"odoopeer\"\nlogin = \"admin\"\nsecret = \"file:{}\"\nprotocol = \"jsonrpc\"\n{FLOWS}",
        secret.display()
    );
    let config = Config::parse(&text, "test.toml", Vec::new()).expect("configuration");
    let flows = Arc::new(Flows::compile(&config).expect("flows"));
    let store = switchyard_store::open(
        &format!("sqlite://{}", dir.path().join("hub.db").display()),
        &StoreOptions::default(),
    )
    .await
    .unwrap();
    let engine = Engine::new(
        store.clone(),
        Arc::new(SystemClock),
        flows,
        "node-1".into(),
        DeliveryConfig {
            poll_ms: 20,
            ..DeliveryConfig::default()
        },
    )
    .unwrap();
    engine.start().await;
    let mut c = OdooConfig::new(&upstream, "odoopeer", "admin", "admin");
    c.protocol = Protocol::JsonRpc;
    let odoo = OdooClient::new(c).unwrap();
    Hub {
        sim,
        proxy,
        store,
        engine,
        odoo,
        _dir: dir,
    }
}

impl Hub {
    /// Ingests one event as `POST /v1/events` would (routed in its transaction, handed
    /// off after the commit); the delivery's id.
    async fn ingest(&self, ty: &str, id: &str, data: Value) -> i64 {
        let event = CloudEvent::from_json(json!({
            "specversion": "1.0", "id": id, "source": "urn:shop", "type": ty, "data": data
        }))
        .unwrap()
        .event;
        let routing = self.engine.route(&event);
        let now = Utc::now();
        let out = self
            .store
            .append_routed(vec![NewEvent {
                event: event.clone(),
                received_at: now,
                keys: vec![],
                deliveries: routing.deliveries.clone(),
            }])
            .await
            .unwrap();
        let (appended, created) = out.into_iter().next().unwrap();
        let delivery = created[0].id;
        self.engine
            .handoff(&event, appended.seq(), now, routing, created);
        delivery
    }

    /// The delivery once it is no longer pending.
    async fn settled(&self, id: i64) -> DeliveryRecord {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let d = self.store.get_delivery(id).await.unwrap().unwrap();
            if !d.state.is_pending() {
                return d;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "delivery {id} still {:?}: {:?}",
                d.state,
                d.last_error
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn call(&self, model: &str, method: &str, args: Value, kwargs: Value) -> Value {
        self.odoo
            .execute_kw(
                model,
                method,
                args.as_array().unwrap().clone(),
                kwargs.as_object().cloned().unwrap_or_default(),
                &CallOptions::default(),
            )
            .await
            .unwrap()
    }

    /// Rows of `model` (committed state) for which `pick` holds.
    fn rows(&self, model: &str, pick: impl Fn(&Map<String, Value>) -> bool) -> Vec<Value> {
        self.sim.with_state(|_, st| {
            st.tables
                .table(model)
                .map(|t| {
                    t.rows
                        .iter()
                        .map(|(id, r)| {
                            let mut m: Map<String, Value> =
                                r.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                            m.insert("id".into(), json!(id));
                            m
                        })
                        .filter(|m| pick(m))
                        .map(Value::Object)
                        .collect()
                })
                .unwrap_or_default()
        })
    }

    fn calls(&self, model: &str, method: &str) -> usize {
        self.sim
            .calls()
            .iter()
            .filter(|c| c.model == model && c.method == method)
            .count()
    }

    async fn attempts(&self, id: i64) -> Vec<(String, Option<String>, Option<String>)> {
        self.store
            .list_attempts(id)
            .await
            .unwrap()
            .into_iter()
            .map(|a| (a.outcome, a.response_excerpt, a.error))
            .collect()
    }
}

fn named(name: &'static str) -> impl Fn(&Map<String, Value>) -> bool {
    move |r| r.get("name") == Some(&json!(name))
}

/// A field of a simulator row (`null` when the row never had it).
fn at<'a>(r: &'a Map<String, Value>, k: &str) -> &'a Value {
    r.get(k).unwrap_or(&Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upsert_by_external_id_lands_once_when_odoo_commits_and_the_answer_is_lost() {
    let h = hub().await;
    // The load commits and its answer is lost: the same attempt reads back and finds it.
    h.proxy.lose("\"res.partner\",\"load\"", 0, 1);
    let d = h
        .ingest(
            "customer.created",
            "c-1",
            json!({"id": "1", "name": "Lost Answer Ltd", "email": "a@example.com"}),
        )
        .await;
    let d = h.settled(d).await;
    assert_eq!(d.state, DeliveryState::Delivered, "{:?}", d.last_error);
    let attempts = h.attempts(d.id).await;
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    let note = attempts[0].1.clone().unwrap();
    assert!(note.contains("first answer was lost"), "{note}");
    assert_eq!(h.rows("res.partner", named("Lost Answer Ltd")).len(), 1);
    let xids = h.rows("ir.model.data", |r| {
        r.get("module") == Some(&json!("shop")) && r.get("name") == Some(&json!("customer_1"))
    });
    assert_eq!(xids.len(), 1, "record and external id, once");

    // The answer is lost and so is the read that follows: the attempt fails, the engine
    // retries, and the retry finds the work done (one load in all).
    h.proxy.lose("\"res.partner\",\"load\"", 0, 1);
    h.proxy.lose("\"ir.model.data\",\"search_read\"", 1, 1);
    let loads_before = h.calls("res.partner", "load");
    let d = h
        .ingest(
            "customer.created",
            "c-2",
            json!({"id": "2", "name": "Twice Lost SA", "email": "b@example.com"}),
        )
        .await;
    let d = h.settled(d).await;
    assert_eq!(d.state, DeliveryState::Delivered, "{:?}", d.last_error);
    let attempts = h.attempts(d.id).await;
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!(attempts[0].0, "transient");
    assert!(
        attempts[1].1.as_deref().unwrap().starts_with("no change"),
        "{attempts:?}"
    );
    assert_eq!(h.calls("res.partner", "load") - loads_before, 1);
    assert_eq!(h.rows("res.partner", named("Twice Lost SA")).len(), 1);

    // The same customer again: nothing differs, nothing is written (write_date unchanged).
    let before = h.rows("res.partner", named("Lost Answer Ltd"))[0].clone();
    let writes = h.calls("res.partner", "write");
    let d = h
        .ingest(
            "customer.updated",
            "c-1b",
            json!({"id": "1", "name": "Lost Answer Ltd", "email": "a@example.com"}),
        )
        .await;
    let d = h.settled(d).await;
    assert_eq!(d.state, DeliveryState::Delivered);
    let note = h.attempts(d.id).await[0].1.clone().unwrap();
    assert!(note.starts_with("no change"), "{note}");
    assert_eq!(h.calls("res.partner", "write"), writes);
    let after = h.rows("res.partner", named("Lost Answer Ltd"))[0].clone();
    assert_eq!(before["write_date"], after["write_date"]);

    // A change writes only what differs.
    let d = h
        .ingest(
            "customer.updated",
            "c-1c",
            json!({"id": "1", "name": "Lost Answer Ltd", "email": "new@example.com"}),
        )
        .await;
    let d = h.settled(d).await;
    let note = h.attempts(d.id).await[0].1.clone().unwrap();
    assert!(note.ends_with("wrote email"), "{note}");
    let after = h.rows("res.partner", named("Lost Answer Ltd"))[0].clone();
    assert_eq!(after["email"], "new@example.com");
    assert_eq!(h.rows("res.partner", named("Lost Answer Ltd")).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upsert_by_key_creates_once_and_never_clears_a_many2one() {
    let h = hub().await;
    let parent = h
        .call(
            "res.partner",
            "create",
            json!([{"name": "Parent Co", "is_company": true}]),
            json!({}),
        )
        .await
        .as_i64()
        .unwrap();
    // The create commits and its answer is lost: read back by key, created once.
    h.proxy.lose("\"res.partner\",\"create\"", 0, 1);
    let d = h
        .ingest(
            "contact.created",
            "k-1",
            json!({"ref": "K-1", "name": "Keyed Contact", "parent_id": parent}),
        )
        .await;
    let d = h.settled(d).await;
    assert_eq!(d.state, DeliveryState::Delivered, "{:?}", d.last_error);
    assert_eq!(
        h.rows("res.partner", |r| r.get("ref") == Some(&json!("K-1")))
            .len(),
        1
    );

    // The read shape [id, "name"] and a numeric string are the id: nothing to change.
    for (i, shape) in [json!([parent, "Parent Co"]), json!(parent.to_string())]
        .into_iter()
        .enumerate()
    {
        let d = h
            .ingest(
                "contact.updated",
                &format!("k-shape-{i}"),
                json!({"ref": "K-1", "name": "Keyed Contact", "parent_id": shape}),
            )
            .await;
        let d = h.settled(d).await;
        assert_eq!(d.state, DeliveryState::Delivered, "{:?}", d.last_error);
        let note = h.attempts(d.id).await[0].1.clone().unwrap();
        assert!(note.starts_with("no change"), "{shape}: {note}");
    }
    let row = &h.rows("res.partner", |r| r.get("ref") == Some(&json!("K-1")))[0];
    assert_eq!(row["parent_id"], json!(parent), "the parent is still set");

    // 0 would clear the field in Odoo: dead-lettered with the reason, nothing written.
    let d = h
        .ingest(
            "contact.updated",
            "k-zero",
            json!({"ref": "K-1", "name": "Keyed Contact", "parent_id": 0}),
        )
        .await;
    let d = h.settled(d).await;
    assert_eq!(d.state, DeliveryState::Dead);
    let reason = d.last_error.unwrap();
    assert!(
        reason.contains("res.partner.parent_id is a many2one: 0 would clear the field"),
        "{reason}"
    );
    let row = &h.rows("res.partner", |r| r.get("ref") == Some(&json!("K-1")))[0];
    assert_eq!(row["parent_id"], json!(parent));
}

/// A draft order with one line; (order id, its line id).
async fn draft_order(h: &Hub, partner: i64, product: i64, qty: f64) -> (i64, String, i64) {
    let so = h
        .call(
            "sale.order",
            "create",
            json!([{"partner_id": partner, "order_line": [[0, 0, {"product_id": product, "product_uom_qty": qty, "price_unit": 100.0}]]}]),
            json!({}),
        )
        .await
        .as_i64()
        .unwrap();
    let row = h
        .call(
            "sale.order",
            "read",
            json!([[so]]),
            json!({"fields": ["name", "order_line"]}),
        )
        .await;
    let name = row[0]["name"].as_str().unwrap().to_owned();
    let line = row[0]["order_line"][0].as_i64().unwrap();
    (so, name, line)
}

async fn product_in_stock(h: &Hub, qty: f64) -> i64 {
    let product = h
        .call(
            "product.product",
            "create",
            json!([{"name": "Widget", "type": "consu", "is_storable": true, "list_price": 100.0}]),
            json!({}),
        )
        .await
        .as_i64()
        .unwrap();
    let quant = h
        .call(
            "stock.quant",
            "create",
            json!([{"product_id": product, "location_id": 8, "inventory_quantity": qty}]),
            json!({"context": {"inventory_mode": true}}),
        )
        .await
        .as_i64()
        .unwrap();
    h.call(
        "stock.quant",
        "action_apply_inventory",
        json!([[quant]]),
        json!({}),
    )
    .await;
    product
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_commands_only_for_lines_of_the_same_record() {
    let h = hub().await;
    let partner = h
        .call(
            "res.partner",
            "create",
            json!([{"name": "Buyer"}]),
            json!({}),
        )
        .await
        .as_i64()
        .unwrap();
    let product = product_in_stock(&h, 10.0).await;
    let (_, name_a, line_a) = draft_order(&h, partner, product, 1.0).await;
    let (_, _, line_b) = draft_order(&h, partner, product, 2.0).await;

    // Order A's payload names order B's line: Odoo would update B's line. Refused.
    let d = h
        .ingest(
            "order.lines",
            "l-1",
            json!({"name": name_a, "order_line": [[1, line_b, {"price_unit": 1.0}]]}),
        )
        .await;
    let d = h.settled(d).await;
    assert_eq!(d.state, DeliveryState::Dead);
    assert!(
        d.last_error.as_deref().unwrap().contains(&format!(
            "names line {line_b}, which is not a line of sale.order"
        )),
        "{:?}",
        d.last_error
    );
    let b = &h.rows("sale.order.line", |r| at(r, "id") == &json!(line_b))[0];
    assert_eq!(
        b["price_unit"].as_f64(),
        Some(100.0),
        "order B's line untouched"
    );

    // Its own line: written. Then the same again: nothing to write.
    let payload = json!({"name": name_a, "order_line": [[1, line_a, {"price_unit": 90.0}]]});
    let d = h.ingest("order.lines", "l-2", payload.clone()).await;
    let d = h.settled(d).await;
    assert_eq!(d.state, DeliveryState::Delivered, "{:?}", d.last_error);
    let a = &h.rows("sale.order.line", |r| at(r, "id") == &json!(line_a))[0];
    assert_eq!(a["price_unit"].as_f64(), Some(90.0));
    // Linking a line that is already on the order, or re-sending lines to create, changes
    // nothing on an existing record.
    let d = h
        .ingest(
            "order.lines",
            "l-3",
            json!({"name": name_a, "order_line": [[4, line_a], [0, 0, {"product_id": product}]]}),
        )
        .await;
    let d = h.settled(d).await;
    let note = h.attempts(d.id).await[0].1.clone().unwrap();
    assert!(note.starts_with("no change"), "{note}");
    let order_a = h.rows("sale.order", |o| at(o, "name") == &json!(name_a))[0]["id"].clone();
    assert_eq!(
        h.rows("sale.order.line", |r| at(r, "order_id") == &order_a)
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirm_and_validate_through_the_wizards_exactly_once() {
    let h = hub().await;
    let partner = h
        .call(
            "res.partner",
            "create",
            json!([{"name": "Phone Customer", "phone": "+33 1 23 45 67 89"}]),
            json!({}),
        )
        .await
        .as_i64()
        .unwrap();
    // 3 in stock for an order of 5: validation asks about a backorder, then about SMS.
    let product = product_in_stock(&h, 3.0).await;
    let (so, name, _) = draft_order(&h, partner, product, 5.0).await;

    // action_confirm commits and its answer is lost: its done_when read proves it ran.
    h.proxy.lose("\"sale.order\",\"action_confirm\"", 0, 1);
    // The first validation is refused (Odoo busy): the attempt fails after two steps and
    // the retry resumes at the picking, without confirming again.
    h.proxy.refuse("\"stock.picking\",\"button_validate\"", 1);
    // The SMS wizard's answer (the call that validates the picking and creates the
    // backorder) is lost after the commit.
    h.proxy
        .lose("\"confirm.stock.sms\",\"dont_send_sms\"", 0, 1);

    let d = h.ingest("order.ship", "s-1", json!({"order": name})).await;
    let d = h.settled(d).await;
    assert_eq!(d.state, DeliveryState::Delivered, "{:?}", d.last_error);
    let attempts = h.attempts(d.id).await;
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!(attempts[0].0, "transient", "{attempts:?}");
    let note = attempts[1].1.clone().unwrap();
    assert!(note.starts_with("resumed at step 4"), "{note}");
    assert!(
        note.contains("validate: done (answer lost, read back)"),
        "{note}"
    );
    assert_eq!(d.cursor.as_ref().unwrap()["step"], 4);

    // Exactly once: one confirmation, one validation of the first picking, one backorder.
    assert_eq!(h.calls("sale.order", "action_confirm"), 1);
    assert_eq!(h.calls("stock.backorder.confirmation", "process"), 1);
    assert_eq!(h.calls("confirm.stock.sms", "dont_send_sms"), 1);
    let order = &h.rows("sale.order", |r| at(r, "id") == &json!(so))[0];
    assert_eq!(order["state"], "sale");
    let pickings = h.rows("stock.picking", |r| at(r, "sale_id") == &json!(so));
    assert_eq!(
        pickings.len(),
        2,
        "the picking and one backorder: {pickings:?}"
    );
    let done: Vec<&Value> = pickings.iter().filter(|p| p["state"] == "done").collect();
    assert_eq!(done.len(), 1);
    let backorders: Vec<&Value> = pickings
        .iter()
        .filter(|p| p["backorder_id"] == done[0]["id"])
        .collect();
    assert_eq!(backorders.len(), 1);

    // The same event again (another id): every step proves itself done; nothing runs.
    let d = h.ingest("order.ship", "s-2", json!({"order": name})).await;
    let d = h.settled(d).await;
    assert_eq!(d.state, DeliveryState::Delivered, "{:?}", d.last_error);
    let note = h.attempts(d.id).await[0].1.clone().unwrap();
    assert!(
        note.contains("confirm: already done") && note.contains("validate: already done"),
        "{note}"
    );
    assert_eq!(h.calls("stock.picking", "button_validate"), 1);
    assert_eq!(
        h.rows("stock.picking", |r| at(r, "sale_id") == &json!(so))
            .len(),
        2
    );
}

/// Sizes of the `load` or `create` calls on `res.partner` the simulator served.
fn batch_sizes(h: &Hub, method: &str) -> Vec<usize> {
    h.sim
        .calls()
        .iter()
        .filter(|c| c.model == "res.partner" && c.method == method)
        .map(|c| c.records)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_deliveries_share_a_load_and_only_bad_rows_are_dead_lettered() {
    let h = hub().await;
    // Every call takes 40 ms: what arrives meanwhile waits for the next call.
    h.sim.set_faults(switchyard_odoo_sim::faults::Faults {
        latency_ms: 40,
        ..Default::default()
    });
    let mut ids = Vec::new();
    for i in 0..40 {
        let data = match i {
            7 => json!({"id": "7", "name": "Bulk 7", "type": "bogus"}),
            13 => json!({"id": "13", "name": "", "type": "contact"}),
            // a second update of customer 5 while the first may still wait
            39 => json!({"id": "5", "name": "Bulk 5 (later)", "type": "invoice"}),
            _ => json!({"id": i.to_string(), "name": format!("Bulk {i}"), "type": "contact"}),
        };
        ids.push(h.ingest("bulk.customer", &format!("b-{i}"), data).await);
    }
    let mut settled = Vec::new();
    for id in &ids {
        settled.push(h.settled(*id).await);
    }
    for (i, d) in settled.iter().enumerate() {
        match i {
            7 | 13 => {
                assert_eq!(d.state, DeliveryState::Dead, "delivery {i}");
                let attempts = h.attempts(d.id).await;
                assert_eq!(attempts.len(), 1, "dead-lettered at once: {attempts:?}");
                let error = attempts[0].2.clone().unwrap();
                // each with Odoo's message for its own row, not the other's
                let (own, other) = if i == 7 {
                    ("not found in selection field", "require a name")
                } else {
                    ("require a name", "not found in selection field")
                };
                assert!(error.contains(own), "delivery {i}: {error}");
                assert!(!error.contains(other), "delivery {i}: {error}");
            }
            _ => assert_eq!(
                d.state,
                DeliveryState::Delivered,
                "delivery {i}: {:?}",
                d.last_error
            ),
        }
    }
    let bulk = h.rows("res.partner", |r| {
        r.get("name")
            .and_then(Value::as_str)
            .is_some_and(|n| n.starts_with("Bulk "))
    });
    assert_eq!(
        bulk.len(),
        37,
        "38 customers less the two bad ones, each once"
    );
    let five = h.rows("res.partner", |r| {
        r.get("name") == Some(&json!("Bulk 5 (later)"))
    });
    assert_eq!(five.len(), 1, "the later update of customer 5 applied last");
    assert_eq!(five[0]["type"], "invoice");
    assert!(h.rows("res.partner", named("Bulk 5")).is_empty());
    let xids = h.rows("ir.model.data", |r| {
        r.get("name")
            .and_then(Value::as_str)
            .is_some_and(|n| n.starts_with("bulk_"))
    });
    assert_eq!(xids.len(), 37);
    let loads = batch_sizes(&h, "load");
    assert!(
        loads.len() <= 10 && loads.iter().any(|&n| n >= 10),
        "40 deliveries in a handful of loads: {loads:?}"
    );
    // The note of each says what it did, in a call with others.
    let note = h.attempts(settled[20].id).await[0].1.clone().unwrap();
    assert!(
        note.contains("res.partner shop.bulk_20: created id "),
        "{note}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batched_create_by_key_lands_once_when_its_answer_is_lost_and_a_fault_is_halved() {
    let h = hub().await;
    h.sim.set_faults(switchyard_odoo_sim::faults::Faults {
        latency_ms: 40,
        ..Default::default()
    });
    // The first create commits and its answer is lost.
    h.proxy.lose("\"res.partner\",\"create\"", 0, 1);
    let mut ids = Vec::new();
    for i in 0..20 {
        let mut data = json!({"ref": format!("K{i}"), "name": format!("Keyed {i}")});
        if i == 11 {
            // Odoo refuses the whole list with a fault that names no record
            data["type"] = json!("bogus");
        }
        ids.push(h.ingest("bulk.contact", &format!("k-{i}"), data).await);
    }
    for (i, id) in ids.iter().enumerate() {
        let d = h.settled(*id).await;
        if i == 11 {
            assert_eq!(d.state, DeliveryState::Dead);
            let error = h.attempts(d.id).await[0].2.clone().unwrap();
            assert!(
                error.contains("Wrong value for res.partner.type"),
                "{error}"
            );
        } else {
            assert_eq!(
                d.state,
                DeliveryState::Delivered,
                "delivery {i}: {:?}",
                d.last_error
            );
        }
    }
    for i in 0..20 {
        let n = h
            .rows("res.partner", |r| {
                r.get("ref") == Some(&json!(format!("K{i}")))
            })
            .len();
        assert_eq!(n, usize::from(i != 11), "contact K{i}");
    }
    let creates = batch_sizes(&h, "create");
    assert!(
        creates.iter().any(|&n| n >= 5),
        "the contacts went in list creates: {creates:?}"
    );
}
