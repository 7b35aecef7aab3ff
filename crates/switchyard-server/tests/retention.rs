//! Retention per source (payload first, then the slim dedupe row), run as a fenced
//! singleton on a manual clock, and per-source storage quotas over real HTTP.

use chrono::{Duration, TimeZone, Utc};
use serde_json::json;
use std::sync::Arc;
use switchyard_core::token::{Role, generate_token, hash_token};
use switchyard_core::{Config, ManualClock, SharedClock};
use switchyard_server::retention::{Retention, Usage};
use switchyard_server::{AppState, Limits};
use switchyard_store::conformance::event;
use switchyard_store::{Appended, NewToken, SharedStore, StoreOptions};
use tokio_util::sync::CancellationToken;

const CONFIG: &str = r#"
[retention]
payload_days = 30
dedupe_days = 90

[[sources]]
name = "shop"
kind = "cloudevents"
source = "https://shop.example.com"
retention = { payload_days = 1, dedupe_days = 2, quota_mib = 1 }

[[sources]]
name = "wms"
kind = "cloudevents"
source = "https://wms.example.com/*"
"#;

async fn store() -> (SharedStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("r.db").display());
    (
        switchyard_store::open(&url, &StoreOptions::default())
            .await
            .unwrap(),
        dir,
    )
}

fn sources() -> Arc<switchyard_core::sources::Sources> {
    let config = Config::parse(CONFIG, "t.toml", Vec::new()).unwrap();
    Arc::new(switchyard_core::sources::Sources::compile(&config).unwrap())
}

#[tokio::test]
async fn retention_purges_per_source_as_a_fenced_singleton() {
    let (store, _dir) = store().await;
    let now = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
    let clock = ManualClock::new(now);
    let at = |source: &str, id: &str, age_hours: i64| {
        let mut e = event(source, id, "t");
        e.received_at = now - Duration::hours(age_hours);
        e
    };
    let first = store
        .append_events(vec![
            at("https://shop.example.com", "shop-3d", 72),
            at("https://shop.example.com", "shop-36h", 36),
            at("https://shop.example.com", "shop-new", 1),
            at("https://wms.example.com/wh1", "wms-3d", 72),
            at("https://elsewhere.example.com", "undeclared-3d", 72),
        ])
        .await
        .unwrap();
    let retention = |node: &str| Retention {
        store: store.clone(),
        clock: Arc::new(clock.clone()) as SharedClock,
        sources: sources(),
        node_id: node.into(),
        every: std::time::Duration::from_secs(60),
    };
    let a = retention("node-a");
    let (dropped, forgotten) = a.pass(&CancellationToken::new()).await.unwrap();
    assert_eq!(
        (dropped, forgotten),
        (2, 1),
        "shop: two payloads older than 1 day, one row older than 2"
    );

    let get = |id: &'static str, source: &'static str| {
        let store = store.clone();
        async move { store.find_event(source, id).await.unwrap() }
    };
    assert!(
        get("shop-3d", "https://shop.example.com").await.is_none(),
        "past the dedupe horizon"
    );
    let slim = get("shop-36h", "https://shop.example.com").await.unwrap();
    assert!(slim.payload_purged && slim.event.data.is_none());
    let fresh = get("shop-new", "https://shop.example.com").await.unwrap();
    assert!(!fresh.payload_purged && fresh.event.data.is_some());
    for (id, source) in [
        ("wms-3d", "https://wms.example.com/wh1"),
        ("undeclared-3d", "https://elsewhere.example.com"),
    ] {
        let e = get(id, source).await.unwrap();
        assert!(
            !e.payload_purged,
            "{id}: 30 days by default, nothing touched"
        );
    }
    // a late retry of the slim event is still a duplicate; the forgotten one is new again
    let again = store
        .append_events(vec![
            at("https://shop.example.com", "shop-36h", 0),
            at("https://shop.example.com", "shop-3d", 0),
        ])
        .await
        .unwrap();
    assert_eq!(
        again[0],
        Appended::Duplicate {
            seq: first[1].seq()
        }
    );
    assert!(matches!(again[1], Appended::Stored { .. }));

    // node-b cannot run while node-a holds the lease; it takes over once it expires
    let b = retention("node-b");
    assert_eq!(b.pass(&CancellationToken::new()).await.unwrap(), (0, 0));
    let leases = store.list_leases().await.unwrap();
    assert_eq!(leases[0].owner, "node-a");
    clock.advance(Duration::minutes(10));
    b.pass(&CancellationToken::new()).await.unwrap();
    let leases = store.list_leases().await.unwrap();
    assert_eq!((leases[0].owner.as_str(), leases[0].epoch), ("node-b", 2));
}

