//! `POST /v1/events`: CloudEvents 1.0 over HTTP in structured, batch and binary mode, and
//! the webhook validation handshake (`OPTIONS`).
//!
//! The one rule this module exists for: a 2xx is sent only after the store has durably
//! committed every event of the request; anything else stores nothing and says why.

use crate::AppState;
use crate::error::{ApiError, FieldError, Problem};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use percent_encoding::percent_decode_str;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use switchyard_core::cloudevent::{
    self, CloudEvent, Data, Parsed, RawAttributes, Violation, is_json_media_type,
};
use switchyard_core::token::Permission;
use switchyard_store::{Appended, BusinessKey, NewEvent};

/// How a request carries its events (CloudEvents HTTP protocol binding, section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Structured,
    Batch,
    Binary,
}

/// Recognises the mode from the headers alone, before the body is read.
pub fn detect_mode(headers: &HeaderMap) -> Result<Mode, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    match ct.as_deref() {
        Some("application/cloudevents+json") => return Ok(Mode::Structured),
        Some("application/cloudevents-batch+json") => return Ok(Mode::Batch),
        Some(other)
            if other.starts_with("application/cloudevents+")
                || other.starts_with("application/cloudevents-batch+") =>
        {
            return Err(ApiError::new(
                Problem::UnsupportedMediaType,
                format!(
                    "event format \"{other}\" is not supported; use application/cloudevents+json or application/cloudevents-batch+json"
                ),
            ));
        }
        _ => {}
    }
    if headers.contains_key("ce-specversion") {
        return Ok(Mode::Binary);
    }
    Err(ApiError::new(
        Problem::UnsupportedMediaType,
        "not a CloudEvent: send Content-Type application/cloudevents+json (structured), application/cloudevents-batch+json (batch), or ce-* headers with any Content-Type (binary)",
    ))
}

/// Reads the body, refusing it as soon as it passes `max` bytes.
pub async fn read_limited(
    headers: &HeaderMap,
    body: Body,
    max: usize,
) -> Result<bytes::Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            Problem::TooLarge,
            format!("the request body exceeds the limit of {max} bytes"),
        )
    };
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > max as u64
    {
        return Err(too_large());
    }
    match http_body_util::Limited::new(body, max).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(too_large())
        }
        Err(e) => Err(ApiError::new(
            Problem::Malformed,
            format!("the request body could not be read: {e}"),
        )),
    }
}

fn json_body(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            Problem::Malformed,
            format!("the body is not valid JSON: {e}"),
        )
    })
}

fn field_errors(index: Option<usize>, v: Vec<Violation>, binary: bool) -> Vec<FieldError> {
    v.into_iter()
        .map(|v| {
            let prefix = index.map(|i| format!("/{i}")).unwrap_or_default();
            let in_body = v.field == "data" || v.field == "data_base64";
            FieldError {
                index,
                pointer: (!binary || in_body).then(|| {
                    if v.field.is_empty() {
                        if prefix.is_empty() {
                            String::new()
                        } else {
                            prefix.clone()
                        }
                    } else {
                        format!("{prefix}/{}", v.field)
                    }
                }),
                header: (binary && !in_body).then(|| match v.field.as_str() {
                    "datacontenttype" => "content-type".to_string(),
                    f => format!("ce-{f}"),
                }),
                field: v.field,
                detail: v.detail,
            }
        })
        .collect()
}

fn invalid(errors: Vec<FieldError>, what: &str) -> ApiError {
    let first = errors
        .first()
        .map(|e| {
            format!(
                "{}: {}",
                if e.field.is_empty() {
                    "event"
                } else {
                    &e.field
                },
                e.detail
            )
        })
        .unwrap_or_default();
    let n = errors.len();
    ApiError::new(
        Problem::Invalid,
        if n == 1 {
            format!("{what} is not a valid CloudEvent: {first}")
        } else {
            format!("{what} breaks {n} CloudEvents rules; first: {first}")
        },
    )
    .with_errors(errors)
}

/// Undoes an RFC 7230 (section 3.2.6) quoted-string: the whole value between double quotes,
/// with backslash escapes. Any other value (older senders did not have to encode `"`) is
/// returned as is.
fn unquote(v: &str) -> std::borrow::Cow<'_, str> {
    let quoted = || {
        let mut out = String::with_capacity(v.len());
        let mut chars = v.strip_prefix('"')?.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => out.push(chars.next()?),
                '"' => return chars.as_str().is_empty().then_some(out),
                c => out.push(c),
            }
        }
        None
    };
    quoted().map_or(v.into(), Into::into)
}

