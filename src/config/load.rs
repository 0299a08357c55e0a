//! Loading: the file over the defaults, then the environment (`VIGIL_<SECTION>__<KEY>`), then
//! validation.

use std::path::Path;

use vigil_actors::Policy;

use super::{Config, ConfigError};

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
        let mut cfg: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))?;
        cfg.auth.read_token_files()?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks every policy and the values that must agree with each other.
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
        self.cluster.validate()?;
        if self.cluster.node_id.is_some()
            && self.server.tls_cert.is_some()
            && self.cluster.peer_ca.is_none()
        {
            return Err(ConfigError::Invalid(
                "[cluster] peer_ca is needed with [server] tls_cert: the certificates that sign \
                 the other nodes' listeners, for this node to send them admin writes"
                    .into(),
            ));
        }
        if self.broadcast.subscriber_queue == 0 {
            return Err(ConfigError::Invalid(
                "[broadcast] subscriber_queue must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// Applies `VIGIL_<SECTION>__<KEY>=value` variables; other names are ignored. Values are
/// read as TOML (numbers, booleans, arrays) and otherwise taken as strings.
pub(super) fn apply_env(table: &mut toml::Table, vars: impl Iterator<Item = (String, String)>) {
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
