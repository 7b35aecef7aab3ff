//! The shared backend: PostgreSQL, for several Switchyard nodes on one database.
//!
//! Every call is one transaction on a pooled connection; PostgreSQL's own WAL flush
//! batching gives concurrent appends their group commit. Work items are claimed with
//! `FOR UPDATE SKIP LOCKED`; singletons use lease rows with fencing epochs.
//!
//! The event log's order: `seq` comes from a sequence at insert time but becomes visible
//! at commit, so a plain `seq > cursor` reader can pass an event that commits later with a
//! smaller `seq`. Each row therefore also records its transaction id (`tx`, a 64-bit xid8),
//! and readers only return rows whose transaction is older than the oldest transaction
//! still running (`pg_snapshot_xmin`). Ordered by `(tx, seq)`, nothing can ever commit
//! behind a position a reader has passed.

use crate::postgres_alerts as al;
use crate::postgres_monitor as wf;
use crate::postgres_queue as queue;
use crate::util::*;
use crate::*;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use std::collections::HashMap;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        r#"
CREATE TABLE events (
    seq BIGSERIAL PRIMARY KEY,
    tx BIGINT NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
    source TEXT NOT NULL,
    event_id TEXT NOT NULL,
    type TEXT NOT NULL,
    subject TEXT,
    time TEXT,
    received_at BIGINT NOT NULL,
    envelope TEXT NOT NULL,
    UNIQUE (source, event_id)
);
CREATE INDEX events_position ON events (tx, seq);
CREATE INDEX events_type ON events (type, seq);
CREATE INDEX events_received ON events (received_at);
CREATE TABLE tokens (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    revoked_at BIGINT
);
CREATE UNIQUE INDEX tokens_active_name ON tokens (name) WHERE revoked_at IS NULL;
CREATE TABLE audit (
    id BIGSERIAL PRIMARY KEY,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE nodes (
    id TEXT PRIMARY KEY,
    started_at BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL,
    info TEXT NOT NULL
);
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    state TEXT
);
CREATE TABLE jobs (
    id BIGSERIAL PRIMARY KEY,
    kind TEXT NOT NULL,
    params TEXT NOT NULL,
    state TEXT NOT NULL,
    done BIGINT NOT NULL DEFAULT 0,
    total BIGINT,
    message TEXT,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT,
    owner TEXT
);
CREATE INDEX jobs_state ON jobs (state, id);
"#,
    ),
    (
        2,
        r#"
CREATE TABLE event_keys (
    seq BIGINT NOT NULL REFERENCES events (seq) ON DELETE CASCADE,
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
ALTER TABLE events ADD COLUMN payload_purged BOOLEAN NOT NULL DEFAULT false;
"#,
    ),
    (
        4,
        r#"
ALTER TABLE events ADD COLUMN lag_ms BIGINT;
"#,
    ),
    (
        5,
        r#"
CREATE TABLE deliveries (
    id BIGSERIAL PRIMARY KEY,
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
    hold_on_dead BOOLEAN NOT NULL DEFAULT FALSE,
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
    id BIGSERIAL PRIMARY KEY,
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
    id BIGSERIAL PRIMARY KEY,
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
    id BIGSERIAL PRIMARY KEY,
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
    id BIGSERIAL PRIMARY KEY,
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
    id BIGSERIAL PRIMARY KEY,
    incident_id BIGINT NOT NULL,
    at BIGINT NOT NULL,
    kind TEXT NOT NULL,
    actor TEXT,
    text TEXT NOT NULL
);
CREATE INDEX incident_entries_incident ON incident_entries (incident_id, id);
CREATE TABLE silences (
    id BIGSERIAL PRIMARY KEY,
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

/// Serialises migrations between nodes starting at once (a transaction-scoped lock).
const MIGRATION_LOCK: i64 = 0x5357_5944_4d49_4752; // "SWYDMIGR"

pub struct PgStore {
    pool: Pool,
    /// Appends waiting for a group commit; when full, ingest answers 429.
    appends: std::sync::Mutex<Option<mpsc::Sender<AppendRequest>>>,
    appenders: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    closed: std::sync::atomic::AtomicBool,
}

/// Appenders committing groups concurrently: while one commits, the next collects.
const APPENDERS: usize = 2;
/// Most requests one group commit takes.
const MAX_GROUP: usize = 512;

/// Per event: its outcome and the deliveries created for it (none for a duplicate).
type Routed = Vec<(Appended, Vec<CreatedDelivery>)>;

struct AppendRequest {
    events: Vec<NewEvent>,
    reply: oneshot::Sender<Result<Routed>>,
}

/// Takes every waiting append request, commits them in one transaction, answers each.
/// If a group fails, each request is retried alone, so one bad request cannot fail others.
async fn appender(
    pool: Pool,
    rx: std::sync::Arc<tokio::sync::Mutex<mpsc::Receiver<AppendRequest>>>,
) {
    loop {
        let mut group = Vec::new();
        {
            let mut rx = rx.lock().await;
            match rx.recv().await {
                Some(r) => group.push(r),
                None => return,
            }
            drain_group(&mut rx, &mut group, MAX_GROUP);
        }
        let started = std::time::Instant::now();
        let events: Vec<&NewEvent> = group.iter().flat_map(|r| r.events.iter()).collect();
        let result = append_tx(&pool, &events, None).await;
        metrics::histogram!("switchyard_store_commit_seconds")
            .record(started.elapsed().as_secs_f64());
        match result {
            Ok(mut out) => {
                for r in group {
                    let rest = out.split_off(r.events.len());
                    let _ = r.reply.send(Ok(out));
                    out = rest;
                }
            }
            Err(e) if group.len() == 1 => {
                let r = group.pop().expect("one request");
                let _ = r.reply.send(Err(e));
            }
            Err(e) => {
                tracing::warn!(error = %e, requests = group.len(), "group commit failed; retrying each request alone");
                for r in group {
                    let refs: Vec<&NewEvent> = r.events.iter().collect();
                    let _ = r.reply.send(append_tx(&pool, &refs, None).await);
                }
            }
        }
    }
}

pub(crate) fn map_err(e: tokio_postgres::Error) -> Error {
    match e.code() {
        Some(c) if *c == SqlState::UNIQUE_VIOLATION => Error::Conflict(e.to_string()),
        _ => Error::Unavailable(match e.as_db_error() {
            Some(db) => format!("{}: {}", db.code().code(), db.message()),
            None => e.to_string(),
        }),
    }
}

fn pool_err(e: deadpool_postgres::PoolError) -> Error {
    Error::Unavailable(format!("no database connection: {e}"))
}

/// A source scope as a PostgreSQL condition, its parameters numbered after `lead`'s
/// (`$1`…); the scope's values are borrowed from `values`, which the caller keeps alive.
fn pg_scope<'a>(
    scope: &SourceScope,
    lead: Vec<&'a (dyn ToSql + Sync)>,
    values: &'a mut Vec<String>,
) -> (String, Vec<&'a (dyn ToSql + Sync)>) {
    let (cond, scope_params) = scope.sql(
        lead.len() + 1,
        |i| format!("${i}"),
        |i| format!("starts_with(source, ${i})"),
    );
    *values = scope_params;
    let mut params = lead;
    params.extend(values.iter().map(|v| v as &(dyn ToSql + Sync)));
    (cond, params)
}

/// Checks a PostgreSQL URL's syntax and parameters without connecting.
pub fn check_url(url: &str) -> Result<()> {
    let (url, _) = split_schema(url)?;
    url.parse::<tokio_postgres::Config>()
        .map(|_| ())
        .map_err(|e| Error::Url(format!("{e}")))
}

/// Splits our `schema=` parameter off a PostgreSQL URL.
fn split_schema(url: &str) -> Result<(String, Option<String>)> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_string(), None));
    };
    let mut schema = None;
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("schema", v)) => {
                if v.is_empty()
                    || !v
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                {
                    return Err(Error::Url(format!(
                        "schema \"{v}\" must be lower-case letters, digits and _"
                    )));
                }
                schema = Some(v.to_string());
            }
            _ => rest.push(pair),
        }
    }
    let url = if rest.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    Ok((url, schema))
}

