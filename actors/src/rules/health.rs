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

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
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
    pub id: AgentId,
    pub kind: Arc<str>,
    pub issue: HealthIssue,
    pub severity: Severity,
    pub detail: String,
}

/// Agents by status. `total` counts the supervised agents: every status but `left` (an agent
/// that left stays in the view, and is counted apart).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthSummary {
    pub total: usize,
    pub online: usize,
    pub degraded: usize,
    pub offline: usize,
    pub maintenance: usize,
    pub unknown: usize,
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
    #[serde(with = "ts")]
    pub at: DateTime<Utc>,
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

/// Decides which high-severity findings become alerts: each (agent, issue) once, when it
/// first appears; it is forgotten as soon as a check no longer finds it, so it alerts again
/// if it comes back. Warnings are reported, never alerted.
#[derive(Debug, Default)]
pub struct Alerter {
    alerted: HashSet<(AgentId, HealthIssue)>,
}

impl Alerter {
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn t0() -> DateTime<Utc> {
        "2026-01-01T00:00:00Z".parse().unwrap()
    }

    fn secs(s: i64) -> DateTime<Utc> {
        t0() + TimeDelta::seconds(s)
    }

    fn ms(n: i64) -> DateTime<Utc> {
        t0() + TimeDelta::milliseconds(n)
    }

    /// A record connected, last seen and last changed at t0.
    fn rec(id: &str, status: Status) -> AgentRecord {
        AgentRecord {
            id: AgentId::new(id).unwrap(),
            name: id.into(),
            kind: "worker".into(),
            status,
            activity: None,
            reported: Reported::Healthy,
            metadata: BTreeMap::new(),
            capabilities: vec![],
            metrics: BTreeMap::new(),
            last_seen: Some(t0()),
            connected: true,
            incarnation: 1,
            registered_at: t0(),
            updated_at: t0(),
            heartbeat_interval_ms: None,
            jobs: BTreeMap::new(),
        }
    }

    fn issues(report: &HealthReport) -> Vec<(&str, HealthIssue)> {
        report
            .agents
            .iter()
            .map(|f| (f.id.as_str(), f.issue))
            .collect()
    }

