//! An agent's handle: heartbeats by the fast path, its registration's identity.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::agent::cell::AgentCell;
use crate::agent::AgentMsg;
use crate::model::{AgentId, Metrics, Reported};
use crate::rules::lag::BeatSource;

/// Why a heartbeat was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BeatError {
    /// No agent has this id.
    #[error("unknown agent {0}")]
    UnknownAgent(AgentId),
    /// The agent's actor is restarting, or the agent has left.
    #[error("agent {0} is not supervised right now (its actor is restarting or it left)")]
    NotSupervised(AgentId),
    /// The handle is of an earlier registration: the agent registered again (taken over).
    #[error("agent {0} was registered again since (this registration is superseded)")]
    Superseded(AgentId),
}

/// A heartbeat's content.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Beat {
    /// The health the agent reports.
    pub reported: Reported,
    /// Numbers to record with the beat; `None` keeps the last ones.
    pub metrics: Option<Metrics>,
}

impl Beat {
    /// A healthy beat without metrics.
    pub fn healthy() -> Self {
        Self::default()
    }

    /// A beat reporting this health, without metrics.
    pub fn reporting(reported: Reported) -> Self {
        Self {
            reported,
            metrics: None,
        }
    }
}

/// A handle to one supervised agent: heartbeats through it skip every lookup.
#[derive(Debug, Clone)]
pub struct AgentHandle {
    cell: Arc<AgentCell>,
    incarnation: u64,
    interval: Duration,
    /// The seq of the `registered` event of this registration (0 when not known).
    seq: u64,
}

impl AgentHandle {
    pub(crate) fn new(
        cell: Arc<AgentCell>,
        incarnation: u64,
        interval: Duration,
        seq: u64,
    ) -> Self {
        Self {
            cell,
            incarnation,
            interval,
            seq,
        }
    }

    /// The seq of this registration's `registered` event (0 for a handle looked up by id):
    /// an event about the agent with a lower seq happened before this registration.
    pub fn registered_seq(&self) -> u64 {
        self.seq
    }

    /// The agent's id.
    pub fn id(&self) -> &AgentId {
        self.cell.id()
    }

    /// The incarnation this registration got.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The heartbeat interval in force for this agent.
    pub fn heartbeat_interval(&self) -> Duration {
        self.interval
    }

    /// Takes a heartbeat now. A healthy beat of an online agent is an atomic store and no
    /// message (the fast path); any other beat is a message to the agent's actor.
    pub fn heartbeat(&self, beat: Beat) -> Result<(), BeatError> {
        self.heartbeat_at(beat, Instant::now())
    }

    /// Takes a heartbeat received at `at` (a caller with many beats received at once reads
    /// the clock once for all of them).
    pub fn heartbeat_at(&self, beat: Beat, at: Instant) -> Result<(), BeatError> {
        self.check_current()?;
        beat_cell(&self.cell, beat, at)
    }

    /// The beats of this registration come in by `source` (its connection): no deadline
    /// passes for want of a beat while `source` has not applied what reached it by then (up
    /// to the lag monitor's `max_slack`). A handle of an earlier registration changes nothing.
    pub fn attach_source(&self, source: Arc<dyn BeatSource>) {
        if self.is_current() {
            self.cell.set_source(self.incarnation, source);
        }
    }

    /// Whether this handle is of the agent's latest registration (not taken over since).
    pub fn is_current(&self) -> bool {
        self.cell.incarnation() <= self.incarnation
    }

    pub(super) fn check_current(&self) -> Result<(), BeatError> {
        match self.is_current() {
            true => Ok(()),
            false => Err(BeatError::Superseded(self.cell.id().clone())),
        }
    }

    /// The connection that owned this agent closed without deregistering. A handle of an
    /// earlier registration changes nothing.
    pub fn disconnected(&self) -> Result<(), BeatError> {
        self.check_current()?;
        match self.cell.actor() {
            Some(a) if a.cast(AgentMsg::Disconnected).is_ok() => Ok(()),
            _ => Err(BeatError::NotSupervised(self.cell.id().clone())),
        }
    }

    /// Whether the owning connection is still there, as last recorded.
    pub fn connected(&self) -> bool {
        self.cell.connected()
    }

    /// Fault injection for tests: makes the agent's actor panic. The fleet supervisor
    /// restarts it.
    #[doc(hidden)]
    pub fn inject_crash(&self) -> bool {
        self.cell
            .actor()
            .is_some_and(|a| a.cast(AgentMsg::Crash).is_ok())
    }
}

pub(crate) fn beat_cell(cell: &AgentCell, beat: Beat, now: Instant) -> Result<(), BeatError> {
    let mut stamped = false;
    if beat.reported == Reported::Healthy {
        if let Some(m) = &beat.metrics {
            cell.set_metrics(m.clone());
        }
        if cell.try_fast_beat(now) {
            return Ok(());
        }
        stamped = true;
    }
    let actor = cell
        .actor()
        .ok_or_else(|| BeatError::NotSupervised(cell.id().clone()))?;
    actor
        .cast(AgentMsg::Beat {
            reported: beat.reported,
            metrics: if stamped { None } else { beat.metrics },
            at: now,
            stamped,
        })
        .map_err(|_| BeatError::NotSupervised(cell.id().clone()))
}
