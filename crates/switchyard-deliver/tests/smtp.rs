//! The SMTP destination against a real SMTP server on loopback (`support/smtp.rs`): what
//! arrives, and how every kind of failure is reported and classified.

mod support {
    pub mod smtp;
}

use serde_json::{Value, json};
use support::smtp::{Command, SmtpServer};
use switchyard_core::delivery::{ErrorClass, Failure};
use switchyard_deliver::destination::{Destination, Outbound, Outcome};
use switchyard_deliver::smtp::SmtpDestination;

/// An smtp destination to `url`, with `extra` added to its `[destinations.smtp]` table.
fn destination(url: &str, extra: &str, dest_extra: &str) -> SmtpDestination {
    let text = format!(
        r#"
[[destinations]]
name = "mail"
type = "smtp"
url = "{url}"
{dest_extra}
[destinations.smtp]
from = "Switchyard Alerts <alerts@example.com>"
tls = "none"
{extra}
"#
    );
    let config = switchyard_core::Config::parse(&text, "test.toml", Vec::new())
        .unwrap_or_else(|e| panic!("test config: {e}"));
    SmtpDestination::new(&config.destinations[0]).unwrap()
}

async fn send(d: &SmtpDestination, payload: &Value) -> Outcome {
    let out = Outbound {
        payload,
        idempotency_key: "alerts.0123456789abcdef0123456789abcdef",
        traceparent: "00-0123456789abcdef0123456789abcdef-0123456789abcdef-01",
        flow: "alerts",
        event_source: "https://monitor.example.com",
        event_id: "alert-17",
        event_type: "alert.firing",
        cursor: None,
    };
    d.send(&out, chrono::Utc::now()).await
}

fn mail() -> Value {
    json!({
        "to": ["ops@example.com", "Night Shift <night@example.net>"],
        "subject": "Disk full on plant-1",
        "text": "sda1 is at 99 %.\n.a line that starts with a dot\nbye",
    })
}

