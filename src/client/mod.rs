//! A Rust client for protocol v1 (`docs/protocol.md`), for agents written in Rust and for the
//! simulator.
//!
//! Two levels:
//! - [`Connection`]: one socket (TCP or TLS) after the `hello`/`welcome` handshake; send frames
//!   (or pre-built lines, for load generation) and receive typed [`ServerFrame`]s.
//! - [`AgentClient`]: supervised agents in a background task: it connects, registers them,
//!   heartbeats each on its own schedule with jitter, reconnects with exponential backoff and
//!   registers them again (with `takeover`, so a half-open old connection cannot hold them),
//!   and reports what happens as typed [`ClientEvent`]s.
//!
//! ```no_run
//! # async fn f() -> Result<(), vigil::client::ClientError> {
//! use vigil::client::{AgentClient, AgentSpec, ClientConfig, ClientEvent};
//! let mut client = AgentClient::start(
//!     ClientConfig::new("127.0.0.1:7400"),
//!     vec![AgentSpec::new("worker-1").kind("worker")],
//! )?;
//! while let Some(ev) = client.next_event().await {
//!     if let ClientEvent::Registered { id, .. } = ev {
//!         client.activity(&id, "working", None).await;
//!         break;
//!     }
//! }
//! client.stop().await;
//! # Ok(()) }
//! ```
//!
//! Heartbeat timing: the server counts a beat as missed when none arrived within the interval
//! (plus the policy's grace, 0 by default). A client that beat exactly every interval would be
//! late whenever the network or either scheduler hiccups, so each agent beats every
//! `interval × beat_ratio` (0.75 by default), each period drawn with ±`jitter` (10%) so that
//! agents started together spread out instead of beating in lockstep.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rand::Rng;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_rustls::rustls;
use tokio_util::codec::FramedRead;

use crate::protocol::framing::{Line, LineFrames};
use crate::protocol::{Role, PROTOCOL_VERSION};
use vigil_actors::{JobState, Reported};

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("timed out: {0}")]
    Timeout(&'static str),
    #[error("the server refused: {code}: {message}")]
    Refused { code: String, message: String },
    #[error("unexpected from the server: {0}")]
    Protocol(String),
    #[error("the connection closed")]
    Closed,
}

/// TLS for a client: which roots to trust and the name to check the certificate against.
#[derive(Clone)]
pub struct ClientTls {
    pub config: Arc<rustls::ClientConfig>,
    pub server_name: String,
}

impl ClientTls {
    /// Trusts the certificates in `pem` (e.g. a private CA or a self-signed server certificate).
    pub fn with_root_pem(pem: &[u8], server_name: impl Into<String>) -> Result<Self, ClientError> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::CertificateDer;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| ClientError::Tls(e.to_string()))?;
            roots
                .add(cert)
                .map_err(|e| ClientError::Tls(e.to_string()))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            config: Arc::new(config),
            server_name: server_name.into(),
        })
    }
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `host:port`.
    pub addr: String,
    pub token: Option<String>,
    /// Sent in `hello` as `client`.
    pub client_name: String,
    pub tls: Option<ClientTls>,
    pub connect_timeout: Duration,
    /// Reconnection backoff: the first wait, and the most it grows to (doubling, full jitter).
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Beat every `interval × beat_ratio` ...
    pub beat_ratio: f64,
    /// ... ± this share of it, drawn for each period.
    pub jitter: f64,
}

impl ClientConfig {
    pub fn new(addr: impl Into<String>) -> Self {
        Self {
            addr: addr.into(),
            token: None,
            client_name: concat!("vigil-client/", env!("CARGO_PKG_VERSION")).into(),
            tls: None,
            connect_timeout: Duration::from_secs(5),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
            beat_ratio: 0.75,
            jitter: 0.1,
        }
    }

    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    pub fn tls(mut self, tls: ClientTls) -> Self {
        self.tls = Some(tls);
        self
    }
}

/// The server's `welcome`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Welcome {
    pub protocol: u64,
    pub session: String,
    pub server: String,
    pub heartbeat_interval_ms: u64,
    pub time: String,
}

