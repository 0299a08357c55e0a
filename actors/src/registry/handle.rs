//! [`RegistryHandle`]: the registry as the rest of the core asks it things, one method per
//! request, instead of raw messages to its actor.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ractor::rpc::CallResult;
use ractor::{ActorRef, MessagingErr, RpcReplyPort};

use super::durable::Waiter;
use super::intake::Ticket;
use super::{Change, Query, RegisterReply, RegistryMsg, Report, Restorable};
use crate::admin::{AdminError, AdminResponse};
use crate::agent::cell::AgentCell;
use crate::broadcaster::{SubscribeOptions, Subscription};
use crate::model::{AgentId, AgentRecord, Registration};
use crate::store::StoreError;

/// The registry actor, asked through typed requests.
#[derive(Clone)]
pub(crate) struct RegistryHandle(ActorRef<RegistryMsg>);

impl RegistryHandle {
    pub(crate) fn new(actor: ActorRef<RegistryMsg>) -> Self {
        Self(actor)
    }

    /// Stops the actor (after [`RegistryHandle::drain`]).
    pub(crate) fn stop(&self) {
        self.0.stop(None);
    }

    /// Sequences a change; `false` when the registry is gone.
    pub(crate) fn append(&self, change: Change) -> bool {
        self.0.cast(RegistryMsg::Append(change)).is_ok()
    }

    /// An agent's report; `false` when the registry is gone.
    pub(crate) fn report(
        &self,
        id: AgentId,
        at: DateTime<Utc>,
        report: Report,
        ticket: Ticket,
    ) -> bool {
        let msg = RegistryMsg::Report {
            id,
            at,
            report,
            ticket,
        };
        self.0.cast(msg).is_ok()
    }

    /// Registers an agent: the answer (incarnation and seq) comes on `reply` at once; `false`
    /// when the registry is gone.
    pub(crate) fn register(
        &self,
        reg: Registration,
        id: AgentId,
        at: DateTime<Utc>,
        cell: Arc<AgentCell>,
        reply: RpcReplyPort<RegisterReply>,
    ) -> bool {
        let msg = RegistryMsg::Register {
            reg,
            id,
            at,
            cell,
            reply,
        };
        self.0.cast(msg).is_ok()
    }

    /// Has `waiter` answered once every event up to `upto` (default: every event sequenced
    /// so far) is durable; gives it back when the registry is gone.
    pub(crate) fn when_durable(&self, upto: Option<u64>, waiter: Waiter) -> Result<(), Waiter> {
        match self.0.cast(RegistryMsg::WhenDurable { upto, waiter }) {
            Ok(()) => Ok(()),
            Err(MessagingErr::SendErr(RegistryMsg::WhenDurable { waiter, .. })) => Err(waiter),
            // The other failures consume the waiter: its reply port is dropped, so its caller
            // sees no answer, as it would from a registry that stopped.
            Err(_) => Ok(()),
        }
    }

    /// Whether every event up to `seq` became durable within `timeout`.
    pub(crate) async fn durable(&self, seq: u64, timeout: Duration) -> bool {
        let r = self
            .0
            .call(
                |reply| RegistryMsg::WhenDurable {
                    upto: Some(seq),
                    waiter: Waiter::Durable(reply),
                },
                Some(timeout),
            )
            .await;
        matches!(r, Ok(CallResult::Success(())))
    }

    /// A query's answer; `None` when none came within `timeout`.
    pub(crate) async fn query(
        &self,
        q: Query,
        timeout: Duration,
    ) -> Option<Result<AdminResponse, AdminError>> {
        match self
            .0
            .call(|reply| RegistryMsg::Query(q, reply), Some(timeout))
            .await
        {
            Ok(CallResult::Success(r)) => Some(r),
            _ => None,
        }
    }

    /// A query answered on `reply` (the caller does not wait); `false` when the registry is
    /// gone.
    pub(crate) fn query_to(
        &self,
        q: Query,
        reply: RpcReplyPort<Result<AdminResponse, AdminError>>,
    ) -> bool {
        self.0.cast(RegistryMsg::Query(q, reply)).is_ok()
    }

    /// The agent's record as the registry holds it (`None` inside: it has none); `None`:
    /// no answer within `timeout`.
    pub(crate) async fn record(
        &self,
        id: AgentId,
        timeout: Duration,
    ) -> Option<Option<AgentRecord>> {
        match self
            .0
            .call(|reply| RegistryMsg::Record(id, reply), Some(timeout))
            .await
        {
            Ok(CallResult::Success(r)) => Some(r),
            _ => None,
        }
    }

    /// The restored agents to supervise again; `None`: no answer within `timeout`.
    pub(crate) async fn restorable(&self, timeout: Duration) -> Option<Vec<Restorable>> {
        match self.0.call(RegistryMsg::Restorable, Some(timeout)).await {
            Ok(CallResult::Success(list)) => Some(list),
            _ => None,
        }
    }

    /// Drops an agent another node registered at seq `taken`, with no event, unless this
    /// node registered it again since; whether it was dropped (`false` too when the registry
    /// did not answer within `timeout`).
    pub(crate) async fn forget(&self, id: AgentId, taken: u64, timeout: Duration) -> bool {
        let r = self
            .0
            .call(
                |reply| RegistryMsg::Forget { id, taken, reply },
                Some(timeout),
            )
            .await;
        matches!(r, Ok(CallResult::Success(true)))
    }

    /// Agents of a dead node this node adopted (see [`RegistryMsg::Adopt`]).
    pub(crate) fn adopt(&self, records: Vec<AgentRecord>) {
        let _ = self.0.cast(RegistryMsg::Adopt(records));
    }

    /// The cells of restored agents, now supervised.
    pub(crate) fn attach(&self, cells: Vec<(AgentId, Arc<AgentCell>)>) {
        let _ = self.0.cast(RegistryMsg::Attach(cells));
    }

    /// A subscription; `None`: refused (the store fails) or no answer within `timeout`.
    pub(crate) async fn subscribe(
        &self,
        opts: SubscribeOptions,
        timeout: Duration,
    ) -> Option<Subscription> {
        match self
            .0
            .call(|reply| RegistryMsg::Subscribe(opts, reply), Some(timeout))
            .await
        {
            Ok(CallResult::Success(s)) => Some(s),
            _ => None,
        }
    }

    /// Writes every pending event and a full checkpoint; `None`: not done within `timeout`.
    pub(crate) async fn drain(&self, timeout: Duration) -> Option<Result<(), StoreError>> {
        match self.0.call(RegistryMsg::Drain, Some(timeout)).await {
            Ok(CallResult::Success(r)) => Some(r),
            _ => None,
        }
    }
}