/// Binary mode: attributes from `ce-*` headers, data from the body. Header values are
/// unquoted (if double-quoted) and then percent-decoded once (HTTP binding 3.1.3.2).
pub fn parse_binary(headers: &HeaderMap, body: &[u8]) -> Result<Parsed, ApiError> {
    let mut attrs = BTreeMap::new();
    let mut errors = Vec::new();
    for (name, value) in headers {
        let Some(attr) = name.as_str().strip_prefix("ce-") else {
            continue;
        };
        let header_error = |detail: &str| FieldError {
            index: None,
            field: attr.to_string(),
            pointer: None,
            header: Some(name.as_str().to_string()),
            detail: detail.into(),
        };
        if attr == "datacontenttype" {
            // HTTP binding 3.1.1: Content-Type carries it; "a ce-datacontenttype HTTP header
            // MUST NOT also be present in the message".
            errors.push(header_error(
                "not allowed in binary mode; the Content-Type header is the datacontenttype",
            ));
            continue;
        }
        let Ok(unquoted) = value.to_str().map(unquote) else {
            errors.push(header_error(
                "header value is not printable ASCII (percent-encode it)",
            ));
            continue;
        };
        match percent_decode_str(&unquoted).decode_utf8() {
            Ok(v) => {
                attrs.insert(attr.to_string(), Value::String(v.into_owned()));
            }
            Err(_) => errors.push(header_error("header value is not percent-encoded UTF-8")),
        }
    }
    if !errors.is_empty() {
        return Err(invalid(errors, "the event"));
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if let Some(ct) = &ct {
        attrs.insert("datacontenttype".into(), Value::String(ct.clone()));
    }
    let data = if body.is_empty() {
        None
    } else if is_json_media_type(ct.as_deref()) {
        Some(Data::Json(serde_json::from_slice(body).map_err(|e| {
            ApiError::new(
                Problem::Malformed,
                format!(
                    "the body is declared as JSON ({}) but is not valid JSON: {e}",
                    ct.as_deref().unwrap_or("no Content-Type")
                ),
            )
            .with_errors(vec![FieldError {
                index: None,
                field: "data".into(),
                pointer: Some(String::new()),
                header: None,
                detail: e.to_string(),
            }])
        })?))
    } else if is_textual(ct.as_deref()) {
        match std::str::from_utf8(body) {
            Ok(s) => Some(Data::Text(s.to_string())),
            Err(_) => Some(Data::Binary(body.to_vec())),
        }
    } else {
        Some(Data::Binary(body.to_vec()))
    };
    CloudEvent::from_parts(RawAttributes { attrs }, data)
        .map_err(|v| invalid(field_errors(None, v, true), "the event"))
}

fn is_textual(ct: Option<&str>) -> bool {
    let Some(ct) = ct else { return false };
    let e = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    e.starts_with("text/")
        || e == "application/xml"
        || e.ends_with("+xml")
        || e == "application/x-www-form-urlencoded"
}

/// Parses a request into events: all valid, or an error that lists every problem.
pub fn parse_request(
    mode: Mode,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Vec<Parsed>, ApiError> {
    match mode {
        Mode::Structured => {
            let v = json_body(body)?;
            CloudEvent::from_json(v)
                .map(|p| vec![p])
                .map_err(|v| invalid(field_errors(None, v, false), "the event"))
        }
        Mode::Batch => {
            let v = json_body(body)?;
            if !v.is_array() {
                return Err(ApiError::new(
                    Problem::Invalid,
                    "a CloudEvents batch (application/cloudevents-batch+json) must be a JSON array of events; nothing was stored",
                )
                .with_errors(vec![FieldError {
                    index: None,
                    field: String::new(),
                    pointer: Some(String::new()),
                    header: None,
                    detail: "not a JSON array".into(),
                }]));
            }
            cloudevent::parse_batch(v).map_err(|bad| {
                let n = bad.len();
                let errors: Vec<FieldError> = bad
                    .into_iter()
                    .flat_map(|(i, v)| field_errors(Some(i), v, false))
                    .collect();
                let mut e = invalid(errors, "the batch");
                e.detail = format!(
                    "{n} event{} of the batch {} invalid; nothing was stored: {}",
                    if n == 1 { "" } else { "s" },
                    if n == 1 { "is" } else { "are" },
                    e.detail
                );
                e
            })
        }
        Mode::Binary => parse_binary(headers, body).map(|p| vec![p]),
    }
}

/// The declared source's business keys for an event; refuses undeclared sources when the
/// configuration says so. A key program that fails does not lose the event: it is stored
/// without that key and the sender is warned (the failure is also logged and counted).
pub fn source_keys(
    state: &AppState,
    event: &CloudEvent,
    mode: Mode,
    index: Option<usize>,
    warnings: &mut Vec<FieldError>,
) -> Result<Vec<BusinessKey>, ApiError> {
    if let Some(wh) = state.sources.webhook_with_source(&event.source) {
        // Only the webhook endpoint, with its own verification, may speak for this source;
        // otherwise an ingest token could claim its ids ahead of the real deliveries.
        if wh.kind == switchyard_core::sources::SourceKind::Odoo {
            return Err(ApiError::new(
                Problem::Forbidden,
                format!(
                    "source \"{}\" belongs to odoo source \"{}\"; only its poller and its webhook hints make its events",
                    event.source, wh.name
                ),
            ));
        }
        return Err(ApiError::new(
            Problem::Forbidden,
            format!(
                "source \"{}\" belongs to webhook source \"{}\"; its events are accepted only at /v1/webhooks/{}",
                event.source, wh.name, wh.name
            ),
        ));
    }
    let Some(source) = state.sources.for_cloudevent(&event.source) else {
        if state.sources.accept_undeclared {
            return Ok(Vec::new());
        }
        return Err(ApiError::new(
            Problem::UndeclaredSource,
            format!(
                "source \"{}\" is not declared in [[sources]] and undeclared sources are refused; nothing was stored",
                event.source
            ),
        )
        .with_errors(vec![FieldError {
            index,
            field: "source".into(),
            // where the sender wrote it: a header in binary mode, the body otherwise
            pointer: (mode != Mode::Binary).then(|| match index {
                Some(i) => format!("/{i}/source"),
                None => "/source".into(),
            }),
            header: (mode == Mode::Binary).then(|| "ce-source".to_string()),
            detail: "not declared".into(),
        }]));
    };
    check_quota(state, source)?;
    keys_of(source, event, index, warnings)
}

/// Refuses a source that has used its storage quota (429 for that source only).
pub fn check_quota(
    state: &AppState,
    source: &switchyard_core::sources::Source,
) -> Result<(), ApiError> {
    let Some(quota) = source.retention.quota_bytes else {
        return Ok(());
    };
    let used = state.usage.bytes(&source.name);
    if used < quota {
        return Ok(());
    }
    let mut e = ApiError::new(
        Problem::QuotaExceeded,
        format!(
            "source \"{}\" stores {used} bytes, at or over its quota of {quota}; nothing was stored. Retention frees space; raise sources.retention.quota_mib to accept more now",
            source.name
        ),
    );
    e.retry_after = Some(60);
    Err(e)
}

/// A source's business keys for an event (see [`source_keys`]).
pub fn keys_of(
    source: &switchyard_core::sources::Source,
    event: &CloudEvent,
    index: Option<usize>,
    warnings: &mut Vec<FieldError>,
) -> Result<Vec<BusinessKey>, ApiError> {
    let (keys, errors) = source.extract_keys(event);
    for e in errors {
        metrics::counter!("switchyard_ingest_key_errors_total", "source" => source.name.clone())
            .increment(1);
        tracing::warn!(event_id = %event.id, source = %event.source, error = %e, "business key extraction failed; event stored without that key");
        warnings.push(FieldError {
            index,
            field: "keys".into(),
            pointer: None,
            header: None,
            detail: e,
        });
    }
    Ok(keys
        .into_iter()
        .map(|(n, v)| BusinessKey::new(n, v))
        .collect())
}

/// Stores events a declared source produced inside the hub (the Odoo poller and its
/// webhook hints) exactly as `POST /v1/events` stores a request: the source's quota, its
/// business keys, every flow's routing written in the events' one transaction, and after
/// the commit the hand-off of the deliveries leased to this node. Returns each event's
/// outcome, in order; an error stored nothing.
pub async fn store_source_events(
    state: &AppState,
    source: &switchyard_core::sources::Source,
    events: Vec<CloudEvent>,
) -> Result<Vec<Appended>, ApiError> {
    check_quota(state, source)?;
    let received_at = state.clock.now();
    let mut warnings = Vec::new();
    let mut routings = Vec::with_capacity(events.len());
    let mut new_events = Vec::with_capacity(events.len());
    for event in &events {
        let keys = keys_of(source, event, None, &mut warnings)?;
        // Routed before the commit: the deliveries are written in the event's transaction.
        let routing = state.engine.route(event);
        new_events.push(NewEvent {
            event: event.clone(),
            received_at,
            keys,
            deliveries: routing.deliveries.clone(),
        });
        routings.push(routing);
    }
    let results = state.store.append_routed(new_events).await?;
    let mut outcomes = Vec::with_capacity(results.len());
    for ((event, routing), (appended, created)) in events.iter().zip(routings).zip(results) {
        if let Appended::Stored { seq } = appended {
            state
                .engine
                .handoff(event, seq, received_at, routing, created);
        }
        outcomes.push(appended);
    }
    let stored = outcomes
        .iter()
        .filter(|a| matches!(a, Appended::Stored { .. }))
        .count() as u64;
    metrics::counter!("switchyard_ingest_events_total", "outcome" => "stored").increment(stored);
    metrics::counter!("switchyard_ingest_events_total", "outcome" => "duplicate")
        .increment(outcomes.len() as u64 - stored);
    Ok(outcomes)
}

fn outcome_json(event: &CloudEvent, a: Appended) -> Value {
    let (status, seq) = match a {
        Appended::Stored { seq } => ("stored", seq),
        Appended::Duplicate { seq } => ("duplicate", seq),
    };
    json!({"status": status, "seq": seq, "source": event.source, "id": event.id})
}

/// `POST /v1/events`
pub async fn post_events(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match ingest(&state, &headers, body).await {
        Ok(r) => r,
        Err(e) => {
            metrics::counter!("switchyard_ingest_rejected_total", "reason" => e.problem.code())
                .increment(1);
            e.into_response()
        }
    }
}

async fn ingest(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Response, ApiError> {
    let caller = state.authorize(headers, Permission::Ingest).await?;
    let mode = detect_mode(headers)?;
    let bytes = read_limited(headers, body, state.limits.max_body_bytes).await?;
    let parsed = parse_request(mode, headers, &bytes)?;
    let received_at = state.clock.now();
    let mut warnings: Vec<FieldError> = parsed
        .iter()
        .enumerate()
        .flat_map(|(i, p)| {
            field_errors(
                (mode == Mode::Batch).then_some(i),
                p.warnings.clone(),
                mode == Mode::Binary,
            )
        })
        .collect();
    let mut events = Vec::with_capacity(parsed.len());
    let mut routings = Vec::with_capacity(parsed.len());
    let mut new_events = Vec::with_capacity(parsed.len());
    for (i, p) in parsed.into_iter().enumerate() {
        let index = (mode == Mode::Batch).then_some(i);
        let keys = source_keys(state, &p.event, mode, index, &mut warnings)?;
        // Routed before the commit: the deliveries are written in the event's transaction.
        let routing = state.engine.route(&p.event);
        new_events.push(NewEvent {
            event: p.event.clone(),
            received_at,
            keys,
            deliveries: routing.deliveries.clone(),
        });
        events.push(p.event);
        routings.push(routing);
    }
    let results = state.store.append_routed(new_events).await?;
    let mut outcomes = Vec::with_capacity(results.len());
    for ((event, routing), (appended, created)) in events.iter().zip(routings).zip(results) {
        if let Appended::Stored { seq } = appended {
            state
                .engine
                .handoff(event, seq, received_at, routing, created);
        }
        outcomes.push(appended);
    }

    let mut stored = 0u64;
    for (e, a) in events.iter().zip(&outcomes) {
        let outcome = match a {
            Appended::Stored { .. } => {
                stored += 1;
                "stored"
            }
            Appended::Duplicate { .. } => "duplicate",
        };
        tracing::debug!(
            event_id = %e.id,
            source = %e.source,
            event_type = %e.ty,
            seq = a.seq(),
            outcome,
            actor = %caller.name,
            "event ingested"
        );
    }
    let duplicates = outcomes.len() as u64 - stored;
    metrics::counter!("switchyard_ingest_events_total", "outcome" => "stored").increment(stored);
    metrics::counter!("switchyard_ingest_events_total", "outcome" => "duplicate")
        .increment(duplicates);

    let status = if stored == 0 && !outcomes.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let mut body = if mode == Mode::Batch {
        json!({
            "stored": stored,
            "duplicates": duplicates,
            "events": events.iter().zip(&outcomes).map(|(e, a)| outcome_json(e, *a)).collect::<Vec<_>>(),
        })
    } else {
        outcome_json(&events[0], outcomes[0])
    };
    if !warnings.is_empty() {
        body["warnings"] = serde_json::to_value(&warnings).unwrap_or_default();
    }
    Ok((status, axum::Json(body)).into_response())
}

/// `OPTIONS /v1/events`: the CloudEvents HTTP webhook validation handshake (abuse
/// protection, section 4), so senders such as Azure Event Grid can subscribe.
pub async fn options_events(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let allow = HeaderValue::from_static("POST, OPTIONS");
    let Some(origin) = headers
        .get("webhook-request-origin")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
    else {
        return (StatusCode::NO_CONTENT, [(header::ALLOW, allow)]).into_response();
    };
    let allowed = state
        .limits
        .allowed_origins
        .iter()
        .any(|o| o == "*" || o.eq_ignore_ascii_case(&origin));
    if !allowed {
        return ApiError::new(
            Problem::Forbidden,
            format!("origin \"{origin}\" may not deliver events here (ingest.allowed_origins)"),
        )
        .into_response();
    }
    let mut resp = (StatusCode::OK, [(header::ALLOW, allow)]).into_response();
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&origin) {
        h.insert("webhook-allowed-origin", v);
    }
    h.insert("webhook-allowed-rate", HeaderValue::from_static("*"));
    resp
}
