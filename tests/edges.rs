//! The listeners' edges over real sockets: the Host check of a server without tokens (DNS
//! rebinding), the idle timeout, the per-IP connection cap, and an admin frame for an op
//! without arguments sent with an empty `args` object.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Client, Node};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use vigil::serve::http::HttpConfig;
use vigil::serve::tcp::ServerConfig;
use vigil_actors::{MemStore, RuntimeConfig};

/// One HTTP/1.1 request with the given `Host` (and extra header lines); the status and the
/// body.
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    host: &str,
    extra: &str,
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    // To the end, or to the end of the head of a switch to WebSocket (which stays open).
    let mut raw = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            let n = s.read(&mut buf).await.unwrap_or(0);
            raw.extend_from_slice(&buf[..n]);
            let head_done = raw.windows(4).any(|w| w == b"\r\n\r\n");
            if n == 0 || (head_done && raw.starts_with(b"HTTP/1.1 101")) {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("an answer within 20 s");
    let answer = String::from_utf8_lossy(&raw).to_string();
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not HTTP: {answer:?}"));
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

/// The `code` of an API error body (chunked or not: the JSON object inside).
fn error_code(body: &str) -> Value {
    let start = body
        .find('{')
        .unwrap_or_else(|| panic!("no JSON in {body:?}"));
    let end = body.rfind('}').unwrap();
    let v: Value = serde_json::from_str(&body[start..=end]).unwrap();
    v["error"]["code"].clone()
}

const WS_UPGRADE: &str =
    "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
                          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

#[tokio::test]
async fn without_tokens_only_names_of_this_machine_are_answered() {
    let node = Node::start_with(
        RuntimeConfig::default(),
        MemStore::new(),
        vigil::config::Config::default().server_config(),
        HttpConfig {
            allowed_hosts: vec!["vigil.lan".into()],
            ..vigil::config::Config::default().http_config()
        },
    )
    .await;
    let ids = node.agents("r", "worker", 1).await;
    let addr = node.http.local_addr();
    let port = addr.port();
    let evict = format!("/api/v1/agents/{}", ids[0].as_str());
    // A rebinding page: its own name, resolved to 127.0.0.1, in Host and Origin alike.
    let forged = format!("rebind.example:{port}");
    let origin = format!("Origin: http://rebind.example:{port}\r\n");
    let (status, body) = request(addr, "DELETE", &evict, &forged, &origin).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(error_code(&body), "forbidden", "{body}");
    let (status, body) = request(addr, "DELETE", &evict, &forged, "").await;
    assert_eq!(status, 403, "{body}");
    assert!(node.rt.agent(&ids[0]).is_some(), "not evicted");
    // Reads, and the admin WebSocket, are refused the same way.
    let (status, body) = request(addr, "GET", "/api/v1/agents", &forged, "").await;
    assert_eq!(
        (status, error_code(&body)),
        (403, json!("forbidden")),
        "{body}"
    );
    let (status, body) = request(addr, "GET", "/ws", &forged, WS_UPGRADE).await;
    assert_eq!(status, 403, "{body}");
    // The machine's own names, with any port, and the configured one are answered.
    let (status, _) = request(addr, "GET", "/ws", &format!("localhost:{port}"), WS_UPGRADE).await;
    assert_eq!(status, 101);
    for host in [
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        "vigil.lan:80".into(),
    ] {
        let (status, body) = request(addr, "GET", "/api/v1/agents", &host, "").await;
        assert_eq!(status, 200, "{host}: {body}");
    }
    let (status, body) = request(addr, "DELETE", &evict, &format!("localhost:{port}"), "").await;
    assert_eq!(status, 200, "{body}");
    assert!(node.rt.agent(&ids[0]).is_none(), "evicted");
}

#[tokio::test]
async fn with_a_token_any_host_name_is_answered() {
    let node = Node::start_with(
        RuntimeConfig::default(),
        MemStore::new(),
        vigil::config::Config::default().server_config(),
        HttpConfig {
            admin_tokens: vec!["adm".into()],
            monitor_tokens: vec!["mon".into()],
            ..vigil::config::Config::default().http_config()
        },
    )
    .await;
    let addr = node.http.local_addr();
    let auth = "Authorization: Bearer adm\r\n";
    let (status, body) = request(addr, "GET", "/api/v1/agents", "vigil.example.com", auth).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = request(
        addr,
        "GET",
        "/ws",
        "vigil.example.com",
        &format!("{auth}{WS_UPGRADE}"),
    )
    .await;
    assert_eq!(status, 101);
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_idle_timeout() {
    let node = Node::start_with(
        RuntimeConfig::default(),
        MemStore::new(),
        ServerConfig {
            idle_timeout: Duration::from_secs(2),
            ..vigil::config::Config::default().server_config()
        },
        vigil::config::Config::default().http_config(),
    )
    .await;
    let addr = node.tcp.local_addr();
    let mut quiet = Client::hello(addr, "agent", None).await;
    let mut talking = Client::hello(addr, "monitor", None).await;
    // One that pings every 200 ms outlives the timeout.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        talking.send(json!({"type": "ping"})).await;
        talking.expect("pong").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The quiet one is closed (recv gives up after 20 s on an open connection).
    assert_eq!(quiet.recv().await, None, "closed");
    talking.send(json!({"type": "ping"})).await;
    talking.expect("pong").await;
}

/// Waits until the listener counts `n` connections (a closed one is let go asynchronously).
async fn connections_become(node: &Node, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while node.tcp.connections() != n {
        assert!(
            Instant::now() < deadline,
            "{} connections, not {n}",
            node.tcp.connections()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn one_address_holds_at_most_max_connections_per_ip() {
    let node = Node::start_with(
        RuntimeConfig::default(),
        MemStore::new(),
        ServerConfig {
            max_connections_per_ip: 2,
            ..vigil::config::Config::default().server_config()
        },
        HttpConfig {
            max_connections_per_ip: 1,
            ..vigil::config::Config::default().http_config()
        },
    )
    .await;
    let addr = node.tcp.local_addr();
    let a = Client::hello(addr, "agent", None).await;
    let _b = Client::hello(addr, "agent", None).await;
    let mut c = Client::connect(addr).await;
    c.expect_error("overloaded").await;
    assert_eq!(c.recv().await, None, "closed");
    // A slot comes back when a connection closes.
    drop(a);
    connections_become(&node, 1).await;
    let mut d = Client::hello(addr, "agent", None).await;
    d.send(json!({"type": "ping"})).await;
    d.expect("pong").await;

    // HTTP: a second connection from the address is closed before any answer.
    let http = node.http.local_addr();
    let (held_status, _) = {
        let mut held = TcpStream::connect(http).await.unwrap();
        held.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        let n = held.read(&mut buf).await.unwrap();
        let first = String::from_utf8_lossy(&buf[..n]).to_string();
        let mut extra = TcpStream::connect(http).await.unwrap();
        let _ = extra
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await;
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(20), extra.read_to_end(&mut rest))
            .await
            .expect("the extra connection is closed");
        assert!(
            read.is_err() || rest.is_empty(),
            "no answer on the extra connection: {:?}",
            String::from_utf8_lossy(&rest)
        );
        (first, held)
    };
    assert!(held_status.starts_with("HTTP/1.1 200"), "{held_status}");
    // The held one is gone now: a new connection is answered (once its slot is back).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut s = TcpStream::connect(http).await.unwrap();
        let _ = s
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut answer)).await;
        if answer.starts_with(b"HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "the slot never came back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_admin_frame_for_an_op_without_arguments_takes_an_empty_args_object() {
    let node = Node::start(RuntimeConfig::default(), MemStore::new()).await;
    let mut admin = Client::hello(node.tcp.local_addr(), "admin", None).await;
    admin
        .send(json!({"type": "admin", "op": "stats", "args": {}, "ref": 1}))
        .await;
    let r = admin.expect("result").await;
    assert_eq!(
        (r["ok"].clone(), r["ref"].clone()),
        (json!(true), json!(1)),
        "{r}"
    );
    // An op that needs arguments still says which one is missing.
    admin
        .send(json!({"type": "admin", "op": "evict", "args": {}, "ref": 2}))
        .await;
    assert_eq!(admin.expect_error("missing_field").await["ref"], 2);
}
