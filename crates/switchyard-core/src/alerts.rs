//! Alerting as data: rules, causes, severities, the route tree, receivers and their
//! notifiers, inhibition rules, silences' matchers and maintenance windows.
//!
//! Everything here is pure and compiled once from the configuration (`[alerting]`,
//! `[[alert_rules]]`, `[route]`, `[[receivers]]`, `[[inhibit_rules]]`,
//! `[[maintenance_windows]]`), so `switchyard check` reports a broken matcher, route,
//! template or receiver with its position. Matchers and routes follow Prometheus
//! Alertmanager's semantics (`name="v"`, `!=`, `=~`, `!~`, regexes anchored at both ends;
//! a route tree searched depth first, `continue` to keep looking after a match), so people
//! who know Alertmanager read them without a manual.

use crate::config::Config;
use crate::flows::MatchConfig;
use crate::jq::Jq;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// Labels of an alert: sorted, so a label set has one fingerprint.
pub type Labels = BTreeMap<String, String>;

/// The CloudEvents `source` of the events the alerting service writes (notifications and
/// Alertmanager pushes); the notifiers' flows match it.
pub const ALERT_SOURCE: &str = "switchyard:alerts";
/// The type of a group notification event (`data` is a [`Notification`] as JSON).
pub const NOTIFICATION_TYPE: &str = "switchyard.alert.notification";
/// The type of an Alertmanager push event (`data.alerts` holds every active alert).
pub const PUSH_TYPE: &str = "switchyard.alert.push";

// ---- severities and causes ------------------------------------------------------------

/// How bad an alert is; routes can match on it (`severity="critical"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    High,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 4] = [
        Severity::Info,
        Severity::Warning,
        Severity::High,
        Severity::Critical,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Severity> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// Why something is wrong, from what Switchyard knows; routing by cause sends each alert to
/// the team that can fix it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// 429s / rate limits from a partner (a carrier, a shop).
    PartnerThrottling,
    /// A partner is unreachable or failing (connection errors, 5xx, circuit open).
    PartnerDown,
    /// Odoo refused the data (permanent Odoo errors: validation, access, missing record).
    OdooValidation,
    /// Odoo cannot be reached or fails transiently.
    OdooUnavailable,
    /// A credential was refused or expires (401/403, API key expiry).
    CredentialExpiry,
    /// A mapping or schema no longer fits what a partner sends.
    MappingDrift,
    /// Events stopped arriving or pile up upstream (a WMS backlog).
    UpstreamBacklog,
    /// A batch job missed, ran late, failed or processed the wrong amount.
    BatchFailure,
    /// The business process went wrong with no technical cause: an SLA breach, a step out of
    /// sequence, twice or missing.
    BusinessProcess,
    /// Two systems disagree (a reconciliation).
    DataMismatch,
}

impl Cause {
    pub const ALL: [Cause; 10] = [
        Cause::PartnerThrottling,
        Cause::PartnerDown,
        Cause::OdooValidation,
        Cause::OdooUnavailable,
        Cause::CredentialExpiry,
        Cause::MappingDrift,
        Cause::UpstreamBacklog,
        Cause::BatchFailure,
        Cause::BusinessProcess,
        Cause::DataMismatch,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Cause::PartnerThrottling => "partner_throttling",
            Cause::PartnerDown => "partner_down",
            Cause::OdooValidation => "odoo_validation",
            Cause::OdooUnavailable => "odoo_unavailable",
            Cause::CredentialExpiry => "credential_expiry",
            Cause::MappingDrift => "mapping_drift",
            Cause::UpstreamBacklog => "upstream_backlog",
            Cause::BatchFailure => "batch_failure",
            Cause::BusinessProcess => "business_process",
            Cause::DataMismatch => "data_mismatch",
        }
    }

    pub fn parse(s: &str) -> Option<Cause> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// In words, for summaries.
    pub fn describe(self) -> &'static str {
        match self {
            Cause::PartnerThrottling => "partner throttling",
            Cause::PartnerDown => "partner down",
            Cause::OdooValidation => "Odoo validation or data error",
            Cause::OdooUnavailable => "Odoo unavailable",
            Cause::CredentialExpiry => "credential expiry",
            Cause::MappingDrift => "mapping/contract drift",
            Cause::UpstreamBacklog => "upstream backlog",
            Cause::BatchFailure => "batch failure",
            Cause::BusinessProcess => "business-process exception",
            Cause::DataMismatch => "data mismatch",
        }
    }
}

/// What a failed delivery tells about its cause: the error class the engine gave it, the
/// HTTP status if any, and whether the destination is Odoo.
pub fn delivery_cause(class: Option<&str>, status: Option<u16>, odoo: bool) -> Cause {
    match (class, status) {
        (_, Some(429)) => Cause::PartnerThrottling,
        (Some("credential"), _) | (_, Some(401 | 403)) => Cause::CredentialExpiry,
        (Some("mapping"), _) | (Some("invalid"), _) => Cause::MappingDrift,
        (Some("permanent"), _) if odoo => Cause::OdooValidation,
        (Some("permanent"), _) => Cause::MappingDrift,
        _ if odoo => Cause::OdooUnavailable,
        _ => Cause::PartnerDown,
    }
}

// ---- matchers ------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum MatchOp {
    #[serde(rename = "=")]
    Eq,
    #[serde(rename = "!=")]
    Ne,
    #[serde(rename = "=~")]
    Re,
    #[serde(rename = "!~")]
    NotRe,
}

/// One label matcher in Alertmanager's syntax: `name="value"`, `name!="value"`,
/// `name=~"regex"`, `name!~"regex"` (quotes optional; regexes are anchored). A missing
/// label is the empty string, as in Alertmanager.
#[derive(Debug, Clone)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
    re: Option<regex::Regex>,
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.op == other.op && self.value == other.value
    }
}

impl Serialize for Matcher {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Matcher {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Matcher::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl std::fmt::Display for Matcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let op = match self.op {
            MatchOp::Eq => "=",
            MatchOp::Ne => "!=",
            MatchOp::Re => "=~",
            MatchOp::NotRe => "!~",
        };
        write!(f, "{}{op}{:?}", self.name, self.value)
    }
}

