//! The rows of recovery (missed beats, reported health) and of a restart's grace.

use super::*;

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
