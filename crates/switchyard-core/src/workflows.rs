//! Workflow definitions: which events make up a business workflow across systems, how its
//! instances are identified by business keys, and the SLA of each step.
//!
//! `[[workflows]]` is compiled once (jq programs, globs, references to sources, steps and
//! keys, the step order), so `switchyard check` reports a broken definition with its
//! position and the monitor never meets a configuration error. A compiled [`Workflow`]
//! carries its `version`: a hash of its definition, recorded by every instance that starts
//! under it, so a changed definition applies to new instances only.

use crate::config::Config;
use crate::jq::{Jq, Prepared, as_text};
use crate::sources::Sources;
use chrono::Duration;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WorkflowConfig {
    /// Unique name (`order_to_cash`).
    pub name: String,
    /// What people call it ("Shop order to invoice"); defaults to the name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Business criticality, P1 (highest) to P4; alert severity follows it.
    pub criticality: Criticality,
    /// The business key that names an instance (`shop_order`). Steps reached through other
    /// keys (`sale_order`, `picking`) join the instance once an event links the two.
    pub key: String,
    /// Grouping dimensions: name → jq over the events (`.data.warehouse`); the first
    /// non-null text value an instance's events yield is kept.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dimensions: BTreeMap<String, String>,
    /// An open instance with no new step for this long is stalled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stalled_after_seconds: Option<u64>,
    /// How long a step that arrived before a step it must follow waits for that step (events
    /// from different systems arrive out of order) before the earlier step is missing.
    #[serde(default = "default_order_grace")]
    pub order_grace_seconds: u64,
    /// Events that cancel an open instance (an order cancelled in the shop or in Odoo).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cancel: Vec<EventMatchConfig>,
    pub steps: Vec<StepConfig>,
}

