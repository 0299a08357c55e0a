//! A cluster's checkpoint of the fleet and the retention of its shared log: a node that starts
//! after the log was trimmed knows the whole fleet, and which node owns each agent.
//!
//! Runs a real SurrealDB server (`scripts/surrealdb-server`, built once; `VIGIL_SURREAL`
//! names a binary to use instead) and real `vigil serve` processes.

mod surreal;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use surreal::cluster::{adoptions, events_until, node_with, register};
use surreal::procs::Conn;
use surreal::SurrealServer;

/// One admin request on `conn`, its `result` frame.
fn admin(conn: &mut Conn, op: &str, args: Value) -> Value {
    conn.send(json!({"type": "admin", "op": op, "args": args, "ref": op}));
    conn.until("result")
}

#[test]
fn a_node_started_after_the_log_was_trimmed_knows_the_fleet_and_its_owners() {
    let surreal = SurrealServer::start();
    let store = surreal.url();
    let keep = [
        ("VIGIL_STORE__CHECKPOINT_INTERVAL", "200ms".to_string()),
        ("VIGIL_STORE__EVENT_RETENTION_COUNT", "5".to_string()),
    ];
    let mut n1 = node_with(&store, "n1", &keep);
    let mut on_n1 = Conn::open(&n1.agents, "agent");
    let ids: Vec<String> = (0..12).map(|i| format!("c{i:02}")).collect();
    // Three agents go into maintenance before the others register: their records are not
    // what their registrations made them, and their transitions are among the oldest events.
    let mut admin1 = Conn::open(&n1.agents, "admin");
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(
            register(&mut on_n1, id, 600_000, false)["type"],
            "registered"
        );
        if i == 2 {
            for id in &ids[..3] {
                let r = admin(&mut admin1, "maintenance", json!({"id": id, "on": true}));
                assert_eq!(r["ok"], true, "{r}");
            }
        }
    }

    // The keeper writes the checkpoint and trims the log behind it (keeping 5 of the 15
    // events): the transitions to maintenance go from the log.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = admin(&mut admin1, "events", json!({"since": 0, "limit": 1}));
        let oldest = r["data"][0]["seq"].as_u64().unwrap_or(0);
        if oldest > 6 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the log still starts at {oldest} after 60 s: {r}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // A node that starts now learns c00..c09 from the checkpoint alone.
    let n2 = node_with(&store, "n2", &keep);
    let mut admin2 = Conn::open(&n2.agents, "admin");
    let list = admin(&mut admin2, "list", json!({}));
    let statuses: BTreeMap<&str, &str> = list["data"]
        .as_array()
        .expect("agents")
        .iter()
        .filter_map(|a| Some((a["id"].as_str()?, a["status"].as_str()?)))
        .collect();
    let want: BTreeMap<&str, &str> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), if i < 3 { "maintenance" } else { "online" }))
        .collect();
    assert_eq!(statuses, want, "{list}");

    // It knows whose they are: when n1 dies, n2 adopts its twelve agents.
    let mut monitor = Conn::open(&n2.agents, "monitor");
    monitor.send(json!({"type": "subscribe", "snapshot": true, "ref": 1}));
    monitor.until("snapshot");
    n1.child.kill().expect("kill -9");
    let _ = n1.child.wait();
    let got = events_until(&mut monitor, "the adoption", |es| !adoptions(es).is_empty());
    let alert = adoptions(&got)[0];
    assert_eq!(alert["adopted"], "n1", "{alert}");
    assert!(
        alert["detail"].as_str().unwrap_or("").contains("12 agents"),
        "{alert}"
    );
}
