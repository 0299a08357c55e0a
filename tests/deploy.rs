//! The alerts (`deploy/prometheus/`) and the dashboard (`deploy/grafana/`) shipped for
//! operators: every series they name is one `/metrics` exposes (scraped from a real server),
//! every alert rule has a promtool case where it fires and one where it does not, and every
//! panel reads the Prometheus data source the dashboard asks for on import.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::exposition::{busy_node, scrape_all_sampled};
use serde_json::Value;

/// The files shipped for Prometheus and Grafana, which name `/metrics` series.
const DEPLOY_FILES: &[&str] = &[
    "deploy/prometheus/alerts.yml",
    "deploy/prometheus/alerts.test.yml",
    "deploy/grafana/vigil.json",
];

/// Words that look like metric names, `(vigil|process)_[a-z_]+`, each with its line number.
fn names_in(text: &str) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    let in_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    for (n, line) in text.lines().enumerate() {
        let mut prev = ' ';
        for (i, c) in line.char_indices() {
            let starts = ["vigil_", "process_"]
                .iter()
                .any(|p| line[i..].starts_with(p));
            // Inside a word `prev` is a word character, so a name is taken once, whole.
            if starts && !in_word(prev) {
                let rest = &line[i..];
                let len = rest
                    .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                    .unwrap_or(rest.len());
                let word = &rest[..len];
                if !word.ends_with('_') {
                    out.push((word.to_string(), n + 1));
                }
            }
            prev = c;
        }
    }
    out
}

/// The exposed family a referenced name is a series of: itself, or a histogram's
/// `_bucket`, `_sum` or `_count`.
fn family_of<'a>(name: &'a str, kinds: &BTreeMap<String, String>) -> Option<&'a str> {
    if kinds.contains_key(name) {
        return Some(name);
    }
    ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
        let base = name.strip_suffix(suffix)?;
        (kinds.get(base).map(String::as_str) == Some("histogram")).then_some(base)
    })
}

fn read(path: &str) -> String {
    let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_and_dashboard_name_only_families_that_metrics_exposes() {
    let node = busy_node().await;
    let kinds: BTreeMap<String, String> = scrape_all_sampled(&node)
        .await
        .1
        .iter()
        .map(|f| (f.promql(), f.kind.clone()))
        .collect();
    let mut unknown = Vec::new();
    for path in DEPLOY_FILES {
        let names = names_in(&read(path));
        assert!(
            names.len() >= 5,
            "{path} names hardly any series: {names:?}"
        );
        for (name, line) in names {
            if family_of(&name, &kinds).is_none() {
                unknown.push(format!("{path}:{line}: {name}"));
            }
        }
    }
    assert_eq!(unknown, Vec::<String>::new(), "/metrics has {kinds:#?}");
}

#[test]
fn the_name_scan_finds_series_and_their_families() {
    let text = "rate(vigil_heartbeats_total[5m]) / on() x_vigil_not + vigil_\n\
                histogram_quantile(0.9, vigil_store_batch_duration_seconds_bucket) process_open_fds";
    let names: Vec<String> = names_in(text).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "vigil_heartbeats_total",
            "vigil_store_batch_duration_seconds_bucket",
            "process_open_fds"
        ]
    );
    let kinds: BTreeMap<String, String> = [
        ("vigil_store_batch_duration_seconds", "histogram"),
        ("vigil_store_errors_total", "counter"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    let f = |n| family_of(n, &kinds);
    assert_eq!(
        f("vigil_store_batch_duration_seconds_count"),
        Some("vigil_store_batch_duration_seconds")
    );
    assert_eq!(
        f("vigil_store_errors_total"),
        Some("vigil_store_errors_total")
    );
    assert_eq!(f("vigil_store_errors_total_count"), None);
    assert_eq!(f("vigil_store_batch_seconds_bucket"), None);
}

#[test]
fn every_alert_rule_has_a_case_where_it_fires_and_one_where_it_does_not() {
    let rules: BTreeSet<String> = read("deploy/prometheus/alerts.yml")
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .map(|s| s.trim().to_string())
        .collect();
    assert!(rules.len() >= 8, "{rules:?}");
    // For each alert name in the tests: (a case expects it, a case expects none).
    let mut cases: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    let tests = read("deploy/prometheus/alerts.test.yml");
    let lines: Vec<&str> = tests
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for (i, line) in lines.iter().enumerate() {
        let Some(name) = line.strip_prefix("alertname: ") else {
            continue;
        };
        let case = cases.entry(name.trim().to_string()).or_default();
        match (lines.get(i + 1), lines.get(i + 2)) {
            (Some(&"exp_alerts: []"), _) => case.1 = true,
            (Some(&"exp_alerts:"), Some(next)) if next.starts_with("- exp_labels:") => {
                case.0 = true
            }
            other => panic!("after alertname {name}: {other:?}"),
        }
    }
    let tested: BTreeSet<String> = cases.keys().cloned().collect();
    assert_eq!(tested, rules, "tests name exactly the rules");
    for (name, (fires, quiet)) in cases {
        assert!(fires && quiet, "{name}: fires {fires}, stays quiet {quiet}");
    }
}

#[test]
fn the_dashboard_reads_every_panel_from_the_prometheus_input() {
    let dash: Value = serde_json::from_str(&read("deploy/grafana/vigil.json")).unwrap();
    assert_eq!(dash["__inputs"][0]["name"], "DS_PROMETHEUS");
    assert_eq!(dash["__inputs"][0]["pluginId"], "prometheus");
    let vars = dash["templating"]["list"].as_array().unwrap();
    assert!(vars
        .iter()
        .any(|v| v["name"] == "DS_PROMETHEUS" && v["type"] == "datasource"));
    let panels = dash["panels"].as_array().unwrap();
    let mut queries = 0;
    for p in panels.iter().filter(|p| p["type"] != "row") {
        assert_eq!(p["datasource"]["uid"], "${DS_PROMETHEUS}", "{}", p["title"]);
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{} has no query", p["title"]);
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${DS_PROMETHEUS}", "{}", p["title"]);
            assert!(t["expr"].as_str().is_some_and(|e| !e.is_empty()));
            queries += 1;
        }
    }
    assert!(queries >= 20, "{queries} queries");
}
