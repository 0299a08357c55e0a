//! Plain data shared by every part of the core: ids, statuses, reasons, policies, agent records
//! and events. Nothing here does IO or holds a lock; everything serializes the way the wire
//! protocol (`docs/protocol.md`) writes it.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// An agent's id: 1-128 characters of `A-Za-z0-9._:-` (PROTOCOL.md, `register`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AgentId(Arc<str>);

impl AgentId {
    /// Checks the protocol's rule for ids and wraps the string.
    pub fn new(id: impl AsRef<str>) -> Result<Self, InvalidId> {
        let id = id.as_ref();
        let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-');
        if id.is_empty() || id.len() > 128 || !id.chars().all(ok_char) {
            return Err(InvalidId(id.chars().take(140).collect()));
        }
        Ok(Self(Arc::from(id)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The id given does not follow the protocol's rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("agent id {0:?} must be 1-128 characters of A-Za-z0-9._:-")]
pub struct InvalidId(pub String);

impl TryFrom<String> for AgentId {
    type Error = InvalidId;
    fn try_from(s: String) -> Result<Self, InvalidId> {
        AgentId::new(s)
    }
}

impl From<AgentId> for String {
    fn from(id: AgentId) -> String {
        id.0.to_string()
    }
}

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

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

/// The liveness policy of one agent (the kind's policy, with the agent's own interval).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
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

/// Fields of a policy to change with `set_policy`; absent fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyPatch {
    #[serde(default, with = "opt_duration_ms")]
    pub heartbeat_interval: Option<Duration>,
    #[serde(default)]
    pub degraded_after: Option<u32>,
    #[serde(default)]
    pub offline_after: Option<u32>,
    #[serde(default)]
    pub recovery: Option<u32>,
    #[serde(default, with = "opt_duration_ms")]
    pub grace: Option<Duration>,
    #[serde(default)]
    pub on_disconnect: Option<OnDisconnect>,
    #[serde(default, with = "opt_duration_ms")]
    pub restart_grace: Option<Duration>,
}

impl PolicyPatch {
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

/// Timestamps on the wire: RFC 3339, UTC, always with milliseconds.
pub mod ts {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        DateTime::<Utc>::deserialize(d)
    }

    pub mod opt {
        use chrono::{DateTime, Utc};
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(
            t: &Option<DateTime<Utc>>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => super::serialize(t, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<DateTime<Utc>>, D::Error> {
            Option::<DateTime<Utc>>::deserialize(d)
        }
    }
}

pub(crate) mod duration_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

mod opt_duration_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&(d.as_millis() as u64)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_protocol_rule() {
        assert!(AgentId::new("a1").is_ok());
        assert!(AgentId::new("worker-7.eu:x_y").is_ok());
        assert!(AgentId::new("").is_err());
        assert!(AgentId::new("has space").is_err());
        assert!(AgentId::new("x".repeat(128)).is_ok());
        assert!(AgentId::new("x".repeat(129)).is_err());
    }

    #[test]
    fn events_serialize_as_the_protocol_writes_them() {
        let e = Event {
            seq: 1235,
            at: "2026-11-23T10:00:31.002Z".parse().unwrap(),
            agent: Some(AgentId::new("a1").unwrap()),
            kind: Some("worker".into()),
            body: EventBody::Transition {
                from: Status::Online,
                to: Status::Degraded,
                reason: Reason::HeartbeatMissed,
                missed: Some(1),
            },
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"seq":1235,"at":"2026-11-23T10:00:31.002Z","event":"transition",
                "agent":"a1","kind":"worker","from":"online","to":"degraded",
                "reason":"heartbeat_missed","missed":1})
        );
        let back: Event = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
    }
}
