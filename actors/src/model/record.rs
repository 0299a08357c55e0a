//! What is known of an agent: its record, its open jobs, its registration.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{ts, AgentId, JobState, Reported, Status};

/// Numbers an agent reports with its heartbeats.
pub type Metrics = BTreeMap<String, f64>;

/// The persisted and queryable view of one agent (PROTOCOL.md, "Agent records").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentRecord {
    /// The agent's id.
    pub id: AgentId,
    /// Display name; the id unless the agent gave one.
    pub name: String,
    /// Shared among the agents of a kind.
    pub kind: Arc<str>,
    /// Liveness status.
    pub status: Status,
    /// The activity last reported (`"idle"`, `"working"`, ...); `None` if none was.
    pub activity: Option<String>,
    /// The health the agent last reported.
    pub reported: Reported,
    /// Free-form key/value pairs given at registration.
    pub metadata: BTreeMap<String, String>,
    /// What the agent says it can do, as given at registration.
    pub capabilities: Vec<String>,
    /// The metrics of the latest heartbeat that carried any.
    pub metrics: Metrics,
    /// When the agent was last heard from: registration or heartbeat (UTC); `None` if never.
    #[serde(with = "ts::opt")]
    pub last_seen: Option<DateTime<Utc>>,
    /// Whether a connection currently owns the agent.
    pub connected: bool,
    /// 1 at the first registration, one more at each registration after.
    pub incarnation: u64,
    /// When the agent last registered (UTC).
    #[serde(with = "ts")]
    pub registered_at: DateTime<Utc>,
    /// When the record last changed: status, activity or registration (UTC).
    #[serde(with = "ts")]
    pub updated_at: DateTime<Utc>,
    /// The agent's own heartbeat interval, when it asked for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_interval_ms: Option<u64>,
    /// The agent's unfinished jobs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub jobs: BTreeMap<String, OpenJob>,
}

/// An unfinished job, as its agent's record holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenJob {
    /// The job's state (never a final one).
    pub state: JobState,
    /// Progress, 0..=1, if reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<f64>,
}

/// What an agent gives when it registers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Registration {
    /// The agent's id; required (a registration without one is refused).
    pub id: Option<AgentId>,
    /// Display name; `None` for the id.
    pub name: Option<String>,
    /// The agent's kind, which selects its policy; `None` for `"default"`.
    pub kind: Option<String>,
    /// Free-form key/value pairs.
    pub metadata: BTreeMap<String, String>,
    /// What the agent says it can do.
    pub capabilities: Vec<String>,
    /// The agent's own heartbeat interval; must lie within the runtime's bounds.
    pub heartbeat_interval: Option<Duration>,
    /// No connection holds the agent: it reports now and then over HTTP (a cron job, a
    /// function). Its record says `connected: false` (nothing is there to disconnect); its
    /// deadlines run as any agent's.
    #[serde(default)]
    pub connectionless: bool,
}

impl Registration {
    /// A registration with only an id; the other fields take their defaults.
    pub fn new(id: AgentId) -> Self {
        Self {
            id: Some(id),
            ..Self::default()
        }
    }

    /// Sets the kind.
    pub fn kind(mut self, kind: impl Into<String>) -> Self {
        self.kind = Some(kind.into());
        self
    }

    /// Sets the display name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets the agent's own heartbeat interval.
    pub fn heartbeat_interval(mut self, every: Duration) -> Self {
        self.heartbeat_interval = Some(every);
        self
    }

    pub(crate) fn kind_or_default(&self) -> &str {
        self.kind.as_deref().unwrap_or("default")
    }
}
