//! `vigil bench detect` (formerly `core`): N in-process agents heartbeat every interval
//! through the embedding API (phases spread evenly over the interval); after a warm-up a share
//! of them stop at once. For each stopped agent, the delay from its true deadlines (last beat
//! plus degraded_after, and plus offline_after, intervals, plus grace) to a subscriber
//! receiving the transition (so it includes sequencing, the durable write and the fan-out);
//! any transition of an agent that kept beating is spurious. Also RSS per supervised agent and
//! CPU per beat.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use parking_lot::Mutex;
use serde::Serialize;
use tokio::time::Instant;
use vigil_actors::{
    AgentHandle, AgentId, Beat, EventBody, EventKind, Filter, LagConfig, MemStore, Policy,
    Registration, Runtime, RuntimeConfig, Status, SubscribeOptions, SubscriptionItem,
};

use super::{cpu_time, rss_bytes, runtime, write_json, Machine, Quantiles};

/// `vigil bench detect`'s options.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct CoreBench {
    /// Supervised agents.
    #[arg(long, default_value_t = 100_000)]
    pub agents: usize,
    /// Heartbeat interval of every agent.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Policy grace: slack before a beat counts as missed. Agents here beat exactly every
    /// interval, so without grace any scheduling jitter would be a missed beat.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
    /// Share of the agents that stop beating after the warm-up.
    #[arg(long, default_value_t = 0.01)]
    pub stop_share: f64,
    /// How long everyone beats before some stop.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub warmup: Duration,
    /// Worker threads of the async runtime.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Start this many busy-looping processes for the run (a machine starved of CPU).
    #[arg(long, default_value_t = 0)]
    pub hog: usize,
    /// Turn local health awareness off (deadlines are never extended).
    #[arg(long)]
    pub no_lag_awareness: bool,
    /// Small sizes, for CI: 2,000 agents, 2 s warm-up.
    #[arg(long)]
    pub quick: bool,
    /// Write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// What `vigil bench detect` measured, as its JSON records it.
#[derive(Debug, Serialize)]
pub struct CoreResult {
    /// The machine it ran on.
    pub machine: Machine,
    /// The command line it ran with.
    pub command: String,
    /// The options it ran with (after `--quick`).
    pub params: CoreBench,
    /// Registering every agent, in seconds.
    pub register_secs: f64,
    /// Memory the registrations added to the process, per agent, in bytes.
    pub rss_per_agent_bytes: u64,
    /// Heartbeats sent from the warm-up's start to the end.
    pub beats: u64,
    /// `beats` per second over the same time.
    pub beats_per_sec: f64,
    /// The process's CPU per heartbeat, in µs.
    pub cpu_us_per_beat: f64,
    /// The process's CPU over the same time, as a share of one core.
    pub cpu_share_of_one_core: f64,
    /// Agents stopped after the warm-up.
    pub stopped: usize,
    /// From a stopped agent's `degraded` deadline to a subscriber receiving the transition.
    pub degraded_late: Quantiles,
    /// From a stopped agent's `offline` deadline to a subscriber receiving the transition.
    pub offline_late: Quantiles,
    /// Expected transitions never seen (the bench fails unless 0).
    pub missing: usize,
    /// Transitions of agents that kept beating (the bench fails unless 0).
    pub spurious: usize,
    /// The runtime's largest scheduling lag seen, in ms.
    pub max_lag_ms: u64,
}

/// Busy-looping child processes, killed on drop.
struct Hog(Vec<std::process::Child>);

impl Hog {
    fn start(n: usize) -> anyhow::Result<Self> {
        let mut kids = Vec::new();
        for _ in 0..n {
            kids.push(
                std::process::Command::new("sh")
                    .args(["-c", "while :; do :; done"])
                    .spawn()
                    .context("starting a CPU hog")?,
            );
        }
        Ok(Self(kids))
    }
}

impl Drop for Hog {
    fn drop(&mut self) {
        for k in &mut self.0 {
            let _ = k.kill();
            let _ = k.wait();
        }
    }
}

fn agent_id(i: usize) -> AgentId {
    // Always valid: digits and a dash.
    AgentId::new(format!("agent-{i:07}")).expect("generated id is valid")
}

fn agent_index(id: &AgentId) -> Option<usize> {
    id.as_str().strip_prefix("agent-")?.parse().ok()
}

/// Runs `vigil bench detect`; fails if a transition is missing or spurious.
pub fn run_core(mut args: CoreBench) -> anyhow::Result<()> {
    if args.quick {
        args.agents = args.agents.min(2_000);
        args.warmup = args.warmup.min(Duration::from_secs(2));
    }
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let result = runtime(Some(args.workers))?.block_on(core(args.clone(), command))?;
    print_core(&result);
    write_json(&args.json, &result)?;
    anyhow::ensure!(
        result.spurious == 0,
        "{} spurious transitions",
        result.spurious
    );
    anyhow::ensure!(
        result.missing == 0,
        "{} expected transitions not seen",
        result.missing
    );
    Ok(())
}

