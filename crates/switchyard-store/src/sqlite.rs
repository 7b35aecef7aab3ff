//! The embedded backend: one SQLite file in WAL mode with `synchronous=FULL`.
//!
//! One writer thread owns the only read-write connection. Callers hand it closures through a
//! bounded queue; it takes every request waiting, runs each in its own savepoint inside one
//! transaction, commits once (one fsync for the group) and only then answers each caller.
//! Readers use a pool of read-only connections on blocking threads. A checkpointer thread
//! runs PASSIVE WAL checkpoints, which never wait for readers, so a slow reader can neither
//! stall a checkpoint nor the writer.
//!
//! Nothing but the writer thread may write to the file while the server runs.

use crate::sqlite_alerts as al;
use crate::sqlite_monitor as wf;
use crate::sqlite_queue as queue;
use crate::util::*;
use crate::*;
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Most requests one group commit takes.
const MAX_GROUP: usize = 1024;

type Completion = Box<dyn FnOnce(Result<()>) + Send>;
type WriteJob = Box<dyn FnOnce(&Connection) -> (bool, Completion) + Send>;

const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        r#"
CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    tx INTEGER NOT NULL DEFAULT 0,
    source TEXT NOT NULL,
    event_id TEXT NOT NULL,
    type TEXT NOT NULL,
    subject TEXT,
    time TEXT,
    received_at INTEGER NOT NULL,
    envelope TEXT NOT NULL,
    UNIQUE (source, event_id)
);
CREATE INDEX events_type ON events (type, seq);
CREATE INDEX events_received ON events (received_at);
CREATE TABLE tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    revoked_at INTEGER
);
CREATE UNIQUE INDEX tokens_active_name ON tokens (name) WHERE revoked_at IS NULL;
CREATE TABLE audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE nodes (
    id TEXT PRIMARY KEY,
    started_at INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL,
    info TEXT NOT NULL
);
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    state TEXT
);
CREATE TABLE jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    params TEXT NOT NULL,
    state TEXT NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    total INTEGER,
    message TEXT,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER,
    owner TEXT
);
CREATE INDEX jobs_state ON jobs (state, id);
"#,
    ),
    (
        2,
        r#"
CREATE TABLE event_keys (
    seq INTEGER NOT NULL REFERENCES events (seq) ON DELETE CASCADE,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (seq, name, value)
);
CREATE INDEX event_keys_value ON event_keys (value, name);
"#,
    ),
    (
        3,
        r#"
ALTER TABLE events ADD COLUMN payload_purged INTEGER NOT NULL DEFAULT 0;
"#,
    ),
    (
        4,
        r#"
ALTER TABLE events ADD COLUMN lag_ms INTEGER;
"#,
    ),
    (
        5,
        r#"
CREATE TABLE deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_seq BIGINT NOT NULL,
    event_source TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    flow TEXT NOT NULL,
    flow_version TEXT NOT NULL,
    destination TEXT NOT NULL,
    lane SMALLINT NOT NULL,
    ordering_key TEXT,
    hold_on_dead INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL,
    payload TEXT,
    traceparent TEXT,
    generation BIGINT NOT NULL DEFAULT 0,
    attempts BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    next_attempt_at BIGINT,
    delivered_at BIGINT,
    lease_owner TEXT,
    lease_until BIGINT,
    error_class TEXT,
    last_error TEXT,
    last_status INTEGER,
    error_detail TEXT,
    UNIQUE (event_seq, flow)
);
CREATE INDEX deliveries_due ON deliveries (lane, next_attempt_at, id) WHERE state IN ('scheduled', 'retry_wait');
CREATE INDEX deliveries_leased ON deliveries (lease_until) WHERE state = 'delivering';
CREATE INDEX deliveries_key ON deliveries (destination, ordering_key, id) WHERE ordering_key IS NOT NULL AND state IN ('scheduled', 'retry_wait', 'delivering', 'dead', 'mapping_failed', 'invalid');
CREATE INDEX deliveries_state ON deliveries (state, id);
CREATE INDEX deliveries_flow ON deliveries (flow, id);
CREATE TABLE delivery_attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id BIGINT NOT NULL,
    generation BIGINT NOT NULL,
    attempt BIGINT NOT NULL,
    node TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    duration_us BIGINT NOT NULL,
    outcome TEXT NOT NULL,
    status INTEGER,
    response_excerpt TEXT,
    error TEXT
);
CREATE INDEX delivery_attempts_delivery ON delivery_attempts (delivery_id, id);
CREATE TABLE destination_pauses (
    destination TEXT PRIMARY KEY,
    paused_at BIGINT NOT NULL,
    resume_after BIGINT NOT NULL,
    reason TEXT NOT NULL
);
"#,
    ),
    (
        6,
        r#"
ALTER TABLE deliveries ADD COLUMN cursor TEXT;
"#,
    ),
    (
        7,
        r#"
CREATE TABLE wf_instances (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    workflow TEXT NOT NULL,
    version TEXT NOT NULL,
    key TEXT,
    state TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    closed_at BIGINT,
    due_at BIGINT,
    body TEXT NOT NULL
);
CREATE INDEX wf_instances_due ON wf_instances (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX wf_instances_state ON wf_instances (workflow, state);
CREATE INDEX wf_instances_closed ON wf_instances (closed_at);
CREATE TABLE wf_aliases (
    workflow TEXT NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    instance_id BIGINT NOT NULL,
    PRIMARY KEY (workflow, name, value)
);
CREATE INDEX wf_aliases_instance ON wf_aliases (instance_id);
CREATE INDEX wf_aliases_value ON wf_aliases (value);
CREATE TABLE wf_findings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    subject TEXT NOT NULL DEFAULT 'workflow',
    instance_id BIGINT NOT NULL,
    workflow TEXT NOT NULL,
    instance_key TEXT NOT NULL,
    step TEXT NOT NULL,
    kind TEXT NOT NULL,
    at BIGINT NOT NULL,
    detected_at BIGINT NOT NULL,
    message TEXT NOT NULL,
    evidence TEXT NOT NULL,
    UNIQUE (subject, instance_id, step, kind)
);
CREATE INDEX wf_findings_workflow ON wf_findings (workflow, id);
CREATE INDEX wf_findings_at ON wf_findings (at);
CREATE TABLE wf_versions (
    workflow TEXT NOT NULL,
    version TEXT NOT NULL,
    definition TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (workflow, version)
);
CREATE TABLE batch_runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    monitor TEXT NOT NULL,
    run_id TEXT,
    slot BIGINT,
    started_at BIGINT,
    finished_at BIGINT,
    status TEXT NOT NULL,
    count BIGINT,
    message TEXT,
    updated_at BIGINT NOT NULL
);
CREATE INDEX batch_runs_monitor ON batch_runs (monitor, id);
CREATE INDEX batch_runs_slot ON batch_runs (monitor, slot);
CREATE INDEX batch_runs_run_id ON batch_runs (monitor, run_id);
CREATE INDEX batch_runs_status ON batch_runs (status, started_at);
"#,
    ),
    (
        8,
        r#"
CREATE TABLE alerts (
    fingerprint TEXT PRIMARY KEY,
    rule TEXT NOT NULL,
    state TEXT NOT NULL,
    incident_id BIGINT,
    starts_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX alerts_state ON alerts (state, updated_at);
CREATE INDEX alerts_incident ON alerts (incident_id);
CREATE TABLE alert_groups (
    key TEXT PRIMARY KEY,
    body TEXT NOT NULL
);
CREATE TABLE incidents (
    id BIGINT PRIMARY KEY,
    status TEXT NOT NULL,
    team TEXT NOT NULL,
    opened_at BIGINT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX incidents_status ON incidents (status, id);
CREATE INDEX incidents_opened ON incidents (opened_at);
CREATE TABLE incident_entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id BIGINT NOT NULL,
    at BIGINT NOT NULL,
    kind TEXT NOT NULL,
    actor TEXT,
    text TEXT NOT NULL
);
CREATE INDEX incident_entries_incident ON incident_entries (incident_id, id);
CREATE TABLE silences (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    starts_at BIGINT NOT NULL,
    ends_at BIGINT NOT NULL,
    expired_at BIGINT,
    body TEXT NOT NULL
);
CREATE INDEX silences_ends ON silences (ends_at);
CREATE INDEX delivery_attempts_started ON delivery_attempts (started_at);
"#,
    ),
    (
        9,
        r#"
CREATE INDEX audit_target ON audit (target, id);
"#,
    ),
];

