//! `switchyard odoo sim` as a developer meets it: the real binary serving the Odoo simulator
//! on loopback, reached over plain HTTP.

mod support;

use serde_json::{Value, json};
use std::process::Command;
use support::OdooSim as Sim;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn odoo_sim_plays_odoo_18_by_default_and_stops_on_sigterm() {
    let mut sim = Sim::start(&[]);
    assert!(
        sim.banner.starts_with("Odoo 18 simulator (18.0-"),
        "{}",
        sim.banner
    );
    assert!(sim.banner.contains("database odoopeer"), "{}", sim.banner);
    let version = sim.jsonrpc("common", "version", json!([]));
    assert_eq!(version["result"]["server_version_info"][0], 18);
    assert!(
        version["result"]["server_version"]
            .as_str()
            .unwrap()
            .starts_with("18.0-"),
        "{version}"
    );
    // The default admin password logs in; Odoo 18 has no JSON-2 (a redirect to the login).
    let uid = sim.jsonrpc(
        "common",
        "authenticate",
        json!(["odoopeer", "admin", "admin", {}]),
    );
    assert_eq!(uid["result"], 2);
    let r = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(format!("{}/json/2/res.partner/search_count", sim.base))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);

    let status = sim.sigterm();
    assert!(status.success(), "graceful stop exits 0: {status:?}");
}

#[test]
fn odoo_sim_19_serves_json_2_with_the_given_api_keys() {
    let dir = tempfile::tempdir().unwrap();
    let faults = dir.path().join("faults.toml");
    std::fs::write(&faults, "serialization_failures = 1\n").unwrap();
    let sim = Sim::start(&[
        "--odoo-version",
        "19",
        "--database",
        "acme",
        "--admin-password",
        "s3cret",
        "--api-key",
        "k-live",
        "--api-key",
        "k-old:2001-01-01T00:00:00Z",
        "--faults",
        faults.to_str().unwrap(),
    ]);
    assert!(
        sim.banner.starts_with("Odoo 19 simulator (19.0-"),
        "{}",
        sim.banner
    );
    let version = sim.jsonrpc("common", "version", json!([]));
    assert!(
        version["result"]["server_version"]
            .as_str()
            .unwrap()
            .starts_with("19.0-"),
        "{version}"
    );
    let uid = sim.jsonrpc(
        "common",
        "authenticate",
        json!(["acme", "admin", "s3cret", {}]),
    );
    assert_eq!(uid["result"], 2);

    // The faults file is in force from the start: the first object call fails as Odoo does
    // once its own retries are spent, the next one goes through.
    let active = reqwest::blocking::get(format!("{}/__sim/faults", sim.base))
        .unwrap()
        .json::<Value>()
        .unwrap();
    assert_eq!(active["serialization_failures"], 1, "{active}");
    let count = |key: &str| {
        sim.post(
            "/json/2/res.partner/search_count",
            Some(key),
            json!({"domain": []}),
        )
    };
    let (status, body) = count("k-live");
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["name"], "psycopg2.errors.SerializationFailure");
    let (status, body) = count("k-live");
    assert_eq!(status, 200, "{body}");
    assert!(body.as_i64().unwrap() > 0);
    let (status, body) = count("k-old");
    assert_eq!(status, 401, "an expired key is refused: {body}");
    assert_eq!(body["name"], "werkzeug.exceptions.Unauthorized");
}

#[test]
fn a_broken_faults_file_is_refused_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let faults = dir.path().join("faults.toml");
    std::fs::write(&faults, "latency_ms = 10\nlose_response = 1\n").unwrap();
    let out = Command::new(support::bin())
        .args(["odoo", "sim", "--listen", "127.0.0.1:0", "--faults"])
        .arg(&faults)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:2:1: lose_response: unknown field `lose_response`",
            faults.display()
        )),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "it never started");

    let missing = Command::new(support::bin())
        .args(["odoo", "sim", "--faults", "/nonexistent/faults.toml"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        text(&missing.stderr).contains("/nonexistent/faults.toml: cannot read the faults file")
    );
}

/// `switchyard odoo probe` against a running simulator: a table per connection, exit 0 when
/// every step works, 1 when Odoo refuses the credentials, 2 for an unknown connection.
#[test]
fn odoo_probe_reports_each_connection_and_fails_on_refused_credentials() {
    let sim = Sim::start(&[
        "--api-key",
        "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c:2026-01-01T00:00:00Z",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.secret");
    std::fs::write(&good, "admin\n").unwrap();
    let bad = dir.path().join("bad.secret");
    std::fs::write(&bad, "not-the-password\n").unwrap();
    let config = dir.path().join("switchyard.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[odoo]]
name = "erp"
url = "{base}"
database = "odoopeer"
login = "admin"
secret = "file:{good}"

[[odoo]]
name = "stale"
url = "{base}"
database = "odoopeer"
login = "admin"
secret = "file:{bad}"
"#,
            base = sim.base,
            good = good.display(),
            bad = bad.display()
        ),
    )
    .unwrap();
    let probe = |args: &[&str]| {
        Command::new(support::bin())
            .arg("--config")
            .arg(&config)
            .args(["odoo", "probe"])
            .args(args)
            .output()
            .unwrap()
    };

    let out = probe(&["--name", "erp"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.starts_with("erp: ok (Odoo 18.0-20250506, jsonrpc)"),
        "{stdout}"
    );
    for step in ["version", "authenticate", "search_count"] {
        assert!(stdout.contains(&format!("  {step:<13} ok")), "{stdout}");
    }
    // The admin can read its keys: the one given to the simulator expired long ago.
    assert!(
        stdout.contains("API key expires 2026-01-01 00:00 UTC"),
        "{stdout}"
    );
    assert!(
        stdout.contains("warning: the API key of \"erp\" expired on 2026-01-01"),
        "{stdout}"
    );

    let out = probe(&["--json"]);
    assert_eq!(out.status.code(), Some(1), "one connection fails");
    let results: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(results[0]["target"], "erp");
    assert_eq!(results[0]["ok"], true);
    assert_eq!(results[1]["target"], "stale");
    assert_eq!(results[1]["ok"], false);
    let last = results[1]["steps"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["step"], "authenticate");
    assert_eq!(last["class"], "credential");

    let out = probe(&["--name", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no [[odoo]] connection named \"nope\""));
}
