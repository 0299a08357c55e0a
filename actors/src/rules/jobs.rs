//! The jobs agents report (PROTOCOL.md, `job`): which state each job is in, which agent runs
//! it, and which reports are real changes worth an event.
//!
//! A pure book kept by the registry. It decides:
//! - a report that changes nothing (same agent, same state, progress moved by less than
//!   [`PROGRESS_STEP`]) makes no event: progress events are coalesced;
//! - a job whose agent goes offline or leaves while unfinished fails, with error
//!   `agent_offline` / `agent_left`;
//! - finished jobs are remembered (a repeated `completed` is not a new job) up to
//!   [`FINISHED_KEPT`], oldest forgotten first;
//! - a job is its agent's: job ids are scoped by agent, so one agent's report never changes
//!   another agent's job of the same name;
//! - an agent holds at most [`MAX_OPEN_PER_AGENT`] unfinished jobs; a report of another new
//!   one is refused (logged, no event).
//!
//! The book is rebuilt after a restart by replaying the job events of the log.

use std::collections::{BTreeSet, HashMap, VecDeque};

use crate::model::{AgentId, EventBody, JobReport, JobState, OpenJob};

/// Progress changes smaller than this (within one state) are not events.
pub const PROGRESS_STEP: f64 = 0.01;
/// How many finished jobs are remembered.
pub const FINISHED_KEPT: usize = 10_000;
/// Most unfinished jobs one agent may hold.
pub const MAX_OPEN_PER_AGENT: usize = 1_000;

/// A job: its agent and its id.
type Key = (AgentId, String);

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct JobEntry {
    pub agent: AgentId,
    pub state: JobState,
    /// Progress as of the last event.
    pub progress: Option<f64>,
}

#[derive(Debug, Default)]
pub(crate) struct JobBook {
    jobs: HashMap<Key, JobEntry>,
    /// Unfinished jobs per agent.
    open: HashMap<AgentId, BTreeSet<String>>,
    finished: VecDeque<Key>,
    /// Agents whose unfinished jobs changed since [`JobBook::take_touched`].
    touched: Vec<AgentId>,
}

impl JobBook {
    /// The event a report makes, if it changes anything; the book is updated.
    pub(crate) fn report(&mut self, agent: &AgentId, r: JobReport) -> Option<EventBody> {
        let progress = r.progress.map(|p| p.clamp(0.0, 1.0));
        let prev = self.jobs.get(&(agent.clone(), r.job.clone()));
        if prev.is_none()
            && !r.state.is_final()
            && self.open.get(agent).map_or(0, BTreeSet::len) >= MAX_OPEN_PER_AGENT
        {
            tracing::warn!(agent = %agent, job = %r.job, "too many unfinished jobs: report ignored");
            return None;
        }
        if let Some(p) = prev {
            if p.state == r.state {
                let moved = match (p.progress, progress) {
                    (_, None) => false,
                    (None, Some(_)) => true,
                    (Some(a), Some(b)) => (a - b).abs() >= PROGRESS_STEP || (b >= 1.0 && a < 1.0),
                };
                if !moved {
                    return None;
                }
            }
        }
        let from = prev.map(|p| p.state.as_str().to_string());
        let body = EventBody::Job {
            job: r.job,
            from,
            to: r.state.as_str().to_string(),
            progress,
            error: r.error,
        };
        self.apply(agent, &body);
        Some(body)
    }

    /// Fails every unfinished job of `agent` (it went offline or left): the events to record.
    pub(crate) fn fail_all(&mut self, agent: &AgentId, error: &str) -> Vec<EventBody> {
        let Some(open) = self.open.get(agent) else {
            return Vec::new();
        };
        let bodies: Vec<EventBody> = open
            .iter()
            .filter_map(|job| {
                let e = self.jobs.get(&(agent.clone(), job.clone()))?;
                Some(EventBody::Job {
                    job: job.clone(),
                    from: Some(e.state.as_str().to_string()),
                    to: JobState::Failed.as_str().to_string(),
                    progress: e.progress,
                    error: Some(error.to_string()),
                })
            })
            .collect();
        for b in &bodies {
            self.apply(agent, b);
        }
        bodies
    }

