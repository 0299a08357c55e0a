//! [`FleetView`]: every agent of the fleet as of one seq of the log.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::model::{AgentId, AgentRecord, Event, EventBody, Status};
use crate::rules::jobs::JobBook;
use crate::rules::replay::record_after;

/// An event that cannot be applied: the view is as of seq `at`, the event is not the next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the view is as of seq {at}; event {got} is not the next")]
pub struct ViewError {
    /// The seq the view is as of.
    pub at: u64,
    /// The event's seq.
    pub got: u64,
}

/// An agent as a checkpoint of the view keeps it: its record and its owner.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FleetRow {
    /// The agent's record.
    pub record: AgentRecord,
    /// The node that owns it (none before any node registered it, which does not happen in a
    /// log that nodes wrote).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Arc<str>>,
}

/// Every agent's record and owner, the counts by status and the unfinished jobs, as of
/// [`FleetView::seq`].
#[derive(Debug, Default)]
pub struct FleetView {
    records: BTreeMap<AgentId, AgentRecord>,
    /// The node whose `registered` event was the agent's last (its owner).
    owners: HashMap<AgentId, Arc<str>>,
    /// The seq of the last event that changed each agent's record or owner (what a
    /// checkpoint after an earlier seq must write again).
    changed: HashMap<AgentId, u64>,
    /// Agents by kind, then by status (every status present, zero included).
    by_kind: BTreeMap<Arc<str>, BTreeMap<Status, usize>>,
    jobs: JobBook,
    seq: u64,
}

impl FleetView {
    /// A view of `rows` as of `seq` (a checkpoint), to which the events after `seq` are
    /// applied. Of several rows of one agent (a checkpoint's incremental chunks), the last
    /// is the agent's.
    pub fn new(rows: impl IntoIterator<Item = FleetRow>, seq: u64) -> Self {
        let mut view = FleetView {
            seq,
            ..FleetView::default()
        };
        let last: BTreeMap<AgentId, FleetRow> = rows
            .into_iter()
            .map(|row| (row.record.id.clone(), row))
            .collect();
        for FleetRow { record: r, owner } in last.into_values() {
            view.jobs.load(&r.id, &r.jobs);
            view.count(&r.kind, r.status, true);
            if let Some(owner) = owner {
                view.owners.insert(r.id.clone(), owner);
            }
            view.changed.insert(r.id.clone(), seq);
            view.records.insert(r.id.clone(), r);
        }
        view
    }

    /// The agents whose record or owner changed after `seq` (every agent with `None`), as a
    /// checkpoint keeps them.
    pub fn rows_changed_after(&self, seq: Option<u64>) -> Vec<FleetRow> {
        self.records
            .values()
            .filter(|r| seq.is_none_or(|s| self.changed.get(&r.id).is_some_and(|c| *c > s)))
            .map(|r| FleetRow {
                record: r.clone(),
                owner: self.owners.get(&r.id).cloned(),
            })
            .collect()
    }

    /// The seq the view is as of: every event up to it is applied, none after.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Applies the next event of the log (its seq must be the view's plus one).
    pub fn apply(&mut self, e: &Event) -> Result<(), ViewError> {
        if e.seq != self.seq + 1 {
            return Err(ViewError {
                at: self.seq,
                got: e.seq,
            });
        }
        self.seq = e.seq;
        if let (
            EventBody::Alert {
                adopted: Some(dead),
                ..
            },
            Some(by),
        ) = (&e.body, &e.node)
        {
            // A node adopted a dead one's agents: they are its own from here on.
            for (id, owner) in self.owners.iter_mut() {
                if **owner == **dead {
                    *owner = by.clone();
                    self.changed.insert(id.clone(), e.seq);
                }
            }
        }
        let Some(id) = &e.agent else { return Ok(()) };
        if let (EventBody::Registered { .. }, Some(node)) = (&e.body, &e.node) {
            self.owners.insert(id.clone(), node.clone());
            self.changed.insert(id.clone(), e.seq);
        }
        if let job @ EventBody::Job { .. } = &e.body {
            self.jobs.apply(id, job);
            for touched in self.jobs.take_touched() {
                let open = self.jobs.open_of(&touched);
                if let Some(r) = self.records.get_mut(&touched) {
                    r.jobs = open;
                    self.changed.insert(touched, e.seq);
                }
            }
            return Ok(());
        }
        if let Some(after) = record_after(self.records.get(id), e) {
            self.changed.insert(id.clone(), e.seq);
            if let Some(before) = self.records.get(id).map(|b| (b.kind.clone(), b.status)) {
                self.count(&before.0, before.1, false);
            }
            self.count(&after.kind, after.status, true);
            self.records.insert(id.clone(), after);
        }
        Ok(())
    }

