//! One workflow instance: the steps an order (or any business object) has reached across
//! systems, its state against the SLAs of its definition, and the findings raised on it.
//!
//! This is the monitor's pure core: no I/O and no clock. The caller passes business time
//! in, and every change returns the findings it raised, so the same instance gives the same
//! answer whether it is driven live, replayed after a restart, or merged with another.
//! Each (step, kind) finding is raised at most once per instance; timers are not stored
//! anywhere but derived from the instance ([`Instance::next_due`]), so persisting the
//! instance persists its timers.

use crate::sources::BusinessKey;
use crate::workflows::Workflow;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Where an instance stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    OnTrack,
    AtRisk,
    Breached,
    Stalled,
    /// Every required step reached, none after its SLA.
    Completed,
    /// Every required step reached, at least one after its SLA.
    CompletedLate,
    Cancelled,
}

impl InstanceState {
    pub const ALL: [InstanceState; 7] = [
        InstanceState::OnTrack,
        InstanceState::AtRisk,
        InstanceState::Breached,
        InstanceState::Stalled,
        InstanceState::Completed,
        InstanceState::CompletedLate,
        InstanceState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::OnTrack => "on_track",
            InstanceState::AtRisk => "at_risk",
            InstanceState::Breached => "breached",
            InstanceState::Stalled => "stalled",
            InstanceState::Completed => "completed",
            InstanceState::CompletedLate => "completed_late",
            InstanceState::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<InstanceState> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    pub fn is_open(self) -> bool {
        !matches!(
            self,
            InstanceState::Completed | InstanceState::CompletedLate | InstanceState::Cancelled
        )
    }
}

/// What a finding says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// The step's warning threshold passed and it was not reached.
    AtRisk,
    /// The step's SLA passed and it was not reached.
    Breach,
    /// No step was reached for `stalled_after_seconds` (the step is the last one reached).
    Stalled,
    /// The step happened before a step it must follow.
    OutOfSequence,
    /// The step happened twice, from different events.
    Duplicate,
    /// A later step happened and this required one had not, `order_grace_seconds` later.
    Missing,
    /// A delivery of one of the instance's events was dead-lettered.
    DeliveryFailed,
    // ---- batch monitors: about a run (step "run") ----
    /// A scheduled run did not start within its grace period (or too few ran in a window).
    MissedRun,
    /// A run started after its scheduled time plus the grace period.
    LateRun,
    /// A run started and did not finish within its maximum duration.
    NeverFinished,
    /// A run reported failure.
    RunFailed,
    /// A run succeeded with a record count outside the expected range.
    CountOutOfRange,
    // ---- reconciliations: about a record (step = its key) in a run ----
    /// Both systems have the record, with values further apart than the tolerance.
    Mismatch,
    /// The other system has the record, Odoo does not.
    MissingInOdoo,
    /// Odoo has the record, the other system does not.
    MissingInOther,
}

impl FindingKind {
    pub const ALL: [FindingKind; 15] = [
        FindingKind::AtRisk,
        FindingKind::Breach,
        FindingKind::Stalled,
        FindingKind::OutOfSequence,
        FindingKind::Duplicate,
        FindingKind::Missing,
        FindingKind::DeliveryFailed,
        FindingKind::MissedRun,
        FindingKind::LateRun,
        FindingKind::NeverFinished,
        FindingKind::RunFailed,
        FindingKind::CountOutOfRange,
        FindingKind::Mismatch,
        FindingKind::MissingInOdoo,
        FindingKind::MissingInOther,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::AtRisk => "at_risk",
            FindingKind::Breach => "breach",
            FindingKind::Stalled => "stalled",
            FindingKind::OutOfSequence => "out_of_sequence",
            FindingKind::Duplicate => "duplicate",
            FindingKind::Missing => "missing",
            FindingKind::DeliveryFailed => "delivery_failed",
            FindingKind::MissedRun => "missed_run",
            FindingKind::LateRun => "late_run",
            FindingKind::NeverFinished => "never_finished",
            FindingKind::RunFailed => "run_failed",
            FindingKind::CountOutOfRange => "count_out_of_range",
            FindingKind::Mismatch => "mismatch",
            FindingKind::MissingInOdoo => "missing_in_odoo",
            FindingKind::MissingInOther => "missing_in_other",
        }
    }

    pub fn parse(s: &str) -> Option<FindingKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// An event that reached a step of the instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hit {
    pub step: String,
    /// The event's place in the log (`events.seq`).
    pub seq: i64,
    /// The event's CloudEvents `source` and `id`.
    pub source: String,
    pub id: String,
    #[serde(rename = "type")]
    pub ty: String,
    /// When it happened in its system: the event's `time`, never later than its receipt.
    pub occurred_at: DateTime<Utc>,
    /// When Switchyard received it (business time).
    pub received_at: DateTime<Utc>,
}