pub struct SqliteStore {
    path: PathBuf,
    writer: Mutex<Option<mpsc::Sender<WriteJob>>>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    readers: r2d2::Pool<SqliteConnectionManager>,
    stop_checkpointer: std::sync::Arc<AtomicBool>,
    /// WAL pages not yet copied into the database, as of the last checkpoint (-1: none yet).
    wal_backlog: std::sync::Arc<AtomicI64>,
}

pub(crate) fn map_err(e: rusqlite::Error) -> Error {
    use rusqlite::ErrorCode::*;
    match &e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            DiskFull | DatabaseBusy | DatabaseLocked | CannotOpen | SystemIoFailure | ReadOnly
            | OutOfMemory => Error::Unavailable(e.to_string()),
            ConstraintViolation => Error::Conflict(e.to_string()),
            _ => Error::Unavailable(e.to_string()),
        },
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::IntegralValueOutOfRange(..) => Error::Corrupt(e.to_string()),
        _ => Error::Unavailable(e.to_string()),
    }
}

fn aborted() -> Error {
    Error::Unavailable("the write was aborted before it began; nothing was stored".into())
}

fn set_pragmas(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.execute_batch("PRAGMA foreign_keys = ON;")
}

/// A source scope as an SQLite condition, its parameters numbered after `lead`'s (`?1`…).
fn sqlite_scope(
    scope: &SourceScope,
    lead: Vec<rusqlite::types::Value>,
) -> (String, Vec<rusqlite::types::Value>) {
    let (cond, scope_params) = scope.sql(
        lead.len() + 1,
        |i| format!("?{i}"),
        |i| format!("substr(source, 1, length(?{i})) = ?{i}"),
    );
    let mut params = lead;
    params.extend(scope_params.into_iter().map(Into::into));
    (cond, params)
}

/// Splits our `max_size_mib=N` parameter off a SQLite path.
pub fn split_params(path: &str) -> Result<(&str, Option<u64>)> {
    let Some((path, query)) = path.split_once('?') else {
        return Ok((path, None));
    };
    let mut max = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("max_size_mib", v)) => {
                max = Some(v.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                    Error::Url(format!(
                        "max_size_mib must be a positive integer, not \"{v}\""
                    ))
                })?)
            }
            _ => {
                return Err(Error::Url(format!(
                    "unknown SQLite URL parameter \"{pair}\" (known: max_size_mib)"
                )));
            }
        }
    }
    Ok((path, max))
}

/// Opens the file read-write, sets WAL and FULL sync, and applies migrations.
pub fn open_writer_connection(path: &Path, max_size_mib: Option<u64>) -> Result<Connection> {
    let conn = Connection::open(path).map_err(map_err)?;
    set_pragmas(&conn).map_err(map_err)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(map_err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::Unavailable(format!(
            "cannot switch {} to WAL (journal_mode = {mode})",
            path.display()
        )));
    }
    conn.execute_batch(
        "PRAGMA synchronous = FULL; PRAGMA wal_autocheckpoint = 0; PRAGMA temp_store = MEMORY;",
    )
    .map_err(map_err)?;
    migrate(&conn)?;
    if let Some(mib) = max_size_mib {
        let page: u64 = conn
            .query_row("PRAGMA page_size", [], |r| r.get::<_, i64>(0))
            .map_err(map_err)? as u64;
        conn.query_row(
            &format!(
                "PRAGMA max_page_count = {}",
                (mib * 1024 * 1024 / page).max(1)
            ),
            [],
            |_| Ok(()),
        )
        .map_err(map_err)?;
    }
    Ok(conn)
}

fn migrate(conn: &Connection) -> Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
    )
    .map_err(|e| Error::Migration(e.to_string()))?;
    let current: i64 = conn
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            [],
            |r| r.get(0),
        )
        .map_err(|e| Error::Migration(e.to_string()))?;
    let latest = MIGRATIONS.last().map_or(0, |m| m.0);
    if current > latest {
        return Err(Error::Migration(format!(
            "the database is at schema version {current}, newer than this binary's {latest}; upgrade Switchyard"
        )));
    }
    for (version, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        let run = || -> rusqlite::Result<()> {
            conn.execute_batch("BEGIN IMMEDIATE")?;
            conn.execute_batch(sql)?;
            conn.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
                params![version, micros(Utc::now())],
            )?;
            conn.execute_batch("COMMIT")
        };
        if let Err(e) = run() {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(Error::Migration(format!("version {version}: {e}")));
        }
        tracing::info!(version, "applied SQLite migration");
    }
    Ok(())
}

