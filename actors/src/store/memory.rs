//! `MemStore`: the store kept in memory. It is an honest store for tests and for programs
//! that embed the runtime without persistence: the same segmented layout as the durable store,
//! the same trait, the same conformance suite, and it can outlive a `Runtime` (share the
//! `Arc`) to test restarts.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use parking_lot::Mutex;

use super::{Loaded, Retention, Store, StoreError};
use crate::model::{AgentId, AgentRecord, Event, SavedPolicy};

/// One group commit: consecutive events written as one unit.
struct Segment {
    first_seq: u64,
    last_seq: u64,
    events: Vec<Arc<Event>>,
}

#[derive(Default)]
struct Inner {
    segments: VecDeque<Segment>,
    agents: BTreeMap<AgentId, AgentRecord>,
    checkpoint_seq: u64,
    /// The last seq ever written (survives retention).
    last_seq: u64,
    sinks: std::collections::HashMap<String, String>,
    policies: BTreeMap<String, SavedPolicy>,
}

impl Inner {
    /// Events with `seq >= from`, in order.
    fn from(&self, from: u64) -> impl Iterator<Item = &Arc<Event>> {
        let start = self.segments.partition_point(|s| s.last_seq < from);
        self.segments
            .range(start..)
            .flat_map(|s| s.events.iter())
            .skip_while(move |e| e.seq < from)
    }
}

/// An in-memory [`Store`].
#[derive(Default)]
pub struct MemStore {
    inner: Mutex<Inner>,
}

impl MemStore {
    /// An empty store.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, Inner> {
        self.inner.lock()
    }

    /// Number of events held (for tests and benchmarks).
    pub fn len(&self) -> usize {
        self.lock().segments.iter().map(|s| s.events.len()).sum()
    }

    /// Whether no event is held.
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
            events_after: inner.from(cp + 1).map(|e| (**e).clone()).collect(),
            last_seq: inner.last_seq.max(cp),
            checkpoint_rows: Some(inner.agents.len()),
            mirror_clean: true,
        })
    }

    async fn append(&self, events: &[Arc<Event>]) -> Result<(), StoreError> {
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return Ok(());
        };
        let mut inner = self.lock();
        let start = inner.last_seq.max(inner.checkpoint_seq) + 1;
        if first.seq < start {
            // A retry of the newest batch, verbatim, is accepted (its first write's outcome
            // was unknown to the caller); anything else is out of order.
            let same = inner.segments.back().is_some_and(|s| {
                s.first_seq == first.seq
                    && s.last_seq == last.seq
                    && s.events.len() == events.len()
                    && s.events.iter().zip(events).all(|(a, b)| a == b)
            });
            if same {
                return Ok(());
            }
        }
        for (expected, e) in (start..).zip(events) {
            if e.seq != expected {
                return Err(StoreError::OutOfOrder {
                    expected,
                    got: e.seq,
                });
            }
        }
        inner.segments.push_back(Segment {
            first_seq: first.seq,
            last_seq: last.seq,
            events: events.to_vec(),
        });
        inner.last_seq = last.seq;
        Ok(())
    }

    async fn checkpoint(
        &self,
        agents: &[AgentRecord],
        seq: u64,
        full: bool,
    ) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if full {
            inner.agents.clear();
        }
        for a in agents {
            inner.agents.insert(a.id.clone(), a.clone());
        }
        inner.checkpoint_seq = inner.checkpoint_seq.max(seq);
        Ok(())
    }

    async fn read_events(&self, from: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .from(from)
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
        Ok(inner
            .from(since + 1)
            .filter(|e| e.agent.as_ref() == Some(id))
            .take(limit)
            .map(|e| (**e).clone())
            .collect())
    }

    async fn agent_events_latest(
        &self,
        id: &AgentId,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let inner = self.lock();
        let mut out: Vec<Event> = inner
            .segments
            .iter()
            .rev()
            .flat_map(|s| s.events.iter().rev())
            .filter(|e| e.agent.as_ref() == Some(id))
            .take(limit)
            .map(|e| (**e).clone())
            .collect();
        out.reverse();
        Ok(out)
    }

    async fn oldest_seq(&self) -> Result<Option<u64>, StoreError> {
        Ok(self.lock().segments.front().map(|s| s.first_seq))
    }

    async fn sink_state(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self.lock().sinks.get(key).cloned())
    }

    async fn put_sink_state(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.lock().sinks.insert(key.to_string(), value.to_string());
        Ok(())
    }

    async fn policies(&self) -> Result<Vec<SavedPolicy>, StoreError> {
        Ok(self.lock().policies.values().cloned().collect())
    }

    async fn put_policy(&self, saved: &SavedPolicy) -> Result<(), StoreError> {
        let mut inner = self.lock();
        inner.policies.insert(saved.kind.clone(), saved.clone());
        Ok(())
    }

    async fn retain(&self, retention: &Retention) -> Result<Option<u64>, StoreError> {
        let mut inner = self.lock();
        let now = Utc::now();
        let (cp, last) = (inner.checkpoint_seq, inner.last_seq);
        while let Some(s) = inner.segments.front() {
            let newest_at = s.events.last().map(|e| e.at);
            if !retention.drops(s.last_seq, newest_at, last, cp, now) {
                break;
            }
            inner.segments.pop_front();
        }
        Ok(inner.segments.front().map(|s| s.first_seq))
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn mem_store_passes_the_conformance_suite() {
        crate::store::conformance::run_all(|| async { super::MemStore::new() }).await;
    }
}
