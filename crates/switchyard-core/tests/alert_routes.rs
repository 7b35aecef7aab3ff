//! The alert routing tree as tables: labels in, receivers out — the reference scenario's
//! routing by cause among them — and `check`'s positions for broken alerting sections.

use switchyard_core::alerts::{Alerting, Labels};
use switchyard_core::config::Config;

const FILE: &str = "switchyard.toml";

/// The reference routing (PRODUCT.md, issue 9): by cause to the three teams, with a
/// critical page for operations beside its chat channel, and a carrier-specific override.
pub const REFERENCE: &str = r#"
[[destinations]]
name = "integration-hook"
url = "http://127.0.0.1:9/integration"

[[destinations]]
name = "ops-slack"
url = "http://127.0.0.1:9/ops"

[[destinations]]
name = "ops-pager"
url = "http://127.0.0.1:9/pager"

[[destinations]]
name = "appsupport-hook"
url = "http://127.0.0.1:9/app"

[[destinations]]
name = "carrier-desk"
url = "http://127.0.0.1:9/carrier"

[[receivers]]
name = "integration-support"
[[receivers.notify]]
type = "webhook"
destination = "integration-hook"

[[receivers]]
name = "operations"
[[receivers.notify]]
type = "slack"
destination = "ops-slack"

[[receivers]]
name = "operations-pager"
team = "operations"
[[receivers.notify]]
type = "webhook"
destination = "ops-pager"

[[receivers]]
name = "application-support"
[[receivers.notify]]
type = "webhook"
destination = "appsupport-hook"

[[receivers]]
name = "carrier-desk"
team = "integration-support"
[[receivers.notify]]
type = "webhook"
destination = "carrier-desk"

[route]
receiver = "integration-support"
group_by = ["alertname", "cause"]

[[route.routes]]
matchers = ['cause=~"partner_throttling|partner_down|mapping_drift"']
receiver = "integration-support"

  [[route.routes.routes]]
  matchers = ['destination="carrier-b"']
  receiver = "carrier-desk"

[[route.routes]]
matchers = ['cause=~"upstream_backlog|business_process|data_mismatch|batch_failure"']
receiver = "operations"
group_by = ["workflow", "step", "cause"]

  [[route.routes.routes]]
  matchers = ['severity="critical"']
  receiver = "operations-pager"
  continue = true

  [[route.routes.routes]]
  matchers = ['severity=~"critical|high"']
  receiver = "operations"

[[route.routes]]
matchers = ['cause=~"odoo_validation|odoo_unavailable|credential_expiry"']
receiver = "application-support"
"#;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn compiled(text: &str) -> Alerting {
    let c = Config::parse(text, FILE, Vec::new()).unwrap_or_else(|e| panic!("{e}"));
    Alerting::compile(&c).expect("compiles")
}

/// Labels in, receivers out.
type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);

#[test]
fn reference_routes_by_cause() {
    let a = compiled(REFERENCE);
    let cases: &[Case] = &[
        // The three reference-scenario routes.
        (
            &[
                ("cause", "partner_throttling"),
                ("destination", "carrier-a"),
            ],
            &["integration-support"],
        ),
        (
            &[("cause", "upstream_backlog"), ("source", "wms")],
            &["operations"],
        ),
        (
            &[("cause", "odoo_validation"), ("flow", "lots-to-odoo")],
            &["application-support"],
        ),
        // The rest of the reference table.
        (&[("cause", "partner_down")], &["integration-support"]),
        (&[("cause", "mapping_drift")], &["integration-support"]),
        (
            &[("cause", "business_process"), ("severity", "high")],
            &["operations"],
        ),
        (&[("cause", "data_mismatch")], &["operations"]),
        (&[("cause", "batch_failure")], &["operations"]),
        (&[("cause", "odoo_unavailable")], &["application-support"]),
        (&[("cause", "credential_expiry")], &["application-support"]),
        // A nested route overrides its parent.
        (
            &[
                ("cause", "partner_throttling"),
                ("destination", "carrier-b"),
            ],
            &["carrier-desk"],
        ),
        // `continue`: a critical breach pages and also reaches the channel.
        (
            &[("cause", "business_process"), ("severity", "critical")],
            &["operations-pager", "operations"],
        ),
        // No cause matches: the root's receiver.
        (&[("alertname", "x")], &["integration-support"]),
        (&[("cause", "something_else")], &["integration-support"]),
    ];
    for (l, want) in cases {
        let got: Vec<&str> = a
            .routes_for(&labels(l))
            .iter()
            .map(|r| r.receiver.as_str())
            .collect();
        assert_eq!(&got, want, "labels {l:?}");
    }
}

#[test]
fn groups_inherit_and_override_group_by() {
    let a = compiled(REFERENCE);
    let l = labels(&[
        ("alertname", "breach"),
        ("cause", "business_process"),
        ("severity", "warning"),
        ("workflow", "order_to_cash"),
        ("step", "invoiced"),
        ("warehouse", "WH1"),
    ]);
    let routes = a.routes_for(&l);
    assert_eq!(routes.len(), 1);
    let (key, group) = routes[0].group_of(&l);
    assert_eq!(
        group,
        labels(&[
            ("cause", "business_process"),
            ("step", "invoiced"),
            ("workflow", "order_to_cash")
        ])
    );
    assert!(key.starts_with("0.1:"), "{key}");
    // The integration route inherits the root's group_by.
    let l = labels(&[
        ("alertname", "dead"),
        ("cause", "mapping_drift"),
        ("flow", "f"),
    ]);
    let (_, group) = a.routes_for(&l)[0].group_of(&l);
    assert_eq!(
        group,
        labels(&[("alertname", "dead"), ("cause", "mapping_drift")])
    );
    // Timings inherit the defaults.
    assert_eq!(routes[0].group_wait, 30);
    assert_eq!(routes[0].group_interval, 300);
    assert_eq!(routes[0].repeat_interval, 14_400);
}