async fn core(args: CoreBench, command: String) -> anyhow::Result<CoreResult> {
    let n = args.agents.max(1);
    let policy = Policy {
        heartbeat_interval: args.interval,
        grace: args.grace,
        ..Policy::default()
    };
    let cfg = RuntimeConfig {
        policy: policy.clone(),
        checkpoint_interval: Duration::ZERO,
        subscriber_queue: 1 << 20,
        lag: LagConfig {
            enabled: !args.no_lag_awareness,
            ..LagConfig::default()
        },
        ..RuntimeConfig::default()
    };
    let runtime = Arc::new(Runtime::start(cfg, MemStore::new()).await?);
    let rss0 = rss_bytes();

    let mut sub = runtime
        .subscribe(SubscribeOptions {
            filter: Filter {
                events: vec![EventKind::Transition],
                ..Default::default()
            },
            ..Default::default()
        })
        .await?;
    type Seen = Vec<(usize, Status, Instant)>;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let seen_count = Arc::new(AtomicU64::new(0));
    let collector = {
        let seen = seen.clone();
        let count = seen_count.clone();
        tokio::spawn(async move {
            while let Some(item) = sub.next().await {
                let now = Instant::now();
                if let SubscriptionItem::Event(e) = item {
                    if let (EventBody::Transition { to, .. }, Some(i)) =
                        (&e.body, e.agent.as_ref().and_then(agent_index))
                    {
                        seen.lock().push((i, *to, now));
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };

    // Beat drivers start before registration: an agent beats from its first interval on,
    // as a real one would. Two tasks, each beating its half at phases spread over the interval.
    let handles: Arc<Vec<OnceLock<AgentHandle>>> =
        Arc::new((0..n).map(|_| OnceLock::new()).collect());
    let epoch = Instant::now();
    let last_beat: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
    let stopped: Arc<Vec<AtomicBool>> = Arc::new((0..n).map(|_| AtomicBool::new(false)).collect());
    let beats = Arc::new(AtomicU64::new(0));
    let running = Arc::new(AtomicBool::new(true));
    const STEPS: usize = 200;
    let step = args.interval / STEPS as u32;
    let mut drivers = Vec::new();
    for d in 0..2usize {
        let (handles, last_beat, stopped, beats, running) = (
            handles.clone(),
            last_beat.clone(),
            stopped.clone(),
            beats.clone(),
            running.clone(),
        );
        drivers.push(tokio::spawn(async move {
            let mut k = 0u64;
            while running.load(Ordering::Relaxed) {
                tokio::time::sleep_until(epoch + step * k as u32).await;
                let s = (k as usize) % STEPS;
                let (lo, hi) = (s * n / STEPS, (s + 1) * n / STEPS);
                let mut count = 0;
                for i in (lo..hi).filter(|i| i % 2 == d) {
                    let Some(h) = handles[i].get() else { continue };
                    if stopped[i].load(Ordering::Relaxed) {
                        continue;
                    }
                    let at = Instant::now();
                    if h.heartbeat(Beat::healthy()).is_ok() {
                        last_beat[i].store(
                            at.duration_since(epoch).as_nanos() as u64,
                            Ordering::Relaxed,
                        );
                        count += 1;
                    }
                }
                beats.fetch_add(count, Ordering::Relaxed);
                k += 1;
            }
        }));
    }

    let bar = ProgressBar::new(n as u64).with_style(
        ProgressStyle::with_template("registering {bar:40} {pos}/{len} {per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let t_reg = std::time::Instant::now();
    for (i, slot) in handles.iter().enumerate() {
        // A fleet's registrations do not wait for one another's durability.
        let (h, _) = runtime
            .register_sequenced(Registration::new(agent_id(i)).kind("bench"))
            .await?;
        let _ = slot.set(h);
        if i % 1000 == 0 {
            bar.set_position(i as u64);
        }
    }
    bar.finish_and_clear();
    let register_secs = t_reg.elapsed().as_secs_f64();
    let rss_per_agent = rss_bytes().saturating_sub(rss0) / n as u64;

    let _hog = Hog::start(args.hog)?;
    let cpu0 = cpu_time();
    let t0 = Instant::now();
    let beats0 = beats.load(Ordering::Relaxed);
    let spinner = ProgressBar::new_spinner().with_style(
        ProgressStyle::with_template("{spinner} {elapsed} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let status = |phase: &str| {
        format!(
            "{phase}: {} beats, {} transitions seen",
            beats.load(Ordering::Relaxed),
            seen_count.load(Ordering::Relaxed)
        )
    };
    let mut max_lag = Duration::ZERO;
    while t0.elapsed() < args.warmup {
        tokio::time::sleep(Duration::from_millis(100)).await;
        max_lag = max_lag.max(runtime.lag());
        spinner.set_message(status("warm-up"));
        spinner.tick();
    }
    let every = (1.0 / args.stop_share.clamp(1e-9, 1.0)).round().max(1.0) as usize;
    let stop_set: Vec<usize> = (0..n).step_by(every).collect();
    for &i in &stop_set {
        stopped[i].store(true, Ordering::Relaxed);
    }
    let end = Instant::now() + policy.heartbeat_interval * policy.offline_after + args.interval * 2;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(100)).await;
        max_lag = max_lag.max(runtime.lag());
        spinner.set_message(status("stopped some"));
        spinner.tick();
    }
    spinner.finish_and_clear();
    running.store(false, Ordering::Relaxed);
    for d in drivers {
        let _ = d.await;
    }
    let elapsed = t0.elapsed();
    let cpu = cpu_time().saturating_sub(cpu0);
    drop(_hog);
    let beats = beats.load(Ordering::Relaxed) - beats0;

    let seen = std::mem::take(&mut *seen.lock());
    let mut degraded = Vec::new();
    let mut offline = Vec::new();
    let mut spurious = 0;
    let mut got = vec![(false, false); n];
    for (i, to, at) in seen {
        if !stopped[i].load(Ordering::Relaxed) {
            spurious += 1;
            continue;
        }
        let last = epoch + Duration::from_nanos(last_beat[i].load(Ordering::Relaxed));
        let (slot, due) = match to {
            Status::Degraded => (
                &mut got[i].0,
                last + policy.heartbeat_interval * policy.degraded_after + policy.grace,
            ),
            Status::Offline => (
                &mut got[i].1,
                last + policy.heartbeat_interval * policy.offline_after + policy.grace,
            ),
            _ => {
                spurious += 1;
                continue;
            }
        };
        if *slot {
            spurious += 1; // a second degraded or offline: a doubled event
        }
        *slot = true;
        let late = at.saturating_duration_since(due);
        if to == Status::Degraded {
            degraded.push(late);
        } else {
            offline.push(late);
        }
    }
    let missing = stop_set
        .iter()
        .filter(|&&i| !(got[i].0 && got[i].1))
        .count();
    collector.abort();
    // The monitor hub's stats task may hold the runtime for a moment (one tick's upgrade):
    // the shared shutdown drains all the same.
    runtime.shutdown_shared().await?;
    Ok(CoreResult {
        machine: Machine::read(),
        command,
        params: args,
        register_secs,
        rss_per_agent_bytes: rss_per_agent,
        beats,
        beats_per_sec: beats as f64 / elapsed.as_secs_f64(),
        cpu_us_per_beat: cpu.as_secs_f64() * 1e6 / beats.max(1) as f64,
        cpu_share_of_one_core: cpu.as_secs_f64() / elapsed.as_secs_f64(),
        stopped: stop_set.len(),
        degraded_late: Quantiles::of(degraded),
        offline_late: Quantiles::of(offline),
        missing,
        spurious,
        max_lag_ms: max_lag.as_millis() as u64,
    })
}

fn print_core(r: &CoreResult) {
    println!("vigil bench detect — {} agents, interval {:?} (grace {:?}), {} stopped, {} CPU hogs, {} cpus ({})",
        r.params.agents, r.params.interval, r.params.grace, r.stopped, r.params.hog, r.machine.cpus, r.machine.model);
    println!("| figure | value |");
    println!("| --- | --- |");
    println!(
        "| register {} agents | {:.2} s |",
        r.params.agents, r.register_secs
    );
    println!(
        "| RSS per supervised agent | {} B ({:.2} KiB) |",
        r.rss_per_agent_bytes,
        r.rss_per_agent_bytes as f64 / 1024.0
    );
    println!("| heartbeats | {} ({:.0}/s) |", r.beats, r.beats_per_sec);
    println!(
        "| process CPU | {:.2} µs per beat, {:.0}% of one core |",
        r.cpu_us_per_beat,
        r.cpu_share_of_one_core * 100.0
    );
    let q = |q: &Quantiles| {
        format!(
            "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (n={})",
            q.p50_ms, q.p99_ms, q.max_ms, q.n
        )
    };
    println!(
        "| degraded seen after true deadline | {} |",
        q(&r.degraded_late)
    );
    println!(
        "| offline seen after true deadline | {} |",
        q(&r.offline_late)
    );
    println!("| expected transitions missing | {} |", r.missing);
    println!("| spurious transitions | {} |", r.spurious);
    println!("| max measured runtime lag | {} ms |", r.max_lag_ms);
}
