//! `vigil bench ingest`: heartbeats per second over loopback TCP, and the lateness of the
//! transitions detected meanwhile.
//!
//! This process runs the runtime and the agent listener; a child process (`vigil simulate`)
//! runs N agents over C connections, so the CPU of each side is measured apart (user + system
//! time from `/proc`, over the same measured window). After a warm-up, a share of the agents
//! stop: for each, the delay from its true deadlines (its last beat as the server saw it,
//! plus degraded_after, and plus offline_after, intervals, plus grace) to the transition
//! (`detected`: the event's time) and to a subscriber receiving it (`delivered`: after the
//! durable write and the fan-out). A transition of an agent that kept beating is spurious,
//! unless the generator itself let a gap between two of its beats exceed the interval (it
//! records when each beat actually left, `vigil simulate --late-after`): the interval is
//! what an agent promises, the grace is the path's, the server's included, so a sender that
//! took part of the grace is not on time and a server that took more than the rest of it is
//! not a slow one (docs/decisions.md, "Local health awareness").

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use serde::Serialize;
use vigil_actors::{
    AdminRequest, AdminResponse, AgentId, EventBody, EventKind, Filter, LagConfig, MemStore,
    Policy, Runtime, RuntimeConfig, Status, SubscribeOptions, SubscriptionItem,
};

use crate::serve::tcp::{Server, ServerConfig};
use crate::tools::bench::{cpu_time, runtime, write_json, Machine, Quantiles};
use crate::tools::simulate::{agent_id, picked};

/// `vigil bench ingest`'s options.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct IngestBench {
    /// Simulated agents.
    #[arg(long, default_value_t = 100_000)]
    pub agents: usize,
    /// Connections they are spread over.
    #[arg(long, default_value_t = 1_000)]
    pub connections: usize,
    /// Heartbeat interval; agents beat every interval × beat_ratio (± jitter).
    #[arg(long, default_value = "400ms", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Beat every interval × this.
    #[arg(long, default_value_t = 0.8)]
    pub beat_ratio: f64,
    /// ± this share of each period, drawn per beat.
    #[arg(long, default_value_t = 0.05)]
    pub jitter: f64,
    /// The generator's tick: beats due within one go out in one write per connection (a
    /// gateway multiplexing 100 agents writes their beats together).
    #[arg(long, default_value = "50ms", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub tick: Duration,
    /// Policy grace.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
    /// Beating before the measured window.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub warmup: Duration,
    /// The measured window.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub measure: Duration,
    /// Share of agents that stop, 2 s into the measured window.
    #[arg(long, default_value_t = 0.001)]
    pub stop_share: f64,
    /// Worker threads of the server's async runtime.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// The generator sends healthy beats as `beats` frames (many ids in one, asked for at
    /// `hello`) instead of one `heartbeat` frame each.
    #[arg(long)]
    pub batch: bool,
    /// Small sizes, for CI: 2,000 agents over 20 connections, 1 s warm-up, 4 s measured.
    #[arg(long)]
    pub quick: bool,
    /// Write the figures as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// What `vigil bench ingest` measured, as its JSON records it.
#[derive(Debug, Serialize)]
pub struct IngestResult {
    /// The machine it ran on.
    pub machine: Machine,
    /// The command line it ran with.
    pub command: String,
    /// The options it ran with (after `--quick`).
    pub params: IngestBench,
    /// From the generator's start until the registry held every agent, in seconds.
    pub register_secs: f64,
    /// Frames the server received per second in the measured window.
    pub server_frames_per_sec: f64,
    /// Heartbeats the server took per second in the measured window (a `beats` frame counts
    /// each of its ids).
    pub server_beats_per_sec: f64,
    /// Heartbeats the generator sent per second in its measured window.
    pub generator_beats_per_sec: f64,
    /// The server process's CPU over the measured window, as a share of one core.
    pub server_cpu_share_of_one_core: f64,
    /// The generator's CPU over its measured window, as a share of one core.
    pub generator_cpu_share_of_one_core: f64,
    /// The server's CPU per frame received, in µs.
    pub server_cpu_us_per_beat: f64,
    /// Errors the generator saw (the bench fails unless 0).
    pub generator_errors: u64,
    /// Agents stopped in the measured window.
    pub stopped: usize,
    /// From a stopped agent's `degraded` deadline to the transition's time.
    pub degraded_detected_late: Quantiles,
    /// From a stopped agent's `degraded` deadline to a subscriber receiving it.
    pub degraded_delivered_late: Quantiles,
    /// From a stopped agent's `offline` deadline to the transition's time.
    pub offline_detected_late: Quantiles,
    /// From a stopped agent's `offline` deadline to a subscriber receiving it.
    pub offline_delivered_late: Quantiles,
    /// Expected transitions (`degraded`, then `offline`, per stopped agent) never seen (the bench
    /// fails unless 0).
    pub missing: usize,
    /// Transitions of agents that kept beating, whose beats left on time, in the measured
    /// window ...
    pub spurious: usize,
    /// ... and before it (registration and warm-up).
    pub spurious_before_window: usize,
    /// Transitions of agents the generator left silent for longer than interval + grace
    /// (its lateness, not the server's), in the window and before it ...
    pub late_sender: usize,
    /// ... and of agents whose gap exceeded the interval but not interval + grace: the
    /// sender took part of the grace, the server's delay the rest.
    pub slow_sender: usize,
    /// Gaps longer than the interval between one agent's messages, as the generator sent
    /// them.
    pub generator_late_gaps: u64,
    /// Up to ten false transitions: the agent, its new status, and when (ms from the start
    /// of the measured window; negative before it).
    pub false_examples: Vec<(String, Status, i64)>,
    /// The most a generator tick ran after its time, in ms.
    pub generator_max_tick_late_ms: f64,
    /// The runtime's largest scheduling lag seen, in ms.
    pub max_lag_ms: u64,
}

