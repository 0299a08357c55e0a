//! Group commits are paced (`min_commit_interval`): an event on an idle store is written at
//! once, and the events that come soon after a commit started gather into the next one,
//! which starts no sooner than the interval after it. A full group is not held.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokio::time::Instant;
use vigil_actors::*;

const PACE: Duration = Duration::from_millis(50);

fn paced(max_batch: usize) -> RuntimeConfig {
    RuntimeConfig {
        min_commit_interval: PACE,
        max_batch,
        ..config()
    }
}

async fn register(rt: &Runtime, name: &str) {
    rt.register(Registration::new(id(name)).heartbeat_interval(Duration::from_secs(3600)))
        .await
        .unwrap();
}

async fn batches(rt: &Runtime) -> u64 {
    rt.stats().await.unwrap().registry.batches
}

/// Registers every name at once; returns when all are durable.
async fn register_together(rt: &Arc<Runtime>, names: &[&str]) {
    let tasks: Vec<_> = names
        .iter()
        .map(|n| {
            let (rt, n) = (rt.clone(), n.to_string());
            tokio::spawn(async move { register(&rt, &n).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn an_idle_store_writes_at_once_and_a_busy_one_gathers_the_next_commit() {
    let (rt, _store) = start(paced(10_000)).await;
    let rt = Arc::new(rt);
    let before = batches(&rt).await;

    // Idle: the registration is durable without waiting for the pace.
    let t0 = Instant::now();
    register(&rt, "a").await;
    assert!(
        t0.elapsed() < PACE,
        "an idle store waited {:?}",
        t0.elapsed()
    );
    assert_eq!(batches(&rt).await, before + 1);

    // Right after it, three come together: they wait until the pace since the last commit's
    // start is over, and go in one commit.
    register_together(&rt, &["b", "c", "d"]).await;
    assert!(
        t0.elapsed() >= PACE,
        "the next commit started {:?} after the last",
        t0.elapsed()
    );
    assert_eq!(batches(&rt).await, before + 2, "one commit for the three");

    // Idle again once the interval has passed: at once.
    tokio::time::sleep(PACE * 2).await;
    let t1 = Instant::now();
    register(&rt, "e").await;
    assert!(
        t1.elapsed() < PACE,
        "an idle store waited {:?}",
        t1.elapsed()
    );

    let log = all_events(&rt).await;
    assert!(
        log.iter().enumerate().all(|(i, e)| e.seq == i as u64 + 1),
        "gapless, nothing doubled: {log:?}"
    );
    Arc::into_inner(rt).unwrap().shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_full_group_is_not_held_by_the_pace() {
    let (rt, _store) = start(paced(2)).await;
    let rt = Arc::new(rt);
    register(&rt, "a").await;
    let t0 = Instant::now();
    register_together(&rt, &["b", "c"]).await;
    assert!(
        t0.elapsed() < PACE,
        "a full group waited {:?} for the pace",
        t0.elapsed()
    );
    Arc::into_inner(rt).unwrap().shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn no_interval_starts_each_commit_as_soon_as_the_last_is_done() {
    let (rt, _store) = start(RuntimeConfig {
        min_commit_interval: Duration::ZERO,
        ..config()
    })
    .await;
    let t0 = Instant::now();
    for name in ["a", "b", "c"] {
        register(&rt, name).await;
    }
    // The default interval (1 ms) would hold the second and the third.
    assert!(
        t0.elapsed() < Duration::from_millis(1),
        "commits waited {:?}",
        t0.elapsed()
    );
    rt.shutdown().await.unwrap();
}
