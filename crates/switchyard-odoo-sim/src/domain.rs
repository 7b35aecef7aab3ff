//! Odoo domains: prefix-notation `&`, `|`, `!` over `[field, operator, value]` leaves,
//! evaluated against stored records with Odoo's comparison rules.

use crate::exc::{Exc, OResult};
use crate::orm::{FieldType, Id, Record, is_empty, leaf_repr, parse_date_in, parse_datetime_in};
use crate::registry::Env;
use serde_json::Value;

const OPERATORS: [&str; 17] = [
    "=",
    "!=",
    "<>",
    ">",
    ">=",
    "<",
    "<=",
    "in",
    "not in",
    "like",
    "ilike",
    "not like",
    "not ilike",
    "=like",
    "=ilike",
    "child_of",
    "parent_of",
];

#[derive(Debug, Clone)]
pub enum Domain {
    And(Vec<Domain>),
    Or(Vec<Domain>),
    Not(Box<Domain>),
    Leaf {
        path: Vec<String>,
        op: String,
        value: Value,
        raw: Vec<Value>,
    },
    True,
}

impl Domain {
    /// Parse a domain list, checking operators and field names on `model`.
    pub fn parse(env: &Env, model: &str, v: &Value) -> OResult<Domain> {
        let items = match v {
            Value::Array(a) => a.clone(),
            Value::Bool(false) | Value::Null => vec![],
            other => {
                return Err(Exc::value(format!(
                    "Invalid domain: {}",
                    crate::orm::py_repr(other)
                )));
            }
        };
        if items.is_empty() {
            return Ok(Domain::True);
        }
        let mut pos = 0;
        let mut terms = Vec::new();
        while pos < items.len() {
            terms.push(parse_term(env, model, &items, &mut pos)?);
        }
        Ok(if terms.len() == 1 {
            terms.pop().unwrap_or(Domain::True)
        } else {
            Domain::And(terms)
        })
    }

    /// Whether the domain constrains `active` itself (then active_test adds nothing).
    pub fn mentions(&self, field: &str) -> bool {
        match self {
            Domain::And(d) | Domain::Or(d) => d.iter().any(|x| x.mentions(field)),
            Domain::Not(d) => d.mentions(field),
            Domain::Leaf { path, .. } => path.first().is_some_and(|p| p == field),
            Domain::True => false,
        }
    }

    pub fn matches(&self, env: &Env, model: &str, id: Id, rec: &Record) -> OResult<bool> {
        Ok(match self {
            Domain::True => true,
            Domain::And(ds) => {
                for d in ds {
                    if !d.matches(env, model, id, rec)? {
                        return Ok(false);
                    }
                }
                true
            }
            Domain::Or(ds) => {
                for d in ds {
                    if d.matches(env, model, id, rec)? {
                        return Ok(true);
                    }
                }
                false
            }
            Domain::Not(d) => !d.matches(env, model, id, rec)?,
            Domain::Leaf {
                path, op, value, ..
            } => leaf_matches(env, model, id, rec, path, op, value)?,
        })
    }
}

fn parse_term(env: &Env, model: &str, items: &[Value], pos: &mut usize) -> OResult<Domain> {
    let item = items
        .get(*pos)
        .ok_or_else(|| Exc::value("Domain is not well-formed"))?;
    *pos += 1;
    match item.as_str() {
        Some("&") => {
            let a = parse_term(env, model, items, pos)?;
            let b = parse_term(env, model, items, pos)?;
            Ok(Domain::And(vec![a, b]))
        }
        Some("|") => {
            let a = parse_term(env, model, items, pos)?;
            let b = parse_term(env, model, items, pos)?;
            Ok(Domain::Or(vec![a, b]))
        }
        Some("!") => Ok(Domain::Not(Box::new(parse_term(env, model, items, pos)?))),
        _ => parse_leaf(env, model, item),
    }
}

fn parse_leaf(env: &Env, model: &str, item: &Value) -> OResult<Domain> {
    let leaf = item
        .as_array()
        .filter(|a| a.len() == 3)
        .ok_or_else(|| Exc::value(format!("Invalid leaf {}", crate::orm::py_repr(item))))?;
    // Constant leaves Odoo uses for TRUE/FALSE.
    if leaf[0] == 1 && leaf[2] == 1 {
        return Ok(Domain::True);
    }
    if leaf[0] == 0 && leaf[2] == 1 {
        return Ok(Domain::Not(Box::new(Domain::True)));
    }
    let field = leaf[0]
        .as_str()
        .ok_or_else(|| Exc::value(format!("Invalid leaf {}", leaf_repr(leaf))))?;
    let op = leaf[1]
        .as_str()
        .map(|s| s.to_lowercase())
        .filter(|o| OPERATORS.contains(&o.as_str()))
        .ok_or_else(|| Exc::value(format!("Invalid leaf {}", leaf_repr(leaf))))?;
    let path: Vec<String> = field.split('.').map(str::to_string).collect();
    // Check every step of the path.
    let mut m = model.to_string();
    for (i, step) in path.iter().enumerate() {
        if step == "id" && i + 1 == path.len() {
            break;
        }
        let def = env.reg.model(&m)?;
        let f = def.field(step).ok_or_else(|| {
            Exc::value(format!(
                "Invalid field {m}.{step} in leaf {}",
                leaf_repr(leaf)
            ))
        })?;
        if i + 1 < path.len() {
            m = match &f.ty {
                FieldType::Many2one(c) | FieldType::Many2many(c) | FieldType::One2many(c, _) => {
                    c.to_string()
                }
                _ => {
                    return Err(Exc::value(format!(
                        "Invalid field {m}.{step} in leaf {}",
                        leaf_repr(leaf)
                    )));
                }
            };
        }
    }
    Ok(Domain::Leaf {
        path,
        op,
        value: leaf[2].clone(),
        raw: leaf.to_vec(),
    })
}

