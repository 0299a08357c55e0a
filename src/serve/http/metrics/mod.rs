//! `/metrics`: the runtime's counters in the Prometheus (OpenMetrics) text format, read at
//! scrape time from the registry's stats and the hub's counters. Names start with `vigil_`,
//! and, on Linux, the process collector's standard `process_*` families follow
//! (`process.rs`).
//!
//! Names follow Prometheus's conventions: a counter's samples end in `_total` (the encoder adds
//! it), a figure with a unit is in a base unit named last (`_seconds`, `_bytes`), and no rate
//! is precomputed (Prometheus computes `rate()` from the counters). `docs/metrics.md` lists
//! every family; `tests/metrics.rs` holds the list and checks the names.
//!
//! Label values are bounded: `kind` is the agents' own choice, so at most [`MAX_KINDS`] kinds
//! get a series of their own and the rest are summed under [`OTHER_KIND`]; `status`, `event`,
//! `state` are the runtime's enums; `sink` and `type` come from the configuration.

#[cfg(target_os = "linux")]
mod process;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use vigil_actors::{LatencyHistogram, Stats, Status};

use super::error::ApiError;
use super::AppState;
use crate::protocol::ErrorCode;
use crate::serve::hub::Hub;

type Labels = Vec<(&'static str, String)>;

/// At most this many agent kinds get `kind` label values of their own in `vigil_agents`: the
/// kinds with the most agents (ties by name). Kinds are chosen by the agents, so without a
/// bound a fleet could create a series per agent.
pub(crate) const MAX_KINDS: usize = 1_000;

/// The `kind` label value under which the agents of the kinds past [`MAX_KINDS`] are counted
/// (an agent whose own kind is `_other` is counted there too).
pub(crate) const OTHER_KIND: &str = "_other";

/// Agents by kind and status with at most `max` kinds of their own: the kinds with the most
/// agents (ties by name) keep theirs, and the rest are summed under [`OTHER_KIND`].
fn bounded_kinds(
    by_kind: &BTreeMap<String, BTreeMap<Status, usize>>,
    max: usize,
) -> BTreeMap<String, BTreeMap<Status, usize>> {
    if by_kind.len() <= max {
        return by_kind.clone();
    }
    let mut ranked: Vec<(&String, usize)> = by_kind
        .iter()
        .map(|(k, counts)| (k, counts.values().sum()))
        .collect();
    // Stable sort: the map's order (by name) breaks ties.
    ranked.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    let mut out = BTreeMap::new();
    for (i, (kind, _)) in ranked.into_iter().enumerate() {
        let name = if i < max { kind.as_str() } else { OTHER_KIND };
        let into: &mut BTreeMap<Status, usize> = out.entry(name.to_string()).or_default();
        for (status, n) in &by_kind[kind] {
            *into.entry(*status).or_default() += n;
        }
    }
    out
}

/// A histogram whose buckets were counted elsewhere (the registry's store batch latency).
#[derive(Debug)]
struct Counted(LatencyHistogram);

impl EncodeMetric for Counted {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let h = &self.0;
        let buckets: Vec<(f64, u64)> = h
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::MAX))
            .zip(h.counts.iter().copied())
            .collect();
        encoder.encode_histogram::<NoLabelSet>(h.sum_seconds, h.count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// A label value escaped as the text format needs (the encoder writes values verbatim, and an
/// agent's kind is the agent's choice).
fn label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn gauge(v: i64) -> Gauge {
    let g = Gauge::default();
    g.set(v);
    g
}

fn gauge_f(v: f64) -> Gauge<f64, AtomicU64> {
    let g = Gauge::<f64, AtomicU64>::default();
    g.set(v);
    g
}

fn counter(v: u64) -> Counter {
    let c = Counter::default();
    c.inc_by(v);
    c
}

/// The text exposition of the current figures.
pub(crate) fn render(
    stats: &Stats,
    hub: &Hub,
    lag: Duration,
    sinks: &[vigil_actors::SinkStatus],
) -> Result<String, std::fmt::Error> {
    let mut reg = Registry::with_prefix("vigil");
    let r = &stats.registry;
    let build = Family::<Labels, Gauge>::default();
    build
        .get_or_create(&vec![("version", env!("CARGO_PKG_VERSION").to_string())])
        .set(1);
    reg.register("build_info", "1, labelled with this build's version", build);

    let agents = Family::<Labels, Gauge>::default();
    for (kind, counts) in &bounded_kinds(&r.by_kind, MAX_KINDS) {
        for status in Status::ALL {
            let n = counts.get(&status).copied().unwrap_or(0);
            agents
                .get_or_create(&vec![("kind", label(kind)), ("status", status.to_string())])
                .set(n as i64);
        }
    }
    reg.register(
        "agents",
        format!(
            "Supervised agents by kind and status (past {MAX_KINDS} kinds, the others are \
             counted as kind {OTHER_KIND})"
        ),
        agents,
    );
    reg.register(
        "agents_known",
        "Agents in the live view (every status)",
        gauge(r.total as i64),
    );

    let jobs = Family::<Labels, Gauge>::default();
    for (state, n) in &r.jobs {
        jobs.get_or_create(&vec![("state", state.as_str().to_string())])
            .set(*n as i64);
    }
    reg.register(
        "jobs",
        "Jobs by state (finished ones as far as remembered)",
        jobs,
    );

    reg.register(
        "connections",
        "Open TCP connections (agents, monitors, admins)",
        gauge(hub.tcp_connections.load(Ordering::Relaxed) as i64),
    );
    reg.register(
        "http_streams",
        "Open WebSocket and SSE streams",
        gauge(hub.http_streams.load(Ordering::Relaxed) as i64),
    );
    reg.register(
        "frames_received",
        "Frames received over TCP after handshakes",
        counter(hub.frames.load(Ordering::Relaxed)),
    );
    reg.register(
        "heartbeats",
        "Heartbeats taken, over TCP and HTTP",
        counter(hub.heartbeats.load(Ordering::Relaxed)),
    );

    let persisted = Family::<Labels, Counter>::default();
    for (kind, n) in &r.persisted {
        let name = serde_json::to_value(kind)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        persisted.get_or_create(&vec![("event", name)]).inc_by(*n);
    }
    reg.register(
        "events_persisted",
        "Events made durable since start, by event",
        persisted,
    );
    let transitions = r
        .persisted
        .get(&vigil_actors::EventKind::Transition)
        .copied()
        .unwrap_or(0);
    reg.register(
        "transitions",
        "Status transitions made durable since start",
        counter(transitions),
    );
    reg.register(
        "last_seq",
        "Last seq given to an event",
        gauge(r.last_seq as i64),
    );
    reg.register(
        "durable_seq",
        "Last seq durable and published",
        gauge(r.durable_seq as i64),
    );
    reg.register(
        "pending_events",
        "Events waiting to be written",
        gauge(r.pending_events as i64),
    );

    reg.register(
        "subscribers",
        "Subscribers of the broadcaster (remote monitors, sinks, in-process)",
        gauge(stats.broadcast.subscribers as i64),
    );
    reg.register(
        "monitor_subscribers",
        "Subscriptions of remote monitors (TCP, WebSocket, SSE)",
        gauge(hub.subscribers.load(Ordering::Relaxed) as i64),
    );
    reg.register(
        "lagged_subscribers",
        "Subscriptions ended because the subscriber fell behind",
        counter(stats.broadcast.lagged_total),
    );

    reg.register_with_unit(
        "store_batch_duration",
        "Time the store took to write one group of events",
        Unit::Seconds,
        Counted(r.batch_latency.clone()),
    );
    reg.register(
        "store_batches",
        "Groups of events written",
        counter(r.batches),
    );
    reg.register(
        "store_errors",
        "Failed store writes (each retried)",
        counter(r.store_errors),
    );
    reg.register(
        "store_healthy",
        "1 while store writes succeed, 0 while they fail",
        gauge(r.store_healthy as i64),
    );
    reg.register_with_unit(
        "runtime_lag",
        "The runtime's scheduling-lag estimate",
        Unit::Seconds,
        gauge_f(lag.as_secs_f64()),
    );

    let rt = hub.runtime();
    if rt.node_id().is_some() {
        reg.register(
            "cluster_keeper",
            "1 while this node keeps the fleet's checkpoint and delivers the sinks",
            gauge(rt.keeps() as i64),
        );
        reg.register(
            "cluster_live_peers",
            "Other nodes of the cluster alive as this node judges their leases",
            gauge(rt.live_peers().len() as i64),
        );
        reg.register(
            "cluster_rejoins",
            "Times this process was fenced by the other nodes and joined again",
            counter(hub.rejoins.load(Ordering::Relaxed)),
        );
    }

    let delivered_seq = Family::<Labels, Gauge>::default();
    let sink_lag = Family::<Labels, Gauge>::default();
    let delivered = Family::<Labels, Counter>::default();
    let failures = Family::<Labels, Gauge>::default();
    let dead = Family::<Labels, Gauge>::default();
    let up = Family::<Labels, Gauge>::default();
    // A sink on standby is delivered by another node of the cluster, which reports it.
    for s in sinks.iter().filter(|s| s.state != "standby") {
        let l = vec![("sink", label(&s.name)), ("type", label(&s.kind))];
        delivered_seq.get_or_create(&l).set(s.delivered_seq as i64);
        sink_lag.get_or_create(&l).set(s.lag as i64);
        delivered.get_or_create(&l).inc_by(s.delivered);
        failures
            .get_or_create(&l)
            .set(s.consecutive_failures as i64);
        dead.get_or_create(&l).set(s.dead_letters as i64);
        up.get_or_create(&l).set((s.state == "ok") as i64);
    }
    reg.register(
        "sink_delivered_seq",
        "Every event up to this seq is delivered, filtered out or dead-lettered, by sink",
        delivered_seq,
    );
    reg.register(
        "sink_lag_events",
        "Events published after the sink's cursor",
        sink_lag,
    );
    reg.register(
        "sink_delivered_events",
        "Events a sink's receiver accepted",
        delivered,
    );
    reg.register(
        "sink_consecutive_failures",
        "Failed deliveries in a row, by sink",
        failures,
    );
    reg.register("sink_dead_letters", "Dead letters a sink holds", dead);
    reg.register(
        "sink_up",
        "1 while the sink delivers, 0 while it retries",
        up,
    );

    let mut out = String::new();
    prometheus_client::encoding::text::encode_registry(&mut out, &reg)?;
    #[cfg(target_os = "linux")]
    if let Some(figures) = process::Figures::read() {
        let mut reg = Registry::with_prefix("process");
        figures.register(&mut reg);
        prometheus_client::encoding::text::encode_registry(&mut out, &reg)?;
    }
    prometheus_client::encoding::text::encode_eof(&mut out)?;
    Ok(out)
}

/// `/metrics`: the exposition, rendered at scrape time.
pub(super) async fn metrics(State(st): State<AppState>) -> Result<Response, ApiError> {
    let stats = st
        .hub
        .runtime()
        .stats()
        .await
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
    let sinks = st.hub.runtime().sinks().await;
    let text = render(&stats, &st.hub, st.hub.runtime().lag(), &sinks)
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use vigil_actors::Status;

    use super::{bounded_kinds, OTHER_KIND};

    fn fleet(kinds: &[(&str, usize, usize)]) -> BTreeMap<String, BTreeMap<Status, usize>> {
        kinds
            .iter()
            .map(|(k, online, offline)| {
                let counts =
                    BTreeMap::from([(Status::Online, *online), (Status::Offline, *offline)]);
                (k.to_string(), counts)
            })
            .collect()
    }

    #[test]
    fn kinds_within_the_bound_are_reported_as_they_are() {
        let f = fleet(&[("a", 1, 0), ("b", 2, 1)]);
        assert_eq!(bounded_kinds(&f, 2), f);
    }

    #[test]
    fn kinds_past_the_bound_are_summed_under_other_and_the_largest_keep_their_own() {
        // "b" and "d" are the largest; "a" and "c" tie with 2 agents, and "a" wins by name.
        let f = fleet(&[
            ("a", 1, 1),
            ("b", 5, 0),
            ("c", 0, 2),
            ("d", 3, 3),
            ("e", 1, 0),
        ]);
        let got = bounded_kinds(&f, 3);
        let want = fleet(&[("a", 1, 1), ("b", 5, 0), ("d", 3, 3), (OTHER_KIND, 1, 2)]);
        assert_eq!(got, want);
        let total = |m: &BTreeMap<String, BTreeMap<Status, usize>>| -> usize {
            m.values().flat_map(|c| c.values()).sum()
        };
        assert_eq!(total(&got), total(&f), "no agent is lost or counted twice");
    }

    #[test]
    fn an_agent_kind_named_other_is_counted_with_the_overflow() {
        let f = fleet(&[(OTHER_KIND, 1, 0), ("big", 9, 0), ("x", 0, 1)]);
        let got = bounded_kinds(&f, 1);
        assert_eq!(got, fleet(&[("big", 9, 0), (OTHER_KIND, 1, 1)]));
    }
    #[test]
    fn label_values_cannot_break_out_of_their_quotes() {
        assert_eq!(super::label("gpu"), "gpu");
        assert_eq!(
            super::label("x\"} 1\nvigil_store_healthy 1\\"),
            "x\\\"} 1\\nvigil_store_healthy 1\\\\"
        );
    }
}
