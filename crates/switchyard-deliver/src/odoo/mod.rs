//! The Odoo destination: performs each flow's `[flows.odoo]` operation so that its effect in
//! Odoo happens exactly once, however often the engine retries and whatever answers are lost.
//!
//! Odoo has no idempotency keys, so every operation first **reads** what proves whether it
//! already happened, and only then changes anything:
//!
//! - **upsert / create / write** find the record (by external id through `ir.model.data`, or
//!   by the business-key domain), read the fields the payload sets, and write only what
//!   differs — nothing differs: no call at all (every write bumps `write_date` and invites
//!   serialization failures). A new record with an external id is created by
//!   `load(fields, rows)` with an `id` column, so the record and its external id commit in one
//!   Odoo transaction (never `create` followed by an `ir.model.data` create); a new record
//!   by key with `create`. A retry after a lost answer finds the record and has nothing
//!   left to do.
//! - **call** runs `steps` in order; each method step first runs its `done_when` read and is
//!   skipped when that finds a record; after the method (and the wizards its answer opens)
//!   the same read must hold, and its record is the step's result for later steps
//!   (`$steps.<name>`). The step cursor and the records found so far go back to the engine
//!   with the outcome and are stored with the attempt (`deliveries.cursor`), so the next
//!   attempt resumes at the right step. A timeout or lost answer on a step is resolved by
//!   its read at once, not by blind retry.
//!
//! Traps it defends against (testdata/odoo, group 10): a many2one is always sent as a
//! positive id or `false` — the read shape `[id, "name"]` and numeric strings are turned
//! into the id, `0` is refused (Odoo would silently clear the field); one2many line
//! commands `(1, id)`, `(2, id)`, `(3, id)`, `(4, id)` and `(6, 0, ids)` may name only lines
//! read from the same record (Odoo applies them to another order's lines); one2many fields
//! never go through `load` (a re-import appends the children again), and `(0, 0, vals)` line
//! creations are sent only when the record itself is created.
//!
//! It never retries by itself beyond the one read that resolves a lost answer: what follows
//! a failure is the engine's, from [`OdooError::class`].

use crate::destination::{Destination, Outbound, Outcome};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use switchyard_core::delivery::{ErrorClass, Failure};
use switchyard_core::flows::Flows;
use switchyard_core::odoo::{OdooConnectionConfig, OdooProtocol};
use switchyard_core::odoo_ops::{OdooOperation, OdooOperationKind, OdooRead, OdooStep};
use switchyard_odoo::{CallOptions, OdooClient, OdooConfig, OdooError, Protocol, SearchRead};
use tokio::sync::Mutex;

mod batch;
mod records;

/// One Odoo database as a destination, with the operations of the flows that send to it.
pub struct OdooDestination {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    client: OdooClient,
    /// Flow name → what it does here.
    operations: HashMap<String, Arc<OdooOperation>>,
    /// Model → its fields (`fields_get`), read once.
    fields: Mutex<HashMap<String, Arc<Fields>>>,
    /// The record operations' calls in flight and the deliveries waiting for the next one.
    batches: batch::Batches,
}

/// A field's type and relation, as `fields_get` tells.
#[derive(Debug, Clone)]
struct Field {
    ty: String,
    readonly: bool,
}

type Fields = HashMap<String, Field>;

/// Why an operation stopped.
#[derive(Debug, Clone)]
enum Stop {
    /// Odoo refused or failed; its class decides.
    Odoo { during: String, error: OdooError },
    /// The payload cannot be sent as it is (a trap, an unknown field): dead-letter.
    Payload(String),
    /// Odoo answered, but not with what was asked (load messages, an unproven step).
    Refused(String),
    /// Not attempted now (another delivery for the same record is in the same call, or the
    /// call was interrupted): try again.
    Retry(String),
}

impl Stop {
    fn odoo(during: impl Into<String>) -> impl FnOnce(OdooError) -> Stop {
        let during = during.into();
        move |error| Stop::Odoo { during, error }
    }

