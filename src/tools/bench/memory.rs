//! `vigil bench memory`: resident memory per supervised agent at several fleet sizes (10k,
//! 100k, 1M by default). Each size runs in a child process of its own (`vigil bench
//! memory-one`), since memory a process has freed is not reliably returned to the system: the
//! child starts the runtime on the in-memory store, reads its RSS, registers N agents through
//! the embedding API (each one a supervised actor with its deadline armed; the interval is an
//! hour unless `--interval` says otherwise, so none comes due), reads its RSS again, and
//! reports the difference per agent.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use vigil_actors::{AgentId, MemStore, Policy, Registration, Runtime, RuntimeConfig};

use crate::tools::bench::{rss_bytes, runtime, write_json, Machine};

/// `vigil bench memory`'s options.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct MemoryBench {
    /// Fleet sizes, each measured in a fresh process.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
    pub sizes: Vec<usize>,
    /// The agents' heartbeat interval. An hour puts every deadline beyond the deadline
    /// wheel's ring (65 s); one within it (e.g. `30s`) counts the ring's memory too. The
    /// agents do not beat, so it must be longer than registering them takes.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Small sizes, for CI: 1,000 and 10,000.
    #[arg(long)]
    pub quick: bool,
    /// Write the figures as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// One size, in its own process.
#[derive(Debug, Clone, clap::Args)]
pub struct MemoryOne {
    /// Agents to register.
    #[arg(long)]
    pub agents: usize,
    /// Their heartbeat interval.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// Where the figures go (JSON).
    #[arg(long)]
    pub json: PathBuf,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// The memory of one fleet size.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemoryPoint {
    /// Agents registered.
    pub agents: usize,
    /// Registering them, in seconds.
    pub register_secs: f64,
    /// The process's resident memory before, in bytes.
    pub rss_before_bytes: u64,
    /// The process's resident memory after, in bytes.
    pub rss_after_bytes: u64,
    /// The difference per agent, in bytes.
    pub rss_per_agent_bytes: u64,
}

/// What `vigil bench memory` measured, as its JSON records it.
#[derive(Debug, Serialize)]
pub struct MemoryResult {
    /// The machine it ran on.
    pub machine: Machine,
    /// The command line it ran with.
    pub command: String,
    /// One point per fleet size.
    pub points: Vec<MemoryPoint>,
}

/// Runs `vigil bench memory`: each size in a `memory-one` child process, then the table.
pub fn run(mut args: MemoryBench) -> anyhow::Result<()> {
    if args.quick {
        args.sizes = vec![1_000, 10_000];
    }
    let exe = std::env::current_exe().context("finding the vigil binary")?;
    let dir = std::env::temp_dir().join(format!("vigil-bench-memory-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut points = Vec::new();
    for &n in &args.sizes {
        let out = dir.join(format!("{n}.json"));
        let status = Command::new(&exe)
            .args(["bench", "memory-one", "--agents", &n.to_string()])
            .args([
                "--interval",
                &humantime::format_duration(args.interval).to_string(),
            ])
            .arg("--json")
            .arg(&out)
            .args(args.quick.then_some("--quiet"))
            .status()
            .context("starting a memory-one child")?;
        anyhow::ensure!(status.success(), "the run with {n} agents failed: {status}");
        let p: MemoryPoint = serde_json::from_slice(&std::fs::read(&out)?)?;
        anyhow::ensure!(
            p.agents == n,
            "the child registered {} of {n} agents",
            p.agents
        );
        points.push(p);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let r = MemoryResult {
        machine: Machine::read(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        points,
    };
    println!(
        "vigil bench memory — RSS per supervised agent, interval {} ({} cpus, {})",
        humantime::format_duration(args.interval),
        r.machine.cpus,
        r.machine.model
    );
    println!("| agents | register | RSS before | RSS after | per agent |");
    println!("| --- | --- | --- | --- | --- |");
    for p in &r.points {
        println!(
            "| {} | {:.2} s | {:.1} MiB | {:.1} MiB | {} B ({:.2} KiB) |",
            p.agents,
            p.register_secs,
            p.rss_before_bytes as f64 / 1048576.0,
            p.rss_after_bytes as f64 / 1048576.0,
            p.rss_per_agent_bytes,
            p.rss_per_agent_bytes as f64 / 1024.0
        );
    }
    write_json(&args.json, &r)?;
    Ok(())
}

/// Runs one size (`vigil bench memory-one`) and writes its point to `--json`.
pub fn run_one(args: MemoryOne) -> anyhow::Result<()> {
    let p = runtime(Some(2))?.block_on(one(&args))?;
    std::fs::write(&args.json, serde_json::to_vec(&p)?)?;
    Ok(())
}

async fn one(args: &MemoryOne) -> anyhow::Result<MemoryPoint> {
    let cfg = RuntimeConfig {
        policy: Policy {
            heartbeat_interval: args.interval,
            ..Policy::default()
        },
        max_heartbeat_interval: args.interval.max(Duration::from_secs(3600)),
        checkpoint_interval: Duration::ZERO,
        ..RuntimeConfig::default()
    };
    let rt = Runtime::start(cfg, MemStore::new()).await?;
    let before = rss_bytes();
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(args.agents as u64).with_style(
            ProgressStyle::with_template(
                "registering {pos}/{len} agents {per_sec} {wide_bar} {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        )
    };
    let t = Instant::now();
    let mut handles = Vec::with_capacity(args.agents);
    for i in 0..args.agents {
        let id = AgentId::new(format!("agent-{i}"))?;
        handles.push(rt.register_sequenced(Registration::new(id)).await?.0);
        if i % 1000 == 0 {
            bar.set_position(i as u64);
        }
    }
    bar.finish_and_clear();
    let register_secs = t.elapsed().as_secs_f64();
    // Every registration's event written (the in-memory log holds one per agent).
    loop {
        let r = rt.stats().await?.registry;
        if r.durable_seq >= r.last_seq && r.last_seq >= args.agents as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let after = rss_bytes();
    // The handles are the embedder's, not the runtime's: their few bytes are counted too.
    let per = after.saturating_sub(before) / args.agents.max(1) as u64;
    drop(handles);
    rt.shutdown().await?;
    Ok(MemoryPoint {
        agents: args.agents,
        register_secs,
        rss_before_bytes: before,
        rss_after_bytes: after,
        rss_per_agent_bytes: per,
    })
}
