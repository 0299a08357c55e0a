#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use vigil_actors::*;

pub fn id(s: &str) -> AgentId {
    AgentId::new(s).unwrap()
}

/// A config for tests: 1 s interval, degraded after 1, offline after 3, recovery 2.
pub fn config() -> RuntimeConfig {
    RuntimeConfig {
        policy: Policy {
            heartbeat_interval: Duration::from_secs(1),
            ..Policy::default()
        },
        checkpoint_interval: Duration::ZERO,
        ..RuntimeConfig::default()
    }
}

pub async fn start(cfg: RuntimeConfig) -> (Runtime, Arc<MemStore>) {
    let store = MemStore::new();
    let rt = Runtime::start(cfg, store.clone()).await.unwrap();
    (rt, store)
}

pub async fn live(rt: &Runtime) -> Subscription {
    rt.subscribe(SubscribeOptions::default()).await.unwrap()
}

/// The next event of a subscription (panics on anything else or on its end).
pub async fn next_event(sub: &mut Subscription) -> Arc<Event> {
    match tokio::time::timeout(Duration::from_secs(600), sub.next()).await {
        Ok(Some(SubscriptionItem::Event(e))) => e,
        other => panic!("expected an event, got {other:?}"),
    }
}

/// The next transition of a subscription, skipping other events.
pub async fn next_transition(sub: &mut Subscription) -> (Arc<Event>, Status, Status, Reason) {
    loop {
        let e = next_event(sub).await;
        if let EventBody::Transition {
            from, to, reason, ..
        } = e.body
        {
            return (e.clone(), from, to, reason);
        }
    }
}

pub async fn get(rt: &Runtime, s: &str) -> AgentRecord {
    match rt.admin(AdminRequest::Get { id: id(s) }).await.unwrap() {
        AdminResponse::Agent(a) => *a,
        other => panic!("unexpected {other:?}"),
    }
}

pub async fn all_events(rt: &Runtime) -> Vec<Event> {
    match rt
        .admin(AdminRequest::Events {
            id: None,
            since: Some(0),
            limit: Some(usize::MAX),
            latest: false,
        })
        .await
        .unwrap()
    {
        AdminResponse::Events(e) => e,
        other => panic!("unexpected {other:?}"),
    }
}
