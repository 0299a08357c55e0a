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

mod admin;
mod agents;
mod policies;
mod relay;

pub(crate) use policies::Policies;

use relay::{answer_when_durable, relay_registration};

pub(crate) mod health_task;

use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tracing::error;

use crate::admin::{AdminError, AdminRequest, AdminResponse};
use crate::agent::cell::AgentCell;
use crate::agent::{AgentActor, AgentArgs, Ctx, Mode};
use crate::broadcaster::BroadcastMsg;
use crate::model::{AgentId, Policy, Reason, Registration};
use crate::rules::health::HealthConfig;
use crate::RegisterError;

/// `AgentId → AgentCell`, written only by the fleet supervisor.
pub(crate) type Directory = Arc<RwLock<HashMap<AgentId, Arc<AgentCell>>>>;

/// A successful registration.
#[derive(Debug, Clone)]
pub struct Registered {
    /// The agent's id.
    pub id: AgentId,
    /// 1 at the agent's first registration, one more at each after.
    pub incarnation: u64,
    /// The seq of its `registered` event.
    pub seq: u64,
    /// The heartbeat interval in force: the agent's own, or its kind's.
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
    /// Another node of the cluster registered these agents (at these seqs of the shared log):
    /// stop supervising them, with no event, unless registered here again since.
    #[cfg_attr(not(feature = "surreal"), allow(dead_code))]
    Disown(Vec<(AgentId, u64)>),
    /// This node adopted a dead node's agents: supervise them as after a restart (each with
    /// its restart grace from now).
    #[cfg_attr(not(feature = "surreal"), allow(dead_code))]
    Adopt(Vec<crate::model::AgentRecord>),
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
            FleetMsg::Adopt(records) => {
                let n = records.len();
                st.ctx.registry.adopt(records);
                let supervised = st.restore(&myself).await;
                tracing::info!(
                    adopted = n,
                    supervised,
                    "a dead node's agents are supervised here"
                );
            }
            FleetMsg::Disown(ids) => {
                for (id, taken) in ids {
                    st.disown(id, taken).await;
                }
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
