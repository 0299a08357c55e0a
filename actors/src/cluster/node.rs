//! [`Node`]: what a cluster node serves from the shared log — the whole fleet's view, kept by
//! the log's tail, and the one stream its subscribers get.
//!
//! The tail task applies each batch of the shared log to the view and publishes it to the
//! broadcaster, under the view's write lock. A snapshot is taken under the read lock and its
//! subscriber is added to the broadcaster before the lock is let go, so it is followed by
//! exactly the events after the snapshot's seq: the broadcaster's mailbox receives the publish
//! of every event up to that seq before the subscriber, and every later one after it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use ractor::{ActorRef, RpcReplyPort};

use super::{FleetRow, FleetView};
use crate::broadcaster::{BroadcastMsg, Snapshot, Start, SubscribeOptions, Subscription};
use crate::model::{AgentId, AgentRecord, Event, EventBody, Status};
use crate::registry::RegistryStats;
use crate::store::StoreError;

/// This node's registrations that landed in the shared log and that the view has not
/// applied yet (by agent, the seq of the newest). With the view, they say whether a takeover
/// by another node that the tail just read is older than this node's own newest registration
/// of the agent: then the agent stays here.
///
/// It also keeps, for this node's newest events in the shared log, the seq its registry gave
/// each (its own numbering): what a registration's seq is compared with.
#[derive(Debug, Default)]
pub(crate) struct Claims {
    recent: Mutex<HashMap<AgentId, u64>>,
    applied: AtomicU64,
    /// (shared seq, this node's seq) of its newest events, oldest first.
    own_seqs: Mutex<std::collections::VecDeque<(u64, u64)>>,
}

/// This node's events whose own seqs [`Claims`] keeps.
const OWN_SEQS: usize = 100_000;

impl Claims {
    /// Notes this node's registrations among `events`, just written to the shared log.
    #[cfg_attr(not(feature = "surreal"), allow(dead_code))]
    pub(crate) fn landed(&self, events: &[Arc<Event>]) {
        let mut recent = self.recent.lock();
        let applied = self.applied.load(Ordering::SeqCst);
        for e in events {
            if let (Some(id), EventBody::Registered { .. }) = (&e.agent, &e.body) {
                if e.seq > applied {
                    recent.insert(id.clone(), e.seq);
                }
            }
        }
    }

    /// Notes the seqs this node's registry gave its events (`local`, in order) that the
    /// shared log holds as `stored` (in the same order; events of agents another node owned
    /// were left out, and are not in `local`).
    #[cfg_attr(not(feature = "surreal"), allow(dead_code))]
    pub(crate) fn numbered(&self, local: &[u64], stored: &[Arc<Event>]) {
        let mut own = self.own_seqs.lock();
        own.extend(stored.iter().map(|e| e.seq).zip(local.iter().copied()));
        let over = own.len().saturating_sub(OWN_SEQS);
        own.drain(..over);
    }

    /// The seq this node's registry gave its event at `shared` in the shared log, if it is
    /// among the newest this node keeps.
    pub(crate) fn local_seq(&self, shared: u64) -> Option<u64> {
        let own = self.own_seqs.lock();
        let i = own.partition_point(|(s, _)| *s < shared);
        own.get(i).filter(|(s, _)| *s == shared).map(|(_, l)| *l)
    }

    /// Whether this node registered `id` after seq `seq` (as far as the view has not caught
    /// up with it).
    fn after(&self, id: &AgentId, seq: u64) -> bool {
        self.recent.lock().get(id).is_some_and(|s| *s > seq)
    }

    /// The view applied every event up to `seq`: what it holds needs no claim.
    fn applied(&self, seq: u64) {
        let mut recent = self.recent.lock();
        self.applied.store(seq, Ordering::SeqCst);
        recent.retain(|_, s| *s > seq);
    }
}

/// What a cluster node's runtime starts from: the fleet's view, and the claims its log and
/// its view share.
pub(crate) struct ClusterStart {
    pub(crate) view: FleetView,
    pub(crate) claims: Arc<Claims>,
}

/// What a batch of the shared log means for this node's supervision.
#[derive(Debug, Default)]
#[cfg_attr(not(feature = "surreal"), allow(dead_code))]
pub(crate) struct Applied {
    /// Agents this node owned that another node registered since (with the seq of that
    /// registration): candidates to stop supervising here (see [`Node::keeps`]).
    pub(crate) lost: Vec<(AgentId, u64)>,
    /// Agents of a dead node this node adopted: to supervise from here on, as after a restart.
    pub(crate) adopted: Vec<AgentRecord>,
}

