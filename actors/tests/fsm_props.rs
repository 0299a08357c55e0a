//! Property tests of the liveness state machine: random policies, random input sequences,
//! driven by a perfect timer (a `Tick { slack: 0 }` at exactly every announced deadline), checked
//! against an independent model of the anchor (last beat or reset), the restart deadline, the
//! recovery streak and the cause of a degraded status.

#[path = "fsm_props/strategies.rs"]
mod strategies;

use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use strategies::*;
use tokio::time::Instant;
use vigil_actors::fsm::{Effects, Input, Liveness, Refusal, Transition};
use vigil_actors::model::{OnDisconnect, Policy, Reason, Reported, Status};

const NS: Duration = Duration::from_nanos(1);
const TICK: Input = Input::Tick {
    slack: Duration::ZERO,
};

fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}

// ---------------------------------------------------------------------------------------------
// The independent model

/// What the test knows without looking inside the state machine.
struct Model {
    /// Last heartbeat, or last reset (registration, restart, set_status, maintenance off).
    anchor: Instant,
    /// The restart deadline, while a restored agent has not been seen or reset.
    restore: Option<Instant>,
    /// Healthy beats in a row counted towards recovery (meaningful in degraded/offline).
    streak: u32,
    /// The agent is degraded because it reported so (recovery reason `reported_healthy`).
    degraded_by_report: bool,
    /// The `to` of the previous transition since the last registration/leave, for (b).
    last_to: Option<Status>,
    /// The health last reported (registration: healthy).
    reported: Reported,
}

struct Run {
    policy: Policy,
    fsm: Liveness,
    model: Model,
    /// The time of the last delivered input or tick.
    now: Instant,
    transitions: usize,
}

impl Run {
    fn new(policy: Policy, start: Start, t0: Instant) -> Self {
        let (fsm, model) = match start {
            Start::Registered => (
                Liveness::registered(policy.clone(), t0),
                Model {
                    anchor: t0,
                    restore: None,
                    streak: 0,
                    degraded_by_report: false,
                    last_to: None,
                    reported: Reported::Healthy,
                },
            ),
            Start::Restored(status, reported) => {
                let watched = matches!(status, Status::Online | Status::Degraded | Status::Unknown);
                (
                    Liveness::restored(policy.clone(), status, reported, t0),
                    Model {
                        anchor: t0,
                        restore: watched.then(|| t0 + policy.restart_grace()),
                        streak: 0,
                        degraded_by_report: status == Status::Degraded
                            && reported != Reported::Healthy,
                        last_to: None,
                        reported,
                    },
                )
            }
        };
        Self {
            policy,
            fsm,
            model,
            now: t0,
            transitions: 0,
        }
    }

    fn deadline_after(&self, missed: u32) -> Instant {
        self.model.anchor + self.policy.heartbeat_interval * missed + self.policy.grace
    }

    /// (e): a tick that comes before any deadline is due changes nothing. Probed on a clone.
    fn probe_quiet_tick(&self, input: Input, at: Instant) -> Result<(), TestCaseError> {
        let mut c = self.fsm.clone();
        let fx = c.step(input, at);
        prop_assert_eq!(
            &fx.transitions,
            &Vec::<Transition>::new(),
            "{:?} at +{:?} (before deadline {:?}) emitted transitions",
            input,
            at - self.now,
            self.fsm.next_deadline().map(|d| d - self.now)
        );
        prop_assert_eq!(c.status(), self.fsm.status());
        prop_assert_eq!(c.next_deadline(), self.fsm.next_deadline());
        prop_assert_eq!(fx.next_deadline, self.fsm.next_deadline());
        Ok(())
    }

