//! The runtime end to end, in process: deadlines on paused time, the heartbeat fast path,
//! recovery, restore, two runtimes; admin messages, subscriptions, and jobs and health in
//! the modules below.

#[path = "runtime/admin.rs"]
mod admin;
mod common;
#[path = "runtime/jobs_health.rs"]
mod jobs_health;
#[path = "runtime/subscriptions.rs"]
mod subscriptions;

use std::time::Duration;

use common::*;
use tokio::time::{sleep, Instant};
use vigil_actors::*;

const MS: Duration = Duration::from_millis(1);

fn within(dt: Duration, expected: Duration) -> bool {
    dt >= expected && dt <= expected + 5 * MS
}

#[tokio::test(start_paused = true)]
async fn ractor_timers_follow_paused_time() {
    use ractor::{Actor, ActorProcessingErr, ActorRef};
    struct Echo;
    impl Actor for Echo {
        type Msg = tokio::sync::mpsc::UnboundedSender<Instant>;
        type State = ();
        type Arguments = ();
        async fn pre_start(&self, _: ActorRef<Self::Msg>, _: ()) -> Result<(), ActorProcessingErr> {
            Ok(())
        }
        async fn handle(
            &self,
            _: ActorRef<Self::Msg>,
            tx: Self::Msg,
            _: &mut (),
        ) -> Result<(), ActorProcessingErr> {
            let _ = tx.send(Instant::now());
            Ok(())
        }
    }
    let (actor, _) = Actor::spawn(None, Echo, ()).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let t0 = Instant::now();
    let wall = std::time::Instant::now();
    actor.send_after(Duration::from_secs(3600), move || tx);
    let fired = rx.recv().await.unwrap();
    // An hour of paused time passed in (much) less than a second of real time.
    assert_eq!(fired - t0, Duration::from_secs(3600));
    assert!(wall.elapsed() < Duration::from_secs(5));
    actor.stop(None);
}

