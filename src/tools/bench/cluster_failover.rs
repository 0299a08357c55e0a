//! The failover phase of `vigil bench cluster`: agents on node 1 beating; node 1 is killed
//! (`kill -9`); most agents reconnect at once to the survivors with `takeover`, the rest stay
//! silent. Figures: the time until every reconnecting agent is registered again, until the
//! survivors adopt node 1 (every silent agent supervised again), transitions of the agents
//! that reconnected (must be 0), and whether each silent agent goes offline exactly once
//! (must be).

use std::collections::HashMap;
use std::io::Write;
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};

use super::cluster::{collect, monitor, ClusterBench, Conn, Node};

/// What a node's death costs.
#[derive(Debug, Serialize)]
pub struct Failover {
    /// Agents on the killed node.
    pub agents: usize,
    /// Heartbeats per second the agents sent, summed over the nodes they beat on.
    pub heartbeats_per_sec: f64,
    /// From the kill until every reconnecting agent was registered again.
    pub reconnected_ms: f64,
    /// From the kill until the survivors adopted the dead node's agents.
    pub adopted_ms: f64,
    /// Transitions of the agents that reconnected, from the kill to the end (must be 0).
    pub transitions_of_reconnected: usize,
    /// Those transitions' events and the adoptions, to say what went wrong when there are
    /// any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reconnected_events: Vec<Value>,
    /// Silent agents, and how many went offline exactly once.
    pub silent: usize,
    /// Silent agents that went offline exactly once.
    pub silent_offline_once: usize,
}

/// Kills node 1 of `nodes` while its agents beat; see the module's documentation.
pub(super) fn failover(args: &ClusterBench, nodes: &mut Vec<Node>) -> anyhow::Result<Failover> {
    let rx = monitor(&nodes[1].agents)?;
    let ids: Vec<String> = (0..args.agents).map(|i| format!("f{i}")).collect();
    let silent: Vec<&String> = ids.iter().step_by(10).collect();
    let period = Duration::from_millis(250);
    // Each agent beats from its registration on (the list grows as they register).
    let beats = |mut c: TcpStream, ids: Arc<Mutex<Vec<String>>>| {
        std::thread::spawn(move || loop {
            let now: Vec<String> = ids.lock().map(|l| l.clone()).unwrap_or_default();
            for id in &now {
                let line = format!("{}\n", json!({"type": "heartbeat", "id": id}));
                if c.write_all(line.as_bytes()).is_err() {
                    return;
                }
            }
            std::thread::sleep(period);
        })
    };
    let mut on1 = Conn::open(&nodes[0].agents, "agent")?;
    let beating = Arc::new(Mutex::new(Vec::new()));
    beats(on1.write.try_clone()?, beating.clone());
    for id in &ids {
        on1.register(id, 1000, false)?;
        if let Ok(mut l) = beating.lock() {
            l.push(id.clone());
        }
    }
    let mine = |e: &Value| e["agent"].as_str().is_some_and(|a| a.starts_with('f'));
    let before = collect(&rx, args.agents, |e| e["event"] == "registered" && mine(e))?;
    let late = before
        .iter()
        .filter(|(_, e)| e["event"] == "transition" && mine(e))
        .count();
    anyhow::ensure!(
        late == 0,
        "the generator did not keep the agents beating before the kill ({late} transitions)"
    );
    let killed = Instant::now();
    let mut dead = nodes.remove(0);
    dead.child.kill()?;
    dead.child.wait()?;
    drop(dead);
    // The others come back at once, half to each survivor.
    let back: Vec<String> = ids
        .iter()
        .filter(|id| !silent.contains(id))
        .cloned()
        .collect();
    for (i, addr) in [&nodes[0].agents, &nodes[1].agents].into_iter().enumerate() {
        let mine: Vec<String> = back.iter().skip(i).step_by(2).cloned().collect();
        let mut c = Conn::open(addr, "agent")?;
        let beating = Arc::new(Mutex::new(Vec::new()));
        beats(c.write.try_clone()?, beating.clone());
        for id in mine {
            c.register(&id, 1000, true)?;
            if let Ok(mut l) = beating.lock() {
                l.push(id);
            }
        }
    }
    let reconnected_ms = killed.elapsed().as_secs_f64() * 1e3;
    let mut adopted_ms = None;
    let got = collect(&rx, silent.len(), |e| {
        e["to"] == "offline" && silent.iter().any(|s| e["agent"] == **s)
    })?;
    let mut offline: HashMap<&str, usize> = HashMap::new();
    let mut reconnected_events = Vec::new();
    for (at, e) in &got {
        if e["issue"] == "node_adopted" && adopted_ms.is_none() {
            adopted_ms = Some(at.duration_since(killed).as_secs_f64() * 1e3);
        }
        let agent = e["agent"].as_str().unwrap_or("");
        // (Adoptions are listed beside the transitions: a second one means a live node was
        // judged dead.)
        let adoption = e["issue"] == "node_adopted";
        if adoption || e["event"] == "transition" && back.iter().any(|b| b == agent) {
            let mut e = e.clone();
            e["ms_after_kill"] = json!(at.duration_since(killed).as_millis() as u64);
            reconnected_events.push(e);
        }
        if e["to"] == "offline" {
            *offline.entry(agent).or_default() += 1;
        }
    }
    Ok(Failover {
        agents: args.agents,
        heartbeats_per_sec: args.agents as f64 / period.as_secs_f64(),
        reconnected_ms,
        adopted_ms: adopted_ms.unwrap_or(f64::NAN),
        transitions_of_reconnected: reconnected_events
            .iter()
            .filter(|e| e["event"] == "transition")
            .count(),
        reconnected_events,
        silent: silent.len(),
        silent_offline_once: silent
            .iter()
            .filter(|s| offline.get(s.as_str()) == Some(&1))
            .count(),
    })
}
