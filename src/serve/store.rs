//! Opens the store `store.url` names: SurrealDB embedded on disk (`surrealkv://PATH`, the
//! default `data/vigil` under the working directory), SurrealDB in memory (`mem://`), or a
//! SurrealDB server (`ws://host:port`).

use std::sync::Arc;

use vigil_actors::store::{HoldOptions, SurrealOptions, SurrealStore};
use vigil_actors::{Store, StoreError};

use crate::config::{Cluster, StoreConfig};

/// Opens the store `cfg.url` names (creating the parent directory of a `surrealkv://` path),
/// with SurrealKV's cache sizes from `cfg`.
pub async fn open(cfg: &StoreConfig) -> Result<Arc<dyn Store>, StoreError> {
    Ok(open_held(cfg, None).await?)
}

/// Opens the shared store of a cluster as node `node_id`: its hold is the node's own
/// (`node-<id>`, renewed within `cluster.lease`), so a second process claiming a live node's
/// id is refused, naming the live one.
pub async fn open_node(
    cfg: &StoreConfig,
    cluster: &Cluster,
    node_id: &str,
) -> Result<Arc<SurrealStore>, StoreError> {
    if !(cfg.url.starts_with("ws://") || cfg.url.starts_with("wss://")) {
        return Err(StoreError::Unavailable(format!(
            "the nodes of a cluster share a SurrealDB server: store.url must be ws:// or \
             wss://, not {}",
            cfg.url
        )));
    }
    let hold = HoldOptions {
        lease: cluster.lease,
        holder: format!("node {node_id}: {}", this_process()),
        key: format!("node-{node_id}"),
    };
    open_held(cfg, Some(hold)).await
}

/// Opens the store; a server's with `hold` (by default, the whole store's).
async fn open_held(
    cfg: &StoreConfig,
    hold: Option<HoldOptions>,
) -> Result<Arc<SurrealStore>, StoreError> {
    if let Some(path) = cfg.url.strip_prefix("surrealkv://") {
        let path = path.split('?').next().unwrap_or(path);
        if let Some(parent) = std::path::Path::new(path).parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent).map_err(|e| {
                    StoreError::Unavailable(format!("cannot create {}: {e}", parent.display()))
                })?;
            }
        }
    }
    let remote = cfg.url.starts_with("ws://") || cfg.url.starts_with("wss://");
    let opts = SurrealOptions {
        block_cache_bytes: cfg.block_cache_bytes,
        memtable_bytes: cfg.memtable_bytes,
        // An embedded store is this process's alone; a server may be reached by others.
        hold: remote.then(|| {
            hold.unwrap_or_else(|| HoldOptions {
                lease: cfg.hold_lease,
                holder: this_process(),
                key: "store".into(),
            })
        }),
        ..SurrealOptions::default()
    };
    SurrealStore::open(&cfg.url, opts).await
}

/// This process as another one is told of it: host, pid, and when it started.
fn this_process() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "this host".into());
    format!(
        "vigil pid {} on {host}, since {}",
        std::process::id(),
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    )
}
