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

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use rand::Rng;
use serde::Serialize;
use serde_json::json;
use tokio::time::Instant;

use crate::client::{ClientConfig, Connection, ServerFrame};
use crate::protocol::Role;

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
    Stop,
    Flap,
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
}

#[derive(Debug, Serialize)]
pub struct SimulateSummary {
    pub params: SimulateArgs,
    pub register_secs: f64,
    pub beats: u64,
    pub errors: u64,
    pub reconnects: u64,
    pub evicted: u64,
    /// Over the measured window.
    pub measured_secs: f64,
    pub measured_beats: u64,
    pub beats_per_sec: f64,
    pub cpu_secs: f64,
    /// CPU over the measured window as a share of one core.
    pub cpu_share_of_one_core: f64,
}

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
            "{} beats ({:.0}/s measured), {} errors, {} reconnects, CPU {:.0}% of a core",
            summary.beats,
            summary.beats_per_sec,
            summary.errors,
            summary.reconnects,
            summary.cpu_share_of_one_core * 100.0
        );
    }
    Ok(())
}

pub async fn simulate(args: SimulateArgs) -> anyhow::Result<SimulateSummary> {
    anyhow::ensure!(args.connections > 0, "--connections must be at least 1");
    let counters = Arc::new(Counters::default());
    let mut cfg = ClientConfig::new(args.connect.clone());
    cfg.token = args.token.clone();
    cfg.client_name = concat!("vigil-simulate/", env!("CARGO_PKG_VERSION")).into();
    cfg.connect_timeout = Duration::from_secs(30);
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
    })
}

struct SimAgent {
    line: Vec<u8>,
    degraded_line: Vec<u8>,
    mode: Option<Mode>,
}

