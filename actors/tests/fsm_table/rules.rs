//! The rules under the table.

use super::*;

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
