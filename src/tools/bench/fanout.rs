//! `vigil bench fanout`: M remote monitors (TCP and WebSocket mixed) subscribed while the
//! runtime makes E transitions per second; the delay from each transition to each monitor
//! receiving it, and the server's memory per subscriber.
//!
//! This process runs the runtime (with its store), the TCP and HTTP listeners, and the
//! transitions (agents put in and out of maintenance by admin messages, round robin). A child
//! process (`vigil bench fanout-monitors`) holds the monitors, so the server's memory and CPU
//! are measured apart from theirs. Each monitor follows one agent kind of `kinds` (as a
//! dashboard for one team would); `firehose` of them take every event and also check that
//! the stream has no gap. Delay = the monitor's wall clock at receipt minus the event's `at`
//! (the runtime's clock at the transition, written with millisecond precision, so a delay is
//! over-stated by up to 1 ms). It includes the durable write before publication.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use vigil_actors::{
    AdminRequest, AgentId, EventKind, MemStore, Registration, Runtime, RuntimeConfig,
};

use crate::serve::http::{HttpConfig, HttpServer};
use crate::serve::hub::Hub;
use crate::serve::tcp::{Server, ServerConfig};
use crate::tools::bench::{cpu_time, rss_bytes, runtime, write_json, Machine, Quantiles};

/// `vigil bench fanout`'s options.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct FanoutBench {
    /// Remote monitors.
    #[arg(long, default_value_t = 1_000)]
    pub monitors: usize,
    /// Share of the monitors on WebSocket (the rest on TCP).
    #[arg(long, default_value_t = 0.5)]
    pub ws_share: f64,
    /// Agent kinds; each monitor follows one.
    #[arg(long, default_value_t = 100)]
    pub kinds: usize,
    /// Monitors that take every event (and check it has no gap).
    #[arg(long, default_value_t = 2)]
    pub firehose: usize,
    /// Agents whose status the transitions change.
    #[arg(long, default_value_t = 10_000)]
    pub agents: usize,
    /// Transitions per second.
    #[arg(long, default_value_t = 10_000)]
    pub rate: u32,
    /// Time before the measuring starts.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub warmup: Duration,
    /// Time measured.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub measure: Duration,
    /// `surrealkv` (embedded SurrealDB in a temporary directory) or `mem`.
    #[arg(long, default_value = "surrealkv")]
    pub store: String,
    /// Worker threads of the server's async runtime.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// How long a group of events gathers before it is written (`store.flush_interval`).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// The least time between two writes of events (`store.min_commit_interval`; its
    /// default when not given).
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde")]
    pub min_commit_interval: Option<Duration>,
    /// Small sizes, for CI: 40 monitors, 1,000 agents, 10 kinds, 1,000 transitions/s.
    #[arg(long)]
    pub quick: bool,
    /// Write the figures as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// What the monitors' process reports.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct MonitorsReport {
    /// Events the monitors received in the window, all together.
    pub events: u64,
    /// The median delay, in ms.
    pub p50_ms: f64,
    /// The 99th-percentile delay, in ms.
    pub p99_ms: f64,
    /// The largest delay, in ms.
    pub max_ms: f64,
    /// `lagged` frames the monitors received.
    pub lagged: u64,
    /// Jumps in seq in the firehose monitors' streams.
    pub gaps: u64,
    /// Fewest events one monitor received in the window.
    pub min_per_monitor: u64,
    /// The monitors' process's CPU over the window, as a share of one core.
    pub cpu_share_of_one_core: f64,
}

/// What `vigil bench fanout` measured, as its JSON records it.
#[derive(Debug, Serialize)]
pub struct FanoutResult {
    /// The machine it ran on.
    pub machine: Machine,
    /// The command line it ran with.
    pub command: String,
    /// The options it ran with.
    pub params: FanoutBench,
    /// Transitions the runtime made per second in the window.
    pub transitions_per_sec: f64,
    /// Events delivered to monitors per second in the window.
    pub deliveries_per_sec: f64,
    /// The delay from each transition to each monitor receiving it.
    pub delivered: Quantiles,
    /// `lagged` frames the monitors received (the bench fails unless 0).
    pub lagged: u64,
    /// Jumps in seq in the firehose monitors' streams (the bench fails unless 0).
    pub gaps: u64,
    /// Fewest events one monitor received in the window.
    pub min_per_monitor: u64,
    /// The server's memory growth per subscriber, in bytes.
    pub server_rss_per_subscriber_bytes: u64,
    /// The server process's CPU over the window, as a share of one core.
    pub server_cpu_share_of_one_core: f64,
    /// The server's CPU per delivery, in µs (it includes making the transitions and writing
    /// them).
    pub server_cpu_us_per_delivery: f64,
    /// Segments written to the store per second in the window (group commits).
    pub store_commits_per_sec: f64,
    /// The monitors' process's CPU over the window, as a share of one core.
    pub monitors_cpu_share_of_one_core: f64,
}

