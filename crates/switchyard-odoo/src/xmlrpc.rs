//! The XML-RPC wire format, both directions, as Odoo 18 and Python's `xmlrpc.client` write
//! and read it. Client and simulator share it, so it must never depend on either.
//!
//! Values are `serde_json::Value`: `<int>`/`<i4>`/`<i8>` become integers, `<double>` a float
//! (10.0 stays a float), `<boolean>` a bool, `<nil/>` Null, `<dateTime.iso8601>` Odoo's own
//! string form `"YYYY-MM-DD HH:MM:SS"` and `<base64>` its text. Decoding follows Python's
//! `Unmarshaller` (a bare `<value>text</value>` is a string, unknown tags outside a value are
//! ignored); encoding reproduces `xmlrpc.client.dumps` byte for byte, so a recorded body
//! decodes and re-encodes to the same bytes as long as struct members come in the order the
//! map iterates them (serde_json's default map is sorted; see the round-trip tests).
//!
//! Two writers, two headers: the client writes Python's request (`<?xml version='1.0'?>`),
//! the server Odoo's `rpc.dumps` (`<?xml version="1.0"?>` and a blank line before the
//! closing tag). Odoo answers faults and results with HTTP 200 alike.

use std::fmt::Write as _;

use quick_xml::Reader;
use quick_xml::events::Event;
use serde_json::{Map, Number, Value};

/// Python's `MAXINT`/`MININT`: `<int>` is 32 bits; Odoo's marshaller refuses anything wider.
const MAX_INT: i64 = i32::MAX as i64;
const MIN_INT: i64 = i32::MIN as i64;

/// An XML-RPC fault code. `/xmlrpc/2/*` uses integers (1 to 4, see [`crate::error`]); the
/// legacy `/xmlrpc/*` endpoints put a string there (`"warning -- MissingError\n\n…"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultCode {
    Int(i64),
    Str(String),
}

/// A `<fault>` answer: Odoo's exception as code and text (the text is the full Python
/// traceback for code 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub code: FaultCode,
    pub string: String,
}

/// A body that is not XML-RPC. `message` reads like the Python error the server would raise:
/// expat's (`"no element found"`, with the position expat reports: line from 1, column in
/// bytes from 0), or the unmarshaller's (`"bad boolean value"`, `"invalid literal for int()
/// with base 10: 'x'"`). `exception` names the Python class, for a simulated traceback.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.describe())]
pub struct DecodeError {
    pub message: String,
    pub line: usize,
    pub column: usize,
    pub exception: &'static str,
}

/// Python class of XML syntax errors, as the last line of Odoo's traceback prints it.
pub const EXPAT_ERROR: &str = "xml.parsers.expat.ExpatError";

impl DecodeError {
    fn describe(&self) -> String {
        if self.exception == EXPAT_ERROR {
            format!(
                "{}: line {}, column {}",
                self.message, self.line, self.column
            )
        } else {
            self.message.clone()
        }
    }
}

/// A value XML-RPC cannot carry: Null without `allow_none` (a method that returned None, see
/// [`crate::error`] for what the client makes of that), or an integer wider than 32 bits.
/// `exception` and `message` are Python's (`TypeError: cannot marshal None unless
/// allow_none is enabled`, `OverflowError: int exceeds XML-RPC limits`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{exception}: {message}")]
pub struct MarshalError {
    pub exception: &'static str,
    pub message: String,
}

/// The Python exception line Odoo reports when a method returns None over XML-RPC.
pub const CANNOT_MARSHAL_NONE: &str = "cannot marshal None unless allow_none is enabled";

// ---------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------

/// A `methodCall` exactly as Python's `ServerProxy` sends it. Null is written `<nil/>` (Odoo
/// reads it); integers wider than 32 bits as `<i8>` (Odoo reads them, Python's client would
/// refuse). Control characters XML 1.0 cannot carry are dropped, as Odoo does on its side.
pub fn encode_call(method: &str, params: &[Value]) -> String {
    let mut out = String::from("<?xml version='1.0'?>\n<methodCall>\n<methodName>");
    out.push_str(&escape(method));
    out.push_str("</methodName>\n<params>\n");
    for param in params {
        out.push_str("<param>\n");
        write_value(&mut out, param, Mode::Call).expect("calls marshal every value");
        out.push_str("</param>\n");
    }
    out.push_str("</params>\n</methodCall>\n");
    out
}

