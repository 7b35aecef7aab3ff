//! The recorded traps a client must survive, checked end to end over HTTP.

use serde_json::{Value, json};
use std::sync::Arc;
use switchyard_core::clock::SystemClock;
use switchyard_odoo::xmlrpc;
use switchyard_odoo_sim::{SimConfig, Simulator};

async fn start() -> (Simulator, String) {
    let sim = Simulator::new(SimConfig::instant(), Arc::new(SystemClock));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(switchyard_odoo_sim::http::serve(sim.clone(), l));
    (sim, base)
}

async fn xml_call(base: &str, method: &str, params: &[Value]) -> Result<Value, xmlrpc::Fault> {
    let body = xmlrpc::encode_call(method, params);
    let resp = reqwest::Client::new()
        .post(format!("{base}/xmlrpc/2/object"))
        .header("Content-Type", "text/xml")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    xmlrpc::decode_response(&resp.bytes().await.unwrap()).unwrap()
}

/// A method returning None faults over XML-RPC ("cannot marshal None") after its change
/// was committed (01_33/01_34): the archive happened although the caller got a fault.
#[tokio::test]
async fn none_result_faults_over_xmlrpc_after_the_commit() {
    let (_sim, base) = start().await;
    let auth = |m: &str, args: Value| {
        vec![
            json!("odoopeer"),
            json!(2),
            json!("admin"),
            json!("res.partner"),
            json!(m),
            args,
        ]
    };
    let id = xml_call(
        &base,
        "execute_kw",
        &auth("create", json!([{"name": "Archive me"}])),
    )
    .await
    .unwrap();
    let fault = xml_call(&base, "execute_kw", &auth("action_archive", json!([[id]])))
        .await
        .unwrap_err();
    assert_eq!(fault.code, xmlrpc::FaultCode::Int(1));
    assert!(
        fault
            .string
            .trim_end()
            .ends_with("TypeError: cannot marshal None unless allow_none is enabled"),
        "{}",
        fault.string
    );
    let mut params = auth("read", json!([[id], ["active"]]));
    params.push(json!({"context": {"active_test": false}}));
    let rows = xml_call(&base, "execute_kw", &params).await.unwrap();
    assert_eq!(rows, json!([{"id": id, "active": false}]));
}
