//! Change capture from Odoo: the poller of every `kind = "odoo"` source, and the webhook
//! hints that make it fast.
//!
//! **The poller** reads the model in `write_date asc, id asc` order with a keyset cursor on
//! `(write_date, id)`. Odoo stamps `write_date` with the *start* of the writing transaction
//! and returns it cut to whole seconds (testdata/odoo/README.md, group 04), so:
//! - every poll reads again from the newest `write_date` seen minus `overlap_seconds`: a long
//!   transaction commits rows older than rows already read (04_09-04_12), and two commits in
//!   one second share a timestamp;
//! - paging never uses `write_date = X` (it never matches) nor "same second, greater id"
//!   across seconds (ids and microseconds disagree within a second): a full page ends at its
//!   last whole second, and that second is then read by id alone;
//! - a change is `(model, id, write_date, hash of the fields read)`, and that tuple is the
//!   CloudEvent `id`, so the store's once-per-(source, id) keeps re-read rows from becoming
//!   second events, durably and across restarts and nodes.
//!
//! Each page's changes go through the normal ingest path (business keys, flows, one
//! transaction); the cursor, kept as the state of the singleton lease `poll:<source>`, moves
//! only after they committed. The poll is anchored on that cursor, never on "now", so after
//! any outage the whole gap is read (in pages, with progress) before the poll ends.
//!
//! **Webhook hints**: Odoo's "Send Webhook Notification" is sent before its transaction
//! commits, also for rolled-back transactions and once per serialization retry. A hint is
//! therefore only a reason to read the record back: the answer to Odoo is immediate (Odoo
//! waits for it inside its transaction), the read-back retries until the committed record
//! shows the hinted change (or `hint_wait_seconds` pass: then nothing is emitted), and the
//! committed state becomes the same event the poller would make — one event per change,
//! whoever sees it first. Hints are not stored: a lost hint is the poller's to find.
//!
//! This module must never advance a cursor before the events it covers are committed, nor
//! emit a state it did not read back from Odoo.

use crate::AppState;
use crate::error::{ApiError, Problem};
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use switchyard_core::cloudevent::{CloudEvent, Data, RawAttributes};
use switchyard_core::config::Config;
use switchyard_core::odoo_capture::{Initial, OdooCapture};
use switchyard_core::sources::{Source, SourcePattern, Sources};
use switchyard_odoo::{CallOptions, OdooClient, OdooError, SearchRead};
use switchyard_store::{Appended, Lease};
use tokio_util::sync::CancellationToken;

/// Odoo's wire format of `write_date` (UTC, whole seconds).
const WD_FORMAT: &str = "%Y-%m-%d %H:%M:%S";
/// Hints whose read-back may run at once; more are dropped (the poller finds them).
const HINT_SLOTS: usize = 256;
/// Event ids remembered per source to spare the store re-reads of the overlap window.
const RECENT_MAX: usize = 200_000;

pub fn lease_name(source: &str) -> String {
    format!("poll:{source}")
}

/// The poller's checkpoint, saved as the state of its lease after every committed page.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CursorState {
    /// The newest `write_date` (Odoo's, whole seconds) of a row whose change is committed.
    /// The next poll reads from here minus the overlap.
    pub high_water: Option<String>,
    /// `initial = "now"`: rows written at or before this were there before capture began
    /// (the newest `write_date` at the first run); they are never emitted.
    pub floor: Option<String>,
    /// Set while an initial sync or the resync of a gap runs.
    pub sync: Option<SyncProgress>,
    /// Business time at which the last complete poll began: every change committed in Odoo
    /// before it (and within the overlap of the cursor) has its event.
    pub last_poll_at: Option<DateTime<Utc>>,
    /// Changes stored and pages read, since the source was first polled.
    pub events: u64,
    pub pages: u64,
    /// The node that saved this.
    pub node: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncProgress {
    /// `initial` (the first run) or `gap` (the last poll was longer ago than the overlap).
    pub reason: String,
    /// Where it reads from (`None`: the beginning).
    pub from: Option<String>,
    /// Records to read (counted when it began) and read so far.
    pub total: u64,
    pub done: u64,
    pub started_at: DateTime<Utc>,
}

