//! `read_group(domain, fields, groupby, offset, limit, orderby, lazy)` as Odoo 18's
//! web-compatible layer over `_read_group` answers it (08_26, 10_092-10_095, 10_104/10_105):
//!
//! * aggregates: `"amount_total:sum"`, `"id:count"`, `"alias:max(field)"`, or a plain numeric
//!   field name (its default aggregator, `sum`); the result key is the name before `:`;
//! * lazy (the default) groups by the first groupby only, counts in `<field>_count` and
//!   passes the remaining groupbys in `__context.group_by`; non-lazy counts in `__count`;
//! * groups are ordered by the groupby values (a many2one by its comodel's `_order`),
//!   then `offset`/`limit` apply to groups;
//! * `__domain` is the request's domain AND-ed with each group's condition, normalized;
//! * a date/datetime groupby (`date_order:day`, default `month`) is truncated in the
//!   context's `tz` and labelled like babel (`"24 Nov 2026"`), its `__range` and `__domain`
//!   bounds are in UTC (10_105).

use crate::exc::{Exc, OResult};
use crate::import::tz_offset;
use crate::orm::FieldType::*;
use crate::orm::*;
use crate::registry::Env;
use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime};
use serde_json::{Map, Value, json};
use std::cmp::Ordering;

/// One groupby: its spec (`date_order:day`), field and granularity (dates only).
struct GroupBy<'a> {
    spec: String,
    field: &'a FieldDef,
    granularity: Option<String>,
}

/// One aggregate: result key, field name, function.
struct Aggregate {
    key: String,
    field: String,
    func: String,
}

/// A group's value for one groupby: a record id, a truncated local date, or a plain value.
#[derive(Clone, PartialEq)]
enum Key {
    Null,
    Id(Id),
    Date(NaiveDateTime),
    Plain(Value),
}

pub fn read_group(
    env: &mut Env,
    model: &str,
    args: &[Value],
    kwargs: &Map<String, Value>,
) -> OResult<Value> {
    let get = |i: usize, k: &str| args.get(i).cloned().or_else(|| kwargs.get(k).cloned());
    let domain = get(0, "domain").unwrap_or(json!([]));
    let fields: Vec<String> = strings(get(1, "fields"));
    let groupby: Vec<String> = strings(get(2, "groupby"));
    let offset = get(3, "offset").and_then(|v| v.as_u64()).unwrap_or(0) as usize;
    let limit = get(4, "limit").and_then(|v| v.as_u64()).map(|n| n as usize);
    let orderby = get(5, "orderby").and_then(|v| v.as_str().map(str::to_string));
    let lazy = get(6, "lazy")
        .map(|v| v.as_bool().unwrap_or(true))
        .unwrap_or(true);

    let def = env.reg.model(model)?;
    let lazy_groupby: Vec<String> = if lazy {
        groupby.iter().take(1).cloned().collect()
    } else {
        groupby.clone()
    };
    let gbs = lazy_groupby
        .iter()
        .map(|spec| {
            let name = spec.split(':').next().unwrap_or(spec);
            let field = def
                .field(name)
                .ok_or_else(|| Exc::value(format!("Invalid field '{name}' on model '{model}'")))?;
            let granularity = matches!(field.ty, Date | Datetime).then(|| {
                spec.split_once(':')
                    .map(|(_, g)| g.to_string())
                    .unwrap_or_else(|| "month".into())
            });
            Ok(GroupBy {
                spec: spec.clone(),
                field,
                granularity,
            })
        })
        .collect::<OResult<Vec<_>>>()?;
    let count_key = match lazy_groupby.as_slice() {
        [only] if lazy => format!("{}_count", only.split(':').next().unwrap_or(only)),
        _ => "__count".to_string(),
    };
    let aggregates = parse_aggregates(env, model, &fields, &lazy_groupby)?;

    let ids = env.search(model, &domain, 0, None, None)?;
    let tz = env
        .ctx
        .get("tz")
        .and_then(Value::as_str)
        .map(str::to_string);
    let mut groups: Vec<(Vec<Key>, Vec<Id>)> = Vec::new();
    for id in ids {
        let key = gbs
            .iter()
            .map(|g| group_key(env, model, id, g, tz.as_deref()))
            .collect::<OResult<Vec<_>>>()?;
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, members)) => members.push(id),
            None => groups.push((key, vec![id])),
        }
    }
    sort_groups(
        env,
        &gbs,
        &aggregates,
        orderby.as_deref(),
        &mut groups,
        model,
    )?;

    let mut out = Vec::new();
    for (key, members) in groups
        .into_iter()
        .skip(offset)
        .take(limit.unwrap_or(usize::MAX))
    {
        let mut row = Map::new();
        let mut row_domain = domain.clone();
        for (g, k) in gbs.iter().zip(&key) {
            let (value, condition) = group_value(env, g, k, tz.as_deref(), &mut row)?;
            row.insert(g.spec.clone(), value);
            row_domain = and_domains(&row_domain, &condition)?;
        }
        row.insert(count_key.clone(), json!(members.len()));
        for a in &aggregates {
            row.insert(a.key.clone(), aggregate(env, model, a, &members)?);
        }
        row.insert("__domain".into(), row_domain);
        if lazy && groupby.len() > 1 {
            row.insert(
                "__context".into(),
                json!({"group_by": groupby[lazy_groupby.len()..].to_vec()}),
            );
        }
        out.push(Value::Object(row));
    }
    Ok(Value::Array(out))
}

