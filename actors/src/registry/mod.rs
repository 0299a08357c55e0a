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

pub(crate) mod durable;
pub(crate) mod intake;
pub(crate) mod pipeline;
pub(crate) mod stats;

use std::collections::VecDeque;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tracing::{error, info, warn};

use crate::admin::{AdminError, AdminResponse};
use crate::agent::cell::AgentCell;
use crate::broadcaster::{BroadcastMsg, Filter, Snapshot, Start, SubscribeOptions, Subscription};
use crate::clock::Clock;
use crate::model::{
    AgentId, AgentRecord, Event, EventBody, EventKind, JobReport, Registration, Severity, Status,
};
use crate::registry::durable::{event_bytes, Backpressure, Waiter};
use crate::registry::intake::Ticket;
use crate::registry::pipeline::{Batch, Op, Outcome, Pipeline, Side};
use crate::rules::health::{MassOffline, MASS_OFFLINE};
use crate::rules::jobs::JobBook;
use crate::store::{Retention, Store, StoreError};
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

pub(crate) enum RegistryMsg {
    Register {
        reg: Registration,
        id: AgentId,
        at: DateTime<Utc>,
        cell: Arc<AgentCell>,
        reply: RpcReplyPort<RegisterReply>,
    },
    Append(Change),
    /// An agent reported its activity; an event only when it really changed.
    Activity {
        id: AgentId,
        activity: String,
        detail: Option<String>,
        at: DateTime<Utc>,
        ticket: Ticket,
    },
    /// An agent reported on one of its jobs.
    Job {
        id: AgentId,
        report: JobReport,
        at: DateTime<Utc>,
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
    pub retention: Retention,
    /// Agents that left are dropped from the view this long after they left.
    pub left_ttl: Option<Duration>,
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

/// Below this many agents, incremental checkpoints go on until they hold this many records.
const INCREMENTAL_MIN_ROWS: usize = 1000;
/// Records per mirror write: small, so a refresh never holds the pipeline for long.
const MIRROR_CHUNK: usize = 1000;
/// How long a drain (shutdown) goes on refreshing the mirror before it gives up (the next
/// start then rewrites it in the background).
const DRAIN_MIRROR_BUDGET: Duration = Duration::from_secs(3);

pub(crate) struct RegistryState {
    store: Arc<dyn Store>,
    broadcaster: ActorRef<BroadcastMsg>,
    clock: Clock,
    max_batch: usize,
    flush_interval: Duration,
    retention: Retention,
    left_ttl: Option<Duration>,
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
    flush_queued: bool,
    jobs: JobBook,
    /// Fed every offline transition as it is sequenced. A hook here rather than a
    /// subscription: it costs a comparison per event and no copy of it, the fleet size is at
    /// hand (`counts`), and it cannot fall behind — a subscriber's bounded queue would be
    /// ended with `lagged` in exactly the storm it is there to see.
    mass_offline: MassOffline,
}

pub(crate) struct RegistryActor;

impl Actor for RegistryActor {
    type Msg = RegistryMsg;
    type State = RegistryState;
    type Arguments = RegistryArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: RegistryArgs,
    ) -> Result<RegistryState, ActorProcessingErr> {
        let mut st = RegistryState {
            store: args.store,
            broadcaster: args.broadcaster,
            clock: args.clock,
            max_batch: args.max_batch.max(1),
            flush_interval: args.flush_interval,
            retention: args.retention,
            left_ttl: args.left_ttl,
            agents: BTreeMap::new(),
            counts: HashMap::new(),
            by_kind: HashMap::new(),
            persisted: BTreeMap::new(),
            batch_latency: LatencyHistogram::default(),
            write_started: None,
            next_seq: args.loaded.last_seq + 1,
            durable_seq: args.loaded.last_seq,
            pending: Vec::new(),
            pending_bytes: 0,
            pipeline: Pipeline::default(),
            wake_at: None,
            waiters: VecDeque::new(),
            store_errors: 0,
            side_given_up: 0,
            backpressure: args.backpressure,
            batches: 0,
            dirty: (!args.checkpoint_interval.is_zero()).then(BTreeSet::new),
            mirror_dirty: BTreeSet::new(),
            mirror_due: false,
            mirror_marked: None,
            checkpoint_rows: args.loaded.checkpoint_rows,
            checkpoint_seq: args.loaded.checkpoint_seq,
            drain_until: None,
            parked: Vec::new(),
            drains: Vec::new(),
            drain_error: None,
            flush_queued: false,
            jobs: JobBook::default(),
            mass_offline: args.mass_offline,
        };
        for record in args.loaded.agents {
            st.jobs.load(&record.id, &record.jobs);
            st.insert(Entry {
                record: Box::new(record),
                cell: None,
            });
        }
        if !args.loaded.mirror_clean && !st.agents.is_empty() {
            st.mirror_dirty = st.agents.keys().cloned().collect();
            st.mirror_due = true;
        }
        for e in &args.loaded.events_after {
            st.apply(e);
        }
        if !args.checkpoint_interval.is_zero() {
            myself.send_interval(args.checkpoint_interval, || RegistryMsg::Checkpoint);
        }
        Ok(st)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: RegistryMsg,
        st: &mut RegistryState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RegistryMsg::Register {
                reg,
                id,
                at,
                cell,
                reply,
            } => {
                // Answered at once with its seq; the caller waits for its durability.
                let out = st.register(reg, id, at, cell);
                let _ = reply.send(out);
                st.schedule_flush(&myself);
            }
            RegistryMsg::Append(change) => {
                st.sequence(change);
                st.schedule_flush(&myself);
            }
            RegistryMsg::Activity {
                id,
                activity,
                detail,
                at,
                ticket: _ticket,
            } => {
                let Some(e) = st
                    .agents
                    .get(&id)
                    .filter(|e| e.record.status != Status::Left)
                else {
                    return Ok(());
                };
                if e.record.activity.as_deref() != Some(activity.as_str()) {
                    let body = EventBody::Activity {
                        from: e.record.activity.clone(),
                        to: activity,
                        detail,
                    };
                    st.sequence(Change {
                        agent: Some(id),
                        at,
                        body,
                    });
                    st.schedule_flush(&myself);
                }
            }
            RegistryMsg::Job {
                id,
                report,
                at,
                ticket: _ticket,
            } => {
                let live = st.agents.get(&id).map(|e| e.record.status);
                if live.is_none_or(|s| s == Status::Left) {
                    return Ok(());
                }
                if let Some(body) = st.jobs.report(&id, report) {
                    st.sync_jobs();
                    st.sequence(Change {
                        agent: Some(id),
                        at,
                        body,
                    });
                    st.schedule_flush(&myself);
                }
            }
            RegistryMsg::Record(id, reply) => {
                let _ = reply.send(st.agents.get(&id).map(|e| e.view(&st.clock)));
            }
            RegistryMsg::Query(q, reply) => st.query(q, reply),
            RegistryMsg::Subscribe(opts, reply) => st.subscribe(opts, reply),
            RegistryMsg::Restorable(reply) => {
                let list = st
                    .agents
                    .values()
                    .filter(|e| e.record.status != Status::Left)
                    .map(|e| Restorable {
                        id: e.record.id.clone(),
                        kind: e.record.kind.clone(),
                        status: e.record.status,
                        reported: e.record.reported,
                        heartbeat_interval_ms: e.record.heartbeat_interval_ms,
                    })
                    .collect();
                let _ = reply.send(list);
            }
            RegistryMsg::Attach(cells) => {
                for (id, cell) in cells {
                    if let Some(e) = st.agents.get_mut(&id) {
                        e.cell = Some(cell);
                    }
                }
            }
            RegistryMsg::WhenDurable { upto, waiter } => {
                let seq = upto.unwrap_or(st.next_seq - 1);
                match seq <= st.durable_seq {
                    true => waiter.answer(),
                    false => {
                        // Kept in seq order (most arrive in order: push at the back).
                        let at = st.waiters.partition_point(|(s, _)| *s <= seq);
                        st.waiters.insert(at, (seq, waiter));
                    }
                }
            }
            RegistryMsg::Flush => {
                st.flush_queued = false;
                if st.wake_at.is_some_and(|t| tokio::time::Instant::now() >= t) {
                    st.wake_at = None;
                }
                st.pump(&myself);
            }
            RegistryMsg::Committed(result) => st.committed(result, &myself),
            RegistryMsg::Checkpoint => {
                st.purge_left();
                // While one waits (the store is slow or failing), the next is not queued: the
                // agents changed meanwhile stay marked and go into a later one.
                if !st
                    .pipeline
                    .has_side(|s| matches!(s, Side::Checkpoint { .. }))
                {
                    st.queue_checkpoint(false);
                }
                st.mirror_due = !st.mirror_dirty.is_empty();
                if !st.retention.is_unbounded()
                    && !st.pipeline.has_side(|s| matches!(s, Side::Retain))
                {
                    st.pipeline.push_side(st.next_seq - 1, Side::Retain);
                }
                st.pump(&myself);
            }
            RegistryMsg::Drain(reply) => {
                st.queue_checkpoint(true);
                st.drain_until = Some(tokio::time::Instant::now() + DRAIN_MIRROR_BUDGET);
                st.drains.push(reply);
                st.pump(&myself);
            }
        }
        Ok(())
    }
}