impl Matcher {
    pub fn parse(s: &str) -> Result<Matcher, String> {
        let s = s.trim();
        let at = s
            .find(['=', '!'])
            .ok_or_else(|| format!("matcher {s:?}: expected name=\"value\", !=, =~ or !~"))?;
        let name = s[..at].trim();
        let rest = &s[at..];
        let (op, value) = if let Some(v) = rest.strip_prefix("=~") {
            (MatchOp::Re, v)
        } else if let Some(v) = rest.strip_prefix("!~") {
            (MatchOp::NotRe, v)
        } else if let Some(v) = rest.strip_prefix("!=") {
            (MatchOp::Ne, v)
        } else if let Some(v) = rest.strip_prefix('=') {
            (MatchOp::Eq, v)
        } else {
            return Err(format!(
                "matcher {s:?}: expected name=\"value\", !=, =~ or !~"
            ));
        };
        if name.is_empty()
            || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            || name.as_bytes()[0].is_ascii_digit()
        {
            return Err(format!(
                "matcher {s:?}: the label name must be letters, digits and _, not starting with a digit"
            ));
        }
        let value = value.trim();
        let value = if value.len() >= 2 && value.starts_with('"') && value.ends_with('"') {
            serde_json::from_str::<String>(value)
                .map_err(|e| format!("matcher {s:?}: the quoted value is not valid: {e}"))?
        } else if value.contains('"') {
            return Err(format!("matcher {s:?}: unbalanced quotes in the value"));
        } else {
            value.to_string()
        };
        let re = match op {
            MatchOp::Re | MatchOp::NotRe => Some(
                regex::Regex::new(&format!("^(?:{value})$"))
                    .map_err(|e| format!("matcher {s:?}: invalid regex: {e}"))?,
            ),
            _ => None,
        };
        Ok(Matcher {
            name: name.to_string(),
            op,
            value,
            re,
        })
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        let v = labels.get(&self.name).map(String::as_str).unwrap_or("");
        match self.op {
            MatchOp::Eq => v == self.value,
            MatchOp::Ne => v != self.value,
            MatchOp::Re => self.re.as_ref().is_some_and(|r| r.is_match(v)),
            MatchOp::NotRe => !self.re.as_ref().is_some_and(|r| r.is_match(v)),
        }
    }
}

/// True when every matcher matches (an empty list matches everything).
pub fn all_match(matchers: &[Matcher], labels: &Labels) -> bool {
    matchers.iter().all(|m| m.matches(labels))
}

fn parse_matchers(key: &str, list: &[String], out: &mut Vec<(String, String)>) -> Vec<Matcher> {
    let mut ms = Vec::new();
    for (i, s) in list.iter().enumerate() {
        match Matcher::parse(s) {
            Ok(m) => ms.push(m),
            Err(e) => out.push((format!("{key}[{i}]"), e)),
        }
    }
    ms
}

// ---- configuration -------------------------------------------------------------------

/// `[alerting]`: settings of the alerting service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertingConfig {
    /// Where people open Switchyard (links in notifications).
    #[serde(default = "default_external_url")]
    pub external_url: String,
    /// Seconds between evaluations of measure and delivery rules (and of clearing).
    #[serde(default = "default_eval")]
    pub evaluation_interval_seconds: u64,
    /// Seconds between re-sends of the active alerts to Alertmanager receivers (well inside
    /// Alertmanager's `resolve_timeout`, 5 minutes by default).
    #[serde(default = "default_resend")]
    pub resend_seconds: u64,
    /// Business criticality → severity.
    #[serde(default)]
    pub severity: SeverityMap,
    /// Default quiet period after which an alert that clears only when acknowledged
    /// (duplicate, out-of-sequence) clears by itself.
    #[serde(default = "default_quiet")]
    pub quiet_period_seconds: u64,
    /// Most evidence items (instance keys, event ids) kept per alert.
    #[serde(default = "default_evidence")]
    pub evidence_limit: usize,
}

impl Default for AlertingConfig {
    fn default() -> Self {
        Self {
            external_url: default_external_url(),
            evaluation_interval_seconds: default_eval(),
            resend_seconds: default_resend(),
            severity: SeverityMap::default(),
            quiet_period_seconds: default_quiet(),
            evidence_limit: default_evidence(),
        }
    }
}

fn default_external_url() -> String {
    "http://127.0.0.1:8080".into()
}
fn default_eval() -> u64 {
    15
}
fn default_resend() -> u64 {
    60
}
fn default_quiet() -> u64 {
    86_400
}
fn default_evidence() -> usize {
    20
}

/// `[alerting.severity]`: P1–P4 → severity (default critical, high, warning, info).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SeverityMap {
    #[serde(rename = "P1", default = "sev_critical")]
    pub p1: Severity,
    #[serde(rename = "P2", default = "sev_high")]
    pub p2: Severity,
    #[serde(rename = "P3", default = "sev_warning")]
    pub p3: Severity,
    #[serde(rename = "P4", default = "sev_info")]
    pub p4: Severity,
}

fn sev_critical() -> Severity {
    Severity::Critical
}
fn sev_high() -> Severity {
    Severity::High
}
fn sev_warning() -> Severity {
    Severity::Warning
}
fn sev_info() -> Severity {
    Severity::Info
}

impl Default for SeverityMap {
    fn default() -> Self {
        Self {
            p1: Severity::Critical,
            p2: Severity::High,
            p3: Severity::Warning,
            p4: Severity::Info,
        }
    }
}

impl SeverityMap {
    /// The severity of a criticality (`P1`…`P4`); `None` for anything else.
    pub fn of(&self, criticality: &str) -> Option<Severity> {
        match criticality {
            "P1" => Some(self.p1),
            "P2" => Some(self.p2),
            "P3" => Some(self.p3),
            "P4" => Some(self.p4),
            _ => None,
        }
    }
}

/// What an alert rule watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleOn {
    /// Findings of the workflow monitor, batch monitors and reconciliations.
    Finding,
    /// A measure against a threshold.
    Measure,
    /// Delivery outcomes: dead letters, credential pauses, failing destinations.
    Delivery,
}

/// `[[alert_rules]]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRuleConfig {
    pub name: String,
    pub on: RuleOn,
    /// `finding`: the finding kinds (`breach`, `at_risk`, `stalled`, …; all when empty).
    #[serde(default)]
    pub findings: Vec<String>,
    /// `finding`: the workflows, batch monitors or reconciliations (all when empty).
    #[serde(default)]
    pub subjects: Vec<String>,
    /// `measure`: what is measured (see [`Measure`]).
    pub measure: Option<String>,
    /// `measure`: the comparison, `>` (default), `>=`, `<` or `<=`.
    #[serde(default = "default_op")]
    pub op: String,
    /// `measure`: the threshold.
    pub threshold: Option<f64>,
    /// `measure`: the condition must hold this long before the alert fires.
    #[serde(default)]
    pub for_seconds: u64,
    /// `measure`: … and over at least this many consecutive evaluations.
    #[serde(default = "one")]
    pub consecutive: u32,
    /// `measure`: the window of rate measures (error_rate, throttle_rate, …).
    #[serde(default = "default_window")]
    pub window_seconds: u64,
    /// `delivery`: `dead_letter`, `credential` or `failing` (a destination whose recent
    /// attempts all failed: its circuit is open).
    pub outcome: Option<String>,
    /// `delivery` and `measure`: flows (globs) the rule covers (all when empty).
    #[serde(default)]
    pub flows: Vec<String>,
    /// `delivery` and `measure`: destinations (globs) the rule covers (all when empty).
    #[serde(default)]
    pub destinations: Vec<String>,
    /// Overrides the severity that follows from business criticality.
    pub severity: Option<Severity>,
    /// Overrides the cause Switchyard would classify.
    pub cause: Option<Cause>,
    /// Extra labels, as written.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// A jq program over the alert (`.labels`, `.count`, `.evidence`, `.value`) that yields
    /// its summary, instead of the built-in one.
    pub summary: Option<String>,
    /// For kinds that clear when acknowledged (duplicate, out-of-sequence): clear after
    /// this long without a new one instead of the `[alerting]` default.
    pub quiet_seconds: Option<u64>,
}

