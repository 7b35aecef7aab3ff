//! `model.load(fields, data)`: Odoo's import, as recorded in group 10 (`10_001`-`10_027`,
//! `10_039`, `10_119`-`10_129`).
//!
//! It follows Odoo 18's `BaseModel.load` step by step, because the recordings show the
//! consequences of each step:
//!
//! 1. **Extract** (`_extract_records`): rows become records. A row whose only non-empty cells
//!    are one2many sub-columns (`child_ids/name`) continues the previous record; every
//!    relational column becomes a list of sub-records. An unknown column is a ValueError
//!    fault, not a message (10_010).
//! 2. **Convert** (`ir.fields.converter`): cells are CSV strings (`"True"`, `"12.50"`, names).
//!    An empty cell is `False`. A conversion problem is an error message on that row (with
//!    the field's label, 10_006/10_027) and the row is still loaded without that field;
//!    a non-string boolean cell crashes (`'bool' object has no attribute 'lower'`, 10_018).
//!    References: `field/id` (external id, 10_012), `field` (name, 10_013), `field/.id`
//!    (database id, 10_014); many2many by comma-separated names (10_123); one2many sub-rows
//!    are `Command.create`, so a re-import appends the children again (10_126-10_129).
//! 3. **Batch and flush** (`_load_records`): converted records wait in a batch that is
//!    written when a later row refers to an external id in it, or names a record of the
//!    same model, or at the end. So a row sees external ids created by *earlier* rows
//!    (10_120), not later ones (10_119). The batch is written in one go; if that fails it
//!    is written again record by record, each failure becoming a row message (10_006).
//!    The same external id twice makes the batch fail (the ids it created are consumed),
//!    then record by record the second row updates the first one's record (10_121).
//!    New external ids of `_inherits` children also name the parent record
//!    (`<xid>_product_template`, 10_026).
//! 4. Any error message rolls the whole call back: `"ids": false` (10_006-10_009).

use crate::exc::{Exc, OResult};
use crate::import::{add_xid, xid_lookup};
use crate::orm::FieldType::*;
use crate::orm::*;
use crate::registry::Env;
use serde_json::{Map, Value, json};
use std::collections::BTreeSet;

/// Marker exception: `load` failed as a whole; its message is the JSON result to return
/// after rolling back (Odoo answers normally with `"ids": false`).
pub const LOAD_ROLLBACK: &str = "switchyard.sim.LoadRollback";

/// `model.load(fields, data)`.
pub fn load(
    env: &mut Env,
    model: &str,
    args: &[Value],
    kwargs: &Map<String, Value>,
) -> OResult<Value> {
    let arg = |i: usize, k: &str| args.get(i).or_else(|| kwargs.get(k));
    let columns: Vec<Vec<String>> = arg(0, "fields")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(column_path)
                .collect()
        })
        .unwrap_or_default();
    let rows: Vec<Vec<Value>> = arg(1, "data")
        .and_then(Value::as_array)
        .map(|rows| {
            rows.iter()
                .map(|r| r.as_array().cloned().unwrap_or_default())
                .collect()
        })
        .unwrap_or_default();
    let records = extract(env, model, &columns, &rows)?;
    let mut loader = Loader::new(model);
    for (index, extracted) in records.into_iter().enumerate() {
        loader.convert_and_queue(env, index, extracted)?;
    }
    loader.flush(env)?;
    loader.finish()
}

/// `parent_id:id` and `parent_id/id` alike, split into the field path.
fn column_path(name: &str) -> Vec<String> {
    name.replace(":.id", "/.id")
        .replace(":id", "/id")
        .split('/')
        .map(str::to_string)
        .collect()
}

/// Python truthiness of a cell.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(m) => !m.is_empty(),
    }
}

// ---- 1. extract ----------------------------------------------------------------------

/// A cell of an extracted record: a plain value, or the sub-records of a relational field.
#[derive(Debug, Clone)]
enum Cell {
    Value(Value),
    Sub(Vec<Rec>),
}

/// An extracted record: `(column, cell)` in column order (`""` = the display name, as in a
/// bare relational column).
type Rec = Vec<(String, Cell)>;

