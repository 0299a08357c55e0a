//! An OpenMetrics exposition read back: its families, and where their names break
//! Prometheus's conventions (`tests/metrics.rs`, `tests/deploy.rs`).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use vigil_actors::{JobReport, JobState, MemStore, RuntimeConfig};

use super::Node;

/// Units a name may carry: Prometheus's base units.
pub const BASE_UNITS: &[&str] = &["seconds", "bytes"];

/// Units a name must not carry: scaled ones, which Prometheus users would have to convert.
pub const SCALED_UNITS: &[&str] = &[
    "nanoseconds",
    "microseconds",
    "milliseconds",
    "ns",
    "us",
    "ms",
    "minutes",
    "hours",
    "days",
    "kilobytes",
    "megabytes",
    "gigabytes",
    "kb",
    "mb",
    "gb",
    "kib",
    "mib",
    "gib",
    "percent",
];

/// One metric family of an exposition.
#[derive(Debug, Default)]
pub struct Family {
    /// As `# TYPE` names it (for a counter, without `_total`).
    pub name: String,
    pub kind: String,
    pub unit: Option<String>,
    /// The names of its samples.
    pub samples: BTreeSet<String>,
}

impl Family {
    /// The name PromQL uses for it.
    pub fn promql(&self) -> String {
        match self.kind.as_str() {
            "counter" => format!("{}_total", self.name),
            _ => self.name.clone(),
        }
    }
}

/// The families of an OpenMetrics text exposition, in order.
pub fn parse(text: &str) -> Vec<Family> {
    let mut families: Vec<Family> = Vec::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["#", "TYPE", name, kind] => families.push(Family {
                name: name.to_string(),
                kind: kind.to_string(),
                ..Default::default()
            }),
            ["#", "UNIT", name, unit] => {
                let f = families.last_mut().expect("# UNIT after # TYPE");
                assert_eq!(f.name, *name, "# UNIT of another family: {line}");
                f.unit = Some(unit.to_string());
            }
            ["#", ..] | [] => {}
            _ => {
                let name = line.split(['{', ' ']).next().unwrap_or_default();
                let f = families.last_mut().expect("a sample after # TYPE");
                f.samples.insert(name.to_string());
            }
        }
    }
    families
}

/// Where the families break Prometheus's naming conventions, one line each.
pub fn violations(families: &[Family]) -> Vec<String> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for f in families {
        let promql = f.promql();
        let mut bad = |why: &str| out.push(format!("{promql}: {why}"));
        if !seen.insert(promql.clone()) {
            bad("exposed twice");
        }
        if !(promql.starts_with("vigil_") || promql.starts_with("process_")) {
            bad("does not start with vigil_ or process_");
        }
        if !promql
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            bad("not in lowercase snake case");
        }
        let allowed: Vec<String> = match f.kind.as_str() {
            "counter" => vec![promql.clone(), format!("{}_created", f.name)],
            "gauge" => vec![f.name.clone()],
            "histogram" => ["_bucket", "_sum", "_count", "_created"]
                .iter()
                .map(|s| format!("{}{s}", f.name))
                .collect(),
            other => {
                bad(&format!("type {other}, not counter, gauge or histogram"));
                vec![]
            }
        };
        if f.name.ends_with("_total") {
            bad("only a counter's samples end in _total, and the encoder adds it");
        }
        for s in f.samples.iter().filter(|s| !allowed.contains(s)) {
            bad(&format!("sample {s} (a counter's samples end in _total)"));
        }
        // The name without the counter's `_total`: a unit comes last in it.
        let stem = &f.name;
        let words: Vec<&str> = stem.split('_').collect();
        if let Some(w) = words.iter().find(|w| SCALED_UNITS.contains(w)) {
            bad(&format!("unit {w} is not a base unit (seconds, bytes)"));
        }
        if stem.contains("_per_") {
            bad("a precomputed rate: expose the counter and let Prometheus rate() it");
        }
        for (i, w) in words.iter().enumerate() {
            if BASE_UNITS.contains(w) && i + 1 != words.len() {
                bad(&format!("unit {w} is not the last word"));
            }
        }
        let last = words.last().copied().unwrap_or_default();
        match &f.unit {
            Some(u) if !BASE_UNITS.contains(&u.as_str()) => bad(&format!("unit {u}")),
            Some(u) if u != last => bad(&format!("declares unit {u} but does not end in it")),
            None if BASE_UNITS.contains(&last) => bad(&format!("ends in {last}, no # UNIT")),
            _ => {}
        }
    }
    out
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

pub async fn scrape(node: &Node) -> String {
    let res = http().get(node.url("/metrics")).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    res.text().await.unwrap()
}

/// A node with a sink and agents of two kinds, so that every family has samples.
pub async fn busy_node() -> Node {
    let node = Node::start(RuntimeConfig::default(), MemStore::new()).await;
    node.rt
        .add_sink(
            vigil_actors::SinkConfig::new("trail", "log"),
            std::sync::Arc::new(vigil_actors::LogSink::default()),
        )
        .await
        .unwrap();
    let workers = node.agents("w", "worker", 2).await;
    node.agents("g", "gpu", 1).await;
    let job = JobReport {
        job: "j1".into(),
        state: JobState::Running,
        progress: None,
        error: None,
    };
    node.rt.report_job(&workers[0], job).unwrap();
    node
}

/// Scrapes `node` until every family has samples (the job report and the sink's status arrive
/// after their calls return).
pub async fn scrape_all_sampled(node: &Node) -> (String, Vec<Family>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = scrape(node).await;
        let families = parse(&text);
        if families.iter().all(|f| !f.samples.is_empty()) {
            return (text, families);
        }
        assert!(
            Instant::now() < deadline,
            "families without samples in\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
