//! The JSON-RPC envelope of `POST /jsonrpc` (and `/web/...` routes): building requests and
//! reading answers. No I/O.
//!
//! Recorded behaviour (testdata/odoo, group 02): the answer echoes `id` (string, number, or
//! `null` when the request had none); a method returning None gives an envelope **without a
//! `result` key** (`{"jsonrpc": "2.0", "id": 10}`, 02_10, 05_04), which is a success with
//! Null; every exception is `error.code` 200 with the Python class in `error.data.name`;
//! a dead web session is code 100 with `id: null` (02_39). Envelope errors of Odoo itself
//! (`Invalid JSON data`) are HTTP 400 without an envelope, handled by the client.

use serde_json::{Value, json};

use crate::error::{OdooError, from_jsonrpc_error};

/// The request envelope: `{"jsonrpc": "2.0", "method": "call", "params": …, "id": …}`.
pub fn request(params: Value, id: u64) -> Value {
    json!({"jsonrpc": "2.0", "method": "call", "params": params, "id": id})
}

/// The params of a `/jsonrpc` service call: `{"service", "method", "args"}`.
pub fn service_call(service: &str, method: &str, args: Vec<Value>) -> Value {
    json!({"service": service, "method": method, "args": args})
}

/// Reads an answer body: the result (Null when absent), or the error Odoo reported. A
/// result under an `id` other than the request's is not an answer to this request (errors
/// may carry `null`: Odoo fails some before reading the id, 02_39).
pub fn parse_response(body: &[u8], expected_id: &Value) -> Result<Value, OdooError> {
    let envelope: Value = serde_json::from_slice(body)
        .map_err(|e| OdooError::Undecodable(format!("JSON-RPC answer is not JSON: {e}")))?;
    let Value::Object(mut envelope) = envelope else {
        return Err(OdooError::Undecodable(
            "JSON-RPC answer is not an object".into(),
        ));
    };
    if envelope.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(OdooError::Undecodable(
            "JSON-RPC answer without \"jsonrpc\": \"2.0\"".into(),
        ));
    }
    if let Some(error) = envelope.get("error") {
        return Err(from_jsonrpc_error(error));
    }
    let id = envelope.get("id").unwrap_or(&Value::Null);
    if id != expected_id {
        return Err(OdooError::Undecodable(format!(
            "JSON-RPC answer id {id} does not match request id {expected_id}"
        )));
    }
    Ok(envelope.remove("result").unwrap_or(Value::Null))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_has_odoos_shape() {
        let body = request(service_call("common", "version", vec![]), 7);
        assert_eq!(
            body,
            json!({"jsonrpc": "2.0", "method": "call", "params": {"service": "common", "method": "version", "args": []}, "id": 7})
        );
    }

    #[test]
    fn a_foreign_id_is_not_our_answer() {
        let err =
            parse_response(br#"{"jsonrpc": "2.0", "id": 8, "result": 1}"#, &json!(7)).unwrap_err();
        assert!(matches!(err, OdooError::Undecodable(_)));
    }
}
