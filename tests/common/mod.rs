//! Helpers shared by the socket tests: a line client, and a runtime with both listeners.
#![allow(dead_code)]

pub mod exposition;
pub mod process;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use vigil::serve::http::{HttpConfig, HttpServer};
use vigil::serve::hub::Hub;
use vigil::serve::tcp::{Server, ServerConfig};
use vigil_actors::{
    AdminRequest, AdminResponse, AgentId, Event, Registration, Runtime, RuntimeConfig, Store,
};

/// Every event the runtime has recorded, oldest first.
pub async fn events(rt: &Runtime) -> Vec<Event> {
    let all = AdminRequest::Events {
        id: None,
        since: Some(0),
        limit: Some(usize::MAX),
        latest: false,
    };
    match rt.admin(all).await.unwrap() {
        AdminResponse::Events(e) => e,
        other => panic!("{other:?}"),
    }
}

/// An HTTP client whose requests give up after 20 s (a test fails rather than hangs).
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("an HTTP client")
}

/// Sends one frame as a WebSocket text message.
pub async fn ws_send<S>(ws: &mut S, frame: Value)
where
    S: futures::Sink<
            tokio_tungstenite::tungstenite::Message,
            Error = tokio_tungstenite::tungstenite::Error,
        > + Unpin,
{
    futures::SinkExt::send(
        ws,
        tokio_tungstenite::tungstenite::Message::Text(frame.to_string().into()),
    )
    .await
    .unwrap();
}

/// The next text frame of a WebSocket, as JSON.
pub async fn ws_frame<S>(ws: &mut S) -> Value
where
    S: futures::Stream<
            Item = Result<
                tokio_tungstenite::tungstenite::Message,
                tokio_tungstenite::tungstenite::Error,
            >,
        > + Unpin,
{
    loop {
        let m = tokio::time::timeout(Duration::from_secs(20), futures::StreamExt::next(ws))
            .await
            .expect("a frame")
            .unwrap()
            .unwrap();
        if let tokio_tungstenite::tungstenite::Message::Text(t) = m {
            return serde_json::from_str(t.as_str()).unwrap();
        }
    }
}

/// A protocol client over TCP, one JSON frame per line.
pub struct Client {
    pub lines: tokio::io::Lines<BufReader<OwnedReadHalf>>,
    pub write: OwnedWriteHalf,
}

impl Client {
    pub async fn connect(addr: std::net::SocketAddr) -> Self {
        let s = TcpStream::connect(addr).await.unwrap();
        let (r, w) = s.into_split();
        Self {
            lines: BufReader::new(r).lines(),
            write: w,
        }
    }

    /// Connected, with hello said and welcome received.
    pub async fn hello(addr: std::net::SocketAddr, role: &str, token: Option<&str>) -> Self {
        let mut c = Self::connect(addr).await;
        c.send(json!({"type":"hello","protocol":1,"role":role,"token":token}))
            .await;
        c.expect("welcome").await;
        c
    }

    pub async fn raw(&mut self, bytes: &[u8]) {
        self.write.write_all(bytes).await.unwrap();
    }

    pub async fn send(&mut self, v: Value) {
        let mut s = v.to_string();
        s.push('\n');
        self.raw(s.as_bytes()).await;
    }

    /// The next frame; `None` when the server closed the connection.
    pub async fn recv(&mut self) -> Option<Value> {
        let line = tokio::time::timeout(Duration::from_secs(20), self.lines.next_line())
            .await
            .expect("the server answers within 20 s")
            .ok()??;
        Some(serde_json::from_str(&line).expect("the server sends JSON lines"))
    }

    pub async fn expect(&mut self, ty: &str) -> Value {
        let v = self.recv().await.expect("a frame, not the end");
        assert_eq!(v["type"], ty, "{v}");
        v
    }

    pub async fn expect_error(&mut self, code: &str) -> Value {
        let v = self.expect("error").await;
        assert_eq!(v["code"], code, "{v}");
        v
    }
}

/// A runtime with the TCP and HTTP listeners on loopback ports of their own.
pub struct Node {
    pub rt: Arc<Runtime>,
    pub hub: Arc<Hub>,
    pub tcp: Server,
    pub http: HttpServer,
}

impl Node {
    pub async fn start(rt_cfg: RuntimeConfig, store: Arc<dyn Store>) -> Self {
        Self::start_with(
            rt_cfg,
            store,
            vigil::config::Config::default().server_config(),
            vigil::config::Config::default().http_config(),
        )
        .await
    }

    pub async fn start_with(
        rt_cfg: RuntimeConfig,
        store: Arc<dyn Store>,
        tcp: ServerConfig,
        http: HttpConfig,
    ) -> Self {
        let rt = Arc::new(Runtime::start(rt_cfg, store).await.unwrap());
        let hub = Hub::new(rt.clone(), Duration::from_millis(50));
        let tcp = Server::start_with(([127, 0, 0, 1], 0).into(), hub.clone(), tcp)
            .await
            .unwrap();
        let http = HttpServer::start(([127, 0, 0, 1], 0).into(), hub.clone(), http)
            .await
            .unwrap();
        Self { rt, hub, tcp, http }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http.local_addr(), path)
    }

    /// Registers in-process agents `{prefix}{0..n}` of `kind`.
    pub async fn agents(&self, prefix: &str, kind: &str, n: usize) -> Vec<AgentId> {
        let mut ids = Vec::new();
        for i in 0..n {
            let id = AgentId::new(format!("{prefix}{i}")).unwrap();
            self.rt
                .register(Registration::new(id.clone()).kind(kind))
                .await
                .unwrap();
            ids.push(id);
        }
        ids
    }

    /// Puts `id` in or out of maintenance: one transition.
    pub async fn flip(&self, id: &AgentId, on: bool) {
        self.rt
            .admin(vigil_actors::AdminRequest::Maintenance { id: id.clone(), on })
            .await
            .unwrap();
    }
}

/// Reads one HTTP/1.1 request to `POST /hook` (a webhook receiver's): lower-cased headers and
/// the body (by Content-Length); `None` at the end of the connection.
pub async fn read_request<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
) -> Option<(std::collections::BTreeMap<String, String>, Vec<u8>)> {
    let mut line = String::new();
    if r.read_line(&mut line).await.ok()? == 0 {
        return None;
    }
    assert!(line.starts_with("POST /hook "), "{line}");
    let mut headers = std::collections::BTreeMap::new();
    loop {
        line.clear();
        r.read_line(&mut line).await.ok()?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':')?;
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    let len: usize = headers.get("content-length")?.parse().ok()?;
    let mut body = vec![0; len];
    tokio::io::AsyncReadExt::read_exact(r, &mut body)
        .await
        .ok()?;
    Some((headers, body))
}
