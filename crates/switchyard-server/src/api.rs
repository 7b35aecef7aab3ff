//! The read and operator routes of `/v1` (events, tokens, jobs, cluster): thin handlers that
//! authorize, call the store, and shape JSON. Nothing here decides business behaviour.

use crate::AppState;
use crate::error::{ApiError, FieldError, Problem};
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use switchyard_core::token::{Permission, Role, check_token_name, generate_token, hash_token};
use switchyard_store::{EventFilter, LogPosition, NewToken, StoredEvent};

pub type ApiResult = Result<Response, ApiError>;

/// Largest JSON body accepted by the management routes (tokens, jobs).
const MAX_API_BODY: usize = 64 * 1024;

/// Parses the query string after the caller is authorized, so a bad parameter is a
/// problem+json 400 and an unauthenticated caller learns nothing about parameters.
pub(crate) fn parse_query<T: serde::de::DeserializeOwned>(
    raw: Option<String>,
) -> Result<T, ApiError> {
    serde_urlencoded::from_str(raw.as_deref().unwrap_or(""))
        .map_err(|e| bad_param("query", format!("bad query string: {e}")))
}

/// Reads a JSON request body of at most [`MAX_API_BODY`] bytes.
pub(crate) async fn json_body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    shape: &str,
) -> Result<T, ApiError> {
    let bytes = crate::ingest::read_limited(headers, body, MAX_API_BODY).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::new(Problem::Malformed, format!("expected {shape}: {e}")))
}

pub(crate) fn check_limit(
    limit: Option<usize>,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    let limit = limit.unwrap_or(default);
    if (1..=max).contains(&limit) {
        Ok(limit)
    } else {
        Err(bad_param("limit", format!("must be between 1 and {max}")))
    }
}

pub(crate) fn bad_param(field: &str, detail: impl Into<String>) -> ApiError {
    let detail = detail.into();
    ApiError::new(Problem::Invalid, format!("{field}: {detail}")).with_errors(vec![FieldError {
        index: None,
        field: field.into(),
        pointer: None,
        header: None,
        detail,
    }])
}

