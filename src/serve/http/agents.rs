//! An agent's own routes, for agents that hold no connection (a cron job, a function, a
//! probe): register (`POST /api/v1/agents`), heartbeat (`POST /api/v1/agents/{id}/heartbeat`,
//! with or without a body), job reports (`POST /api/v1/agents/{id}/jobs`) and deregister
//! (`POST /api/v1/agents/{id}/deregister`). Each takes the fields of the protocol's frame of
//! the same name as a JSON body (the path gives the `id`), an agent token, and answers what
//! the TCP listener would: `registered` and `deregistered` once their event is durable, the
//! protocol's error codes otherwise.
//!
//! Who may act on an agent is decided by the table both listeners share
//! ([`crate::serve::owners`]): an agent a live TCP connection holds is not registered
//! (`conflict`, unless `takeover`), beaten, reported for or deregistered (`not_owner`) over
//! HTTP. An agent registered over HTTP is held by no connection: its record says
//! `connected: false`, and its deadlines run as any agent's (degraded, then offline, when the
//! beats stop).

use std::sync::atomic::Ordering;

use axum::extract::{RawPathParams, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};
use vigil_actors::{AdminError, AgentHandle, AgentId, Beat, BeatError, JobReport};

use super::access::{authorize, write_guard, Access};
use super::error::ApiError;
use super::rest::{body, Params};
use super::AppState;
use crate::protocol::limits::{check_activity, check_job};
use crate::protocol::{self, ErrorCode};
use crate::serve::forward;
use crate::serve::owners::{Claimant, Unavailable};

/// `POST /api/v1/agents`: registers an agent (or registers it again), held by no connection.
/// 201 when its record is new, 200 when it existed (it goes `online`, incarnation + 1).
pub(super) async fn register(
    State(st): State<AppState>,
    headers: HeaderMap,
    query: Params,
    raw: axum::body::Bytes,
) -> Result<Response, ApiError> {
    admit(&st, &headers, &query, &raw)?;
    let r: protocol::Register = frame("register", body(&raw)?)?;
    let (hub, id) = (&st.hub, r.id.clone());
    forward::claim_registration(hub, &id, Claimant::Http, r.takeover)
        .await
        .map_err(|msg| ApiError::new(ErrorCode::Conflict, msg))?;
    let reg = r.registration(true);
    let rt = hub.runtime();
    let (handle, seq) = rt
        .register_sequenced(reg)
        .await
        .map_err(|e| ApiError::new((&e).into(), e.to_string()))?;
    hub.owners.registered_over_http(handle.clone());
    rt.wait_durable(seq)
        .await
        .map_err(|e| ApiError::new((&e).into(), e.to_string()))?;
    let status = match handle.incarnation() {
        1 => StatusCode::CREATED,
        _ => StatusCode::OK,
    };
    let answer = json!({
        "id": id.as_str(),
        "status": "online",
        "heartbeat_interval_ms": handle.heartbeat_interval().as_millis() as u64,
        "incarnation": handle.incarnation(),
    });
    Ok((status, Json(answer)).into_response())
}

/// `POST /api/v1/agents/{id}/heartbeat`: a heartbeat; the body (status, metrics, activity)
/// may be left out for a healthy beat.
pub(super) async fn heartbeat(
    State(st): State<AppState>,
    path: RawPathParams,
    headers: HeaderMap,
    query: Params,
    raw: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    admit(&st, &headers, &query, &raw)?;
    let h: protocol::Heartbeat = frame("heartbeat", with_id(&path, optional_body(&raw)?)?)?;
    if let Some(Err(msg)) = h.activity.as_deref().map(|a| check_activity(a, None)) {
        return Err(ApiError::new(ErrorCode::InvalidField, msg));
    }
    let handle = agent_handle(&st, &h.id)?;
    let beat = Beat {
        reported: h.status,
        metrics: h.metrics,
    };
    handle
        .heartbeat(beat)
        .map_err(|e| beat_failed(&st, &h.id, e))?;
    st.hub.heartbeats.fetch_add(1, Ordering::Relaxed);
    if let Some(a) = h.activity {
        let rt = st.hub.runtime();
        rt.report_activity_within(&st.reports, &h.id, a, None)
            .await
            .map_err(|e| beat_failed(&st, &h.id, e))?;
    }
    Ok(Json(json!({ "id": h.id.as_str() })))
}

