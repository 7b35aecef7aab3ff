//! `switchyard-bench --odoo`: the Odoo destination against the Odoo simulator.
//!
//! The simulator runs inside this process on loopback HTTP, behind a layer that records
//! when each request arrived and was answered. The real `switchyard serve` (SQLite) upserts
//! one `res.partner` per event by external id (`load`).
//!
//! - **Hub-added latency** (simulator with zero cost): events are posted one at a time;
//!   for each, the time from posting it to the simulator answering its `load`, minus the
//!   time the simulator spent serving that event's calls. What is left is the hub's:
//!   ingest, commit, hand-off, batching, the client's encoding and the loopback hops.
//! - **Throughput** (simulator with its default cost: 30 ms per call, 15 ms per read,
//!   1.5 ms per record, 2 workers): events are offered faster than Odoo can take them, and
//!   partners created per second are counted in the simulator over a window, with automatic
//!   batching (`batch_size = 100`) and with one record per call (`batch_size = 1`). The
//!   simulator's own batched ceiling is measured the same way by this process calling
//!   `load` with 100 new rows directly, as many calls in flight as the hub has.
//!
//! With `SWITCHYARD_BENCH_SIM_CPU` set it also prints, per throughput run, the calls the
//! simulator served in the window and the hub's CPU time, and the simulator's own `load`
//! rate with zero cost (what its implementation, not the simulated cost, allows).

use super::start_server;
use anyhow::Context;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchyard_core::SystemClock;
use switchyard_odoo::{CallOptions, OdooClient, OdooConfig, Protocol};
use switchyard_odoo_sim::{SimConfig, Simulator};

/// Requests the simulator served: (arrived, answered, whether it was a `load`).
#[derive(Default)]
struct Served {
    calls: Mutex<Vec<(Instant, Instant, bool)>>,
}

struct Sim {
    sim: Simulator,
    url: String,
    served: Arc<Served>,
}

