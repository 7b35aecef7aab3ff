//! CloudEvents 1.0: the one event shape every source is turned into.
//!
//! This module owns the attribute rules of the core specification and the JSON event
//! format (structured and batch). The HTTP binding (which mode a request uses, `ce-*`
//! headers) lives with the HTTP server; it builds a [`CloudEvent`] through
//! [`CloudEvent::from_parts`] so every mode is validated by the same rules.
//!
//! It must never accept an event that breaks a MUST of the specification, and never drop
//! an attribute it does not know: unknown extensions are kept as they came.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, FixedOffset};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

pub const SPEC_VERSION: &str = "1.0";

/// Names reserved by the specification or the JSON format; never extensions.
const CORE: [&str; 8] = [
    "id",
    "source",
    "specversion",
    "type",
    "datacontenttype",
    "dataschema",
    "subject",
    "time",
];

/// A validated CloudEvent.
#[derive(Debug, Clone, PartialEq)]
pub struct CloudEvent {
    pub id: String,
    pub source: String,
    pub ty: String,
    pub subject: Option<String>,
    /// The `time` attribute exactly as sent (validated RFC 3339).
    pub time: Option<String>,
    pub datacontenttype: Option<String>,
    pub dataschema: Option<String>,
    /// Extension attributes, kept as sent (strings, numbers or booleans).
    pub extensions: BTreeMap<String, Value>,
    pub data: Option<Data>,
}

/// The event payload.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    /// JSON data (`datacontenttype` absent or a JSON media type).
    Json(Value),
    /// Text data of a non-JSON media type.
    Text(String),
    /// Opaque bytes (`data_base64`, or a binary-mode body that is not UTF-8 text).
    Binary(Vec<u8>),
}

/// One rule an event breaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// The attribute (or `data` / `data_base64`) the problem is about.
    pub field: String,
    pub detail: String,
}

/// A rule an event bends but does not break (kept, reported to the sender).
pub type Warning = Violation;

fn violation(field: &str, detail: impl Into<String>) -> Violation {
    Violation {
        field: field.to_string(),
        detail: detail.into(),
    }
}

/// Attribute values as they arrive, before validation: from a JSON object (structured
/// mode) or from `ce-*` headers (binary mode, always strings).
#[derive(Debug, Default)]
pub struct RawAttributes {
    pub attrs: BTreeMap<String, Value>,
}

/// The outcome of validating one event.
#[derive(Debug)]
pub struct Parsed {
    pub event: CloudEvent,
    pub warnings: Vec<Warning>,
}

