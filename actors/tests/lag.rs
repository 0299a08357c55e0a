//! Local health awareness: a runtime that is itself late does not blame its agents.

mod common;

use std::time::Duration;

use common::*;
use tokio::time::sleep;
use vigil_actors::*;

/// Agents beat every 500 ms with a 1 s interval; then every beat is held up for 2.4 s (as if
/// the runtime were starved and read nothing), while the runtime has measured a 2.5 s lag.
async fn starved_runtime(lag_aware: bool) -> Vec<Event> {
    let cfg = RuntimeConfig {
        lag: LagConfig {
            enabled: lag_aware,
            ..LagConfig::default()
        },
        ..config()
    };
    let (rt, _) = start(cfg).await;
    let mut agents = Vec::new();
    for i in 0..5 {
        agents.push(
            rt.register(Registration::new(id(&format!("a{i}"))))
                .await
                .unwrap(),
        );
    }
    let beat_all = |agents: &Vec<AgentHandle>| {
        for a in agents {
            a.heartbeat(Beat::healthy()).unwrap();
        }
    };
    for _ in 0..10 {
        sleep(Duration::from_millis(500)).await;
        beat_all(&agents);
    }
    sleep(Duration::from_millis(900)).await;
    rt.inject_lag(Duration::from_millis(2500));
    sleep(Duration::from_millis(1500)).await;
    for _ in 0..10 {
        beat_all(&agents);
        sleep(Duration::from_millis(500)).await;
    }
    let events = all_events(&rt).await;
    rt.shutdown().await.unwrap();
    events
}

fn transitions(events: &[Event]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e.body, EventBody::Transition { .. }))
        .count()
}

#[tokio::test(start_paused = true)]
async fn deadlines_are_extended_by_the_measured_lag() {
    let events = starved_runtime(true).await;
    assert_eq!(transitions(&events), 0, "{events:#?}");
}

#[tokio::test(start_paused = true)]
async fn without_lag_awareness_the_same_starvation_blames_the_agents() {
    // The control: the scenario above is one that does cause transitions.
    let events = starved_runtime(false).await;
    assert_eq!(
        transitions(&events),
        10,
        "each agent degraded and recovered: {events:#?}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_blocked_executor_is_measured_and_raises_one_runtime_lagging_alert() {
    let cfg = RuntimeConfig {
        lag: LagConfig {
            probe_interval: Duration::from_millis(10),
            threshold: Duration::from_millis(50),
            ..LagConfig::default()
        },
        ..config()
    };
    let (rt, _) = start(cfg).await;
    let mut sub = rt
        .subscribe(SubscribeOptions {
            filter: Filter {
                events: vec![EventKind::Alert],
                ..Default::default()
            },
            ..Default::default()
        })
        .await
        .unwrap();
    // Starve the runtime: this test's task blocks the only executor thread.
    std::thread::sleep(Duration::from_millis(300));
    let e = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("an alert within 10 s");
    let Some(SubscriptionItem::Event(e)) = e else {
        panic!("{e:?}")
    };
    match &e.body {
        EventBody::Alert {
            issue, severity, ..
        } => {
            assert_eq!(issue, "runtime_lagging");
            assert_eq!(*severity, Severity::High);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        rt.lag() >= Duration::from_millis(200),
        "measured {:?}",
        rt.lag()
    );
    // One alert per episode: a second starvation within the same episode raises none.
    std::thread::sleep(Duration::from_millis(200));
    let again = tokio::time::timeout(Duration::from_millis(300), sub.next()).await;
    assert!(again.is_err(), "no second alert: {again:?}");
    rt.shutdown().await.unwrap();
}

/// Real starvation, no injection: agents beat every 200 ms from a task of their own while the
/// only executor thread is blocked for 2.5 s (longer than their 1 s interval). The lag monitor
/// measures it from its own late wake-ups, and the agents, whose beats were held up by the
/// runtime and not by them, are not blamed.
#[tokio::test(flavor = "current_thread")]
async fn real_starvation_is_measured_and_blames_no_agent() {
    let cfg = RuntimeConfig {
        policy: Policy {
            heartbeat_interval: Duration::from_secs(1),
            ..Policy::default()
        },
        ..config()
    };
    let (rt, _) = start(cfg).await;
    let mut agents = Vec::new();
    for i in 0..5 {
        let reg = Registration::new(id(&format!("s{i}")));
        agents.push(rt.register(reg).await.unwrap());
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let beating = {
        let stop = stop.clone();
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for a in &agents {
                    a.heartbeat(Beat::healthy()).unwrap();
                }
                sleep(Duration::from_millis(200)).await;
            }
        })
    };
    sleep(Duration::from_secs(1)).await;
    assert!(
        rt.lag() < Duration::from_millis(500),
        "a quiet start: {:?}",
        rt.lag()
    );
    // Starve everything on this thread: the beats, the wheel, the probe.
    std::thread::sleep(Duration::from_millis(2500));
    sleep(Duration::from_millis(100)).await;
    let measured = rt.lag();
    assert!(
        measured >= Duration::from_secs(1),
        "a 2.5 s stall measured as {measured:?}"
    );
    sleep(Duration::from_millis(1500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    beating.await.unwrap();
    let events = all_events(&rt).await;
    assert_eq!(transitions(&events), 0, "{events:#?}");
    rt.shutdown().await.unwrap();
}
