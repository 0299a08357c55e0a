//! BroadcasterActor: fans durable events out to subscribers.
//!
//! It owns its subscribers: an explicit list, each with a filter, a bounded queue and the seq
//! it needs next. Live events are offered with `try_send`; a full queue ends that subscription
//! with `lagged` (the last seq it was given) and never delays anyone else. A subscriber that
//! starts behind the head (`since`, or a snapshot older than the head) is served by a replay
//! task that reads the in-memory window or the store and waits for the subscriber's pace;
//! while it replays, live events skip that subscriber, and when the replay reaches the head it
//! joins the live stream at exactly the next seq. So every subscriber sees each event once, in
//! seq order, with no gap.

mod subscription;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
pub use subscription::{Filter, Snapshot, SubscribeOptions, Subscription, SubscriptionItem};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::model::Event;
use crate::store::Store;
use subscription::SubShared;

/// Where a new subscriber starts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Start {
    /// At the next event published.
    Live,
    /// At the event after this seq.
    After(u64),
}

/// Counters the broadcaster reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BroadcastStats {
    /// Subscribers now.
    pub subscribers: usize,
    /// Subscriptions ended since start because their subscriber fell behind.
    pub lagged_total: u64,
    /// The last seq published to subscribers (every event up to it is durable).
    pub published_seq: u64,
}

pub(crate) enum BroadcastMsg {
    Publish(Arc<[Arc<Event>]>),
    Add {
        start: Start,
        filter: Filter,
        snapshot: Option<Snapshot>,
        reply: RpcReplyPort<Subscription>,
    },
    /// A replay task reached `next` (or ended the subscription).
    Replayed {
        sub: u64,
        next: u64,
        ended: bool,
    },
    Stats(RpcReplyPort<BroadcastStats>),
    /// The subscription was dropped.
    Remove(u64),
}

pub(crate) struct BroadcasterArgs {
    pub store: Arc<dyn Store>,
    pub queue: usize,
    pub window: usize,
    pub published_seq: u64,
}

struct Sub {
    tx: mpsc::Sender<SubscriptionItem>,
    shared: Arc<SubShared>,
    filter: Arc<Filter>,
    next: u64,
    replaying: bool,
}

pub(crate) struct BroadcasterState {
    store: Arc<dyn Store>,
    queue: usize,
    window_cap: usize,
    window: VecDeque<Arc<Event>>,
    published: u64,
    subs: HashMap<u64, Sub>,
    /// Subscribers by the agent kinds their filter names, and those that name none: an
    /// event is offered only to the subscribers that could want it (with 1,000 monitors of
    /// one kind each, an event looks at a handful of filters, not 1,000).
    by_kind: HashMap<Arc<str>, Vec<u64>>,
    any_kind: Vec<u64>,
    next_sub: u64,
    lagged_total: u64,
}

pub(crate) struct BroadcasterActor;

/// Events a replay task reads from the store at a time.
const REPLAY_CHUNK: usize = 1024;

