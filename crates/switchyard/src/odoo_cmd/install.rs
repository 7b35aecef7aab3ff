//! `switchyard odoo install-webhooks`: creates (or brings up to date) the Odoo automation
//! rule that sends "Send Webhook Notification" hints to an odoo source, through the API of
//! a configured `[[odoo]]` connection. Idempotent: a second run changes nothing. It talks to
//! Odoo only; it never opens the store.

use clap::Args;
use std::path::Path;
use std::process::ExitCode;
use switchyard_server::odoo_hooks::{self, HookSpec, Installed, On};

use crate::LogFormatArg;

#[derive(Args, Debug)]
pub struct InstallWebhooksArgs {
    /// The `[[odoo]]` connection (default: the only one declared).
    #[arg(long)]
    odoo: Option<String>,
    /// The model whose changes are notified, e.g. sale.order.
    #[arg(long)]
    model: String,
    /// When: create, write or both (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "create,write", value_parser = parse_on)]
    on: Vec<On>,
    /// Fields sent with each notification (write_date is always added); comma-separated.
    #[arg(long, value_delimiter = ',')]
    fields: Vec<String>,
    /// Notify a write only when one of these fields changed (default: any write).
    #[arg(long, value_delimiter = ',')]
    trigger_fields: Vec<String>,
    /// The hub's hint URL: https://<hub>/v1/webhooks/<odoo source>/<path token>.
    #[arg(long)]
    url: String,
    /// The rule's name in Odoo, which identifies it on later runs
    /// (default: "Switchyard: <model> → <source>").
    #[arg(long)]
    name: Option<String>,
    /// Print the outcome as JSON.
    #[arg(long)]
    json: bool,
}

fn parse_on(s: &str) -> Result<On, String> {
    match s.trim() {
        "create" => Ok(On::Create),
        "write" => Ok(On::Write),
        other => Err(format!("`{other}` is neither create nor write")),
    }
}

pub async fn run(
    args: InstallWebhooksArgs,
    path: &Path,
    log_format: Option<LogFormatArg>,
) -> ExitCode {
    let config = match crate::load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    crate::init_logging(&config, log_format);
    let connection = match &args.odoo {
        Some(n) => config.odoo.iter().find(|c| c.name == *n),
        None if config.odoo.len() == 1 => config.odoo.first(),
        None => {
            eprintln!(
                "error: {} declares {} [[odoo]] connections; name one with --odoo",
                path.display(),
                config.odoo.len()
            );
            return ExitCode::from(2);
        }
    };
    let Some(connection) = connection else {
        eprintln!(
            "error: no [[odoo]] connection named \"{}\" in {}",
            args.odoo.as_deref().unwrap_or_default(),
            path.display()
        );
        return ExitCode::from(2);
    };
    if !(args.url.starts_with("http://") || args.url.starts_with("https://")) {
        eprintln!("error: --url must be the hub's http(s) webhook URL");
        return ExitCode::from(2);
    }
    let client = match switchyard_server::probes::client_config(connection)
        .and_then(|cfg| switchyard_odoo::OdooClient::new(cfg).map_err(|e| e.to_string()))
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let spec = HookSpec {
        name: args
            .name
            .clone()
            .unwrap_or_else(|| odoo_hooks::default_name(&args.model, &args.url)),
        model: args.model.clone(),
        on: args.on.clone(),
        fields: args.fields.clone(),
        trigger_fields: args.trigger_fields.clone(),
        url: args.url.clone(),
    };
    let url = odoo_hooks::redact(&spec.url);
    match odoo_hooks::install_webhook(&client, &spec).await {
        Ok(done) => {
            if args.json {
                let mut v = serde_json::to_value(&done).unwrap_or_default();
                v["name"] = spec.name.clone().into();
                v["model"] = spec.model.clone().into();
                v["url"] = url.into();
                println!("{v}");
            } else {
                match &done {
                    Installed::Created { rule_id, action_id } => println!(
                        "created automation rule #{rule_id} \"{}\" with webhook action #{action_id}: {} changes → {url}",
                        spec.name, spec.model
                    ),
                    Installed::Updated { rule_id, changed } => println!(
                        "updated automation rule #{rule_id} \"{}\" ({}): {} changes → {url}",
                        spec.name,
                        changed.join(", "),
                        spec.model
                    ),
                    Installed::Unchanged { rule_id } => println!(
                        "automation rule #{rule_id} \"{}\" is already as asked; nothing changed",
                        spec.name
                    ),
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
