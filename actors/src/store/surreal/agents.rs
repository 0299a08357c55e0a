//! The agents in the store: checkpoints of the registry's live view (chunks of records by
//! generation, `chunks`) and the queryable copy (the mirror).

use serde_json::{json, Value};
use tracing::debug;

use super::chunks::{Guard, Stored, SNAPSHOT};
use super::{read_err, SurrealStore, MIRROR_CHUNK};
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
        let stored = {
            let i = self.index.lock();
            if i.legacy && !full {
                return Err(StoreError::Write(
                    "the first checkpoint of a store in the old layout must be full".into(),
                ));
            }
            Stored {
                seq: i.checkpoint_seq,
                gen: i.gen,
                chunks: i.chunks,
                rows: i.rows,
            }
        };
        let now = self
            .write_chunks(&SNAPSHOT, &Guard::NONE, stored, agents, seq, full)
            .await?;
        let mut i = self.index.lock();
        i.checkpoint_seq = now.seq;
        i.gen = now.gen;
        i.chunks = now.chunks;
        i.rows = now.rows;
        i.legacy = false;
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
