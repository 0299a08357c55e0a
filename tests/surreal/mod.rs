//! A SurrealDB server on a free loopback port, for tests of stores shared by processes.
//!
//! The binary is `VIGIL_SURREAL` when set, else what `scripts/surrealdb-server --path`
//! builds (once per machine, into a cache outside the clone) and prints.

pub mod cluster;
pub mod procs;

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A running `surreal start … memory`, killed when dropped.
pub struct SurrealServer {
    child: Child,
    port: u16,
}

impl SurrealServer {
    /// Starts one (in memory, unauthenticated) and waits until it answers HTTP.
    ///
    /// A port is free when chosen and may be taken before the server binds it (another
    /// test's client socket); a server that exits is started again on another port.
    pub fn start() -> Self {
        let bin = binary();
        let mut last = String::new();
        for _ in 0..3 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let child = Command::new(&bin)
                .args(["start", "--bind", &format!("127.0.0.1:{port}")])
                .args(["--unauthenticated", "--log", "warn", "memory"])
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot run the SurrealDB server {}: {e}", bin.display())
                });
            let mut server = SurrealServer { child, port };
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if answers_health(port) {
                    return server;
                }
                if let Ok(Some(status)) = server.child.try_wait() {
                    last = format!("the SurrealDB server on {port} exited: {status}");
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the SurrealDB server did not answer on {port} within 60 s"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("{last} (three ports tried)")
    }

    /// The store URL vigil is given.
    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }
}

impl Drop for SurrealServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether a SurrealDB server answers `GET /health` on `port` with 200.
///
/// A bare connect is not enough: connecting to a port in the ephemeral range that nobody
/// listens on can connect the socket to itself (a TCP simultaneous open), and that socket
/// reads back what it wrote, which is not an HTTP answer.
pub fn answers_health(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let timeout = Some(Duration::from_secs(5));
    if s.set_read_timeout(timeout).is_err() || s.set_write_timeout(timeout).is_err() {
        return false;
    }
    if s.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("VIGIL_SURREAL") {
        return p.into();
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/surrealdb-server");
    let out = Command::new(&script)
        .arg("--path")
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} could not build the SurrealDB server (it needs cargo and the crates.io registry; \
         or set VIGIL_SURREAL to a `surreal` binary 3.3.x)",
        script.display()
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// An event to write: an alert whose `issue` names the writer and whose `detail` is `n`, at
/// seq `n` (a shared log numbers it again).
#[allow(dead_code)] // each test file uses what it needs
pub fn alert(writer: &str, n: u64) -> Arc<vigil::core::Event> {
    use vigil::core::{Event, Severity};
    Arc::new(Event::alert(
        n,
        chrono::Utc::now(),
        Severity::Info,
        writer,
        n.to_string(),
    ))
}