/// A frame from the server.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    Welcome(Welcome),
    Registered {
        id: String,
        status: String,
        heartbeat_interval_ms: u64,
        incarnation: u64,
        #[serde(rename = "ref", default)]
        reference: Option<Value>,
    },
    Ack {
        #[serde(rename = "ref", default)]
        reference: Option<Value>,
    },
    Pong {
        time: String,
        #[serde(rename = "ref", default)]
        reference: Option<Value>,
    },
    Deregistered {
        id: String,
        #[serde(rename = "ref", default)]
        reference: Option<Value>,
    },
    Evicted {
        id: String,
        reason: String,
    },
    Error {
        code: String,
        message: String,
        #[serde(rename = "ref", default)]
        reference: Option<Value>,
    },
    /// A frame of another role or a later version (`event`, `snapshot`, `command`, ...).
    #[serde(other)]
    Other,
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// Receiving half of a [`Connection`].
pub struct FrameReader {
    frames: FramedRead<ReadHalf<Box<dyn Io>>, LineFrames>,
}

/// Sending half of a [`Connection`].
pub struct FrameWriter {
    write: WriteHalf<Box<dyn Io>>,
}

/// One connection after the handshake.
pub struct Connection {
    pub welcome: Welcome,
    reader: FrameReader,
    writer: FrameWriter,
}

impl Connection {
    /// Connects, says `hello` with `role`, and waits for `welcome`.
    pub async fn connect(cfg: &ClientConfig, role: Role) -> Result<Self, ClientError> {
        let tcp = tokio::time::timeout(cfg.connect_timeout, TcpStream::connect(&cfg.addr))
            .await
            .map_err(|_| ClientError::Timeout("connect"))??;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = match &cfg.tls {
            None => Box::new(tcp),
            Some(tls) => {
                let name = rustls::pki_types::ServerName::try_from(tls.server_name.clone())
                    .map_err(|e| ClientError::Tls(e.to_string()))?;
                let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
                let s = tokio::time::timeout(cfg.connect_timeout, connector.connect(name, tcp))
                    .await
                    .map_err(|_| ClientError::Timeout("TLS handshake"))??;
                Box::new(s)
            }
        };
        let (read, write) = tokio::io::split(io);
        let mut reader = FrameReader {
            frames: FramedRead::new(read, LineFrames::new(16 << 20)),
        };
        let mut writer = FrameWriter { write };
        let mut hello = json!({
            "type": "hello",
            "protocol": PROTOCOL_VERSION,
            "role": role,
            "client": cfg.client_name,
        });
        if let Some(t) = &cfg.token {
            hello["token"] = json!(t);
        }
        writer.send(&hello).await?;
        let first = tokio::time::timeout(cfg.connect_timeout, reader.recv())
            .await
            .map_err(|_| ClientError::Timeout("welcome"))??;
        match first {
            Some(ServerFrame::Welcome(welcome)) => Ok(Self {
                welcome,
                reader,
                writer,
            }),
            Some(ServerFrame::Error { code, message, .. }) => {
                Err(ClientError::Refused { code, message })
            }
            Some(other) => Err(ClientError::Protocol(format!(
                "expected welcome, got {other:?}"
            ))),
            None => Err(ClientError::Closed),
        }
    }

    pub async fn send(&mut self, frame: &Value) -> Result<(), ClientError> {
        self.writer.send(frame).await
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.writer.send_raw(bytes).await
    }

    pub async fn recv(&mut self) -> Result<Option<ServerFrame>, ClientError> {
        self.reader.recv().await
    }

    /// The next frame as JSON, whatever its type (see [`FrameReader::recv_value`]).
    pub async fn recv_value(&mut self) -> Result<Option<Value>, ClientError> {
        self.reader.recv_value().await
    }

    /// The two halves, to read and write from different tasks.
    pub fn split(self) -> (FrameReader, FrameWriter) {
        (self.reader, self.writer)
    }
}

