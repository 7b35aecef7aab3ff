//! The HTTP surface over real HTTP on loopback, against a real SQLite file: what is
//! accepted, what is refused with which problem, and that a refusal stores nothing.

use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use switchyard_core::token::hash_token;
use switchyard_store::StoreOptions;

mod support;

use support::{Server, Setup, problem};

async fn start_with(url_params: &str, opts: StoreOptions, max_body: usize) -> Server {
    support::start(Setup {
        url_params: url_params.into(),
        store: opts,
        max_body,
        allowed_origins: vec!["eventgrid.azure.net".into()],
        ..Default::default()
    })
    .await
}

async fn start() -> Server {
    start_with("", StoreOptions::default(), 64 * 1024).await
}

fn ce(id: &str) -> Value {
    json!({
        "specversion": "1.0", "id": id, "source": "https://shop.example.com",
        "type": "shop.order.created", "subject": "#1042", "time": "2026-11-23T08:00:00Z",
        "data": {"order": "#1042", "amount": 12.5}
    })
}

impl Server {
    fn post(&self, token: Option<&str>) -> reqwest::RequestBuilder {
        let r = self.http.post(format!("{}/v1/events", self.base));
        match token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.get_as(path, token).await
    }
}

#[tokio::test]
async fn structured_event_is_stored_and_read_back() {
    let s = start().await;
    let r = s.structured(&ce("o-1")).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "stored");
    let seq = body["seq"].as_i64().unwrap();
    let (st, got) = s.get(&format!("/v1/events/{seq}"), &s.viewer).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(got["event"], ce("o-1"));
    assert!(got["received_at"].is_string());

    let (st, by_id) = s
        .get(
            "/v1/events?source=https%3A%2F%2Fshop.example.com&id=o-1",
            &s.viewer,
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(by_id["events"][0]["seq"], seq);
}

#[tokio::test]
async fn concurrent_retries_of_one_id_are_stored_once() {
    let s = Arc::new(start().await);
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let r = s.structured(&ce("retry-me")).await;
            let status = r.status();
            let body: Value = r.json().await.unwrap();
            (status, body)
        }));
    }
    let mut accepted = 0;
    let mut seqs = std::collections::HashSet::new();
    for t in tasks {
        let (status, body) = t.await.unwrap();
        match status {
            StatusCode::ACCEPTED => {
                accepted += 1;
                assert_eq!(body["status"], "stored");
            }
            StatusCode::OK => assert_eq!(body["status"], "duplicate"),
            other => panic!("unexpected {other}: {body}"),
        }
        seqs.insert(body["seq"].as_i64().unwrap());
    }
    assert_eq!(accepted, 1);
    assert_eq!(seqs.len(), 1);
    assert_eq!(s.count().await, 1);
}

