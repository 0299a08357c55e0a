//! `vigil bench cluster`: three `vigil serve` nodes on one SurrealDB server, beside one node on
//! embedded SurrealKV, in one run on one machine (`docs/cluster.md`).
//!
//! - **Throughput**: `--connections` per writer register agents, each as soon as its last
//!   registration is answered (one writer per node on the cluster; all three on the single
//!   node); durable events per second as one monitor receives them.
//! - **Delivery**: a paced stream of registrations on every node but the monitor's; each
//!   event's delay from its `at` (when its node decided it) to its arrival at the monitor, on
//!   the same machine's clock: the cross-node delay on the cluster.
//! - **Heartbeats** (`cluster_beats`, last, on the two nodes left after the failover): one
//!   `vigil simulate` per node beating its own agents, all at once (on the single node, two
//!   generators); heartbeats per second summed, and transitions of those agents while their
//!   generator beats them and its own record shows no late beat (must be 0: the bench fails
//!   otherwise, naming them).
//! - **Failover** (`cluster_failover`, cluster): node 1 killed while its agents beat; most
//!   reconnect to the survivors, the rest stay silent.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use serde_json::{json, Value};

use crate::tools::bench::cluster_beats::{self, Beats};
use crate::tools::bench::cluster_failover::{failover, Failover};
use crate::tools::bench::shared_log::start_server;
use crate::tools::bench::store::write_rows;
use crate::tools::bench::Quantiles;

/// `vigil bench cluster`'s options.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct ClusterBench {
    /// A `surreal` binary to start (in memory) for the cluster's store.
    #[arg(long, env = "VIGIL_SURREAL")]
    pub surreal: Option<PathBuf>,
    /// Registrations per node in the throughput phase.
    #[arg(long, default_value_t = 3000)]
    pub registrations: usize,
    /// Connections registering at once on each node in the throughput phase (each waits for
    /// its answer before the next registration, so more of them make larger group commits).
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// Events per second in the delivery phase (each writer).
    #[arg(long, default_value_t = 100)]
    pub rate: u32,
    /// Agents on node 1 in the failover phase.
    #[arg(long, default_value_t = 300)]
    pub agents: usize,
    /// Agents beating on each node in the heartbeat phase (one `vigil simulate` per node).
    #[arg(long, default_value_t = 2000)]
    pub beating: usize,
    /// Their heartbeat interval (each beats at three quarters of it). The generator beats
    /// none of its agents before it registered them all: longer than registering takes, or
    /// the first ones go quiet meanwhile (counted apart, as the ramp's transitions).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub beat_interval: Duration,
    /// The heartbeat phase's measured window (after a 2 s warm-up).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub beat_window: Duration,
    /// The nodes' lease.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// Write the figures as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// One setup's figures.
#[derive(Debug, Serialize)]
pub struct ClusterRow {
    /// `single (SurrealKV)` or `3 nodes (server)`.
    pub setup: String,
    /// Durable events per second, as one monitor receives them.
    pub events_per_sec: f64,
    /// Delay from an event's decision to its arrival at a monitor (on another node, for
    /// the cluster).
    pub delivery: Quantiles,
    /// Heartbeats on two nodes at once (on the single node, two generators).
    pub beats: Beats,
    /// Failover (cluster only).
    pub failover: Option<Failover>,
}

/// A `vigil serve` this command started, killed when dropped.
pub(super) struct Node {
    pub(super) child: Child,
    pub(super) agents: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `vigil serve` on `store`; its warnings and errors are passed on to this process's
/// stderr, prefixed with `name` (a node judged dead, or fenced, says so there).
fn start_node(name: &str, store: &str, env: &[(&str, String)]) -> anyhow::Result<Node> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(["serve", "--agent-listen", "127.0.0.1:0"])
        .args(["--http-listen", "127.0.0.1:0", "--store", store])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("RUST_LOG", "warn,vigil=info")
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .spawn()
        .context("starting vigil serve")?;
    let stderr = child.stderr.take().context("stderr is piped")?;
    let mut lines = BufReader::new(stderr).lines();
    let agents = loop {
        let line = lines
            .next()
            .context("vigil serve stopped before it was supervising")??;
        if line.contains("vigil is supervising") {
            let addr = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("agents="))
                .context("no agents= in the start line")?;
            break addr.to_string();
        }
    };
    // Keep reading, so the node never blocks on a full pipe.
    let name = name.to_string();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if line.contains(" WARN ") || line.contains(" ERROR ") {
                eprintln!("[{name}] {line}");
            }
        }
    });
    Ok(Node { child, agents })
}

/// A blocking NDJSON connection.
pub(super) struct Conn {
    pub(super) write: TcpStream,
    read: BufReader<TcpStream>,
}

