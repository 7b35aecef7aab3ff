//! `switchyard-bench`: ingest throughput and latency of the real binary over loopback HTTP.
//!
//! It starts `switchyard serve` (the sibling binary) on a fresh store, creates an ingest
//! token with `switchyard token create`, and posts 1 KiB structured CloudEvents from this
//! process (the load generator: same machine, separate process, loopback) at several
//! concurrencies. It prints events/s, p50/p99/p99.9 latency and the server's CPU time per
//! event, beside this machine's raw fsync rate measured in the same run on the same
//! filesystem, and the server's resident memory after N events.
//!
//!     cargo run --release --bin switchyard-bench -- --backend both
//!
//! With `--e2e` it measures ingest → delivery instead (see `bench/e2e.rs`): a receiver in
//! this process is the one destination, and every event carries its send time.
//!
//!     cargo run --release --bin switchyard-bench -- --e2e
//!
//! With `--odoo` it measures the Odoo destination against the Odoo simulator (see
//! `bench/odoo.rs`): hub-added latency, and throughput with and without batching.
//!
//!     cargo run --release --bin switchyard-bench -- --odoo --dest-concurrency 4
//!
//! With `--monitor` it measures the workflow monitor in this process (see
//! `bench/monitor.rs`): open instances, events applied per second, breach detection delay.
//!
//!     cargo run --release --bin switchyard-bench -- --monitor --instances 1000000
//!
//! With `--alerts` it measures the alert pipeline of the real binary (see
//! `bench/alerts.rs`): 10,000 findings in a minute across 200 notification groups, the
//! notifications sent against those the route's timings imply, finding → notification.
//!
//!     cargo run --release --bin switchyard-bench -- --alerts

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

// In a directory of its own, so Cargo does not take it for another binary.
#[path = "bench/alerts.rs"]
mod alerts;
#[path = "bench/e2e.rs"]
mod e2e;
#[path = "bench/monitor.rs"]
mod monitor;
#[path = "bench/odoo.rs"]
mod odoo;

