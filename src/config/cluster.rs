//! `[cluster]`: this process as one node of a cluster on a shared SurrealDB server
//! (`docs/cluster.md`).

use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;

/// `[cluster]`: set `node_id` to run as a node of a cluster; every node shares `store.url`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Cluster {
    /// This node's id, unique in the cluster (letters, digits, `-`, `_`, `.`; at most 64).
    /// Unset (the default): a single node, alone on its store.
    pub node_id: Option<String>,
    /// How long a node's lease may stay unrenewed before the others take it for dead
    /// (default 10 s).
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// Where the other nodes reach this one's agent listener (`host:port`), to send it admin
    /// writes about its agents; default: the listener's own address.
    pub advertise: Option<String>,
    /// When the agent listeners take TLS (`[server] tls_cert`): the certificates (PEM) that
    /// sign the other nodes' listeners, trusted when this node forwards them admin writes.
    pub peer_ca: Option<std::path::PathBuf>,
    /// The name the other nodes' certificates carry; default: the host of their advertised
    /// address.
    pub peer_name: Option<String>,
}

impl Default for Cluster {
    fn default() -> Self {
        Self {
            node_id: None,
            lease: Duration::from_secs(10),
            advertise: None,
            peer_ca: None,
            peer_name: None,
        }
    }
}

impl Cluster {
    /// Checks the node id and the lease (that the store is a server is checked when it is
    /// opened: `--store` may still change it).
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let Some(id) = &self.node_id else {
            return Ok(());
        };
        let fine = !id.is_empty()
            && id.len() <= 64
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !fine {
            return Err(ConfigError::Invalid(format!(
                "[cluster] node_id {id:?}: use 1 to 64 letters, digits, '-', '_' or '.'"
            )));
        }
        if self.lease < Duration::from_millis(300) {
            return Err(ConfigError::Invalid(
                "[cluster] lease must be at least 300ms".into(),
            ));
        }
        Ok(())
    }
}
