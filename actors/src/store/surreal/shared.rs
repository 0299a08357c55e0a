//! The log several writers share (the nodes of a cluster): one gapless sequence, numbered at
//! commit.
//!
//! Each append reads the log's head (`meta:log.last_seq`), numbers its events from the next
//! seq, and commits, in one transaction, the segment and the new head, after checking that the
//! head it read is still the head. Every append writes `meta:log`, and two writes of one key
//! conflict under snapshot isolation (SurrealKV, TiKV), so of two appends that read the same
//! head exactly one commits; the other is refused whole and numbers again from the new head.
//! A reader that sees the head at `n` therefore sees every segment up to `n`: no seq is
//! skipped, none is used twice, and a batch is never split.
//!
//! A batch carries its writer's id (`node/first-local-seq`): an append whose outcome was
//! unknown (a lost connection during commit) first looks for its batch, so a retry lands once.

use std::sync::Arc;

use serde_json::{json, Value};
use tracing::debug;

use super::io::read_err;
use super::{SegMeta, StoreError, SurrealStore};
use crate::model::Event;

/// A batch of one writer: what makes a retried append land once.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BatchId {
    /// The writer (a node's id).
    pub node: String,
    /// A number the writer never gives another batch (its own seq of the batch's first event).
    pub first: u64,
}

impl BatchId {
    fn key(&self) -> String {
        format!("{}/{}", self.node, self.first)
    }
}

/// What one append took.
#[derive(Debug, Clone)]
pub struct Appended {
    /// The events as stored: the batch's, in order, with their seqs in the shared log.
    pub events: Vec<Arc<Event>>,
    /// Attempts that lost the head to another writer first.
    pub conflicts: u32,
}

/// Attempts of one append before it gives up (others kept winning the head, or the store kept
/// failing); the caller retries later with the same [`BatchId`].
const MAX_ATTEMPTS: u32 = 200;

fn numbered(events: &[Arc<Event>], first: u64) -> Vec<Arc<Event>> {
    (first..)
        .zip(events)
        .map(|(seq, e)| {
            let mut e = Event::clone(e);
            e.seq = seq;
            Arc::new(e)
        })
        .collect()
}

impl SurrealStore {
    /// Appends `events` (one writer's, in its order; their own seqs are ignored) to the shared
    /// log as one segment, numbered from the head at commit. With `again` (the caller sent
    /// this batch before and does not know whether it landed), a batch that already landed is
    /// not written again: its stored numbering is returned.
    pub async fn append_shared(
        &self,
        batch: &BatchId,
        events: &[Arc<Event>],
        again: bool,
    ) -> Result<Appended, StoreError> {
        let key = batch.key();
        let mut conflicts = 0;
        if events.is_empty() {
            return Ok(Appended {
                events: Vec::new(),
                conflicts,
            });
        }
        let mut last_error = StoreError::Write("no attempt made".into());
        for attempt in 0..MAX_ATTEMPTS {
            if attempt > 0 || again {
                if let Some(first) = self.landed(&key).await? {
                    return Ok(Appended {
                        events: numbered(events, first),
                        conflicts,
                    });
                }
            }
            if attempt > 0 {
                // Spread the writers that lost: the next try starts from a fresh head.
                let pause = rand::random::<u64>() % (1 + u64::from(attempt.min(10)));
                tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
            }
            let head = self.shared_head().await?;
            let stored = numbered(events, head + 1);
            let last = head + stored.len() as u64;
            let events_json =
                serde_json::to_string(&stored).map_err(|e| StoreError::Write(e.to_string()))?;
            let newest_at_ms = stored.last().map_or(0, |e| e.at.timestamp_millis());
            let segment = json!({
                "first_seq": head + 1,
                "last_seq": last,
                "newest_at_ms": newest_at_ms,
                "events_json": events_json,
                "batch": key,
            });
            let r = self
                .write(
                    "BEGIN TRANSACTION;
                     LET $head = (SELECT VALUE last_seq FROM ONLY meta:log) ?? 0;
                     IF $head != $seen { THROW 'the log moved on' };
                     UPSERT meta:log SET last_seq = $last RETURN NONE;
                     CREATE type::record('segment', $last) CONTENT $segment RETURN NONE;
                     COMMIT TRANSACTION;",
                    json!({ "seen": head, "last": last, "segment": segment }),
                )
                .await;
            match r {
                Ok(_) => {
                    let mut index = self.index.lock();
                    index.segments.insert(
                        last,
                        SegMeta {
                            first_seq: head + 1,
                            newest_at_ms,
                        },
                    );
                    index.last_seq = index.last_seq.max(last);
                    return Ok(Appended {
                        events: stored,
                        conflicts,
                    });
                }
                Err(e @ StoreError::Fenced(_)) => return Err(e),
                // Another writer took the head first: nothing of this one was written.
                Err(StoreError::Write(e)) => {
                    conflicts += 1;
                    debug!(batch = %key, attempt, error = %e, "lost the log's head; numbering again");
                    last_error = StoreError::Write(e);
                }
                // It may have landed: the next attempt looks first.
                Err(e) => last_error = e,
            }
        }
        Err(last_error)
    }

    /// The shared log's head: the last seq any writer committed.
    pub async fn shared_head(&self) -> Result<u64, StoreError> {
        let mut r = self
            .read("SELECT VALUE last_seq FROM ONLY meta:log", json!({}))
            .await?;
        let v: Option<u64> = r.take(0).map_err(read_err)?;
        Ok(v.unwrap_or(0))
    }

    /// Events of the shared log with `seq >= from`, in order, at most about `limit` (whole
    /// segments), whoever wrote them.
    pub async fn read_shared(&self, from: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        let mut r = self
            .read(
                "SELECT last_seq, events_json FROM segment WHERE last_seq >= $from
                 ORDER BY last_seq LIMIT $n",
                json!({ "from": from, "n": limit.max(1) }),
            )
            .await?;
        let rows: Vec<Value> = r.take(0).map_err(read_err)?;
        let mut out = Vec::new();
        for row in rows {
            let text = row["events_json"].as_str().ok_or_else(|| {
                StoreError::Read(format!("segment {} has no events", row["last_seq"]))
            })?;
            let events: Vec<Event> = serde_json::from_str(text).map_err(read_err)?;
            out.extend(events.into_iter().filter(|e| e.seq >= from));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// The first seq of `batch`, if it landed.
    async fn landed(&self, batch: &str) -> Result<Option<u64>, StoreError> {
        let mut r = self
            .read(
                "SELECT VALUE first_seq FROM segment WHERE batch = $b LIMIT 1",
                json!({ "b": batch }),
            )
            .await?;
        let v: Vec<u64> = r.take(0).map_err(read_err)?;
        Ok(v.first().copied())
    }
}
