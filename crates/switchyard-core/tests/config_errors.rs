//! Snapshot tests of the problems `Config::parse` reports: the exact text that
//! `switchyard check` and `switchyard serve` print, with file, line, column and key.

use switchyard_core::config::{Config, ConfigErrors};

const FILE: &str = "switchyard.toml";

/// An environment variable that no test sets and no sane machine has.
const UNSET_VAR: &str = "SWITCHYARD_TEST_SECRET_THAT_IS_NEVER_SET_9F2C";

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Parses `text` with the given overrides and returns the errors' Display output;
/// panics if the configuration was accepted.
fn errors(text: &str, overrides: &[(&str, &str)]) -> String {
    match Config::parse(text, FILE, env(overrides)) {
        Ok(c) => panic!("configuration unexpectedly accepted: {c:#?}"),
        Err(e) => render(&e),
    }
}

fn render(e: &ConfigErrors) -> String {
    e.to_string()
}

#[test]
fn syntax_error_has_line_and_column() {
    let text = "\
[server]
listen = \"127.0.0.1:8080\"

[store]
url = \"sqlite://./a.db
pool_size = 4
";
    insta::assert_snapshot!(errors(text, &[]));
}

#[test]
fn unknown_top_level_section() {
    let text = "\
[server]
listen = \"127.0.0.1:8080\"

[storage]
url = \"sqlite://./a.db\"
";
    insta::assert_snapshot!(errors(text, &[]));
}

#[test]
fn unknown_key_in_section() {
    let text = "\
[store]
url = \"sqlite://./a.db\"
poolsize = 4
";
    insta::assert_snapshot!(errors(text, &[]));
}

#[test]
fn several_problems_reported_in_file_order() {
    let text = "\
# Switchyard configuration
[server]
listen = \"0.0.0.0:80\"
shutdown_grace_seconds = \"soon\"

[store]
url = \"sqlite://./a.db\"
colour = \"blue\"
pool_size = 0

[ingest]
max_body_bytes = 10

[log]
format = \"xml\"

[metrics]
enabled = true
";
    insta::assert_snapshot!(errors(text, &[]));
}

#[test]
fn wrong_type_string_for_integer() {
    let text = "\
[store]
pool_size = \"eight\"
";
    insta::assert_snapshot!(errors(text, &[]));
}

#[test]
fn bad_socket_address() {
    let text = "\
[server]
shutdown_grace_seconds = 10
listen = \"localhost\"
";
    insta::assert_snapshot!(errors(text, &[]));
}

#[test]
fn bad_store_url_scheme() {
    let text = "\
[log]
level = \"debug\"

[store]
url = \"mysql://user@db:3306/switchyard\"
";
    insta::assert_snapshot!(errors(text, &[]));
}

#[test]
fn secret_given_as_literal() {
    let text = "\
[store]
url = \"postgres://switchyard@db:5432/switchyard\"
password = \"hunter2\"
";
    let out = errors(text, &[]);
    assert!(!out.contains("hunter2"), "secret value leaked: {out}");
    insta::assert_snapshot!(out);
}

#[test]
fn secret_env_var_not_set() {
    assert!(std::env::var_os(UNSET_VAR).is_none());
    let text = format!(
        "\
[store]
url = \"postgres://switchyard@db:5432/switchyard\"
password = \"env:{UNSET_VAR}\"
"
    );
    insta::assert_snapshot!(errors(&text, &[]));
}

#[test]
fn bad_values_from_environment_overrides() {
    let text = "\
[server]
listen = \"127.0.0.1:8080\"

[store]
url = \"sqlite://./a.db\"
";
    insta::assert_snapshot!(errors(
        text,
        &[
            ("SWITCHYARD__SERVER__LISTEN", "not-an-address"),
            ("SWITCHYARD__STORE__POOL_SIZE", "many"),
            ("SWITCHYARD__STORE__URL", "redis://cache:6379"),
            ("SWITCHYARD__STORE__BOGUS", "1"),
            ("SWITCHYARD__", "1"),
            ("UNRELATED_VARIABLE", "ignored"),
        ],
    ));
}

#[test]
fn override_of_unknown_section_names_the_variable() {
    insta::assert_snapshot!(errors(
        "[store]\nurl = \"sqlite://./a.db\"\n",
        &[("SWITCHYARD__METRICS__ENABLED", "true")],
    ));
}

#[test]
fn file_and_environment_problems_together() {
    let text = "\
[store]
pool_size = 0
";
    insta::assert_snapshot!(errors(
        text,
        &[("SWITCHYARD__INGEST__MAX_BODY_BYTES", "12")],
    ));
}

#[test]
fn override_into_a_non_table() {
    let text = "\
[store]
url = \"sqlite://./a.db\"
";
    insta::assert_snapshot!(errors(
        text,
        &[("SWITCHYARD__STORE__URL__HOST", "db.internal")],
    ));
}

