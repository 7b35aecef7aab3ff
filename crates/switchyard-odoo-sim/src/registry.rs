//! Models, their behaviour hooks, and the generic ORM methods every model answers
//! (`create`, `write`, `read`, `search*`, `unlink`, `name_search`, ...).

use crate::domain::Domain;
use crate::exc::{Exc, OResult};
use crate::orm::*;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// Model-specific behaviour. Every hook has a neutral default.
pub trait Behaviour: Send + Sync {
    /// Fill defaults into a create's values (sequences, states).
    fn defaults(&self, _env: &mut Env, _vals: &mut Map<String, Value>) -> OResult<()> {
        Ok(())
    }
    /// A computed field's value.
    fn compute(&self, _env: &Env, _id: Id, _field: &str) -> Option<OResult<Value>> {
        None
    }
    /// `display_name` when it is not just the rec_name.
    fn display_name(&self, _env: &Env, _id: Id) -> Option<String> {
        None
    }
    /// Constraints checked after create and write.
    fn check(&self, _env: &Env, _ids: &[Id]) -> OResult<()> {
        Ok(())
    }
    /// A `create` that updates an existing record instead and returns its id (stock.quant
    /// in inventory mode: the quant of the same product and location, 08_11).
    fn create_existing(&self, _env: &mut Env, _vals: &Map<String, Value>) -> OResult<Option<Id>> {
        Ok(None)
    }
    fn after_create(&self, _env: &mut Env, _id: Id) -> OResult<()> {
        Ok(())
    }
    fn after_write(&self, _env: &mut Env, _ids: &[Id], _vals: &Map<String, Value>) -> OResult<()> {
        Ok(())
    }
    fn before_unlink(&self, _env: &mut Env, _ids: &[Id]) -> OResult<()> {
        Ok(())
    }
    /// A business method (`action_confirm`, ...): `None` when the model has no such method.
    fn call(
        &self,
        _env: &mut Env,
        _method: &str,
        _ids: Vec<Id>,
        _args: &[Value],
        _kwargs: &Map<String, Value>,
    ) -> Option<OResult<Value>> {
        None
    }
}

pub struct Plain;
impl Behaviour for Plain {}

pub struct Model {
    pub def: ModelDef,
    pub behaviour: Box<dyn Behaviour>,
}

#[derive(Default)]
pub struct Registry {
    pub models: BTreeMap<&'static str, Model>,
}

impl Registry {
    pub fn add(&mut self, mut def: ModelDef, behaviour: Box<dyn Behaviour>) {
        for (name, ty) in [
            ("create_date", FieldType::Datetime),
            ("write_date", FieldType::Datetime),
            ("create_uid", FieldType::Many2one("res.users")),
            ("write_uid", FieldType::Many2one("res.users")),
            ("display_name", FieldType::Computed),
        ] {
            if def.field(name).is_none() {
                def.fields.push(FieldDef {
                    name,
                    ty,
                    required: false,
                    string: name,
                });
            }
        }
        self.models.insert(def.name, Model { def, behaviour });
    }

    pub fn model(&self, name: &str) -> OResult<&ModelDef> {
        self.models
            .get(name)
            .map(|m| &m.def)
            .ok_or_else(|| Exc::user(format!("Object {name} doesn't exist")))
    }

    pub fn behaviour(&self, name: &str) -> &dyn Behaviour {
        static PLAIN: Plain = Plain;
        self.models
            .get(name)
            .map(|m| m.behaviour.as_ref())
            .unwrap_or(&PLAIN)
    }
}

/// Id sequences (not rolled back with a failed transaction).
pub type Sequences = BTreeMap<String, Id>;

/// One transaction's view: the registry, the snapshot being changed, the caller.
pub struct Env<'a> {
    pub reg: &'a Registry,
    pub db: &'a mut Tables,
    pub seq: &'a mut Sequences,
    pub uid: Id,
    pub ctx: Map<String, Value>,
    /// Transaction start, `YYYY-MM-DD HH:MM:SS.ffffff` (Odoo's `write_date`).
    pub now: String,
    /// Side effects collected during the call (webhooks), run by the caller.
    pub effects: Vec<crate::Effect>,
}

impl<'a> Env<'a> {
    pub fn next_id(&mut self, model: &str) -> Id {
        let n = self.seq.entry(model.to_string()).or_insert(0);
        *n += 1;
        *n
    }

