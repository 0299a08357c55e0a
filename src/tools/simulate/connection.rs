//! One connection of simulated agents: registration, the ring of heartbeat slots, failure
//! injection.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use serde_json::json;
use tokio::time::Instant;

use super::pace::Pace;
use super::{agent_id, mode_of, picked, Counters, Mode, SimulateArgs};
use crate::client::{ClientConfig, Connection, ServerFrame};
use crate::protocol::{Role, FEATURE_BEATS};

struct SimAgent {
    line: Vec<u8>,
    /// The id as a JSON string, for `beats` frames.
    quoted: Vec<u8>,
    degraded_line: Vec<u8>,
    mode: Option<Mode>,
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn connection_task(
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
                quoted: format!("\"{id}\"").into_bytes(),
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
    let mut pace = Pace::new(ids.len(), args.late_after.unwrap_or(args.interval));
    let name = |k: u32| agent_id(&args.prefix, ids[k as usize]);
    let mut sent: Vec<u32> = Vec::new();
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
        let granted = conn.welcome.features.iter().any(|f| f == FEATURE_BEATS);
        if args.batch && !granted {
            let why = "the server does not take beats frames (no \"beats\" in its welcome)";
            let _ = ready.send(Err(anyhow::anyhow!(why))).await;
            return;
        }
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
                match f.frame {
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
        let mut healthy: Vec<u32> = Vec::new();
        let dropped = loop {
            let planned = tick.tick().await;
            if stop.load(Ordering::Relaxed) {
                break false;
            }
            let now = Instant::now();
            let late = now.saturating_duration_since(planned).as_micros() as u64;
            counters.max_tick_late_us.fetch_max(late, Ordering::Relaxed);
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
            sent.clear();
            while in_flight < args.register_window.max(1) && next_reg < registers.len() {
                batch.extend_from_slice(&registers[next_reg]);
                sent.push(next_reg as u32);
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
                        } else if args.batch {
                            healthy.push(k);
                        } else {
                            batch.extend_from_slice(&a.line);
                        }
                        sent.push(k);
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
            append_beats(&mut batch, &healthy, &agents);
            healthy.clear();
            slot = (slot + 1) % ring_len;
            if !batch.is_empty() {
                if writer.send_raw(&batch).await.is_err() {
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                    break true;
                }
                pace.sent(
                    &sent,
                    chrono::Utc::now().timestamp_millis(),
                    name,
                    &counters,
                );
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

/// `beats` frames for agents `ks`, each well under the server's default frame limit.
fn append_beats(out: &mut Vec<u8>, ks: &[u32], agents: &[SimAgent]) {
    const FRAME_BYTES: usize = 32 * 1024;
    // Where the open frame starts, if one is open.
    let mut open: Option<usize> = None;
    for &k in ks {
        let id = &agents[k as usize].quoted;
        if open.is_some_and(|start| out.len() - start + id.len() > FRAME_BYTES) {
            out.extend_from_slice(b"]}\n");
            open = None;
        }
        match open {
            Some(_) => out.push(b','),
            None => {
                open = Some(out.len());
                out.extend_from_slice(b"{\"type\":\"beats\",\"ids\":[");
            }
        }
        out.extend_from_slice(id);
    }
    if open.is_some() {
        out.extend_from_slice(b"]}\n");
    }
}
