//! `call_kw`: binding Python-style positional and keyword arguments, then the generic
//! methods every model answers, then the model's own business methods.

use crate::exc::{Exc, OResult};
use crate::orm::*;
use crate::registry::Env;
use serde_json::{Map, Value, json};

/// A Python signature: the method's qualified name, its parameter names after `self`, and
/// how many of them are required.
struct Sig {
    qual: &'static str,
    params: &'static [&'static str],
    required: usize,
}

/// Bind `args` and `kwargs` to a signature like Python does (extra keyword arguments are
/// collected when `varkw` is set, otherwise a TypeError).
fn bind(
    sig: &Sig,
    args: &[Value],
    kwargs: &Map<String, Value>,
    varkw: bool,
) -> OResult<Vec<Option<Value>>> {
    if args.len() > sig.params.len() {
        let max = sig.params.len() + 1;
        let min = sig.required + 1;
        let range = if min == max {
            format!("{max}")
        } else {
            format!("from {min} to {max}")
        };
        return Err(Exc::type_error(format!(
            "{}() takes {range} positional arguments but {} were given",
            sig.qual,
            args.len() + 1
        )));
    }
    let mut out: Vec<Option<Value>> = sig.params.iter().map(|_| None).collect();
    for (i, a) in args.iter().enumerate() {
        out[i] = Some(a.clone());
    }
    for (k, v) in kwargs {
        if k == "context" {
            continue;
        }
        match sig.params.iter().position(|p| p == k) {
            Some(i) if out[i].is_some() => {
                return Err(Exc::type_error(format!(
                    "{}() got multiple values for argument '{k}'",
                    sig.qual
                )));
            }
            Some(i) => out[i] = Some(v.clone()),
            None if varkw => {}
            None => {
                return Err(Exc::type_error(format!(
                    "{}() got an unexpected keyword argument '{k}'",
                    sig.qual
                )));
            }
        }
    }
    for (i, p) in sig.params.iter().enumerate().take(sig.required) {
        if out[i].is_none() {
            return Err(Exc::type_error(format!(
                "{}() missing 1 required positional argument: '{p}'",
                sig.qual
            )));
        }
    }
    Ok(out)
}

fn opt_usize(v: &Option<Value>) -> Option<usize> {
    v.as_ref().and_then(Value::as_u64).map(|n| n as usize)
}

fn opt_str(v: &Option<Value>) -> Option<String> {
    v.as_ref().and_then(Value::as_str).map(str::to_string)
}

