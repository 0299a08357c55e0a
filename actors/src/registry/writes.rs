//! Driving the write pipeline: batches sealed, checkpoints and mirror chunks queued, one
//! write at a time off the actor, its outcome applied (publish, retry, give up).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use ractor::ActorRef;
use tracing::{error, info, warn};

use super::{RegistryMsg, RegistryState};
use crate::broadcaster::BroadcastMsg;
use crate::model::{AgentId, AgentRecord};
use crate::registry::durable::event_bytes;
use crate::registry::pipeline::{Batch, Op, Outcome, Side};
use crate::rules;
use crate::rules::writes::{Flush, Mirror, MIRROR_CHUNK};
use crate::store::StoreError;

impl RegistryState {
    /// Asks for a flush after the messages already queued, so they join this batch.
    pub(super) fn schedule_flush(&mut self, myself: &ActorRef<RegistryMsg>) {
        let asked = rules::writes::flush(
            self.flush_queued,
            self.pipeline.busy(),
            self.paced,
            self.pending.len(),
            self.max_batch,
            self.flush_interval,
        );
        match asked {
            Flush::Nothing => return,
            Flush::Now => {
                let _ = myself.cast(RegistryMsg::Flush);
            }
            Flush::After(linger) => {
                myself.send_after(linger, || RegistryMsg::Flush);
            }
        }
        self.flush_queued = true;
    }

    pub(super) fn seal(&mut self) {
        while !self.pending.is_empty() {
            let n = self.pending.len().min(self.max_batch);
            let batch: Batch = self.pending.drain(..n).collect();
            self.pipeline.push_segment(batch);
        }
    }

    pub(super) fn queue_checkpoint(&mut self, full: bool) {
        self.seal();
        let ids: Vec<AgentId> = if full {
            self.agents.keys().cloned().collect()
        } else {
            self.dirty
                .as_mut()
                .map(|d| std::mem::take(d).into_iter().collect())
                .unwrap_or_default()
        };
        let full = rules::writes::checkpoint_is_full(
            full,
            self.checkpoint_rows,
            ids.len(),
            self.agents.len(),
        );
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
    pub(super) fn next_mirror(&mut self) -> Option<Side> {
        let in_budget = self.drain_until.map(|t| tokio::time::Instant::now() < t);
        let draining = !self.drains.is_empty();
        let marked = self.mirror_marked == Some(self.checkpoint_seq);
        if self.mirror_dirty.is_empty() {
            self.mirror_due = false;
        }
        let step = rules::writes::mirror(
            self.mirror_dirty.len(),
            self.mirror_due,
            in_budget,
            draining,
            marked,
        );
        match step {
            Mirror::Chunk => {
                let mut records = Vec::with_capacity(MIRROR_CHUNK.min(self.mirror_dirty.len()));
                while records.len() < MIRROR_CHUNK {
                    let Some(id) = self.mirror_dirty.pop_first() else {
                        break;
                    };
                    if let Some(e) = self.agents.get(&id) {
                        records.push(e.view(&self.clock));
                    }
                }
                Some(Side::Mirror {
                    records: records.into(),
                    complete_at: None,
                })
            }
            Mirror::MarkComplete => Some(Side::Mirror {
                records: Arc::from([]),
                complete_at: Some(self.checkpoint_seq),
            }),
            Mirror::Nothing => None,
        }
    }

    /// Asks for a `Flush` at `t`, unless one is asked for by then already.
    fn wake(
        &mut self,
        t: tokio::time::Instant,
        now: tokio::time::Instant,
        myself: &ActorRef<RegistryMsg>,
    ) {
        if self.wake_at.is_none_or(|w| w > t) {
            self.wake_at = Some(t);
            myself.send_after(t.saturating_duration_since(now), || RegistryMsg::Flush);
        }
    }

    /// Starts the next write if none is running.
    pub(super) fn pump(&mut self, myself: &ActorRef<RegistryMsg>) {
        if let Some(e) = &self.fenced {
            // Held events stay unpublished for good; whoever waits for a drain is told why.
            if !self.drains.is_empty() {
                self.drain_error = Some(e.clone());
                self.finish_drains();
            }
            return;
        }
        if self.pipeline.busy() {
            return;
        }
        let now = tokio::time::Instant::now();
        // Held only while this says so: what was held may have been sealed and written since
        // (a checkpoint seals what waits), and a stale mark would hold the next lone event.
        self.paced = false;
        if !self.pipeline.has_segments() && !self.pending.is_empty() {
            let at = rules::writes::commit_at(
                self.last_commit_start,
                now,
                self.min_commit_interval,
                self.pending.len(),
                self.max_batch,
            );
            if let Some(at) = at {
                // Held until the commits are far enough apart; nothing else starts meanwhile
                // (a checkpoint or a mirror chunk would hold these events longer).
                self.paced = true;
                self.wake(at, now, myself);
                return;
            }
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
        let Some(op) = self.pipeline.start(now, self.durable_seq) else {
            // Backing off: come back when the first lane opens.
            if let Some(t) = self.pipeline.wake_at(self.durable_seq) {
                self.wake(t, now, myself);
            }
            return;
        };
        if matches!(op, Op::Segment(_)) {
            self.last_commit_start = Some(now);
        }
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

    pub(super) fn committed(
        &mut self,
        result: Result<(), StoreError>,
        myself: &ActorRef<RegistryMsg>,
    ) {
        if let Err(e @ StoreError::Fenced(_)) = &result {
            // The write is refused and no later one can succeed: publish nothing from it,
            // retry nothing.
            error!(error = %e, "the store was taken over by another process; this one publishes nothing more");
            self.backpressure.store_ok.store(false, Ordering::SeqCst);
            self.store_errors += 1;
            self.fenced = Some(e.clone());
            self.pump(myself);
            return;
        }
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
                // A cluster node's tail publishes the batch, in the shared log's order.
                if self.cluster.is_none() {
                    let _ = self.broadcaster.cast(BroadcastMsg::Publish(batch));
                }
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
    pub(super) fn give_up(&mut self, side: Side, error: StoreError) {
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
}
