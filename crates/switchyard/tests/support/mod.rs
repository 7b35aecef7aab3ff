//! Drives the real `switchyard` binary: config files, token bootstrap, server processes.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_switchyard")
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The store URLs to run a backend-parametrised test on: SQLite always, PostgreSQL when
/// `SWITCHYARD_TEST_PG_URL` is set (a fresh schema each time).
pub fn store_urls(dir: &Path) -> Vec<(&'static str, String)> {
    let mut urls = vec![(
        "sqlite",
        format!("sqlite://{}", dir.join("switchyard.db").display()),
    )];
    match std::env::var("SWITCHYARD_TEST_PG_URL") {
        Ok(base) => {
            let schema = format!("sy_test_{}", uuid::Uuid::new_v4().simple());
            let sep = if base.contains('?') { '&' } else { '?' };
            urls.push(("postgres", format!("{base}{sep}schema={schema}")));
        }
        Err(_) => {
            assert!(
                std::env::var("CI").is_err(),
                "SWITCHYARD_TEST_PG_URL must be set in CI"
            );
            eprintln!("SKIPPED: the PostgreSQL half of this test (set SWITCHYARD_TEST_PG_URL)");
        }
    }
    urls
}

pub struct Instance {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub port: u16,
    pub child: Option<Child>,
}

