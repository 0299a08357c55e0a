//! The liveness table of `ARCHITECTURE.md` ("Liveness state machine (default policy)"), one test
//! per row and per rule under it, through the public API of `vigil_actors::fsm` only: the
//! first rows here, the others in the modules below.
//!
//! `tokio::time::Instant` is used as plain data: a base from `Instant::now()` plus durations; no
//! runtime, no clock reads by the state machine.

#[path = "fsm_table/operator.rs"]
mod operator;
#[path = "fsm_table/recovery.rs"]
mod recovery;
#[path = "fsm_table/rules.rs"]
mod rules;

use std::time::Duration;

use tokio::time::Instant;
use vigil_actors::fsm::{Effects, Input, Liveness, Refusal, Transition};
use vigil_actors::model::{OnDisconnect, Policy, Reason, Reported, Status};

const NS: Duration = Duration::from_nanos(1);
const TICK: Input = Input::Tick {
    slack: Duration::ZERO,
};
const HEALTHY: Input = Input::Heartbeat(Reported::Healthy);

/// Every status an agent can be in before it leaves.
const LIVE: [Status; 5] = [
    Status::Unknown,
    Status::Online,
    Status::Degraded,
    Status::Offline,
    Status::Maintenance,
];

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}

/// interval 10 s, degraded after 1, offline after 3, recovery 2, no grace, keep on disconnect.
fn policy() -> Policy {
    Policy {
        heartbeat_interval: secs(10),
        degraded_after: 1,
        offline_after: 3,
        recovery: 2,
        grace: Duration::ZERO,
        on_disconnect: OnDisconnect::Keep,
        restart_grace: None,
    }
}

fn degraded_at(p: &Policy, anchor: Instant) -> Instant {
    anchor + p.heartbeat_interval * p.degraded_after + p.grace
}

fn offline_at(p: &Policy, anchor: Instant) -> Instant {
    anchor + p.heartbeat_interval * p.offline_after + p.grace
}

fn tr(from: Status, to: Status, reason: Reason, missed: Option<u32>, due: Instant) -> Transition {
    Transition {
        from,
        to,
        reason,
        missed,
        due,
    }
}

/// Nothing to emit, nothing refused, nobody left.
#[track_caller]
fn assert_quiet(fx: &Effects) {
    assert_eq!(fx.transitions, vec![], "no transition expected");
    assert_eq!(fx.left, None, "no leave expected");
    assert_eq!(fx.refused, None, "no refusal expected");
}

/// A fresh agent registered at `t0`, brought to `status` through real inputs.
/// Returns the state and the time of the last input.
fn reach(p: &Policy, status: Status, t0: Instant) -> (Liveness, Instant) {
    let mut l = Liveness::registered(p.clone(), t0);
    let now = match status {
        Status::Online => t0,
        Status::Degraded => {
            let at = degraded_at(p, t0);
            l.step(TICK, at);
            at
        }
        Status::Offline => {
            let at = offline_at(p, t0);
            l.step(TICK, at);
            at
        }
        Status::Unknown => {
            l.step(Input::Maintenance(true), t0);
            l.step(Input::Maintenance(false), t0);
            t0
        }
        Status::Maintenance => {
            l.step(Input::Maintenance(true), t0);
            t0
        }
        Status::Left => {
            l.step(Input::Leave(Reason::Deregistered), t0);
            t0
        }
    };
    assert_eq!(l.status(), status, "setup could not reach {status}");
    (l, now)
}

// ---------------------------------------------------------------------------------------------
// Row: (none), or any status on re-registration | register | online

#[test]
fn register_new_agent_is_online_with_deadlines_from_now() {
    let p = policy();
    let t0 = Instant::now();
    let l = Liveness::registered(p.clone(), t0);
    assert_eq!(l.status(), Status::Online);
    assert_eq!(l.reported(), Reported::Healthy);
    assert_eq!(l.last_seen(), Some(t0));
    assert_eq!(l.streak(), 0);
    assert_eq!(l.next_deadline(), Some(t0 + secs(10)));
    assert!(l.beat_changes_nothing());
}

