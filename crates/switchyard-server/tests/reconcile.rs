//! Reconciliation of Odoo's on-hand stock (the Odoo simulator over loopback HTTP) with a
//! WMS (a stub on loopback), on a manual clock: every injected difference is found with both
//! values, none is invented, the run's summary counts them, and a WMS that fails makes a
//! failed run, not a silent one.

use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use switchyard_core::config::Config;
use switchyard_core::instance::FindingKind;
use switchyard_core::{ManualClock, SharedClock};
use switchyard_odoo::{CallOptions, OdooClient, OdooConfig};
use switchyard_odoo_sim::{SimConfig, Simulator};
use switchyard_server::reconcile::Reconciler;
use switchyard_store::{FindingFilter, RunFilter, SharedStore, StoreOptions};
use tokio_util::sync::CancellationToken;

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

/// The WMS stub: answers its current stock document, or a status.
#[derive(Clone, Default)]
struct Wms {
    doc: Arc<Mutex<(u16, Value)>>,
}

async fn wms() -> (Wms, String) {
    let w = Wms::default();
    *w.doc.lock().unwrap() = (200, json!({"items": []}));
    let state = w.clone();
    let app = axum::Router::new().route(
        "/api/stock",
        axum::routing::get(move || {
            let state = state.clone();
            async move {
                let (status, doc) = state.doc.lock().unwrap().clone();
                (
                    axum::http::StatusCode::from_u16(status).unwrap(),
                    axum::Json(doc),
                )
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/api/stock", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (w, url)
}

async fn product(odoo: &OdooClient, code: &str, qty: f64) {
    let opts = CallOptions::default();
    let id = odoo
        .execute_kw(
            "product.product",
            "create",
            vec![json!({"name": format!("Product {code}"), "default_code": code, "is_storable": true})],
            Default::default(),
            &opts,
        )
        .await
        .unwrap();
    let quant = odoo
        .execute_kw(
            "stock.quant",
            "create",
            vec![json!({"product_id": id, "location_id": 8, "inventory_quantity": qty})],
            Default::default(),
            &opts,
        )
        .await
        .unwrap();
    odoo.execute_kw(
        "stock.quant",
        "action_apply_inventory",
        vec![json!([quant])],
        Default::default(),
        &opts,
    )
    .await
    .unwrap();
}

async fn runs(store: &SharedStore, n: usize) -> Vec<switchyard_store::RunRecord> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let r = store
            .list_runs(&RunFilter {
                monitor: Some("stock".into()),
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        if r.len() >= n {
            return r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} runs, expected {n}",
            r.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_differences_are_all_found_and_none_invented() {
    let clock = ManualClock::new(at("2026-11-24T08:10:00Z"));
    let shared: SharedClock = Arc::new(clock.clone());
    let sim = Simulator::new(SimConfig::instant(), shared.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let odoo_url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(switchyard_odoo_sim::http::serve(sim.clone(), l));
    let odoo = OdooClient::new(OdooConfig::new(&odoo_url, "odoopeer", "admin", "admin")).unwrap();
    for (code, qty) in [("A1", 10.0), ("A2", 5.0), ("A3", 7.0), ("A4", 3.0)] {
        product(&odoo, code, qty).await;
    }
    let (wms, wms_url) = wms().await;
    *wms.doc.lock().unwrap() = (
        200,
        json!({"items": [
            {"sku": "A1", "qty": 10},
            {"sku": "A2", "qty": 4},
            {"sku": "A3", "qty": 7.2},
            {"sku": "A5", "qty": 9},
            {"sku": null, "qty": 1}
        ]}),
    );
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("odoo.secret");
    std::fs::write(&secret, "admin\n").unwrap();
    let text = format!(
        r#"
[[odoo]]
name = "erp"
url = "{odoo_url}"
database = "odoopeer"
login = "admin"
secret = "file:{}"
protocol = "jsonrpc"
probe = false

[[reconciliations]]
name = "stock"
title = "Stock Odoo vs WMS"
criticality = "P2"
schedule = "*/30 * * * *"
other_name = "WMS"
tolerance = 0.5
[reconciliations.odoo]
connection = "erp"
model = "product.product"
domain = [["default_code", "!=", false]]
fields = ["default_code", "qty_available"]
key = ".default_code"
value = ".qty_available"
[reconciliations.other]
url = "{wms_url}"
items = ".items[]"
key = ".sku"
value = ".qty"
"#,
        secret.display()
    );
    let config = Config::parse(&text, "t.toml", vec![]).unwrap_or_else(|e| panic!("{e}"));
    let store = switchyard_store::open(
        &format!("sqlite://{}", dir.path().join("hub.db").display()),
        &StoreOptions::default(),
    )
    .await
    .unwrap();
    let mut r = Reconciler::from_config(&config, store.clone(), shared.clone(), "node-a").unwrap();
    r.tick = std::time::Duration::from_millis(20);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(Arc::new(r).run(cancel.clone()));
    // Nothing runs before the first scheduled instant after start (08:30).
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(runs(&store, 0).await.is_empty());
    clock.set(at("2026-11-24T08:30:00Z"));
    let first = runs(&store, 1).await;
    let run = &first[0];
    assert_eq!(run.run.slot, Some(at("2026-11-24T08:30:00Z")));
    assert_eq!(run.run.status.as_str(), "succeeded");
    let summary: Value = serde_json::from_str(run.run.message.as_deref().unwrap()).unwrap();
    assert_eq!(
        summary,
        json!({"compared": 5, "matched": 2, "mismatched": 1, "missing_in_odoo": 1,
               "missing_in_other": 1, "unreadable": 1})
    );
    let findings = |run_id: i64| {
        let store = store.clone();
        async move {
            store
                .list_findings(&FindingFilter {
                    subject: Some("reconciliation".into()),
                    instance_id: Some(run_id),
                    limit: 100,
                    ..Default::default()
                })
                .await
                .unwrap()
        }
    };
    let f = findings(run.id).await;
    let got: Vec<(&str, FindingKind, &str)> = f
        .iter()
        .map(|f| {
            (
                f.finding.step.as_str(),
                f.finding.kind,
                f.finding.message.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                "A2",
                FindingKind::Mismatch,
                "Stock Odoo vs WMS: A2: Odoo 5, WMS 4 (tolerance 0.5)"
            ),
            (
                "A4",
                FindingKind::MissingInOther,
                "Stock Odoo vs WMS: A4: Odoo 3, not in WMS"
            ),
            (
                "A5",
                FindingKind::MissingInOdoo,
                "Stock Odoo vs WMS: A5: not in Odoo, WMS 9"
            ),
        ]
    );
    // The WMS is corrected; the next run finds only what is still different.
    *wms.doc.lock().unwrap() = (
        200,
        json!({"items": [
            {"sku": "A1", "qty": 10}, {"sku": "A2", "qty": 5}, {"sku": "A3", "qty": 7},
            {"sku": "A4", "qty": 3}
        ]}),
    );
    clock.set(at("2026-11-24T09:00:00Z"));
    let second = runs(&store, 2).await;
    assert!(findings(second[0].id).await.is_empty(), "nothing invented");
    // Downtime over several instants: one run, for the latest.
    *wms.doc.lock().unwrap() = (503, json!({"error": "maintenance"}));
    clock.set(at("2026-11-24T10:40:00Z"));
    let third = runs(&store, 3).await;
    assert_eq!(third[0].run.slot, Some(at("2026-11-24T10:30:00Z")));
    assert_eq!(third[0].run.status.as_str(), "failed");
    let f = findings(third[0].id).await;
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].finding.kind, FindingKind::RunFailed);
    assert!(
        f[0].finding.message.contains("WMS: HTTP 503"),
        "{}",
        f[0].finding.message
    );
    clock.set(at("2026-11-24T10:40:00Z") + Duration::minutes(5));
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(runs(&store, 3).await.len(), 3, "no run between instants");
    cancel.cancel();
    task.await.unwrap();
}
