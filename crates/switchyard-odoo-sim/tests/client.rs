//! The real `OdooClient` against the simulator over loopback HTTP, in both of the simulator's
//! modes: Odoo 18 (XML-RPC and JSON-RPC; `Auto` must fall back to JSON-RPC after the 303 on
//! `/json/2`) and Odoo 19 (`Auto` must pick JSON-2 with a bearer API key). Each protocol does
//! the same calls and must class the same failures the same way; injected faults must read
//! as what they imitate.

use serde_json::{Map, Value, json};
use std::sync::Arc;
use switchyard_core::SystemClock;
use switchyard_core::delivery::ErrorClass;
use switchyard_odoo::{CallOptions, OdooClient, OdooConfig, OdooError, Protocol, SearchRead};
use switchyard_odoo_sim::faults::Faults;
use switchyard_odoo_sim::{OdooVersion, SimConfig, Simulator};

const KEY: &str = "0123456789abcdef0123456789abcdef01234567";
const EXPIRED_KEY: &str = "fedcba9876543210fedcba9876543210fedcba98";

/// A simulator served on a free loopback port, with a live and an expired API key for admin.
async fn start(version: OdooVersion) -> (Simulator, String) {
    let sim = Simulator::new(
        SimConfig {
            version,
            ..SimConfig::instant()
        },
        Arc::new(SystemClock),
    );
    sim.add_api_key(2, KEY, None);
    sim.add_api_key(
        2,
        EXPIRED_KEY,
        Some(chrono::Utc::now() - chrono::Duration::days(1)),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(switchyard_odoo_sim::http::serve(sim.clone(), listener));
    (sim, base)
}

fn client(base: &str, secret: &str, protocol: Protocol) -> OdooClient {
    let mut config = OdooConfig::new(base, "odoopeer", "admin", secret);
    config.protocol = protocol;
    config.timeout = std::time::Duration::from_secs(10);
    OdooClient::new(config).unwrap()
}

fn none() -> CallOptions {
    CallOptions::default()
}

fn kw(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap()
}

/// The name, after the module path, of the exception an error carries, if any.
fn short_exception(e: &OdooError) -> Option<&str> {
    e.exception().map(|n| n.rsplit('.').next().unwrap_or(n))
}

/// Login, count, create, write, read back, archive (None after commit), and the errors that
/// must be typed: the same script for every protocol.
async fn crud_and_errors(sim: &Simulator, c: &OdooClient, label: &str) {
    assert_eq!(c.authenticate().await.unwrap(), 2, "{label}: admin's uid");

    let before = c
        .search_count(
            "res.partner",
            json!([["name", "=", "Client Test"]]),
            &none(),
        )
        .await
        .unwrap();
    assert_eq!(before, 0, "{label}");
    let id = c
        .execute_kw(
            "res.partner",
            "create",
            vec![json!({"name": "Client Test", "email": "ct@example.com"})],
            Map::new(),
            &none(),
        )
        .await
        .unwrap();
    let id = id.as_i64().unwrap_or_else(|| {
        // create with a list of values answers a list of ids
        id.as_array().unwrap()[0].as_i64().unwrap()
    });
    let written = c
        .execute_kw(
            "res.partner",
            "write",
            vec![json!([id]), json!({"email": "ct2@example.com"})],
            Map::new(),
            &none(),
        )
        .await
        .unwrap();
    assert_eq!(written, json!(true), "{label}");
    let rows = c
        .execute_kw(
            "res.partner",
            "read",
            vec![json!([id])],
            kw(json!({"fields": ["name", "email", "active"]})),
            &none(),
        )
        .await
        .unwrap();
    assert_eq!(rows[0]["email"], "ct2@example.com", "{label}: {rows}");
    assert_eq!(rows[0]["name"], "Client Test", "{label}");
    let found = c
        .search_read(
            "res.partner",
            &SearchRead {
                domain: json!([["id", "=", id]]),
                fields: &["email"],
                ..Default::default()
            },
            &none(),
        )
        .await
        .unwrap();
    assert_eq!(found.len(), 1, "{label}");

    // action_archive returns None: XML-RPC's marshaller faults after the commit (01_33),
    // JSON-RPC leaves out `result`, JSON-2 answers null. All three are a success.
    let archived = c
        .execute_kw(
            "res.partner",
            "action_archive",
            vec![json!([id])],
            Map::new(),
            &none(),
        )
        .await;
    assert_eq!(archived.unwrap(), Value::Null, "{label}: archive succeeded");
    let active = sim.with_state(|_, st| {
        st.tables
            .get("res.partner", id)
            .and_then(|r| r.get("active").cloned())
    });
    assert_eq!(active, Some(json!(false)), "{label}: the archive committed");

    // UserError (an invalid order clause) and ValidationError (a recursive parent):
    // permanent, never retried.
    let user_error = c
        .search_read(
            "res.partner",
            &SearchRead {
                domain: json!([]),
                fields: &["name"],
                order: Some("no_such_field desc"),
                ..Default::default()
            },
            &none(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        user_error.class(),
        ErrorClass::Permanent,
        "{label}: {user_error:?}"
    );
    assert!(
        user_error
            .to_string()
            .contains("Invalid \"order\" specified"),
        "{label}: {user_error}"
    );
    let validation = c
        .execute_kw(
            "res.partner",
            "write",
            vec![json!([id]), json!({"parent_id": id})],
            Map::new(),
            &none(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        validation.class(),
        ErrorClass::Permanent,
        "{label}: {validation:?}"
    );
    assert!(
        validation.to_string().contains("recursive"),
        "{label}: {validation}"
    );
    if c.chosen_protocol() == Some(Protocol::XmlRpc) {
        // /xmlrpc/2 says only "code 2" for the whole UserError family.
        assert!(
            matches!(
                validation,
                OdooError::Fault {
                    fault_code: Some(2),
                    ..
                }
            ),
            "{label}: {validation:?}"
        );
    } else {
        assert_eq!(short_exception(&user_error), Some("UserError"), "{label}");
        assert_eq!(
            short_exception(&validation),
            Some("ValidationError"),
            "{label}"
        );
    }
}

/// A wrong password or an expired key, on the protocol `protocol` resolves to.
async fn refused(base: &str, secret: &str, protocol: Protocol, label: &str) -> OdooError {
    let c = client(base, secret, protocol);
    let e = c
        .search_count("res.partner", json!([]), &none())
        .await
        .unwrap_err();
    assert_eq!(e.class(), ErrorClass::Credential, "{label}: {e:?}");
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odoo_18_auto_falls_back_to_json_rpc_and_every_protocol_works() {
    let (sim, base) = start(OdooVersion::V18).await;

    let auto = client(&base, "admin", Protocol::Auto);
    assert_eq!(auto.protocol().await.unwrap(), Protocol::JsonRpc);
    let version = auto.version().await.unwrap();
    assert_eq!(version["server_version_info"][0], 18);

    for (protocol, secret) in [
        (Protocol::Auto, "admin"),
        (Protocol::JsonRpc, "admin"),
        (Protocol::XmlRpc, "admin"),
        // An API key works wherever the password does over RPC (03_01, 03_06).
        (Protocol::XmlRpc, KEY),
        (Protocol::JsonRpc, KEY),
    ] {
        let label = format!("18 {protocol:?} {}", &secret[..5]);
        let c = client(&base, secret, protocol);
        crud_and_errors(&sim, &c, &label).await;
    }

    for protocol in [Protocol::Auto, Protocol::JsonRpc, Protocol::XmlRpc] {
        let label = format!("18 {protocol:?}");
        let e = refused(&base, "wrong-password", protocol, &label).await;
        assert!(matches!(e, OdooError::WrongCredentials), "{label}: {e:?}");
        let e = refused(&base, EXPIRED_KEY, protocol, &label).await;
        assert!(matches!(e, OdooError::WrongCredentials), "{label}: {e:?}");
    }
    // Forcing JSON-2 on Odoo 18 is a configuration error: the redirect is not followed.
    let e = refused(&base, KEY, Protocol::Json2, "18 Json2").await;
    assert!(
        matches!(e, OdooError::Redirect { status: 303, .. }),
        "{e:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odoo_19_auto_picks_json_2_with_a_bearer_key() {
    let (sim, base) = start(OdooVersion::V19).await;

    let auto = client(&base, KEY, Protocol::Auto);
    assert_eq!(auto.protocol().await.unwrap(), Protocol::Json2);
    let version = auto.version().await.unwrap();
    assert_eq!(version["server_version_info"][0], 19);

    for (protocol, secret) in [
        (Protocol::Auto, KEY),
        (Protocol::Json2, KEY),
        // The deprecated RPC APIs are still there in 19.
        (Protocol::JsonRpc, "admin"),
        (Protocol::XmlRpc, KEY),
    ] {
        let label = format!("19 {protocol:?} {}", &secret[..5]);
        let c = client(&base, secret, protocol);
        crud_and_errors(&sim, &c, &label).await;
    }

    // JSON-2 refuses a wrong or expired key with 401 before running anything.
    for secret in ["not-a-key", EXPIRED_KEY] {
        let e = refused(&base, secret, Protocol::Json2, "19 Json2").await;
        assert_eq!(
            e.exception(),
            Some(switchyard_odoo::error::UNAUTHORIZED),
            "{e:?}"
        );
    }
    // Auto with a key JSON-2 refuses falls back to JSON-RPC, which refuses it too.
    let e = refused(&base, EXPIRED_KEY, Protocol::Auto, "19 Auto").await;
    assert!(matches!(e, OdooError::WrongCredentials), "{e:?}");
}

/// Faults set at run time, as a test or an operator would with `PUT /__sim/faults`.
async fn set_faults(base: &str, faults: &Faults) {
    let r = reqwest::Client::new()
        .put(format!("{base}/__sim/faults"))
        .json(faults)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_faults_read_as_what_they_imitate() {
    for (version, protocol, secret) in [
        (OdooVersion::V18, Protocol::XmlRpc, "admin"),
        (OdooVersion::V18, Protocol::JsonRpc, "admin"),
        (OdooVersion::V19, Protocol::Json2, KEY),
    ] {
        let label = format!("{version:?} {protocol:?}");
        let (sim, base) = start(version).await;
        let c = client(&base, secret, protocol);
        c.authenticate().await.unwrap();
        let partner = c
            .execute_kw(
                "res.partner",
                "create",
                vec![json!({"name": "Fault Test"})],
                Map::new(),
                &none(),
            )
            .await
            .unwrap()
            .as_i64()
            .unwrap();
        let options = none();
        let write = |email: &'static str| {
            c.execute_kw(
                "res.partner",
                "write",
                vec![json!([partner]), json!({"email": email})],
                Map::new(),
                &options,
            )
        };
        let email = || {
            sim.with_state(|_, st| {
                st.tables
                    .get("res.partner", partner)
                    .and_then(|r| r.get("email").cloned())
            })
        };

        // Odoo gave up retrying a serialization failure: transient, nothing committed.
        set_faults(
            &base,
            &Faults {
                serialization_failures: 1,
                ..Faults::default()
            },
        )
        .await;
        let e = write("serialization@example.com").await.unwrap_err();
        assert_eq!(e.class(), ErrorClass::Transient, "{label}: {e:?}");
        assert_eq!(
            e.exception(),
            Some("psycopg2.errors.SerializationFailure"),
            "{label}"
        );
        assert_ne!(email(), Some(json!("serialization@example.com")), "{label}");
        write("retried@example.com").await.unwrap();

        // Every password and key refused: pause the destination, do not dead-letter.
        set_faults(
            &base,
            &Faults {
                expire_credentials: true,
                ..Faults::default()
            },
        )
        .await;
        let e = write("expired@example.com").await.unwrap_err();
        assert_eq!(e.class(), ErrorClass::Credential, "{label}: {e:?}");
        assert_ne!(email(), Some(json!("expired@example.com")), "{label}");

        // Committed, then the answer was lost: the client sees a broken connection
        // (transient, retried) although the write is there.
        set_faults(
            &base,
            &Faults {
                lose_responses: 1,
                ..Faults::default()
            },
        )
        .await;
        let e = write("lost@example.com").await.unwrap_err();
        assert!(
            matches!(e, OdooError::Connection(_) | OdooError::Undecodable(_)),
            "{label}: {e:?}"
        );
        assert_eq!(e.class(), ErrorClass::Transient, "{label}");
        assert_eq!(
            email(),
            Some(json!("lost@example.com")),
            "{label}: committed"
        );
        let rows = c
            .execute_kw(
                "res.partner",
                "read",
                vec![json!([partner])],
                kw(json!({"fields": ["email"]})),
                &none(),
            )
            .await
            .unwrap();
        assert_eq!(rows[0]["email"], "lost@example.com", "{label}: read back");
    }
}
