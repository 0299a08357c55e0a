//! The registry's write pipeline: which store write runs next, and what a failure does to it.
//!
//! Two lanes share one writer (one write at a time, so the store sees one writer):
//! - the **log lane**: sealed batches of events, written in seq order. A failed batch stays at
//!   the head and is retried with backoff, for ever: an event is never dropped, and nothing
//!   after it is written (or published) before it.
//! - the **side lane**: checkpoints, mirror chunks and retention. Each waits until the events
//!   it reflects are durable (`after`); then it goes before newer batches, so it cannot starve
//!   under a steady flow of events. A failure backs off this lane only, so the log goes on
//!   meanwhile, and after [`SIDE_ATTEMPTS`] failures the write is given up (the registry marks
//!   what it held as still to be written): a write that can never succeed never stalls the log.
//!
//! Pure: no IO and no clock reads (`now` is an argument).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::model::{AgentRecord, Event};
use crate::rules::backoff::{Backoff, Jitter};
use crate::store::StoreError;

/// A group commit: consecutive events written as one segment.
pub(crate) type Batch = Arc<[Arc<Event>]>;

/// First retry delay; it doubles up to [`RETRY_MAX`].
pub(crate) const RETRY_MIN: Duration = Duration::from_millis(50);
pub(crate) const RETRY_MAX: Duration = Duration::from_secs(5);
/// Attempts at a side write before it is given up.
pub(crate) const SIDE_ATTEMPTS: u32 = 6;

/// A write of the side lane.
#[derive(Debug, Clone)]
pub(crate) enum Side {
    /// The live view as of `seq`: every agent (`full`) or those changed since the last one.
    Checkpoint {
        records: Arc<[AgentRecord]>,
        seq: u64,
        full: bool,
    },
    /// Refresh the store's queryable copy of these agents; with `complete_at`, the copy is
    /// then complete as of that seq.
    Mirror {
        records: Arc<[AgentRecord]>,
        complete_at: Option<u64>,
    },
    /// Drop old segments as the retention allows.
    Retain,
    /// Forget these agents' queryable copies (they left long ago and were dropped).
    Forget(Arc<[crate::model::AgentId]>),
}

/// A store write.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    Segment(Batch),
    Side(Side),
}

/// What a finished write means for the registry.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The batch is durable: publish it.
    Durable(Batch),
    /// The side write is done.
    Done(Side),
    /// It failed and will be retried after `delay` (nothing else changed).
    Retry { delay: Duration, error: StoreError },
    /// A side write failed [`SIDE_ATTEMPTS`] times and is given up.
    GivenUp { side: Side, error: StoreError },
}

#[derive(Debug)]
struct Lane {
    backoff: Backoff,
    retry_at: Option<Instant>,
}

impl Default for Lane {
    fn default() -> Self {
        Self {
            // One writer retrying its own store: nobody to spread from.
            backoff: Backoff::new(RETRY_MIN, RETRY_MAX, Jitter::None),
            retry_at: None,
        }
    }
}

impl Lane {
    fn open(&self, now: Instant) -> bool {
        self.retry_at.is_none_or(|t| now >= t)
    }

    fn failed(&mut self, now: Instant) -> Duration {
        let delay = self.backoff.fail();
        self.retry_at = Some(now + delay);
        delay
    }

    fn failures(&self) -> u32 {
        self.backoff.failures()
    }
}

/// The queue of writes and their retry state.
#[derive(Debug, Default)]
pub(crate) struct Pipeline {
    segments: VecDeque<Batch>,
    side: VecDeque<(u64, Side)>,
    inflight: Option<Op>,
    log: Lane,
    side_lane: Lane,
}

impl Pipeline {
    /// Queues a batch after those already queued.
    pub(crate) fn push_segment(&mut self, batch: Batch) {
        self.segments.push_back(batch);
    }

    /// Queues a side write that may run once every event up to `after` is durable.
    pub(crate) fn push_side(&mut self, after: u64, side: Side) {
        self.side.push_back((after, side));
    }

    /// Whether a write is running.
    pub(crate) fn busy(&self) -> bool {
        self.inflight.is_some()
    }

    /// Whether nothing is queued or running.
    pub(crate) fn is_empty(&self) -> bool {
        self.inflight.is_none() && self.segments.is_empty() && self.side.is_empty()
    }

