//! Admin messages: the operations an operator (or an embedding program) sends to the runtime,
//! with typed results and errors. The TCP admin role, HTTP and the CLI all speak these.

use serde::{Deserialize, Serialize};

use crate::broadcaster::BroadcastStats;
use crate::model::{AgentId, AgentRecord, Event, Policy, PolicyPatch, Status};
use crate::registry::stats::RegistryStats;
use crate::rules::health::HealthReport;

/// One admin operation (`{"op": "...", "args": {...}}` on the wire).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", content = "args", rename_all = "snake_case")]
pub enum AdminRequest {
    /// Agents in id order, optionally filtered and paged (`{"op": "list"}`).
    List {
        /// Only agents of this kind.
        #[serde(default)]
        kind: Option<String>,
        /// Only agents in this status.
        #[serde(default)]
        status: Option<Status>,
        /// At most this many agents; `None` for all.
        #[serde(default)]
        limit: Option<usize>,
        /// Only agents whose id sorts after this one (the last id of the previous page).
        #[serde(default)]
        after: Option<AgentId>,
    },
    /// One agent's record (`{"op": "get"}`).
    Get {
        /// The agent.
        id: AgentId,
    },
    /// Events from the durable log, in seq order (`{"op": "events"}`).
    Events {
        /// Only this agent's events; `None` for every event.
        #[serde(default)]
        id: Option<AgentId>,
        /// Only events with a seq greater than this; `None` for 0 (from the beginning).
        #[serde(default)]
        since: Option<u64>,
        /// At most this many events; `None` for 1,000.
        #[serde(default)]
        limit: Option<usize>,
        /// With `id`: the agent's newest `limit` events (in seq order) instead of the oldest
        /// after `since`.
        #[serde(default)]
        latest: bool,
    },
    /// Removes an agent: it leaves with reason `evicted` (`{"op": "evict"}`).
    Evict {
        /// The agent.
        id: AgentId,
        /// Why, for the log; not stored.
        #[serde(default)]
        reason: Option<String>,
    },
    /// Sets an agent's status as an operator (`{"op": "set_status"}`). `Left` is refused:
    /// evict instead.
    SetStatus {
        /// The agent.
        id: AgentId,
        /// The status to set.
        status: Status,
        /// Why, for the log; not stored.
        #[serde(default)]
        reason: Option<String>,
    },
    /// Switches an agent's maintenance on or off (`{"op": "maintenance"}`).
    Maintenance {
        /// The agent.
        id: AgentId,
        /// On (true) or off (false).
        on: bool,
    },
    /// Changes the policy of every agent of a kind, now and for later registrations
    /// (`{"op": "set_policy"}`).
    SetPolicy {
        /// The agent kind.
        kind: String,
        /// The fields to change; the others keep their current values.
        #[serde(flatten)]
        patch: PolicyPatch,
    },
    /// Runtime-wide counters (`{"op": "stats"}`).
    Stats,
    /// The fleet health check, now (`{"op": "health_report"}`).
    HealthReport,
}

/// Runtime-wide counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// The registry's counters: agents, events, writes.
    pub registry: RegistryStats,
    /// The broadcaster's counters: subscribers and what they were sent.
    pub broadcast: BroadcastStats,
    /// The runtime's current scheduling-lag estimate, in milliseconds.
    pub lag_ms: u64,
}

/// The answer to an [`AdminRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AdminResponse {
    /// The answer to `List`.
    Agents(Vec<AgentRecord>),
    /// The answer to `Get`.
    Agent(Box<AgentRecord>),
    /// The answer to `Events`.
    Events(Vec<Event>),
    /// The result of a change: the agent's status after it, and whether it changed.
    Changed {
        /// The agent.
        id: AgentId,
        /// Its status after the change.
        status: Status,
        /// Whether the status changed.
        changed: bool,
    },
    /// The answer to `SetPolicy`: the kind's policy as it is now.
    Policy {
        /// The agent kind.
        kind: String,
        /// Its whole policy after the change.
        policy: Policy,
    },
    /// The registry's counters alone.
    Registry(RegistryStats),
    /// The answer to `Stats`.
    Stats(Box<Stats>),
    /// Last: `untagged` tries the variants in order, and every earlier one needs a field a
    /// report does not have, so neither shadows the other.
    Health(Box<HealthReport>),
}

