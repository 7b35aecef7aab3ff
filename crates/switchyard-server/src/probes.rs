//! The API-health monitoring layer: scheduled probes of every Odoo connection (version,
//! authenticate, a cheap `search_count`, the API key's expiry) and every HTTP destination
//! (a HEAD request), with latency and outcome as metrics and through `/v1/probes`.
//!
//! Each target is probed by one node at a time: the node holding the `probe:<name>` lease
//! (Foundation 1's singleton lease) runs it and saves the result as the lease's state, so
//! every node serves the same latest results. A node that dies loses its leases after three
//! intervals and another node takes the probes over.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use switchyard_core::SharedClock;
use switchyard_core::config::Config;
use switchyard_core::odoo::{OdooConnectionConfig, OdooProtocol, ProbeConfig};
use switchyard_odoo::probe::{OdooProbe, ProbeStep};
use switchyard_odoo::{OdooClient, OdooConfig, Protocol};
use switchyard_store::SharedStore;
use tokio_util::sync::CancellationToken;

/// What is probed.
#[derive(Clone)]
pub enum TargetKind {
    Odoo {
        client: Arc<OdooClient>,
        /// The configured expiry, used when Odoo does not let the user read its keys.
        api_key_expires: Option<NaiveDate>,
    },
    Http {
        url: String,
    },
}

#[derive(Clone)]
pub struct Target {
    pub name: String,
    pub kind: TargetKind,
}

/// The latest probe of one target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeResult {
    pub target: String,
    /// `odoo` or `http`.
    pub kind: String,
    pub ok: bool,
    pub checked_at: DateTime<Utc>,
    /// Total time of all steps.
    pub latency_ms: f64,
    pub steps: Vec<ProbeStep>,
    /// The first failure, in words.
    pub error: Option<String>,
    /// Its class: transient, credential or permanent.
    pub class: Option<String>,
    pub server_version: Option<String>,
    pub protocol: Option<String>,
    /// HTTP status of a destination probe.
    pub status: Option<u16>,
    pub credential_expires_at: Option<DateTime<Utc>>,
    /// Set when the API key expires within `credential_warning_days` (or has expired).
    pub credential_warning: Option<String>,
    /// The node that ran the probe.
    pub node: String,
}

pub struct Prober {
    pub targets: Vec<Target>,
    pub store: SharedStore,
    pub clock: SharedClock,
    pub node_id: String,
    pub config: ProbeConfig,
    next_due: Mutex<HashMap<String, DateTime<Utc>>>,
    http: reqwest::Client,
}

fn lease_name(target: &str) -> String {
    format!("probe:{target}")
}

/// "the API key of "main" expires on 2026-12-01 (in 7 days)" when `expires` is within
/// `warning_days` of `now` (or has passed); None otherwise.
pub fn credential_warning(
    target: &str,
    expires: DateTime<Utc>,
    now: DateTime<Utc>,
    warning_days: u32,
) -> Option<String> {
    let left = expires - now;
    if left > Duration::days(warning_days.into()) {
        return None;
    }
    let day = expires.format("%Y-%m-%d");
    Some(if left <= Duration::zero() {
        format!("the API key of \"{target}\" expired on {day}")
    } else {
        format!(
            "the API key of \"{target}\" expires on {day} (in {} days)",
            left.num_days()
        )
    })
}

/// The client settings of a configured connection (the secret is read here).
pub fn client_config(c: &OdooConnectionConfig) -> Result<OdooConfig, String> {
    let secret = c
        .secret
        .expose()
        .map_err(|e| format!("odoo \"{}\": {e}", c.name))?;
    let mut cfg = OdooConfig::new(&c.url, &c.database, &c.login, &secret);
    cfg.protocol = match c.protocol {
        OdooProtocol::Auto => Protocol::Auto,
        OdooProtocol::Json2 => Protocol::Json2,
        OdooProtocol::Jsonrpc => Protocol::JsonRpc,
        OdooProtocol::Xmlrpc => Protocol::XmlRpc,
    };
    cfg.context = c.context.clone();
    cfg.timeout = std::time::Duration::from_secs(c.timeout_seconds);
    Ok(cfg)
}

