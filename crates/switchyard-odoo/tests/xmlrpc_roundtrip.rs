//! Every recorded XML-RPC body decodes and re-encodes to the recorded bytes: responses as
//! Odoo 18 writes them, requests as Python's `xmlrpc.client` does.
//!
//! Where identical bytes are impossible, the expected bytes are transformed, and each
//! transformation says why:
//! - struct members come back in the order `serde_json::Map` iterates; without serde_json's
//!   `preserve_order` feature that is sorted, while Python keeps insertion order. The
//!   expectation sorts members by name when the map sorts (checked at run time, so turning
//!   the feature on makes this test byte-exact for every body).
//! - `<dateTime.iso8601>` decodes to Odoo's string form (our value model has no datetime),
//!   so it re-encodes as `<string>`.
//! - placeholders `<PASSWORD>`/`<API_KEY>` were substituted into the recordings after
//!   sending and are not XML; they are swapped for plain tokens before decoding and back after.

mod common;

use quick_xml::Reader;
use quick_xml::events::Event;
use serde_json::{Map, Value, json};
use switchyard_odoo::xmlrpc::{self, Fault};

const PLACEHOLDERS: [(&str, &str); 2] =
    [("<PASSWORD>", "__PASSWORD__"), ("<API_KEY>", "__API_KEY__")];

/// Transcripts whose request bodies are not XML-RPC on purpose.
const MALFORMED_REQUESTS: [(&str, &str, usize, usize); 2] = [
    ("01_38", "no element found", 2, 62),
    ("01_39", "no element found", 1, 0),
];

#[test]
fn every_recorded_response_body_reencodes_to_the_same_bytes() {
    let mut checked = 0;
    for t in common::all().iter().filter(|t| t.protocol() == "xmlrpc") {
        let Some(body) = t.response_body().filter(|b| b.starts_with("<?xml")) else {
            continue;
        };
        let decoded =
            xmlrpc::decode_response(body.as_bytes()).unwrap_or_else(|e| panic!("{}: {e}", t.name));
        let encoded = match &decoded {
            Ok(value) => {
                xmlrpc::encode_response(value).unwrap_or_else(|e| panic!("{}: {e}", t.name))
            }
            Err(fault) => xmlrpc::encode_fault(fault),
        };
        assert_eq!(encoded, expected_bytes(body), "{}", t.name);
        checked += 1;
    }
    assert_eq!(checked, 144, "XML-RPC response bodies in testdata/odoo");
}

#[test]
fn every_recorded_request_body_reencodes_to_the_same_bytes() {
    let mut checked = 0;
    for t in common::all().iter().filter(|t| t.protocol() == "xmlrpc") {
        // 07_43's 128 MiB body was not stored, only its size and first characters.
        let Some(body) = t.request_body().filter(|b| b.starts_with("<?xml")) else {
            continue;
        };
        if MALFORMED_REQUESTS.iter().any(|(id, ..)| *id == t.id()) {
            continue;
        }
        let body = swap_placeholders(body, false);
        let (method, params) =
            xmlrpc::decode_call(body.as_bytes()).unwrap_or_else(|e| panic!("{}: {e}", t.name));
        let encoded = xmlrpc::encode_call(&method, &params);
        let expected = datetimes_as_strings(&expected_bytes(&body));
        assert_eq!(
            swap_placeholders(&encoded, true),
            swap_placeholders(&expected, true),
            "{}",
            t.name
        );
        checked += 1;
    }
    assert_eq!(
        checked, 142,
        "well-formed XML-RPC request bodies in testdata/odoo"
    );
}

#[test]
fn malformed_request_bodies_fail_like_expat() {
    for (id, message, line, column) in MALFORMED_REQUESTS {
        let t = common::by_id(id);
        let err = xmlrpc::decode_call(t.request_body().unwrap().as_bytes()).unwrap_err();
        assert_eq!(
            (err.message.as_str(), err.line, err.column),
            (message, line, column),
            "{id}"
        );
        // Odoo's own answer names the same error on its traceback's last line.
        let answer = xmlrpc::decode_response(t.response_body().unwrap().as_bytes()).unwrap();
        let fault = answer.unwrap_err();
        assert!(
            fault
                .string
                .contains(&format!("xml.parsers.expat.ExpatError: {err}\n")),
            "{id}: {}",
            fault.string
        );
    }
}

#[test]
fn recorded_values_decode_to_the_value_model() {
    // 01_01 version: struct, ints, strings.
    let version = decode_ok("01_01");
    assert_eq!(
        version["server_version_info"],
        json!([18, 0, 0, "final", 0, ""])
    );
    // 08_13 qty_available 50.0 stays a float.
    let qty = decode_ok("08_13");
    assert!(qty[0]["qty_available"].is_f64());
    assert_eq!(qty[0]["qty_available"], json!(50.0));
    // 01_10: empty fields are `false`.
    assert_eq!(decode_ok("01_10")[0]["email"], json!(false));
    // 09_07 request: <dateTime.iso8601> → Odoo's string form.
    let body = swap_placeholders(common::by_id("09_07").request_body().unwrap(), false);
    let (_, params) = xmlrpc::decode_call(body.as_bytes()).unwrap();
    assert_eq!(
        params[5][1]["commitment_date"],
        json!("2026-12-01 09:30:00")
    );
    // 01_44: the legacy endpoint's string fault code.
    let t = common::by_id("01_44");
    let fault = xmlrpc::decode_response(t.response_body().unwrap().as_bytes())
        .unwrap()
        .unwrap_err();
    assert_eq!(
        fault,
        Fault {
            code: xmlrpc::FaultCode::Str(
                "warning -- MissingError\n\nRecord does not exist or has been deleted.\n(Record: res.partner(999999,), User: 2)".into()
            ),
            string: String::new(),
        }
    );
}