/// What one poll did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PollReport {
    /// False when another node holds the source's lease.
    pub ran: bool,
    pub rows: u64,
    pub stored: u64,
    pub duplicates: u64,
    pub pages: u64,
    /// `initial` or `gap` when this poll was a (re)sync.
    pub sync: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("{0}")]
    Odoo(#[from] OdooError),
    #[error("store: {0}")]
    Store(#[from] switchyard_store::Error),
    #[error("the changes could not be stored: {0}")]
    Ingest(String),
    #[error("no odoo source named \"{0}\"")]
    Unknown(String),
    #[error("Odoo returned a row without a readable id or write_date: {0}")]
    Undecodable(String),
}

impl CaptureError {
    fn class(&self) -> &'static str {
        match self {
            CaptureError::Odoo(e) => match e.class() {
                switchyard_core::delivery::ErrorClass::Transient => "transient",
                switchyard_core::delivery::ErrorClass::Credential => "credential",
                _ => "permanent",
            },
            CaptureError::Store(_) | CaptureError::Ingest(_) => "store",
            CaptureError::Unknown(_) | CaptureError::Undecodable(_) => "permanent",
        }
    }
}

/// Who stored a change first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SeenBy {
    Poller,
    Webhook,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    write_date: NaiveDateTime,
    first: SeenBy,
    hinted: bool,
}

/// One odoo source at run time.
struct Captured {
    name: String,
    source_uri: String,
    spec: OdooCapture,
    client: Arc<OdooClient>,
    fields: Vec<String>,
    /// Changes committed lately (event id → when), so a poll does not hand every row of
    /// the overlap window to the store again. A cache: the store decides.
    recent: Mutex<HashMap<String, Seen>>,
    next_due: Mutex<Option<DateTime<Utc>>>,
    /// Records whose hint is being confirmed → the latest hint's payload.
    hints: Mutex<HashMap<i64, Map<String, Value>>>,
    poller_first: AtomicU64,
    webhook_first: AtomicU64,
    /// Changes the poller stored first and a hint confirmed later.
    hinted_after_poller: AtomicU64,
}

/// Every odoo source's poller and hint receiver.
pub struct Capture {
    sources: Vec<Arc<Captured>>,
    node_id: String,
    hint_slots: Arc<tokio::sync::Semaphore>,
}

impl Default for Capture {
    fn default() -> Self {
        Capture {
            sources: Vec::new(),
            node_id: String::new(),
            hint_slots: Arc::new(tokio::sync::Semaphore::new(HINT_SLOTS)),
        }
    }
}

/// What became of a hint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HintOutcome {
    /// Its record is being read back.
    Accepted,
    /// A read-back of the same record is running; it now waits for this hint's change.
    Merged,
    /// Too many read-backs run; the poller will find the change.
    Dropped,
}

impl HintOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            HintOutcome::Accepted => "accepted",
            HintOutcome::Merged => "merged",
            HintOutcome::Dropped => "dropped",
        }
    }
}

fn parse_wd(v: &Value) -> Option<NaiveDateTime> {
    let s = v.as_str()?;
    NaiveDateTime::parse_from_str(s.get(..19)?, WD_FORMAT).ok()
}

fn fmt_wd(t: NaiveDateTime) -> String {
    t.format(WD_FORMAT).to_string()
}

/// JSON with object keys sorted at every level, so a hash does not depend on the order
/// Odoo (or a map type) lists the fields in.
fn canonical(v: &Value) -> String {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let b: BTreeMap<&String, Value> = m.iter().map(|(k, v)| (k, sorted(v))).collect();
                serde_json::to_value(b).unwrap_or(Value::Null)
            }
            Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    sorted(v).to_string()
}

/// The change a row read from Odoo is: its CloudEvent (id = model, record id, write_date
/// and the hash of the other fields read) and its `write_date`.
fn change_event(
    model: &str,
    source_uri: &str,
    row: &Map<String, Value>,
) -> Option<(CloudEvent, NaiveDateTime)> {
    let id = row.get("id")?.as_i64()?;
    let wd = parse_wd(row.get("write_date")?)?;
    let mut rest = row.clone();
    rest.remove("id");
    rest.remove("write_date");
    let digest = hex::encode(Sha256::digest(canonical(&Value::Object(rest)).as_bytes()));
    let stamp = wd.format("%Y-%m-%dT%H:%M:%SZ");
    let mut attrs = BTreeMap::new();
    attrs.insert("specversion".to_string(), json!("1.0"));
    attrs.insert(
        "id".into(),
        json!(format!("{model}/{id}/{stamp}/{}", &digest[..16])),
    );
    attrs.insert("type".into(), json!(format!("odoo.{model}.changed")));
    attrs.insert("source".into(), json!(source_uri));
    attrs.insert("subject".into(), json!(id.to_string()));
    attrs.insert("time".into(), json!(stamp.to_string()));
    attrs.insert("datacontenttype".into(), json!("application/json"));
    let parsed = CloudEvent::from_parts(
        RawAttributes { attrs },
        Some(Data::Json(Value::Object(row.clone()))),
    )
    .ok()?;
    Some((parsed.event, wd))
}

