//! The simulator's HTTP face: the same routes, statuses, content types and envelopes as
//! Odoo 18 (Werkzeug) — plus JSON-2 in Odoo 19 mode and a `/__sim` control API.

use crate::exc::Exc;
use crate::rpc::Outcome;
use crate::{OdooVersion, Simulator, pyjson};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use serde_json::{Map, Value, json};
use switchyard_odoo::error::{legacy_fault_code, xmlrpc_fault_code};
use switchyard_odoo::xmlrpc::{self, Fault, FaultCode};

/// Werkzeug's limit on form/XML bodies (Odoo 18 answers 413 above it, 07_43).
pub const MAX_XMLRPC_BODY: usize = 128 * 1024 * 1024;

/// The most any route reads (well above the 129 MiB JSON-RPC body Odoo parsed, 07_42).
pub const MAX_BODY: usize = 512 * 1024 * 1024;

pub fn router(sim: Simulator) -> Router {
    Router::new()
        .route("/xmlrpc/2/{service}", any(xmlrpc_v2))
        .route("/xmlrpc/{service}", any(xmlrpc_legacy))
        .route("/jsonrpc", any(jsonrpc))
        .route("/web/session/authenticate", post(session_authenticate))
        .route("/web/session/get_session_info", post(session_info))
        .route("/web/session/logout", get(session_logout))
        .route("/web/dataset/call_kw", post(call_kw_route))
        .route("/web/dataset/call_kw/{*rest}", post(call_kw_route))
        .route("/web/webclient/version_info", post(webclient_version))
        .route("/web/login", get(login_page))
        .route("/json/2/{*rest}", any(json2))
        .route("/__sim/faults", get(get_faults).put(put_faults))
        .route("/__sim/health", get(|| async { "ok" }))
        .route("/__sim/late-write", post(late_write))
        // Bodies are read whole: XML-RPC answers Werkzeug's 413 page itself above 128 MiB
        // (07_43), while Odoo 18 still parsed a larger JSON-RPC body (07_42). The router
        // only refuses what no recorded call came near.
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(sim)
}

fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

fn werkzeug_page(code: u16, title: &str, text: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=en>\n<title>{code} {title}</title>\n<h1>{title}</h1>\n<p>{text}</p>\n"
    )
}

fn redirect(location: &str) -> Response {
    let mut r = html(
        StatusCode::SEE_OTHER,
        format!(
            "<!doctype html>\n<html lang=en>\n<title>Redirecting...</title>\n<h1>Redirecting...</h1>\n<p>You should be redirected automatically to the target URL: <a href=\"{location}\">{location}</a>. If not, click the link.\n"
        ),
    );
    r.headers_mut()
        .insert(header::LOCATION, location.parse().expect("location header"));
    r
}

fn xml(body: String) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
        body,
    )
        .into_response()
}

fn json_response(body: String) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body,
    )
        .into_response()
}

/// A response whose body fails after the headers: the client sees the connection drop
/// (the "committed, but the response was lost" fault).
pub(crate) fn lost_response() -> Response {
    let stream = futures::stream::iter(vec![Err::<Bytes, _>(std::io::Error::other(
        "response lost",
    ))]);
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/xml; charset=utf-8")
        .header(header::CONTENT_LENGTH, "4096")
        .body(Body::from_stream(stream))
        .expect("lost response")
}

