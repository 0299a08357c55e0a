//! The REST API (`/api/v1/...`), liveness and readiness, and the OpenAPI document.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use axum::extract::{MatchedPath, Query, RawPathParams, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodFilter;
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
    admin_op(&st.hub, op, args)
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

/// Where an operation's argument comes from in a request's query, and how it is read.
#[derive(Debug, Clone, Copy)]
enum Param {
    /// Passed as it is.
    Text(&'static str),
    /// A number (`{key} must be a number` otherwise).
    Number(&'static str),
    /// `true` or `false`; only `true` is passed.
    Flag(&'static str),
}

/// A REST route that runs one admin operation: who may call it, and where its arguments come
/// from. Every such route is served by [`op_route`].
#[derive(Debug)]
pub(super) struct OpRoute {
    /// The method.
    pub(super) method: MethodFilter,
    /// The path, as the router and the OpenAPI document write it.
    pub(super) path: &'static str,
    op: &'static str,
    access: Access,
    /// The path's parameter and the argument it becomes.
    path_arg: Option<(&'static str, &'static str)>,
    query: &'static [Param],
    /// A JSON object body holds the other arguments.
    body: bool,
}

const fn read(path: &'static str, op: &'static str) -> OpRoute {
    OpRoute {
        method: MethodFilter::GET,
        path,
        op,
        access: Access::Read,
        path_arg: None,
        query: &[],
        body: false,
    }
}

/// Every REST route that runs an admin operation.
pub(super) const OP_ROUTES: &[OpRoute] = &[
    OpRoute {
        query: &[
            Param::Text("kind"),
            Param::Text("status"),
            Param::Text("after"),
            Param::Number("limit"),
        ],
        ..read("/api/v1/agents", "list")
    },
    OpRoute {
        path_arg: Some(("id", "id")),
        ..read("/api/v1/agents/{id}", "get")
    },
    OpRoute {
        method: MethodFilter::DELETE,
        access: Access::Write,
        path_arg: Some(("id", "id")),
        query: &[Param::Text("reason")],
        ..read("/api/v1/agents/{id}", "evict")
    },
    OpRoute {
        path_arg: Some(("id", "id")),
        query: &[
            Param::Number("since"),
            Param::Number("limit"),
            Param::Flag("latest"),
        ],
        ..read("/api/v1/agents/{id}/events", "events")
    },
    OpRoute {
        method: MethodFilter::POST,
        access: Access::Write,
        path_arg: Some(("id", "id")),
        body: true,
        ..read("/api/v1/agents/{id}/status", "set_status")
    },
    OpRoute {
        method: MethodFilter::POST,
        access: Access::Write,
        path_arg: Some(("id", "id")),
        body: true,
        ..read("/api/v1/agents/{id}/maintenance", "maintenance")
    },
    OpRoute {
        method: MethodFilter::PUT,
        access: Access::Write,
        path_arg: Some(("kind", "kind")),
        body: true,
        ..read("/api/v1/policies/{kind}", "set_policy")
    },
    read("/api/v1/health-report", "health_report"),
    read("/api/v1/sinks", "sinks"),
    OpRoute {
        path_arg: Some(("name", "sink")),
        ..read("/api/v1/sinks/{name}/dead-letters", "dead_letters")
    },
    OpRoute {
        method: MethodFilter::POST,
        access: Access::Write,
        path_arg: Some(("name", "sink")),
        query: &[Param::Number("id")],
        ..read("/api/v1/sinks/{name}/replay", "replay")
    },
];

/// Serves every route of [`OP_ROUTES`]: checks the caller's token (and, for a write, that it
/// is no cross-site form), gathers the arguments, and answers the operation's data.
pub(super) async fn op_route(
    State(st): State<AppState>,
    method: Method,
    matched: MatchedPath,
    path: RawPathParams,
    headers: HeaderMap,
    Query(q): Params,
    raw: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let route = OP_ROUTES
        .iter()
        .find(|r| {
            r.path == matched.as_str()
                && MethodFilter::try_from(method.clone()).ok() == Some(r.method)
        })
        .ok_or_else(|| ApiError::new(ErrorCode::Internal, "no operation for this route"))?;
    authorize(&st.cfg, &headers, &q, route.access)?;
    if route.access == Access::Write {
        write_guard(&headers, route.body)?;
    }
    let mut args = match route.body {
        true => body(&raw)?,
        false => serde_json::Map::new(),
    };
    for param in route.query {
        match *param {
            Param::Text(key) => {
                if let Some(v) = q.get(key) {
                    args.insert(key.into(), json!(v));
                }
            }
            Param::Number(key) => {
                if let Some(n) = num(&q, key)? {
                    args.insert(key.into(), json!(n));
                }
            }
            Param::Flag(key) => match q.get(key).map(String::as_str) {
                None | Some("false") => {}
                Some("true") => {
                    args.insert(key.into(), json!(true));
                }
                Some(_) => {
                    let msg = format!("{key} must be true or false");
                    return Err(ApiError::new(ErrorCode::InvalidField, msg));
                }
            },
        }
    }
    if let Some((name, arg)) = route.path_arg {
        if let Some((_, v)) = path.iter().find(|(k, _)| *k == name) {
            args.insert(arg.into(), json!(v));
        }
    }
    run_op(&st, route.op, Value::Object(args)).await
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
