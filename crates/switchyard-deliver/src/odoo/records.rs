//! upsert / create / write for a batch of one flow's payloads (a batch of one is the same
//! path). Per batch, whatever its size:
//!
//! 1. one read finds which records exist — `ir.model.data` for external ids, or the model
//!    itself for business keys;
//! 2. one `search_read` of the existing records reads the fields the payloads set, and each
//!    payload is compared with its record: nothing differs, no call (every write bumps
//!    `write_date` and invites serialization failures);
//! 3. the changes are written: by external id through `load` with an `id` column and only
//!    the changed columns (rows with the same changed columns share a call), by key with
//!    `write` (records with identical changes share a call), and through `write` whenever a
//!    relation list changes (`load` would replace it rather than apply the commands);
//! 4. new records are created: by external id with one `load` (record and external id in one
//!    transaction), by key with one list `create`.
//!
//! `load` and list `create` are all-or-nothing. A rejected `load` names its bad rows (0-based,
//! `messages[].rows`): those fail, each with its own messages, and the others are sent again;
//! a fault names no row, so the batch is halved until it does. A lost answer is resolved by
//! running the batch's reads again ([`Inner::records`]): what landed is found and not
//! repeated.

use super::{
    Fields, Inner, Stop, check_new_lines, ids_of, is_empty, key_text, line_commands, load_cell,
    qualify, same, sanitize,
};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use switchyard_core::delivery::ErrorClass;
use switchyard_core::odoo_ops::{OdooOperation, OdooOperationKind};
use switchyard_odoo::{CallOptions, SearchRead};

/// What one delivery comes to: its note, or why it stopped.
pub(super) type Answer = Result<String, Stop>;

/// One delivery's payload, waiting for a call.
pub(super) struct Job {
    pub payload: Value,
    pub traceparent: String,
    /// The record it is for (external id or key values), when the payload tells; two jobs
    /// for one record never share a call.
    pub identity: Option<String>,
}

/// The record a payload is for, as far as it can tell before any read: its external id, or
/// its key values (a many2one pair read back from Odoo counts as its id).
pub(super) fn identity(op: &OdooOperation, payload: &Value) -> Option<String> {
    if let Some(xid) = &op.external_id {
        return match xid.first(payload, &[]) {
            Ok(Some(Value::String(x))) => {
                let (m, n) = qualify(&x);
                Some(format!("{m}.{n}"))
            }
            _ => None,
        };
    }
    let values = op.values.first(payload, &[]).ok()??;
    let key: Vec<Value> = op
        .key
        .iter()
        .map(|k| match values.get(k) {
            Some(Value::Array(pair)) if pair.len() == 2 && pair[0].is_number() => pair[0].clone(),
            Some(v) => v.clone(),
            None => Value::Null,
        })
        .collect();
    Some(Value::Array(key).to_string())
}

/// A payload ready to compare and send.
struct Prepared {
    values: Map<String, Value>,
    xid: Option<(String, String)>,
}

/// `load` rows of one column set: (delivery, cells, note).
type LoadGroup = Vec<(usize, Vec<Value>, Note)>;
/// Records with identical changes: the changes and (delivery, id, note) of each.
type WriteGroup = (Map<String, Value>, Vec<(usize, i64, String)>);

/// What a delivery's note says once its call lands.
enum Note {
    /// A new record (`what` names it); the note gets its id.
    Created(String),
    /// Changes to an existing record, already described.
    Wrote(String),
}

impl Note {
    fn landed(self, id: i64) -> String {
        match self {
            Note::Created(what) => format!("{what}: created id {id}"),
            Note::Wrote(note) => note,
        }
    }
}

/// Where one delivery of the batch stands.
enum Plan {
    Done(Answer),
    /// A `load` row (columns, cells).
    Load {
        columns: Vec<String>,
        row: Vec<Value>,
        note: Note,
    },
    Create {
        values: Map<String, Value>,
        what: String,
    },
    Write {
        id: i64,
        changes: Map<String, Value>,
        note: String,
    },
}

