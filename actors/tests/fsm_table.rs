//! The liveness table of `ARCHITECTURE.md` ("Liveness state machine (default policy)"), one test
//! per row and per rule under it, through the public API of `vigil_actors::fsm` only.
//!
//! `tokio::time::Instant` is used as plain data: a base from `Instant::now()` plus durations; no
//! runtime, no clock reads by the state machine.

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

// ---------------------------------------------------------------------------------------------
// Row: degraded, offline | recovery healthy beats in a row | online (directly) | heartbeat_recovered

#[test]
fn missed_degraded_or_offline_recovers_after_exactly_recovery_beats() {
    for recovery in 1..=3u32 {
        for from in [Status::Degraded, Status::Offline] {
            let p = Policy {
                recovery,
                ..policy()
            };
            let t0 = Instant::now();
            let (mut l, now) = reach(&p, from, t0);
            let beat = |i: u32| now + secs(1) + secs(10) * i;
            for i in 0..recovery - 1 {
                let fx = l.step(HEALTHY, beat(i));
                assert_quiet(&fx);
                assert_eq!(l.status(), from, "recovery={recovery}, beat {i}");
                assert_eq!(l.streak(), i + 1);
            }
            let last = beat(recovery - 1);
            let fx = l.step(HEALTHY, last);
            // Directly to online: a single transition, no step through degraded.
            assert_eq!(
                fx.transitions,
                vec![tr(
                    from,
                    Status::Online,
                    Reason::HeartbeatRecovered,
                    None,
                    last
                )],
                "recovery={recovery} from {from}"
            );
            assert_eq!(l.status(), Status::Online);
            assert_eq!(fx.next_deadline, Some(last + secs(10)));
        }
    }
}

#[test]
fn degraded_by_missed_beats_after_a_reported_recovery_recovers_as_heartbeat_recovered() {
    let p = policy(); // recovery 2
    let t0 = Instant::now();
    let mut l = Liveness::registered(p, t0);
    l.step(Input::Heartbeat(Reported::Degraded), t0 + secs(10));
    l.step(HEALTHY, t0 + secs(20));
    let fx = l.step(HEALTHY, t0 + secs(30));
    assert_eq!(fx.transitions[0].reason, Reason::ReportedHealthy);
    // Now the beats stop: degraded again, this time for missed beats.
    let fx = l.step(TICK, t0 + secs(40));
    assert_eq!(
        fx.transitions,
        vec![tr(
            Status::Online,
            Status::Degraded,
            Reason::HeartbeatMissed,
            Some(1),
            t0 + secs(40)
        )]
    );
    assert_quiet(&l.step(HEALTHY, t0 + secs(41)));
    let fx = l.step(HEALTHY, t0 + secs(51));
    assert_eq!(
        fx.transitions,
        vec![tr(
            Status::Degraded,
            Status::Online,
            Reason::HeartbeatRecovered,
            None,
            t0 + secs(51)
        )]
    );
}

// ---------------------------------------------------------------------------------------------
// Row: online | beat reporting degraded / unhealthy | degraded | reported_degraded / _unhealthy

#[test]
fn online_and_unhealthy_report_goes_degraded() {
    for (reported, reason) in [
        (Reported::Degraded, Reason::ReportedDegraded),
        (Reported::Unhealthy, Reason::ReportedUnhealthy),
    ] {
        let p = policy();
        let t0 = Instant::now();
        let mut l = Liveness::registered(p, t0);
        let t = t0 + secs(9);
        let fx = l.step(Input::Heartbeat(reported), t);
        assert_eq!(
            fx.transitions,
            vec![tr(Status::Online, Status::Degraded, reason, None, t)]
        );
        assert_eq!(l.status(), Status::Degraded);
        assert_eq!(l.reported(), reported);
        assert_eq!(l.last_seen(), Some(t));
        assert_eq!(fx.next_deadline, Some(t + secs(30)));
        assert!(!l.beat_changes_nothing());

        // Already degraded: a further bad report changes nothing.
        let fx = l.step(Input::Heartbeat(Reported::Unhealthy), t + secs(10));
        assert_quiet(&fx);
        assert_eq!(l.status(), Status::Degraded);
        assert_eq!(l.reported(), Reported::Unhealthy);
    }
}

