//! A crashed agent actor is restarted from the registry's record: no event is lost or doubled,
//! and the agent goes on being supervised.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use tokio::time::sleep;
use vigil_actors::*;

/// Checks the whole log: gapless seqs, and per agent a chain of real changes.
fn check_log(events: &[Event]) -> HashMap<AgentId, Vec<(Status, Status)>> {
    let mut chains: HashMap<AgentId, Vec<(Status, Status)>> = HashMap::new();
    let mut status: HashMap<AgentId, Status> = HashMap::new();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1, "gapless seq");
        if e.body.kind() == EventKind::Alert {
            continue; // the health check's, counted by the test
        }
        let id = e.agent.clone().unwrap();
        match &e.body {
            EventBody::Registered { .. } => {
                status.insert(id, Status::Online);
            }
            EventBody::Transition { from, to, .. } => {
                assert_ne!(from, to);
                assert_eq!(
                    status[&id], *from,
                    "event {} follows the previous status",
                    e.seq
                );
                status.insert(id.clone(), *to);
                chains.entry(id).or_default().push((*from, *to));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    chains
}

#[tokio::test(start_paused = true)]
async fn a_panicking_agent_actor_is_restarted_without_losing_or_doubling_events() {
    let (rt, _) = start(config()).await;
    let mut sub = live(&rt).await;
    let n = 10;
    let mut handles = Vec::new();
    for i in 0..n {
        handles.push(
            rt.register(Registration::new(id(&format!("a{i}"))))
                .await
                .unwrap(),
        );
    }
    let beating: Arc<Mutex<HashSet<usize>>> = Arc::new(Mutex::new((0..n).collect()));
    let beater = {
        let beating = beating.clone();
        let handles = handles.clone();
        tokio::spawn(async move {
            loop {
                sleep(Duration::from_millis(250)).await;
                let set = beating.lock().unwrap().clone();
                for i in set {
                    // A beat during the restart window may be refused; the next one lands.
                    let _ = handles[i].heartbeat(Beat::healthy());
                }
            }
        })
    };
    let mut seen = Vec::new();
    for _ in 0..n {
        seen.push(next_event(&mut sub).await);
    }

    // 1. Crash an online agent that keeps beating: it stays online, no event.
    sleep(Duration::from_secs(2)).await;
    assert!(handles[3].inject_crash());
    sleep(Duration::from_secs(3)).await;
    assert_eq!(get(&rt, "a3").await.status, Status::Online);
    assert_eq!(all_events(&rt).await.len(), n);

    // 2. Crash a degraded agent: no second degraded; it recovers when it beats again.
    beating.lock().unwrap().remove(&5);
    let e = next_event(&mut sub).await;
    assert_eq!(e.agent, Some(id("a5")));
    assert!(matches!(
        e.body,
        EventBody::Transition {
            to: Status::Degraded,
            ..
        }
    ));
    seen.push(e);
    assert!(handles[5].inject_crash());
    sleep(Duration::from_millis(100)).await;
    beating.lock().unwrap().insert(5);
    let e = next_event(&mut sub).await;
    assert_eq!(e.agent, Some(id("a5")));
    assert!(matches!(
        e.body,
        EventBody::Transition {
            from: Status::Degraded,
            to: Status::Online,
            ..
        }
    ));
    seen.push(e);

    // 3. The restarted a3 is still supervised: silence makes it degraded, then offline.
    beating.lock().unwrap().remove(&3);
    for want in [Status::Degraded, Status::Offline] {
        let e = next_event(&mut sub).await;
        assert_eq!(e.agent, Some(id("a3")));
        assert_eq!(e.body.status_after(), Some(want));
        seen.push(e);
    }

    // 4. A storm: everyone stops; two actors crash right as their deadlines fall.
    beating.lock().unwrap().clear();
    sleep(Duration::from_millis(999)).await;
    assert!(handles[0].inject_crash());
    assert!(handles[1].inject_crash());
    let mut offline = HashSet::from([id("a3")]);
    while offline.len() < n {
        let e = next_event(&mut sub).await;
        if e.body.status_after() == Some(Status::Offline) {
            offline.insert(e.agent.clone().unwrap());
        }
        seen.push(e);
    }
    beater.abort();
    sleep(Duration::from_secs(30)).await;

    let log = all_events(&rt).await;
    let subscribed: Vec<Event> = seen.iter().map(|e| (**e).clone()).collect();
    // The subscriber stopped reading at the last offline transition; after it come only the
    // health check's alerts.
    let (read, later) = log.split_at(subscribed.len().min(log.len()));
    assert_eq!(
        read, subscribed,
        "the subscriber saw exactly the durable log"
    );
    assert!(later.iter().all(|e| e.body.kind() == EventKind::Alert));
    // The whole fleet went offline within a second: one mass_offline alert, and still every
    // transition (checked below).
    let mass = log
        .iter()
        .filter(|e| matches!(&e.body, EventBody::Alert { issue, .. } if issue == "mass_offline"))
        .count();
    assert_eq!(mass, 1);
    let chains = check_log(&log);
    for i in 0..n {
        let agent = id(&format!("a{i}"));
        let chain = &chains[&agent];
        let last = chain.last().unwrap().1;
        assert_eq!(last, Status::Offline, "{agent} ends offline");
        let offline_count = chain
            .iter()
            .filter(|(_, to)| *to == Status::Offline)
            .count();
        assert_eq!(offline_count, 1, "{agent}: one offline event, {chain:?}");
    }
    assert_eq!(
        chains[&id("a0")],
        vec![
            (Status::Online, Status::Degraded),
            (Status::Degraded, Status::Offline)
        ]
    );
    assert_eq!(
        chains[&id("a1")],
        vec![
            (Status::Online, Status::Degraded),
            (Status::Degraded, Status::Offline)
        ]
    );
    rt.shutdown().await.unwrap();
}