fn leaf_matches(
    env: &Env,
    model: &str,
    id: Id,
    rec: &Record,
    path: &[String],
    op: &str,
    value: &Value,
) -> OResult<bool> {
    let def = env.reg.model(model)?;
    let fname = &path[0];
    if fname == "id" && path.len() == 1 {
        return Ok(compare_scalar(
            &Value::from(id),
            op,
            value,
            &FieldType::Integer,
        ));
    }
    let Some(field) = def.field(fname) else {
        return Ok(false);
    };
    if path.len() > 1 {
        // Follow the relation: any related record matching the rest.
        let (comodel, targets) = related_ids(env, model, id, rec, field)?;
        let rest = &path[1..];
        let mut any = false;
        for t in targets {
            if let Some(r) = env.db.get(&comodel, t)
                && leaf_matches(env, &comodel, t, r, rest, op, value)?
            {
                any = true;
                break;
            }
        }
        return Ok(if op.starts_with("not ") || op == "!=" {
            // negative operators over a path: none of the related records violates
            any
        } else {
            any
        });
    }
    match &field.ty {
        FieldType::Many2one(comodel) => {
            let stored = rec.get(fname.as_str()).cloned().unwrap_or(Value::Null);
            m2o_matches(env, comodel, &stored, op, value)
        }
        FieldType::Many2many(comodel) | FieldType::One2many(comodel, _) => {
            let (_, ids) = related_ids(env, model, id, rec, field)?;
            x2m_matches(env, comodel, &ids, op, value)
        }
        FieldType::Computed => {
            let v = env.compute(model, id, fname)?;
            Ok(compare_scalar(&v, op, value, &FieldType::Char))
        }
        ty => {
            let stored = env.stored_for_compare(model, id, rec, field);
            let value = normalise_input(ty, value);
            Ok(compare_scalar(&stored, op, &value, ty))
        }
    }
}

fn related_ids(
    env: &Env,
    model: &str,
    id: Id,
    rec: &Record,
    field: &crate::orm::FieldDef,
) -> OResult<(String, Vec<Id>)> {
    Ok(match &field.ty {
        FieldType::Many2one(c) => (
            c.to_string(),
            rec.get(field.name)
                .and_then(Value::as_i64)
                .into_iter()
                .collect(),
        ),
        FieldType::Many2many(c) => (c.to_string(), env.m2m_ids(rec, field.name)),
        FieldType::One2many(c, inverse) => (c.to_string(), env.o2m_ids(c, inverse, id)),
        _ => (model.to_string(), vec![]),
    })
}

fn normalise_input(ty: &FieldType, value: &Value) -> Value {
    match (ty, value) {
        (FieldType::Datetime, Value::String(s)) => parse_datetime_in(s)
            .map(Value::String)
            .unwrap_or_else(|_| value.clone()),
        (FieldType::Date, Value::String(s)) => parse_date_in(s)
            .map(Value::String)
            .unwrap_or_else(|_| value.clone()),
        _ => value.clone(),
    }
}

fn m2o_matches(env: &Env, comodel: &str, stored: &Value, op: &str, value: &Value) -> OResult<bool> {
    let sid = stored.as_i64();
    let by_name = |names: &[&Value], like: bool| -> OResult<bool> {
        let Some(sid) = sid else { return Ok(false) };
        let dn = env.display_name(comodel, sid)?;
        Ok(names.iter().any(|n| match n.as_str() {
            Some(s) if like => dn.to_lowercase().contains(&s.to_lowercase()),
            Some(s) => dn == s,
            None => n.as_i64() == Some(sid),
        }))
    };
    Ok(match op {
        "=" | "!=" | "<>" => {
            let eq = match value {
                Value::Bool(false) | Value::Null => sid.is_none(),
                Value::String(_) => by_name(&[value], false)?,
                v => v.as_i64().is_some() && v.as_i64() == sid,
            };
            if op == "=" { eq } else { !eq }
        }
        "in" | "not in" => {
            let list: Vec<&Value> = value
                .as_array()
                .map(|a| a.iter().collect())
                .unwrap_or_else(|| vec![value]);
            let has_false = list.iter().any(|v| matches!(v, Value::Bool(false)));
            let found = (has_false && sid.is_none()) || by_name(&list, false)?;
            if op == "in" { found } else { !found }
        }
        "ilike" | "like" | "=like" | "=ilike" => by_name(&[value], true)?,
        "not ilike" | "not like" => !by_name(&[value], true)?,
        "child_of" | "parent_of" => by_name(&[value], false)?,
        _ => compare_scalar(
            &sid.map(Value::from).unwrap_or(Value::Null),
            op,
            value,
            &FieldType::Integer,
        ),
    })
}

