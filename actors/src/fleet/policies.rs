//! [`Policies`]: the liveness policies in force, the default and per kind, as configured and
//! as `set_policy` changed them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use crate::model::{Policy, SavedPolicy};
use crate::runtime::RuntimeConfig;

/// The policies in force: the default, and per kind.
#[derive(Debug, Clone)]
pub(crate) struct Policies {
    pub default: Arc<Policy>,
    pub kinds: HashMap<String, Arc<Policy>>,
    pub min_interval: Duration,
    pub max_interval: Duration,
}

impl Policies {
    /// The policies `config` sets.
    pub(crate) fn configured(config: &RuntimeConfig) -> Self {
        Policies {
            default: Arc::new(config.policy.clone()),
            kinds: config
                .kinds
                .iter()
                .map(|(k, p)| (k.clone(), Arc::new(p.clone())))
                .collect(),
            min_interval: config.min_heartbeat_interval,
            max_interval: config.max_heartbeat_interval,
        }
    }

    /// These (configured) policies with the ones `set_policy` saved laid over them. A saved
    /// policy holds while its kind's configured policy is still the one it was made from: an
    /// operator who changed the configuration since meant the configuration.
    pub(crate) fn with_saved(&self, saved: Vec<SavedPolicy>) -> Self {
        let mut policies = self.clone();
        for s in saved {
            if **self.for_kind(&s.kind) != s.base {
                info!(kind = %s.kind, "the kind's configured policy changed since set_policy changed it; the configuration holds");
                continue;
            }
            if let Err(e) = s.policy.validate() {
                warn!(kind = %s.kind, error = %e, "a saved policy is not valid; the configuration holds");
                continue;
            }
            policies.kinds.insert(s.kind, Arc::new(s.policy));
        }
        policies
    }

    pub(crate) fn for_kind(&self, kind: &str) -> &Arc<Policy> {
        self.kinds.get(kind).unwrap_or(&self.default)
    }

    /// The kind's policy with the agent's own interval, if it asked for one.
    pub(crate) fn for_agent(&self, kind: &str, own: Option<Duration>) -> Arc<Policy> {
        let p = self.for_kind(kind);
        match own {
            Some(i) if i != p.heartbeat_interval => Arc::new(Policy {
                heartbeat_interval: i,
                ..(**p).clone()
            }),
            _ => p.clone(), // shared by every agent of the kind
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every(ms: u64) -> Policy {
        Policy {
            heartbeat_interval: Duration::from_millis(ms),
            ..Policy::default()
        }
    }

    #[test]
    fn a_saved_policy_holds_until_its_kinds_configuration_changes() {
        let config = RuntimeConfig {
            kinds: HashMap::from([("worker".to_string(), every(10_000))]),
            ..RuntimeConfig::default()
        };
        let configured = Policies::configured(&config);
        let saved = vec![
            // Made from the configuration as it is: holds.
            SavedPolicy {
                kind: "worker".into(),
                policy: every(5_000),
                base: every(10_000),
            },
            // A kind with no policy of its own, made from the default: holds.
            SavedPolicy {
                kind: "probe".into(),
                policy: every(1_000),
                base: config.policy.clone(),
            },
            // Made from a configuration that changed since: the configuration holds.
            SavedPolicy {
                kind: "batch".into(),
                policy: every(2_000),
                base: every(60_000),
            },
        ];
        let p = configured.with_saved(saved);
        let interval = |kind: &str| p.for_kind(kind).heartbeat_interval.as_millis();
        assert_eq!(interval("worker"), 5_000);
        assert_eq!(interval("probe"), 1_000);
        assert_eq!(
            interval("batch"),
            config.policy.heartbeat_interval.as_millis()
        );
    }
}
