//! CloudEvents 1.0.2 conformance of the JSON event format: the attribute rules of the core
//! specification (`spec.md`), the JSON format (`formats/json-format.md`, structured) and the
//! JSON batch format (section 4 of the same document).
//!
//! Every case is written from the specification, not from the implementation: each table
//! row names the rule it checks.

use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};
use switchyard_core::cloudevent::{CloudEvent, Data, Parsed, Violation, parse_batch};

// ---------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------

/// The smallest valid event: the four REQUIRED attributes.
fn base() -> Map<String, Value> {
    match json!({
        "specversion": "1.0",
        "id": "A234-1234-1234",
        "source": "/mycontext",
        "type": "com.example.someevent",
    }) {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

/// The minimal event with `name` set to `value` (a JSON `null` is set as `null`).
fn with(name: &str, value: Value) -> Value {
    let mut m = base();
    m.insert(name.to_string(), value);
    Value::Object(m)
}

/// The minimal event with several members set.
fn with_all(members: &[(&str, Value)]) -> Value {
    let mut m = base();
    for (k, v) in members {
        m.insert((*k).to_string(), v.clone());
    }
    Value::Object(m)
}

/// The minimal event without `name`.
fn without(name: &str) -> Value {
    let mut m = base();
    m.remove(name);
    Value::Object(m)
}

#[track_caller]
fn valid(v: Value) -> Parsed {
    match CloudEvent::from_json(v.clone()) {
        Ok(p) => p,
        Err(e) => panic!("expected a valid event, got {e:#?}\nevent: {v}"),
    }
}

#[track_caller]
fn invalid(v: Value) -> Vec<Violation> {
    match CloudEvent::from_json(v.clone()) {
        Ok(p) => panic!("expected an invalid event, it was accepted as {p:#?}\nevent: {v}"),
        Err(e) => {
            assert!(!e.is_empty(), "an error must name at least one violation");
            e
        }
    }
}

/// Asserts the event is rejected with exactly one violation, about `field`.
#[track_caller]
fn invalid_only(v: Value, field: &str) {
    let e = invalid(v.clone());
    assert_eq!(
        fields(&e),
        vec![field.to_string()],
        "event {v} should break exactly one rule, about {field:?}; got {e:#?}"
    );
    assert!(
        !e[0].detail.is_empty(),
        "a violation must say what is wrong"
    );
}

fn fields(v: &[Violation]) -> Vec<String> {
    v.iter().map(|v| v.field.clone()).collect()
}

fn parse(text: &str) -> Value {
    serde_json::from_str(text).expect("test JSON")
}

// ---------------------------------------------------------------------------------------
// REQUIRED attributes: id, source, specversion, type (spec.md, "REQUIRED Attributes")
// ---------------------------------------------------------------------------------------

const REQUIRED: [&str; 4] = ["id", "source", "specversion", "type"];

#[test]
fn the_minimal_event_is_valid() {
    let p = valid(Value::Object(base()));
    assert_eq!(p.event.id, "A234-1234-1234");
    assert_eq!(p.event.source, "/mycontext");
    assert_eq!(p.event.ty, "com.example.someevent");
    assert_eq!(p.event.subject, None);
    assert_eq!(p.event.time, None);
    assert_eq!(p.event.datacontenttype, None);
    assert_eq!(p.event.dataschema, None);
    assert!(p.event.extensions.is_empty());
    assert_eq!(p.event.data, None);
    assert!(p.warnings.is_empty());
}

#[test]
fn each_required_attribute_missing_is_reported() {
    for name in REQUIRED {
        invalid_only(without(name), name);
    }
}

#[test]
fn a_null_required_attribute_is_treated_as_absent() {
    // json-format.md 2.2: "When decoding attributes and a null value is encountered, it MUST
    // be treated as the equivalent of unset or omitted."
    for name in REQUIRED {
        invalid_only(with(name, Value::Null), name);
    }
}

#[test]
fn each_required_attribute_must_be_non_empty() {
    for name in REQUIRED {
        invalid_only(with(name, json!("")), name);
    }
}

#[test]
fn each_required_attribute_must_be_a_json_string() {
    // id, specversion and type are String, source is URI-reference: all JSON strings
    // (json-format.md 2.2).
    let wrong: [Value; 6] = [
        json!(42),
        json!(1.0),
        json!(true),
        json!({"v": "1.0"}),
        json!(["1.0"]),
        json!([]),
    ];
    for name in REQUIRED {
        for v in &wrong {
            invalid_only(with(name, v.clone()), name);
        }
    }
}

#[test]
fn every_missing_required_attribute_is_reported() {
    let e = invalid(json!({}));
    let got: BTreeSet<String> = fields(&e).into_iter().collect();
    let want: BTreeSet<String> = REQUIRED.iter().map(|s| s.to_string()).collect();
    assert_eq!(got, want, "{e:#?}");
    assert_eq!(e.len(), 4, "one violation per attribute: {e:#?}");
}

#[test]
fn specversion_must_be_1_0() {
    // "Compliant event producers MUST use a value of 1.0 when referring to this version".
    for v in [
        "0.3", "1", "1.0.2", "1.1", "2.0", " 1.0", "1.0 ", "v1.0", "1.00",
    ] {
        invalid_only(with("specversion", json!(v)), "specversion");
    }
    invalid_only(with("specversion", json!(1.0)), "specversion");
    valid(with("specversion", json!("1.0")));
}

#[test]
fn ids_and_types_are_opaque_non_empty_strings() {
    for id in [
        "1",
        "A234-1234-1234",
        "6e8bc430-9c3a-11d9-9669-0800200c9a66",
        "with space",
        "€",
        "😀",
    ] {
        assert_eq!(valid(with("id", json!(id))).event.id, id);
    }
    for ty in [
        "com.github.pull_request.opened",
        "com.example.object.deleted.v2",
        "x",
    ] {
        assert_eq!(valid(with("type", json!(ty))).event.ty, ty);
    }
}

// ---------------------------------------------------------------------------------------
// String type: disallowed characters (spec.md, "Type System")
// ---------------------------------------------------------------------------------------

/// Characters the `String` type disallows: the control characters U+0000-U+001F and
/// U+007F-U+009F, and Unicode noncharacters.
const DISALLOWED_IN_STRINGS: [&str; 9] = [
    "\u{0}", "\u{9}", "\n", "\r", "\u{1F}", "\u{7F}", "\u{80}", "\u{9F}", "\u{FFFE}",
];

#[test]
fn string_attributes_reject_control_characters_and_noncharacters() {
    for c in DISALLOWED_IN_STRINGS {
        let s = format!("before{c}after");
        for name in ["id", "type", "subject"] {
            invalid_only(with(name, json!(s)), name);
        }
        // Extensions use the same type system as standard attributes.
        invalid_only(
            with("comexampleextension1", json!(s)),
            "comexampleextension1",
        );
    }
    for s in [
        "\u{FFFF}",
        "\u{FDD0}",
        "\u{FDEF}",
        "\u{1FFFE}",
        "\u{10FFFF}",
    ] {
        invalid_only(with("subject", json!(s)), "subject");
    }
}

#[test]
fn string_attributes_accept_any_other_unicode() {
    for s in [
        "€ price",
        "Euro € 😀",
        "\u{A0}non-breaking",
        "\u{FDCF}",
        "\u{FFFD}",
        "日本語",
    ] {
        assert_eq!(
            valid(with("subject", json!(s))).event.subject.as_deref(),
            Some(s)
        );
        assert_eq!(valid(with("id", json!(s))).event.id, s);
    }
}

// ---------------------------------------------------------------------------------------
// source: URI-reference, RFC 3986 section 4.1
// ---------------------------------------------------------------------------------------

#[test]
fn source_accepts_uri_references() {
    for s in [
        // the examples of the specification
        "https://github.com/cloudevents",
        "mailto:cncf-wg-serverless@lists.cncf.io",
        "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66",
        "cloudevents/spec/pull/123",
        "/cloudevents/spec/pull/123",
        "/sensors/tn-1234567/alerts",
        "1-555-123-4567",
        // relative references of every shape
        "/shop",
        "shop",
        ".",
        "../up",
        "//example.com/path",
        "?query=1",
        "#fragment",
        "/a/b;p=1?x=y&z=w#frag",
        "/with%20space",
        "/%e2%82%ac",
        "/sub-delims!$&'()*+,;=",
        "/colon:in:later:segments",
        // absolute URIs
        "http://[::1]:8080/x",
        "https://user:pw@example.com:443/p?q#f",
        "tag:example.com,2024:shop",
        "x-custom+scheme.v1:opaque",
    ] {
        assert_eq!(valid(with("source", json!(s))).event.source, s, "{s}");
    }
}

#[test]
fn source_rejects_strings_that_are_not_uri_references() {
    for s in [
        "/my shop",
        " /shop",
        "/shop ",
        "my\tshop",
        "/shop€",
        "/a<b>",
        "/a\"b",
        "/a\\b",
        "/a{b}",
        "/a|b",
        "/a^b",
        "/a`b",
        // percent signs must introduce two hex digits
        "/100%",
        "/%zz",
        "/%4",
        "/%4g",
        // one fragment at most
        "/a#b#c",
        // brackets belong to IP literals only
        "/a[b]",
        "/a?b=[1]",
        // a first segment with a colon is a scheme, and a scheme starts with a letter
        "1abc:def",
        ":nope",
        "-x:y",
        "a_b:c",
        // the port is digits
        "http://example.com:port/",
        "http://[::1/",
    ] {
        invalid_only(with("source", json!(s)), "source");
    }
}

// ---------------------------------------------------------------------------------------
// OPTIONAL attributes
// ---------------------------------------------------------------------------------------

#[test]
fn a_null_optional_attribute_is_treated_as_absent() {
    for name in ["subject", "time", "datacontenttype", "dataschema"] {
        let p = valid(with(name, Value::Null));
        assert_eq!(p.event, valid(Value::Object(base())).event, "{name}");
    }
}

#[test]
fn optional_attributes_must_not_be_empty_when_present() {
    // subject: "If present, MUST be a non-empty string"; dataschema: "a non-empty URI";
    // time and datacontenttype: "" is neither RFC 3339 nor RFC 2046.
    for name in ["subject", "time", "datacontenttype", "dataschema"] {
        invalid_only(with(name, json!("")), name);
    }
}

#[test]
fn optional_attributes_must_be_json_strings() {
    for name in ["subject", "time", "datacontenttype", "dataschema"] {
        for v in [json!(1), json!(true), json!({}), json!(["x"])] {
            invalid_only(with(name, v), name);
        }
    }
}

#[test]
fn subject_is_kept() {
    let p = valid(with("subject", json!("mynewfile.jpg")));
    assert_eq!(p.event.subject.as_deref(), Some("mynewfile.jpg"));
}

#[test]
fn time_accepts_rfc_3339_timestamps_and_keeps_them_as_sent() {
    for t in [
        "2018-04-05T17:31:00Z",
        // RFC 3339 section 5.8 examples
        "1985-04-12T23:20:50.52Z",
        "1996-12-19T16:39:57-08:00",
        "1990-12-31T23:59:60Z",
        "1990-12-31T15:59:60-08:00",
        "1937-01-01T12:00:27.87+00:20",
        // offsets, fractions of any length, lower-case T and Z (RFC 3339 5.6 NOTE)
        "2018-04-05T17:31:00+01:00",
        "2018-04-05T17:31:00-00:00",
        "2018-04-05T17:31:00+23:59",
        "2018-04-05T17:31:00.1Z",
        "2018-04-05T17:31:00.123456789+05:30",
        "2018-04-05T17:31:00.123456789012Z",
        "2018-04-05t17:31:00z",
        "2024-02-29T00:00:00Z",
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
    ] {
        let p = valid(with("time", json!(t)));
        assert_eq!(
            p.event.time.as_deref(),
            Some(t),
            "time must be kept as sent"
        );
    }
}

#[test]
fn time_rejects_what_is_not_rfc_3339() {
    for t in [
        "2018-04-05",
        "17:31:00Z",
        "2018-04-05T17:31:00",
        "2018-04-05T17:31Z",
        "2018-04-05T17:31:00+0100",
        "2018-04-05T17:31:00+01",
        "2018-04-05T17:31:00 +01:00",
        "2018-04-05T17:31:00Z ",
        " 2018-04-05T17:31:00Z",
        "2018-04-05T17:31:00.Z",
        "2018-04-05T17:31:00,5Z",
        "2018-04-05T17:31:00UTC",
        "2018-04-05T17:31:00+24:00",
        "2018-04-05T17:31:00\u{2212}08:00",
        "2018-13-05T17:31:00Z",
        "2018-02-30T17:31:00Z",
        "2023-02-29T00:00:00Z",
        "2018-04-05T24:00:00Z",
        "2018-04-05T17:60:00Z",
        "2018-04-05T17:31:61Z",
        "18-04-05T17:31:00Z",
        "2018-4-5T17:31:00Z",
        "20180405T173100Z",
        "Thu, 05 Apr 2018 17:31:00 GMT",
        "1522949460",
        "yesterday",
    ] {
        invalid_only(with("time", json!(t)), "time");
    }
    // a Unix timestamp as a JSON number is not a Timestamp either
    invalid_only(with("time", json!(1522949460)), "time");
}

#[test]
fn datacontenttype_accepts_rfc_2046_media_types() {
    for ct in [
        "application/json",
        "text/xml",
        "image/png",
        "multipart/form-data",
        "application/vnd.apache.thrift.binary",
        "application/cloudevents+json",
        "application/json; charset=utf-8",
        "application/json;charset=utf-8",
        "text/plain; charset=\"utf-8\"",
        "multipart/mixed; boundary=\"a;b\"",
        "text/plain; charset=utf-8; format=flowed",
        "Application/JSON",
    ] {
        let p = valid(with("datacontenttype", json!(ct)));
        assert_eq!(p.event.datacontenttype.as_deref(), Some(ct));
    }
}

#[test]
fn datacontenttype_rejects_what_is_not_a_media_type() {
    for ct in [
        "json",
        "text/",
        "/plain",
        "text//plain",
        "text/plain/extra",
        "text /plain",
        "text/pl ain",
        "application/json, text/plain",
        "text/plain; charset",
        "text/plain; charset=",
        "text/plain; =utf-8",
        "text/plain; charset=\"unterminated",
        "text/plain; charset=\"utf-8\"junk",
    ] {
        invalid_only(with("datacontenttype", json!(ct)), "datacontenttype");
    }
}

#[test]
fn dataschema_must_be_an_absolute_uri() {
    for s in [
        "https://example.com/schemas/order.json",
        "http://example.com/schemas/v1",
        "urn:example:schema:order",
        "file:///schemas/order.json",
    ] {
        let p = valid(with("dataschema", json!(s)));
        assert_eq!(p.event.dataschema.as_deref(), Some(s));
    }
    for s in [
        "/schemas/order",
        "schemas/order.json",
        "//example.com/schema",
        "?schema",
        "#schema",
        "https://exa mple.com/schema",
        "1http://example.com/",
        "https://example.com/%zz",
    ] {
        invalid_only(with("dataschema", json!(s)), "dataschema");
    }
}

// ---------------------------------------------------------------------------------------
// Extension context attributes (spec.md, "Attribute Naming Convention", "Type System";
// json-format.md 2.2)
// ---------------------------------------------------------------------------------------

#[test]
fn extension_names_of_lower_case_letters_and_digits_are_valid() {
    for name in [
        "comexampleextension1",
        "x",
        "a1",
        "1a",
        "123",
        "abcdefghijklmnopqrst",
    ] {
        let p = valid(with(name, json!("value")));
        assert_eq!(
            p.event.extensions.get(name),
            Some(&json!("value")),
            "{name}"
        );
        assert!(
            p.warnings.is_empty(),
            "{name} ({} chars) needs no warning",
            name.len()
        );
    }
}

#[test]
fn extension_names_with_other_characters_are_invalid() {
    for name in [
        "Ext",
        "myExt",
        "EXT",
        "my-ext",
        "my_ext",
        "my.ext",
        "my ext",
        "ext!",
        "é",
        "ext\u{212A}",
        "",
    ] {
        invalid_only(with(name, json!("value")), name);
    }
}

#[test]
fn extension_names_longer_than_20_characters_are_a_warning_not_an_error() {
    // "Attribute names ... SHOULD NOT exceed 20 characters in length": a SHOULD, so the event
    // is accepted and the sender is told.
    let name = "abcdefghijklmnopqrstu"; // 21
    assert_eq!(name.len(), 21);
    let p = valid(with(name, json!("v")));
    assert_eq!(p.event.extensions.get(name), Some(&json!("v")));
    assert_eq!(fields(&p.warnings), vec![name.to_string()]);
    assert!(!p.warnings[0].detail.is_empty());

    let long = "a".repeat(64);
    let p = valid(with(&long, json!(true)));
    assert_eq!(fields(&p.warnings), vec![long]);
}

#[test]
fn extension_values_may_be_strings_booleans_or_32_bit_integers() {
    for v in [
        json!("value"),
        json!(""),
        json!("5"),
        json!("true"),
        json!("https://example.com"),
        json!(true),
        json!(false),
        json!(0),
        json!(5),
        json!(-1),
        json!(2147483647),
        json!(-2147483648),
    ] {
        let p = valid(with("ext", v.clone()));
        assert_eq!(p.event.extensions.get("ext"), Some(&v), "kept as sent");
    }
}

#[test]
fn extension_values_of_other_json_types_are_invalid() {
    let wrong = [
        json!(2147483648i64),
        json!(-2147483649i64),
        json!(9007199254740993u64),
        json!(1.5),
        json!(-0.5),
        // "only the integer component ... is permitted" (json-format.md 2.2)
        parse("1.0"),
        parse("1e3"),
        json!({}),
        json!({"a": 1}),
        json!([]),
        json!([1, 2]),
    ];
    for v in wrong {
        invalid_only(with("ext", v), "ext");
    }
}

#[test]
fn a_null_extension_is_treated_as_absent() {
    let p = valid(with("unsetextension", Value::Null));
    assert!(p.event.extensions.is_empty());
}

#[test]
fn unknown_extensions_are_kept_as_sent() {
    let p = valid(with_all(&[
        ("comexampleextension1", json!("value")),
        ("comexampleothervalue", json!(5)),
        (
            "traceparent",
            json!("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        ),
        ("partitionkey", json!("order-1042")),
        ("sampled", json!(false)),
        ("negative", json!(-7)),
    ]));
    let want: BTreeMap<String, Value> = [
        ("comexampleextension1", json!("value")),
        ("comexampleothervalue", json!(5)),
        (
            "traceparent",
            json!("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        ),
        ("partitionkey", json!("order-1042")),
        ("sampled", json!(false)),
        ("negative", json!(-7)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(p.event.extensions, want);
}

#[test]
fn core_attributes_are_never_extensions() {
    let p = valid(with_all(&[
        ("subject", json!("s")),
        ("time", json!("2018-04-05T17:31:00Z")),
        ("datacontenttype", json!("application/json")),
        ("dataschema", json!("https://example.com/s")),
        ("data", json!({"a": 1})),
    ]));
    assert!(p.event.extensions.is_empty(), "{:?}", p.event.extensions);
}

// ---------------------------------------------------------------------------------------
// data and data_base64 (json-format.md 3.1)
// ---------------------------------------------------------------------------------------

#[test]
fn no_data_member_means_no_data() {
    assert_eq!(valid(Value::Object(base())).event.data, None);
}

#[test]
fn data_without_datacontenttype_is_json() {
    // "If the datacontenttype is unspecified, processing SHOULD proceed as if ...
    // application/json".
    for d in [
        json!({"appinfoA": "abc", "appinfoB": 123, "appinfoC": true}),
        json!([1, 2, 3]),
        json!(42),
        json!(1.5),
        json!(false),
        json!("I'm just a string"),
    ] {
        assert_eq!(
            valid(with("data", d.clone())).event.data,
            Some(Data::Json(d))
        );
    }
}

#[test]
fn an_explicit_null_data_is_a_json_null_payload() {
    // json-format.md 3.1.1: "the data member MAY have a value of null, representing an
    // explicit null payload as distinct from the absence of the data member."
    let p = valid(with("data", Value::Null));
    assert_eq!(p.event.data, Some(Data::Json(Value::Null)));
    assert_ne!(p.event.data, valid(Value::Object(base())).event.data);
}

#[test]
fn data_with_a_json_datacontenttype_is_json() {
    // "*/json or */*+json", parameters stripped, media types are case-insensitive.
    for ct in [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON",
        "text/json",
        "application/vnd.api+json",
        "application/cloudevents+json",
        "application/json-patch+json",
        "model/json",
        "application/ld+json; profile=\"https://www.w3.org/ns/activitystreams\"",
    ] {
        let p = valid(with_all(&[
            ("datacontenttype", json!(ct)),
            ("data", json!({"a": 1})),
        ]));
        assert_eq!(p.event.data, Some(Data::Json(json!({"a": 1}))), "{ct}");
        // a string tells JSON (a JSON string value) from text (an encoded string)
        let p = valid(with_all(&[
            ("datacontenttype", json!(ct)),
            ("data", json!("x")),
        ]));
        assert_eq!(p.event.data, Some(Data::Json(json!("x"))), "{ct}");
    }
}

#[test]
fn a_string_is_never_parsed_again_as_json() {
    // "if the data member is a string, a JSON deserializer MUST interpret it directly as a
    // JSON String value; it MUST NOT further deserialize the string as a JSON document."
    for ct in [
        None,
        Some("application/json"),
        Some("application/vnd.x+json"),
    ] {
        let mut e = with("data", json!("{\"a\":1}"));
        if let Some(ct) = ct {
            e["datacontenttype"] = json!(ct);
        }
        assert_eq!(
            valid(e).event.data,
            Some(Data::Json(json!("{\"a\":1}"))),
            "{ct:?}"
        );
    }
}

#[test]
fn string_data_with_a_non_json_datacontenttype_is_text() {
    for (ct, d) in [
        ("application/xml", "<much wow=\"xml\"/>"),
        ("text/plain", "hello"),
        ("text/plain; charset=utf-8", "€ price"),
        ("text/csv", "a,b\n1,2"),
        ("application/json-seq", "\u{1e}{\"a\":1}\n"),
        ("application/jsonx", "{}"),
        ("text/html", ""),
    ] {
        let p = valid(with_all(&[
            ("datacontenttype", json!(ct)),
            ("data", json!(d)),
        ]));
        assert_eq!(p.event.data, Some(Data::Text(d.to_string())), "{ct}");
        assert_eq!(p.event.datacontenttype.as_deref(), Some(ct));
    }
}

#[test]
fn data_base64_is_binary() {
    for (b64, bytes) in [
        ("Zm9vYg==", b"foob".to_vec()),
        ("Zm9vYmFy", b"foobar".to_vec()),
        ("+/8=", vec![0xfb, 0xff]),
        ("AA==", vec![0]),
        ("", vec![]),
    ] {
        let p = valid(with("data_base64", json!(b64)));
        assert_eq!(p.event.data, Some(Data::Binary(bytes)), "{b64}");
    }
    // datacontenttype describes the decoded bytes and does not change the decoding
    let p = valid(with_all(&[
        (
            "datacontenttype",
            json!("application/vnd.apache.thrift.binary"),
        ),
        ("data_base64", json!("AAEC")),
    ]));
    assert_eq!(p.event.data, Some(Data::Binary(vec![0, 1, 2])));
    let p = valid(with_all(&[
        ("datacontenttype", json!("application/json")),
        ("data_base64", json!("e30=")),
    ]));
    assert_eq!(p.event.data, Some(Data::Binary(b"{}".to_vec())));
}

#[test]
fn invalid_base64_is_rejected() {
    for b64 in [
        "not base64!",
        "Zm9v!",
        "Zm9vY",
        "Zm9v\nYg==",
        "-_8=",
        "====",
    ] {
        invalid_only(with("data_base64", json!(b64)), "data_base64");
    }
    for v in [json!(5), json!(true), json!({"a": 1}), json!(["AA=="])] {
        invalid_only(with("data_base64", v), "data_base64");
    }
}

#[test]
fn data_and_data_base64_are_mutually_exclusive() {
    invalid_only(
        with_all(&[("data", json!({"a": 1})), ("data_base64", json!("AA=="))]),
        "data_base64",
    );
    invalid_only(
        with_all(&[("data", json!("x")), ("data_base64", json!(""))]),
        "data_base64",
    );
}

#[test]
fn a_null_data_base64_is_ignored() {
    let p = valid(with_all(&[
        ("data", json!({"a": 1})),
        ("data_base64", Value::Null),
    ]));
    assert_eq!(p.event.data, Some(Data::Json(json!({"a": 1}))));
    assert_eq!(valid(with("data_base64", Value::Null)).event.data, None);
}

// ---------------------------------------------------------------------------------------
// All violations, non-objects
// ---------------------------------------------------------------------------------------

#[test]
fn every_violation_is_reported_with_its_field() {
    let e = invalid(json!({
        "specversion": "0.3",
        "id": "",
        "source": "a b",
        "type": 5,
        "subject": "",
        "time": "yesterday",
        "datacontenttype": "json",
        "dataschema": "/relative",
        "Bad-Name": "x",
        "ext": 1.5,
        "ok": "fine",
    }));
    let mut got = fields(&e);
    got.sort();
    let mut want: Vec<String> = [
        "specversion",
        "id",
        "source",
        "type",
        "subject",
        "time",
        "datacontenttype",
        "dataschema",
        "Bad-Name",
        "ext",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    want.sort();
    assert_eq!(got, want, "{e:#?}");
    assert!(e.iter().all(|v| !v.detail.is_empty()));
}

#[test]
fn data_problems_are_reported_with_attribute_problems() {
    let e = invalid(json!({
        "specversion": "1.0",
        "source": "/s",
        "type": "t",
        "data": {"a": 1},
        "data_base64": "AA==",
    }));
    let got: BTreeSet<String> = fields(&e).into_iter().collect();
    assert_eq!(
        got,
        BTreeSet::from(["id".to_string(), "data_base64".to_string()]),
        "{e:#?}"
    );

    let e = invalid(json!({
        "specversion": "1.0",
        "id": "1",
        "source": "/s",
        "type": "t",
        "time": "never",
        "data_base64": "!!",
    }));
    let got: BTreeSet<String> = fields(&e).into_iter().collect();
    assert_eq!(
        got,
        BTreeSet::from(["time".to_string(), "data_base64".to_string()]),
        "{e:#?}"
    );
}

#[test]
fn an_event_must_be_a_json_object() {
    for v in [
        json!([]),
        json!([{"specversion": "1.0"}]),
        json!("event"),
        json!(1),
        json!(true),
        Value::Null,
    ] {
        let e = invalid(v);
        assert_eq!(e.len(), 1, "{e:#?}");
    }
}

// ---------------------------------------------------------------------------------------
// Round trip
// ---------------------------------------------------------------------------------------

fn round_trip_cases() -> Vec<Value> {
    vec![
        Value::Object(base()),
        json!({
            "specversion": "1.0",
            "type": "com.example.someevent",
            "source": "/mycontext",
            "id": "A234-1234-1234",
            "time": "2018-04-05T17:31:00Z",
            "comexampleextension1": "value",
            "comexampleothervalue": 5,
            "datacontenttype": "application/vnd.apache.thrift.binary",
            "data_base64": "AAECAwT/",
        }),
        json!({
            "specversion": "1.0",
            "type": "com.example.someevent",
            "source": "/mycontext",
            "id": "B234-1234-1234",
            "time": "2018-04-05T17:31:00.123+02:00",
            "comexampleextension1": "value",
            "comexampleothervalue": 5,
            "datacontenttype": "application/xml",
            "data": "<much wow=\"xml\"/>",
        }),
        json!({
            "specversion": "1.0",
            "type": "com.example.someevent",
            "source": "https://example.com/storage/tenant/container",
            "subject": "mynewfile.jpg",
            "id": "C234-1234-1234",
            "time": "1990-12-31T23:59:60Z",
            "dataschema": "https://example.com/schemas/blob.json",
            "sampled": true,
            "priority": -2147483648,
            "datacontenttype": "application/json; charset=utf-8",
            "data": {"appinfoA": "abc", "appinfoB": 123, "appinfoC": true, "nested": [null, 1.5]},
        }),
        json!({
            "specversion": "1.0",
            "type": "com.example.someevent",
            "source": "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66",
            "id": "D234-1234-1234",
            "data": "I'm just a string",
        }),
        json!({
            "specversion": "1.0",
            "type": "t",
            "source": "/s",
            "id": "E",
            "data": null,
        }),
        json!({
            "specversion": "1.0",
            "type": "t",
            "source": "/s",
            "id": "F",
            "abcdefghijklmnopqrstuvwxyz": "long name, kept",
            "data_base64": "",
        }),
    ]
}

#[test]
fn to_json_then_from_json_is_the_identity() {
    for case in round_trip_cases() {
        let first = valid(case.clone()).event;
        let json = first.to_json();
        let second = valid(json.clone()).event;
        assert_eq!(second, first, "event changed through {json}");
        assert_eq!(second.to_json(), json, "serialisation is stable");
    }
}

#[test]
fn stored_envelopes_read_back_without_revalidation() {
    for case in round_trip_cases() {
        let event = valid(case).event;
        let back = CloudEvent::from_stored_json(event.to_json()).expect("an envelope");
        assert_eq!(back, event);
    }
    // accepted under older, looser rules: still readable
    let old = json!({"specversion": "1.0", "id": "a\u{1}", "source": "/100%", "type": "t"});
    let back = CloudEvent::from_stored_json(old).expect("an envelope");
    assert_eq!(back.source, "/100%");
    assert!(CloudEvent::from_stored_json(json!({"id": "x"})).is_none());
    assert!(CloudEvent::from_stored_json(json!([1])).is_none());
}

#[test]
fn from_json_then_to_json_gives_back_the_same_json() {
    for case in round_trip_cases() {
        assert_eq!(valid(case.clone()).event.to_json(), case);
    }
}

#[test]
fn to_json_leaves_out_unset_attributes_and_absent_data() {
    let json = valid(with_all(&[("subject", Value::Null), ("ext", Value::Null)]))
        .event
        .to_json();
    assert_eq!(json, Value::Object(base()));
    assert!(json.get("data").is_none() && json.get("data_base64").is_none());
}

// ---------------------------------------------------------------------------------------
// JSON batch format (json-format.md section 4)
// ---------------------------------------------------------------------------------------

fn member(id: &str) -> Value {
    with("id", json!(id))
}

#[test]
fn an_empty_batch_is_valid() {
    // "An example of an empty batch of CloudEvents (typically used in a response, but also
    // valid in a request): []"
    assert!(parse_batch(json!([])).expect("empty batch").is_empty());
}

#[test]
fn a_valid_batch_keeps_every_event_in_order() {
    let batch = parse_batch(json!([
        {
            "specversion": "1.0",
            "type": "com.example.someevent",
            "source": "/mycontext/4",
            "id": "B234-1234-1234",
            "time": "2018-04-05T17:31:00Z",
            "comexampleextension1": "value",
            "comexampleothervalue": 5,
            "datacontenttype": "application/vnd.apache.thrift.binary",
            "data_base64": "AAEC",
        },
        {
            "specversion": "1.0",
            "type": "com.example.someotherevent",
            "source": "/mycontext/9",
            "id": "C234-1234-1234",
            "time": "2018-04-05T17:31:05Z",
            "comexampleextension1": "value",
            "comexampleothervalue": 5,
            "datacontenttype": "application/json",
            "data": {"appinfoA": "abc", "appinfoB": 123, "appinfoC": true},
        },
        member("third"),
    ]))
    .expect("valid batch");
    let ids: Vec<&str> = batch.iter().map(|p| p.event.id.as_str()).collect();
    assert_eq!(ids, ["B234-1234-1234", "C234-1234-1234", "third"]);
    assert_eq!(batch[0].event.data, Some(Data::Binary(vec![0, 1, 2])));
    assert_eq!(
        batch[1].event.data,
        Some(Data::Json(
            json!({"appinfoA": "abc", "appinfoB": 123, "appinfoC": true})
        ))
    );
    assert_eq!(batch[1].event.extensions["comexampleothervalue"], json!(5));
}

#[test]
fn batch_members_follow_the_same_rules_as_single_events() {
    // every single-event case gives the same verdict inside a batch
    let cases = vec![
        (without("id"), Some("id")),
        (with("specversion", json!("0.3")), Some("specversion")),
        (with("time", json!("2018-04-05")), Some("time")),
        (with("source", json!("a b")), Some("source")),
        (with("My-Ext", json!(1)), Some("My-Ext")),
        (with("ext", json!(1.5)), Some("ext")),
        (with("data_base64", json!("!")), Some("data_base64")),
        (with("subject", json!("ok")), None),
        (with("data", Value::Null), None),
    ];
    for (event, field) in cases {
        let single = CloudEvent::from_json(event.clone());
        let batch = parse_batch(json!([member("first"), event.clone()]));
        match field {
            None => {
                let single = single.expect("valid");
                let batch = batch.expect("valid batch");
                assert_eq!(batch.len(), 2);
                assert_eq!(batch[1].event, single.event);
            }
            Some(field) => {
                let bad = batch.expect_err("invalid batch");
                assert_eq!(bad.len(), 1, "{bad:#?}");
                assert_eq!(bad[0].0, 1, "the invalid member is named by its index");
                assert_eq!(fields(&bad[0].1), vec![field.to_string()]);
                assert_eq!(bad[0].1, single.expect_err("invalid"));
            }
        }
    }
}

#[test]
fn a_batch_is_all_or_nothing_and_lists_every_invalid_member() {
    let bad = parse_batch(json!([
        member("0"),
        without("id"),
        member("2"),
        with_all(&[("time", json!("never")), ("specversion", json!("2.0"))]),
        42,
        member("5"),
        "not an event",
    ]))
    .expect_err("one bad member fails the whole batch");
    let indices: Vec<usize> = bad.iter().map(|(i, _)| *i).collect();
    assert_eq!(indices, [1, 3, 4, 6]);
    assert_eq!(fields(&bad[0].1), ["id"]);
    let at3: BTreeSet<String> = fields(&bad[1].1).into_iter().collect();
    assert_eq!(
        at3,
        BTreeSet::from(["time".to_string(), "specversion".to_string()])
    );
    assert_eq!(bad[2].1.len(), 1);
    assert_eq!(bad[3].1.len(), 1);
}

#[test]
fn a_batch_warning_stays_with_its_member() {
    let long = "abcdefghijklmnopqrstuv";
    let batch = parse_batch(json!([member("0"), with(long, json!("x"))])).expect("valid");
    assert!(batch[0].warnings.is_empty());
    assert_eq!(fields(&batch[1].warnings), [long]);
}

#[test]
fn a_batch_must_be_a_json_array() {
    for v in [
        Value::Object(base()),
        json!({}),
        json!("[]"),
        json!(0),
        json!(true),
        Value::Null,
    ] {
        let bad = parse_batch(v.clone()).expect_err("not an array");
        assert!(!bad.is_empty(), "{v}");
        assert!(bad.iter().all(|(_, v)| !v.is_empty()));
    }
}

#[test]
fn a_nested_batch_is_not_an_event() {
    let bad = parse_batch(json!([[member("0")]])).expect_err("nested arrays are invalid");
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].0, 0);
}
