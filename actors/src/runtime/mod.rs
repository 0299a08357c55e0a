//! `Runtime`: the embedding API. A value that owns one actor tree (fleet supervisor, agent
//! actors, registry, broadcaster), its deadline wheel, lag probe and health check, and its
//! store. Nothing is
//! process-global: two runtimes can live in one process.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef};
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::admin::{AdminError, AdminRequest, AdminResponse, Stats};
use crate::agent::cell::AgentCell;
use crate::agent::wheel::Wheel;
use crate::agent::{AgentMsg, Ctx};
use crate::broadcaster::{
    BroadcastMsg, BroadcasterActor, BroadcasterArgs, SubscribeOptions, Subscription,
};
use crate::clock::Clock;
use crate::fleet::health_task;
use crate::fleet::{Directory, FleetArgs, FleetMsg, FleetSupervisor, Policies, Registered};
use crate::model::{
    AgentId, EventBody, JobReport, Metrics, Policy, Registration, Reported, Severity,
};
use crate::registry::durable::{Backpressure, Waiter};
use crate::registry::intake::{ReportQuota, Ticket};
use crate::registry::{Change, Query, RegistryActor, RegistryArgs, RegistryMsg};
use crate::rules::health::{HealthConfig, HealthReport, MassOffline};
use crate::rules::lag::{LagConfig, LagMonitor};
use crate::sink::{Control, DeadLetter, LogSource, Sink, SinkConfig, SinkHandle, SinkStatus};
use crate::store::{Retention, Store, StoreError};

/// Settings of the supervision core.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// The default policy.
    pub policy: Policy,
    /// Policies per agent kind.
    pub kinds: HashMap<String, Policy>,
    /// Bounds for an agent's own heartbeat interval.
    pub min_heartbeat_interval: Duration,
    pub max_heartbeat_interval: Duration,
    /// Each subscriber's queue; a subscriber whose queue is full gets `lagged`.
    pub subscriber_queue: usize,
    /// Recent events the broadcaster keeps in memory for `since` resumes.
    pub event_window: usize,
    /// Most events in one group commit.
    pub max_batch: usize,
    /// How often the live view is checkpointed (zero: only at shutdown).
    pub checkpoint_interval: Duration,
    /// How long the registry lets a group of events gather before writing it (zero: write
    /// as soon as no other write is running; groups then form while a write runs).
    pub flush_interval: Duration,
    /// How much of the event log to keep (applied after each checkpoint).
    pub event_retention: Retention,
    pub lag: LagConfig,
    /// The fleet health check and the mass-failure guard.
    pub health: HealthConfig,
    /// How long internal request/reply calls may take.
    pub call_timeout: Duration,
    /// How many bytes of events may wait for the store (while it is slow or failing) before
    /// new registrations are refused with `overloaded`. Admin writes and new subscriptions
    /// are refused as soon as the store fails. Supervision of the agents already registered
    /// goes on whatever the backlog.
    pub max_pending_bytes: u64,
    /// Agents that left (deregistered or evicted) are dropped from the view, the checkpoint
    /// and the mirror this long after they left (`None`: kept for ever). Their events stay in
    /// the log as long as the retention keeps them.
    pub left_ttl: Option<Duration>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            policy: Policy::default(),
            kinds: HashMap::new(),
            min_heartbeat_interval: Duration::from_millis(100),
            max_heartbeat_interval: Duration::from_secs(3600),
            subscriber_queue: 4096,
            event_window: 65_536,
            max_batch: 10_000,
            checkpoint_interval: Duration::from_secs(60),
            flush_interval: Duration::ZERO,
            // A week of history: resumes and audits reach back that far, and the log (and the
            // index of it read at every start) stops growing.
            event_retention: Retention {
                max_age: Some(Duration::from_secs(7 * 24 * 3600)),
                max_events: None,
            },
            lag: LagConfig::default(),
            health: HealthConfig::default(),
            call_timeout: Duration::from_secs(10),
            max_pending_bytes: 256 << 20,
            left_ttl: Some(Duration::from_secs(7 * 24 * 3600)),
        }
    }
}