#[tokio::test]
async fn a_source_over_its_quota_gets_429_and_others_do_not() {
    let (store, _dir) = store().await;
    // about 1.1 MiB of shop events
    for chunk in 0..12 {
        let batch = (0..100)
            .map(|i| {
                let mut e = event(
                    "https://shop.example.com",
                    &format!("fill-{chunk}-{i}"),
                    "t",
                );
                e.event.data = Some(switchyard_core::Data::Json(json!({"pad": "p".repeat(900)})));
                e
            })
            .collect();
        store.append_events(batch).await.unwrap();
    }
    let clock: SharedClock = Arc::new(switchyard_core::SystemClock);
    let state = AppState::new(
        store.clone(),
        clock,
        Limits {
            max_body_bytes: 1 << 20,
            allowed_origins: vec!["*".into()],
        },
        "quota-node",
    )
    .with_sources((*sources()).clone());
    Usage {
        store: store.clone(),
        clock: Arc::new(switchyard_core::SystemClock),
        sources: state.sources.clone(),
        map: state.usage.clone(),
        every: std::time::Duration::from_secs(30),
    }
    .measure()
    .await
    .unwrap();
    assert!(state.usage.bytes("shop") > 1024 * 1024);
    let metrics = state.metrics.render();
    assert!(
        metrics.contains("switchyard_source_stored_bytes{source=\"shop\"}"),
        "{metrics}"
    );

    let secret = generate_token();
    store
        .create_token(
            NewToken {
                name: "senders".into(),
                role: Role::Ingest,
                hash: hash_token(&secret),
                created_at: Utc::now(),
            },
            "cli",
        )
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let cancel = CancellationToken::new();
    tokio::spawn(switchyard_server::serve(
        listener,
        state,
        cancel.clone(),
        std::time::Duration::from_secs(1),
    ));
    let http = reqwest::Client::new();
    let post = |source: &str, id: &str| {
        http.post(format!("{base}/v1/events"))
            .bearer_auth(&secret)
            .header("content-type", "application/cloudevents+json")
            .body(
                json!({"specversion": "1.0", "id": id, "source": source, "type": "t"}).to_string(),
            )
            .send()
    };
    let r = post("https://shop.example.com", "over").await.unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert_eq!(r.headers()["retry-after"], "60");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["type"], "/problems/source-quota-exceeded");
    assert!(
        store
            .find_event("https://shop.example.com", "over")
            .await
            .unwrap()
            .is_none()
    );
    let r = post("https://wms.example.com/wh1", "fine").await.unwrap();
    assert_eq!(r.status().as_u16(), 202, "other sources are not affected");
    cancel.cancel();
}

#[tokio::test]
async fn silent_and_lagging_sources_are_reported() {
    let (store, _dir) = store().await;
    let now = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
    let config = Config::parse(
        r#"
[[sources]]
name = "wms"
kind = "cloudevents"
source = "https://wms.example.com/*"
health = { silence_minutes = 10, active_hours = "06:00-22:00" }

[[sources]]
name = "odoo"
kind = "cloudevents"
source = "https://odoo.example.com/*"
health = { max_lag_seconds = 60, silence_minutes = 30 }

[[sources]]
name = "mes"
kind = "cloudevents"
source = "https://mes.example.com/*"
"#,
        "t.toml",
        Vec::new(),
    )
    .unwrap();
    let sources = Arc::new(switchyard_core::sources::Sources::compile(&config).unwrap());
    let at = |source: &str, id: &str, received_min_ago: i64, happened_min_ago: i64| {
        let mut e = event(source, id, "t");
        e.received_at = now - Duration::minutes(received_min_ago);
        e.event.time = Some((now - Duration::minutes(happened_min_ago)).to_rfc3339());
        e
    };
    store
        .append_events(vec![
            at("https://wms.example.com/wh1", "w1", 20, 20),
            at("https://odoo.example.com/sale.order", "o1", 1, 11),
            at("https://odoo.example.com/sale.order", "o2", 2, 2),
        ])
        .await
        .unwrap();
    // the server installs its recorder when it builds its state; do the same first
    let handle = switchyard_server::metrics_handle();
    let map = Arc::new(switchyard_server::retention::UsageMap::default());
    let usage = Usage {
        store: store.clone(),
        clock: Arc::new(ManualClock::new(now)),
        sources: sources.clone(),
        map: map.clone(),
        every: std::time::Duration::from_secs(30),
    };
    usage.measure().await.unwrap();
    let reports = map.reports();
    let by = |n: &str| reports.iter().find(|r| r.name == n).unwrap().clone();
    let wms = by("wms");
    assert_eq!(
        wms.health,
        switchyard_core::sources::HealthStatus::Silent {
            reason: "nothing received for 20 min (expected within 10 min)".into()
        }
    );
    let odoo = by("odoo");
    assert!(
        matches!(
            odoo.health,
            switchyard_core::sources::HealthStatus::Lagging { .. }
        ),
        "{odoo:?}"
    );
    assert_eq!(odoo.recent_events, 2);
    assert_eq!(odoo.avg_lag_seconds, Some(300.0), "(10 min + 0) / 2");
    assert_eq!(odoo.max_lag_seconds, Some(600.0));
    let mes = by("mes");
    assert_eq!(
        mes.health,
        switchyard_core::sources::HealthStatus::Ok,
        "no expectations, no finding"
    );
    assert_eq!(mes.stored_events, 0);
    assert!(reports.iter().any(|r| r.name == "undeclared"));
    let text = handle.render();
    assert!(
        text.contains("switchyard_source_silent{source=\"wms\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("switchyard_source_lagging{source=\"odoo\"} 1"),
        "{text}"
    );
}
