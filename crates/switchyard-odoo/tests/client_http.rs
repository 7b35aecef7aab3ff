//! The client over real HTTP against a loopback server that replays recorded Odoo 18
//! answers (status, headers, body from testdata/odoo), one scripted answer per request and
//! path. The only change made to a recorded body is the JSON-RPC `id`, which Odoo echoes
//! from the request (02_29, 02_30), so the replay echoes ours.

mod common;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use switchyard_core::delivery::ErrorClass;
use switchyard_odoo::{CallOptions, OdooClient, OdooConfig, OdooError, Protocol, SearchRead};

/// What the replay server answers and what it saw.
#[derive(Default)]
struct Replay {
    /// path → transcript ids to answer with, in order.
    script: Mutex<HashMap<String, VecDeque<String>>>,
    seen: Mutex<Vec<Seen>>,
}

#[derive(Clone, Debug)]
struct Seen {
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

impl Seen {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn is_authenticate(&self) -> bool {
        self.text()
            .contains("<methodName>authenticate</methodName>")
            || (self.path == "/jsonrpc" && self.json()["params"]["method"] == "authenticate")
    }
}

impl Replay {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn authentications(&self) -> usize {
        self.seen().iter().filter(|s| s.is_authenticate()).count()
    }

    fn unanswered(&self) -> Vec<(String, VecDeque<String>)> {
        let script = self.script.lock().unwrap();
        script
            .iter()
            .filter(|(_, q)| !q.is_empty())
            .map(|(p, q)| (p.clone(), q.clone()))
            .collect()
    }
}

async fn replay(
    State(replay): State<Arc<Replay>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    replay.seen.lock().unwrap().push(Seen {
        path: path.clone(),
        headers,
        body: body.clone(),
    });
    let next = replay
        .script
        .lock()
        .unwrap()
        .get_mut(&path)
        .and_then(VecDeque::pop_front);
    let Some(id) = next else {
        return (
            StatusCode::NOT_IMPLEMENTED,
            format!("no recorded answer scripted for {path}"),
        )
            .into_response();
    };
    recorded_response(&common::by_id(&id), &body)
}

/// The recorded answer: status, the headers that describe the body, the body.
fn recorded_response(t: &common::Transcript, request: &[u8]) -> Response {
    let mut builder = Response::builder().status(t.status().unwrap());
    for (name, value) in t.response_headers() {
        if !["content-length", "connection", "date", "server"]
            .contains(&name.to_ascii_lowercase().as_str())
        {
            builder = builder.header(name, value);
        }
    }
    let body = echo_request_id(t.response_body().unwrap(), request);
    builder.body(axum::body::Body::from(body)).unwrap()
}

/// Odoo echoes the request's JSON-RPC id; a recorded answer carries the recording's.
fn echo_request_id(recorded: &str, request: &[u8]) -> String {
    let (Ok(answer), Ok(request)) = (
        serde_json::from_str::<Value>(recorded),
        serde_json::from_slice::<Value>(request),
    ) else {
        return recorded.to_owned();
    };
    match (answer.get("id"), request.get("id")) {
        (Some(old), Some(new)) if !old.is_null() => {
            recorded.replacen(&format!("\"id\": {old}"), &format!("\"id\": {new}"), 1)
        }
        _ => recorded.to_owned(),
    }
}

/// Starts a replay server with `script` (path, transcript id) and returns it with its URL.
async fn serve(script: &[(&str, &str)]) -> (Arc<Replay>, String) {
    let state = Arc::new(Replay::default());
    {
        let mut queues = state.script.lock().unwrap();
        for (path, id) in script {
            queues
                .entry((*path).to_owned())
                .or_default()
                .push_back((*id).to_owned());
        }
    }
    let app = Router::new().fallback(replay).with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (state, url)
}

fn client(url: &str, protocol: Protocol) -> OdooClient {
    let mut config = OdooConfig::new(url, "odoopeer", "admin", "the-secret");
    config.protocol = protocol;
    OdooClient::new(config).unwrap()
}

const COMMON: &str = "/xmlrpc/2/common";
const OBJECT: &str = "/xmlrpc/2/object";
const JSONRPC: &str = "/jsonrpc";
const PROBE: &str = "/json/2/res.users/context_get";

#[tokio::test]
async fn auto_detection_sees_the_303_and_falls_back_to_jsonrpc_once() {
    let (replay, url) = serve(&[
        (PROBE, "03_10"),
        (JSONRPC, "02_02"),
        (JSONRPC, "02_06"),
        (JSONRPC, "02_06"),
    ])
    .await;
    let odoo = client(&url, Protocol::Auto);
    assert_eq!(odoo.chosen_protocol(), None);
    let options = CallOptions::default();
    assert_eq!(
        odoo.search_count("res.partner", json!([]), &options)
            .await
            .unwrap(),
        3
    );
    assert_eq!(
        odoo.search_count("res.partner", json!([]), &options)
            .await
            .unwrap(),
        3
    );
    assert_eq!(odoo.chosen_protocol(), Some(Protocol::JsonRpc));

    let seen = replay.seen();
    let probes: Vec<_> = seen
        .iter()
        .filter(|s| s.path.starts_with("/json/2/"))
        .collect();
    assert_eq!(probes.len(), 1, "probed once");
    assert_eq!(probes[0].headers["authorization"], "bearer the-secret");
    assert_eq!(probes[0].headers["x-odoo-database"], "odoopeer");
    assert!(
        seen.iter().all(|s| !s.path.starts_with("/web/login")),
        "the redirect was not followed"
    );
    assert!(replay.unanswered().is_empty());
}

#[tokio::test]
async fn forced_json2_against_odoo_18_is_a_redirect_that_pauses() {
    let (replay, url) = serve(&[("/json/2/res.partner/search_read", "03_10")]).await;
    let odoo = client(&url, Protocol::Json2);
    let query = SearchRead {
        domain: json!([["id", "=", 3]]),
        fields: &["name"],
        ..Default::default()
    };
    let err = odoo
        .search_read("res.partner", &query, &CallOptions::default())
        .await
        .unwrap_err();
    let OdooError::Redirect {
        status: 303,
        location: Some(location),
    } = &err
    else {
        panic!("{err:?}")
    };
    assert!(location.starts_with("/web/login?redirect="));
    assert_eq!(err.class(), ErrorClass::Credential);
    // Named arguments, as JSON-2 wants them.
    let body = replay.seen()[0].json();
    assert_eq!(
        body,
        json!({"domain": [["id", "=", 3]], "fields": ["name"], "context": {}})
    );
}

#[tokio::test]
async fn invalid_json_data_is_a_permanent_http_400() {
    let (_, url) = serve(&[(JSONRPC, "02_02"), (JSONRPC, "02_26")]).await;
    let odoo = client(&url, Protocol::JsonRpc);
    let err = odoo
        .execute_kw(
            "res.partner",
            "search_count",
            vec![json!([])],
            Map::new(),
            &CallOptions::default(),
        )
        .await
        .unwrap_err();
    let OdooError::Http {
        status: 400,
        body,
        retry_after: None,
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(body, "Invalid JSON data");
    assert_eq!(err.class(), ErrorClass::Permanent);
}

#[tokio::test]
async fn an_oversized_xmlrpc_body_is_a_permanent_413() {
    let (_, url) = serve(&[(COMMON, "01_02"), (OBJECT, "07_43")]).await;
    let odoo = client(&url, Protocol::XmlRpc);
    let err = odoo
        .execute_kw(
            "res.partner",
            "search_count",
            vec![json!([])],
            Map::new(),
            &CallOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, OdooError::Http { status: 413, .. }),
        "{err:?}"
    );
    assert_eq!(err.class(), ErrorClass::Permanent);
}

#[tokio::test]
async fn the_uid_is_cached_across_calls() {
    let (replay, url) = serve(&[
        (COMMON, "01_02"),
        (OBJECT, "01_08"),
        (OBJECT, "01_09"),
        (OBJECT, "01_10"),
    ])
    .await;
    let odoo = client(&url, Protocol::XmlRpc);
    let options = CallOptions::default();
    assert_eq!(
        odoo.search_count("res.partner", json!([]), &options)
            .await
            .unwrap(),
        3
    );
    let ids = odoo
        .execute_kw(
            "res.partner",
            "search",
            vec![json!([])],
            Map::new(),
            &options,
        )
        .await
        .unwrap();
    assert_eq!(ids, json!([7, 3, 1]));
    let rows = odoo
        .execute_kw(
            "res.partner",
            "read",
            vec![json!([1])],
            Map::new(),
            &options,
        )
        .await
        .unwrap();
    assert_eq!(rows[0]["name"], "My Company");
    assert_eq!(replay.authentications(), 1);
    assert_eq!(odoo.uid().await.unwrap(), 2);
}

#[tokio::test]
async fn access_denied_on_a_cached_login_logs_in_again_once() {
    let (replay, url) = serve(&[
        (COMMON, "01_02"),
        (OBJECT, "01_08"),
        (OBJECT, "01_26"),
        (COMMON, "01_02"),
        (OBJECT, "01_09"),
    ])
    .await;
    let odoo = client(&url, Protocol::XmlRpc);
    let options = CallOptions::default();
    odoo.search_count("res.partner", json!([]), &options)
        .await
        .unwrap();
    let ids = odoo
        .execute_kw(
            "res.partner",
            "search",
            vec![json!([])],
            Map::new(),
            &options,
        )
        .await
        .unwrap();
    assert_eq!(
        ids,
        json!([7, 3, 1]),
        "the call was repeated after the new login"
    );
    assert_eq!(replay.authentications(), 2);
    assert!(replay.unanswered().is_empty());
}

#[tokio::test]
async fn access_denied_again_after_the_new_login_is_a_credential_error() {
    let (replay, url) = serve(&[
        (COMMON, "01_02"),
        (OBJECT, "01_08"),
        (OBJECT, "03_03"),
        (COMMON, "01_02"),
        (OBJECT, "03_04"),
    ])
    .await;
    let odoo = client(&url, Protocol::XmlRpc);
    let options = CallOptions::default();
    odoo.search_count("res.partner", json!([]), &options)
        .await
        .unwrap();
    let err = odoo
        .search_count("res.partner", json!([]), &options)
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Credential, "{err}");
    assert_eq!(replay.authentications(), 2, "one new login, not a loop");
}

