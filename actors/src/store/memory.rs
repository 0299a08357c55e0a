//! `MemStore`: the store kept in memory. It is an honest store for tests and for programs
//! that embed the runtime without persistence: same trait, same conformance suite, and it can
//! outlive a `Runtime` (share the `Arc`) to test restarts.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::{Loaded, Store, StoreError};
use crate::model::{AgentId, AgentRecord, Event};

#[derive(Default)]
struct Inner {
    events: Vec<Arc<Event>>,
    agents: BTreeMap<AgentId, AgentRecord>,
    checkpoint_seq: u64,
}

/// An in-memory [`Store`].
#[derive(Default)]
pub struct MemStore {
    inner: Mutex<Inner>,
}

impl MemStore {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Number of events held (for tests and benchmarks).
    pub fn len(&self) -> usize {
        self.lock().events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl Store for MemStore {
    async fn load(&self) -> Result<Loaded, StoreError> {
        let inner = self.lock();
        let cp = inner.checkpoint_seq;
        Ok(Loaded {
            agents: inner.agents.values().cloned().collect(),
            checkpoint_seq: cp,
            events_after: inner
                .events
                .iter()
                .filter(|e| e.seq > cp)
                .map(|e| (**e).clone())
                .collect(),
            last_seq: inner.events.last().map_or(cp, |e| e.seq),
        })
    }

    async fn append(&self, events: &[Arc<Event>]) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let first = inner
            .events
            .last()
            .map_or(inner.checkpoint_seq + 1, |e| e.seq + 1);
        for (expected, e) in (first..).zip(events) {
            if e.seq != expected {
                return Err(StoreError::OutOfOrder {
                    expected,
                    got: e.seq,
                });
            }
        }
        inner.events.extend(events.iter().cloned());
        Ok(())
    }

    async fn checkpoint(&self, agents: &[AgentRecord], seq: u64) -> Result<(), StoreError> {
        let mut inner = self.lock();
        for a in agents {
            inner.agents.insert(a.id.clone(), a.clone());
        }
        inner.checkpoint_seq = inner.checkpoint_seq.max(seq);
        Ok(())
    }

    async fn read_events(&self, from: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        let inner = self.lock();
        let start = inner.events.partition_point(|e| e.seq < from);
        Ok(inner.events[start..]
            .iter()
            .take(limit)
            .map(|e| (**e).clone())
            .collect())
    }

    async fn agent_events(
        &self,
        id: &AgentId,
        since: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let inner = self.lock();
        let start = inner.events.partition_point(|e| e.seq <= since);
        Ok(inner.events[start..]
            .iter()
            .filter(|e| e.agent.as_ref() == Some(id))
            .take(limit)
            .map(|e| (**e).clone())
            .collect())
    }

    async fn oldest_seq(&self) -> Result<Option<u64>, StoreError> {
        Ok(self.lock().events.first().map(|e| e.seq))
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn mem_store_passes_the_conformance_suite() {
        crate::store::conformance::run_all(|| async { super::MemStore::new() }).await;
    }
}