/// Whether the committed `row` shows the change `hint` announced: a newer `write_date`, or
/// the same second with every hinted value that was read.
fn shows_hint(hint: &Map<String, Value>, row: Option<&Map<String, Value>>) -> bool {
    let Some(row) = row else {
        return false; // not committed yet, rolled back, or outside the domain
    };
    let Some(read) = row.get("write_date").and_then(parse_wd) else {
        return false;
    };
    if let Some(hinted) = hint.get("write_date").and_then(parse_wd) {
        if read > hinted {
            return true;
        }
        if read < hinted {
            return false;
        }
    }
    hint.iter()
        .filter(|(k, _)| !k.starts_with('_') && *k != "id" && *k != "write_date")
        .filter_map(|(k, v)| row.get(k).map(|r| (v, r)))
        .all(|(h, r)| same_value(h, r))
}

/// A webhook value (read with `load=None`) against a `search_read` value.
fn same_value(hint: &Value, read: &Value) -> bool {
    match (hint, read) {
        // many2one: a bare id against [id, "name"]
        (Value::Number(h), Value::Array(r)) if r.len() == 2 => r[0].as_i64() == h.as_i64(),
        (Value::Number(h), Value::Number(r)) => match (h.as_f64(), r.as_f64()) {
            (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * a.abs().max(1.0),
            _ => h == r,
        },
        // datetimes: microseconds in the webhook, whole seconds in reads
        (Value::String(h), Value::String(r)) if h.len() > 19 && h.get(..19) == r.get(..19) => {
            r.len() == 19
        }
        _ => hint == read,
    }
}

impl Captured {
    fn options(&self) -> CallOptions {
        CallOptions {
            context: self.spec.context.clone(),
            traceparent: None,
        }
    }

    fn domain(&self, extra: impl IntoIterator<Item = Value>) -> Vec<Value> {
        let mut d = self.spec.domain.as_array().cloned().unwrap_or_default();
        d.extend(extra);
        d
    }

    async fn read(
        &self,
        domain: Vec<Value>,
        fields: &[String],
        order: &str,
        limit: u32,
    ) -> Result<Vec<Map<String, Value>>, OdooError> {
        let fields: Vec<&str> = fields.iter().map(String::as_str).collect();
        self.client
            .search_read(
                &self.spec.model,
                &SearchRead {
                    domain: Value::Array(domain),
                    fields: &fields,
                    offset: None,
                    limit: Some(limit.into()),
                    order: Some(order),
                },
                &self.options(),
            )
            .await
    }

    async fn count(&self, domain: Vec<Value>) -> Result<u64, OdooError> {
        let n = self
            .client
            .search_count(&self.spec.model, Value::Array(domain), &self.options())
            .await?;
        Ok(n.max(0) as u64)
    }

    fn lease_ttl(&self) -> Duration {
        Duration::seconds((self.spec.interval_seconds as i64 * 3).max(60))
    }

    fn overlap(&self) -> Duration {
        Duration::seconds(self.spec.overlap_seconds as i64)
    }

    fn export_share(&self) {
        if self.spec.hints.is_none() {
            return;
        }
        let poller = self.poller_first.load(Ordering::Relaxed);
        let webhook = self.webhook_first.load(Ordering::Relaxed);
        let late = self.hinted_after_poller.load(Ordering::Relaxed);
        let total = poller + webhook;
        if total > 0 {
            metrics::gauge!("switchyard_odoo_capture_poller_only_ratio", "source" => self.name.clone(), "model" => self.spec.model.clone())
                .set(poller.saturating_sub(late) as f64 / total as f64);
        }
    }

    /// Records a committed change; counts who saw it first (the hybrid metric).
    fn remember(&self, event_id: &str, wd: NaiveDateTime, by: SeenBy, stored: bool, count: bool) {
        let mut recent = self.recent.lock().expect("recent changes");
        if recent.len() >= RECENT_MAX {
            recent.clear();
        }
        match recent.get_mut(event_id) {
            Some(seen) => {
                if by == SeenBy::Webhook && seen.first == SeenBy::Poller && !seen.hinted {
                    seen.hinted = true;
                    self.hinted_after_poller.fetch_add(1, Ordering::Relaxed);
                }
            }
            None => {
                recent.insert(
                    event_id.to_string(),
                    Seen {
                        write_date: wd,
                        first: by,
                        hinted: by == SeenBy::Webhook,
                    },
                );
                if stored && count {
                    match by {
                        SeenBy::Poller => self.poller_first.fetch_add(1, Ordering::Relaxed),
                        SeenBy::Webhook => self.webhook_first.fetch_add(1, Ordering::Relaxed),
                    };
                }
            }
        }
        drop(recent);
        if stored {
            let by = match by {
                SeenBy::Poller => "poller",
                SeenBy::Webhook => "webhook",
            };
            metrics::counter!("switchyard_odoo_capture_changes_total", "source" => self.name.clone(), "seen_by" => by)
                .increment(1);
        }
        self.export_share();
    }

    fn is_recent(&self, event_id: &str) -> bool {
        self.recent
            .lock()
            .expect("recent changes")
            .contains_key(event_id)
    }

    fn forget_before(&self, cut: NaiveDateTime) {
        self.recent
            .lock()
            .expect("recent changes")
            .retain(|_, s| s.write_date >= cut);
    }
}

/// A page's progress through [`Capture::store_page`].
struct Scan<'a> {
    state: &'a AppState,
    source: &'a Source,
    captured: &'a Captured,
    lease: Lease,
    cursor: CursorState,
    report: PollReport,
    floor: Option<NaiveDateTime>,
}