// ---------------------------------------------------------------------------------------------
// Row: degraded (reported) | recovery healthy beats in a row | online | reported_healthy

#[test]
fn reported_degraded_recovers_with_reported_healthy_after_recovery_beats() {
    for recovery in 1..=3u32 {
        let p = Policy {
            recovery,
            ..policy()
        };
        let t0 = Instant::now();
        let mut l = Liveness::registered(p, t0);
        l.step(Input::Heartbeat(Reported::Degraded), t0 + secs(10));
        assert_eq!(l.status(), Status::Degraded);
        let beat = |i: u32| t0 + secs(20) + secs(10) * i;
        for i in 0..recovery - 1 {
            assert_quiet(&l.step(HEALTHY, beat(i)));
            assert_eq!(l.status(), Status::Degraded, "recovery={recovery}");
        }
        let last = beat(recovery - 1);
        let fx = l.step(HEALTHY, last);
        assert_eq!(
            fx.transitions,
            vec![tr(
                Status::Degraded,
                Status::Online,
                Reason::ReportedHealthy,
                None,
                last
            )],
            "recovery={recovery}"
        );
        assert_eq!(l.reported(), Reported::Healthy);
    }
}

#[test]
fn restored_reported_degraded_recovers_with_reported_healthy() {
    let p = policy();
    let t0 = Instant::now();
    let mut l = Liveness::restored(p, Status::Degraded, Reported::Degraded, t0);
    assert_quiet(&l.step(HEALTHY, t0 + secs(1)));
    let fx = l.step(HEALTHY, t0 + secs(11));
    assert_eq!(
        fx.transitions,
        vec![tr(
            Status::Degraded,
            Status::Online,
            Reason::ReportedHealthy,
            None,
            t0 + secs(11)
        )]
    );
}

#[test]
fn a_bad_report_breaks_the_healthy_streak() {
    let p = policy(); // recovery 2
    let t0 = Instant::now();
    let mut l = Liveness::registered(p, t0);
    l.step(Input::Heartbeat(Reported::Unhealthy), t0 + secs(10));
    assert_quiet(&l.step(HEALTHY, t0 + secs(20)));
    assert_eq!(l.streak(), 1);
    assert_quiet(&l.step(Input::Heartbeat(Reported::Degraded), t0 + secs(30)));
    assert_eq!(l.streak(), 0);
    assert_quiet(&l.step(HEALTHY, t0 + secs(40)));
    assert_eq!(
        l.status(),
        Status::Degraded,
        "not two healthy beats in a row"
    );
    let fx = l.step(HEALTHY, t0 + secs(50));
    assert_eq!(
        fx.transitions,
        vec![tr(
            Status::Degraded,
            Status::Online,
            Reason::ReportedHealthy,
            None,
            t0 + secs(50)
        )]
    );
}

// ---------------------------------------------------------------------------------------------
// Row: any restored status but offline/left | no beat within restart_grace | offline |
// not_seen_since_restart

#[test]
fn restored_status_unseen_within_restart_grace_goes_offline() {
    for restart_grace in [None, Some(secs(5)), Some(secs(95))] {
        for from in [Status::Online, Status::Degraded, Status::Unknown] {
            let p = Policy {
                restart_grace,
                ..policy()
            };
            let window = restart_grace.unwrap_or(secs(30)); // default: offline_after × interval
            let t0 = Instant::now();
            let mut l = Liveness::restored(p, from, Reported::Healthy, t0);
            assert_eq!(l.status(), from, "restored silently");
            assert_eq!(l.last_seen(), None);
            assert_eq!(l.next_deadline(), Some(t0 + window));
            // Nothing falls before the restart grace ends (not even degraded for online).
            assert_quiet(&l.step(TICK, t0 + secs(2)));
            assert_quiet(&l.step(TICK, t0 + window - NS));
            assert_eq!(l.status(), from);
            let fx = l.step(TICK, t0 + window);
            assert_eq!(
                fx.transitions,
                vec![tr(
                    from,
                    Status::Offline,
                    Reason::NotSeenSinceRestart,
                    None,
                    t0 + window
                )],
                "restored {from}, restart_grace {restart_grace:?}"
            );
            assert_eq!(l.status(), Status::Offline);
            assert_eq!(fx.next_deadline, None);
        }
    }
}