#[test]
fn notifiers_are_critical_flows() {
    let c = Config::parse(REFERENCE, FILE, Vec::new()).unwrap();
    let flows = switchyard_core::flows::Flows::compile(&c).unwrap();
    let f = flows.flow("notify.operations.0").expect("generated flow");
    assert_eq!(f.destination, "ops-slack");
    assert_eq!(f.lane, switchyard_core::delivery::Lane::Critical);
    assert_eq!(f.retry, switchyard_core::alerts::NOTIFIER_RETRY);
}

#[test]
fn a_notifier_may_set_its_retry_policy() {
    let text = r#"
[[destinations]]
name = "hook"
url = "http://127.0.0.1:9/x"
[[receivers]]
name = "ops"
[[receivers.notify]]
type = "webhook"
destination = "hook"
retry = { max_attempts = 3, initial_ms = 100 }
[route]
receiver = "ops"
"#;
    let c = Config::parse(text, FILE, Vec::new()).unwrap_or_else(|e| panic!("{e}"));
    let flows = switchyard_core::flows::Flows::compile(&c).unwrap();
    let r = flows.flow("notify.ops.0").unwrap().retry;
    assert_eq!((r.max_attempts, r.initial_ms), (3, 100));
    assert_eq!(
        r.max_age_seconds, 86_400,
        "the other fields keep their defaults"
    );

    let got = errors(&text.replace("max_attempts = 3", "max_attempts = 0"));
    assert!(
        got.contains(
            "switchyard.toml:10:11: receivers[0].notify[0].retry.max_attempts: must be at least 1"
        ),
        "{got}"
    );
}

fn errors(text: &str) -> String {
    match Config::parse(text, FILE, Vec::new()) {
        Ok(_) => "no errors".into(),
        Err(e) => e.0.iter().map(|e| format!("{e}\n")).collect(),
    }
}

#[test]
fn broken_alerting_sections_are_reported_with_positions() {
    let text = r#"
[[destinations]]
name = "hook"
url = "http://127.0.0.1:9/x"

[[alert_rules]]
name = "bad-kind"
on = "finding"
findings = ["breach", "late"]
subjects = ["nope"]

[[alert_rules]]
name = "bad-measure"
on = "measure"
measure = "queue_length"
op = "=="

[[alert_rules]]
name = "bad-summary"
on = "delivery"
outcome = "dead_letter"
summary = ".labels | ("

[[receivers]]
name = "ops"
[[receivers.notify]]
type = "email"
destination = "hook"

[[receivers.notify]]
type = "slack"
destination = "missing"
template = "{text: .data.title"

[route]
receiver = "ops"
group_wait_seconds = 10

[[route.routes]]
matchers = ['cause=~"("', 'severity']
receiver = "nobody"
mute_during = ["weekend"]

[[inhibit_rules]]
source_matchers = []
target_matchers = ['cause!~"odoo_.*"']

[[maintenance_windows]]
name = "upgrade"
schedule = "0 2 * *"
duration_minutes = 0
timezone = "Mars/Olympus"
"#;
    let got = errors(text);
    for want in [
        "switchyard.toml:9:23: alert_rules[0].findings[1]: unknown finding kind \"late\"",
        "switchyard.toml:10:13: alert_rules[0].subjects[0]: no workflow, batch monitor or reconciliation is named \"nope\"",
        "switchyard.toml:15:1: alert_rules[1].measure: unknown measure \"queue_length\"",
        "switchyard.toml:16:1: alert_rules[1].op: \"==\" is not one of >, >=, <, <=",
        "switchyard.toml:12:1: alert_rules[1].threshold: a measure rule needs a threshold",
        "switchyard.toml:22:1: alert_rules[2].summary: jq syntax error",
        "switchyard.toml:28:1: receivers[0].notify[0].destination: an email notifier needs an smtp destination; \"hook\" is not one",
        "switchyard.toml:26:1: receivers[0].notify[0].to: an email notifier needs at least one recipient",
        "switchyard.toml:32:1: receivers[0].notify[1].destination: no destination is named \"missing\"",
        "switchyard.toml:33:1: receivers[0].notify[1].template: jq syntax error",
        "switchyard.toml:40:13: route.routes[0].matchers[0]: matcher \"cause=~\\\"(\\\"\": invalid regex",
        "switchyard.toml:40:27: route.routes[0].matchers[1]: matcher \"severity\": expected",
        "switchyard.toml:41:1: route.routes[0].receiver: no receiver is named \"nobody\"",
        "switchyard.toml:42:16: route.routes[0].mute_during[0]: no maintenance window is named \"weekend\"",
        "switchyard.toml:45:1: inhibit_rules[0].source_matchers: needs at least one matcher",
        "switchyard.toml:50:1: maintenance_windows[0].schedule: \"0 2 * *\" is not a crontab expression",
        "switchyard.toml:51:1: maintenance_windows[0].duration_minutes: must be at least 1",
        "switchyard.toml:52:1: maintenance_windows[0].timezone: \"Mars/Olympus\" is not an IANA time zone",
    ] {
        assert!(got.contains(want), "missing {want:?} in:\n{got}");
    }
}

#[test]
fn receivers_without_a_route_are_refused() {
    let got = errors(
        r#"
[[destinations]]
name = "hook"
url = "http://127.0.0.1:9/x"
[[receivers]]
name = "ops"
[[receivers.notify]]
type = "webhook"
destination = "hook"
"#,
    );
    assert!(
        got.contains("route: receivers are configured but no [route] sends anything to them"),
        "{got}"
    );
}
