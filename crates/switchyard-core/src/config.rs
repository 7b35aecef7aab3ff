//! Configuration: one TOML file, with `SWITCHYARD__SECTION__KEY=value` environment overrides,
//! deserialised into typed structs that refuse unknown keys.
//!
//! [`Config::parse`] reports *every* problem it can find, each with the file, line and key,
//! so `switchyard check` and `switchyard serve` print the same list. It never reads the
//! value of a secret into an error message.

use crate::secret::Secret;
use serde::Deserialize;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

/// Prefix of environment variables that override configuration keys. Path segments are
/// separated by a double underscore: `SWITCHYARD__STORE__URL=postgres://…`.
pub const ENV_PREFIX: &str = "SWITCHYARD__";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub ingest: IngestConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub node: NodeConfig,
    #[serde(default)]
    pub clock: ClockConfig,
    #[serde(default)]
    pub retention: RetentionConfig,
    /// Declared sources: CloudEvents senders and named webhook endpoints.
    #[serde(default)]
    pub sources: Vec<crate::sources::SourceConfig>,
    /// Where flows send their payloads.
    #[serde(default)]
    pub destinations: Vec<crate::flows::DestinationConfig>,
    /// Which events go where, mapped and validated how.
    #[serde(default)]
    pub flows: Vec<crate::flows::FlowConfig>,
    #[serde(default)]
    pub delivery: DeliveryConfig,
    /// Business workflows the monitor follows across systems (`[[workflows]]`).
    #[serde(default)]
    pub workflows: Vec<crate::workflows::WorkflowConfig>,
    /// Batch jobs the monitor expects heartbeats from (`[[batch_monitors]]`).
    #[serde(default)]
    pub batch_monitors: Vec<crate::batch::BatchMonitorConfig>,
    /// Scheduled comparisons of Odoo's data with another system's (`[[reconciliations]]`).
    #[serde(default)]
    pub reconciliations: Vec<crate::reconcile::ReconciliationConfig>,
    /// The workflow monitor's own settings.
    #[serde(default)]
    pub monitor: MonitorConfig,
    /// The alerting service's settings (`[alerting]`).
    #[serde(default)]
    pub alerting: crate::alerts::AlertingConfig,
    /// Rules that turn findings, measures and delivery outcomes into alerts.
    #[serde(default)]
    pub alert_rules: Vec<crate::alerts::AlertRuleConfig>,
    /// The routing tree: which receivers each alert reaches, grouped how.
    pub route: Option<crate::alerts::RouteConfig>,
    /// Teams' notifiers.
    #[serde(default)]
    pub receivers: Vec<crate::alerts::ReceiverConfig>,
    /// Alerts that suppress others while they fire.
    #[serde(default)]
    pub inhibit_rules: Vec<crate::alerts::InhibitRuleConfig>,
    /// Recurring times during which matching alerts are suppressed.
    #[serde(default)]
    pub maintenance_windows: Vec<crate::alerts::MaintenanceWindowConfig>,
    /// Odoo servers (`[[odoo]]`).
    #[serde(default)]
    pub odoo: Vec<crate::odoo::OdooConnectionConfig>,
    /// API-health probes of Odoo connections and HTTP destinations.
    #[serde(default)]
    pub probes: crate::odoo::ProbeConfig,
    /// The configuration file's directory (relative schema files are read from it).
    #[serde(skip)]
    pub base_dir: Option<std::path::PathBuf>,
}

/// The workflow monitor's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorConfig {
    /// Days a completed or cancelled instance is kept before it is archived (removed with
    /// its keys; its findings stay).
    #[serde(default = "default_archive_after_days")]
    pub archive_after_days: u32,
    /// Events applied per monitor transaction.
    #[serde(default = "default_monitor_page")]
    pub page_size: u32,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            archive_after_days: default_archive_after_days(),
            page_size: default_monitor_page(),
        }
    }
}

fn default_archive_after_days() -> u32 {
    30
}
fn default_monitor_page() -> u32 {
    500
}