impl RegistryState {
    fn insert(&mut self, entry: Entry) {
        self.count(&entry.record.kind, entry.record.status, true);
        self.agents.insert(entry.record.id.clone(), entry);
    }

    /// Counts an agent of `kind` in `status` in (`add`) or out.
    fn count(&mut self, kind: &Arc<str>, status: Status, add: bool) {
        let c = self.counts.entry(status).or_default();
        let k = match self.by_kind.get_mut(kind) {
            Some(k) => k,
            None => self.by_kind.entry(kind.clone()).or_default(),
        };
        let slot = &mut k[status as usize];
        match add {
            true => {
                *c += 1;
                *slot += 1;
            }
            false => {
                *c = c.saturating_sub(1);
                *slot = slot.saturating_sub(1);
                if k.iter().all(|n| *n == 0) {
                    self.by_kind.remove(kind);
                }
            }
        }
    }

    fn set_status(&mut self, id: &AgentId, status: Status, at: DateTime<Utc>) {
        if let Some(e) = self.agents.get_mut(id) {
            let (kind, before) = (e.record.kind.clone(), e.record.status);
            e.record.status = status;
            e.record.updated_at = at;
            self.touch(id);
            self.count(&kind, before, false);
            self.count(&kind, status, true);
        }
    }

    /// Drops the agents that left more than `left_ttl` ago: their events stay in the log (as
    /// retention allows); their records go from the view, the next checkpoint (full, so no
    /// older chunk brings them back) and the mirror. An id dropped so registers as new.
    fn purge_left(&mut self) {
        let Some(ttl) = self.left_ttl else { return };
        let Ok(ttl) = chrono::Duration::from_std(ttl) else {
            return;
        };
        let cutoff = self.clock.utc(self.clock.now()) - ttl;
        let gone: Vec<AgentId> = self
            .agents
            .values()
            .filter(|e| e.record.status == Status::Left && e.record.updated_at < cutoff)
            .map(|e| e.record.id.clone())
            .collect();
        if gone.is_empty() {
            return;
        }
        for id in &gone {
            if let Some(e) = self.agents.remove(id) {
                self.count(&e.record.kind, e.record.status, false);
            }
            if let Some(d) = &mut self.dirty {
                d.remove(id);
            }
            self.mirror_dirty.remove(id);
        }
        info!(
            agents = gone.len(),
            "agents that left long ago were dropped"
        );
        self.checkpoint_rows = None; // the next checkpoint is full
        self.pipeline
            .push_side(self.next_seq - 1, Side::Forget(gone.into()));
    }