/// `POST /api/v1/agents/{id}/jobs`: a report on one of the agent's jobs.
pub(super) async fn job(
    State(st): State<AppState>,
    path: RawPathParams,
    headers: HeaderMap,
    query: Params,
    raw: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    admit(&st, &headers, &query, &raw)?;
    let j: protocol::Job = frame("job", with_id(&path, body(&raw)?)?)?;
    check_job(&j).map_err(|msg| ApiError::new(ErrorCode::InvalidField, msg))?;
    agent_handle(&st, &j.id)?;
    let report = JobReport {
        job: j.job.clone(),
        state: j.state,
        progress: j.progress,
        error: j.error,
    };
    st.hub
        .runtime()
        .report_job_within(&st.reports, &j.id, report)
        .await
        .map_err(|e| beat_failed(&st, &j.id, e))?;
    Ok(Json(json!({ "id": j.id.as_str(), "job": j.job })))
}

/// `POST /api/v1/agents/{id}/deregister`: the agent leaves (`left`); answered once its
/// `deregistered` event is durable.
pub(super) async fn deregister(
    State(st): State<AppState>,
    path: RawPathParams,
    headers: HeaderMap,
    query: Params,
    raw: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    admit(&st, &headers, &query, &raw)?;
    let d: protocol::Deregister = frame("deregister", with_id(&path, optional_body(&raw)?)?)?;
    agent_handle(&st, &d.id)?;
    match st.hub.runtime().deregister(&d.id).await {
        Ok(_) => {
            st.hub.owners.forget_http(&d.id);
            Ok(Json(json!({ "id": d.id.as_str() })))
        }
        Err(AdminError::UnknownAgent(_)) => {
            st.hub.owners.forget_http(&d.id);
            Err(not_registered())
        }
        Err(e) => Err(ApiError::new((&e).into(), e.to_string())),
    }
}

/// The checks every agent route takes before its body is read: an agent token, no foreign
/// origin, and a JSON content type when there is a body.
fn admit(st: &AppState, headers: &HeaderMap, query: &Params, raw: &[u8]) -> Result<(), ApiError> {
    authorize(&st.cfg, headers, &query.0, Access::Agent)?;
    write_guard(headers, !raw.is_empty())
}

/// The body as a JSON object; an empty body as an empty one.
fn optional_body(raw: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match raw.iter().all(u8::is_ascii_whitespace) {
        true => Ok(Map::new()),
        false => body(raw),
    }
}

/// The body with the path's `id` in it (a body may repeat it, not contradict it).
fn with_id(
    path: &RawPathParams,
    mut body: Map<String, Value>,
) -> Result<Map<String, Value>, ApiError> {
    let Some((_, id)) = path.iter().find(|(k, _)| *k == "id") else {
        return Err(ApiError::new(ErrorCode::Internal, "no id in this route"));
    };
    match body.get("id") {
        Some(Value::String(given)) if given != id => Err(ApiError::new(
            ErrorCode::InvalidField,
            "the body's id differs from the path's",
        )),
        _ => {
            body.insert("id".into(), json!(id));
            Ok(body)
        }
    }
}

/// A body read as the protocol's frame `kind`, with its decoding errors (`missing_field`,
/// `invalid_field`).
fn frame<T: DeserializeOwned>(kind: &str, body: Map<String, Value>) -> Result<T, ApiError> {
    serde_json::from_value(Value::Object(body)).map_err(|e| {
        let msg = e.to_string();
        let code = match msg.starts_with("missing field") {
            true => ErrorCode::MissingField,
            false => ErrorCode::InvalidField,
        };
        ApiError::new(code, format!("{kind}: {msg}"))
    })
}

/// The handle through which an HTTP request acts on agent `id`, or why there is none.
fn agent_handle(st: &AppState, id: &AgentId) -> Result<AgentHandle, ApiError> {
    let rt = st.hub.runtime();
    match st.hub.owners.over_http(rt, id) {
        Ok(h) => Ok(h),
        Err(Unavailable::Held) => Err(ApiError::new(
            ErrorCode::NotOwner,
            "a live connection holds this agent (register it with takeover to take it)",
        )),
        Err(Unavailable::Unknown) => match rt.owned_elsewhere(id) {
            Some(node) => Err(ApiError::new(
                ErrorCode::NotOwner,
                format!(
                    "node {node} of the cluster supervises this agent: send to that node, \
                     or register it here with takeover"
                ),
            )),
            None => Err(not_registered()),
        },
    }
}

fn not_registered() -> ApiError {
    ApiError::new(
        ErrorCode::NotRegistered,
        "this agent is not registered (POST /api/v1/agents registers it)",
    )
}

/// A beat or report the runtime did not take: the agent left meanwhile (`not_registered`),
/// was registered again (`not_owner`), or its actor is restarting (`internal`).
fn beat_failed(st: &AppState, id: &AgentId, e: BeatError) -> ApiError {
    if matches!(e, BeatError::Superseded(_)) {
        return ApiError::new(ErrorCode::NotOwner, e.to_string());
    }
    if st.hub.runtime().agent(id).is_none() {
        st.hub.owners.forget_http(id);
        return not_registered();
    }
    ApiError::new((&e).into(), e.to_string())
}
