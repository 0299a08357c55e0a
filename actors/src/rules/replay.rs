//! What a persisted event does to its agent's record: the rule a restart replays the log
//! with, and a cluster node's view of the whole fleet is kept by (every event of every node,
//! in seq order).
//!
//! Jobs are not here: an agent's unfinished jobs are the job book's (`rules::jobs`), which
//! replays the job events itself.

use crate::model::{AgentRecord, Event, EventBody};

/// The agent's record after `e`, given the record before it (`None`: the agent is not known).
/// `None` when the event changes no record: it concerns no agent, is a job event, or changes
/// an agent that is not known (its registration is older than what is kept).
pub fn record_after(before: Option<&AgentRecord>, e: &Event) -> Option<AgentRecord> {
    let id = e.agent.as_ref()?;
    match &e.body {
        EventBody::Registered {
            status,
            name,
            metadata,
            capabilities,
            incarnation,
            heartbeat_interval_ms,
            ..
        } => Some(AgentRecord {
            id: id.clone(),
            name: name.clone(),
            kind: e.kind.clone().unwrap_or_else(|| "default".into()),
            status: *status,
            // What a registration does not say survives it.
            activity: before.and_then(|r| r.activity.clone()),
            jobs: before.map(|r| r.jobs.clone()).unwrap_or_default(),
            reported: Default::default(),
            metadata: metadata.clone(),
            capabilities: capabilities.clone(),
            metrics: Default::default(),
            last_seen: Some(e.at),
            connected: false,
            incarnation: *incarnation,
            registered_at: e.at,
            updated_at: e.at,
            heartbeat_interval_ms: *heartbeat_interval_ms,
        }),
        EventBody::Activity { to, .. } => before.map(|r| AgentRecord {
            activity: Some(to.clone()),
            updated_at: e.at,
            ..r.clone()
        }),
        EventBody::Job { .. } => None,
        other => {
            let status = other.status_after()?;
            before.map(|r| AgentRecord {
                status,
                updated_at: e.at,
                ..r.clone()
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::model::{AgentId, Reason, Severity, Status};

    fn event(seq: u64, body: EventBody) -> Event {
        Event {
            seq,
            at: Utc
                .timestamp_millis_opt(1_700_000_000_000 + seq as i64)
                .unwrap(),
            agent: AgentId::new("a1").ok(),
            kind: Some(Arc::from("worker")),
            node: None,
            body,
        }
    }

    fn registered(seq: u64, incarnation: u64) -> Event {
        event(
            seq,
            EventBody::Registered {
                from: None,
                status: Status::Online,
                name: "A one".into(),
                metadata: Default::default(),
                capabilities: vec!["x".into()],
                incarnation,
                heartbeat_interval_ms: Some(1000),
            },
        )
    }

    #[test]
    fn a_registration_makes_the_record_and_keeps_what_it_does_not_say() {
        let r = record_after(None, &registered(1, 1)).expect("a record");
        assert_eq!(
            (r.status, r.incarnation, &*r.kind),
            (Status::Online, 1, "worker")
        );
        assert_eq!(r.activity, None);
        assert_eq!(
            r.heartbeat_interval_ms,
            Some(1000),
            "the interval it asked for (a restore or an adoption supervises it by it)"
        );
        let working = record_after(
            Some(&r),
            &event(
                2,
                EventBody::Activity {
                    from: None,
                    to: "working".into(),
                    detail: None,
                },
            ),
        )
        .expect("changed");
        assert_eq!(working.activity.as_deref(), Some("working"));
        let again = record_after(Some(&working), &registered(3, 2)).expect("a record");
        assert_eq!(again.incarnation, 2);
        assert_eq!(
            again.activity.as_deref(),
            Some("working"),
            "kept across registrations"
        );
        assert_eq!(again.registered_at, registered(3, 2).at);
    }

    #[test]
    fn status_changes_apply_to_known_agents_only() {
        let r = record_after(None, &registered(1, 1)).expect("a record");
        let degraded = event(
            2,
            EventBody::Transition {
                from: Status::Online,
                to: Status::Degraded,
                reason: Reason::HeartbeatMissed,
                missed: Some(1),
            },
        );
        let after = record_after(Some(&r), &degraded).expect("changed");
        assert_eq!(
            (after.status, after.updated_at),
            (Status::Degraded, degraded.at)
        );
        assert_eq!(
            record_after(None, &degraded),
            None,
            "an unknown agent stays unknown"
        );
        let left = event(
            3,
            EventBody::Deregistered {
                from: Status::Degraded,
                reason: Reason::Deregistered,
            },
        );
        assert_eq!(
            record_after(Some(&after), &left).map(|r| r.status),
            Some(Status::Left)
        );
    }

    #[test]
    fn alerts_and_jobs_change_no_record() {
        let r = record_after(None, &registered(1, 1)).expect("a record");
        let alert = event(
            2,
            EventBody::Alert {
                severity: Severity::Info,
                issue: "i".into(),
                detail: "d".into(),
                adopted: None,
            },
        );
        assert_eq!(record_after(Some(&r), &alert), None);
    }
}
