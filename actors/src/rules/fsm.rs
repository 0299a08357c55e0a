//! The liveness state machine: pure, no IO, no clock reads, no actors.
//!
//! `Liveness::step(input, now)` moves one agent's state and says what the caller must do
//! ([`Effects`]): emit transitions, leave, and arm the timer for the next deadline. The agent
//! actor executes those effects; everything that decides a status lives here, so the table in
//! `ARCHITECTURE.md` is tested row by row without a runtime (see the tests below and
//! `tests/fsm_props.rs`).
//!
//! Deadlines count from the *anchor*: the last heartbeat, or the moment an operator (or a
//! restart) reset the agent. Degraded falls at `anchor + degraded_after × interval + grace`,
//! offline at `anchor + offline_after × interval + grace`. A `Tick` is "check now": a stale or
//! early tick changes nothing, so timers never need to be exact or unique.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::model::{OnDisconnect, Policy, Reason, Reported, Status};

/// Something that happened to an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// The agent registered again (a first registration builds the state with
    /// [`Liveness::registered`]). The `registered` event is emitted by the registry.
    Register,
    /// A heartbeat reporting this health.
    Heartbeat(Reported),
    /// A timer fired: check what is due. `slack` extends every deadline (local health
    /// awareness: while the runtime itself lags, it does not blame its agents).
    Tick {
        /// Extra time added to every deadline.
        slack: Duration,
    },
    /// The connection that owns the agent closed without `deregister`.
    Disconnected,
    /// An operator set the status.
    SetStatus(Status),
    /// An operator switched maintenance on or off.
    Maintenance(bool),
    /// The agent deregistered (`Reason::Deregistered`) or was evicted (`Reason::Evicted`).
    Leave(Reason),
}

/// A real change of status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The status before.
    pub from: Status,
    /// The status after.
    pub to: Status,
    /// Why it changed.
    pub reason: Reason,
    /// Heartbeats missed in a row (the policy's `degraded_after` or `offline_after`) when the
    /// change is [`Reason::HeartbeatMissed`]; otherwise `None`.
    pub missed: Option<u32>,
    /// When the change became due: the deadline for missed beats, otherwise the input's time.
    pub due: Instant,
}

/// Why an input was refused; the state is unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The agent has left; only a new registration brings it back.
    Left,
    /// `set_status` cannot set `left`: evict or deregister instead.
    CannotSetLeft,
}

/// What the caller must do after a step.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effects {
    /// Transitions to emit, in order (a late tick may carry online→degraded→offline).
    pub transitions: Vec<Transition>,
    /// The agent left: emit `deregistered` with (previous status, reason) and stop.
    pub left: Option<(Status, Reason)>,
    /// Arm the timer for this instant (`None`: no deadline is pending).
    pub next_deadline: Option<Instant>,
    /// The input was refused.
    pub refused: Option<Refusal>,
}

/// Why the agent is degraded; decides the reason given when it recovers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    Missed,
    Reported,
    Admin,
}

/// One agent's liveness state.
#[derive(Debug, Clone)]
pub struct Liveness {
    policy: Arc<Policy>,
    status: Status,
    reported: Reported,
    cause: Cause,
    anchor: Instant,
    last_seen: Option<Instant>,
    streak: u32,
    restore_deadline: Option<Instant>,
}

/// `at + d`, or as late as the clock can say when that is beyond it: no policy or slack can
/// make a deadline overflow (and the actor panic).
fn later(at: Instant, d: Duration) -> Instant {
    at.checked_add(d).unwrap_or_else(|| {
        // Some hundred years ahead: never reached, and far from the clock's own limit.
        let mut far = Duration::from_secs(100 * 365 * 24 * 3600);
        loop {
            match at.checked_add(far) {
                Some(t) => return t,
                None if far.is_zero() => return at,
                None => far /= 2,
            }
        }
    })
}

struct Due {
    at: Instant,
    to: Status,
    reason: Reason,
    missed: Option<u32>,
}

impl Liveness {
    /// A newly registered agent: online, deadlines counting from `now`.
    pub fn registered(policy: impl Into<Arc<Policy>>, now: Instant) -> Self {
        Self {
            policy: policy.into(),
            status: Status::Online,
            reported: Reported::Healthy,
            cause: Cause::Missed,
            anchor: now,
            last_seen: Some(now),
            streak: 0,
            restore_deadline: None,
        }
    }

