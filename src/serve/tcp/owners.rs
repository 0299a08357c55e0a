//! Which connection owns each agent, and the notices a connection gets when it loses one (a
//! takeover by another connection, an operator's eviction).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use vigil_actors::{
    AgentId, EventBody, EventKind, Filter, Reason, RuntimeError, SubscribeOptions, SubscriptionItem,
};

use super::Shared;

/// Messages to a connection from elsewhere. Never dropped, so the channel has no bound; what
/// it can hold is bounded all the same: each notice is about an agent the connection owns, and
/// the owner changes with it (a takeover names the new owner; an evicted agent must register
/// again, by another takeover, before it can be evicted again).
pub(super) enum Control {
    /// Another connection took this agent over.
    TakenOver(AgentId),
    /// An operator evicted this agent (the seq of the eviction).
    Evicted(AgentId, u64),
}

pub(super) struct Owner {
    pub(super) conn: u64,
    pub(super) tx: mpsc::UnboundedSender<Control>,
}

/// Tells the owners of evicted agents (the `evicted` frame), and, on a cluster node, of
/// agents another node took over (their `registered` event came from there).
pub(super) async fn tell_evicted(shared: Arc<Shared>) {
    let me = shared.rt.node_id().map(str::to_string);
    let mut events = vec![EventKind::Deregistered];
    if me.is_some() {
        events.push(EventKind::Registered);
    }
    let filter = Filter {
        events,
        ..Filter::default()
    };
    let mut since = None;
    loop {
        let opts = SubscribeOptions {
            filter: filter.clone(),
            since,
            snapshot: false,
        };
        let mut sub = match shared.rt.subscribe(opts).await {
            Ok(sub) => sub,
            // The store is failing: no eviction can be durable meanwhile; try again.
            Err(RuntimeError::Overloaded(_)) => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(_) => return, // the runtime is stopping
        };
        while let Some(item) = sub.next().await {
            match item {
                SubscriptionItem::Event(e) => {
                    since = Some(e.seq);
                    let evicted = matches!(
                        e.body,
                        EventBody::Deregistered {
                            reason: Reason::Evicted,
                            ..
                        }
                    );
                    // (Unless it came back here since: the view is ahead of the stream.)
                    let elsewhere = matches!(e.body, EventBody::Registered { .. })
                        && e.node.as_deref() != me.as_deref()
                        && e.agent
                            .as_ref()
                            .is_some_and(|id| shared.rt.owned_elsewhere(id).is_some());
                    if let (true, Some(id)) = (evicted || elsewhere, &e.agent) {
                        let mut owners = shared.owners.lock();
                        if elsewhere {
                            if let Some(o) = owners.remove(id) {
                                let _ = o.tx.send(Control::TakenOver(id.clone()));
                            }
                        } else if let Some(o) = owners.get(id) {
                            // Compared with the registration's seq, in the same numbering
                            // (an eviction this node did not number is after any of its
                            // registrations it still knows of).
                            let seq = shared.rt.own_seq(e.seq).unwrap_or(u64::MAX);
                            let _ = o.tx.send(Control::Evicted(id.clone(), seq));
                        }
                    }
                }
                SubscriptionItem::Lagged { last_seq } => since = Some(last_seq),
                SubscriptionItem::ResyncRequired { .. } => since = None,
                SubscriptionItem::Snapshot(_) => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Removes `conn`'s claim on `id`, never one another connection has taken since.
pub(super) fn release(owners: &mut HashMap<AgentId, Owner>, id: &AgentId, conn: u64) {
    if owners.get(id).is_some_and(|o| o.conn == conn) {
        owners.remove(id);
    }
}
