//! Agents that left are dropped after `left_ttl`: from the view, the checkpoint and (on a
//! durable store) the mirror; the log keeps their events as retention allows.

mod common;

use std::time::Duration;

use common::*;
use tokio::time::sleep;
use vigil_actors::*;

#[tokio::test(start_paused = true)]
async fn agents_that_left_are_dropped_after_left_ttl() {
    let store = MemStore::new();
    let cfg = RuntimeConfig {
        checkpoint_interval: Duration::from_secs(60),
        left_ttl: Some(Duration::from_secs(3600)),
        max_heartbeat_interval: Duration::from_secs(24 * 3600),
        ..config()
    };
    let rt = Runtime::start(cfg.clone(), store.clone()).await.unwrap();
    for name in ["a", "b"] {
        rt.register(Registration::new(id(name)).heartbeat_interval(Duration::from_secs(24 * 3600)))
            .await
            .unwrap();
    }
    rt.admin(AdminRequest::Evict {
        id: id("a"),
        reason: None,
    })
    .await
    .unwrap();
    sleep(Duration::from_secs(120)).await;
    assert_eq!(get(&rt, "a").await.status, Status::Left, "kept for a while");

    sleep(Duration::from_secs(3600)).await;
    let gone = rt.admin(AdminRequest::Get { id: id("a") }).await;
    assert!(matches!(gone, Err(AdminError::UnknownAgent(_))), "{gone:?}");
    assert_eq!(get(&rt, "b").await.status, Status::Online);
    let stats = rt.stats().await.unwrap().registry;
    assert_eq!(stats.total, 1);
    assert_eq!(stats.agents[&Status::Left], 0);
    // Its events are still in the log.
    assert!(all_events(&rt)
        .await
        .iter()
        .any(|e| e.agent == Some(id("a"))));
    rt.shutdown().await.unwrap();

    // A restart does not bring it back, and the id registers as new.
    let loaded = store.load().await.unwrap();
    assert_eq!(
        loaded
            .agents
            .iter()
            .map(|a| a.id.as_str())
            .collect::<Vec<_>>(),
        vec!["b"]
    );
    let rt = Runtime::start(cfg, store.clone()).await.unwrap();
    assert!(rt.admin(AdminRequest::Get { id: id("a") }).await.is_err());
    let h = rt.register(Registration::new(id("a"))).await.unwrap();
    assert_eq!(h.incarnation(), 1);
    rt.shutdown().await.unwrap();
}
