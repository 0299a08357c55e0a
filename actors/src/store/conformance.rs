//! The store conformance suite: one set of checks that every [`Store`] implementation must
//! pass. Call [`run_all`](crate::store::conformance::run_all) with a factory that makes a
//! fresh, empty store.

use std::future::Future;
use std::sync::Arc;

use chrono::{TimeZone, Utc};

use super::{Retention, Store};
use crate::model::{AgentId, AgentRecord, Event, EventBody, Reason, Reported, Status};

fn id(s: &str) -> AgentId {
    AgentId::new(s).expect("valid test id")
}

/// A transition event for tests.
pub fn event(seq: u64, agent: &str, from: Status, to: Status) -> Arc<Event> {
    Arc::new(Event {
        seq,
        at: Utc
            .timestamp_millis_opt(1_700_000_000_000 + seq as i64)
            .unwrap(),
        agent: Some(id(agent)),
        kind: Some("worker".into()),
        node: None,
        body: EventBody::Transition {
            from,
            to,
            reason: Reason::Admin,
            missed: None,
        },
    })
}

/// An agent record for tests.
pub fn record(agent: &str, status: Status) -> AgentRecord {
    let t = Utc.timestamp_millis_opt(1_700_000_000_000).unwrap();
    AgentRecord {
        jobs: Default::default(),
        id: id(agent),
        name: agent.into(),
        kind: "worker".into(),
        status,
        activity: None,
        reported: Reported::Healthy,
        metadata: [("zone".to_string(), "a".to_string())].into(),
        capabilities: vec!["x".into()],
        metrics: [("load".to_string(), 0.5)].into(),
        last_seen: Some(t),
        connected: false,
        incarnation: 3,
        registered_at: t,
        updated_at: t,
        heartbeat_interval_ms: Some(1000),
    }
}

/// Runs every check against fresh stores made by `make`.
pub async fn run_all<S, F, Fut>(make: F)
where
    S: Store,
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<S>>,
{
    // Each check on the heap: together inline, their futures outgrow a test thread's stack in
    // a debug build (a store's futures are large).
    Box::pin(empty_store_loads_nothing(&*make().await)).await;
    Box::pin(appended_events_read_back_in_order(&*make().await)).await;
    Box::pin(append_refuses_a_gap(&*make().await)).await;
    Box::pin(a_batch_retried_verbatim_is_kept_once(&*make().await)).await;
    Box::pin(checkpoint_and_replay(&*make().await)).await;
    Box::pin(agent_history(&*make().await)).await;
    Box::pin(retention_drops_whole_segments_never_past_the_checkpoint(
        &*make().await,
    ))
    .await;
    Box::pin(sink_state_round_trips(&*make().await)).await;
    Box::pin(saved_policies_round_trip(&*make().await)).await;
    Box::pin(an_agents_latest_events(&*make().await)).await;
}

async fn an_agents_latest_events(s: &dyn Store) {
    // a's events are seqs 1, 3, 5, ..., 19 across two segments; b's the even ones.
    let all: Vec<_> = (1..=20)
        .map(|i| {
            let who = if i % 2 == 1 { "a" } else { "b" };
            event(i, who, Status::Online, Status::Degraded)
        })
        .collect();
    s.append(&all[..7]).await.expect("append 1");
    s.append(&all[7..]).await.expect("append 2");
    let a = crate::model::AgentId::new("a").unwrap();
    let seqs = |v: Vec<Event>| v.iter().map(|e| e.seq).collect::<Vec<_>>();
    let latest = s.agent_events_latest(&a, 3).await.expect("latest");
    assert_eq!(seqs(latest), vec![15, 17, 19]);
    let all_a = s.agent_events_latest(&a, 100).await.expect("latest all");
    assert_eq!(seqs(all_a), (1..=19).step_by(2).collect::<Vec<_>>());
    let nobody = crate::model::AgentId::new("nobody").unwrap();
    assert!(s
        .agent_events_latest(&nobody, 5)
        .await
        .expect("none")
        .is_empty());
}

async fn saved_policies_round_trip(s: &dyn Store) {
    assert_eq!(s.policies().await.expect("read"), vec![]);
    let saved = |kind: &str, interval_ms: u64| crate::model::SavedPolicy {
        kind: kind.into(),
        policy: crate::model::Policy {
            heartbeat_interval: std::time::Duration::from_millis(interval_ms),
            ..crate::model::Policy::default()
        },
        base: crate::model::Policy::default(),
    };
    s.put_policy(&saved("worker", 5_000)).await.expect("put");
    s.put_policy(&saved("probe", 1_000)).await.expect("put");
    s.put_policy(&saved("worker", 7_000))
        .await
        .expect("replace");
    let mut got = s.policies().await.expect("read");
    got.sort_by(|a, b| a.kind.cmp(&b.kind));
    assert_eq!(got, vec![saved("probe", 1_000), saved("worker", 7_000)]);
}

