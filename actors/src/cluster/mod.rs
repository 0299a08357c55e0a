//! What a node of a cluster needs beyond a single node (`docs/cluster.md`).
//!
//! - [`FleetView`]: the whole fleet as the shared log says it is, kept by applying every
//!   event of every node in seq order (the rule is `rules::replay`, the one a restart uses);
//!   the source of a cluster node's snapshots and admin reads.
//! - `node`: the view kept by the shared log's tail, published to the node's subscribers in
//!   the log's order; snapshots and fleet-wide reads.
//! - `log`: the store as a node's registry writes it (its batches appended to the shared
//!   log, owners kept) and its broadcaster reads it.
//! - [`members`]: the other nodes' leases, watched; a dead node's agents adopted.
//! - `keeper`: the fleet's checkpoint and the shared log's retention, written by one node at
//!   a time.

#[cfg(feature = "surreal")]
pub(crate) mod keeper;
#[cfg(feature = "surreal")]
pub(crate) mod log;
#[cfg(feature = "surreal")]
pub mod members;
pub(crate) mod node;
mod view;

pub use view::{FleetRow, FleetView, ViewError};