/// Errors of the runtime as a whole.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("actor could not start: {0}")]
    Spawn(String),
    #[error("runtime is not answering: {0}")]
    Unavailable(String),
    #[error("overloaded: {0}")]
    Overloaded(String),
}

/// Why a registration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    #[error("missing field {0}")]
    MissingField(String),
    #[error("{0}")]
    InvalidField(String),
    #[error("runtime unavailable: {0}")]
    Unavailable(String),
    /// Too many events wait for the store; try again later.
    #[error("overloaded: {0}")]
    Overloaded(String),
}

/// Why a heartbeat was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BeatError {
    #[error("unknown agent {0}")]
    UnknownAgent(AgentId),
    #[error("agent {0} is not supervised right now (its actor is restarting or it left)")]
    NotSupervised(AgentId),
    /// The handle is of an earlier registration: the agent registered again (taken over).
    #[error("agent {0} was registered again since (this registration is superseded)")]
    Superseded(AgentId),
}

/// A heartbeat's content.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Beat {
    pub reported: Reported,
    pub metrics: Option<Metrics>,
}

impl Beat {
    pub fn healthy() -> Self {
        Self::default()
    }

    pub fn reporting(reported: Reported) -> Self {
        Self {
            reported,
            metrics: None,
        }
    }
}

/// A handle to one supervised agent: heartbeats through it skip every lookup.
#[derive(Debug, Clone)]
pub struct AgentHandle {
    cell: Arc<AgentCell>,
    incarnation: u64,
    interval: Duration,
    /// The seq of the `registered` event of this registration (0 when not known).
    seq: u64,
}

impl AgentHandle {
    /// The seq of this registration's `registered` event (0 for a handle looked up by id):
    /// an event about the agent with a lower seq happened before this registration.
    pub fn registered_seq(&self) -> u64 {
        self.seq
    }

    pub fn id(&self) -> &AgentId {
        self.cell.id()
    }

    /// The incarnation this registration got.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The heartbeat interval in force for this agent.
    pub fn heartbeat_interval(&self) -> Duration {
        self.interval
    }

    /// Takes a heartbeat now. A healthy beat of an online agent is an atomic store and no
    /// message (the fast path); any other beat is a message to the agent's actor.
    pub fn heartbeat(&self, beat: Beat) -> Result<(), BeatError> {
        self.check_current()?;
        beat_cell(&self.cell, beat)
    }

    /// Whether this handle is of the agent's latest registration (not taken over since).
    pub fn is_current(&self) -> bool {
        self.cell.incarnation() <= self.incarnation
    }

    fn check_current(&self) -> Result<(), BeatError> {
        match self.is_current() {
            true => Ok(()),
            false => Err(BeatError::Superseded(self.cell.id().clone())),
        }
    }

    /// The connection that owned this agent closed without deregistering. A handle of an
    /// earlier registration changes nothing.
    pub fn disconnected(&self) -> Result<(), BeatError> {
        self.check_current()?;
        match self.cell.actor() {
            Some(a) if a.cast(AgentMsg::Disconnected).is_ok() => Ok(()),
            _ => Err(BeatError::NotSupervised(self.cell.id().clone())),
        }
    }

    /// Whether the owning connection is still there, as last recorded.
    pub fn connected(&self) -> bool {
        self.cell.connected()
    }

    /// Fault injection for tests: makes the agent's actor panic. The fleet supervisor
    /// restarts it.
    #[doc(hidden)]
    pub fn inject_crash(&self) -> bool {
        self.cell
            .actor()
            .is_some_and(|a| a.cast(AgentMsg::Crash).is_ok())
    }
}

