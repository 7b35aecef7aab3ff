//! `switchyard odoo …`: the Odoo side of a landscape. `odoo sim` runs the Odoo simulator
//! (`switchyard-odoo-sim`, an in-memory Odoo 18/19) standalone on a port, for local
//! development, demos and other programs' tests.
//!
//! It must never open the store or read the hub's configuration file: the simulator is a
//! stand-in for the customer's Odoo, not a part of the hub. Its state lives in memory and
//! is gone when it stops.

use clap::{Args, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use switchyard_core::SystemClock;
use switchyard_core::config::{ConfigError, ConfigErrors};
use switchyard_odoo_sim::faults::Faults;
use switchyard_odoo_sim::{OdooVersion, SimConfig, Simulator};

use crate::LogFormatArg;

mod install;

/// The admin user of the simulated database (login `admin`), who gets the `--api-key`s.
const ADMIN_UID: i64 = 2;

#[derive(Subcommand, Debug)]
pub enum OdooCommand {
    /// Run the Odoo simulator (an in-memory Odoo 18 or 19) until Ctrl-C or SIGTERM.
    Sim(SimArgs),
    /// Probe the configured Odoo connections now: version, authenticate, a cheap
    /// search_count and the API key's expiry. Exit status 1 when one fails.
    Probe(ProbeArgs),
    /// Create (or bring up to date) the Odoo automation rule that sends webhook hints of a
    /// model's changes to an odoo source. Idempotent: a second run changes nothing.
    InstallWebhooks(install::InstallWebhooksArgs),
}

#[derive(Args, Debug)]
pub struct ProbeArgs {
    /// Only the `[[odoo]]` connection with this name.
    #[arg(long)]
    name: Option<String>,
    /// Print the results as JSON (one array) instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct SimArgs {
    /// Address to listen on (port 0 picks a free one; the line printed at start names it).
    #[arg(long, default_value = "127.0.0.1:8069")]
    listen: SocketAddr,
    /// Which Odoo to play: 18 (XML-RPC, JSON-RPC; `/json/2` redirects to the login page)
    /// or 19 (adds the JSON-2 API with bearer API keys).
    #[arg(long, value_enum, default_value = "18")]
    odoo_version: VersionArg,
    /// The one database's name.
    #[arg(long, default_value = "odoopeer")]
    database: String,
    /// The password of `admin` (uid 2) and of the limited user `peer_limited` (uid 6).
    #[arg(
        long,
        default_value = "admin",
        env = "SWITCHYARD_ODOO_SIM_PASSWORD",
        hide_env_values = true
    )]
    admin_password: String,
    /// An API key for `admin`, optionally with its expiry (RFC 3339, e.g.
    /// `KEY:2030-01-01T00:00:00Z`); repeatable. Needed for JSON-2 (`--odoo-version 19`).
    #[arg(long = "api-key", value_name = "KEY[:EXPIRES]", value_parser = parse_api_key)]
    api_keys: Vec<ApiKey>,
    /// Faults active from the start: a TOML file with the keys of `PUT /__sim/faults`, e.g.
    /// `latency_ms`, `http_500_rate`, `serialization_failures`, `lose_responses`,
    /// `expire_credentials`, `[[validation_errors]]` (they can be changed at run time).
    #[arg(long, value_name = "FILE")]
    faults: Option<PathBuf>,
    /// Simulated server time per call, in milliseconds.
    #[arg(long, default_value_t = SimConfig::default().cost_per_call_ms, value_parser = parse_ms)]
    cost_per_call_ms: f64,
    /// Simulated server time per record a call touches, in milliseconds.
    #[arg(long, default_value_t = SimConfig::default().cost_per_record_ms, value_parser = parse_ms)]
    cost_per_record_ms: f64,
    /// Simulated server time per call that only reads (read, search_read, …), in milliseconds.
    #[arg(long, default_value_t = SimConfig::default().cost_per_read_ms, value_parser = parse_ms)]
    cost_per_read_ms: f64,
    /// Calls served at once (Odoo's worker threads); more calls queue.
    #[arg(long, default_value_t = SimConfig::default().workers as u32,
          value_parser = clap::value_parser!(u32).range(1..))]
    workers: u32,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum VersionArg {
    #[value(name = "18")]
    V18,
    #[value(name = "19")]
    V19,
}

impl From<VersionArg> for OdooVersion {
    fn from(v: VersionArg) -> OdooVersion {
        match v {
            VersionArg::V18 => OdooVersion::V18,
            VersionArg::V19 => OdooVersion::V19,
        }
    }
}

#[derive(Clone, Debug)]
struct ApiKey {
    key: String,
    expires: Option<chrono::DateTime<chrono::Utc>>,
}

