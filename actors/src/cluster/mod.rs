//! What a node of a cluster needs beyond a single node (`docs/cluster.md`).
//!
//! - [`FleetView`]: the whole fleet as the shared log says it is, kept by applying every
//!   event of every node in seq order (the rule is `rules::replay`, the one a restart uses);
//!   the source of a cluster node's snapshots and admin reads.

mod view;

pub use view::{FleetView, ViewError};