#[test]
fn restored_online_seen_within_restart_grace_has_no_transition() {
    let p = policy();
    let t0 = Instant::now();
    let mut l = Liveness::restored(p, Status::Online, Reported::Healthy, t0);
    assert!(!l.beat_changes_nothing(), "restart grace pending");
    let beat = t0 + secs(29);
    let fx = l.step(HEALTHY, beat);
    assert_quiet(&fx);
    assert_eq!(l.status(), Status::Online);
    assert_eq!(l.last_seen(), Some(beat));
    assert!(l.beat_changes_nothing());
    // The restart deadline is gone; the ordinary deadlines count from the beat.
    assert_eq!(fx.next_deadline, Some(beat + secs(10)));
    assert_quiet(&l.step(TICK, t0 + secs(30)));
    assert_quiet(&l.step(TICK, beat + secs(10) - NS));
    let fx = l.step(TICK, beat + secs(10));
    assert_eq!(
        fx.transitions,
        vec![tr(
            Status::Online,
            Status::Degraded,
            Reason::HeartbeatMissed,
            Some(1),
            beat + secs(10)
        )]
    );
}

#[test]
fn an_operator_reset_ends_the_restart_grace() {
    let p = policy();
    let t0 = Instant::now();
    for from in [Status::Online, Status::Degraded, Status::Unknown] {
        // set_status: deadlines count from the reset; no not_seen_since_restart.
        let mut l = Liveness::restored(p.clone(), from, Reported::Healthy, t0);
        let t = t0 + secs(20);
        let fx = l.step(Input::SetStatus(Status::Degraded), t);
        assert_eq!(fx.next_deadline, Some(t + secs(30)), "restored {from}");
        assert_quiet(&l.step(TICK, t0 + secs(30)));
        let fx = l.step(TICK, t + secs(30));
        assert_eq!(fx.transitions.len(), 1);
        assert_eq!(fx.transitions[0].reason, Reason::HeartbeatMissed);

        // maintenance on/off: the same.
        let mut l = Liveness::restored(p.clone(), from, Reported::Healthy, t0);
        l.step(Input::Maintenance(true), t0 + secs(1));
        let fx = l.step(Input::Maintenance(false), t);
        assert_eq!(fx.next_deadline, Some(t + secs(30)), "restored {from}");
        assert_quiet(&l.step(TICK, t0 + secs(30)));
    }
}

#[test]
fn restored_offline_maintenance_or_left_has_no_restart_deadline() {
    let p = policy();
    let t0 = Instant::now();
    for from in [Status::Offline, Status::Maintenance, Status::Left] {
        let mut l = Liveness::restored(p.clone(), from, Reported::Healthy, t0);
        assert_eq!(l.next_deadline(), None, "restored {from}");
        let fx = l.step(TICK, t0 + secs(86_400 * 365));
        assert_eq!(fx.transitions, vec![], "restored {from}");
        assert_eq!(fx.next_deadline, None);
        assert_eq!(l.status(), from);
    }
}

// ---------------------------------------------------------------------------------------------
// Row: any but left | admin set_status S | S | admin

#[test]
fn admin_set_status_from_every_status_but_left() {
    let p = Policy {
        grace: ms(250),
        ..policy()
    };
    let t0 = Instant::now();
    for from in LIVE {
        for to in LIVE {
            let (mut l, now) = reach(&p, from, t0);
            let t = now + secs(1);
            let fx = l.step(Input::SetStatus(to), t);
            assert_eq!(fx.refused, None);
            assert_eq!(fx.left, None);
            if from == to {
                assert_eq!(fx.transitions, vec![], "{from} -> {to}: no real change");
            } else {
                assert_eq!(
                    fx.transitions,
                    vec![tr(from, to, Reason::Admin, None, t)],
                    "{from} -> {to}"
                );
            }
            assert_eq!(l.status(), to);
            // set_status resets the deadlines: they count from `t`.
            let expected = match to {
                Status::Online => Some(degraded_at(&p, t)),
                Status::Degraded | Status::Unknown => Some(offline_at(&p, t)),
                _ => None,
            };
            assert_eq!(fx.next_deadline, expected, "{from} -> {to}");
        }
    }
}