/// A successful `methodResponse` as Odoo 18 writes it (`allow_none=False`).
pub fn encode_response(value: &Value) -> Result<String, MarshalError> {
    let mut inner = String::from("<params>\n<param>\n");
    write_value(&mut inner, value, Mode::Response)?;
    inner.push_str("</param>\n</params>\n");
    Ok(odoo_envelope(&inner))
}

/// A fault `methodResponse` as Odoo 18 writes it (both the integer and the legacy string
/// codes).
pub fn encode_fault(fault: &Fault) -> String {
    let code = match &fault.code {
        FaultCode::Int(code) => Value::from(*code),
        FaultCode::Str(code) => Value::from(code.as_str()),
    };
    let mut inner = String::from("<fault>\n<value><struct>\n");
    for (name, value) in [
        ("faultCode", code),
        ("faultString", Value::from(fault.string.as_str())),
    ] {
        inner.push_str("<member>\n<name>");
        inner.push_str(name);
        inner.push_str("</name>\n");
        // Fault codes are small integers or strings: both always marshal.
        write_value(&mut inner, &value, Mode::Response).expect("fault values marshal");
        inner.push_str("</member>\n");
    }
    inner.push_str("</struct></value>\n</fault>\n");
    odoo_envelope(&inner)
}

/// Odoo's `rpc.dumps`: its own header and a blank line before the closing tag.
fn odoo_envelope(inner: &str) -> String {
    format!("<?xml version=\"1.0\"?>\n<methodResponse>\n{inner}\n</methodResponse>\n")
}

/// Who is writing: Python's client (lenient, `allow_none`) or Odoo's server marshaller.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Call,
    Response,
}

fn write_value(out: &mut String, value: &Value, mode: Mode) -> Result<(), MarshalError> {
    match value {
        Value::Null if mode == Mode::Call => out.push_str("<value><nil/></value>\n"),
        Value::Null => {
            return Err(MarshalError {
                exception: "TypeError",
                message: CANNOT_MARSHAL_NONE.into(),
            });
        }
        Value::Bool(b) => {
            let _ = writeln!(out, "<value><boolean>{}</boolean></value>", u8::from(*b));
        }
        Value::Number(n) => write_number(out, n, mode)?,
        Value::String(s) => {
            out.push_str("<value><string>");
            out.push_str(&escape(&strip_control_characters(s)));
            out.push_str("</string></value>\n");
        }
        Value::Array(items) => {
            out.push_str("<value><array><data>\n");
            for item in items {
                write_value(out, item, mode)?;
            }
            out.push_str("</data></array></value>\n");
        }
        Value::Object(map) => {
            out.push_str("<value><struct>\n");
            for (key, item) in map {
                out.push_str("<member>\n<name>");
                out.push_str(&escape(key));
                out.push_str("</name>\n");
                write_value(out, item, mode)?;
                out.push_str("</member>\n");
            }
            out.push_str("</struct></value>\n");
        }
    }
    Ok(())
}

fn write_number(out: &mut String, n: &Number, mode: Mode) -> Result<(), MarshalError> {
    if let Some(i) = n.as_i64().filter(|i| (MIN_INT..=MAX_INT).contains(i)) {
        let _ = writeln!(out, "<value><int>{i}</int></value>");
    } else if n.is_f64() {
        let f = n.as_f64().unwrap_or_default();
        let _ = writeln!(
            out,
            "<value><double>{}</double></value>",
            python_float_repr(f)
        );
    } else if mode == Mode::Call {
        let _ = writeln!(out, "<value><i8>{n}</i8></value>");
    } else {
        return Err(MarshalError {
            exception: "OverflowError",
            message: "int exceeds XML-RPC limits".into(),
        });
    }
    Ok(())
}

