//! The fleet health check and the mass-failure guard, as pure policy: no IO, no clock reads
//! (`now` is always an argument), no actors.
//!
//! - [`check`] reads agent records and reports what is wrong with the fleet: a
//!   [`HealthReport`] with a summary by status and one [`Finding`] per (agent, issue).
//! - An [`Alerter`] turns the high-severity findings of successive checks into alerts, once per
//!   finding: a finding alerts when it appears, is remembered while it lasts, and is forgotten
//!   when it resolves, so a recurrence alerts again.
//! - [`MassOffline`] is fed each offline transition and says, once per episode, when a large
//!   share of the fleet went offline at once (more likely a partition, or vigil itself, than
//!   the agents). It never suppresses anything: every transition is still emitted.
//!
//! The runtime drives these: its health task (`health_task.rs`) runs [`check`] every
//! `check_interval` and emits the [`Alerter`]'s alerts; the registry feeds [`MassOffline`].

mod alerts;

pub use alerts::{Alerter, MassOffline, MassOfflineAlert};

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{duration_ms, ts, AgentId, AgentRecord, Reported, Severity, Status};

/// The `issue` of the alert [`MassOffline`] raises.
pub const MASS_OFFLINE: &str = "mass_offline";

/// Settings of the health check and the mass-failure guard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HealthConfig {
    /// How often the fleet is checked.
    #[serde(with = "duration_ms")]
    pub check_interval: Duration,
    /// A connected agent with no heartbeat for this long is a `stale_connection`.
    #[serde(with = "duration_ms")]
    pub stale_connection: Duration,
    /// An agent offline for longer than this is an `extended_offline`.
    #[serde(with = "duration_ms")]
    pub extended_offline: Duration,
    /// `mass_offline` when more than this share of the fleet (0..=1) goes offline within
    /// `mass_offline_window` ...
    pub mass_offline_share: f64,
    /// How far back offline transitions count towards `mass_offline_share`.
    #[serde(with = "duration_ms")]
    pub mass_offline_window: Duration,
    /// ... and at least this many agents.
    pub mass_offline_min: usize,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            check_interval: Duration::from_secs(30),
            stale_connection: Duration::from_secs(120),
            extended_offline: Duration::from_secs(3600),
            mass_offline_share: 0.3,
            mass_offline_window: Duration::from_secs(30),
            mass_offline_min: 10,
        }
    }
}

impl HealthConfig {
    /// Checks that every interval is positive and the share lies in 0..=1.
    pub fn validate(&self) -> Result<(), String> {
        for (name, d) in [
            ("check_interval", self.check_interval),
            ("stale_connection", self.stale_connection),
            ("extended_offline", self.extended_offline),
            ("mass_offline_window", self.mass_offline_window),
        ] {
            if d.is_zero() {
                return Err(format!("{name} must be greater than zero"));
            }
        }
        if !(0.0..=1.0).contains(&self.mass_offline_share) {
            return Err(format!(
                "mass_offline_share must lie in 0..=1, not {}",
                self.mass_offline_share
            ));
        }
        Ok(())
    }
}

/// What is wrong with one agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthIssue {
    /// Connected, and no heartbeat for `stale_connection` (the agent is not offline yet).
    StaleConnection,
    /// Connected, yet offline: the connection is open but the agent's beats stopped.
    HeartbeatMismatch,
    /// Offline for longer than `extended_offline`.
    ExtendedOffline,
    /// Online or degraded, and the agent itself reports degraded or unhealthy.
    DegradedPerformance,
}

impl HealthIssue {
    /// The protocol's name for the issue (`"stale_connection"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            HealthIssue::StaleConnection => "stale_connection",
            HealthIssue::HeartbeatMismatch => "heartbeat_mismatch",
            HealthIssue::ExtendedOffline => "extended_offline",
            HealthIssue::DegradedPerformance => "degraded_performance",
        }
    }

    /// The issue's severity: high for what needs an operator (these become alerts), warning
    /// for what may resolve itself.
    pub fn severity(self) -> Severity {
        match self {
            HealthIssue::StaleConnection | HealthIssue::DegradedPerformance => Severity::Warning,
            HealthIssue::HeartbeatMismatch | HealthIssue::ExtendedOffline => Severity::High,
        }
    }
}

impl fmt::Display for HealthIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One issue of one agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// The agent.
    pub id: AgentId,
    /// The agent's kind.
    pub kind: Arc<str>,
    /// What is wrong.
    pub issue: HealthIssue,
    /// How urgent it is (the issue's [`HealthIssue::severity`]).
    pub severity: Severity,
    /// Human-readable detail (how long, since when).
    pub detail: String,
}