/// Simulated cost, injected latency and 5xx, then the call itself, its webhooks, and only
/// then its commit — Odoo sends webhooks from inside the transaction, so a receiver that
/// queries back sees the old state, and a call that fails afterwards still notified.
/// A commit that conflicts with another transaction re-runs the whole call, webhooks
/// included, up to 5 tries (Odoo's `retrying`), then answers SerializationFailure.
/// Returns `None` when the response must be lost.
pub(crate) async fn serve_call(
    sim: &Simulator,
    object: bool,
    call: impl Fn() -> Outcome,
) -> Result<Option<Outcome>, Response> {
    let faults = sim.faults();
    let _permit = sim.inner.workers.acquire().await.expect("workers");
    if faults.latency_ms > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(faults.latency_ms)).await;
    }
    if faults.http_500_rate > 0.0 && rand::random::<f64>() < faults.http_500_rate {
        return Err(html(
            StatusCode::INTERNAL_SERVER_ERROR,
            werkzeug_page(
                500,
                "Internal Server Error",
                "The server encountered an internal error and was unable to complete your request. Either the server is overloaded or there is an error in the application.",
            ),
        ));
    }
    // Another transaction keeps updating what this call writes: every try conflicts.
    let doomed = object && faults.serialization_failures > 0 && {
        let mut f = sim.inner.faults.lock().expect("faults");
        let take = f.serialization_failures > 0;
        if take {
            f.serialization_failures -= 1;
        }
        take
    };
    let cfg = &sim.inner.config;
    let mut tries = 0;
    let outcome = loop {
        tries += 1;
        let (mut outcome, pending) = crate::deferred(&call);
        let per_call = if outcome.read_only {
            cfg.cost_per_read_ms
        } else {
            cfg.cost_per_call_ms
        };
        let cost = per_call + cfg.cost_per_record_ms * outcome.records as f64;
        if cost > 0.0 {
            tokio::time::sleep(std::time::Duration::from_secs_f64(cost / 1000.0)).await;
        }
        crate::webhooks::send(&sim.inner.http, &outcome.effects).await;
        let mut conflict = false;
        for p in pending {
            conflict = conflict || sim.commit(p, doomed).is_err();
        }
        if !conflict {
            break outcome;
        }
        if tries >= MAX_TRIES {
            outcome.result = Err(Exc::serialization());
            break outcome;
        }
        // Odoo waits a random time up to 2^tries s; scaled like the simulated cost.
        let wait = rand::random::<f64>() * f64::from(1u32 << tries) * cfg.cost_per_call_ms;
        if wait > 0.0 {
            tokio::time::sleep(std::time::Duration::from_secs_f64(wait / 1000.0)).await;
        }
    };
    if object && outcome.result.is_ok() && faults.lose_responses > 0 {
        let mut f = sim.inner.faults.lock().expect("faults");
        if f.lose_responses > 0 {
            f.lose_responses -= 1;
            return Ok(None);
        }
    }
    Ok(Some(outcome))
}

/// Odoo's `MAX_TRIES_ON_CONCURRENCY_FAILURE`.
const MAX_TRIES: u32 = 5;

// ---- XML-RPC ------------------------------------------------------------------------------

async fn xmlrpc_v2(
    State(sim): State<Simulator>,
    Path(service): Path<String>,
    method: Method,
    body: Bytes,
) -> Response {
    xmlrpc_serve(sim, service, method, body, false).await
}

async fn xmlrpc_legacy(
    State(sim): State<Simulator>,
    Path(service): Path<String>,
    method: Method,
    body: Bytes,
) -> Response {
    xmlrpc_serve(sim, service, method, body, true).await
}

async fn xmlrpc_serve(
    sim: Simulator,
    service: String,
    method: Method,
    body: Bytes,
    legacy: bool,
) -> Response {
    if method != Method::POST {
        let mut r = html(
            StatusCode::METHOD_NOT_ALLOWED,
            werkzeug_page(
                405,
                "Method Not Allowed",
                "The method is not allowed for the requested URL.",
            ),
        );
        r.headers_mut()
            .insert(header::ALLOW, "POST, OPTIONS".parse().expect("allow"));
        return r;
    }
    if body.len() > MAX_XMLRPC_BODY {
        return html(
            StatusCode::PAYLOAD_TOO_LARGE,
            werkzeug_page(
                413,
                "Request Entity Too Large",
                "The data value transmitted exceeds the capacity limit.",
            ),
        );
    }
    let (name, params) = match xmlrpc::decode_call(&body) {
        Ok(c) => c,
        Err(e) => {
            let exc = Exc::new(
                e.exception,
                format!("{}: line {}, column {}", e.message, e.line, e.column),
            );
            return xml(fault_xml(&exc, legacy));
        }
    };
    let object = service == "object";
    let outcome = match serve_call(&sim, object, || {
        sim.dispatch(&service, &name, params.clone())
    })
    .await
    {
        Ok(Some(o)) => o,
        Ok(None) => return lost_response(),
        Err(r) => return r,
    };
    match outcome.result {
        // Python's marshaller refuses a dict keyed by record ids (10_035).
        Ok(v) if crate::import::int_keyed_result(&service, &params, &v) => xml(fault_xml(
            &Exc::type_error("dictionary key must be string"),
            legacy,
        )),
        Ok(v) => match xmlrpc::encode_response(&v) {
            Ok(body) => xml(body),
            // Odoo committed, then failed to marshal None (01_33): a fault after the effect.
            Err(e) => xml(fault_xml(&Exc::new(e.exception, e.message), legacy)),
        },
        Err(exc) => xml(fault_xml(&exc, legacy)),
    }
}