/// Python's `xmlrpc.client.escape`: only `&`, `<` and `>`.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Odoo's `CONTROL_CHARACTERS` translation: code points 0-31 except tab, LF and CR.
fn strip_control_characters(s: &str) -> std::borrow::Cow<'_, str> {
    let is_control = |c: char| (c as u32) < 32 && !matches!(c, '\t' | '\n' | '\r');
    if s.chars().any(is_control) {
        s.chars()
            .filter(|c| !is_control(*c))
            .collect::<String>()
            .into()
    } else {
        s.into()
    }
}

/// Python's `repr(float)`: the shortest digits that round-trip, positional for decimal
/// exponents in [-4, 16), scientific (`1e+16`, `1e-05`) outside, always with a `.0` when
/// positional and integral.
pub fn python_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf" } else { "-inf" }.into();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    // Rust's `{:e}` prints the shortest round-tripping digits: "-1.2345e3".
    let sci = format!("{:e}", f.abs());
    let (mantissa, exponent) = sci.split_once('e').expect("LowerExp has an exponent");
    let exponent: i32 = exponent.parse().expect("LowerExp exponent is an integer");
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let sign = if f < 0.0 { "-" } else { "" };
    let point = exponent + 1; // where the decimal point falls in `digits`
    let body = if (-3..=16).contains(&point) {
        positional(&digits, point)
    } else {
        scientific(&digits, point - 1)
    };
    format!("{sign}{body}")
}

fn positional(digits: &str, point: i32) -> String {
    let len = digits.len() as i32;
    if point <= 0 {
        format!("0.{}{digits}", "0".repeat((-point) as usize))
    } else if point >= len {
        format!("{digits}{}.0", "0".repeat((point - len) as usize))
    } else {
        let (int, frac) = digits.split_at(point as usize);
        format!("{int}.{frac}")
    }
}

fn scientific(digits: &str, exponent: i32) -> String {
    let (first, rest) = digits.split_at(1);
    let dot = if rest.is_empty() {
        String::new()
    } else {
        format!(".{rest}")
    };
    let sign = if exponent < 0 { '-' } else { '+' };
    format!("{first}{dot}e{sign}{:02}", exponent.abs())
}

// ---------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------

/// Reads a `methodCall` (what the server receives): the method name and its parameters.
pub fn decode_call(body: &[u8]) -> Result<(String, Vec<Value>), DecodeError> {
    let parsed = parse(body)?;
    let method = parsed.method_name.ok_or_else(|| DecodeError {
        message: "missing methodName".into(),
        line: 1,
        column: 0,
        exception: "xmlrpc.client.ResponseError",
    })?;
    Ok((method, parsed.stack))
}

/// Reads a `methodResponse`: the value, or the fault Odoo answered with.
pub fn decode_response(body: &[u8]) -> Result<Result<Value, Fault>, DecodeError> {
    let parsed = parse(body)?;
    let response_error = |message: &str| DecodeError {
        message: message.into(),
        line: 1,
        column: 0,
        exception: "xmlrpc.client.ResponseError",
    };
    match parsed.kind {
        Some(Kind::Params) => Ok(Ok(parsed.stack.into_iter().next().unwrap_or(Value::Null))),
        Some(Kind::Fault) => {
            let fault = parsed.stack.into_iter().next();
            fault_from_struct(fault)
                .map(Err)
                .ok_or_else(|| response_error("malformed fault"))
        }
        None => Err(response_error("neither params nor fault")),
    }
}

fn fault_from_struct(value: Option<Value>) -> Option<Fault> {
    let Some(Value::Object(mut map)) = value else {
        return None;
    };
    let code = match map.remove("faultCode")? {
        Value::Number(n) => FaultCode::Int(n.as_i64()?),
        Value::String(s) => FaultCode::Str(s),
        _ => return None,
    };
    let Value::String(string) = map.remove("faultString")? else {
        return None;
    };
    Some(Fault { code, string })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Params,
    Fault,
}

struct Parsed {
    kind: Option<Kind>,
    method_name: Option<String>,
    stack: Vec<Value>,
}