struct Extracted {
    rec: Rec,
    from: usize,
    to: usize,
}

fn is_reference(name: &str) -> bool {
    matches!(name, "id" | ".id" | "")
}

/// `_extract_records`: group continuation rows, split relational columns into sub-records.
fn extract(
    env: &Env,
    model: &str,
    columns: &[Vec<String>],
    rows: &[Vec<Value>],
) -> OResult<Vec<Extracted>> {
    let def = env.reg.model(model)?;
    let mut fields = Vec::new();
    for col in columns {
        let name = col[0].as_str();
        match def.field(name) {
            Some(f) => fields.push(Some(f)),
            None if is_reference(name) => fields.push(None),
            None => return Err(Exc::value(format!("Invalid field name '{name}'"))),
        }
    }
    let relational = |i: usize| fields[i].is_some_and(FieldDef::is_relational);
    let o2m = |i: usize| fields[i].is_some_and(|f| matches!(f.ty, One2many(..)));
    let cell = |row: &[Value], i: usize| row.get(i).cloned().unwrap_or(json!(""));
    let only_o2m_values = |row: &[Value]| {
        let (sub, other): (Vec<usize>, Vec<usize>) = (0..columns.len()).partition(|&i| o2m(i));
        sub.iter().any(|&i| truthy(&cell(row, i))) && !other.iter().any(|&i| truthy(&cell(row, i)))
    };
    let mut relfields: Vec<&str> = Vec::new();
    for (i, col) in columns.iter().enumerate() {
        if relational(i) && !relfields.contains(&col[0].as_str()) {
            relfields.push(&col[0]);
        }
    }
    let mut out = Vec::new();
    let mut index = 0;
    while index < rows.len() {
        let mut span = 1;
        while index + span < rows.len() && only_o2m_values(&rows[index + span]) {
            span += 1;
        }
        let record_rows = &rows[index..index + span];
        let mut rec: Rec = Vec::new();
        for (i, col) in columns.iter().enumerate() {
            if !relational(i) {
                rec.push((col[0].clone(), Cell::Value(cell(&rows[index], i))));
            }
        }
        for rel in &relfields {
            let indices: Vec<usize> = (0..columns.len())
                .filter(|&i| columns[i][0] == *rel)
                .collect();
            let subcolumns: Vec<Vec<String>> = indices
                .iter()
                .map(|&i| match columns[i].len() {
                    1 => vec![String::new()],
                    _ => columns[i][1..].to_vec(),
                })
                .collect();
            let subrows: Vec<Vec<Value>> = record_rows
                .iter()
                .map(|r| indices.iter().map(|&i| cell(r, i)).collect::<Vec<_>>())
                .filter(|r| r.iter().any(truthy))
                .collect();
            let comodel = comodel_of(def.field(rel).expect("relational"));
            let subs = extract(env, comodel, &subcolumns, &subrows)?;
            rec.push((
                rel.to_string(),
                Cell::Sub(subs.into_iter().map(|e| e.rec).collect()),
            ));
        }
        out.push(Extracted {
            rec,
            from: index,
            to: index + span - 1,
        });
        index += span;
    }
    Ok(out)
}

fn comodel_of(f: &FieldDef) -> &'static str {
    match &f.ty {
        Many2one(c) | Many2many(c) | One2many(c, _) => c,
        _ => "",
    }
}

// ---- 2. convert ----------------------------------------------------------------------

/// A conversion problem: an error message (ValueError in Odoo) or a crash (a fault).
enum ConvError {
    Message(String, Option<Value>),
    Fault(Exc),
}

impl From<Exc> for ConvError {
    fn from(e: Exc) -> Self {
        ConvError::Fault(e)
    }
}

type Conv<T> = Result<T, ConvError>;

/// One record waiting in the batch.
struct Pending {
    xid: Option<String>,
    vals: Map<String, Value>,
    /// The `.id` column's record (update in place).
    db_id: Option<Id>,
    /// `{"rows": .., "record": ..}` for its messages.
    info: (usize, usize, usize),
}