    /// Marks an agent changed: the next checkpoint and the mirror write it.
    fn touch(&mut self, id: &AgentId) {
        if let Some(d) = &mut self.dirty {
            d.insert(id.clone());
        }
        self.mirror_dirty.insert(id.clone());
    }

    /// Applies a persisted event to the view (restore: replay of the log).
    fn apply(&mut self, e: &Event) {
        let Some(id) = &e.agent else { return };
        match &e.body {
            EventBody::Registered {
                status,
                name,
                metadata,
                capabilities,
                incarnation,
                ..
            } => {
                let old = self.agents.get(id).map(|x| &x.record);
                let record = AgentRecord {
                    id: id.clone(),
                    name: name.clone(),
                    kind: e.kind.clone().unwrap_or_else(|| "default".into()),
                    status: *status,
                    activity: old.and_then(|r| r.activity.clone()),
                    jobs: old.map(|r| r.jobs.clone()).unwrap_or_default(),
                    reported: Default::default(),
                    metadata: metadata.clone(),
                    capabilities: capabilities.clone(),
                    metrics: Default::default(),
                    last_seen: Some(e.at),
                    connected: false,
                    incarnation: *incarnation,
                    registered_at: e.at,
                    updated_at: e.at,
                    heartbeat_interval_ms: old.and_then(|r| r.heartbeat_interval_ms),
                };
                if let Some(old) = self.agents.remove(id) {
                    self.count(&old.record.kind, old.record.status, false);
                }
                self.insert(Entry {
                    record: Box::new(record),
                    cell: None,
                });
                self.touch(id);
            }
            EventBody::Activity { to, .. } => self.set_activity(id, to, e.at),
            job @ EventBody::Job { .. } => {
                self.jobs.apply(id, job);
                self.sync_jobs();
            }
            other => {
                if let Some(s) = other.status_after() {
                    self.set_status(id, s, e.at);
                }
            }
        }
    }