impl Conn {
    pub(super) fn open(addr: &str, role: &str) -> anyhow::Result<Self> {
        let write = TcpStream::connect(addr)?;
        write.set_read_timeout(Some(Duration::from_secs(60)))?;
        let read = BufReader::new(write.try_clone()?);
        let mut c = Conn { write, read };
        c.send(&json!({"type": "hello", "protocol": 1, "role": role}))?;
        c.recv()?;
        Ok(c)
    }

    fn send(&mut self, v: &Value) -> anyhow::Result<()> {
        let mut line = v.to_string();
        line.push('\n');
        self.write.write_all(line.as_bytes())?;
        Ok(())
    }

    fn recv(&mut self) -> anyhow::Result<Value> {
        let mut line = String::new();
        anyhow::ensure!(self.read.read_line(&mut line)? > 0, "connection closed");
        Ok(serde_json::from_str(&line)?)
    }

    /// Registers `id` and waits for its answer.
    pub(super) fn register(
        &mut self,
        id: &str,
        interval_ms: u64,
        takeover: bool,
    ) -> anyhow::Result<()> {
        self.send(
            &json!({"type": "register", "id": id, "heartbeat_interval_ms": interval_ms,
            "takeover": takeover, "ref": id}),
        )?;
        loop {
            let f = self.recv()?;
            if f["ref"] == id {
                anyhow::ensure!(f["type"] == "registered", "{id}: {f}");
                return Ok(());
            }
        }
    }
}

/// A monitor on `addr` whose events (with when they arrived) come on the returned channel.
pub(super) fn monitor(addr: &str) -> anyhow::Result<mpsc::Receiver<(Instant, Value)>> {
    let mut c = Conn::open(addr, "monitor")?;
    c.send(&json!({"type": "subscribe", "snapshot": true}))?;
    while c.recv()?["type"] != "snapshot" {}
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        while let Ok(f) = c.recv() {
            if f["type"] == "event" && tx.send((Instant::now(), f)).is_err() {
                return;
            }
        }
    });
    Ok(rx)
}

/// Events from `rx` until `n` of them satisfy `want` (60 s at most).
pub(super) fn collect(
    rx: &mpsc::Receiver<(Instant, Value)>,
    n: usize,
    want: impl Fn(&Value) -> bool,
) -> anyhow::Result<Vec<(Instant, Value)>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut got, mut matched) = (Vec::new(), 0);
    while matched < n {
        let left = deadline.saturating_duration_since(Instant::now());
        let (at, e) = rx
            .recv_timeout(left)
            .with_context(|| format!("{matched} of {n} events within 60 s"))?;
        matched += usize::from(want(&e));
        got.push((at, e));
    }
    Ok(got)
}

/// The delay from an event's decision to its arrival (`recv`, on this machine's clock).
fn delay(recv: Instant, e: &Value) -> Option<Duration> {
    let at = chrono::DateTime::parse_from_rfc3339(e["at"].as_str()?).ok()?;
    let age = chrono::Utc::now().signed_duration_since(at).to_std().ok()?;
    Some(age.saturating_sub(recv.elapsed()))
}

/// Throughput and delivery on `writers` (one address each) seen by a monitor on `watch`.
fn throughput(
    args: &ClusterBench,
    tag: &str,
    writers: &[&str],
    watch: &str,
) -> anyhow::Result<(f64, Quantiles)> {
    let rx = monitor(watch)?;
    let start = Instant::now();
    let mut threads = Vec::new();
    let per = args.connections.max(1);
    let each = args.registrations.div_ceil(per);
    for (w, addr) in writers.iter().enumerate() {
        for c in 0..per {
            let (addr, tag) = (addr.to_string(), tag.to_string());
            threads.push(std::thread::spawn(move || -> anyhow::Result<()> {
                let mut conn = Conn::open(&addr, "agent")?;
                for i in 0..each {
                    conn.register(&format!("{tag}-t{w}-{c}-{i}"), 600_000, false)?;
                }
                Ok(())
            }));
        }
    }
    let total = writers.len() * per * each;
    collect(&rx, total, |e| e["event"] == "registered")?;
    let events_per_sec = total as f64 / start.elapsed().as_secs_f64();
    for t in threads {
        t.join()
            .map_err(|_| anyhow::anyhow!("a writer panicked"))??;
    }
    // Paced: `rate` registrations per second per writer, for three seconds.
    let per = Duration::from_secs_f64(1.0 / f64::from(args.rate.max(1)));
    let n = (3 * args.rate) as usize;
    let mut threads = Vec::new();
    for (w, addr) in writers.iter().enumerate() {
        let (addr, tag) = (addr.to_string(), tag.to_string());
        threads.push(std::thread::spawn(move || -> anyhow::Result<()> {
            let mut c = Conn::open(&addr, "agent")?;
            let t0 = Instant::now();
            for i in 0..n {
                std::thread::sleep((t0 + per * i as u32).saturating_duration_since(Instant::now()));
                c.register(&format!("{tag}-d{w}-{i}"), 600_000, false)?;
            }
            Ok(())
        }));
    }
    let got = collect(&rx, writers.len() * n, |e| e["event"] == "registered")?;
    for t in threads {
        t.join()
            .map_err(|_| anyhow::anyhow!("a writer panicked"))??;
    }
    let delays = got.iter().filter_map(|(at, e)| delay(*at, e)).collect();
    Ok((events_per_sec, Quantiles::of(delays)))
}

