//! Odoo-style webhook notifications (`base.automation` with a "Send Webhook Notification"
//! server action), sent the way Odoo 18 sends them (transcripts group 06): synchronously
//! inside the transaction, before it commits, with a 1 s timeout, no signature, no retry;
//! sent again on every serialization retry and even when the transaction then rolls back.

use crate::Effect;
use crate::domain::Domain;
use crate::exc::{Exc, OResult};
use crate::orm::{FieldType, Id};
use crate::registry::Env;
use serde_json::{Map, Value, json};

/// Run the automation rules of `model` for records created or changed in this call:
/// each rule whose trigger and `filter_domain` match runs its server actions in
/// `sequence` order — webhooks are queued as effects (sent before the commit), a `code`
/// action that raises fails the whole call (after the webhooks before it went out).
pub fn on_change(
    env: &mut Env,
    model: &str,
    ids: &[Id],
    changed: &[String],
    created: bool,
) -> OResult<()> {
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
    for rule in rule_ids {
        if env.compute("base.automation", rule, "model_name")?.as_str() != Some(model) {
            continue;
        }
        let trigger = env.get_str("base.automation", rule, "trigger");
        let watched: Vec<String> = env
            .compute("base.automation", rule, "trigger_field_names")?
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let touched = watched.is_empty() || changed.iter().any(|c| watched.contains(c));
        let fires = match trigger.as_str() {
            "on_create" => created,
            "on_write" => !created && touched,
            "on_create_or_write" => created || touched,
            _ => false,
        };
        if !fires {
            continue;
        }
        let records = matching(env, rule, model, ids)?;
        if records.is_empty() {
            continue;
        }
        for action in crate::automation::rule_actions(env, rule) {
            match env.get_str("ir.actions.server", action, "state").as_str() {
                "webhook" => webhook(env, action, model, &records),
                "code" => {
                    let code = env.get_str("ir.actions.server", action, "code");
                    crate::automation::run_code(&code).map_err(|e| {
                        let name = env.get_str("base.automation", rule, "name");
                        e.with_context(json!({"exception_class": "base_automation",
                            "base_automation": {"id": rule, "name": name}}))
                    })?;
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// The records that satisfy the rule's `filter_domain` (a Python literal string).
fn matching(env: &Env, rule: Id, model: &str, ids: &[Id]) -> OResult<Vec<Id>> {
    let text = env.get_str("base.automation", rule, "filter_domain");
    if text.trim().is_empty() {
        return Ok(ids.to_vec());
    }
    let dom = crate::automation::python_literal(&text)
        .map_err(|e| Exc::value(format!("Invalid domain {text:?}: {e}")))?;
    let dom = Domain::parse(env, model, &dom)?;
    let mut out = Vec::new();
    for &id in ids {
        let Some(rec) = env.db.get(model, id) else {
            continue;
        };
        if dom.matches(env, model, id, rec)? {
            out.push(id);
        }
    }
    Ok(out)
}

/// Queue one webhook per record: `_action`, `_id`, `_model`, `id` and the selected fields.
fn webhook(env: &mut Env, action_id: Id, model: &str, ids: &[Id]) {
    let url = env.get_str("ir.actions.server", action_id, "webhook_url");
    if url.is_empty() {
        return;
    }
    let fields: Vec<String> = env
        .compute("ir.actions.server", action_id, "webhook_field_names")
        .ok()
        .and_then(|v| v.as_array().cloned())
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let action_name = env.get_str("ir.actions.server", action_id, "name");
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