/// Runs `vigil bench fanout` (the monitors in a child process); fails if a monitor lagged or
/// a firehose stream had a gap.
pub fn run(mut args: FanoutBench) -> anyhow::Result<()> {
    if args.quick {
        args.monitors = args.monitors.min(40);
        args.agents = args.agents.min(1_000);
        args.kinds = args.kinds.min(10);
        args.rate = args.rate.min(1_000);
        args.warmup = args.warmup.min(Duration::from_secs(1));
        args.measure = args.measure.min(Duration::from_secs(2));
    }
    anyhow::ensure!(
        args.kinds >= 1 && args.agents >= args.kinds,
        "--agents must be at least --kinds"
    );
    let r = runtime(Some(args.workers))?.block_on(fanout(args.clone()))?;
    print_table(&r);
    write_json(&args.json, &r)?;
    anyhow::ensure!(r.lagged == 0, "{} monitors lagged", r.lagged);
    anyhow::ensure!(r.gaps == 0, "{} gaps in the full streams", r.gaps);
    anyhow::ensure!(r.delivered.n > 0, "no event was delivered in the window");
    anyhow::ensure!(
        r.min_per_monitor > 0,
        "a monitor received nothing in the window"
    );
    Ok(())
}

async fn fanout(args: FanoutBench) -> anyhow::Result<FanoutResult> {
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let dir = std::env::temp_dir().join(format!("vigil-bench-fanout-{}", std::process::id()));
    let store: Arc<dyn vigil_actors::Store> = match args.store.as_str() {
        "mem" => MemStore::new(),
        "surrealkv" => {
            let cfg = crate::config::StoreConfig {
                url: format!("surrealkv://{}/db", dir.display()),
                ..crate::config::StoreConfig::default()
            };
            crate::serve::store::open(&cfg).await?
        }
        other => anyhow::bail!("--store {other}: use surrealkv or mem"),
    };
    let defaults = RuntimeConfig::default();
    let config = RuntimeConfig {
        flush_interval: args.flush_interval,
        min_commit_interval: args
            .min_commit_interval
            .unwrap_or(defaults.min_commit_interval),
        ..defaults
    };
    let runtime = Arc::new(Runtime::start(config, store).await?);
    let hub = Hub::new(runtime.clone(), Duration::from_secs(1));
    let tcp = Server::start_with(
        ([127, 0, 0, 1], 0).into(),
        hub.clone(),
        ServerConfig {
            max_connections: args.monitors + 100,
            max_connections_per_ip: args.monitors + 100,
            ..crate::config::Config::default().server_config()
        },
    )
    .await?;
    let http = HttpServer::start(
        ([127, 0, 0, 1], 0).into(),
        hub.clone(),
        HttpConfig {
            max_connections_per_ip: args.monitors + 100,
            ..crate::config::Config::default().http_config()
        },
    )
    .await?;

    let mut ids = Vec::with_capacity(args.agents);
    for i in 0..args.agents {
        let id = AgentId::new(format!("f{i}"))?;
        runtime
            .register_sequenced(Registration::new(id.clone()).kind(format!("k{}", i % args.kinds)))
            .await?;
        ids.push(id);
    }

    let rss0 = rss_bytes();
    let exe = std::env::current_exe().context("finding the vigil binary")?;
    let mut child = tokio::process::Command::new(exe)
        .args(["bench", "fanout-monitors"])
        .args(["--tcp", &tcp.local_addr().to_string()])
        .args(["--ws", &http.local_addr().to_string()])
        .args(["--monitors", &args.monitors.to_string()])
        .args(["--ws-share", &args.ws_share.to_string()])
        .args(["--kinds", &args.kinds.to_string()])
        .args(["--firehose", &args.firehose.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting the monitors' process")?;
    let mut to_child = child.stdin.take().context("the child's stdin")?;
    let mut from_child = BufReader::new(child.stdout.take().context("the child's stdout")?).lines();
    let ready = tokio::time::timeout(Duration::from_secs(120), from_child.next_line())
        .await
        .context("the monitors did not subscribe within 120 s")??;
    anyhow::ensure!(
        ready.as_deref() == Some("ready"),
        "the monitors' process said {ready:?}"
    );
    let subscribed = hub.subscribers.load(Ordering::Relaxed);
    anyhow::ensure!(
        subscribed as usize >= args.monitors,
        "{subscribed} monitors subscribed"
    );
    let rss1 = rss_bytes();

    // Transitions, paced per millisecond.
    let running = Arc::new(AtomicBool::new(true));
    let generator = {
        let (runtime, running, rate) = (runtime.clone(), running.clone(), args.rate);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut on = vec![false; ids.len()];
            let in_flight = Arc::new(tokio::sync::Semaphore::new(4096));
            let (mut due, mut next) = (0.0f64, 0usize);
            while running.load(Ordering::Relaxed) {
                tick.tick().await;
                due += rate as f64 / 1000.0;
                while due >= 1.0 {
                    due -= 1.0;
                    let k = next % ids.len();
                    next += 1;
                    on[k] = !on[k];
                    // Not one at a time: an admin change is answered once durable, so
                    // waiting for each would pace the transitions by the store's latency.
                    // (An agent flips once per `agents / rate` seconds, so two changes of one
                    // agent are never in flight together at the sizes measured.)
                    let Ok(permit) = in_flight.clone().acquire_owned().await else {
                        break;
                    };
                    let (runtime, id, on) = (runtime.clone(), ids[k].clone(), on[k]);
                    tokio::spawn(async move {
                        let _ = runtime.admin(AdminRequest::Maintenance { id, on }).await;
                        drop(permit);
                    });
                }
            }
        })
    };
    tokio::time::sleep(args.warmup).await;
    let transitions = |s: &vigil_actors::Stats| {
        s.registry
            .persisted
            .get(&EventKind::Transition)
            .copied()
            .unwrap_or(0)
    };
    let s0 = runtime.stats().await?;
    let (t0, b0) = (transitions(&s0), s0.registry.batches);
    let (c0, m0) = (cpu_time(), std::time::Instant::now());
    to_child.write_all(b"start\n").await?;
    tokio::time::sleep(args.measure).await;
    to_child.write_all(b"stop\n").await?;
    let (c1, dt) = (cpu_time(), m0.elapsed().as_secs_f64());
    let s1 = runtime.stats().await?;
    let (t1, b1) = (transitions(&s1), s1.registry.batches);
    let report = tokio::time::timeout(Duration::from_secs(60), from_child.next_line())
        .await
        .context("the monitors did not report within 60 s")??
        .context("the monitors' process ended without a report")?;
    let report: MonitorsReport = serde_json::from_str(&report)?;
    running.store(false, Ordering::Relaxed);
    let _ = generator.await;
    drop(to_child);
    let _ = child.wait().await;
    http.stop().await;
    tcp.stop().await;
    drop(hub);
    let _ = runtime.shutdown_shared().await;
    let _ = std::fs::remove_dir_all(&dir);

    Ok(FanoutResult {
        machine: Machine::read(),
        command,
        transitions_per_sec: t1.saturating_sub(t0) as f64 / dt,
        deliveries_per_sec: report.events as f64 / dt,
        delivered: Quantiles {
            n: report.events as usize,
            p50_ms: report.p50_ms,
            p99_ms: report.p99_ms,
            max_ms: report.max_ms,
        },
        lagged: report.lagged,
        gaps: report.gaps,
        min_per_monitor: report.min_per_monitor,
        server_rss_per_subscriber_bytes: rss1.saturating_sub(rss0) / args.monitors.max(1) as u64,
        server_cpu_share_of_one_core: c1.saturating_sub(c0).as_secs_f64() / dt,
        server_cpu_us_per_delivery: c1.saturating_sub(c0).as_secs_f64() * 1e6
            / (report.events.max(1) as f64),
        store_commits_per_sec: b1.saturating_sub(b0) as f64 / dt,
        monitors_cpu_share_of_one_core: report.cpu_share_of_one_core,
        params: args,
    })
}