/// Runs `vigil bench cluster`.
pub fn run(args: ClusterBench) -> anyhow::Result<()> {
    let bin = args.surreal.clone().context(
        "bench cluster needs a `surreal` binary: --surreal or VIGIL_SURREAL \
         (scripts/surrealdb-server --path builds one)",
    )?;
    let mut rows = Vec::new();
    // One node on embedded SurrealKV.
    let dir = std::env::temp_dir().join(format!("vigil-bench-cluster-{}", std::process::id()));
    let single = start_node("single", &format!("surrealkv://{}", dir.display()), &[])?;
    let a = single.agents.as_str();
    let (events_per_sec, delivery) = throughput(&args, "s", &[a, a, a], a)?;
    let beats = cluster_beats::beats(&args, &[a, a], &monitor(a)?)?;
    rows.push(ClusterRow {
        setup: "single (SurrealKV)".into(),
        events_per_sec,
        delivery,
        beats,
        failover: None,
    });
    drop(single);
    let _ = std::fs::remove_dir_all(&dir);
    // Three nodes on one server.
    let (_server, url) = start_server(&bin)?;
    let lease = humantime::format_duration(args.lease).to_string();
    let mut nodes = Vec::new();
    for n in 1..=3 {
        let env = [
            ("VIGIL_CLUSTER__NODE_ID", format!("n{n}")),
            ("VIGIL_CLUSTER__LEASE", lease.clone()),
        ];
        nodes.push(start_node(&format!("n{n}"), &url, &env)?);
    }
    let (n1, n2, n3) = (
        nodes[0].agents.clone(),
        nodes[1].agents.clone(),
        nodes[2].agents.clone(),
    );
    let (events_per_sec, _) = throughput(&args, "c", &[&n1, &n2, &n3], &n2)?;
    // Delivery across nodes: writers on n1 and n3, the monitor on n2.
    let (_, delivery) = throughput(
        &ClusterBench {
            registrations: 1,
            connections: 1,
            ..args.clone()
        },
        "x",
        &[&n1, &n3],
        &n2,
    )?;
    let failover = failover(&args, &mut nodes)?;
    // Last: the agents it beats go quiet after it. On the two survivors.
    let beats = cluster_beats::beats(&args, &[&n2, &n3], &monitor(&n2)?)?;
    rows.push(ClusterRow {
        setup: "3 nodes (server)".into(),
        events_per_sec,
        delivery,
        beats,
        failover: Some(failover),
    });
    println!("| setup | durable events/s | delivery p50 / p99 / max ms | heartbeats/s (agents) | false transitions (ramp; sender late) |");
    println!("| --- | --- | --- | --- | --- |");
    for r in &rows {
        println!(
            "| {} | {:.0} | {:.1} / {:.1} / {:.1} | {:.0} ({} × {}) | {} ({}; {}) |",
            r.setup,
            r.events_per_sec,
            r.delivery.p50_ms,
            r.delivery.p99_ms,
            r.delivery.max_ms,
            r.beats.heartbeats_per_sec,
            r.beats.nodes,
            r.beats.agents_per_node,
            r.beats.false_transitions,
            r.beats.ramp_transitions,
            r.beats.sender_late
        );
    }
    if let Some(f) = rows.iter().find_map(|r| r.failover.as_ref()) {
        println!();
        println!("| agents | heartbeats/s | reconnected ms | adopted ms | transitions of reconnected | silent offline once |");
        println!("| --- | --- | --- | --- | --- | --- |");
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {} | {} of {} |",
            f.agents,
            f.heartbeats_per_sec,
            f.reconnected_ms,
            f.adopted_ms,
            f.transitions_of_reconnected,
            f.silent_offline_once,
            f.silent
        );
    }
    write_rows(&args.json, &rows)?;
    let lines = |events: &[Value]| {
        let lines: Vec<String> = events.iter().map(Value::to_string).collect();
        lines.join("\n")
    };
    for r in &rows {
        anyhow::ensure!(
            r.beats.false_transitions == 0,
            "{}: {} false transitions of agents beating on time; the first ones:\n{}",
            r.setup,
            r.beats.false_transitions,
            lines(&r.beats.false_examples)
        );
    }
    if let Some(f) = rows.iter().find_map(|r| r.failover.as_ref()) {
        anyhow::ensure!(
            f.transitions_of_reconnected == 0 && f.silent_offline_once == f.silent,
            "failover invariant broken: {} transitions of reconnected agents, {} of {} silent \
             agents offline exactly once; the transitions and adoptions:\n{}",
            f.transitions_of_reconnected,
            f.silent_offline_once,
            f.silent,
            lines(&f.reconnected_events)
        );
    }
    Ok(())
}
