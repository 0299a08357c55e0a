//! Membership: each node watches the others' leases on its own monotonic clock, and adopts
//! the agents of a node whose lease lapsed (`docs/cluster.md`, "Adoption").
//!
//! A lease is judged by when this node last saw it change (its epoch, its beat, its release),
//! never by comparing clocks across machines. A node silent for a whole lease, or released (it
//! stopped cleanly), that still owns agents is adopted: the first node to write the adoption
//! wins it (`SurrealStore::adopt`), and the others' attempts are refused. The adopter's tail
//! then reads its own `node_adopted` alert and supervises the dead node's agents as after a
//! restart, each with its restart grace from then on.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::node::Node;
use crate::model::{Event, EventBody, Severity};
use crate::store::{Adoption, BatchId, StoreError, SurrealStore};

/// The issue of the alert an adoption records.
pub const NODE_ADOPTED: &str = "node_adopted";

/// What this node last saw of another's lease, and since when (on its own clock).
struct Watched {
    lease: (u64, u64, bool),
    since: Instant,
}

/// Watches the other nodes' leases every quarter lease, for ever, and adopts the agents of
/// the dead ones.
pub(crate) async fn watch(store: Arc<SurrealStore>, node: Arc<Node>, lease: Duration) {
    let me = node.me().clone();
    let writer = format!("{me}.{}.adoptions", store.hold_epoch().unwrap_or(0));
    let mut adoptions = 0;
    let mut watched: HashMap<String, Watched> = HashMap::new();
    let period = (lease / 4).max(Duration::from_millis(50));
    // The first look at once: until it, this node knows no other's address.
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let leases = match store.node_leases().await {
            Ok(l) => l,
            Err(e) => {
                warn!(error = %e, "the nodes' leases could not be read");
                continue;
            }
        };
        node.set_addresses(
            leases
                .iter()
                .filter_map(|l| Some((l.node.clone(), l.address.clone()?)))
                .collect(),
        );
        let now = Instant::now();
        let mut dead_ones = Vec::new();
        for l in leases.into_iter().filter(|l| *l.node != *me) {
            let seen = (l.epoch, l.beat, l.released);
            let w = watched.entry(l.node.clone()).or_insert(Watched {
                lease: seen,
                since: now,
            });
            if w.lease != seen {
                *w = Watched {
                    lease: seen,
                    since: now,
                };
            }
            let dead = l.released || now.duration_since(w.since) >= lease;
            if !dead {
                continue;
            }
            dead_ones.push(l.node.clone());
            // Counted only for a dead node: it reads the whole view.
            let agents = node.live_agents_of(&l.node);
            if agents == 0 {
                continue;
            }
            adoptions += 1;
            let batch = BatchId {
                node: writer.clone(),
                first: adoptions,
            };
            let how = match l.released {
                true => "stopped",
                false => "stopped renewing its lease",
            };
            let event = Arc::new(Event {
                seq: 0,
                at: chrono::Utc::now(),
                agent: None,
                kind: None,
                node: Some(me.clone()),
                body: EventBody::Alert {
                    severity: Severity::High,
                    issue: NODE_ADOPTED.into(),
                    detail: format!(
                        "node {} {how}; node {me} supervises its {agents} agents from here on, \
                         each with its restart grace",
                        l.node
                    ),
                    adopted: Some(l.node.clone()),
                },
            });
            let adoption = Adoption {
                node: l.node.clone(),
                epoch: l.epoch,
                beat: l.beat,
                by: format!("node {me}, which adopted its agents"),
            };
            match store.adopt(&batch, event, &me, &adoption).await {
                Ok(_) => info!(dead = %l.node, agents, "adopted the agents of a dead node"),
                Err(StoreError::Held(why)) => debug!(dead = %l.node, %why, "not adopted here"),
                Err(e) => {
                    warn!(dead = %l.node, error = %e, "adopting a dead node's agents failed; trying again")
                }
            }
        }
        node.set_dead(dead_ones);
    }
}
