//! A cluster's checkpoint of the fleet and the trimming of its shared log, both written by one
//! node at a time: the keeper.
//!
//! - `fleet_chunk:<gen * 1e6 + n>` and `meta:fleet`: the rows of the fleet's view (each
//!   agent's record and owner), in the layout of a single node's checkpoint (`super::chunks`):
//!   chunks by generation, the count written last, a restore reading only what it counts (one
//!   that finds a chunk gone, replaced by a full checkpoint meanwhile, reads again).
//! - `meta:keeper` `{node, epoch}`: the keeper. A node takes the role when nobody holds it, when
//!   an earlier run of itself held it, or when its holder is dead to it (its lease lapsed, as
//!   the node's own watch judges it). Every write of the keeper writes `meta:keeper` too,
//!   `WHERE` it is still the keeper: two writes of one key conflict, so once another node took
//!   the role, the old keeper's writes are refused whole.
//!
//! Retention drops the shared log's oldest segments as [`Retention::drops`] allows, never one
//! after the checkpoint's seq: a node that starts reads the checkpoint and the log after it.

use chrono::{DateTime, TimeZone, Utc};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use tracing::debug;

use super::chunks::{Guard, Stored, FLEET};
use super::io::read_err;
use super::{StoreError, SurrealStore};
use crate::store::Retention;

/// The keeper's fence, first in each of its writes (inside the write's transaction).
const KEEPER_FENCE: &str =
    "LET $vigil_kept = (UPDATE type::record('meta', 'keeper') SET writes += 1
         WHERE node = $keeper.node AND epoch = $keeper.epoch RETURN VALUE epoch);
     IF array::len($vigil_kept) == 0 { THROW 'another node keeps the checkpoints now' };";

/// Segments looked at per page when trimming the shared log.
const RETAIN_PAGE: usize = 1000;

/// Times a restore reads the checkpoint again when it changed under it.
const READ_ATTEMPTS: u32 = 5;

/// What a keeper knows of the checkpoint it writes: the one stored, and whose role it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keeping {
    /// The keeper (this node) and the epoch of its hold.
    pub node: String,
    /// The epoch of the keeper's hold when it took the role.
    pub epoch: u64,
    /// The seq the stored checkpoint reflects (0: none yet).
    pub seq: u64,
    /// Its generation.
    pub gen: u64,
    /// Its chunks in that generation.
    pub chunks: u64,
    /// The rows those chunks hold, superseded ones included.
    pub rows: usize,
}

/// What a claim of the keeper's role found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeeperClaim {
    /// The claiming node keeps, with the stored checkpoint.
    Mine(Keeping),
    /// Another node keeps (`None`: nobody, the claim's write having failed).
    HeldBy(Option<String>),
}

impl KeeperClaim {
    /// The role, when the claiming node has it.
    pub fn mine(self) -> Option<Keeping> {
        match self {
            KeeperClaim::Mine(k) => Some(k),
            KeeperClaim::HeldBy(_) => None,
        }
    }
}

impl Keeping {
    fn fence(&self) -> Value {
        json!({ "node": self.node, "epoch": self.epoch })
    }
}

