use std::collections::BTreeMap;

use chrono::TimeDelta;

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
