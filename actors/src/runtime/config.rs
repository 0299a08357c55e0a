//! The runtime's settings and their defaults.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::model::Policy;
use crate::rules::health::HealthConfig;
use crate::rules::lag::LagConfig;
use crate::store::Retention;

/// Settings of the supervision core.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// The default policy.
    pub policy: Policy,
    /// Policies per agent kind.
    pub kinds: HashMap<String, Policy>,
    /// The shortest heartbeat interval an agent may ask for.
    pub min_heartbeat_interval: Duration,
    /// The longest heartbeat interval an agent may ask for.
    pub max_heartbeat_interval: Duration,
    /// Each subscriber's queue; a subscriber whose queue is full gets `lagged`.
    pub subscriber_queue: usize,
    /// Recent events the broadcaster keeps in memory for `since` resumes.
    pub event_window: usize,
    /// Most events in one group commit.
    pub max_batch: usize,
    /// How often the live view is checkpointed (zero: only at shutdown).
    pub checkpoint_interval: Duration,
    /// How long the registry lets a group of events gather before writing it (zero: write
    /// as soon as no other write is running; groups then form while a write runs).
    pub flush_interval: Duration,
    /// The least time between the starts of two group commits. A lone event is written at
    /// once; under load, the events that arrive meanwhile gather into the next commit, so a
    /// durable store pays its cost per commit a bounded number of times a second (zero: the
    /// next commit starts as soon as the last one is done).
    pub min_commit_interval: Duration,
    /// How much of the event log to keep (applied after each checkpoint).
    pub event_retention: Retention,
    /// The scheduling-lag monitor: how the runtime measures its own lateness and extends
    /// deadlines by it.
    pub lag: LagConfig,
    /// The fleet health check and the mass-failure guard.
    pub health: HealthConfig,
    /// How long internal request/reply calls may take.
    pub call_timeout: Duration,
    /// How many bytes of events may wait for the store (while it is slow or failing) before
    /// new registrations are refused with `overloaded`. Admin writes and new subscriptions
    /// are refused as soon as the store fails. Supervision of the agents already registered
    /// goes on whatever the backlog.
    pub max_pending_bytes: u64,
    /// Agents that left (deregistered or evicted) are dropped from the view, the checkpoint
    /// and the mirror this long after they left (`None`: kept for ever). Their events stay in
    /// the log as long as the retention keeps them.
    pub left_ttl: Option<Duration>,
    /// The cluster node this runtime is, stamped on every event it decides; `None` for a
    /// single node.
    pub node: Option<Arc<str>>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            policy: Policy::default(),
            kinds: HashMap::new(),
            min_heartbeat_interval: Duration::from_millis(100),
            max_heartbeat_interval: Duration::from_secs(3600),
            subscriber_queue: 4096,
            event_window: 65_536,
            max_batch: 10_000,
            checkpoint_interval: Duration::from_secs(60),
            flush_interval: Duration::ZERO,
            min_commit_interval: Duration::from_millis(1),
            // A week of history: resumes and audits reach back that far, and the log (and the
            // index of it read at every start) stops growing.
            event_retention: Retention {
                max_age: Some(Duration::from_secs(7 * 24 * 3600)),
                max_events: None,
            },
            lag: LagConfig::default(),
            health: HealthConfig::default(),
            call_timeout: Duration::from_secs(10),
            max_pending_bytes: 256 << 20,
            left_ttl: Some(Duration::from_secs(7 * 24 * 3600)),
            node: None,
        }
    }
}
