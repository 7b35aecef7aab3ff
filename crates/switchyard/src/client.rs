//! Operator commands: HTTP clients of a running server, authenticated by a token, so every
//! action has an actor and the server's single store writer is never bypassed.

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use std::time::Duration;

#[derive(Args, Debug, Clone)]
pub struct ClientArgs {
    /// Base URL of the server.
    #[arg(long, env = "SWITCHYARD_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// API token.
    #[arg(long, env = "SWITCHYARD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum EventsCommand {
    /// List events in commit order.
    List {
        #[command(flatten)]
        client: ClientArgs,
        /// Continue after this cursor (printed as `next`).
        #[arg(long)]
        after: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        source: Option<String>,
        #[arg(long = "type")]
        ty: Option<String>,
        #[arg(long)]
        subject: Option<String>,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one event by seq, or by `--source` and `--id`.
    Get {
        #[command(flatten)]
        client: ClientArgs,
        seq: Option<i64>,
        #[arg(long)]
        source: Option<String>,
        #[arg(long)]
        id: Option<String>,
    },
    /// Delete events received before a time, as a server-side job with a progress bar
    /// (admin token).
    Purge {
        #[command(flatten)]
        client: ClientArgs,
        /// RFC 3339 time; events received before it are deleted.
        #[arg(long)]
        before: String,
        /// Only events from this CloudEvents source.
        #[arg(long)]
        source: Option<String>,
        /// Only count what would be deleted (the job still runs on the server).
        #[arg(long)]
        dry_run: bool,
        /// Queue the job and return without following it.
        #[arg(long)]
        no_wait: bool,
    },
    /// Every event that carries a business key value (an order number, a picking name),
    /// whatever each system calls it.
    Search {
        #[command(flatten)]
        client: ClientArgs,
        /// The key's value, e.g. S00042 or WH/OUT/00017.
        value: String,
        /// Only keys of this name (e.g. sale_order).
        #[arg(long)]
        key_name: Option<String>,
        /// Received at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Received before this RFC 3339 time.
        #[arg(long)]
        until: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Print new events as they are committed.
    Tail {
        #[command(flatten)]
        client: ClientArgs,
        /// Start from the beginning of the log instead of its end.
        #[arg(long)]
        from_start: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum JobsCommand {
    /// Recent jobs, newest first.
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Follow one job with a progress bar until it ends.
    Watch {
        #[command(flatten)]
        client: ClientArgs,
        id: i64,
    },
}

pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    pub fn new(args: &ClientArgs) -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?,
            base: args.url.trim_end_matches('/').to_string(),
            token: args.token.clone(),
        })
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    pub async fn send(&self, r: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let resp = r
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {}", self.base))?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        bail!("{}", describe_problem(status.as_u16(), &body))
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.req(reqwest::Method::GET, path)).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.send(self.req(reqwest::Method::POST, path).json(body))
            .await
    }
}

/// A problem+json body in one readable paragraph.
pub fn describe_problem(status: u16, body: &Value) -> String {
    let title = body["title"].as_str().unwrap_or("request failed");
    let detail = body["detail"].as_str().unwrap_or("");
    let mut s = format!("HTTP {status}: {title}");
    if !detail.is_empty() {
        s.push_str(&format!(": {detail}"));
    }
    if let Some(errs) = body["errors"].as_array() {
        for e in errs {
            s.push_str(&format!(
                "\n  {}: {}",
                e["field"].as_str().unwrap_or("?"),
                e["detail"].as_str().unwrap_or("")
            ));
        }
    }
    if status == 401 {
        s.push_str("\n  (pass --token or set SWITCHYARD_TOKEN)");
    }
    s
}

