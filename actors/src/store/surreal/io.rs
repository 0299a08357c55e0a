//! Opening the store, reopening it after a failed write, and the reads and writes every
//! operation goes through.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::{json, Value};
use surrealdb::engine::local::Db;
use surrealdb::{IndexedResults, Surreal};
use surrealdb_core::kvs::Datastore;
use tokio::sync::RwLock;
use tracing::{debug, info, warn};

use super::StoreError;
use super::{hold, with_sync, Conn, Index, SegMeta, SurrealOptions, SurrealStore, SCHEMA_VERSION};
use crate::model::Event;

/// Segments deleted per write when retention drops them.
const RETAIN_PAGE: usize = 1_000;

/// The write of one segment: a new one (`retry` false) or a verbatim retry of the newest.
///
/// A server's store may later be a cluster's, whose shared log keeps its head in `meta:log`;
/// an embedded one finds its last seq from its segments and checkpoint at open, and writes
/// the one record (half the CPU of a commit of two).
pub(super) fn segment_sql(retry: bool, remote: bool) -> &'static str {
    match (retry, remote) {
        (false, false) => "CREATE type::record('segment', $k) CONTENT $segment RETURN NONE;",
        (true, false) => "UPSERT type::record('segment', $k) CONTENT $segment RETURN NONE;",
        (false, true) => {
            "BEGIN TRANSACTION;
             CREATE type::record('segment', $k) CONTENT $segment RETURN NONE;
             UPSERT meta:log SET last_seq = $k RETURN NONE;
             COMMIT TRANSACTION;"
        }
        (true, true) => {
            "BEGIN TRANSACTION;
             UPSERT type::record('segment', $k) CONTENT $segment RETURN NONE;
             UPSERT meta:log SET last_seq = $k RETURN NONE;
             COMMIT TRANSACTION;"
        }
    }
}

pub(super) fn read_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Read(e.to_string())
}

/// Runs `op` again, after a short random pause, while the store refuses it (a conflict with
/// another process doing the same), a few times at most.
pub(super) async fn refused_retried<T, F, Fut>(mut op: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut attempt = 0;
    loop {
        match op().await {
            Err(StoreError::Write(e)) if attempt < 20 => {
                attempt += 1;
                debug!(attempt, error = %e, "refused (a conflict); trying again");
                let pause = 5 + rand::random::<u64>() % (10 * attempt);
                tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
            }
            r => return r,
        }
    }
}

impl SurrealStore {
    /// Opens (creating if needed) the store at `url` and defines the schema.
    ///
    /// An embedded SurrealKV store is opened with `sync=every` (each commit flushed to disk
    /// before it is reported) unless its URL names another mode; a weaker one is accepted with
    /// a warning, and [`Store::durability_warning`](crate::Store::durability_warning) says so.
    pub async fn open(url: &str, opts: SurrealOptions) -> Result<Arc<Self>, StoreError> {
        let started = std::time::Instant::now();
        let (url, weak_sync) = with_sync(url);
        if let Some(mode) = &weak_sync {
            warn!(
                url = %url,
                sync = %mode,
                "the store's sync mode is not 'every': an acknowledged event can be lost if \
                 the machine loses power or crashes (a process crash alone loses nothing)"
            );
        }
        let url = url.as_str();
        let store = Arc::new(Self {
            url: url.to_string(),
            opts,
            conn: RwLock::new(None),
            index: Mutex::new(Index::default()),
            suspect: AtomicBool::new(false),
            weak_sync,
            hold: std::sync::OnceLock::new(),
            head_seen: AtomicU64::new(0),
        });
        let conn = store.connect().await?;
        let connect_ms = started.elapsed().as_millis() as u64;
        // Processes opening one server's store at once conflict on the schema's records.
        refused_retried(|| store.init(&conn)).await?;
        if let Some(opts) = &store.opts.hold {
            let hold = hold::acquire(&conn, opts).await?;
            info!(url, epoch = hold.epoch(), "this process holds the store");
            let _ = store.hold.set(hold);
            *store.conn.write().await = Some(conn);
            tokio::spawn(hold::renew(Arc::downgrade(&store), opts.lease));
            let checked = {
                let guard = store.conn.read().await;
                match guard.as_ref() {
                    Some(conn) => super::nodes::check_kind(conn, opts).await,
                    None => Ok(()),
                }
            };
            if let Err(e) = checked {
                crate::store::Store::close(&*store).await;
                return Err(e);
            }
        } else {
            *store.conn.write().await = Some(conn);
        }
        // From now until a clean close marks it again, the mirror may fall behind.
        refused_retried(|| {
            store.write(
                "UPSERT meta:mirror SET clean = false RETURN NONE",
                json!({}),
            )
        })
        .await?;
        debug!(
            url,
            connect_ms,
            total_ms = started.elapsed().as_millis() as u64,
            "store opened"
        );
        Ok(store)
    }