async fn sink_state_round_trips(s: &dyn Store) {
    assert_eq!(s.sink_state("hook").await.expect("read"), None);
    s.put_sink_state("hook", r#"{"cursor":7}"#)
        .await
        .expect("put");
    s.put_sink_state("hook.dead", "[]").await.expect("put");
    s.put_sink_state("hook", r#"{"cursor":9}"#)
        .await
        .expect("replace");
    assert_eq!(
        s.sink_state("hook").await.expect("read").as_deref(),
        Some(r#"{"cursor":9}"#)
    );
    assert_eq!(
        s.sink_state("hook.dead").await.expect("read").as_deref(),
        Some("[]")
    );
    assert_eq!(s.sink_state("other").await.expect("read"), None);
}

async fn empty_store_loads_nothing(s: &dyn Store) {
    let l = s.load().await.expect("load");
    assert!(l.agents.is_empty());
    assert_eq!(l.last_seq, 0);
    assert_eq!(l.checkpoint_seq, 0);
    assert!(l.events_after.is_empty());
    assert_eq!(s.oldest_seq().await.expect("oldest"), None);
}

async fn appended_events_read_back_in_order(s: &dyn Store) {
    let batch1: Vec<_> = (1..=3)
        .map(|i| event(i, "a", Status::Online, Status::Degraded))
        .collect();
    let batch2: Vec<_> = (4..=10)
        .map(|i| event(i, "b", Status::Degraded, Status::Offline))
        .collect();
    s.append(&batch1).await.expect("append 1");
    s.append(&batch2).await.expect("append 2");
    let all = s.read_events(1, 100).await.expect("read");
    assert_eq!(
        all.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>()
    );
    assert_eq!(all[0], *batch1[0]);
    assert_eq!(all[9], *batch2[6]);
    let mid = s.read_events(3, 4).await.expect("read mid");
    assert_eq!(
        mid.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![3, 4, 5, 6]
    );
    assert!(s
        .read_events(11, 10)
        .await
        .expect("read past end")
        .is_empty());
    assert_eq!(s.oldest_seq().await.expect("oldest"), Some(1));
    assert_eq!(s.load().await.expect("load").last_seq, 10);
}

async fn append_refuses_a_gap(s: &dyn Store) {
    s.append(&[event(1, "a", Status::Online, Status::Degraded)])
        .await
        .expect("append");
    assert!(s
        .append(&[event(3, "a", Status::Degraded, Status::Offline)])
        .await
        .is_err());
    assert!(s
        .append(&[event(1, "a", Status::Degraded, Status::Offline)])
        .await
        .is_err());
    assert_eq!(s.read_events(0, 10).await.expect("read").len(), 1);
}

/// A write whose outcome was unknown (it landed, but the caller saw an error) is retried
/// with the same batch: the store accepts it, keeps one copy, and the log goes on.
async fn a_batch_retried_verbatim_is_kept_once(s: &dyn Store) {
    let first = vec![event(1, "a", Status::Online, Status::Degraded)];
    let batch = vec![
        event(2, "a", Status::Degraded, Status::Offline),
        event(3, "b", Status::Online, Status::Degraded),
    ];
    s.append(&first).await.expect("append");
    s.append(&batch).await.expect("append");
    s.append(&batch)
        .await
        .expect("the same batch again is accepted");
    // The same seqs with other content are not a retry.
    let other = vec![
        event(2, "a", Status::Degraded, Status::Online),
        event(3, "b", Status::Online, Status::Degraded),
    ];
    assert!(matches!(
        s.append(&other).await,
        Err(super::StoreError::OutOfOrder { .. })
    ));
    s.append(&[event(4, "a", Status::Offline, Status::Online)])
        .await
        .expect("the log goes on");
    let seqs: Vec<u64> = s
        .read_events(0, 100)
        .await
        .expect("read")
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, vec![1, 2, 3, 4], "one copy of each event");
    assert_eq!(s.load().await.expect("load").last_seq, 4);
}

async fn checkpoint_and_replay(s: &dyn Store) {
    let events: Vec<_> = (1..=5)
        .map(|i| event(i, "a", Status::Online, Status::Degraded))
        .collect();
    s.append(&events[..3]).await.expect("append");
    s.checkpoint(
        &[record("a", Status::Degraded), record("b", Status::Online)],
        3,
        true,
    )
    .await
    .expect("checkpoint");
    s.append(&events[3..])
        .await
        .expect("append after checkpoint");
    let l = s.load().await.expect("load");
    assert_eq!(l.checkpoint_seq, 3);
    assert_eq!(l.last_seq, 5);
    assert_eq!(
        l.events_after.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![4, 5]
    );
    let mut agents = l.agents.clone();
    agents.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(
        agents,
        vec![record("a", Status::Degraded), record("b", Status::Online)]
    );
    // A later incremental checkpoint is laid over the same agent.
    s.checkpoint(&[record("a", Status::Offline)], 5, false)
        .await
        .expect("checkpoint 2");
    let l = s.load().await.expect("load 2");
    assert_eq!(l.checkpoint_seq, 5);
    assert!(l.events_after.is_empty());
    let a = l.agents.iter().find(|r| r.id == id("a")).expect("agent a");
    assert_eq!(a.status, Status::Offline);
    assert_eq!(l.agents.len(), 2);
    assert!(l.checkpoint_rows.is_some_and(|n| n >= 2));
    // Another incremental one, then a full one that replaces them all.
    s.checkpoint(&[record("c", Status::Online)], 5, false)
        .await
        .expect("checkpoint 3");
    assert_eq!(s.load().await.expect("load 3").agents.len(), 3);
    s.checkpoint(
        &[record("a", Status::Online), record("c", Status::Degraded)],
        5,
        true,
    )
    .await
    .expect("checkpoint 4");
    let l = s.load().await.expect("load 4");
    let mut agents = l.agents.clone();
    agents.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(
        agents,
        vec![record("a", Status::Online), record("c", Status::Degraded)]
    );
    assert_eq!(l.checkpoint_rows, Some(2));
    // A mirror write never changes what a restore reads.
    s.mirror(&[record("z", Status::Offline)], Some(5))
        .await
        .expect("mirror");
    assert_eq!(s.load().await.expect("load 5").agents.len(), 2);
}

async fn agent_history(s: &dyn Store) {
    let events = vec![
        event(1, "a", Status::Online, Status::Degraded),
        event(2, "b", Status::Online, Status::Degraded),
        event(3, "a", Status::Degraded, Status::Offline),
        event(4, "b", Status::Degraded, Status::Offline),
        event(5, "a", Status::Offline, Status::Online),
    ];
    s.append(&events).await.expect("append");
    let a = s.agent_events(&id("a"), 0, 10).await.expect("history");
    assert_eq!(a.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 3, 5]);
    let a = s.agent_events(&id("a"), 1, 1).await.expect("history since");
    assert_eq!(a.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![3]);
    assert!(s
        .agent_events(&id("zz"), 0, 10)
        .await
        .expect("none")
        .is_empty());
}

async fn retention_drops_whole_segments_never_past_the_checkpoint(s: &dyn Store) {
    // Three segments: 1-4, 5-8, 9-10.
    let ev: Vec<_> = (1..=10)
        .map(|i| event(i, "a", Status::Online, Status::Degraded))
        .collect();
    s.append(&ev[0..4]).await.expect("append 1");
    s.append(&ev[4..8]).await.expect("append 2");
    s.append(&ev[8..10]).await.expect("append 3");
    let keep_two = Retention {
        max_events: Some(2),
        max_age: None,
    };
    // Nothing is checkpointed yet: a restart needs every event, so nothing is dropped.
    assert_eq!(s.retain(&keep_two).await.expect("retain"), Some(1));
    s.checkpoint(&[record("a", Status::Degraded)], 8, true)
        .await
        .expect("checkpoint");
    // Keep at least the newest 2 (9, 10): segments 1-4 and 5-8 go, whole.
    assert_eq!(s.retain(&keep_two).await.expect("retain"), Some(9));
    assert_eq!(s.oldest_seq().await.expect("oldest"), Some(9));
    let left = s.read_events(0, 100).await.expect("read");
    assert_eq!(left.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![9, 10]);
    // The log goes on from where it was; a restart still sees the last seq.
    s.append(&[event(11, "a", Status::Degraded, Status::Offline)])
        .await
        .expect("append after retention");
    assert_eq!(s.load().await.expect("load").last_seq, 11);
    // An age limit drops segments whose newest event is older than it (test events are
    // from 2023).
    s.checkpoint(&[], 11, false).await.expect("checkpoint 2");
    let by_age = Retention {
        max_age: Some(std::time::Duration::from_secs(3600)),
        max_events: None,
    };
    assert_eq!(s.retain(&by_age).await.expect("retain by age"), None);
    assert_eq!(s.load().await.expect("load").last_seq, 11);
}