    /// Whether batches are queued or running.
    pub(crate) fn has_segments(&self) -> bool {
        !self.segments.is_empty() || matches!(self.inflight, Some(Op::Segment(_)))
    }

    /// Whether a side write like `f` is queued or running.
    pub(crate) fn has_side(&self, f: impl Fn(&Side) -> bool) -> bool {
        self.side.iter().any(|(_, s)| f(s)) || matches!(&self.inflight, Some(Op::Side(s)) if f(s))
    }

    /// Whether an event of the batches queued or running is like `f`.
    pub(crate) fn any_event(&self, f: impl Fn(&Event) -> bool) -> bool {
        let running = match &self.inflight {
            Some(Op::Segment(b)) => b.iter().any(|e| f(e)),
            _ => false,
        };
        running || self.segments.iter().flat_map(|b| b.iter()).any(|e| f(e))
    }

    /// Events in the batches queued or running.
    pub(crate) fn queued_events(&self) -> usize {
        let running = match &self.inflight {
            Some(Op::Segment(b)) => b.len(),
            _ => 0,
        };
        running + self.segments.iter().map(|b| b.len()).sum::<usize>()
    }

    /// Whether the log lane is backing off after a failure.
    pub(crate) fn log_failing(&self) -> bool {
        self.log.failures() > 0
    }

    /// The next write to run, if one may start now (`durable`: the last durable seq). A side
    /// write whose events are durable goes first; then the oldest batch.
    pub(crate) fn start(&mut self, now: Instant, durable: u64) -> Option<Op> {
        if self.inflight.is_some() {
            return None;
        }
        let side_ready = self.side_lane.open(now)
            && self
                .side
                .front()
                .is_some_and(|(after, _)| *after <= durable);
        let op = if side_ready {
            self.side.pop_front().map(|(_, s)| Op::Side(s))
        } else if self.log.open(now) {
            self.segments.pop_front().map(Op::Segment)
        } else {
            None
        }?;
        self.inflight = Some(op.clone());
        Some(op)
    }

