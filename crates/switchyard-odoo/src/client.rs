//! [`OdooClient`]: one Odoo database over XML-RPC, JSON-RPC or JSON-2, chosen by
//! configuration or detected once. It owns the HTTP path and the login; what a failure means
//! is [`OdooError::class`]'s.
//!
//! Behaviour the recordings ask for:
//! - **Redirects are never followed.** Odoo 18 answers a JSON-2 request with 303 to
//!   `/web/login` (03_10); following it would read a login page as an answer.
//! - **Timeout 45 s** by default: Odoo retries serialization failures itself for up to ~30 s
//!   before answering (07_23), and an answer that late is still an answer.
//! - **None after commit**: an XML-RPC `cannot marshal None` fault is a success (see
//!   [`crate::error`]); a JSON-RPC answer without `result` is Null.
//! - **Login once**: `common.authenticate` gives the uid, cached; `false` is a credential
//!   error. A call refused with AccessDenied (or a dead session) while using a cached uid logs
//!   in again once and repeats the call: AccessDenied is raised before anything runs.
//! - Every request carries a W3C `traceparent` (the caller's, or a fresh one).

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{Map, Value, json};
use tokio::sync::{Mutex, OnceCell};

use crate::error::{OdooError, none_after_commit};
use crate::{json2, jsonrpc, xmlrpc};

/// Default request timeout: longer than Odoo's own ~30 s serialization-retry loop.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(45);

/// Which API to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Probe JSON-2 once; fall back to JSON-RPC when the server does not have it.
    Auto,
    /// Odoo 19+: `/json/2/<model>/<method>` with a bearer API key.
    Json2,
    /// `/jsonrpc` (all versions; deprecated in 19).
    JsonRpc,
    /// `/xmlrpc/2/*` (all versions; deprecated in 19).
    XmlRpc,
}

/// How to reach one database.
#[derive(Clone)]
pub struct OdooConfig {
    /// `https://odoo.example.com` (no trailing path).
    pub base_url: String,
    pub db: String,
    pub login: String,
    /// The password or an API key (JSON-2 needs a key); resolved by the caller.
    pub secret: String,
    pub protocol: Protocol,
    /// Context sent with every call (`lang`, `tz`, `allowed_company_ids`, `active_test`);
    /// a call's own context wins key by key.
    pub context: Map<String, Value>,
    pub timeout: Duration,
}

impl OdooConfig {
    pub fn new(base_url: &str, db: &str, login: &str, secret: &str) -> OdooConfig {
        OdooConfig {
            base_url: base_url.trim_end_matches('/').to_owned(),
            db: db.to_owned(),
            login: login.to_owned(),
            secret: secret.to_owned(),
            protocol: Protocol::Auto,
            context: Map::new(),
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl std::fmt::Debug for OdooConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OdooConfig")
            .field("base_url", &self.base_url)
            .field("db", &self.db)
            .field("login", &self.login)
            .field("secret", &"***")
            .field("protocol", &self.protocol)
            .field("context", &self.context)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Per-call additions: context keys (over the default context) and the caller's trace.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    pub context: Map<String, Value>,
    /// A W3C `traceparent` to send; a fresh one when None.
    pub traceparent: Option<String>,
}

/// Arguments of [`OdooClient::search_read`].
#[derive(Debug, Clone, Default)]
pub struct SearchRead<'a> {
    pub domain: Value,
    pub fields: &'a [&'a str],
    pub offset: Option<u64>,
    pub limit: Option<u64>,
    pub order: Option<&'a str>,
}

/// A client for one Odoo database. Cheap to share (`Arc`); connections are pooled.
pub struct OdooClient {
    http: reqwest::Client,
    config: OdooConfig,
    protocol: OnceCell<Protocol>,
    uid: Mutex<Option<i64>>,
    next_id: AtomicU64,
    trace_seed: std::collections::hash_map::RandomState,
}

