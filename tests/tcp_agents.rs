//! Protocol v1 over real sockets: handshake, agent frames, ownership, and bad input.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::Client;
use serde_json::json;
use vigil::serve::tcp::{Server, ServerConfig};
use vigil_actors::{AgentId, MemStore, Runtime, RuntimeConfig, Status};

/// The agent's record as the runtime holds it.
async fn record(rt: &Runtime, id: &str) -> vigil_actors::AgentRecord {
    match rt
        .admin(vigil_actors::AdminRequest::Get {
            id: AgentId::new(id).unwrap(),
        })
        .await
        .unwrap()
    {
        vigil_actors::AdminResponse::Agent(a) => *a,
        other => panic!("{other:?}"),
    }
}

/// An operator sets the agent online: a round trip through its actor, so whatever was sent
/// to it before is handled by the time this returns.
async fn set_online(rt: &Runtime, id: &str) {
    rt.admin(vigil_actors::AdminRequest::SetStatus {
        id: AgentId::new(id).unwrap(),
        status: Status::Online,
        reason: None,
    })
    .await
    .unwrap();
}

/// Waits until the server has seen every connection but one close.
async fn closed_down_to_one(server: &Server) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while server.connections() > 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the old connection was never closed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn setup(cfg: ServerConfig) -> (Server, Arc<Runtime>) {
    setup_with(RuntimeConfig::default(), cfg).await
}

async fn setup_with(rt_cfg: RuntimeConfig, cfg: ServerConfig) -> (Server, Arc<Runtime>) {
    let rt = Arc::new(Runtime::start(rt_cfg, MemStore::new()).await.unwrap());
    let server = Server::start(([127, 0, 0, 1], 0).into(), rt.clone(), cfg)
        .await
        .unwrap();
    (server, rt)
}