/// The targets a configuration declares: every Odoo connection with `probe = true`, and
/// every HTTP destination when `[probes] destinations` is on.
pub fn targets(config: &Config) -> Result<Vec<Target>, String> {
    let mut out = Vec::new();
    for c in config.odoo.iter().filter(|c| c.probe) {
        let mut cfg = client_config(c)?;
        cfg.timeout = std::time::Duration::from_secs(config.probes.timeout_seconds);
        let client = OdooClient::new(cfg).map_err(|e| format!("odoo \"{}\": {e}", c.name))?;
        out.push(Target {
            name: c.name.clone(),
            kind: TargetKind::Odoo {
                client: Arc::new(client),
                api_key_expires: c.api_key_expires,
            },
        });
    }
    if config.probes.destinations {
        // Odoo destinations are probed through their [[odoo]] connection above; smtp
        // destinations are not probed (a HEAD means nothing to an SMTP server).
        for d in config
            .destinations
            .iter()
            .filter(|d| d.kind == switchyard_core::flows::DestinationKind::Http)
        {
            out.push(Target {
                name: d.name.clone(),
                kind: TargetKind::Http { url: d.url.clone() },
            });
        }
    }
    Ok(out)
}

impl Prober {
    pub fn new(
        targets: Vec<Target>,
        store: SharedStore,
        clock: SharedClock,
        node_id: String,
        config: ProbeConfig,
    ) -> Prober {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(config.timeout_seconds))
            .build()
            .expect("probe http client");
        Prober {
            targets,
            store,
            clock,
            node_id,
            config,
            next_due: Mutex::new(HashMap::new()),
            http,
        }
    }

    fn interval(&self) -> Duration {
        Duration::seconds(self.config.interval_seconds as i64)
    }

    fn lease_ttl(&self) -> Duration {
        (self.interval() * 3).max(Duration::seconds(30))
    }

    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        if self.targets.is_empty() {
            return;
        }
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            self.tick().await;
        }
    }

    /// Probe every target that is due and whose lease this node holds or takes. Returns
    /// the results of the probes it ran.
    pub async fn tick(&self) -> Vec<ProbeResult> {
        let now = self.clock.real_now();
        let mut ran = Vec::new();
        for t in &self.targets {
            let due = self
                .next_due
                .lock()
                .expect("probe schedule")
                .get(&t.name)
                .is_none_or(|d| *d <= now);
            if !due {
                continue;
            }
            let lease = match self
                .store
                .acquire_lease(&lease_name(&t.name), &self.node_id, now, self.lease_ttl())
                .await
            {
                Ok(Some(l)) => l,
                Ok(None) => {
                    // Another node probes this target: look again an interval later (its
                    // lease outlives three intervals, so a takeover is never early).
                    self.next_due
                        .lock()
                        .expect("probe schedule")
                        .insert(t.name.clone(), now + self.interval());
                    continue;
                }
                Err(e) => {
                    tracing::warn!(target = %t.name, error = %e, "probe lease unavailable");
                    continue;
                }
            };
            self.next_due
                .lock()
                .expect("probe schedule")
                .insert(t.name.clone(), now + self.interval());
            let result = self.probe(t).await;
            self.export(&result);
            let state = serde_json::to_value(&result).expect("probe result serialises");
            if let Err(e) = self.store.save_lease_state(&lease, state).await {
                tracing::warn!(target = %t.name, error = %e, "probe result not saved");
            }
            ran.push(result);
        }
        ran
    }

    /// The latest result of every target, whichever node ran it.
    pub async fn results(&self) -> Result<Vec<ProbeResult>, switchyard_store::Error> {
        let mut out = Vec::new();
        for t in &self.targets {
            if let Some(v) = self.store.lease_state(&lease_name(&t.name)).await?
                && let Ok(r) = serde_json::from_value::<ProbeResult>(v)
            {
                out.push(r);
            }
        }
        Ok(out)
    }

    async fn probe(&self, t: &Target) -> ProbeResult {
        let checked_at = self.clock.now();
        match &t.kind {
            TargetKind::Odoo {
                client,
                api_key_expires,
            } => {
                let found = switchyard_odoo::probe::probe(client).await;
                self.odoo_result(t, checked_at, found, *api_key_expires)
            }
            TargetKind::Http { url } => self.http_probe(t, checked_at, url).await,
        }
    }

    fn odoo_result(
        &self,
        t: &Target,
        checked_at: DateTime<Utc>,
        found: OdooProbe,
        configured_expiry: Option<NaiveDate>,
    ) -> ProbeResult {
        let first_failure = found.steps.iter().find(|s| !s.ok);
        let expires = found.api_key_expires.or_else(|| {
            configured_expiry
                .and_then(|d| d.and_hms_opt(23, 59, 59))
                .map(|d| d.and_utc())
        });
        let warning = expires.and_then(|e| {
            credential_warning(&t.name, e, checked_at, self.config.credential_warning_days)
        });
        ProbeResult {
            target: t.name.clone(),
            kind: "odoo".into(),
            ok: found.ok(),
            checked_at,
            latency_ms: found.steps.iter().map(|s| s.latency_ms).sum(),
            error: first_failure.and_then(|s| s.error.clone()),
            class: first_failure.and_then(|s| s.class.clone()),
            server_version: found.server_version.clone(),
            protocol: found.protocol.clone(),
            status: None,
            credential_expires_at: expires,
            credential_warning: warning,
            steps: found.steps,
            node: self.node_id.clone(),
        }
    }

    async fn http_probe(&self, t: &Target, checked_at: DateTime<Utc>, url: &str) -> ProbeResult {
        let started = std::time::Instant::now();
        let answer = self.http.head(url).send().await;
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        // Any answer below 500 proves the destination is reachable: without credentials a
        // 401 or 405 to HEAD is normal. Server errors and no answer are failures.
        let (ok, status, error, class) = match answer {
            Ok(r) if r.status().is_server_error() => (
                false,
                Some(r.status().as_u16()),
                Some(format!("answered {}", r.status())),
                Some("transient".to_string()),
            ),
            Ok(r) => (true, Some(r.status().as_u16()), None, None),
            Err(e) => (
                false,
                None,
                Some(if e.is_timeout() {
                    "timed out".to_string()
                } else {
                    "unreachable (connection failed)".to_string()
                }),
                Some("transient".to_string()),
            ),
        };
        ProbeResult {
            target: t.name.clone(),
            kind: "http".into(),
            ok,
            checked_at,
            latency_ms,
            steps: vec![ProbeStep {
                step: "head".into(),
                ok,
                latency_ms,
                error: error.clone(),
                class: class.clone(),
            }],
            error,
            class,
            server_version: None,
            protocol: None,
            status,
            credential_expires_at: None,
            credential_warning: None,
            node: self.node_id.clone(),
        }
    }

    fn export(&self, r: &ProbeResult) {
        let target = r.target.clone();
        metrics::gauge!("switchyard_probe_up", "target" => target.clone(), "kind" => r.kind.clone())
            .set(if r.ok { 1.0 } else { 0.0 });
        for s in &r.steps {
            metrics::histogram!("switchyard_probe_duration_seconds", "target" => target.clone(), "step" => s.step.clone())
                .record(s.latency_ms / 1000.0);
        }
        if let Some(class) = &r.class {
            metrics::counter!("switchyard_probe_failures_total", "target" => target.clone(), "class" => class.clone())
                .increment(1);
            tracing::warn!(target = %r.target, class, error = r.error.as_deref().unwrap_or(""), "probe failed");
        }
        if let Some(e) = r.credential_expires_at {
            let days = (e - r.checked_at).num_seconds() as f64 / 86_400.0;
            metrics::gauge!("switchyard_probe_credential_expiry_days", "target" => target.clone())
                .set(days);
        }
        if let Some(w) = &r.credential_warning {
            tracing::warn!(target = %r.target, "{w}");
        }
    }
}