fn beat_cell(cell: &AgentCell, beat: Beat) -> Result<(), BeatError> {
    let now = Instant::now();
    let mut stamped = false;
    if beat.reported == Reported::Healthy {
        if let Some(m) = &beat.metrics {
            cell.set_metrics(m.clone());
        }
        if cell.try_fast_beat(now) {
            return Ok(());
        }
        stamped = true;
    }
    let actor = cell
        .actor()
        .ok_or_else(|| BeatError::NotSupervised(cell.id().clone()))?;
    actor
        .cast(AgentMsg::Beat {
            reported: beat.reported,
            metrics: if stamped { None } else { beat.metrics },
            at: now,
            stamped,
        })
        .map_err(|_| BeatError::NotSupervised(cell.id().clone()))
}

/// The supervision runtime.
pub struct Runtime {
    fleet: ActorRef<FleetMsg>,
    registry: ActorRef<RegistryMsg>,
    broadcaster: ActorRef<BroadcastMsg>,
    directory: Directory,
    clock: Clock,
    lag: Arc<LagMonitor>,
    backpressure: Arc<Backpressure>,
    call_timeout: Duration,
    tasks: Vec<JoinHandle<()>>,
    actor_tasks: Vec<JoinHandle<()>>,
    store: Arc<dyn Store>,
    sinks: tokio::sync::Mutex<Vec<SinkHandle>>,
    /// Subscriptions and the published seq, for this runtime and its sinks' tasks.
    source: Arc<RegistrySource>,
}

impl Runtime {
    /// Starts a runtime on `store`: loads what it holds (checkpoint + log), starts the actor
    /// tree, and supervises every restored agent with its restart grace.
    pub async fn start(config: RuntimeConfig, store: Arc<dyn Store>) -> Result<Self, RuntimeError> {
        config.policy.validate().map_err(RuntimeError::Config)?;
        for (kind, p) in &config.kinds {
            p.validate()
                .map_err(|e| RuntimeError::Config(format!("policy of kind {kind}: {e}")))?;
        }
        config
            .health
            .validate()
            .map_err(|e| RuntimeError::Config(format!("health: {e}")))?;
        let health = Arc::new(config.health.clone());
        let clock = Clock::start();
        let lag = Arc::new(LagMonitor::new(config.lag.clone(), clock.now()));
        let t_load = std::time::Instant::now();
        let loaded = store.load().await?;
        let last_seq = loaded.last_seq;
        let (n_loaded, n_replayed) = (loaded.agents.len(), loaded.events_after.len());
        let load_ms = t_load.elapsed().as_millis() as u64;
        let spawn_err = |e: ractor::SpawnErr| RuntimeError::Spawn(e.to_string());

        let (broadcaster, b_task) = Actor::spawn(
            None,
            BroadcasterActor,
            BroadcasterArgs {
                store: store.clone(),
                queue: config.subscriber_queue,
                window: config.event_window,
                published_seq: last_seq,
            },
        )
        .await
        .map_err(spawn_err)?;
        let backpressure = Arc::new(Backpressure::new(
            Arc::new(AtomicBool::new(true)),
            config.max_pending_bytes,
        ));
        let (registry, r_task) = Actor::spawn(
            None,
            RegistryActor,
            RegistryArgs {
                store: store.clone(),
                broadcaster: broadcaster.clone(),
                clock,
                max_batch: config.max_batch,
                checkpoint_interval: config.checkpoint_interval,
                flush_interval: config.flush_interval,
                retention: config.event_retention.clone(),
                left_ttl: config.left_ttl,
                loaded,
                backpressure: backpressure.clone(),
                mass_offline: MassOffline::new(&health),
            },
        )
        .await
        .map_err(spawn_err)?;
        let wheel = Wheel::start(lag.clone());
        let ctx = Ctx {
            registry: registry.clone(),
            wheel,
            clock,
            lag: lag.clone(),
            call_timeout: config.call_timeout,
            backpressure: backpressure.clone(),
        };
        let directory: Directory = Arc::new(RwLock::new(HashMap::new()));
        let (fleet, f_task) = Actor::spawn(
            None,
            FleetSupervisor,
            FleetArgs {
                ctx,
                broadcaster: broadcaster.clone(),
                directory: directory.clone(),
                health: health.clone(),
                policies: Policies {
                    default: Arc::new(config.policy.clone()),
                    kinds: config
                        .kinds
                        .iter()
                        .map(|(k, p)| (k.clone(), Arc::new(p.clone())))
                        .collect(),
                    min_interval: config.min_heartbeat_interval,
                    max_interval: config.max_heartbeat_interval,
                },
            },
        )
        .await
        .map_err(spawn_err)?;

        let mut tasks = Vec::new();
        if config.lag.enabled {
            tasks.push(tokio::spawn(probe_lag(
                lag.clone(),
                registry.clone(),
                clock,
            )));
        }
        tasks.push(tokio::spawn(health_task::run(
            registry.clone(),
            clock,
            health,
            config.call_timeout,
        )));
        let source = Arc::new(RegistrySource {
            registry: registry.clone(),
            call_timeout: config.call_timeout,
        });
        let rt = Self {
            fleet,
            registry,
            broadcaster,
            directory,
            clock,
            lag,
            backpressure,
            call_timeout: config.call_timeout,
            tasks,
            actor_tasks: vec![f_task, r_task, b_task],
            store: store.clone(),
            sinks: tokio::sync::Mutex::new(Vec::new()),
            source,
        };
        let t_restore = std::time::Instant::now();
        let restored = match rt
            .fleet
            .call(FleetMsg::Restore, Some(Duration::from_secs(3600)))
            .await
        {
            Ok(CallResult::Success(n)) => n,
            _ => return Err(RuntimeError::Unavailable("restore did not finish".into())),
        };
        if restored > 0 {
            info!(
                agents = restored,
                seq = last_seq,
                checkpointed = n_loaded,
                replayed_events = n_replayed,
                load_ms,
                supervise_ms = t_restore.elapsed().as_millis() as u64,
                "fleet restored from the store"
            );
        }
        Ok(rt)
    }

