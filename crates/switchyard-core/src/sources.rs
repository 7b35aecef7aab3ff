//! Declared sources: who may send events, how a vendor webhook becomes a CloudEvent, and
//! which business keys each source's events carry.
//!
//! Flows and workflows match on the CloudEvents `source` and `type` a source produces,
//! never on its endpoint name, so a system can move from webhooks to CloudEvents without
//! changing them. Everything here is compiled once from the configuration (jq programs
//! included), so `switchyard check` reports every problem before anything runs.

use crate::config::Config;
use crate::jq::{Jq, as_text};
use crate::{CloudEvent, Secret};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};

/// One identity of a business object an event carries: `shop_order = "#1042"`,
/// `picking = "WH/OUT/00017"`. An event may carry several, of one or several names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BusinessKey {
    pub name: String,
    pub value: String,
}

impl BusinessKey {
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Unique name; a webhook source's endpoint is `/v1/webhooks/<name>`.
    pub name: String,
    pub kind: SourceKind,
    /// `cloudevents`: the CloudEvents `source` this entry covers, exactly, or every source
    /// starting with a prefix written with a trailing `*`. `webhook`: the `source` stamped
    /// on the events it produces (a URI). `odoo`: the same, by default `<odoo url>/<model>`.
    #[serde(default)]
    pub source: String,
    /// Business keys: name → jq program over the event in CloudEvents JSON form
    /// (`.data.order_number`, `.subject`).
    #[serde(default)]
    pub keys: BTreeMap<String, String>,
    /// Webhooks only: how requests are authenticated.
    pub verify: Option<VerifyConfig>,
    /// Webhooks only: how the CloudEvents attributes are found.
    pub event: Option<EventMapping>,
    /// How long this source's events are kept, and its storage quota (defaults: `[retention]`).
    #[serde(default)]
    pub retention: SourceRetention,
    /// When this source is silent or lagging (the message-flow layer per source).
    #[serde(default)]
    pub health: HealthConfig,
    // ---- `kind = "odoo"` only (see `odoo_capture.rs`) ----
    /// The `[[odoo]]` connection polled.
    pub odoo: Option<String>,
    /// The model whose changes are captured (`sale.order`).
    pub model: Option<String>,
    /// The fields read (`write_date` is always read too).
    #[serde(default)]
    pub fields: Vec<String>,
    /// An Odoo domain limiting the records captured.
    pub domain: Option<Value>,
    /// Odoo context for the reads (over the connection's).
    pub context: Option<serde_json::Map<String, Value>>,
    pub interval_seconds: Option<u64>,
    pub page_size: Option<u32>,
    pub overlap_seconds: Option<u64>,
    pub initial: Option<crate::odoo_capture::Initial>,
    /// How long a webhook hint's record is read back before it is given up.
    pub hint_wait_seconds: Option<u64>,
}

/// Expected activity of a source: "the WMS sends at least one event every 10 minutes during
/// 06:00–22:00", "events arrive within 5 minutes of happening".
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// Silent when nothing arrived for this many minutes (within `active_hours`).
    pub silence_minutes: Option<u32>,
    /// `HH:MM-HH:MM` in UTC business time (may wrap past midnight); default: all day.
    pub active_hours: Option<String>,
    /// Lagging when events arrive on average later than this after their own `time`.
    pub max_lag_seconds: Option<u64>,
}

/// Compiled [`HealthConfig`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Health {
    pub silence: Option<chrono::Duration>,
    pub active: Option<(chrono::NaiveTime, chrono::NaiveTime)>,
    pub max_lag: Option<chrono::Duration>,
}

/// A source's state in the message-flow layer.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum HealthStatus {
    Ok,
    /// Nothing arrived for longer than the threshold during active hours.
    Silent {
        reason: String,
    },
    /// Events arrive later than the threshold after they happened (an upstream backlog).
    Lagging {
        reason: String,
    },
}

impl Health {
    fn active_at(&self, now: chrono::DateTime<chrono::Utc>) -> bool {
        let Some((from, to)) = self.active else {
            return true;
        };
        let t = now.time();
        if from <= to {
            t >= from && t < to
        } else {
            t >= from || t < to
        }
    }

