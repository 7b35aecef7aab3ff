//! Destinations: where a delivery's payload goes. One trait; HTTP here, Odoo in
//! [`crate::odoo`], email in [`crate::smtp`], NATS later through the same seam. A destination sends and reports what happened; the engine decides
//! what follows ([`switchyard_core::delivery::classify`], refined by
//! [`Destination::classify`]).

use async_trait::async_trait;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use std::time::Duration;
use switchyard_core::delivery::{ErrorClass, Failure, classify, parse_retry_after};
use switchyard_core::flows::{AuthConfig, DestinationConfig};

/// One request to send.
#[derive(Debug, Clone)]
pub struct Outbound<'a> {
    pub payload: &'a Value,
    pub idempotency_key: &'a str,
    /// W3C `traceparent` for this attempt.
    pub traceparent: &'a str,
    pub flow: &'a str,
    pub event_source: &'a str,
    pub event_id: &'a str,
    pub event_type: &'a str,
    /// Where the previous attempt of a multi-step delivery stopped (as stored with it).
    pub cursor: Option<&'a Value>,
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Delivered {
        status: Option<u16>,
        excerpt: Option<String>,
    },
    Failed {
        failure: Failure,
        status: Option<u16>,
        excerpt: Option<String>,
        /// The destination asked to wait this long (`Retry-After`).
        retry_after: Option<chrono::Duration>,
        message: String,
    },
}

#[async_trait]
pub trait Destination: Send + Sync + 'static {
    fn name(&self) -> &str;

    async fn send(&self, out: &Outbound<'_>, now: DateTime<Utc>) -> Outcome;

    /// Like [`Destination::send`], for destinations that work in steps: also returns where
    /// the delivery stands now, which the engine stores with the attempt's result and hands
    /// back as [`Outbound::cursor`] to the next attempt (`None` keeps the stored one).
    async fn send_from_cursor(
        &self,
        out: &Outbound<'_>,
        now: DateTime<Utc>,
    ) -> (Outcome, Option<Value>) {
        (self.send(out, now).await, None)
    }

    /// The most deliveries this destination sends in one request (an Odoo `load` carries
    /// many): when it is more than 1 the engine lets `(concurrency + 1) × batch_size`
    /// deliveries wait at it, a full batch per request in flight and the next one gathering.
    fn batch_size(&self) -> usize {
        1
    }

    /// The class of a failure; destination types may refine the shared table.
    fn classify(&self, failure: Failure, _excerpt: Option<&str>) -> ErrorClass {
        classify(failure)
    }
}

/// Longest response excerpt kept with an attempt.
pub const EXCERPT_BYTES: usize = 512;

/// Plain HTTP(S) with optional bearer/basic auth and Standard Webhooks signing.
pub struct HttpDestination {
    name: String,
    url: String,
    method: reqwest::Method,
    client: reqwest::Client,
    headers: Vec<(String, String)>,
    auth: Option<String>,
    signing_key: Option<Vec<u8>>,
}

impl HttpDestination {
    /// Builds the client; secrets are read now (a broken reference was refused by `check`).
    pub fn new(c: &DestinationConfig) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(c.connect_timeout_ms))
            .timeout(Duration::from_millis(c.timeout_ms))
            .pool_max_idle_per_host(c.concurrency as usize)
            .tcp_nodelay(true)
            // A redirect is an answer (3xx: permanent), never followed: following would
            // turn a POST into a GET on 301/302 and send the payload where nobody configured.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string())?;
        let auth = match &c.auth {
            None => None,
            Some(AuthConfig::Bearer { token }) => Some(format!(
                "Bearer {}",
                token.expose().map_err(|e| e.to_string())?
            )),
            Some(AuthConfig::Basic { username, password }) => {
                let pw = password.expose().map_err(|e| e.to_string())?;
                Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(format!("{username}:{pw}"))
                ))
            }
        };
        let signing_key = match &c.signing_secret {
            None => None,
            Some(s) => Some(
                switchyard_core::sources::standard_webhooks_key(
                    &s.expose().map_err(|e| e.to_string())?,
                )
                .ok_or("signing_secret is not a whsec_… base64 secret")?,
            ),
        };
        Ok(Self {
            name: c.name.clone(),
            url: c.url.clone(),
            method: c.method.parse().map_err(|_| "bad method".to_string())?,
            client,
            headers: c
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            auth,
            signing_key,
        })
    }
}

