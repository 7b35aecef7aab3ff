//! `switchyard-bench --alerts`: the alert pipeline at scale, through the real binary.
//!
//! The real `switchyard serve` runs a workflow whose instances raise a *duplicate step*
//! finding when a step arrives twice with different event ids (a shop retrying), one alert
//! rule on those findings and one route that groups by warehouse and notifies a webhook
//! receiver in this process (through the delivery engine, critical lane, as in
//! production).
//!
//! 1. Setup: `--alert-findings` orders across `--alert-groups` warehouses get their
//!    original events (posted in batches; the monitor catches up before the clock starts).
//! 2. The minute: each order's retried event is posted at its planned instant, so the
//!    monitor records `--alert-findings` findings within 60 s. In each warehouse (one
//!    notification group) the findings concern three steps, so three alerts, which first
//!    appear at offsets 0, 20 and 35 s after the group's start (spread over the first
//!    20 s); every later finding of the same step deduplicates into its alert's count.
//! 3. Observation until 150 s after the start, then the account: the notifications the
//!    route's timings imply — computed here from the plan by Alertmanager's rules (group
//!    wait, then changes at the next group-interval tick, else a repeat after the repeat
//!    interval) — against those received; and two latencies from the store's findings
//!    (`detected_at`) and the receiver's clock: finding → the first notification that
//!    names its alert (includes the configured waits), and each notification's delay past
//!    the instant the rules made it due (the pipeline's own cost: fold, flush, delivery).

use crate::{Args, cpu_seconds, drop_schema, fresh_store, rss_mib, start_server};
use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::{Router, body::Bytes, routing::any};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const GROUP_WAIT: f64 = 10.0;
const GROUP_INTERVAL: f64 = 30.0;
const REPEAT_INTERVAL: f64 = 60.0;
/// Seconds the findings are spread over.
const WINDOW: f64 = 60.0;
/// Groups start within this many seconds of each other.
const SPREAD: f64 = 20.0;
/// Notifications sent (flushed) up to this many seconds after the start are counted.
const OBSERVE: f64 = 150.0;
/// The three alerts of a group: the step duplicated, and when its first finding is planned
/// (seconds after the group's start).
const ALERTS: [(&str, &str, f64); 3] = [
    ("ordered", "order.created", 0.0),
    ("paid", "order.paid", 20.0),
    ("packed", "order.packed", 35.0),
];

fn config(receiver: &str) -> String {
    format!(
        r#"
[[sources]]
name = "shop"
kind = "cloudevents"
source = "/shop"
keys = {{ shop_order = ".data.number" }}

[[workflows]]
name = "orders"
criticality = "P3"
key = "shop_order"
stalled_after_seconds = 86400
dimensions = {{ warehouse = ".data.warehouse" }}

[[workflows.steps]]
name = "ordered"
source = "shop"
type = "order.created"

[[workflows.steps]]
name = "paid"
source = "shop"
type = "order.paid"
required = false

[[workflows.steps]]
name = "packed"
source = "shop"
type = "order.packed"
required = false

[alerting]
external_url = "http://switchyard.example"

[[alert_rules]]
name = "duplicate-step"
on = "finding"
findings = ["duplicate"]

[[destinations]]
name = "ops-hook"
url = "{receiver}"

[[receivers]]
name = "operations"
[[receivers.notify]]
type = "webhook"
destination = "ops-hook"

[route]
receiver = "operations"
group_by = ["warehouse"]
group_wait_seconds = {GROUP_WAIT}
group_interval_seconds = {GROUP_INTERVAL}
repeat_interval_seconds = {REPEAT_INTERVAL}
"#
    )
}

/// One notification as the receiver saw it.
struct Got {
    received: DateTime<Utc>,
    group: String,
    sequence: i64,
    sent_at: DateTime<Utc>,
    /// (warehouse, step) of each firing alert it names.
    alerts: Vec<(String, String)>,
}

#[derive(Default)]
struct Inbox {
    got: Mutex<Vec<Got>>,
    unreadable: Mutex<u64>,
}