impl SurrealStore {
    /// Takes the keeper's role for node `me` (this store's holder) if nobody holds it, an
    /// earlier run of `me` did, or its holder is among `dead`; returns the role and the stored
    /// checkpoint when `me` has it, or the node that keeps.
    pub async fn claim_keeper(&self, me: &str, dead: &[String]) -> Result<KeeperClaim, StoreError> {
        let epoch = self.hold_epoch().unwrap_or(0);
        // Read first: while another live node keeps, nothing is written (every node looks
        // every quarter lease).
        let mut r = self
            .read("SELECT node FROM ONLY meta:keeper", json!({}))
            .await?;
        let holder = r
            .take::<Option<Value>>(0)
            .map_err(read_err)?
            .and_then(|k| k["node"].as_str().map(str::to_string));
        let free = holder.as_ref().is_none_or(|h| h == me || dead.contains(h));
        if free {
            // Not the node's own fence: its appends write its hold, and this write beside
            // them would conflict with them. (A node that knows it lost its hold is refused.)
            self.write_unfenced(
                "BEGIN TRANSACTION;
                 LET $k = (SELECT node, epoch FROM ONLY meta:keeper);
                 IF $k = NONE OR $k.node = $me OR $k.node IN $dead {
                     UPSERT meta:keeper SET node = $me, epoch = $epoch, writes = 0 RETURN NONE;
                 };
                 COMMIT TRANSACTION;",
                json!({ "me": me, "epoch": epoch, "dead": dead }),
            )
            .await?;
        }
        let mut r = self
            .read(
                "SELECT node, epoch FROM ONLY meta:keeper;
                 SELECT seq, gen, chunks, rows FROM ONLY meta:fleet;",
                json!({}),
            )
            .await?;
        let keeper: Option<Value> = r.take(0).map_err(read_err)?;
        let stored = r
            .take::<Option<Value>>(1)
            .map_err(read_err)?
            .unwrap_or_default();
        let keeper = keeper.unwrap_or_default();
        if keeper["node"].as_str() != Some(me) || keeper["epoch"].as_u64() != Some(epoch) {
            return Ok(KeeperClaim::HeldBy(
                keeper["node"].as_str().map(str::to_string),
            ));
        }
        Ok(KeeperClaim::Mine(Keeping {
            node: me.to_string(),
            epoch,
            seq: stored["seq"].as_u64().unwrap_or(0),
            gen: stored["gen"].as_u64().unwrap_or(0),
            chunks: stored["chunks"].as_u64().unwrap_or(0),
            rows: stored["rows"].as_u64().unwrap_or(0) as usize,
        }))
    }

    /// Whether `keeping` still names the keeper.
    pub async fn still_keeper(&self, keeping: &Keeping) -> Result<bool, StoreError> {
        let mut r = self
            .read("SELECT node, epoch FROM ONLY meta:keeper", json!({}))
            .await?;
        let k = r
            .take::<Option<Value>>(0)
            .map_err(read_err)?
            .unwrap_or_default();
        Ok(k["node"].as_str() == Some(keeping.node.as_str())
            && k["epoch"].as_u64() == Some(keeping.epoch))
    }

    /// Writes the fleet's checkpoint as of `seq`: with `full`, `rows` is every agent and
    /// replaces what the checkpoint held; without, they are the agents changed since
    /// `keeping.seq`, laid over it. Refused when `keeping` no longer names the keeper.
    pub async fn write_fleet<T: Serialize>(
        &self,
        keeping: &mut Keeping,
        rows: &[T],
        seq: u64,
        full: bool,
    ) -> Result<(), StoreError> {
        let guard = Guard {
            sql: KEEPER_FENCE,
            binds: json!({ "keeper": keeping.fence() }),
        };
        let stored = Stored {
            seq: keeping.seq,
            gen: keeping.gen,
            chunks: keeping.chunks,
            rows: keeping.rows,
        };
        let now = self
            .write_chunks(&FLEET, &guard, stored, rows, seq, full)
            .await?;
        (keeping.seq, keeping.gen, keeping.chunks, keeping.rows) =
            (now.seq, now.gen, now.chunks, now.rows);
        Ok(())
    }

