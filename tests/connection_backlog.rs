//! A connection that falls behind its input does not blame its agents: beats that reached the
//! server and wait in the socket, unread, are not taken for silence (real sockets).

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::events;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpSocket;
use tokio::time::Instant;
use vigil::serve::tcp::{Server, ServerConfig};
use vigil_actors::{EventBody, LagConfig, MemStore, Policy, Runtime, RuntimeConfig};

/// Heartbeats written at once.
const BATCH: u64 = 1_000;

/// The agent's interval: the stall below is five of them.
const INTERVAL: Duration = Duration::from_millis(300);

/// The next line from the server, as JSON.
async fn next(lines: &mut Lines<BufReader<OwnedReadHalf>>) -> Value {
    let line = tokio::time::timeout(Duration::from_secs(120), lines.next_line())
        .await
        .expect("a line within 120 s")
        .unwrap()
        .expect("the connection stays open");
    serde_json::from_str(&line).unwrap()
}

fn lines_of(id: &str, from: u64, n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for r in from..from + n {
        let frame = json!({"type": "heartbeat", "id": id, "ref": r});
        out.extend_from_slice(frame.to_string().as_bytes());
        out.push(b'\n');
    }
    out
}

/// An agent's connection sends heartbeats (each with a `ref`, so each is answered) and does
/// not read the answers: the server's writes back fill, its session waits to queue the next
/// answer, and it reads nothing more. The beats behind wait in the socket. Five intervals
/// after the writes stall the agent reads again, and the server takes every beat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beats_waiting_in_a_stalled_connection_are_not_taken_for_silence() {
    let cfg = RuntimeConfig {
        policy: Policy {
            heartbeat_interval: INTERVAL,
            ..Policy::default()
        },
        // However slow this machine drains the backlog, the runtime vouches for the agent.
        lag: LagConfig {
            max_slack: Duration::from_secs(600),
            ..LagConfig::default()
        },
        ..RuntimeConfig::default()
    };
    let rt = Arc::new(Runtime::start(cfg, MemStore::new()).await.unwrap());
    let server_cfg = ServerConfig {
        rate_limit: 0, // the burst is one agent's, sent at once
        ..vigil::config::Config::default().server_config()
    };
    let server = Server::start(([127, 0, 0, 1], 0).into(), rt.clone(), server_cfg)
        .await
        .unwrap();

    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.set_send_buffer_size(4096).unwrap();
    let stream = socket.connect(server.local_addr()).await.unwrap();
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let hello = json!({"type": "hello", "protocol": 1, "role": "agent"});
    let register = json!({"type": "register", "id": "a", "ref": 0});
    write
        .write_all(format!("{hello}\n{register}\n").as_bytes())
        .await
        .unwrap();

    // Beats, each with a `ref`, in batches until the writes stall: the buffers between the
    // two ends are full, and the server reads nothing more. They start with the registration
    // (its answer waits for the store): the agent is never silent by its own doing.
    let written = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn({
        let (written, stop) = (written.clone(), stop.clone());
        async move {
            while !stop.load(Ordering::SeqCst) {
                let from = written.load(Ordering::SeqCst) + 1;
                write.write_all(&lines_of("a", from, BATCH)).await.unwrap();
                written.fetch_add(BATCH, Ordering::SeqCst);
            }
            (write, written.load(Ordering::SeqCst))
        }
    });
    assert_eq!(next(&mut lines).await["type"], "welcome");
    // Acks of the first beats may come before the registration's answer.
    while next(&mut lines).await["type"] != "registered" {}
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = (0, Instant::now());
    while seen.1.elapsed() < Duration::from_millis(500) {
        assert!(Instant::now() < deadline, "the writes never stalled");
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = written.load(Ordering::SeqCst);
        if now != seen.0 {
            seen = (now, Instant::now());
        }
    }
    // Stalled: the agent's beats wait unread for five intervals more.
    tokio::time::sleep(INTERVAL * 5).await;
    assert!(!writer.is_finished());
    stop.store(true, Ordering::SeqCst);

    // The agent reads again: every answer comes, the last one for the last beat.
    let (mut last, mut sent, mut writer) = (0, None, Some(writer));
    while sent.is_none_or(|sent| last < sent) {
        let answer = next(&mut lines).await;
        assert_eq!(answer["type"], "ack", "{answer}");
        last = answer["ref"].as_u64().unwrap();
        if let Some(done) = writer.take_if(|w| w.is_finished()) {
            sent = Some(done.await.unwrap().1);
        }
    }
    assert!(last > 10 * BATCH, "a burst of {last} beats");

    let events = events(&rt).await;
    let transitions: Vec<_> = events
        .iter()
        .filter(|e| matches!(e.body, EventBody::Transition { .. }))
        .collect();
    assert!(transitions.is_empty(), "{transitions:#?}");
    server.stop().await;
}