    /// Copies the unfinished jobs that changed into their agents' records.
    fn sync_jobs(&mut self) {
        for id in self.jobs.take_touched() {
            let open = self.jobs.open_of(&id);
            if let Some(e) = self.agents.get_mut(&id) {
                e.record.jobs = open;
                self.touch(&id);
            }
        }
    }

    fn set_activity(&mut self, id: &AgentId, activity: &str, at: DateTime<Utc>) {
        if let Some(e) = self.agents.get_mut(id) {
            e.record.activity = Some(activity.to_string());
            e.record.updated_at = at;
            self.touch(id);
        }
    }

    fn register(
        &mut self,
        reg: Registration,
        id: AgentId,
        at: DateTime<Utc>,
        cell: Arc<AgentCell>,
    ) -> RegisterReply {
        let prev = self.agents.get(&id);
        let from = prev.map(|e| e.record.status);
        let incarnation = prev.map_or(1, |e| e.record.incarnation + 1);
        let kind = match cell.kind() {
            k if *k == *reg.kind_or_default() => k, // the fleet's shared copy
            _ => Arc::from(reg.kind_or_default()),
        };
        let name = reg.name.clone().unwrap_or_else(|| id.to_string());
        let record = AgentRecord {
            id: id.clone(),
            name: name.clone(),
            kind: kind.clone(),
            status: Status::Online,
            activity: prev.and_then(|e| e.record.activity.clone()),
            jobs: prev.map(|e| e.record.jobs.clone()).unwrap_or_default(),
            reported: Default::default(),
            metadata: reg.metadata.clone(),
            capabilities: reg.capabilities.clone(),
            metrics: Default::default(),
            last_seen: Some(at),
            connected: true,
            incarnation,
            registered_at: at,
            updated_at: at,
            heartbeat_interval_ms: reg.heartbeat_interval.map(|d| d.as_millis() as u64),
        };
        if let Some(old) = self.agents.remove(&id) {
            self.count(&old.record.kind, old.record.status, false);
        }
        self.insert(Entry {
            record: Box::new(record),
            cell: Some(cell),
        });
        self.touch(&id);
        self.push_event(Change {
            agent: Some(id),
            at,
            body: EventBody::Registered {
                from,
                status: Status::Online,
                name,
                metadata: reg.metadata,
                capabilities: reg.capabilities,
                incarnation,
            },
        });
        RegisterReply {
            incarnation,
            seq: self.next_seq - 1,
        }
    }

