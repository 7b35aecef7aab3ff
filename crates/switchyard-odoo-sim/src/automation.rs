//! `base.automation` rules and their webhook server actions (`ir.actions.server` with
//! `state = "webhook"`), enough to configure the webhooks of transcripts group 06.

use crate::exc::OResult;
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

pub struct Automation;

impl Behaviour for Automation {
    fn compute(&self, env: &Env, id: Id, field: &str) -> Option<OResult<Value>> {
        Some(Ok(match field {
            "model_name" => json!(model_name(env, "base.automation", id)),
            "trigger_field_names" => {
                json!(field_names(env, "base.automation", id, "trigger_field_ids"))
            }
            "action_server_id" => json!(
                env.o2m_ids("ir.actions.server", "base_automation_id", id)
                    .first()
            ),
            _ => return None,
        }))
    }
}

pub struct ServerAction;

impl Behaviour for ServerAction {
    fn defaults(&self, _env: &mut Env, vals: &mut serde_json::Map<String, Value>) -> OResult<()> {
        vals.entry("usage").or_insert(json!("base_automation"));
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