impl Inner {
    /// Performs `op` for every job; one answer per job, in order. Jobs whose answer was lost
    /// (timeout, dropped connection) run once more at once, from the reads: what landed is
    /// found and not repeated.
    pub(super) async fn records(&self, op: &OdooOperation, jobs: &[Job]) -> Vec<Answer> {
        let all: Vec<&Job> = jobs.iter().collect();
        let mut answers = self.records_once(op, &all).await;
        let lost: Vec<usize> = (0..jobs.len())
            .filter(|&i| matches!(&answers[i], Err(s) if s.ambiguous()))
            .collect();
        if !lost.is_empty() {
            tracing::info!(destination = %self.name, records = lost.len(), "answer lost; reading back before anything else");
            let again: Vec<&Job> = lost.iter().map(|&i| &jobs[i]).collect();
            let second = self.records_once(op, &again).await;
            for (i, a) in lost.into_iter().zip(second) {
                answers[i] = a.map(|note| format!("{note} (the first answer was lost)"));
            }
        }
        answers
    }

    async fn records_once(&self, op: &OdooOperation, jobs: &[&Job]) -> Vec<Answer> {
        let model = op.model.as_str();
        let opts = CallOptions {
            context: op.context.clone(),
            traceparent: jobs.first().map(|j| j.traceparent.clone()),
        };
        let fields = match self.fields(model, &opts).await {
            Ok(f) => f,
            Err(stop) => return jobs.iter().map(|_| Err(stop.clone())).collect(),
        };
        let mut plans: Vec<Option<Plan>> = Vec::with_capacity(jobs.len());
        let mut prepared: Vec<Option<Prepared>> = Vec::with_capacity(jobs.len());
        let mut seen = HashMap::new();
        for (i, job) in jobs.iter().enumerate() {
            match prepare(op, &fields, &job.payload) {
                Ok(p) => {
                    // The batcher keeps two payloads for one record apart; the identity it
                    // saw may differ from the sanitized one (a many2one as text): wait.
                    let id = match &p.xid {
                        Some((m, n)) => format!("{m}.{n}"),
                        None => Value::Array(
                            op.key
                                .iter()
                                .map(|k| p.values.get(k).cloned().unwrap_or(Value::Null))
                                .collect(),
                        )
                        .to_string(),
                    };
                    if let Some(first) = seen.insert(id, i) {
                        plans.push(Some(Plan::Done(Err(Stop::Retry(format!(
                            "delivery {} of this call is for the same record; this one follows in a later call",
                            first + 1
                        ))))));
                        prepared.push(None);
                    } else {
                        plans.push(None);
                        prepared.push(Some(p));
                    }
                }
                Err(stop) => {
                    plans.push(Some(Plan::Done(Err(stop))));
                    prepared.push(None);
                }
            }
        }
        let fail_rest = |plans: Vec<Option<Plan>>, stop: Stop| -> Vec<Answer> {
            plans
                .into_iter()
                .map(|p| match p {
                    Some(Plan::Done(a)) => a,
                    _ => Err(stop.clone()),
                })
                .collect()
        };
        // 1. Which records exist.
        let found = match &op.external_id {
            Some(_) => self.find_by_xid(model, &prepared, &opts).await,
            None => {
                self.find_by_key(model, &op.key, &fields, &prepared, &opts)
                    .await
            }
        };
        let found = match found {
            Ok(f) => f,
            Err(stop) => return fail_rest(plans, stop),
        };
        // 2. What they hold now.
        let ids: BTreeSet<i64> = found
            .iter()
            .filter_map(|f| f.as_ref().ok().copied().flatten())
            .collect();
        let current = if ids.is_empty() {
            HashMap::new()
        } else {
            let mut names: BTreeSet<&str> = BTreeSet::from(["id"]);
            for p in prepared.iter().flatten() {
                names.extend(p.values.keys().map(String::as_str));
            }
            let names: Vec<&str> = names.into_iter().collect();
            match self
                .client
                .search_read(
                    model,
                    &SearchRead {
                        domain: json!([["id", "in", ids]]),
                        fields: &names,
                        ..Default::default()
                    },
                    &opts,
                )
                .await
            {
                Ok(rows) => rows
                    .into_iter()
                    .filter_map(|r| Some((r.get("id")?.as_i64()?, r)))
                    .collect::<HashMap<i64, Map<String, Value>>>(),
                Err(e) => {
                    return fail_rest(
                        plans,
                        Stop::Odoo {
                            during: format!("{model}.search_read"),
                            error: e,
                        },
                    );
                }
            }
        };
        // 3. Compare, and plan what to send.
        for (i, found) in found.into_iter().enumerate() {
            let Some(p) = prepared[i].take() else {
                continue;
            };
            let what = match &p.xid {
                Some((m, n)) => format!("{model} {m}.{n}"),
                None => format!("{model} with {}", key_text(&op.key, &p.values)),
            };
            let existing = match found {
                Ok(e) => e,
                Err(stop) => {
                    plans[i] = Some(Plan::Done(Err(stop)));
                    continue;
                }
            };
            // An external id whose record was deleted: `load` creates the record again.
            let existing = existing.and_then(|id| current.get(&id).map(|row| (id, row)));
            plans[i] = Some(match existing {
                Some((id, _)) if op.kind == OdooOperationKind::Create => {
                    Plan::Done(Ok(format!("{what} exists (id {id}): not created again")))
                }
                Some((id, row)) => match differences(model, id, &fields, &p.values, row) {
                    Err(stop) => Plan::Done(Err(stop)),
                    Ok(changes) if changes.is_empty() => Plan::Done(Ok(format!(
                        "no change: {what} (id {id}) already has these values"
                    ))),
                    Ok(changes) => {
                        let names: Vec<&str> = changes.keys().map(String::as_str).collect();
                        let note = format!("{what} (id {id}): wrote {}", names.join(", "));
                        let relation = changes
                            .keys()
                            .any(|k| matches!(fields[k].ty.as_str(), "one2many" | "many2many"));
                        match &p.xid {
                            Some((m, n)) if !relation => {
                                match load_row(model, &format!("{m}.{n}"), &fields, &changes) {
                                    Ok((columns, row)) => Plan::Load {
                                        columns,
                                        row,
                                        note: Note::Wrote(note),
                                    },
                                    Err(stop) => Plan::Done(Err(stop)),
                                }
                            }
                            _ => Plan::Write { id, changes, note },
                        }
                    }
                },
                None if op.kind == OdooOperationKind::Write => Plan::Done(Err(Stop::Refused(
                    format!("{what} does not exist: nothing to write"),
                ))),
                None => match check_new_lines(model, &fields, &p.values) {
                    Err(stop) => Plan::Done(Err(stop)),
                    Ok(()) => match &p.xid {
                        Some((m, n)) => {
                            match load_row(model, &format!("{m}.{n}"), &fields, &p.values) {
                                Ok((columns, row)) => Plan::Load {
                                    columns,
                                    row,
                                    note: Note::Created(what),
                                },
                                Err(stop) => Plan::Done(Err(stop)),
                            }
                        }
                        None => Plan::Create {
                            values: p.values,
                            what,
                        },
                    },
                },
            });
        }
        // 4. Send: loads by column set, one list create, writes by identical changes.
        let mut answers: Vec<Option<Answer>> = (0..jobs.len()).map(|_| None).collect();
        let mut loads: BTreeMap<Vec<String>, LoadGroup> = BTreeMap::new();
        let mut creates = Vec::new();
        let mut writes: BTreeMap<String, WriteGroup> = BTreeMap::new();
        for (i, plan) in plans.into_iter().enumerate() {
            match plan.expect("every delivery has a plan") {
                Plan::Done(a) => answers[i] = Some(a),
                Plan::Load { columns, row, note } => {
                    loads.entry(columns).or_default().push((i, row, note))
                }
                Plan::Create { values, what } => creates.push((i, values, what)),
                Plan::Write { id, changes, note } => {
                    writes
                        .entry(Value::Object(changes.clone()).to_string())
                        .or_insert_with(|| (changes, Vec::new()))
                        .1
                        .push((i, id, note));
                }
            }
        }
        for (columns, rows) in loads {
            let (targets, cells): (Vec<(usize, Note)>, Vec<Value>) = rows
                .into_iter()
                .map(|(i, row, note)| ((i, note), Value::Array(row)))
                .unzip();
            let ids = self.load_rows(model, &columns, &cells, &opts).await;
            for ((i, note), id) in targets.into_iter().zip(ids) {
                answers[i] = Some(id.map(|id| note.landed(id)));
            }
        }
        if !creates.is_empty() {
            let values: Vec<Value> = creates
                .iter()
                .map(|(_, v, _)| Value::Object(v.clone()))
                .collect();
            let ids = self.create_rows(model, &values, &opts).await;
            for ((i, _, what), id) in creates.into_iter().zip(ids) {
                answers[i] = Some(id.map(|id| Note::Created(what).landed(id)));
            }
        }
        for (_, (changes, targets)) in writes {
            let ids: Vec<i64> = targets.iter().map(|(_, id, _)| *id).collect();
            let result = self
                .client
                .execute_kw(
                    model,
                    "write",
                    vec![json!(ids), Value::Object(changes)],
                    Map::new(),
                    &opts,
                )
                .await
                .map_err(Stop::odoo(format!("{model}.write")));
            for (i, _, note) in targets {
                answers[i] = Some(result.clone().map(|_| note));
            }
        }
        answers
            .into_iter()
            .map(|a| a.expect("every delivery answered"))
            .collect()
    }