/// The delivery engine's own settings (per node).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    /// Seconds a claimed delivery stays leased (real time); a node that dies mid-delivery
    /// loses it after this long and another node delivers it again.
    #[serde(default = "default_lease_seconds")]
    pub lease_seconds: u64,
    /// Milliseconds between looks at the queue when nothing woke the engine (retries that
    /// come due, work other nodes wrote).
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
    /// Deliveries in flight per priority lane.
    #[serde(default)]
    pub lanes: LaneConcurrency,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaneConcurrency {
    #[serde(default = "default_critical")]
    pub critical: u32,
    #[serde(default = "default_standard")]
    pub standard: u32,
    #[serde(default = "default_bulk")]
    pub bulk: u32,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            lease_seconds: default_lease_seconds(),
            poll_ms: default_poll_ms(),
            lanes: LaneConcurrency::default(),
        }
    }
}

impl Default for LaneConcurrency {
    fn default() -> Self {
        Self {
            critical: default_critical(),
            standard: default_standard(),
            bulk: default_bulk(),
        }
    }
}

impl LaneConcurrency {
    pub fn of(&self, lane: crate::delivery::Lane) -> u32 {
        match lane {
            crate::delivery::Lane::Critical => self.critical,
            crate::delivery::Lane::Standard => self.standard,
            crate::delivery::Lane::Bulk => self.bulk,
        }
    }
}

fn default_lease_seconds() -> u64 {
    60
}
fn default_poll_ms() -> u64 {
    250
}
fn default_critical() -> u32 {
    64
}
fn default_standard() -> u32 {
    64
}
fn default_bulk() -> u32 {
    16
}

/// Default retention, for every source that does not set its own.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Days an event's payload (data) is kept, by the time it was received.
    #[serde(default = "default_payload_days")]
    pub payload_days: u32,
    /// Days the slim row (attributes, keys, `(source, id)` for deduplication) is kept.
    #[serde(default = "default_dedupe_days")]
    pub dedupe_days: u32,
    /// Seconds between background purge runs (real time), each in small batches.
    #[serde(default = "default_retention_every")]
    pub every_seconds: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            payload_days: default_payload_days(),
            dedupe_days: default_dedupe_days(),
            every_seconds: default_retention_every(),
        }
    }
}

fn default_payload_days() -> u32 {
    30
}
fn default_dedupe_days() -> u32 {
    90
}
fn default_retention_every() -> u64 {
    60
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address the HTTP server listens on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Seconds to finish in-flight requests after SIGTERM before giving up.
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace_seconds: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            shutdown_grace_seconds: default_shutdown_grace(),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_shutdown_grace() -> u64 {
    30
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite://./switchyard.db` (embedded default) or `postgres://user@host:5432/db`.
    #[serde(default = "default_store_url")]
    pub url: String,
    /// Password for PostgreSQL, as a secret reference, if the URL does not carry one.
    #[serde(default)]
    pub password: Option<Secret>,
    /// Connections for readers (SQLite) or for everything (PostgreSQL).
    #[serde(default = "default_pool_size")]
    pub pool_size: u32,
    /// Write requests that may wait for the writer before ingest answers 429.
    #[serde(default = "default_writer_queue")]
    pub writer_queue: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: default_store_url(),
            password: None,
            pool_size: default_pool_size(),
            writer_queue: default_writer_queue(),
        }
    }
}

