//! The alerting state machine on a manual timeline: grouping, group interval, repeat
//! interval, silences, a maintenance window and inhibition during an Odoo outage — exactly
//! the expected notifications, in order, and no others.

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::json;
use std::sync::Arc;
use switchyard_core::alerts::{Alerting, Cause, Severity};
use switchyard_core::config::Config;
use switchyard_server::alerting::state::{Observation, State};
use switchyard_store::{AlertState, IncidentStatus, SilenceRecord};

const BASE: &str = r#"
[[destinations]]
name = "hook"
url = "http://127.0.0.1:9/hook"

[[receivers]]
name = "operations"
[[receivers.notify]]
type = "webhook"
destination = "hook"

[[receivers]]
name = "application-support"
[[receivers.notify]]
type = "webhook"
destination = "hook"
[[receivers.notify]]
type = "slack"
destination = "hook"

[[receivers]]
name = "integration-support"
[[receivers.notify]]
type = "webhook"
destination = "hook"
"#;

const ROUTES: &str = r#"
[route]
receiver = "operations"
group_by = ["workflow", "cause"]
group_wait_seconds = 30
group_interval_seconds = 300
repeat_interval_seconds = 3600

[[route.routes]]
matchers = ['cause=~"odoo_validation|odoo_unavailable|credential_expiry"']
receiver = "application-support"
group_by = ["cause"]

[[route.routes]]
matchers = ['cause=~"partner_throttling|partner_down|mapping_drift"']
receiver = "integration-support"
mute_during = ["carrier-maintenance"]

[[maintenance_windows]]
name = "carrier-maintenance"
schedule = "0 2 * * *"
duration_minutes = 60
timezone = "Europe/Berlin"

[[maintenance_windows]]
name = "wms-upgrade"
matchers = ['source="wms"']
schedule = "0 22 * * 0"
duration_minutes = 120
timezone = "UTC"

[[inhibit_rules]]
source_matchers = ['alertname="odoo-down"']
target_matchers = ['cause="odoo_unavailable"']
"#;

const RULES: &str = r#"
[[alert_rules]]
name = "breach"
on = "finding"
findings = ["breach"]

[[alert_rules]]
name = "odoo-down"
on = "measure"
measure = "probe_failure"
threshold = 0

[[alert_rules]]
name = "dead-letters"
on = "delivery"
outcome = "dead_letter"
"#;

fn t0() -> DateTime<Utc> {
    // A Monday, 08:00 UTC.
    Utc.with_ymd_and_hms(2026, 11, 23, 8, 0, 0).unwrap()
}

fn state() -> State {
    let text = format!("{BASE}{ROUTES}{RULES}");
    let c = Config::parse(&text, "t.toml", Vec::new()).unwrap_or_else(|e| panic!("{e}"));
    State::new(Arc::new(Alerting::compile(&c).unwrap()))
}

fn obs(rule: &str, labels: &[(&str, &str)], cause: Cause, summary: &str) -> Observation {
    Observation {
        rule: rule.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        severity: Severity::High,
        cause,
        summary: summary.into(),
        evidence: json!({"instances": [summary]}),
        count: 1,
    }
}

/// (seconds after t0, receiver, notifier, status, alert summaries and their statuses)
type Sent = (i64, String, usize, String, Vec<String>);

/// Runs one pass at `t`, as the service does after its inputs: suppress, group, flush.
fn pass(s: &mut State, t: DateTime<Utc>, silences: &[SilenceRecord], log: &mut Vec<Sent>) {
    s.suppress(silences, t);
    s.group(t);
    for o in s.flush(t) {
        let n = o.notification;
        log.push((
            (t - t0()).num_seconds(),
            n.receiver,
            n.notifier,
            n.status,
            {
                let mut a: Vec<String> = n
                    .alerts
                    .iter()
                    .map(|a| format!("{}:{}", a.summary, a.status))
                    .collect();
                a.sort();
                a
            },
        ));
    }
}

fn sent(at: i64, receiver: &str, notifier: usize, status: &str, alerts: &[&str]) -> Sent {
    (
        at,
        receiver.into(),
        notifier,
        status.into(),
        alerts.iter().map(|a| a.to_string()).collect(),
    )
}

/// Steps the timeline one second at a time from `from` to `to` (inclusive).
fn run(s: &mut State, from: i64, to: i64, silences: &[SilenceRecord], log: &mut Vec<Sent>) {
    for sec in from..=to {
        pass(s, t0() + Duration::seconds(sec), silences, log);
    }
}

