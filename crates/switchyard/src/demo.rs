//! `switchyard demo`: a real hub on a temporary store, fed by a small *simulated* landscape
//! (a shop, Odoo, a WMS, a carrier) over real HTTP, including a retried duplicate, an
//! invalid event and an unauthenticated sender, so a new user sees what is accepted,
//! deduplicated and rejected, and where to look. Later issues grow the landscape.

use crate::ServeArgs;
use crate::serve::{shutdown_signal, start};
use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};
use switchyard_core::Config;
use switchyard_core::token::{Role, generate_token, hash_token};
use switchyard_store::NewToken;

/// The demo's configuration: the shape of a real one, with the store URL filled in at run
/// time through the same environment-override layer operators use.
pub const DEMO_CONFIG: &str = r#"# Switchyard demo configuration (embedded in the binary).
[server]
shutdown_grace_seconds = 5

[ingest]
max_body_bytes = 1048576   # 1 MiB, the default
allowed_origins = ["*"]

[log]
level = "warn"
"#;

#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// Stop after the simulated stream instead of serving until Ctrl-C.
    #[arg(long)]
    exit: bool,
    /// Listen address; default 127.0.0.1:8080, or a free port if that one is taken.
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Business seconds per real second.
    #[arg(long)]
    time_scale: Option<f64>,
}

struct Step {
    label: &'static str,
    expect: u16,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("switchyard-demo-")
        .tempdir()
        .context("creating a temporary directory")?;
    let db = dir.path().join("demo.db");
    let env = vec![(
        "SWITCHYARD__STORE__URL".to_string(),
        format!("sqlite://{}", db.display()),
    )];
    let config = Config::parse(DEMO_CONFIG, "demo.toml (embedded)", env)
        .map_err(|e| anyhow::anyhow!("the embedded demo config is invalid:\n{e}"))?;
    crate::init_logging(&config, None);

    let listen = match args.listen {
        Some(a) => a,
        None => match std::net::TcpListener::bind("127.0.0.1:8080") {
            Ok(l) => {
                drop(l);
                "127.0.0.1:8080".parse()?
            }
            Err(_) => "127.0.0.1:0".parse()?,
        },
    };
    let cancel = shutdown_signal();
    let running = start(
        &config,
        &ServeArgs {
            listen: Some(listen),
            time_scale: args.time_scale,
        },
        cancel.clone(),
    )
    .await?;
    let base = format!("http://{}", running.addr);
    let store = running.state.store.clone();
    let now = running.state.clock.now();

    // Tokens, as an operator would create them: an admin, and one ingest token per sender.
    let admin = generate_token();
    let shop = generate_token();
    for (name, role, secret) in [
        ("demo-admin", Role::Admin, &admin),
        ("demo-senders", Role::Ingest, &shop),
    ] {
        store
            .create_token(
                NewToken {
                    name: name.into(),
                    role,
                    hash: hash_token(secret),
                    created_at: now,
                },
                "cli",
            )
            .await?;
    }

    println!(
        "Switchyard demo — a SIMULATED landscape (shop, Odoo, WMS, carrier) sending to a real hub"
    );
    println!("hub: {base}   store: {} (temporary)\n", db.display());

    let http = reqwest::Client::new();
    let url = format!("{base}/v1/events");
    let t = |min: i64| (now - chrono::Duration::minutes(min)).to_rfc3339();
    let order = |id: &str, name: &str, amount: f64, at: String| {
        json!({
            "specversion": "1.0", "id": id, "source": "https://shop.example.com",
            "type": "shop.order.created", "subject": name, "time": at,
            "datacontenttype": "application/json",
            "data": {"order": name, "customer": "Acme Industrial", "amount": amount, "currency": "EUR",
                     "lines": [{"sku": "PUMP-200", "qty": 2}, {"sku": "SEAL-KIT", "qty": 4}]}
        })
    };
    let structured = |body: Value| {
        http.post(&url)
            .bearer_auth(&shop)
            .header("content-type", "application/cloudevents+json")
            .body(body.to_string())
    };
    let wms = |id: &str, ty: &str, min: i64| {
        json!({"specversion": "1.0", "id": id, "source": "https://wms.example.com/wh1", "type": ty,
               "subject": "WH/OUT/00017", "time": t(min),
               "data": {"picking": "WH/OUT/00017", "origin": "S00042", "warehouse": "WH1"}})
    };