impl PgStore {
    pub async fn open(url: &str, opts: &StoreOptions) -> Result<Self> {
        let (url, schema) = split_schema(url)?;
        let mut cfg: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| Error::Url(e.to_string()))?;
        if let Some(p) = &opts.password {
            cfg.password(p);
        }
        cfg.connect_timeout(std::time::Duration::from_secs(10));
        cfg.application_name("switchyard");
        if let Some(s) = &schema {
            let (client, conn) = cfg.connect(NoTls).await.map_err(map_err)?;
            let task = tokio::spawn(conn);
            client
                .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS \"{s}\""))
                .await
                .map_err(map_err)?;
            drop(client);
            let _ = task.await;
            cfg.options(format!("-c search_path={s}"));
        }
        let mgr = Manager::from_config(
            cfg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(opts.pool_size.max(2) as usize)
            .build()
            .map_err(|e| Error::Unavailable(e.to_string()))?;
        let store = PgStore {
            pool,
            appends: std::sync::Mutex::new(None),
            appenders: std::sync::Mutex::new(Vec::new()),
            closed: std::sync::atomic::AtomicBool::new(false),
        };
        store.migrate().await?;
        let (tx, rx) = mpsc::channel(opts.writer_queue.max(1));
        let rx = std::sync::Arc::new(tokio::sync::Mutex::new(rx));
        let handles = (0..APPENDERS)
            .map(|_| tokio::spawn(appender(store.pool.clone(), rx.clone())))
            .collect();
        *store.appends.lock().expect("appends lock") = Some(tx);
        *store.appenders.lock().expect("appenders lock") = handles;
        Ok(store)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        if self.closed.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(Error::Closed);
        }
        self.pool.get().await.map_err(pool_err)
    }

    async fn migrate(&self) -> Result<()> {
        let mut client = self.client().await?;
        let m = |e: tokio_postgres::Error| Error::Migration(e.to_string());
        let tx = client.transaction().await.map_err(m)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(m)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
        )
        .await
        .map_err(m)?;
        let current: i64 = tx
            .query_one(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                &[],
            )
            .await
            .map_err(m)?
            .get(0);
        let latest = MIGRATIONS.last().map_or(0, |m| m.0);
        if current > latest {
            return Err(Error::Migration(format!(
                "the database is at schema version {current}, newer than this binary's {latest}; upgrade Switchyard"
            )));
        }
        for (version, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
            tx.batch_execute(sql)
                .await
                .map_err(|e| Error::Migration(format!("version {version}: {e}")))?;
            tx.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
                &[version, &micros(Utc::now())],
            )
            .await
            .map_err(m)?;
            tracing::info!(version, "applied PostgreSQL migration");
        }
        tx.commit().await.map_err(m)
    }
}

