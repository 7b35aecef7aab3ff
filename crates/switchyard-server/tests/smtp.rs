//! SMTP destinations end to end: an event ingested over HTTP, routed by a flow to an
//! `smtp` destination, sent by the delivery engine to a real SMTP server on loopback
//! (`switchyard-deliver`'s test server), and the delivery's state through the API. A
//! manual clock wherever retries matter (waits poll state, never time).

#[path = "../../switchyard-deliver/tests/support/smtp.rs"]
mod smtp_server;
mod support;

use serde_json::{Value, json};
use smtp_server::{Command, SmtpServer};
use std::sync::Arc;
use support::*;
use switchyard_core::ManualClock;

fn config(url: &str, smtp_extra: &str) -> String {
    format!(
        r#"
[delivery]
poll_ms = 10

[[destinations]]
name = "mail"
type = "smtp"
url = "{url}"
credential_cooldown_seconds = 300
[destinations.smtp]
from = "Switchyard <alerts@example.com>"
tls = "none"
{smtp_extra}

[[flows]]
name = "alerts"
destination = "mail"
match = {{ source = "monitor", type = ["alert.*"] }}
map = '{{to: .data.to, subject: "[\(.data.severity)] \(.data.name)", text: .data.summary}}'
retry = {{ max_attempts = 4, initial_ms = 1000, max_backoff_seconds = 60, max_age_seconds = 3600 }}
"#
    )
}

fn t0() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339("2026-11-23T08:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc)
}

async fn server(cfg: String, clock: Option<Arc<ManualClock>>) -> Server {
    start(Setup {
        flows: Some(cfg),
        clock: clock.map(|c| c as switchyard_core::SharedClock),
        ..Default::default()
    })
    .await
}

fn alert(id: &str) -> Value {
    ce(
        "monitor",
        id,
        "alert.firing",
        json!({
            "to": ["ops@example.com", "Night Shift <night@example.net>"],
            "severity": "critical",
            "name": "DiskFull",
            "summary": "sda1 on plant-1 is at 99 %",
        }),
    )
}

