//! The configuration file (`config/vigil.toml`): every key has a default, so a file holds
//! only what differs. Precedence: defaults, then `--config FILE`, then environment variables
//! `VIGIL_<SECTION>__<KEY>`, then command-line flags.
mod cluster;
mod load;
mod log;
pub mod redact;
mod runtime;
mod sinks;
#[cfg(test)]
mod tests;

pub use cluster::Cluster;
pub use log::{LogFormat, LogSection};
pub use sinks::SinkSection;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use vigil_actors::{HealthConfig, LagConfig, OnDisconnect, Policy};

/// A configuration error, said so that the operator can fix the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file's path, as given.
        path: String,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// The file (or an environment variable) is not valid TOML, or does not fit the schema.
    #[error("{0}")]
    Parse(String),
    /// A value is out of its bounds, or values contradict each other.
    #[error("invalid value: {0}")]
    Invalid(String),
}

/// The whole configuration: one field per section of the file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[server]`: the listeners and the limits on connections.
    pub server: Server,
    /// `[store]`: where and how events and the agents' view are persisted.
    pub store: StoreConfig,
    /// `[policy]`: the default policy, its bounds, and per-kind overrides.
    pub policy: PolicyConfig,
    /// `[auth]`: each role's tokens.
    pub auth: Auth,
    /// `[broadcast]`: the subscribers' queues and the in-memory event window.
    pub broadcast: Broadcast,
    /// `[runtime]`: lag awareness (deadlines extended while the runtime itself runs late).
    pub runtime: RuntimeSection,
    /// `[health]`: the fleet health check and the mass-failure guard.
    pub health: HealthSection,
    /// Outbound channels (`[[sinks]]`).
    pub sinks: Vec<SinkSection>,
    /// `[cluster]`: this process as one node of a cluster.
    pub cluster: Cluster,
    /// `[log]`: the shape of vigil's own log lines.
    pub log: LogSection,
}

/// `[server]`: the listeners and the limits on connections.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Server {
    /// The TCP listener for agents, monitors and admins (default `127.0.0.1:7400`).
    pub agent_listen: SocketAddr,
    /// The HTTP listener: dashboard, WebSocket, SSE, REST (default `127.0.0.1:7401`).
    pub http_listen: SocketAddr,
    /// The longest frame, in bytes (default 65,536); longer ones get `frame_too_large`.
    pub max_frame_bytes: usize,
    /// Bad frames in a row before the connection is closed (default 20).
    pub max_bad_frames: u32,
    /// Agents one connection may register (default 10,000); the next gets `overloaded`.
    pub max_agents_per_connection: usize,
    /// Connections at once (default 10,000); the next gets `overloaded` and is closed.
    pub max_connections: usize,
    /// How long a new connection has to send `hello` (default 10 s).
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
    /// The TLS private key (PEM); `None` without TLS.
    pub tls_key: Option<std::path::PathBuf>,
    /// Host names (with or without `:port`) the HTTP listener answers, besides localhost,
    /// 127.0.0.1 and `[::1]`, for a role that needs no token (a defence against DNS rebinding).
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

/// `[store]`: where and how events and the agents' view are persisted.
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
    /// The least time between the starts of two writes of events (0: the next starts as soon
    /// as the last is done). A lone event is written at once; under load the events that
    /// arrive meanwhile go into the next write.
    #[serde(with = "humantime_serde")]
    pub min_commit_interval: Duration,
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
    /// On a SurrealDB server (`ws://`), one live process holds the store: how long its
    /// heartbeat may stay silent before another process takes the store over.
    #[serde(with = "humantime_serde")]
    pub hold_lease: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: "surrealkv://data/vigil".into(),
            block_cache_bytes: 64 << 20,
            memtable_bytes: 64 << 20,
            flush_interval: Duration::ZERO,
            min_commit_interval: Duration::from_millis(1),
            max_batch: 10_000,
            checkpoint_interval: Duration::from_secs(60),
            event_retention_age: Some(Duration::from_secs(7 * 24 * 3600)),
            event_retention_count: None,
            left_ttl: Duration::from_secs(7 * 24 * 3600),
            max_pending_bytes: 256 << 20,
            hold_lease: Duration::from_secs(10),
        }
    }
}

