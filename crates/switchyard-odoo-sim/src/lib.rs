//! # The Odoo simulator
//!
//! Switchyard's one permitted stand-in: no Odoo server can be installed from the package
//! registries, so tests, the demo and the benchmarks talk to this in-memory Odoo instead. It
//! reproduces what a real Odoo 18.0 answers on the wire — envelopes, fault codes, exception
//! names, call sequences and quirks — as recorded in `testdata/odoo/` (the transcript
//! conformance test replays those recordings against it). In Odoo 19 mode it also serves
//! the JSON-2 API.
//!
//! Layers: [`orm`] + [`domain`] + [`registry`] (models with real state and Odoo's
//! semantics), [`models`] (the business models and their methods), [`methods`] (`call_kw`),
//! [`rpc`] (the `common`/`db`/`object` services and authentication), [`http`] (XML-RPC,
//! JSON-RPC, `/web/*`, `/json/2`), [`faults`] (what can be injected).

pub mod automation;
pub mod business;
pub mod domain;
pub mod exc;
pub mod faults;
pub mod http;
pub mod import;
pub mod json2;
pub mod late;
pub mod load;
pub mod methods;
pub mod models;
pub mod orm;
pub mod pyjson;
pub mod read_group;
pub mod registry;
pub mod rpc;
pub mod sale;
pub mod stock;
pub mod webhooks;

use crate::exc::OResult;
use crate::orm::{Id, Record, Tables};
use crate::registry::{Env, Registry, Sequences};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use switchyard_core::clock::SharedClock;

/// Which Odoo the simulator plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OdooVersion {
    /// As recorded: XML-RPC, JSON-RPC, `/web/*`; `/json/2` redirects to the login page.
    #[serde(rename = "18")]
    V18,
    /// Adds the JSON-2 API (`/json/2/<model>/<method>`, bearer API keys).
    #[serde(rename = "19")]
    V19,
}

impl OdooVersion {
    pub fn server_version(self) -> &'static str {
        match self {
            OdooVersion::V18 => "18.0-20250506",
            OdooVersion::V19 => "19.0-20251001",
        }
    }
    pub fn major(self) -> i64 {
        match self {
            OdooVersion::V18 => 18,
            OdooVersion::V19 => 19,
        }
    }
}

/// How the simulator is set up.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    pub version: OdooVersion,
    /// The one database's name.
    pub database: String,
    /// The admin user's (uid 2, login `admin`) password; the limited user (uid 6,
    /// `peer_limited`) has the same one, as in the recordings.
    pub admin_password: String,
    /// Simulated server cost: real Odoo 18 on two cores spends about 30 ms per call and
    /// 1.5 ms per record; calls beyond `workers` queue, as in Odoo's threaded server.
    pub cost_per_call_ms: f64,
    pub cost_per_record_ms: f64,
    /// A call that only reads (`read`, `search_read`, …; [`rpc::READ_METHODS`]) costs this
    /// instead of `cost_per_call_ms` (recorded reads: median 14–19 ms).
    pub cost_per_read_ms: f64,
    pub workers: usize,
    /// Faults active from the start (they can also be set at run time).
    pub faults: faults::Faults,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            version: OdooVersion::V18,
            database: "odoopeer".into(),
            admin_password: "admin".into(),
            cost_per_call_ms: 30.0,
            cost_per_record_ms: 1.5,
            cost_per_read_ms: 15.0,
            workers: 2,
            faults: faults::Faults::default(),
        }
    }
}

impl SimConfig {
    /// No simulated cost: for tests that replay hundreds of calls.
    pub fn instant() -> SimConfig {
        SimConfig {
            cost_per_call_ms: 0.0,
            cost_per_record_ms: 0.0,
            cost_per_read_ms: 0.0,
            ..SimConfig::default()
        }
    }
}

/// Something a transaction asks to happen outside it (a webhook notification).
#[derive(Debug, Clone)]
pub enum Effect {
    Webhook { url: String, body: String },
}

/// The committed state.
pub struct State {
    pub tables: Tables,
    pub seq: Sequences,
    /// Web sessions: session id -> uid.
    pub sessions: HashMap<String, Id>,
    /// Bumped by every commit (optimistic concurrency for calls that release the lock).
    pub version: u64,
    /// The commit version that last changed each row (write-write conflict detection).
    pub row_versions: HashMap<(String, Id), u64>,
}

