//! The `vigil` binary end to end: it serves with defaults, `vigil simulate` runs a fleet
//! against it, it stops cleanly on SIGINT, and it refuses a bad configuration with a clear
//! message.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use common::process::{lines_of, stdout_of, vigil, wait_line, Operated};

#[test]
fn serve_runs_with_defaults_and_stops_gracefully_on_sigint() {
    let dir = std::env::temp_dir().join(format!("vigil-serve-{}", std::process::id()));
    let mut child = vigil()
        .arg("serve")
        .env("RUST_LOG", "info")
        .env(
            "VIGIL_STORE__URL",
            format!("surrealkv://{}/db", dir.display()),
        )
        .env("VIGIL_SERVER__AGENT_LISTEN", "127.0.0.1:0")
        .env("VIGIL_SERVER__HTTP_LISTEN", "127.0.0.1:0")
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .spawn()
        .expect("vigil starts");
    let stderr = child.stderr.take().expect("stderr piped");
    let mut lines = BufReader::new(stderr).lines();
    // Wait for the line that says it is supervising (the process's own signal of readiness).
    let ready = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.contains("vigil is supervising"))
        .expect("vigil never said it was supervising");
    // An agent speaks protocol v1 to the listener it names.
    let addr = strip_ansi(&ready)
        .split_whitespace()
        .find_map(|w| w.strip_prefix("agents="))
        .expect("the ready line names the agent listener")
        .to_string();
    // The HTTP listener answers too.
    let http = strip_ansi(&ready)
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http="))
        .expect("the ready line names the HTTP listener")
        .to_string();
    let mut h = std::net::TcpStream::connect(&http).expect("the HTTP listener accepts");
    h.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    h.write_all(b"GET /healthz HTTP/1.1\r\nHost: vigil\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut h, &mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"status\":\"ok\""), "{answer}");
    let mut conn = std::net::TcpStream::connect(&addr).expect("the agent listener accepts");
    conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    conn.write_all(
        b"{\"type\":\"hello\",\"protocol\":1,\"role\":\"agent\"}\n{\"type\":\"register\",\"id\":\"cli-1\"}\n",
    )
    .unwrap();
    let mut replies = BufReader::new(conn.try_clone().unwrap()).lines();
    let welcome = replies.next().expect("a reply").expect("readable");
    assert!(welcome.contains("\"welcome\""), "{welcome}");
    let registered = replies.next().expect("a reply").expect("readable");
    assert!(registered.contains("\"registered\""), "{registered}");
    drop(conn);
    // `vigil simulate` runs a small fleet against it, with a stop injected, and reports.
    let json = dir.with_extension("sim.json");
    let sim = vigil()
        .args([
            "simulate",
            "--connect",
            &addr,
            "--agents",
            "40",
            "--connections",
            "4",
        ])
        .args(["--interval", "1s", "--duration", "3s", "--fail-after", "1s"])
        .args(["--stop-share", "0.1", "--quiet", "--json"])
        .arg(&json)
        .output()
        .expect("vigil simulate runs");
    assert!(
        sim.status.success(),
        "{}",
        String::from_utf8_lossy(&sim.stderr)
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("the summary is written")).unwrap();
    assert_eq!(summary["errors"], 0, "{summary}");
    // 36 agents beat every ~0.75 s for 3 s, 4 for the first second only.
    assert!(summary["beats"].as_u64().unwrap() >= 100, "{summary}");
    let _ = std::fs::remove_file(&json);
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let exit = child.wait().expect("vigil exits");
    assert!(exit.success(), "exit {exit:?}, log: {rest:?}");
    assert!(rest.iter().any(|l| l.contains("shutting down")), "{rest:?}");
    assert!(dir.join("db").exists(), "the store was created on disk");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_text_log_is_plain_when_stderr_is_not_a_terminal() {
    // NO_COLOR empty counts as not set: only the pipe says "no colours" here.
    let served = common::process::Served::start(&[], &[("NO_COLOR", "")]);
    let ready = served.until("vigil is supervising");
    assert!(
        !ready.iter().any(|l| l.contains('\x1b')),
        "colour codes in a log written to a pipe: {ready:?}"
    );
}