fn fault_xml(exc: &Exc, legacy: bool) -> String {
    let code = xmlrpc_fault_code(&exc.name);
    let fault = if legacy {
        Fault {
            code: FaultCode::Str(legacy_fault_code(&exc.name, &exc.message)),
            string: String::new(),
        }
    } else if code == 1 {
        Fault {
            code: FaultCode::Int(1),
            string: exc.traceback("/opt/odoo/odoo/addons/base/controllers/rpc.py"),
        }
    } else {
        Fault {
            code: FaultCode::Int(code),
            string: exc.message.clone(),
        }
    };
    xmlrpc::encode_fault(&fault)
}

// ---- JSON-RPC -----------------------------------------------------------------------------

fn bad_request_type(path: &str) -> Response {
    html(
        StatusCode::BAD_REQUEST,
        werkzeug_page(
            400,
            "Bad Request",
            &format!(
                "Request inferred type is compatible with [&#39;http&#39;] but &#39;{path}&#39; is type=&#39;json&#39;."
            ),
        ),
    )
}

/// Parse a JSON-RPC request body the way Odoo's JsonRPCDispatcher does.
fn parse_jsonrpc(
    method: &Method,
    headers: &HeaderMap,
    body: &[u8],
    path: &str,
) -> Result<(Value, Map<String, Value>), Box<Response>> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.starts_with("application/json") || ct.starts_with("application/json-rpc")
        });
    if *method != Method::POST || !is_json {
        return Err(Box::new(bad_request_type(path)));
    }
    let plain = |text: &str| {
        let mut r = html(StatusCode::BAD_REQUEST, text.to_string());
        r.headers_mut()
            .insert("x-content-type-options", "nosniff".parse().expect("hdr"));
        r
    };
    let v: Value =
        serde_json::from_slice(body).map_err(|_| Box::new(plain("Invalid JSON data")))?;
    let Value::Object(req) = v else {
        return Err(Box::new(plain("Invalid JSON-RPC data")));
    };
    let id = req.get("id").cloned().unwrap_or(Value::Null);
    let params = match req.get("params") {
        Some(Value::Object(p)) => p.clone(),
        _ => Map::new(),
    };
    Ok((id, params))
}

fn jsonrpc_result(id: &Value, result: &Value) -> String {
    if result.is_null() {
        // A method returning None: no "result" key at all (02_10, 05_04).
        pyjson::object(&[("jsonrpc", "\"2.0\"".into()), ("id", pyjson::dumps(id))])
    } else {
        pyjson::object(&[
            ("jsonrpc", "\"2.0\"".into()),
            ("id", pyjson::dumps(id)),
            ("result", pyjson::dumps(result)),
        ])
    }
}

fn jsonrpc_error(id: &Value, exc: &Exc) -> String {
    let (code, message) = if exc.name == "odoo.http.SessionExpiredException" {
        (100, "Odoo Session Expired")
    } else {
        (200, "Odoo Server Error")
    };
    let data = pyjson::object(&[
        ("name", pyjson::dumps(&json!(exc.name))),
        (
            "debug",
            pyjson::dumps(&json!(exc.traceback("/opt/odoo/odoo/http.py"))),
        ),
        ("message", pyjson::dumps(&json!(exc.message))),
        ("arguments", pyjson::dumps(&exc.arguments())),
        (
            "context",
            exc.context
                .as_ref()
                .map_or_else(|| "{}".into(), pyjson::dumps),
        ),
    ]);
    let error = pyjson::object(&[
        ("code", code.to_string()),
        ("message", pyjson::dumps(&json!(message))),
        ("data", data),
    ]);
    pyjson::object(&[
        ("jsonrpc", "\"2.0\"".into()),
        ("id", pyjson::dumps(id)),
        ("error", error),
    ])
}

fn jsonrpc_outcome(id: &Value, outcome: Outcome) -> Response {
    json_response(match outcome.result {
        Ok(v) => jsonrpc_result(id, &v),
        Err(e) => jsonrpc_error(id, &e),
    })
}