impl SqliteStore {
    pub async fn open(path: &Path, max_size_mib: Option<u64>, opts: &StoreOptions) -> Result<Self> {
        let path = path.to_path_buf();
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
            && !dir.exists()
        {
            return Err(Error::Unavailable(format!(
                "directory {} does not exist",
                dir.display()
            )));
        }
        let p = path.clone();
        let conn = tokio::task::spawn_blocking(move || open_writer_connection(&p, max_size_mib))
            .await
            .map_err(|e| Error::Unavailable(e.to_string()))??;

        let (tx, rx) = mpsc::channel::<WriteJob>(opts.writer_queue.max(1));
        let writer_thread = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx))
            .map_err(|e| Error::Unavailable(e.to_string()))?;

        let manager = SqliteConnectionManager::file(&path)
            .with_flags(OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .with_init(|c| {
                set_pragmas(c)?;
                c.execute_batch("PRAGMA query_only = ON;")
            });
        let readers = r2d2::Pool::builder()
            .max_size(opts.pool_size.max(1))
            .min_idle(Some(1))
            .connection_timeout(Duration::from_secs(10))
            .build(manager)
            .map_err(|e| Error::Unavailable(e.to_string()))?;

        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let backlog = std::sync::Arc::new(AtomicI64::new(-1));
        spawn_checkpointer(path.clone(), stop.clone(), backlog.clone());

        Ok(SqliteStore {
            path,
            writer: Mutex::new(Some(tx)),
            writer_thread: Mutex::new(Some(writer_thread)),
            readers,
            stop_checkpointer: stop,
            wal_backlog: backlog,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// WAL pages the background checkpointer has not yet copied into the database, as of
    /// its last run (every 250 ms); `None` before its first run.
    pub fn wal_backlog(&self) -> Option<i64> {
        let v = self.wal_backlog.load(Ordering::Relaxed);
        (v >= 0).then_some(v)
    }

    fn sender(&self) -> Result<mpsc::Sender<WriteJob>> {
        self.writer
            .lock()
            .expect("writer lock")
            .clone()
            .ok_or(Error::Closed)
    }

    fn job<T, F>(f: F) -> (WriteJob, oneshot::Receiver<Result<T>>)
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: WriteJob = Box::new(move |conn: &Connection| match f(conn) {
            Ok(v) => (
                true,
                Box::new(move |commit: Result<()>| {
                    let _ = tx.send(commit.map(|()| v));
                }) as Completion,
            ),
            Err(e) => (
                false,
                Box::new(move |_| {
                    let _ = tx.send(Err(e));
                }) as Completion,
            ),
        });
        (job, rx)
    }

    /// Runs `f` in the writer's next group commit; waits for room in the queue.
    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let (job, rx) = Self::job(f);
        self.sender()?.send(job).await.map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| aborted())?
    }

    /// Like `write`, but answers `Saturated` at once when the queue is full (ingest).
    async fn write_or_saturated<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let (job, rx) = Self::job(f);
        match self.sender()?.try_send(job) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => return Err(Error::Saturated),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(Error::Closed),
        }
        rx.await.map_err(|_| aborted())?
    }

    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let pool = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let conn = pool.get().map_err(|e| Error::Unavailable(e.to_string()))?;
            f(&conn)
        })
        .await
        .map_err(|e| Error::Unavailable(e.to_string()))?
    }
}

fn writer_loop(conn: Connection, mut rx: mpsc::Receiver<WriteJob>) {
    let mut batch: Vec<WriteJob> = Vec::with_capacity(MAX_GROUP);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        drain_group(&mut rx, &mut batch, MAX_GROUP);
        let started = Instant::now();
        let n = batch.len();
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            // Dropping the jobs unrun drops their reply channels: every caller is told
            // (as `Unavailable`) that nothing of its write was stored.
            tracing::error!(error = %e, requests = n, "cannot begin a write transaction");
            metrics::counter!("switchyard_store_write_errors_total").increment(1);
            batch.clear();
            continue;
        }
        let mut completions = Vec::with_capacity(n);
        for job in batch.drain(..) {
            if let Err(e) = conn.execute_batch("SAVEPOINT op") {
                // the job is dropped unrun; its caller learns nothing was stored
                tracing::error!(error = %e, "cannot open a savepoint");
                continue;
            }
            let (ok, completion) = job(&conn);
            let end = if ok {
                "RELEASE op"
            } else {
                "ROLLBACK TO op; RELEASE op"
            };
            if let Err(e) = conn.execute_batch(end) {
                tracing::error!(error = %e, "savepoint end failed");
            }
            completions.push((ok, completion));
        }
        let commit = conn.execute_batch("COMMIT");
        metrics::histogram!("switchyard_store_commit_seconds")
            .record(started.elapsed().as_secs_f64());
        match commit {
            Ok(()) => {
                for (_, c) in completions {
                    c(Ok(()));
                }
            }
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                let err = map_err(e);
                tracing::error!(error = %err, requests = n, "group commit failed; nothing of it was stored");
                for (_, c) in completions {
                    c(Err(Error::Unavailable(err.to_string())));
                }
            }
        }
    }
    // Channel closed: every queued write has been committed. Checkpoint so the file is
    // complete without its WAL.
    if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)") {
        tracing::warn!(error = %e, "final checkpoint failed (the WAL keeps the data)");
    }
}

fn spawn_checkpointer(
    path: PathBuf,
    stop: std::sync::Arc<AtomicBool>,
    backlog: std::sync::Arc<AtomicI64>,
) {
    let _ = std::thread::Builder::new()
        .name("sqlite-checkpoint".into())
        .spawn(move || {
            let conn = match Connection::open(&path) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "checkpointer cannot open the database");
                    return;
                }
            };
            let _ = conn.busy_timeout(Duration::from_millis(100));
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(250));
                // PASSIVE copies what it can without waiting for readers or the writer.
                match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                    Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
                }) {
                    Ok((log, done)) => {
                        let left = (log - done).max(0);
                        backlog.store(left, Ordering::Relaxed);
                        metrics::gauge!("switchyard_store_wal_pages").set(left as f64);
                    }
                    Err(e) => tracing::debug!(error = %e, "passive checkpoint skipped"),
                }
            }
        });
}

type EventRow = (i64, i64, i64, String, bool);

fn event_row(r: &rusqlite::Row) -> rusqlite::Result<EventRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

fn row_to_event(conn: &Connection, row: EventRow) -> Result<StoredEvent> {
    let (seq, tx, received, envelope, payload_purged) = row;
    let mut keys = conn
        .prepare_cached("SELECT name, value FROM event_keys WHERE seq = ?1 ORDER BY name, value")
        .map_err(map_err)?;
    let keys = keys
        .query_map([seq], |r| {
            Ok(BusinessKey::new(
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
            ))
        })
        .map_err(map_err)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(map_err)?;
    Ok(StoredEvent {
        seq,
        position: LogPosition { tx, seq },
        received_at: from_micros(received)?,
        event: decode_envelope(&envelope)?,
        keys,
        payload_purged,
    })
}

