//! The workflow monitor over `/v1`: workflows with their instance counts, instances (by
//! workflow, by business key, by id, with their timeline and findings), findings, and the
//! trace of a business key across every source. Read-only: the monitor owns the data.

use crate::AppState;
use crate::api::{
    ApiResult, bad_param, check_limit, event_json, json_body, parse_query, time_param,
};
use crate::error::{ApiError, Problem};
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use switchyard_core::instance::{FindingKind, InstanceState};
use switchyard_core::token::Permission;
use switchyard_store::{
    DeliveryFilter, EventFilter, FindingFilter, InstanceFilter, InstanceRecord, LogPosition,
};

/// An instance in API form: the stored instance, its open breach (step, SLA instant, how
/// long overdue) and, for an open instance, how long it has been open.
fn instance_json(state: &AppState, r: &InstanceRecord) -> Value {
    let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
    let now = state.clock.now();
    if let Some(wf) = state
        .workflows
        .get(&r.instance.workflow)
        .filter(|w| w.version == r.instance.version)
        && let Some((step, at)) = r.instance.breach(wf)
    {
        v["breach"] = json!({
            "step": step,
            "sla_at": at,
            "overdue_seconds": (now - at).num_seconds().max(0),
        });
    }
    if r.instance.is_open() {
        v["age_seconds"] = json!((now - r.instance.started_at).num_seconds().max(0));
    }
    v
}