    /// The status at business time `now`, given when the source last sent anything and its
    /// mean lag over the recent window.
    pub fn evaluate(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        last_received: Option<chrono::DateTime<chrono::Utc>>,
        avg_lag_ms: Option<f64>,
    ) -> HealthStatus {
        if let Some(silence) = self.silence
            && self.active_at(now)
        {
            match last_received {
                None => {
                    return HealthStatus::Silent {
                        reason: "nothing received yet".into(),
                    };
                }
                Some(last) if now - last > silence => {
                    return HealthStatus::Silent {
                        reason: format!(
                            "nothing received for {} min (expected within {} min)",
                            (now - last).num_minutes(),
                            silence.num_minutes()
                        ),
                    };
                }
                _ => {}
            }
        }
        if let (Some(max), Some(avg)) = (self.max_lag, avg_lag_ms)
            && avg > max.num_milliseconds() as f64
        {
            return HealthStatus::Lagging {
                reason: format!(
                    "events arrive {:.0} s after they happen on average (threshold {} s)",
                    avg / 1000.0,
                    max.num_seconds()
                ),
            };
        }
        HealthStatus::Ok
    }
}

fn parse_hours(s: &str) -> Result<(chrono::NaiveTime, chrono::NaiveTime), String> {
    let bad = || format!("\"{s}\" is not HH:MM-HH:MM");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let t = |x: &str| chrono::NaiveTime::parse_from_str(x.trim(), "%H:%M").map_err(|_| bad());
    let (a, b) = (t(a)?, t(b)?);
    if a == b {
        return Err(format!("\"{s}\" is an empty window"));
    }
    Ok((a, b))
}

/// Per-source overrides of `[retention]`, and an optional storage quota.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceRetention {
    pub payload_days: Option<u32>,
    pub dedupe_days: Option<u32>,
    /// Beyond this many MiB stored, ingest answers 429 for this source only.
    pub quota_mib: Option<u64>,
}

/// How long events are kept: the payload for `payload_days`, then the slim row (attributes,
/// keys, `(source, id)` for deduplication) until `dedupe_days`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub payload_days: u32,
    pub dedupe_days: u32,
    pub quota_bytes: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Cloudevents,
    Webhook,
    /// Changes polled from an Odoo model (and webhook hints), see `odoo_capture.rs`.
    Odoo,
}

/// How a webhook request proves where it comes from. Several secrets may be listed so a
/// rotation never drops a request: any one of them verifies.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum VerifyConfig {
    /// HMAC-SHA256 of the raw body in a header (Shopify: `X-Shopify-Hmac-Sha256`, base64;
    /// GitHub-style `sha256=<hex>` with `prefix = "sha256="`). A header may carry several
    /// signatures separated by commas or spaces.
    HmacSha256 {
        header: String,
        #[serde(default)]
        encoding: SignatureEncoding,
        #[serde(default)]
        prefix: Option<String>,
        secrets: Vec<Secret>,
    },
    /// Stripe style: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>]`, HMAC over
    /// `<t>.<body>`, with a tolerance window on the timestamp.
    Stripe {
        #[serde(default = "stripe_header")]
        header: String,
        secrets: Vec<Secret>,
        #[serde(default = "default_tolerance")]
        tolerance_seconds: u64,
    },
    /// Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature`
    /// (`v1,<base64>` entries), HMAC over `<id>.<timestamp>.<body>` with a `whsec_` secret.
    StandardWebhooks {
        secrets: Vec<Secret>,
        #[serde(default = "default_tolerance")]
        tolerance_seconds: u64,
    },
    /// `Authorization: Bearer <secret>`.
    Bearer { secrets: Vec<Secret> },
    /// A secret path segment, `/v1/webhooks/<name>/<secret>`, for senders that cannot sign.
    PathToken { secrets: Vec<Secret> },
}

