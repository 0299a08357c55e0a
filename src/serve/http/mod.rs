//! The HTTP listener (axum): the monitor protocol over WebSocket (`/ws`), the event stream as
//! Server-Sent Events (`/api/v1/events`, `id:` = seq so `Last-Event-ID` resumes), the REST
//! admin API (`/api/v1/...`, described by `/api/v1/openapi.json`), Prometheus metrics
//! (`/metrics`), liveness and readiness (`/healthz`, `/readyz`), and the dashboard (`/`).
//!
//! Tokens (`docs/protocol.md`, "HTTP and tokens"): `Authorization: Bearer TOKEN` or
//! `?token=TOKEN`. Streams and REST reads take a monitor or an admin token, REST writes an
//! admin token; a role whose token list is empty needs none. Every REST answer is JSON; an
//! error is `{"error": {"code": ..., "message": ...}}` with the protocol's error code and a
//! matching HTTP status.

pub(crate) mod dashboard;
pub(crate) mod hosts;
pub(crate) mod metrics;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::{SinkExt, Stream, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info};

use crate::protocol::{self, ClientFrame, ErrorCode, PROTOCOL_VERSION};
use crate::serve::hub::{now_text, Hub, MonitorFrame, Open};
use crate::serve::tcp::admin_op;

/// The OpenAPI document of the REST API.
pub const OPENAPI: &str = include_str!("../../../docs/openapi.json");

/// Every REST route (method, path as the OpenAPI document writes it). A test keeps this, the
/// router and the document in step.
pub const REST_ROUTES: &[(&str, &str)] = &[
    ("get", "/api/v1/agents"),
    ("get", "/api/v1/agents/{id}"),
    ("delete", "/api/v1/agents/{id}"),
    ("get", "/api/v1/agents/{id}/events"),
    ("post", "/api/v1/agents/{id}/status"),
    ("post", "/api/v1/agents/{id}/maintenance"),
    ("put", "/api/v1/policies/{kind}"),
    ("get", "/api/v1/events"),
    ("get", "/api/v1/health-report"),
    ("get", "/api/v1/stats"),
    ("get", "/api/v1/sinks"),
    ("get", "/api/v1/sinks/{name}/dead-letters"),
    ("post", "/api/v1/sinks/{name}/replay"),
    ("get", "/api/v1/openapi.json"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/ws"),
    ("get", "/"),
    ("get", "/dashboard/app.js"),
    ("get", "/dashboard/app.css"),
];

/// Settings of the HTTP listener.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub monitor_tokens: Vec<String>,
    pub admin_tokens: Vec<String>,
    /// Frames queued for one WebSocket before its subscription falls behind.
    pub ws_queue: usize,
    /// TLS for every connection (see [`crate::serve::tcp::tls_config`]).
    pub tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    /// `Host` values answered, besides the loopback names, for a role that needs no token.
    pub allowed_hosts: Vec<String>,
    /// Connections one IP address may hold at once.
    pub max_connections_per_ip: usize,
}

impl Default for HttpConfig {
    /// The configuration file's defaults (`config/vigil.toml`).
    fn default() -> Self {
        crate::config::Config::default().http_config()
    }
}

/// TLS handshakes in progress at once; more connections wait in the kernel's backlog.
const MAX_HANDSHAKES: usize = 1024;

/// A listener whose connections are TLS: handshakes run beside each other (a slow client
/// holds up no one), each within a time limit.
struct TlsListener {
    tcp: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    handshakes: tokio::task::JoinSet<Option<(TlsStream, SocketAddr)>>,
}

