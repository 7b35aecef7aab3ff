//! Odoo's exceptions on the wire, both sides: how Odoo 18 turns a Python exception into an
//! XML-RPC fault code (the simulator uses this), and the client's one error type,
//! [`OdooError`], with the one place that decides what a failure means for a delivery
//! ([`OdooError::class`]).
//!
//! What the recordings taught (testdata/odoo):
//! - `/xmlrpc/2` fault codes: 2 UserError family, 3 AccessDenied, 4 AccessError, 1
//!   everything else with the whole traceback as fault string; the class is on its last
//!   exception line. JSON-RPC names the class directly in `error.data.name`.
//! - **None after commit** (01_33, 08_12): a public method that returns None makes Odoo's
//!   XML-RPC marshaller raise `TypeError: cannot marshal None unless allow_none is enabled`
//!   *after* the transaction committed. The change is applied, so that exact fault is a
//!   success ([`none_after_commit`]), never a retry. JSON-RPC answers the same call with an
//!   envelope without `result` (02_10, 05_04), also a success.
//! - Serialization failures reach the client only after Odoo's own retry loop (5 tries,
//!   16-27 s, 07_23 and 09_05): transient, and nothing was committed.
//! - An unknown database is `psycopg2.OperationalError … database "x" does not exist`
//!   (01_05, 01_35, 02_23): a configuration error that no retry fixes but an operator does, so
//!   it is classed `Credential` and pauses the destination instead of dead-lettering every
//!   event. Other `OperationalError`s (server down, connection lost) are transient.

use chrono::Duration;
use serde_json::Value;
use switchyard_core::delivery::{ErrorClass, Failure, classify};

use crate::xmlrpc::{CANNOT_MARSHAL_NONE, Fault, FaultCode};

/// Odoo's XML-RPC fault codes (`odoo/addons/base/controllers/rpc.py`).
pub const FAULT_APPLICATION_ERROR: i64 = 1;
pub const FAULT_WARNING: i64 = 2;
pub const FAULT_ACCESS_DENIED: i64 = 3;
pub const FAULT_ACCESS_ERROR: i64 = 4;

/// `odoo.exceptions` classes that derive from `UserError` without a code of their own
/// (`RedirectWarning` is not a `UserError` but Odoo maps it the same way). `CacheMiss`
/// derives from `KeyError`, so it is code 1 like any other internal error.
const USER_ERROR_FAMILY: [&str; 5] = [
    "UserError",
    "ValidationError",
    "MissingError",
    "RedirectWarning",
    "LockError",
];

/// The class name inside `odoo.exceptions`, for a class path (`odoo.exceptions.UserError`)
/// or a bare name (`UserError`); None for any other module (`builtins.ValueError`).
fn odoo_exception_name(exception: &str) -> Option<&str> {
    match exception.rsplit_once('.') {
        Some(("odoo.exceptions", name)) => Some(name),
        Some(_) => None,
        None => Some(exception),
    }
}

/// Python class path → XML-RPC fault code as Odoo 18 maps it on `/xmlrpc/2`
/// (`xmlrpc_handle_exception_int`).
pub fn xmlrpc_fault_code(exception: &str) -> i64 {
    match odoo_exception_name(exception) {
        Some("RedirectWarning") => FAULT_WARNING,
        Some("AccessError") => FAULT_ACCESS_ERROR,
        Some("AccessDenied") => FAULT_ACCESS_DENIED,
        Some(name) if USER_ERROR_FAMILY.contains(&name) => FAULT_WARNING,
        _ => FAULT_APPLICATION_ERROR,
    }
}

/// The string fault code of the legacy `/xmlrpc/*` endpoints (`xmlrpc_handle_exception_string`):
/// `"warning -- MissingError\n\n<msg>"` (01_44), `"AccessDenied"`, or for an internal error
/// the message itself (`str(e)`; the traceback then goes in the fault string). For the
/// warnings the fault string is empty; for AccessDenied it is the message.
pub fn legacy_fault_code(exception: &str, message: &str) -> String {
    match odoo_exception_name(exception) {
        Some("RedirectWarning") => format!("warning -- Warning\n\n{message}"),
        Some("MissingError") => format!("warning -- MissingError\n\n{message}"),
        Some("AccessError") => format!("warning -- AccessError\n\n{message}"),
        Some("AccessDenied") => "AccessDenied".into(),
        Some(name) if USER_ERROR_FAMILY.contains(&name) => {
            format!("warning -- UserError\n\n{message}")
        }
        _ => message.into(),
    }
}