async fn append_tx(
    pool: &Pool,
    events: &[&NewEvent],
    hold: Option<(oneshot::Sender<()>, oneshot::Receiver<()>)>,
) -> Result<Routed> {
    let mut client = pool.get().await.map_err(pool_err)?;
    let tx = client.transaction().await.map_err(map_err)?;
    // Before any row is written: the ordering keys of the deliveries (see postgres_queue).
    queue::lock_keys(&tx, events.iter().flat_map(|e| e.deliveries.iter())).await?;
    let mut sources = Vec::with_capacity(events.len());
    let mut ids = Vec::with_capacity(events.len());
    let mut types = Vec::with_capacity(events.len());
    let mut subjects = Vec::with_capacity(events.len());
    let mut times = Vec::with_capacity(events.len());
    let mut received = Vec::with_capacity(events.len());
    let mut envelopes = Vec::with_capacity(events.len());
    let mut lags: Vec<Option<i64>> = Vec::with_capacity(events.len());
    for e in events {
        sources.push(e.event.source.as_str());
        ids.push(e.event.id.as_str());
        types.push(e.event.ty.as_str());
        subjects.push(e.event.subject.as_deref());
        times.push(e.event.time.as_deref());
        received.push(micros(e.received_at));
        envelopes.push(envelope(&e.event));
        lags.push(lag_ms(e));
    }
    let stmt = tx
            .prepare_cached(
                "INSERT INTO events (source, event_id, type, subject, time, received_at, envelope, lag_ms)
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::text[], $8::bigint[])
                 ON CONFLICT (source, event_id) DO NOTHING
                 RETURNING seq, source, event_id",
            )
            .await
            .map_err(map_err)?;
    let params: [&(dyn ToSql + Sync); 8] = [
        &sources, &ids, &types, &subjects, &times, &received, &envelopes, &lags,
    ];
    let rows = tx.query(&stmt, &params).await.map_err(map_err)?;
    let mut inserted: HashMap<(String, String), i64> = rows
        .iter()
        .map(|r| {
            (
                (r.get::<_, String>(1), r.get::<_, String>(2)),
                r.get::<_, i64>(0),
            )
        })
        .collect();
    let mut out = Vec::with_capacity(events.len());
    let mut missing = Vec::new();
    for (i, e) in events.iter().enumerate() {
        let key = (e.event.source.clone(), e.event.id.clone());
        match inserted.remove(&key) {
            Some(seq) => out.push(Some(Appended::Stored { seq })),
            None => {
                out.push(None);
                missing.push(i);
            }
        }
    }
    if !missing.is_empty() {
        let ms: Vec<&str> = missing.iter().map(|&i| sources[i]).collect();
        let mi: Vec<&str> = missing.iter().map(|&i| ids[i]).collect();
        let rows = tx
            .query(
                "SELECT e.seq, e.source, e.event_id FROM events e
                     JOIN UNNEST($1::text[], $2::text[]) AS k(source, event_id)
                       ON e.source = k.source AND e.event_id = k.event_id",
                &[&ms, &mi],
            )
            .await
            .map_err(map_err)?;
        let existing: HashMap<(String, String), i64> = rows
            .iter()
            .map(|r| {
                (
                    (r.get::<_, String>(1), r.get::<_, String>(2)),
                    r.get::<_, i64>(0),
                )
            })
            .collect();
        for i in missing {
            let key = (events[i].event.source.clone(), events[i].event.id.clone());
            let seq = *existing.get(&key).ok_or_else(|| {
                Error::Unavailable("duplicate event vanished during insert".into())
            })?;
            out[i] = Some(Appended::Duplicate { seq });
        }
    }
    let (mut kseq, mut kname, mut kvalue) = (Vec::new(), Vec::new(), Vec::new());
    for (e, a) in events.iter().zip(&out) {
        if let Some(Appended::Stored { seq }) = a {
            for k in &e.keys {
                kseq.push(*seq);
                kname.push(k.name.as_str());
                kvalue.push(k.value.as_str());
            }
        }
    }
    if !kseq.is_empty() {
        let stmt = tx
            .prepare_cached(
                "INSERT INTO event_keys (seq, name, value)
                 SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[])
                 ON CONFLICT DO NOTHING",
            )
            .await
            .map_err(map_err)?;
        tx.execute(&stmt, &[&kseq, &kname, &kvalue])
            .await
            .map_err(map_err)?;
    }
    // The outbox: deliveries of the new events, in this same transaction.
    let mut items = Vec::new();
    for (e, a) in events.iter().zip(&out) {
        if let Some(Appended::Stored { seq }) = a {
            items.extend(e.deliveries.iter().map(|d| queue::Item {
                seq: *seq,
                source: &e.event.source,
                id: &e.event.id,
                ty: &e.event.ty,
                received: micros(e.received_at),
                created: micros(e.received_at),
                delivery: d,
            }));
        }
    }
    let mut created = queue::insert(&tx, &items, false).await?.into_iter();
    if let Some((inserted_tx, release)) = hold {
        let _ = inserted_tx.send(());
        let _ = release.await;
    }
    tx.commit().await.map_err(map_err)?;
    Ok(events
        .iter()
        .zip(out)
        .map(|(e, o)| {
            let o = o.expect("every event resolved");
            let mine = match o {
                Appended::Stored { .. } => created
                    .by_ref()
                    .take(e.deliveries.len())
                    .flatten()
                    .collect(),
                Appended::Duplicate { .. } => Vec::new(),
            };
            (o, mine)
        })
        .collect())
}

fn event_from_row(r: &tokio_postgres::Row) -> Result<StoredEvent> {
    let seq: i64 = r.get(0);
    Ok(StoredEvent {
        seq,
        position: LogPosition { tx: r.get(1), seq },
        received_at: from_micros(r.get(2))?,
        event: decode_envelope(r.get::<_, &str>(3))?,
        keys: Vec::new(),
        payload_purged: r.get(4),
    })
}

/// Rows to events, with their business keys read in one more query.
async fn events_with_keys(
    c: &deadpool_postgres::Object,
    rows: &[tokio_postgres::Row],
) -> Result<Vec<StoredEvent>> {
    let mut events = rows
        .iter()
        .map(event_from_row)
        .collect::<Result<Vec<_>>>()?;
    if events.is_empty() {
        return Ok(events);
    }
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    let keys = c
        .query(
            "SELECT seq, name, value FROM event_keys WHERE seq = ANY($1) ORDER BY seq, name, value",
            &[&seqs],
        )
        .await
        .map_err(map_err)?;
    let mut by_seq: HashMap<i64, Vec<BusinessKey>> = HashMap::new();
    for k in keys {
        by_seq.entry(k.get(0)).or_default().push(BusinessKey::new(
            k.get::<_, String>(1),
            k.get::<_, String>(2),
        ));
    }
    for e in &mut events {
        e.keys = by_seq.remove(&e.seq).unwrap_or_default();
    }
    Ok(events)
}

