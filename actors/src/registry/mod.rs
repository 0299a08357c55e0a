//! RegistryActor: the sequencer and the single writer to the store.
//!
//! Every change (registration, transition, departure, alert) arrives here as a message. The
//! registry gives it the next `seq`, applies it to the live view of agents it holds in memory,
//! and queues it. One write runs at a time, off the actor (so the actor keeps sequencing while
//! the store works): the events queued meanwhile form the next batch (group commit, at most
//! `max_batch` events). Only when a batch is durable is it handed to the broadcaster (durable
//! before visible). A failed write is retried with backoff and nothing is published until it
//! succeeds; supervision goes on in memory meanwhile.
//!
//! Checkpoints of the live view go through the same one-at-a-time pipeline, after the batches
//! before them, so a checkpoint never reflects an event that is not durable. A periodic
//! checkpoint writes only the agents changed since the last one; when those incremental
//! records outnumber the agents, the next checkpoint is full (it replaces them all), so a
//! restore reads at most about twice the fleet. The store's queryable copy of the agents (the
//! mirror) is refreshed in small chunks when the pipeline is otherwise idle, so a large
//! refresh never delays an event's durability by more than one chunk.
//!
//! The mass-failure guard ([`MassOffline`]) sits here too: each offline transition is counted
//! as it is sequenced, and a `mass_offline` alert is sequenced right after the transition that
//! makes the failure massive. Every transition is still sequenced and published.

mod actor;
mod answers;
mod sequence;
mod view;
mod writes;

pub(crate) mod durable;
mod handle;
pub(crate) mod intake;
pub(crate) mod pipeline;
#[cfg(test)]
mod pipeline_props;
pub(crate) mod stats;

use std::collections::VecDeque;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ractor::{ActorRef, RpcReplyPort};

use crate::admin::{AdminError, AdminResponse};
use crate::agent::cell::AgentCell;
use crate::broadcaster::{BroadcastMsg, Filter, Snapshot, SubscribeOptions, Subscription};
use crate::clock::Clock;
use crate::cluster::node::Node;
use crate::model::{
    AgentId, AgentRecord, Event, EventBody, EventKind, JobReport, Registration, Status,
};
use crate::registry::durable::{Backpressure, Waiter};
use crate::registry::intake::Ticket;
use crate::registry::pipeline::Pipeline;
use crate::rules::health::MassOffline;
use crate::rules::jobs::JobBook;
use crate::store::{Retention, Store, StoreError};

pub(crate) use actor::RegistryActor;
pub(crate) use handle::RegistryHandle;
pub use stats::{LatencyHistogram, RegistryStats};

/// A change to sequence, from an agent actor or the runtime.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub agent: Option<AgentId>,
    pub at: DateTime<Utc>,
    pub body: EventBody,
}

/// What a registration gives back to the agent actor.
#[derive(Debug, Clone)]
pub(crate) struct RegisterReply {
    pub incarnation: u64,
    /// The seq of its `registered` event (see [`RegistryMsg::WhenDurable`]).
    pub seq: u64,
}

/// What an agent reports besides its heartbeats.
#[derive(Debug)]
pub(crate) enum Report {
    /// Its activity (`idle`, `working`, ...), with an optional detail.
    Activity {
        /// The activity's name.
        activity: String,
        /// Free text about it.
        detail: Option<String>,
    },
    /// On one of its jobs.
    Job(JobReport),
}

