//! The parent: runs each mechanism in a child process, and reports their medians.

use super::*;

// ---------------------------------------------------------------------------------------------
// Driver (parent process)

pub(crate) struct RunResult {
    beats_per_sec: f64,
    cpu_us_per_beat: f64,
    rss_per_agent: f64,
    lost_misses: u64,
    lag_misses: u64,
    spawn_ms: u64,
    driver_max_late_ms: f64,
    driver_late_beats: u64,
    load1: String,
    /// CPUs the process kept busy in the throughput window (2 when nothing else competes).
    cores: f64,
}

impl RunResult {
    /// Every miss while the agents beat on schedule.
    fn false_misses(&self) -> u64 {
        self.lost_misses + self.lag_misses
    }
}

pub(crate) fn parse_result(kind: Kind, stdout: &str) -> RunResult {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("RESULT "))
        .unwrap_or_else(|| panic!("child {kind:?} printed no RESULT line:\n{stdout}"));
    let kv: BTreeMap<&str, &str> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.split_once('='))
        .collect();
    let num = |k: &str| -> f64 {
        kv.get(k)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("child {kind:?}: no number {k} in {line}"))
    };
    let n = num("n");
    let beats = num("beats");
    RunResult {
        beats_per_sec: beats / num("secs"),
        cpu_us_per_beat: num("cpu_ns") / 1e3 / beats.max(1.0),
        rss_per_agent: (num("rss_after_kb") - num("rss_before_kb")) * 1024.0 / n,
        lost_misses: num("lost_misses") as u64,
        lag_misses: num("lag_misses") as u64,
        spawn_ms: num("spawn_ms") as u64,
        driver_max_late_ms: num("driver_max_late_us") / 1e3,
        driver_late_beats: num("driver_late_beats") as u64,
        load1: kv.get("load1").unwrap_or(&"?").to_string(),
        cores: num("cpu_ns") / 1e9 / num("secs"),
    }
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// 1234567.8 -> "1,234,568"
pub(crate) fn thousands(x: f64) -> String {
    let digits = format!("{:.0}", x.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub(crate) fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

pub(crate) fn parent() {
    let n = agents_from_env();
    let runs = runs_from_env();
    let exe = std::env::current_exe().expect("current exe");
    let mut results: BTreeMap<Kind, Vec<RunResult>> = BTreeMap::new();
    for run in 1..=runs {
        for kind in Kind::ALL {
            let out = Command::new(&exe)
                .args(["--child", kind.key()])
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .output()
                .expect("run child");
            assert!(
                out.status.success(),
                "child {kind:?} failed: {}",
                out.status
            );
            let r = parse_result(kind, &String::from_utf8_lossy(&out.stdout));
            eprintln!(
                "run {run}/{runs} {}: {} beats/s, {:.4} µs CPU/beat, {:.0} B/agent, \
                 {} false misses ({} lost beats), spawn {} ms, paced driver max {:.1} ms late \
                 ({} beats > {} ms), throughput window used {:.2} CPUs, load {}",
                kind.key(),
                thousands(r.beats_per_sec),
                r.cpu_us_per_beat,
                r.rss_per_agent,
                r.false_misses(),
                r.lost_misses,
                r.spawn_ms,
                r.driver_max_late_ms,
                r.driver_late_beats,
                PACED_LEAD_NS / 1_000_000,
                r.cores,
                r.load1
            );
            results.entry(kind).or_default().push(r);
        }
    }

    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "## Timer mechanisms: {} agents, 1 s heartbeat, 1 s deadline",
        thousands(n as f64)
    );
    println!();
    println!("machine: nproc = {nproc}, model name = {}", cpu_model());
    println!(
        "runtime: tokio multi-thread, {WORKER_THREADS} worker threads, ractor 0.16.5, release; \
         {PRODUCERS} producer tasks; median of {runs} runs, each in a fresh process"
    );
    println!();
    println!(
        "| mechanism | beats/s | µs CPU per beat | RSS bytes per agent | false misses \
         (median / max) | of which lost beats (max) | paced driver max lateness, ms (median) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (kind, rs) in &results {
        let med = |f: fn(&RunResult) -> f64| median(rs.iter().map(f).collect());
        println!(
            "| {} | {} | {:.4} | {:.0} | {:.0} / {} | {} | {:.1} |",
            kind.title(),
            thousands(med(|r| r.beats_per_sec)),
            med(|r| r.cpu_us_per_beat),
            med(|r| r.rss_per_agent),
            med(|r| r.false_misses() as f64),
            rs.iter().map(|r| r.false_misses()).max().unwrap_or(0),
            rs.iter().map(|r| r.lost_misses).max().unwrap_or(0),
            med(|r| r.driver_max_late_ms),
        );
    }
    println!();
    println!(
        "per run (beats/s; µs CPU per beat; RSS bytes per agent; false misses; lost beats; \
         paced driver max lateness; CPUs used in the throughput window, {WORKER_THREADS} when \
         nothing else competes; 1-min load average at the end):"
    );
    for (kind, rs) in &results {
        let cells: Vec<String> = rs
            .iter()
            .map(|r| {
                format!(
                    "{}; {:.4}; {:.0}; {}; {}; {:.1} ms; {:.2} CPUs; load {}",
                    thousands(r.beats_per_sec),
                    r.cpu_us_per_beat,
                    r.rss_per_agent,
                    r.false_misses(),
                    r.lost_misses,
                    r.driver_max_late_ms,
                    r.cores,
                    r.load1
                )
            })
            .collect();
        println!("- {}: {}", kind.key(), cells.join(" | "));
    }
    println!();
    println!(
        "false misses: deadlines declared missed in the {MEASURED_ROUNDS} s measured window \
         (after {WARMUP_ROUNDS} s of warm-up) while every agent beat on schedule, once per {} \
         ms, spread evenly. lost beats: of those (and over the whole run), misses although the \
         beat had already been handed to the mechanism in time (a mechanism bug); the rest are \
         beats the paced driver, a task on the same runtime, could only deliver more than {} ms \
         late. paced driver max lateness: the latest any measured beat was delivered after its \
         slot, i.e. the scheduling lag the mechanism's load inflicts on other tasks.",
        PACED_PERIOD_NS / 1_000_000,
        PACED_LEAD_NS / 1_000_000
    );
}