    /// The record id behind each payload's external id (one `ir.model.data` read).
    async fn find_by_xid(
        &self,
        model: &str,
        prepared: &[Option<Prepared>],
        opts: &CallOptions,
    ) -> Result<Vec<Result<Option<i64>, Stop>>, Stop> {
        let xids: BTreeSet<&(String, String)> = prepared
            .iter()
            .flatten()
            .filter_map(|p| p.xid.as_ref())
            .collect();
        let mut known: HashMap<(String, String), (String, Option<i64>)> = HashMap::new();
        if !xids.is_empty() {
            let modules: BTreeSet<&str> = xids.iter().map(|(m, _)| m.as_str()).collect();
            let names: BTreeSet<&str> = xids.iter().map(|(_, n)| n.as_str()).collect();
            let rows = self
                .client
                .search_read(
                    "ir.model.data",
                    &SearchRead {
                        domain: json!([["module", "in", modules], ["name", "in", names]]),
                        fields: &["module", "name", "model", "res_id"],
                        ..Default::default()
                    },
                    opts,
                )
                .await
                .map_err(Stop::odoo("ir.model.data.search_read"))?;
            for r in rows {
                let text = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or_default();
                known.insert(
                    (text("module").to_owned(), text("name").to_owned()),
                    (
                        text("model").to_owned(),
                        r.get("res_id").and_then(Value::as_i64),
                    ),
                );
            }
        }
        Ok(prepared
            .iter()
            .map(|p| {
                let Some((m, n)) = p.as_ref().and_then(|p| p.xid.as_ref()) else {
                    return Ok(None);
                };
                match known.get(&(m.clone(), n.clone())) {
                    None => Ok(None),
                    Some((other, _)) if other != model => Err(Stop::Refused(format!(
                        "external id {m}.{n} names a {other} record, not {model}"
                    ))),
                    Some((_, id)) => Ok(*id),
                }
            })
            .collect())
    }

