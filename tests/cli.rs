//! The `vigil` binary end to end: it serves with defaults, stops cleanly on SIGINT, and refuses
//! a bad configuration with a clear message.

use std::io::{BufRead, BufReader};
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
        .stderr(Stdio::piped())
        .spawn()
        .expect("vigil starts");
    let stderr = child.stderr.take().expect("stderr piped");
    let mut lines = BufReader::new(stderr).lines();
    // Wait for the line that says it is supervising (the process's own signal of readiness).
    let ready = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.contains("vigil is supervising"));
    assert!(ready, "vigil never said it was supervising");
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
