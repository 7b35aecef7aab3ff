//! Flows and destinations: which events go where, how they are mapped and validated, and
//! the HTTP endpoints they are sent to.
//!
//! Everything is compiled once from the configuration (globs, jq programs, JSON Schemas), so
//! `switchyard check` reports a broken program, schema, destination reference or ordering
//! setting with its position, and routing an event never meets a configuration error.

use crate::config::Config;
use crate::delivery::{ErrorClass, Lane, RetryPolicy};
use crate::jq::{Jq, Prepared, as_text};
use crate::{CloudEvent, Secret};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationConfig {
    pub name: String,
    /// `http` (the default), `odoo` or `smtp`.
    #[serde(default, rename = "type")]
    pub kind: DestinationKind,
    /// The endpoint of an `http` destination, or the `smtp://host[:port]` server of an
    /// `smtp` one.
    #[serde(default)]
    pub url: String,
    /// The `[[odoo]]` connection of an `odoo` destination (what each flow does there is
    /// its `[flows.odoo]`).
    pub odoo: Option<String>,
    /// The sender, TLS mode and credentials of an `smtp` destination.
    pub smtp: Option<SmtpConfig>,
    #[serde(default = "default_method")]
    pub method: String,
    /// Extra request headers, sent as written.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub auth: Option<AuthConfig>,
    /// Signs every request in the Standard Webhooks scheme (`whsec_…` base64 secret).
    pub signing_secret: Option<Secret>,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Requests in flight to this destination at once, per node.
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// Requests per second, shared by all nodes (each node takes its share).
    pub rate_per_second: Option<f64>,
    /// Requests allowed in a burst above the rate (default: one second's worth).
    pub burst: Option<u32>,
    #[serde(default)]
    pub circuit: CircuitConfig,
    /// After a credential failure (401, 403, certificate) the destination pauses; after this
    /// many seconds one trial delivery tests whether it works again.
    #[serde(default = "default_cooldown")]
    pub credential_cooldown_seconds: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DestinationKind {
    #[default]
    Http,
    Odoo,
    /// Email through an SMTP server: each payload is one message.
    Smtp,
}

impl DestinationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DestinationKind::Http => "http",
            DestinationKind::Odoo => "odoo",
            DestinationKind::Smtp => "smtp",
        }
    }
}

/// `[destinations.smtp]`: how an `smtp` destination sends mail. The server is the
/// destination's `url`, `smtp://host[:port]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    /// The sender of every message: `alerts@example.com` or
    /// `Switchyard <alerts@example.com>`. Required (an empty string is reported by
    /// [`Flows::compile`], with the missing table).
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub tls: SmtpTls,
    /// Login for `AUTH` (PLAIN or LOGIN, whichever the server offers); with `password`.
    pub username: Option<String>,
    pub password: Option<Secret>,
}

/// How an SMTP connection is protected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain connection upgraded with `STARTTLS`, required (a server that does not offer
    /// it is refused). Port 587 by default.
    #[default]
    Starttls,
    /// TLS from the first byte ("implicit TLS", smtps). Port 465 by default.
    Tls,
    /// No encryption at all: local relays and tests. Port 25 by default.
    None,
}

impl SmtpTls {
    pub fn as_str(self) -> &'static str {
        match self {
            SmtpTls::Starttls => "starttls",
            SmtpTls::Tls => "tls",
            SmtpTls::None => "none",
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
            SmtpTls::None => 25,
        }
    }
}

/// The host and port of an `smtp://host[:port]` URL (a trailing `/` is accepted); the
/// port defaults by `tls`. IPv6 hosts are written in brackets, returned without them.
pub fn smtp_server(url: &str, tls: SmtpTls) -> Result<(String, u16), String> {
    let bad = || "must be smtp://host or smtp://host:port".to_string();
    let rest = url.strip_prefix("smtp://").ok_or_else(bad)?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('@') {
        return Err(
            "must not carry credentials: set smtp.username and smtp.password instead".into(),
        );
    }
    if rest.contains(['/', '?', '#']) {
        return Err("must be smtp://host or smtp://host:port, without a path".into());
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(bad)?;
        if host.is_empty() || !host.contains(':') {
            return Err(bad());
        }
        match after {
            "" => (host, None),
            p => (host, Some(p.strip_prefix(':').ok_or_else(bad)?)),
        }
    } else {
        match rest.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b))
    {
        return Err(bad());
    }
    let port = match port {
        None => tls.default_port(),
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => return Err(format!("bad port \"{p}\" (1 to 65535)")),
        },
    };
    Ok((host.to_string(), port))
}

