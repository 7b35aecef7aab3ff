//! Odoo connections (`[[odoo]]`) and the API-health probes (`[probes]`).
//!
//! ```toml
//! [[odoo]]
//! name = "main"
//! url = "https://erp.example.com"
//! database = "prod"
//! login = "switchyard@example.com"
//! secret = "env:ODOO_API_KEY"        # password or API key, always a reference
//! protocol = "auto"                   # auto | json2 | jsonrpc | xmlrpc
//! context = { lang = "en_US", tz = "Europe/Paris" }
//! api_key_expires = "2027-03-31"      # when Odoo does not let the key's user read it
//!
//! [probes]
//! interval_seconds = 60
//! credential_warning_days = 14
//! ```

use crate::secret::Secret;
use serde::Deserialize;
use serde_json::{Map, Value};

/// Which of Odoo's external APIs to speak.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OdooProtocol {
    /// JSON-2 where the server offers it (Odoo 19+), else JSON-RPC.
    #[default]
    Auto,
    Json2,
    Jsonrpc,
    Xmlrpc,
}

/// One Odoo server Switchyard talks to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OdooConnectionConfig {
    pub name: String,
    /// Base URL, e.g. `https://erp.example.com` (no path).
    pub url: String,
    pub database: String,
    pub login: String,
    /// The password or API key (a reference: `env:NAME` or `file:/path`).
    pub secret: Secret,
    #[serde(default)]
    pub protocol: OdooProtocol,
    /// Odoo context sent with every call (`lang`, `tz`, `allowed_company_ids`,
    /// `active_test`); a call's own context wins key by key.
    #[serde(default)]
    pub context: Map<String, Value>,
    /// Per-request timeout. Longer than Odoo's own serialization-retry loop (up to ~30 s),
    /// so a slow success is not mistaken for a failure.
    #[serde(default = "default_odoo_timeout")]
    pub timeout_seconds: u64,
    /// The API key's expiry date (`YYYY-MM-DD`), when the key's user cannot read it from
    /// Odoo itself. Probes warn ahead of it.
    pub api_key_expires: Option<chrono::NaiveDate>,
    /// Whether the API-health probe runs for this connection.
    #[serde(default = "yes")]
    pub probe: bool,
}

fn default_odoo_timeout() -> u64 {
    45
}

fn yes() -> bool {
    true
}

/// The API-health probes: per Odoo connection (version, authenticate, a cheap
/// `search_count`) and per HTTP destination (a HEAD request).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeConfig {
    /// Seconds between two probes of the same target (real time).
    #[serde(default = "default_interval")]
    pub interval_seconds: u64,
    /// Seconds each request of a probe may take before it counts as failed.
    #[serde(default = "default_probe_timeout")]
    pub timeout_seconds: u64,
    /// Warn this many days before an Odoo API key expires.
    #[serde(default = "default_warning_days")]
    pub credential_warning_days: u32,
    /// Probe HTTP destinations too.
    #[serde(default = "yes")]
    pub destinations: bool,
}

fn default_interval() -> u64 {
    60
}
fn default_probe_timeout() -> u64 {
    10
}
fn default_warning_days() -> u32 {
    14
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            interval_seconds: default_interval(),
            timeout_seconds: default_probe_timeout(),
            credential_warning_days: default_warning_days(),
            destinations: true,
        }
    }
}

/// Checks across `[[odoo]]` and `[probes]`: (dotted key, problem).
pub fn validate(odoo: &[OdooConnectionConfig], probes: &ProbeConfig) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, o) in odoo.iter().enumerate() {
        if o.name.trim().is_empty() {
            out.push((format!("odoo[{i}].name"), "must not be empty".into()));
        } else if !seen.insert(o.name.as_str()) {
            out.push((
                format!("odoo[{i}].name"),
                format!("\"{}\" is declared twice", o.name),
            ));
        }
        match reqwest_like_url(&o.url) {
            Ok(()) => {}
            Err(why) => out.push((format!("odoo[{i}].url"), why)),
        }
        if o.database.trim().is_empty() {
            out.push((format!("odoo[{i}].database"), "must not be empty".into()));
        }
        if o.login.trim().is_empty() {
            out.push((format!("odoo[{i}].login"), "must not be empty".into()));
        }
        if let Err(e) = o.secret.expose() {
            out.push((format!("odoo[{i}].secret"), e.to_string()));
        }
        if o.timeout_seconds < 35 {
            out.push((
                format!("odoo[{i}].timeout_seconds"),
                "must be at least 35: Odoo retries serialization failures for up to ~30 s before it answers".into(),
            ));
        }
    }
    if probes.interval_seconds == 0 {
        out.push((
            "probes.interval_seconds".into(),
            "must be at least 1".into(),
        ));
    }
    if probes.timeout_seconds == 0 {
        out.push(("probes.timeout_seconds".into(), "must be at least 1".into()));
    }
    out
}

fn reqwest_like_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| "must start with http:// or https://".to_string())?;
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() {
        return Err("has no host".into());
    }
    if rest.len() > host.len() + 1 {
        return Err("must be the server's base URL, without a path".into());
    }
    Ok(())
}