pub(crate) enum RegistryMsg {
    Register {
        reg: Registration,
        id: AgentId,
        at: DateTime<Utc>,
        cell: Arc<AgentCell>,
        reply: RpcReplyPort<RegisterReply>,
    },
    Append(Change),
    /// An agent reported its activity or on a job; an event only when it changes something.
    Report {
        /// The agent.
        id: AgentId,
        /// When the report was taken.
        at: DateTime<Utc>,
        /// What it reported.
        report: Report,
        /// Counts the report as waiting until it is handled (and holds its source's slot).
        ticket: Ticket,
    },
    /// The record as the registry holds it (for restarting a crashed agent actor).
    Record(AgentId, RpcReplyPort<Option<AgentRecord>>),
    Query(Query, RpcReplyPort<Result<AdminResponse, AdminError>>),
    Subscribe(SubscribeOptions, RpcReplyPort<Subscription>),
    /// Agents restored from the store that are to be supervised again.
    Restorable(RpcReplyPort<Vec<Restorable>>),
    /// The cells of restored agents, now supervised.
    Attach(Vec<(AgentId, Arc<AgentCell>)>),
    /// Sends this answer once every event up to `upto` (default: every event sequenced so
    /// far) is durable.
    WhenDurable {
        upto: Option<u64>,
        waiter: Waiter,
    },
    Flush,
    Committed(Result<(), StoreError>),
    Checkpoint,
    /// Flush everything, write a full checkpoint, answer when durable.
    Drain(RpcReplyPort<Result<(), StoreError>>),
    /// Agents of a dead node of the cluster that this node adopted: kept in the view (those
    /// it does not hold already), to be supervised as after a restart.
    Adopt(Vec<AgentRecord>),
    /// Another node of the cluster registered this agent at seq `taken` of the shared log: it
    /// is dropped from this node's view, with no event (the other node's `registered` event
    /// says it all), unless this node registered it again since. Answers whether it was.
    Forget {
        id: AgentId,
        taken: u64,
        reply: RpcReplyPort<bool>,
    },
}

/// What supervising a restored agent again needs from its record.
#[derive(Debug, Clone)]
pub(crate) struct Restorable {
    pub id: AgentId,
    pub kind: Arc<str>,
    pub status: Status,
    pub reported: crate::model::Reported,
    pub heartbeat_interval_ms: Option<u64>,
}

/// Read-only queries the registry answers.
#[derive(Debug, Clone)]
pub(crate) enum Query {
    List {
        kind: Option<String>,
        status: Option<Status>,
        limit: usize,
        after: Option<AgentId>,
        /// Only the agents this node supervises (on a cluster node; otherwise every agent is).
        own: bool,
    },
    Get(AgentId),
    Events {
        id: Option<AgentId>,
        since: u64,
        limit: usize,
        latest: bool,
    },
    Stats,
}

pub(crate) struct RegistryArgs {
    pub store: Arc<dyn Store>,
    pub broadcaster: ActorRef<BroadcastMsg>,
    pub clock: Clock,
    pub max_batch: usize,
    pub checkpoint_interval: Duration,
    pub flush_interval: Duration,
    pub min_commit_interval: Duration,
    pub retention: Retention,
    /// Agents that left are dropped from the view this long after they left.
    pub left_ttl: Option<Duration>,
    /// The cluster node stamped on every event; `None` for a single node.
    pub node: Option<Arc<str>>,
    /// On a cluster node: the fleet's view, which publishes and answers subscriptions and
    /// fleet-wide reads (the registry then publishes nothing itself).
    pub cluster: Option<Arc<Node>>,
    pub loaded: crate::store::Loaded,
    pub backpressure: Arc<Backpressure>,
    pub mass_offline: MassOffline,
}

struct Entry {
    /// Boxed: the map's nodes stay small and dense.
    record: Box<AgentRecord>,
    cell: Option<Arc<AgentCell>>,
}

impl Entry {
    /// The record with the live fields (last_seen, connected, reported, metrics) filled in.
    fn view(&self, clock: &Clock) -> AgentRecord {
        let mut r = (*self.record).clone();
        if let Some(cell) = &self.cell {
            if let Some(seen) = cell.last_seen() {
                r.last_seen = Some(clock.utc(seen));
            }
            r.connected = cell.connected() && r.status != Status::Left;
            r.reported = cell.reported();
            if let Some(m) = cell.metrics() {
                r.metrics = m;
            }
        }
        r
    }
}

/// How long a drain (shutdown) goes on refreshing the mirror before it gives up (the next
/// start then rewrites it in the background).
const DRAIN_MIRROR_BUDGET: Duration = Duration::from_secs(3);

