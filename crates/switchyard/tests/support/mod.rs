//! Drives the real `switchyard` binary: config files, token bootstrap, server processes.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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
