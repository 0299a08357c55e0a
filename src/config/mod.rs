//! The configuration file (`config/vigil.toml`): every key has a default, so a file holds
//! only what differs. Precedence: defaults, then `--config FILE`, then environment variables
//! `VIGIL_<SECTION>__<KEY>`, then command-line flags.

pub mod redact;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use vigil_actors::{HealthConfig, LagConfig, OnDisconnect, Policy, Retention, RuntimeConfig};

/// A configuration error, said so that the operator can fix the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Parse(String),
    #[error("invalid value: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: Server,
    pub store: StoreConfig,
    pub policy: PolicyConfig,
    pub auth: Auth,
    pub broadcast: Broadcast,
    pub runtime: RuntimeSection,
    pub health: HealthSection,
    /// Outbound channels (`[[sinks]]`).
    pub sinks: Vec<crate::outbound::SinkSection>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Server {
    pub agent_listen: SocketAddr,
    pub http_listen: SocketAddr,
    pub max_frame_bytes: usize,
    pub max_bad_frames: u32,
    pub max_agents_per_connection: usize,
    pub max_connections: usize,
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// Frames per second one connection may send (a token bucket; 0: no limit).
    pub rate_limit: u32,
    /// Frames a connection may send at once above the rate (the bucket's size).
    pub rate_burst: u32,
    /// At shutdown, how long connections get to receive their last replies.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// TLS on the agent listener: both PEM files, or neither.
    pub tls_cert: Option<std::path::PathBuf>,
    pub tls_key: Option<std::path::PathBuf>,
    /// Host names (with or without `:port`) the HTTP listener answers, besides localhost,
    /// 127.0.0.1 and [::1], for a role that needs no token (a defence against DNS rebinding).
    pub allowed_hosts: Vec<String>,
    /// A TCP connection that sends no frame for this long is closed (TCP keepalive finds a
    /// peer that vanished; this finds one that stays and says nothing).
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Connections one IP address may hold at once, on each listener.
    pub max_connections_per_ip: usize,
}

impl Default for Server {
    fn default() -> Self {
        Self {
            agent_listen: ([127, 0, 0, 1], 7400).into(),
            http_listen: ([127, 0, 0, 1], 7401).into(),
            max_frame_bytes: 65536,
            max_bad_frames: 20,
            max_agents_per_connection: 10_000,
            max_connections: 10_000,
            handshake_timeout: Duration::from_secs(10),
            rate_limit: 5_000,
            rate_burst: 10_000,
            drain_timeout: Duration::from_secs(2),
            tls_cert: None,
            tls_key: None,
            allowed_hosts: Vec::new(),
            idle_timeout: Duration::from_secs(300),
            max_connections_per_ip: 1024,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// `surrealkv://PATH` (embedded, on disk), `mem://`, or `ws://host:port`.
    pub url: String,
    /// SurrealKV's block cache, in bytes (its default would take about half the RAM).
    pub block_cache_bytes: u64,
    /// SurrealKV's memtable, in bytes (its default is 1 GiB).
    pub memtable_bytes: u64,
    /// How long a group of events may gather before it is written (0: as soon as the
    /// previous write is done; groups form while a write runs).
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Most events in one segment (one write).
    pub max_batch: usize,
    /// The live view of agents is written this often (and at shutdown).
    #[serde(with = "humantime_serde")]
    pub checkpoint_interval: Duration,
    /// Drop whole segments older than this (`"0s"`: keep by age for ever).
    #[serde(with = "humantime_serde")]
    pub event_retention_age: Option<Duration>,
    /// Keep at least this many newest events; older whole segments are dropped.
    pub event_retention_count: Option<u64>,
    /// Agents that left are dropped from the view this long after (`"0s"`: kept for ever).
    #[serde(with = "humantime_serde")]
    pub left_ttl: Duration,
    /// Bytes of events that may wait for a slow or failing store before new registrations
    /// are refused with `overloaded`.
    pub max_pending_bytes: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: "surrealkv://data/vigil".into(),
            block_cache_bytes: 64 << 20,
            memtable_bytes: 64 << 20,
            flush_interval: Duration::ZERO,
            max_batch: 10_000,
            checkpoint_interval: Duration::from_secs(60),
            event_retention_age: Some(Duration::from_secs(7 * 24 * 3600)),
            event_retention_count: None,
            left_ttl: Duration::from_secs(7 * 24 * 3600),
            max_pending_bytes: 256 << 20,
        }
    }
}

