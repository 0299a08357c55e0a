//! Several `vigil serve` nodes on one SurrealDB server ([cluster] node_id): one stream of
//! every node's events on every node, resumable on any other; takeover of an agent across
//! nodes; one owner for an agent registered on two nodes at once.
//!
//! Runs a real SurrealDB server (`scripts/surrealdb-server`, built once; `VIGIL_SURREAL`
//! names a binary to use instead) and real `vigil serve` processes.

mod surreal;

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};
use surreal::cluster::{adoptions, events_until, is, node, register, registers, seqs, subscribed};
use surreal::procs::{exit_of, http_get, vigil, word, Beater, Conn, Vigil};
use surreal::SurrealServer;

#[test]
fn every_node_streams_every_event_once_and_an_agent_moves_between_nodes() {
    let surreal = SurrealServer::start();
    let store = surreal.url();
    let n1 = node(&store, "n1");
    let n2 = node(&store, "n2");
    let n3 = node(&store, "n3");

    // A monitor on n2 sees what n1 decides.
    let (mut monitor, snapshot) = subscribed(&n2.agents);
    let start = snapshot["seq"].as_u64().expect("seq");
    let mut on_n1 = Conn::open(&n1.agents, "agent");
    let r = register(&mut on_n1, "a1", 600_000, false);
    assert_eq!(r["type"], "registered", "{r}");
    let got = events_until(&mut monitor, "a1 registered on n1", |es| {
        es.iter().any(|e| is(e, "registered", "a1"))
    });
    let a1 = got.iter().find(|e| is(e, "registered", "a1")).expect("a1");
    assert_eq!(
        a1["node"], "n1",
        "events carry the node that decided them: {a1}"
    );
    let mut seen = got;

    // While the monitor is away, n1 and n3 decide more.
    let last = *seqs(&seen).last().expect("a seq");
    drop(monitor);
    let mut admin1 = Conn::open(&n1.agents, "admin");
    admin1.send(
        json!({"type": "admin", "op": "maintenance", "args": {"id": "a1", "on": true}, "ref": 1}),
    );
    assert_eq!(admin1.until("result")["ok"], true);
    let mut on_n3 = Conn::open(&n3.agents, "agent");
    registers(&mut on_n3, "a3");

    // It resumes on n3 with exactly what it missed.
    let mut monitor = Conn::open(&n3.agents, "monitor");
    monitor.send(json!({"type": "subscribe", "since": last, "ref": 2}));
    let missed = events_until(&mut monitor, "the missed events", |es| {
        es.iter().any(|e| is(e, "registered", "a3"))
            && es
                .iter()
                .any(|e| e["agent"] == "a1" && e["to"] == "maintenance")
    });
    assert_eq!(missed[0]["seq"].as_u64(), Some(last + 1), "{missed:?}");
    seen.extend(missed);

    // An agent of n1 registered on n2 without takeover: conflict; with it, it moves.
    let mut on_n2 = Conn::open(&n2.agents, "agent");
    let r = register(&mut on_n2, "a1", 1000, false);
    assert_eq!(r["code"], "conflict", "{r}");
    assert!(r["message"].as_str().unwrap_or("").contains("n1"), "{r}");
    let r = register(&mut on_n2, "a1", 1000, true);
    assert_eq!(r["type"], "registered", "{r}");
    assert_eq!(r["incarnation"], 2, "the record continues on n2: {r}");
    let evicted = on_n1.until("evicted");
    assert_eq!(
        (&evicted["id"], &evicted["reason"]),
        (&json!("a1"), &json!("taken_over"))
    );

    // Beats stop on n2: a1 goes degraded then offline, once each, decided by n2 alone.
    let moved = events_until(&mut monitor, "a1 offline", |es| {
        es.iter()
            .any(|e| e["agent"] == "a1" && e["to"] == "offline")
    });
    seen.extend(moved);
    let after_move: Vec<&Value> = seen
        .iter()
        .skip_while(|e| !(is(e, "registered", "a1") && e["node"] == "n2"))
        .filter(|e| e["agent"] == "a1")
        .collect();
    let kinds: Vec<(String, String)> = after_move
        .iter()
        .map(|e| {
            (
                format!(
                    "{}:{}",
                    e["event"].as_str().unwrap_or(""),
                    e["to"].as_str().unwrap_or("")
                ),
                e["node"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("registered:".to_string(), "n2".to_string()),
            ("transition:degraded".to_string(), "n2".to_string()),
            ("transition:offline".to_string(), "n2".to_string()),
        ],
        "the move records no transition, and only the new owner supervises"
    );

    // Gapless, each once, across both nodes' streams.
    let s = seqs(&seen);
    let expected: Vec<u64> = (start + 1..=*s.last().expect("seqs")).collect();
    assert_eq!(s, expected, "one gapless stream");

    // Reads answer for the whole fleet on any node.
    let mut admin2 = Conn::open(&n2.agents, "admin");
    admin2.send(json!({"type": "admin", "op": "list", "args": {}, "ref": 1}));
    let list = admin2.until("result");
    let ids: BTreeSet<&str> = list["data"]
        .as_array()
        .expect("agents")
        .iter()
        .filter_map(|a| a["id"].as_str())
        .collect();
    assert_eq!(ids, BTreeSet::from(["a1", "a3"]), "{list}");
}

#[test]
fn an_agent_registered_on_two_nodes_at_once_has_one_owner() {
    let surreal = SurrealServer::start();
    let store = surreal.url();
    let n1 = node(&store, "n1");
    let n2 = node(&store, "n2");
    let (mut monitor, _) = subscribed(&n1.agents);

    let mut c1 = Conn::open(&n1.agents, "agent");
    let mut c2 = Conn::open(&n2.agents, "agent");
    let frame = json!({"type": "register", "id": "x", "heartbeat_interval_ms": 1000, "ref": "x"});
    c1.send(frame.clone());
    c2.send(frame);
    // Each answer (an `evicted` may come first: the other registration landed later).
    let answer = |c: &mut Conn| {
        let mut evicted = false;
        loop {
            let f = c.recv().expect("an answer");
            evicted |= f["type"] == "evicted";
            if f["ref"] == "x" {
                return (f, evicted);
            }
        }
    };
    let (a1, evicted1) = answer(&mut c1);
    let (a2, evicted2) = answer(&mut c2);
    let answers = [a1, a2];
    let registered = answers.iter().filter(|a| a["type"] == "registered").count();
    assert!(registered >= 1, "{answers:?}");
    // Whichever registration the log holds last owns x.
    let got = events_until(&mut monitor, "x registered", |es| {
        es.iter().filter(|e| is(e, "registered", "x")).count() == registered
    });
    let owner = got
        .iter()
        .rev()
        .find(|e| is(e, "registered", "x"))
        .and_then(|e| e["node"].as_str())
        .expect("an owner")
        .to_string();
    if registered == 2 {
        // The connection whose registration the other one followed is told it lost x.
        let (loser, told) = match owner.as_str() {
            "n1" => (&mut c2, evicted2),
            _ => (&mut c1, evicted1),
        };
        if !told {
            assert_eq!(loser.until("evicted")["reason"], "taken_over");
        }
    }
    // Only the owner supervises: x goes offline once (no beats anywhere), by the owner.
    let more = events_until(&mut monitor, "x offline", |es| {
        es.iter().any(|e| e["agent"] == "x" && e["to"] == "offline")
    });
    let transitions: Vec<(&str, &str)> = more
        .iter()
        .filter(|e| e["agent"] == "x" && e["event"] == "transition")
        .map(|e| {
            (
                e["to"].as_str().unwrap_or(""),
                e["node"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        transitions,
        vec![("degraded", owner.as_str()), ("offline", owner.as_str())],
        "{more:?}"
    );
}

#[test]
fn a_dead_nodes_agents_are_adopted_once_without_a_storm() {
    let surreal = SurrealServer::start();
    let store = surreal.url();
    let mut n1 = node(&store, "n1");
    let n2 = node(&store, "n2");
    let n3 = node(&store, "n3");
    let (mut monitor, _) = subscribed(&n2.agents);

    // Four agents on n1, beating.
    let mut on_n1 = Conn::open(&n1.agents, "agent");
    let ids = ["d1", "d2", "d3", "d4"];
    for id in ids {
        assert_eq!(register(&mut on_n1, id, 1000, false)["type"], "registered");
    }
    let beats = Beater::start(&on_n1, &ids, Duration::from_millis(250));
    events_until(&mut monitor, "the four registrations", |es| {
        es.iter().filter(|e| e["event"] == "registered").count() == 4
    });

    // n1 dies. Exactly one survivor adopts its four agents.
    n1.child.kill().expect("kill -9");
    let _ = n1.child.wait();
    drop(beats);
    let got = events_until(&mut monitor, "the adoption", |es| !adoptions(es).is_empty());
    let alert = adoptions(&got)[0].clone();
    assert_eq!(alert["adopted"], "n1", "{alert}");
    assert!(
        alert["detail"].as_str().unwrap_or("").contains("4 agents"),
        "{alert}"
    );
    let adopter = alert["node"].as_str().expect("the adopter").to_string();
    let other = if adopter == "n2" { &n3 } else { &n2 };
    let adopter_addr = if adopter == "n2" {
        &n2.agents
    } else {
        &n3.agents
    };

    // Two come back within the grace, one to the adopter and one to the other survivor; two
    // never do.
    let mut back1 = Conn::open(adopter_addr, "agent");
    assert_eq!(
        register(&mut back1, "d1", 600_000, true)["type"],
        "registered"
    );
    let mut back2 = Conn::open(&other.agents, "agent");
    assert_eq!(
        register(&mut back2, "d2", 600_000, true)["type"],
        "registered"
    );
    let mut after = events_until(&mut monitor, "d3 and d4 offline", |es| {
        ["d3", "d4"]
            .iter()
            .all(|id| es.iter().any(|e| e["agent"] == *id && e["to"] == "offline"))
    });
    // An admin write sent to the node that does not own d1 takes effect on its owner.
    let mut admin = Conn::open(&other.agents, "admin");
    admin.send(
        json!({"type": "admin", "op": "maintenance", "args": {"id": "d1", "on": true}, "ref": 1}),
    );
    assert_eq!(admin.until("result")["ok"], true);
    after.extend(events_until(&mut monitor, "d1 in maintenance", |es| {
        es.iter()
            .any(|e| e["agent"] == "d1" && e["to"] == "maintenance")
    }));
    let all: Vec<Value> = got.into_iter().chain(after).collect();
    assert_eq!(adoptions(&all).len(), 1, "one adoption: {all:?}");
    let of = |id: &str| -> Vec<String> {
        all.iter()
            .filter(|e| e["agent"] == id)
            .map(|e| {
                format!(
                    "{}:{}@{}",
                    e["event"].as_str().unwrap_or(""),
                    e["to"].as_str().unwrap_or(""),
                    e["node"].as_str().unwrap_or("")
                )
            })
            .collect()
    };
    let other_id = if adopter == "n2" { "n3" } else { "n2" };
    assert_eq!(
        of("d1"),
        vec![
            format!("registered:@{adopter}"),
            format!("transition:maintenance@{adopter}")
        ]
    );
    assert_eq!(of("d2"), vec![format!("registered:@{other_id}")]);
    for id in ["d3", "d4"] {
        let offline: Vec<String> = of(id)
            .into_iter()
            .filter(|e| e.contains("offline"))
            .collect();
        assert_eq!(
            offline,
            vec![format!("transition:offline@{adopter}")],
            "{id}: {all:?}"
        );
    }
}

#[test]
fn a_node_paused_past_its_lease_publishes_nothing_stale_and_rejoins() {
    let surreal = SurrealServer::start();
    let store = surreal.url();
    let n1 = node(&store, "n1");
    let n2 = node(&store, "n2");
    let mut on_n1 = Conn::open(&n1.agents, "agent");
    registers(&mut on_n1, "p1");
    let (mut monitor, _) = subscribed(&n2.agents);

    // n1 is paused past its lease: n2 adopts p1.
    n1.signal("-STOP");
    let got = events_until(&mut monitor, "the adoption", |es| !adoptions(es).is_empty());
    assert_eq!(adoptions(&got)[0]["node"], "n2");
    // n1 wakes while its agent still talks to it: whatever it decides is refused; it says so
    // and joins again, with a new epoch and none of its old agents.
    n1.signal("-CONT");
    on_n1.send(json!({"type": "activity", "id": "p1", "activity": "working"}));
    n1.line_with("this node was fenced");
    let line = n1.line_with("vigil is supervising");
    let back = word(&line, "agents=");
    let metrics = http_get(&word(&line, "http="), "/metrics");
    assert!(
        metrics.contains("vigil_cluster_rejoins_total 1"),
        "{metrics}"
    );
    let mut again = Conn::open(&back, "agent");
    registers(&mut again, "r1");
    // Nothing n1 decided after the adoption reached the log; n2 owns p1 and changes it.
    let mut admin = Conn::open(&n2.agents, "admin");
    admin.send(
        json!({"type": "admin", "op": "maintenance", "args": {"id": "p1", "on": true}, "ref": 1}),
    );
    assert_eq!(admin.until("result")["ok"], true);
    let more = events_until(&mut monitor, "r1 registered and p1 in maintenance", |es| {
        es.iter()
            .any(|e| e["agent"] == "p1" && e["to"] == "maintenance")
            && es.iter().any(|e| is(e, "registered", "r1"))
    });
    let r1 = more.iter().find(|e| is(e, "registered", "r1")).expect("r1");
    assert_eq!(r1["node"], "n1", "n1 rejoined: {r1}");
    let more: Vec<Value> = more.into_iter().filter(|e| e["agent"] != "r1").collect();
    let stale: Vec<&Value> = more.iter().filter(|e| e["node"] == "n1").collect();
    assert!(
        stale.is_empty(),
        "n1 published after its adoption: {stale:?}"
    );
}

#[test]
fn a_store_is_one_processs_or_one_clusters() {
    let surreal = SurrealServer::start();
    let store = surreal.url();
    let n1 = node(&store, "n1");
    // A process without [cluster] beside a live node is refused, naming it.
    let (mut alone, lines) = vigil(&store, &[("VIGIL_STORE__HOLD_LEASE", "2s".to_string())]);
    let (status, text) = exit_of(&mut alone, &lines, Duration::from_secs(60));
    assert!(!status.success(), "{text}");
    assert!(text.contains("used by a live cluster (node n1"), "{text}");
    drop(n1);

    // And a node beside a live process alone on its store.
    let surreal = SurrealServer::start();
    let store = surreal.url();
    let _alone = Vigil::start(&store, &[("VIGIL_STORE__HOLD_LEASE", "2s".to_string())]);
    let (mut n2, lines) = vigil(
        &store,
        &[
            ("VIGIL_CLUSTER__NODE_ID", "n2".to_string()),
            ("VIGIL_CLUSTER__LEASE", "2s".to_string()),
        ],
    );
    let (status, text) = exit_of(&mut n2, &lines, Duration::from_secs(60));
    assert!(!status.success(), "{text}");
    assert!(text.contains("not a cluster node"), "{text}");
}
