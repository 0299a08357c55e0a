//! The `vigil` binary end to end: it serves with defaults, `vigil simulate` runs a fleet
//! against it, it stops cleanly on SIGINT, and it refuses a bad configuration with a clear
//! message.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

fn vigil() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vigil"))
}

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
