//! Alerts as an operator meets them: the real binary on both stores, a workflow breach that
//! becomes an alert with its business summary, a notification delivered to a real HTTP
//! receiver through the critical lane, the incident acknowledged (not by a viewer), bad
//! silences and unknown incidents refused with problem+json, `/v1/routes/test`, the CLI's
//! `alerts`, `incidents`, `silence` and `routes test`, and the
//! alert clearing when the order completes — which resolves the incident by itself.

mod support;

use serde_json::{Value, json};
use std::time::Duration;
use support::{Instance, Receiver, WORKFLOW, ev, fails, get, ok, send, wait_for};

fn alerting(hook: &str) -> String {
    format!(
        r#"
[alerting]
evaluation_interval_seconds = 1
external_url = "http://switchyard.example"

[[destinations]]
name = "ops-hook"
url = "{hook}"

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
repeat_interval_seconds = 3600
"#
    )
}

fn post(inst: &Instance, token: &str, path: &str, body: Value) -> (u16, Value) {
    let r = reqwest::blocking::Client::new()
        .post(format!("{}{path}", inst.base()))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

#[test]
fn a_breach_alerts_the_team_and_clears_when_the_order_completes() {
    let dir = tempfile::tempdir().unwrap();
    for (backend, url) in support::store_urls(dir.path()) {
        let hook = Receiver::start(200, Duration::ZERO);
        let config = format!("{WORKFLOW}{}", alerting(&hook.url));
        let mut inst = Instance::new(dir.path(), backend, &url, &config);
        let token = inst.create_token("admin", &format!("ops-{backend}"));
        let viewer = inst.create_token("viewer", &format!("view-{backend}"));
        inst.start();
        send(
            &inst,
            &token,
            json!([
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
        );
        // The invoice does not come within 2 s: a breach, an alert, a notification.
        // (The prober's HEAD requests carry no body.)
        let got = hook.wait_until("a notification", Duration::from_secs(60), |r| {
            r.iter().any(|x| !x.body.is_null())
        });
        let n = &got.iter().find(|x| !x.body.is_null()).unwrap().body;
        assert_eq!(n["receiver"], "operations", "{n}");
        assert_eq!(n["status"], "firing");
        assert_eq!(n["group_labels"], json!({"workflow": "order_to_cash"}));
        let alert = &n["alerts"][0];
        assert_eq!(alert["labels"]["alertname"], "order-late");
        assert_eq!(alert["labels"]["step"], "invoiced");
        assert_eq!(alert["labels"]["warehouse"], "WH1");
        assert_eq!(alert["labels"]["severity"], "high", "P2 maps to high");
        assert_eq!(alert["cause"], "business_process");
        assert!(
            alert["summary"].as_str().unwrap().contains("invoiced"),
            "{alert}"
        );
        assert_eq!(alert["evidence"]["instances"], json!(["#1"]));
        assert!(
            n["incident_url"]
                .as_str()
                .unwrap()
                .starts_with("http://switchyard.example/")
        );

        let v = wait_for(&inst, &token, "/v1/incidents", |v| {
            v["incidents"].as_array().is_some_and(|l| !l.is_empty())
        });
        let incident = &v["incidents"][0];
        let id = incident["id"].as_i64().unwrap();
        assert_eq!(incident["team"], "operations");
        assert_eq!(incident["status"], "open");
        let (_, _, a) = get(&inst, &token, "/v1/alerts?state=firing");
        assert_eq!(a["alerts"].as_array().unwrap().len(), 1, "{a}");
        assert!(
            a["alerts"][0]["evidence"].get("open").is_none(),
            "bookkeeping is not shown"
        );

        // The operator's view of it, from the CLI.
        let out = ok(&inst, &viewer, &["alerts", "--state", "firing"]);
        assert!(out.contains("order-late"), "{out}");
        assert!(out.contains("business_process"), "{out}");
        let out = ok(&inst, &viewer, &["incidents", "list", "--status", "open"]);
        assert!(out.contains("operations"), "{out}");

        // A viewer cannot acknowledge; an unknown incident is 404; bad silences are 400.
        let err = fails(&inst, &viewer, &["incidents", "ack", &id.to_string()]);
        assert!(err.contains("403"), "{err}");
        let (s, body) = post(&inst, &token, "/v1/incidents/9999/ack", json!({}));
        assert_eq!(
            (s, body["type"].as_str()),
            (404, Some("/problems/not-found")),
            "{body}"
        );
        let (s, body) = post(
            &inst,
            &token,
            "/v1/silences",
            json!({"matchers": ["cause=\"x\""], "starts_at": "2030-01-02T00:00:00Z", "ends_at": "2030-01-01T00:00:00Z", "comment": "c"}),
        );
        assert_eq!(s, 400, "{body}");
        assert_eq!(body["errors"][0]["field"], "ends_at", "{body}");
        let (s, body) = post(
            &inst,
            &token,
            "/v1/silences",
            json!({"matchers": ["cause=~\"(\""], "ends_at": "2030-01-01T00:00:00Z", "comment": "c"}),
        );
        assert_eq!(
            (s, body["errors"][0]["field"].as_str()),
            (400, Some("matchers[0]")),
            "{body}"
        );
        let (_, _, sl) = get(&inst, &token, "/v1/silences");
        assert_eq!(sl["silences"], json!([]), "nothing was stored");

        let out = ok(
            &inst,
            &token,
            &["incidents", "ack", &id.to_string(), "--comment", "on it"],
        );
        assert!(out.contains("acknowledged"), "{out}");
        let (_, _, body) = get(&inst, &token, &format!("/v1/incidents/{id}"));
        assert_eq!(body["incident"]["status"], "acknowledged");
        assert_eq!(
            body["incident"]["acknowledged_by"],
            format!("ops-{backend}")
        );
        let out = ok(&inst, &viewer, &["incidents", "show", &id.to_string()]);
        assert!(
            out.contains("acknowledged") && out.contains("on it"),
            "{out}"
        );

        // Silences from the CLI: added for a duration, listed, expired.
        let err = fails(
            &inst,
            &token,
            &[
                "silence",
                "add",
                "-m",
                "cause=\"partner_down\"",
                "--duration",
                "soon",
                "--comment",
                "x",
            ],
        );
        assert!(err.contains("--duration"), "{err}");
        let out = ok(
            &inst,
            &token,
            &[
                "silence",
                "add",
                "-m",
                "cause=\"partner_down\"",
                "-m",
                "destination=~\"carrier-.*\"",
                "--duration",
                "2h",
                "--comment",
                "carrier maintenance",
            ],
        );
        let sid = out.split_whitespace().nth(1).unwrap().to_string();
        let out = ok(&inst, &viewer, &["silence", "list"]);
        assert!(
            out.contains("cause=\"partner_down\"") && out.contains("carrier maintenance"),
            "{out}"
        );
        assert!(
            out.contains(&format!("ops-{backend}")),
            "the creator is the token: {out}"
        );
        ok(&inst, &token, &["silence", "expire", &sid]);
        let out = ok(&inst, &viewer, &["silence", "list"]);
        assert!(!out.contains("carrier maintenance"), "{out}");
        let out = ok(&inst, &viewer, &["silence", "list", "--all"]);
        assert!(out.contains("(expired)"), "{out}");
        let out = ok(
            &inst,
            &viewer,
            &[
                "routes",
                "test",
                "workflow=order_to_cash",
                "cause=data_mismatch",
            ],
        );
        assert!(out.starts_with("operations (team operations)"), "{out}");

        let (s, r) = post(
            &inst,
            &token,
            "/v1/routes/test",
            json!({"labels": {"workflow": "order_to_cash", "cause": "upstream_backlog"}}),
        );
        assert_eq!(s, 200);
        assert_eq!(r["routes"][0]["receiver"], "operations");
        assert_eq!(r["routes"][0]["team"], "operations");

        // The invoice arrives: the instance completes (late), the alert clears, the
        // incident resolves by itself and the team is told.
        send(
            &inst,
            &token,
            json!([ev(
                "i1",
                "/odoo",
                "invoice.posted",
                json!({"name": "S1", "origin": "#1"})
            )]),
        );
        let got = hook.wait_until("a resolved notification", Duration::from_secs(60), |r| {
            r.iter().any(|x| x.body["status"] == "resolved")
        });
        let last = &got
            .iter()
            .find(|x| x.body["status"] == "resolved")
            .unwrap()
            .body;
        assert_eq!(last["alerts"][0]["status"], "resolved", "{last}");
        let v = wait_for(&inst, &token, &format!("/v1/incidents/{id}"), |v| {
            v["incident"]["status"] == "resolved"
        });
        assert_eq!(v["incident"]["resolved_by"], "switchyard");
        let kinds: Vec<&str> = v["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["kind"].as_str().unwrap())
            .collect();
        for k in ["opened", "notified", "acknowledged", "resolved"] {
            assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
        }
        let out = ok(&inst, &viewer, &["incidents", "stats"]);
        assert!(out.contains("team: operations"), "{out}");
        let (_, _, stats) = get(&inst, &token, "/v1/incidents/stats");
        assert_eq!(stats["all"]["incidents"], 1, "{stats}");
        assert_eq!(stats["by_team"]["operations"]["resolved"], 1, "{stats}");
        assert!(stats["all"]["mtta_seconds"].as_f64().unwrap() >= 0.0);
        // Every notification went through the delivery engine's critical lane.
        let (_, _, d) = get(&inst, &token, "/v1/deliveries?flow=notify.operations.0");
        for x in d["deliveries"].as_array().unwrap() {
            assert_eq!(x["lane"], "critical");
        }
        assert!(d["deliveries"].as_array().unwrap().len() >= 2, "{d}");
        inst.sigterm();
    }
}

#[test]
fn a_dead_lettered_order_event_alerts_until_its_dead_letter_is_discarded() {
    let dir = tempfile::tempdir().unwrap();
    for (backend, url) in support::store_urls(dir.path()) {
        // The WMS refuses the order for good (400): a dead letter, a `delivery_failed`
        // finding on the order's instance, an alert to operations.
        let wms = Receiver::start(400, Duration::ZERO);
        let hook = Receiver::start(200, Duration::ZERO);
        let config = format!(
            r#"{WORKFLOW}
[alerting]
evaluation_interval_seconds = 1

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
name = "order-not-delivered"
on = "finding"
findings = ["delivery_failed"]

[[receivers]]
name = "operations"
[[receivers.notify]]
type = "webhook"
destination = "ops-hook"

[route]
receiver = "operations"
group_wait_seconds = 0
group_interval_seconds = 1
"#,
            wms = wms.url,
            hook = hook.url
        );
        let mut inst = Instance::new(dir.path(), backend, &url, &config);
        let token = inst.create_token("admin", &format!("ops-{backend}"));
        inst.start();
        send(
            &inst,
            &token,
            json!([ev(
                "o7",
                "/shop",
                "order.created",
                json!({"number": "#7", "warehouse": "WH1"})
            )]),
        );
        let v = wait_for(&inst, &token, "/v1/alerts?state=firing", |v| {
            v["alerts"]
                .as_array()
                .is_some_and(|l| l.iter().any(|a| a["labels"]["kind"] == "delivery_failed"))
        });
        let alert = v["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["labels"]["kind"] == "delivery_failed")
            .unwrap()
            .clone();
        assert_eq!(alert["labels"]["step"], "ordered", "{alert}");
        assert!(
            alert["summary"].as_str().unwrap().contains("orders-to-wms"),
            "{alert}"
        );
        let fp = alert["fingerprint"].as_str().unwrap().to_string();

        // Discarding the dead letter clears the alert, although the order is still open.
        let (_, _, dlq) = get(&inst, &token, "/v1/dlq?flow=orders-to-wms");
        let id = dlq["deliveries"][0]["id"].as_i64().expect("a dead letter");
        let (s, body) = post(
            &inst,
            &token,
            &format!("/v1/dlq/{id}/discard"),
            json!({"reason": "order cancelled in the shop"}),
        );
        assert_eq!(s, 200, "{body}");
        let v = wait_for(&inst, &token, "/v1/alerts?state=resolved", |v| {
            v["alerts"]
                .as_array()
                .is_some_and(|l| l.iter().any(|a| a["fingerprint"] == fp.as_str()))
        });
        let (_, _, w) = get(&inst, &token, "/v1/workflows/order_to_cash/instances");
        assert_eq!(
            w["instances"][0]["state"], "on_track",
            "the instance is still open: {w} {v}"
        );
        inst.sigterm();
    }
}
