//! Subscriptions: `since` replays, `lagged`, and a snapshot taken while the fleet changes.

use super::*;

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
