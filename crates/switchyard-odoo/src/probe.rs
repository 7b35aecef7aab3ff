//! The API-health probe of one Odoo connection: `version` (reachable, which release),
//! `authenticate` (the credentials work), a cheap `search_count` (the ORM answers), and
//! the API key's expiry where Odoo lets the key's user read it (`res.users.apikeys`).
//! Each step is timed; the first failure ends the probe.

use crate::client::{CallOptions, OdooClient, SearchRead};
use crate::error::OdooError;
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use std::time::Instant;
use switchyard_core::delivery::ErrorClass;

/// One timed step of a probe.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ProbeStep {
    pub step: String,
    pub ok: bool,
    pub latency_ms: f64,
    /// What failed, in words (never a secret).
    pub error: Option<String>,
    /// How the delivery engine would class this failure.
    pub class: Option<String>,
}

/// What one probe of an Odoo connection found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct OdooProbe {
    pub steps: Vec<ProbeStep>,
    /// `server_version` from `common.version`, e.g. "18.0-20250506".
    pub server_version: Option<String>,
    /// The protocol the client settled on (json2, jsonrpc, xmlrpc).
    pub protocol: Option<String>,
    pub uid: Option<i64>,
    /// The earliest expiry of the user's RPC API keys, when readable.
    pub api_key_expires: Option<DateTime<Utc>>,
}

impl OdooProbe {
    pub fn ok(&self) -> bool {
        !self.steps.is_empty() && self.steps.iter().all(|s| s.ok)
    }
}

fn step_of<T>(name: &str, started: Instant, r: &Result<T, OdooError>) -> ProbeStep {
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    match r {
        Ok(_) => ProbeStep {
            step: name.into(),
            ok: true,
            latency_ms,
            error: None,
            class: None,
        },
        Err(e) => ProbeStep {
            step: name.into(),
            ok: false,
            latency_ms,
            error: Some(e.to_string()),
            class: Some(class_name(e.class()).into()),
        },
    }
}

fn class_name(c: ErrorClass) -> &'static str {
    c.as_str()
}

/// Probe `client`'s server. Never fails: failures are steps.
pub async fn probe(client: &OdooClient) -> OdooProbe {
    let mut out = OdooProbe::default();
    let opts = CallOptions::default();

    let t = Instant::now();
    let version = client.version().await;
    out.steps.push(step_of("version", t, &version));
    let Ok(version) = version else { return out };
    out.server_version = version
        .get("server_version")
        .and_then(Value::as_str)
        .map(str::to_string);

    let t = Instant::now();
    let uid = client.authenticate().await;
    out.steps.push(step_of("authenticate", t, &uid));
    let Ok(uid) = uid else { return out };
    out.uid = Some(uid);
    out.protocol = client
        .chosen_protocol()
        .map(|p| format!("{p:?}").to_lowercase());

    let t = Instant::now();
    let count = client
        .search_count("res.partner", json!([["id", "=", 0]]), &opts)
        .await;
    out.steps.push(step_of("search_count", t, &count));
    if count.is_err() {
        return out;
    }

    // Only administrators may read API keys in most databases: an AccessError here just
    // means the expiry is not readable (the configured date is used instead).
    let query = SearchRead {
        domain: json!([["user_id", "=", uid]]),
        fields: &["expiration_date"],
        offset: None,
        limit: None,
        order: None,
    };
    if let Ok(rows) = client.search_read("res.users.apikeys", &query, &opts).await {
        out.api_key_expires = rows
            .iter()
            .filter_map(|r| r.get("expiration_date").and_then(Value::as_str))
            .filter_map(|s| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").ok())
            .map(|d| d.and_utc())
            .min();
    }
    out
}