/// An HTTP answer, whatever its status: what the `read_*_answer` functions interpret.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl OdooClient {
    pub fn new(config: OdooConfig) -> Result<OdooClient, OdooError> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.timeout)
            .user_agent(concat!("switchyard-odoo/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| OdooError::Connection(format!("cannot build the HTTP client: {e}")))?;
        let protocol = match config.protocol {
            Protocol::Auto => OnceCell::new(),
            fixed => OnceCell::new_with(Some(fixed)),
        };
        Ok(OdooClient {
            http,
            config,
            protocol,
            uid: Mutex::new(None),
            next_id: AtomicU64::new(1),
            trace_seed: Default::default(),
        })
    }

    pub fn config(&self) -> &OdooConfig {
        &self.config
    }

    /// The protocol in use, once known (always, unless `Auto` has not probed yet).
    pub fn chosen_protocol(&self) -> Option<Protocol> {
        self.protocol.get().copied()
    }

    /// The protocol in use, probing JSON-2 first when configured `Auto`. A probe that fails
    /// for a passing reason (timeout, 5xx) is not remembered, so the next call probes again.
    pub async fn protocol(&self) -> Result<Protocol, OdooError> {
        self.protocol
            .get_or_try_init(|| self.detect_protocol())
            .await
            .copied()
    }

    async fn detect_protocol(&self) -> Result<Protocol, OdooError> {
        let answer = self
            .json2_post(
                "res.users",
                "context_get",
                json!({}),
                &self.traceparent(None),
            )
            .await?;
        let chosen = match answer.status {
            200..=299 => Protocol::Json2,
            300..=399 | 401 | 403 | 404 | 405 => Protocol::JsonRpc,
            _ => return Err(http_error(answer)),
        };
        tracing::info!(status = answer.status, protocol = ?chosen, "odoo protocol detected");
        Ok(chosen)
    }

    /// `common.version` (over `/jsonrpc` unless configured for XML-RPC: JSON-2 has no
    /// equivalent, and `/jsonrpc` answers it without credentials).
    pub async fn version(&self) -> Result<Value, OdooError> {
        let traceparent = self.traceparent(None);
        let protocol = match self.protocol().await? {
            Protocol::XmlRpc => Protocol::XmlRpc,
            _ => Protocol::JsonRpc,
        };
        self.rpc_call(protocol, "common", "version", vec![], &traceparent)
            .await
    }

    /// Logs in now (whatever is cached) and caches the uid. `false` from Odoo is
    /// [`OdooError::WrongCredentials`].
    pub async fn authenticate(&self) -> Result<i64, OdooError> {
        let mut cached = self.uid.lock().await;
        let uid = self.login().await?;
        *cached = Some(uid);
        Ok(uid)
    }

    /// The cached uid, logging in first if there is none.
    pub async fn uid(&self) -> Result<i64, OdooError> {
        self.uid_and_whether_cached().await.map(|(uid, _)| uid)
    }

    async fn uid_and_whether_cached(&self) -> Result<(i64, bool), OdooError> {
        let mut cached = self.uid.lock().await;
        if let Some(uid) = *cached {
            return Ok((uid, true));
        }
        let uid = self.login().await?;
        *cached = Some(uid);
        Ok((uid, false))
    }

    /// Logs in again unless another call already did since `stale` was read.
    async fn reauthenticate(&self, stale: i64) -> Result<i64, OdooError> {
        let mut cached = self.uid.lock().await;
        if let Some(uid) = *cached
            && uid != stale
        {
            return Ok(uid);
        }
        *cached = None;
        let uid = self.login().await?;
        *cached = Some(uid);
        Ok(uid)
    }

    async fn login(&self) -> Result<i64, OdooError> {
        let traceparent = self.traceparent(None);
        let c = &self.config;
        let answer = match self.protocol().await? {
            protocol @ (Protocol::XmlRpc | Protocol::JsonRpc) => {
                let args = vec![
                    Value::from(c.db.as_str()),
                    Value::from(c.login.as_str()),
                    Value::from(c.secret.as_str()),
                    json!({}),
                ];
                self.rpc_call(protocol, "common", "authenticate", args, &traceparent)
                    .await?
            }
            // JSON-2 has no login: the key is checked on every call. The user's context
            // names the uid.
            Protocol::Json2 | Protocol::Auto => {
                let context = self
                    .json2_call("res.users", "context_get", json!({}), &traceparent)
                    .await?;
                context.get("uid").cloned().unwrap_or(Value::Null)
            }
        };
        tracing::debug!(login = %c.login, "odoo authenticate");
        match answer {
            Value::Number(n) if n.as_i64().is_some_and(|uid| uid > 0) => {
                Ok(n.as_i64().unwrap_or_default())
            }
            Value::Bool(false) => Err(OdooError::WrongCredentials),
            other => Err(OdooError::Undecodable(format!(
                "authenticate answered {other}"
            ))),
        }
    }

    /// `model.method(*args, **kwargs)` with the default context merged with `kwargs.context`
    /// and the call's own.
    pub async fn execute_kw(
        &self,
        model: &str,
        method: &str,
        args: Vec<Value>,
        kwargs: Map<String, Value>,
        options: &CallOptions,
    ) -> Result<Value, OdooError> {
        let traceparent = self.traceparent(options.traceparent.as_deref());
        let (mut kwargs, context) = self.split_context(kwargs, &options.context);
        let protocol = self.protocol().await?;
        if protocol == Protocol::Json2 {
            let body = json2::body(method, args, kwargs, context)?;
            return self.json2_call(model, method, body, &traceparent).await;
        }
        kwargs.insert("context".into(), Value::Object(context));
        let (uid, cached) = self.uid_and_whether_cached().await?;
        let call = |uid| {
            let params = self.execute_kw_params(uid, model, method, &args, &kwargs);
            self.rpc_call(protocol, "object", "execute_kw", params, &traceparent)
        };
        match call(uid).await {
            Err(e) if cached && e.wants_reauthentication() => {
                tracing::info!(model, method, error = %e, "odoo refused the cached login; logging in again");
                let uid = self.reauthenticate(uid).await?;
                call(uid).await
            }
            outcome => outcome,
        }
    }

    /// `search_count(domain)`.
    pub async fn search_count(
        &self,
        model: &str,
        domain: Value,
        options: &CallOptions,
    ) -> Result<i64, OdooError> {
        let count = self
            .execute_kw(model, "search_count", vec![domain], Map::new(), options)
            .await?;
        count
            .as_i64()
            .ok_or_else(|| OdooError::Undecodable(format!("search_count answered {count}")))
    }

    /// `search_read(domain, fields, offset, limit, order)`: the records as objects.
    pub async fn search_read(
        &self,
        model: &str,
        query: &SearchRead<'_>,
        options: &CallOptions,
    ) -> Result<Vec<Map<String, Value>>, OdooError> {
        let mut kwargs = Map::new();
        kwargs.insert("fields".into(), json!(query.fields));
        if let Some(offset) = query.offset {
            kwargs.insert("offset".into(), json!(offset));
        }
        if let Some(limit) = query.limit {
            kwargs.insert("limit".into(), json!(limit));
        }
        if let Some(order) = query.order {
            kwargs.insert("order".into(), json!(order));
        }
        let domain = if query.domain.is_null() {
            json!([])
        } else {
            query.domain.clone()
        };
        let rows = self
            .execute_kw(model, "search_read", vec![domain], kwargs, options)
            .await?;
        match rows {
            Value::Array(rows) => rows
                .into_iter()
                .map(|row| match row {
                    Value::Object(map) => Ok(map),
                    other => Err(OdooError::Undecodable(format!("search_read row {other}"))),
                })
                .collect(),
            other => Err(OdooError::Undecodable(format!(
                "search_read answered {other}"
            ))),
        }
    }

    /// The call's context: default, then `kwargs.context`, then the options' (later wins).
    fn split_context(
        &self,
        mut kwargs: Map<String, Value>,
        call_context: &Map<String, Value>,
    ) -> (Map<String, Value>, Map<String, Value>) {
        let mut context = self.config.context.clone();
        if let Some(Value::Object(given)) = kwargs.remove("context") {
            context.extend(given);
        }
        context.extend(call_context.clone());
        (kwargs, context)
    }

    /// `object.execute_kw(db, uid, secret, model, method, args, kwargs)` as positional params.
    fn execute_kw_params(
        &self,
        uid: i64,
        model: &str,
        method: &str,
        args: &[Value],
        kwargs: &Map<String, Value>,
    ) -> Vec<Value> {
        let c = &self.config;
        vec![
            Value::from(c.db.as_str()),
            Value::from(uid),
            Value::from(c.secret.as_str()),
            Value::from(model),
            Value::from(method),
            Value::Array(args.to_vec()),
            Value::Object(kwargs.clone()),
        ]
    }

    /// `service.method(*params)` over XML-RPC or JSON-RPC.
    async fn rpc_call(
        &self,
        protocol: Protocol,
        service: &str,
        method: &str,
        params: Vec<Value>,
        traceparent: &str,
    ) -> Result<Value, OdooError> {
        if protocol == Protocol::XmlRpc {
            return self
                .xmlrpc_call(service, method, &params, traceparent)
                .await;
        }
        self.jsonrpc_call(jsonrpc::service_call(service, method, params), traceparent)
            .await
    }

    // --- the three wire paths -----------------------------------------------------------

    async fn xmlrpc_call(
        &self,
        service: &str,
        method: &str,
        params: &[Value],
        traceparent: &str,
    ) -> Result<Value, OdooError> {
        let body = xmlrpc::encode_call(method, params);
        let answer = self
            .post(
                &format!("/xmlrpc/2/{service}"),
                "text/xml",
                body.into_bytes(),
                HeaderMap::new(),
                traceparent,
            )
            .await?;
        read_xmlrpc_answer(answer)
    }

    async fn jsonrpc_call(&self, params: Value, traceparent: &str) -> Result<Value, OdooError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = serde_json::to_vec(&jsonrpc::request(params, id))
            .map_err(|e| OdooError::Unsupported(e.to_string()))?;
        let answer = self
            .post(
                "/jsonrpc",
                "application/json",
                body,
                HeaderMap::new(),
                traceparent,
            )
            .await?;
        read_jsonrpc_answer(answer, &Value::from(id))
    }

    async fn json2_call(
        &self,
        model: &str,
        method: &str,
        body: Value,
        traceparent: &str,
    ) -> Result<Value, OdooError> {
        let answer = self.json2_post(model, method, body, traceparent).await?;
        read_json2_answer(answer)
    }

    async fn json2_post(
        &self,
        model: &str,
        method: &str,
        body: Value,
        traceparent: &str,
    ) -> Result<Answer, OdooError> {
        let mut headers = HeaderMap::new();
        let bearer =
            HeaderValue::from_str(&format!("bearer {}", self.config.secret)).map_err(|_| {
                OdooError::Unsupported("the API key is not a valid header value".into())
            })?;
        headers.insert(reqwest::header::AUTHORIZATION, bearer);
        if let Ok(db) = HeaderValue::from_str(&self.config.db) {
            headers.insert("X-Odoo-Database", db);
        }
        let body = serde_json::to_vec(&body).map_err(|e| OdooError::Unsupported(e.to_string()))?;
        let path = format!("/json/2/{model}/{method}");
        self.post(
            &path,
            "application/json; charset=utf-8",
            body,
            headers,
            traceparent,
        )
        .await
    }

    async fn post(
        &self,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
        headers: HeaderMap,
        traceparent: &str,
    ) -> Result<Answer, OdooError> {
        let response = self
            .http
            .post(format!("{}{path}", self.config.base_url))
            .headers(headers)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .header("traceparent", traceparent)
            .body(body)
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(transport_error)?.to_vec();
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    /// The caller's `traceparent`, or a fresh one (version 00, sampled).
    fn traceparent(&self, given: Option<&str>) -> String {
        if let Some(given) = given {
            return given.to_owned();
        }
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let random = |salt: u64| {
            let mut h = self.trace_seed.build_hasher();
            h.write_u64(n);
            h.write_u64(salt);
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos()),
            );
            h.finish()
        };
        format!(
            "00-{:016x}{:016x}-{:016x}-01",
            random(1),
            random(2),
            random(3)
        )
    }
}