#[test]
fn valid_file_with_overrides() {
    let text = "\
[server]
listen = \"0.0.0.0:8080\"
shutdown_grace_seconds = 5

[store]
url = \"sqlite://./a.db\"
pool_size = 2

[log]
format = \"json\"
level = \"info\"

[node]
id = \"node-a\"
";
    let c = Config::parse(
        text,
        FILE,
        env(&[
            ("SWITCHYARD__SERVER__LISTEN", "127.0.0.1:9000"),
            (
                "SWITCHYARD__STORE__URL",
                "postgres://switchyard@db/switchyard",
            ),
            ("SWITCHYARD__STORE__POOL_SIZE", "16"),
            ("SWITCHYARD__INGEST__MAX_BODY_BYTES", "4096"),
            (
                "SWITCHYARD__INGEST__ALLOWED_ORIGINS",
                r#"["https://a.example"]"#,
            ),
            ("SWITCHYARD__CLOCK__SCALE", "60.0"),
            ("SWITCHYARD__log__level", "debug"),
            ("OTHER__STORE__URL", "mysql://ignored"),
        ]),
    )
    .unwrap_or_else(|e| panic!("{e}"));

    assert_eq!(c.server.listen, "127.0.0.1:9000".parse().unwrap());
    assert_eq!(c.server.shutdown_grace_seconds, 5);
    assert_eq!(c.store.url, "postgres://switchyard@db/switchyard");
    assert_eq!(c.store.pool_size, 16);
    assert_eq!(c.store.writer_queue, 4096);
    assert!(c.store.password.is_none());
    assert_eq!(c.ingest.max_body_bytes, 4096);
    assert_eq!(c.ingest.allowed_origins, vec!["https://a.example"]);
    assert_eq!(c.log.format, switchyard_core::config::LogFormat::Json);
    assert_eq!(c.log.level, "debug");
    assert_eq!(c.node.id.as_deref(), Some("node-a"));
    assert_eq!(c.clock.scale, 60.0);
}

#[test]
fn inline_table_unknown_key() {
    let text = "\
[server]
listen = \"127.0.0.1:8080\"
";
    let text = format!("store = {{ url = \"sqlite://./a.db\", bogus = 1 }}\n{text}");
    insta::assert_snapshot!(errors(&text, &[]));
}

