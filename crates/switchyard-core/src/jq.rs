//! jq programs (through the `jaq` crates): compiled once when the configuration is loaded,
//! so a syntax error is a configuration error with its line, then run per event.
//!
//! A program sees the event as `.` and may read the named variables it was compiled with
//! (for example `$headers` in a webhook mapping).

use jaq_core::load::{Arena, File, Loader};
use jaq_core::{Compiler, Ctx, Vars, data, unwrap_valr};
use jaq_json::Val;
use serde_json::Value;
use std::fmt;
use std::sync::Arc;

type Filter = jaq_core::Filter<data::JustLut<Val>>;

/// A compiled jq program.
#[derive(Clone)]
pub struct Jq {
    code: Arc<str>,
    vars: usize,
    filter: Arc<Filter>,
}

impl fmt::Debug for Jq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Jq({:?})", self.code)
    }
}

impl PartialEq for Jq {
    fn eq(&self, other: &Self) -> bool {
        self.code == other.code
    }
}

impl Jq {
    /// Compiles `code`; `vars` are the names (with `$`) the program may use.
    pub fn compile(code: &str, vars: &[&str]) -> Result<Jq, String> {
        let defs = jaq_core::defs()
            .chain(jaq_std::defs())
            .chain(jaq_json::defs());
        let funs = jaq_core::funs()
            .chain(jaq_std::funs())
            .chain(jaq_json::funs());
        let loader = Loader::new(defs);
        let arena = Arena::default();
        let modules = loader
            .load(&arena, File { code, path: () })
            .map_err(|errs| format!("jq syntax error in `{code}`: {}", describe(&errs)))?;
        let filter = Compiler::default()
            .with_funs(funs)
            .with_global_vars(vars.iter().copied())
            .compile(modules)
            .map_err(|errs| format!("jq error in `{code}`: {}", describe(&errs)))?;
        Ok(Jq {
            code: Arc::from(code),
            vars: vars.len(),
            filter: Arc::new(filter),
        })
    }

    pub fn code(&self) -> &str {
        &self.code
    }

    /// Every output of the program on `input`, with `vars` in the order they were declared.
    pub fn run(&self, input: &Value, vars: &[Value]) -> Result<Vec<Value>, String> {
        self.run_prepared(&Prepared::new(input)?, vars)
    }

    /// Like [`Jq::run`] on an input converted once for several programs.
    pub fn run_prepared(&self, input: &Prepared, vars: &[Value]) -> Result<Vec<Value>, String> {
        assert_eq!(
            vars.len(),
            self.vars,
            "jq variables must match their declaration"
        );
        let input = input.0.clone();
        let vars = Vars::new(vars.iter().map(to_val).collect::<Result<Vec<_>, _>>()?);
        let ctx = Ctx::<data::JustLut<Val>>::new(&self.filter.lut, vars);
        self.filter
            .id
            .run((ctx, input))
            .map(unwrap_valr)
            .map(|r| match r {
                Ok(v) => from_val(&v),
                Err(e) => Err(format!("`{}` failed: {e}", self.code)),
            })
            .collect()
    }

    /// The first output, or `None` when the program yields nothing or `null`.
    pub fn first(&self, input: &Value, vars: &[Value]) -> Result<Option<Value>, String> {
        Ok(self.run(input, vars)?.into_iter().find(|v| !v.is_null()))
    }
}

/// An input converted to jq's value type once, to run several programs over it.
pub struct Prepared(Val);

impl Prepared {
    pub fn new(v: &Value) -> Result<Prepared, String> {
        to_val(v).map(Prepared)
    }
}

fn to_val(v: &Value) -> Result<Val, String> {
    serde_json::from_value(v.clone()).map_err(|e| format!("value not representable in jq: {e}"))
}

fn from_val(v: &Val) -> Result<Value, String> {
    serde_json::from_str(&v.to_string()).map_err(|e| format!("jq produced a non-JSON value: {e}"))
}

fn describe<T: fmt::Debug>(errs: &T) -> String {
    let s = format!("{errs:?}");
    if s.len() > 300 {
        format!(
            "{}…",
            &s[..s.char_indices().nth(300).map_or(s.len(), |(i, _)| i)]
        )
    } else {
        s
    }
}

/// A jq value as the text of a key or attribute: strings as they are, numbers and booleans
/// in their JSON form; anything else is refused.
pub fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn runs_paths_and_variables() {
        let jq = Jq::compile(".data.order", &[]).unwrap();
        let ev = json!({"data": {"order": "WH/OUT/00001", "n": 3}});
        assert_eq!(jq.first(&ev, &[]).unwrap(), Some(json!("WH/OUT/00001")));
        let jq = Jq::compile(
            r#""shop.order." + ($headers["x-topic"] | split("/") | .[1])"#,
            &["$headers"],
        )
        .unwrap();
        let out = jq
            .first(&ev, &[json!({"x-topic": "orders/create"})])
            .unwrap();
        assert_eq!(out, Some(json!("shop.order.create")));
        let jq = Jq::compile(".data.missing", &[]).unwrap();
        assert_eq!(jq.first(&ev, &[]).unwrap(), None);
        let jq = Jq::compile(".data.n | tostring", &[]).unwrap();
        assert_eq!(jq.first(&ev, &[]).unwrap(), Some(json!("3")));
    }

    #[test]
    fn syntax_and_runtime_errors_are_reported() {
        assert!(Jq::compile(".data.[", &[]).unwrap_err().contains("jq"));
        assert!(
            Jq::compile("$nope", &[]).is_err(),
            "undeclared variables are refused"
        );
        let jq = Jq::compile(".data.n + \"x\"", &[]).unwrap();
        assert!(jq.run(&json!({"data": {"n": 1}}), &[]).is_err());
    }

    #[test]
    fn unicode_survives() {
        let jq = Jq::compile(".k", &[]).unwrap();
        assert_eq!(
            jq.first(&json!({"k": "Zürich/Ω-7"}), &[]).unwrap(),
            Some(json!("Zürich/Ω-7"))
        );
    }
}