/// An `/xmlrpc/*` answer: Odoo answers results and faults with 200; anything else is HTTP's.
pub fn read_xmlrpc_answer(answer: Answer) -> Result<Value, OdooError> {
    if answer.status != 200 {
        return Err(http_error(answer));
    }
    let decoded = xmlrpc::decode_response(&answer.body)
        .map_err(|e| OdooError::Undecodable(format!("XML-RPC answer: {e}")))?;
    xmlrpc_outcome(decoded)
}

/// A `/jsonrpc` (or `/web/…`) answer to the request with this `id`.
pub fn read_jsonrpc_answer(answer: Answer, id: &Value) -> Result<Value, OdooError> {
    if answer.status != 200 {
        return Err(http_error(answer));
    }
    jsonrpc::parse_response(&answer.body, id)
}

/// A `/json/2/…` answer: 2xx is the result itself, an error status carries the exception.
pub fn read_json2_answer(answer: Answer) -> Result<Value, OdooError> {
    match answer.status {
        200..=299 => serde_json::from_slice(&answer.body)
            .map_err(|e| OdooError::Undecodable(format!("JSON-2 answer is not JSON: {e}"))),
        300..=399 => Err(http_error(answer)),
        status => Err(json2::parse_error(
            status,
            &answer.body,
            retry_after(&answer.headers),
        )),
    }
}

