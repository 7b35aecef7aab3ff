//! `switchyard-bench --monitor`: the workflow monitor in this process against a real store.
//!
//! 1. Loads `--instances` open instances of a four-step order workflow straight into the
//!    store (through `monitor_commit`, in chunks), and reports the store's size per instance
//!    and this process's resident memory (instances are held in the store; memory holds one
//!    page of events and the instances it touches).
//! 2. Stores `--monitor-events` events (half advance existing orders, half start new ones),
//!    then starts the monitor and times how fast it applies them: events/s.
//! 3. Breach detection: `--breaching` instances whose SLA passes at the same instant a few
//!    seconds ahead (real clock); a reader polls the findings every 5 ms and records when
//!    each became visible: delay from the SLA instant to the persisted finding, p50/p99/max.

use crate::{Args, drop_schema, fresh_store, rss_mib};
use chrono::{DateTime, Duration, Utc};
use std::sync::Arc;
use std::time::Instant;
use switchyard_core::config::Config;
use switchyard_core::instance::{FindingKind, Hit, Instance};
use switchyard_core::sources::{BusinessKey, Sources};
use switchyard_core::workflows::Workflows;
use switchyard_core::{CloudEvent, SharedClock, SystemClock};
use switchyard_monitor::{Monitor, Settings};
use switchyard_store::{
    FindingFilter, InstanceWrite, MonitorCommit, NewEvent, SharedStore, StoreOptions,
};
use tokio_util::sync::CancellationToken;

const CONFIG: &str = r#"
[[sources]]
name = "shop"
kind = "cloudevents"
source = "/shop"
keys = { shop_order = ".data.number" }

[[sources]]
name = "odoo"
kind = "cloudevents"
source = "/odoo"
keys = { shop_order = ".data.origin", sale_order = ".data.name" }

[[workflows]]
name = "order_to_cash"
criticality = "P2"
key = "shop_order"
stalled_after_seconds = 86400
dimensions = { warehouse = ".data.warehouse" }

[[workflows.steps]]
name = "ordered"
source = "shop"
type = "order.created"

[[workflows.steps]]
name = "confirmed"
source = "odoo"
type = "sale.order.confirmed"
sla_seconds = 3600
after = ["ordered"]

[[workflows.steps]]
name = "shipped"
source = "odoo"
type = "picking.done"
key = "sale_order"
after = ["confirmed"]

