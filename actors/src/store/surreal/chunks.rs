//! Checkpoints as chunks by generation: the layout of a single node's checkpoint (`snapshot`)
//! and of a cluster's checkpoint of the fleet (`fleet_chunk`).
//!
//! A chunk is one record `<table>:<gen * 1e6 + n>` `{gen, n, <field>}`, its rows as one JSON
//! text. A full checkpoint writes generation `gen + 1` from chunk 0; an incremental one adds
//! chunks to the current generation; a restore reads the chunks in order, the last row of a
//! key winning. `meta:<meta>` (`seq`, `gen`, `chunks`, `rows`) is written after the chunks,
//! and a restore reads only the chunks it counts, so a checkpoint cut short is never read;
//! after a full one the older generation is deleted.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use tracing::{debug, warn};

use super::io::read_err;
use super::{StoreError, SurrealStore, SNAPSHOT_CHUNK, SNAPSHOT_GEN};

/// Where a checkpoint in this layout lives.
pub(super) struct Layout {
    /// The chunks' table.
    pub(super) table: &'static str,
    /// The key of its record in `meta`.
    pub(super) meta: &'static str,
    /// The field of a chunk that holds its rows' JSON text.
    pub(super) field: &'static str,
}

/// A single node's checkpoint of its registry's live view.
pub(super) const SNAPSHOT: Layout = Layout {
    table: "snapshot",
    meta: "checkpoint",
    field: "agents_json",
};

/// A cluster's checkpoint of the fleet's view.
pub(super) const FLEET: Layout = Layout {
    table: "fleet_chunk",
    meta: "fleet",
    field: "rows_json",
};

/// Where a checkpoint stands: what its `meta` record says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Stored {
    /// The seq it reflects.
    pub(super) seq: u64,
    /// Its generation.
    pub(super) gen: u64,
    /// Its chunks in that generation.
    pub(super) chunks: u64,
    /// The rows those chunks hold, superseded ones included.
    pub(super) rows: usize,
}

/// Statements put first in each write of a checkpoint (a fence), with their binds (an
/// object); none for a guard of `""`.
pub(super) struct Guard<'a> {
    pub(super) sql: &'a str,
    pub(super) binds: Value,
}

impl Guard<'_> {
    /// No statement before the writes.
    pub(super) const NONE: Guard<'static> = Guard {
        sql: "",
        binds: Value::Null,
    };

    fn sql(&self, body: &str) -> String {
        format!("{}\n{body}", self.sql)
    }

    fn binds(&self, mut own: Value) -> Value {
        if let (Some(own), Some(guard)) = (own.as_object_mut(), self.binds.as_object()) {
            own.extend(guard.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        own
    }
}

impl SurrealStore {
    /// Writes the checkpoint in `layout` as of `seq` over `stored`: with `full`, `rows` are
    /// all of them, as a new generation; without, they are laid over the stored ones. Each
    /// write starts with `guard`. Returns where the checkpoint stands now.
    pub(super) async fn write_chunks<T: Serialize>(
        &self,
        layout: &Layout,
        guard: &Guard<'_>,
        stored: Stored,
        rows: &[T],
        seq: u64,
        full: bool,
    ) -> Result<Stored, StoreError> {
        let started = std::time::Instant::now();
        let (gen, mut n, total) = match full {
            true => (stored.gen + 1, 0, 0),
            false => (stored.gen, stored.chunks, stored.rows),
        };
        let seq = seq.max(stored.seq);
        for chunk in rows.chunks(SNAPSHOT_CHUNK) {
            if n >= SNAPSHOT_GEN {
                return Err(StoreError::Write("too many checkpoint chunks".into()));
            }
            let text =
                serde_json::to_string(chunk).map_err(|e| StoreError::Write(e.to_string()))?;
            let mut content = json!({ "gen": gen, "n": n });
            content[layout.field] = Value::String(text);
            self.write(
                &guard.sql("UPSERT type::record($table, $k) CONTENT $c RETURN NONE;"),
                guard.binds(json!({
                    "table": layout.table,
                    "k": gen * SNAPSHOT_GEN + n,
                    "c": content,
                })),
            )
            .await?;
            n += 1;
        }
        let now = Stored {
            seq,
            gen,
            chunks: n,
            rows: total + rows.len(),
        };
        self.write(
            &guard.sql("UPSERT type::record('meta', $meta) CONTENT $m RETURN NONE;"),
            guard.binds(json!({
                "meta": layout.meta,
                "m": { "seq": now.seq, "gen": now.gen, "chunks": now.chunks, "rows": now.rows },
            })),
        )
        .await?;
        if full {
            // The new generation is committed; the old one is garbage. Should this fail, the
            // next full checkpoint deletes it.
            if let Err(e) = self
                .write(
                    &guard.sql("DELETE type::table($table) WHERE gen < $g RETURN NONE;"),
                    guard.binds(json!({ "table": layout.table, "g": gen })),
                )
                .await
            {
                warn!(table = layout.table, error = %e, "deleting the previous checkpoint failed");
            }
        }
        debug!(
            table = layout.table,
            rows = rows.len(),
            full,
            gen,
            chunks = n,
            seq,
            ms = started.elapsed().as_millis() as u64,
            "checkpoint written"
        );
        Ok(now)
    }

    /// The rows of chunk `n` of generation `gen` in `layout`; `None` when it is not there
    /// (a full checkpoint replaced its generation).
    pub(super) async fn read_chunk<T: DeserializeOwned>(
        &self,
        layout: &Layout,
        gen: u64,
        n: u64,
    ) -> Result<Option<Vec<T>>, StoreError> {
        let mut r = self
            .read(
                "SELECT * FROM ONLY type::record($table, $k)",
                json!({ "table": layout.table, "k": gen * SNAPSHOT_GEN + n }),
            )
            .await?;
        let Some(chunk) = r.take::<Option<Value>>(0).map_err(read_err)? else {
            return Ok(None);
        };
        let text = chunk[layout.field].as_str().ok_or_else(|| {
            StoreError::Read(format!(
                "checkpoint chunk {n} of generation {gen} has no rows"
            ))
        })?;
        serde_json::from_str(text).map(Some).map_err(read_err)
    }
}
