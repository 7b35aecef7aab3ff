//! Operator commands of the workflow monitor: `workflows`, `trace <key>` and `findings`,
//! HTTP clients of a running server like every other operator command.

use crate::client::{Client, ClientArgs, cell, query, truncate};
use clap::Args;
use serde_json::Value;

#[derive(Args, Debug)]
pub struct WorkflowsArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Also list this workflow's instances (newest first).
    #[arg(long)]
    pub instances: Option<String>,
    /// With --instances: only these states (comma-separated: on_track, at_risk, breached,
    /// stalled, completed, completed_late, cancelled).
    #[arg(long)]
    pub state: Option<String>,
    /// With --instances: only instances with this dimension value (`warehouse:WH2`).
    #[arg(long)]
    pub dimension: Option<String>,
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct TraceArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// A business key value as any system names it: #1042, S00042, WH/OUT/00017.
    pub key: String,
    /// Print JSON instead of a timeline.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct FindingsArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// `workflow`, `batch` or `reconciliation` (all by default).
    #[arg(long)]
    pub subject: Option<String>,
    /// A workflow's or a batch monitor's name.
    #[arg(long)]
    pub workflow: Option<String>,
    /// breach, at_risk, stalled, out_of_sequence, duplicate, missing, delivery_failed,
    /// missed_run, late_run, never_finished, run_failed, count_out_of_range, mismatch,
    /// missing_in_odoo, missing_in_other.
    #[arg(long)]
    pub kind: Option<String>,
    /// Became true at or after this RFC 3339 time.
    #[arg(long)]
    pub since: Option<String>,
    /// Continue after this finding id (printed as `next`).
    #[arg(long)]
    pub after: Option<i64>,
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
}

const STATES: [&str; 7] = [
    "on_track",
    "at_risk",
    "breached",
    "stalled",
    "completed",
    "completed_late",
    "cancelled",
];

pub async fn workflows(a: WorkflowsArgs) -> anyhow::Result<()> {
    let c = Client::new(&a.client)?;
    if let Some(name) = &a.instances {
        let q = query(&[
            ("state", a.state.clone()),
            ("dimension", a.dimension.clone()),
            ("limit", Some(a.limit.to_string())),
        ]);
        let page = c
            .get(&format!(
                "/v1/workflows/{}/instances{q}",
                crate::client::percent_encode(name)
            ))
            .await?;
        if a.json {
            println!("{}", serde_json::to_string_pretty(&page)?);
            return Ok(());
        }
        println!(
            "{:>7}  {:<20} {:<15} {:<25}  {:<26}  detail",
            "id", "key", "state", "started at", "dimensions"
        );
        for i in page["instances"].as_array().into_iter().flatten() {
            let key = if i["key"].is_null() {
                format!("({})", provisional(i))
            } else {
                cell(&i["key"])
            };
            let dims = i["dimensions"]
                .as_object()
                .map(|d| {
                    d.iter()
                        .map(|(k, v)| format!("{k}={}", cell(v)))
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            let detail = match &i["breach"] {
                Value::Null => String::new(),
                b => format!(
                    "{} overdue {}s",
                    cell(&b["step"]),
                    cell(&b["overdue_seconds"])
                ),
            };
            println!(
                "{:>7}  {:<20} {:<15} {:<25}  {:<26}  {detail}",
                cell(&i["id"]),
                truncate(&key, 20),
                cell(&i["state"]),
                cell(&i["started_at"]),
                truncate(&dims, 26),
            );
        }
        return Ok(());
    }
    let v = c.get("/v1/workflows").await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    print!(
        "{:<22} {:<4} {:<13} {:<12}",
        "workflow", "crit", "version", "key"
    );
    for s in STATES {
        print!(" {s:>9.9}");
    }
    println!();
    for w in v["workflows"].as_array().into_iter().flatten() {
        print!(
            "{:<22} {:<4} {:<13} {:<12}",
            truncate(&cell(&w["name"]), 22),
            cell(&w["criticality"]),
            cell(&w["version"]),
            truncate(&cell(&w["key"]), 12),
        );
        for s in STATES {
            print!(" {:>9}", w["instances"][s].as_i64().unwrap_or(0));
        }
        println!();
    }
    Ok(())
}

fn provisional(i: &Value) -> String {
    i["aliases"]
        .as_array()
        .and_then(|a| a.first())
        .map(|a| format!("{} {}", cell(&a["name"]), cell(&a["value"])))
        .unwrap_or_default()
}

pub async fn trace(a: TraceArgs) -> anyhow::Result<()> {
    let c = Client::new(&a.client)?;
    let v = c
        .get(&format!(
            "/v1/trace{}",
            query(&[("key", Some(a.key.clone()))])
        ))
        .await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let events = v["events"].as_array().cloned().unwrap_or_default();
    println!("{} event(s) carry {}", events.len(), a.key);
    for e in &events {
        let ev = &e["event"];
        println!(
            "  {:<27} {:<32} {:<30} seq {}",
            cell(&e["received_at"]),
            truncate(&cell(&ev["source"]), 32),
            truncate(&cell(&ev["type"]), 30),
            cell(&e["seq"]),
        );
        for d in e["deliveries"].as_array().into_iter().flatten() {
            let err = d["last_error"].as_str().unwrap_or("");
            println!(
                "      → {:<20} {:<14} {}",
                cell(&d["flow"]),
                cell(&d["state"]),
                truncate(err, 60)
            );
        }
    }
    for i in v["instances"].as_array().into_iter().flatten() {
        println!(
            "\nworkflow {} instance {} ({}): {}",
            cell(&i["workflow"]),
            cell(&i["id"]),
            if i["key"].is_null() {
                provisional(i)
            } else {
                cell(&i["key"])
            },
            cell(&i["state"]),
        );
        for h in i["hits"].as_array().into_iter().flatten() {
            println!(
                "  {:<27} {:<16} {} {}",
                cell(&h["occurred_at"]),
                cell(&h["step"]),
                cell(&h["source"]),
                cell(&h["id"])
            );
        }
        for f in i["findings"].as_array().into_iter().flatten() {
            println!("  ! {:<15} {}", cell(&f["kind"]), cell(&f["message"]));
        }
    }
    Ok(())
}

pub async fn findings(a: FindingsArgs) -> anyhow::Result<()> {
    let c = Client::new(&a.client)?;
    let q = query(&[
        ("subject", a.subject.clone()),
        ("workflow", a.workflow.clone()),
        ("kind", a.kind.clone()),
        ("since", a.since.clone()),
        ("after", a.after.map(|n| n.to_string())),
        ("limit", Some(a.limit.to_string())),
    ]);
    let page = c.get(&format!("/v1/findings{q}")).await?;
    let items = page["findings"].as_array().cloned().unwrap_or_default();
    if a.json {
        for f in &items {
            println!("{f}");
        }
    } else {
        println!(
            "{:>6}  {:<25}  {:<16} {:<15} {:<14}  message",
            "id", "at", "workflow", "kind", "step"
        );
        for f in &items {
            println!(
                "{:>6}  {:<25}  {:<16} {:<15} {:<14}  {}",
                cell(&f["id"]),
                cell(&f["at"]),
                truncate(&cell(&f["workflow"]), 16),
                cell(&f["kind"]),
                truncate(&cell(&f["step"]), 14),
                cell(&f["message"]),
            );
        }
    }
    if let Some(next) = page["next_after"].as_i64() {
        eprintln!("next: --after {next}");
    }
    Ok(())
}
