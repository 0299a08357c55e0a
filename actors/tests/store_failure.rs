//! A failing store (disk full, write errors): nothing is published that was not written,
//! supervision goes on in memory, the fault is reported, and once writes succeed again every
//! held event is written and published in order — nothing acknowledged is lost.

mod common;

use std::time::Duration;

use common::*;
use tokio::time::sleep;
use vigil_actors::*;

#[tokio::test(start_paused = true)]
async fn events_are_held_while_the_store_fails_and_published_in_order_after() {
    let store = FailingStore::new(MemStore::new());
    let rt = Runtime::start(config(), store.clone()).await.unwrap();
    let mut sub = live(&rt).await;
    rt.register(Registration::new(id("a"))).await.unwrap();
    assert_eq!(next_event(&mut sub).await.seq, 1);
    assert!(rt.store_healthy());

    store.fail_writes(true);
    // Supervision goes on: a goes degraded then offline in memory ...
    sleep(Duration::from_secs(4)).await;
    assert_eq!(get(&rt, "a").await.status, Status::Offline);
    // b registers: it is supervised at once, but answered only once that is durable.
    let rt = std::sync::Arc::new(rt);
    let b = tokio::spawn({
        let rt = rt.clone();
        async move { rt.register(Registration::new(id("b"))).await }
    });
    sleep(Duration::from_millis(500)).await;
    assert!(!b.is_finished(), "b's registration is not durable yet");
    // ... but nothing unwritten is visible, and the fault is reported.
    let pending = tokio::time::timeout(Duration::from_secs(1), sub.next()).await;
    assert!(
        pending.is_err(),
        "no event may be published while the store fails: {pending:?}"
    );
    assert!(!rt.store_healthy());
    let stats = rt.stats().await.unwrap();
    assert_eq!(stats.registry.durable_seq, 1);
    // a: degraded, offline; b: registered, then degraded while we waited.
    assert_eq!(stats.registry.last_seq, 5);
    assert!(stats.registry.store_errors >= 1);
    assert!(store.refused() >= 1);
    assert_eq!(store.inner().len(), 1);

    // The disk has room again: the held events are written, then published, in order.
    store.fail_writes(false);
    for seq in 2..=5 {
        let e = next_event(&mut sub).await;
        assert_eq!(e.seq, seq);
    }
    assert!(rt.store_healthy());
    b.await
        .unwrap()
        .expect("b is registered once its event is durable");
    // (b may have gone offline meanwhile: the retry backoff had grown to seconds.)
    let log = all_events(&rt).await;
    assert!(log.len() >= 5);
    assert!(
        log.iter().enumerate().all(|(i, e)| e.seq == i as u64 + 1),
        "gapless"
    );
    drop(sub);
    std::sync::Arc::into_inner(rt)
        .expect("one owner")
        .shutdown()
        .await
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn shutdown_reports_a_store_that_never_recovers() {
    let store = FailingStore::new(MemStore::new());
    let cfg = RuntimeConfig {
        call_timeout: Duration::from_secs(30),
        ..config()
    };
    let rt = Runtime::start(cfg, store.clone()).await.unwrap();
    store.fail_writes(true);
    let rt = std::sync::Arc::new(rt);
    let a = tokio::spawn({
        let rt = rt.clone();
        async move { rt.register(Registration::new(id("a"))).await }
    });
    // Its registration is never durable: the caller is told so after its timeout.
    assert!(a.await.unwrap().is_err());
    let rt = std::sync::Arc::into_inner(rt).expect("one owner");
    // The drain waits for the write, which keeps failing: shutdown says so (after its
    // timeout) instead of claiming the events are safe.
    let r = tokio::time::timeout(Duration::from_secs(3600), rt.shutdown()).await;
    assert!(matches!(r, Ok(Err(_))), "{r:?}");
}

#[tokio::test(start_paused = true)]
async fn retention_drops_old_segments_and_an_older_since_must_resync() {
    let cfg = RuntimeConfig {
        event_window: 2,
        checkpoint_interval: Duration::from_secs(10),
        event_retention: Retention {
            max_events: Some(3),
            max_age: None,
        },
        ..config()
    };
    let (rt, store) = start(cfg).await;
    let mut sub = live(&rt).await;
    for i in 0..6 {
        rt.register(
            Registration::new(id(&format!("a{i}"))).heartbeat_interval(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
        next_event(&mut sub).await;
    }
    // After a checkpoint the retention runs: only the newest segments are kept.
    sleep(Duration::from_secs(11)).await;
    let oldest = match rt
        .admin(AdminRequest::Events {
            id: None,
            since: Some(0),
            limit: None,
            latest: false,
        })
        .await
        .unwrap()
    {
        AdminResponse::Events(e) => e.first().map(|e| e.seq).unwrap(),
        other => panic!("{other:?}"),
    };
    assert_eq!(oldest, 4, "segments 1-3 dropped, the newest 3 events kept");
    assert_eq!(store.len(), 3);
    let mut old = rt
        .subscribe(SubscribeOptions {
            since: Some(0),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        old.next().await,
        Some(SubscriptionItem::ResyncRequired { oldest })
    );
    assert_eq!(old.next().await, None);
    rt.shutdown().await.unwrap();
}
