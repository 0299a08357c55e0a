//! `vigil-peers`: the workload of `vigil bench ingest` (N agents refreshing every interval ×
//! beat_ratio over C connections; after a warm-up, a share of them stop, 2 s into the measured
//! window) against a peer that a user could pick for "register with a TTL, keep alive, get
//! told when it expires":
//!
//! - **etcd**: one lease per agent (TTL = the interval, whole seconds) holding the key
//!   `/vigil-bench/<i>`; each agent keeps its lease alive on its own LeaseKeepAlive stream; one
//!   watch on the prefix sees the key deleted when the lease expires.
//! - **Redis**: each agent's key `vb:<i>` is refreshed with `SET key 1 PX ttl` (pipelined per
//!   connection per tick, as vigil's generator writes a connection's due beats together); one
//!   subscriber on `__keyevent@0__:expired` sees it expire.
//!
//! Figures: refreshes acknowledged per second in the measured window, the CPU of the peer's
//! server (from `/proc/<pid>/stat`) and of this generator, and for each stopped agent the delay
//! from its true deadline (its last acknowledged refresh + TTL) to the expiry notification.
//! An expiry of an agent that kept refreshing is spurious. The last acknowledgement is taken
//! when the reply arrives here, a little after the server applied it, so the lateness measured
//! for a peer is, if anything, slightly too small.

mod measure;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, ValueEnum};
use futures::StreamExt;
use measure::{cpu_of, Machine, Quantiles};
use serde::Serialize;

#[derive(Debug, Clone, Copy, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum System {
    Etcd,
    Redis,
}

#[derive(Debug, Clone, Parser, Serialize)]
struct Args {
    #[arg(value_enum)]
    system: System,
    /// etcd: `127.0.0.1:2379`; Redis: `redis://127.0.0.1:6379/`.
    #[arg(long)]
    endpoint: String,
    /// The peer's server process, for its CPU time.
    #[arg(long)]
    server_pid: Option<u32>,
    #[arg(long, default_value_t = 10_000)]
    agents: usize,
    #[arg(long, default_value_t = 100)]
    connections: usize,
    /// TTL of each key or lease (etcd: whole seconds).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    #[serde(with = "measure::secs")]
    interval: Duration,
    /// Refresh every interval × this.
    #[arg(long, default_value_t = 0.8)]
    beat_ratio: f64,
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    #[serde(with = "measure::secs")]
    warmup: Duration,
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    #[serde(with = "measure::secs")]
    measure: Duration,
    /// Share of agents that stop, 2 s into the measured window.
    #[arg(long, default_value_t = 0.01)]
    stop_share: f64,
    /// After the window, how long to wait for the stopped agents' expiries (default: 3 TTLs).
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(with = "opt_secs")]
    expiry_wait: Option<Duration>,
    /// Redis: refreshes due within one tick go out in one pipeline per connection.
    #[arg(long, default_value = "50ms", value_parser = humantime::parse_duration)]
    #[serde(with = "measure::secs")]
    tick: Duration,
    #[arg(long)]
    json: Option<PathBuf>,
}

