//! `switchyard-bench --e2e`: ingest → delivery, end to end, over loopback HTTP.
//!
//! The real release `switchyard serve` runs as a child process with one destination (a
//! receiver inside this process: axum on loopback) and one flow (`map = ".data"`). This
//! process posts 1 KiB structured CloudEvents, one per request, each carrying its send time
//! (`data.sent_ns`, from a monotonic clock the load generator and the receiver share); the
//! receiver records receive time − send time for every delivery.
//!
//! - Offered rates (`--rates`): open loop, sends scheduled at the rate whatever the answers
//!   (one task per request), for `--e2e-seconds`; then everything accepted must arrive.
//! - Maximum: closed loop, `--max-concurrency` senders, the delivered rate sustained during
//!   the window.
//! - Overload: a fresh server whose destination allows `--slow-concurrency` requests in
//!   flight, a receiver that answers after `--slow-ms` (capacity ≈ 1,000/s with the
//!   defaults), and `--overload-rate` offered: ingest must keep answering 202 while the
//!   delivered rate holds at the receiver's capacity and the backlog grows.
//!
//! Server CPU is the `switchyard serve` process only (from the first send until the last
//! delivery of the run arrived), divided by the events delivered. Load generator, receiver
//! and server share this machine's cores.

use super::{
    Args, Server, cpu_seconds, cpu_split, drop_schema, fresh_store, machine_busy_seconds, pct,
    rss_mib, start_server,
};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde::Deserialize;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// Requests the open-loop generator lets be in flight at once; a send due beyond that is
/// counted as an error (the generator could not keep the rate), never queued.
const MAX_IN_FLIGHT: usize = 4096;

/// Nanoseconds on the monotonic clock shared by the load generator and the receiver
/// (`CLOCK_MONOTONIC`, so a dump lines up with other tools' timestamps on this machine).
fn mono_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// What the receiver reads from each delivered payload (the event's `data`).
#[derive(Deserialize)]
struct Stamp {
    run: u32,
    n: u64,
    sent_ns: u64,
}

#[derive(Clone, Copy)]
struct Arrival {
    run: u32,
    n: u64,
    recv_ns: u64,
    latency_ns: u64,
}

#[derive(Default)]
struct Receiver {
    /// Answer after this many milliseconds (the slow receiver of the overload case).
    delay_ms: AtomicU64,
    arrivals: Mutex<Vec<Arrival>>,
    unreadable: AtomicU64,
}

impl Receiver {
    fn of_run(&self, run: u32) -> Vec<Arrival> {
        self.arrivals
            .lock()
            .expect("arrivals")
            .iter()
            .filter(|a| a.run == run)
            .copied()
            .collect()
    }

    fn count(&self, run: u32) -> u64 {
        self.arrivals
            .lock()
            .expect("arrivals")
            .iter()
            .filter(|a| a.run == run)
            .count() as u64
    }
}

async fn receive(State(r): State<Arc<Receiver>>, body: Bytes) -> StatusCode {
    let recv_ns = mono_ns();
    let Ok(s) = serde_json::from_slice::<Stamp>(&body) else {
        r.unreadable.fetch_add(1, Ordering::Relaxed);
        return StatusCode::BAD_REQUEST;
    };
    r.arrivals.lock().expect("arrivals").push(Arrival {
        run: s.run,
        n: s.n,
        recv_ns,
        latency_ns: recv_ns.saturating_sub(s.sent_ns),
    });
    let delay = r.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    StatusCode::NO_CONTENT
}

/// The receiver: axum on a loopback port of this process. Returns its URL.
async fn start_receiver() -> anyhow::Result<(String, Arc<Receiver>)> {
    let r = Arc::new(Receiver::default());
    let app = Router::new()
        .route("/in", post(receive))
        .with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("receiver stopped: {e}");
        }
    });
    Ok((format!("http://{addr}/in"), r))
}

/// One destination (the receiver) and one flow sending every bench event's `.data` to it.
fn flow_config(receiver: &str, priority: &str, concurrency: u32) -> String {
    format!(
        r#"
[[destinations]]
name = "receiver"
url = "{receiver}"
concurrency = {concurrency}

[[flows]]
name = "bench"
destination = "receiver"
priority = "{priority}"
match = {{ source = "https://shop.example.com/bench", type = ["shop.order.created"] }}
map = ".data"
"#
    )
}

