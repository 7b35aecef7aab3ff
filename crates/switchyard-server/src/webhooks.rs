//! `POST /v1/webhooks/{name}`: vendor webhooks that do not speak CloudEvents. Each named
//! source verifies the request its own way (no API token), then maps it to a CloudEvent by
//! configuration and stores it exactly like `POST /v1/events`.
//!
//! A request that does not verify stores nothing and answers 403. Every comparison of a
//! secret or signature is constant-time; timestamps are checked against real time, never
//! the scaled business clock.

use crate::AppState;
use crate::error::{ApiError, FieldError, Problem};
use crate::ingest::{keys_of, read_limited};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde_json::{Map, Value, json};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use switchyard_core::cloudevent::{CloudEvent, Data, RawAttributes, is_json_media_type};
use switchyard_core::sources::{SignatureEncoding, VerifyConfig, standard_webhooks_key};
use switchyard_store::{Appended, NewEvent};

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().to_vec()
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// Checks a request against a source's verification. `Err` says why, in words safe to show
/// the sender (never a secret or the expected signature).
pub fn verify(
    cfg: &VerifyConfig,
    secrets: &[String],
    headers: &HeaderMap,
    body: &[u8],
    path_token: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(), String> {
    match cfg {
        VerifyConfig::HmacSha256 {
            header: name,
            encoding,
            prefix,
            ..
        } => {
            let value = header(headers, name).ok_or_else(|| format!("missing header {name}"))?;
            let given: Vec<Vec<u8>> = value
                .split([',', ' '])
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    prefix
                        .as_deref()
                        .and_then(|p| s.strip_prefix(p))
                        .unwrap_or(s)
                })
                .filter_map(|s| match encoding {
                    SignatureEncoding::Base64 => B64.decode(s).ok(),
                    SignatureEncoding::Hex => hex::decode(s).ok(),
                })
                .collect();
            if given.is_empty() {
                return Err(format!("header {name} holds no readable signature"));
            }
            let ok = secrets.iter().any(|s| {
                let expected = hmac_sha256(s.as_bytes(), &[body]);
                given.iter().any(|g| ct_eq(g, &expected))
            });
            ok.then_some(())
                .ok_or_else(|| "signature does not match".into())
        }
        VerifyConfig::Stripe {
            header: name,
            tolerance_seconds,
            ..
        } => {
            let value = header(headers, name).ok_or_else(|| format!("missing header {name}"))?;
            let mut t = None;
            let mut sigs = Vec::new();
            for part in value.split(',') {
                match part.trim().split_once('=') {
                    Some(("t", v)) => t = v.parse::<i64>().ok(),
                    Some(("v1", v)) => sigs.extend(hex::decode(v).ok()),
                    _ => {}
                }
            }
            let t = t.ok_or_else(|| format!("header {name} has no t=<unix time>"))?;
            check_window(t, now, *tolerance_seconds)?;
            if sigs.is_empty() {
                return Err(format!("header {name} has no v1 signature"));
            }
            let ts = t.to_string();
            let ok = secrets.iter().any(|s| {
                let expected = hmac_sha256(s.as_bytes(), &[ts.as_bytes(), b".", body]);
                sigs.iter().any(|g| ct_eq(g, &expected))
            });
            ok.then_some(())
                .ok_or_else(|| "signature does not match".into())
        }
        VerifyConfig::StandardWebhooks {
            tolerance_seconds, ..
        } => {
            let id = header(headers, "webhook-id").ok_or("missing header webhook-id")?;
            let ts =
                header(headers, "webhook-timestamp").ok_or("missing header webhook-timestamp")?;
            let sig =
                header(headers, "webhook-signature").ok_or("missing header webhook-signature")?;
            let t: i64 = ts
                .parse()
                .map_err(|_| "webhook-timestamp is not a unix time")?;
            check_window(t, now, *tolerance_seconds)?;
            let given: Vec<Vec<u8>> = sig
                .split(' ')
                .filter_map(|e| e.strip_prefix("v1,"))
                .filter_map(|b| B64.decode(b).ok())
                .collect();
            if given.is_empty() {
                return Err("webhook-signature has no v1 signature".into());
            }
            let ok = secrets
                .iter()
                .filter_map(|s| standard_webhooks_key(s))
                .any(|key| {
                    let expected =
                        hmac_sha256(&key, &[id.as_bytes(), b".", ts.as_bytes(), b".", body]);
                    given.iter().any(|g| ct_eq(g, &expected))
                });
            ok.then_some(())
                .ok_or_else(|| "signature does not match".into())
        }
        VerifyConfig::Bearer { .. } => {
            let value = header(headers, header::AUTHORIZATION.as_str())
                .ok_or("missing Authorization header")?;
            let token = value
                .split_once(' ')
                .filter(|(s, _)| s.eq_ignore_ascii_case("bearer"))
                .map(|(_, t)| t.trim())
                .ok_or("the Authorization header must be `Bearer <token>`")?;
            let ok = secrets
                .iter()
                .any(|s| ct_eq(s.as_bytes(), token.as_bytes()));
            ok.then_some(())
                .ok_or_else(|| "unknown bearer token".into())
        }
        VerifyConfig::PathToken { .. } => {
            let token = path_token
                .ok_or("this source takes its token in the path: /v1/webhooks/<name>/<token>")?;
            let ok = secrets
                .iter()
                .any(|s| ct_eq(s.as_bytes(), token.as_bytes()));
            ok.then_some(()).ok_or_else(|| "unknown path token".into())
        }
    }
}

