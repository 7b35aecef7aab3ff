//! Odoo field values both ways, as the recordings show them. No I/O.
//!
//! - **Empty is `false`**, on read and on write, for every type but booleans themselves.
//! - **many2one** reads as `[id, "display name"]` (or a bare id where Odoo reads with
//!   `load=None`, e.g. webhook payloads) and must be written as a bare positive id or `false`.
//!   Writing the read shape `[id, "name"]`, `0` or a numeric string `"22"` is *accepted*
//!   (`true`) and **silently clears the field** (10_063-10_066, 10_109-10_112), so
//!   [`write_many2one`] refuses anything but a positive id.
//! - **x2many** fields are written with command lists ([`Command`]); a plain id list on a
//!   many2many replaces like `Set` (10_049), an unknown command is silently ignored (10_057).
//! - **Dates** are `"YYYY-MM-DD"`, **datetimes** `"YYYY-MM-DD HH:MM:SS"` in UTC whatever
//!   `context.tz` says (08_27, 10_096-10_100); ISO strings with `T`/`Z` are refused
//!   (ValueError, 09_09). Datetimes read over RPC are truncated to whole seconds while the
//!   column keeps microseconds (04_04): never use a read `write_date` as an exact cursor (the
//!   poller's concern, not this module's). Webhook payloads carry the microseconds.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde_json::{Map, Value, json};

/// A value that does not have the shape its field type reads or writes as.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field_type} value {value} is not valid: {reason}")]
pub struct ValueError {
    pub field_type: &'static str,
    pub value: String,
    pub reason: &'static str,
}

fn invalid(field_type: &'static str, value: &Value, reason: &'static str) -> ValueError {
    ValueError {
        field_type,
        value: value.to_string(),
        reason,
    }
}

/// A many2one as read: the id and, with the default `load`, the display name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Many2one {
    pub id: i64,
    pub name: Option<String>,
}

/// Reads a many2one: `[id, "name"]`, a bare id (`load=None`), or `false` (empty).
pub fn read_many2one(value: &Value) -> Result<Option<Many2one>, ValueError> {
    match value {
        Value::Bool(false) => Ok(None),
        Value::Number(n) => n
            .as_i64()
            .map(|id| Some(Many2one { id, name: None }))
            .ok_or_else(|| invalid("many2one", value, "an id is an integer")),
        Value::Array(pair) => match pair.as_slice() {
            [Value::Number(id), Value::String(name)] => id
                .as_i64()
                .map(|id| {
                    Some(Many2one {
                        id,
                        name: Some(name.clone()),
                    })
                })
                .ok_or_else(|| invalid("many2one", value, "an id is an integer")),
            _ => Err(invalid("many2one", value, "expected [id, \"name\"]")),
        },
        _ => Err(invalid(
            "many2one",
            value,
            "expected [id, \"name\"], an id or false",
        )),
    }
}

/// The value to write for a many2one: the bare id, or `false` to clear. Zero and negative
/// ids are refused: Odoo would take them and clear the field.
pub fn write_many2one(id: Option<i64>) -> Result<Value, ValueError> {
    match id {
        None => Ok(Value::Bool(false)),
        Some(id) if id > 0 => Ok(Value::from(id)),
        Some(id) => Err(invalid(
            "many2one",
            &Value::from(id),
            "an id is positive (0 clears the field)",
        )),
    }
}

/// Reads an x2many: the list of ids (`[]` when empty).
pub fn read_x2many(value: &Value) -> Result<Vec<i64>, ValueError> {
    match value {
        Value::Bool(false) => Ok(vec![]),
        Value::Array(items) => items
            .iter()
            .map(|v| {
                v.as_i64()
                    .ok_or_else(|| invalid("x2many", value, "ids are integers"))
            })
            .collect(),
        _ => Err(invalid("x2many", value, "expected a list of ids")),
    }
}

/// One x2many write command (`odoo.fields.Command`).
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// `[0, 0, vals]`: create a record and link it.
    Create(Map<String, Value>),
    /// `[1, id, vals]`: update a linked record.
    Update(i64, Map<String, Value>),
    /// `[2, id]`: delete the record itself (a one2many line; a many2many tag is deleted from
    /// the database, 10_055).
    Delete(i64),
    /// `[3, id]`: cut the link, keep the record.
    Unlink(i64),
    /// `[4, id]`: link an existing record (on a one2many it moves the line, 10_117).
    Link(i64),
    /// `[5]`: cut every link.
    Clear,
    /// `[6, 0, ids]`: replace the links (on a one2many, lines left out are deleted).
    Set(Vec<i64>),
}

