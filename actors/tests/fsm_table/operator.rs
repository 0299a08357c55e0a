//! The rows an operator or the agent's connection drives: `set_status`, maintenance,
//! deregistration and eviction, `on_disconnect`.

use super::*;

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
