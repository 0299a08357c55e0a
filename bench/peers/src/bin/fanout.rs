//! `vigil-peers-fanout`: the workload of `vigil bench fanout` (a server making E events per
//! second; M monitors, each on a connection of its own and following one of K kinds; the delay
//! from each event to each monitor receiving it) against a peer that a user could pick for
//! "publish events, let many watchers follow the ones they care about":
//!
//! - **Redis pub/sub**: subscriber `i` holds its own connection with `SUBSCRIBE k<i mod K>`;
//!   one publisher connection sends each 1 ms tick's events as one pipeline of `PUBLISH`.
//! - **NATS** (core, no JetStream): subscriber `i` is a client of its own subscribed to the
//!   subject `k<i mod K>`; one publisher client publishes each tick's events and flushes once.
//!
//! The events go round robin over the K channels, so each subscriber gets E / K per second and
//! the server delivers E × M / K per second; `--channels 1` makes every subscriber take every
//! event (the firehose row). Each event is JSON with its channel's sequence number and the
//! publish wall time in µs, padded to about the size of a vigil event frame; each subscriber
//! parses it (as vigil's monitors parse a frame's head), records the delay (its wall clock at
//! receipt minus the stamp) while the window is measured, and checks that its channel's
//! sequence has no gap (a gap is a message the peer dropped: the run fails). Publisher and
//! subscribers share this one process (a tokio runtime with 2 workers, as vigil's monitors'
//! process has), so the server's CPU, read from `/proc/<pid>/stat`, is the peer's alone.
//!
//! Against vigil's figures: vigil's "server" also makes the events (its runtime's transitions,
//! by default with a durable write before publication), while a peer's server only routes what
//! the publisher hands it; the publisher's CPU counts here in the client process. Neither
//! Redis pub/sub nor core NATS keeps a message once it has been delivered (nothing durable).
//! vigil stamps an event with millisecond precision (its delays are over-stated by up to
//! 1 ms); the peers' stamps are in µs.

// The modules sit in `fanout/` beside this file (a binary's root in src/bin/ looks for them in
// src/bin/ itself otherwise).
#[path = "fanout/common.rs"]
mod common;
#[path = "../measure.rs"]
mod measure;
#[path = "fanout/nats_peer.rs"]
mod nats_peer;
#[path = "fanout/redis_peer.rs"]
mod redis_peer;

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, ValueEnum};
use futures::StreamExt;
use serde::Serialize;
use tokio::task::JoinSet;

use common::{publish, Ctx, Seen, Sink};
use measure::{cpu_of, Machine, Quantiles};

/// The allocator of vigil's monitors' process (the `vigil` binary).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long connecting and subscribing every subscriber may take.
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(120);
/// How long the tasks may take to hand in what they saw once told to stop.
const STOP_WAIT: Duration = Duration::from_secs(60);
/// Subscribers connecting at once (a burst of a thousand connects would only queue up).
const CONNECT_AT_ONCE: usize = 32;

#[derive(Debug, Clone, Copy, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum System {
    Redis,
    Nats,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Redis => "Redis",
            System::Nats => "NATS",
        }
    }
}