/// Runs the XML through quick-xml and Python's unmarshaller state machine.
fn parse(body: &[u8]) -> Result<Parsed, DecodeError> {
    let mut reader = Reader::from_reader(body);
    reader.config_mut().expand_empty_elements = true;
    let mut machine = Unmarshaller::default();
    let mut buf = Vec::new();
    let mut depth = 0usize;
    let mut root_closed = false;
    loop {
        buf.clear();
        let event_start = reader.buffer_position();
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| syntax_error(body, &e, reader.error_position()))?;
        let at = |offset: u64| offset_error(body, offset);
        match event {
            Event::Start(start) => {
                if root_closed {
                    return Err(at(event_start).expat("junk after document element"));
                }
                depth += 1;
                let name = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
                machine.start(&name).map_err(|m| at(event_start).with(m))?;
            }
            Event::End(end) => {
                let name = String::from_utf8_lossy(end.local_name().as_ref()).into_owned();
                machine.end(&name).map_err(|m| at(event_start).with(m))?;
                depth -= 1;
                root_closed = depth == 0;
            }
            Event::Text(text) => {
                let text = text
                    .xml10_content()
                    .map_err(|_| at(event_start).invalid_token())?;
                if depth == 0 && !text.trim().is_empty() {
                    let message = if root_closed {
                        "junk after document element"
                    } else {
                        "syntax error"
                    };
                    return Err(at(event_start).expat(message));
                }
                machine.data.push_str(&text);
            }
            Event::CData(cdata) => {
                let text = cdata
                    .decode()
                    .map_err(|_| at(event_start).invalid_token())?;
                machine.data.push_str(&text);
            }
            Event::GeneralRef(reference) => {
                let resolved = resolve_reference(&reference)
                    .ok_or_else(|| at(event_start).expat("undefined entity"))?;
                machine.data.push_str(&resolved);
            }
            Event::Eof => {
                if !root_closed {
                    return Err(at(body.len() as u64).expat("no element found"));
                }
                return Ok(machine.finish());
            }
            Event::Empty(_)
            | Event::Comment(_)
            | Event::Decl(_)
            | Event::PI(_)
            | Event::DocType(_) => {}
        }
    }
}

fn resolve_reference(reference: &quick_xml::events::BytesRef<'_>) -> Option<String> {
    if let Ok(Some(c)) = reference.resolve_char_ref() {
        return Some(c.to_string());
    }
    let name = reference.decode().ok()?;
    quick_xml::escape::resolve_predefined_entity(&name).map(str::to_owned)
}

/// A position in the body, waiting for its message.
struct At {
    line: usize,
    column: usize,
}

impl At {
    fn expat(self, message: &str) -> DecodeError {
        DecodeError {
            message: message.into(),
            line: self.line,
            column: self.column,
            exception: EXPAT_ERROR,
        }
    }

    fn invalid_token(self) -> DecodeError {
        self.expat("not well-formed (invalid token)")
    }