[[workflows.steps]]
name = "invoiced"
source = "odoo"
type = "invoice.posted"
key = "sale_order"
from = "shipped"
sla_seconds = 600
after = ["shipped"]
"#;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn dir_bytes(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path)
        .map(|d| {
            d.filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Writes `n` open instances ("ordered" reached at `started`), `chunk` per commit.
async fn load(
    store: &SharedStore,
    wf: &switchyard_core::workflows::Workflow,
    first: u64,
    n: u64,
    started: chrono::DateTime<Utc>,
) -> anyhow::Result<()> {
    let now = Utc::now();
    let lease = store
        .acquire_lease(
            switchyard_monitor::LEASE,
            "bench-load",
            now,
            Duration::hours(1),
        )
        .await?
        .ok_or_else(|| anyhow::anyhow!("monitor lease held"))?;
    let chunk = 5_000;
    let mut i = first;
    while i < first + n {
        let mut writes = Vec::with_capacity(chunk);
        for j in i..(i + chunk as u64).min(first + n) {
            let hit = Hit {
                step: "ordered".into(),
                seq: -(j as i64) - 1,
                source: "/shop".into(),
                id: format!("o{j}"),
                ty: "order.created".into(),
                occurred_at: started,
                received_at: started,
            };
            let mut inst = Instance::start(
                wf,
                &hit,
                vec![BusinessKey::new("shop_order", format!("#{j}"))],
            );
            inst.add_dimensions([("warehouse".to_string(), format!("WH{}", j % 4))]);
            inst.apply(wf, hit);
            writes.push(InstanceWrite {
                id: None,
                relink: true,
                due_at: inst.next_due(wf),
                instance: inst,
                findings: Vec::new(),
                absorbed: Vec::new(),
            });
        }
        i += writes.len() as u64;
        store
            .monitor_commit(MonitorCommit {
                lease: lease.clone(),
                checkpoint: None,
                versions: Vec::new(),
                writes,
                runs: Vec::new(),
                now,
                findings_only: false,
            })
            .await?;
    }
    store.release_lease(&lease).await?;
    Ok(())
}

fn event(id: String, source: &str, ty: &str, data: serde_json::Value) -> CloudEvent {
    CloudEvent::from_json(serde_json::json!({
        "specversion": "1.0", "id": id, "source": source, "type": ty, "data": data,
    }))
    .expect("a valid event")
    .event
}

struct Running {
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    progress: tokio::sync::watch::Receiver<switchyard_monitor::Progress>,
}

fn start(store: &SharedStore, sources: &Arc<Sources>, workflows: &Arc<Workflows>) -> Running {
    let clock: SharedClock = Arc::new(SystemClock);
    let m = Monitor::new(
        store.clone(),
        clock,
        sources.clone(),
        workflows.clone(),
        "bench",
        Settings::default(),
    );
    let progress = m.progress();
    let cancel = CancellationToken::new();
    let task = tokio::spawn(m.run(cancel.clone()));
    Running {
        cancel,
        task,
        progress,
    }
}

pub async fn bench(args: &Args, backend: &str) -> anyhow::Result<()> {
    let config =
        Config::parse(CONFIG, "bench.toml", Vec::new()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let sources = Arc::new(Sources::compile(&config).map_err(|p| anyhow::anyhow!("{p:?}"))?);
    let workflows = Arc::new(Workflows::compile(&config).map_err(|p| anyhow::anyhow!("{p:?}"))?);
    let wf = workflows.list[0].clone();
    let dir = tempfile::Builder::new()
        .prefix("switchyard-bench-monitor")
        .tempdir()?;
    let (url, schema) = fresh_store(args, backend, dir.path())?;
    let store = switchyard_store::open(&url, &StoreOptions::default()).await?;
    let me = std::process::id();
    println!("\nworkflow monitor on {backend}");
    let rss0 = rss_mib(me);

    // 1. open instances, straight into the store
    let n = args.instances;
    let t = Instant::now();
    load(&store, &wf, 0, n, Utc::now()).await?;
    let load_secs = t.elapsed().as_secs_f64();
    let disk = if backend == "sqlite" {
        format!("{:.0} B", dir_bytes(dir.path()) as f64 / n.max(1) as f64)
    } else {
        "n/a".into()
    };
    println!(
        "open instances loaded: {n} in {load_secs:.1} s ({:.0}/s); store per instance {disk}; this process: {:.1} MiB resident (was {rss0:.1} MiB)",
        n as f64 / load_secs,
        rss_mib(me)
    );

    // 2. apply throughput
    let m = args.monitor_events;
    let mut batch = Vec::new();
    let t = Instant::now();
    for k in 0..m {
        let e = if k % 2 == 0 {
            // advance an existing order (spread over all of them)
            let j = (k.wrapping_mul(2_654_435_761)) % n.max(1);
            event(
                format!("c{j}-{k}"),
                "/odoo",
                "sale.order.confirmed",
                serde_json::json!({"name": format!("S{j}"), "origin": format!("#{j}")}),
            )
        } else {
            let j = n + k;
            event(
                format!("o{j}"),
                "/shop",
                "order.created",
                serde_json::json!({"number": format!("#{j}"), "warehouse": "WH1"}),
            )
        };
        let (keys, _) = sources
            .for_cloudevent(&e.source)
            .expect("declared")
            .extract_keys(&e);
        batch.push(NewEvent {
            event: e,
            received_at: Utc::now(),
            keys: keys
                .into_iter()
                .map(|(n, v)| BusinessKey::new(n, v))
                .collect(),
            deliveries: Vec::new(),
        });
        if batch.len() == 1000 {
            store.append_events(std::mem::take(&mut batch)).await?;
        }
    }
    if !batch.is_empty() {
        store.append_events(batch).await?;
    }
    let head = store.log_head().await?;
    println!("events stored: {m} in {:.1} s", t.elapsed().as_secs_f64());
    let mut r = start(&store, &sources, &workflows);
    let t = Instant::now();
    let mut peak = 0.0f64;
    loop {
        let p = *r.progress.borrow_and_update();
        if p.epoch.is_some() && p.position >= head {
            break;
        }
        peak = peak.max(rss_mib(me));
        let _ =
            tokio::time::timeout(std::time::Duration::from_millis(200), r.progress.changed()).await;
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "applied: {m} events to {n}+ open instances in {secs:.2} s = {:.0} events/s; peak resident {:.1} MiB",
        m as f64 / secs,
        peak.max(rss_mib(me))
    );
    r.cancel.cancel();
    r.task.await?;

    // 3. breach detection delay: `breaching` instances whose "confirmed" SLA (1 h from
    //    the start) passes at one instant, 5 s from now.
    let b = args.breaching;
    // whole seconds: the store keeps microseconds
    let instant = DateTime::from_timestamp(Utc::now().timestamp() + 5, 0).expect("now");
    let started = instant - Duration::seconds(3600);
    load(&store, &wf, 10_000_000_000, b, started).await?;
    let r = start(&store, &sources, &workflows);
    let mut seen: Vec<f64> = Vec::with_capacity(b as usize);
    let mut after = 0;
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    while (seen.len() as u64) < b && Instant::now() < deadline {
        // a finding a query returns was committed before the query started
        let asked = Utc::now();
        let page = store
            .list_findings(&FindingFilter {
                after_id: after,
                kind: Some(FindingKind::Breach),
                limit: 10_000,
                ..Default::default()
            })
            .await?;
        for f in &page {
            after = after.max(f.id);
            if f.finding.at == instant {
                seen.push((asked - f.finding.at).num_microseconds().unwrap_or(0) as f64 / 1000.0);
            }
        }
        if page.is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
    r.cancel.cancel();
    r.task.await?;
    seen.sort_by(f64::total_cmp);
    println!(
        "breach detection, {b} instances breaching at one instant: {} persisted; delay from the SLA instant to the start of the first reader query (one every 5 ms) that saw the finding: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        seen.len(),
        percentile(&seen, 0.5),
        percentile(&seen, 0.99),
        seen.last().copied().unwrap_or(0.0)
    );
    store.close().await;
    drop_schema(args, schema).await
}