fn strings(v: Option<Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => vec![],
    }
}

/// `"name:func(field)"`, `"name:func"`, or a plain name (numeric fields only, `sum`).
fn parse_aggregates(
    env: &Env,
    model: &str,
    fields: &[String],
    groupby: &[String],
) -> OResult<Vec<Aggregate>> {
    let def = env.reg.model(model)?;
    let mut out = Vec::new();
    for spec in fields {
        if spec == "__count" {
            continue;
        }
        let (name, func) = match spec.split_once(':') {
            Some((n, f)) => (n.trim().to_string(), Some(f.trim().to_string())),
            None => (spec.trim().to_string(), None),
        };
        match func {
            Some(f) => match f.split_once('(') {
                Some((func, rest)) => out.push(Aggregate {
                    key: name,
                    field: rest.trim_end_matches(')').to_string(),
                    func: func.to_string(),
                }),
                None => out.push(Aggregate {
                    key: name.clone(),
                    field: name,
                    func: f,
                }),
            },
            None => {
                let field = def.field(&name).ok_or_else(|| {
                    Exc::value(format!("Invalid field '{name}' on model '{model}'"))
                })?;
                let numeric = matches!(field.ty, Integer | Float)
                    || (field.ty == Computed && MONETARY.contains(&name.as_str()));
                if numeric && !groupby.contains(spec) {
                    out.push(Aggregate {
                        key: name.clone(),
                        field: name,
                        func: "sum".into(),
                    });
                }
            }
        }
    }
    Ok(out)
}

/// Computed fields that are stored monetary amounts in Odoo (aggregated by `sum`).
const MONETARY: [&str; 6] = [
    "amount_total",
    "amount_untaxed",
    "amount_tax",
    "price_subtotal",
    "price_total",
    "amount_residual",
];