fn default_store_url() -> String {
    "sqlite://./switchyard.db".into()
}
fn default_pool_size() -> u32 {
    8
}
fn default_writer_queue() -> usize {
    4096
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// Largest request body accepted, in bytes; enforced while reading.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Origins answered in the CloudEvents webhook validation handshake (`*` = any).
    #[serde(default = "default_allowed_origins")]
    pub allowed_origins: Vec<String>,
    /// Whether CloudEvents from a `source` no `[[sources]]` entry declares are accepted.
    #[serde(default = "default_true")]
    pub accept_undeclared_sources: bool,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: default_max_body(),
            allowed_origins: default_allowed_origins(),
            accept_undeclared_sources: true,
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_max_body() -> usize {
    1024 * 1024
}
fn default_allowed_origins() -> Vec<String> {
    vec!["*".into()]
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(default)]
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info` or `switchyard_store=debug,info`.
    #[serde(default = "default_log_level")]
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: default_log_level(),
        }
    }
}

fn default_log_level() -> String {
    "info".into()
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's name among the nodes sharing a store; default: host name and a random suffix.
    #[serde(default)]
    pub id: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockConfig {
    /// Business seconds per real second (1 = real time). `--time-scale` overrides it.
    #[serde(default = "default_scale")]
    pub scale: f64,
}

impl Default for ClockConfig {
    fn default() -> Self {
        Self {
            scale: default_scale(),
        }
    }
}

fn default_scale() -> f64 {
    1.0
}

/// One problem in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, or `environment` for an override.
    pub origin: String,
    /// 1-based line and column, when the key is in the file.
    pub line: Option<(usize, usize)>,
    /// Dotted key path, e.g. `store.url` or `sources[2].name`; empty for syntax errors.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.origin)?;
        if let Some((l, c)) = self.line {
            write!(f, ":{l}:{c}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(
            f,
            "{n} problem{} in the configuration:",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A path segment: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

fn path_string(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

impl Config {
    /// Reads and parses a configuration file, applying overrides from `env`.
    pub fn load(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigErrors> {
        Config::load_checked(path, env, &|_| Vec::new())
    }

    /// Parses configuration text. `origin` names it in errors; `env` are candidate overrides
    /// (only `SWITCHYARD__…` variables are used).
    pub fn parse(
        text: &str,
        origin: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigErrors> {
        Config::parse_checked(text, origin, env, &|_| Vec::new())
    }

    /// Like [`Config::load`], with `extra` checks that need more than this crate knows (a
    /// store URL's parameters, a log filter's syntax): each `(dotted key, problem)` is
    /// reported with its line like every other problem.
    pub fn load_checked(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
        extra: &dyn Fn(&Config) -> Vec<(String, String)>,
    ) -> Result<Config, ConfigErrors> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                origin: origin.clone(),
                line: None,
                key: String::new(),
                message: format!("cannot read the configuration file: {e}"),
            }])
        })?;
        let base = path.parent().map(|p| {
            if p.as_os_str().is_empty() {
                std::path::PathBuf::from(".")
            } else {
                p.to_path_buf()
            }
        });
        Config::parse_in(&text, &origin, base, env, extra)
    }

    /// [`Config::parse`] with `extra` checks (see [`Config::load_checked`]).
    pub fn parse_checked(
        text: &str,
        origin: &str,
        env: impl IntoIterator<Item = (String, String)>,
        extra: &dyn Fn(&Config) -> Vec<(String, String)>,
    ) -> Result<Config, ConfigErrors> {
        Config::parse_in(text, origin, None, env, extra)
    }

    fn parse_in(
        text: &str,
        origin: &str,
        base_dir: Option<std::path::PathBuf>,
        env: impl IntoIterator<Item = (String, String)>,
        extra: &dyn Fn(&Config) -> Vec<(String, String)>,
    ) -> Result<Config, ConfigErrors> {
        let located = |path: &[Seg], message: String, doc: &toml_edit::Document<&str>| {
            let (origin, line) = match locate(doc, path, text) {
                Some(lc) => (origin.to_string(), Some(lc)),
                None => (origin.to_string(), None),
            };
            ConfigError {
                origin,
                line,
                key: path_string(path),
                message,
            }
        };

        let doc = toml_edit::Document::parse(text).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                origin: origin.to_string(),
                line: e.span().map(|s| line_col(text, s.start)),
                key: String::new(),
                message: e.message().trim().to_string(),
            }])
        })?;
        let mut work = doc.clone().into_mut();
        let mut errors = Vec::new();

        // Environment overrides: each becomes a key in the working document; problems with
        // them are reported against the variable, not the file.
        let mut from_env: Vec<(Vec<Seg>, String)> = Vec::new();
        let mut env: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        env.sort();
        for (name, value) in env {
            let segs: Vec<String> = name[ENV_PREFIX.len()..]
                .split("__")
                .map(|s| s.to_ascii_lowercase())
                .collect();
            if segs.iter().any(String::is_empty) {
                errors.push(ConfigError {
                    origin: "environment".into(),
                    line: None,
                    key: name.clone(),
                    message: "empty key segment in override name".into(),
                });
                continue;
            }
            let item = value
                .parse::<toml_edit::Value>()
                .unwrap_or_else(|_| toml_edit::Value::from(value.as_str()));
            if let Err(m) = set_path(&mut work, &segs, item) {
                errors.push(ConfigError {
                    origin: "environment".into(),
                    line: None,
                    key: name.clone(),
                    message: m,
                });
                continue;
            }
            from_env.push((segs.into_iter().map(Seg::Key).collect(), name));
        }

        let describe = |path: &[Seg], message: String| -> ConfigError {
            // The override that set this key, or that created it (e.g. an unknown section
            // `SWITCHYARD__METRICS__X`, reported at `metrics`, which the file does not have).
            let var = from_env
                .iter()
                .find(|(p, _)| path.starts_with(p))
                .or_else(|| {
                    from_env.iter().find(|(p, _)| {
                        !path.is_empty() && p.starts_with(path) && !in_file(&doc, path)
                    })
                });
            if let Some((_, var)) = var {
                ConfigError {
                    origin: "environment".into(),
                    line: None,
                    key: format!("{var} ({})", path_string(path)),
                    message,
                }
            } else {
                located(path, message, &doc)
            }
        };

        // Deserialise; on an error, record it, remove the offending key and try again, so
        // one run reports every structural problem rather than only the first.
        let mut config = None;
        // Keys removed after an error; defaults stand in for them, so checks that depend on
        // them are skipped rather than reporting problems the user did not write.
        let mut removed: Vec<Vec<Seg>> = Vec::new();
        for _ in 0..64 {
            let rendered = work.to_string();
            let de = match toml::Deserializer::parse(&rendered) {
                Ok(de) => de,
                Err(e) => {
                    errors.push(describe(&[], e.message().to_string()));
                    break;
                }
            };
            match serde_path_to_error::deserialize::<_, Config>(de) {
                Ok(mut c) => {
                    c.base_dir = base_dir.clone();
                    config = Some(c);
                    break;
                }
                Err(e) => {
                    let mut path = to_segs(e.path());
                    let mut message = e.inner().message().trim().to_string();
                    if let Some(field) = unknown_field(&message)
                        && path.last() != Some(&Seg::Key(field.clone()))
                    {
                        path.push(Seg::Key(field));
                    }
                    if is_secret_key(&path_string(&path)) {
                        // e.g. "invalid type: integer `123456`": never echo a secret's value.
                        message = without_quoted_values(&message);
                    }
                    let missing = message.starts_with("missing field");
                    errors.push(describe(&path, message));
                    // A missing field cannot be removed; deserialising again would repeat it.
                    if missing || path.is_empty() || !remove_path(&mut work, &path) {
                        break;
                    }
                    removed.push(path);
                }
            }
        }

        if let Some(c) = &config {
            let broken = |key: &str| {
                let segs: Vec<Seg> = key.split('.').map(|s| Seg::Key(s.to_string())).collect();
                removed.iter().any(|r| segs.starts_with(r))
            };
            let extra = extra(c).into_iter().filter(|(k, _)| !broken(k));
            for (path, message) in c.validate(&broken).into_iter().chain(extra) {
                let segs = parse_path(&path);
                errors.push(describe(&segs, message));
            }
        }
        errors.sort_by_key(|e| (e.origin != origin, e.line.unwrap_or((usize::MAX, 0))));
        match config {
            Some(c) if errors.is_empty() => Ok(c),
            _ => Err(ConfigErrors(errors)),
        }
    }

    /// `[[reconciliations]]`, compiled against the `[[odoo]]` connections and the batch
    /// monitors' names.
    pub fn compiled_reconciliations(
        &self,
    ) -> Result<crate::reconcile::Reconciliations, Vec<(String, String)>> {
        let odoo: Vec<String> = self.odoo.iter().map(|o| o.name.clone()).collect();
        let taken: Vec<String> = self.batch_monitors.iter().map(|b| b.name.clone()).collect();
        crate::reconcile::Reconciliations::compile(&self.reconciliations, &odoo, &taken)
    }

    /// Semantic checks that types alone cannot express: (dotted key, problem). `broken(key)`
    /// is true for keys whose value was rejected (and replaced by the default), so checks
    /// across keys do not blame one key for another's default.
    fn validate(&self, broken: &dyn Fn(&str) -> bool) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Err(problems) = crate::sources::Sources::compile(self) {
            out.extend(problems);
        }
        if let Err(problems) = crate::flows::Flows::compile(self) {
            out.extend(problems);
        }
        if let Err(problems) = crate::workflows::Workflows::compile(self) {
            out.extend(problems);
        }
        if let Err(problems) = crate::batch::BatchMonitors::compile(&self.batch_monitors) {
            out.extend(problems);
        }
        if let Err(problems) = self.compiled_reconciliations() {
            out.extend(problems);
        }
        if let Err(problems) = crate::alerts::Alerting::compile(self) {
            out.extend(problems);
        }
        out.extend(crate::odoo::validate(&self.odoo, &self.probes));
        if self.monitor.archive_after_days == 0 {
            out.push((
                "monitor.archive_after_days".into(),
                "must be at least 1".into(),
            ));
        }
        if !(1..=5000).contains(&self.monitor.page_size) {
            out.push((
                "monitor.page_size".into(),
                "must be between 1 and 5000".into(),
            ));
        }
        if self.delivery.lease_seconds < 5 {
            out.push(("delivery.lease_seconds".into(), "must be at least 5".into()));
        }
        if self.delivery.poll_ms == 0 {
            out.push(("delivery.poll_ms".into(), "must be at least 1".into()));
        }
        for lane in crate::delivery::Lane::ALL {
            if self.delivery.lanes.of(lane) == 0 {
                out.push((
                    format!("delivery.lanes.{}", lane.as_str()),
                    "must be at least 1".into(),
                ));
            }
        }
        if self.retention.payload_days == 0 {
            out.push(("retention.payload_days".into(), "must be at least 1".into()));
        }
        if self.retention.dedupe_days < self.retention.payload_days {
            out.push((
                "retention.dedupe_days".into(),
                "must be at least payload_days: the dedupe index must outlive the payload".into(),
            ));
        }
        if self.retention.every_seconds == 0 {
            out.push((
                "retention.every_seconds".into(),
                "must be at least 1".into(),
            ));
        }
        let url = &self.store.url;
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            out.push((
                "store.url".into(),
                format!(
                    "\"{}\" is neither a sqlite:// nor a postgres:// URL",
                    redact_url(url)
                ),
            ));
        }
        if let Some(p) = &self.store.password {
            if url.starts_with("sqlite:") && !broken("store.url") {
                out.push((
                    "store.password".into(),
                    "a SQLite store has no password".into(),
                ));
            }
            if let Err(e) = p.expose() {
                out.push(("store.password".into(), e.to_string()));
            }
        }
        if self.store.pool_size == 0 {
            out.push(("store.pool_size".into(), "must be at least 1".into()));
        }
        if self.store.writer_queue == 0 {
            out.push(("store.writer_queue".into(), "must be at least 1".into()));
        }
        if self.ingest.max_body_bytes < 1024 {
            out.push((
                "ingest.max_body_bytes".into(),
                "must be at least 1024 bytes".into(),
            ));
        }
        if !(self.clock.scale.is_finite() && self.clock.scale > 0.0) {
            out.push(("clock.scale".into(), "must be a positive number".into()));
        }
        if let Some(id) = &self.node.id
            && (id.is_empty() || id.len() > 64)
        {
            out.push(("node.id".into(), "must be 1 to 64 characters".into()));
        }
        out
    }
}

/// Keys holding a [`Secret`]: their values never appear in messages.
/// Keys holding secrets (or lists of them): their values never appear in a message.
fn is_secret_key(key: &str) -> bool {
    key == "store.password"
        || key.contains(".secrets")
        || key.ends_with(".verify")
        || key.ends_with(".auth")
        || key.contains(".auth.")
        || key.ends_with(".signing_secret")
        || key.ends_with(".secret")
}

/// Removes `` `…` `` quoted values from a serde message: "invalid type: integer `123`,
/// expected a string" becomes "invalid type: integer, expected a string".
fn without_quoted_values(message: &str) -> String {
    let mut out = String::new();
    let mut rest = message;
    while let Some(i) = rest.find(" `") {
        let Some(j) = rest[i + 2..].find('`') else {
            break;
        };
        out.push_str(&rest[..i]);
        rest = &rest[i + 2 + j + 1..];
    }
    out.push_str(rest);
    out
}