impl FrameWriter {
    /// Sends one frame (one line).
    pub async fn send(&mut self, frame: &Value) -> Result<(), ClientError> {
        let mut line =
            serde_json::to_vec(frame).map_err(|e| ClientError::Protocol(e.to_string()))?;
        line.push(b'\n');
        self.send_raw(&line).await
    }

    /// Sends bytes as they are (lines built by the caller, e.g. a batch of heartbeats).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.write.write_all(bytes).await?;
        Ok(())
    }

    /// Closes the sending side.
    pub async fn close(&mut self) {
        let _ = self.write.shutdown().await;
    }
}

impl FrameReader {
    /// The next frame; `None` when the server closed the connection.
    pub async fn recv(&mut self) -> Result<Option<ServerFrame>, ClientError> {
        self.recv_as().await
    }

    /// The next frame as JSON, whatever its type: monitors and operators read frames
    /// (`event`, `snapshot`, `result`, ...) that [`ServerFrame`] leaves as `Other`. `None`
    /// when the server closed the connection.
    pub async fn recv_value(&mut self) -> Result<Option<Value>, ClientError> {
        self.recv_as().await
    }

    async fn recv_as<T: serde::de::DeserializeOwned>(&mut self) -> Result<Option<T>, ClientError> {
        loop {
            match self.frames.next().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(Line::TooLarge)) => {
                    return Err(ClientError::Protocol("a frame over 16 MiB".into()))
                }
                Some(Ok(Line::Frame(bytes))) => {
                    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
                        continue;
                    }
                    return serde_json::from_slice(&bytes)
                        .map(Some)
                        .map_err(|e| ClientError::Protocol(format!("{e}")));
                }
            }
        }
    }
}

/// One agent an [`AgentClient`] supervises.
#[derive(Debug, Clone, Default)]
pub struct AgentSpec {
    pub id: String,
    pub name: Option<String>,
    pub kind: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub capabilities: Vec<String>,
    /// Its own heartbeat interval (within the server's bounds); the server's otherwise.
    pub heartbeat_interval: Option<Duration>,
}

impl AgentSpec {
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            ..Self::default()
        }
    }

    pub fn kind(mut self, kind: impl Into<String>) -> Self {
        self.kind = Some(kind.into());
        self
    }

    pub fn heartbeat_interval(mut self, every: Duration) -> Self {
        self.heartbeat_interval = Some(every);
        self
    }

    fn register_frame(&self) -> Value {
        let mut f = json!({
            "type": "register",
            "id": self.id,
            "takeover": true,
            "metadata": self.metadata,
            "capabilities": self.capabilities,
        });
        if let Some(n) = &self.name {
            f["name"] = json!(n);
        }
        if let Some(k) = &self.kind {
            f["kind"] = json!(k);
        }
        if let Some(i) = self.heartbeat_interval {
            f["heartbeat_interval_ms"] = json!(i.as_millis() as u64);
        }
        f
    }
}

/// What an [`AgentClient`] reports.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// Connected and said hello.
    Connected { session: String },
    /// An agent is registered on the current connection.
    Registered {
        id: String,
        incarnation: u64,
        heartbeat_interval: Duration,
    },
    /// The server took an agent away (`evicted` by an operator, or `taken_over` by another
    /// connection); the client stops beating for it.
    Evicted { id: String, reason: String },
    /// An agent left at the client's request.
    Deregistered { id: String },
    /// The server answered a frame with an error.
    Error { code: String, message: String },
    /// The connection was lost (or could not be made); the client retries after `retry_in`.
    Disconnected { error: String, retry_in: Duration },
}

enum Cmd {
    Report(String, Reported),
    Activity(String, String, Option<String>),
    Job(Value),
    Deregister(String),
    Stop,
}

/// Agents kept registered and beating by a background task (see the module's docs).
pub struct AgentClient {
    cmd: mpsc::Sender<Cmd>,
    events: mpsc::Receiver<ClientEvent>,
    task: JoinHandle<()>,
}

