//! Opens the store `store.url` names: SurrealDB embedded on disk (`surrealkv://PATH`, the
//! default `data/vigil` under the working directory), SurrealDB in memory (`mem://`), or a
//! SurrealDB server (`ws://host:port`).

use std::sync::Arc;

use vigil_actors::store::{SurrealOptions, SurrealStore};
use vigil_actors::{Store, StoreError};

use crate::config::StoreConfig;

/// Opens the store `cfg.url` names (creating the parent directory of a `surrealkv://` path),
/// with SurrealKV's cache sizes from `cfg`.
pub async fn open(cfg: &StoreConfig) -> Result<Arc<dyn Store>, StoreError> {
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
    let opts = SurrealOptions {
        block_cache_bytes: cfg.block_cache_bytes,
        memtable_bytes: cfg.memtable_bytes,
        ..SurrealOptions::default()
    };
    Ok(SurrealStore::open(&cfg.url, opts).await?)
}