#[tokio::test]
async fn the_handshake_admits_only_hello_with_the_right_protocol_and_token() {
    let cfg = ServerConfig {
        agent_tokens: vec!["s3cret".into()],
        ..vigil::config::Config::default().server_config()
    };
    let (server, _rt) = setup(cfg).await;

    let mut c = Client::connect(server.local_addr()).await;
    c.send(json!({"type":"ping"})).await;
    c.expect_error("hello_required").await;
    assert_eq!(c.recv().await, None, "closed after hello_required");

    let mut c = Client::connect(server.local_addr()).await;
    c.send(json!({"type":"hello","protocol":2,"role":"agent","token":"s3cret"}))
        .await;
    c.expect_error("unsupported_protocol").await;
    assert_eq!(c.recv().await, None);

    let mut c = Client::connect(server.local_addr()).await;
    c.send(json!({"type":"hello","protocol":1,"role":"agent","token":"guess"}))
        .await;
    c.expect_error("unauthorized").await;
    assert_eq!(c.recv().await, None);

    let mut c = Client::connect(server.local_addr()).await;
    c.send(json!({"type":"hello","protocol":1,"role":"agent"}))
        .await;
    c.expect_error("unauthorized").await;

    // Monitors have no tokens configured: any token is fine.
    let mut c = Client::connect(server.local_addr()).await;
    c.send(json!({"type":"hello","protocol":1,"role":"monitor","ref":1}))
        .await;
    let w = c.expect("welcome").await;
    assert_eq!(w["ref"], 1);

    let mut c = Client::connect(server.local_addr()).await;
    c.send(json!({"type":"hello","protocol":1,"role":"agent","token":"s3cret","client":"t/1"}))
        .await;
    let w = c.expect("welcome").await;
    assert_eq!(w["protocol"], 1);
    assert!(w["session"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(w["server"].as_str().unwrap().starts_with("vigil/"));
    assert!(w["heartbeat_interval_ms"].as_u64().is_some());
    assert!(w["time"].as_str().unwrap().ends_with('Z'));
    server.stop().await;
}

#[tokio::test]
async fn an_agent_registers_beats_and_deregisters() {
    let (server, rt) = setup(vigil::config::Config::default().server_config()).await;
    let mut c = Client::hello(server.local_addr(), "agent", None).await;
    c.send(json!({"type":"register","id":"a1","kind":"worker","metadata":{"zone":"eu"},"ref":"r"}))
        .await;
    let r = c.expect("registered").await;
    assert_eq!(
        (&r["id"], &r["status"], &r["incarnation"], &r["ref"]),
        (&json!("a1"), &json!("online"), &json!(1), &json!("r"))
    );
    assert!(r["heartbeat_interval_ms"].as_u64().is_some());
    // A second agent on the same connection.
    c.send(json!({"type":"register","id":"a2"})).await;
    c.expect("registered").await;

    c.send(json!({"type":"heartbeat","id":"a1","ref":5})).await;
    assert_eq!(c.expect("ack").await["ref"], 5);
    // Without ref a heartbeat is not answered: the next frame is the pong.
    c.send(json!({"type":"heartbeat","id":"a2","status":"degraded"}))
        .await;
    c.send(json!({"type":"ping","ref":"p"})).await;
    let p = c.expect("pong").await;
    assert_eq!(p["ref"], "p");
    let a2 = rt.agent(&AgentId::new("a2").unwrap()).unwrap();
    assert!(a2.connected());

    c.send(json!({"type":"deregister","id":"a1","ref":9})).await;
    let d = c.expect("deregistered").await;
    assert_eq!((&d["id"], &d["ref"]), (&json!("a1"), &json!(9)));
    c.send(json!({"type":"heartbeat","id":"a1","ref":1})).await;
    c.expect_error("not_registered").await;

    // Closing the connection disconnects its agents; they stay registered.
    drop(c);
    let id = AgentId::new("a2").unwrap();
    let mut waited = 0;
    while rt.agent(&id).unwrap().connected() {
        assert!(
            waited < 500,
            "a2 still connected after its connection closed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
        waited += 1;
    }
    server.stop().await;
    let rt = Arc::try_unwrap(rt)
        .ok()
        .expect("the listener released the runtime");
    rt.shutdown().await.unwrap();
}

#[tokio::test]
async fn one_connection_owns_an_agent_until_another_takes_it_over() {
    let (server, rt) = setup(vigil::config::Config::default().server_config()).await;
    let mut a = Client::hello(server.local_addr(), "agent", None).await;
    let mut b = Client::hello(server.local_addr(), "agent", None).await;
    a.send(json!({"type":"register","id":"x"})).await;
    a.expect("registered").await;

    b.send(json!({"type":"register","id":"x","ref":1})).await;
    assert_eq!(b.expect_error("conflict").await["ref"], 1);
    b.send(json!({"type":"heartbeat","id":"x"})).await;
    b.expect_error("not_owner").await;
    b.send(json!({"type":"heartbeat","id":"nobody"})).await;
    b.expect_error("not_registered").await;
    b.send(json!({"type":"deregister","id":"x"})).await;
    b.expect_error("not_owner").await;
    assert!(rt.agent(&AgentId::new("x").unwrap()).is_some());

    b.send(json!({"type":"register","id":"x","takeover":true}))
        .await;
    assert_eq!(b.expect("registered").await["incarnation"], 2);
    let e = a.expect("evicted").await;
    assert_eq!(
        (&e["id"], &e["reason"]),
        (&json!("x"), &json!("taken_over"))
    );
    a.send(json!({"type":"heartbeat","id":"x"})).await;
    a.expect_error("not_owner").await;
    b.send(json!({"type":"heartbeat","id":"x","ref":2})).await;
    b.expect("ack").await;

    // The old owner closing does not disconnect the agent from its new owner: checked once
    // the server has seen the close (its connection count is back to one).
    drop(a);
    closed_down_to_one(&server).await;
    // A round trip through the agent's actor: whatever the close sent it is handled by now.
    set_online(&rt, "x").await;
    assert!(rt.agent(&AgentId::new("x").unwrap()).unwrap().connected());
    server.stop().await;
}

#[tokio::test]
async fn bad_frames_are_answered_change_nothing_and_too_many_close_the_connection() {
    let cfg = ServerConfig {
        max_frame_bytes: 256,
        max_bad_frames: 3,
        max_agents_per_connection: 2,
        ..vigil::config::Config::default().server_config()
    };
    let (server, rt) = setup(cfg).await;
    let mut c = Client::hello(server.local_addr(), "agent", None).await;
    c.send(json!({"type":"register","id":"ok"})).await;
    c.expect("registered").await;

    c.raw(b"this is not json\n").await;
    c.expect_error("bad_frame").await;
    c.raw(&[b'x'; 1000]).await;
    c.raw(b"\n").await;
    c.expect_error("frame_too_large").await;
    // A good frame resets the count of bad ones in a row.
    c.send(json!({"type":"ping"})).await;
    c.expect("pong").await;
    c.send(json!({"type":"launch","ref":"l"})).await;
    assert_eq!(c.expect_error("unknown_type").await["ref"], "l");
    c.send(json!({"type":"register"})).await;
    c.expect_error("missing_field").await;
    c.send(json!({"type":"ping"})).await;
    c.expect("pong").await;
    c.send(json!({"type":"register","id":"no spaces"})).await;
    c.expect_error("invalid_field").await;
    c.send(json!({"type":"register","id":"fast","heartbeat_interval_ms":1}))
        .await;
    c.expect_error("invalid_field").await;
    assert!(rt.agent(&AgentId::new("fast").unwrap()).is_none());
    c.send(json!({"type":"subscribe"})).await;
    c.expect_error("forbidden").await;
    c.raw(b"\n\r\n").await; // blank lines are ignored
    c.send(json!({"type":"register","id":"two"})).await;
    c.expect("registered").await;
    c.send(json!({"type":"register","id":"three"})).await;
    c.expect_error("overloaded").await;
    // Three bad frames in a row: the third is answered, then a final error, then close.
    for _ in 0..3 {
        c.raw(b"{\n").await;
    }
    for _ in 0..3 {
        c.expect_error("bad_frame").await;
    }
    c.expect_error("bad_frame").await;
    assert_eq!(c.recv().await, None);
    // Nothing the bad frames said changed the agent.
    let record = record(&rt, "ok").await;
    assert_eq!((record.status, record.incarnation), (Status::Online, 1));
    server.stop().await;
}

#[tokio::test]
async fn a_connection_that_never_says_hello_is_closed_after_the_handshake_timeout() {
    let cfg = ServerConfig {
        handshake_timeout: Duration::from_millis(300),
        ..vigil::config::Config::default().server_config()
    };
    let (server, _rt) = setup(cfg).await;
    let mut idle = Client::connect(server.local_addr()).await;
    let mut partial = Client::connect(server.local_addr()).await;
    partial.raw(b"{\"type\":\"hel").await; // half a frame, never finished
    idle.expect_error("hello_required").await;
    assert_eq!(idle.recv().await, None);
    partial.expect_error("hello_required").await;
    assert_eq!(partial.recv().await, None);
    // Meanwhile a well-behaved agent is served.
    let mut c = Client::hello(server.local_addr(), "agent", None).await;
    c.send(json!({"type":"ping"})).await;
    c.expect("pong").await;
    server.stop().await;
}

#[tokio::test]
async fn connections_beyond_the_limit_are_refused_with_overloaded() {
    let cfg = ServerConfig {
        max_connections: 2,
        ..vigil::config::Config::default().server_config()
    };
    let (server, _rt) = setup(cfg).await;
    let a = Client::hello(server.local_addr(), "agent", None).await;
    let mut b = Client::hello(server.local_addr(), "agent", None).await;
    let mut c = Client::connect(server.local_addr()).await;
    c.expect_error("overloaded").await;
    assert_eq!(c.recv().await, None);
    // The two admitted connections are unaffected.
    b.send(json!({"type":"ping"})).await;
    b.expect("pong").await;
    // Once one closes (and the listener has seen it go), a new one is admitted.
    drop(a);
    let mut admitted = false;
    for _ in 0..200 {
        let mut d = Client::connect(server.local_addr()).await;
        d.send(json!({"type":"hello","protocol":1,"role":"agent"}))
            .await;
        match d.recv().await {
            Some(v) if v["type"] == "welcome" => {
                admitted = true;
                break;
            }
            Some(v) => assert_eq!(v["code"], "overloaded", "{v}"),
            None => {}
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(admitted, "no connection admitted after one of two closed");
    server.stop().await;
}

/// Random bytes, and random mixes of pieces of frames, sent over real connections: the
/// server answers or closes, never changes an agent it was not validly asked to, and keeps
/// serving everyone else.
#[tokio::test]
async fn garbage_over_the_socket_changes_nothing() {
    let (server, rt) = setup(ServerConfig {
        max_frame_bytes: 512,
        max_bad_frames: 1000,
        ..vigil::config::Config::default().server_config()
    })
    .await;
    let mut owner = Client::hello(server.local_addr(), "agent", None).await;
    owner.send(json!({"type":"register","id":"victim"})).await;
    owner.expect("registered").await;

    let pieces: [&[u8]; 12] = [
        b"{\"type\":\"heartbeat\",\"id\":\"victim\"",
        b"{\"type\":\"deregister\",\"id\":\"victim\"}",
        b"{\"type\":\"register\",\"id\":",
        b"\"victim\",\"takeover\":tru",
        b"\n",
        b"\r\n",
        b"}",
        b"{\"type\":\"ping\"}\n",
        b"\xff\xfe\x00",
        b"[[[[",
        b"\"ref\":{}",
        b"{\"type\":\"hello\",\"protocol\":1,\"role\":\"agent\"}\n",
    ];
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..40 {
        let mut c = Client::hello(server.local_addr(), "agent", None).await;
        let mut bytes = Vec::new();
        for _ in 0..(next() % 40) {
            match next() % 3 {
                0 => bytes.extend((0..next() % 64).map(|_| next() as u8)),
                _ => bytes.extend_from_slice(pieces[(next() % pieces.len() as u64) as usize]),
            }
        }
        bytes.push(b'\n');
        c.raw(&bytes).await;
        c.send(json!({"type":"ping","ref":"end"})).await;
        // Read until the final pong: every reply is a JSON frame of the protocol.
        loop {
            let v = c.recv().await.expect("the server keeps the connection");
            assert!(
                ["error", "pong", "registered", "ack", "deregistered"]
                    .contains(&v["type"].as_str().unwrap_or("")),
                "{v}"
            );
            // A garbage connection may only ever be refused the victim.
            if v["type"] == "registered" || v["type"] == "deregistered" {
                assert_ne!(v["id"], "victim", "{v}");
            }
            if v["type"] == "pong" && v["ref"] == "end" {
                break;
            }
        }
    }
    // The victim is still its owner's, online, and nothing else happened to it.
    owner
        .send(json!({"type":"heartbeat","id":"victim","ref":1}))
        .await;
    owner.expect("ack").await;
    let record = record(&rt, "victim").await;
    assert_eq!((record.status, record.incarnation), (Status::Online, 1));
    server.stop().await;
}

/// Every event the runtime has recorded, oldest first.
async fn events(rt: &Runtime) -> Vec<vigil_actors::Event> {
    match rt
        .admin(vigil_actors::AdminRequest::Events {
            id: None,
            since: Some(0),
            limit: Some(10_000),
            latest: false,
        })
        .await
        .unwrap()
    {
        vigil_actors::AdminResponse::Events(e) => e,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn activity_and_job_frames_are_acked_recorded_once_and_checked() {
    let (server, rt) = setup(vigil::config::Config::default().server_config()).await;
    let mut c = Client::hello(server.local_addr(), "agent", None).await;
    c.send(json!({"type":"register","id":"w1","ref":1})).await;
    c.expect("registered").await;

    c.send(json!({"type":"activity","id":"w1","activity":"working","detail":"step 1","ref":"a1"}))
        .await;
    assert_eq!(c.expect("ack").await["ref"], "a1");
    // The same activity again (and on a heartbeat): no new event.
    c.send(json!({"type":"activity","id":"w1","activity":"working","ref":"a2"}))
        .await;
    c.expect("ack").await;
    c.send(json!({"type":"heartbeat","id":"w1","activity":"working","ref":"a3"}))
        .await;
    c.expect("ack").await;
    c.send(json!({"type":"heartbeat","id":"w1","activity":"tool_calling","ref":"a4"}))
        .await;
    c.expect("ack").await;

    c.send(json!({"type":"job","id":"w1","job":"j1","state":"running","progress":0.25,"ref":"j1"}))
        .await;
    assert_eq!(c.expect("ack").await["ref"], "j1");
    c.send(json!({"type":"job","id":"w1","job":"j1","state":"completed","result":{"n":1}}))
        .await;
    // Checks: a progress outside 0..1, an unknown state, an empty activity, another's agent.
    c.send(json!({"type":"job","id":"w1","job":"j2","state":"running","progress":1.5,"ref":"b1"}))
        .await;
    assert_eq!(c.expect_error("invalid_field").await["ref"], "b1");
    c.send(json!({"type":"job","id":"w1","job":"j2","state":"paused","ref":"b2"}))
        .await;
    c.expect_error("invalid_field").await;
    c.send(json!({"type":"activity","id":"w1","activity":"","ref":"b3"}))
        .await;
    c.expect_error("invalid_field").await;
    c.send(json!({"type":"job","id":"nobody","job":"j3","state":"running","ref":"b4"}))
        .await;
    c.expect_error("not_registered").await;
    c.send(json!({"type":"activity","id":"w1","ref":"b5"}))
        .await;
    c.expect_error("missing_field").await;
    // A ping after everything: the casts before it have reached the registry.
    c.send(json!({"type":"ping","ref":"end"})).await;
    c.expect("pong").await;

    // The events are visible once durable.
    let got: Vec<_> = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let e = events(&rt).await;
            if e.len() >= 5 {
                break e.into_iter().map(|e| e.body).collect();
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("five events within 10 s");
    use vigil_actors::EventBody;
    assert!(matches!(got[0], EventBody::Registered { .. }));
    assert_eq!(
        got[1],
        EventBody::Activity {
            from: None,
            to: "working".into(),
            detail: Some("step 1".into())
        }
    );
    assert_eq!(
        got[2],
        EventBody::Activity {
            from: Some("working".into()),
            to: "tool_calling".into(),
            detail: None
        }
    );
    assert!(
        matches!(&got[3], EventBody::Job { job, from: None, to, progress: Some(p), .. } if job == "j1" && to == "running" && *p == 0.25),
        "{:?}",
        got[3]
    );
    assert!(
        matches!(&got[4], EventBody::Job { from: Some(f), to, .. } if f == "running" && to == "completed"),
        "{:?}",
        got[4]
    );
    assert_eq!(got.len(), 5, "{got:?}");
    assert_eq!(
        record(&rt, "w1").await.activity.as_deref(),
        Some("tool_calling")
    );
    server.stop().await;
}

#[tokio::test]
async fn frames_beyond_the_rate_limit_are_refused_with_rate_limited() {
    let cfg = ServerConfig {
        rate_limit: 5,
        rate_burst: 10,
        max_bad_frames: 1000,
        ..vigil::config::Config::default().server_config()
    };
    let (server, _rt) = setup(cfg).await;
    let mut c = Client::hello(server.local_addr(), "agent", None).await;
    let mut burst = String::new();
    for i in 0..40 {
        burst.push_str(&format!("{{\"type\":\"ping\",\"ref\":{i}}}\n"));
    }
    c.raw(burst.as_bytes()).await;
    let (mut pongs, mut limited) = (0, 0);
    for i in 0..40 {
        let v = c.recv().await.expect("an answer to every frame");
        assert_eq!(v["ref"], i, "answers in order: {v}");
        match v["type"].as_str() {
            Some("pong") => pongs += 1,
            Some("error") if v["code"] == "rate_limited" => limited += 1,
            _ => panic!("{v}"),
        }
    }
    // The burst of 10 passes (and at 5/s at most a few more while the 40 are read).
    assert!((10..=15).contains(&pongs), "{pongs} pongs");
    assert_eq!(pongs + limited, 40);
    server.stop().await;
}

#[tokio::test]
async fn too_many_refused_frames_in_a_row_close_a_flooding_connection() {
    let cfg = ServerConfig {
        rate_limit: 1,
        rate_burst: 1,
        max_bad_frames: 5,
        ..vigil::config::Config::default().server_config()
    };
    let (server, _rt) = setup(cfg).await;
    let mut c = Client::hello(server.local_addr(), "agent", None).await;
    let flood = "{\"type\":\"ping\"}\n".repeat(50);
    c.raw(flood.as_bytes()).await;
    c.expect("pong").await;
    for _ in 0..5 {
        c.expect_error("rate_limited").await;
    }
    c.expect_error("bad_frame").await;
    assert_eq!(c.recv().await, None, "closed");
    server.stop().await;
}

#[tokio::test]
async fn an_operator_eviction_reaches_the_owning_connection() {
    let (server, rt) = setup(vigil::config::Config::default().server_config()).await;
    let mut c = Client::hello(server.local_addr(), "agent", None).await;
    c.send(json!({"type":"register","id":"e1","ref":1})).await;
    c.expect("registered").await;
    rt.admin(vigil_actors::AdminRequest::Evict {
        id: AgentId::new("e1").unwrap(),
        reason: Some("decommissioned".into()),
    })
    .await
    .unwrap();
    let v = c.expect("evicted").await;
    assert_eq!(
        (v["id"].as_str(), v["reason"].as_str()),
        (Some("e1"), Some("evicted"))
    );
    c.send(json!({"type":"heartbeat","id":"e1","ref":2})).await;
    c.expect_error("not_registered").await;
    // It may register again and is online again.
    c.send(json!({"type":"register","id":"e1","ref":3})).await;
    assert_eq!(c.expect("registered").await["incarnation"], 2);
    assert_eq!(record(&rt, "e1").await.status, Status::Online);
    server.stop().await;
}

#[tokio::test]
async fn stopping_the_listener_closes_connections_without_disconnecting_their_agents() {
    let (server, rt) = setup(vigil::config::Config::default().server_config()).await;
    let mut c = Client::hello(server.local_addr(), "agent", None).await;
    c.send(json!({"type":"register","id":"d1","ref":1})).await;
    c.expect("registered").await;
    let stopped = tokio::spawn(server.stop());
    assert_eq!(c.recv().await, None, "the connection is closed");
    tokio::time::timeout(Duration::from_secs(5), stopped)
        .await
        .expect("the listener stops within the drain timeout")
        .unwrap();
    let r = record(&rt, "d1").await;
    assert!(r.connected, "a shutdown is not the agent's disconnection");
    assert_eq!(r.status, Status::Online);
}

#[tokio::test]
async fn tls_connections_speak_the_same_protocol() {
    use vigil::client::{ClientConfig, ClientTls, Connection, ServerFrame};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls");
    let tls = vigil::serve::tls::tls_config(&dir.join("cert.pem"), &dir.join("key.pem")).unwrap();
    let cfg = ServerConfig {
        tls: Some(tls),
        ..vigil::config::Config::default().server_config()
    };
    let (server, rt) = setup(cfg).await;
    let ca = std::fs::read(dir.join("ca.pem")).unwrap();
    let client_cfg = ClientConfig::new(server.local_addr().to_string())
        .tls(ClientTls::with_root_pem(&ca, "localhost").unwrap());
    let mut conn = Connection::connect(&client_cfg, vigil::protocol::Role::Agent)
        .await
        .unwrap();
    assert_eq!(conn.welcome.protocol, 1);
    conn.send(&json!({"type":"register","id":"t1","ref":"r"}))
        .await
        .unwrap();
    match conn.recv().await.unwrap().map(|r| r.frame) {
        Some(ServerFrame::Registered { id, .. }) => assert_eq!(id, "t1"),
        other => panic!("{other:?}"),
    }
    assert_eq!(record(&rt, "t1").await.status, Status::Online);

    // A client that does not speak TLS gets nowhere (and nothing registers).
    let mut plain = Client::connect(server.local_addr()).await;
    plain
        .send(json!({"type":"hello","protocol":1,"role":"agent"}))
        .await;
    let answer = tokio::time::timeout(Duration::from_secs(5), plain.lines.next_line()).await;
    assert!(
        !matches!(answer, Ok(Ok(Some(ref l))) if l.contains("welcome")),
        "{answer:?}"
    );
    // A wrong name is refused by the client.
    let wrong = ClientConfig::new(server.local_addr().to_string())
        .tls(ClientTls::with_root_pem(&ca, "example.com").unwrap());
    assert!(Connection::connect(&wrong, vigil::protocol::Role::Agent)
        .await
        .is_err());
    server.stop().await;
}

#[tokio::test]
async fn the_rust_client_registers_beats_and_comes_back_after_the_server_does() {
    use vigil::client::{AgentClient, AgentSpec, ClientConfig, ClientEvent};
    let (server, rt) = setup_with(
        RuntimeConfig {
            min_heartbeat_interval: Duration::from_millis(100),
            ..RuntimeConfig::default()
        },
        vigil::config::Config::default().server_config(),
    )
    .await;
    let addr = server.local_addr();
    let mut cfg = ClientConfig::new(addr.to_string());
    cfg.backoff_min = Duration::from_millis(20);
    cfg.backoff_max = Duration::from_millis(200);
    let every = Duration::from_secs(1);
    let mut client = AgentClient::start(
        cfg,
        vec![
            AgentSpec::new("rc-1")
                .kind("worker")
                .heartbeat_interval(every),
            AgentSpec::new("rc-2").heartbeat_interval(every),
        ],
    )
    .unwrap();
    let mut seen = std::collections::BTreeMap::new();
    while seen.len() < 2 {
        match client.next_event().await.expect("events") {
            ClientEvent::Registered {
                id, incarnation, ..
            } => {
                seen.insert(id, incarnation);
            }
            ClientEvent::Connected { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(seen.values().copied().collect::<Vec<_>>(), vec![1, 1]);
    // Beating keeps them online; the first event after subscribing is the activity.
    let mut sub = rt.subscribe(Default::default()).await.unwrap();
    client.activity("rc-1", "working", None).await;
    let e = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .unwrap()
        .unwrap();
    match e {
        vigil_actors::SubscriptionItem::Event(e) => assert!(
            matches!(&e.body, vigil_actors::EventBody::Activity { to, .. } if to == "working"),
            "no transition before the activity: {e:?}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(record(&rt, "rc-2").await.status, Status::Online);

    // The server goes away and comes back on the same address: the client reconnects and
    // registers its agents again.
    server.stop().await;
    let server = Server::start(
        addr,
        rt.clone(),
        vigil::config::Config::default().server_config(),
    )
    .await
    .unwrap();
    let mut again = std::collections::BTreeMap::new();
    let mut disconnected = false;
    while again.len() < 2 {
        match tokio::time::timeout(Duration::from_secs(10), client.next_event())
            .await
            .expect("the client comes back")
            .expect("events")
        {
            ClientEvent::Registered {
                id, incarnation, ..
            } => {
                again.insert(id, incarnation);
            }
            ClientEvent::Disconnected { .. } => disconnected = true,
            ClientEvent::Connected { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    assert!(disconnected);
    assert_eq!(again.values().copied().collect::<Vec<_>>(), vec![2, 2]);
    client.stop().await;
    assert_eq!(record(&rt, "rc-1").await.status, Status::Left);
    server.stop().await;
}

#[tokio::test]
async fn a_monitor_gets_a_snapshot_then_every_later_event_and_can_replay_since() {
    let (server, _rt) = setup(vigil::config::Config::default().server_config()).await;
    let mut agent = Client::hello(server.local_addr(), "agent", None).await;
    agent
        .send(json!({"type":"register","id":"m1","ref":1}))
        .await;
    agent.expect("registered").await;

    let mut m = Client::hello(server.local_addr(), "monitor", None).await;
    // Agent frames are not a monitor's; an unknown topic is refused.
    m.send(json!({"type":"heartbeat","id":"m1","ref":"x"}))
        .await;
    m.expect_error("forbidden").await;
    m.send(json!({"type":"subscribe","topics":["weather"],"ref":"t"}))
        .await;
    m.expect_error("invalid_field").await;

    m.send(json!({"type":"subscribe","topics":["agents"],"snapshot":true,"ref":"s"}))
        .await;
    assert_eq!(m.expect("ack").await["ref"], "s");
    let snap = m.expect("snapshot").await;
    assert_eq!(snap["seq"], 1);
    assert_eq!(snap["agents"][0]["id"], "m1");
    assert_eq!(snap["agents"][0]["status"], "online");

    agent
        .send(json!({"type":"activity","id":"m1","activity":"working"}))
        .await;
    agent
        .send(json!({"type":"deregister","id":"m1","ref":2}))
        .await;
    agent.expect("deregistered").await;
    let e = m.expect("event").await;
    assert_eq!(
        (e["seq"].as_u64(), e["event"].as_str()),
        (Some(2), Some("activity"))
    );
    let e = m.expect("event").await;
    assert_eq!(
        (e["seq"].as_u64(), e["event"].as_str(), e["agent"].as_str()),
        (Some(3), Some("deregistered"), Some("m1"))
    );
    m.send(json!({"type":"unsubscribe","ref":"u"})).await;
    m.expect("ack").await;

    // Another monitor replays from seq 1: exactly the later events, in order.
    let mut r = Client::hello(server.local_addr(), "monitor", None).await;
    r.send(json!({"type":"subscribe","since":1})).await;
    let seqs: Vec<u64> = [r.expect("event").await, r.expect("event").await]
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![2, 3]);
    r.send(json!({"type":"ping","ref":"p"})).await;
    r.expect("pong").await;
    server.stop().await;
}

#[tokio::test]
async fn a_takeover_then_the_old_socket_closing_leaves_the_agent_online_under_on_disconnect_offline(
) {
    let rt_cfg = RuntimeConfig {
        policy: vigil_actors::Policy {
            on_disconnect: vigil_actors::OnDisconnect::Offline,
            ..vigil_actors::Policy::default()
        },
        ..RuntimeConfig::default()
    };
    let (server, rt) = setup_with(rt_cfg, vigil::config::Config::default().server_config()).await;
    let mut a = Client::hello(server.local_addr(), "agent", None).await;
    let mut b = Client::hello(server.local_addr(), "agent", None).await;
    a.send(json!({"type":"register","id":"x"})).await;
    a.expect("registered").await;
    b.send(json!({"type":"register","id":"x","takeover":true}))
        .await;
    b.expect("registered").await;
    // The old connection goes away (as a reconnecting agent's old socket does), whether or
    // not it read its `evicted` notice.
    drop(a);
    closed_down_to_one(&server).await;
    // A round trip through the agent's actor: whatever the close sent it is handled by now.
    b.send(json!({"type":"heartbeat","id":"x","status":"degraded","ref":1}))
        .await;
    b.expect("ack").await;
    set_online(&rt, "x").await;
    let x = record(&rt, "x").await;
    assert_eq!(x.status, Status::Online, "{x:?}");
    assert!(x.connected, "connected under its new owner");
    let offline = events(&rt).await.into_iter().any(|e| {
        matches!(
            e.body,
            vigil_actors::EventBody::Transition {
                to: Status::Offline,
                ..
            }
        )
    });
    assert!(!offline, "no offline transition for the move");
    server.stop().await;
}
