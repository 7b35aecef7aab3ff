//! Retention and storage use, per source.
//!
//! [`Retention`] is a singleton (one node at a time, through the `retention` lease): every
//! few seconds it drops payloads older than each source's `payload_days` and forgets slim
//! rows older than `dedupe_days`, in small batches so the writer is never held long, and
//! stops as soon as its lease is taken over.
//!
//! [`Usage`] runs on every node: it measures what each source occupies, exports it as
//! metrics, and feeds the per-source quota that ingest enforces (429 for that source only).

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use switchyard_core::SharedClock;
use switchyard_core::sources::{HealthStatus, SourceKind, SourcePattern};
use switchyard_core::sources::{RetentionRule, Sources};
use switchyard_store::{Error, Lease, SharedStore, SourceScope};
use tokio_util::sync::CancellationToken;

/// Rows per purge statement.
const BATCH: usize = 500;
const LEASE: &str = "retention";

/// Stored bytes per source label and each declared source's report, as last measured.
#[derive(Debug, Default)]
pub struct UsageMap {
    bytes: RwLock<HashMap<String, u64>>,
    reports: RwLock<Vec<SourceReport>>,
}

impl UsageMap {
    pub fn bytes(&self, label: &str) -> u64 {
        self.bytes
            .read()
            .expect("usage map")
            .get(label)
            .copied()
            .unwrap_or(0)
    }

    pub fn set(&self, m: HashMap<String, u64>) {
        *self.bytes.write().expect("usage map") = m;
    }

    pub fn reports(&self) -> Vec<SourceReport> {
        self.reports.read().expect("usage map").clone()
    }
}

/// Minutes of recent activity that rate and lag are measured over (business time).
pub const WINDOW_MINUTES: i64 = 15;

/// One source in the message-flow layer: what it stores, what it sent lately, its health.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceReport {
    pub name: String,
    pub kind: Option<SourceKind>,
    /// The CloudEvents `source` it covers (a trailing `*` is a prefix).
    pub source: String,
    pub keys: Vec<String>,
    pub payload_days: u32,
    pub dedupe_days: u32,
    pub quota_bytes: Option<u64>,
    pub stored_events: u64,
    pub stored_bytes: u64,
    pub payloads_purged: u64,
    pub last_received_at: Option<DateTime<Utc>>,
    pub window_minutes: i64,
    pub recent_events: u64,
    pub events_per_minute: f64,
    pub avg_lag_seconds: Option<f64>,
    pub max_lag_seconds: Option<f64>,
    pub health: HealthStatus,
}

fn scope(rule: &RetentionRule) -> SourceScope {
    SourceScope {
        exact: rule.exact.clone(),
        prefixes: rule.prefixes.clone(),
        invert: rule.invert,
    }
}

pub struct Retention {
    pub store: SharedStore,
    pub clock: SharedClock,
    pub sources: Arc<Sources>,
    pub node_id: String,
    pub every: std::time::Duration,
}

impl Retention {
    pub async fn run(self, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(self.every);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(e) = self.pass(&cancel).await {
                tracing::warn!(error = %e, "retention pass stopped");
            }
        }
    }

    fn lease_ttl(&self) -> Duration {
        Duration::from_std(self.every * 3).unwrap_or(Duration::minutes(3))
    }

    /// One pass over every rule, if this node holds (or takes) the lease. Returns what it
    /// purged: (payloads dropped, rows forgotten).
    pub async fn pass(&self, cancel: &CancellationToken) -> Result<(u64, u64), Error> {
        let now = self.clock.real_now();
        let Some(mut lease) = self
            .store
            .acquire_lease(LEASE, &self.node_id, now, self.lease_ttl())
            .await?
        else {
            return Ok((0, 0)); // another node runs retention
        };
        let business_now = self.clock.now();
        let (mut dropped, mut forgotten) = (0, 0);
        for rule in self.sources.retention_rules() {
            let scope = scope(&rule);
            let payload_cut = business_now - Duration::days(rule.retention.payload_days.into());
            let dedupe_cut = business_now - Duration::days(rule.retention.dedupe_days.into());
            loop {
                if cancel.is_cancelled() {
                    return Ok((dropped, forgotten));
                }
                let n = self
                    .store
                    .purge_payloads(payload_cut, &scope, BATCH)
                    .await?;
                dropped += n;
                metrics::counter!("switchyard_retention_payloads_purged_total", "source" => rule.label.clone())
                    .increment(n);
                lease = self.renew(&lease).await?;
                if n < BATCH as u64 {
                    break;
                }
            }
            loop {
                if cancel.is_cancelled() {
                    return Ok((dropped, forgotten));
                }
                let n = self.store.purge_events(dedupe_cut, &scope, BATCH).await?;
                forgotten += n;
                metrics::counter!("switchyard_retention_events_forgotten_total", "source" => rule.label.clone())
                    .increment(n);
                lease = self.renew(&lease).await?;
                if n < BATCH as u64 {
                    break;
                }
            }
        }
        if dropped + forgotten > 0 {
            tracing::info!(payloads = dropped, rows = forgotten, "retention purged");
        }
        Ok((dropped, forgotten))
    }

    /// Renews between batches; a takeover (`Fenced`) ends the pass.
    async fn renew(&self, lease: &Lease) -> Result<Lease, Error> {
        self.store
            .renew_lease(lease, self.clock.real_now(), self.lease_ttl())
            .await
    }
}

pub struct Usage {
    pub store: SharedStore,
    pub clock: SharedClock,
    pub sources: Arc<Sources>,
    pub map: Arc<UsageMap>,
    pub every: std::time::Duration,
}

