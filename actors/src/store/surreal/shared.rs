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
//!
//! **Ownership.** A node's append ([`SurrealStore::append_owned`]) also keeps `owner:<agent>`
//! `{node}`: a `registered` event claims its agent for the writer, in the same transaction,
//! and any other event about an agent another node has claimed is left out of the batch (the
//! writer lost the agent to a takeover while the event was on its way). The owners are read
//! after the head and only ever written by appends, so an append that commits — the head it
//! read still the head — decided on owners nobody had changed: no event of a node that no
//! longer owns its agent is ever in the log.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::{json, Value};
use tracing::debug;

use super::io::read_err;
use super::nodes::Adoption;
use super::{StoreError, SurrealStore};
use crate::model::{AgentId, Event, EventBody};

/// A batch of one writer: what makes a retried append land once.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BatchId {
    /// The writer (a node's id, with the epoch of its hold).
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
#[derive(Debug, Clone, Default)]
pub struct Appended {
    /// The events as stored: the batch's, in order, with their seqs in the shared log.
    pub events: Vec<Arc<Event>>,
    /// Attempts that lost the head to another writer first.
    pub conflicts: u32,
    /// Agents whose events were left out: another node owns them now (it registered them
    /// at or before `head`).
    pub disowned: Vec<AgentId>,
    /// The head the append numbered from (its events follow it).
    pub head: u64,
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

/// The agents a batch claims (its `registered` events) and those whose other events need an
/// owner's consent (not registered earlier in the batch), in first-seen order.
fn claims(events: &[Arc<Event>]) -> (Vec<String>, Vec<String>) {
    let mut claimed = Vec::new();
    let mut seen = HashSet::new();
    let mut checked = Vec::new();
    for e in events {
        let Some(id) = &e.agent else { continue };
        let registered = matches!(e.body, EventBody::Registered { .. });
        if registered && seen.insert(id.as_str()) {
            claimed.push(id.as_str().to_string());
        }
        if !registered && !seen.contains(id.as_str()) && !checked.iter().any(|c| c == id.as_str()) {
            checked.push(id.as_str().to_string());
        }
    }
    (claimed, checked)
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
        self.append_as(batch, events, again, None, None).await
    }

    /// [`SurrealStore::append_shared`] for cluster node `node`, keeping the agents' owners
    /// (see the module's documentation): its `registered` events claim their agents, and its
    /// events about agents another node claimed since are left out ([`Appended::disowned`]).
    pub async fn append_owned(
        &self,
        batch: &BatchId,
        events: &[Arc<Event>],
        again: bool,
        node: &str,
    ) -> Result<Appended, StoreError> {
        self.append_as(batch, events, again, Some(node), None).await
    }