#[test]
fn grouping_group_interval_repeat_and_resolve() {
    let mut s = state();
    let mut log = Vec::new();
    let o2c = [("workflow", "o2c"), ("step", "invoiced")];
    s.fire(obs("breach", &o2c, Cause::BusinessProcess, "S1 late"), t0());
    run(&mut s, 0, 29, &[], &mut log);
    assert!(log.is_empty(), "group wait holds the first notification");
    run(&mut s, 30, 30, &[], &mut log);
    assert_eq!(
        log,
        [sent(30, "operations", 0, "firing", &["S1 late:firing"])]
    );

    // A second breach of the same workflow joins the group: told at the next
    // group-interval tick (30 + 300), not at once. Another finding of the same alert (a
    // count) is not news.
    let dims = [("workflow", "o2c"), ("step", "shipped")];
    s.fire(
        obs("breach", &dims, Cause::BusinessProcess, "S2 late"),
        t0() + Duration::seconds(40),
    );
    s.fire(
        obs("breach", &o2c, Cause::BusinessProcess, "S1 late"),
        t0() + Duration::seconds(41),
    );
    run(&mut s, 31, 400, &[], &mut log);
    assert_eq!(
        log[1..],
        [sent(
            330,
            "operations",
            0,
            "firing",
            &["S1 late:firing", "S2 late:firing"]
        )]
    );
    // Unchanged: repeated after the repeat interval (330 + 3600), once.
    run(&mut s, 401, 4000, &[], &mut log);
    assert_eq!(
        log[2..],
        [sent(
            3930,
            "operations",
            0,
            "firing",
            &["S1 late:firing", "S2 late:firing"]
        )]
    );
    assert_eq!(s.alerts.values().map(|a| a.count).sum::<i64>(), 3);

    // Both clear: the incident resolves at once, the group tells it at its next tick and
    // is forgotten.
    let incident = s.groups.values().next().unwrap().incident.unwrap();
    for fp in s.alerts.keys().cloned().collect::<Vec<_>>() {
        s.resolve(&fp, t0() + Duration::seconds(4001), "cleared");
    }
    run(&mut s, 4001, 4400, &[], &mut log);
    assert_eq!(
        log[3..],
        [sent(
            4230,
            "operations",
            0,
            "resolved",
            &["S1 late:resolved", "S2 late:resolved"]
        )]
    );
    assert!(s.groups.is_empty());
    assert_eq!(s.incidents[&incident].status, IncidentStatus::Resolved);
    assert_eq!(log.len(), 4, "and nothing else");
    let c = s.take_commit(switchyard_store::Lease {
        name: "alerts".into(),
        owner: "n".into(),
        epoch: 1,
        expires_at: t0(),
    });
    assert_eq!(c.open_incidents.len(), 1);
    assert_eq!(
        c.resolve_incidents,
        [(incident, t0() + Duration::seconds(4001))]
    );
    let kinds: Vec<&str> = c.entries.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "opened",
            "alert_fired",
            "notified",
            "alert_fired",
            "resolved"
        ]
    );
}

