//! Store benchmarks on SurrealDB (`vigil bench store|storm|restart`). Each runs on a fresh
//! SurrealKV directory under `--dir` (default: the system temp dir), prints a table and can
//! write JSON with the machine and the command.
//!
//! - `store`: durable events/s and commit latency of the segmented log against segment size,
//!   for `sync=every` and `sync=never`, straight through the `Store` trait.
//! - `storm`: N agents beat once at the same instant and then never again; time from the
//!   offline deadline until every offline transition is durable and delivered to a subscriber.
//! - `restart`: N agents persisted; time and RSS to restore them, next to the time merely to
//!   spawn N ractor actors here; then every agent reconnects over loopback TCP (`vigil
//!   simulate` in a separate process), registers again and beats through the restart grace:
//!   the time until all are registered again, and the transitions caused (should be 0).
//!
//! `restart` is in [`super::restart`]; it shares this module's fleet helpers.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use serde::Serialize;
use vigil_actors::store::{SurrealOptions, SurrealStore};
use vigil_actors::{
    AgentId, Beat, Event, EventBody, EventKind, Filter, Policy, Reason, Registration, Runtime,
    RuntimeConfig, Status, Store, SubscribeOptions, SubscriptionItem,
};

use crate::tools::bench::{cpu_time, write_json, Machine, Quantiles};

/// `vigil bench store`'s options.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct StoreBench {
    /// Segment sizes (events per write) to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,10,100,1000,10000")]
    pub sizes: Vec<usize>,
    /// Time spent on each size and sync setting.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub each: Duration,
    /// Where the SurrealKV directories go.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Write the figures as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// The arguments of `storm` and `restart`.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct FleetBench {
    /// Agents in the fleet.
    #[arg(long, default_value_t = 100_000)]
    pub agents: usize,
    /// Where the SurrealKV directory goes.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Write the figures as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// restart: the heartbeat interval after the restart (the bench beats every agent in one
    /// loop, which at 1,000,000 agents takes longer than 1 s).
    #[arg(long, default_value_t = 1000)]
    pub interval_ms: u64,
    /// restart: the restart grace (default: three heartbeat intervals).
    #[arg(long)]
    pub restart_grace_ms: Option<u64>,
}

