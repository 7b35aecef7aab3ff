//! Every answer Odoo 18 gave in testdata/odoo goes through the client's reader for its
//! protocol; the outcome must be the one INDEX.md records for it (ok, fault code, exception
//! name, HTTP status), and every error must get the delivery class the policy below states.

mod common;

use common::Transcript;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;
use switchyard_core::delivery::ErrorClass::{self, Credential, Permanent, Transient};
use switchyard_odoo::OdooError;
use switchyard_odoo::client::{Answer, read_json2_answer, read_jsonrpc_answer, read_xmlrpc_answer};

/// What INDEX.md says Odoo answered.
#[derive(Debug)]
enum Recorded {
    Result,
    NoResultKey,
    Fault(String),
    Error { code: i64, name: String },
    Status(u16),
}

/// `- \`file.json\` - title - 200 fault 2: …` → (file name, status, the rest).
fn index() -> Vec<(String, u16, String)> {
    let text = std::fs::read_to_string(format!("{}/INDEX.md", common::TESTDATA)).unwrap();
    text.lines()
        .filter_map(|line| {
            let name = line
                .strip_prefix("- `")?
                .split('`')
                .next()?
                .trim_end_matches(".json")
                .to_owned();
            let outcome = find_outcome(line)?;
            let (status, rest) = outcome.split_at(3);
            Some((name, status.parse().ok()?, rest.trim_start().to_owned()))
        })
        .collect()
}

/// The first ` - NNN ` after the file name: the outcome starts with the HTTP status.
fn find_outcome(line: &str) -> Option<&str> {
    let bytes = line.as_bytes();
    (0..line.len().saturating_sub(7)).find_map(|i| {
        let candidate = &bytes[i..i + 7];
        let is_status = candidate.starts_with(b" - ")
            && candidate[3..6].iter().all(u8::is_ascii_digit)
            && (candidate[6] == b' ' || i + 6 == line.len());
        is_status.then(|| &line[i + 3..])
    })
}

fn recorded(status: u16, rest: &str) -> Recorded {
    if let Some(fault) = rest.strip_prefix("fault ") {
        return Recorded::Fault(fault.to_owned());
    }
    if let Some(error) = rest.strip_prefix("error code ") {
        let (code, name) = error.split_once(' ').unwrap();
        let name = name.split(':').next().unwrap().to_owned();
        return Recorded::Error {
            code: code.parse().unwrap(),
            name,
        };
    }
    if rest.starts_with("no \"result\" key") {
        return Recorded::NoResultKey;
    }
    if status == 200 {
        return Recorded::Result;
    }
    Recorded::Status(status)
}

/// The delivery class policy, stated apart from the implementation: AccessDenied and dead
/// sessions pause (credentials), an unknown database pauses (configuration), redirects pause
/// (wrong protocol or URL), serialization failures are retried, everything else Odoo refused
/// is dead-lettered.
fn expected_class(recorded: &Recorded, message: &str) -> ErrorClass {
    match recorded {
        Recorded::Fault(f) if f.starts_with("3:") => Credential,
        Recorded::Fault(f) if f.starts_with("2:") || f.starts_with("4:") => Permanent,
        Recorded::Fault(f) if f.starts_with("1: psycopg2.errors.SerializationFailure") => Transient,
        Recorded::Fault(f) if f.starts_with("1: psycopg2.OperationalError") => Credential,
        Recorded::Fault(f) if f.starts_with("warning -- ") => Permanent,
        Recorded::Fault(_) => Permanent,
        Recorded::Error { code: 100, .. } => Credential,
        Recorded::Error { name, .. } => match name.as_str() {
            "odoo.exceptions.AccessDenied" => Credential,
            "psycopg2.errors.SerializationFailure" => Transient,
            "psycopg2.OperationalError" if message.contains("does not exist") => Credential,
            _ => Permanent,
        },
        Recorded::Status(303) => Credential,
        Recorded::Status(status) if *status >= 500 || *status == 429 => Transient,
        Recorded::Status(_) => Permanent,
        Recorded::Result | Recorded::NoResultKey => unreachable!("not an error"),
    }
}

