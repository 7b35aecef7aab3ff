//! The shipped configuration of the reference landscape (`demo/switchyard.toml`) compiles,
//! routes every cause to the team of the reference routing, and carries the reference
//! scenario's SLAs (PRODUCT.md). `switchyard check` of the same file, with its secrets set,
//! is in `crates/switchyard/tests/cli.rs`.

use switchyard_core::alerts::{Alerting, Labels};
use switchyard_core::config::Config;
use switchyard_core::workflows::Workflows;

const FILE: &str = "demo/switchyard.toml";
const TEXT: &str = include_str!("../../../demo/switchyard.toml");

/// The file with its `env:DEMO_*` secrets turned into `file:` references to made-up values
/// (setting variables would race with other tests of this process).
/// The directory holds the secret files, read again when sources compile: keep it.
fn config() -> (tempfile::TempDir, Config) {
    let dir = tempfile::tempdir().unwrap();
    let mut text = TEXT.to_string();
    let mut at = 0;
    while let Some(i) = text[at..].find("env:DEMO_") {
        let start = at + i;
        let end = start + text[start..].find('"').expect("a quoted reference");
        let name = text[start + 4..end].to_string();
        let path = dir.path().join(&name);
        // Signing secrets of the Standard Webhooks scheme must be whsec_ + base64.
        std::fs::write(&path, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let reference = format!("file:{}", path.display());
        text.replace_range(start..end, &reference);
        at = start + reference.len();
    }
    let c = Config::parse(&text, FILE, Vec::new()).unwrap_or_else(|e| panic!("{e}"));
    (dir, c)
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn every_section_compiles() {
    let (_dir, c) = config();
    switchyard_core::sources::Sources::compile(&c).expect("sources");
    switchyard_core::flows::Flows::compile(&c).expect("flows");
    Workflows::compile(&c).expect("workflows");
    switchyard_core::batch::BatchMonitors::compile(&c.batch_monitors).expect("batch monitors");
    c.compiled_reconciliations().expect("reconciliations");
    Alerting::compile(&c).expect("alerting");
}

#[test]
fn each_cause_reaches_the_team_of_the_reference_routing() {
    let a = Alerting::compile(&config().1).expect("alerting");
    let table = [
        ("partner_throttling", "integration-support"),
        ("partner_down", "integration-support"),
        ("mapping_drift", "integration-support"),
        ("upstream_backlog", "operations"),
        ("business_process", "operations"),
        ("data_mismatch", "operations"),
        ("batch_failure", "operations"),
        ("odoo_validation", "application-support"),
        ("odoo_unavailable", "application-support"),
        ("credential_expiry", "application-support"),
    ];
    for (cause, team) in table {
        let got: Vec<&str> = a
            .routes_for(&labels(&[("cause", cause), ("alertname", "x")]))
            .iter()
            .map(|r| r.receiver.as_str())
            .collect();
        assert_eq!(got, [team], "cause {cause}");
    }
}

#[test]
fn the_workflows_carry_the_reference_slas() {
    let w = Workflows::compile(&config().1).expect("workflows");
    // (workflow, step, SLA seconds, measured from: None = the instance's start)
    let want = [
        ("order_to_cash", "in_odoo", 120, None),
        ("order_to_cash", "released", 300, Some("confirmed")),
        ("order_to_cash", "shipment_posted", 600, Some("dispatched")),
        ("order_to_cash", "invoiced", 3600, Some("shipment_posted")),
        ("make_to_order", "posted", 300, Some("completed")),
        ("quality_hold", "released", 900, None),
    ];
    for (wf, step, sla, from) in want {
        let flow = w.get(wf).unwrap_or_else(|| panic!("workflow {wf}"));
        let s = flow
            .steps
            .iter()
            .find(|s| s.name == step)
            .unwrap_or_else(|| panic!("{wf}.{step}"));
        assert_eq!(s.sla.map(|d| d.num_seconds()), Some(sla), "{wf}.{step} SLA");
        assert_eq!(
            s.from.map(|i| flow.steps[i].name.as_str()),
            from,
            "{wf}.{step} measured from"
        );
    }
}
