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

use tracing::{debug, info, warn};

use super::node::Node;
use crate::rules::writes::checkpoint_is_full;
use crate::store::{Keeping, Retention, SurrealStore};

/// Keeps the checkpoint and the retention every `every`, for ever, while this node holds the
/// role.
pub(crate) async fn run(
    store: Arc<SurrealStore>,
    node: Arc<Node>,
    every: Duration,
    retention: Retention,
) {
    let mut keeping: Option<Keeping> = None;
    let mut failing = false;
    loop {
        tokio::time::sleep(every).await;
        match round(&store, &node, &mut keeping, &retention).await {
            Ok(()) => {
                if failing {
                    info!("the fleet's checkpoint is written again");
                    failing = false;
                }
            }
            Err(e) => {
                // Refused by the keeper's fence, or failed: find out who keeps next round.
                keeping = None;
                if !failing {
                    warn!(error = %e, "the fleet's checkpoint or the log's retention failed; trying again");
                    failing = true;
                }
            }
        }
    }
}

/// One round: takes the role if it is free, then writes the checkpoint and trims the log.
async fn round(
    store: &SurrealStore,
    node: &Node,
    keeping: &mut Option<Keeping>,
    retention: &Retention,
) -> Result<(), crate::store::StoreError> {
    let k = match keeping {
        Some(k) => k,
        None => match store.claim_keeper(node.me(), &node.dead()).await? {
            Some(k) => {
                info!(seq = k.seq, "this node keeps the fleet's checkpoint");
                keeping.insert(k)
            }
            None => return Ok(()),
        },
    };
    let stored = (k.gen, k.rows);
    let (seq, rows, full) = node.checkpoint_rows(k.seq, |changed, fleet| {
        checkpoint_is_full(stored.0 == 0, Some(stored.1), changed, fleet)
    });
    if seq > k.seq {
        store.write_fleet(k, &rows, seq, full).await?;
    }
    let oldest = store.retain_shared(k, retention).await?;
    debug!(checkpoint = k.seq, ?oldest, "the fleet's checkpoint kept");
    Ok(())
}
