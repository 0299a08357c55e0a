//! Reports (activity changes and job reports) on their way to the registry.
//!
//! The registry is the one sequencer, and its mailbox has no bound of its own. An agent's
//! reports are not limited by anything the runtime holds (unlike registrations or beats), so
//! a source that can send many (a connection) takes a [`ReportQuota`]: each report holds one
//! of its slots until the registry has taken it, and the source waits for a free slot before
//! it sends more. [`Intake`] counts what waits, for the stats.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How many reports one source may have waiting for the registry at once.
#[derive(Debug, Clone)]
pub struct ReportQuota {
    slots: Arc<Semaphore>,
}

impl ReportQuota {
    /// A quota of `max_queued` reports (at least one).
    pub fn new(max_queued: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max_queued.max(1))),
        }
    }

    /// A slot if one is free now.
    pub(crate) fn try_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().try_acquire_owned().ok()
    }

    /// Waits for a free slot.
    pub(crate) async fn slot(&self) -> OwnedSemaphorePermit {
        // The semaphore is never closed, so acquiring only waits.
        match self.slots.clone().acquire_owned().await {
            Ok(permit) => permit,
            Err(_) => unreachable!("a quota's semaphore is never closed"),
        }
    }
}

/// Reports sent to the registry and not yet taken by it.
#[derive(Debug, Default)]
pub(crate) struct Intake {
    queued: AtomicU64,
    peak: AtomicU64,
}

impl Intake {
    /// Reports waiting now.
    pub(crate) fn queued(&self) -> u64 {
        self.queued.load(Ordering::Relaxed)
    }

    /// The most that ever waited at once.
    pub(crate) fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
}

/// Carried by a report to the registry: counted in [`Intake`] (and holding a quota's slot,
/// if any) until the registry has handled the report and drops it.
#[derive(Debug)]
pub(crate) struct Ticket {
    intake: Arc<Intake>,
    _slot: Option<OwnedSemaphorePermit>,
}

impl Ticket {
    pub(crate) fn new(intake: &Arc<Intake>, slot: Option<OwnedSemaphorePermit>) -> Self {
        let now = intake.queued.fetch_add(1, Ordering::Relaxed) + 1;
        intake.peak.fetch_max(now, Ordering::Relaxed);
        Self {
            intake: intake.clone(),
            _slot: slot,
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.intake.queued.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tickets_count_what_waits_and_hold_their_slot() {
        let intake = Arc::new(Intake::default());
        let quota = ReportQuota::new(2);
        let a = Ticket::new(&intake, Some(quota.slot().await));
        let b = Ticket::new(&intake, Some(quota.slot().await));
        assert_eq!((intake.queued(), intake.peak()), (2, 2));
        // Both slots are held: a third report waits until one is taken.
        let mut third = Box::pin(quota.slot());
        assert!(futures::poll!(&mut third).is_pending());
        drop(a);
        let c = Ticket::new(&intake, Some(third.await));
        drop((b, c));
        assert_eq!((intake.queued(), intake.peak()), (0, 2));
    }
}
