//! An agent's status, what it reports of itself, why it changed, and what a disconnect does.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An agent's liveness status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Unknown,
    Online,
    Degraded,
    Offline,
    Maintenance,
    Left,
}

impl Status {
    pub const ALL: [Status; 6] = [
        Status::Unknown,
        Status::Online,
        Status::Degraded,
        Status::Offline,
        Status::Maintenance,
        Status::Left,
    ];

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
    #[default]
    Healthy,
    Degraded,
    Unhealthy,
}

/// Why a status changed (PROTOCOL.md, "Reasons").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    Registered,
    HeartbeatMissed,
    HeartbeatRecovered,
    ReportedDegraded,
    ReportedUnhealthy,
    ReportedHealthy,
    Disconnected,
    NotSeenSinceRestart,
    Deregistered,
    Evicted,
    Admin,
    MaintenanceOn,
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
