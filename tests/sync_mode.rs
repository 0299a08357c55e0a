//! The embedded store's sync mode, seen from outside the process: `vigil storm` runs on a
//! SurrealKV store with a small preloaded library that counts `fsync`/`fdatasync` calls.
//! With the default URL (which vigil opens with `sync=every`) every group commit is synced;
//! with `?sync=never` almost nothing is. A SIGKILL test cannot tell these apart (the page
//! cache survives it); this one can. It does not cut power: that no acknowledged event is
//! lost then rests on the fsync being done, which is what it shows.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vigil::core::{Event, Status};

/// Builds the counting library with the system's C compiler.
fn build_counter(dir: &Path) -> PathBuf {
    let src = dir.join("count_fsync.c");
    std::fs::write(
        &src,
        r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
static long n;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static void bump(void) {
    pthread_mutex_lock(&mu);
    n++;
    const char *p = getenv("VIGIL_FSYNC_COUNT");
    if (p) {
        int fd = open(p, O_WRONLY | O_CREAT, 0644);
        if (fd >= 0) {
            char b[32];
            int len = snprintf(b, sizeof b, "%020ld\n", n);
            if (pwrite(fd, b, len, 0) < 0) { /* the count is then missing: the test says so */ }
            close(fd);
        }
    }
    pthread_mutex_unlock(&mu);
}
int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    int r = real(fd);
    bump();
    return r;
}
int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    int r = real(fd);
    bump();
    return r;
}
"#,
    )
    .unwrap();
    let lib = dir.join("count_fsync.so");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&cc)
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&lib)
        .arg(&src)
        .arg("-ldl")
        .output()
        .unwrap_or_else(|e| {
            panic!("tests/sync_mode.rs needs a C compiler ({cc}, or set CC) to build its fsync counter: {e}")
        });
    assert!(
        out.status.success(),
        "building the fsync counter failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    lib
}

/// Runs a storm of `agents` on a fresh store at `url_suffix` until every agent's offline
/// transition was delivered; returns the fsyncs done by then.
fn storm(dir: &Path, lib: &Path, url_suffix: &str, agents: usize) -> u64 {
    let db = dir.join(format!("db{}", url_suffix.len()));
    let count = dir.join(format!("count{}", url_suffix.len()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["storm", "--agents", &agents.to_string(), "--keep", "0"])
        .env("LD_PRELOAD", lib)
        .env("VIGIL_FSYNC_COUNT", &count)
        .env(
            "VIGIL_STORE__URL",
            format!("surrealkv://{}{url_suffix}", db.display()),
        )
        .env("VIGIL_POLICY__HEARTBEAT_INTERVAL", "300ms")
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .spawn()
        .expect("vigil storm starts");
    let lines = BufReader::new(child.stdout.take().expect("stdout piped")).lines();
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut offline = 0;
    for line in lines {
        assert!(Instant::now() < deadline, "the storm did not come");
        let line = line.expect("a line");
        let e: Event = serde_json::from_str(&line).expect("an event");
        if e.body.status_after() == Some(Status::Offline) {
            offline += 1;
            if offline == agents {
                break;
            }
        }
    }
    assert_eq!(
        offline, agents,
        "every agent's offline transition delivered"
    );
    // Read before the process stops: closing a store syncs in either mode.
    let fsyncs = std::fs::read_to_string(&count)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let _ = child.kill();
    let _ = child.wait();
    fsyncs
}

#[test]
fn the_default_store_syncs_every_commit_and_sync_never_does_not() {
    let dir = std::env::temp_dir().join(format!("vigil-sync-mode-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let lib = build_counter(&dir);
    let agents = 50;
    let every = storm(&dir, &lib, "", agents);
    let never = storm(&dir, &lib, "?sync=never", agents);
    eprintln!("fsyncs: sync=every {every}, sync=never {never}");
    // Every group commit of the default store was synced: at least one for the
    // registrations and one for the storm's transitions, beyond what opening and closing
    // the store does in either mode (a published event was durable: the fsyncs came first).
    assert!(
        every >= never + 10,
        "fsyncs: {every} with the default URL, {never} with sync=never"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
