//! A real process is killed (SIGKILL) in the middle of a storm of transitions, then restarted
//! on the same SurrealKV path: every event a subscriber had received is in the store, `seq` is
//! gapless, agents come back with their last status, and agents that reconnect within the
//! restart grace get no transition.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vigil::config::{Config, StoreConfig};
use vigil::core::{
    AdminRequest, AdminResponse, AgentId, Beat, Event, EventBody, Policy, Reason, Runtime, Status,
    SubscribeOptions, SubscriptionItem,
};

const AGENTS: usize = 200;
const KEEP: usize = 50;

fn policy() -> Policy {
    Policy {
        heartbeat_interval: Duration::from_millis(300),
        grace: Duration::from_millis(100),
        ..Policy::default()
    }
}

#[test]
fn sigkill_mid_storm_loses_no_delivered_event_and_a_restart_causes_no_storm() {
    let dir = std::env::temp_dir().join(format!("vigil-kill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let url = format!("surrealkv://{}/db", dir.display());

    let mut child = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args([
            "storm",
            "--agents",
            &AGENTS.to_string(),
            "--keep",
            &KEEP.to_string(),
        ])
        .env("VIGIL_STORE__URL", &url)
        .env("VIGIL_STORE__CHECKPOINT_INTERVAL", "500ms")
        .env("VIGIL_POLICY__HEARTBEAT_INTERVAL", "300ms")
        .env("VIGIL_POLICY__GRACE", "100ms")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("vigil storm starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout piped")).lines();
    let mut delivered: Vec<Event> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut offline = 0;
    // Kill it once part of the storm has been delivered: mid-storm.
    while offline < (AGENTS - KEEP) / 3 {
        assert!(Instant::now() < deadline, "storm did not come");
        let line = lines.next().expect("child alive").expect("a line");
        let e: Event = serde_json::from_str(&line).expect("an event");
        if e.body.status_after() == Some(Status::Offline) {
            offline += 1;
        }
        delivered.push(e);
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    // Lines already written before the kill were delivered too.
    for line in lines.map_while(Result::ok) {
        if let Ok(e) = serde_json::from_str::<Event>(&line) {
            delivered.push(e);
        }
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store_cfg = StoreConfig {
            url: url.clone(),
            ..StoreConfig::default()
        };
        // SurrealKV's lock is released with the process; the log is replayed on open.
        let store = vigil::serve::store::open(&store_cfg)
            .await
            .expect("reopen after SIGKILL");
        let all = store.read_events(1, usize::MAX).await.unwrap();
        let last = all.last().expect("events persisted").seq;
        assert!(
            all.iter().enumerate().all(|(i, e)| e.seq == i as u64 + 1),
            "gapless seq"
        );
        let by_seq: BTreeMap<u64, &Event> = all.iter().map(|e| (e.seq, e)).collect();
        for e in &delivered {
            assert_eq!(
                by_seq.get(&e.seq),
                Some(&e),
                "delivered event {} is in the store",
                e.seq
            );
        }
        // Each agent's last status, from the durable log.
        let mut expect: BTreeMap<AgentId, Status> = BTreeMap::new();
        for e in &all {
            if let (Some(a), Some(s)) = (&e.agent, e.body.status_after()) {
                expect.insert(a.clone(), s);
            }
        }
        assert_eq!(expect.len(), AGENTS);

        let cfg = Config::default();
        let mut runtime_cfg = cfg.runtime();
        runtime_cfg.policy = policy();
        let runtime = Runtime::start(runtime_cfg, store).await.expect("restart");
        let stats = runtime.stats().await.unwrap();
        assert_eq!(
            stats.registry.last_seq, last,
            "seq continues from the store"
        );
        let AdminResponse::Agents(agents) = runtime
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
        for a in &agents {
            assert_eq!(
                a.status, expect[&a.id],
                "{} restored with its last status",
                a.id
            );
        }
        // The agents that kept beating reconnect at once and beat through the grace.
        let mut sub = runtime
            .subscribe(SubscribeOptions::default())
            .await
            .unwrap();
        let keep: Vec<AgentId> = (0..KEEP).map(vigil::tools::storm::agent_id).collect();
        for id in &keep {
            assert_eq!(expect[id], Status::Online);
        }
        let until = Instant::now() + Duration::from_secs(2); // > restart grace (3 × 300 ms)
        while Instant::now() < until {
            for id in &keep {
                runtime.heartbeat(id, Beat::healthy()).unwrap();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let now_last = runtime.stats().await.unwrap().registry.durable_seq;
        let mut seq = last;
        while seq < now_last {
            let next = tokio::time::timeout(Duration::from_secs(60), sub.next())
                .await
                .unwrap_or_else(|_| {
                    panic!("no event after seq {seq} within 60 s (up to {now_last})")
                });
            let Some(SubscriptionItem::Event(e)) = next else {
                panic!("{next:?} after seq {seq}")
            };
            seq = e.seq;
            let agent = e.agent.clone().unwrap();
            assert!(
                !keep.contains(&agent),
                "agent {agent} kept beating yet got {e:?}"
            );
            // The others were not seen again: only restored non-offline ones go offline.
            match e.body {
                EventBody::Transition {
                    from,
                    to: Status::Offline,
                    reason: Reason::NotSeenSinceRestart,
                    ..
                } => {
                    assert_eq!(from, expect[&agent]);
                }
                ref other => panic!("unexpected {other:?}"),
            }
        }
        runtime.shutdown().await.unwrap();
    });
    let _ = std::fs::remove_dir_all(&dir);
}
