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
    /// Submitted, not yet assigned.
    Submitted,
    /// Assigned, not yet running.
    Assigned,
    /// In progress.
    Running,
    /// Finished successfully (final).
    Completed,
    /// Finished with an error (final).
    Failed,
}

impl JobState {
    /// The protocol's name for the state (`"submitted"`, `"running"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Submitted => "submitted",
            JobState::Assigned => "assigned",
            JobState::Running => "running",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
        }
    }

    /// The state with this protocol name; `None` for an unknown name.
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
    /// The job's id (global, not per agent).
    pub job: String,
    /// The state the agent reports the job in.
    pub state: JobState,
    /// 0..=1.
    pub progress: Option<f64>,
    /// Why the job failed, when it did.
    pub error: Option<String>,
}

/// Severity of an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// For information; nothing needs doing.
    Info,
    /// Worth a look.
    Warning,
    /// Needs attention now.
    High,
}

/// The kind of an event, for filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// [`EventBody::Registered`].
    Registered,
    /// [`EventBody::Transition`].
    Transition,
    /// [`EventBody::Activity`].
    Activity,
    /// [`EventBody::Job`].
    Job,
    /// [`EventBody::Deregistered`].
    Deregistered,
    /// [`EventBody::Alert`].
    Alert,
}

/// What happened, in the shape of the protocol's event frames (`"event": "transition"`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventBody {
    /// An agent registered, for the first time or again. No separate `Transition` is emitted
    /// for it.
    Registered {
        /// The status before; `None` for an agent not seen before.
        from: Option<Status>,
        /// The status now (`Online`).
        status: Status,
        /// The agent's display name.
        name: String,
        /// The agent's metadata, as registered.
        metadata: BTreeMap<String, String>,
        /// The agent's capabilities, as registered.
        capabilities: Vec<String>,
        /// The registration's incarnation: 1 for the first, one more for each registration after.
        incarnation: u64,
        /// The heartbeat interval the agent asked for, if it asked for its own (its kind's
        /// applies otherwise): what a node supervising it after a restart or an adoption
        /// needs to know, besides what the log says.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        heartbeat_interval_ms: Option<u64>,
    },
    /// The agent's liveness status really changed (never emitted for a non-change).
    Transition {
        /// The status before.
        from: Status,
        /// The status after.
        to: Status,
        /// Why it changed.
        reason: Reason,
        /// Consecutive heartbeats missed, for a change caused by missed beats; otherwise `None`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        missed: Option<u32>,
    },
    /// The activity the agent reports really changed.
    Activity {
        /// The activity before; `None` if the agent had not reported one.
        from: Option<String>,
        /// The activity now (`"idle"`, `"working"`, ... or another short string).
        to: String,
        /// The free-text detail sent with the activity, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// A job changed state, or its progress moved by [`PROGRESS_STEP`](crate::PROGRESS_STEP) or
    /// more.
    Job {
        /// The job's id.
        job: String,
        /// The state before, as [`JobState::as_str`] names it; `None` for a job not seen before.
        from: Option<String>,
        /// The state now, as [`JobState::as_str`] names it.
        to: String,
        /// Progress, 0..=1, if reported.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        progress: Option<f64>,
        /// Why the job failed, when it did (`agent_offline` and `agent_left` when the agent's
        /// failure ends it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// The agent deregistered or was evicted; it is now `Left`. No separate `Transition` is
    /// emitted for it.
    Deregistered {
        /// The status before.
        from: Status,
        /// `Deregistered` or `Evicted`.
        reason: Reason,
    },
    /// An issue found by the health check, the mass-offline guard or the lag monitor, or
    /// raised by the embedding program ([`Runtime::alert`](crate::Runtime::alert)).
    Alert {
        /// How urgent it is.
        severity: Severity,
        /// Which issue, as a short snake_case name (`"mass_offline"`, `"runtime_lagging"`, ...).
        issue: String,
        /// Human-readable detail.
        detail: String,
        /// For issue `node_adopted` on a cluster: the node whose lease lapsed, and whose agents
        /// the node that decided this event supervises from here on.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        adopted: Option<String>,
    },
}

impl EventBody {
    /// The kind of this event, for filters.
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
    /// The event's position in the log: starts at 1, one more per persisted event.
    pub seq: u64,
    /// When the change happened (UTC).
    #[serde(with = "ts")]
    pub at: DateTime<Utc>,
    /// The agent it concerns; `None` for fleet-wide events such as some alerts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentId>,
    /// The agent's kind (`"default"` unless registered with one); `None` when there is no agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<Arc<str>>,
    /// The cluster node that decided it; `None` on a single node (and then not written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<Arc<str>>,
    /// What happened.
    #[serde(flatten)]
    pub body: EventBody,
}

impl Event {
    /// A fleet-wide alert (about no agent) at `seq`, decided by no particular node.
    pub fn alert(
        seq: u64,
        at: DateTime<Utc>,
        severity: Severity,
        issue: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        Event {
            seq,
            at,
            agent: None,
            kind: None,
            node: None,
            body: EventBody::Alert {
                severity,
                issue: issue.into(),
                detail: detail.into(),
                adopted: None,
            },
        }
    }
}