mod opt_secs {
    pub fn serialize<S: serde::Serializer>(
        d: &Option<std::time::Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_f64(d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }
}

#[derive(Debug, Serialize)]
struct Report {
    machine: Machine,
    system: System,
    command: String,
    params: Args,
    register_secs: f64,
    /// Refreshes offered per second (agents / (interval × beat_ratio)).
    offered_per_sec: f64,
    /// Refreshes acknowledged per second in the measured window.
    refreshes_per_sec: f64,
    server_cpu_share_of_one_core: Option<f64>,
    generator_cpu_share_of_one_core: f64,
    server_cpu_us_per_refresh: Option<f64>,
    errors: u64,
    stopped: usize,
    /// From each stopped agent's deadline to its expiry notification.
    expired_late: Quantiles,
    /// Stopped agents never notified (within `expiry_wait` after the window).
    missing: usize,
    /// Expiry notifications of agents that kept refreshing.
    spurious: usize,
}

/// What the agents' tasks share.
struct Shared {
    t0: Instant,
    /// Per agent: its last acknowledged refresh, µs after `t0`.
    last_ack: Vec<AtomicU64>,
    stop: Vec<AtomicBool>,
    acks: AtomicU64,
    errors: AtomicU64,
    /// Expiry notifications: agent, when.
    expired: Mutex<Vec<(usize, Instant)>>,
}

impl Shared {
    fn ack(&self, i: usize) {
        let us = self.t0.elapsed().as_micros() as u64;
        self.last_ack[i].store(us, Ordering::Relaxed);
        self.acks.fetch_add(1, Ordering::Relaxed);
    }
}

/// The agents that stop: every k-th, as `vigil simulate` picks them.
fn picked(i: usize, share: f64) -> bool {
    share > 0.0 && (i as f64 * share).floor() != ((i + 1) as f64 * share).floor()
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let report = rt.block_on(run(args.clone()))?;
    eprintln!(
        "{:?}: {:.0} refreshes/s acknowledged of {:.0} offered; server CPU {}; generator CPU {:.0}%; \
         expiry late p50 {:.1} ms p99 {:.1} ms max {:.1} ms ({} of {}); spurious {}; errors {}",
        report.system,
        report.refreshes_per_sec,
        report.offered_per_sec,
        report
            .server_cpu_share_of_one_core
            .map_or("?".into(), |c| format!("{:.0}%", c * 100.0)),
        report.generator_cpu_share_of_one_core * 100.0,
        report.expired_late.p50_ms,
        report.expired_late.p99_ms,
        report.expired_late.max_ms,
        report.expired_late.n,
        report.stopped,
        report.spurious,
        report.errors
    );
    let text = serde_json::to_string_pretty(&report)?;
    match &args.json {
        Some(p) => std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))?,
        None => println!("{text}"),
    }
    Ok(())
}