    pub(super) async fn append_as(
        &self,
        batch: &BatchId,
        events: &[Arc<Event>],
        again: bool,
        owner: Option<&str>,
        adoption: Option<&Adoption>,
    ) -> Result<Appended, StoreError> {
        let key = batch.key();
        let mut conflicts = 0;
        if events.is_empty() {
            return Ok(Appended::default());
        }
        let (claimed, checked) = match owner {
            Some(_) => claims(events),
            None => (Vec::new(), Vec::new()),
        };
        let mut last_error = StoreError::Write("no attempt made".into());
        // Whether an earlier try may have landed (its outcome is unknown): a refused one did
        // not, so it is not looked for.
        let mut maybe_landed = again;
        for attempt in 0..MAX_ATTEMPTS {
            if maybe_landed {
                if let Some(stored) = self.landed(&key).await? {
                    let disowned = left_out(events, &stored);
                    let head = stored.first().map_or(0, |e| e.seq - 1);
                    return Ok(Appended {
                        events: stored,
                        conflicts,
                        disowned,
                        head,
                    });
                }
            }
            if attempt > 1 {
                // Spread the writers that lost: the next try starts from a fresh head.
                let pause = rand::random::<u64>() % (1 + u64::from(attempt.min(10)));
                tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
            }
            // The first try numbers from the newest head this store saw (its own last append,
            // or its tail's last look): when no other writer appended since, which the commit
            // checks, that saves reading the head. A wrong guess is a refused try.
            let seen = self.head_seen.load(Ordering::SeqCst);
            let head = match (attempt, seen) {
                (0, 1..) => seen - 1,
                _ => self.shared_head().await?,
            };
            if let Some(a) = adoption {
                // Read after the head too: a node that came back, or another adopter, wins.
                if !a.still_due(self).await? {
                    return Err(StoreError::Held(format!(
                        "node {} was taken by another process first",
                        a.node
                    )));
                }
            }
            // Read after the head: if the head is still `head` at commit, these are current.
            let others = match owner {
                Some(me) => self.owned_by_others(&checked, me).await?,
                None => BTreeSet::new(),
            };
            let kept: Vec<Arc<Event>> = events
                .iter()
                .filter(|e| {
                    e.agent
                        .as_ref()
                        .is_none_or(|a| !others.contains(a.as_str()))
                })
                .cloned()
                .collect();
            let disowned: Vec<AgentId> = events
                .iter()
                .filter_map(|e| e.agent.clone())
                .filter(|a| others.contains(a.as_str()))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            if kept.is_empty() {
                return Ok(Appended {
                    events: Vec::new(),
                    conflicts,
                    disowned,
                    head,
                });
            }
            let stored = numbered(&kept, head + 1);
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
                     FOR $a IN $claimed { UPSERT type::record('owner', $a) SET node = $me RETURN NONE; };
                     IF $adopt {
                         LET $taken = (UPDATE type::record('hold', $adopt.key) SET epoch = $adopt.epoch + 1, holder = $adopt.by, released = false
                             WHERE epoch = $adopt.epoch RETURN VALUE epoch);
                         IF array::len($taken) == 0 { THROW 'the node was taken first' };
                         UPSERT type::record('hold_beat', $adopt.key) CONTENT { epoch: $adopt.epoch + 1, beat: 0 } RETURN NONE;
                         UPDATE owner SET node = $me WHERE node = $adopt.node RETURN NONE;
                     };
                     COMMIT TRANSACTION;",
                    json!({
                        "seen": head,
                        "last": last,
                        "segment": segment,
                        "claimed": claimed,
                        "me": owner,
                        "adopt": adoption.map(|a| json!({
                            "key": a.key(),
                            "epoch": a.epoch,
                            "node": a.node,
                            "by": a.by,
                        })),
                    }),
                )
                .await;
            match r {
                Ok(_) => {
                    // (The shared log is read by seq from the store, never through the
                    // single writer's segment index.)
                    self.saw_head(last);
                    return Ok(Appended {
                        events: stored,
                        conflicts,
                        disowned,
                        head,
                    });
                }
                Err(e @ StoreError::Fenced(_)) => return Err(e),
                // Another writer took the head first: nothing of this one was written.
                Err(StoreError::Write(e)) => {
                    maybe_landed = false;
                    conflicts += 1;
                    debug!(batch = %key, attempt, error = %e, "lost the log's head; numbering again");
                    last_error = StoreError::Write(e);
                }
                // It may have landed: the next attempt looks first.
                Err(e) => {
                    maybe_landed = true;
                    last_error = e;
                }
            }
        }
        Err(last_error)
    }

    /// Of `agents`, those another node than `me` owns.
    async fn owned_by_others(
        &self,
        agents: &[String],
        me: &str,
    ) -> Result<BTreeSet<String>, StoreError> {
        if agents.is_empty() {
            return Ok(BTreeSet::new());
        }
        let mut r = self
            .read(
                "SELECT VALUE meta::id(id) FROM $agents.map(|$a| type::record('owner', $a))
                 WHERE node != NONE AND node != $me",
                json!({ "agents": agents, "me": me }),
            )
            .await?;
        let v: Vec<String> = r.take(0).map_err(read_err)?;
        Ok(v.into_iter().collect())
    }

    /// Each agent's owner, as the appends claimed them.
    pub async fn owners(&self) -> Result<Vec<(String, String)>, StoreError> {
        let mut r = self
            .read("SELECT VALUE [meta::id(id), node] FROM owner", json!({}))
            .await?;
        let v: Vec<(String, String)> = r.take(0).map_err(read_err)?;
        Ok(v)
    }

    /// The shared log's head: the last seq any writer committed.
    pub async fn shared_head(&self) -> Result<u64, StoreError> {
        let mut r = self
            .read("SELECT VALUE last_seq FROM ONLY meta:log", json!({}))
            .await?;
        let v: Option<u64> = r.take(0).map_err(read_err)?;
        let head = v.unwrap_or(0);
        self.saw_head(head);
        Ok(head)
    }

    /// Notes a head of the shared log (heads only grow).
    fn saw_head(&self, head: u64) {
        self.head_seen.fetch_max(head + 1, Ordering::SeqCst);
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
            out.extend(segment_events(&row)?.into_iter().filter(|e| e.seq >= from));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Events of the shared log with `seq < before`, newest segments first, at most about
    /// `limit` segments; each segment's events in order.
    pub async fn read_shared_back(
        &self,
        before: u64,
        limit: usize,
    ) -> Result<Vec<Vec<Event>>, StoreError> {
        let mut r = self
            .read(
                "SELECT last_seq, first_seq, events_json FROM segment WHERE first_seq < $before
                 ORDER BY last_seq DESC LIMIT $n",
                json!({ "before": before, "n": limit.max(1) }),
            )
            .await?;
        let rows: Vec<Value> = r.take(0).map_err(read_err)?;
        rows.iter()
            .map(|row| {
                segment_events(row).map(|es| es.into_iter().filter(|e| e.seq < before).collect())
            })
            .collect()
    }

    /// The oldest seq the shared log still holds.
    pub async fn shared_oldest(&self) -> Result<Option<u64>, StoreError> {
        let mut r = self
            .read(
                "SELECT VALUE first_seq FROM segment ORDER BY last_seq LIMIT 1",
                json!({}),
            )
            .await?;
        let v: Vec<u64> = r.take(0).map_err(read_err)?;
        Ok(v.first().copied())
    }

    /// The events of `batch` as stored, if it landed.
    async fn landed(&self, batch: &str) -> Result<Option<Vec<Arc<Event>>>, StoreError> {
        let mut r = self
            .read(
                "SELECT last_seq, events_json FROM segment WHERE batch = $b LIMIT 1",
                json!({ "b": batch }),
            )
            .await?;
        let rows: Vec<Value> = r.take(0).map_err(read_err)?;
        match rows.first() {
            Some(row) => Ok(Some(
                segment_events(row)?.into_iter().map(Arc::new).collect(),
            )),
            None => Ok(None),
        }
    }
}

/// The events of a segment row (`last_seq`, `events_json`).
fn segment_events(row: &Value) -> Result<Vec<Event>, StoreError> {
    let text = row["events_json"]
        .as_str()
        .ok_or_else(|| StoreError::Read(format!("segment {} has no events", row["last_seq"])))?;
    serde_json::from_str(text).map_err(read_err)
}

/// The agents of `sent` none of whose events are in `stored` (left out when it was written).
fn left_out(sent: &[Arc<Event>], stored: &[Arc<Event>]) -> Vec<AgentId> {
    let kept: HashSet<&AgentId> = stored.iter().filter_map(|e| e.agent.as_ref()).collect();
    sent.iter()
        .filter_map(|e| e.agent.as_ref())
        .filter(|a| !kept.contains(a))
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}
