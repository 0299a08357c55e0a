//! The keeper: one node at a time writes the cluster's checkpoint of the fleet's view and
//! trims the shared log under the retention (`docs/cluster.md`, "Checkpoints and retention").
//!
//! Every node keeps the same view (it applies the same log), so any node can write the
//! checkpoint; the role only keeps two from writing at once. A node takes it when nobody holds
//! it or its holder is dead to this node's watch (`SurrealStore::claim_keeper`), and writes
//! under it, fenced, until a write is refused: another node took it, judging this one dead.
//! Each round writes the agents changed since the stored checkpoint (all of them when the
//! incremental rows would make a start read more than twice the fleet), then drops the
//! segments the retention allows, none after the checkpoint.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::node::Node;
use crate::rules::writes::checkpoint_is_full;
use crate::store::{KeeperClaim, Keeping, Retention, StoreError, SurrealStore};

/// What the keeper does and how often.
pub(crate) struct KeeperConfig {
    /// How often the checkpoint is written and the log trimmed.
    pub(crate) every: Duration,
    /// The lease: the role is checked every quarter of it, and given up when it could not be
    /// checked for a whole one.
    pub(crate) lease: Duration,
    pub(crate) retention: Retention,
    /// How long an agent that left stays in the view (every node drops them on its own
    /// clock, every `every`); `None` keeps them.
    pub(crate) left_ttl: Option<Duration>,
}

/// Holds the role when it can, for ever: checks it every quarter lease (saying in `duty`
/// whether this node holds it, which is when its sinks deliver), and writes the checkpoint
/// and trims the log every `every` while it does.
pub(crate) async fn run(
    store: Arc<SurrealStore>,
    node: Arc<Node>,
    cfg: KeeperConfig,
    duty: watch::Sender<bool>,
) {
    let tick = (cfg.lease / 4)
        .min(cfg.every)
        .max(Duration::from_millis(50));
    let mut keeping: Option<Keeping> = None;
    let mut confirmed = Instant::now();
    let mut kept_at: Option<Instant> = None;
    let mut failing = false;
    // The view dropped agents the stored checkpoint may still hold: the next one is full.
    let mut purged = false;
    let mut purged_at: Option<Instant> = None;
    // The first check at once: until it, this node does not know who keeps.
    let mut ticks = tokio::time::interval(tick);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match hold_role(&store, &node, &mut keeping).await {
            Ok(()) => confirmed = Instant::now(),
            Err(e) => debug!(error = %e, "the keeper's role could not be checked"),
        }
        // Unknown for a whole lease: another node may have taken it meanwhile.
        let mine = keeping.is_some() && confirmed.elapsed() < cfg.lease;
        duty.send_if_modified(|d| std::mem::replace(d, mine) != mine);
        if purged_at.is_none_or(|t| t.elapsed() >= cfg.every) {
            purged_at = Some(Instant::now());
            purged |= purge_left(&node, cfg.left_ttl);
        }
        let Some(k) = keeping.as_mut() else {
            kept_at = None;
            continue;
        };
        if kept_at.is_some_and(|t| t.elapsed() < cfg.every) {
            continue;
        }
        kept_at = Some(Instant::now());
        match keep(&store, &node, k, &cfg.retention, purged).await {
            Ok(()) => {
                purged = false;
                if failing {
                    info!("the fleet's checkpoint is written again");
                    failing = false;
                }
            }
            Err(e) => {
                // Refused by the keeper's fence, or failed, perhaps after a part was written:
                // the role and the stored checkpoint are read again next tick.
                keeping = None;
                if !failing {
                    warn!(error = %e, "the fleet's checkpoint or the log's retention failed; trying again");
                    failing = true;
                }
            }
        }
    }
}

/// Takes the role if it is free, or checks that this node still holds it.
async fn hold_role(
    store: &SurrealStore,
    node: &Node,
    keeping: &mut Option<Keeping>,
) -> Result<(), StoreError> {
    match keeping {
        None => match store.claim_keeper(node.me(), &node.dead()).await? {
            KeeperClaim::Mine(k) => {
                info!(
                    seq = k.seq,
                    "this node keeps the fleet's checkpoint and delivers the sinks"
                );
                node.set_keeper(Some(node.me().clone()));
                *keeping = Some(k);
            }
            KeeperClaim::HeldBy(other) => node.set_keeper(other.map(Arc::from)),
        },
        Some(k) => {
            if !store.still_keeper(k).await? {
                info!("another node keeps the fleet's checkpoint now");
                node.set_keeper(None);
                *keeping = None;
            }
        }
    }
    Ok(())
}

/// Drops from the view the agents that left more than `ttl` ago; returns whether any was.
fn purge_left(node: &Node, ttl: Option<Duration>) -> bool {
    let Some(cutoff) = ttl
        .and_then(|ttl| chrono::Duration::from_std(ttl).ok())
        .map(|ttl| chrono::Utc::now() - ttl)
    else {
        return false;
    };
    let gone = node.purge_left(cutoff);
    if gone > 0 {
        info!(agents = gone, "agents that left long ago were dropped");
    }
    gone > 0
}

/// Writes the checkpoint (whole after `purged`: it may hold agents the view dropped) and
/// trims the log.
async fn keep(
    store: &SurrealStore,
    node: &Node,
    k: &mut Keeping,
    retention: &Retention,
    purged: bool,
) -> Result<(), StoreError> {
    let stored = (k.gen, k.rows);
    let (seq, rows, full) = node.checkpoint_rows(k.seq, |changed, fleet| {
        checkpoint_is_full(stored.0 == 0 || purged, Some(stored.1), changed, fleet)
    });
    if seq > k.seq || purged {
        store.write_fleet(k, &rows, seq, full).await?;
        if purged {
            info!(
                seq,
                agents = rows.len(),
                "the fleet's checkpoint was written whole, without the agents that left"
            );
        }
    }
    let oldest = store.retain_shared(k, retention).await?;
    debug!(checkpoint = k.seq, ?oldest, "the fleet's checkpoint kept");
    Ok(())
}