/// The API shape of a stored event: where it is in the log and the event itself in the
/// CloudEvents JSON format. Payload rendering lives here only, so masking can be applied in
/// one place later.
pub fn event_json(e: &StoredEvent) -> Value {
    json!({
        "seq": e.seq,
        "position": e.position,
        "received_at": e.received_at,
        "keys": e.keys,
        "payload_purged": e.payload_purged,
        "event": e.event.to_json(),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    pub after: Option<String>,
    pub limit: Option<usize>,
    pub source: Option<String>,
    #[serde(rename = "type")]
    pub ty: Option<String>,
    pub subject: Option<String>,
    /// With `source`: the one event with this CloudEvents id.
    pub id: Option<String>,
    /// Events carrying a business key with this value (any key name unless `key_name`).
    pub key: Option<String>,
    pub key_name: Option<String>,
    /// Received at or after this RFC 3339 time (business time).
    pub since: Option<String>,
    /// Received before this RFC 3339 time.
    pub until: Option<String>,
}

pub(crate) fn time_param(
    field: &str,
    v: Option<&str>,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, ApiError> {
    v.map(|t| {
        chrono::DateTime::parse_from_rfc3339(t)
            .map(|t| t.with_timezone(&chrono::Utc))
            .map_err(|e| bad_param(field, format!("\"{t}\" is not an RFC 3339 time: {e}")))
    })
    .transpose()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OneQuery {
    pub source: String,
    pub id: String,
}

/// `GET /v1/events/one?source=…&id=…`: the event with this CloudEvents `source` and `id`.
/// Both go in the query string because both may contain `/`.
pub async fn get_one_event(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    state.authorize(&headers, Permission::Read).await?;
    let q: OneQuery = parse_query(raw)?;
    match state.store.find_event(&q.source, &q.id).await? {
        Some(e) => Ok(Json(event_json(&e)).into_response()),
        None => Err(ApiError::new(
            Problem::NotFound,
            format!("no event with id \"{}\" from source \"{}\"", q.id, q.source),
        )),
    }
}

/// `GET /v1/events`: the log in commit order, from a cursor.
pub async fn list_events(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    state.authorize(&headers, Permission::Read).await?;
    let q: EventsQuery = parse_query(raw)?;
    if let Some(id) = &q.id {
        let source = q
            .source
            .as_deref()
            .ok_or_else(|| bad_param("source", "required together with id"))?;
        let found = state.store.find_event(source, id).await?;
        let events: Vec<Value> = found.iter().map(event_json).collect();
        return Ok(Json(json!({"events": events, "next": null})).into_response());
    }
    let after = match q.after.as_deref() {
        Some("latest") => {
            let head = state.store.log_head().await?;
            return Ok(Json(json!({"events": [], "next": head})).into_response());
        }
        Some(a) => a
            .parse::<LogPosition>()
            .map_err(|e| bad_param("after", e))?,
        None => LogPosition::START,
    };
    let limit = check_limit(q.limit, 100, 1000)?;
    if q.key_name.is_some() && q.key.is_none() {
        return Err(bad_param("key_name", "only meaningful together with key"));
    }
    let filter = EventFilter {
        since: time_param("since", q.since.as_deref())?,
        until: time_param("until", q.until.as_deref())?,
        source: q.source,
        ty: q.ty,
        subject: q.subject,
        key: q.key,
        key_name: q.key_name,
    };
    let page = state.store.read_log(after, limit, &filter).await?;
    let events: Vec<Value> = page.events.iter().map(event_json).collect();
    Ok(Json(json!({"events": events, "next": page.next})).into_response())
}

/// `GET /v1/events/{seq}`
pub async fn get_event(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(seq): Path<String>,
) -> ApiResult {
    state.authorize(&headers, Permission::Read).await?;
    let seq: i64 = seq
        .parse()
        .map_err(|_| bad_param("seq", "must be an integer"))?;
    match state.store.get_event(seq).await? {
        Some(e) => Ok(Json(event_json(&e)).into_response()),
        None => Err(ApiError::new(
            Problem::NotFound,
            format!("no event with seq {seq}"),
        )),
    }
}

/// `GET /v1/tokens` (admin): every token, never a secret or hash.
pub async fn list_tokens(State(state): State<AppState>, headers: HeaderMap) -> ApiResult {
    state.authorize(&headers, Permission::Administer).await?;
    let tokens = state.store.list_tokens().await?;
    Ok(Json(json!({ "tokens": tokens })).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    pub name: String,
    pub role: String,
}

/// `POST /v1/tokens` (admin): the clear token is in this response only.
pub async fn create_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let caller = state.authorize(&headers, Permission::Administer).await?;
    let req: CreateToken = json_body(&headers, body, "{\"name\": …, \"role\": …}").await?;
    check_token_name(&req.name).map_err(|e| bad_param("name", e))?;
    let role: Role = req.role.parse().map_err(|e: String| bad_param("role", e))?;
    let secret = generate_token();
    let rec = state
        .store
        .create_token(
            NewToken {
                name: req.name,
                role,
                hash: hash_token(&secret),
                created_at: state.clock.now(),
            },
            &caller.name,
        )
        .await?;
    tracing::info!(token_id = rec.id, name = %rec.name, role = %rec.role, actor = %caller.name, "token created");
    let mut body = serde_json::to_value(&rec).unwrap_or_default();
    body["token"] = secret.into();
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `DELETE /v1/tokens/{id}` (admin)
pub async fn revoke_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    let caller = state.authorize(&headers, Permission::Administer).await?;
    let id: i64 = id
        .parse()
        .map_err(|_| bad_param("id", "must be an integer"))?;
    let rec = state
        .store
        .revoke_token(id, &caller.name, state.clock.now())
        .await?;
    state.tokens.forget(id);
    tracing::info!(token_id = id, name = %rec.name, actor = %caller.name, "token revoked");
    Ok(Json(rec).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsQuery {
    pub limit: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    pub limit: Option<usize>,
    pub after: Option<i64>,
    pub target: Option<String>,
}

/// `GET /v1/jobs`: newest first.
pub async fn list_jobs(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    state.authorize(&headers, Permission::Read).await?;
    let q: JobsQuery = parse_query(raw)?;
    let jobs = state
        .store
        .list_jobs(check_limit(q.limit, 50, 1000)?)
        .await?;
    Ok(Json(json!({ "jobs": jobs })).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateJob {
    pub kind: String,
    #[serde(default)]
    pub params: Value,
}

/// `POST /v1/jobs`: queues a server-side job; the role it needs depends on its kind.
pub async fn create_job(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    // Authenticate before looking at the body; the kind decides the role needed.
    let caller = state.authorize(&headers, Permission::Read).await?;
    let req: CreateJob = json_body(&headers, body, "{\"kind\": …, \"params\": {…}}").await?;
    let kind = crate::jobs::JobKind::parse(&req.kind).ok_or_else(|| {
        bad_param(
            "kind",
            format!(
                "unknown job kind \"{}\" (known: events.purge, flows.backfill, dlq.replay, dlq.discard)",
                req.kind
            ),
        )
    })?;
    if !caller.role.allows(kind.permission()) {
        return Err(ApiError::new(
            Problem::Forbidden,
            format!(
                "token \"{}\" has role {}, which may not start {}",
                caller.name,
                caller.role,
                kind.name()
            ),
        ));
    }
    kind.check(&req.params)?;
    let now = state.clock.now();
    let job = state
        .store
        .create_job(switchyard_store::NewJob {
            kind: kind.name().into(),
            params: req.params.clone(),
            created_by: caller.name.clone(),
            created_at: now,
        })
        .await?;
    tracing::info!(job_id = job.id, kind = %job.kind, actor = %caller.name, "job queued");
    Ok((StatusCode::CREATED, Json(job)).into_response())
}

/// `GET /v1/jobs/{id}`: state and progress of one job.
pub async fn get_job(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    state.authorize(&headers, Permission::Read).await?;
    let id: i64 = id
        .parse()
        .map_err(|_| bad_param("id", "must be an integer"))?;
    match state.store.get_job(id).await? {
        Some(j) => Ok(Json(j).into_response()),
        None => Err(ApiError::new(Problem::NotFound, format!("no job {id}"))),
    }
}

/// `GET /v1/audit` (admin): who did what, oldest first, from `after`. The history of one
/// delivery (`target=delivery:7`: its replays, edits and discards) needs only read rights,
/// like the delivery itself.
pub async fn list_audit(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let caller = state.authorize(&headers, Permission::Read).await?;
    let q: AuditQuery = parse_query(raw)?;
    let one_delivery = q
        .target
        .as_deref()
        .and_then(|t| t.strip_prefix("delivery:"))
        .is_some_and(|id| id.parse::<i64>().is_ok());
    if !one_delivery && !caller.role.allows(Permission::Administer) {
        return Err(ApiError::new(
            Problem::Forbidden,
            format!(
                "token \"{}\" has role {}, which does not allow this (without target=delivery:<id>, the audit log is for admins)",
                caller.name, caller.role
            ),
        ));
    }
    let records = state
        .store
        .list_audit(
            q.after.unwrap_or(0),
            q.target.as_deref(),
            check_limit(q.limit, 100, 10_000)?,
        )
        .await?;
    Ok(Json(json!({ "audit": records })).into_response())
}

/// `GET /v1/sources`: every declared source (and the undeclared rest) with its keys,
/// retention, storage, recent rate and lag, and health (as of the last measurement, at most
/// 30 s old).
pub async fn sources(State(state): State<AppState>, headers: HeaderMap) -> ApiResult {
    state.authorize(&headers, Permission::Read).await?;
    Ok(Json(json!({
        "accept_undeclared": state.sources.accept_undeclared,
        "sources": state.usage.reports(),
    }))
    .into_response())
}

/// `GET /v1/probes`: the latest API-health probe of every Odoo connection and HTTP
/// destination (the "API health" monitoring layer), whichever node ran it.
pub async fn probes(State(state): State<AppState>, headers: HeaderMap) -> ApiResult {
    state.authorize(&headers, Permission::Read).await?;
    let results = state.probes.results().await?;
    Ok(Json(json!({
        "interval_seconds": state.probes.config.interval_seconds,
        "credential_warning_days": state.probes.config.credential_warning_days,
        "probes": results,
    }))
    .into_response())
}

/// `GET /v1/me`: who this token is and what it may do — the web UI's login check, and what
/// it shows or hides (the server enforces every permission on its own).
pub async fn me(State(state): State<AppState>, headers: HeaderMap) -> ApiResult {
    let caller = state.authorize(&headers, Permission::Read).await?;
    let may = |p: Permission| caller.role.allows(p);
    Ok(Json(json!({
        "name": caller.name,
        "role": caller.role.as_str(),
        "permissions": {
            "ingest": may(Permission::Ingest),
            "read": may(Permission::Read),
            "operate": may(Permission::Operate),
            "administer": may(Permission::Administer),
        },
    }))
    .into_response())
}

/// `GET /v1/cluster`: the nodes sharing this store and who holds which singleton lease.
pub async fn cluster(State(state): State<AppState>, headers: HeaderMap) -> ApiResult {
    state.authorize(&headers, Permission::Read).await?;
    let now = state.clock.real_now();
    let nodes: Vec<Value> = state
        .store
        .list_nodes()
        .await?
        .into_iter()
        .map(|n| {
            let live = (now - n.heartbeat_at) < crate::node::LIVE_WITHIN;
            let mut v = serde_json::to_value(&n).unwrap_or_default();
            v["live"] = live.into();
            v
        })
        .collect();
    let leases = state.store.list_leases().await?;
    Ok(Json(json!({
        "this_node": &*state.node_id,
        "backend": state.store.backend(),
        "nodes": nodes,
        "leases": leases,
    }))
    .into_response())
}
