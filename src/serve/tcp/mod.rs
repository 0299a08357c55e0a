//! The TCP listener for protocol v1 (`docs/protocol.md`): handshake, roles and tokens, agent
//! frames with ownership, ping, and the protocol's errors for bad input.
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
//! ends it; the frames come from [`crate::monitor`], shared with WebSocket and SSE. An
//! admin's `admin` frame runs one [`AdminRequest`] and is answered with `result`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use futures::{FutureExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_rustls::rustls;
use tokio_util::codec::FramedRead;
use tracing::{debug, info, warn};
use vigil_actors::{
    AdminError, AdminRequest, AgentHandle, AgentId, Beat, BeatError, EventBody, EventKind, Filter,
    JobReport, Reason, RegisterError, Registration, ReportQuota, Runtime, RuntimeError,
    SubscribeOptions, SubscriptionItem,
};

use crate::serve::hub::{Hub, Open};

use crate::protocol::framing::{Line, LineFrames};
use crate::protocol::{
    self, error_line, line, ClientFrame, ErrorCode, Frame, Hello, Role, PROTOCOL_VERSION,
};

/// Settings of the agent listener.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub max_frame_bytes: usize,
    pub max_bad_frames: u32,
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
    /// TLS for every connection (see [`tls_config`]).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub agent_tokens: Vec<String>,
    pub monitor_tokens: Vec<String>,
    pub admin_tokens: Vec<String>,
    /// Advertised in `welcome`.
    pub heartbeat_interval: Duration,
    /// A connection that sends no frame for this long is closed.
    pub idle_timeout: Duration,
    /// Connections one IP address may hold at once.
    pub max_connections_per_ip: usize,
}

impl Default for ServerConfig {
    /// The configuration file's defaults (`config/vigil.toml`).
    fn default() -> Self {
        crate::config::Config::default().server_config()
    }
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
        if tokens.is_empty() {
            return true;
        }
        let given = token.unwrap_or("").as_bytes();
        tokens.iter().fold(false, |ok, t| {
            ok | constant_time_eq::constant_time_eq(t.as_bytes(), given)
        })
    }
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Pem { path: String, message: String },
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// A TLS server configuration from a certificate chain and a private key (PEM files).
pub fn tls_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| TlsError::Read {
            path: p.display().to_string(),
            source,
        })
    };
    let pem_err = |p: &Path, e: rustls::pki_types::pem::Error| TlsError::Pem {
        path: p.display().to_string(),
        message: e.to_string(),
    };
    let cert_pem = read(cert)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(cert, e))?;
    if chain.is_empty() {
        return Err(TlsError::Pem {
            path: cert.display().to_string(),
            message: "no certificate in the file".into(),
        });
    }
    let key_pem = read(key)?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| pem_err(key, e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)?;
    Ok(Arc::new(cfg))
}

/// How many activity and job reports one connection may have waiting for the registry; past
/// it the connection's frames wait (and its socket fills) until the registry takes some.
pub const MAX_QUEUED_REPORTS: usize = 256;

/// Messages to a connection from elsewhere. Never dropped, so the channel has no bound; what
/// it can hold is bounded all the same: each notice is about an agent the connection owns, and
/// the owner changes with it (a takeover names the new owner; an evicted agent must register
/// again, by another takeover, before it can be evicted again).
enum Control {
    /// Another connection took this agent over.
    TakenOver(AgentId),
    /// An operator evicted this agent (the seq of the eviction).
    Evicted(AgentId, u64),
}

struct Owner {
    conn: u64,
    tx: mpsc::UnboundedSender<Control>,
}

