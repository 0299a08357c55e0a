//! AgentActor: one per registered agent. It owns the agent's [`Liveness`] state and its one
//! pending deadline, and executes what the state machine decides: it sends transitions to the
//! registry, arms the deadline wheel, and opens or closes the heartbeat fast path
//! (see [`crate::agent::cell`]). It decides nothing itself.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::time::Instant;
use tracing::warn;

use crate::admin::{AdminError, AdminResponse};
use crate::agent::cell::AgentCell;
use crate::agent::wheel::{Arm, Wheel};
use crate::clock::Clock;
use crate::model::{EventBody, Metrics, Policy, Reason, Registration, Reported, Status};
use crate::registry::RegistryHandle;
use crate::registry::{Change, RegisterReply};
use crate::rules::fsm::{Effects, Input, Liveness, Refusal};
use crate::rules::lag::LagMonitor;

/// What the agent actors share: where to send changes, the wheel, the clock, the lag monitor.
#[derive(Clone)]
pub(crate) struct Ctx {
    pub registry: RegistryHandle,
    pub wheel: Wheel,
    pub clock: Clock,
    pub lag: Arc<LagMonitor>,
    pub call_timeout: Duration,
    /// Whether the store can take more (read where work enters: registration, admin writes).
    pub backpressure: Arc<crate::registry::durable::Backpressure>,
}

/// An operator's or the agent's own change.
#[derive(Debug, Clone, Copy)]
pub(crate) enum AgentOp {
    SetStatus(Status),
    Maintenance(bool),
    Leave(Reason),
}

pub(crate) enum AgentMsg {
    /// A heartbeat that took the slow path. `stamped`: it also stamped `last_seen`.
    Beat {
        reported: Reported,
        metrics: Option<Metrics>,
        at: Instant,
        stamped: bool,
    },
    /// A deadline fell ("check now").
    Tick {
        gen: u64,
        slack: Duration,
    },
    /// Boxed: the message type sizes every agent actor's task.
    Reregister(Box<(Registration, Arc<Policy>, RpcReplyPort<RegisterReply>)>),
    Disconnected,
    Op(AgentOp, RpcReplyPort<Result<AdminResponse, AdminError>>),
    SetPolicy(Arc<Policy>),
    /// The whole restored fleet is supervised: a restored agent's restart grace starts now.
    GraceFrom(Instant),
    /// Fault injection: the actor panics while handling this message.
    Crash,
}

/// How an agent actor starts.
pub(crate) enum Mode {
    /// Just registered (the registry has already recorded it).
    Fresh,
    /// Restored from the store after a restart: `restart_grace` applies.
    Restored { status: Status, reported: Reported },
    /// Restarted after a crash of its actor: deadlines count from its last beat.
    Resumed { status: Status, reported: Reported },
}

pub(crate) struct AgentArgs {
    pub cell: Arc<AgentCell>,
    pub policy: Arc<Policy>,
    pub mode: Mode,
    pub ctx: Arc<Ctx>,
}

pub(crate) struct AgentState {
    cell: Arc<AgentCell>,
    fsm: Liveness,
    ctx: Arc<Ctx>,
    /// The deadline the wheel holds for us, and whether it slides with the stamp.
    armed: Option<(Instant, Option<Duration>)>,
    /// Restored and waiting for `GraceFrom`: no deadline is armed until then.
    held: bool,
}

pub(crate) struct AgentActor;