    fn class(&self) -> ErrorClass {
        match self {
            Stop::Odoo { error, .. } => error.class(),
            Stop::Payload(_) | Stop::Refused(_) => ErrorClass::Permanent,
            Stop::Retry(_) => ErrorClass::Transient,
        }
    }

    /// The answer may have been lost after Odoo applied the call.
    fn ambiguous(&self) -> bool {
        matches!(
            self,
            Stop::Odoo {
                error: OdooError::Timeout | OdooError::Connection(_) | OdooError::Undecodable(_),
                ..
            }
        )
    }

    fn message(&self) -> String {
        match self {
            Stop::Odoo { during, error } => format!("{during}: {error}"),
            Stop::Payload(m) => format!("payload: {m}"),
            Stop::Refused(m) | Stop::Retry(m) => m.clone(),
        }
    }

    fn outcome(&self) -> Outcome {
        // The class was decided here, once (`OdooError::class`); the engine's table reads
        // it back from a representative failure (see `OdooDestination::classify`).
        let failure = match self.class() {
            ErrorClass::Transient => Failure::Status(503),
            ErrorClass::Credential => Failure::Status(401),
            _ => Failure::Status(422),
        };
        Outcome::Failed {
            failure,
            status: None,
            excerpt: None,
            retry_after: match self {
                Stop::Odoo { error, .. } => error.retry_after(),
                _ => None,
            },
            message: self.message(),
        }
    }
}

/// Where a `call` stands: the next step and the records earlier steps found.
#[derive(Debug, Clone, Default, PartialEq)]
struct Cursor {
    step: usize,
    records: Map<String, Value>,
}

impl Cursor {
    fn from_value(v: Option<&Value>) -> Cursor {
        let Some(v) = v else {
            return Cursor::default();
        };
        Cursor {
            step: v.get("step").and_then(Value::as_u64).unwrap_or(0) as usize,
            records: v
                .get("records")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
        }
    }

    fn to_value(&self) -> Value {
        json!({"step": self.step, "records": self.records})
    }
}

fn protocol(p: OdooProtocol) -> Protocol {
    match p {
        OdooProtocol::Auto => Protocol::Auto,
        OdooProtocol::Json2 => Protocol::Json2,
        OdooProtocol::Jsonrpc => Protocol::JsonRpc,
        OdooProtocol::Xmlrpc => Protocol::XmlRpc,
    }
}

impl OdooDestination {
    /// The destination `name` over connection `c`, for the flows of `flows` that send to it,
    /// with at most `concurrency` calls in flight. The secret is read now (a broken
    /// reference was refused by `check`).
    pub fn new(
        name: &str,
        c: &OdooConnectionConfig,
        flows: &Flows,
        concurrency: usize,
    ) -> Result<Self, String> {
        let secret = c.secret.expose().map_err(|e| e.to_string())?;
        let mut config = OdooConfig::new(&c.url, &c.database, &c.login, &secret);
        config.protocol = protocol(c.protocol);
        config.context = c.context.clone();
        config.timeout = std::time::Duration::from_secs(c.timeout_seconds);
        let client = OdooClient::new(config).map_err(|e| e.to_string())?;
        let operations = flows
            .flows()
            .iter()
            .filter(|f| f.destination == name)
            .filter_map(|f| f.odoo.clone().map(|op| (f.name.clone(), op)))
            .collect();
        Ok(OdooDestination {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                client,
                operations,
                fields: Mutex::new(HashMap::new()),
                batches: batch::Batches::new(concurrency),
            }),
        })
    }
}

impl Inner {
    fn options(&self, out: &Outbound<'_>, context: &[&Map<String, Value>]) -> CallOptions {
        let mut merged = Map::new();
        for c in context {
            merged.extend((*c).clone());
        }
        CallOptions {
            context: merged,
            traceparent: Some(out.traceparent.to_owned()),
        }
    }