#[test]
fn silences_and_maintenance_windows() {
    let mut s = state();
    let mut log = Vec::new();
    let silence = SilenceRecord {
        id: 7,
        matchers: vec![r#"destination="carrier-a""#.into()],
        starts_at: t0(),
        ends_at: t0() + Duration::seconds(600),
        created_by: "alice".into(),
        comment: "carrier announced downtime".into(),
        created_at: t0(),
        expired_at: None,
        expired_by: None,
    };
    let carrier = [("destination", "carrier-a"), ("flow", "labels")];
    s.fire(
        obs(
            "dead-letters",
            &carrier,
            Cause::PartnerDown,
            "carrier-a down",
        ),
        t0(),
    );
    run(&mut s, 0, 599, std::slice::from_ref(&silence), &mut log);
    assert!(log.is_empty(), "silenced: nobody is told");
    let a = s.alerts.values().next().unwrap();
    assert_eq!(a.suppressed.as_deref(), Some("silenced:7"));
    assert_eq!(a.state, AlertState::Firing, "still listed as firing");
    assert!(s.incidents.is_empty(), "a silenced alert opens no incident");
    // The silence ends: the alert is news at the group's next tick.
    run(&mut s, 600, 700, std::slice::from_ref(&silence), &mut log);
    assert_eq!(
        log,
        [sent(
            600,
            "integration-support",
            0,
            "firing",
            &["carrier-a down:firing"]
        )]
    );
    assert_eq!(s.incidents.len(), 1);

    // A route muted during the carrier maintenance window (02:00–03:00 Berlin = 01:00–02:00
    // UTC): a new alert at 01:10 UTC waits for the window's end.
    let night = Utc.with_ymd_and_hms(2026, 11, 24, 1, 10, 0).unwrap();
    let at = |t: DateTime<Utc>| (t - t0()).num_seconds();
    let other = [("destination", "carrier-b"), ("flow", "labels")];
    s.fire(
        obs("dead-letters", &other, Cause::PartnerDown, "carrier-b down"),
        night,
    );
    run(&mut s, at(night), at(night) + 3600, &[], &mut log);
    let end = Utc.with_ymd_and_hms(2026, 11, 24, 2, 0, 0).unwrap();
    assert_eq!(
        log[1..],
        [sent(
            at(end),
            "integration-support",
            0,
            "firing",
            &["carrier-a down:firing", "carrier-b down:firing"]
        )]
    );

    // A window with matchers suppresses matching alerts everywhere (Sunday 22:00–24:00 UTC).
    let sunday = Utc.with_ymd_and_hms(2026, 11, 29, 22, 30, 0).unwrap();
    let wms = [("workflow", "o2c"), ("source", "wms")];
    s.fire(
        obs("breach", &wms, Cause::UpstreamBacklog, "WMS late"),
        sunday,
    );
    s.suppress(&[], sunday);
    let a = s.alerts.values().find(|a| a.summary == "WMS late").unwrap();
    assert_eq!(a.suppressed.as_deref(), Some("maintenance:wms-upgrade"));
}

#[test]
fn an_odoo_outage_inhibits_its_symptoms() {
    let mut s = state();
    let mut log = Vec::new();
    s.fire(
        obs(
            "odoo-down",
            &[("odoo", "main")],
            Cause::OdooUnavailable,
            "Odoo main unreachable",
        ),
        t0(),
    );
    s.fire(
        obs(
            "dead-letters",
            &[("flow", "orders-to-odoo"), ("destination", "odoo-main")],
            Cause::OdooUnavailable,
            "orders-to-odoo failing",
        ),
        t0() + Duration::seconds(5),
    );
    s.fire(
        obs(
            "breach",
            &[("workflow", "o2c"), ("step", "confirmed")],
            Cause::OdooUnavailable,
            "S9 not confirmed",
        ),
        t0() + Duration::seconds(6),
    );
    // An unrelated breach is not inhibited.
    s.fire(
        obs(
            "breach",
            &[("workflow", "mto"), ("step", "released")],
            Cause::BusinessProcess,
            "MO7 late",
        ),
        t0() + Duration::seconds(7),
    );
    run(&mut s, 0, 1000, &[], &mut log);
    assert_eq!(
        log,
        [
            // application-support has a webhook and a Slack notifier: one each.
            sent(
                30,
                "application-support",
                0,
                "firing",
                &["Odoo main unreachable:firing"]
            ),
            sent(
                30,
                "application-support",
                1,
                "firing",
                &["Odoo main unreachable:firing"]
            ),
            sent(30, "operations", 0, "firing", &["MO7 late:firing"]),
        ]
    );
    let inhibited: Vec<&str> = s
        .alerts
        .values()
        .filter(|a| a.suppressed.as_deref() == Some("inhibited"))
        .map(|a| a.summary.as_str())
        .collect();
    assert_eq!(inhibited.len(), 2, "the symptoms are listed as inhibited");

    // Odoo is back; the symptoms still firing are news, the outage alert resolves.
    let fp = s
        .alerts
        .values()
        .find(|a| a.rule == "odoo-down")
        .unwrap()
        .fingerprint
        .clone();
    s.resolve(&fp, t0() + Duration::seconds(1001), "probe ok");
    run(&mut s, 1001, 1400, &[], &mut log);
    let news = [
        "Odoo main unreachable:resolved",
        "S9 not confirmed:firing",
        "orders-to-odoo failing:firing",
    ];
    assert_eq!(
        log[3..],
        [
            sent(1001, "application-support", 0, "firing", &news),
            sent(1001, "application-support", 1, "firing", &news),
        ]
    );
}
