//! CloudEvents 1.0.2 HTTP protocol binding conformance (`bindings/http-protocol-binding.md`)
//! of the functions behind `POST /v1/events`: content mode detection (section 3), binary
//! mode (3.1) and structured / batched mode (3.2, 3.3).
//!
//! Written from the specification, not from the implementation.

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde_json::{Value, json};
use switchyard_core::cloudevent::{Data, Parsed};
use switchyard_server::error::{ApiError, FieldError, Problem};
use switchyard_server::ingest::{Mode, detect_mode, parse_binary, parse_request};

// ---------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).expect("header name"),
            HeaderValue::from_str(v).expect("header value"),
        );
    }
    h
}

/// The REQUIRED attributes as binary-mode headers (3.1.4 example).
const REQUIRED: [(&str, &str); 4] = [
    ("ce-specversion", "1.0"),
    ("ce-type", "com.example.someevent"),
    ("ce-id", "1234-1234-1234"),
    ("ce-source", "/mycontext/subcontext"),
];

/// Binary-mode headers: the required ones, then `extra` (which may replace them).
fn binary(extra: &[(&str, &str)]) -> HeaderMap {
    let mut h = headers(&REQUIRED);
    for (k, v) in extra {
        h.insert(
            HeaderName::from_bytes(k.as_bytes()).expect("header name"),
            HeaderValue::from_str(v).expect("header value"),
        );
    }
    h
}

/// Binary-mode headers without `name`.
fn binary_without(name: &str, extra: &[(&str, &str)]) -> HeaderMap {
    let mut h = binary(extra);
    h.remove(name);
    h
}

#[track_caller]
fn ok_binary(h: &HeaderMap, body: &[u8]) -> Parsed {
    match parse_binary(h, body) {
        Ok(p) => p,
        Err(e) => panic!("expected a valid binary event, got {e:#?}\nheaders: {h:?}"),
    }
}

#[track_caller]
fn err_binary(h: &HeaderMap, body: &[u8]) -> ApiError {
    match parse_binary(h, body) {
        Ok(p) => panic!("expected a rejected binary event, got {p:#?}\nheaders: {h:?}"),
        Err(e) => e,
    }
}

/// Asserts an `Invalid` problem that names `header` (binary mode: no JSON pointer).
#[track_caller]
fn assert_invalid_header(e: &ApiError, field: &str, header: &str) {
    assert_eq!(e.problem, Problem::Invalid, "{e:#?}");
    assert_eq!(e.problem.status(), StatusCode::BAD_REQUEST);
    let fe = find(e, field);
    assert_eq!(fe.header.as_deref(), Some(header), "{fe:#?}");
    assert_eq!(fe.pointer, None, "a header is not in the body: {fe:#?}");
    assert_eq!(fe.index, None);
    assert!(!fe.detail.is_empty());
    assert!(!e.detail.is_empty());
}

#[track_caller]
fn find<'a>(e: &'a ApiError, field: &str) -> &'a FieldError {
    e.errors
        .iter()
        .find(|f| f.field == field)
        .unwrap_or_else(|| panic!("no error about {field:?} in {e:#?}"))
}

#[track_caller]
fn assert_unsupported(r: Result<Mode, ApiError>) {
    match r {
        Ok(m) => panic!("expected 415, got mode {m:?}"),
        Err(e) => {
            assert_eq!(e.problem, Problem::UnsupportedMediaType, "{e:#?}");
            assert_eq!(e.problem.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
            assert!(!e.detail.is_empty());
        }
    }
}

fn structured_body() -> Value {
    json!({
        "specversion": "1.0",
        "type": "com.example.someevent",
        "source": "/mycontext",
        "id": "C234-1234-1234",
        "time": "2018-04-05T17:31:00Z",
        "comexampleextension1": "value",
        "comexampleothervalue": 5,
        "datacontenttype": "application/json",
        "data": {"appinfoA": "abc", "appinfoB": 123, "appinfoC": true},
    })
}

fn bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("json")
}