impl Actor for AgentActor {
    type Msg = AgentMsg;
    type State = AgentState;
    type Arguments = AgentArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<AgentMsg>,
        args: AgentArgs,
    ) -> Result<AgentState, ActorProcessingErr> {
        let now = args.ctx.clock.now();
        let held = matches!(args.mode, Mode::Restored { .. });
        let fsm = match args.mode {
            Mode::Fresh => Liveness::registered(args.policy, now),
            Mode::Restored { status, reported } => {
                Liveness::restored(args.policy, status, reported, now)
            }
            Mode::Resumed { status, reported } => {
                let seen = args.cell.last_seen().unwrap_or(now);
                Liveness::resumed(args.policy, status, reported, seen)
            }
        };
        Ok(AgentState {
            cell: args.cell,
            fsm,
            ctx: args.ctx,
            armed: None,
            held,
        })
    }

    async fn post_start(
        &self,
        _myself: ActorRef<AgentMsg>,
        st: &mut AgentState,
    ) -> Result<(), ActorProcessingErr> {
        if st.held {
            return Ok(()); // armed by `GraceFrom`
        }
        // A resumed actor may find its deadlines already past.
        let now = st.ctx.clock.now();
        let slack = st.ctx.lag.slack(now);
        let fx = st.fsm.step(Input::Tick { slack }, now);
        st.execute(fx, now);
        st.settle();
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<AgentMsg>,
        msg: AgentMsg,
        st: &mut AgentState,
    ) -> Result<(), ActorProcessingErr> {
        let now = st.ctx.clock.now();
        st.sync(now);
        match msg {
            AgentMsg::Beat {
                reported,
                metrics,
                at,
                stamped,
            } => {
                // A stamped beat the actor already took through the stamp counts once.
                let seen = stamped && st.fsm.last_seen().is_some_and(|s| at <= s);
                if let Some(m) = metrics {
                    st.cell.set_metrics(m);
                }
                if !seen {
                    let fx = st.fsm.step(Input::Heartbeat(reported), at);
                    st.cell.record_seen(at);
                    st.execute(fx, now);
                }
            }
            AgentMsg::GraceFrom(at) => {
                if st.held {
                    st.held = false;
                    st.fsm.grace_from(at);
                    let fx = st.fsm.step(
                        Input::Tick {
                            slack: st.ctx.lag.slack(now),
                        },
                        now,
                    );
                    st.execute(fx, now);
                    st.settle();
                }
            }
            AgentMsg::Tick { gen, slack } => {
                if st.cell.timer_gen() == gen {
                    st.armed = None;
                }
                let fx = st.fsm.step(Input::Tick { slack }, now);
                st.execute(fx, now);
            }
            AgentMsg::Reregister(r) => {
                let (reg, policy, reply) = *r;
                st.reregister(reg, policy, reply, now);
            }
            AgentMsg::Disconnected => {
                st.cell.set_connected(false);
                let fx = st.fsm.step(Input::Disconnected, now);
                st.execute(fx, now);
            }
            AgentMsg::Op(op, reply) => {
                let before = st.fsm.status();
                let input = match op {
                    AgentOp::SetStatus(s) => Input::SetStatus(s),
                    AgentOp::Maintenance(on) => Input::Maintenance(on),
                    AgentOp::Leave(r) => Input::Leave(r),
                };
                let fx = st.fsm.step(input, now);
                let refused = fx.refused;
                st.execute(fx, now);
                let id = st.cell.id().clone();
                let answer = match refused {
                    Some(Refusal::Left) => Err(AdminError::UnknownAgent(id)),
                    Some(Refusal::CannotSetLeft) => Err(AdminError::InvalidField(
                        "status left cannot be set; evict the agent instead".into(),
                    )),
                    None => Ok(AdminResponse::Changed {
                        id,
                        status: st.fsm.status(),
                        changed: st.fsm.status() != before,
                    }),
                };
                let _ = reply.send(answer);
            }
            AgentMsg::SetPolicy(policy) => {
                let fx = st.fsm.set_policy(policy, now);
                st.armed = None; // deadlines may have moved earlier: arm afresh
                st.execute(fx, now);
            }
            AgentMsg::Crash => panic!("injected fault in agent actor {}", st.cell.id()),
        }
        st.settle();
        Ok(())
    }
}

