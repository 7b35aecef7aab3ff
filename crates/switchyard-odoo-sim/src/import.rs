//! `ir.model.data`, `get_external_id` and timezones (group 10 of the recordings); `load` is
//! in [`crate::load`], `read_group` in [`crate::read_group`].

use crate::exc::{Exc, OResult};
use crate::models::model;
use crate::orm::FieldType::*;
use crate::orm::*;
use crate::registry::{Behaviour, Env, Registry};
use serde_json::{Map, Value, json};

pub use crate::load::{LOAD_ROLLBACK, load};
pub use crate::read_group::read_group;

pub fn register(r: &mut Registry) {
    let mut imd = model(
        "ir.model.data",
        "Model Data",
        vec![
            FieldDef {
                name: "module",
                ty: Char,
                required: true,
                string: "Module",
            },
            FieldDef {
                name: "name",
                ty: Char,
                required: true,
                string: "External Identifier",
            },
            FieldDef {
                name: "model",
                ty: Char,
                required: true,
                string: "Model Name",
            },
            FieldDef {
                name: "res_id",
                ty: Integer,
                required: false,
                string: "Record ID",
            },
            FieldDef {
                name: "noupdate",
                ty: Boolean,
                required: false,
                string: "Non Updatable",
            },
            FieldDef {
                name: "complete_name",
                ty: Computed,
                required: false,
                string: "Complete ID",
            },
        ],
    );
    imd.order = "module, model, name";
    r.add(imd, Box::new(ModelData));
}

struct ModelData;

impl Behaviour for ModelData {
    fn compute(&self, env: &Env, id: Id, field: &str) -> Option<OResult<Value>> {
        (field == "complete_name").then(|| {
            Ok(json!(format!(
                "{}.{}",
                env.get_str("ir.model.data", id, "module"),
                env.get_str("ir.model.data", id, "name")
            )))
        })
    }

    fn check(&self, env: &Env, ids: &[Id]) -> OResult<()> {
        for &id in ids {
            let module = env.get("ir.model.data", id, "module");
            let name = env.get("ir.model.data", id, "name");
            let dupes = env
                .find("ir.model.data", "module", &module)
                .into_iter()
                .filter(|o| *o != id && env.get("ir.model.data", *o, "name") == name)
                .count();
            if dupes > 0 {
                return Err(Exc::validation(format!(
                    "The operation cannot be completed: duplicate key value violates unique constraint \"ir_model_data_module_name_uniq_index\"\nDETAIL:  Key (module, name)=({}, {}) already exists.\n",
                    module.as_str().unwrap_or(""),
                    name.as_str().unwrap_or("")
                )));
            }
        }
        Ok(())
    }

    fn call(
        &self,
        env: &mut Env,
        method: &str,
        _ids: Vec<Id>,
        args: &[Value],
        _kwargs: &Map<String, Value>,
    ) -> Option<OResult<Value>> {
        match method {
            "check_object_reference" => Some({
                let module = args.first().and_then(Value::as_str).unwrap_or("");
                let name = args.get(1).and_then(Value::as_str).unwrap_or("");
                match xid_lookup(env, module, name) {
                    Some((m, id)) => Ok(json!([m, id])),
                    None => Err(Exc::value(format!(
                        "External ID not found in the system: {module}.{name}"
                    ))),
                }
            }),
            _ => None,
        }
    }
}

/// (model, res_id) for `module.name`.
pub fn xid_lookup(env: &Env, module: &str, name: &str) -> Option<(String, Id)> {
    env.db
        .table("ir.model.data")
        .and_then(|t| t.xid(module, name))
        .map(|i| {
            (
                env.get_str("ir.model.data", i, "model"),
                env.get_i64("ir.model.data", i, "res_id").unwrap_or(0),
            )
        })
}

fn split_xid(xid: &str) -> (String, String) {
    match xid.split_once('.') {
        Some((m, n)) => (m.to_string(), n.to_string()),
        None => ("__import__".to_string(), xid.to_string()),
    }
}

/// Record an external id for a record (as `load` does).
pub fn add_xid(env: &mut Env, xid: &str, model: &str, id: Id) {
    let (module, name) = split_xid(xid);
    env.insert(
        "ir.model.data",
        json!({"module": module, "name": name, "model": model, "res_id": id, "noupdate": false}),
    );
}