#[test]
fn re_register_from_any_status_is_online_without_transition() {
    let p = policy();
    let t0 = Instant::now();
    for from in Status::ALL {
        let (mut l, now) = reach(&p, from, t0);
        let t = now + secs(7);
        let fx = l.step(Input::Register, t);
        assert_quiet(&fx);
        assert_eq!(l.status(), Status::Online, "re-register from {from}");
        assert_eq!(l.last_seen(), Some(t));
        assert_eq!(l.reported(), Reported::Healthy);
        assert_eq!(fx.next_deadline, Some(t + secs(10)), "from {from}");
        assert!(l.beat_changes_nothing(), "from {from}");
    }
}

#[test]
fn re_register_from_restored_status_is_online_and_drops_restart_grace() {
    let p = policy();
    let t0 = Instant::now();
    for from in Status::ALL {
        let mut l = Liveness::restored(p.clone(), from, Reported::Unhealthy, t0);
        let t = t0 + secs(1);
        let fx = l.step(Input::Register, t);
        assert_quiet(&fx);
        assert_eq!(l.status(), Status::Online, "from restored {from}");
        assert_eq!(l.reported(), Reported::Healthy);
        // Deadlines count from the registration, not from the restart grace.
        assert_eq!(fx.next_deadline, Some(t + secs(10)), "from restored {from}");
    }
}

// ---------------------------------------------------------------------------------------------
// Row: unknown | healthy heartbeat | online | heartbeat_recovered

#[test]
fn unknown_and_healthy_beat_goes_online() {
    let p = policy();
    let t0 = Instant::now();
    let (mut l, now) = reach(&p, Status::Unknown, t0);
    let t = now + secs(3);
    let fx = l.step(HEALTHY, t);
    assert_eq!(
        fx.transitions,
        vec![tr(
            Status::Unknown,
            Status::Online,
            Reason::HeartbeatRecovered,
            None,
            t
        )]
    );
    assert_eq!(l.status(), Status::Online);
    assert_eq!(fx.next_deadline, Some(t + secs(10)));
}

#[test]
fn restored_unknown_and_healthy_beat_goes_online() {
    let p = policy();
    let t0 = Instant::now();
    let mut l = Liveness::restored(p.clone(), Status::Unknown, Reported::Healthy, t0);
    let t = t0 + secs(2);
    let fx = l.step(HEALTHY, t);
    assert_eq!(
        fx.transitions,
        vec![tr(
            Status::Unknown,
            Status::Online,
            Reason::HeartbeatRecovered,
            None,
            t
        )]
    );
    assert_eq!(l.status(), Status::Online);
}

// ---------------------------------------------------------------------------------------------
// Row: online | no beat for degraded_after intervals | degraded | heartbeat_missed

#[test]
fn online_goes_degraded_exactly_at_degraded_after_and_not_a_nanosecond_before() {
    for (degraded_after, offline_after) in [(1, 3), (2, 4), (3, 5)] {
        let p = Policy {
            degraded_after,
            offline_after,
            ..policy()
        };
        let t0 = Instant::now();
        let mut l = Liveness::registered(p.clone(), t0);
        let beat = t0 + secs(4);
        let fx = l.step(HEALTHY, beat);
        assert_quiet(&fx);
        let deadline = beat + secs(10) * degraded_after;
        assert_eq!(fx.next_deadline, Some(deadline));

        let fx = l.step(TICK, deadline - NS);
        assert_quiet(&fx);
        assert_eq!(
            l.status(),
            Status::Online,
            "degraded_after={degraded_after}"
        );
        assert_eq!(fx.next_deadline, Some(deadline));

        let fx = l.step(TICK, deadline);
        assert_eq!(
            fx.transitions,
            vec![tr(
                Status::Online,
                Status::Degraded,
                Reason::HeartbeatMissed,
                Some(degraded_after),
                deadline
            )]
        );
        assert_eq!(l.status(), Status::Degraded);
        assert_eq!(fx.next_deadline, Some(beat + secs(10) * offline_after));
    }
}

// ---------------------------------------------------------------------------------------------
// Row: online, degraded | no beat for offline_after intervals | offline | heartbeat_missed

