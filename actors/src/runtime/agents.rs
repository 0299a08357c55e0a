//! What agents (and the edges on their behalf) call: register, beat, report, deregister.

use std::time::Duration;

use ractor::rpc::CallResult;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::{AgentHandle, Beat, BeatError, RegisterError, Runtime, RuntimeError};
use crate::admin::{AdminError, AdminResponse};
use crate::agent::handle::beat_cell;
use crate::fleet::{FleetMsg, Registered};
use crate::model::{AgentId, JobReport, Registration};
use crate::registry::intake::{ReportQuota, Ticket};
use crate::registry::Report;

impl Runtime {
    /// Registers an agent (or registers it again: it goes online, incarnation + 1), and
    /// answers once its `registered` event is durable.
    pub async fn register(&self, reg: Registration) -> Result<AgentHandle, RegisterError> {
        let (handle, seq) = self.register_sequenced(reg).await?;
        self.wait_durable(seq).await.map_err(|e| match e {
            RuntimeError::Overloaded(m) => RegisterError::Overloaded(m),
            e => RegisterError::Unavailable(e.to_string()),
        })?;
        Ok(handle)
    }

    /// Registers an agent and answers as soon as it is supervised, with the seq of its
    /// `registered` event, before that is durable: a listener keeps serving the connection
    /// meanwhile and tells the agent `registered` after [`Runtime::wait_durable`].
    pub async fn register_sequenced(
        &self,
        reg: Registration,
    ) -> Result<(AgentHandle, u64), RegisterError> {
        let r: Registered = match self
            .fleet
            .call(
                |reply| FleetMsg::Register(reg, reply),
                Some(self.call_timeout),
            )
            .await
        {
            Ok(CallResult::Success(r)) => r?,
            _ => return Err(RegisterError::Unavailable("fleet supervisor".into())),
        };
        let handle = AgentHandle::new(r.cell, r.incarnation, r.heartbeat_interval, r.seq);
        Ok((handle, r.seq))
    }

    /// Returns once every event up to `seq` is durable (or fails after the call timeout).
    pub async fn wait_durable(&self, seq: u64) -> Result<(), RuntimeError> {
        match self.registry.durable(seq, self.call_timeout).await {
            true => Ok(()),
            false => Err(match self.backpressure.refuse_write() {
                Some(why) => RuntimeError::Overloaded(why),
                None => RuntimeError::Unavailable(format!("seq {seq} not durable in time")),
            }),
        }
    }

    /// A handle to a supervised agent, by id.
    pub fn agent(&self, id: &AgentId) -> Option<AgentHandle> {
        let cell = self.directory.read().get(id).cloned()?;
        let incarnation = cell.incarnation();
        Some(AgentHandle::new(cell, incarnation, Duration::ZERO, 0))
    }

    /// A heartbeat by id (a handle from [`Runtime::register`] skips the lookup).
    pub fn heartbeat(&self, id: &AgentId, beat: Beat) -> Result<(), BeatError> {
        let cell = self
            .directory
            .read()
            .get(id)
            .cloned()
            .ok_or_else(|| BeatError::UnknownAgent(id.clone()))?;
        beat_cell(&cell, beat, Instant::now())
    }

    /// The agent reports its activity (`idle`, `working`, ...). An `activity` event is
    /// recorded only when it differs from the last one; an unknown or departed agent's report
    /// is dropped.
    pub fn report_activity(
        &self,
        id: &AgentId,
        activity: impl Into<String>,
        detail: Option<String>,
    ) -> Result<(), BeatError> {
        match self.activity_report(id, activity.into(), detail) {
            Some(report) => self.send_report(id, report, None),
            None => Ok(()),
        }
    }

    /// [`Runtime::report_activity`] for a source with many reports to send (a connection):
    /// waits, if `quota`'s reports all wait for the registry, until one is taken.
    pub async fn report_activity_within(
        &self,
        quota: &ReportQuota,
        id: &AgentId,
        activity: impl Into<String>,
        detail: Option<String>,
    ) -> Result<(), BeatError> {
        match self.activity_report(id, activity.into(), detail) {
            Some(report) => {
                let slot = self.report_slot(quota).await;
                self.send_report(id, report, Some(slot))
            }
            None => Ok(()),
        }
    }

    /// The report of `activity`, unless it is the agent's last (as for most heartbeats that
    /// carry it: no message, no event).
    fn activity_report(
        &self,
        id: &AgentId,
        activity: String,
        detail: Option<String>,
    ) -> Option<Report> {
        let cell = self.directory.read().get(id).cloned();
        cell.is_none_or(|c| c.activity_changed(&activity))
            .then_some(Report::Activity { activity, detail })
    }

    /// Sends a report to the registry, counted (and holding `slot`, if any) until it is taken.
    pub(super) fn send_report(
        &self,
        id: &AgentId,
        report: Report,
        slot: Option<OwnedSemaphorePermit>,
    ) -> Result<(), BeatError> {
        let at = self.clock.utc(self.clock.now());
        let ticket = Ticket::new(&self.backpressure.reports, slot);
        match self.registry.report(id.clone(), at, report, ticket) {
            true => Ok(()),
            false => Err(BeatError::NotSupervised(id.clone())),
        }
    }

    /// The agent reports on one of its jobs. A `job` event is recorded when the state (or the
    /// agent) changes, or the progress moves by [`crate::PROGRESS_STEP`] or more.
    pub fn report_job(&self, id: &AgentId, report: JobReport) -> Result<(), BeatError> {
        self.send_report(id, Report::Job(report), None)
    }

    /// [`Runtime::report_job`] for a source with many reports to send (see
    /// [`Runtime::report_activity_within`]).
    pub async fn report_job_within(
        &self,
        quota: &ReportQuota,
        id: &AgentId,
        report: JobReport,
    ) -> Result<(), BeatError> {
        let slot = self.report_slot(quota).await;
        self.send_report(id, Report::Job(report), Some(slot))
    }

    /// A slot of `quota`, waiting for one if every report it allows waits for the registry:
    /// the source's other input (a connection's next frames, its agents' beats) waits too
    /// then, held (see [`Runtime::hold_input`]).
    async fn report_slot(&self, quota: &ReportQuota) -> OwnedSemaphorePermit {
        if let Some(slot) = quota.try_slot() {
            return slot;
        }
        let _held = self.hold_input();
        quota.slot().await
    }

    /// The agent deregisters itself: it leaves (`deregistered`, status `left`).
    pub async fn deregister(&self, id: &AgentId) -> Result<AdminResponse, AdminError> {
        match self
            .fleet
            .call(
                |reply| FleetMsg::Deregister(id.clone(), reply),
                Some(self.call_timeout),
            )
            .await
        {
            Ok(CallResult::Success(r)) => r,
            _ => Err(AdminError::Unavailable("fleet supervisor".into())),
        }
    }
}
