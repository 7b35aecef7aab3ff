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
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            url_params: String::new(),
            store: StoreOptions::default(),
            max_body: 64 * 1024,
            allowed_origins: vec!["*".into()],
            sources: Sources::default(),
        }
    }
}

pub async fn start(setup: Setup) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}{}",
        dir.path().join("t.db").display(),
        setup.url_params
    );
    let store = switchyard_store::open(&url, &setup.store).await.unwrap();
    let clock: SharedClock = Arc::new(SystemClock);
    let mut tokens = Vec::new();
    for (name, role) in [
        ("admin", Role::Admin),
        ("shop", Role::Ingest),
        ("ops-viewer", Role::Viewer),
    ] {
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
        "test-node",
    )
    .with_sources(setup.sources);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cancel = CancellationToken::new();
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
