//! The operator's commands beyond `vigil agents`: `vigil sinks` and `vigil policy`, against a
//! real `vigil serve`, with tokens read from files on both sides.

mod common;

use common::process::{stdout_of, vigil, Operated};

#[test]
fn vigil_sinks_and_vigil_policy_operate_with_tokens_from_files() {
    let dir = std::env::temp_dir().join(format!("vigil-cli-sinks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tokens = dir.join("admin-tokens");
    std::fs::write(&tokens, "# the operators\nop-file-secret\n").unwrap();
    let config = dir.join("vigil.toml");
    std::fs::write(
        &config,
        "[[sinks]]\nname = \"audit\"\ntype = \"log\"\nstart = \"beginning\"\n",
    )
    .unwrap();
    let srv = Operated::start(&[
        ("VIGIL_CONFIG", config.to_str().unwrap()),
        ("VIGIL_AUTH__ADMIN_TOKENS_FILE", tokens.to_str().unwrap()),
    ]);
    let out = srv.client::<&str>("sinks", &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("unauthorized"),
        "{err}"
    );

    // The client's token from a file too (its first line is the token).
    let token_file = dir.join("my-token");
    std::fs::write(&token_file, "op-file-secret\n").unwrap();
    let token_path = token_file.to_str().unwrap().to_string();
    let with = |args: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        a.extend(["--token-file".to_string(), token_path.clone()]);
        a
    };
    let list = stdout_of(&srv.client("sinks", &with(&[])));
    let row = list.lines().nth(1).unwrap_or_default();
    assert!(
        list.starts_with("NAME") && row.starts_with("audit"),
        "{list}"
    );
    assert!(row.contains("log"), "{list}");
    let dead = stdout_of(&srv.client("sinks", &with(&["dead-letters", "audit"])));
    assert_eq!(dead.trim(), "sink audit: no dead letters");
    let replay = stdout_of(&srv.client("sinks", &with(&["replay", "audit"])));
    assert_eq!(replay.trim(), "sink audit: 0 delivered, 0 still held");
    let out = srv.client("sinks", &with(&["dead-letters", "nope"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("nope"), "{err}");

    let set = stdout_of(&srv.client(
        "policy",
        &with(&[
            "set",
            "worker",
            "--heartbeat-interval",
            "5s",
            "--offline-after",
            "2",
            "--json",
        ]),
    ));
    let set: serde_json::Value = serde_json::from_str(&set).unwrap();
    assert_eq!(set["kind"], "worker", "{set}");
    assert_eq!(set["policy"]["heartbeat_interval"], 5000, "{set}");
    assert_eq!(set["policy"]["offline_after"], 2, "{set}");

    // VIGIL_TOKEN_FILE in the environment, as a service's unit would set it.
    let out = vigil()
        .args(["agents", "stats", "--addr", &srv.addr])
        .env_remove("VIGIL_TOKEN")
        .env("VIGIL_TOKEN_FILE", &token_file)
        .output()
        .unwrap();
    assert!(stdout_of(&out).contains("registry."));
    std::fs::remove_dir_all(&dir).unwrap();
}