async fn delivery_id(s: &Server, event_id: &str) -> i64 {
    let (_, list) = s.get_as("/v1/deliveries?limit=1000", &s.admin).await;
    list["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["event_id"] == event_id)
        .unwrap_or_else(|| panic!("no delivery for {event_id}: {list}"))["id"]
        .as_i64()
        .unwrap()
}

async fn wait_state(s: &Server, id: i64, state: &str) -> Value {
    s.wait_for(&format!("/v1/deliveries/{id}"), |b| {
        b["delivery"]["state"] == state
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_ingested_event_arrives_as_an_email_and_is_delivered() {
    let smtp = SmtpServer::start().await;
    let s = server(config(&smtp.url(), ""), None).await;
    let r = s.structured(&alert("a-1")).await;
    assert_eq!(r.status(), 202);

    let got = smtp.wait_messages(1).await;
    let m = &got[0];
    assert_eq!(m.mail_from, "alerts@example.com");
    assert_eq!(m.rcpt_to, ["ops@example.com", "night@example.net"]);
    assert_eq!(m.header("From").unwrap(), "Switchyard <alerts@example.com>");
    assert_eq!(
        m.header("To").unwrap(),
        "ops@example.com, \"Night Shift\" <night@example.net>"
    );
    assert_eq!(m.header("Subject").unwrap(), "[critical] DiskFull");
    assert_eq!(m.body(), "sda1 on plant-1 is at 99 %\r\n");
    let key = switchyard_core::delivery::idempotency_key("alerts", "monitor", "a-1", 0);
    assert_eq!(
        m.header("Message-ID").unwrap(),
        format!("<{key}@example.com>")
    );
    assert_eq!(m.header("X-Switchyard-Event-Id").unwrap(), "a-1");

    let id = delivery_id(&s, "a-1").await;
    let done = wait_state(&s, id, "delivered").await;
    let attempts = done["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{done}");
    assert_eq!(attempts[0]["outcome"], "delivered");
    assert_eq!(attempts[0]["status"], 250);
    assert_eq!(attempts[0]["response_excerpt"], "2.0.0 Ok: queued as Q1");
    assert_eq!(smtp.messages().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_451_is_retried_and_delivered_once_the_server_recovers() {
    let clock = Arc::new(ManualClock::new(t0()));
    let smtp = SmtpServer::start().await;
    smtp.answer(Command::Data, 451, "4.7.1 greylisted, try again later");
    let s = server(config(&smtp.url(), ""), Some(clock.clone())).await;
    s.structured(&alert("a-2")).await;
    let id = delivery_id(&s, "a-2").await;
    let d = wait_state(&s, id, "retry_wait").await;
    assert_eq!(d["delivery"]["error_class"], "transient");
    assert_eq!(d["delivery"]["attempts"], 1);
    assert_eq!(d["delivery"]["last_status"], 451);
    assert_eq!(
        d["delivery"]["last_error"],
        "SMTP 451: 4.7.1 greylisted, try again later"
    );
    assert_eq!(
        d["attempts"][0]["response_excerpt"],
        "4.7.1 greylisted, try again later"
    );
    assert!(smtp.messages().is_empty());

    // Not sent again before it is due; sent when due, to a server that takes it now.
    smtp.recover();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(smtp.messages().is_empty());
    let due =
        chrono::DateTime::parse_from_rfc3339(d["delivery"]["next_attempt_at"].as_str().unwrap())
            .unwrap()
            .with_timezone(&chrono::Utc);
    clock.set(due);
    smtp.wait_messages(1).await;
    let d = wait_state(&s, id, "delivered").await;
    let outcomes: Vec<(Value, Value)> = d["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["outcome"].clone(), a["status"].clone()))
        .collect();
    assert_eq!(
        outcomes,
        vec![
            (json!("transient"), json!(451)),
            (json!("delivered"), json!(250)),
        ]
    );
    // Both attempts carried the same Message-ID; one message arrived.
    assert_eq!(smtp.messages().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refusals_dead_letter_or_pause_by_class() {
    // 550 to a recipient: permanent, dead-lettered at once with the reply.
    let smtp = SmtpServer::start().await;
    smtp.answer(
        Command::Rcpt,
        550,
        "5.1.1 <night@example.net>: no such user",
    );
    let s = server(
        config(&smtp.url(), ""),
        Some(Arc::new(ManualClock::new(t0()))),
    )
    .await;
    s.structured(&alert("a-3")).await;
    let id = delivery_id(&s, "a-3").await;
    let d = wait_state(&s, id, "dead").await;
    assert_eq!(d["delivery"]["error_class"], "permanent");
    assert_eq!(d["delivery"]["last_status"], 550);
    assert!(
        d["delivery"]["last_error"]
            .as_str()
            .unwrap()
            .contains("SMTP 550: 5.1.1 <night@example.net>: no such user"),
        "{d}"
    );
    assert!(smtp.messages().is_empty());

    // A payload that is not a mail (no recipients in the event): permanent, never sent.
    s.structured(&ce(
        "monitor",
        "a-4",
        "alert.firing",
        json!({"severity": "info", "name": "x", "summary": "y"}),
    ))
    .await;
    let id = delivery_id(&s, "a-4").await;
    let d = wait_state(&s, id, "dead").await;
    assert_eq!(d["delivery"]["error_class"], "permanent");
    assert!(
        d["delivery"]["last_error"]
            .as_str()
            .unwrap()
            .contains("payload: invalid type: null, expected a sequence"),
        "{d}"
    );
    drop(s);

    // 535 on AUTH: credential, the destination pauses and the attempt is not counted.
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("pw");
    std::fs::write(&secret, "wrong").unwrap();
    let smtp = SmtpServer::start().await;
    smtp.answer(
        Command::Auth,
        535,
        "5.7.8 Authentication credentials invalid",
    );
    let s = server(
        config(
            &smtp.url(),
            &format!(
                "username = \"alerts@example.com\"\npassword = \"file:{}\"",
                secret.display()
            ),
        ),
        Some(Arc::new(ManualClock::new(t0()))),
    )
    .await;
    s.structured(&alert("a-5")).await;
    let id = delivery_id(&s, "a-5").await;
    let d = wait_state(&s, id, "retry_wait").await;
    assert_eq!(d["delivery"]["error_class"], "credential");
    assert_eq!(d["delivery"]["last_status"], 535);
    assert_eq!(
        d["delivery"]["attempts"], 0,
        "a credential failure is not counted"
    );
    let (_, dests) = s.get_as("/v1/destinations", &s.viewer).await;
    assert_eq!(dests["destinations"][0]["name"], "mail");
    assert!(dests["destinations"][0]["paused"].is_object(), "{dests}");
    assert!(smtp.messages().is_empty());
    drop(s);

    // Nobody listens: transient, retried.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let s = server(
        config(&format!("smtp://127.0.0.1:{port}"), ""),
        Some(Arc::new(ManualClock::new(t0()))),
    )
    .await;
    s.structured(&alert("a-6")).await;
    let id = delivery_id(&s, "a-6").await;
    let d = wait_state(&s, id, "retry_wait").await;
    assert_eq!(d["delivery"]["error_class"], "transient");
    assert_eq!(d["delivery"]["attempts"], 1);
}

/// The HTTP `HEAD` probe is for HTTP destinations: an smtp destination is not a target.
#[test]
fn smtp_destinations_are_not_probed_over_http() {
    let text = r#"
[[destinations]]
name = "wms"
url = "http://127.0.0.1:9/in"

[[destinations]]
name = "mail"
type = "smtp"
url = "smtp://127.0.0.1:25"
smtp = { from = "alerts@example.com", tls = "none" }
"#;
    let config = switchyard_core::Config::parse(text, "t.toml", Vec::new()).unwrap();
    assert!(config.probes.destinations);
    let targets = switchyard_server::probes::targets(&config).unwrap();
    let names: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["wms"]);
}
