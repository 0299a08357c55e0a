//! The server, the simulated fleet, the probe agent and the test's own monitor.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::common::Client;
use crate::PROBE;

pub(crate) struct Serve {
    child: Child,
    pub(crate) agents: std::net::SocketAddr,
    pub(crate) http: std::net::SocketAddr,
}

impl Serve {
    pub(crate) fn start(bin: &str, dir: &Path) -> Self {
        // One outbound channel, a log sink, for the page's channels panel.
        let config = dir.join("vigil.toml");
        std::fs::write(&config, "[[sinks]]\nname = \"trail\"\ntype = \"log\"\n").unwrap();
        let mut child = Command::new(bin)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info,vigil::sink=warn")
            .env("NO_COLOR", "1")
            .env(
                "VIGIL_STORE__URL",
                format!("surrealkv://{}/db", dir.display()),
            )
            .env("VIGIL_SERVER__AGENT_LISTEN", "127.0.0.1:0")
            .env("VIGIL_SERVER__HTTP_LISTEN", "127.0.0.1:0")
            .env("VIGIL_AUTH__MONITOR_TOKENS", r#"["mon"]"#)
            .env("VIGIL_AUTH__ADMIN_TOKENS", r#"["adm"]"#)
            .stderr(Stdio::piped())
            .spawn()
            .expect("vigil serve starts");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let ready = lines
            .by_ref()
            .map_while(Result::ok)
            .inspect(|l| eprintln!("serve: {l}"))
            .find(|l| l.contains("vigil is supervising"))
            .expect("vigil serve never said it was supervising");
        std::thread::spawn(move || {
            lines
                .map_while(Result::ok)
                .for_each(|l| eprintln!("serve: {l}"))
        });
        let addr = |key: &str| -> std::net::SocketAddr {
            ready
                .split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .unwrap_or_else(|| panic!("the ready line names {key}: {ready}"))
                .parse()
                .unwrap()
        };
        Serve {
            agents: addr("agents="),
            http: addr("http="),
            child,
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `vigil simulate`: agents of one kind, 2% of which stop beating after 2 s (and `extra`
/// failures).
pub(crate) struct Fleet(Child);

impl Fleet {
    pub(crate) fn start(
        addr: std::net::SocketAddr,
        kind: &str,
        prefix: &str,
        n: usize,
        extra: &[&str],
    ) -> Self {
        let base = [
            "--connections",
            "4",
            "--interval",
            "1s",
            "--fail-after",
            "2s",
        ];
        let failures = ["--stop-share", "0.02"];
        let bin = env!("CARGO_BIN_EXE_vigil");
        Self::run(
            bin,
            addr,
            kind,
            prefix,
            n,
            &[&base[..], &failures, extra].concat(),
        )
    }

    pub(crate) fn run(
        bin: &str,
        addr: std::net::SocketAddr,
        kind: &str,
        prefix: &str,
        n: usize,
        args: &[&str],
    ) -> Self {
        let child = Command::new(bin)
            .args(["simulate", "--quiet", "--connect", &addr.to_string()])
            .args([
                "--agents",
                &n.to_string(),
                "--kind",
                kind,
                "--prefix",
                prefix,
            ])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("vigil simulate starts");
        Fleet(child)
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One agent the test controls: registered with a 500 ms interval, beating every 200 ms
/// (with metrics) while `beating` is set.
pub(crate) struct Probe {
    pub(crate) beating: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Probe {
    pub(crate) async fn start(addr: std::net::SocketAddr) -> Self {
        let mut c = Client::hello(addr, "agent", None).await;
        c.send(json!({"type":"register","id":PROBE,"name":"Probe","kind":"probe","heartbeat_interval_ms":500,"metadata":{"zone":"test"}}))
            .await;
        c.expect("registered").await;
        let beating = Arc::new(AtomicBool::new(true));
        let on = beating.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tick.tick().await;
                if on.load(Ordering::SeqCst) {
                    let beat = json!({"type":"heartbeat","id":PROBE,"metrics":{"load":0.5}});
                    let line = format!("{beat}\n");
                    if c.write.write_all(line.as_bytes()).await.is_err() {
                        break;
                    }
                }
            }
        });
        Probe { beating, task }
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The test's own TCP monitor of the probe: each event with the instant it arrived.
pub(crate) struct Monitor {
    rx: mpsc::UnboundedReceiver<(Instant, Value)>,
}

impl Monitor {
    pub(crate) async fn start(addr: std::net::SocketAddr) -> Self {
        let mut c = Client::hello(addr, "monitor", Some("mon")).await;
        c.send(json!({"type":"subscribe","topics":["agents"],"filter":{"ids":[PROBE]},"ref":1}))
            .await;
        c.expect("ack").await;
        let (tx, rx) = mpsc::unbounded_channel();
        // The write half stays open in the task: dropping it would end the connection.
        let Client { mut lines, write } = c;
        tokio::spawn(async move {
            let _write = write;
            loop {
                let line = match lines.next_line().await {
                    Ok(Some(line)) => line,
                    end => {
                        eprintln!("the test's monitor ended: {end:?}");
                        break;
                    }
                };
                let f: Value = serde_json::from_str(&line).expect("JSON lines");
                if f["type"] == "event" && tx.send((Instant::now(), f)).is_err() {
                    break;
                }
            }
        });
        Monitor { rx }
    }

    /// The next event of the probe that matches, and when it arrived.
    pub(crate) async fn next(&mut self, want: impl Fn(&Value) -> bool) -> Instant {
        loop {
            let (at, e) = tokio::time::timeout(Duration::from_secs(20), self.rx.recv())
                .await
                .expect("the server's event within 20 s")
                .expect("the monitor stays connected");
            if want(&e) {
                return at;
            }
        }
    }
}