/// A transition as the subscriber got it: agent, new status, event time, time received.
type Seen = (AgentId, Status, DateTime<Utc>, DateTime<Utc>);

/// Runs `vigil bench ingest` (the generator is `vigil simulate` in a child process); fails if
/// a transition is missing or spurious, or the generator saw errors.
pub fn run(mut args: IngestBench) -> anyhow::Result<()> {
    if args.quick {
        args.agents = args.agents.min(2_000);
        args.connections = args.connections.min(20);
        args.warmup = args.warmup.min(Duration::from_secs(1));
        args.measure = args.measure.min(Duration::from_secs(4));
        args.stop_share = args.stop_share.max(0.01);
    }
    anyhow::ensure!(
        args.measure > Duration::from_secs(2) + args.interval * 4,
        "--measure must leave room for the stopped agents to go offline (over 2 s + 4 intervals)"
    );
    let r = runtime(Some(args.workers))?.block_on(ingest(args.clone()))?;
    print_table(&r);
    write_json(&args.json, &r)?;
    anyhow::ensure!(r.missing == 0, "{} expected transitions missing", r.missing);
    anyhow::ensure!(
        r.spurious + r.spurious_before_window == 0,
        "{} false transitions of agents whose beats left on time ({} of them before the window)",
        r.spurious + r.spurious_before_window,
        r.spurious_before_window
    );
    anyhow::ensure!(r.generator_errors == 0, "the generator saw errors");
    Ok(())
}