    #[test]
    fn defaults_are_the_documented_ones_and_valid() {
        let c = HealthConfig::default();
        assert_eq!(c.check_interval, Duration::from_secs(30));
        assert_eq!(c.stale_connection, Duration::from_secs(120));
        assert_eq!(c.extended_offline, Duration::from_secs(3600));
        assert_eq!(c.mass_offline_share, 0.3);
        assert_eq!(c.mass_offline_window, Duration::from_secs(30));
        assert_eq!(c.mass_offline_min, 10);
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn invalid_configs_are_refused() {
        let zero = HealthConfig {
            check_interval: Duration::ZERO,
            ..HealthConfig::default()
        };
        assert!(zero.validate().unwrap_err().contains("check_interval"));
        let zero = HealthConfig {
            mass_offline_window: Duration::ZERO,
            ..HealthConfig::default()
        };
        assert!(zero.validate().unwrap_err().contains("mass_offline_window"));
        for share in [-0.1, 1.5, f64::NAN] {
            let c = HealthConfig {
                mass_offline_share: share,
                ..HealthConfig::default()
            };
            assert!(c.validate().unwrap_err().contains("share"), "{share}");
        }
        let edge = HealthConfig {
            mass_offline_share: 1.0,
            ..HealthConfig::default()
        };
        assert_eq!(edge.validate(), Ok(()));
    }

    #[test]
    fn config_serializes_durations_in_ms_and_fills_missing_keys() {
        let v = serde_json::to_value(HealthConfig::default()).unwrap();
        assert_eq!(v["check_interval"], 30_000);
        assert_eq!(v["mass_offline_share"], 0.3);
        let c: HealthConfig =
            serde_json::from_value(serde_json::json!({"stale_connection": 5000})).unwrap();
        assert_eq!(c.stale_connection, Duration::from_secs(5));
        assert_eq!(c.check_interval, Duration::from_secs(30));
    }

    #[test]
    fn a_connected_agent_is_stale_only_after_stale_connection() {
        let cfg = HealthConfig::default();
        let r = rec("a", Status::Online);
        assert!(check(std::slice::from_ref(&r), secs(119), &cfg)
            .agents
            .is_empty());
        let report = check(std::slice::from_ref(&r), secs(120), &cfg);
        assert_eq!(issues(&report), [("a", HealthIssue::StaleConnection)]);
        assert_eq!(report.agents[0].severity, Severity::Warning);
        assert_eq!(report.agents[0].kind.as_ref(), "worker");
        assert!(report.agents[0].detail.contains("2m00s"), "{report:?}");
        // Not connected: nobody expects its beats on this connection.
        let gone = AgentRecord {
            connected: false,
            ..r
        };
        assert!(check(&[gone], secs(600), &cfg).agents.is_empty());
    }

    #[test]
    fn a_connected_offline_agent_is_a_mismatch_not_also_stale() {
        let cfg = HealthConfig::default();
        let r = rec("a", Status::Offline);
        let report = check(std::slice::from_ref(&r), secs(300), &cfg);
        assert_eq!(issues(&report), [("a", HealthIssue::HeartbeatMismatch)]);
        assert_eq!(report.agents[0].severity, Severity::High);
        let closed = AgentRecord {
            connected: false,
            ..r
        };
        assert!(check(&[closed], secs(300), &cfg).agents.is_empty());
    }

    #[test]
    fn extended_offline_counts_from_when_the_status_changed() {
        let cfg = HealthConfig::default();
        let r = AgentRecord {
            connected: false,
            last_seen: Some(secs(-7200)),
            updated_at: t0(),
            ..rec("a", Status::Offline)
        };
        // Last seen two hours ago, but offline only since t0.
        assert!(check(std::slice::from_ref(&r), secs(3600), &cfg)
            .agents
            .is_empty());
        let report = check(std::slice::from_ref(&r), secs(3601), &cfg);
        assert_eq!(issues(&report), [("a", HealthIssue::ExtendedOffline)]);
        assert_eq!(report.agents[0].severity, Severity::High);
        assert!(report.agents[0].detail.contains("1h00m"), "{report:?}");
        // Connected too: both findings.
        let both = AgentRecord {
            connected: true,
            ..r
        };
        assert_eq!(
            issues(&check(&[both], secs(4000), &cfg)),
            [
                ("a", HealthIssue::HeartbeatMismatch),
                ("a", HealthIssue::ExtendedOffline)
            ]
        );
    }

    #[test]
    fn an_agent_reporting_degraded_or_unhealthy_is_degraded_performance() {
        let cfg = HealthConfig::default();
        for (reported, status, word) in [
            (Reported::Degraded, Status::Degraded, "degraded"),
            (Reported::Unhealthy, Status::Degraded, "unhealthy"),
            (Reported::Degraded, Status::Online, "degraded"),
        ] {
            let r = AgentRecord {
                reported,
                ..rec("a", status)
            };
            let report = check(&[r], secs(1), &cfg);
            assert_eq!(issues(&report), [("a", HealthIssue::DegradedPerformance)]);
            assert_eq!(report.agents[0].severity, Severity::Warning);
            assert!(report.agents[0].detail.contains(word));
        }
        // Degraded only because beats were missed: not a report of the agent's own.
        assert!(check(&[rec("a", Status::Degraded)], secs(1), &cfg)
            .agents
            .is_empty());
        // Offline: what it last reported is stale news.
        let off = AgentRecord {
            reported: Reported::Degraded,
            connected: false,
            ..rec("a", Status::Offline)
        };
        assert!(check(&[off], secs(1), &cfg).agents.is_empty());
    }

    #[test]
    fn maintenance_and_left_agents_have_no_findings() {
        let cfg = HealthConfig::default();
        for status in [Status::Maintenance, Status::Left] {
            let r = AgentRecord {
                reported: Reported::Unhealthy,
                ..rec("a", status)
            };
            assert!(check(&[r], secs(100_000), &cfg).agents.is_empty());
        }
    }

    #[test]
    fn summary_counts_each_status_and_total_leaves_out_left() {
        let cfg = HealthConfig::default();
        let records: Vec<_> = [
            Status::Online,
            Status::Online,
            Status::Degraded,
            Status::Offline,
            Status::Maintenance,
            Status::Unknown,
            Status::Left,
            Status::Left,
        ]
        .iter()
        .enumerate()
        .map(|(i, s)| rec(&format!("a{i}"), *s))
        .collect();
        let s = check(&records, secs(1), &cfg).summary;
        assert_eq!(
            s,
            HealthSummary {
                total: 6,
                online: 2,
                degraded: 1,
                offline: 1,
                maintenance: 1,
                unknown: 1,
                left: 2,
            }
        );
    }

    #[test]
    fn scanning_pages_equals_checking_all() {
        let cfg = HealthConfig::default();
        let records: Vec<_> = (0..10)
            .map(|i| {
                let status = [Status::Online, Status::Offline, Status::Left][i % 3];
                rec(&format!("a{i}"), status)
            })
            .collect();
        let whole = check(&records, secs(7200), &cfg);
        let mut paged = HealthReport::new(secs(7200));
        for page in records.chunks(3) {
            paged.scan(page, &cfg);
        }
        assert_eq!(paged, whole);
        assert!(!whole.agents.is_empty());
    }

    #[test]
    fn report_serializes_in_the_documented_shape() {
        let cfg = HealthConfig::default();
        let report = check(&[rec("a1", Status::Offline)], secs(59), &cfg);
        let v = serde_json::to_value(&report).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "at": "2026-01-01T00:00:59.000Z",
                "summary": {"total": 1, "online": 0, "degraded": 0, "offline": 1,
                    "maintenance": 0, "unknown": 0, "left": 0},
                "agents": [{"id": "a1", "kind": "worker", "issue": "heartbeat_mismatch",
                    "severity": "high",
                    "detail": "connected but offline since 2026-01-01T00:00:00.000Z; \
                        last heartbeat 59s ago"}]
            })
        );
        let back: HealthReport = serde_json::from_value(v).unwrap();
        assert_eq!(back, report);
    }

    #[test]
    fn alerter_alerts_each_high_finding_once_and_again_after_it_resolved() {
        let cfg = HealthConfig::default();
        let mut alerter = Alerter::new();
        let ids = |v: Vec<&Finding>| -> Vec<(String, HealthIssue)> {
            v.iter().map(|f| (f.id.to_string(), f.issue)).collect()
        };
        let off = rec("a", Status::Offline);
        let stale = rec("b", Status::Online);
        // b is stale (a warning): never alerted.
        let r1 = check(&[off.clone(), stale.clone()], secs(200), &cfg);
        assert_eq!(r1.agents.len(), 2);
        assert_eq!(
            ids(alerter.update(&r1)),
            [("a".to_string(), HealthIssue::HeartbeatMismatch)]
        );
        // Still there on the next checks: no new alert.
        for s in [230, 260, 290] {
            let r = check(&[off.clone(), stale.clone()], secs(s), &cfg);
            assert!(alerter.update(&r).is_empty(), "at {s}s");
        }
        assert!(alerter.is_alerted(&off.id, HealthIssue::HeartbeatMismatch));
        // A new issue of the same agent is a new finding.
        let r = check(std::slice::from_ref(&off), secs(3700), &cfg);
        assert_eq!(
            ids(alerter.update(&r)),
            [("a".to_string(), HealthIssue::ExtendedOffline)]
        );
        // Resolved: forgotten ...
        let back = rec("a", Status::Online);
        assert!(alerter.update(&check(&[back], secs(3710), &cfg)).is_empty());
        assert!(!alerter.is_alerted(&off.id, HealthIssue::HeartbeatMismatch));
        // ... so a recurrence alerts again.
        let again = check(&[off], secs(3740), &cfg);
        assert_eq!(alerter.update(&again).len(), 2);
    }

    fn guard(share: f64, min: usize, window_s: u64) -> MassOffline {
        MassOffline::new(&HealthConfig {
            mass_offline_share: share,
            mass_offline_min: min,
            mass_offline_window: Duration::from_secs(window_s),
            ..HealthConfig::default()
        })
    }

    #[test]
    fn threshold_is_more_than_the_share_and_at_least_the_minimum() {
        let g = guard(0.3, 10, 30);
        assert_eq!(g.threshold(100), 31);
        assert_eq!(g.threshold(20), 10, "the minimum wins in a small fleet");
        assert_eq!(g.threshold(0), 10);
        assert_eq!(guard(0.29, 1, 30).threshold(100), 30);
        assert_eq!(
            guard(1.0, 1, 30).threshold(50),
            51,
            "a share of 1 never fires"
        );
        assert_eq!(guard(0.0, 0, 30).threshold(50), 1);
    }

    #[test]
    fn mass_offline_fires_once_when_the_share_goes_within_the_window() {
        let mut g = guard(0.3, 10, 30);
        // 100 agents: 31 offline within 30 s is a mass failure, 30 is not.
        for i in 0..30 {
            assert_eq!(g.observe(ms(i * 900), 100), None, "transition {i}");
        }
        let alert = g.observe(ms(30 * 900), 100).expect("the 31st fires");
        assert_eq!(
            alert,
            MassOfflineAlert {
                offline: 31,
                fleet_size: 100,
                window: Duration::from_secs(30)
            }
        );
        assert!(alert
            .detail()
            .starts_with("31 of 100 agents went offline within 30s"));
        assert!(!g.armed());
        // The rest of the storm raises nothing more.
        for i in 31..100 {
            assert_eq!(g.observe(ms(i * 100 + 27_000), 100), None);
        }
    }

    #[test]
    fn transitions_spread_wider_than_the_window_never_fire() {
        let mut g = guard(0.3, 10, 30);
        // 100 agents, one every 1.5 s: at most 20 in any 30 s.
        for i in 0..100 {
            assert_eq!(g.observe(ms(i * 1500), 100), None, "transition {i}");
        }
        assert!(g.armed());
    }

    #[test]
    fn the_minimum_holds_in_a_small_fleet() {
        let mut g = guard(0.3, 10, 30);
        // 9 of 12 agents at once: far above the share, below the minimum.
        for _ in 0..9 {
            assert_eq!(g.observe(t0(), 12), None);
        }
        assert!(g.observe(t0(), 12).is_some(), "the 10th");
    }

    #[test]
    fn mass_offline_rearms_only_after_a_full_calm_window() {
        let mut g = guard(0.3, 10, 30);
        for _ in 0..9 {
            g.observe(t0(), 20);
        }
        assert!(g.observe(t0(), 20).is_some());
        // The count stays at 10 until t0 + 30 s, so the calm window ends at t0 + 60 s. A
        // second burst before that is the same episode ...
        for _ in 0..10 {
            assert_eq!(g.observe(secs(59), 20), None);
        }
        // ... and it prolongs the episode: above threshold until 59 + 30, calm until 119.
        for _ in 0..9 {
            assert_eq!(g.observe(secs(118), 20), None);
        }
        assert_eq!(g.observe(secs(118), 20), None, "still the same episode");
        // 118 kept it above until 148; calm until 178. A burst after that fires again.
        for _ in 0..9 {
            assert_eq!(g.observe(secs(178), 20), None);
        }
        assert!(g.observe(secs(178), 20).is_some(), "a new episode");
    }

    #[test]
    fn a_transition_stamped_a_little_late_still_counts() {
        let mut g = guard(0.0, 3, 10);
        assert_eq!(g.observe(secs(100), 10), None);
        assert_eq!(g.observe(secs(100), 10), None);
        // Stamped before the last one seen (actors stamp their own transitions): counted
        // as of the last one, in the window with them.
        assert!(g.observe(secs(85), 10).is_some());
    }
}
