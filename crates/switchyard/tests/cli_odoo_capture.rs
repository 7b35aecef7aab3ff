//! Change capture as an operator meets it, against the simulator run by the real binary:
//! `switchyard odoo install-webhooks` (created, then unchanged, then only what differs; the
//! path token never printed), and `switchyard serve` with an odoo source whose poller and
//! webhook hints store each change once.

mod support;

use serde_json::{Value, json};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn install_webhooks_is_idempotent() {
    let sim = support::OdooSim::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("odoo.secret");
    std::fs::write(&secret, "admin\n").unwrap();
    let config = dir.path().join("switchyard.toml");
    std::fs::write(
        &config,
        format!(
            "[[odoo]]\nname = \"erp\"\nurl = \"{}\"\ndatabase = \"odoopeer\"\nlogin = \"admin\"\nsecret = \"file:{}\"\n",
            sim.base,
            secret.display()
        ),
    )
    .unwrap();
    let url = "http://hub.example.com/v1/webhooks/odoo-orders/s3cret-token";
    let install = |extra: &[&str]| -> Output {
        Command::new(support::bin())
            .arg("--config")
            .arg(&config)
            .args(["odoo", "install-webhooks", "--model", "sale.order"])
            .args([
                "--on",
                "create,write",
                "--fields",
                "name,state",
                "--url",
                url,
            ])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = install(&[]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.starts_with("created automation rule #1 \"Switchyard: sale.order → odoo-orders\""),
        "{stdout}"
    );
    assert!(stdout.contains("/v1/webhooks/odoo-orders/***"), "{stdout}");
    assert!(!stdout.contains("s3cret-token"), "{stdout}");

    let out = install(&[]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("nothing changed"), "{stdout}");

    let out = install(&["--trigger-fields", "state", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["outcome"], "updated");
    assert_eq!(v["changed"], serde_json::json!(["trigger_field_ids"]));

    // an unknown field is refused before anything is written
    let out = install(&["--fields", "name,colour"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("sale.order has no field colour"),
        "{}",
        text(&out.stderr)
    );
}

fn odoo_call(base: &str, model: &str, method: &str, args: Value) -> Value {
    let body = json!({"jsonrpc": "2.0", "method": "call", "id": 1, "params": {
        "service": "object", "method": "execute_kw",
        "args": ["odoopeer", 2, "admin", model, method, args]}});
    let r: Value = reqwest::blocking::Client::new()
        .post(format!("{base}/jsonrpc"))
        .json(&body)
        .send()
        .unwrap()
        .json()
        .unwrap();
    r["result"].clone()
}

#[test]
fn serve_polls_an_odoo_model_and_takes_its_webhook_hints() {
    let sim = support::OdooSim::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("odoo.secret");
    std::fs::write(&secret, "admin\n").unwrap();
    let token = dir.path().join("hint.token");
    std::fs::write(&token, "tok-e2e-77").unwrap();
    let store = format!("sqlite://{}", dir.path().join("hub.db").display());
    let extra = format!(
        r#"
[[odoo]]
name = "erp"
url = "{}"
database = "odoopeer"
login = "admin"
secret = "file:{}"
probe = false

[[sources]]
name = "odoo-orders"
kind = "odoo"
odoo = "erp"
model = "sale.order"
fields = ["name", "state"]
interval_seconds = 1
keys = {{ sale_order = ".data.name" }}
[sources.verify]
kind = "path-token"
secrets = ["file:{}"]
"#,
        sim.base,
        secret.display(),
        token.display()
    );
    let mut hub = support::Instance::new(dir.path(), "hub", &store, &extra);
    let viewer = hub.create_token("viewer", "ops");
    hub.start();
    let out = hub
        .cmd()
        .args([
            "odoo",
            "install-webhooks",
            "--model",
            "sale.order",
            "--fields",
            "name,state",
        ])
        .arg("--url")
        .arg(format!("{}/v1/webhooks/odoo-orders/tok-e2e-77", hub.base()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));

    let partner = odoo_call(
        &sim.base,
        "res.partner",
        "create",
        json!([{"name": "Acme"}]),
    );
    let order = odoo_call(
        &sim.base,
        "sale.order",
        "create",
        json!([{"partner_id": partner}]),
    );
    odoo_call(&sim.base, "sale.order", "action_confirm", json!([[order]]));
    let events = || -> Vec<Value> {
        let r: Value = reqwest::blocking::Client::new()
            .get(format!(
                "{}/v1/events?type=odoo.sale.order.changed",
                hub.base()
            ))
            .bearer_auth(&viewer)
            .send()
            .unwrap()
            .json()
            .unwrap();
        r["events"].as_array().cloned().unwrap_or_default()
    };
    // the confirmed state arrives (from the hint or the poller, whichever is first)
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = events();
        if got.iter().any(|e| e["event"]["data"]["state"] == "sale") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no confirmed order event: {got:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // a few polls later: still one event per committed state
    std::thread::sleep(Duration::from_millis(2500));
    let got = events();
    let states: Vec<&str> = got
        .iter()
        .filter_map(|e| e["event"]["data"]["state"].as_str())
        .collect();
    let mut distinct = states.clone();
    distinct.dedup();
    assert_eq!(states, distinct, "{got:?}");
    assert!(states.len() <= 2, "{states:?}");
    assert_eq!(hub.sigterm().code(), Some(0));
}