/// `GET /v1/workflows`: every configured workflow, its steps and its instances per state.
pub async fn list_workflows(State(state): State<AppState>, headers: HeaderMap) -> ApiResult {
    state.authorize(&headers, Permission::Read).await?;
    let counts = state.store.instance_counts().await?;
    let mut by_wf: BTreeMap<&str, BTreeMap<&str, i64>> = BTreeMap::new();
    for c in &counts {
        by_wf
            .entry(c.workflow.as_str())
            .or_default()
            .insert(c.state.as_str(), c.count);
    }
    let workflows: Vec<Value> = state
        .workflows
        .list
        .iter()
        .map(|w| {
            json!({
                "name": w.name,
                "title": w.title,
                "version": w.version,
                "criticality": w.criticality.as_str(),
                "key": w.key,
                "keys": w.keys,
                "dimensions": w.dimensions.iter().map(|(n, _)| n).collect::<Vec<_>>(),
                "steps": w.definition.get("steps"),
                "instances": by_wf.get(w.name.as_str()).cloned().unwrap_or_default(),
            })
        })
        .collect();
    Ok(Json(json!({ "workflows": workflows })).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstancesQuery {
    /// Comma-separated states.
    pub state: Option<String>,
    /// `name:value`, e.g. `warehouse:WH2`.
    pub dimension: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub before: Option<i64>,
    pub limit: Option<usize>,
}

fn parse_states(s: Option<&str>) -> Result<Vec<InstanceState>, ApiError> {
    let mut out = Vec::new();
    for part in s.unwrap_or("").split(',').filter(|p| !p.is_empty()) {
        out.push(InstanceState::parse(part).ok_or_else(|| {
            bad_param(
                "state",
                format!(
                    "unknown state \"{part}\" (known: {})",
                    InstanceState::ALL.map(|s| s.as_str()).join(", ")
                ),
            )
        })?);
    }
    Ok(out)
}

/// `GET /v1/workflows/{name}/instances`: newest first, filtered by state, dimension, start.
pub async fn list_instances(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    state.authorize(&headers, Permission::Read).await?;
    let q: InstancesQuery = parse_query(raw)?;
    if state.workflows.get(&name).is_none()
        && !state
            .store
            .instance_counts()
            .await?
            .iter()
            .any(|c| c.workflow == name)
    {
        return Err(ApiError::new(
            Problem::NotFound,
            format!("no workflow \"{name}\""),
        ));
    }
    let dimension = match q.dimension.as_deref() {
        None => None,
        Some(d) => Some(
            d.split_once(':')
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .ok_or_else(|| bad_param("dimension", "expected name:value"))?,
        ),
    };
    let filter = InstanceFilter {
        workflow: Some(name),
        states: parse_states(q.state.as_deref())?,
        dimension,
        since: time_param("since", q.since.as_deref())?,
        until: time_param("until", q.until.as_deref())?,
        before_id: q.before,
        limit: check_limit(q.limit, 100, 1000)?,
    };
    let items = state.store.list_instances(&filter).await?;
    let next = (items.len() == filter.limit)
        .then(|| items.last().map(|r| r.id))
        .flatten();
    let items: Vec<Value> = items.iter().map(|r| instance_json(&state, r)).collect();
    Ok(Json(json!({ "instances": items, "next_before": next })).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyQuery {
    pub key: Option<String>,
    pub workflow: Option<String>,
    pub limit: Option<usize>,
}

/// The `key` parameter, which the instance and trace lookups need.
fn required_key(key: Option<String>) -> Result<String, ApiError> {
    key.filter(|k| !k.is_empty()).ok_or_else(|| {
        bad_param(
            "key",
            "required: a business key value, e.g. S00042 or WH/OUT/00017",
        )
    })
}

/// An instance with its findings.
async fn with_findings(state: &AppState, r: &InstanceRecord) -> Result<Value, ApiError> {
    let findings = state
        .store
        .list_findings(&FindingFilter {
            instance_id: Some(r.id),
            limit: 1000,
            ..Default::default()
        })
        .await?;
    let mut v = instance_json(state, r);
    v["findings"] = json!(findings);
    Ok(v)
}

/// `GET /v1/instances?key=…[&workflow=…]`: the instances a business key names (any of its
/// names: the shop's order number, Odoo's order name, a picking), each with its timeline of
/// events across systems (`hits`) and its findings.
pub async fn find_instances(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    state.authorize(&headers, Permission::Read).await?;
    let q: KeyQuery = parse_query(raw)?;
    let key = required_key(q.key)?;
    let limit = check_limit(q.limit, 20, 100)?;
    let found = state
        .store
        .instances_by_key(&key, q.workflow.as_deref(), limit)
        .await?;
    let mut out = Vec::new();
    for r in &found {
        out.push(with_findings(&state, r).await?);
    }
    Ok(Json(json!({ "instances": out })).into_response())
}

/// `GET /v1/instances/{id}`.
pub async fn get_instance(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    state.authorize(&headers, Permission::Read).await?;
    let id: i64 = id
        .parse()
        .map_err(|_| bad_param("id", "must be an integer"))?;
    let r = state
        .store
        .get_instance(id)
        .await?
        .ok_or_else(|| ApiError::new(Problem::NotFound, format!("no instance {id}")))?;
    Ok(Json(with_findings(&state, &r).await?).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FindingsQuery {
    /// `workflow` or `batch`.
    pub subject: Option<String>,
    pub workflow: Option<String>,
    pub kind: Option<String>,
    pub instance: Option<i64>,
    pub since: Option<String>,
    pub after: Option<i64>,
    pub limit: Option<usize>,
}

/// `GET /v1/findings`: in the order they were recorded; `next_after` pages on.
pub async fn list_findings(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    state.authorize(&headers, Permission::Read).await?;
    let q: FindingsQuery = parse_query(raw)?;
    let kind = match q.kind.as_deref() {
        None => None,
        Some(k) => Some(FindingKind::parse(k).ok_or_else(|| {
            bad_param(
                "kind",
                format!(
                    "unknown kind \"{k}\" (known: {})",
                    FindingKind::ALL.map(|k| k.as_str()).join(", ")
                ),
            )
        })?),
    };
    if let Some(s) = q.subject.as_deref()
        && ![
            switchyard_store::SUBJECT_WORKFLOW,
            switchyard_store::SUBJECT_BATCH,
            switchyard_store::SUBJECT_RECONCILIATION,
        ]
        .contains(&s)
    {
        return Err(bad_param(
            "subject",
            format!("unknown subject \"{s}\" (known: workflow, batch, reconciliation)"),
        ));
    }
    let filter = FindingFilter {
        subject: q.subject,
        workflow: q.workflow,
        kind,
        instance_id: q.instance,
        since: time_param("since", q.since.as_deref())?,
        after_id: q.after.unwrap_or(0),
        limit: check_limit(q.limit, 100, 1000)?,
    };
    let items = state.store.list_findings(&filter).await?;
    let next = (items.len() == filter.limit)
        .then(|| items.last().map(|f| f.id))
        .flatten();
    Ok(Json(json!({ "findings": items, "next_after": next })).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceQuery {
    pub key: Option<String>,
    pub limit: Option<usize>,
}

/// `GET /v1/trace?key=…`: every event carrying the business key value (any key name, any
/// source) in commit order, each with its deliveries, and the instances the key names.
pub async fn trace(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    state.authorize(&headers, Permission::Read).await?;
    let q: TraceQuery = parse_query(raw)?;
    let key = required_key(q.key)?;
    let limit = check_limit(q.limit, 200, 1000)?;
    let page = state
        .store
        .read_log(
            LogPosition::START,
            limit,
            &EventFilter {
                key: Some(key.clone()),
                ..Default::default()
            },
        )
        .await?;
    let mut events = Vec::new();
    for e in &page.events {
        let deliveries = state
            .store
            .list_deliveries(&DeliveryFilter {
                event_seq: Some(e.seq),
                limit: 100,
                ..Default::default()
            })
            .await?;
        let mut v = event_json(e);
        v["deliveries"] = json!(deliveries);
        events.push(v);
    }
    let instances = state.store.instances_by_key(&key, None, 20).await?;
    let mut out = Vec::new();
    for r in &instances {
        out.push(with_findings(&state, r).await?);
    }
    Ok(Json(json!({
        "key": key,
        "events": events,
        "instances": out,
        "truncated": page.events.len() == limit,
    }))
    .into_response())
}

/// The body of `POST /v1/heartbeats/{monitor}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatBody {
    /// `start`, `finish` or `fail`.
    pub status: String,
    /// The job's own id of the run: ties its start to its finish, and makes a repeated
    /// heartbeat a duplicate.
    pub run_id: Option<String>,
    /// Records processed (with `finish`).
    pub count: Option<i64>,
    /// Why it failed, or anything the job wants to say.
    pub message: Option<String>,
}

/// `POST /v1/heartbeats/{monitor}`: a batch job reports its start, finish (with a record
/// count) or failure. Stored as an event in the log (type `switchyard.heartbeat.<status>`),
/// which the monitor applies like any other: 202 once it is durable, 200 for a repeat of a
/// heartbeat with the same `run_id` and status.
pub async fn post_heartbeat(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(monitor): Path<String>,
    body: Body,
) -> ApiResult {
    state.authorize(&headers, Permission::Ingest).await?;
    if state.batch.get(&monitor).is_none() {
        return Err(ApiError::new(
            Problem::NotFound,
            format!("no batch monitor \"{monitor}\""),
        ));
    }
    let b: HeartbeatBody = json_body(
        &headers,
        body,
        "{\"status\": \"start\" | \"finish\" | \"fail\", …}",
    )
    .await?;
    if !["start", "finish", "fail"].contains(&b.status.as_str()) {
        return Err(bad_param("status", "must be start, finish or fail"));
    }
    if b.count.is_some_and(|c| c < 0) {
        return Err(bad_param("count", "must be 0 or more"));
    }
    if b.run_id
        .as_ref()
        .is_some_and(|r| r.is_empty() || r.len() > 128)
    {
        return Err(bad_param("run_id", "must be 1 to 128 characters"));
    }
    if b.message.as_ref().is_some_and(|m| m.len() > 2000) {
        return Err(bad_param("message", "must be at most 2000 bytes"));
    }
    let now = state.clock.now();
    let data = switchyard_monitor::Heartbeat {
        monitor: monitor.clone(),
        run_id: b.run_id.clone(),
        count: b.count,
        message: b.message,
    };
    let id = match &b.run_id {
        Some(run) => format!("{monitor}/{run}/{}", b.status),
        None => uuid::Uuid::new_v4().to_string(),
    };
    let event = switchyard_core::CloudEvent::from_json(json!({
        "specversion": "1.0",
        "id": id,
        "source": "/switchyard/heartbeats",
        "type": format!("{}{}", switchyard_monitor::HEARTBEAT_TYPE, b.status),
        "subject": monitor,
        "time": now.to_rfc3339(),
        "data": data,
    }))
    .map_err(|_| ApiError::new(Problem::Internal, "heartbeat event".to_string()))?
    .event;
    let appended = state
        .store
        .append_events(vec![switchyard_store::NewEvent {
            event,
            received_at: now,
            keys: Vec::new(),
            deliveries: Vec::new(),
        }])
        .await?;
    let (status, code) = match appended.first() {
        Some(switchyard_store::Appended::Duplicate { .. }) => {
            ("duplicate", axum::http::StatusCode::OK)
        }
        _ => ("stored", axum::http::StatusCode::ACCEPTED),
    };
    let seq = appended.first().map(|a| a.seq());
    Ok((
        code,
        Json(json!({ "status": status, "seq": seq, "id": id })),
    )
        .into_response())
}

/// `GET /v1/batch-monitors`: each batch monitor, its next scheduled run, the count range it
/// expects now, and its recent runs (newest first).
pub async fn list_batch_monitors(State(state): State<AppState>, headers: HeaderMap) -> ApiResult {
    state.authorize(&headers, Permission::Read).await?;
    let now = state.clock.now();
    let mut out = Vec::new();
    for m in &state.batch.list {
        let runs = state
            .store
            .list_runs(&switchyard_store::RunFilter {
                monitor: Some(m.name.clone()),
                limit: 20,
                ..Default::default()
            })
            .await?;
        let recent: Vec<i64> = runs
            .iter()
            .filter(|r| r.run.status == switchyard_core::batch::RunStatus::Succeeded)
            .filter_map(|r| r.run.count)
            .collect();
        out.push(json!({
            "name": m.name,
            "title": m.title,
            "criticality": m.criticality.as_str(),
            "schedule": m.expression,
            "runs_per_window": m.window.map(|(len, min)| json!({"window_seconds": len.num_seconds(), "min": min})),
            "timezone": m.timezone.name(),
            "grace_seconds": m.grace.num_seconds(),
            "max_duration_seconds": m.max_duration.map(|d| d.num_seconds()),
            "next_run": m.next_slot(now),
            "expected_count": m.count_range(&recent).map(|(low, high)| json!({"min": low, "max": high})),
            "runs": runs,
        }));
    }
    Ok(Json(json!({ "batch_monitors": out })).into_response())
}

/// `GET /v1/reconciliations`: each reconciliation, its next run and its recent runs with
/// their summaries (compared, matched, mismatched, missing on each side).
pub async fn list_reconciliations(State(state): State<AppState>, headers: HeaderMap) -> ApiResult {
    state.authorize(&headers, Permission::Read).await?;
    let now = state.clock.now();
    let mut out = Vec::new();
    for r in &state.reconciliations.list {
        let runs = state
            .store
            .list_runs(&switchyard_store::RunFilter {
                monitor: Some(r.name.clone()),
                limit: 20,
                ..Default::default()
            })
            .await?;
        let runs: Vec<Value> = runs
            .iter()
            .map(|run| {
                let mut v = serde_json::to_value(run).unwrap_or(Value::Null);
                if let Some(summary) = run
                    .run
                    .message
                    .as_deref()
                    .and_then(|m| serde_json::from_str::<Value>(m).ok())
                    .filter(Value::is_object)
                {
                    v["summary"] = summary;
                    v["message"] = Value::Null;
                }
                v
            })
            .collect();
        out.push(json!({
            "name": r.name,
            "title": r.title,
            "criticality": r.criticality.as_str(),
            "schedule": r.expression,
            "timezone": r.timezone.name(),
            "next_run": r.next_slot(now),
            "odoo": {"connection": r.odoo.connection, "model": r.odoo.model},
            "other": {"name": r.other_name, "url": r.other.url},
            "tolerance": r.tolerance,
            "runs": runs,
        }));
    }
    Ok(Json(json!({ "reconciliations": out })).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SummaryQuery {
    pub since: Option<String>,
    pub bucket_seconds: Option<i64>,
}

/// At most this many open late instances are grouped by dimension (newest first).
const LATE_SAMPLE: usize = 1000;

/// `GET /v1/workflows/{name}/summary`: SLA compliance over time (closed instances per
/// bucket: within SLA, late, cancelled), the cycle-time histogram of the same instances, and
/// the open at-risk, breached and stalled instances grouped by each dimension's value.
pub async fn workflow_summary(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    state.authorize(&headers, Permission::Read).await?;
    let q: SummaryQuery = parse_query(raw)?;
    let Some(wf) = state.workflows.get(&name) else {
        return Err(ApiError::new(
            Problem::NotFound,
            format!("no workflow \"{name}\""),
        ));
    };
    let now = state.clock.now();
    let since = time_param("since", q.since.as_deref())?.unwrap_or(now - chrono::Duration::days(1));
    if since >= now {
        return Err(bad_param("since", "must be in the past"));
    }
    let span = (now - since).num_seconds().max(1);
    // About 48 buckets over the span unless asked otherwise; at most 2,000.
    let bucket = match q.bucket_seconds {
        Some(b) if b < 1 => return Err(bad_param("bucket_seconds", "must be at least 1")),
        Some(b) if span / b > 2000 => {
            return Err(bad_param(
                "bucket_seconds",
                "at most 2000 buckets: choose wider buckets or a later since",
            ));
        }
        Some(b) => b,
        None => (span / 48).max(60),
    };
    let rows = state.store.closed_counts(&name, since, bucket).await?;
    let mut buckets: BTreeMap<chrono::DateTime<chrono::Utc>, [i64; 3]> = BTreeMap::new();
    let mut bins = vec![0i64; switchyard_store::CYCLE_BINS_SECONDS.len() + 1];
    for r in &rows {
        let slot = match r.state {
            InstanceState::Completed => 0,
            InstanceState::CompletedLate => 1,
            _ => 2,
        };
        buckets.entry(r.bucket).or_default()[slot] += r.count;
        if r.state != InstanceState::Cancelled
            && let Some(b) = bins.get_mut(r.cycle_bin)
        {
            *b += r.count;
        }
    }
    let compliance: Vec<Value> = buckets
        .iter()
        .map(|(start, [ok, late, cancelled])| {
            let done = ok + late;
            json!({
                "start": start,
                "within_sla": ok,
                "late": late,
                "cancelled": cancelled,
                "share_within_sla": (done > 0).then(|| *ok as f64 / done as f64),
            })
        })
        .collect();
    let cycle_time: Vec<Value> = bins
        .iter()
        .enumerate()
        .map(|(i, n)| {
            json!({
                "below_seconds": switchyard_store::CYCLE_BINS_SECONDS.get(i),
                "count": n,
            })
        })
        .collect();
    let late = state
        .store
        .list_instances(&InstanceFilter {
            workflow: Some(name.clone()),
            states: vec![
                InstanceState::AtRisk,
                InstanceState::Breached,
                InstanceState::Stalled,
            ],
            limit: LATE_SAMPLE,
            ..Default::default()
        })
        .await?;
    let mut by_dim: BTreeMap<String, BTreeMap<String, BTreeMap<&str, i64>>> = wf
        .dimensions
        .iter()
        .map(|(d, _)| (d.clone(), BTreeMap::new()))
        .collect();
    for r in &late {
        for (d, groups) in by_dim.iter_mut() {
            let value = r
                .instance
                .dimensions
                .get(d)
                .cloned()
                .unwrap_or_else(|| "(none)".to_string());
            *groups
                .entry(value)
                .or_default()
                .entry(r.instance.state.as_str())
                .or_default() += 1;
        }
    }
    Ok(Json(json!({
        "workflow": name,
        "since": since,
        "until": now,
        "bucket_seconds": bucket,
        "compliance": compliance,
        "cycle_time": cycle_time,
        "late_by_dimension": by_dim,
        "late_sampled": late.len(),
        "late_truncated": late.len() == LATE_SAMPLE,
    }))
    .into_response())
}
