//! Operators' requests: answered from the registry, or forwarded to the agent's actor.

use std::sync::Arc;

use ractor::rpc::CallResult;
use ractor::{ActorRef, RpcReplyPort};
use tracing::{info, warn};

use super::{answer_when_durable, health_task, FleetMsg, FleetState};
use crate::admin::{AdminError, AdminRequest, AdminResponse, Stats};
use crate::agent::{AgentMsg, AgentOp};
use crate::broadcaster::BroadcastMsg;
use crate::model::{AgentId, Reason};
use crate::registry::Query;

impl FleetState {
    pub(super) async fn admin(
        &mut self,
        req: AdminRequest,
        reply: RpcReplyPort<Result<AdminResponse, AdminError>>,
        _myself: &ActorRef<FleetMsg>,
    ) {
        let query = |q: Query, reply| {
            if !self.ctx.registry.query_to(q, reply) {
                warn!("registry gone");
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
                    own: false,
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
                let limit = self.ctx.call_timeout;
                tokio::spawn(async move {
                    let r = registry.query(Query::Stats, limit).await;
                    let b = broadcaster.call(BroadcastMsg::Stats, timeout).await;
                    let answer = match (r, b) {
                        (
                            Some(Ok(AdminResponse::Registry(registry))),
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
                    let r = health_task::report(&registry, &clock, &health, timeout, false).await;
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
    pub(super) fn forward(
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