#[tokio::test]
async fn a_refused_first_login_is_not_retried() {
    let (replay, url) = serve(&[(COMMON, "01_03")]).await;
    let odoo = client(&url, Protocol::XmlRpc);
    let err = odoo
        .search_count("res.partner", json!([]), &CallOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, OdooError::WrongCredentials), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Credential);
    assert_eq!(replay.seen().len(), 1);
}

#[tokio::test]
async fn none_after_commit_is_a_success_over_http() {
    let (_, url) = serve(&[(COMMON, "01_02"), (OBJECT, "08_12")]).await;
    let odoo = client(&url, Protocol::XmlRpc);
    let done = odoo
        .execute_kw(
            "stock.quant",
            "action_apply_inventory",
            vec![json!([1])],
            Map::new(),
            &CallOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(done, Value::Null);
}

#[tokio::test]
async fn serialization_failure_over_jsonrpc_is_transient() {
    let (_, url) = serve(&[(JSONRPC, "02_02"), (JSONRPC, "07_23")]).await;
    let odoo = client(&url, Protocol::JsonRpc);
    let err = odoo
        .execute_kw(
            "sale.order",
            "write",
            vec![json!([12]), json!({"note": "x"})],
            Map::new(),
            &CallOptions::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.exception(),
        Some("psycopg2.errors.SerializationFailure")
    );
    assert_eq!(err.class(), ErrorClass::Transient);
}

#[tokio::test]
async fn every_request_carries_a_traceparent_and_the_callers_is_kept() {
    let (replay, url) = serve(&[(COMMON, "01_02"), (OBJECT, "01_08"), (OBJECT, "01_08")]).await;
    let odoo = client(&url, Protocol::XmlRpc);
    odoo.search_count("res.partner", json!([]), &CallOptions::default())
        .await
        .unwrap();
    let given = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let options = CallOptions {
        traceparent: Some(given.into()),
        ..Default::default()
    };
    odoo.search_count("res.partner", json!([]), &options)
        .await
        .unwrap();

    let seen = replay.seen();
    assert_eq!(seen.len(), 3);
    for s in &seen {
        let tp = s.headers["traceparent"].to_str().unwrap();
        let parts: Vec<&str> = tp.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [2, 32, 16, 2],
            "{tp}"
        );
    }
    assert_eq!(seen[2].headers["traceparent"], given);
    assert_ne!(
        seen[0].headers["traceparent"],
        seen[1].headers["traceparent"]
    );
}

