//! `SurrealStore`: the durable store on SurrealDB 3 — embedded SurrealKV (`surrealkv://PATH`),
//! SurrealDB's in-memory engine (`mem://`), or a server (`ws://host:port`).
//!
//! The layout is designed for SurrealDB's cost per record (≈ 1-9k record writes/s here):
//! - `segment:<last_seq>`: one record per group commit, `{first_seq, last_seq, newest_at_ms,
//!   events_json}` (the events as one JSON array text); on a server, written in one
//!   transaction with `meta:log.last_seq` (the head a cluster's shared log keeps), embedded
//!   alone (the last seq is the newest segment's or the checkpoint's);
//! - `snapshot:<gen * 1e6 + n>`: the checkpoint of the registry's live view, as chunks of
//!   agent records, each one JSON text (`agents_json`). A full checkpoint writes generation
//!   `gen + 1` from chunk 0; an incremental one appends chunks to the current generation; a
//!   restore reads the chunks in order and the last record of an agent wins.
//!   `meta:checkpoint` (`seq`, `gen`, `chunks`, `rows`) is written after the chunks, so a
//!   checkpoint cut short is never read (a restore replays the log after `seq` in order);
//!   after a full one the older generation is deleted (the layout is `chunks`', which a
//!   cluster's checkpoint of the fleet shares);
//! - `agent:<id>`: a queryable copy of the agents (the mirror) for cold reads and other tools,
//!   with indexes on `kind`, `status`, `kind`+`status`. It is refreshed in small chunks when
//!   the registry is idle and restore never reads it; `meta:mirror` (`clean`, `seq`) says
//!   whether it was complete when the store was closed;
//! - `meta:schema.version`; on a server, indexes on `segment.last_seq` and `segment.batch`
//!   for the shared log's reads;
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

mod agents;
mod chunks;
mod conn;
mod fleet;
mod hold;
mod io;
mod nodes;
mod shared;
mod tail;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::sync::RwLock;
use tracing::debug;

use super::{Loaded, Retention, Store, StoreError};
use crate::model::{AgentId, AgentRecord, Event, SavedPolicy};
use agents::agent_from_row;
use conn::{with_sync, Conn};
pub use fleet::{KeeperClaim, Keeping};
pub use hold::HoldOptions;
use io::read_err;
pub use nodes::{Adoption, NodeLease};
pub use shared::{Appended, BatchId};
pub use tail::LogTail;

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
    /// The SurrealDB namespace (default `"vigil"`).
    pub namespace: String,
    /// The SurrealDB database (default `"main"`).
    pub database: String,
    /// Take the store's hold (see the `hold` module): one live process writes it at a time,
    /// every write fenced. `None` (the default): no hold, for a store no other process opens.
    pub hold: Option<HoldOptions>,
}

