//! What one connection can make the server hold for it: notices to it are never dropped, and
//! the reports it can queue for the registry are bounded.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::Client;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use vigil::serve::tcp::{Server, ServerConfig, MAX_QUEUED_REPORTS};
use vigil_actors::{EventKind, MemStore, Runtime, RuntimeConfig};

async fn setup(cfg: ServerConfig) -> (Server, Arc<Runtime>) {
    let rt = Arc::new(
        Runtime::start(RuntimeConfig::default(), MemStore::new())
            .await
            .unwrap(),
    );
    let server = Server::start(([127, 0, 0, 1], 0).into(), rt.clone(), cfg)
        .await
        .unwrap();
    (server, rt)
}

/// Registers `ids` on `c` (with takeover) and waits for every `registered`.
async fn register_all(c: &mut Client, ids: &[String]) {
    let mut frames = String::new();
    for id in ids {
        frames.push_str(&json!({"type":"register","id":id,"kind":"w","takeover":true}).to_string());
        frames.push('\n');
    }
    c.raw(frames.as_bytes()).await;
    let mut registered = 0;
    while registered < ids.len() {
        let v = c.recv().await.expect("a frame");
        match v["type"].as_str() {
            Some("registered") => registered += 1,
            Some("pong") | Some("evicted") => {}
            _ => panic!("unexpected {v}"),
        }
    }
}

/// An agent taken over while its old connection cannot keep up (its client reads nothing,
/// so the server's writes to it wait) is still told, once the connection moves again: every
/// one of them, however many.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_takeover_is_told_to_a_connection_that_was_busy() {
    const AGENTS: usize = 600;
    let (server, _rt) = setup(ServerConfig {
        rate_limit: 0,
        max_agents_per_connection: 10_000,
        ..vigil::config::Config::default().server_config()
    })
    .await;
    let addr = server.local_addr();
    let ids: Vec<String> = (0..AGENTS).map(|i| format!("busy-{i}")).collect();
    let mut old = Client::hello(addr, "agent", None).await;
    register_all(&mut old, &ids).await;

    // The old connection asks for far more answers than the socket buffers hold and reads
    // none: its session ends up waiting to write, and reads no notice meanwhile.
    let written = Arc::new(AtomicUsize::new(0));
    let pinger = {
        let written = written.clone();
        let mut write = old.write;
        tokio::spawn(async move {
            let chunk = "{\"type\":\"ping\"}\n".repeat(4_096);
            for _ in 0..100 {
                if write.write_all(chunk.as_bytes()).await.is_err() {
                    break;
                }
                written.fetch_add(chunk.len(), Ordering::Relaxed);
            }
            write
        })
    };
    // Until the writes stop moving: the server has stopped reading them.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut last = usize::MAX;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = written.load(Ordering::Relaxed);
        if now == last || pinger.is_finished() {
            break;
        }
        last = now;
        assert!(
            tokio::time::Instant::now() < deadline,
            "the writes never stalled"
        );
    }

    let mut new = Client::hello(addr, "agent", None).await;
    register_all(&mut new, &ids).await;

    // Now the old connection reads: every agent it lost is named in an `evicted` notice.
    let mut lines = old.lines;
    let mut told = std::collections::HashSet::new();
    while told.len() < AGENTS {
        let next = tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await;
        let Ok(Ok(Some(line))) = next else {
            panic!("no more frames after {} of {AGENTS} notices", told.len())
        };
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if v["type"] == "evicted" {
            assert_eq!(v["reason"], "taken_over", "{v}");
            told.insert(v["id"].as_str().unwrap().to_string());
        }
    }
    pinger.abort();
}

/// A connection sending activity changes faster than the registry takes them waits for room
/// instead of queueing without bound; nothing it sent is lost.
#[tokio::test]
async fn one_connection_cannot_queue_reports_without_bound() {
    const CHANGES: usize = 6_000;
    let (server, rt) = setup(ServerConfig {
        rate_limit: 0,
        ..vigil::config::Config::default().server_config()
    })
    .await;
    let mut c = Client::hello(server.local_addr(), "agent", None).await;
    register_all(&mut c, &["chatty".to_string()]).await;

    let mut frames = String::new();
    for i in 0..CHANGES {
        let activity = if i % 2 == 0 { "working" } else { "idle" };
        frames.push_str(&json!({"type":"activity","id":"chatty","activity":activity}).to_string());
        frames.push('\n');
    }
    frames.push_str("{\"type\":\"ping\"}\n");
    c.raw(frames.as_bytes()).await;
    c.expect("pong").await;

    // Every change is recorded (the first one from no activity).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let stats = rt.stats().await.unwrap().registry;
        let recorded = stats
            .persisted
            .get(&EventKind::Activity)
            .copied()
            .unwrap_or(0);
        if recorded == CHANGES as u64 {
            assert!(
                stats.queued_reports_peak <= MAX_QUEUED_REPORTS as u64,
                "{} reports were queued at once (bound {MAX_QUEUED_REPORTS})",
                stats.queued_reports_peak
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{recorded} of {CHANGES} activity changes recorded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
