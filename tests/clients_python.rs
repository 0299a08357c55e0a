//! The Python client (`clients/python`) passes its own tests (pytest) against this build's
//! `vigil serve`. Needs Python 3.9 or newer with `venv`; pytest is installed from PyPI into a
//! virtual environment outside the clone (`VIGIL_PYVENV`, default `~/.cache/vigil-pyvenv`).

use std::path::PathBuf;
use std::process::Command;

fn venv() -> PathBuf {
    if let Some(p) = std::env::var_os("VIGIL_PYVENV") {
        return p.into();
    }
    let home = std::env::var_os("HOME").map_or_else(std::env::temp_dir, PathBuf::from);
    home.join(".cache/vigil-pyvenv")
}

fn run(cmd: &mut Command, what: &str) -> std::process::Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn the_python_client_passes_its_tests_against_this_server() {
    let venv = venv();
    let python = venv.join("bin/python");
    if !python.exists() {
        run(
            Command::new("python3").args(["-m", "venv"]).arg(&venv),
            "creating a Python virtual environment (needs python3 >= 3.9 with venv; on Debian: \
             apt-get install python3-venv)",
        );
    }
    let has_pytest = Command::new(&python)
        .args(["-c", "import pytest"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_pytest {
        run(
            Command::new(&python).args(["-m", "pip", "install", "-q", "pytest>=7"]),
            "installing pytest from PyPI",
        );
    }
    let client = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients/python");
    let out = run(
        Command::new(&python)
            .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
            .current_dir(&client)
            .env("PYTHONPATH", client.join("src"))
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("VIGIL_BIN", env!("CARGO_BIN_EXE_vigil")),
        "the Python client's tests",
    );
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains(" passed"), "{summary}");
    assert!(!summary.contains("skipped"), "{summary}");
}