/// State shared by every connection of a listener.
struct Shared {
    rt: Arc<Runtime>,
    /// Monitor streams, and the frame and connection counters (`frames`, `tcp_connections`).
    hub: Arc<Hub>,
    cfg: ServerConfig,
    /// Which live connection owns each agent.
    owners: Mutex<HashMap<AgentId, Owner>>,
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
            owners: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            per_ip: crate::serve::net::PerIp::new(cfg_per_ip),
        });
        info!(%local, "agent listener up");
        let (stop_tx, mut stop_rx) = watch::channel(false);
        let evictions = tokio::spawn(tell_evicted(shared.clone()));
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
                            conns.spawn(async move {
                                let _slot = slot;
                                match shared.cfg.tls.clone() {
                                    None => connection(shared, stream, stop).await,
                                    Some(tls) => {
                                        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
                                        let limit = shared.cfg.handshake_timeout;
                                        match tokio::time::timeout(limit, acceptor.accept(stream)).await {
                                            Ok(Ok(s)) => connection(shared, s, stop).await,
                                            Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
                                            Err(_) => debug!(%peer, "TLS handshake timed out"),
                                        }
                                    }
                                }
                            });
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
            evictions.abort();
            let _ = evictions.await; // it holds the runtime: gone before `stop` returns
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