fn group_key(env: &Env, model: &str, id: Id, g: &GroupBy, tz: Option<&str>) -> OResult<Key> {
    let raw = env.get(model, id, g.field.name);
    Ok(match &g.field.ty {
        Many2one(comodel) => match raw.as_i64() {
            Some(rid) if env.db.exists(comodel, rid) => Key::Id(rid),
            _ => Key::Null,
        },
        Date | Datetime => {
            let Some(s) = raw.as_str() else {
                return Ok(Key::Null);
            };
            let at = match NaiveDateTime::parse_from_str(
                datetime_out(s).as_str(),
                "%Y-%m-%d %H:%M:%S",
            ) {
                Ok(dt) => dt,
                Err(_) => match NaiveDate::parse_from_str(s, "%Y-%m-%d") {
                    Ok(d) => d.and_hms_opt(0, 0, 0).expect("midnight"),
                    Err(_) => return Ok(Key::Null),
                },
            };
            let local = match (&g.field.ty, tz.and_then(|t| tz_offset(t, at))) {
                (Datetime, Some(off)) => at + Duration::seconds(off),
                _ => at,
            };
            Key::Date(truncate(local, g.granularity.as_deref().unwrap_or("month")))
        }
        _ => match env.read_field(model, id, g.field)? {
            v if matches!(g.field.ty, Boolean) => Key::Plain(v),
            v if is_empty(&v) => Key::Null,
            v => Key::Plain(v),
        },
    })
}

/// `date_trunc(granularity, local)`.
fn truncate(at: NaiveDateTime, granularity: &str) -> NaiveDateTime {
    let d = at.date();
    let day = |d: NaiveDate| d.and_hms_opt(0, 0, 0).expect("midnight");
    let first = |y: i32, m: u32| NaiveDate::from_ymd_opt(y, m, 1).expect("first of month");
    match granularity {
        "hour" => day(d) + Duration::hours(i64::from(chrono::Timelike::hour(&at))),
        "day" => day(d),
        "week" => day(d - Duration::days(d.weekday().num_days_from_monday() as i64)),
        "quarter" => day(first(d.year(), (d.month() - 1) / 3 * 3 + 1)),
        "year" => day(first(d.year(), 1)),
        _ => day(first(d.year(), d.month())),
    }
}