fn default_op() -> String {
    ">".into()
}
fn one() -> u32 {
    1
}
fn default_window() -> u64 {
    300
}

/// A measure an alert rule can watch; every one is read from the store, so any node that
/// takes over the alerting lease sees the same values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    /// Deliveries waiting or in flight, per flow and destination.
    QueueDepth,
    /// Age in seconds of the oldest undelivered delivery, per flow and destination.
    OldestUndeliveredSeconds,
    /// Dead letters not yet replayed or discarded, per flow.
    DeadLetters,
    /// Share (0–1) of failed attempts per destination over the window.
    ErrorRate,
    /// Share (0–1) of attempts answered 429 per destination over the window.
    ThrottleRate,
    /// Share (0–1) of the instances closed within the window that completed within SLA, per
    /// workflow.
    ShareWithinSla,
    /// 1 when the last probe of a target failed, else 0, per target.
    ProbeFailure,
    /// The last probe's latency in milliseconds, per target.
    ProbeLatencyMs,
    /// Seconds since a declared source last sent an event, per source.
    SourceSilenceSeconds,
}

impl Measure {
    pub const ALL: [Measure; 9] = [
        Measure::QueueDepth,
        Measure::OldestUndeliveredSeconds,
        Measure::DeadLetters,
        Measure::ErrorRate,
        Measure::ThrottleRate,
        Measure::ShareWithinSla,
        Measure::ProbeFailure,
        Measure::ProbeLatencyMs,
        Measure::SourceSilenceSeconds,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Measure::QueueDepth => "queue_depth",
            Measure::OldestUndeliveredSeconds => "oldest_undelivered_seconds",
            Measure::DeadLetters => "dead_letters",
            Measure::ErrorRate => "error_rate",
            Measure::ThrottleRate => "throttle_rate",
            Measure::ShareWithinSla => "share_within_sla",
            Measure::ProbeFailure => "probe_failure",
            Measure::ProbeLatencyMs => "probe_latency_ms",
            Measure::SourceSilenceSeconds => "source_silence_seconds",
        }
    }

    pub fn parse(s: &str) -> Option<Measure> {
        Self::ALL.into_iter().find(|m| m.as_str() == s)
    }

    /// The cause an alert on this measure gets unless the rule sets one (`odoo` when the
    /// series is about an Odoo connection or destination).
    pub fn cause(self, odoo: bool) -> Cause {
        match self {
            Measure::QueueDepth | Measure::OldestUndeliveredSeconds | Measure::ErrorRate => {
                if odoo {
                    Cause::OdooUnavailable
                } else {
                    Cause::PartnerDown
                }
            }
            Measure::DeadLetters => Cause::MappingDrift,
            Measure::ThrottleRate => Cause::PartnerThrottling,
            Measure::ShareWithinSla => Cause::BusinessProcess,
            Measure::ProbeFailure | Measure::ProbeLatencyMs => {
                if odoo {
                    Cause::OdooUnavailable
                } else {
                    Cause::PartnerDown
                }
            }
            Measure::SourceSilenceSeconds => Cause::UpstreamBacklog,
        }
    }
}

/// A comparison of a measure with its threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Cmp {
    Gt,
    Ge,
    Lt,
    Le,
}

impl Cmp {
    fn parse(s: &str) -> Option<Cmp> {
        match s {
            ">" => Some(Cmp::Gt),
            ">=" => Some(Cmp::Ge),
            "<" => Some(Cmp::Lt),
            "<=" => Some(Cmp::Le),
            _ => None,
        }
    }

    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Cmp::Gt => value > threshold,
            Cmp::Ge => value >= threshold,
            Cmp::Lt => value < threshold,
            Cmp::Le => value <= threshold,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Cmp::Gt => ">",
            Cmp::Ge => ">=",
            Cmp::Lt => "<",
            Cmp::Le => "<=",
        }
    }
}

/// A delivery outcome a rule watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryOutcome {
    /// Dead letters of a flow (one alert per flow, with the count and the errors).
    DeadLetter,
    /// A destination paused after a credential failure.
    Credential,
    /// A destination whose recent attempts all failed (what opens its circuit).
    Failing,
}

impl DeliveryOutcome {
    fn parse(s: &str) -> Option<DeliveryOutcome> {
        match s {
            "dead_letter" => Some(DeliveryOutcome::DeadLetter),
            "credential" => Some(DeliveryOutcome::Credential),
            "failing" | "circuit_open" => Some(DeliveryOutcome::Failing),
            _ => None,
        }
    }
}

/// What a compiled rule watches.
#[derive(Debug, Clone)]
pub enum RuleKind {
    Finding {
        kinds: Vec<crate::instance::FindingKind>,
        subjects: Vec<String>,
    },
    Measure {
        measure: Measure,
        cmp: Cmp,
        threshold: f64,
        for_: Duration,
        consecutive: u32,
        window: Duration,
    },
    Delivery {
        outcome: DeliveryOutcome,
    },
}

/// A compiled `[[alert_rules]]` entry.
#[derive(Debug, Clone)]
pub struct AlertRule {
    pub name: String,
    pub kind: RuleKind,
    flows: Option<globset::GlobSet>,
    destinations: Option<globset::GlobSet>,
    pub severity: Option<Severity>,
    pub cause: Option<Cause>,
    pub labels: Labels,
    pub summary: Option<Arc<Jq>>,
    pub quiet: Option<Duration>,
}

impl AlertRule {
    /// Whether the rule covers a flow (true for rules without flow globs).
    pub fn covers_flow(&self, flow: &str) -> bool {
        self.flows.as_ref().is_none_or(|g| g.is_match(flow))
    }

    pub fn covers_destination(&self, destination: &str) -> bool {
        self.destinations
            .as_ref()
            .is_none_or(|g| g.is_match(destination))
    }

    /// Whether a finding of `kind` about `subject` (a workflow, batch monitor or
    /// reconciliation name) is this rule's.
    pub fn covers_finding(&self, kind: crate::instance::FindingKind, subject: &str) -> bool {
        match &self.kind {
            RuleKind::Finding { kinds, subjects } => {
                (kinds.is_empty() || kinds.contains(&kind))
                    && (subjects.is_empty() || subjects.iter().any(|s| s == subject))
            }
            _ => false,
        }
    }
}