/// A policy as written in the file (durations as `"30s"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyFields {
    /// The interval agents are expected to heartbeat at (default 30 s).
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// Missed intervals before `online` becomes `degraded` (default 1).
    pub degraded_after: u32,
    /// Missed intervals before `online`/`degraded` becomes `offline` (default 3).
    pub offline_after: u32,
    /// Healthy beats in a row that bring `degraded`/`offline` back to `online` (default 2).
    pub recovery: u32,
    /// Extra slack before a beat counts as missed (default 0 s).
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
    /// What happens when an agent's connection closes without `deregister` (default `keep`).
    pub on_disconnect: OnDisconnect,
    /// How long restored agents get to reconnect after a restart; `None` (the default):
    /// `offline_after` × `heartbeat_interval`.
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
    /// The core's policy with these values.
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

/// `[policy]`: the default policy, the bounds of an agent's own interval, per-kind overrides.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// The policy of every kind without an override (the section's own keys).
    #[serde(flatten)]
    pub default: PolicyFields,
    /// The shortest heartbeat interval an agent may ask for (default 100 ms).
    #[serde(with = "humantime_serde")]
    pub min_heartbeat_interval: Duration,
    /// The longest heartbeat interval an agent may ask for (default 1 h).
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

/// `[auth]`: each role's tokens. An empty list: that role needs no token (loopback only).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Auth {
    /// Tokens for the agent role (in `hello`; on HTTP, for an agent's own routes).
    pub agent_tokens: Vec<String>,
    /// Tokens for the monitor role (in `hello`; on HTTP, for streams and reads).
    pub monitor_tokens: Vec<String>,
    /// Tokens for the admin role (in `hello`; on HTTP, for reads and writes).
    pub admin_tokens: Vec<String>,
    /// More agent tokens, one per line, from a file (blank lines and `#` comments skipped):
    /// secrets kept out of the configuration, e.g. mounted by systemd or Kubernetes.
    pub agent_tokens_file: Option<std::path::PathBuf>,
    /// More monitor tokens, from a file (as `agent_tokens_file`).
    pub monitor_tokens_file: Option<std::path::PathBuf>,
    /// More admin tokens, from a file (as `agent_tokens_file`).
    pub admin_tokens_file: Option<std::path::PathBuf>,
}

impl Auth {
    /// Adds the tokens of each role's `*_tokens_file` to its list.
    fn read_token_files(&mut self) -> Result<(), ConfigError> {
        for (file, tokens) in [
            (&self.agent_tokens_file, &mut self.agent_tokens),
            (&self.monitor_tokens_file, &mut self.monitor_tokens),
            (&self.admin_tokens_file, &mut self.admin_tokens),
        ] {
            let Some(path) = file else { continue };
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.display().to_string(),
                source,
            })?;
            let before = tokens.len();
            tokens.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(String::from),
            );
            if tokens.len() == before {
                return Err(ConfigError::Invalid(format!(
                    "[auth] {} holds no token: an empty file would leave the role open",
                    path.display()
                )));
            }
        }
        Ok(())
    }

    /// Each role's key and its tokens.
    fn roles(&self) -> [(&'static str, &Vec<String>); 3] {
        [
            ("agent_tokens", &self.agent_tokens),
            ("monitor_tokens", &self.monitor_tokens),
            ("admin_tokens", &self.admin_tokens),
        ]
    }
}

/// `[broadcast]`: the subscribers' queues and the in-memory event window.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Broadcast {
    /// Events a subscriber's queue holds (default 4,096); one whose queue fills gets `lagged`.
    pub subscriber_queue: usize,
    /// Recent events kept in memory for `since` resumes (default 65,536).
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

/// `[runtime]`: lag awareness, deadlines extended while the runtime itself runs late.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeSection {
    /// Extend deadlines while the runtime lags, and alert on it (default on).
    pub lag_awareness: bool,
    /// Scheduling lateness above this counts as lag (default 50 ms).
    #[serde(with = "humantime_serde")]
    pub lag_threshold: Duration,
    /// How often the runtime measures its own wake-up lateness (default 50 ms).
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
    /// The core's health-check settings with these values.
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