impl VerifyConfig {
    pub fn secrets(&self) -> &[Secret] {
        match self {
            VerifyConfig::HmacSha256 { secrets, .. }
            | VerifyConfig::Stripe { secrets, .. }
            | VerifyConfig::StandardWebhooks { secrets, .. }
            | VerifyConfig::Bearer { secrets }
            | VerifyConfig::PathToken { secrets } => secrets,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignatureEncoding {
    #[default]
    Base64,
    Hex,
}

fn stripe_header() -> String {
    "Stripe-Signature".into()
}
fn default_tolerance() -> u64 {
    300
}

/// Where a webhook event's attributes come from: `header:<Name>` or a jq program over the
/// body (`.id`, `"shop.order." + $headers["x-shopify-topic"]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventMapping {
    pub id: String,
    #[serde(rename = "type")]
    pub ty: String,
    pub subject: Option<String>,
    pub time: Option<String>,
}

/// One compiled attribute extraction.
#[derive(Debug, Clone)]
pub enum Extract {
    /// A request header (name lower-cased).
    Header(String),
    /// jq over the body, with `$headers` (lower-cased names → values).
    Jq(Jq),
}

impl Extract {
    fn parse(s: &str) -> Result<Extract, String> {
        match s.strip_prefix("header:") {
            Some(h) if !h.trim().is_empty() => Ok(Extract::Header(h.trim().to_ascii_lowercase())),
            Some(_) => Err("`header:` needs a header name".into()),
            None => Jq::compile(s, &["$headers"]).map(Extract::Jq),
        }
    }

    /// The attribute's text, or `None` if the header is absent or jq yields nothing.
    pub fn eval(&self, body: &Value, headers: &Value) -> Result<Option<String>, String> {
        match self {
            Extract::Header(h) => Ok(headers.get(h).and_then(Value::as_str).map(str::to_string)),
            Extract::Jq(jq) => match jq.first(body, std::slice::from_ref(headers))? {
                None => Ok(None),
                Some(v) => as_text(&v)
                    .map(Some)
                    .ok_or_else(|| format!("`{}` yields {v}, not a string or number", jq.code())),
            },
        }
    }
}

/// A compiled webhook mapping.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub verify: VerifyConfig,
    pub id: Extract,
    pub ty: Extract,
    pub subject: Option<Extract>,
    pub time: Option<Extract>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SourcePattern {
    Exact(String),
    Prefix(String),
}

impl SourcePattern {
    fn matches(&self, source: &str) -> bool {
        match self {
            SourcePattern::Exact(s) => s == source,
            SourcePattern::Prefix(p) => source.starts_with(p.as_str()),
        }
    }
}

/// A declared source, compiled.
#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub kind: SourceKind,
    pub pattern: SourcePattern,
    pub keys: Vec<(String, Jq)>,
    pub webhook: Option<Webhook>,
    /// `odoo` sources: what is polled and how hints are taken.
    pub odoo: Option<crate::odoo_capture::OdooCapture>,
    pub retention: Retention,
    pub health: Health,
}

impl Source {
    /// The business keys `event` carries: every non-null text output of each key's program,
    /// sorted and without repeats, and a message for each key whose program failed (the
    /// other keys are still returned).
    pub fn extract_keys(&self, event: &CloudEvent) -> (Vec<(String, String)>, Vec<String>) {
        let mut out = Vec::new();
        let mut errors = Vec::new();
        if self.keys.is_empty() {
            return (out, errors);
        }
        let input = match crate::jq::Prepared::new(&event.to_json()) {
            Ok(i) => i,
            Err(e) => return (out, vec![format!("keys: {e}")]),
        };
        for (name, jq) in &self.keys {
            let values = match jq.run_prepared(&input, &[]) {
                Ok(v) => v,
                Err(e) => {
                    errors.push(format!("key {name}: {e}"));
                    continue;
                }
            };
            let mut found = Vec::new();
            let texts: Result<(), String> = values.iter().try_for_each(|v| {
                match v {
                    Value::Null => {}
                    // several values of one key (an invoice for several orders)
                    Value::Array(items) => {
                        for item in items.iter().filter(|i| !i.is_null()) {
                            found.push((name.clone(), key_text(name, item)?));
                        }
                    }
                    other => found.push((name.clone(), key_text(name, other)?)),
                }
                Ok(())
            });
            match texts {
                Ok(()) => out.extend(found),
                Err(e) => errors.push(e),
            }
        }
        out.sort();
        out.dedup();
        (out, errors)
    }
}

fn key_text(name: &str, v: &Value) -> Result<String, String> {
    match as_text(v) {
        Some(s) if !s.is_empty() && s.len() <= 512 => Ok(s),
        Some(s) if s.is_empty() => Err(format!("key {name}: the value is empty")),
        Some(_) => Err(format!("key {name}: the value is longer than 512 bytes")),
        None => Err(format!(
            "key {name}: {v} is not a string, number or boolean"
        )),
    }
}

/// The sources one retention applies to: those equal to one of `exact` or starting with one
/// of `prefixes` (or, with `invert`, every other source).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionRule {
    pub label: String,
    pub exact: Vec<String>,
    pub prefixes: Vec<String>,
    pub invert: bool,
    pub retention: Retention,
}

