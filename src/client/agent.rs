//! [`AgentClient`]: agents kept registered and beating by a background task.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use rand::Rng;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{ClientConfig, ClientError, Connection, ErrorCode, EvictedReason, ServerFrame};
use crate::protocol::Role;
use vigil_actors::{Backoff, Jitter, JobState, Reported};

/// One agent an [`AgentClient`] supervises.
#[derive(Debug, Clone, Default)]
pub struct AgentSpec {
    /// The agent's id (1-128 characters of `A-Za-z0-9._:-`).
    pub id: String,
    /// A display name; `None` sends none.
    pub name: Option<String>,
    /// The agent's kind; `None`: the server's `"default"`.
    pub kind: Option<String>,
    /// Free-form string labels.
    pub metadata: BTreeMap<String, String>,
    /// What the agent says it can do.
    pub capabilities: Vec<String>,
    /// Its own heartbeat interval (within the server's bounds); the server's otherwise.
    pub heartbeat_interval: Option<Duration>,
}

impl AgentSpec {
    /// An agent with this id, and everything else left to the server's defaults.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            ..Self::default()
        }
    }

    /// Sets the agent's kind (which selects its policy on the server).
    pub fn kind(mut self, kind: impl Into<String>) -> Self {
        self.kind = Some(kind.into());
        self
    }

    /// Asks for its own heartbeat interval (within the server's bounds).
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
    Connected {
        /// The session's id, from `welcome`.
        session: String,
    },
    /// An agent is registered on the current connection.
    Registered {
        /// The agent's id.
        id: String,
        /// The registration's number: 1 the first time, one more at each registration since.
        incarnation: u64,
        /// The interval the server holds the agent to.
        heartbeat_interval: Duration,
    },
    /// The server took an agent away (`evicted` by an operator, or `taken_over` by another
    /// connection); the client stops beating for it.
    Evicted {
        /// The agent's id.
        id: String,
        /// Why: another connection took it over, or an operator evicted it.
        reason: EvictedReason,
    },
    /// An agent left at the client's request.
    Deregistered {
        /// The agent's id.
        id: String,
    },
    /// The server answered a frame with an error.
    Error {
        /// The error code (`invalid_field`, `not_owner`, ...).
        code: ErrorCode,
        /// What was wrong, for a person.
        message: String,
    },
    /// The connection was lost (or could not be made); the client retries after `retry_in`.
    Disconnected {
        /// What went wrong.
        error: String,
        /// How long the client waits before it connects again.
        retry_in: Duration,
    },
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

    /// Sends `activity` for the agent: what it is doing now (`idle`, `working`, ...), with an
    /// optional detail.
    pub async fn activity(&self, id: &str, activity: &str, detail: Option<String>) {
        let _ = self
            .cmd
            .send(Cmd::Activity(id.into(), activity.into(), detail))
            .await;
    }

    /// Sends `job` for the agent: job `job` is now in `state`, with its progress (0..1) if
    /// given.
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
    // Full jitter: a fleet that lost the server together does not return together.
    let mut backoff = Backoff::new(cfg.backoff_min, cfg.backoff_max, Jitter::Full);
    loop {
        let outcome = session(&cfg, &mut agents, &mut cmd, &events, &mut backoff).await;
        let error = match outcome {
            Ok(()) => return, // stopped
            Err(e) => e.to_string(),
        };
        for a in agents.values_mut() {
            a.next = None;
        }
        let wait = backoff.fail();
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
    backoff: &mut Backoff,
) -> Result<(), ClientError> {
    let conn = Connection::connect(cfg, Role::Agent).await?;
    let _ = events
        .send(ClientEvent::Connected {
            session: conn.welcome.session.clone().unwrap_or_default(),
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
                match frame.frame {
                    ServerFrame::Registered { id, heartbeat_interval_ms, incarnation, .. } => {
                        let interval = Duration::from_millis(heartbeat_interval_ms.max(1));
                        if let Some(a) = agents.get_mut(&id) {
                            a.interval = interval;
                            // The first beat soon: the server's deadline runs from the
                            // registration, before this reply arrived.
                            a.next = Some(Instant::now() + period(cfg, interval) / 4);
                        }
                        backoff.reset();
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
