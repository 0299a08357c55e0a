//! Other ways in: TLS, the Rust client, and a monitor.

use super::*;

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
