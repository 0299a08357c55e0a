//! Admin messages and the rules of registration.

use super::*;

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
