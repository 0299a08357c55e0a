//! vigil as a service among services: its log as JSON lines (`--log-format`, `[log] format`,
//! `VIGIL_LOG__FORMAT`), shell completions and the manual page from the command's own
//! definition, and every `vigil serve` flag the README and the docs show being real.

mod common;

use std::io::{BufRead, BufReader, Write};

use common::process::{vigil, Served, LIMIT};
use serde_json::Value;

/// One JSON log line, checked for the keys every line carries.
fn json_line(line: &str) -> Value {
    let v: Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("a log line that is not JSON ({e}): {line}"));
    for key in ["timestamp", "level", "target"] {
        assert!(v[key].is_string(), "no {key} in {line}");
    }
    assert!(v["fields"]["message"].is_string(), "no message in {line}");
    let ts = v["timestamp"].as_str().unwrap_or_default();
    assert!(
        chrono::DateTime::parse_from_rfc3339(ts).is_ok(),
        "timestamp {ts:?} is not RFC 3339: {line}"
    );
    v
}

#[test]
fn serve_with_log_format_json_writes_one_json_object_per_line() {
    // (The listener's debug events: a refused frame is one, logged inside its connection.)
    let served = Served::start(
        &["--log-format", "json"],
        &[("RUST_LOG", "info,vigil::serve::tcp=debug")],
    );
    let before = served.until("vigil is supervising");
    let ready = json_line(before.last().expect("the ready line"));
    assert_eq!(ready["level"], "INFO", "{ready}");
    assert_eq!(ready["target"], "vigil", "{ready}");
    // The event's fields are fields of the object, not words in a message.
    let agents = ready["fields"]["agents"].as_str().expect("agents field");
    assert!(agents.starts_with("127.0.0.1:"), "{ready}");
    assert_eq!(ready["fields"]["store"], "mem://", "{ready}");

    // An agent registers and goes away: whatever the connection logs is JSON too.
    let mut conn = std::net::TcpStream::connect(agents).expect("the agent listener accepts");
    conn.set_read_timeout(Some(LIMIT)).unwrap();
    conn.write_all(
        b"{\"type\":\"hello\",\"protocol\":1,\"role\":\"agent\"}\n{\"type\":\"register\",\"id\":\"json-1\"}\nnot a frame\n",
    )
    .unwrap();
    // The bad frame's answer may come before the registration's, which waits for the store.
    let replies: Vec<String> = BufReader::new(conn.try_clone().unwrap())
        .lines()
        .take(3)
        .map(|l| l.expect("a reply"))
        .collect();
    for want in ["\"welcome\"", "\"registered\"", "\"bad_frame\""] {
        assert!(replies.iter().any(|r| r.contains(want)), "{replies:?}");
    }
    drop(conn);

    let (status, after, stdout) = served.stop();
    assert!(status.success(), "exit {status:?}, log: {after:#?}");
    let all: Vec<Value> = before.iter().chain(&after).map(|l| json_line(l)).collect();
    assert!(
        all.iter().any(
            |v| v["fields"]["message"] == "shutting down" && v["fields"]["signal"] == "SIGTERM"
        ),
        "{all:#?}"
    );
    // The refused frame's event says which connection it came from, in its span.
    let refused = all
        .iter()
        .find(|v| v["fields"]["message"] == "frame refused")
        .unwrap_or_else(|| panic!("no refused frame logged: {all:#?}"));
    assert_eq!(refused["fields"]["code"], "bad_frame", "{refused}");
    assert_eq!(refused["span"]["name"], "connection", "{refused}");
    assert_eq!(refused["span"]["role"], "agent", "{refused}");
    assert!(refused["span"]["conn"].as_u64().is_some(), "{refused}");
    let peer = refused["span"]["peer"].as_str().unwrap_or_default();
    assert!(peer.starts_with("127.0.0.1:"), "{refused}");
    // Nothing else is written to stdout, and if it were it would have to be JSON too.
    for line in stdout.lines() {
        json_line(line);
    }
}

#[test]
fn the_log_format_follows_the_environment_and_the_flag_wins() {
    // `VIGIL_LOG__FORMAT=json`, as any `[section] key`: the first line is already JSON.
    let served = Served::start(&[], &[("VIGIL_LOG__FORMAT", "json")]);
    for line in served.until("vigil is supervising") {
        json_line(&line);
    }
    let (status, after, _) = served.stop();
    assert!(status.success(), "{after:#?}");
    for line in &after {
        json_line(line);
    }

    // The flag over the environment: text, the line a person reads.
    let served = Served::start(&["--log-format", "text"], &[("VIGIL_LOG__FORMAT", "json")]);
    let ready = served.until("vigil is supervising");
    let line = ready.last().expect("the ready line");
    assert!(serde_json::from_str::<Value>(line).is_err(), "{line}");
    assert!(
        line.contains(" INFO ") && line.contains("agents=127.0.0.1:"),
        "{line}"
    );
    let (status, after, _) = served.stop();
    assert!(status.success(), "{after:#?}");
}

