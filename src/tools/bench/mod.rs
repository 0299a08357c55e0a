//! `vigil bench`: benchmark scenarios that anyone can rerun. Each prints a short table and can
//! write every figure, the machine and the command as JSON.
//!
//! Scenarios: [`detect`], [`ingest`], [`fanout`], [`memory`], [`store`] (also `storm`),
//! [`restart`], [`shared_log`] and [`cluster`]; [`run_all`] runs every one in a process of its
//! own.

pub mod cluster;
mod cluster_beats;
mod cluster_failover;
pub mod detect;
pub mod fanout;
pub mod fanout_monitors;
pub mod ingest;
pub mod memory;
pub mod restart;
pub mod shared_log;
pub mod store;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use tokio::time::Instant;

/// Latency quantiles of a sample, in ms.
#[derive(Debug, Default, Serialize)]
pub struct Quantiles {
    /// The sample's size (0: no sample, and every figure 0).
    pub n: usize,
    /// The median, in ms.
    pub p50_ms: f64,
    /// The 99th percentile, in ms.
    pub p99_ms: f64,
    /// The largest, in ms.
    pub max_ms: f64,
}

impl Quantiles {
    /// The quantiles of `v` (nearest rank).
    pub fn of(mut v: Vec<Duration>) -> Self {
        if v.is_empty() {
            return Self::default();
        }
        v.sort();
        let at = |q: f64| {
            let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
            v[i].as_secs_f64() * 1e3
        };
        Self {
            n: v.len(),
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        }
    }
}

/// The machine a benchmark ran on, as its JSON records it.
#[derive(Debug, Serialize)]
pub struct Machine {
    /// Logical CPUs available to the process.
    pub cpus: usize,
    /// The CPU model (`/proc/cpuinfo`; `unknown` elsewhere).
    pub model: String,
    /// Total memory, in KiB (`/proc/meminfo`; 0 elsewhere).
    pub memory_kib: u64,
}

impl Machine {
    /// Reads this machine's figures.
    pub fn read() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let memory_kib = read_kib("/proc/meminfo", "MemTotal:");
        Self {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            model,
            memory_kib,
        }
    }
}

fn read_kib(file: &str, key: &str) -> u64 {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Resident memory of this process, in bytes.
pub fn rss_bytes() -> u64 {
    read_kib("/proc/self/status", "VmRSS:") * 1024
}

/// CPU time (user + system) this process has used.
pub fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after ')'.
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_secs_f64(ticks as f64 / 100.0)
}

/// An async runtime for a scenario, with `workers` threads (`None`: one per core).
pub fn runtime(workers: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = workers {
        b.worker_threads(n.max(1));
    }
    b.enable_all().build().context("starting the async runtime")
}

/// Writes a scenario's result as JSON where `--json` asked.
pub fn write_json<T: Serialize>(path: &Option<PathBuf>, v: &T) -> anyhow::Result<()> {
    if let Some(p) = path {
        std::fs::write(p, serde_json::to_vec_pretty(v)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

/// `vigil bench` with no scenario: every scenario in turn, each in a child process (so one's
/// memory does not count in the next one's RSS), each checking its own invariants (no
/// spurious transition, every expected transition seen); a summary at the end. With `quick`,
/// the CI's small sizes. The peers' comparison is `bench/peers/run.sh` (it needs etcd and
/// Redis running).
pub fn run_all(quick: bool, json_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("finding the vigil binary")?;
    let dir = json_dir.unwrap_or_else(|| std::env::temp_dir().join("vigil-bench"));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let q = |full: &[&'static str], small: &[&'static str]| -> Vec<&'static str> {
        if quick {
            small.to_vec()
        } else {
            full.to_vec()
        }
    };
    let scenarios: Vec<(&str, Vec<&str>)> = vec![
        ("detect", q(&[], &["--quick"])),
        ("ingest", q(&[], &["--quick"])),
        ("fanout", q(&[], &["--quick"])),
        ("storm", q(&[], &["--agents", "2000"])),
        (
            "restart",
            q(&["--interval-ms", "5000"], &["--agents", "2000"]),
        ),
        ("memory", q(&[], &["--quick"])),
        ("store", q(&[], &["--sizes", "1,100", "--each", "1s"])),
    ];
    // The shared log and the cluster need a SurrealDB server; without one they are left out,
    // and said so.
    let mut scenarios = scenarios;
    if std::env::var_os("VIGIL_SURREAL").is_some() {
        scenarios.push(("shared-log", q(&[], &["--writers", "1,3", "--each", "1s"])));
        scenarios.push((
            "cluster",
            q(
                &[],
                &[
                    "--registrations",
                    "400",
                    "--agents",
                    "100",
                    "--beating",
                    "300",
                    "--beat-window",
                    "2s",
                ],
            ),
        ));
    } else {
        eprintln!(
            "== vigil bench shared-log and cluster: left out (they need VIGIL_SURREAL, a \
             `surreal` binary)"
        );
    }
    let mut summary = Vec::new();
    for (name, args) in &scenarios {
        let json = dir.join(format!("{name}.json"));
        eprintln!("== vigil bench {name} {}", args.join(" "));
        let t = Instant::now();
        let status = std::process::Command::new(&exe)
            .arg("bench")
            .arg(name)
            .args(args)
            .arg("--json")
            .arg(&json)
            .status()
            .with_context(|| format!("starting bench {name}"))?;
        summary.push((name, status.success(), t.elapsed(), json));
    }
    println!("| scenario | result | took | JSON |");
    println!("| --- | --- | --- | --- |");
    for (name, ok, took, json) in &summary {
        let result = if *ok { "ok" } else { "FAILED" };
        println!(
            "| {name} | {result} | {:.1} s | {} |",
            took.as_secs_f64(),
            json.display()
        );
    }
    let failed: Vec<_> = summary.iter().filter(|s| !s.1).map(|s| *s.0).collect();
    anyhow::ensure!(failed.is_empty(), "scenarios failed: {}", failed.join(", "));
    Ok(())
}