pub(crate) struct RegistryState {
    store: Arc<dyn Store>,
    broadcaster: ActorRef<BroadcastMsg>,
    clock: Clock,
    max_batch: usize,
    flush_interval: Duration,
    /// The least time between the starts of two group commits (see `rules::writes::commit_at`).
    min_commit_interval: Duration,
    /// When the last segment write started.
    last_commit_start: Option<tokio::time::Instant>,
    /// The pending events wait for the pace's wake-up (a `Flush` is scheduled for it).
    paced: bool,
    retention: Retention,
    left_ttl: Option<Duration>,
    /// The cluster node stamped on every event; `None` for a single node.
    node: Option<Arc<str>>,
    /// On a cluster node: the fleet's view (see [`RegistryArgs::cluster`]).
    cluster: Option<Arc<Node>>,
    agents: BTreeMap<AgentId, Entry>,
    counts: HashMap<Status, usize>,
    /// Agents by kind, then by status (indexed as `Status::ALL`).
    by_kind: HashMap<Arc<str>, [usize; 6]>,
    /// Persisted events by kind.
    persisted: BTreeMap<EventKind, u64>,
    /// How long segment writes took.
    batch_latency: LatencyHistogram,
    /// When the write in flight started.
    write_started: Option<tokio::time::Instant>,
    next_seq: u64,
    durable_seq: u64,
    /// Sequenced events not yet sealed into a batch.
    pending: Vec<Arc<Event>>,
    /// Bytes of the events sequenced and not yet durable (see [`event_bytes`]).
    pending_bytes: u64,
    pipeline: Pipeline,
    /// A `Flush` is scheduled for this instant (the end of a backoff).
    wake_at: Option<tokio::time::Instant>,
    /// Answers to send once their seq is durable, in seq order.
    waiters: VecDeque<(u64, Waiter)>,
    store_errors: u64,
    side_given_up: u64,
    backpressure: Arc<Backpressure>,
    batches: u64,
    /// Agents changed since the last checkpoint; not kept when only shutdown checkpoints.
    dirty: Option<BTreeSet<AgentId>>,
    /// Agents whose mirror row is out of date.
    mirror_dirty: BTreeSet<AgentId>,
    /// A checkpoint has passed since the mirror was last brought up to date: refresh it.
    mirror_due: bool,
    /// The seq the mirror was last marked complete at.
    mirror_marked: Option<u64>,
    /// Agent records the stored checkpoint holds (see `Loaded::checkpoint_rows`).
    checkpoint_rows: Option<usize>,
    /// The seq of the last durable checkpoint.
    checkpoint_seq: u64,
    /// While draining: until when the mirror is refreshed.
    drain_until: Option<tokio::time::Instant>,
    parked: Vec<(u64, Snapshot, Filter, RpcReplyPort<Subscription>)>,
    drains: Vec<RpcReplyPort<Result<(), StoreError>>>,
    /// The drain's final checkpoint was given up: the drain reports this.
    drain_error: Option<StoreError>,
    /// Another process took the store over: nothing is written or published any more, and
    /// a drain reports this.
    fenced: Option<StoreError>,
    flush_queued: bool,
    jobs: JobBook,
    /// Fed every offline transition as it is sequenced. A hook here rather than a
    /// subscription: it costs a comparison per event and no copy of it, the fleet size is at
    /// hand (`counts`), and it cannot fall behind — a subscriber's bounded queue would be
    /// ended with `lagged` in exactly the storm it is there to see.
    mass_offline: MassOffline,
}

/// Sequences an alert; with `agent`, the event names that agent (and its kind).
pub(crate) fn emit_alert(
    registry: &RegistryHandle,
    clock: &Clock,
    severity: crate::model::Severity,
    issue: &str,
    agent: Option<AgentId>,
    detail: String,
) {
    let change = Change {
        agent,
        at: clock.utc(clock.now()),
        body: EventBody::Alert {
            severity,
            issue: issue.into(),
            detail,
            adopted: None,
        },
    };
    if !registry.append(change) {
        tracing::warn!(issue, "registry gone; alert not recorded");
    }
}