fn insert_events(
    conn: &Connection,
    events: &[NewEvent],
) -> Result<Vec<(Appended, Vec<CreatedDelivery>)>> {
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO events (source, event_id, type, subject, time, received_at, envelope, lag_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (source, event_id) DO NOTHING RETURNING seq",
        )
        .map_err(map_err)?;
    let mut existing = conn
        .prepare_cached("SELECT seq FROM events WHERE source = ?1 AND event_id = ?2")
        .map_err(map_err)?;
    let mut out = Vec::with_capacity(events.len());
    for e in events {
        let ev = &e.event;
        let seq: Option<i64> = insert
            .query_row(
                params![
                    ev.source,
                    ev.id,
                    ev.ty,
                    ev.subject,
                    ev.time,
                    micros(e.received_at),
                    envelope(ev),
                    lag_ms(e)
                ],
                |r| r.get(0),
            )
            .optional()
            .map_err(map_err)?;
        out.push(match seq {
            Some(seq) => {
                let mut key = conn
                    .prepare_cached(
                        "INSERT INTO event_keys (seq, name, value) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                    )
                    .map_err(map_err)?;
                for k in &e.keys {
                    key.execute(params![seq, k.name, k.value]).map_err(map_err)?;
                }
                let attrs = queue::EventAttrs {
                    source: &ev.source,
                    id: &ev.id,
                    ty: &ev.ty,
                    received: micros(e.received_at),
                    created: micros(e.received_at),
                };
                let mut created = Vec::with_capacity(e.deliveries.len());
                for d in &e.deliveries {
                    created.extend(queue::insert(conn, seq, &attrs, d)?);
                }
                (Appended::Stored { seq }, created)
            }
            None => (
                Appended::Duplicate {
                    seq: existing
                        .query_row(params![ev.source, ev.id], |r| r.get(0))
                        .map_err(map_err)?,
                },
                Vec::new(),
            ),
        });
    }
    Ok(out)
}

fn token_from_row(r: &rusqlite::Row) -> rusqlite::Result<TokenRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

type TokenRow = (i64, String, String, String, i64, String, Option<i64>);

fn token_record(t: TokenRow) -> Result<TokenRecord> {
    Ok(TokenRecord {
        id: t.0,
        name: t.1,
        role: parse_role(&t.2)?,
        hash: t.3,
        created_at: from_micros(t.4)?,
        created_by: t.5,
        revoked_at: opt_from_micros(t.6)?,
    })
}

const TOKEN_COLS: &str = "id, name, role, hash, created_at, created_by, revoked_at";
const JOB_COLS: &str = "id, kind, params, state, done, total, message, created_by, created_at, started_at, finished_at, owner";

type JobRow = (
    i64,
    String,
    String,
    String,
    i64,
    Option<i64>,
    Option<String>,
    String,
    i64,
    Option<i64>,
    Option<i64>,
    Option<String>,
);

fn job_row(r: &rusqlite::Row) -> rusqlite::Result<JobRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
        r.get(9)?,
        r.get(10)?,
        r.get(11)?,
    ))
}

fn job_record(j: JobRow) -> Result<JobRecord> {
    Ok(JobRecord {
        id: j.0,
        kind: j.1,
        params: decode_json(&j.2)?,
        state: JobState::parse(&j.3)?,
        done: j.4,
        total: j.5,
        message: j.6,
        created_by: j.7,
        created_at: from_micros(j.8)?,
        started_at: opt_from_micros(j.9)?,
        finished_at: opt_from_micros(j.10)?,
        owner: j.11,
    })
}

fn audit_insert(conn: &Connection, e: &NewAudit) -> Result<i64> {
    conn.prepare_cached(
        "INSERT INTO audit (at, actor, action, target, detail) VALUES (?1, ?2, ?3, ?4, ?5) RETURNING id",
    )
    .and_then(|mut s| {
        s.query_row(
            params![micros(e.at), e.actor, e.action, e.target, e.detail.to_string()],
            |r| r.get(0),
        )
    })
    .map_err(map_err)
}

fn lease_row(name: &str, r: &rusqlite::Row) -> rusqlite::Result<(String, String, i64, i64)> {
    Ok((name.to_string(), r.get(0)?, r.get(1)?, r.get(2)?))
}

