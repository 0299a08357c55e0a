//! Admin and registrations on a cluster as a client of one node expects them: a
//! registration conflicts only while another node holds a connection for the agent; a policy
//! set on one node holds on every node; admin writes reach the agent's owner over TLS too; an
//! agent held by no connection beats, reports and leaves through any node.
//!
//! Runs a real SurrealDB server (`scripts/surrealdb-server`, built once; `VIGIL_SURREAL`
//! names a binary to use instead) and real `vigil serve` processes.

mod surreal;

use std::time::Duration;

use serde_json::json;
use surreal::cluster::{events_until, is, node, node_with, register, registers, subscribed};
use surreal::procs::{http_post, Conn};
use surreal::SurrealServer;

#[test]
fn an_agent_whose_connection_closed_registers_on_another_node_without_takeover() {
    let surreal = SurrealServer::start();
    let store = surreal.url();
    let n1 = node(&store, "n1");
    let n2 = node(&store, "n2");
    let (mut monitor, _) = subscribed(&n2.agents);
    let mut on_n1 = Conn::open(&n1.agents, "agent");
    registers(&mut on_n1, "m1");

    let mut got = events_until(&mut monitor, "m1 registered on n1", |es| {
        es.iter().any(|e| is(e, "registered", "m1"))
    });

    // While n1 holds a connection for it, registering it on n2 without takeover is a conflict
    // (once n2 knows from n1's lease where to ask it, within a quarter lease).
    let mut on_n2 = Conn::open(&n2.agents, "agent");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = register(&mut on_n2, "m1", 600_000, false);
        assert_eq!(r["code"], "conflict", "{r}");
        let message = r["message"].as_str().unwrap_or("");
        if message.contains("n1 of the cluster holds a live connection") {
            break;
        }
        assert!(
            message.contains("could not be asked") && std::time::Instant::now() < deadline,
            "{r}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Its connection to n1 closes: on n2 it registers as it would again on one node.
    drop(on_n1);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let r = loop {
        let r = register(&mut on_n2, "m1", 600_000, false);
        if r["type"] == "registered" || std::time::Instant::now() > deadline {
            break r;
        }
        // n1 has not seen the connection close yet.
        assert_eq!(r["code"], "conflict", "{r}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        (&r["type"], &r["incarnation"]),
        (&json!("registered"), &json!(2)),
        "{r}"
    );
    got.extend(events_until(&mut monitor, "m1 registered on n2", |es| {
        es.iter()
            .any(|e| is(e, "registered", "m1") && e["node"] == "n2")
    }));
    let m1: Vec<(&str, &str)> = got
        .iter()
        .filter(|e| e["agent"] == "m1")
        .map(|e| {
            (
                e["event"].as_str().unwrap_or(""),
                e["node"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        m1,
        vec![("registered", "n1"), ("registered", "n2")],
        "the move records no transition"
    );
}

#[test]
fn a_policy_set_on_one_node_takes_effect_on_every_node_and_on_nodes_started_later() {
    let surreal = SurrealServer::start();
    let store = surreal.url();
    let n1 = node(&store, "n1");
    let n2 = node(&store, "n2");
    let (mut monitor, _) = subscribed(&n1.agents);
    let mut stays = Conn::open(&n2.agents, "agent");
    registers(&mut stays, "q1");
    let mut leaves = Conn::open(&n2.agents, "agent");
    registers(&mut leaves, "q2");
    // n1 knows where n2 is once an admin write about n2's agent reaches n2 through it.
    let mut admin1 = Conn::open(&n1.agents, "admin");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        admin1.send(json!({"type": "admin", "op": "maintenance",
            "args": {"id": "q1", "on": true}, "ref": 1}));
        let r = admin1.recv().expect("an answer");
        if r["type"] == "result" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{r}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Set on n1, the policy holds on n2: q2's connection closes and it goes offline at once.
    admin1.send(json!({"type": "admin", "op": "set_policy",
        "args": {"kind": "worker", "on_disconnect": "offline"}, "ref": 2}));
    let r = admin1.until("result");
    assert_eq!(r["data"]["policy"]["on_disconnect"], "offline", "{r}");
    drop(leaves);
    let got = events_until(&mut monitor, "q2 offline", |es| {
        es.iter()
            .any(|e| e["agent"] == "q2" && e["to"] == "offline")
    });
    let offline = got
        .iter()
        .find(|e| e["agent"] == "q2" && e["to"] == "offline")
        .expect("q2 offline");
    assert_eq!(offline["node"], "n2", "{offline}");

    // A node that starts afterwards starts with it too.
    let n3 = node(&store, "n3");
    let mut late = Conn::open(&n3.agents, "agent");
    registers(&mut late, "q3");
    drop(late);
    let got = events_until(&mut monitor, "q3 offline", |es| {
        es.iter()
            .any(|e| e["agent"] == "q3" && e["to"] == "offline")
    });
    let offline = got
        .iter()
        .find(|e| e["agent"] == "q3" && e["to"] == "offline")
        .expect("q3 offline");
    assert_eq!(offline["node"], "n3", "{offline}");
}

#[tokio::test]
async fn admin_writes_reach_the_owner_over_tls() {
    use vigil::client::{ClientConfig, ClientTls, Connection, ServerFrame};
    use vigil::protocol::Role;
    let surreal = SurrealServer::start();
    let store = surreal.url();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls");
    let tls = [
        ("VIGIL_SERVER__TLS_CERT", dir.join("cert.pem")),
        ("VIGIL_SERVER__TLS_KEY", dir.join("key.pem")),
        ("VIGIL_CLUSTER__PEER_CA", dir.join("ca.pem")),
    ]
    .map(|(k, v)| (k, v.display().to_string()));
    let (n1, n2) = tokio::task::spawn_blocking(move || {
        (node_with(&store, "n1", &tls), node_with(&store, "n2", &tls))
    })
    .await
    .expect("the nodes start");
    let ca = std::fs::read(dir.join("ca.pem")).expect("the test CA");
    let connect = |addr: &str, role| {
        let cfg = ClientConfig::new(addr).tls(ClientTls::with_root_pem(&ca, "localhost").unwrap());
        async move {
            Connection::connect(&cfg, role)
                .await
                .expect("a TLS connection")
        }
    };
    let mut agent = connect(&n2.agents, Role::Agent).await;
    agent
        .send(&json!({"type": "register", "id": "t1", "heartbeat_interval_ms": 600000, "ref": 1}))
        .await
        .unwrap();
    match agent.recv().await.unwrap().map(|r| r.frame) {
        Some(ServerFrame::Registered { id, .. }) => assert_eq!(id, "t1"),
        other => panic!("{other:?}"),
    }
    // Sent to n1, which forwards it to n2 over TLS.
    let mut admin = connect(&n1.agents, Role::Admin).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let data = loop {
        admin
            .send(&json!({"type": "admin", "op": "maintenance", "args": {"id": "t1", "on": true}, "ref": 2}))
            .await
            .unwrap();
        match admin.recv().await.unwrap().map(|r| r.frame) {
            Some(ServerFrame::Result { data, .. }) => break data,
            // n1 has not applied t1's registration, or has not read n2's lease, yet.
            Some(ServerFrame::Error { message, .. })
                if (message.contains("not known yet") || message.contains("unknown agent"))
                    && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(data["status"], "maintenance", "{data}");
}

#[test]
fn an_http_agent_registered_on_one_node_beats_reports_and_leaves_through_another() {
    let surreal = SurrealServer::start();
    let store = surreal.url();
    let n1 = node(&store, "n1");
    let n2 = node(&store, "n2");
    let (mut monitor, _) = subscribed(&n2.agents);
    let reg = json!({"id": "cron-1", "kind": "cron", "heartbeat_interval_ms": 600_000});
    let (status, answer) = http_post(&n1.http, "/api/v1/agents", &reg);
    assert_eq!(status, 201, "{answer}");
    events_until(&mut monitor, "cron-1 registered on n1", |es| {
        es.iter()
            .any(|e| is(e, "registered", "cron-1") && e["node"] == "n1")
    });

    // A beat through n2 (a load balancer's choice): n1 supervises the agent and takes it.
    // (n2 knows where n1 listens from n1's lease, within a quarter lease.)
    let beat = json!({"status": "degraded"});
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, answer) = http_post(&n2.http, "/api/v1/agents/cron-1/heartbeat", &beat);
        if status == 200 {
            assert_eq!(answer, json!({"id": "cron-1"}));
            break;
        }
        assert!(
            answer["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("address is not known yet"))
                && std::time::Instant::now() < deadline,
            "{status} {answer}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let degraded = events_until(&mut monitor, "cron-1 degraded by its report", |es| {
        es.iter()
            .any(|e| is(e, "transition", "cron-1") && e["to"] == "degraded")
    });
    let t = degraded.iter().find(|e| e["to"] == "degraded").unwrap();
    assert_eq!(
        (&t["node"], &t["reason"]),
        (&json!("n1"), &json!("reported_degraded")),
        "{t}"
    );

    let job = json!({"job": "nightly", "state": "running"});
    let (status, answer) = http_post(&n2.http, "/api/v1/agents/cron-1/jobs", &job);
    assert_eq!(status, 200, "{answer}");
    events_until(&mut monitor, "the job reported through n2", |es| {
        es.iter().any(|e| is(e, "job", "cron-1"))
    });

    let (status, answer) = http_post(&n2.http, "/api/v1/agents/cron-1/deregister", &json!({}));
    assert_eq!(status, 200, "{answer}");
    events_until(&mut monitor, "cron-1 deregistered", |es| {
        es.iter().any(|e| is(e, "deregistered", "cron-1"))
    });
    // Unknown everywhere now: a beat is refused on either node.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, answer) = http_post(&n2.http, "/api/v1/agents/cron-1/heartbeat", &json!({}));
        if status == 404 {
            assert_eq!(answer["error"]["code"], "not_registered", "{answer}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{status} {answer}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
