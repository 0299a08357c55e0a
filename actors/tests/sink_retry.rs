//! A sink's retries on simulated time: exponential backoff with jitter between attempts, a
//! dead letter after `max_attempts`, the cursor moving on, and a sink whose cursor is saved
//! resuming after a restart without skipping an event.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use vigil_actors::{
    async_trait, AdminRequest, AgentHandle, AgentId, Event, MemStore, Registration, Runtime,
    RuntimeConfig, Sink, SinkConfig, SinkError, StartAt, Store,
};

/// Fails the first `fail` deliveries; records when each attempt came and what it carried.
struct Flaky {
    fail: Mutex<usize>,
    attempts: Mutex<Vec<(Instant, Vec<u64>)>>,
    delivered: Mutex<Vec<u64>>,
}

impl Flaky {
    fn new(fail: usize) -> Arc<Self> {
        Arc::new(Flaky {
            fail: Mutex::new(fail),
            attempts: Mutex::default(),
            delivered: Mutex::default(),
        })
    }
}

#[async_trait]
impl Sink for Flaky {
    async fn deliver(&self, events: &[Arc<Event>]) -> Result<(), SinkError> {
        let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
        self.attempts
            .lock()
            .unwrap()
            .push((Instant::now(), seqs.clone()));
        let mut fail = self.fail.lock().unwrap();
        if *fail > 0 {
            *fail -= 1;
            return Err(SinkError::Retry("receiver down".into()));
        }
        self.delivered.lock().unwrap().extend(seqs);
        Ok(())
    }
}

fn config(name: &str, max_attempts: u32) -> SinkConfig {
    let mut c = SinkConfig::new(name, "test");
    c.max_attempts = max_attempts;
    c.backoff_initial = Duration::from_millis(100);
    c.backoff_max = Duration::from_millis(800);
    c.start = StartAt::Beginning;
    c
}

/// Agents `a0`, `a1`, ... registered (their handles keep them).
async fn register(rt: &Runtime, n: usize) -> Vec<AgentHandle> {
    let mut handles = Vec::new();
    for i in 0..n {
        let id = AgentId::new(format!("a{i}")).unwrap();
        handles.push(rt.register(Registration::new(id)).await.unwrap());
    }
    handles
}

/// One transition: agent `id` into maintenance.
async fn maintenance(rt: &Runtime, id: &str) {
    let id = AgentId::new(id).unwrap();
    rt.admin(AdminRequest::Maintenance { id, on: true })
        .await
        .unwrap();
}

async fn until(mut cond: impl FnMut() -> bool) {
    for _ in 0..100_000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("condition never held");
}

#[tokio::test(start_paused = true)]
async fn backoff_doubles_with_jitter_and_gives_up_into_a_dead_letter() {
    let rt = Runtime::start(RuntimeConfig::default(), MemStore::new())
        .await
        .unwrap();
    let sink = Flaky::new(5);
    rt.add_sink(config("flaky", 5), sink.clone()).await.unwrap();
    let _a = rt
        .register(Registration::new(AgentId::new("a").unwrap()))
        .await
        .unwrap();
    // Five attempts of the first batch fail: it becomes a dead letter.
    until(|| sink.attempts.lock().unwrap().len() >= 5).await;
    loop {
        if rt
            .sinks()
            .await
            .first()
            .is_some_and(|s| s.dead_letters == 1)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let attempts = sink.attempts.lock().unwrap().clone();
    assert!(attempts.iter().take(5).all(|(_, s)| s == &vec![1]));
    // Waits between attempts: 100, 200, 400, 800 ms, each with jitter in [half, full].
    for (i, w) in attempts.windows(2).take(4).enumerate() {
        let gap = w[1].0 - w[0].0;
        let full = Duration::from_millis(100 << i).min(Duration::from_millis(800));
        assert!(
            gap >= full / 2 && gap <= full + Duration::from_millis(10),
            "wait {i}: {gap:?}, expected within [{:?}, {full:?}]",
            full / 2
        );
    }
    let dead = rt.dead_letters("flaky").await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].first_seq, dead[0].last_seq, dead[0].attempts),
        (1, 1, 5)
    );
    // The sink moved on: the next event is delivered.
    maintenance(&rt, "a").await;
    until(|| sink.delivered.lock().unwrap().contains(&2)).await;
    let status = rt.sinks().await.remove(0);
    assert_eq!(status.delivered_seq, 2);
    assert_eq!(status.consecutive_failures, 0);
    assert_eq!(status.dead_letters, 1);
    // Replayed, the dead letter is delivered and gone.
    assert_eq!(rt.replay_dead_letters("flaky", None).await.unwrap(), (1, 0));
    assert_eq!(*sink.delivered.lock().unwrap(), vec![2, 1]);
    rt.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_restarted_sink_resumes_from_its_saved_cursor() {
    let store = MemStore::new();
    let rt = Runtime::start(RuntimeConfig::default(), store.clone())
        .await
        .unwrap();
    let first = Flaky::new(0);
    rt.add_sink(config("trail", 10), first.clone())
        .await
        .unwrap();
    let handles = register(&rt, 5).await;
    until(|| first.delivered.lock().unwrap().len() == 5).await;
    drop(handles);
    rt.shutdown().await.unwrap();

    let rt = Runtime::start(RuntimeConfig::default(), store)
        .await
        .unwrap();
    let second = Flaky::new(0);
    rt.add_sink(config("trail", 10), second.clone())
        .await
        .unwrap();
    maintenance(&rt, "a0").await;
    until(|| !second.delivered.lock().unwrap().is_empty()).await;
    // Only what came after the cursor: nothing twice, nothing skipped.
    let last = rt.stats().await.unwrap().registry.last_seq;
    until(|| second.delivered.lock().unwrap().last() == Some(&last)).await;
    let got = second.delivered.lock().unwrap().clone();
    assert_eq!(got, (6..=last).collect::<Vec<_>>());
    rt.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_new_sink_starts_after_the_published_events() {
    let rt = Runtime::start(RuntimeConfig::default(), MemStore::new())
        .await
        .unwrap();
    let _handles = register(&rt, 3).await;
    let sink = Flaky::new(0);
    let mut cfg = config("late", 10);
    cfg.start = StartAt::Now;
    rt.add_sink(cfg, sink.clone()).await.unwrap();
    // Started: its cursor is the published seq.
    loop {
        let s = rt.sinks().await.remove(0);
        if s.state == "ok" {
            assert_eq!(s.delivered_seq, 3);
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    maintenance(&rt, "a0").await;
    until(|| !sink.delivered.lock().unwrap().is_empty()).await;
    assert_eq!(*sink.delivered.lock().unwrap(), vec![4]);
    rt.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_sink_whose_saved_state_is_unreadable_does_not_start() {
    let store = MemStore::new();
    store.put_sink_state("odd", "not json").await.unwrap();
    let rt = Runtime::start(RuntimeConfig::default(), store)
        .await
        .unwrap();
    let sink = Flaky::new(0);
    rt.add_sink(config("odd", 10), sink.clone()).await.unwrap();
    loop {
        let s = rt.sinks().await.remove(0);
        if s.state == "failed" {
            assert!(s.last_error.unwrap().contains("cursor is unreadable"));
            break;
        }
        assert_ne!(s.state, "ok", "a sink with an unreadable cursor started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _a = rt
        .register(Registration::new(AgentId::new("a").unwrap()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(sink.attempts.lock().unwrap().is_empty());
    rt.shutdown().await.unwrap();
}
