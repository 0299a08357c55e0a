//! The TCP listener for protocol v1 (`docs/protocol.md`): handshake, roles and tokens, agent
//! frames with ownership (claimed in the table the HTTP listener shares,
//! [`crate::serve::owners`]), ping, and the protocol's errors for bad input.
//!
//! Each connection is one task that reads lines ([`crate::protocol::framing`]), decodes them
//! ([`crate::protocol::decode`]) and acts on the runtime directly: a heartbeat goes from the
//! socket to its agent through the agent's handle (the core's fast path), through no other
//! actor. Replies go through a bounded queue to a writer task, so another connection (a
//! takeover) can tell this one that it lost an agent. A bad frame is answered and changes
//! nothing; after `max_bad_frames` in a row the connection is closed.
//!
//! Each connection has a token bucket (`rate_limit` frames/s, `rate_burst` at once); a frame
//! that finds it empty is refused with `rate_limited` and counts as a bad frame. With TLS
//! configured, every connection is TLS (rustls). At shutdown the listener stops accepting,
//! each connection stops reading, its last replies are written (for up to `drain_timeout`),
//! and it is closed; its agents are not marked disconnected (the runtime stops with them, and
//! the restart grace covers the reconnection).
//!
//! A monitor's `subscribe` (topics, filter, `snapshot`, `since`) forwards the core's
//! subscription as `snapshot` / `event` / `lagged` / `resync_required` frames; `unsubscribe`
//! ends it; the frames come from [`crate::serve::hub`], shared with WebSocket and SSE. An
//! admin's `admin` frame runs one [`vigil_actors::AdminRequest`] and is answered with `result`.

mod applied;
mod backlog;
mod bucket;
mod connection;
mod out;
mod session;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::rustls;
use tracing::{debug, field, info, info_span, warn, Instrument};
use vigil_actors::Runtime;

use crate::protocol::{error_line, ErrorCode, Role};
use crate::serve::hub::Hub;
use connection::connection;

/// Settings of the agent listener.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The longest frame, in bytes; longer ones get `frame_too_large`.
    pub max_frame_bytes: usize,
    /// Bad frames in a row before the connection is closed.
    pub max_bad_frames: u32,
    /// Agents one connection may register; the next gets `overloaded`.
    pub max_agents_per_connection: usize,
    /// Connections beyond this are answered `overloaded` and closed.
    pub max_connections: usize,
    /// How long a new connection may take to send `hello`.
    pub handshake_timeout: Duration,
    /// Frames per second per connection (0: no limit).
    pub rate_limit: u32,
    /// Frames a connection may send at once above the rate.
    pub rate_burst: u32,
    /// At shutdown, how long connections get to receive their last replies.
    pub drain_timeout: Duration,
    /// TLS for every connection (see [`crate::serve::tls::tls_config`]).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Tokens an agent's `hello` may carry; empty: no token needed.
    pub agent_tokens: Vec<String>,
    /// Tokens a monitor's `hello` may carry; empty: no token needed.
    pub monitor_tokens: Vec<String>,
    /// Tokens an admin's `hello` may carry; empty: no token needed.
    pub admin_tokens: Vec<String>,
    /// Advertised in `welcome`.
    pub heartbeat_interval: Duration,
    /// A connection that sends no frame for this long is closed.
    pub idle_timeout: Duration,
    /// Connections one IP address may hold at once.
    pub max_connections_per_ip: usize,
}

impl ServerConfig {
    fn tokens(&self, role: Role) -> &[String] {
        match role {
            Role::Agent => &self.agent_tokens,
            Role::Monitor => &self.monitor_tokens,
            Role::Admin => &self.admin_tokens,
        }
    }

    /// Whether `token` admits `role`: any token when none are configured, otherwise one of
    /// them, compared in constant time.
    fn admits(&self, role: Role, token: Option<&str>) -> bool {
        let tokens = self.tokens(role);
        tokens.is_empty() || crate::serve::auth::one_of(tokens, token)
    }
}

/// How many activity and job reports one connection may have waiting for the registry; past
/// it the connection's frames wait (and its socket fills) until the registry takes some.
pub const MAX_QUEUED_REPORTS: usize = 256;

/// State shared by every connection of a listener.
struct Shared {
    rt: Arc<Runtime>,
    /// Monitor streams, and the frame and connection counters (`frames`, `tcp_connections`).
    hub: Arc<Hub>,
    cfg: ServerConfig,
    next_conn: AtomicU64,
    per_ip: Arc<crate::serve::net::PerIp>,
}