    pub fn lang(&self) -> &str {
        self.ctx
            .get("lang")
            .and_then(Value::as_str)
            .unwrap_or("en_US")
    }

    pub fn active_test(&self) -> bool {
        !matches!(self.ctx.get("active_test"), Some(Value::Bool(false)))
    }

    pub fn is_admin(&self) -> bool {
        self.uid == 1 || self.uid == 2
    }

    pub fn check_read_access(&self, model: &str) -> OResult<()> {
        let def = self.reg.model(model)?;
        if def.admin_only && !self.is_admin() {
            return Err(Exc::access(format!(
                "You are not allowed to access '{}' ({}) records.\n\nThis operation is allowed for the following groups:\n\t- Administration/Settings\n\nContact your administrator to request access if necessary.",
                def.description, def.name
            )));
        }
        Ok(())
    }

    pub fn check_write_access(&self, model: &str) -> OResult<()> {
        let def = self.reg.model(model)?;
        if (def.admin_only || model == "res.users" || model == "ir.model.data") && !self.is_admin()
        {
            let verb = if model == "ir.model.data" {
                "create"
            } else {
                "modify"
            };
            // ir.model.data is writable by group_erp_manager (10_038).
            let group = if model == "res.users" || model == "ir.model.data" {
                "Administration/Access Rights"
            } else {
                "Administration/Settings"
            };
            return Err(Exc::access(format!(
                "You are not allowed to {verb} '{}' ({}) records.\n\nThis operation is allowed for the following groups:\n\t- {group}\n\nContact your administrator to request access if necessary.",
                def.description, def.name
            )));
        }
        Ok(())
    }

    // ---- relations -------------------------------------------------------------------

