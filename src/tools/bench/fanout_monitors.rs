//! The monitors' side of `vigil bench fanout` (`vigil bench fanout-monitors`, a child process
//! of it): TCP and WebSocket monitors that time each event they receive.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

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
    let (seq, at) = match event_head(text) {
        Some(head) => head,
        None => {
            let Ok(f) = serde_json::from_str::<FrameHead>(text) else {
                return;
            };
            match f.ty {
                "event" => (f.seq.unwrap_or(0), f.at.unwrap_or_default()),
                "lagged" => {
                    seen.lagged += 1;
                    return;
                }
                _ => return,
            }
        }
    };
    if full && *last != 0 && seq != *last + 1 {
        seen.gaps += 1;
    }
    *last = seq;
    if recording {
        if let Ok(at) = chrono::DateTime::parse_from_rfc3339(at) {
            let late = chrono::Utc::now().signed_duration_since(at.to_utc());
            seen.late_us
                .push(late.num_microseconds().unwrap_or(0).max(0) as u32);
        }
    }
}

/// The seq and `at` of an event frame, read from its head when it starts as the server
/// writes one (`{"type":"event","seq":N,"at":"…"`), without parsing the rest: a monitor
/// taking a million frames a second spent half its CPU in the JSON parser, CPU the server
/// beside it on this machine's two cores then lacked. Any other frame goes to the parser.
fn event_head(text: &str) -> Option<(u64, &str)> {
    let rest = text.strip_prefix(r#"{"type":"event","seq":"#)?;
    let digits = rest.find(|c: char| !c.is_ascii_digit())?;
    let seq = rest[..digits].parse().ok()?;
    let rest = rest[digits..].strip_prefix(r#","at":""#)?;
    Some((seq, &rest[..rest.find('"')?]))
}

async fn tcp_monitor(addr: String, w: Watcher) -> anyhow::Result<Seen> {
    let stream = tokio::net::TcpStream::connect(&addr).await?;
    let (mut r, mut write) = stream.into_split();
    let hello = json!({"type":"hello","protocol":1,"role":"monitor"});
    write
        .write_all(format!("{hello}\n{}\n", w.subscribe).as_bytes())
        .await?;
    let mut buf = bytes::BytesMut::with_capacity(64 * 1024);
    // Until the ack, a line at a time: the welcome, then the ack.
    loop {
        let line = match next_line(&mut buf) {
            Some(l) => l,
            None => {
                anyhow::ensure!(r.read_buf(&mut buf).await? > 0, "closed before the ack");
                continue;
            }
        };
        let l = String::from_utf8_lossy(&line);
        if l.contains("\"ack\"") {
            break;
        }
        anyhow::ensure!(l.contains("\"welcome\""), "monitor: {l}");
    }
    let _ = w.ready.send(()).await;
    let (mut seen, mut last, mut stop) = (Seen::default(), 0, w.stop.clone());
    let stopped = stop.wait_for(|s| *s);
    tokio::pin!(stopped);
    loop {
        // Every whole line read so far, then one read: a busy monitor handles a buffer's
        // worth of frames per wake-up, as a client of a firehose would.
        while let Some(line) = next_line(&mut buf) {
            if let Ok(text) = std::str::from_utf8(&line) {
                w.note(text, &mut seen, &mut last);
            }
        }
        if buf.capacity() - buf.len() < 16 * 1024 {
            buf.reserve(64 * 1024);
        }
        tokio::select! {
            n = r.read_buf(&mut buf) => if n? == 0 {
                return Ok(seen);
            },
            _ = &mut stopped => return Ok(seen),
        }
    }
}

/// Splits the first whole line (without its newline) off `buf`.
fn next_line(buf: &mut bytes::BytesMut) -> Option<bytes::BytesMut> {
    let end = buf.iter().position(|b| *b == b'\n')?;
    let mut line = buf.split_to(end + 1);
    line.truncate(end);
    Some(line)
}

async fn ws_monitor(url: String, w: Watcher) -> anyhow::Result<Seen> {
    use tokio_tungstenite::tungstenite::Message;
    // The library zero-fills its whole read buffer before each read (128 KiB by default):
    // at a frame or a few per read, that fill was a fifth of the monitors' CPU.
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(16 * 1024);
    let (mut ws, _) =
        tokio_tungstenite::connect_async_with_config(&url, Some(config), true).await?;
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
    let stopped = stop.wait_for(|s| *s);
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            m = ws.next() => match m {
                Some(Ok(Message::Text(t))) => w.note(t.as_str(), &mut seen, &mut last),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => return Ok(seen),
            },
            _ = &mut stopped => return Ok(seen),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Received, ServerFrame};

    const AT: &str = "2026-11-23T10:00:31.002Z";

    #[test]
    fn an_event_frame_is_read_from_its_head_as_the_parser_reads_it() {
        let golden = format!(
            r#"{{"type":"event","seq":1235,"at":"{AT}","agent":"a1","kind":"worker","event":"transition","from":"online","to":"degraded","reason":"heartbeat_missed","missed":1}}"#
        );
        let value = serde_json::from_str(&golden).expect("JSON");
        let ServerFrame::Event(e) = Received::from_value(value).expect("a frame").frame else {
            panic!("not an event frame");
        };
        // The server's own text, so a change of its field order shows here.
        let text = ServerFrame::event_text(&e).expect("serialized");
        assert_eq!(event_head(&text), Some((1235, AT)));

        let (mut seen, mut last) = (Seen::default(), 1233);
        note(&text, &mut seen, &mut last, true, true);
        assert_eq!((last, seen.gaps, seen.late_us.len()), (1235, 1, 1));
        // Frames of another shape go to the parser.
        let reordered = format!(r#"{{"seq":1236,"type":"event","at":"{AT}"}}"#);
        assert_eq!(event_head(&reordered), None);
        note(&reordered, &mut seen, &mut last, true, true);
        assert_eq!((last, seen.gaps, seen.late_us.len()), (1236, 1, 2));
        note(
            r#"{"last_seq":41,"type":"lagged"}"#,
            &mut seen,
            &mut last,
            true,
            true,
        );
        assert_eq!((last, seen.lagged), (1236, 1));
    }
}