fn lease_record(t: (String, String, i64, i64)) -> Result<Lease> {
    Ok(Lease {
        name: t.0,
        owner: t.1,
        epoch: t.2,
        expires_at: from_micros(t.3)?,
    })
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn check_writable(&self) -> Result<()> {
        self.write(|c| {
            c.execute(
                "INSERT INTO meta (key, value) VALUES ('ready_probe', '1') ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [],
            )
            .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn close(&self) {
        let sender = self.writer.lock().expect("writer lock").take();
        drop(sender);
        let handle = self.writer_thread.lock().expect("writer lock").take();
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
        self.stop_checkpointer.store(true, Ordering::Relaxed);
    }

    async fn append_routed(
        &self,
        events: Vec<NewEvent>,
    ) -> Result<Vec<(Appended, Vec<CreatedDelivery>)>> {
        let n = events.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        self.write_or_saturated(move |c| insert_events(c, &events))
            .await
    }

    async fn append_events_held(
        &self,
        events: Vec<NewEvent>,
        inserted: oneshot::Sender<()>,
        release: oneshot::Receiver<()>,
    ) -> Result<Vec<Appended>> {
        self.write(move |c| {
            let r = insert_events(c, &events)?;
            let _ = inserted.send(());
            let _ = release.blocking_recv();
            Ok(r.into_iter().map(|(a, _)| a).collect())
        })
        .await
    }

    async fn get_event(&self, seq: i64) -> Result<Option<StoredEvent>> {
        self.read(move |c| {
            c.prepare_cached(
                "SELECT seq, tx, received_at, envelope, payload_purged FROM events WHERE seq = ?1",
            )
            .and_then(|mut s| s.query_row([seq], event_row).optional())
            .map_err(map_err)?
            .map(|row| row_to_event(c, row))
            .transpose()
        })
        .await
    }

    async fn find_event(&self, source: &str, id: &str) -> Result<Option<StoredEvent>> {
        let (source, id) = (source.to_string(), id.to_string());
        self.read(move |c| {
            c.prepare_cached(
                "SELECT seq, tx, received_at, envelope, payload_purged FROM events WHERE source = ?1 AND event_id = ?2",
            )
            .and_then(|mut s| {
                s.query_row(params![source, id], event_row)
                .optional()
            })
            .map_err(map_err)?
            .map(|row| row_to_event(c, row))
            .transpose()
        })
        .await
    }

    async fn read_log(
        &self,
        after: LogPosition,
        limit: usize,
        filter: &EventFilter,
    ) -> Result<LogPage> {
        let f = filter.clone();
        let limit = limit.clamp(1, 10_000) as i64;
        self.read(move |c| {
            let mut s = c
                .prepare_cached(
                    "SELECT seq, tx, received_at, envelope, payload_purged FROM events
                     WHERE (tx, seq) > (?1, ?2)
                       AND (?3 IS NULL OR source = ?3)
                       AND (?4 IS NULL OR type = ?4)
                       AND (?5 IS NULL OR subject = ?5)
                       AND (?7 IS NULL OR seq IN (SELECT seq FROM event_keys
                                                  WHERE value = ?7 AND (?8 IS NULL OR name = ?8)))
                       AND (?9 IS NULL OR received_at >= ?9)
                       AND (?10 IS NULL OR received_at < ?10)
                     ORDER BY tx, seq LIMIT ?6",
                )
                .map_err(map_err)?;
            let rows = s
                .query_map(
                    params![
                        after.tx,
                        after.seq,
                        f.source,
                        f.ty,
                        f.subject,
                        limit,
                        f.key,
                        f.key_name,
                        f.since.map(micros),
                        f.until.map(micros)
                    ],
                    event_row,
                )
                .map_err(map_err)?;
            let mut events = Vec::new();
            for row in rows {
                events.push(row_to_event(c, row.map_err(map_err)?)?);
            }
            let next = events.last().map_or(after, |e| e.position);
            Ok(LogPage { events, next })
        })
        .await
    }

    async fn count_events(&self) -> Result<i64> {
        self.read(|c| {
            c.query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
                .map_err(map_err)
        })
        .await
    }

    async fn purge_events(
        &self,
        before: DateTime<Utc>,
        scope: &SourceScope,
        limit: usize,
    ) -> Result<u64> {
        let limit = limit.clamp(1, 100_000) as i64;
        let (cond, p) = sqlite_scope(scope, vec![micros(before).into(), limit.into()]);
        self.write(move |c| {
            // The events' finished deliveries and their attempts go with them; dead letters
            // and pending deliveries stay (they carry their own payload).
            let victims = format!(
                "SELECT seq FROM events WHERE received_at < ?1 AND {cond} ORDER BY seq LIMIT ?2"
            );
            let finished = format!(
                "SELECT id FROM deliveries WHERE event_seq IN ({victims}) AND state IN ('delivered', 'filtered', 'discarded')"
            );
            c.execute(
                &format!("DELETE FROM delivery_attempts WHERE delivery_id IN ({finished})"),
                rusqlite::params_from_iter(p.clone()),
            )
            .map_err(map_err)?;
            c.execute(
                &format!("DELETE FROM deliveries WHERE id IN ({finished})"),
                rusqlite::params_from_iter(p.clone()),
            )
            .map_err(map_err)?;
            c.execute(
                &format!("DELETE FROM events WHERE seq IN ({victims})"),
                rusqlite::params_from_iter(p),
            )
            .map(|n| n as u64)
            .map_err(map_err)
        })
        .await
    }

    async fn count_events_before(&self, before: DateTime<Utc>, scope: &SourceScope) -> Result<i64> {
        let (cond, p) = sqlite_scope(scope, vec![micros(before).into()]);
        self.read(move |c| {
            let sql = format!("SELECT COUNT(*) FROM events WHERE received_at < ?1 AND {cond}");
            c.query_row(&sql, rusqlite::params_from_iter(p), |r| r.get(0))
                .map_err(map_err)
        })
        .await
    }

    async fn purge_payloads(
        &self,
        before: DateTime<Utc>,
        scope: &SourceScope,
        limit: usize,
    ) -> Result<u64> {
        let limit = limit.clamp(1, 100_000) as i64;
        let (cond, p) = sqlite_scope(scope, vec![micros(before).into(), limit.into()]);
        self.write(move |c| {
            let sql = format!(
                "UPDATE events SET envelope = json_remove(envelope, '$.data', '$.data_base64'),
                                   payload_purged = 1
                 WHERE seq IN (SELECT seq FROM events
                               WHERE received_at < ?1 AND payload_purged = 0 AND {cond}
                               ORDER BY seq LIMIT ?2)"
            );
            c.execute(&sql, rusqlite::params_from_iter(p))
                .map(|n| n as u64)
                .map_err(map_err)
        })
        .await
    }

    async fn source_activity(&self, since: DateTime<Utc>) -> Result<Vec<SourceActivity>> {
        self.read(move |c| {
            let mut s = c
                .prepare_cached(
                    "SELECT source, COUNT(*), AVG(lag_ms), MAX(lag_ms) FROM events
                     WHERE received_at >= ?1 GROUP BY source ORDER BY source",
                )
                .map_err(map_err)?;
            let rows = s
                .query_map([micros(since)], |r| {
                    Ok(SourceActivity {
                        source: r.get(0)?,
                        events: r.get(1)?,
                        avg_lag_ms: r.get(2)?,
                        max_lag_ms: r.get(3)?,
                    })
                })
                .map_err(map_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map_err)
        })
        .await
    }

    async fn usage_by_source(&self) -> Result<Vec<SourceUsage>> {
        self.read(|c| {
            let mut s = c
                .prepare(
                    "SELECT source, COUNT(*), SUM(payload_purged), SUM(length(CAST(envelope AS BLOB))), MAX(received_at)
                     FROM events GROUP BY source ORDER BY source",
                )
                .map_err(map_err)?;
            let rows = s
                .query_map([], |r| {
                    Ok(SourceUsage {
                        source: r.get(0)?,
                        events: r.get(1)?,
                        payloads_purged: r.get(2)?,
                        bytes: r.get(3)?,
                        last_received_at: r
                            .get::<_, Option<i64>>(4)?
                            .and_then(DateTime::from_timestamp_micros),
                    })
                })
                .map_err(map_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map_err)
        })
        .await
    }

    async fn log_head(&self) -> Result<LogPosition> {
        self.read(|c| {
            c.query_row(
                "SELECT tx, seq FROM events ORDER BY tx DESC, seq DESC LIMIT 1",
                [],
                |r| {
                    Ok(LogPosition {
                        tx: r.get(0)?,
                        seq: r.get(1)?,
                    })
                },
            )
            .optional()
            .map_err(map_err)
            .map(|p| p.unwrap_or(LogPosition::START))
        })
        .await
    }

    async fn create_token(&self, token: NewToken, actor: &str) -> Result<TokenRecord> {
        let actor = actor.to_string();
        self.write(move |c| {
            let exists: Option<i64> = c
                .query_row(
                    "SELECT id FROM tokens WHERE name = ?1 AND revoked_at IS NULL",
                    [&token.name],
                    |r| r.get(0),
                )
                .optional()
                .map_err(map_err)?;
            if exists.is_some() {
                return Err(Error::Conflict(format!(
                    "an active token named \"{}\" already exists",
                    token.name
                )));
            }
            let id: i64 = c
                .query_row(
                    "INSERT INTO tokens (name, role, hash, created_at, created_by) VALUES (?1, ?2, ?3, ?4, ?5) RETURNING id",
                    params![token.name, token.role.as_str(), token.hash, micros(token.created_at), actor],
                    |r| r.get(0),
                )
                .map_err(map_err)?;
            audit_insert(
                c,
                &NewAudit {
                    at: token.created_at,
                    actor: actor.clone(),
                    action: "token.create".into(),
                    target: format!("token:{id}"),
                    detail: serde_json::json!({"name": token.name, "role": token.role}),
                },
            )?;
            Ok(TokenRecord {
                id,
                name: token.name,
                role: token.role,
                hash: token.hash,
                // as stored (microseconds), so every read of this token agrees
                created_at: from_micros(micros(token.created_at))?,
                created_by: actor,
                revoked_at: None,
            })
        })
        .await
    }

    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>> {
        let hash = hash.to_string();
        self.read(move |c| {
            c.prepare_cached(&format!("SELECT {TOKEN_COLS} FROM tokens WHERE hash = ?1"))
                .and_then(|mut s| s.query_row([hash], token_from_row).optional())
                .map_err(map_err)?
                .map(token_record)
                .transpose()
        })
        .await
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>> {
        self.read(|c| {
            let mut s = c
                .prepare(&format!("SELECT {TOKEN_COLS} FROM tokens ORDER BY id"))
                .map_err(map_err)?;
            let rows = s.query_map([], token_from_row).map_err(map_err)?;
            rows.map(|r| token_record(r.map_err(map_err)?)).collect()
        })
        .await
    }

    async fn revoke_token(&self, id: i64, actor: &str, at: DateTime<Utc>) -> Result<TokenRecord> {
        let actor = actor.to_string();
        self.write(move |c| {
            let row = c
                .query_row(
                    &format!(
                        "UPDATE tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL RETURNING {TOKEN_COLS}"
                    ),
                    params![id, micros(at)],
                    token_from_row,
                )
                .optional()
                .map_err(map_err)?
                .ok_or_else(|| Error::NotFound(format!("active token {id}")))?;
            let rec = token_record(row)?;
            audit_insert(
                c,
                &NewAudit {
                    at,
                    actor,
                    action: "token.revoke".into(),
                    target: format!("token:{id}"),
                    detail: serde_json::json!({"name": rec.name}),
                },
            )?;
            Ok(rec)
        })
        .await
    }

    async fn append_audit(&self, entry: NewAudit) -> Result<i64> {
        self.write(move |c| audit_insert(c, &entry)).await
    }

    async fn list_audit(
        &self,
        after: i64,
        target: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>> {
        let limit = limit.clamp(1, 10_000) as i64;
        let target = target.map(str::to_string);
        self.read(move |c| {
            let mut s = c
                .prepare_cached(
                    "SELECT id, at, actor, action, target, detail FROM audit
                     WHERE id > ?1 AND (?2 IS NULL OR target = ?2) ORDER BY id LIMIT ?3",
                )
                .map_err(map_err)?;
            let rows = s
                .query_map(params![after, target, limit], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, String>(5)?,
                    ))
                })
                .map_err(map_err)?;
            rows.map(|r| {
                let (id, at, actor, action, target, detail) = r.map_err(map_err)?;
                Ok(AuditRecord {
                    id,
                    at: from_micros(at)?,
                    actor,
                    action,
                    target,
                    detail: decode_json(&detail)?,
                })
            })
            .collect()
        })
        .await
    }

    async fn get_meta(&self, key: &str) -> Result<Option<String>> {
        let key = key.to_string();
        self.read(move |c| {
            c.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                .optional()
                .map_err(map_err)
        })
        .await
    }

    async fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        let (key, value) = (key.to_string(), value.to_string());
        self.write(move |c| {
            c.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )
            .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn heartbeat_node(
        &self,
        id: &str,
        info: serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let id = id.to_string();
        self.write(move |c| {
            c.execute(
                "INSERT INTO nodes (id, started_at, heartbeat_at, info) VALUES (?1, ?2, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at, info = excluded.info",
                params![id, micros(now), info.to_string()],
            )
            .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn forget_nodes(&self, stale_before: DateTime<Utc>) -> Result<u64> {
        self.write(move |c| {
            c.execute(
                "DELETE FROM nodes WHERE heartbeat_at < ?1",
                [micros(stale_before)],
            )
            .map(|n| n as u64)
            .map_err(map_err)
        })
        .await
    }

    async fn list_nodes(&self) -> Result<Vec<NodeRecord>> {
        self.read(|c| {
            let mut s = c
                .prepare("SELECT id, started_at, heartbeat_at, info FROM nodes ORDER BY id")
                .map_err(map_err)?;
            let rows = s
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, String>(3)?,
                    ))
                })
                .map_err(map_err)?;
            rows.map(|r| {
                let (id, s, h, info) = r.map_err(map_err)?;
                Ok(NodeRecord {
                    id,
                    started_at: from_micros(s)?,
                    heartbeat_at: from_micros(h)?,
                    info: decode_json(&info)?,
                })
            })
            .collect()
        })
        .await
    }

    async fn acquire_lease(
        &self,
        name: &str,
        owner: &str,
        now: DateTime<Utc>,
        ttl: chrono::Duration,
    ) -> Result<Option<Lease>> {
        let (name, owner) = (name.to_string(), owner.to_string());
        self.write(move |c| {
            c.query_row(
                "INSERT INTO leases (name, owner, epoch, expires_at) VALUES (?1, ?2, 1, ?3)
                 ON CONFLICT (name) DO UPDATE SET
                    epoch = leases.epoch + CASE WHEN leases.owner = excluded.owner THEN 0 ELSE 1 END,
                    owner = excluded.owner,
                    expires_at = excluded.expires_at
                 WHERE leases.owner = excluded.owner OR leases.expires_at <= ?4
                 RETURNING owner, epoch, expires_at",
                params![name, owner, micros(now + ttl), micros(now)],
                |r| lease_row(&name, r),
            )
            .optional()
            .map_err(map_err)?
            .map(lease_record)
            .transpose()
        })
        .await
    }

    async fn renew_lease(
        &self,
        lease: &Lease,
        now: DateTime<Utc>,
        ttl: chrono::Duration,
    ) -> Result<Lease> {
        let l = lease.clone();
        self.write(move |c| {
            let n = c
                .execute(
                    "UPDATE leases SET expires_at = ?4 WHERE name = ?1 AND owner = ?2 AND epoch = ?3",
                    params![l.name, l.owner, l.epoch, micros(now + ttl)],
                )
                .map_err(map_err)?;
            if n == 0 {
                return Err(Error::Fenced {
                    name: l.name,
                    epoch: l.epoch,
                });
            }
            Ok(Lease {
                expires_at: now + ttl,
                ..l
            })
        })
        .await
    }

    async fn release_lease(&self, lease: &Lease) -> Result<()> {
        let l = lease.clone();
        self.write(move |c| {
            c.execute(
                "UPDATE leases SET expires_at = 0 WHERE name = ?1 AND owner = ?2 AND epoch = ?3",
                params![l.name, l.owner, l.epoch],
            )
            .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn save_lease_state(&self, lease: &Lease, state: serde_json::Value) -> Result<()> {
        let l = lease.clone();
        self.write(move |c| {
            let n = c
                .execute(
                    "UPDATE leases SET state = ?4 WHERE name = ?1 AND owner = ?2 AND epoch = ?3",
                    params![l.name, l.owner, l.epoch, state.to_string()],
                )
                .map_err(map_err)?;
            if n == 0 {
                return Err(Error::Fenced {
                    name: l.name,
                    epoch: l.epoch,
                });
            }
            Ok(())
        })
        .await
    }

    async fn lease_state(&self, name: &str) -> Result<Option<serde_json::Value>> {
        let name = name.to_string();
        self.read(move |c| {
            let s: Option<Option<String>> = c
                .query_row("SELECT state FROM leases WHERE name = ?1", [name], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(map_err)?;
            s.flatten().map(|s| decode_json(&s)).transpose()
        })
        .await
    }

    async fn list_leases(&self) -> Result<Vec<Lease>> {
        self.read(|c| {
            let mut s = c
                .prepare("SELECT name, owner, epoch, expires_at FROM leases ORDER BY name")
                .map_err(map_err)?;
            let rows = s
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .map_err(map_err)?;
            rows.map(|r| lease_record(r.map_err(map_err)?)).collect()
        })
        .await
    }

    async fn create_job(&self, job: NewJob) -> Result<JobRecord> {
        self.write(move |c| {
            let row = c
                .query_row(
                    &format!(
                        "INSERT INTO jobs (kind, params, state, created_by, created_at) VALUES (?1, ?2, 'queued', ?3, ?4) RETURNING {JOB_COLS}"
                    ),
                    params![job.kind, job.params.to_string(), job.created_by, micros(job.created_at)],
                    job_row,
                )
                .map_err(map_err)?;
            let rec = job_record(row)?;
            audit_insert(c, &job_audit(&rec))?;
            Ok(rec)
        })
        .await
    }

    async fn get_job(&self, id: i64) -> Result<Option<JobRecord>> {
        self.read(move |c| {
            c.query_row(
                &format!("SELECT {JOB_COLS} FROM jobs WHERE id = ?1"),
                [id],
                job_row,
            )
            .optional()
            .map_err(map_err)?
            .map(job_record)
            .transpose()
        })
        .await
    }

    async fn list_jobs(&self, limit: usize) -> Result<Vec<JobRecord>> {
        let limit = limit.clamp(1, 1000) as i64;
        self.read(move |c| {
            let mut s = c
                .prepare(&format!(
                    "SELECT {JOB_COLS} FROM jobs ORDER BY id DESC LIMIT ?1"
                ))
                .map_err(map_err)?;
            let rows = s.query_map([limit], job_row).map_err(map_err)?;
            rows.map(|r| job_record(r.map_err(map_err)?)).collect()
        })
        .await
    }

    async fn claim_job(&self, node: &str, now: DateTime<Utc>) -> Result<Option<JobRecord>> {
        let node = node.to_string();
        self.write(move |c| {
            c.query_row(
                &format!(
                    "UPDATE jobs SET state = 'running', owner = ?1, started_at = ?2
                     WHERE id = (SELECT id FROM jobs WHERE state = 'queued' ORDER BY id LIMIT 1)
                     RETURNING {JOB_COLS}"
                ),
                params![node, micros(now)],
                job_row,
            )
            .optional()
            .map_err(map_err)?
            .map(job_record)
            .transpose()
        })
        .await
    }

    async fn update_job_progress(&self, id: i64, done: i64, total: Option<i64>) -> Result<()> {
        self.write(move |c| {
            c.execute(
                "UPDATE jobs SET done = ?2, total = COALESCE(?3, total) WHERE id = ?1",
                params![id, done, total],
            )
            .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn finish_job(
        &self,
        id: i64,
        state: JobState,
        message: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.write(move |c| {
            let n = c
                .execute(
                    "UPDATE jobs SET state = ?2, message = ?3, finished_at = ?4 WHERE id = ?1",
                    params![id, state.as_str(), message, micros(now)],
                )
                .map_err(map_err)?;
            if n == 0 {
                return Err(Error::NotFound(format!("job {id}")));
            }
            Ok(())
        })
        .await
    }

    async fn requeue_orphaned_jobs(
        &self,
        live_since: DateTime<Utc>,
        restarted: Option<&str>,
    ) -> Result<u64> {
        let restarted = restarted.map(str::to_string);
        self.write(move |c| {
            let n = c
                .execute(
                    "UPDATE jobs SET state = 'queued', owner = NULL, started_at = NULL
                     WHERE state = 'running'
                       AND (owner IS NULL OR owner = ?2 OR owner NOT IN (SELECT id FROM nodes WHERE heartbeat_at >= ?1))",
                    params![micros(live_since), restarted],
                )
                .map_err(map_err)?;
            Ok(n as u64)
        })
        .await
    }

    async fn insert_deliveries(
        &self,
        items: Vec<(i64, NewDelivery)>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Option<CreatedDelivery>>> {
        self.write(move |c| {
            let mut out = Vec::with_capacity(items.len());
            for (seq, d) in &items {
                let Some((source, id, ty, received)) = queue::event_attrs(c, *seq)? else {
                    return Err(Error::NotFound(format!("event {seq}")));
                };
                let attrs = queue::EventAttrs {
                    source: &source,
                    id: &id,
                    ty: &ty,
                    received,
                    created: micros(now),
                };
                out.push(queue::insert(c, *seq, &attrs, d)?);
            }
            Ok(out)
        })
        .await
    }

    async fn claim_deliveries(&self, req: ClaimRequest) -> Result<Vec<DeliveryRecord>> {
        self.write(move |c| queue::claim(c, &req)).await
    }

    async fn complete_attempt(&self, result: AttemptResult) -> Result<bool> {
        self.write(move |c| queue::complete(c, &result)).await
    }

    async fn release_deliveries(&self, ids: Vec<i64>, owner: &str) -> Result<u64> {
        let owner = owner.to_string();
        self.write(move |c| queue::release(c, &ids, &owner)).await
    }

    async fn extend_delivery_lease(
        &self,
        id: i64,
        owner: &str,
        until: DateTime<Utc>,
    ) -> Result<bool> {
        let owner = owner.to_string();
        self.write(move |c| queue::extend(c, id, &owner, until))
            .await
    }

    async fn get_delivery(&self, id: i64) -> Result<Option<DeliveryRecord>> {
        self.read(move |c| queue::get(c, id)).await
    }

    async fn list_deliveries(&self, filter: &DeliveryFilter) -> Result<Vec<DeliveryRecord>> {
        let filter = filter.clone();
        self.read(move |c| queue::list(c, &filter)).await
    }

    async fn list_attempts(&self, delivery_id: i64) -> Result<Vec<AttemptRecord>> {
        self.read(move |c| queue::attempts(c, delivery_id)).await
    }

    async fn delivery_stats(&self) -> Result<Vec<DeliveryStat>> {
        self.read(queue::stats).await
    }

    async fn replay_delivery(&self, replay: Replay) -> Result<DeliveryRecord> {
        self.write(move |c| queue::replay(c, &replay, audit_insert))
            .await
    }

    async fn discard_delivery(
        &self,
        id: i64,
        actor: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<DeliveryRecord> {
        let (actor, reason) = (actor.to_string(), reason.to_string());
        self.write(move |c| queue::discard(c, id, &actor, &reason, at, audit_insert))
            .await
    }

    async fn destination_pauses(&self) -> Result<Vec<DestinationPause>> {
        self.read(queue::pauses).await
    }

    async fn resume_destination(
        &self,
        destination: &str,
        actor: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<bool> {
        let (destination, actor, reason) = (
            destination.to_string(),
            actor.to_string(),
            reason.to_string(),
        );
        self.write(move |c| queue::resume(c, &destination, &actor, &reason, at, audit_insert))
            .await
    }

    // ---- workflow monitor (statements in sqlite_monitor.rs) ----

    async fn monitor_find(&self, aliases: Vec<WorkflowAlias>) -> Result<Vec<InstanceRecord>> {
        if aliases.is_empty() {
            return Ok(Vec::new());
        }
        self.read(move |c| wf::find(c, &aliases)).await
    }

    async fn monitor_due(&self, until: DateTime<Utc>, limit: usize) -> Result<Vec<InstanceRecord>> {
        let limit = limit.clamp(1, 10_000) as i64;
        self.read(move |c| wf::due(c, until, limit)).await
    }

    async fn monitor_next_due(&self) -> Result<Option<DateTime<Utc>>> {
        self.read(wf::next_due).await
    }

    async fn monitor_commit(&self, commit: MonitorCommit) -> Result<MonitorCommitted> {
        self.write(move |c| wf::commit(c, &commit)).await
    }

    async fn workflow_versions(&self) -> Result<Vec<WorkflowVersion>> {
        self.read(wf::versions).await
    }

    async fn get_instance(&self, id: i64) -> Result<Option<InstanceRecord>> {
        self.read(move |c| wf::get(c, id)).await
    }

    async fn list_instances(&self, filter: &InstanceFilter) -> Result<Vec<InstanceRecord>> {
        let filter = filter.clone();
        let limit = filter.limit.clamp(1, 10_000) as i64;
        self.read(move |c| wf::list(c, &filter, limit)).await
    }

    async fn instances_by_key(
        &self,
        value: &str,
        workflow: Option<&str>,
        limit: usize,
    ) -> Result<Vec<InstanceRecord>> {
        let (value, workflow) = (value.to_string(), workflow.map(str::to_string));
        let limit = limit.clamp(1, 10_000) as i64;
        self.read(move |c| wf::by_key(c, &value, workflow.as_deref(), limit))
            .await
    }

    async fn list_findings(&self, filter: &FindingFilter) -> Result<Vec<FindingRecord>> {
        let filter = filter.clone();
        let limit = filter.limit.clamp(1, 10_000) as i64;
        self.read(move |c| wf::findings(c, &filter, limit)).await
    }

    async fn instance_counts(&self) -> Result<Vec<InstanceCount>> {
        self.read(wf::counts).await
    }

    async fn closed_counts(
        &self,
        workflow: &str,
        since: DateTime<Utc>,
        bucket_seconds: i64,
    ) -> Result<Vec<ClosedCount>> {
        let workflow = workflow.to_string();
        self.read(move |c| wf::closed_counts(c, &workflow, since, bucket_seconds))
            .await
    }

    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>> {
        let filter = filter.clone();
        let limit = filter.limit.clamp(1, 10_000) as i64;
        self.read(move |c| wf::list_runs(c, &filter, limit)).await
    }

    async fn get_run(&self, id: i64) -> Result<Option<RunRecord>> {
        self.read(move |c| wf::get_run(c, id)).await
    }

    async fn archive_instances(&self, closed_before: DateTime<Utc>, limit: usize) -> Result<u64> {
        let limit = limit.clamp(1, 100_000) as i64;
        self.write(move |c| wf::archive(c, closed_before, limit))
            .await
    }

    async fn instances_by_ids(&self, ids: Vec<i64>) -> Result<Vec<InstanceRecord>> {
        self.read(move |c| wf::by_ids(c, &ids)).await
    }

    async fn alerts_commit(&self, commit: AlertsCommit) -> Result<()> {
        self.write(move |c| al::commit(c, &commit)).await
    }

    async fn list_alerts(&self, filter: &AlertFilter) -> Result<Vec<AlertRecord>> {
        let filter = filter.clone();
        self.read(move |c| al::list_alerts(c, &filter)).await
    }

    async fn get_alert(&self, fingerprint: &str) -> Result<Option<AlertRecord>> {
        let fingerprint = fingerprint.to_string();
        self.read(move |c| al::get_alert(c, &fingerprint)).await
    }

    async fn alert_groups(&self) -> Result<Vec<GroupRow>> {
        self.read(al::groups).await
    }

    async fn get_incident(&self, id: i64) -> Result<Option<IncidentRecord>> {
        self.read(move |c| al::get_incident(c, id)).await
    }

    async fn list_incidents(&self, filter: &IncidentFilter) -> Result<Vec<IncidentRecord>> {
        let filter = filter.clone();
        self.read(move |c| al::list_incidents(c, &filter)).await
    }

    async fn incident_timeline(&self, id: i64) -> Result<Vec<IncidentEntry>> {
        self.read(move |c| al::timeline(c, id)).await
    }

    async fn incident_action(&self, action: IncidentAction) -> Result<IncidentRecord> {
        self.write(move |c| al::action(c, &action)).await
    }

    async fn create_silence(&self, silence: NewSilence) -> Result<SilenceRecord> {
        self.write(move |c| al::create_silence(c, &silence)).await
    }

    async fn list_silences(&self, active_at: Option<DateTime<Utc>>) -> Result<Vec<SilenceRecord>> {
        self.read(move |c| al::list_silences(c, active_at)).await
    }

    async fn expire_silence(
        &self,
        id: i64,
        actor: &str,
        at: DateTime<Utc>,
    ) -> Result<SilenceRecord> {
        let actor = actor.to_string();
        self.write(move |c| al::expire_silence(c, id, &actor, at))
            .await
    }

    async fn attempt_stats(&self, since: DateTime<Utc>) -> Result<Vec<AttemptStat>> {
        self.read(move |c| al::attempt_stats(c, since)).await
    }
}
