//! One store on a SurrealDB server belongs to one live `vigil serve` (without `[cluster]`): a
//! second process is refused with the holder's name; a process paused past its lease is
//! taken over, and when it wakes it publishes nothing and stops.
//!
//! Runs a real SurrealDB server (`scripts/surrealdb-server`, built once; `VIGIL_SURREAL`
//! names a binary to use instead) and real `vigil serve` processes.

mod surreal;

use std::time::{Duration, Instant};

use serde_json::json;
use surreal::procs::{exit_of, vigil, Conn, Vigil};
use surreal::SurrealServer;

/// The environment that sets the hold's lease.
fn hold(lease: &str) -> Vec<(&'static str, String)> {
    vec![("VIGIL_STORE__HOLD_LEASE", lease.to_string())]
}

#[test]
fn one_live_process_holds_a_store_and_a_paused_one_is_fenced() {
    let t0 = Instant::now();
    let mark = |what: &str| eprintln!("{:>6} ms  {what}", t0.elapsed().as_millis());
    let surreal = SurrealServer::start();
    mark("server");
    let store = surreal.url();
    // A renews every second; B watches for ten, so a loaded machine that delays one of A's
    // renewals does not make B take a live store. C's short lease only makes the takeover of
    // the paused A quick.
    let lease = "3s";

    // A holds the store and supervises an agent; a monitor watches A.
    let a = Vigil::start(&store, &hold(lease));
    let mut agent = Conn::open(&a.agents, "agent");
    // A long interval: nothing happens to a1 unless the test makes it happen.
    agent.send(json!({"type": "register", "id": "a1", "heartbeat_interval_ms": 600000, "ref": 1}));
    assert_eq!(agent.until("registered")["id"], "a1");
    let mut monitor = Conn::open(&a.agents, "monitor");
    monitor.send(json!({"type": "subscribe", "snapshot": true, "ref": 1}));
    let seen_before = monitor.until("snapshot")["seq"].as_u64().expect("seq");

    mark("a up");
    // B is refused, naming A.
    let (mut b, b_lines) = vigil(&store, &hold("10s"));
    let (status, text) = exit_of(&mut b, &b_lines, Duration::from_secs(60));
    assert!(
        !status.success(),
        "a second process must not start:\n{text}"
    );
    assert!(text.contains("held by a live vigil process"), "{text}");
    assert!(text.contains(&format!("pid {}", a.child.id())), "{text}");

    mark("b refused");
    // A is paused past its lease: C takes the store over and supervises.
    a.signal("-STOP");
    let c = Vigil::start(&store, &hold(lease));
    let mut on_c = Conn::open(&c.agents, "agent");
    on_c.send(json!({"type": "register", "id": "c1", "ref": 1}));
    assert_eq!(on_c.until("registered")["id"], "c1");

    mark("c up");
    // A wakes: its agent keeps talking to it, which A would record; it publishes nothing
    // and stops.
    a.signal("-CONT");
    agent.send(json!({"type": "activity", "id": "a1", "activity": "working"}));
    let mut a = a;
    let (status, text) = exit_of(&mut a.child, &a.lines, Duration::from_secs(60));
    assert!(
        !status.success(),
        "a fenced process exits with an error:\n{text}"
    );
    assert!(text.contains("no longer holds the store"), "{text}");
    mark("a exited");
    let mut published = Vec::new();
    while let Some(f) = monitor.recv() {
        if f["type"] == "event" && f["seq"].as_u64() > Some(seen_before) {
            published.push(f);
        }
    }
    assert!(
        published.is_empty(),
        "a fenced process published {published:?}"
    );

    mark("monitor ended");
    // C's log has nothing of A's after C took over: every event after C's own
    // registration of c1 is C's (none about a1's activity).
    let mut admin = Conn::open(&c.agents, "admin");
    admin.send(json!({"type": "admin", "op": "events", "args": {"id": "a1"}, "ref": 1}));
    let result = admin.until("result");
    let events = result["data"].as_array().cloned().unwrap_or_default();
    assert!(
        !events.iter().any(|e| e["event"] == "activity"),
        "A's activity after the takeover was written: {events:?}"
    );

    // A clean stop releases the hold: the next process takes it without waiting a lease.
    c.signal("-TERM");
    let mut c = c;
    let (status, text) = exit_of(&mut c.child, &c.lines, Duration::from_secs(60));
    assert!(status.success(), "{text}");
    let (mut d, d_lines) = vigil(&store, &hold("1h"));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = d_lines.recv_timeout(left).expect("D starts");
        assert!(!line.contains("waiting one lease"), "D waited: {line}");
        if line.contains("vigil is supervising") {
            break;
        }
    }
    let _ = d.kill();
    let _ = d.wait();
    mark("released and taken at once");
}

