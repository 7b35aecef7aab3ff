//! Change capture from Odoo: what a `kind = "odoo"` source polls, and how it takes
//! Odoo's "Send Webhook Notification" payloads as hints.
//!
//! ```toml
//! [[sources]]
//! name = "odoo-orders"
//! kind = "odoo"
//! odoo = "main"                      # an [[odoo]] connection
//! model = "sale.order"
//! fields = ["name", "state", "origin", "partner_id", "amount_total"]
//! domain = [["state", "!=", "cancel"]]
//! context = { active_test = false }
//! interval_seconds = 30
//! page_size = 200
//! overlap_seconds = 120              # at least the longest Odoo transaction
//! initial = "sync"                   # sync (everything there is) | now (changes from now on)
//! keys = { sale_order = ".data.name", shop_order = ".data.origin" }
//! [sources.verify]                   # optional: accept webhook hints on
//! kind = "path-token"                # /v1/webhooks/odoo-orders/<token>
//! secrets = ["env:ODOO_HOOK_TOKEN"]
//! ```
//!
//! Everything here is configuration and its checks; the poller and the hint receiver live in
//! `switchyard-server` (`odoo_capture.rs`).

use crate::sources::{SourceConfig, VerifyConfig};
use serde::Deserialize;
use serde_json::{Map, Value};

/// Where a source's capture starts the first time it runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Initial {
    /// Every record the domain selects, in pages, then the changes.
    #[default]
    Sync,
    /// Only changes after the newest `write_date` found at the first run.
    Now,
}

pub const DEFAULT_INTERVAL_SECONDS: u64 = 30;
pub const DEFAULT_PAGE_SIZE: u32 = 200;
pub const DEFAULT_OVERLAP_SECONDS: u64 = 120;
pub const DEFAULT_HINT_WAIT_SECONDS: u64 = 60;

/// A compiled `kind = "odoo"` source.
#[derive(Debug, Clone)]
pub struct OdooCapture {
    /// The `[[odoo]]` connection's name.
    pub connection: String,
    pub model: String,
    /// The fields read, as configured (`write_date` is always read as well).
    pub fields: Vec<String>,
    /// An Odoo domain (a JSON array); `[]` selects every record.
    pub domain: Value,
    /// Odoo context for the reads, over the connection's own.
    pub context: Map<String, Value>,
    pub interval_seconds: u64,
    pub page_size: u32,
    /// How far behind the newest `write_date` seen every poll reads again: Odoo stamps a
    /// row with its transaction's start, so a long transaction commits rows older than rows
    /// already read (transcripts 04_09-04_12).
    pub overlap_seconds: u64,
    pub initial: Initial,
    /// Webhook hints: how they are verified (a secret path token).
    pub hints: Option<VerifyConfig>,
    /// How long a hint's record is read back, waiting for the sender's transaction to commit.
    pub hint_wait_seconds: u64,
}

impl OdooCapture {
    /// The CloudEvents `type` of a change.
    pub fn event_type(&self) -> String {
        format!("odoo.{}.changed", self.model)
    }

    /// The fields every read asks for: the configured ones and `write_date`.
    pub fn read_fields(&self) -> Vec<String> {
        let mut f = self.fields.clone();
        if !f.iter().any(|x| x == "write_date") {
            f.push("write_date".into());
        }
        f
    }
}

/// Odoo names: models `sale.order`, fields `partner_id`.
fn is_odoo_name(s: &str, dots: bool) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || (dots && b == b'.')
        })
}

/// Why `domain` is not an Odoo domain in prefix notation: `&`, `|`, `!` and
/// `[field, operator, value]` leaves.
fn domain_problem(domain: &Value) -> Option<String> {
    let Value::Array(items) = domain else {
        return Some("must be a list of conditions like [\"state\", \"=\", \"sale\"]".into());
    };
    // Count what the prefix operators need: each `&`/`|` takes two terms, `!` one.
    let mut need: i64 = 1;
    for (i, item) in items.iter().enumerate() {
        if need == 0 {
            // Odoo joins top-level terms with an implicit `&`.
            need = 1;
        }
        match item {
            Value::String(op) if op == "&" || op == "|" => need += 1,
            Value::String(op) if op == "!" => {}
            Value::String(op) => {
                return Some(format!(
                    "item {i}: \"{op}\" is not an operator (&, |, !) or a condition"
                ));
            }
            Value::Array(leaf) => {
                let ok = leaf.len() == 3
                    && leaf[0]
                        .as_str()
                        .is_some_and(|f| f.split('.').all(|p| is_odoo_name(p, false)))
                    && leaf[1].as_str().is_some_and(|o| !o.trim().is_empty());
                if !ok {
                    return Some(format!(
                        "item {i}: a condition is [field, operator, value], e.g. [\"state\", \"=\", \"sale\"]"
                    ));
                }
                need -= 1;
            }
            other => return Some(format!("item {i}: {other} is not a condition")),
        }
    }
    if !items.is_empty() && need != 0 {
        return Some("an operator is missing one of its conditions".into());
    }
    None
}

