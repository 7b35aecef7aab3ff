//! `switchyard odoo install-webhooks`: the Odoo side of webhook hints. One `base.automation`
//! rule per (name, model) with one "Send Webhook Notification" server action pointing at
//! the hub, created through the API and brought to the wanted state idempotently: a second
//! run with the same arguments reads, compares and writes nothing.
//!
//! The notification always carries `write_date` (with microseconds): the hint receiver
//! compares it with the committed record to know whether the hinted change has committed.

use serde::Serialize;
use serde_json::{Map, Value, json};
use switchyard_odoo::{CallOptions, OdooClient, OdooError, SearchRead};

/// Which record events fire the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum On {
    Create,
    Write,
}

/// The rule wanted in Odoo.
#[derive(Debug, Clone)]
pub struct HookSpec {
    /// The rule's name, which identifies it on later runs (with the model).
    pub name: String,
    pub model: String,
    pub on: Vec<On>,
    /// Fields sent in the notification (`write_date` is always added).
    pub fields: Vec<String>,
    /// Fire on a write only when one of these changed (empty: any write).
    pub trigger_fields: Vec<String>,
    /// The hub's hint endpoint, `https://hub/v1/webhooks/<source>/<token>`.
    pub url: String,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum Installed {
    Created {
        rule_id: i64,
        action_id: i64,
    },
    /// Rule or action differed; `changed` names what was written.
    Updated {
        rule_id: i64,
        changed: Vec<String>,
    },
    Unchanged {
        rule_id: i64,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("{0}")]
    Odoo(#[from] OdooError),
    #[error("{0}")]
    Setup(String),
}

/// The rule name used when none is given: the hub source the URL points at, else the model.
pub fn default_name(model: &str, url: &str) -> String {
    match source_of(url) {
        Some(source) => format!("Switchyard: {model} → {source}"),
        None => format!("Switchyard: {model}"),
    }
}

fn source_of(url: &str) -> Option<&str> {
    let (_, rest) = url.split_once("/v1/webhooks/")?;
    rest.split('/').next().filter(|s| !s.is_empty())
}

/// The URL with its secret path token masked, for output.
pub fn redact(url: &str) -> String {
    match url.split_once("/v1/webhooks/") {
        Some((base, rest)) => match rest.split_once('/') {
            Some((source, _token)) => format!("{base}/v1/webhooks/{source}/***"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

fn trigger(on: &[On]) -> Result<&'static str, HookError> {
    match (on.contains(&On::Create), on.contains(&On::Write)) {
        (true, true) => Ok("on_create_or_write"),
        (true, false) => Ok("on_create"),
        (false, true) => Ok("on_write"),
        (false, false) => Err(HookError::Setup("--on needs create, write or both".into())),
    }
}

async fn search_read(
    client: &OdooClient,
    model: &str,
    domain: Value,
    fields: &[&str],
) -> Result<Vec<Map<String, Value>>, OdooError> {
    let mut context = Map::new();
    // archived rules are ours too: reactivate rather than duplicate them
    context.insert("active_test".into(), json!(false));
    client
        .search_read(
            model,
            &SearchRead {
                domain,
                fields,
                ..SearchRead::default()
            },
            &CallOptions {
                context,
                traceparent: None,
            },
        )
        .await
}

fn ids_of(v: Option<&Value>) -> Vec<i64> {
    let mut ids: Vec<i64> = v
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_i64).collect())
        .unwrap_or_default();
    ids.sort_unstable();
    ids
}

/// Field names → `ir.model.fields` ids of `model`; every name must exist.
async fn field_ids(
    client: &OdooClient,
    model: &str,
    names: &[String],
) -> Result<Vec<i64>, HookError> {
    if names.is_empty() {
        return Ok(vec![]);
    }
    let rows = search_read(
        client,
        "ir.model.fields",
        json!([["model", "=", model], ["name", "in", names]]),
        &["id", "name"],
    )
    .await?;
    let missing: Vec<&str> = names
        .iter()
        .filter(|n| {
            !rows
                .iter()
                .any(|r| r.get("name").and_then(Value::as_str) == Some(n))
        })
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Err(HookError::Setup(format!(
            "{model} has no field {}",
            missing.join(", ")
        )));
    }
    let mut ids: Vec<i64> = rows
        .iter()
        .filter_map(|r| r.get("id").and_then(Value::as_i64))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// Creates the rule and its webhook action, or brings an existing one (same name and model)
/// to `spec`; writes nothing when it already matches.
pub async fn install_webhook(client: &OdooClient, spec: &HookSpec) -> Result<Installed, HookError> {
    let trigger = trigger(&spec.on)?;
    let models = search_read(
        client,
        "ir.model",
        json!([["model", "=", spec.model]]),
        &["id"],
    )
    .await?;
    let model_id = models
        .first()
        .and_then(|m| m.get("id"))
        .and_then(Value::as_i64)
        .ok_or_else(|| {
            HookError::Setup(format!(
                "Odoo has no model {} (is its module installed?)",
                spec.model
            ))
        })?;
    let mut sent = spec.fields.clone();
    if !sent.iter().any(|f| f == "write_date") {
        sent.push("write_date".into());
    }
    let webhook_fields = field_ids(client, &spec.model, &sent).await?;
    let trigger_fields = field_ids(client, &spec.model, &spec.trigger_fields).await?;
    let no_opts = CallOptions::default();

    let rules = search_read(
        client,
        "base.automation",
        json!([["name", "=", spec.name], ["model_id", "=", model_id]]),
        &[
            "id",
            "trigger",
            "trigger_field_ids",
            "active",
            "action_server_ids",
        ],
    )
    .await?;
    let Some(rule) = rules.first() else {
        let created = client
            .execute_kw(
                "base.automation",
                "create",
                vec![json!({
                    "name": spec.name,
                    "model_id": model_id,
                    "trigger": trigger,
                    "trigger_field_ids": [[6, 0, trigger_fields]],
                    "action_server_ids": [[0, 0, {
                        "name": "Send Webhook Notification",
                        "state": "webhook",
                        "model_id": model_id,
                        "webhook_url": spec.url,
                        "webhook_field_ids": [[6, 0, webhook_fields]],
                    }]],
                })],
                Map::new(),
                &no_opts,
            )
            .await?;
        let rule_id = created
            .as_i64()
            .or_else(|| {
                created
                    .as_array()
                    .and_then(|a| a.first())
                    .and_then(Value::as_i64)
            })
            .ok_or_else(|| {
                HookError::Setup(format!("base.automation.create answered {created}"))
            })?;
        let action = search_read(
            client,
            "ir.actions.server",
            json!([
                ["base_automation_id", "=", rule_id],
                ["state", "=", "webhook"]
            ]),
            &["id"],
        )
        .await?;
        let action_id = action
            .first()
            .and_then(|a| a.get("id"))
            .and_then(Value::as_i64)
            .unwrap_or_default();
        return Ok(Installed::Created { rule_id, action_id });
    };
    let rule_id = rule.get("id").and_then(Value::as_i64).unwrap_or_default();
    let mut changed = Vec::new();
    let mut rule_vals = Map::new();
    if rule.get("trigger").and_then(Value::as_str) != Some(trigger) {
        rule_vals.insert("trigger".into(), json!(trigger));
        changed.push("trigger".to_string());
    }
    if ids_of(rule.get("trigger_field_ids")) != trigger_fields {
        rule_vals.insert("trigger_field_ids".into(), json!([[6, 0, trigger_fields]]));
        changed.push("trigger_field_ids".to_string());
    }
    if rule.get("active") == Some(&json!(false)) {
        rule_vals.insert("active".into(), json!(true));
        changed.push("active".to_string());
    }
    let actions = search_read(
        client,
        "ir.actions.server",
        json!([
            ["id", "in", ids_of(rule.get("action_server_ids"))],
            ["state", "=", "webhook"]
        ]),
        &["id", "webhook_url", "webhook_field_ids"],
    )
    .await?;
    match actions.first() {
        None => {
            rule_vals.insert(
                "action_server_ids".into(),
                json!([[0, 0, {
                    "name": "Send Webhook Notification",
                    "state": "webhook",
                    "model_id": model_id,
                    "webhook_url": spec.url,
                    "webhook_field_ids": [[6, 0, webhook_fields]],
                }]]),
            );
            changed.push("webhook action".to_string());
        }
        Some(action) => {
            let mut vals = Map::new();
            if action.get("webhook_url").and_then(Value::as_str) != Some(spec.url.as_str()) {
                vals.insert("webhook_url".into(), json!(spec.url));
                changed.push("webhook_url".to_string());
            }
            if ids_of(action.get("webhook_field_ids")) != webhook_fields {
                vals.insert("webhook_field_ids".into(), json!([[6, 0, webhook_fields]]));
                changed.push("webhook_field_ids".to_string());
            }
            if !vals.is_empty() {
                let id = action.get("id").and_then(Value::as_i64).unwrap_or_default();
                client
                    .execute_kw(
                        "ir.actions.server",
                        "write",
                        vec![json!([id]), Value::Object(vals)],
                        Map::new(),
                        &no_opts,
                    )
                    .await?;
            }
        }
    }
    if !rule_vals.is_empty() {
        client
            .execute_kw(
                "base.automation",
                "write",
                vec![json!([rule_id]), Value::Object(rule_vals)],
                Map::new(),
                &no_opts,
            )
            .await?;
    }
    Ok(if changed.is_empty() {
        Installed::Unchanged { rule_id }
    } else {
        Installed::Updated { rule_id, changed }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_never_leaves_the_url_in_output() {
        let url = "https://hub.example.com/v1/webhooks/odoo-orders/s3cret";
        assert_eq!(
            redact(url),
            "https://hub.example.com/v1/webhooks/odoo-orders/***"
        );
        assert_eq!(
            default_name("sale.order", url),
            "Switchyard: sale.order → odoo-orders"
        );
        assert_eq!(
            default_name("sale.order", "https://x/hook"),
            "Switchyard: sale.order"
        );
    }
}