    /// Registers an agent (or registers it again: it goes online, incarnation + 1), and
    /// answers once its `registered` event is durable.
    pub async fn register(&self, reg: Registration) -> Result<AgentHandle, RegisterError> {
        let (handle, seq) = self.register_sequenced(reg).await?;
        self.wait_durable(seq).await.map_err(|e| match e {
            RuntimeError::Overloaded(m) => RegisterError::Overloaded(m),
            e => RegisterError::Unavailable(e.to_string()),
        })?;
        Ok(handle)
    }

    /// Registers an agent and answers as soon as it is supervised, with the seq of its
    /// `registered` event, before that is durable: a listener keeps serving the connection
    /// meanwhile and tells the agent `registered` after [`Runtime::wait_durable`].
    pub async fn register_sequenced(
        &self,
        reg: Registration,
    ) -> Result<(AgentHandle, u64), RegisterError> {
        let r: Registered = match self
            .fleet
            .call(
                |reply| FleetMsg::Register(reg, reply),
                Some(self.call_timeout),
            )
            .await
        {
            Ok(CallResult::Success(r)) => r?,
            _ => return Err(RegisterError::Unavailable("fleet supervisor".into())),
        };
        let handle = AgentHandle {
            cell: r.cell,
            incarnation: r.incarnation,
            interval: r.heartbeat_interval,
            seq: r.seq,
        };
        Ok((handle, r.seq))
    }

    /// Returns once every event up to `seq` is durable (or fails after the call timeout).
    pub async fn wait_durable(&self, seq: u64) -> Result<(), RuntimeError> {
        let r = self
            .registry
            .call(
                |reply| RegistryMsg::WhenDurable {
                    upto: Some(seq),
                    waiter: Waiter::Durable(reply),
                },
                Some(self.call_timeout),
            )
            .await;
        match r {
            Ok(CallResult::Success(())) => Ok(()),
            _ => Err(match self.backpressure.refuse_write() {
                Some(why) => RuntimeError::Overloaded(why),
                None => RuntimeError::Unavailable(format!("seq {seq} not durable in time")),
            }),
        }
    }

