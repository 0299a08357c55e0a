//! The agents the supervisor holds: registration, departure, restart after a crash, and
//! restore at start.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{ActorId, ActorRef, RpcReplyPort};
use tracing::{error, info};

use super::{
    answer_when_durable, relay_registration, spawn_agent, FleetMsg, FleetState, Registered,
    ATTACH_BATCH,
};
use crate::admin::{AdminError, AdminResponse};
use crate::agent::cell::AgentCell;
use crate::agent::{AgentActor, AgentArgs, AgentMsg, AgentOp, Mode};
use crate::model::{AgentId, Policy, Reason, Registration};
use crate::RegisterError;

impl FleetState {
    pub(super) fn dir_write(
        &self,
    ) -> parking_lot::RwLockWriteGuard<'_, HashMap<AgentId, Arc<AgentCell>>> {
        self.directory.write()
    }

    /// One shared copy of each kind's name.
    pub(super) fn intern(&mut self, kind: &str) -> Arc<str> {
        if let Some(k) = self.kinds.get(kind) {
            return k.clone();
        }
        let k: Arc<str> = Arc::from(kind);
        self.kinds.insert(kind.to_string(), k.clone());
        k
    }

    /// The agent whose actor this is. A scan of the directory: it runs only when an actor
    /// crashes, and a map kept for it would cost every agent memory.
    pub(super) fn agent_of(&self, actor: ActorId) -> Option<AgentId> {
        self.directory
            .read()
            .values()
            .find(|c| c.actor().is_some_and(|a| a.get_id() == actor))
            .map(|c| c.id.clone())
    }

    pub(super) fn lookup(&self, id: &AgentId) -> Option<Arc<AgentCell>> {
        self.directory.read().get(id).cloned()
    }

    pub(super) async fn spawn(
        &mut self,
        cell: Arc<AgentCell>,
        policy: Arc<Policy>,
        mode: Mode,
        myself: &ActorRef<FleetMsg>,
    ) -> Result<(), RegisterError> {
        spawn_agent(&self.ctx, &myself.get_cell(), cell, policy, mode).await
    }

    pub(super) fn policy_for(&self, reg: &Registration) -> Result<Arc<Policy>, RegisterError> {
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
    pub(super) async fn register(
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
        cell.set_connected(!reg.connectionless);
        let now = self.ctx.clock.now();
        cell.record_seen(now);
        let at = self.ctx.clock.utc(now);
        let (tx, rx) = ractor::concurrency::oneshot();
        let queued = self
            .ctx
            .registry
            .register(reg, id.clone(), at, cell.clone(), tx.into());
        if !queued {
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
    pub(super) async fn leave(
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

    pub(super) async fn leave_now(
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

    /// Stops supervising an agent another node registered at seq `taken`: the registry
    /// forgets it (unless it was registered here again since) and its actor stops, with no
    /// event (the other node recorded the move).
    pub(super) async fn disown(&mut self, id: AgentId, taken: u64) {
        if self.lookup(&id).is_none() {
            return;
        }
        let registry = self.ctx.registry.clone();
        if !registry
            .forget(id.clone(), taken, self.ctx.call_timeout)
            .await
        {
            return;
        }
        let Some(cell) = self.dir_write().remove(&id) else {
            return;
        };
        info!(agent = %id, "agent taken over by another node; no longer supervised here");
        cell.next_timer_gen();
        if let Some(actor) = cell.actor() {
            actor.stop(None);
        }
        cell.set_actor(None);
        cell.set_connected(false);
    }

    pub(super) async fn restart(&mut self, id: AgentId, myself: &ActorRef<FleetMsg>) {
        let Some(cell) = self.lookup(&id) else { return };
        cell.set_actor(None);
        let record = self
            .ctx
            .registry
            .record(id.clone(), self.ctx.call_timeout)
            .await;
        let Some(Some(record)) = record else {
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

    pub(super) async fn restore(&mut self, myself: &ActorRef<FleetMsg>) -> usize {
        let list = self.ctx.registry.restorable(Duration::from_secs(600)).await;
        let Some(list) = list else {
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
                self.ctx.registry.attach(cells);
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
}
