//! The monitor against a real store (a SQLite file; PostgreSQL when
//! `SWITCHYARD_TEST_PG_URL` is set), driven by a manual clock: findings at their instants,
//! exactly once, timers kept across restarts and takeovers, provisional instances merged,
//! events out of order and duplicated.

use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};
use std::sync::Arc;
use switchyard_core::batch::BatchMonitors;
use switchyard_core::config::Config;
use switchyard_core::instance::{FindingKind, InstanceState};
use switchyard_core::sources::Sources;
use switchyard_core::workflows::Workflows;
use switchyard_core::{CloudEvent, ManualClock, SharedClock};
use switchyard_monitor::{Monitor, Progress, Settings};
use switchyard_store::{FindingFilter, FindingRecord, NewEvent, SharedStore, StoreOptions};
use tokio_util::sync::CancellationToken;

const CONFIG: &str = r#"
[[sources]]
name = "shop"
kind = "cloudevents"
source = "https://shop.example"
keys = { shop_order = ".data.number" }

[[sources]]
name = "odoo"
kind = "cloudevents"
source = "odoo://erp"
keys = { shop_order = ".data.origin", sale_order = ".data.name" }

[[sources]]
name = "wms"
kind = "cloudevents"
source = "https://wms.example"
keys = { sale_order = ".data.order", picking = ".data.picking" }

[[batch_monitors]]
name = "nightly"
title = "Nightly cost roll-up"
criticality = "P3"
schedule = "0 1 * * *"
timezone = "Europe/Berlin"
grace_seconds = 900
max_duration_seconds = 3600
expected_count = 1000
count_tolerance = 0.1

[[batch_monitors]]
name = "labels"
criticality = "P2"
runs_per_window = { window_seconds = 3600, min = 2 }

[[workflows]]
name = "order_to_cash"
title = "Shop order"
criticality = "P2"
key = "shop_order"
stalled_after_seconds = 7200
order_grace_seconds = 60
dimensions = { warehouse = ".data.warehouse" }
cancel = [{ source = "shop", type = "order.cancelled" }]

[[workflows.steps]]
name = "ordered"
source = "shop"
type = "order.created"

[[workflows.steps]]
name = "confirmed"
source = "odoo"
type = "sale.order.confirmed"
sla_seconds = 600
warn_seconds = 300
after = ["ordered"]

[[workflows.steps]]
name = "shipped"
source = "wms"
type = "shipment.shipped"
key = "sale_order"
after = ["confirmed"]

[[workflows.steps]]
name = "delivered"
source = "wms"
type = "shipment.delivered"
key = "picking"
required = false

[[workflows.steps]]
name = "invoiced"
source = "odoo"
type = "invoice.posted"
key = "sale_order"
from = "shipped"
sla_seconds = 600
after = ["shipped"]
"#;

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-24T08:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

struct World {
    store: SharedStore,
    clock: ManualClock,
    sources: Arc<Sources>,
    workflows: Arc<Workflows>,
    batch: Arc<BatchMonitors>,
    /// The seq of the last event stored.
    last: std::sync::Mutex<i64>,
    _dir: Option<tempfile::TempDir>,
}

async fn sqlite() -> World {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("m.db").display());
    let store = switchyard_store::open(&url, &StoreOptions::default())
        .await
        .unwrap();
    world(store, Some(dir))
}

