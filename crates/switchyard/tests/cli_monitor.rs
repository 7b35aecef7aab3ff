//! The workflow monitor as an operator meets it: the real binary on both stores, events over
//! HTTP from three systems, the instance found by any of its keys, a breach in real time,
//! `/v1/trace` for a key with a `/`, the CLI's `workflows`, `trace` and `findings`, bad
//! queries answered with problem+json, and broken definitions refused by `check`.

mod support;

use serde_json::{Value, json};
use support::{Instance, WORKFLOW, ev, get, ok, send, text, wait_for};

#[test]
fn an_order_is_followed_across_systems_and_its_breach_reported() {
    let dir = tempfile::tempdir().unwrap();
    for (backend, url) in support::store_urls(dir.path()) {
        let mut inst = Instance::new(dir.path(), backend, &url, WORKFLOW);
        let token = inst.create_token("admin", &format!("ops-{backend}"));
        inst.start();
        // The shop's order, Odoo's sale order (which links S42 to #42) and the WMS picking
        // (which knows the picking and the sale order).
        send(
            &inst,
            &token,
            json!([
                ev(
                    "o42",
                    "/shop",
                    "order.created",
                    json!({"number": "#42", "warehouse": "WH2"})
                ),
                ev(
                    "c42",
                    "/odoo",
                    "sale.order.confirmed",
                    json!({"name": "S42", "origin": "#42"})
                ),
                ev(
                    "w42",
                    "/wms",
                    "shipment.shipped",
                    json!({"order": "S42", "picking": "WH2/OUT/00042"})
                ),
            ]),
        );
        let found = wait_for(&inst, &token, "/v1/instances?key=%2342", |v| {
            v["instances"][0]["hits"]
                .as_array()
                .is_some_and(|h| h.len() == 3)
        });
        let i = &found["instances"][0];
        assert_eq!(i["workflow"], "order_to_cash");
        assert_eq!(i["key"], "#42");
        assert_eq!(i["dimensions"]["warehouse"], "WH2");
        // The invoice is due 2 s after the shipment: at risk, then breached.
        let v = wait_for(&inst, &token, "/v1/findings?workflow=order_to_cash", |v| {
            v["findings"].as_array().is_some_and(|f| f.len() == 2)
        });
        let f = v["findings"].as_array().unwrap();
        assert_eq!(f[0]["kind"], "at_risk");
        assert_eq!(f[1]["kind"], "breach");
        assert_eq!(f[1]["step"], "invoiced");
        assert_eq!(f[1]["instance_key"], "#42");
        assert_eq!(f[1]["evidence"][0]["id"], "w42");
        let (_, _, v) = get(&inst, &token, "/v1/instances?key=S42");
        assert_eq!(v["instances"][0]["state"], "breached");
        assert_eq!(v["instances"][0]["breach"]["step"], "invoiced");
        let (_, _, v) = get(&inst, &token, "/v1/workflows");
        assert_eq!(v["workflows"][0]["instances"]["breached"], 1);
        let (_, _, v) = get(
            &inst,
            &token,
            "/v1/workflows/order_to_cash/instances?state=breached&dimension=warehouse:WH2",
        );
        assert_eq!(v["instances"].as_array().unwrap().len(), 1);
        let (_, _, v) = get(
            &inst,
            &token,
            "/v1/workflows/order_to_cash/instances?dimension=warehouse:WH1",
        );
        assert_eq!(v["instances"].as_array().unwrap().len(), 0);
        // The trace of the picking: the one event that carries it, and the instance.
        let (status, _, v) = get(&inst, &token, "/v1/trace?key=WH2%2FOUT%2F00042");
        assert_eq!(status, 200);
        assert_eq!(v["events"].as_array().unwrap().len(), 1);
        assert_eq!(v["events"][0]["event"]["id"], "w42");
        assert_eq!(v["instances"][0]["key"], "#42");
        // The invoice completes it, late.
        send(
            &inst,
            &token,
            json!([ev("i42", "/odoo", "invoice.posted", json!({"name": "S42"}))]),
        );
        wait_for(&inst, &token, "/v1/instances?key=%2342", |v| {
            v["instances"][0]["state"] == "completed_late"
        });
        // The business measures as metrics.
        let metrics = reqwest::blocking::get(format!("{}/metrics", inst.base()))
            .unwrap()
            .text()
            .unwrap();
        let line = |name: &str, with: &str| {
            metrics
                .lines()
                .find(|l| l.starts_with(name) && l.contains(with))
                .unwrap_or_else(|| panic!("{name} {with} missing:\n{metrics}"))
                .to_string()
        };
        assert!(
            line(
                "switchyard_workflow_instances_started_total",
                "order_to_cash"
            )
            .ends_with(" 1")
        );
        assert!(
            line(
                "switchyard_workflow_instances_completed_total",
                "within_sla=\"false\""
            )
            .ends_with(" 1")
        );
        line(
            "switchyard_workflow_step_seconds_count",
            "step=\"invoiced\"",
        );
        line("switchyard_workflow_findings_total", "kind=\"breach\"");
        // The CLI.
        let out = ok(&inst, &token, &["workflows"]);
        assert!(out.contains("order_to_cash"), "{out}");
        let row = out
            .lines()
            .find(|l| l.starts_with("order_to_cash"))
            .unwrap();
        assert!(row.contains("P2"), "{row}");
        let out = ok(&inst, &token, &["trace", "WH2/OUT/00042"]);
        assert!(out.contains("1 event(s) carry WH2/OUT/00042"), "{out}");
        assert!(out.contains("completed_late"), "{out}");
        assert!(out.contains("breach"), "{out}");
        let out = ok(&inst, &token, &["findings", "--kind", "breach"]);
        assert_eq!(out.lines().count(), 2, "{out}");
        assert!(out.contains("\"invoiced\" not reached within 2s"), "{out}");
        // Bad queries change nothing and say why, as problem+json.
        for (path, status, field) in [
            ("/v1/findings?kind=late", 400, "kind"),
            ("/v1/instances", 400, "key"),
            (
                "/v1/workflows/order_to_cash/instances?state=done",
                400,
                "state",
            ),
            (
                "/v1/workflows/order_to_cash/instances?dimension=WH1",
                400,
                "dimension",
            ),
            ("/v1/workflows/nope/instances", 404, ""),
            ("/v1/trace", 400, "key"),
        ] {
            let (s, ct, v) = get(&inst, &token, path);
            assert_eq!(s, status, "{path}: {v}");
            assert_eq!(ct, "application/problem+json", "{path}");
            if !field.is_empty() {
                assert_eq!(v["errors"][0]["field"], field, "{path}: {v}");
            }
        }
        // Heartbeats: a run with too few records; a repeat is a duplicate; bad input is refused.
        let post = |path: &str, body: &str| {
            let r = reqwest::blocking::Client::new()
                .post(format!("{}{path}", inst.base()))
                .bearer_auth(&token)
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .unwrap();
            let status = r.status().as_u16();
            let ct = r
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            (status, ct, r.json::<Value>().unwrap_or(Value::Null))
        };
        let (s, _, v) = post(
            "/v1/heartbeats/export",
            r#"{"status": "start", "run_id": "r1"}"#,
        );
        assert_eq!(s, 202, "{v}");
        let (s, _, v) = post(
            "/v1/heartbeats/export",
            r#"{"status": "finish", "run_id": "r1", "count": 12}"#,
        );
        assert_eq!(s, 202, "{v}");
        let (s, _, v) = post(
            "/v1/heartbeats/export",
            r#"{"status": "finish", "run_id": "r1", "count": 12}"#,
        );
        assert_eq!((s, v["status"].as_str()), (200, Some("duplicate")));
        for (path, body, status, field) in [
            ("/v1/heartbeats/nope", r#"{"status": "start"}"#, 404, ""),
            (
                "/v1/heartbeats/export",
                r#"{"status": "done"}"#,
                400,
                "status",
            ),
            (
                "/v1/heartbeats/export",
                r#"{"status": "finish", "count": -1}"#,
                400,
                "count",
            ),
            (
                "/v1/heartbeats/export",
                r#"{"status": "start", "extra": 1}"#,
                400,
                "",
            ),
            ("/v1/heartbeats/export", "{not json", 400, ""),
        ] {
            let (s, ct, v) = post(path, body);
            assert_eq!(s, status, "{path} {body}: {v}");
            assert_eq!(ct, "application/problem+json");
            if !field.is_empty() {
                assert_eq!(v["errors"][0]["field"], field, "{v}");
            }
        }
        // (the run is also late or on time depending on the hour the test runs: 02:00 UTC)
        let v = wait_for(
            &inst,
            &token,
            "/v1/findings?subject=batch&kind=count_out_of_range",
            |v| v["findings"].as_array().is_some_and(|f| !f.is_empty()),
        );
        assert_eq!(v["findings"][0]["kind"], "count_out_of_range");
        assert_eq!(v["findings"][0]["instance_key"], "r1");
        let (_, _, v) = get(&inst, &token, "/v1/batch-monitors");
        let m = &v["batch_monitors"][0];
        assert_eq!(m["name"], "export");
        assert_eq!(m["runs"].as_array().unwrap().len(), 1, "{m}");
        assert_eq!(m["runs"][0]["count"], 12);
        assert_eq!(m["runs"][0]["status"], "succeeded");
        let out = ok(&inst, &token, &["findings", "--subject", "batch"]);
        assert!(out.contains("count_out_of_range"), "{out}");
        inst.sigterm();
    }
}

#[test]
fn check_refuses_broken_workflows_with_their_position() {
    let dir = tempfile::tempdir().unwrap();
    let broken = WORKFLOW
        .replace("schedule = \"0 2 * * *\"", "schedule = \"0 2 * *\"")
        .replace(
            "source = \"wms\"\ntype = \"shipment.shipped\"",
            "source = \"wms2\"\ntype = \"shipment.shipped\"",
        )
        .replace("after = [\"ordered\"]", "after = [\"invoiced\"]");
    let inst = Instance::new(dir.path(), "broken", "sqlite::memory:", &broken);
    let out = inst.cmd().arg("check").output().unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("workflows[0].steps[2].source"), "{err}");
    assert!(err.contains("no source is named \"wms2\""), "{err}");
    assert!(err.contains("the step order loops"), "{err}");
    assert!(err.contains("batch_monitors[0].schedule"), "{err}");
    assert!(err.contains("five fields"), "{err}");
    let written = std::fs::read_to_string(&inst.config).unwrap();
    let line = written
        .lines()
        .position(|l| l == "source = \"wms2\"")
        .unwrap()
        + 1;
    assert!(
        err.contains(&format!("broken.toml:{line}:")),
        "the line of the bad source ({line}): {err}"
    );
}