/// `KEY` or `KEY:EXPIRES` (Odoo's keys are hex, so the first colon ends the key).
fn parse_api_key(s: &str) -> Result<ApiKey, String> {
    let (key, expires) = match s.split_once(':') {
        Some((key, when)) => {
            let when = chrono::DateTime::parse_from_rfc3339(when).map_err(|e| {
                format!(
                    "the expiry `{when}` is not an RFC 3339 date-time ({e}); \
                     e.g. KEY:2030-01-01T00:00:00Z"
                )
            })?;
            (key, Some(when.with_timezone(&chrono::Utc)))
        }
        None => (s, None),
    };
    if key.is_empty() {
        return Err("the key is empty".into());
    }
    Ok(ApiKey {
        key: key.to_string(),
        expires,
    })
}

fn parse_ms(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(ms) if ms.is_finite() && ms >= 0.0 => Ok(ms),
        _ => Err(format!("`{s}` is not a number of milliseconds (0 or more)")),
    }
}

pub async fn run(cmd: OdooCommand, config: &Path, log_format: Option<LogFormatArg>) -> ExitCode {
    match cmd {
        OdooCommand::Sim(args) => sim(args, log_format).await,
        OdooCommand::Probe(args) => probe(args, config, log_format).await,
        OdooCommand::InstallWebhooks(args) => install::run(args, config, log_format).await,
    }
}

