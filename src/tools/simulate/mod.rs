//! `vigil simulate`: a fleet of simulated agents over TCP, with failure injection. It is also
//! the load generator of `vigil bench ingest`.
//!
//! N agents are spread over C connections (agent `i` on connection `i mod C`). Each connection
//! is one task: it registers its agents (pipelined), then sends their heartbeats from a ring of
//! time slots: an agent beats every `interval × beat_ratio`, each period drawn with ±`jitter`,
//! so a beat costs O(1) however many agents share the connection. Heartbeat lines are built
//! once per agent.
//!
//! Failure injection, from `--fail-after` on (agent `i` is picked for a share `s` when
//! `i mod round(1/s) == k` for a per-mode `k`, so the modes do not overlap while the shares are
//! small and the choice is the same in every run — `vigil bench ingest` relies on it):
//! - `stop`: the agent never beats again (degraded, then offline);
//! - `flap`: silent for 2 intervals, then beating for 4, over and over;
//! - `degraded`: it keeps beating but reports `degraded`;
//! - `disconnect` (a share of connections): the connection closes, and comes back after
//!   `--reconnect-after`, registering its agents again (`takeover`).

mod connection;
mod pace;

pub use pace::{LateGap, SenderGaps, Verdict};

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tokio::time::Instant;

use crate::client::ClientConfig;

use connection::connection_task;

/// `vigil simulate`'s options (also recorded in its JSON summary, without the token).
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct SimulateArgs {
    /// The agent listener.
    #[arg(long, default_value = "127.0.0.1:7400")]
    pub connect: String,
    /// Agent token (when the server requires one).
    #[arg(long, env = "VIGIL_AGENT_TOKEN")]
    #[serde(skip)]
    pub token: Option<String>,
    /// Simulated agents.
    #[arg(long, default_value_t = 1000)]
    pub agents: usize,
    /// Connections they are spread over.
    #[arg(long, default_value_t = 10)]
    pub connections: usize,
    /// Heartbeat interval each agent registers with.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Beat every interval × this.
    #[arg(long, default_value_t = 0.75)]
    pub beat_ratio: f64,
    /// ± this share of each period, drawn per beat.
    #[arg(long, default_value_t = 0.1)]
    pub jitter: f64,
    /// Agent ids are PREFIX-000001, ...
    #[arg(long, default_value = "sim")]
    pub prefix: String,
    /// The kind each agent registers with.
    #[arg(long, default_value = "sim")]
    pub kind: String,
    /// Stop after this long (from the end of registration); run until Ctrl-C without it.
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub duration: Option<Duration>,
    /// Failures start this long after registration.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub fail_after: Duration,
    /// Share of agents that stop beating.
    #[arg(long, default_value_t = 0.0)]
    pub stop_share: f64,
    /// Share of agents that flap (silent 2 intervals, beating 4).
    #[arg(long, default_value_t = 0.0)]
    pub flap_share: f64,
    /// Share of agents that report degraded.
    #[arg(long, default_value_t = 0.0)]
    pub degraded_share: f64,
    /// Share of connections that drop and reconnect.
    #[arg(long, default_value_t = 0.0)]
    pub disconnect_share: f64,
    /// How long a dropped connection stays away.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub reconnect_after: Duration,
    /// Measure the heartbeat rate and CPU from this long after registration ...
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub measure_from: Duration,
    /// Registrations one connection has in flight at once.
    #[arg(long, default_value_t = 4)]
    pub register_window: usize,
    /// Beats due within one tick go out in one write per connection.
    #[arg(long, default_value = "5ms", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub tick: Duration,
    /// A gap longer than this between two messages of one agent (registration or beats) is
    /// the sender's lateness, listed in the JSON summary (default: the interval).
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub late_after: Option<Duration>,
    /// Send healthy beats as `beats` frames (many ids in one; asked for at `hello`) instead
    /// of one `heartbeat` frame each.
    #[arg(long)]
    pub batch: bool,
    /// Write the summary as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// No live counters.
    #[arg(long)]
    pub quiet: bool,
}

/// Failure modes, with the residue that picks their agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Never beats again.
    Stop,
    /// Silent for 2 intervals, then beating for 4, over and over.
    Flap,
    /// Keeps beating, but reports `degraded`.
    Degraded,
}