/// A cluster node's view of the fleet and its publishing.
pub(crate) struct Node {
    me: Arc<str>,
    /// The other nodes' addresses, as their leases advertise them.
    addresses: Mutex<HashMap<String, String>>,
    /// The other nodes whose leases lapsed, as this node's watch judges them.
    dead: Mutex<Vec<String>>,
    /// The node that keeps the checkpoint and delivers the sinks, as last seen.
    keeper: Mutex<Option<Arc<str>>>,
    view: RwLock<FleetView>,
    claims: Arc<Claims>,
    broadcaster: ActorRef<BroadcastMsg>,
}

impl Node {
    pub(crate) fn new(
        me: Arc<str>,
        start: ClusterStart,
        broadcaster: ActorRef<BroadcastMsg>,
    ) -> Self {
        start.claims.applied(start.view.seq());
        Self {
            me,
            addresses: Mutex::default(),
            dead: Mutex::default(),
            keeper: Mutex::default(),
            view: RwLock::new(start.view),
            claims: start.claims,
            broadcaster,
        }
    }

    /// This node's id.
    pub(crate) fn me(&self) -> &Arc<str> {
        &self.me
    }

    /// Applies the next events of the shared log to the view and publishes them; returns what
    /// they mean for this node's supervision. Events that do not continue the view are
    /// refused, and nothing is published.
    #[cfg_attr(not(feature = "surreal"), allow(dead_code))]
    pub(crate) fn apply(&self, events: Vec<Event>) -> Result<Applied, StoreError> {
        let mut view = self.view.write();
        for (want, e) in (view.seq() + 1..).zip(&events) {
            if e.seq != want {
                return Err(StoreError::Read(format!(
                    "the shared log's events do not continue the view: seq {want} expected, {} found",
                    e.seq
                )));
            }
        }
        let mut lost = Vec::new();
        let mut adopted = Vec::new();
        let batch: Arc<[Arc<Event>]> = events.into_iter().map(Arc::new).collect();
        for e in batch.iter() {
            if let (
                EventBody::Alert {
                    adopted: Some(dead),
                    ..
                },
                Some(by),
            ) = (&e.body, &e.node)
            {
                if *by == self.me {
                    adopted.extend(
                        view.owned_by(dead)
                            .filter(|r| r.status != Status::Left)
                            .cloned(),
                    );
                }
            }
            if let (Some(id), EventBody::Registered { .. }) = (&e.agent, &e.body) {
                let mine = view.owner(id).is_some_and(|o| *o == self.me);
                if mine && e.node.as_ref() != Some(&self.me) {
                    lost.push((id.clone(), e.seq));
                }
            }
            // Checked above: each event is the next.
            let _ = view.apply(e);
        }
        // Registered here again later in the batch: still this node's; registered elsewhere
        // since the adoption: not this node's.
        lost.retain(|(id, _)| view.owner(id).is_none_or(|o| *o != self.me));
        adopted.retain(|r| view.owner(&r.id).is_some_and(|o| *o == self.me));
        self.claims.applied(view.seq());
        if !batch.is_empty() {
            let _ = self.broadcaster.cast(BroadcastMsg::Publish(batch));
        }
        Ok(Applied { lost, adopted })
    }

    /// The seq this node's registry gave its own event at `shared` in the shared log (what
    /// its agents' registrations carry), if it is among its newest.
    pub(crate) fn local_seq(&self, shared: u64) -> Option<u64> {
        self.claims.local_seq(shared)
    }

    /// Where node `node` takes connections, as far as this node knows.
    pub(crate) fn address(&self, node: &str) -> Option<String> {
        self.addresses.lock().get(node).cloned()
    }

    /// The nodes' addresses as their leases say now.
    #[cfg_attr(not(feature = "surreal"), allow(dead_code))]
    pub(crate) fn set_addresses(&self, addresses: HashMap<String, String>) {
        *self.addresses.lock() = addresses;
    }

    /// The nodes whose leases lapsed, as this node's watch judged them last.
    #[cfg_attr(not(feature = "surreal"), allow(dead_code))]
    pub(crate) fn set_dead(&self, dead: Vec<String>) {
        *self.dead.lock() = dead;
    }

    /// The other nodes with an address that are not dead to this one, by id.
    pub(crate) fn live_peers(&self) -> Vec<String> {
        let dead = self.dead.lock().clone();
        let mut peers: Vec<String> = self
            .addresses
            .lock()
            .keys()
            .filter(|n| **n != *self.me && !dead.contains(n))
            .cloned()
            .collect();
        peers.sort();
        peers
    }

    /// The nodes dead to this one.
    #[cfg_attr(not(feature = "surreal"), allow(dead_code))]
    pub(crate) fn dead(&self) -> Vec<String> {
        self.dead.lock().clone()
    }

