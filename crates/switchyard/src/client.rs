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

fn query(pairs: &[(&str, Option<String>)]) -> String {
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

fn percent_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A JSON value as plain text (strings unquoted, null empty), so column widths apply.
fn cell(v: &Value) -> String {
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
            let job = c
                .send(
                    c.req(reqwest::Method::POST, "/v1/jobs")
                        .json(&serde_json::json!({"kind": "events.purge", "params": params})),
                )
                .await?;
            let id = job["id"]
                .as_i64()
                .context("the server returned no job id")?;
            eprintln!("queued job {id} (events.purge)");
            if no_wait {
                println!("{id}");
                return Ok(());
            }
            watch_job(&c, id).await
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