    /// Checks what holds after every step: (a) the chain of transitions, (b) no two
    /// consecutive transitions to the same status, (c) no silent status change, and the
    /// announced deadline.
    fn check_common(
        &mut self,
        input: Input,
        at: Instant,
        before: Status,
        fx: &Effects,
    ) -> Result<(), TestCaseError> {
        let after = self.fsm.status();
        let mut status = before;
        for t in &fx.transitions {
            prop_assert_eq!(
                t.from,
                status,
                "transition {:?} does not start where we are",
                t
            );
            prop_assert_ne!(t.to, t.from, "transition {:?} changes nothing", t);
            if let Some(prev) = self.model.last_to {
                prop_assert_ne!(prev, t.to, "two transitions in a row to {}", t.to);
            }
            self.model.last_to = Some(t.to);
            status = t.to;
        }
        self.transitions += fx.transitions.len();
        match (input, fx.left) {
            (Input::Leave(reason), Some(left)) => {
                prop_assert_eq!(left, (before, reason));
                prop_assert!(fx.transitions.is_empty());
                prop_assert_eq!(after, Status::Left);
                self.model.last_to = None;
            }
            (Input::Register, _) => {
                prop_assert_eq!(fx.left, None);
                prop_assert!(fx.transitions.is_empty(), "register emits no transition");
                prop_assert_eq!(after, Status::Online);
                self.model.last_to = None;
            }
            (_, None) => prop_assert_eq!(after, status, "status changed silently"),
            (_, Some(left)) => prop_assert!(false, "{:?} left {:?}", input, left),
        }
        // The announced deadline is the pending one; none in offline, left, maintenance; and the
        // perfect timer has delivered everything due up to `at`.
        prop_assert_eq!(fx.next_deadline, self.fsm.next_deadline());
        let idle = matches!(after, Status::Offline | Status::Left | Status::Maintenance);
        prop_assert_eq!(
            fx.next_deadline.is_none(),
            idle,
            "deadline {:?} in {}",
            fx.next_deadline,
            after
        );
        if let Some(d) = fx.next_deadline {
            prop_assert!(d > at, "deadline {:?} not after the step", d - at);
        }
        // The fast path: a healthy beat may bypass the actor only when it can change nothing.
        prop_assert_eq!(self.fsm.reported(), self.model.reported);
        let fast = after == Status::Online
            && self.model.reported == Reported::Healthy
            && self.model.restore.is_none();
        prop_assert_eq!(
            self.fsm.beat_changes_nothing(),
            fast,
            "beat_changes_nothing in {}",
            after
        );
        if fast {
            let mut c = self.fsm.clone();
            let fx = c.step(Input::Heartbeat(Reported::Healthy), at);
            prop_assert!(fx.transitions.is_empty() && fx.left.is_none() && fx.refused.is_none());
            prop_assert_eq!(c.status(), Status::Online);
        }
        // The recovery count, as far as it matters.
        if matches!(after, Status::Degraded | Status::Offline) {
            prop_assert_eq!(self.fsm.streak(), self.model.streak, "recovery streak");
        }
        Ok(())
    }

    /// Delivers every deadline up to `t` like a perfect timer, checking (d) and (e).
    fn tick_until(&mut self, t: Instant) -> Result<(), TestCaseError> {
        while let Some(d) = self.fsm.next_deadline() {
            if d > t {
                break;
            }
            prop_assert!(d >= self.now, "a deadline in the past was left pending");
            // (e) Just before the deadline, or at it with any slack, nothing happens.
            if d - NS >= self.now {
                self.probe_quiet_tick(TICK, d - NS)?;
            }
            self.probe_quiet_tick(Input::Tick { slack: NS }, d)?;

            let before = self.fsm.status();
            let fx = self.fsm.step(TICK, d);
            prop_assert_eq!(fx.refused, None);
            // A tick at the announced deadline fires exactly that deadline.
            prop_assert_eq!(fx.transitions.len(), 1, "tick at the deadline: {:?}", fx);
            let tr = fx.transitions[0];
            prop_assert_eq!(tr.due, d, "(d) due is the instant the tick was delivered");
            match tr.reason {
                Reason::HeartbeatMissed => {
                    prop_assert!(
                        self.model.restore.is_none(),
                        "missed beat during restart grace"
                    );
                    let p = &self.policy;
                    let n = match tr.to {
                        Status::Degraded => {
                            prop_assert_eq!(tr.from, Status::Online);
                            prop_assert!(p.degraded_after < p.offline_after);
                            p.degraded_after
                        }
                        Status::Offline => {
                            prop_assert!(
                                matches!(tr.from, Status::Degraded | Status::Unknown)
                                    || (tr.from == Status::Online
                                        && p.degraded_after == p.offline_after),
                                "{:?}",
                                tr
                            );
                            p.offline_after
                        }
                        other => return Err(TestCaseError::fail(format!("missed → {other}"))),
                    };
                    prop_assert_eq!(tr.missed, Some(n));
                    prop_assert_eq!(tr.due, self.deadline_after(n), "(d) due from the anchor");
                }
                Reason::NotSeenSinceRestart => {
                    prop_assert_eq!(tr.to, Status::Offline);
                    prop_assert_eq!(tr.missed, None);
                    prop_assert_eq!(Some(tr.due), self.model.restore);
                    self.model.restore = None;
                }
                other => {
                    return Err(TestCaseError::fail(format!("a tick gave reason {other:?}")));
                }
            }
            self.model.streak = 0;
            if tr.to == Status::Degraded {
                self.model.degraded_by_report = false;
            }
            self.check_common(TICK, d, before, &fx)?;
            self.now = d;
        }
        Ok(())
    }

