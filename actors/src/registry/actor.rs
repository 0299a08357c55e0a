//! The RegistryActor: starts from what the store loaded, and dispatches each message to
//! the state's handlers.

use std::collections::VecDeque;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::stats::LatencyHistogram;
use super::{
    Change, Entry, RegistryArgs, RegistryMsg, RegistryState, Restorable, DRAIN_MIRROR_BUDGET,
};
use crate::model::Status;
use crate::registry::pipeline::{Pipeline, Side};
use crate::rules::jobs::JobBook;

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
            min_commit_interval: args.min_commit_interval,
            last_commit_start: None,
            paced: false,
            retention: args.retention,
            left_ttl: args.left_ttl,
            node: args.node,
            cluster: args.cluster,
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
            fenced: None,
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
            RegistryMsg::Report {
                id,
                at,
                report,
                ticket: _ticket,
            } => {
                if let Some(body) = st.report(&id, report) {
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
            RegistryMsg::Adopt(records) => {
                for record in records {
                    if !st.agents.contains_key(&record.id) {
                        st.jobs.load(&record.id, &record.jobs);
                        st.insert(Entry {
                            record: Box::new(record),
                            cell: None,
                        });
                    }
                }
            }
            RegistryMsg::Forget { id, taken, reply } => {
                let _ = reply.send(st.forget(&id, taken));
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
