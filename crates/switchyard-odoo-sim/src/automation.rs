//! `base.automation` rules and their webhook server actions (`ir.actions.server` with
//! `state = "webhook"`), enough to configure the webhooks of transcripts group 06.

use crate::exc::{Exc, OResult};
use crate::orm::*;
use crate::registry::{Behaviour, Env};
use serde_json::{Value, json};

fn field_names(env: &Env, model: &str, id: Id, field: &str) -> Vec<String> {
    let rec = env.db.get(model, id).cloned().unwrap_or_default();
    env.m2m_ids(&rec, field)
        .into_iter()
        .map(|f| env.get_str("ir.model.fields", f, "name"))
        .collect()
}

fn model_name(env: &Env, model: &str, id: Id) -> String {
    let m = env.get_i64(model, id, "model_id").unwrap_or(0);
    env.get_str("ir.model", m, "model")
}

/// A rule's server actions in the order they run (`sequence`, then id).
pub fn rule_actions(env: &Env, rule: Id) -> Vec<Id> {
    let mut ids = env.o2m_ids("ir.actions.server", "base_automation_id", rule);
    ids.sort_by_key(|a| {
        (
            env.get_i64("ir.actions.server", *a, "sequence")
                .unwrap_or(5),
            *a,
        )
    });
    ids
}

/// Run a `code` server action. Only what the recordings use is understood: a statement
/// raising `UserError`/`ValidationError` with a literal message (06_19); any other code
/// does nothing.
pub fn run_code(code: &str) -> OResult<()> {
    for line in code.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("raise ") else {
            continue;
        };
        let Some((class, arg)) = rest.split_once('(') else {
            continue;
        };
        let arg = arg.trim_end().strip_suffix(')').unwrap_or(arg);
        let message = match python_literal(arg) {
            Ok(Value::String(m)) => m,
            _ => arg.to_string(),
        };
        return Err(match class.trim() {
            "ValidationError" => Exc::validation(message),
            "AccessError" => Exc::access(message),
            _ => Exc::user(message),
        });
    }
    Ok(())
}

/// Parse a Python literal (lists, tuples, strings, numbers, True/False/None) as JSON —
/// enough for the domains stored in `filter_domain`.
pub fn python_literal(text: &str) -> Result<Value, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut pos = 0;
    let v = literal(&chars, &mut pos)?;
    skip_ws(&chars, &mut pos);
    if pos != chars.len() {
        return Err(format!("unexpected {:?} at {pos}", chars[pos]));
    }
    Ok(v)
}

fn skip_ws(c: &[char], pos: &mut usize) {
    while *pos < c.len() && c[*pos].is_whitespace() {
        *pos += 1;
    }
}

fn literal(c: &[char], pos: &mut usize) -> Result<Value, String> {
    skip_ws(c, pos);
    let Some(&first) = c.get(*pos) else {
        return Err("unexpected end".into());
    };
    match first {
        '[' | '(' => {
            let close = if first == '[' { ']' } else { ')' };
            *pos += 1;
            let mut items = Vec::new();
            loop {
                skip_ws(c, pos);
                if c.get(*pos) == Some(&close) {
                    *pos += 1;
                    return Ok(Value::Array(items));
                }
                items.push(literal(c, pos)?);
                skip_ws(c, pos);
                match c.get(*pos) {
                    Some(',') => *pos += 1,
                    Some(x) if *x == close => {}
                    other => return Err(format!("expected ',' or {close:?}, got {other:?}")),
                }
            }
        }
        '\'' | '"' => {
            *pos += 1;
            let mut s = String::new();
            while let Some(&ch) = c.get(*pos) {
                *pos += 1;
                match ch {
                    '\\' => {
                        let esc = c.get(*pos).copied().unwrap_or('\\');
                        *pos += 1;
                        s.push(match esc {
                            'n' => '\n',
                            't' => '\t',
                            other => other,
                        });
                    }
                    ch if ch == first => return Ok(Value::String(s)),
                    ch => s.push(ch),
                }
            }
            Err("unterminated string".into())
        }
        _ => {
            let start = *pos;
            while *pos < c.len() && (c[*pos].is_alphanumeric() || "._-+".contains(c[*pos])) {
                *pos += 1;
            }
            let word: String = c[start..*pos].iter().collect();
            match word.as_str() {
                "True" => Ok(Value::Bool(true)),
                "False" => Ok(Value::Bool(false)),
                "None" => Ok(Value::Null),
                w => {
                    if let Ok(i) = w.parse::<i64>() {
                        Ok(json!(i))
                    } else if let Ok(f) = w.parse::<f64>() {
                        Ok(json!(f))
                    } else {
                        Err(format!("unsupported literal {w:?}"))
                    }
                }
            }
        }
    }
}

pub struct Automation;

impl Behaviour for Automation {
    fn compute(&self, env: &Env, id: Id, field: &str) -> Option<OResult<Value>> {
        Some(Ok(match field {
            "model_name" => json!(model_name(env, "base.automation", id)),
            "trigger_field_names" => {
                json!(field_names(env, "base.automation", id, "trigger_field_ids"))
            }
            "action_server_id" => json!(rule_actions(env, id).first()),
            _ => return None,
        }))
    }
}

pub struct ServerAction;

impl Behaviour for ServerAction {
    fn defaults(&self, _env: &mut Env, vals: &mut serde_json::Map<String, Value>) -> OResult<()> {
        vals.entry("usage").or_insert(json!("base_automation"));
        vals.entry("sequence").or_insert(json!(5));
        // The name is computed from the action type: whatever name was given, a webhook
        // action is "Send Webhook Notification" (06_02, and `_action` in every payload).
        if vals.get("state").and_then(Value::as_str) == Some("webhook") {
            vals.insert("name".into(), json!("Send Webhook Notification"));
        }
        Ok(())
    }

    fn compute(&self, env: &Env, id: Id, field: &str) -> Option<OResult<Value>> {
        Some(Ok(match field {
            "model_name" => json!(model_name(env, "ir.actions.server", id)),
            "webhook_field_names" => json!(field_names(
                env,
                "ir.actions.server",
                id,
                "webhook_field_ids"
            )),
            "webhook_sample_payload" => {
                let mut m = serde_json::Map::new();
                m.insert(
                    "_action".into(),
                    json!(format!(
                        "{}(#{id})",
                        env.get_str("ir.actions.server", id, "name")
                    )),
                );
                m.insert("_id".into(), json!(1));
                m.insert(
                    "_model".into(),
                    json!(model_name(env, "ir.actions.server", id)),
                );
                m.insert("id".into(), json!(1));
                for f in field_names(env, "ir.actions.server", id, "webhook_field_ids") {
                    m.insert(f, json!(false));
                }
                json!(serde_json::to_string_pretty(&Value::Object(m)).unwrap_or_default())
            }
            _ => return None,
        }))
    }
}

/// Field ids as the recordings used them (sale.order's fields on the recorded database).
pub const SALE_ORDER_FIELD_IDS: [(Id, &str); 7] = [
    (7983, "name"),
    (7985, "partner_id"),
    (7986, "state"),
    (7989, "client_order_ref"),
    (8003, "note"),
    (8016, "amount_total"),
    (8045, "write_date"),
];