/// An event named as evidence of a finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    pub seq: i64,
    pub source: String,
    pub id: String,
}

impl From<&Hit> for Evidence {
    fn from(h: &Hit) -> Self {
        Evidence {
            seq: h.seq,
            source: h.source.clone(),
            id: h.id.clone(),
        }
    }
}

/// Something wrong with an instance, raised once per (step, kind).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub step: String,
    pub kind: FindingKind,
    /// The instant it became true (the SLA instant for a breach), not when it was noticed.
    pub at: DateTime<Utc>,
    /// In business terms: "order #1042: step "invoiced" not reached 10m after "shipped"…".
    pub message: String,
    pub evidence: Vec<Evidence>,
}

/// One instance of a workflow (see the module documentation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub workflow: String,
    /// The definition version it started under; it keeps that version's SLAs.
    pub version: String,
    /// The value of the workflow's key once an event carried it; until then the instance is
    /// provisional, known only by other keys.
    pub key: Option<String>,
    /// Every key (of the workflow's key names) its events carried, sorted.
    pub aliases: Vec<BusinessKey>,
    pub state: InstanceState,
    /// When its first step happened.
    pub started_at: DateTime<Utc>,
    /// When a step was last reached for the first time (received time): stalls count from it.
    pub progressed_at: DateTime<Utc>,
    pub closed_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dimensions: BTreeMap<String, String>,
    /// Every event that reached a step, in the order applied.
    pub hits: Vec<Hit>,
    /// Findings raised so far, as (step, kind): each is raised once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub raised: Vec<(String, FindingKind)>,
}

/// A timer of an instance: at `at`, a finding of `kind` about step `step` (by index in
/// the instance's workflow version).
struct Timer {
    at: DateTime<Utc>,
    kind: FindingKind,
    step: usize,
    /// `missing`: the step that arrived without it.
    cause: Option<usize>,
}

/// What happened to an instance when an event was applied.
#[derive(Debug, Default)]
pub struct Applied {
    pub findings: Vec<Finding>,
    /// The event had been applied before (a replay after a restart): nothing changed.
    pub repeat: bool,
}