    /// The fleet's checkpoint: its seq and its rows in the order written (an agent's last row
    /// is its newest), or `None` when none was written.
    pub async fn fleet_checkpoint<T: DeserializeOwned>(
        &self,
    ) -> Result<Option<(u64, Vec<T>)>, StoreError> {
        'attempt: for _ in 0..READ_ATTEMPTS {
            let mut r = self
                .read("SELECT seq, gen, chunks FROM ONLY meta:fleet", json!({}))
                .await?;
            let Some(meta) = r.take::<Option<Value>>(0).map_err(read_err)? else {
                return Ok(None);
            };
            let (seq, gen, chunks) = (
                meta["seq"].as_u64().unwrap_or(0),
                meta["gen"].as_u64().unwrap_or(0),
                meta["chunks"].as_u64().unwrap_or(0),
            );
            let mut rows = Vec::new();
            for n in 0..chunks {
                let Some(chunk) = self.read_chunk(&FLEET, gen, n).await? else {
                    // A full checkpoint replaced this generation meanwhile.
                    debug!(
                        gen,
                        n, "a checkpoint chunk went while it was read; reading again"
                    );
                    continue 'attempt;
                };
                rows.extend(chunk);
            }
            return Ok(Some((seq, rows)));
        }
        Err(StoreError::Read(
            "the fleet's checkpoint kept changing while it was read".into(),
        ))
    }

    /// Node `me` (this store's holder) delivers sink `name` from now on: the sink's state is
    /// saved under its lease ([`SurrealStore::put_sink_state_leased`]), so the node that
    /// delivered it before has its saves refused.
    pub async fn claim_sink(&self, name: &str, me: &str) -> Result<(), StoreError> {
        self.write_unfenced(
            "UPSERT type::record('sink_lease', $n) CONTENT { node: $me, epoch: $e, writes: 0 }
                 RETURN NONE",
            json!({ "n": name, "me": me, "e": self.hold_epoch().unwrap_or(0) }),
        )
        .await?;
        Ok(())
    }

    /// Saves a sink's state under `key` (`<sink>` or `<sink>/…`) if node `me` (this store's
    /// holder) still holds the sink's lease, in one transaction with a write of the lease.
    pub async fn put_sink_state_leased(
        &self,
        key: &str,
        value: &str,
        me: &str,
    ) -> Result<(), StoreError> {
        let name = key.split('/').next().unwrap_or(key);
        // Not the node's own fence: the registry's appends write the node's hold, and a
        // sink's save beside them would conflict with them (see `put_sink_state`).
        self.write_unfenced(
            "BEGIN TRANSACTION;
             LET $l = (UPDATE type::record('sink_lease', $n) SET writes += 1
                 WHERE node = $me AND epoch = $e RETURN VALUE epoch);
             IF array::len($l) == 0 { THROW 'another node delivers this sink now' };
             UPSERT type::record('cursor', $k) CONTENT { v: $v } RETURN NONE;
             COMMIT TRANSACTION;",
            json!({
                "n": name,
                "me": me,
                "e": self.hold_epoch().unwrap_or(0),
                "k": key,
                "v": value,
            }),
        )
        .await?;
        Ok(())
    }

    /// Drops the shared log's oldest segments as `retention` allows, none after the
    /// checkpoint `keeping` wrote; returns the oldest seq still held.
    pub async fn retain_shared(
        &self,
        keeping: &Keeping,
        retention: &Retention,
    ) -> Result<Option<u64>, StoreError> {
        if retention.is_unbounded() || keeping.seq == 0 {
            return self.shared_oldest().await;
        }
        let head = self.shared_head().await?;
        let now = Utc::now();
        loop {
            let mut r = self
                .read(
                    "SELECT last_seq, newest_at_ms FROM segment ORDER BY last_seq LIMIT $n",
                    json!({ "n": RETAIN_PAGE }),
                )
                .await?;
            let page: Vec<Value> = r.take(0).map_err(read_err)?;
            let mut upto = None;
            for seg in &page {
                let Some(last) = seg["last_seq"].as_u64() else {
                    break;
                };
                let newest: Option<DateTime<Utc>> = seg["newest_at_ms"]
                    .as_i64()
                    .and_then(|ms| Utc.timestamp_millis_opt(ms).single());
                if !retention.drops(last, newest, head, keeping.seq, now) {
                    break;
                }
                upto = Some(last);
            }
            let Some(upto) = upto else { break };
            self.write(
                &format!("{KEEPER_FENCE}\nDELETE segment WHERE last_seq <= $upto RETURN NONE;"),
                json!({ "keeper": keeping.fence(), "upto": upto }),
            )
            .await?;
            debug!(upto, "the shared log's old segments dropped");
            if page.len() < RETAIN_PAGE
                || page.last().and_then(|s| s["last_seq"].as_u64()) != Some(upto)
            {
                break;
            }
        }
        self.shared_oldest().await
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::model::Status;
    use crate::store::{BatchId, Store, SurrealOptions};

    /// A store whose shared log holds segments 1, 2, 3 and 4, one event each.
    async fn four_segments() -> std::sync::Arc<SurrealStore> {
        let s = SurrealStore::open("mem://", SurrealOptions::default())
            .await
            .expect("open");
        for i in 1..=4 {
            let e = crate::store::conformance::event(i, "a", Status::Online, Status::Degraded);
            let batch = BatchId {
                node: "w".into(),
                first: i,
            };
            s.append_shared(&batch, &[e], false).await.expect("append");
        }
        s
    }

    #[tokio::test]
    async fn one_keeper_writes_the_checkpoint_and_trims_the_log_only_behind_it() {
        let s = four_segments().await;
        let mut k1 = s
            .claim_keeper("n1", &[])
            .await
            .unwrap()
            .mine()
            .expect("n1 keeps");
        assert_eq!((k1.seq, k1.gen), (0, 0));
        assert_eq!(
            s.claim_keeper("n2", &[]).await.unwrap(),
            KeeperClaim::HeldBy(Some("n1".into())),
            "n1 is alive"
        );
        assert_eq!(s.fleet_checkpoint::<Value>().await.unwrap(), None);

        let rows = vec![json!({"id": "x", "v": 1}), json!({"id": "y", "v": 1})];
        s.write_fleet(&mut k1, &rows, 2, true).await.unwrap();
        assert_eq!(
            s.fleet_checkpoint::<Value>().await.unwrap(),
            Some((2, rows.clone()))
        );
        // Keep the newest event: segments up to the checkpoint's seq go, no further.
        let keep_one = Retention {
            max_age: None,
            max_events: Some(1),
        };
        assert_eq!(s.retain_shared(&k1, &keep_one).await.unwrap(), Some(3));
        // An incremental checkpoint lays its rows over the stored ones.
        let y2 = json!({"id": "y", "v": 2});
        s.write_fleet(&mut k1, std::slice::from_ref(&y2), 3, false)
            .await
            .unwrap();
        let (seq, stored) = s.fleet_checkpoint::<Value>().await.unwrap().unwrap();
        assert_eq!(
            (seq, stored),
            (3, vec![rows[0].clone(), rows[1].clone(), y2])
        );
        assert_eq!(s.retain_shared(&k1, &keep_one).await.unwrap(), Some(4));

        // n2 finds n1 dead and takes the role: n1's writes are refused from then on.
        let mut k2 = s
            .claim_keeper("n2", &["n1".to_string()])
            .await
            .unwrap()
            .mine()
            .expect("n2 keeps");
        assert_eq!((k2.seq, k2.chunks, k2.rows), (3, 2, 3));
        assert!(s.still_keeper(&k2).await.unwrap());
        assert!(!s.still_keeper(&k1).await.unwrap());
        // A full checkpoint replaces the generation and deletes the old one.
        let fresh = vec![json!({"id": "x", "v": 3})];
        s.write_fleet(&mut k2, &fresh, 4, true).await.unwrap();
        assert_eq!(
            s.fleet_checkpoint::<Value>().await.unwrap(),
            Some((4, fresh))
        );
        let mut r = s
            .read("SELECT VALUE gen FROM fleet_chunk", json!({}))
            .await
            .unwrap();
        let gens: Vec<u64> = r.take(0).unwrap();
        assert_eq!(gens, vec![2], "only the new generation is kept");
        // (Last: the next write after a refused one reopens an embedded store, and `mem://`
        // opens empty.)
        let late = s.write_fleet(&mut k1, &rows, 5, false).await;
        assert!(late.is_err(), "the old keeper wrote: {late:?}");
    }

    #[tokio::test]
    async fn a_sinks_state_is_saved_only_by_the_node_that_claimed_it_last() {
        let s = SurrealStore::open("mem://", SurrealOptions::default())
            .await
            .expect("open");
        s.claim_sink("hook", "n1").await.unwrap();
        s.put_sink_state_leased("hook", "1", "n1").await.unwrap();
        s.claim_sink("hook", "n2").await.unwrap();
        s.put_sink_state_leased("hook/dead", "[]", "n2")
            .await
            .unwrap();
        let stale = s.put_sink_state_leased("hook", "9", "n1").await;
        assert!(stale.is_err(), "n1 saved after n2 claimed the sink");
        assert_eq!(s.sink_state("hook").await.unwrap().as_deref(), Some("1"));
        assert_eq!(
            s.sink_state("hook/dead").await.unwrap().as_deref(),
            Some("[]")
        );
    }
}