    /// An agent restored after a restart (or an actor restart) with its persisted status and
    /// no event. Unless it is offline, left or in maintenance, it must be seen again within
    /// `policy.restart_grace()` or it goes offline (`not_seen_since_restart`).
    pub fn restored(
        policy: impl Into<Arc<Policy>>,
        status: Status,
        reported: Reported,
        now: Instant,
    ) -> Self {
        let policy: Arc<Policy> = policy.into();
        let watch = !matches!(status, Status::Offline | Status::Left | Status::Maintenance);
        Self {
            restore_deadline: watch.then(|| later(now, policy.restart_grace())),
            cause: if status == Status::Degraded && reported != Reported::Healthy {
                Cause::Reported
            } else {
                Cause::Missed
            },
            policy,
            status,
            reported,
            anchor: now,
            last_seen: None,
            streak: 0,
        }
    }

    /// Starts a restored agent's restart grace at `at` instead (when the whole fleet is
    /// supervised again, so a long restore does not eat the grace of the agents restored
    /// first). Does nothing once the agent has beaten or its grace has ended.
    pub fn grace_from(&mut self, at: Instant) {
        if self.restore_deadline.is_some() && self.last_seen.is_none() {
            self.restore_deadline = Some(later(at, self.policy.restart_grace()));
            self.anchor = at;
        }
    }

    /// Like [`Liveness::restored`], but the agent is known to be alive up to `last_seen`
    /// (a crashed agent actor restarted in a running runtime): deadlines count from there,
    /// with no restart grace.
    pub fn resumed(
        policy: impl Into<Arc<Policy>>,
        status: Status,
        reported: Reported,
        last_seen: Instant,
    ) -> Self {
        let mut s = Self::restored(policy, status, reported, last_seen);
        s.restore_deadline = None;
        s.last_seen = Some(last_seen);
        s
    }

    /// The current status.
    pub fn status(&self) -> Status {
        self.status
    }

    /// The health the agent last reported.
    pub fn reported(&self) -> Reported {
        self.reported
    }

    /// The policy the deadlines follow.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// When the agent was last seen (a heartbeat or registration); `None` for a restored agent
    /// not seen since.
    pub fn last_seen(&self) -> Option<Instant> {
        self.last_seen
    }

    /// Healthy beats counted towards recovery so far.
    pub fn streak(&self) -> u32 {
        self.streak
    }

    /// True when a healthy heartbeat can change nothing but `last_seen`: online, reporting
    /// healthy, no restart grace pending. Such beats may bypass the actor (the fast path).
    pub fn beat_changes_nothing(&self) -> bool {
        self.status == Status::Online
            && self.reported == Reported::Healthy
            && self.restore_deadline.is_none()
    }

    /// While a beat can change nothing, the next deadline is always `last beat + slide`: the
    /// deadline wheel may move it forward by itself when it sees a newer beat.
    pub fn slide(&self) -> Option<Duration> {
        if !self.beat_changes_nothing() {
            return None;
        }
        let p = &self.policy;
        let n = if p.degraded_after < p.offline_after {
            p.degraded_after
        } else {
            p.offline_after
        };
        Some(
            p.heartbeat_interval
                .saturating_mul(n)
                .saturating_add(p.grace),
        )
    }