fn default_order_grace() -> u64 {
    60
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
pub enum Criticality {
    P1,
    P2,
    P3,
    P4,
}

impl Criticality {
    pub fn as_str(self) -> &'static str {
        match self {
            Criticality::P1 => "P1",
            Criticality::P2 => "P2",
            Criticality::P3 => "P3",
            Criticality::P4 => "P4",
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StepConfig {
    pub name: String,
    /// The declared source (`[[sources]] name`) whose events reach this step.
    pub source: String,
    /// CloudEvents `type`, exactly or as a glob.
    #[serde(rename = "type")]
    pub ty: String,
    /// Optional jq condition over the event: the step is reached only when it yields `true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// The business key (from the source's `keys`) that leads to the instance; default the
    /// workflow's `key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The step must be reached within this many seconds of `from`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sla_seconds: Option<u64>,
    /// At risk when not reached this many seconds after `from` (default: 80 % of the SLA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warn_seconds: Option<u64>,
    /// `start` (the instance's first step) or the name of the step the SLA runs from.
    #[serde(default = "default_from")]
    pub from: String,
    /// The instance is complete when every required step is reached.
    #[serde(default = "default_true")]
    pub required: bool,
    /// Steps that must happen before this one (out of sequence otherwise).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
    /// The step may happen more than once (partial shipments); otherwise a second event is
    /// a duplicate.
    #[serde(default)]
    pub repeats: bool,
}

fn default_from() -> String {
    "start".into()
}
fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EventMatchConfig {
    pub source: String,
    #[serde(rename = "type")]
    pub ty: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// Matches events by declared source, type glob and an optional jq condition.
#[derive(Debug, Clone)]
pub struct EventMatch {
    pub source: String,
    pub types: globset::GlobMatcher,
    pub condition: Option<Jq>,
    /// The key through which the event reaches its instance.
    pub key: String,
}

impl EventMatch {
    /// Whether an event of declared source `source` (its `Sources::label_for`) matches.
    /// A failing condition is a "no".
    pub fn matches(&self, source: &str, ty: &str, event: &Prepared) -> bool {
        self.source == source
            && self.types.is_match(ty)
            && self.condition.as_ref().is_none_or(|c| {
                c.run_prepared(event, &[])
                    .is_ok_and(|out| out.first() == Some(&Value::Bool(true)))
            })
    }
}

/// A compiled step.
#[derive(Debug, Clone)]
pub struct Step {
    pub name: String,
    pub on: EventMatch,
    pub sla: Option<Duration>,
    pub warn: Option<Duration>,
    /// The step the SLA runs from; `None` is the instance's start.
    pub from: Option<usize>,
    pub required: bool,
    /// Indices of the steps that must come first.
    pub after: Vec<usize>,
    pub repeats: bool,
}

/// A compiled workflow definition of one version.
#[derive(Debug, Clone)]
pub struct Workflow {
    pub name: String,
    pub title: String,
    pub version: String,
    pub criticality: Criticality,
    pub key: String,
    pub steps: Vec<Step>,
    pub dimensions: Vec<(String, Jq)>,
    pub stalled_after: Option<Duration>,
    pub order_grace: Duration,
    pub cancel: Vec<EventMatch>,
    /// Every key name that links an event to an instance: `key` and each step's and cancel
    /// match's key.
    pub keys: BTreeSet<String>,
    /// The definition this was compiled from (stored with the version).
    pub definition: Value,
}

/// What an event is to a workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Step(usize),
    Cancel,
}

impl Workflow {
    /// The first step (in definition order) the event reaches, or a cancel match.
    pub fn role(&self, source: &str, ty: &str, event: &Prepared) -> Option<(Role, &str)> {
        self.steps
            .iter()
            .enumerate()
            .find(|(_, s)| s.on.matches(source, ty, event))
            .map(|(i, s)| (Role::Step(i), s.on.key.as_str()))
            .or_else(|| {
                self.cancel
                    .iter()
                    .find(|c| c.matches(source, ty, event))
                    .map(|c| (Role::Cancel, c.key.as_str()))
            })
    }

    /// Whether any step or cancel match could select events of this declared source and type
    /// (cheap: no jq), to skip events no workflow cares about.
    pub fn may_match(&self, source: &str, ty: &str) -> bool {
        self.steps
            .iter()
            .map(|s| &s.on)
            .chain(&self.cancel)
            .any(|m| m.source == source && m.types.is_match(ty))
    }

    /// The dimension values an event yields (non-null text only).
    pub fn dimension_values(&self, event: &Prepared) -> Vec<(String, String)> {
        self.dimensions
            .iter()
            .filter_map(|(name, jq)| {
                let out = jq.run_prepared(event, &[]).ok()?;
                let text = out.first().and_then(as_text)?;
                Some((name.clone(), text))
            })
            .collect()
    }

    pub fn step(&self, name: &str) -> Option<usize> {
        self.steps.iter().position(|s| s.name == name)
    }

    /// Compiles a stored definition (a version some open instance started under). Source and
    /// key references were checked when that version was current and are not checked again.
    pub fn from_definition(definition: &Value) -> Result<Workflow, String> {
        let wc: WorkflowConfig = serde_json::from_value(definition.clone())
            .map_err(|e| format!("stored workflow definition: {e}"))?;
        compile_one(&wc, None).map_err(|problems| {
            problems
                .into_iter()
                .map(|(k, m)| format!("{k}: {m}"))
                .collect::<Vec<_>>()
                .join("; ")
        })
    }
}

/// Every `[[workflows]]` of a configuration, compiled.
#[derive(Debug, Clone, Default)]
pub struct Workflows {
    pub list: Vec<Arc<Workflow>>,
}

impl Workflows {
    /// Compiles `[[workflows]]` against the declared sources; every problem as
    /// (`workflows[i].key`, message).
    pub fn compile(config: &Config) -> Result<Workflows, Vec<(String, String)>> {
        let sources = Sources::compile(config).ok();
        let mut problems = Vec::new();
        let mut names = HashSet::new();
        let mut list = Vec::new();
        for (i, wc) in config.workflows.iter().enumerate() {
            if !names.insert(wc.name.clone()) {
                problems.push((
                    format!("workflows[{i}].name"),
                    format!("\"{}\" is declared twice", wc.name),
                ));
            }
            match compile_one(wc, Some(sources.as_ref())) {
                Ok(w) => list.push(Arc::new(w)),
                Err(p) => problems.extend(
                    p.into_iter()
                        .map(|(k, m)| (format!("workflows[{i}].{k}"), m)),
                ),
            }
        }
        if problems.is_empty() {
            Ok(Workflows { list })
        } else {
            Err(problems)
        }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Workflow>> {
        self.list.iter().find(|w| w.name == name)
    }
}

/// A name of a workflow, step, batch monitor or reconciliation: 1 to 64 of a-z, 0-9, '-', '_'.
pub fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn glob(pattern: &str) -> Result<globset::GlobMatcher, String> {
    globset::GlobBuilder::new(pattern)
        .literal_separator(false)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| format!("bad glob \"{pattern}\": {e}"))
}

/// `sources`: `Some(None)` when the sources themselves failed to compile (their problems are
/// reported there, so references are not checked), `None` for a stored definition.
fn compile_one(
    wc: &WorkflowConfig,
    sources: Option<Option<&Sources>>,
) -> Result<Workflow, Vec<(String, String)>> {
    let mut problems: Vec<(String, String)> = Vec::new();
    if !is_name(&wc.name) {
        problems.push((
            "name".into(),
            "must be 1 to 64 of a-z, 0-9, '-' and '_'".into(),
        ));
    }
    let known_key = |name: &str| -> bool {
        match sources {
            Some(Some(s)) => s
                .all()
                .iter()
                .any(|src| src.keys.iter().any(|(k, _)| k == name)),
            _ => true,
        }
    };
    if !known_key(&wc.key) {
        problems.push((
            "key".into(),
            format!("no source declares the key \"{}\"", wc.key),
        ));
    }
    let compile_match = |at: &str,
                         source: &str,
                         ty: &str,
                         condition: &Option<String>,
                         key: &Option<String>,
                         problems: &mut Vec<(String, String)>|
     -> Option<EventMatch> {
        let key = key.clone().unwrap_or_else(|| wc.key.clone());
        let mut ok = true;
        if let Some(Some(s)) = sources {
            match s.all().iter().find(|src| src.name == source) {
                None => {
                    problems.push((
                        format!("{at}.source"),
                        format!("no source is named \"{source}\""),
                    ));
                    ok = false;
                }
                Some(src) if !src.keys.iter().any(|(k, _)| *k == key) => {
                    problems.push((
                        format!("{at}.key"),
                        format!("source \"{source}\" declares no key \"{key}\""),
                    ));
                    ok = false;
                }
                Some(_) => {}
            }
        }
        let types = glob(ty).map_err(|e| problems.push((format!("{at}.type"), e)));
        let condition = match condition.as_deref().map(|c| Jq::compile(c, &[])) {
            Some(Err(e)) => {
                problems.push((format!("{at}.condition"), e));
                return None;
            }
            Some(Ok(jq)) => Some(jq),
            None => None,
        };
        Some(EventMatch {
            source: source.to_string(),
            types: types.ok()?,
            condition,
            key,
        })
        .filter(|_| ok)
    };

    let mut step_names: BTreeMap<&str, usize> = BTreeMap::new();
    if wc.steps.is_empty() {
        problems.push(("steps".into(), "a workflow needs at least one step".into()));
    }
    for (i, s) in wc.steps.iter().enumerate() {
        if !is_name(&s.name) || s.name == "start" {
            problems.push((
                format!("steps[{i}].name"),
                "must be 1 to 64 of a-z, 0-9, '-' and '_', and not \"start\"".into(),
            ));
        } else if step_names.insert(&s.name, i).is_some() {
            problems.push((
                format!("steps[{i}].name"),
                format!("step \"{}\" is declared twice", s.name),
            ));
        }
    }
    let mut steps = Vec::new();
    for (i, s) in wc.steps.iter().enumerate() {
        let at = format!("steps[{i}]");
        let on = compile_match(&at, &s.source, &s.ty, &s.condition, &s.key, &mut problems);
        let from = if s.from == "start" {
            None
        } else {
            match step_names.get(s.from.as_str()) {
                Some(&j) if j != i => Some(j),
                Some(_) => {
                    problems.push((format!("{at}.from"), "a step cannot run from itself".into()));
                    None
                }
                None => {
                    problems.push((
                        format!("{at}.from"),
                        format!("no step is named \"{}\" (or write \"start\")", s.from),
                    ));
                    None
                }
            }
        };
        let mut after = Vec::new();
        for (j, name) in s.after.iter().enumerate() {
            match step_names.get(name.as_str()) {
                Some(&k) if k != i => after.push(k),
                Some(_) => problems.push((
                    format!("{at}.after[{j}]"),
                    "a step cannot come after itself".into(),
                )),
                None => problems.push((
                    format!("{at}.after[{j}]"),
                    format!("no step is named \"{name}\""),
                )),
            }
        }
        let sla = s.sla_seconds.map(|v| Duration::seconds(v as i64));
        let warn = match (s.sla_seconds, s.warn_seconds) {
            (Some(0), _) => {
                problems.push((format!("{at}.sla_seconds"), "must be at least 1".into()));
                None
            }
            (None, Some(_)) => {
                problems.push((
                    format!("{at}.warn_seconds"),
                    "needs sla_seconds: the warning comes before the SLA".into(),
                ));
                None
            }
            (Some(sla), Some(w)) if w == 0 || w >= sla => {
                problems.push((
                    format!("{at}.warn_seconds"),
                    format!("must be between 1 and sla_seconds - 1 ({})", sla - 1),
                ));
                None
            }
            (Some(_), Some(w)) => Some(Duration::seconds(w as i64)),
            (Some(sla), None) => Some(Duration::milliseconds(sla as i64 * 800)),
            (None, None) => None,
        };
        if let Some(on) = on {
            steps.push(Step {
                name: s.name.clone(),
                on,
                sla,
                warn,
                from,
                required: s.required,
                after,
                repeats: s.repeats,
            });
        }
    }
    // The order steps must happen in (`after`, and `from`: an SLA runs from a step that
    // happened earlier) must not loop. Checked on the names, so a step with another problem
    // still takes part.
    let edges: Vec<Vec<usize>> = wc
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            s.after
                .iter()
                .chain(std::iter::once(&s.from))
                .filter_map(|n| step_names.get(n.as_str()).copied())
                .filter(|&j| j != i)
                .collect()
        })
        .collect();
    if let Some(cycle) = find_cycle(&edges) {
        let names: Vec<&str> = cycle.iter().map(|&i| wc.steps[i].name.as_str()).collect();
        problems.push((
            format!("steps[{}].after", cycle[0]),
            format!("the step order loops: {}", names.join(" → ")),
        ));
    }
    let mut cancel = Vec::new();
    for (i, c) in wc.cancel.iter().enumerate() {
        if let Some(m) = compile_match(
            &format!("cancel[{i}]"),
            &c.source,
            &c.ty,
            &c.condition,
            &c.key,
            &mut problems,
        ) {
            cancel.push(m);
        }
    }
    let mut dimensions = Vec::new();
    for (name, code) in &wc.dimensions {
        match Jq::compile(code, &[]) {
            Ok(jq) => dimensions.push((name.clone(), jq)),
            Err(e) => problems.push((format!("dimensions.{name}"), e)),
        }
    }
    if wc.stalled_after_seconds == Some(0) {
        problems.push(("stalled_after_seconds".into(), "must be at least 1".into()));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let definition = serde_json::to_value(wc).expect("a workflow definition serialises");
    let version = {
        let digest = Sha256::digest(definition.to_string().as_bytes());
        hex::encode(&digest[..6])
    };
    let mut keys: BTreeSet<String> = steps.iter().map(|s| s.on.key.clone()).collect();
    keys.extend(cancel.iter().map(|c| c.key.clone()));
    keys.insert(wc.key.clone());
    Ok(Workflow {
        name: wc.name.clone(),
        title: wc.title.clone().unwrap_or_else(|| wc.name.clone()),
        version,
        criticality: wc.criticality,
        key: wc.key.clone(),
        steps,
        dimensions,
        stalled_after: wc
            .stalled_after_seconds
            .map(|s| Duration::seconds(s as i64)),
        order_grace: Duration::seconds(wc.order_grace_seconds as i64),
        cancel,
        keys,
        definition,
    })
}

/// A loop in the "must come before" graph (each step's `after` and `from` steps), as step
/// indices.
fn find_cycle(steps: &[Vec<usize>]) -> Option<Vec<usize>> {
    fn visit(
        i: usize,
        steps: &[Vec<usize>],
        state: &mut [u8],
        path: &mut Vec<usize>,
    ) -> Option<Vec<usize>> {
        state[i] = 1;
        path.push(i);
        for &j in &steps[i] {
            match state[j] {
                1 => {
                    let start = path.iter().position(|&p| p == j).unwrap_or(0);
                    let mut cycle = path[start..].to_vec();
                    cycle.push(j);
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(j, steps, state, path) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        path.pop();
        state[i] = 2;
        None
    }
    let mut state = vec![0u8; steps.len()];
    for i in 0..steps.len() {
        if state[i] == 0
            && let Some(c) = visit(i, steps, &mut state, &mut Vec::new())
        {
            return Some(c);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(extra: &str) -> Result<Workflows, String> {
        let text = format!(
            r#"
[[sources]]
name = "shop"
kind = "cloudevents"
source = "https://shop.example"
keys = {{ shop_order = ".data.number" }}

[[sources]]
name = "odoo"
kind = "cloudevents"
source = "odoo://erp"
keys = {{ shop_order = ".data.origin", sale_order = ".data.name" }}
{extra}
"#
        );
        let config = Config::parse(&text, "t.toml", []).map_err(|e| e.to_string())?;
        Ok(Workflows::compile(&config).expect("parse compiles the workflows too"))
    }

    const GOOD: &str = r#"
[[workflows]]
name = "order_to_cash"
criticality = "P2"
key = "shop_order"
dimensions = { warehouse = ".data.warehouse" }

[[workflows.steps]]
name = "ordered"
source = "shop"
type = "order.created"

[[workflows.steps]]
name = "confirmed"
source = "odoo"
type = "sale.order.*"
key = "sale_order"
condition = '.data.state == "sale"'
sla_seconds = 600
after = ["ordered"]
"#;

    #[test]
    fn a_definition_compiles_with_its_keys_version_and_default_warning() {
        let w = compile(GOOD).unwrap();
        let w = &w.list[0];
        assert_eq!(
            w.keys.iter().map(String::as_str).collect::<Vec<_>>(),
            ["sale_order", "shop_order"]
        );
        assert_eq!(w.version.len(), 12);
        assert_eq!(w.steps[1].warn, Some(Duration::seconds(480)));
        assert_eq!(w.steps[1].after, vec![0]);
        let again = Workflow::from_definition(&w.definition).unwrap();
        assert_eq!(again.version, w.version);
        let ev = Prepared::new(&serde_json::json!({"data": {"state": "sale"}})).unwrap();
        assert_eq!(
            w.role("odoo", "sale.order.confirmed", &ev),
            Some((Role::Step(1), "sale_order"))
        );
        let draft = Prepared::new(&serde_json::json!({"data": {"state": "draft"}})).unwrap();
        assert_eq!(w.role("odoo", "sale.order.confirmed", &draft), None);
    }

    #[test]
    fn unknown_references_cycles_and_bad_thresholds_are_refused_with_their_position() {
        let bad = r#"
[[workflows]]
name = "w"
criticality = "P1"
key = "nope"

[[workflows.steps]]
name = "a"
source = "wms"
type = "x"
after = ["c"]

[[workflows.steps]]
name = "b"
source = "odoo"
type = "y"
key = "picking"
from = "zz"

[[workflows.steps]]
name = "c"
source = "shop"
type = "z"
sla_seconds = 10
warn_seconds = 10
"#;
        let err = compile(bad).unwrap_err();
        for needle in [
            "workflows[0].key",
            r#"no source declares the key "nope""#,
            "workflows[0].steps[0].source",
            r#"no source is named "wms""#,
            "workflows[0].steps[1].key",
            r#"declares no key "picking""#,
            "workflows[0].steps[1].from",
            "workflows[0].steps[2].warn_seconds",
        ] {
            assert!(err.contains(needle), "{needle} missing from {err}");
        }
        let cyclic = r#"
[[workflows]]
name = "w"
criticality = "P1"
key = "shop_order"
[[workflows.steps]]
name = "a"
source = "shop"
type = "x"
after = ["b"]
[[workflows.steps]]
name = "b"
source = "shop"
type = "y"
from = "a"
"#;
        let err = compile(cyclic).unwrap_err();
        assert!(err.contains("the step order loops: a → b → a"), "{err}");
    }
}