/// `[route]` and its children (`[[route.routes]]`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub receiver: Option<String>,
    #[serde(default)]
    pub matchers: Vec<String>,
    /// Labels whose values make a group (`["..."]`: every label, one group per alert).
    pub group_by: Option<Vec<String>>,
    pub group_wait_seconds: Option<u64>,
    pub group_interval_seconds: Option<u64>,
    pub repeat_interval_seconds: Option<u64>,
    /// Keep looking at the next sibling after this route matched.
    #[serde(default, rename = "continue")]
    pub continue_: bool,
    /// Maintenance windows (names) during which this route sends nothing.
    #[serde(default)]
    pub mute_during: Vec<String>,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
}

/// A compiled route: every setting resolved (inherited from the parent when not set).
#[derive(Debug, Clone, Serialize)]
pub struct Route {
    /// Position in the tree, e.g. `0.2.1` (the root is `0`); part of each group's key.
    pub id: String,
    pub receiver: String,
    pub matchers: Vec<Matcher>,
    pub group_by: Vec<String>,
    /// `group_by = ["..."]`.
    pub group_by_all: bool,
    pub group_wait: u64,
    pub group_interval: u64,
    pub repeat_interval: u64,
    #[serde(rename = "continue")]
    pub continue_: bool,
    pub mute_during: Vec<String>,
    pub routes: Vec<Route>,
}

impl Route {
    /// The routes an alert with `labels` goes to, in tree order (Alertmanager's rule: the
    /// deepest matching routes; a node whose children do not match takes it itself).
    pub fn matches<'a>(&'a self, labels: &Labels) -> Vec<&'a Route> {
        if !all_match(&self.matchers, labels) {
            return Vec::new();
        }
        let mut out = Vec::new();
        for child in &self.routes {
            let found = child.matches(labels);
            if !found.is_empty() {
                out.extend(found);
                if !child.continue_ {
                    break;
                }
            }
        }
        if out.is_empty() {
            out.push(self);
        }
        out
    }

    /// The key of the group an alert with `labels` belongs to on this route, and the
    /// group's labels.
    pub fn group_of(&self, labels: &Labels) -> (String, Labels) {
        let group: Labels = if self.group_by_all {
            labels.clone()
        } else {
            self.group_by
                .iter()
                .filter_map(|k| labels.get(k).map(|v| (k.clone(), v.clone())))
                .collect()
        };
        let key = format!(
            "{}:{}",
            self.id,
            serde_json::to_string(&group).unwrap_or_default()
        );
        (key, group)
    }

    /// Every route in the tree, depth first.
    pub fn walk(&self) -> Vec<&Route> {
        let mut out = vec![self];
        for c in &self.routes {
            out.extend(c.walk());
        }
        out
    }
}

/// What a notifier sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifierKind {
    /// The notification as JSON, signed when the destination has a signing secret.
    Webhook,
    /// A Slack-compatible incoming webhook: `{"text": …}` with a link.
    Slack,
    /// Email through an `smtp` destination.
    Email,
    /// Prometheus Alertmanager's `POST /api/v2/alerts`: every active alert, re-sent on a
    /// timer, `endsAt` when it clears.
    Alertmanager,
}

impl NotifierKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NotifierKind::Webhook => "webhook",
            NotifierKind::Slack => "slack",
            NotifierKind::Email => "email",
            NotifierKind::Alertmanager => "alertmanager",
        }
    }
}

/// `[[receivers.notify]]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NotifierConfig {
    #[serde(rename = "type")]
    pub kind: NotifierKind,
    /// The `[[destinations]]` entry it sends through (an `smtp` one for email).
    pub destination: String,
    /// Email recipients.
    #[serde(default)]
    pub to: Vec<String>,
    /// A jq program over the notification event (`.data` is the notification) that yields
    /// the body to send, instead of the built-in one.
    pub template: Option<String>,
    /// The retry policy of the notifier's flow (default [`NOTIFIER_RETRY`]): how long a
    /// failing notifier is retried before its notifications become dead letters, which a
    /// `delivery` rule turns into an alert for the other receivers.
    pub retry: Option<crate::delivery::RetryPolicy>,
}

/// The retry policy of a notifier flow unless its notifier sets one: 50 attempts within a
/// day, so an outage of the receiving end loses nothing.
pub const NOTIFIER_RETRY: crate::delivery::RetryPolicy = crate::delivery::RetryPolicy {
    max_attempts: 50,
    max_age_seconds: 86_400,
    initial_ms: 1000,
    max_backoff_seconds: 600,
};

/// `[[receivers]]`: a team's ways of being told.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    pub name: String,
    /// The team that owns incidents routed here (defaults to the receiver's name).
    pub team: Option<String>,
    #[serde(default)]
    pub notify: Vec<NotifierConfig>,
}

/// `[[inhibit_rules]]`: while an alert matching `source_matchers` fires, alerts matching
/// `target_matchers` with the same values of `equal` are suppressed (still listed, as
/// inhibited).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InhibitRuleConfig {
    pub source_matchers: Vec<String>,
    pub target_matchers: Vec<String>,
    #[serde(default)]
    pub equal: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct InhibitRule {
    pub source: Vec<Matcher>,
    pub target: Vec<Matcher>,
    pub equal: Vec<String>,
}

impl InhibitRule {
    /// Whether `source` (a firing alert) inhibits `target`.
    pub fn inhibits(&self, source: &Labels, target: &Labels) -> bool {
        source != target
            && all_match(&self.source, source)
            && all_match(&self.target, target)
            && self.equal.iter().all(|k| source.get(k) == target.get(k))
    }
}

/// `[[maintenance_windows]]`: a recurring time during which matching alerts are
/// suppressed (like a silence that comes back).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceWindowConfig {
    pub name: String,
    /// Matching alerts are suppressed (all when empty).
    #[serde(default)]
    pub matchers: Vec<String>,
    /// When it starts: a five-field crontab expression.
    pub schedule: String,
    pub duration_minutes: u64,
    #[serde(default = "default_tz")]
    pub timezone: String,
}

fn default_tz() -> String {
    "UTC".into()
}

#[derive(Debug, Clone)]
pub struct MaintenanceWindow {
    pub name: String,
    pub matchers: Vec<Matcher>,
    schedule: cron::Schedule,
    timezone: chrono_tz::Tz,
    pub duration: Duration,
}

impl MaintenanceWindow {
    /// The start of the window `t` falls in, if any.
    pub fn active_at(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        crate::batch::slots(
            &self.schedule,
            self.timezone,
            t - self.duration - Duration::seconds(1),
            t,
        )
        .into_iter()
        .rfind(|s| *s <= t && t < *s + self.duration)
    }