pub(super) fn scratch(dir: &Option<PathBuf>, name: &str) -> anyhow::Result<PathBuf> {
    let base = dir.clone().unwrap_or_else(std::env::temp_dir);
    let p = base.join(format!("vigil-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
    Ok(p)
}

pub(super) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    crate::tools::bench::runtime(None)
}

pub(super) fn command() -> String {
    std::env::args().collect::<Vec<_>>().join(" ")
}

/// Writes a table's rows as JSON (when asked), with the machine and the command.
pub(super) fn write_rows(path: &Option<PathBuf>, rows: &impl Serialize) -> anyhow::Result<()> {
    write_json(
        path,
        &serde_json::json!({"machine": Machine::read(), "command": command(), "rows": rows}),
    )
}

/// One row of `vigil bench store`: one segment size with one sync setting.
#[derive(Debug, Serialize)]
pub struct StoreRow {
    /// `every` (each write synced to disk) or `never`.
    pub sync: String,
    /// Events per segment (per write).
    pub segment: usize,
    /// Events written in all.
    pub events: u64,
    /// Durable events per second.
    pub events_per_sec: f64,
    /// Each write's latency.
    pub commit: Quantiles,
    /// The process's CPU time (all its threads, SurrealKV's among them) per write, in µs.
    pub cpu_per_commit_us: f64,
}

/// Runs `vigil bench store`: appends segments of each size for `--each`, with and without
/// sync, and prints a row per pair.
pub fn run_store(args: StoreBench) -> anyhow::Result<()> {
    println!("| sync | events per segment | durable events/s | commit p50 / p99 / max (ms) | CPU per commit (µs) |");
    println!("| --- | --- | --- | --- | --- |");
    let rows = runtime()?.block_on(async {
        let mut rows = Vec::new();
        for sync in ["every", "never"] {
            for &size in &args.sizes {
                let dir = scratch(&args.dir, &format!("store-{sync}-{size}"))?;
                let url = format!("surrealkv://{}/db?sync={sync}", dir.display());
                let store = SurrealStore::open(&url, SurrealOptions::default()).await?;
                let mut seq = 0u64;
                let mut lat = Vec::new();
                let start = Instant::now();
                let cpu_start = cpu_time();
                while start.elapsed() < args.each {
                    let batch: Vec<Arc<Event>> = (0..size)
                        .map(|_| {
                            seq += 1;
                            Arc::new(sample_event(seq))
                        })
                        .collect();
                    let t = Instant::now();
                    store.append(&batch).await?;
                    lat.push(t.elapsed());
                }
                let secs = start.elapsed().as_secs_f64();
                let cpu = cpu_time().saturating_sub(cpu_start);
                let commits = lat.len();
                store.close().await;
                let _ = std::fs::remove_dir_all(&dir);
                let row = StoreRow {
                    sync: sync.into(),
                    segment: size,
                    events: seq,
                    events_per_sec: seq as f64 / secs,
                    commit: Quantiles::of(lat),
                    cpu_per_commit_us: cpu.as_secs_f64() * 1e6 / commits.max(1) as f64,
                };
                println!(
                    "| sync={} | {} | {:.0} | {:.2} / {:.2} / {:.2} | {:.0} |",
                    row.sync,
                    row.segment,
                    row.events_per_sec,
                    row.commit.p50_ms,
                    row.commit.p99_ms,
                    row.commit.max_ms,
                    row.cpu_per_commit_us
                );
                rows.push(row);
            }
        }
        anyhow::Ok(rows)
    })?;
    write_rows(&args.json, &rows)
}

fn sample_event(seq: u64) -> Event {
    Event {
        seq,
        at: Utc::now(),
        agent: AgentId::new(format!("agent-{:07}", seq % 100_000)).ok(),
        kind: Some(Arc::from("bench")),
        node: None,
        body: EventBody::Transition {
            from: Status::Online,
            to: Status::Offline,
            reason: Reason::HeartbeatMissed,
            missed: Some(3),
        },
    }
}

pub(super) fn bench_policy() -> Policy {
    Policy {
        heartbeat_interval: Duration::from_secs(1),
        grace: Duration::from_millis(100),
        ..Policy::default()
    }
}

pub(super) async fn open_runtime(url: &str, policy: Policy) -> anyhow::Result<Runtime> {
    let store = SurrealStore::open(url, SurrealOptions::default()).await?;
    let cfg = RuntimeConfig {
        policy,
        checkpoint_interval: Duration::ZERO,
        subscriber_queue: 1 << 21,
        ..RuntimeConfig::default()
    };
    Ok(Runtime::start(cfg, store).await?)
}

pub(super) async fn register_all(
    rt: &Runtime,
    n: usize,
) -> anyhow::Result<Vec<vigil_actors::AgentHandle>> {
    // As a fleet does: registrations do not wait for one another's durability.
    let mut handles = Vec::with_capacity(n);
    let mut last = 0;
    for i in 0..n {
        let id = AgentId::new(format!("agent-{i:07}"))?;
        let (handle, seq) = rt
            .register_sequenced(Registration::new(id).kind("bench"))
            .await?;
        handles.push(handle);
        last = last.max(seq);
    }
    rt.wait_durable(last).await?;
    Ok(handles)
}

/// What `vigil bench storm` measured, as its JSON records it.
#[derive(Debug, Serialize)]
pub struct StormResult {
    /// The machine it ran on.
    pub machine: Machine,
    /// The command line it ran with.
    pub command: String,
    /// Agents in the storm.
    pub agents: usize,
    /// Registering every agent (durably), in seconds.
    pub register_secs: f64,
    /// Offline transitions delivered (every agent's, when the bench succeeds).
    pub offline_seen: usize,
    /// From the offline deadline to the last offline transition delivered.
    pub storm_secs: f64,
    /// From the offline deadline to each offline transition's delivery.
    pub offline_late: Quantiles,
    /// From the offline deadline to the transition's timestamp (detection).
    pub detect_late: Quantiles,
    /// From the transition's timestamp to its delivery (persist + publish).
    pub deliver: Quantiles,
    /// Registry write batches during the storm.
    pub batches: u64,
}

/// Runs `vigil bench storm`: every agent beats once, then never again; times the offline
/// transitions from their deadline to their delivery.
pub fn run_storm(args: FleetBench) -> anyhow::Result<()> {
    let dir = scratch(&args.dir, "storm")?;
    let url = format!("surrealkv://{}/db", dir.display());
    let r = runtime()?.block_on(async {
        // Registered with a long interval, so none misses a beat while the others register.
        let long = Policy {
            heartbeat_interval: Duration::from_secs(3600),
            ..bench_policy()
        };
        let rt = open_runtime(&url, long).await?;
        let t = Instant::now();
        let handles = register_all(&rt, args.agents).await?;
        let register_secs = t.elapsed().as_secs_f64();
        // Let the registrations become durable before the storm.
        while rt.stats().await?.registry.pending_events > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut sub = rt
            .subscribe(SubscribeOptions {
                filter: Filter {
                    events: vec![EventKind::Transition],
                    statuses: vec![Status::Offline],
                    ..Default::default()
                },
                ..Default::default()
            })
            .await?;
        let batches0 = rt.stats().await?.registry.batches;
        // Everyone beats at once, then never again; the policy drops to a 1 s interval.
        let beat_at = tokio::time::Instant::now();
        let beat_wall = Utc::now();
        for h in &handles {
            let _ = h.heartbeat(Beat::healthy());
        }
        rt.admin(vigil_actors::AdminRequest::SetPolicy {
            kind: "bench".into(),
            patch: vigil_actors::PolicyPatch {
                heartbeat_interval: Some(bench_policy().heartbeat_interval),
                ..Default::default()
            },
        })
        .await?;
        let p = bench_policy();
        let after = p.heartbeat_interval * p.offline_after + p.grace;
        let deadline = beat_at + after;
        let deadline_wall = beat_wall + chrono::Duration::from_std(after)?;
        let mut late = Vec::with_capacity(args.agents);
        let (mut detect, mut deliver) = (Vec::new(), Vec::new());
        while late.len() < args.agents {
            match tokio::time::timeout(Duration::from_secs(120), sub.next()).await {
                Ok(Some(SubscriptionItem::Event(e))) => {
                    if e.body.status_after() == Some(Status::Offline) {
                        late.push(tokio::time::Instant::now().saturating_duration_since(deadline));
                        let ms = |d: chrono::TimeDelta| {
                            Duration::from_millis(d.num_milliseconds().max(0) as u64)
                        };
                        detect.push(ms(e.at - deadline_wall));
                        deliver.push(ms(Utc::now() - e.at));
                    }
                }
                other => anyhow::bail!("storm subscription ended: {other:?}"),
            }
        }
        let storm_secs = late.iter().max().copied().unwrap_or_default().as_secs_f64();
        let batches = rt.stats().await?.registry.batches - batches0;
        rt.shutdown().await?;
        anyhow::Ok(StormResult {
            machine: Machine::read(),
            command: command(),
            agents: args.agents,
            register_secs,
            offline_seen: late.len(),
            storm_secs,
            offline_late: Quantiles::of(late),
            detect_late: Quantiles::of(detect),
            deliver: Quantiles::of(deliver),
            batches,
        })
    })?;
    let _ = std::fs::remove_dir_all(&dir);
    println!("| agents | offline transitions durable + delivered | all done after deadline | p50 / p99 (ms) | detected after deadline p50 / p99 / max (ms) | detected → delivered p50 / p99 / max (ms) | segments written |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    println!(
        "| {} | {} | {:.2} s | {:.0} / {:.0} | {:.0} / {:.0} / {:.0} | {:.0} / {:.0} / {:.0} | {} |",
        r.agents,
        r.offline_seen,
        r.storm_secs,
        r.offline_late.p50_ms,
        r.offline_late.p99_ms,
        r.detect_late.p50_ms,
        r.detect_late.p99_ms,
        r.detect_late.max_ms,
        r.deliver.p50_ms,
        r.deliver.p99_ms,
        r.deliver.max_ms,
        r.batches
    );
    write_json(&args.json, &r)
}