/// The agent listener.
pub struct Server {
    local: SocketAddr,
    shared: Arc<Shared>,
    task: Option<tokio::task::JoinHandle<()>>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Server {
    /// Binds `addr` and serves connections until [`Server::stop`], with a hub of its own
    /// (`stats` frames at most once a second).
    pub async fn start(
        addr: SocketAddr,
        rt: Arc<Runtime>,
        cfg: ServerConfig,
    ) -> std::io::Result<Self> {
        Self::start_with(addr, Hub::new(rt, Duration::from_secs(1)), cfg).await
    }

    /// Binds `addr` and serves connections until [`Server::stop`], sharing `hub` with the
    /// other surfaces (HTTP).
    pub async fn start_with(
        addr: SocketAddr,
        hub: Arc<Hub>,
        cfg: ServerConfig,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let cfg_per_ip = cfg.max_connections_per_ip;
        let shared = Arc::new(Shared {
            rt: hub.runtime().clone(),
            hub,
            cfg,
            next_conn: AtomicU64::new(1),
            per_ip: crate::serve::net::PerIp::new(cfg_per_ip),
        });
        info!(%local, "agent listener up");
        let (stop_tx, mut stop_rx) = watch::channel(false);
        let counters = shared.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    _ = stop_rx.changed() => break,
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                    accepted = listener.accept() => match accepted {
                        Ok((stream, peer)) if conns.len() >= shared.cfg.max_connections => {
                            debug!(%peer, "connection refused: max_connections reached");
                            conns.spawn(refuse(stream, "too many connections; try again later"));
                        }
                        Ok((stream, peer)) => {
                            let Some(slot) = shared.per_ip.admit(peer.ip()) else {
                                debug!(%peer, "connection refused: max_connections_per_ip reached");
                                conns.spawn(refuse(stream, "too many connections from this address"));
                                continue;
                            };
                            crate::serve::net::tune(&stream);
                            let shared = shared.clone();
                            let stop = stop_rx.clone();
                            // Every event of the connection carries who it is (the JSON log's
                            // `span`); `conn` and `role` are known after the handshake.
                            let span = info_span!("connection", %peer, conn = field::Empty, role = field::Empty);
                            conns.spawn(async move {
                                let _slot = slot;
                                let applied = applied::Applied::of(&stream);
                                match shared.cfg.tls.clone() {
                                    None => connection(shared, stream, applied, stop).await,
                                    Some(tls) => {
                                        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
                                        let limit = shared.cfg.handshake_timeout;
                                        match tokio::time::timeout(limit, acceptor.accept(stream)).await {
                                            Ok(Ok(s)) => connection(shared, s, applied, stop).await,
                                            Ok(Err(e)) => debug!(error = %e, "TLS handshake failed"),
                                            Err(_) => debug!("TLS handshake timed out"),
                                        }
                                    }
                                }
                            }.instrument(span));
                        }
                        Err(e) => {
                            warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    },
                }
            }
            // Drain: every connection has seen the stop, stops reading and writes its last
            // replies; the ones still at it after the drain timeout are cut.
            let limit = shared.cfg.drain_timeout + Duration::from_millis(500);
            let _ =
                tokio::time::timeout(limit, async { while conns.join_next().await.is_some() {} })
                    .await;
            conns.shutdown().await;
        });
        Ok(Self {
            local,
            shared: counters,
            task: Some(task),
            stop: stop_tx,
        })
    }

    /// The address it listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Frames received so far (after handshakes, every connection).
    pub fn frames(&self) -> u64 {
        self.shared.hub.frames.load(Ordering::Relaxed)
    }

    /// Heartbeats taken so far (a `beats` frame counts each of its ids).
    pub fn heartbeats(&self) -> u64 {
        self.shared.hub.heartbeats.load(Ordering::Relaxed)
    }

    /// Connections open now (past their TLS handshake, including those still in `hello`).
    pub fn connections(&self) -> u64 {
        self.shared.hub.tcp_connections.load(Ordering::Relaxed)
    }

    /// Stops accepting, drains and closes every connection, and returns when they are gone.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

/// Answers a connection over a limit with `overloaded` and closes it.
async fn refuse(mut stream: tokio::net::TcpStream, why: &'static str) {
    let line = error_line(ErrorCode::Overloaded, why, None);
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(line.as_bytes())).await;
}