impl Command {
    /// The wire form, with the short 2- and 1-element forms Odoo accepts (10_043, 10_051).
    pub fn to_value(&self) -> Value {
        match self {
            Command::Create(vals) => json!([0, 0, vals]),
            Command::Update(id, vals) => json!([1, id, vals]),
            Command::Delete(id) => json!([2, id]),
            Command::Unlink(id) => json!([3, id]),
            Command::Link(id) => json!([4, id]),
            Command::Clear => json!([5]),
            Command::Set(ids) => json!([6, 0, ids]),
        }
    }
}

/// The value to write for an x2many field.
pub fn write_x2many(commands: &[Command]) -> Value {
    Value::Array(commands.iter().map(Command::to_value).collect())
}

const DATE_FORMAT: &str = "%Y-%m-%d";
const DATETIME_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

/// Reads a date field: `"YYYY-MM-DD"` or `false`.
pub fn read_date(value: &Value) -> Result<Option<NaiveDate>, ValueError> {
    match value {
        Value::Bool(false) => Ok(None),
        Value::String(s) => NaiveDate::parse_from_str(s, DATE_FORMAT)
            .map(Some)
            .map_err(|_| invalid("date", value, "expected YYYY-MM-DD")),
        _ => Err(invalid(
            "date",
            value,
            "expected a YYYY-MM-DD string or false",
        )),
    }
}

/// The value to write for a date field.
pub fn write_date(date: Option<NaiveDate>) -> Value {
    date.map_or(Value::Bool(false), |d| {
        Value::String(d.format(DATE_FORMAT).to_string())
    })
}

/// Reads a datetime field, UTC: `"YYYY-MM-DD HH:MM:SS"` (RPC reads), with microseconds
/// (webhook payloads), or `false`.
pub fn read_datetime(value: &Value) -> Result<Option<DateTime<Utc>>, ValueError> {
    match value {
        Value::Bool(false) => Ok(None),
        Value::String(s) => NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
            .map(|naive| Some(naive.and_utc()))
            .map_err(|_| invalid("datetime", value, "expected YYYY-MM-DD HH:MM:SS (UTC)")),
        _ => Err(invalid(
            "datetime",
            value,
            "expected a YYYY-MM-DD HH:MM:SS string or false",
        )),
    }
}

/// The value to write for a datetime field: UTC, whole seconds (Odoo's string format; an
/// ISO string with `T` or `Z` is refused by Odoo).
pub fn write_datetime(datetime: Option<DateTime<Utc>>) -> Value {
    datetime.map_or(Value::Bool(false), |dt| {
        Value::String(dt.format(DATETIME_FORMAT).to_string())
    })
}

/// Reads a char/text/selection field: the string, or None for `false`.
pub fn read_text(value: &Value) -> Result<Option<&str>, ValueError> {
    match value {
        Value::Bool(false) => Ok(None),
        Value::String(s) => Ok(Some(s)),
        _ => Err(invalid("text", value, "expected a string or false")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_have_their_wire_forms() {
        let vals = json!({"name": "x"}).as_object().cloned().unwrap();
        let cases = [
            (Command::Create(vals.clone()), json!([0, 0, {"name": "x"}])),
            (Command::Update(7, vals), json!([1, 7, {"name": "x"}])),
            (Command::Delete(7), json!([2, 7])),
            (Command::Unlink(7), json!([3, 7])),
            (Command::Link(7), json!([4, 7])),
            (Command::Clear, json!([5])),
            (Command::Set(vec![1, 2]), json!([6, 0, [1, 2]])),
        ];
        for (command, wire) in cases {
            assert_eq!(command.to_value(), wire);
        }
    }

    #[test]
    fn many2one_writes_never_clear_by_accident() {
        assert_eq!(write_many2one(Some(22)), Ok(json!(22)));
        assert_eq!(write_many2one(None), Ok(json!(false)));
        assert!(write_many2one(Some(0)).is_err());
    }

    #[test]
    fn datetimes_keep_odoos_format() {
        let dt = read_datetime(&json!("2026-11-23 18:08:57.530131"))
            .unwrap()
            .unwrap();
        assert_eq!(write_datetime(Some(dt)), json!("2026-11-23 18:08:57"));
        assert!(read_datetime(&json!("2026-12-01T09:30:00Z")).is_err());
        assert_eq!(write_datetime(None), json!(false));
    }
}