const TOKEN_COLS: &str = "id, name, role, hash, created_at, created_by, revoked_at";
const JOB_COLS: &str = "id, kind, params, state, done, total, message, created_by, created_at, started_at, finished_at, owner";

fn token_from_row(r: &tokio_postgres::Row) -> Result<TokenRecord> {
    Ok(TokenRecord {
        id: r.get(0),
        name: r.get(1),
        role: parse_role(r.get(2))?,
        hash: r.get(3),
        created_at: from_micros(r.get(4))?,
        created_by: r.get(5),
        revoked_at: opt_from_micros(r.get(6))?,
    })
}

fn job_from_row(r: &tokio_postgres::Row) -> Result<JobRecord> {
    Ok(JobRecord {
        id: r.get(0),
        kind: r.get(1),
        params: decode_json(r.get(2))?,
        state: JobState::parse(r.get(3))?,
        done: r.get(4),
        total: r.get(5),
        message: r.get(6),
        created_by: r.get(7),
        created_at: from_micros(r.get(8))?,
        started_at: opt_from_micros(r.get(9))?,
        finished_at: opt_from_micros(r.get(10))?,
        owner: r.get(11),
    })
}

fn lease_from_row(r: &tokio_postgres::Row) -> Result<Lease> {
    Ok(Lease {
        name: r.get(0),
        owner: r.get(1),
        epoch: r.get(2),
        expires_at: from_micros(r.get(3))?,
    })
}