/// The fence is in the write itself: a process whose hold was taken while its renewal slept
/// has its next write refused, and nothing of it lands.
#[tokio::test(flavor = "multi_thread")]
async fn a_write_after_a_takeover_is_refused_and_lands_nothing() {
    use vigil::core::store::{HoldOptions, SurrealOptions, SurrealStore};
    use vigil::core::{Store, StoreError};

    let surreal = tokio::task::spawn_blocking(SurrealServer::start)
        .await
        .expect("server");
    let url = surreal.url();
    let opts = |lease: Duration, holder: &str| SurrealOptions {
        hold: Some(HoldOptions {
            lease,
            holder: holder.into(),
            key: "store".into(),
        }),
        ..SurrealOptions::default()
    };
    let alert = |n: u64| surreal::alert("test", n);
    // The first holder renews once at the start, then not for 20 minutes.
    let first = SurrealStore::open(&url, opts(Duration::from_secs(3600), "first"))
        .await
        .expect("the first process takes the hold");
    first.append(&[alert(1)]).await.expect("the holder writes");
    // The second sees a silent holder for its (short) lease and takes over.
    let second = SurrealStore::open(&url, opts(Duration::from_millis(300), "second"))
        .await
        .expect("a silent holder is taken over");
    match first.append(&[alert(2)]).await {
        Err(StoreError::Fenced(reason)) => assert!(reason.contains("took the store over")),
        other => panic!("a write after the takeover must be fenced, got {other:?}"),
    }
    let lost = tokio::time::timeout(Duration::from_secs(60), first.lost())
        .await
        .expect("the loss is reported");
    assert!(lost.contains("epoch"), "{lost}");
    let loaded = second.load().await.expect("load");
    assert_eq!(loaded.last_seq, 1, "nothing of the fenced write landed");
    second
        .append(&[alert(2)])
        .await
        .expect("the new holder writes");
    second.close().await;
    first.close().await;
}

/// Holds are per key: a cluster's nodes each hold their own (`node-<id>`) on one store, a
/// second claim of a live node's key is refused, and each node's writes are fenced by its own
/// epoch only.
#[tokio::test(flavor = "multi_thread")]
async fn each_node_holds_its_own_key_and_a_second_claim_of_one_is_refused() {
    use vigil::core::store::{BatchId, HoldOptions, SurrealOptions, SurrealStore};
    use vigil::core::StoreError;

    let surreal = tokio::task::spawn_blocking(SurrealServer::start)
        .await
        .expect("server");
    let url = surreal.url();
    let node = |id: &str, holder: &str| SurrealOptions {
        hold: Some(HoldOptions {
            // The first n1 renews every second; the second claim watches for ten.
            lease: Duration::from_secs(if holder == "second n1" { 10 } else { 3 }),
            holder: holder.into(),
            key: format!("node-{id}"),
        }),
        ..SurrealOptions::default()
    };
    let n1 = SurrealStore::open(&url, node("n1", "first n1"))
        .await
        .expect("n1");
    let n2 = SurrealStore::open(&url, node("n2", "n2"))
        .await
        .expect("n2 beside n1");
    match SurrealStore::open(&url, node("n1", "second n1")).await {
        Err(StoreError::Held(msg)) => assert!(msg.contains("first n1"), "{msg}"),
        Err(e) => panic!("refused for another reason: {e}"),
        Ok(_) => panic!("a live node's id was claimed twice"),
    }
    let alert = |n: u64| surreal::alert("t", n);
    // Both write the shared log, each fenced by its own hold.
    for (store, id) in [(&n1, "n1"), (&n2, "n2")] {
        let batch = BatchId {
            node: id.into(),
            first: 1,
        };
        store
            .append_shared(&batch, &[alert(1)], false)
            .await
            .expect("a holder writes");
    }
    assert_eq!(n2.shared_head().await.expect("head"), 2);
}

/// The servers these tests start are ready when they answer HTTP, not when a connect
/// succeeds: a socket connected to itself (which a connect to an unused ephemeral port can
/// give) reads back what it wrote, as this echoing listener does.
#[test]
fn a_port_that_only_echoes_is_not_taken_for_a_ready_server() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let port = listener.local_addr().expect("addr").port();
    let echo = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("the probe connects");
        let mut buf = [0u8; 256];
        let n = s.read(&mut buf).expect("the probe writes");
        s.write_all(&buf[..n]).expect("echo");
        n
    });
    assert!(!surreal::answers_health(port), "an echo is not a server");
    assert!(
        echo.join().expect("echo thread") > 0,
        "the probe spoke first"
    );
}
