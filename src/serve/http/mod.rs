//! The HTTP listener (axum): the monitor protocol over WebSocket (`/ws`), the event stream as
//! Server-Sent Events (`/api/v1/events`, `id:` = seq so `Last-Event-ID` resumes), the REST
//! admin API (`/api/v1/...`, described by `/api/v1/openapi.json`), Prometheus metrics
//! (`/metrics`), liveness and readiness (`/healthz`, `/readyz`), and the dashboard (`/`).
//!
//! It also takes agents that hold no connection (`agents`): register, heartbeat, job
//! reports and deregister, over plain requests.
//!
//! Tokens (`docs/protocol.md`, "HTTP and tokens"): `Authorization: Bearer TOKEN` or
//! `?token=TOKEN`. Streams and REST reads take a monitor or an admin token, REST writes an
//! admin token, an agent's routes an agent token; a role whose token list is empty needs
//! none. Every REST answer is JSON; an
//! error is `{"error": {"code": ..., "message": ...}}` with the protocol's error code and a
//! matching HTTP status.

mod access;
mod agents;
pub(crate) mod dashboard;
mod error;
pub(crate) mod hosts;
pub(crate) mod metrics;
mod rest;
mod sse;
mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, info};

use crate::protocol::ErrorCode;
use crate::serve::hub::Hub;
use error::ApiError;
use rest::{healthz, op_route, openapi, readyz, stats, OP_ROUTES};

/// The OpenAPI document of the REST API.
pub const OPENAPI: &str = include_str!("../../../docs/openapi.json");

/// Every REST route (method, path as the OpenAPI document writes it). A test keeps this, the
/// router and the document in step.
pub const REST_ROUTES: &[(&str, &str)] = &[
    ("get", "/api/v1/agents"),
    ("post", "/api/v1/agents"),
    ("get", "/api/v1/agents/{id}"),
    ("delete", "/api/v1/agents/{id}"),
    ("get", "/api/v1/agents/{id}/events"),
    ("post", "/api/v1/agents/{id}/status"),
    ("post", "/api/v1/agents/{id}/maintenance"),
    ("post", "/api/v1/agents/{id}/heartbeat"),
    ("post", "/api/v1/agents/{id}/jobs"),
    ("post", "/api/v1/agents/{id}/deregister"),
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
    /// Tokens that let a request speak for an agent (register, heartbeat, jobs, deregister):
    /// the agent listener's; empty: those routes need no token (from an allowed host).
    pub agent_tokens: Vec<String>,
    /// Tokens that let a request read (`Authorization: Bearer` or `?token=`); empty: reads
    /// need no token (from an allowed host).
    pub monitor_tokens: Vec<String>,
    /// Tokens that let a request read and write; empty: writes need no token (from an
    /// allowed host).
    pub admin_tokens: Vec<String>,
    /// Frames queued for one WebSocket before its subscription falls behind.
    pub ws_queue: usize,
    /// TLS for every connection (see [`crate::serve::tls::tls_config`]).
    pub tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    /// `Host` values answered, besides the loopback names, for a role that needs no token.
    pub allowed_hosts: Vec<String>,
    /// Connections one IP address may hold at once.
    pub max_connections_per_ip: usize,
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

    /// The address the listener is bound to (the real port when it was asked for port 0).
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
    let mut router = Router::new();
    for r in OP_ROUTES {
        router = router.route(r.path, axum::routing::on(r.method, op_route));
    }
    router
        .route("/", get(dashboard::index))
        .route("/dashboard/app.js", get(dashboard::script))
        .route("/dashboard/app.css", get(dashboard::style))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::metrics))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/ws", get(ws::ws))
        .route("/api/v1/events", get(sse::sse))
        .route("/api/v1/stats", get(stats))
        .route("/api/v1/agents", post(agents::register))
        .route("/api/v1/agents/{id}/heartbeat", post(agents::heartbeat))
        .route("/api/v1/agents/{id}/jobs", post(agents::job))
        .route("/api/v1/agents/{id}/deregister", post(agents::deregister))
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
