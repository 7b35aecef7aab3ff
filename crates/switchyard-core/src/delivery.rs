//! Delivery rules as data: priority lanes, the error classifier, the retry schedule and the
//! idempotency key. The delivery engine (`switchyard-deliver`) applies them; nothing here
//! does I/O.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A flow's priority class. Each has its own lane (claim loop and concurrency), so a
/// backlog in `bulk` never delays `critical`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Lane {
    Critical,
    #[default]
    Standard,
    Bulk,
}

impl Lane {
    pub const ALL: [Lane; 3] = [Lane::Critical, Lane::Standard, Lane::Bulk];

    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Critical => "critical",
            Lane::Standard => "standard",
            Lane::Bulk => "bulk",
        }
    }

    /// Stored form: 0 (critical) to 2 (bulk); smaller goes first.
    pub fn rank(self) -> i16 {
        self as i16
    }

    pub fn from_rank(rank: i16) -> Option<Lane> {
        Lane::ALL.get(usize::try_from(rank).ok()?).copied()
    }

    pub fn parse(s: &str) -> Option<Lane> {
        Lane::ALL.into_iter().find(|l| l.as_str() == s)
    }
}

/// What kind of failure an attempt ended in. Destinations report these; [`classify`]
/// decides what happens next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Failure {
    /// TCP connection refused (nobody listens).
    ConnectionRefused,
    /// The connection was reset or closed mid-request.
    ConnectionReset,
    /// Any other failure to connect (DNS, unreachable network).
    Connect,
    /// Connect or request timeout.
    Timeout,
    /// The server's TLS certificate was refused (expired, wrong name, unknown CA).
    TlsCertificate,
    /// The destination answered with this HTTP status.
    Status(u16),
    /// An SMTP server answered with this negative reply code (4xx or 5xx).
    SmtpReply(u16),
    /// The request could not be built or the answer not read (a bug or a broken proxy).
    Protocol,
}

/// What a failure means for the delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// Try again later (backoff); the destination may be busy or briefly down.
    Transient,
    /// Our credentials are refused: pause the destination instead of burning attempts.
    Credential,
    /// The destination refuses this payload: dead-letter at once.
    Permanent,
    /// The flow's jq mapping failed (recorded at routing; replayable after a fix).
    Mapping,
    /// The mapped payload broke the flow's JSON Schema.
    Invalid,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient",
            ErrorClass::Credential => "credential",
            ErrorClass::Permanent => "permanent",
            ErrorClass::Mapping => "mapping",
            ErrorClass::Invalid => "invalid",
        }
    }

    pub fn parse(s: &str) -> Option<ErrorClass> {
        [
            ErrorClass::Transient,
            ErrorClass::Credential,
            ErrorClass::Permanent,
            ErrorClass::Mapping,
            ErrorClass::Invalid,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }
}

/// HTTP statuses that are worth retrying: timeouts, conflicts and locks that clear, "too
/// early", rate limits, and every server error.
const TRANSIENT_STATUS: [u16; 5] = [408, 409, 423, 425, 429];
/// Statuses that mean our credentials are refused.
const CREDENTIAL_STATUS: [u16; 2] = [401, 403];
/// SMTP replies that mean our credentials are refused: authentication required (530), the
/// mechanism too weak (534), the credentials invalid (535).
const CREDENTIAL_SMTP: [u16; 3] = [530, 534, 535];

/// The one classifier: what a failure means. A table, so tests can drive it row by row;
/// destination types may refine it (the Odoo destination reads fault names).
pub fn classify(failure: Failure) -> ErrorClass {
    match failure {
        Failure::ConnectionRefused
        | Failure::ConnectionReset
        | Failure::Connect
        | Failure::Timeout => ErrorClass::Transient,
        Failure::TlsCertificate => ErrorClass::Credential,
        Failure::Status(s) if CREDENTIAL_STATUS.contains(&s) => ErrorClass::Credential,
        Failure::Status(s) if TRANSIENT_STATUS.contains(&s) || (500..=599).contains(&s) => {
            ErrorClass::Transient
        }
        Failure::Status(_) => ErrorClass::Permanent,
        // SMTP says it itself (RFC 5321 4.2.1): 4yz is "try again later", 5yz is "do not
        // repeat this exact request"; of those, the authentication refusals pause.
        Failure::SmtpReply(c) if CREDENTIAL_SMTP.contains(&c) => ErrorClass::Credential,
        Failure::SmtpReply(c) if (500..=599).contains(&c) => ErrorClass::Permanent,
        // 4yz, and anything else a server should not have sent as a refusal.
        Failure::SmtpReply(_) => ErrorClass::Transient,
        // A broken answer may be a proxy hiccup: retrying is safe (the key deduplicates).
        Failure::Protocol => ErrorClass::Transient,
    }
}