async fn ingest(args: IngestBench) -> anyhow::Result<IngestResult> {
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let policy = Policy {
        heartbeat_interval: args.interval,
        grace: args.grace,
        ..Policy::default()
    };
    let config = RuntimeConfig {
        policy: policy.clone(),
        min_heartbeat_interval: Duration::from_millis(10),
        lag: LagConfig::default(),
        ..RuntimeConfig::default()
    };
    let runtime = Arc::new(Runtime::start(config, MemStore::new()).await?);
    let server = Server::start(
        ([127, 0, 0, 1], 0).into(),
        runtime.clone(),
        ServerConfig {
            rate_limit: 0,
            max_connections: args.connections + 100,
            max_connections_per_ip: args.connections + 100,
            max_agents_per_connection: args.agents,
            heartbeat_interval: args.interval,
            ..crate::config::Config::default().server_config()
        },
    )
    .await?;

    // Every transition, as the subscriber receives it.
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let mut sub = runtime
        .subscribe(SubscribeOptions {
            filter: Filter {
                events: vec![EventKind::Transition],
                ..Filter::default()
            },
            ..SubscribeOptions::default()
        })
        .await?;
    let seen2 = seen.clone();
    let collector = tokio::spawn(async move {
        while let Some(item) = sub.next().await {
            if let SubscriptionItem::Event(e) = item {
                if let (Some(id), EventBody::Transition { to, .. }) = (&e.agent, &e.body) {
                    let got = Utc::now();
                    seen2.lock().push((id.clone(), *to, e.at, got));
                }
            }
        }
    });

    let out = std::env::temp_dir().join(format!("vigil-ingest-{}.json", std::process::id()));
    let exe = std::env::current_exe().context("finding the vigil binary")?;
    let fail_after = args.warmup + Duration::from_secs(2);
    let mut child = tokio::process::Command::new(exe)
        .arg("simulate")
        .args(["--connect", &server.local_addr().to_string()])
        .args(["--agents", &args.agents.to_string()])
        .args(["--connections", &args.connections.to_string()])
        .args(["--interval", &format!("{}ms", args.interval.as_millis())])
        .args(["--beat-ratio", &args.beat_ratio.to_string()])
        .args(["--jitter", &args.jitter.to_string()])
        .args([
            "--duration",
            // Beyond the window, so the fleet is beating throughout it.
            &format!("{}ms", (args.warmup + args.measure).as_millis() + 1000),
        ])
        .args(["--measure-from", &format!("{}ms", args.warmup.as_millis())])
        .args(["--fail-after", &format!("{}ms", fail_after.as_millis())])
        .args(["--stop-share", &args.stop_share.to_string()])
        .args(["--tick", &format!("{}ms", args.tick.as_millis())])
        .args(["--late-after", &format!("{}ms", args.interval.as_millis())])
        .args(["--prefix", "ing"])
        .args(args.batch.then_some("--batch"))
        .arg("--quiet")
        .arg("--json")
        .arg(&out)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .context("starting the load generator (vigil simulate)")?;

    // Registration is done when the registry holds every agent.
    let t0 = std::time::Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            anyhow::bail!("the load generator exited early: {status}");
        }
        if runtime.stats().await?.registry.total >= args.agents {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let register_secs = t0.elapsed().as_secs_f64();
    let t_reg = tokio::time::Instant::now();
    eprintln!(
        "{} agents registered in {register_secs:.2}s; beating",
        args.agents
    );
    let mut max_lag = Duration::ZERO;
    while t_reg.elapsed() < args.warmup {
        tokio::time::sleep(Duration::from_millis(50)).await;
        max_lag = max_lag.max(runtime.lag());
    }
    let (f0, b0, c0, m0) = (
        server.frames(),
        server.heartbeats(),
        cpu_time(),
        std::time::Instant::now(),
    );
    let window_start = Utc::now();
    while t_reg.elapsed() < args.warmup + args.measure {
        tokio::time::sleep(Duration::from_millis(50)).await;
        max_lag = max_lag.max(runtime.lag());
    }
    let (f1, b1, c1, dt) = (
        server.frames(),
        server.heartbeats(),
        cpu_time(),
        m0.elapsed().as_secs_f64(),
    );
    // Transitions after the window are the generator stopping, not the runtime's doing.
    let window_end = Utc::now();
    let status = child.wait().await?;
    anyhow::ensure!(status.success(), "the load generator failed: {status}");
    let gen: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&out).with_context(|| format!("reading {}", out.display()))?,
    )?;
    let _ = std::fs::remove_file(&out);
    let gen_f = |k: &str| gen[k].as_f64().unwrap_or(0.0);
    let late_gaps: Vec<crate::tools::simulate::LateGap> =
        serde_json::from_value(gen["late"].clone()).context("the generator's late gaps")?;
    let gaps = crate::tools::simulate::SenderGaps::new(late_gaps);
    // The longest of the generator's own gaps (over the interval) that explains a transition.
    let deadline_ms = (args.interval + args.grace).as_millis() as i64;
    let sender_gap = |id: &AgentId, at: DateTime<Utc>| {
        gaps.explaining(id.as_str(), at.timestamp_millis(), deadline_ms)
    };
    let frames = (f1 - f0) as f64;
    let beats = (b1 - b0) as f64;
    let cpu = c1.saturating_sub(c0).as_secs_f64();

    // Lateness of each stopped agent's transitions.
    let seen = std::mem::take(&mut *seen.lock());
    let stopped: Vec<AgentId> = (0..args.agents)
        .filter(|&i| picked(i, args.stop_share, 0))
        .filter_map(|i| AgentId::new(agent_id("ing", i)).ok())
        .collect();
    let stop_set: std::collections::HashSet<&AgentId> = stopped.iter().collect();
    let mut last_seen = std::collections::HashMap::new();
    for id in &stopped {
        if let Ok(AdminResponse::Agent(r)) =
            runtime.admin(AdminRequest::Get { id: id.clone() }).await
        {
            if let Some(t) = r.last_seen {
                last_seen.insert(id.clone(), t);
            }
        }
    }
    let mut lat: [Vec<Duration>; 4] = Default::default();
    let (mut spurious, mut spurious_before, mut late_sender, mut slow_sender) = (0, 0, 0, 0);
    let mut false_examples = Vec::new();
    let mut got = std::collections::HashSet::new();
    let late = |at: DateTime<Utc>, due: DateTime<Utc>| (at - due).to_std().unwrap_or_default();
    for (id, to, at, recv) in seen.into_iter().filter(|s| s.2 <= window_end) {
        let Some(seen_at) = stop_set.contains(&id).then(|| last_seen.get(&id)).flatten() else {
            match sender_gap(&id, at) {
                Some(gap) if gap > deadline_ms => {
                    late_sender += 1;
                    continue;
                }
                Some(_) => {
                    slow_sender += 1;
                    continue;
                }
                None => {}
            }
            if false_examples.len() < 10 {
                let ms = (at - window_start).num_milliseconds();
                false_examples.push((id.to_string(), to, ms));
            }
            match at < window_start {
                true => spurious_before += 1,
                false => spurious += 1,
            }
            continue;
        };
        let missed = match to {
            Status::Degraded => policy.degraded_after,
            Status::Offline => policy.offline_after,
            _ => {
                spurious += 1;
                continue;
            }
        };
        if !got.insert((id.clone(), to)) {
            spurious += 1;
            continue;
        }
        let due = *seen_at
            + chrono::Duration::from_std(policy.heartbeat_interval * missed + policy.grace)
                .unwrap_or_default();
        let k = if to == Status::Degraded { 0 } else { 2 };
        lat[k].push(late(at, due));
        lat[k + 1].push(late(recv, due));
    }
    let missing = stopped.len() * 2 - got.len();
    collector.abort();
    server.stop().await;
    // The monitor hub's stats task may hold the runtime for a moment (one tick's upgrade):
    // the shared shutdown drains all the same.
    runtime.shutdown_shared().await?;
    let [dd, dv, od, ov] = lat;
    Ok(IngestResult {
        machine: Machine::read(),
        command,
        params: args,
        register_secs,
        server_frames_per_sec: frames / dt,
        server_beats_per_sec: beats / dt,
        generator_beats_per_sec: gen_f("beats_per_sec"),
        server_cpu_share_of_one_core: cpu / dt,
        generator_cpu_share_of_one_core: gen_f("cpu_share_of_one_core"),
        server_cpu_us_per_beat: cpu * 1e6 / beats.max(1.0),
        generator_errors: gen["errors"].as_u64().unwrap_or(0),
        stopped: stopped.len(),
        degraded_detected_late: Quantiles::of(dd),
        degraded_delivered_late: Quantiles::of(dv),
        offline_detected_late: Quantiles::of(od),
        offline_delivered_late: Quantiles::of(ov),
        missing,
        spurious,
        spurious_before_window: spurious_before,
        late_sender,
        slow_sender,
        generator_late_gaps: gen["late_gaps"].as_u64().unwrap_or(0),
        generator_max_tick_late_ms: gen_f("max_tick_late_ms"),
        max_lag_ms: max_lag.as_millis() as u64,
        false_examples,
    })
}