    /// The next instant after `t` at which the window opens or closes.
    pub fn next_change(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let opens = crate::batch::next_slot(&self.schedule, self.timezone, t);
        let closes = self.active_at(t).map(|s| s + self.duration);
        match (opens, closes) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

// ---- the compiled whole --------------------------------------------------------------

/// A receiver with its team.
#[derive(Debug, Clone, Serialize)]
pub struct Receiver {
    pub name: String,
    pub team: String,
    pub notify: Vec<NotifierConfig>,
}

/// Everything the alerting service needs, compiled.
#[derive(Debug, Clone)]
pub struct Alerting {
    pub settings: AlertingConfig,
    pub rules: Vec<AlertRule>,
    /// `None` when no `[route]` is configured: alerts are kept and listed, nobody is told.
    pub route: Option<Route>,
    pub receivers: Vec<Receiver>,
    pub inhibit: Vec<InhibitRule>,
    pub windows: Vec<MaintenanceWindow>,
}

impl Alerting {
    pub fn receiver(&self, name: &str) -> Option<&Receiver> {
        self.receivers.iter().find(|r| r.name == name)
    }

    /// The receivers an alert with these labels reaches (with the route that sends it
    /// there), for `/v1/routes/test` and the service.
    pub fn routes_for(&self, labels: &Labels) -> Vec<&Route> {
        self.route
            .as_ref()
            .map(|r| r.matches(labels))
            .unwrap_or_default()
    }

    /// Nothing configured: no rules, no routes.
    pub fn empty() -> Alerting {
        Alerting {
            settings: AlertingConfig::default(),
            rules: Vec::new(),
            route: None,
            receivers: Vec::new(),
            inhibit: Vec::new(),
            windows: Vec::new(),
        }
    }

    /// Compiles the alerting sections of `config`: (dotted key, problem) pairs on error.
    pub fn compile(config: &Config) -> Result<Alerting, Vec<(String, String)>> {
        let mut out = Vec::new();
        let s = &config.alerting;
        if s.evaluation_interval_seconds == 0 {
            out.push((
                "alerting.evaluation_interval_seconds".into(),
                "must be at least 1".into(),
            ));
        }
        if s.resend_seconds == 0 {
            out.push((
                "alerting.resend_seconds".into(),
                "must be at least 1".into(),
            ));
        }
        if !(s.external_url.starts_with("http://") || s.external_url.starts_with("https://")) {
            out.push((
                "alerting.external_url".into(),
                format!("{:?} is not an http(s) URL", s.external_url),
            ));
        }

        let subjects: HashSet<&str> = config
            .workflows
            .iter()
            .map(|w| w.name.as_str())
            .chain(config.batch_monitors.iter().map(|b| b.name.as_str()))
            .chain(config.reconciliations.iter().map(|r| r.name.as_str()))
            .collect();
        let mut rules = Vec::new();
        let mut names = HashSet::new();
        for (i, r) in config.alert_rules.iter().enumerate() {
            let key = format!("alert_rules[{i}]");
            if !crate::workflows::is_name(&r.name) {
                out.push((
                    format!("{key}.name"),
                    "must be 1–64 characters of a-z, 0-9, - and _".into(),
                ));
            } else if !names.insert(r.name.clone()) {
                out.push((
                    format!("{key}.name"),
                    format!("another rule is named {:?}", r.name),
                ));
            }
            if let Some(rule) = compile_rule(&key, r, &subjects, &mut out) {
                rules.push(rule);
            }
        }

        let mut receivers = Vec::new();
        let mut rnames = HashSet::new();
        for (i, r) in config.receivers.iter().enumerate() {
            let key = format!("receivers[{i}]");
            if !crate::workflows::is_name(&r.name) {
                out.push((
                    format!("{key}.name"),
                    "must be 1–64 characters of a-z, 0-9, - and _".into(),
                ));
            } else if !rnames.insert(r.name.clone()) {
                out.push((
                    format!("{key}.name"),
                    format!("another receiver is named {:?}", r.name),
                ));
            }
            for (j, n) in r.notify.iter().enumerate() {
                let nkey = format!("{key}.notify[{j}]");
                match config.destinations.iter().find(|d| d.name == n.destination) {
                    None => out.push((
                        format!("{nkey}.destination"),
                        format!("no destination is named {:?}", n.destination),
                    )),
                    Some(d) => {
                        let want_smtp = n.kind == NotifierKind::Email;
                        let is_smtp = d.kind == crate::flows::DestinationKind::Smtp;
                        if want_smtp != is_smtp {
                            out.push((
                                format!("{nkey}.destination"),
                                if want_smtp {
                                    format!(
                                        "an email notifier needs an smtp destination; {:?} is not one",
                                        n.destination
                                    )
                                } else {
                                    format!(
                                        "a {} notifier needs an http destination; {:?} is not one",
                                        n.kind.as_str(),
                                        n.destination
                                    )
                                },
                            ));
                        }
                    }
                }
                if n.kind == NotifierKind::Email && n.to.is_empty() {
                    out.push((
                        format!("{nkey}.to"),
                        "an email notifier needs at least one recipient".into(),
                    ));
                }
                if n.kind != NotifierKind::Email && !n.to.is_empty() {
                    out.push((
                        format!("{nkey}.to"),
                        "only email notifiers have recipients".into(),
                    ));
                }
                if let Some(t) = &n.template
                    && let Err(e) = Jq::compile(t, &[])
                {
                    out.push((format!("{nkey}.template"), e));
                }
                // The notifier's flow is compiled with the others, which leave its problems
                // to this check.
                if let Some(r) = &n.retry {
                    if r.max_attempts == 0 {
                        out.push((
                            format!("{nkey}.retry.max_attempts"),
                            "must be at least 1".into(),
                        ));
                    }
                    if r.initial_ms == 0 || r.max_backoff_seconds == 0 || r.max_age_seconds == 0 {
                        out.push((
                            format!("{nkey}.retry"),
                            "initial_ms, max_backoff_seconds and max_age_seconds must be at least 1"
                                .into(),
                        ));
                    }
                }
            }
            receivers.push(Receiver {
                name: r.name.clone(),
                team: r.team.clone().unwrap_or_else(|| r.name.clone()),
                notify: r.notify.clone(),
            });
        }

        let window_names: HashSet<&str> = config
            .maintenance_windows
            .iter()
            .map(|w| w.name.as_str())
            .collect();
        let route = match &config.route {
            None => {
                if !config.receivers.is_empty() {
                    out.push((
                        "route".into(),
                        "receivers are configured but no [route] sends anything to them".into(),
                    ));
                }
                None
            }
            Some(root) => {
                if root.receiver.is_none() {
                    out.push((
                        "route.receiver".into(),
                        "the root route needs a receiver (where alerts no other route takes go)"
                            .into(),
                    ));
                }
                if !root.matchers.is_empty() {
                    out.push((
                        "route.matchers".into(),
                        "the root route matches every alert; it cannot have matchers".into(),
                    ));
                }
                let defaults = Route {
                    id: String::new(),
                    receiver: String::new(),
                    matchers: Vec::new(),
                    group_by: vec!["alertname".into()],
                    group_by_all: false,
                    group_wait: 30,
                    group_interval: 300,
                    repeat_interval: 4 * 3600,
                    continue_: false,
                    mute_during: Vec::new(),
                    routes: Vec::new(),
                };
                Some(compile_route(
                    "route",
                    "0",
                    root,
                    &defaults,
                    &rnames,
                    &window_names,
                    &mut out,
                ))
            }
        };

        let mut inhibit = Vec::new();
        for (i, r) in config.inhibit_rules.iter().enumerate() {
            let key = format!("inhibit_rules[{i}]");
            let source = parse_matchers(
                &format!("{key}.source_matchers"),
                &r.source_matchers,
                &mut out,
            );
            let target = parse_matchers(
                &format!("{key}.target_matchers"),
                &r.target_matchers,
                &mut out,
            );
            if r.source_matchers.is_empty() {
                out.push((
                    format!("{key}.source_matchers"),
                    "needs at least one matcher (an empty one would let every alert inhibit)"
                        .into(),
                ));
            }
            inhibit.push(InhibitRule {
                source,
                target,
                equal: r.equal.clone(),
            });
        }

        let mut windows = Vec::new();
        let mut wnames = HashSet::new();
        for (i, w) in config.maintenance_windows.iter().enumerate() {
            let key = format!("maintenance_windows[{i}]");
            if !crate::workflows::is_name(&w.name) {
                out.push((
                    format!("{key}.name"),
                    "must be 1–64 characters of a-z, 0-9, - and _".into(),
                ));
            } else if !wnames.insert(w.name.clone()) {
                out.push((
                    format!("{key}.name"),
                    format!("another maintenance window is named {:?}", w.name),
                ));
            }
            let matchers = parse_matchers(&format!("{key}.matchers"), &w.matchers, &mut out);
            let schedule = crate::batch::parse_schedule(&w.schedule)
                .map_err(|e| out.push((format!("{key}.schedule"), e)))
                .ok();
            let timezone = crate::batch::parse_timezone(&w.timezone)
                .map_err(|e| out.push((format!("{key}.timezone"), e)))
                .ok();
            if w.duration_minutes == 0 {
                out.push((
                    format!("{key}.duration_minutes"),
                    "must be at least 1".into(),
                ));
            }
            if let (Some(schedule), Some(timezone)) = (schedule, timezone) {
                windows.push(MaintenanceWindow {
                    name: w.name.clone(),
                    matchers,
                    schedule,
                    timezone,
                    duration: Duration::minutes(w.duration_minutes as i64),
                });
            }
        }

        if out.is_empty() {
            Ok(Alerting {
                settings: s.clone(),
                rules,
                route,
                receivers,
                inhibit,
                windows,
            })
        } else {
            Err(out)
        }
    }
}

fn globs(key: &str, list: &[String], out: &mut Vec<(String, String)>) -> Option<globset::GlobSet> {
    if list.is_empty() {
        return None;
    }
    let mut b = globset::GlobSetBuilder::new();
    for (i, g) in list.iter().enumerate() {
        match globset::Glob::new(g) {
            Ok(g) => {
                b.add(g);
            }
            Err(e) => out.push((format!("{key}[{i}]"), format!("invalid glob: {e}"))),
        }
    }
    b.build().ok()
}

fn compile_rule(
    key: &str,
    r: &AlertRuleConfig,
    subjects: &HashSet<&str>,
    out: &mut Vec<(String, String)>,
) -> Option<AlertRule> {
    let before = out.len();
    let misplaced = |field: &str, set: bool, out: &mut Vec<(String, String)>| {
        if set {
            out.push((
                format!("{key}.{field}"),
                format!(
                    "not a setting of a rule on {}",
                    match r.on {
                        RuleOn::Finding => "findings",
                        RuleOn::Measure => "a measure",
                        RuleOn::Delivery => "delivery outcomes",
                    }
                ),
            ));
        }
    };
    let kind = match r.on {
        RuleOn::Finding => {
            misplaced("measure", r.measure.is_some(), out);
            misplaced("threshold", r.threshold.is_some(), out);
            misplaced("outcome", r.outcome.is_some(), out);
            let mut kinds = Vec::new();
            for (i, k) in r.findings.iter().enumerate() {
                match crate::instance::FindingKind::parse(k) {
                    Some(k) => kinds.push(k),
                    None => out.push((
                        format!("{key}.findings[{i}]"),
                        format!(
                            "unknown finding kind {k:?}; one of {}",
                            crate::instance::FindingKind::ALL
                                .iter()
                                .map(|k| k.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    )),
                }
            }
            for (i, s) in r.subjects.iter().enumerate() {
                if !subjects.contains(s.as_str()) {
                    out.push((
                        format!("{key}.subjects[{i}]"),
                        format!("no workflow, batch monitor or reconciliation is named {s:?}"),
                    ));
                }
            }
            RuleKind::Finding {
                kinds,
                subjects: r.subjects.clone(),
            }
        }
        RuleOn::Measure => {
            misplaced("outcome", r.outcome.is_some(), out);
            misplaced("findings", !r.findings.is_empty(), out);
            let measure = match &r.measure {
                None => {
                    out.push((
                        format!("{key}.measure"),
                        "a measure rule needs a measure".into(),
                    ));
                    None
                }
                Some(m) => Measure::parse(m).or_else(|| {
                    out.push((
                        format!("{key}.measure"),
                        format!(
                            "unknown measure {m:?}; one of {}",
                            Measure::ALL.map(|m| m.as_str()).join(", ")
                        ),
                    ));
                    None
                }),
            };
            let cmp = Cmp::parse(&r.op).or_else(|| {
                out.push((
                    format!("{key}.op"),
                    format!("{:?} is not one of >, >=, <, <=", r.op),
                ));
                None
            });
            if r.threshold.is_none() {
                out.push((
                    format!("{key}.threshold"),
                    "a measure rule needs a threshold".into(),
                ));
            }
            if r.consecutive == 0 {
                out.push((format!("{key}.consecutive"), "must be at least 1".into()));
            }
            if r.window_seconds == 0 {
                out.push((format!("{key}.window_seconds"), "must be at least 1".into()));
            }
            RuleKind::Measure {
                measure: measure.unwrap_or(Measure::QueueDepth),
                cmp: cmp.unwrap_or(Cmp::Gt),
                threshold: r.threshold.unwrap_or(0.0),
                for_: Duration::seconds(r.for_seconds as i64),
                consecutive: r.consecutive.max(1),
                window: Duration::seconds(r.window_seconds.max(1) as i64),
            }
        }
        RuleOn::Delivery => {
            misplaced("measure", r.measure.is_some(), out);
            misplaced("threshold", r.threshold.is_some(), out);
            misplaced("findings", !r.findings.is_empty(), out);
            let outcome = match &r.outcome {
                None => {
                    out.push((
                        format!("{key}.outcome"),
                        "a delivery rule needs an outcome: dead_letter, credential or failing"
                            .into(),
                    ));
                    None
                }
                Some(o) => DeliveryOutcome::parse(o).or_else(|| {
                    out.push((
                        format!("{key}.outcome"),
                        format!("{o:?} is not one of dead_letter, credential, failing"),
                    ));
                    None
                }),
            };
            RuleKind::Delivery {
                outcome: outcome.unwrap_or(DeliveryOutcome::DeadLetter),
            }
        }
    };
    let flows = globs(&format!("{key}.flows"), &r.flows, out);
    let destinations = globs(&format!("{key}.destinations"), &r.destinations, out);
    for k in r.labels.keys() {
        if !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') || k.is_empty() {
            out.push((
                format!("{key}.labels.{k}"),
                "a label name is letters, digits and _".into(),
            ));
        }
    }
    let summary = match &r.summary {
        None => None,
        Some(s) => match Jq::compile(s, &[]) {
            Ok(j) => Some(Arc::new(j)),
            Err(e) => {
                out.push((format!("{key}.summary"), e));
                None
            }
        },
    };
    (out.len() == before).then(|| AlertRule {
        name: r.name.clone(),
        kind,
        flows,
        destinations,
        severity: r.severity,
        cause: r.cause,
        labels: r.labels.clone(),
        summary,
        quiet: r.quiet_seconds.map(|s| Duration::seconds(s as i64)),
    })
}

#[allow(clippy::too_many_arguments)]
fn compile_route(
    key: &str,
    id: &str,
    r: &RouteConfig,
    parent: &Route,
    receivers: &HashSet<String>,
    windows: &HashSet<&str>,
    out: &mut Vec<(String, String)>,
) -> Route {
    let matchers = parse_matchers(&format!("{key}.matchers"), &r.matchers, out);
    let receiver = match &r.receiver {
        Some(name) => {
            if !receivers.contains(name) {
                out.push((
                    format!("{key}.receiver"),
                    format!("no receiver is named {name:?}"),
                ));
            }
            name.clone()
        }
        None => parent.receiver.clone(),
    };
    let (group_by, group_by_all) = match &r.group_by {
        Some(g) if g.iter().any(|l| l == "...") => {
            if g.len() > 1 {
                out.push((
                    format!("{key}.group_by"),
                    "\"...\" (group by every label) stands alone".into(),
                ));
            }
            (Vec::new(), true)
        }
        Some(g) => (g.clone(), false),
        None => (parent.group_by.clone(), parent.group_by_all),
    };
    let mut secs = |name: &str, v: Option<u64>, inherited: u64, min: u64| {
        let v = v.unwrap_or(inherited);
        if v < min {
            out.push((format!("{key}.{name}"), format!("must be at least {min}")));
        }
        v
    };
    let group_wait = secs(
        "group_wait_seconds",
        r.group_wait_seconds,
        parent.group_wait,
        0,
    );
    let group_interval = secs(
        "group_interval_seconds",
        r.group_interval_seconds,
        parent.group_interval,
        1,
    );
    let repeat_interval = secs(
        "repeat_interval_seconds",
        r.repeat_interval_seconds,
        parent.repeat_interval,
        1,
    );
    for (i, w) in r.mute_during.iter().enumerate() {
        if !windows.contains(w.as_str()) {
            out.push((
                format!("{key}.mute_during[{i}]"),
                format!("no maintenance window is named {w:?}"),
            ));
        }
    }
    let mut mute_during = parent.mute_during.clone();
    mute_during.extend(r.mute_during.iter().cloned());
    let mut route = Route {
        id: id.to_string(),
        receiver,
        matchers,
        group_by,
        group_by_all,
        group_wait,
        group_interval,
        repeat_interval,
        continue_: r.continue_,
        mute_during,
        routes: Vec::new(),
    };
    let children = r
        .routes
        .iter()
        .enumerate()
        .map(|(i, c)| {
            compile_route(
                &format!("{key}.routes[{i}]"),
                &format!("{id}.{i}"),
                c,
                &route,
                receivers,
                windows,
                out,
            )
        })
        .collect();
    route.routes = children;
    route
}

// ---- notifications --------------------------------------------------------------------

/// One alert as a notification carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotifiedAlert {
    pub fingerprint: String,
    /// `firing` or `resolved`.
    pub status: String,
    pub labels: Labels,
    pub summary: String,
    pub severity: Severity,
    pub cause: Cause,
    pub count: i64,
    pub starts_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<DateTime<Utc>>,
    pub evidence: serde_json::Value,
    /// A link to the alert in Switchyard.
    pub url: String,
}

/// The `data` of a [`NOTIFICATION_TYPE`] event: one group's state, for one notifier of one
/// receiver. A notifier's template turns it into the body it sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    pub receiver: String,
    pub team: String,
    /// The notifier's index in the receiver's `notify` list.
    pub notifier: usize,
    /// `firing` while any alert of the group fires, else `resolved`.
    pub status: String,
    pub group_key: String,
    pub group_labels: Labels,
    /// The notification's number within its group (1, 2, …).
    pub sequence: i64,
    pub incident: Option<i64>,
    pub incident_url: Option<String>,
    /// One line in business terms.
    pub title: String,
    pub alerts: Vec<NotifiedAlert>,
    pub sent_at: DateTime<Utc>,
}

/// The flows that carry notifications to the receivers' destinations, one per notifier:
/// `notify.<receiver>.<n>`, critical lane, source [`ALERT_SOURCE`], filtered on the
/// receiver and notifier, mapped by the notifier's template (or the built-in one).
pub fn notifier_flows(config: &Config) -> Vec<crate::flows::FlowConfig> {
    let mut flows = Vec::new();
    for r in &config.receivers {
        for (i, n) in r.notify.iter().enumerate() {
            let (ty, filter) = match n.kind {
                NotifierKind::Alertmanager => (
                    PUSH_TYPE,
                    format!(
                        "(.data.receiver == {:?}) and (.data.notifier == {i})",
                        r.name
                    ),
                ),
                _ => (
                    NOTIFICATION_TYPE,
                    format!(
                        "(.data.receiver == {:?}) and (.data.notifier == {i})",
                        r.name
                    ),
                ),
            };
            let map = n.template.clone().unwrap_or_else(|| default_template(n));
            flows.push(crate::flows::FlowConfig {
                name: notifier_flow_name(&r.name, i),
                version: "1".into(),
                matches: MatchConfig {
                    source: Some(ALERT_SOURCE.into()),
                    types: vec![ty.into()],
                    filter: Some(filter),
                },
                map: Some(map),
                schema_file: None,
                schema: None,
                destination: n.destination.clone(),
                priority: crate::delivery::Lane::Critical,
                ordering: None,
                retry: n.retry.unwrap_or(NOTIFIER_RETRY),
                odoo: None,
            });
        }
    }
    flows
}

/// The flow that carries notifier `index` of `receiver`.
pub fn notifier_flow_name(receiver: &str, index: usize) -> String {
    format!("notify.{receiver}.{index}")
}

/// The built-in template of a notifier (jq over the notification event).
pub fn default_template(n: &NotifierConfig) -> String {
    match n.kind {
        NotifierKind::Webhook => ".data".into(),
        NotifierKind::Slack => SLACK_TEMPLATE.into(),
        NotifierKind::Email => format!(
            "{{to: {}, subject: ({EMAIL_SUBJECT}), text: ({EMAIL_TEXT})}}",
            serde_json::to_string(&n.to).unwrap_or_else(|_| "[]".into())
        ),
        NotifierKind::Alertmanager => ALERTMANAGER_TEMPLATE.into(),
    }
}

/// Slack's mrkdwn reads `<…>` as a link or mention and `&` as an entity, so text from the
/// outside (business keys, summaries) has those three escaped; only the incident link is a
/// link.
const SLACK_TEMPLATE: &str = r#"def esc: split("&") | join("&amp;") | split("<") | join("&lt;") | split(">") | join("&gt;");
{text: (
  (if .data.status == "firing" then ":rotating_light: " else ":white_check_mark: " end)
  + "*[" + (.data.status | ascii_upcase) + "]* " + (.data.title | esc)
  + "\n" + ([.data.alerts[] | "• " + (if .status == "resolved" then "~" + (.summary | esc) + "~ (cleared)" else (.summary | esc) end) + " — " + .cause + ", " + .severity] | join("\n"))
  + (if .data.incident_url then "\n<" + (.data.incident_url | esc) + "|Incident #" + (.data.incident | tostring) + " (" + (.data.team | esc) + ")>" else "" end)
)}"#;

const EMAIL_SUBJECT: &str =
    r#""[Switchyard] [" + (.data.status | ascii_upcase) + "] " + .data.title"#;

const EMAIL_TEXT: &str = r#".data.title + "\n\n" + ([.data.alerts[] | "- [" + .status + "] " + .summary + "\n  cause: " + .cause + ", severity: " + .severity + ", count: " + (.count | tostring) + "\n  " + .url] | join("\n")) + (if .data.incident_url then "\n\nIncident #" + (.data.incident | tostring) + " (team " + .data.team + "): " + .data.incident_url else "" end) + "\n""#;

const ALERTMANAGER_TEMPLATE: &str = r#"[.data.alerts[] | {
  labels: (.labels + {severity: .severity, cause: .cause}),
  annotations: {summary: .summary, evidence: (.evidence | tojson)},
  startsAt: .starts_at,
  generatorURL: .url
} + (if .ends_at then {endsAt: .ends_at} else {} end)]"#;