fn event_body(run: u32, n: u64, pad: &str) -> String {
    format!(
        r##"{{"specversion":"1.0","id":"e2e-{run}-{n}","source":"https://shop.example.com/bench","type":"shop.order.created","subject":"#1042","time":"2026-11-23T08:00:00Z","datacontenttype":"application/json","data":{{"run":{run},"n":{n},"sent_ns":{},"order":"#1042","customer":"Acme Industrial","pad":"{pad}"}}}}"##,
        mono_ns()
    )
}

/// Padding that makes an event about 1 KiB.
fn pad() -> Arc<str> {
    let base = event_body(99, 9_999_999, "").len();
    "x".repeat(1024usize.saturating_sub(base)).into()
}

/// What the load generator saw.
#[derive(Default)]
struct Load {
    accepted: u64,
    throttled: u64,
    errors: u64,
    ingest_us: Vec<u32>,
    /// Monotonic start of the window.
    start_ns: u64,
    window: Duration,
}

impl Load {
    fn record(&mut self, (status, us): (u16, u32)) {
        match status {
            202 => {
                self.accepted += 1;
                self.ingest_us.push(us);
            }
            429 => self.throttled += 1,
            _ => self.errors += 1,
        }
    }
}

#[derive(Clone)]
struct Sender {
    http: reqwest::Client,
    url: Arc<str>,
    token: Arc<str>,
    pad: Arc<str>,
}

impl Sender {
    fn new(server: &Server) -> anyhow::Result<Sender> {
        Ok(Sender {
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(256)
                .tcp_nodelay(true)
                .build()?,
            url: format!("{}/v1/events", server.base).into(),
            token: server.token.as_str().into(),
            pad: pad(),
        })
    }

    /// Posts event `n` of `run`: (status, 0 on a transport error; microseconds).
    async fn send(&self, run: u32, n: u64) -> (u16, u32) {
        let body = event_body(run, n, &self.pad);
        let t0 = Instant::now();
        let r = self
            .http
            .post(&*self.url)
            .bearer_auth(&*self.token)
            .header("content-type", "application/cloudevents+json")
            .body(body)
            .send()
            .await;
        let us = t0.elapsed().as_micros().min(u32::MAX as u128) as u32;
        match r {
            Ok(r) => {
                let status = r.status().as_u16();
                let _ = r.bytes().await;
                (status, us)
            }
            Err(_) => (0, us),
        }
    }
}

