//! The hold: one live process writes a store on a SurrealDB server at a time.
//!
//! Two records per hold, keyed by what is held (`store` for a process alone on the store; one
//! key per node of a cluster, `node-<id>`):
//! - `hold:<key>` `{epoch, holder, released, writes}`: who holds it. Every write of the
//!   holder *writes* it too, in the same transaction, `WHERE epoch = $mine`, and throws when
//!   nothing matched: on SurrealKV and TiKV two writes of one key conflict, so a write of a
//!   process whose hold was taken fails, before or after the taker's commit, and nothing of it
//!   lands (a fence that only reads would not be one: plain reads are not checked).
//! - `hold_beat:<key>` `{epoch, beat}`: the holder's heartbeat, renewed every third of the lease. A
//!   process that finds the store held watches it on its own monotonic clock (never comparing
//!   clocks across machines): a change within one lease means the holder is alive and the
//!   process refuses to start, naming it; no change for a whole lease means the holder is gone
//!   (killed, paused, cut off) and the process takes the store over with a new epoch.
//!
//! A clean close marks the hold released, so the next process takes it at once. A holder whose
//! renewal finds another epoch, or whose write fails and finds another epoch stored, has lost
//! the store: it writes nothing more and says so through [`Hold::lost`].

use std::sync::Weak;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::watch;
use tracing::{error, info, warn};

use super::{Conn, StoreError, SurrealStore};

/// Who holds a store, and for how long a silent holder is trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldOptions {
    /// How long the holder's heartbeat may stay unchanged before another process takes the
    /// store over.
    pub lease: Duration,
    /// Who this process is, for the error another process gets (host, pid, listeners).
    pub holder: String,
    /// What is held: `store` (the whole store, for a process alone on it) or a cluster
    /// node's own key (`node-<id>`).
    pub key: String,
}

/// This process's hold on the store, once taken.
pub(super) struct Hold {
    key: String,
    epoch: u64,
    lost: watch::Sender<Option<String>>,
}

impl Hold {
    /// What is held.
    pub(super) fn key(&self) -> &str {
        &self.key
    }

    /// The epoch every write is fenced with.
    pub(super) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Why this process no longer holds the store, if it does not.
    pub(super) fn lost_reason(&self) -> Option<String> {
        self.lost.borrow().clone()
    }

    /// Records that the store was taken over (the first reason is kept).
    pub(super) fn mark_lost(&self, reason: String) {
        self.lost.send_if_modified(|r| {
            if r.is_some() {
                return false;
            }
            error!(reason = %reason, "this process no longer holds the store: it writes and publishes nothing more");
            *r = Some(reason);
            true
        });
    }

    /// Waits until the hold is lost; returns why.
    pub(super) async fn lost(&self) -> String {
        let mut rx = self.lost.subscribe();
        loop {
            if let Some(r) = rx.borrow_and_update().clone() {
                return r;
            }
            if rx.changed().await.is_err() {
                return "the store was closed".into();
            }
        }
    }
}

/// Times a process looks again after losing a race for the hold to another process.
const MAX_RACES: u32 = 20;

/// The fence appended to a write's statements (inside its transaction).
const FENCE: &str = "LET $vigil_fence = (UPDATE type::record('hold', $vigil_hold) SET writes += 1 WHERE epoch = $vigil_epoch RETURN VALUE epoch);
     IF array::len($vigil_fence) == 0 { THROW 'this process no longer holds the store' };";

/// `sql` as one transaction that also writes the fence; `binds` gets the hold's key and epoch.
pub(super) fn fenced(sql: &str, binds: &mut Value, key: &str, epoch: u64) -> String {
    binds["vigil_hold"] = json!(key);
    binds["vigil_epoch"] = json!(epoch);
    let body = sql.trim();
    let body = body
        .strip_prefix("BEGIN TRANSACTION;")
        .and_then(|b| b.trim_end().strip_suffix("COMMIT TRANSACTION;"))
        .unwrap_or(body)
        .trim();
    let sep = if body.ends_with(';') { "" } else { ";" };
    format!("BEGIN TRANSACTION;\n{body}{sep}\n{FENCE}\nCOMMIT TRANSACTION;")
}