pub(crate) fn query(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", percent_encode(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

pub(crate) fn percent_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A JSON value as plain text (strings unquoted, null empty), so column widths apply.
pub(crate) fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn print_event_line(e: &Value) {
    let ev = &e["event"];
    println!(
        "{:>8}  {}  {:<28} {:<28} {}  {}",
        cell(&e["seq"]),
        e["received_at"].as_str().unwrap_or(""),
        ev["source"].as_str().unwrap_or(""),
        ev["type"].as_str().unwrap_or(""),
        ev["id"].as_str().unwrap_or(""),
        ev["subject"].as_str().unwrap_or(""),
    );
}

pub async fn events(cmd: EventsCommand) -> anyhow::Result<()> {
    match cmd {
        EventsCommand::List {
            client,
            after,
            limit,
            source,
            ty,
            subject,
            json,
        } => {
            let c = Client::new(&client)?;
            let q = query(&[
                ("after", after),
                ("limit", Some(limit.to_string())),
                ("source", source),
                ("type", ty),
                ("subject", subject),
            ]);
            let page = c.get(&format!("/v1/events{q}")).await?;
            let events = page["events"].as_array().cloned().unwrap_or_default();
            for e in &events {
                if json {
                    println!("{e}");
                } else {
                    print_event_line(e);
                }
            }
            // on stderr, so `--json` output stays one event per line
            eprintln!(
                "{} event(s); next: --after {}",
                events.len(),
                page["next"].as_str().unwrap_or("")
            );
            Ok(())
        }
        EventsCommand::Search {
            client,
            value,
            key_name,
            since,
            until,
            json,
        } => {
            let c = Client::new(&client)?;
            let mut after = "0.0".to_string();
            let mut n = 0;
            loop {
                let q = query(&[
                    ("key", Some(value.clone())),
                    ("key_name", key_name.clone()),
                    ("since", since.clone()),
                    ("until", until.clone()),
                    ("after", Some(after.clone())),
                    ("limit", Some("1000".into())),
                ]);
                let page = c.get(&format!("/v1/events{q}")).await?;
                let events = page["events"].as_array().cloned().unwrap_or_default();
                if events.is_empty() {
                    break;
                }
                for e in &events {
                    n += 1;
                    if json {
                        println!("{e}");
                    } else {
                        print_event_line(e);
                        let keys: Vec<String> = e["keys"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|k| format!("{}={}", cell(&k["name"]), cell(&k["value"])))
                            .collect();
                        println!("          keys: {}", keys.join(", "));
                    }
                }
                after = page["next"].as_str().unwrap_or("0.0").to_string();
            }
            eprintln!("{n} event(s) carry {value}");
            Ok(())
        }
        EventsCommand::Get {
            client,
            seq,
            source,
            id,
        } => {
            let c = Client::new(&client)?;
            let v = match (seq, source, id) {
                (Some(seq), _, _) => c.get(&format!("/v1/events/{seq}")).await?,
                (None, Some(source), Some(id)) => {
                    let page = c
                        .get(&format!(
                            "/v1/events{}",
                            query(&[("source", Some(source.clone())), ("id", Some(id.clone()))])
                        ))
                        .await?;
                    match page["events"].get(0) {
                        Some(e) => e.clone(),
                        None => bail!("no event {id} from {source}"),
                    }
                }
                _ => bail!("give a seq, or --source and --id"),
            };
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(())
        }
        EventsCommand::Purge {
            client,
            before,
            source,
            dry_run,
            no_wait,
        } => {
            let c = Client::new(&client)?;
            let mut params = serde_json::json!({ "before": before, "dry_run": dry_run });
            if let Some(s) = source {
                params["source"] = s.into();
            }
            run_job(&c, "events.purge", params, no_wait).await
        }
        EventsCommand::Tail {
            client,
            from_start,
            json,
        } => {
            let c = Client::new(&client)?;
            let mut after = if from_start {
                "0.0".to_string()
            } else {
                c.get("/v1/events?after=latest").await?["next"]
                    .as_str()
                    .unwrap_or("0.0")
                    .to_string()
            };
            loop {
                let page = c
                    .get(&format!("/v1/events?after={after}&limit=500"))
                    .await?;
                let events = page["events"].as_array().cloned().unwrap_or_default();
                for e in &events {
                    if json {
                        println!("{e}");
                    } else {
                        print_event_line(e);
                    }
                }
                if let Some(n) = page["next"].as_str() {
                    after = n.to_string();
                }
                if events.is_empty() {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }
}

pub async fn jobs(cmd: JobsCommand) -> anyhow::Result<()> {
    match cmd {
        JobsCommand::List { client } => {
            let c = Client::new(&client)?;
            let v = c.get("/v1/jobs").await?;
            for j in v["jobs"].as_array().cloned().unwrap_or_default() {
                println!(
                    "{:>6}  {:<14} {:<10} {}/{}  {}",
                    cell(&j["id"]),
                    j["kind"].as_str().unwrap_or(""),
                    j["state"].as_str().unwrap_or(""),
                    cell(&j["done"]),
                    cell(&j["total"]),
                    j["message"].as_str().unwrap_or("")
                );
            }
            Ok(())
        }
        JobsCommand::Watch { client, id } => {
            let c = Client::new(&client)?;
            watch_job(&c, id).await
        }
    }
}

/// Queues a job (`POST /v1/jobs`) and, unless `no_wait`, follows it to its end; with
/// `no_wait` it prints the job id on stdout and returns.
pub async fn run_job(c: &Client, kind: &str, params: Value, no_wait: bool) -> anyhow::Result<()> {
    let job = c
        .post(
            "/v1/jobs",
            &serde_json::json!({"kind": kind, "params": params}),
        )
        .await?;
    let id = job["id"]
        .as_i64()
        .context("the server returned no job id")?;
    eprintln!("queued job {id} ({kind})");
    if no_wait {
        println!("{id}");
        return Ok(());
    }
    watch_job(c, id).await
}

/// Follows a job with a progress bar until it ends; fails if the job failed.
pub async fn watch_job(c: &Client, id: i64) -> anyhow::Result<()> {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} job {prefix} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta}) {msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_prefix(id.to_string());
    loop {
        let j = c.get(&format!("/v1/jobs/{id}")).await?;
        if let Some(total) = j["total"].as_u64() {
            bar.set_length(total);
        }
        bar.set_position(j["done"].as_u64().unwrap_or(0));
        bar.set_message(j["state"].as_str().unwrap_or("").to_string());
        match j["state"].as_str() {
            Some("succeeded") => {
                let message = j["message"].as_str().unwrap_or("");
                bar.finish_with_message(format!("succeeded: {message}"));
                // the bar is hidden when stderr is not a terminal; the outcome always shows
                println!("job {id} succeeded: {message}");
                return Ok(());
            }
            Some("failed") => {
                bar.abandon_with_message("failed");
                bail!(
                    "job {id} failed: {}",
                    j["message"].as_str().unwrap_or("no reason given")
                );
            }
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

pub async fn token_list(args: &ClientArgs) -> anyhow::Result<()> {
    let c = Client::new(args)?;
    let v = c.get("/v1/tokens").await?;
    println!(
        "{:>5}  {:<24} {:<9} {:<26} {:<12} revoked",
        "id", "name", "role", "created", "by"
    );
    for t in v["tokens"].as_array().cloned().unwrap_or_default() {
        println!(
            "{:>5}  {:<24} {:<9} {:<26} {:<12} {}",
            cell(&t["id"]),
            t["name"].as_str().unwrap_or(""),
            t["role"].as_str().unwrap_or(""),
            t["created_at"].as_str().unwrap_or(""),
            t["created_by"].as_str().unwrap_or(""),
            t["revoked_at"].as_str().unwrap_or("-"),
        );
    }
    Ok(())
}

pub async fn token_revoke(args: &ClientArgs, id: i64) -> anyhow::Result<()> {
    let c = Client::new(args)?;
    let v = c
        .send(c.req(reqwest::Method::DELETE, &format!("/v1/tokens/{id}")))
        .await?;
    println!(
        "revoked token {} \"{}\" at {}",
        v["id"],
        v["name"].as_str().unwrap_or(""),
        v["revoked_at"].as_str().unwrap_or("")
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Delivery: the dead-letter queue, backfills, deliveries and destinations.
// ---------------------------------------------------------------------------------------

/// Dead-letter filters of `dlq list`.
#[derive(Args, Debug, Clone, Default)]
pub struct DlqFilter {
    /// Only this flow.
    #[arg(long)]
    pub flow: Option<String>,
    /// Only this destination.
    #[arg(long)]
    pub destination: Option<String>,
    /// Only this error class: transient, credential, permanent, mapping, invalid.
    #[arg(long)]
    pub class: Option<String>,
    /// Created at or after this RFC 3339 time.
    #[arg(long)]
    pub since: Option<String>,
    /// Created before this RFC 3339 time.
    #[arg(long)]
    pub until: Option<String>,
}

/// The same filters for `--all` (replay or discard every matching dead letter).
#[derive(Args, Debug, Clone, Default)]
pub struct BulkFilter {
    /// With --all: only this flow.
    #[arg(long, conflicts_with = "id")]
    pub flow: Option<String>,
    /// With --all: only this destination.
    #[arg(long, conflicts_with = "id")]
    pub destination: Option<String>,
    /// With --all: only this error class (transient, credential, permanent, mapping,
    /// invalid).
    #[arg(long, conflicts_with = "id")]
    pub class: Option<String>,
    /// With --all: created at or after this RFC 3339 time.
    #[arg(long, conflicts_with = "id")]
    pub since: Option<String>,
    /// With --all: created before this RFC 3339 time.
    #[arg(long, conflicts_with = "id")]
    pub until: Option<String>,
}

impl BulkFilter {
    /// The `filter` object of a `dlq.replay` / `dlq.discard` job (unset filters left out).
    fn to_json(&self) -> Value {
        let mut m = serde_json::Map::new();
        for (k, v) in [
            ("flow", &self.flow),
            ("destination", &self.destination),
            ("class", &self.class),
            ("since", &self.since),
            ("until", &self.until),
        ] {
            if let Some(v) = v {
                m.insert(k.into(), Value::String(v.clone()));
            }
        }
        Value::Object(m)
    }
}

#[derive(Subcommand, Debug)]
pub enum DlqCommand {
    /// Dead letters (mapping_failed, invalid, dead), oldest first.
    List {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        filter: DlqFilter,
        /// Continue after this delivery id (printed as `next`).
        #[arg(long)]
        after: Option<i64>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One dead letter: its event, the mapped payload and every attempt (`deliveries show`
    /// for a delivery in any state).
    Show {
        #[command(flatten)]
        client: ClientArgs,
        id: i64,
        /// Print the API's JSON instead of a summary.
        #[arg(long)]
        json: bool,
    },
    /// Send a dead letter again (a new generation with its own Idempotency-Key), optionally
    /// with an edited payload; or, with --all, every matching one as a server-side job.
    Replay {
        #[command(flatten)]
        client: ClientArgs,
        /// The dead letter (delivery id).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<i64>,
        /// Replay every dead letter matching the filters (job `dlq.replay`).
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        filter: BulkFilter,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
        /// Send this JSON instead (checked against the flow's schema).
        #[arg(long, value_parser = parse_json, conflicts_with_all = ["payload_file", "all", "remap"])]
        payload: Option<Value>,
        /// Send the JSON in this file instead (`-` for stdin).
        #[arg(long, conflicts_with_all = ["all", "remap"])]
        payload_file: Option<std::path::PathBuf>,
        /// Map the stored event again with the flow as configured now.
        #[arg(long, conflicts_with = "all")]
        remap: bool,
        /// With --all: queue the job and return without following it.
        #[arg(long, conflicts_with = "id")]
        no_wait: bool,
    },
    /// Give up on a dead letter for good; or, with --all, on every matching one as a
    /// server-side job.
    Discard {
        #[command(flatten)]
        client: ClientArgs,
        /// The dead letter (delivery id).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<i64>,
        /// Discard every dead letter matching the filters (job `dlq.discard`).
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        filter: BulkFilter,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
        /// With --all: queue the job and return without following it.
        #[arg(long, conflicts_with = "id")]
        no_wait: bool,
    },
}

#[derive(Args, Debug)]
pub struct BackfillArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// The flow to run over stored events.
    #[arg(long)]
    flow: String,
    /// Events received at or after this RFC 3339 time.
    #[arg(long)]
    since: String,
    /// Events received before this RFC 3339 time (default: when the job starts).
    #[arg(long)]
    until: Option<String>,
    /// Queue the job and return without following it.
    #[arg(long)]
    no_wait: bool,
}

#[derive(Subcommand, Debug)]
pub enum DeliveriesCommand {
    /// Deliveries in id order (every state unless --state).
    List {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(long)]
        flow: Option<String>,
        #[arg(long)]
        destination: Option<String>,
        /// States, comma-separated or repeated: filtered, mapping_failed, invalid,
        /// scheduled, delivering, retry_wait, delivered, dead, discarded.
        #[arg(long, value_delimiter = ',')]
        state: Vec<String>,
        /// Only the deliveries of this event (its seq).
        #[arg(long)]
        event_seq: Option<i64>,
        /// Only this ordering key.
        #[arg(long)]
        key: Option<String>,
        /// Created at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Created before this RFC 3339 time.
        #[arg(long)]
        until: Option<String>,
        /// Continue after this delivery id (printed as `next`).
        #[arg(long)]
        after: Option<i64>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One delivery in any state: its event, the mapped payload and every attempt.
    Show {
        #[command(flatten)]
        client: ClientArgs,
        id: i64,
        /// Print the API's JSON instead of a summary.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum DestinationsCommand {
    /// Every destination: circuit, credential pause, free slots (this node).
    List {
        #[command(flatten)]
        client: ClientArgs,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Lift a destination's credential pause (after fixing its credentials).
    Resume {
        #[command(flatten)]
        client: ClientArgs,
        name: String,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
    },
}

fn parse_json(s: &str) -> Result<Value, String> {
    serde_json::from_str(s).map_err(|e| format!("not JSON: {e}"))
}

fn read_json_file(path: &std::path::Path) -> anyhow::Result<Value> {
    let text = if path == std::path::Path::new("-") {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .context("cannot read the payload from stdin")?;
        s
    } else {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?
    };
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}

/// One line of text of at most `max` characters (newlines folded, `…` when cut).
pub(crate) fn truncate(s: &str, max: usize) -> String {
    let flat: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() <= max {
        flat
    } else {
        let mut t: String = flat.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// Prints a page of deliveries (a table or JSON lines) and its count and `next` on stderr.
fn print_delivery_page(page: &Value, json: bool, dead_letters: bool) {
    let items = page["deliveries"].as_array().cloned().unwrap_or_default();
    if json {
        for d in &items {
            println!("{d}");
        }
    } else if dead_letters {
        println!(
            "{:>6}  {:<16} {:<16} {:<14} {:<10} {:>8}  {:<27}  last error",
            "id", "flow", "destination", "state", "class", "attempts", "created at"
        );
        for d in &items {
            println!(
                "{:>6}  {:<16} {:<16} {:<14} {:<10} {:>8}  {:<27}  {}",
                cell(&d["id"]),
                cell(&d["flow"]),
                cell(&d["destination"]),
                cell(&d["state"]),
                cell(&d["error_class"]),
                cell(&d["attempts"]),
                cell(&d["created_at"]),
                truncate(&cell(&d["last_error"]), 60),
            );
        }
    } else {
        println!(
            "{:>6}  {:>7}  {:<16} {:<16} {:<14} {:>7}  {:<27}  detail",
            "id", "seq", "flow", "destination", "state", "gen/att", "updated at"
        );
        for d in &items {
            let detail = match d["state"].as_str() {
                Some("delivered") => format!("delivered at {}", cell(&d["delivered_at"])),
                Some("scheduled" | "retry_wait") if !d["next_attempt_at"].is_null() => {
                    let mut s = format!("next attempt {}", cell(&d["next_attempt_at"]));
                    if let Some(e) = d["last_error"].as_str() {
                        s.push_str(&format!("; {e}"));
                    }
                    s
                }
                _ => cell(&d["last_error"]),
            };
            println!(
                "{:>6}  {:>7}  {:<16} {:<16} {:<14} {:>7}  {:<27}  {}",
                cell(&d["id"]),
                cell(&d["event_seq"]),
                cell(&d["flow"]),
                cell(&d["destination"]),
                cell(&d["state"]),
                format!("{}/{}", cell(&d["generation"]), cell(&d["attempts"])),
                cell(&d["updated_at"]),
                truncate(&detail, 70),
            );
        }
    }
    let what = if dead_letters {
        "dead letter(s)"
    } else {
        "delivery(ies)"
    };
    match page["next_after"].as_i64() {
        Some(n) => eprintln!("{} {what}; next: --after {n}", items.len()),
        None => eprintln!("{} {what}; no more", items.len()),
    }
}

/// The `Idempotency-Key` a delivery is (or was) sent with.
fn idempotency_key_of(d: &Value) -> Option<String> {
    Some(switchyard_core::delivery::idempotency_key(
        d["flow"].as_str()?,
        d["event_source"].as_str()?,
        d["event_id"].as_str()?,
        d["generation"].as_i64()?,
    ))
}

fn print_delivery_details(v: &Value) -> anyhow::Result<()> {
    let d = &v["delivery"];
    println!(
        "delivery {}: flow {} (version {}) → destination {}, lane {}",
        cell(&d["id"]),
        cell(&d["flow"]),
        cell(&d["flow_version"]),
        cell(&d["destination"]),
        cell(&d["lane"]),
    );
    let class = d["error_class"]
        .as_str()
        .map(|c| format!(" ({c})"))
        .unwrap_or_default();
    println!(
        "  state        {}{class}, generation {}, {} attempt(s) in this generation",
        cell(&d["state"]),
        cell(&d["generation"]),
        cell(&d["attempts"]),
    );
    println!(
        "  event        seq {}  {}  {}  id {}  received {}",
        cell(&d["event_seq"]),
        cell(&d["event_source"]),
        cell(&d["event_type"]),
        cell(&d["event_id"]),
        cell(&d["received_at"]),
    );
    println!(
        "  created      {}  updated {}",
        cell(&d["created_at"]),
        cell(&d["updated_at"])
    );
    if let Some(k) = d["ordering_key"].as_str() {
        println!("  ordering key {k}");
    }
    if let Some(k) = idempotency_key_of(d) {
        println!("  idempotency  {k}");
    }
    if let Some(e) = d["last_error"].as_str() {
        match d["last_status"].as_i64() {
            Some(s) if !e.contains(&format!("HTTP {s}")) => {
                println!("  last error   {e} (HTTP {s})")
            }
            _ => println!("  last error   {e}"),
        }
    }
    if !d["error_detail"].is_null() {
        println!(
            "  error detail {}",
            serde_json::to_string_pretty(&d["error_detail"])?.replace('\n', "\n  ")
        );
    }
    println!("\npayload (as mapped{}):", {
        if d["payload"].is_null() {
            "; none: the mapping failed"
        } else {
            ""
        }
    });
    println!("{}", serde_json::to_string_pretty(&d["payload"])?);
    println!("\nevent:");
    match v["event"].get("event") {
        Some(e) => println!("{}", serde_json::to_string_pretty(e)?),
        None => println!("(no longer stored)"),
    }
    let attempts = v["attempts"].as_array().cloned().unwrap_or_default();
    println!("\nattempts ({}):", attempts.len());
    if !attempts.is_empty() {
        println!(
            "  {:>3} {:>3}  {:<27}  {:>9}  {:<10} {:>6}  {:<20} error",
            "gen", "#", "started at", "ms", "outcome", "status", "node"
        );
    }
    for a in &attempts {
        let ms = a["duration_ms"]
            .as_f64()
            .map(|m| format!("{m:.1}"))
            .unwrap_or_default();
        let mut error = cell(&a["error"]);
        if let Some(x) = a["response_excerpt"].as_str()
            && !x.is_empty()
            && !error.contains(x)
        {
            error = format!("{error} (response: {})", truncate(x, 60));
        }
        println!(
            "  {:>3} {:>3}  {:<27}  {:>9}  {:<10} {:>6}  {:<20} {}",
            cell(&a["generation"]),
            cell(&a["attempt"]),
            cell(&a["started_at"]),
            ms,
            cell(&a["outcome"]),
            cell(&a["status"]),
            cell(&a["node"]),
            error.trim(),
        );
    }
    Ok(())
}

/// `dlq show` and `deliveries show`: a summary, or the API's JSON indented.
async fn show_delivery(c: &Client, path: &str, json: bool) -> anyhow::Result<()> {
    let v = c.get(path).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        Ok(())
    } else {
        print_delivery_details(&v)
    }
}

pub async fn dlq(cmd: DlqCommand) -> anyhow::Result<()> {
    match cmd {
        DlqCommand::List {
            client,
            filter,
            after,
            limit,
            json,
        } => {
            let c = Client::new(&client)?;
            let q = query(&[
                ("flow", filter.flow),
                ("destination", filter.destination),
                ("class", filter.class),
                ("since", filter.since),
                ("until", filter.until),
                ("after", after.map(|a| a.to_string())),
                ("limit", Some(limit.to_string())),
            ]);
            let page = c.get(&format!("/v1/dlq{q}")).await?;
            print_delivery_page(&page, json, true);
            Ok(())
        }
        DlqCommand::Show { client, id, json } => {
            show_delivery(&Client::new(&client)?, &format!("/v1/dlq/{id}"), json).await
        }
        DlqCommand::Replay {
            client,
            id,
            all,
            filter,
            reason,
            payload,
            payload_file,
            remap,
            no_wait,
        } => {
            let c = Client::new(&client)?;
            if all {
                let params = serde_json::json!({"filter": filter.to_json(), "reason": reason});
                return run_job(&c, "dlq.replay", params, no_wait).await;
            }
            let id = id.context("give a delivery id, or --all")?;
            let payload = match (payload, payload_file) {
                (Some(p), _) => Some(p),
                (None, Some(f)) => Some(read_json_file(&f)?),
                (None, None) => None,
            };
            let edited = payload.is_some();
            let mut body = serde_json::json!({"reason": reason});
            if let Some(p) = payload {
                body["payload"] = p;
            }
            if remap {
                body["remap"] = Value::Bool(true);
            }
            let d = c.post(&format!("/v1/dlq/{id}/replay"), &body).await?;
            let how = if edited {
                " with the edited payload"
            } else if remap {
                " mapped again"
            } else {
                ""
            };
            println!(
                "replayed delivery {id}{how} as generation {} ({}); Idempotency-Key {}",
                cell(&d["generation"]),
                cell(&d["state"]),
                idempotency_key_of(&d).unwrap_or_default()
            );
            Ok(())
        }
        DlqCommand::Discard {
            client,
            id,
            all,
            filter,
            reason,
            no_wait,
        } => {
            let c = Client::new(&client)?;
            if all {
                let params = serde_json::json!({"filter": filter.to_json(), "reason": reason});
                return run_job(&c, "dlq.discard", params, no_wait).await;
            }
            let id = id.context("give a delivery id, or --all")?;
            let d = c
                .post(
                    &format!("/v1/dlq/{id}/discard"),
                    &serde_json::json!({"reason": reason}),
                )
                .await?;
            println!("discarded delivery {id} ({})", cell(&d["state"]));
            Ok(())
        }
    }
}

pub async fn backfill(args: BackfillArgs) -> anyhow::Result<()> {
    let c = Client::new(&args.client)?;
    let mut params = serde_json::json!({"flow": args.flow, "since": args.since});
    if let Some(u) = args.until {
        params["until"] = Value::String(u);
    }
    run_job(&c, "flows.backfill", params, args.no_wait).await
}

pub async fn deliveries(cmd: DeliveriesCommand) -> anyhow::Result<()> {
    match cmd {
        DeliveriesCommand::List {
            client,
            flow,
            destination,
            state,
            event_seq,
            key,
            since,
            until,
            after,
            limit,
            json,
        } => {
            let c = Client::new(&client)?;
            let state = (!state.is_empty()).then(|| state.join(","));
            let q = query(&[
                ("flow", flow),
                ("destination", destination),
                ("state", state),
                ("event_seq", event_seq.map(|s| s.to_string())),
                ("key", key),
                ("since", since),
                ("until", until),
                ("after", after.map(|a| a.to_string())),
                ("limit", Some(limit.to_string())),
            ]);
            let page = c.get(&format!("/v1/deliveries{q}")).await?;
            print_delivery_page(&page, json, false);
            Ok(())
        }
        DeliveriesCommand::Show { client, id, json } => {
            show_delivery(
                &Client::new(&client)?,
                &format!("/v1/deliveries/{id}"),
                json,
            )
            .await
        }
    }
}

pub async fn destinations(cmd: DestinationsCommand) -> anyhow::Result<()> {
    match cmd {
        DestinationsCommand::List { client, json } => {
            let c = Client::new(&client)?;
            let v = c.get("/v1/destinations").await?;
            let dests = v["destinations"].as_array().cloned().unwrap_or_default();
            if json {
                for d in &dests {
                    println!("{d}");
                }
            } else {
                println!(
                    "{:<20} {:<9} {:>8}  {:>10}  {:<15} {:>10}  paused",
                    "name", "circuit", "failures", "slots free", "waiting c/s/b", "rate share"
                );
                for d in &dests {
                    let w = &d["waiting"];
                    let paused = if d["paused"].is_null() {
                        "-".to_string()
                    } else {
                        let p = &d["paused"];
                        format!(
                            "since {}, trial after {}: {}",
                            cell(&p["paused_at"]),
                            cell(&p["resume_after"]),
                            truncate(&cell(&p["reason"]), 60)
                        )
                    };
                    let mut circuit = cell(&d["circuit"]);
                    if circuit == "open"
                        && let Some(u) = d["circuit_open_until"].as_str()
                    {
                        circuit = format!("open until {u}");
                    }
                    println!(
                        "{:<20} {:<9} {:>8}  {:>10}  {:<15} {:>10}  {}",
                        cell(&d["name"]),
                        circuit,
                        cell(&d["consecutive_failures"]),
                        cell(&d["slots_free"]),
                        format!(
                            "{}/{}/{}",
                            cell(&w["critical"]),
                            cell(&w["standard"]),
                            cell(&w["bulk"])
                        ),
                        d["rate_share"]
                            .as_f64()
                            .map(|r| format!("{r:.1}/s"))
                            .unwrap_or_else(|| "-".into()),
                        paused,
                    );
                }
            }
            let lanes: Vec<String> = v["lanes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|l| {
                    format!(
                        "{} {}/{}",
                        cell(&l["lane"]),
                        cell(&l["in_flight"]),
                        cell(&l["concurrency"])
                    )
                })
                .collect();
            eprintln!(
                "{} destination(s) as seen by node {}; lanes in flight: {}",
                dests.len(),
                cell(&v["node"]),
                lanes.join(", ")
            );
            Ok(())
        }
        DestinationsCommand::Resume {
            client,
            name,
            reason,
        } => {
            let c = Client::new(&client)?;
            c.post(
                &format!("/v1/destinations/{}/resume", percent_encode(&name)),
                &serde_json::json!({"reason": reason}),
            )
            .await?;
            println!("resumed destination {name}");
            Ok(())
        }
    }
}
