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
//! beats stop). Beats, job reports and departures run in [`crate::serve::connectionless`],
//! which sends them on to the node of a cluster that supervises the agent.

use axum::extract::{RawPathParams, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use super::access::{authorize, write_guard, Access};
use super::error::ApiError;
use super::rest::{body, Params};
use super::AppState;
use crate::protocol::{self, ErrorCode};
use crate::serve::owners::Claimant;
use crate::serve::{connectionless, forward};

/// `POST /api/v1/agents`: registers an agent (or registers it again), held by no connection.
/// 201 when its record is new, 200 when it existed (it goes `online`, incarnation + 1).
pub(super) async fn register(
    State(st): State<AppState>,
    headers: HeaderMap,
    query: Params,
    raw: axum::body::Bytes,
) -> Result<Response, ApiError> {
    admit(&st, &headers, &query, &raw)?;
    let r: protocol::Register = connectionless::frame("register", &Value::Object(body(&raw)?))
        .map_err(|(code, msg)| ApiError::new(code, msg))?;
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
    let body = with_id(&path, optional_body(&raw)?)?;
    run(&st, "heartbeat", body).await
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
    let body = with_id(&path, body(&raw)?)?;
    run(&st, "job", body).await
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
    let body = with_id(&path, optional_body(&raw)?)?;
    run(&st, "deregister", body).await
}

/// One request of an agent held by no connection, here or at the node that supervises it.
async fn run(st: &AppState, op: &str, body: Map<String, Value>) -> Result<Json<Value>, ApiError> {
    connectionless::run(&st.hub, op, &Value::Object(body), false)
        .await
        .map(Json)
        .map_err(|(code, msg)| ApiError::new(code, msg))
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
