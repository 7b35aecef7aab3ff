//! Notifiers against real local servers, through the real binary on both stores: a real
//! Prometheus Alertmanager (every active alert pushed with its labels and `startsAt`,
//! re-sent on a timer, ended with `endsAt` when it clears), a Slack-compatible incoming
//! webhook, email through a real SMTP server, a notifier outage that delivers everything
//! after recovery, and a notifier that keeps failing, which becomes an alert for another
//! receiver.
//!
//! The order-to-cash workflow of `tests/support` breaches when the invoice does not come
//! within 2 s of the shipment; the invoice clears the alert. Every wait polls with a
//! generous deadline; nothing asserts on elapsed time.

#[path = "../../switchyard-deliver/tests/support/smtp.rs"]
mod smtp_server;
mod support;

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::{Instance, Received, Receiver, WORKFLOW, ev, free_port, get, send, wait_for};

const WAIT: Duration = Duration::from_secs(60);

/// `[alerting]` with fast timings and the breach rule, for the order-to-cash workflow.
const SETTINGS: &str = r#"
[alerting]
evaluation_interval_seconds = 1
resend_seconds = 1
external_url = "http://switchyard.example"

[[alert_rules]]
name = "order-late"
on = "finding"
findings = ["breach"]
"#;

/// A root route to `receiver`, notifying at once.
fn route(receiver: &str) -> String {
    format!(
        r#"
[route]
receiver = "{receiver}"
group_by = ["alertname", "workflow"]
group_wait_seconds = 0
group_interval_seconds = 1
repeat_interval_seconds = 3600
"#
    )
}

/// Order `number` is created, confirmed and shipped; its invoice is due within 2 s.
fn ship(inst: &Instance, token: &str, number: &str) {
    send(
        inst,
        token,
        json!([
            ev(
                "o1",
                "/shop",
                "order.created",
                json!({"number": number, "warehouse": "WH1"})
            ),
            ev(
                "s1",
                "/odoo",
                "sale.order.confirmed",
                json!({"name": "S1", "origin": number})
            ),
            ev(
                "p1",
                "/wms",
                "shipment.shipped",
                json!({"order": "S1", "picking": "WH/OUT/1"})
            ),
        ]),
    );
}

/// The invoice arrives (late): the instance completes and the breach clears.
fn invoice(inst: &Instance, token: &str, number: &str) {
    send(
        inst,
        token,
        json!([ev(
            "i1",
            "/odoo",
            "invoice.posted",
            json!({"name": "S1", "origin": number})
        )]),
    );
}

/// The notifications a receiver got: the prober's `HEAD` requests carry no body.
fn posted(got: &[Received]) -> Vec<&Received> {
    got.iter().filter(|r| !r.body.is_null()).collect()
}

/// The one incident, once it is open.
fn incident_id(inst: &Instance, token: &str) -> i64 {
    let v = wait_for(inst, token, "/v1/incidents", |v| {
        v["incidents"].as_array().is_some_and(|l| !l.is_empty())
    });
    v["incidents"][0]["id"].as_i64().unwrap()
}

fn started(dir: &Path, backend: &str, url: &str, config: &str) -> (Instance, String) {
    let mut inst = Instance::new(dir, backend, url, config);
    let token = inst.create_token("admin", &format!("ops-{backend}"));
    inst.start();
    (inst, token)
}

// ---- Alertmanager ------------------------------------------------------------------------

/// A real `alertmanager` on a free loopback port (`.ci/run` installs only the binary, never
/// its service) with a minimal configuration — one route to a receiver that sends nothing —
/// its own storage directory and no cluster; killed when dropped.
struct Alertmanager {
    child: Option<Child>,
    base: String,
    log: PathBuf,
}

impl Alertmanager {
    /// The binary `SWITCHYARD_TEST_ALERTMANAGER` names (`.ci/run` installs it and sets it);
    /// `None`, with a loud notice, when it is not set outside CI.
    fn binary() -> Option<PathBuf> {
        match std::env::var_os("SWITCHYARD_TEST_ALERTMANAGER") {
            Some(p) => {
                let p = PathBuf::from(p);
                assert!(
                    p.is_file(),
                    "SWITCHYARD_TEST_ALERTMANAGER={} is not a file",
                    p.display()
                );
                Some(p)
            }
            None => {
                assert!(
                    std::env::var("CI").is_err(),
                    "SWITCHYARD_TEST_ALERTMANAGER must be set in CI (.ci/run installs and exports it)"
                );
                eprintln!(
                    "\n************************************************************************\n\
                     SKIPPED: the real-Alertmanager notifier test. Install the Debian package\n\
                     prometheus-alertmanager and set\n\
                     SWITCHYARD_TEST_ALERTMANAGER=/usr/bin/prometheus-alertmanager to run it.\n\
                     ************************************************************************\n"
                );
                None
            }
        }
    }

