//! Odoo 19's JSON-2 API: `POST /json/2/<model>/<method>`, `Authorization: bearer <api key>`,
//! optional `X-Odoo-Database`, a JSON object of named arguments (`ids`, `context` and the
//! method's own parameters); the result as plain JSON, errors as a JSON body with the
//! exception name and an HTTP status that says what kind of error it is.

use crate::Simulator;
use crate::exc::Exc;
use crate::pyjson;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

/// The HTTP status JSON-2 uses for an exception, as Odoo 19's `Json2RpcDispatcher` picks it:
/// a `UserError`'s `http_status`, a werkzeug exception's code, 500 for anything else (a
/// serialization failure included).
pub fn status_for(exc: &Exc) -> StatusCode {
    match exc.short_name() {
        "AccessDenied" | "AccessError" | "Forbidden" => StatusCode::FORBIDDEN,
        "MissingError" | "NotFound" => StatusCode::NOT_FOUND,
        "LockError" => StatusCode::CONFLICT,
        "UserError" | "ValidationError" | "UnprocessableEntity" => StatusCode::UNPROCESSABLE_ENTITY,
        "Unauthorized" => StatusCode::UNAUTHORIZED,
        "BadRequest" => StatusCode::BAD_REQUEST,
        // Arguments that do not bind to the method's signature: Odoo checks them before the
        // call and answers `UnprocessableEntity`.
        "TypeError" => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn error(exc: &Exc) -> Response {
    // werkzeug exceptions are serialized as `(description, code)`.
    let arguments = if exc.name.starts_with("werkzeug.exceptions.") {
        json!([exc.message, status_for(exc).as_u16()])
    } else {
        exc.arguments()
    };
    let body = pyjson::object(&[
        ("name", pyjson::dumps(&json!(exc.name))),
        ("message", pyjson::dumps(&json!(exc.message))),
        ("arguments", pyjson::dumps(&arguments)),
        ("context", "{}".into()),
        (
            "debug",
            pyjson::dumps(&json!(
                exc.traceback("/opt/odoo/odoo/addons/base/controllers/json2.py")
            )),
        ),
    ]);
    (
        status_for(exc),
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body,
    )
        .into_response()
}

pub async fn serve(
    sim: &Simulator,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    if method != Method::POST {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "POST")],
            "",
        )
            .into_response();
    }
    let rest = uri.path().trim_start_matches("/json/2/");
    let Some((model, name)) = rest.split_once('/') else {
        return error(&Exc::new("werkzeug.exceptions.NotFound", "404 Not Found"));
    };
    let key = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split_once(' ')
                .filter(|(s, _)| s.eq_ignore_ascii_case("bearer"))
                .map(|(_, k)| k.trim().to_string())
        });
    if let Some(db) = headers.get("x-odoo-database").and_then(|v| v.to_str().ok())
        && db != sim.inner.config.database
    {
        return error(&Exc::unknown_db(db));
    }
    let Some(uid) = key.as_deref().and_then(|k| sim.uid_for_api_key(k)) else {
        // `_auth_method_bearer`, before any model code (the external API docs' example).
        return error(&Exc::new(
            "werkzeug.exceptions.Unauthorized",
            "Invalid apikey",
        ));
    };
    let params: Map<String, Value> =
        match serde_json::from_slice::<Value>(if body.is_empty() { b"{}" } else { body }) {
            Ok(Value::Object(m)) => m,
            _ => {
                return error(&Exc::new(
                    "werkzeug.exceptions.BadRequest",
                    "400 Bad Request: Invalid JSON data",
                ));
            }
        };
    let mut kwargs = params;
    let args = match kwargs.remove("ids") {
        Some(ids) => vec![ids],
        None => vec![],
    };
    let model = model.to_string();
    let name = name.to_string();
    // The same worker queue, simulated cost, faults and concurrency retries as RPC calls.
    let call = || sim.call_as(uid, &model, &name, args.clone(), kwargs.clone());
    let outcome = match crate::http::serve_call(sim, true, call).await {
        Ok(Some(o)) => o,
        Ok(None) => return crate::http::lost_response(),
        Err(r) => return r,
    };
    match outcome.result {
        Ok(v) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
            pyjson::dumps(&v),
        )
            .into_response(),
        Err(e) => error(&e),
    }
}

impl Simulator {
    /// The user an unexpired API key belongs to.
    pub fn uid_for_api_key(&self, key: &str) -> Option<i64> {
        let uid = self.with_state(|_, st| {
            st.tables.table("res.users.apikeys").and_then(|t| {
                t.rows
                    .values()
                    .find(|k| k.get("key").and_then(Value::as_str) == Some(key))
                    .and_then(|k| k.get("user_id").and_then(Value::as_i64))
            })
        })?;
        self.check_secret(uid, key, true).then_some(uid)
    }
}
