//! The deadline wheel: one task per runtime that holds every agent's pending deadline.
//!
//! An agent actor arms one deadline at a time (tagged with a generation, so a stale one is
//! dropped). When a deadline falls the wheel first looks at the agent's heartbeat stamp: if a
//! beat moved a sliding deadline forward, the entry is re-queued for the new instant and the
//! actor hears nothing. Only a deadline that is really due becomes a `Tick` message. So a
//! healthy agent costs one heap operation per interval and no actor message, and the wheel's
//! own lateness on waking is a measurement of the runtime's scheduling lag
//! (see [`crate::lag`]).

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::debug;

use crate::agent::AgentMsg;
use crate::cell::AgentCell;
use crate::lag::LagMonitor;

/// A request to wake an agent at `at`.
pub(crate) struct Arm {
    pub at: Instant,
    pub gen: u64,
    pub cell: Arc<AgentCell>,
    /// Set when the deadline is `last_seen + slide`: a newer stamp moves it forward.
    pub slide: Option<Duration>,
}

struct Entry {
    /// When to look at it again (deadline plus any slack applied).
    wake: Instant,
    /// Ties broken by arrival; 32 bits wrap harmlessly (only order among equal wakes).
    order: u32,
    gen: u64,
    cell: Arc<AgentCell>,
    /// The deadline itself.
    at: Instant,
    /// `Arm::slide` in nanoseconds, 0 for none (keeps the entry at 64 bytes).
    slide_ns: u64,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.wake == other.wake && self.order == other.order
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    // Reversed: BinaryHeap is a max-heap and we want the earliest wake first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.wake, other.order).cmp(&(self.wake, self.order))
    }
}

/// Handle to the wheel task; cloning is cheap.
#[derive(Clone)]
pub(crate) struct Wheel {
    tx: mpsc::UnboundedSender<Arm>,
}

impl Wheel {
    /// Starts the wheel task. It ends when every handle is dropped.
    pub fn start(lag: Arc<LagMonitor>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(rx, lag));
        Self { tx }
    }

    pub fn arm(&self, arm: Arm) {
        // The wheel only stops when the runtime is gone; nothing is left to wake then.
        let _ = self.tx.send(arm);
    }
}

async fn run(mut rx: mpsc::UnboundedReceiver<Arm>, lag: Arc<LagMonitor>) {
    let mut heap: BinaryHeap<Entry> = BinaryHeap::new();
    let mut order = 0u32;
    let mut push = |heap: &mut BinaryHeap<Entry>, wake: Instant, arm: Arm| {
        order = order.wrapping_add(1);
        heap.push(Entry {
            wake,
            order,
            gen: arm.gen,
            cell: arm.cell,
            at: arm.at,
            slide_ns: arm.slide.map_or(0, |d| (d.as_nanos() as u64).max(1)),
        });
    };
    loop {
        let next = heap.peek().map(|e| e.wake);
        tokio::select! {
            biased;
            arm = rx.recv() => {
                let Some(arm) = arm else { return };
                push(&mut heap, arm.at, arm);
                while let Ok(arm) = rx.try_recv() {
                    push(&mut heap, arm.at, arm);
                }
            }
            _ = sleep_until_opt(next) => {
                let now = Instant::now();
                if let Some(planned) = next {
                    lag.observe(now.saturating_duration_since(planned), now);
                }
                let slack = lag.slack(now);
                while heap.peek().is_some_and(|e| e.wake <= now) {
                    let Some(e) = heap.pop() else { break };
                    let slide = (e.slide_ns != 0).then(|| Duration::from_nanos(e.slide_ns));
                    let arm = Arm { at: e.at, gen: e.gen, cell: e.cell, slide };
                    if arm.cell.timer_gen() != arm.gen {
                        continue; // re-armed or stopped since
                    }
                    let mut at = arm.at;
                    if let (Some(slide), Some(seen)) = (arm.slide, arm.cell.last_seen()) {
                        at = at.max(seen + slide);
                    }
                    if at + slack > now {
                        let wake = at + slack;
                        push(&mut heap, wake, Arm { at, ..arm });
                        continue;
                    }
                    match arm.cell.actor() {
                        Some(actor) => {
                            if actor.cast(AgentMsg::Tick { gen: arm.gen, slack }).is_err() {
                                debug!(agent = %arm.cell.id(), "deadline for a stopped agent actor");
                            }
                        }
                        None => debug!(agent = %arm.cell.id(), "deadline with no agent actor"),
                    }
                }
            }
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_wheel_entry_stays_small() {
        // One per supervised agent: its size is memory per agent.
        assert!(std::mem::size_of::<super::Entry>() <= 64);
    }
}
