//! A policy `set_policy` changed is saved: it outlives the runtime, until the configuration of
//! its kind changes.

mod common;

use std::time::Duration;

use common::*;
use vigil_actors::*;

/// The interval a new agent of `kind` is given.
async fn interval_of(rt: &Runtime, agent: &str, kind: &str) -> Duration {
    let h = rt
        .register(Registration::new(id(agent)).kind(kind))
        .await
        .expect("registered");
    h.heartbeat_interval()
}

fn every(secs: u64) -> Policy {
    Policy {
        heartbeat_interval: Duration::from_secs(secs),
        ..Policy::default()
    }
}

#[tokio::test]
async fn a_policy_set_at_runtime_outlives_a_restart_until_its_kind_is_configured_anew() {
    let store = MemStore::new();
    let cfg = RuntimeConfig {
        kinds: [("gpu".to_string(), every(20))].into(),
        ..config()
    };
    let rt = Runtime::start(cfg.clone(), store.clone()).await.unwrap();
    for kind in ["gpu", "cpu"] {
        rt.admin(AdminRequest::SetPolicy {
            kind: kind.into(),
            patch: PolicyPatch {
                heartbeat_interval: Some(Duration::from_secs(7)),
                ..Default::default()
            },
        })
        .await
        .unwrap();
    }
    assert_eq!(interval_of(&rt, "g1", "gpu").await, Duration::from_secs(7));
    rt.shutdown().await.unwrap();

    // Restarted with the same configuration: both changes hold.
    let rt = Runtime::start(cfg.clone(), store.clone()).await.unwrap();
    assert_eq!(interval_of(&rt, "g2", "gpu").await, Duration::from_secs(7));
    assert_eq!(interval_of(&rt, "c1", "cpu").await, Duration::from_secs(7));
    rt.shutdown().await.unwrap();

    // The operator configures gpu anew: the configuration holds for gpu, not for cpu.
    let changed = RuntimeConfig {
        kinds: [("gpu".to_string(), every(40))].into(),
        ..cfg
    };
    let rt = Runtime::start(changed, store.clone()).await.unwrap();
    assert_eq!(interval_of(&rt, "g3", "gpu").await, Duration::from_secs(40));
    assert_eq!(interval_of(&rt, "c2", "cpu").await, Duration::from_secs(7));
    rt.shutdown().await.unwrap();
}