/// A flow's retry policy: exponential backoff with full jitter, capped, bounded by attempts
/// and by the age of the delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts in all (the first one included) before the delivery is dead-lettered.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Seconds after the delivery was created past which it is dead-lettered rather than
    /// retried again.
    #[serde(default = "default_max_age")]
    pub max_age_seconds: u64,
    /// Milliseconds: the backoff ceiling of the first retry (doubles each time).
    #[serde(default = "default_initial_ms")]
    pub initial_ms: u64,
    /// Seconds: the largest backoff ceiling.
    #[serde(default = "default_max_backoff")]
    pub max_backoff_seconds: u64,
}

fn default_max_attempts() -> u32 {
    10
}
fn default_max_age() -> u64 {
    24 * 3600
}
fn default_initial_ms() -> u64 {
    1000
}
fn default_max_backoff() -> u64 {
    600
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: default_max_attempts(),
            max_age_seconds: default_max_age(),
            initial_ms: default_initial_ms(),
            max_backoff_seconds: default_max_backoff(),
        }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Try again at this business time.
    RetryAt(DateTime<Utc>),
    /// Give up: dead-letter with this reason.
    Dead(String),
}

impl RetryPolicy {
    /// The backoff ceiling after `attempts` failed attempts (1 = after the first failure).
    pub fn ceiling(&self, attempts: u32) -> Duration {
        let exp = attempts.saturating_sub(1).min(30);
        let ms = self.initial_ms.saturating_mul(1u64 << exp);
        let cap = self.max_backoff_seconds.saturating_mul(1000);
        Duration::milliseconds(ms.min(cap).min(i64::MAX as u64) as i64)
    }

    /// Decides after a transient failure. `attempts` counts the failed attempts so far (this
    /// one included), `created` is when the delivery was created, `jitter` a uniform draw
    /// in `[0, 1)` (full jitter: the delay is `jitter × ceiling`), and `retry_after` the
    /// destination's own request, which is honoured when longer.
    pub fn next(
        &self,
        attempts: u32,
        created: DateTime<Utc>,
        now: DateTime<Utc>,
        jitter: f64,
        retry_after: Option<Duration>,
        last_error: &str,
    ) -> Next {
        if attempts >= self.max_attempts {
            return Next::Dead(format!(
                "gave up after {attempts} attempts (max_attempts = {}); last error: {last_error}",
                self.max_attempts
            ));
        }
        let ceiling = self.ceiling(attempts);
        let jittered = Duration::milliseconds(
            (ceiling.num_milliseconds() as f64 * jitter.clamp(0.0, 1.0)) as i64,
        );
        let delay = match retry_after {
            Some(ra) if ra > jittered => ra,
            _ => jittered,
        };
        let at = now + delay;
        let deadline =
            created + Duration::seconds(self.max_age_seconds.min(i64::MAX as u64 / 1000) as i64);
        if at > deadline {
            return Next::Dead(format!(
                "the next attempt ({}) would be past max_age_seconds = {} after creation; last error: {last_error}",
                at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                self.max_age_seconds
            ));
        }
        Next::RetryAt(at)
    }
}

/// Parses an HTTP `Retry-After` value: delay-seconds or an HTTP-date (relative to `now`).
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::seconds(secs.min(7 * 24 * 3600) as i64));
    }
    let at = DateTime::parse_from_rfc2822(v).ok()?.with_timezone(&Utc);
    Some((at - now).max(Duration::zero()))
}

/// The `Idempotency-Key` of a delivery: stable across automatic retries of one (flow, event
/// source, event id), and extended with the replay generation when an operator deliberately
/// replays or edits it, so a receiver that deduplicates does not drop the replay.
pub fn idempotency_key(flow: &str, source: &str, id: &str, generation: i64) -> String {
    let mut h = Sha256::new();
    for part in [flow, source, id] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    let digest = hex::encode(&h.finalize()[..16]);
    if generation > 0 {
        format!("{flow}.{digest}.r{generation}")
    } else {
        format!("{flow}.{digest}")
    }
}

