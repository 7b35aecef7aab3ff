//! `switchyard demo`: a real hub on a temporary store, fed by a small *simulated* landscape
//! (a shop sending signed webhooks, Odoo, a WMS, a carrier) over real HTTP, including a
//! retried duplicate, a forged webhook, an invalid event and an unauthenticated sender, so
//! a new user sees what is accepted, deduplicated and rejected, one order found across
//! systems by its business keys, and where to look. Later issues grow the landscape.

use crate::ServeArgs;
use crate::serve::{shutdown_signal, start};
use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};
use switchyard_core::Config;
use switchyard_core::token::{Role, generate_token, hash_token};
use switchyard_store::NewToken;

/// The demo's configuration: the shape of a real one. The store URL is filled in at run
/// time through the same environment-override layer operators use; `{SECRET_FILE}` is the
/// shop's webhook secret, written to the temporary directory.
pub const DEMO_CONFIG: &str = r#"# Switchyard demo configuration (embedded in the binary).
[server]
shutdown_grace_seconds = 5

[ingest]
max_body_bytes = 1048576   # 1 MiB, the default
allowed_origins = ["*"]
accept_undeclared_sources = true   # the carrier is not declared yet

[log]
level = "error"   # the demo prints its own account of what happened

[retention]
payload_days = 30
dedupe_days = 90

# The shop cannot send CloudEvents: a Shopify-style signed webhook, turned into one.
[[sources]]
name = "shop"
kind = "webhook"
source = "https://shop.example.com"
keys = { shop_order = ".data.name" }
[sources.verify]
kind = "hmac-sha256"
header = "X-Shopify-Hmac-Sha256"
secrets = ["file:{SECRET_FILE}"]
[sources.event]
id = "header:X-Shopify-Webhook-Id"
type = '"shop.order." + ($headers["x-shopify-topic"] | split("/") | .[1])'
subject = ".name"
time = ".created_at"

# Odoo names the order S00042 and remembers the shop's #1042 as its origin: one event that
# carries both keys links them.
[[sources]]
name = "odoo"
kind = "cloudevents"
source = "https://odoo.example.com/*"
keys = { sale_order = ".data.name", shop_order = ".data.origin" }

# The WMS knows the picking and the sale order it serves.
[[sources]]
name = "wms"
kind = "cloudevents"
source = "https://wms.example.com/*"
keys = { picking = ".subject", sale_order = ".data.origin" }
retention = { quota_mib = 512 }
"#;

/// Shopify-style signature: base64 HMAC-SHA256 of the raw body.
fn shopify_signature(secret: &str, body: &[u8]) -> String {
    use base64::Engine;
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

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
    let shop_secret = format!("shpss_{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
    let secret_file = dir.path().join("shop-webhook.secret");
    std::fs::write(&secret_file, &shop_secret).context("writing the demo's webhook secret")?;
    let text = DEMO_CONFIG.replace("{SECRET_FILE}", &secret_file.display().to_string());
    let config = Config::parse(&text, "demo.toml (embedded)", env)
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
    let shop_order = |name: &str, amount: f64, at: String| {
        json!({"id": 820982911946154508u64, "name": name, "created_at": at, "customer": "Acme Industrial",
               "total_price": amount, "currency": "EUR",
               "line_items": [{"sku": "PUMP-200", "quantity": 2}, {"sku": "SEAL-KIT", "quantity": 4}]})
        .to_string()
    };
    // the shop's webhook, signed as Shopify signs (or with a wrong secret)
    let webhook = |delivery: &str, body: String, secret: &str| {
        http.post(format!("{base}/v1/webhooks/shop"))
            .header("content-type", "application/json")
            .header("x-shopify-topic", "orders/create")
            .header("x-shopify-webhook-id", delivery)
            .header(
                "x-shopify-hmac-sha256",
                shopify_signature(secret, body.as_bytes()),
            )
            .body(body)
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
            Step { label: "shop: order #1042 (signed webhook)", expect: 202 },
            webhook("b54557e4-1042", shop_order("#1042", 1840.0, t(9)), &shop_secret),
        ),
        (
            Step { label: "shop: order #1043 (signed webhook)", expect: 202 },
            webhook("b54557e4-1043", shop_order("#1043", 312.5, t(8)), &shop_secret),
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
            // the shop retries the #1042 delivery (same webhook id): stored once
            Step { label: "shop: retry of order #1042 (same delivery)", expect: 200 },
            webhook("b54557e4-1042", shop_order("#1042", 1840.0, t(9)), &shop_secret),
        ),
        (
            // someone posts an order signed with the wrong secret: refused, nothing stored
            Step { label: "forged shop webhook (wrong secret)", expect: 403 },
            webhook("forged-1", shop_order("#6666", 99999.0, t(2)), "not-the-secret"),
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
                .body(json!({"specversion": "1.0", "id": "x-1", "source": "https://x.example.com", "type": "t"}).to_string()),
        ),
    ];
    let mut results = Vec::new();
    for (step, request) in steps {
        results.push(report(step, request.send().await?).await?);
    }

    let stored = store.count_events().await?;
    println!(
        "\n{} requests: {} events stored, 1 duplicate answered 200 and stored once, 3 requests rejected with problem+json.",
        results.len(),
        stored
    );
    if stored != 6 || results.iter().any(|ok| !ok) {
        bail!("the hub did not behave as the demo expects (stored {stored}, expected 6)");
    }

    // One order, whatever each system calls it: found together by business key.
    for (value, what) in [
        ("#1042", "the shop's order number"),
        ("S00042", "Odoo's sale order"),
    ] {
        let page: Value = http
            .get(format!("{base}/v1/events"))
            .query(&[("key", value)])
            .bearer_auth(&admin)
            .send()
            .await?
            .json()
            .await?;
        let found = page["events"].as_array().cloned().unwrap_or_default();
        println!("\nEvents carrying {value} ({what}), across systems:");
        for e in &found {
            let keys: Vec<String> = e["keys"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|k| {
                    format!(
                        "{}={}",
                        k["name"].as_str().unwrap_or(""),
                        k["value"].as_str().unwrap_or("")
                    )
                })
                .collect();
            println!(
                "  seq {:<3} {:<36} {:<28} keys: {}",
                e["seq"].to_string(),
                e["event"]["source"].as_str().unwrap_or(""),
                e["event"]["type"].as_str().unwrap_or(""),
                keys.join(", ")
            );
        }
        let expected = if value == "#1042" { 2 } else { 4 };
        if found.len() != expected {
            bail!(
                "expected {expected} events carrying {value}, found {}",
                found.len()
            );
        }
    }

    println!("\nWhere to look:");
    println!("  the dashboard: {base}/  (sign in with the admin token {admin})");
    println!("  export SWITCHYARD_URL={base} SWITCHYARD_TOKEN={admin}");
    println!("  switchyard events list             # or: cargo run -- events list");
    println!("  switchyard events search S00042    # one order across systems");
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
