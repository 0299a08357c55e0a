//! Which agents are held, and by what: the one table both listeners claim agents in, so one
//! rule decides who may register, beat, report for or deregister an agent
//! (`docs/protocol.md`, "Agent role"):
//!
//! - A live TCP connection holds each agent it registered, until it deregisters it, closes,
//!   or loses it (an operator's eviction, a takeover). Anyone else's registration of it is a
//!   `conflict` unless it asks for `takeover`; then the connection is told (`evicted`
//!   `taken_over`). Anyone else's beat, report or deregistration of it is refused.
//! - An agent registered over HTTP (a cron job, a function) is held by no connection. The
//!   table keeps its handle, so that its beats reach its actor without a lookup; any
//!   registration, over TCP or HTTP, takes it without `takeover`.
//!
//! A watcher follows the event log: the connection that holds an evicted agent is told, an
//! evicted agent's HTTP handle is dropped, and on a cluster node the holder of an agent that
//! another node took over is told or dropped likewise.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::mpsc;
use vigil_actors::{
    AgentHandle, AgentId, EventBody, EventKind, Filter, Reason, Runtime, RuntimeError,
    SubscribeOptions, SubscriptionItem,
};

/// Messages to a connection from elsewhere. Never dropped, so the channel has no bound; what
/// it can hold is bounded all the same: each notice is about an agent the connection holds,
/// and the holder changes with it (a takeover names the new holder; an evicted agent must
/// register again, by another takeover, before it can be evicted again).
pub(crate) enum Control {
    /// Another connection, or an HTTP registration, took this agent over.
    TakenOver(AgentId),
    /// An operator evicted this agent (the seq of the eviction).
    Evicted(AgentId, u64),
}

/// A TCP connection as a holder: its number and where its notices go.
#[derive(Clone)]
pub(crate) struct Conn {
    pub(crate) id: u64,
    pub(crate) tx: mpsc::UnboundedSender<Control>,
}

/// What holds an agent.
enum Holder {
    /// A live TCP connection.
    Connection(Conn),
    /// No connection: the agent registered over HTTP (or was beaten over HTTP since this
    /// process started). The handle its beats go through.
    Http(AgentHandle),
}

/// Who registers an agent.
pub(crate) enum Claimant<'a> {
    /// A TCP connection.
    Connection(&'a Conn),
    /// An HTTP request: holds no connection.
    Http,
}

/// A registration refused: a live connection holds the agent (`conflict`).
#[derive(Debug)]
pub(crate) struct Held;

/// Why an agent's handle cannot be had over HTTP.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Unavailable {
    /// A live connection holds it.
    Held,
    /// This process supervises no such agent (never registered, or it left).
    Unknown,
}

/// The table of holders, and the watcher that tells them of evictions.
pub(crate) struct Owners {
    map: Arc<Mutex<HashMap<AgentId, Holder>>>,
    watcher: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Owners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Owners")
            .field("held", &self.map.lock().len())
            .finish()
    }
}

impl Drop for Owners {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

impl Owners {
    /// An empty table for `rt`, with its watcher (which holds the runtime only while it acts).
    pub(crate) fn new(rt: &Arc<Runtime>) -> Self {
        let map = Arc::new(Mutex::new(HashMap::new()));
        let watcher = tokio::spawn(tell_evicted(Arc::downgrade(rt), map.clone()));
        Self { map, watcher }
    }

    /// Claims `id` for a registration by `by`. Refused when another live connection holds it
    /// and `takeover` is false; otherwise the connection that held it (if any) is told it was
    /// taken over. A connection holds the agent from now on; an HTTP registration leaves it
    /// to [`Owners::registered_over_http`].
    pub(crate) fn claim(&self, id: &AgentId, by: Claimant, takeover: bool) -> Result<(), Held> {
        let mut map = self.map.lock();
        let held_by = match map.get(id) {
            Some(Holder::Connection(c)) => Some(c.id),
            _ => None,
        };
        let me = match &by {
            Claimant::Connection(c) => Some(c.id),
            Claimant::Http => None,
        };
        if held_by.is_some() && held_by != me && !takeover {
            return Err(Held);
        }
        let previous = match by {
            Claimant::Connection(c) => map.insert(id.clone(), Holder::Connection(c.clone())),
            Claimant::Http => map.remove(id),
        };
        if let Some(Holder::Connection(old)) = previous.filter(|_| held_by != me) {
            let _ = old.tx.send(Control::TakenOver(id.clone()));
        }
        Ok(())
    }