/// Whether `s` is a mail address as SMTP takes it (`local@domain`, the local part a
/// dot-atom, the domain dot-separated labels), optionally with a display name
/// (`Name <local@domain>`; a name with any of `()<>[]:;@\,."` must be in double quotes).
pub fn is_mailbox(s: &str) -> bool {
    fn atext(b: u8) -> bool {
        b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b)
    }
    fn addr(a: &str) -> bool {
        let Some((local, domain)) = a.rsplit_once('@') else {
            return false;
        };
        let dot_atom = |s: &str, ok: fn(u8) -> bool| {
            !s.is_empty() && s.split('.').all(|p| !p.is_empty() && p.bytes().all(ok))
        };
        dot_atom(local, atext)
            && dot_atom(domain, |b| b.is_ascii_alphanumeric() || b == b'-')
            && domain
                .split('.')
                .all(|l| !l.starts_with('-') && !l.ends_with('-'))
    }
    let s = s.trim();
    match s.strip_suffix('>').and_then(|r| r.rsplit_once('<')) {
        None => addr(s),
        Some((name, a)) => {
            let name = name.trim();
            let quoted = name.len() >= 2 && name.starts_with('"') && name.ends_with('"');
            let name_ok = if quoted {
                let inner = &name[1..name.len() - 1];
                !inner.contains(['"', '\\', '\r', '\n'])
            } else {
                !name.contains(|c: char| "()<>[]:;@\\,.\"".contains(c) || c.is_control())
            };
            name_ok && addr(a)
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "lowercase")]
pub enum AuthConfig {
    Bearer { token: Secret },
    Basic { username: String, password: Secret },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitConfig {
    /// Consecutive transient failures that open the circuit.
    #[serde(default = "default_circuit_failures")]
    pub failures: u32,
    /// Seconds the circuit stays open before one probe is let through.
    #[serde(default = "default_circuit_open")]
    pub open_seconds: u64,
}

impl Default for CircuitConfig {
    fn default() -> Self {
        Self {
            failures: default_circuit_failures(),
            open_seconds: default_circuit_open(),
        }
    }
}

fn default_method() -> String {
    "POST".into()
}
fn default_connect_timeout() -> u64 {
    2000
}
fn default_timeout() -> u64 {
    10_000
}
fn default_concurrency() -> u32 {
    16
}
fn default_cooldown() -> u64 {
    300
}
fn default_circuit_failures() -> u32 {
    5
}
fn default_circuit_open() -> u64 {
    30
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowConfig {
    pub name: String,
    /// The contract version of what this flow sends; recorded on every delivery.
    #[serde(default = "default_version")]
    pub version: String,
    #[serde(rename = "match")]
    pub matches: MatchConfig,
    /// jq program from the event (CloudEvents JSON form) to the payload sent. Default:
    /// `.data`.
    pub map: Option<String>,
    /// JSON Schema the mapped payload must satisfy: a file path (relative to the
    /// configuration file)...
    pub schema_file: Option<String>,
    /// ...or the schema written inline.
    pub schema: Option<toml::Value>,
    pub destination: String,
    #[serde(default)]
    pub priority: Lane,
    pub ordering: Option<OrderingConfig>,
    #[serde(default)]
    pub retry: RetryPolicy,
    /// What the flow does in Odoo, for a destination of type `odoo`.
    pub odoo: Option<crate::odoo_ops::OdooOperationConfig>,
}

fn default_version() -> String {
    "1".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// CloudEvents `source`, exactly or as a glob (`shop*`); default every source.
    pub source: Option<String>,
    /// CloudEvents `type` globs (`com.shop.order.*`); at least one.
    #[serde(rename = "type")]
    pub types: Vec<String>,
    /// Optional jq condition: the event is delivered only when it yields `true`.
    pub filter: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderingConfig {
    /// jq program giving the ordering key: deliveries sharing it go out in ingest order.
    pub key: String,
    /// When the head of a key is dead-lettered: `hold` the key until it is replayed or
    /// discarded, or `dead-letter` it and continue with the next.
    #[serde(default)]
    pub on_failure: OnFailure,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnFailure {
    #[default]
    Hold,
    DeadLetter,
}

/// A compiled destination.
#[derive(Debug, Clone)]
pub struct Destination {
    pub config: DestinationConfig,
    /// The connection of an `odoo` destination.
    pub odoo: Option<crate::odoo::OdooConnectionConfig>,
}

impl Destination {
    pub fn name(&self) -> &str {
        &self.config.name
    }
}

/// A compiled flow.
#[derive(Clone)]
pub struct Flow {
    pub name: String,
    pub version: String,
    pub destination: String,
    pub lane: Lane,
    pub retry: RetryPolicy,
    source: Option<globset::GlobMatcher>,
    types: globset::GlobSet,
    filter: Option<Jq>,
    map: Jq,
    schema: Option<Arc<jsonschema::Validator>>,
    pub ordering: Option<(Jq, OnFailure)>,
    /// What the flow does in Odoo (flows to an `odoo` destination).
    pub odoo: Option<Arc<crate::odoo_ops::OdooOperation>>,
    /// The configuration as written (for `GET /v1/flows`).
    pub config: FlowConfig,
}

impl std::fmt::Debug for Flow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flow")
            .field("name", &self.name)
            .field("destination", &self.destination)
            .finish_non_exhaustive()
    }
}

/// One violation of a flow's schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaError {
    /// JSON pointer into the mapped payload.
    pub pointer: String,
    pub message: String,
}

/// What a flow makes of one event.
#[derive(Debug, Clone, PartialEq)]
pub enum Routed {
    /// The flow's jq filter said no.
    Filtered,
    /// Mapped and valid: ready to deliver.
    Ready {
        payload: Value,
        ordering_key: Option<String>,
    },
    /// The filter, the mapping or the ordering key failed; the jq error.
    MappingFailed { error: String },
    /// The mapped payload broke the schema.
    Invalid {
        payload: Value,
        ordering_key: Option<String>,
        errors: Vec<SchemaError>,
    },
}

impl Routed {
    pub fn class(&self) -> Option<ErrorClass> {
        match self {
            Routed::MappingFailed { .. } => Some(ErrorClass::Mapping),
            Routed::Invalid { .. } => Some(ErrorClass::Invalid),
            _ => None,
        }
    }
}

impl Flow {
    /// Whether the event's source and type select this flow (the jq filter comes later, in
    /// [`Flow::route`], and its "no" is a recorded outcome).
    pub fn selects(&self, event: &CloudEvent) -> bool {
        self.source
            .as_ref()
            .is_none_or(|g| g.is_match(&event.source))
            && self.types.is_match(&event.ty)
    }