fn decode_ok(id: &str) -> Value {
    let t = common::by_id(id);
    xmlrpc::decode_response(t.response_body().unwrap().as_bytes())
        .unwrap()
        .unwrap()
}

fn swap_placeholders(body: &str, back: bool) -> String {
    PLACEHOLDERS
        .iter()
        .fold(body.to_owned(), |b, (recorded, token)| {
            if back {
                b.replace(token, recorded)
            } else {
                b.replace(recorded, token)
            }
        })
}

/// `<dateTime.iso8601>20261201T09:30:00</dateTime.iso8601>` → `<string>2026-12-01 09:30:00</string>`.
fn datetimes_as_strings(body: &str) -> String {
    let (open, close) = ("<dateTime.iso8601>", "</dateTime.iso8601>");
    let mut out = String::new();
    let mut rest = body;
    while let Some(start) = rest.find(open) {
        let after = &rest[start + open.len()..];
        let end = after.find(close).expect("closed dateTime");
        let raw = &after[..end];
        let dt = chrono::NaiveDateTime::parse_from_str(raw, "%Y%m%dT%H:%M:%S")
            .expect("recorded dateTime");
        out.push_str(&rest[..start]);
        out.push_str(&format!(
            "<string>{}</string>",
            dt.format("%Y-%m-%d %H:%M:%S")
        ));
        rest = &after[end + close.len()..];
    }
    out.push_str(rest);
    out
}

/// The recorded bytes, with struct members sorted when `serde_json::Map` sorts.
fn expected_bytes(body: &str) -> String {
    if map_keeps_insertion_order() {
        return body.to_owned();
    }
    let tree = parse_tree(body);
    let mut out = String::new();
    write_tree(&sort_members(tree), body, &mut out);
    out
}

fn map_keeps_insertion_order() -> bool {
    let mut map = Map::new();
    map.insert("b".into(), Value::Null);
    map.insert("a".into(), Value::Null);
    map.keys().next().is_some_and(|k| k == "b")
}

/// The document as byte ranges of the original text, so writing it back is exact.
enum Node {
    Element {
        name: String,
        open: (usize, usize),
        children: Vec<Node>,
        close: (usize, usize),
        /// The unescaped text directly inside (a member's name).
        text: String,
    },
    Raw(usize, usize),
}

fn parse_tree(body: &str) -> Vec<Node> {
    let mut reader = Reader::from_str(body);
    let mut stack: Vec<(String, (usize, usize), Vec<Node>)> = vec![(String::new(), (0, 0), vec![])];
    loop {
        let start = reader.buffer_position() as usize;
        let event = reader.read_event().expect("recorded XML parses");
        let span = (start, reader.buffer_position() as usize);
        match event {
            Event::Start(e) => stack.push((
                String::from_utf8_lossy(e.name().as_ref()).into_owned(),
                span,
                vec![],
            )),
            Event::End(_) => {
                let (name, open, children) = stack.pop().expect("balanced");
                let text = text_of(&children, body);
                let element = Node::Element {
                    name,
                    open,
                    children,
                    close: span,
                    text,
                };
                stack.last_mut().expect("parent").2.push(element);
            }
            Event::Eof => break,
            _ => stack
                .last_mut()
                .expect("parent")
                .2
                .push(Node::Raw(span.0, span.1)),
        }
    }
    stack.pop().expect("root").2
}

fn text_of(children: &[Node], body: &str) -> String {
    let raw: String = children
        .iter()
        .filter_map(|c| match c {
            Node::Raw(from, to) => Some(&body[*from..*to]),
            Node::Element { .. } => None,
        })
        .collect();
    quick_xml::escape::unescape(&raw)
        .map(|s| s.into_owned())
        .unwrap_or(raw)
}

/// Sorts the `<member>`s of every `<struct>` by name, leaving the text between them in place.
fn sort_members(nodes: Vec<Node>) -> Vec<Node> {
    nodes.into_iter().map(sort_node).collect()
}

fn sort_node(node: Node) -> Node {
    let Node::Element {
        name,
        open,
        children,
        close,
        text,
    } = node
    else {
        return node;
    };
    let mut children = sort_members(children);
    if name == "struct" {
        let slots: Vec<usize> = (0..children.len())
            .filter(|i| matches!(&children[*i], Node::Element { name, .. } if name == "member"))
            .collect();
        let mut members: Vec<Node> = Vec::new();
        for i in slots.iter().rev() {
            members.push(children.remove(*i));
        }
        members.reverse();
        members.sort_by_key(member_name);
        for (slot, member) in slots.iter().zip(members) {
            children.insert(*slot, member);
        }
    }
    Node::Element {
        name,
        open,
        children,
        close,
        text,
    }
}

/// The member's name as the decoder sees it (unescaped), which is how the map sorts.
fn member_name(member: &Node) -> String {
    let Node::Element { children, .. } = member else {
        return String::new();
    };
    children
        .iter()
        .find_map(|c| match c {
            Node::Element { name, text, .. } if name == "name" => Some(text.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

fn write_tree(nodes: &[Node], body: &str, out: &mut String) {
    for node in nodes {
        match node {
            Node::Raw(from, to) => out.push_str(&body[*from..*to]),
            Node::Element {
                open,
                children,
                close,
                ..
            } => {
                out.push_str(&body[open.0..open.1]);
                write_tree(children, body, out);
                out.push_str(&body[close.0..close.1]);
            }
        }
    }
}
