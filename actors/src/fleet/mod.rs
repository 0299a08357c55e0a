//! FleetSupervisor: spawns, links, finds and restarts the agent actors.
//!
//! It keeps `AgentId → AgentCell` in a directory it alone writes (readers — heartbeats by id —
//! take a shared lock; there is no process-global registry); which agent a crashed actor
//! belonged to is found by a scan of it, as crashes are rare and memory per agent is not. Registration and departure pass through it, so
//! they are ordered per agent; status changes are forwarded to the agent's actor with the
//! caller's reply port. When an agent actor crashes, it is restarted from the registry's record
//! (the last sequenced status) with deadlines counting from the agent's last beat: no event is
//! lost (the registry has every change the actor sent) and none is doubled (the new actor
//! starts from that status and emits nothing for it).

pub(crate) mod health_task;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tracing::{error, info, warn};

use crate::admin::{AdminError, AdminRequest, AdminResponse, Stats};
use crate::agent::cell::AgentCell;
use crate::agent::{AgentActor, AgentArgs, AgentMsg, AgentOp, Ctx, Mode};
use crate::broadcaster::BroadcastMsg;
use crate::model::{AgentId, Policy, Reason, Registration};
use crate::registry::durable::Waiter;
use crate::registry::{Query, RegistryMsg};
use crate::rules::health::HealthConfig;
use crate::RegisterError;

/// `AgentId → AgentCell`, written only by the fleet supervisor.
pub(crate) type Directory = Arc<RwLock<HashMap<AgentId, Arc<AgentCell>>>>;

/// The policies in force: the default, and per kind.
#[derive(Debug, Clone)]
pub(crate) struct Policies {
    pub default: Arc<Policy>,
    pub kinds: HashMap<String, Arc<Policy>>,
    pub min_interval: Duration,
    pub max_interval: Duration,
}

impl Policies {
    fn for_kind(&self, kind: &str) -> &Arc<Policy> {
        self.kinds.get(kind).unwrap_or(&self.default)
    }

    /// The kind's policy with the agent's own interval, if it asked for one.
    pub fn for_agent(&self, kind: &str, own: Option<Duration>) -> Arc<Policy> {
        let p = self.for_kind(kind);
        match own {
            Some(i) if i != p.heartbeat_interval => Arc::new(Policy {
                heartbeat_interval: i,
                ..(**p).clone()
            }),
            _ => p.clone(), // shared by every agent of the kind
        }
    }
}

/// A successful registration.
#[derive(Debug, Clone)]
pub struct Registered {
    pub id: AgentId,
    pub incarnation: u64,
    /// The seq of its `registered` event.
    pub seq: u64,
    pub heartbeat_interval: Duration,
    pub(crate) cell: Arc<AgentCell>,
}

pub(crate) enum FleetMsg {
    Register(
        Registration,
        RpcReplyPort<Result<Registered, RegisterError>>,
    ),
    Admin(
        AdminRequest,
        RpcReplyPort<Result<AdminResponse, AdminError>>,
    ),
    /// The agent deregistered itself.
    Deregister(AgentId, RpcReplyPort<Result<AdminResponse, AdminError>>),
    /// Supervise every agent the registry restored from the store.
    Restore(RpcReplyPort<usize>),
    /// Stop every agent actor (graceful shutdown).
    StopAll(RpcReplyPort<()>),
}

/// Restored agents' cells go to the registry in batches of this many (one message each).
const ATTACH_BATCH: usize = 4096;

/// Spawns an agent's actor under the supervisor `sup`.
async fn spawn_agent(
    ctx: &Arc<Ctx>,
    sup: &ractor::ActorCell,
    cell: Arc<AgentCell>,
    policy: Arc<Policy>,
    mode: Mode,
) -> Result<(), RegisterError> {
    let args = AgentArgs {
        cell: cell.clone(),
        policy,
        mode,
        ctx: ctx.clone(),
    };
    let (actor, _) = AgentActor::spawn_linked(None, AgentActor, args, sup.clone())
        .await
        .map_err(|e| RegisterError::Unavailable(e.to_string()))?;
    cell.set_actor(Some(actor));
    Ok(())
}