/// The class the engine would give a failed outcome, with its parts.
fn failed(
    d: &SmtpDestination,
    o: Outcome,
) -> (ErrorClass, Failure, Option<u16>, Option<String>, String) {
    match o {
        Outcome::Failed {
            failure,
            status,
            excerpt,
            message,
            retry_after,
        } => {
            assert_eq!(retry_after, None);
            (
                d.classify(failure, excerpt.as_deref()),
                failure,
                status,
                excerpt,
                message,
            )
        }
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[tokio::test]
async fn delivers_one_message_with_envelope_headers_and_body() {
    let server = SmtpServer::start().await;
    let d = destination(&server.url(), "", "");
    let outcome = send(&d, &mail()).await;
    assert_eq!(
        outcome,
        Outcome::Delivered {
            status: Some(250),
            excerpt: Some("2.0.0 Ok: queued as Q1".into()),
        }
    );
    let got = server.messages();
    assert_eq!(got.len(), 1);
    let m = &got[0];
    assert_eq!(m.mail_from, "alerts@example.com");
    assert_eq!(m.rcpt_to, ["ops@example.com", "night@example.net"]);
    assert_eq!(m.auth, None);
    assert_eq!(
        m.header("From").unwrap(),
        "\"Switchyard Alerts\" <alerts@example.com>"
    );
    assert_eq!(
        m.header("To").unwrap(),
        "ops@example.com, \"Night Shift\" <night@example.net>"
    );
    assert_eq!(m.header("Subject").unwrap(), "Disk full on plant-1");
    assert_eq!(
        m.header("Message-ID").unwrap(),
        "<alerts.0123456789abcdef0123456789abcdef@example.com>"
    );
    assert_eq!(m.header("X-Switchyard-Flow").unwrap(), "alerts");
    assert_eq!(m.header("X-Switchyard-Event-Id").unwrap(), "alert-17");
    assert_eq!(m.header("X-Switchyard-Event-Type").unwrap(), "alert.firing");
    assert_eq!(
        m.header("X-Switchyard-Event-Source").unwrap(),
        "https://monitor.example.com"
    );
    assert!(m.header("Date").is_some());
    assert!(
        m.header("Content-Type")
            .unwrap()
            .starts_with("text/plain; charset=utf-8"),
        "{m:?}"
    );
    // Dot-stuffed on the wire, unstuffed by the server: the text arrives as written.
    assert_eq!(
        m.body(),
        "sda1 is at 99 %.\r\n.a line that starts with a dot\r\nbye\r\n"
    );
    // One connection per message, closed with QUIT.
    let commands = server.commands();
    assert!(commands[0].starts_with("EHLO "), "{commands:?}");
    assert_eq!(commands.last().unwrap(), "QUIT");

    // With html: both, as multipart/alternative. Non-ASCII subjects are encoded.
    let mut with_html = mail();
    with_html["html"] = json!("<p>sda1 is at <b>99 %</b></p>");
    with_html["subject"] = json!("Disque plein à l'usine 1");
    with_html["to"] = json!(["ops@example.com"]);
    assert!(matches!(
        send(&d, &with_html).await,
        Outcome::Delivered {
            status: Some(250),
            ..
        }
    ));
    let m = &server.messages()[1];
    assert!(
        m.header("Content-Type")
            .unwrap()
            .starts_with("multipart/alternative"),
        "{m:?}"
    );
    assert!(m.body().contains("text/plain"), "{}", m.body());
    assert!(m.body().contains("text/html"), "{}", m.body());
    assert!(m.body().contains("<b>99 %</b>"), "{}", m.body());
    assert_eq!(
        m.header("Subject").unwrap(),
        "Disque plein =?utf-8?b?w6A=?= l'usine 1"
    );
}

#[tokio::test]
async fn authenticates_with_the_configured_login() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("smtp-password");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let server = SmtpServer::start().await;
    let d = destination(
        &server.url(),
        &format!(
            "username = \"alerts@example.com\"\npassword = \"file:{}\"",
            secret.display()
        ),
        "",
    );
    assert!(matches!(send(&d, &mail()).await, Outcome::Delivered { .. }));
    assert_eq!(
        server.messages()[0].auth,
        Some(("alerts@example.com".into(), "s3cret".into()))
    );

    // 535: the credentials are refused; the destination pauses (credential class).
    server.answer(
        Command::Auth,
        535,
        "5.7.8 Username and Password not accepted",
    );
    let (class, failure, status, excerpt, message) = failed(&d, send(&d, &mail()).await);
    assert_eq!(class, ErrorClass::Credential);
    assert_eq!(failure, Failure::SmtpReply(535));
    assert_eq!(status, Some(535));
    assert_eq!(
        excerpt.as_deref(),
        Some("5.7.8 Username and Password not accepted")
    );
    assert_eq!(
        message,
        "SMTP 535: 5.7.8 Username and Password not accepted"
    );
    assert_eq!(
        server.messages().len(),
        1,
        "nothing sent after a refused AUTH"
    );
    let mails = server
        .commands()
        .iter()
        .filter(|c| c.starts_with("MAIL"))
        .count();
    assert_eq!(mails, 1, "{:?}", server.commands());

    // A server that offers no AUTH at all cannot take the login: credential, nothing sent.
    server.recover();
    server.without_auth();
    let (class, _, status, _, message) = failed(&d, send(&d, &mail()).await);
    assert_eq!(class, ErrorClass::Credential, "{message}");
    assert_eq!(status, None);
    assert!(message.contains("authentication mechanism"), "{message}");
    assert_eq!(server.messages().len(), 1);
}

#[tokio::test]
async fn replies_are_classified_and_kept_as_the_excerpt() {
    let cases: &[(Command, u16, &str, ErrorClass)] = &[
        (
            Command::Mail,
            451,
            "4.3.0 try again later",
            ErrorClass::Transient,
        ),
        (
            Command::Mail,
            421,
            "4.7.0 too many connections",
            ErrorClass::Transient,
        ),
        (
            Command::Rcpt,
            450,
            "4.2.1 mailbox busy",
            ErrorClass::Transient,
        ),
        (
            Command::Rcpt,
            550,
            "5.1.1 no such user",
            ErrorClass::Permanent,
        ),
        (
            Command::Rcpt,
            530,
            "5.7.0 authentication required",
            ErrorClass::Credential,
        ),
        (
            Command::Data,
            452,
            "4.3.1 insufficient storage",
            ErrorClass::Transient,
        ),
        (
            Command::Data,
            554,
            "5.7.1 rejected as spam",
            ErrorClass::Permanent,
        ),
        (
            Command::Mail,
            553,
            "5.1.8 sender refused",
            ErrorClass::Permanent,
        ),
    ];
    for (command, code, text, class) in cases {
        let server = SmtpServer::start().await;
        server.answer(*command, *code, text);
        let d = destination(&server.url(), "", "");
        let (got, failure, status, excerpt, message) = failed(&d, send(&d, &mail()).await);
        assert_eq!(got, *class, "{command:?} {code}");
        assert_eq!(failure, Failure::SmtpReply(*code));
        assert_eq!(status, Some(*code));
        assert_eq!(excerpt.as_deref(), Some(*text));
        assert_eq!(message, format!("SMTP {code}: {text}"));
        assert!(server.messages().is_empty());
        // A refusal after the server took the message is still a refusal.
        server.recover();
        assert!(matches!(send(&d, &mail()).await, Outcome::Delivered { .. }));
    }
}

#[tokio::test]
async fn an_unreachable_or_silent_server_is_transient() {
    // Nobody listens: refused.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let d = destination(&format!("smtp://127.0.0.1:{port}"), "", "");
    let (class, failure, status, excerpt, message) = failed(&d, send(&d, &mail()).await);
    assert_eq!(
        (class, failure),
        (ErrorClass::Transient, Failure::ConnectionRefused)
    );
    assert_eq!((status, excerpt), (None, None));
    assert!(message.to_lowercase().contains("connection"), "{message}");

    // Connected, but the server never greets: the exchange times out.
    let server = SmtpServer::start().await;
    server.stall();
    let d = destination(&server.url(), "", "timeout_ms = 300");
    let started = std::time::Instant::now();
    let (class, failure, _, _, message) = failed(&d, send(&d, &mail()).await);
    assert_eq!((class, failure), (ErrorClass::Transient, Failure::Timeout));
    assert!(message.contains("300 ms"), "{message}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

#[tokio::test]
async fn tls_that_cannot_be_had_is_a_credential_failure() {
    let server = SmtpServer::start().await;
    // Implicit TLS against a server that speaks plain SMTP: the handshake fails.
    let text = |tls: &str| {
        format!(
            "[[destinations]]\nname = \"mail\"\ntype = \"smtp\"\nurl = \"{}\"\nsmtp = {{ from = \"alerts@example.com\", tls = \"{tls}\" }}\n",
            server.url()
        )
    };
    let config = switchyard_core::Config::parse(&text("tls"), "t.toml", Vec::new()).unwrap();
    let d = SmtpDestination::new(&config.destinations[0]).unwrap();
    let (class, failure, _, _, message) = failed(&d, send(&d, &mail()).await);
    assert_eq!(
        (class, failure),
        (ErrorClass::Credential, Failure::TlsCertificate),
        "{message}"
    );
    // STARTTLS required, and the server does not offer it: nothing is sent in clear.
    let config = switchyard_core::Config::parse(&text("starttls"), "t.toml", Vec::new()).unwrap();
    let d = SmtpDestination::new(&config.destinations[0]).unwrap();
    let (class, failure, _, _, message) = failed(&d, send(&d, &mail()).await);
    assert_eq!(
        (class, failure),
        (ErrorClass::Credential, Failure::TlsCertificate),
        "{message}"
    );
    assert!(message.contains("STARTTLS"), "{message}");
    assert!(
        !server.commands().iter().any(|c| c.starts_with("MAIL")),
        "{:?}",
        server.commands()
    );
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn payloads_that_are_not_a_mail_fail_permanently_without_connecting() {
    let server = SmtpServer::start().await;
    let d = destination(&server.url(), "", "");
    for (payload, says) in [
        (json!({"order": "S1"}), "unknown field `order`"),
        (json!("Disk full"), "got a string"),
        (
            json!({"to": ["ops"], "subject": "s", "text": "t"}),
            "to[0]: \"ops\" is not a mail address",
        ),
        (
            json!({"to": [], "subject": "s", "text": "t"}),
            "at least one recipient",
        ),
    ] {
        let (class, _, status, excerpt, message) = failed(&d, send(&d, &payload).await);
        assert_eq!(class, ErrorClass::Permanent, "{payload}");
        assert_eq!((status, excerpt), (None, None));
        assert!(message.contains(says), "{payload}: {message}");
    }
    assert_eq!(server.connections(), 0);
}

/// The example of docs/configuration.md ("SMTP destinations"): its flow maps an alert to a
/// payload this destination takes.
#[test]
fn the_documented_flow_maps_an_alert_to_a_mail() {
    let text = r#"
[[destinations]]
name = "ops-mail"
type = "smtp"
url = "smtp://mail.example.com"
concurrency = 4
rate_per_second = 2
[destinations.smtp]
from = "Switchyard <alerts@example.com>"
username = "alerts@example.com"
password = "env:HOME"

[[flows]]
name = "disk-alerts"
destination = "ops-mail"
priority = "critical"
match = { source = "monitor", type = ["alert.firing"] }
map = '''
{
  to: ["ops@example.com"],
  subject: "[\(.data.severity)] \(.data.name)",
  text: .data.summary,
  html: "<p>\(.data.summary | @html)</p>"
}
'''
"#;
    let config = switchyard_core::Config::parse(text, "t.toml", Vec::new())
        .unwrap_or_else(|e| panic!("{e}"));
    let flows = switchyard_core::flows::Flows::compile(&config).unwrap();
    SmtpDestination::new(&flows.destination("ops-mail").unwrap().config).unwrap();
    let event = switchyard_core::CloudEvent::from_json(json!({
        "specversion": "1.0", "id": "1", "source": "monitor", "type": "alert.firing",
        "data": {"severity": "critical", "name": "DiskFull", "summary": "sda1 < 1 % free"}
    }))
    .unwrap()
    .event;
    let payload = match flows.flow("disk-alerts").unwrap().route_event(&event) {
        switchyard_core::flows::Routed::Ready { payload, .. } => payload,
        other => panic!("{other:?}"),
    };
    let (mail, to) = switchyard_deliver::smtp::Mail::from_payload(&payload).unwrap();
    assert_eq!(to.len(), 1);
    assert_eq!(mail.subject, "[critical] DiskFull");
    assert_eq!(mail.text, "sda1 < 1 % free");
    assert_eq!(mail.html.as_deref(), Some("<p>sda1 &lt; 1 % free</p>"));
}