    let steps: Vec<(Step, reqwest::RequestBuilder)> = vec![
        (
            Step { label: "shop: order #1042 created (structured)", expect: 202 },
            structured(order("shop-1042", "#1042", 1840.0, t(9))),
        ),
        (
            Step { label: "shop: order #1043 created (structured)", expect: 202 },
            structured(order("shop-1043", "#1043", 312.5, t(8))),
        ),
        (
            // Odoo confirms the sale order: binary mode, attributes in ce-* headers
            Step { label: "odoo: sale order confirmed (binary)", expect: 202 },
            http.post(&url)
                .bearer_auth(&shop)
                .header("ce-specversion", "1.0")
                .header("ce-id", "sale.order-42-confirmed")
                .header("ce-source", "https://odoo.example.com/sale.order")
                .header("ce-type", "odoo.sale.order.confirmed")
                .header("ce-subject", "S00042")
                .header("ce-time", t(7))
                .header("ce-origin", "%231042") // percent-encoded "#1042"
                .header("content-type", "application/json")
                .body(json!({"name": "S00042", "origin": "#1042", "state": "sale", "amount_total": 1840.0}).to_string()),
        ),
        (
            Step { label: "wms: picking released, picked, packed (batch of 3)", expect: 202 },
            http.post(&url)
                .bearer_auth(&shop)
                .header("content-type", "application/cloudevents-batch+json")
                .body(
                    json!([
                        wms("wms-17-released", "wms.picking.released", 6),
                        wms("wms-17-picked", "wms.picking.picked", 4),
                        wms("wms-17-packed", "wms.picking.packed", 3)
                    ])
                    .to_string(),
                ),
        ),
        (
            // the shop's webhook retries order #1042 with the same id: stored once
            Step { label: "shop: retry of order #1042 (same id)", expect: 200 },
            structured(order("shop-1042", "#1042", 1840.0, t(9))),
        ),
        (
            // a carrier event with a broken timestamp: rejected with the field named
            Step { label: "carrier: label created with a bad timestamp", expect: 400 },
            structured(json!({"specversion": "1.0", "id": "dhl-778", "source": "https://carrier.example.com",
                   "type": "carrier.label.created", "time": "yesterday 14:00",
                   "data": {"tracking": "JJD000390007788", "picking": "WH/OUT/00017"}})),
        ),
        (
            Step { label: "unknown sender without a token", expect: 401 },
            http.post(&url)
                .header("content-type", "application/cloudevents+json")
                .body(order("shop-1044", "#1044", 99.0, t(1)).to_string()),
        ),
    ];
    let mut results = Vec::new();
    for (step, request) in steps {
        results.push(report(step, request.send().await?).await?);
    }

    let stored = store.count_events().await?;
    println!(
        "\n{} requests: {} events stored, 1 duplicate answered 200 and stored once, 2 requests rejected with problem+json.",
        results.len(),
        stored
    );
    if stored != 6 || results.iter().any(|ok| !ok) {
        bail!("the hub did not behave as the demo expects (stored {stored}, expected 6)");
    }

    println!("\nWhere to look:");
    println!("  export SWITCHYARD_URL={base} SWITCHYARD_TOKEN={admin}");
    println!("  switchyard events list             # or: cargo run -- events list");
    println!("  curl -H \"Authorization: Bearer $SWITCHYARD_TOKEN\" {base}/v1/events");
    println!("  curl {base}/metrics | grep switchyard_ingest");
    println!("  curl {base}/readyz");

    if args.exit {
        cancel.cancel();
    } else {
        println!("\nServing until Ctrl-C; the temporary store is deleted on exit.");
    }
    running.wait().await;
    drop(dir);
    Ok(())
}

async fn report(step: Step, resp: reqwest::Response) -> anyhow::Result<bool> {
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    let what = match status {
        202 => {
            if let Some(events) = body["events"].as_array() {
                let seqs: Vec<String> = events.iter().map(|e| e["seq"].to_string()).collect();
                format!("stored       seq {}", seqs.join(", "))
            } else {
                format!("stored       seq {}", body["seq"])
            }
        }
        200 => format!(
            "duplicate    seq {} (already stored; not stored again)",
            body["seq"]
        ),
        _ => format!(
            "rejected     HTTP {status} {}: {}",
            body["type"].as_str().unwrap_or(""),
            body["detail"].as_str().unwrap_or("")
        ),
    };
    let ok = status == step.expect;
    println!(
        "  {} {:<52} {}",
        if ok { "✓" } else { "✗" },
        step.label,
        what
    );
    Ok(ok)
}