/// A policy as written in the file (durations as `"30s"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyFields {
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    pub degraded_after: u32,
    pub offline_after: u32,
    pub recovery: u32,
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
    pub on_disconnect: OnDisconnect,
    #[serde(with = "humantime_serde")]
    pub restart_grace: Option<Duration>,
}

impl Default for PolicyFields {
    fn default() -> Self {
        let p = Policy::default();
        Self {
            heartbeat_interval: p.heartbeat_interval,
            degraded_after: p.degraded_after,
            offline_after: p.offline_after,
            recovery: p.recovery,
            grace: p.grace,
            on_disconnect: p.on_disconnect,
            restart_grace: p.restart_grace,
        }
    }
}

impl PolicyFields {
    pub fn to_policy(&self) -> Policy {
        Policy {
            heartbeat_interval: self.heartbeat_interval,
            degraded_after: self.degraded_after,
            offline_after: self.offline_after,
            recovery: self.recovery,
            grace: self.grace,
            on_disconnect: self.on_disconnect,
            restart_grace: self.restart_grace,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    #[serde(flatten)]
    pub default: PolicyFields,
    #[serde(with = "humantime_serde")]
    pub min_heartbeat_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub max_heartbeat_interval: Duration,
    /// Per-kind overrides: a full policy each (missing keys take the built-in defaults).
    pub kinds: HashMap<String, PolicyFields>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            default: PolicyFields::default(),
            min_heartbeat_interval: Duration::from_millis(100),
            max_heartbeat_interval: Duration::from_secs(3600),
            kinds: HashMap::new(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Auth {
    pub agent_tokens: Vec<String>,
    pub monitor_tokens: Vec<String>,
    pub admin_tokens: Vec<String>,
}

impl Auth {
    /// Each role's key and its tokens.
    fn roles(&self) -> [(&'static str, &Vec<String>); 3] {
        [
            ("agent_tokens", &self.agent_tokens),
            ("monitor_tokens", &self.monitor_tokens),
            ("admin_tokens", &self.admin_tokens),
        ]
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Broadcast {
    pub subscriber_queue: usize,
    pub event_window: usize,
    /// `stats` frames are sent when a count changed, at most this often.
    #[serde(with = "humantime_serde")]
    pub stats_interval: Duration,
}

impl Default for Broadcast {
    fn default() -> Self {
        Self {
            subscriber_queue: 4096,
            event_window: 65_536,
            stats_interval: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeSection {
    pub lag_awareness: bool,
    #[serde(with = "humantime_serde")]
    pub lag_threshold: Duration,
    #[serde(with = "humantime_serde")]
    pub lag_probe_interval: Duration,
    /// The most deadlines are extended by, however late the runtime is.
    #[serde(with = "humantime_serde")]
    pub lag_max_slack: Duration,
}

impl Default for RuntimeSection {
    fn default() -> Self {
        let lag = LagConfig::default();
        Self {
            lag_awareness: lag.enabled,
            lag_threshold: lag.threshold,
            lag_probe_interval: lag.probe_interval,
            lag_max_slack: lag.max_slack,
        }
    }
}

/// The fleet health check and the mass-failure guard.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthSection {
    /// How often the fleet is checked.
    #[serde(with = "humantime_serde")]
    pub check_interval: Duration,
    /// A connected agent with no heartbeat for this long is a `stale_connection`.
    #[serde(with = "humantime_serde")]
    pub stale_connection: Duration,
    /// An agent offline longer than this is an `extended_offline`.
    #[serde(with = "humantime_serde")]
    pub extended_offline: Duration,
    /// `mass_offline` when more than this share of the fleet (0..=1) ...
    pub mass_offline_share: f64,
    /// ... goes offline within this window ...
    #[serde(with = "humantime_serde")]
    pub mass_offline_window: Duration,
    /// ... and at least this many agents.
    pub mass_offline_min: usize,
}

impl Default for HealthSection {
    fn default() -> Self {
        let h = HealthConfig::default();
        Self {
            check_interval: h.check_interval,
            stale_connection: h.stale_connection,
            extended_offline: h.extended_offline,
            mass_offline_share: h.mass_offline_share,
            mass_offline_window: h.mass_offline_window,
            mass_offline_min: h.mass_offline_min,
        }
    }
}

impl HealthSection {
    pub fn to_health(&self) -> HealthConfig {
        HealthConfig {
            check_interval: self.check_interval,
            stale_connection: self.stale_connection,
            extended_offline: self.extended_offline,
            mass_offline_share: self.mass_offline_share,
            mass_offline_window: self.mass_offline_window,
            mass_offline_min: self.mass_offline_min,
        }
    }
}

impl Config {
    /// Reads a file (if given) over the defaults, then the environment.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut table = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.display().to_string(),
                    source,
                })?;
                text.parse::<toml::Table>()
                    .map_err(|e| ConfigError::Parse(format!("{}: {e}", p.display())))?
            }
            None => toml::Table::new(),
        };
        apply_env(&mut table, std::env::vars());
        let cfg: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.policy
            .default
            .to_policy()
            .validate()
            .map_err(|e| ConfigError::Invalid(format!("[policy] {e}")))?;
        for (k, p) in &self.policy.kinds {
            p.to_policy()
                .validate()
                .map_err(|e| ConfigError::Invalid(format!("[policy.kinds.{k}] {e}")))?;
        }
        if self.policy.min_heartbeat_interval > self.policy.max_heartbeat_interval {
            return Err(ConfigError::Invalid(
                "[policy] min_heartbeat_interval is above max_heartbeat_interval".into(),
            ));
        }
        if self.policy.max_heartbeat_interval > Policy::MAX_DURATION {
            return Err(ConfigError::Invalid(format!(
                "[policy] max_heartbeat_interval must be at most {}",
                humantime::format_duration(Policy::MAX_DURATION)
            )));
        }
        for (role, tokens) in self.auth.roles() {
            if tokens.iter().any(|t| t.trim().is_empty()) {
                return Err(ConfigError::Invalid(format!(
                    "[auth] {role} holds an empty token, which anyone could give: remove it \
                     (an empty list is how a role is left open, on loopback only)"
                )));
            }
        }
        if self.server.idle_timeout.is_zero() || self.server.max_connections_per_ip == 0 {
            return Err(ConfigError::Invalid(
                "[server] idle_timeout must be above zero and max_connections_per_ip at least 1"
                    .into(),
            ));
        }
        if self.server.tls_cert.is_some() != self.server.tls_key.is_some() {
            return Err(ConfigError::Invalid(
                "[server] tls_cert and tls_key go together: give both or neither".into(),
            ));
        }
        // Listening beyond this machine with any role open to everyone is refused.
        for (what, addr) in [
            ("agent_listen", self.server.agent_listen),
            ("http_listen", self.server.http_listen),
        ] {
            if addr.ip().is_loopback() {
                continue;
            }
            let open: Vec<&str> = self
                .auth
                .roles()
                .iter()
                .filter(|(_, t)| t.is_empty())
                .map(|(n, _)| *n)
                .collect();
            if !open.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "[server] {what} = {addr} is not a loopback address, and [auth] {} {} empty: \
                     anyone who can reach it could act as that role. Set tokens for every role, \
                     or listen on 127.0.0.1",
                    open.join(", "),
                    if open.len() == 1 { "is" } else { "are" }
                )));
            }
        }
        if self.server.max_frame_bytes < 64 || self.server.max_bad_frames == 0 {
            return Err(ConfigError::Invalid(
                "[server] max_frame_bytes must be at least 64 and max_bad_frames at least 1".into(),
            ));
        }
        self.health
            .to_health()
            .validate()
            .map_err(|e| ConfigError::Invalid(format!("[health] {e}")))?;
        let mut names = std::collections::HashSet::new();
        for s in &self.sinks {
            s.validate()
                .map_err(|e| ConfigError::Invalid(format!("[[sinks]] {e}")))?;
            if !names.insert(&s.name) {
                return Err(ConfigError::Invalid(format!(
                    "[[sinks]] two sinks are named {}",
                    s.name
                )));
            }
        }
        if self.broadcast.subscriber_queue == 0 {
            return Err(ConfigError::Invalid(
                "[broadcast] subscriber_queue must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// The agent listener's settings.
    /// Settings of the HTTP listener.
    pub fn http_config(&self) -> crate::serve::http::HttpConfig {
        crate::serve::http::HttpConfig {
            monitor_tokens: self.auth.monitor_tokens.clone(),
            admin_tokens: self.auth.admin_tokens.clone(),
            ws_queue: 256,
            tls: None,
            allowed_hosts: self.server.allowed_hosts.clone(),
            max_connections_per_ip: self.server.max_connections_per_ip,
        }
    }

    pub fn server_config(&self) -> crate::serve::tcp::ServerConfig {
        crate::serve::tcp::ServerConfig {
            max_frame_bytes: self.server.max_frame_bytes,
            max_bad_frames: self.server.max_bad_frames,
            max_agents_per_connection: self.server.max_agents_per_connection,
            max_connections: self.server.max_connections,
            handshake_timeout: self.server.handshake_timeout,
            rate_limit: self.server.rate_limit,
            rate_burst: self.server.rate_burst,
            drain_timeout: self.server.drain_timeout,
            tls: None,
            agent_tokens: self.auth.agent_tokens.clone(),
            monitor_tokens: self.auth.monitor_tokens.clone(),
            admin_tokens: self.auth.admin_tokens.clone(),
            heartbeat_interval: self.policy.default.heartbeat_interval,
            idle_timeout: self.server.idle_timeout,
            max_connections_per_ip: self.server.max_connections_per_ip,
        }
    }

    /// The supervision core's settings.
    pub fn runtime(&self) -> RuntimeConfig {
        RuntimeConfig {
            policy: self.policy.default.to_policy(),
            kinds: self
                .policy
                .kinds
                .iter()
                .map(|(k, p)| (k.clone(), p.to_policy()))
                .collect(),
            min_heartbeat_interval: self.policy.min_heartbeat_interval,
            max_heartbeat_interval: self.policy.max_heartbeat_interval,
            subscriber_queue: self.broadcast.subscriber_queue,
            event_window: self.broadcast.event_window,
            max_batch: self.store.max_batch,
            checkpoint_interval: self.store.checkpoint_interval,
            flush_interval: self.store.flush_interval,
            event_retention: Retention {
                max_age: self.store.event_retention_age.filter(|d| !d.is_zero()),
                max_events: self.store.event_retention_count,
            },
            left_ttl: Some(self.store.left_ttl).filter(|d| !d.is_zero()),
            max_pending_bytes: self.store.max_pending_bytes,
            lag: LagConfig {
                enabled: self.runtime.lag_awareness,
                threshold: self.runtime.lag_threshold,
                probe_interval: self.runtime.lag_probe_interval,
                max_slack: self.runtime.lag_max_slack,
                ..LagConfig::default()
            },
            health: self.health.to_health(),
            ..RuntimeConfig::default()
        }
    }
}

/// Applies `VIGIL_<SECTION>__<KEY>=value` variables; other names are ignored. Values are
/// read as TOML (numbers, booleans, arrays) and otherwise taken as strings.
fn apply_env(table: &mut toml::Table, vars: impl Iterator<Item = (String, String)>) {
    for (name, value) in vars {
        let Some(rest) = name.strip_prefix("VIGIL_") else {
            continue;
        };
        let Some((section, key)) = rest.split_once("__") else {
            continue;
        };
        let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
        let parsed = format!("v = {value}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or(toml::Value::String(value));
        let entry = table
            .entry(section)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let toml::Value::Table(t) = entry {
            t.insert(key, parsed);
        }
    }
}

#[cfg(test)]
mod tests {
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
}