#[derive(Parser, Debug)]
#[command(
    about = "Ingest (or, with --e2e, ingest → delivery) benchmark of the real switchyard binary over loopback HTTP"
)]
struct Args {
    /// sqlite, postgres or both.
    #[arg(long, default_value = "sqlite")]
    backend: String,
    /// Concurrent senders, one measurement each.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32,128")]
    concurrency: Vec<usize>,
    /// Seconds measured per concurrency (after a 1 s warm-up).
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Events to have stored before reading the server's resident memory (0 = skip).
    #[arg(long, default_value_t = 1_000_000)]
    rss_events: u64,
    /// Declare the bench's source with three business keys (jq), to measure their cost.
    #[arg(long)]
    keys: bool,
    /// PostgreSQL server for the postgres backend (a fresh schema is used and dropped).
    #[arg(
        long,
        env = "SWITCHYARD_TEST_PG_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    pg_url: String,
    /// End to end instead: ingest → delivery to a receiver in this process (`bench/e2e.rs`).
    #[arg(long)]
    e2e: bool,
    /// End to end: offered rates (events/s, open loop), one measurement each.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000")]
    rates: Vec<u64>,
    /// End to end: seconds each rate is offered (after a 2 s warm-up).
    #[arg(long, default_value_t = 10)]
    e2e_seconds: u64,
    /// End to end: senders of the closed-loop maximum-rate run (0 = skip it).
    #[arg(long, default_value_t = 32)]
    max_concurrency: usize,
    /// End to end: the flow's priority lane.
    #[arg(long, default_value = "critical")]
    priority: String,
    /// End to end: events/s offered to the overload case, where the receiver is slow
    /// (0 = skip it).
    #[arg(long, default_value_t = 5000)]
    overload_rate: u64,
    /// End to end, overload: the receiver answers after this many milliseconds...
    #[arg(long, default_value_t = 20)]
    slow_ms: u64,
    /// ...and the destination allows this many requests in flight (capacity ≈
    /// concurrency × 1000 / slow_ms deliveries/s).
    #[arg(long, default_value_t = 20)]
    slow_concurrency: u32,
    /// End to end: requests in flight to the receiver (the destination's `concurrency`) in
    /// the runs at offered rates and the maximum-rate run.
    #[arg(long, default_value_t = 16)]
    dest_concurrency: u32,
    /// The Odoo destination against the Odoo simulator instead (`bench/odoo.rs`):
    /// hub-added latency, and throughput with and without automatic batching.
    #[arg(long)]
    odoo: bool,
    /// Odoo: events posted one at a time for the latency measurement.
    #[arg(long, default_value_t = 500)]
    odoo_events: u64,
    /// Odoo: events/s offered in the batched throughput run (above what Odoo can take).
    #[arg(long, default_value_t = 1500)]
    odoo_rate: u64,
    /// The workflow monitor instead (`bench/monitor.rs`): open instances held, events
    /// applied per second, breach detection delay.
    #[arg(long)]
    monitor: bool,
    /// Monitor: open instances loaded before the measurements.
    #[arg(long, default_value_t = 1_000_000)]
    instances: u64,
    /// Monitor: events applied in the throughput run.
    #[arg(long, default_value_t = 200_000)]
    monitor_events: u64,
    /// Monitor: instances breaching at the same instant.
    #[arg(long, default_value_t = 10_000)]
    breaching: u64,
    /// The alert pipeline instead (`bench/alerts.rs`): findings in one minute across
    /// notification groups, notifications against the expected number, latencies.
    #[arg(long)]
    alerts: bool,
    /// Alerts: findings raised within the minute.
    #[arg(long, default_value_t = 10_000)]
    alert_findings: u64,
    /// Alerts: notification groups (warehouses) they fall into.
    #[arg(long, default_value_t = 200)]
    alert_groups: u64,
    /// End to end: write every delivery (event number, sent and received ms after the run's
    /// start, latency ms) to DIR/run-N.csv.
    #[arg(long)]
    dump: Option<PathBuf>,
}

struct Server {
    child: Child,
    base: String,
    /// Role `ingest`.
    token: String,
    /// Role `viewer` (reads deliveries and flows).
    read_token: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let p = me.with_file_name(name);
    if !p.exists() {
        bail!(
            "{} not found next to the bench; build it with `cargo build --release`",
            p.display()
        );
    }
    Ok(p)
}

/// The bench's source declared with three jq business keys (`--keys`).
const KEYS_SOURCE: &str = r#"
[[sources]]
name = "bench"
kind = "cloudevents"
source = "https://shop.example.com/bench"
keys = { shop_order = ".subject", customer = ".data.customer", order = ".data.order" }
"#;