    /// Whether the store is a server (reached by other processes too).
    pub(super) fn is_remote(&self) -> bool {
        self.url.starts_with("ws://") || self.url.starts_with("wss://")
    }

    pub(super) async fn connect(&self) -> Result<Conn, StoreError> {
        let unavailable = |e: String| StoreError::Unavailable(format!("{}: {e}", self.url));
        let conn = if self.is_remote() {
            let db = surrealdb::engine::any::connect(self.url.as_str())
                .await
                .map_err(|e| unavailable(e.to_string()))?;
            // Choosing the namespace and database defines them when new: processes starting
            // at once conflict there, and the loser tries again (the connection is made, so
            // a failure here is taken for such a conflict, a few times at most).
            refused_retried(|| async {
                db.use_ns(self.opts.namespace.as_str())
                    .use_db(self.opts.database.as_str())
                    .await
                    .map_err(|e| StoreError::Write(e.to_string()))
            })
            .await
            .map_err(|e| match e {
                StoreError::Write(e) => unavailable(e),
                e => e,
            })?;
            Conn::Remote(db)
        } else {
            let path = match self.url.as_str() {
                "mem://" | "memory" => "memory".to_string(),
                u if u.starts_with("surrealkv://") => u.to_string(),
                u => return Err(unavailable(format!("unsupported store url {u:?}"))),
            };
            let cfg = surrealdb_cnf::ConfigMap::empty()
                .with_key_value(
                    "surrealkv_block_cache_capacity",
                    self.opts.block_cache_bytes.to_string(),
                )
                .with_key_value(
                    "surrealkv_max_memtable_size",
                    self.opts.memtable_bytes.to_string(),
                );
            let (ntx, nrx) = surrealdb::channel::bounded(surrealdb_cnf::NOTIFICATIONS_CHANNEL_SIZE);
            let ds = Datastore::builder()
                .with_config(cfg)
                .with_notify(ntx)
                .with_capabilities(surrealdb::opt::capabilities::Capabilities::new().into())
                .without_maintenance_tasks()
                .build_with_path(&path)
                .await
                .map_err(|e| unavailable(e.to_string()))?;
            ds.check_version()
                .await
                .map_err(|e| unavailable(e.to_string()))?;
            ds.bootstrap()
                .await
                .map_err(|e| unavailable(e.to_string()))?;
            ds.start_maintenance_tasks();
            let db = Surreal::<Db>::unstable_from_datastore(ds.clone(), Some(nrx))
                .await
                .map_err(|e| unavailable(e.to_string()))?;
            db.use_ns(self.opts.namespace.as_str())
                .use_db(self.opts.database.as_str())
                .await
                .map_err(|e| unavailable(e.to_string()))?;
            Conn::Local { db, ds }
        };
        Ok(conn)
    }

