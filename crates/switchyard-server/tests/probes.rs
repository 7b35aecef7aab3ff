//! API-health probes on a manual clock: the schedule, one node per target through the
//! singleton lease (and takeover when that node stops), results shared through the store
//! and `/v1/probes`, and the API key expiry warning — against the Odoo simulator and real
//! HTTP destinations on loopback.

mod support;

use chrono::{DateTime, Duration, Utc};
use std::sync::Arc;
use support::{Setup, start};
use switchyard_core::SharedClock;
use switchyard_core::clock::ManualClock;
use switchyard_odoo_sim::{SimConfig, Simulator};
use switchyard_server::probes::{ProbeResult, Prober};

const KEY: &str = "7c1e9a2b3d4f5061728394a5b6c7d8e9f0a1b2c3";

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

struct World {
    clock: Arc<ManualClock>,
    sim: Simulator,
    config: String,
    _dir: tempfile::TempDir,
}

async fn world() -> World {
    let clock = Arc::new(ManualClock::new(at("2026-11-24T00:00:00Z")));
    let shared: SharedClock = clock.clone();
    let sim = Simulator::new(SimConfig::instant(), shared);
    // The key expires in exactly seven days (Odoo stores the expiry; admin can read it).
    sim.add_api_key(2, KEY, Some(at("2026-12-01T00:00:00Z")));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let odoo = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(switchyard_odoo_sim::http::serve(sim.clone(), l));
    // A destination that answers HEAD, and one where nothing listens.
    let carrier = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let carrier_url = format!("http://{}/labels", carrier.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/labels",
        axum::routing::any(|| async { axum::http::StatusCode::NO_CONTENT }),
    );
    tokio::spawn(async move { axum::serve(carrier, app).await.unwrap() });
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("odoo.key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    let config = format!(
        r#"
[[odoo]]
name = "erp"
url = "{odoo}"
database = "odoopeer"
login = "admin"
secret = "file:{}"

[[destinations]]
name = "carrier"
url = "{carrier_url}"

[[destinations]]
name = "wms"
url = "http://{closed}/orders"

[probes]
interval_seconds = 60
timeout_seconds = 2
credential_warning_days = 14
"#,
        key_file.display()
    );
    World {
        clock,
        sim,
        config,
        _dir: dir,
    }
}

fn by_name<'a>(rs: &'a [ProbeResult], name: &str) -> &'a ProbeResult {
    rs.iter()
        .find(|r| r.target == name)
        .unwrap_or_else(|| panic!("no {name} in {rs:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_run_on_schedule_once_per_target_and_warn_before_the_key_expires() {
    let w = world().await;
    let shared: SharedClock = w.clock.clone();
    let a = start(Setup {
        clock: Some(shared.clone()),
        probes: Some(w.config.clone()),
        ..Setup::default()
    })
    .await;

    // First tick: every target is due.
    let ran = a.probes.tick().await;
    assert_eq!(ran.len(), 3, "{ran:?}");
    let erp = by_name(&ran, "erp");
    assert!(erp.ok, "{erp:?}");
    assert_eq!(erp.kind, "odoo");
    assert_eq!(erp.server_version.as_deref(), Some("18.0-20250506"));
    assert_eq!(
        erp.protocol.as_deref(),
        Some("jsonrpc"),
        "Odoo 18 has no JSON-2"
    );
    let steps: Vec<&str> = erp.steps.iter().map(|s| s.step.as_str()).collect();
    assert_eq!(steps, ["version", "authenticate", "search_count"]);
    assert_eq!(erp.credential_expires_at, Some(at("2026-12-01T00:00:00Z")));
    assert_eq!(
        erp.credential_warning.as_deref(),
        Some("the API key of \"erp\" expires on 2026-12-01 (in 7 days)")
    );
    let carrier = by_name(&ran, "carrier");
    assert!(carrier.ok && carrier.status == Some(204), "{carrier:?}");
    let wms = by_name(&ran, "wms");
    assert!(!wms.ok);
    assert_eq!(wms.class.as_deref(), Some("transient"));
    assert_eq!(
        wms.error.as_deref(),
        Some("unreachable (connection failed)")
    );

    // Not due again before the interval has passed.
    w.clock.advance(Duration::seconds(30));
    assert!(a.probes.tick().await.is_empty());
    w.clock.advance(Duration::seconds(31));
    assert_eq!(a.probes.tick().await.len(), 3);

    // A second node on the same store: A holds every probe lease, so B probes nothing but
    // serves A's results.
    let b = Prober::new(
        switchyard_server::probes::targets(
            &switchyard_core::Config::parse(&w.config, "t.toml", vec![]).unwrap(),
        )
        .unwrap(),
        a.store.clone(),
        shared.clone(),
        "node-b".into(),
        switchyard_core::odoo::ProbeConfig {
            interval_seconds: 60,
            timeout_seconds: 2,
            credential_warning_days: 14,
            destinations: true,
        },
    );
    assert!(b.tick().await.is_empty(), "only the lease holder probes");
    let shared_results = b.results().await.unwrap();
    assert_eq!(shared_results.len(), 3);
    assert!(shared_results.iter().all(|r| r.node == "test-node"));

    // The API serves the same results.
    let (status, body) = a.get_as("/v1/probes", &a.viewer).await;
    assert_eq!(status, 200);
    assert_eq!(body["probes"].as_array().unwrap().len(), 3);
    assert_eq!(body["credential_warning_days"], 14);

    // A stops probing (as if it died): after its leases expire (3 intervals) B takes over.
    w.clock.advance(Duration::seconds(181));
    let ran = b.tick().await;
    assert_eq!(ran.len(), 3, "{ran:?}");
    assert!(ran.iter().all(|r| r.node == "node-b"));
    assert!(
        a.probes.tick().await.is_empty(),
        "A no longer holds the leases"
    );

    // Past the expiry Odoo refuses the key: a credential failure, and the warning says so.
    w.clock.set(at("2026-12-01T12:00:00Z"));
    let ran = b.tick().await;
    let erp = by_name(&ran, "erp");
    assert!(!erp.ok);
    assert_eq!(erp.class.as_deref(), Some("credential"), "{erp:?}");
    assert_eq!(erp.steps.last().unwrap().step, "authenticate");
    // The expiry is no longer readable (we cannot log in), so none is reported.
    assert_eq!(erp.credential_expires_at, None);
    drop(w.sim);
}

/// A configured expiry (for users who cannot read their keys) drives the warning too.
#[tokio::test]
async fn a_configured_expiry_warns_when_odoo_does_not_tell() {
    let w = world().await;
    let shared: SharedClock = w.clock.clone();
    // A plain user cannot read res.users.apikeys in Odoo: log in as peer_limited with its
    // password and give the expiry in the configuration.
    let config = w
        .config
        .replace(
            "login = \"admin\"",
            "login = \"peer_limited\"\napi_key_expires = \"2026-12-05\"",
        )
        .replace(KEY, "admin");
    std::fs::write(w._dir.path().join("odoo.key"), "admin\n").unwrap();
    let a = start(Setup {
        clock: Some(shared),
        probes: Some(config),
        ..Setup::default()
    })
    .await;
    let ran = a.probes.tick().await;
    let erp = by_name(&ran, "erp");
    assert!(erp.ok, "{erp:?}");
    assert_eq!(erp.credential_expires_at, Some(at("2026-12-05T23:59:59Z")));
    assert!(
        erp.credential_warning
            .as_deref()
            .unwrap()
            .contains("expires on 2026-12-05 (in 11 days)")
    );
}