/// The exception at the end of a Python traceback: its class path (bare builtins get the
/// `builtins.` prefix JSON-RPC uses) and its message (which may span lines).
pub fn exception_from_traceback(traceback: &str) -> Option<(String, String)> {
    let lines: Vec<&str> = traceback.lines().collect();
    let after_last_frame = lines
        .iter()
        .rposition(|l| l.starts_with("  File "))
        .map_or(0, |i| i + 1);
    let start = after_last_frame
        + lines[after_last_frame..]
            .iter()
            .position(|l| !l.is_empty() && !l.starts_with(char::is_whitespace))?;
    let (class, first) = match lines[start].split_once(':') {
        Some((class, rest)) => (class, rest.strip_prefix(' ').unwrap_or(rest)),
        None => (lines[start], ""),
    };
    if class.is_empty() || class.contains(char::is_whitespace) {
        return None;
    }
    let class = if class.contains('.') {
        class.to_owned()
    } else {
        format!("builtins.{class}")
    };
    let mut message = first.to_owned();
    for line in &lines[start + 1..] {
        message.push('\n');
        message.push_str(line);
    }
    Some((class, message.trim_end().to_owned()))
}

/// Whether a fault is Odoo failing to marshal a None result, after the method's transaction
/// committed: the call succeeded.
pub fn none_after_commit(fault: &Fault) -> bool {
    fault.code == FaultCode::Int(FAULT_APPLICATION_ERROR)
        && exception_from_traceback(&fault.string).is_some_and(|(class, message)| {
            class == "builtins.TypeError" && message == CANNOT_MARSHAL_NONE
        })
}

/// Everything that can go wrong talking to Odoo, in the reader's terms.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OdooError {
    /// Odoo raised an exception: an XML-RPC fault, a JSON-RPC `error`, a JSON-2 error body.
    #[error("Odoo raised {}: {message}", exception.as_deref().unwrap_or("an error"))]
    Fault {
        /// Python class path when known (`odoo.exceptions.UserError`, `builtins.ValueError`,
        /// `psycopg2.errors.SerializationFailure`). XML-RPC codes 2-4 do not tell it.
        exception: Option<String>,
        message: String,
        /// The XML-RPC fault code (`/xmlrpc/2`); None for JSON-RPC, JSON-2 and legacy codes.
        fault_code: Option<i64>,
        /// Odoo's traceback (XML-RPC code 1, JSON-RPC `data.debug`).
        traceback: Option<String>,
    },
    /// The web session is gone (JSON-RPC code 100, `odoo.http.SessionExpiredException`).
    #[error("Odoo session expired: {message}")]
    SessionExpired { message: String },
    /// `common.authenticate` answered `false`.
    #[error("wrong login or password")]
    WrongCredentials,
    /// An HTTP error without an RPC envelope: 400 `Invalid JSON data`, 405, 413, 429, 5xx.
    #[error("Odoo answered HTTP {status}: {body}")]
    Http {
        status: u16,
        body: String,
        /// The `Retry-After` of a 429/503, read against the clock when it arrived.
        retry_after: Option<Duration>,
    },
    /// A redirect, never followed: Odoo 18 sends JSON-2 requests to `/web/login` (03_10).
    #[error("Odoo redirected ({status}) to {}", location.as_deref().unwrap_or("nowhere"))]
    Redirect {
        status: u16,
        location: Option<String>,
    },
    /// No answer within the request timeout. The call may still have been applied.
    #[error("Odoo did not answer in time")]
    Timeout,
    /// Could not connect or the connection broke.
    #[error("connection to Odoo failed: {0}")]
    Connection(String),
    /// An answer that is not the protocol's (broken XML/JSON, a proxy's page with 200).
    #[error("undecodable answer from Odoo: {0}")]
    Undecodable(String),
    /// A call this client cannot express (JSON-2 needs named arguments, a value XML-RPC
    /// cannot carry). Nothing was sent.
    #[error("cannot send this call: {0}")]
    Unsupported(String),
}