#[test]
fn admin_set_status_is_refused_on_left() {
    let p = policy();
    let t0 = Instant::now();
    for to in Status::ALL {
        let (mut l, now) = reach(&p, Status::Left, t0);
        let fx = l.step(Input::SetStatus(to), now + secs(1));
        assert_eq!(fx.refused, Some(Refusal::Left), "set_status({to}) on left");
        assert_eq!(fx.transitions, vec![]);
        assert_eq!(fx.left, None);
        assert_eq!(l.status(), Status::Left);
    }
}

#[test]
fn admin_cannot_set_left() {
    let p = policy();
    let t0 = Instant::now();
    for from in LIVE {
        let (mut l, now) = reach(&p, from, t0);
        let before = l.next_deadline();
        let fx = l.step(Input::SetStatus(Status::Left), now + secs(1));
        assert_eq!(fx.refused, Some(Refusal::CannotSetLeft), "from {from}");
        assert_eq!(fx.transitions, vec![]);
        assert_eq!(fx.left, None);
        assert_eq!(l.status(), from);
        assert_eq!(fx.next_deadline, before, "state unchanged");
    }
}

// ---------------------------------------------------------------------------------------------
// Row: any but left | maintenance on / off | maintenance / unknown | maintenance_on / _off

#[test]
fn maintenance_on_from_every_status_but_left() {
    let p = policy();
    let t0 = Instant::now();
    for from in LIVE {
        let (mut l, now) = reach(&p, from, t0);
        let t = now + secs(2);
        let fx = l.step(Input::Maintenance(true), t);
        assert_eq!(fx.refused, None);
        if from == Status::Maintenance {
            assert_eq!(fx.transitions, vec![]);
        } else {
            assert_eq!(
                fx.transitions,
                vec![tr(
                    from,
                    Status::Maintenance,
                    Reason::MaintenanceOn,
                    None,
                    t
                )],
                "from {from}"
            );
        }
        assert_eq!(l.status(), Status::Maintenance);
        assert_eq!(fx.next_deadline, None);
    }
}

#[test]
fn maintenance_off_goes_unknown_with_deadlines_from_now() {
    let p = policy();
    let t0 = Instant::now();
    let (mut l, now) = reach(&p, Status::Maintenance, t0);
    let t = now + secs(500);
    let fx = l.step(Input::Maintenance(false), t);
    assert_eq!(
        fx.transitions,
        vec![tr(
            Status::Maintenance,
            Status::Unknown,
            Reason::MaintenanceOff,
            None,
            t
        )]
    );
    assert_eq!(l.status(), Status::Unknown);
    assert_eq!(fx.next_deadline, Some(offline_at(&p, t)));
}

#[test]
fn maintenance_off_outside_maintenance_changes_nothing() {
    let p = policy();
    let t0 = Instant::now();
    for from in [
        Status::Unknown,
        Status::Online,
        Status::Degraded,
        Status::Offline,
    ] {
        let (mut l, now) = reach(&p, from, t0);
        let before = l.next_deadline();
        let fx = l.step(Input::Maintenance(false), now + secs(1));
        assert_quiet(&fx);
        assert_eq!(l.status(), from);
        assert_eq!(fx.next_deadline, before, "from {from}");
    }
}

#[test]
fn maintenance_is_refused_on_left() {
    let p = policy();
    let t0 = Instant::now();
    for on in [true, false] {
        let (mut l, now) = reach(&p, Status::Left, t0);
        let fx = l.step(Input::Maintenance(on), now);
        assert_eq!(fx.refused, Some(Refusal::Left));
        assert_eq!(fx.transitions, vec![]);
        assert_eq!(l.status(), Status::Left);
    }
}

