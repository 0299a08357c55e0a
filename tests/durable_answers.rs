//! Answers are sent only once what they report is durable, over real sockets: `registered`
//! on TCP, and REST writes (an eviction's 200 OK). While the store fails, writes are refused
//! with `overloaded` rather than queued without bound.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Client, Node};
use serde_json::json;
use vigil_actors::{FailingStore, MemStore, RuntimeConfig, Store};

/// A node on a store whose writes can be made to fail. It raises no `runtime_lagging` alert:
/// on a loaded machine one could be the first write to fail, and the writes these tests
/// fail must be their own.
async fn node() -> (Node, Arc<FailingStore<MemStore>>) {
    let store = FailingStore::new(MemStore::new());
    let cfg = RuntimeConfig {
        lag: vigil_actors::LagConfig {
            enabled: false,
            ..Default::default()
        },
        ..RuntimeConfig::default()
    };
    let node = Node::start(cfg, store.clone()).await;
    (node, store)
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

#[tokio::test]
async fn registered_is_sent_once_the_registration_is_durable() {
    let (node, store) = node().await;
    let mut c = Client::hello(node.tcp.local_addr(), "agent", None).await;
    c.send(json!({"type":"register","id":"a"})).await;
    c.expect("registered").await;
    assert_eq!(store.inner().len(), 1);

    // The store stops writing (no write has failed yet: the registration is taken).
    store.fail_writes(true);
    c.send(json!({"type":"register","id":"b","ref":7})).await;
    // The connection is served meanwhile: a ping is answered before b's `registered`.
    c.send(json!({"type":"ping","ref":8})).await;
    let pong = c.expect("pong").await;
    assert_eq!(pong["ref"], 8);
    assert_eq!(store.inner().len(), 1, "b's registration is not durable");

    store.fail_writes(false);
    let reg = c.expect("registered").await;
    assert_eq!(
        (reg["id"].as_str(), reg["ref"].as_u64()),
        (Some("b"), Some(7))
    );
    assert_eq!(store.inner().len(), 2, "durable before it was answered");
}

#[tokio::test]
async fn an_eviction_is_answered_once_durable_and_refused_while_the_store_fails() {
    let (node, store) = node().await;
    node.agents("a", "worker", 2).await;
    // The registrations are durable first: the write that fails must be the eviction's (a
    // registration failing first would get the eviction refused at once).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while store.inner().len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the registrations were never written"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    store.fail_writes(true);
    let url = node.url("/api/v1/agents/a0");
    let evict = tokio::spawn(async move { http().delete(url).send().await });
    // The eviction's event cannot be written: no answer yet, however long.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while node.rt.store_healthy() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the write never failed"
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !evict.is_finished(),
        "no answer before the eviction is durable"
    );

    // While the store is known to fail, another write is refused at once.
    let r = http()
        .delete(node.url("/api/v1/agents/a1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    let body: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "overloaded");

    store.fail_writes(false);
    let r = evict.await.unwrap().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let log = store.inner().read_events(0, 100).await.unwrap();
    assert!(
        log.iter()
            .any(|e| e.agent.as_ref().map(|a| a.as_str()) == Some("a0")
                && matches!(e.body, vigil_actors::EventBody::Deregistered { .. })),
        "the eviction was durable before its 200: {log:?}"
    );
}

#[tokio::test]
async fn an_eviction_does_not_hit_the_agents_next_registration() {
    let (node, store) = node().await;
    let mut a = Client::hello(node.tcp.local_addr(), "agent", None).await;
    a.send(json!({"type":"register","id":"x"})).await;
    a.expect("registered").await;
    let mut events = node
        .rt
        .subscribe(vigil_actors::SubscribeOptions::default())
        .await
        .unwrap();
    // Held by the store: the eviction, then the agent's registration again, are published
    // together once it writes again.
    store.fail_writes(true);
    let rt = node.rt.clone();
    let evict = tokio::spawn(async move {
        rt.admin(vigil_actors::AdminRequest::Evict {
            id: vigil_actors::AgentId::new("x").unwrap(),
            reason: None,
        })
        .await
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while node
        .rt
        .agent(&vigil_actors::AgentId::new("x").unwrap())
        .is_some()
    {
        assert!(tokio::time::Instant::now() < deadline, "never evicted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    a.send(json!({"type":"register","id":"x","ref":2})).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while node
        .rt
        .agent(&vigil_actors::AgentId::new("x").unwrap())
        .is_none()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never registered again"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    store.fail_writes(false);
    evict
        .await
        .unwrap()
        .expect("the eviction is answered once durable");
    // Both events are published, the eviction first.
    let mut seen = Vec::new();
    while seen.len() < 2 {
        if let Some(vigil_actors::SubscriptionItem::Event(e)) = events.next().await {
            seen.push(e.body.kind());
        }
    }
    assert_eq!(
        seen,
        vec![
            vigil_actors::EventKind::Deregistered,
            vigil_actors::EventKind::Registered
        ]
    );
    let reg = a.expect("registered").await;
    assert_eq!(reg["ref"], 2);
    // The eviction was about the registration before: the connection keeps the agent. (The
    // notice would have come within moments of the event; a second is allowed.)
    let frame = tokio::time::timeout(Duration::from_secs(1), a.recv()).await;
    assert!(frame.is_err(), "no frame, no eviction notice: {frame:?}");
    a.send(json!({"type":"heartbeat","id":"x","ref":3})).await;
    assert_eq!(a.expect("ack").await["ref"], 3);
}