impl Scan<'_> {
    /// Stores the changes of `rows` in one transaction, then moves the cursor over them
    /// and saves it under the lease (a takeover by another node ends the poll here).
    async fn store_page(&mut self, rows: &[Map<String, Value>]) -> Result<(), CaptureError> {
        if rows.is_empty() {
            return Ok(());
        }
        let c = self.captured;
        let mut events = Vec::new();
        let mut newest = None;
        for row in rows {
            self.report.rows += 1;
            let Some((event, wd)) = change_event(&c.spec.model, &c.source_uri, row) else {
                return Err(CaptureError::Undecodable(
                    Value::Object(row.clone()).to_string(),
                ));
            };
            newest = newest.max(Some(wd));
            if self.floor.is_some_and(|f| wd <= f) {
                continue;
            }
            if c.is_recent(&event.id) {
                self.report.duplicates += 1;
                continue;
            }
            events.push((event, wd));
        }
        if !events.is_empty() {
            let outcomes = crate::ingest::store_source_events(
                self.state,
                self.source,
                events.iter().map(|(e, _)| e.clone()).collect(),
            )
            .await
            .map_err(|e| CaptureError::Ingest(e.detail))?;
            let count = self.cursor.sync.is_none();
            for ((event, wd), outcome) in events.iter().zip(outcomes) {
                let stored = matches!(outcome, Appended::Stored { .. });
                if stored {
                    self.report.stored += 1;
                    self.cursor.events += 1;
                    tracing::debug!(event_id = %event.id, source = %c.name, "odoo change stored");
                } else {
                    self.report.duplicates += 1;
                }
                c.remember(&event.id, *wd, SeenBy::Poller, stored, count);
            }
        }
        // Only now, with the changes committed, does the cursor pass them.
        let high = self
            .cursor
            .high_water
            .as_deref()
            .map(|s| parse_wd(&json!(s)));
        if let Some(newest) = newest
            && high.flatten().is_none_or(|h| newest > h)
        {
            self.cursor.high_water = Some(fmt_wd(newest));
        }
        if let Some(sync) = &mut self.cursor.sync {
            sync.done += rows.len() as u64;
            metrics::gauge!("switchyard_odoo_capture_sync_remaining", "source" => c.name.clone())
                .set(sync.total.saturating_sub(sync.done) as f64);
        }
        self.save().await
    }

    async fn save(&mut self) -> Result<(), CaptureError> {
        let store = &self.state.store;
        self.lease = store
            .renew_lease(
                &self.lease,
                self.state.clock.real_now(),
                self.captured.lease_ttl(),
            )
            .await?;
        let value = serde_json::to_value(&self.cursor).unwrap_or(Value::Null);
        store.save_lease_state(&self.lease, value).await?;
        Ok(())
    }

    /// One page read from Odoo.
    async fn page(
        &mut self,
        domain: Vec<Value>,
        order: &str,
    ) -> Result<Vec<Map<String, Value>>, CaptureError> {
        let c = self.captured;
        let rows = c.read(domain, &c.fields, order, c.spec.page_size).await?;
        self.report.pages += 1;
        self.cursor.pages += 1;
        metrics::counter!("switchyard_odoo_capture_pages_total", "source" => c.name.clone())
            .increment(1);
        Ok(rows)
    }

    /// Reads every row with `write_date >= from` (all rows when `None`), in pages.
    async fn scan(&mut self, mut from: Option<NaiveDateTime>) -> Result<(), CaptureError> {
        let c = self.captured;
        let page_size = c.spec.page_size as usize;
        loop {
            let domain = c.domain(from.map(|f| json!(["write_date", ">=", fmt_wd(f)])));
            let rows = self.page(domain, "write_date asc, id asc").await?;
            if rows.len() < page_size {
                return self.store_page(&rows).await;
            }
            // A full page: its last second may go on beyond it. Rows of earlier seconds are
            // complete; that second is read whole, by id, before moving past it.
            let last = rows
                .last()
                .and_then(|r| r.get("write_date"))
                .and_then(parse_wd)
                .ok_or_else(|| {
                    CaptureError::Undecodable("a page ending without write_date".into())
                })?;
            let before: Vec<_> = rows
                .into_iter()
                .filter(|r| {
                    r.get("write_date")
                        .and_then(parse_wd)
                        .is_some_and(|w| w < last)
                })
                .collect();
            self.store_page(&before).await?;
            let next = last + Duration::seconds(1);
            let mut after_id = 0i64;
            loop {
                let domain = c.domain([
                    json!(["write_date", ">=", fmt_wd(last)]),
                    json!(["write_date", "<", fmt_wd(next)]),
                    json!(["id", ">", after_id]),
                ]);
                let rows = self.page(domain, "id asc").await?;
                self.store_page(&rows).await?;
                match rows
                    .last()
                    .and_then(|r| r.get("id"))
                    .and_then(Value::as_i64)
                {
                    Some(id) if rows.len() == page_size => after_id = id,
                    _ => break,
                }
            }
            from = Some(next);
        }
    }
}