    /// The record each payload's key values identify (one read of the model).
    async fn find_by_key(
        &self,
        model: &str,
        key: &[String],
        fields: &Fields,
        prepared: &[Option<Prepared>],
        opts: &CallOptions,
    ) -> Result<Vec<Result<Option<i64>, Stop>>, Stop> {
        let mut terms: Vec<Vec<Value>> = Vec::new();
        let keys: Vec<Option<Result<Vec<&Value>, Stop>>> = prepared
            .iter()
            .map(|p| {
                let p = p.as_ref()?;
                let mut vals = Vec::new();
                for k in key {
                    let Some(v) = p.values.get(k) else {
                        return Some(Err(Stop::Payload(format!(
                            "the key field {k} is not among the values"
                        ))));
                    };
                    if is_empty(v) {
                        return Some(Err(Stop::Payload(format!(
                            "the key field {k} is empty: it cannot identify a record"
                        ))));
                    }
                    vals.push(v);
                }
                Some(Ok(vals))
            })
            .collect();
        for vals in keys.iter().flatten().flatten() {
            terms.push(vals.iter().map(|v| (*v).clone()).collect());
        }
        let mut rows = Vec::new();
        if !terms.is_empty() {
            let domain = if key.len() == 1 {
                let values: Vec<Value> = terms.into_iter().map(|mut t| t.remove(0)).collect();
                json!([[key[0], "in", values]])
            } else {
                // (k1 = a1 AND k2 = a2) OR (k1 = b1 AND k2 = b2) …, in Odoo's prefix form
                let mut d: Vec<Value> = vec![json!("|"); terms.len() - 1];
                for t in terms {
                    d.extend(vec![json!("&"); key.len() - 1]);
                    for (k, v) in key.iter().zip(t) {
                        d.push(json!([k, "=", v]));
                    }
                }
                Value::Array(d)
            };
            let mut names: Vec<&str> = vec!["id"];
            names.extend(key.iter().map(String::as_str));
            rows = self
                .client
                .search_read(
                    model,
                    &SearchRead {
                        domain,
                        fields: &names,
                        ..Default::default()
                    },
                    opts,
                )
                .await
                .map_err(Stop::odoo(format!("{model}.search_read")))?;
        }
        Ok(keys
            .into_iter()
            .zip(prepared)
            .map(|(vals, p)| {
                let vals = match vals {
                    None => return Ok(None),
                    Some(v) => v?,
                };
                let matches: Vec<i64> = rows
                    .iter()
                    .filter(|r| {
                        key.iter().zip(&vals).all(|(k, want)| {
                            same(&fields[k].ty, want, r.get(k).unwrap_or(&Value::Bool(false)))
                        })
                    })
                    .filter_map(|r| r.get("id").and_then(Value::as_i64))
                    .collect();
                match matches.as_slice() {
                    [] => Ok(None),
                    [id] => Ok(Some(*id)),
                    _ => Err(Stop::Refused(format!(
                        "{} matches several {model} records: the key must identify one",
                        key_text(key, &p.as_ref().expect("keys of prepared").values)
                    ))),
                }
            })
            .collect())
    }

