use std::path::Path;
use std::time::Duration;

use super::load::apply_env;
use super::*;

#[test]
fn the_shipped_file_parses_and_equals_the_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/vigil.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let table: toml::Table = text.parse().unwrap();
    let file: Config = toml::Value::Table(table).try_into().unwrap();
    let def = Config::default();
    assert_eq!(format!("{file:?}"), format!("{def:?}"));
}

#[test]
fn env_overrides_the_file_and_unknown_keys_are_refused() {
    let mut t: toml::Table = "[policy]\nheartbeat_interval = \"5s\"\n".parse().unwrap();
    apply_env(
        &mut t,
        [
            (
                "VIGIL_POLICY__HEARTBEAT_INTERVAL".to_string(),
                "2s".to_string(),
            ),
            ("VIGIL_SERVER__MAX_BAD_FRAMES".to_string(), "7".to_string()),
            ("OTHER".to_string(), "x".to_string()),
        ]
        .into_iter(),
    );
    let c: Config = toml::Value::Table(t).try_into().unwrap();
    assert_eq!(c.policy.default.heartbeat_interval, Duration::from_secs(2));
    assert_eq!(c.server.max_bad_frames, 7);
    let bad: Result<Config, _> =
        toml::Value::Table("[policy]\nheartbeat = 1\n".parse().unwrap()).try_into();
    assert!(bad.is_err());
}

#[test]
fn an_empty_token_in_any_role_is_refused() {
    for role in ["agent_tokens", "monitor_tokens", "admin_tokens"] {
        // Every role has a token, as listening beyond loopback requires; one list also
        // holds "", which any client can give.
        let text = "[server]\nagent_listen = \"0.0.0.0:7400\"\n[auth]\n\
                 agent_tokens = [\"a\"]\nmonitor_tokens = [\"m\"]\nadmin_tokens = [\"x\"]\n"
            .replace(&format!("{role} = [\""), &format!("{role} = [\"\", \""));
        let c: Config = toml::Value::Table(text.parse().unwrap())
            .try_into()
            .unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains(role) && e.contains("empty token"), "{role}: {e}");
    }
    let mut c = Config::default();
    c.auth.agent_tokens = vec!["  ".into()];
    assert!(c.validate().is_err(), "a blank token is empty too");
}

#[test]
fn token_files_add_their_lines_to_the_roles_and_an_empty_one_is_refused() {
    let dir = std::env::temp_dir().join(format!("vigil-token-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let admins = dir.join("admin");
    std::fs::write(&admins, "# operators\n adm-1 \n\nadm-2\n").unwrap();
    let empty = dir.join("empty");
    std::fs::write(&empty, "# nobody yet\n\n").unwrap();
    let file = dir.join("vigil.toml");
    let write = |admin_file: &Path| {
        let text = format!(
            "[auth]\nadmin_tokens = [\"inline\"]\nadmin_tokens_file = {:?}\n\
             agent_tokens_file = {:?}\n",
            admin_file.display().to_string(),
            admins.display().to_string()
        );
        std::fs::write(&file, text).unwrap();
    };
    write(&admins);
    let c = Config::load(Some(&file)).unwrap();
    assert_eq!(c.auth.admin_tokens, ["inline", "adm-1", "adm-2"]);
    assert_eq!(c.auth.agent_tokens, ["adm-1", "adm-2"]);
    assert!(c.auth.monitor_tokens.is_empty());
    assert!(!format!("{:?}", c.redacted()).contains("adm-1"));

    write(&empty);
    let e = Config::load(Some(&file)).unwrap_err().to_string();
    assert!(e.contains("holds no token"), "{e}");
    write(&dir.join("missing"));
    let e = Config::load(Some(&file)).unwrap_err().to_string();
    assert!(e.contains("missing"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn policy_bounds_reach_the_configuration() {
    let mut c = Config::default();
    c.policy.default.heartbeat_interval = Duration::from_secs(400 * 24 * 3600);
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("heartbeat_interval"), "{e}");
    let mut c = Config::default();
    c.policy.max_heartbeat_interval = Duration::from_secs(400 * 24 * 3600);
    assert!(c.validate().is_err());
}

#[test]
fn invalid_policies_are_reported() {
    let mut c = Config::default();
    c.policy.default.offline_after = 0;
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("offline_after"), "{e}");
}

#[test]
fn the_health_section_is_read_validated_and_handed_to_the_runtime() {
    let t: toml::Table = "[health]\ncheck_interval = \"10s\"\nstale_connection = \"90s\"\n\
             extended_offline = \"2h\"\nmass_offline_share = 0.5\n\
             mass_offline_window = \"1m\"\nmass_offline_min = 3\n"
        .parse()
        .unwrap();
    let c: Config = toml::Value::Table(t).try_into().unwrap();
    c.validate().unwrap();
    assert_eq!(
        c.runtime().health,
        HealthConfig {
            check_interval: Duration::from_secs(10),
            stale_connection: Duration::from_secs(90),
            extended_offline: Duration::from_secs(7200),
            mass_offline_share: 0.5,
            mass_offline_window: Duration::from_secs(60),
            mass_offline_min: 3,
        }
    );
    assert_eq!(Config::default().runtime().health, HealthConfig::default());
    for (key, value) in [
        ("mass_offline_share", "1.5"),
        ("mass_offline_share", "-0.1"),
        ("check_interval", "\"0s\""),
        ("mass_offline_window", "\"0s\""),
    ] {
        let t: toml::Table = format!("[health]\n{key} = {value}\n").parse().unwrap();
        let c: Config = toml::Value::Table(t).try_into().unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("[health]") && e.contains(key), "{key}: {e}");
    }
}

#[test]
fn a_cluster_node_with_tls_needs_the_roots_of_its_peers() {
    let mut c = Config::default();
    c.cluster.node_id = Some("n1".into());
    c.server.tls_cert = Some("cert.pem".into());
    c.server.tls_key = Some("key.pem".into());
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("peer_ca"), "{e}");
    c.cluster.peer_ca = Some("ca.pem".into());
    assert!(c.validate().is_ok());
}

#[test]
fn the_log_format_is_text_unless_the_file_or_the_environment_says_json() {
    assert_eq!(Config::default().log.format, LogFormat::Text);
    let c: Config = toml::Value::Table("[log]\nformat = \"json\"\n".parse().unwrap())
        .try_into()
        .unwrap();
    assert_eq!(c.log.format, LogFormat::Json);
    let mut t = toml::Table::new();
    apply_env(
        &mut t,
        [("VIGIL_LOG__FORMAT".to_string(), "json".to_string())].into_iter(),
    );
    let c: Config = toml::Value::Table(t).try_into().unwrap();
    assert_eq!(c.log.format, LogFormat::Json);
    let bad: Result<Config, _> =
        toml::Value::Table("[log]\nformat = \"xml\"\n".parse().unwrap()).try_into();
    let e = bad.unwrap_err().to_string();
    assert!(e.contains("xml") && e.contains("json"), "{e}");
}
