//! The TypeScript client (`clients/typescript`) passes its own tests (`node --test`) against
//! this build's `vigil serve`. Needs Node 18 or newer (`node`; on Debian: `apt-get install
//! nodejs`); the package has no dependencies, so nothing is installed. The browser monitor's
//! suite runs where Node has a WebSocket (20 with a flag, 22), and must not be skipped there.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn the_typescript_client_passes_its_tests_against_this_server() {
    let client = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients/typescript");
    let mut suites: Vec<String> = std::fs::read_dir(client.join("test"))
        .expect("clients/typescript/test")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".test.js"))
        .map(|n| format!("test/{n}"))
        .collect();
    suites.sort();
    assert!(
        !suites.is_empty(),
        "no test suites in clients/typescript/test"
    );
    // The browser monitor's suite needs the platform's WebSocket: built into Node 22, behind
    // a flag in Node 20.
    let ws_flag = Command::new("node")
        .args([
            "--experimental-websocket",
            "-e",
            "if (typeof WebSocket !== 'function') process.exit(1)",
        ])
        .status()
        .is_ok_and(|s| s.success());
    let has_ws = ws_flag
        || Command::new("node")
            .args(["-e", "if (typeof WebSocket !== 'function') process.exit(1)"])
            .status()
            .is_ok_and(|s| s.success());
    let out = Command::new("node")
        .args(ws_flag.then_some("--experimental-websocket"))
        .arg("--test")
        .args(&suites)
        .current_dir(&client)
        .env("VIGIL_BIN", env!("CARGO_BIN_EXE_vigil"))
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run node (Node 18 or newer is needed; on Debian: apt-get install nodejs): {e}")
        });
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the TypeScript client's tests failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("# fail 0"), "{text}");
    if has_ws {
        assert!(text.contains("# skipped 0"), "{text}");
    }
    assert!(!text.contains("# pass 0"), "{text}");
}