    /// `load(columns, rows)`: one id per row, or why that row was refused. A rejected call
    /// is sent again without the rows its messages name; a fault (no row named) is halved.
    async fn load_rows(
        &self,
        model: &str,
        columns: &[String],
        rows: &[Value],
        opts: &CallOptions,
    ) -> Vec<Result<i64, Stop>> {
        let mut out: Vec<Option<Result<i64, Stop>>> = (0..rows.len()).map(|_| None).collect();
        let mut work: Vec<Vec<usize>> = vec![(0..rows.len()).collect()];
        while let Some(part) = work.pop() {
            let sent: Vec<&Value> = part.iter().map(|&i| &rows[i]).collect();
            let answer = self
                .client
                .execute_kw(
                    model,
                    "load",
                    vec![json!(columns), json!(sent)],
                    Map::new(),
                    opts,
                )
                .await;
            let answer = match answer {
                Ok(a) => a,
                Err(error) => {
                    let stop = Stop::Odoo {
                        during: format!("{model}.load"),
                        error,
                    };
                    call_failed(&mut work, &mut out, part, stop);
                    continue;
                }
            };
            let mut bad: BTreeMap<usize, Vec<String>> = BTreeMap::new();
            let mut unplaced = Vec::new();
            for m in answer["messages"].as_array().into_iter().flatten() {
                if m["type"] != "error" {
                    continue;
                }
                let field = m["field"]
                    .as_str()
                    .map(|f| format!("{f}: "))
                    .unwrap_or_default();
                let text = format!("{field}{}", m["message"].as_str().unwrap_or("error"));
                match (m["rows"]["from"].as_u64(), m["rows"]["to"].as_u64()) {
                    (Some(from), Some(to)) if (to as usize) < part.len() && from <= to => {
                        for r in from..=to {
                            bad.entry(r as usize).or_default().push(text.clone());
                        }
                    }
                    _ => unplaced.push(text),
                }
            }
            match answer["ids"].as_array() {
                Some(ids) if ids.len() == part.len() && bad.is_empty() && unplaced.is_empty() => {
                    for (&i, id) in part.iter().zip(ids) {
                        out[i] = Some(id.as_i64().ok_or_else(|| {
                            Stop::Refused(format!("{model}.load answered {answer}"))
                        }));
                    }
                }
                _ if bad.is_empty() => {
                    if part.len() > 1 {
                        halve(&mut work, part);
                    } else {
                        out[part[0]] = Some(Err(Stop::Refused(format!(
                            "{model}.load refused the record: {}",
                            if unplaced.is_empty() {
                                answer.to_string()
                            } else {
                                unplaced.join("; ")
                            }
                        ))));
                    }
                }
                _ => {
                    // Nothing of this call was committed: the rows it names fail, the others
                    // go again.
                    let mut good = Vec::new();
                    for (r, i) in part.into_iter().enumerate() {
                        match bad.remove(&r) {
                            Some(msgs) => {
                                out[i] = Some(Err(Stop::Refused(format!(
                                    "{model}.load refused the record: {}",
                                    msgs.join("; ")
                                ))))
                            }
                            None => good.push(i),
                        }
                    }
                    if !good.is_empty() {
                        work.push(good);
                    }
                }
            }
        }
        out.into_iter()
            .map(|o| o.expect("every row answered"))
            .collect()
    }