impl Instance {
    /// Writes a config for `store_url` in `dir`.
    pub fn new(dir: &Path, name: &str, store_url: &str, extra: &str) -> Instance {
        let port = free_port();
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:{port}\"\nshutdown_grace_seconds = 10\n\n[store]\nurl = \"{store_url}\"\n\n[log]\nlevel = \"warn\"\n{extra}"
            ),
        )
        .unwrap();
        Instance {
            dir: dir.to_path_buf(),
            config,
            port,
            child: None,
        }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(bin());
        c.arg("--config").arg(&self.config);
        c
    }

    /// `switchyard token create`, returning the printed token.
    pub fn create_token(&self, role: &str, name: &str) -> String {
        let out = self
            .cmd()
            .args(["token", "create", "--role", role, "--name", name])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "token create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    pub fn start(&mut self) {
        let child = self
            .cmd()
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.wait_ready();
    }

    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = format!("{}/readyz", self.base());
        loop {
            if let Ok(r) = reqwest::blocking_get(&url)
                && r == 200
            {
                return;
            }
            assert!(Instant::now() < deadline, "server did not become ready");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn kill9(&mut self) {
        let mut c = self.child.take().unwrap();
        c.kill().unwrap(); // SIGKILL
        c.wait().unwrap();
    }

    pub fn sigterm(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().unwrap();
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        c.wait().unwrap()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One request a [`Receiver`] got.
#[derive(Debug, Clone)]
pub struct Received {
    /// The `Idempotency-Key` header ("" if absent).
    pub key: String,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: serde_json::Value,
}

struct RxShared {
    status: AtomicU16,
    delay_ms: AtomicU64,
    got: Mutex<Vec<Received>>,
    /// Requests received and not yet answered.
    in_flight: AtomicUsize,
}

/// A delivery destination for tests: a small HTTP/1.1 server on loopback (keep-alive,
/// `Content-Length` bodies) on its own thread and runtime, so sync and async tests can use
/// it alike. It records every request when it arrives, then waits `delay` and answers
/// `status`; both can be changed while it runs.
pub struct Receiver {
    pub url: String,
    shared: Arc<RxShared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Receiver {
    pub fn start(status: u16, delay: Duration) -> Receiver {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(RxShared {
            status: AtomicU16::new(status),
            delay_ms: AtomicU64::new(delay.as_millis() as u64),
            got: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
        });
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let sh = shared.clone();
        std::thread::Builder::new()
            .name("test-receiver".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                    loop {
                        tokio::select! {
                            _ = &mut stopped => return,
                            a = listener.accept() => {
                                if let Ok((sock, _)) = a {
                                    tokio::spawn(rx_connection(sock, sh.clone()));
                                }
                            }
                        }
                    }
                });
            })
            .unwrap();
        Receiver {
            url: format!("http://{addr}/in"),
            shared,
            stop: Some(stop),
        }
    }

    pub fn set_status(&self, status: u16) {
        self.shared.status.store(status, Ordering::SeqCst);
    }

    pub fn requests(&self) -> Vec<Received> {
        self.shared.got.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.shared.got.lock().unwrap().len()
    }

    /// Requests received and not answered yet (waiting out the delay).
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    /// Requests per `Idempotency-Key`.
    pub fn by_key(&self) -> HashMap<String, usize> {
        let mut m = HashMap::new();
        for r in self.shared.got.lock().unwrap().iter() {
            *m.entry(r.key.clone()).or_insert(0) += 1;
        }
        m
    }

    /// Polls (every 20 ms, up to `within`) until `done` holds for the requests so far.
    pub fn wait_until(
        &self,
        what: &str,
        within: Duration,
        done: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let got = self.requests();
            if done(&got) {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "receiver: {what} not reached within {within:?} ({} requests so far)",
                got.len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

async fn rx_connection(sock: tokio::net::TcpStream, shared: Arc<RxShared>) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let mut r = tokio::io::BufReader::new(sock);
    loop {
        let mut line = String::new();
        // request line
        match r.read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut headers = Vec::new();
        loop {
            line.clear();
            match r.read_line(&mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let len: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        if r.read_exact(&mut body).await.is_err() {
            return;
        }
        let close = header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        shared.in_flight.fetch_add(1, Ordering::SeqCst);
        shared.got.lock().unwrap().push(Received {
            key: header("idempotency-key").unwrap_or_default(),
            body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
            headers,
        });
        let delay = shared.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let status = shared.status.load(Ordering::SeqCst);
        let text = if status < 300 {
            "{\"ok\":true}"
        } else {
            "{\"ok\":false}"
        };
        let resp = format!(
            "HTTP/1.1 {status} Test\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{text}",
            text.len()
        );
        let written = r.get_mut().write_all(resp.as_bytes()).await;
        shared.in_flight.fetch_sub(1, Ordering::SeqCst);
        if written.is_err() || close {
            return;
        }
    }
}

/// Minimal blocking GET for readiness polling without a runtime.
mod reqwest {
    pub fn blocking_get(url: &str) -> Result<u16, ()> {
        use std::io::{Read, Write};
        let rest = url.strip_prefix("http://").ok_or(())?;
        let (host, path) = rest.split_once('/').ok_or(())?;
        let mut s = std::net::TcpStream::connect(host).map_err(|_| ())?;
        s.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .map_err(|_| ())?;
        write!(
            s,
            "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )
        .map_err(|_| ())?;
        let mut buf = String::new();
        s.read_to_string(&mut buf).map_err(|_| ())?;
        buf.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or(())
    }
}

/// A running `switchyard odoo sim`, killed when dropped.
pub struct OdooSim {
    child: Option<Child>,
    /// The line it printed at start.
    pub banner: String,
    pub base: String,
}

impl OdooSim {
    /// Starts the simulator on a port of its choosing; returns once it printed where.
    pub fn start(args: &[&str]) -> OdooSim {
        let mut child = Command::new(bin())
            .args(["odoo", "sim", "--listen", "127.0.0.1:0"])
            .args(["--cost-per-call-ms", "0", "--cost-per-record-ms", "0"])
            .args(args)
            .env_remove("SWITCHYARD_ODOO_SIM_PASSWORD")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut banner = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut banner)
            .unwrap();
        let base = banner
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no address in {banner:?}"))
            .trim_end_matches(',')
            .to_string();
        OdooSim {
            child: Some(child),
            banner,
            base,
        }
    }

    pub fn post(
        &self,
        path: &str,
        bearer: Option<&str>,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let mut req = ::reqwest::blocking::Client::new()
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(key) = bearer {
            req = req.header("authorization", format!("bearer {key}"));
        }
        let r = req.send().unwrap();
        let status = r.status().as_u16();
        (status, r.json().unwrap_or(serde_json::Value::Null))
    }

    pub fn jsonrpc(
        &self,
        service: &str,
        method: &str,
        args: serde_json::Value,
    ) -> serde_json::Value {
        let (status, body) = self.post(
            "/jsonrpc",
            None,
            serde_json::json!({"jsonrpc": "2.0", "method": "call", "id": 1,
                   "params": {"service": service, "method": method, "args": args}}),
        );
        assert_eq!(status, 200, "{body}");
        body
    }

    pub fn sigterm(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().unwrap();
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        c.wait().unwrap()
    }
}

impl Drop for OdooSim {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// ---- the order-to-cash landscape the monitor and alert tests share ----

/// Three systems' sources and an order-to-cash workflow whose `invoiced` step has a 2 s SLA.
pub const WORKFLOW: &str = r#"
[[sources]]
name = "shop"
kind = "cloudevents"
source = "/shop"
keys = { shop_order = ".data.number" }

[[sources]]
name = "odoo"
kind = "cloudevents"
source = "/odoo"
keys = { shop_order = ".data.origin", sale_order = ".data.name" }

[[sources]]
name = "wms"
kind = "cloudevents"
source = "/wms"
keys = { sale_order = ".data.order", picking = ".data.picking" }

[[batch_monitors]]
name = "export"
criticality = "P3"
schedule = "0 2 * * *"
expected_count = 100

[[workflows]]
name = "order_to_cash"
title = "Shop order"
criticality = "P2"
key = "shop_order"
dimensions = { warehouse = ".data.warehouse" }

[[workflows.steps]]
name = "ordered"
source = "shop"
type = "order.created"

[[workflows.steps]]
name = "confirmed"
source = "odoo"
type = "sale.order.confirmed"
after = ["ordered"]

[[workflows.steps]]
name = "shipped"
source = "wms"
type = "shipment.shipped"
key = "picking"
after = ["confirmed"]

[[workflows.steps]]
name = "invoiced"
source = "odoo"
type = "invoice.posted"
key = "sale_order"
from = "shipped"
sla_seconds = 2
warn_seconds = 1
after = ["shipped"]
"#;

pub fn send(inst: &Instance, token: &str, events: serde_json::Value) {
    let r = ::reqwest::blocking::Client::new()
        .post(format!("{}/v1/events", inst.base()))
        .bearer_auth(token)
        .header("content-type", "application/cloudevents-batch+json")
        .body(events.to_string())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 202, "{}", r.text().unwrap());
}

pub fn get(inst: &Instance, token: &str, path: &str) -> (u16, String, serde_json::Value) {
    let r = ::reqwest::blocking::Client::new()
        .get(format!("{}{path}", inst.base()))
        .bearer_auth(token)
        .send()
        .unwrap();
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, ct, r.json().unwrap_or(serde_json::Value::Null))
}

/// Polls `path` until `done` holds for its body.
pub fn wait_for(
    inst: &Instance,
    token: &str,
    path: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, _, v) = get(inst, token, path);
        if status == 200 && done(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{path}: gave up waiting, last {v}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn ev(id: &str, source: &str, ty: &str, data: serde_json::Value) -> serde_json::Value {
    serde_json::json!({"specversion": "1.0", "id": id, "source": source, "type": ty, "data": data})
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The CLI against `inst` with `token` (the environment cleared, so only the flags count).
pub fn cli(inst: &Instance, token: &str, args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .args(args)
        .args(["--url", &inst.base(), "--token", token])
        .env_remove("SWITCHYARD_URL")
        .env_remove("SWITCHYARD_TOKEN")
        .output()
        .unwrap()
}

/// Runs the CLI and expects success; returns stdout.
pub fn ok(inst: &Instance, token: &str, args: &[&str]) -> String {
    let out = cli(inst, token, args);
    assert!(
        out.status.success(),
        "{args:?} failed ({:?}):\n{}\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Runs the CLI and expects exit status 1; returns stderr.
pub fn fails(inst: &Instance, token: &str, args: &[&str]) -> String {
    let out = cli(inst, token, args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{args:?} should fail:\n{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stderr)
}