fn print_table(r: &FanoutResult) {
    let p = &r.params;
    println!(
        "fanout: {} monitors ({:.0}% WebSocket), {} kinds, {} firehose, {} agents, store {} (flush interval {:?}, commits {:?} apart at least)",
        p.monitors,
        p.ws_share * 100.0,
        p.kinds,
        p.firehose,
        p.agents,
        p.store,
        p.flush_interval,
        p.min_commit_interval
            .unwrap_or(RuntimeConfig::default().min_commit_interval)
    );
    println!(
        "  transitions/s             {:>12.0}",
        r.transitions_per_sec
    );
    println!("  deliveries/s              {:>12.0}", r.deliveries_per_sec);
    println!(
        "  delivered p50/p99/max     {:>8.2} / {:.2} / {:.2} ms  (n = {})",
        r.delivered.p50_ms, r.delivered.p99_ms, r.delivered.max_ms, r.delivered.n
    );
    println!("  lagged / gaps             {:>12} / {}", r.lagged, r.gaps);
    println!(
        "  server RSS per subscriber {:>12} bytes",
        r.server_rss_per_subscriber_bytes
    );
    println!(
        "  CPU (one core = 100%)     server {:.0}%, monitors {:.0}%",
        r.server_cpu_share_of_one_core * 100.0,
        r.monitors_cpu_share_of_one_core * 100.0
    );
    println!(
        "  server CPU per delivery   {:>12.2} µs",
        r.server_cpu_us_per_delivery
    );
    println!(
        "  store commits/s           {:>12.0}",
        r.store_commits_per_sec
    );
}
