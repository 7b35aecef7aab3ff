//! The SMTP destination: each delivery is one email, sent through one SMTP server
//! (`[[destinations]] type = "smtp"`). The payload a flow maps to is
//! `{"to": [addresses], "subject": "…", "text": "…", "html": "…"?}`; anything else is a
//! permanent failure, found before connecting.
//!
//! One connection per message (no pool): connect, `EHLO`, `STARTTLS` (required) or TLS from
//! the first byte or neither, `AUTH` when configured, `MAIL FROM`, `RCPT TO` for every
//! recipient, `DATA`, `QUIT`. A refused recipient refuses the whole message, so a
//! delivery is sent to all its recipients or to none. Every attempt of a delivery carries
//! the same `Message-ID` (from its idempotency key), so a message sent twice after an
//! ambiguous failure (the answer to `DATA` lost) can be recognised as one.
//!
//! Failures are reported as [`Failure::SmtpReply`] with the server's code (4xx transient,
//! 5xx permanent, 530/534/535 credential: the one table in
//! [`switchyard_core::delivery::classify`]); every TLS failure counts as a refused
//! certificate (credential: the destination pauses, as for HTTPS).

use crate::destination::{Destination, EXCERPT_BYTES, Outbound, Outcome};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::Deserialize;
use serde_json::Value;
use std::time::Duration;
use switchyard_core::delivery::Failure;
use switchyard_core::flows::{DestinationConfig, SmtpTls, smtp_server};

/// What a flow's payload must be for an smtp destination.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mail {
    pub to: Vec<String>,
    pub subject: String,
    pub text: String,
    #[serde(default)]
    pub html: Option<String>,
}

const PAYLOAD_SHAPE: &str = "an smtp destination takes {\"to\": [addresses], \"subject\": string, \"text\": string, \"html\": string (optional)}";