#[derive(Debug, Clone, Parser, Serialize)]
#[command(
    name = "vigil-peers-fanout",
    about = "vigil's fan-out workload against Redis pub/sub or NATS"
)]
struct Args {
    #[arg(value_enum)]
    system: System,
    /// Redis: `redis://127.0.0.1:63790/`; NATS: `127.0.0.1:14222`.
    #[arg(long)]
    endpoint: String,
    /// The peer's server process, for its CPU time.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Subscribers, each on a connection of its own (vigil: `--monitors`).
    #[arg(long, default_value_t = 1_000)]
    subscribers: usize,
    /// Channels; subscriber `i` follows `k{i mod channels}` (vigil: `--kinds`).
    #[arg(long, default_value_t = 100)]
    channels: usize,
    /// Events published per second, over all channels (vigil: `--rate`).
    #[arg(long, default_value_t = 10_000)]
    rate: u32,
    /// Size of each event's JSON (padded), about that of a vigil event frame.
    #[arg(long, default_value_t = 330)]
    payload_bytes: usize,
    /// Time before the measuring starts.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    #[serde(with = "measure::secs")]
    warmup: Duration,
    /// Time measured.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    #[serde(with = "measure::secs")]
    measure: Duration,
    /// Write the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// What a run measured, as its JSON records it.
#[derive(Debug, Serialize)]
struct Report {
    machine: Machine,
    system: System,
    command: String,
    params: Args,
    /// Time to connect and subscribe every subscriber.
    subscribe_secs: f64,
    /// Events the peer took from the publisher per second in the window.
    published_per_sec: f64,
    /// Events delivered to subscribers per second in the window (offered: the published rate
    /// × subscribers / channels).
    deliveries_per_sec: f64,
    /// The delay from each event's publication to each subscriber receiving it.
    delivered: Quantiles,
    /// Jumps in a channel's sequence, over all subscribers (the run fails unless 0).
    gaps: u64,
    /// Messages those jumps skipped.
    dropped: u64,
    /// Messages that were not one of this run's events (the run fails unless 0).
    unreadable: u64,
    /// Fewest events one subscriber received in the window (the run fails if 0).
    min_per_subscriber: u64,
    /// The peer's server process's CPU over the window, as a share of one core.
    server_cpu_share_of_one_core: Option<f64>,
    /// The server's CPU time per delivery, µs.
    server_cpu_us_per_delivery: Option<f64>,
    /// This process's CPU over the window (the publisher and every subscriber).
    client_cpu_share_of_one_core: f64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.subscribers >= 1 && args.channels >= 1 && args.rate >= 1,
        "--subscribers, --channels and --rate must be at least 1"
    );
    if let Some(pid) = args.server_pid {
        anyhow::ensure!(
            cpu_of(&pid.to_string()).is_some(),
            "--server-pid {pid}: cannot read /proc/{pid}/stat"
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let report = rt.block_on(run(args.clone()))?;
    print_summary(&report);
    if let Some(p) = &args.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))?;
    }
    let peer = report.system.name();
    anyhow::ensure!(
        report.gaps == 0,
        "{peer} dropped messages: {} gaps in the subscribers' streams, {} messages missing",
        report.gaps,
        report.dropped
    );
    anyhow::ensure!(
        report.unreadable == 0,
        "{} messages were not events of this run (is something else publishing on {}?)",
        report.unreadable,
        args.endpoint
    );
    anyhow::ensure!(
        report.delivered.n > 0,
        "no event was delivered in the window"
    );
    anyhow::ensure!(
        report.min_per_subscriber > 0,
        "a subscriber received nothing in the window"
    );
    Ok(())
}

async fn run(args: Args) -> anyhow::Result<Report> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let ctx = Ctx {
        recording: Arc::new(AtomicBool::new(false)),
        stop: stop_rx.clone(),
    };
    let published = Arc::new(AtomicU64::new(0));
    let (n, k) = (args.subscribers, args.channels);
    let mut tasks = JoinSet::new();

    // Every subscriber subscribed first, then the publisher starts: each stream must begin at
    // seq 1.
    let t_sub = Instant::now();
    let start = async {
        anyhow::Ok(match args.system {
            System::Redis => {
                let client = redis::Client::open(args.endpoint.as_str())
                    .with_context(|| format!("--endpoint {}", args.endpoint))?;
                let subscribe = |i| redis_peer::subscriber(client.clone(), i, k, ctx.clone());
                subscribe_all(n, subscribe, &mut tasks).await?;
                spawn_publisher(
                    redis_peer::Publisher::connect(&client).await?,
                    &args,
                    published.clone(),
                    stop_rx.clone(),
                )
            }
            System::Nats => {
                let subscribe = |i| nats_peer::subscriber(args.endpoint.clone(), i, k, ctx.clone());
                subscribe_all(n, subscribe, &mut tasks).await?;
                spawn_publisher(
                    nats_peer::Publisher::connect(&args.endpoint).await?,
                    &args,
                    published.clone(),
                    stop_rx.clone(),
                )
            }
        })
    };
    let publisher = tokio::time::timeout(SUBSCRIBE_WAIT, start)
        .await
        .with_context(|| {
            format!("the subscribers did not subscribe within {SUBSCRIBE_WAIT:?}")
        })??;
    let subscribe_secs = t_sub.elapsed().as_secs_f64();
    tokio::time::sleep(args.warmup).await;

    // The measured window.
    let pid = args.server_pid.map(|p| p.to_string());
    let server0 = pid.as_deref().and_then(cpu_of);
    let me0 = cpu_of("self").unwrap_or_default();
    let p0 = published.load(Ordering::Relaxed);
    ctx.recording.store(true, Ordering::Relaxed);
    let w0 = Instant::now();
    tokio::time::sleep(args.measure).await;
    ctx.recording.store(false, Ordering::Relaxed);
    let window = w0.elapsed().as_secs_f64();
    let p1 = published.load(Ordering::Relaxed);
    let server1 = pid.as_deref().and_then(cpu_of);
    let me1 = cpu_of("self").unwrap_or_default();

    // Every task hands in what it saw; one that failed fails the run.
    let _ = stop_tx.send(true);
    let mut late = Vec::new();
    let (mut gaps, mut dropped, mut unreadable, mut min_per_subscriber) = (0, 0, 0, u64::MAX);
    let collect = async {
        while let Some(done) = tasks.join_next().await {
            let seen: Seen = done.context("a subscriber's task panicked")??;
            gaps += seen.gaps;
            dropped += seen.dropped;
            unreadable += seen.unreadable;
            min_per_subscriber = min_per_subscriber.min(seen.late_us.len() as u64);
            late.extend(seen.late_us);
        }
        publisher.await.context("the publisher's task panicked")?
    };
    tokio::time::timeout(STOP_WAIT, collect)
        .await
        .with_context(|| format!("the tasks did not stop within {STOP_WAIT:?}"))??;

    let delivered = Quantiles::of(late, |us| us as f64 / 1e3);
    let server_cpu = match (server0, server1) {
        (Some(a), Some(b)) => Some((b - a).as_secs_f64() / window),
        _ => None,
    };
    Ok(Report {
        machine: Machine::read(),
        system: args.system,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        subscribe_secs,
        published_per_sec: (p1 - p0) as f64 / window,
        deliveries_per_sec: delivered.n as f64 / window,
        server_cpu_us_per_delivery: server_cpu
            .map(|c| c * window * 1e6 / delivered.n.max(1) as f64),
        delivered,
        gaps,
        dropped,
        unreadable,
        min_per_subscriber,
        server_cpu_share_of_one_core: server_cpu,
        client_cpu_share_of_one_core: (me1 - me0).as_secs_f64() / window,
        params: args,
    })
}

