//! Odoo-style webhook notifications (`base.automation` with a "Send Webhook Notification"
//! server action), sent the way Odoo 18 sends them (transcripts group 06): synchronously
//! inside the transaction, before it commits, with a 1 s timeout, no signature, no retry;
//! sent again on every serialization retry and even when the transaction then rolls back.

use crate::Effect;
use crate::orm::{FieldType, Id};
use crate::registry::Env;
use serde_json::{Map, Value, json};

/// Fire the webhook rules of `model` for records created or changed in this call.
pub fn on_change(env: &mut Env, model: &str, ids: &[Id], changed: &[String], created: bool) {
    let rule_ids: Vec<Id> = env
        .db
        .table("base.automation")
        .map(|t| {
            t.rows
                .iter()
                .filter(|(_, r)| r.get("active") != Some(&Value::Bool(false)))
                .map(|(id, _)| *id)
                .collect()
        })
        .unwrap_or_default();
    let mut rules: Vec<(Id, Map<String, Value>)> = Vec::new();
    for id in rule_ids {
        let mut r: Map<String, Value> = env
            .db
            .get("base.automation", id)
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .collect();
        for k in ["model_name", "trigger_field_names", "action_server_id"] {
            r.insert(
                k.into(),
                env.compute("base.automation", id, k).unwrap_or(Value::Null),
            );
        }
        if r.get("model_name").and_then(Value::as_str) == Some(model) {
            rules.push((id, r));
        }
    }
    for (_, rule) in rules {
        let trigger = rule.get("trigger").and_then(Value::as_str).unwrap_or("");
        let watched: Vec<String> = rule
            .get("trigger_field_names")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let fires = match trigger {
            "on_create" => created,
            "on_write" => {
                !created && (watched.is_empty() || changed.iter().any(|c| watched.contains(c)))
            }
            "on_create_or_write" => {
                created || watched.is_empty() || changed.iter().any(|c| watched.contains(c))
            }
            _ => false,
        };
        if !fires {
            continue;
        }
        let Some(action_id) = rule.get("action_server_id").and_then(Value::as_i64) else {
            continue;
        };
        let mut action = env
            .db
            .get("ir.actions.server", action_id)
            .cloned()
            .unwrap_or_default();
        action.insert(
            "webhook_field_names".into(),
            env.compute("ir.actions.server", action_id, "webhook_field_names")
                .unwrap_or(Value::Null),
        );
        let url = action
            .get("webhook_url")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if url.is_empty() {
            continue;
        }
        let fields: Vec<String> = action
            .get("webhook_field_names")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let action_name = action
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("Send Webhook Notification");
        for &id in ids {
            let mut body = Map::new();
            body.insert(
                "_action".into(),
                json!(format!("{action_name}(#{action_id})")),
            );
            body.insert("_id".into(), json!(id));
            body.insert("_model".into(), json!(model));
            body.insert("id".into(), json!(id));
            for f in &fields {
                body.insert(f.clone(), raw_value(env, model, id, f));
            }
            // serde_json's map keeps keys sorted, as Odoo's json.dumps(sort_keys=True).
            env.effects.push(Effect::Webhook {
                url: url.clone(),
                body: crate::pyjson::dumps(&Value::Object(body)),
            });
        }
    }
}

/// A field read with `load=None`: many2one as a bare id, datetimes with microseconds.
fn raw_value(env: &Env, model: &str, id: Id, field: &str) -> Value {
    let Ok(def) = env.reg.model(model) else {
        return Value::Bool(false);
    };
    let Some(f) = def.field(field) else {
        return Value::Bool(false);
    };
    let raw = env.get(model, id, field);
    match &f.ty {
        FieldType::Many2one(_) => raw.as_i64().map(Value::from).unwrap_or(Value::Bool(false)),
        FieldType::Datetime => raw
            .as_str()
            .map(|s| {
                if s.len() == 19 {
                    json!(format!("{s}.000000"))
                } else {
                    json!(s)
                }
            })
            .unwrap_or(Value::Bool(false)),
        FieldType::Computed => env.compute(model, id, field).unwrap_or(Value::Bool(false)),
        _ => env.read_field(model, id, f).unwrap_or(Value::Bool(false)),
    }
}

/// Send the webhooks a call produced (Odoo: `requests.post(url, data=json, timeout=1)`).
/// Failures are only logged, as Odoo does.
pub async fn send(http: &reqwest::Client, effects: &[Effect]) {
    for e in effects {
        let Effect::Webhook { url, body } = e;
        let res = http
            .post(url)
            .header("User-Agent", "python-requests/2.31.0")
            .header("Accept", "*/*")
            .header("Accept-Encoding", "gzip, deflate")
            .header("Connection", "keep-alive")
            .header("Content-Type", "application/json")
            .body(body.clone())
            .send()
            .await;
        match res {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => tracing::warn!(%url, status = %r.status(), "Webhook call failed"),
            Err(e) if e.is_timeout() => tracing::warn!(%url, "Webhook call timed out after 1s"),
            Err(e) => tracing::warn!(%url, error = %e, "Webhook call failed"),
        }
    }
}