fn token_create(bin: &Path, config: &Path, role: &str) -> anyhow::Result<String> {
    let out = Command::new(bin)
        .args(["--config"])
        .arg(config)
        .args(["token", "create", "--role", role, "--name"])
        .arg(format!("bench-{role}"))
        .output()?;
    if !out.status.success() {
        bail!(
            "token create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

/// Starts `switchyard serve` on `store_url` with `extra` appended to its configuration
/// (sources, destinations, flows), after creating its tokens.
fn start_server(dir: &Path, store_url: &str, extra: &str) -> anyhow::Result<Server> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let config = dir.join("bench.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[store]\nurl = \"{store_url}\"\npool_size = 16\nwriter_queue = 8192\n[log]\nlevel = \"warn\"\n{extra}"
        ),
    )?;
    let bin = sibling("switchyard")?;
    let token = token_create(&bin, &config, "ingest")?;
    let read_token = token_create(&bin, &config, "viewer")?;
    let child = Command::new(&bin)
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = write!(
                s,
                "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            );
            let mut buf = String::new();
            use std::io::Read;
            let _ = s.read_to_string(&mut buf);
            if buf.starts_with("HTTP/1.1 200") {
                break;
            }
        }
        if Instant::now() > deadline {
            bail!("server did not become ready");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(Server {
        child,
        base,
        token,
        read_token,
    })
}

/// Raw fsync rate of the filesystem holding `dir`: 4 KiB write + fdatasync, for 2 s.
fn fsync_rate(dir: &Path) -> anyhow::Result<f64> {
    let path = dir.join("fsync.probe");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)?;
    let block = vec![7u8; 4096];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(2) {
        f.write_all(&block)?;
        f.sync_data()?;
        n += 1;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    drop(f);
    std::fs::remove_file(&path)?;
    Ok(rate)
}

/// User + system CPU seconds of a process, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let (user, system) = cpu_split(pid);
    user + system
}

/// User and system CPU seconds of a process, from /proc.
fn cpu_split(pid: u32) -> (f64, f64) {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return (0.0, 0.0);
    };
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let ut: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let st: f64 = f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    (ut / ticks, st / ticks)
}

/// CPU seconds the whole machine was busy (all cores, every process), from /proc/stat.
fn machine_busy_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return 0.0;
    };
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0.0;
    };
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal …: busy = all but idle and iowait
    let total: f64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0.0) + v.get(4).copied().unwrap_or(0.0);
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (total - idle) / ticks
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn body(id: &str, pad: &str) -> String {
    json!({
        "specversion": "1.0", "id": id, "source": "https://shop.example.com/bench",
        "type": "shop.order.created", "subject": "#1042", "time": "2026-11-23T08:00:00Z",
        "datacontenttype": "application/json",
        "data": {"order": "#1042", "customer": "Acme Industrial", "pad": pad}
    })
    .to_string()
}

struct Run {
    events: u64,
    secs: f64,
    lat_us: Vec<u32>,
    server_cpu: f64,
    client_cpu: f64,
    errors: u64,
}

async fn run_load(
    server: &Server,
    concurrency: usize,
    duration: Duration,
    prefix: &str,
    max_events: Option<u64>,
) -> anyhow::Result<Run> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let pad = "x".repeat(1024 - body("bench-00000000-000-00000000", "").len());
    let sent = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let pid = server.child.id();
    let cpu0 = cpu_seconds(pid);
    let me0 = cpu_seconds(std::process::id());
    let start = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..concurrency {
        let http = http.clone();
        let url = format!("{}/v1/events", server.base);
        let token = server.token.clone();
        let pad = pad.clone();
        let prefix = prefix.to_string();
        let sent = sent.clone();
        let errors = errors.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(100_000);
            let mut n = 0u64;
            while start.elapsed() < duration {
                if let Some(max) = max_events
                    && sent.fetch_add(1, Ordering::Relaxed) >= max
                {
                    break;
                }
                let id = format!("{prefix}-{t:03}-{n:08}");
                n += 1;
                let b = body(&id, &pad);
                let t0 = Instant::now();
                let r = http
                    .post(&url)
                    .bearer_auth(&token)
                    .header("content-type", "application/cloudevents+json")
                    .body(b)
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().as_u16() == 202 => {
                        lat.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32)
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            lat
        }));
    }
    let mut lat_us = Vec::new();
    for t in tasks {
        lat_us.extend(t.await?);
    }
    let secs = start.elapsed().as_secs_f64();
    lat_us.sort_unstable();
    Ok(Run {
        events: lat_us.len() as u64,
        secs,
        lat_us,
        server_cpu: cpu_seconds(pid) - cpu0,
        client_cpu: cpu_seconds(std::process::id()) - me0,
        errors: errors.load(Ordering::Relaxed),
    })
}

fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1000.0
}