impl CloudEvent {
    /// Builds an event from raw attributes and optional data, checking every attribute rule.
    /// All violations are reported, not only the first.
    pub fn from_parts(raw: RawAttributes, data: Option<Data>) -> Result<Parsed, Vec<Violation>> {
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let mut attrs = raw.attrs;
        // JSON `null` is the same as an absent attribute (JSON format, type system mapping).
        attrs.retain(|_, v| !v.is_null());

        match attrs.remove("specversion") {
            None => errors.push(violation("specversion", "required attribute is missing")),
            Some(Value::String(s)) if s == SPEC_VERSION => {}
            Some(Value::String(s)) => errors.push(violation(
                "specversion",
                format!("unsupported specversion \"{s}\"; only \"1.0\" is accepted"),
            )),
            Some(_) => errors.push(violation("specversion", "must be a string")),
        }
        let id = required_string(&mut attrs, "id", &mut errors);
        let source = required_string(&mut attrs, "source", &mut errors);
        if let Some(s) = &source
            && let Err(d) = check_uri_reference(s)
        {
            errors.push(violation("source", d));
        }
        let ty = required_string(&mut attrs, "type", &mut errors);
        let subject = optional_string(&mut attrs, "subject", &mut errors);
        let time = optional_string(&mut attrs, "time", &mut errors);
        if let Some(t) = &time
            && (!t.is_ascii() || DateTime::<FixedOffset>::parse_from_rfc3339(t).is_err())
        {
            errors.push(violation(
                "time",
                format!("\"{t}\" is not an RFC 3339 timestamp"),
            ));
        }
        let datacontenttype = optional_string(&mut attrs, "datacontenttype", &mut errors);
        if let Some(ct) = &datacontenttype
            && !is_media_type(ct)
        {
            errors.push(violation(
                "datacontenttype",
                format!("\"{ct}\" is not an RFC 2046 media type (type/subtype)"),
            ));
        }
        let dataschema = optional_string(&mut attrs, "dataschema", &mut errors);
        if let Some(s) = &dataschema
            && let Err(d) = check_absolute_uri(s)
        {
            errors.push(violation("dataschema", d));
        }

        let mut extensions = BTreeMap::new();
        for (name, value) in attrs {
            if !is_attribute_name(&name) {
                errors.push(violation(
                    &name,
                    "attribute names must be lower-case letters a-z and digits 0-9",
                ));
                continue;
            }
            if name.len() > 20 {
                warnings.push(violation(
                    &name,
                    "attribute names should not exceed 20 characters",
                ));
            }
            match &value {
                Value::String(s) => {
                    if let Some(c) = disallowed_char(s) {
                        errors.push(violation(&name, disallowed_detail(c)));
                    }
                }
                Value::Bool(_) => {}
                Value::Number(n) if n.as_i64().is_some_and(|i| i32::try_from(i).is_ok()) => {}
                Value::Number(_) => errors.push(violation(
                    &name,
                    "numeric attributes must be 32-bit signed integers",
                )),
                _ => errors.push(violation(
                    &name,
                    "extension values must be a string, an integer or a boolean",
                )),
            }
            extensions.insert(name, value);
        }

        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Parsed {
            event: CloudEvent {
                id: id.unwrap_or_default(),
                source: source.unwrap_or_default(),
                ty: ty.unwrap_or_default(),
                subject,
                time,
                datacontenttype,
                dataschema,
                extensions,
                data,
            },
            warnings,
        })
    }

    /// Parses one event in the JSON event format (structured mode, or one batch member).
    pub fn from_json(value: Value) -> Result<Parsed, Vec<Violation>> {
        let Value::Object(mut obj) = value else {
            return Err(vec![violation(
                "",
                "a CloudEvent in JSON format must be a JSON object",
            )]);
        };
        // `"data": null` is an explicit null payload, distinct from no `data` (JSON format
        // 3.1.1); `data` is not an attribute, so the null-means-unset rule does not apply.
        let data = obj.remove("data");
        let data_b64 = obj.remove("data_base64").filter(|v| !v.is_null());
        let ct = obj
            .get("datacontenttype")
            .and_then(Value::as_str)
            .map(str::to_string);
        let mut data_errors = Vec::new();
        let data = match (data, data_b64) {
            (Some(_), Some(_)) => {
                data_errors.push(violation(
                    "data_base64",
                    "\"data\" and \"data_base64\" must not both be present",
                ));
                None
            }
            (None, Some(Value::String(s))) => match B64.decode(s.as_bytes()) {
                Ok(bytes) => Some(Data::Binary(bytes)),
                Err(e) => {
                    data_errors.push(violation("data_base64", format!("not base64: {e}")));
                    None
                }
            },
            (None, Some(_)) => {
                data_errors.push(violation("data_base64", "must be a base64 string"));
                None
            }
            (Some(Value::String(s)), None) if !is_json_media_type(ct.as_deref()) => {
                Some(Data::Text(s))
            }
            (Some(v), None) => Some(Data::Json(v)),
            (None, None) => None,
        };
        let parsed = CloudEvent::from_parts(
            RawAttributes {
                attrs: obj.into_iter().collect(),
            },
            data,
        );
        // Every violation is reported: those of the attributes, then those of the data.
        match parsed {
            Ok(_) if data_errors.is_empty() => parsed,
            Ok(_) => Err(data_errors),
            Err(mut errors) => {
                errors.extend(data_errors);
                Err(errors)
            }
        }
    }

    /// Rebuilds an event written by [`CloudEvent::to_json`] after it was validated, without
    /// validating it again: what was accepted once stays readable even if the rules tighten.
    /// `None` only if the JSON is not an envelope at all.
    pub fn from_stored_json(value: Value) -> Option<CloudEvent> {
        let Value::Object(mut obj) = value else {
            return None;
        };
        let mut take = |k: &str| match obj.remove(k) {
            Some(Value::String(s)) => Some(s),
            _ => None,
        };
        let id = take("id")?;
        let source = take("source")?;
        let ty = take("type")?;
        let subject = take("subject");
        let time = take("time");
        let datacontenttype = take("datacontenttype");
        let dataschema = take("dataschema");
        obj.remove("specversion");
        let data = match (obj.remove("data"), obj.remove("data_base64")) {
            (_, Some(Value::String(b))) => Some(Data::Binary(B64.decode(b.as_bytes()).ok()?)),
            (Some(Value::String(s)), _) if !is_json_media_type(datacontenttype.as_deref()) => {
                Some(Data::Text(s))
            }
            (Some(v), _) => Some(Data::Json(v)),
            (None, _) => None,
        };
        Some(CloudEvent {
            id,
            source,
            ty,
            subject,
            time,
            datacontenttype,
            dataschema,
            extensions: obj.into_iter().collect(),
            data,
        })
    }

    /// The event in the JSON event format (structured mode). Round-trips through
    /// [`CloudEvent::from_json`] and [`CloudEvent::from_stored_json`].
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("specversion".into(), SPEC_VERSION.into());
        m.insert("id".into(), self.id.clone().into());
        m.insert("source".into(), self.source.clone().into());
        m.insert("type".into(), self.ty.clone().into());
        let opt = [
            ("subject", &self.subject),
            ("time", &self.time),
            ("datacontenttype", &self.datacontenttype),
            ("dataschema", &self.dataschema),
        ];
        for (k, v) in opt {
            if let Some(v) = v {
                m.insert(k.into(), v.clone().into());
            }
        }
        for (k, v) in &self.extensions {
            m.insert(k.clone(), v.clone());
        }
        match &self.data {
            Some(Data::Json(v)) => {
                m.insert("data".into(), v.clone());
            }
            Some(Data::Text(s)) => {
                m.insert("data".into(), s.clone().into());
            }
            Some(Data::Binary(b)) => {
                m.insert("data_base64".into(), B64.encode(b).into());
            }
            None => {}
        }
        Value::Object(m)
    }

    /// The data as JSON when it is JSON (what flows and workflows read).
    pub fn json_data(&self) -> Option<&Value> {
        match &self.data {
            Some(Data::Json(v)) => Some(v),
            _ => None,
        }
    }
}