    /// Applies a job event (a new one, or one replayed from the log).
    pub(crate) fn apply(&mut self, agent: &AgentId, body: &EventBody) {
        let EventBody::Job {
            job, to, progress, ..
        } = body
        else {
            return;
        };
        let Some(state) = JobState::parse(to) else {
            return;
        };
        let key = (agent.clone(), job.clone());
        let prev = self.jobs.insert(
            key.clone(),
            JobEntry {
                agent: agent.clone(),
                state,
                progress: *progress,
            },
        );
        self.touched.push(agent.clone());
        if prev.is_some() {
            if let Some(set) = self.open.get_mut(agent) {
                set.remove(job);
                if set.is_empty() {
                    self.open.remove(agent);
                }
            }
        }
        if state.is_final() {
            if prev.as_ref().is_none_or(|p| !p.state.is_final()) {
                self.finished.push_back(key);
            }
            while self.finished.len() > FINISHED_KEPT {
                if let Some(old) = self.finished.pop_front() {
                    if self.jobs.get(&old).is_some_and(|e| e.state.is_final()) {
                        self.jobs.remove(&old);
                    }
                }
            }
        } else {
            self.open
                .entry(agent.clone())
                .or_default()
                .insert(job.clone());
        }
    }

    /// Takes in the unfinished jobs an agent's record held (restore from a checkpoint).
    pub(crate) fn load(
        &mut self,
        agent: &AgentId,
        jobs: &std::collections::BTreeMap<String, OpenJob>,
    ) {
        for (job, j) in jobs {
            self.jobs.insert(
                (agent.clone(), job.clone()),
                JobEntry {
                    agent: agent.clone(),
                    state: j.state,
                    progress: j.progress,
                },
            );
            self.open
                .entry(agent.clone())
                .or_default()
                .insert(job.clone());
        }
    }

    /// An agent's unfinished jobs, as its record holds them.
    pub(crate) fn open_of(&self, agent: &AgentId) -> std::collections::BTreeMap<String, OpenJob> {
        self.open
            .get(agent)
            .into_iter()
            .flatten()
            .filter_map(|job| {
                let e = self.jobs.get(&(agent.clone(), job.clone()))?;
                Some((
                    job.clone(),
                    OpenJob {
                        state: e.state,
                        progress: e.progress,
                    },
                ))
            })
            .collect()
    }

    /// Forgets an agent's unfinished jobs (the agent moved to another node, which keeps
    /// them from here on).
    pub(crate) fn forget(&mut self, agent: &AgentId) {
        for job in self.open.remove(agent).into_iter().flatten() {
            self.jobs.remove(&(agent.clone(), job));
        }
    }

    /// The agents whose unfinished jobs changed since the last call.
    pub(crate) fn take_touched(&mut self) -> Vec<AgentId> {
        let mut t = std::mem::take(&mut self.touched);
        t.sort();
        t.dedup();
        t
    }

    #[cfg(test)]
    pub(crate) fn get(&self, agent: &AgentId, job: &str) -> Option<&JobEntry> {
        self.jobs.get(&(agent.clone(), job.to_string()))
    }