/// Open loop: event `n` is sent at `n / rate` seconds after the start, answered or not.
async fn open_loop(sender: &Sender, run: u32, rate: u64, window: Duration) -> Load {
    let total = (rate as f64 * window.as_secs_f64()) as u64;
    let mut load = Load {
        start_ns: mono_ns(),
        window,
        ..Load::default()
    };
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut n = 0u64;
    while n < total {
        tick.tick().await;
        let due = ((start.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
        while let Some(r) = tasks.try_join_next() {
            load.record(r.unwrap_or((0, 0)));
        }
        while n < due {
            if tasks.len() >= MAX_IN_FLIGHT {
                load.errors += 1;
            } else {
                let s = sender.clone();
                tasks.spawn(async move { s.send(run, n).await });
            }
            n += 1;
        }
    }
    while let Some(r) = tasks.join_next().await {
        load.record(r.unwrap_or((0, 0)));
    }
    load
}

/// Closed loop: `concurrency` senders, each posting its next event when the last is answered.
async fn closed_loop(sender: &Sender, run: u32, concurrency: usize, window: Duration) -> Load {
    let mut load = Load {
        start_ns: mono_ns(),
        window,
        ..Load::default()
    };
    let start = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    for _ in 0..concurrency {
        let s = sender.clone();
        let next = next.clone();
        tasks.spawn(async move {
            let mut out = Vec::new();
            while start.elapsed() < window {
                let n = next.fetch_add(1, Ordering::Relaxed);
                out.push(s.send(run, n).await);
            }
            out
        });
    }
    while let Some(r) = tasks.join_next().await {
        for x in r.unwrap_or_default() {
            load.record(x);
        }
    }
    load
}

/// Waits until `expected` deliveries of `run` arrived, or `timeout`; the seconds it took.
async fn drain(r: &Receiver, run: u32, expected: u64, timeout: Duration) -> (u64, f64) {
    let start = Instant::now();
    loop {
        let got = r.count(run);
        if got >= expected || start.elapsed() > timeout {
            return (got, start.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Deliveries of the bench flow still pending in the store (scheduled, delivering,
/// retry_wait), from `GET /v1/flows`.
async fn store_backlog(server: &Server) -> anyhow::Result<i64> {
    let v: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/v1/flows", server.base))
        .bearer_auth(&server.read_token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let counts = &v["flows"][0]["deliveries"];
    Ok(["scheduled", "delivering", "retry_wait"]
        .iter()
        .map(|s| counts[*s].as_i64().unwrap_or(0))
        .sum())
}

/// One measured run, after its deliveries arrived (or the drain timed out).
struct Measured {
    load: Load,
    /// Distinct events of the run delivered, in all.
    delivered: u64,
    /// ... of which during the send window.
    in_window: u64,
    duplicates: u64,
    latency_us: Vec<u32>,
    /// Server process CPU seconds: user, system.
    server_cpu: (f64, f64),
    /// This process (load generator and receiver).
    bench_cpu: f64,
    /// Cores the rest of the machine kept busy meanwhile (other processes, the kernel's
    /// own threads).
    other_cores: f64,
    rss: f64,
    drain_secs: f64,
}

impl Measured {
    fn row(&self, label: &str, offered: &str) -> String {
        let w = self.load.window.as_secs_f64();
        let per = |s: f64| s * 1e6 / self.delivered.max(1) as f64;
        let (user, system) = self.server_cpu;
        format!(
            "| {label} | {offered} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} ({:.0} user + {:.0} sys) | {:.0} | {:.2} | {:.1} | {} | {} |",
            self.load.accepted as f64 / w,
            self.in_window as f64 / w,
            pct(&self.latency_us, 0.50),
            pct(&self.latency_us, 0.99),
            pct(&self.latency_us, 0.999),
            pct(&self.load.ingest_us, 0.99),
            per(user + system),
            per(user),
            per(system),
            per(self.bench_cpu),
            self.other_cores,
            self.rss,
            self.load.throttled,
            self.load.errors
                + (self.load.accepted.saturating_sub(self.delivered))
                + self.duplicates,
        )
    }
}

async fn measure(
    server: &Server,
    r: &Receiver,
    run: u32,
    drain_timeout: Duration,
    dump: Option<&std::path::Path>,
    load: impl std::future::Future<Output = Load>,
) -> Measured {
    let pid = server.child.id();
    let me = std::process::id();
    let (wall0, busy0, me0) = (Instant::now(), machine_busy_seconds(), cpu_seconds(me));
    let (user0, sys0) = cpu_split(pid);
    let mut load = load.await;
    let (_, drain_secs) = drain(r, run, load.accepted, drain_timeout).await;
    let (user1, sys1) = cpu_split(pid);
    let server_cpu = (user1 - user0, sys1 - sys0);
    let bench_cpu = cpu_seconds(me) - me0;
    let other_cores = (machine_busy_seconds() - busy0 - bench_cpu - server_cpu.0 - server_cpu.1)
        .max(0.0)
        / wall0.elapsed().as_secs_f64();
    let arrivals = r.of_run(run);
    let end_ns = load.start_ns + load.window.as_nanos() as u64;
    let mut seen = HashSet::with_capacity(arrivals.len());
    let mut in_window = 0;
    let mut latency_us = Vec::with_capacity(arrivals.len());
    for a in &arrivals {
        if seen.insert(a.n) {
            if a.recv_ns <= end_ns {
                in_window += 1;
            }
            latency_us.push((a.latency_ns / 1000).min(u32::MAX as u64) as u32);
        }
    }
    latency_us.sort_unstable();
    load.ingest_us.sort_unstable();
    if let Some(dir) = dump {
        // The header names the run's start on CLOCK_MONOTONIC.
        let mut csv = format!(
            "n,sent_ms,recv_ms,latency_ms,start_monotonic_s={:.6}\n",
            load.start_ns as f64 / 1e9
        );
        for a in &arrivals {
            let ms = |ns: u64| ns.saturating_sub(load.start_ns) as f64 / 1e6;
            csv.push_str(&format!(
                "{},{:.3},{:.3},{:.3}\n",
                a.n,
                ms(a.recv_ns - a.latency_ns),
                ms(a.recv_ns),
                a.latency_ns as f64 / 1e6
            ));
        }
        if let Err(e) = std::fs::create_dir_all(dir)
            .and_then(|_| std::fs::write(dir.join(format!("run-{run}.csv")), csv))
        {
            eprintln!("cannot write the dump: {e}");
        }
    }
    Measured {
        delivered: seen.len() as u64,
        duplicates: arrivals.len() as u64 - seen.len() as u64,
        in_window,
        latency_us,
        server_cpu,
        bench_cpu,
        other_cores,
        rss: rss_mib(pid),
        drain_secs,
        load,
    }
}

const HEADER: &str = "| load | offered events/s | ingested/s | delivered/s (sustained) | p50 ms | p99 ms | p99.9 ms | ingest p99 ms | server CPU µs/event | loadgen + receiver CPU µs/event | other load (cores) | server RSS MiB | 429 | errors |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|";

pub async fn bench_backend(args: &Args, backend: &str) -> anyhow::Result<()> {
    let (receiver_url, receiver) = start_receiver().await?;
    let window = Duration::from_secs(args.e2e_seconds);

    println!("\n### End to end, {backend}\n");
    println!(
        "one flow (`map = \".data\"`, priority {}) to one HTTP destination (`concurrency = {}`): a receiver (axum, loopback) inside the bench process, which is also the load generator; server, load generator and receiver share this machine's {} cores. 1 KiB structured CloudEvents, one per request; latency = receipt at the receiver − send time at the load generator (one monotonic clock). Sustained delivered/s counts deliveries that arrived inside the send window; p50/p99/p99.9 cover every event of the run (waiting until all arrived); server CPU is the server process from the first send to the last delivery, ÷ events delivered; other load = cores kept busy by everything else on the machine meanwhile (should be ≈ 0). errors = failed or unsent requests + accepted but never delivered + duplicate deliveries.\n",
        args.priority,
        args.dest_concurrency,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    let dir = tempfile::Builder::new()
        .prefix("switchyard-bench-e2e-")
        .tempdir()?;
    let (url, schema) = fresh_store(args, backend, dir.path())?;
    let server = start_server(
        dir.path(),
        &url,
        &flow_config(&receiver_url, &args.priority, args.dest_concurrency),
    )?;
    let sender = Sender::new(&server)?;
    // Warm-up: connections, caches, the SQLite file.
    let _ = measure(
        &server,
        &receiver,
        0,
        Duration::from_secs(30),
        None,
        open_loop(&sender, 0, 1000, Duration::from_secs(2)),
    )
    .await;

    println!("{HEADER}");
    let mut run = 0u32;
    for &rate in &args.rates {
        run += 1;
        let m = measure(
            &server,
            &receiver,
            run,
            Duration::from_secs(60),
            args.dump.as_deref(),
            open_loop(&sender, run, rate, window),
        )
        .await;
        println!("{}", m.row("open loop", &rate.to_string()));
    }
    let mut max_note = String::new();
    if args.max_concurrency > 0 {
        run += 1;
        let m = measure(
            &server,
            &receiver,
            run,
            Duration::from_secs(180),
            args.dump.as_deref(),
            closed_loop(&sender, run, args.max_concurrency, window),
        )
        .await;
        println!(
            "{}",
            m.row(
                &format!("max (closed loop, {} senders)", args.max_concurrency),
                "—"
            )
        );
        max_note = format!(
            "max run: backlog at the end of the window {} deliveries, all delivered {:.1} s later",
            m.load.accepted.saturating_sub(m.in_window),
            m.drain_secs
        );
    }
    if !max_note.is_empty() {
        println!("\n{max_note}");
    }
    if receiver.unreadable.load(Ordering::Relaxed) > 0 {
        println!(
            "receiver: {} unreadable payloads",
            receiver.unreadable.load(Ordering::Relaxed)
        );
    }
    drop(server);
    drop_schema(args, schema).await?;

    if args.overload_rate > 0 {
        overload(args, backend, &receiver_url, &receiver, run + 1).await?;
    }
    Ok(())
}

/// A slow receiver behind a small concurrency limit, offered more than it can take.
async fn overload(
    args: &Args,
    backend: &str,
    receiver_url: &str,
    receiver: &Receiver,
    run: u32,
) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("switchyard-bench-e2e-")
        .tempdir()?;
    let (url, schema) = fresh_store(args, backend, dir.path())?;
    let server = start_server(
        dir.path(),
        &url,
        &flow_config(receiver_url, &args.priority, args.slow_concurrency),
    )?;
    let sender = Sender::new(&server)?;
    let capacity = args.slow_concurrency as f64 * 1000.0 / args.slow_ms.max(1) as f64;
    receiver.delay_ms.store(args.slow_ms, Ordering::Relaxed);
    let window = Duration::from_secs(args.e2e_seconds);
    let pid = server.child.id();
    let me = std::process::id();
    let (wall0, busy0, me0) = (Instant::now(), machine_busy_seconds(), cpu_seconds(me));
    let cpu0 = cpu_seconds(pid);
    let mut load = open_loop(&sender, run, args.overload_rate, window).await;
    let backlog_store = store_backlog(&server).await.unwrap_or(-1);
    let server_cpu = cpu_seconds(pid) - cpu0;
    let bench_cpu = cpu_seconds(me) - me0;
    let other_cores = (machine_busy_seconds() - busy0 - bench_cpu - server_cpu).max(0.0)
        / wall0.elapsed().as_secs_f64();
    let rss = rss_mib(pid);
    let arrivals = receiver.of_run(run);
    let per_second: Vec<u64> = (0..args.e2e_seconds)
        .map(|s| {
            let from = load.start_ns + s * 1_000_000_000;
            arrivals
                .iter()
                .filter(|a| a.recv_ns >= from && a.recv_ns < from + 1_000_000_000)
                .count() as u64
        })
        .collect();
    let in_window: u64 = per_second.iter().sum();
    let w = window.as_secs_f64();
    let half = per_second.len() / 2;
    let second_half =
        per_second[half..].iter().sum::<u64>() as f64 / (per_second.len() - half).max(1) as f64;
    load.ingest_us.sort_unstable();
    println!(
        "\n#### Overload: the receiver answers after {} ms, the destination allows {} in flight (capacity ≈ {capacity:.0} deliveries/s); {} events/s offered for {} s\n",
        args.slow_ms, args.slow_concurrency, args.overload_rate, args.e2e_seconds
    );
    println!(
        "| offered events/s | ingested/s | ingest p50 ms | ingest p99 ms | 429 | errors | delivered/s (window) | delivered/s (2nd half) | backlog at end (store) | backlog at end (accepted − delivered) | server CPU µs/event ingested | other load (cores) | server RSS MiB |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {} | {:.0} | {:.2} | {:.2} | {} | {} | {:.0} | {:.0} | {} | {} | {:.0} | {:.2} | {:.1} |",
        args.overload_rate,
        load.accepted as f64 / w,
        pct(&load.ingest_us, 0.50),
        pct(&load.ingest_us, 0.99),
        load.throttled,
        load.errors,
        in_window as f64 / w,
        second_half,
        backlog_store,
        load.accepted.saturating_sub(receiver.count(run)),
        server_cpu * 1e6 / load.accepted.max(1) as f64,
        other_cores,
        rss
    );
    println!(
        "\ndelivered per second during the window: {}",
        per_second
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    // Let it catch up (the backlog drains at the receiver's capacity), then stop.
    let (got, secs) = drain(receiver, run, load.accepted, Duration::from_secs(180)).await;
    println!(
        "after the window: {got} of {} accepted events delivered {secs:.1} s later{}",
        load.accepted,
        if got >= load.accepted {
            " (backlog drained)"
        } else {
            " (drain timed out)"
        }
    );
    receiver.delay_ms.store(0, Ordering::Relaxed);
    drop(server);
    drop_schema(args, schema).await
}