/// Parses a batch (`application/cloudevents-batch+json`): all or nothing. On failure every
/// invalid member is listed by its index.
pub fn parse_batch(value: Value) -> Result<Vec<Parsed>, Vec<(usize, Vec<Violation>)>> {
    let Value::Array(items) = value else {
        return Err(vec![(
            0,
            vec![violation("", "a CloudEvents batch must be a JSON array")],
        )]);
    };
    let mut ok = Vec::with_capacity(items.len());
    let mut bad = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        match CloudEvent::from_json(item) {
            Ok(p) => ok.push(p),
            Err(v) => bad.push((i, v)),
        }
    }
    if bad.is_empty() { Ok(ok) } else { Err(bad) }
}

/// Whether a `datacontenttype` means JSON data (absent means JSON in the JSON format).
pub fn is_json_media_type(ct: Option<&str>) -> bool {
    let Some(ct) = ct else { return true };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    // JSON format 3.1.1: "its media type, when stripped of parameters, has the form `*/json`
    // or `*/*+json`".
    essence
        .split_once('/')
        .is_some_and(|(_, sub)| sub == "json" || sub.ends_with("+json"))
}

/// Whether a string is a valid CloudEvents attribute name.
pub fn is_attribute_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Whether `name` is a core attribute (not an extension).
pub fn is_core_attribute(name: &str) -> bool {
    CORE.contains(&name)
}

fn required_string(
    attrs: &mut BTreeMap<String, Value>,
    name: &str,
    errors: &mut Vec<Violation>,
) -> Option<String> {
    match attrs.remove(name) {
        None => {
            errors.push(violation(name, "required attribute is missing"));
            None
        }
        Some(Value::String(s)) if s.is_empty() => {
            errors.push(violation(name, "must be a non-empty string"));
            None
        }
        Some(Value::String(s)) => match disallowed_char(&s) {
            Some(c) => {
                errors.push(violation(name, disallowed_detail(c)));
                None
            }
            None => Some(s),
        },
        Some(_) => {
            errors.push(violation(name, "must be a string"));
            None
        }
    }
}

fn optional_string(
    attrs: &mut BTreeMap<String, Value>,
    name: &str,
    errors: &mut Vec<Violation>,
) -> Option<String> {
    match attrs.remove(name) {
        None => None,
        Some(Value::String(s)) if s.is_empty() => {
            errors.push(violation(name, "must not be empty when present"));
            None
        }
        Some(Value::String(s)) => match disallowed_char(&s) {
            Some(c) => {
                errors.push(violation(name, disallowed_detail(c)));
                None
            }
            None => Some(s),
        },
        Some(_) => {
            errors.push(violation(name, "must be a string"));
            None
        }
    }
}

/// A character the core specification's `String` type disallows: the control characters
/// U+0000-U+001F and U+007F-U+009F, and Unicode noncharacters.
fn disallowed_char(s: &str) -> Option<char> {
    s.chars().find(|&c| {
        let n = u32::from(c);
        n <= 0x1F
            || (0x7F..=0x9F).contains(&n)
            || (0xFDD0..=0xFDEF).contains(&n)
            || n & 0xFFFE == 0xFFFE
    })
}