    /// `create([vals, …])`: one id per record. A refused call names no record, so it is
    /// halved until the bad records stand alone.
    async fn create_rows(
        &self,
        model: &str,
        values: &[Value],
        opts: &CallOptions,
    ) -> Vec<Result<i64, Stop>> {
        let mut out: Vec<Option<Result<i64, Stop>>> = (0..values.len()).map(|_| None).collect();
        let mut work: Vec<Vec<usize>> = vec![(0..values.len()).collect()];
        while let Some(part) = work.pop() {
            let sent: Vec<&Value> = part.iter().map(|&i| &values[i]).collect();
            match self
                .client
                .execute_kw(model, "create", vec![json!(sent)], Map::new(), opts)
                .await
            {
                Ok(answer) => {
                    let ids = ids_of(&answer);
                    if ids.len() == part.len() {
                        for (&i, id) in part.iter().zip(ids) {
                            out[i] = Some(Ok(id));
                        }
                    } else {
                        for i in part {
                            out[i] = Some(Err(Stop::Refused(format!(
                                "{model}.create answered {answer}"
                            ))));
                        }
                    }
                }
                Err(error) => {
                    let stop = Stop::Odoo {
                        during: format!("{model}.create"),
                        error,
                    };
                    call_failed(&mut work, &mut out, part, stop);
                }
            }
        }
        out.into_iter()
            .map(|o| o.expect("every record answered"))
            .collect()
    }
}

/// A call for the rows of `part` failed without naming a row: a permanent failure of
/// several rows is halved (the bad ones are in one half), anything else is every row's.
fn call_failed(
    work: &mut Vec<Vec<usize>>,
    out: &mut [Option<Result<i64, Stop>>],
    part: Vec<usize>,
    stop: Stop,
) {
    if part.len() > 1 && stop.class() == ErrorClass::Permanent {
        halve(work, part);
    } else {
        for i in part {
            out[i] = Some(Err(stop.clone()));
        }
    }
}

