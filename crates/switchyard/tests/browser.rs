//! The web dashboard in a real headless Chromium, driven over WebDriver (chromedriver): log
//! in with a token, see a breached order the test created, open its trace, replay a dead
//! letter and see it delivered, acknowledge and resolve the incident, and a viewer who
//! cannot replay (the button is disabled and the API refuses). Screenshots go to
//! `$CARGO_TARGET_TMPDIR/browser/`.
//!
//! Needs `chromedriver` and `chromium` (Debian packages `chromium-driver`, `chromium`):
//! `SWITCHYARD_TEST_CHROMEDRIVER` names the driver (`.ci/run` sets it, so CI fails rather
//! than skips); without it the test looks for `/usr/bin/chromedriver` and otherwise skips
//! with a loud notice.

mod support;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::{Instance, Receiver, WORKFLOW, ev, get, send, wait_for};

struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromedriver() -> Option<String> {
    if let Ok(p) = std::env::var("SWITCHYARD_TEST_CHROMEDRIVER") {
        assert!(
            std::path::Path::new(&p).exists(),
            "SWITCHYARD_TEST_CHROMEDRIVER={p} does not exist"
        );
        return Some(p);
    }
    let default = "/usr/bin/chromedriver";
    if std::path::Path::new(default).exists() {
        return Some(default.to_string());
    }
    eprintln!(
        "\n\n*** SKIPPED: the browser test needs chromedriver and chromium \
         (apt-get install chromium chromium-driver), or SWITCHYARD_TEST_CHROMEDRIVER. ***\n\n"
    );
    None
}

fn start_driver(path: &str) -> Driver {
    let port = support::free_port();
    let child = Command::new(path)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    Driver { child, url }
}

async fn browser(driver: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    let binary = std::env::var("SWITCHYARD_TEST_CHROMIUM").unwrap_or("/usr/bin/chromium".into());
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": binary,
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                     "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync",
                     "--disable-dev-shm-usage", "--window-size=1366,900"],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a Chromium session")
}

struct Shots {
    dir: PathBuf,
}

impl Shots {
    fn new() -> Shots {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser");
        std::fs::create_dir_all(&dir).unwrap();
        Shots { dir }
    }

    async fn take(&self, c: &Client, name: &str) {
        let png = c.screenshot().await.unwrap();
        let path = self.dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        eprintln!("screenshot: {}", path.display());
    }
}

/// The test's blocking HTTP helpers, off the async runtime's worker.
fn sync<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

const WAIT: Duration = Duration::from_secs(60);

async fn wait_css(c: &Client, css: &str) -> fantoccini::elements::Element {
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
}

/// Waits until `main` contains `text` (the live pages re-render every few seconds).
async fn wait_text(c: &Client, text: &str) {
    wait_text_in(c, "main", text).await
}

