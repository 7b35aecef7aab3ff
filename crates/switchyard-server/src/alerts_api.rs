//! Alerts, incidents and silences over `/v1`: list alerts; list incidents with their
//! timeline and alerts, acknowledge, resolve and comment on them; MTTA/MTTR; create, list
//! and expire silences; and `POST /v1/routes/test` (which receivers an alert with these
//! labels would reach). Reading needs `read`; changing needs `operate`.

use crate::AppState;
use crate::api::{ApiResult, bad_param, check_limit, json_body, parse_query, time_param};
use crate::error::{ApiError, Problem};
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use switchyard_core::alerts::{Labels, Matcher};
use switchyard_core::token::Permission;
use switchyard_store::{
    AlertFilter, AlertState, IncidentAction, IncidentActionKind, IncidentFilter, IncidentRecord,
    IncidentStatus, NewSilence,
};

fn parse_id(field: &str, id: &str) -> Result<i64, ApiError> {
    id.parse()
        .map_err(|_| bad_param(field, "must be an integer"))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsQuery {
    /// `firing` or `resolved`.
    pub state: Option<String>,
    pub incident: Option<i64>,
    pub since: Option<String>,
    pub limit: Option<usize>,
}

/// `GET /v1/alerts`: most recently changed first, with whether each is suppressed and why.
pub async fn list_alerts(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    state.authorize(&headers, Permission::Read).await?;
    let q: AlertsQuery = parse_query(raw)?;
    let st = match q.state.as_deref() {
        None => None,
        Some(s) => {
            Some(AlertState::parse(s).ok_or_else(|| bad_param("state", "firing or resolved"))?)
        }
    };
    let alerts = state
        .store
        .list_alerts(&AlertFilter {
            state: st,
            incident_id: q.incident,
            since: time_param("since", q.since.as_deref())?,
            limit: check_limit(q.limit, 100, 10_000)?,
        })
        .await?;
    let alerts: Vec<Value> = alerts
        .iter()
        .map(|a| {
            let mut v = serde_json::to_value(a).unwrap_or(Value::Null);
            v["evidence"] = crate::alerting::state::public_evidence(&a.evidence);
            v
        })
        .collect();
    Ok(Json(json!({ "alerts": alerts })).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncidentsQuery {
    /// Comma-separated: open, acknowledged, resolved.
    pub status: Option<String>,
    pub team: Option<String>,
    pub since: Option<String>,
    pub before: Option<i64>,
    pub limit: Option<usize>,
}

fn statuses(s: Option<&str>) -> Result<Vec<IncidentStatus>, ApiError> {
    s.map(|s| {
        s.split(',')
            .filter(|p| !p.is_empty())
            .map(|p| {
                IncidentStatus::parse(p).ok_or_else(|| {
                    bad_param(
                        "status",
                        format!("unknown status \"{p}\" (open, acknowledged, resolved)"),
                    )
                })
            })
            .collect()
    })
    .unwrap_or(Ok(Vec::new()))
}

/// `GET /v1/incidents`: newest first.
pub async fn list_incidents(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    state.authorize(&headers, Permission::Read).await?;
    let q: IncidentsQuery = parse_query(raw)?;
    let incidents = state
        .store
        .list_incidents(&IncidentFilter {
            status: statuses(q.status.as_deref())?,
            team: q.team,
            since: time_param("since", q.since.as_deref())?,
            before_id: q.before,
            limit: check_limit(q.limit, 100, 10_000)?,
        })
        .await?;
    let next_before = incidents.last().map(|i| i.id);
    Ok(Json(json!({ "incidents": incidents, "next_before": next_before })).into_response())
}

/// `GET /v1/incidents/{id}`: the incident, its timeline and its alerts.
pub async fn get_incident(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    state.authorize(&headers, Permission::Read).await?;
    let id = parse_id("id", &id)?;
    let Some(incident) = state.store.get_incident(id).await? else {
        return Err(ApiError::new(
            Problem::NotFound,
            format!("no incident {id}"),
        ));
    };
    let timeline = state.store.incident_timeline(id).await?;
    let alerts = state
        .store
        .list_alerts(&AlertFilter {
            incident_id: Some(id),
            limit: 1000,
            ..Default::default()
        })
        .await?;
    Ok(
        Json(json!({ "incident": incident, "timeline": timeline, "alerts": alerts }))
            .into_response(),
    )
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionBody {
    #[serde(default)]
    pub comment: Option<String>,
}

async fn act(
    state: AppState,
    headers: HeaderMap,
    id: String,
    body: Body,
    kind: IncidentActionKind,
) -> ApiResult {
    let caller = state.authorize(&headers, Permission::Operate).await?;
    let id = parse_id("id", &id)?;
    let empty = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .is_some_and(|v| v == "0");
    let b: ActionBody = if empty
        || (kind != IncidentActionKind::Comment
            && !headers.contains_key(axum::http::header::CONTENT_TYPE))
    {
        ActionBody::default()
    } else {
        json_body(&headers, body, "{\"comment\": string}").await?
    };
    let text = b.comment.unwrap_or_default();
    if kind == IncidentActionKind::Comment && text.trim().is_empty() {
        return Err(bad_param("comment", "a comment needs text"));
    }
    let i = state
        .store
        .incident_action(IncidentAction {
            id,
            kind,
            actor: caller.name.clone(),
            at: state.clock.now(),
            text,
        })
        .await
        .map_err(|e| match e {
            switchyard_store::Error::NotFound(_) => {
                ApiError::new(Problem::NotFound, format!("no incident {id}"))
            }
            switchyard_store::Error::Conflict(m) => ApiError::new(Problem::Conflict, m),
            e => e.into(),
        })?;
    tracing::info!(incident = id, actor = %caller.name, action = ?kind, "incident changed by hand");
    Ok(Json(i).into_response())
}

/// `POST /v1/incidents/{id}/ack`
pub async fn ack(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> ApiResult {
    act(state, headers, id, body, IncidentActionKind::Acknowledge).await
}

/// `POST /v1/incidents/{id}/resolve`
pub async fn resolve(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> ApiResult {
    act(state, headers, id, body, IncidentActionKind::Resolve).await
}

/// `POST /v1/incidents/{id}/comments`
pub async fn comment(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> ApiResult {
    act(state, headers, id, body, IncidentActionKind::Comment).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    pub since: Option<String>,
}

/// MTTA and MTTR (seconds) over incidents, per team, severity and cause; alert volume and
/// the share of alerts acknowledged. Pure, for tests.
pub fn incident_stats(
    incidents: &[IncidentRecord],
    alerts: &[switchyard_store::AlertRecord],
) -> Value {
    #[derive(Default)]
    struct Acc {
        n: i64,
        ack: Vec<f64>,
        res: Vec<f64>,
    }
    let mut by: BTreeMap<(String, String), Acc> = BTreeMap::new();
    for i in incidents {
        for (dim, key) in [
            ("all", "all".to_string()),
            ("team", i.team.clone()),
            ("severity", i.severity.as_str().to_string()),
            ("cause", i.cause.as_str().to_string()),
        ] {
            let a = by.entry((dim.to_string(), key)).or_default();
            a.n += 1;
            if let Some(t) = i.acknowledged_at {
                a.ack
                    .push((t - i.opened_at).num_milliseconds() as f64 / 1000.0);
            }
            if let Some(t) = i.resolved_at {
                a.res
                    .push((t - i.opened_at).num_milliseconds() as f64 / 1000.0);
            }
        }
    }
    let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    let mut out: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
    for ((dim, key), a) in by {
        out.entry(dim).or_default().insert(
            key,
            json!({
                "incidents": a.n,
                "acknowledged": a.ack.len(),
                "resolved": a.res.len(),
                "mtta_seconds": mean(&a.ack),
                "mttr_seconds": mean(&a.res),
            }),
        );
    }
    let acked = alerts
        .iter()
        .filter(|a| a.acknowledged_at.is_some())
        .count();
    json!({
        "all": out.remove("all").and_then(|mut m| m.remove("all")).unwrap_or(json!({"incidents": 0})),
        "by_team": out.remove("team").unwrap_or_default(),
        "by_severity": out.remove("severity").unwrap_or_default(),
        "by_cause": out.remove("cause").unwrap_or_default(),
        "alerts": alerts.len(),
        "alerts_acknowledged_share": if alerts.is_empty() { Value::Null } else { json!(acked as f64 / alerts.len() as f64) },
    })
}

/// `GET /v1/incidents/stats?since=`: MTTA/MTTR per team, severity and cause, alert volume
/// and the share acknowledged, over incidents opened since then (default 30 days).
pub async fn stats(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    state.authorize(&headers, Permission::Read).await?;
    let q: StatsQuery = parse_query(raw)?;
    let since = time_param("since", q.since.as_deref())?
        .unwrap_or_else(|| state.clock.now() - chrono::Duration::days(30));
    let incidents = state
        .store
        .list_incidents(&IncidentFilter {
            since: Some(since),
            limit: 10_000,
            ..Default::default()
        })
        .await?;
    let alerts = state
        .store
        .list_alerts(&AlertFilter {
            since: Some(since),
            limit: 100_000,
            ..Default::default()
        })
        .await?;
    let mut v = incident_stats(&incidents, &alerts);
    v["since"] = json!(since);
    Ok(Json(v).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SilenceBody {
    pub matchers: Vec<String>,
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: DateTime<Utc>,
    pub comment: String,
}

/// `POST /v1/silences`: matchers in Alertmanager's syntax, an end after the start, a
/// comment. The creator is the token's name.
pub async fn create_silence(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let caller = state.authorize(&headers, Permission::Operate).await?;
    let b: SilenceBody = json_body(
        &headers,
        body,
        "{\"matchers\": [string], \"starts_at\"?: time, \"ends_at\": time, \"comment\": string}",
    )
    .await?;
    if b.matchers.is_empty() {
        return Err(bad_param(
            "matchers",
            "a silence needs at least one matcher",
        ));
    }
    for (i, m) in b.matchers.iter().enumerate() {
        Matcher::parse(m).map_err(|e| bad_param(&format!("matchers[{i}]"), e))?;
    }
    let now = state.clock.now();
    let starts_at = b.starts_at.unwrap_or(now);
    if b.ends_at <= starts_at {
        return Err(bad_param("ends_at", "must be after starts_at"));
    }
    if b.comment.trim().is_empty() {
        return Err(bad_param(
            "comment",
            "say why (who asked, what maintenance)",
        ));
    }
    let s = state
        .store
        .create_silence(NewSilence {
            matchers: b.matchers,
            starts_at,
            ends_at: b.ends_at,
            created_by: caller.name.clone(),
            comment: b.comment,
            created_at: now,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(s)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SilencesQuery {
    /// `true`: only those in force now.
    pub active: Option<bool>,
}

/// `GET /v1/silences`
pub async fn list_silences(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    state.authorize(&headers, Permission::Read).await?;
    let q: SilencesQuery = parse_query(raw)?;
    let now = state.clock.now();
    let silences = state
        .store
        .list_silences(q.active.unwrap_or(false).then_some(now))
        .await?;
    let silences: Vec<Value> = silences
        .iter()
        .map(|s| {
            let mut v = serde_json::to_value(s).unwrap_or(Value::Null);
            v["active"] = json!(s.expired_at.is_none() && s.starts_at <= now && now < s.ends_at);
            v
        })
        .collect();
    Ok(Json(json!({ "silences": silences })).into_response())
}

/// `POST /v1/silences/{id}/expire`
pub async fn expire_silence(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    let caller = state.authorize(&headers, Permission::Operate).await?;
    let id = parse_id("id", &id)?;
    let s = state
        .store
        .expire_silence(id, &caller.name, state.clock.now())
        .await
        .map_err(|e| match e {
            switchyard_store::Error::NotFound(_) => {
                ApiError::new(Problem::NotFound, format!("no silence {id}"))
            }
            e => e.into(),
        })?;
    Ok(Json(s).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteTestBody {
    pub labels: Labels,
}

/// `POST /v1/routes/test`: the receivers (and teams, groups, timings) an alert with these
/// labels reaches.
pub async fn test_routes(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    state.authorize(&headers, Permission::Read).await?;
    let b: RouteTestBody = json_body(&headers, body, "{\"labels\": {string: string}}").await?;
    let routes: Vec<Value> = state
        .alerting
        .routes_for(&b.labels)
        .into_iter()
        .map(|r| {
            let (group, group_labels) = r.group_of(&b.labels);
            json!({
                "route": r.id,
                "receiver": r.receiver,
                "team": state.alerting.receiver(&r.receiver).map(|x| x.team.clone()),
                "group_key": group,
                "group_labels": group_labels,
                "group_wait_seconds": r.group_wait,
                "group_interval_seconds": r.group_interval,
                "repeat_interval_seconds": r.repeat_interval,
            })
        })
        .collect();
    Ok(Json(json!({ "routes": routes })).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use switchyard_core::alerts::{Cause, Severity};

    fn at(min: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 24, 8, 0, 0).unwrap() + chrono::Duration::minutes(min)
    }

    fn incident(
        id: i64,
        team: &str,
        cause: Cause,
        opened: i64,
        ack: Option<i64>,
        res: Option<i64>,
    ) -> IncidentRecord {
        IncidentRecord {
            id,
            group_key: format!("g{id}"),
            group_labels: Default::default(),
            receiver: team.into(),
            team: team.into(),
            title: String::new(),
            severity: Severity::High,
            cause,
            status: if res.is_some() {
                IncidentStatus::Resolved
            } else {
                IncidentStatus::Open
            },
            opened_at: at(opened),
            notified_at: None,
            acknowledged_at: ack.map(at),
            acknowledged_by: ack.map(|_| "alice".into()),
            resolved_at: res.map(at),
            resolved_by: res.map(|_| "alice".into()),
            links: json!({}),
        }
    }

    /// A scripted timeline: operations acks after 4 and 6 minutes and resolves after 30 and
    /// 50; application support acks one after 10 and leaves it open.
    #[test]
    fn mtta_and_mttr_from_a_scripted_timeline() {
        let incidents = [
            incident(
                1,
                "operations",
                Cause::UpstreamBacklog,
                0,
                Some(4),
                Some(30),
            ),
            incident(
                2,
                "operations",
                Cause::BusinessProcess,
                10,
                Some(16),
                Some(60),
            ),
            incident(
                3,
                "application-support",
                Cause::OdooValidation,
                20,
                Some(30),
                None,
            ),
            incident(
                4,
                "application-support",
                Cause::OdooValidation,
                25,
                None,
                None,
            ),
        ];
        let v = incident_stats(&incidents, &[]);
        assert_eq!(v["all"]["incidents"], 4);
        assert_eq!(
            v["all"]["mtta_seconds"],
            json!((240.0 + 360.0 + 600.0) / 3.0)
        );
        assert_eq!(v["all"]["mttr_seconds"], json!((1800.0 + 3000.0) / 2.0));
        assert_eq!(v["by_team"]["operations"]["mtta_seconds"], json!(300.0));
        assert_eq!(v["by_team"]["operations"]["mttr_seconds"], json!(2400.0));
        assert_eq!(
            v["by_team"]["application-support"]["mtta_seconds"],
            json!(600.0)
        );
        assert_eq!(
            v["by_team"]["application-support"]["mttr_seconds"],
            Value::Null
        );
        assert_eq!(v["by_cause"]["odoo_validation"]["incidents"], 2);
        assert_eq!(v["by_severity"]["high"]["resolved"], 2);
        assert_eq!(v["alerts_acknowledged_share"], Value::Null);
    }
}