fn field_list(v: &Option<Value>) -> Vec<String> {
    v.as_ref()
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Methods of the recordset API that take ids first (`read`, `write`, buttons ...).
fn split_ids(args: &[Value]) -> OResult<(Vec<Id>, Vec<Value>)> {
    match args.split_first() {
        Some((first, rest)) => Ok((ids_of(first)?, rest.to_vec())),
        None => Err(Exc::type_error(
            "call_kw() missing the record ids (first positional argument)",
        )),
    }
}

/// Run `model.method(*args, **kwargs)` as Odoo's `call_kw` would.
pub fn call_kw(
    env: &mut Env,
    model: &str,
    method: &str,
    args: &[Value],
    kwargs: &Map<String, Value>,
) -> OResult<Value> {
    let reg = env.reg;
    reg.model(model)?;
    if method.starts_with('_') {
        return Err(Exc::access(format!(
            "Private methods (such as '{model}.{method}') cannot be called remotely."
        )));
    }
    match method {
        "search_read" => {
            let sig = Sig {
                qual: "BaseModel.search_read",
                params: &["domain", "fields", "offset", "limit", "order"],
                required: 0,
            };
            let a = bind(&sig, args, kwargs, true)?;
            let domain = a[0].clone().unwrap_or(json!([]));
            let ids = env.search(
                model,
                &domain,
                opt_usize(&a[2]).unwrap_or(0),
                opt_usize(&a[3]),
                opt_str(&a[4]).as_deref(),
            )?;
            Ok(json!(env.read(model, &ids, &field_list(&a[1]))?))
        }
        "search" => {
            let sig = Sig {
                qual: "BaseModel.search",
                params: &["domain", "offset", "limit", "order"],
                required: 1,
            };
            let a = bind(&sig, args, kwargs, false)?;
            let ids = env.search(
                model,
                a[0].as_ref().unwrap_or(&json!([])),
                opt_usize(&a[1]).unwrap_or(0),
                opt_usize(&a[2]),
                opt_str(&a[3]).as_deref(),
            )?;
            Ok(json!(ids))
        }
        "search_count" => {
            let sig = Sig {
                qual: "BaseModel.search_count",
                params: &["domain", "limit"],
                required: 1,
            };
            let a = bind(&sig, args, kwargs, false)?;
            let ids = env.search(
                model,
                a[0].as_ref().unwrap_or(&json!([])),
                0,
                opt_usize(&a[1]),
                Some("id"),
            )?;
            Ok(json!(ids.len()))
        }
        "read" => {
            let (ids, rest) = split_ids(args)?;
            let sig = Sig {
                qual: "BaseModel.read",
                params: &["fields", "load"],
                required: 0,
            };
            let a = bind(&sig, &rest, kwargs, false)?;
            Ok(json!(env.read(model, &ids, &field_list(&a[0]))?))
        }
        "create" => {
            let sig = Sig {
                qual: "create",
                params: &["vals_list"],
                required: 1,
            };
            let a = bind(&sig, args, kwargs, false)?;
            let v = a[0].clone().unwrap_or(Value::Null);
            match v {
                Value::Array(list) => {
                    let vals = list.iter().map(vals_of).collect::<OResult<Vec<_>>>()?;
                    Ok(json!(env.create(model, vals)?))
                }
                other => {
                    let ids = env.create(model, vec![vals_of(&other)?])?;
                    Ok(json!(ids[0]))
                }
            }
        }
        "write" => {
            let (ids, rest) = split_ids(args)?;
            let sig = Sig {
                qual: "BaseModel.write",
                params: &["vals"],
                required: 1,
            };
            let a = bind(&sig, &rest, kwargs, false)?;
            env.write(model, &ids, vals_of(a[0].as_ref().unwrap_or(&Value::Null))?)?;
            Ok(Value::Bool(true))
        }
        "unlink" => {
            let (ids, _) = split_ids(args)?;
            env.unlink(model, &ids)?;
            Ok(Value::Bool(true))
        }
        "exists" => {
            let (ids, _) = split_ids(args)?;
            Ok(json!(
                ids.into_iter()
                    .filter(|i| env.db.exists(model, *i))
                    .collect::<Vec<_>>()
            ))
        }
        "name_search" => {
            let sig = Sig {
                qual: "BaseModel.name_search",
                params: &["name", "domain", "operator", "limit"],
                required: 0,
            };
            let mut kw = kwargs.clone();
            if let Some(a) = kw.remove("args") {
                kw.insert("domain".into(), a);
            }
            let a = bind(&sig, args, &kw, false)?;
            name_search(env, model, &a)
        }
        "action_archive" | "action_unarchive" if reg.model(model)?.has_active => {
            let (ids, _) = split_ids(args)?;
            let mut vals = Map::new();
            vals.insert("active".into(), Value::Bool(method == "action_unarchive"));
            env.write(model, &ids, vals)?;
            Ok(Value::Null)
        }
        "fields_get" => crate::business::fields_get(env, model, args, kwargs),
        "default_get" => crate::business::default_get(env, model, args, kwargs),
        "read_group" => crate::import::read_group(env, model, args, kwargs),
        "load" => crate::import::load(env, model, args, kwargs),
        "get_external_id" => {
            let (ids, _) = split_ids(args)?;
            crate::import::get_external_id(env, model, &ids)
        }
        _ => {
            let (ids, rest) = match args.first() {
                Some(Value::Array(_)) | Some(Value::Number(_)) => split_ids(args)?,
                _ => (vec![], args.to_vec()),
            };
            match reg.behaviour(model).call(env, method, ids, &rest, kwargs) {
                Some(r) => r,
                None => Err(Exc::attribute(format!(
                    "The method '{model}.{method}' does not exist"
                ))),
            }
        }
    }
}

fn name_search(env: &mut Env, model: &str, a: &[Option<Value>]) -> OResult<Value> {
    let name = opt_str(&a[0]).unwrap_or_default();
    let operator = opt_str(&a[2]).unwrap_or_else(|| "ilike".into());
    let limit = opt_usize(&a[3]).unwrap_or(100);
    let extra = a[1].clone().unwrap_or(json!([]));
    let ids = env.search(model, &extra, 0, None, None)?;
    let mut out = Vec::new();
    for id in ids {
        let dn = env.display_name(model, id)?;
        let rec_name = env.get_str(model, id, env.reg.model(model)?.rec_name);
        let hit = name.is_empty()
            || crate::domain::compare_scalar(&json!(dn), &operator, &json!(name), &FieldType::Char)
            || crate::domain::compare_scalar(
                &json!(rec_name),
                &operator,
                &json!(name),
                &FieldType::Char,
            )
            || env
                .reg
                .behaviour(model)
                .compute(env, id, "default_code")
                .is_none()
                && model == "product.product"
                && crate::domain::compare_scalar(
                    &env.get("product.product", id, "default_code"),
                    &operator,
                    &json!(name),
                    &FieldType::Char,
                );
        if hit {
            out.push(json!([id, dn]));
        }
        if out.len() >= limit {
            break;
        }
    }
    Ok(Value::Array(out))
}

pub fn field_type_name(t: &FieldType) -> &'static str {
    match t {
        FieldType::Char => "char",
        FieldType::Text => "text",
        FieldType::Html => "html",
        FieldType::Integer => "integer",
        FieldType::Float => "float",
        FieldType::Boolean => "boolean",
        FieldType::Date => "date",
        FieldType::Datetime => "datetime",
        FieldType::Selection(_) => "selection",
        FieldType::Many2one(_) => "many2one",
        FieldType::One2many(..) => "one2many",
        FieldType::Many2many(_) => "many2many",
        FieldType::Computed => "char",
    }
}
