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
//! Not yet here: the monitor and admin roles' frames, `activity` and `job`, per-connection
//! rate limits, TLS, and draining connections at shutdown.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;
use tracing::{debug, info, warn};
use vigil_actors::{AgentHandle, AgentId, Beat, RegisterError, Registration, Runtime};

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
    pub agent_tokens: Vec<String>,
    pub monitor_tokens: Vec<String>,
    pub admin_tokens: Vec<String>,
    /// Advertised in `welcome`.
    pub heartbeat_interval: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_frame_bytes: 65536,
            max_bad_frames: 20,
            max_agents_per_connection: 10_000,
            max_connections: 10_000,
            handshake_timeout: Duration::from_secs(10),
            agent_tokens: Vec::new(),
            monitor_tokens: Vec::new(),
            admin_tokens: Vec::new(),
            heartbeat_interval: Duration::from_secs(30),
        }
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

/// Messages to a connection from elsewhere.
enum Control {
    /// Another connection took this agent over.
    TakenOver(AgentId),
}

struct Owner {
    conn: u64,
    tx: mpsc::Sender<Control>,
}

/// State shared by every connection of a listener.
struct Shared {
    rt: Arc<Runtime>,
    cfg: ServerConfig,
    /// Which live connection owns each agent.
    owners: Mutex<HashMap<AgentId, Owner>>,
    next_conn: AtomicU64,
}

