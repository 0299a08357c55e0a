//! The supervision core's settings from the configuration.

use vigil_actors::{LagConfig, Retention, RuntimeConfig};

use super::Config;

impl Config {
    /// The supervision core's settings.
    pub fn runtime(&self) -> RuntimeConfig {
        RuntimeConfig {
            policy: self.policy.default.to_policy(),
            kinds: self
                .policy
                .kinds
                .iter()
                .map(|(k, p)| (k.clone(), p.to_policy()))
                .collect(),
            min_heartbeat_interval: self.policy.min_heartbeat_interval,
            max_heartbeat_interval: self.policy.max_heartbeat_interval,
            subscriber_queue: self.broadcast.subscriber_queue,
            event_window: self.broadcast.event_window,
            max_batch: self.store.max_batch,
            checkpoint_interval: self.store.checkpoint_interval,
            flush_interval: self.store.flush_interval,
            min_commit_interval: self.store.min_commit_interval,
            event_retention: Retention {
                max_age: self.store.event_retention_age.filter(|d| !d.is_zero()),
                max_events: self.store.event_retention_count,
            },
            left_ttl: Some(self.store.left_ttl).filter(|d| !d.is_zero()),
            max_pending_bytes: self.store.max_pending_bytes,
            lag: LagConfig {
                enabled: self.runtime.lag_awareness,
                threshold: self.runtime.lag_threshold,
                probe_interval: self.runtime.lag_probe_interval,
                max_slack: self.runtime.lag_max_slack,
                ..LagConfig::default()
            },
            health: self.health.to_health(),
            node: self.cluster.node_id.as_deref().map(std::sync::Arc::from),
            ..RuntimeConfig::default()
        }
    }
}