/// Starts the publisher (see [`publish`]) on its own task.
fn spawn_publisher(
    sink: impl Sink + 'static,
    args: &Args,
    published: Arc<AtomicU64>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    tokio::spawn(publish(
        sink,
        args.rate,
        args.channels,
        args.payload_bytes,
        published,
        stop,
    ))
}

/// Subscribes subscribers `0..n`, [`CONNECT_AT_ONCE`] at a time, and spawns each one's
/// receiving task into `tasks` once its subscription is in place.
async fn subscribe_all<F, Sub, Recv>(
    n: usize,
    subscribe: F,
    tasks: &mut JoinSet<anyhow::Result<Seen>>,
) -> anyhow::Result<()>
where
    F: Fn(usize) -> Sub,
    Sub: Future<Output = anyhow::Result<Recv>>,
    Recv: Future<Output = anyhow::Result<Seen>> + Send + 'static,
{
    let mut pending = futures::stream::iter(0..n)
        .map(subscribe)
        .buffer_unordered(CONNECT_AT_ONCE);
    while let Some(receive) = pending.next().await {
        tasks.spawn(receive?);
    }
    Ok(())
}

fn print_summary(r: &Report) {
    let p = &r.params;
    println!(
        "{} fan-out: {} subscribers, channels: {}, {} events/s offered, {} bytes each",
        r.system.name(),
        p.subscribers,
        p.channels,
        p.rate,
        p.payload_bytes
    );
    println!("  published/s               {:>12.0}", r.published_per_sec);
    println!("  deliveries/s              {:>12.0}", r.deliveries_per_sec);
    println!(
        "  delivered p50/p99/max     {:>8.2} / {:.2} / {:.2} ms  (n = {})",
        r.delivered.p50_ms, r.delivered.p99_ms, r.delivered.max_ms, r.delivered.n
    );
    println!(
        "  gaps / dropped            {:>12} / {}  (min per subscriber {})",
        r.gaps, r.dropped, r.min_per_subscriber
    );
    let server = r
        .server_cpu_share_of_one_core
        .zip(r.server_cpu_us_per_delivery);
    println!(
        "  CPU (one core = 100%)     server {}, this process {:.0}%",
        server.map_or("?".into(), |(c, us)| format!(
            "{:.0}% ({us:.2} µs per delivery)",
            c * 100.0
        )),
        r.client_cpu_share_of_one_core * 100.0
    );
}