type TlsStream = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            tokio::select! {
                accepted = self.tcp.accept(), if self.handshakes.len() < MAX_HANDSHAKES => {
                    match accepted {
                        Ok((stream, peer)) => {
                            crate::serve::net::tune(&stream);
                            let acceptor = self.acceptor.clone();
                            self.handshakes.spawn(async move {
                                let limit = Duration::from_secs(10);
                                match tokio::time::timeout(limit, acceptor.accept(stream)).await {
                                    Ok(Ok(tls)) => Some((tls, peer)),
                                    Ok(Err(e)) => {
                                        debug!(%peer, error = %e, "TLS handshake failed");
                                        None
                                    }
                                    Err(_) => {
                                        debug!(%peer, "TLS handshake timed out");
                                        None
                                    }
                                }
                            });
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    if let Ok(Some(conn)) = done {
                        return conn;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

#[derive(Clone)]
struct AppState {
    hub: Arc<Hub>,
    cfg: Arc<HttpConfig>,
    stop: watch::Receiver<bool>,
}

/// The HTTP listener.
pub struct HttpServer {
    local: SocketAddr,
    task: Option<tokio::task::JoinHandle<()>>,
    stop: watch::Sender<bool>,
}

impl HttpServer {
    /// Binds `addr` and serves until [`HttpServer::stop`].
    pub async fn start(addr: SocketAddr, hub: Arc<Hub>, cfg: HttpConfig) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let state = AppState {
            hub,
            cfg: Arc::new(HttpConfig {
                ws_queue: cfg.ws_queue.max(16),
                ..cfg.clone()
            }),
            stop: stop_rx.clone(),
        };
        let app = router(state);
        let mut stop = stop_rx;
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        info!(%local, tls = cfg.tls.is_some(), "HTTP listener up");
        let per_ip = crate::serve::net::PerIp::new(cfg.max_connections_per_ip);
        let task = match cfg.tls {
            None => tokio::spawn(async move {
                // Frames are small and must not wait for the peer's delayed ACK (Nagle).
                let listener = crate::serve::net::CappedListener {
                    inner: axum::serve::ListenerExt::tap_io(
                        listener,
                        |s: &mut tokio::net::TcpStream| crate::serve::net::tune(s),
                    ),
                    per_ip,
                };
                let served = axum::serve(listener, app)
                    .with_graceful_shutdown(stopped)
                    .await;
                if let Err(e) = served {
                    tracing::error!(error = %e, "HTTP listener failed");
                }
            }),
            Some(tls) => {
                let listener = crate::serve::net::CappedListener {
                    inner: TlsListener {
                        tcp: listener,
                        acceptor: tokio_rustls::TlsAcceptor::from(tls),
                        handshakes: tokio::task::JoinSet::new(),
                    },
                    per_ip,
                };
                tokio::spawn(async move {
                    let served = axum::serve(listener, app)
                        .with_graceful_shutdown(stopped)
                        .await;
                    if let Err(e) = served {
                        tracing::error!(error = %e, "HTTP listener failed");
                    }
                })
            }
        };
        Ok(Self {
            local,
            task: Some(task),
            stop: stop_tx,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Stops accepting, ends every stream, and returns when the connections are closed.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(mut t) = self.task.take() {
            if tokio::time::timeout(Duration::from_secs(5), &mut t)
                .await
                .is_err()
            {
                t.abort();
            }
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(crate::serve::http::dashboard::index))
        .route(
            "/dashboard/app.js",
            get(crate::serve::http::dashboard::script),
        )
        .route(
            "/dashboard/app.css",
            get(crate::serve::http::dashboard::style),
        )
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/ws", get(ws))
        .route("/api/v1/events", get(sse))
        .route("/api/v1/agents", get(list_agents))
        .route("/api/v1/agents/{id}", get(get_agent).delete(evict_agent))
        .route("/api/v1/agents/{id}/events", get(agent_events))
        .route("/api/v1/agents/{id}/status", post(set_status))
        .route("/api/v1/agents/{id}/maintenance", post(maintenance))
        .route("/api/v1/policies/{kind}", axum::routing::put(set_policy))
        .route("/api/v1/health-report", get(health_report))
        .route("/api/v1/stats", get(stats))
        .route("/api/v1/sinks", get(list_sinks))
        .route("/api/v1/sinks/{name}/dead-letters", get(dead_letters))
        .route("/api/v1/sinks/{name}/replay", post(replay))
        .fallback(|| async {
            ApiError::new(ErrorCode::UnknownType, "no such route").into_response()
        })
        .method_not_allowed_fallback(|| async {
            let e = ApiError::new(
                ErrorCode::UnknownType,
                "this route does not take that method",
            );
            let mut r = e.into_response();
            *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
            r
        })
        .with_state(state)
}

/// An error answered as `{"error": {"code", "message"}}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    code: ErrorCode,
    message: String,
}

impl ApiError {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl From<(ErrorCode, String)> for ApiError {
    fn from((code, message): (ErrorCode, String)) -> Self {
        Self { code, message }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match self.code {
            ErrorCode::UnknownAgent | ErrorCode::UnknownType => StatusCode::NOT_FOUND,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::Conflict => StatusCode::CONFLICT,
            ErrorCode::Overloaded | ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        let body = json!({"error": {"code": self.code, "message": self.message}});
        (status, Json(body)).into_response()
    }
}

/// What a request may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Streams and REST reads: a monitor or an admin token.
    Read,
    /// REST writes: an admin token.
    Write,
}

fn token<'a>(headers: &'a HeaderMap, query: &'a HashMap<String, String>) -> Option<&'a str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .or(query.get("token").map(String::as_str))
}

fn one_of(tokens: &[String], given: Option<&str>) -> bool {
    let given = given.unwrap_or("").as_bytes();
    tokens.iter().fold(false, |ok, t| {
        ok | constant_time_eq::constant_time_eq(t.as_bytes(), given)
    })
}

/// Checks the request's token for `access`; for reads, whether it is an admin's too.
fn authorize(
    cfg: &HttpConfig,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    access: Access,
) -> Result<bool, ApiError> {
    let given = token(headers, query);
    let admin_token = one_of(&cfg.admin_tokens, given);
    let monitor_token = one_of(&cfg.monitor_tokens, given);
    let admin = cfg.admin_tokens.is_empty() || admin_token;
    let monitor = cfg.monitor_tokens.is_empty() || monitor_token;
    // Let in without a token (a role left open, loopback only): only when asked by a name of
    // this machine, so that a page whose name was rebound to 127.0.0.1 gets nothing.
    let by_token = match access {
        Access::Write => admin_token,
        Access::Read => admin_token || monitor_token,
    };
    let granted = match access {
        Access::Write => admin,
        Access::Read => admin || monitor,
    };
    if granted && !by_token {
        crate::serve::http::hosts::check(headers, &cfg.allowed_hosts)?;
    }
    match access {
        Access::Write if admin => Ok(true),
        // A monitor's own token: known, but not enough.
        Access::Write if one_of(&cfg.monitor_tokens, given) => Err(ApiError::new(
            ErrorCode::Forbidden,
            "this needs an admin token",
        )),
        Access::Read if admin || monitor => Ok(admin),
        _ => Err(ApiError::new(
            ErrorCode::Unauthorized,
            match given {
                None => "a token is required (Authorization: Bearer TOKEN or ?token=TOKEN)",
                Some(_) => "the token is not valid here",
            },
        )),
    }
}

type Params = Query<HashMap<String, String>>;

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(st): State<AppState>) -> Response {
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

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// Runs an admin op for a REST request and answers its data.
async fn run_op(st: &AppState, op: &str, args: Value) -> Result<Json<Value>, ApiError> {
    admin_op(st.hub.runtime(), op, args)
        .await
        .map(Json)
        .map_err(ApiError::from)
}

/// A query parameter as a number.
fn num(q: &HashMap<String, String>, key: &str) -> Result<Option<u64>, ApiError> {
    q.get(key)
        .map(|v| {
            v.parse::<u64>().map_err(|_| {
                ApiError::new(ErrorCode::InvalidField, format!("{key} must be a number"))
            })
        })
        .transpose()
}

async fn list_agents(
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

async fn get_agent(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Params,
) -> Result<Json<Value>, ApiError> {
    authorize(&st.cfg, &headers, &q, Access::Read)?;
    run_op(&st, "get", json!({"id": id})).await
}

async fn agent_events(
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

async fn evict_agent(
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

/// Whether a browser request comes from a page served elsewhere (its `Origin` names another
/// host than the one it asked). Such a page may not drive this API: with no tokens
/// configured (loopback), anything the operator's browser opened could otherwise evict agents.
fn foreign_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let origin_host = origin.split_once("://").map_or(origin, |(_, h)| h);
    origin_host != host
}

/// A write's checks beyond its token: a JSON content type (so a cross-site form or
/// `text/plain` fetch cannot send one without a CORS preflight, which is never granted) and
/// no foreign `Origin`.
fn write_guard(headers: &HeaderMap, has_body: bool) -> Result<(), ApiError> {
    if foreign_origin(headers) {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "requests from pages of another origin are refused",
        ));
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if has_body && !json {
        return Err(ApiError::new(
            ErrorCode::BadFrame,
            "the body must be JSON (Content-Type: application/json)",
        ));
    }
    Ok(())
}

/// A JSON request body, or the protocol's error for a bad one.
fn body(raw: &[u8]) -> Result<serde_json::Map<String, Value>, ApiError> {
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

async fn set_status(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Params,
    raw: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    body_op(&st, &headers, &q, &raw, "set_status", ("id", id)).await
}

async fn maintenance(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Params,
    raw: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    body_op(&st, &headers, &q, &raw, "maintenance", ("id", id)).await
}

async fn set_policy(
    State(st): State<AppState>,
    Path(kind): Path<String>,
    headers: HeaderMap,
    Query(q): Params,
    raw: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    body_op(&st, &headers, &q, &raw, "set_policy", ("kind", kind)).await
}

/// A REST write whose JSON body holds the op's arguments, with the one the path names.
async fn body_op(
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

async fn health_report(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Params,
) -> Result<Json<Value>, ApiError> {
    authorize(&st.cfg, &headers, &q, Access::Read)?;
    run_op(&st, "health_report", Value::Null).await
}

async fn list_sinks(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Params,
) -> Result<Json<Value>, ApiError> {
    authorize(&st.cfg, &headers, &q, Access::Read)?;
    run_op(&st, "sinks", Value::Null).await
}

async fn dead_letters(
    State(st): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Query(q): Params,
) -> Result<Json<Value>, ApiError> {
    authorize(&st.cfg, &headers, &q, Access::Read)?;
    run_op(&st, "dead_letters", json!({ "sink": name })).await
}

async fn replay(
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

async fn stats(
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

/// `/ws`: the monitor protocol over WebSocket, one JSON frame per text message. The token
/// comes with the upgrade request, so no `hello` is needed (one is answered `welcome`).
/// Frames: `subscribe`, `unsubscribe`, `ping`, and `admin` when the token is an admin's.
async fn ws(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Params,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let admin = authorize(&st.cfg, &headers, &q, Access::Read)?;
    if foreign_origin(&headers) {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "WebSockets from pages of another origin are refused",
        ));
    }
    // Small buffers: a monitor sends little, and what it receives is flushed as it goes
    // (the library's defaults of 128 KiB each would be most of a subscriber's memory).
    Ok(upgrade
        .read_buffer_size(4 * 1024)
        .write_buffer_size(16 * 1024)
        .max_message_size(1 << 20)
        .on_upgrade(move |socket| ws_session(st, socket, admin)))
}

async fn ws_session(st: AppState, socket: WebSocket, admin: bool) {
    let _open = Open::new(&st.hub, |h| &h.http_streams);
    let (mut sink, mut source) = socket.split();
    let (out, mut rx) = mpsc::channel::<String>(st.cfg.ws_queue);
    let writer = tokio::spawn(async move {
        // The frames already queued are written, then flushed once.
        'out: while let Some(text) = rx.recv().await {
            if sink.feed(Message::Text(text.into())).await.is_err() {
                break;
            }
            for _ in 0..64 {
                match rx.try_recv() {
                    Ok(more) => {
                        if sink.feed(Message::Text(more.into())).await.is_err() {
                            break 'out;
                        }
                    }
                    Err(_) => break,
                }
            }
            if sink.flush().await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let mut stop = st.stop.clone();
    let mut subscription: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        let msg = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            msg = source.next() => msg,
        };
        let text = match msg {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Binary(_))) => {
                let e = protocol::error_line(ErrorCode::BadFrame, "frames are text", None);
                let _ = out.send(e.trim_end().to_string()).await;
                continue;
            }
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
            Some(Ok(_)) => continue, // ping/pong: answered by the library
        };
        let frame = match protocol::decode(text.as_bytes()) {
            Ok(Some(f)) => f,
            Ok(None) => continue,
            Err(e) => {
                let line = protocol::error_line(e.code, &e.message, e.reference.as_ref());
                let _ = out.send(line.trim_end().to_string()).await;
                continue;
            }
        };
        let reference = frame.reference;
        let reply = |v: Value| {
            let mut l = protocol::line(v, reference.as_ref());
            l.truncate(l.trim_end().len());
            l
        };
        let answer = match frame.body {
            ClientFrame::Hello(_) => reply(json!({
                "type": "welcome", "protocol": PROTOCOL_VERSION,
                "server": concat!("vigil/", env!("CARGO_PKG_VERSION")), "time": now_text(),
            })),
            ClientFrame::Ping => reply(json!({"type": "pong", "time": now_text()})),
            ClientFrame::Subscribe(_) if out.capacity() < out.max_capacity() / 2 => error_text(
                ErrorCode::Overloaded,
                "replies are not being read; subscribe again once they are",
                &reference,
            ),
            ClientFrame::Subscribe(sub) => {
                if let Some(t) = subscription.take() {
                    t.abort();
                    let _ = t.await; // none of its frames come after this
                }
                match st.hub.subscribe(sub).await {
                    Ok(stream) => {
                        // The ack goes first, then the stream's frames.
                        let ack = reply(json!({"type": "ack"}));
                        if reference.is_some() && out.send(ack).await.is_err() {
                            break;
                        }
                        let o = out.clone();
                        subscription = Some(tokio::spawn(stream.run(move |f: MonitorFrame| {
                            let o = o.clone();
                            async move { o.send(f.text.to_string()).await.is_ok() }
                        })));
                        continue;
                    }
                    Err((code, msg)) => error_text(code, &msg, &reference),
                }
            }
            ClientFrame::Unsubscribe => {
                if let Some(t) = subscription.take() {
                    t.abort();
                    let _ = t.await;
                }
                reply(json!({"type": "ack"}))
            }
            ClientFrame::Admin(a) if admin => match admin_op(st.hub.runtime(), &a.op, a.args).await
            {
                Ok(data) => reply(json!({"type": "result", "ok": true, "data": data})),
                Err((code, msg)) => error_text(code, &msg, &reference),
            },
            _ => error_text(
                ErrorCode::Forbidden,
                "this stream takes monitor frames (and admin frames with an admin token)",
                &reference,
            ),
        };
        let sent = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            sent = out.send(answer) => sent,
        };
        if sent.is_err() {
            break;
        }
    }
    if let Some(t) = subscription.take() {
        t.abort();
    }
    drop(out);
    let _ = tokio::time::timeout(Duration::from_secs(1), writer).await;
    debug!("WebSocket closed");
}

fn error_text(code: ErrorCode, msg: &str, reference: &Option<Value>) -> String {
    let mut l = protocol::error_line(code, msg, reference.as_ref());
    l.truncate(l.trim_end().len());
    l
}

/// A comma-separated query parameter as a list.
fn list_param(q: &HashMap<String, String>, key: &str) -> Vec<String> {
    q.get(key)
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// The `subscribe` an SSE request's query (and `Last-Event-ID`) stands for.
fn sse_subscribe(
    headers: &HeaderMap,
    q: &HashMap<String, String>,
) -> Result<protocol::Subscribe, ApiError> {
    #[derive(Deserialize)]
    struct Req {
        topics: Option<Vec<String>>,
        filter: vigil_actors::Filter,
        since: Option<u64>,
        snapshot: bool,
    }
    let last_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.trim()
                .parse::<u64>()
                .map_err(|_| ApiError::new(ErrorCode::InvalidField, "Last-Event-ID must be a seq"))
        })
        .transpose()?;
    let since = match last_id {
        Some(id) => Some(id),
        None => num(q, "since")?,
    };
    // Resuming: the events after the last one seen, never a second snapshot.
    let snapshot =
        last_id.is_none() && matches!(q.get("snapshot").map(String::as_str), Some("true" | "1"));
    let req = json!({
        "topics": q.contains_key("topics").then(|| list_param(q, "topics")),
        "filter": {
            "ids": list_param(q, "ids"),
            "kinds": list_param(q, "kinds"),
            "statuses": list_param(q, "statuses"),
        },
        "since": since,
        "snapshot": snapshot,
    });
    let r: Req = serde_json::from_value(req)
        .map_err(|e| ApiError::new(ErrorCode::InvalidField, e.to_string()))?;
    Ok(protocol::Subscribe {
        topics: r.topics,
        filter: r.filter,
        since: r.since,
        snapshot: r.snapshot,
    })
}

/// `/api/v1/events`: the monitor stream as Server-Sent Events. Each frame is one SSE event
/// named by its type (`event`, `snapshot`, `stats`, `lagged`, `resync_required`) with the
/// frame as its data; events and snapshots carry `id:` = seq, so a client that reconnects
/// with `Last-Event-ID` gets exactly the events after it. `lagged` ends the stream (the
/// client reconnects and resumes).
async fn sse(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Params,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    authorize(&st.cfg, &headers, &q, Access::Read)?;
    let req = sse_subscribe(&headers, &q)?;
    let stream = st.hub.subscribe(req).await.map_err(ApiError::from)?;
    let guard = Open::new(&st.hub, |h| &h.http_streams);
    let stop = st.stop.clone();
    let events = futures::stream::unfold(
        (stream, false, guard, stop),
        |(mut stream, ended, guard, mut stop)| async move {
            if ended {
                return None;
            }
            let frame = tokio::select! {
                f = stream.next() => f?,
                _ = stop.wait_for(|s| *s) => return None,
            };
            let mut e = SseEvent::default().event(frame.kind).data(&*frame.text);
            if let Some(seq) = frame.seq {
                e = e.id(seq.to_string());
            }
            Some((Ok(e), (stream, frame.last, guard, stop)))
        },
    );
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

async fn metrics(State(st): State<AppState>) -> Result<Response, ApiError> {
    let stats = st
        .hub
        .runtime()
        .stats()
        .await
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
    let sinks = st.hub.runtime().sinks().await;
    let text = crate::serve::http::metrics::render(&stats, &st.hub, st.hub.runtime().lag(), &sinks)
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}