    /// The next deadline, if any is pending.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.due().map(|d| d.at)
    }

    /// Replaces the policy (an operator's `set_policy`); deadlines follow the new one.
    pub fn set_policy(&mut self, policy: impl Into<Arc<Policy>>, now: Instant) -> Effects {
        self.policy = policy.into();
        let mut fx = Effects::default();
        // Deadlines that the new policy puts in the past fall now.
        self.tick(Duration::ZERO, now, &mut fx);
        self.finish(fx)
    }

    /// Applies one input at time `now`.
    pub fn step(&mut self, input: Input, now: Instant) -> Effects {
        let mut fx = Effects::default();
        if self.status == Status::Left && input != Input::Register {
            if !matches!(
                input,
                Input::Tick { .. } | Input::Heartbeat(_) | Input::Disconnected
            ) {
                fx.refused = Some(Refusal::Left);
            }
            return fx;
        }
        match input {
            Input::Register => {
                *self = Self::registered(self.policy.clone(), now);
            }
            Input::Heartbeat(reported) => self.heartbeat(reported, now, &mut fx),
            Input::Tick { slack } => self.tick(slack, now, &mut fx),
            Input::Disconnected => {
                if self.policy.on_disconnect == OnDisconnect::Offline
                    && !matches!(self.status, Status::Offline | Status::Maintenance)
                {
                    self.change(Status::Offline, Reason::Disconnected, None, now, &mut fx);
                }
            }
            Input::SetStatus(Status::Left) => fx.refused = Some(Refusal::CannotSetLeft),
            Input::SetStatus(to) => {
                if to != self.status {
                    self.change(to, Reason::Admin, None, now, &mut fx);
                    self.cause = Cause::Admin;
                }
                self.reset_anchor(now);
            }
            Input::Maintenance(true) => {
                if self.status != Status::Maintenance {
                    self.change(
                        Status::Maintenance,
                        Reason::MaintenanceOn,
                        None,
                        now,
                        &mut fx,
                    );
                }
            }
            Input::Maintenance(false) => {
                if self.status == Status::Maintenance {
                    self.change(Status::Unknown, Reason::MaintenanceOff, None, now, &mut fx);
                    self.reset_anchor(now);
                }
            }
            Input::Leave(reason) => {
                fx.left = Some((self.status, reason));
                self.status = Status::Left;
                self.restore_deadline = None;
            }
        }
        self.finish(fx)
    }

    fn finish(&self, mut fx: Effects) -> Effects {
        fx.next_deadline = self.next_deadline();
        fx
    }

    fn reset_anchor(&mut self, now: Instant) {
        self.anchor = now;
        self.streak = 0;
        self.restore_deadline = None;
    }

    fn heartbeat(&mut self, reported: Reported, now: Instant, fx: &mut Effects) {
        // A beat that comes later than one interval (plus grace) after the previous one means a
        // beat was missed: the recovery count starts again.
        let p = &self.policy;
        if now > later(self.anchor, p.heartbeat_interval.saturating_add(p.grace)) {
            self.streak = 0;
        }
        self.anchor = now;
        self.last_seen = Some(now);
        self.reported = reported;
        self.restore_deadline = None;
        let unhealthy_reason = match reported {
            Reported::Healthy => None,
            Reported::Degraded => Some(Reason::ReportedDegraded),
            Reported::Unhealthy => Some(Reason::ReportedUnhealthy),
        };
        match (self.status, unhealthy_reason) {
            (Status::Maintenance, _) => {}
            (Status::Online, None) => {}
            (Status::Unknown, None) => {
                self.change(Status::Online, Reason::HeartbeatRecovered, None, now, fx)
            }
            (Status::Degraded | Status::Offline, None) => {
                self.streak = self.streak.saturating_add(1);
                if self.streak >= self.policy.recovery.max(1) {
                    let reason = if self.status == Status::Degraded && self.cause == Cause::Reported
                    {
                        Reason::ReportedHealthy
                    } else {
                        Reason::HeartbeatRecovered
                    };
                    self.change(Status::Online, reason, None, now, fx);
                }
            }
            (Status::Degraded, Some(_)) => {
                self.streak = 0;
                self.cause = Cause::Reported;
            }
            (Status::Online | Status::Unknown | Status::Offline, Some(reason)) => {
                self.change(Status::Degraded, reason, None, now, fx);
                self.cause = Cause::Reported;
            }
            (Status::Left, _) => {}
        }
    }

    fn tick(&mut self, slack: Duration, now: Instant, fx: &mut Effects) {
        while let Some(due) = self.due() {
            if later(due.at, slack) > now {
                break;
            }
            let at = due.at;
            self.change(due.to, due.reason, due.missed, at, fx);
            self.restore_deadline = None;
            if due.to == Status::Degraded {
                self.cause = Cause::Missed;
            }
        }
    }

    fn due(&self) -> Option<Due> {
        let p = &self.policy;
        let after = |n: u32| {
            let d = p
                .heartbeat_interval
                .saturating_mul(n)
                .saturating_add(p.grace);
            later(self.anchor, d)
        };
        match self.status {
            Status::Offline | Status::Left | Status::Maintenance => None,
            _ if self.restore_deadline.is_some() => Some(Due {
                at: self.restore_deadline?,
                to: Status::Offline,
                reason: Reason::NotSeenSinceRestart,
                missed: None,
            }),
            Status::Online if p.degraded_after < p.offline_after => Some(Due {
                at: after(p.degraded_after),
                to: Status::Degraded,
                reason: Reason::HeartbeatMissed,
                missed: Some(p.degraded_after),
            }),
            Status::Online | Status::Degraded | Status::Unknown => Some(Due {
                at: after(p.offline_after),
                to: Status::Offline,
                reason: Reason::HeartbeatMissed,
                missed: Some(p.offline_after),
            }),
        }
    }

    fn change(
        &mut self,
        to: Status,
        reason: Reason,
        missed: Option<u32>,
        due: Instant,
        fx: &mut Effects,
    ) {
        debug_assert_ne!(self.status, to, "a transition must change the status");
        fx.transitions.push(Transition {
            from: self.status,
            to,
            reason,
            missed,
            due,
        });
        self.status = to;
        self.streak = 0;
    }
}
