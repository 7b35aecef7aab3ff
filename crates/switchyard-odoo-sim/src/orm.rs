//! A small ORM with Odoo's observable semantics: typed fields, `create`/`write`/`read`/
//! `unlink`/`search` with domains and `order`, x2many command lists, many2one quirks, and
//! `write_date` at transaction start (microseconds stored, whole seconds returned).
//!
//! Storage is a map of tables; a call runs against a copy-on-write snapshot that becomes the
//! database only when the call succeeds, so a failed call changes nothing (as in PostgreSQL).
//! Id sequences live outside the snapshot: a failed create still consumes its id.

use crate::exc::{Exc, OResult};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

pub type Id = i64;
pub type Record = BTreeMap<String, Value>;

#[derive(Debug, Clone, PartialEq)]
pub enum FieldType {
    Char,
    Text,
    Html,
    Integer,
    Float,
    Boolean,
    Date,
    Datetime,
    Selection(Vec<&'static str>),
    Many2one(&'static str),
    /// Comodel and the many2one on it that points back.
    One2many(&'static str, &'static str),
    Many2many(&'static str),
    /// Computed on read by the model's compute hook (not stored, not writable).
    Computed,
}

#[derive(Debug, Clone)]
pub struct FieldDef {
    pub name: &'static str,
    pub ty: FieldType,
    pub required: bool,
    pub string: &'static str,
}

impl FieldDef {
    pub fn is_relational(&self) -> bool {
        matches!(
            self.ty,
            FieldType::Many2one(_) | FieldType::One2many(..) | FieldType::Many2many(_)
        )
    }
}

/// A model's schema and behaviour.
pub struct ModelDef {
    pub name: &'static str,
    pub description: &'static str,
    pub fields: Vec<FieldDef>,
    /// `_order`.
    pub order: &'static str,
    /// The field behind `display_name` (`_rec_name`).
    pub rec_name: &'static str,
    /// Whether the model has an `active` field (archived rows hidden unless active_test off).
    pub has_active: bool,
    /// Which groups may read/write it: `None` = every internal user.
    pub admin_only: bool,
}

impl ModelDef {
    pub fn field(&self, name: &str) -> Option<&FieldDef> {
        self.fields.iter().find(|f| f.name == name)
    }
}

/// One model's rows. Each row is shared between the committed state and the copies
/// transactions work on until one of them changes it, so copying a table copies pointers
/// and finding what a transaction changed compares pointers first.
#[derive(Debug, Clone, Default)]
pub struct Table {
    /// Read freely; change through [`Table::insert`], [`Table::remove`] and
    /// [`Tables::get_mut`], which keep the external-id index true.
    pub rows: BTreeMap<Id, Arc<Record>>,
    /// `ir.model.data` only: (module, name) → id, built on the first lookup and kept up to
    /// date by `insert` (Odoo's unique index on those columns: a `load` of many rows looks
    /// up every row's external id, which a scan made quadratic).
    xids: std::sync::OnceLock<Arc<std::collections::HashMap<(String, String), Id>>>,
}

fn xid_key(rec: &Record) -> Option<(String, String)> {
    Some((
        rec.get("module")?.as_str()?.to_owned(),
        rec.get("name")?.as_str()?.to_owned(),
    ))
}

impl Table {
    pub fn insert(&mut self, id: Id, rec: Arc<Record>) {
        if let Some(ix) = self.xids.get_mut()
            && let Some(key) = xid_key(&rec)
        {
            Arc::make_mut(ix).insert(key, id);
        }
        self.rows.insert(id, rec);
    }

    pub fn remove(&mut self, id: Id) {
        // a stale index entry is caught by `xid`'s check of the row
        self.rows.remove(&id);
    }

    /// The `ir.model.data` row of `module.name`.
    pub fn xid(&self, module: &str, name: &str) -> Option<Id> {
        let matches = |id: &Id| {
            self.rows
                .get(id)
                .is_some_and(|r| xid_key(r).is_some_and(|(m, n)| m == module && n == name))
        };
        let ix = self.xids.get_or_init(|| {
            Arc::new(
                self.rows
                    .iter()
                    .filter_map(|(id, r)| Some((xid_key(r)?, *id)))
                    .collect(),
            )
        });
        match ix.get(&(module.to_owned(), name.to_owned())) {
            Some(id) if matches(id) => Some(*id),
            // the row changed or went: look the slow way
            Some(_) => self.rows.keys().find(|id| matches(id)).copied(),
            None => None,
        }
    }

    fn forget_xids(&mut self) {
        self.xids = std::sync::OnceLock::new();
    }
}

/// The database state that a transaction copies and replaces.
#[derive(Debug, Clone, Default)]
pub struct Tables {
    pub tables: BTreeMap<String, Arc<Table>>,
}

impl Tables {
    pub fn table(&self, model: &str) -> Option<&Table> {
        self.tables.get(model).map(|t| t.as_ref())
    }
    pub fn table_mut(&mut self, model: &str) -> &mut Table {
        Arc::make_mut(self.tables.entry(model.to_string()).or_default())
    }
    pub fn get(&self, model: &str, id: Id) -> Option<&Record> {
        self.table(model)
            .and_then(|t| t.rows.get(&id))
            .map(|r| r.as_ref())
    }
    pub fn get_mut(&mut self, model: &str, id: Id) -> Option<&mut Record> {
        let table = self.table_mut(model);
        if model == "ir.model.data" {
            // the caller may change module or name
            table.forget_xids();
        }
        table.rows.get_mut(&id).map(Arc::make_mut)
    }
    pub fn exists(&self, model: &str, id: Id) -> bool {
        self.get(model, id).is_some()
    }
    pub fn ids(&self, model: &str) -> Vec<Id> {
        self.table(model)
            .map(|t| t.rows.keys().copied().collect())
            .unwrap_or_default()
    }
}

/// A value as Odoo returns it for an empty field.
pub fn falsy() -> Value {
    Value::Bool(false)
}

pub fn is_empty(v: &Value) -> bool {
    matches!(v, Value::Null | Value::Bool(false))
        || v.as_str() == Some("")
        || v.as_array().is_some_and(|a| a.is_empty())
}

/// A stored datetime (with microseconds) as the wire shows it: whole seconds.
pub fn datetime_out(stored: &str) -> String {
    stored.get(..19).unwrap_or(stored).to_string()
}

/// Parse a datetime input the way Odoo 18 does: "YYYY-MM-DD HH:MM:SS" (optionally with a
/// fraction) or a date "YYYY-MM-DD"; anything else (e.g. ISO with `T`/`Z`) is ValueError.
pub fn parse_datetime_in(s: &str) -> OResult<String> {
    use chrono::NaiveDateTime;
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(format!("{} 00:00:00", d.format("%Y-%m-%d")));
    }
    let (main, frac) = match s.split_once('.') {
        Some((m, f)) if f.chars().all(|c| c.is_ascii_digit()) => (m, Some(f)),
        _ => (s, None),
    };
    match NaiveDateTime::parse_from_str(main, "%Y-%m-%d %H:%M:%S") {
        Ok(dt) => Ok(match frac {
            Some(f) => format!("{}.{f}", dt.format("%Y-%m-%d %H:%M:%S")),
            None => dt.format("%Y-%m-%d %H:%M:%S").to_string(),
        }),
        Err(_) => Err(Exc::value(format!(
            "time data '{s}' does not match format '%Y-%m-%d %H:%M:%S'"
        ))),
    }
}

/// A date input: a date, or a datetime truncated to its date (10_106).
pub fn parse_date_in(s: &str) -> OResult<String> {
    if s.len() >= 10 && chrono::NaiveDate::parse_from_str(&s[..10], "%Y-%m-%d").is_ok() {
        let rest = &s[10..];
        if rest.is_empty() || parse_datetime_in(s).is_ok() {
            return Ok(s[..10].to_string());
        }
    }
    Err(Exc::value(format!(
        "time data '{s}' does not match format '%Y-%m-%d'"
    )))
}

/// Python's `repr` of a JSON value, for error messages (`'bogus'`, `{'ids': [1]}`).
pub fn py_repr(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("'{}'", s.replace('\'', "\\'")),
        Value::Array(a) => format!("[{}]", a.iter().map(py_repr).collect::<Vec<_>>().join(", ")),
        Value::Object(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!("'{k}': {}", py_repr(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Python's `repr` of a domain leaf tuple.
pub fn leaf_repr(leaf: &[Value]) -> String {
    format!(
        "({})",
        leaf.iter().map(py_repr).collect::<Vec<_>>().join(", ")
    )
}

/// Convert a JSON object into a record-value map, or fail with Odoo's message.
pub fn vals_of(v: &Value) -> OResult<Map<String, Value>> {
    match v {
        Value::Object(m) => Ok(m.clone()),
        other => Err(Exc::type_error(format!(
            "'{}' object is not a mapping",
            py_type(other)
        ))),
    }
}

pub fn py_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

/// Ids from an argument that Odoo accepts as "ids": an int or a list of ints.
pub fn ids_of(v: &Value) -> OResult<Vec<Id>> {
    match v {
        Value::Number(n) => Ok(vec![n.as_i64().unwrap_or(0)]),
        Value::Array(a) => a
            .iter()
            .map(|x| {
                x.as_i64()
                    .ok_or_else(|| Exc::type_error("ids must be integers"))
            })
            .collect(),
        Value::Bool(false) | Value::Null => Ok(vec![]),
        other => Err(Exc::type_error(format!(
            "unsupported ids: {}",
            py_repr(other)
        ))),
    }
}

pub fn json_ids(ids: &[Id]) -> Value {
    json!(ids)
}