struct Loader {
    model: String,
    batch: Vec<Pending>,
    batch_xids: BTreeSet<String>,
    ids: Vec<Id>,
    messages: Vec<Value>,
    /// Warnings of the field being converted (message, moreinfo).
    warnings: Vec<(String, Option<Value>)>,
}

impl Loader {
    fn new(model: &str) -> Loader {
        Loader {
            model: model.to_string(),
            batch: Vec::new(),
            batch_xids: BTreeSet::new(),
            ids: Vec::new(),
            messages: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// `_convert_records` for one record, then queue it (`load`'s loop).
    fn convert_and_queue(&mut self, env: &mut Env, index: usize, e: Extracted) -> OResult<()> {
        let info = (e.from, e.to, index);
        let model = self.model.clone();
        let def = env.reg.model(&model)?;
        let mut xid = None;
        let mut db_id = None;
        let mut vals = Map::new();
        for (name, cell) in e.rec {
            match (name.as_str(), cell) {
                ("id", Cell::Value(v)) => xid = v.as_str().filter(|s| !s.is_empty()).map(qualify),
                (".id", Cell::Value(v)) => db_id = self.check_db_id(env, &model, &v, info)?,
                ("", _) => {}
                (_, cell) => {
                    let field = def.field(&name).expect("extracted");
                    let converted = self.convert_field(env, &model, field, cell);
                    for (msg, more) in std::mem::take(&mut self.warnings) {
                        self.messages
                            .push(row_message(info, field, "warning", msg, more));
                    }
                    match converted {
                        Ok(v) => {
                            vals.insert(name, v);
                        }
                        Err(ConvError::Message(msg, more)) => {
                            self.messages
                                .push(row_message(info, field, "error", msg, more));
                        }
                        Err(ConvError::Fault(e)) => return Err(e),
                    }
                }
            }
        }
        if let Some(x) = &xid {
            self.batch_xids.insert(x.clone());
        }
        self.batch.push(Pending {
            xid,
            vals,
            db_id,
            info,
        });
        Ok(())
    }

    /// A `.id` cell: the record must exist ("Unknown database identifier").
    fn check_db_id(
        &mut self,
        env: &Env,
        model: &str,
        v: &Value,
        info: (usize, usize, usize),
    ) -> OResult<Option<Id>> {
        let s = cell_str(v);
        if s.is_empty() {
            return Ok(None);
        }
        match s.parse::<Id>() {
            Ok(id) if env.db.exists(model, id) => Ok(Some(id)),
            _ => {
                let mut m = info_map(info);
                m.insert("type".into(), json!("error"));
                m.insert("field".into(), json!(".id"));
                m.insert(
                    "message".into(),
                    json!(format!("Unknown database identifier '{s}'")),
                );
                self.messages.push(Value::Object(m));
                Ok(None)
            }
        }
    }

    /// One field's converted value (`for_model`'s `fn`): empty is `False`.
    fn convert_field(
        &mut self,
        env: &mut Env,
        model: &str,
        field: &FieldDef,
        cell: Cell,
    ) -> Conv<Value> {
        match cell {
            Cell::Value(v) if !truthy(&v) => Ok(json!(false)),
            Cell::Value(v) => convert_scalar(env, field, &v, &mut self.warnings),
            Cell::Sub(subs) if subs.is_empty() => Ok(json!(false)),
            Cell::Sub(subs) => match &field.ty {
                Many2one(comodel) => {
                    let (subfield, value) = referencing(field, &subs[0])?;
                    let id = self.db_id_for(env, comodel, field, &subfield, &value)?;
                    Ok(id.map_or(json!(false), |i| json!(i)))
                }
                Many2many(comodel) => {
                    let (subfield, value) = referencing(field, &subs[0])?;
                    let mut ids = Vec::new();
                    for reference in value.split(',') {
                        if let Some(id) =
                            self.db_id_for(env, comodel, field, &subfield, reference)?
                        {
                            ids.push(id);
                        }
                    }
                    Ok(json!([[6, 0, ids]]))
                }
                One2many(comodel, _) => self.one2many_commands(env, model, comodel, field, subs),
                _ => Ok(json!(false)),
            },
        }
    }

    /// `_str_to_one2many`: a sub-record naming an existing record links and updates it,
    /// any other creates a new child (so re-imports append, 10_128).
    fn one2many_commands(
        &mut self,
        env: &mut Env,
        _model: &str,
        comodel: &str,
        field: &FieldDef,
        subs: Vec<Rec>,
    ) -> Conv<Value> {
        let codef = env.reg.model(comodel)?;
        let mut commands = Vec::new();
        for sub in subs {
            let mut vals = Map::new();
            let mut reference = None;
            for (name, cell) in sub {
                if is_reference(&name) {
                    if let Cell::Value(v) = cell
                        && truthy(&v)
                    {
                        reference = Some((name, cell_str(&v)));
                    }
                    continue;
                }
                let Some(subfield) = codef.field(&name) else {
                    continue;
                };
                match self.convert_field(env, comodel, subfield, cell) {
                    Ok(v) => {
                        vals.insert(name, v);
                    }
                    Err(ConvError::Message(msg, more)) => {
                        let msg = msg.replace(
                            &format!("'{}'", subfield.string),
                            &format!("'{}/{}'", field.string, subfield.string),
                        );
                        return Err(ConvError::Message(msg, more));
                    }
                    Err(f) => return Err(f),
                }
            }
            let id = match reference {
                Some((subfield, value)) => {
                    self.db_id_for(env, comodel, field, &subfield, &value)?
                }
                None => None,
            };
            match id {
                Some(id) => {
                    commands.push(json!([4, id]));
                    commands.push(json!([1, id, vals]));
                }
                None => commands.push(json!([0, 0, vals])),
            }
        }
        Ok(Value::Array(commands))
    }

    /// `db_id_for`: the id a reference names, flushing the batch first when the
    /// reference may point into it.
    fn db_id_for(
        &mut self,
        env: &mut Env,
        comodel: &str,
        field: &FieldDef,
        subfield: &str,
        value: &str,
    ) -> Conv<Option<Id>> {
        let (kind, found) = match subfield {
            ".id" => {
                if !truthy_str(value) {
                    return Ok(None);
                }
                let id = value.parse::<Id>().map_err(|_| {
                    ConvError::Message(
                        format!(
                            "Invalid database id '{value}' for the field '{}'",
                            field.string
                        ),
                        Some(possible_values(comodel, None)),
                    )
                })?;
                ("database id", env.db.exists(comodel, id).then_some(id))
            }
            "id" => {
                let xid = qualify(value);
                if self.batch_xids.contains(&xid) {
                    self.flush(env)?;
                }
                let (module, name) = split_xid(&xid);
                let found = xid_lookup(env, &module, &name)
                    .filter(|(m, id)| m == comodel && env.db.exists(comodel, *id))
                    .map(|(_, id)| id);
                ("external id", found)
            }
            _ => {
                if value.is_empty() {
                    return Ok(None);
                }
                if comodel == self.model {
                    self.flush(env)?;
                }
                let found = name_search(env, comodel, value)?;
                if found.len() > 1 {
                    self.warnings.push((
                        format!(
                            "Found multiple matches for value '{value}' in field '{}' ({} matches)",
                            field.string,
                            found.len()
                        ),
                        None,
                    ));
                }
                ("name", found.first().copied())
            }
        };
        match found {
            Some(id) => Ok(Some(id)),
            None => Err(ConvError::Message(
                format!(
                    "No matching record found for {kind} '{value}' in field '{}'",
                    field.string
                ),
                Some(if subfield == "id" {
                    possible_values("ir.model.data", Some(comodel))
                } else {
                    possible_values(comodel, None)
                }),
            )),
        }
    }

    // ---- 3. flush --------------------------------------------------------------------

    /// Write the batch: all at once, or else record by record with a message per failure.
    fn flush(&mut self, env: &mut Env) -> OResult<()> {
        let batch = std::mem::take(&mut self.batch);
        self.batch_xids.clear();
        if batch.is_empty() {
            return Ok(());
        }
        let global_error = match savepoint(env, |env| load_records(env, &self.model, &batch)) {
            Ok(ids) => {
                self.ids.extend(ids);
                return Ok(());
            }
            Err(e) if is_user_error(&e) && !is_sql_error(&e) => Some(e),
            Err(_) => None,
        };
        let mut errors = false;
        for p in &batch {
            match savepoint(env, |env| {
                load_records(env, &self.model, std::slice::from_ref(p))
            }) {
                Ok(ids) => self.ids.extend(ids),
                Err(e) => {
                    errors = true;
                    self.messages.push(failure_message(p.info, &e));
                }
            }
        }
        if let Some(e) = global_error
            && errors
        {
            let mut m = info_map(batch[0].info);
            m.insert("type".into(), json!("error"));
            m.insert("message".into(), json!(e.message));
            let m = Value::Object(m);
            if !self.messages.contains(&m) {
                self.messages.insert(0, m);
            }
        }
        Ok(())
    }

    /// The answer; any error message rolls the whole call back (`"ids": false`).
    fn finish(self) -> OResult<Value> {
        let failed = self.messages.iter().any(|m| m["type"] == "error");
        if failed {
            return Err(Exc::new(
                LOAD_ROLLBACK,
                crate::pyjson::dumps(
                    &json!({"ids": false, "messages": self.messages, "nextrow": 0}),
                ),
            ));
        }
        Ok(json!({"ids": self.ids, "messages": self.messages, "nextrow": 0}))
    }
}

/// Run `f` in a savepoint: on error the records it wrote are gone (ids stay consumed).
fn savepoint<T>(env: &mut Env, f: impl FnOnce(&mut Env) -> OResult<T>) -> OResult<T> {
    let before = env.db.clone();
    let effects = env.effects.len();
    let r = f(env);
    if r.is_err() {
        *env.db = before;
        env.effects.truncate(effects);
    }
    r
}

/// `_load_records`: update what the external ids (or `.id`) name, create the rest, then
/// record the new external ids.
fn load_records(env: &mut Env, model: &str, batch: &[Pending]) -> OResult<Vec<Id>> {
    let mut targets: Vec<Option<Id>> = Vec::new();
    for p in batch {
        let existing = match (&p.xid, p.db_id) {
            (Some(x), _) => {
                let (module, name) = split_xid(x);
                xid_lookup(env, &module, &name)
                    .map(|(_, id)| id)
                    .filter(|id| env.db.exists(model, *id))
            }
            (None, id) => id,
        };
        targets.push(existing);
    }
    let mut ids = Vec::new();
    let mut created_xids: Vec<(String, Id)> = Vec::new();
    for (p, target) in batch.iter().zip(&targets) {
        let id = match target {
            Some(id) => {
                env.write(model, &[*id], p.vals.clone())?;
                *id
            }
            None => {
                let id = env.create(model, vec![p.vals.clone()])?[0];
                if let Some(x) = &p.xid {
                    created_xids.push((x.clone(), id));
                }
                id
            }
        };
        ids.push(id);
    }
    let mut seen = BTreeSet::new();
    for (xid, _) in &created_xids {
        if !seen.insert(xid) {
            // ON CONFLICT DO UPDATE cannot affect a row twice: the batch fails.
            return Err(Exc::new(
                "psycopg2.errors.CardinalityViolation",
                "ON CONFLICT DO UPDATE command cannot affect row a second time",
            ));
        }
    }
    for (xid, id) in created_xids {
        if let Some((parent_model, parent_field)) = inherits(model)
            && let Some(parent) = env.get_i64(model, id, parent_field)
        {
            let suffix = parent_model.replace('.', "_");
            set_xid(env, &format!("{xid}_{suffix}"), parent_model, parent);
        }
        set_xid(env, &xid, model, id);
    }
    Ok(ids)
}

/// `_inherits`: the parent model and the many2one to it.
fn inherits(model: &str) -> Option<(&'static str, &'static str)> {
    match model {
        "product.product" => Some(("product.template", "product_tmpl_id")),
        "res.users" => Some(("res.partner", "partner_id")),
        _ => None,
    }
}

/// Point an external id at a record (replacing a stale row whose record is gone).
fn set_xid(env: &mut Env, xid: &str, model: &str, id: Id) {
    let (module, name) = split_xid(xid);
    let stale = env
        .db
        .table("ir.model.data")
        .and_then(|t| t.xid(&module, &name));
    match stale {
        Some(row) => {
            env.put("ir.model.data", row, "model", json!(model));
            env.put("ir.model.data", row, "res_id", json!(id));
        }
        None => add_xid(env, xid, model, id),
    }
}

fn is_user_error(e: &Exc) -> bool {
    e.name.starts_with("odoo.exceptions.")
}

/// Errors Odoo gets from PostgreSQL (constraints), worded "The operation cannot be
/// completed: ..." when raised outside an import.
fn is_sql_error(e: &Exc) -> bool {
    e.message.starts_with("The operation cannot be completed: ") || e.name.starts_with("psycopg2.")
}

/// The message of a record that failed to load on its own.
fn failure_message(info: (usize, usize, usize), e: &Exc) -> Value {
    let mut m = info_map(info);
    m.insert("type".into(), json!("error"));
    let message = if is_sql_error(e) {
        // A constraint violation: the constraint's message, quoted (10_006).
        let msg = e
            .message
            .trim_start_matches("The operation cannot be completed: ")
            .trim_end();
        json!(format!("'{msg}'"))
    } else if is_user_error(e) {
        json!(e.message)
    } else {
        m.insert("moreinfo".into(), json!("Resolve other errors first"));
        json!(format!(
            "Unknown error during import: <class '{}'>: {}",
            e.name.trim_start_matches("builtins."),
            e.message
        ))
    };
    m.insert("message".into(), message);
    Value::Object(m)
}

// ---- cells and references ---------------------------------------------------------------

fn info_map((from, to, record): (usize, usize, usize)) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("rows".into(), json!({"from": from, "to": to}));
    m.insert("record".into(), json!(record));
    m
}

/// A conversion error message, with the field's name and label (10_006, 10_015).
fn row_message(
    info: (usize, usize, usize),
    field: &FieldDef,
    kind: &str,
    message: String,
    moreinfo: Option<Value>,
) -> Value {
    let mut m = info_map(info);
    m.insert("type".into(), json!(kind));
    m.insert("field".into(), json!(field.name));
    m.insert("message".into(), json!(message));
    if let Some(more) = moreinfo {
        m.insert("moreinfo".into(), more);
    }
    m.insert("field_name".into(), json!(field.string));
    Value::Object(m)
}

fn cell_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// `_str_to_boolean`'s falsy words (also what a `.id` reference may be to mean "none").
fn truthy_str(s: &str) -> bool {
    !matches!(
        s.to_lowercase().as_str(),
        "" | "0" | "false" | "no" | "faux" | "non"
    )
}

/// The words `_str_to_boolean` knows (English, and French since fr_FR is installed).
fn is_boolean_word(s: &str) -> bool {
    matches!(
        s.to_lowercase().as_str(),
        "" | "0" | "1" | "true" | "false" | "yes" | "no" | "vrai" | "faux" | "oui" | "non"
    )
}

/// `fields.Date.to_date`: the first ten characters as `YYYY-MM-DD`.
fn parse_import_date(s: &str) -> Option<String> {
    let head = s.get(..10.min(s.len()))?;
    chrono::NaiveDate::parse_from_str(head, "%Y-%m-%d")
        .ok()
        .map(|d| d.format("%Y-%m-%d").to_string())
}

/// An external id without a module belongs to `__import__` (10_002).
fn qualify(xid: &str) -> String {
    if xid.contains('.') {
        xid.to_string()
    } else {
        format!("__import__.{xid}")
    }
}

fn split_xid(xid: &str) -> (String, String) {
    match xid.split_once('.') {
        Some((m, n)) => (m.to_string(), n.to_string()),
        None => ("__import__".to_string(), xid.to_string()),
    }
}

/// `_referencing_subfield`: which of name / external id / database id a sub-record uses.
fn referencing(field: &FieldDef, rec: &Rec) -> Conv<(String, String)> {
    let present: Vec<(&String, &Cell)> = rec.iter().map(|(n, c)| (n, c)).collect();
    if present.iter().any(|(n, _)| !is_reference(n)) {
        return Err(ConvError::Message(
            "Can not create Many-To-One records indirectly, import the field separately".into(),
            None,
        ));
    }
    if present.len() > 1 {
        return Err(ConvError::Message(
            format!(
                "Ambiguous specification for field '{}', only provide one of name, external id or database id",
                field.string
            ),
            None,
        ));
    }
    let (name, cell) = present[0];
    let value = match cell {
        Cell::Value(v) => cell_str(v),
        Cell::Sub(_) => String::new(),
    };
    Ok((name.clone(), value))
}

/// The records `name_search(value, operator='=')` finds.
fn name_search(env: &mut Env, model: &str, value: &str) -> OResult<Vec<Id>> {
    let mut kwargs = Map::new();
    kwargs.insert("name".into(), json!(value));
    kwargs.insert("operator".into(), json!("="));
    let found = crate::methods::call_kw(env, model, "name_search", &[], &kwargs)?;
    Ok(found
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|pair| pair.get(0).and_then(Value::as_i64))
                .collect()
        })
        .unwrap_or_default())
}