#[test]
fn maintenance_ignores_deadlines_and_heartbeats() {
    let p = policy();
    let t0 = Instant::now();
    let (mut l, now) = reach(&p, Status::Maintenance, t0);
    assert_eq!(l.next_deadline(), None);
    for (i, reported) in [Reported::Healthy, Reported::Degraded, Reported::Unhealthy]
        .into_iter()
        .enumerate()
    {
        let t = now + secs(100) * (i as u32 + 1);
        let fx = l.step(Input::Heartbeat(reported), t);
        assert_quiet(&fx);
        assert_eq!(l.status(), Status::Maintenance);
        assert_eq!(fx.next_deadline, None);
    }
    for far in [secs(3600), secs(86_400 * 365)] {
        let fx = l.step(TICK, now + far);
        assert_quiet(&fx);
        assert_eq!(l.status(), Status::Maintenance);
    }
}

// ---------------------------------------------------------------------------------------------
// Row: any | deregister / evict | left | deregistered / evicted (an event, not a transition)

#[test]
fn deregister_and_evict_leave_with_previous_status_and_reason() {
    let p = policy();
    let t0 = Instant::now();
    for reason in [Reason::Deregistered, Reason::Evicted] {
        for from in LIVE {
            let (mut l, now) = reach(&p, from, t0);
            let fx = l.step(Input::Leave(reason), now + secs(1));
            assert_eq!(fx.left, Some((from, reason)), "{reason:?} from {from}");
            assert_eq!(fx.transitions, vec![]);
            assert_eq!(fx.refused, None);
            assert_eq!(fx.next_deadline, None);
            assert_eq!(l.status(), Status::Left);
        }
    }
}

#[test]
fn restored_agent_can_leave_before_its_restart_deadline() {
    let p = policy();
    let t0 = Instant::now();
    let mut l = Liveness::restored(p, Status::Online, Reported::Healthy, t0);
    let fx = l.step(Input::Leave(Reason::Evicted), t0 + secs(1));
    assert_eq!(fx.left, Some((Status::Online, Reason::Evicted)));
    assert_eq!(fx.next_deadline, None);
    assert_eq!(l.step(TICK, t0 + secs(3600)).transitions, vec![]);
}

#[test]
fn a_left_agent_ignores_beats_ticks_and_disconnects_and_refuses_leaving_again() {
    let p = Policy {
        on_disconnect: OnDisconnect::Offline,
        ..policy()
    };
    let t0 = Instant::now();
    let (mut l, now) = reach(&p, Status::Left, t0);
    for (i, input) in [
        HEALTHY,
        Input::Heartbeat(Reported::Unhealthy),
        TICK,
        Input::Disconnected,
    ]
    .into_iter()
    .enumerate()
    {
        let fx = l.step(input, now + secs(1000) * (i as u32 + 1));
        assert_eq!(fx.transitions, vec![], "{input:?}");
        assert_eq!(fx.left, None, "{input:?}");
        assert_eq!(l.status(), Status::Left);
    }
    let fx = l.step(Input::Leave(Reason::Evicted), now + secs(9000));
    assert_eq!(fx.refused, Some(Refusal::Left));
    assert_eq!(fx.left, None);
}

// ---------------------------------------------------------------------------------------------
// on_disconnect

#[test]
fn disconnect_with_on_disconnect_offline_goes_offline() {
    let p = Policy {
        on_disconnect: OnDisconnect::Offline,
        ..policy()
    };
    let t0 = Instant::now();
    for from in [Status::Online, Status::Degraded, Status::Unknown] {
        let (mut l, now) = reach(&p, from, t0);
        let t = now + secs(1);
        let fx = l.step(Input::Disconnected, t);
        assert_eq!(
            fx.transitions,
            vec![tr(from, Status::Offline, Reason::Disconnected, None, t)],
            "from {from}"
        );
        assert_eq!(l.status(), Status::Offline);
        assert_eq!(fx.next_deadline, None);
    }
}

