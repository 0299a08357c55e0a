//! `SurrealStore`: the durable store on SurrealDB 3 — embedded SurrealKV (`surrealkv://PATH`),
//! SurrealDB's in-memory engine (`mem://`), or a server (`ws://host:port`).
//!
//! The layout is designed for SurrealDB's cost per record (≈ 1-9k record writes/s here):
//! - `segment:<last_seq>`: one record per group commit, `{first_seq, last_seq, newest_at_ms,
//!   events_json}` (the events as one JSON array text), written in one transaction with
//!   `meta:log.last_seq`;
//! - `snapshot:<gen * 1e6 + n>`: the checkpoint of the registry's live view, as chunks of
//!   agent records, each one JSON text (`agents_json`). A full checkpoint writes generation
//!   `gen + 1` from chunk 0; an incremental one appends chunks to the current generation; a
//!   restore reads the chunks in order and the last record of an agent wins.
//!   `meta:checkpoint` (`seq`, `gen`, `chunks`, `rows`) is written after the chunks, so a
//!   checkpoint cut short is never read (a restore replays the log after `seq` in order);
//!   after a full one the older generation is deleted;
//! - `agent:<id>`: a queryable copy of the agents (the mirror) for cold reads and other tools,
//!   with indexes on `kind`, `status`, `kind`+`status`. It is refreshed in small chunks when
//!   the registry is idle and restore never reads it; `meta:mirror` (`clean`, `seq`) says
//!   whether it was complete when the store was closed;
//! - `meta:schema.version`; an index on `segment.last_seq` for retention;
//! - `cursor:<key>` `{v}`: a sink's saved state (its cursor; its dead letters under
//!   `<name>/dead`), as JSON text, written by the sink's task (the one writer besides the
//!   registry, of its own records only).
//!
//! Reads find segments through an in-memory index of segment boundaries (loaded at open), so
//! resuming from a seq is point reads, never a scan. Every parameter is bound, never formatted
//! into query text. The registry is the only writer of the log and the agents.
//!
//! A write that fails marks the connection suspect: SurrealKV may have damaged its log (a full
//! disk), and writes that succeed afterwards in the same process can be lost at the next open.
//! So the next write first closes and reopens the datastore and reads the index again. A batch
//! the store then already holds is accepted only as a verbatim retry of the newest segment,
//! and written again, so that its durability rests on a commit that succeeded: the failed
//! one's sync may have failed while the page cache still showed the data. Nothing is decided
//! from an error's text.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use serde_json::{json, Value};
use surrealdb::engine::any::Any;
use surrealdb::engine::local::Db;
use surrealdb::types::QueryError;
use surrealdb::{IndexedResults, Surreal};
use surrealdb_core::kvs::Datastore;
use tokio::sync::RwLock;
use tracing::{debug, info, warn};

use super::{Loaded, Retention, Store, StoreError};
use crate::model::{AgentId, AgentRecord, Event};

/// The schema version this code writes.
pub const SCHEMA_VERSION: u64 = 1;

/// Agent records per checkpoint chunk (one record, one JSON text, about 1.5 MB).
const SNAPSHOT_CHUNK: usize = 5000;
/// Snapshot keys: `gen * SNAPSHOT_GEN + n`.
const SNAPSHOT_GEN: u64 = 1_000_000;
/// Rows per mirror statement (one transaction each; bounded by SurrealKV's memtable).
const MIRROR_CHUNK: usize = 1000;

/// How the store is opened.
#[derive(Debug, Clone)]
pub struct SurrealOptions {
    /// SurrealKV's block cache, in bytes.
    pub block_cache_bytes: u64,
    /// SurrealKV's memtable, in bytes (it also bounds one transaction).
    pub memtable_bytes: u64,
    pub namespace: String,
    pub database: String,
}

impl Default for SurrealOptions {
    fn default() -> Self {
        Self {
            block_cache_bytes: 64 << 20,
            memtable_bytes: 64 << 20,
            namespace: "vigil".into(),
            database: "main".into(),
        }
    }
}

enum Conn {
    /// Embedded (SurrealKV or memory), opened through the core builder so its caches can be
    /// sized; `ds` closes it explicitly.
    Local {
        db: Surreal<Db>,
        ds: Arc<Datastore>,
    },
    Remote(Surreal<Any>),
}