fn x2m_matches(env: &Env, comodel: &str, ids: &[Id], op: &str, value: &Value) -> OResult<bool> {
    let list: Vec<Value> = match value {
        Value::Array(a) => a.clone(),
        v => vec![v.clone()],
    };
    let hit = |v: &Value| -> OResult<bool> {
        Ok(match v {
            Value::Bool(false) | Value::Null => ids.is_empty(),
            Value::String(s) => {
                let mut any = false;
                for i in ids {
                    let dn = env.display_name(comodel, *i)?;
                    if dn.to_lowercase().contains(&s.to_lowercase()) {
                        any = true;
                    }
                }
                any
            }
            v => v.as_i64().is_some_and(|x| ids.contains(&x)),
        })
    };
    let mut any = false;
    for v in &list {
        if hit(v)? {
            any = true;
        }
    }
    Ok(match op {
        "=" | "in" | "like" | "ilike" | "child_of" => any,
        "!=" | "<>" | "not in" | "not like" | "not ilike" => !any,
        _ => any,
    })
}

/// Compare a stored scalar with a domain value (empty stored values are SQL NULL).
pub fn compare_scalar(stored: &Value, op: &str, value: &Value, ty: &FieldType) -> bool {
    let empty = is_empty(stored)
        && !matches!(
            ty,
            FieldType::Boolean | FieldType::Integer | FieldType::Float
        );
    match op {
        "=" | "!=" | "<>" => {
            let eq = match value {
                Value::Bool(false) | Value::Null if !matches!(ty, FieldType::Boolean) => empty,
                _ => !empty && values_equal(stored, value, ty),
            };
            if op == "=" { eq } else { !eq }
        }
        "in" | "not in" => {
            let list: Vec<Value> = value
                .as_array()
                .cloned()
                .unwrap_or_else(|| vec![value.clone()]);
            let found = list.iter().any(|v| match v {
                Value::Bool(false) | Value::Null if !matches!(ty, FieldType::Boolean) => empty,
                v => !empty && values_equal(stored, v, ty),
            });
            if op == "in" { found } else { !found }
        }
        ">" | ">=" | "<" | "<=" => {
            if empty {
                return false;
            }
            let ord = order_values(stored, value);
            match op {
                ">" => ord == std::cmp::Ordering::Greater,
                ">=" => ord != std::cmp::Ordering::Less,
                "<" => ord == std::cmp::Ordering::Less,
                _ => ord != std::cmp::Ordering::Greater,
            }
        }
        "like" | "ilike" | "not like" | "not ilike" | "=like" | "=ilike" => {
            let s = stored.as_str().unwrap_or("");
            let pat = match value {
                Value::String(p) => p.clone(),
                Value::Bool(false) | Value::Null => String::new(),
                v => v.to_string(),
            };
            let ci = op.contains("ilike");
            let m = if op.starts_with('=') {
                like(s, &pat, ci)
            } else {
                !empty && (pat.is_empty() || like(s, &format!("%{pat}%"), ci))
            };
            if op.starts_with("not") { !m } else { m }
        }
        _ => false,
    }
}

fn values_equal(stored: &Value, value: &Value, ty: &FieldType) -> bool {
    match (stored, value) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (Value::Bool(a), Value::Bool(b)) => a == b,
        (Value::Bool(a), Value::Number(n)) if matches!(ty, FieldType::Boolean) => {
            *a == (n.as_i64() != Some(0))
        }
        (Value::String(a), Value::String(b)) => a == b,
        (Value::Number(a), Value::String(b)) => b.parse::<f64>().ok() == a.as_f64(),
        _ => false,
    }
}

fn order_values(a: &Value, b: &Value) -> std::cmp::Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(std::cmp::Ordering::Equal),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Number(x), Value::String(y)) => y
            .parse::<f64>()
            .ok()
            .and_then(|y| x.as_f64().and_then(|x| x.partial_cmp(&y)))
            .unwrap_or(std::cmp::Ordering::Equal),
        _ => std::cmp::Ordering::Equal,
    }
}

/// SQL LIKE with `%` and `_`.
fn like(s: &str, pat: &str, ci: bool) -> bool {
    let (s, pat) = if ci {
        (s.to_lowercase(), pat.to_lowercase())
    } else {
        (s.to_string(), pat.to_string())
    };
    let s: Vec<char> = s.chars().collect();
    let p: Vec<char> = pat.chars().collect();
    fn go(s: &[char], p: &[char]) -> bool {
        match p.first() {
            None => s.is_empty(),
            Some('%') => (0..=s.len()).any(|i| go(&s[i..], &p[1..])),
            Some('_') => !s.is_empty() && go(&s[1..], &p[1..]),
            Some(c) => s.first() == Some(c) && go(&s[1..], &p[1..]),
        }
    }
    go(&s, &p)
}
