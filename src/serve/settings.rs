//! Each listener's settings from the configuration.

use crate::config::Config;
use crate::serve::http::HttpConfig;
use crate::serve::tcp::ServerConfig;

impl Config {
    /// Settings of the HTTP listener.
    pub fn http_config(&self) -> HttpConfig {
        HttpConfig {
            agent_tokens: self.auth.agent_tokens.clone(),
            monitor_tokens: self.auth.monitor_tokens.clone(),
            admin_tokens: self.auth.admin_tokens.clone(),
            ws_queue: 256,
            tls: None,
            allowed_hosts: self.server.allowed_hosts.clone(),
            max_connections_per_ip: self.server.max_connections_per_ip,
        }
    }

    /// The agent listener's settings.
    pub fn server_config(&self) -> ServerConfig {
        ServerConfig {
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
}