impl Conn {
    async fn query(&self, sql: &str, binds: Value) -> Result<IndexedResults, StoreError> {
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

    async fn close(self) {
        if let Conn::Local { db, ds } = self {
            if let Err(e) = ds.shutdown().await {
                warn!(error = %e, "closing the datastore failed");
            }
            drop(db);
        }
    }
}

fn not_executed(e: &surrealdb::Error) -> bool {
    matches!(e.query_details(), Some(QueryError::NotExecuted))
}

/// A statement's error as the store's: refusals that leave nothing written (the statement
/// or the transaction was rejected before its commit) are [`StoreError::Write`]; anything
/// else, a failed commit or sync among them, is [`StoreError::Unknown`].
fn classify(e: &surrealdb::Error) -> StoreError {
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
fn with_sync(url: &str) -> (String, Option<String>) {
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

/// Boundaries of one stored segment.
#[derive(Debug, Clone, Copy)]
struct SegMeta {
    first_seq: u64,
    newest_at_ms: i64,
}

#[derive(Debug, Default)]
struct Index {
    /// `last_seq → boundaries`, for every stored segment.
    segments: BTreeMap<u64, SegMeta>,
    last_seq: u64,
    checkpoint_seq: u64,
    /// The checkpoint's generation and how many chunks of it are committed.
    gen: u64,
    chunks: u64,
    /// Agent records in those chunks.
    rows: usize,
    /// The checkpoint is in the `agent` table (a store written before checkpoints were
    /// chunked): it is read from there, and the next checkpoint must be full.
    legacy: bool,
    /// Whether the mirror was complete, as of the checkpoint, when the store was opened.
    mirror_clean: bool,
    /// Agents that have a mirror row (read at the first mirror write): the others are
    /// inserted, which is much cheaper than an upsert.
    mirrored: Option<std::collections::HashSet<AgentId>>,
}

/// The SurrealDB [`Store`].
pub struct SurrealStore {
    url: String,
    opts: SurrealOptions,
    conn: RwLock<Option<Conn>>,
    index: Mutex<Index>,
    /// A write failed: the next write reopens the datastore first.
    suspect: AtomicBool,
    /// The sync mode the URL asked for, when it is weaker than `every`.
    weak_sync: Option<String>,
}

fn read_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Read(e.to_string())
}

impl SurrealStore {
    /// Opens (creating if needed) the store at `url` and defines the schema.
    ///
    /// An embedded SurrealKV store is opened with `sync=every` (each commit flushed to disk
    /// before it is reported) unless its URL names another mode; a weaker one is accepted with
    /// a warning, and [`Store::durability_warning`] says so.
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
        });
        let conn = store.connect().await?;
        let connect_ms = started.elapsed().as_millis() as u64;
        store.init(&conn).await?;
        // From now until a clean close marks it again, the mirror may fall behind.
        conn.query(
            "UPSERT meta:mirror SET clean = false RETURN NONE",
            json!({}),
        )
        .await?;
        *store.conn.write().await = Some(conn);
        debug!(
            url,
            connect_ms,
            total_ms = started.elapsed().as_millis() as u64,
            "store opened"
        );
        Ok(store)
    }

    async fn connect(&self) -> Result<Conn, StoreError> {
        let unavailable = |e: String| StoreError::Unavailable(format!("{}: {e}", self.url));
        let conn = if self.url.starts_with("ws://") || self.url.starts_with("wss://") {
            let db = surrealdb::engine::any::connect(self.url.as_str())
                .await
                .map_err(|e| unavailable(e.to_string()))?;
            db.use_ns(self.opts.namespace.as_str())
                .use_db(self.opts.database.as_str())
                .await
                .map_err(|e| unavailable(e.to_string()))?;
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
    async fn init(&self, conn: &Conn) -> Result<(), StoreError> {
        let mut r = conn
            .query(
                "DEFINE TABLE IF NOT EXISTS meta SCHEMALESS;
                 DEFINE TABLE IF NOT EXISTS segment SCHEMALESS;
                 DEFINE INDEX IF NOT EXISTS segment_last ON segment FIELDS last_seq;
                 DEFINE TABLE IF NOT EXISTS snapshot SCHEMALESS;
                 DEFINE INDEX IF NOT EXISTS snapshot_gen ON snapshot FIELDS gen;
                 DEFINE TABLE IF NOT EXISTS agent SCHEMALESS;
                 DEFINE INDEX IF NOT EXISTS agent_kind ON agent FIELDS kind;
                 DEFINE INDEX IF NOT EXISTS agent_status ON agent FIELDS status;
                 DEFINE INDEX IF NOT EXISTS agent_kind_status ON agent FIELDS kind, status;
                 DEFINE TABLE IF NOT EXISTS job SCHEMALESS;
                 DEFINE TABLE IF NOT EXISTS cursor SCHEMALESS;
                 SELECT VALUE version FROM ONLY meta:schema;",
                json!({}),
            )
            .await?;
        let version: Option<Value> = r.take(11).map_err(read_err)?;
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
        *self.index.lock().unwrap_or_else(|e| e.into_inner()) = index;
        Ok(())
    }

    /// Closes the connection and opens it again (after a failed write).
    async fn reopen(&self) -> Result<(), StoreError> {
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
    async fn reopen_if_suspect(&self) -> Result<(), StoreError> {
        if self.suspect.load(Ordering::SeqCst) {
            self.reopen().await?;
            self.suspect.store(false, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Runs a write; a failure makes the next write reopen the datastore first.
    async fn write(&self, sql: &str, binds: Value) -> Result<IndexedResults, StoreError> {
        self.reopen_if_suspect().await?;
        let guard = self.conn.read().await;
        let conn = guard
            .as_ref()
            .ok_or_else(|| StoreError::Unavailable("store is closed".into()))?;
        let r = conn.query(sql, binds).await;
        if r.is_err() {
            self.suspect.store(true, Ordering::SeqCst);
        }
        r
    }

    async fn read(&self, sql: &str, binds: Value) -> Result<IndexedResults, StoreError> {
        let guard = self.conn.read().await;
        let conn = guard
            .as_ref()
            .ok_or_else(|| StoreError::Unavailable("store is closed".into()))?;
        conn.query(sql, binds)
            .await
            .map_err(|e| StoreError::Read(e.to_string()))
    }

    /// Reads one segment's events.
    async fn segment(&self, last_seq: u64) -> Result<Vec<Event>, StoreError> {
        let mut r = self
            .read(
                "SELECT events, events_json FROM ONLY type::record('segment', $k)",
                json!({ "k": last_seq }),
            )
            .await?;
        let row: Option<Value> = r.take(0).map_err(read_err)?;
        match row {
            // Written as one JSON text (see `append`); an array of objects is read too.
            Some(mut v) => match v["events_json"].as_str() {
                Some(text) => serde_json::from_str(text).map_err(read_err),
                None => serde_json::from_value(v["events"].take()).map_err(read_err),
            },
            None => Err(StoreError::Read(format!("segment {last_seq} is missing"))),
        }
    }

    /// A stored segment's first seq and events as written, if it is there.
    async fn segment_text(&self, last_seq: u64) -> Result<Option<(u64, String)>, StoreError> {
        let mut r = self
            .read(
                "SELECT first_seq, events_json FROM ONLY type::record('segment', $k)",
                json!({ "k": last_seq }),
            )
            .await?;
        let row: Option<Value> = r.take(0).map_err(read_err)?;
        Ok(row.and_then(|v| {
            let first = v["first_seq"].as_u64()?;
            Some((first, v["events_json"].as_str()?.to_string()))
        }))
    }

    /// Events with `seq >= from` that `keep` accepts, in order, at most `limit`: the
    /// segments that hold them are found in the index and read one by one.
    async fn scan(
        &self,
        from: u64,
        limit: usize,
        keep: impl Fn(&Event) -> bool,
    ) -> Result<Vec<Event>, StoreError> {
        let keys: Vec<u64> = {
            let index = self.index.lock().unwrap_or_else(|e| e.into_inner());
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

/// An agent record as stored: keyed by its id, with the id also in `agent_id`.
fn agent_row(a: &AgentRecord) -> Result<Value, StoreError> {
    let mut v = serde_json::to_value(a).map_err(|e| StoreError::Write(e.to_string()))?;
    v["agent_id"] = Value::String(a.id.to_string());
    Ok(v)
}

fn agent_from_row(mut v: Value) -> Result<AgentRecord, StoreError> {
    if let Some(obj) = v.as_object_mut() {
        obj.remove("id");
        if let Some(id) = obj.remove("agent_id") {
            obj.insert("id".into(), id);
        }
    }
    serde_json::from_value(v).map_err(read_err)
}

#[async_trait]
impl Store for SurrealStore {
    async fn load(&self) -> Result<Loaded, StoreError> {
        let (cp, last, gen, chunks, legacy, mirror_clean) = {
            let i = self.index.lock().unwrap_or_else(|e| e.into_inner());
            let i = &*i;
            (
                i.checkpoint_seq,
                i.last_seq,
                i.gen,
                i.chunks,
                i.legacy,
                i.mirror_clean,
            )
        };
        let (agents, checkpoint_rows) = if legacy {
            let mut r = self.read("SELECT * FROM agent", json!({})).await?;
            let rows: Vec<Value> = r.take(0).map_err(read_err)?;
            let agents = rows
                .into_iter()
                .map(agent_from_row)
                .collect::<Result<Vec<_>, _>>()?;
            (agents, None)
        } else {
            let mut latest: std::collections::HashMap<AgentId, AgentRecord> =
                std::collections::HashMap::new();
            let mut rows = 0;
            for n in 0..chunks {
                let mut r = self
                    .read(
                        "SELECT VALUE agents_json FROM ONLY type::record('snapshot', $k)",
                        json!({ "k": gen * SNAPSHOT_GEN + n }),
                    )
                    .await?;
                let text: Option<String> = r.take(0).map_err(read_err)?;
                let text = text.ok_or_else(|| {
                    StoreError::Read(format!(
                        "checkpoint chunk {n} of generation {gen} is missing"
                    ))
                })?;
                let chunk: Vec<AgentRecord> = serde_json::from_str(&text).map_err(read_err)?;
                rows += chunk.len();
                latest.reserve(chunk.len());
                for a in chunk {
                    latest.insert(a.id.clone(), a);
                }
            }
            (latest.into_values().collect(), Some(rows))
        };
        let events_after = self.scan(cp + 1, usize::MAX, |_| true).await?;
        Ok(Loaded {
            agents,
            checkpoint_seq: cp,
            events_after,
            last_seq: last.max(cp),
            checkpoint_rows,
            mirror_clean,
        })
    }

    async fn append(&self, events: &[Arc<Event>]) -> Result<(), StoreError> {
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return Ok(());
        };
        let (first, last) = (first.seq, last.seq);
        // After a failed write the index is read again from what the store holds.
        self.reopen_if_suspect().await?;
        let (expected, newest) = {
            let index = self.index.lock().unwrap_or_else(|e| e.into_inner());
            (index.last_seq.max(index.checkpoint_seq) + 1, index.last_seq)
        };
        let newest_at_ms = events.last().map_or(0, |e| e.at.timestamp_millis());
        // The events travel as one JSON text: SurrealDB then stores one string instead of
        // converting and encoding thousands of nested objects, which was most of a write's CPU.
        let events_json =
            serde_json::to_string(events).map_err(|e| StoreError::Write(e.to_string()))?;
        let segment = json!({
            "first_seq": first,
            "last_seq": last,
            "newest_at_ms": newest_at_ms,
            "events_json": events_json,
        });
        let sql = if first < expected {
            // The store holds this seq already: only a retry of a batch whose write failed
            // yet landed is accepted, and it is written again (an upsert of the same content)
            // so that a commit that succeeds makes it durable: the first one's sync may have
            // failed while the page cache still showed it.
            let there = self.segment_text(last).await?;
            let same = there
                .as_ref()
                .is_some_and(|(f, text)| *f == first && *text == events_json);
            if !same || last != newest {
                return Err(StoreError::OutOfOrder {
                    expected,
                    got: first,
                });
            }
            debug!(first, last, "a batch that landed before is written again");
            "BEGIN TRANSACTION;
             UPSERT type::record('segment', $k) CONTENT $segment RETURN NONE;
             UPSERT meta:log SET last_seq = $k RETURN NONE;
             COMMIT TRANSACTION;"
        } else {
            for (want, e) in (expected..).zip(events) {
                if e.seq != want {
                    return Err(StoreError::OutOfOrder {
                        expected: want,
                        got: e.seq,
                    });
                }
            }
            "BEGIN TRANSACTION;
             CREATE type::record('segment', $k) CONTENT $segment RETURN NONE;
             UPSERT meta:log SET last_seq = $k RETURN NONE;
             COMMIT TRANSACTION;"
        };
        self.write(sql, json!({ "k": last, "segment": segment }))
            .await?;
        let mut index = self.index.lock().unwrap_or_else(|e| e.into_inner());
        index.segments.insert(
            last,
            SegMeta {
                first_seq: first,
                newest_at_ms,
            },
        );
        index.last_seq = index.last_seq.max(last);
        Ok(())
    }

    async fn checkpoint(
        &self,
        agents: &[AgentRecord],
        seq: u64,
        full: bool,
    ) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        let (gen, first, rows, seq) = {
            let i = self.index.lock().unwrap_or_else(|e| e.into_inner());
            if i.legacy && !full {
                return Err(StoreError::Write(
                    "the first checkpoint of a store in the old layout must be full".into(),
                ));
            }
            match full {
                true => (i.gen + 1, 0, 0, seq.max(i.checkpoint_seq)),
                false => (i.gen, i.chunks, i.rows, seq.max(i.checkpoint_seq)),
            }
        };
        let mut n = first;
        for chunk in agents.chunks(SNAPSHOT_CHUNK) {
            if n >= SNAPSHOT_GEN {
                return Err(StoreError::Write("too many checkpoint chunks".into()));
            }
            let agents_json =
                serde_json::to_string(chunk).map_err(|e| StoreError::Write(e.to_string()))?;
            self.write(
                "UPSERT type::record('snapshot', $k) CONTENT $c RETURN NONE",
                json!({
                    "k": gen * SNAPSHOT_GEN + n,
                    "c": { "gen": gen, "agents_json": agents_json },
                }),
            )
            .await?;
            n += 1;
        }
        let rows = rows + agents.len();
        self.write(
            "UPSERT meta:checkpoint CONTENT $m RETURN NONE",
            json!({ "m": { "seq": seq, "gen": gen, "chunks": n, "rows": rows } }),
        )
        .await?;
        {
            let mut i = self.index.lock().unwrap_or_else(|e| e.into_inner());
            i.checkpoint_seq = seq;
            i.gen = gen;
            i.chunks = n;
            i.rows = rows;
            i.legacy = false;
        }
        if full {
            // The new generation is committed; the old one is garbage. Should this fail, the
            // next full checkpoint deletes it.
            if let Err(e) = self
                .write(
                    "DELETE snapshot WHERE gen < $g RETURN NONE",
                    json!({ "g": gen }),
                )
                .await
            {
                warn!(error = %e, "deleting the previous checkpoint failed");
            }
        }
        debug!(
            agents = agents.len(),
            full,
            gen,
            chunks = n,
            ms = started.elapsed().as_millis() as u64,
            "checkpoint written"
        );
        Ok(())
    }

    async fn mirror(
        &self,
        agents: &[AgentRecord],
        complete_at: Option<u64>,
    ) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        if !agents.is_empty() {
            let loaded = self
                .index
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .mirrored
                .is_some();
            if !loaded {
                let mut r = self
                    .read("SELECT VALUE agent_id FROM agent", json!({}))
                    .await?;
                let ids: Vec<Value> = r.take(0).map_err(read_err)?;
                let ids = ids
                    .iter()
                    .filter_map(|v| v.as_str().and_then(|s| AgentId::new(s).ok()))
                    .collect();
                self.index
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .mirrored = Some(ids);
            }
        }
        let (fresh, known): (Vec<&AgentRecord>, Vec<&AgentRecord>) = {
            let index = self.index.lock().unwrap_or_else(|e| e.into_inner());
            let mirrored = index.mirrored.as_ref();
            agents
                .iter()
                .partition(|a| !mirrored.is_some_and(|m| m.contains(&a.id)))
        };
        for chunk in fresh.chunks(MIRROR_CHUNK) {
            let rows = chunk
                .iter()
                .map(|a| {
                    let mut v = agent_row(a)?;
                    v["id"] = Value::String(a.id.to_string()); // the record key
                    Ok(v)
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            self.write(
                "INSERT INTO agent $rows RETURN NONE",
                json!({ "rows": rows }),
            )
            .await?;
            let mut index = self.index.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(m) = &mut index.mirrored {
                m.extend(chunk.iter().map(|a| a.id.clone()));
            }
        }
        for chunk in known.chunks(MIRROR_CHUNK) {
            let rows = chunk
                .iter()
                .map(|a| agent_row(a))
                .collect::<Result<Vec<_>, _>>()?;
            self.write(
                "FOR $r IN $rows {
                     UPSERT type::record('agent', $r.agent_id) CONTENT $r RETURN NONE;
                 };",
                json!({ "rows": rows }),
            )
            .await?;
        }
        if let Some(seq) = complete_at {
            self.write(
                "UPSERT meta:mirror SET clean = true, seq = $seq RETURN NONE",
                json!({ "seq": seq }),
            )
            .await?;
        }
        debug!(
            agents = agents.len(),
            ?complete_at,
            ms = started.elapsed().as_millis() as u64,
            "mirror written"
        );
        Ok(())
    }

    async fn read_events(&self, from: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        self.scan(from, limit, |_| true).await
    }

    async fn agent_events(
        &self,
        id: &AgentId,
        since: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        self.scan(since + 1, limit, |e| e.agent.as_ref() == Some(id))
            .await
    }

    async fn agent_events_latest(
        &self,
        id: &AgentId,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        // Segments newest first, until `limit` of the agent's events are found.
        let keys: Vec<u64> = {
            let index = self.index.lock().unwrap_or_else(|e| e.into_inner());
            index.segments.keys().rev().copied().collect()
        };
        let mut out = Vec::new();
        for k in keys {
            if out.len() >= limit {
                break;
            }
            let events = self.segment(k).await?;
            out.extend(
                events
                    .into_iter()
                    .rev()
                    .filter(|e| e.agent.as_ref() == Some(id)),
            );
        }
        out.truncate(limit);
        out.reverse();
        Ok(out)
    }

    async fn sink_state(&self, key: &str) -> Result<Option<String>, StoreError> {
        let mut r = self
            .read(
                "SELECT v FROM type::record('cursor', $k)",
                json!({ "k": key }),
            )
            .await?;
        let rows: Vec<Value> = r.take(0).map_err(read_err)?;
        Ok(rows
            .first()
            .and_then(|v| v["v"].as_str().map(str::to_string)))
    }

    async fn put_sink_state(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.write(
            "UPSERT type::record('cursor', $k) CONTENT { v: $v } RETURN NONE",
            json!({ "k": key, "v": value }),
        )
        .await?;
        Ok(())
    }

    async fn forget(&self, ids: &[AgentId]) -> Result<(), StoreError> {
        for chunk in ids.chunks(MIRROR_CHUNK) {
            let keys: Vec<&str> = chunk.iter().map(AgentId::as_str).collect();
            self.write(
                "FOR $k IN $keys { DELETE type::record('agent', $k) RETURN NONE; };",
                json!({ "keys": keys }),
            )
            .await?;
            let mut index = self.index.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(m) = &mut index.mirrored {
                for id in chunk {
                    m.remove(id);
                }
            }
        }
        Ok(())
    }

    async fn oldest_seq(&self) -> Result<Option<u64>, StoreError> {
        let index = self.index.lock().unwrap_or_else(|e| e.into_inner());
        Ok(index.segments.values().next().map(|m| m.first_seq))
    }

    async fn retain(&self, retention: &Retention) -> Result<Option<u64>, StoreError> {
        let drop_upto = {
            let index = self.index.lock().unwrap_or_else(|e| e.into_inner());
            let now = Utc::now();
            let mut upto = None;
            for (last, m) in &index.segments {
                let newest: Option<DateTime<Utc>> =
                    Utc.timestamp_millis_opt(m.newest_at_ms).single();
                if !retention.drops(*last, newest, index.last_seq, index.checkpoint_seq, now) {
                    break;
                }
                upto = Some(*last);
            }
            upto
        };
        if let Some(upto) = drop_upto {
            self.write(
                "DELETE segment WHERE last_seq <= $upto RETURN NONE",
                json!({ "upto": upto }),
            )
            .await?;
            let mut index = self.index.lock().unwrap_or_else(|e| e.into_inner());
            index.segments = index.segments.split_off(&(upto + 1));
        }
        self.oldest_seq().await
    }

    /// Closes the store (flushes and releases SurrealKV's lock).
    async fn close(&self) {
        if let Some(conn) = self.conn.write().await.take() {
            conn.close().await;
        }
    }

    fn durability_warning(&self) -> Option<String> {
        self.weak_sync.as_ref().map(|mode| {
            format!(
                "store sync mode is '{mode}', not 'every': an acknowledged event can be lost \
                 if the machine loses power or crashes"
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Events 1.. for agent "a", each online → degraded.
    fn degradations(seqs: std::ops::RangeInclusive<u64>) -> Vec<Arc<Event>> {
        seqs.map(|i| {
            crate::store::conformance::event(
                i,
                "a",
                crate::model::Status::Online,
                crate::model::Status::Degraded,
            )
        })
        .collect()
    }

    #[test]
    fn an_embedded_url_gets_sync_every_unless_it_names_a_mode() {
        assert_eq!(
            with_sync("surrealkv://data/vigil"),
            ("surrealkv://data/vigil?sync=every".to_string(), None)
        );
        assert_eq!(
            with_sync("surrealkv://d?versioned=true"),
            ("surrealkv://d?versioned=true&sync=every".to_string(), None)
        );
        assert_eq!(
            with_sync("surrealkv://d?sync=every"),
            ("surrealkv://d?sync=every".to_string(), None)
        );
        assert_eq!(
            with_sync("surrealkv://d?sync=never"),
            (
                "surrealkv://d?sync=never".to_string(),
                Some("never".to_string())
            )
        );
        assert_eq!(with_sync("mem://"), ("mem://".to_string(), None));
        assert_eq!(with_sync("ws://h:1"), ("ws://h:1".to_string(), None));
    }

    #[tokio::test]
    async fn a_weaker_sync_mode_is_reported() {
        let dir = std::env::temp_dir().join(format!("vigil-sync-{}", std::process::id()));
        let small = SurrealOptions {
            block_cache_bytes: 8 << 20,
            memtable_bytes: 8 << 20,
            ..SurrealOptions::default()
        };
        let url = format!("surrealkv://{}/never?sync=never", dir.display());
        let s = SurrealStore::open(&url, small.clone()).await.expect("open");
        let warning = s.durability_warning().expect("a warning");
        assert!(warning.contains("never"), "{warning}");
        s.close().await;
        let url = format!("surrealkv://{}/every", dir.display());
        let s = SurrealStore::open(&url, small).await.expect("open");
        assert_eq!(s.durability_warning(), None);
        assert!(s.url.ends_with("?sync=every"), "{}", s.url);
        s.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn surreal_mem_store_passes_the_conformance_suite() {
        crate::store::conformance::run_all(|| async {
            SurrealStore::open("mem://", SurrealOptions::default())
                .await
                .expect("open mem://")
        })
        .await;
    }

    #[tokio::test]
    async fn a_segment_written_as_an_array_of_events_is_still_read() {
        let s = SurrealStore::open("mem://", SurrealOptions::default())
            .await
            .expect("open mem://");
        let ev = degradations(1..=3);
        s.write(
            "CREATE type::record('segment', $k) CONTENT $segment RETURN NONE",
            json!({ "k": 3, "segment": { "first_seq": 1, "last_seq": 3, "events": ev } }),
        )
        .await
        .expect("write an array segment");
        let read = s.segment(3).await.expect("read it back");
        assert_eq!(
            read.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert_eq!(read[0], *ev[0]);
        s.close().await;
    }

    #[tokio::test]
    async fn a_checkpoint_in_the_agent_table_is_read_and_the_next_one_is_full() {
        let s = SurrealStore::open("mem://", SurrealOptions::default())
            .await
            .expect("open mem://");
        let rec = crate::store::conformance::record("old", crate::model::Status::Offline);
        let mut row = agent_row(&rec).expect("row");
        row["id"] = Value::String("old".into());
        s.write(
            "INSERT INTO agent $rows RETURN NONE; UPSERT meta:checkpoint SET seq = 7 RETURN NONE;",
            json!({ "rows": [row] }),
        )
        .await
        .expect("write the old layout");
        // What an open of that store reads.
        s.init(s.conn.read().await.as_ref().expect("open"))
            .await
            .expect("init");
        let l = s.load().await.expect("load");
        assert_eq!(l.checkpoint_seq, 7);
        assert_eq!(l.agents, vec![rec.clone()]);
        assert_eq!(l.checkpoint_rows, None, "the next checkpoint must be full");
        assert!(s.checkpoint(&[], 7, false).await.is_err());
        let new = crate::store::conformance::record("new", crate::model::Status::Online);
        s.checkpoint(&[rec.clone(), new.clone()], 8, true)
            .await
            .expect("full checkpoint");
        let mut agents = s.load().await.expect("load").agents;
        agents.sort_by(|a, b| a.id.cmp(&b.id));
        assert_eq!(agents, vec![new, rec]);
        s.close().await;
    }

    #[tokio::test]
    async fn surrealkv_store_passes_the_conformance_suite_and_survives_a_reopen() {
        let dir = std::env::temp_dir().join(format!("vigil-skv-{}", std::process::id()));
        let n = std::sync::atomic::AtomicUsize::new(0);
        let small = SurrealOptions {
            block_cache_bytes: 8 << 20,
            memtable_bytes: 8 << 20,
            ..SurrealOptions::default()
        };
        crate::store::conformance::run_all(|| async {
            let i = n.fetch_add(1, Ordering::SeqCst);
            let url = format!("surrealkv://{}/c{i}", dir.display());
            SurrealStore::open(&url, small.clone()).await.expect("open")
        })
        .await;

        // Write, close, reopen: everything is there and the log continues.
        let url = format!("surrealkv://{}/reopen", dir.display());
        let s = SurrealStore::open(&url, small.clone()).await.expect("open");
        let ev = degradations(1..=5);
        s.append(&ev[..2]).await.expect("append");
        s.append(&ev[2..]).await.expect("append");
        s.checkpoint(
            &[crate::store::conformance::record(
                "a:1",
                crate::model::Status::Degraded,
            )],
            2,
            true,
        )
        .await
        .expect("checkpoint");
        s.close().await;
        drop(s);
        let s = SurrealStore::open(&url, small.clone())
            .await
            .expect("reopen");
        let l = s.load().await.expect("load");
        assert_eq!(l.last_seq, 5);
        assert_eq!(l.checkpoint_seq, 2);
        assert_eq!(
            l.events_after.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![3, 4, 5]
        );
        assert_eq!(l.agents.len(), 1);
        assert_eq!(l.agents[0].id.as_str(), "a:1");
        assert_eq!(l.events_after[0], *ev[2]);
        assert!(!l.mirror_clean, "nothing was mirrored");

        // The mirror: a queryable row per agent, and a mark that survives a clean close.
        s.mirror(&l.agents, Some(2)).await.expect("mirror");
        let mut r = s
            .read(
                "SELECT VALUE agent_id FROM agent WHERE status = $s",
                json!({ "s": "degraded" }),
            )
            .await
            .expect("query the mirror");
        let ids: Vec<Value> = r.take(0).expect("ids");
        assert_eq!(ids, vec![json!("a:1")]);
        s.close().await;
        drop(s);
        let s = SurrealStore::open(&url, small.clone())
            .await
            .expect("reopen");
        let l = s.load().await.expect("load");
        assert!(l.mirror_clean, "the mirror was marked complete");
        assert_eq!(l.agents.len(), 1, "restore does not read the mirror");
        s.close().await;
        drop(s);
        // Opened and closed without a new mark: the mirror can no longer be trusted.
        let s = SurrealStore::open(&url, small).await.expect("reopen");
        assert!(!s.load().await.expect("load").mirror_clean);
        s.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