#[test]
fn disconnect_with_on_disconnect_keep_changes_nothing() {
    let p = policy();
    assert_eq!(p.on_disconnect, OnDisconnect::Keep);
    let t0 = Instant::now();
    for from in LIVE {
        let (mut l, now) = reach(&p, from, t0);
        let before = l.next_deadline();
        let fx = l.step(Input::Disconnected, now + secs(1));
        assert_quiet(&fx);
        assert_eq!(l.status(), from);
        // The deadlines run on.
        assert_eq!(fx.next_deadline, before, "from {from}");
    }
}

// ---------------------------------------------------------------------------------------------
// Rules under the table

#[test]
fn an_offline_agent_never_gets_a_second_offline() {
    let p = Policy {
        on_disconnect: OnDisconnect::Offline,
        ..policy()
    };
    let t0 = Instant::now();
    let (mut l, now) = reach(&p, Status::Offline, t0);
    assert_eq!(l.next_deadline(), None);
    for (i, input) in [
        TICK,
        Input::Disconnected,
        Input::SetStatus(Status::Offline),
        TICK,
    ]
    .into_iter()
    .enumerate()
    {
        let fx = l.step(input, now + secs(3600) * (i as u32 + 1));
        assert_quiet(&fx);
        assert_eq!(l.status(), Status::Offline, "{input:?}");
    }
    // A disconnect that goes offline, then the old deadlines: still one offline only.
    let (mut l, now) = reach(&p, Status::Online, t0);
    let fx = l.step(Input::Disconnected, now + secs(1));
    assert_eq!(fx.transitions.len(), 1);
    assert_quiet(&l.step(TICK, now + secs(3600)));
    assert_quiet(&l.step(Input::Disconnected, now + secs(3601)));
}

#[test]
fn a_missed_deadline_resets_the_recovery_count() {
    let p = Policy {
        recovery: 3,
        ..policy()
    };
    let t0 = Instant::now();
    let (mut l, now) = reach(&p, Status::Degraded, t0);
    let b1 = now + secs(1);
    assert_quiet(&l.step(HEALTHY, b1));
    assert_quiet(&l.step(HEALTHY, b1 + secs(10)));
    assert_eq!(l.streak(), 2);
    // The beats stop: the offline deadline falls and the count starts again.
    let deadline = b1 + secs(10) + secs(30);
    let fx = l.step(TICK, deadline);
    assert_eq!(
        fx.transitions,
        vec![tr(
            Status::Degraded,
            Status::Offline,
            Reason::HeartbeatMissed,
            Some(3),
            deadline
        )]
    );
    assert_eq!(l.streak(), 0);
    assert_quiet(&l.step(HEALTHY, deadline + secs(1)));
    assert_eq!(l.streak(), 1);
    assert_eq!(l.status(), Status::Offline);
}

#[test]
fn a_beat_later_than_interval_plus_grace_restarts_the_recovery_count() {
    let p = Policy {
        grace: ms(1500),
        ..policy() // recovery 2
    };
    let t0 = Instant::now();
    let (mut l, now) = reach(&p, Status::Offline, t0);
    let b1 = now + secs(1);
    assert_quiet(&l.step(HEALTHY, b1));
    assert_eq!(l.streak(), 1);
    // One nanosecond too late: the count starts again (this beat is the first of a new run).
    let b2 = b1 + secs(10) + ms(1500) + NS;
    assert_quiet(&l.step(HEALTHY, b2));
    assert_eq!(l.streak(), 1);
    assert_eq!(l.status(), Status::Offline);
    // Exactly interval + grace after the previous beat still counts.
    let b3 = b2 + secs(10) + ms(1500);
    let fx = l.step(HEALTHY, b3);
    assert_eq!(
        fx.transitions,
        vec![tr(
            Status::Offline,
            Status::Online,
            Reason::HeartbeatRecovered,
            None,
            b3
        )]
    );
}