async fn receive(State(inbox): State<Arc<Inbox>>, method: Method, body: Bytes) -> StatusCode {
    // The prober checks the destination with HEAD; only POSTs are notifications.
    if method != Method::POST {
        return StatusCode::NO_CONTENT;
    }
    let received = Utc::now();
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        *inbox.unreadable.lock().expect("inbox") += 1;
        return StatusCode::BAD_REQUEST;
    };
    let alerts = v["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["status"] == "firing")
        .map(|a| {
            (
                a["labels"]["warehouse"].as_str().unwrap_or("").to_string(),
                a["labels"]["step"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let sent_at = v["sent_at"]
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc));
    let (Some(group), Some(sequence), Some(sent_at)) =
        (v["group_key"].as_str(), v["sequence"].as_i64(), sent_at)
    else {
        *inbox.unreadable.lock().expect("inbox") += 1;
        return StatusCode::BAD_REQUEST;
    };
    inbox.got.lock().expect("inbox").push(Got {
        received,
        group: group.to_string(),
        sequence,
        sent_at,
        alerts,
    });
    StatusCode::NO_CONTENT
}

/// The instants (seconds) at which a group flushes, by the route's rules, given when its
/// alerts join it (sorted), up to `end`: the first after the group wait; then, after each
/// flush at `t`, the next join after `t` goes out at the next group-interval tick (or when
/// it comes, if later), and a group with nothing new repeats after the repeat interval.
fn flushes(joins: &[f64], end: f64) -> Vec<f64> {
    let mut out = Vec::new();
    let Some(first) = joins.first() else {
        return out;
    };
    let mut t = first + GROUP_WAIT;
    while t <= end {
        out.push(t);
        let next_join = joins.iter().copied().find(|&j| j > t);
        t = match next_join {
            Some(j) => j.max(t + GROUP_INTERVAL).min(t + REPEAT_INTERVAL),
            None => t + REPEAT_INTERVAL,
        };
    }
    out
}

/// The planned retried events: (seconds after the start, group, order number, alert).
fn plan(findings: u64, groups: u64) -> Vec<(f64, u64, String, usize)> {
    let mut out = Vec::with_capacity(findings as usize);
    for g in 0..groups {
        let offset = SPREAD * g as f64 / groups as f64;
        let n = findings / groups + u64::from(g < findings % groups);
        for (a, (_, _, first)) in ALERTS.iter().enumerate() {
            // Finding i of the group concerns alert i % 3; an alert's findings are spread
            // evenly from its first instant to the end of the window.
            let count = (0..n).filter(|i| (*i % 3) as usize == a).count();
            let start = offset + first;
            for k in 0..count {
                let at = start + (WINDOW - 0.5 - start) * k as f64 / count.max(1) as f64;
                out.push((at, g, format!("G{g}-{a}-{k}"), a));
            }
        }
    }
    out.sort_by(|x, y| x.0.total_cmp(&y.0));
    out
}

fn warehouse(g: u64) -> String {
    format!("WH{g:03}")
}

fn event(id: String, ty: &str, number: &str, g: u64) -> Value {
    json!({"specversion": "1.0", "id": id, "source": "/shop", "type": ty,
           "data": {"number": number, "warehouse": warehouse(g)}})
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn secs(d: chrono::TimeDelta) -> f64 {
    d.num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6
}

async fn get(http: &reqwest::Client, base: &str, token: &str, path: &str) -> anyhow::Result<Value> {
    Ok(http
        .get(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

pub async fn bench(args: &Args, backend: &str) -> anyhow::Result<()> {
    let findings = args.alert_findings;
    let groups = args.alert_groups;
    anyhow::ensure!(
        groups > 0 && findings >= groups * 3,
        "--alert-findings must give every group at least three findings"
    );
    let inbox = Arc::new(Inbox::default());
    let app = Router::new()
        .route("/in", any(receive))
        .with_state(inbox.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let receiver = format!("http://{}/in", listener.local_addr()?);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("receiver stopped: {e}");
        }
    });

    let dir = tempfile::Builder::new()
        .prefix("switchyard-bench-alerts")
        .tempdir()?;
    let (url, schema) = fresh_store(args, backend, dir.path())?;
    let server = start_server(dir.path(), &url, &config(&receiver))?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    let events_url = format!("{}/v1/events", server.base);
    let plan = plan(findings, groups);

    // 1. The original events, in batches; then wait for the monitor to hold every order.
    let setup = std::time::Instant::now();
    let mut originals = Vec::new();
    for (_, g, number, a) in &plan {
        originals.push(event(format!("o-{number}"), "order.created", number, *g));
        if *a > 0 {
            originals.push(event(format!("s-{number}"), ALERTS[*a].1, number, *g));
        }
    }
    for chunk in originals.chunks(500) {
        http.post(&events_url)
            .bearer_auth(&server.token)
            .header("content-type", "application/cloudevents-batch+json")
            .body(serde_json::to_vec(chunk)?)
            .send()
            .await?
            .error_for_status()?;
    }
    loop {
        let v = get(&http, &server.base, &server.read_token, "/v1/workflows").await?;
        let held: i64 = v["workflows"][0]["instances"]
            .as_object()
            .map(|m| m.values().filter_map(Value::as_i64).sum())
            .unwrap_or(0);
        if held >= findings as i64 {
            break;
        }
        anyhow::ensure!(
            setup.elapsed() < Duration::from_secs(600),
            "the monitor holds {held} of {findings} orders after 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let setup_secs = setup.elapsed().as_secs_f64();

    // 2. The minute: each retried event at its planned instant (open loop).
    let cpu0 = cpu_seconds(server.child.id());
    let start = Utc::now();
    let t0 = tokio::time::Instant::now();
    let errors = Arc::new(Mutex::new(0u64));
    let mut tasks = tokio::task::JoinSet::new();
    for (at, g, number, a) in &plan {
        tokio::time::sleep_until(t0 + Duration::from_secs_f64(*at)).await;
        let body = serde_json::to_vec(&event(format!("r-{number}"), ALERTS[*a].1, number, *g))?;
        let (http, url, token, errors) = (
            http.clone(),
            events_url.clone(),
            server.token.clone(),
            errors.clone(),
        );
        tasks.spawn(async move {
            let ok = http
                .post(&url)
                .bearer_auth(&token)
                .header("content-type", "application/cloudevents+json")
                .body(body)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if !ok {
                *errors.lock().expect("errors") += 1;
            }
        });
    }
    let posted_secs = t0.elapsed().as_secs_f64();
    while tasks.join_next().await.is_some() {}

    // 3. Observe, with a few seconds more for what was flushed by then to arrive.
    tokio::time::sleep_until(t0 + Duration::from_secs_f64(OBSERVE + 5.0)).await;
    let cpu = cpu_seconds(server.child.id()) - cpu0;
    let rss = rss_mib(server.child.id());

    // The findings the monitor recorded: the first per (warehouse, step) is its alert's.
    let mut detected: Vec<(DateTime<Utc>, u64, usize)> = Vec::new();
    let mut after = 0i64;
    loop {
        let v = get(
            &http,
            &server.base,
            &server.read_token,
            &format!("/v1/findings?kind=duplicate&after={after}&limit=1000"),
        )
        .await?;
        let page = v["findings"].as_array().cloned().unwrap_or_default();
        for f in &page {
            let key = f["instance_key"].as_str().unwrap_or("");
            let mut parts = key.trim_start_matches('G').split('-');
            let g: u64 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
            let a: usize = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
            let at = f["detected_at"]
                .as_str()
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or(start);
            detected.push((at, g, a));
            after = f["id"].as_i64().unwrap_or(after);
        }
        if page.len() < 1000 {
            break;
        }
    }
    let mut first_seen: HashMap<(String, String), DateTime<Utc>> = HashMap::new();
    for (at, g, a) in &detected {
        let e = first_seen
            .entry((warehouse(*g), ALERTS[*a].0.to_string()))
            .or_insert(*at);
        *e = (*e).min(*at);
    }
    let span = detected
        .iter()
        .map(|d| d.0)
        .max()
        .zip(detected.iter().map(|d| d.0).min())
        .map(|(hi, lo)| secs(hi - lo))
        .unwrap_or(0.0);
    let alerts = get(
        &http,
        &server.base,
        &server.read_token,
        "/v1/alerts?limit=10000",
    )
    .await?;
    let alerts = alerts["alerts"].as_array().cloned().unwrap_or_default();
    let counted: i64 = alerts.iter().filter_map(|a| a["count"].as_i64()).sum();
    let incidents = get(
        &http,
        &server.base,
        &server.read_token,
        "/v1/incidents?limit=10000",
    )
    .await?;
    let incidents = incidents["incidents"].as_array().map_or(0, Vec::len);

    // Expected: by the rules, from the plan.
    let mut expected = 0usize;
    for g in 0..groups {
        let offset = SPREAD * g as f64 / groups as f64;
        let joins: Vec<f64> = ALERTS.iter().map(|(_, _, f)| offset + f).collect();
        expected += flushes(&joins, OBSERVE).len();
    }

    // Received: flushed within the observation, each (group, sequence) once.
    let got = std::mem::take(&mut *inbox.got.lock().expect("inbox"));
    let horizon = start + chrono::TimeDelta::milliseconds((OBSERVE * 1000.0) as i64);
    let counted_got: Vec<&Got> = got.iter().filter(|n| n.sent_at <= horizon).collect();
    let distinct: HashSet<(&str, i64)> = counted_got
        .iter()
        .map(|n| (n.group.as_str(), n.sequence))
        .collect();
    let repeated = counted_got.len() - distinct.len();

    // Finding → the first notification naming its alert.
    let mut first_note: HashMap<(String, String), DateTime<Utc>> = HashMap::new();
    for n in &got {
        for k in &n.alerts {
            let e = first_note.entry(k.clone()).or_insert(n.received);
            *e = (*e).min(n.received);
        }
    }
    let mut to_note: Vec<f64> = first_seen
        .iter()
        .filter_map(|(k, at)| first_note.get(k).map(|n| secs(*n - *at)))
        .collect();
    to_note.sort_by(f64::total_cmp);
    let unnotified = first_seen
        .keys()
        .filter(|k| !first_note.contains_key(*k))
        .count();

    // Past due: each notification against the instant the rules made it due, from what
    // actually happened (first findings, the group's previous flush).
    let mut by_group: BTreeMap<&str, Vec<&Got>> = BTreeMap::new();
    for n in &got {
        by_group.entry(n.group.as_str()).or_default().push(n);
    }
    let mut past_due = Vec::new();
    let mut delivery = Vec::new();
    for list in by_group.values_mut() {
        list.sort_by_key(|n| n.sequence);
        let mut told: HashSet<&(String, String)> = HashSet::new();
        let mut prev: Option<&Got> = None;
        for n in list.iter() {
            let joins: Vec<DateTime<Utc>> = n
                .alerts
                .iter()
                .filter(|k| !told.contains(k))
                .filter_map(|k| first_seen.get(k).copied())
                .collect();
            let due = match prev {
                None => joins
                    .iter()
                    .min()
                    .map(|j| *j + chrono::TimeDelta::milliseconds((GROUP_WAIT * 1000.0) as i64)),
                Some(p) if !joins.is_empty() => {
                    let tick = p.sent_at
                        + chrono::TimeDelta::milliseconds((GROUP_INTERVAL * 1000.0) as i64);
                    joins.iter().min().map(|j| (*j).max(tick))
                }
                Some(p) => Some(
                    p.sent_at + chrono::TimeDelta::milliseconds((REPEAT_INTERVAL * 1000.0) as i64),
                ),
            };
            if let Some(due) = due {
                past_due.push(secs(n.received - due));
            }
            delivery.push(secs(n.received - n.sent_at));
            told.extend(n.alerts.iter());
            prev = Some(n);
        }
    }
    past_due.sort_by(f64::total_cmp);
    delivery.sort_by(f64::total_cmp);

    println!("\n### {backend}\n");
    println!(
        "setup: {} original events for {findings} orders in {groups} warehouses, applied by the monitor in {setup_secs:.1} s",
        originals.len()
    );
    println!(
        "route: group_by = [\"warehouse\"], group wait {GROUP_WAIT} s, group interval {GROUP_INTERVAL} s, repeat interval {REPEAT_INTERVAL} s; counted: notifications flushed within {OBSERVE} s of the start\n"
    );
    println!("| measure | value |");
    println!("|---|---:|");
    println!(
        "| retried events posted (open loop) | {} in {posted_secs:.1} s, {} errors |",
        plan.len(),
        *errors.lock().expect("errors")
    );
    println!(
        "| findings recorded | {} within {span:.1} s |",
        detected.len()
    );
    println!(
        "| alerts (sum of their counts) | {} ({counted}) |",
        alerts.len()
    );
    println!("| incidents opened | {incidents} |");
    println!("| notifications expected by the route's rules | {expected} |");
    println!(
        "| notifications received | {} ({} distinct, {repeated} repeated deliveries, {} unreadable) |",
        counted_got.len(),
        distinct.len(),
        *inbox.unreadable.lock().expect("inbox")
    );
    println!("| alerts never notified | {unnotified} |");
    println!(
        "| finding → first notification of its alert, p50 / p99 / max s (includes the waits) | {:.2} / {:.2} / {:.2} |",
        pct(&to_note, 0.5),
        pct(&to_note, 0.99),
        to_note.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "| notification received past its due instant, p50 / p99 / max ms | {:.0} / {:.0} / {:.0} |",
        pct(&past_due, 0.5) * 1e3,
        pct(&past_due, 0.99) * 1e3,
        past_due.last().copied().unwrap_or(f64::NAN) * 1e3
    );
    println!(
        "| of which flush → received (delivery engine + HTTP), p50 / p99 ms | {:.0} / {:.0} |",
        pct(&delivery, 0.5) * 1e3,
        pct(&delivery, 0.99) * 1e3
    );
    println!(
        "| server CPU over the {OBSERVE} s, resident memory at the end | {cpu:.1} s, {rss:.1} MiB |"
    );
    drop(server);
    drop_schema(args, schema).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_flushes_after_the_wait_then_at_the_interval_tick_then_repeats() {
        // Joins at 0, 20, 35: 10 (wait), 40 (the tick after the join at 20, with the
        // join at 35), 100 (repeat).
        assert_eq!(flushes(&[0.0, 20.0, 35.0], 150.0), vec![10.0, 40.0, 100.0]);
        // A join long after the tick goes out when it comes.
        assert_eq!(flushes(&[0.0, 50.0], 80.0), vec![10.0, 50.0]);
        // Nothing new: only repeats.
        assert_eq!(flushes(&[5.0], 140.0), vec![15.0, 75.0, 135.0]);
    }

    #[test]
    fn the_plan_spreads_every_finding_over_the_window() {
        let p = plan(10_000, 200);
        assert_eq!(p.len(), 10_000);
        assert!(p.iter().all(|(at, ..)| (0.0..WINDOW).contains(at)));
        let names: HashSet<&String> = p.iter().map(|(_, _, n, _)| n).collect();
        assert_eq!(names.len(), 10_000, "one order per finding");
        // Each group's first finding of each alert comes at its planned offset.
        let first = p
            .iter()
            .filter(|(_, g, _, a)| *g == 100 && *a == 1)
            .map(|(at, ..)| *at)
            .fold(f64::MAX, f64::min);
        assert!((first - (SPREAD * 0.5 + 20.0)).abs() < 1e-9);
    }
}