    /// Jobs by state.
    pub(crate) fn counts(&self) -> std::collections::BTreeMap<JobState, usize> {
        let mut c = std::collections::BTreeMap::new();
        for e in self.jobs.values() {
            *c.entry(e.state).or_default() += 1;
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> AgentId {
        AgentId::new(s).unwrap()
    }

    fn rep(job: &str, state: JobState, progress: Option<f64>) -> JobReport {
        JobReport {
            job: job.into(),
            state,
            progress,
            error: None,
        }
    }

    fn to_of(b: &EventBody) -> (Option<String>, String, Option<f64>, Option<String>) {
        match b {
            EventBody::Job {
                from,
                to,
                progress,
                error,
                ..
            } => (from.clone(), to.clone(), *progress, error.clone()),
            other => panic!("not a job event: {other:?}"),
        }
    }

    #[test]
    fn only_real_changes_are_events_and_progress_is_coalesced() {
        let mut b = JobBook::default();
        let a = id("a");
        let e = b
            .report(&a, rep("j", JobState::Running, Some(0.1)))
            .unwrap();
        assert_eq!(to_of(&e), (None, "running".into(), Some(0.1), None));
        // Same state, same or nearly the same progress: nothing.
        assert!(b
            .report(&a, rep("j", JobState::Running, Some(0.1)))
            .is_none());
        assert!(b
            .report(&a, rep("j", JobState::Running, Some(0.105)))
            .is_none());
        assert!(b.report(&a, rep("j", JobState::Running, None)).is_none());
        let e = b
            .report(&a, rep("j", JobState::Running, Some(0.5)))
            .unwrap();
        assert_eq!(
            to_of(&e),
            (Some("running".into()), "running".into(), Some(0.5), None)
        );
        let e = b
            .report(&a, rep("j", JobState::Completed, Some(1.0)))
            .unwrap();
        assert_eq!(to_of(&e).1, "completed");
        // A repeated final report is not a new job.
        assert!(b
            .report(&a, rep("j", JobState::Completed, Some(1.0)))
            .is_none());
        assert_eq!(b.counts().get(&JobState::Completed), Some(&1));
    }

    #[test]
    fn unfinished_jobs_of_an_agent_fail_when_it_goes() {
        let mut b = JobBook::default();
        let (a, other) = (id("a"), id("b"));
        b.report(&a, rep("j1", JobState::Running, Some(0.3)));
        b.report(&a, rep("j2", JobState::Assigned, None));
        b.report(&a, rep("j3", JobState::Completed, None));
        b.report(&other, rep("k", JobState::Running, None));
        let failed = b.fail_all(&a, "agent_offline");
        let mut got: Vec<_> = failed.iter().map(to_of).collect();
        got.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(
            got,
            vec![
                (
                    Some("assigned".into()),
                    "failed".into(),
                    None,
                    Some("agent_offline".into())
                ),
                (
                    Some("running".into()),
                    "failed".into(),
                    Some(0.3),
                    Some("agent_offline".into())
                ),
            ]
        );
        assert!(b.fail_all(&a, "agent_offline").is_empty(), "failed once");
        assert_eq!(b.get(&other, "k").map(|e| e.state), Some(JobState::Running));
    }

    #[test]
    fn one_agent_cannot_complete_another_agents_job() {
        let mut b = JobBook::default();
        let (a, c) = (id("a"), id("c"));
        b.report(&a, rep("j", JobState::Running, None));
        let e = b.report(&c, rep("j", JobState::Completed, None));
        assert!(e.is_some(), "c's own job j");
        assert_eq!(b.get(&a, "j").map(|e| e.state), Some(JobState::Running));
        assert_eq!(b.get(&c, "j").map(|e| e.state), Some(JobState::Completed));
        assert_eq!(
            b.fail_all(&a, "agent_left").len(),
            1,
            "a's j was still open"
        );
    }

    #[test]
    fn an_agent_holds_a_bounded_number_of_unfinished_jobs() {
        let mut b = JobBook::default();
        let a = id("a");
        for i in 0..MAX_OPEN_PER_AGENT {
            assert!(b
                .report(&a, rep(&format!("j{i}"), JobState::Running, None))
                .is_some());
        }
        assert!(
            b.report(&a, rep("one-more", JobState::Running, None))
                .is_none(),
            "refused"
        );
        assert!(b.get(&a, "one-more").is_none());
        // Finishing one makes room; reports on open jobs still count.
        assert!(b.report(&a, rep("j0", JobState::Completed, None)).is_some());
        assert!(b
            .report(&a, rep("one-more", JobState::Running, None))
            .is_some());
        assert!(b
            .report(&a, rep("j1", JobState::Running, Some(0.5)))
            .is_some());
        assert_eq!(b.open_of(&a).len(), MAX_OPEN_PER_AGENT);
    }

    #[test]
    fn finished_jobs_are_forgotten_oldest_first() {
        let mut b = JobBook::default();
        let a = id("a");
        for i in 0..FINISHED_KEPT + 5 {
            b.report(&a, rep(&format!("j{i}"), JobState::Completed, None));
        }
        assert!(b.get(&a, "j0").is_none());
        assert!(b.get(&a, &format!("j{}", FINISHED_KEPT + 4)).is_some());
        assert_eq!(b.counts().values().sum::<usize>(), FINISHED_KEPT);
    }
}