/// Agents by status. `total` counts the supervised agents: every status but `left` (an agent
/// that left stays in the view, and is counted apart).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthSummary {
    /// Supervised agents: every status but `left`.
    pub total: usize,
    /// Agents online.
    pub online: usize,
    /// Agents degraded.
    pub degraded: usize,
    /// Agents offline.
    pub offline: usize,
    /// Agents in maintenance.
    pub maintenance: usize,
    /// Agents in status `unknown`.
    pub unknown: usize,
    /// Agents that left (not part of `total`).
    pub left: usize,
}

impl HealthSummary {
    fn count(&mut self, status: Status) {
        match status {
            Status::Online => self.online += 1,
            Status::Degraded => self.degraded += 1,
            Status::Offline => self.offline += 1,
            Status::Maintenance => self.maintenance += 1,
            Status::Unknown => self.unknown += 1,
            Status::Left => {
                self.left += 1;
                return;
            }
        }
        self.total += 1;
    }
}

/// The result of one health check:
/// `{"at": ..., "summary": {...}, "agents": [{"id", "kind", "issue", "severity", "detail"}]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthReport {
    /// When the check was made (UTC); findings are judged as of this time.
    #[serde(with = "ts")]
    pub at: DateTime<Utc>,
    /// Agents by status.
    pub summary: HealthSummary,
    /// The findings, by agent id (as the records were given), at most one per (agent, issue).
    pub agents: Vec<Finding>,
}

impl HealthReport {
    /// An empty report as of `at`; [`HealthReport::scan`] adds records to it.
    pub fn new(at: DateTime<Utc>) -> Self {
        Self {
            at,
            summary: HealthSummary::default(),
            agents: Vec::new(),
        }
    }

    /// Adds `records` to the report, judged as of the report's `at`. A fleet can be scanned
    /// a page at a time: scanning pages one after another is the same as checking them all.
    pub fn scan(&mut self, records: &[AgentRecord], cfg: &HealthConfig) {
        for r in records {
            self.summary.count(r.status);
            findings(r, self.at, cfg, &mut self.agents);
        }
    }

    /// The findings of one severity.
    pub fn with_severity(&self, severity: Severity) -> impl Iterator<Item = &Finding> {
        self.agents.iter().filter(move |f| f.severity == severity)
    }
}

/// Checks `records` as of `now`.
pub fn check(records: &[AgentRecord], now: DateTime<Utc>, cfg: &HealthConfig) -> HealthReport {
    let mut report = HealthReport::new(now);
    report.scan(records, cfg);
    report
}

/// How long before `now` `t` was (zero when `t` is later: records read after the report's
/// `at` may carry a later stamp).
fn age(now: DateTime<Utc>, t: DateTime<Utc>) -> Duration {
    (now - t).to_std().unwrap_or(Duration::ZERO)
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `95s`, `2m05s`, `1h05m`: enough precision for a person reading an alert.
fn span(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// One finding per issue the record shows. A connected agent that is offline is a
/// `heartbeat_mismatch`, not also a `stale_connection`: the stronger finding says it all.
/// Agents in maintenance or that left have no findings.
fn findings(r: &AgentRecord, now: DateTime<Utc>, cfg: &HealthConfig, out: &mut Vec<Finding>) {
    let mut add = |issue: HealthIssue, detail: String| {
        out.push(Finding {
            id: r.id.clone(),
            kind: r.kind.clone(),
            issue,
            severity: issue.severity(),
            detail,
        })
    };
    let last_seen = r.last_seen.unwrap_or(r.registered_at);
    match r.status {
        Status::Left | Status::Maintenance => {}
        Status::Offline => {
            // `updated_at` is when the status last changed (an activity report also moves
            // it; an offline agent rarely sends one, and then it counts from that).
            if r.connected {
                add(
                    HealthIssue::HeartbeatMismatch,
                    format!(
                        "connected but offline since {}; last heartbeat {} ago",
                        stamp(r.updated_at),
                        span(age(now, last_seen))
                    ),
                );
            }
            let offline_for = age(now, r.updated_at);
            if offline_for > cfg.extended_offline {
                add(
                    HealthIssue::ExtendedOffline,
                    format!(
                        "offline for {} (since {})",
                        span(offline_for),
                        stamp(r.updated_at)
                    ),
                );
            }
        }
        Status::Online | Status::Degraded | Status::Unknown => {
            let quiet = age(now, last_seen);
            if r.connected && quiet >= cfg.stale_connection {
                add(
                    HealthIssue::StaleConnection,
                    format!(
                        "connected, {} with no heartbeat for {} (last at {})",
                        r.status,
                        span(quiet),
                        stamp(last_seen)
                    ),
                );
            }
            if r.status != Status::Unknown && r.reported != Reported::Healthy {
                let says = match r.reported {
                    Reported::Unhealthy => "unhealthy",
                    _ => "degraded",
                };
                add(
                    HealthIssue::DegradedPerformance,
                    format!("reports {says} (status {})", r.status),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests;