#[test]
fn inline_table_after_a_header_belongs_to_that_table() {
    let text = "\
[server]
listen = \"127.0.0.1:8080\"

store = { url = \"sqlite://./a.db\", bogus = 1 }
";
    // `store = {…}` after `[server]` is `server.store`, and that is what is reported.
    insta::assert_snapshot!(errors(text, &[]));
}

#[test]
fn inline_table_problems_at_top_level() {
    let text = "\
log = { level = \"info\" }
store = { url = \"mysql://x\",
          bogus = 1 }
server = { listen = \"nope\" }
";
    insta::assert_snapshot!(errors(text, &[]));
}

#[test]
fn override_into_an_inline_table() {
    let text = "store = { url = \"sqlite://./a.db\" }\n";
    let c = Config::parse(text, FILE, env(&[("SWITCHYARD__STORE__POOL_SIZE", "3")]))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.store.url, "sqlite://./a.db");
    assert_eq!(c.store.pool_size, 3);
}

#[test]
fn dotted_keys_are_located() {
    let text = "\
store.url = \"sqlite://./a.db\"
store.pool_size = 0
server.listen = \"nope\"
";
    insta::assert_snapshot!(errors(text, &[]));
}

#[test]
fn columns_count_characters_not_bytes() {
    let text = "store = { url = \"sqlite://./dénormalisé.db\", bogus = 1 }\n";
    insta::assert_snapshot!(errors(text, &[]));
}

#[test]
fn url_password_is_not_echoed() {
    let text = "\
[store]
url = \"mysql://switchyard:hunter2@db:3306/switchyard\"
";
    let out = errors(text, &[]);
    assert!(!out.contains("hunter2"), "password leaked: {out}");
    insta::assert_snapshot!(out);
}

#[test]
fn secret_of_wrong_type_is_not_echoed() {
    let text = "\
[store]
url = \"postgres://switchyard@db:5432/switchyard\"
password = 123456
";
    let out = errors(text, &[]);
    assert!(!out.contains("123456"), "secret value leaked: {out}");
    insta::assert_snapshot!(out);
}

#[test]
fn rejected_url_does_not_cause_a_sqlite_password_complaint() {
    // The bad URL is dropped and the SQLite default stands in for it; the password must
    // not then be blamed for belonging to a SQLite store the user never configured.
    let text = "\
[store]
url = 5
password = \"env:PATH\"
";
    insta::assert_snapshot!(errors(text, &[]));
}

#[test]
fn sqlite_store_with_password() {
    let text = "\
[store]
url = \"sqlite://./a.db\"
password = \"env:PATH\"
";
    insta::assert_snapshot!(errors(text, &[]));
}

#[test]
fn broken_flows_are_reported_with_their_lines() {
    let text = r#"[[destinations]]
name = "wms"
url = "http://127.0.0.1:9/in"
auth = { type = "bearer", token = "env:SWITCHYARD_TEST_SECRET_THAT_IS_NEVER_SET_9F2C" }

[[flows]]
name = "orders"
destination = "wmss"
match = { type = ["order.*"], filter = ".data.total >" }
map = "{order: .data.id"
schema = { type = "objekt" }
ordering = { key = ".data.id", on_failure = "hold" }

[[flows]]
name = "order-updates"
destination = "wms"
priority = "urgent"
match = { type = ["order.updated"] }
ordering = { key = ".data.id", on_failure = "dead-letter" }

[[flows]]
name = "stock"
destination = "wms"
match = { type = ["stock.*"] }
ordering = { key = ".data.sku", on_failure = "hold" }

[[flows]]
name = "stock-2"
destination = "wms"
match = { type = ["stock.moved"] }
ordering = { key = ".data.sku", on_failure = "dead-letter" }
"#;
    insta::assert_snapshot!(errors(text, &[]));
}

#[test]
fn odoo_connection_types() {
    let text = r#"
[[odoo]]
name = "erp"
url = "https://erp.example.com"
database = "prod"
login = "sync@example.com"
secret = "the-password-itself"
protocol = "soap"
"#;
    insta::assert_snapshot!(errors(text, &[]));
}

#[test]
fn odoo_connection_checks() {
    let text = r#"
[[odoo]]
name = "erp"
url = "https://erp.example.com/odoo"
database = "prod"
login = "sync@example.com"
secret = "env:ODOO_KEY"
timeout_seconds = 10

[[odoo]]
name = "erp"
url = "erp.example.com"
database = ""
login = "sync@example.com"
secret = "env:ODOO_KEY"

[probes]
interval_seconds = 0
"#;
    insta::assert_snapshot!(errors(text, &[]));
}

#[test]
fn odoo_secret_of_wrong_type_is_not_echoed() {
    let text = "\
[[odoo]]
name = \"erp\"
url = \"https://erp.example.com\"
database = \"prod\"
login = \"sync@example.com\"
secret = 987654
";
    let out = errors(text, &[]);
    assert!(!out.contains("987654"), "secret value leaked: {out}");
}

#[test]
fn odoo_destinations_and_flow_operations_are_checked() {
    let text = r#"
[[odoo]]
name = "erp"
url = "https://erp.example.com"
database = "prod"
login = "sync@example.com"
secret = "env:HOME"

[[destinations]]
name = "odoo"
type = "odoo"
odoo = "erp"

[[destinations]]
name = "odoo-typo"
type = "odoo"
odoo = "epr"
url = "https://erp.example.com"

[[destinations]]
name = "wms"
url = "http://127.0.0.1:9/in"

[[flows]]
name = "partners"
destination = "odoo"
match = { type = ["customer.*"] }
[flows.odoo]
model = "res.partner"
operation = "upsert"
external_id = ".id"
key = ["ref"]

[[flows]]
name = "orders"
destination = "odoo"
match = { type = ["order.*"] }
[flows.odoo]
operation = "call"
[[flows.odoo.steps]]
name = "confirm"
model = "sale.order"
method = "action_confirm"
ids = "$steps.order.id"

[[flows]]
name = "ship"
destination = "odoo"
match = { type = ["shipment.*"] }
[flows.odoo]
operation = "create"
model = "stock.picking"

[[flows]]
name = "to-wms"
destination = "wms"
match = { type = ["order.*"] }
odoo = { model = "sale.order", operation = "write", key = ["name"] }

[[flows]]
name = "bare"
destination = "odoo"
match = { type = ["x"] }
"#;
    insta::assert_snapshot!(errors(text, &[]));
}

#[test]
fn smtp_destinations_are_checked() {
    let text = r#"
[[destinations]]
name = "mail"
type = "smtp"
url = "smtp://mail.example.com"
[destinations.smtp]
from = "Switchyard <alerts@example.com>"
username = "alerts@example.com"
password = "env:SWITCHYARD_TEST_SECRET_THAT_IS_NEVER_SET_9F2C"

[[destinations]]
name = "mail-no-from"
type = "smtp"
url = "https://mail.example.com"
headers = { "X-Tenant" = "plant1" }

[[destinations]]
name = "mail-bad"
type = "smtp"
url = "smtp://user:pw@mail.example.com:587"
smtp = { from = "alerts", tls = "tls", password = "env:HOME" }

[[destinations]]
name = "mail-tls"
type = "smtp"
url = "smtp://mail.example.com"
smtp = { from = "alerts@example.com", tls = "ssl" }

[[destinations]]
name = "wms"
url = "http://127.0.0.1:9/in"
smtp = { from = "alerts@example.com" }

[[flows]]
name = "alerts"
destination = "mail"
match = { type = ["alert.*"] }
"#;
    let out = errors(text, &[]);
    assert!(
        !out.contains("user:pw"),
        "credentials in the URL echoed: {out}"
    );
    insta::assert_snapshot!(out);
}