impl Capture {
    /// The odoo sources of a configuration, each with its own client (the connection's
    /// settings; the source's context goes with each read).
    pub fn from_config(
        config: &Config,
        sources: &Sources,
        node_id: &str,
    ) -> Result<Capture, String> {
        let mut out = Vec::new();
        for s in sources.all() {
            let Some(spec) = &s.odoo else { continue };
            let conn = config
                .odoo
                .iter()
                .find(|c| c.name == spec.connection)
                .ok_or_else(|| {
                    format!("source \"{}\": no [[odoo]] \"{}\"", s.name, spec.connection)
                })?;
            let cfg = crate::probes::client_config(conn)?;
            let client =
                OdooClient::new(cfg).map_err(|e| format!("odoo \"{}\": {e}", conn.name))?;
            let source_uri = match &s.pattern {
                SourcePattern::Exact(u) | SourcePattern::Prefix(u) => u.clone(),
            };
            out.push(Arc::new(Captured {
                name: s.name.clone(),
                source_uri,
                fields: spec.read_fields(),
                spec: spec.clone(),
                client: Arc::new(client),
                recent: Mutex::default(),
                next_due: Mutex::default(),
                hints: Mutex::default(),
                poller_first: AtomicU64::new(0),
                webhook_first: AtomicU64::new(0),
                hinted_after_poller: AtomicU64::new(0),
            }));
        }
        Ok(Capture {
            sources: out,
            node_id: node_id.to_string(),
            ..Capture::default()
        })
    }

    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    fn get(&self, name: &str) -> Option<&Arc<Captured>> {
        self.sources.iter().find(|c| c.name == name)
    }