    /// An HTTP registration of `id` was taken: its handle serves the agent's beats, unless a
    /// connection registered the agent meanwhile (that connection holds it).
    pub(crate) fn registered_over_http(&self, handle: AgentHandle) {
        let mut map = self.map.lock();
        if !matches!(map.get(handle.id()), Some(Holder::Connection(_))) {
            map.insert(handle.id().clone(), Holder::Http(handle));
        }
    }

    /// The handle an HTTP beat or report of `id` goes through: the one its HTTP registration
    /// left, or (after a restart, after a connection that held it closed, or a registration
    /// since) the runtime's current one, kept from now on. A handle whose agent has left
    /// since refuses the beat (`NotSupervised`): the caller then drops it
    /// ([`Owners::forget_http`]).
    pub(crate) fn over_http(&self, rt: &Runtime, id: &AgentId) -> Result<AgentHandle, Unavailable> {
        let mut map = self.map.lock();
        match map.get(id) {
            Some(Holder::Connection(_)) => return Err(Unavailable::Held),
            Some(Holder::Http(h)) if h.is_current() => return Ok(h.clone()),
            _ => {}
        }
        match rt.agent(id) {
            Some(h) => {
                map.insert(id.clone(), Holder::Http(h.clone()));
                Ok(h)
            }
            None => {
                map.remove(id);
                Err(Unavailable::Unknown)
            }
        }
    }

    /// Drops `id`'s HTTP handle (the agent left); a connection's claim stays.
    pub(crate) fn forget_http(&self, id: &AgentId) {
        let mut map = self.map.lock();
        if matches!(map.get(id), Some(Holder::Http(_))) {
            map.remove(id);
        }
    }

    /// Whether a live connection holds `id`.
    pub(crate) fn held(&self, id: &str) -> bool {
        matches!(self.map.lock().get(id), Some(Holder::Connection(_)))
    }

    /// Removes connection `conn`'s claim on `id`, never one another holder has taken since.
    pub(crate) fn release(&self, id: &AgentId, conn: u64) {
        release(&mut self.map.lock(), id, conn);
    }

