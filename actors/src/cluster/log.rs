//! [`SharedLog`]: the store as a cluster node's registry writes it — the shared log, through
//! the node's own appends — and as its broadcaster and queries read it.
//!
//! The registry numbers its events in its own sequence (local seqs); an append writes them
//! to the shared log, numbered there at commit ([`SurrealStore::append_owned`]), as the batch
//! `<node>.<epoch>/<first local seq>`. A batch the registry sends again (its last write's
//! outcome was unknown) is looked up first, so it lands once. The registry publishes nothing:
//! the node's tail reads every node's batches, its own included, and publishes them in the
//! shared order ([`super::node`]).
//!
//! The registry's own checkpoints, mirror and retention do nothing here: the fleet's
//! checkpoint and the shared log's retention are the keeper's (`super::keeper`), and a node
//! starts from that checkpoint and the log after it ([`replay`]).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::{mpsc, Notify};
use tracing::{debug, error, info, warn};

use crate::model::{AgentId, AgentRecord, Event, SavedPolicy};
use crate::store::{BatchId, Loaded, LogTail, Retention, Store, StoreError, SurrealStore};

use super::node::{Claims, Node};
use super::{FleetRow, FleetView};

/// Events read from the shared log at a time when a node starts.
const REPLAY_CHUNK: usize = 4096;

/// A cluster node's store: its appends go to the shared log as its own batches.
pub(crate) struct SharedLog {
    store: Arc<SurrealStore>,
    me: Arc<str>,
    /// `<node>.<epoch>`: no other writer, and no earlier run of this node, uses it.
    writer: String,
    /// The first local seq of the batch last sent and not known to be written.
    unsure: Mutex<Option<u64>>,
    /// Wakes the node's tail after each append.
    wake: Arc<Notify>,
    /// Agents whose events an append left out: another node owns them now (with the head
    /// the append saw, after which that node's registration came).
    disowned: mpsc::UnboundedSender<Vec<(AgentId, u64)>>,
    /// This node's registrations as they land.
    claims: Arc<Claims>,
}

impl SharedLog {
    pub(crate) fn new(
        store: Arc<SurrealStore>,
        me: Arc<str>,
        wake: Arc<Notify>,
        disowned: mpsc::UnboundedSender<Vec<(AgentId, u64)>>,
        claims: Arc<Claims>,
    ) -> Self {
        let writer = format!("{me}.{}", store.hold_epoch().unwrap_or(0));
        Self {
            store,
            me,
            writer,
            unsure: Mutex::new(None),
            wake,
            disowned,
            claims,
        }
    }
}

/// Times a start reads the checkpoint and the log again, when the keeper trimmed the log past
/// the checkpoint it read meanwhile.
const LOAD_ATTEMPTS: u32 = 5;

/// The whole fleet as the shared log says: the keeper's checkpoint, and the log after it.
pub(crate) async fn replay(store: &SurrealStore) -> Result<FleetView, StoreError> {
    let mut gap = String::new();
    for _ in 0..LOAD_ATTEMPTS {
        let mut view = match store.fleet_checkpoint::<FleetRow>().await? {
            Some((seq, rows)) => FleetView::new(rows, seq),
            None => FleetView::default(),
        };
        let head = store.shared_head().await?;
        while view.seq() < head {
            let events = store.read_shared(view.seq() + 1, REPLAY_CHUNK).await?;
            match events.first().map(|e| e.seq) {
                None => {
                    return Err(StoreError::Read(format!(
                        "the shared log ends at {} but its head is {head}",
                        view.seq()
                    )))
                }
                Some(first) if first != view.seq() + 1 => {
                    gap = format!(
                        "the shared log starts at {first}, after the checkpoint's {}",
                        view.seq()
                    );
                    break;
                }
                Some(_) => {}
            }
            for e in &events {
                view.apply(e).map_err(|e| StoreError::Read(e.to_string()))?;
            }
        }
        if view.seq() >= head {
            return Ok(view);
        }
        debug!(%gap, "the log was trimmed while this node read it; reading again");
    }
    Err(StoreError::Read(gap))
}

/// What the node's registry starts from: the agents `me` owns, as of the view's seq.
pub(crate) fn loaded_for(view: &FleetView, me: &str) -> Loaded {
    Loaded {
        agents: view.owned_by(me).cloned().collect(),
        checkpoint_seq: view.seq(),
        events_after: Vec::new(),
        last_seq: view.seq(),
        checkpoint_rows: Some(0),
        mirror_clean: true,
    }
}

#[async_trait]
impl Store for SharedLog {
    async fn load(&self) -> Result<Loaded, StoreError> {
        let view = replay(&self.store).await?;
        Ok(loaded_for(&view, &self.me))
    }

    async fn append(&self, events: &[Arc<Event>]) -> Result<(), StoreError> {
        let Some(first) = events.first().map(|e| e.seq) else {
            return Ok(());
        };
        let again = self.unsure.lock().replace(first) == Some(first);
        let batch = BatchId {
            node: self.writer.clone(),
            first,
        };
        let appended = self
            .store
            .append_owned(&batch, events, again, &self.me)
            .await?;
        *self.unsure.lock() = None;
        // Before the registry hears of it: see `Claims`.
        self.claims.landed(&appended.events);
        let kept: Vec<u64> = events
            .iter()
            .filter(|e| {
                e.agent
                    .as_ref()
                    .is_none_or(|a| !appended.disowned.contains(a))
            })
            .map(|e| e.seq)
            .collect();
        self.claims.numbered(&kept, &appended.events);
        self.wake.notify_one();
        if !appended.disowned.is_empty() {
            let head = appended.head;
            let lost = appended.disowned.into_iter().map(|a| (a, head)).collect();
            let _ = self.disowned.send(lost);
        }
        Ok(())
    }

