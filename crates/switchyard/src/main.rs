//! The `switchyard` binary: the CLI and the wiring of every part. Commands that operate a
//! running server (`events`, `jobs`, `dlq`, `backfill`, `deliveries`, `destinations`,
//! `token list|revoke`) are HTTP clients of it; only
//! `migrate` and `token create` (the bootstrap) open the store directly, and `check`
//! validates everything, the store URL included, without opening anything.

mod alerts_cmd;
mod client;
mod demo;
mod monitor_cmd;
mod odoo_cmd;
mod serve;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use switchyard_core::config::LogFormat;
use switchyard_core::token::{Role, check_token_name, generate_token, hash_token};
use switchyard_core::{Clock, Config, SystemClock};
use switchyard_store::{NewToken, StoreOptions};

#[derive(Parser, Debug)]
#[command(
    name = "switchyard",
    version,
    about = "Integration hub and business-workflow monitor for Odoo landscapes"
)]
struct Cli {
    /// Configuration file.
    #[arg(
        long,
        global = true,
        default_value = "switchyard.toml",
        env = "SWITCHYARD_CONFIG"
    )]
    config: PathBuf,
    /// Log format (overrides `log.format`).
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormatArg>,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum LogFormatArg {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Validate the configuration and report every problem; starts nothing.
    Check,
    /// Apply pending store migrations and exit.
    Migrate,
    /// Run a simulated landscape through a real hub on a temporary store.
    Demo(demo::DemoArgs),
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Read the event log of a running server.
    #[command(subcommand)]
    Events(client::EventsCommand),
    /// Follow server-side jobs (backfill, bulk replay, purge).
    #[command(subcommand)]
    Jobs(client::JobsCommand),
    /// The dead-letter queue: list, inspect, replay (optionally edited) or discard.
    #[command(subcommand)]
    Dlq(client::DlqCommand),
    /// Run a flow over events stored before it was configured (a server-side job).
    Backfill(client::BackfillArgs),
    /// Deliveries of the flows and their state.
    #[command(subcommand)]
    Deliveries(client::DeliveriesCommand),
    /// Destinations: circuit, credential pause, slots; resume a paused one.
    #[command(subcommand)]
    Destinations(client::DestinationsCommand),
    /// Business workflows: instances per state, or one workflow's instances.
    Workflows(monitor_cmd::WorkflowsArgs),
    /// Everything that happened to a business key across systems: events, deliveries,
    /// workflow instances and their findings.
    Trace(monitor_cmd::TraceArgs),
    /// Findings of the workflow monitor (breaches, at risk, stalled, out of sequence,
    /// duplicates, missing steps).
    Findings(monitor_cmd::FindingsArgs),
    /// Alerts: firing and resolved, with cause, severity, count and incident.
    Alerts(alerts_cmd::AlertsArgs),
    /// Incidents: list, show, acknowledge, resolve, comment; MTTA/MTTR statistics.
    #[command(subcommand)]
    Incidents(alerts_cmd::IncidentsCommand),
    /// Silences: add (label matchers, for a duration), list, expire.
    #[command(subcommand)]
    Silence(alerts_cmd::SilenceCommand),
    /// The alert route tree: which receivers an alert with given labels reaches.
    #[command(subcommand)]
    Routes(alerts_cmd::RoutesCommand),
    /// Odoo tools: run the Odoo simulator, probe the configured Odoo connections.
    #[command(subcommand)]
    Odoo(odoo_cmd::OdooCommand),
}

#[derive(Args, Debug, Clone, Default)]
pub struct ServeArgs {
    /// Listen address (overrides `server.listen`).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Business seconds per real second (overrides `clock.scale`); the demo uses it to pass
    /// a day in minutes.
    #[arg(long)]
    time_scale: Option<f64>,
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Create a token directly in the store (the bootstrap of the first admin token). The
    /// token is printed once.
    Create {
        #[arg(long)]
        role: Role,
        #[arg(long)]
        name: String,
    },
    /// List tokens (through the server; admin token).
    List(client::ClientArgs),
    /// Revoke a token by id (through the server; admin token).
    Revoke {
        id: i64,
        #[command(flatten)]
        client: client::ClientArgs,
    },
}

/// Checks that need the store and logging crates: reported with line numbers like the rest.
fn extra_checks(c: &Config) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let known_scheme = ["sqlite:", "postgres://", "postgresql://"]
        .iter()
        .any(|p| c.store.url.starts_with(p));
    // (an unknown scheme is already reported by the configuration's own checks)
    if known_scheme && let Err(e) = switchyard_store::check_url(&c.store.url) {
        let msg = match e {
            switchyard_store::Error::Url(m) => m,
            other => other.to_string(),
        };
        out.push(("store.url".to_string(), redact_url(&msg)));
    }
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&c.log.level) {
        out.push(("log.level".to_string(), format!("not a log filter: {e}")));
    }
    out
}

