//! `vigil serve` processes and blocking NDJSON connections to them, for tests that run
//! several processes on one store.
#![allow(dead_code)] // each test file uses what it needs

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// A `vigil serve` on `store`, its stderr read by a thread.
pub struct Vigil {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
    /// The agents' TCP listener.
    pub agents: String,
    /// The HTTP listener.
    pub http: String,
    /// What it said before it said it is supervising, not yet looked through by `line_with`.
    early: std::cell::RefCell<std::collections::VecDeque<String>>,
}

pub fn vigil(store: &str, env: &[(&str, String)]) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args([
            "serve",
            "--agent-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .args(["--store", store])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .spawn()
        .expect("vigil starts");
    let stderr = child.stderr.take().expect("stderr is piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (child, rx)
}

impl Vigil {
    /// Starts one and waits for it to say it is supervising.
    pub fn start(store: &str, env: &[(&str, String)]) -> Self {
        let (child, lines) = vigil(store, env);
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut said = String::new();
        let mut early = std::collections::VecDeque::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = lines.recv_timeout(left).unwrap_or_else(|e| {
                panic!("vigil did not say it is supervising ({e}); it said:\n{said}")
            });
            said.push_str(&line);
            said.push('\n');
            if line.contains("vigil is supervising") {
                return Vigil {
                    child,
                    lines,
                    agents: word(&line, "agents="),
                    http: word(&line, "http="),
                    early: early.into(),
                };
            }
            early.push_back(line);
        }
    }

    /// The next line of its log that contains `text` (60 s at most).
    pub fn line_with(&self, text: &str) -> String {
        let mut early = self.early.borrow_mut();
        while let Some(line) = early.pop_front() {
            if line.contains(text) {
                return line;
            }
        }
        drop(early);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("no line with {text:?} ({e})"));
            if line.contains(text) {
                return line;
            }
        }
    }

    /// Sends `kill SIG` (e.g. `-STOP`).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill {sig}");
    }
}

impl Drop for Vigil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The body of `GET path` on the HTTP listener at `addr` (no token).
pub fn http_get(addr: &str, path: &str) -> String {
    use std::io::Read;
    let mut s = TcpStream::connect(addr).expect("the HTTP listener");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .expect("a request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("an answer");
    text.split_once("\r\n\r\n")
        .map_or(text.clone(), |(_, body)| body.to_string())
}

/// `POST path` with a JSON `body` on the HTTP listener at `addr` (no token): the status and
/// the body of the answer.
pub fn http_post(addr: &str, path: &str, body: &Value) -> (u16, Value) {
    use std::io::Read;
    let body = body.to_string();
    let mut s = TcpStream::connect(addr).expect("the HTTP listener");
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("a request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("an answer");
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let answer = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(answer).unwrap_or(Value::Null))
}

/// The value of `key=` in a log line.
pub fn word(line: &str, key: &str) -> String {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in {line}"))
        .to_string()
}

/// Waits for `child` to exit; returns its status and everything it wrote to stderr.
pub fn exit_of(
    child: &mut Child,
    lines: &mpsc::Receiver<String>,
    limit: Duration,
) -> (std::process::ExitStatus, String) {
    let deadline = Instant::now() + limit;
    let mut text = String::new();
    loop {
        while let Ok(l) = lines.try_recv() {
            text.push_str(&l);
            text.push('\n');
        }
        if let Some(status) = child.try_wait().expect("wait") {
            while let Ok(l) = lines.recv_timeout(Duration::from_millis(200)) {
                text.push_str(&l);
                text.push('\n');
            }
            return (status, text);
        }
        assert!(
            Instant::now() < deadline,
            "vigil did not exit within {limit:?}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A blocking NDJSON connection.
pub struct Conn {
    write: TcpStream,
    read: BufReader<TcpStream>,
}

impl Conn {
    /// Connects and says hello as `role`.
    pub fn open(addr: &str, role: &str) -> Self {
        let write = TcpStream::connect(addr).expect("connect");
        let read = BufReader::new(write.try_clone().expect("clone"));
        let mut c = Conn { write, read };
        c.send(json!({"type": "hello", "protocol": 1, "role": role}));
        assert_eq!(c.recv().expect("welcome")["type"], "welcome");
        c
    }

    /// Sends a frame.
    pub fn send(&mut self, v: Value) {
        let mut line = v.to_string();
        line.push('\n');
        self.write.write_all(line.as_bytes()).expect("send");
    }

    /// The next frame; `None` at the end of the stream (or after 60 s of silence).
    pub fn recv(&mut self) -> Option<Value> {
        self.read
            .get_ref()
            .set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        let mut line = String::new();
        match self.read.read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(serde_json::from_str(&line).expect("a JSON frame")),
        }
    }

    /// Frames until one of `kind` arrives.
    pub fn until(&mut self, kind: &str) -> Value {
        loop {
            let f = self
                .recv()
                .unwrap_or_else(|| panic!("the stream ended before {kind}"));
            if f["type"] == kind {
                return f;
            }
            if f["type"] == "error" {
                eprintln!("(waiting for {kind}) {f}");
            }
        }
    }
}

/// A thread that sends heartbeats for `ids` on a connection every `period`, until dropped.
pub struct Beater {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Beater {
    pub fn start(conn: &Conn, ids: &[&str], period: Duration) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let mut write = conn.write.try_clone().expect("clone");
        let ids: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
        let flag = stop.clone();
        std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                for id in &ids {
                    let line = format!("{}\n", json!({"type": "heartbeat", "id": id}));
                    if write.write_all(line.as_bytes()).is_err() {
                        return;
                    }
                }
                std::thread::sleep(period);
            }
        });
        Beater { stop }
    }
}

impl Drop for Beater {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}