    /// Polls every source when it is due, as long as `cancel` has not fired.
    pub async fn run(self: Arc<Self>, state: AppState, cancel: CancellationToken) {
        if self.sources.is_empty() {
            return;
        }
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            // Dropping a poll between two awaits is safe: the cursor is saved only after a
            // page's events committed, and a page read again is deduplicated.
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = self.tick(&state) => {}
            }
        }
    }

    /// Polls each source that is due (and whose lease this node holds or takes).
    pub async fn tick(&self, state: &AppState) -> Vec<(String, Result<PollReport, CaptureError>)> {
        let mut out = Vec::new();
        for c in &self.sources {
            let now = state.clock.real_now();
            {
                let mut due = c.next_due.lock().expect("poll schedule");
                if due.is_some_and(|d| d > now) {
                    continue;
                }
                *due = Some(now + Duration::seconds(c.spec.interval_seconds as i64));
            }
            let r = self.poll_source(state, c).await;
            out.push((c.name.clone(), r));
        }
        out
    }

    /// Polls one source now, whatever its schedule.
    pub async fn poll(&self, state: &AppState, name: &str) -> Result<PollReport, CaptureError> {
        let c = self
            .get(name)
            .ok_or_else(|| CaptureError::Unknown(name.to_string()))?;
        self.poll_source(state, c).await
    }

    /// The saved cursor of a source, whichever node polls it.
    pub async fn cursor(
        &self,
        state: &AppState,
        name: &str,
    ) -> Result<Option<CursorState>, CaptureError> {
        Ok(state
            .store
            .lease_state(&lease_name(name))
            .await?
            .and_then(|v| serde_json::from_value(v).ok()))
    }

    async fn poll_source(
        &self,
        state: &AppState,
        c: &Captured,
    ) -> Result<PollReport, CaptureError> {
        let r = self.poll_inner(state, c).await;
        match &r {
            Ok(report) if report.ran => {
                metrics::counter!("switchyard_odoo_capture_rows_total", "source" => c.name.clone())
                    .increment(report.rows);
            }
            Ok(_) => {}
            Err(e) => {
                metrics::counter!("switchyard_odoo_capture_errors_total", "source" => c.name.clone(), "class" => e.class())
                    .increment(1);
                tracing::warn!(source = %c.name, model = %c.spec.model, error = %e, "odoo poll failed; the cursor stays where it was");
            }
        }
        r
    }

    async fn poll_inner(&self, state: &AppState, c: &Captured) -> Result<PollReport, CaptureError> {
        let Some(lease) = state
            .store
            .acquire_lease(
                &lease_name(&c.name),
                &self.node_id,
                state.clock.real_now(),
                c.lease_ttl(),
            )
            .await?
        else {
            return Ok(PollReport::default()); // another node polls this source
        };
        let source = state
            .sources
            .odoo(&c.name)
            .ok_or_else(|| CaptureError::Unknown(c.name.clone()))?;
        let mut cursor: CursorState = state
            .store
            .lease_state(&lease_name(&c.name))
            .await?
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default();
        cursor.node = self.node_id.clone();
        let started = state.clock.now();
        let high = cursor
            .high_water
            .as_deref()
            .and_then(|s| parse_wd(&json!(s)));
        let first_run = high.is_none() && cursor.floor.is_none() && cursor.sync.is_none();
        let mut from = high.map(|h| h - c.overlap());
        if first_run {
            match c.spec.initial {
                Initial::Sync => {
                    let total = c.count(c.domain([])).await?;
                    tracing::info!(source = %c.name, model = %c.spec.model, records = total, "initial sync of an odoo model begins");
                    cursor.sync = Some(SyncProgress {
                        reason: "initial".into(),
                        from: None,
                        total,
                        done: 0,
                        started_at: started,
                    });
                }
                Initial::Now => {
                    let newest = c
                        .read(
                            c.domain([]),
                            &["write_date".to_string()],
                            "write_date desc, id desc",
                            1,
                        )
                        .await?
                        .first()
                        .and_then(|r| r.get("write_date"))
                        .and_then(parse_wd);
                    // An empty model: everything that appears from now on is a change.
                    let floor = newest.unwrap_or(NaiveDateTime::MIN);
                    cursor.floor = Some(fmt_wd(floor));
                    cursor.high_water = newest.map(fmt_wd);
                    from = newest.map(|n| n - c.overlap());
                    tracing::info!(source = %c.name, model = %c.spec.model, from = %fmt_wd(floor), "odoo capture starts from now");
                }
            }
        } else if cursor.sync.is_none()
            && let (Some(last), Some(f)) = (cursor.last_poll_at, from)
            && started - last > c.overlap()
        {
            // An outage longer than the overlap: the poll reads the whole gap (it always
            // starts at the cursor), announced and with progress.
            let total = c
                .count(c.domain([json!(["write_date", ">=", fmt_wd(f)])]))
                .await?;
            tracing::warn!(source = %c.name, model = %c.spec.model, since = %fmt_wd(f), records = total, last_poll = %last, "the last poll is older than the overlap window; resyncing the gap");
            cursor.sync = Some(SyncProgress {
                reason: "gap".into(),
                from: Some(fmt_wd(f)),
                total,
                done: 0,
                started_at: started,
            });
        }
        let floor = cursor
            .floor
            .as_deref()
            .and_then(|s| parse_wd(&json!(s)))
            .filter(|f| *f > NaiveDateTime::MIN);
        let sync = cursor.sync.as_ref().map(|s| s.reason.clone());
        let mut scan = Scan {
            state,
            source,
            captured: c,
            lease,
            cursor,
            report: PollReport {
                ran: true,
                sync: sync.clone(),
                ..PollReport::default()
            },
            floor,
        };
        scan.scan(from).await?;
        if let Some(s) = &scan.cursor.sync {
            tracing::info!(source = %c.name, reason = %s.reason, records = s.done, "odoo sync complete");
            metrics::gauge!("switchyard_odoo_capture_sync_remaining", "source" => c.name.clone())
                .set(0.0);
        }
        scan.cursor.sync = None;
        scan.cursor.last_poll_at = Some(started);
        scan.save().await?;
        if let Some(h) = scan
            .cursor
            .high_water
            .as_deref()
            .and_then(|s| parse_wd(&json!(s)))
        {
            c.forget_before(h - c.overlap() - Duration::seconds(1));
        }
        metrics::gauge!("switchyard_odoo_capture_lag_seconds", "source" => c.name.clone())
            .set((state.clock.now() - started).num_milliseconds() as f64 / 1000.0);
        Ok(scan.report)
    }

    // ---- webhook hints -----------------------------------------------------------------

    /// Takes a hint that record `id` of source `name` changed: its read-back starts (or a
    /// running one now waits for this change too). Returns at once.
    pub fn hint(
        &self,
        state: &AppState,
        name: &str,
        id: i64,
        payload: Map<String, Value>,
    ) -> HintOutcome {
        let Some(c) = self.get(name) else {
            return HintOutcome::Dropped;
        };
        let outcome = {
            let mut pending = c.hints.lock().expect("pending hints");
            if let Some(p) = pending.get_mut(&id) {
                // the newest announced change is the one to wait for
                let newer = match (p.get("write_date"), payload.get("write_date")) {
                    (Some(Value::String(old)), Some(Value::String(new))) => new >= old,
                    _ => true,
                };
                if newer {
                    *p = payload;
                }
                HintOutcome::Merged
            } else {
                match self.hint_slots.clone().try_acquire_owned() {
                    Ok(permit) => {
                        pending.insert(id, payload);
                        tokio::spawn(confirm(state.clone(), c.clone(), id, permit));
                        HintOutcome::Accepted
                    }
                    Err(_) => HintOutcome::Dropped,
                }
            }
        };
        metrics::counter!("switchyard_odoo_capture_hints_total", "source" => c.name.clone(), "outcome" => outcome.as_str())
            .increment(1);
        outcome
    }

    /// Whether no hint is waiting for its record (tests wait for this).
    pub fn hints_settled(&self) -> bool {
        self.sources
            .iter()
            .all(|c| c.hints.lock().expect("pending hints").is_empty())
    }
}

