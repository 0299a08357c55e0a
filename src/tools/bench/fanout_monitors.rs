//! The monitors' side of `vigil bench fanout` (`vigil bench fanout-monitors`, a child process
//! of it): TCP and WebSocket monitors that time each event they receive.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::fanout::MonitorsReport;
use crate::tools::bench::{cpu_time, runtime, Quantiles};

/// The monitors' side (`vigil bench fanout-monitors`, run by `vigil bench fanout`).
#[derive(Debug, Clone, clap::Args)]
pub struct FanoutMonitors {
    /// The TCP listener's address.
    #[arg(long)]
    pub tcp: String,
    /// The HTTP listener's address (for `/ws`).
    #[arg(long)]
    pub ws: String,
    /// Monitors to run.
    #[arg(long)]
    pub monitors: usize,
    /// Share of them on WebSocket.
    #[arg(long)]
    pub ws_share: f64,
    /// Agent kinds; monitor `i` follows kind `k{i mod kinds}`.
    #[arg(long)]
    pub kinds: usize,
    /// Monitors that take every event.
    #[arg(long)]
    pub firehose: usize,
}

/// What one monitor saw in the window.
#[derive(Default)]
struct Seen {
    late_us: Vec<u32>,
    lagged: u64,
    gaps: u64,
}

/// The fields of a frame the monitors look at.
#[derive(Deserialize)]
struct FrameHead<'a> {
    #[serde(rename = "type")]
    ty: &'a str,
    seq: Option<u64>,
    at: Option<&'a str>,
}

/// Runs the monitors: prints `ready` once all are subscribed, measures from `start` on stdin,
/// then prints their report as one JSON line.
pub fn run_monitors(args: FanoutMonitors) -> anyhow::Result<()> {
    runtime(Some(2))?.block_on(monitors(args))
}

