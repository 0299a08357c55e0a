//! An agent's status, what it reports of itself, why it changed, and what a disconnect does.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An agent's liveness status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Not known to be alive: just out of maintenance (or set by an operator), until its next
    /// heartbeat.
    Unknown,
    /// Beating on time and reporting itself healthy.
    Online,
    /// Late with its heartbeats (the policy's `degraded_after`), or reporting itself degraded
    /// or unhealthy.
    Degraded,
    /// Missed too many heartbeats (the policy's `offline_after`), disconnected, or not seen
    /// since a restart.
    Offline,
    /// Put in maintenance by an operator: no deadlines apply until it is switched off.
    Maintenance,
    /// Deregistered or evicted; only a new registration brings it back.
    Left,
}

impl Status {
    /// Every status, in order.
    pub const ALL: [Status; 6] = [
        Status::Unknown,
        Status::Online,
        Status::Degraded,
        Status::Offline,
        Status::Maintenance,
        Status::Left,
    ];

    /// The protocol's name for the status (`"online"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Unknown => "unknown",
            Status::Online => "online",
            Status::Degraded => "degraded",
            Status::Offline => "offline",
            Status::Maintenance => "maintenance",
            Status::Left => "left",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Status::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown status {s:?}"))
    }
}

/// The health an agent reports about itself in a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reported {
    /// Working normally (the default when a heartbeat says nothing).
    #[default]
    Healthy,
    /// Working, but impaired.
    Degraded,
    /// Not working properly.
    Unhealthy,
}

/// Why a status changed (PROTOCOL.md, "Reasons").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The agent registered (again).
    Registered,
    /// Heartbeats stopped coming on time.
    HeartbeatMissed,
    /// Heartbeats came on time again: `recovery` healthy beats in a row (from `unknown`, the
    /// first beat).
    HeartbeatRecovered,
    /// The agent reported itself degraded.
    ReportedDegraded,
    /// The agent reported itself unhealthy.
    ReportedUnhealthy,
    /// The agent reported itself healthy again (for `recovery` beats in a row) after
    /// reporting otherwise.
    ReportedHealthy,
    /// The agent's connection closed without `deregister` (policy `on_disconnect: offline`).
    Disconnected,
    /// Restored after a restart and not seen within the restart grace.
    NotSeenSinceRestart,
    /// The agent deregistered.
    Deregistered,
    /// An operator evicted the agent.
    Evicted,
    /// An operator set the status.
    Admin,
    /// An operator switched maintenance on.
    MaintenanceOn,
    /// An operator switched maintenance off.
    MaintenanceOff,
}

/// What happens when the connection that owns an agent closes without `deregister`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnDisconnect {
    /// The agent keeps its status; its deadlines run on.
    #[default]
    Keep,
    /// The agent goes offline at once (reason `disconnected`).
    Offline,
}
