//! What one node of a cluster does for all, the keeper: the checkpoint of the fleet and the
//! retention of the shared log (a node that starts after the log was trimmed knows the whole
//! fleet, and which node owns each agent), and the sinks (delivered by one node, and by
//! another when it dies, from where the first left off).
//!
//! Runs a real SurrealDB server (`scripts/surrealdb-server`, built once; `VIGIL_SURREAL`
//! names a binary to use instead) and real `vigil serve` processes.

mod surreal;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use surreal::cluster::{adoptions, events_until, node_with, registers, subscribed};
use surreal::procs::{http_get, word, Conn, Vigil};
use surreal::SurrealServer;

/// One admin request on `conn`: its `result` frame, or its `error`.
fn admin(conn: &mut Conn, op: &str, args: Value) -> Value {
    conn.send(json!({"type": "admin", "op": op, "args": args, "ref": op}));
    loop {
        let f = conn.recv().expect("an answer");
        if f["ref"] == op {
            return f;
        }
    }
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
        registers(&mut on_n1, id);
        if i == 2 {
            for id in &ids[..3] {
                let r = admin(&mut admin1, "maintenance", json!({"id": id, "on": true}));
                assert_eq!(r["ok"], true, "{r}");
            }
        }
    }

    // The keeper writes the checkpoint and trims the log behind it (keeping 5 of the 15
    // events): the transitions to maintenance go from the log.
    trimmed_past(&mut admin1, 6);

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
    let (mut monitor, _) = subscribed(&n2.agents);
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

/// The seqs `node`'s log sink delivered, read from its log until `done` says they are enough
/// (60 s at most).
fn delivered_until(node: &Vigil, what: &str, done: impl Fn(&[u64]) -> bool) -> Vec<u64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seqs = Vec::new();
    while !done(&seqs) {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = node
            .lines
            .recv_timeout(left)
            .unwrap_or_else(|e| panic!("no {what} ({e}); delivered {seqs:?}"));
        if line.contains("vigil::sink") {
            seqs.push(word(&line, "seq=").parse().expect("a seq"));
        }
    }
    seqs
}

/// What `node`'s log sink delivered among the lines it wrote so far.
fn delivered_so_far(node: &Vigil) -> Vec<u64> {
    node.lines
        .try_iter()
        .filter(|l| l.contains("vigil::sink"))
        .map(|l| word(&l, "seq=").parse().expect("a seq"))
        .collect()
}

