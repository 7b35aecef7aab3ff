//! A real server for tests: a SQLite file in a temporary directory, three tokens (admin,
//! ingest, viewer) and the HTTP server on a free loopback port.

#![allow(dead_code)]

use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use switchyard_core::sources::Sources;
use switchyard_core::token::{Role, generate_token, hash_token};
use switchyard_core::{SharedClock, SystemClock};
use switchyard_server::{AppState, Limits};
use switchyard_store::{NewToken, SharedStore, StoreOptions};
use tokio_util::sync::CancellationToken;

pub struct Server {
    pub base: String,
    pub store: SharedStore,
    pub admin: String,
    pub ingest: String,
    pub viewer: String,
    pub http: reqwest::Client,
    pub cancel: CancellationToken,
    pub engine: Option<switchyard_deliver::Engine>,
    pub probes: Arc<switchyard_server::probes::Prober>,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// How a test server is set up; `Default` is a plain one.
pub struct Setup {
    /// Appended to the SQLite URL (e.g. `?max_size_mib=1`).
    pub url_params: String,
    pub store: StoreOptions,
    pub max_body: usize,
    pub allowed_origins: Vec<String>,
    pub sources: Sources,
    /// Configuration text with `[[destinations]]`, `[[flows]]` and `[delivery]`: starts
    /// the delivery engine.
    pub flows: Option<String>,
    /// The business clock (default: system time).
    pub clock: Option<SharedClock>,
    /// A store URL to use instead of a fresh SQLite file (e.g. a shared PostgreSQL schema).
    pub store_url: Option<String>,
    /// Default `test-node`.
    pub node_id: Option<String>,
    /// Configuration text with `[[odoo]]`, `[[destinations]]` and `[probes]`: sets up the
    /// prober (the test drives it with `Server::probes`).
    pub probes: Option<String>,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            url_params: String::new(),
            store: StoreOptions::default(),
            max_body: 64 * 1024,
            allowed_origins: vec!["*".into()],
            sources: Sources::default(),
            flows: None,
            clock: None,
            store_url: None,
            node_id: None,
            probes: None,
        }
    }
}

pub async fn start(setup: Setup) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let url = setup.store_url.clone().unwrap_or_else(|| {
        format!(
            "sqlite://{}{}",
            dir.path().join("t.db").display(),
            setup.url_params
        )
    });
    let node = setup.node_id.clone().unwrap_or_else(|| "test-node".into());
    let store = switchyard_store::open(&url, &setup.store).await.unwrap();
    let clock: SharedClock = setup.clock.clone().unwrap_or_else(|| Arc::new(SystemClock));
    let mut tokens = Vec::new();
    for (name, role) in [
        ("admin", Role::Admin),
        ("shop", Role::Ingest),
        ("ops-viewer", Role::Viewer),
    ] {
        // A second node on a shared store: distinct token names.
        let name = &*format!("{name}{}", if node == "test-node" { "" } else { &node[..] });
        let secret = generate_token();
        store
            .create_token(
                NewToken {
                    name: name.into(),
                    role,
                    hash: hash_token(&secret),
                    created_at: chrono::Utc::now(),
                },
                "cli",
            )
            .await
            .unwrap();
        tokens.push(secret);
    }
    let state = AppState::new(
        store.clone(),
        clock,
        Limits {
            max_body_bytes: setup.max_body,
            allowed_origins: setup.allowed_origins,
        },
        &node,
    )
    .with_sources(setup.sources);
    let mut engine = None;
    let state = match &setup.flows {
        None => state,
        Some(text) => {
            let config = switchyard_core::Config::parse(text, "test.toml", Vec::new())
                .unwrap_or_else(|e| panic!("test config: {e}"));
            let flows = switchyard_core::flows::Flows::compile(&config).unwrap();
            let e = switchyard_deliver::Engine::new(
                store.clone(),
                state.clock.clone(),
                Arc::new(flows),
                node.clone(),
                config.delivery.clone(),
            )
            .unwrap();
            e.start().await;
            engine = Some(e.clone());
            state.with_engine(e)
        }
    };
    let state = match &setup.probes {
        None => state,
        Some(text) => {
            let config = switchyard_core::Config::parse(text, "test.toml", Vec::new())
                .unwrap_or_else(|e| panic!("test config: {e}"));
            let clock = state.clock.clone();
            state.with_probes(switchyard_server::probes::Prober::new(
                switchyard_server::probes::targets(&config).unwrap(),
                store.clone(),
                clock,
                node.clone(),
                config.probes.clone(),
            ))
        }
    };
    let probes = state.probes.clone();
    let jobs = switchyard_server::jobs::JobRunner {
        store: store.clone(),
        clock: state.clock.clone(),
        node_id: node.clone(),
        state: Some(state.clone()),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cancel = CancellationToken::new();
    tokio::spawn(jobs.run(cancel.clone()));
    if let Some(e) = engine.clone() {
        let c = cancel.clone();
        tokio::spawn(async move {
            c.cancelled().await;
            e.shutdown(Duration::from_secs(2)).await;
        });
    }
    tokio::spawn(switchyard_server::serve(
        listener,
        state,
        cancel.clone(),
        Duration::from_secs(5),
    ));
    Server {
        base: format!("http://{addr}"),
        store,
        admin: tokens[0].clone(),
        ingest: tokens[1].clone(),
        viewer: tokens[2].clone(),
        http: reqwest::Client::new(),
        cancel,
        engine,
        probes,
        _dir: dir,
    }
}

