//! Storage behind the registry: the `Store` trait, the in-memory store, and the conformance
//! suite every implementation must pass.
//!
//! The registry actor is the only writer. Events are appended in batches (one segment per
//! group commit) and must be durable when `append` returns; `checkpoint` records the live view
//! of agents as of a `seq`, so a restart loads the checkpoint and replays the log after it.
//! A store may also keep a queryable copy of the agents for cold reads and other tools
//! (`mirror`); restore never reads it.

/// The suite every store must pass (with the `test-util` feature).
#[cfg(any(test, feature = "test-util"))]
pub mod conformance;
mod memory;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::model::{AgentId, AgentRecord, Event, SavedPolicy};

pub use memory::MemStore;

#[cfg(any(test, feature = "test-util"))]
mod failing;
#[cfg(any(test, feature = "test-util"))]
pub use failing::FailingStore;

#[cfg(feature = "surreal")]
mod surreal;
#[cfg(feature = "surreal")]
pub use surreal::{
    Adoption, Appended, BatchId, HoldOptions, KeeperClaim, Keeping, LogTail, NodeLease,
    SurrealOptions, SurrealStore, SCHEMA_VERSION,
};

/// Errors a store reports. The registry treats every one of them as "not known to be
/// written": it keeps the batch, retries with backoff, and publishes nothing until a write
/// succeeds. A retry of a batch that did land is accepted by the store (see
/// [`Store::append`]), so "unknown" needs no other handling.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The store refused the write: nothing of it was written.
    #[error("store write failed: {0}")]
    Write(String),
    /// The write may or may not have landed (a failed commit or sync, a lost connection).
    #[error("store write outcome unknown: {0}")]
    Unknown(String),
    /// A read failed.
    #[error("store read failed: {0}")]
    Read(String),
    /// A batch did not continue the log.
    #[error("events out of order: expected seq {expected}, got {got}")]
    OutOfOrder {
        /// The seq the log needed at that place in the batch.
        expected: u64,
        /// The seq found there.
        got: u64,
    },
    /// The store cannot be reached (closed, or its connection is gone).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Another live process holds the store (refused at open).
    #[error("{0}")]
    Held(String),
    /// This process no longer holds the store: another took it over. Nothing of the write
    /// landed, and no write of this process will.
    #[error("fenced: {0}")]
    Fenced(String),
}

/// What a store holds at start-up.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// The checkpointed agents.
    pub agents: Vec<AgentRecord>,
    /// The seq the checkpoint reflects.
    pub checkpoint_seq: u64,
    /// Every retained event after `checkpoint_seq`, in order.
    pub events_after: Vec<Event>,
    /// The last persisted seq (0 when the log is empty).
    pub last_seq: u64,
    /// Agent records the checkpoint holds, counting those a later incremental checkpoint
    /// superseded; `None` when the next checkpoint must be full (a layout this code no longer
    /// extends). The registry writes a full checkpoint when the superseded ones pile up.
    pub checkpoint_rows: Option<usize>,
    /// Whether the mirror was complete as of the checkpoint when the store was last closed;
    /// otherwise the registry rewrites it.
    pub mirror_clean: bool,
}

/// How much of the event log to keep. Whole segments are dropped, oldest first, and never
/// one holding an event after the last checkpoint (a restart replays those).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Retention {
    /// Drop segments whose newest event is older than this.
    pub max_age: Option<Duration>,
    /// Keep at least this many of the newest events; drop segments entirely older.
    pub max_events: Option<u64>,
}

impl Retention {
    /// True when neither a maximum age nor a maximum count is set: everything is kept.
    pub fn is_unbounded(&self) -> bool {
        self.max_age.is_none() && self.max_events.is_none()
    }

    /// Whether a segment ending at `seg_last` (newest event at `newest_at`) may be dropped,
    /// given the log's last seq, the checkpoint's seq, and the time now.
    pub fn drops(
        &self,
        seg_last: u64,
        newest_at: Option<DateTime<Utc>>,
        log_last: u64,
        checkpoint_seq: u64,
        now: DateTime<Utc>,
    ) -> bool {
        if seg_last > checkpoint_seq {
            return false;
        }
        let by_count = self.max_events.is_some_and(|n| seg_last + n <= log_last);
        let by_age = match (self.max_age, newest_at) {
            (Some(age), Some(at)) => chrono::Duration::from_std(age)
                .map(|age| at + age < now)
                .unwrap_or(false),
            _ => false,
        };
        by_count || by_age
    }
}