#[test]
fn one_node_delivers_the_sinks_and_another_goes_on_when_it_dies() {
    let surreal = SurrealServer::start();
    let store = surreal.url();
    let dir = std::env::temp_dir().join(format!("vigil-cluster-sinks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let config = dir.join("vigil.toml");
    std::fs::write(
        &config,
        "[[sinks]]\nname = \"all\"\ntype = \"log\"\nstart = \"beginning\"\n",
    )
    .expect("the configuration");
    let env = [("VIGIL_CONFIG", config.display().to_string())];
    let mut n1 = node_with(&store, "n1", &env);
    n1.line_with("this node keeps the fleet's checkpoint and delivers the sinks");
    let n2 = node_with(&store, "n2", &env);
    let mut admin2 = Conn::open(&n2.agents, "admin");
    let sinks = admin(&mut admin2, "sinks", json!({}));
    assert_eq!(sinks["data"][0]["state"], "standby", "{sinks}");
    assert!(http_get(&n1.http, "/metrics").contains("vigil_cluster_keeper 1"));
    assert!(http_get(&n2.http, "/metrics").contains("vigil_cluster_keeper 0"));
    assert_eq!(sinks["data"][0]["lag"], 0, "{sinks}");

    // Agents on n2; n1 delivers their events, n2 does not.
    let mut on_n2 = Conn::open(&n2.agents, "agent");
    for id in ["s1", "s2", "s3", "s4"] {
        registers(&mut on_n2, id);
    }
    let first = delivered_until(&n1, "n1 delivering 1..4", |s| s.len() >= 4);
    assert_eq!(first, vec![1, 2, 3, 4]);
    assert_eq!(delivered_so_far(&n2), Vec::<u64>::new(), "n2 delivered too");

    // n1 dies: n2 takes the role over and delivers from n1's saved cursor on.
    n1.child.kill().expect("kill -9");
    let _ = n1.child.wait();
    for id in ["s5", "s6"] {
        registers(&mut on_n2, id);
    }
    let then = delivered_until(&n2, "n2 delivering up to 6", |s| s.contains(&6));
    assert!(
        then.windows(2).all(|w| w[0] < w[1]),
        "in seq order, once each: {then:?}"
    );
    let all: BTreeSet<u64> = first.iter().chain(&then).copied().collect();
    assert_eq!(
        all,
        (1..=6).collect(),
        "every event delivered: n1 {first:?}, n2 {then:?}"
    );
    let sinks = admin(&mut admin2, "sinks", json!({}));
    assert_eq!(sinks["data"][0]["state"], "ok", "{sinks}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The ids `list` answers with on `conn`.
fn listed(conn: &mut Conn) -> BTreeSet<String> {
    let list = admin(conn, "list", json!({}));
    list["data"]
        .as_array()
        .unwrap_or_else(|| panic!("agents: {list}"))
        .iter()
        .filter_map(|a| a["id"].as_str().map(str::to_string))
        .collect()
}

/// Waits (60 s at most) until the oldest event `conn`'s node still has comes after `seq`.
fn trimmed_past(conn: &mut Conn, seq: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = admin(conn, "events", json!({"since": 0, "limit": 1}));
        if r["data"][0]["seq"].as_u64().unwrap_or(0) > seq {
            return;
        }
        assert!(Instant::now() < deadline, "the log still starts at {r}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn agents_that_left_long_ago_are_dropped_on_every_node_and_from_the_checkpoint() {
    let surreal = SurrealServer::start();
    let store = surreal.url();
    let keep = [
        ("VIGIL_STORE__CHECKPOINT_INTERVAL", "200ms".to_string()),
        ("VIGIL_STORE__EVENT_RETENTION_COUNT", "5".to_string()),
        ("VIGIL_STORE__LEFT_TTL", "1s".to_string()),
    ];
    let n1 = node_with(&store, "n1", &keep);
    n1.line_with("this node keeps the fleet's checkpoint and delivers the sinks");
    let n2 = node_with(&store, "n2", &keep);
    let mut on_n1 = Conn::open(&n1.agents, "agent");
    for id in ["gone", "stays"] {
        registers(&mut on_n1, id);
    }
    on_n1.send(json!({"type": "deregister", "id": "gone", "ref": "bye"}));
    assert_eq!(on_n1.until("deregistered")["id"], "gone");
    let mut admin1 = Conn::open(&n1.agents, "admin");
    let mut admin2 = Conn::open(&n2.agents, "admin");

    // A second later both nodes drop it, and the keeper rewrites the checkpoint without it.
    n1.line_with("the fleet's checkpoint was written whole, without the agents that left");
    let deadline = Instant::now() + Duration::from_secs(60);
    while listed(&mut admin2).contains("gone") {
        assert!(
            Instant::now() < deadline,
            "n2 still lists the agent that left"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(listed(&mut admin1), BTreeSet::from(["stays".to_string()]));

    // Once the log no longer holds its events, a node that keeps agents that left for ever
    // starts from the checkpoint alone: it does not know the agent either.
    for i in 0..8 {
        let id = format!("x{i}");
        registers(&mut on_n1, &id);
    }
    trimmed_past(&mut admin1, 3);
    let n3 = node_with(
        &store,
        "n3",
        &[
            ("VIGIL_STORE__CHECKPOINT_INTERVAL", "200ms".to_string()),
            ("VIGIL_STORE__LEFT_TTL", "0s".to_string()),
        ],
    );
    let mut admin3 = Conn::open(&n3.agents, "admin");
    let on_n3 = listed(&mut admin3);
    assert!(on_n3.contains("stays") && on_n3.contains("x0"), "{on_n3:?}");
    assert!(!on_n3.contains("gone"), "the checkpoint kept it: {on_n3:?}");
}

/// A webhook receiver on loopback: answers 400 until `accepting`, then 204, and keeps the
/// seqs of the events it accepted.
struct Receiver {
    addr: std::net::SocketAddr,
    accepting: Arc<AtomicBool>,
    got: Arc<Mutex<Vec<u64>>>,
}

impl Receiver {
    fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
        let addr = listener.local_addr().expect("its address");
        let accepting = Arc::new(AtomicBool::new(false));
        let got = Arc::new(Mutex::new(Vec::new()));
        let (acc, g) = (accepting.clone(), got.clone());
        std::thread::spawn(move || {
            for sock in listener.incoming().flatten() {
                let (acc, g) = (acc.clone(), g.clone());
                std::thread::spawn(move || Receiver::serve(sock, &acc, &g));
            }
        });
        Receiver {
            addr,
            accepting,
            got,
        }
    }

    fn serve(sock: std::net::TcpStream, accepting: &AtomicBool, got: &Mutex<Vec<u64>>) {
        let mut w = sock.try_clone().expect("the socket");
        let mut r = BufReader::new(sock);
        loop {
            let mut length = 0;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                if let Some((k, v)) = line.split_once(':') {
                    if k.eq_ignore_ascii_case("content-length") {
                        length = v.trim().parse().expect("a length");
                    }
                }
            }
            let mut body = vec![0; length];
            if r.read_exact(&mut body).is_err() {
                return;
            }
            let ok = accepting.load(Ordering::SeqCst);
            if ok {
                let v: Value = serde_json::from_slice(&body).expect("a JSON body");
                let seqs = v["events"].as_array().expect("events").iter();
                got.lock()
                    .expect("the seqs")
                    .extend(seqs.filter_map(|e| e["seq"].as_u64()));
            }
            let status = if ok {
                "204 No Content"
            } else {
                "400 Bad Request"
            };
            let answer = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
            if w.write_all(answer.as_bytes()).is_err() {
                return;
            }
        }
    }
}

#[test]
fn a_replay_sent_to_a_standby_node_is_made_by_the_node_that_delivers() {
    let surreal = SurrealServer::start();
    let store = surreal.url();
    let hook = Receiver::start();
    let dir = std::env::temp_dir().join(format!("vigil-cluster-replay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let config = dir.join("vigil.toml");
    std::fs::write(
        &config,
        format!(
            "[[sinks]]\nname = \"picky\"\ntype = \"webhook\"\nurl = \"http://{}/hook\"\n\
             start = \"beginning\"\nevents = [\"registered\"]\n",
            hook.addr
        ),
    )
    .expect("the configuration");
    let env = [("VIGIL_CONFIG", config.display().to_string())];
    let n1 = node_with(&store, "n1", &env);
    n1.line_with("this node keeps the fleet's checkpoint and delivers the sinks");
    let n2 = node_with(&store, "n2", &env);
    let mut on_n2 = Conn::open(&n2.agents, "agent");
    for id in ["r1", "r2"] {
        registers(&mut on_n2, id);
    }
    // n1 delivers, the receiver refuses: dead letters, which n2 reads from the store.
    let mut admin2 = Conn::open(&n2.agents, "admin");
    let deadline = Instant::now() + Duration::from_secs(60);
    let (dead, letters) = loop {
        let dead = admin(&mut admin2, "dead_letters", json!({"sink": "picky"}));
        let seqs: Vec<u64> = dead["data"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|d| d["events"].as_array().into_iter().flatten())
            .filter_map(|e| e["seq"].as_u64())
            .collect();
        if seqs.len() == 2 {
            // One letter per delivery tried: both events in one, or one each.
            let letters = dead["data"].as_array().map_or(0, Vec::len) as u64;
            break (seqs, letters);
        }
        assert!(Instant::now() < deadline, "no two dead letters: {dead}");
        std::thread::sleep(Duration::from_millis(100));
    };

    // The receiver is fixed; the operator asks n2, which does not deliver: n1 replays.
    hook.accepting.store(true, Ordering::SeqCst);
    let r = admin(&mut admin2, "replay", json!({"sink": "picky"}));
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(
        (r["data"]["delivered"].as_u64(), r["data"]["held"].as_u64()),
        (Some(letters), Some(0)),
        "{r}"
    );
    assert_eq!(*hook.got.lock().expect("the seqs"), dead);
    let left = admin(&mut admin2, "dead_letters", json!({"sink": "picky"}));
    assert_eq!(left["data"], json!([]), "{left}");
    let _ = std::fs::remove_dir_all(&dir);
}
