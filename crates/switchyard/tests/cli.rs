//! The CLI as an operator meets it: the real binary, a real config file, a real server.

mod support;

use std::process::{Command, Output};
use support::Instance;

fn run(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(support::bin())
        .current_dir(dir)
        .args(args)
        .env_remove("SWITCHYARD_URL")
        .env_remove("SWITCHYARD_TOKEN")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn check_and_serve_report_every_config_problem_the_same_way() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.toml"),
        "[server]\nlisten = \"localhost\"\n\n[store]\nurl = \"mysql://db/x\"\npool_size = -1\n\n[ingest]\nmax_body = 10\n",
    )
    .unwrap();
    let check = run(dir.path(), &["--config", "bad.toml", "check"]);
    assert_eq!(check.status.code(), Some(2));
    let serve = run(dir.path(), &["--config", "bad.toml", "serve"]);
    assert_eq!(serve.status.code(), Some(2), "serve refuses a bad config");
    assert_eq!(
        text(&check.stderr),
        text(&serve.stderr),
        "same message from both"
    );
    insta::assert_snapshot!(text(&check.stderr));

    std::fs::write(
        dir.path().join("good.toml"),
        "[store]\nurl = \"sqlite://./x.db\"\n",
    )
    .unwrap();
    let ok = run(dir.path(), &["--config", "good.toml", "check"]);
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    assert!(text(&ok.stdout).contains("configuration is valid"));
    assert!(
        !dir.path().join("x.db").exists(),
        "check starts nothing and creates nothing"
    );

    let missing = run(dir.path(), &["--config", "nope.toml", "check"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing.stderr).contains("cannot read the configuration file"));
}

/// The shipped reference configuration passes `check` once its secrets exist, and names
/// each missing one (file, line, key) when they do not.
#[test]
fn the_shipped_demo_configuration_checks_with_its_secrets_set() {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../demo/switchyard.toml");
    let file = file.to_str().unwrap();
    let secrets = [
        ("DEMO_ODOO_API_KEY", "demo-odoo-key"),
        ("DEMO_SHOP_WEBHOOK_SECRET", "shpss_demo"),
        (
            "DEMO_FASTSHIP_SECRET",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        ),
        ("DEMO_ECOPOST_SECRET", "whsec_c2VjcmV0LWZvci1lY29wb3N0"),
        ("DEMO_WMS_TOKEN", "demo-wms"),
        ("DEMO_FASTSHIP_TOKEN", "demo-fastship"),
        ("DEMO_ECOPOST_TOKEN", "demo-ecopost"),
        ("DEMO_MES_SIGNING_SECRET", "whsec_bWVzLXNpZ25pbmc="),
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut with = Command::new(support::bin());
    with.current_dir(dir.path())
        .args(["--config", file, "check"]);
    for (k, v) in secrets {
        with.env(k, v);
    }
    let ok = with.output().unwrap();
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    assert!(text(&ok.stdout).contains("configuration is valid"));

    let mut without = Command::new(support::bin());
    without
        .current_dir(dir.path())
        .args(["--config", file, "check"]);
    for (k, _) in secrets {
        without.env_remove(k);
    }
    let refused = without.output().unwrap();
    assert_eq!(refused.status.code(), Some(2));
    let err = text(&refused.stderr);
    for (k, _) in secrets {
        assert!(
            err.contains(&format!("environment variable {k} is not set")),
            "{k} missing from:\n{err}"
        );
    }
    assert!(err.contains("switchyard.toml:"), "positions: {err}");
}

#[test]
fn operator_commands_go_through_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    let mut inst = Instance::new(dir.path(), "ops", &url, "");
    let migrate = inst.cmd().arg("migrate").output().unwrap();
    assert!(migrate.status.success(), "{}", text(&migrate.stderr));
    let admin = inst.create_token("admin", "alice");
    let ingest = inst.create_token("ingest", "shop");
    assert!(admin.starts_with("sy_") && admin.len() == 67);
    inst.start();
    let base = inst.base();

    let http = reqwest::blocking::Client::new();
    for i in 0..3 {
        let r = http
            .post(format!("{base}/v1/events"))
            .bearer_auth(&ingest)
            .header("content-type", "application/cloudevents+json")
            .body(format!(
                r##"{{"specversion":"1.0","id":"o{i}","source":"/shop","type":"order.created","subject":"#{i}"}}"##
            ))
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 202);
    }

    let cli = |args: &[&str], token: &str| {
        Command::new(support::bin())
            .args(args)
            .args(["--url", &base, "--token", token])
            .output()
            .unwrap()
    };
    let list = cli(&["events", "list"], &admin);
    assert!(list.status.success(), "{}", text(&list.stderr));
    let out = text(&list.stdout);
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(out.contains("order.created") && out.contains("o2"));

    let get = cli(
        &["events", "get", "--source", "/shop", "--id", "o1"],
        &admin,
    );
    assert!(get.status.success(), "{}", text(&get.stderr));
    let v: serde_json::Value = serde_json::from_slice(&get.stdout).unwrap();
    assert_eq!(v["event"]["subject"], "#1");

    // an ingest token cannot read: the CLI prints the problem and fails
    let denied = cli(&["events", "list"], &ingest);
    assert!(!denied.status.success());
    assert!(
        text(&denied.stderr).contains("HTTP 403"),
        "{}",
        text(&denied.stderr)
    );

    let tokens = cli(&["token", "list"], &admin);
    assert!(tokens.status.success());
    let t = text(&tokens.stdout);
    assert!(t.contains("alice") && t.contains("shop") && t.contains("cli"));
    assert!(!t.contains(&ingest), "tokens are never shown again");

    let revoke = cli(&["token", "revoke", "2"], &admin);
    assert!(revoke.status.success(), "{}", text(&revoke.stderr));
    let r = http
        .post(format!("{base}/v1/events"))
        .bearer_auth(&ingest)
        .header("content-type", "application/cloudevents+json")
        .body(r#"{"specversion":"1.0","id":"late","source":"/shop","type":"t"}"#)
        .send()
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        401,
        "revoked tokens stop working at once"
    );

    // purge runs as a server-side job; a revoked token may not start it
    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let refused = cli(
        &["events", "purge", "--before", &later, "--source", "/shop"],
        &ingest,
    );
    assert!(!refused.status.success());
    let dry = cli(
        &[
            "events",
            "purge",
            "--dry-run",
            "--before",
            &later,
            "--source",
            "/shop",
        ],
        &admin,
    );
    assert!(dry.status.success(), "{}", text(&dry.stderr));
    assert!(
        text(&dry.stdout).contains("would delete 3 event(s)"),
        "{}",
        text(&dry.stdout)
    );
    let still = cli(&["events", "list"], &admin);
    assert_eq!(
        text(&still.stdout).lines().count(),
        3,
        "a dry run deletes nothing"
    );
    let purge = cli(
        &["events", "purge", "--before", &later, "--source", "/shop"],
        &admin,
    );
    assert!(purge.status.success(), "{}", text(&purge.stderr));
    let jobs = cli(&["jobs", "list"], &admin);
    let j = text(&jobs.stdout);
    assert!(
        j.contains("events.purge") && j.contains("succeeded") && j.contains("3/3"),
        "{j}"
    );
    let after = cli(&["events", "list"], &admin);
    assert_eq!(
        text(&after.stdout).lines().count(),
        0,
        "all three events purged"
    );
    let bad = cli(&["events", "purge", "--before", "tomorrow"], &admin);
    assert!(!bad.status.success());
    assert!(
        text(&bad.stderr).contains("HTTP 400"),
        "{}",
        text(&bad.stderr)
    );

    let status = inst.sigterm();
    assert!(status.success(), "graceful shutdown exits 0: {status:?}");
}