    /// A handle to a supervised agent, by id.
    pub fn agent(&self, id: &AgentId) -> Option<AgentHandle> {
        let cell = self
            .directory
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()?;
        Some(AgentHandle {
            incarnation: cell.incarnation(),
            cell,
            interval: Duration::ZERO,
            seq: 0,
        })
    }

    /// A heartbeat by id (a handle from [`Runtime::register`] skips the lookup).
    pub fn heartbeat(&self, id: &AgentId, beat: Beat) -> Result<(), BeatError> {
        let cell = self
            .directory
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| BeatError::UnknownAgent(id.clone()))?;
        beat_cell(&cell, beat)
    }

    /// The agent reports its activity (`idle`, `working`, ...). An `activity` event is
    /// recorded only when it differs from the last one; an unknown or departed agent's report
    /// is dropped.
    pub fn report_activity(
        &self,
        id: &AgentId,
        activity: impl Into<String>,
        detail: Option<String>,
    ) -> Result<(), BeatError> {
        let activity = activity.into();
        if !self.activity_changed(id, &activity) {
            return Ok(());
        }
        self.send_activity(id, activity, detail, None)
    }

    /// [`Runtime::report_activity`] for a source with many reports to send (a connection):
    /// waits, if `quota`'s reports all wait for the registry, until one is taken.
    pub async fn report_activity_within(
        &self,
        quota: &ReportQuota,
        id: &AgentId,
        activity: impl Into<String>,
        detail: Option<String>,
    ) -> Result<(), BeatError> {
        let activity = activity.into();
        if !self.activity_changed(id, &activity) {
            return Ok(());
        }
        let slot = quota.slot().await;
        self.send_activity(id, activity, detail, Some(slot))
    }

    /// Whether `activity` may differ from the agent's last (unchanged, as most heartbeats
    /// that carry it are: no message, no event).
    fn activity_changed(&self, id: &AgentId, activity: &str) -> bool {
        let cell = self
            .directory
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned();
        cell.is_none_or(|c| c.activity_changed(activity))
    }

    fn send_activity(
        &self,
        id: &AgentId,
        activity: String,
        detail: Option<String>,
        slot: Option<OwnedSemaphorePermit>,
    ) -> Result<(), BeatError> {
        let at = self.clock.utc(self.clock.now());
        self.registry
            .cast(RegistryMsg::Activity {
                id: id.clone(),
                activity,
                detail,
                at,
                ticket: Ticket::new(&self.backpressure.reports, slot),
            })
            .map_err(|_| BeatError::NotSupervised(id.clone()))
    }

    /// The agent reports on one of its jobs. A `job` event is recorded when the state (or the
    /// agent) changes, or the progress moves by [`crate::PROGRESS_STEP`] or more.
    pub fn report_job(&self, id: &AgentId, report: JobReport) -> Result<(), BeatError> {
        self.send_job(id, report, None)
    }

    /// [`Runtime::report_job`] for a source with many reports to send (see
    /// [`Runtime::report_activity_within`]).
    pub async fn report_job_within(
        &self,
        quota: &ReportQuota,
        id: &AgentId,
        report: JobReport,
    ) -> Result<(), BeatError> {
        let slot = quota.slot().await;
        self.send_job(id, report, Some(slot))
    }

    fn send_job(
        &self,
        id: &AgentId,
        report: JobReport,
        slot: Option<OwnedSemaphorePermit>,
    ) -> Result<(), BeatError> {
        let at = self.clock.utc(self.clock.now());
        self.registry
            .cast(RegistryMsg::Job {
                id: id.clone(),
                report,
                at,
                ticket: Ticket::new(&self.backpressure.reports, slot),
            })
            .map_err(|_| BeatError::NotSupervised(id.clone()))
    }

    /// The agent deregisters itself: it leaves (`deregistered`, status `left`).
    pub async fn deregister(&self, id: &AgentId) -> Result<AdminResponse, AdminError> {
        match self
            .fleet
            .call(
                |reply| FleetMsg::Deregister(id.clone(), reply),
                Some(self.call_timeout),
            )
            .await
        {
            Ok(CallResult::Success(r)) => r,
            _ => Err(AdminError::Unavailable("fleet supervisor".into())),
        }
    }

    /// Subscribes to events: optionally a snapshot first, or a replay `since` a seq.
    /// While the store fails (or too many events wait for it) a new subscription is refused
    /// with [`RuntimeError::Overloaded`]: it could show nothing new, and a snapshot would
    /// hold a copy of the fleet until the store recovers.
    pub async fn subscribe(&self, opts: SubscribeOptions) -> Result<Subscription, RuntimeError> {
        if let Some(why) = self.backpressure.refuse_write() {
            return Err(RuntimeError::Overloaded(why));
        }
        self.source
            .subscribe(opts)
            .await
            .ok_or_else(|| match self.backpressure.refuse_write() {
                Some(why) => RuntimeError::Overloaded(why),
                None => RuntimeError::Unavailable("subscription not answered".into()),
            })
    }

    /// Why the store's durability is weaker than "durable before visible" (a sync mode that
    /// does not flush every commit), if it is.
    pub fn durability_warning(&self) -> Option<String> {
        self.store.durability_warning()
    }

    /// Sends an admin message and waits for its answer.
    pub async fn admin(&self, req: AdminRequest) -> Result<AdminResponse, AdminError> {
        match self
            .fleet
            .call(|reply| FleetMsg::Admin(req, reply), Some(self.call_timeout))
            .await
        {
            Ok(CallResult::Success(r)) => r,
            _ => Err(AdminError::Unavailable("fleet supervisor".into())),
        }
    }

    /// Runtime-wide counters.
    pub async fn stats(&self) -> Result<Stats, AdminError> {
        match self.admin(AdminRequest::Stats).await? {
            AdminResponse::Stats(s) => Ok(*s),
            other => Err(AdminError::Unavailable(format!(
                "unexpected answer {other:?}"
            ))),
        }
    }

    /// False while the store is failing (writes are being retried).
    pub fn store_healthy(&self) -> bool {
        self.backpressure
            .store_ok
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The current scheduling-lag estimate.
    pub fn lag(&self) -> Duration {
        self.lag.estimate(Instant::now())
    }

    /// Fault injection for tests: records an observed scheduling lag, as the probe would.
    #[doc(hidden)]
    pub fn inject_lag(&self, lag: Duration) {
        self.lag.observe(lag, Instant::now());
    }

    /// The fleet's health as of now: a summary by status and every finding (the same check
    /// the health task runs every `check_interval`).
    pub async fn health_report(&self) -> Result<HealthReport, AdminError> {
        match self.admin(AdminRequest::HealthReport).await? {
            AdminResponse::Health(r) => Ok(*r),
            other => Err(AdminError::Unavailable(format!(
                "unexpected answer {other:?}"
            ))),
        }
    }

    /// Emits an alert event (sequenced and persisted like any other).
    pub fn alert(&self, severity: Severity, issue: &str, detail: String) {
        emit_alert(&self.registry, &self.clock, severity, issue, None, detail);
    }

    /// Stops gracefully: stops the agent actors, writes every pending event and a full
    /// checkpoint, ends every subscription, and stops the actors.
    /// Adds an outbound channel (see [`crate::sink`]): it resumes from its saved cursor, or
    /// starts as `cfg.start` says.
    pub async fn add_sink(&self, cfg: SinkConfig, sink: Arc<dyn Sink>) -> Result<(), RuntimeError> {
        cfg.validate().map_err(RuntimeError::Config)?;
        let mut sinks = self.sinks.lock().await;
        if sinks.iter().any(|s| s.name == cfg.name) {
            return Err(RuntimeError::Config(format!(
                "a sink named {} already exists",
                cfg.name
            )));
        }
        let source = self.source.clone();
        sinks.push(SinkHandle::spawn(cfg, sink, source, self.store.clone()));
        Ok(())
    }

    /// Every sink's status, with its lag behind the last durable (published) event.
    pub async fn sinks(&self) -> Vec<SinkStatus> {
        let last = self.source.last_seq().await;
        let sinks = self.sinks.lock().await;
        sinks
            .iter()
            .map(|s| {
                let mut st = s.status.lock().unwrap_or_else(|e| e.into_inner()).clone();
                if let Some(last) = last {
                    st.lag = last.saturating_sub(st.delivered_seq);
                }
                st
            })
            .collect()
    }

    /// The dead letters a sink holds.
    pub async fn dead_letters(&self, sink: &str) -> Result<Vec<DeadLetter>, AdminError> {
        let control = self.sink_control(sink).await?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        control
            .send(Control::DeadLetters(tx))
            .await
            .map_err(|_| AdminError::Unavailable(format!("sink {sink} has stopped")))?;
        control_reply(sink, rx).await
    }

    /// Delivers a sink's dead letters again (all, or the one with `id`); returns how many
    /// were delivered and how many are still held. The events keep their seqs (receivers that
    /// de-duplicate by seq may see them after later ones).
    pub async fn replay_dead_letters(
        &self,
        sink: &str,
        id: Option<u64>,
    ) -> Result<(usize, usize), AdminError> {
        let control = self.sink_control(sink).await?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        control
            .send(Control::Replay(id, tx))
            .await
            .map_err(|_| AdminError::Unavailable(format!("sink {sink} has stopped")))?;
        control_reply(sink, rx)
            .await?
            .map_err(AdminError::InvalidField)
    }

    async fn sink_control(
        &self,
        sink: &str,
    ) -> Result<tokio::sync::mpsc::Sender<Control>, AdminError> {
        self.sinks
            .lock()
            .await
            .iter()
            .find(|s| s.name == sink)
            .map(|s| s.control.clone())
            .ok_or_else(|| AdminError::InvalidField(format!("unknown sink {sink}")))
    }

    pub async fn shutdown(self) -> Result<(), RuntimeError> {
        let drained = self.stop_and_drain().await;
        for t in self.actor_tasks {
            let _ = t.await;
        }
        self.store.close().await;
        drained
    }

    /// [`Runtime::shutdown`] for a runtime that may still be shared (a listener's last task
    /// may hold it): every pending event is written and checkpointed all the same; only the
    /// wait for the actors' tasks is skipped when others still hold it.
    pub async fn shutdown_shared(self: Arc<Self>) -> Result<(), RuntimeError> {
        match Arc::try_unwrap(self) {
            Ok(rt) => rt.shutdown().await,
            Err(rt) => {
                let drained = rt.stop_and_drain().await;
                rt.store.close().await;
                drained
            }
        }
    }

    async fn stop_and_drain(&self) -> Result<(), RuntimeError> {
        // Sinks first: each saves its cursor, and resumes from it after a restart.
        for s in self.sinks.lock().await.iter_mut() {
            s.stop().await;
        }
        for t in &self.tasks {
            t.abort();
        }
        let _ = self
            .fleet
            .call(FleetMsg::StopAll, Some(self.call_timeout))
            .await;
        let drained = self
            .registry
            .call(RegistryMsg::Drain, Some(Duration::from_secs(600)))
            .await;
        self.fleet.stop(None);
        self.registry.stop(None);
        self.broadcaster.stop(None);
        match drained {
            Ok(CallResult::Success(Ok(()))) => Ok(()),
            Ok(CallResult::Success(Err(e))) => Err(e.into()),
            _ => Err(RuntimeError::Unavailable(
                "the registry did not finish writing".into(),
            )),
        }
    }
}

