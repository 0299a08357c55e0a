//! Following the shared log: every event once, in seq order, whoever wrote it (each node of a
//! cluster publishes what its tail yields, its own events included).
//!
//! The head (`meta:log.last_seq`) and the segments up to it commit together, so a tail that
//! sees the head at `n` can read every event up to `n`; it checks that what it reads starts at
//! the seq it waits for and has no hole, and refuses to go on otherwise. It polls the head
//! every `idle`; [`LogTail::waker`] makes it look at once (a node wakes its tail after its own
//! commits, so its own events are not delayed by the poll).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::{StoreError, SurrealStore};
use crate::model::Event;

/// A reader of the shared log from a seq on.
pub struct LogTail {
    store: Arc<SurrealStore>,
    next: u64,
    idle: Duration,
    wake: Arc<Notify>,
}

impl LogTail {
    /// A tail that yields the events after `after`, looking for new ones every `idle`.
    pub fn new(store: Arc<SurrealStore>, after: u64, idle: Duration) -> Self {
        Self {
            store,
            next: after + 1,
            idle,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Makes the tail look for new events at once.
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// The seq of the next event the tail yields.
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// The next events, at least one and about `max` at most, waiting until there are some.
    pub async fn next_batch(&mut self, max: usize) -> Result<Vec<Event>, StoreError> {
        loop {
            if self.store.shared_head().await? >= self.next {
                let events = self.store.read_shared(self.next, max).await?;
                for (want, e) in (self.next..).zip(&events) {
                    if e.seq != want {
                        return Err(StoreError::Read(format!(
                            "the shared log has a hole: seq {want} expected, {} found",
                            e.seq
                        )));
                    }
                }
                match events.last() {
                    Some(last) => {
                        self.next = last.seq + 1;
                        return Ok(events);
                    }
                    None => {
                        return Err(StoreError::Read(format!(
                            "the shared log's head is past {} but no segment holds it",
                            self.next
                        )))
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.idle) => {}
                _ = self.wake.notified() => {}
            }
        }
    }
}