    fn start(bin: &Path, dir: &Path) -> Alertmanager {
        std::fs::create_dir_all(dir).unwrap();
        let config = dir.join("alertmanager.yml");
        std::fs::write(
            &config,
            "route:\n  receiver: default\nreceivers:\n  - name: default\n",
        )
        .unwrap();
        let port = free_port();
        let log = dir.join("alertmanager.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let mut am = Alertmanager {
            child: Some(child),
            base: format!("http://127.0.0.1:{port}"),
            log,
        };
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(r) = reqwest::blocking::get(format!("{}/-/ready", am.base))
                && r.status() == 200
            {
                return am;
            }
            if let Some(status) = am.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("alertmanager exited ({status}): {}", am.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "alertmanager not ready: {}",
                am.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Where Switchyard pushes: Alertmanager's v2 API.
    fn alerts_url(&self) -> String {
        format!("{}/api/v2/alerts", self.base)
    }

    /// `GET /api/v2/alerts?<query>`.
    fn alerts(&self, query: &str) -> Vec<Value> {
        let r = reqwest::blocking::get(format!("{}?{query}", self.alerts_url())).unwrap();
        assert_eq!(r.status(), 200);
        r.json::<Vec<Value>>().unwrap()
    }

    /// Polls `GET /api/v2/alerts?<query>` until `pick` finds what it wants.
    fn wait<T>(&self, what: &str, query: &str, pick: impl Fn(&[Value]) -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            let got = self.alerts(query);
            if let Some(t) = pick(&got) {
                return t;
            }
            assert!(
                Instant::now() < deadline,
                "alertmanager: {what} not seen within {WAIT:?}; last answer {got:?}; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn is_breach(a: &Value) -> bool {
    a["labels"]["alertname"] == "order-late" && a["labels"]["workflow"] == "order_to_cash"
}

#[test]
fn alertmanager_gets_every_active_alert_again_and_again_and_its_end() {
    let Some(bin) = Alertmanager::binary() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for (backend, url) in support::store_urls(dir.path()) {
        let am = Alertmanager::start(&bin, &dir.path().join(format!("am-{backend}")));
        let config = format!(
            r#"{WORKFLOW}{SETTINGS}
[[destinations]]
name = "alertmanager"
url = "{}"

[[receivers]]
name = "operations"
[[receivers.notify]]
type = "alertmanager"
destination = "alertmanager"
{}"#,
            am.alerts_url(),
            route("operations")
        );
        let (mut inst, token) = started(dir.path(), backend, &url, &config);
        ship(&inst, &token, "#1");

        // The breach reaches Alertmanager as an active alert, raw: its labels with
        // severity and cause, startsAt, the summary, a link back.
        let a = am.wait("the breach", "active=true", |l| {
            l.iter().find(|a| is_breach(a)).cloned()
        });
        assert_eq!(a["status"]["state"], "active", "{a}");
        let labels = &a["labels"];
        for (k, v) in [
            ("alertname", "order-late"),
            ("workflow", "order_to_cash"),
            ("step", "invoiced"),
            ("kind", "breach"),
            ("warehouse", "WH1"),
            ("severity", "high"),
            ("cause", "business_process"),
        ] {
            assert_eq!(labels[k], v, "label {k} in {a}");
        }
        assert!(
            a["annotations"]["summary"]
                .as_str()
                .unwrap()
                .contains("invoiced"),
            "{a}"
        );
        let (_, _, sy) = get(&inst, &token, "/v1/alerts?state=firing");
        let ours = &sy["alerts"][0];
        assert_eq!(
            a["generatorURL"],
            format!(
                "http://switchyard.example/#/alerts/{}",
                ours["fingerprint"].as_str().unwrap()
            )
        );
        let at = |v: &Value| {
            v.as_str()
                .unwrap()
                .parse::<chrono::DateTime<chrono::Utc>>()
                .unwrap()
                .timestamp_millis()
        };
        // Alertmanager keeps milliseconds.
        assert_eq!(at(&a["startsAt"]), at(&ours["starts_at"]), "{a} {ours}");

        // Re-sent on the timer: Alertmanager sees the alert updated again.
        let first = at(&a["updatedAt"]);
        am.wait("the breach re-sent", "active=true", |l| {
            l.iter()
                .any(|a| is_breach(a) && at(&a["updatedAt"]) > first)
                .then_some(())
        });

        // The invoice clears the alert: the next push ends it, and Alertmanager no longer
        // lists it (without the end it would stay active for its resolve_timeout, 5 min).
        invoice(&inst, &token, "#1");
        am.wait("the breach ended", "active=true", |l| {
            (!l.iter().any(is_breach)).then_some(())
        });
        assert!(
            !am.alerts("").iter().any(is_breach),
            "resolved alerts are not listed at all"
        );

        // What was pushed: through the critical lane, every push accepted, the firing alert
        // more than once, then once with its endsAt.
        let d = wait_for(
            &inst,
            &token,
            "/v1/deliveries?flow=notify.operations.0&limit=1000",
            |v| {
                v["deliveries"].as_array().unwrap().iter().any(|d| {
                    d["state"] == "delivered"
                        && d["payload"]
                            .as_array()
                            .is_some_and(|l| l.iter().any(|a| a.get("endsAt").is_some()))
                })
            },
        );
        let list = d["deliveries"].as_array().unwrap();
        let mut firing = 0;
        for x in list {
            assert_eq!(x["lane"], "critical", "{x}");
            assert_eq!(x["event_type"], "switchyard.alert.push", "{x}");
            assert_ne!(x["state"], "dead", "Alertmanager refused a push: {x}");
            let pushed = x["payload"].as_array().expect("an array of alerts");
            assert_eq!(pushed.len(), 1, "{x}");
            assert_eq!(at(&pushed[0]["startsAt"]), at(&ours["starts_at"]), "{x}");
            if pushed[0].get("endsAt").is_none() {
                firing += 1;
            } else {
                let ends = at(&pushed[0]["endsAt"]);
                assert!(ends >= at(&ours["starts_at"]), "{x}");
            }
        }
        assert!(firing >= 2, "re-sent while firing: {d}");
        inst.sigterm();
    }
}

// ---- Slack -------------------------------------------------------------------------------

#[test]
fn slack_gets_a_readable_message_with_a_link_to_the_incident() {
    let dir = tempfile::tempdir().unwrap();
    for (backend, url) in support::store_urls(dir.path()) {
        let hook = Receiver::start(200, Duration::ZERO);
        let config = format!(
            r#"{WORKFLOW}{SETTINGS}
[[destinations]]
name = "ops-slack"
url = "{}"

[[receivers]]
name = "operations"
[[receivers.notify]]
type = "slack"
destination = "ops-slack"
{}"#,
            hook.url,
            route("operations")
        );
        let (mut inst, token) = started(dir.path(), backend, &url, &config);
        // Business data with the characters Slack's mrkdwn reads as markup.
        let order = "#7 <R&D>";
        ship(&inst, &token, order);
        let got = hook.wait_until("a message", WAIT, |r| !posted(r).is_empty());
        let m = posted(&got)[0];
        let id = incident_id(&inst, &token);
        let header = |name: &str| {
            m.headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(header("content-type"), Some("application/json"));
        // An incoming-webhook message: text only (no blocks needed), in words.
        let body = m.body.as_object().unwrap();
        assert_eq!(body.keys().collect::<Vec<_>>(), ["text"], "{}", m.body);
        let text = body["text"].as_str().unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines.len(),
            3,
            "title, one line per alert, the link: {text}"
        );
        assert!(
            lines[0].starts_with(":rotating_light: *[FIRING]* Business-process exception — workflow order_to_cash, step invoiced: "),
            "{text}"
        );
        assert!(
            lines[1].starts_with("• Shop order #7 &lt;R&amp;D&gt;: step \"invoiced\" not reached")
                && lines[1].ends_with(" — business_process, high"),
            "{text}"
        );
        assert_eq!(
            lines[2],
            format!("<http://switchyard.example/#/incidents/{id}|Incident #{id} (operations)>")
        );
        assert!(!text.contains('{'), "no raw JSON: {text}");
        assert_eq!(
            text.matches('<').count(),
            1,
            "the incident link is the only markup: {text}"
        );

        invoice(&inst, &token, order);
        let got = hook.wait_until("the resolved message", WAIT, |r| {
            posted(r).iter().any(|x| {
                x.body["text"]
                    .as_str()
                    .is_some_and(|t| t.contains("[RESOLVED]"))
            })
        });
        let text = posted(&got)
            .into_iter()
            .find_map(|x| x.body["text"].as_str().filter(|t| t.contains("[RESOLVED]")))
            .unwrap()
            .to_string();
        assert!(
            text.starts_with(":white_check_mark: *[RESOLVED]* resolved: "),
            "{text}"
        );
        assert!(text.contains("~ (cleared)"), "{text}");
        assert!(
            text.contains(&format!("/#/incidents/{id}|Incident #{id}")),
            "{text}"
        );
        inst.sigterm();
    }
}

// ---- email -------------------------------------------------------------------------------

/// Decodes RFC 2047 encoded words (`=?utf-8?b?…?=`, `=?utf-8?q?…?=`) in a header value.
fn decode_header(v: &str) -> String {
    let mut out = String::new();
    let mut after_word = false;
    for (i, token) in v.split(' ').enumerate() {
        let word = token
            .strip_prefix("=?")
            .and_then(|t| t.strip_suffix("?="))
            .and_then(|t| {
                let mut p = t.splitn(3, '?');
                Some((p.next()?, p.next()?, p.next()?))
            });
        match word {
            Some((_charset, enc, text)) => {
                let bytes = if enc.eq_ignore_ascii_case("b") {
                    use base64::Engine as _;
                    base64::engine::general_purpose::STANDARD
                        .decode(text)
                        .unwrap()
                } else {
                    quoted_printable(&text.replace('_', " "))
                };
                // Whitespace between two encoded words is not part of the text.
                if i > 0 && !after_word {
                    out.push(' ');
                }
                out.push_str(&String::from_utf8(bytes).unwrap());
                after_word = true;
            }
            None => {
                if i > 0 {
                    out.push(' ');
                }
                out.push_str(token);
                after_word = false;
            }
        }
    }
    out
}

fn quoted_printable(s: &str) -> Vec<u8> {
    let s = s.replace("=\r\n", "").replace("=\n", "");
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'='
            && let Some(x) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(x);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// The text of a single-part message, its transfer encoding undone.
fn text_of(m: &smtp_server::Received) -> String {
    let enc = m
        .header("Content-Transfer-Encoding")
        .unwrap_or_default()
        .to_ascii_lowercase();
    match enc.as_str() {
        "base64" => {
            use base64::Engine as _;
            let raw: String = m.body().split_whitespace().collect();
            String::from_utf8(
                base64::engine::general_purpose::STANDARD
                    .decode(raw)
                    .unwrap(),
            )
            .unwrap()
        }
        "quoted-printable" => String::from_utf8(quoted_printable(m.body())).unwrap(),
        _ => m.body().to_string(),
    }
    .replace("\r\n", "\n")
}

#[test]
fn email_reaches_a_real_smtp_server_with_the_incident_link() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (backend, url) in support::store_urls(dir.path()) {
        let smtp = rt.block_on(smtp_server::SmtpServer::start());
        let config = format!(
            r#"{WORKFLOW}{SETTINGS}
[[destinations]]
name = "mail"
type = "smtp"
url = "{}"
[destinations.smtp]
from = "Switchyard <alerts@example.com>"
tls = "none"

[[receivers]]
name = "operations"
[[receivers.notify]]
type = "email"
destination = "mail"
to = ["ops@example.com", "Night Shift <night@example.net>"]
{}"#,
            smtp.url(),
            route("operations")
        );
        let (mut inst, token) = started(dir.path(), backend, &url, &config);
        ship(&inst, &token, "#1");
        let deadline = Instant::now() + WAIT;
        while smtp.messages().is_empty() {
            assert!(
                Instant::now() < deadline,
                "no mail; SMTP commands: {:?}",
                smtp.commands()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let id = incident_id(&inst, &token);
        let m = smtp.messages().remove(0);
        assert_eq!(m.mail_from, "alerts@example.com");
        assert_eq!(m.rcpt_to, ["ops@example.com", "night@example.net"]);
        assert_eq!(m.header("From").unwrap(), "Switchyard <alerts@example.com>");
        assert_eq!(
            m.header("To").unwrap(),
            "ops@example.com, \"Night Shift\" <night@example.net>"
        );
        let subject = decode_header(&m.header("Subject").unwrap());
        assert!(
            subject.starts_with(
                "[Switchyard] [FIRING] Business-process exception — workflow order_to_cash, step invoiced: Shop order #1: step \"invoiced\" not reached"
            ),
            "{subject}"
        );
        assert!(
            m.header("Content-Type")
                .unwrap()
                .starts_with("text/plain; charset=utf-8"),
            "{m:?}"
        );
        let text = text_of(&m);
        let (_, _, sy) = get(&inst, &token, "/v1/alerts?state=firing");
        let fp = sy["alerts"][0]["fingerprint"].as_str().unwrap();
        for want in [
            "workflow order_to_cash, step invoiced",
            "- [firing] Shop order #1: step \"invoiced\" not reached",
            "cause: business_process, severity: high, count: 1",
            &format!("http://switchyard.example/#/alerts/{fp}"),
            &format!(
                "Incident #{id} (team operations): http://switchyard.example/#/incidents/{id}"
            ),
        ] {
            assert!(text.contains(want), "{want:?} not in:\n{text}");
        }

        invoice(&inst, &token, "#1");
        let deadline = Instant::now() + WAIT;
        let resolved = loop {
            if let Some(m) = smtp.messages().into_iter().find(|m| {
                decode_header(&m.header("Subject").unwrap()).starts_with("[Switchyard] [RESOLVED]")
            }) {
                break m;
            }
            assert!(Instant::now() < deadline, "no resolved mail");
            std::thread::sleep(Duration::from_millis(50));
        };
        let text = text_of(&resolved);
        assert!(text.contains("- [resolved] Shop order #1"), "{text}");
        assert!(
            text.contains(&format!("http://switchyard.example/#/incidents/{id}")),
            "{text}"
        );
        inst.sigterm();
    }
}

// ---- a notifier outage -------------------------------------------------------------------

#[test]
fn a_notifier_outage_loses_nothing_and_delivers_after_recovery() {
    let dir = tempfile::tempdir().unwrap();
    for (backend, url) in support::store_urls(dir.path()) {
        // The team's endpoint is down (503) when the breach happens.
        let hook = Receiver::start(503, Duration::ZERO);
        let config = format!(
            r#"{WORKFLOW}{SETTINGS}
[[destinations]]
name = "ops-hook"
url = "{}"

[[receivers]]
name = "operations"
[[receivers.notify]]
type = "webhook"
destination = "ops-hook"
{}"#,
            hook.url,
            route("operations")
        );
        let (mut inst, token) = started(dir.path(), backend, &url, &config);
        ship(&inst, &token, "#1");
        hook.wait_until("two refused attempts", WAIT, |r| posted(r).len() >= 2);
        let v = wait_for(
            &inst,
            &token,
            "/v1/deliveries?flow=notify.operations.0",
            |v| {
                v["deliveries"]
                    .as_array()
                    .is_some_and(|l| l.len() == 1 && l[0]["last_status"] == 503)
            },
        );
        let d = &v["deliveries"][0];
        assert_ne!(d["state"], "delivered", "{d}");
        assert_ne!(d["state"], "dead", "{d}");
        let id = d["id"].as_i64().unwrap();

        // It comes back: the notification that waited is delivered.
        hook.set_status(200);
        let v = wait_for(&inst, &token, &format!("/v1/deliveries/{id}"), |v| {
            v["delivery"]["state"] == "delivered"
        });
        let attempts = v["attempts"].as_array().unwrap();
        let (last, failed) = attempts.split_last().unwrap();
        assert!(failed.len() >= 2, "{v}");
        for a in failed {
            assert_eq!(
                (a["outcome"].as_str(), a["status"].as_i64()),
                (Some("transient"), Some(503)),
                "{a}"
            );
        }
        assert_eq!(
            (last["outcome"].as_str(), last["status"].as_i64()),
            (Some("delivered"), Some(200)),
            "{last}"
        );
        assert_eq!(v["delivery"]["lane"], "critical");

        // What the team finally got is the notification of the breach, the same request
        // every time (one idempotency key), and nothing else was sent meanwhile.
        let got = hook.requests();
        let sent = posted(&got);
        assert_eq!(sent.len(), attempts.len(), "one request per attempt");
        assert!(
            sent.iter()
                .all(|r| r.key == sent[0].key && !r.key.is_empty())
        );
        assert!(sent.iter().all(|r| r.body == sent[0].body));
        let n = &sent.last().unwrap().body;
        assert_eq!(n["status"], "firing", "{n}");
        assert_eq!(n["alerts"][0]["labels"]["alertname"], "order-late");
        assert_eq!(n["alerts"][0]["evidence"]["instances"], json!(["#1"]));
        let (_, _, all) = get(&inst, &token, "/v1/deliveries?flow=notify.operations.0");
        assert_eq!(all["deliveries"].as_array().unwrap().len(), 1, "{all}");
        inst.sigterm();
    }
}

// ---- a notifier that keeps failing -------------------------------------------------------

#[test]
fn a_notifier_that_keeps_failing_alerts_through_another_receiver() {
    let dir = tempfile::tempdir().unwrap();
    for (backend, url) in support::store_urls(dir.path()) {
        let broken = Receiver::start(500, Duration::ZERO);
        let escalation = Receiver::start(200, Duration::ZERO);
        let config = format!(
            r#"{WORKFLOW}{SETTINGS}
[[alert_rules]]
name = "notifier-failing"
on = "delivery"
outcome = "dead_letter"
flows = ["notify.*"]

[[destinations]]
name = "ops-hook"
url = "{}"

[[destinations]]
name = "escalation-hook"
url = "{}"

[[receivers]]
name = "operations"
[[receivers.notify]]
type = "webhook"
destination = "ops-hook"
retry = {{ max_attempts = 3, initial_ms = 100, max_backoff_seconds = 1 }}

[[receivers]]
name = "escalation"
[[receivers.notify]]
type = "webhook"
destination = "escalation-hook"
{}
[[route.routes]]
matchers = ['alertname="notifier-failing"']
receiver = "escalation"
"#,
            broken.url,
            escalation.url,
            route("operations")
        );
        let (mut inst, token) = started(dir.path(), backend, &url, &config);
        ship(&inst, &token, "#1");

        // The breach's notification to operations fails three times and is dead-lettered;
        // that dead letter is an alert, told to the escalation receiver.
        let got = escalation.wait_until("the failing notifier's alert", WAIT, |r| {
            !posted(r).is_empty()
        });
        let n = &posted(&got)[0].body;
        assert_eq!(n["receiver"], "escalation", "{n}");
        assert_eq!(n["status"], "firing", "{n}");
        let alert = &n["alerts"][0];
        assert_eq!(alert["labels"]["alertname"], "notifier-failing", "{n}");
        assert_eq!(alert["labels"]["flow"], "notify.operations.0", "{n}");
        assert_eq!(alert["labels"]["destination"], "ops-hook", "{n}");
        assert_eq!(alert["cause"], "partner_down", "{n}");
        let summary = alert["summary"].as_str().unwrap();
        assert!(
            summary.contains("1 dead letter in flow notify.operations.0 to ops-hook")
                && summary.contains("HTTP 500"),
            "{summary}"
        );
        assert!(
            n["title"].as_str().unwrap().contains("notify.operations.0"),
            "{n}"
        );

        // The dead letter itself, and exactly its three attempts at the broken endpoint
        // (the escalation went elsewhere).
        let (_, _, dlq) = get(&inst, &token, "/v1/dlq?flow=notify.operations.0");
        let dead = dlq["deliveries"].as_array().unwrap();
        assert_eq!(dead.len(), 1, "{dlq}");
        assert_eq!(dead[0]["attempts"], 3, "{dlq}");
        assert_eq!(dead[0]["last_status"], 500, "{dlq}");
        assert_eq!(posted(&broken.requests()).len(), 3);
        assert!(
            posted(&got)
                .iter()
                .all(|r| r.body["alerts"][0]["labels"]["alertname"] == "notifier-failing"),
            "the breach itself is not the escalation's"
        );
        inst.sigterm();
    }
}