#[test]
fn grace_delays_both_deadlines() {
    let p = Policy {
        grace: ms(1500),
        ..policy()
    };
    let t0 = Instant::now();
    let mut l = Liveness::registered(p, t0);
    let degraded = t0 + secs(10) + ms(1500);
    let offline = t0 + secs(30) + ms(1500);
    assert_eq!(l.next_deadline(), Some(degraded));
    assert_quiet(&l.step(TICK, t0 + secs(10)));
    assert_quiet(&l.step(TICK, degraded - NS));
    let fx = l.step(TICK, degraded);
    assert_eq!(
        fx.transitions,
        vec![tr(
            Status::Online,
            Status::Degraded,
            Reason::HeartbeatMissed,
            Some(1),
            degraded
        )]
    );
    assert_eq!(fx.next_deadline, Some(offline));
    assert_quiet(&l.step(TICK, t0 + secs(30)));
    assert_quiet(&l.step(TICK, offline - NS));
    let fx = l.step(TICK, offline);
    assert_eq!(
        fx.transitions,
        vec![tr(
            Status::Degraded,
            Status::Offline,
            Reason::HeartbeatMissed,
            Some(3),
            offline
        )]
    );
}

#[test]
fn tick_slack_delays_deadlines_by_the_slack() {
    let p = policy();
    let t0 = Instant::now();
    let slack = ms(2500);
    let lagging = Input::Tick { slack };
    let mut l = Liveness::registered(p, t0);
    let degraded = t0 + secs(10);
    assert_quiet(&l.step(lagging, degraded));
    assert_quiet(&l.step(lagging, degraded + slack - NS));
    assert_eq!(l.status(), Status::Online);
    let fx = l.step(lagging, degraded + slack);
    // The transition is due at the deadline itself; the slack only delayed the verdict.
    assert_eq!(
        fx.transitions,
        vec![tr(
            Status::Online,
            Status::Degraded,
            Reason::HeartbeatMissed,
            Some(1),
            degraded
        )]
    );
    // A late lagging tick carries both, and only those due once the slack is added.
    let mut l = Liveness::registered(policy(), t0);
    let fx = l.step(lagging, t0 + secs(30) + slack - NS);
    assert_eq!(fx.transitions.len(), 1);
    assert_eq!(l.status(), Status::Degraded);
    let fx = l.step(lagging, t0 + secs(30) + slack);
    assert_eq!(
        fx.transitions,
        vec![tr(
            Status::Degraded,
            Status::Offline,
            Reason::HeartbeatMissed,
            Some(3),
            t0 + secs(30)
        )]
    );
}

#[test]
fn tick_slack_delays_the_restart_deadline_too() {
    let p = policy();
    let t0 = Instant::now();
    let slack = secs(4);
    let mut l = Liveness::restored(p, Status::Online, Reported::Healthy, t0);
    assert_quiet(&l.step(Input::Tick { slack }, t0 + secs(30) + slack - NS));
    let fx = l.step(Input::Tick { slack }, t0 + secs(30) + slack);
    assert_eq!(
        fx.transitions,
        vec![tr(
            Status::Online,
            Status::Offline,
            Reason::NotSeenSinceRestart,
            None,
            t0 + secs(30)
        )]
    );
}

#[test]
fn next_deadline_in_effects_is_the_deadline_that_fires() {
    let p = Policy {
        degraded_after: 2,
        offline_after: 3,
        grace: ms(300),
        ..policy()
    };
    let t0 = Instant::now();
    let mut l = Liveness::registered(p, t0);
    let fx = l.step(HEALTHY, t0 + ms(9_700));
    let d1 = fx.next_deadline.expect("online has a deadline");
    assert_eq!(l.next_deadline(), Some(d1));
    let fx = l.step(TICK, d1);
    assert_eq!(fx.transitions.len(), 1);
    assert_eq!(fx.transitions[0].to, Status::Degraded);
    assert_eq!(fx.transitions[0].due, d1);
    assert_eq!(d1, t0 + ms(9_700) + secs(20) + ms(300));
    let d2 = fx.next_deadline.expect("degraded has a deadline");
    assert_eq!(l.next_deadline(), Some(d2));
    assert_quiet(&l.step(TICK, d2 - NS));
    let fx = l.step(TICK, d2);
    assert_eq!(fx.transitions.len(), 1);
    assert_eq!(fx.transitions[0].to, Status::Offline);
    assert_eq!(fx.transitions[0].due, d2);
    assert_eq!(d2, t0 + ms(9_700) + secs(30) + ms(300));
    assert_eq!(fx.next_deadline, None);

    // The restart deadline is announced the same way.
    let mut l = Liveness::restored(policy(), Status::Degraded, Reported::Healthy, t0);
    let d = l.next_deadline().expect("restart deadline");
    let fx = l.step(TICK, d);
    assert_eq!(fx.transitions.len(), 1);
    assert_eq!(fx.transitions[0].reason, Reason::NotSeenSinceRestart);
    assert_eq!(fx.transitions[0].due, d);
}