impl OdooError {
    /// A `/xmlrpc/2` fault (integer code) or a legacy one (string code).
    pub fn from_fault(fault: Fault) -> OdooError {
        match fault.code {
            FaultCode::Int(code) => {
                let parsed = (code == FAULT_APPLICATION_ERROR)
                    .then(|| exception_from_traceback(&fault.string))
                    .flatten();
                let (exception, message, traceback) = match parsed {
                    Some((class, message)) => (Some(class), message, Some(fault.string)),
                    None => (None, fault.string, None),
                };
                OdooError::Fault {
                    exception,
                    message,
                    fault_code: Some(code),
                    traceback,
                }
            }
            FaultCode::Str(code) => legacy_fault(code, fault.string),
        }
    }

    /// What this failure means for a delivery: retry later, pause the destination, or
    /// dead-letter. The Odoo destination calls this and nothing else.
    pub fn class(&self) -> ErrorClass {
        match self {
            OdooError::Fault {
                exception: Some(name),
                message,
                ..
            } => class_of_exception(name, message),
            OdooError::Fault {
                fault_code: Some(FAULT_ACCESS_DENIED),
                ..
            } => ErrorClass::Credential,
            OdooError::Fault { .. } => ErrorClass::Permanent,
            OdooError::SessionExpired { .. } | OdooError::WrongCredentials => {
                ErrorClass::Credential
            }
            OdooError::Http { status, .. } => classify(Failure::Status(*status)),
            // A redirect is a configuration problem (wrong protocol or URL): pause, do not
            // dead-letter every event until someone notices.
            OdooError::Redirect { .. } => ErrorClass::Credential,
            OdooError::Timeout => classify(Failure::Timeout),
            OdooError::Connection(_) => classify(Failure::Connect),
            OdooError::Undecodable(_) => classify(Failure::Protocol),
            OdooError::Unsupported(_) => ErrorClass::Permanent,
        }
    }

    /// The Python class path, when Odoo named one.
    pub fn exception(&self) -> Option<&str> {
        match self {
            OdooError::Fault { exception, .. } => exception.as_deref(),
            OdooError::SessionExpired { .. } => Some(SESSION_EXPIRED),
            _ => None,
        }
    }

    /// The server's own request to wait (`Retry-After`), if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            OdooError::Http { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Whether a fresh login may cure this: the password or key was refused on a call
    /// (not on `authenticate` itself), or the session expired.
    pub fn wants_reauthentication(&self) -> bool {
        matches!(self, OdooError::SessionExpired { .. })
            || self.exception() == Some(ACCESS_DENIED)
            || matches!(
                self,
                OdooError::Fault {
                    fault_code: Some(FAULT_ACCESS_DENIED),
                    ..
                }
            )
    }
}

pub const ACCESS_DENIED: &str = "odoo.exceptions.AccessDenied";
pub const SESSION_EXPIRED: &str = "odoo.http.SessionExpiredException";
/// JSON-2's answer to a wrong, expired or revoked API key (HTTP 401).
pub const UNAUTHORIZED: &str = "werkzeug.exceptions.Unauthorized";

/// Legacy `/xmlrpc/*` faults: the class hides in the string code.
fn legacy_fault(code: String, string: String) -> OdooError {
    let (exception, message, traceback) = if let Some(rest) = code.strip_prefix("warning -- ") {
        let (name, message) = rest.split_once("\n\n").unwrap_or((rest, ""));
        let name = if name == "Warning" {
            "RedirectWarning"
        } else {
            name
        };
        (
            Some(format!("odoo.exceptions.{name}")),
            message.to_owned(),
            None,
        )
    } else if code == "AccessDenied" {
        (Some(ACCESS_DENIED.to_owned()), string, None)
    } else {
        let class = exception_from_traceback(&string).map(|(class, _)| class);
        (class, code, Some(string).filter(|s| !s.is_empty()))
    };
    OdooError::Fault {
        exception,
        message,
        fault_code: None,
        traceback,
    }
}

