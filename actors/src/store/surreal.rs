//! `SurrealStore`: the durable store on SurrealDB 3 — embedded SurrealKV (`surrealkv://PATH`),
//! SurrealDB's in-memory engine (`mem://`), or a server (`ws://host:port`).
//!
//! The layout is designed for SurrealDB's cost per record (≈ 1-9k record writes/s here):
//! - `segment:<last_seq>`: one record per group commit, `{first_seq, last_seq, newest_at_ms,
//!   events_json}` (the events as one JSON array text), written in one transaction with
//!   `meta:log.last_seq`;
//! - `agent:<id>`: the checkpoint of the registry's live view, upserted in chunks, with
//!   `meta:checkpoint.seq` written after the last chunk (a chunk newer than that seq is
//!   harmless: restore replays the log after the seq in order, and the last event wins);
//! - `meta:schema.version`; indexes on `agent` (`kind`, `status`, `kind`+`status`) for cold
//!   reads and other tools, and on `segment.last_seq` for retention.
//!
//! Reads find segments through an in-memory index of segment boundaries (loaded at open), so
//! resuming from a seq is point reads, never a scan. Every parameter is bound, never formatted
//! into query text. The registry is the only writer.
//!
//! A write that fails marks the connection suspect: SurrealKV may have damaged its log (a full
//! disk), and writes that succeed afterwards in the same process can be lost at the next open.
//! So the next write first closes and reopens the datastore, and a batch whose outcome was
//! unknown is looked up before it is written again.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use serde_json::{json, Value};
use surrealdb::engine::any::Any;
use surrealdb::engine::local::Db;
use surrealdb::{IndexedResults, Surreal};
use surrealdb_core::kvs::Datastore;
use tokio::sync::RwLock;
use tracing::{debug, info, warn};

use super::{Loaded, Retention, Store, StoreError};
use crate::model::{AgentId, AgentRecord, Event};

/// The schema version this code writes.
pub const SCHEMA_VERSION: u64 = 1;

/// Rows per checkpoint statement (one transaction each; bounded by SurrealKV's memtable).
const CHECKPOINT_CHUNK: usize = 1000;

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
        let mut r = r.map_err(|e| StoreError::Write(e.to_string()))?;
        let errors = r.take_errors();
        if let Some((_, e)) = errors.into_iter().min_by_key(|(i, e)| {
            // In a failed transaction every statement reports "not executed"; the cause is
            // the one that says something else.
            (e.to_string().contains("not executed"), *i)
        }) {
            return Err(StoreError::Write(e.to_string()));
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
    /// Agents that have a row: a checkpoint inserts the others, which is much cheaper than
    /// an upsert.
    stored: std::collections::HashSet<AgentId>,
}

/// The SurrealDB [`Store`].
pub struct SurrealStore {
    url: String,
    opts: SurrealOptions,
    conn: RwLock<Option<Conn>>,
    index: Mutex<Index>,
    suspect: AtomicBool,
}

fn read_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Read(e.to_string())
}