// ---------------------------------------------------------------------------------------
// Content mode detection (section 3)
// ---------------------------------------------------------------------------------------

#[test]
fn structured_mode_is_recognised_by_its_media_type() {
    for ct in [
        "application/cloudevents+json",
        "application/cloudevents+json; charset=UTF-8",
        "application/cloudevents+json; charset=utf-8",
        "application/cloudevents+json;charset=utf-8",
        "Application/CloudEvents+JSON",
        "APPLICATION/CLOUDEVENTS+JSON; CHARSET=UTF-8",
    ] {
        let m = detect_mode(&headers(&[("content-type", ct)]));
        assert_eq!(m.ok(), Some(Mode::Structured), "{ct}");
    }
}

#[test]
fn batched_mode_is_recognised_by_its_media_type() {
    for ct in [
        "application/cloudevents-batch+json",
        "application/cloudevents-batch+json; charset=UTF-8",
        "application/cloudevents-batch+json;charset=utf-8",
        "Application/CloudEvents-Batch+JSON",
    ] {
        let m = detect_mode(&headers(&[("content-type", ct)]));
        assert_eq!(m.ok(), Some(Mode::Batch), "{ct}");
    }
}

#[test]
fn the_content_type_decides_even_when_ce_headers_are_present() {
    // 3.2.3: structured messages MAY also carry the binary-mode headers.
    let mut h = binary(&[]);
    h.insert(
        "content-type",
        HeaderValue::from_static("application/cloudevents+json; charset=utf-8"),
    );
    assert_eq!(detect_mode(&h).ok(), Some(Mode::Structured));
    h.insert(
        "content-type",
        HeaderValue::from_static("application/cloudevents-batch+json"),
    );
    assert_eq!(detect_mode(&h).ok(), Some(Mode::Batch));
}

#[test]
fn unsupported_event_formats_are_415() {
    // 3: a receiver that detects the CloudEvents media type with an event format it cannot
    // handle (the specification's example is application/cloudevents+avro).
    for ct in [
        "application/cloudevents+avro",
        "application/cloudevents+protobuf",
        "application/cloudevents+xml; charset=utf-8",
        "Application/CloudEvents+Avro",
        "application/cloudevents-batch+avro",
        "application/cloudevents-batch+protobuf",
        "application/cloudevents",
        "application/cloudevents-batch",
    ] {
        assert_unsupported(detect_mode(&headers(&[("content-type", ct)])));
    }
}

#[test]
fn binary_mode_is_recognised_by_ce_specversion() {
    for ct in [
        Some("application/json"),
        Some("application/json; charset=utf-8"),
        Some("text/plain"),
        Some("application/octet-stream"),
        Some("application/xml"),
        None,
    ] {
        let mut h = binary(&[]);
        if let Some(ct) = ct {
            h.insert("content-type", HeaderValue::from_str(ct).unwrap());
        }
        assert_eq!(detect_mode(&h).ok(), Some(Mode::Binary), "{ct:?}");
    }
    // header names are case-insensitive (3.1.3.1)
    let h = headers(&[("CE-SpecVersion", "1.0"), ("Content-Type", "text/plain")]);
    assert_eq!(detect_mode(&h).ok(), Some(Mode::Binary));
}

#[test]
fn a_request_that_is_no_cloudevent_is_415() {
    assert_unsupported(detect_mode(&HeaderMap::new()));
    assert_unsupported(detect_mode(&headers(&[(
        "content-type",
        "application/json",
    )])));
    assert_unsupported(detect_mode(&headers(&[("content-type", "text/plain")])));
    // without specversion the ce-* headers do not make a binary-mode CloudEvent
    assert_unsupported(detect_mode(&binary_without(
        "ce-specversion",
        &[("content-type", "application/json")],
    )));
}

// ---------------------------------------------------------------------------------------
// Binary mode (3.1)
// ---------------------------------------------------------------------------------------

