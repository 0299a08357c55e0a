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
    pub id: AgentId,
    pub name: String,
    /// Shared among the agents of a kind.
    pub kind: Arc<str>,
    pub status: Status,
    pub activity: Option<String>,
    pub reported: Reported,
    pub metadata: BTreeMap<String, String>,
    pub capabilities: Vec<String>,
    pub metrics: Metrics,
    #[serde(with = "ts::opt")]
    pub last_seen: Option<DateTime<Utc>>,
    pub connected: bool,
    pub incarnation: u64,
    #[serde(with = "ts")]
    pub registered_at: DateTime<Utc>,
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
    pub state: JobState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<f64>,
}

/// What an agent gives when it registers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Registration {
    pub id: Option<AgentId>,
    pub name: Option<String>,
    pub kind: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub capabilities: Vec<String>,
    /// The agent's own heartbeat interval; must lie within the runtime's bounds.
    pub heartbeat_interval: Option<Duration>,
}

impl Registration {
    /// A registration with only an id; the other fields take their defaults.
    pub fn new(id: AgentId) -> Self {
        Self {
            id: Some(id),
            ..Self::default()
        }
    }

    pub fn kind(mut self, kind: impl Into<String>) -> Self {
        self.kind = Some(kind.into());
        self
    }

    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    pub fn heartbeat_interval(mut self, every: Duration) -> Self {
        self.heartbeat_interval = Some(every);
        self
    }

    pub(crate) fn kind_or_default(&self) -> &str {
        self.kind.as_deref().unwrap_or("default")
    }
}
