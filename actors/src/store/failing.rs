//! `FailingStore`: wraps a real store and fails its writes on demand, to test what the runtime
//! does when the disk is full or the database refuses writes. Not a mock: every call that is
//! let through goes to the wrapped store.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;

use super::{Loaded, Retention, Store, StoreError};
use crate::model::{AgentId, AgentRecord, Event, SavedPolicy};

/// A store whose writes fail while [`FailingStore::fail_writes`] is on, or land and then
/// report a failure ([`FailingStore::land_then_fail`]).
pub struct FailingStore<S> {
    inner: Arc<S>,
    failing: AtomicBool,
    refused: AtomicU64,
    /// Appends still to let through and then report as failed.
    land_then_fail: AtomicU64,
    /// Every write but appends fails (a checkpoint, mirror, retention or sink state that
    /// can never be written), while the log's appends go through.
    fail_others: AtomicBool,
}

impl<S: Store> FailingStore<S> {
    /// Wraps `inner`; nothing fails until asked to.
    pub fn new(inner: Arc<S>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            failing: AtomicBool::new(false),
            refused: AtomicU64::new(0),
            land_then_fail: AtomicU64::new(0),
            fail_others: AtomicBool::new(false),
        })
    }

    /// The next `n` appends are written to the wrapped store, then reported as failed with an
    /// unknown outcome (a commit whose answer was lost).
    pub fn land_then_fail(&self, n: u64) {
        self.land_then_fail.store(n, Ordering::SeqCst);
    }

    /// Starts or stops failing every write except the log's appends.
    pub fn fail_all_but_appends(&self, on: bool) {
        self.fail_others.store(on, Ordering::SeqCst);
    }

    fn check_other(&self) -> Result<(), StoreError> {
        if self.fail_others.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::Write("checkpoint refused (injected)".into()));
        }
        self.check()
    }

    /// Starts or stops failing every write (append, checkpoint, retention).
    pub fn fail_writes(&self, on: bool) {
        self.failing.store(on, Ordering::SeqCst);
    }

    /// How many writes were refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }

    /// The wrapped store.
    pub fn inner(&self) -> &Arc<S> {
        &self.inner
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::Write(
                "no space left on device (injected)".into(),
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl<S: Store> Store for FailingStore<S> {
    async fn load(&self) -> Result<Loaded, StoreError> {
        self.inner.load().await
    }

    async fn append(&self, events: &[Arc<Event>]) -> Result<(), StoreError> {
        self.check()?;
        self.inner.append(events).await?;
        let landed = self
            .land_then_fail
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if landed.is_ok() {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::Unknown(
                "connection lost after the commit (injected)".into(),
            ));
        }
        Ok(())
    }

    async fn checkpoint(
        &self,
        agents: &[AgentRecord],
        seq: u64,
        full: bool,
    ) -> Result<(), StoreError> {
        self.check_other()?;
        self.inner.checkpoint(agents, seq, full).await
    }

    async fn mirror(
        &self,
        agents: &[AgentRecord],
        complete_at: Option<u64>,
    ) -> Result<(), StoreError> {
        self.check_other()?;
        self.inner.mirror(agents, complete_at).await
    }

    async fn read_events(&self, from: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        self.inner.read_events(from, limit).await
    }

    async fn agent_events(
        &self,
        id: &AgentId,
        since: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        self.inner.agent_events(id, since, limit).await
    }

    async fn agent_events_latest(
        &self,
        id: &AgentId,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        self.inner.agent_events_latest(id, limit).await
    }

    async fn oldest_seq(&self) -> Result<Option<u64>, StoreError> {
        self.inner.oldest_seq().await
    }

    async fn sink_state(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.inner.sink_state(key).await
    }

    async fn put_sink_state(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.check_other()?;
        self.inner.put_sink_state(key, value).await
    }

    async fn policies(&self) -> Result<Vec<SavedPolicy>, StoreError> {
        self.inner.policies().await
    }

    async fn put_policy(&self, saved: &SavedPolicy) -> Result<(), StoreError> {
        self.check_other()?;
        self.inner.put_policy(saved).await
    }

    async fn forget(&self, ids: &[AgentId]) -> Result<(), StoreError> {
        self.check_other()?;
        self.inner.forget(ids).await
    }

    async fn retain(&self, retention: &Retention) -> Result<Option<u64>, StoreError> {
        self.check_other()?;
        self.inner.retain(retention).await
    }

    async fn close(&self) {
        self.inner.close().await
    }

    fn durability_warning(&self) -> Option<String> {
        self.inner.durability_warning()
    }
}
