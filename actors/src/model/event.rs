//! Events: what happened to an agent or the fleet, as sequenced and persisted.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{ts, AgentId, Reason, Status};

/// The states of a job an agent reports (PROTOCOL.md, `job`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Submitted,
    Assigned,
    Running,
    Completed,
    Failed,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Submitted => "submitted",
            JobState::Assigned => "assigned",
            JobState::Running => "running",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "submitted" => JobState::Submitted,
            "assigned" => JobState::Assigned,
            "running" => JobState::Running,
            "completed" => JobState::Completed,
            "failed" => JobState::Failed,
            _ => return None,
        })
    }

    /// Completed or failed: nothing more happens to the job.
    pub fn is_final(self) -> bool {
        matches!(self, JobState::Completed | JobState::Failed)
    }
}

/// What an agent reports about one of its jobs.
#[derive(Debug, Clone, PartialEq)]
pub struct JobReport {
    pub job: String,
    pub state: JobState,
    /// 0..=1.
    pub progress: Option<f64>,
    pub error: Option<String>,
}

/// Severity of an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    High,
}

/// The kind of an event, for filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Registered,
    Transition,
    Activity,
    Job,
    Deregistered,
    Alert,
}

/// What happened, in the shape of the protocol's event frames (`"event": "transition"`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventBody {
    Registered {
        from: Option<Status>,
        status: Status,
        name: String,
        metadata: BTreeMap<String, String>,
        capabilities: Vec<String>,
        incarnation: u64,
    },
    Transition {
        from: Status,
        to: Status,
        reason: Reason,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        missed: Option<u32>,
    },
    Activity {
        from: Option<String>,
        to: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    Job {
        job: String,
        from: Option<String>,
        to: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        progress: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    Deregistered {
        from: Status,
        reason: Reason,
    },
    Alert {
        severity: Severity,
        issue: String,
        detail: String,
    },
}

impl EventBody {
    pub fn kind(&self) -> EventKind {
        match self {
            EventBody::Registered { .. } => EventKind::Registered,
            EventBody::Transition { .. } => EventKind::Transition,
            EventBody::Activity { .. } => EventKind::Activity,
            EventBody::Job { .. } => EventKind::Job,
            EventBody::Deregistered { .. } => EventKind::Deregistered,
            EventBody::Alert { .. } => EventKind::Alert,
        }
    }

    /// The agent's status after this event, when the event changes or states it.
    pub fn status_after(&self) -> Option<Status> {
        match self {
            EventBody::Registered { status, .. } => Some(*status),
            EventBody::Transition { to, .. } => Some(*to),
            EventBody::Deregistered { .. } => Some(Status::Left),
            _ => None,
        }
    }

    /// The agent's status before this event, when the event changes it.
    pub fn status_before(&self) -> Option<Status> {
        match self {
            EventBody::Registered { from, .. } => *from,
            EventBody::Transition { from, .. } | EventBody::Deregistered { from, .. } => {
                Some(*from)
            }
            _ => None,
        }
    }
}

/// A persisted event: one step of the gapless log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    #[serde(with = "ts")]
    pub at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<Arc<str>>,
    #[serde(flatten)]
    pub body: EventBody,
}
