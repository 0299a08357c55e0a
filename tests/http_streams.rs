//! The HTTP listener's streams over real sockets: SSE resume with `Last-Event-ID`, WebSocket
//! monitors, and the listener over TLS.

mod common;

use std::time::Duration;

use common::{http_client, ws_frame, ws_send, Node};
use serde_json::{json, Value};
use vigil::serve::http::HttpConfig;
use vigil_actors::{AdminRequest, AdminResponse, MemStore, RuntimeConfig};

/// Reads SSE events (`id`, `event`, `data`) from a response until `stop` says so.
async fn sse_events(
    resp: &mut reqwest::Response,
    mut stop: impl FnMut(&[(Option<u64>, String, Value)]) -> bool,
) -> Vec<(Option<u64>, String, Value)> {
    let mut buf = String::new();
    let mut out = Vec::new();
    while !stop(&out) {
        let chunk = tokio::time::timeout(Duration::from_secs(20), resp.chunk())
            .await
            .expect("SSE data within 20 s")
            .unwrap()
            .expect("the stream goes on");
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let (mut id, mut name, mut data) = (None, String::from("message"), None);
            for l in block.lines() {
                if let Some(v) = l.strip_prefix("id:") {
                    id = Some(v.trim().parse().unwrap());
                } else if let Some(v) = l.strip_prefix("event:") {
                    name = v.trim().into();
                } else if let Some(v) = l.strip_prefix("data:") {
                    data = Some(serde_json::from_str(v.trim()).unwrap());
                }
            }
            if let Some(d) = data {
                out.push((id, name, d));
            }
        }
    }
    out
}