impl SurrealStore {
    /// Opens (creating if needed) the store at `url` and defines the schema.
    pub async fn open(url: &str, opts: SurrealOptions) -> Result<Arc<Self>, StoreError> {
        let started = std::time::Instant::now();
        let store = Arc::new(Self {
            url: url.to_string(),
            opts,
            conn: RwLock::new(None),
            index: Mutex::new(Index::default()),
            suspect: AtomicBool::new(false),
        });
        let conn = store.connect().await?;
        let connect_ms = started.elapsed().as_millis() as u64;
        store.init(&conn).await?;
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
        let version: Option<Value> = r.take(9).map_err(read_err)?;
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
                 SELECT VALUE seq FROM ONLY meta:checkpoint;
                 SELECT VALUE agent_id FROM agent;",
                json!({}),
            )
            .await?;
        let rows: Vec<Value> = r.take(0).map_err(read_err)?;
        let last: Option<Value> = r.take(1).map_err(read_err)?;
        let cp: Option<Value> = r.take(2).map_err(read_err)?;
        let stored: Vec<Value> = r.take(3).map_err(read_err)?;
        let mut index = Index {
            last_seq: last.and_then(|v| v.as_u64()).unwrap_or(0),
            checkpoint_seq: cp.and_then(|v| v.as_u64()).unwrap_or(0),
            stored: stored
                .iter()
                .filter_map(|v| v.as_str().and_then(|s| AgentId::new(s).ok()))
                .collect(),
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

    /// Runs a write; a failure makes the next write reopen the datastore first.
    async fn write(&self, sql: &str, binds: Value) -> Result<IndexedResults, StoreError> {
        if self.suspect.load(Ordering::SeqCst) {
            self.reopen().await?;
            self.suspect.store(false, Ordering::SeqCst);
        }
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
        let mut r = self.read("SELECT * FROM agent", json!({})).await?;
        let rows: Vec<Value> = r.take(0).map_err(read_err)?;
        let agents = rows
            .into_iter()
            .map(agent_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let (cp, last) = {
            let index = self.index.lock().unwrap_or_else(|e| e.into_inner());
            (index.checkpoint_seq, index.last_seq)
        };
        let events_after = self.scan(cp + 1, usize::MAX, |_| true).await?;
        Ok(Loaded {
            agents,
            checkpoint_seq: cp,
            events_after,
            last_seq: last.max(cp),
        })
    }

    async fn append(&self, events: &[Arc<Event>]) -> Result<(), StoreError> {
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return Ok(());
        };
        let (first, last) = (first.seq, last.seq);
        let retrying = self.suspect.load(Ordering::SeqCst);
        let expected = {
            let index = self.index.lock().unwrap_or_else(|e| e.into_inner());
            index.last_seq.max(index.checkpoint_seq) + 1
        };
        for (want, e) in (expected..).zip(events) {
            if e.seq != want {
                if retrying && e.seq < want {
                    break; // checked below: it may have been written before the failure
                }
                return Err(StoreError::OutOfOrder {
                    expected: want,
                    got: e.seq,
                });
            }
        }
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
        let r = self
            .write(
                "BEGIN TRANSACTION;
                 CREATE type::record('segment', $k) CONTENT $segment RETURN NONE;
                 UPSERT meta:log SET last_seq = $k RETURN NONE;
                 COMMIT TRANSACTION;",
                json!({ "k": last, "segment": segment }),
            )
            .await;
        if let Err(e) = r {
            // After a reopen, a batch whose first attempt failed may in fact be there.
            if e.to_string().contains("already exists") {
                let mut r = self
                    .read(
                        "SELECT VALUE first_seq FROM ONLY type::record('segment', $k)",
                        json!({ "k": last }),
                    )
                    .await?;
                let there: Option<Value> = r.take(0).map_err(read_err)?;
                if there.and_then(|v| v.as_u64()) != Some(first) {
                    return Err(e);
                }
                self.suspect.store(false, Ordering::SeqCst);
            } else {
                return Err(e);
            }
        }
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

    async fn checkpoint(&self, agents: &[AgentRecord], seq: u64) -> Result<(), StoreError> {
        let (fresh, known): (Vec<&AgentRecord>, Vec<&AgentRecord>) = {
            let index = self.index.lock().unwrap_or_else(|e| e.into_inner());
            agents.iter().partition(|a| !index.stored.contains(&a.id))
        };
        for chunk in fresh.chunks(CHECKPOINT_CHUNK) {
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
            index.stored.extend(chunk.iter().map(|a| a.id.clone()));
        }
        for chunk in known.chunks(CHECKPOINT_CHUNK) {
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
        let current = self
            .index
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .checkpoint_seq;
        if seq > current {
            self.write(
                "UPSERT meta:checkpoint SET seq = $seq RETURN NONE",
                json!({ "seq": seq }),
            )
            .await?;
            self.index
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .checkpoint_seq = seq;
        }
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let ev: Vec<_> = (1..=3)
            .map(|i| {
                crate::store::conformance::event(
                    i,
                    "a",
                    crate::model::Status::Online,
                    crate::model::Status::Degraded,
                )
            })
            .collect();
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
        let ev: Vec<_> = (1..=5)
            .map(|i| {
                crate::store::conformance::event(
                    i,
                    "a",
                    crate::model::Status::Online,
                    crate::model::Status::Degraded,
                )
            })
            .collect();
        s.append(&ev[..2]).await.expect("append");
        s.append(&ev[2..]).await.expect("append");
        s.checkpoint(
            &[crate::store::conformance::record(
                "a:1",
                crate::model::Status::Degraded,
            )],
            2,
        )
        .await
        .expect("checkpoint");
        s.close().await;
        drop(s);
        let s = SurrealStore::open(&url, small).await.expect("reopen");
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
        s.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
