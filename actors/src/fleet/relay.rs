//! Answers relayed off the supervisor, so it never waits on the registry.

use std::sync::Arc;
use std::time::Duration;

use ractor::RpcReplyPort;

use super::Registered;
use crate::admin::{AdminError, AdminResponse};
use crate::agent::cell::AgentCell;
use crate::model::AgentId;
use crate::registry::durable::Waiter;
use crate::registry::RegistryHandle;
use crate::RegisterError;

/// Has the registry send `answer` once every event sequenced so far is durable. A refusal
/// changed nothing and is sent at once.
pub(super) fn answer_when_durable(
    registry: &RegistryHandle,
    reply: RpcReplyPort<Result<AdminResponse, AdminError>>,
    answer: Result<AdminResponse, AdminError>,
) {
    if answer.is_err() {
        let _ = reply.send(answer);
        return;
    }
    let waiter = Waiter::Admin(reply, Box::new(answer));
    if let Err(Waiter::Admin(reply, _)) = registry.when_durable(None, waiter) {
        let _ = reply.send(Err(AdminError::Unavailable("registry is gone".into())));
    }
}

/// Relays the registry's answer to a registration (its incarnation and seq, once sequenced)
/// to the caller, as a [`Registered`], or an error after `limit`.
pub(super) fn relay_registration(
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