/// Sequences an alert; with `agent`, the event names that agent (and its kind).
pub(crate) fn emit_alert(
    registry: &ActorRef<RegistryMsg>,
    clock: &Clock,
    severity: Severity,
    issue: &str,
    agent: Option<AgentId>,
    detail: String,
) {
    let change = Change {
        agent,
        at: clock.utc(clock.now()),
        body: EventBody::Alert {
            severity,
            issue: issue.into(),
            detail,
        },
    };
    if registry.cast(RegistryMsg::Append(change)).is_err() {
        warn!(issue, "registry gone; alert not recorded");
    }
}

/// Measures the runtime's own scheduling lag and raises `runtime_lagging` once per episode.
async fn probe_lag(lag: Arc<LagMonitor>, registry: ActorRef<RegistryMsg>, clock: Clock) {
    let period = lag.config().probe_interval;
    let mut lagging = false;
    loop {
        let planned = Instant::now() + period;
        tokio::time::sleep_until(planned).await;
        let now = Instant::now();
        lag.observe(now.saturating_duration_since(planned), now);
        let now_lagging = lag.lagging(now);
        if now_lagging && !lagging {
            lagging = true;
            let (estimate, cap) = (lag.estimate(now), lag.config().max_slack);
            warn!(
                lag_ms = estimate.as_millis() as u64,
                max_slack_ms = cap.as_millis() as u64,
                "runtime is lagging; deadlines extended"
            );
            let detail = match estimate > cap {
                false => format!(
                    "the runtime's scheduling lag is {} ms; deadlines are extended by it",
                    estimate.as_millis()
                ),
                true => format!(
                    "the runtime's scheduling lag is {} ms; deadlines are extended by at most \
                     {} ms (lag_max_slack), so agents may be reported late or wrongly",
                    estimate.as_millis(),
                    cap.as_millis()
                ),
            };
            emit_alert(
                &registry,
                &clock,
                Severity::High,
                "runtime_lagging",
                None,
                detail,
            );
        } else if !now_lagging && lagging {
            lagging = false;
            info!("runtime lag back to normal");
        }
    }
}