async fn run(args: Args) -> anyhow::Result<Report> {
    let n = args.agents;
    let shared = Arc::new(Shared {
        t0: Instant::now(),
        last_ack: (0..n).map(|_| AtomicU64::new(0)).collect(),
        stop: (0..n).map(|_| AtomicBool::new(false)).collect(),
        acks: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        expired: Mutex::new(Vec::new()),
    });
    let period = args.interval.mul_f64(args.beat_ratio);
    let t_reg = Instant::now();
    match args.system {
        System::Etcd => etcd::start(&args, shared.clone(), period).await?,
        System::Redis => redis_peer::start(&args, shared.clone(), period).await?,
    };
    let register_secs = t_reg.elapsed().as_secs_f64();
    tokio::time::sleep(args.warmup).await;

    // The measured window.
    let pid = args.server_pid.map(|p| p.to_string());
    let server0 = pid.as_deref().and_then(cpu_of);
    let me0 = cpu_of("self").unwrap_or_default();
    let (acks0, w0) = (shared.acks.load(Ordering::Relaxed), Instant::now());
    tokio::time::sleep(Duration::from_secs(2).min(args.measure)).await;
    let stopped: Vec<usize> = (0..n).filter(|i| picked(*i, args.stop_share)).collect();
    for &i in &stopped {
        shared.stop[i].store(true, Ordering::SeqCst);
    }
    tokio::time::sleep(args.measure.saturating_sub(Duration::from_secs(2))).await;
    let window = w0.elapsed();
    let acks = shared.acks.load(Ordering::Relaxed) - acks0;
    let server1 = pid.as_deref().and_then(cpu_of);
    let me1 = cpu_of("self").unwrap_or_default();

    // Wait for the stopped agents' expiries.
    let deadline = Instant::now() + args.expiry_wait.unwrap_or(args.interval * 3);
    loop {
        let seen: std::collections::HashSet<usize> = shared
            .expired
            .lock()
            .unwrap()
            .iter()
            .map(|(i, _)| *i)
            .collect();
        if stopped.iter().all(|i| seen.contains(i)) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let expired = shared.expired.lock().unwrap().clone();
    let mut first: HashMap<usize, Instant> = HashMap::new();
    for (i, at) in &expired {
        first.entry(*i).or_insert(*at);
    }
    let is_stopped: std::collections::HashSet<usize> = stopped.iter().copied().collect();
    let spurious = first.keys().filter(|i| !is_stopped.contains(i)).count();
    let mut late = Vec::new();
    let mut missing = 0;
    for &i in &stopped {
        let last = shared.t0 + Duration::from_micros(shared.last_ack[i].load(Ordering::Relaxed));
        match first.get(&i) {
            Some(at) => late.push(at.saturating_duration_since(last + args.interval)),
            None => missing += 1,
        }
    }
    let secs = window.as_secs_f64();
    let server_cpu = match (server0, server1) {
        (Some(a), Some(b)) => Some((b - a).as_secs_f64() / secs),
        _ => None,
    };
    Ok(Report {
        machine: Machine::read(),
        system: args.system,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        register_secs,
        offered_per_sec: n as f64 / period.as_secs_f64(),
        refreshes_per_sec: acks as f64 / secs,
        server_cpu_share_of_one_core: server_cpu,
        generator_cpu_share_of_one_core: (me1 - me0).as_secs_f64() / secs,
        server_cpu_us_per_refresh: server_cpu.map(|c| c * secs * 1e6 / acks.max(1) as f64),
        errors: shared.errors.load(Ordering::Relaxed),
        stopped: stopped.len(),
        expired_late: Quantiles::of(late, |d| d.as_secs_f64() * 1e3),
        missing,
        spurious,
        params: args,
    })
}

/// Each agent's first refresh is spread over one period, so the load is even.
fn offset(i: usize, n: usize, period: Duration) -> Duration {
    period.mul_f64(i as f64 / n.max(1) as f64)
}

mod etcd {
    use super::*;
    use etcd_client::{Client, EventType, PutOptions, WatchOptions};

    const PREFIX: &str = "/vigil-bench/";

    pub async fn start(args: &Args, shared: Arc<Shared>, period: Duration) -> anyhow::Result<()> {
        let ttl = args.interval.as_secs().max(1) as i64;
        let mut clients = Vec::new();
        for _ in 0..args.connections.max(1) {
            clients.push(
                Client::connect([args.endpoint.as_str()], None)
                    .await
                    .with_context(|| format!("connecting to etcd at {}", args.endpoint))?,
            );
        }
        // Leftovers of an earlier run would be watched as expiries.
        clients[0]
            .delete(
                PREFIX,
                Some(etcd_client::DeleteOptions::new().with_prefix()),
            )
            .await?;
        // The watch first, so no expiry is missed.
        let (_watcher, mut stream) = clients[0]
            .watch(PREFIX, Some(WatchOptions::new().with_prefix()))
            .await?;
        let sh = shared.clone();
        tokio::spawn(async move {
            let _watcher = _watcher;
            while let Ok(Some(resp)) = stream.message().await {
                let now = Instant::now();
                for e in resp.events() {
                    if e.event_type() != EventType::Delete {
                        continue;
                    }
                    let i = e
                        .kv()
                        .and_then(|kv| kv.key_str().ok())
                        .and_then(|k| k.strip_prefix(PREFIX))
                        .and_then(|k| k.parse::<usize>().ok());
                    if let Some(i) = i {
                        sh.expired.lock().unwrap().push((i, now));
                    }
                }
            }
        });
        // Grant and put, C at a time; each agent keeps its lease alive on its own stream from
        // the moment it is granted (the grant counts as its first refresh).
        let n = args.agents;
        let c = clients.len();
        let mut joins = Vec::new();
        for (k, client) in clients.into_iter().enumerate() {
            let sh = shared.clone();
            joins.push(tokio::spawn(async move {
                let mut client = client;
                for i in (k..n).step_by(c) {
                    let lease = client.lease_grant(ttl, None).await?.id();
                    let opts = PutOptions::new().with_lease(lease);
                    client.put(format!("{PREFIX}{i}"), "1", Some(opts)).await?;
                    sh.ack(i);
                    tokio::spawn(keep(client.clone(), lease, i, sh.clone(), period));
                }
                anyhow::Ok(())
            }));
        }
        for j in joins {
            j.await??;
        }
        Ok(())
    }

    async fn keep(mut client: Client, lease: i64, i: usize, sh: Arc<Shared>, period: Duration) {
        let Ok((mut keeper, mut responses)) = client.lease_keep_alive(lease).await else {
            sh.errors.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let mut next = tokio::time::Instant::now() + period;
        loop {
            tokio::time::sleep_until(next).await;
            next += period;
            if sh.stop[i].load(Ordering::Relaxed) {
                return;
            }
            if keeper.keep_alive().await.is_err() {
                sh.errors.fetch_add(1, Ordering::Relaxed);
                return;
            }
            match responses.message().await {
                Ok(Some(r)) if r.ttl() > 0 => sh.ack(i),
                _ => {
                    // The lease is gone (it expired before this refresh arrived) or the
                    // stream broke: the agent is lost, as a real one would be.
                    sh.errors.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
    }
}

mod redis_peer {
    use super::*;

    pub async fn start(args: &Args, shared: Arc<Shared>, period: Duration) -> anyhow::Result<()> {
        let client = redis::Client::open(args.endpoint.as_str())?;
        let mut admin = client.get_multiplexed_async_connection().await?;
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("notify-keyspace-events")
            .arg("Ex")
            .query_async(&mut admin)
            .await?;
        let _: () = redis::cmd("FLUSHDB").query_async(&mut admin).await?;
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe("__keyevent@0__:expired").await?;
        let sh = shared.clone();
        tokio::spawn(async move {
            let mut messages = pubsub.on_message();
            while let Some(m) = messages.next().await {
                let now = Instant::now();
                let key: String = match m.get_payload() {
                    Ok(k) => k,
                    Err(_) => continue,
                };
                if let Some(i) = key
                    .strip_prefix("vb:")
                    .and_then(|k| k.parse::<usize>().ok())
                {
                    sh.expired.lock().unwrap().push((i, now));
                }
            }
        });
        let ttl_ms = args.interval.as_millis() as u64;
        let n = args.agents;
        let c = args.connections.max(1);
        let tick = args.tick;
        let t_start = Instant::now();
        for k in 0..c {
            let mut con = client.get_multiplexed_async_connection().await?;
            let sh = shared.clone();
            let mine: Vec<usize> = (k..n).step_by(c).collect();
            tokio::spawn(async move {
                // Each agent's next refresh; those due within a tick go in one pipeline.
                let mut due: Vec<(Instant, usize)> = mine
                    .iter()
                    .map(|&i| (t_start + offset(i, n, period), i))
                    .collect();
                let mut tick = tokio::time::interval(tick);
                loop {
                    tick.tick().await;
                    let now = Instant::now();
                    let mut pipe = redis::pipe();
                    let mut sent = Vec::new();
                    for (at, i) in due.iter_mut() {
                        if *at > now || sh.stop[*i].load(Ordering::Relaxed) {
                            continue;
                        }
                        pipe.cmd("SET")
                            .arg(format!("vb:{i}"))
                            .arg(1)
                            .arg("PX")
                            .arg(ttl_ms)
                            .ignore();
                        sent.push(*i);
                        *at += period;
                    }
                    if sent.is_empty() {
                        continue;
                    }
                    match pipe.query_async::<()>(&mut con).await {
                        Ok(()) => sent.iter().for_each(|i| sh.ack(*i)),
                        Err(_) => {
                            sh.errors.fetch_add(sent.len() as u64, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
        Ok(())
    }
}