/// One row a transaction changed: its new value, or `None` when it was deleted.
pub type RowChange = (String, Id, Option<Arc<Record>>);

/// A transaction that ran but has not committed yet: the rows it changed and the commit
/// version its snapshot was taken at. Served calls commit only after their webhooks went
/// out, as Odoo sends them from inside the transaction.
pub struct Pending {
    base: u64,
    changes: Vec<RowChange>,
}

/// Why a commit was refused: another transaction changed one of the rows meanwhile (or a
/// fault says so) — PostgreSQL's "could not serialize access due to concurrent update".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conflict;

thread_local! {
    /// Set while a served call runs: transactions park their changes here instead of
    /// committing, so the caller can send the call's webhooks first.
    static DEFERRED: std::cell::RefCell<Option<Vec<Pending>>> = const { std::cell::RefCell::new(None) };
}

/// Run `f` with every transaction it makes held back uncommitted; returns them in order.
pub(crate) fn deferred<R>(f: impl FnOnce() -> R) -> (R, Vec<Pending>) {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            DEFERRED.with(|d| d.borrow_mut().take());
        }
    }
    DEFERRED.with(|d| *d.borrow_mut() = Some(vec![]));
    let _reset = Reset;
    let r = f();
    let pending = DEFERRED.with(|d| d.borrow_mut().take()).unwrap_or_default();
    (r, pending)
}

/// The rows `new` changed relative to `old` (tables untouched since the copy share storage).
fn diff(old: &Tables, new: &Tables) -> Vec<RowChange> {
    let empty = orm::Table::default();
    let mut out = Vec::new();
    for (name, t) in &new.tables {
        let o = match old.tables.get(name) {
            Some(o) if Arc::ptr_eq(o, t) => continue,
            Some(o) => o.as_ref(),
            None => &empty,
        };
        for (id, r) in &t.rows {
            let same = o
                .rows
                .get(id)
                .is_some_and(|was| Arc::ptr_eq(was, r) || was == r);
            if !same {
                out.push((name.clone(), *id, Some(r.clone())));
            }
        }
        for id in o.rows.keys().filter(|id| !t.rows.contains_key(id)) {
            out.push((name.clone(), *id, None));
        }
    }
    out
}

impl State {
    fn apply(&mut self, changes: Vec<RowChange>) {
        self.version += 1;
        for (model, id, rec) in changes {
            let table = self.tables.table_mut(&model);
            match rec {
                Some(r) => table.insert(id, r),
                None => table.remove(id),
            };
            self.row_versions.insert((model, id), self.version);
        }
    }
}

pub(crate) struct Inner {
    pub reg: Registry,
    pub state: Mutex<State>,
    pub clock: SharedClock,
    pub config: SimConfig,
    pub faults: Mutex<faults::Faults>,
    pub workers: tokio::sync::Semaphore,
    pub http: reqwest::Client,
    pub log: Mutex<Vec<CallRecord>>,
}

/// One served call, for tests and the demo's ground truth.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CallRecord {
    pub model: String,
    pub method: String,
    pub ok: bool,
    /// Records it touched (rows of a `load`, ids or values of a call, rows answered).
    pub records: usize,
}

/// A running simulator (cheap to clone).
#[derive(Clone)]
pub struct Simulator {
    pub(crate) inner: Arc<Inner>,
}

impl Simulator {
    pub fn new(config: SimConfig, clock: SharedClock) -> Simulator {
        let reg = models::registry();
        let mut state = State {
            tables: Tables::default(),
            seq: Sequences::new(),
            sessions: HashMap::new(),
            version: 0,
            row_versions: HashMap::new(),
        };
        let now = timestamp(&clock);
        {
            let mut env = Env {
                reg: &reg,
                db: &mut state.tables,
                seq: &mut state.seq,
                uid: 1,
                ctx: Map::new(),
                now,
                effects: vec![],
            };
            models::seed(&mut env, &config);
        }
        let workers = tokio::sync::Semaphore::new(config.workers.max(1));
        let faults = Mutex::new(config.faults.clone());
        Simulator {
            inner: Arc::new(Inner {
                reg,
                state: Mutex::new(state),
                clock,
                faults,
                workers,
                config,
                http: reqwest::Client::builder()
                    .timeout(std::time::Duration::from_secs(1))
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .expect("http client"),
                log: Mutex::new(vec![]),
            }),
        }
    }

    pub fn config(&self) -> &SimConfig {
        &self.inner.config
    }

