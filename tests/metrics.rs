//! `/metrics` over real sockets: the families it exposes (a rename fails here), their names
//! against Prometheus's conventions, and the bound on the agent-chosen `kind` label.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::exposition::{busy_node, parse, scrape, scrape_all_sampled, violations, Family};
use common::Node;
use vigil_actors::{AgentId, MemStore, Registration, RuntimeConfig};

/// Every family one node exposes, as PromQL names it (a counter with its `_total`, a histogram
/// by the name before `_bucket`). A cluster node adds `vigil_cluster_keeper`,
/// `vigil_cluster_live_peers` and `vigil_cluster_rejoins_total` (tests/cluster*.rs).
const FAMILIES: &[&str] = &[
    "vigil_agents",
    "vigil_agents_known",
    "vigil_build_info",
    "vigil_connections",
    "vigil_durable_seq",
    "vigil_events_persisted_total",
    "vigil_frames_received_total",
    "vigil_heartbeats_total",
    "vigil_http_streams",
    "vigil_jobs",
    "vigil_lagged_subscribers_total",
    "vigil_last_seq",
    "vigil_monitor_subscribers",
    "vigil_pending_events",
    "vigil_runtime_lag_seconds",
    "vigil_sink_consecutive_failures",
    "vigil_sink_dead_letters",
    "vigil_sink_delivered_events_total",
    "vigil_sink_delivered_seq",
    "vigil_sink_lag_events",
    "vigil_sink_up",
    "vigil_store_batch_duration_seconds",
    "vigil_store_batches_total",
    "vigil_store_errors_total",
    "vigil_store_healthy",
    "vigil_subscribers",
    "vigil_transitions_total",
];

/// The Prometheus process collector's standard families, on Linux.
const PROCESS_FAMILIES: &[&str] = &[
    "process_cpu_seconds_total",
    "process_max_fds",
    "process_open_fds",
    "process_resident_memory_bytes",
    "process_start_time_seconds",
    "process_virtual_memory_bytes",
];

fn expected_families() -> BTreeSet<String> {
    let mut want: BTreeSet<String> = FAMILIES.iter().map(|s| s.to_string()).collect();
    if cfg!(target_os = "linux") {
        want.extend(PROCESS_FAMILIES.iter().map(|s| s.to_string()));
    }
    want
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_families_are_the_listed_ones_and_follow_prometheus_naming() {
    let node = busy_node().await;
    // Every family has samples, so the checks look at real series names too.
    let (text, families) = scrape_all_sampled(&node).await;
    assert_eq!(violations(&families), Vec::<String>::new(), "in\n{text}");
    let exposed: BTreeSet<String> = families.iter().map(Family::promql).collect();
    assert_eq!(exposed, expected_families(), "in\n{text}");
}

#[test]
fn the_naming_check_finds_each_kind_of_bad_name() {
    let bad = "\
# TYPE vigil_heartbeats_per_second gauge
vigil_heartbeats_per_second 3
# TYPE vigil_beats counter
vigil_beats 3
# TYPE vigil_errors_total counter
vigil_errors_total_total 1
# TYPE vigil_write_milliseconds histogram
# UNIT vigil_write_milliseconds milliseconds
vigil_write_milliseconds_count 1
# TYPE vigil_lag_seconds_max gauge
# UNIT vigil_lag_seconds_max seconds
vigil_lag_seconds_max 1
# TYPE vigil_size gauge
# UNIT vigil_size bytes
vigil_size 1
# TYPE vigil_uptime_seconds gauge
vigil_uptime_seconds 1
# TYPE go_goroutines gauge
go_goroutines 1
# TYPE vigil_Agents gauge
vigil_Agents 1
# TYPE vigil_things summary
vigil_things_count 1
# TYPE vigil_agents gauge
vigil_agents 1
# TYPE vigil_agents gauge
vigil_agents 2
# EOF
";
    let families = parse(bad);
    let found = violations(&families);
    for f in &families {
        let name = f.promql();
        assert!(
            found.iter().any(|v| v.starts_with(&format!("{name}: "))),
            "{name} passes: {found:#?}"
        );
    }
    let good = "\
# TYPE vigil_beats counter
vigil_beats_total 3
# TYPE vigil_write_seconds histogram
# UNIT vigil_write_seconds seconds
vigil_write_seconds_bucket{le=\"+Inf\"} 1
vigil_write_seconds_sum 0.1
vigil_write_seconds_count 1
# TYPE process_resident_memory_bytes gauge
# UNIT process_resident_memory_bytes bytes
process_resident_memory_bytes 1
# EOF
";
    assert_eq!(violations(&parse(good)), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinds_past_one_thousand_are_counted_under_other() {
    let node = Node::start(RuntimeConfig::default(), MemStore::new()).await;
    // 1,001 kinds of one agent each: the ties go by name, so `k1000` is the one past the bound.
    let registrations = (0..=1000).map(|i| {
        let rt = node.rt.clone();
        async move {
            let id = AgentId::new(format!("a{i:04}")).unwrap();
            rt.register(Registration::new(id).kind(format!("k{i:04}")))
                .await
                .unwrap();
        }
    });
    futures::future::join_all(registrations).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let text = scrape(&node).await;
        if text.contains("vigil_agents_known 1001\n") {
            break text;
        }
        assert!(Instant::now() < deadline, "not all agents known in\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let kinds: BTreeSet<&str> = text
        .lines()
        .filter(|l| l.starts_with("vigil_agents{"))
        .filter_map(|l| l.split("kind=\"").nth(1)?.split('"').next())
        .collect();
    assert_eq!(kinds.len(), 1001, "1,000 kinds and _other");
    assert!(kinds.contains("k0999") && kinds.contains("_other") && !kinds.contains("k1000"));
    assert!(text.contains("vigil_agents{kind=\"_other\",status=\"online\"} 1\n"));
    assert!(text.contains("vigil_agents{kind=\"k0000\",status=\"online\"} 1\n"));
}

/// The families only a cluster node exposes (tests/cluster.rs, tests/cluster_keeper.rs).
const CLUSTER_FAMILIES: &[&str] = &[
    "vigil_cluster_keeper",
    "vigil_cluster_live_peers",
    "vigil_cluster_rejoins_total",
];

#[test]
fn docs_list_every_family_and_no_other() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/metrics.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    // The first cell of each table row that names a metric.
    let listed: BTreeSet<String> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("| `")?.split('`').next())
        .filter(|n| n.starts_with("vigil_") || n.starts_with("process_"))
        .map(String::from)
        .collect();
    let mut want: BTreeSet<String> = FAMILIES
        .iter()
        .chain(PROCESS_FAMILIES)
        .map(|s| s.to_string())
        .collect();
    want.extend(CLUSTER_FAMILIES.iter().map(|s| s.to_string()));
    assert_eq!(listed, want);
}