#[test]
fn the_log_format_is_read_from_the_file_and_a_wrong_one_is_refused() {
    let dir = std::env::temp_dir().join(format!("vigil-logfmt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("vigil.toml");
    std::fs::write(&file, "[log]\nformat = \"json\"\n").unwrap();
    let out = vigil()
        .args(["--config", file.to_str().unwrap(), "config", "check"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("format: Json"), "{shown}");

    std::fs::write(&file, "[log]\nformat = \"xml\"\n").unwrap();
    let out = vigil()
        .args(["--config", file.to_str().unwrap(), "config", "check"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("xml"), "{err}");

    let out = vigil()
        .args(["serve", "--log-format", "xml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("text") && err.contains("json"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn completions_name_the_commands_in_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let out = vigil().args(["completions", shell]).output().unwrap();
        assert!(
            out.status.success(),
            "{shell}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let script = String::from_utf8(out.stdout).expect("UTF-8");
        // fish writes a flag as `-l agent-listen`, the others as `--agent-listen`.
        for word in ["serve", "simulate", "watch", "agent-listen", "log-format"] {
            assert!(script.contains(word), "{shell}: no {word}");
        }
    }
    let out = vigil().args(["completions", "tcsh"]).output().unwrap();
    assert!(!out.status.success(), "an unknown shell is refused");
}

/// The page's first request after roff's two-line preamble (`.ie`/`.el`, which makes `'`
/// print as an apostrophe): a manual page's is its title, `.TH`.
fn title(page: &str) -> &str {
    page.lines()
        .find(|l| !l.starts_with(".ie ") && !l.starts_with(".el "))
        .unwrap_or_default()
}

#[test]
fn the_manual_page_is_roff_and_one_page_per_command_goes_to_a_directory() {
    let out = vigil().arg("man").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page = String::from_utf8(out.stdout).expect("UTF-8");
    assert!(title(&page).starts_with(".TH vigil 1"), "{page}");
    assert!(
        page.contains("serve") && page.contains("simulate"),
        "{page}"
    );

    let dir = std::env::temp_dir().join(format!("vigil-man-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = vigil()
        .args(["man", "--dir", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let serve = std::fs::read_to_string(dir.join("vigil-serve.1")).expect("vigil-serve.1");
    assert!(title(&serve).starts_with(".TH vigil-serve 1"), "{serve}");
    assert!(serve.contains("log\\-format"), "{serve}");
    assert!(dir.join("vigil.1").exists() && dir.join("vigil-agents-list.1").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every `--flag` written after `vigil serve` on a line of `text` (or on the lines that
/// continue it with `\`), up to the next command on that line.
fn serve_flags(text: &str) -> Vec<String> {
    let mut flags = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some(at) = line.find("vigil serve") else {
            continue;
        };
        let mut command = line[at + "vigil serve".len()..].to_string();
        let mut last = line;
        while last.trim_end().ends_with('\\') {
            match lines.next() {
                Some(next) => {
                    command.push(' ');
                    command.push_str(next);
                    last = next;
                }
                None => break,
            }
        }
        // Another command on the same line has flags of its own.
        for other in ["vigil ", "cargo "] {
            if let Some(end) = command.find(other) {
                command.truncate(end);
            }
        }
        let bytes = command.as_bytes();
        for (i, _) in command.match_indices("--") {
            let before = i.checked_sub(1).map(|j| bytes[j]);
            let starts_word = before.is_none_or(|b| !(b.is_ascii_alphanumeric() || b == b'-'));
            let name: String = command[i + 2..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            if starts_word && name.starts_with(|c: char| c.is_ascii_lowercase()) {
                flags.push(format!("--{name}"));
            }
        }
    }
    flags
}

#[test]
fn every_serve_flag_in_the_readme_and_the_docs_exists() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    let mut documented = std::collections::BTreeMap::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for flag in serve_flags(&text) {
            documented
                .entry(flag)
                .or_insert_with(|| file.display().to_string());
        }
    }
    // The README's table and its cluster example name these; the reader must find them.
    for flag in ["--agent-listen", "--http-listen", "--store", "--config"] {
        assert!(
            documented.contains_key(flag),
            "{flag} not found in {documented:?}"
        );
    }
    let out = vigil().args(["serve", "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).expect("UTF-8");
    for (flag, file) in &documented {
        let shown = help
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .any(|w| w == flag);
        assert!(
            shown,
            "{file} shows `vigil serve {flag}`, which `vigil serve --help` lacks:\n{help}"
        );
    }
}

#[test]
fn the_flag_scanner_finds_flags_after_vigil_serve_only() {
    let text = "cargo run --release   # `vigil serve`\n\
                VIGIL_X=1 vigil serve --store ws://h:1 \\\n    --agent-listen a:1 &\n\
                `vigil serve` (default) | `--http-listen ADDR`; then `vigil agents --limit 2`\n\
                vigil watch --since 3\n";
    assert_eq!(
        serve_flags(text),
        ["--store", "--agent-listen", "--http-listen"]
    );
}

#[test]
fn a_sigterm_right_after_the_ready_line_drains_and_exits_zero() {
    // The stop signals are listened for before the ready line is written: a service manager
    // that stops vigil as soon as it is up gets a drained exit, not a killed process. Several
    // at once, as a signal sent in a gap would not land in it every time.
    let runs: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(|| {
                let served = Served::start(&[], &[]);
                served.until("vigil is supervising");
                let (status, after, _) = served.stop();
                (status, after)
            })
        })
        .collect();
    for run in runs {
        let (status, after) = run.join().expect("the run finished");
        assert!(status.success(), "{status:?}; {after:#?}");
    }
}