/// Every declared source, and what to do with undeclared CloudEvents senders.
#[derive(Debug, Clone)]
pub struct Sources {
    pub accept_undeclared: bool,
    /// Retention of events no declaration covers.
    pub default_retention: Retention,
    sources: Vec<Source>,
}

impl Default for Sources {
    /// Nothing declared, undeclared senders accepted (the configuration's default).
    fn default() -> Self {
        Sources {
            accept_undeclared: true,
            default_retention: Retention {
                payload_days: 30,
                dedupe_days: 90,
                quota_bytes: None,
            },
            sources: Vec::new(),
        }
    }
}

fn is_name(s: &str, extra: &[u8]) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || extra.contains(&b))
}

impl Sources {
    /// Compiles the `[[sources]]` of a configuration; every problem is listed as
    /// (`sources[i].key`, message).
    pub fn compile(config: &Config) -> Result<Sources, Vec<(String, String)>> {
        let mut problems = Vec::new();
        let mut names = HashSet::new();
        let mut patterns = HashSet::new();
        let mut sources = Vec::new();
        for (i, sc) in config.sources.iter().enumerate() {
            let at = |k: &str| format!("sources[{i}].{k}");
            if !is_name(&sc.name, b"-_") {
                problems.push((
                    at("name"),
                    "must be 1 to 64 of a-z, 0-9, '-' and '_'".into(),
                ));
            } else if !names.insert(sc.name.clone()) {
                problems.push((at("name"), format!("\"{}\" is declared twice", sc.name)));
            }
            let pattern = match sc.source.strip_suffix('*') {
                Some(prefix) if sc.kind == SourceKind::Cloudevents => {
                    SourcePattern::Prefix(prefix.to_string())
                }
                _ if sc.kind == SourceKind::Odoo && sc.source.is_empty() => {
                    SourcePattern::Exact(odoo_source_uri(config, sc))
                }
                _ => SourcePattern::Exact(sc.source.clone()),
            };
            let raw = match &pattern {
                SourcePattern::Exact(s) | SourcePattern::Prefix(s) => s.clone(),
            };
            let derived = sc.kind == SourceKind::Odoo && sc.source.is_empty();
            if derived {
                // made of the connection's URL and the model, which are checked themselves
                if !patterns.insert(pattern.clone()) {
                    problems.push((
                        at("source"),
                        format!("\"{raw}\" is declared by another source; give this one its own `source`"),
                    ));
                }
            } else if raw.is_empty() || raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
                problems.push((at("source"), "must be a non-empty URI-reference".into()));
            } else if sc.kind != SourceKind::Cloudevents
                && let Some(v) = source_violation(&raw)
            {
                // every event the webhook makes carries it: refuse it here, not per request
                problems.push((at("source"), v));
            } else if !patterns.insert(pattern.clone()) {
                problems.push((
                    at("source"),
                    format!("\"{}\" is declared by another source", sc.source),
                ));
            }
            let mut keys = Vec::new();
            for (name, code) in &sc.keys {
                if !is_name(name, b"_") {
                    problems.push((
                        at(&format!("keys.{name}")),
                        "key names are a-z, 0-9 and '_'".into(),
                    ));
                }
                match Jq::compile(code, &[]) {
                    Ok(jq) => keys.push((name.clone(), jq)),
                    Err(e) => problems.push((at(&format!("keys.{name}")), e)),
                }
            }
            if sc.kind != SourceKind::Odoo {
                problems.extend(crate::odoo_capture::stray_keys(sc, &at));
            }
            let odoo = match sc.kind {
                SourceKind::Odoo => {
                    crate::odoo_capture::compile(sc, &at, &config.odoo, &mut problems)
                }
                _ => None,
            };
            let webhook = match sc.kind {
                SourceKind::Odoo => None,
                SourceKind::Cloudevents => {
                    if sc.verify.is_some() {
                        problems.push((at("verify"), "only webhook sources verify requests; CloudEvents senders use API tokens".into()));
                    }
                    if sc.event.is_some() {
                        problems.push((
                            at("event"),
                            "only webhook sources map requests to events".into(),
                        ));
                    }
                    None
                }
                SourceKind::Webhook => {
                    let verify = match &sc.verify {
                        Some(v) => {
                            check_verify(v, &at("verify"), &mut problems);
                            Some(v.clone())
                        }
                        None => {
                            problems.push((
                                at("verify"),
                                "a webhook source must say how requests are verified".into(),
                            ));
                            None
                        }
                    };
                    let mapping = match &sc.event {
                        Some(m) => {
                            let before = problems.len();
                            let mut ex = |k: &str, s: &str| match Extract::parse(s) {
                                Ok(e) => Some(e),
                                Err(e) => {
                                    problems.push((at(&format!("event.{k}")), e));
                                    None
                                }
                            };
                            let id = ex("id", &m.id);
                            let ty = ex("type", &m.ty);
                            let subject = m.subject.as_deref().and_then(|s| ex("subject", s));
                            let time = m.time.as_deref().and_then(|s| ex("time", s));
                            match (id, ty) {
                                (Some(id), Some(ty)) if problems.len() == before => {
                                    Some((id, ty, subject, time))
                                }
                                _ => None,
                            }
                        }
                        None => {
                            problems.push((
                                at("event"),
                                "a webhook source needs [sources.event] with at least id and type"
                                    .into(),
                            ));
                            None
                        }
                    };
                    match (verify, mapping) {
                        (Some(verify), Some((id, ty, subject, time))) => Some(Webhook {
                            verify,
                            id,
                            ty,
                            subject,
                            time,
                        }),
                        _ => None,
                    }
                }
            };
            let r = &sc.retention;
            let retention = Retention {
                payload_days: r.payload_days.unwrap_or(config.retention.payload_days),
                dedupe_days: r.dedupe_days.unwrap_or(config.retention.dedupe_days),
                quota_bytes: r.quota_mib.map(|m| m * 1024 * 1024),
            };
            // an inherited [retention] problem is reported once, at [retention]
            let overridden = r.payload_days.is_some() || r.dedupe_days.is_some();
            if overridden && retention.payload_days == 0 {
                problems.push((at("retention.payload_days"), "must be at least 1".into()));
            }
            if overridden && retention.dedupe_days < retention.payload_days {
                problems.push((
                    at("retention.dedupe_days"),
                    format!(
                        "{} is shorter than payload_days {}: the dedupe index must outlive the payload",
                        retention.dedupe_days, retention.payload_days
                    ),
                ));
            }
            if r.quota_mib == Some(0) {
                problems.push((at("retention.quota_mib"), "must be at least 1".into()));
            }
            let h = &sc.health;
            let active = match h.active_hours.as_deref().map(parse_hours) {
                Some(Ok(w)) => Some(w),
                Some(Err(e)) => {
                    problems.push((at("health.active_hours"), e));
                    None
                }
                None => None,
            };
            if h.silence_minutes == Some(0) {
                problems.push((at("health.silence_minutes"), "must be at least 1".into()));
            }
            if h.active_hours.is_some() && h.silence_minutes.is_none() {
                problems.push((
                    at("health.active_hours"),
                    "only meaningful with silence_minutes".into(),
                ));
            }
            let health = Health {
                silence: h
                    .silence_minutes
                    .map(|m| chrono::Duration::minutes(m.into())),
                active,
                max_lag: h
                    .max_lag_seconds
                    .map(|s| chrono::Duration::seconds(s as i64)),
            };
            sources.push(Source {
                name: sc.name.clone(),
                kind: sc.kind,
                pattern,
                keys,
                webhook,
                odoo,
                retention,
                health,
            });
        }
        if problems.is_empty() {
            Ok(Sources {
                accept_undeclared: config.ingest.accept_undeclared_sources,
                default_retention: Retention {
                    payload_days: config.retention.payload_days,
                    dedupe_days: config.retention.dedupe_days,
                    quota_bytes: None,
                },
                sources,
            })
        } else {
            Err(problems)
        }
    }

    pub fn all(&self) -> &[Source] {
        &self.sources
    }

    /// The declared CloudEvents source covering `source`: an exact declaration first, then
    /// the longest matching prefix.
    pub fn for_cloudevent(&self, source: &str) -> Option<&Source> {
        let ce = self
            .sources
            .iter()
            .filter(|s| s.kind == SourceKind::Cloudevents);
        ce.clone()
            .find(|s| s.pattern == SourcePattern::Exact(source.to_string()))
            .or_else(|| {
                ce.filter(|s| s.pattern.matches(source))
                    .max_by_key(|s| match &s.pattern {
                        SourcePattern::Prefix(p) => p.len(),
                        SourcePattern::Exact(_) => 0,
                    })
            })
    }

    /// The name usage and metrics are counted under: the declared source covering a
    /// CloudEvents `source`, or `undeclared`.
    pub fn label_for(&self, source: &str) -> String {
        self.for_cloudevent(source)
            .or_else(|| {
                self.sources.iter().find(|s| {
                    s.kind != SourceKind::Cloudevents
                        && s.pattern == SourcePattern::Exact(source.to_string())
                })
            })
            .map_or_else(|| "undeclared".to_string(), |s| s.name.clone())
    }

    /// What the background purge applies: one rule per declared source, and one for every
    /// source no declaration covers. Where prefixes overlap, an event is purged by the
    /// shortest retention among the declarations that cover it.
    pub fn retention_rules(&self) -> Vec<RetentionRule> {
        let mut rules = Vec::new();
        let (mut all_exact, mut all_prefixes) = (Vec::new(), Vec::new());
        for s in &self.sources {
            let (exact, prefixes) = match &s.pattern {
                SourcePattern::Exact(e) => (vec![e.clone()], Vec::new()),
                SourcePattern::Prefix(p) => (Vec::new(), vec![p.clone()]),
            };
            all_exact.extend(exact.clone());
            all_prefixes.extend(prefixes.clone());
            rules.push(RetentionRule {
                label: s.name.clone(),
                exact,
                prefixes,
                invert: false,
                retention: s.retention,
            });
        }
        rules.push(RetentionRule {
            label: "undeclared".into(),
            exact: all_exact,
            prefixes: all_prefixes,
            invert: true,
            retention: self.default_retention,
        });
        rules
    }

    /// The webhook or odoo source whose stamped `source` URI is exactly `source`: only it
    /// may produce events of that `source`.
    pub fn webhook_with_source(&self, source: &str) -> Option<&Source> {
        self.sources.iter().find(|s| {
            s.kind != SourceKind::Cloudevents
                && s.pattern == SourcePattern::Exact(source.to_string())
        })
    }

    /// The odoo source named `name`.
    pub fn odoo(&self, name: &str) -> Option<&Source> {
        self.sources
            .iter()
            .find(|s| s.kind == SourceKind::Odoo && s.name == name)
    }

    pub fn webhook(&self, name: &str) -> Option<&Source> {
        self.sources
            .iter()
            .find(|s| s.kind == SourceKind::Webhook && s.name == name)
    }
}