/// Reads a hinted record back until it shows the hinted change, then stores it as the
/// change event; gives up after `hint_wait_seconds` (a rolled-back or never-committed
/// change emits nothing).
async fn confirm(
    state: AppState,
    c: Arc<Captured>,
    id: i64,
    _slot: tokio::sync::OwnedSemaphorePermit,
) {
    let deadline =
        tokio::time::Instant::now() + std::time::Duration::from_secs(c.spec.hint_wait_seconds);
    // Odoo commits only after our answer: the first look is a little later.
    let mut delay = std::time::Duration::from_millis(100);
    let outcome = loop {
        tokio::time::sleep(delay).await;
        let Some(expected) = c.hints.lock().expect("pending hints").get(&id).cloned() else {
            break "gone";
        };
        let domain = c.domain([json!(["id", "=", id])]);
        match c.read(domain, &c.fields, "id asc", 1).await {
            Ok(rows) if shows_hint(&expected, rows.first()) => {
                match store_hinted(&state, &c, &rows[0]).await {
                    Ok(outcome) => {
                        // A newer hint came meanwhile: wait for its change too.
                        let mut pending = c.hints.lock().expect("pending hints");
                        if pending.get(&id) == Some(&expected) {
                            pending.remove(&id);
                            break outcome;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(source = %c.name, record = id, error = %e, "a confirmed odoo change could not be stored; retrying");
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(source = %c.name, record = id, error = %e, "reading a hinted odoo record failed; retrying");
            }
        }
        if tokio::time::Instant::now() + delay >= deadline {
            c.hints.lock().expect("pending hints").remove(&id);
            tracing::info!(source = %c.name, model = %c.spec.model, record = id, "a webhook hint was never confirmed by a commit (rolled back or still open); nothing emitted");
            break "not_committed";
        }
        delay = (delay * 2).min(std::time::Duration::from_secs(5));
    };
    metrics::counter!("switchyard_odoo_capture_hints_total", "source" => c.name.clone(), "outcome" => outcome)
        .increment(1);
}

/// Stores a read-back row as its change event: "stored" or "duplicate".
async fn store_hinted(
    state: &AppState,
    c: &Captured,
    row: &Map<String, Value>,
) -> Result<&'static str, CaptureError> {
    let source = state
        .sources
        .odoo(&c.name)
        .ok_or_else(|| CaptureError::Unknown(c.name.clone()))?;
    let (event, wd) = change_event(&c.spec.model, &c.source_uri, row)
        .ok_or_else(|| CaptureError::Undecodable(Value::Object(row.clone()).to_string()))?;
    let outcomes = crate::ingest::store_source_events(state, source, vec![event.clone()])
        .await
        .map_err(|e| CaptureError::Ingest(e.detail))?;
    let stored = matches!(outcomes.first(), Some(Appended::Stored { .. }));
    c.remember(&event.id, wd, SeenBy::Webhook, stored, true);
    tracing::debug!(event_id = %event.id, source = %c.name, stored, "odoo change confirmed from a webhook hint");
    Ok(if stored { "stored" } else { "duplicate" })
}

/// `POST /v1/webhooks/{name}/{token}` for an odoo source: a "Send Webhook Notification"
/// payload, verified by the path token, taken as a hint. Answered at once: Odoo waits for
/// the answer inside the transaction the hint is about.
pub async fn receive_hint(
    state: &AppState,
    source: &Source,
    path_token: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let name = &source.name;
    let spec = source
        .odoo
        .as_ref()
        .ok_or_else(|| ApiError::new(Problem::Internal, "odoo source without its settings"))?;
    let Some(verify) = &spec.hints else {
        return Err(ApiError::new(
            Problem::NotFound,
            format!("odoo source \"{name}\" takes no webhook hints (it has no [sources.verify])"),
        ));
    };
    let bytes = crate::ingest::read_limited(headers, body, state.limits.max_body_bytes).await?;
    let secrets: Vec<String> = verify
        .secrets()
        .iter()
        .map(|s| s.expose())
        .collect::<Result<_, _>>()
        .map_err(|e| {
            tracing::error!(webhook = %name, error = %e, "a webhook secret cannot be read");
            ApiError::new(
                Problem::Internal,
                "the webhook's secret cannot be read on the server",
            )
        })?;
    if let Err(why) = crate::webhooks::verify(
        verify,
        &secrets,
        headers,
        &bytes,
        path_token,
        state.clock.real_now(),
    ) {
        tracing::warn!(webhook = %name, reason = %why, "odoo webhook hint refused");
        return Err(ApiError::new(
            Problem::InvalidSignature,
            format!("webhook \"{name}\" refused: {why}; nothing was done"),
        ));
    }
    let payload: Map<String, Value> = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            Problem::Malformed,
            format!("an Odoo webhook notification is a JSON object: {e}"),
        )
    })?;
    match payload.get("_model").and_then(Value::as_str) {
        Some(m) if m == spec.model => {}
        other => {
            return Err(ApiError::new(
                Problem::Invalid,
                format!(
                    "odoo source \"{name}\" captures {}; this notification is for {}",
                    spec.model,
                    other.map_or("no model (`_model` is missing)".to_string(), |m| m
                        .to_string())
                ),
            ));
        }
    }
    let Some(id) = payload
        .get("_id")
        .or_else(|| payload.get("id"))
        .and_then(Value::as_i64)
        .filter(|id| *id > 0)
    else {
        return Err(ApiError::new(
            Problem::Invalid,
            "the notification names no record (`_id` is missing or not a positive integer)",
        ));
    };
    let outcome = state.capture.hint(state, name, id, payload);
    tracing::debug!(webhook = %name, record = id, outcome = outcome.as_str(), "odoo webhook hint");
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(
            json!({"status": "hint", "outcome": outcome.as_str(), "model": spec.model, "id": id}),
        ),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn a_change_is_its_record_write_date_and_values() {
        let a = row(
            json!({"id": 7, "write_date": "2026-11-23 18:05:53", "name": "S00007", "partner_id": [3, "Acme"]}),
        );
        let (e, wd) = change_event("sale.order", "https://erp/sale.order", &a).unwrap();
        assert_eq!(fmt_wd(wd), "2026-11-23 18:05:53");
        assert!(
            e.id.starts_with("sale.order/7/2026-11-23T18:05:53Z/"),
            "{}",
            e.id
        );
        assert_eq!(e.ty, "odoo.sale.order.changed");
        assert_eq!(e.subject.as_deref(), Some("7"));
        // the order of the fields does not matter; a value does
        let mut b = Map::new();
        for k in ["partner_id", "name", "write_date", "id"] {
            b.insert(k.into(), a[k].clone());
        }
        assert_eq!(change_event("sale.order", "s", &b).unwrap().0.id, e.id);
        b.insert("name".into(), json!("S00008"));
        assert_ne!(change_event("sale.order", "s", &b).unwrap().0.id, e.id);
        assert!(change_event("sale.order", "s", &row(json!({"id": 7}))).is_none());
    }

    #[test]
    fn a_hint_is_confirmed_only_by_the_committed_change() {
        let hint = row(
            json!({"_id": 7, "_model": "sale.order", "id": 7, "state": "sale", "partner_id": 3,
                   "write_date": "2026-11-23 18:08:57.530131"}),
        );
        let read = |wd: &str, state: &str| {
            row(json!({"id": 7, "write_date": wd, "state": state, "partner_id": [3, "Acme"]}))
        };
        assert!(!shows_hint(&hint, None), "not committed (or rolled back)");
        assert!(!shows_hint(
            &hint,
            Some(&read("2026-11-23 18:08:50", "draft"))
        ));
        assert!(!shows_hint(
            &hint,
            Some(&read("2026-11-23 18:08:57", "draft"))
        ));
        assert!(shows_hint(
            &hint,
            Some(&read("2026-11-23 18:08:57", "sale"))
        ));
        assert!(
            shows_hint(&hint, Some(&read("2026-11-23 18:09:01", "done"))),
            "a later commit"
        );
    }
}