async fn monitors(args: FanoutMonitors) -> anyhow::Result<()> {
    let recording = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let ws_count = (args.monitors as f64 * args.ws_share).round() as usize;
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(args.monitors.max(1));
    for i in 0..args.monitors {
        // The full streams take every event (alerts take seqs too), so a gap is a real one.
        let subscribe = match i < args.firehose {
            true => json!({"type":"subscribe","ref":1}),
            false => json!({"type":"subscribe","topics":["agents"],
                "filter":{"kinds": [format!("k{}", i % args.kinds)]},"ref":1}),
        }
        .to_string();
        let w = Watcher {
            subscribe,
            full: i < args.firehose,
            recording: recording.clone(),
            stop: stop_rx.clone(),
            ready: ready_tx.clone(),
        };
        // Spread the WebSocket ones evenly among the others.
        let m = args.monitors.max(1);
        if i * ws_count / m != (i + 1) * ws_count / m {
            tasks.spawn(ws_monitor(format!("ws://{}/ws", args.ws), w));
        } else {
            tasks.spawn(tcp_monitor(args.tcp.clone(), w));
        }
    }
    drop(ready_tx);
    // Every monitor subscribed, or the first one to end (before the stop, an error) says why.
    let mut subscribed = 0;
    while subscribed < args.monitors {
        tokio::select! {
            Some(()) = ready_rx.recv() => subscribed += 1,
            Some(done) = tasks.join_next() => {
                done??;
                anyhow::bail!("a monitor ended before subscribing");
            }
        }
    }
    println!("ready");
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    while let Some(l) = stdin.next_line().await? {
        if l == "start" {
            break;
        }
    }
    recording.store(true, Ordering::Relaxed);
    let (c0, m0) = (cpu_time(), std::time::Instant::now());
    while let Some(l) = stdin.next_line().await? {
        if l == "stop" {
            break;
        }
    }
    recording.store(false, Ordering::Relaxed);
    let cpu = cpu_time().saturating_sub(c0).as_secs_f64() / m0.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    let mut late = Vec::new();
    let (mut lagged, mut gaps, mut min_per_monitor) = (0, 0, u64::MAX);
    while let Some(done) = tasks.join_next().await {
        let seen = done??;
        lagged += seen.lagged;
        gaps += seen.gaps;
        min_per_monitor = min_per_monitor.min(seen.late_us.len() as u64);
        late.extend(seen.late_us);
    }
    let q = Quantiles::of(
        late.iter()
            .map(|us| Duration::from_micros(*us as u64))
            .collect(),
    );
    let report = MonitorsReport {
        events: late.len() as u64,
        p50_ms: q.p50_ms,
        p99_ms: q.p99_ms,
        max_ms: q.max_ms,
        lagged,
        gaps,
        min_per_monitor,
        cpu_share_of_one_core: cpu,
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// What one monitor task is given.
struct Watcher {
    /// Its `subscribe` frame.
    subscribe: String,
    /// It takes every event, so a jump in seq is a gap.
    full: bool,
    recording: Arc<AtomicBool>,
    stop: tokio::sync::watch::Receiver<bool>,
    /// Told once it is subscribed.
    ready: tokio::sync::mpsc::Sender<()>,
}

impl Watcher {
    fn note(&self, text: &str, seen: &mut Seen, last: &mut u64) {
        note(
            text,
            seen,
            last,
            self.full,
            self.recording.load(Ordering::Relaxed),
        );
    }
}

/// Notes one frame: its delay while recording, `lagged`, and gaps of a full stream.
fn note(text: &str, seen: &mut Seen, last: &mut u64, full: bool, recording: bool) {
    let Ok(f) = serde_json::from_str::<FrameHead>(text) else {
        return;
    };
    match f.ty {
        "event" => {
            let seq = f.seq.unwrap_or(0);
            if full && *last != 0 && seq != *last + 1 {
                seen.gaps += 1;
            }
            *last = seq;
            if recording {
                if let Some(at) =
                    f.at.and_then(|a| chrono::DateTime::parse_from_rfc3339(a).ok())
                {
                    let late = chrono::Utc::now().signed_duration_since(at.to_utc());
                    seen.late_us
                        .push(late.num_microseconds().unwrap_or(0).max(0) as u32);
                }
            }
        }
        "lagged" => seen.lagged += 1,
        _ => {}
    }
}

async fn tcp_monitor(addr: String, w: Watcher) -> anyhow::Result<Seen> {
    let stream = tokio::net::TcpStream::connect(&addr).await?;
    let (r, mut write) = stream.into_split();
    let mut lines = BufReader::new(r).lines();
    let hello = json!({"type":"hello","protocol":1,"role":"monitor"});
    write
        .write_all(format!("{hello}\n{}\n", w.subscribe).as_bytes())
        .await?;
    loop {
        let l = lines.next_line().await?.context("closed before the ack")?;
        if l.contains("\"ack\"") {
            break;
        }
        anyhow::ensure!(l.contains("\"welcome\""), "monitor: {l}");
    }
    let _ = w.ready.send(()).await;
    let (mut seen, mut last, mut stop) = (Seen::default(), 0, w.stop.clone());
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return Ok(seen),
            l = lines.next_line() => match l? {
                Some(l) => w.note(&l, &mut seen, &mut last),
                None => return Ok(seen),
            },
        }
    }
}

async fn ws_monitor(url: String, w: Watcher) -> anyhow::Result<Seen> {
    use tokio_tungstenite::tungstenite::Message;
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await?;
    ws.send(Message::Text(w.subscribe.clone().into())).await?;
    loop {
        match ws.next().await.context("closed before the ack")?? {
            Message::Text(t) if t.contains("\"ack\"") => break,
            Message::Text(t) => anyhow::bail!("monitor: {}", t.as_str()),
            _ => {}
        }
    }
    let _ = w.ready.send(()).await;
    let (mut seen, mut last, mut stop) = (Seen::default(), 0, w.stop.clone());
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return Ok(seen),
            m = ws.next() => match m {
                Some(Ok(Message::Text(t))) => w.note(t.as_str(), &mut seen, &mut last),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => return Ok(seen),
            },
        }
    }
}
