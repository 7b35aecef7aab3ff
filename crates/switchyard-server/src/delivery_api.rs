//! Flows, deliveries, dead letters and destinations over `/v1`, and the replay and discard
//! operations the API and the bulk jobs share (one implementation, audited in the store).

use crate::AppState;
use crate::api::{ApiResult, bad_param, check_limit, json_body, parse_query, time_param};
use crate::error::{ApiError, FieldError, Problem};
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use switchyard_core::delivery::ErrorClass;
use switchyard_core::flows::Routed;
use switchyard_core::token::Permission;
use switchyard_store::{DeliveryFilter, DeliveryRecord, DeliveryState, Replay};

/// Filters shared by `/v1/deliveries`, `/v1/dlq` and the bulk jobs.
#[derive(Debug, Default, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryQuery {
    pub flow: Option<String>,
    pub destination: Option<String>,
    /// Comma-separated states (deliveries only).
    pub state: Option<String>,
    /// Error class: transient, credential, permanent, mapping, invalid.
    pub class: Option<String>,
    pub event_seq: Option<i64>,
    /// Ordering key.
    pub key: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub after: Option<i64>,
    pub limit: Option<usize>,
}

impl DeliveryQuery {
    pub fn filter(&self, dead_letters_only: bool) -> Result<DeliveryFilter, ApiError> {
        let mut states = Vec::new();
        if let Some(s) = &self.state {
            for part in s.split(',').filter(|p| !p.is_empty()) {
                states.push(DeliveryState::parse(part).ok_or_else(|| {
                    bad_param(
                        "state",
                        format!(
                            "unknown state \"{part}\" (known: {})",
                            DeliveryState::ALL.map(|s| s.as_str()).join(", ")
                        ),
                    )
                })?);
            }
        }
        if dead_letters_only {
            if states.is_empty() {
                states = DeliveryState::DEAD_LETTERS.to_vec();
            } else if let Some(s) = states.iter().find(|s| !s.is_dead_letter()) {
                return Err(bad_param(
                    "state",
                    format!("\"{}\" is not a dead-letter state", s.as_str()),
                ));
            }
        }
        let class = match &self.class {
            None => None,
            Some(c) => Some(ErrorClass::parse(c).ok_or_else(|| {
                bad_param(
                    "class",
                    format!("unknown class \"{c}\" (known: transient, credential, permanent, mapping, invalid)"),
                )
            })?),
        };
        Ok(DeliveryFilter {
            flow: self.flow.clone(),
            destination: self.destination.clone(),
            states,
            class,
            event_seq: self.event_seq,
            ordering_key: self.key.clone(),
            since: time_param("since", self.since.as_deref())?,
            until: time_param("until", self.until.as_deref())?,
            updated_since: None,
            after: self.after.unwrap_or(0),
            limit: check_limit(self.limit, 100, 1000)?,
        })
    }
}

fn page(items: Vec<DeliveryRecord>, limit: usize) -> Value {
    let next = if items.len() == limit {
        items.last().map(|d| d.id)
    } else {
        None
    };
    json!({"deliveries": items, "next_after": next})
}

/// `GET /v1/deliveries`: every recorded outcome, filterable, in id order.
pub async fn list_deliveries(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    list(state, headers, raw, false).await
}

/// `GET /v1/dlq`: the dead-letter queue (mapping failed, invalid, dead).
pub async fn list_dlq(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    list(state, headers, raw, true).await
}

async fn list(
    state: AppState,
    headers: HeaderMap,
    raw: Option<String>,
    dead_letters_only: bool,
) -> ApiResult {
    state.authorize(&headers, Permission::Read).await?;
    let q: DeliveryQuery = parse_query(raw)?;
    let f = q.filter(dead_letters_only)?;
    let items = state.store.list_deliveries(&f).await?;
    Ok(Json(page(items, f.limit)).into_response())
}

fn parse_id(id: &str) -> Result<i64, ApiError> {
    id.parse()
        .map_err(|_| bad_param("id", "must be an integer"))
}

/// `GET /v1/deliveries/{id}`: the delivery, its attempts and its event.
pub async fn get_delivery(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    show(state, headers, id, false).await
}

/// `GET /v1/dlq/{id}`: like `/v1/deliveries/{id}`, for dead letters only.
pub async fn get_dead_letter(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    show(state, headers, id, true).await
}

