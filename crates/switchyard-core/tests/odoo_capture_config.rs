//! `kind = "odoo"` sources: what a well-formed one compiles to, and snapshots of the
//! problems `switchyard check` reports for broken ones (file, line, key).

use switchyard_core::config::Config;
use switchyard_core::odoo_capture::Initial;
use switchyard_core::sources::{SourceKind, SourcePattern, Sources};

const FILE: &str = "switchyard.toml";

const ODOO: &str = r#"
[[odoo]]
name = "erp"
url = "https://erp.example.com/"
database = "prod"
login = "sync@example.com"
secret = "env:HOME"
"#;

fn errors(text: &str) -> String {
    match Config::parse(text, FILE, Vec::new()) {
        Ok(c) => panic!("configuration unexpectedly accepted: {c:#?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn an_odoo_source_compiles_with_its_defaults() {
    let text = format!(
        r#"{ODOO}
[[sources]]
name = "odoo-orders"
kind = "odoo"
odoo = "erp"
model = "sale.order"
fields = ["name", "state", "origin"]
domain = ["|", ["state", "=", "sale"], ["state", "=", "done"]]
context = {{ active_test = false }}
keys = {{ sale_order = ".data.name" }}
[sources.verify]
kind = "path-token"
secrets = ["file:/dev/null/unused"]

[[sources]]
name = "odoo-partners"
kind = "odoo"
odoo = "erp"
model = "res.partner"
source = "https://erp.example.com/partners"
fields = ["name"]
initial = "now"
interval_seconds = 5
page_size = 50
overlap_seconds = 300
"#
    );
    // The path token's secret is read when a hint arrives, not when the file is checked,
    // except for the emptiness check: give it a readable one.
    let dir = tempfile_dir();
    let token = dir.join("token");
    std::fs::write(&token, "s3cret-token").unwrap();
    let text = text.replace(
        "file:/dev/null/unused",
        &format!("file:{}", token.display()),
    );
    let config = Config::parse(&text, FILE, Vec::new()).unwrap_or_else(|e| panic!("{e}"));
    let sources = Sources::compile(&config).unwrap();
    let orders = &sources.all()[0];
    assert_eq!(orders.kind, SourceKind::Odoo);
    // the default source URI: the connection's URL and the model
    assert_eq!(
        orders.pattern,
        SourcePattern::Exact("https://erp.example.com/sale.order".into())
    );
    let o = orders.odoo.as_ref().unwrap();
    assert_eq!(o.connection, "erp");
    assert_eq!(o.event_type(), "odoo.sale.order.changed");
    assert_eq!(o.read_fields(), ["name", "state", "origin", "write_date"]);
    assert_eq!(
        (o.interval_seconds, o.page_size, o.overlap_seconds),
        (30, 200, 120)
    );
    assert_eq!(o.initial, Initial::Sync);
    assert!(o.hints.is_some());
    assert_eq!(o.context["active_test"], false);
    assert!(sources.odoo("odoo-orders").is_some());
    assert!(sources.webhook("odoo-orders").is_none());
    // Its source URI belongs to it: POST /v1/events may not claim its ids.
    assert_eq!(
        sources
            .webhook_with_source("https://erp.example.com/sale.order")
            .unwrap()
            .name,
        "odoo-orders"
    );
    assert_eq!(
        sources.label_for("https://erp.example.com/partners"),
        "odoo-partners"
    );
    let p = sources.all()[1].odoo.as_ref().unwrap();
    assert_eq!(p.initial, Initial::Now);
    assert_eq!(
        (p.interval_seconds, p.page_size, p.overlap_seconds),
        (5, 50, 300)
    );
    assert!(p.hints.is_none());
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("switchyard-capture-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn broken_odoo_sources_are_reported_with_their_lines() {
    let text = format!(
        r#"{ODOO}
[[sources]]
name = "odoo-orders"
kind = "odoo"
odoo = "main"
model = "Sale Order"
fields = []
domain = ["|", ["state", "=", "sale"]]
page_size = 0
overlap_seconds = 0
[sources.verify]
kind = "bearer"
secrets = ["env:ODOO_HOOK"]

[[sources]]
name = "odoo-partners"
kind = "odoo"
odoo = "erp"
model = "res.partner"
fields = ["name", "name", "Email"]
hint_wait_seconds = 5
[sources.event]
id = ".id"
type = '"x"'

[[sources]]
name = "shop"
kind = "cloudevents"
source = "https://shop.example.com"
model = "sale.order"
interval_seconds = 10
"#
    );
    insta::assert_snapshot!(errors(&text));
}

#[test]
fn an_odoo_source_needs_a_connection_and_a_model() {
    let text = r#"
[[sources]]
name = "odoo-orders"
kind = "odoo"
odoo = "erp"
fields = ["name"]
initial = "yesterday"
"#;
    insta::assert_snapshot!(errors(text));
}