    /// Defines the schema (idempotent), checks its version, and loads the segment index.
    pub(super) async fn init(&self, conn: &Conn) -> Result<(), StoreError> {
        let mut r = conn
            .query(
                "DEFINE TABLE IF NOT EXISTS meta SCHEMALESS;
                 DEFINE TABLE IF NOT EXISTS segment SCHEMALESS;
                 DEFINE TABLE IF NOT EXISTS snapshot SCHEMALESS;
                 DEFINE INDEX IF NOT EXISTS snapshot_gen ON snapshot FIELDS gen;
                 DEFINE TABLE IF NOT EXISTS agent SCHEMALESS;
                 DEFINE INDEX IF NOT EXISTS agent_kind ON agent FIELDS kind;
                 DEFINE INDEX IF NOT EXISTS agent_status ON agent FIELDS status;
                 DEFINE INDEX IF NOT EXISTS agent_kind_status ON agent FIELDS kind, status;
                 DEFINE TABLE IF NOT EXISTS job SCHEMALESS;
                 DEFINE TABLE IF NOT EXISTS cursor SCHEMALESS;
                 DEFINE TABLE IF NOT EXISTS policy SCHEMALESS;
                 DEFINE TABLE IF NOT EXISTS hold SCHEMALESS;
                 DEFINE TABLE IF NOT EXISTS hold_beat SCHEMALESS;
                 SELECT VALUE version FROM ONLY meta:schema;",
                json!({}),
            )
            .await?;
        // The last statement's: counting them by hand once read a table's definition instead.
        let version: Option<Value> = r.take(r.num_statements() - 1).map_err(read_err)?;
        if self.is_remote() {
            // Only a server's log is shared by writers that look their batches up and read
            // it in order by query; an embedded store's segment writes do not pay for the
            // indexes (its reads and deletes go by record key, from the in-memory index).
            conn.query(
                "DEFINE INDEX IF NOT EXISTS segment_last ON segment FIELDS last_seq;
                 DEFINE INDEX IF NOT EXISTS segment_batch ON segment FIELDS batch;
                 DEFINE TABLE IF NOT EXISTS fleet_chunk SCHEMALESS;",
                json!({}),
            )
            .await?;
        } else {
            // Kept on every segment by earlier versions: about a fifth of a commit's CPU.
            conn.query("REMOVE INDEX IF EXISTS segment_last ON segment;", json!({}))
                .await?;
        }
        match version.and_then(|v| v.as_u64()) {
            Some(v) if v > SCHEMA_VERSION => {
                return Err(StoreError::Unavailable(format!(
                    "the store was written by a newer vigil (schema {v}, this one knows {SCHEMA_VERSION})"
                )))
            }
            Some(v) if v == SCHEMA_VERSION => {}
            _ => {
                conn.query(
                    "UPSERT meta:schema SET version = $v RETURN NONE",
                    json!({ "v": SCHEMA_VERSION }),
                )
                .await?;
            }
        }
        let mut r = conn
            .query(
                "SELECT first_seq, last_seq, newest_at_ms FROM segment;
                 SELECT VALUE last_seq FROM ONLY meta:log;
                 SELECT seq, gen, chunks, rows FROM ONLY meta:checkpoint;
                 SELECT clean, seq FROM ONLY meta:mirror;",
                json!({}),
            )
            .await?;
        let rows: Vec<Value> = r.take(0).map_err(read_err)?;
        let last: Option<Value> = r.take(1).map_err(read_err)?;
        let cp = r
            .take::<Option<Value>>(2)
            .map_err(read_err)?
            .unwrap_or_default();
        let mirror = r
            .take::<Option<Value>>(3)
            .map_err(read_err)?
            .unwrap_or_default();
        let checkpoint_seq = cp["seq"].as_u64().unwrap_or(0);
        let mut index = Index {
            last_seq: last.and_then(|v| v.as_u64()).unwrap_or(0),
            checkpoint_seq,
            gen: cp["gen"].as_u64().unwrap_or(0),
            chunks: cp["chunks"].as_u64().unwrap_or(0),
            rows: cp["rows"].as_u64().unwrap_or(0) as usize,
            legacy: checkpoint_seq > 0 && cp["gen"].is_null(),
            mirror_clean: mirror["clean"].as_bool() == Some(true)
                && mirror["seq"].as_u64() == Some(checkpoint_seq),
            ..Index::default()
        };
        for row in rows {
            let (Some(first), Some(last)) = (row["first_seq"].as_u64(), row["last_seq"].as_u64())
            else {
                continue;
            };
            index.segments.insert(
                last,
                SegMeta {
                    first_seq: first,
                    newest_at_ms: row["newest_at_ms"].as_i64().unwrap_or(0),
                },
            );
            index.last_seq = index.last_seq.max(last);
        }
        *self.index.lock() = index;
        Ok(())
    }

    /// Closes the connection and opens it again (after a failed write).
    pub(super) async fn reopen(&self) -> Result<(), StoreError> {
        let mut guard = self.conn.write().await;
        if let Some(old) = guard.take() {
            old.close().await;
        }
        let conn = self.connect().await?;
        self.init(&conn).await?;
        *guard = Some(conn);
        info!(url = %self.url, "store reopened after a failed write");
        Ok(())
    }