fn check_window(t: i64, now: DateTime<Utc>, tolerance: u64) -> Result<(), String> {
    // `abs_diff`, not `(now - t).unsigned_abs()`: a sender-chosen `t` near i64::MIN
    // would overflow the subtraction.
    let skew = now.timestamp().abs_diff(t);
    if skew > tolerance {
        Err(format!(
            "timestamp is {skew} s away from now; the tolerance is {tolerance} s (replayed or clock skew)"
        ))
    } else {
        Ok(())
    }
}

/// `POST /v1/webhooks/{name}`
pub async fn post(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let r = receive(&state, &name, None, &headers, body).await;
    respond(r, metric_label(&state, &name))
}

/// `POST /v1/webhooks/{name}/{token}` (sources verified by a secret path token)
pub async fn post_with_token(
    State(state): State<AppState>,
    Path((name, token)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let r = receive(&state, &name, Some(&token), &headers, body).await;
    respond(r, metric_label(&state, &name))
}

/// The `webhook` label of the metrics: the declared name, or one fixed value for every
/// name no source declares (anyone may post to any path, and each label value is a series
/// kept for the life of the process). Parentheses never appear in a declared name.
fn metric_label<'a>(state: &AppState, name: &'a str) -> &'a str {
    if state.sources.webhook(name).is_some() || state.sources.odoo(name).is_some() {
        name
    } else {
        "(undeclared)"
    }
}

fn respond(r: Result<Response, ApiError>, name: &str) -> Response {
    r.unwrap_or_else(|e| {
        metrics::counter!("switchyard_webhook_rejected_total", "webhook" => name.to_string(), "reason" => e.problem.code())
            .increment(1);
        e.into_response()
    })
}

fn field(name: &str, detail: String) -> FieldError {
    FieldError {
        index: None,
        field: name.into(),
        pointer: None,
        header: None,
        detail,
    }
}

