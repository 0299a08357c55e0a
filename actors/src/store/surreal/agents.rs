//! The agents in the store: checkpoints of the registry's live view (chunks of records by
//! generation) and the queryable copy (the mirror).

use serde_json::{json, Value};
use tracing::{debug, warn};

use super::{read_err, SurrealStore, MIRROR_CHUNK, SNAPSHOT_CHUNK, SNAPSHOT_GEN};
use crate::model::{AgentId, AgentRecord};
use crate::store::StoreError;

/// An agent record as stored: keyed by its id, with the id also in `agent_id`.
pub(super) fn agent_row(a: &AgentRecord) -> Result<Value, StoreError> {
    let mut v = serde_json::to_value(a).map_err(|e| StoreError::Write(e.to_string()))?;
    v["agent_id"] = Value::String(a.id.to_string());
    Ok(v)
}

pub(super) fn agent_from_row(mut v: Value) -> Result<AgentRecord, StoreError> {
    if let Some(obj) = v.as_object_mut() {
        obj.remove("id");
        if let Some(id) = obj.remove("agent_id") {
            obj.insert("id".into(), id);
        }
    }
    serde_json::from_value(v).map_err(read_err)
}

impl SurrealStore {
    /// The checkpoint: a new generation of chunks (full) or more chunks of the current one.
    pub(super) async fn write_checkpoint(
        &self,
        agents: &[AgentRecord],
        seq: u64,
        full: bool,
    ) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        let (gen, first, rows, seq) = {
            let i = self.index.lock();
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
            let mut i = self.index.lock();
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

    /// The queryable copy of the agents, and the mark that it is complete.
    pub(super) async fn write_mirror(
        &self,
        agents: &[AgentRecord],
        complete_at: Option<u64>,
    ) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        if !agents.is_empty() {
            let loaded = self.index.lock().mirrored.is_some();
            if !loaded {
                let mut r = self
                    .read("SELECT VALUE agent_id FROM agent", json!({}))
                    .await?;
                let ids: Vec<Value> = r.take(0).map_err(read_err)?;
                let ids = ids
                    .iter()
                    .filter_map(|v| v.as_str().and_then(|s| AgentId::new(s).ok()))
                    .collect();
                self.index.lock().mirrored = Some(ids);
            }
        }
        let (fresh, known): (Vec<&AgentRecord>, Vec<&AgentRecord>) = {
            let index = self.index.lock();
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
            let mut index = self.index.lock();
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
}