impl Actor for BroadcasterActor {
    type Msg = BroadcastMsg;
    type State = BroadcasterState;
    type Arguments = BroadcasterArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: BroadcasterArgs,
    ) -> Result<BroadcasterState, ActorProcessingErr> {
        Ok(BroadcasterState {
            store: args.store,
            queue: args.queue.max(1),
            window_cap: args.window.max(1),
            window: VecDeque::new(),
            published: args.published_seq,
            subs: HashMap::new(),
            by_kind: HashMap::new(),
            any_kind: Vec::new(),
            next_sub: 0,
            lagged_total: 0,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: BroadcastMsg,
        st: &mut BroadcasterState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            BroadcastMsg::Publish(batch) => st.publish(&batch),
            BroadcastMsg::Add {
                start,
                filter,
                snapshot,
                reply,
            } => {
                let (tx, rx) = mpsc::channel(st.queue);
                let shared = Arc::new(SubShared::default());
                // A `since` beyond every published seq comes from another log (a store that
                // was replaced): waiting for that seq would show nothing until the log got
                // there, so the subscriber is told to start again from a snapshot.
                if let (Start::After(seq), None) = (start, &snapshot) {
                    if seq > st.published {
                        let oldest = st.window.front().map_or(st.published + 1, |e| e.seq);
                        shared.end_with(SubscriptionItem::ResyncRequired { oldest });
                        drop(tx);
                        let _ = reply.send(Subscription {
                            rx,
                            shared,
                            owner: None,
                        });
                        return Ok(());
                    }
                }
                let next = match start {
                    Start::Live => st.published + 1,
                    Start::After(seq) => seq + 1,
                };
                if let Some(s) = snapshot {
                    // The queue is empty and has room for at least one item.
                    let _ = tx.try_send(SubscriptionItem::Snapshot(Arc::new(s)));
                }
                st.next_sub += 1;
                let id = st.next_sub;
                st.index(id, &filter);
                st.subs.insert(
                    id,
                    Sub {
                        tx,
                        shared: shared.clone(),
                        filter: Arc::new(filter),
                        next,
                        replaying: false,
                    },
                );
                let sub = Subscription {
                    rx,
                    shared,
                    owner: Some((myself.clone(), id)),
                };
                if reply.send(sub).is_err() {
                    st.remove(id);
                    return Ok(());
                }
                st.catch_up(id, &myself);
            }
            BroadcastMsg::Replayed { sub, next, ended } => {
                if ended {
                    st.remove(sub);
                } else if let Some(s) = st.subs.get_mut(&sub) {
                    s.next = next;
                    s.replaying = false;
                    st.catch_up(sub, &myself);
                }
            }
            BroadcastMsg::Remove(id) => st.remove(id),
            BroadcastMsg::Stats(reply) => {
                let _ = reply.send(BroadcastStats {
                    subscribers: st.subs.len(),
                    lagged_total: st.lagged_total,
                    published_seq: st.published,
                });
            }
        }
        Ok(())
    }
}

impl BroadcasterState {
    fn publish(&mut self, batch: &[Arc<Event>]) {
        let Some(last) = batch.last() else { return };
        for e in batch {
            self.window.push_back(e.clone());
        }
        while self.window.len() > self.window_cap {
            self.window.pop_front();
        }
        self.published = last.seq;
        // A live subscriber is owed every matching event from its `next` on; its `next` is
        // not advanced here (it only matters until the subscriber is live: a replay's end, or
        // a start after the head).
        let mut gone = Vec::new();
        for e in batch {
            let of_kind = e.kind.as_ref().and_then(|k| self.by_kind.get(&**k));
            for id in self.any_kind.iter().chain(of_kind.into_iter().flatten()) {
                let Some(sub) = self.subs.get_mut(id) else {
                    continue;
                };
                if sub.replaying || e.seq < sub.next || !sub.filter.matches(e) {
                    continue;
                }
                match sub.tx.try_send(SubscriptionItem::Event(e.clone())) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        // Everything before this event was given (or filtered out).
                        let last_seq = e.seq - 1;
                        sub.shared.end_with(SubscriptionItem::Lagged { last_seq });
                        debug!(subscriber = id, last_seq, "subscriber lagged");
                        self.lagged_total += 1;
                        // Offered nothing more: it is out of `subs` from here on.
                        self.subs.remove(id);
                        gone.push(*id);
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        self.subs.remove(id);
                        gone.push(*id);
                    }
                }
            }
        }
        for id in gone {
            self.remove(id);
        }
    }

    /// Files a new subscriber under the kinds its filter names.
    fn index(&mut self, id: u64, filter: &Filter) {
        if filter.kinds.is_empty() {
            self.any_kind.push(id);
        }
        for k in &filter.kinds {
            let list = self.by_kind.entry(Arc::from(k.as_str())).or_default();
            if !list.contains(&id) {
                list.push(id);
            }
        }
    }

    /// Forgets a subscriber (its queue's sender goes with it).
    fn remove(&mut self, id: u64) {
        let filter = match self.subs.remove(&id) {
            Some(sub) => Some(sub.filter),
            None => None,
        };
        match filter {
            Some(f) if !f.kinds.is_empty() => {
                for k in &f.kinds {
                    if let Some(list) = self.by_kind.get_mut(k.as_str()) {
                        list.retain(|x| *x != id);
                        if list.is_empty() {
                            self.by_kind.remove(k.as_str());
                        }
                    }
                }
            }
            Some(_) => self.any_kind.retain(|x| *x != id),
            // Already out of `subs`: clear it from every list.
            None => {
                self.any_kind.retain(|x| *x != id);
                self.by_kind.retain(|_, list| {
                    list.retain(|x| *x != id);
                    !list.is_empty()
                });
            }
        }
    }

    /// Brings a subscriber that is behind the head up to it, through a replay task.
    fn catch_up(&mut self, id: u64, myself: &ActorRef<BroadcastMsg>) {
        let Some(sub) = self.subs.get_mut(&id) else {
            return;
        };
        if sub.next > self.published {
            return; // already at the head: live from here
        }
        let front = self.window.front().map(|e| e.seq);
        let source = match front {
            Some(front) if sub.next >= front => {
                let skip = (sub.next - front) as usize;
                Replay::Window(self.window.iter().skip(skip).cloned().collect())
            }
            _ => Replay::Store {
                store: self.store.clone(),
                upto: front.map_or(self.published, |f| f - 1),
            },
        };
        sub.replaying = true;
        let task = ReplayTask {
            sub: id,
            next: sub.next,
            tx: sub.tx.clone(),
            shared: sub.shared.clone(),
            filter: sub.filter.clone(),
            myself: myself.clone(),
        };
        tokio::spawn(task.run(source));
    }
}

