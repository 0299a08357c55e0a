//! Headless Chromium driven over the DevTools protocol.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// Chromium's path: `VIGIL_CHROMIUM`, or the usual names on the PATH. When there is none, a
/// panic that says what to install, or `None` (the test skips, saying so) when
/// `VIGIL_SKIP_BROWSER=1`. Installing is left to the machine's owner (`.ci/run` does it).
pub(crate) fn chromium() -> Option<PathBuf> {
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

pub(crate) type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Headless Chromium with one page, driven over the DevTools protocol.
pub(crate) struct Browser {
    child: Child,
    ws: Ws,
    session: String,
    next_id: u64,
    /// Exceptions thrown and errors logged by the page.
    pub(crate) errors: Vec<String>,
    /// The server's HTTP address: a failed wait says what the server counted then.
    pub(crate) server: Option<std::net::SocketAddr>,
}

impl Browser {
    pub(crate) async fn launch(exe: &Path, profile: &Path) -> Self {
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
            server: None,
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

    pub(crate) async fn call_browser(&mut self, method: &str, params: Value) -> Value {
        self.send(method, params, None).await
    }

    pub(crate) async fn call(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.send(method, params, Some(session)).await
    }

    pub(crate) async fn send(
        &mut self,
        method: &str,
        params: Value,
        session: Option<String>,
    ) -> Value {
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

    pub(crate) async fn open(&mut self, url: &str) {
        self.call("Page.navigate", json!({ "url": url })).await;
        self.wait_for(
            "the page to load",
            "document.readyState === 'complete' && typeof vigilDashboard === 'object'",
            Duration::from_secs(20),
        )
        .await;
    }

    /// The value of a JavaScript expression.
    pub(crate) async fn eval(&mut self, expr: &str) -> Value {
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
    pub(crate) async fn eval_async(&mut self, expr: &str) -> Value {
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
    pub(crate) async fn wait_for(&mut self, what: &str, expr: &str, limit: Duration) -> Instant {
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
                let server = self.server_counts().await;
                panic!(
                    "waited {limit:?} for {what}: `{expr}` stayed false; the page: {page}; \
                     the server:{server}"
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What the server counts now (its stats and sinks), for a failure's message; nothing
    /// when the browser was not told the server's address.
    async fn server_counts(&self) -> String {
        let Some(http) = self.server else {
            return String::new();
        };
        let rest = reqwest::Client::new();
        let mut said = String::new();
        for path in ["/api/v1/stats", "/api/v1/sinks"] {
            let sent = rest
                .get(format!("http://{http}{path}"))
                .bearer_auth("adm")
                .send()
                .await;
            let text = match sent {
                Ok(r) => r.text().await.unwrap_or_else(|e| e.to_string()),
                Err(e) => e.to_string(),
            };
            said.push_str(&format!("\n{path}: {text}"));
        }
        said
    }

    /// Waits until the probe's row shows `status`, and reports how long after `since` (when
    /// the test's own monitor received the server's event) it did.
    pub(crate) async fn shows(
        &mut self,
        status_js: &str,
        status: &str,
        since: Instant,
        what: &str,
    ) {
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

    pub(crate) async fn key(&mut self, key: &str, code: u32) {
        for kind in ["rawKeyDown", "keyUp"] {
            self.call(
                "Input.dispatchKeyEvent",
                json!({ "type": kind, "key": key, "code": key, "windowsVirtualKeyCode": code }),
            )
            .await;
        }
    }

    /// The whole page (beyond the window's height), as PNG.
    pub(crate) async fn screenshot(&mut self) -> Vec<u8> {
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
        base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().expect("screenshot data"))
            .expect("the screenshot is base64")
    }

    pub(crate) async fn close(mut self) {
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