    /// When a write that is waiting only for a backoff may start, if one is.
    pub(crate) fn wake_at(&self, durable: u64) -> Option<Instant> {
        let log = (!self.segments.is_empty())
            .then_some(self.log.retry_at)
            .flatten();
        let side = self
            .side
            .front()
            .filter(|(after, _)| *after <= durable)
            .and(self.side_lane.retry_at);
        match (log, side) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The running write finished with `result`.
    pub(crate) fn finish(
        &mut self,
        result: Result<(), StoreError>,
        now: Instant,
    ) -> Option<Outcome> {
        let op = self.inflight.take()?;
        Some(match (op, result) {
            (Op::Segment(batch), Ok(())) => {
                self.log = Lane::default();
                Outcome::Durable(batch)
            }
            (Op::Side(side), Ok(())) => {
                self.side_lane = Lane::default();
                Outcome::Done(side)
            }
            (Op::Segment(batch), Err(error)) => {
                // It stays first: nothing after it is written before it.
                self.segments.push_front(batch);
                let delay = self.log.failed(now);
                Outcome::Retry { delay, error }
            }
            (Op::Side(side), Err(error)) => {
                let delay = self.side_lane.failed(now);
                if self.side_lane.failures() >= SIDE_ATTEMPTS {
                    self.side_lane = Lane::default();
                    Outcome::GivenUp { side, error }
                } else {
                    // Its events are durable already: it may run again once the lane opens.
                    self.side.push_front((0, side));
                    Outcome::Retry { delay, error }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Status;
    use crate::store::conformance::event;

    fn batch(seqs: std::ops::RangeInclusive<u64>) -> Batch {
        seqs.map(|s| event(s, "a", Status::Online, Status::Degraded))
            .collect()
    }

    fn checkpoint(seq: u64) -> Side {
        Side::Checkpoint {
            records: Arc::from([]),
            seq,
            full: false,
        }
    }

    fn err() -> StoreError {
        StoreError::Write("refused".into())
    }

    fn first_seq(op: &Op) -> Option<u64> {
        match op {
            Op::Segment(b) => b.first().map(|e| e.seq),
            Op::Side(_) => None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn batches_run_in_order_and_a_failed_one_stays_first() {
        let mut p = Pipeline::default();
        let now = Instant::now();
        p.push_segment(batch(1..=2));
        p.push_segment(batch(3..=3));
        let op = p.start(now, 0).expect("a write");
        assert_eq!(first_seq(&op), Some(1));
        assert!(p.start(now, 0).is_none(), "one write at a time");
        let Some(Outcome::Retry { delay, .. }) = p.finish(Err(err()), now) else {
            panic!("a failed batch is retried");
        };
        assert_eq!(delay, RETRY_MIN);
        assert!(p.start(now, 0).is_none(), "backing off");
        assert_eq!(p.wake_at(0), Some(now + RETRY_MIN));
        let later = now + RETRY_MIN;
        let op = p.start(later, 0).expect("the retry");
        assert_eq!(first_seq(&op), Some(1), "the failed batch again, before 3");
        assert!(matches!(p.finish(Ok(()), later), Some(Outcome::Durable(b)) if b[0].seq == 1));
        let op = p.start(later, 2).expect("next");
        assert_eq!(first_seq(&op), Some(3));
    }

    #[tokio::test(start_paused = true)]
    async fn the_log_backoff_doubles_up_to_its_cap_and_never_gives_up() {
        let mut p = Pipeline::default();
        let mut now = Instant::now();
        p.push_segment(batch(1..=1));
        let mut delays = Vec::new();
        for _ in 0..12 {
            p.start(now, 0).expect("a retry");
            match p.finish(Err(err()), now) {
                Some(Outcome::Retry { delay, .. }) => delays.push(delay),
                other => panic!("the log never gives up: {other:?}"),
            }
            now += RETRY_MAX;
        }
        assert_eq!(delays[0], RETRY_MIN);
        assert_eq!(delays[1], RETRY_MIN * 2);
        assert_eq!(*delays.last().unwrap(), RETRY_MAX);
        assert!(delays.windows(2).all(|w| w[0] <= w[1]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_side_write_waits_for_its_events_then_goes_before_newer_batches() {
        let mut p = Pipeline::default();
        let now = Instant::now();
        p.push_segment(batch(1..=2));
        p.push_side(2, checkpoint(2));
        p.push_segment(batch(3..=3));
        let op = p.start(now, 0).expect("batch 1-2 first");
        assert_eq!(first_seq(&op), Some(1));
        p.finish(Ok(()), now);
        assert!(
            matches!(p.start(now, 2), Some(Op::Side(_))),
            "then the checkpoint"
        );
        p.finish(Ok(()), now);
        assert_eq!(p.start(now, 2).as_ref().and_then(first_seq), Some(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_side_write_that_always_fails_is_given_up_and_never_stalls_the_log() {
        let mut p = Pipeline::default();
        let mut now = Instant::now();
        p.push_side(0, checkpoint(0));
        let mut seq = 0;
        let mut given_up = false;
        let mut durable = Vec::new();
        // Batches keep coming while the checkpoint fails every time.
        for _ in 0..200 {
            seq += 1;
            p.push_segment(batch(seq..=seq));
            while let Some(op) = p.start(now, seq - 1) {
                let r = match op {
                    Op::Side(_) => Err(err()),
                    Op::Segment(_) => Ok(()),
                };
                match p.finish(r, now) {
                    Some(Outcome::Durable(b)) => durable.push(b[0].seq),
                    Some(Outcome::GivenUp { .. }) => given_up = true,
                    _ => {}
                }
            }
            now += Duration::from_millis(100);
        }
        assert!(given_up, "the checkpoint was given up");
        assert_eq!(
            durable,
            (1..=200).collect::<Vec<_>>(),
            "every batch, in order"
        );
        assert!(p.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_side_failure_backs_off_the_side_lane_only() {
        let mut p = Pipeline::default();
        let now = Instant::now();
        p.push_side(0, checkpoint(0));
        p.push_segment(batch(1..=1));
        assert!(matches!(p.start(now, 0), Some(Op::Side(_))));
        assert!(matches!(
            p.finish(Err(err()), now),
            Some(Outcome::Retry { .. })
        ));
        assert_eq!(
            p.start(now, 0).as_ref().and_then(first_seq),
            Some(1),
            "the log goes on at once"
        );
        assert!(p.has_side(|s| matches!(s, Side::Checkpoint { .. })));
    }
}