/// The agent listener.
pub struct Server {
    local: SocketAddr,
    task: Option<tokio::task::JoinHandle<()>>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Server {
    /// Binds `addr` and serves connections until [`Server::stop`].
    pub async fn start(
        addr: SocketAddr,
        rt: Arc<Runtime>,
        cfg: ServerConfig,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let shared = Arc::new(Shared {
            rt,
            cfg,
            owners: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
        });
        info!(%local, "agent listener up");
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    _ = stop_rx.changed() => break,
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                    accepted = listener.accept() => match accepted {
                        Ok((mut stream, peer)) if conns.len() >= shared.cfg.max_connections => {
                            debug!(%peer, "connection refused: max_connections reached");
                            conns.spawn(async move {
                                let line = error_line(
                                    ErrorCode::Overloaded,
                                    "too many connections; try again later",
                                    None,
                                );
                                let _ = tokio::time::timeout(
                                    Duration::from_secs(1),
                                    stream.write_all(line.as_bytes()),
                                )
                                .await;
                            });
                        }
                        Ok((stream, peer)) => {
                            let _ = stream.set_nodelay(true);
                            let shared = shared.clone();
                            conns.spawn(async move {
                                if let Err(e) = connection(shared, stream).await {
                                    debug!(%peer, error = %e, "connection ended with an error");
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
            // Every connection ends with the listener (and with them their runtime handles).
            conns.shutdown().await;
        });
        Ok(Self {
            local,
            task: Some(task),
            stop: stop_tx,
        })
    }

    /// The address it listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Stops accepting, closes every connection, and returns when they are gone.
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

fn now_text() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// One connection: handshake, then frames until the peer closes or is closed.
async fn connection(shared: Arc<Shared>, stream: TcpStream) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut frames = FramedRead::new(read, LineFrames::new(shared.cfg.max_frame_bytes));
    let (out_tx, mut out_rx) = mpsc::channel::<String>(1024);
    let writer = tokio::spawn(async move {
        while let Some(line) = out_rx.recv().await {
            if write.write_all(line.as_bytes()).await.is_err() {
                break;
            }
        }
        let _ = write.shutdown().await;
    });

    // Handshake: the first frame must be `hello`.
    let first = tokio::time::timeout(shared.cfg.handshake_timeout, next_frame(&mut frames)).await;
    let hello = match first {
        Err(_) => {
            let _ = out_tx
                .send(error_line(
                    ErrorCode::HelloRequired,
                    "no hello within the handshake timeout",
                    None,
                ))
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
                .send(error_line(
                    ErrorCode::HelloRequired,
                    "the first frame must be hello",
                    None,
                ))
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
                let _ = out_tx.send(line(welcome, reference.as_ref())).await;
                Some(h.role)
            }
            Err((code, msg)) => {
                let _ = out_tx
                    .send(error_line(code, &msg, reference.as_ref()))
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
            owned: HashMap::new(),
            bad: 0,
        };
        let (ctl_tx, mut ctl_rx) = mpsc::channel::<Control>(256);
        loop {
            tokio::select! {
                item = next_frame(&mut frames) => {
                    let Some(item) = item else { break };
                    if !session.handle(item, &ctl_tx).await {
                        break;
                    }
                }
                Some(ctl) = ctl_rx.recv() => session.control(ctl).await,
            }
        }
        session.closed();
    }
    drop(out_tx);
    let _ = writer.await;
    Ok(())
}

/// The next item: a decoded frame, a blank line (`Ok(None)`), or a decoding error; `None` at
/// the end of the stream (or a read error).
async fn next_frame(
    frames: &mut FramedRead<tokio::net::tcp::OwnedReadHalf, LineFrames>,
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
    out: mpsc::Sender<String>,
    owned: HashMap<AgentId, AgentHandle>,
    bad: u32,
}

impl Session {
    async fn send(&self, line: String) {
        let _ = self.out.send(line).await;
    }

    async fn error(&self, code: ErrorCode, msg: &str, reference: &Option<Value>) {
        self.send(error_line(code, msg, reference.as_ref())).await;
    }

    /// Handles one item; `false` closes the connection.
    async fn handle(
        &mut self,
        item: Result<Option<Frame>, protocol::FrameError>,
        ctl: &mpsc::Sender<Control>,
    ) -> bool {
        let frame = match item {
            Ok(None) => return true,
            Ok(Some(f)) => f,
            Err(e) => {
                self.bad += 1;
                self.error(e.code, &e.message, &e.reference).await;
                if self.bad >= self.shared.cfg.max_bad_frames {
                    self.error(
                        ErrorCode::BadFrame,
                        "too many bad frames in a row; closing",
                        &None,
                    )
                    .await;
                    return false;
                }
                return true;
            }
        };
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
                let beat = Beat {
                    reported: h.status,
                    metrics: h.metrics,
                };
                match self.owned.get(&h.id).map(|handle| handle.heartbeat(beat)) {
                    Some(Ok(())) if reference.is_some() => {
                        self.send(line(json!({"type": "ack"}), reference.as_ref()))
                            .await
                    }
                    Some(Ok(())) => {}
                    Some(Err(e)) => {
                        self.error(ErrorCode::Internal, &e.to_string(), &reference)
                            .await
                    }
                    None => self.not_owned(&h.id, &reference).await,
                }
            }
            ClientFrame::Deregister(d) => {
                if !self.owned.contains_key(&d.id) {
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
            ClientFrame::Activity(_)
            | ClientFrame::Job(_)
            | ClientFrame::Subscribe(_)
            | ClientFrame::Unsubscribe
            | ClientFrame::Admin(_) => {
                self.error(
                    ErrorCode::UnknownType,
                    "not served on this listener yet",
                    &reference,
                )
                .await
            }
        }
        true
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

    async fn register(
        &mut self,
        r: protocol::Register,
        reference: Option<Value>,
        ctl: &mpsc::Sender<Control>,
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
            let _ = old.tx.try_send(Control::TakenOver(id.clone()));
        }
        let reg = Registration {
            id: Some(id.clone()),
            name: r.name,
            kind: r.kind,
            metadata: r.metadata,
            capabilities: r.capabilities,
            heartbeat_interval: r.heartbeat_interval_ms.map(Duration::from_millis),
        };
        match self.shared.rt.register(reg).await {
            Ok(handle) => {
                let reply = json!({
                    "type": "registered",
                    "id": id.as_str(),
                    "status": "online",
                    "heartbeat_interval_ms": handle.heartbeat_interval().as_millis() as u64,
                    "incarnation": handle.incarnation(),
                });
                self.owned.insert(id, handle);
                self.send(line(reply, reference.as_ref())).await;
            }
            Err(e) => {
                if !self.owned.contains_key(&id) {
                    self.disown(&id);
                }
                let code = match e {
                    RegisterError::MissingField(_) => ErrorCode::MissingField,
                    RegisterError::InvalidField(_) => ErrorCode::InvalidField,
                    RegisterError::Unavailable(_) => ErrorCode::Internal,
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
        }
    }

    /// Drops this connection's claim on `id` (if it still holds it).
    fn disown(&mut self, id: &AgentId) {
        self.owned.remove(id);
        let mut owners = self.shared.owners.lock().unwrap_or_else(|e| e.into_inner());
        release(&mut owners, id, self.conn);
    }

    /// The connection is gone: its agents are disconnected (their deadlines run on).
    fn closed(&mut self) {
        let mut owners = self.shared.owners.lock().unwrap_or_else(|e| e.into_inner());
        for (id, handle) in self.owned.drain() {
            let _ = handle.disconnected();
            release(&mut owners, &id, self.conn);
        }
    }
}

/// Removes `conn`'s claim on `id`, never one another connection has taken since.
fn release(owners: &mut HashMap<AgentId, Owner>, id: &AgentId, conn: u64) {
    if owners.get(id).is_some_and(|o| o.conn == conn) {
        owners.remove(id);
    }
}
