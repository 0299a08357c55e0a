//! The registry's counters ([`RegistryStats`]) and the latency histogram they carry.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::{EventKind, JobState, Status};

/// Counters of the registry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RegistryStats {
    /// Agents by status (every status present, zero included).
    pub agents: BTreeMap<Status, usize>,
    /// All agents known, whatever their status.
    pub total: usize,
    /// Last seq given to an event.
    pub last_seq: u64,
    /// Last seq known durable (and so published).
    pub durable_seq: u64,
    /// Events sequenced and not yet durable (waiting or being written).
    pub pending_events: usize,
    /// About how many bytes the events waiting for the store take.
    #[serde(default)]
    pub pending_bytes: u64,
    /// Checkpoint, mirror and retention writes given up after repeated failures.
    #[serde(default)]
    pub side_writes_given_up: u64,
    /// Activity and job reports sent to the registry and not yet taken by it.
    #[serde(default)]
    pub queued_reports: u64,
    /// The most reports that ever waited for the registry at once.
    #[serde(default)]
    pub queued_reports_peak: u64,
    /// Store writes that failed since start (each retry counts).
    pub store_errors: u64,
    /// False while store writes of events are failing (and being retried).
    pub store_healthy: bool,
    /// Groups of events written to the store since start.
    pub batches: u64,
    /// Jobs by state (finished ones as far as they are remembered).
    #[serde(default)]
    pub jobs: BTreeMap<JobState, usize>,
    /// Agents by kind, then by status (kinds with no agents left out).
    #[serde(default)]
    pub by_kind: BTreeMap<String, BTreeMap<Status, usize>>,
    /// Events persisted since start, by kind.
    #[serde(default)]
    pub persisted: BTreeMap<EventKind, u64>,
    /// How long the store took to write each group of events.
    #[serde(default)]
    pub batch_latency: LatencyHistogram,
}

/// A histogram of durations with fixed bucket bounds (seconds), for `/metrics`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyHistogram {
    /// Upper bounds of the buckets, in seconds; a last, unbounded bucket follows.
    pub bounds: Vec<f64>,
    /// Observations per bucket (not cumulative); one more than `bounds`.
    pub counts: Vec<u64>,
    /// The sum of all observations, in seconds.
    pub sum_seconds: f64,
    /// The number of observations.
    pub count: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        let bounds = vec![
            0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        ];
        Self {
            counts: vec![0; bounds.len() + 1],
            bounds,
            sum_seconds: 0.0,
            count: 0,
        }
    }
}

impl LatencyHistogram {
    /// Adds one observation.
    pub fn observe(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        let i = self.bounds.partition_point(|b| *b < s);
        if let Some(c) = self.counts.get_mut(i) {
            *c += 1;
        }
        self.sum_seconds += s;
        self.count += 1;
    }
}
