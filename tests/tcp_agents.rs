//! Protocol v1 over real sockets: handshake, agent frames and ownership here; bad input and
//! the bounds on a connection in `hostile`; TLS, the Rust client and monitors in `clients`.

#[path = "tcp_agents/clients.rs"]
mod clients;
mod common;
#[path = "tcp_agents/hostile.rs"]
mod hostile;

use std::sync::Arc;
use std::time::Duration;

use common::{events, Client};
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