impl AgentClient {
    /// Starts the background task (it connects at once).
    pub fn start(cfg: ClientConfig, agents: Vec<AgentSpec>) -> Result<Self, ClientError> {
        let (cmd_tx, cmd_rx) = mpsc::channel(1024);
        let (ev_tx, ev_rx) = mpsc::channel(1024);
        let task = tokio::spawn(run_client(cfg, agents, cmd_rx, ev_tx));
        Ok(Self {
            cmd: cmd_tx,
            events: ev_rx,
            task,
        })
    }

    /// The next event; `None` once the client has stopped.
    pub async fn next_event(&mut self) -> Option<ClientEvent> {
        self.events.recv().await
    }

    /// The health the agent reports with its next heartbeats (sent at once).
    pub async fn report(&self, id: &str, reported: Reported) {
        let _ = self.cmd.send(Cmd::Report(id.into(), reported)).await;
    }

    pub async fn activity(&self, id: &str, activity: &str, detail: Option<String>) {
        let _ = self
            .cmd
            .send(Cmd::Activity(id.into(), activity.into(), detail))
            .await;
    }

    pub async fn job(&self, id: &str, job: &str, state: JobState, progress: Option<f64>) {
        let mut f = json!({"type": "job", "id": id, "job": job, "state": state});
        if let Some(p) = progress {
            f["progress"] = json!(p);
        }
        let _ = self.cmd.send(Cmd::Job(f)).await;
    }

    /// Deregisters one agent; the others go on.
    pub async fn deregister(&self, id: &str) {
        let _ = self.cmd.send(Cmd::Deregister(id.into())).await;
    }

    /// Deregisters every agent and closes the connection.
    pub async fn stop(self) {
        let _ = self.cmd.send(Cmd::Stop).await;
        let _ = self.task.await;
    }

    /// Drops the connection without deregistering (as a crashed agent would).
    pub fn kill(self) {
        self.task.abort();
    }
}

struct Beating {
    spec: AgentSpec,
    reported: Reported,
    /// Registered on the current connection, and when it beats next.
    next: Option<Instant>,
    interval: Duration,
}

fn period(cfg: &ClientConfig, interval: Duration) -> Duration {
    let base = interval.as_secs_f64() * cfg.beat_ratio.clamp(0.05, 1.0);
    let j = cfg.jitter.clamp(0.0, 0.5);
    let f = rand::rng().random_range((1.0 - j)..=(1.0 + j));
    Duration::from_secs_f64(base * f)
}

async fn run_client(
    cfg: ClientConfig,
    specs: Vec<AgentSpec>,
    mut cmd: mpsc::Receiver<Cmd>,
    events: mpsc::Sender<ClientEvent>,
) {
    let mut agents: HashMap<String, Beating> = specs
        .into_iter()
        .map(|s| {
            (
                s.id.clone(),
                Beating {
                    spec: s,
                    reported: Reported::Healthy,
                    next: None,
                    interval: Duration::from_secs(30),
                },
            )
        })
        .collect();
    let mut backoff = cfg.backoff_min;
    loop {
        let outcome = session(&cfg, &mut agents, &mut cmd, &events, &mut backoff).await;
        let error = match outcome {
            Ok(()) => return, // stopped
            Err(e) => e.to_string(),
        };
        for a in agents.values_mut() {
            a.next = None;
        }
        // Full jitter: a fleet that lost the server together does not return together.
        let wait = Duration::from_secs_f64(
            rand::rng().random_range(0.0..=backoff.as_secs_f64().max(0.001)),
        );
        backoff = (backoff * 2).min(cfg.backoff_max);
        let _ = events
            .send(ClientEvent::Disconnected {
                error,
                retry_in: wait,
            })
            .await;
        let deadline = Instant::now() + wait;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                c = cmd.recv() => match c {
                    None | Some(Cmd::Stop) => return,
                    Some(Cmd::Report(id, r)) => {
                        if let Some(a) = agents.get_mut(&id) { a.reported = r; }
                    }
                    Some(Cmd::Deregister(id)) => { agents.remove(&id); }
                    Some(_) => {} // activity and jobs while disconnected are dropped
                },
            }
        }
    }
}