/// Why an admin operation failed. Codes match the protocol's error codes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "code", content = "message", rename_all = "snake_case")]
pub enum AdminError {
    /// No agent has this id (or it has left).
    #[error("unknown agent {0}")]
    UnknownAgent(AgentId),
    /// A field of the request is invalid; the message says which and why.
    #[error("{0}")]
    InvalidField(String),
    /// The caller may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// The runtime (or the part that would answer) is stopping, restarting or did not answer
    /// in time.
    #[error("runtime unavailable: {0}")]
    Unavailable(String),
    /// The store is failing or too many events wait for it; try again later.
    #[error("overloaded: {0}")]
    Overloaded(String),
}

impl AdminError {
    /// The protocol's error code for this error.
    pub fn code(&self) -> &'static str {
        match self {
            AdminError::UnknownAgent(_) => "unknown_agent",
            AdminError::InvalidField(_) => "invalid_field",
            AdminError::Forbidden(_) => "forbidden",
            AdminError::Unavailable(_) => "internal",
            AdminError::Overloaded(_) => "overloaded",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_from_the_protocol_shape() {
        let r: AdminRequest = serde_json::from_value(serde_json::json!(
            {"op":"evict","args":{"id":"a1","reason":"decommissioned"}}))
        .unwrap();
        assert_eq!(
            r,
            AdminRequest::Evict {
                id: AgentId::new("a1").unwrap(),
                reason: Some("decommissioned".into())
            }
        );
        let r: AdminRequest = serde_json::from_value(serde_json::json!(
            {"op":"set_policy","args":{"kind":"worker","heartbeat_interval":5000,"recovery":3}}))
        .unwrap();
        match r {
            AdminRequest::SetPolicy { kind, patch } => {
                assert_eq!(kind, "worker");
                assert_eq!(patch.recovery, Some(3));
                assert_eq!(
                    patch.heartbeat_interval,
                    Some(std::time::Duration::from_secs(5))
                );
            }
            other => panic!("parsed as {other:?}"),
        }
        let r: AdminRequest = serde_json::from_value(serde_json::json!({"op":"stats"})).unwrap();
        assert_eq!(r, AdminRequest::Stats);
        let r: AdminRequest =
            serde_json::from_value(serde_json::json!({"op":"health_report"})).unwrap();
        assert_eq!(r, AdminRequest::HealthReport);
        assert_eq!(
            serde_json::to_value(AdminRequest::HealthReport).unwrap(),
            serde_json::json!({"op":"health_report"})
        );
    }

    /// Every response, serialized and read back, is the same variant: the untagged enum
    /// tells them apart by their fields.
    #[test]
    fn every_response_survives_a_roundtrip() {
        use crate::model::{EventBody, Reported, Severity};
        use crate::rules::health::{check, HealthConfig};
        use crate::store::conformance::record;

        let at = "2026-01-01T00:10:00Z".parse().unwrap();
        let mut offline = record("a2", Status::Offline);
        offline.connected = true;
        let mut degraded = record("a3", Status::Degraded);
        degraded.reported = Reported::Degraded;
        let report = check(
            &[record("a1", Status::Online), offline, degraded],
            at,
            &HealthConfig::default(),
        );
        assert!(!report.agents.is_empty());
        let event = Event {
            seq: 7,
            at,
            agent: None,
            kind: None,
            node: None,
            body: EventBody::Alert {
                severity: Severity::High,
                issue: "mass_offline".into(),
                detail: "x".into(),
                adopted: None,
            },
        };
        let mut registry = RegistryStats {
            total: 3,
            ..RegistryStats::default()
        };
        registry.agents.insert(Status::Online, 3);
        let responses = [
            AdminResponse::Agents(vec![record("a1", Status::Online)]),
            AdminResponse::Agents(vec![]),
            AdminResponse::Agent(Box::new(record("a1", Status::Online))),
            AdminResponse::Events(vec![event]),
            AdminResponse::Changed {
                id: AgentId::new("a1").unwrap(),
                status: Status::Offline,
                changed: true,
            },
            AdminResponse::Policy {
                kind: "worker".into(),
                policy: Policy::default(),
            },
            AdminResponse::Registry(registry.clone()),
            AdminResponse::Stats(Box::new(Stats {
                registry,
                ..Stats::default()
            })),
            AdminResponse::Health(Box::new(report)),
            AdminResponse::Health(Box::new(check(&[], at, &HealthConfig::default()))),
        ];
        for r in responses {
            let json = serde_json::to_string(&r).unwrap();
            let back: AdminResponse = serde_json::from_str(&json).unwrap();
            assert_eq!(back, r, "{json}");
        }
    }
}