/// A non-empty plain cell converted for its field type (`_str_to_<type>`).
fn convert_scalar(
    env: &Env,
    field: &FieldDef,
    v: &Value,
    warnings: &mut Vec<(String, Option<Value>)>,
) -> Conv<Value> {
    // `value.lower()` on a cell that is not a string (10_018).
    if field.ty == Boolean && !v.is_string() {
        return Err(ConvError::Fault(Exc::attribute(format!(
            "'{}' object has no attribute 'lower'",
            py_type(v)
        ))));
    }
    let s = cell_str(v);
    let label = field.string;
    Ok(match &field.ty {
        Boolean => {
            if !is_boolean_word(&s) {
                warnings.push((
                    format!("Unknown value '{s}' for boolean field '{label}', assuming 'yes'"),
                    Some(json!("Use '1' for yes and '0' for no")),
                ));
            }
            json!(truthy_str(&s))
        }
        Integer => json!(s.trim().parse::<i64>().map_err(|_| ConvError::Message(
            format!("'{s}' does not seem to be an integer for field '{label}'"),
            None
        ))?),
        Float => json!(s.trim().parse::<f64>().map_err(|_| ConvError::Message(
            format!("'{s}' does not seem to be a number for field '{label}'"),
            None
        ))?),
        Selection(options) => match options.iter().find(|o| **o == s || selection_label(o) == s) {
            Some(o) => json!(o),
            None => {
                return Err(ConvError::Message(
                    format!("Value '{s}' not found in selection field '{label}'"),
                    Some(json!(
                        options
                            .iter()
                            .map(|o| selection_label(o))
                            .collect::<Vec<_>>()
                    )),
                ));
            }
        },
        Date => json!(parse_import_date(&s).ok_or_else(|| {
            ConvError::Message(
                format!("'{s}' does not seem to be a valid date for field '{label}'"),
                Some(json!("Use the format '2012-12-31'")),
            )
        })?),
        Datetime => json!(import_datetime(env, &s).ok_or_else(|| {
            ConvError::Message(
                format!("'{s}' does not seem to be a valid datetime for field '{label}'"),
                Some(json!("Use the format '2012-12-31 23:59:59'")),
            )
        })?),
        _ => json!(s),
    })
}