#[test]
fn listening_beyond_loopback_without_tokens_is_refused() {
    let out = vigil()
        .args(["config", "check"])
        .env("VIGIL_SERVER__AGENT_LISTEN", "0.0.0.0:7400")
        .env("VIGIL_AUTH__AGENT_TOKENS", "[\"a\"]")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a loopback address") && err.contains("monitor_tokens, admin_tokens"),
        "{err}"
    );
    // With a token for every role it starts (the check passes).
    let out = vigil()
        .args(["config", "check"])
        .env("VIGIL_SERVER__AGENT_LISTEN", "0.0.0.0:7400")
        .env("VIGIL_AUTH__AGENT_TOKENS", "[\"a\"]")
        .env("VIGIL_AUTH__MONITOR_TOKENS", "[\"m\"]")
        .env("VIGIL_AUTH__ADMIN_TOKENS", "[\"x\"]")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_bad_configuration_is_refused_with_a_clear_message() {
    let dir = std::env::temp_dir().join(format!("vigil-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(&file, "[policy]\ndegraded_after = 0\n").unwrap();
    let out = vigil()
        .args(["--config", file.to_str().unwrap(), "config", "check"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("degraded_after must be at least 1"), "{err}");

    std::fs::write(&file, "[policy]\nheartbeat_interval = \"5s\"\n").unwrap();
    let out = vigil()
        .args(["--config", file.to_str().unwrap(), "config", "check"])
        .env("VIGIL_POLICY__RECOVERY", "4")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("heartbeat_interval: 5s"), "{text}");
    assert!(text.contains("recovery: 4"), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The text without terminal colour codes.
fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn vigil_agents_lists_gets_and_evicts_and_vigil_watch_prints_the_eviction() {
    let srv = Operated::start(&[]);

    // A monitor, subscribed (its snapshot printed) before anything happens.
    let mut watch = vigil()
        .args(["watch", "--json", "--addr", &srv.addr])
        .env_remove("VIGIL_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("vigil watch starts");
    let watched = lines_of(watch.stdout.take().expect("stdout piped"));
    let watch_err = lines_of(watch.stderr.take().expect("stderr piped"));
    let snapshot = wait_line(&watched, 30, "snapshot from vigil watch", |l| {
        l.contains("\"snapshot\"")
    });
    let snapshot: serde_json::Value = serde_json::from_str(&snapshot).expect("a JSON frame");
    assert_eq!(snapshot["type"], "snapshot", "{snapshot}");

    // An agent registers over TCP.
    let mut conn = std::net::TcpStream::connect(&srv.addr).expect("the listener accepts");
    conn.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    conn.write_all(
        b"{\"type\":\"hello\",\"protocol\":1,\"role\":\"agent\"}\n\
          {\"type\":\"register\",\"id\":\"cli-a1\",\"kind\":\"worker\",\"name\":\"first\"}\n",
    )
    .unwrap();
    let mut replies = BufReader::new(conn.try_clone().unwrap()).lines();
    let welcome = replies.next().expect("a reply").expect("readable");
    assert!(welcome.contains("\"welcome\""), "{welcome}");
    let registered = replies.next().expect("a reply").expect("readable");
    assert!(registered.contains("\"registered\""), "{registered}");

    // `list --json` shows it, as the protocol's agent record.
    let list: serde_json::Value =
        serde_json::from_str(&stdout_of(&srv.agents(&["list", "--json"]))).expect("JSON");
    let agents = list.as_array().expect("an array of agents");
    let a1 = agents
        .iter()
        .find(|a| a["id"] == "cli-a1")
        .unwrap_or_else(|| panic!("cli-a1 is listed: {list}"));
    assert_eq!(
        (&a1["kind"], &a1["status"], &a1["connected"]),
        (
            &serde_json::json!("worker"),
            &serde_json::json!("online"),
            &serde_json::json!(true)
        ),
        "{a1}"
    );
    // Filters go to the server.
    let offline: serde_json::Value = serde_json::from_str(&stdout_of(
        &srv.agents(&["list", "--status", "offline", "--json"]),
    ))
    .unwrap();
    assert_eq!(offline, serde_json::json!([]), "no agent is offline");

    // The table for people.
    let table = stdout_of(&srv.agents(&["list"]));
    let mut rows = table.lines();
    let header = rows.next().unwrap_or_default();
    assert!(
        header.starts_with("ID") && header.contains("STATUS") && header.contains("LAST SEEN"),
        "{table}"
    );
    let row = rows
        .find(|r| r.starts_with("cli-a1 "))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        row.contains("first") && row.contains("worker") && row.contains("online"),
        "{table}"
    );

    // `get` prints the record.
    let got = stdout_of(&srv.agents(&["get", "cli-a1"]));
    for want in ["cli-a1", "first", "worker", "online", "incarnation:"] {
        assert!(got.contains(want), "{want} missing from: {got}");
    }
    assert!(
        got.lines()
            .any(|l| l.starts_with("status:") && l.ends_with("online")),
        "{got}"
    );

    // `evict` evicts it: the command says so, the agent's connection is told, and the
    // monitor prints the event.
    let evicted = stdout_of(&srv.agents(&["evict", "cli-a1", "--reason", "test"]));
    assert!(evicted.contains("evicted cli-a1"), "{evicted}");
    let told = replies.next().expect("a frame").expect("readable");
    assert!(
        told.contains("\"evicted\"") && told.contains("cli-a1"),
        "{told}"
    );
    let event = wait_line(&watched, 30, "the eviction from vigil watch", |l| {
        l.contains("cli-a1") && l.contains("\"deregistered\"")
    });
    let event: serde_json::Value = serde_json::from_str(&event).expect("a JSON frame");
    assert_eq!(
        (&event["type"], &event["reason"], &event["from"]),
        (
            &serde_json::json!("event"),
            &serde_json::json!("evicted"),
            &serde_json::json!("online")
        ),
        "{event}"
    );
    assert!(
        event["seq"].as_u64().unwrap() > snapshot["seq"].as_u64().unwrap(),
        "{event}"
    );

    // Errors: non-zero, with the protocol's code.
    for args in [&["evict", "cli-a1"][..], &["get", "nobody-here"][..]] {
        let out = srv.agents(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded: {err}");
        assert!(err.contains("unknown_agent"), "{args:?}: {err}");
    }

    let _ = watch.kill();
    let _ = watch.wait();
    let errs: Vec<String> = watch_err.try_iter().collect();
    assert!(
        errs.iter().all(|l| !l.contains("disconnected")),
        "the watch never lost its connection: {errs:?}"
    );
}

#[test]
fn vigil_agents_says_why_it_cannot_operate() {
    // Nothing listens on port 1.
    let out = vigil()
        .args(["agents", "list", "--addr", "127.0.0.1:1"])
        .env_remove("VIGIL_TOKEN")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("cannot reach the server at 127.0.0.1:1")
            && err.contains("is `vigil serve` running there?"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one line, no backtrace: {err}");

    // A server that wants an admin token.
    let srv = Operated::start(&[("VIGIL_AUTH__ADMIN_TOKENS", "[\"op-secret\"]")]);
    let out = srv.agents(&["list"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("unauthorized"), "{err}");
    let out = srv.agents(&["list", "--json", "--token", "op-secret"]);
    assert_eq!(stdout_of(&out).trim(), "[]");
    // The token may come from the environment.
    let out = vigil()
        .args(["agents", "stats", "--addr", &srv.addr])
        .env("VIGIL_TOKEN", "op-secret")
        .output()
        .unwrap();
    let stats = stdout_of(&out);
    assert!(stats.contains("registry."), "{stats}");
}

#[test]
fn vigil_agents_and_vigil_watch_connect_over_tls_with_ca() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls");
    let (cert, key, ca) = (
        dir.join("cert.pem"),
        dir.join("key.pem"),
        dir.join("ca.pem"),
    );
    let srv = Operated::start(&[
        ("VIGIL_SERVER__TLS_CERT", cert.to_str().unwrap()),
        ("VIGIL_SERVER__TLS_KEY", key.to_str().unwrap()),
    ]);
    let ca = ca.to_str().unwrap();
    let tls = ["--ca", ca, "--tls-name", "localhost"];
    let mut args = vec!["stats", "--json"];
    args.extend_from_slice(&tls);
    let stats: serde_json::Value = serde_json::from_str(&stdout_of(&srv.agents(&args))).unwrap();
    assert!(stats["registry"].is_object(), "{stats}");
    // Without --ca it does not speak TLS, and says that it got no answer.
    let out = srv.agents(&["stats", "--timeout", "3s"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("cannot reach the server"), "{err}");

    // The watch takes the CA and the name from the environment.
    let mut watch = vigil()
        .args(["watch", "--json", "--addr", &srv.addr])
        .env("VIGIL_CA", ca)
        .env("VIGIL_TLS_NAME", "localhost")
        .env_remove("VIGIL_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("vigil watch starts");
    let watched = lines_of(watch.stdout.take().expect("stdout piped"));
    wait_line(&watched, 30, "a snapshot over TLS", |l| {
        l.contains("\"snapshot\"")
    });
    let _ = watch.kill();
    let _ = watch.wait();
}