    fn sequence(&mut self, change: Change) -> u64 {
        if let (Some(id), Some(status)) = (&change.agent, change.body.status_after()) {
            self.set_status(id, status, change.at);
        }
        if let (Some(id), EventBody::Activity { to, .. }) = (&change.agent, &change.body) {
            self.set_activity(id, to, change.at);
        }
        let gone = match change.body.status_after() {
            Some(Status::Offline) => Some("agent_offline"),
            Some(Status::Left) => Some("agent_left"),
            _ => None,
        };
        let went_offline = change.agent.is_some()
            && matches!(
                change.body,
                EventBody::Transition {
                    to: Status::Offline,
                    ..
                }
            );
        let (agent, at) = (change.agent.clone(), change.at);
        let seq = self.push_event(change);
        // The unfinished jobs of an agent that went offline or left fail, after its change.
        if let (Some(id), Some(error)) = (agent, gone) {
            for body in self.jobs.fail_all(&id, error) {
                self.push_event(Change {
                    agent: Some(id.clone()),
                    at,
                    body,
                });
            }
            self.sync_jobs();
        }
        if went_offline {
            self.guard_mass_offline(at);
        }
        seq
    }

    /// Counts an offline transition; sequences one `mass_offline` alert when it makes the
    /// failure massive (the transition itself is already sequenced, as are all the others).
    fn guard_mass_offline(&mut self, at: DateTime<Utc>) {
        let left = self.counts.get(&Status::Left).copied().unwrap_or(0);
        let fleet = self.agents.len().saturating_sub(left);
        if let Some(alert) = self.mass_offline.observe(at, fleet) {
            warn!(
                offline = alert.offline,
                fleet = alert.fleet_size,
                window_ms = alert.window.as_millis() as u64,
                "mass offline: a large share of the fleet went offline at once"
            );
            self.push_event(Change {
                agent: None,
                at,
                body: EventBody::Alert {
                    severity: Severity::High,
                    issue: MASS_OFFLINE.into(),
                    detail: alert.detail(),
                },
            });
        }
    }

