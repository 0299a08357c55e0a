//! The `beats` frame (many healthy heartbeats in one), asked for at `hello`: granted to agent
//! connections that ask, refused to those that do not, taken as one heartbeat per id.

mod common;

use std::sync::Arc;

use common::Client;
use serde_json::{json, Value};
use vigil::serve::tcp::Server;
use vigil_actors::{MemStore, Runtime, RuntimeConfig};

async fn server() -> Server {
    let rt = Arc::new(
        Runtime::start(RuntimeConfig::default(), MemStore::new())
            .await
            .unwrap(),
    );
    let cfg = vigil::config::Config::default().server_config();
    Server::start(([127, 0, 0, 1], 0).into(), rt, cfg)
        .await
        .unwrap()
}

/// Connected as `role`, asking for `features`; the `welcome`.
async fn hello(server: &Server, role: &str, features: Value) -> (Client, Value) {
    let mut c = Client::connect(server.local_addr()).await;
    c.send(json!({"type": "hello", "protocol": 1, "role": role, "features": features}))
        .await;
    let welcome = c.expect("welcome").await;
    (c, welcome)
}

#[tokio::test]
async fn beats_are_plain_protocol_1_unless_asked_for() {
    let server = server().await;
    let (mut plain, welcome) = hello(&server, "agent", json!([])).await;
    assert!(welcome.get("features").is_none(), "{welcome}");
    plain
        .send(json!({"type": "register", "id": "p1", "ref": 1}))
        .await;
    plain.expect("registered").await;
    plain
        .send(json!({"type": "beats", "ids": ["p1"], "ref": 2}))
        .await;
    assert_eq!(plain.expect_error("unknown_type").await["ref"], 2);
    plain.send(json!({"type": "ping", "ref": 3})).await;
    plain.expect("pong").await;

    // Granted to an agent connection that asks (unknown features are left out) ...
    let (_, welcome) = hello(&server, "agent", json!(["beats", "telepathy"])).await;
    assert_eq!(welcome["features"], json!(["beats"]), "{welcome}");
    // ... not to a monitor.
    let (mut monitor, welcome) = hello(&server, "monitor", json!(["beats"])).await;
    assert!(welcome.get("features").is_none(), "{welcome}");
    monitor
        .send(json!({"type": "beats", "ids": ["p1"], "ref": 4}))
        .await;
    monitor.expect_error("forbidden").await;
}

#[tokio::test]
async fn each_id_of_a_beats_frame_is_one_heartbeat() {
    let server = server().await;
    let (mut agent, _) = hello(&server, "agent", json!(["beats"])).await;
    for id in ["b1", "b2"] {
        agent
            .send(json!({"type": "register", "id": id, "heartbeat_interval_ms": 200, "ref": id}))
            .await;
        agent.expect("registered").await;
    }
    let (mut monitor, _) = hello(&server, "monitor", json!([])).await;
    monitor.send(json!({"type": "subscribe", "ref": "s"})).await;
    monitor.expect("ack").await;

    // Both go silent, then degraded; two beats frames bring both back (recovery: 2 beats).
    let mut degraded = std::collections::BTreeSet::new();
    while degraded.len() < 2 {
        let e = monitor.expect("event").await;
        if e["to"] == "degraded" {
            degraded.insert(e["agent"].as_str().unwrap_or_default().to_string());
        }
    }
    for r in [1, 2] {
        agent
            .send(json!({"type": "beats", "ids": ["b1", "b2"], "ref": r}))
            .await;
        assert_eq!(agent.expect("ack").await["ref"], r);
    }
    let mut recovered = std::collections::BTreeSet::new();
    while recovered.len() < 2 {
        let e = monitor.expect("event").await;
        if e["to"] == "online" {
            assert_eq!(e["reason"], "heartbeat_recovered", "{e}");
            recovered.insert(e["agent"].as_str().unwrap_or_default().to_string());
        }
    }

    // An id the connection does not own: an error naming it, and no ack.
    agent
        .send(json!({"type": "beats", "ids": ["b1", "zz"], "ref": "r"}))
        .await;
    let e = agent.expect_error("not_registered").await;
    assert_eq!(e["ref"], "r");
    assert!(
        e["message"].as_str().unwrap_or("").starts_with("zz: "),
        "{e}"
    );
    agent.send(json!({"type": "ping", "ref": "after"})).await;
    assert_eq!(
        agent.expect("pong").await["ref"],
        "after",
        "no ack came first"
    );
}