/// An XML-RPC answer as the client's outcome: the None-after-commit fault is a success.
pub fn xmlrpc_outcome(decoded: Result<Value, xmlrpc::Fault>) -> Result<Value, OdooError> {
    match decoded {
        Ok(value) => Ok(value),
        Err(fault) if none_after_commit(&fault) => {
            tracing::debug!(
                "odoo could not marshal a None result after committing; the call succeeded"
            );
            Ok(Value::Null)
        }
        Err(fault) => Err(OdooError::from_fault(fault)),
    }
}

/// A non-success status without an RPC answer: redirects apart, the status and a bit of body.
fn http_error(answer: Answer) -> OdooError {
    if (300..400).contains(&answer.status) {
        let location = answer
            .headers
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok());
        return OdooError::Redirect {
            status: answer.status,
            location: location.map(str::to_owned),
        };
    }
    let retry_after = retry_after(&answer.headers);
    OdooError::Http {
        status: answer.status,
        body: body_excerpt(&answer.body),
        retry_after,
    }
}

fn retry_after(headers: &HeaderMap) -> Option<chrono::Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    switchyard_core::delivery::parse_retry_after(value, chrono::Utc::now())
}

/// The start of a body, for an error message (Odoo's HTML error pages are short).
pub(crate) fn body_excerpt(body: &[u8]) -> String {
    const MAX: usize = 512;
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX)]);
    text.trim().to_owned()
}

fn transport_error(e: reqwest::Error) -> OdooError {
    if e.is_timeout() {
        OdooError::Timeout
    } else if e.is_decode() {
        OdooError::Undecodable(e.to_string())
    } else {
        OdooError::Connection(error_chain(&e))
    }
}

/// reqwest's message plus its causes ("error sending request: … connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