    pub fn m2m_ids(&self, rec: &Record, field: &str) -> Vec<Id> {
        rec.get(field)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_i64).collect())
            .unwrap_or_default()
    }

    pub fn o2m_ids(&self, comodel: &str, inverse: &str, id: Id) -> Vec<Id> {
        let Some(t) = self.db.table(comodel) else {
            return vec![];
        };
        let mut ids: Vec<Id> = t
            .rows
            .iter()
            .filter(|(_, r)| r.get(inverse).and_then(Value::as_i64) == Some(id))
            .map(|(i, _)| *i)
            .collect();
        let order = self.reg.model(comodel).map(|d| d.order).unwrap_or("id");
        self.sort_ids(comodel, &mut ids, order).ok();
        ids
    }

    pub fn display_name(&self, model: &str, id: Id) -> OResult<String> {
        if let Some(n) = self.reg.behaviour(model).display_name(self, id) {
            return Ok(n);
        }
        let def = self.reg.model(model)?;
        let rec = self.db.get(model, id);
        Ok(rec
            .and_then(|r| r.get(def.rec_name))
            .map(|v| self.translated(v))
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default())
    }

    /// A translatable value (`{"en_US": .., "fr_FR": ..}`) in the context's language.
    pub fn translated(&self, v: &Value) -> Value {
        match v {
            Value::Object(m) => m
                .get(self.lang())
                .or_else(|| m.get("en_US"))
                .cloned()
                .unwrap_or(Value::Null),
            v => v.clone(),
        }
    }

    pub fn compute(&self, model: &str, id: Id, field: &str) -> OResult<Value> {
        if let Some(v) = self.reg.behaviour(model).compute(self, id, field) {
            return v;
        }
        if field == "display_name" {
            return Ok(Value::String(self.display_name(model, id)?));
        }
        Ok(falsy())
    }

    /// The stored value a domain compares against (translations resolved).
    pub fn stored_for_compare(
        &self,
        _model: &str,
        _id: Id,
        rec: &Record,
        field: &FieldDef,
    ) -> Value {
        let v = rec.get(field.name).cloned().unwrap_or(Value::Null);
        let v = self.translated(&v);
        if field.ty == FieldType::Boolean && v.is_null() {
            return Value::Bool(false);
        }
        v
    }

    // ---- read ------------------------------------------------------------------------

    /// A field's value as `read` returns it.
    pub fn read_field(&self, model: &str, id: Id, field: &FieldDef) -> OResult<Value> {
        let rec = self
            .db
            .get(model, id)
            .ok_or_else(|| Exc::missing(model, id, self.uid))?;
        let raw = rec.get(field.name).cloned().unwrap_or(Value::Null);
        Ok(match &field.ty {
            FieldType::Computed => self.compute(model, id, field.name)?,
            FieldType::Many2one(comodel) => match raw.as_i64() {
                Some(rid) if self.db.exists(comodel, rid) => {
                    json!([rid, self.display_name(comodel, rid)?])
                }
                _ => falsy(),
            },
            FieldType::Many2many(_) => json!(self.m2m_ids(rec, field.name)),
            FieldType::One2many(comodel, inverse) => json!(self.o2m_ids(comodel, inverse, id)),
            FieldType::Datetime => match raw.as_str() {
                Some(s) => Value::String(datetime_out(s)),
                None => falsy(),
            },
            FieldType::Boolean => Value::Bool(raw.as_bool().unwrap_or(false)),
            FieldType::Integer => {
                if raw.is_null() {
                    json!(0)
                } else {
                    raw
                }
            }
            FieldType::Float => json!(raw.as_f64().unwrap_or(0.0)),
            _ => {
                let v = self.translated(&raw);
                if v.is_null() { falsy() } else { v }
            }
        })
    }

    pub fn read(&self, model: &str, ids: &[Id], fields: &[String]) -> OResult<Vec<Value>> {
        self.check_read_access(model)?;
        let def = self.reg.model(model)?;
        let wanted: Vec<&FieldDef> = if fields.is_empty() {
            def.fields.iter().collect()
        } else {
            fields
                .iter()
                .filter(|f| f.as_str() != "id")
                .map(|f| {
                    def.field(f).ok_or_else(|| {
                        Exc::value(format!("Invalid field '{f}' on model '{model}'"))
                    })
                })
                .collect::<OResult<_>>()?
        };
        let mut out = Vec::new();
        for &id in ids {
            if !self.db.exists(model, id) {
                continue;
            }
            let mut row = Map::new();
            row.insert("id".into(), json!(id));
            for f in &wanted {
                row.insert(f.name.to_string(), self.read_field(model, id, f)?);
            }
            out.push(Value::Object(row));
        }
        Ok(out)
    }

    // ---- search ----------------------------------------------------------------------

    pub fn search(
        &self,
        model: &str,
        domain: &Value,
        offset: usize,
        limit: Option<usize>,
        order: Option<&str>,
    ) -> OResult<Vec<Id>> {
        self.check_read_access(model)?;
        let def = self.reg.model(model)?;
        let dom = Domain::parse(self, model, domain)?;
        let apply_active = def.has_active && self.active_test() && !dom.mentions("active");
        let mut ids = Vec::new();
        if let Some(t) = self.db.table(model) {
            for (id, rec) in &t.rows {
                if apply_active && rec.get("active") == Some(&Value::Bool(false)) {
                    continue;
                }
                if dom.matches(self, model, *id, rec)? {
                    ids.push(*id);
                }
            }
        }
        self.sort_ids(model, &mut ids, order.unwrap_or(def.order))?;
        let ids: Vec<Id> = ids.into_iter().skip(offset).collect();
        Ok(match limit {
            Some(l) => ids.into_iter().take(l).collect(),
            None => ids,
        })
    }

    /// Sort by an `order` clause; invalid clauses are Odoo's UserError.
    pub fn sort_ids(&self, model: &str, ids: &mut [Id], order: &str) -> OResult<()> {
        let def = self.reg.model(model)?;
        let invalid = || {
            Exc::user(format!(
                "Invalid \"order\" specified ({order}). A valid \"order\" specification is a comma-separated list of valid field names (optionally followed by asc/desc for the direction)"
            ))
        };
        let mut keys: Vec<(String, bool)> = Vec::new();
        for part in order.split(',') {
            let words: Vec<&str> = part.split_whitespace().collect();
            let (f, desc) = match words.as_slice() {
                [f] => (*f, false),
                [f, d] if d.eq_ignore_ascii_case("asc") => (*f, false),
                [f, d] if d.eq_ignore_ascii_case("desc") => (*f, true),
                [] => continue,
                _ => return Err(invalid()),
            };
            if f != "id" && def.field(f).is_none() {
                return Err(invalid());
            }
            keys.push((f.to_string(), desc));
        }
        let sort_key = |id: Id, f: &str| -> Value {
            if f == "id" {
                return json!(id);
            }
            let Some(fd) = def.field(f) else {
                return Value::Null;
            };
            match &fd.ty {
                FieldType::Many2one(c) => self
                    .db
                    .get(model, id)
                    .and_then(|r| r.get(f))
                    .and_then(Value::as_i64)
                    .map(|rid| Value::String(self.display_name(c, rid).unwrap_or_default()))
                    .unwrap_or(Value::Null),
                FieldType::Computed => self.compute(model, id, f).unwrap_or(Value::Null),
                _ => self
                    .db
                    .get(model, id)
                    .map(|r| self.stored_for_compare(model, id, r, fd))
                    .unwrap_or(Value::Null),
            }
        };
        ids.sort_by(|a, b| {
            for (f, desc) in &keys {
                let (va, vb) = (sort_key(*a, f), sort_key(*b, f));
                let o = cmp_sql(&va, &vb, *desc);
                if o != std::cmp::Ordering::Equal {
                    return o;
                }
            }
            a.cmp(b)
        });
        Ok(())
    }

    // ---- create / write / unlink -------------------------------------------------------

    pub fn create(&mut self, model: &str, vals_list: Vec<Map<String, Value>>) -> OResult<Vec<Id>> {
        self.check_write_access(model)?;
        let reg = self.reg;
        let def = reg.model(model)?;
        let mut ids = Vec::new();
        for mut vals in vals_list {
            if let Some(id) = reg.behaviour(model).create_existing(self, &vals)? {
                ids.push(id);
                continue;
            }
            reg.behaviour(model).defaults(self, &mut vals)?;
            let id = self.next_id(model);
            let mut rec = Record::new();
            if def.has_active {
                rec.insert("active".into(), Value::Bool(true));
            }
            rec.insert("create_date".into(), Value::String(self.now.clone()));
            rec.insert("write_date".into(), Value::String(self.now.clone()));
            rec.insert("create_uid".into(), json!(self.uid));
            rec.insert("write_uid".into(), json!(self.uid));
            self.db
                .table_mut(model)
                .insert(id, std::sync::Arc::new(rec));
            let mut later = Map::new();
            for (k, v) in vals {
                let f = def
                    .field(&k)
                    .ok_or_else(|| Exc::unknown_field_write(model, &k))?;
                if matches!(f.ty, FieldType::One2many(..)) {
                    later.insert(k, v);
                    continue;
                }
                self.set_field(model, id, f, v)?;
            }
            for (k, v) in later {
                let f = def.field(&k).expect("checked");
                self.set_field(model, id, f, v)?;
            }
            self.check_required(model, id)?;
            reg.behaviour(model).after_create(self, id)?;
            reg.behaviour(model).check(self, &[id])?;
            crate::webhooks::on_change(self, model, &[id], &[], true)?;
            ids.push(id);
        }
        Ok(ids)
    }

    fn check_required(&self, model: &str, id: Id) -> OResult<()> {
        let def = self.reg.model(model)?;
        let rec = self.db.get(model, id).expect("just written");
        for f in def.fields.iter().filter(|f| f.required) {
            if rec.get(f.name).is_none_or(is_empty) {
                return Err(Exc::validation(format!(
                    "The operation cannot be completed: Missing required value for the field '{}' ({}).\nModel: {} ({})\nField: {} ({})",
                    f.string, f.name, def.description, def.name, f.string, f.name
                )));
            }
        }
        Ok(())
    }

    pub fn write(&mut self, model: &str, ids: &[Id], vals: Map<String, Value>) -> OResult<()> {
        self.check_write_access(model)?;
        let reg = self.reg;
        let def = reg.model(model)?;
        for &id in ids {
            if !self.db.exists(model, id) {
                return Err(Exc::missing(model, id, self.uid));
            }
        }
        for k in vals.keys() {
            if def.field(k).is_none() {
                return Err(Exc::unknown_field_write(model, k));
            }
        }
        for &id in ids {
            for (k, v) in &vals {
                let f = def.field(k).expect("checked");
                self.set_field(model, id, f, v.clone())?;
            }
            let now = self.now.clone();
            let uid = self.uid;
            if let Some(r) = self.db.get_mut(model, id) {
                r.insert("write_date".into(), Value::String(now));
                r.insert("write_uid".into(), json!(uid));
            }
            self.check_required(model, id)?;
        }
        reg.behaviour(model).after_write(self, ids, &vals)?;
        reg.behaviour(model).check(self, ids)?;
        let changed: Vec<String> = vals.keys().cloned().collect();
        crate::webhooks::on_change(self, model, ids, &changed, false)?;
        Ok(())
    }

    pub fn unlink(&mut self, model: &str, ids: &[Id]) -> OResult<()> {
        self.check_write_access(model)?;
        for &id in ids {
            if !self.db.exists(model, id) {
                return Err(Exc::missing(model, id, self.uid));
            }
        }
        let reg = self.reg;
        reg.behaviour(model).before_unlink(self, ids)?;
        for &id in ids {
            self.db.table_mut(model).remove(id);
        }
        // Cascade: one2many children whose inverse points here go with their parent.
        for m in reg.models.values() {
            for f in &m.def.fields {
                if let FieldType::One2many(comodel, inverse) = &f.ty
                    && m.def.name == model
                {
                    let mut gone = Vec::new();
                    if let Some(t) = self.db.table(comodel) {
                        for (cid, r) in &t.rows {
                            if r.get(*inverse)
                                .and_then(Value::as_i64)
                                .is_some_and(|p| ids.contains(&p))
                            {
                                gone.push(*cid);
                            }
                        }
                    }
                    for cid in gone {
                        self.db.table_mut(comodel).remove(cid);
                    }
                }
            }
        }
        Ok(())
    }

    /// Store one field value, converting and validating it as Odoo does.
    pub fn set_field(&mut self, model: &str, id: Id, f: &FieldDef, v: Value) -> OResult<()> {
        let stored = match &f.ty {
            FieldType::Computed => return Ok(()),
            FieldType::Char | FieldType::Text | FieldType::Html => match v {
                Value::Bool(false) | Value::Null => Value::Null,
                Value::String(s) => {
                    let translatable =
                        self.reg.models.get(model).is_some_and(|m| {
                            m.def.rec_name == f.name && TRANSLATED.contains(&model)
                        });
                    if translatable {
                        let mut m = match self.db.get(model, id).and_then(|r| r.get(f.name)) {
                            Some(Value::Object(m)) => m.clone(),
                            _ => Map::new(),
                        };
                        let lang = self.lang().to_string();
                        if m.is_empty() || lang == "en_US" {
                            m.insert("en_US".into(), Value::String(s.clone()));
                        }
                        m.insert(lang, Value::String(s));
                        Value::Object(m)
                    } else if f.ty == FieldType::Html {
                        Value::String(sanitize_html(&s))
                    } else {
                        Value::String(s)
                    }
                }
                other => Value::String(match other {
                    Value::Number(n) => n.to_string(),
                    o => o.to_string(),
                }),
            },
            FieldType::Integer => json!(v.as_f64().unwrap_or(0.0) as i64),
            FieldType::Float => json!(v.as_f64().unwrap_or(0.0)),
            FieldType::Boolean => Value::Bool(match v {
                Value::Bool(b) => b,
                Value::Null => false,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            }),
            FieldType::Selection(options) => match &v {
                Value::Bool(false) | Value::Null => Value::Null,
                Value::String(s) if options.contains(&s.as_str()) => v.clone(),
                other => {
                    return Err(Exc::value(format!(
                        "Wrong value for {model}.{}: {}",
                        f.name,
                        py_repr(other)
                    )));
                }
            },
            FieldType::Date => match &v {
                Value::Bool(false) | Value::Null => Value::Null,
                Value::String(s) => Value::String(parse_date_in(s)?),
                other => {
                    return Err(Exc::type_error(format!(
                        "Wrong date value {}",
                        py_repr(other)
                    )));
                }
            },
            FieldType::Datetime => match &v {
                Value::Bool(false) | Value::Null => Value::Null,
                Value::String(s) => Value::String(parse_datetime_in(s)?),
                other => {
                    return Err(Exc::type_error(format!(
                        "Wrong datetime value {}",
                        py_repr(other)
                    )));
                }
            },
            FieldType::Many2one(comodel) => match &v {
                // Odoo accepts a pair, 0 and a numeric string, and clears the field (10_063-66).
                Value::Number(n) if n.as_i64().is_some_and(|i| i > 0) => {
                    let rid = n.as_i64().unwrap_or(0);
                    if !self.db.exists(comodel, rid) {
                        let def = self.reg.model(model)?;
                        return Err(Exc::validation(format!(
                            "The operation cannot be completed: another model requires the record being deleted. If possible, archive it instead.\n\nModel: {} ({})\nConstraint: {}_{}_fkey\n",
                            def.description,
                            model,
                            model.replace('.', "_"),
                            f.name
                        )));
                    }
                    json!(rid)
                }
                _ => Value::Null,
            },
            FieldType::Many2many(comodel) => {
                let current = self
                    .db
                    .get(model, id)
                    .map(|r| self.m2m_ids(r, f.name))
                    .unwrap_or_default();
                let next = self.apply_m2m(model, f, comodel, current, &v)?;
                json!(next)
            }
            FieldType::One2many(comodel, inverse) => {
                self.apply_o2m(model, id, f, comodel, inverse, &v)?;
                return Ok(());
            }
        };
        if let Some(r) = self.db.get_mut(model, id) {
            r.insert(f.name.to_string(), stored);
        }
        Ok(())
    }

    fn bad_x2m(&self, model: &str, f: &FieldDef, v: &Value) -> Exc {
        Exc::value(format!(
            "Wrong value for {model}.{}: {}",
            f.name,
            py_repr(v)
        ))
    }

    fn apply_m2m(
        &mut self,
        model: &str,
        f: &FieldDef,
        comodel: &str,
        mut ids: Vec<Id>,
        v: &Value,
    ) -> OResult<Vec<Id>> {
        let cmds = match v {
            Value::Array(a) => a.clone(),
            Value::Bool(false) | Value::Null => return Ok(vec![]),
            other => return Err(self.bad_x2m(model, f, other)),
        };
        // A plain id list means "replace" (10_049).
        if !cmds.is_empty() && cmds.iter().all(|c| c.is_i64()) {
            return Ok(cmds.iter().filter_map(Value::as_i64).collect());
        }
        for c in cmds {
            let c = c
                .as_array()
                .cloned()
                .ok_or_else(|| self.bad_x2m(model, f, v))?;
            let code = c.first().and_then(Value::as_i64).unwrap_or(-1);
            let arg = c.get(1).and_then(Value::as_i64).unwrap_or(0);
            match code {
                0 => {
                    let vals = vals_of(c.get(2).unwrap_or(&Value::Null))?;
                    let new = self.create(comodel, vec![vals])?;
                    ids.extend(new);
                }
                1 => {
                    let vals = vals_of(c.get(2).unwrap_or(&Value::Null))?;
                    self.write(comodel, &[arg], vals)?;
                }
                2 => {
                    ids.retain(|i| *i != arg);
                    self.unlink(comodel, &[arg])?;
                }
                3 => ids.retain(|i| *i != arg),
                4 if !ids.contains(&arg) => {
                    ids.push(arg);
                }
                5 => ids.clear(),
                6 => {
                    ids = c
                        .get(2)
                        .and_then(Value::as_array)
                        .map(|a| a.iter().filter_map(Value::as_i64).collect())
                        .unwrap_or_default();
                }
                _ => {} // unknown commands are ignored (10_057)
            }
        }
        Ok(ids)
    }

    fn apply_o2m(
        &mut self,
        model: &str,
        id: Id,
        f: &FieldDef,
        comodel: &str,
        inverse: &str,
        v: &Value,
    ) -> OResult<()> {
        let cmds = match v {
            Value::Array(a) => a.clone(),
            Value::Bool(false) | Value::Null => return Ok(()),
            other => return Err(self.bad_x2m(model, f, other)),
        };
        for c in cmds {
            let c = match c {
                Value::Array(a) => a,
                Value::Number(n) => vec![json!(4), Value::Number(n)],
                other => return Err(self.bad_x2m(model, f, &other)),
            };
            let code = c.first().and_then(Value::as_i64).unwrap_or(-1);
            let arg = c.get(1).and_then(Value::as_i64).unwrap_or(0);
            match code {
                0 => {
                    let mut vals = vals_of(c.get(2).unwrap_or(&Value::Null))?;
                    vals.insert(inverse.to_string(), json!(id));
                    self.create(comodel, vec![vals])?;
                }
                1 => {
                    let vals = vals_of(c.get(2).unwrap_or(&Value::Null))?;
                    self.write(comodel, &[arg], vals)?;
                }
                2 | 3 => self.unlink(comodel, &[arg])?,
                4 => {
                    let mut vals = Map::new();
                    vals.insert(inverse.to_string(), json!(id));
                    self.write(comodel, &[arg], vals)?;
                }
                5 => {
                    let children = self.o2m_ids(comodel, inverse, id);
                    self.unlink(comodel, &children)?;
                }
                6 => {
                    let keep: Vec<Id> = c
                        .get(2)
                        .and_then(Value::as_array)
                        .map(|a| a.iter().filter_map(Value::as_i64).collect())
                        .unwrap_or_default();
                    let children = self.o2m_ids(comodel, inverse, id);
                    let gone: Vec<Id> = children
                        .iter()
                        .copied()
                        .filter(|c| !keep.contains(c))
                        .collect();
                    self.unlink(comodel, &gone)?;
                    for k in keep {
                        let mut vals = Map::new();
                        vals.insert(inverse.to_string(), json!(id));
                        self.write(comodel, &[k], vals)?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Set a field without the write machinery (business methods changing state).
    pub fn put(&mut self, model: &str, id: Id, field: &str, v: Value) {
        let now = self.now.clone();
        if let Some(r) = self.db.get_mut(model, id) {
            r.insert(field.to_string(), v);
            r.insert("write_date".into(), Value::String(now));
        }
    }

    pub fn get(&self, model: &str, id: Id, field: &str) -> Value {
        self.db
            .get(model, id)
            .and_then(|r| r.get(field))
            .cloned()
            .unwrap_or(Value::Null)
    }

    pub fn get_i64(&self, model: &str, id: Id, field: &str) -> Option<Id> {
        self.get(model, id, field).as_i64()
    }

    pub fn get_f64(&self, model: &str, id: Id, field: &str) -> f64 {
        self.get(model, id, field).as_f64().unwrap_or(0.0)
    }

    pub fn get_str(&self, model: &str, id: Id, field: &str) -> String {
        self.translated(&self.get(model, id, field))
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// Ids of `model` whose `field` equals `value` (no access or active filtering).
    pub fn find(&self, model: &str, field: &str, value: &Value) -> Vec<Id> {
        self.db
            .table(model)
            .map(|t| {
                t.rows
                    .iter()
                    .filter(|(_, r)| r.get(field) == Some(value))
                    .map(|(i, _)| *i)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Insert a record directly (seeding and business methods), returning its id.
    pub fn insert(&mut self, model: &str, vals: Value) -> Id {
        let id = self.next_id(model);
        let mut rec = Record::new();
        if self.reg.model(model).is_ok_and(|d| d.has_active) {
            rec.insert("active".into(), Value::Bool(true));
        }
        rec.insert("create_date".into(), Value::String(self.now.clone()));
        rec.insert("write_date".into(), Value::String(self.now.clone()));
        rec.insert("create_uid".into(), json!(self.uid));
        rec.insert("write_uid".into(), json!(self.uid));
        if let Value::Object(m) = vals {
            for (k, v) in m {
                rec.insert(k, v);
            }
        }
        self.db
            .table_mut(model)
            .insert(id, std::sync::Arc::new(rec));
        id
    }
}

/// Odoo's html sanitizer wraps plain text in a paragraph: writing `note: "concurrent"`
/// stores `<p>concurrent</p>` (07_23's logged UPDATE, 09_04).
fn sanitize_html(s: &str) -> String {
    if s.is_empty() || s.trim_start().starts_with('<') {
        return s.to_string();
    }
    let escaped = s
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    format!("<p>{escaped}</p>")
}

/// Models whose `_rec_name` is translatable (product names, tags).
const TRANSLATED: [&str; 2] = ["product.product", "product.template"];

/// PostgreSQL ordering: NULLs last ascending, first descending.
fn cmp_sql(a: &Value, b: &Value, desc: bool) -> std::cmp::Ordering {
    use std::cmp::Ordering::*;
    let null = |v: &Value| v.is_null();
    let o = match (null(a), null(b)) {
        (true, true) => Equal,
        (true, false) => Greater,
        (false, true) => Less,
        _ => match (a, b) {
            (Value::Number(x), Value::Number(y)) => {
                x.as_f64().partial_cmp(&y.as_f64()).unwrap_or(Equal)
            }
            (Value::String(x), Value::String(y)) => {
                x.to_lowercase().cmp(&y.to_lowercase()).then(x.cmp(y))
            }
            (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
            _ => Equal,
        },
    };
    if desc { o.reverse() } else { o }
}