// ---- a registry of what alerts mean, for summaries ------------------------------------

/// The fingerprint of a label set (stable across nodes and versions).
pub fn fingerprint(labels: &Labels) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for (k, v) in labels {
        h.update(k.as_bytes());
        h.update([0xff]);
        h.update(v.as_bytes());
        h.update([0xfe]);
    }
    hex::encode(&h.finalize()[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn matchers_follow_alertmanager_syntax() {
        let l = labels(&[("cause", "partner_down"), ("destination", "carrier-a")]);
        for (m, want) in [
            (r#"cause="partner_down""#, true),
            (r#"cause!="partner_down""#, false),
            (r#"cause=~"partner_.*""#, true),
            (r#"cause=~"partner""#, false), // anchored
            (r#"cause!~"odoo_.*""#, true),
            ("cause=partner_down", true),
            (r#"team="""#, true), // a missing label is ""
            (r#"team!="""#, false),
            (r#"destination=~"carrier-(a|b)""#, true),
        ] {
            assert_eq!(Matcher::parse(m).unwrap().matches(&l), want, "{m}");
        }
        for bad in ["cause", "=x", "1a=b", r#"a=~"(""#, r#"a="x"#] {
            assert!(Matcher::parse(bad).is_err(), "{bad} should be refused");
        }
        let m = Matcher::parse(r#"cause =~ "a|b""#).unwrap();
        assert_eq!(m.to_string(), r#"cause=~"a|b""#);
    }

    #[test]
    fn severity_map_defaults() {
        let m = SeverityMap::default();
        assert_eq!(m.of("P1"), Some(Severity::Critical));
        assert_eq!(m.of("P2"), Some(Severity::High));
        assert_eq!(m.of("P3"), Some(Severity::Warning));
        assert_eq!(m.of("P4"), Some(Severity::Info));
        assert_eq!(m.of("P5"), None);
    }

    #[test]
    fn the_slack_template_escapes_outside_text_and_links_the_incident() {
        let n = NotifierConfig {
            kind: NotifierKind::Slack,
            destination: "d".into(),
            to: Vec::new(),
            template: None,
            retry: None,
        };
        let jq = Jq::compile(&default_template(&n), &[]).unwrap();
        let event = serde_json::json!({"data": {
            "status": "firing", "title": "Order <R&D> late", "team": "ops", "incident": 4,
            "incident_url": "http://sy.example/#/incidents/4",
            "alerts": [{"status": "firing", "summary": "a > b", "cause": "business_process",
                        "severity": "high"}],
        }});
        let out = jq.run(&event, &[]).unwrap();
        assert_eq!(
            out,
            vec![
                serde_json::json!({"text": ":rotating_light: *[FIRING]* Order &lt;R&amp;D&gt; late\n\
                • a &gt; b — business_process, high\n<http://sy.example/#/incidents/4|Incident #4 (ops)>"})
            ]
        );
    }

    #[test]
    fn delivery_causes() {
        assert_eq!(
            delivery_cause(Some("transient"), Some(429), false),
            Cause::PartnerThrottling
        );
        assert_eq!(
            delivery_cause(Some("transient"), Some(503), false),
            Cause::PartnerDown
        );
        assert_eq!(
            delivery_cause(Some("transient"), None, true),
            Cause::OdooUnavailable
        );
        assert_eq!(
            delivery_cause(Some("permanent"), None, true),
            Cause::OdooValidation
        );
        assert_eq!(
            delivery_cause(Some("credential"), Some(401), true),
            Cause::CredentialExpiry
        );
        assert_eq!(
            delivery_cause(Some("permanent"), Some(422), false),
            Cause::MappingDrift
        );
    }
}
