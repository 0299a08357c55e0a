//! No policy and no slack makes the state machine's deadline arithmetic overflow (an agent
//! actor that panics is restarted, and panics again on the same policy); and `set_policy`
//! refuses values beyond the bounds.

mod common;

use std::time::Duration;

use common::*;
use proptest::prelude::*;
use tokio::time::Instant;
use vigil_actors::fsm::{Input, Liveness};
use vigil_actors::model::{OnDisconnect, Policy, Reason, Reported, Status};
use vigil_actors::{AdminError, AdminRequest, PolicyPatch, Registration};

fn extreme_duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::MAX),
        Just(Duration::from_secs(u64::MAX)),
        (0u64..=u64::MAX).prop_map(Duration::from_millis),
        (0u64..=10_000).prop_map(Duration::from_millis),
    ]
}

fn extreme_count() -> impl Strategy<Value = u32> {
    prop_oneof![Just(u32::MAX), 1u32..=u32::MAX, 1u32..=5]
}

fn extreme_policy() -> impl Strategy<Value = Policy> {
    (
        extreme_duration(),
        extreme_count(),
        extreme_count(),
        extreme_count(),
        extreme_duration(),
        prop::option::of(extreme_duration()),
    )
        .prop_map(|(interval, a, b, recovery, grace, restart_grace)| Policy {
            heartbeat_interval: interval.max(Duration::from_millis(1)),
            degraded_after: a.min(b),
            offline_after: a.max(b),
            recovery,
            grace,
            on_disconnect: OnDisconnect::Offline,
            restart_grace,
        })
}

fn input() -> impl Strategy<Value = Input> {
    prop_oneof![
        4 => Just(Input::Heartbeat(Reported::Healthy)),
        1 => Just(Input::Heartbeat(Reported::Unhealthy)),
        3 => extreme_duration().prop_map(|slack| Input::Tick { slack }),
        1 => Just(Input::Disconnected),
        1 => Just(Input::SetStatus(Status::Degraded)),
        1 => any::<bool>().prop_map(Input::Maintenance),
        1 => Just(Input::Register),
        1 => Just(Input::Leave(Reason::Evicted)),
    ]
}

proptest! {
    #[test]
    fn no_policy_slack_or_input_makes_a_step_panic(
        first in extreme_policy(),
        second in extreme_policy(),
        steps in prop::collection::vec((input(), 0u64..=10 * 365 * 24 * 3600), 1..40),
    ) {
        let t0 = Instant::now();
        let mut now = t0;
        let mut fsm = Liveness::restored(first.clone(), Status::Online, Reported::Healthy, now);
        let _ = fsm.next_deadline();
        fsm.grace_from(now);
        let _ = fsm.slide();
        for (i, (input, advance_s)) in steps.into_iter().enumerate() {
            if i == 3 {
                let _ = fsm.set_policy(second.clone(), now);
            }
            let _ = fsm.step(input, now);
            if let Some(d) = fsm.next_deadline() {
                prop_assert!(d >= t0);
            }
            now += Duration::from_secs(advance_s);
        }
        let _ = Liveness::resumed(second, Status::Degraded, Reported::Degraded, now)
            .step(Input::Tick { slack: Duration::MAX }, now);
    }
}

#[tokio::test]
async fn set_policy_beyond_the_bounds_is_refused_and_the_agents_go_on() {
    let (rt, _) = start(config()).await;
    let handle = rt.register(Registration::new(id("a1"))).await.unwrap();
    let huge = [
        PolicyPatch {
            heartbeat_interval: Some(Duration::from_millis(u64::MAX)),
            ..PolicyPatch::default()
        },
        PolicyPatch {
            offline_after: Some(u32::MAX),
            ..PolicyPatch::default()
        },
        PolicyPatch {
            grace: Some(Duration::from_secs(400 * 24 * 3600)),
            ..PolicyPatch::default()
        },
        PolicyPatch {
            restart_grace: Some(Duration::from_secs(400 * 24 * 3600)),
            ..PolicyPatch::default()
        },
        PolicyPatch {
            recovery: Some(Policy::MAX_COUNT + 1),
            ..PolicyPatch::default()
        },
    ];
    for patch in huge {
        let r = rt
            .admin(AdminRequest::SetPolicy {
                kind: "default".into(),
                patch: patch.clone(),
            })
            .await;
        assert!(
            matches!(r, Err(AdminError::InvalidField(_))),
            "{patch:?}: {r:?}"
        );
    }
    // The bounds themselves are accepted.
    let at_bounds = PolicyPatch {
        heartbeat_interval: Some(Policy::MAX_DURATION),
        offline_after: Some(Policy::MAX_COUNT),
        grace: Some(Policy::MAX_DURATION),
        ..PolicyPatch::default()
    };
    let r = rt
        .admin(AdminRequest::SetPolicy {
            kind: "default".into(),
            patch: at_bounds,
        })
        .await;
    assert!(r.is_ok(), "{r:?}");
    // The agent took the policy and still answers.
    handle.heartbeat(vigil_actors::Beat::healthy()).unwrap();
    assert_eq!(get(&rt, "a1").await.status, Status::Online);
    rt.shutdown().await.unwrap();
}
