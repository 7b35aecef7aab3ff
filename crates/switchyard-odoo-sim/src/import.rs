//! `load` (Odoo's import: external ids, CSV-style string cells, all-or-nothing batches with
//! row messages), `ir.model.data`, `get_external_id` and `read_group`.

use crate::exc::{Exc, OResult};
use crate::models::model;
use crate::orm::FieldType::*;
use crate::orm::*;
use crate::registry::{Behaviour, Env, Registry};
use serde_json::{Map, Value, json};

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
                    "The operation cannot be completed: duplicate key value violates unique constraint \"ir_model_data_module_name_uniq_index\"\nDETAIL: Key (module, name)=({}, {}) already exists.",
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
    env.find("ir.model.data", "module", &json!(module))
        .into_iter()
        .find(|i| env.get("ir.model.data", *i, "name") == json!(name))
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
    // An int-keyed dict in Python: XML-RPC cannot marshal it (10_035).
    Ok(Value::Object(out))
}

fn row_error(
    row: usize,
    field: Option<&FieldDef>,
    message: String,
    moreinfo: Option<Value>,
) -> Value {
    let mut m = Map::new();
    m.insert("rows".into(), json!({"from": row, "to": row}));
    m.insert("type".into(), json!("error"));
    m.insert("record".into(), json!(row));
    if let Some(f) = field {
        m.insert("field".into(), json!(f.name));
    }
    m.insert("message".into(), json!(message));
    if let Some(mi) = moreinfo {
        m.insert("moreinfo".into(), mi);
    }
    if let Some(f) = field {
        m.insert("field_name".into(), json!(f.string));
    }
    Value::Object(m)
}