impl AgentState {
    /// The agent registered again: the registry records it (and the `registered` event,
    /// answering the caller once it is durable), and the state machine starts afresh at
    /// once. Nothing is awaited: the registry gets the registration before anything this
    /// actor sends after it, so the two cannot disagree, whatever the store does.
    fn reregister(
        &mut self,
        reg: Registration,
        policy: Arc<Policy>,
        reply: RpcReplyPort<RegisterReply>,
        now: Instant,
    ) {
        let at = self.ctx.clock.utc(now);
        let cell = self.cell.clone();
        let id = cell.id.clone();
        let kind = reg.kind_or_default().to_string();
        let own_interval = reg.heartbeat_interval;
        let connected = !reg.connectionless;
        if !self.ctx.registry.register(reg, id, at, cell, reply) {
            warn!(agent = %self.cell.id(), "registry gone: re-registration dropped");
            return;
        }
        self.cell.set_kind(&kind);
        self.cell.set_own_interval(own_interval);
        self.cell.set_connected(connected);
        self.fsm.set_policy(policy, now);
        let fx = self.fsm.step(Input::Register, now);
        self.cell.record_seen(now);
        self.execute(fx, now);
    }

    /// Takes in the beats that went through the fast path since the last message.
    fn sync(&mut self, now: Instant) {
        let Some(stamp) = self.cell.close_fast() else {
            return;
        };
        if self.fsm.last_seen().is_some_and(|s| stamp <= s) {
            return;
        }
        // Fast beats happen only while online and healthy, and the deadline wheel slid the
        // deadline past each one it saw: the agent was alive throughout, so only the latest
        // beat matters.
        let fx = self.fsm.step(Input::Heartbeat(Reported::Healthy), stamp);
        self.execute(fx, now);
    }

    /// Sends transitions and departures to the registry and arms the next deadline.
    fn execute(&mut self, fx: Effects, now: Instant) {
        let at = self.ctx.clock.utc(now);
        let id = self.cell.id().clone();
        for t in fx.transitions {
            let change = Change {
                agent: Some(id.clone()),
                at,
                body: EventBody::Transition {
                    from: t.from,
                    to: t.to,
                    reason: t.reason,
                    missed: t.missed,
                },
            };
            if !self.ctx.registry.append(change) {
                warn!(agent = %id, "registry gone; transition not recorded");
            }
        }
        if let Some((from, reason)) = fx.left {
            let change = Change {
                agent: Some(id.clone()),
                at,
                body: EventBody::Deregistered { from, reason },
            };
            if !self.ctx.registry.append(change) {
                warn!(agent = %id, "registry gone; departure not recorded");
            }
        }
        self.arm(fx.next_deadline);
    }

    /// Keeps one pending deadline: a new one is armed only when it is earlier than the one
    /// the wheel holds (or slides differently); a later one is found when the earlier fires.
    fn arm(&mut self, next: Option<Instant>) {
        let slide = self.fsm.slide();
        match next {
            None => {
                if self.armed.take().is_some() {
                    self.cell.next_timer_gen(); // the pending one goes stale
                }
            }
            Some(at) => {
                if let Some((armed, s)) = self.armed {
                    if armed <= at && s == slide {
                        return;
                    }
                }
                let gen = self.cell.next_timer_gen();
                self.ctx.wheel.arm(Arm {
                    at,
                    gen,
                    cell: self.cell.clone(),
                    slide,
                });
                self.armed = Some((at, slide));
            }
        }
    }

    /// After every message: reopen the fast path if a beat can change nothing.
    fn settle(&mut self) {
        self.cell.set_reported(self.fsm.reported());
        self.cell.open_fast(self.fsm.beat_changes_nothing());
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn agent_messages_and_state_stay_small() {
        // Every agent actor's task is sized by its message and state types: bytes here are
        // bytes per supervised agent.
        assert!(std::mem::size_of::<super::AgentMsg>() <= 64);
        assert!(std::mem::size_of::<super::AgentState>() <= 128);
    }
}
