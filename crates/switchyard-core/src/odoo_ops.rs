//! What a flow does in Odoo (`[flows.odoo]`): the operation an Odoo destination performs
//! with each mapped payload, compiled once with the flows.
//!
//! ```toml
//! [flows.odoo]                      # upsert a partner by external id (one `load` call)
//! model = "res.partner"
//! operation = "upsert"              # upsert | create | write | call
//! external_id = '"shop.customer_" + (.id | tostring)'   # jq over the mapped payload
//! values = "del(.id)"               # jq: the field values (default: the payload itself)
//!
//! [flows.odoo]                      # or by a business key: search, then create or write
//! model = "res.partner"
//! operation = "upsert"
//! key = ["ref"]
//!
//! [flows.odoo]                      # a method sequence: each step proves it already happened
//! operation = "call"
//! [[flows.odoo.steps]]
//! name = "order"                    # a lookup: no method, its record is `$steps.order`
//! model = "sale.order"
//! find = { domain = '[["name", "=", .order]]', fields = ["state"] }
//! [[flows.odoo.steps]]
//! name = "confirm"
//! model = "sale.order"
//! method = "action_confirm"
//! ids = "$steps.order.id"
//! done_when = { domain = '[["id", "=", $steps.order.id], ["state", "in", ["sale", "done"]]]' }
//! ```
//!
//! Every jq program here runs over the mapped payload; step programs also see `$steps`, the
//! records earlier steps found or proved (by step name). This module only describes and
//! checks; the Odoo destination (`switchyard-deliver`) performs it. It must never do I/O.

use crate::jq::Jq;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashSet};

/// `[flows.odoo]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OdooOperationConfig {
    /// The model of `upsert`, `create` and `write`; the default model of `call` steps.
    pub model: Option<String>,
    pub operation: OdooOperationKind,
    /// jq giving the record's external id (`module.name`, or a bare name which Odoo puts in
    /// module `__import__`): upsert through `load` with an `id` column.
    pub external_id: Option<String>,
    /// Fields whose values (from `values`) identify the record: upsert by business key.
    #[serde(default)]
    pub key: Vec<String>,
    /// jq giving the field values to write (default `.`, the mapped payload).
    pub values: Option<String>,
    /// Odoo context for this flow's calls (over the connection's).
    #[serde(default)]
    pub context: Map<String, Value>,
    /// The steps of a `call`.
    #[serde(default)]
    pub steps: Vec<OdooStepConfig>,
    /// Most records per Odoo call for upsert, create and write (default 100; 1 sends every
    /// record alone, for flows whose order across models matters). Deliveries of this flow
    /// that are ready while a call is in flight go together in the next one; nothing
    /// waits for a batch to fill. A `call` is never batched.
    pub batch_size: Option<u32>,
}

/// Records per Odoo call unless a flow sets `batch_size`.
pub const DEFAULT_BATCH_SIZE: usize = 100;
/// The largest `batch_size` (a `load` of more rows risks Odoo's request timeouts).
pub const MAX_BATCH_SIZE: u32 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OdooOperationKind {
    /// Create the record, or write what differs when it exists.
    Upsert,
    /// Create the record unless it exists (found by external id or key): never twice.
    Create,
    /// Write what differs on an existing record; a missing one is an error.
    Write,
    /// Call methods in order (`steps`), each guarded by a read that proves it happened.
    Call,
}

impl OdooOperationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OdooOperationKind::Upsert => "upsert",
            OdooOperationKind::Create => "create",
            OdooOperationKind::Write => "write",
            OdooOperationKind::Call => "call",
        }
    }
}

