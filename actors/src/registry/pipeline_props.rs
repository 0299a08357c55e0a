//! Properties of the write pipeline under any interleaving of new batches, side writes,
//! failures and the passing of time: a batch is published only after its own write returned,
//! in seq order, each exactly once, none lost across failures; a side write never runs before
//! the events it reflects are durable; one write at a time.

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use tokio::time::Instant;

use super::pipeline::{Batch, Op, Outcome, Pipeline, Side};
use crate::model::Status;
use crate::store::conformance::event;
use crate::store::StoreError;

#[derive(Debug, Clone)]
enum Step {
    /// Seal a batch of this many new events.
    Batch(usize),
    /// Queue a side write reflecting every event sequenced so far.
    Side,
    /// Try to start a write.
    Start,
    /// The running write returns: `true` for success.
    Finish(bool),
    /// Time passes (ms).
    Wait(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => (1usize..4).prop_map(Step::Batch),
        1 => Just(Step::Side),
        4 => Just(Step::Start),
        4 => any::<bool>().prop_map(Step::Finish),
        2 => (0u64..6_000).prop_map(Step::Wait),
    ]
}

/// The model's view: what was sequenced, what is running, what was published.
struct Run {
    p: Pipeline,
    now: Instant,
    sequenced: u64,
    durable: u64,
    running: Option<Op>,
    published: Vec<u64>,
    /// The `after` of each side write queued and not finished, in order.
    sides: std::collections::VecDeque<u64>,
}

impl Run {
    fn new() -> Self {
        Self {
            p: Pipeline::default(),
            now: Instant::now(),
            sequenced: 0,
            durable: 0,
            running: None,
            published: Vec::new(),
            sides: Default::default(),
        }
    }

    fn apply(&mut self, s: &Step) -> Result<(), TestCaseError> {
        match s {
            Step::Batch(n) => {
                let batch: Batch = (0..*n)
                    .map(|_| {
                        self.sequenced += 1;
                        event(self.sequenced, "a", Status::Online, Status::Degraded)
                    })
                    .collect();
                self.p.push_segment(batch);
            }
            Step::Side => {
                self.p.push_side(self.sequenced, Side::Retain);
                self.sides.push_back(self.sequenced);
            }
            Step::Start => {
                let op = self.p.start(self.now, self.durable);
                if op.is_some() {
                    prop_assert!(self.running.is_none(), "two writes at once");
                }
                if let Some(Op::Side(_)) = &op {
                    let after = self.sides.front().copied();
                    prop_assert!(
                        after.is_some_and(|a| a <= self.durable),
                        "a side write ran before its events were durable"
                    );
                }
                if op.is_some() {
                    self.running = op;
                }
            }
            Step::Finish(ok) => {
                let result = match ok {
                    true => Ok(()),
                    false => Err(StoreError::Write("injected".into())),
                };
                let outcome = self.p.finish(result, self.now);
                let running = self.running.take();
                prop_assert_eq!(outcome.is_some(), running.is_some());
                match (outcome, running) {
                    (Some(Outcome::Durable(b)), Some(Op::Segment(r))) => {
                        prop_assert!(*ok, "published a batch whose write failed");
                        prop_assert!(Arc::ptr_eq(&b, &r), "published another batch");
                        for e in b.iter() {
                            prop_assert_eq!(e.seq, self.durable + 1, "out of order or a gap");
                            self.durable = e.seq;
                            self.published.push(e.seq);
                        }
                    }
                    (Some(Outcome::Durable(_)), other) => {
                        return Err(TestCaseError::fail(format!(
                            "published with {other:?} running"
                        )))
                    }
                    (Some(Outcome::Done(_)), Some(Op::Side(_))) => {
                        prop_assert!(*ok);
                        self.sides.pop_front();
                    }
                    (Some(Outcome::GivenUp { .. }), Some(Op::Side(_))) => {
                        prop_assert!(!*ok);
                        self.sides.pop_front();
                    }
                    (Some(Outcome::Retry { .. }), Some(_)) => prop_assert!(!*ok),
                    (Some(other), running) => {
                        return Err(TestCaseError::fail(format!("{other:?} for {running:?}")))
                    }
                    (None, _) => {}
                }
            }
            Step::Wait(ms) => self.now += Duration::from_millis(*ms),
        }
        Ok(())
    }

    /// Lets every queued write succeed, with time passing, until nothing is left.
    fn drain(&mut self) -> Result<(), TestCaseError> {
        for _ in 0..10_000 {
            if self.p.is_empty() {
                return Ok(());
            }
            self.apply(&Step::Start)?;
            self.apply(&Step::Finish(true))?;
            self.apply(&Step::Wait(5_000))?;
        }
        Err(TestCaseError::fail("the pipeline never emptied"))
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn batches_are_published_once_in_order_and_none_is_lost_and_sides_wait(
        steps in proptest::collection::vec(step(), 0..200)
    ) {
        let mut run = Run::new();
        for s in &steps {
            run.apply(s)?;
        }
        run.drain()?;
        let all: Vec<u64> = (1..=run.sequenced).collect();
        prop_assert_eq!(run.published, all);
        prop_assert!(run.sides.is_empty(), "a side write was lost");
    }
}
