//! Starting a runtime: the store loaded, the actor tree spawned, restored agents supervised.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use ractor::rpc::CallResult;
use ractor::Actor;
use tracing::info;

use super::{probe_lag, RegistrySource, Runtime, RuntimeConfig, RuntimeError};
use crate::agent::wheel::Wheel;
use crate::agent::Ctx;
use crate::broadcaster::{BroadcasterActor, BroadcasterArgs};
use crate::clock::Clock;
use crate::cluster::node::{ClusterStart, Node};
use crate::fleet::health_task;
use crate::fleet::{Directory, FleetArgs, FleetMsg, FleetSupervisor, Policies};
use crate::registry::durable::Backpressure;
use crate::registry::RegistryHandle;
use crate::registry::{RegistryActor, RegistryArgs};
use crate::rules::health::MassOffline;
use crate::rules::lag::LagMonitor;
use crate::store::Store;

impl Runtime {
    /// Starts a runtime on `store`: loads what it holds (checkpoint + log), starts the actor
    /// tree, and supervises every restored agent with its restart grace.
    pub async fn start(config: RuntimeConfig, store: Arc<dyn Store>) -> Result<Self, RuntimeError> {
        Self::validate(&config)?;
        let t_load = std::time::Instant::now();
        let loaded = store.load().await?;
        Self::launch(config, store, loaded, t_load, None).await
    }

    pub(super) fn validate(config: &RuntimeConfig) -> Result<(), RuntimeError> {
        config.policy.validate().map_err(RuntimeError::Config)?;
        for (kind, p) in &config.kinds {
            p.validate()
                .map_err(|e| RuntimeError::Config(format!("policy of kind {kind}: {e}")))?;
        }
        config
            .health
            .validate()
            .map_err(|e| RuntimeError::Config(format!("health: {e}")))?;
        Ok(())
    }

    /// Spawns the actor tree on `store`, from what it `loaded` (read since `t_load`); on a
    /// cluster node, `cluster` is the fleet's view as of the seq the node publishes from.
    pub(super) async fn launch(
        config: RuntimeConfig,
        store: Arc<dyn Store>,
        loaded: crate::store::Loaded,
        t_load: std::time::Instant,
        cluster: Option<ClusterStart>,
    ) -> Result<Self, RuntimeError> {
        let health = Arc::new(config.health.clone());
        let configured = Policies::configured(&config);
        let saved_policies = store.policies().await?;
        let clock = Clock::start();
        let lag = Arc::new(LagMonitor::new(config.lag.clone(), clock.now()));
        let last_seq = loaded.last_seq;
        let (n_loaded, n_replayed) = (loaded.agents.len(), loaded.events_after.len());
        let load_ms = t_load.elapsed().as_millis() as u64;
        let spawn_err = |e: ractor::SpawnErr| RuntimeError::Spawn(e.to_string());

        let (broadcaster, b_task) = Actor::spawn(
            None,
            BroadcasterActor,
            BroadcasterArgs {
                store: store.clone(),
                queue: config.subscriber_queue,
                window: config.event_window,
                published_seq: last_seq,
            },
        )
        .await
        .map_err(spawn_err)?;
        let node = match (cluster, &config.node) {
            (Some(start), Some(me)) => {
                Some(Arc::new(Node::new(me.clone(), start, broadcaster.clone())))
            }
            (Some(_), None) => {
                return Err(RuntimeError::Config(
                    "a cluster node needs its id (RuntimeConfig::node)".into(),
                ))
            }
            _ => None,
        };
        let backpressure = Arc::new(Backpressure::new(
            Arc::new(AtomicBool::new(true)),
            config.max_pending_bytes,
        ));
        let (registry, r_task) = Actor::spawn(
            None,
            RegistryActor,
            RegistryArgs {
                store: store.clone(),
                broadcaster: broadcaster.clone(),
                clock,
                max_batch: config.max_batch,
                checkpoint_interval: config.checkpoint_interval,
                flush_interval: config.flush_interval,
                min_commit_interval: config.min_commit_interval,
                retention: config.event_retention.clone(),
                left_ttl: config.left_ttl,
                node: config.node.clone(),
                cluster: node.clone(),
                loaded,
                backpressure: backpressure.clone(),
                mass_offline: MassOffline::new(&health),
            },
        )
        .await
        .map_err(spawn_err)?;
        let registry = RegistryHandle::new(registry);
        let wheel = Wheel::start(lag.clone());
        let ctx = Ctx {
            registry: registry.clone(),
            wheel,
            clock,
            lag: lag.clone(),
            call_timeout: config.call_timeout,
            backpressure: backpressure.clone(),
        };
        let directory: Directory = Arc::new(RwLock::new(HashMap::new()));
        let (fleet, f_task) = Actor::spawn(
            None,
            FleetSupervisor,
            FleetArgs {
                ctx,
                broadcaster: broadcaster.clone(),
                directory: directory.clone(),
                health: health.clone(),
                policies: configured.with_saved(saved_policies),
            },
        )
        .await
        .map_err(spawn_err)?;

        let mut tasks = Vec::new();
        if config.lag.enabled {
            tasks.push(tokio::spawn(probe_lag(
                lag.clone(),
                registry.clone(),
                clock,
            )));
        }
        tasks.push(tokio::spawn(health_task::run(
            registry.clone(),
            clock,
            health,
            config.call_timeout,
        )));
        let source = Arc::new(RegistrySource {
            registry: registry.clone(),
            call_timeout: config.call_timeout,
        });
        let rt = Self {
            fleet,
            registry,
            broadcaster,
            directory,
            clock,
            lag,
            backpressure,
            call_timeout: config.call_timeout,
            tasks,
            actor_tasks: vec![f_task, r_task, b_task],
            store: store.clone(),
            sinks: tokio::sync::Mutex::new(Vec::new()),
            source,
            node,
            sink_duty: None,
            configured,
            policy_saves: tokio::sync::Mutex::new(()),
        };
        let t_restore = std::time::Instant::now();
        let restored = match rt
            .fleet
            .call(FleetMsg::Restore, Some(Duration::from_secs(3600)))
            .await
        {
            Ok(CallResult::Success(n)) => n,
            _ => return Err(RuntimeError::Unavailable("restore did not finish".into())),
        };
        if restored > 0 {
            info!(
                agents = restored,
                seq = last_seq,
                checkpointed = n_loaded,
                replayed_events = n_replayed,
                load_ms,
                supervise_ms = t_restore.elapsed().as_millis() as u64,
                "fleet restored from the store"
            );
        }
        Ok(rt)
    }
}