/// Whether agent (or connection) `i` is picked for a share: `i mod round(1/share) == k`.
pub fn picked(i: usize, share: f64, k: usize) -> bool {
    if share <= 0.0 {
        return false;
    }
    let every = (1.0 / share.min(1.0)).round().max(1.0) as usize;
    i % every == k % every
}

/// The failure mode of agent `i`, if any.
pub fn mode_of(i: usize, a: &SimulateArgs) -> Option<Mode> {
    if picked(i, a.stop_share, 0) {
        Some(Mode::Stop)
    } else if picked(i, a.flap_share, 1) {
        Some(Mode::Flap)
    } else if picked(i, a.degraded_share, 2) {
        Some(Mode::Degraded)
    } else {
        None
    }
}

/// The id of simulated agent `i`: `PREFIX-0000042`.
pub fn agent_id(prefix: &str, i: usize) -> String {
    format!("{prefix}-{i:07}")
}

#[derive(Debug, Default)]
struct Counters {
    registered: AtomicU64,
    beats: AtomicU64,
    errors: AtomicU64,
    reconnects: AtomicU64,
    evicted: AtomicU64,
    /// Beats counted from `measure_from` on.
    measured_beats: AtomicU64,
    measuring: AtomicBool,
    /// Gaps longer than `--late-after`, counted and (the first ones) kept.
    late_gaps: AtomicU64,
    late: parking_lot::Mutex<Vec<LateGap>>,
    /// The most a tick of a connection's ring ran after its time, in microseconds.
    max_tick_late_us: AtomicU64,
}

/// What a simulation did, as `--json` writes it.
#[derive(Debug, Serialize)]
pub struct SimulateSummary {
    /// The options it ran with.
    pub params: SimulateArgs,
    /// How long registering every agent took, in seconds.
    pub register_secs: f64,
    /// Heartbeats sent in all.
    pub beats: u64,
    /// `error` frames received and failed writes or connections.
    pub errors: u64,
    /// Connections made again after a drop.
    pub reconnects: u64,
    /// `evicted` frames received.
    pub evicted: u64,
    /// Over the measured window.
    pub measured_secs: f64,
    /// Heartbeats sent over the measured window.
    pub measured_beats: u64,
    /// `measured_beats` per second of the measured window.
    pub beats_per_sec: f64,
    /// CPU time the process used over the measured window, in seconds.
    pub cpu_secs: f64,
    /// CPU over the measured window as a share of one core.
    pub cpu_share_of_one_core: f64,
    /// The most a connection's beats left after their time, in milliseconds.
    pub max_tick_late_ms: f64,
    /// Gaps between one agent's messages longer than `--late-after` (the sender's lateness).
    pub late_gaps: u64,
    /// The first 100,000 of them.
    pub late: Vec<LateGap>,
    /// When it stopped sending (Unix milliseconds): its agents are silent from then on.
    pub stopped_ms: i64,
}

/// Runs a simulation on a runtime of its own, until `--duration` or Ctrl-C; writes the
/// summary to `--json` if given.
pub fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let summary = rt.block_on(simulate(args.clone()))?;
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&summary)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if !args.quiet {
        eprintln!(
            "{} beats ({:.0}/s measured), {} errors, {} reconnects, CPU {:.0}% of a core, \
             {} late gaps (ticks up to {:.1} ms late)",
            summary.beats,
            summary.beats_per_sec,
            summary.errors,
            summary.reconnects,
            summary.cpu_share_of_one_core * 100.0,
            summary.late_gaps,
            summary.max_tick_late_ms
        );
    }
    Ok(())
}