/// Standard Webhooks signature: `v1,` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")).
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

fn excerpt(bytes: &[u8]) -> Option<String> {
    if bytes.is_empty() {
        return None;
    }
    let cut = &bytes[..bytes.len().min(EXCERPT_BYTES)];
    Some(String::from_utf8_lossy(cut).into_owned())
}

/// What a transport error was, from reqwest's error and its sources.
fn transport_failure(e: &reqwest::Error) -> Failure {
    if e.is_timeout() {
        return Failure::Timeout;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut text = String::new();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return Failure::ConnectionRefused,
                std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::BrokenPipe
                | std::io::ErrorKind::UnexpectedEof => return Failure::ConnectionReset,
                std::io::ErrorKind::TimedOut => return Failure::Timeout,
                _ => {}
            }
        }
        text.push_str(&s.to_string().to_ascii_lowercase());
        text.push(' ');
        source = s.source();
    }
    if text.contains("certificate") || text.contains("invalidcertificate") {
        Failure::TlsCertificate
    } else if text.contains("connection closed") || text.contains("connection reset") {
        Failure::ConnectionReset
    } else if e.is_connect() {
        Failure::Connect
    } else {
        Failure::Protocol
    }
}

fn describe(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[async_trait]
impl Destination for HttpDestination {
    fn name(&self) -> &str {
        &self.name
    }

    async fn send(&self, out: &Outbound<'_>, _now: DateTime<Utc>) -> Outcome {
        // An HTTP-date `Retry-After` is wall-clock time, read against the real clock.
        let body = match serde_json::to_vec(out.payload) {
            Ok(b) => b,
            Err(e) => {
                return Outcome::Failed {
                    failure: Failure::Protocol,
                    status: None,
                    excerpt: None,
                    retry_after: None,
                    message: format!("cannot serialise the payload: {e}"),
                };
            }
        };
        let mut req = self
            .client
            .request(self.method.clone(), &self.url)
            .header("content-type", "application/json")
            .header("idempotency-key", out.idempotency_key)
            .header("traceparent", out.traceparent)
            .header("x-switchyard-flow", out.flow)
            .header("x-switchyard-event-source", out.event_source)
            .header("x-switchyard-event-id", out.event_id)
            .header("x-switchyard-event-type", out.event_type);
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        if let Some(a) = &self.auth {
            req = req.header("authorization", a);
        }
        if let Some(key) = &self.signing_key {
            // The signature timestamp is wall-clock time: receivers check it against theirs.
            let ts = chrono::Utc::now().timestamp();
            req = req
                .header("webhook-id", out.idempotency_key)
                .header("webhook-timestamp", ts.to_string())
                .header(
                    "webhook-signature",
                    sign(key, out.idempotency_key, ts, &body),
                );
        }
        let resp = match req.body(body).send().await {
            Ok(r) => r,
            Err(e) => {
                return Outcome::Failed {
                    failure: transport_failure(&e),
                    status: None,
                    excerpt: None,
                    retry_after: None,
                    message: describe(&e),
                };
            }
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, chrono::Utc::now()));
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) if (200..300).contains(&status) => {
                // Accepted, but the body broke off: the receiver has it; count as delivered.
                tracing::debug!(error = %e, "response body incomplete after a 2xx");
                bytes::Bytes::new()
            }
            Err(e) => {
                return Outcome::Failed {
                    failure: Failure::Status(status),
                    status: Some(status),
                    excerpt: None,
                    retry_after,
                    message: format!("HTTP {status}; body unreadable: {}", describe(&e)),
                };
            }
        };
        if (200..300).contains(&status) {
            Outcome::Delivered {
                status: Some(status),
                excerpt: excerpt(&bytes),
            }
        } else {
            let ex = excerpt(&bytes);
            Outcome::Failed {
                failure: Failure::Status(status),
                status: Some(status),
                message: match &ex {
                    Some(b) => {
                        format!("HTTP {status}: {}", b.chars().take(200).collect::<String>())
                    }
                    None => format!("HTTP {status}"),
                },
                excerpt: ex,
                retry_after,
            }
        }
    }
}
