//! The live view of the agents: records, counts by status and kind, and what changed since
//! the last checkpoint and mirror write.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tracing::info;

use super::{Entry, RegistryState};
use crate::model::{AgentId, Event, EventBody, Status};
use crate::registry::pipeline::Side;
use crate::rules;

impl RegistryState {
    pub(super) fn insert(&mut self, entry: Entry) {
        self.count(&entry.record.kind, entry.record.status, true);
        self.agents.insert(entry.record.id.clone(), entry);
    }

    /// Counts an agent of `kind` in `status` in (`add`) or out.
    pub(super) fn count(&mut self, kind: &Arc<str>, status: Status, add: bool) {
        let c = self.counts.entry(status).or_default();
        let k = match self.by_kind.get_mut(kind) {
            Some(k) => k,
            None => self.by_kind.entry(kind.clone()).or_default(),
        };
        let slot = &mut k[status as usize];
        match add {
            true => {
                *c += 1;
                *slot += 1;
            }
            false => {
                *c = c.saturating_sub(1);
                *slot = slot.saturating_sub(1);
                if k.iter().all(|n| *n == 0) {
                    self.by_kind.remove(kind);
                }
            }
        }
    }

    pub(super) fn set_status(&mut self, id: &AgentId, status: Status, at: DateTime<Utc>) {
        if let Some(e) = self.agents.get_mut(id) {
            let (kind, before) = (e.record.kind.clone(), e.record.status);
            e.record.status = status;
            e.record.updated_at = at;
            self.touch(id);
            self.count(&kind, before, false);
            self.count(&kind, status, true);
        }
    }

    /// Drops the agents that left more than `left_ttl` ago: their events stay in the log (as
    /// retention allows); their records go from the view, the next checkpoint (full, so no
    /// older chunk brings them back) and the mirror. An id dropped so registers as new.
    pub(super) fn purge_left(&mut self) {
        let Some(ttl) = self.left_ttl else { return };
        let Ok(ttl) = chrono::Duration::from_std(ttl) else {
            return;
        };
        let cutoff = self.clock.utc(self.clock.now()) - ttl;
        let gone: Vec<AgentId> = self
            .agents
            .values()
            .filter(|e| e.record.status == Status::Left && e.record.updated_at < cutoff)
            .map(|e| e.record.id.clone())
            .collect();
        if gone.is_empty() {
            return;
        }
        for id in &gone {
            if let Some(e) = self.agents.remove(id) {
                self.count(&e.record.kind, e.record.status, false);
            }
            if let Some(d) = &mut self.dirty {
                d.remove(id);
            }
            self.mirror_dirty.remove(id);
        }
        info!(
            agents = gone.len(),
            "agents that left long ago were dropped"
        );
        self.checkpoint_rows = None; // the next checkpoint is full
        self.pipeline
            .push_side(self.next_seq - 1, Side::Forget(gone.into()));
    }

    /// Drops an agent another node registered at seq `taken` of the shared log, with no
    /// event, unless this node registered it again since (its registration is still on its way
    /// to the log, or landed after `taken`). Returns whether it was dropped.
    pub(super) fn forget(&mut self, id: &AgentId, taken: u64) -> bool {
        let registers = |e: &Event| {
            e.agent.as_ref() == Some(id) && matches!(e.body, EventBody::Registered { .. })
        };
        let again = self.pending.iter().any(|e| registers(e))
            || self.pipeline.any_event(registers)
            || self.cluster.as_ref().is_some_and(|c| c.keeps(id, taken));
        if again {
            return false;
        }
        if let Some(e) = self.agents.remove(id) {
            self.count(&e.record.kind, e.record.status, false);
        }
        if let Some(d) = &mut self.dirty {
            d.remove(id);
        }
        self.mirror_dirty.remove(id);
        self.jobs.forget(id);
        true
    }

    /// Marks an agent changed: the next checkpoint and the mirror write it.
    pub(super) fn touch(&mut self, id: &AgentId) {
        if let Some(d) = &mut self.dirty {
            d.insert(id.clone());
        }
        self.mirror_dirty.insert(id.clone());
    }

    /// Applies a persisted event to the view (restore: replay of the log), by the rule in
    /// `rules::replay`.
    pub(super) fn apply(&mut self, e: &Event) {
        let Some(id) = &e.agent else { return };
        if let job @ EventBody::Job { .. } = &e.body {
            self.jobs.apply(id, job);
            self.sync_jobs();
            return;
        }
        let before = self.agents.get(id).map(|x| &*x.record);
        let Some(after) = rules::replay::record_after(before, e) else {
            return;
        };
        // A registration starts a new incarnation, with no agent actor yet.
        let keep_cell = !matches!(e.body, EventBody::Registered { .. });
        let cell = match self.agents.remove(id) {
            Some(old) => {
                self.count(&old.record.kind, old.record.status, false);
                old.cell.filter(|_| keep_cell)
            }
            None => None,
        };
        self.insert(Entry {
            record: Box::new(after),
            cell,
        });
        self.touch(id);
    }

    /// Copies the unfinished jobs that changed into their agents' records.
    pub(super) fn sync_jobs(&mut self) {
        for id in self.jobs.take_touched() {
            let open = self.jobs.open_of(&id);
            if let Some(e) = self.agents.get_mut(&id) {
                e.record.jobs = open;
                self.touch(&id);
            }
        }
    }

    pub(super) fn set_activity(&mut self, id: &AgentId, activity: &str, at: DateTime<Utc>) {
        if let Some(e) = self.agents.get_mut(id) {
            e.record.activity = Some(activity.to_string());
            e.record.updated_at = at;
            self.touch(id);
        }
    }
}