    /// Filters, maps, computes the ordering key and validates.
    pub fn route(&self, input: &Prepared) -> Routed {
        if let Some(filter) = &self.filter {
            match filter.run_prepared(input, &[]) {
                Ok(out) => {
                    if !matches!(out.first(), Some(Value::Bool(true))) {
                        return Routed::Filtered;
                    }
                }
                Err(e) => {
                    return Routed::MappingFailed {
                        error: format!("filter: {e}"),
                    };
                }
            }
        }
        let payload = match self.map.run_prepared(input, &[]) {
            Ok(mut out) if out.len() == 1 => out.remove(0),
            Ok(out) => {
                return Routed::MappingFailed {
                    error: format!(
                        "map: `{}` produced {} values; a mapping must produce exactly one",
                        self.map.code(),
                        out.len()
                    ),
                };
            }
            Err(e) => {
                return Routed::MappingFailed {
                    error: format!("map: {e}"),
                };
            }
        };
        let ordering_key = match &self.ordering {
            None => None,
            Some((jq, _)) => match jq.run_prepared(input, &[]) {
                Ok(out) => match out.iter().find(|v| !v.is_null()).map(as_text) {
                    Some(Some(k)) => Some(k),
                    Some(None) => {
                        return Routed::MappingFailed {
                            error: format!(
                                "ordering key: `{}` is not a string, number or boolean",
                                jq.code()
                            ),
                        };
                    }
                    None => None,
                },
                Err(e) => {
                    return Routed::MappingFailed {
                        error: format!("ordering key: {e}"),
                    };
                }
            },
        };
        match self.validate(&payload) {
            Ok(()) => Routed::Ready {
                payload,
                ordering_key,
            },
            Err(errors) => Routed::Invalid {
                payload,
                ordering_key,
                errors,
            },
        }
    }

    /// Routes an event (convenience over [`Flow::route`]).
    pub fn route_event(&self, event: &CloudEvent) -> Routed {
        match Prepared::new(&event.to_json()) {
            Ok(input) => self.route(&input),
            Err(e) => Routed::MappingFailed { error: e },
        }
    }

    /// Checks a payload against the flow's schema (an edited payload before replay, too).
    pub fn validate(&self, payload: &Value) -> Result<(), Vec<SchemaError>> {
        let Some(schema) = &self.schema else {
            return Ok(());
        };
        if schema.is_valid(payload) {
            return Ok(());
        }
        let errors: Vec<SchemaError> = schema
            .iter_errors(payload)
            .take(50)
            .map(|e| SchemaError {
                pointer: e.instance_path().to_string(),
                message: e.to_string(),
            })
            .collect();
        Err(errors)
    }