    async fn checkpoint(
        &self,
        _agents: &[AgentRecord],
        _seq: u64,
        _full: bool,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    async fn read_events(&self, from: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        let mut events = self.store.read_shared(from, limit).await?;
        events.truncate(limit);
        Ok(events)
    }

    async fn agent_events(
        &self,
        id: &AgentId,
        since: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let mut out = Vec::new();
        let mut from = since + 1;
        while out.len() < limit {
            let events = self.store.read_shared(from, REPLAY_CHUNK).await?;
            let Some(last) = events.last().map(|e| e.seq) else {
                break;
            };
            out.extend(events.into_iter().filter(|e| e.agent.as_ref() == Some(id)));
            from = last + 1;
        }
        out.truncate(limit);
        Ok(out)
    }

    async fn agent_events_latest(
        &self,
        id: &AgentId,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let mut out = Vec::new();
        // (SurrealDB's integers are signed.)
        let mut before = i64::MAX as u64;
        while out.len() < limit {
            let segments = self.store.read_shared_back(before, 64).await?;
            if segments.is_empty() {
                break;
            }
            for seg in segments {
                if let Some(first) = seg.first() {
                    before = before.min(first.seq);
                }
                out.extend(
                    seg.into_iter()
                        .rev()
                        .filter(|e| e.agent.as_ref() == Some(id)),
                );
            }
        }
        out.truncate(limit);
        out.reverse();
        Ok(out)
    }

    async fn oldest_seq(&self) -> Result<Option<u64>, StoreError> {
        self.store.shared_oldest().await
    }

    async fn retain(&self, _retention: &Retention) -> Result<Option<u64>, StoreError> {
        self.oldest_seq().await
    }

    async fn sink_state(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.store.sink_state(key).await
    }

    async fn put_sink_state(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.store.put_sink_state_leased(key, value, &self.me).await
    }

    async fn policies(&self) -> Result<Vec<SavedPolicy>, StoreError> {
        self.store.policies().await
    }

    async fn put_policy(&self, saved: &SavedPolicy) -> Result<(), StoreError> {
        self.store.put_policy(saved).await
    }

    async fn claim_sink(&self, name: &str) -> Result<(), StoreError> {
        self.store.claim_sink(name, &self.me).await
    }

    async fn lost(&self) -> String {
        self.store.lost().await
    }

    async fn close(&self) {
        self.store.close().await
    }

    fn durability_warning(&self) -> Option<String> {
        self.store.durability_warning()
    }
}

/// How often the tail looks for other nodes' events when nothing woke it.
pub(crate) const TAIL_IDLE: Duration = Duration::from_millis(20);

/// Follows the shared log for ever: applies and publishes every batch, hands the agents taken
/// over by other nodes to `disown` and those this node adopted to `adopt`.
pub(crate) async fn run_tail(
    mut tail: LogTail,
    node: Arc<Node>,
    disown: impl Fn(Vec<(AgentId, u64)>) + Send + 'static,
    adopt: impl Fn(Vec<AgentRecord>) + Send + 'static,
) {
    let mut failing = false;
    loop {
        match tail.next_batch(1024).await {
            Ok(events) => {
                if failing {
                    info!("reading the shared log succeeds again");
                    failing = false;
                }
                match node.apply(events) {
                    Ok(applied) => {
                        if !applied.lost.is_empty() {
                            disown(applied.lost);
                        }
                        if !applied.adopted.is_empty() {
                            adopt(applied.adopted);
                        }
                    }
                    Err(e) => {
                        error!(error = %e, "the shared log cannot be followed; this node publishes nothing more");
                        return;
                    }
                }
            }
            Err(e) => {
                if !failing {
                    warn!(error = %e, "reading the shared log failed; trying again");
                    failing = true;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::Utc;
    use tokio::sync::{mpsc, Notify};

    use super::SharedLog;
    use crate::cluster::node::Claims;
    use crate::model::{AgentId, Event, EventBody, Status};
    use crate::store::conformance::event;
    use crate::store::{BatchId, Store, SurrealOptions, SurrealStore};

    #[tokio::test]
    async fn the_log_keeps_the_seqs_the_registry_gave_its_own_events() {
        let store = SurrealStore::open("mem://", SurrealOptions::default())
            .await
            .expect("open");
        // Node b registers x: x is b's.
        let x = Arc::new(Event {
            seq: 0,
            at: Utc::now(),
            agent: AgentId::new("x").ok(),
            kind: Some(Arc::from("worker")),
            node: Some(Arc::from("b")),
            body: EventBody::Registered {
                from: None,
                status: Status::Online,
                name: "x".into(),
                metadata: Default::default(),
                capabilities: vec![],
                incarnation: 1,
                heartbeat_interval_ms: None,
            },
        });
        let b = BatchId {
            node: "b.1".into(),
            first: 1,
        };
        store.append_owned(&b, &[x], false, "b").await.unwrap();
        // Node a's registry numbers its events 7, 8, 9; 8 is about x, and is left out.
        let claims = Arc::new(Claims::default());
        let (lost, _lost) = mpsc::unbounded_channel();
        let log = SharedLog::new(
            store.clone(),
            Arc::from("a"),
            Arc::new(Notify::new()),
            lost,
            claims.clone(),
        );
        let mine = [
            event(7, "y", Status::Online, Status::Degraded),
            event(8, "x", Status::Online, Status::Degraded),
            event(9, "y", Status::Degraded, Status::Online),
        ];
        log.append(&mine).await.unwrap();
        assert_eq!(
            (2..=4).map(|s| claims.local_seq(s)).collect::<Vec<_>>(),
            vec![Some(7), Some(9), None]
        );
        assert_eq!(claims.local_seq(1), None, "b's event");
    }
}