#[test]
fn degraded_goes_offline_exactly_at_offline_after() {
    for (degraded_after, offline_after) in [(1, 3), (2, 4), (1, 5)] {
        let p = Policy {
            degraded_after,
            offline_after,
            ..policy()
        };
        let t0 = Instant::now();
        let mut l = Liveness::registered(p.clone(), t0);
        l.step(TICK, degraded_at(&p, t0));
        assert_eq!(l.status(), Status::Degraded);
        let deadline = t0 + secs(10) * offline_after;

        let fx = l.step(TICK, deadline - NS);
        assert_quiet(&fx);
        assert_eq!(l.status(), Status::Degraded);

        let fx = l.step(TICK, deadline);
        assert_eq!(
            fx.transitions,
            vec![tr(
                Status::Degraded,
                Status::Offline,
                Reason::HeartbeatMissed,
                Some(offline_after),
                deadline
            )]
        );
        assert_eq!(l.status(), Status::Offline);
        assert_eq!(fx.next_deadline, None);
    }
}

#[test]
fn reported_degraded_goes_offline_at_offline_after_from_its_last_beat() {
    let p = policy();
    let t0 = Instant::now();
    let mut l = Liveness::registered(p.clone(), t0);
    let beat = t0 + secs(5);
    let fx = l.step(Input::Heartbeat(Reported::Unhealthy), beat);
    assert_eq!(fx.transitions.len(), 1);
    assert_eq!(fx.next_deadline, Some(beat + secs(30)));

    assert_quiet(&l.step(TICK, beat + secs(30) - NS));
    let fx = l.step(TICK, beat + secs(30));
    assert_eq!(
        fx.transitions,
        vec![tr(
            Status::Degraded,
            Status::Offline,
            Reason::HeartbeatMissed,
            Some(3),
            beat + secs(30)
        )]
    );
}

/// Not a table row: when `degraded_after == offline_after` both deadlines fall at the same
/// instant and the code goes online → offline in one transition (there is no degraded stage).
#[test]
fn online_goes_offline_directly_when_degraded_after_equals_offline_after() {
    let p = Policy {
        degraded_after: 3,
        offline_after: 3,
        ..policy()
    };
    let t0 = Instant::now();
    let mut l = Liveness::registered(p, t0);
    assert_eq!(l.next_deadline(), Some(t0 + secs(30)));
    assert_quiet(&l.step(TICK, t0 + secs(30) - NS));
    let fx = l.step(TICK, t0 + secs(30));
    assert_eq!(
        fx.transitions,
        vec![tr(
            Status::Online,
            Status::Offline,
            Reason::HeartbeatMissed,
            Some(3),
            t0 + secs(30)
        )]
    );
}

#[test]
fn a_late_tick_emits_degraded_then_offline_each_at_its_own_deadline() {
    let p = Policy {
        degraded_after: 2,
        offline_after: 4,
        grace: ms(500),
        ..policy()
    };
    let t0 = Instant::now();
    let mut l = Liveness::registered(p.clone(), t0);
    let fx = l.step(TICK, t0 + secs(3600));
    assert_eq!(
        fx.transitions,
        vec![
            tr(
                Status::Online,
                Status::Degraded,
                Reason::HeartbeatMissed,
                Some(2),
                t0 + secs(20) + ms(500)
            ),
            tr(
                Status::Degraded,
                Status::Offline,
                Reason::HeartbeatMissed,
                Some(4),
                t0 + secs(40) + ms(500)
            ),
        ]
    );
    assert_eq!(l.status(), Status::Offline);
    assert_eq!(fx.next_deadline, None);
}

#[test]
fn a_tick_between_the_deadlines_emits_only_degraded() {
    let p = policy();
    let t0 = Instant::now();
    let mut l = Liveness::registered(p, t0);
    let fx = l.step(TICK, t0 + secs(30) - NS);
    assert_eq!(
        fx.transitions,
        vec![tr(
            Status::Online,
            Status::Degraded,
            Reason::HeartbeatMissed,
            Some(1),
            t0 + secs(10)
        )]
    );
    assert_eq!(fx.next_deadline, Some(t0 + secs(30)));
}
