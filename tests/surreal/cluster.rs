//! Helpers for tests of several `vigil serve` nodes on one SurrealDB server.
#![allow(dead_code)] // each test file uses what it needs

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::procs::{Conn, Vigil};

/// Node `id` of a cluster on `store`, with a 2 s lease.
pub fn node(store: &str, id: &str) -> Vigil {
    node_with(store, id, &[])
}

/// Node `id` of a cluster on `store`, with a 2 s lease and the settings `more`.
pub fn node_with(store: &str, id: &str, more: &[(&str, String)]) -> Vigil {
    let mut env = vec![
        ("VIGIL_CLUSTER__NODE_ID", id.to_string()),
        ("VIGIL_CLUSTER__LEASE", "2s".to_string()),
    ];
    env.extend(more.iter().cloned());
    Vigil::start(store, &env)
}

/// A monitor on the agent listener `addr`, subscribed with a snapshot, and that snapshot.
pub fn subscribed(addr: &str) -> (Conn, Value) {
    let mut monitor = Conn::open(addr, "monitor");
    monitor.send(json!({"type": "subscribe", "snapshot": true, "ref": 1}));
    let snapshot = monitor.until("snapshot");
    (monitor, snapshot)
}

/// Events (`event` frames) a monitor receives until `done` says it has what it waits for.
pub fn events_until(monitor: &mut Conn, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done(&got) {
        assert!(Instant::now() < deadline, "no {what} within 60 s: {got:?}");
        let f = monitor
            .recv()
            .unwrap_or_else(|| panic!("the stream ended before {what}: {got:?}"));
        match f["type"].as_str() {
            Some("event") => got.push(f),
            Some("lagged" | "resync_required") => panic!("{f}"),
            _ => {}
        }
    }
    got
}

pub fn seqs(events: &[Value]) -> Vec<u64> {
    events.iter().filter_map(|e| e["seq"].as_u64()).collect()
}

pub fn is(e: &Value, kind: &str, agent: &str) -> bool {
    e["event"] == kind && e["agent"] == agent
}

pub fn register(conn: &mut Conn, id: &str, interval_ms: u64, takeover: bool) -> Value {
    conn.send(json!({
        "type": "register", "id": id, "kind": "worker",
        "heartbeat_interval_ms": interval_ms, "takeover": takeover, "ref": id,
    }));
    loop {
        let f = conn.recv().expect("an answer to register");
        if f["ref"] == id {
            return f;
        }
    }
}

/// Registers a quiet agent `id` on `conn` (a 10 min interval, no takeover), which must be
/// accepted.
pub fn registers(conn: &mut Conn, id: &str) {
    let r = register(conn, id, 600_000, false);
    assert_eq!(r["type"], "registered", "{r}");
}

/// The `node_adopted` alerts among `events`.
pub fn adoptions(events: &[Value]) -> Vec<&Value> {
    events
        .iter()
        .filter(|e| e["event"] == "alert" && e["issue"] == "node_adopted")
        .collect()
}