/// A datetime cell is in the context's timezone; stored in UTC.
fn import_datetime(env: &Env, s: &str) -> Option<String> {
    let parsed = parse_datetime_in(s).ok()?;
    let local = chrono::NaiveDateTime::parse_from_str(&parsed[..19], "%Y-%m-%d %H:%M:%S").ok()?;
    let offset = env
        .ctx
        .get("tz")
        .and_then(Value::as_str)
        .and_then(|tz| crate::import::tz_offset(tz, local))
        .unwrap_or(0);
    let utc = local - chrono::Duration::seconds(offset);
    Some(utc.format("%Y-%m-%d %H:%M:%S").to_string())
}

/// A selection value's label, as the import matches and lists them.
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

/// The "Possible Values" action a reference error offers (10_015/10_016).
fn possible_values(res_model: &str, for_model: Option<&str>) -> Value {
    let mut v = json!({"name": "Possible Values", "type": "ir.actions.act_window", "target": "new",
        "view_mode": "list,form", "views": [[false, "list"], [false, "form"]], "context": {"create": false},
        "help": "See all possible values", "res_model": res_model});
    if let Some(m) = for_model {
        v["domain"] = json!([["model", "=", m]]);
    }
    v
}

#[cfg(test)]
mod tests {
    use crate::{SimConfig, Simulator};
    use serde_json::{Map, Value, json};
    use std::sync::Arc;
    use switchyard_core::clock::SystemClock;