/// What the hold records say.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Seen {
    epoch: u64,
    pub(super) holder: String,
    pub(super) released: bool,
    /// The heartbeat's epoch and count.
    beat: Option<(u64, u64)>,
}

pub(super) async fn look(conn: &Conn, key: &str) -> Result<Option<Seen>, StoreError> {
    let mut r = conn
        .query(
            "SELECT epoch, holder, released FROM ONLY type::record('hold', $k);
             SELECT epoch, beat FROM ONLY type::record('hold_beat', $k);",
            json!({ "k": key }),
        )
        .await
        .map_err(|e| StoreError::Read(e.to_string()))?;
    let store: Option<Value> = r.take(0).map_err(super::read_err)?;
    let beat: Option<Value> = r.take(1).map_err(super::read_err)?;
    Ok(store.map(|s| Seen {
        epoch: s["epoch"].as_u64().unwrap_or(0),
        holder: s["holder"].as_str().unwrap_or("?").to_string(),
        released: s["released"].as_bool() == Some(true),
        beat: beat.map(|b| {
            (
                b["epoch"].as_u64().unwrap_or(0),
                b["beat"].as_u64().unwrap_or(0),
            )
        }),
    }))
}

/// Takes the hold: at once when nobody holds the store or its holder released it, after one
/// lease of silence from a holder that stopped, never from a live one.
pub(super) async fn acquire(conn: &Conn, opts: &HoldOptions) -> Result<Hold, StoreError> {
    for _ in 0..MAX_RACES {
        let epoch = match look(conn, &opts.key).await? {
            None => {
                let created = conn
                    .query(
                        "BEGIN TRANSACTION;
                         CREATE type::record('hold', $k) CONTENT { epoch: 1, holder: $holder, released: false, writes: 0 } RETURN NONE;
                         CREATE type::record('hold_beat', $k) CONTENT { epoch: 1, beat: 0 } RETURN NONE;
                         COMMIT TRANSACTION;",
                        json!({ "holder": opts.holder, "k": opts.key }),
                    )
                    .await;
                match created {
                    Ok(_) => 1,
                    // Another process created it first: look again.
                    Err(StoreError::Write(_)) => continue,
                    Err(e) => return Err(e),
                }
            }
            Some(seen) => {
                if !seen.released {
                    watch_holder(conn, opts, &seen).await?;
                }
                match take_over(conn, opts, seen.epoch).await? {
                    Some(epoch) => {
                        info!(epoch, previous = %seen.holder, released = seen.released, "took the store over");
                        epoch
                    }
                    None => continue, // someone else took it meanwhile: look again
                }
            }
        };
        let (lost, _) = watch::channel(None);
        return Ok(Hold {
            key: opts.key.clone(),
            epoch,
            lost,
        });
    }
    Err(StoreError::Unavailable(format!(
        "could not take the store's hold ({}): other processes kept changing it",
        opts.key
    )))
}

/// Waits one lease on the monotonic clock: returns when the holder stayed silent for all of
/// it, refuses as soon as it shows signs of life.
async fn watch_holder(conn: &Conn, opts: &HoldOptions, first: &Seen) -> Result<(), StoreError> {
    let start = tokio::time::Instant::now();
    let step = (opts.lease / 10).clamp(Duration::from_millis(20), Duration::from_millis(500));
    info!(holder = %first.holder, lease = ?opts.lease, "the store is held; waiting one lease to see whether its holder is alive");
    while start.elapsed() < opts.lease {
        tokio::time::sleep(step).await;
        let now = look(conn, &opts.key).await?;
        match now {
            Some(s) if s.released => return Ok(()),
            Some(s) if s == *first => {}
            Some(s) => {
                return Err(StoreError::Held(format!(
                    "the store is held by a live vigil process ({}); one store belongs to one \
                     process unless the processes run as a cluster ([cluster] node_id)",
                    s.holder
                )))
            }
            None => return Ok(()),
        }
    }
    Ok(())
}