/// The end of the interval starting at `start`.
fn interval_end(start: NaiveDateTime, granularity: &str) -> NaiveDateTime {
    let add_months = |n: u32| {
        let m0 = start.month0() + n;
        NaiveDate::from_ymd_opt(start.year() + (m0 / 12) as i32, m0 % 12 + 1, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .unwrap_or(start)
    };
    match granularity {
        "hour" => start + Duration::hours(1),
        "day" => start + Duration::days(1),
        "week" => start + Duration::days(7),
        "quarter" => add_months(3),
        "year" => add_months(12),
        _ => add_months(1),
    }
}

/// babel's label for a date group (en_US).
fn date_label(start: NaiveDateTime, granularity: &str) -> String {
    match granularity {
        "hour" => start.format("%I:00 %d %b").to_string(),
        "day" => start.format("%d %b %Y").to_string(),
        "week" => format!(
            "W{} {:04}",
            start.iso_week().week(),
            start.iso_week().year()
        ),
        "quarter" => format!("Q{} {}", start.month0() / 3 + 1, start.year()),
        "year" => start.format("%Y").to_string(),
        _ => start.format("%B %Y").to_string(),
    }
}

/// The value shown for a group, and the condition selecting it (also fills `__range`).
fn group_value(
    env: &Env,
    g: &GroupBy,
    key: &Key,
    tz: Option<&str>,
    row: &mut Map<String, Value>,
) -> OResult<(Value, Value)> {
    let name = g.field.name;
    Ok(match key {
        Key::Id(id) => {
            let comodel = match &g.field.ty {
                Many2one(c) => *c,
                _ => "",
            };
            (
                json!([id, env.display_name(comodel, *id)?]),
                json!([[name, "=", id]]),
            )
        }
        Key::Date(local_start) => {
            let granularity = g.granularity.as_deref().unwrap_or("month");
            let local_end = interval_end(*local_start, granularity);
            let (fmt, start, end) = match &g.field.ty {
                Datetime => {
                    let to_utc = |t: NaiveDateTime| {
                        t - Duration::seconds(tz.and_then(|z| tz_offset(z, t)).unwrap_or(0))
                    };
                    ("%Y-%m-%d %H:%M:%S", to_utc(*local_start), to_utc(local_end))
                }
                _ => ("%Y-%m-%d", *local_start, local_end),
            };
            let (from, to) = (start.format(fmt).to_string(), end.format(fmt).to_string());
            range_entry(row, &g.spec, json!({"from": from, "to": to}));
            (
                json!(date_label(*local_start, granularity)),
                json!(["&", [name, ">=", from], [name, "<", to]]),
            )
        }
        Key::Null => {
            if g.granularity.is_some() {
                range_entry(row, &g.spec, json!(false));
            }
            (json!(false), json!([[name, "=", false]]))
        }
        Key::Plain(v) => (v.clone(), json!([[name, "=", v]])),
    })
}

fn range_entry(row: &mut Map<String, Value>, spec: &str, v: Value) {
    let range = row.entry("__range").or_insert_with(|| json!({}));
    if let Value::Object(m) = range {
        m.insert(spec.to_string(), v);
    }
}

fn aggregate(env: &Env, model: &str, a: &Aggregate, members: &[Id]) -> OResult<Value> {
    let def = env.reg.model(model)?;
    let values: Vec<Value> = if a.field == "id" {
        members.iter().map(|i| json!(i)).collect()
    } else {
        let f = def
            .field(&a.field)
            .ok_or_else(|| Exc::value(format!("Invalid field '{}' on model '{model}'", a.field)))?;
        members
            .iter()
            .map(|&m| env.read_field(model, m, f))
            .collect::<OResult<Vec<_>>>()?
    };
    let numbers: Vec<f64> = values.iter().filter_map(Value::as_f64).collect();
    let integral = values.iter().all(|v| v.is_i64());
    let number = |x: f64| {
        if integral {
            json!(x as i64)
        } else {
            json!(round6(x))
        }
    };
    Ok(match a.func.as_str() {
        "count" => json!(
            values
                .iter()
                .filter(|v| !is_empty(v) || v.is_number())
                .count()
        ),
        "count_distinct" => {
            let mut seen: Vec<&Value> = Vec::new();
            for v in &values {
                if !seen.contains(&v) {
                    seen.push(v);
                }
            }
            json!(seen.len())
        }
        "min" => numbers
            .iter()
            .copied()
            .reduce(f64::min)
            .map_or(json!(false), number),
        "max" => numbers
            .iter()
            .copied()
            .reduce(f64::max)
            .map_or(json!(false), number),
        "avg" if !numbers.is_empty() => {
            json!(round6(numbers.iter().sum::<f64>() / numbers.len() as f64))
        }
        "bool_and" => json!(values.iter().all(|v| v.as_bool().unwrap_or(false))),
        "bool_or" => json!(values.iter().any(|v| v.as_bool().unwrap_or(false))),
        "array_agg" => Value::Array(values),
        _ => number(numbers.iter().sum()),
    })
}

/// A SQL numeric sum as Python sees it: the nearest float to the decimal result.
fn round6(x: f64) -> f64 {
    format!("{x:.6}").parse().unwrap_or(x)
}

/// Order groups by `orderby` (terms naming a groupby or an aggregate) or the groupbys.
fn sort_groups(
    env: &Env,
    gbs: &[GroupBy],
    aggregates: &[Aggregate],
    orderby: Option<&str>,
    groups: &mut [(Vec<Key>, Vec<Id>)],
    model: &str,
) -> OResult<()> {
    // Rank many2one ids by their comodel's `_order`.
    let mut ranks: Vec<Vec<Id>> = Vec::new();
    for (i, g) in gbs.iter().enumerate() {
        let mut ids: Vec<Id> = groups
            .iter()
            .filter_map(|(k, _)| match k[i] {
                Key::Id(id) => Some(id),
                _ => None,
            })
            .collect();
        if let Many2one(comodel) = &g.field.ty {
            let order = env.reg.model(comodel)?.order;
            env.sort_ids(comodel, &mut ids, order)?;
        }
        ranks.push(ids);
    }
    let mut terms: Vec<(Option<usize>, Option<usize>, bool)> = Vec::new();
    match orderby.filter(|o| !o.trim().is_empty()) {
        Some(o) => {
            for term in o.split(',') {
                let words: Vec<&str> = term.split_whitespace().collect();
                let Some(name) = words.first() else { continue };
                let desc = words.get(1).is_some_and(|d| d.eq_ignore_ascii_case("desc"));
                let gb = gbs
                    .iter()
                    .position(|g| g.spec == *name || g.field.name == *name);
                let agg = aggregates.iter().position(|a| a.key == *name);
                terms.push((gb, agg, desc));
            }
        }
        None => terms.extend((0..gbs.len()).map(|i| (Some(i), None, false))),
    }
    let mut agg_values: Vec<Vec<Value>> = Vec::new();
    for (_, members) in groups.iter() {
        agg_values.push(
            aggregates
                .iter()
                .map(|a| aggregate(env, model, a, members))
                .collect::<OResult<Vec<_>>>()?,
        );
    }
    let mut order: Vec<usize> = (0..groups.len()).collect();
    order.sort_by(|&a, &b| {
        for (gb, agg, desc) in &terms {
            let o = match (gb, agg) {
                (Some(i), _) => cmp_keys(&groups[a].0[*i], &groups[b].0[*i], &ranks[*i]),
                (None, Some(j)) => cmp_values(&agg_values[a][*j], &agg_values[b][*j]),
                _ => Ordering::Equal,
            };
            let o = if *desc { o.reverse() } else { o };
            if o != Ordering::Equal {
                return o;
            }
        }
        Ordering::Equal
    });
    let sorted: Vec<(Vec<Key>, Vec<Id>)> = order.iter().map(|&i| groups[i].clone()).collect();
    groups.clone_from_slice(&sorted);
    Ok(())
}

/// NULLs last; ids by rank; dates and values naturally.
fn cmp_keys(a: &Key, b: &Key, rank: &[Id]) -> Ordering {
    match (a, b) {
        (Key::Null, Key::Null) => Ordering::Equal,
        (Key::Null, _) => Ordering::Greater,
        (_, Key::Null) => Ordering::Less,
        (Key::Id(x), Key::Id(y)) => {
            let pos = |i: &Id| rank.iter().position(|r| r == i).unwrap_or(usize::MAX);
            pos(x).cmp(&pos(y))
        }
        (Key::Date(x), Key::Date(y)) => x.cmp(y),
        (Key::Plain(x), Key::Plain(y)) => cmp_values(x, y),
        _ => Ordering::Equal,
    }
}

fn cmp_values(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Number(x), Value::Number(y)) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(Ordering::Equal),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        _ => Ordering::Equal,
    }
}

