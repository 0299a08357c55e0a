//! `Runtime`: the embedding API. A value that owns one actor tree (fleet supervisor, agent
//! actors, registry, broadcaster), its deadline wheel, lag probe and health check, and its
//! store. Nothing is process-global: two runtimes can live in one process.

mod agents;
mod config;
mod errors;
#[cfg(feature = "surreal")]
mod node;
mod operate;
mod start;
mod stop;
mod tasks;

pub use crate::agent::handle::{AgentHandle, Beat, BeatError};
pub use config::RuntimeConfig;
pub use errors::{RegisterError, RuntimeError};

use std::sync::Arc;
use std::time::Duration;

use ractor::ActorRef;
use tokio::task::JoinHandle;

use crate::broadcaster::BroadcastMsg;
use crate::clock::Clock;
use crate::cluster::node::Node;
use crate::fleet::{Directory, FleetMsg};
use crate::registry::durable::Backpressure;
use crate::registry::emit_alert;
use crate::registry::RegistryHandle;
use crate::rules::lag::LagMonitor;
use crate::sink::SinkHandle;
use crate::store::Store;
use tasks::{control_reply, probe_lag, RegistrySource};

/// The supervision runtime.
pub struct Runtime {
    fleet: ActorRef<FleetMsg>,
    registry: RegistryHandle,
    broadcaster: ActorRef<BroadcastMsg>,
    directory: Directory,
    clock: Clock,
    lag: Arc<LagMonitor>,
    backpressure: Arc<Backpressure>,
    call_timeout: Duration,
    tasks: Vec<JoinHandle<()>>,
    actor_tasks: Vec<JoinHandle<()>>,
    store: Arc<dyn Store>,
    sinks: tokio::sync::Mutex<Vec<SinkHandle>>,
    /// Subscriptions and the published seq, for this runtime and its sinks' tasks.
    source: Arc<RegistrySource>,
    /// On a cluster node: the fleet's view, kept by the shared log's tail.
    node: Option<Arc<Node>>,
    /// On a cluster node: whether this node delivers the sinks now (one node does: the keeper).
    sink_duty: Option<tokio::sync::watch::Receiver<bool>>,
    /// The policies the configuration sets (what a saved `set_policy` was made from).
    configured: crate::fleet::Policies,
    /// Held from a `set_policy` to its save, so that saves land in the order of the changes.
    policy_saves: tokio::sync::Mutex<()>,
}