/// `switchyard odoo probe`: each configured connection probed once from this process.
async fn probe(args: ProbeArgs, path: &Path, log_format: Option<LogFormatArg>) -> ExitCode {
    let config = match crate::load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    crate::init_logging(&config, log_format);
    let connections: Vec<_> = config
        .odoo
        .iter()
        .filter(|c| args.name.as_ref().is_none_or(|n| *n == c.name))
        .collect();
    if connections.is_empty() {
        match &args.name {
            Some(n) => eprintln!(
                "error: no [[odoo]] connection named \"{n}\" in {}",
                path.display()
            ),
            None => eprintln!("error: {} declares no [[odoo]] connections", path.display()),
        }
        return ExitCode::from(2);
    }
    let now = chrono::Utc::now();
    let mut all_ok = true;
    let mut reports = Vec::new();
    for c in connections {
        let client = match switchyard_server::probes::client_config(c)
            .and_then(|cfg| switchyard_odoo::OdooClient::new(cfg).map_err(|e| e.to_string()))
        {
            Ok(client) => client,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        };
        let found = switchyard_odoo::probe::probe(&client).await;
        let expires = found.api_key_expires.or_else(|| {
            c.api_key_expires
                .and_then(|d| d.and_hms_opt(23, 59, 59))
                .map(|d| d.and_utc())
        });
        let warning = expires.and_then(|e| {
            switchyard_server::probes::credential_warning(
                &c.name,
                e,
                now,
                config.probes.credential_warning_days,
            )
        });
        all_ok &= found.ok();
        reports.push((c.name.clone(), found, expires, warning));
    }
    if args.json {
        let out: Vec<serde_json::Value> = reports
            .iter()
            .map(|(name, found, expires, warning)| {
                serde_json::json!({"target": name, "ok": found.ok(), "server_version": found.server_version,
                    "protocol": found.protocol, "steps": found.steps, "credential_expires_at": expires,
                    "credential_warning": warning})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        for (name, found, expires, warning) in &reports {
            println!(
                "{name}: {} (Odoo {}, {})",
                if found.ok() { "ok" } else { "FAILED" },
                found.server_version.as_deref().unwrap_or("?"),
                found.protocol.as_deref().unwrap_or("protocol not chosen")
            );
            for s in &found.steps {
                match &s.error {
                    None => println!("  {:<13} ok      {:>8.1} ms", s.step, s.latency_ms),
                    Some(e) => println!(
                        "  {:<13} failed  {:>8.1} ms  {} ({})",
                        s.step,
                        s.latency_ms,
                        e,
                        s.class.as_deref().unwrap_or("?")
                    ),
                }
            }
            if let Some(e) = expires {
                println!("  API key expires {}", e.format("%Y-%m-%d %H:%M UTC"));
            }
            if let Some(w) = warning {
                println!("  warning: {w}");
            }
        }
    }
    if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn sim(args: SimArgs, log_format: Option<LogFormatArg>) -> ExitCode {
    // No configuration file: log as a default configuration would (RUST_LOG still wins).
    if let Ok(defaults) = switchyard_core::Config::parse("", "(defaults)", std::iter::empty()) {
        crate::init_logging(&defaults, log_format);
    }
    let faults = match &args.faults {
        Some(path) => match load_faults(path) {
            Ok(f) => f,
            Err(e) => {
                eprint!("{e}");
                return ExitCode::from(2);
            }
        },
        None => Faults::default(),
    };
    let version = OdooVersion::from(args.odoo_version);
    let config = SimConfig {
        version,
        database: args.database,
        admin_password: args.admin_password,
        cost_per_call_ms: args.cost_per_call_ms,
        cost_per_record_ms: args.cost_per_record_ms,
        cost_per_read_ms: args.cost_per_read_ms,
        workers: args.workers as usize,
        faults,
    };
    let sim = Simulator::new(config, Arc::new(SystemClock));
    for k in &args.api_keys {
        sim.add_api_key(ADMIN_UID, &k.key, k.expires);
    }
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    let addr = listener.local_addr().unwrap_or(args.listen);
    println!(
        "Odoo {} simulator ({}) listening on http://{addr}, database {}",
        version.major(),
        version.server_version(),
        sim.config().database
    );
    let cancel = crate::serve::shutdown_signal();
    let served = axum::serve(listener, switchyard_odoo_sim::http::router(sim))
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await;
    match served {
        Ok(()) => {
            tracing::info!("odoo simulator stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: the simulator stopped: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Reads a faults file into the simulator's [`Faults`]. A problem is reported like a
/// configuration problem: the file, line and column, the key, what is wrong.
fn load_faults(path: &Path) -> Result<Faults, ConfigErrors> {
    let origin = path.display().to_string();
    let problem = |line, key: String, message: String| {
        ConfigErrors(vec![ConfigError {
            origin: origin.clone(),
            line,
            key,
            message,
        }])
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        problem(
            None,
            String::new(),
            format!("cannot read the faults file: {e}"),
        )
    })?;
    let de = toml::Deserializer::parse(&text).map_err(|e| {
        let line = e.span().map(|s| line_col(&text, s.start));
        problem(line, String::new(), e.message().trim().to_string())
    })?;
    let faults: Faults = serde_path_to_error::deserialize(de).map_err(|e| {
        let mut key = match e.path().to_string() {
            dot if dot == "." => String::new(),
            path => path,
        };
        let message = e.inner().message().trim().to_string();
        // serde names an unknown key in the message; the path may end at the table holding it.
        let unknown = message
            .strip_prefix("unknown field `")
            .and_then(|rest| rest.split('`').next());
        let last = e.path().iter().next_back();
        if let Some(field) = unknown
            && !matches!(last, Some(serde_path_to_error::Segment::Map { key }) if key == field)
        {
            key = if key.is_empty() {
                field.to_string()
            } else {
                format!("{key}.{field}")
            };
        }
        let line = e.inner().span().map(|s| line_col(&text, s.start));
        problem(line, key, message)
    })?;
    if !(0.0..=1.0).contains(&faults.http_500_rate) {
        let line = text
            .lines()
            .position(|l| l.trim_start().starts_with("http_500_rate"))
            .map(|i| (i + 1, 1));
        return Err(problem(
            line,
            "http_500_rate".into(),
            "must be between 0.0 and 1.0 (a share of calls)".into(),
        ));
    }
    Ok(faults)
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before[before.rfind('\n').map_or(0, |i| i + 1)..]
        .chars()
        .count()
        + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn faults_from(text: &str) -> Result<Faults, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("faults.toml");
        std::fs::write(&path, text).unwrap();
        load_faults(&path).map_err(|e| {
            let s = e.to_string();
            s.replace(&dir.path().display().to_string(), "DIR")
        })
    }

    #[test]
    fn a_faults_file_reads_like_put_faults() {
        let f = faults_from(
            "serialization_failures = 2\nexpire_credentials = true\n\n[[validation_errors]]\nmodel = \"res.partner\"\nmessage = \"no\"\n",
        )
        .unwrap();
        assert_eq!(f.serialization_failures, 2);
        assert!(f.expire_credentials);
        assert_eq!(f.validation_errors[0].model, "res.partner");
    }

    #[test]
    fn a_broken_faults_file_names_file_line_and_key() {
        let e = faults_from("latency_ms = 5\nlose_response = 1\n").unwrap_err();
        assert!(
            e.contains("DIR/faults.toml:2:1: lose_response: unknown field `lose_response`"),
            "{e}"
        );
        let e = faults_from("serialization_failures = \"two\"\n").unwrap_err();
        assert!(
            e.contains("faults.toml:1:26: serialization_failures: invalid type"),
            "{e}"
        );
        let e = faults_from("[[validation_errors]]\nmodel = \"x\"\n").unwrap_err();
        assert!(
            e.contains("validation_errors[0]: missing field `message`"),
            "{e}"
        );
        let e = faults_from("http_500_rate = 5.0\n").unwrap_err();
        assert!(
            e.contains("faults.toml:1:1: http_500_rate: must be between"),
            "{e}"
        );
    }

    #[test]
    fn api_keys_may_carry_an_expiry() {
        let k = parse_api_key("abc").unwrap();
        assert_eq!((k.key.as_str(), k.expires), ("abc", None));
        let k = parse_api_key("abc:2030-01-02T03:04:05Z").unwrap();
        assert_eq!(k.expires.unwrap().to_rfc3339(), "2030-01-02T03:04:05+00:00");
        assert!(parse_api_key("abc:tomorrow").is_err());
        assert!(parse_api_key(":2030-01-02T03:04:05Z").is_err());
    }
}