#[allow(clippy::too_many_arguments)]
async fn connection_task(
    c: usize,
    ids: Vec<usize>,
    cfg: ClientConfig,
    args: Arc<SimulateArgs>,
    counters: Arc<Counters>,
    ready: tokio::sync::mpsc::Sender<anyhow::Result<()>>,
    start: Arc<std::sync::OnceLock<Instant>>,
    stop: Arc<AtomicBool>,
) {
    let agents: Vec<SimAgent> = ids
        .iter()
        .map(|&i| {
            let id = agent_id(&args.prefix, i);
            SimAgent {
                line: format!("{{\"type\":\"heartbeat\",\"id\":\"{id}\"}}\n").into_bytes(),
                degraded_line: format!(
                    "{{\"type\":\"heartbeat\",\"id\":\"{id}\",\"status\":\"degraded\"}}\n"
                )
                .into_bytes(),
                mode: mode_of(i, &args),
            }
        })
        .collect();
    let registers: Vec<Vec<u8>> = ids
        .iter()
        .map(|&i| {
            let mut l = json!({
                "type": "register",
                "id": agent_id(&args.prefix, i),
                "kind": args.kind,
                "heartbeat_interval_ms": args.interval.as_millis() as u64,
                "takeover": true,
            })
            .to_string()
            .into_bytes();
            l.push(b'\n');
            l
        })
        .collect();
    let drops = picked(c, args.disconnect_share, 0);
    let period = args.interval.mul_f64(args.beat_ratio.clamp(0.05, 1.0));
    let tick = args.tick.max(Duration::from_millis(1));
    let period_ticks = (period.as_secs_f64() / tick.as_secs_f64()).max(1.0);
    let ring_len = (period_ticks * (1.0 + args.jitter.clamp(0.0, 0.5))).ceil() as usize + 2;
    let index: Arc<std::collections::HashMap<String, u32>> = Arc::new(
        ids.iter()
            .enumerate()
            .map(|(k, &i)| (agent_id(&args.prefix, i), k as u32))
            .collect(),
    );
    let mut first = true;
    // When this connection (if it is one that drops) drops next.
    let mut next_drop: Option<Instant> = None;
    loop {
        // Connect and register every agent of this connection.
        let conn = match Connection::connect(&cfg, Role::Agent).await {
            Ok(c) => c,
            Err(e) => {
                if first {
                    let _ = ready.send(Err(anyhow::anyhow!("connecting: {e}"))).await;
                    return;
                }
                counters.errors.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(args.reconnect_after).await;
                continue;
            }
        };
        let (mut reader, mut writer) = conn.split();
        // Registers go out a window at a time, between beats, so the beats of the agents
        // registered first never queue behind the registrations of the rest.
        let mut next_reg = 0usize;
        let mut in_flight = 0usize;
        // Replies: each `registered` puts its agent on the beat ring at once (waiting for the
        // rest would make it late); errors and evictions are counted.
        let (reg_tx, mut reg_rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
        let rc = counters.clone();
        let index = index.clone();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<Result<(), String>>();
        let count_registered = first;
        let replies = tokio::spawn(async move {
            let mut pending = index.len();
            let mut done = Some(done_tx);
            while let Ok(Some(f)) = reader.recv().await {
                match f {
                    ServerFrame::Registered { id, .. } => {
                        if let Some(&k) = index.get(&id) {
                            let _ = reg_tx.send(k);
                            if count_registered {
                                rc.registered.fetch_add(1, Ordering::Relaxed);
                            }
                            pending = pending.saturating_sub(1);
                            if pending == 0 {
                                if let Some(d) = done.take() {
                                    let _ = d.send(Ok(()));
                                }
                            }
                        }
                    }
                    ServerFrame::Error { code, message, .. } => {
                        rc.errors.fetch_add(1, Ordering::Relaxed);
                        if let Some(d) = done.take() {
                            let _ = d.send(Err(format!("the server refused: {code}: {message}")));
                        }
                    }
                    ServerFrame::Evicted { .. } => {
                        rc.evicted.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
            if let Some(d) = done.take() {
                let _ = d.send(Err("connection closed while registering".into()));
            }
        });
        let mut done_rx = Some(done_rx);
        let announce = first;
        if first {
            first = false;
        } else {
            counters.reconnects.fetch_add(1, Ordering::Relaxed);
        }

        let mut ring: Vec<Vec<u32>> = vec![Vec::new(); ring_len];
        let mut slot = 0usize;
        let mut tick = tokio::time::interval(tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut batch = Vec::with_capacity(64 * 1024);
        let mut due = Vec::new();
        let dropped = loop {
            tick.tick().await;
            if stop.load(Ordering::Relaxed) {
                break false;
            }
            let now = Instant::now();
            let fail_at = start.get().copied();
            let failing = fail_at.is_some_and(|f| now >= f);
            if drops && next_drop.is_none() {
                next_drop = fail_at;
            }
            if next_drop.is_some_and(|d| now >= d) {
                // Away for reconnect_after, then connected for 4 intervals before the next drop.
                next_drop = Some(now + args.reconnect_after + args.interval * 4);
                break true;
            }
            // Newly registered agents: a first beat soon (within a quarter period), as the
            // server's deadline runs from the registration, before the reply got here.
            {
                let mut rng = rand::rng();
                while let Ok(k) = reg_rx.try_recv() {
                    in_flight = in_flight.saturating_sub(1);
                    let d = rng.random_range(1..=((period_ticks / 4.0) as usize).max(1));
                    ring[(slot + d) % ring_len].push(k);
                }
            }
            if let Some(rx) = done_rx.as_mut() {
                if let Ok(r) = rx.try_recv() {
                    done_rx = None;
                    match (r, announce) {
                        (Ok(()), true) => {
                            let _ = ready.send(Ok(())).await;
                        }
                        (Ok(()), false) => {}
                        (Err(e), true) => {
                            let _ = ready.send(Err(anyhow::anyhow!(e))).await;
                            break false;
                        }
                        (Err(_), false) => break true,
                    }
                }
            }
            std::mem::swap(&mut due, &mut ring[slot]);
            batch.clear();
            while in_flight < args.register_window.max(1) && next_reg < registers.len() {
                batch.extend_from_slice(&registers[next_reg]);
                next_reg += 1;
                in_flight += 1;
            }
            let mut n = 0u64;
            {
                let mut rng = rand::rng();
                for &k in &due {
                    let a = &agents[k as usize];
                    let silent = failing
                        && match a.mode {
                            Some(Mode::Stop) => true,
                            Some(Mode::Flap) => {
                                let i = args.interval.as_secs_f64();
                                let since =
                                    fail_at.map_or(Duration::ZERO, |f| now.duration_since(f));
                                let t = since.as_secs_f64() % (6.0 * i);
                                t < 2.0 * i
                            }
                            _ => false,
                        };
                    if !silent {
                        if failing && a.mode == Some(Mode::Degraded) {
                            batch.extend_from_slice(&a.degraded_line);
                        } else {
                            batch.extend_from_slice(&a.line);
                        }
                        n += 1;
                    }
                    let j = args.jitter.clamp(0.0, 0.5);
                    let d = (period_ticks * rng.random_range((1.0 - j)..=(1.0 + j)))
                        .round()
                        .max(1.0) as usize;
                    ring[(slot + d.min(ring_len - 1)) % ring_len].push(k);
                }
            }
            due.clear();
            slot = (slot + 1) % ring_len;
            if !batch.is_empty() {
                if writer.send_raw(&batch).await.is_err() {
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                    break true;
                }
                counters.beats.fetch_add(n, Ordering::Relaxed);
                if counters.measuring.load(Ordering::Relaxed) {
                    counters.measured_beats.fetch_add(n, Ordering::Relaxed);
                }
            }
        };
        replies.abort();
        writer.close().await;
        if !dropped {
            return;
        }
        tokio::time::sleep(args.reconnect_after).await;
        if stop.load(Ordering::Relaxed) {
            return;
        }
    }
}