async fn show(state: AppState, headers: HeaderMap, id: String, dead_only: bool) -> ApiResult {
    state.authorize(&headers, Permission::Read).await?;
    let id = parse_id(&id)?;
    let d = state
        .store
        .get_delivery(id)
        .await?
        .filter(|d| !dead_only || d.state.is_dead_letter())
        .ok_or_else(|| {
            ApiError::new(
                Problem::NotFound,
                if dead_only {
                    format!("no dead letter {id}")
                } else {
                    format!("no delivery {id}")
                },
            )
        })?;
    let attempts = state.store.list_attempts(id).await?;
    let event = state
        .store
        .get_event(d.event_seq)
        .await?
        .map(|e| crate::api::event_json(&e));
    Ok(Json(json!({"delivery": d, "attempts": attempts, "event": event})).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayBody {
    reason: String,
    /// An edited payload to send instead (validated against the flow's schema).
    payload: Option<Value>,
    /// Map the stored event again with the flow as configured now.
    #[serde(default)]
    remap: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReasonBody {
    reason: String,
}

fn need_reason(reason: &str) -> Result<(), ApiError> {
    if reason.trim().is_empty() || reason.len() > 1000 {
        return Err(bad_param("reason", "say why, in 1 to 1000 characters"));
    }
    Ok(())
}

/// Replays one dead letter (see [`replay`]).
pub async fn replay_dlq(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> ApiResult {
    let caller = state.authorize(&headers, Permission::Operate).await?;
    let id = parse_id(&id)?;
    let b: ReplayBody = json_body(
        &headers,
        body,
        "{\"reason\": string, \"payload\"?: JSON, \"remap\"?: bool}",
    )
    .await?;
    need_reason(&b.reason)?;
    let d = replay(&state, id, &caller.name, &b.reason, b.payload, b.remap).await?;
    Ok(Json(d).into_response())
}

/// Discards one dead letter.
pub async fn discard_dlq(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> ApiResult {
    let caller = state.authorize(&headers, Permission::Operate).await?;
    let id = parse_id(&id)?;
    let b: ReasonBody = json_body(&headers, body, "{\"reason\": string}").await?;
    need_reason(&b.reason)?;
    let d = state
        .store
        .discard_delivery(id, &caller.name, &b.reason, state.clock.now())
        .await?;
    tracing::info!(delivery = id, actor = %caller.name, "dead letter discarded");
    Ok(Json(d).into_response())
}

fn schema_errors(errors: &[switchyard_core::flows::SchemaError]) -> Vec<FieldError> {
    errors
        .iter()
        .map(|e| FieldError {
            index: None,
            field: "payload".into(),
            pointer: Some(format!("/payload{}", e.pointer)),
            header: None,
            detail: e.message.clone(),
        })
        .collect()
}

/// Starts a new generation of a dead letter:
/// - with `payload`: sends that (an edit), after checking it against the flow's schema;
/// - for a mapping or schema failure, or with `remap`: maps the stored event again with the
///   flow as configured now (after a fix);
/// - otherwise sends the stored payload again.
///
/// The idempotency key gets the new generation, so receivers do not drop the replay. A
/// payload or mapping that still fails is refused, and nothing changes.
pub async fn replay(
    state: &AppState,
    id: i64,
    actor: &str,
    reason: &str,
    payload: Option<Value>,
    remap: bool,
) -> Result<DeliveryRecord, ApiError> {
    let d = state
        .store
        .get_delivery(id)
        .await?
        .ok_or_else(|| ApiError::new(Problem::NotFound, format!("no delivery {id}")))?;
    if !d.state.is_dead_letter() {
        return Err(ApiError::new(
            Problem::Conflict,
            format!(
                "delivery {id} is {}; only dead letters (mapping_failed, invalid, dead) can be replayed",
                d.state.as_str()
            ),
        ));
    }
    let flow = state.engine.flows().flow(&d.flow);
    let mut r = Replay {
        id,
        actor: actor.to_string(),
        reason: reason.to_string(),
        at: state.clock.now(),
        state: DeliveryState::Scheduled,
        payload: None,
        flow_version: None,
        ordering_key: None,
        error: None,
        error_detail: None,
        action: "dlq.replay".into(),
    };
    if let Some(p) = payload {
        let flow = flow.ok_or_else(|| {
            ApiError::new(
                Problem::Conflict,
                format!(
                    "flow \"{}\" is no longer configured; cannot validate an edit",
                    d.flow
                ),
            )
        })?;
        if let Err(errors) = flow.validate(&p) {
            return Err(ApiError::new(
                Problem::Invalid,
                format!(
                    "the edited payload breaks flow \"{}\"'s schema: {}; nothing was replayed",
                    d.flow,
                    switchyard_deliver::router::summarise(&errors)
                ),
            )
            .with_errors(schema_errors(&errors)));
        }
        r.payload = Some(p);
        r.action = "dlq.edit".into();
    } else if remap || d.payload.is_none() || d.state != DeliveryState::Dead {
        let flow = flow.ok_or_else(|| {
            ApiError::new(
                Problem::Conflict,
                format!(
                    "flow \"{}\" is no longer configured; cannot map the event again",
                    d.flow
                ),
            )
        })?;
        let event = state.store.get_event(d.event_seq).await?;
        let event = match event {
            Some(e) if !e.payload_purged => e.event,
            _ => {
                return Err(ApiError::new(
                    Problem::Conflict,
                    format!(
                        "event {} is no longer stored in full (retention); replay with an edited payload instead",
                        d.event_seq
                    ),
                ));
            }
        };
        match flow.route_event(&event) {
            Routed::Ready {
                payload,
                ordering_key,
            } => {
                r.payload = Some(payload);
                r.ordering_key = Some(ordering_key);
                r.flow_version = Some(flow.version.clone());
            }
            Routed::Filtered => {
                return Err(ApiError::new(
                    Problem::Conflict,
                    format!(
                        "flow \"{}\" now filters this event out; discard it instead",
                        d.flow
                    ),
                ));
            }
            Routed::MappingFailed { error } => {
                return Err(ApiError::new(
                    Problem::Invalid,
                    format!(
                        "flow \"{}\" still cannot map this event: {error}; nothing was replayed",
                        d.flow
                    ),
                ));
            }
            Routed::Invalid { errors, .. } => {
                return Err(ApiError::new(
                    Problem::Invalid,
                    format!(
                        "flow \"{}\" still maps this event to an invalid payload: {}; nothing was replayed",
                        d.flow,
                        switchyard_deliver::router::summarise(&errors)
                    ),
                )
                .with_errors(schema_errors(&errors)));
            }
        }
    }
    let out = state.store.replay_delivery(r).await?;
    tracing::info!(
        delivery = id,
        actor,
        generation = out.generation,
        "dead letter replayed"
    );
    state.engine.wake();
    Ok(out)
}

/// `GET /v1/flows`: every flow as configured, with its deliveries counted by state.
pub async fn list_flows(State(state): State<AppState>, headers: HeaderMap) -> ApiResult {
    state.authorize(&headers, Permission::Read).await?;
    let stats = state.store.delivery_stats().await?;
    let now = state.clock.now();
    let flows: Vec<Value> = state
        .engine
        .flows()
        .flows()
        .iter()
        .map(|f| {
            let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
            let mut oldest = None;
            for s in stats.iter().filter(|s| s.flow == f.name) {
                *counts.entry(s.state.as_str()).or_default() += s.count;
                if s.state.is_pending() {
                    oldest = Some(oldest.map_or(s.oldest_created_at, |o: chrono::DateTime<chrono::Utc>| o.min(s.oldest_created_at)));
                }
            }
            let c = &f.config;
            json!({
                "name": f.name,
                "version": f.version,
                "destination": f.destination,
                "priority": f.lane,
                "match": {"source": c.matches.source, "type": c.matches.types, "filter": c.matches.filter},
                "map": c.map.clone().unwrap_or_else(|| ".data".into()),
                "schema": c.schema_file.clone().map(|p| json!({"file": p})).or_else(|| c.schema.as_ref().map(|_| json!("inline"))),
                "ordering": c.ordering.as_ref().map(|o| json!({"key": o.key, "on_failure": o.on_failure})),
                "retry": f.retry,
                "deliveries": counts,
                "oldest_undelivered_seconds": oldest.map(|o| (now - o).num_milliseconds().max(0) as f64 / 1000.0),
            })
        })
        .collect();
    Ok(Json(json!({"flows": flows})).into_response())
}

/// `GET /v1/destinations`: circuit, pause, slots and rate share per destination (this node),
/// and the lanes.
pub async fn list_destinations(State(state): State<AppState>, headers: HeaderMap) -> ApiResult {
    state.authorize(&headers, Permission::Read).await?;
    // Pauses are shared through the store: read them fresh, not from this node's cache.
    let pauses = state.store.destination_pauses().await?;
    let mut dests = state.engine.destinations();
    for d in &mut dests {
        d.paused = pauses.iter().find(|p| p.destination == d.name).cloned();
    }
    Ok(Json(json!({
        "node": &*state.node_id,
        "destinations": dests,
        "lanes": state.engine.lanes(),
    }))
    .into_response())
}

/// `POST /v1/destinations/{name}/resume`: lifts a credential pause (audited).
pub async fn resume_destination(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Body,
) -> ApiResult {
    let caller = state.authorize(&headers, Permission::Operate).await?;
    let b: ReasonBody = json_body(&headers, body, "{\"reason\": string}").await?;
    need_reason(&b.reason)?;
    if state.engine.flows().destination(&name).is_none() {
        return Err(ApiError::new(
            Problem::NotFound,
            format!("no destination \"{name}\""),
        ));
    }
    let resumed = state
        .store
        .resume_destination(&name, &caller.name, &b.reason, state.clock.now())
        .await?;
    if !resumed {
        return Err(ApiError::new(
            Problem::Conflict,
            format!("destination \"{name}\" is not paused"),
        ));
    }
    state.engine.resumed(&name);
    tracing::info!(destination = %name, actor = %caller.name, "destination resumed by hand");
    Ok(Json(json!({"destination": name, "resumed": true})).into_response())
}
