//! The runtime end to end, in process: deadlines on paused time, the heartbeat fast path,
//! recovery, admin messages, snapshot/since/lagged subscriptions, restore, two runtimes.

mod common;

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
async fn admin_messages_change_and_query_the_fleet() {
    let (rt, _) = start(config()).await;
    let mut sub = live(&rt).await;
    let a = rt
        .register(Registration::new(id("a1")).kind("worker"))
        .await
        .unwrap();
    rt.register(Registration::new(id("b1")).kind("gpu"))
        .await
        .unwrap();
    next_event(&mut sub).await;
    next_event(&mut sub).await;

    // maintenance: on, deadlines ignored, off -> unknown, a beat -> online
    rt.admin(AdminRequest::Maintenance {
        id: id("a1"),
        on: true,
    })
    .await
    .unwrap();
    let (_, _, to, reason) = next_transition(&mut sub).await;
    assert_eq!((to, reason), (Status::Maintenance, Reason::MaintenanceOn));
    sleep(Duration::from_secs(10)).await; // b1 goes degraded and offline meanwhile
    assert_eq!(get(&rt, "a1").await.status, Status::Maintenance);
    let (_, _, to, _) = next_transition(&mut sub).await;
    assert_eq!(to, Status::Degraded);
    let (e, _, to, _) = next_transition(&mut sub).await;
    assert_eq!((e.agent.clone().unwrap(), to), (id("b1"), Status::Offline));
    rt.admin(AdminRequest::Maintenance {
        id: id("a1"),
        on: false,
    })
    .await
    .unwrap();
    let (_, _, to, reason) = next_transition(&mut sub).await;
    assert_eq!((to, reason), (Status::Unknown, Reason::MaintenanceOff));
    a.heartbeat(Beat::healthy()).unwrap();
    let (_, _, to, reason) = next_transition(&mut sub).await;
    assert_eq!((to, reason), (Status::Online, Reason::HeartbeatRecovered));

    // set_status, and refusals
    let r = rt
        .admin(AdminRequest::SetStatus {
            id: id("b1"),
            status: Status::Online,
            reason: Some("checked by hand".into()),
        })
        .await
        .unwrap();
    assert_eq!(
        r,
        AdminResponse::Changed {
            id: id("b1"),
            status: Status::Online,
            changed: true
        }
    );
    let (_, from, to, reason) = next_transition(&mut sub).await;
    assert_eq!(
        (from, to, reason),
        (Status::Offline, Status::Online, Reason::Admin)
    );
    let err = rt
        .admin(AdminRequest::SetStatus {
            id: id("b1"),
            status: Status::Left,
            reason: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), "invalid_field");
    let err = rt
        .admin(AdminRequest::Get { id: id("nope") })
        .await
        .unwrap_err();
    assert_eq!(err, AdminError::UnknownAgent(id("nope")));

    // list by kind / status / both, paging
    let list = |kind: Option<&str>, status: Option<Status>| AdminRequest::List {
        kind: kind.map(String::from),
        status,
        limit: None,
        after: None,
    };
    let ids = |r: AdminResponse| match r {
        AdminResponse::Agents(v) => v.into_iter().map(|a| a.id.to_string()).collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    assert_eq!(ids(rt.admin(list(None, None)).await.unwrap()), ["a1", "b1"]);
    assert_eq!(
        ids(rt.admin(list(Some("gpu"), None)).await.unwrap()),
        ["b1"]
    );
    assert_eq!(
        ids(rt
            .admin(list(Some("worker"), Some(Status::Online)))
            .await
            .unwrap()),
        ["a1"]
    );
    assert!(ids(rt
        .admin(list(Some("worker"), Some(Status::Offline)))
        .await
        .unwrap())
    .is_empty());
    let page = rt
        .admin(AdminRequest::List {
            kind: None,
            status: None,
            limit: Some(1),
            after: Some(id("a1")),
        })
        .await
        .unwrap();
    assert_eq!(ids(page), ["b1"]);

    // per-agent history from the store
    let hist = rt
        .admin(AdminRequest::Events {
            id: Some(id("a1")),
            since: None,
            limit: None,
            latest: false,
        })
        .await
        .unwrap();
    let AdminResponse::Events(hist) = hist else {
        panic!()
    };
    assert_eq!(hist.len(), 4); // registered, maintenance on, off, recovered
    assert!(hist.iter().all(|e| e.agent == Some(id("a1"))));

    // set_policy: the kind's agents follow the new interval at once
    rt.admin(AdminRequest::SetPolicy {
        kind: "gpu".into(),
        patch: PolicyPatch {
            heartbeat_interval: Some(Duration::from_secs(10)),
            ..Default::default()
        },
    })
    .await
    .unwrap();
    let before = Instant::now();
    let (e, _, to, _) = next_transition(&mut sub).await;
    // a1 (worker, 1 s) goes degraded first; b1 (gpu) now waits 10 s from the admin reset.
    assert_eq!((e.agent.clone().unwrap(), to), (id("a1"), Status::Degraded));
    let (e, _, to, _) = next_transition(&mut sub).await;
    assert_eq!((e.agent.clone().unwrap(), to), (id("a1"), Status::Offline));
    let (e, _, to, _) = next_transition(&mut sub).await;
    assert_eq!((e.agent.clone().unwrap(), to), (id("b1"), Status::Degraded));
    assert!(
        before.elapsed() >= Duration::from_secs(9),
        "{:?}",
        before.elapsed()
    );
    let bad = rt
        .admin(AdminRequest::SetPolicy {
            kind: "gpu".into(),
            patch: PolicyPatch {
                degraded_after: Some(0),
                ..Default::default()
            },
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), "invalid_field");

    // evict: a deregistered event, status left, heartbeats refused
    rt.admin(AdminRequest::Evict {
        id: id("a1"),
        reason: Some("decommissioned".into()),
    })
    .await
    .unwrap();
    let e = next_event(&mut sub).await;
    assert!(matches!(
        e.body,
        EventBody::Deregistered {
            reason: Reason::Evicted,
            from: Status::Offline
        }
    ));
    assert_eq!(get(&rt, "a1").await.status, Status::Left);
    assert!(a.heartbeat(Beat::healthy()).is_err());
    assert!(rt.heartbeat(&id("a1"), Beat::healthy()).is_err());

    let stats = rt.stats().await.unwrap();
    assert_eq!(stats.registry.total, 2);
    assert_eq!(stats.registry.agents[&Status::Left], 1);
    assert_eq!(stats.registry.agents[&Status::Degraded], 1);
    assert_eq!(stats.registry.durable_seq, stats.registry.last_seq);
    assert_eq!(stats.broadcast.subscribers, 1);
    rt.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn registration_rules() {
    let (rt, _) = start(config()).await;
    let mut sub = live(&rt).await;
    let err = rt
        .register(Registration::new(id("a1")).heartbeat_interval(Duration::from_millis(10)))
        .await
        .unwrap_err();
    assert!(matches!(err, RegisterError::InvalidField(_)), "{err:?}");
    let err = rt.register(Registration::default()).await.unwrap_err();
    assert_eq!(err, RegisterError::MissingField("id".into()));

    let a = rt
        .register(Registration::new(id("a1")).heartbeat_interval(Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(a.incarnation(), 1);
    assert_eq!(a.heartbeat_interval(), Duration::from_secs(5));
    next_event(&mut sub).await;
    let t0 = Instant::now();
    let (_, _, to, _) = next_transition(&mut sub).await;
    assert_eq!(to, Status::Degraded);
    assert!(within(t0.elapsed(), Duration::from_secs(5)));

    // Registering again: online again, incarnation + 1, a registered event from degraded.
    let a2 = rt.register(Registration::new(id("a1"))).await.unwrap();
    assert_eq!(a2.incarnation(), 2);
    let e = next_event(&mut sub).await;
    assert!(matches!(
        e.body,
        EventBody::Registered {
            from: Some(Status::Degraded),
            status: Status::Online,
            incarnation: 2,
            ..
        }
    ));
    // After leaving, registering brings it back with its history.
    rt.deregister(&id("a1")).await.unwrap();
    let e = next_event(&mut sub).await;
    assert!(matches!(
        e.body,
        EventBody::Deregistered {
            reason: Reason::Deregistered,
            ..
        }
    ));
    let a3 = rt.register(Registration::new(id("a1"))).await.unwrap();
    assert_eq!(a3.incarnation(), 3);
    let e = next_event(&mut sub).await;
    assert!(matches!(
        e.body,
        EventBody::Registered {
            from: Some(Status::Left),
            ..
        }
    ));
    a3.heartbeat(Beat::healthy()).unwrap();
    rt.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn since_replays_from_the_store_and_window_then_goes_live() {
    let cfg = RuntimeConfig {
        event_window: 4,
        ..config()
    };
    let (rt, _) = start(cfg).await;
    for i in 0..20 {
        rt.register(Registration::new(id(&format!("a{i:02}"))))
            .await
            .unwrap();
    }
    // 20 registered events; the window holds only the last 4.
    let mut sub = rt
        .subscribe(SubscribeOptions {
            since: Some(3),
            ..Default::default()
        })
        .await
        .unwrap();
    for seq in 4..=20 {
        assert_eq!(next_event(&mut sub).await.seq, seq);
    }
    // then live: the first deadline of everyone
    let e = next_event(&mut sub).await;
    assert_eq!(e.seq, 21);
    assert!(matches!(e.body, EventBody::Transition { .. }));

    // A filtered replay: only one agent's events.
    let mut one = rt
        .subscribe(SubscribeOptions {
            since: Some(0),
            filter: Filter {
                ids: vec![id("a07")],
                ..Default::default()
            },
            ..Default::default()
        })
        .await
        .unwrap();
    let e = next_event(&mut one).await;
    assert_eq!((e.seq, e.agent.clone()), (8, Some(id("a07"))));
    let e = next_event(&mut one).await;
    assert_eq!(e.agent, Some(id("a07")));
    assert!(matches!(
        e.body,
        EventBody::Transition {
            to: Status::Degraded,
            ..
        }
    ));
    rt.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_subscriber_that_falls_behind_gets_lagged_and_the_others_do_not() {
    let cfg = RuntimeConfig {
        subscriber_queue: 4,
        ..config()
    };
    let (rt, _) = start(cfg).await;
    let mut slow = live(&rt).await;
    let mut fast = live(&rt).await;
    for i in 0..10 {
        rt.register(Registration::new(id(&format!("a{i}"))))
            .await
            .unwrap();
        assert_eq!(next_event(&mut fast).await.seq, i + 1);
    }
    // The slow one held 4 events, then was ended with lagged at the last it got.
    for seq in 1..=4 {
        assert_eq!(next_event(&mut slow).await.seq, seq);
    }
    assert_eq!(
        slow.next().await,
        Some(SubscriptionItem::Lagged { last_seq: 4 })
    );
    assert_eq!(slow.next().await, None);
    // It resumes with since: last_seq and misses nothing.
    let mut resumed = rt
        .subscribe(SubscribeOptions {
            since: Some(4),
            ..Default::default()
        })
        .await
        .unwrap();
    for seq in 5..=10 {
        assert_eq!(next_event(&mut resumed).await.seq, seq);
    }
    let stats = rt.stats().await.unwrap();
    assert_eq!(stats.broadcast.lagged_total, 1);
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_taken_during_changes_is_followed_by_exactly_the_later_events() {
    let (rt, _) = start(config()).await;
    let rt = std::sync::Arc::new(rt);
    let n = 30;
    for i in 0..n {
        rt.register(
            Registration::new(id(&format!("a{i}"))).heartbeat_interval(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    }
    let driver = {
        let rt = rt.clone();
        tokio::spawn(async move {
            let statuses = [
                Status::Degraded,
                Status::Offline,
                Status::Online,
                Status::Unknown,
            ];
            for k in 0..600 {
                let _ = rt
                    .admin(AdminRequest::SetStatus {
                        id: id(&format!("a{}", k % n)),
                        status: statuses[(k / n) % statuses.len()],
                        reason: None,
                    })
                    .await
                    .unwrap();
                if k % 7 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    tokio::task::yield_now().await;
    let mut sub = rt
        .subscribe(SubscribeOptions {
            snapshot: true,
            ..Default::default()
        })
        .await
        .unwrap();
    driver.await.unwrap();
    let Some(SubscriptionItem::Snapshot(snap)) = sub.next().await else {
        panic!("snapshot first")
    };
    let mut state: std::collections::HashMap<AgentId, Status> = snap
        .agents
        .iter()
        .map(|a| (a.id.clone(), a.status))
        .collect();
    assert_eq!(state.len(), n);
    let last = rt.stats().await.unwrap().registry.last_seq;
    let mut expect = snap.seq + 1;
    while expect <= last {
        let e = next_event(&mut sub).await;
        assert_eq!(e.seq, expect, "no gap, no duplicate after the snapshot");
        if let EventBody::Transition { from, to, .. } = e.body {
            let cur = state.get_mut(e.agent.as_ref().unwrap()).unwrap();
            assert_eq!(*cur, from, "event {} follows the snapshot's state", e.seq);
            *cur = to;
        }
        expect += 1;
    }
    let AdminResponse::Agents(now) = rt
        .admin(AdminRequest::List {
            kind: None,
            status: None,
            limit: None,
            after: None,
        })
        .await
        .unwrap()
    else {
        panic!()
    };
    for a in now {
        assert_eq!(
            state[&a.id], a.status,
            "snapshot + events = the final state"
        );
    }
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

fn job(j: &str, state: JobState, progress: Option<f64>) -> JobReport {
    JobReport {
        job: j.into(),
        state,
        progress,
        error: None,
    }
}

fn job_event(e: &Event) -> (String, Option<String>, String, Option<String>) {
    match &e.body {
        EventBody::Job {
            job,
            from,
            to,
            error,
            ..
        } => (job.clone(), from.clone(), to.clone(), error.clone()),
        other => panic!("expected a job event, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn activity_and_jobs_are_events_only_on_change_and_jobs_fail_with_their_agent() {
    let store = MemStore::new();
    let rt = Runtime::start(config(), store.clone()).await.unwrap();
    let mut sub = live(&rt).await;
    let a = id("a");
    rt.register(Registration::new(a.clone())).await.unwrap();
    next_event(&mut sub).await; // registered

    rt.report_activity(&a, "working", Some("step 1".into()))
        .unwrap();
    rt.report_activity(&a, "working", Some("step 2".into()))
        .unwrap(); // same activity: no event
    rt.report_activity(&a, "tool_calling", None).unwrap();
    let e = next_event(&mut sub).await;
    assert_eq!(
        e.body,
        EventBody::Activity {
            from: None,
            to: "working".into(),
            detail: Some("step 1".into())
        }
    );
    let e = next_event(&mut sub).await;
    assert_eq!(
        e.body,
        EventBody::Activity {
            from: Some("working".into()),
            to: "tool_calling".into(),
            detail: None
        }
    );
    assert_eq!(
        get(&rt, "a").await.activity.as_deref(),
        Some("tool_calling")
    );

    rt.report_job(&a, job("j1", JobState::Running, Some(0.2)))
        .unwrap();
    rt.report_job(&a, job("j1", JobState::Running, Some(0.2)))
        .unwrap(); // no change
    rt.report_job(&a, job("j2", JobState::Assigned, None))
        .unwrap();
    rt.report_job(&a, job("j2", JobState::Completed, Some(1.0)))
        .unwrap();
    let got: Vec<_> = [
        next_event(&mut sub).await,
        next_event(&mut sub).await,
        next_event(&mut sub).await,
    ]
    .iter()
    .map(|e| job_event(e))
    .collect();
    assert_eq!(
        got,
        vec![
            ("j1".into(), None, "running".into(), None),
            ("j2".into(), None, "assigned".into(), None),
            (
                "j2".into(),
                Some("assigned".into()),
                "completed".into(),
                None
            ),
        ]
    );

    // Silent: degraded, then offline; j1 (unfinished) fails right after the offline.
    let (_, _, to, _) = next_transition(&mut sub).await;
    assert_eq!(to, Status::Degraded);
    let (_, _, to, _) = next_transition(&mut sub).await;
    assert_eq!(to, Status::Offline);
    let e = next_event(&mut sub).await;
    assert_eq!(
        job_event(&e),
        (
            "j1".into(),
            Some("running".into()),
            "failed".into(),
            Some("agent_offline".into())
        )
    );
    let stats = rt.stats().await.unwrap();
    assert_eq!(stats.registry.jobs.get(&JobState::Failed), Some(&1));
    assert_eq!(stats.registry.jobs.get(&JobState::Completed), Some(&1));
    // Back online with a job under way when the runtime stops.
    rt.register(Registration::new(a.clone())).await.unwrap();
    rt.report_job(&a, job("j3", JobState::Running, Some(0.5)))
        .unwrap();
    let last = rt.stats().await.unwrap().registry.last_seq;
    assert_eq!(get(&rt, "a").await.jobs.len(), 1);
    rt.shutdown().await.unwrap();

    // After a restart (from the checkpoint) the activity and the unfinished job are as they
    // were: repeating them makes no event, and the job fails when its agent leaves.
    let rt = Runtime::start(config(), store.clone()).await.unwrap();
    assert_eq!(
        get(&rt, "a").await.activity.as_deref(),
        Some("tool_calling")
    );
    rt.register(Registration::new(a.clone())).await.unwrap();
    rt.report_activity(&a, "tool_calling", None).unwrap();
    rt.report_job(&a, job("j3", JobState::Running, Some(0.5)))
        .unwrap();
    rt.deregister(&a).await.unwrap();
    let events = all_events(&rt).await;
    let after: Vec<_> = events.iter().filter(|e| e.seq > last).collect();
    assert_eq!(after.len(), 3, "{after:?}");
    assert!(matches!(after[0].body, EventBody::Registered { .. }));
    assert!(matches!(after[1].body, EventBody::Deregistered { .. }));
    assert_eq!(
        job_event(after[2]),
        (
            "j3".into(),
            Some("running".into()),
            "failed".into(),
            Some("agent_left".into())
        )
    );
    assert!(get(&rt, "a").await.jobs.is_empty());
    // A departed agent's reports are dropped.
    rt.report_activity(&a, "idle", None).unwrap();
    rt.report_job(&a, job("j4", JobState::Running, None))
        .unwrap();
    rt.shutdown().await.unwrap();
    assert_eq!(store.len() as u64, last + 3);
}

fn health_config(health: HealthConfig) -> RuntimeConfig {
    RuntimeConfig { health, ..config() }
}

/// The alerts of the log with this issue.
fn alerts<'a>(log: &'a [Event], issue: &'a str) -> impl Iterator<Item = &'a Event> + 'a {
    log.iter()
        .filter(move |e| matches!(&e.body, EventBody::Alert { issue: i, .. } if i == issue))
}

#[tokio::test(start_paused = true)]
async fn a_connected_agent_gone_silent_raises_one_heartbeat_mismatch_per_episode() {
    let (rt, _) = start(health_config(HealthConfig {
        check_interval: Duration::from_secs(5),
        ..HealthConfig::default()
    }))
    .await;
    let mut sub = rt
        .subscribe(SubscribeOptions {
            filter: Filter {
                events: vec![EventKind::Alert],
                ..Filter::default()
            },
            ..SubscribeOptions::default()
        })
        .await
        .unwrap();
    let t0 = Instant::now();
    let a = rt
        .register(Registration::new(id("a1")).kind("worker"))
        .await
        .unwrap();

    // Offline at 3 s and still connected: the check at 5 s says so.
    let e = next_event(&mut sub).await;
    assert!(
        within(t0.elapsed(), Duration::from_secs(5)),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(e.agent, Some(id("a1")));
    assert_eq!(e.kind.as_deref(), Some("worker"));
    match &e.body {
        EventBody::Alert {
            severity,
            issue,
            detail,
            ..
        } => {
            assert_eq!(
                (*severity, issue.as_str()),
                (Severity::High, "heartbeat_mismatch")
            );
            assert!(
                detail.starts_with("agent a1: connected but offline"),
                "{detail}"
            );
        }
        other => panic!("expected an alert, got {other:?}"),
    }

    // Five more checks find it again: no second alert.
    sleep(Duration::from_secs(26)).await;
    let log = all_events(&rt).await;
    assert_eq!(alerts(&log, "heartbeat_mismatch").count(), 1, "{log:?}");

    // It comes back and stays long enough for a check to see it online (the finding is
    // resolved and forgotten), then goes silent again: a new episode, a new alert.
    for _ in 0..12 {
        a.heartbeat(Beat::healthy()).unwrap();
        sleep(500 * MS).await;
    }
    assert_eq!(get(&rt, "a1").await.status, Status::Online);
    let silent = Instant::now();
    let e = next_event(&mut sub).await;
    assert!(matches!(&e.body, EventBody::Alert { issue, .. } if issue == "heartbeat_mismatch"));
    assert!(
        silent.elapsed() >= Duration::from_secs(3),
        "only once offline again"
    );
    sleep(Duration::from_secs(21)).await;
    let log = all_events(&rt).await;
    assert_eq!(alerts(&log, "heartbeat_mismatch").count(), 2, "{log:?}");
    rt.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn many_agents_offline_at_once_raise_one_mass_offline_and_every_transition() {
    // 40 agents; more than 30% (13) within 30 s is a mass failure.
    let (rt, _) = start(health_config(HealthConfig {
        check_interval: Duration::from_secs(3600),
        ..HealthConfig::default()
    }))
    .await;
    let mut handles = Vec::new();
    for i in 0..40 {
        let h = rt
            .register(Registration::new(id(&format!("a{i:02}"))))
            .await
            .unwrap();
        handles.push(h);
    }
    // Ten keep beating; thirty fall silent and go offline together at 3 s.
    for _ in 0..20 {
        sleep(500 * MS).await;
        for h in &handles[..10] {
            h.heartbeat(Beat::healthy()).unwrap();
        }
    }
    let log = all_events(&rt).await;
    let offline: Vec<&Event> = log
        .iter()
        .filter(|e| e.body.status_after() == Some(Status::Offline))
        .collect();
    assert_eq!(offline.len(), 30, "every transition is recorded");
    let mass: Vec<&Event> = alerts(&log, "mass_offline").collect();
    assert_eq!(mass.len(), 1, "{log:?}");
    let alert = mass[0];
    assert_eq!(alert.agent, None);
    assert!(matches!(
        &alert.body,
        EventBody::Alert { severity: Severity::High, detail, .. }
            if detail.starts_with("13 of 40 agents went offline within 30s")
    ));
    // Raised right after the transition that made it massive: the 13th.
    let before = offline.iter().filter(|e| e.seq < alert.seq).count();
    assert_eq!(before, 13);
    assert_eq!(
        rt.stats().await.unwrap().registry.agents[&Status::Offline],
        30
    );
    rt.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn health_report_gives_the_summary_and_the_findings() {
    let (rt, _) = start(health_config(HealthConfig {
        stale_connection: Duration::from_secs(5),
        extended_offline: Duration::from_secs(4),
        ..HealthConfig::default()
    }))
    .await;
    let reg = |s: &str| Registration::new(id(s)).kind("worker");
    let ok = rt.register(reg("ok")).await.unwrap();
    let sick = rt.register(reg("sick")).await.unwrap();
    // A long interval: online for 10 s without a beat, stale after 5.
    rt.register(reg("quiet").heartbeat_interval(Duration::from_secs(10)))
        .await
        .unwrap();
    // Silent and connected: offline at 3 s.
    rt.register(reg("gone")).await.unwrap();
    // Disconnected and set offline at once: offline for longer than 4 s by the report.
    let away = rt.register(reg("away")).await.unwrap();
    away.disconnected().unwrap();
    rt.admin(AdminRequest::SetStatus {
        id: id("away"),
        status: Status::Offline,
        reason: None,
    })
    .await
    .unwrap();
    rt.register(reg("maint")).await.unwrap();
    rt.admin(AdminRequest::Maintenance {
        id: id("maint"),
        on: true,
    })
    .await
    .unwrap();
    rt.register(reg("left")).await.unwrap();
    rt.deregister(&id("left")).await.unwrap();
    for _ in 0..12 {
        sleep(500 * MS).await;
        ok.heartbeat(Beat::healthy()).unwrap();
        sick.heartbeat(Beat::reporting(Reported::Degraded)).unwrap();
    }

    let report = rt.health_report().await.unwrap();
    assert_eq!(
        report.summary,
        HealthSummary {
            total: 6,
            online: 2,
            degraded: 1,
            offline: 2,
            maintenance: 1,
            unknown: 0,
            left: 1,
        }
    );
    let found: Vec<(&str, HealthIssue, Severity)> = report
        .agents
        .iter()
        .map(|f| (f.id.as_str(), f.issue, f.severity))
        .collect();
    assert_eq!(
        found,
        [
            ("away", HealthIssue::ExtendedOffline, Severity::High),
            ("gone", HealthIssue::HeartbeatMismatch, Severity::High),
            ("quiet", HealthIssue::StaleConnection, Severity::Warning),
            ("sick", HealthIssue::DegradedPerformance, Severity::Warning),
        ]
    );
    assert!(report.agents.iter().all(|f| &*f.kind == "worker"));

    // The admin operation answers the same, in the documented shape.
    let AdminResponse::Health(via_admin) = rt.admin(AdminRequest::HealthReport).await.unwrap()
    else {
        panic!("expected a health report");
    };
    assert_eq!(via_admin.summary, report.summary);
    assert_eq!(via_admin.agents, report.agents);
    let v = serde_json::to_value(&*via_admin).unwrap();
    assert_eq!(v["summary"]["total"], 6);
    assert_eq!(v["agents"][1]["issue"], "heartbeat_mismatch");
    assert_eq!(v["agents"][1]["severity"], "high");
    assert_eq!(v["agents"][1]["id"], "gone");
    rt.shutdown().await.unwrap();
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
