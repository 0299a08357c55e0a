//! The REST API (`/api/v1/...`), liveness and readiness, and the OpenAPI document.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::access::{authorize, write_guard, Access};
use super::error::ApiError;
use super::{AppState, OPENAPI};
use crate::protocol::ErrorCode;
use crate::serve::admin::admin_op;

pub(super) type Params = Query<HashMap<String, String>>;

pub(super) async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

pub(super) async fn readyz(State(st): State<AppState>) -> Response {
    let rt = st.hub.runtime();
    let store_ok = rt.store_healthy();
    let mut body = json!({"ready": store_ok, "store": if store_ok { "ok" } else { "failing" }});
    if let Some(warning) = rt.durability_warning() {
        body["durability"] = json!(warning);
    }
    match store_ok {
        true => (StatusCode::OK, Json(body)).into_response(),
        false => (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response(),
    }
}

pub(super) async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// Runs an admin op for a REST request and answers its data.
pub(super) async fn run_op(st: &AppState, op: &str, args: Value) -> Result<Json<Value>, ApiError> {
    admin_op(st.hub.runtime(), op, args)
        .await
        .map(Json)
        .map_err(ApiError::from)
}

/// A query parameter as a number.
pub(super) fn num(q: &HashMap<String, String>, key: &str) -> Result<Option<u64>, ApiError> {
    q.get(key)
        .map(|v| {
            v.parse::<u64>().map_err(|_| {
                ApiError::new(ErrorCode::InvalidField, format!("{key} must be a number"))
            })
        })
        .transpose()
}

pub(super) async fn list_agents(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Params,
) -> Result<Json<Value>, ApiError> {
    authorize(&st.cfg, &headers, &q, Access::Read)?;
    let mut args = serde_json::Map::new();
    for key in ["kind", "status", "after"] {
        if let Some(v) = q.get(key) {
            args.insert(key.into(), json!(v));
        }
    }
    if let Some(limit) = num(&q, "limit")? {
        args.insert("limit".into(), json!(limit));
    }
    run_op(&st, "list", Value::Object(args)).await
}

pub(super) async fn get_agent(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Params,
) -> Result<Json<Value>, ApiError> {
    authorize(&st.cfg, &headers, &q, Access::Read)?;
    run_op(&st, "get", json!({"id": id})).await
}

pub(super) async fn agent_events(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Params,
) -> Result<Json<Value>, ApiError> {
    authorize(&st.cfg, &headers, &q, Access::Read)?;
    let mut args = json!({"id": id});
    if let Some(since) = num(&q, "since")? {
        args["since"] = json!(since);
    }
    if let Some(limit) = num(&q, "limit")? {
        args["limit"] = json!(limit);
    }
    match q.get("latest").map(String::as_str) {
        None | Some("false") => {}
        Some("true") => args["latest"] = json!(true),
        Some(_) => {
            return Err(ApiError::new(
                ErrorCode::InvalidField,
                "latest must be true or false",
            ))
        }
    }
    run_op(&st, "events", args).await
}

pub(super) async fn evict_agent(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Params,
) -> Result<Json<Value>, ApiError> {
    authorize(&st.cfg, &headers, &q, Access::Write)?;
    write_guard(&headers, false)?;
    let mut args = json!({"id": id});
    if let Some(reason) = q.get("reason") {
        args["reason"] = json!(reason);
    }
    run_op(&st, "evict", args).await
}

/// A JSON request body, or the protocol's error for a bad one.
pub(super) fn body(raw: &[u8]) -> Result<serde_json::Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(raw) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::new(
            ErrorCode::BadFrame,
            "the body must be a JSON object",
        )),
        Err(e) => Err(ApiError::new(
            ErrorCode::BadFrame,
            format!("the body is not JSON: {e}"),
        )),
    }
}

pub(super) async fn set_status(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Params,
    raw: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    body_op(&st, &headers, &q, &raw, "set_status", ("id", id)).await
}

pub(super) async fn maintenance(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Params,
    raw: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    body_op(&st, &headers, &q, &raw, "maintenance", ("id", id)).await
}

pub(super) async fn set_policy(
    State(st): State<AppState>,
    Path(kind): Path<String>,
    headers: HeaderMap,
    Query(q): Params,
    raw: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    body_op(&st, &headers, &q, &raw, "set_policy", ("kind", kind)).await
}

/// A REST write whose JSON body holds the op's arguments, with the one the path names.
pub(super) async fn body_op(
    st: &AppState,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
    raw: &[u8],
    op: &str,
    (key, value): (&str, String),
) -> Result<Json<Value>, ApiError> {
    authorize(&st.cfg, headers, q, Access::Write)?;
    write_guard(headers, true)?;
    let mut args = body(raw)?;
    args.insert(key.into(), json!(value));
    run_op(st, op, Value::Object(args)).await
}

pub(super) async fn health_report(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Params,
) -> Result<Json<Value>, ApiError> {
    authorize(&st.cfg, &headers, &q, Access::Read)?;
    run_op(&st, "health_report", Value::Null).await
}

pub(super) async fn list_sinks(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Params,
) -> Result<Json<Value>, ApiError> {
    authorize(&st.cfg, &headers, &q, Access::Read)?;
    run_op(&st, "sinks", Value::Null).await
}

pub(super) async fn dead_letters(
    State(st): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Query(q): Params,
) -> Result<Json<Value>, ApiError> {
    authorize(&st.cfg, &headers, &q, Access::Read)?;
    run_op(&st, "dead_letters", json!({ "sink": name })).await
}

pub(super) async fn replay(
    State(st): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Query(q): Params,
) -> Result<Json<Value>, ApiError> {
    authorize(&st.cfg, &headers, &q, Access::Write)?;
    write_guard(&headers, false)?;
    let mut args = json!({ "sink": name });
    if let Some(id) = num(&q, "id")? {
        args["id"] = json!(id);
    }
    run_op(&st, "replay", args).await
}

pub(super) async fn stats(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Params,
) -> Result<Json<Value>, ApiError> {
    authorize(&st.cfg, &headers, &q, Access::Read)?;
    let Json(mut data) = run_op(&st, "stats", Value::Null).await?;
    let hub = &st.hub;
    data["connections"] = json!(hub.tcp_connections.load(Ordering::Relaxed));
    data["http_streams"] = json!(hub.http_streams.load(Ordering::Relaxed));
    data["monitor_subscribers"] = json!(hub.subscribers.load(Ordering::Relaxed));
    data["frames"] = json!(hub.frames.load(Ordering::Relaxed));
    Ok(Json(data))
}
