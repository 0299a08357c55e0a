//! Checkpoints and the mirror as the registry drives them: incremental checkpoints of the
//! changed agents until they would hold more than twice the fleet, then a full one; the
//! mirror refreshed in bounded chunks after a checkpoint and marked complete at shutdown; and
//! a restart from the result restores every agent as it was.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use common::*;
use tokio::time::sleep;
use vigil_actors::store::Loaded;
use vigil_actors::*;

#[derive(Debug, Clone, PartialEq)]
enum Call {
    Checkpoint {
        rows: usize,
        full: bool,
    },
    Mirror {
        rows: usize,
        complete_at: Option<u64>,
    },
}

/// The in-memory store, with a record of the checkpoint and mirror calls it received.
struct Recording {
    inner: Arc<MemStore>,
    calls: Mutex<Vec<Call>>,
}

impl Recording {
    fn take(&self) -> Vec<Call> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
}

#[async_trait]
impl Store for Recording {
    async fn load(&self) -> Result<Loaded, StoreError> {
        self.inner.load().await
    }
    async fn append(&self, events: &[Arc<Event>]) -> Result<(), StoreError> {
        self.inner.append(events).await
    }
    async fn checkpoint(
        &self,
        agents: &[AgentRecord],
        seq: u64,
        full: bool,
    ) -> Result<(), StoreError> {
        self.calls.lock().unwrap().push(Call::Checkpoint {
            rows: agents.len(),
            full,
        });
        self.inner.checkpoint(agents, seq, full).await
    }
    async fn mirror(
        &self,
        agents: &[AgentRecord],
        complete_at: Option<u64>,
    ) -> Result<(), StoreError> {
        self.calls.lock().unwrap().push(Call::Mirror {
            rows: agents.len(),
            complete_at,
        });
        Ok(())
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

    async fn policies(&self) -> Result<Vec<SavedPolicy>, StoreError> {
        self.inner.policies().await
    }

    async fn put_policy(&self, saved: &SavedPolicy) -> Result<(), StoreError> {
        self.inner.put_policy(saved).await
    }

    async fn sink_state(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.inner.sink_state(key).await
    }

    async fn put_sink_state(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.inner.put_sink_state(key, value).await
    }
    async fn retain(&self, retention: &Retention) -> Result<Option<u64>, StoreError> {
        self.inner.retain(retention).await
    }
}

fn checkpoints(calls: &[Call]) -> Vec<(usize, bool)> {
    calls
        .iter()
        .filter_map(|c| match c {
            Call::Checkpoint { rows, full } => Some((*rows, *full)),
            _ => None,
        })
        .collect()
}

fn mirrored(calls: &[Call]) -> Vec<usize> {
    calls
        .iter()
        .filter_map(|c| match c {
            Call::Mirror { rows, .. } => Some(*rows),
            _ => None,
        })
        .collect()
}

async fn maintenance(rt: &Runtime, range: std::ops::Range<usize>, on: bool) {
    for i in range {
        rt.admin(AdminRequest::Maintenance {
            id: id(&format!("a{i}")),
            on,
        })
        .await
        .unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn checkpoints_stay_incremental_until_a_full_one_is_cheaper_and_the_mirror_catches_up() {
    let store = Arc::new(Recording {
        inner: MemStore::new(),
        calls: Mutex::new(Vec::new()),
    });
    let cfg = RuntimeConfig {
        checkpoint_interval: Duration::from_secs(10),
        ..config()
    };
    let rt = Runtime::start(cfg.clone(), store.clone()).await.unwrap();
    for i in 0..1500 {
        rt.register(
            Registration::new(id(&format!("a{i}"))).heartbeat_interval(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    }
    // First checkpoint: the 1,500 new agents, laid over an empty one; then the mirror
    // catches up in chunks of at most 1,000. (Ticks come at 10, 20, ... s; the test looks
    // a second after each.)
    sleep(Duration::from_secs(11)).await;
    let calls = store.take();
    assert_eq!(checkpoints(&calls), vec![(1500, false)]);
    let m = mirrored(&calls);
    assert!(m.iter().all(|n| *n <= 1000), "{m:?}");
    assert_eq!(m.iter().sum::<usize>(), 1500);

    // 1,000 changes: 2,500 records stored for 1,500 agents, still incremental.
    maintenance(&rt, 0..1000, true).await;
    sleep(Duration::from_secs(10)).await;
    let calls = store.take();
    assert_eq!(checkpoints(&calls), vec![(1000, false)]);
    assert_eq!(mirrored(&calls).iter().sum::<usize>(), 1000);

    // 1,000 more would make 3,500 > 2 x 1,500: this one is full.
    maintenance(&rt, 0..1000, false).await;
    sleep(Duration::from_secs(10)).await;
    let calls = store.take();
    assert_eq!(checkpoints(&calls), vec![(1500, true)]);

    // Nothing changed: no checkpoint, no mirror write.
    sleep(Duration::from_secs(10)).await;
    assert_eq!(store.take(), vec![]);

    // Shutdown: a full checkpoint, then the mark that the mirror is complete.
    maintenance(&rt, 0..10, true).await;
    rt.shutdown().await.unwrap();
    let calls = store.take();
    assert_eq!(checkpoints(&calls), vec![(1500, true)]);
    assert_eq!(
        calls.last(),
        Some(&Call::Mirror {
            rows: 0,
            complete_at: Some(3510) // 1,500 registrations, 2,010 maintenance changes
        }),
        "{calls:?}"
    );
    assert_eq!(mirrored(&calls).iter().sum::<usize>(), 10);

    // A restart restores every agent as it was.
    let rt = Runtime::start(cfg, store.clone()).await.unwrap();
    assert_eq!(get(&rt, "a5").await.status, Status::Maintenance);
    assert_eq!(get(&rt, "a500").await.status, Status::Unknown); // maintenance off
    assert_eq!(get(&rt, "a1499").await.status, Status::Online);
    rt.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn agents_replayed_from_the_log_are_in_the_next_checkpoint() {
    // a0 is checkpointed; a1 is only in the log when the process dies. After a restart
    // (which replays a1), the next checkpoint must include a1, or it would be lost once the
    // log before that checkpoint is trimmed.
    let store = FailingStore::new(MemStore::new());
    let cfg = RuntimeConfig {
        checkpoint_interval: Duration::from_secs(10),
        call_timeout: Duration::from_secs(5),
        ..config()
    };
    let reg = |s: &str| Registration::new(id(s)).heartbeat_interval(Duration::from_secs(3600));
    let rt = Runtime::start(cfg.clone(), store.clone()).await.unwrap();
    let mut sub = live(&rt).await;
    rt.register(reg("a0")).await.unwrap();
    sleep(Duration::from_secs(11)).await;
    rt.register(reg("a1")).await.unwrap();
    while next_event(&mut sub).await.agent != Some(id("a1")) {}
    // The process dies: no write after this one succeeds.
    store.fail_writes(true);
    assert!(rt.shutdown().await.is_err());
    let l = store.load().await.unwrap();
    assert_eq!(l.agents.len(), 1);
    assert_eq!(l.events_after.len(), 1);

    store.fail_writes(false);
    let rt = Runtime::start(cfg, store.clone()).await.unwrap();
    sleep(Duration::from_secs(11)).await;
    let l = store.load().await.unwrap();
    let mut ids: Vec<_> = l.agents.iter().map(|a| a.id.to_string()).collect();
    ids.sort();
    assert_eq!(ids, vec!["a0", "a1"]);
    assert!(l.events_after.is_empty());
    rt.shutdown().await.unwrap();
}