/// A W3C trace id (32 hex digits) for an event: the one of its `traceparent` extension when
/// it carries a valid one, otherwise derived from its `(source, id)`, so every attempt and
/// replay of an event shares one trace.
pub fn trace_id(traceparent: Option<&str>, source: &str, id: &str) -> String {
    if let Some(tp) = traceparent {
        let parts: Vec<&str> = tp.split('-').collect();
        if parts.len() == 4
            && parts[1].len() == 32
            && parts[1].bytes().all(|b| b.is_ascii_hexdigit())
            && parts[1] != "00000000000000000000000000000000"
        {
            return parts[1].to_ascii_lowercase();
        }
    }
    let mut h = Sha256::new();
    h.update(source.as_bytes());
    h.update([0]);
    h.update(id.as_bytes());
    hex::encode(&h.finalize()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The classifier table, row by row.
    #[test]
    fn classifier_table() {
        use ErrorClass::*;
        let rows: &[(Failure, ErrorClass)] = &[
            (Failure::ConnectionRefused, Transient),
            (Failure::ConnectionReset, Transient),
            (Failure::Connect, Transient),
            (Failure::Timeout, Transient),
            (Failure::Protocol, Transient),
            (Failure::TlsCertificate, Credential),
            (Failure::Status(401), Credential),
            (Failure::Status(403), Credential),
            (Failure::Status(408), Transient),
            (Failure::Status(409), Transient),
            (Failure::Status(423), Transient),
            (Failure::Status(425), Transient),
            (Failure::Status(429), Transient),
            (Failure::Status(500), Transient),
            (Failure::Status(502), Transient),
            (Failure::Status(503), Transient),
            (Failure::Status(504), Transient),
            (Failure::Status(599), Transient),
            (Failure::Status(400), Permanent),
            (Failure::Status(404), Permanent),
            (Failure::Status(405), Permanent),
            (Failure::Status(410), Permanent),
            (Failure::Status(413), Permanent),
            (Failure::Status(415), Permanent),
            (Failure::Status(422), Permanent),
            (Failure::Status(451), Permanent),
            (Failure::Status(301), Permanent),
            (Failure::SmtpReply(421), Transient),
            (Failure::SmtpReply(450), Transient),
            (Failure::SmtpReply(451), Transient),
            (Failure::SmtpReply(452), Transient),
            (Failure::SmtpReply(454), Transient),
            (Failure::SmtpReply(530), Credential),
            (Failure::SmtpReply(534), Credential),
            (Failure::SmtpReply(535), Credential),
            (Failure::SmtpReply(500), Permanent),
            (Failure::SmtpReply(550), Permanent),
            (Failure::SmtpReply(552), Permanent),
            (Failure::SmtpReply(553), Permanent),
            (Failure::SmtpReply(554), Permanent),
        ];
        for (failure, class) in rows {
            assert_eq!(classify(*failure), *class, "{failure:?}");
        }
    }

    #[test]
    fn backoff_is_full_jitter_under_a_doubling_capped_ceiling() {
        let p = RetryPolicy {
            max_attempts: 20,
            max_age_seconds: 1_000_000,
            initial_ms: 1000,
            max_backoff_seconds: 60,
        };
        let t0 = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(p.ceiling(1), Duration::seconds(1));
        assert_eq!(p.ceiling(2), Duration::seconds(2));
        assert_eq!(p.ceiling(4), Duration::seconds(8));
        assert_eq!(p.ceiling(10), Duration::seconds(60));
        assert_eq!(p.next(3, t0, t0, 0.0, None, "x"), Next::RetryAt(t0));
        assert_eq!(
            p.next(3, t0, t0, 0.5, None, "x"),
            Next::RetryAt(t0 + Duration::seconds(2))
        );
        // Retry-After wins when longer than the jittered delay, not when shorter.
        assert_eq!(
            p.next(1, t0, t0, 0.5, Some(Duration::seconds(30)), "x"),
            Next::RetryAt(t0 + Duration::seconds(30))
        );
        assert_eq!(
            p.next(5, t0, t0, 0.99, Some(Duration::seconds(1)), "x"),
            Next::RetryAt(t0 + Duration::milliseconds(15_840))
        );
    }

    #[test]
    fn attempts_and_age_bound_retries() {
        let p = RetryPolicy {
            max_attempts: 3,
            max_age_seconds: 10,
            initial_ms: 1000,
            max_backoff_seconds: 60,
        };
        let t0 = Utc::now();
        assert!(
            matches!(p.next(3, t0, t0, 0.1, None, "boom"), Next::Dead(r) if r.contains("3 attempts") && r.contains("boom"))
        );
        assert!(matches!(
            p.next(1, t0, t0 + Duration::seconds(9), 0.9, Some(Duration::seconds(5)), "e"),
            Next::Dead(r) if r.contains("max_age_seconds")
        ));
    }

    #[test]
    fn retry_after_forms() {
        let now = DateTime::parse_from_rfc3339("2026-11-23T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(parse_retry_after("120", now), Some(Duration::seconds(120)));
        assert_eq!(
            parse_retry_after("Mon, 23 Nov 2026 10:01:00 GMT", now),
            Some(Duration::seconds(60))
        );
        assert_eq!(
            parse_retry_after("Mon, 23 Nov 2026 09:00:00 GMT", now),
            Some(Duration::zero())
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn idempotency_keys_are_stable_and_replays_differ() {
        let a = idempotency_key("orders", "shop", "1", 0);
        assert_eq!(a, idempotency_key("orders", "shop", "1", 0));
        assert_ne!(a, idempotency_key("orders", "shop", "2", 0));
        assert_ne!(a, idempotency_key("orders", "sho", "p1", 0));
        assert_ne!(a, idempotency_key("other", "shop", "1", 0));
        let r1 = idempotency_key("orders", "shop", "1", 1);
        assert!(r1.starts_with(&a) && r1.ends_with(".r1"));
    }

    #[test]
    fn trace_ids_follow_the_event() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            trace_id(Some(tp), "s", "1"),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        let derived = trace_id(None, "s", "1");
        assert_eq!(derived.len(), 32);
        assert_eq!(derived, trace_id(Some("garbage"), "s", "1"));
    }
}