#[tokio::test]
async fn the_default_context_merges_with_the_calls() {
    let (replay, url) = serve(&[(JSONRPC, "02_02"), (JSONRPC, "10_082")]).await;
    let mut config = OdooConfig::new(&url, "odoopeer", "admin", "the-secret");
    config.protocol = Protocol::JsonRpc;
    config.context = json!({"lang": "en_US", "tz": "UTC", "active_test": true})
        .as_object()
        .cloned()
        .unwrap();
    let odoo = OdooClient::new(config).unwrap();
    let kwargs = json!({"fields": ["name", "active"], "context": {"tz": "Asia/Tokyo"}})
        .as_object()
        .cloned()
        .unwrap();
    let options = CallOptions {
        context: json!({"active_test": false, "allowed_company_ids": [1]})
            .as_object()
            .cloned()
            .unwrap(),
        ..Default::default()
    };
    let rows = odoo
        .execute_kw(
            "res.partner",
            "search_read",
            vec![json!([["name", "ilike", "Zed"]])],
            kwargs,
            &options,
        )
        .await
        .unwrap();
    assert_eq!(
        rows.as_array().unwrap().len(),
        2,
        "10_082 answered the archived partner too"
    );

    let sent = replay.seen()[1].json();
    let args = &sent["params"]["args"];
    assert_eq!(args[4], "search_read");
    assert_eq!(
        args[6]["context"],
        json!({"lang": "en_US", "tz": "Asia/Tokyo", "active_test": false, "allowed_company_ids": [1]})
    );
    assert_eq!(args[6]["fields"], json!(["name", "active"]));
    assert_eq!(args[2], "the-secret");
}