/// `expression.AND([a, b])`: each normalized, empty ones dropped.
fn and_domains(a: &Value, b: &Value) -> OResult<Value> {
    let mut parts = Vec::new();
    for d in [a, b] {
        if let Some(items) = d.as_array()
            && !items.is_empty()
        {
            parts.push(normalize(items)?);
        }
    }
    let mut out: Vec<Value> = vec![json!("&"); parts.len().saturating_sub(1)];
    for p in parts {
        out.extend(p);
    }
    Ok(Value::Array(out))
}

/// `expression.normalize_domain`: implicit ANDs made explicit.
fn normalize(domain: &[Value]) -> OResult<Vec<Value>> {
    let mut out: Vec<Value> = Vec::new();
    let mut expected: i64 = 1;
    for token in domain {
        if expected == 0 {
            out.insert(0, json!("&"));
            expected = 1;
        }
        match token.as_str() {
            Some("!") => {}
            Some("&") | Some("|") => expected += 1,
            Some(_) => expected -= 1,
            None => expected -= 1,
        }
        out.push(token.clone());
    }
    if expected != 0 {
        return Err(Exc::value(format!(
            "Domain {} is syntactically not correct.",
            py_repr(&Value::Array(domain.to_vec()))
        )));
    }
    Ok(out)
}