    fn load(sim: &Simulator, fields: Value, rows: Value) -> Value {
        sim.call_as(2, "res.partner", "load", vec![fields, rows], Map::new())
            .result
            .unwrap()
    }

    fn names_like(sim: &Simulator, pattern: &str) -> Vec<Value> {
        let mut kw = Map::new();
        kw.insert("fields".into(), json!(["name", "parent_id"]));
        let r = sim.call_as(
            2,
            "res.partner",
            "search_read",
            vec![json!([["name", "like", pattern]])],
            kw,
        );
        r.result.unwrap().as_array().cloned().unwrap_or_default()
    }

    fn sim() -> Simulator {
        Simulator::new(SimConfig::instant(), Arc::new(SystemClock))
    }

    #[test]
    fn unknown_boolean_word_is_a_warning_and_loads() {
        let sim = sim();
        let r = load(
            &sim,
            json!(["name", "is_company"]),
            json!([["Warned Co", "maybe"]]),
        );
        assert_eq!(r["ids"].as_array().map(Vec::len), Some(1));
        assert_eq!(r["messages"][0]["type"], "warning");
        assert_eq!(
            r["messages"][0]["message"],
            "Unknown value 'maybe' for boolean field 'Is a Company', assuming 'yes'"
        );
    }

    #[test]
    fn same_xid_twice_is_one_record_last_row_wins() {
        let sim = sim();
        let r = load(
            &sim,
            json!(["id", "name"]),
            json!([["t.dup", "Dup First"], ["t.dup", "Dup Second"]]),
        );
        let ids = r["ids"].as_array().unwrap();
        assert_eq!(ids[0], ids[1]);
        let found = names_like(&sim, "Dup ");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0]["name"], "Dup Second");
    }

    #[test]
    fn references_see_earlier_rows_only() {
        let sim = sim();
        let fields = json!(["id", "name", "is_company", "parent_id/id"]);
        let fwd = load(
            &sim,
            fields.clone(),
            json!([
                ["t.c1", "Fwd Child", "0", "t.p1"],
                ["t.p1", "Fwd Parent", "1", ""]
            ]),
        );
        assert_eq!(fwd["ids"], json!(false));
        assert!(names_like(&sim, "Fwd").is_empty(), "rolled back");
        let bwd = load(
            &sim,
            fields,
            json!([
                ["t.p2", "Bwd Parent", "1", ""],
                ["t.c2", "Bwd Child", "0", "t.p2"]
            ]),
        );
        assert_eq!(bwd["messages"], json!([]));
    }

    #[test]
    fn one2many_sub_rows_append_children_on_reimport() {
        let sim = sim();
        let fields = json!(["id", "name", "child_ids/name"]);
        let rows = json!([["t.co", "O2m Co", "Kid A"], ["", "", "Kid B"]]);
        for expected_kids in [2, 4] {
            let r = load(&sim, fields.clone(), rows.clone());
            assert_eq!(r["ids"].as_array().map(Vec::len), Some(1));
            let kids = names_like(&sim, "Kid ");
            assert_eq!(kids.len(), expected_kids);
        }
    }
}