#[tokio::test]
async fn a_silent_server_is_a_transient_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    // Accepts connections and never answers.
    tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            open.push(socket);
        }
    });
    let mut config = OdooConfig::new(&url, "odoopeer", "admin", "the-secret");
    config.protocol = Protocol::XmlRpc;
    config.timeout = Duration::from_millis(200);
    let err = OdooClient::new(config)
        .unwrap()
        .version()
        .await
        .unwrap_err();
    assert!(matches!(err, OdooError::Timeout), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Transient);
}

#[tokio::test]
async fn nobody_listening_is_a_transient_connection_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let err = client(&url, Protocol::XmlRpc).version().await.unwrap_err();
    assert!(matches!(err, OdooError::Connection(_)), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Transient);
}

#[tokio::test]
async fn a_429_keeps_its_retry_after() {
    // No 429 was recorded (Odoo itself does not rate-limit RPC); this is a proxy's answer.
    let app = Router::new().fallback(|| async {
        (
            StatusCode::TOO_MANY_REQUESTS,
            [("Retry-After", "7")],
            "slow down",
        )
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let err = client(&url, Protocol::JsonRpc).version().await.unwrap_err();
    assert_eq!(err.retry_after(), Some(chrono::Duration::seconds(7)));
    assert_eq!(err.class(), ErrorClass::Transient);
}