/// Splits `part` in two, the first half to be sent first.
fn halve(work: &mut Vec<Vec<usize>>, part: Vec<usize>) {
    let (a, b) = part.split_at(part.len() / 2);
    work.push(b.to_vec());
    work.push(a.to_vec());
}

/// The payload's field values, checked against the model, and its external id.
fn prepare(op: &OdooOperation, fields: &Fields, payload: &Value) -> Result<Prepared, Stop> {
    let model = op.model.as_str();
    let values = match op.values.run(payload, &[]) {
        Ok(mut v) if v.len() == 1 => v.remove(0),
        Ok(v) => {
            return Err(Stop::Payload(format!(
                "values produced {} results; it must produce one object",
                v.len()
            )));
        }
        Err(e) => return Err(Stop::Payload(format!("values: {e}"))),
    };
    let Value::Object(values) = values else {
        return Err(Stop::Payload(format!(
            "values must be an object of field values, not {values}"
        )));
    };
    let values = sanitize(model, fields, values)?;
    let xid = match &op.external_id {
        None => None,
        Some(jq) => match jq.first(payload, &[]) {
            Ok(Some(Value::String(x))) if !x.trim().is_empty() => Some(qualify(&x)),
            Ok(other) => {
                return Err(Stop::Payload(format!(
                    "external_id `{}` gave {}, not a non-empty string",
                    jq.code(),
                    other.unwrap_or(Value::Null)
                )));
            }
            Err(e) => return Err(Stop::Payload(format!("external_id: {e}"))),
        },
    };
    if xid.is_some()
        && let Some(f) = values.keys().find(|k| fields[*k].ty == "one2many")
    {
        return Err(Stop::Payload(format!(
            "{model}.{f} is a one2many: an upsert by external id goes through load, which appends the children again on every import; send the lines in their own flow (by external id, pointing at this record)"
        )));
    }
    Ok(Prepared { values, xid })
}

/// The values that differ from record `id`'s (`current`, as read), ready to write.
/// One2many commands are checked against the lines read from this same record.
fn differences(
    model: &str,
    id: i64,
    fields: &Fields,
    values: &Map<String, Value>,
    current: &Map<String, Value>,
) -> Result<Map<String, Value>, Stop> {
    let mut changes = Map::new();
    for (name, want) in values {
        let ty = fields[name].ty.as_str();
        let have = current.get(name).unwrap_or(&Value::Bool(false));
        if ty == "one2many" {
            let lines: BTreeSet<i64> = ids_of(have).into_iter().collect();
            let commands = line_commands(model, name, id, &lines, want)?;
            if !commands.is_empty() {
                changes.insert(name.clone(), Value::Array(commands));
            }
        } else if !same(ty, want, have) {
            changes.insert(name.clone(), want.clone());
        }
    }
    Ok(changes)
}

/// A `load` row: the `id` column with the external id, then one column per value.
fn load_row(
    model: &str,
    xid: &str,
    fields: &Fields,
    values: &Map<String, Value>,
) -> Result<(Vec<String>, Vec<Value>), Stop> {
    let mut columns = vec!["id".to_string()];
    let mut row = vec![Value::String(xid.to_owned())];
    for (name, v) in values {
        let (column, cell) = load_cell(model, name, &fields[name].ty, v)?;
        columns.push(column);
        row.push(Value::String(cell));
    }
    Ok((columns, row))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many2one_pairs_and_ids_name_the_same_record() {
        let op = switchyard_core::odoo_ops::compile(
            &serde_json::from_value(
                json!({"model": "res.partner", "operation": "upsert", "key": ["ref", "parent_id"]}),
            )
            .unwrap(),
        )
        .unwrap();
        let a = identity(&op, &json!({"ref": "C1", "parent_id": [7, "Acme"]}));
        let b = identity(&op, &json!({"ref": "C1", "parent_id": 7, "name": "x"}));
        let c = identity(&op, &json!({"ref": "C2", "parent_id": 7}));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