/// Registers the agents, then beats (with the failures asked for) until `--duration` or
/// Ctrl-C; the summary of what was sent.
pub async fn simulate(args: SimulateArgs) -> anyhow::Result<SimulateSummary> {
    anyhow::ensure!(args.connections > 0, "--connections must be at least 1");
    let counters = Arc::new(Counters::default());
    let mut cfg = ClientConfig::new(args.connect.clone());
    cfg.token = args.token.clone();
    cfg.client_name = concat!("vigil-simulate/", env!("CARGO_PKG_VERSION")).into();
    cfg.connect_timeout = Duration::from_secs(30);
    if args.batch {
        cfg.features = vec![crate::protocol::FEATURE_BEATS.to_string()];
    }
    let args = Arc::new(args);
    let t0 = std::time::Instant::now();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<anyhow::Result<()>>(1024);
    // When failures start: set once every agent is registered.
    let start: Arc<std::sync::OnceLock<Instant>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let n_conn = args.connections.min(args.agents.max(1));
    let mut tasks = Vec::new();
    for c in 0..n_conn {
        let ids: Vec<usize> = (c..args.agents).step_by(n_conn).collect();
        tasks.push(tokio::spawn(connection_task(
            c,
            ids,
            cfg.clone(),
            args.clone(),
            counters.clone(),
            ready_tx.clone(),
            start.clone(),
            stop.clone(),
        )));
    }
    drop(ready_tx);
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(args.agents as u64)
    };
    bar.set_style(
        ProgressStyle::with_template("registering {bar:40} {pos}/{len} {per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut ready = 0;
    while ready < n_conn {
        tokio::select! {
            r = ready_rx.recv() => match r {
                Some(Ok(())) => ready += 1,
                Some(Err(e)) => {
                    stop.store(true, Ordering::Relaxed);
                    return Err(e.context("registering the simulated agents"));
                }
                None => anyhow::bail!("a connection task ended before registering"),
            },
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                bar.set_position(counters.registered.load(Ordering::Relaxed));
            }
        }
    }
    bar.finish_and_clear();
    let register_secs = t0.elapsed().as_secs_f64();
    let t_reg = Instant::now();
    let _ = start.set(t_reg + args.fail_after);
    if !args.quiet {
        eprintln!(
            "{} agents registered over {} connections in {:.2}s",
            args.agents, n_conn, register_secs
        );
    }

    let spinner = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new_spinner()
    };
    spinner.set_style(
        ProgressStyle::with_template("{spinner} {elapsed} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let measure_at = t_reg + args.measure_from;
    let end = args.duration.map(|d| t_reg + d);
    let mut measure0: Option<(Instant, Duration)> = None;
    let mut last = (Instant::now(), 0u64);
    loop {
        let now = Instant::now();
        if measure0.is_none() && now >= measure_at {
            counters.measuring.store(true, Ordering::Relaxed);
            measure0 = Some((now, crate::tools::bench::cpu_time()));
        }
        if end.is_some_and(|e| now >= e) {
            break;
        }
        let beats = counters.beats.load(Ordering::Relaxed);
        let rate = (beats - last.1) as f64 / now.duration_since(last.0).as_secs_f64().max(1e-3);
        last = (now, beats);
        spinner.set_message(format!(
            "{beats} beats ({rate:.0}/s), {} errors, {} reconnects, {} evicted",
            counters.errors.load(Ordering::Relaxed),
            counters.reconnects.load(Ordering::Relaxed),
            counters.evicted.load(Ordering::Relaxed),
        ));
        spinner.tick();
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    counters.measuring.store(false, Ordering::Relaxed);
    let stopped_ms = chrono::Utc::now().timestamp_millis();
    let (m_secs, cpu) = match measure0 {
        Some((t, c)) => (
            t.elapsed().as_secs_f64(),
            crate::tools::bench::cpu_time().saturating_sub(c),
        ),
        None => (0.0, Duration::ZERO),
    };
    spinner.finish_and_clear();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.abort();
    }
    let measured_beats = counters.measured_beats.load(Ordering::Relaxed);
    let args = Arc::try_unwrap(args).unwrap_or_else(|a| (*a).clone());
    let late = std::mem::take(&mut *counters.late.lock());
    Ok(SimulateSummary {
        params: args,
        register_secs,
        beats: counters.beats.load(Ordering::Relaxed),
        errors: counters.errors.load(Ordering::Relaxed),
        reconnects: counters.reconnects.load(Ordering::Relaxed),
        evicted: counters.evicted.load(Ordering::Relaxed),
        measured_secs: m_secs,
        measured_beats,
        beats_per_sec: measured_beats as f64 / m_secs.max(1e-9),
        cpu_secs: cpu.as_secs_f64(),
        cpu_share_of_one_core: cpu.as_secs_f64() / m_secs.max(1e-9),
        max_tick_late_ms: counters.max_tick_late_us.load(Ordering::Relaxed) as f64 / 1000.0,
        late_gaps: counters.late_gaps.load(Ordering::Relaxed),
        late,
        stopped_ms,
    })
}