/// The URL with the password of its user info, if any, replaced by `***`.
fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let authority_end = url[scheme_end..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| scheme_end + i);
    let authority = &url[scheme_end..authority_end];
    match authority.rfind('@') {
        Some(at) => match authority[..at].find(':') {
            Some(colon) => format!(
                "{}{}:***{}",
                &url[..scheme_end],
                &authority[..colon],
                &url[scheme_end + at..]
            ),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// Whether every key of `path` is present in the original document.
fn in_file(doc: &toml_edit::Document<&str>, path: &[Seg]) -> bool {
    let mut item = doc.as_item();
    for seg in path {
        let found = match seg {
            Seg::Key(k) => item.get(k.as_str()),
            Seg::Index(i) => item.get(*i),
        };
        match found {
            Some(i) => item = i,
            None => return false,
        }
    }
    true
}

/// `sources[2].keys.order` → [Key(sources), Index(2), Key(keys), Key(order)].
fn parse_path(path: &str) -> Vec<Seg> {
    let mut segs = Vec::new();
    for part in path.split('.') {
        let mut rest = part;
        if let Some(i) = rest.find('[') {
            segs.push(Seg::Key(rest[..i].to_string()));
            rest = &rest[i..];
            while let Some(end) = rest.find(']') {
                if let Ok(n) = rest[1..end].parse() {
                    segs.push(Seg::Index(n));
                }
                rest = &rest[end + 1..];
            }
        } else {
            segs.push(Seg::Key(rest.to_string()));
        }
    }
    segs
}

fn unknown_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    Some(rest[..rest.find('`')?].to_string())
}

fn to_segs(path: &serde_path_to_error::Path) -> Vec<Seg> {
    use serde_path_to_error::Segment;
    path.iter()
        .filter_map(|s| match s {
            Segment::Map { key } => Some(Seg::Key(key.clone())),
            Segment::Seq { index } => Some(Seg::Index(*index)),
            Segment::Enum { variant } => Some(Seg::Key(variant.clone())),
            Segment::Unknown => None,
        })
        .collect()
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    // Columns count characters, as editors do, not bytes.
    let col = before[before.rfind('\n').map_or(0, |i| i + 1)..]
        .chars()
        .count()
        + 1;
    (line, col)
}

/// The line and column of the deepest part of `path` found in the original document.
fn locate(doc: &toml_edit::Document<&str>, path: &[Seg], text: &str) -> Option<(usize, usize)> {
    locate_table(doc.as_table(), path, None).map(|o| line_col(text, o))
}

fn start(span: Option<std::ops::Range<usize>>) -> Option<usize> {
    span.map(|s| s.start)
}

fn locate_table(t: &toml_edit::Table, path: &[Seg], best: Option<usize>) -> Option<usize> {
    let Some((Seg::Key(k), rest)) = path.split_first() else {
        return best;
    };
    match t.get_key_value(k) {
        Some((key, item)) => locate_item(item, rest, start(key.span()).or(best)),
        None => best,
    }
}

fn locate_item(item: &toml_edit::Item, path: &[Seg], best: Option<usize>) -> Option<usize> {
    use toml_edit::{Item, Value};
    let Some((seg, rest)) = path.split_first() else {
        return best.or(start(item.span()));
    };
    match (seg, item) {
        (Seg::Key(_), Item::Table(t)) => locate_table(t, path, best),
        (Seg::Key(k), Item::Value(Value::InlineTable(t))) => match t.get_key_value(k) {
            Some((key, it)) => locate_item(it, rest, start(key.span()).or(best)),
            None => best,
        },
        (Seg::Index(i), Item::ArrayOfTables(a)) => match a.get(*i) {
            Some(t) => locate_table(t, rest, start(t.span()).or(best)),
            None => best,
        },
        (Seg::Index(i), Item::Value(Value::Array(a))) => {
            start(a.get(*i).and_then(|v| v.span())).or(best)
        }
        _ => best,
    }
}

fn set_path(
    doc: &mut toml_edit::DocumentMut,
    segs: &[String],
    value: toml_edit::Value,
) -> Result<(), String> {
    let (last, parents) = segs.split_last().ok_or("empty key")?;
    let mut table: &mut toml_edit::Table = doc.as_table_mut();
    for (i, p) in parents.iter().enumerate() {
        let entry = table
            .entry(p)
            .or_insert_with(|| toml_edit::Item::Table(toml_edit::Table::new()));
        // `store = { url = "…" }` is a table too; make it a regular one to insert into.
        if let toml_edit::Item::Value(toml_edit::Value::InlineTable(t)) = entry {
            *entry = toml_edit::Item::Table(std::mem::take(t).into_table());
        }
        table = match entry {
            toml_edit::Item::Table(t) => t,
            _ => {
                return Err(format!(
                    "`{}` is not a table, cannot override a key inside it",
                    segs[..=i].join(".")
                ));
            }
        };
    }
    table.insert(last, toml_edit::Item::Value(value));
    Ok(())
}

fn remove_path(doc: &mut toml_edit::DocumentMut, path: &[Seg]) -> bool {
    fn remove_in(item: &mut toml_edit::Item, path: &[Seg]) -> bool {
        let Some((first, rest)) = path.split_first() else {
            return false;
        };
        match (first, item) {
            (Seg::Key(k), toml_edit::Item::Table(t)) => {
                if rest.is_empty() {
                    t.remove(k).is_some()
                } else {
                    t.get_mut(k).is_some_and(|i| remove_in(i, rest))
                }
            }
            (Seg::Key(k), toml_edit::Item::Value(toml_edit::Value::InlineTable(t))) => {
                if rest.is_empty() {
                    t.remove(k).is_some()
                } else {
                    match t.get_mut(k) {
                        Some(v) => {
                            let mut it = toml_edit::Item::Value(v.clone());
                            let ok = remove_in(&mut it, rest);
                            if ok && let toml_edit::Item::Value(nv) = it {
                                *v = nv;
                            }
                            ok
                        }
                        None => false,
                    }
                }
            }
            (Seg::Index(i), toml_edit::Item::ArrayOfTables(a)) => {
                if rest.is_empty() {
                    if *i < a.len() {
                        a.remove(*i);
                        true
                    } else {
                        false
                    }
                } else {
                    match a.get_mut(*i) {
                        Some(t) => {
                            let mut it = toml_edit::Item::Table(t.clone());
                            let ok = remove_in(&mut it, rest);
                            if ok && let toml_edit::Item::Table(nt) = it {
                                *t = nt;
                            }
                            ok
                        }
                        None => false,
                    }
                }
            }
            _ => false,
        }
    }
    let mut root = toml_edit::Item::Table(doc.as_table().clone());
    let ok = remove_in(&mut root, path);
    if ok && let toml_edit::Item::Table(t) = root {
        *doc.as_table_mut() = t;
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env() -> Vec<(String, String)> {
        Vec::new()
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = Config::parse("", "t.toml", no_env()).unwrap();
        assert_eq!(c.store.url, "sqlite://./switchyard.db");
        assert_eq!(c.ingest.max_body_bytes, 1024 * 1024);
        assert_eq!(c.server.listen.port(), 8080);
    }

    #[test]
    fn environment_overrides_file() {
        let c = Config::parse(
            "[store]\nurl = \"sqlite://a.db\"\n",
            "t.toml",
            vec![
                ("SWITCHYARD__STORE__URL".into(), "postgres://x@h/db".into()),
                ("SWITCHYARD__INGEST__MAX_BODY_BYTES".into(), "2048".into()),
                ("UNRELATED".into(), "1".into()),
            ],
        )
        .unwrap();
        assert_eq!(c.store.url, "postgres://x@h/db");
        assert_eq!(c.ingest.max_body_bytes, 2048);
    }

    #[test]
    fn every_problem_is_reported_with_its_line() {
        let text = "[server]\nlisten = \"nope\"\nbogus = 1\n\n[store]\nurl = \"mysql://x\"\npool_size = 0\n";
        let e = Config::parse(text, "t.toml", no_env()).unwrap_err();
        let lines: Vec<String> = e.0.iter().map(|e| e.to_string()).collect();
        assert_eq!(lines.len(), 4, "{lines:#?}");
        assert!(
            lines[0].starts_with("t.toml:2:1: server.listen: "),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].starts_with("t.toml:3:1: server.bogus: unknown field"),
            "{}",
            lines[1]
        );
        assert!(
            lines[2].starts_with("t.toml:6:1: store.url: "),
            "{}",
            lines[2]
        );
        assert!(
            lines[3].starts_with("t.toml:7:1: store.pool_size: must be at least 1"),
            "{}",
            lines[3]
        );
    }

    #[test]
    fn bad_override_names_the_variable() {
        let e = Config::parse(
            "",
            "t.toml",
            vec![("SWITCHYARD__STORE__POOL_SIZE".into(), "many".into())],
        )
        .unwrap_err();
        assert_eq!(e.0.len(), 1);
        assert_eq!(e.0[0].origin, "environment");
        assert!(
            e.0[0].key.contains("SWITCHYARD__STORE__POOL_SIZE"),
            "{}",
            e.0[0]
        );
    }
}