/// Persistent storage for agents and the event log.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Reads the checkpoint and the log after it.
    async fn load(&self) -> Result<Loaded, StoreError>;
    /// Appends a batch of events (consecutive seqs, continuing the log) as one durable unit.
    /// The same batch again, verbatim, after a write whose outcome was unknown is accepted
    /// and leaves one copy (the store makes sure it is durable); any other batch that does
    /// not continue the log is refused with [`StoreError::OutOfOrder`].
    async fn append(&self, events: &[Arc<Event>]) -> Result<(), StoreError>;
    /// Records that the checkpoint reflects `seq`: with `full`, `agents` is every agent and
    /// replaces what the checkpoint held; without, they are the agents changed since the last
    /// checkpoint and are laid over it.
    async fn checkpoint(
        &self,
        agents: &[AgentRecord],
        seq: u64,
        full: bool,
    ) -> Result<(), StoreError>;
    /// Refreshes the store's queryable copy of these agents (if it keeps one); with
    /// `complete_at`, the copy now reflects every agent as of that seq.
    async fn mirror(
        &self,
        _agents: &[AgentRecord],
        _complete_at: Option<u64>,
    ) -> Result<(), StoreError> {
        Ok(())
    }
    /// Events with `seq >= from`, in order, at most `limit`.
    async fn read_events(&self, from: u64, limit: usize) -> Result<Vec<Event>, StoreError>;
    /// One agent's events with `seq > since`, in order, at most `limit`.
    async fn agent_events(
        &self,
        id: &AgentId,
        since: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError>;
    /// One agent's newest `limit` events, in seq order.
    async fn agent_events_latest(
        &self,
        id: &AgentId,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError>;
    /// The oldest retained seq, if any event is retained.
    async fn oldest_seq(&self) -> Result<Option<u64>, StoreError>;
    /// Deletes the queryable copies (see [`Store::mirror`]) of agents dropped from the view.
    async fn forget(&self, _ids: &[AgentId]) -> Result<(), StoreError> {
        Ok(())
    }
    /// Drops whole segments as `retention` allows; returns the oldest seq still retained.
    async fn retain(&self, retention: &Retention) -> Result<Option<u64>, StoreError>;
    /// The state a sink saved under `key` (its cursor, its dead letters; see
    /// [`crate::sink`]), as the JSON text it saved.
    async fn sink_state(&self, key: &str) -> Result<Option<String>, StoreError>;
    /// Saves a sink's state under `key`, replacing what was there, durably.
    async fn put_sink_state(&self, key: &str, value: &str) -> Result<(), StoreError>;
    /// The kinds' policies `set_policy` saved, in no order.
    async fn policies(&self) -> Result<Vec<SavedPolicy>, StoreError>;
    /// Saves a kind's policy as `set_policy` made it, replacing the kind's saved one, durably.
    async fn put_policy(&self, saved: &SavedPolicy) -> Result<(), StoreError>;
    /// Before sink `name` reads its state and delivers: on a store several processes deliver
    /// from (a cluster), this one delivers it from now on, and the state another one saves for
    /// it afterwards is refused. Nothing to do on a store of one process.
    async fn claim_sink(&self, _name: &str) -> Result<(), StoreError> {
        Ok(())
    }
    /// Resolves, with the reason, when this process has lost the store to another one (a
    /// store shared by processes hands it to one at a time); never, for a store that is not.
    async fn lost(&self) -> String {
        std::future::pending().await
    }
    /// Flushes and releases the store (the runtime calls it last, at shutdown).
    async fn close(&self) {}
    /// Why the store's writes are weaker than "durable when `append` returns" (a sync mode
    /// that does not flush every commit), if they are.
    fn durability_warning(&self) -> Option<String> {
        None
    }
}