    /// Change faults at run time.
    pub fn set_faults(&self, f: faults::Faults) {
        *self.inner.faults.lock().expect("faults") = f;
    }

    pub fn faults(&self) -> faults::Faults {
        self.inner.faults.lock().expect("faults").clone()
    }

    /// Run `f` as one committed-or-rolled-back transaction, as user `uid`. Returns the
    /// effects (webhooks) it asked for, to be sent by the caller — even when it failed.
    ///
    /// Inside a served call ([`deferred`]) a successful transaction is not committed here
    /// but held back for [`Simulator::commit`], after the call's webhooks were sent.
    /// Sequences are not transactional (ids and names a failed call took stay taken).
    pub fn transact<T>(
        &self,
        uid: Id,
        ctx: Map<String, Value>,
        f: impl FnOnce(&mut Env) -> OResult<T>,
    ) -> (OResult<T>, Vec<Effect>) {
        let now = timestamp(&self.inner.clock);
        let mut state = self.inner.state.lock().expect("state");
        let st = &mut *state;
        let mut copy = st.tables.clone();
        let mut env = Env {
            reg: &self.inner.reg,
            db: &mut copy,
            seq: &mut st.seq,
            uid,
            ctx,
            now,
            effects: vec![],
        };
        let out = f(&mut env);
        let effects = std::mem::take(&mut env.effects);
        if out.is_ok() {
            let changes = diff(&st.tables, &copy);
            let pending = Pending {
                base: st.version,
                changes,
            };
            let held = DEFERRED.with(|d| match d.borrow_mut().as_mut() {
                Some(list) => {
                    list.push(pending);
                    None
                }
                None => Some(pending),
            });
            if let Some(p) = held {
                st.apply(p.changes);
            }
        }
        (out, effects)
    }

    /// Commit a held-back transaction unless another one changed the same rows since its
    /// snapshot, or a fault makes it conflict (`doomed`: every try of this call conflicts;
    /// `locked_rows`: another transaction holds one of its rows).
    pub fn commit(&self, p: Pending, doomed: bool) -> Result<(), Conflict> {
        let mut st = self.inner.state.lock().expect("state");
        if doomed {
            return Err(Conflict);
        }
        {
            let mut faults = self.inner.faults.lock().expect("faults");
            for (model, id, _) in &p.changes {
                if let Some(l) = faults
                    .locked_rows
                    .iter_mut()
                    .find(|l| l.model == *model && l.id == *id && l.conflicts > 0)
                {
                    l.conflicts -= 1;
                    return Err(Conflict);
                }
            }
        }
        let conflict = p.changes.iter().any(|(model, id, _)| {
            st.row_versions
                .get(&(model.clone(), *id))
                .is_some_and(|v| *v > p.base)
        });
        if conflict {
            return Err(Conflict);
        }
        st.apply(p.changes);
        Ok(())
    }

    /// Read-only access to the committed state (tests, ground truth).
    pub fn with_state<T>(&self, f: impl FnOnce(&Registry, &State) -> T) -> T {
        let state = self.inner.state.lock().expect("state");
        f(&self.inner.reg, &state)
    }

    /// Set the next id a model's sequence hands out (ids are volatile between runs; the
    /// transcript replay aligns them with the recording).
    pub fn set_next_id(&self, model: &str, next: Id) {
        let mut state = self.inner.state.lock().expect("state");
        state.seq.insert(model.to_string(), next - 1);
    }

    /// Add an API key for a user (`expires` in UTC, `None` = never).
    pub fn add_api_key(&self, uid: Id, key: &str, expires: Option<chrono::DateTime<chrono::Utc>>) {
        let (r, _) = self.transact(1, Map::new(), |env| {
            env.insert(
                "res.users.apikeys",
                serde_json::json!({
                    "user_id": uid,
                    "key": key,
                    "scope": "rpc",
                    "name": "switchyard",
                    "expiration_date": expires.map(|e| e.format("%Y-%m-%d %H:%M:%S").to_string()),
                }),
            );
            Ok(())
        });
        r.expect("insert api key");
    }

    /// Calls served so far.
    pub fn calls(&self) -> Vec<CallRecord> {
        self.inner.log.lock().expect("log").clone()
    }
}

/// The transaction timestamp: business time with microseconds, Odoo's column format.
pub fn timestamp(clock: &SharedClock) -> String {
    clock.now().format("%Y-%m-%d %H:%M:%S%.6f").to_string()
}