    /// Applies one input at `t` and checks it against the model.
    fn input(&mut self, input: Input, t: Instant) -> Result<(), TestCaseError> {
        self.tick_until(t)?;
        // (e) After the perfect timer, a tick at `t` is early: nothing happens.
        self.probe_quiet_tick(TICK, t)?;

        let before = self.fsm.status();
        let fx = self.fsm.step(input, t);
        let p = self.policy.clone();

        if before == Status::Left && input != Input::Register {
            let expect = match input {
                Input::SetStatus(_) | Input::Maintenance(_) | Input::Leave(_) => {
                    Some(Refusal::Left)
                }
                _ => None,
            };
            prop_assert_eq!(fx.refused, expect, "{:?} on a left agent", input);
            prop_assert!(fx.transitions.is_empty());
            prop_assert_eq!(fx.left, None);
            self.check_common(input, t, before, &fx)?;
            self.now = t;
            return Ok(());
        }
        if input == Input::SetStatus(Status::Left) {
            prop_assert_eq!(fx.refused, Some(Refusal::CannotSetLeft));
        } else {
            prop_assert_eq!(fx.refused, None, "{:?} refused", input);
        }
        prop_assert!(
            fx.transitions.len() <= 1,
            "{:?} gave {:?}",
            input,
            fx.transitions
        );
        for tr in &fx.transitions {
            prop_assert_eq!(tr.due, t, "an input's transition is due at the input");
            prop_assert_eq!(tr.missed, None);
        }
        let got = fx.transitions.first().map(|tr| (tr.to, tr.reason));

        match input {
            Input::Register => {
                self.model = Model {
                    anchor: t,
                    restore: None,
                    streak: 0,
                    degraded_by_report: false,
                    last_to: None,
                    reported: Reported::Healthy,
                };
            }
            Input::Heartbeat(reported) => {
                let late = t > self.model.anchor + p.heartbeat_interval + p.grace;
                let expect = match (before, reported) {
                    (Status::Maintenance, _) => None,
                    (Status::Online, Reported::Healthy) => None,
                    (Status::Unknown, Reported::Healthy) => {
                        Some((Status::Online, Reason::HeartbeatRecovered))
                    }
                    (Status::Degraded | Status::Offline, Reported::Healthy) => {
                        if late {
                            self.model.streak = 0;
                        }
                        self.model.streak += 1;
                        if self.model.streak >= p.recovery {
                            let reason =
                                if before == Status::Degraded && self.model.degraded_by_report {
                                    Reason::ReportedHealthy
                                } else {
                                    Reason::HeartbeatRecovered
                                };
                            Some((Status::Online, reason))
                        } else {
                            None
                        }
                    }
                    (Status::Degraded, _) => {
                        self.model.streak = 0;
                        self.model.degraded_by_report = true;
                        None
                    }
                    (_, bad) => {
                        self.model.degraded_by_report = true;
                        let reason = if bad == Reported::Degraded {
                            Reason::ReportedDegraded
                        } else {
                            Reason::ReportedUnhealthy
                        };
                        Some((Status::Degraded, reason))
                    }
                };
                prop_assert_eq!(got, expect, "{:?} in {} (late: {})", input, before, late);
                prop_assert_eq!(self.fsm.reported(), reported);
                self.model.reported = reported;
                prop_assert_eq!(self.fsm.last_seen(), Some(t));
                self.model.anchor = t;
                self.model.restore = None;
            }
            Input::Disconnected => {
                let expect = (p.on_disconnect == OnDisconnect::Offline
                    && matches!(before, Status::Online | Status::Degraded | Status::Unknown))
                .then_some((Status::Offline, Reason::Disconnected));
                prop_assert_eq!(got, expect, "disconnect in {}", before);
            }
            Input::SetStatus(Status::Left) => prop_assert_eq!(got, None),
            Input::SetStatus(to) => {
                let expect = (to != before).then_some((to, Reason::Admin));
                prop_assert_eq!(got, expect);
                if to == Status::Degraded && before != Status::Degraded {
                    self.model.degraded_by_report = false;
                }
                self.model.anchor = t;
                self.model.restore = None;
            }
            Input::Maintenance(true) => {
                let expect = (before != Status::Maintenance)
                    .then_some((Status::Maintenance, Reason::MaintenanceOn));
                prop_assert_eq!(got, expect);
            }
            Input::Maintenance(false) => {
                let expect = (before == Status::Maintenance)
                    .then_some((Status::Unknown, Reason::MaintenanceOff));
                prop_assert_eq!(got, expect);
                if before == Status::Maintenance {
                    self.model.anchor = t;
                    self.model.restore = None;
                }
            }
            Input::Leave(_) => {
                prop_assert_eq!(got, None);
                prop_assert!(fx.left.is_some(), "leave without a left effect");
                self.model.restore = None;
            }
            Input::Tick { .. } => unreachable!("ticks come from the timer"),
        }
        let reset = match input {
            Input::SetStatus(s) => s != Status::Left,
            Input::Register => true,
            _ => false,
        };
        if !fx.transitions.is_empty() || reset {
            // A real change or a reset starts the recovery count again.
            self.model.streak = 0;
        }
        self.check_common(input, t, before, &fx)?;
        self.now = t;
        Ok(())
    }
}

