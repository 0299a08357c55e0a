//! Starting a runtime as a node of a cluster, on a store shared with the other nodes.

use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use super::{Runtime, RuntimeConfig, RuntimeError};
use crate::cluster::keeper::{self, KeeperConfig};
use crate::cluster::log::{loaded_for, replay, run_tail, SharedLog, TAIL_IDLE};
use crate::cluster::members;
use crate::cluster::node::{Claims, ClusterStart};
use crate::fleet::FleetMsg;
use crate::model::{AgentId, AgentRecord};
use crate::store::{LogTail, SurrealStore};

impl Runtime {
    /// Starts a runtime as cluster node `config.node` on `store` (a SurrealDB server, whose
    /// hold this process took under the node's own key): reads the whole fleet from the
    /// fleet's checkpoint and the shared log after it, supervises again the agents this node owns (with their restart grace), and
    /// follows the log from there, publishing every node's events to its subscribers.
    pub async fn start_node(
        config: RuntimeConfig,
        store: Arc<SurrealStore>,
    ) -> Result<Self, RuntimeError> {
        Self::validate(&config)?;
        let me = config.node.clone().ok_or_else(|| {
            RuntimeError::Config("a cluster node needs its id (RuntimeConfig::node)".into())
        })?;
        let lease = store.hold_lease().ok_or_else(|| {
            RuntimeError::Config("a cluster node's store must be held under the node's key".into())
        })?;
        let watched = store.clone();
        let kept = store.clone();
        let keeping = KeeperConfig {
            every: config.checkpoint_interval,
            lease,
            retention: config.event_retention.clone(),
            left_ttl: config.left_ttl,
        };
        let (duty, on_duty) = watch::channel(false);
        let t_load = std::time::Instant::now();
        let view = replay(&store).await?;
        let loaded = loaded_for(&view, &me);
        let tail = LogTail::new(store.clone(), view.seq(), TAIL_IDLE);
        let (disowned, mut lost) = mpsc::unbounded_channel();
        let claims = Arc::new(Claims::default());
        let log = SharedLog::new(store, me, tail.waker(), disowned, claims.clone());
        let start = ClusterStart { view, claims };
        let mut rt = Self::launch(config, Arc::new(log), loaded, t_load, Some(start)).await?;
        let Some(node) = rt.node.clone() else {
            return Err(RuntimeError::Unavailable(
                "the cluster node's view was not set up".into(),
            ));
        };
        let fleet = rt.fleet.clone();
        let disown = move |ids: Vec<(AgentId, u64)>| {
            let _ = fleet.cast(FleetMsg::Disown(ids));
        };
        let fleet = rt.fleet.clone();
        let adopt = move |records: Vec<AgentRecord>| {
            let _ = fleet.cast(FleetMsg::Adopt(records));
        };
        rt.tasks
            .push(tokio::spawn(members::watch(watched, node.clone(), lease)));
        rt.sink_duty = Some(on_duty);
        rt.tasks
            .push(tokio::spawn(keeper::run(kept, node.clone(), keeping, duty)));
        rt.tasks
            .push(tokio::spawn(run_tail(tail, node, disown.clone(), adopt)));
        rt.tasks.push(tokio::spawn(async move {
            while let Some(ids) = lost.recv().await {
                disown(ids);
            }
        }));
        Ok(rt)
    }
}
