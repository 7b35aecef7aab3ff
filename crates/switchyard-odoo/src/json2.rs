//! Odoo 19's external JSON-2 API (`POST /json/2/<model>/<method>`), built from its
//! documentation (developer/reference/external_api, "External JSON-2 API"); there are no
//! recordings of it, Odoo 18 does not have it (it redirects to `/web/login`, 03_10). No I/O.
//!
//! A request is `Authorization: bearer <api key>`, `X-Odoo-Database: <db>` and a JSON object of
//! **named** arguments: `ids` for record methods, `context`, and the method's parameters by
//! name. Success is HTTP 200 with the method's return value as the body; an error is a 4xx/5xx
//! with `{name, message, arguments, context, debug}` (401 `werkzeug.exceptions.Unauthorized`
//! for a bad key). Each call is its own transaction.
//!
//! Callers of [`crate::client::OdooClient::execute_kw`] give positional `args` as for
//! XML-RPC; [`body`] names them from a table of the ORM's public signatures, and refuses a
//! call it cannot name rather than guess.

use serde_json::{Map, Value};

use crate::error::OdooError;

/// Record methods: `args[0]` is the ids, the rest are these parameters in order.
const RECORD_METHODS: [(&str, &[&str]); 5] = [
    ("read", &["fields", "load"]),
    ("write", &["vals"]),
    ("unlink", &[]),
    ("copy", &["default"]),
    ("get_external_id", &[]),
];

/// Model methods (`@api.model`): the parameters in order, no ids.
const MODEL_METHODS: [(&str, &[&str]); 11] = [
    ("search", &["domain", "offset", "limit", "order"]),
    (
        "search_read",
        &["domain", "fields", "offset", "limit", "order"],
    ),
    ("search_count", &["domain", "limit"]),
    ("create", &["vals_list"]),
    ("name_search", &["name", "domain", "operator", "limit"]),
    ("name_create", &["name"]),
    ("fields_get", &["allfields", "attributes"]),
    ("default_get", &["fields"]),
    ("load", &["fields", "data"]),
    (
        "read_group",
        &[
            "domain", "fields", "groupby", "offset", "limit", "orderby", "lazy",
        ],
    ),
    ("context_get", &[]),
];

/// The request body for `model.method(*args, **kwargs)` with `context`. Unknown methods
/// take `args[0]` as ids (buttons: `action_confirm`, `button_validate`, …) and nothing else
/// positionally.
pub fn body(
    method: &str,
    args: Vec<Value>,
    kwargs: Map<String, Value>,
    context: Map<String, Value>,
) -> Result<Value, OdooError> {
    let mut body = Map::new();
    let mut args = args.into_iter();
    let names: &[&str] = if let Some((_, names)) = MODEL_METHODS.iter().find(|(m, _)| *m == method)
    {
        names
    } else {
        let names = RECORD_METHODS
            .iter()
            .find(|(m, _)| *m == method)
            .map_or(&[][..], |(_, n)| *n);
        if let Some(ids) = args.next() {
            body.insert("ids".into(), ids_value(ids));
        }
        names
    };
    let rest: Vec<Value> = args.collect();
    if rest.len() > names.len() {
        return Err(OdooError::Unsupported(format!(
            "JSON-2 takes named arguments only; pass the arguments of {method} after the ids as kwargs"
        )));
    }
    for (name, value) in names.iter().zip(rest) {
        body.insert((*name).into(), value);
    }
    body.extend(kwargs);
    body.insert("context".into(), Value::Object(context));
    Ok(Value::Object(body))
}

/// A single id is sent as a one-element list: JSON-2 `ids` is always an array.
fn ids_value(ids: Value) -> Value {
    match ids {
        Value::Number(_) => Value::Array(vec![ids]),
        other => other,
    }
}

/// An error answer: the exception Odoo named, or a bare HTTP error when the body is not
/// JSON-2's error object (a proxy's page, an empty 502).
pub fn parse_error(status: u16, body: &[u8], retry_after: Option<chrono::Duration>) -> OdooError {
    let object = serde_json::from_slice::<Value>(body)
        .ok()
        .filter(|v| v.get("name").is_some());
    let Some(object) = object else {
        return OdooError::Http {
            status,
            body: crate::client::body_excerpt(body),
            retry_after,
        };
    };
    let text = |key: &str| object.get(key).and_then(Value::as_str).map(str::to_owned);
    OdooError::Fault {
        exception: text("name"),
        message: text("message").unwrap_or_default(),
        fault_code: None,
        traceback: text("debug"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn positional_arguments_get_their_names() {
        let body = body(
            "search_read",
            vec![json!([["is_company", "=", true]])],
            map(json!({"fields": ["name"], "limit": 5})),
            map(json!({"lang": "en_US"})),
        )
        .unwrap();
        assert_eq!(
            body,
            json!({"domain": [["is_company", "=", true]], "fields": ["name"], "limit": 5, "context": {"lang": "en_US"}})
        );
        let body = body_of("write", vec![json!([7]), json!({"name": "x"})]);
        assert_eq!(
            body,
            json!({"ids": [7], "vals": {"name": "x"}, "context": {}})
        );
        let body = body_of("action_confirm", vec![json!(3)]);
        assert_eq!(body, json!({"ids": [3], "context": {}}));
    }

    #[test]
    fn unnamed_extra_arguments_are_refused() {
        let err = body(
            "action_custom",
            vec![json!([1]), json!(2)],
            Map::new(),
            Map::new(),
        );
        assert!(matches!(err, Err(OdooError::Unsupported(_))));
    }

    fn body_of(method: &str, args: Vec<Value>) -> Value {
        body(method, args, Map::new(), Map::new()).unwrap()
    }

    #[test]
    fn error_objects_name_the_exception() {
        let err = parse_error(
            401,
            br#"{"name": "werkzeug.exceptions.Unauthorized", "message": "Invalid apikey", "arguments": ["Invalid apikey", 401], "context": {}, "debug": "Traceback"}"#,
            None,
        );
        assert_eq!(err.exception(), Some("werkzeug.exceptions.Unauthorized"));
        assert_eq!(
            err.class(),
            switchyard_core::delivery::ErrorClass::Credential
        );
        let err = parse_error(502, b"<html>Bad gateway</html>", None);
        assert!(matches!(err, OdooError::Http { status: 502, .. }));
    }
}
