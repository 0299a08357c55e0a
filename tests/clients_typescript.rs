//! The TypeScript client (`clients/typescript`) passes its own tests (`node --test`) against
//! this build's `vigil serve`. Needs Node 18 or newer (`node`; on Debian: `apt-get install
//! nodejs`); the package has no dependencies, so nothing is installed.

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
    let out = Command::new("node")
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
    assert!(!text.contains("# pass 0"), "{text}");
}