fn disallowed_detail(c: char) -> String {
    format!(
        "contains U+{:04X}; control characters and Unicode noncharacters are not allowed in a CloudEvents String",
        u32::from(c)
    )
}

/// RFC 3986 (section 4.1) URI-reference. Returns whether it has a scheme (is a URI rather
/// than a relative reference).
fn parse_uri_reference(s: &str) -> Result<bool, String> {
    let not = |why: &str| Err(format!("\"{s}\" is not a URI-reference ({why})"));
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-._~:/?#[]@!$&'()*+,;=%".contains(*c)))
    {
        return if c.is_ascii() {
            not(&format!("contains {c:?}; percent-encode it"))
        } else {
            not("non-ASCII characters must be percent-encoded")
        };
    }
    let b = s.as_bytes();
    for (i, _) in s.match_indices('%') {
        if !(b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
            && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
        {
            return not("\"%\" must be followed by two hex digits");
        }
    }
    let (rest, fragment) = s.split_once('#').unwrap_or((s, ""));
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    if fragment.contains(['#', '[', ']']) || query.contains(['[', ']']) {
        return not("\"#\", \"[\" and \"]\" are not allowed in a query or fragment");
    }
    // A colon before the first "/" ends a scheme: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ).
    let first_segment = rest.split('/').next().unwrap_or("");
    let (has_scheme, rest) = match first_segment.split_once(':') {
        Some((scheme, _)) => {
            let mut c = scheme.bytes();
            if !(c.next().is_some_and(|c| c.is_ascii_alphabetic())
                && c.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.')))
            {
                return not("the part before the first \":\" is not a valid scheme");
            }
            (true, &rest[scheme.len() + 1..])
        }
        None => (false, rest),
    };
    let path = match rest.strip_prefix("//") {
        Some(after) => {
            let end = after.find('/').unwrap_or(after.len());
            let authority = &after[..end];
            let (userinfo, hostport) = authority.rsplit_once('@').unwrap_or(("", authority));
            if userinfo.contains(['[', ']']) {
                return not("\"[\" and \"]\" are not allowed in user information");
            }
            let port = if let Some(literal) = hostport.strip_prefix('[') {
                let Some((ip, port)) = literal.split_once(']') else {
                    return not("unterminated IP literal");
                };
                if ip.is_empty() || ip.contains('[') {
                    return not("invalid IP literal");
                }
                match port {
                    "" => "",
                    p => match p.strip_prefix(':') {
                        Some(p) => p,
                        None => return not("invalid authority"),
                    },
                }
            } else {
                let (host, port) = hostport.split_once(':').unwrap_or((hostport, ""));
                if host.contains(['[', ']']) {
                    return not("\"[\" and \"]\" are only allowed around an IP literal");
                }
                port
            };
            if !port.bytes().all(|c| c.is_ascii_digit()) {
                return not("the port must be digits");
            }
            &after[end..]
        }
        None => rest,
    };
    if path.contains(['[', ']']) {
        return not("\"[\" and \"]\" are not allowed in a path");
    }
    Ok(has_scheme)
}

/// RFC 3986 URI-reference.
fn check_uri_reference(s: &str) -> Result<(), String> {
    parse_uri_reference(s).map(|_| ())
}

/// An absolute URI: a URI-reference with a scheme.
fn check_absolute_uri(s: &str) -> Result<(), String> {
    if parse_uri_reference(s)? {
        Ok(())
    } else {
        Err(format!("\"{s}\" is not an absolute URI (no scheme)"))
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
}

/// `type/subtype` with optional `; param=value` parameters (RFC 2045 section 5.1: a value
/// is a token or a quoted-string, which may contain `;`).
fn is_media_type(s: &str) -> bool {
    let (essence, mut rest) = s.split_at(s.find(';').unwrap_or(s.len()));
    let Some((t, sub)) = essence.trim().split_once('/') else {
        return false;
    };
    if !(is_token(t) && is_token(sub)) {
        return false;
    }
    while let Some(param) = rest.strip_prefix(';') {
        let Some((k, v)) = param.split_once('=') else {
            return false;
        };
        if !is_token(k.trim()) {
            return false;
        }
        let v = v.trim_start();
        rest = if let Some(quoted) = v.strip_prefix('"') {
            let mut escaped = false;
            let Some(close) = quoted.char_indices().find_map(|(i, c)| {
                let end = c == '"' && !escaped;
                escaped = c == '\\' && !escaped;
                end.then_some(i)
            }) else {
                return false;
            };
            quoted[close + 1..].trim_start()
        } else {
            let end = v.find(';').unwrap_or(v.len());
            if v[..end].trim().is_empty() {
                return false;
            }
            &v[end..]
        };
    }
    rest.is_empty()
}