#[test]
fn the_binary_mode_example_of_the_specification() {
    let h = binary(&[
        ("ce-time", "2018-04-05T03:56:24Z"),
        ("content-type", "application/json; charset=utf-8"),
    ]);
    let p = ok_binary(&h, br#"{"appinfoA": "abc", "appinfoB": 123}"#);
    let e = p.event;
    assert_eq!(e.id, "1234-1234-1234");
    assert_eq!(e.source, "/mycontext/subcontext");
    assert_eq!(e.ty, "com.example.someevent");
    assert_eq!(e.time.as_deref(), Some("2018-04-05T03:56:24Z"));
    assert_eq!(
        e.datacontenttype.as_deref(),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(
        e.data,
        Some(Data::Json(json!({"appinfoA": "abc", "appinfoB": 123})))
    );
    assert!(e.extensions.is_empty(), "{:?}", e.extensions);
    assert!(p.warnings.is_empty());
}

#[test]
fn header_names_are_case_insensitive() {
    let h = headers(&[
        ("CE-SPECVERSION", "1.0"),
        ("Ce-Id", "upper"),
        ("cE-sOuRcE", "/s"),
        ("CE-TYPE", "t"),
        ("CE-Subject", "s"),
    ]);
    let e = ok_binary(&h, b"").event;
    assert_eq!(e.id, "upper");
    assert_eq!(e.subject.as_deref(), Some("s"));
}

#[test]
fn header_values_are_percent_decoded() {
    // 3.1.3.2: a single round of percent-decoding; lower-case hex accepted, unnecessary
    // encoding accepted.
    for (raw, want) in [
        ("%E2%82%AC%20price", "€ price"),
        ("Euro%20%E2%82%AC%20%F0%9F%98%80", "Euro € 😀"),
        ("%e2%82%ac", "€"),
        ("%41%42C", "ABC"),
        ("%2541", "%41"),
        ("100%25", "100%"),
        ("%22quoted%22", "\"quoted\""),
        ("a+b", "a+b"),
        ("WH/OUT/00017", "WH/OUT/00017"),
        ("WH%2FOUT%2F00017", "WH/OUT/00017"),
    ] {
        let p = ok_binary(&binary(&[("ce-subject", raw)]), b"");
        assert_eq!(p.event.subject.as_deref(), Some(want), "{raw}");
    }
}

#[test]
fn every_ce_header_is_percent_decoded() {
    let h = binary(&[
        ("ce-id", "order%3A1042"),
        ("ce-source", "%2Fshop"),
        ("ce-type", "com.example%2Eorder"),
        ("ce-origin", "%231042"),
        ("ce-time", "2018-04-05T03%3A56%3A24Z"),
    ]);
    let e = ok_binary(&h, b"").event;
    assert_eq!(e.id, "order:1042");
    assert_eq!(e.source, "/shop");
    assert_eq!(e.ty, "com.example.order");
    assert_eq!(e.time.as_deref(), Some("2018-04-05T03:56:24Z"));
    assert_eq!(e.extensions.get("origin"), Some(&json!("#1042")));
}

#[test]
fn double_quoted_header_values_are_unescaped_before_percent_decoding() {
    // 3.1.3.2: "any HTTP header value MUST first be unescaped with respect to double-quoted
    // strings ... including processing backslash escapes within double-quoted values ...
    // they MUST be supported when receiving events".
    for (raw, want) in [
        (r#""hello world""#, "hello world"),
        (r#""say \"hi\"""#, r#"say "hi""#),
        (r#""back\\slash""#, r"back\slash"),
        (r#""\a\b""#, "ab"),
        (r#""%E2%82%AC 5""#, "€ 5"),
        (r#""""#, ""),
    ] {
        let h = binary(&[("ce-comexampleextension1", raw)]);
        let e = ok_binary(&h, b"").event;
        assert_eq!(
            e.extensions.get("comexampleextension1"),
            Some(&json!(want)),
            "{raw}"
        );
    }
    let e = ok_binary(&binary(&[("ce-id", r#""quoted id""#)]), b"").event;
    assert_eq!(e.id, "quoted id");
}

#[test]
fn values_that_are_not_a_whole_quoted_string_are_taken_literally() {
    // Older versions of the binding did not require `"` to be percent-encoded, so a value
    // with a double quote that is not one quoted-string is an ordinary value.
    for raw in [
        r#""unterminated"#,
        r#""a"b"#,
        r#"say "hi""#,
        r#"a"b""#,
        "\"",
    ] {
        let e = ok_binary(&binary(&[("ce-subject", raw)]), b"").event;
        assert_eq!(e.subject.as_deref(), Some(raw), "{raw}");
    }
}

#[test]
fn percent_encodings_of_invalid_utf8_are_rejected() {
    // "encoded byte sequences which are invalid in UTF-8 MUST be rejected. (For example,
    // "%C0%A0" is an overlong encoding of U+0020, and MUST be rejected.)"
    for raw in ["%C0%A0", "%FF", "%E2%82", "abc%80", "%ED%A0%80"] {
        let e = err_binary(&binary(&[("ce-subject", raw)]), b"");
        assert_invalid_header(&e, "subject", "ce-subject");
    }
}

#[test]
fn decoded_values_must_still_be_valid_strings() {
    // spec.md, Type System: control characters are not allowed in a String.
    for raw in ["line%0Abreak", "nul%00", "%7F", "%C2%85"] {
        let e = err_binary(&binary(&[("ce-subject", raw)]), b"");
        assert_invalid_header(&e, "subject", "ce-subject");
    }
}

#[test]
fn content_type_becomes_datacontenttype() {
    for ct in [
        "application/json",
        "text/plain; charset=utf-8",
        "application/vnd.apache.thrift.binary",
        "image/png",
    ] {
        let p = ok_binary(&binary(&[("content-type", ct)]), b"");
        assert_eq!(p.event.datacontenttype.as_deref(), Some(ct));
    }
    let p = ok_binary(&binary(&[]), b"");
    assert_eq!(p.event.datacontenttype, None);
}

#[test]
fn a_ce_datacontenttype_header_is_rejected() {
    // 3.1.1: "Note that a ce-datacontenttype HTTP header MUST NOT also be present in the
    // message."
    let h = binary(&[
        ("content-type", "application/json"),
        ("ce-datacontenttype", "text/plain"),
    ]);
    let e = err_binary(&h, b"{}");
    assert_invalid_header(&e, "datacontenttype", "ce-datacontenttype");
}

#[test]
fn an_invalid_content_type_is_reported_on_the_content_type_header() {
    let e = err_binary(&binary(&[("content-type", "nonsense")]), b"x");
    assert_invalid_header(&e, "datacontenttype", "content-type");
}

#[test]
fn a_json_body_is_json_data() {
    for ct in [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON",
        "text/json",
        "application/vnd.api+json",
        "application/problem+json",
    ] {
        let p = ok_binary(&binary(&[("content-type", ct)]), br#"{"a": [1, 2]}"#);
        assert_eq!(p.event.data, Some(Data::Json(json!({"a": [1, 2]}))), "{ct}");
    }
    // json-format.md 3.2: the quoted body is a JSON string
    let p = ok_binary(
        &binary(&[("content-type", "application/json")]),
        br#""I'm just a string""#,
    );
    assert_eq!(p.event.data, Some(Data::Json(json!("I'm just a string"))));
    let p = ok_binary(&binary(&[("content-type", "application/json")]), b"null");
    assert_eq!(p.event.data, Some(Data::Json(Value::Null)));
}

#[test]
fn a_body_declared_json_that_is_not_json_is_malformed() {
    // json-format.md 3.2: "If the quotes were missing, this would have been an invalid event
    // because the content could not be decoded as application/json".
    for body in [&b"I'm just a string"[..], b"{", b"{\"a\":1", b"\xff\xfe"] {
        let e = err_binary(&binary(&[("content-type", "application/json")]), body);
        assert_eq!(e.problem, Problem::Malformed, "{e:#?}");
        assert_eq!(e.problem.status(), StatusCode::BAD_REQUEST);
        let fe = find(&e, "data");
        assert_eq!(fe.header, None, "the body is not a header");
    }
}

#[test]
fn a_textual_body_is_text_data() {
    for (ct, body) in [
        ("text/plain", "hello"),
        ("text/plain; charset=utf-8", "€ price"),
        ("application/xml", "<much wow=\"xml\"/>"),
        ("text/csv", "a,b\n1,2"),
    ] {
        let p = ok_binary(&binary(&[("content-type", ct)]), body.as_bytes());
        assert_eq!(p.event.data, Some(Data::Text(body.to_string())), "{ct}");
    }
}

#[test]
fn an_opaque_body_is_binary_data() {
    let body = [0u8, 159, 146, 150, 255];
    for ct in [
        "application/octet-stream",
        "application/vnd.apache.thrift.binary",
        "image/png",
    ] {
        let p = ok_binary(&binary(&[("content-type", ct)]), &body);
        assert_eq!(p.event.data, Some(Data::Binary(body.to_vec())), "{ct}");
        assert_eq!(p.event.datacontenttype.as_deref(), Some(ct));
    }
}

#[test]
fn an_empty_body_is_no_data() {
    for ct in [
        Some("application/json"),
        Some("text/plain"),
        Some("application/octet-stream"),
        None,
    ] {
        let mut h = binary(&[]);
        if let Some(ct) = ct {
            h.insert("content-type", HeaderValue::from_str(ct).unwrap());
        }
        assert_eq!(ok_binary(&h, b"").event.data, None, "{ct:?}");
    }
}

#[test]
fn a_missing_required_header_is_an_invalid_problem_naming_the_header() {
    for (attr, header) in [
        ("id", "ce-id"),
        ("source", "ce-source"),
        ("type", "ce-type"),
        ("specversion", "ce-specversion"),
    ] {
        let e = err_binary(&binary_without(header, &[]), b"");
        assert_invalid_header(&e, attr, header);
        assert_eq!(e.errors.len(), 1, "{e:#?}");
    }
}

#[test]
fn every_broken_header_is_reported() {
    let mut h = binary_without("ce-id", &[("ce-time", "yesterday"), ("ce-my-ext", "x")]);
    h.remove("ce-type");
    let e = err_binary(&h, b"");
    assert_eq!(e.errors.len(), 4, "{e:#?}");
    assert_invalid_header(&e, "id", "ce-id");
    assert_invalid_header(&e, "type", "ce-type");
    assert_invalid_header(&e, "time", "ce-time");
    assert_invalid_header(&e, "my-ext", "ce-my-ext");
}

#[test]
fn attribute_rules_apply_to_headers() {
    for (header, value, attr) in [
        ("ce-specversion", "0.3", "specversion"),
        ("ce-specversion", "", "specversion"),
        ("ce-id", "", "id"),
        ("ce-source", "/my%20shop", "source"),
        ("ce-time", "2018-04-05", "time"),
        ("ce-subject", "", "subject"),
        ("ce-dataschema", "/relative", "dataschema"),
        ("ce-my_ext", "x", "my_ext"),
    ] {
        let e = err_binary(&binary(&[(header, value)]), b"");
        assert_invalid_header(&e, attr, header);
    }
}

#[test]
fn extension_headers_are_kept_as_string_extensions() {
    // json-format.md 3.2: the binary re-encoding of "comexampleothervalue": 5 is the header
    // "ce-comexampleothervalue: 5": every header value is a string.
    let h = binary(&[
        ("ce-comexampleextension1", "value"),
        ("ce-comexampleothervalue", "5"),
        ("ce-sampled", "true"),
        (
            "ce-traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ),
        ("ce-empty", ""),
    ]);
    let e = ok_binary(&h, b"").event;
    assert_eq!(e.extensions.len(), 5, "{:?}", e.extensions);
    assert_eq!(e.extensions["comexampleextension1"], json!("value"));
    assert_eq!(e.extensions["comexampleothervalue"], json!("5"));
    assert_eq!(e.extensions["sampled"], json!("true"));
    assert_eq!(
        e.extensions["traceparent"],
        json!("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    );
    assert_eq!(e.extensions["empty"], json!(""));
}

#[test]
fn other_headers_are_not_attributes() {
    let h = binary(&[
        ("authorization", "Bearer x"),
        ("x-request-id", "r-1"),
        ("cex-foo", "bar"),
        ("ce", "bar"),
        ("content-length", "0"),
        ("user-agent", "test"),
    ]);
    let e = ok_binary(&h, b"").event;
    assert!(e.extensions.is_empty(), "{:?}", e.extensions);
}

#[test]
fn long_extension_names_are_a_warning() {
    let name = "abcdefghijklmnopqrstu"; // 21 characters: SHOULD NOT, not MUST NOT
    let p = ok_binary(&binary(&[(&format!("ce-{name}"), "v")]), b"");
    assert_eq!(p.event.extensions[name], json!("v"));
    assert_eq!(p.warnings.len(), 1);
    assert_eq!(p.warnings[0].field, name);
}

// ---------------------------------------------------------------------------------------
// parse_request: structured (3.2) and batched (3.3) mode, binary through the same door
// ---------------------------------------------------------------------------------------

#[test]
fn structured_mode_reads_the_event_from_the_body() {
    let h = headers(&[(
        "content-type",
        "application/cloudevents+json; charset=utf-8",
    )]);
    let got = parse_request(Mode::Structured, &h, &bytes(&structured_body())).expect("valid");
    assert_eq!(got.len(), 1);
    let e = &got[0].event;
    assert_eq!(e.id, "C234-1234-1234");
    assert_eq!(e.extensions["comexampleothervalue"], json!(5));
    assert_eq!(
        e.data,
        Some(Data::Json(
            json!({"appinfoA": "abc", "appinfoB": 123, "appinfoC": true})
        ))
    );
    assert_eq!(e.to_json(), structured_body());
}

#[test]
fn structured_mode_takes_attributes_from_the_body_not_the_headers() {
    // 3.2.3: "All CloudEvents metadata attributes MUST be mapped into the payload, even if
    // they are also mapped into HTTP headers."
    let mut h = binary(&[("ce-id", "from-header"), ("ce-extra", "x")]);
    h.insert(
        "content-type",
        HeaderValue::from_static("application/cloudevents+json"),
    );
    let got = parse_request(Mode::Structured, &h, &bytes(&structured_body())).expect("valid");
    assert_eq!(got[0].event.id, "C234-1234-1234");
    assert!(!got[0].event.extensions.contains_key("extra"));
}

#[test]
fn structured_mode_with_a_body_that_is_not_json_is_malformed() {
    let h = headers(&[("content-type", "application/cloudevents+json")]);
    for body in [&b""[..], b"{", b"not json", br#"{"id": "\uDEAD"}"#] {
        let e = parse_request(Mode::Structured, &h, body).expect_err("not JSON");
        assert_eq!(e.problem, Problem::Malformed, "{e:#?}");
        assert_eq!(e.problem.status(), StatusCode::BAD_REQUEST);
    }
}

#[test]
fn structured_mode_errors_point_into_the_body() {
    let h = headers(&[("content-type", "application/cloudevents+json")]);
    let mut body = structured_body();
    body.as_object_mut().unwrap().remove("id");
    body["time"] = json!("yesterday");
    let e = parse_request(Mode::Structured, &h, &bytes(&body)).expect_err("invalid");
    assert_eq!(e.problem, Problem::Invalid);
    assert_eq!(e.errors.len(), 2, "{e:#?}");
    for (field, pointer) in [("id", "/id"), ("time", "/time")] {
        let fe = find(&e, field);
        assert_eq!(fe.pointer.as_deref(), Some(pointer));
        assert_eq!(fe.header, None);
        assert_eq!(fe.index, None);
    }
}

#[test]
fn structured_mode_rejects_a_batch_and_a_non_object() {
    let h = headers(&[("content-type", "application/cloudevents+json")]);
    for body in [json!([structured_body()]), json!("event"), json!(1)] {
        let e = parse_request(Mode::Structured, &h, &bytes(&body)).expect_err("not an object");
        assert_eq!(e.problem.status(), StatusCode::BAD_REQUEST, "{e:#?}");
    }
}

#[test]
fn structured_mode_data_base64_is_binary() {
    let h = headers(&[("content-type", "application/cloudevents+json")]);
    let mut body = structured_body();
    body.as_object_mut().unwrap().remove("data");
    body["data_base64"] = json!("AAECAw==");
    let got = parse_request(Mode::Structured, &h, &bytes(&body)).expect("valid");
    assert_eq!(got[0].event.data, Some(Data::Binary(vec![0, 1, 2, 3])));

    body["data"] = json!({});
    let e = parse_request(Mode::Structured, &h, &bytes(&body)).expect_err("both");
    assert_eq!(e.problem.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        find(&e, "data_base64").pointer.as_deref(),
        Some("/data_base64")
    );
}

#[test]
fn an_empty_batch_is_accepted() {
    let h = headers(&[("content-type", "application/cloudevents-batch+json")]);
    let got = parse_request(Mode::Batch, &h, b"[]").expect("empty batch is valid");
    assert!(got.is_empty());
}

#[test]
fn a_batch_yields_every_event_in_order() {
    let h = headers(&[(
        "content-type",
        "application/cloudevents-batch+json; charset=utf-8",
    )]);
    let mut second = structured_body();
    second["id"] = json!("second");
    let got =
        parse_request(Mode::Batch, &h, &bytes(&json!([structured_body(), second]))).expect("valid");
    let ids: Vec<&str> = got.iter().map(|p| p.event.id.as_str()).collect();
    assert_eq!(ids, ["C234-1234-1234", "second"]);
}

#[test]
fn a_batch_with_an_invalid_member_is_rejected_whole_and_names_each_member() {
    let h = headers(&[("content-type", "application/cloudevents-batch+json")]);
    let mut no_id = structured_body();
    no_id.as_object_mut().unwrap().remove("id");
    let mut bad_time = structured_body();
    bad_time["time"] = json!("yesterday");
    let body = json!([structured_body(), no_id, structured_body(), bad_time]);
    let e = parse_request(Mode::Batch, &h, &bytes(&body)).expect_err("invalid batch");
    assert_eq!(e.problem, Problem::Invalid, "{e:#?}");
    assert_eq!(e.errors.len(), 2, "{e:#?}");
    let id = find(&e, "id");
    assert_eq!(id.index, Some(1));
    assert_eq!(id.pointer.as_deref(), Some("/1/id"));
    assert_eq!(id.header, None);
    let time = find(&e, "time");
    assert_eq!(time.index, Some(3));
    assert_eq!(time.pointer.as_deref(), Some("/3/time"));
}

#[test]
fn a_batch_that_is_not_an_array_is_rejected() {
    let h = headers(&[("content-type", "application/cloudevents-batch+json")]);
    for body in [
        bytes(&structured_body()),
        b"{}".to_vec(),
        b"\"[]\"".to_vec(),
    ] {
        let e = parse_request(Mode::Batch, &h, &body).expect_err("not an array");
        assert_eq!(e.problem.status(), StatusCode::BAD_REQUEST, "{e:#?}");
    }
    let e = parse_request(Mode::Batch, &h, b"[").expect_err("not JSON");
    assert_eq!(e.problem, Problem::Malformed);
}

#[test]
fn binary_mode_through_parse_request() {
    let h = binary(&[("content-type", "text/plain")]);
    let got = parse_request(Mode::Binary, &h, b"hello").expect("valid");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].event.data, Some(Data::Text("hello".into())));

    let e =
        parse_request(Mode::Binary, &binary_without("ce-id", &[]), b"").expect_err("missing id");
    assert_invalid_header(&e, "id", "ce-id");
}