fn run(
    policy: Policy,
    start: Start,
    steps: Vec<(Gap, Input)>,
    tail: Gap,
) -> Result<(), TestCaseError> {
    prop_assert!(policy.validate().is_ok());
    let t0 = Instant::now();
    let mut r = Run::new(policy.clone(), start, t0);
    for (gap, input) in steps {
        let t = r.now + gap.resolve(&policy);
        r.input(input, t)?;
    }
    // Let the remaining deadlines fall, then check nothing is left pending far ahead.
    let end = r.now
        + tail.resolve(&policy)
        + policy.heartbeat_interval * 6
        + policy.grace
        + policy.restart_grace();
    r.tick_until(end)?;
    prop_assert_eq!(
        r.fsm.next_deadline(),
        None,
        "a deadline still pending after silence"
    );
    prop_assert!(
        matches!(
            r.fsm.status(),
            Status::Offline | Status::Left | Status::Maintenance
        ),
        "silence must end offline, left or in maintenance, not {}",
        r.fsm.status()
    );
    Ok(())
}

proptest! {
    // No regression file: this test owns only its source file.
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn perfect_timer_runs_follow_the_table(
        policy in policy_strategy(),
        start in start_strategy(),
        steps in prop::collection::vec((gap_strategy(), input_strategy()), 1..60),
        tail in gap_strategy(),
    ) {
        run(policy, start, steps, tail)?;
    }

    /// Always after a restart: exercises the restart grace (`not_seen_since_restart`) and how
    /// beats and resets end it.
    #[test]
    fn perfect_timer_runs_after_a_restart(
        policy in policy_strategy(),
        status in status_strategy(),
        reported in reported_strategy(),
        steps in prop::collection::vec((gap_strategy(), input_strategy()), 1..20),
        tail in gap_strategy(),
    ) {
        run(policy, Start::Restored(status, reported), steps, tail)?;
    }

    /// Only heartbeats (mostly healthy, on the edge of being late): exercises recovery counts
    /// and the degraded/offline deadlines hardest.
    #[test]
    fn perfect_timer_heartbeat_runs(
        policy in policy_strategy(),
        steps in prop::collection::vec(
            (gap_strategy(), reported_strategy().prop_map(Input::Heartbeat)),
            1..80,
        ),
    ) {
        run(policy, Start::Registered, steps, Gap::Ms(0))?;
    }
}