    async fn fields(&self, model: &str, opts: &CallOptions) -> Result<Arc<Fields>, Stop> {
        if let Some(f) = self.fields.lock().await.get(model) {
            return Ok(f.clone());
        }
        let mut kwargs = Map::new();
        kwargs.insert("attributes".into(), json!(["type", "relation", "readonly"]));
        let answer = self
            .client
            .execute_kw(model, "fields_get", vec![], kwargs, opts)
            .await
            .map_err(Stop::odoo(format!("{model}.fields_get")))?;
        let fields: Fields = answer
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(name, a)| {
                        (
                            name.clone(),
                            Field {
                                ty: a["type"].as_str().unwrap_or_default().to_owned(),
                                readonly: a["readonly"].as_bool().unwrap_or(false),
                            },
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let fields = Arc::new(fields);
        self.fields
            .lock()
            .await
            .insert(model.to_owned(), fields.clone());
        Ok(fields)
    }

    // ---- call ------------------------------------------------------------------------------

    async fn call(
        &self,
        op: &OdooOperation,
        out: &Outbound<'_>,
        cursor: &mut Cursor,
    ) -> Result<String, Stop> {
        let mut notes = Vec::new();
        if cursor.step > 0 {
            notes.push(format!("resumed at step {}", cursor.step + 1));
        }
        while let Some(step) = op.steps.get(cursor.step) {
            let opts = self.options(out, &[&op.context, &step.context]);
            let steps = Value::Object(cursor.records.clone());
            let found = self
                .read(step, &step.read, out.payload, &steps, &opts)
                .await?;
            let record = match (&step.method, found) {
                (None, Some(r)) => {
                    notes.push(format!("{}: found {}", step.name, r["id"]));
                    r
                }
                (None, None) => {
                    return Err(Stop::Refused(format!(
                        "step {}: no {} matches its find",
                        step.name, step.read.model
                    )));
                }
                (Some(_), Some(r)) => {
                    notes.push(format!("{}: already done", step.name));
                    r
                }
                (Some(method), None) => {
                    let answer = match self
                        .run_step(step, method, out.payload, &steps, &opts)
                        .await
                    {
                        Ok(answer) => Some(answer),
                        Err(stop) if stop.ambiguous() => {
                            tracing::info!(destination = %self.name, step = %step.name, error = %stop.message(), "answer lost; its done_when read decides");
                            match self
                                .read(step, &step.read, out.payload, &steps, &opts)
                                .await?
                            {
                                Some(r) => {
                                    notes.push(format!(
                                        "{}: done (answer lost, read back)",
                                        step.name
                                    ));
                                    cursor.records.insert(step.name.clone(), r);
                                    cursor.step += 1;
                                    continue;
                                }
                                None => return Err(stop),
                            }
                        }
                        Err(stop) => return Err(stop),
                    };
                    match self
                        .read(step, &step.read, out.payload, &steps, &opts)
                        .await?
                    {
                        Some(r) => {
                            notes.push(format!("{}: done", step.name));
                            r
                        }
                        None => {
                            return Err(Stop::Refused(format!(
                                "step {}: {}.{method} answered {}, but its done_when still finds nothing{}",
                                step.name,
                                step.model,
                                short(answer.as_ref().unwrap_or(&Value::Null)),
                                wizard_hint(answer.as_ref(), step)
                            )));
                        }
                    }
                }
            };
            cursor.records.insert(step.name.clone(), record);
            cursor.step += 1;
        }
        Ok(notes.join("; "))
    }

    /// The first record the step's read finds (`id` and its fields).
    async fn read(
        &self,
        step: &OdooStep,
        read: &OdooRead,
        payload: &Value,
        steps: &Value,
        opts: &CallOptions,
    ) -> Result<Option<Value>, Stop> {
        let domain = match read.domain.run(payload, std::slice::from_ref(steps)) {
            Ok(mut v) if v.len() == 1 && v[0].is_array() => v.remove(0),
            Ok(v) => {
                return Err(Stop::Payload(format!(
                    "step {}: the domain must give one list, not {}",
                    step.name,
                    Value::Array(v)
                )));
            }
            Err(e) => return Err(Stop::Payload(format!("step {}: domain: {e}", step.name))),
        };
        let mut fields: Vec<&str> = vec!["id"];
        fields.extend(read.fields.iter().map(String::as_str));
        let rows = self
            .client
            .search_read(
                &read.model,
                &SearchRead {
                    domain,
                    fields: &fields,
                    limit: Some(1),
                    order: Some("id"),
                    ..Default::default()
                },
                opts,
            )
            .await
            .map_err(Stop::odoo(format!(
                "step {}: {}.search_read",
                step.name, read.model
            )))?;
        Ok(rows.into_iter().next().map(Value::Object))
    }

    /// Calls the step's method, then the wizards its answers open.
    async fn run_step(
        &self,
        step: &OdooStep,
        method: &str,
        payload: &Value,
        steps: &Value,
        opts: &CallOptions,
    ) -> Result<Value, Stop> {
        let vars = std::slice::from_ref(steps);
        let run = |name: &str, jq: &switchyard_core::jq::Jq| match jq.run(payload, vars) {
            Ok(mut v) if v.len() == 1 => Ok(v.remove(0)),
            Ok(v) => Err(Stop::Payload(format!(
                "step {}: {name} gave {} values, not one",
                step.name,
                v.len()
            ))),
            Err(e) => Err(Stop::Payload(format!("step {}: {name}: {e}", step.name))),
        };
        let mut args = Vec::new();
        if let Some(jq) = &step.ids {
            let ids = run("ids", jq)?;
            let list: Vec<i64> = match &ids {
                Value::Array(a) => a.iter().filter_map(Value::as_i64).collect(),
                v => v.as_i64().into_iter().collect(),
            };
            if list.is_empty() || list.iter().any(|i| *i <= 0) {
                return Err(Stop::Payload(format!(
                    "step {}: ids gave {ids}, not record ids",
                    step.name
                )));
            }
            args.push(json!(list));
        }
        if let Some(jq) = &step.args {
            match run("args", jq)? {
                Value::Array(more) => args.extend(more),
                v => {
                    return Err(Stop::Payload(format!(
                        "step {}: args must give a list, not {v}",
                        step.name
                    )));
                }
            }
        }
        let kwargs = match &step.kwargs {
            None => Map::new(),
            Some(jq) => match run("kwargs", jq)? {
                Value::Object(m) => m,
                v => {
                    return Err(Stop::Payload(format!(
                        "step {}: kwargs must give an object, not {v}",
                        step.name
                    )));
                }
            },
        };
        let during = format!("step {}: {}.{method}", step.name, step.model);
        let mut answer = self
            .client
            .execute_kw(&step.model, method, args, kwargs, opts)
            .await
            .map_err(Stop::odoo(during))?;
        // A button that answers with a wizard's action: open it in the action's context and
        // confirm it, as Odoo's web client would (at most a few in a row).
        for _ in 0..5 {
            let Some(res_model) = answer.get("res_model").and_then(Value::as_str) else {
                break;
            };
            let Some(confirm) = step.wizards.get(res_model) else {
                break;
            };
            let mut wizard_opts = opts.clone();
            if let Some(Value::Object(ctx)) = answer.get("context") {
                wizard_opts.context.extend(ctx.clone());
            }
            let res_model = res_model.to_owned();
            let wizard = match answer.get("res_id").and_then(Value::as_i64) {
                Some(id) if id > 0 => id,
                _ => {
                    let created = self
                        .client
                        .execute_kw(
                            &res_model,
                            "create",
                            vec![json!({})],
                            Map::new(),
                            &wizard_opts,
                        )
                        .await
                        .map_err(Stop::odoo(format!(
                            "step {}: {res_model}.create",
                            step.name
                        )))?;
                    first_id(&created).ok_or_else(|| {
                        Stop::Refused(format!(
                            "step {}: {res_model}.create answered {created}",
                            step.name
                        ))
                    })?
                }
            };
            answer = self
                .client
                .execute_kw(
                    &res_model,
                    confirm,
                    vec![json!([wizard])],
                    Map::new(),
                    &wizard_opts,
                )
                .await
                .map_err(Stop::odoo(format!(
                    "step {}: {res_model}.{confirm}",
                    step.name
                )))?;
        }
        Ok(answer)
    }
}

#[async_trait]
impl Destination for OdooDestination {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn batch_size(&self) -> usize {
        self.inner
            .operations
            .values()
            .map(|op| op.batch_size)
            .max()
            .unwrap_or(1)
    }

    async fn send(&self, out: &Outbound<'_>, now: DateTime<Utc>) -> Outcome {
        self.send_from_cursor(out, now).await.0
    }

    async fn send_from_cursor(
        &self,
        out: &Outbound<'_>,
        _now: DateTime<Utc>,
    ) -> (Outcome, Option<Value>) {
        let inner = &self.inner;
        let Some(op) = inner.operations.get(out.flow).cloned() else {
            let stop = Stop::Refused(format!(
                "flow {} has no [flows.odoo] operation for destination {}",
                out.flow, inner.name
            ));
            return (stop.outcome(), None);
        };
        let (result, cursor) = match op.kind {
            OdooOperationKind::Call => {
                let mut cursor = Cursor::from_value(out.cursor);
                let r = inner.call(&op, out, &mut cursor).await;
                (r, Some(cursor.to_value()))
            }
            _ => {
                let job = records::Job {
                    identity: records::identity(&op, out.payload),
                    payload: out.payload.clone(),
                    traceparent: out.traceparent.to_owned(),
                };
                (batch::submit(inner, out.flow, op, job).await, None)
            }
        };
        let outcome = match result {
            Ok(note) => Outcome::Delivered {
                status: None,
                excerpt: Some(
                    note.chars()
                        .take(crate::destination::EXCERPT_BYTES)
                        .collect(),
                ),
            },
            Err(stop) => {
                tracing::debug!(destination = %inner.name, flow = out.flow, event_id = out.event_id, class = stop.class().as_str(), error = %stop.message(), "odoo operation stopped");
                stop.outcome()
            }
        };
        (outcome, cursor)
    }
}

// ---- values ------------------------------------------------------------------------------

/// `module.name`, with Odoo's `__import__` module for a bare name.
fn qualify(xid: &str) -> (String, String) {
    match xid.split_once('.') {
        Some((m, n)) if !m.is_empty() && !n.is_empty() => (m.to_owned(), n.to_owned()),
        _ => ("__import__".to_owned(), xid.to_owned()),
    }
}

fn key_text(key: &[String], values: &Map<String, Value>) -> String {
    key.iter()
        .map(|k| format!("{k} = {}", values.get(k).unwrap_or(&Value::Null)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn is_empty(v: &Value) -> bool {
    matches!(v, Value::Null | Value::Bool(false)) || v.as_str() == Some("")
}

fn first_id(v: &Value) -> Option<i64> {
    v.as_i64()
        .or_else(|| v.as_array().and_then(|a| a.first()).and_then(Value::as_i64))
}

fn ids_of(v: &Value) -> Vec<i64> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_i64).collect())
        .unwrap_or_default()
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 160 {
        format!(
            "{}…",
            &s[..s.char_indices().nth(160).map_or(s.len(), |(i, _)| i)]
        )
    } else {
        s
    }
}

fn wizard_hint(answer: Option<&Value>, step: &OdooStep) -> String {
    match answer
        .and_then(|a| a.get("res_model"))
        .and_then(Value::as_str)
    {
        Some(m) if !step.wizards.contains_key(m) => format!(
            " (it opened the wizard {m}: add it to the step's wizards with the method that confirms it)"
        ),
        _ => String::new(),
    }
}

/// The positive id a many2one value stands for, or `false`. The read shape `[id, "name"]`
/// and numeric strings are turned into the id; `0` and other text are refused, because Odoo
/// accepts them and silently clears the field (10_063-10_066, 10_109-10_112).
fn many2one(model: &str, field: &str, v: &Value) -> Result<Value, Stop> {
    let refuse = |why: &str| {
        Err(Stop::Payload(format!(
            "{model}.{field} is a many2one: {v} {why} (send a record id, or false to clear it)"
        )))
    };
    match v {
        Value::Null | Value::Bool(false) => Ok(Value::Bool(false)),
        Value::Number(n) => match n.as_i64() {
            Some(id) if id > 0 => Ok(json!(id)),
            Some(_) => refuse("would clear the field"),
            None => refuse("is not an id"),
        },
        Value::String(s) => match s.trim().parse::<i64>() {
            Ok(id) if id > 0 => Ok(json!(id)),
            Ok(_) => refuse("would clear the field"),
            Err(_) => refuse("is text, not an id"),
        },
        Value::Array(pair) => match pair.as_slice() {
            [Value::Number(id), Value::String(_)] => {
                many2one(model, field, &Value::Number(id.clone()))
            }
            _ => refuse("is not a many2one value"),
        },
        _ => refuse("is not a many2one value"),
    }
}

/// Checks every field against the model and puts many2one values into the one shape that
/// never clears a field by accident.
fn sanitize(
    model: &str,
    fields: &Fields,
    values: Map<String, Value>,
) -> Result<Map<String, Value>, Stop> {
    let mut out = Map::new();
    for (name, v) in values {
        let Some(f) = fields.get(&name) else {
            return Err(Stop::Payload(format!("{model} has no field {name}")));
        };
        if name == "id" || (f.readonly && f.ty != "one2many" && f.ty != "many2many") {
            return Err(Stop::Payload(format!(
                "{model}.{name} is read-only: it cannot be written"
            )));
        }
        let v = match f.ty.as_str() {
            "many2one" => many2one(model, &name, &v)?,
            "many2many" => match &v {
                Value::Null | Value::Bool(false) => json!([]),
                Value::Array(items) if items.iter().all(Value::is_number) => {
                    let mut ids = Vec::new();
                    for i in items {
                        ids.push(many2one(model, &name, i)?);
                    }
                    Value::Array(ids)
                }
                Value::Array(items) if items.iter().all(Value::is_array) => v,
                _ => {
                    return Err(Stop::Payload(format!(
                        "{model}.{name} is a many2many: send a list of ids or of commands, not {v}"
                    )));
                }
            },
            "one2many" => match &v {
                Value::Array(items) if items.iter().all(Value::is_array) => v,
                _ => {
                    return Err(Stop::Payload(format!(
                        "{model}.{name} is a one2many: send a list of line commands, not {v}"
                    )));
                }
            },
            _ => v,
        };
        out.insert(name, v);
    }
    Ok(out)
}

/// A new record: only `(0, 0, vals)` line creations (and clearing) make sense; commands that
/// name existing lines would take them from another record.
fn check_new_lines(model: &str, fields: &Fields, values: &Map<String, Value>) -> Result<(), Stop> {
    for (name, v) in values {
        if fields[name].ty != "one2many" {
            continue;
        }
        for c in v.as_array().into_iter().flatten() {
            match c.get(0).and_then(Value::as_i64) {
                Some(0) | Some(5) => {}
                Some(6) if c.get(2).is_some_and(|ids| ids_of(ids).is_empty()) => {}
                _ => {
                    return Err(Stop::Payload(format!(
                        "{model}.{name}: {c} names a line of another record (this one does not exist yet)"
                    )));
                }
            }
        }
    }
    Ok(())
}

/// The line commands to send for one2many `field` of record `id`, whose lines are `lines`:
/// commands that name a line must name one of these (Odoo applies `(1, id)`, `(2, id)` and
/// `(4, id)` to any line, even another order's, 10_114-10_118); `(0, 0, vals)` creations are
/// left out, because the record exists (they were sent when it was created, and sending them
/// again would append the lines twice); commands with no effect are dropped.
fn line_commands(
    model: &str,
    field: &str,
    id: i64,
    lines: &BTreeSet<i64>,
    want: &Value,
) -> Result<Vec<Value>, Stop> {
    let mut out = Vec::new();
    for c in want.as_array().into_iter().flatten() {
        let code = c.get(0).and_then(Value::as_i64);
        let line = c.get(1).and_then(Value::as_i64).unwrap_or(0);
        let foreign = |l: i64| {
            Stop::Payload(format!(
                "{model}.{field}: {c} names line {l}, which is not a line of {model} {id} (its lines: {lines:?})"
            ))
        };
        match code {
            Some(0) => {}
            Some(1) | Some(2) | Some(3) | Some(4) if !lines.contains(&line) => {
                // Unlinking or deleting a line that is already gone is done.
                if matches!(code, Some(2) | Some(3)) && line > 0 {
                    continue;
                }
                return Err(foreign(line));
            }
            Some(4) => {} // already linked
            Some(1) | Some(2) | Some(3) => out.push(c.clone()),
            Some(5) if !lines.is_empty() => out.push(c.clone()),
            Some(5) => {}
            Some(6) => {
                let keep: BTreeSet<i64> = c
                    .get(2)
                    .map(ids_of)
                    .unwrap_or_default()
                    .into_iter()
                    .collect();
                if let Some(l) = keep.iter().find(|l| !lines.contains(l)) {
                    return Err(foreign(*l));
                }
                if &keep != lines {
                    out.push(c.clone());
                }
            }
            _ => {
                return Err(Stop::Payload(format!(
                    "{model}.{field}: {c} is not a line command (Odoo ignores unknown ones silently)"
                )));
            }
        }
    }
    Ok(out)
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        Value::Bool(false) | Value::Null => Some(0.0),
        _ => None,
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::Null | Value::Bool(false) => Some(String::new()),
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(true) => Some("True".into()),
        _ => None,
    }
}

/// Whether the (sanitized) value to write equals the value read, by field type.
fn same(ty: &str, want: &Value, have: &Value) -> bool {
    match ty {
        "many2one" => {
            let have = match have {
                Value::Array(pair) => pair.first().cloned().unwrap_or(Value::Bool(false)),
                other => other.clone(),
            };
            *want == have
        }
        "many2many" => {
            let have: BTreeSet<i64> = ids_of(have).into_iter().collect();
            let want_ids: Option<BTreeSet<i64>> = match want {
                Value::Array(items) if items.iter().all(Value::is_number) => {
                    Some(ids_of(want).into_iter().collect())
                }
                Value::Array(items) => match items.as_slice() {
                    [c] if c.get(0).and_then(Value::as_i64) == Some(6) => Some(
                        c.get(2)
                            .map(ids_of)
                            .unwrap_or_default()
                            .into_iter()
                            .collect(),
                    ),
                    _ => None,
                },
                _ => None,
            };
            want_ids.is_some_and(|w| w == have)
        }
        "boolean" => truthy(want) == truthy(have),
        "integer" | "float" | "monetary" => match (number(want), number(have)) {
            (Some(a), Some(b)) => (a - b).abs() < 1e-9,
            _ => false,
        },
        "date" | "datetime" => {
            let n = if ty == "date" { 10 } else { 19 };
            match (text(want), text(have)) {
                (Some(a), Some(b)) => a.chars().take(n).eq(b.chars().take(n)),
                _ => false,
            }
        }
        "html" => match (text(want), text(have)) {
            (Some(a), Some(b)) => a == b || format!("<p>{a}</p>") == b,
            _ => false,
        },
        "char" | "text" | "selection" => match (text(want), text(have)) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        },
        _ => want == have,
    }
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(false) => false,
        Value::String(s) => !s.is_empty(),
        Value::Number(n) => n.as_f64() != Some(0.0),
        _ => true,
    }
}