fn print_table(r: &IngestResult) {
    let q = |q: &Quantiles| {
        format!(
            "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (n={})",
            q.p50_ms, q.p99_ms, q.max_ms, q.n
        )
    };
    println!(
        "| ingest | {} agents over {} connections, interval {:?}{} |",
        r.params.agents,
        r.params.connections,
        r.params.interval,
        if r.params.batch { ", beats frames" } else { "" }
    );
    println!("| --- | --- |");
    println!("| registration | {:.2} s |", r.register_secs);
    println!(
        "| heartbeats/s taken by the server (frames/s) | {:.0} ({:.0}) |",
        r.server_beats_per_sec, r.server_frames_per_sec
    );
    println!(
        "| heartbeats/s sent by the generator | {:.0} |",
        r.generator_beats_per_sec
    );
    println!(
        "| server CPU | {:.0}% of one core ({:.2} µs per beat) |",
        r.server_cpu_share_of_one_core * 100.0,
        r.server_cpu_us_per_beat
    );
    println!(
        "| generator CPU | {:.0}% of one core |",
        r.generator_cpu_share_of_one_core * 100.0
    );
    println!(
        "| degraded detected after deadline | {} |",
        q(&r.degraded_detected_late)
    );
    println!(
        "| degraded delivered after deadline | {} |",
        q(&r.degraded_delivered_late)
    );
    println!(
        "| offline detected after deadline | {} |",
        q(&r.offline_detected_late)
    );
    println!(
        "| offline delivered after deadline | {} |",
        q(&r.offline_delivered_late)
    );
    println!(
        "| stopped / missing / spurious in the window (before it) | {} / {} / {} ({}) |",
        r.stopped, r.missing, r.spurious, r.spurious_before_window
    );
    println!(
        "| transitions of agents the generator left silent past the deadline / past the \
         interval (its gaps over the interval; ticks up to ms late) | {} / {} ({}; {:.1}) |",
        r.late_sender, r.slow_sender, r.generator_late_gaps, r.generator_max_tick_late_ms
    );
    for (agent, to, ms) in &r.false_examples {
        println!("false transition: {agent} to {to:?} at {ms} ms from the window's start");
    }
    println!("| max scheduling lag | {} ms |", r.max_lag_ms);
}
