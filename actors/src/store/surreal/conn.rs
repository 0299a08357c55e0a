//! The connection to SurrealDB (embedded or a server), how its errors are classified, and
//! the sync mode an embedded store is opened with.

use std::sync::Arc;

use serde_json::Value;
use surrealdb::engine::any::Any;
use surrealdb::engine::local::Db;
use surrealdb::types::QueryError;
use surrealdb::{IndexedResults, Surreal};
use surrealdb_core::kvs::Datastore;
use tracing::warn;

use super::StoreError;

pub(super) enum Conn {
    /// Embedded (SurrealKV or memory), opened through the core builder so its caches can be
    /// sized; `ds` closes it explicitly.
    Local {
        db: Surreal<Db>,
        ds: Arc<Datastore>,
    },
    Remote(Surreal<Any>),
}

impl Conn {
    pub(super) async fn query(
        &self,
        sql: &str,
        binds: Value,
    ) -> Result<IndexedResults, StoreError> {
        let r = match self {
            Conn::Local { db, .. } => db.query(sql).bind(binds).await,
            Conn::Remote(db) => db.query(sql).bind(binds).await,
        };
        // The request itself failed (a lost connection, a failed commit): it may have landed.
        let mut r = r.map_err(|e| StoreError::Unknown(e.to_string()))?;
        let errors = r.take_errors();
        if let Some((_, e)) = errors.into_iter().min_by_key(|(i, e)| {
            // In a failed transaction every statement reports "not executed"; the cause is
            // the one that says something else.
            (not_executed(e), *i)
        }) {
            return Err(classify(&e));
        }
        Ok(r)
    }

    pub(super) async fn close(self) {
        if let Conn::Local { db, ds } = self {
            if let Err(e) = ds.shutdown().await {
                warn!(error = %e, "closing the datastore failed");
            }
            drop(db);
        }
    }
}

pub(super) fn not_executed(e: &surrealdb::Error) -> bool {
    matches!(e.query_details(), Some(QueryError::NotExecuted))
}

/// A statement's error as the store's: refusals that leave nothing written (the statement
/// or the transaction was rejected before its commit) are [`StoreError::Write`]; anything
/// else, a failed commit or sync among them, is [`StoreError::Unknown`].
pub(super) fn classify(e: &surrealdb::Error) -> StoreError {
    let refused = e.is_already_exists()
        || e.is_validation()
        || e.is_not_allowed()
        || e.is_not_found()
        || e.is_thrown()
        || e.is_serialization()
        || matches!(
            e.query_details(),
            Some(QueryError::NotExecuted | QueryError::TransactionConflict | QueryError::Cancelled)
        );
    match refused {
        true => StoreError::Write(e.to_string()),
        false => StoreError::Unknown(e.to_string()),
    }
}

/// The embedded URL with its sync mode made explicit: `sync=every` (every commit is flushed
/// to disk before it returns) unless the URL asks for another, which is then returned too.
pub(super) fn with_sync(url: &str) -> (String, Option<String>) {
    if !url.starts_with("surrealkv://") {
        return (url.to_string(), None);
    }
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or("");
    let mode = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("sync="))
        .map(str::to_string);
    match mode {
        None => {
            let sep = if url.contains('?') { '&' } else { '?' };
            (format!("{url}{sep}sync=every"), None)
        }
        Some(m) if m == "every" => (url.to_string(), None),
        Some(m) => (url.to_string(), Some(m)),
    }
}