#[test]
fn beat_changes_nothing_only_for_online_healthy_without_restart_grace() {
    let p = policy();
    let t0 = Instant::now();

    // true: online, healthy, nothing pending; and indeed a healthy beat changes nothing.
    let mut l = Liveness::registered(p.clone(), t0);
    assert!(l.beat_changes_nothing());
    let fx = l.step(HEALTHY, t0 + secs(5));
    assert_quiet(&fx);
    assert_eq!(l.status(), Status::Online);
    assert!(l.beat_changes_nothing());

    // false in every other status.
    for s in [
        Status::Unknown,
        Status::Degraded,
        Status::Offline,
        Status::Maintenance,
        Status::Left,
    ] {
        let (l, _) = reach(&p, s, t0);
        assert!(!l.beat_changes_nothing(), "{s}");
    }

    // false while a restart grace is pending, true once seen.
    let mut l = Liveness::restored(p.clone(), Status::Online, Reported::Healthy, t0);
    assert!(!l.beat_changes_nothing());
    l.step(HEALTHY, t0 + secs(1));
    assert!(l.beat_changes_nothing());

    // false for an online agent whose last report was not healthy (admin set it online).
    let mut l = Liveness::registered(p, t0);
    l.step(Input::Heartbeat(Reported::Degraded), t0 + secs(1));
    l.step(Input::SetStatus(Status::Online), t0 + secs(2));
    assert_eq!(l.status(), Status::Online);
    assert_eq!(l.reported(), Reported::Degraded);
    assert!(!l.beat_changes_nothing());
    let fx = l.step(Input::Heartbeat(Reported::Degraded), t0 + secs(3));
    assert_eq!(fx.transitions.len(), 1, "a bad report must reach the actor");
    l.step(Input::SetStatus(Status::Online), t0 + secs(4));
    l.step(HEALTHY, t0 + secs(5));
    assert!(l.beat_changes_nothing());
}

#[test]
fn the_restart_grace_can_start_when_the_whole_fleet_is_restored() {
    // Restored at t0, but the fleet took 20 s to restore: the grace (30 s) counts from then.
    let p = policy();
    let t0 = Instant::now();
    let ready = t0 + secs(20);
    let mut l = Liveness::restored(p.clone(), Status::Online, Reported::Healthy, t0);
    l.grace_from(ready);
    assert_eq!(l.next_deadline(), Some(ready + secs(30)));
    assert_quiet(&l.step(TICK, t0 + secs(30)));
    assert_quiet(&l.step(TICK, ready + secs(30) - NS));
    let fx = l.step(TICK, ready + secs(30));
    assert_eq!(
        fx.transitions,
        vec![tr(
            Status::Online,
            Status::Offline,
            Reason::NotSeenSinceRestart,
            None,
            ready + secs(30)
        )]
    );

    // An agent that already beat keeps the deadlines its beat set.
    let mut l = Liveness::restored(p.clone(), Status::Online, Reported::Healthy, t0);
    let fx = l.step(HEALTHY, t0 + secs(1));
    l.grace_from(ready);
    assert_eq!(l.next_deadline(), fx.next_deadline);

    // One restored offline has no grace to move.
    let mut l = Liveness::restored(p, Status::Offline, Reported::Healthy, t0);
    l.grace_from(ready);
    assert_eq!(l.next_deadline(), None);
}
