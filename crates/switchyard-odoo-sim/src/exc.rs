//! Python exceptions as the simulator raises them: the class path Odoo reports (JSON-RPC
//! `data.name`, the last traceback line of an XML-RPC fault 1) and the message.

use serde_json::Value;

/// An exception raised by a simulated Odoo call. The wire layers turn it into an XML-RPC
/// fault or a JSON-RPC error envelope exactly as Odoo 18 does.
#[derive(Debug, Clone, PartialEq)]
pub struct Exc {
    /// Python class path, e.g. `odoo.exceptions.UserError`, `builtins.ValueError`.
    pub name: String,
    pub message: String,
    /// The exception's `context` attribute (JSON-RPC `data.context`, `{}` when unset):
    /// base_automation adds the failing rule to exceptions raised by its actions (06_20).
    pub context: Option<Value>,
}

pub type OResult<T> = Result<T, Exc>;

impl Exc {
    pub fn new(name: &str, message: impl Into<String>) -> Exc {
        Exc {
            name: name.to_string(),
            message: message.into(),
            context: None,
        }
    }
    pub fn with_context(mut self, context: Value) -> Exc {
        self.context = Some(context);
        self
    }
    pub fn user(message: impl Into<String>) -> Exc {
        Exc::new("odoo.exceptions.UserError", message)
    }
    pub fn validation(message: impl Into<String>) -> Exc {
        Exc::new("odoo.exceptions.ValidationError", message)
    }
    /// `MissingError` as Odoo words it for the first missing id.
    pub fn missing(model: &str, id: i64, uid: i64) -> Exc {
        Exc::new(
            "odoo.exceptions.MissingError",
            format!(
                "Record does not exist or has been deleted.\n(Record: {model}({id},), User: {uid})"
            ),
        )
    }
    pub fn access(message: impl Into<String>) -> Exc {
        Exc::new("odoo.exceptions.AccessError", message)
    }
    pub fn access_denied() -> Exc {
        Exc::new("odoo.exceptions.AccessDenied", "Access Denied")
    }
    pub fn value(message: impl Into<String>) -> Exc {
        Exc::new("builtins.ValueError", message)
    }
    pub fn type_error(message: impl Into<String>) -> Exc {
        Exc::new("builtins.TypeError", message)
    }
    pub fn attribute(message: impl Into<String>) -> Exc {
        Exc::new("builtins.AttributeError", message)
    }
    pub fn key(message: impl Into<String>) -> Exc {
        Exc::new("builtins.KeyError", message)
    }
    pub fn serialization() -> Exc {
        Exc::new(
            "psycopg2.errors.SerializationFailure",
            "could not serialize access due to concurrent update\n",
        )
    }
    pub fn unknown_db(db: &str) -> Exc {
        Exc::new(
            "psycopg2.OperationalError",
            format!(
                "connection to server at \"127.0.0.1\", port 5432 failed: FATAL:  database \"{db}\" does not exist\n"
            ),
        )
    }
    pub fn unknown_field_write(model: &str, field: &str) -> Exc {
        Exc::value(format!("Invalid field '{field}' on model '{model}'"))
    }

    /// The class name without its module (`UserError`).
    pub fn short_name(&self) -> &str {
        self.name.rsplit('.').next().unwrap_or(&self.name)
    }

    /// Python's `repr`-like rendering of the exception arguments as Odoo puts them in
    /// JSON-RPC `data.arguments`.
    pub fn arguments(&self) -> Value {
        if self.name == "builtins.KeyError" {
            return Value::Array(vec![Value::String(self.message.clone())]);
        }
        Value::Array(vec![Value::String(self.message.clone())])
    }

    /// The text after `ClassName: ` on a traceback's last line (KeyError quotes its key).
    pub fn traceback_message(&self) -> String {
        if self.name == "builtins.KeyError" {
            format!("'{}'", self.message)
        } else {
            self.message.clone()
        }
    }

    /// How the exception class is printed on a traceback's last line: builtins lose their
    /// module, everything else keeps its path.
    pub fn traceback_class(&self) -> &str {
        self.name.strip_prefix("builtins.").unwrap_or(&self.name)
    }

    /// A traceback shaped like Odoo's (the frames are illustrative, the last line exact).
    pub fn traceback(&self, entry: &str) -> String {
        let mut t = String::from("Traceback (most recent call last):\n");
        for (file, line, func, code) in [
            (entry, 165, "xmlrpc_2", "response = self._xmlrpc(service)"),
            (
                "/opt/odoo/odoo/service/model.py",
                72,
                "execute_cr",
                "result = retrying(partial(odoo.api.call_kw, recs, method, args, kw), env)",
            ),
            (
                "/opt/odoo/odoo/api.py",
                533,
                "call_kw",
                "result = getattr(recs, name)(*args, **kwargs)",
            ),
        ] {
            t.push_str(&format!(
                "  File \"{file}\", line {line}, in {func}\n    {code}\n"
            ));
        }
        t.push_str(&format!(
            "{}: {}\n",
            self.traceback_class(),
            self.traceback_message()
        ));
        t
    }
}