impl Default for SurrealOptions {
    fn default() -> Self {
        Self {
            block_cache_bytes: 64 << 20,
            memtable_bytes: 64 << 20,
            namespace: "vigil".into(),
            database: "main".into(),
            hold: None,
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
    /// This process's hold on the store, when it takes one.
    hold: std::sync::OnceLock<hold::Hold>,
    /// The newest head of the shared log this store saw, plus one (0: none seen yet).
    head_seen: std::sync::atomic::AtomicU64,
}

impl SurrealStore {
    /// The epoch of this process's hold on the store, when it took one (it grows with each
    /// take: no two runs share one).
    pub fn hold_epoch(&self) -> Option<u64> {
        self.hold.get().map(|h| h.epoch())
    }

    /// The lease of the hold this store was opened to take, if any.
    pub fn hold_lease(&self) -> Option<std::time::Duration> {
        self.opts.hold.as_ref().map(|h| h.lease)
    }
}

#[async_trait]
impl Store for SurrealStore {
    async fn load(&self) -> Result<Loaded, StoreError> {
        let (cp, last, gen, chunks, legacy, mirror_clean) = {
            let i = self.index.lock();
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
                let chunk: Vec<AgentRecord> = self
                    .read_chunk(&chunks::SNAPSHOT, gen, n)
                    .await?
                    .ok_or_else(|| {
                        StoreError::Read(format!(
                            "checkpoint chunk {n} of generation {gen} is missing"
                        ))
                    })?;
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
            let index = self.index.lock();
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
        let retry = first < expected;
        if retry {
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
        } else {
            for (want, e) in (expected..).zip(events) {
                if e.seq != want {
                    return Err(StoreError::OutOfOrder {
                        expected: want,
                        got: e.seq,
                    });
                }
            }
        }
        let sql = io::segment_sql(retry, self.is_remote());
        self.write(sql, json!({ "k": last, "segment": segment }))
            .await?;
        let mut index = self.index.lock();
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
        // Boxed: SurrealDB's futures are large, and nested in this one they overflowed a
        // 2 MiB test thread's stack in a debug build.
        Box::pin(self.write_checkpoint(agents, seq, full)).await
    }

    async fn mirror(
        &self,
        agents: &[AgentRecord],
        complete_at: Option<u64>,
    ) -> Result<(), StoreError> {
        // Boxed, as the checkpoint is.
        Box::pin(self.write_mirror(agents, complete_at)).await
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
            let index = self.index.lock();
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
        // Not fenced: the sink's task writes beside the registry, and two fenced writes of one
        // process would conflict on the hold. A process that lost the hold still stops here.
        self.write_unfenced(
            "UPSERT type::record('cursor', $k) CONTENT { v: $v } RETURN NONE",
            json!({ "k": key, "v": value }),
        )
        .await?;
        Ok(())
    }

    async fn policies(&self) -> Result<Vec<SavedPolicy>, StoreError> {
        let mut r = self.read("SELECT v FROM policy", json!({})).await?;
        let rows: Vec<Value> = r.take(0).map_err(read_err)?;
        rows.iter()
            .map(|row| {
                let text = row["v"].as_str().unwrap_or_default();
                serde_json::from_str(text).map_err(read_err)
            })
            .collect()
    }

    async fn put_policy(&self, saved: &SavedPolicy) -> Result<(), StoreError> {
        let text = serde_json::to_string(saved).map_err(|e| StoreError::Write(e.to_string()))?;
        let binds = json!({ "k": saved.kind, "v": text });
        // Not fenced, as a sink's state is not (see `put_sink_state`).
        let write = || {
            self.write_unfenced(
                "UPSERT type::record('policy', $k) CONTENT { v: $v } RETURN NONE",
                binds.clone(),
            )
        };
        // Every node of a cluster saves the same change at about the same time: a write
        // refused for a conflict with another's is tried again. (On an embedded store a
        // refused write is a failure.)
        match self.is_remote() {
            true => io::refused_retried(write).await?,
            false => write().await?,
        };
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
            let mut index = self.index.lock();
            if let Some(m) = &mut index.mirrored {
                for id in chunk {
                    m.remove(id);
                }
            }
        }
        Ok(())
    }

    async fn oldest_seq(&self) -> Result<Option<u64>, StoreError> {
        let index = self.index.lock();
        Ok(index.segments.values().next().map(|m| m.first_seq))
    }

    async fn retain(&self, retention: &Retention) -> Result<Option<u64>, StoreError> {
        let drop_upto = {
            let index = self.index.lock();
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
            self.delete_segments(upto).await?;
        }
        self.oldest_seq().await
    }

    /// Closes the store (flushes and releases SurrealKV's lock).
    async fn lost(&self) -> String {
        match self.hold.get() {
            Some(h) => h.lost().await,
            None => std::future::pending().await,
        }
    }

    async fn close(&self) {
        if let Some(conn) = self.conn.write().await.take() {
            if let Some(h) = self.hold.get() {
                hold::release(&conn, h).await;
            }
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
mod tests;