/// `model.load(fields, data)`.
pub fn load(
    env: &mut Env,
    model: &str,
    args: &[Value],
    kwargs: &Map<String, Value>,
) -> OResult<Value> {
    let fields: Vec<String> = args
        .first()
        .or_else(|| kwargs.get("fields"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let data: Vec<Vec<Value>> = args
        .get(1)
        .or_else(|| kwargs.get("data"))
        .and_then(Value::as_array)
        .map(|rows| {
            rows.iter()
                .map(|r| r.as_array().cloned().unwrap_or_default())
                .collect()
        })
        .unwrap_or_default();
    let def = env.reg.model(model)?;
    for f in &fields {
        let base = f.split('/').next().unwrap_or("");
        if f != "id" && f != ".id" && def.field(base).is_none() {
            return Err(Exc::value(format!("Invalid field name '{f}'")));
        }
    }
    let mut ids = Vec::new();
    let mut messages = Vec::new();
    for (row, cells) in data.iter().enumerate() {
        let mut vals = Map::new();
        let mut xid: Option<String> = None;
        let mut db_id: Option<Id> = None;
        let mut row_failed = false;
        for (col, name) in fields.iter().enumerate() {
            let cell = cells.get(col).cloned().unwrap_or(json!(""));
            if name == "id" {
                xid = cell.as_str().filter(|s| !s.is_empty()).map(str::to_string);
                continue;
            }
            if name == ".id" {
                db_id = cell.as_str().and_then(|s| s.parse().ok());
                continue;
            }
            let (base, sub) = match name.split_once('/') {
                Some((b, s)) => (b, Some(s)),
                None => (name.as_str(), None),
            };
            let field = def.field(base).expect("checked");
            match convert_cell(env, model, field, sub, &cell) {
                Ok(Some(v)) => {
                    vals.insert(base.to_string(), v);
                }
                Ok(None) => {}
                Err(LoadError::Message(msg, more)) => {
                    messages.push(row_error(row, Some(field), msg, more));
                    row_failed = true;
                }
                Err(LoadError::Fault(e)) => return Err(e),
            }
        }
        if row_failed {
            continue;
        }
        let existing = match (&xid, db_id) {
            (_, Some(id)) => Some(id),
            (Some(x), None) => {
                let (m, n) = split_xid(x);
                xid_lookup(env, &m, &n).map(|(_, id)| id)
            }
            _ => None,
        };
        let result = match existing {
            Some(id) if env.db.exists(model, id) => env.write(model, &[id], vals).map(|_| id),
            _ => env.create(model, vec![vals]).map(|v| v[0]),
        };
        match result {
            Ok(id) => {
                if let (Some(x), None) = (&xid, existing) {
                    add_xid(env, x, model, id);
                }
                ids.push(id);
            }
            Err(e) if e.short_name() == "ValidationError" || e.short_name() == "UserError" => {
                let msg = e
                    .message
                    .trim_start_matches("The operation cannot be completed: ")
                    .to_string();
                messages.push(row_error(row, None, format!("'{msg}'"), None));
            }
            Err(e) => return Err(e),
        }
    }
    if !messages.is_empty() {
        // All or nothing: the caller's transaction is rolled back by returning an error
        // that carries the result (see `LoadRollback`).
        return Err(Exc::new(
            LOAD_ROLLBACK,
            crate::pyjson::dumps(&json!({"ids": false, "messages": messages, "nextrow": 0})),
        ));
    }
    Ok(json!({"ids": ids, "messages": [], "nextrow": 0}))
}

/// Marker exception: `load` failed as a whole; its message is the JSON result to return
/// after rolling back (Odoo answers normally with `"ids": false`).
pub const LOAD_ROLLBACK: &str = "switchyard.sim.LoadRollback";

enum LoadError {
    Message(String, Option<Value>),
    Fault(Exc),
}

fn convert_cell(
    env: &Env,
    model: &str,
    field: &FieldDef,
    sub: Option<&str>,
    cell: &Value,
) -> Result<Option<Value>, LoadError> {
    let s = match cell {
        Value::String(s) => s.clone(),
        Value::Bool(_) if matches!(field.ty, Boolean) => {
            return Err(LoadError::Fault(Exc::attribute(
                "'bool' object has no attribute 'lower'",
            )));
        }
        other => other.to_string(),
    };
    let _ = model;
    Ok(match &field.ty {
        Boolean => Some(json!(matches!(
            s.to_lowercase().as_str(),
            "1" | "true" | "yes"
        ))),
        Integer => Some(json!(s.parse::<i64>().map_err(|_| LoadError::Message(
            format!(
                "'{s}' does not seem to be an integer for field '{}'",
                field.string
            ),
            None
        ))?)),
        Float => {
            if s.is_empty() {
                Some(json!(0.0))
            } else {
                Some(json!(s.parse::<f64>().map_err(|_| LoadError::Message(
                    format!(
                        "'{s}' does not seem to be a number for field '{}'",
                        field.string
                    ),
                    None
                ))?))
            }
        }
        Selection(options) => {
            if s.is_empty() {
                None
            } else if options.contains(&s.as_str()) {
                Some(json!(s))
            } else {
                return Err(LoadError::Message(
                    format!(
                        "Value '{s}' not found in selection field '{}'",
                        field.string
                    ),
                    Some(json!(
                        options
                            .iter()
                            .map(|o| selection_label(o))
                            .collect::<Vec<_>>()
                    )),
                ));
            }
        }
        Many2one(comodel) => {
            if s.is_empty() {
                return Ok(Some(json!(false)));
            }
            let found = match sub {
                Some("id") => {
                    let (m, n) = split_xid(&s);
                    xid_lookup(env, &m, &n).map(|(_, id)| id).ok_or_else(|| {
                        LoadError::Message(
                            format!(
                                "No matching record found for external id '{s}' in field '{}'",
                                field.string
                            ),
                            Some(possible_values("ir.model.data", Some(comodel))),
                        )
                    })?
                }
                Some(".id") => s.parse::<Id>().map_err(|_| {
                    LoadError::Message(
                        format!("Invalid database id '{s}' for the field '{}'", field.string),
                        None,
                    )
                })?,
                _ => env
                    .db
                    .ids(comodel)
                    .into_iter()
                    .find(|i| env.display_name(comodel, *i).ok().as_deref() == Some(s.as_str()))
                    .ok_or_else(|| {
                        LoadError::Message(
                            format!(
                                "No matching record found for name '{s}' in field '{}'",
                                field.string
                            ),
                            Some(possible_values(comodel, None)),
                        )
                    })?,
            };
            Some(json!(found))
        }
        Many2many(comodel) => {
            let mut ids = Vec::new();
            for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                let id = env
                    .db
                    .ids(comodel)
                    .into_iter()
                    .find(|i| env.display_name(comodel, *i).ok().as_deref() == Some(name))
                    .ok_or_else(|| {
                        LoadError::Message(
                            format!(
                                "No matching record found for name '{name}' in field '{}'",
                                field.string
                            ),
                            Some(possible_values(comodel, None)),
                        )
                    })?;
                ids.push(id);
            }
            Some(json!([[6, 0, ids]]))
        }
        One2many(..) => {
            // Sub-rows create new children on every import (10_126-10_129).
            let key = sub.unwrap_or("name");
            let mut vals = Map::new();
            vals.insert(key.to_string(), json!(s));
            Some(json!([[0, 0, vals]]))
        }
        _ => {
            if s.is_empty() {
                Some(json!(false))
            } else {
                Some(json!(s))
            }
        }
    })
}

fn selection_label(v: &str) -> String {
    match v {
        "contact" => "Contact".into(),
        "invoice" => "Invoice Address".into(),
        "delivery" => "Delivery Address".into(),
        "other" => "Other Address".into(),
        "consu" => "Goods".into(),
        "service" => "Service".into(),
        "combo" => "Combo".into(),
        other => {
            let mut c = other.chars();
            c.next()
                .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                .unwrap_or_default()
        }
    }
}

fn possible_values(res_model: &str, for_model: Option<&str>) -> Value {
    let mut v = json!({"name": "Possible Values", "type": "ir.actions.act_window", "target": "new",
        "view_mode": "list,form", "views": [[false, "list"], [false, "form"]], "context": {"create": false},
        "help": "See all possible values", "res_model": res_model});
    if let Some(m) = for_model {
        v["domain"] = json!([["model", "=", m]]);
    }
    v
}

/// `read_group(domain, fields, groupby, offset, limit, orderby, lazy)`.
pub fn read_group(
    env: &mut Env,
    model: &str,
    args: &[Value],
    kwargs: &Map<String, Value>,
) -> OResult<Value> {
    let get = |i: usize, k: &str| args.get(i).cloned().or_else(|| kwargs.get(k).cloned());
    let domain = get(0, "domain").unwrap_or(json!([]));
    let fields: Vec<String> = get(1, "fields")
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    let groupby: Vec<String> = match get(2, "groupby") {
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => vec![],
    };
    let offset = get(3, "offset").and_then(|v| v.as_u64()).unwrap_or(0) as usize;
    let limit = get(4, "limit").and_then(|v| v.as_u64()).map(|n| n as usize);
    let lazy = get(6, "lazy")
        .map(|v| v.as_bool().unwrap_or(true))
        .unwrap_or(true);
    let ids = env.search(model, &domain, 0, None, None)?;
    let def = env.reg.model(model)?;
    let keys: Vec<String> = if lazy {
        groupby.iter().take(1).cloned().collect()
    } else {
        groupby.clone()
    };
    let mut groups: Vec<(Vec<Value>, Vec<Id>)> = Vec::new();
    for id in ids {
        let mut key = Vec::new();
        for g in &keys {
            let fname = g.split(':').next().unwrap_or(g);
            let f = def
                .field(fname)
                .ok_or_else(|| Exc::value(format!("Invalid field {fname:?} on model {model:?}")))?;
            key.push(env.read_field(model, id, f)?);
        }
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(id),
            None => groups.push((key, vec![id])),
        }
    }
    let mut out = Vec::new();
    for (key, members) in groups
        .into_iter()
        .skip(offset)
        .take(limit.unwrap_or(usize::MAX))
    {
        let mut row = Map::new();
        let mut dom = Vec::new();
        for (g, v) in keys.iter().zip(&key) {
            row.insert(g.clone(), v.clone());
            let fname = g.split(':').next().unwrap_or(g);
            let dv = match v {
                Value::Array(a) if !a.is_empty() => a[0].clone(),
                v => v.clone(),
            };
            dom.push(json!([fname, "=", dv]));
        }
        if lazy {
            row.insert(
                format!("{}_count", keys.first().cloned().unwrap_or_default()),
                json!(members.len()),
            );
        } else {
            row.insert("__count".into(), json!(members.len()));
        }
        for spec in &fields {
            let (name, agg) = match spec.split_once(':') {
                Some((n, a)) => (n.to_string(), a.to_string()),
                None => (spec.clone(), "sum".into()),
            };
            if keys
                .iter()
                .any(|k| k.split(':').next() == Some(name.as_str()))
            {
                continue;
            }
            if let Some(f) = def.field(&name)
                && matches!(f.ty, Float | Integer)
            {
                let mut total = 0.0;
                for &m in &members {
                    total += env.read_field(model, m, f)?.as_f64().unwrap_or(0.0);
                }
                let _ = &agg;
                row.insert(name.clone(), json!(total));
            }
        }
        row.insert("__domain".into(), json!(dom));
        if lazy && groupby.len() > 1 {
            row.insert(
                "__context".into(),
                json!({"group_by": groupby[1..].to_vec()}),
            );
        }
        out.push(Value::Object(row));
    }
    Ok(Value::Array(out))
}