    /// Drops the agents that left before `cutoff` (`left_ttl` ago): their records, owners and
    /// counts, as a single node's registry does. The log keeps their events; an id dropped
    /// registers as new. Returns how many were dropped, after which a checkpoint that kept
    /// them must be rewritten whole.
    pub fn purge_left(&mut self, cutoff: DateTime<Utc>) -> usize {
        if !self.counts().contains_key(&Status::Left) {
            return 0; // nobody left: no scan of the fleet
        }
        let gone: Vec<AgentId> = self
            .records
            .values()
            .filter(|r| r.status == Status::Left && r.updated_at < cutoff)
            .map(|r| r.id.clone())
            .collect();
        for id in &gone {
            if let Some(r) = self.records.remove(id) {
                self.count(&r.kind, r.status, false);
            }
            self.owners.remove(id);
            self.changed.remove(id);
            self.jobs.forget(id);
        }
        gone.len()
    }

    /// One agent's record.
    pub fn get(&self, id: &AgentId) -> Option<&AgentRecord> {
        self.records.get(id)
    }

    /// The node that owns an agent: the one that decided its last `registered` event.
    pub fn owner(&self, id: &AgentId) -> Option<&Arc<str>> {
        self.owners.get(id)
    }

    /// The records of the agents `node` owns.
    pub fn owned_by<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a AgentRecord> + 'a {
        self.records
            .values()
            .filter(move |r| self.owners.get(&r.id).is_some_and(|o| **o == *node))
    }

    /// The unfinished jobs, by state.
    pub fn job_counts(&self) -> BTreeMap<crate::model::JobState, usize> {
        self.jobs.counts()
    }

    /// Every agent's record, in id order.
    pub fn agents(&self) -> impl Iterator<Item = &AgentRecord> {
        self.records.values()
    }

    /// How many agents are in each status (statuses with none are left out).
    pub fn counts(&self) -> BTreeMap<Status, usize> {
        let mut counts = BTreeMap::new();
        for (s, n) in self.by_kind.values().flatten() {
            *counts.entry(*s).or_default() += n;
        }
        counts.retain(|_, n| *n > 0);
        counts
    }

    /// Agents by kind, then by status (every status present; kinds with none left out).
    pub fn by_kind(&self) -> &BTreeMap<Arc<str>, BTreeMap<Status, usize>> {
        &self.by_kind
    }

    /// How many agents the view holds.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the view holds no agent.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Counts an agent of `kind` in `status` in (`add`) or out.
    fn count(&mut self, kind: &Arc<str>, status: Status, add: bool) {
        let k = self
            .by_kind
            .entry(kind.clone())
            .or_insert_with(|| Status::ALL.iter().map(|s| (*s, 0)).collect());
        let n = k.entry(status).or_default();
        *n = if add { *n + 1 } else { n.saturating_sub(1) };
        if k.values().all(|n| *n == 0) {
            self.by_kind.remove(kind);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::model::{JobState, Reason};

    fn event(seq: u64, agent: &str, body: EventBody) -> Event {
        Event {
            seq,
            at: Utc
                .timestamp_millis_opt(1_700_000_000_000 + seq as i64)
                .unwrap(),
            agent: AgentId::new(agent).ok(),
            kind: Some(Arc::from("worker")),
            node: None,
            body,
        }
    }

    fn registered(seq: u64, agent: &str) -> Event {
        event(
            seq,
            agent,
            EventBody::Registered {
                from: None,
                status: Status::Online,
                name: agent.into(),
                metadata: Default::default(),
                capabilities: vec![],
                incarnation: 1,
                heartbeat_interval_ms: None,
            },
        )
    }

    /// The alert of a node's adoption of `dead`'s agents.
    fn adoption(seq: u64, dead: &str) -> Event {
        let mut e = Event::alert(
            seq,
            Utc::now(),
            crate::model::Severity::High,
            "node_adopted",
            "",
        );
        if let EventBody::Alert { adopted, .. } = &mut e.body {
            *adopted = Some(dead.into());
        }
        e
    }

    fn transition(seq: u64, agent: &str, from: Status, to: Status) -> Event {
        event(
            seq,
            agent,
            EventBody::Transition {
                from,
                to,
                reason: Reason::HeartbeatMissed,
                missed: None,
            },
        )
    }

    #[test]
    fn events_in_order_make_the_fleet_and_its_counts() {
        let mut v = FleetView::default();
        v.apply(&registered(1, "a")).unwrap();
        v.apply(&registered(2, "b")).unwrap();
        v.apply(&transition(3, "a", Status::Online, Status::Degraded))
            .unwrap();
        assert_eq!(v.seq(), 3);
        assert_eq!(
            v.counts(),
            BTreeMap::from([(Status::Online, 1), (Status::Degraded, 1)])
        );
        let a = AgentId::new("a").unwrap();
        assert_eq!(v.get(&a).map(|r| r.status), Some(Status::Degraded));
        assert_eq!(v.agents().count(), 2);
        let worker = &v.by_kind()[&Arc::<str>::from("worker")];
        assert_eq!((worker[&Status::Online], worker[&Status::Degraded]), (1, 1));
        assert_eq!(v.len(), 2);
    }

    #[test]
    fn agents_that_left_before_the_cutoff_are_dropped() {
        let mut v = FleetView::default();
        v.apply(&registered(1, "a")).unwrap();
        v.apply(&registered(2, "b")).unwrap();
        v.apply(&registered(3, "c")).unwrap();
        let left = |seq, agent| {
            event(
                seq,
                agent,
                EventBody::Deregistered {
                    from: Status::Online,
                    reason: Reason::Deregistered,
                },
            )
        };
        v.apply(&left(4, "a")).unwrap();
        v.apply(&left(5, "b")).unwrap();
        let at = |seq: u64| left(seq, "a").at;
        // "a" left before the cutoff, "b" at it, "c" never.
        assert_eq!(v.purge_left(at(5)), 1);
        let id = |s: &str| AgentId::new(s).unwrap();
        assert!(v.get(&id("a")).is_none() && v.owner(&id("a")).is_none());
        assert!(v.get(&id("b")).is_some() && v.get(&id("c")).is_some());
        assert_eq!(
            v.counts(),
            BTreeMap::from([(Status::Online, 1), (Status::Left, 1)])
        );
        assert_eq!(v.rows_changed_after(None).len(), 2);
        assert_eq!(v.purge_left(at(5)), 0, "nothing more to drop");
        // The id registers as new.
        v.apply(&registered(6, "a")).unwrap();
        assert_eq!(v.get(&id("a")).map(|r| r.status), Some(Status::Online));
    }

    #[test]
    fn the_last_registration_names_the_owner() {
        let mut v = FleetView::default();
        let on = |mut e: Event, node: &str| {
            e.node = Some(Arc::from(node));
            e
        };
        v.apply(&on(registered(1, "a"), "n1")).unwrap();
        v.apply(&on(registered(2, "b"), "n2")).unwrap();
        v.apply(&on(
            transition(3, "a", Status::Online, Status::Degraded),
            "n1",
        ))
        .unwrap();
        let a = AgentId::new("a").unwrap();
        assert_eq!(v.owner(&a).map(|n| &**n), Some("n1"));
        let owned: Vec<&str> = v.owned_by("n1").map(|r| r.id.as_str()).collect();
        assert_eq!(owned, vec!["a"]);
        v.apply(&on(registered(4, "a"), "n2")).unwrap();
        assert_eq!(v.owner(&a).map(|n| &**n), Some("n2"));
        assert_eq!(v.owned_by("n1").count(), 0);
        assert_eq!(v.owned_by("n2").count(), 2);
        // n3 adopts n2's agents.
        v.apply(&on(adoption(5, "n2"), "n3")).unwrap();
        assert_eq!(v.owned_by("n2").count(), 0);
        assert_eq!(v.owned_by("n3").count(), 2);
    }

    #[test]
    fn an_event_out_of_order_is_refused_and_changes_nothing() {
        let mut v = FleetView::default();
        v.apply(&registered(1, "a")).unwrap();
        assert_eq!(
            v.apply(&registered(3, "b")),
            Err(ViewError { at: 1, got: 3 })
        );
        assert_eq!(
            v.apply(&registered(1, "b")),
            Err(ViewError { at: 1, got: 1 })
        );
        assert_eq!((v.seq(), v.agents().count()), (1, 1));
    }

    #[test]
    fn jobs_are_kept_in_their_agents_records() {
        let mut v = FleetView::new([], 10);
        v.apply(&registered(11, "a")).unwrap();
        v.apply(&event(
            12,
            "a",
            EventBody::Job {
                job: "j1".into(),
                from: None,
                to: "running".into(),
                progress: Some(0.5),
                error: None,
            },
        ))
        .unwrap();
        let a = AgentId::new("a").unwrap();
        let jobs = &v.get(&a).unwrap().jobs;
        assert_eq!(jobs.get("j1").map(|j| j.state), Some(JobState::Running));
        v.apply(&event(
            13,
            "a",
            EventBody::Job {
                job: "j1".into(),
                from: Some("running".into()),
                to: "completed".into(),
                progress: Some(1.0),
                error: None,
            },
        ))
        .unwrap();
        assert!(
            v.get(&a).unwrap().jobs.is_empty(),
            "a finished job is not open"
        );
    }

    #[test]
    fn a_view_rebuilt_from_its_rows_goes_on_as_the_original() {
        let on = |mut e: Event, node: &str| {
            e.node = Some(Arc::from(node));
            e
        };
        let mut v = FleetView::default();
        v.apply(&on(registered(1, "a"), "n1")).unwrap();
        v.apply(&on(registered(2, "b"), "n2")).unwrap();
        v.apply(&on(registered(3, "c"), "n2")).unwrap();
        v.apply(&on(
            transition(4, "a", Status::Online, Status::Degraded),
            "n1",
        ))
        .unwrap();
        let changed: Vec<String> = v
            .rows_changed_after(Some(2))
            .iter()
            .map(|r| r.record.id.to_string())
            .collect();
        assert_eq!(changed, vec!["a", "c"], "only what changed after seq 2");
        // n1 adopts n2's agents: b and c change owner, so a checkpoint writes them again.
        v.apply(&on(adoption(5, "n2"), "n1")).unwrap();
        assert_eq!(v.rows_changed_after(Some(4)).len(), 2);

        // Rows as a checkpoint's chunks hold them: older rows of an agent, then its newest.
        let mut rows = v.rows_changed_after(None);
        let mut stale = rows[0].clone();
        stale.record.status = Status::Online;
        stale.record.jobs.insert(
            "gone".into(),
            crate::model::OpenJob {
                state: JobState::Running,
                progress: None,
            },
        );
        rows.insert(0, stale);
        let mut back = FleetView::new(rows, v.seq());
        let next = on(transition(6, "b", Status::Online, Status::Degraded), "n1");
        v.apply(&next).unwrap();
        back.apply(&next).unwrap();
        let b = AgentId::new("b").unwrap();
        assert_eq!(back.owner(&b).map(|n| &**n), Some("n1"));
        assert_eq!(back.owned_by("n1").count(), 3);
        assert_eq!(back.counts(), v.counts());
        assert!(back.job_counts().is_empty(), "{:?}", back.job_counts());
        assert_eq!(
            back.agents().cloned().collect::<Vec<_>>(),
            v.agents().cloned().collect::<Vec<_>>()
        );
        assert!(back
            .rows_changed_after(Some(5))
            .iter()
            .all(|r| r.record.id == b));
    }
}