/// The seqs of the agent events after `since`, from the log (alerts, which a loaded machine
/// may raise, take seqs too but are not in the `agents` topic).
async fn agent_seqs_after(node: &Node, since: u64) -> Vec<u64> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let settled = loop {
        let s = node.rt.stats().await.unwrap().registry;
        if s.pending_events == 0 && s.durable_seq == s.last_seq {
            break s.last_seq;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the log did not settle within 60 s: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let events = match node
        .rt
        .admin(AdminRequest::Events {
            id: None,
            since: Some(since),
            limit: None,
            latest: false,
        })
        .await
        .unwrap()
    {
        AdminResponse::Events(e) => e,
        other => panic!("{other:?}"),
    };
    let seqs: Vec<u64> = events
        .iter()
        .filter(|e| e.agent.is_some())
        .map(|e| e.seq)
        .collect();
    assert!(seqs.last().is_none_or(|l| *l <= settled));
    seqs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_resumes_with_last_event_id() {
    let node = Node::start(RuntimeConfig::default(), MemStore::new()).await;
    let ids = node.agents("e", "worker", 5).await;
    let http = http_client();
    let url = node.url("/api/v1/events?topics=agents&snapshot=true");
    let mut resp = http.get(&url).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let first = sse_events(&mut resp, |e| !e.is_empty()).await;
    let (snap_id, name, snap) = &first[0];
    assert_eq!(name, "snapshot");
    assert_eq!(snap["agents"].as_array().unwrap().len(), 5);
    let snap_id = snap_id.expect("a snapshot carries its seq as id");
    assert_eq!(snap["seq"].as_u64(), Some(snap_id));
    for id in &ids {
        node.flip(id, true).await;
    }
    // Take two events, then drop the connection.
    let seen = sse_events(&mut resp, |e| e.len() >= 2).await;
    let want = agent_seqs_after(&node, snap_id).await;
    assert_eq!(want.len(), 5, "five flips");
    let got: Vec<u64> = seen.iter().map(|(id, _, _)| id.unwrap()).collect();
    assert_eq!(got, want[..2]);
    assert!(seen
        .iter()
        .all(|(_, name, e)| name == "event" && e["to"] == "maintenance"));
    let last = got[1];
    drop(resp);

    // More happens while it is away; then it resumes as a browser would (the same URL,
    // with Last-Event-ID).
    node.flip(&ids[0], false).await;
    node.flip(&ids[2], false).await;
    let want = agent_seqs_after(&node, last).await;
    assert_eq!(want.len(), 5, "three unseen flips and two later ones");
    let mut resp = http
        .get(&url)
        .header("Last-Event-ID", last.to_string())
        .send()
        .await
        .unwrap();
    let rest = sse_events(&mut resp, |e| e.len() >= want.len()).await;
    let got: Vec<u64> = rest.iter().map(|(id, _, _)| id.unwrap()).collect();
    assert_eq!(
        got, want,
        "no snapshot again, nothing seen twice, nothing missed"
    );
    assert!(rest.iter().all(|(_, name, _)| name == "event"));
    assert_eq!(rest[3].2["agent"], "e0");
    assert_eq!(
        rest[3].2["to"], "unknown",
        "out of maintenance: unknown until it beats"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_monitors_get_the_same_frames() {
    let node = Node::start(RuntimeConfig::default(), MemStore::new()).await;
    let ids = node.agents("ws", "worker", 2).await;
    let url = format!("ws://{}/ws", node.http.local_addr());
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    ws_send(
        &mut ws,
        json!({"type":"subscribe","topics":["agents"],"snapshot":true,"ref":"s"}),
    )
    .await;
    let mut frames = vec![ws_frame(&mut ws).await, ws_frame(&mut ws).await];
    node.flip(&ids[1], true).await;
    frames.push(ws_frame(&mut ws).await);
    assert_eq!(frames[0], json!({"type":"ack","ref":"s"}));
    assert_eq!(frames[1]["type"], "snapshot");
    let snap_seq = frames[1]["seq"].as_u64().unwrap();
    assert_eq!(frames[2]["type"], "event");
    assert!(frames[2]["seq"].as_u64().unwrap() > snap_seq);
    assert_eq!(frames[2]["agent"], "ws1");
    assert_eq!(frames[2]["to"], "maintenance");

    // Admin frames need an admin token; with none configured, any stream may send them.
    ws_send(
        &mut ws,
        json!({"type":"admin","op":"get","args":{"id":"ws0"},"ref":2}),
    )
    .await;
    let v = ws_frame(&mut ws).await;
    assert_eq!(v["type"], "result", "{v}");
    assert_eq!(v["data"]["id"], "ws0");
}

#[tokio::test]
async fn the_http_listener_speaks_tls_when_configured() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls");
    let tls = vigil::serve::tls::tls_config(&dir.join("cert.pem"), &dir.join("key.pem")).unwrap();
    let node = Node::start_with(
        RuntimeConfig::default(),
        MemStore::new(),
        vigil::config::Config::default().server_config(),
        HttpConfig {
            tls: Some(tls),
            ..vigil::config::Config::default().http_config()
        },
    )
    .await;
    let addr = node.http.local_addr();
    let ca = std::fs::read(dir.join("ca.pem")).unwrap();
    let https = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .resolve("localhost", addr)
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let url = format!("https://localhost:{}/healthz", addr.port());
    let r = https.get(&url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // Plain HTTP gets no answer from a TLS listener.
    let plain = http_client()
        .get(format!("http://{addr}/healthz"))
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
}

#[tokio::test]
async fn a_websocket_unsubscribe_is_acknowledged_only_with_a_ref() {
    let node = Node::start(RuntimeConfig::default(), MemStore::new()).await;
    let ws_url = format!("ws://{}/ws", node.http.local_addr());
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url).await.unwrap();
    ws_send(&mut ws, json!({"type":"unsubscribe"})).await;
    ws_send(&mut ws, json!({"type":"ping","ref":2})).await;
    let v = ws_frame(&mut ws).await;
    assert_eq!(
        (v["type"].clone(), v["ref"].clone()),
        (json!("pong"), json!(2))
    );
    ws_send(&mut ws, json!({"type":"unsubscribe","ref":3})).await;
    let v = ws_frame(&mut ws).await;
    assert_eq!(
        (v["type"].clone(), v["ref"].clone()),
        (json!("ack"), json!(3))
    );
}
