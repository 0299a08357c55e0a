//! `vigil serve` as a process: the `--agent-listen`, `--http-listen` and `--store` flags,
//! SIGTERM stopping it like Ctrl-C (drain, last checkpoint, exit 0), and `vigil config check`
//! keeping secrets out of what it prints.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vigil::config::StoreConfig;

fn vigil() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vigil"))
}

/// Waits for the process to exit, at most `limit` (then kills it and fails).
fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("the process can be waited for") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("vigil did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The value of `key=` on the ready line (colours stripped).
fn field(line: &str, key: &str) -> String {
    let plain: String = {
        let mut out = String::new();
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                for c in chars.by_ref() {
                    if c == 'm' {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    };
    plain
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in {plain}"))
        .to_string()
}

#[test]
fn serve_takes_its_flags_and_stops_on_sigterm_with_a_last_checkpoint() {
    let dir = std::env::temp_dir().join(format!("vigil-sigterm-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let url = format!("surrealkv://{}/db", dir.display());
    let mut child = vigil()
        .args([
            "serve",
            "--agent-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .args(["--store", &url])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        // The flags win over the environment.
        .env("VIGIL_STORE__URL", "mem://")
        .env("VIGIL_SERVER__AGENT_LISTEN", "127.0.0.1:1")
        .stderr(Stdio::piped())
        .spawn()
        .expect("vigil starts");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let ready = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.contains("vigil is supervising"))
        .expect("vigil says it is supervising");
    let addr = field(&ready, "agents");
    assert!(
        addr.starts_with("127.0.0.1:") && addr != "127.0.0.1:1",
        "{ready}"
    );
    assert!(
        ready.contains(&dir.display().to_string()),
        "the store flag: {ready}"
    );
    let _http = field(&ready, "http");
    let mut conn = std::net::TcpStream::connect(&addr).expect("the agent listener accepts");
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    conn.write_all(
        b"{\"type\":\"hello\",\"protocol\":1,\"role\":\"agent\"}\n{\"type\":\"register\",\"id\":\"term-1\"}\n",
    )
    .unwrap();
    let mut replies = BufReader::new(conn.try_clone().unwrap()).lines();
    let _welcome = replies.next().expect("welcome").unwrap();
    let registered = replies.next().expect("registered").unwrap();
    assert!(registered.contains("\"registered\""), "{registered}");

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let exit = wait_exit(&mut child, Duration::from_secs(60));
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(exit.success(), "exit {exit:?}, log: {rest:?}");
    assert!(rest.iter().any(|l| l.contains("SIGTERM")), "{rest:?}");
    drop(conn);

    // The store reopens with the final state: a checkpoint up to the last event, holding the
    // agent.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let loaded = rt.block_on(async {
        let store = vigil::serve::store::open(&StoreConfig {
            url: url.clone(),
            ..StoreConfig::default()
        })
        .await
        .expect("the store reopens");
        store.load().await.expect("the store loads")
    });
    assert_eq!(loaded.checkpoint_seq, loaded.last_seq, "a last checkpoint");
    assert!(
        loaded.agents.iter().any(|a| a.id.as_str() == "term-1"),
        "{:?}",
        loaded.agents
    );
    drop(rt);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn config_check_prints_no_secret_and_refuses_an_empty_token() {
    let out = vigil()
        .args(["config", "check"])
        .env("VIGIL_AUTH__ADMIN_TOKENS", "[\"adm-s3cret\"]")
        .env("VIGIL_AUTH__MONITOR_TOKENS", "[\"mon-s3cret\"]")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("admin_tokens"), "{shown}");
    assert!(!shown.contains("s3cret"), "{shown}");

    let out = vigil()
        .args(["config", "check"])
        .env("VIGIL_AUTH__AGENT_TOKENS", "[\"\"]")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("agent_tokens") && err.contains("empty token"),
        "{err}"
    );
}