    pub fn hold_on_dead(&self) -> bool {
        matches!(self.ordering, Some((_, OnFailure::Hold)))
    }
}

/// Every flow and destination, compiled.
#[derive(Debug, Clone, Default)]
pub struct Flows {
    flows: Vec<Flow>,
    destinations: Vec<Destination>,
    by_name: HashMap<String, usize>,
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn glob(pattern: &str) -> Result<globset::Glob, String> {
    globset::GlobBuilder::new(pattern)
        .literal_separator(false)
        .build()
        .map_err(|e| format!("bad glob \"{pattern}\": {e}"))
}

impl Flows {
    /// Compiles `[[destinations]]` and `[[flows]]`; every problem as (`flows[i].key`,
    /// message). Relative schema files are read from `base_dir`.
    pub fn compile(config: &Config) -> Result<Flows, Vec<(String, String)>> {
        let mut problems = Vec::new();
        let mut destinations = Vec::new();
        let mut dest_names = HashSet::new();
        for (i, d) in config.destinations.iter().enumerate() {
            let at = |k: &str| format!("destinations[{i}].{k}");
            if !is_name(&d.name) {
                problems.push((
                    at("name"),
                    "must be 1 to 64 of a-z, 0-9, '-' and '_'".into(),
                ));
            } else if !dest_names.insert(d.name.clone()) {
                problems.push((at("name"), format!("\"{}\" is declared twice", d.name)));
            }
            let mut odoo = None;
            match d.kind {
                DestinationKind::Http => {
                    if !(d.url.starts_with("http://") || d.url.starts_with("https://"))
                        || d.url.len() < 10
                    {
                        problems.push((at("url"), "must be an http:// or https:// URL".into()));
                    }
                    if d.odoo.is_some() {
                        problems.push((
                            at("odoo"),
                            "only for type = \"odoo\" (this destination is http)".into(),
                        ));
                    }
                }
                DestinationKind::Smtp => {
                    let smtp = d.smtp.as_ref();
                    let tls = smtp.map(|m| m.tls).unwrap_or_default();
                    if let Err(e) = smtp_server(&d.url, tls) {
                        problems.push((at("url"), e));
                    }
                    match smtp.map(|m| m.from.trim()) {
                        None | Some("") => problems.push((
                            at("smtp.from"),
                            "an smtp destination needs a sender: [destinations.smtp] from = \"alerts@example.com\"".into(),
                        )),
                        Some(from) if !is_mailbox(from) => problems.push((
                            at("smtp.from"),
                            "not a mail address (\"alerts@example.com\" or \"Switchyard <alerts@example.com>\")".into(),
                        )),
                        Some(_) => {}
                    }
                    if let Some(m) = smtp {
                        match (&m.username, &m.password) {
                            (Some(u), _) if u.is_empty() => {
                                problems.push((at("smtp.username"), "must not be empty".into()))
                            }
                            (Some(_), None) => problems.push((
                                at("smtp.username"),
                                "needs smtp.password (a secret reference)".into(),
                            )),
                            (None, Some(_)) => {
                                problems.push((at("smtp.password"), "needs smtp.username".into()))
                            }
                            _ => {}
                        }
                        if let Some(Err(e)) = m.password.as_ref().map(Secret::expose) {
                            problems.push((at("smtp.password"), e.to_string()));
                        }
                    }
                    for (key, set) in [
                        ("odoo", d.odoo.is_some()),
                        ("headers", !d.headers.is_empty()),
                        ("auth", d.auth.is_some()),
                        ("signing_secret", d.signing_secret.is_some()),
                    ] {
                        if set {
                            problems.push((
                                at(key),
                                "not used by an smtp destination (the sender and credentials are in [destinations.smtp])".into(),
                            ));
                        }
                    }
                }
                DestinationKind::Odoo => {
                    match &d.odoo {
                        None => problems.push((
                            at("odoo"),
                            "an odoo destination names its [[odoo]] connection".into(),
                        )),
                        Some(name) => match config.odoo.iter().find(|o| &o.name == name) {
                            Some(o) => odoo = Some(o.clone()),
                            None => {
                                let known: Vec<&str> =
                                    config.odoo.iter().map(|o| o.name.as_str()).collect();
                                problems.push((
                                    at("odoo"),
                                    format!(
                                        "no [[odoo]] connection named \"{name}\" (declared: {})",
                                        if known.is_empty() {
                                            "none".to_string()
                                        } else {
                                            known.join(", ")
                                        }
                                    ),
                                ));
                            }
                        },
                    }
                    for (key, set) in [
                        ("url", !d.url.is_empty()),
                        ("headers", !d.headers.is_empty()),
                        ("auth", d.auth.is_some()),
                        ("signing_secret", d.signing_secret.is_some()),
                    ] {
                        if set {
                            problems.push((
                                at(key),
                                "not used by an odoo destination (the [[odoo]] connection has the URL and credentials)".into(),
                            ));
                        }
                    }
                }
            }
            if d.smtp.is_some() && d.kind != DestinationKind::Smtp {
                problems.push((
                    at("smtp"),
                    format!(
                        "only for type = \"smtp\" (this destination is {})",
                        d.kind.as_str()
                    ),
                ));
            }
            if d.kind == DestinationKind::Http
                && !["POST", "PUT", "PATCH"].contains(&d.method.as_str())
            {
                problems.push((at("method"), "must be POST, PUT or PATCH".into()));
            }
            for name in d.headers.keys() {
                let lower = name.to_ascii_lowercase();
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                {
                    problems.push((at(&format!("headers.{name}")), "not a header name".into()));
                } else if [
                    "content-type",
                    "content-length",
                    "idempotency-key",
                    "traceparent",
                    "authorization",
                    "webhook-id",
                    "webhook-timestamp",
                    "webhook-signature",
                    "host",
                ]
                .contains(&lower.as_str())
                    || lower.starts_with("x-switchyard-")
                {
                    problems.push((
                        at(&format!("headers.{name}")),
                        "set by Switchyard itself (use auth / signing_secret)".into(),
                    ));
                }
            }
            if let Some(auth) = &d.auth {
                let secret = match auth {
                    AuthConfig::Bearer { token } => token,
                    AuthConfig::Basic { password, .. } => password,
                };
                if let Err(e) = secret.expose() {
                    problems.push((at("auth"), e.to_string()));
                }
            }
            if let Some(s) = &d.signing_secret {
                match s.expose() {
                    Ok(v) if crate::sources::standard_webhooks_key(&v).is_none() => {
                        problems.push((
                            at("signing_secret"),
                            "must be a whsec_… base64 secret".into(),
                        ))
                    }
                    Ok(_) => {}
                    Err(e) => problems.push((at("signing_secret"), e.to_string())),
                }
            }
            if d.connect_timeout_ms == 0 || d.timeout_ms == 0 {
                problems.push((at("timeout_ms"), "timeouts must be at least 1 ms".into()));
            }
            if d.concurrency == 0 {
                problems.push((at("concurrency"), "must be at least 1".into()));
            }
            if let Some(r) = d.rate_per_second
                && !(r.is_finite() && r > 0.0)
            {
                problems.push((at("rate_per_second"), "must be a positive number".into()));
            }
            if d.burst == Some(0) {
                problems.push((at("burst"), "must be at least 1".into()));
            }
            if d.burst.is_some() && d.rate_per_second.is_none() {
                problems.push((at("burst"), "needs rate_per_second".into()));
            }
            if d.circuit.failures == 0 || d.circuit.open_seconds == 0 {
                problems.push((
                    at("circuit"),
                    "failures and open_seconds must be at least 1".into(),
                ));
            }
            destinations.push(Destination {
                config: d.clone(),
                odoo,
            });
        }

        let mut flows = Vec::new();
        let mut by_name = HashMap::new();
        // The receivers' notifiers are flows too (`notify.<receiver>.<n>`), compiled here
        // like the others; `Alerting::compile` reports their problems at the receiver.
        let generated = crate::alerts::notifier_flows(config);
        let declared = config.flows.len();
        let mut before_generated = None;
        for (i, f) in config.flows.iter().chain(generated.iter()).enumerate() {
            if i == declared {
                before_generated = Some(problems.len());
            }
            let at = |k: &str| format!("flows[{i}].{k}");
            if i >= declared {
                // Names with dots cannot clash with declared flows' names.
            } else if !is_name(&f.name) {
                problems.push((
                    at("name"),
                    "must be 1 to 64 of a-z, 0-9, '-' and '_'".into(),
                ));
            } else if by_name.contains_key(&f.name) {
                problems.push((at("name"), format!("\"{}\" is declared twice", f.name)));
            }
            if f.version.is_empty() || f.version.len() > 32 {
                problems.push((at("version"), "must be 1 to 32 characters".into()));
            }
            if !dest_names.contains(&f.destination)
                && !config.destinations.iter().any(|d| d.name == f.destination)
            {
                let known: Vec<&str> = config
                    .destinations
                    .iter()
                    .map(|d| d.name.as_str())
                    .collect();
                problems.push((
                    at("destination"),
                    format!(
                        "no destination named \"{}\" (declared: {})",
                        f.destination,
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                ));
            }
            let source = match f.matches.source.as_deref().map(glob) {
                None => None,
                Some(Ok(g)) => Some(g.compile_matcher()),
                Some(Err(e)) => {
                    problems.push((at("match.source"), e));
                    None
                }
            };
            let mut types = globset::GlobSetBuilder::new();
            if f.matches.types.is_empty() {
                problems.push((
                    at("match.type"),
                    "name at least one event type (globs allowed)".into(),
                ));
            }
            for t in &f.matches.types {
                match glob(t) {
                    Ok(g) => {
                        types.add(g);
                    }
                    Err(e) => problems.push((at("match.type"), e)),
                }
            }
            let types = types.build().unwrap_or_else(|_| globset::GlobSet::empty());
            let filter = match f.matches.filter.as_deref().map(|c| Jq::compile(c, &[])) {
                None => None,
                Some(Ok(j)) => Some(j),
                Some(Err(e)) => {
                    problems.push((at("match.filter"), e));
                    None
                }
            };
            let map = match Jq::compile(f.map.as_deref().unwrap_or(".data"), &[]) {
                Ok(j) => Some(j),
                Err(e) => {
                    problems.push((at("map"), e));
                    None
                }
            };
            let schema_value = match (&f.schema_file, &f.schema) {
                (Some(_), Some(_)) => {
                    problems.push((at("schema"), "set schema or schema_file, not both".into()));
                    None
                }
                (Some(file), None) => {
                    let path = match &config.base_dir {
                        Some(dir) if Path::new(file).is_relative() => dir.join(file),
                        _ => Path::new(file).to_path_buf(),
                    };
                    match std::fs::read_to_string(&path) {
                        Err(e) => {
                            problems.push((
                                at("schema_file"),
                                format!("cannot read {}: {e}", path.display()),
                            ));
                            None
                        }
                        Ok(text) => match serde_json::from_str::<Value>(&text) {
                            Ok(v) => Some(("schema_file", v)),
                            Err(e) => {
                                problems.push((
                                    at("schema_file"),
                                    format!("{} is not JSON: {e}", path.display()),
                                ));
                                None
                            }
                        },
                    }
                }
                (None, Some(inline)) => match serde_json::to_value(inline) {
                    Ok(v) => Some(("schema", v)),
                    Err(e) => {
                        problems.push((at("schema"), e.to_string()));
                        None
                    }
                },
                (None, None) => None,
            };
            let schema = match schema_value {
                None => None,
                Some((key, v)) => match jsonschema::validator_for(&v) {
                    Ok(s) => Some(Arc::new(s)),
                    Err(e) => {
                        problems.push((
                            at(key),
                            format!("not a valid JSON Schema: {e} (at {})", e.schema_path()),
                        ));
                        None
                    }
                },
            };
            let ordering = match &f.ordering {
                None => None,
                Some(o) => match Jq::compile(&o.key, &[]) {
                    Ok(j) => Some((j, o.on_failure)),
                    Err(e) => {
                        problems.push((at("ordering.key"), e));
                        None
                    }
                },
            };
            if let Some(o) = &f.ordering
                && f.priority == Lane::Bulk
                && o.on_failure == OnFailure::Hold
                && f.retry.max_age_seconds > 7 * 24 * 3600
            {
                problems.push((
                    at("ordering.on_failure"),
                    "hold on a bulk flow with retry.max_age_seconds above 7 days can block a key for a week; lower max_age_seconds or use on_failure = \"dead-letter\"".into(),
                ));
            }
            let kind = config
                .destinations
                .iter()
                .find(|d| d.name == f.destination)
                .map(|d| d.kind);
            let odoo = match (&f.odoo, kind) {
                (Some(op), Some(DestinationKind::Odoo) | None) => {
                    match crate::odoo_ops::compile(op) {
                        Ok(op) => Some(Arc::new(op)),
                        Err(list) => {
                            for (k, m) in list {
                                problems.push((at(&format!("odoo.{k}")), m));
                            }
                            None
                        }
                    }
                }
                (Some(_), Some(_)) => {
                    problems.push((
                        at("odoo"),
                        format!("destination \"{}\" is not of type \"odoo\"", f.destination),
                    ));
                    None
                }
                (None, Some(DestinationKind::Odoo)) => {
                    problems.push((
                        at("odoo"),
                        format!(
                            "destination \"{}\" is an Odoo: say what this flow does there ([flows.odoo] with model and operation)",
                            f.destination
                        ),
                    ));
                    None
                }
                (None, _) => None,
            };
            if f.retry.max_attempts == 0 {
                problems.push((at("retry.max_attempts"), "must be at least 1".into()));
            }
            if f.retry.initial_ms == 0
                || f.retry.max_backoff_seconds == 0
                || f.retry.max_age_seconds == 0
            {
                problems.push((
                    at("retry"),
                    "initial_ms, max_backoff_seconds and max_age_seconds must be at least 1".into(),
                ));
            }
            if let Some(map) = map {
                by_name.entry(f.name.clone()).or_insert(flows.len());
                flows.push(Flow {
                    name: f.name.clone(),
                    version: f.version.clone(),
                    destination: f.destination.clone(),
                    lane: f.priority,
                    retry: f.retry,
                    source,
                    types,
                    filter,
                    map,
                    schema,
                    ordering,
                    odoo,
                    config: f.clone(),
                });
            }
        }
        if let Some(n) = before_generated {
            problems.truncate(n);
        }
        // Two flows sharing an ordering key space must agree on what a failed head does,
        // or one would hold a key the other skips.
        let mut seen: HashMap<(&str, &str), (usize, OnFailure)> = HashMap::new();
        for (i, f) in config.flows.iter().enumerate() {
            if let Some(o) = &f.ordering {
                match seen.get(&(f.destination.as_str(), o.key.as_str())) {
                    Some((j, other)) if *other != o.on_failure => problems.push((
                        format!("flows[{i}].ordering.on_failure"),
                        format!(
                            "conflicts with flows[{j}] (same destination and ordering key, on_failure differs)"
                        ),
                    )),
                    _ => {
                        seen.insert((f.destination.as_str(), o.key.as_str()), (i, o.on_failure));
                    }
                }
            }
        }
        if problems.is_empty() {
            Ok(Flows {
                flows,
                destinations,
                by_name,
            })
        } else {
            Err(problems)
        }
    }

    pub fn flows(&self) -> &[Flow] {
        &self.flows
    }

    pub fn flow(&self, name: &str) -> Option<&Flow> {
        self.by_name.get(name).map(|&i| &self.flows[i])
    }

    pub fn destinations(&self) -> &[Destination] {
        &self.destinations
    }

    pub fn destination(&self, name: &str) -> Option<&Destination> {
        self.destinations.iter().find(|d| d.name() == name)
    }

    /// The flows whose source and type select `event`.
    pub fn selecting<'a>(&'a self, event: &'a CloudEvent) -> impl Iterator<Item = &'a Flow> + 'a {
        self.flows.iter().filter(move |f| f.selects(event))
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn compile(toml: &str) -> Result<Flows, Vec<(String, String)>> {
        let config = Config::parse(toml, "test.toml", Vec::new()).map_err(|e| {
            e.0.into_iter()
                .map(|e| (e.key, e.message))
                .collect::<Vec<_>>()
        })?;
        Flows::compile(&config)
    }

    const BASE: &str = r#"
[[destinations]]
name = "wms"
url = "http://127.0.0.1:9/orders"

[[flows]]
name = "orders"
version = "3"
destination = "wms"
priority = "critical"
match = { source = "shop*", type = ["com.shop.order.*"], filter = "(.data.total - 0) > 0" }
map = "{order: .data.id, total: .data.total}"
schema = { type = "object", required = ["order"], properties = { order = { type = "string" } } }
ordering = { key = ".data.id" }
"#;

    fn ev(source: &str, ty: &str, data: Value) -> CloudEvent {
        let raw =
            json!({"specversion": "1.0", "id": "1", "source": source, "type": ty, "data": data});
        CloudEvent::from_json(raw).unwrap().event
    }

    #[test]
    fn routes_filters_maps_and_validates() {
        let flows = compile(BASE).unwrap();
        let f = flows.flow("orders").unwrap();
        assert_eq!(f.lane, Lane::Critical);
        assert!(f.selects(&ev("shop-eu", "com.shop.order.created", json!({}))));
        assert!(!f.selects(&ev("wms", "com.shop.order.created", json!({}))));
        assert!(!f.selects(&ev("shop", "com.shop.refund", json!({}))));
        let e = ev(
            "shop",
            "com.shop.order.created",
            json!({"id": "S1", "total": 3}),
        );
        assert_eq!(
            f.route_event(&e),
            Routed::Ready {
                payload: json!({"order": "S1", "total": 3}),
                ordering_key: Some("S1".into())
            }
        );
        let e = ev(
            "shop",
            "com.shop.order.created",
            json!({"id": "S1", "total": 0}),
        );
        assert_eq!(f.route_event(&e), Routed::Filtered);
        let e = ev(
            "shop",
            "com.shop.order.created",
            json!({"id": 7, "total": 1}),
        );
        match f.route_event(&e) {
            Routed::Invalid { errors, .. } => {
                assert_eq!(errors[0].pointer, "/order");
                assert!(errors[0].message.contains("string"), "{errors:?}");
            }
            other => panic!("{other:?}"),
        }
        let e = ev(
            "shop",
            "com.shop.order.created",
            json!({"id": "S1", "total": "x"}),
        );
        assert!(
            matches!(f.route_event(&e), Routed::MappingFailed { error } if error.starts_with("filter"))
        );
    }

    #[test]
    fn bad_programs_schemas_and_references_are_reported_with_their_key() {
        let text = r#"
[[destinations]]
name = "wms"
url = "ftp://x"

[[flows]]
name = "a"
destination = "nowhere"
match = { type = ["x"], filter = ".data.[" }
map = "{"
schema = { type = 12 }
ordering = { key = "..[", on_failure = "hold" }
"#;
        let problems = compile(text).unwrap_err();
        let keys: Vec<&str> = problems.iter().map(|(k, _)| k.as_str()).collect();
        for k in [
            "destinations[0].url",
            "flows[0].destination",
            "flows[0].match.filter",
            "flows[0].map",
            "flows[0].schema",
            "flows[0].ordering.key",
        ] {
            assert!(keys.contains(&k), "{k} missing from {problems:?}");
        }
    }

    #[test]
    fn smtp_urls_give_host_and_port() {
        use SmtpTls::*;
        let ok = |url: &str, tls| smtp_server(url, tls).unwrap();
        assert_eq!(
            ok("smtp://mail.example.com", Starttls),
            ("mail.example.com".into(), 587)
        );
        assert_eq!(
            ok("smtp://mail.example.com", Tls),
            ("mail.example.com".into(), 465)
        );
        assert_eq!(
            ok("smtp://mail.example.com/", None),
            ("mail.example.com".into(), 25)
        );
        assert_eq!(
            ok("smtp://127.0.0.1:2525", None),
            ("127.0.0.1".into(), 2525)
        );
        assert_eq!(ok("smtp://[::1]:2525", None), ("::1".into(), 2525));
        assert_eq!(ok("smtp://[::1]", Tls), ("::1".into(), 465));
        for bad in [
            "",
            "mail.example.com",
            "smtps://mail.example.com",
            "http://mail.example.com",
            "smtp://",
            "smtp://:25",
            "smtp://host:0",
            "smtp://host:99999",
            "smtp://host:x",
            "smtp://host/path",
            "smtp://user:pw@host",
            "smtp://[::1",
            "smtp://[::1]x",
            "smtp://ho st",
        ] {
            assert!(smtp_server(bad, Starttls).is_err(), "{bad}");
        }
        assert!(
            smtp_server("smtp://u:p@host", Starttls)
                .unwrap_err()
                .contains("smtp.username")
        );
    }

    #[test]
    fn mailboxes() {
        for good in [
            "alerts@example.com",
            "first.last+tag@mail.example.com",
            "root@localhost",
            "Switchyard <alerts@example.com>",
            "\"Ops, Plant 1\" <ops@example.com>",
            "Équipe <ops@example.com>",
            "<alerts@example.com>",
        ] {
            assert!(is_mailbox(good), "{good}");
        }
        for bad in [
            "",
            "alerts",
            "@example.com",
            "alerts@",
            "a@b@c",
            "a..b@example.com",
            ".a@example.com",
            "a@-example.com",
            "a@example..com",
            "a b@example.com",
            "Ops, Plant 1 <ops@example.com>",
            "Ops <ops@example.com",
            "Ops <>",
        ] {
            assert!(!is_mailbox(bad), "{bad}");
        }
    }

    #[test]
    fn smtp_destinations_are_checked() {
        let text = r#"
[[destinations]]
name = "mail"
type = "smtp"
url = "smtp://127.0.0.1:2525"
smtp = { from = "Switchyard <alerts@example.com>", tls = "none" }

[[destinations]]
name = "bare"
type = "smtp"
url = "https://mail.example.com"
auth = { type = "bearer", token = "env:HOME" }

[[destinations]]
name = "half"
type = "smtp"
url = "smtp://mail.example.com"
smtp = { from = "alerts", username = "me" }

[[destinations]]
name = "web"
url = "http://127.0.0.1:9/x"
smtp = { from = "alerts@example.com" }

[[flows]]
name = "a"
destination = "mail"
match = { type = ["x"] }
"#;
        let problems = compile(text).unwrap_err();
        let keys: Vec<&str> = problems.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "destinations[1].smtp.from",
                "destinations[1].url",
                "destinations[1].auth",
                "destinations[2].smtp.from",
                "destinations[2].smtp.username",
                "destinations[3].smtp",
            ],
            "{problems:?}"
        );
        // The first destination alone is fine.
        let first = &text[..text.find("\n[[destinations]]\nname = \"bare\"").unwrap()];
        let flow =
            "\n[[flows]]\nname = \"a\"\ndestination = \"mail\"\nmatch = { type = [\"x\"] }\n";
        let ok = compile(&format!("{first}{flow}")).unwrap();
        let d = ok.destination("mail").unwrap();
        assert_eq!(d.config.kind, DestinationKind::Smtp);
        let smtp = d.config.smtp.as_ref().unwrap();
        assert_eq!(smtp.tls, SmtpTls::None);
        assert_eq!(
            smtp_server(&d.config.url, smtp.tls).unwrap(),
            ("127.0.0.1".into(), 2525)
        );
    }

    #[test]
    fn conflicting_ordering_settings_are_refused() {
        let text = r#"
[[destinations]]
name = "wms"
url = "http://127.0.0.1:9/x"

[[flows]]
name = "a"
destination = "wms"
match = { type = ["x"] }
ordering = { key = ".subject", on_failure = "hold" }

[[flows]]
name = "b"
destination = "wms"
match = { type = ["y"] }
ordering = { key = ".subject", on_failure = "dead-letter" }
"#;
        let problems = compile(text).unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].0, "flows[1].ordering.on_failure");
    }
}