enum Replay {
    Window(Vec<Arc<Event>>),
    Store { store: Arc<dyn Store>, upto: u64 },
}

struct ReplayTask {
    sub: u64,
    next: u64,
    tx: mpsc::Sender<SubscriptionItem>,
    shared: Arc<SubShared>,
    filter: Arc<Filter>,
    myself: ActorRef<BroadcastMsg>,
}

impl ReplayTask {
    async fn run(mut self, source: Replay) {
        let ended = match source {
            Replay::Window(events) => !self.send_all(events).await,
            Replay::Store { store, upto } => !self.replay_store(&*store, upto).await,
        };
        let msg = BroadcastMsg::Replayed {
            sub: self.sub,
            next: self.next,
            ended,
        };
        if self.myself.cast(msg).is_err() {
            debug!("broadcaster gone during replay");
        }
    }

    /// Sends events in order, waiting for room; false when the subscriber is gone.
    async fn send_all(&mut self, events: Vec<Arc<Event>>) -> bool {
        for e in events {
            if e.seq < self.next {
                continue;
            }
            if self.filter.matches(&e)
                && self
                    .tx
                    .send(SubscriptionItem::Event(e.clone()))
                    .await
                    .is_err()
            {
                return false;
            }
            self.next = e.seq + 1;
        }
        true
    }

    async fn replay_store(&mut self, store: &dyn Store, upto: u64) -> bool {
        while self.next <= upto {
            let want = ((upto - self.next + 1) as usize).min(REPLAY_CHUNK);
            let events = match store.read_events(self.next, want).await {
                Ok(events) => events,
                Err(e) => {
                    warn!(error = %e, "history read failed; subscriber must resync");
                    self.shared
                        .end_with(SubscriptionItem::ResyncRequired { oldest: self.next });
                    return false;
                }
            };
            match events.first() {
                Some(first) if first.seq == self.next => {}
                first => {
                    let oldest = match first {
                        Some(f) => f.seq,
                        None => store.oldest_seq().await.ok().flatten().unwrap_or(upto + 1),
                    };
                    self.shared
                        .end_with(SubscriptionItem::ResyncRequired { oldest });
                    return false;
                }
            }
            let events: Vec<_> = events
                .into_iter()
                .filter(|e| e.seq <= upto)
                .map(Arc::new)
                .collect();
            if !self.send_all(events).await {
                return false;
            }
        }
        true
    }
}