    /// What a checkpoint of the view after the one as of `since` writes: the view's seq, and
    /// the rows of the agents changed after `since`, or of every agent when `full` says so
    /// (given how many changed and the fleet's size; the answer comes last).
    #[cfg_attr(not(feature = "surreal"), allow(dead_code))]
    pub(crate) fn checkpoint_rows(
        &self,
        since: u64,
        full: impl FnOnce(usize, usize) -> bool,
    ) -> (u64, Vec<FleetRow>, bool) {
        let view = self.view.read();
        let rows = view.rows_changed_after(Some(since));
        match full(rows.len(), view.len()) {
            true => (view.seq(), view.rows_changed_after(None), true),
            false => (view.seq(), rows, false),
        }
    }

    /// The node that keeps the fleet's checkpoint and delivers the sinks, as last seen (every
    /// quarter lease).
    pub(crate) fn keeper(&self) -> Option<Arc<str>> {
        self.keeper.lock().clone()
    }

    #[cfg_attr(not(feature = "surreal"), allow(dead_code))]
    pub(crate) fn set_keeper(&self, keeper: Option<Arc<str>>) {
        *self.keeper.lock() = keeper;
    }

    /// Drops from the view the agents that left before `cutoff`; returns how many.
    #[cfg_attr(not(feature = "surreal"), allow(dead_code))]
    pub(crate) fn purge_left(&self, cutoff: chrono::DateTime<chrono::Utc>) -> usize {
        self.view.write().purge_left(cutoff)
    }

    /// How many agents `node` owns that have not left.
    #[cfg_attr(not(feature = "surreal"), allow(dead_code))]
    pub(crate) fn live_agents_of(&self, node: &str) -> usize {
        let view = self.view.read();
        view.owned_by(node)
            .filter(|r| r.status != Status::Left)
            .count()
    }

    /// Whether agent `id`, registered by another node at seq `taken`, stays with this node
    /// all the same: this node registered it again after that (the view shows it, or will).
    pub(crate) fn keeps(&self, id: &AgentId, taken: u64) -> bool {
        let view = self.view.read();
        view.owner(id).is_some_and(|o| *o == self.me) || self.claims.after(id, taken)
    }

    /// Adds a subscriber: with a snapshot of the view (the whole fleet), followed by exactly
    /// the events after it; or from `since`, or live.
    pub(crate) fn subscribe(&self, opts: SubscribeOptions, reply: RpcReplyPort<Subscription>) {
        let view = self.view.read();
        let (start, snapshot) = if opts.snapshot {
            let agents = view
                .agents()
                .filter(|r| opts.filter.matches_record(r))
                .cloned()
                .collect();
            let seq = view.seq();
            (Start::After(seq), Some(Snapshot { seq, agents }))
        } else {
            match opts.since {
                Some(n) => (Start::After(n), None),
                None => (Start::Live, None),
            }
        };
        // Cast under the lock: no publish can come between the snapshot and the subscriber.
        let _ = self.broadcaster.cast(BroadcastMsg::Add {
            start,
            filter: opts.filter,
            snapshot,
            reply,
        });
    }

    /// One agent's record, as the log says.
    pub(crate) fn record(&self, id: &AgentId) -> Option<AgentRecord> {
        self.view.read().get(id).cloned()
    }

    /// The node that owns `id`, when it is not this one and the agent has not left.
    pub(crate) fn owned_elsewhere(&self, id: &AgentId) -> Option<Arc<str>> {
        let view = self.view.read();
        let left = view.get(id).is_none_or(|r| r.status == Status::Left);
        view.owner(id).filter(|o| **o != self.me && !left).cloned()
    }

    /// Records in id order after `after`, of `kind` and in `status` when given, at most
    /// `limit`.
    pub(crate) fn list(
        &self,
        kind: Option<&str>,
        status: Option<Status>,
        limit: usize,
        after: Option<&AgentId>,
    ) -> Vec<AgentRecord> {
        let view = self.view.read();
        view.agents()
            .filter(|r| after.is_none_or(|a| r.id > *a))
            .filter(|r| kind.is_none_or(|k| *r.kind == *k))
            .filter(|r| status.is_none_or(|s| r.status == s))
            .take(limit)
            .cloned()
            .collect()
    }

    /// `local` (this node's registry) with the fleet's counts and the published seq.
    pub(crate) fn fleet_stats(&self, mut local: RegistryStats) -> RegistryStats {
        let view = self.view.read();
        let counts = view.counts();
        local.agents = Status::ALL
            .iter()
            .map(|s| (*s, counts.get(s).copied().unwrap_or(0)))
            .collect();
        local.total = view.len();
        local.jobs = view.job_counts();
        local.by_kind = view
            .by_kind()
            .iter()
            .map(|(k, c)| (k.to_string(), c.clone()))
            .collect();
        local.last_seq = view.seq();
        local.durable_seq = view.seq();
        local
    }
}