pub(crate) struct FleetArgs {
    pub ctx: Ctx,
    pub broadcaster: ActorRef<BroadcastMsg>,
    pub directory: Directory,
    pub health: Arc<HealthConfig>,
    pub policies: Policies,
}

pub(crate) struct FleetState {
    ctx: Arc<Ctx>,
    broadcaster: ActorRef<BroadcastMsg>,
    directory: Directory,
    health: Arc<HealthConfig>,
    policies: Policies,
    kinds: HashMap<String, Arc<str>>,
}

pub(crate) struct FleetSupervisor;

impl Actor for FleetSupervisor {
    type Msg = FleetMsg;
    type State = FleetState;
    type Arguments = FleetArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<FleetMsg>,
        args: FleetArgs,
    ) -> Result<FleetState, ActorProcessingErr> {
        Ok(FleetState {
            ctx: Arc::new(args.ctx),
            broadcaster: args.broadcaster,
            directory: args.directory,
            health: args.health,
            policies: args.policies,
            kinds: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<FleetMsg>,
        msg: FleetMsg,
        st: &mut FleetState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            FleetMsg::Register(reg, reply) => st.register(reg, reply, &myself).await,
            FleetMsg::Admin(req, reply) => st.admin(req, reply, &myself).await,
            FleetMsg::Deregister(id, reply) => st.leave(id, Reason::Deregistered, reply).await,
            FleetMsg::Restore(reply) => {
                let n = st.restore(&myself).await;
                let _ = reply.send(n);
            }
            FleetMsg::StopAll(reply) => {
                let cells: Vec<_> = st.dir_write().drain().map(|(_, c)| c).collect();
                for cell in cells {
                    cell.next_timer_gen();
                    if let Some(a) = cell.actor() {
                        a.stop(None);
                    }
                    cell.set_actor(None);
                }
                let _ = reply.send(());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<FleetMsg>,
        evt: SupervisionEvent,
        st: &mut FleetState,
    ) -> Result<(), ActorProcessingErr> {
        // Unlike ractor's default, a child's exit never stops the supervisor: a normal exit
        // (the agent left) needs nothing, a failure restarts the agent's actor.
        if let SupervisionEvent::ActorFailed(who, err) = evt {
            let Some(id) = st.agent_of(who.get_id()) else {
                return Ok(());
            };
            error!(agent = %id, error = %err, "agent actor crashed; restarting it");
            st.restart(id, &myself).await;
        }
        Ok(())
    }
}

impl FleetState {
    fn dir_write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<AgentId, Arc<AgentCell>>> {
        self.directory.write().unwrap_or_else(|e| e.into_inner())
    }

    /// One shared copy of each kind's name.
    fn intern(&mut self, kind: &str) -> Arc<str> {
        if let Some(k) = self.kinds.get(kind) {
            return k.clone();
        }
        let k: Arc<str> = Arc::from(kind);
        self.kinds.insert(kind.to_string(), k.clone());
        k
    }

    /// The agent whose actor this is. A scan of the directory: it runs only when an actor
    /// crashes, and a map kept for it would cost every agent memory.
    fn agent_of(&self, actor: ActorId) -> Option<AgentId> {
        self.directory
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .find(|c| c.actor().is_some_and(|a| a.get_id() == actor))
            .map(|c| c.id.clone())
    }

    fn lookup(&self, id: &AgentId) -> Option<Arc<AgentCell>> {
        self.directory
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    async fn spawn(
        &mut self,
        cell: Arc<AgentCell>,
        policy: Arc<Policy>,
        mode: Mode,
        myself: &ActorRef<FleetMsg>,
    ) -> Result<(), RegisterError> {
        spawn_agent(&self.ctx, &myself.get_cell(), cell, policy, mode).await
    }

    fn policy_for(&self, reg: &Registration) -> Result<Arc<Policy>, RegisterError> {
        if let Some(i) = reg.heartbeat_interval {
            let (lo, hi) = (self.policies.min_interval, self.policies.max_interval);
            if i < lo || i > hi {
                return Err(RegisterError::InvalidField(format!(
                    "heartbeat_interval_ms must be between {} and {}",
                    lo.as_millis(),
                    hi.as_millis()
                )));
            }
        }
        Ok(self
            .policies
            .for_agent(reg.kind_or_default(), reg.heartbeat_interval))
    }

    /// Registers an agent. A new agent costs the supervisor no wait: the registry's `Register`
    /// is queued before the agent's actor exists (so it precedes anything the actor sends),
    /// the actor is spawned without waiting for its start, and the answer (the incarnation,
    /// from the registry) is relayed to the caller by a small task. Under load, each wait here
    /// was a round of the scheduler, and registrations queued behind one another timed out.
    async fn register(
        &mut self,
        reg: Registration,
        reply: RpcReplyPort<Result<Registered, RegisterError>>,
        myself: &ActorRef<FleetMsg>,
    ) {
        let Some(id) = reg.id.clone() else {
            let _ = reply.send(Err(RegisterError::MissingField("id".into())));
            return;
        };
        let policy = match self.policy_for(&reg) {
            Ok(p) => p,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        if let Some(why) = self.ctx.backpressure.refuse_registration() {
            let _ = reply.send(Err(RegisterError::Overloaded(why)));
            return;
        }
        let interval = policy.heartbeat_interval;
        if let Some(cell) = self.lookup(&id) {
            // Registered again: its actor records it; the answer (from the registry, once
            // durable) is relayed, and the supervisor waits for nothing.
            let Some(actor) = cell.actor() else {
                let e = RegisterError::Unavailable("agent actor restarting".into());
                let _ = reply.send(Err(e));
                return;
            };
            let (tx, rx) = ractor::concurrency::oneshot();
            if actor
                .cast(AgentMsg::Reregister(Box::new((reg, policy, tx.into()))))
                .is_err()
            {
                let e = RegisterError::Unavailable("agent actor restarting".into());
                let _ = reply.send(Err(e));
                return;
            }
            relay_registration(rx, reply, id, interval, cell, self.ctx.call_timeout);
            return;
        }
        let cell = AgentCell::new(
            id.clone(),
            self.intern(reg.kind_or_default()),
            self.ctx.clock.base(),
        );
        cell.set_own_interval(reg.heartbeat_interval);
        let now = self.ctx.clock.now();
        cell.record_seen(now);
        let at = self.ctx.clock.utc(now);
        let (tx, rx) = ractor::concurrency::oneshot();
        let queued = self.ctx.registry.cast(RegistryMsg::Register {
            reg,
            id: id.clone(),
            at,
            cell: cell.clone(),
            reply: tx.into(),
        });
        if queued.is_err() {
            let e = RegisterError::Unavailable("registry is gone".into());
            let _ = reply.send(Err(e));
            return;
        }
        let args = AgentArgs {
            cell: cell.clone(),
            policy,
            mode: Mode::Fresh,
            ctx: self.ctx.clone(),
        };
        // Its `pre_start` cannot fail; messages sent before it runs wait in its mailbox.
        match ractor::ActorRuntime::spawn_linked_instant(None, AgentActor, args, myself.get_cell())
        {
            Ok((actor, _)) => cell.set_actor(Some(actor)),
            Err(e) => {
                let _ = reply.send(Err(RegisterError::Unavailable(e.to_string())));
                return;
            }
        }
        self.dir_write().insert(id.clone(), cell.clone());
        relay_registration(rx, reply, id, interval, cell, self.ctx.call_timeout);
    }

    /// The agent leaves (deregistered or evicted): its actor records it, and the caller is
    /// answered once the departure is durable.
    async fn leave(
        &mut self,
        id: AgentId,
        reason: Reason,
        reply: RpcReplyPort<Result<AdminResponse, AdminError>>,
    ) {
        if let Some(why) = self.ctx.backpressure.refuse_write() {
            let _ = reply.send(Err(AdminError::Overloaded(why)));
            return;
        }
        let answer = self.leave_now(id, reason).await;
        answer_when_durable(&self.ctx.registry, reply, answer);
    }

    async fn leave_now(
        &mut self,
        id: AgentId,
        reason: Reason,
    ) -> Result<AdminResponse, AdminError> {
        let cell = self
            .lookup(&id)
            .ok_or_else(|| AdminError::UnknownAgent(id.clone()))?;
        let actor = cell
            .actor()
            .ok_or_else(|| AdminError::Unavailable("agent actor restarting".into()))?;
        let out = actor
            .call(
                |reply| AgentMsg::Op(AgentOp::Leave(reason), reply),
                Some(self.ctx.call_timeout),
            )
            .await;
        let answer = match out {
            Ok(CallResult::Success(a)) => a,
            _ => return Err(AdminError::Unavailable("agent actor did not answer".into())),
        };
        self.dir_write().remove(&id);
        cell.next_timer_gen();
        cell.set_actor(None);
        cell.set_connected(false);
        actor.stop(None);
        answer
    }

    async fn restart(&mut self, id: AgentId, myself: &ActorRef<FleetMsg>) {
        let Some(cell) = self.lookup(&id) else { return };
        cell.set_actor(None);
        let record = self
            .ctx
            .registry
            .call(
                |reply| RegistryMsg::Record(id.clone(), reply),
                Some(self.ctx.call_timeout),
            )
            .await;
        let Ok(CallResult::Success(Some(record))) = record else {
            error!(agent = %id, "no record to restart the agent actor from");
            self.dir_write().remove(&id);
            return;
        };
        let own = record.heartbeat_interval_ms.map(Duration::from_millis);
        let policy = self.policies.for_agent(&record.kind, own);
        let mode = Mode::Resumed {
            status: record.status,
            reported: cell.reported(),
        };
        match self.spawn(cell, policy, mode, myself).await {
            Ok(()) => {
                info!(agent = %id, status = %record.status, "agent actor restarted");
            }
            Err(e) => {
                error!(agent = %id, error = %e, "agent actor could not be restarted");
                self.dir_write().remove(&id);
            }
        }
    }

    async fn restore(&mut self, myself: &ActorRef<FleetMsg>) -> usize {
        let list = self
            .ctx
            .registry
            .call(RegistryMsg::Restorable, Some(Duration::from_secs(600)))
            .await;
        let Ok(CallResult::Success(list)) = list else {
            error!("registry did not list the agents to restore");
            return 0;
        };
        let mut ready = Vec::with_capacity(list.len());
        for record in list {
            if self.lookup(&record.id).is_some() {
                continue;
            }
            let cell = AgentCell::new(
                record.id.clone(),
                self.intern(&record.kind),
                self.ctx.clock.base(),
            );
            cell.set_connected(false);
            cell.set_reported(record.reported);
            let own = record.heartbeat_interval_ms.map(Duration::from_millis);
            cell.set_own_interval(own);
            let policy = self.policies.for_agent(&record.kind, own);
            let mode = Mode::Restored {
                status: record.status,
                reported: record.reported,
            };
            ready.push((cell, policy, mode));
        }
        // Spawning is most of a large restore: it runs on every worker thread at once.
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        let per_task = ready.len().div_ceil(workers).max(1);
        let mut tasks = Vec::new();
        while !ready.is_empty() {
            let part: Vec<_> = ready.drain(..per_task.min(ready.len())).collect();
            let (ctx, sup) = (self.ctx.clone(), myself.get_cell());
            tasks.push(tokio::spawn(async move {
                let mut supervised = Vec::with_capacity(part.len());
                for (cell, policy, mode) in part {
                    match spawn_agent(&ctx, &sup, cell.clone(), policy, mode).await {
                        Ok(()) => supervised.push(cell),
                        Err(e) => {
                            error!(agent = %cell.id, error = %e, "restored agent could not be supervised")
                        }
                    }
                }
                supervised
            }));
        }
        let mut n = 0;
        let mut all = Vec::new();
        for task in tasks {
            let supervised = match task.await {
                Ok(s) => s,
                Err(e) => {
                    error!(error = %e, "a restore task failed");
                    continue;
                }
            };
            n += supervised.len();
            {
                let mut dir = self.dir_write();
                for cell in &supervised {
                    dir.insert(cell.id.clone(), cell.clone());
                }
            }
            for chunk in supervised.chunks(ATTACH_BATCH) {
                let cells = chunk.iter().map(|c| (c.id.clone(), c.clone())).collect();
                let _ = self.ctx.registry.cast(RegistryMsg::Attach(cells));
            }
            all.push(supervised);
        }
        // Every restored agent's grace starts now, when the whole fleet is supervised.
        let now = self.ctx.clock.now();
        for cell in all.iter().flatten() {
            if let Some(actor) = cell.actor() {
                let _ = actor.cast(AgentMsg::GraceFrom(now));
            }
        }
        n
    }

    async fn admin(
        &mut self,
        req: AdminRequest,
        reply: RpcReplyPort<Result<AdminResponse, AdminError>>,
        _myself: &ActorRef<FleetMsg>,
    ) {
        let query = |q: Query, reply| {
            if let Err(e) = self.ctx.registry.cast(RegistryMsg::Query(q, reply)) {
                warn!(error = %e, "registry gone");
            }
        };
        match req {
            AdminRequest::List {
                kind,
                status,
                limit,
                after,
            } => query(
                Query::List {
                    kind,
                    status,
                    limit: limit.unwrap_or(usize::MAX),
                    after,
                },
                reply,
            ),
            AdminRequest::Get { id } => query(Query::Get(id), reply),
            AdminRequest::Events {
                id,
                since,
                limit,
                latest,
            } => query(
                Query::Events {
                    id,
                    since: since.unwrap_or(0),
                    limit: limit.unwrap_or(1000),
                    latest,
                },
                reply,
            ),
            AdminRequest::Stats => {
                let registry = self.ctx.registry.clone();
                let broadcaster = self.broadcaster.clone();
                let lag = self.ctx.lag.clone();
                let timeout = Some(self.ctx.call_timeout);
                tokio::spawn(async move {
                    let r = registry
                        .call(|r| RegistryMsg::Query(Query::Stats, r), timeout)
                        .await;
                    let b = broadcaster.call(BroadcastMsg::Stats, timeout).await;
                    let answer = match (r, b) {
                        (
                            Ok(CallResult::Success(Ok(AdminResponse::Registry(registry)))),
                            Ok(CallResult::Success(broadcast)),
                        ) => Ok(AdminResponse::Stats(Box::new(Stats {
                            registry,
                            broadcast,
                            lag_ms: lag.estimate(tokio::time::Instant::now()).as_millis() as u64,
                        }))),
                        _ => Err(AdminError::Unavailable("stats not available".into())),
                    };
                    let _ = reply.send(answer);
                });
            }
            AdminRequest::HealthReport => {
                // Read off the actor: a large fleet takes many pages.
                let registry = self.ctx.registry.clone();
                let clock = self.ctx.clock;
                let health = self.health.clone();
                let timeout = self.ctx.call_timeout;
                tokio::spawn(async move {
                    let r = health_task::report(&registry, &clock, &health, timeout).await;
                    let _ = reply.send(r.map(|r| AdminResponse::Health(Box::new(r))));
                });
            }
            AdminRequest::Evict { id, reason } => {
                if let Some(r) = &reason {
                    info!(agent = %id, reason = %r, "evicting agent");
                }
                self.leave(id, Reason::Evicted, reply).await;
            }
            AdminRequest::SetStatus { id, status, reason } => {
                if let Some(r) = &reason {
                    info!(agent = %id, status = %status, reason = %r, "operator sets status");
                }
                self.forward(id, AgentOp::SetStatus(status), reply);
            }
            AdminRequest::Maintenance { id, on } => {
                self.forward(id, AgentOp::Maintenance(on), reply);
            }
            AdminRequest::SetPolicy { kind, patch } => {
                let policy = patch.apply(self.policies.for_kind(&kind));
                let shared = Arc::new(policy.clone());
                if let Err(e) = policy.validate() {
                    let _ = reply.send(Err(AdminError::InvalidField(e)));
                    return;
                }
                self.policies.kinds.insert(kind.clone(), shared.clone());
                let cells: Vec<_> = self
                    .directory
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .values()
                    .filter(|c| *c.kind() == *kind)
                    .cloned()
                    .collect();
                for cell in cells {
                    if let Some(actor) = cell.actor() {
                        // An agent that asked for its own interval keeps it.
                        let p = self.policies.for_agent(&kind, cell.own_interval());
                        let _ = actor.cast(AgentMsg::SetPolicy(p));
                    }
                }
                let _ = reply.send(Ok(AdminResponse::Policy { kind, policy }));
            }
        }
    }

    /// Sends an operator's change to the agent's actor; the caller is answered once the
    /// change is durable (a relay task waits, the supervisor does not).
    fn forward(
        &self,
        id: AgentId,
        op: AgentOp,
        reply: RpcReplyPort<Result<AdminResponse, AdminError>>,
    ) {
        if let Some(why) = self.ctx.backpressure.refuse_write() {
            let _ = reply.send(Err(AdminError::Overloaded(why)));
            return;
        }
        let Some(actor) = self.lookup(&id).and_then(|c| c.actor()) else {
            let _ = reply.send(Err(AdminError::UnknownAgent(id)));
            return;
        };
        let (tx, rx) = ractor::concurrency::oneshot();
        if actor.cast(AgentMsg::Op(op, tx.into())).is_err() {
            let e = AdminError::Unavailable("agent actor restarting".into());
            let _ = reply.send(Err(e));
            return;
        }
        let registry = self.ctx.registry.clone();
        let limit = self.ctx.call_timeout;
        tokio::spawn(async move {
            let answer = match tokio::time::timeout(limit, rx).await {
                Ok(Ok(answer)) => answer,
                _ => Err(AdminError::Unavailable("agent actor did not answer".into())),
            };
            // The actor sent its change to the registry before it answered: the registry
            // gets this after it.
            answer_when_durable(&registry, reply, answer);
        });
    }
}

/// Has the registry send `answer` once every event sequenced so far is durable. A refusal
/// changed nothing and is sent at once.
fn answer_when_durable(
    registry: &ActorRef<RegistryMsg>,
    reply: RpcReplyPort<Result<AdminResponse, AdminError>>,
    answer: Result<AdminResponse, AdminError>,
) {
    if answer.is_err() {
        let _ = reply.send(answer);
        return;
    }
    let waiter = Waiter::Admin(reply, Box::new(answer));
    if let Err(ractor::MessagingErr::SendErr(RegistryMsg::WhenDurable {
        waiter: Waiter::Admin(reply, _),
        ..
    })) = registry.cast(RegistryMsg::WhenDurable { upto: None, waiter })
    {
        let _ = reply.send(Err(AdminError::Unavailable("registry is gone".into())));
    }
}

/// Relays the registry's answer to a registration (its incarnation and seq, once sequenced)
/// to the caller, as a [`Registered`], or an error after `limit`.
fn relay_registration(
    rx: ractor::concurrency::OneshotReceiver<crate::registry::RegisterReply>,
    reply: RpcReplyPort<Result<Registered, RegisterError>>,
    id: AgentId,
    interval: Duration,
    cell: Arc<AgentCell>,
    limit: Duration,
) {
    tokio::spawn(async move {
        let out = match tokio::time::timeout(limit, rx).await {
            Ok(Ok(out)) => Ok(Registered {
                id,
                incarnation: {
                    cell.set_incarnation(out.incarnation);
                    out.incarnation
                },
                seq: out.seq,
                heartbeat_interval: interval,
                cell,
            }),
            _ => Err(RegisterError::Unavailable("registry did not answer".into())),
        };
        let _ = reply.send(out);
    });
}