impl Server {
    /// Posts a structured CloudEvent with the ingest token.
    pub async fn structured(&self, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/events", self.base))
            .bearer_auth(&self.ingest)
            .header("content-type", "application/cloudevents+json")
            .body(body.to_string())
            .send()
            .await
            .unwrap()
    }

    pub async fn get_as(&self, path: &str, token: &str) -> (reqwest::StatusCode, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let s = r.status();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post_as(&self, path: &str, token: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Polls `GET path` (admin) until `done` accepts the body; panics after 30 s.
    pub async fn wait_for(&self, path: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (_, body) = self.get_as(path, &self.admin).await;
            if done(&body) {
                return body;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting on {path}; last: {body}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn count(&self) -> i64 {
        self.store.count_events().await.unwrap()
    }
}

/// Asserts a problem+json answer and returns its body.
pub async fn problem(r: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(r.status().as_u16(), status);
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["type"], format!("/problems/{code}"), "{body}");
    assert_eq!(body["status"], status);
    assert!(body["title"].is_string());
    assert!(!body["detail"].as_str().unwrap().is_empty());
    body
}

/// One request a [`Receiver`] got.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: axum::http::HeaderMap,
    pub body: Value,
    pub at: std::time::Instant,
}

/// What a receiver answers: status, extra headers, and a delay before answering.
pub type Reply = (u16, Vec<(&'static str, String)>, Duration);

type Script = dyn Fn(usize, &Received) -> Reply + Send + Sync;

/// A real HTTP receiver on loopback that records every request and answers as `script`
/// says (given the 0-based request number and the request).
#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    pub got: Arc<std::sync::Mutex<Vec<Received>>>,
    script: Arc<std::sync::Mutex<Arc<Script>>>,
}

impl Receiver {
    pub async fn start(
        script: impl Fn(usize, &Received) -> Reply + Send + Sync + 'static,
    ) -> Receiver {
        let got: Arc<std::sync::Mutex<Vec<Received>>> = Arc::default();
        let script: Arc<std::sync::Mutex<Arc<Script>>> =
            Arc::new(std::sync::Mutex::new(Arc::new(script)));
        let (g, s) = (got.clone(), script.clone());
        let app = axum::Router::new().fallback(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let (g, s) = (g.clone(), s.clone());
                async move {
                    let r = Received {
                        headers,
                        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                        at: std::time::Instant::now(),
                    };
                    let n = {
                        let mut g = g.lock().unwrap();
                        g.push(r.clone());
                        g.len() - 1
                    };
                    let script = s.lock().unwrap().clone();
                    let (status, headers, delay) = script(n, &r);
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    let mut resp = axum::response::Response::builder().status(status);
                    for (k, v) in headers {
                        resp = resp.header(k, v);
                    }
                    resp.body(axum::body::Body::from("{\"ok\":true}")).unwrap()
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver {
            url: format!("http://{addr}/in"),
            got,
            script,
        }
    }

    /// Answers 200 at once.
    pub async fn ok() -> Receiver {
        Receiver::start(|_, _| (200, vec![], Duration::ZERO)).await
    }

    pub fn set(&self, script: impl Fn(usize, &Received) -> Reply + Send + Sync + 'static) {
        *self.script.lock().unwrap() = Arc::new(script);
    }

    pub fn count(&self) -> usize {
        self.got.lock().unwrap().len()
    }

    pub fn requests(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    pub async fn wait_count(&self, n: usize) -> Vec<Received> {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if self.count() >= n {
                return self.requests();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "receiver got {} of {n} requests",
                self.count()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A structured CloudEvent.
pub fn ce(source: &str, id: &str, ty: &str, data: Value) -> Value {
    serde_json::json!({"specversion": "1.0", "id": id, "source": source, "type": ty, "data": data})
}