async fn postgres() -> Option<World> {
    let Ok(base) = std::env::var("SWITCHYARD_TEST_PG_URL") else {
        assert!(
            std::env::var("CI").is_err(),
            "SWITCHYARD_TEST_PG_URL must be set in CI"
        );
        eprintln!("SKIPPED: PostgreSQL monitor test (set SWITCHYARD_TEST_PG_URL to run it)");
        return None;
    };
    let schema = format!(
        "sy_test_mon_{}",
        std::process::id() as u64 * 1000 + rand_suffix()
    );
    let sep = if base.contains('?') { '&' } else { '?' };
    let store = switchyard_store::open(
        &format!("{base}{sep}schema={schema}"),
        &StoreOptions::default(),
    )
    .await
    .unwrap();
    Some(world(store, None))
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn world(store: SharedStore, dir: Option<tempfile::TempDir>) -> World {
    let config = Config::parse(CONFIG, "t.toml", Vec::new()).unwrap();
    World {
        store,
        clock: ManualClock::new(t0()),
        sources: Arc::new(Sources::compile(&config).unwrap()),
        workflows: Arc::new(Workflows::compile(&config).unwrap()),
        batch: Arc::new(BatchMonitors::compile(&config.batch_monitors).unwrap()),
        last: std::sync::Mutex::new(0),
        _dir: dir,
    }
}

struct Running {
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    progress: tokio::sync::watch::Receiver<Progress>,
}

impl World {
    fn start(&self, node: &str) -> Running {
        self.start_with(node, self.workflows.clone())
    }

    /// A monitor with other workflow definitions (a changed configuration).
    fn start_with(&self, node: &str, workflows: Arc<Workflows>) -> Running {
        let clock: SharedClock = Arc::new(self.clock.clone());
        let m = Monitor::new(
            self.store.clone(),
            clock,
            self.sources.clone(),
            workflows,
            node,
            Settings {
                poll: std::time::Duration::from_millis(20),
                lease_ttl: Duration::seconds(30),
                dead_letter_scan: std::time::Duration::ZERO,
                ..Default::default()
            },
        )
        .with_batch_monitors(self.batch.clone());
        let progress = m.progress();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(m.run(cancel.clone()));
        Running {
            cancel,
            task,
            progress,
        }
    }

    /// Stores an event received now (business time), with the keys its source declares.
    async fn send(
        &self,
        source: &str,
        ty: &str,
        id: &str,
        time: Option<DateTime<Utc>>,
        data: Value,
    ) {
        self.send_routed(source, ty, id, time, data, Vec::new())
            .await
    }

    /// Like `send`, with the deliveries routing made of the event.
    async fn send_routed(
        &self,
        source: &str,
        ty: &str,
        id: &str,
        time: Option<DateTime<Utc>>,
        data: Value,
        deliveries: Vec<switchyard_store::NewDelivery>,
    ) {
        let mut v = json!({
            "specversion": "1.0", "id": id, "source": source, "type": ty, "data": data,
        });
        if let Some(t) = time {
            v["time"] = json!(t.to_rfc3339());
        }
        let event: CloudEvent = CloudEvent::from_json(v).unwrap().event;
        let (keys, errors) = match self.sources.for_cloudevent(&event.source) {
            Some(source) => source.extract_keys(&event),
            None => (Vec::new(), Vec::new()), // heartbeats
        };
        assert!(errors.is_empty(), "{errors:?}");
        let appended = self
            .store
            .append_events(vec![NewEvent {
                event,
                received_at: self.now(),
                keys: keys
                    .into_iter()
                    .map(|(n, v)| switchyard_core::sources::BusinessKey::new(n, v))
                    .collect(),
                deliveries,
            }])
            .await
            .unwrap();
        let seq = appended[0].seq();
        let mut last = self.last.lock().unwrap();
        *last = (*last).max(seq);
    }

    fn now(&self) -> DateTime<Utc> {
        use switchyard_core::Clock;
        self.clock.now()
    }

    /// Waits until `r` has applied every stored event and fired the timers due now.
    async fn settle(&self, r: &mut Running) {
        // The position of the last event stored (on PostgreSQL `log_head` may not show it
        // yet while another transaction is open).
        let last = *self.last.lock().unwrap();
        let head = match last {
            0 => switchyard_store::LogPosition::START,
            seq => self.store.get_event(seq).await.unwrap().unwrap().position,
        };
        let now = self.now();
        tokio::time::timeout(
            std::time::Duration::from_secs(20),
            r.progress
                .wait_for(|p| p.epoch.is_some() && p.position >= head && p.time >= Some(now)),
        )
        .await
        .expect("the monitor settles within 20 s")
        .unwrap();
    }

    /// The workflow findings (batch runs have their own).
    async fn findings(&self) -> Vec<FindingRecord> {
        self.findings_of("workflow").await
    }

    async fn findings_of(&self, subject: &str) -> Vec<FindingRecord> {
        self.store
            .list_findings(&FindingFilter {
                subject: Some(subject.into()),
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
    }

    async fn advance_to(&self, r: &mut Running, to: DateTime<Utc>) {
        self.clock.set(to);
        self.settle(r).await;
    }
}

fn kinds(f: &[FindingRecord]) -> Vec<(String, String, FindingKind)> {
    f.iter()
        .map(|f| {
            (
                f.instance_key.clone(),
                f.finding.step.clone(),
                f.finding.kind,
            )
        })
        .collect()
}

fn order(number: &str) -> Value {
    json!({ "number": number, "warehouse": "WH1" })
}

fn invoice(order: &str) -> Value {
    json!({ "name": order })
}

fn sale(name: &str, origin: &str) -> Value {
    json!({ "name": name, "origin": origin })
}

async fn findings_at_their_instants_once(w: World) {
    let mut m = w.start("node-a");
    w.send(
        "https://shop.example",
        "order.created",
        "o1",
        None,
        order("#1"),
    )
    .await;
    w.send(
        "https://shop.example",
        "order.created",
        "o2",
        None,
        order("#2"),
    )
    .await;
    w.settle(&mut m).await;
    // #2 is confirmed in time
    w.advance_to(&mut m, t0() + Duration::minutes(4)).await;
    w.send(
        "odoo://erp",
        "sale.order.confirmed",
        "c2",
        None,
        sale("S2", "#2"),
    )
    .await;
    w.advance_to(&mut m, t0() + Duration::seconds(299)).await;
    assert!(
        w.findings().await.is_empty(),
        "nothing before the warning threshold"
    );
    w.advance_to(&mut m, t0() + Duration::minutes(5)).await;
    let f = w.findings().await;
    assert_eq!(
        kinds(&f),
        [("#1".into(), "confirmed".into(), FindingKind::AtRisk)]
    );
    assert_eq!(f[0].finding.at, t0() + Duration::minutes(5));
    assert_eq!(f[0].detected_at, t0() + Duration::minutes(5));
    w.advance_to(&mut m, t0() + Duration::seconds(599)).await;
    assert_eq!(w.findings().await.len(), 1);
    w.advance_to(&mut m, t0() + Duration::minutes(10)).await;
    let f = w.findings().await;
    assert_eq!(
        kinds(&f),
        [
            ("#1".into(), "confirmed".into(), FindingKind::AtRisk),
            ("#1".into(), "confirmed".into(), FindingKind::Breach)
        ]
    );
    assert_eq!(f[1].finding.at, t0() + Duration::minutes(10));
    assert!(
        f[1].finding.message.contains("not reached within 10m"),
        "{}",
        f[1].finding.message
    );
    assert_eq!(f[1].finding.evidence[0].id, "o1");
    let i = w.store.instances_by_key("#1", None, 10).await.unwrap();
    assert_eq!(i[0].instance.state, InstanceState::Breached);
    assert_eq!(i[0].instance.dimensions["warehouse"], "WH1");
    let i = w.store.instances_by_key("#2", None, 10).await.unwrap();
    assert_eq!(i[0].instance.state, InstanceState::OnTrack);
    // An hour later nothing new: each finding is raised once; #2 is not late.
    w.advance_to(&mut m, t0() + Duration::minutes(70)).await;
    assert_eq!(w.findings().await.len(), 2);
    // Stalled two hours after the last progress (#1 at t0, #2 at t0 + 4m).
    w.advance_to(&mut m, t0() + Duration::minutes(124)).await;
    let stalled: Vec<_> = kinds(&w.findings().await)
        .into_iter()
        .filter(|k| k.2 == FindingKind::Stalled)
        .collect();
    assert_eq!(
        stalled,
        [
            ("#1".into(), "ordered".into(), FindingKind::Stalled),
            ("#2".into(), "confirmed".into(), FindingKind::Stalled)
        ]
    );
    m.cancel.cancel();
    m.task.await.unwrap();
}

async fn timers_survive_a_restart_and_a_takeover(w: World) {
    let mut a = w.start("node-a");
    w.send(
        "https://shop.example",
        "order.created",
        "o1",
        None,
        order("#1"),
    )
    .await;
    w.settle(&mut a).await;
    // node-a dies without releasing its lease
    a.task.abort();
    let _ = a.task.await;
    let mut b = w.start("node-b");
    // the lease (30 s) must run out before node-b may take over; the SLA passes meanwhile
    w.clock.set(t0() + Duration::minutes(11));
    w.settle(&mut b).await;
    let f = w.findings().await;
    assert_eq!(
        kinds(&f),
        [
            ("#1".into(), "confirmed".into(), FindingKind::AtRisk),
            ("#1".into(), "confirmed".into(), FindingKind::Breach)
        ]
    );
    assert_eq!(f[0].finding.at, t0() + Duration::minutes(5));
    assert_eq!(f[1].finding.at, t0() + Duration::minutes(10));
    // A graceful restart keeps the checkpoint and the timers too.
    b.cancel.cancel();
    b.task.await.unwrap();
    w.send(
        "https://shop.example",
        "order.created",
        "o2",
        None,
        order("#2"),
    )
    .await;
    let mut c = w.start("node-c");
    w.settle(&mut c).await;
    w.advance_to(&mut c, t0() + Duration::minutes(21)).await;
    let f = w.findings().await;
    assert_eq!(f.len(), 4, "{:?}", kinds(&f));
    assert_eq!(f[3].finding.at, t0() + Duration::minutes(21));
    assert_eq!(f[3].instance_key, "#2");
    c.cancel.cancel();
    c.task.await.unwrap();
}

async fn a_linking_event_merges_provisional_instances(w: World) {
    let mut m = w.start("node-a");
    // The WMS reports the shipment of sale order S7 first (its events know only S7) ...
    let shipped_at = t0() + Duration::minutes(3);
    w.clock.set(t0() + Duration::minutes(4));
    w.send(
        "https://wms.example",
        "shipment.shipped",
        "w7",
        Some(shipped_at),
        json!({ "order": "S7", "picking": "WH/OUT/00007" }),
    )
    .await;
    // ... the shop's order #7 arrives on its own ...
    w.send(
        "https://shop.example",
        "order.created",
        "o7",
        Some(t0()),
        order("#7"),
    )
    .await;
    w.settle(&mut m).await;
    let n = w.store.instance_counts().await.unwrap();
    assert_eq!(
        n.iter().map(|c| c.count).sum::<i64>(),
        2,
        "two provisional instances"
    );
    // ... then Odoo's confirmation, which happened before the shipment, links S7 to #7.
    w.send(
        "odoo://erp",
        "sale.order.confirmed",
        "c7",
        Some(t0() + Duration::minutes(1)),
        sale("S7", "#7"),
    )
    .await;
    w.settle(&mut m).await;
    let n = w.store.instance_counts().await.unwrap();
    assert_eq!(n.iter().map(|c| c.count).sum::<i64>(), 1, "merged: {n:?}");
    let by_picking = w
        .store
        .instances_by_key("WH/OUT/00007", None, 10)
        .await
        .unwrap();
    let by_order = w.store.instances_by_key("#7", None, 10).await.unwrap();
    assert_eq!(by_picking.len(), 1);
    assert_eq!(by_picking[0].id, by_order[0].id);
    let i = &by_order[0].instance;
    assert_eq!(i.key.as_deref(), Some("#7"));
    assert_eq!(
        i.hits.iter().map(|h| h.step.as_str()).collect::<Vec<_>>(),
        ["ordered", "shipped", "confirmed"]
    );
    // an event keyed only by the picking joins the same instance
    w.send(
        "https://wms.example",
        "shipment.delivered",
        "d7",
        None,
        json!({ "picking": "WH/OUT/00007" }),
    )
    .await;
    w.settle(&mut m).await;
    let again = w.store.instances_by_key("#7", None, 10).await.unwrap();
    assert_eq!(again[0].instance.hits.len(), 4);
    assert_eq!(again[0].id, by_order[0].id);
    let by_order = again;
    // the invoice SLA runs from the shipment the WMS instance brought: 10 min after 08:03
    assert_eq!(
        by_order[0].due_at,
        Some(shipped_at + Duration::seconds(480))
    );
    assert!(
        w.findings().await.is_empty(),
        "{:?}",
        kinds(&w.findings().await)
    );
    w.advance_to(&mut m, shipped_at + Duration::minutes(10))
        .await;
    assert_eq!(
        kinds(&w.findings().await),
        [
            ("#7".into(), "invoiced".into(), FindingKind::AtRisk),
            ("#7".into(), "invoiced".into(), FindingKind::Breach)
        ]
    );
    w.send("odoo://erp", "invoice.posted", "i7", None, invoice("S7"))
        .await;
    w.settle(&mut m).await;
    let i = w.store.instances_by_key("S7", None, 10).await.unwrap();
    assert_eq!(i[0].instance.state, InstanceState::CompletedLate);
    m.cancel.cancel();
    m.task.await.unwrap();
}

async fn events_out_of_order_and_duplicated(w: World) {
    // Received at 08:21, before any timer of what they describe could fire: on PostgreSQL
    // the monitor may see them in more than one page (the log shows a commit only once no
    // older transaction is open), and a timer must not fire between two pages here.
    w.clock.set(t0() + Duration::minutes(21));
    let at = |sec: i64| Some(t0() + Duration::seconds(sec));
    // Delivered newest first, one twice (same id: stored once) and the order again from a
    // shop retry (another id: a duplicate order). The monitor starts after they are all
    // stored, as after a backlog.
    w.send(
        "odoo://erp",
        "invoice.posted",
        "i9",
        at(1200),
        invoice("S9"),
    )
    .await;
    w.send(
        "https://wms.example",
        "shipment.shipped",
        "w9",
        at(900),
        json!({ "order": "S9" }),
    )
    .await;
    w.send(
        "https://wms.example",
        "shipment.shipped",
        "w9",
        at(900),
        json!({ "order": "S9" }),
    )
    .await;
    w.send(
        "odoo://erp",
        "sale.order.confirmed",
        "c9",
        at(120),
        sale("S9", "#9"),
    )
    .await;
    w.send(
        "https://shop.example",
        "order.created",
        "o9",
        at(0),
        order("#9"),
    )
    .await;
    w.send(
        "https://shop.example",
        "order.created",
        "o9-retry",
        at(60),
        order("#9"),
    )
    .await;
    let mut m = w.start("node-a");
    w.settle(&mut m).await;
    let i = w.store.instances_by_key("#9", None, 10).await.unwrap();
    assert_eq!(i.len(), 1);
    assert_eq!(i[0].instance.state, InstanceState::Completed);
    assert_eq!(i[0].instance.started_at, t0());
    assert_eq!(i[0].instance.hits.len(), 5);
    assert_eq!(
        kinds(&w.findings().await),
        [("#9".into(), "ordered".into(), FindingKind::Duplicate)]
    );
    w.advance_to(&mut m, t0() + Duration::minutes(30)).await;
    assert_eq!(w.findings().await.len(), 1);
    // Out of sequence for real: the invoice was posted before the shipment happened.
    w.send(
        "https://shop.example",
        "order.created",
        "o10",
        at(1680),
        order("#10"),
    )
    .await;
    w.send(
        "odoo://erp",
        "sale.order.confirmed",
        "c10",
        at(1710),
        sale("S10", "#10"),
    )
    .await;
    w.send(
        "odoo://erp",
        "invoice.posted",
        "i10",
        at(1740),
        invoice("S10"),
    )
    .await;
    w.settle(&mut m).await;
    w.advance_to(&mut m, t0() + Duration::seconds(1859)).await;
    assert_eq!(
        w.findings().await.len(),
        1,
        "the shipment has 60 s to arrive"
    );
    w.advance_to(&mut m, t0() + Duration::seconds(1860)).await;
    w.send(
        "https://wms.example",
        "shipment.shipped",
        "w10",
        at(1770),
        json!({ "order": "S10" }),
    )
    .await;
    w.settle(&mut m).await;
    let f = w.findings().await;
    assert_eq!(
        kinds(&f)[1..],
        [
            ("#10".into(), "shipped".into(), FindingKind::Missing),
            ("#10".into(), "invoiced".into(), FindingKind::OutOfSequence)
        ]
    );
    assert_eq!(f[1].finding.at, t0() + Duration::seconds(1860));
    // A cancelled order raises nothing more.
    w.send(
        "https://shop.example",
        "order.created",
        "o11",
        None,
        order("#11"),
    )
    .await;
    w.send(
        "https://shop.example",
        "order.cancelled",
        "x11",
        None,
        order("#11"),
    )
    .await;
    w.advance_to(&mut m, t0() + Duration::minutes(300)).await;
    let i = w.store.instances_by_key("#11", None, 10).await.unwrap();
    assert_eq!(i[0].instance.state, InstanceState::Cancelled);
    assert!(w.findings().await.iter().all(|f| f.instance_key != "#11"));
    m.cancel.cancel();
    m.task.await.unwrap();
}

async fn a_dead_letter_of_an_instance_event_is_a_finding(w: World) {
    let mut m = w.start("node-a");
    let failed = switchyard_store::NewDelivery {
        flow: "orders-to-erp".into(),
        flow_version: "1".into(),
        destination: "erp".into(),
        lane: switchyard_core::delivery::Lane::Standard,
        ordering_key: None,
        hold_on_dead: false,
        state: switchyard_store::DeliveryState::MappingFailed,
        payload: None,
        error: Some("jq: .data.lines is null".into()),
        error_detail: None,
        traceparent: None,
        lease: None,
    };
    w.send(
        "https://shop.example",
        "order.created",
        "o5",
        None,
        order("#5"),
    )
    .await;
    w.send_routed(
        "odoo://erp",
        "sale.order.confirmed",
        "c5",
        None,
        sale("S5", "#5"),
        vec![failed.clone()],
    )
    .await;
    // an event of no instance: nothing to say
    w.send_routed(
        "https://shop.example",
        "order.updated",
        "u5",
        None,
        order("#5"),
        vec![failed],
    )
    .await;
    w.settle(&mut m).await;
    w.advance_to(&mut m, t0() + Duration::seconds(1)).await;
    let f = w.findings().await;
    assert_eq!(
        kinds(&f),
        [("#5".into(), "confirmed".into(), FindingKind::DeliveryFailed)]
    );
    assert!(
        f[0].finding
            .message
            .contains("flow \"orders-to-erp\": jq: .data.lines is null"),
        "{}",
        f[0].finding.message
    );
    assert_eq!(f[0].finding.evidence[0].id, "c5");
    // the checkpoint remembers how far dead letters were looked at: a new owner does not
    // record it again
    m.cancel.cancel();
    m.task.await.unwrap();
    let mut n = w.start("node-b");
    w.advance_to(&mut n, t0() + Duration::seconds(2)).await;
    assert_eq!(w.findings().await.len(), 1);
    n.cancel.cancel();
    n.task.await.unwrap();
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// A week of a nightly job at 01:00 Berlin time, across the change to summer time on
/// 2026-03-29 (01:00 is 00:00 UTC before it and 23:00 UTC the day before after it).
async fn batch_runs_over_a_week_across_daylight_saving(w: World) {
    w.clock.set(utc("2026-03-24T12:00:00Z"));
    let mut m = w.start("node-a");
    w.settle(&mut m).await;
    let beat = |status: &'static str, count: Option<i64>| {
        let mut data = json!({ "monitor": "nightly" });
        if let Some(c) = count {
            data["count"] = json!(c);
        }
        (format!("switchyard.heartbeat.{status}"), data)
    };
    // (when, heartbeat or none: just let time pass)
    let week: Vec<(&str, Option<(String, Value)>)> = vec![
        ("2026-03-25T00:02:00Z", Some(beat("start", None))),
        ("2026-03-25T00:30:00Z", Some(beat("finish", Some(1000)))),
        // 26th: nothing comes; missed at 00:15
        ("2026-03-26T00:14:59Z", None),
        ("2026-03-26T00:15:00Z", None),
        // 27th: missed at 00:15, then it starts late
        ("2026-03-27T00:15:00Z", None),
        ("2026-03-27T00:40:00Z", Some(beat("start", None))),
        ("2026-03-27T01:00:00Z", Some(beat("finish", Some(1050)))),
        // 28th: starts and never finishes
        ("2026-03-28T00:05:00Z", Some(beat("start", None))),
        ("2026-03-28T01:04:59Z", None),
        ("2026-03-28T01:05:00Z", None),
        // 29th, 01:00 CET: succeeds with too few records
        ("2026-03-29T00:01:00Z", Some(beat("start", None))),
        ("2026-03-29T00:30:00Z", Some(beat("finish", Some(500)))),
        // 30th, 01:00 CEST = 29th 23:00 UTC: on time
        ("2026-03-29T23:01:00Z", Some(beat("start", None))),
        ("2026-03-29T23:20:00Z", Some(beat("finish", Some(990)))),
        ("2026-03-30T00:30:00Z", None),
        // 31st, 01:00 CEST = 30th 23:00 UTC: nothing
        ("2026-03-30T23:15:00Z", None),
        ("2026-03-31T12:00:00Z", None),
    ];
    let mut n = 0;
    for (at, beat) in week {
        w.clock.set(utc(at));
        if let Some((ty, data)) = beat {
            n += 1;
            w.send("/switchyard/heartbeats", &ty, &format!("hb{n}"), None, data)
                .await;
        }
        w.settle(&mut m).await;
    }
    assert!(w.findings().await.is_empty());
    let f: Vec<FindingRecord> = w
        .findings_of("batch")
        .await
        .into_iter()
        .filter(|f| f.workflow == "nightly")
        .collect();
    let got: Vec<(FindingKind, DateTime<Utc>)> =
        f.iter().map(|f| (f.finding.kind, f.finding.at)).collect();
    assert_eq!(
        got,
        [
            (FindingKind::MissedRun, utc("2026-03-26T00:15:00Z")),
            (FindingKind::MissedRun, utc("2026-03-27T00:15:00Z")),
            (FindingKind::LateRun, utc("2026-03-27T00:40:00Z")),
            (FindingKind::NeverFinished, utc("2026-03-28T01:05:00Z")),
            (FindingKind::CountOutOfRange, utc("2026-03-29T00:30:00Z")),
            (FindingKind::MissedRun, utc("2026-03-30T23:15:00Z")),
        ],
        "{:#?}",
        f.iter().map(|f| &f.finding.message).collect::<Vec<_>>()
    );
    assert!(
        f.iter()
            .all(|f| f.subject == "batch" && f.workflow == "nightly")
    );
    assert!(
        f[4].finding
            .message
            .contains("500 records; expected 900 to 1100"),
        "{}",
        f[4].finding.message
    );
    assert!(
        f[5].finding.message.contains("2026-03-31 01:00 CEST"),
        "{}",
        f[5].finding.message
    );
    let runs = w
        .store
        .list_runs(&switchyard_store::RunFilter {
            monitor: Some("nightly".into()),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    let slots: Vec<(Option<DateTime<Utc>>, &str)> = runs
        .iter()
        .rev()
        .map(|r| (r.run.slot, r.run.status.as_str()))
        .collect();
    assert_eq!(
        slots,
        [
            (Some(utc("2026-03-25T00:00:00Z")), "succeeded"),
            (Some(utc("2026-03-26T00:00:00Z")), "missed"),
            (Some(utc("2026-03-27T00:00:00Z")), "succeeded"),
            (Some(utc("2026-03-28T00:00:00Z")), "running"),
            (Some(utc("2026-03-29T00:00:00Z")), "succeeded"),
            (Some(utc("2026-03-29T23:00:00Z")), "succeeded"),
            (Some(utc("2026-03-30T23:00:00Z")), "missed"),
        ]
    );
    m.cancel.cancel();
    m.task.await.unwrap();
}

/// A job that must run at least twice an hour, and a run that reports failure.
async fn batch_windows_and_failures(w: World) {
    w.clock.set(utc("2026-11-24T08:10:00Z"));
    let mut m = w.start("node-a");
    w.settle(&mut m).await;
    let mut n = 0;
    let mut beat = |status: &str, message: Option<&str>| {
        n += 1;
        let mut data = json!({ "monitor": "labels" });
        if let Some(msg) = message {
            data["message"] = json!(msg);
        }
        (
            format!("switchyard.heartbeat.{status}"),
            format!("l{n}"),
            data,
        )
    };
    let plan = vec![
        ("2026-11-24T08:20:00Z", Some(beat("start", None))),
        ("2026-11-24T08:21:00Z", Some(beat("finish", None))),
        ("2026-11-24T08:40:00Z", Some(beat("start", None))),
        ("2026-11-24T08:41:00Z", Some(beat("finish", None))),
        ("2026-11-24T09:00:00Z", None),
        ("2026-11-24T09:30:00Z", Some(beat("start", None))),
        (
            "2026-11-24T09:31:00Z",
            Some(beat("fail", Some("printer offline"))),
        ),
        ("2026-11-24T09:59:59Z", None),
        ("2026-11-24T10:00:00Z", None),
    ];
    for (at, b) in plan {
        w.clock.set(utc(at));
        if let Some((ty, id, data)) = b {
            w.send("/switchyard/heartbeats", &ty, &id, None, data).await;
        }
        w.settle(&mut m).await;
    }
    let f: Vec<FindingRecord> = w
        .findings_of("batch")
        .await
        .into_iter()
        .filter(|f| f.workflow == "labels")
        .collect();
    let got: Vec<(FindingKind, DateTime<Utc>)> =
        f.iter().map(|f| (f.finding.kind, f.finding.at)).collect();
    assert_eq!(
        got,
        [
            (FindingKind::RunFailed, utc("2026-11-24T09:31:00Z")),
            (FindingKind::MissedRun, utc("2026-11-24T10:00:00Z")),
        ],
        "{:#?}",
        f.iter().map(|f| &f.finding.message).collect::<Vec<_>>()
    );
    assert!(
        f[0].finding.message.ends_with("failed: printer offline"),
        "{}",
        f[0].finding.message
    );
    assert!(
        f[1].finding.message.contains("1 run(s) started between"),
        "{}",
        f[1].finding.message
    );
    m.cancel.cancel();
    m.task.await.unwrap();
}

/// A changed definition applies to instances that start after it; an open instance keeps
/// the SLAs of the version it started under, across the restart that brought the change.
async fn open_instances_keep_their_definition_version(w: World) {
    let mut m = w.start("node-a");
    w.send(
        "https://shop.example",
        "order.created",
        "o1",
        None,
        order("#1"),
    )
    .await;
    w.settle(&mut m).await;
    m.cancel.cancel();
    m.task.await.unwrap();
    // The SLA of "confirmed" goes from 10 to 20 minutes.
    let changed = CONFIG.replace(
        "sla_seconds = 600\nwarn_seconds = 300",
        "sla_seconds = 1200\nwarn_seconds = 900",
    );
    assert_ne!(changed, CONFIG);
    let config = Config::parse(&changed, "t.toml", Vec::new()).unwrap();
    let new = Arc::new(Workflows::compile(&config).unwrap());
    assert_ne!(new.list[0].version, w.workflows.list[0].version);
    let mut m = w.start_with("node-a", new.clone());
    w.send(
        "https://shop.example",
        "order.created",
        "o2",
        None,
        order("#2"),
    )
    .await;
    w.settle(&mut m).await;
    let one = w.store.instances_by_key("#1", None, 1).await.unwrap();
    let two = w.store.instances_by_key("#2", None, 1).await.unwrap();
    assert_eq!(one[0].instance.version, w.workflows.list[0].version);
    assert_eq!(two[0].instance.version, new.list[0].version);
    w.advance_to(&mut m, t0() + Duration::minutes(10)).await;
    let breaches = |f: Vec<FindingRecord>| -> Vec<(String, DateTime<Utc>)> {
        f.into_iter()
            .filter(|f| f.finding.kind == FindingKind::Breach)
            .map(|f| (f.instance_key, f.finding.at))
            .collect()
    };
    assert_eq!(
        breaches(w.findings().await),
        [("#1".to_string(), t0() + Duration::minutes(10))]
    );
    w.advance_to(&mut m, t0() + Duration::minutes(20)).await;
    assert_eq!(
        breaches(w.findings().await),
        [
            ("#1".to_string(), t0() + Duration::minutes(10)),
            ("#2".to_string(), t0() + Duration::minutes(20))
        ]
    );
    m.cancel.cancel();
    m.task.await.unwrap();
}

macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::sqlite().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(w) = super::postgres().await {
                        super::$name(w).await;
                    }
                }
            )*
        }
    };
}

on_both!(
    findings_at_their_instants_once,
    timers_survive_a_restart_and_a_takeover,
    a_linking_event_merges_provisional_instances,
    events_out_of_order_and_duplicated,
    a_dead_letter_of_an_instance_event_is_a_finding,
    batch_runs_over_a_week_across_daylight_saving,
    batch_windows_and_failures,
    open_instances_keep_their_definition_version,
);