impl Mail {
    /// Reads a payload; the error says what is wrong with it, for the dead letter.
    pub fn from_payload(payload: &Value) -> Result<(Mail, Vec<Mailbox>), String> {
        if !payload.is_object() {
            return Err(format!(
                "payload: {PAYLOAD_SHAPE}; got {}",
                kind_of(payload)
            ));
        }
        let mail: Mail = serde_json::from_value(payload.clone())
            .map_err(|e| format!("payload: {e}; {PAYLOAD_SHAPE}"))?;
        if mail.to.is_empty() {
            return Err("payload: to: at least one recipient".into());
        }
        let mut to = Vec::with_capacity(mail.to.len());
        for (i, a) in mail.to.iter().enumerate() {
            match a.parse::<Mailbox>() {
                Ok(m) => to.push(m),
                Err(_) => {
                    let shown: String = a.chars().take(100).collect();
                    return Err(format!(
                        "payload: to[{i}]: \"{shown}\" is not a mail address"
                    ));
                }
            }
        }
        Ok((mail, to))
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

pub struct SmtpDestination {
    name: String,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    timeout: Duration,
}

impl SmtpDestination {
    /// Builds the transport; the password is read now (a broken reference was refused by
    /// `check`). Nothing connects until the first delivery.
    pub fn new(c: &DestinationConfig) -> Result<Self, String> {
        let smtp = c
            .smtp
            .as_ref()
            .ok_or("an smtp destination needs [destinations.smtp]")?;
        let (host, port) = smtp_server(&c.url, smtp.tls).map_err(|e| format!("url: {e}"))?;
        let from: Mailbox = smtp
            .from
            .trim()
            .parse()
            .map_err(|e| format!("smtp.from: {e}"))?;
        let tls = match smtp.tls {
            SmtpTls::None => Tls::None,
            SmtpTls::Starttls => Tls::Required(tls_parameters(&host)?),
            SmtpTls::Tls => Tls::Wrapper(tls_parameters(&host)?),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(port)
            .tls(tls)
            // Bounds the TCP connect; the whole exchange is bounded by `timeout_ms` below.
            .timeout(Some(Duration::from_millis(c.connect_timeout_ms)));
        if let (Some(user), Some(password)) = (&smtp.username, &smtp.password) {
            let password = password
                .expose()
                .map_err(|e| format!("smtp.password: {e}"))?;
            builder = builder.credentials(Credentials::new(user.clone(), password));
        }
        Ok(Self {
            name: c.name.clone(),
            transport: builder.build(),
            from,
            timeout: Duration::from_millis(c.timeout_ms),
        })
    }

    /// The message for one attempt.
    fn message(&self, mail: Mail, to: Vec<Mailbox>, out: &Outbound<'_>) -> Result<Message, String> {
        let mut b = Message::builder()
            .from(self.from.clone())
            .subject(mail.subject)
            .message_id(Some(format!(
                "<{}@{}>",
                out.idempotency_key,
                self.from.email.domain()
            )));
        for m in to {
            b = b.to(m);
        }
        for (name, value) in [
            ("X-Switchyard-Flow", out.flow),
            ("X-Switchyard-Event-Source", out.event_source),
            ("X-Switchyard-Event-Id", out.event_id),
            ("X-Switchyard-Event-Type", out.event_type),
        ] {
            b = b.raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str(name),
                value.to_string(),
            ));
        }
        let built = match mail.html {
            None => b.singlepart(SinglePart::plain(mail.text)),
            Some(html) => b.multipart(MultiPart::alternative_plain_html(mail.text, html)),
        };
        built.map_err(|e| format!("payload: cannot build the message: {e}"))
    }
}

fn tls_parameters(host: &str) -> Result<TlsParameters, String> {
    TlsParameters::new(host.to_string()).map_err(|e| format!("TLS settings for {host}: {e}"))
}

fn excerpt(text: &str) -> Option<String> {
    if text.is_empty() {
        return None;
    }
    let mut end = text.len().min(EXCERPT_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Some(text[..end].to_string())
}

/// The failure, the reply code and text (when the server answered) and the message of a
/// failed attempt.
pub fn failure_of(
    e: &lettre::transport::smtp::Error,
) -> (Failure, Option<u16>, Option<String>, String) {
    if let Some(code) = e.status() {
        let code = u16::from(code);
        let text = std::error::Error::source(e)
            .map(|s| s.to_string())
            .unwrap_or_default();
        let line: String = text.chars().take(200).collect();
        let message = if line.is_empty() {
            format!("SMTP {code}")
        } else {
            format!("SMTP {code}: {line}")
        };
        return (
            Failure::SmtpReply(code),
            Some(code),
            excerpt(&text),
            message,
        );
    }
    (transport_failure(e), None, None, describe(e))
}

/// What a failure without a reply code was: connecting, TLS, the conversation breaking
/// off, or the client refusing to go on.
fn transport_failure(e: &lettre::transport::smtp::Error) -> Failure {
    if e.is_tls() {
        return Failure::TlsCertificate;
    }
    if e.is_timeout() {
        return Failure::Timeout;
    }
    let text = describe(e).to_ascii_lowercase();
    if e.is_client() {
        // The server cannot give what the configuration requires: fixed by an operator,
        // not by waiting. A message it cannot carry is this payload's problem.
        return if text.contains("starttls") {
            Failure::TlsCertificate
        } else if text.contains("authentication mechanism") {
            Failure::SmtpReply(530)
        } else if text.contains("non-ascii") {
            Failure::SmtpReply(554)
        } else {
            Failure::Protocol
        };
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return Failure::ConnectionRefused,
                std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::BrokenPipe
                | std::io::ErrorKind::UnexpectedEof => return Failure::ConnectionReset,
                std::io::ErrorKind::TimedOut => return Failure::Timeout,
                // tokio-rustls reports every TLS failure (certificate, handshake, a server
                // that does not speak TLS) as invalid data.
                std::io::ErrorKind::InvalidData => return Failure::TlsCertificate,
                _ => {}
            }
        }
        source = s.source();
    }
    if text.contains("certificate") || text.contains("dns name") {
        Failure::TlsCertificate
    } else if text.contains("incomplete response") {
        // The server closed the connection instead of answering.
        Failure::ConnectionReset
    } else if text.starts_with("connection error") {
        Failure::Connect
    } else {
        Failure::Protocol
    }
}

fn describe(e: &lettre::transport::smtp::Error) -> String {
    // lettre's Display already appends its source; add what lies below that.
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e).and_then(|s| s.source());
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[async_trait]
impl Destination for SmtpDestination {
    fn name(&self) -> &str {
        &self.name
    }