/// One `[[flows.odoo.steps]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OdooStepConfig {
    /// Unique within the flow: later steps read this step's record as `$steps.<name>`.
    pub name: String,
    /// Default: the operation's `model`.
    pub model: Option<String>,
    /// The method to call; none makes the step a lookup (`find`).
    pub method: Option<String>,
    /// jq giving the record id(s) the method runs on (its first positional argument).
    pub ids: Option<String>,
    /// jq giving further positional arguments (an array).
    pub args: Option<String>,
    /// jq giving keyword arguments (an object).
    pub kwargs: Option<String>,
    /// Context of this step's calls (over the flow's).
    #[serde(default)]
    pub context: Map<String, Value>,
    /// When the method answers with an action for one of these models (a wizard such as
    /// `stock.backorder.confirmation`), open it with the action's context and call this
    /// method on it; repeated while the answers are such actions.
    #[serde(default)]
    pub wizards: BTreeMap<String, String>,
    /// The read that proves the method already ran (required with `method`).
    pub done_when: Option<OdooReadConfig>,
    /// The read of a lookup step (required without `method`).
    pub find: Option<OdooReadConfig>,
}

/// A `search_read` whose first record is the step's record.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OdooReadConfig {
    /// Default: the step's model.
    pub model: Option<String>,
    /// jq giving the domain (a list), with `$steps`.
    pub domain: String,
    /// Fields to read besides `id`.
    #[serde(default)]
    pub fields: Vec<String>,
}

/// A compiled `[flows.odoo]`.
#[derive(Debug, Clone)]
pub struct OdooOperation {
    pub kind: OdooOperationKind,
    /// Empty for `call`.
    pub model: String,
    pub external_id: Option<Jq>,
    pub key: Vec<String>,
    pub values: Jq,
    pub context: Map<String, Value>,
    pub steps: Vec<OdooStep>,
    /// Most records per call (1 for `call`).
    pub batch_size: usize,
}

#[derive(Debug, Clone)]
pub struct OdooStep {
    pub name: String,
    pub model: String,
    pub method: Option<String>,
    pub ids: Option<Jq>,
    pub args: Option<Jq>,
    pub kwargs: Option<Jq>,
    pub context: Map<String, Value>,
    pub wizards: BTreeMap<String, String>,
    /// `done_when` of a method step, `find` of a lookup.
    pub read: OdooRead,
}

#[derive(Debug, Clone)]
pub struct OdooRead {
    pub model: String,
    pub domain: Jq,
    pub fields: Vec<String>,
}

/// The variables step programs may use.
pub const STEP_VARS: [&str; 1] = ["$steps"];