/// A fresh store for one server: a new SQLite file in `dir`, or a new PostgreSQL schema
/// (returned, to be dropped with [`drop_schema`]).
fn fresh_store(args: &Args, backend: &str, dir: &Path) -> anyhow::Result<(String, Option<String>)> {
    Ok(match backend {
        "sqlite" => (format!("sqlite://{}", dir.join("bench.db").display()), None),
        "postgres" => {
            let schema = format!(
                "sy_bench_{}",
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            );
            let sep = if args.pg_url.contains('?') { '&' } else { '?' };
            (format!("{}{sep}schema={schema}", args.pg_url), Some(schema))
        }
        other => bail!("unknown backend {other}"),
    })
}

async fn drop_schema(args: &Args, schema: Option<String>) -> anyhow::Result<()> {
    if let Some(schema) = schema {
        let (client, conn) = tokio_postgres::connect(&args.pg_url, tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .await?;
    }
    Ok(())
}

async fn bench_backend(args: &Args, backend: &str) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("switchyard-bench-")
        .tempdir()?;
    let (url, schema) = fresh_store(args, backend, dir.path())?;
    let fsync = fsync_rate(dir.path()).context("measuring fsync")?;
    let server = start_server(dir.path(), &url, if args.keys { KEYS_SOURCE } else { "" })?;

    println!(
        "\n### {backend}{}\n",
        if args.keys {
            " (declared source, 3 business keys per event)"
        } else {
            ""
        }
    );
    println!(
        "raw fsync rate of {} (4 KiB write + fdatasync): {fsync:.0}/s",
        dir.path().display()
    );
    println!(
        "load generator: this process, same 2-core machine, loopback HTTP/1.1 keep-alive; 1 KiB structured CloudEvents\n"
    );
    println!(
        "| concurrency | events/s | p50 ms | p99 ms | p99.9 ms | server CPU µs/event | loadgen CPU µs/event | errors |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut total = 0u64;
    for &c in &args.concurrency {
        let _ = run_load(
            &server,
            c,
            Duration::from_secs(1),
            &format!("warm{c}"),
            None,
        )
        .await?;
        let r = run_load(
            &server,
            c,
            Duration::from_secs(args.seconds),
            &format!("c{c}"),
            None,
        )
        .await?;
        total += r.events;
        println!(
            "| {c} | {:.0} | {:.2} | {:.2} | {:.2} | {:.0} | {:.0} | {} |",
            r.events as f64 / r.secs,
            pct(&r.lat_us, 0.50),
            pct(&r.lat_us, 0.99),
            pct(&r.lat_us, 0.999),
            r.server_cpu * 1e6 / r.events.max(1) as f64,
            r.client_cpu * 1e6 / r.events.max(1) as f64,
            r.errors
        );
    }
    if args.rss_events > 0 {
        let rest = args.rss_events.saturating_sub(total);
        let r = run_load(&server, 32, Duration::from_secs(3600), "rss", Some(rest)).await?;
        println!(
            "\nresident memory of the server after {} events: {:.1} MiB ({} more events at {:.0}/s to get there)",
            total + r.events,
            rss_mib(server.child.id()),
            r.events,
            r.events as f64 / r.secs
        );
    }
    drop(server);
    drop_schema(args, schema).await
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    println!(
        "switchyard-bench {} on {} cores",
        env!("CARGO_PKG_VERSION"),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let backends: Vec<&str> = match args.backend.as_str() {
        "both" => vec!["sqlite", "postgres"],
        b => vec![b],
    };
    if args.odoo {
        return odoo::bench(&args).await;
    }
    if args.alerts {
        for b in backends {
            alerts::bench(&args, b).await?;
        }
        return Ok(());
    }
    if args.monitor {
        for b in backends {
            monitor::bench(&args, b).await?;
        }
        return Ok(());
    }
    for b in backends {
        if args.e2e {
            e2e::bench_backend(&args, b).await?;
        } else {
            bench_backend(&args, b).await?;
        }
    }
    Ok(())
}