/// A new epoch, if the hold still has `seen_epoch`.
async fn take_over(
    conn: &Conn,
    opts: &HoldOptions,
    seen_epoch: u64,
) -> Result<Option<u64>, StoreError> {
    let epoch = seen_epoch + 1;
    let r = conn
        .query(
            "BEGIN TRANSACTION;
             LET $taken = (UPDATE type::record('hold', $k) SET epoch = $epoch, holder = $holder, released = false
                 WHERE epoch = $seen RETURN VALUE epoch);
             IF array::len($taken) == 0 { THROW 'the hold changed' };
             UPSERT type::record('hold_beat', $k) CONTENT { epoch: $epoch, beat: 0 } RETURN NONE;
             COMMIT TRANSACTION;",
            json!({ "epoch": epoch, "seen": seen_epoch, "holder": opts.holder, "k": opts.key }),
        )
        .await;
    match r {
        Ok(_) => Ok(Some(epoch)),
        Err(StoreError::Write(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Renews the heartbeat every third of the lease until the store is closed or the hold lost.
pub(super) async fn renew(store: Weak<SurrealStore>, lease: Duration) {
    // (A zero lease would make a zero period, which `interval` refuses.)
    let mut tick = tokio::time::interval((lease / 3).max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Taking the hold wrote its first beat: the first renewal is a third of a lease later.
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(store) = store.upgrade() else { return };
        let Some(hold) = store.hold.get() else { return };
        if hold.lost_reason().is_some() {
            return;
        }
        let epoch = hold.epoch();
        let r = store
            .read(
                "UPDATE type::record('hold_beat', $k) SET beat += 1 WHERE epoch = $e RETURN VALUE beat",
                json!({ "e": epoch, "k": hold.key }),
            )
            .await;
        match r.and_then(|mut r| r.take::<Vec<Value>>(0).map_err(super::read_err)) {
            Ok(rows) if rows.is_empty() => {
                hold.mark_lost(format!(
                    "another process took the store over (this one held epoch {epoch})"
                ));
                return;
            }
            Ok(_) => {}
            Err(StoreError::Unavailable(_)) => return, // closed
            Err(e) => warn!(error = %e, "renewing the hold failed; trying again"),
        }
    }
}

/// After a failed write: whether the store still has this process's epoch.
pub(super) async fn check(store: &SurrealStore, hold: &Hold) {
    let r = store
        .read(
            "SELECT VALUE epoch FROM ONLY type::record('hold', $k)",
            json!({ "k": hold.key }),
        )
        .await
        .and_then(|mut r| r.take::<Option<u64>>(0).map_err(super::read_err));
    if let Ok(now) = r {
        if now != Some(hold.epoch()) {
            hold.mark_lost(format!(
                "another process took the store over (this one held epoch {}, the store has {})",
                hold.epoch(),
                now.map_or("none".into(), |e| e.to_string())
            ));
        }
    }
}

/// Marks the hold released (a clean close), so the next process takes it at once.
pub(super) async fn release(conn: &Conn, hold: &Hold) {
    if hold.lost_reason().is_some() {
        return;
    }
    if let Err(e) = conn
        .query(
            "UPDATE type::record('hold', $k) SET released = true WHERE epoch = $e RETURN NONE",
            json!({ "e": hold.epoch(), "k": hold.key }),
        )
        .await
    {
        warn!(error = %e, "releasing the hold failed; the next process waits one lease");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_becomes_one_transaction_with_the_fence_last() {
        let mut b = json!({"k": 1});
        let sql = fenced(
            "BEGIN TRANSACTION;\n CREATE a:1 RETURN NONE;\n COMMIT TRANSACTION;",
            &mut b,
            "store",
            7,
        );
        assert_eq!(b["vigil_epoch"], 7);
        assert!(sql.starts_with("BEGIN TRANSACTION;\nCREATE a:1 RETURN NONE;\nLET $vigil_fence"));
        assert!(sql.ends_with("COMMIT TRANSACTION;"));
        assert_eq!(sql.matches("BEGIN TRANSACTION;").count(), 1);
        let sql = fenced("UPSERT meta:x SET v = 1 RETURN NONE", &mut b, "store", 7);
        assert!(sql.contains("RETURN NONE;\nLET $vigil_fence"));
    }
}