fn answer_of(t: &Transcript) -> Answer {
    let mut headers = HeaderMap::new();
    for (name, value) in t.response_headers() {
        headers.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(&value).unwrap(),
        );
    }
    let body = t.response_body().unwrap_or_default().as_bytes().to_vec();
    Answer {
        status: t.status().unwrap(),
        headers,
        body,
    }
}

/// The JSON-RPC id the request carried (`null` when it had none, 02_29); for the bodies
/// that were not stored (07_42), the id the answer echoes; `null` when neither is JSON
/// (02_26: Odoo refused the body with a plain 400).
fn request_id(t: &Transcript) -> Value {
    let from_request = t
        .request_body()
        .and_then(|b| serde_json::from_str::<Value>(b).ok())
        .and_then(|b| {
            b.as_object()
                .map(|o| o.get("id").cloned().unwrap_or(Value::Null))
        });
    from_request.unwrap_or_else(|| {
        let body: Option<Value> = t.response_body().and_then(|b| serde_json::from_str(b).ok());
        body.map_or(Value::Null, |b| b["id"].clone())
    })
}

fn read(t: &Transcript) -> Result<Value, OdooError> {
    let answer = answer_of(t);
    match t.protocol() {
        "xmlrpc" => read_xmlrpc_answer(answer),
        "jsonrpc" | "http-jsonrpc" => read_jsonrpc_answer(answer, &request_id(t)),
        "json2" | "http" => read_json2_answer(answer),
        other => panic!("{}: protocol {other}", t.name),
    }
}

#[test]
fn every_recorded_answer_reads_as_recorded_and_is_classed() {
    let index = index();
    let transcripts = common::all();
    let mut checked = 0;
    for t in transcripts
        .iter()
        .filter(|t| t.is_odoo_answer() && t.response_body().is_some())
    {
        let (_, status, rest) = index
            .iter()
            .find(|(name, ..)| *name == t.name)
            .unwrap_or_else(|| panic!("{} is not in INDEX.md", t.name));
        assert_eq!(Some(*status), t.status(), "{}", t.name);
        let recorded = recorded(*status, rest);
        let outcome = read(t);
        check(t, &recorded, &outcome);
        checked += 1;
    }
    // 356 transcripts: 6 captured webhooks and 2 "nothing arrived" are Odoo's own requests,
    // and 09_03 holds two bodies (checked below).
    assert_eq!(checked, 347);
}

fn check(t: &Transcript, recorded: &Recorded, outcome: &Result<Value, OdooError>) {
    let name = &t.name;
    match (recorded, outcome) {
        (Recorded::Result, Ok(_)) => {}
        (Recorded::NoResultKey, Ok(value)) => assert_eq!(value, &Value::Null, "{name}"),
        // The None-marshalling fault after commit is a success.
        (Recorded::Fault(f), Ok(value)) => {
            assert!(
                f.starts_with("1: TypeError: cannot marshal None"),
                "{name}: {f}"
            );
            assert_eq!(value, &Value::Null, "{name}");
        }
        (Recorded::Fault(f), Err(error)) => {
            check_fault(name, f, error);
            assert_eq!(
                error.class(),
                expected_class(recorded, &error.to_string()),
                "{name}: {error}"
            );
        }
        (
            Recorded::Error {
                code,
                name: exception,
            },
            Err(error),
        ) => {
            if *code == 100 {
                assert!(
                    matches!(error, OdooError::SessionExpired { .. }),
                    "{name}: {error:?}"
                );
            }
            assert_eq!(error.exception(), Some(exception.as_str()), "{name}");
            assert_eq!(
                error.class(),
                expected_class(recorded, &error.to_string()),
                "{name}: {error}"
            );
        }
        (Recorded::Status(status), Err(error)) => {
            match error {
                OdooError::Redirect {
                    status: s,
                    location,
                } => {
                    assert_eq!(s, status, "{name}");
                    assert!(
                        location
                            .as_deref()
                            .is_some_and(|l| l.starts_with("/web/login")),
                        "{name}"
                    );
                }
                OdooError::Http { status: s, .. } => assert_eq!(s, status, "{name}"),
                other => panic!("{name}: expected HTTP {status}, got {other:?}"),
            }
            assert_eq!(
                error.class(),
                expected_class(recorded, ""),
                "{name}: {error}"
            );
        }
        (recorded, outcome) => panic!("{name}: recorded {recorded:?}, read {outcome:?}"),
    }
}