async fn start_sim(config: SimConfig) -> anyhow::Result<Sim> {
    let sim = Simulator::new(config, Arc::new(SystemClock));
    let served = Arc::new(Served::default());
    let log = served.clone();
    let app = switchyard_odoo_sim::http::router(sim.clone()).layer(axum::middleware::from_fn(
        move |req: Request, next: Next| {
            let log = log.clone();
            async move {
                let start = Instant::now();
                let rpc = req.uri().path() == "/jsonrpc";
                let (parts, body) = req.into_parts();
                let bytes = axum::body::to_bytes(body, usize::MAX)
                    .await
                    .unwrap_or_default();
                let load = rpc && contains(&bytes, b"\"load\"");
                let req = Request::from_parts(parts, axum::body::Body::from(bytes));
                let resp: Response = next.run(req).await;
                let (parts, body) = resp.into_parts();
                // the answer is complete once its body is
                let bytes = axum::body::to_bytes(body, usize::MAX)
                    .await
                    .unwrap_or_default();
                log.calls
                    .lock()
                    .unwrap()
                    .push((start, Instant::now(), load));
                Response::from_parts(parts, axum::body::Body::from(bytes))
            }
        },
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(Sim { sim, url, served })
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn hub_config(dir: &std::path::Path, sim_url: &str, batch_size: u32, concurrency: u32) -> String {
    let secret = dir.join("odoo-password");
    std::fs::write(&secret, "admin").expect("secret file");
    format!(
        r#"
[[odoo]]
name = "sim"
url = "{sim_url}"
database = "odoopeer"
login = "admin"
secret = "file:{}"
protocol = "jsonrpc"

[probes]
destinations = false

[[destinations]]
name = "erp"
type = "odoo"
odoo = "sim"
concurrency = {concurrency}

[[flows]]
name = "customers"
destination = "erp"
match = {{ source = "https://shop.example.com/bench", type = ["shop.customer.updated"] }}
map = ".data"
[flows.odoo]
model = "res.partner"
operation = "upsert"
external_id = '"shop.customer_" + (.id | tostring)'
values = "del(.id)"
batch_size = {batch_size}
"#,
        secret.display()
    )
}

fn event(n: u64, tag: &str) -> String {
    json!({
        "specversion": "1.0",
        "id": format!("{tag}-{n}"),
        "source": "https://shop.example.com/bench",
        "type": "shop.customer.updated",
        "data": {"id": format!("{tag}{n}"), "name": format!("Bench Customer {tag}{n}"),
                 "email": format!("c{n}@example.com"), "city": "Utrecht"}
    })
    .to_string()
}

/// Posts one event to the hub at `base` with ingest `token`.
async fn post(http: &reqwest::Client, base: &str, token: &str, body: String) -> anyhow::Result<()> {
    let r = http
        .post(format!("{base}/v1/events"))
        .bearer_auth(token)
        .header("content-type", "application/cloudevents+json")
        .body(body)
        .send()
        .await?;
    anyhow::ensure!(r.status().is_success(), "ingest answered {}", r.status());
    Ok(())
}

fn partners(sim: &Simulator, tag: &str) -> usize {
    let prefix = format!("Bench Customer {tag}");
    sim.with_state(|_, st| {
        st.tables.table("res.partner").map_or(0, |t| {
            t.rows
                .values()
                .filter(|r| {
                    r.get("name")
                        .and_then(Value::as_str)
                        .is_some_and(|n| n.starts_with(&prefix))
                })
                .count()
        })
    })
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

async fn latency(events: u64) -> anyhow::Result<()> {
    let sim = start_sim(SimConfig::instant()).await?;
    let dir = tempfile::tempdir()?;
    let store = format!("sqlite://{}", dir.path().join("hub.db").display());
    let server = start_server(
        dir.path(),
        &store,
        &hub_config(dir.path(), &sim.url, 100, 2),
    )?;
    let http = reqwest::Client::new();
    let warmup = 20;
    let mut added = Vec::new();
    let mut total = Vec::new();
    for n in 0..events + warmup {
        sim.served.calls.lock().unwrap().clear();
        let sent = Instant::now();
        post(&http, &server.base, &server.token, event(n, "L")).await?;
        let deadline = sent + Duration::from_secs(10);
        let landed = loop {
            let loaded = sim
                .served
                .calls
                .lock()
                .unwrap()
                .iter()
                .find(|c| c.2)
                .map(|c| c.1);
            if let Some(t) = loaded {
                break t;
            }
            anyhow::ensure!(Instant::now() < deadline, "event {n} never reached Odoo");
            tokio::time::sleep(Duration::from_micros(200)).await;
        };
        let sim_time: Duration = sim
            .served
            .calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.1 <= landed)
            .map(|c| c.1 - c.0)
            .sum();
        if n >= warmup {
            let t = landed - sent;
            total.push(t.as_secs_f64() * 1e3);
            added.push((t - sim_time.min(t)).as_secs_f64() * 1e3);
        }
        // let the hub record the result before the next event
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    anyhow::ensure!(partners(&sim.sim, "L") as u64 == events + warmup);
    added.sort_by(f64::total_cmp);
    total.sort_by(f64::total_cmp);
    println!(
        "\n### Hub-added latency (simulator with zero cost, one event at a time, {events} events)\n"
    );
    println!("| measure | p50 ms | p99 ms | max ms |");
    println!("|---|---:|---:|---:|");
    println!(
        "| posted → load answered | {:.2} | {:.2} | {:.2} |",
        pct(&total, 0.5),
        pct(&total, 0.99),
        total.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "| hub-added (less the simulator's own time) | {:.2} | {:.2} | {:.2} |",
        pct(&added, 0.5),
        pct(&added, 0.99),
        added.last().copied().unwrap_or(f64::NAN)
    );
    Ok(())
}

/// Partners created per second over `window` while events are offered at `rate`/s.
async fn throughput(
    batch_size: u32,
    concurrency: u32,
    rate: u64,
    window: Duration,
) -> anyhow::Result<(f64, Vec<usize>)> {
    let sim = start_sim(SimConfig::default()).await?;
    let dir = tempfile::tempdir()?;
    let store = format!("sqlite://{}", dir.path().join("hub.db").display());
    let server = start_server(
        dir.path(),
        &store,
        &hub_config(dir.path(), &sim.url, batch_size, concurrency),
    )?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    let tag = format!("T{batch_size}x");
    let warmup = Duration::from_secs(3);
    let total = rate * (warmup + window).as_secs() + rate;
    let start = Instant::now();
    let sender = {
        let http = http.clone();
        let base = server.base.clone();
        let token = server.token.clone();
        let tag = tag.clone();
        tokio::spawn(async move {
            let sem = Arc::new(tokio::sync::Semaphore::new(32));
            for n in 0..total {
                let at = start + Duration::from_secs_f64(n as f64 / rate as f64);
                tokio::time::sleep_until(at.into()).await;
                let permit = sem.clone().acquire_owned().await.unwrap();
                let (http, base, token, body) =
                    (http.clone(), base.clone(), token.clone(), event(n, &tag));
                tokio::spawn(async move {
                    // open loop: a refused event only lowers what can be created
                    let _ = post(&http, &base, &token, body).await;
                    drop(permit);
                });
            }
        })
    };
    tokio::time::sleep_until((start + warmup).into()).await;
    let before = partners(&sim.sim, &tag);
    let loads_before = sim.sim.calls().len();
    tokio::time::sleep(window).await;
    let after = partners(&sim.sim, &tag);
    let calls = sim.sim.calls();
    if std::env::var_os("SWITCHYARD_BENCH_SIM_CPU").is_some() {
        let mut by: std::collections::BTreeMap<String, usize> = Default::default();
        for c in &calls[loads_before..] {
            *by.entry(format!("{}.{}", c.model, c.method)).or_default() += 1;
        }
        eprintln!(
            "calls in the window: {by:?}; hub CPU {:.2} s",
            super::cpu_seconds(server.child.id())
        );
    }
    let sizes: Vec<usize> = calls[loads_before..]
        .iter()
        .filter(|c| c.method == "load")
        .map(|c| c.records)
        .collect();
    sender.abort();
    drop(server);
    Ok(((after - before) as f64 / window.as_secs_f64(), sizes))
}

/// Rows/s the simulator takes through `load` calls of `batch` new rows, `concurrency` at once.
async fn ceiling(
    config: SimConfig,
    batch: usize,
    concurrency: usize,
    window: Duration,
) -> anyhow::Result<f64> {
    let sim = start_sim(config).await?;
    let mut config = OdooConfig::new(&sim.url, "odoopeer", "admin", "admin");
    config.protocol = Protocol::JsonRpc;
    let client = Arc::new(OdooClient::new(config)?);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            let mut rows = 0usize;
            while start.elapsed() < window {
                let data: Vec<Value> = (0..batch)
                    .map(|i| {
                        let k = format!("C{w}_{n}_{i}");
                        json!([
                            format!("shop.ceiling_{k}"),
                            format!("Bench Customer {k}"),
                            format!("{k}@example.com"),
                            "Utrecht"
                        ])
                    })
                    .collect();
                let answer = client
                    .execute_kw(
                        "res.partner",
                        "load",
                        vec![json!(["id", "name", "email", "city"]), json!(data)],
                        Default::default(),
                        &CallOptions::default(),
                    )
                    .await
                    .context("load")?;
                anyhow::ensure!(answer["ids"].is_array(), "load refused: {answer}");
                n += 1;
                rows += batch;
            }
            anyhow::Ok(rows)
        }));
    }
    let mut rows = 0;
    for t in tasks {
        rows += t.await??;
    }
    Ok(rows as f64 / start.elapsed().as_secs_f64())
}