/// A sink task's answer, within 30 s: a sink in the middle of a delivery answers after it, and
/// a replay delivers every dead letter first.
async fn control_reply<T>(
    sink: &str,
    rx: tokio::sync::oneshot::Receiver<T>,
) -> Result<T, AdminError> {
    match tokio::time::timeout(Duration::from_secs(30), rx).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(_)) => Err(AdminError::Unavailable(format!("sink {sink} has stopped"))),
        Err(_) => Err(AdminError::Unavailable(format!(
            "sink {sink} did not answer within 30 s (it is delivering); try again"
        ))),
    }
}

/// A sink's view of the runtime: subscriptions and the last seq, through the registry.
struct RegistrySource {
    registry: ActorRef<RegistryMsg>,
    call_timeout: Duration,
}

#[async_trait::async_trait]
impl LogSource for RegistrySource {
    async fn subscribe(&self, opts: SubscribeOptions) -> Option<Subscription> {
        match self
            .registry
            .call(
                |reply| RegistryMsg::Subscribe(opts, reply),
                Some(self.call_timeout),
            )
            .await
        {
            Ok(CallResult::Success(s)) => Some(s),
            _ => None,
        }
    }

    async fn last_seq(&self) -> Option<u64> {
        match self
            .registry
            .call(
                |reply| RegistryMsg::Query(Query::Stats, reply),
                Some(self.call_timeout),
            )
            .await
        {
            // The last seq durable and published: a sink starting "now" must not start past
            // events that a crash could still give to others.
            Ok(CallResult::Success(Ok(AdminResponse::Registry(r)))) => Some(r.durable_seq),
            _ => None,
        }
    }
}