#[tokio::test(start_paused = true)]
async fn a_silent_agent_degrades_and_goes_offline_exactly_on_its_deadlines() {
    let (rt, _) = start(config()).await;
    let mut sub = live(&rt).await;
    let t0 = Instant::now();
    rt.register(Registration::new(id("a1")).kind("worker"))
        .await
        .unwrap();
    let e = next_event(&mut sub).await;
    assert_eq!(e.seq, 1);
    assert!(matches!(
        e.body,
        EventBody::Registered {
            from: None,
            status: Status::Online,
            incarnation: 1,
            ..
        }
    ));
    assert_eq!(e.kind.as_deref(), Some("worker"));

    let (e, from, to, reason) = next_transition(&mut sub).await;
    assert_eq!(
        (from, to, reason),
        (Status::Online, Status::Degraded, Reason::HeartbeatMissed)
    );
    assert!(
        within(t0.elapsed(), Duration::from_secs(1)),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(e.seq, 2);
    assert!(matches!(
        e.body,
        EventBody::Transition {
            missed: Some(1),
            ..
        }
    ));

    let (e, from, to, _) = next_transition(&mut sub).await;
    assert_eq!((from, to), (Status::Degraded, Status::Offline));
    assert!(
        within(t0.elapsed(), Duration::from_secs(3)),
        "{:?}",
        t0.elapsed()
    );
    assert!(matches!(
        e.body,
        EventBody::Transition {
            missed: Some(3),
            ..
        }
    ));
    assert_eq!(get(&rt, "a1").await.status, Status::Offline);

    // No other transition happens to an offline agent, however long we wait. It is still
    // connected (nothing closed its handle), so the health check says so, once.
    sleep(Duration::from_secs(60)).await;
    let events = all_events(&rt).await;
    assert_eq!(events.len(), 4, "{events:?}");
    assert!(matches!(
        &events[3].body,
        EventBody::Alert { issue, .. } if issue == "heartbeat_mismatch"
    ));
    rt.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn beats_keep_an_agent_online_without_events_then_it_recovers_after_two() {
    let (rt, _) = start(config()).await;
    let mut sub = live(&rt).await;
    let a = rt.register(Registration::new(id("a1"))).await.unwrap();
    next_event(&mut sub).await; // registered
    for _ in 0..40 {
        sleep(500 * MS).await;
        a.heartbeat(Beat::healthy()).unwrap();
    }
    assert_eq!(
        all_events(&rt).await.len(),
        1,
        "healthy beats cause no event"
    );
    let last_beat = Instant::now();
    let rec = get(&rt, "a1").await;
    assert_eq!(rec.status, Status::Online);
    assert!(rec.last_seen.is_some());

    let (_, _, to, _) = next_transition(&mut sub).await;
    assert_eq!(to, Status::Degraded);
    assert!(within(last_beat.elapsed(), Duration::from_secs(1)));

    // One healthy beat is not enough (recovery = 2) ...
    a.heartbeat(Beat::healthy()).unwrap();
    sleep(500 * MS).await;
    assert_eq!(get(&rt, "a1").await.status, Status::Degraded);
    // ... the second brings it straight back online.
    a.heartbeat(Beat::healthy()).unwrap();
    let (_, from, to, reason) = next_transition(&mut sub).await;
    assert_eq!(
        (from, to, reason),
        (Status::Degraded, Status::Online, Reason::HeartbeatRecovered)
    );
    rt.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn reported_health_degrades_and_recovers_with_its_own_reasons() {
    let (rt, _) = start(config()).await;
    let mut sub = live(&rt).await;
    let a = rt.register(Registration::new(id("a1"))).await.unwrap();
    next_event(&mut sub).await;
    a.heartbeat(Beat::reporting(Reported::Unhealthy)).unwrap();
    let (_, from, to, reason) = next_transition(&mut sub).await;
    assert_eq!(
        (from, to, reason),
        (Status::Online, Status::Degraded, Reason::ReportedUnhealthy)
    );
    assert_eq!(get(&rt, "a1").await.reported, Reported::Unhealthy);
    sleep(500 * MS).await;
    a.heartbeat(Beat::healthy()).unwrap();
    sleep(500 * MS).await;
    a.heartbeat(Beat::healthy()).unwrap();
    let (_, _, to, reason) = next_transition(&mut sub).await;
    assert_eq!((to, reason), (Status::Online, Reason::ReportedHealthy));
    rt.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_restart_restores_the_fleet_without_an_offline_storm() {
    let store = MemStore::new();
    let rt = Runtime::start(config(), store.clone()).await.unwrap();
    let a = rt.register(Registration::new(id("a"))).await.unwrap();
    rt.register(Registration::new(id("b"))).await.unwrap();
    rt.register(Registration::new(id("gone"))).await.unwrap();
    rt.deregister(&id("gone")).await.unwrap();
    a.heartbeat(Beat::healthy()).unwrap();
    rt.shutdown().await.unwrap();
    let persisted = store.len();
    assert_eq!(persisted, 4);

    let rt = Runtime::start(config(), store.clone()).await.unwrap();
    let stats = rt.stats().await.unwrap();
    assert_eq!(stats.registry.last_seq, 4, "seq continues from the store");
    assert_eq!(stats.registry.agents[&Status::Online], 2);
    assert_eq!(stats.registry.agents[&Status::Left], 1);
    let mut sub = live(&rt).await;
    let t0 = Instant::now();
    // a reconnects and beats within the restart grace (3 × 1 s); b never does.
    for _ in 0..10 {
        sleep(500 * MS).await;
        rt.heartbeat(&id("a"), Beat::healthy()).unwrap();
    }
    let (e, from, to, reason) = next_transition(&mut sub).await;
    assert_eq!(e.agent, Some(id("b")));
    assert_eq!(e.seq, 5);
    assert_eq!(
        (from, to, reason),
        (Status::Online, Status::Offline, Reason::NotSeenSinceRestart)
    );
    assert!(t0.elapsed() >= Duration::from_secs(3));
    assert_eq!(get(&rt, "a").await.status, Status::Online);
    assert_eq!(all_events(&rt).await.len(), 5, "a caused no event");
    assert!(rt.heartbeat(&id("gone"), Beat::healthy()).is_err());
    rt.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn two_runtimes_live_in_one_process() {
    let (r1, _) = start(config()).await;
    let (r2, _) = start(config()).await;
    r1.register(Registration::new(id("same"))).await.unwrap();
    let b = r2.register(Registration::new(id("same"))).await.unwrap();
    let mut s1 = live(&r1).await;
    // r1's agent goes degraded; r2's keeps beating and stays online.
    for _ in 0..4 {
        sleep(400 * MS).await;
        b.heartbeat(Beat::healthy()).unwrap();
    }
    let (_, _, to, _) = next_transition(&mut s1).await;
    assert_eq!(to, Status::Degraded);
    assert_eq!(get(&r2, "same").await.status, Status::Online);
    assert_eq!(all_events(&r2).await.len(), 1);
    r1.shutdown().await.unwrap();
    r2.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_cluster_node_stamps_its_events_and_a_single_node_does_not() {
    let mut cfg = config();
    cfg.node = Some("n1".into());
    let (rt, store) = start(cfg).await;
    let a = rt.register(Registration::new(id("a1"))).await.unwrap();
    drop(a);
    rt.admin(AdminRequest::Evict {
        id: id("a1"),
        reason: None,
    })
    .await
    .unwrap();
    let events = all_events(&rt).await;
    assert!(events.len() >= 2, "{events:?}");
    assert!(
        events.iter().all(|e| e.node.as_deref() == Some("n1")),
        "{events:?}"
    );
    // Stored as published: the node survives the store.
    let stored = store.read_events(1, 100).await.unwrap();
    assert!(stored.iter().all(|e| e.node.as_deref() == Some("n1")));
    rt.shutdown().await.unwrap();

    let (rt, _) = start(config()).await;
    rt.register(Registration::new(id("b1"))).await.unwrap();
    let events = all_events(&rt).await;
    assert!(events.iter().all(|e| e.node.is_none()));
    let text = serde_json::to_string(&events[0]).unwrap();
    assert!(
        !text.contains("node"),
        "a single node writes no node: {text}"
    );
    rt.shutdown().await.unwrap();
}