pub(crate) fn check_verify(v: &VerifyConfig, at: &str, problems: &mut Vec<(String, String)>) {
    if v.secrets().is_empty() {
        problems.push((format!("{at}.secrets"), "list at least one secret".into()));
    }
    for (j, s) in v.secrets().iter().enumerate() {
        match s.expose() {
            Err(e) => problems.push((format!("{at}.secrets[{j}]"), e.to_string())),
            Ok(value) if value.is_empty() => {
                problems.push((format!("{at}.secrets[{j}]"), "the secret is empty".into()))
            }
            Ok(value) => {
                if let VerifyConfig::StandardWebhooks { .. } = v
                    && standard_webhooks_key(&value).is_none()
                {
                    problems.push((
                        format!("{at}.secrets[{j}]"),
                        "a Standard Webhooks secret is `whsec_` followed by base64".into(),
                    ));
                }
            }
        }
    }
    match v {
        VerifyConfig::Stripe {
            tolerance_seconds, ..
        }
        | VerifyConfig::StandardWebhooks {
            tolerance_seconds, ..
        } if *tolerance_seconds == 0 => {
            problems.push((
                format!("{at}.tolerance_seconds"),
                "must be at least 1".into(),
            ));
        }
        VerifyConfig::HmacSha256 { header, .. } | VerifyConfig::Stripe { header, .. }
            if header.trim().is_empty() =>
        {
            problems.push((format!("{at}.header"), "must name a header".into()));
        }
        _ => {}
    }
}