async fn jsonrpc(
    State(sim): State<Simulator>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (id, params) = match parse_jsonrpc(&method, &headers, &body, "/jsonrpc") {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let Some(service) = params
        .get("service")
        .and_then(Value::as_str)
        .map(str::to_string)
    else {
        let exc =
            Exc::type_error("RPC.jsonrpc() missing 1 required positional argument: 'service'");
        return json_response(jsonrpc_error(&id, &exc));
    };
    let name = params
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let args = match params.get("args") {
        Some(Value::Array(a)) => a.clone(),
        _ => vec![],
    };
    let object = service == "object";
    match serve_call(&sim, object, || sim.dispatch(&service, &name, args.clone())).await {
        Ok(Some(o)) => jsonrpc_outcome(&id, o),
        Ok(None) => lost_response(),
        Err(r) => r,
    }
}

// ---- web session ----------------------------------------------------------------------------

fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix("session_id="))
        .map(str::to_string)
        .next()
}

fn session_expired() -> Exc {
    Exc::new("odoo.http.SessionExpiredException", "Session expired")
}

fn session_info_value(sim: &Simulator, uid: i64) -> Value {
    let mut info: Value =
        serde_json::from_str(include_str!("session_info.json")).expect("session info template");
    let (name, login, partner_id, pwd) = sim.with_state(|_, st| {
        let u = st.tables.get("res.users", uid).cloned().unwrap_or_default();
        let partner = u.get("partner_id").and_then(Value::as_i64).unwrap_or(0);
        let p = st
            .tables
            .get("res.partner", partner)
            .cloned()
            .unwrap_or_default();
        (
            p.get("name").cloned().unwrap_or(Value::Bool(false)),
            u.get("login").cloned().unwrap_or(Value::Bool(false)),
            partner,
            p.get("write_date")
                .and_then(Value::as_str)
                .map(crate::orm::datetime_out),
        )
    });
    let v = sim.inner.config.version;
    if let Value::Object(m) = &mut info {
        m.insert("uid".into(), json!(uid));
        m.insert("is_system".into(), json!(uid == 2));
        m.insert("is_admin".into(), json!(uid == 2));
        m.insert(
            "user_context".into(),
            json!({"lang": "en_US", "tz": false, "uid": uid}),
        );
        m.insert("db".into(), json!(sim.inner.config.database));
        m.insert("server_version".into(), json!(v.server_version()));
        m.insert(
            "server_version_info".into(),
            json!([v.major(), 0, 0, "final", 0, ""]),
        );
        m.insert("name".into(), name.clone());
        m.insert("username".into(), login);
        m.insert("partner_write_date".into(), json!(pwd));
        m.insert("partner_display_name".into(), name);
        m.insert("partner_id".into(), json!(partner_id));
    }
    info
}

fn set_session_cookie(r: &mut Response, sid: &str) {
    let expires =
        (chrono::Utc::now() + chrono::Duration::days(365)).format("%a, %d %b %Y %H:%M:%S GMT");
    r.headers_mut().append(
        header::SET_COOKIE,
        format!("session_id={sid}; Expires={expires}; Max-Age=604800; HttpOnly; Path=/")
            .parse()
            .expect("cookie"),
    );
}