    fn push_event(&mut self, change: Change) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let kind = change
            .agent
            .as_ref()
            .and_then(|id| self.agents.get(id))
            .map(|e| e.record.kind.clone());
        let event = Event {
            seq,
            at: change.at,
            agent: change.agent,
            kind,
            body: change.body,
        };
        self.pending_bytes += event_bytes(&event) as u64;
        self.backpressure.set_pending_bytes(self.pending_bytes);
        self.pending.push(Arc::new(event));
        seq
    }

    /// Asks for a flush after the messages already queued, so they join this batch.
    fn schedule_flush(&mut self, myself: &ActorRef<RegistryMsg>) {
        let running = self.pipeline.busy();
        if !self.flush_queued && !running {
            self.flush_queued = true;
            if self.flush_interval.is_zero() {
                let _ = myself.cast(RegistryMsg::Flush);
            } else {
                // Linger: let a group gather for up to flush_interval (or max_batch events).
                myself.send_after(self.flush_interval, || RegistryMsg::Flush);
            }
        } else if self.flush_queued && self.pending.len() >= self.max_batch && !running {
            let _ = myself.cast(RegistryMsg::Flush);
        }
    }

    fn seal(&mut self) {
        while !self.pending.is_empty() {
            let n = self.pending.len().min(self.max_batch);
            let batch: Batch = self.pending.drain(..n).collect();
            self.pipeline.push_segment(batch);
        }
    }

    fn queue_checkpoint(&mut self, full: bool) {
        self.seal();
        let ids: Vec<AgentId> = if full {
            self.agents.keys().cloned().collect()
        } else {
            self.dirty
                .as_mut()
                .map(|d| std::mem::take(d).into_iter().collect())
                .unwrap_or_default()
        };
        // Incremental records pile up until a restore would read more than the fleet twice
        // over; then this checkpoint is full and replaces them.
        let full = full
            || self.checkpoint_rows.is_none_or(|rows| {
                rows + ids.len() > (2 * self.agents.len()).max(INCREMENTAL_MIN_ROWS)
            });
        let ids = if full {
            if let Some(d) = &mut self.dirty {
                d.clear();
            }
            self.agents.keys().cloned().collect()
        } else {
            ids
        };
        let records: Arc<[AgentRecord]> = ids
            .iter()
            .filter_map(|id| self.agents.get(id))
            .map(|e| e.view(&self.clock))
            .collect();
        let seq = self.next_seq - 1;
        if !records.is_empty() || full {
            self.pipeline
                .push_side(seq, Side::Checkpoint { records, seq, full });
        }
    }

    /// The next mirror write, when the pipeline has nothing else to do: a chunk of the agents
    /// whose row is out of date (after a checkpoint, or while draining), then, when draining
    /// and the mirror is up to date, the mark that it is complete.
    fn next_mirror(&mut self) -> Option<Side> {
        // While draining, the mirror is refreshed only within the drain's budget.
        let allowed = match self.drain_until {
            Some(t) => tokio::time::Instant::now() < t,
            None => self.mirror_due,
        };
        if !self.mirror_dirty.is_empty() && allowed {
            let mut records = Vec::with_capacity(MIRROR_CHUNK.min(self.mirror_dirty.len()));
            while records.len() < MIRROR_CHUNK {
                let Some(id) = self.mirror_dirty.pop_first() else {
                    break;
                };
                if let Some(e) = self.agents.get(&id) {
                    records.push(e.view(&self.clock));
                }
            }
            return Some(Side::Mirror {
                records: records.into(),
                complete_at: None,
            });
        }
        if self.mirror_dirty.is_empty() {
            self.mirror_due = false;
            if !self.drains.is_empty() && self.mirror_marked != Some(self.checkpoint_seq) {
                return Some(Side::Mirror {
                    records: Arc::from([]),
                    complete_at: Some(self.checkpoint_seq),
                });
            }
        }
        None
    }

    /// Starts the next write if none is running.
    fn pump(&mut self, myself: &ActorRef<RegistryMsg>) {
        if self.pipeline.busy() {
            return;
        }
        if !self.pipeline.has_segments() && !self.pending.is_empty() {
            let n = self.pending.len().min(self.max_batch);
            let batch: Batch = self.pending.drain(..n).collect();
            self.pipeline.push_segment(batch);
        }
        if self.pipeline.is_empty() {
            match self.next_mirror() {
                Some(side) => self.pipeline.push_side(self.durable_seq, side),
                None => {
                    self.drain_until = None;
                    self.finish_drains();
                    return;
                }
            }
        }
        let now = tokio::time::Instant::now();
        let Some(op) = self.pipeline.start(now, self.durable_seq) else {
            // Backing off: come back when the first lane opens.
            if let Some(t) = self.pipeline.wake_at(self.durable_seq) {
                if self.wake_at.is_none_or(|w| w > t) {
                    self.wake_at = Some(t);
                    myself.send_after(t.saturating_duration_since(now), || RegistryMsg::Flush);
                }
            }
            return;
        };
        let store = self.store.clone();
        let myself = myself.clone();
        let job: futures::future::BoxFuture<'static, Result<(), StoreError>> = match op {
            Op::Segment(batch) => Box::pin(async move { store.append(&batch).await }),
            Op::Side(Side::Checkpoint { records, seq, full }) => {
                Box::pin(async move { store.checkpoint(&records, seq, full).await })
            }
            Op::Side(Side::Mirror {
                records,
                complete_at,
            }) => Box::pin(async move { store.mirror(&records, complete_at).await }),
            Op::Side(Side::Retain) => {
                let retention = self.retention.clone();
                Box::pin(async move { store.retain(&retention).await.map(|_| ()) })
            }
            Op::Side(Side::Forget(ids)) => Box::pin(async move { store.forget(&ids).await }),
        };
        self.write_started = Some(now);
        tokio::spawn(async move {
            let r = job.await;
            if myself.cast(RegistryMsg::Committed(r)).is_err() {
                warn!("registry stopped while a write was running");
            }
        });
    }

    fn committed(&mut self, result: Result<(), StoreError>, myself: &ActorRef<RegistryMsg>) {
        let now = tokio::time::Instant::now();
        let Some(outcome) = self.pipeline.finish(result, now) else {
            return;
        };
        match outcome {
            Outcome::Durable(batch) => {
                if !self.backpressure.store_ok.swap(true, Ordering::SeqCst) {
                    info!("store writes succeed again");
                }
                if let Some(last) = batch.last() {
                    self.durable_seq = last.seq;
                }
                self.batches += 1;
                if let Some(t) = self.write_started.take() {
                    self.batch_latency.observe(t.elapsed());
                }
                let mut bytes = 0;
                for e in batch.iter() {
                    *self.persisted.entry(e.body.kind()).or_default() += 1;
                    bytes += event_bytes(e) as u64;
                }
                self.pending_bytes = self.pending_bytes.saturating_sub(bytes);
                self.backpressure.set_pending_bytes(self.pending_bytes);
                let _ = self.broadcaster.cast(BroadcastMsg::Publish(batch));
                self.release_parked();
                self.release_waiters();
            }
            Outcome::Done(Side::Checkpoint { records, seq, full }) => {
                let before = if full {
                    0
                } else {
                    self.checkpoint_rows.unwrap_or(0)
                };
                self.checkpoint_rows = Some(before + records.len());
                self.checkpoint_seq = seq;
            }
            Outcome::Done(Side::Mirror {
                complete_at: Some(seq),
                ..
            }) => self.mirror_marked = Some(seq),
            Outcome::Done(Side::Mirror { .. } | Side::Retain | Side::Forget(_)) => {}
            Outcome::Retry { delay, error } => {
                self.store_errors += 1;
                if self.pipeline.log_failing() {
                    if self.backpressure.store_ok.swap(false, Ordering::SeqCst) {
                        error!(error = %error, "store write failed; events are held and retried");
                    } else {
                        warn!(error = %error, retry_in = ?delay, "store write failed again");
                    }
                } else {
                    warn!(error = %error, retry_in = ?delay, "a checkpoint, mirror or retention write failed");
                }
            }
            Outcome::GivenUp { side, error } => {
                self.store_errors += 1;
                self.side_given_up += 1;
                self.give_up(side, error);
            }
        }
        self.sweep_abandoned();
        self.pump(myself);
    }

    /// A side write failed too often: what it held is marked to be written again later.
    fn give_up(&mut self, side: Side, error: StoreError) {
        match side {
            Side::Checkpoint { records, full, .. } => {
                error!(error = %error, agents = records.len(), full, "a checkpoint could not be written; its agents go into the next one");
                if let Some(d) = &mut self.dirty {
                    d.extend(records.iter().map(|r| r.id.clone()));
                }
                if !self.drains.is_empty() {
                    self.drain_error = Some(error);
                }
            }
            Side::Mirror { records, .. } => {
                warn!(error = %error, agents = records.len(), "a mirror write could not be done; it is tried again after the next checkpoint");
                self.mirror_dirty
                    .extend(records.iter().map(|r| r.id.clone()));
                self.mirror_due = false;
                self.drain_until = None;
            }
            Side::Retain => {
                warn!(error = %error, "retention could not drop old segments this time")
            }
            Side::Forget(ids) => warn!(
                error = %error,
                agents = ids.len(),
                "the queryable copies of departed agents could not be deleted"
            ),
        }
    }

    /// Answers the waiters whose events are all durable.
    fn release_waiters(&mut self) {
        while self
            .waiters
            .front()
            .is_some_and(|(seq, _)| *seq <= self.durable_seq)
        {
            if let Some((_, w)) = self.waiters.pop_front() {
                w.answer();
            }
        }
    }

    /// Forgets answers and snapshots whose callers stopped waiting (while the store fails,
    /// they would pile up: a snapshot holds the whole fleet).
    fn sweep_abandoned(&mut self) {
        self.waiters.retain(|(_, w)| !w.abandoned());
        self.parked.retain(|(_, _, _, reply)| !reply.is_closed());
    }

    fn finish_drains(&mut self) {
        let result = match self.drain_error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        };
        for d in self.drains.drain(..) {
            let _ = d.send(result.clone());
        }
    }

    fn release_parked(&mut self) {
        let durable = self.durable_seq;
        let mut i = 0;
        while i < self.parked.len() {
            if self.parked[i].0 <= durable {
                let (seq, snapshot, filter, reply) = self.parked.swap_remove(i);
                let _ = self.broadcaster.cast(BroadcastMsg::Add {
                    start: Start::After(seq),
                    filter,
                    snapshot: Some(snapshot),
                    reply,
                });
            } else {
                i += 1;
            }
        }
    }

    fn subscribe(&mut self, opts: SubscribeOptions, reply: RpcReplyPort<Subscription>) {
        if opts.snapshot && self.backpressure.refuse_write().is_some() {
            // It would wait for the store with a copy of the fleet: refused (the caller is
            // told `overloaded`).
            return;
        }
        if opts.snapshot {
            // The view reflects every event sequenced so far; it may be shown only once they
            // are all durable, and the subscriber continues right after them.
            let seq = self.next_seq - 1;
            let agents = self
                .agents
                .values()
                .filter(|e| opts.filter.matches_record(&e.record))
                .map(|e| e.view(&self.clock))
                .collect();
            let snapshot = Snapshot { seq, agents };
            self.parked.push((seq, snapshot, opts.filter, reply));
            self.release_parked();
        } else {
            let start = match opts.since {
                Some(n) => Start::After(n),
                None => Start::Live,
            };
            let _ = self.broadcaster.cast(BroadcastMsg::Add {
                start,
                filter: opts.filter,
                snapshot: None,
                reply,
            });
        }
    }

    fn query(&mut self, q: Query, reply: RpcReplyPort<Result<AdminResponse, AdminError>>) {
        match q {
            Query::List {
                kind,
                status,
                limit,
                after,
            } => {
                use std::ops::Bound;
                let lower = match &after {
                    Some(a) => Bound::Excluded(a.clone()),
                    None => Bound::Unbounded,
                };
                let list = self
                    .agents
                    .range((lower, Bound::Unbounded))
                    .map(|(_, e)| e)
                    .filter(|e| kind.as_ref().is_none_or(|k| *e.record.kind == **k))
                    .filter(|e| status.is_none_or(|s| e.record.status == s))
                    .take(limit)
                    .map(|e| e.view(&self.clock))
                    .collect();
                let _ = reply.send(Ok(AdminResponse::Agents(list)));
            }
            Query::Get(id) => {
                let r = match self.agents.get(&id) {
                    Some(e) => Ok(AdminResponse::Agent(Box::new(e.view(&self.clock)))),
                    None => Err(AdminError::UnknownAgent(id)),
                };
                let _ = reply.send(r);
            }
            Query::Events {
                id,
                since,
                limit,
                latest,
            } => {
                if latest && id.is_none() {
                    let _ = reply.send(Err(AdminError::InvalidField(
                        "events: latest needs an agent id".into(),
                    )));
                    return;
                }
                if let Some(id) = &id {
                    if !self.agents.contains_key(id) {
                        let _ = reply.send(Err(AdminError::UnknownAgent(id.clone())));
                        return;
                    }
                }
                // Reads go to the store off the actor; only durable events are there.
                let store = self.store.clone();
                tokio::spawn(async move {
                    let r = match &id {
                        Some(id) if latest => store.agent_events_latest(id, limit).await,
                        Some(id) => store.agent_events(id, since, limit).await,
                        None => store.read_events(since + 1, limit).await,
                    };
                    let _ = reply.send(
                        r.map(AdminResponse::Events)
                            .map_err(|e| AdminError::Unavailable(e.to_string())),
                    );
                });
            }
            Query::Stats => {
                let _ = reply.send(Ok(AdminResponse::Registry(self.stats())));
            }
        }
    }

    fn stats(&self) -> RegistryStats {
        RegistryStats {
            agents: Status::ALL
                .iter()
                .map(|s| (*s, self.counts.get(s).copied().unwrap_or(0)))
                .collect(),
            total: self.agents.len(),
            jobs: self.jobs.counts(),
            last_seq: self.next_seq - 1,
            durable_seq: self.durable_seq,
            pending_events: self.pending.len() + self.pipeline.queued_events(),
            pending_bytes: self.pending_bytes,
            side_writes_given_up: self.side_given_up,
            queued_reports: self.backpressure.reports.queued(),
            queued_reports_peak: self.backpressure.reports.peak(),
            store_errors: self.store_errors,
            store_healthy: self.backpressure.store_ok.load(Ordering::SeqCst),
            batches: self.batches,
            by_kind: self
                .by_kind
                .iter()
                .filter(|(_, c)| c.iter().any(|n| *n > 0))
                .map(|(k, c)| {
                    let counts = Status::ALL.iter().map(|s| (*s, c[*s as usize])).collect();
                    (k.to_string(), counts)
                })
                .collect(),
            persisted: self.persisted.clone(),
            batch_latency: self.batch_latency.clone(),
        }
    }
}
