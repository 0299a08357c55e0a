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

#[path = "dashboard/browser.rs"]
mod browser;
mod common;
#[path = "dashboard/processes.rs"]
mod processes;

use browser::{chromium, Browser};
use processes::{Fleet, Monitor, Probe, Serve};

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

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
    b.server = Some(http);
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