/// Waits until the first element matching `css` contains `text`.
async fn wait_text_in(c: &Client, css: &str, text: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let main = match c.find(Locator::Css(css)).await {
            Ok(e) => e.text().await,
            Err(e) => Err(e),
        };
        if let Ok(t) = &main
            && t.contains(text)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the page never showed {text:?}; it shows:\n{}",
            main.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn go(c: &Client, base: &str, hash: &str, page: &str) {
    c.goto(&format!("{base}/{hash}")).await.unwrap();
    wait_css(c, &format!("main[data-page=\"{page}\"]")).await;
}

async fn sign_in(c: &Client, base: &str, token: &str) {
    c.goto(&format!("{base}/")).await.unwrap();
    wait_css(c, "#token").await.send_keys(token).await.unwrap();
    c.find(Locator::Css("#login-submit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_css(c, "main[data-page=\"overview\"]").await;
}

fn config(wms: &str, hook: &str) -> String {
    format!(
        r#"{WORKFLOW}
[alerting]
evaluation_interval_seconds = 1
external_url = "http://switchyard.test"

[[destinations]]
name = "wms"
url = "{wms}"

[[destinations]]
name = "ops-hook"
url = "{hook}"

[[flows]]
name = "orders-to-wms"
destination = "wms"
match = {{ source = "/shop", type = ["order.created"] }}

[[alert_rules]]
name = "order-late"
on = "finding"
findings = ["breach"]

[[receivers]]
name = "operations"
[[receivers.notify]]
type = "webhook"
destination = "ops-hook"

[route]
receiver = "operations"
group_by = ["workflow"]
group_wait_seconds = 0
group_interval_seconds = 1
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_a_real_browser() {
    let Some(driver_path) = chromedriver() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // The WMS refuses orders (400) until the test fixes it: a dead letter to replay.
    let wms = Receiver::start(400, Duration::ZERO);
    let hook = Receiver::start(200, Duration::ZERO);
    let url = format!("sqlite://{}", dir.path().join("ui.db").display());
    let mut inst = Instance::new(dir.path(), "sqlite", &url, &config(&wms.url, &hook.url));
    let admin = inst.create_token("admin", "alice");
    let viewer = inst.create_token("viewer", "victor");
    inst.start();
    let base = inst.base();

    // Order #0 goes through within its SLA (the charts have a point); order #1 is created,
    // confirmed, shipped — and never invoiced within its 2 s SLA.
    sync(|| {
        send(
            &inst,
            &admin,
            json!([
                ev(
                    "o0",
                    "/shop",
                    "order.created",
                    json!({"number": "#0", "warehouse": "WH1"})
                ),
                ev(
                    "s0",
                    "/odoo",
                    "sale.order.confirmed",
                    json!({"name": "S0", "origin": "#0"})
                ),
                ev(
                    "p0",
                    "/wms",
                    "shipment.shipped",
                    json!({"order": "S0", "picking": "WH/OUT/0"})
                ),
                ev(
                    "i0",
                    "/odoo",
                    "invoice.posted",
                    json!({"name": "S0", "origin": "#0"})
                ),
                ev(
                    "o1",
                    "/shop",
                    "order.created",
                    json!({"number": "#1", "warehouse": "WH1"})
                ),
                ev(
                    "s1",
                    "/odoo",
                    "sale.order.confirmed",
                    json!({"name": "S1", "origin": "#1"})
                ),
                ev(
                    "p1",
                    "/wms",
                    "shipment.shipped",
                    json!({"order": "S1", "picking": "WH/OUT/1"})
                ),
            ]),
        )
    });

    let driver = start_driver(&driver_path);
    let c = browser(&driver).await;
    let shots = Shots::new();

    // A wrong token is refused on the login page.
    c.goto(&format!("{base}/")).await.unwrap();
    wait_css(&c, "#token")
        .await
        .send_keys("not-a-token")
        .await
        .unwrap();
    c.find(Locator::Css("#login-submit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let t = c
            .find(Locator::Css("#login-error"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if !t.is_empty() {
            assert!(t.contains("token"), "{t}");
            break;
        }
        assert!(Instant::now() < deadline, "no login error");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shots.take(&c, "01-login-refused").await;

    sign_in(&c, &base, &admin).await;
    assert!(
        c.find(Locator::Css("#who"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
            .contains("alice (admin)")
    );
    shots.take(&c, "02-overview").await;

    // The breached order, on the workflow page (it refreshes itself).
    go(&c, &base, "#/workflows/order_to_cash", "workflows").await;
    wait_text_in(&c, "#instances tbody", "breached").await;
    wait_text_in(&c, "#instances tbody", "#1").await;
    // Real charts: the completed order is a point of SLA compliance and a bar of cycle time.
    wait_css(&c, "svg.chart[aria-label^=\"SLA compliance\"] circle").await;
    wait_css(&c, "svg.chart[aria-label^=\"Cycle time\"] rect").await;
    shots.take(&c, "03-workflow").await;
    let row_link = wait_css(&c, "main table a[href^=\"#/instances/\"]").await;
    row_link.click().await.unwrap();
    wait_css(&c, "main[data-page=\"instances\"]").await;
    wait_text(&c, "invoiced").await;
    wait_text(&c, "late").await;
    shots.take(&c, "04-instance").await;

    // Its trace: every event carrying #1, with the dead-lettered delivery.
    go(&c, &base, "#/trace", "trace").await;
    wait_css(&c, "#trace-key")
        .await
        .send_keys("#1")
        .await
        .unwrap();
    c.find(Locator::Css("#trace-submit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&c, "event(s) carry #1").await;
    wait_text(&c, "order.created").await;
    wait_text(&c, "orders-to-wms").await;
    shots.take(&c, "05-trace").await;

    // The dead letter: the WMS is fixed, the operator replays it, it is delivered.
    go(&c, &base, "#/dlq", "dlq").await;
    wait_text(&c, "orders-to-wms").await;
    shots.take(&c, "06-dlq").await;
    wait_css(&c, "main table a[href^=\"#/dlq/\"]")
        .await
        .click()
        .await
        .unwrap();
    wait_css(&c, "#replay").await;
    let dead_id = c
        .current_url()
        .await
        .unwrap()
        .fragment()
        .unwrap()
        .trim_start_matches("/dlq/")
        .to_string();
    wms.set_status(200);
    c.find(Locator::Css("#replay"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_css(&c, "dialog[open] input[name=reason]")
        .await
        .send_keys("WMS fixed the SKU table")
        .await
        .unwrap();
    shots.take(&c, "07-replay-confirm").await;
    c.find(Locator::Css("#dialog-confirm"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text_in(&c, "main h1", "delivered").await;
    wait_text(&c, "WMS fixed the SKU table").await; // the audit trail, with the reason
    shots.take(&c, "08-delivered").await;
    let (_, _, d) = sync(|| get(&inst, &admin, &format!("/v1/deliveries/{dead_id}")));
    assert_eq!(d["delivery"]["state"], "delivered", "{d}");
    let (_, _, audit) = sync(|| get(&inst, &admin, "/v1/audit"));
    let replayed: Vec<&Value> = audit["audit"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["action"] == "dlq.replay")
        .collect();
    assert_eq!(replayed.len(), 1, "{audit}");
    assert_eq!(replayed[0]["actor"], "alice");

    // The incident of the breach: acknowledged, then resolved, from the page.
    sync(|| {
        wait_for(&inst, &admin, "/v1/incidents", |v| {
            v["incidents"].as_array().is_some_and(|l| !l.is_empty())
        })
    });
    go(&c, &base, "#/incidents", "incidents").await;
    wait_text(&c, "operations").await;
    wait_css(&c, "main table a[href^=\"#/incidents/\"]")
        .await
        .click()
        .await
        .unwrap();
    wait_css(&c, "#ack").await.click().await.unwrap();
    wait_text_in(&c, "main h1", "acknowledged").await;
    wait_text(&c, "acknowledged by alice").await;
    shots.take(&c, "09-incident-acknowledged").await;
    wait_css(&c, "#resolve").await.click().await.unwrap();
    wait_css(&c, "dialog[open] #dialog-confirm")
        .await
        .click()
        .await
        .unwrap();
    wait_text_in(&c, "main h1", "resolved").await;
    wait_text(&c, "resolved by alice").await;
    shots.take(&c, "10-incident-resolved").await;

    // The other dead letter (both orders were refused), and a viewer who may look at it but
    // not replay it.
    let v = sync(|| {
        wait_for(&inst, &admin, "/v1/dlq", |v| {
            v["deliveries"].as_array().is_some_and(|l| !l.is_empty())
        })
    });
    let second = v["deliveries"][0]["id"].as_i64().unwrap();
    c.find(Locator::Css("#logout"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    sign_in(&c, &base, &viewer).await;
    go(&c, &base, &format!("#/dlq/{second}"), "dlq").await;
    let replay = wait_css(&c, "#replay").await;
    assert_eq!(
        replay.attr("disabled").await.unwrap().as_deref(),
        Some("true")
    );
    let title = replay.attr("title").await.unwrap().unwrap_or_default();
    assert!(title.contains("viewer"), "{title}");
    shots.take(&c, "11-viewer-cannot-replay").await;
    // Even a request made by hand from the page is refused by the API.
    let status = c
        .execute_async(
            "const done = arguments[arguments.length - 1];
             fetch('/v1/dlq/' + arguments[0] + '/replay', {method: 'POST',
               headers: {'Authorization': 'Bearer ' + sessionStorage.getItem('switchyard.token'),
                         'Content-Type': 'application/json'},
               body: JSON.stringify({reason: 'sneaky'})}).then(r => done(r.status));",
            vec![json!(second)],
        )
        .await
        .unwrap();
    assert_eq!(status, json!(403));
    // The viewer reads the replayed letter's audit trail, but not the whole audit log.
    go(&c, &base, &format!("#/dlq/{dead_id}"), "dlq").await;
    wait_text(&c, "WMS fixed the SKU table").await;
    let status = c
        .execute_async(
            "const done = arguments[arguments.length - 1];
             fetch('/v1/audit', {headers: {'Authorization': 'Bearer ' + sessionStorage.getItem('switchyard.token')}})
               .then(r => done(r.status));",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(status, json!(403));
    let (_, _, d) = sync(|| get(&inst, &admin, &format!("/v1/deliveries/{second}")));
    assert_eq!(d["delivery"]["state"], "dead", "nothing changed: {d}");

    c.close().await.unwrap();
    sync(|| inst.sigterm());
}
