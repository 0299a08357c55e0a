//! The nodes of a cluster as the store shows them (their holds, `node-<id>`), and the
//! adoption of a dead node's agents.
//!
//! Each node's lease is its hold's heartbeat (`hold_beat:node-<id>`). Another node judges it
//! by when it last saw the beat change on its own monotonic clock, never by the clocks of the
//! machines. A node whose beat stays still for a lease (or that released its hold, stopping
//! cleanly) is dead to the others; its agents are adopted by exactly one of them: the adopter
//! appends its `node_adopted` alert in a transaction that also takes the dead node's hold
//! (epoch + 1, only if the epoch is still the one it saw: the first adopter wins, and the dead
//! node, should it wake, is fenced) and gives it the dead node's agents (`owner` records).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::conn::Conn;
use super::hold::{look, HoldOptions};
use super::io::read_err;
use super::shared::{Appended, BatchId};
use super::{StoreError, SurrealStore};
use crate::model::Event;

/// The hold key of cluster node `node`.
pub(super) fn node_key(node: &str) -> String {
    format!("node-{node}")
}

/// A node's lease as the store shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLease {
    /// The node's id.
    pub node: String,
    /// Its hold's epoch (one more at each start, and at its adoption).
    pub epoch: u64,
    /// Its heartbeat's count (it moves while the node is alive).
    pub beat: u64,
    /// It stopped cleanly.
    pub released: bool,
    /// Who holds it (a process, or the node that adopted it).
    pub holder: String,
    /// Where the node takes connections (its agents' listener), as it advertised it.
    pub address: Option<String>,
}

/// Taking over a dead node's agents, with the lease it was seen with.
#[derive(Debug, Clone)]
pub struct Adoption {
    /// The dead node.
    pub node: String,
    /// The epoch its lease had while it was watched.
    pub epoch: u64,
    /// The beat its lease had while it was watched.
    pub beat: u64,
    /// The adopter, as the dead node's hold names it from then on.
    pub by: String,
}

impl Adoption {
    pub(super) fn key(&self) -> String {
        node_key(&self.node)
    }

    /// Whether the dead node's lease is still as it was seen (nobody adopted it, it did not
    /// come back).
    pub(super) async fn still_due(&self, store: &SurrealStore) -> Result<bool, StoreError> {
        let now = store.node_leases().await?;
        Ok(now
            .iter()
            .any(|l| l.node == self.node && l.epoch == self.epoch && l.beat == self.beat))
    }
}

/// A store is one process's or one cluster's: a process without `[cluster]` (hold `store`) is
/// refused beside live cluster nodes, and a node beside a live process alone on the store.
/// The other kind's holds that are not released are watched for one lease, on this process's
/// clock; one whose heartbeat moves is alive.
pub(super) async fn check_kind(conn: &Conn, opts: &HoldOptions) -> Result<(), StoreError> {
    let keys: Vec<String> = if opts.key == "store" {
        let mut r = conn
            .query(
                "SELECT VALUE meta::id(id) FROM hold WHERE string::starts_with(meta::id(id), 'node-')",
                json!({}),
            )
            .await?;
        r.take(0).map_err(read_err)?
    } else {
        vec!["store".to_string()]
    };
    let mut watched = Vec::new();
    for k in keys {
        if let Some(seen) = look(conn, &k).await?.filter(|s| !s.released) {
            watched.push((k, seen));
        }
    }
    if watched.is_empty() {
        return Ok(());
    }
    let start = tokio::time::Instant::now();
    let step = (opts.lease / 10).clamp(Duration::from_millis(20), Duration::from_millis(500));
    while start.elapsed() < opts.lease {
        tokio::time::sleep(step).await;
        for (k, first) in &watched {
            let Some(now) = look(conn, k).await? else {
                continue;
            };
            if now.released || now == *first {
                continue;
            }
            let msg = match opts.key.as_str() {
                "store" => format!(
                    "the store is used by a live cluster (node {}: {}); run this process as a \
                     node of it ([cluster] node_id) or give it a store of its own",
                    k.trim_start_matches("node-"),
                    now.holder
                ),
                _ => format!(
                    "the store is held by a live vigil process that is not a cluster node ({}); \
                     a store is one process's or one cluster's",
                    now.holder
                ),
            };
            return Err(StoreError::Held(msg));
        }
    }
    Ok(())
}

impl SurrealStore {
    /// Every cluster node's lease.
    pub async fn node_leases(&self) -> Result<Vec<NodeLease>, StoreError> {
        let mut r = self
            .read(
                "SELECT meta::id(id) AS key, epoch, holder, released, address FROM hold
                     WHERE string::starts_with(meta::id(id), 'node-');
                 SELECT meta::id(id) AS key, epoch, beat FROM hold_beat
                     WHERE string::starts_with(meta::id(id), 'node-');",
                json!({}),
            )
            .await?;
        let holds: Vec<Value> = r.take(0).map_err(read_err)?;
        let beats: Vec<Value> = r.take(1).map_err(read_err)?;
        Ok(holds
            .iter()
            .filter_map(|h| {
                let key = h["key"].as_str()?;
                let beat = beats.iter().find(|b| b["key"].as_str() == Some(key));
                Some(NodeLease {
                    node: key.strip_prefix("node-")?.to_string(),
                    epoch: h["epoch"].as_u64().unwrap_or(0),
                    beat: beat.and_then(|b| b["beat"].as_u64()).unwrap_or(0),
                    released: h["released"].as_bool() == Some(true),
                    holder: h["holder"].as_str().unwrap_or("?").to_string(),
                    address: h["address"].as_str().map(str::to_string),
                })
            })
            .collect())
    }

    /// Records where this node (the holder of this store's hold) takes connections, for the
    /// other nodes to forward admin writes to it.
    pub async fn advertise(&self, address: &str) -> Result<(), StoreError> {
        let Some(key) = self.hold.get().map(|h| h.key().to_string()) else {
            return Ok(());
        };
        self.write(
            "UPDATE type::record('hold', $k) SET address = $a RETURN NONE",
            json!({ "k": key, "a": address }),
        )
        .await?;
        Ok(())
    }

    /// Node `me` adopts the agents of the dead node `adoption` names, appending `event` (its
    /// `node_adopted` alert) as batch `batch`: one transaction, serialized with every other
    /// append. Refused with [`StoreError::Held`] when the dead node's lease changed since it
    /// was seen (another node adopted it first, or it came back).
    pub async fn adopt(
        &self,
        batch: &BatchId,
        event: Arc<Event>,
        me: &str,
        adoption: &Adoption,
    ) -> Result<Appended, StoreError> {
        self.append_as(batch, &[event], false, Some(me), Some(adoption))
            .await
    }
}
