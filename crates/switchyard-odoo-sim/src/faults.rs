//! Faults the simulator can inject, from its config or at run time (`PUT /__sim/faults`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Extra latency on every RPC call.
    pub latency_ms: u64,
    /// Share of RPC calls answered with an HTTP 500 page (0.0-1.0).
    pub http_500_rate: f64,
    /// The next N `object` calls fail with a serialization failure after Odoo's retries
    /// (`psycopg2.errors.SerializationFailure`, nothing committed; transcripts 07_23, 09_05):
    /// another transaction keeps updating what they write, so every one of the 5 tries runs
    /// (sending its webhooks again) and then conflicts.
    pub serialization_failures: u32,
    /// Rows another transaction holds an uncommitted update of: the next `conflicts`
    /// commits writing such a row conflict and are retried as Odoo does (07_21: a slow
    /// success).
    pub locked_rows: Vec<LockedRow>,
    /// The next N `object` calls commit and then lose their response (the connection drops).
    pub lose_responses: u32,
    /// Every password and API key is refused (an expired key: AccessDenied).
    pub expire_credentials: bool,
    /// Validation errors raised when a call matches.
    pub validation_errors: Vec<ValidationRule>,
}

/// A row another transaction keeps locked (see [`Faults::locked_rows`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedRow {
    pub model: String,
    pub id: i64,
    /// How many more commits of this row conflict.
    pub conflicts: u32,
}

/// Raise `ValidationError(message)` when `model.method` is called with `field == equals`
/// in its values (create/write/load) or on any call when `field` is empty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidationRule {
    pub model: String,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub field: Option<String>,
    #[serde(default)]
    pub equals: Option<Value>,
    pub message: String,
}

impl Faults {
    pub fn validation_error_for(
        &self,
        model: &str,
        method: &str,
        args: &[Value],
    ) -> Option<String> {
        self.validation_errors
            .iter()
            .find(|r| {
                r.model == model
                    && r.method.as_deref().is_none_or(|m| m == method)
                    && match (&r.field, &r.equals) {
                        (Some(f), Some(eq)) => args.iter().any(|a| mentions(a, f, eq)),
                        _ => true,
                    }
            })
            .map(|r| r.message.clone())
    }
}

fn mentions(v: &Value, field: &str, eq: &Value) -> bool {
    match v {
        Value::Object(m) => m.get(field) == Some(eq) || m.values().any(|x| mentions(x, field, eq)),
        Value::Array(a) => a.iter().any(|x| mentions(x, field, eq)),
        _ => false,
    }
}
