//! Group commits are paced (`min_commit_interval`): when events come faster than the store
//! commits, those that gather soon after a commit started go into the next one, which starts
//! no sooner than the interval after it. A lone event (an idle store, or a writer that waits
//! for each answer) is written at once, and a full group is not held.

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

/// Registers `n` agents named `{prefix}{i}` at once; returns when all are durable.
async fn register_together(rt: &Arc<Runtime>, prefix: &str, n: usize) {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (rt, name) = (rt.clone(), format!("{prefix}{i}"));
            tokio::spawn(async move { register(&rt, &name).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn events_that_come_together_soon_after_a_commit_wait_for_the_next_one() {
    let (rt, _store) = start(paced(10_000)).await;
    let rt = Arc::new(rt);
    let t0 = Instant::now();
    register(&rt, "a").await;
    let before = batches(&rt).await;
    // Right after it, ten come together: at least some of them wait until the pace since
    // the last commit's start is over, and they share at most two commits (the first may go
    // alone, before the others arrive).
    register_together(&rt, "b", 10).await;
    assert!(
        t0.elapsed() >= PACE,
        "the next commit started {:?} after the last",
        t0.elapsed()
    );
    let commits = batches(&rt).await - before;
    assert!(commits <= 2, "ten registrations took {commits} commits");

    let log = all_events(&rt).await;
    assert!(
        log.iter().enumerate().all(|(i, e)| e.seq == i as u64 + 1),
        "gapless, nothing doubled: {log:?}"
    );
    Arc::into_inner(rt).unwrap().shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_writer_that_waits_for_each_answer_is_not_held() {
    let (rt, _store) = start(paced(10_000)).await;
    let t0 = Instant::now();
    for name in ["a", "b", "c", "d"] {
        register(&rt, name).await;
    }
    assert!(
        t0.elapsed() < PACE,
        "four lone registrations took {:?}",
        t0.elapsed()
    );
    // And an idle store, long after the last commit, writes at once too.
    tokio::time::sleep(PACE * 2).await;
    let t1 = Instant::now();
    register(&rt, "e").await;
    assert!(
        t1.elapsed() < PACE,
        "an idle store waited {:?}",
        t1.elapsed()
    );
    rt.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_full_group_is_not_held_by_the_pace() {
    let (rt, _store) = start(paced(2)).await;
    let rt = Arc::new(rt);
    register(&rt, "a").await;
    let t0 = Instant::now();
    register_together(&rt, "b", 4).await;
    assert!(
        t0.elapsed() < PACE,
        "full groups waited {:?} for the pace",
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
    let rt = Arc::new(rt);
    register(&rt, "a").await;
    let t0 = Instant::now();
    register_together(&rt, "b", 10).await;
    // The default interval (1 ms) would hold them.
    assert!(
        t0.elapsed() < Duration::from_millis(1),
        "commits waited {:?}",
        t0.elapsed()
    );
    Arc::into_inner(rt).unwrap().shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_group_a_checkpoint_wrote_leaves_the_next_event_unheld() {
    // A group held by the pace can be written before its wake-up: a checkpoint seals what
    // waits and writes it first. A lone event after that must still go at once, not wait for
    // the next checkpoint.
    let pace = Duration::from_millis(400);
    let t0 = Instant::now();
    let (rt, _store) = start(RuntimeConfig {
        min_commit_interval: pace,
        checkpoint_interval: Duration::from_secs(1),
        ..config()
    })
    .await;
    let rt = Arc::new(rt);
    // A commit at 0.7 s, then a group held until 1.1 s: the checkpoint at 1 s writes it.
    tokio::time::sleep_until(t0 + Duration::from_millis(700)).await;
    register(&rt, "a").await;
    register_together(&rt, "b", 10).await;
    tokio::time::sleep_until(t0 + Duration::from_millis(1_200)).await;
    let t1 = Instant::now();
    register(&rt, "z").await;
    assert!(
        t1.elapsed() < pace,
        "a lone event waited {:?} after a checkpoint wrote the held group",
        t1.elapsed()
    );
    Arc::into_inner(rt).unwrap().shutdown().await.unwrap();
}
