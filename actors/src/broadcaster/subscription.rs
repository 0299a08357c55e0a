//! What a subscriber holds: its filter and options, the items it receives, and the
//! [`Subscription`] stream (which tells the broadcaster when it is dropped).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::Stream;
use parking_lot::Mutex;
use ractor::ActorRef;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::BroadcastMsg;
use crate::model::{AgentId, AgentRecord, Event, EventKind, Status};

/// Which events a subscriber wants. An empty list means "any".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    /// Only events of these agents.
    #[serde(default)]
    pub ids: Vec<AgentId>,
    /// Only events of agents of these kinds.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Matches an event whose status before or after is one of these.
    #[serde(default)]
    pub statuses: Vec<Status>,
    /// Only events of these kinds.
    #[serde(default)]
    pub events: Vec<EventKind>,
}

impl Filter {
    /// Whether an event passes the filter. Fleet-wide events (no agent) fail a non-empty `ids`
    /// or `kinds`.
    pub fn matches(&self, e: &Event) -> bool {
        if !self.events.is_empty() && !self.events.contains(&e.body.kind()) {
            return false;
        }
        if !self.ids.is_empty() && !e.agent.as_ref().is_some_and(|a| self.ids.contains(a)) {
            return false;
        }
        if !self.kinds.is_empty()
            && !e
                .kind
                .as_ref()
                .is_some_and(|k| self.kinds.iter().any(|x| **x == **k))
        {
            return false;
        }
        if !self.statuses.is_empty() {
            let hit = |s: Option<Status>| s.is_some_and(|s| self.statuses.contains(&s));
            if !hit(e.body.status_after()) && !hit(e.body.status_before()) {
                return false;
            }
        }
        true
    }

    /// Whether an agent record belongs in a snapshot for this filter.
    pub fn matches_record(&self, r: &AgentRecord) -> bool {
        (self.ids.is_empty() || self.ids.contains(&r.id))
            && (self.kinds.is_empty() || self.kinds.iter().any(|x| **x == *r.kind))
            && (self.statuses.is_empty() || self.statuses.contains(&r.status))
    }
}

/// The state of the fleet as of event `seq`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The seq of the last event the snapshot includes.
    pub seq: u64,
    /// The agent records (those the subscription's filter matches).
    pub agents: Vec<AgentRecord>,
}

/// How a subscription starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscribeOptions {
    /// Which events to receive.
    pub filter: Filter,
    /// Replay every retained event with a seq greater than this, then go live.
    pub since: Option<u64>,
    /// First a snapshot of the state, then exactly the events after it.
    pub snapshot: bool,
}

/// One item of a subscription.
#[derive(Debug, Clone, PartialEq)]
pub enum SubscriptionItem {
    /// The state of the fleet; the first item, when a snapshot was asked for.
    Snapshot(Arc<Snapshot>),
    /// An event, in seq order.
    Event(Arc<Event>),
    /// The subscriber fell behind and the subscription ended; resume with `since: last_seq`.
    Lagged {
        /// Every event up to this seq was given or filtered out.
        last_seq: u64,
    },
    /// The requested history is no longer retained; ask for a snapshot. The subscription ended.
    ResyncRequired {
        /// The oldest seq still available.
        oldest: u64,
    },
}

#[derive(Debug, Default)]
pub(super) struct SubShared {
    /// The item that ends the subscription, delivered after everything queued.
    last: Mutex<Option<SubscriptionItem>>,
}

impl SubShared {
    pub(super) fn end_with(&self, item: SubscriptionItem) {
        *self.last.lock() = Some(item);
    }
}

/// A stream of [`SubscriptionItem`]s. Dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    pub(super) rx: mpsc::Receiver<SubscriptionItem>,
    pub(super) shared: Arc<SubShared>,
    /// Where to say it is gone: a subscriber is removed when its subscription is dropped,
    /// not only when an event for it finds its queue closed (a filter that never matches
    /// would otherwise keep it for ever).
    pub(super) owner: Option<(ActorRef<BroadcastMsg>, u64)>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some((broadcaster, id)) = self.owner.take() {
            let _ = broadcaster.cast(BroadcastMsg::Remove(id));
        }
    }
}

impl Subscription {
    /// The next item; `None` when the subscription has ended.
    pub async fn next(&mut self) -> Option<SubscriptionItem> {
        match self.rx.recv().await {
            Some(item) => Some(item),
            None => self.shared.last.lock().take(),
        }
    }
}

impl Stream for Subscription {
    type Item = SubscriptionItem;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(None) => Poll::Ready(self.shared.last.lock().take()),
            other => other,
        }
    }
}