pub fn get_external_id(env: &mut Env, model: &str, ids: &[Id]) -> OResult<Value> {
    let mut out = Map::new();
    for &id in ids {
        let xid = env
            .find("ir.model.data", "res_id", &json!(id))
            .into_iter()
            .find(|i| env.get_str("ir.model.data", *i, "model") == model)
            .map(|i| {
                format!(
                    "{}.{}",
                    env.get_str("ir.model.data", i, "module"),
                    env.get_str("ir.model.data", i, "name")
                )
            })
            .unwrap_or_default();
        out.insert(id.to_string(), json!(xid));
    }
    // An int-keyed dict in Python: XML-RPC cannot marshal it (see `int_keyed_result`).
    Ok(Value::Object(out))
}

/// Methods whose Python result is a dict keyed by record id (`{22: "module.name"}`).
const INT_KEYED_RESULTS: [&str; 1] = ["get_external_id"];

/// Whether an `object` service call's result is a non-empty dict with integer keys in
/// Python: JSON-RPC sends the keys as strings (10_108), XML-RPC cannot marshal it at all
/// (fault 1, `TypeError: dictionary key must be string`, 10_035).
pub fn int_keyed_result(service: &str, params: &[Value], result: &Value) -> bool {
    service == "object"
        && params
            .get(4)
            .and_then(Value::as_str)
            .is_some_and(|m| INT_KEYED_RESULTS.contains(&m))
        && result.as_object().is_some_and(|m| !m.is_empty())
}

/// The UTC offset (seconds) of an IANA timezone at a moment, for the zones clients send in
/// `context.tz` (fixed offsets, and the US/EU daylight-saving rules). `None` if unknown.
pub fn tz_offset(tz: &str, at: chrono::NaiveDateTime) -> Option<i64> {
    let h = |n: f64| (n * 3600.0) as i64;
    Some(match tz {
        "UTC" | "Etc/UTC" | "GMT" | "Etc/GMT" => 0,
        "Asia/Tokyo" | "Asia/Seoul" => h(9.0),
        "Asia/Shanghai" | "Asia/Singapore" | "Asia/Hong_Kong" => h(8.0),
        "Asia/Kolkata" | "Asia/Calcutta" => h(5.5),
        "Asia/Dubai" => h(4.0),
        "Pacific/Kiritimati" => h(14.0),
        "Pacific/Honolulu" => h(-10.0),
        "Australia/Brisbane" => h(10.0),
        "America/Los_Angeles" => h(-8.0) + us_dst(at, -8),
        "America/Denver" => h(-7.0) + us_dst(at, -7),
        "America/Chicago" => h(-6.0) + us_dst(at, -6),
        "America/New_York" => h(-5.0) + us_dst(at, -5),
        "Europe/London" | "Europe/Lisbon" => eu_dst(at),
        "Europe/Paris" | "Europe/Brussels" | "Europe/Berlin" | "Europe/Madrid" | "Europe/Rome"
        | "Europe/Amsterdam" => h(1.0) + eu_dst(at),
        _ => return None,
    })
}

/// US daylight saving: from the second Sunday of March to the first Sunday of November,
/// 02:00 local standard time.
fn us_dst(at: chrono::NaiveDateTime, std_hours: i64) -> i64 {
    use chrono::{Datelike, NaiveDate, Weekday};
    let local = at + chrono::Duration::hours(std_hours);
    let sunday = |month: u32, n: u8| {
        NaiveDate::from_weekday_of_month_opt(local.year(), month, Weekday::Sun, n)
            .and_then(|d| d.and_hms_opt(2, 0, 0))
    };
    match (sunday(3, 2), sunday(11, 1)) {
        (Some(b), Some(e)) if local >= b && local < e - chrono::Duration::hours(1) => 3600,
        _ => 0,
    }
}

/// EU summer time: from the last Sunday of March to the last Sunday of October, 01:00 UTC.
fn eu_dst(at: chrono::NaiveDateTime) -> i64 {
    use chrono::{Datelike, Duration, NaiveDate, Weekday};
    let last_sunday = |month: u32| {
        let first_next = NaiveDate::from_ymd_opt(at.year(), month + 1, 1)?;
        let mut d = first_next - Duration::days(1);
        while d.weekday() != Weekday::Sun {
            d -= Duration::days(1);
        }
        d.and_hms_opt(1, 0, 0)
    };
    match (last_sunday(3), last_sunday(10)) {
        (Some(b), Some(e)) if at >= b && at < e => 3600,
        _ => 0,
    }
}