/// An odoo source's default CloudEvents `source`: the connection's URL and the model
/// (`https://erp.example.com/sale.order`).
fn odoo_source_uri(config: &Config, sc: &SourceConfig) -> String {
    let url = sc
        .odoo
        .as_ref()
        .and_then(|n| config.odoo.iter().find(|c| c.name == *n))
        .map_or("odoo:", |c| c.url.trim_end_matches('/'));
    format!("{url}/{}", sc.model.as_deref().unwrap_or("unknown"))
}

/// Why `source` is not a valid CloudEvents `source`, by the same rules ingest applies.
fn source_violation(source: &str) -> Option<String> {
    let attrs = [
        ("specversion", "1.0"),
        ("id", "x"),
        ("type", "x"),
        ("source", source),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
    .collect();
    CloudEvent::from_parts(crate::cloudevent::RawAttributes { attrs }, None)
        .err()
        .and_then(|v| v.into_iter().find(|v| v.field == "source"))
        .map(|v| v.detail)
}

/// The HMAC key of a Standard Webhooks secret (`whsec_<base64>`).
pub fn standard_webhooks_key(secret: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let b64 = secret.strip_prefix("whsec_").unwrap_or(secret);
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .ok()
        .filter(|k| !k.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Result<Config, crate::config::ConfigErrors> {
        Config::parse(text, "t.toml", Vec::new())
    }

    #[test]
    fn cloudevents_sources_match_exactly_then_by_longest_prefix() {
        let c = config(
            r#"
[[sources]]
name = "wms"
kind = "cloudevents"
source = "https://wms.example.com/*"
[[sources]]
name = "wms-wh1"
kind = "cloudevents"
source = "https://wms.example.com/wh1/*"
[[sources]]
name = "shop"
kind = "cloudevents"
source = "https://shop.example.com"
keys = { shop_order = ".data.order" }
"#,
        )
        .unwrap();
        let s = Sources::compile(&c).unwrap();
        assert_eq!(
            s.for_cloudevent("https://wms.example.com/wh2")
                .unwrap()
                .name,
            "wms"
        );
        assert_eq!(
            s.for_cloudevent("https://wms.example.com/wh1/x")
                .unwrap()
                .name,
            "wms-wh1"
        );
        assert_eq!(
            s.for_cloudevent("https://shop.example.com").unwrap().name,
            "shop"
        );
        assert!(s.for_cloudevent("https://shop.example.com/other").is_none());
        assert!(s.accept_undeclared);
    }

    #[test]
    fn every_source_problem_is_reported_with_its_line() {
        let e = config(
            r#"
[[sources]]
name = "Shop Orders"
kind = "webhook"
source = "https://shop.example.com"
keys = { order = ".data.[" }

[[sources]]
name = "wms"
kind = "cloudevents"
source = "https://wms.example.com/*"
[sources.verify]
kind = "bearer"
secrets = ["env:SWITCHYARD_TEST_UNSET_SECRET"]
"#,
        )
        .unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("t.toml:3:1: sources[0].name: must be"),
            "{text}"
        );
        assert!(
            text.contains("sources[0].keys.order: jq syntax error"),
            "{text}"
        );
        assert!(
            text.contains("sources[0].verify: a webhook source must say"),
            "{text}"
        );
        assert!(
            text.contains("sources[0].event: a webhook source needs"),
            "{text}"
        );
        assert!(
            text.contains("sources[1].verify: only webhook sources verify"),
            "{text}"
        );
    }

    #[test]
    fn a_webhook_source_must_be_a_valid_cloudevents_source() {
        let e = config(
            "[[sources]]\nname = \"shop\"\nkind = \"webhook\"\nsource = \"https://s.example.com/a|b\"\n[sources.verify]\nkind = \"path-token\"\nsecrets = [\"file:/dev/null\"]\n[sources.event]\nid = \".id\"\ntype = '\"t\"'\n",
        )
        .unwrap_err();
        assert!(
            e.to_string().contains(
                "sources[0].source: \"https://s.example.com/a|b\" is not a URI-reference"
            ),
            "{e}"
        );
    }

    #[test]
    fn secrets_of_the_wrong_type_are_not_echoed() {
        let e = config(
            "[[sources]]\nname = \"shop\"\nkind = \"webhook\"\nsource = \"https://s.example.com\"\n[sources.verify]\nkind = \"bearer\"\nsecrets = [987654321]\n",
        )
        .unwrap_err();
        assert!(!e.to_string().contains("987654321"), "{e}");
    }

    #[test]
    fn silence_counts_only_in_active_hours_and_lag_against_its_threshold() {
        use chrono::TimeZone;
        let h = Health {
            silence: Some(chrono::Duration::minutes(10)),
            active: Some(parse_hours("06:00-22:00").unwrap()),
            max_lag: Some(chrono::Duration::seconds(300)),
        };
        let at = |hh, mm| {
            chrono::Utc
                .with_ymd_and_hms(2026, 11, 23, hh, mm, 0)
                .unwrap()
        };
        assert_eq!(
            h.evaluate(at(12, 0), Some(at(11, 55)), Some(1000.0)),
            HealthStatus::Ok
        );
        assert!(matches!(
            h.evaluate(at(12, 0), Some(at(11, 45)), None),
            HealthStatus::Silent { .. }
        ));
        assert!(matches!(
            h.evaluate(at(12, 0), None, None),
            HealthStatus::Silent { .. }
        ));
        // at night nobody expects the WMS to send
        assert_eq!(
            h.evaluate(at(23, 0), Some(at(21, 0)), None),
            HealthStatus::Ok
        );
        assert!(matches!(
            h.evaluate(at(12, 0), Some(at(11, 59)), Some(301_000.0)),
            HealthStatus::Lagging { .. }
        ));
        // a window across midnight
        let night = Health {
            active: Some(parse_hours("22:00-06:00").unwrap()),
            ..h
        };
        assert!(matches!(
            night.evaluate(at(23, 0), Some(at(21, 0)), None),
            HealthStatus::Silent { .. }
        ));
        assert_eq!(
            night.evaluate(at(12, 0), Some(at(1, 0)), None),
            HealthStatus::Ok
        );
        assert!(parse_hours("25:00-01:00").is_err());
        assert!(parse_hours("06:00-06:00").is_err());
    }

    #[test]
    fn keys_are_extracted_from_the_event() {
        let c = config(
            r#"
[[sources]]
name = "odoo"
kind = "cloudevents"
source = "https://odoo.example.com/*"
keys = { sale_order = ".data.name", shop_order = ".data.origin", invoice_of = ".data.orders" }
"#,
        )
        .unwrap();
        let s = Sources::compile(&c).unwrap();
        let ev = CloudEvent::from_json(serde_json::json!({
            "specversion": "1.0", "id": "1", "source": "https://odoo.example.com/sale.order", "type": "t",
            "data": {"name": "S00042", "origin": "#1042", "orders": ["S00042", "S00043", null]}
        }))
        .unwrap()
        .event;
        let (keys, errors) = s.for_cloudevent(&ev.source).unwrap().extract_keys(&ev);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            keys,
            vec![
                ("invoice_of".to_string(), "S00042".to_string()),
                ("invoice_of".into(), "S00043".into()),
                ("sale_order".into(), "S00042".into()),
                ("shop_order".into(), "#1042".into()),
            ]
        );
        // one failing program does not cost the others
        let c = config(
            r#"
[[sources]]
name = "odoo"
kind = "cloudevents"
source = "https://odoo.example.com/*"
keys = { sale_order = ".data.name", broken = ".data.name + 1", object = ".data" }
"#,
        )
        .unwrap();
        let s = Sources::compile(&c).unwrap();
        let (keys, errors) = s.for_cloudevent(&ev.source).unwrap().extract_keys(&ev);
        assert_eq!(keys, vec![("sale_order".to_string(), "S00042".to_string())]);
        assert_eq!(errors.len(), 2, "{errors:?}");
    }
}