    /// After a failed write, closes and reopens the datastore (SurrealKV may have damaged
    /// its log) and reads the index again from what is stored.
    pub(super) async fn reopen_if_suspect(&self) -> Result<(), StoreError> {
        if self.suspect.load(Ordering::SeqCst) {
            self.reopen().await?;
            self.suspect.store(false, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Runs a write, fenced by the hold when the process holds the store (see the `hold`
    /// module); a failure makes the next write reopen the datastore first.
    pub(super) async fn write(
        &self,
        sql: &str,
        binds: Value,
    ) -> Result<IndexedResults, StoreError> {
        // Boxed, like the other writes: SurrealDB's futures are large, and nested they
        // overflow a 2 MiB test thread's stack in a debug build.
        Box::pin(self.write_as(sql, binds, true)).await
    }

    /// Runs a write that is not fenced (a sink's state, which its own task writes beside the
    /// registry); it is still refused once the hold is lost.
    pub(super) async fn write_unfenced(
        &self,
        sql: &str,
        binds: Value,
    ) -> Result<IndexedResults, StoreError> {
        Box::pin(self.write_as(sql, binds, false)).await
    }

    async fn write_as(
        &self,
        sql: &str,
        mut binds: Value,
        fence: bool,
    ) -> Result<IndexedResults, StoreError> {
        let hold = self.hold.get();
        if let Some(reason) = hold.and_then(|h| h.lost_reason()) {
            return Err(StoreError::Fenced(reason));
        }
        self.reopen_if_suspect().await?;
        let sql = match hold {
            Some(h) if fence => {
                std::borrow::Cow::Owned(hold::fenced(sql, &mut binds, h.key(), h.epoch()))
            }
            _ => std::borrow::Cow::Borrowed(sql),
        };
        let r = {
            let guard = self.conn.read().await;
            let conn = guard
                .as_ref()
                .ok_or_else(|| StoreError::Unavailable("store is closed".into()))?;
            Box::pin(conn.query(&sql, binds)).await
        };
        if let Err(e) = &r {
            // A server that refused a write (a conflict among writers) has not been damaged
            // by it; an embedded store may have been, and any store may have lost the link.
            let refused_by_server = matches!(e, StoreError::Write(_)) && self.is_remote();
            if !refused_by_server {
                self.suspect.store(true, Ordering::SeqCst);
            }
            if let Some(h) = hold {
                // Refused by the fence, or in conflict with a takeover: find out which.
                Box::pin(hold::check(self, h)).await;
                if let Some(reason) = h.lost_reason() {
                    return Err(StoreError::Fenced(reason));
                }
            }
        }
        r
    }

    pub(super) async fn read(&self, sql: &str, binds: Value) -> Result<IndexedResults, StoreError> {
        let guard = self.conn.read().await;
        let conn = guard
            .as_ref()
            .ok_or_else(|| StoreError::Unavailable("store is closed".into()))?;
        conn.query(sql, binds)
            .await
            .map_err(|e| StoreError::Read(e.to_string()))
    }

    /// Deletes the segments up to `upto` (retention), by record key from the in-memory
    /// index: an embedded store's segments carry no index on their seqs (see `init`), and a
    /// page at a time keeps each transaction small.
    pub(super) async fn delete_segments(&self, upto: u64) -> Result<(), StoreError> {
        let keys: Vec<u64> = {
            let index = self.index.lock();
            index.segments.range(..=upto).map(|(k, _)| *k).collect()
        };
        for page in keys.chunks(RETAIN_PAGE) {
            self.write(
                "FOR $k IN $keys { DELETE type::record('segment', $k) RETURN NONE; };",
                json!({ "keys": page }),
            )
            .await?;
            let mut index = self.index.lock();
            for k in page {
                index.segments.remove(k);
            }
        }
        Ok(())
    }

    /// One segment's row, as `sql` selects it from `type::record('segment', $k)`.
    async fn segment_row(&self, sql: &str, last_seq: u64) -> Result<Option<Value>, StoreError> {
        let mut r = self.read(sql, json!({ "k": last_seq })).await?;
        r.take(0).map_err(read_err)
    }

    /// Reads one segment's events.
    pub(super) async fn segment(&self, last_seq: u64) -> Result<Vec<Event>, StoreError> {
        let sql = "SELECT events, events_json FROM ONLY type::record('segment', $k)";
        match self.segment_row(sql, last_seq).await? {
            // Written as one JSON text (see `append`); an array of objects is read too.
            Some(mut v) => match v["events_json"].as_str() {
                Some(text) => serde_json::from_str(text).map_err(read_err),
                None => serde_json::from_value(v["events"].take()).map_err(read_err),
            },
            None => Err(StoreError::Read(format!("segment {last_seq} is missing"))),
        }
    }

    /// A stored segment's first seq and events as written, if it is there.
    pub(super) async fn segment_text(
        &self,
        last_seq: u64,
    ) -> Result<Option<(u64, String)>, StoreError> {
        let sql = "SELECT first_seq, events_json FROM ONLY type::record('segment', $k)";
        let row = self.segment_row(sql, last_seq).await?;
        Ok(row.and_then(|v| {
            let first = v["first_seq"].as_u64()?;
            Some((first, v["events_json"].as_str()?.to_string()))
        }))
    }

    /// Events with `seq >= from` that `keep` accepts, in order, at most `limit`: the
    /// segments that hold them are found in the index and read one by one.
    pub(super) async fn scan(
        &self,
        from: u64,
        limit: usize,
        keep: impl Fn(&Event) -> bool,
    ) -> Result<Vec<Event>, StoreError> {
        let keys: Vec<u64> = {
            let index = self.index.lock();
            index.segments.range(from..).map(|(k, _)| *k).collect()
        };
        let mut out = Vec::new();
        for k in keys {
            if out.len() >= limit {
                break;
            }
            let events = self.segment(k).await?;
            out.extend(events.into_iter().filter(|e| e.seq >= from && keep(e)));
        }
        out.truncate(limit);
        Ok(out)
    }
}
