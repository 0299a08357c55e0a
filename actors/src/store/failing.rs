//! `FailingStore`: wraps a real store and fails its writes on demand, to test what the runtime
//! does when the disk is full or the database refuses writes. Not a mock: every call that is
//! let through goes to the wrapped store.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;

use super::{Loaded, Retention, Store, StoreError};
use crate::model::{AgentId, AgentRecord, Event};

/// A store whose writes fail while [`FailingStore::fail_writes`] is on.
pub struct FailingStore<S> {
    inner: Arc<S>,
    failing: AtomicBool,
    refused: AtomicU64,
}

impl<S: Store> FailingStore<S> {
    pub fn new(inner: Arc<S>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            failing: AtomicBool::new(false),
            refused: AtomicU64::new(0),
        })
    }

    /// Starts or stops failing every write (append, checkpoint, retention).
    pub fn fail_writes(&self, on: bool) {
        self.failing.store(on, Ordering::SeqCst);
    }

    /// How many writes were refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }

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
        self.inner.append(events).await
    }

    async fn checkpoint(
        &self,
        agents: &[AgentRecord],
        seq: u64,
        full: bool,
    ) -> Result<(), StoreError> {
        self.check()?;
        self.inner.checkpoint(agents, seq, full).await
    }

    async fn mirror(
        &self,
        agents: &[AgentRecord],
        complete_at: Option<u64>,
    ) -> Result<(), StoreError> {
        self.check()?;
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
        self.check()?;
        self.inner.put_sink_state(key, value).await
    }

    async fn retain(&self, retention: &Retention) -> Result<Option<u64>, StoreError> {
        self.check()?;
        self.inner.retain(retention).await
    }

    async fn close(&self) {
        self.inner.close().await
    }
}