fn now_text() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Tells the owners of evicted agents (the `evicted` frame).
async fn tell_evicted(shared: Arc<Shared>) {
    let filter = Filter {
        events: vec![EventKind::Deregistered],
        ..Filter::default()
    };
    let mut since = None;
    loop {
        let opts = SubscribeOptions {
            filter: filter.clone(),
            since,
            snapshot: false,
        };
        let mut sub = match shared.rt.subscribe(opts).await {
            Ok(sub) => sub,
            // The store is failing: no eviction can be durable meanwhile; try again.
            Err(RuntimeError::Overloaded(_)) => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(_) => return, // the runtime is stopping
        };
        while let Some(item) = sub.next().await {
            match item {
                SubscriptionItem::Event(e) => {
                    since = Some(e.seq);
                    let evicted = matches!(
                        e.body,
                        EventBody::Deregistered {
                            reason: Reason::Evicted,
                            ..
                        }
                    );
                    if let (true, Some(id)) = (evicted, &e.agent) {
                        let owners = shared.owners.lock().unwrap_or_else(|e| e.into_inner());
                        if let Some(o) = owners.get(id) {
                            let _ = o.tx.send(Control::Evicted(id.clone(), e.seq));
                        }
                    }
                }
                SubscriptionItem::Lagged { last_seq } => since = Some(last_seq),
                SubscriptionItem::ResyncRequired { .. } => since = None,
                SubscriptionItem::Snapshot(_) => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A connection's token bucket.
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: u32, burst: u32) -> Option<Self> {
        (rate > 0).then(|| Self {
            rate: rate as f64,
            burst: burst.max(1) as f64,
            tokens: burst.max(1) as f64,
            at: Instant::now(),
        })
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// One connection: handshake, then frames until the peer closes, is closed, or the listener
/// stops.
async fn connection<S>(shared: Arc<Shared>, stream: S, mut stop: watch::Receiver<bool>)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let _open = Open::new(&shared.hub, |h| &h.tcp_connections);
    let (read, mut write) = tokio::io::split(stream);
    let mut frames = FramedRead::new(read, LineFrames::new(shared.cfg.max_frame_bytes));
    let (out_tx, mut out_rx) = mpsc::channel::<Out>(1024);
    let drain = shared.cfg.drain_timeout;
    let writer = tokio::spawn(async move {
        // The lines already queued go out in one write (a monitor's burst of events is one
        // syscall, not one per event).
        let mut buf = Vec::with_capacity(4096);
        while let Some(out) = out_rx.recv().await {
            buf.clear();
            out.append_to(&mut buf);
            while buf.len() < WRITE_BATCH {
                match out_rx.try_recv() {
                    Ok(more) => more.append_to(&mut buf),
                    Err(_) => break,
                }
            }
            if write.write_all(&buf).await.is_err() {
                break;
            }
            // A snapshot or a long list can be megabytes: not kept for the connection's life.
            if buf.capacity() > 4 * WRITE_BATCH {
                buf = Vec::with_capacity(4096);
            }
        }
        let _ = tokio::time::timeout(drain, write.shutdown()).await;
    });

    // Handshake: the first frame must be `hello`.
    let first = tokio::time::timeout(shared.cfg.handshake_timeout, next_frame(&mut frames)).await;
    let hello = match first {
        Err(_) => {
            let _ = out_tx
                .send(
                    error_line(
                        ErrorCode::HelloRequired,
                        "no hello within the handshake timeout",
                        None,
                    )
                    .into(),
                )
                .await;
            None
        }
        Ok(None) => None,
        Ok(Some(Ok(Some(Frame {
            body: ClientFrame::Hello(h),
            reference,
        })))) => Some((h, reference)),
        Ok(Some(Ok(_) | Err(_))) => {
            let _ = out_tx
                .send(
                    error_line(
                        ErrorCode::HelloRequired,
                        "the first frame must be hello",
                        None,
                    )
                    .into(),
                )
                .await;
            None
        }
    };
    let role = match hello {
        Some((h, reference)) => match handshake(&shared, &h) {
            Ok(()) => {
                let welcome = json!({
                    "type": "welcome",
                    "protocol": PROTOCOL_VERSION,
                    "session": format!("{:016x}", rand_session()),
                    "server": concat!("vigil/", env!("CARGO_PKG_VERSION")),
                    "heartbeat_interval_ms": shared.cfg.heartbeat_interval.as_millis() as u64,
                    "time": now_text(),
                });
                let _ = out_tx.send(line(welcome, reference.as_ref()).into()).await;
                Some(h.role)
            }
            Err((code, msg)) => {
                let _ = out_tx
                    .send(error_line(code, &msg, reference.as_ref()).into())
                    .await;
                None
            }
        },
        None => None,
    };
    if let Some(role) = role {
        let conn = shared.next_conn.fetch_add(1, Ordering::Relaxed);
        let mut session = Session {
            shared: shared.clone(),
            conn,
            role,
            out: out_tx.clone(),
            owned: HashMap::default(),
            bad: 0,
            bucket: Bucket::new(shared.cfg.rate_limit, shared.cfg.rate_burst),
            subscription: None,
            beats: 0,
            reports: ReportQuota::new(MAX_QUEUED_REPORTS),
        };
        let (ctl_tx, mut ctl_rx) = mpsc::unbounded_channel::<Control>();
        // One future for the stop, made once: a new `changed()` per frame would register
        // with the listener's shared watch (a lock) on every heartbeat.
        let stopped = async {
            while !*stop.borrow_and_update() {
                if stop.changed().await.is_err() {
                    break;
                }
            }
        };
        tokio::pin!(stopped);
        let mut stopping = false;
        let mut idle = crate::serve::net::Idle::new(shared.cfg.idle_timeout);
        loop {
            tokio::select! {
                item = next_frame(&mut frames) => {
                    let Some(mut item) = item else { break };
                    idle.touch();
                    // The frames already read go through without a trip round the `select!`
                    // (each trip polls the stop and control branches too), and the frame
                    // counter every connection shares is added to once per batch.
                    let mut n = 0;
                    let open = loop {
                        n += 1;
                        if !session.handle(item, &ctl_tx).await {
                            break false;
                        }
                        match next_frame(&mut frames).now_or_never() {
                            Some(Some(more)) => item = more,
                            _ => break true,
                        }
                    };
                    shared.hub.frames.fetch_add(n, Ordering::Relaxed);
                    if session.beats > 0 {
                        shared.hub.heartbeats.fetch_add(session.beats, Ordering::Relaxed);
                        session.beats = 0;
                    }
                    if !open {
                        break;
                    }
                }
                Some(ctl) = ctl_rx.recv() => session.control(ctl).await,
                () = idle.expired() => {
                    debug!(conn, "no frame within the idle timeout; closing");
                    break;
                }
                () = &mut stopped => {
                    stopping = true;
                    break;
                }
            }
        }
        session.closed(!stopping);
    }
    drop(out_tx);
    // The writer sends what is queued, then closes (bounded by the drain timeout).
    let _ = tokio::time::timeout(drain + Duration::from_millis(100), writer).await;
}

/// The next item: a decoded frame, a blank line (`Ok(None)`), or a decoding error; `None` at
/// the end of the stream (or a read error).
async fn next_frame<R: AsyncRead>(
    frames: &mut FramedRead<ReadHalf<R>, LineFrames>,
) -> Option<Result<Option<Frame>, protocol::FrameError>> {
    match frames.next().await? {
        Ok(Line::Frame(bytes)) => Some(protocol::decode(&bytes)),
        Ok(Line::TooLarge) => Some(Err(protocol::FrameError {
            code: ErrorCode::FrameTooLarge,
            message: "frame longer than max_frame_bytes; skipped".into(),
            reference: None,
        })),
        Err(e) => {
            debug!(error = %e, "read failed");
            None
        }
    }
}

fn handshake(shared: &Shared, h: &Hello) -> Result<(), (ErrorCode, String)> {
    if h.protocol != PROTOCOL_VERSION {
        return Err((
            ErrorCode::UnsupportedProtocol,
            format!("this server speaks protocol {PROTOCOL_VERSION}"),
        ));
    }
    if !shared.cfg.admits(h.role, h.token.as_deref()) {
        return Err((ErrorCode::Unauthorized, "wrong or missing token".into()));
    }
    Ok(())
}

fn rand_session() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Utc::now().timestamp_nanos_opt().unwrap_or(0) as u128);
    h.finish()
}

struct Session {
    shared: Arc<Shared>,
    conn: u64,
    role: Role,
    out: mpsc::Sender<Out>,
    /// Looked up on every heartbeat; SipHash, as the ids are the client's choice.
    owned: HashMap<AgentId, AgentHandle>,
    bad: u32,
    bucket: Option<Bucket>,
    /// A monitor's subscription: the task that forwards its items to the writer.
    subscription: Option<tokio::task::JoinHandle<()>>,
    /// Heartbeats taken since the shared counter was last added to.
    beats: u64,
    /// Bounds the activity and job reports this connection has waiting for the registry.
    reports: ReportQuota,
}

impl Session {
    async fn send(&self, line: String) {
        let _ = self.out.send(Out::Line(line)).await;
    }

    async fn error(&self, code: ErrorCode, msg: &str, reference: &Option<Value>) {
        self.send(error_line(code, msg, reference.as_ref())).await;
    }

    /// Handles one item; `false` closes the connection.
    async fn handle(
        &mut self,
        item: Result<Option<Frame>, protocol::FrameError>,
        ctl: &mpsc::UnboundedSender<Control>,
    ) -> bool {
        let frame = match item {
            Ok(None) => return true,
            Ok(Some(f)) => f,
            Err(e) => return self.bad_frame(e.code, &e.message, &e.reference).await,
        };
        if let Some(b) = &mut self.bucket {
            if !b.take() {
                let msg = format!(
                    "more than {} frames per second; frame refused",
                    self.shared.cfg.rate_limit
                );
                return self
                    .bad_frame(ErrorCode::RateLimited, &msg, &frame.reference)
                    .await;
            }
        }
        self.bad = 0;
        let reference = frame.reference;
        if let Some(needed) = frame.body.role() {
            if needed != self.role {
                let msg = format!("this frame needs the {needed:?} role").to_lowercase();
                self.error(ErrorCode::Forbidden, &msg, &reference).await;
                return true;
            }
        }
        match frame.body {
            ClientFrame::Hello(_) => {
                self.error(ErrorCode::InvalidField, "already said hello", &reference)
                    .await
            }
            ClientFrame::Ping => {
                self.send(line(
                    json!({"type": "pong", "time": now_text()}),
                    reference.as_ref(),
                ))
                .await
            }
            ClientFrame::Register(r) => self.register(r, reference, ctl).await,
            ClientFrame::Heartbeat(h) => {
                if let Some(Err(msg)) = h.activity.as_deref().map(|a| check_activity(a, None)) {
                    self.error(ErrorCode::InvalidField, &msg, &reference).await;
                    return true;
                }
                let beat = Beat {
                    reported: h.status,
                    metrics: h.metrics,
                };
                match self.owned.get(&h.id).map(|handle| handle.heartbeat(beat)) {
                    Some(Ok(())) => {
                        self.beats += 1;
                        if let Some(a) = h.activity {
                            let rt = &self.shared.rt;
                            let _ = rt
                                .report_activity_within(&self.reports, &h.id, a, None)
                                .await;
                        }
                        self.ack(&reference).await
                    }
                    Some(Err(e)) => self.beat_failed(&h.id, e, &reference).await,
                    None => self.not_owned(&h.id, &reference).await,
                }
            }
            ClientFrame::Activity(a) => {
                if !self.owns(&a.id) {
                    self.not_owned(&a.id, &reference).await;
                } else if let Err(msg) = check_activity(&a.activity, a.detail.as_deref()) {
                    self.error(ErrorCode::InvalidField, &msg, &reference).await;
                } else {
                    let rt = &self.shared.rt;
                    let (activity, detail) = (a.activity, a.detail);
                    match rt
                        .report_activity_within(&self.reports, &a.id, activity, detail)
                        .await
                    {
                        Ok(()) => self.ack(&reference).await,
                        Err(e) => self.beat_failed(&a.id, e, &reference).await,
                    }
                }
            }
            ClientFrame::Job(j) => {
                if !self.owns(&j.id) {
                    self.not_owned(&j.id, &reference).await;
                } else if let Err(msg) = check_job(&j) {
                    self.error(ErrorCode::InvalidField, &msg, &reference).await;
                } else {
                    let report = JobReport {
                        job: j.job,
                        state: j.state,
                        progress: j.progress,
                        error: j.error,
                    };
                    match self
                        .shared
                        .rt
                        .report_job_within(&self.reports, &j.id, report)
                        .await
                    {
                        Ok(()) => self.ack(&reference).await,
                        Err(e) => self.beat_failed(&j.id, e, &reference).await,
                    }
                }
            }
            ClientFrame::Deregister(d) => {
                if !self.owns(&d.id) {
                    self.not_owned(&d.id, &reference).await;
                    return true;
                }
                match self.shared.rt.deregister(&d.id).await {
                    Ok(_) => {
                        self.disown(&d.id);
                        self.send(line(
                            json!({"type": "deregistered", "id": d.id.as_str()}),
                            reference.as_ref(),
                        ))
                        .await;
                    }
                    Err(e) => {
                        self.error(ErrorCode::Internal, &e.to_string(), &reference)
                            .await
                    }
                }
            }
            ClientFrame::Subscribe(sub) => self.subscribe(sub, reference).await,
            ClientFrame::Unsubscribe => {
                if let Some(task) = self.subscription.take() {
                    task.abort();
                    let _ = task.await;
                }
                self.ack(&reference).await
            }
            ClientFrame::Admin(a) => self.admin(a, reference).await,
        }
        true
    }

    /// Answers a refused frame; `false` (close) after `max_bad_frames` in a row.
    async fn bad_frame(&mut self, code: ErrorCode, msg: &str, reference: &Option<Value>) -> bool {
        self.bad += 1;
        self.error(code, msg, reference).await;
        if self.bad >= self.shared.cfg.max_bad_frames {
            self.error(
                ErrorCode::BadFrame,
                "too many bad frames in a row; closing",
                &None,
            )
            .await;
            return false;
        }
        true
    }

    /// Acknowledges a frame that carried a `ref`.
    async fn ack(&self, reference: &Option<Value>) {
        if reference.is_some() {
            self.send(line(json!({"type": "ack"}), reference.as_ref()))
                .await
        }
    }

    /// Answers a frame about an agent this connection does not own.
    async fn not_owned(&self, id: &AgentId, reference: &Option<Value>) {
        let owned_elsewhere = self
            .shared
            .owners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(id);
        let (code, msg) = match owned_elsewhere {
            true => (ErrorCode::NotOwner, "another connection owns this agent"),
            false => (
                ErrorCode::NotRegistered,
                "this agent is not registered on this connection",
            ),
        };
        self.error(code, msg, reference).await;
    }

    /// A monitor subscribes (replacing any subscription it had): a snapshot or a replay as
    /// asked, then live events, each as a frame; `lagged` or `resync_required` end it. The
    /// frames go through the connection's bounded reply queue, so a monitor that does not
    /// read falls behind in its own subscription and gets `lagged`, delaying nobody else.
    async fn subscribe(&mut self, sub: protocol::Subscribe, reference: Option<Value>) {
        // A client that subscribes again and again without reading would queue a snapshot
        // each time.
        if self.out.capacity() < self.out.max_capacity() / 2 {
            let msg = "replies are not being read; subscribe again once they are";
            self.error(ErrorCode::Overloaded, msg, &reference).await;
            return;
        }
        if let Some(task) = self.subscription.take() {
            task.abort();
            let _ = task.await; // none of its frames come after this
        }
        let stream = match self.shared.hub.subscribe(sub).await {
            Ok(s) => s,
            Err((code, msg)) => {
                self.error(code, &msg, &reference).await;
                return;
            }
        };
        self.ack(&reference).await;
        let out = self.out.clone();
        self.subscription = Some(tokio::spawn(stream.run(move |frame| {
            let out = out.clone();
            async move { out.send(Out::Frame(frame.text)).await.is_ok() }
        })));
    }

    /// An admin operation, answered with `result` or the protocol's error.
    async fn admin(&mut self, a: protocol::Admin, reference: Option<Value>) {
        match admin_op(&self.shared.rt, &a.op, a.args).await {
            Ok(data) => {
                let frame = json!({"type": "result", "ok": true, "data": data});
                self.send(line(frame, reference.as_ref())).await
            }
            Err((code, msg)) => self.error(code, &msg, &reference).await,
        }
    }

    /// A report the runtime did not take: the agent's actor is gone (it left, was evicted, or
    /// is restarting after a crash).
    /// Whether this connection owns `id` now: it registered it, and no later registration
    /// (a takeover whose notice has not come yet) superseded that.
    fn owns(&mut self, id: &AgentId) -> bool {
        match self.owned.get(id) {
            Some(h) if h.is_current() => true,
            Some(_) => {
                self.owned.remove(id);
                false
            }
            None => false,
        }
    }

    async fn beat_failed(&mut self, id: &AgentId, e: BeatError, reference: &Option<Value>) {
        if let BeatError::Superseded(_) = e {
            // Taken over (its notice may not have come yet): no longer this connection's.
            self.owned.remove(id);
            self.error(ErrorCode::NotOwner, &e.to_string(), reference)
                .await;
            return;
        }
        let left = self.shared.rt.agent(id).is_none();
        if left {
            self.disown(id);
            self.error(ErrorCode::NotRegistered, &e.to_string(), reference)
                .await
        } else {
            self.error(ErrorCode::Internal, &e.to_string(), reference)
                .await
        }
    }

    async fn register(
        &mut self,
        r: protocol::Register,
        reference: Option<Value>,
        ctl: &mpsc::UnboundedSender<Control>,
    ) {
        let id = r.id.clone();
        if !self.owned.contains_key(&id)
            && self.owned.len() >= self.shared.cfg.max_agents_per_connection
        {
            let msg = format!(
                "at most {} agents per connection",
                self.shared.cfg.max_agents_per_connection
            );
            self.error(ErrorCode::Overloaded, &msg, &reference).await;
            return;
        }
        // Ownership: claim the id, or refuse, or take it over.
        let claimed = {
            let mut owners = self.shared.owners.lock().unwrap_or_else(|e| e.into_inner());
            let refused = owners
                .get(&id)
                .is_some_and(|o| o.conn != self.conn && !r.takeover);
            match refused {
                true => None,
                false => Some(owners.insert(
                    id.clone(),
                    Owner {
                        conn: self.conn,
                        tx: ctl.clone(),
                    },
                )),
            }
        };
        let Some(previous) = claimed else {
            self.error(
                ErrorCode::Conflict,
                "another connection owns this agent (register with takeover to take it)",
                &reference,
            )
            .await;
            return;
        };
        if let Some(old) = previous.filter(|o| o.conn != self.conn) {
            let _ = old.tx.send(Control::TakenOver(id.clone()));
        }
        let reg = Registration {
            id: Some(id.clone()),
            name: r.name,
            kind: r.kind,
            metadata: r.metadata,
            capabilities: r.capabilities,
            heartbeat_interval: r.heartbeat_interval_ms.map(Duration::from_millis),
        };
        match self.shared.rt.register_sequenced(reg).await {
            Ok((handle, seq)) => {
                let reply = json!({
                    "type": "registered",
                    "id": id.as_str(),
                    "status": "online",
                    "heartbeat_interval_ms": handle.heartbeat_interval().as_millis() as u64,
                    "incarnation": handle.incarnation(),
                });
                self.owned.insert(id, handle);
                // `registered` goes out once the event is durable; the connection's other
                // frames (its other agents' beats, more registrations) are served meanwhile.
                let (rt, out) = (self.shared.rt.clone(), self.out.clone());
                tokio::spawn(async move {
                    let text = match rt.wait_durable(seq).await {
                        Ok(()) => line(reply, reference.as_ref()),
                        Err(e) => {
                            let code = match e {
                                RuntimeError::Overloaded(_) => ErrorCode::Overloaded,
                                _ => ErrorCode::Internal,
                            };
                            error_line(code, &e.to_string(), reference.as_ref())
                        }
                    };
                    let _ = out.send(Out::Line(text)).await;
                });
            }
            Err(e) => {
                if !self.owned.contains_key(&id) {
                    self.disown(&id);
                }
                let code = match e {
                    RegisterError::MissingField(_) => ErrorCode::MissingField,
                    RegisterError::InvalidField(_) => ErrorCode::InvalidField,
                    RegisterError::Unavailable(_) => ErrorCode::Internal,
                    RegisterError::Overloaded(_) => ErrorCode::Overloaded,
                };
                self.error(code, &e.to_string(), &reference).await;
            }
        }
    }

    async fn control(&mut self, ctl: Control) {
        match ctl {
            Control::TakenOver(id) => {
                if self.owned.remove(&id).is_some() {
                    let evicted =
                        json!({"type": "evicted", "id": id.as_str(), "reason": "taken_over"});
                    self.send(line(evicted, None)).await;
                }
            }
            Control::Evicted(id, seq) => {
                // An eviction before this connection's registration of the agent (it came
                // back at once) is not about the registration it holds now.
                let current = self.owned.get(&id).map(|h| h.registered_seq());
                if current.is_some_and(|registered| registered < seq) {
                    self.disown(&id);
                    let evicted =
                        json!({"type": "evicted", "id": id.as_str(), "reason": "evicted"});
                    self.send(line(evicted, None)).await;
                }
            }
        }
    }

    /// Drops this connection's claim on `id` (if it still holds it).
    fn disown(&mut self, id: &AgentId) {
        self.owned.remove(id);
        let mut owners = self.shared.owners.lock().unwrap_or_else(|e| e.into_inner());
        release(&mut owners, id, self.conn);
    }

    /// The connection is gone: its claims are released and, unless the listener is stopping,
    /// its agents are disconnected (their deadlines run on).
    fn closed(&mut self, disconnect: bool) {
        if let Some(task) = self.subscription.take() {
            task.abort();
        }
        let mut owners = self.shared.owners.lock().unwrap_or_else(|e| e.into_inner());
        for (id, handle) in self.owned.drain() {
            // Only an agent this connection still owns is disconnected: after a takeover the
            // new owner's agent stays connected (whether or not the notice came).
            let ours = owners.get(&id).is_some_and(|o| o.conn == self.conn);
            if disconnect && ours {
                let _ = handle.disconnected();
            }
            release(&mut owners, &id, self.conn);
        }
    }
}

impl Drop for Session {
    /// A connection cut at shutdown never reaches `closed`: its subscription ends here.
    fn drop(&mut self) {
        if let Some(task) = self.subscription.take() {
            task.abort();
        }
    }
}

/// Removes `conn`'s claim on `id`, never one another connection has taken since.
fn release(owners: &mut HashMap<AgentId, Owner>, id: &AgentId, conn: u64) {
    if owners.get(id).is_some_and(|o| o.conn == conn) {
        owners.remove(id);
    }
}

/// Runs one admin operation (`op` and its `args`, as the protocol's `admin` frame and the
/// REST endpoints give them) and returns its data, or the protocol's error code and message.
pub async fn admin_op(rt: &Runtime, op: &str, args: Value) -> Result<Value, (ErrorCode, String)> {
    // The outbound channels are the runtime's, not the actors': answered here.
    match op {
        "sinks" => return to_value(rt.sinks().await),
        "dead_letters" => {
            let sink = sink_arg(op, &args)?;
            return to_value(rt.dead_letters(&sink).await.map_err(admin_error)?);
        }
        "replay" => {
            let sink = sink_arg(op, &args)?;
            let id = match &args["id"] {
                Value::Null => None,
                v => Some(v.as_u64().ok_or_else(|| {
                    (
                        ErrorCode::InvalidField,
                        "admin replay: id must be a dead letter's id".to_string(),
                    )
                })?),
            };
            let (delivered, held) = rt
                .replay_dead_letters(&sink, id)
                .await
                .map_err(admin_error)?;
            return Ok(serde_json::json!({ "sink": sink, "delivered": delivered, "held": held }));
        }
        _ => {}
    }
    let req = protocol::admin_request(op, args)?;
    let stats = matches!(req, AdminRequest::Stats);
    let res = rt.admin(req).await.map_err(admin_error)?;
    let mut v = to_value(res)?;
    if stats {
        v["sinks"] = to_value(rt.sinks().await)?;
    }
    Ok(v)
}

fn to_value(v: impl serde::Serialize) -> Result<Value, (ErrorCode, String)> {
    serde_json::to_value(v).map_err(|e| (ErrorCode::Internal, e.to_string()))
}

fn sink_arg(op: &str, args: &Value) -> Result<String, (ErrorCode, String)> {
    match &args["sink"] {
        Value::String(s) => Ok(s.clone()),
        Value::Null => Err((
            ErrorCode::MissingField,
            format!("admin {op}: missing field `sink`"),
        )),
        _ => Err((
            ErrorCode::InvalidField,
            format!("admin {op}: sink must be a string"),
        )),
    }
}

fn admin_error(e: AdminError) -> (ErrorCode, String) {
    let code = match e {
        AdminError::UnknownAgent(_) => ErrorCode::UnknownAgent,
        AdminError::InvalidField(_) => ErrorCode::InvalidField,
        AdminError::Forbidden(_) => ErrorCode::Forbidden,
        AdminError::Unavailable(_) => ErrorCode::Internal,
        AdminError::Overloaded(_) => ErrorCode::Overloaded,
    };
    (code, e.to_string())
}

/// What a connection's writer writes: a reply of its own, or a monitor frame that every
/// subscriber of its event shares (its line ending is added as it is written, so no
/// subscriber copies it).
enum Out {
    Line(String),
    Frame(Arc<str>),
}

impl Out {
    fn append_to(&self, buf: &mut Vec<u8>) {
        match self {
            Out::Line(l) => buf.extend_from_slice(l.as_bytes()),
            Out::Frame(f) => {
                buf.extend_from_slice(f.as_bytes());
                buf.push(b'\n');
            }
        }
    }
}

impl From<String> for Out {
    fn from(line: String) -> Self {
        Out::Line(line)
    }
}

/// Most bytes of queued lines a connection's writer puts in one write.
const WRITE_BATCH: usize = 64 * 1024;

/// Longest activity name and detail, and job id.
const MAX_ACTIVITY: usize = 64;
const MAX_DETAIL: usize = 1024;
const MAX_JOB_ID: usize = 128;

fn check_activity(activity: &str, detail: Option<&str>) -> Result<(), String> {
    if activity.is_empty() || activity.len() > MAX_ACTIVITY {
        return Err(format!("activity must be 1-{MAX_ACTIVITY} bytes"));
    }
    if detail.is_some_and(|d| d.len() > MAX_DETAIL) {
        return Err(format!("detail must be at most {MAX_DETAIL} bytes"));
    }
    Ok(())
}

fn check_job(j: &protocol::Job) -> Result<(), String> {
    if j.job.is_empty() || j.job.len() > MAX_JOB_ID {
        return Err(format!("job must be 1-{MAX_JOB_ID} bytes"));
    }
    if j.progress.is_some_and(|p| !(0.0..=1.0).contains(&p)) {
        return Err("progress must be between 0 and 1".into());
    }
    if j.error.as_ref().is_some_and(|e| e.len() > MAX_DETAIL) {
        return Err(format!("error must be at most {MAX_DETAIL} bytes"));
    }
    Ok(())
}