#[test]
fn demo_runs_end_to_end_and_checks_itself() {
    let out = Command::new(support::bin())
        .args(["demo", "--exit", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("SIMULATED"));
    assert!(stdout.contains("6 events stored"));
    assert!(stdout.contains("duplicate"));
    assert!(stdout.contains("HTTP 400"));
    assert!(stdout.contains("HTTP 401"));
    assert!(
        stdout.contains("HTTP 403 /problems/invalid-signature"),
        "{stdout}"
    );
    assert!(stdout.contains("Events carrying #1042"), "{stdout}");
    assert!(
        stdout.contains("picking=WH/OUT/00017, sale_order=S00042"),
        "{stdout}"
    );
    assert!(
        !stdout.contains('✗'),
        "every step behaved as expected:\n{stdout}"
    );
}

#[test]
fn scaled_clock_continues_the_same_simulated_day_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("clock.db").display());
    let mut inst = Instance::new(dir.path(), "clock", &url, "\n[clock]\nscale = 3600.0\n");
    let ingest = inst.create_token("ingest", "shop");
    let viewer = inst.create_token("viewer", "v");
    let http = reqwest::blocking::Client::new();
    let post = |base: &str, id: &str| {
        let r = http
            .post(format!("{base}/v1/events"))
            .bearer_auth(&ingest)
            .header("content-type", "application/cloudevents+json")
            .body(format!(
                r#"{{"specversion":"1.0","id":"{id}","source":"/s","type":"t"}}"#
            ))
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 202);
    };
    let received = |base: &str, id: &str| -> chrono::DateTime<chrono::Utc> {
        let v: serde_json::Value = http
            .get(format!("{base}/v1/events?source=/s&id={id}"))
            .bearer_auth(&viewer)
            .send()
            .unwrap()
            .json()
            .unwrap();
        v["events"][0]["received_at"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    inst.start();
    post(&inst.base(), "a");
    let a = received(&inst.base(), "a");
    inst.sigterm();
    std::thread::sleep(std::time::Duration::from_millis(300));
    inst.start();
    post(&inst.base(), "b");
    let b = received(&inst.base(), "b");
    let business = (b - a).num_seconds();
    // ≥ 0.3 real seconds passed at 3600×: at least 18 business minutes, and the clock did
    // not restart from wall time (which would put b before a or at most seconds after).
    assert!(
        business >= 18 * 60,
        "business time advanced only {business}s across the restart"
    );
}

#[test]
fn a_second_server_on_the_same_sqlite_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("one.db").display());
    let mut first = Instance::new(dir.path(), "first", &url, "");
    first.start();
    let second = Instance::new(dir.path(), "second", &url, "");
    let out = second.cmd().arg("serve").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("another `switchyard serve` is already using"),
        "{}",
        text(&out.stderr)
    );
    // the bootstrap still works beside the running server
    let token = first.create_token("viewer", "beside");
    assert!(token.starts_with("sy_"));
    first.kill9();
    // the kernel released the lock with the killed process
    let mut third = Instance::new(dir.path(), "third", &url, "");
    third.start();
    assert!(third.sigterm().success());
}
