//! Sequencing: each change gets the next seq, is applied to the view, and waits for the
//! store; the consequences sequenced right after it (failed jobs, the mass-offline alert).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tracing::warn;

use super::{Change, Entry, RegisterReply, RegistryState, Report};
use crate::agent::cell::AgentCell;
use crate::model::{AgentId, AgentRecord, Event, EventBody, Registration, Severity, Status};
use crate::registry::durable::event_bytes;
use crate::rules::health::MASS_OFFLINE;

impl RegistryState {
    /// The event an agent's report makes, if it changes anything: an activity other than the
    /// last, or a job report the book records. An unknown or departed agent's makes none.
    pub(super) fn report(&mut self, id: &AgentId, report: Report) -> Option<EventBody> {
        let e = self
            .agents
            .get(id)
            .filter(|e| e.record.status != Status::Left)?;
        match report {
            Report::Activity { activity, detail } => {
                let last = e.record.activity.as_deref();
                (last != Some(activity.as_str())).then(|| EventBody::Activity {
                    from: e.record.activity.clone(),
                    to: activity,
                    detail,
                })
            }
            Report::Job(r) => {
                let body = self.jobs.report(id, r)?;
                self.sync_jobs();
                Some(body)
            }
        }
    }

    pub(super) fn register(
        &mut self,
        reg: Registration,
        id: AgentId,
        at: DateTime<Utc>,
        cell: Arc<AgentCell>,
    ) -> RegisterReply {
        // On a cluster node, an agent another node held continues from the fleet's record
        // (a takeover across nodes), its unfinished jobs with it.
        let elsewhere = match (self.agents.get(&id), &self.cluster) {
            (None, Some(cluster)) => cluster.record(&id),
            _ => None,
        };
        if let Some(r) = &elsewhere {
            self.jobs.load(&id, &r.jobs);
        }
        let prev = self
            .agents
            .get(&id)
            .map(|e| &*e.record)
            .or(elsewhere.as_ref());
        let from = prev.map(|r| r.status);
        let incarnation = prev.map_or(1, |r| r.incarnation + 1);
        let kind = match cell.kind() {
            k if *k == *reg.kind_or_default() => k, // the fleet's shared copy
            _ => Arc::from(reg.kind_or_default()),
        };
        let name = reg.name.clone().unwrap_or_else(|| id.to_string());
        let record = AgentRecord {
            id: id.clone(),
            name: name.clone(),
            kind: kind.clone(),
            status: Status::Online,
            activity: prev.and_then(|r| r.activity.clone()),
            jobs: prev.map(|r| r.jobs.clone()).unwrap_or_default(),
            reported: Default::default(),
            metadata: reg.metadata.clone(),
            capabilities: reg.capabilities.clone(),
            metrics: Default::default(),
            last_seen: Some(at),
            connected: !reg.connectionless,
            incarnation,
            registered_at: at,
            updated_at: at,
            heartbeat_interval_ms: reg.heartbeat_interval.map(|d| d.as_millis() as u64),
        };
        if let Some(old) = self.agents.remove(&id) {
            self.count(&old.record.kind, old.record.status, false);
        }
        self.insert(Entry {
            record: Box::new(record),
            cell: Some(cell),
        });
        self.touch(&id);
        self.push_event(Change {
            agent: Some(id),
            at,
            body: EventBody::Registered {
                from,
                status: Status::Online,
                name,
                metadata: reg.metadata,
                capabilities: reg.capabilities,
                incarnation,
                heartbeat_interval_ms: reg.heartbeat_interval.map(|d| d.as_millis() as u64),
            },
        });
        RegisterReply {
            incarnation,
            seq: self.next_seq - 1,
        }
    }

    pub(super) fn sequence(&mut self, change: Change) -> u64 {
        if let (Some(id), Some(status)) = (&change.agent, change.body.status_after()) {
            self.set_status(id, status, change.at);
        }
        if let (Some(id), EventBody::Activity { to, .. }) = (&change.agent, &change.body) {
            self.set_activity(id, to, change.at);
        }
        let gone = match change.body.status_after() {
            Some(Status::Offline) => Some("agent_offline"),
            Some(Status::Left) => Some("agent_left"),
            _ => None,
        };
        let went_offline = change.agent.is_some()
            && matches!(
                change.body,
                EventBody::Transition {
                    to: Status::Offline,
                    ..
                }
            );
        let (agent, at) = (change.agent.clone(), change.at);
        let seq = self.push_event(change);
        // The unfinished jobs of an agent that went offline or left fail, after its change.
        if let (Some(id), Some(error)) = (agent, gone) {
            for body in self.jobs.fail_all(&id, error) {
                self.push_event(Change {
                    agent: Some(id.clone()),
                    at,
                    body,
                });
            }
            self.sync_jobs();
        }
        if went_offline {
            self.guard_mass_offline(at);
        }
        seq
    }

    /// Counts an offline transition; sequences one `mass_offline` alert when it makes the
    /// failure massive (the transition itself is already sequenced, as are all the others).
    pub(super) fn guard_mass_offline(&mut self, at: DateTime<Utc>) {
        let left = self.counts.get(&Status::Left).copied().unwrap_or(0);
        let fleet = self.agents.len().saturating_sub(left);
        if let Some(alert) = self.mass_offline.observe(at, fleet) {
            warn!(
                offline = alert.offline,
                fleet = alert.fleet_size,
                window_ms = alert.window.as_millis() as u64,
                "mass offline: a large share of the fleet went offline at once"
            );
            self.push_event(Change {
                agent: None,
                at,
                body: EventBody::Alert {
                    severity: Severity::High,
                    issue: MASS_OFFLINE.into(),
                    detail: alert.detail(),
                    adopted: None,
                },
            });
        }
    }

    pub(super) fn push_event(&mut self, change: Change) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let kind = change
            .agent
            .as_ref()
            .and_then(|id| self.agents.get(id))
            .map(|e| e.record.kind.clone());
        let event = Event {
            seq,
            at: change.at,
            agent: change.agent,
            kind,
            node: self.node.clone(),
            body: change.body,
        };
        self.pending_bytes += event_bytes(&event) as u64;
        self.backpressure.set_pending_bytes(self.pending_bytes);
        self.pending.push(Arc::new(event));
        seq
    }
}