async fn session_authenticate(
    State(sim): State<Simulator>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (id, params) = match parse_jsonrpc(&method, &headers, &body, "/web/session/authenticate") {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let get = |k: &str| params.get(k).cloned().unwrap_or(Value::Null);
    // Interactive login: API keys are not accepted (03_09).
    match sim.authenticate(&get("db"), &get("login"), &get("password"), false) {
        Ok(Value::Number(n)) => {
            let uid = n.as_i64().unwrap_or(0);
            let sid = uuid::Uuid::new_v4().simple().to_string();
            sim.inner
                .state
                .lock()
                .expect("state")
                .sessions
                .insert(sid.clone(), uid);
            let mut r = json_response(jsonrpc_result(&id, &session_info_value(&sim, uid)));
            set_session_cookie(&mut r, &sid);
            r
        }
        Ok(_) => json_response(jsonrpc_error(&id, &Exc::access_denied())),
        Err(e) => json_response(jsonrpc_error(&id, &e)),
    }
}

fn session_uid(sim: &Simulator, headers: &HeaderMap) -> Option<i64> {
    let sid = session_id(headers)?;
    sim.inner
        .state
        .lock()
        .expect("state")
        .sessions
        .get(&sid)
        .copied()
}

async fn session_info(
    State(sim): State<Simulator>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (id, _) = match parse_jsonrpc(&method, &headers, &body, "/web/session/get_session_info") {
        Ok(p) => p,
        Err(r) => return *r,
    };
    match session_uid(&sim, &headers) {
        Some(uid) => json_response(jsonrpc_result(&id, &session_info_value(&sim, uid))),
        None => json_response(jsonrpc_error(&id, &session_expired())),
    }
}

async fn session_logout(State(sim): State<Simulator>, headers: HeaderMap) -> Response {
    if let Some(sid) = session_id(&headers) {
        sim.inner.state.lock().expect("state").sessions.remove(&sid);
    }
    let mut r = redirect("/web/login");
    set_session_cookie(&mut r, &uuid::Uuid::new_v4().simple().to_string());
    r
}

async fn call_kw_route(
    State(sim): State<Simulator>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (id, params) = match parse_jsonrpc(&method, &headers, &body, uri.path()) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let Some(uid) = session_uid(&sim, &headers) else {
        return json_response(jsonrpc_error(&Value::Null, &session_expired()));
    };
    let model = params
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let name = params
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let args = match params.get("args") {
        Some(Value::Array(a)) => a.clone(),
        _ => vec![],
    };
    let kwargs = match params.get("kwargs") {
        Some(Value::Object(k)) => k.clone(),
        _ => Map::new(),
    };
    match serve_call(&sim, true, || {
        sim.call_as(uid, &model, &name, args.clone(), kwargs.clone())
    })
    .await
    {
        Ok(Some(o)) => jsonrpc_outcome(&id, o),
        Ok(None) => lost_response(),
        Err(r) => r,
    }
}

async fn webclient_version(
    State(sim): State<Simulator>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match parse_jsonrpc(&method, &headers, &body, "/web/webclient/version_info") {
        Ok((id, _)) => json_response(jsonrpc_result(&id, &sim.version_info())),
        Err(r) => *r,
    }
}

async fn login_page() -> Response {
    html(
        StatusCode::OK,
        "<!doctype html>\n<html><title>Odoo</title><body>Login</body></html>\n".into(),
    )
}

// ---- JSON-2 (Odoo 19) -------------------------------------------------------------------------

async fn json2(
    State(sim): State<Simulator>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if sim.inner.config.version == OdooVersion::V18 {
        // Not an Odoo 18 route: the website's catch-all sends anonymous visitors to log in.
        let target = format!("{}?{}", uri.path(), uri.query().unwrap_or(""));
        let enc = percent_encode(&target);
        return redirect(&format!("/web/login?redirect={enc}"));
    }
    crate::json2::serve(&sim, &method, &uri, &headers, &body).await
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

// ---- control ----------------------------------------------------------------------------------

async fn get_faults(State(sim): State<Simulator>) -> Response {
    axum::Json(sim.faults()).into_response()
}

async fn put_faults(State(sim): State<Simulator>, body: Bytes) -> Response {
    match serde_json::from_slice::<crate::faults::Faults>(&body) {
        Ok(f) => {
            sim.set_faults(f.clone());
            axum::Json(f).into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, format!("invalid faults: {e}")).into_response(),
    }
}

/// `POST /__sim/late-write {"model", "ids", "values", "delay_ms"}`: write now, commit
/// after the delay (the rows keep the early `write_date`).
async fn late_write(State(sim): State<Simulator>, body: Bytes) -> Response {
    #[derive(serde::Deserialize)]
    struct LateWrite {
        model: String,
        ids: Vec<i64>,
        values: Map<String, Value>,
        delay_ms: u64,
    }
    let req: LateWrite = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return (StatusCode::BAD_REQUEST, format!("invalid late write: {e}")).into_response();
        }
    };
    match sim.write_uncommitted(2, &req.model, &req.ids, req.values) {
        Ok(pending) => {
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(req.delay_ms)).await;
                pending.commit();
            });
            StatusCode::ACCEPTED.into_response()
        }
        Err(e) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("{}: {}", e.name, e.message),
        )
            .into_response(),
    }
}

/// Serve the simulator on a bound listener until the future is dropped.
pub async fn serve(sim: Simulator, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    axum::serve(listener, router(sim)).await
}