fn human(d: Duration) -> String {
    let s = d.num_seconds();
    if s % 86_400 == 0 && s >= 86_400 {
        format!("{}d", s / 86_400)
    } else if s % 3600 == 0 && s >= 3600 {
        format!("{}h", s / 3600)
    } else if s % 60 == 0 && s >= 60 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

impl Instance {
    /// A new instance started by `hit` under `wf`.
    pub fn start(wf: &Workflow, hit: &Hit, aliases: Vec<BusinessKey>) -> Instance {
        let mut i = Instance {
            workflow: wf.name.clone(),
            version: wf.version.clone(),
            key: None,
            aliases: Vec::new(),
            state: InstanceState::OnTrack,
            started_at: hit.occurred_at,
            progressed_at: hit.received_at,
            closed_at: None,
            dimensions: BTreeMap::new(),
            hits: Vec::new(),
            raised: Vec::new(),
        };
        i.add_aliases(wf, aliases);
        i
    }

    /// How people name it: the workflow key's value, or another key while provisional.
    pub fn label(&self) -> String {
        match (&self.key, self.aliases.first()) {
            (Some(k), _) => k.clone(),
            (None, Some(a)) => format!("{} {}", a.name, a.value),
            (None, None) => "?".into(),
        }
    }

    pub fn is_open(&self) -> bool {
        self.state.is_open()
    }

    fn has_raised(&self, step: &str, kind: FindingKind) -> bool {
        self.raised.iter().any(|(s, k)| s == step && *k == kind)
    }

    fn first_hit(&self, step: &str) -> Option<&Hit> {
        self.hits
            .iter()
            .filter(|h| h.step == step)
            .min_by_key(|h| (h.occurred_at, h.seq))
    }

    /// Adds keys the instance's events carried (names the workflow uses only).
    pub fn add_aliases(&mut self, wf: &Workflow, aliases: impl IntoIterator<Item = BusinessKey>) {
        for a in aliases {
            if !wf.keys.contains(&a.name) {
                continue;
            }
            if a.name == wf.key && self.key.is_none() {
                self.key = Some(a.value.clone());
            }
            if let Err(at) = self.aliases.binary_search(&a) {
                self.aliases.insert(at, a);
            }
        }
    }

    /// Keeps the first value seen of each dimension.
    pub fn add_dimensions(&mut self, values: impl IntoIterator<Item = (String, String)>) {
        for (k, v) in values {
            self.dimensions.entry(k).or_insert(v);
        }
    }

    /// When the SLA of step `i` starts running, if it has.
    fn anchor(&self, wf: &Workflow, i: usize) -> Option<DateTime<Utc>> {
        match wf.steps[i].from {
            None => Some(self.started_at),
            Some(j) => self.first_hit(&wf.steps[j].name).map(|h| h.occurred_at),
        }
    }

    /// The step reached last (received time), which a stall is reported against.
    fn last_step(&self) -> Option<&str> {
        self.hits
            .iter()
            .max_by_key(|h| (h.received_at, h.seq))
            .map(|h| h.step.as_str())
    }

    /// Every timer of the instance that has not fired, cheaply (no text): when, what, and
    /// the step it is about (for `missing`, the step that arrived without it).
    fn timers(&self, wf: &Workflow) -> Vec<Timer> {
        let mut out = Vec::new();
        if !self.is_open() {
            return out;
        }
        for (i, step) in wf.steps.iter().enumerate() {
            if self.first_hit(&step.name).is_some() {
                continue;
            }
            let Some(anchor) = self.anchor(wf, i) else {
                continue;
            };
            if let (Some(warn), Some(_)) = (step.warn, step.sla)
                && !self.has_raised(&step.name, FindingKind::AtRisk)
            {
                out.push(Timer {
                    at: anchor + warn,
                    kind: FindingKind::AtRisk,
                    step: i,
                    cause: None,
                });
            }
            if let Some(sla) = step.sla
                && !self.has_raised(&step.name, FindingKind::Breach)
            {
                out.push(Timer {
                    at: anchor + sla,
                    kind: FindingKind::Breach,
                    step: i,
                    cause: None,
                });
            }
        }
        if let (Some(after), Some(last)) = (wf.stalled_after, self.last_step())
            && !self.has_raised(last, FindingKind::Stalled)
            && let Some(i) = wf.step(last)
        {
            out.push(Timer {
                at: self.progressed_at + after,
                kind: FindingKind::Stalled,
                step: i,
                cause: None,
            });
        }
        for (i, step) in wf.steps.iter().enumerate() {
            let Some(hit) = self.first_hit(&step.name) else {
                continue;
            };
            for &p in &step.after {
                let prior = &wf.steps[p];
                if prior.required
                    && self.first_hit(&prior.name).is_none()
                    && !self.has_raised(&prior.name, FindingKind::Missing)
                    && !out
                        .iter()
                        .any(|t| t.kind == FindingKind::Missing && t.step == p)
                {
                    out.push(Timer {
                        at: hit.received_at + wf.order_grace,
                        kind: FindingKind::Missing,
                        step: p,
                        cause: Some(i),
                    });
                }
            }
        }
        out
    }

    /// The finding a timer raises, in words, with its evidence.
    fn describe(&self, wf: &Workflow, t: &Timer) -> Finding {
        let label = self.label();
        let step = &wf.steps[t.step];
        let from = || match step.from {
            None => "the start".to_string(),
            Some(j) => format!("\"{}\"", wf.steps[j].name),
        };
        let anchor_evidence = || -> Vec<Evidence> {
            match step.from {
                None => self.hits.iter().take(1).map(Evidence::from).collect(),
                Some(j) => self
                    .first_hit(&wf.steps[j].name)
                    .map(Evidence::from)
                    .into_iter()
                    .collect(),
            }
        };
        let (message, evidence) = match t.kind {
            FindingKind::AtRisk => (
                format!(
                    "{} {label}: step \"{}\" not reached {} after {}; SLA {}",
                    wf.title,
                    step.name,
                    human(step.warn.unwrap_or_default()),
                    from(),
                    human(step.sla.unwrap_or_default())
                ),
                anchor_evidence(),
            ),
            FindingKind::Breach => (
                format!(
                    "{} {label}: step \"{}\" not reached within {} of {} (SLA breached)",
                    wf.title,
                    step.name,
                    human(step.sla.unwrap_or_default()),
                    from()
                ),
                anchor_evidence(),
            ),
            FindingKind::Stalled => (
                format!(
                    "{} {label}: no progress for {} since step \"{}\"",
                    wf.title,
                    human(wf.stalled_after.unwrap_or_default()),
                    step.name
                ),
                self.hits
                    .iter()
                    .filter(|h| h.step == step.name)
                    .map(Evidence::from)
                    .collect(),
            ),
            _ => {
                let cause = &wf.steps[t.cause.unwrap_or(t.step)].name;
                (
                    format!(
                        "{} {label}: step \"{cause}\" happened but \"{}\", which must come first, did not",
                        wf.title, step.name
                    ),
                    self.first_hit(cause)
                        .map(Evidence::from)
                        .into_iter()
                        .collect(),
                )
            }
        };
        Finding {
            step: step.name.clone(),
            kind: t.kind,
            at: t.at,
            message,
            evidence,
        }
    }

    /// The next instant a timer of this instance fires, if any: the instance is persisted
    /// with it, so timers survive restarts and move with the instance.
    pub fn next_due(&self, wf: &Workflow) -> Option<DateTime<Utc>> {
        self.timers(wf).into_iter().map(|t| t.at).min()
    }

    /// Fires every timer due at or before `now`, in time order.
    pub fn advance(&mut self, wf: &Workflow, now: DateTime<Utc>) -> Vec<Finding> {
        let mut due: Vec<Timer> = self
            .timers(wf)
            .into_iter()
            .filter(|t| t.at <= now)
            .collect();
        if due.is_empty() {
            return Vec::new();
        }
        due.sort_by_key(|t| t.at);
        let found: Vec<Finding> = due.iter().map(|t| self.describe(wf, t)).collect();
        for f in &found {
            self.raised.push((f.step.clone(), f.kind));
        }
        self.refresh_state(wf);
        found
    }

    /// Applies an event that reached step `hit.step`. Fires the timers due before the step
    /// happened first, so the outcome does not depend on when the monitor got to it; a
    /// step that happened in time but arrived after its SLA was already reported breached
    /// keeps that finding (it was true as far as anyone could know).
    pub fn apply(&mut self, wf: &Workflow, hit: Hit) -> Applied {
        if self.hits.iter().any(|h| h.seq == hit.seq) {
            return Applied {
                findings: Vec::new(),
                repeat: true,
            };
        }
        let mut findings = self.advance(wf, hit.occurred_at);
        let new_step = self.first_hit(&hit.step).is_none();
        if new_step {
            self.progressed_at = self.progressed_at.max(hit.received_at);
        }
        self.started_at = self.started_at.min(hit.occurred_at);
        self.hits.push(hit);
        findings.extend(self.check_order(wf));
        self.refresh_state(wf);
        Applied {
            findings,
            repeat: false,
        }
    }

    /// Cancels an open instance (a configured cancel event). Nothing fires after this.
    pub fn cancel(&mut self, wf: &Workflow, at: DateTime<Utc>) -> Vec<Finding> {
        let findings = self.advance(wf, at);
        if self.is_open() {
            self.state = InstanceState::Cancelled;
            self.closed_at = Some(at);
        }
        findings
    }

    /// Takes another instance of the same workflow in: a linking event showed that both are
    /// the same order. Its events, keys, findings and dimensions join this one; its timers
    /// follow because they are derived from the events.
    pub fn absorb(&mut self, wf: &Workflow, other: Instance) -> Vec<Finding> {
        for h in other.hits {
            if !self.hits.iter().any(|x| x.seq == h.seq) {
                self.hits.push(h);
            }
        }
        for r in other.raised {
            if !self.raised.contains(&r) {
                self.raised.push(r);
            }
        }
        self.add_aliases(wf, other.aliases);
        if self.key.is_none() {
            self.key = other.key;
        }
        self.add_dimensions(other.dimensions);
        self.started_at = self.started_at.min(other.started_at);
        self.progressed_at = self.progressed_at.max(other.progressed_at);
        if other.state == InstanceState::Cancelled && self.is_open() {
            self.state = InstanceState::Cancelled;
            self.closed_at = other.closed_at;
        }
        let findings = self.check_order(wf);
        self.refresh_state(wf);
        findings
    }

    /// Records that a delivery of the instance's event `seq` was dead-lettered.
    pub fn delivery_failed(
        &mut self,
        wf: &Workflow,
        seq: i64,
        flow: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Option<Finding> {
        let hit = self.hits.iter().find(|h| h.seq == seq)?.clone();
        if self.has_raised(&hit.step, FindingKind::DeliveryFailed) {
            return None;
        }
        self.raised
            .push((hit.step.clone(), FindingKind::DeliveryFailed));
        Some(Finding {
            step: hit.step.clone(),
            kind: FindingKind::DeliveryFailed,
            at,
            message: format!(
                "{} {}: the event of step \"{}\" could not be delivered by flow \"{flow}\": {reason}",
                wf.title,
                self.label(),
                hit.step
            ),
            evidence: vec![Evidence::from(&hit)],
        })
    }

    /// Duplicates and steps out of sequence among the hits, not raised before.
    fn check_order(&mut self, wf: &Workflow) -> Vec<Finding> {
        let mut out = Vec::new();
        let label = self.label();
        for step in &wf.steps {
            let hits: Vec<&Hit> = self.hits.iter().filter(|h| h.step == step.name).collect();
            if !step.repeats
                && hits.len() > 1
                && !self.has_raised(&step.name, FindingKind::Duplicate)
            {
                let at = hits.iter().map(|h| h.received_at).max().expect("two hits");
                out.push(Finding {
                    step: step.name.clone(),
                    kind: FindingKind::Duplicate,
                    at,
                    message: format!(
                        "{} {label}: step \"{}\" happened {} times (events {})",
                        wf.title,
                        step.name,
                        hits.len(),
                        hits.iter()
                            .map(|h| h.id.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    evidence: hits.iter().map(|h| Evidence::from(*h)).collect(),
                });
            }
            let Some(first) = hits.iter().min_by_key(|h| (h.occurred_at, h.seq)) else {
                continue;
            };
            if self.has_raised(&step.name, FindingKind::OutOfSequence) {
                continue;
            }
            for &p in &step.after {
                let prior = &wf.steps[p];
                if let Some(ph) = self.first_hit(&prior.name)
                    && ph.occurred_at > first.occurred_at
                {
                    out.push(Finding {
                        step: step.name.clone(),
                        kind: FindingKind::OutOfSequence,
                        at: ph.received_at.max(first.received_at),
                        message: format!(
                            "{} {label}: step \"{}\" happened before \"{}\", which must come first",
                            wf.title, step.name, prior.name
                        ),
                        evidence: vec![Evidence::from(*first), Evidence::from(ph)],
                    });
                    break;
                }
            }
        }
        for f in &out {
            self.raised.push((f.step.clone(), f.kind));
        }
        out
    }

    /// The state from the steps reached and the findings raised.
    fn refresh_state(&mut self, wf: &Workflow) {
        if self.state == InstanceState::Cancelled {
            return;
        }
        let complete = wf
            .steps
            .iter()
            .filter(|s| s.required)
            .all(|s| self.first_hit(&s.name).is_some());
        if complete {
            if self.closed_at.is_none() {
                self.closed_at = self.hits.iter().map(|h| h.received_at).max();
            }
            let late = wf
                .steps
                .iter()
                .any(|s| self.has_raised(&s.name, FindingKind::Breach));
            self.state = if late {
                InstanceState::CompletedLate
            } else {
                InstanceState::Completed
            };
            return;
        }
        let open = |s: &&crate::workflows::Step| self.first_hit(&s.name).is_none();
        self.state = if wf
            .steps
            .iter()
            .filter(open)
            .any(|s| self.has_raised(&s.name, FindingKind::Breach))
        {
            InstanceState::Breached
        } else if self
            .last_step()
            .is_some_and(|l| self.has_raised(l, FindingKind::Stalled))
        {
            InstanceState::Stalled
        } else if wf
            .steps
            .iter()
            .filter(open)
            .any(|s| self.has_raised(&s.name, FindingKind::AtRisk))
        {
            InstanceState::AtRisk
        } else {
            InstanceState::OnTrack
        };
    }

    /// The open breach of the instance: (step, SLA instant), the earliest when several.
    pub fn breach(&self, wf: &Workflow) -> Option<(String, DateTime<Utc>)> {
        wf.steps
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                self.first_hit(&s.name).is_none() && self.has_raised(&s.name, FindingKind::Breach)
            })
            .filter_map(|(i, s)| Some((s.name.clone(), self.anchor(wf, i)? + s.sla?)))
            .min_by_key(|(_, at)| *at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflows::Workflows;

    fn wf() -> Workflow {
        let text = r#"
[[sources]]
name = "shop"
kind = "cloudevents"
source = "shop"
keys = { shop_order = ".data.number" }
[[sources]]
name = "odoo"
kind = "cloudevents"
source = "odoo"
keys = { shop_order = ".data.origin", sale_order = ".data.name" }
[[sources]]
name = "wms"
kind = "cloudevents"
source = "wms"
keys = { sale_order = ".data.order" }

[[workflows]]
name = "o2c"
title = "Order"
criticality = "P2"
key = "shop_order"
stalled_after_seconds = 3600
order_grace_seconds = 30
[[workflows.steps]]
name = "ordered"
source = "shop"
type = "order.created"
[[workflows.steps]]
name = "confirmed"
source = "odoo"
type = "sale.confirmed"
sla_seconds = 600
warn_seconds = 300
after = ["ordered"]
[[workflows.steps]]
name = "shipped"
source = "wms"
type = "shipped"
key = "sale_order"
after = ["confirmed"]
[[workflows.steps]]
name = "invoiced"
source = "odoo"
type = "invoice.posted"
key = "sale_order"
from = "shipped"
sla_seconds = 600
after = ["shipped"]
"#;
        let c = crate::Config::parse(text, "t", []).unwrap();
        Workflows::compile(&c).unwrap().list[0].as_ref().clone()
    }

    fn t(min: i64) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-24T08:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
            + Duration::minutes(min)
    }

    fn hit(step: &str, seq: i64, occurred: i64, received: i64) -> Hit {
        Hit {
            step: step.into(),
            seq,
            source: "s".into(),
            id: format!("e{seq}"),
            ty: "t".into(),
            occurred_at: t(occurred),
            received_at: t(received),
        }
    }

    fn kinds(f: &[Finding]) -> Vec<(&str, FindingKind)> {
        f.iter().map(|f| (f.step.as_str(), f.kind)).collect()
    }

    #[test]
    fn timers_fire_once_at_their_instants_and_not_after_completion_in_time() {
        let w = wf();
        let h = hit("ordered", 1, 0, 0);
        let mut i = Instance::start(&w, &h, vec![BusinessKey::new("shop_order", "#1")]);
        i.apply(&w, h);
        assert_eq!(i.key.as_deref(), Some("#1"));
        assert_eq!(i.next_due(&w), Some(t(5)));
        assert!(i.advance(&w, t(5) - Duration::seconds(1)).is_empty());
        let f = i.advance(&w, t(5));
        assert_eq!(kinds(&f), [("confirmed", FindingKind::AtRisk)]);
        assert_eq!(f[0].at, t(5));
        assert_eq!(i.state, InstanceState::AtRisk);
        assert!(i.advance(&w, t(5)).is_empty(), "raised once");
        let f = i.advance(&w, t(12));
        assert_eq!(kinds(&f), [("confirmed", FindingKind::Breach)]);
        assert_eq!(f[0].at, t(10));
        assert_eq!(i.state, InstanceState::Breached);
        assert_eq!(i.breach(&w), Some(("confirmed".into(), t(10))));

        // In time: nothing but completion.
        let h = hit("ordered", 1, 0, 0);
        let mut j = Instance::start(&w, &h, vec![]);
        j.apply(&w, h);
        for (s, seq, m) in [("confirmed", 2, 4), ("shipped", 3, 20), ("invoiced", 4, 25)] {
            let a = j.apply(&w, hit(s, seq, m, m));
            assert!(a.findings.is_empty(), "{s}: {:?}", a.findings);
        }
        assert_eq!(j.state, InstanceState::Completed);
        assert_eq!(j.next_due(&w), None);
        assert!(j.advance(&w, t(10_000)).is_empty());
    }

    #[test]
    fn stalled_missing_out_of_sequence_and_duplicate() {
        let w = wf();
        let h = hit("ordered", 1, 0, 0);
        let mut i = Instance::start(&w, &h, vec![]);
        i.apply(&w, h);
        i.apply(&w, hit("confirmed", 2, 1, 1));
        // stalled an hour after the last progress
        assert_eq!(i.next_due(&w), Some(t(61)));
        let f = i.advance(&w, t(61));
        assert_eq!(kinds(&f), [("confirmed", FindingKind::Stalled)]);
        assert_eq!(i.state, InstanceState::Stalled);
        // invoice without a shipment: missing after the grace, not before
        let a = i.apply(&w, hit("invoiced", 3, 70, 70));
        assert!(a.findings.is_empty());
        assert_eq!(i.state, InstanceState::OnTrack);
        let f = i.advance(&w, t(70) + Duration::seconds(30));
        assert_eq!(kinds(&f), [("shipped", FindingKind::Missing)]);
        // the shipment comes later and happened later: out of sequence
        let a = i.apply(&w, hit("shipped", 4, 75, 75));
        assert_eq!(
            kinds(&a.findings),
            [("invoiced", FindingKind::OutOfSequence)]
        );
        assert_eq!(i.state, InstanceState::Completed);
        // a second order confirmation from another event: duplicate, once
        let a = i.apply(&w, hit("confirmed", 5, 80, 80));
        assert_eq!(kinds(&a.findings), [("confirmed", FindingKind::Duplicate)]);
        assert!(i.apply(&w, hit("confirmed", 6, 81, 81)).findings.is_empty());
        // the same event again changes nothing
        assert!(i.apply(&w, hit("confirmed", 5, 80, 80)).repeat);
    }

    #[test]
    fn late_arrival_of_an_earlier_step_within_the_grace_is_not_a_finding() {
        let w = wf();
        let h = hit("ordered", 1, 0, 0);
        let mut i = Instance::start(&w, &h, vec![]);
        i.apply(&w, h);
        // the shipment arrives before the confirmation, which happened first
        i.apply(&w, hit("shipped", 2, 3, 4));
        let a = i.apply(&w, hit("confirmed", 3, 2, 4));
        assert!(a.findings.is_empty(), "{:?}", a.findings);
        assert!(i.advance(&w, t(5)).is_empty(), "no missing, no at-risk");
    }

    #[test]
    fn merging_keeps_findings_and_timers_of_both() {
        let w = wf();
        // the WMS ships sale order S1 before any event links S1 to shop order #1
        let s = hit("shipped", 10, 20, 20);
        let mut wms = Instance::start(&w, &s, vec![BusinessKey::new("sale_order", "S1")]);
        wms.apply(&w, s);
        assert_eq!(wms.key, None);
        // "confirmed" must come before "shipped": missing after the 30 s grace
        assert_eq!(wms.next_due(&w), Some(t(20) + Duration::seconds(30)));
        let o = hit("ordered", 1, 0, 0);
        let mut shop = Instance::start(&w, &o, vec![BusinessKey::new("shop_order", "#1")]);
        shop.apply(&w, o);
        shop.advance(&w, t(12)); // at risk + breach of "confirmed"
        let f = shop.absorb(&w, wms);
        assert!(f.is_empty());
        assert_eq!(shop.key.as_deref(), Some("#1"));
        assert_eq!(shop.aliases.len(), 2);
        assert_eq!(shop.next_due(&w), Some(t(20) + Duration::seconds(30)));
        assert_eq!(shop.state, InstanceState::Breached);
        let a = shop.apply(&w, hit("confirmed", 11, 21, 21));
        assert_eq!(
            kinds(&a.findings),
            [
                ("confirmed", FindingKind::Missing),
                ("shipped", FindingKind::OutOfSequence)
            ]
        );
        // the invoice's SLA runs from the shipment the WMS instance brought
        assert_eq!(shop.next_due(&w), Some(t(28)));
    }
}