/// Transient: the database refused for now (serialization, deadlock, lock, connection).
const TRANSIENT_EXCEPTIONS: [&str; 7] = [
    "psycopg2.errors.SerializationFailure",
    "psycopg2.extensions.TransactionRollbackError",
    "psycopg2.errors.DeadlockDetected",
    "psycopg2.errors.LockNotAvailable",
    "psycopg2.InterfaceError",
    "odoo.exceptions.ConcurrencyError",
    "odoo.exceptions.LockError",
];

/// The class of a named Python exception. Anything not listed is permanent: Odoo looked at
/// this payload and refused it, and would again.
pub fn class_of_exception(exception: &str, message: &str) -> ErrorClass {
    match exception {
        ACCESS_DENIED | SESSION_EXPIRED | UNAUTHORIZED => ErrorClass::Credential,
        name if TRANSIENT_EXCEPTIONS.contains(&name) => ErrorClass::Transient,
        "psycopg2.OperationalError" if message.contains("does not exist") => ErrorClass::Credential,
        "psycopg2.OperationalError" => ErrorClass::Transient,
        _ => ErrorClass::Permanent,
    }
}

/// A JSON-RPC `error` member (`{code, message, data: {name, debug, message, arguments,
/// context}}`). Code 100 is the session; everything else (code 200) is an exception.
pub fn from_jsonrpc_error(error: &Value) -> OdooError {
    let data = error.get("data");
    let field = |v: Option<&Value>, key: &str| {
        v.and_then(|v| v.get(key))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let name = field(data, "name");
    let message = field(data, "message")
        .or_else(|| field(Some(error), "message"))
        .unwrap_or_default();
    if error.get("code").and_then(Value::as_i64) == Some(100)
        || name.as_deref() == Some(SESSION_EXPIRED)
    {
        return OdooError::SessionExpired { message };
    }
    OdooError::Fault {
        exception: name,
        message,
        fault_code: None,
        traceback: field(data, "debug"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_codes_follow_odoo_18() {
        let rows = [
            ("odoo.exceptions.UserError", 2),
            ("odoo.exceptions.ValidationError", 2),
            ("odoo.exceptions.MissingError", 2),
            ("odoo.exceptions.RedirectWarning", 2),
            ("odoo.exceptions.AccessDenied", 3),
            ("AccessDenied", 3),
            ("odoo.exceptions.AccessError", 4),
            ("odoo.exceptions.CacheMiss", 1),
            ("builtins.ValueError", 1),
            ("psycopg2.errors.SerializationFailure", 1),
        ];
        for (exception, code) in rows {
            assert_eq!(xmlrpc_fault_code(exception), code, "{exception}");
        }
    }

    #[test]
    fn legacy_codes_follow_odoo_18() {
        assert_eq!(
            legacy_fault_code("odoo.exceptions.MissingError", "gone"),
            "warning -- MissingError\n\ngone"
        );
        assert_eq!(
            legacy_fault_code("odoo.exceptions.ValidationError", "bad"),
            "warning -- UserError\n\nbad"
        );
        assert_eq!(
            legacy_fault_code("odoo.exceptions.RedirectWarning", "go"),
            "warning -- Warning\n\ngo"
        );
        assert_eq!(
            legacy_fault_code("odoo.exceptions.AccessDenied", "Access Denied"),
            "AccessDenied"
        );
        assert_eq!(legacy_fault_code("builtins.KeyError", "'x'"), "'x'");
    }

    #[test]
    fn traceback_last_exception_wins() {
        let tb = "Traceback (most recent call last):\n  File \"a.py\", line 1, in f\n    x()\n\
                  psycopg2.OperationalError: connection failed: FATAL:  database \"x\" does not exist\n\n";
        let (class, message) = exception_from_traceback(tb).unwrap();
        assert_eq!(class, "psycopg2.OperationalError");
        assert_eq!(
            message,
            "connection failed: FATAL:  database \"x\" does not exist"
        );
        assert_eq!(class_of_exception(&class, &message), ErrorClass::Credential);
        let (class, _) =
            exception_from_traceback("Traceback:\n  File \"x\"\nKeyError: 'x'\n").unwrap();
        assert_eq!(class, "builtins.KeyError");
    }
}
