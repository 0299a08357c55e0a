//! Which findings become alerts ([`Alerter`]), and the mass-failure guard ([`MassOffline`]).

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::{span, Finding, HealthConfig, HealthIssue, HealthReport};
use crate::model::{AgentId, Severity};

/// Decides which high-severity findings become alerts: each (agent, issue) once, when it
/// first appears; it is forgotten as soon as a check no longer finds it, so it alerts again
/// if it comes back. Warnings are reported, never alerted.
#[derive(Debug, Default)]
pub struct Alerter {
    alerted: HashSet<(AgentId, HealthIssue)>,
}

impl Alerter {
    /// An alerter that has alerted nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The high-severity findings of `report` not alerted yet; forgets the ones it no longer
    /// holds. Feed it every complete report, in order.
    pub fn update<'a>(&mut self, report: &'a HealthReport) -> Vec<&'a Finding> {
        let high: Vec<&Finding> = report.with_severity(Severity::High).collect();
        let new = high
            .iter()
            .copied()
            .filter(|f| !self.alerted.contains(&(f.id.clone(), f.issue)))
            .collect();
        self.alerted = high.iter().map(|f| (f.id.clone(), f.issue)).collect();
        new
    }

    /// Whether (agent, issue) has been alerted and is still found.
    pub fn is_alerted(&self, id: &AgentId, issue: HealthIssue) -> bool {
        self.alerted.contains(&(id.clone(), issue))
    }
}

/// What the mass-failure guard saw when it fired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MassOfflineAlert {
    /// Offline transitions within the window, this one included.
    pub offline: usize,
    /// Supervised agents (not left) when it fired.
    pub fleet_size: usize,
    /// The window the transitions were counted in (the config's `mass_offline_window`).
    pub window: Duration,
}

impl MassOfflineAlert {
    /// The alert's `detail`.
    pub fn detail(&self) -> String {
        format!(
            "{} of {} agents went offline within {}: more likely a network partition or a \
             problem on vigil's side than the agents; every transition is still recorded",
            self.offline,
            self.fleet_size,
            span(self.window)
        )
    }
}

/// The mass-failure guard: counts offline transitions in a sliding window and fires once when
/// more than `mass_offline_share` of the fleet, and at least `mass_offline_min` agents, went
/// offline within `mass_offline_window`. It re-arms only after a full window in which the
/// count stayed below that threshold.
#[derive(Debug)]
pub struct MassOffline {
    share: f64,
    min: usize,
    window: TimeDelta,
    /// Instants of the offline transitions within the window, oldest first.
    recent: VecDeque<DateTime<Utc>>,
    fired: bool,
    /// Until when the count is above the threshold with what has been observed so far.
    over_until: Option<DateTime<Utc>>,
}

impl MassOffline {
    /// A guard with the mass-offline settings of `cfg`, having seen nothing yet.
    pub fn new(cfg: &HealthConfig) -> Self {
        Self {
            share: cfg.mass_offline_share,
            min: cfg.mass_offline_min,
            window: TimeDelta::from_std(cfg.mass_offline_window).unwrap_or(TimeDelta::MAX),
            recent: VecDeque::new(),
            fired: false,
            over_until: None,
        }
    }

    /// How many offline transitions within a window make a mass failure in a fleet of this
    /// size: more than the share (a share of 1 never fires), and at least the minimum.
    pub fn threshold(&self, fleet_size: usize) -> usize {
        // The epsilon keeps 0.29 × 100 = 28.999… from counting 29 as "more than 29".
        let by_share = (self.share * fleet_size as f64 + 1e-9).floor() as usize + 1;
        by_share.max(self.min).max(1)
    }

    /// Ready to fire (it has not fired, or it has re-armed since).
    pub fn armed(&self) -> bool {
        !self.fired
    }

    /// An agent went offline at `now`, in a fleet of `fleet_size` supervised agents. Returns
    /// the alert when this transition makes a mass failure and the guard is armed.
    pub fn observe(&mut self, now: DateTime<Utc>, fleet_size: usize) -> Option<MassOfflineAlert> {
        // Transitions are stamped by their agents' actors, so they can arrive a little out of
        // order; the window only moves forward.
        let now = self.recent.back().map_or(now, |&last| now.max(last));
        if self.fired
            && self
                .over_until
                .is_some_and(|t| now >= t.checked_add_signed(self.window).unwrap_or(t))
        {
            self.fired = false;
        }
        self.recent.push_back(now);
        let horizon = now.checked_sub_signed(self.window);
        while let (Some(&oldest), Some(h)) = (self.recent.front(), horizon) {
            if oldest > h {
                break;
            }
            self.recent.pop_front();
        }
        let needed = self.threshold(fleet_size);
        let n = self.recent.len();
        if n < needed {
            return None;
        }
        // With no more transitions, the count stays at or above `needed` until the
        // `needed`-th newest leaves the window.
        let until = self.recent[n - needed]
            .checked_add_signed(self.window)
            .unwrap_or(now);
        self.over_until = Some(self.over_until.map_or(until, |t| t.max(until)));
        if self.fired {
            return None;
        }
        self.fired = true;
        Some(MassOfflineAlert {
            offline: n,
            fleet_size,
            window: self.window.to_std().unwrap_or(Duration::MAX),
        })
    }
}
