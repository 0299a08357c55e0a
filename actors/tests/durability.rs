//! The write pipeline under store faults: a batch that landed but reported an error, side
//! writes that never succeed, answers that wait for durability, and memory that stays
//! bounded while the store is down.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokio::time::sleep;
use vigil_actors::*;

/// Registers `n` agents named `{prefix}{i}` with a long interval (no transitions follow).
async fn register_quiet(rt: &Runtime, prefix: &str, n: usize) {
    for i in 0..n {
        rt.register(
            Registration::new(id(&format!("{prefix}{i}")))
                .heartbeat_interval(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    }
}

async fn landed_batch_does_not_stop_the_log<S: Store>(inner: Arc<S>) {
    let store = FailingStore::new(inner);
    let rt = Runtime::start(config(), store.clone()).await.unwrap();
    let mut sub = live(&rt).await;
    register_quiet(&rt, "a", 2).await;
    // The next write lands, but the runtime is told it failed (a lost answer): it retries
    // the same batch, which must be accepted, and the log goes on.
    store.land_then_fail(1);
    let rt = Arc::new(rt);
    let more = tokio::spawn({
        let rt = rt.clone();
        async move { register_quiet(&rt, "b", 3).await }
    });
    let mut registered = Vec::new();
    let mut seq = 0;
    while registered.len() < 5 {
        let e = next_event(&mut sub).await;
        seq += 1;
        assert_eq!(e.seq, seq, "every event, once, in order");
        if matches!(e.body, EventBody::Registered { .. }) {
            registered.push(e.agent.clone().unwrap());
        }
    }
    more.await.unwrap();
    let log = all_events(&rt).await;
    assert!(
        log.iter().enumerate().all(|(i, e)| e.seq == i as u64 + 1),
        "gapless, nothing doubled: {log:?}"
    );
    let mut ids: Vec<_> = log
        .iter()
        .filter(|e| matches!(e.body, EventBody::Registered { .. }))
        .filter_map(|e| e.agent.clone())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 5, "each registration once");
    assert!(store.refused() >= 1, "the fault was injected");
    assert!(rt.store_healthy());
    drop(sub);
    Arc::into_inner(rt).unwrap().shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_batch_that_landed_but_reported_an_error_does_not_stop_the_log() {
    landed_batch_does_not_stop_the_log(MemStore::new()).await;
}

#[tokio::test(start_paused = true)]
async fn a_checkpoint_that_always_fails_does_not_stall_the_log() {
    let store = FailingStore::new(MemStore::new());
    let cfg = RuntimeConfig {
        checkpoint_interval: Duration::from_secs(1),
        ..config()
    };
    let rt = Runtime::start(cfg, store.clone()).await.unwrap();
    let mut sub = live(&rt).await;
    store.fail_all_but_appends(true);
    // Checkpoints fail for a long while; events go on being written and published.
    for round in 0..20u64 {
        rt.register(
            Registration::new(id(&format!("a{round}")))
                .heartbeat_interval(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
        assert_eq!(next_event(&mut sub).await.seq, round + 1);
        sleep(Duration::from_secs(3)).await;
    }
    let stats = rt.stats().await.unwrap();
    assert!(
        stats.registry.side_writes_given_up >= 1,
        "failing checkpoints are given up: {:?}",
        stats.registry
    );
    assert_eq!(stats.registry.durable_seq, 20);
    assert!(rt.store_healthy(), "the log is healthy");
    // Once checkpoints work again, the agents changed meanwhile are in one.
    store.fail_all_but_appends(false);
    sleep(Duration::from_secs(30)).await;
    let loaded = store.inner().load().await.unwrap();
    assert_eq!(loaded.agents.len(), 20, "every agent checkpointed");
    assert_eq!(loaded.checkpoint_seq, 20);
    drop(sub);
    rt.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn admin_answers_wait_until_the_change_is_durable() {
    let store = FailingStore::new(MemStore::new());
    let rt = Arc::new(Runtime::start(config(), store.clone()).await.unwrap());
    rt.register(Registration::new(id("a")).heartbeat_interval(Duration::from_secs(3600)))
        .await
        .unwrap();
    // The store stops writing; no write has failed yet, so the request is taken.
    store.fail_writes(true);
    let answer = tokio::spawn({
        let rt = rt.clone();
        async move {
            rt.admin(AdminRequest::Maintenance {
                id: id("a"),
                on: true,
            })
            .await
        }
    });
    sleep(Duration::from_secs(2)).await;
    assert!(
        !answer.is_finished(),
        "no answer before the maintenance event is durable"
    );
    assert_eq!(store.inner().len(), 1);
    store.fail_writes(false);
    let r = answer.await.unwrap().expect("answered once durable");
    assert!(matches!(r, AdminResponse::Changed { changed: true, .. }));
    assert_eq!(
        store.inner().len(),
        2,
        "the event was durable before the answer"
    );
    Arc::into_inner(rt).unwrap().shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn writes_and_subscriptions_are_refused_while_the_store_fails() {
    let store = FailingStore::new(MemStore::new());
    let rt = Runtime::start(config(), store.clone()).await.unwrap();
    rt.register(Registration::new(id("a"))).await.unwrap();
    store.fail_writes(true);
    // a goes degraded: that write fails, and the store is known to be failing.
    sleep(Duration::from_secs(2)).await;
    assert!(!rt.store_healthy());
    let evict = rt
        .admin(AdminRequest::Evict {
            id: id("a"),
            reason: None,
        })
        .await;
    assert!(matches!(evict, Err(AdminError::Overloaded(_))), "{evict:?}");
    assert_eq!(evict.unwrap_err().code(), "overloaded");
    let sub = rt
        .subscribe(SubscribeOptions {
            snapshot: true,
            ..Default::default()
        })
        .await;
    assert!(matches!(sub, Err(RuntimeError::Overloaded(_))), "{sub:?}");
    // Supervision goes on meanwhile, and the agent is still there.
    assert_eq!(get(&rt, "a").await.status, Status::Degraded);
    store.fail_writes(false);
    sleep(Duration::from_secs(10)).await;
    assert!(rt.store_healthy());
    assert!(rt
        .subscribe(SubscribeOptions {
            snapshot: true,
            ..Default::default()
        })
        .await
        .is_ok());
    rt.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn memory_stays_bounded_while_the_store_fails_for_an_hour() {
    let store = FailingStore::new(MemStore::new());
    let limit = 16 * 1024;
    let cfg = RuntimeConfig {
        checkpoint_interval: Duration::from_secs(60),
        max_pending_bytes: limit,
        max_heartbeat_interval: Duration::from_secs(4 * 3600),
        ..config()
    };
    let rt = Arc::new(Runtime::start(cfg, store.clone()).await.unwrap());
    let mut sub = live(&rt).await;
    store.fail_writes(true);
    let mut refused = 0;
    let mut max_pending = 0;
    // An hour of new agents knocking every few seconds, and dashboards asking for snapshots.
    for i in 0..1200 {
        // Quiet agents: what grows here is only what the edges let in.
        let reg = Registration::new(id(&format!("n{i}")))
            .heartbeat_interval(Duration::from_secs(4 * 3600));
        let rt2 = rt.clone();
        let r = tokio::spawn(async move { rt2.register(reg).await });
        let failing = !rt.store_healthy();
        let snap = rt
            .subscribe(SubscribeOptions {
                snapshot: true,
                ..Default::default()
            })
            .await;
        if failing {
            assert!(snap.is_err(), "no snapshot while the store fails");
        }
        sleep(Duration::from_secs(3)).await;
        // Never answered `registered` while the store fails: refused at the edge once
        // the backlog is full, or not durable in time before that.
        match r.await.unwrap() {
            Err(RegisterError::Overloaded(_)) => refused += 1,
            other => assert!(other.is_err(), "{other:?}"),
        }
        let s = rt.stats().await.unwrap().registry;
        max_pending = max_pending.max(s.pending_bytes);
    }
    assert!(refused > 1000, "registrations are refused ({refused})");
    assert!(
        max_pending <= limit + 1024,
        "pending bytes bounded: {max_pending} > {limit}"
    );
    let total = rt.stats().await.unwrap().registry.total;
    assert!(
        total < 200,
        "agents accepted while the store failed: {total}"
    );
    // The store comes back: every event held is written and published, in order.
    store.fail_writes(false);
    let last = rt.stats().await.unwrap().registry.last_seq;
    for seq in 1..=last {
        assert_eq!(next_event(&mut sub).await.seq, seq);
    }
    drop(sub);
    Arc::into_inner(rt).unwrap().shutdown().await.unwrap();
}

#[cfg(feature = "surreal")]
#[tokio::test]
async fn a_batch_that_landed_but_reported_an_error_does_not_stop_a_surreal_log() {
    let store = vigil_actors::store::SurrealStore::open(
        "mem://",
        vigil_actors::store::SurrealOptions::default(),
    )
    .await
    .unwrap();
    landed_batch_does_not_stop_the_log(store).await;
}