    /// Connection `conn` closed: releases its claims on `owned`, calling `held` with each
    /// agent it still held (not taken over meanwhile, whether or not the notice came).
    pub(crate) fn release_all(
        &self,
        conn: u64,
        owned: impl Iterator<Item = (AgentId, AgentHandle)>,
        mut held: impl FnMut(&AgentHandle),
    ) {
        let mut map = self.map.lock();
        for (id, handle) in owned {
            if matches!(map.get(&id), Some(Holder::Connection(c)) if c.id == conn) {
                held(&handle);
            }
            release(&mut map, &id, conn);
        }
    }
}

fn release(map: &mut HashMap<AgentId, Holder>, id: &AgentId, conn: u64) {
    if matches!(map.get(id), Some(Holder::Connection(c)) if c.id == conn) {
        map.remove(id);
    }
}

/// Tells the holders of evicted agents (a connection gets the `evicted` frame, an HTTP handle
/// is dropped), and, on a cluster node, of agents another node took over (their `registered`
/// event came from there).
async fn tell_evicted(rt: Weak<Runtime>, map: Arc<Mutex<HashMap<AgentId, Holder>>>) {
    let Some(me) = rt.upgrade().map(|rt| rt.node_id().map(str::to_string)) else {
        return;
    };
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
        let Some(runtime) = rt.upgrade() else { return };
        let subscribed = runtime.subscribe(opts).await;
        drop(runtime);
        let mut sub = match subscribed {
            Ok(sub) => sub,
            // The store is failing: no eviction can be durable meanwhile; try again.
            Err(RuntimeError::Overloaded(_)) => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(_) => return, // the runtime is stopping
        };
        while let Some(item) = sub.next().await {
            let e = match item {
                SubscriptionItem::Event(e) => e,
                SubscriptionItem::Lagged { last_seq } => {
                    since = Some(last_seq);
                    continue;
                }
                SubscriptionItem::ResyncRequired { .. } => {
                    since = None;
                    continue;
                }
                SubscriptionItem::Snapshot(_) => continue,
            };
            since = Some(e.seq);
            let Some(id) = &e.agent else { continue };
            let Some(runtime) = rt.upgrade() else { return };
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
                && runtime.owned_elsewhere(id).is_some();
            // Compared with the registration's seq, in the same numbering (an eviction this
            // node did not number is after any of its registrations it still knows of).
            let seq = runtime.own_seq(e.seq).unwrap_or(u64::MAX);
            drop(runtime);
            let mut map = map.lock();
            match map.get(id) {
                Some(Holder::Connection(c)) if elsewhere => {
                    let _ = c.tx.send(Control::TakenOver(id.clone()));
                    map.remove(id);
                }
                Some(Holder::Connection(c)) if evicted => {
                    let _ = c.tx.send(Control::Evicted(id.clone(), seq));
                }
                Some(Holder::Http(h)) if elsewhere || (evicted && h.registered_seq() < seq) => {
                    map.remove(id);
                }
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_actors::{MemStore, Registration, RuntimeConfig};

    fn conn(id: u64) -> (Conn, mpsc::UnboundedReceiver<Control>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Conn { id, tx }, rx)
    }

    #[tokio::test]
    async fn only_a_live_connection_makes_a_conflict_and_a_takeover_tells_it() {
        let rt = Arc::new(
            Runtime::start(RuntimeConfig::default(), MemStore::new())
                .await
                .unwrap(),
        );
        let owners = Owners::new(&rt);
        let id = AgentId::new("a").unwrap();
        let (one, mut one_rx) = conn(1);
        let (two, _two_rx) = conn(2);
        owners
            .claim(&id, Claimant::Connection(&one), false)
            .unwrap();
        assert!(owners.held(id.as_str()));
        // The same connection again: no conflict, no notice.
        owners
            .claim(&id, Claimant::Connection(&one), false)
            .unwrap();
        assert!(one_rx.try_recv().is_err());
        assert!(owners
            .claim(&id, Claimant::Connection(&two), false)
            .is_err());
        assert!(owners.claim(&id, Claimant::Http, false).is_err());
        assert_eq!(owners.over_http(&rt, &id).err(), Some(Unavailable::Held));
        // HTTP takes it over: the connection is told, and no longer holds it.
        owners.claim(&id, Claimant::Http, true).unwrap();
        assert!(matches!(one_rx.try_recv(), Ok(Control::TakenOver(x)) if x == id));
        assert!(!owners.held(id.as_str()));
        // Not supervised: nothing to beat.
        assert_eq!(owners.over_http(&rt, &id).err(), Some(Unavailable::Unknown));
        let reg = Registration {
            connectionless: true,
            ..Registration::new(id.clone())
        };
        let handle = rt.register(reg).await.unwrap();
        owners.registered_over_http(handle.clone());
        assert_eq!(owners.over_http(&rt, &id).unwrap().incarnation(), 1);
        // A connection registers it without takeover (nothing holds it), and holds it.
        owners
            .claim(&id, Claimant::Connection(&two), false)
            .unwrap();
        assert!(owners.held(id.as_str()));
        // A late HTTP registration does not take it from that connection.
        owners.registered_over_http(handle);
        assert!(owners.held(id.as_str()));
        owners.release(&id, 1); // not the holder: nothing changes
        assert!(owners.held(id.as_str()));
        owners.release(&id, 2);
        assert!(!owners.held(id.as_str()));
        drop(owners);
        rt.shutdown_shared().await.unwrap();
    }
}
