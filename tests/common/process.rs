//! A `vigil` process for the tests of the binary: its output lines arrive on a channel, so
//! every wait for one has a deadline.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The `vigil` binary under test.
pub fn vigil() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vigil"))
}

/// How long a `vigil serve` on `mem://` gets to say it is supervising, or to stop.
pub const LIMIT: Duration = Duration::from_secs(60);

/// The lines of a child's output, read on a thread, so that a test can wait for one with a
/// bound.
pub fn lines_of(r: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The first line that `pred` accepts, within `secs`; panics with what came before otherwise.
pub fn wait_line(
    rx: &mpsc::Receiver<String>,
    secs: u64,
    what: &str,
    pred: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if pred(&l) => return l,
            Ok(l) => seen.push(l),
            Err(e) => panic!("no {what} within {secs} s ({e}); lines before: {seen:#?}"),
        }
    }
}

/// A running `vigil serve`: its stderr lines arrive on a channel, so every wait has a
/// deadline. Killed if the test ends early.
pub struct Served {
    pub child: Child,
    lines: mpsc::Receiver<String>,
}

impl Served {
    /// `vigil serve` on `mem://` and free ports, with `args` after `serve` and `env` set.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd = vigil();
        cmd.args(["serve", "--store", "mem://"])
            .args([
                "--agent-listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
            ])
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .env_remove("VIGIL_LOG__FORMAT")
            .env_remove("VIGIL_CONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("vigil starts");
        let lines = lines_of(child.stderr.take().expect("stderr piped"));
        Self { child, lines }
    }

    /// The lines up to and including the first one containing `needle`; panics, with what
    /// was seen, if none comes within [`LIMIT`] or the log ends first.
    pub fn until(&self, needle: &str) -> Vec<String> {
        let deadline = Instant::now() + LIMIT;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(needle);
                    seen.push(line);
                    if found {
                        return seen;
                    }
                }
                Err(e) => panic!("no line with {needle:?} ({e}); the log so far: {seen:#?}"),
            }
        }
    }

    /// Sends SIGTERM, waits for the exit (within [`LIMIT`]) and returns the status, the rest
    /// of stderr and all of stdout.
    pub fn stop(mut self) -> (std::process::ExitStatus, Vec<String>, String) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success());
        let deadline = Instant::now() + LIMIT;
        let mut rest = Vec::new();
        // The reader thread hangs up when stderr closes, at the latest when vigil exits.
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => rest.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("vigil did not stop within {LIMIT:?}; its log: {rest:#?}")
                }
            }
        }
        let status = self.child.wait().expect("vigil is waited for");
        let mut stdout = String::new();
        self.child
            .stdout
            .take()
            .expect("stdout piped")
            .read_to_string(&mut stdout)
            .expect("stdout is readable");
        (status, rest, stdout)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A [`Served`] with the address of its protocol listener, for the operator's commands.
pub struct Operated {
    _served: Served,
    /// The protocol listener, `host:port`.
    pub addr: String,
}

impl Operated {
    /// `vigil serve` as [`Served::start`] with `env`, once it is supervising.
    pub fn start(env: &[(&str, &str)]) -> Self {
        let served = Served::start(&[], env);
        let ready = served.until("vigil is supervising");
        let addr = ready
            .last()
            .expect("the ready line")
            .split_whitespace()
            .find_map(|w| w.strip_prefix("agents="))
            .expect("the ready line names the agent listener")
            .to_string();
        Self {
            _served: served,
            addr,
        }
    }

    /// `vigil agents ARGS --addr ADDR`.
    pub fn agents(&self, args: &[&str]) -> std::process::Output {
        self.client("agents", args)
    }

    /// `vigil COMMAND ARGS --addr ADDR`, without a token from this process's environment.
    pub fn client<S: AsRef<std::ffi::OsStr>>(
        &self,
        command: &str,
        args: &[S],
    ) -> std::process::Output {
        vigil()
            .arg(command)
            .args(args)
            .args(["--addr", &self.addr])
            .env_remove("VIGIL_TOKEN")
            .env_remove("VIGIL_TOKEN_FILE")
            .output()
            .expect("the client runs")
    }
}

/// A client's stdout, after checking that it succeeded (else its exit, stderr and stdout).
pub fn stdout_of(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}; stderr: {}; stdout: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