pub async fn bench(args: &super::Args) -> anyhow::Result<()> {
    latency(args.odoo_events).await?;
    let window = Duration::from_secs(args.e2e_seconds);
    let c = args.dest_concurrency;
    println!(
        "\n### Throughput into the simulator (default cost: 30 ms/call, 15 ms/read, 1.5 ms/record, 2 workers; destination concurrency {c}; {}s window after 3 s)\n",
        window.as_secs()
    );
    println!(
        "| mode | offered events/s | partners created/s | load calls in window | mean rows per load |"
    );
    println!("|---|---:|---:|---:|---:|");
    let (one, sizes1) = throughput(1, c, 200, window).await?;
    let row = |label: &str, offered: u64, rate: f64, sizes: &[usize]| {
        println!(
            "| {label} | {offered} | {rate:.1} | {} | {:.1} |",
            sizes.len(),
            sizes.iter().sum::<usize>() as f64 / sizes.len().max(1) as f64
        )
    };
    row("one record per call (batch_size = 1)", 200, one, &sizes1);
    let (batched, sizes) = throughput(100, c, args.odoo_rate, window).await?;
    row(
        "automatic batching (batch_size = 100)",
        args.odoo_rate,
        batched,
        &sizes,
    );
    if std::env::var_os("SWITCHYARD_BENCH_SIM_CPU").is_some() {
        let free = ceiling(SimConfig::instant(), 100, c as usize, window).await?;
        println!("(simulator with zero cost: {free:.0} rows/s through load)");
    }
    let top = ceiling(SimConfig::default(), 100, c as usize, window).await?;
    println!(
        "| simulator's own ceiling (`load` of 100 new rows, {c} in flight, no hub) | — | {top:.1} | — | 100 |"
    );
    println!(
        "\nbatched ÷ one per call: **{:.1}×**; batched ÷ ceiling: **{:.1} %**",
        batched / one,
        batched / top * 100.0
    );
    Ok(())
}
