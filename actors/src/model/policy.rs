//! Liveness policies and the patches operators apply to them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{duration_ms, opt_duration_ms, OnDisconnect};

/// The liveness policy of one agent (the kind's policy, with the agent's own interval).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// How often the agent is expected to beat, in milliseconds on the wire.
    #[serde(with = "duration_ms")]
    pub heartbeat_interval: Duration,
    /// Missed intervals before `online` becomes `degraded`.
    pub degraded_after: u32,
    /// Missed intervals before `online`/`degraded` becomes `offline`.
    pub offline_after: u32,
    /// Healthy beats in a row that bring `degraded`/`offline` back to `online`.
    pub recovery: u32,
    /// Extra slack before a beat counts as missed.
    #[serde(with = "duration_ms")]
    pub grace: Duration,
    /// What a disconnect without `deregister` does.
    pub on_disconnect: OnDisconnect,
    /// How long restored agents get to reconnect after a restart; `None` means
    /// `offline_after × heartbeat_interval`.
    #[serde(with = "opt_duration_ms", default)]
    pub restart_grace: Option<Duration>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(30),
            degraded_after: 1,
            offline_after: 3,
            recovery: 2,
            grace: Duration::ZERO,
            on_disconnect: OnDisconnect::Keep,
            restart_grace: None,
        }
    }
}

impl Policy {
    /// The longest `heartbeat_interval`, `grace` and `restart_grace`: a day.
    pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);
    /// The most intervals `degraded_after`, `offline_after` and `recovery` may count.
    pub const MAX_COUNT: u32 = 1000;

    /// The window after a restart in which a restored agent must be seen again.
    pub fn restart_grace(&self) -> Duration {
        self.restart_grace
            .unwrap_or(self.heartbeat_interval.saturating_mul(self.offline_after))
    }

    /// Checks the invariants the state machine relies on, and bounds that keep every deadline
    /// within reach of the clock's arithmetic.
    pub fn validate(&self) -> Result<(), String> {
        if self.heartbeat_interval.is_zero() {
            return Err("heartbeat_interval must be greater than zero".into());
        }
        let max = Self::MAX_DURATION;
        for (name, d) in [
            ("heartbeat_interval", Some(self.heartbeat_interval)),
            ("grace", Some(self.grace)),
            ("restart_grace", self.restart_grace),
        ] {
            if d.is_some_and(|d| d > max) {
                return Err(format!("{name} must be at most {} s", max.as_secs()));
            }
        }
        for (name, n) in [
            ("degraded_after", self.degraded_after),
            ("offline_after", self.offline_after),
            ("recovery", self.recovery),
        ] {
            if n > Self::MAX_COUNT {
                return Err(format!("{name} must be at most {}", Self::MAX_COUNT));
            }
        }
        if self.degraded_after == 0 {
            return Err("degraded_after must be at least 1".into());
        }
        if self.offline_after < self.degraded_after {
            return Err("offline_after must be at least degraded_after".into());
        }
        Ok(())
    }
}

/// A kind's policy as `set_policy` made it, saved so that it outlives the process (and reaches
/// the nodes of a cluster that start later), with the configured policy it was made from: a
/// configuration changed since wins over it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedPolicy {
    /// The agent kind.
    pub kind: String,
    /// The kind's policy as set.
    pub policy: Policy,
    /// The kind's configured policy when it was set.
    pub base: Policy,
}

/// Fields of a policy to change with `set_policy`; absent fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyPatch {
    /// New `heartbeat_interval` (ms on the wire).
    #[serde(default, with = "opt_duration_ms")]
    pub heartbeat_interval: Option<Duration>,
    /// New `degraded_after`.
    #[serde(default)]
    pub degraded_after: Option<u32>,
    /// New `offline_after`.
    #[serde(default)]
    pub offline_after: Option<u32>,
    /// New `recovery`.
    #[serde(default)]
    pub recovery: Option<u32>,
    /// New `grace` (ms on the wire).
    #[serde(default, with = "opt_duration_ms")]
    pub grace: Option<Duration>,
    /// New `on_disconnect`.
    #[serde(default)]
    pub on_disconnect: Option<OnDisconnect>,
    /// New `restart_grace` (ms on the wire); absent keeps the current one.
    #[serde(default, with = "opt_duration_ms")]
    pub restart_grace: Option<Duration>,
}

impl PolicyPatch {
    /// The policy `p` with this patch's fields in place of its own.
    pub fn apply(&self, p: &Policy) -> Policy {
        Policy {
            heartbeat_interval: self.heartbeat_interval.unwrap_or(p.heartbeat_interval),
            degraded_after: self.degraded_after.unwrap_or(p.degraded_after),
            offline_after: self.offline_after.unwrap_or(p.offline_after),
            recovery: self.recovery.unwrap_or(p.recovery),
            grace: self.grace.unwrap_or(p.grace),
            on_disconnect: self.on_disconnect.unwrap_or(p.on_disconnect),
            restart_grace: self.restart_grace.or(p.restart_grace),
        }
    }
}