pub(crate) fn load_config(path: &std::path::Path) -> Result<Config, ExitCode> {
    // A missing default file means "all defaults"; a named file must exist.
    let text_exists = path.exists();
    let result = if !text_exists && path == std::path::Path::new("switchyard.toml") {
        Config::parse_checked(
            "",
            "(no switchyard.toml: defaults)",
            std::env::vars(),
            &extra_checks,
        )
    } else {
        Config::load_checked(path, std::env::vars(), &extra_checks)
    };
    result.map_err(|e| {
        eprint!("{e}");
        ExitCode::from(2)
    })
}

pub(crate) fn init_logging(config: &Config, format: Option<LogFormatArg>) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log.level));
    let json = match format {
        Some(LogFormatArg::Json) => true,
        Some(LogFormatArg::Text) => false,
        None => config.log.format == LogFormat::Json,
    };
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}

pub(crate) fn store_options(config: &Config) -> anyhow::Result<StoreOptions> {
    let password = match &config.store.password {
        Some(s) => Some(s.expose().context("store.password")?),
        None => None,
    };
    Ok(StoreOptions {
        pool_size: config.store.pool_size,
        writer_queue: config.store.writer_queue,
        password,
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Serve(args) => {
            let config = match load_config(&cli.config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            init_logging(&config, cli.log_format);
            serve::run(config, args).await
        }
        Command::Check => {
            return match load_config(&cli.config) {
                Ok(c) => {
                    let name = if cli.config.exists() {
                        cli.config.display().to_string()
                    } else {
                        format!("no {}; the defaults", cli.config.display())
                    };
                    println!(
                        "{}: configuration is valid (store {}, listening on {})",
                        name,
                        redact_url(&c.store.url),
                        c.server.listen
                    );
                    ExitCode::SUCCESS
                }
                Err(code) => code,
            };
        }
        Command::Migrate => {
            let config = match load_config(&cli.config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            init_logging(&config, cli.log_format);
            migrate(&config).await
        }
        Command::Token(TokenCommand::Create { role, name }) => {
            let config = match load_config(&cli.config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            token_create(&config, role, &name).await
        }
        Command::Token(TokenCommand::List(c)) => client::token_list(&c).await,
        Command::Token(TokenCommand::Revoke { id, client }) => {
            client::token_revoke(&client, id).await
        }
        Command::Events(cmd) => client::events(cmd).await,
        Command::Jobs(cmd) => client::jobs(cmd).await,
        Command::Dlq(cmd) => client::dlq(cmd).await,
        Command::Backfill(args) => client::backfill(args).await,
        Command::Deliveries(cmd) => client::deliveries(cmd).await,
        Command::Destinations(cmd) => client::destinations(cmd).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Workflows(a) => monitor_cmd::workflows(a).await,
        Command::Trace(a) => monitor_cmd::trace(a).await,
        Command::Findings(a) => monitor_cmd::findings(a).await,
        Command::Alerts(a) => alerts_cmd::alerts(a).await,
        Command::Incidents(cmd) => alerts_cmd::incidents(cmd).await,
        Command::Silence(cmd) => alerts_cmd::silence(cmd).await,
        Command::Routes(cmd) => alerts_cmd::routes(cmd).await,
        Command::Odoo(cmd) => return odoo_cmd::run(cmd, &cli.config, cli.log_format).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn migrate(config: &Config) -> anyhow::Result<()> {
    let store = switchyard_store::open(&config.store.url, &store_options(config)?)
        .await
        .with_context(|| format!("opening {}", redact_url(&config.store.url)))?;
    store.close().await;
    println!("{}: schema is up to date", redact_url(&config.store.url));
    Ok(())
}

async fn token_create(config: &Config, role: Role, name: &str) -> anyhow::Result<()> {
    check_token_name(name).map_err(anyhow::Error::msg)?;
    let store = switchyard_store::open(&config.store.url, &store_options(config)?)
        .await
        .with_context(|| format!("opening {}", redact_url(&config.store.url)))?;
    let secret = generate_token();
    let rec = store
        .create_token(
            NewToken {
                name: name.to_string(),
                role,
                hash: hash_token(&secret),
                created_at: SystemClock.now(),
            },
            "cli",
        )
        .await;
    store.close().await;
    let rec = rec?;
    eprintln!(
        "created token {} \"{}\" with role {} (shown once; store it now):",
        rec.id, rec.name, rec.role
    );
    println!("{secret}");
    Ok(())
}

/// A store URL safe to print: any password is replaced.
pub(crate) fn redact_url(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_are_not_printed() {
        assert_eq!(
            redact_url("postgres://sy:pw@db:5432/x"),
            "postgres://sy:***@db:5432/x"
        );
        assert_eq!(redact_url("postgres://sy@db/x"), "postgres://sy@db/x");
        assert_eq!(redact_url("sqlite://./a.db"), "sqlite://./a.db");
    }
}