async fn receive(
    state: &AppState,
    name: &str,
    path_token: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    if let Some(odoo) = state.sources.odoo(name) {
        // Odoo's notifications are hints of a change, read back before anything is stored.
        return crate::odoo_capture::receive_hint(state, odoo, path_token, headers, body).await;
    }
    let source = state.sources.webhook(name).ok_or_else(|| {
        ApiError::new(
            Problem::NotFound,
            format!("no webhook source named \"{name}\""),
        )
    })?;
    let wh = source
        .webhook
        .as_ref()
        .ok_or_else(|| ApiError::new(Problem::Internal, "webhook source without a mapping"))?;
    let bytes = read_limited(headers, body, state.limits.max_body_bytes).await?;
    let secrets: Vec<String> = wh
        .verify
        .secrets()
        .iter()
        .map(|s| s.expose())
        .collect::<Result<_, _>>()
        .map_err(|e| {
            tracing::error!(webhook = name, error = %e, "a webhook secret cannot be read");
            ApiError::new(
                Problem::Internal,
                "the webhook's secret cannot be read on the server",
            )
        })?;
    if let Err(why) = verify(
        &wh.verify,
        &secrets,
        headers,
        &bytes,
        path_token,
        state.clock.real_now(),
    ) {
        tracing::warn!(webhook = name, reason = %why, "webhook refused");
        return Err(ApiError::new(
            Problem::InvalidSignature,
            format!("webhook \"{name}\" refused: {why}; nothing was stored"),
        ));
    }
    // only a verified sender learns about the quota
    crate::ingest::check_quota(state, source)?;

    // What jq sees: the body (JSON if it parses, else its text) and the headers.
    let content_type = header(headers, header::CONTENT_TYPE.as_str()).map(str::to_string);
    let parsed: Option<Value> = serde_json::from_slice(&bytes).ok();
    let body_value = parsed
        .clone()
        .unwrap_or_else(|| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    let mut hmap = Map::new();
    for (k, v) in headers {
        if let Ok(v) = v.to_str() {
            hmap.insert(k.as_str().to_string(), Value::String(v.to_string()));
        }
    }
    let hvalue = Value::Object(hmap);
    let eval = |attr: &str, ex: &switchyard_core::sources::Extract| {
        ex.eval(&body_value, &hvalue).map_err(|e| {
            ApiError::new(Problem::Invalid, format!("{attr}: {e}"))
                .with_errors(vec![field(attr, e)])
        })
    };
    let required = |attr: &str, v: Option<String>| {
        v.ok_or_else(|| {
            let d = format!("the mapping found no {attr} in this request");
            ApiError::new(Problem::Invalid, d.clone()).with_errors(vec![field(attr, d)])
        })
    };
    let id = required("id", eval("id", &wh.id)?)?;
    let ty = required("type", eval("type", &wh.ty)?)?;
    let mut attrs = std::collections::BTreeMap::new();
    attrs.insert("specversion".to_string(), Value::from("1.0"));
    attrs.insert("id".into(), Value::from(id));
    attrs.insert("type".into(), Value::from(ty));
    attrs.insert("source".into(), Value::from(source_uri(source)));
    if let Some(ex) = &wh.subject
        && let Some(s) = eval("subject", ex)?
    {
        attrs.insert("subject".into(), Value::from(s));
    }
    if let Some(ex) = &wh.time
        && let Some(t) = eval("time", ex)?
    {
        attrs.insert("time".into(), Value::from(t));
    }
    let data = match (&parsed, &content_type) {
        (Some(v), ct) if is_json_media_type(ct.as_deref()) || ct.is_none() => {
            if let Some(ct) = ct {
                attrs.insert("datacontenttype".into(), Value::from(ct.clone()));
            }
            Some(Data::Json(v.clone()))
        }
        _ if bytes.is_empty() => None,
        _ => {
            attrs.insert(
                "datacontenttype".into(),
                Value::from(
                    content_type
                        .clone()
                        .unwrap_or_else(|| "application/octet-stream".into()),
                ),
            );
            match std::str::from_utf8(&bytes) {
                Ok(s) => Some(Data::Text(s.to_string())),
                Err(_) => Some(Data::Binary(bytes.to_vec())),
            }
        }
    };
    let parsed_event = CloudEvent::from_parts(RawAttributes { attrs }, data).map_err(|v| {
        let first = v.first().map(|v| format!("{}: {}", v.field, v.detail)).unwrap_or_default();
        ApiError::new(
            Problem::Invalid,
            format!("webhook \"{name}\" mapped this request to an invalid CloudEvent ({first}); nothing was stored"),
        )
        .with_errors(v.into_iter().map(|v| field(&v.field, v.detail)).collect())
    })?;
    let event = parsed_event.event;
    let mut warnings = Vec::new();
    let keys = keys_of(source, &event, None, &mut warnings)?;
    let received_at = state.clock.now();
    let routing = state.engine.route(&event);
    let mut results = state
        .store
        .append_routed(vec![NewEvent {
            event: event.clone(),
            received_at,
            keys,
            deliveries: routing.deliveries.clone(),
        }])
        .await?;
    let (appended, created) = results.remove(0);
    if let Appended::Stored { seq } = appended {
        state
            .engine
            .handoff(&event, seq, received_at, routing, created);
    }
    let outcome = [appended];
    let (status, label) = match outcome[0] {
        Appended::Stored { .. } => (StatusCode::ACCEPTED, "stored"),
        Appended::Duplicate { .. } => (StatusCode::OK, "duplicate"),
    };
    metrics::counter!("switchyard_ingest_events_total", "outcome" => label).increment(1);
    tracing::debug!(event_id = %event.id, source = %event.source, webhook = name, outcome = label, "webhook ingested");
    let mut body = json!({"status": label, "seq": outcome[0].seq(), "source": event.source, "id": event.id, "type": event.ty});
    if !warnings.is_empty() {
        body["warnings"] = serde_json::to_value(&warnings).unwrap_or_default();
    }
    Ok((status, axum::Json(body)).into_response())
}

fn source_uri(source: &switchyard_core::sources::Source) -> String {
    match &source.pattern {
        switchyard_core::sources::SourcePattern::Exact(s)
        | switchyard_core::sources::SourcePattern::Prefix(s) => s.clone(),
    }
}