    fn with(self, (exception, message): (&'static str, String)) -> DecodeError {
        DecodeError {
            message,
            line: self.line,
            column: self.column,
            exception,
        }
    }
}

fn offset_error(body: &[u8], offset: u64) -> At {
    let offset = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(body.len());
    let before = &body[..offset];
    let line = 1 + before.iter().filter(|b| **b == b'\n').count();
    let column = before.iter().rev().take_while(|b| **b != b'\n').count();
    At { line, column }
}

fn syntax_error(body: &[u8], error: &quick_xml::Error, offset: u64) -> DecodeError {
    use quick_xml::errors::{IllFormedError, SyntaxError};
    let at = offset_error(body, offset);
    match error {
        quick_xml::Error::IllFormed(IllFormedError::MismatchedEndTag { .. })
        | quick_xml::Error::IllFormed(IllFormedError::UnmatchedEndTag(_)) => {
            at.expat("mismatched tag")
        }
        quick_xml::Error::Syntax(
            SyntaxError::UnclosedTag
            | SyntaxError::UnclosedComment
            | SyntaxError::UnclosedCData
            | SyntaxError::UnclosedDoctype
            | SyntaxError::UnclosedPIOrXmlDecl,
        ) => at.expat("unclosed token"),
        _ => at.invalid_token(),
    }
}

/// Python's `xmlrpc.client.Unmarshaller`: a value stack with marks where arrays and structs
/// begin, the text since the last start tag, and whether we are inside a bare `<value>`.
#[derive(Default)]
struct Unmarshaller {
    stack: Vec<Value>,
    marks: Vec<usize>,
    data: String,
    bare_value: bool,
    kind: Option<Kind>,
    method_name: Option<String>,
}

type Refusal = (&'static str, String);

const KNOWN_TAGS: [&str; 21] = [
    "boolean",
    "int",
    "i1",
    "i2",
    "i4",
    "i8",
    "biginteger",
    "double",
    "float",
    "bigdecimal",
    "string",
    "array",
    "struct",
    "base64",
    "dateTime.iso8601",
    "value",
    "params",
    "fault",
    "methodName",
    "name",
    "nil",
];

impl Unmarshaller {
    fn start(&mut self, tag: &str) -> Result<(), Refusal> {
        if tag == "array" || tag == "struct" {
            self.marks.push(self.stack.len());
        }
        self.data.clear();
        if self.bare_value && !KNOWN_TAGS.contains(&tag) {
            return Err((
                "xmlrpc.client.ResponseError",
                format!("unknown tag '{tag}'"),
            ));
        }
        self.bare_value = tag == "value";
        Ok(())
    }

    fn end(&mut self, tag: &str) -> Result<(), Refusal> {
        let data = std::mem::take(&mut self.data);
        match tag {
            "boolean" => self.push(parse_boolean(&data)?),
            "int" | "i1" | "i2" | "i4" | "i8" | "biginteger" => self.push(parse_int(&data)?),
            "double" | "float" | "bigdecimal" => self.push(parse_double(&data)?),
            "string" | "name" => self.push(Value::String(data)),
            "base64" => self.push(Value::String(data.trim().to_owned())),
            "dateTime.iso8601" => self.push(parse_datetime(&data)?),
            "nil" => self.push(Value::Null),
            "value" if self.bare_value => self.push(Value::String(data)),
            "array" => {
                let mark = self.pop_mark()?;
                let items = self.stack.split_off(mark);
                self.push(Value::Array(items));
            }
            "struct" => {
                let mark = self.pop_mark()?;
                let items = self.stack.split_off(mark);
                self.push(Value::Object(pairs_to_map(items)?));
            }
            "params" => self.kind = Some(Kind::Params),
            "fault" => self.kind = Some(Kind::Fault),
            "methodName" => self.method_name = Some(data),
            _ => {}
        }
        Ok(())
    }

    fn push(&mut self, value: Value) {
        self.stack.push(value);
        self.bare_value = false;
    }

    fn pop_mark(&mut self) -> Result<usize, Refusal> {
        self.marks.pop().ok_or((
            "xmlrpc.client.ResponseError",
            "unbalanced array or struct".into(),
        ))
    }

    fn finish(self) -> Parsed {
        Parsed {
            kind: self.kind,
            method_name: self.method_name,
            stack: self.stack,
        }
    }
}

fn pairs_to_map(items: Vec<Value>) -> Result<Map<String, Value>, Refusal> {
    if !items.len().is_multiple_of(2) {
        return Err(("IndexError", "list index out of range".into()));
    }
    let mut map = Map::new();
    let mut items = items.into_iter();
    while let (Some(name), Some(value)) = (items.next(), items.next()) {
        let Value::String(name) = name else {
            return Err(("TypeError", "struct member name is not a string".into()));
        };
        map.insert(name, value);
    }
    Ok(map)
}

fn parse_boolean(data: &str) -> Result<Value, Refusal> {
    match data {
        "0" => Ok(Value::Bool(false)),
        "1" => Ok(Value::Bool(true)),
        _ => Err(("TypeError", "bad boolean value".into())),
    }
}

fn parse_int(data: &str) -> Result<Value, Refusal> {
    let trimmed = data.trim();
    trimmed
        .parse::<i64>()
        .map(Value::from)
        .or_else(|_| trimmed.parse::<u64>().map(Value::from))
        .map_err(|_| {
            (
                "ValueError",
                format!("invalid literal for int() with base 10: '{data}'"),
            )
        })
}

fn parse_double(data: &str) -> Result<Value, Refusal> {
    let refuse = || {
        (
            "ValueError",
            format!("could not convert string to float: '{data}'"),
        )
    };
    let f: f64 = data.trim().parse().map_err(|_| refuse())?;
    Number::from_f64(f).map(Value::Number).ok_or_else(refuse)
}

/// `20261123T18:00:06` (Python reads it with `%Y%m%dT%H:%M:%S`) → `"2026-11-23 18:00:06"`.
fn parse_datetime(data: &str) -> Result<Value, Refusal> {
    chrono::NaiveDateTime::parse_from_str(data.trim(), "%Y%m%dT%H:%M:%S")
        .map(|dt| Value::String(dt.format("%Y-%m-%d %H:%M:%S").to_string()))
        .map_err(|_| {
            (
                "ValueError",
                format!("time data '{data}' does not match format '%Y%m%dT%H:%M:%S'"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn floats_print_like_python_repr() {
        let cases = [
            (10.0, "10.0"),
            (146.63, "146.63"),
            (0.1, "0.1"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1e16, "1e+16"),
            (1234567890123456.0, "1234567890123456.0"),
            (12345678901234567.0, "1.2345678901234568e+16"),
            (-2.5, "-2.5"),
            (-0.0, "-0.0"),
            (1.5e-7, "1.5e-07"),
            (1e100, "1e+100"),
        ];
        for (f, repr) in cases {
            assert_eq!(python_float_repr(f), repr, "{f}");
        }
    }

    #[test]
    fn scalars_decode_to_json_values() {
        let body = b"<?xml version='1.0'?>\n<methodCall>\n<methodName>m</methodName>\n<params>\n\
            <param><value><dateTime.iso8601>20261123T18:00:06</dateTime.iso8601></value></param>\n\
            <param><value><base64>\naGVsbG8=\n</base64></value></param>\n\
            <param><value><nil/></value></param>\n\
            <param><value><i8>5000000000</i8></value></param>\n\
            <param><value><double>10.0</double></value></param>\n\
            <param><value>bare &amp; &#233;</value></param>\n\
            <param><value></value></param>\n\
            </params>\n</methodCall>\n";
        let (method, params) = decode_call(body).unwrap();
        assert_eq!(method, "m");
        assert_eq!(
            params,
            vec![
                json!("2026-11-23 18:00:06"),
                json!("aGVsbG8="),
                Value::Null,
                json!(5_000_000_000_i64),
                json!(10.0),
                json!("bare & é"),
                json!(""),
            ]
        );
        assert!(params[4].is_f64(), "a double stays a float");
    }

    #[test]
    fn none_and_wide_ints_do_not_marshal_in_responses() {
        let none = encode_response(&json!({"a": null})).unwrap_err();
        assert_eq!(
            none.to_string(),
            "TypeError: cannot marshal None unless allow_none is enabled"
        );
        let wide = encode_response(&json!(1_i64 << 40)).unwrap_err();
        assert_eq!(wide.exception, "OverflowError");
        assert!(encode_call("m", &[Value::Null, json!(1_i64 << 40)]).contains("<nil/>"));
    }

    #[test]
    fn control_characters_are_dropped_like_odoo_does() {
        let body = encode_response(&json!("a\u{1}b\tc")).unwrap();
        assert!(body.contains("<string>ab\tc</string>"));
    }

    #[test]
    fn syntax_errors_read_like_expat() {
        let err = decode_response(b"").unwrap_err();
        assert_eq!(err.to_string(), "no element found: line 1, column 0");
        let err = decode_response(b"<a><b></a>").unwrap_err();
        assert_eq!(err.message, "mismatched tag");
        let err = decode_response(b"<a/>junk").unwrap_err();
        assert_eq!(err.message, "junk after document element");
        let err = decode_call(b"<methodCall><methodName>x</methodName><params><param><value><boolean>2</boolean></value></param></params></methodCall>").unwrap_err();
        assert_eq!(
            (err.exception, err.message.as_str()),
            ("TypeError", "bad boolean value")
        );
    }
}