pub(crate) async fn audit_insert(
    c: &impl deadpool_postgres::GenericClient,
    e: &NewAudit,
) -> Result<i64> {
    Ok(c
        .query_one(
            "INSERT INTO audit (at, actor, action, target, detail) VALUES ($1, $2, $3, $4, $5) RETURNING id",
            &[&micros(e.at), &e.actor, &e.action, &e.target, &e.detail.to_string()],
        )
        .await
        .map_err(map_err)?
        .get(0))
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    async fn check_writable(&self) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO meta (key, value) VALUES ('ready_probe', '1') ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[],
        )
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn close(&self) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        // Appenders drain what is queued, then stop; only then close the pool.
        drop(self.appends.lock().expect("appends lock").take());
        let handles = std::mem::take(&mut *self.appenders.lock().expect("appenders lock"));
        for h in handles {
            let _ = h.await;
        }
        self.pool.close();
    }

    async fn append_routed(
        &self,
        events: Vec<NewEvent>,
    ) -> Result<Vec<(Appended, Vec<CreatedDelivery>)>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let sender = self
            .appends
            .lock()
            .expect("appends lock")
            .clone()
            .ok_or(Error::Closed)?;
        let (reply, rx) = oneshot::channel();
        match sender.try_send(AppendRequest { events, reply }) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => return Err(Error::Saturated),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(Error::Closed),
        }
        rx.await.map_err(|_| {
            Error::Unavailable(
                "the append was dropped before it committed; nothing was stored".into(),
            )
        })?
    }

    async fn append_events_held(
        &self,
        events: Vec<NewEvent>,
        inserted: oneshot::Sender<()>,
        release: oneshot::Receiver<()>,
    ) -> Result<Vec<Appended>> {
        if self.closed.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(Error::Closed);
        }
        let refs: Vec<&NewEvent> = events.iter().collect();
        Ok(append_tx(&self.pool, &refs, Some((inserted, release)))
            .await?
            .into_iter()
            .map(|(a, _)| a)
            .collect())
    }

    async fn get_event(&self, seq: i64) -> Result<Option<StoredEvent>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT seq, tx, received_at, envelope, payload_purged FROM events WHERE seq = $1",
                &[&seq],
            )
            .await
            .map_err(map_err)?;
        Ok(events_with_keys(&c, &rows).await?.pop())
    }

    async fn find_event(&self, source: &str, id: &str) -> Result<Option<StoredEvent>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT seq, tx, received_at, envelope, payload_purged FROM events WHERE source = $1 AND event_id = $2",
                &[&source, &id],
            )
            .await
            .map_err(map_err)?;
        Ok(events_with_keys(&c, &rows).await?.pop())
    }

    async fn read_log(
        &self,
        after: LogPosition,
        limit: usize,
        filter: &EventFilter,
    ) -> Result<LogPage> {
        let c = self.client().await?;
        let limit = limit.clamp(1, 10_000) as i64;
        let stmt = c
            .prepare_cached(
                "SELECT seq, tx, received_at, envelope, payload_purged FROM events
                 WHERE (tx, seq) > ($1, $2)
                   AND tx < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
                   AND ($3::text IS NULL OR source = $3)
                   AND ($4::text IS NULL OR type = $4)
                   AND ($5::text IS NULL OR subject = $5)
                   AND ($7::text IS NULL OR seq IN (SELECT seq FROM event_keys
                                                    WHERE value = $7 AND ($8::text IS NULL OR name = $8)))
                   AND ($9::bigint IS NULL OR received_at >= $9)
                   AND ($10::bigint IS NULL OR received_at < $10)
                 ORDER BY tx, seq LIMIT $6",
            )
            .await
            .map_err(map_err)?;
        let rows = c
            .query(
                &stmt,
                &[
                    &after.tx,
                    &after.seq,
                    &filter.source,
                    &filter.ty,
                    &filter.subject,
                    &limit,
                    &filter.key,
                    &filter.key_name,
                    &filter.since.map(micros),
                    &filter.until.map(micros),
                ],
            )
            .await
            .map_err(map_err)?;
        let events = events_with_keys(&c, &rows).await?;
        let next = events.last().map_or(after, |e| e.position);
        Ok(LogPage { events, next })
    }

    async fn count_events(&self) -> Result<i64> {
        let c = self.client().await?;
        Ok(c.query_one("SELECT COUNT(*) FROM events", &[])
            .await
            .map_err(map_err)?
            .get(0))
    }

    async fn purge_events(
        &self,
        before: DateTime<Utc>,
        scope: &SourceScope,
        limit: usize,
    ) -> Result<u64> {
        let c = self.client().await?;
        let limit = limit.clamp(1, 100_000) as i64;
        let before = micros(before);
        let mut values = Vec::new();
        let (cond, params) = pg_scope(scope, vec![&before, &limit], &mut values);
        // The events' finished deliveries and their attempts go with them (one statement);
        // dead letters and pending deliveries stay (they carry their own payload).
        let row = c
            .query_one(
                &format!(
                    "WITH gone AS (
                        DELETE FROM events WHERE seq IN (
                            SELECT seq FROM events WHERE received_at < $1 AND {cond} ORDER BY seq LIMIT $2)
                        RETURNING seq),
                     finished AS (
                        DELETE FROM deliveries WHERE event_seq IN (SELECT seq FROM gone)
                          AND state IN ('delivered', 'filtered', 'discarded')
                        RETURNING id),
                     attempts AS (
                        DELETE FROM delivery_attempts WHERE delivery_id IN (SELECT id FROM finished))
                     SELECT COUNT(*) FROM gone"
                ),
                &params,
            )
            .await
            .map_err(map_err)?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    async fn count_events_before(&self, before: DateTime<Utc>, scope: &SourceScope) -> Result<i64> {
        let c = self.client().await?;
        let before = micros(before);
        let mut values = Vec::new();
        let (cond, params) = pg_scope(scope, vec![&before], &mut values);
        Ok(c.query_one(
            &format!("SELECT COUNT(*) FROM events WHERE received_at < $1 AND {cond}"),
            &params,
        )
        .await
        .map_err(map_err)?
        .get(0))
    }

    async fn purge_payloads(
        &self,
        before: DateTime<Utc>,
        scope: &SourceScope,
        limit: usize,
    ) -> Result<u64> {
        let c = self.client().await?;
        let limit = limit.clamp(1, 100_000) as i64;
        let before = micros(before);
        let mut values = Vec::new();
        let (cond, params) = pg_scope(scope, vec![&before, &limit], &mut values);
        c.execute(
            &format!(
                "UPDATE events SET envelope = ((envelope::jsonb - 'data') - 'data_base64')::text,
                                   payload_purged = true
                 WHERE seq IN (SELECT seq FROM events
                               WHERE received_at < $1 AND NOT payload_purged AND {cond}
                               ORDER BY seq LIMIT $2)"
            ),
            &params,
        )
        .await
        .map_err(map_err)
    }

    async fn source_activity(&self, since: DateTime<Utc>) -> Result<Vec<SourceActivity>> {
        let c = self.client().await?;
        c.query(
            "SELECT source, COUNT(*), AVG(lag_ms)::float8, MAX(lag_ms) FROM events
             WHERE received_at >= $1 GROUP BY source ORDER BY source",
            &[&micros(since)],
        )
        .await
        .map_err(map_err)?
        .iter()
        .map(|r| {
            Ok(SourceActivity {
                source: r.get(0),
                events: r.get(1),
                avg_lag_ms: r.get(2),
                max_lag_ms: r.get(3),
            })
        })
        .collect()
    }

    async fn usage_by_source(&self) -> Result<Vec<SourceUsage>> {
        let c = self.client().await?;
        c.query(
            "SELECT source, COUNT(*), COUNT(*) FILTER (WHERE payload_purged),
                    COALESCE(SUM(octet_length(envelope)), 0)::bigint, MAX(received_at)
             FROM events GROUP BY source ORDER BY source",
            &[],
        )
        .await
        .map_err(map_err)?
        .iter()
        .map(|r| {
            Ok(SourceUsage {
                source: r.get(0),
                events: r.get(1),
                payloads_purged: r.get(2),
                bytes: r.get(3),
                last_received_at: r
                    .get::<_, Option<i64>>(4)
                    .and_then(DateTime::from_timestamp_micros),
            })
        })
        .collect()
    }

    async fn log_head(&self) -> Result<LogPosition> {
        let c = self.client().await?;
        Ok(c.query_opt(
            "SELECT tx, seq FROM events
             WHERE tx < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
             ORDER BY tx DESC, seq DESC LIMIT 1",
            &[],
        )
        .await
        .map_err(map_err)?
        .map_or(LogPosition::START, |r| LogPosition {
            tx: r.get(0),
            seq: r.get(1),
        }))
    }

    async fn create_token(&self, token: NewToken, actor: &str) -> Result<TokenRecord> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(map_err)?;
        let row = tx
            .query_one(
                &format!(
                    "INSERT INTO tokens (name, role, hash, created_at, created_by) VALUES ($1, $2, $3, $4, $5) RETURNING {TOKEN_COLS}"
                ),
                &[&token.name, &token.role.as_str(), &token.hash, &micros(token.created_at), &actor],
            )
            .await
            .map_err(|e| match map_err(e) {
                Error::Conflict(_) => Error::Conflict(format!(
                    "an active token named \"{}\" already exists",
                    token.name
                )),
                other => other,
            })?;
        let rec = token_from_row(&row)?;
        audit_insert(
            &tx,
            &NewAudit {
                at: token.created_at,
                actor: actor.to_string(),
                action: "token.create".into(),
                target: format!("token:{}", rec.id),
                detail: serde_json::json!({"name": rec.name, "role": rec.role}),
            },
        )
        .await?;
        tx.commit().await.map_err(map_err)?;
        Ok(rec)
    }

    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>> {
        let c = self.client().await?;
        c.query_opt(
            &format!("SELECT {TOKEN_COLS} FROM tokens WHERE hash = $1"),
            &[&hash],
        )
        .await
        .map_err(map_err)?
        .map(|r| token_from_row(&r))
        .transpose()
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>> {
        let c = self.client().await?;
        c.query(&format!("SELECT {TOKEN_COLS} FROM tokens ORDER BY id"), &[])
            .await
            .map_err(map_err)?
            .iter()
            .map(token_from_row)
            .collect()
    }

    async fn revoke_token(&self, id: i64, actor: &str, at: DateTime<Utc>) -> Result<TokenRecord> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(map_err)?;
        let row = tx
            .query_opt(
                &format!(
                    "UPDATE tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL RETURNING {TOKEN_COLS}"
                ),
                &[&id, &micros(at)],
            )
            .await
            .map_err(map_err)?
            .ok_or_else(|| Error::NotFound(format!("active token {id}")))?;
        let rec = token_from_row(&row)?;
        audit_insert(
            &tx,
            &NewAudit {
                at,
                actor: actor.to_string(),
                action: "token.revoke".into(),
                target: format!("token:{id}"),
                detail: serde_json::json!({"name": rec.name}),
            },
        )
        .await?;
        tx.commit().await.map_err(map_err)?;
        Ok(rec)
    }

    async fn append_audit(&self, entry: NewAudit) -> Result<i64> {
        let c = self.client().await?;
        audit_insert(&c, &entry).await
    }

    async fn list_audit(
        &self,
        after: i64,
        target: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>> {
        let c = self.client().await?;
        let limit = limit.clamp(1, 10_000) as i64;
        c.query(
            "SELECT id, at, actor, action, target, detail FROM audit
             WHERE id > $1 AND ($2::TEXT IS NULL OR target = $2) ORDER BY id LIMIT $3",
            &[&after, &target, &limit],
        )
        .await
        .map_err(map_err)?
        .iter()
        .map(|r| {
            Ok(AuditRecord {
                id: r.get(0),
                at: from_micros(r.get(1))?,
                actor: r.get(2),
                action: r.get(3),
                target: r.get(4),
                detail: decode_json(r.get(5))?,
            })
        })
        .collect()
    }

    async fn get_meta(&self, key: &str) -> Result<Option<String>> {
        let c = self.client().await?;
        Ok(
            c.query_opt("SELECT value FROM meta WHERE key = $1", &[&key])
                .await
                .map_err(map_err)?
                .map(|r| r.get(0)),
        )
    }

    async fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[&key, &value],
        )
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn heartbeat_node(
        &self,
        id: &str,
        info: serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO nodes (id, started_at, heartbeat_at, info) VALUES ($1, $2, $2, $3)
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at, info = excluded.info",
            &[&id, &micros(now), &info.to_string()],
        )
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn forget_nodes(&self, stale_before: DateTime<Utc>) -> Result<u64> {
        let c = self.client().await?;
        c.execute(
            "DELETE FROM nodes WHERE heartbeat_at < $1",
            &[&micros(stale_before)],
        )
        .await
        .map_err(map_err)
    }

    async fn list_nodes(&self) -> Result<Vec<NodeRecord>> {
        let c = self.client().await?;
        c.query(
            "SELECT id, started_at, heartbeat_at, info FROM nodes ORDER BY id",
            &[],
        )
        .await
        .map_err(map_err)?
        .iter()
        .map(|r| {
            Ok(NodeRecord {
                id: r.get(0),
                started_at: from_micros(r.get(1))?,
                heartbeat_at: from_micros(r.get(2))?,
                info: decode_json(r.get(3))?,
            })
        })
        .collect()
    }

    async fn acquire_lease(
        &self,
        name: &str,
        owner: &str,
        now: DateTime<Utc>,
        ttl: chrono::Duration,
    ) -> Result<Option<Lease>> {
        let c = self.client().await?;
        c.query_opt(
            "INSERT INTO leases (name, owner, epoch, expires_at) VALUES ($1, $2, 1, $3)
             ON CONFLICT (name) DO UPDATE SET
                epoch = leases.epoch + CASE WHEN leases.owner = excluded.owner THEN 0 ELSE 1 END,
                owner = excluded.owner,
                expires_at = excluded.expires_at
             WHERE leases.owner = excluded.owner OR leases.expires_at <= $4
             RETURNING name, owner, epoch, expires_at",
            &[&name, &owner, &micros(now + ttl), &micros(now)],
        )
        .await
        .map_err(map_err)?
        .map(|r| lease_from_row(&r))
        .transpose()
    }

    async fn renew_lease(
        &self,
        lease: &Lease,
        now: DateTime<Utc>,
        ttl: chrono::Duration,
    ) -> Result<Lease> {
        let c = self.client().await?;
        let n = c
            .execute(
                "UPDATE leases SET expires_at = $4 WHERE name = $1 AND owner = $2 AND epoch = $3",
                &[&lease.name, &lease.owner, &lease.epoch, &micros(now + ttl)],
            )
            .await
            .map_err(map_err)?;
        if n == 0 {
            return Err(Error::Fenced {
                name: lease.name.clone(),
                epoch: lease.epoch,
            });
        }
        Ok(Lease {
            expires_at: now + ttl,
            ..lease.clone()
        })
    }

    async fn release_lease(&self, lease: &Lease) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            "UPDATE leases SET expires_at = 0 WHERE name = $1 AND owner = $2 AND epoch = $3",
            &[&lease.name, &lease.owner, &lease.epoch],
        )
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn save_lease_state(&self, lease: &Lease, state: serde_json::Value) -> Result<()> {
        let c = self.client().await?;
        let n = c
            .execute(
                "UPDATE leases SET state = $4 WHERE name = $1 AND owner = $2 AND epoch = $3",
                &[&lease.name, &lease.owner, &lease.epoch, &state.to_string()],
            )
            .await
            .map_err(map_err)?;
        if n == 0 {
            return Err(Error::Fenced {
                name: lease.name.clone(),
                epoch: lease.epoch,
            });
        }
        Ok(())
    }

    async fn lease_state(&self, name: &str) -> Result<Option<serde_json::Value>> {
        let c = self.client().await?;
        let row = c
            .query_opt("SELECT state FROM leases WHERE name = $1", &[&name])
            .await
            .map_err(map_err)?;
        row.and_then(|r| r.get::<_, Option<String>>(0))
            .map(|s| decode_json(&s))
            .transpose()
    }

    async fn list_leases(&self) -> Result<Vec<Lease>> {
        let c = self.client().await?;
        c.query(
            "SELECT name, owner, epoch, expires_at FROM leases ORDER BY name",
            &[],
        )
        .await
        .map_err(map_err)?
        .iter()
        .map(lease_from_row)
        .collect()
    }

    async fn create_job(&self, job: NewJob) -> Result<JobRecord> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(map_err)?;
        let row = tx
            .query_one(
                &format!(
                    "INSERT INTO jobs (kind, params, state, created_by, created_at) VALUES ($1, $2, 'queued', $3, $4) RETURNING {JOB_COLS}"
                ),
                &[&job.kind, &job.params.to_string(), &job.created_by, &micros(job.created_at)],
            )
            .await
            .map_err(map_err)?;
        let rec = job_from_row(&row)?;
        audit_insert(&tx, &job_audit(&rec)).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(rec)
    }

    async fn get_job(&self, id: i64) -> Result<Option<JobRecord>> {
        let c = self.client().await?;
        c.query_opt(
            &format!("SELECT {JOB_COLS} FROM jobs WHERE id = $1"),
            &[&id],
        )
        .await
        .map_err(map_err)?
        .map(|r| job_from_row(&r))
        .transpose()
    }

    async fn list_jobs(&self, limit: usize) -> Result<Vec<JobRecord>> {
        let c = self.client().await?;
        let limit = limit.clamp(1, 1000) as i64;
        c.query(
            &format!("SELECT {JOB_COLS} FROM jobs ORDER BY id DESC LIMIT $1"),
            &[&limit],
        )
        .await
        .map_err(map_err)?
        .iter()
        .map(job_from_row)
        .collect()
    }

    async fn claim_job(&self, node: &str, now: DateTime<Utc>) -> Result<Option<JobRecord>> {
        let c = self.client().await?;
        c.query_opt(
            &format!(
                "UPDATE jobs SET state = 'running', owner = $1, started_at = $2
                 WHERE id = (SELECT id FROM jobs WHERE state = 'queued' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
                 RETURNING {JOB_COLS}"
            ),
            &[&node, &micros(now)],
        )
        .await
        .map_err(map_err)?
        .map(|r| job_from_row(&r))
        .transpose()
    }

    async fn update_job_progress(&self, id: i64, done: i64, total: Option<i64>) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            "UPDATE jobs SET done = $2, total = COALESCE($3, total) WHERE id = $1",
            &[&id, &done, &total],
        )
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn finish_job(
        &self,
        id: i64,
        state: JobState,
        message: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let c = self.client().await?;
        let n = c
            .execute(
                "UPDATE jobs SET state = $2, message = $3, finished_at = $4 WHERE id = $1",
                &[&id, &state.as_str(), &message, &micros(now)],
            )
            .await
            .map_err(map_err)?;
        if n == 0 {
            return Err(Error::NotFound(format!("job {id}")));
        }
        Ok(())
    }

    async fn requeue_orphaned_jobs(
        &self,
        live_since: DateTime<Utc>,
        restarted: Option<&str>,
    ) -> Result<u64> {
        let c = self.client().await?;
        c.execute(
            "UPDATE jobs SET state = 'queued', owner = NULL, started_at = NULL
             WHERE state = 'running'
               AND (owner IS NULL OR owner = $2::text OR owner NOT IN (SELECT id FROM nodes WHERE heartbeat_at >= $1))",
            &[&micros(live_since), &restarted],
        )
        .await
        .map_err(map_err)
    }

    // ---- the delivery queue (statements in postgres_queue.rs) ----

    async fn insert_deliveries(
        &self,
        items: Vec<(i64, NewDelivery)>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Option<CreatedDelivery>>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(map_err)?;
        let out = queue::backfill(&tx, &items, now).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(out)
    }

    async fn claim_deliveries(&self, req: ClaimRequest) -> Result<Vec<DeliveryRecord>> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(map_err)?;
        let out = queue::claim(&tx, &req).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(out)
    }

    async fn complete_attempt(&self, result: AttemptResult) -> Result<bool> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(map_err)?;
        let held = queue::complete(&tx, &result).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(held)
    }

    async fn release_deliveries(&self, ids: Vec<i64>, owner: &str) -> Result<u64> {
        let c = self.client().await?;
        queue::release(&c, &ids, owner).await
    }

    async fn extend_delivery_lease(
        &self,
        id: i64,
        owner: &str,
        until: DateTime<Utc>,
    ) -> Result<bool> {
        let c = self.client().await?;
        queue::extend(&c, id, owner, until).await
    }

    async fn get_delivery(&self, id: i64) -> Result<Option<DeliveryRecord>> {
        let c = self.client().await?;
        queue::get(&c, id).await
    }

    async fn list_deliveries(&self, filter: &DeliveryFilter) -> Result<Vec<DeliveryRecord>> {
        let c = self.client().await?;
        queue::list(&c, filter).await
    }

    async fn list_attempts(&self, delivery_id: i64) -> Result<Vec<AttemptRecord>> {
        let c = self.client().await?;
        queue::attempts(&c, delivery_id).await
    }

    async fn delivery_stats(&self) -> Result<Vec<DeliveryStat>> {
        let c = self.client().await?;
        queue::stats(&c).await
    }

    async fn replay_delivery(&self, replay: Replay) -> Result<DeliveryRecord> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(map_err)?;
        let d = queue::replay(&tx, &replay).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(d)
    }

    async fn discard_delivery(
        &self,
        id: i64,
        actor: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<DeliveryRecord> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(map_err)?;
        let d = queue::discard(&tx, id, actor, reason, at).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(d)
    }

    async fn destination_pauses(&self) -> Result<Vec<DestinationPause>> {
        let c = self.client().await?;
        queue::pauses(&c).await
    }

    async fn resume_destination(
        &self,
        destination: &str,
        actor: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<bool> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(map_err)?;
        let resumed = queue::resume(&tx, destination, actor, reason, at).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(resumed)
    }

    // ---- workflow monitor (statements in postgres_monitor.rs) ----

    async fn monitor_find(&self, aliases: Vec<WorkflowAlias>) -> Result<Vec<InstanceRecord>> {
        if aliases.is_empty() {
            return Ok(Vec::new());
        }
        let c = self.client().await?;
        wf::find(&c, &aliases).await
    }

    async fn monitor_due(&self, until: DateTime<Utc>, limit: usize) -> Result<Vec<InstanceRecord>> {
        let c = self.client().await?;
        wf::due(&c, until, limit.clamp(1, 10_000) as i64).await
    }

    async fn monitor_next_due(&self) -> Result<Option<DateTime<Utc>>> {
        let c = self.client().await?;
        wf::next_due(&c).await
    }

    async fn monitor_commit(&self, commit: MonitorCommit) -> Result<MonitorCommitted> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(map_err)?;
        let out = wf::commit(&tx, &commit).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(out)
    }

    async fn workflow_versions(&self) -> Result<Vec<WorkflowVersion>> {
        let c = self.client().await?;
        wf::versions(&c).await
    }

    async fn get_instance(&self, id: i64) -> Result<Option<InstanceRecord>> {
        let c = self.client().await?;
        wf::get(&c, id).await
    }

    async fn list_instances(&self, filter: &InstanceFilter) -> Result<Vec<InstanceRecord>> {
        let c = self.client().await?;
        wf::list(&c, filter, filter.limit.clamp(1, 10_000) as i64).await
    }

    async fn instances_by_key(
        &self,
        value: &str,
        workflow: Option<&str>,
        limit: usize,
    ) -> Result<Vec<InstanceRecord>> {
        let c = self.client().await?;
        wf::by_key(&c, value, workflow, limit.clamp(1, 10_000) as i64).await
    }

    async fn list_findings(&self, filter: &FindingFilter) -> Result<Vec<FindingRecord>> {
        let c = self.client().await?;
        wf::findings(&c, filter, filter.limit.clamp(1, 10_000) as i64).await
    }

    async fn instance_counts(&self) -> Result<Vec<InstanceCount>> {
        let c = self.client().await?;
        wf::counts(&c).await
    }

    async fn closed_counts(
        &self,
        workflow: &str,
        since: DateTime<Utc>,
        bucket_seconds: i64,
    ) -> Result<Vec<ClosedCount>> {
        let c = self.client().await?;
        wf::closed_counts(&c, workflow, since, bucket_seconds).await
    }

    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>> {
        let c = self.client().await?;
        wf::list_runs(&c, filter, filter.limit.clamp(1, 10_000) as i64).await
    }

    async fn get_run(&self, id: i64) -> Result<Option<RunRecord>> {
        let c = self.client().await?;
        wf::get_run(&c, id).await
    }

    async fn archive_instances(&self, closed_before: DateTime<Utc>, limit: usize) -> Result<u64> {
        let c = self.client().await?;
        wf::archive(&c, closed_before, limit.clamp(1, 100_000) as i64).await
    }

    async fn instances_by_ids(&self, ids: Vec<i64>) -> Result<Vec<InstanceRecord>> {
        let c = self.client().await?;
        wf::by_ids(&c, &ids).await
    }

    async fn alerts_commit(&self, commit: AlertsCommit) -> Result<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(map_err)?;
        al::commit(&tx, &commit).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn list_alerts(&self, filter: &AlertFilter) -> Result<Vec<AlertRecord>> {
        let c = self.client().await?;
        al::list_alerts(&c, filter).await
    }

    async fn get_alert(&self, fingerprint: &str) -> Result<Option<AlertRecord>> {
        let c = self.client().await?;
        al::get_alert(&c, fingerprint).await
    }

    async fn alert_groups(&self) -> Result<Vec<GroupRow>> {
        let c = self.client().await?;
        al::groups(&c).await
    }

    async fn get_incident(&self, id: i64) -> Result<Option<IncidentRecord>> {
        let c = self.client().await?;
        al::get_incident(&c, id).await
    }

    async fn list_incidents(&self, filter: &IncidentFilter) -> Result<Vec<IncidentRecord>> {
        let c = self.client().await?;
        al::list_incidents(&c, filter).await
    }

    async fn incident_timeline(&self, id: i64) -> Result<Vec<IncidentEntry>> {
        let c = self.client().await?;
        al::timeline(&c, id).await
    }

    async fn incident_action(&self, action: IncidentAction) -> Result<IncidentRecord> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(map_err)?;
        let out = al::action(&tx, &action).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(out)
    }

    async fn create_silence(&self, silence: NewSilence) -> Result<SilenceRecord> {
        let c = self.client().await?;
        al::create_silence(&c, &silence).await
    }

    async fn list_silences(&self, active_at: Option<DateTime<Utc>>) -> Result<Vec<SilenceRecord>> {
        let c = self.client().await?;
        al::list_silences(&c, active_at).await
    }

    async fn expire_silence(
        &self,
        id: i64,
        actor: &str,
        at: DateTime<Utc>,
    ) -> Result<SilenceRecord> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(map_err)?;
        let out = al::expire_silence(&tx, id, actor, at).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(out)
    }

    async fn attempt_stats(&self, since: DateTime<Utc>) -> Result<Vec<AttemptStat>> {
        let c = self.client().await?;
        al::attempt_stats(&c, since).await
    }
}

#[cfg(test)]
mod tests {
    use super::split_schema;

    #[test]
    fn schema_parameter_is_ours() {
        let (u, s) = split_schema("postgres://h/db?schema=t1&sslmode=disable").unwrap();
        assert_eq!(u, "postgres://h/db?sslmode=disable");
        assert_eq!(s.as_deref(), Some("t1"));
        assert!(split_schema("postgres://h/db?schema=Bad-Name").is_err());
        assert_eq!(split_schema("postgres://h/db").unwrap().1, None);
    }
}
