//! Operator commands of alerting: `alerts`, `incidents list|show|ack|resolve|comment|stats`,
//! `silence add|list|expire` and `routes test` — HTTP clients of a running server, so the
//! actor of every acknowledgement, resolve and silence is the token's name.

use crate::client::{Client, ClientArgs, cell, query, truncate};
use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

#[derive(Args, Debug)]
pub struct AlertsArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// `firing` or `resolved` (both by default).
    #[arg(long)]
    pub state: Option<String>,
    /// Only the alerts of this incident.
    #[arg(long)]
    pub incident: Option<i64>,
    /// Changed at or after this RFC 3339 time.
    #[arg(long)]
    pub since: Option<String>,
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum IncidentsCommand {
    /// Incidents, newest first.
    List {
        #[command(flatten)]
        client: ClientArgs,
        /// Comma-separated: open, acknowledged, resolved (all by default).
        #[arg(long)]
        status: Option<String>,
        /// Only this owner team.
        #[arg(long)]
        team: Option<String>,
        /// Opened at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Continue before this incident id (printed as `next`).
        #[arg(long)]
        before: Option<i64>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One incident with its timeline and alerts.
    Show {
        #[command(flatten)]
        client: ClientArgs,
        id: i64,
        #[arg(long)]
        json: bool,
    },
    /// Acknowledge an incident: you are on it (operator token).
    Ack {
        #[command(flatten)]
        client: ClientArgs,
        id: i64,
        /// A comment for the timeline.
        #[arg(long)]
        comment: Option<String>,
    },
    /// Resolve an incident by hand (operator token).
    Resolve {
        #[command(flatten)]
        client: ClientArgs,
        id: i64,
        #[arg(long)]
        comment: Option<String>,
    },
    /// Add a comment to an incident's timeline (operator token).
    Comment {
        #[command(flatten)]
        client: ClientArgs,
        id: i64,
        text: String,
    },
    /// MTTA and MTTR per team, severity and cause; alert volume and the share acknowledged.
    Stats {
        #[command(flatten)]
        client: ClientArgs,
        /// From this RFC 3339 time (default: 30 days back).
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum SilenceCommand {
    /// Silence the alerts that match every matcher, for a while (operator token).
    Add {
        #[command(flatten)]
        client: ClientArgs,
        /// An Alertmanager matcher: `cause="partner_down"`, `destination=~"carrier-.*"`,
        /// `severity!="info"`. Repeat for several (all must match).
        #[arg(long = "matcher", short = 'm', required = true)]
        matchers: Vec<String>,
        /// How long, from the start: `2h`, `30m`, `1d 12h`.
        #[arg(long, conflicts_with = "ends_at")]
        duration: Option<String>,
        /// The end, as an RFC 3339 time (instead of --duration).
        #[arg(long)]
        ends_at: Option<String>,
        /// The start, as an RFC 3339 time (default: now).
        #[arg(long)]
        starts_at: Option<String>,
        /// Why (required; shown with every alert it silences).
        #[arg(long)]
        comment: String,
    },
    /// Silences: those in force, or all with --all.
    List {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// End a silence now (operator token).
    Expire {
        #[command(flatten)]
        client: ClientArgs,
        id: i64,
    },
}

#[derive(Subcommand, Debug)]
pub enum RoutesCommand {
    /// Which receivers an alert with these labels would reach, in route-tree order.
    Test {
        #[command(flatten)]
        client: ClientArgs,
        /// Labels as `name=value`, e.g. `cause=partner_throttling destination=carrier-a`.
        #[arg(required = true)]
        labels: Vec<String>,
        #[arg(long)]
        json: bool,
    },
}

pub async fn alerts(a: AlertsArgs) -> anyhow::Result<()> {
    let c = Client::new(&a.client)?;
    let q = query(&[
        ("state", a.state.clone()),
        ("incident", a.incident.map(|n| n.to_string())),
        ("since", a.since.clone()),
        ("limit", Some(a.limit.to_string())),
    ]);
    let page = c.get(&format!("/v1/alerts{q}")).await?;
    let items = page["alerts"].as_array().cloned().unwrap_or_default();
    if a.json {
        for x in &items {
            println!("{x}");
        }
        return Ok(());
    }
    println!(
        "{:<8} {:<9} {:<22} {:<20} {:>5} {:>8}  {:<14} summary",
        "state", "severity", "cause", "rule", "count", "incident", "suppressed"
    );
    for x in &items {
        println!(
            "{:<8} {:<9} {:<22} {:<20} {:>5} {:>8}  {:<14} {}",
            cell(&x["state"]),
            cell(&x["severity"]),
            cell(&x["cause"]),
            truncate(&cell(&x["rule"]), 20),
            cell(&x["count"]),
            cell(&x["incident_id"]),
            truncate(&cell(&x["suppressed"]), 14),
            truncate(&cell(&x["summary"]), 100),
        );
    }
    eprintln!("{} alert(s)", items.len());
    Ok(())
}

fn incident_path(id: i64, action: &str) -> String {
    format!("/v1/incidents/{id}{action}")
}

fn print_incident_row(i: &Value) {
    println!(
        "{:>6}  {:<12} {:<9} {:<20} {:<22} {:<25}  {}",
        cell(&i["id"]),
        cell(&i["status"]),
        cell(&i["severity"]),
        truncate(&cell(&i["team"]), 20),
        cell(&i["cause"]),
        cell(&i["opened_at"]),
        truncate(&cell(&i["title"]), 90),
    );
}

pub async fn incidents(cmd: IncidentsCommand) -> anyhow::Result<()> {
    match cmd {
        IncidentsCommand::List {
            client,
            status,
            team,
            since,
            before,
            limit,
            json,
        } => {
            let c = Client::new(&client)?;
            let q = query(&[
                ("status", status),
                ("team", team),
                ("since", since),
                ("before", before.map(|n| n.to_string())),
                ("limit", Some(limit.to_string())),
            ]);
            let page = c.get(&format!("/v1/incidents{q}")).await?;
            let items = page["incidents"].as_array().cloned().unwrap_or_default();
            if json {
                for i in &items {
                    println!("{i}");
                }
            } else {
                println!(
                    "{:>6}  {:<12} {:<9} {:<20} {:<22} {:<25}  title",
                    "id", "status", "severity", "team", "cause", "opened at"
                );
                for i in &items {
                    print_incident_row(i);
                }
            }
            if let Some(next) = page["next_before"].as_i64() {
                eprintln!("next: --before {next}");
            }
            Ok(())
        }
        IncidentsCommand::Show { client, id, json } => {
            let c = Client::new(&client)?;
            let v = c.get(&incident_path(id, "")).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            let i = &v["incident"];
            println!("incident {}: {}", cell(&i["id"]), cell(&i["title"]));
            println!(
                "  {} · severity {} · cause {} · team {} (receiver {})",
                cell(&i["status"]),
                cell(&i["severity"]),
                cell(&i["cause"]),
                cell(&i["team"]),
                cell(&i["receiver"]),
            );
            println!("\ntimeline");
            for e in v["timeline"].as_array().into_iter().flatten() {
                println!(
                    "  {:<25}  {:<13} {:<16} {}",
                    cell(&e["at"]),
                    cell(&e["kind"]),
                    truncate(&cell(&e["actor"]), 16),
                    cell(&e["text"]),
                );
            }
            println!("\nalerts");
            for x in v["alerts"].as_array().into_iter().flatten() {
                println!(
                    "  {:<8} ×{:<4} {}",
                    cell(&x["state"]),
                    cell(&x["count"]),
                    cell(&x["summary"])
                );
            }
            Ok(())
        }
        IncidentsCommand::Ack {
            client,
            id,
            comment,
        } => act(&client, id, "/ack", comment).await,
        IncidentsCommand::Resolve {
            client,
            id,
            comment,
        } => act(&client, id, "/resolve", comment).await,
        IncidentsCommand::Comment { client, id, text } => {
            act(&client, id, "/comments", Some(text)).await
        }
        IncidentsCommand::Stats {
            client,
            since,
            json,
        } => {
            let c = Client::new(&client)?;
            let v = c
                .get(&format!(
                    "/v1/incidents/stats{}",
                    query(&[("since", since)])
                ))
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            println!(
                "{:<32} {:>9} {:>7} {:>8} {:>10} {:>10}",
                "", "incidents", "acked", "resolved", "MTTA", "MTTR"
            );
            print_stats_row("all", &v["all"]);
            for group in ["by_team", "by_severity", "by_cause"] {
                let Some(m) = v[group].as_object() else {
                    continue;
                };
                for (name, s) in m {
                    print_stats_row(&format!("{}: {name}", &group[3..]), s);
                }
            }
            println!(
                "\nalerts: {} · acknowledged share: {}",
                cell(&v["alerts"]),
                v["alerts_acknowledged_share"]
                    .as_f64()
                    .map(|f| format!("{:.0} %", f * 100.0))
                    .unwrap_or_else(|| "-".into()),
            );
            Ok(())
        }
    }
}

fn seconds(v: &Value) -> String {
    match v.as_f64() {
        None => "-".into(),
        Some(s) if s < 120.0 => format!("{s:.0}s"),
        Some(s) if s < 7200.0 => format!("{:.1}m", s / 60.0),
        Some(s) => format!("{:.1}h", s / 3600.0),
    }
}

fn print_stats_row(name: &str, s: &Value) {
    println!(
        "{:<32} {:>9} {:>7} {:>8} {:>10} {:>10}",
        truncate(name, 32),
        cell(&s["incidents"]),
        cell(&s["acknowledged"]),
        cell(&s["resolved"]),
        seconds(&s["mtta_seconds"]),
        seconds(&s["mttr_seconds"]),
    );
}

async fn act(
    client: &ClientArgs,
    id: i64,
    action: &str,
    comment: Option<String>,
) -> anyhow::Result<()> {
    let c = Client::new(client)?;
    let body = match comment {
        Some(t) => json!({ "comment": t }),
        None => json!({}),
    };
    let v = c.post(&incident_path(id, action), &body).await?;
    // Every action answers with the incident as it now is.
    if action == "/comments" {
        println!("incident {id}: comment added ({})", cell(&v["status"]));
    } else {
        println!("incident {id}: {}", cell(&v["status"]));
    }
    Ok(())
}

fn parse_time(field: &str, s: &str) -> anyhow::Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .with_context(|| format!("--{field}: not an RFC 3339 time: {s}"))
}

/// The silence's end: `--ends-at`, or the start plus `--duration`.
fn silence_end(
    starts_at: Option<DateTime<Utc>>,
    duration: Option<&str>,
    ends_at: Option<&str>,
    now: DateTime<Utc>,
) -> anyhow::Result<DateTime<Utc>> {
    match (duration, ends_at) {
        (_, Some(e)) => parse_time("ends-at", e),
        (Some(d), None) => {
            let d = humantime::parse_duration(d)
                .with_context(|| format!("--duration: not a duration like 2h or 30m: {d}"))?;
            let d = chrono::Duration::from_std(d).context("--duration: too long")?;
            Ok(starts_at.unwrap_or(now) + d)
        }
        (None, None) => bail!("say how long: --duration 2h, or --ends-at <RFC 3339 time>"),
    }
}

pub async fn silence(cmd: SilenceCommand) -> anyhow::Result<()> {
    match cmd {
        SilenceCommand::Add {
            client,
            matchers,
            duration,
            ends_at,
            starts_at,
            comment,
        } => {
            let starts = starts_at
                .as_deref()
                .map(|s| parse_time("starts-at", s))
                .transpose()?;
            let ends = silence_end(starts, duration.as_deref(), ends_at.as_deref(), Utc::now())?;
            let mut body = json!({ "matchers": matchers, "ends_at": ends, "comment": comment });
            if let Some(s) = starts {
                body["starts_at"] = json!(s);
            }
            let c = Client::new(&client)?;
            let v = c.post("/v1/silences", &body).await?;
            println!("silence {} until {}", cell(&v["id"]), cell(&v["ends_at"]));
            Ok(())
        }
        SilenceCommand::List { client, all, json } => {
            let c = Client::new(&client)?;
            let q = if all { "" } else { "?active=true" };
            let v = c.get(&format!("/v1/silences{q}")).await?;
            let items = v["silences"].as_array().cloned().unwrap_or_default();
            if json {
                for s in &items {
                    println!("{s}");
                }
                return Ok(());
            }
            println!(
                "{:>5}  {:<25} {:<25} {:<14} {:<40} comment",
                "id", "starts at", "ends at", "by", "matchers"
            );
            for s in &items {
                let m: Vec<String> = s["matchers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(cell)
                    .collect();
                let ends = if s["expired_at"].is_null() {
                    cell(&s["ends_at"])
                } else {
                    format!("{} (expired)", cell(&s["expired_at"]))
                };
                println!(
                    "{:>5}  {:<25} {:<25} {:<14} {:<40} {}",
                    cell(&s["id"]),
                    cell(&s["starts_at"]),
                    ends,
                    truncate(&cell(&s["created_by"]), 14),
                    truncate(&m.join(", "), 40),
                    cell(&s["comment"]),
                );
            }
            Ok(())
        }
        SilenceCommand::Expire { client, id } => {
            let c = Client::new(&client)?;
            let v = c
                .post(&format!("/v1/silences/{id}/expire"), &json!({}))
                .await?;
            println!("silence {id} expired at {}", cell(&v["expired_at"]));
            Ok(())
        }
    }
}

/// `name=value` pairs as a label set; the first `=` splits.
fn parse_labels(pairs: &[String]) -> anyhow::Result<Map<String, Value>> {
    let mut m = Map::new();
    for p in pairs {
        let Some((k, v)) = p.split_once('=') else {
            bail!("not a label: {p} (write name=value)");
        };
        if k.is_empty() {
            bail!("not a label: {p} (the name is empty)");
        }
        m.insert(k.to_string(), Value::String(v.to_string()));
    }
    Ok(m)
}

pub async fn routes(cmd: RoutesCommand) -> anyhow::Result<()> {
    let RoutesCommand::Test {
        client,
        labels,
        json,
    } = cmd;
    let c = Client::new(&client)?;
    let v = c
        .post(
            "/v1/routes/test",
            &json!({ "labels": parse_labels(&labels)? }),
        )
        .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let routes = v["routes"].as_array().cloned().unwrap_or_default();
    if routes.is_empty() {
        println!("no receiver");
    }
    for r in &routes {
        println!(
            "{} (team {}) via route {} · group {} · wait {}s, interval {}s, repeat {}s",
            cell(&r["receiver"]),
            cell(&r["team"]),
            cell(&r["route"]),
            cell(&r["group_key"]),
            cell(&r["group_wait_seconds"]),
            cell(&r["group_interval_seconds"]),
            cell(&r["repeat_interval_seconds"]),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        parse_time("t", s).unwrap()
    }

    #[test]
    fn a_silence_ends_after_its_duration_from_its_start() {
        let now = t("2026-11-24T10:00:00Z");
        assert_eq!(
            silence_end(None, Some("2h"), None, now).unwrap(),
            t("2026-11-24T12:00:00Z")
        );
        assert_eq!(
            silence_end(Some(t("2026-11-25T00:00:00Z")), Some("1d 30m"), None, now).unwrap(),
            t("2026-11-26T00:30:00Z")
        );
        assert_eq!(
            silence_end(None, None, Some("2026-12-01T00:00:00+01:00"), now).unwrap(),
            t("2026-11-30T23:00:00Z")
        );
        let e = silence_end(None, Some("two hours"), None, now).unwrap_err();
        assert!(e.to_string().contains("--duration"), "{e}");
        let e = silence_end(None, None, None, now).unwrap_err();
        assert!(e.to_string().contains("--duration 2h"), "{e}");
    }

    #[test]
    fn labels_split_at_the_first_equals_sign() {
        let m = parse_labels(&["cause=partner_down".into(), "q=a=b".into()]).unwrap();
        assert_eq!(m["cause"], "partner_down");
        assert_eq!(m["q"], "a=b");
        assert!(parse_labels(&["nolabel".into()]).is_err());
        assert!(parse_labels(&["=x".into()]).is_err());
    }
}