/// `2: <message>` → code 2; `1: Class: message` → the class from the traceback;
/// `warning -- MissingError …` → the legacy code's class.
fn check_fault(name: &str, fault: &str, error: &OdooError) {
    let OdooError::Fault {
        exception,
        fault_code,
        traceback,
        ..
    } = error
    else {
        panic!("{name}: expected a fault, got {error:?}");
    };
    if let Some(legacy) = fault.strip_prefix("warning -- ") {
        let class = legacy.split_whitespace().next().unwrap();
        assert_eq!(
            exception.as_deref(),
            Some(format!("odoo.exceptions.{class}").as_str()),
            "{name}"
        );
        return;
    }
    let (code, text) = fault.split_once(": ").unwrap();
    assert_eq!(*fault_code, Some(code.parse().unwrap()), "{name}");
    if code == "1" {
        let class = text.split(':').next().unwrap();
        let class = if class.contains('.') {
            class.to_owned()
        } else {
            format!("builtins.{class}")
        };
        assert_eq!(exception.as_deref(), Some(class.as_str()), "{name}");
        assert!(traceback.is_some(), "{name}: code 1 carries the traceback");
    }
}

#[test]
fn two_writers_both_succeed() {
    // 09_03: two clients wrote the same record at once; Odoo retried the loser silently.
    let t = common::by_id("09_03");
    for (client, body) in t.json["response"]["bodies_by_client"].as_object().unwrap() {
        let answer = Answer {
            status: 200,
            headers: HeaderMap::new(),
            body: body.to_string().into_bytes(),
        };
        let value = read_jsonrpc_answer(answer, &body["id"]).unwrap();
        assert_eq!(value, Value::Bool(true), "client {client}");
    }
}

#[test]
fn the_classes_the_brief_names() {
    let rows: [(&str, Option<ErrorClass>); 14] = [
        ("07_23", Some(Transient)),
        ("09_05", Some(Transient)),
        ("01_26", Some(Credential)),
        ("03_03", Some(Credential)),
        ("03_04", Some(Credential)),
        ("03_05", Some(Credential)),
        ("03_08", Some(Credential)),
        ("01_05", Some(Credential)),
        ("01_17", Some(Permanent)),
        ("01_20", Some(Permanent)),
        ("01_21", Some(Permanent)),
        ("01_24", Some(Permanent)),
        ("01_33", None),
        ("08_12", None),
    ];
    for (id, class) in rows {
        let t = common::by_id(id);
        match (read(&t), class) {
            (Ok(value), None) => assert_eq!(value, Value::Null, "{id}: success after commit"),
            (Err(error), Some(class)) => assert_eq!(error.class(), class, "{id}: {error}"),
            (outcome, class) => panic!("{id}: {outcome:?}, expected {class:?}"),
        }
    }
}

#[test]
fn wrong_password_on_authenticate_is_false_not_an_error() {
    // 01_03 / 02_03: authenticate answers `false`; the client turns it into WrongCredentials
    // (covered over HTTP in tests/client_http.rs).
    for id in ["01_03", "01_04", "02_03"] {
        assert_eq!(
            read(&common::by_id(id)).unwrap(),
            Value::Bool(false),
            "{id}"
        );
    }
    assert_eq!(OdooError::WrongCredentials.class(), Credential);
    assert_eq!(
        OdooError::WrongCredentials.to_string(),
        "wrong login or password"
    );
}