#[tokio::test]
async fn oversized_bodies_are_refused_while_reading() {
    let s = start().await;
    let mut big = ce("big");
    big["data"] = json!({"blob": "x".repeat(70 * 1024)});
    let r = s.structured(&big).await;
    let p = problem(r, 413, "payload-too-large").await;
    assert!(p["detail"].as_str().unwrap().contains("65536"));

    // No Content-Length (chunked): the limit is enforced while streaming.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..100).map(|_| Ok(vec![b' '; 1024])).collect();
    let r = s
        .post(Some(&s.ingest))
        .header("content-type", "application/cloudevents+json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    problem(r, 413, "payload-too-large").await;
    assert_eq!(s.count().await, 0);
}

#[tokio::test]
async fn malformed_and_invalid_bodies_store_nothing() {
    let s = start().await;
    let r = s
        .post(Some(&s.ingest))
        .header("content-type", "application/cloudevents+json")
        .body("{\"specversion\": \"1.0\", ")
        .send()
        .await
        .unwrap();
    problem(r, 400, "malformed-request").await;

    let mut bad = ce("bad");
    bad["time"] = json!("last tuesday");
    bad.as_object_mut().unwrap().remove("type");
    let p = problem(s.structured(&bad).await, 400, "invalid-request").await;
    let fields: Vec<&str> = p["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert!(fields.contains(&"time") && fields.contains(&"type"), "{p}");
    assert_eq!(
        p["errors"][0]["pointer"].as_str().unwrap().chars().next(),
        Some('/')
    );

    // batch: one bad member refuses the whole batch, naming it by index
    let mut second = ce("b2");
    second["specversion"] = json!("0.3");
    let r = s
        .post(Some(&s.ingest))
        .header("content-type", "application/cloudevents-batch+json")
        .body(json!([ce("b1"), second, ce("b3")]).to_string())
        .send()
        .await
        .unwrap();
    let p = problem(r, 400, "invalid-request").await;
    assert_eq!(p["errors"][0]["index"], 1);
    assert_eq!(p["errors"][0]["field"], "specversion");
    assert_eq!(p["errors"][0]["pointer"], "/1/specversion");
    assert_eq!(s.count().await, 0);
}

#[tokio::test]
async fn wrong_media_type_is_415() {
    let s = start().await;
    let r = s
        .post(Some(&s.ingest))
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    problem(r, 415, "unsupported-media-type").await;
    let r = s
        .post(Some(&s.ingest))
        .header("content-type", "application/cloudevents+avro")
        .body("x")
        .send()
        .await
        .unwrap();
    problem(r, 415, "unsupported-media-type").await;
    assert_eq!(s.count().await, 0);
}

#[tokio::test]
async fn tokens_and_roles_are_enforced() {
    let s = start().await;
    let body = ce("auth").to_string();
    let r = s
        .post(None)
        .header("content-type", "application/cloudevents+json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    problem(r, 401, "unauthenticated").await;
    let r = s
        .post(Some("sy_not-a-real-token"))
        .header("content-type", "application/cloudevents+json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    problem(r, 401, "unauthenticated").await;
    let r = s
        .post(Some(&s.viewer))
        .header("content-type", "application/cloudevents+json")
        .body(body)
        .send()
        .await
        .unwrap();
    problem(r, 403, "forbidden").await;
    assert_eq!(s.count().await, 0);

    // an ingest token cannot read, a viewer cannot manage tokens
    let r = s
        .http
        .get(format!("{}/v1/events", s.base))
        .bearer_auth(&s.ingest)
        .send()
        .await
        .unwrap();
    problem(r, 403, "forbidden").await;
    let (st, _) = s.get("/v1/tokens", &s.viewer).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn tokens_are_created_listed_and_revoked_over_http() {
    let s = start().await;
    let r = s
        .http
        .post(format!("{}/v1/tokens", s.base))
        .bearer_auth(&s.admin)
        .json(&json!({"name": "wms-bot", "role": "ingest"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let created: Value = r.json().await.unwrap();
    let secret = created["token"].as_str().unwrap().to_string();
    assert!(secret.starts_with("sy_"));
    assert_eq!(created["created_by"], "admin");

    let r = s
        .post(Some(&secret))
        .header("content-type", "application/cloudevents+json")
        .body(ce("from-wms").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);

    let (_, list) = s.get("/v1/tokens", &s.admin).await;
    let text = list.to_string();
    assert!(text.contains("wms-bot"));
    assert!(
        !text.contains(&secret),
        "the clear token is shown once only"
    );
    assert!(
        !text.contains(&hash_token(&secret)),
        "hashes are never shown"
    );

    let r = s
        .http
        .post(format!("{}/v1/tokens", s.base))
        .bearer_auth(&s.admin)
        .json(&json!({"name": "wms-bot", "role": "ingest"}))
        .send()
        .await
        .unwrap();
    problem(r, 409, "conflict").await;
    let r = s
        .http
        .post(format!("{}/v1/tokens", s.base))
        .bearer_auth(&s.admin)
        .json(&json!({"name": "x", "role": "root"}))
        .send()
        .await
        .unwrap();
    let p = problem(r, 400, "invalid-request").await;
    assert_eq!(p["field"], "role");

    let id = created["id"].as_i64().unwrap();
    let r = s
        .http
        .delete(format!("{}/v1/tokens/{id}", s.base))
        .bearer_auth(&s.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = s
        .post(Some(&secret))
        .header("content-type", "application/cloudevents+json")
        .body(ce("after-revoke").to_string())
        .send()
        .await
        .unwrap();
    problem(r, 401, "unauthenticated").await;

    let (_, audit) = s.get("/v1/audit", &s.admin).await;
    let actions: Vec<(String, String)> = audit["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["actor"].as_str().unwrap().into(),
                a["action"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(actions.contains(&("admin".into(), "token.create".into())));
    assert!(actions.contains(&("admin".into(), "token.revoke".into())));
    assert!(actions.contains(&("cli".into(), "token.create".into())));
}

#[tokio::test]
async fn binary_and_batch_modes_are_accepted() {
    let s = start().await;
    let r = s
        .post(Some(&s.ingest))
        .header("ce-specversion", "1.0")
        .header("ce-id", "bin-1")
        .header("ce-source", "/carrier")
        .header("ce-type", "carrier.label.created")
        .header("ce-subject", "WH%2FOUT%2F00017")
        .header("content-type", "application/json")
        .body(r#"{"tracking":"JJD1"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let got = s
        .store
        .find_event("/carrier", "bin-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.event.subject.as_deref(), Some("WH/OUT/00017"));
    assert_eq!(got.event.json_data(), Some(&json!({"tracking": "JJD1"})));

    let r = s
        .post(Some(&s.ingest))
        .header(
            "content-type",
            "application/cloudevents-batch+json; charset=utf-8",
        )
        .body(json!([ce("b1"), ce("b2"), ce("b1")]).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["stored"], 2);
    assert_eq!(body["duplicates"], 1);
    assert_eq!(body["events"][2]["status"], "duplicate");
    assert_eq!(body["events"][2]["seq"], body["events"][0]["seq"]);
    assert_eq!(s.count().await, 3);
}

#[tokio::test]
async fn webhook_validation_handshake() {
    let s = start().await;
    let r = s
        .http
        .request(reqwest::Method::OPTIONS, format!("{}/v1/events", s.base))
        .header("WebHook-Request-Origin", "eventgrid.azure.net")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["webhook-allowed-origin"], "eventgrid.azure.net");
    assert!(r.headers()["allow"].to_str().unwrap().contains("POST"));
    let r = s
        .http
        .request(reqwest::Method::OPTIONS, format!("{}/v1/events", s.base))
        .header("WebHook-Request-Origin", "evil.example.com")
        .send()
        .await
        .unwrap();
    problem(r, 403, "forbidden").await;
}

#[tokio::test]
async fn log_is_paged_by_cursor_and_tailed_from_latest() {
    let s = start().await;
    for i in 0..5 {
        assert_eq!(
            s.structured(&ce(&format!("p{i}"))).await.status(),
            StatusCode::ACCEPTED
        );
    }
    let (_, page) = s.get("/v1/events?limit=3", &s.viewer).await;
    assert_eq!(page["events"].as_array().unwrap().len(), 3);
    let next = page["next"].as_str().unwrap().to_string();
    let (_, page2) = s.get(&format!("/v1/events?after={next}"), &s.viewer).await;
    let ids: Vec<&str> = page2["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["p3", "p4"]);
    let (_, latest) = s.get("/v1/events?after=latest", &s.viewer).await;
    assert_eq!(latest["next"], page2["next"]);
    assert!(latest["events"].as_array().unwrap().is_empty());
    let (st, p) = s.get("/v1/events?after=garbage", &s.viewer).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(p["field"], "after");
}

#[tokio::test]
async fn saturated_writer_answers_429_with_retry_after() {
    use futures::StreamExt;
    let s = Arc::new(
        start_with(
            "",
            StoreOptions {
                writer_queue: 1,
                ..Default::default()
            },
            64 * 1024,
        )
        .await,
    );
    // Warm the token cache so every request below goes straight to the writer queue.
    assert_eq!(
        s.structured(&ce("warm")).await.status(),
        StatusCode::ACCEPTED
    );
    // Hold the single writer inside a transaction.
    let (inserted_tx, inserted_rx) = tokio::sync::oneshot::channel();
    let (release_tx, release_rx) = tokio::sync::oneshot::channel();
    let store = s.store.clone();
    let held = tokio::spawn(async move {
        store
            .append_events_held(
                vec![switchyard_store::conformance::event("/held", "h", "t")],
                inserted_tx,
                release_rx,
            )
            .await
    });
    inserted_rx.await.unwrap();
    // Five senders at once: the queue has room for one, so four must be refused at once
    // rather than queued without bound.
    let mut pending: futures::stream::FuturesUnordered<_> = (0..5)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                let r = s.structured(&ce(&format!("c{i}"))).await;
                let retry = r
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_string());
                (r.status(), retry, format!("c{i}"))
            })
        })
        .collect();
    let mut refused = Vec::new();
    for _ in 0..4 {
        let (status, retry, id) = tokio::time::timeout(Duration::from_secs(30), pending.next())
            .await
            .expect("four requests must be refused while the writer is held")
            .unwrap()
            .unwrap();
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(retry.as_deref(), Some("1"));
        refused.push(id);
    }
    release_tx.send(()).unwrap();
    held.await.unwrap().unwrap();
    let (status, _, queued) = pending.next().await.unwrap().unwrap();
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "the queued request is stored once the writer frees"
    );
    assert!(
        s.store
            .find_event("https://shop.example.com", &queued)
            .await
            .unwrap()
            .is_some()
    );
    for id in refused {
        assert!(
            s.store
                .find_event("https://shop.example.com", &id)
                .await
                .unwrap()
                .is_none(),
            "a refused request stored nothing"
        );
    }
}

#[tokio::test]
async fn full_disk_answers_503_and_stores_nothing_of_that_request() {
    // The file is capped at 1 MiB: once full, commits fail as on a full disk.
    let s = start_with("?max_size_mib=1", StoreOptions::default(), 64 * 1024).await;
    let mut last = StatusCode::ACCEPTED;
    let mut stored = 0;
    let mut failing_id = String::new();
    for i in 0..2000 {
        let mut e = ce(&format!("fill-{i}"));
        e["data"] = json!({"blob": "y".repeat(2000)});
        let r = s.structured(&e).await;
        last = r.status();
        if last != StatusCode::ACCEPTED {
            failing_id = format!("fill-{i}");
            problem(r, 503, "store-unavailable").await;
            break;
        }
        stored += 1;
    }
    assert_eq!(
        last,
        StatusCode::SERVICE_UNAVAILABLE,
        "the cap was never reached"
    );
    assert_eq!(s.count().await, stored);
    assert!(
        s.store
            .find_event("https://shop.example.com", &failing_id)
            .await
            .unwrap()
            .is_none()
    );
    // reads still work
    let (st, _) = s.get("/v1/events?limit=1", &s.viewer).await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test]
async fn ops_endpoints_and_problem_routes() {
    let s = start().await;
    let r = s
        .http
        .get(format!("{}/healthz", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = s
        .http
        .get(format!("{}/readyz", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(s.structured(&ce("m1")).await.status(), StatusCode::ACCEPTED);
    assert_eq!(s.structured(&ce("m1")).await.status(), StatusCode::OK);
    let text = s
        .http
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "switchyard_ingest_events_total{outcome=\"stored\"}",
        "switchyard_ingest_events_total{outcome=\"duplicate\"}",
        "switchyard_http_requests_total",
        "switchyard_store_writer_batch_size_bucket",
        "switchyard_store_commit_seconds_bucket",
    ] {
        assert!(text.contains(name), "metrics lack {name}:\n{text}");
    }
    let r = s.http.get(format!("{}/nope", s.base)).send().await.unwrap();
    problem(r, 404, "not-found").await;
    let r = s
        .http
        .put(format!("{}/v1/events", s.base))
        .send()
        .await
        .unwrap();
    problem(r, 405, "method-not-allowed").await;
    let r = s
        .http
        .get(format!("{}/problems/ingest-saturated", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.unwrap().contains("429"));
    let (st, cluster) = s.get("/v1/cluster", &s.viewer).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(cluster["this_node"], "test-node");
    assert_eq!(cluster["backend"], "sqlite");
}

#[tokio::test]
async fn every_refusal_is_problem_json_and_authentication_comes_first() {
    let s = start().await;
    // bad query parameters: a problem, but only for an authenticated caller
    let r = s
        .http
        .get(format!("{}/v1/events?limit=abc", s.base))
        .send()
        .await
        .unwrap();
    let p = problem(r, 401, "unauthenticated").await;
    assert!(p["detail"].as_str().unwrap().contains("Bearer"));
    let (st, p) = s.get("/v1/events?limit=abc", &s.viewer).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(p["type"], "/problems/invalid-request");
    let (st, p) = s.get("/v1/events?bogus=1", &s.viewer).await;
    assert_eq!(
        st,
        StatusCode::BAD_REQUEST,
        "unknown parameters are typos: {p}"
    );
    let (st, _) = s.get("/v1/jobs?limit=0", &s.viewer).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);

    // 401 names the scheme; the scheme itself is case-insensitive
    let r = s
        .http
        .get(format!("{}/v1/events", s.base))
        .send()
        .await
        .unwrap();
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    let r = s
        .http
        .get(format!("{}/v1/events", s.base))
        .header("authorization", format!("BEARER {}", s.viewer))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // management bodies are bounded too
    let r = s
        .http
        .post(format!("{}/v1/tokens", s.base))
        .bearer_auth(&s.admin)
        .body(format!(
            "{{\"name\": \"{}\", \"role\": \"viewer\"}}",
            "x".repeat(100_000)
        ))
        .send()
        .await
        .unwrap();
    problem(r, 413, "payload-too-large").await;

    // a batch that is not an array
    let r = s
        .post(Some(&s.ingest))
        .header("content-type", "application/cloudevents-batch+json")
        .body(ce("not-in-array").to_string())
        .send()
        .await
        .unwrap();
    let p = problem(r, 400, "invalid-request").await;
    assert!(p["detail"].as_str().unwrap().contains("JSON array"));
    assert_eq!(s.count().await, 0);

    // unmatched routes are counted too
    let r = s
        .http
        .get(format!("{}/no/such/route", s.base))
        .send()
        .await
        .unwrap();
    problem(r, 404, "not-found").await;
    let text = s
        .http
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("route=\"unmatched\""), "{text}");
}