    async fn send(&self, out: &Outbound<'_>, _now: DateTime<Utc>) -> Outcome {
        let message =
            Mail::from_payload(out.payload).and_then(|(mail, to)| self.message(mail, to, out));
        let message = match message {
            Ok(m) => m,
            Err(message) => {
                // Nothing was sent: the payload can never become a message. 554 is SMTP's
                // "transaction failed", permanent.
                return Outcome::Failed {
                    failure: Failure::SmtpReply(554),
                    status: None,
                    excerpt: None,
                    retry_after: None,
                    message,
                };
            }
        };
        match tokio::time::timeout(self.timeout, self.transport.send(message)).await {
            Ok(Ok(reply)) => {
                let text = reply.message().collect::<Vec<_>>().join("\n");
                Outcome::Delivered {
                    status: Some(u16::from(reply.code())),
                    excerpt: excerpt(&text),
                }
            }
            Ok(Err(e)) => {
                let (failure, status, excerpt, message) = failure_of(&e);
                Outcome::Failed {
                    failure,
                    status,
                    excerpt,
                    retry_after: None,
                    message,
                }
            }
            Err(_) => Outcome::Failed {
                failure: Failure::Timeout,
                status: None,
                excerpt: None,
                retry_after: None,
                message: format!(
                    "the SMTP exchange took longer than {} ms",
                    self.timeout.as_millis()
                ),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use switchyard_core::delivery::{ErrorClass, classify};

    #[test]
    fn payloads_are_read_or_refused_with_a_reason() {
        let (mail, to) = Mail::from_payload(&json!({
            "to": ["ops@example.com", "Night Shift <night@example.com>"],
            "subject": "Disk full",
            "text": "sda1 at 99 %",
        }))
        .unwrap();
        assert_eq!(mail.subject, "Disk full");
        assert_eq!(mail.html, None);
        assert_eq!(to.len(), 2);
        assert_eq!(to[1].name.as_deref(), Some("Night Shift"));
        let (mail, _) = Mail::from_payload(&json!({
            "to": ["ops@example.com"], "subject": "", "text": "t", "html": "<p>t</p>"
        }))
        .unwrap();
        assert_eq!(mail.html.as_deref(), Some("<p>t</p>"));

        for (payload, says) in [
            (json!("hello"), "got a string"),
            (json!([1]), "got an array"),
            (json!(null), "got null"),
            (json!({"subject": "s", "text": "t"}), "missing field `to`"),
            (
                json!({"to": "ops@example.com", "subject": "s", "text": "t"}),
                "invalid type",
            ),
            (
                json!({"to": ["ops@example.com"], "text": "t"}),
                "missing field `subject`",
            ),
            (
                json!({"to": ["ops@example.com"], "subject": "s"}),
                "missing field `text`",
            ),
            (
                json!({"to": ["ops@example.com"], "subject": "s", "body": "t"}),
                "unknown field `body`",
            ),
            (
                json!({"to": [], "subject": "s", "text": "t"}),
                "at least one recipient",
            ),
            (
                json!({"to": ["ops@example.com", "nobody"], "subject": "s", "text": "t"}),
                "to[1]: \"nobody\" is not a mail address",
            ),
        ] {
            let e = Mail::from_payload(&payload).unwrap_err();
            assert!(e.contains(says), "{payload}: {e}");
            assert!(e.starts_with("payload: "), "{e}");
        }
    }

    /// The sender `check` accepts is one lettre parses, and the other way round, for the
    /// forms the documentation shows and the mistakes people make.
    #[test]
    fn check_and_lettre_agree_on_senders() {
        for s in [
            "alerts@example.com",
            "root@localhost",
            "Switchyard <alerts@example.com>",
            "\"Ops, Plant 1\" <ops@example.com>",
            "Équipe <ops@example.com>",
            "first.last+tag@mail.example.com",
            "alerts",
            "alerts@",
            "@example.com",
            "a b@example.com",
            "Ops, Plant 1 <ops@example.com>",
            "Ops <ops@example.com",
        ] {
            assert_eq!(
                switchyard_core::flows::is_mailbox(s),
                s.parse::<Mailbox>().is_ok(),
                "{s}"
            );
        }
    }

    #[test]
    fn senders_and_servers_are_read_at_start() {
        let config = |smtp: &str, url: &str| {
            let text = format!(
                "[[destinations]]\nname = \"mail\"\ntype = \"smtp\"\nurl = \"{url}\"\nsmtp = {smtp}\n"
            );
            switchyard_core::Config::parse(&text, "t.toml", Vec::new())
                .map(|c| c.destinations[0].clone())
        };
        let c = config(
            "{ from = \"Alerts <alerts@example.com>\", tls = \"starttls\" }",
            "smtp://mail.example.com",
        )
        .unwrap();
        let d = SmtpDestination::new(&c).unwrap();
        assert_eq!(d.from.email.domain(), "example.com");
        assert_eq!(d.timeout, Duration::from_millis(10_000));
        for tls in ["tls", "none"] {
            let c = config(
                &format!("{{ from = \"alerts@example.com\", tls = \"{tls}\" }}"),
                "smtp://[::1]:2525",
            )
            .unwrap();
            SmtpDestination::new(&c).unwrap();
        }
    }

    /// Reply codes through the shared table: what the engine does with each.
    #[test]
    fn replies_are_classified_by_the_shared_table() {
        for (code, class) in [
            (421, ErrorClass::Transient),
            (450, ErrorClass::Transient),
            (451, ErrorClass::Transient),
            (452, ErrorClass::Transient),
            (530, ErrorClass::Credential),
            (534, ErrorClass::Credential),
            (535, ErrorClass::Credential),
            (550, ErrorClass::Permanent),
            (553, ErrorClass::Permanent),
            (554, ErrorClass::Permanent),
        ] {
            assert_eq!(classify(Failure::SmtpReply(code)), class, "{code}");
        }
        assert_eq!(classify(Failure::TlsCertificate), ErrorClass::Credential);
    }

    #[test]
    fn excerpts_are_cut_on_a_character() {
        assert_eq!(excerpt(""), None);
        let long = "é".repeat(EXCERPT_BYTES);
        let e = excerpt(&long).unwrap();
        assert!(e.len() <= EXCERPT_BYTES && e.chars().all(|c| c == 'é'));
    }
}