/// A value as `load`'s column and string cell (CSV semantics; a non-string cell can crash
/// Odoo's import, 10_018). Relations are given by database id (`field/.id`).
fn load_cell(model: &str, name: &str, ty: &str, v: &Value) -> Result<(String, String), Stop> {
    let cell = match ty {
        "many2one" => {
            let id = v.as_i64().map(|i| i.to_string()).unwrap_or_default();
            return Ok((format!("{name}/.id"), id));
        }
        "many2many" => {
            let ids: Vec<String> = match v {
                Value::Array(items) if items.iter().all(Value::is_number) => {
                    ids_of(v).iter().map(i64::to_string).collect()
                }
                Value::Array(items) => {
                    let mut ids = Vec::new();
                    for c in items {
                        match c.get(0).and_then(Value::as_i64) {
                            Some(6) => ids.extend(c.get(2).map(ids_of).unwrap_or_default()),
                            Some(4) => ids.extend(c.get(1).and_then(Value::as_i64)),
                            Some(5) => ids.clear(),
                            _ => {
                                return Err(Stop::Payload(format!(
                                    "{model}.{name}: {c} cannot be imported; send the ids"
                                )));
                            }
                        }
                    }
                    ids.iter().map(i64::to_string).collect()
                }
                _ => Vec::new(),
            };
            return Ok((format!("{name}/.id"), ids.join(",")));
        }
        "boolean" => if truthy(v) { "True" } else { "False" }.to_string(),
        _ => text(v).ok_or_else(|| {
            Stop::Payload(format!("{model}.{name}: {v} cannot be written as a {ty}"))
        })?,
    };
    Ok((name.to_owned(), cell))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many2one_values_never_clear_by_accident() {
        let ok = |v: Value| many2one("sale.order", "partner_id", &v).unwrap();
        assert_eq!(ok(json!(22)), json!(22));
        assert_eq!(ok(json!([22, "Azure Interior"])), json!(22));
        assert_eq!(ok(json!("22")), json!(22));
        assert_eq!(ok(json!(false)), json!(false));
        assert_eq!(ok(Value::Null), json!(false));
        for bad in [
            json!(0),
            json!("0"),
            json!("Azure"),
            json!(-3),
            json!({"id": 1}),
        ] {
            assert!(many2one("sale.order", "partner_id", &bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn line_commands_name_only_this_records_lines() {
        let lines: BTreeSet<i64> = [5, 6].into_iter().collect();
        let run = |v: Value| line_commands("sale.order", "order_line", 1, &lines, &v);
        assert_eq!(
            run(json!([[1, 5, {"price_unit": 3}], [2, 6]])).unwrap(),
            vec![json!([1, 5, {"price_unit": 3}]), json!([2, 6])]
        );
        assert!(
            run(json!([[1, 99, {"price_unit": 3}]])).is_err(),
            "another order's line"
        );
        assert!(run(json!([[4, 99]])).is_err(), "moving a foreign line in");
        assert!(run(json!([[6, 0, [5, 99]]])).is_err());
        assert!(
            run(json!([[9, 5]])).is_err(),
            "unknown commands are silently ignored by Odoo"
        );
        // Already true: nothing to send.
        assert!(
            run(json!([[4, 5], [6, 0, [5, 6]], [0, 0, {"name": "x"}]]))
                .unwrap()
                .is_empty()
        );
        assert!(run(json!([[2, 77]])).unwrap().is_empty(), "already deleted");
    }

    #[test]
    fn comparisons_follow_the_read_shapes() {
        assert!(same("many2one", &json!(7), &json!([7, "Deco Addict"])));
        assert!(!same("many2one", &json!(7), &json!(false)));
        assert!(same("many2many", &json!([3, 1]), &json!([1, 3])));
        assert!(same("many2many", &json!([[6, 0, [1, 3]]]), &json!([1, 3])));
        assert!(same("float", &json!("12.50"), &json!(12.5)));
        assert!(same("char", &Value::Null, &json!(false)));
        assert!(same(
            "datetime",
            &json!("2026-11-23 18:05:49"),
            &json!("2026-11-23 18:05:49")
        ));
        assert!(!same("char", &json!("a"), &json!("b")));
        assert!(same("html", &json!("hello"), &json!("<p>hello</p>")));
    }

    #[test]
    fn load_cells_are_strings() {
        assert_eq!(
            load_cell("m", "active", "boolean", &json!(true)).unwrap().1,
            "True"
        );
        assert_eq!(
            load_cell("m", "qty", "float", &json!(2.5)).unwrap().1,
            "2.5"
        );
        assert_eq!(
            load_cell("m", "parent_id", "many2one", &json!(4)).unwrap(),
            ("parent_id/.id".to_string(), "4".to_string())
        );
        assert_eq!(
            load_cell("m", "category_id", "many2many", &json!([1, 2])).unwrap(),
            ("category_id/.id".to_string(), "1,2".to_string())
        );
        assert_eq!(qualify("shop.c_1"), ("shop".into(), "c_1".into()));
        assert_eq!(qualify("c_1"), ("__import__".into(), "c_1".into()));
    }
}