#[derive(Default)]
struct Tally {
    events: u64,
    bytes: u64,
    purged: u64,
    last: Option<DateTime<Utc>>,
    recent: u64,
    lag_sum_ms: f64,
    lag_n: u64,
    lag_max_ms: Option<i64>,
}

impl Usage {
    /// Measures every source, updates the quota map, the metrics and the reports, and logs
    /// a source that turns silent or lagging (the "upstream backlog" finding).
    pub async fn measure(&self) -> Result<(), Error> {
        let now = self.clock.now();
        let mut tally: HashMap<String, Tally> = HashMap::new();
        for u in self.store.usage_by_source().await? {
            let t = tally.entry(self.sources.label_for(&u.source)).or_default();
            t.events += u.events.max(0) as u64;
            t.bytes += u.bytes.max(0) as u64;
            t.purged += u.payloads_purged.max(0) as u64;
            t.last = t.last.max(u.last_received_at);
        }
        for a in self
            .store
            .source_activity(now - Duration::minutes(WINDOW_MINUTES))
            .await?
        {
            let t = tally.entry(self.sources.label_for(&a.source)).or_default();
            t.recent += a.events.max(0) as u64;
            if let Some(avg) = a.avg_lag_ms {
                // weight each CloudEvents source's mean by its events
                t.lag_sum_ms += avg * a.events as f64;
                t.lag_n += a.events.max(0) as u64;
            }
            t.lag_max_ms = t.lag_max_ms.max(a.max_lag_ms);
        }
        let previous = self.map.reports();
        let mut reports = Vec::new();
        let mut labels: Vec<(String, Option<&switchyard_core::sources::Source>)> = self
            .sources
            .all()
            .iter()
            .map(|s| (s.name.clone(), Some(s)))
            .collect();
        labels.push(("undeclared".into(), None));
        for (label, source) in labels {
            let t = tally.remove(&label).unwrap_or_default();
            let avg_lag_ms = (t.lag_n > 0).then(|| t.lag_sum_ms / t.lag_n as f64);
            let health = match source {
                Some(s) => s.health.evaluate(now, t.last, avg_lag_ms),
                None => HealthStatus::Ok,
            };
            let (kind, pattern, keys, retention) = match source {
                Some(s) => (
                    Some(s.kind),
                    match &s.pattern {
                        SourcePattern::Exact(e) => e.clone(),
                        SourcePattern::Prefix(p) => format!("{p}*"),
                    },
                    s.keys.iter().map(|(k, _)| k.clone()).collect(),
                    s.retention,
                ),
                None => (None, "*".into(), Vec::new(), self.sources.default_retention),
            };
            let l = label.clone();
            metrics::gauge!("switchyard_source_stored_bytes", "source" => l.clone())
                .set(t.bytes as f64);
            metrics::gauge!("switchyard_source_stored_events", "source" => l.clone())
                .set(t.events as f64);
            metrics::gauge!("switchyard_source_events_per_minute", "source" => l.clone())
                .set(t.recent as f64 / WINDOW_MINUTES as f64);
            if let Some(last) = t.last {
                metrics::gauge!("switchyard_source_last_event_age_seconds", "source" => l.clone())
                    .set((now - last).num_milliseconds().max(0) as f64 / 1000.0);
            }
            if let Some(avg) = avg_lag_ms {
                metrics::gauge!("switchyard_source_lag_seconds", "source" => l.clone())
                    .set(avg / 1000.0);
            }
            let silent = matches!(health, HealthStatus::Silent { .. });
            let lagging = matches!(health, HealthStatus::Lagging { .. });
            metrics::gauge!("switchyard_source_silent", "source" => l.clone())
                .set(f64::from(u8::from(silent)));
            metrics::gauge!("switchyard_source_lagging", "source" => l.clone())
                .set(f64::from(u8::from(lagging)));
            let was = previous.iter().find(|r| r.name == label).map(|r| &r.health);
            // log changes of state only, not every measurement of a lasting one
            let variant = |h: &HealthStatus| std::mem::discriminant(h);
            let changed = was.is_none_or(|w| variant(w) != variant(&health));
            match (&health, was) {
                (HealthStatus::Ok, Some(w)) if changed && *w != HealthStatus::Ok => {
                    tracing::info!(source = %label, "source healthy again");
                }
                (HealthStatus::Ok, _) => {}
                (h, _) if changed => {
                    tracing::warn!(source = %label, health = ?h, "source health changed")
                }
                _ => {}
            }
            reports.push(SourceReport {
                name: label,
                kind,
                source: pattern,
                keys,
                payload_days: retention.payload_days,
                dedupe_days: retention.dedupe_days,
                quota_bytes: retention.quota_bytes,
                stored_events: t.events,
                stored_bytes: t.bytes,
                payloads_purged: t.purged,
                last_received_at: t.last,
                window_minutes: WINDOW_MINUTES,
                recent_events: t.recent,
                events_per_minute: t.recent as f64 / WINDOW_MINUTES as f64,
                avg_lag_seconds: avg_lag_ms.map(|m| m / 1000.0),
                max_lag_seconds: t.lag_max_ms.map(|m| m as f64 / 1000.0),
                health,
            });
        }
        let bytes = reports
            .iter()
            .map(|r| (r.name.clone(), r.stored_bytes))
            .collect();
        self.map.set(bytes);
        *self.map.reports.write().expect("usage map") = reports;
        Ok(())
    }

    pub async fn run(self, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(self.every);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(e) = self.measure().await {
                tracing::warn!(error = %e, "cannot measure sources");
            }
        }
    }
}