/// One connection's life; `Ok` when stopped on request.
async fn session(
    cfg: &ClientConfig,
    agents: &mut HashMap<String, Beating>,
    cmd: &mut mpsc::Receiver<Cmd>,
    events: &mpsc::Sender<ClientEvent>,
    backoff: &mut Duration,
) -> Result<(), ClientError> {
    let conn = Connection::connect(cfg, Role::Agent).await?;
    let _ = events
        .send(ClientEvent::Connected {
            session: conn.welcome.session.clone(),
        })
        .await;
    let (mut reader, mut writer) = conn.split();
    for a in agents.values() {
        writer.send(&a.spec.register_frame()).await?;
    }
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stopping = false;
    loop {
        tokio::select! {
            frame = reader.recv() => {
                let Some(frame) = frame? else {
                    return if stopping { Ok(()) } else { Err(ClientError::Closed) };
                };
                match frame {
                    ServerFrame::Registered { id, heartbeat_interval_ms, incarnation, .. } => {
                        let interval = Duration::from_millis(heartbeat_interval_ms.max(1));
                        if let Some(a) = agents.get_mut(&id) {
                            a.interval = interval;
                            // The first beat soon: the server's deadline runs from the
                            // registration, before this reply arrived.
                            a.next = Some(Instant::now() + period(cfg, interval) / 4);
                        }
                        *backoff = cfg.backoff_min;
                        let _ = events.send(ClientEvent::Registered { id, incarnation, heartbeat_interval: interval }).await;
                    }
                    ServerFrame::Evicted { id, reason } => {
                        agents.remove(&id);
                        let _ = events.send(ClientEvent::Evicted { id, reason }).await;
                    }
                    ServerFrame::Deregistered { id, .. } => {
                        let _ = events.send(ClientEvent::Deregistered { id }).await;
                        if stopping && agents.is_empty() {
                            writer.close().await;
                        }
                    }
                    ServerFrame::Error { code, message, .. } => {
                        let _ = events.send(ClientEvent::Error { code, message }).await;
                    }
                    _ => {}
                }
            }
            c = cmd.recv(), if !stopping => match c {
                None | Some(Cmd::Stop) => {
                    stopping = true;
                    let ids: Vec<String> = agents.keys().cloned().collect();
                    for id in &ids {
                        writer.send(&json!({"type": "deregister", "id": id})).await?;
                    }
                    agents.clear();
                    if ids.is_empty() {
                        writer.close().await;
                    }
                }
                Some(Cmd::Report(id, r)) => {
                    if let Some(a) = agents.get_mut(&id) {
                        a.reported = r;
                        if a.next.is_some() {
                            a.next = Some(Instant::now()); // tell the server now
                        }
                    }
                }
                Some(Cmd::Activity(id, activity, detail)) => {
                    let mut f = json!({"type": "activity", "id": id, "activity": activity});
                    if let Some(d) = detail { f["detail"] = json!(d); }
                    writer.send(&f).await?;
                }
                Some(Cmd::Job(f)) => writer.send(&f).await?,
                Some(Cmd::Deregister(id)) => {
                    if agents.remove(&id).is_some() {
                        writer.send(&json!({"type": "deregister", "id": id})).await?;
                    }
                }
            },
            _ = tick.tick(), if !stopping => {
                let now = Instant::now();
                let mut batch = Vec::new();
                for (id, a) in agents.iter_mut() {
                    if a.next.is_some_and(|n| n <= now) {
                        let mut f = json!({"type": "heartbeat", "id": id});
                        if a.reported != Reported::Healthy {
                            f["status"] = json!(a.reported);
                        }
                        batch.extend_from_slice(f.to_string().as_bytes());
                        batch.push(b'\n');
                        a.next = Some(now + period(cfg, a.interval));
                    }
                }
                if !batch.is_empty() {
                    writer.send_raw(&batch).await?;
                }
            }
        }
    }
}
