//! The dashboard in a real browser: `vigil serve` (the binary, on SurrealKV) with a simulated
//! fleet of 1,000 agents, and headless Chromium driven over the DevTools protocol. The page
//! must show an agent appear, go degraded and offline, and recover, each within a second of
//! the server's transition; run an admin action; resume after a dropped connection with no
//! event lost; and keep the table virtualised and keyboard-driven. The screenshot is kept in
//! `$CARGO_TARGET_TMPDIR/dashboard-e2e.png` (and written to `$VIGIL_DOCS_SCREENSHOT` too when
//! that is set).
//!
//! Needs Chromium: `chromium` on the PATH (Debian: `apt-get install chromium`; `.ci/run`
//! installs it), or the path in `VIGIL_CHROMIUM`. Without it the test fails and says so, unless
//! `VIGIL_SKIP_BROWSER=1` asks it to skip (README, "Two commands").

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Client;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

const PROBE: &str = "dash-probe";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_follows_the_fleet_live_in_a_real_browser() {
    let Some(chromium) = chromium() else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("vigil-dashboard-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let serve = Serve::start(env!("CARGO_BIN_EXE_vigil"), &dir);
    let (agents, http) = (serve.agents, serve.http);
    let _fleet = [
        Fleet::start(agents, "worker", "wk", 700, &[]),
        Fleet::start(agents, "gpu-worker", "gpu", 300, &[]),
    ];
    let mut monitor = Monitor::start(agents).await;
    let rest = reqwest::Client::new();

    let mut b = Browser::launch(&chromium, &dir.join("profile")).await;
    b.open(&format!("http://{http}/#token=adm")).await;
    b.wait_for(
        "the page to connect, take its snapshot and find it may act as admin",
        "vigilDashboard.synced && vigilDashboard.connected && vigilDashboard.admin",
        Duration::from_secs(20),
    )
    .await;
    b.wait_for(
        "the 1,000 simulated agents",
        "vigilDashboard.agents.size >= 1000 && document.getElementById('total').textContent === '1,000'",
        Duration::from_secs(60),
    )
    .await;

    // The outbound channel is listed, delivering.
    b.wait_for(
        "the log sink in the channels panel",
        "!document.getElementById('channels').hidden && \
         document.querySelector('#channels-body tr[data-sink=trail]')?.children[2].textContent === 'ok'",
        Duration::from_secs(10),
    )
    .await;

    // The table is virtualised: a few dozen rows in the document for 1,000 agents.
    let rows = b
        .eval("document.querySelectorAll('#viewport .row:not([hidden])').length")
        .await;
    let rows = rows.as_u64().unwrap();
    assert!(rows > 0 && rows < 100, "{rows} rows rendered");
    // Keyboard: End goes to the last agent (scrolling it into view), Home and ArrowDown back.
    b.eval("document.getElementById('grid').focus()").await;
    b.key("End", 35).await;
    b.wait_for(
        "End to reach the last row",
        "document.getElementById('grid').getAttribute('aria-activedescendant') === `row-${vigilDashboard.view.length - 1}` \
         && document.getElementById(`row-${vigilDashboard.view.length - 1}`) !== null",
        Duration::from_secs(5),
    )
    .await;
    b.key("Home", 36).await;
    b.key("ArrowDown", 40).await;
    b.wait_for(
        "Home, ArrowDown to reach the second row",
        "document.getElementById('grid').getAttribute('aria-activedescendant') === 'row-1'",
        Duration::from_secs(5),
    )
    .await;
    // Sorting by status puts the worst first.
    b.eval("document.querySelector('[data-key=status]').click()")
        .await;
    b.wait_for(
        "the table sorted by status",
        "document.querySelector('[data-key=status]').parentElement.getAttribute('aria-sort') === 'ascending'",
        Duration::from_secs(5),
    )
    .await;

    // Find the probe by typing its id into the search box.
    b.eval("document.getElementById('q').focus()").await;
    b.call("Input.insertText", json!({ "text": PROBE })).await;
    let status_js = format!(
        "(() => {{ const r = document.querySelector('#viewport .row[data-id=\"{PROBE}\"]:not([hidden])'); \
         return r ? r.children[3].textContent : null }})()"
    );

    // It appears, goes degraded, offline, and recovers: each within a second of the server.
    let probe = Probe::start(agents).await;
    let seen = monitor.next(|e| e["event"] == "registered").await;
    b.shows(&status_js, "online", seen, "the probe to appear online")
        .await;
    probe.beating.store(false, Ordering::SeqCst);
    let seen = monitor.next(|e| e["to"] == "degraded").await;
    b.shows(&status_js, "degraded", seen, "the probe to turn degraded")
        .await;
    let seen = monitor.next(|e| e["to"] == "offline").await;
    b.shows(&status_js, "offline", seen, "the probe to turn offline")
        .await;
    probe.beating.store(true, Ordering::SeqCst);
    let seen = monitor.next(|e| e["to"] == "online").await;
    b.shows(&status_js, "online", seen, "the probe to recover")
        .await;

    // Its details open on a click and list its events; an admin action acts.
    b.eval(&format!(
        "document.querySelector('#viewport .row[data-id=\"{PROBE}\"]').click()"
    ))
    .await;
    b.wait_for(
        "the probe's details with its recent events",
        &format!(
            "!document.getElementById('detail').hidden && document.getElementById('detail-title').textContent === '{PROBE}' \
             && document.getElementById('detail-events').textContent.includes('offline → online') \
             && document.getElementById('detail-metrics').textContent.includes('load')"
        ),
        Duration::from_secs(10),
    )
    .await;
    b.eval("document.getElementById('act-maint-on').click()")
        .await;
    let seen = monitor.next(|e| e["to"] == "maintenance").await;
    b.shows(&status_js, "maintenance", seen, "the admin action's result")
        .await;
    b.wait_for(
        "the action's confirmation",
        "document.getElementById('toast').textContent.startsWith('Maintenance on: done')",
        Duration::from_secs(5),
    )
    .await;
    let rec = get_json(&rest, &format!("http://{http}/api/v1/agents/{PROBE}")).await;
    assert_eq!(rec["status"], "maintenance", "{rec}");

    // A dropped connection: the page says so, and what happens meanwhile is not lost.
    b.eval("vigilDashboard.ws.close()").await;
    b.wait_for(
        "the page to say it is disconnected",
        "!vigilDashboard.connected && document.getElementById('conn').textContent.startsWith('Disconnected')",
        Duration::from_secs(5),
    )
    .await;
    let r = rest
        .delete(format!(
            "http://{http}/api/v1/agents/{PROBE}?reason=decommissioned"
        ))
        .bearer_auth("adm")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    monitor.next(|e| e["event"] == "deregistered").await;
    b.wait_for(
        "the page to resume and show the eviction",
        &format!("vigilDashboard.connected && {status_js} === 'left'"),
        Duration::from_secs(15),
    )
    .await;
    // Once the fleet is quiet, the page's counts are the server's, with no gap on the way.
    let server = quiet_stats(&rest, http).await;
    b.wait_for(
        "the page to reach the server's last seq",
        &format!("vigilDashboard.lastSeq === {}", server["last_seq"]),
        Duration::from_secs(10),
    )
    .await;
    let page = b
        .eval("JSON.stringify({counts: vigilDashboard.counts, gaps: vigilDashboard.gaps, snapshots: vigilDashboard.snapshots})")
        .await;
    let page: Value = serde_json::from_str(page.as_str().unwrap()).unwrap();
    assert_eq!(page["gaps"], 0);
    // It resumed from its last seq: the reconnection took no second snapshot.
    assert_eq!(page["snapshots"], 1, "{page}");
    for (status, n) in server["agents"].as_object().unwrap() {
        assert_eq!(
            page["counts"][status], *n,
            "{status}: page {page}, server {server}"
        );
    }

    // The screenshot: the whole fleet, worst first. For the one in docs/, a part of the fleet
    // flaps for a while first, so the chart and the log have something to show.
    let docs = std::env::var("VIGIL_DOCS_SCREENSHOT").ok();
    let _flapping = docs.as_ref().map(|_| {
        let flaps = ["--flap-share", "0.1", "--degraded-share", "0.05"];
        Fleet::start(agents, "etl", "etl", 200, &flaps)
    });
    if docs.is_some() {
        let secs = std::env::var("VIGIL_DOCS_WAIT").map_or(150, |s| s.parse().unwrap());
        tokio::time::sleep(Duration::from_secs(secs)).await;
    }
    b.eval("document.getElementById('detail-close').click()")
        .await;
    b.eval("document.getElementById('q').value = ''; document.getElementById('q').dispatchEvent(new Event('input'))")
        .await;
    b.wait_for(
        "the unfiltered table",
        "vigilDashboard.view.length >= 1000",
        Duration::from_secs(5),
    )
    .await;
    let png = b.screenshot().await;
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let kept = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard-e2e.png");
    std::fs::write(&kept, &png).unwrap();
    eprintln!("dashboard screenshot: {}", kept.display());
    if let Some(docs) = docs {
        std::fs::write(&docs, &png).unwrap();
    }

    // A monitor token sees the fleet but is offered no actions.
    b.open(&format!("http://{http}/?token=mon")).await;
    b.wait_for(
        "a read-only page for a monitor token",
        "vigilDashboard.synced && vigilDashboard.connected && vigilDashboard.adminChecked && !vigilDashboard.admin \
         && document.getElementById('role').textContent === 'read-only' && document.getElementById('admin').hidden",
        Duration::from_secs(20),
    )
    .await;

    let errors = b.errors.clone();
    assert!(errors.is_empty(), "the page logged errors: {errors:#?}");
    b.close().await;
    drop(serve);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A measurement, not a check: the page with a big fleet (default 100,000 agents, 1% flapping
/// and 1% stopping), what loading, sorting, filtering and following the churn cost in the
/// browser. Run it with a release server:
/// `VIGIL_BIN=target/release/vigil cargo test --test dashboard -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement with a big fleet; see docs/benchmarks.md"]
async fn a_big_fleet_in_the_browser() {
    let Some(chromium) = chromium() else {
        return;
    };
    let bin = std::env::var("VIGIL_BIN").unwrap_or(env!("CARGO_BIN_EXE_vigil").into());
    let n: usize = std::env::var("VIGIL_DASHBOARD_AGENTS").map_or(100_000, |s| s.parse().unwrap());
    let dir = std::env::temp_dir().join(format!("vigil-dashboard-big-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let serve = Serve::start(&bin, &dir);
    let args = [
        "--connections",
        "100",
        "--interval",
        "10s",
        "--fail-after",
        "30s",
    ];
    let churn = ["--flap-share", "0.01", "--stop-share", "0.01"];
    let _fleet = Fleet::run(
        &bin,
        serve.agents,
        "worker",
        "big",
        n,
        &[&args[..], &churn].concat(),
    );
    let rest = reqwest::Client::new();
    let http = serve.http;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let s = get_json(&rest, &format!("http://{http}/api/v1/stats")).await;
        if s["registry"]["total"].as_u64() == Some(n as u64) {
            break;
        }
        assert!(Instant::now() < deadline, "the fleet never registered: {s}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut b = Browser::launch(&chromium, &dir.join("profile")).await;
    let t0 = Instant::now();
    b.open(&format!("http://{http}/#token=adm")).await;
    let loaded = b
        .wait_for(
            "the snapshot",
            &format!("vigilDashboard.synced && vigilDashboard.view.length === {n}"),
            Duration::from_secs(120),
        )
        .await
        .duration_since(t0);
    let t = |b: Value| -> String { b.to_string() };
    let first = b.eval("JSON.stringify(vigilDashboard.timings)").await;
    // Sort by status, then by last seen; filter by a search; each one view rebuild.
    let mut builds = Vec::new();
    let full = format!("vigilDashboard.view.length === {n}");
    let searched = format!("vigilDashboard.view.length < {n}");
    for (action, done) in [
        ("document.querySelector('[data-key=status]').click()", full.as_str()),
        ("document.querySelector('[data-key=last_seen]').click()", full.as_str()),
        (
            "document.getElementById('q').value = '0042'; document.getElementById('q').dispatchEvent(new Event('input'))",
            searched.as_str(),
        ),
        (
            "document.getElementById('q').value = ''; document.getElementById('q').dispatchEvent(new Event('input'))",
            full.as_str(),
        ),
    ] {
        b.eval(action).await;
        // The search is applied after a pause in typing: wait for the view it makes.
        b.wait_for("the view to be rebuilt", done, Duration::from_secs(10))
            .await;
        builds.push(b.eval("vigilDashboard.timings.lastBuildMs").await);
    }
    // Follow the churn for a while, sorted worst first: frames drawn per second and the
    // longest task.
    b.eval("document.querySelector('[data-key=status]').click()")
        .await;
    b.wait_for(
        "the churn to start",
        &format!("vigilDashboard.lastSeq > {n} + 500"),
        Duration::from_secs(60),
    )
    .await;
    let churn_from = b.eval("vigilDashboard.lastSeq").await;
    b.eval("vigilDashboard.timings.longTasks = 0; vigilDashboard.timings.longestTaskMs = 0; vigilDashboard.timings.maxBuildMs = 0")
        .await;
    let fps = b
        .eval_async(
            "new Promise((done) => { let n = 0; const t0 = performance.now(); \
             const f = () => { n++; if (performance.now() - t0 < 20000) requestAnimationFrame(f); \
             else done(n / ((performance.now() - t0) / 1000)); }; requestAnimationFrame(f); })",
        )
        .await;
    let after = b.eval("JSON.stringify({timings: vigilDashboard.timings, seq: vigilDashboard.lastSeq, gaps: vigilDashboard.gaps, heap: performance.memory ? performance.memory.usedJSHeapSize : null, dom: document.getElementsByTagName('*').length})").await;
    eprintln!("agents: {n}");
    eprintln!("page load to a synced table: {loaded:?}");
    eprintln!("after the snapshot: {}", t(first));
    eprintln!("view rebuilds (sort status, sort last seen, search, clear), ms: {builds:?}");
    eprintln!("frames per second while following the churn (20 s, from seq {churn_from}): {fps}");
    eprintln!("after: {}", after.as_str().unwrap());
    let after: Value = serde_json::from_str(after.as_str().unwrap()).unwrap();
    assert_eq!(after["gaps"], 0);
    b.close().await;
    drop(serve);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A REST read with the admin token, as JSON.
async fn get_json(rest: &reqwest::Client, url: &str) -> Value {
    let text = rest
        .get(url)
        .bearer_auth("adm")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: {e}: {text}"))
}

/// The server's counts and last seq once two reads a second apart agree (the simulated fleet
/// has settled: its stopped agents are offline, the rest beat without changing status).
async fn quiet_stats(rest: &reqwest::Client, http: std::net::SocketAddr) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = Value::Null;
    loop {
        let s = get_json(rest, &format!("http://{http}/api/v1/stats")).await;
        let now = &s["registry"];
        if now["last_seq"] == last["last_seq"] && now["durable_seq"] == now["last_seq"] {
            return now.clone();
        }
        assert!(Instant::now() < deadline, "the fleet never settled: {s}");
        last = now.clone();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

// ---- the browser ---------------------------------------------------------------------------

/// Chromium's path: `VIGIL_CHROMIUM`, or the usual names on the PATH. When there is none, a
/// panic that says what to install, or `None` (the test skips, saying so) when
/// `VIGIL_SKIP_BROWSER=1`. Installing is left to the machine's owner (`.ci/run` does it).
fn chromium() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("VIGIL_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| {
            std::env::var_os("PATH")
                .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
                .unwrap_or_default()
                .into_iter()
                .map(move |d| d.join(name))
        })
        .find(|p| p.is_file());
    let needs = "this test needs Chromium: install Debian's `chromium` (apt-get install chromium; \
                 .ci/run does), or set VIGIL_CHROMIUM to a Chromium or Chrome binary";
    match found {
        Some(p) => Some(p),
        None if std::env::var("VIGIL_SKIP_BROWSER").is_ok_and(|v| v == "1") => {
            eprintln!("skipped (VIGIL_SKIP_BROWSER=1): {needs}");
            None
        }
        None => panic!("{needs}; or set VIGIL_SKIP_BROWSER=1 to skip it"),
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Headless Chromium with one page, driven over the DevTools protocol.
struct Browser {
    child: Child,
    ws: Ws,
    session: String,
    next_id: u64,
    /// Exceptions thrown and errors logged by the page.
    errors: Vec<String>,
}

impl Browser {
    async fn launch(exe: &Path, profile: &Path) -> Self {
        let mut child = Command::new(exe)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--hide-scrollbars",
                "--window-size=1440,1000",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{} does not start: {e}", exe.display()));
        // Chromium names its DevTools endpoint on stderr; the rest of stderr is drained.
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(url.trim().to_string());
                    }
                }
            }
        });
        let url = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(30)))
            .await
            .unwrap()
            .expect("Chromium named no DevTools endpoint within 30 s");
        let (ws, _) = tokio_tungstenite::connect_async(&url)
            .await
            .expect("the DevTools endpoint accepts");
        let mut b = Browser {
            child,
            ws,
            session: String::new(),
            next_id: 0,
            errors: Vec::new(),
        };
        let target = b
            .call_browser("Target.createTarget", json!({ "url": "about:blank" }))
            .await;
        let attached = b
            .call_browser(
                "Target.attachToTarget",
                json!({ "targetId": target["targetId"], "flatten": true }),
            )
            .await;
        b.session = attached["sessionId"].as_str().unwrap().to_string();
        b.call("Page.enable", json!({})).await;
        b.call("Runtime.enable", json!({})).await;
        b.call("Log.enable", json!({})).await;
        b
    }

    async fn call_browser(&mut self, method: &str, params: Value) -> Value {
        self.send(method, params, None).await
    }

    async fn call(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.send(method, params, Some(session)).await
    }

    async fn send(&mut self, method: &str, params: Value, session: Option<String>) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        self.ws
            .send(Message::Text(msg.to_string().into()))
            .await
            .expect("DevTools takes a command");
        loop {
            let m = tokio::time::timeout(Duration::from_secs(30), self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("{method}: no answer from Chromium in 30 s"))
                .expect("DevTools stays open")
                .expect("DevTools readable");
            let Message::Text(t) = m else { continue };
            let v: Value = serde_json::from_str(&t).unwrap();
            match v["method"].as_str() {
                Some("Runtime.exceptionThrown") => {
                    self.errors
                        .push(v["params"]["exceptionDetails"].to_string());
                }
                Some("Log.entryAdded") if v["params"]["entry"]["level"] == "error" => {
                    self.errors.push(v["params"]["entry"]["text"].to_string());
                }
                _ => {}
            }
            if v["id"] == id {
                if let Some(e) = v.get("error") {
                    panic!("{method}: {e}");
                }
                return v["result"].clone();
            }
        }
    }

    async fn open(&mut self, url: &str) {
        self.call("Page.navigate", json!({ "url": url })).await;
        self.wait_for(
            "the page to load",
            "document.readyState === 'complete' && typeof vigilDashboard === 'object'",
            Duration::from_secs(20),
        )
        .await;
    }

    /// The value of a JavaScript expression.
    async fn eval(&mut self, expr: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expr, "returnByValue": true }),
            )
            .await;
        if let Some(e) = r.get("exceptionDetails") {
            panic!("{expr}: {e}");
        }
        r["result"]["value"].clone()
    }

    /// The value a JavaScript promise resolves to.
    async fn eval_async(&mut self, expr: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expr, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        if let Some(e) = r.get("exceptionDetails") {
            panic!("{expr}: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Waits (polling the page every 20 ms) until `expr` is truthy; fails naming `what`.
    async fn wait_for(&mut self, what: &str, expr: &str, limit: Duration) -> Instant {
        let deadline = Instant::now() + limit;
        loop {
            let v = self.eval(&format!("!!({expr})")).await;
            if v == json!(true) {
                return Instant::now();
            }
            if Instant::now() >= deadline {
                // What the page knew, so that a failure says whether the server never sent
                // it or the page did not show it.
                let page = self
                    .eval(
                        "JSON.stringify({connected: vigilDashboard.connected, \
                         synced: vigilDashboard.synced, lastSeq: vigilDashboard.lastSeq, \
                         agents: vigilDashboard.agents.size, stats: vigilDashboard.serverStats})",
                    )
                    .await;
                panic!("waited {limit:?} for {what}: `{expr}` stayed false; the page: {page}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the probe's row shows `status`, and reports how long after `since` (when
    /// the test's own monitor received the server's event) it did.
    async fn shows(&mut self, status_js: &str, status: &str, since: Instant, what: &str) {
        let at = self
            .wait_for(
                what,
                &format!("{status_js} === '{status}'"),
                Duration::from_secs(10),
            )
            .await;
        // Measured, not asserted: on a loaded machine any bound is a coin toss. What must
        // hold is that the row shows it (within `wait_for`'s deadline).
        let late = at.saturating_duration_since(since);
        eprintln!("{what}: shown {late:?} after the server's event");
    }

    async fn key(&mut self, key: &str, code: u32) {
        for kind in ["rawKeyDown", "keyUp"] {
            self.call(
                "Input.dispatchKeyEvent",
                json!({ "type": kind, "key": key, "code": key, "windowsVirtualKeyCode": code }),
            )
            .await;
        }
    }

    /// The whole page (beyond the window's height), as PNG.
    async fn screenshot(&mut self) -> Vec<u8> {
        let m = self.call("Page.getLayoutMetrics", json!({})).await;
        let size = &m["cssContentSize"];
        let clip =
            json!({ "x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1 });
        let r = self
            .call(
                "Page.captureScreenshot",
                json!({ "format": "png", "captureBeyondViewport": true, "clip": clip }),
            )
            .await;
        base64_decode(r["data"].as_str().expect("screenshot data"))
    }

    async fn close(mut self) {
        let _ = self.call_browser("Browser.close", json!({})).await;
        let _ = self.child.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let bytes: Vec<u8> = s.bytes().filter(|c| *c != b'=').map(val).collect();
    bytes
        .chunks(4)
        .flat_map(|c| {
            let n = c
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, v)| n | (u32::from(*v) << (18 - 6 * i)));
            let out = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
            out.into_iter().take(c.len() - 1).collect::<Vec<_>>()
        })
        .collect()
}

// ---- the server, the fleet, the probe and the test's own monitor ---------------------------

struct Serve {
    child: Child,
    agents: std::net::SocketAddr,
    http: std::net::SocketAddr,
}

impl Serve {
    fn start(bin: &str, dir: &Path) -> Self {
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
struct Fleet(Child);

impl Fleet {
    fn start(
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

    fn run(
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
struct Probe {
    beating: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Probe {
    async fn start(addr: std::net::SocketAddr) -> Self {
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
struct Monitor {
    rx: mpsc::UnboundedReceiver<(Instant, Value)>,
}

impl Monitor {
    async fn start(addr: std::net::SocketAddr) -> Self {
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
    async fn next(&mut self, want: impl Fn(&Value) -> bool) -> Instant {
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