/// Checks and compiles the Odoo part of source `sc` (at `sources[i]`), pushing every
/// problem as (key, message).
pub(crate) fn compile(
    sc: &SourceConfig,
    at: &dyn Fn(&str) -> String,
    connections: &[crate::odoo::OdooConnectionConfig],
    problems: &mut Vec<(String, String)>,
) -> Option<OdooCapture> {
    let before = problems.len();
    let connection = match &sc.odoo {
        None => {
            problems.push((
                at("odoo"),
                "an odoo source names the [[odoo]] connection it polls".into(),
            ));
            None
        }
        Some(n) if connections.iter().any(|c| c.name == *n) => Some(n.clone()),
        Some(n) => {
            let known: Vec<&str> = connections.iter().map(|c| c.name.as_str()).collect();
            problems.push((
                at("odoo"),
                if known.is_empty() {
                    format!("no [[odoo]] connection named \"{n}\" (none is declared)")
                } else {
                    format!(
                        "no [[odoo]] connection named \"{n}\" (declared: {})",
                        known.join(", ")
                    )
                },
            ));
            None
        }
    };
    let model = match &sc.model {
        None => {
            problems.push((
                at("model"),
                "an odoo source names the model it captures, e.g. \"sale.order\"".into(),
            ));
            None
        }
        Some(m) if is_odoo_name(m, true) => Some(m.clone()),
        Some(m) => {
            problems.push((
                at("model"),
                format!("\"{m}\" is not an Odoo model name (like \"sale.order\")"),
            ));
            None
        }
    };
    if sc.fields.is_empty() {
        problems.push((
            at("fields"),
            "list the fields to read, e.g. [\"name\", \"state\"]: reading every field is slow and changes with every module installed".into(),
        ));
    }
    for (j, f) in sc.fields.iter().enumerate() {
        if !is_odoo_name(f, false) {
            problems.push((
                at(&format!("fields[{j}]")),
                format!("\"{f}\" is not an Odoo field name"),
            ));
        } else if sc.fields[..j].contains(f) {
            problems.push((
                at(&format!("fields[{j}]")),
                format!("\"{f}\" is listed twice"),
            ));
        }
    }
    let domain = sc.domain.clone().unwrap_or(Value::Array(vec![]));
    if let Some(p) = domain_problem(&domain) {
        problems.push((at("domain"), p));
    }
    let interval_seconds = sc.interval_seconds.unwrap_or(DEFAULT_INTERVAL_SECONDS);
    if interval_seconds == 0 {
        problems.push((at("interval_seconds"), "must be at least 1".into()));
    }
    let page_size = sc.page_size.unwrap_or(DEFAULT_PAGE_SIZE);
    if !(1..=10_000).contains(&page_size) {
        problems.push((at("page_size"), "must be between 1 and 10000".into()));
    }
    let overlap_seconds = sc.overlap_seconds.unwrap_or(DEFAULT_OVERLAP_SECONDS);
    if overlap_seconds == 0 {
        problems.push((
            at("overlap_seconds"),
            "must be at least 1: write_date is read in whole seconds, so the last second is always read again".into(),
        ));
    }
    let hint_wait_seconds = sc.hint_wait_seconds.unwrap_or(DEFAULT_HINT_WAIT_SECONDS);
    if hint_wait_seconds == 0 {
        problems.push((at("hint_wait_seconds"), "must be at least 1".into()));
    }
    let hints = match &sc.verify {
        None => {
            if sc.hint_wait_seconds.is_some() {
                problems.push((
                    at("hint_wait_seconds"),
                    "only meaningful with [sources.verify] (webhook hints)".into(),
                ));
            }
            None
        }
        Some(v @ VerifyConfig::PathToken { .. }) => {
            crate::sources::check_verify(v, &at("verify"), problems);
            Some(v.clone())
        }
        Some(_) => {
            problems.push((
                at("verify"),
                "Odoo's webhook notifications carry no signature and no headers of our choosing: use kind = \"path-token\"".into(),
            ));
            None
        }
    };
    if sc.event.is_some() {
        problems.push((
            at("event"),
            "an odoo source makes its events itself (odoo.<model>.changed); remove [sources.event]"
                .into(),
        ));
    }
    if problems.len() != before {
        return None;
    }
    Some(OdooCapture {
        connection: connection?,
        model: model?,
        fields: sc.fields.clone(),
        domain,
        context: sc.context.clone().unwrap_or_default(),
        interval_seconds,
        page_size,
        overlap_seconds,
        initial: sc.initial.unwrap_or_default(),
        hints,
        hint_wait_seconds,
    })
}

/// Problems of a source of another kind that sets Odoo keys.
pub(crate) fn stray_keys(sc: &SourceConfig, at: &dyn Fn(&str) -> String) -> Vec<(String, String)> {
    let set = [
        ("odoo", sc.odoo.is_some()),
        ("model", sc.model.is_some()),
        ("fields", !sc.fields.is_empty()),
        ("domain", sc.domain.is_some()),
        ("context", sc.context.is_some()),
        ("interval_seconds", sc.interval_seconds.is_some()),
        ("page_size", sc.page_size.is_some()),
        ("overlap_seconds", sc.overlap_seconds.is_some()),
        ("initial", sc.initial.is_some()),
        ("hint_wait_seconds", sc.hint_wait_seconds.is_some()),
    ];
    set.into_iter()
        .filter(|(_, on)| *on)
        .map(|(k, _)| {
            (
                at(k),
                "only odoo sources (kind = \"odoo\") poll Odoo".into(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn domains_are_checked_like_odoo_reads_them() {
        for ok in [
            json!([]),
            json!([["state", "=", "sale"]]),
            json!([["state", "=", "sale"], ["partner_id.name", "ilike", "acme"]]),
            json!(["|", ["state", "=", "sale"], ["state", "=", "done"]]),
            json!(["!", ["active", "=", false]]),
            json!([
                "&",
                "|",
                ["a", "=", 1],
                ["b", "=", 2],
                ["c", "=", 3],
                ["d", "=", 4]
            ]),
        ] {
            assert_eq!(domain_problem(&ok), None, "{ok}");
        }
        for bad in [
            json!({"state": "sale"}),
            json!(["state", "=", "sale"]),
            json!([["state", "="]]),
            json!(["|", ["state", "=", "sale"]]),
            json!(["&"]),
            json!([["State", "=", 1]]),
        ] {
            assert!(domain_problem(&bad).is_some(), "{bad}");
        }
    }
}