fn is_model(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        })
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Compiles `[flows.odoo]`; problems as (key below `flows[i].odoo`, message).
pub fn compile(c: &OdooOperationConfig) -> Result<OdooOperation, Vec<(String, String)>> {
    let mut problems: Vec<(String, String)> = Vec::new();
    let mut p = |k: &str, m: String| problems.push((k.to_string(), m));
    let jq =
        |code: &str, vars: &[&str], key: &str, p: &mut dyn FnMut(&str, String)| match Jq::compile(
            code, vars,
        ) {
            Ok(j) => Some(j),
            Err(e) => {
                p(key, e);
                None
            }
        };
    if let Some(m) = &c.model
        && !is_model(m)
    {
        p(
            "model",
            format!("\"{m}\" is not an Odoo model name (like sale.order)"),
        );
    }
    let record_op = c.operation != OdooOperationKind::Call;
    let op = c.operation.as_str();
    if record_op {
        if c.model.is_none() {
            p(
                "model",
                format!("operation \"{op}\" needs the model it writes"),
            );
        }
        if !c.steps.is_empty() {
            p(
                "steps",
                format!("steps belong to operation \"call\", not \"{op}\""),
            );
        }
        match (&c.external_id, c.key.is_empty()) {
            (Some(_), false) => p(
                "key",
                "set external_id or key, not both (one identifies the record)".into(),
            ),
            (None, true) => p(
                "external_id",
                format!(
                    "operation \"{op}\" needs external_id (jq giving the record's external id) or key (fields identifying it), so a retry finds what the first try did"
                ),
            ),
            _ => {}
        }
    } else {
        if c.external_id.is_some() || !c.key.is_empty() || c.values.is_some() {
            p(
                "operation",
                "external_id, key and values belong to upsert, create and write; a call reads what it needs in its steps".into(),
            );
        }
        if c.steps.is_empty() {
            p("steps", "operation \"call\" needs at least one step".into());
        }
        if c.batch_size.is_some_and(|b| b != 1) {
            p(
                "batch_size",
                "a call runs its steps record by record and is never batched".into(),
            );
        }
    }
    if let Some(b) = c.batch_size
        && !(1..=MAX_BATCH_SIZE).contains(&b)
    {
        p(
            "batch_size",
            format!("must be 1 to {MAX_BATCH_SIZE} records per call (1 sends each alone)"),
        );
    }
    let mut seen = HashSet::new();
    for k in &c.key {
        if !is_identifier(k) {
            p("key", format!("\"{k}\" is not a field name"));
        } else if !seen.insert(k.as_str()) {
            p("key", format!("\"{k}\" is listed twice"));
        }
    }
    let external_id = c
        .external_id
        .as_deref()
        .and_then(|code| jq(code, &[], "external_id", &mut p));
    let values = jq(c.values.as_deref().unwrap_or("."), &[], "values", &mut p);
    let mut steps = Vec::new();
    let mut names = HashSet::new();
    for (i, s) in c.steps.iter().enumerate() {
        let at = |k: &str| format!("steps[{i}].{k}");
        if !is_identifier(&s.name) {
            p(
                &at("name"),
                "must be a-z, 0-9 and '_' (later steps read it as $steps.<name>)".into(),
            );
        } else if !names.insert(s.name.as_str()) {
            p(&at("name"), format!("\"{}\" is declared twice", s.name));
        }
        let model = match s.model.as_ref().or(c.model.as_ref()) {
            Some(m) if is_model(m) => m.clone(),
            Some(m) => {
                p(&at("model"), format!("\"{m}\" is not an Odoo model name"));
                String::new()
            }
            None => {
                p(
                    &at("model"),
                    "no model (set it here or in [flows.odoo])".into(),
                );
                String::new()
            }
        };
        let read_config = match (&s.method, &s.done_when, &s.find) {
            (Some(m), Some(d), None) => {
                if !is_identifier(m) || m.starts_with('_') {
                    p(
                        &at("method"),
                        format!(
                            "\"{m}\" is not a public method name (private methods cannot be called remotely)"
                        ),
                    );
                }
                Some(("done_when", d))
            }
            (Some(_), None, _) => {
                p(
                    &at("done_when"),
                    "a method step needs done_when: the read that proves it already happened, so a retry or a lost answer never runs it twice".into(),
                );
                None
            }
            (Some(_), Some(_), Some(_)) => {
                p(&at("find"), "find is for lookup steps (no method); a method step proves itself with done_when".into());
                None
            }
            (None, None, Some(f)) => Some(("find", f)),
            (None, Some(_), _) => {
                p(
                    &at("done_when"),
                    "done_when guards a method; a lookup step uses find".into(),
                );
                None
            }
            (None, None, None) => {
                p(
                    &at("method"),
                    "a step calls a method (with done_when) or looks a record up (find)".into(),
                );
                None
            }
        };
        if s.method.is_none()
            && (s.ids.is_some() || s.args.is_some() || s.kwargs.is_some() || !s.wizards.is_empty())
        {
            p(
                &at("method"),
                "ids, args, kwargs and wizards need a method".into(),
            );
        }
        for (w, m) in &s.wizards {
            if !is_model(w) || !is_identifier(m) || m.starts_with('_') {
                p(
                    &at("wizards"),
                    format!("\"{w}\" = \"{m}\" must map a model to a public method"),
                );
            }
        }
        let vars = &STEP_VARS[..];
        let ids = s
            .ids
            .as_deref()
            .and_then(|code| jq(code, vars, &at("ids"), &mut p));
        let args = s
            .args
            .as_deref()
            .and_then(|code| jq(code, vars, &at("args"), &mut p));
        let kwargs = s
            .kwargs
            .as_deref()
            .and_then(|code| jq(code, vars, &at("kwargs"), &mut p));
        if let Some((key, r)) = read_config {
            let read_model = match &r.model {
                Some(m) if !is_model(m) => {
                    p(
                        &at(&format!("{key}.model")),
                        format!("\"{m}\" is not an Odoo model name"),
                    );
                    String::new()
                }
                Some(m) => m.clone(),
                None => model.clone(),
            };
            for f in &r.fields {
                if !is_identifier(f) {
                    p(
                        &at(&format!("{key}.fields")),
                        format!("\"{f}\" is not a field name"),
                    );
                }
            }
            if let Some(domain) = jq(&r.domain, vars, &at(&format!("{key}.domain")), &mut p) {
                steps.push(OdooStep {
                    name: s.name.clone(),
                    model,
                    method: s.method.clone(),
                    ids,
                    args,
                    kwargs,
                    context: s.context.clone(),
                    wizards: s.wizards.clone(),
                    read: OdooRead {
                        model: read_model,
                        domain,
                        fields: r.fields.clone(),
                    },
                });
            }
        }
    }
    match values {
        Some(values) if problems.is_empty() => Ok(OdooOperation {
            kind: c.operation,
            model: c.model.clone().unwrap_or_default(),
            external_id,
            key: c.key.clone(),
            values,
            context: c.context.clone(),
            steps,
            batch_size: if record_op {
                c.batch_size.map_or(DEFAULT_BATCH_SIZE, |b| b as usize)
            } else {
                1
            },
        }),
        _ => Err(problems),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml: &str) -> OdooOperationConfig {
        toml::from_str(toml).unwrap()
    }

    #[test]
    fn a_call_compiles_its_steps_with_their_models() {
        let op = compile(&parse(
            r#"
operation = "call"
model = "sale.order"
[[steps]]
name = "order"
find = { domain = '[["name", "=", .order]]', fields = ["state"] }
[[steps]]
name = "confirm"
method = "action_confirm"
ids = "$steps.order.id"
done_when = { domain = '[["id", "=", $steps.order.id], ["state", "=", "sale"]]' }
[[steps]]
name = "validate"
model = "stock.picking"
method = "button_validate"
ids = "[$steps.order.id]"
wizards = { "stock.backorder.confirmation" = "process" }
done_when = { domain = '[["state", "=", "done"]]' }
"#,
        ))
        .unwrap();
        assert_eq!(op.steps.len(), 3);
        assert_eq!(op.steps[0].read.model, "sale.order");
        assert_eq!(op.steps[2].read.model, "stock.picking");
        assert!(op.steps[0].method.is_none());
    }

    #[test]
    fn unguarded_and_ambiguous_operations_are_refused() {
        let problems = compile(&parse(
            r#"
operation = "call"
[[steps]]
name = "confirm"
model = "sale.order"
method = "_action_confirm"
[[steps]]
name = "confirm"
model = "Sale Order"
find = { domain = "[" }
"#,
        ))
        .unwrap_err();
        let keys: Vec<&str> = problems.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "steps[0].done_when",
                "steps[1].name",
                "steps[1].model",
                "steps[1].find.domain"
            ],
            "{problems:?}"
        );
        let problems = compile(&parse(
            r#"
operation = "upsert"
model = "res.partner"
external_id = ".xid"
key = ["ref"]
"#,
        ))
        .unwrap_err();
        assert_eq!(problems[0].0, "key");
        let problems =
            compile(&parse("operation = \"create\"\nmodel = \"res.partner\"")).unwrap_err();
        assert_eq!(problems[0].0, "external_id");
    }
}
