//! vigil's supervision core: one `ractor` actor per agent driving a pure liveness state
//! machine, a registry that sequences and persists every real change, and a broadcaster that
//! fans those changes out. No networking: programs embed it through [`Runtime`].
//!
//! ```no_run
//! use std::time::Duration;
//! use vigil_actors::{AgentId, Beat, MemStore, Registration, Runtime, RuntimeConfig,
//!     SubscribeOptions, SubscriptionItem};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let rt = Runtime::start(RuntimeConfig::default(), MemStore::new()).await?;
//! let mut events = rt.subscribe(SubscribeOptions { snapshot: true, ..Default::default() }).await?;
//! let agent = rt
//!     .register(Registration::new(AgentId::new("worker-1")?).kind("worker")
//!         .heartbeat_interval(Duration::from_secs(1)))
//!     .await?;
//! agent.heartbeat(Beat::healthy())?;
//! while let Some(item) = events.next().await {
//!     if let SubscriptionItem::Event(e) = item {
//!         println!("{} {:?}", e.seq, e.body);
//!     }
//! }
//! rt.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! - [`model`]: plain data — ids, statuses, reasons, policies, records, events.
//! - [`rules`]: the pure rules — the liveness state machine ([`fsm`]), jobs, the fleet
//!   health check and mass-failure guard ([`health`]), scheduling lag ([`lag`]).
//! - `agent`: one agent under supervision — its actor, the cell heartbeats stamp (the fast
//!   path), the deadline wheel.
//! - `fleet`: the FleetSupervisor — spawns, links, finds and restarts agent actors; the
//!   health task.
//! - `registry`: the RegistryActor — sequencer, live view, the write pipeline, answers held
//!   until durable, queries, stats.
//! - [`broadcaster`]: the BroadcasterActor — subscribers, filters, resume, lag.
//! - [`sink`]: outbound channels that follow the durable log.
//! - [`store`]: the `Store` trait, the in-memory store, SurrealDB, the conformance suite.
//! - [`cluster`]: what a node of a cluster needs beyond a single node (the fleet view kept
//!   from the shared log).
//! - [`admin`]: admin requests, responses and errors.
//! - [`runtime`]: the `Runtime` value that owns all of the above.
//! - [`clock`]: monotonic time and its wall-clock reading.

#![warn(missing_docs, unreachable_pub)]

pub mod admin;
mod agent;
pub mod broadcaster;
pub mod clock;
pub mod cluster;
mod fleet;
pub mod model;
mod registry;
pub mod rules;
pub mod runtime;
pub mod sink;
pub mod store;

pub use rules::backoff::{Backoff, Jitter};
pub use rules::{fsm, health, lag};

pub use admin::{AdminError, AdminRequest, AdminResponse, Stats};
/// For implementing [`Sink`] (and [`Store`]) outside this crate.
pub use async_trait::async_trait;
pub use broadcaster::{
    BroadcastStats, Filter, Snapshot, SubscribeOptions, Subscription, SubscriptionItem,
};
pub use fleet::Registered;
pub use health::{
    Alerter, Finding, HealthConfig, HealthIssue, HealthReport, HealthSummary, MassOffline,
    MassOfflineAlert,
};
pub use lag::{InputHold, LagConfig};
pub use model::*;
pub use registry::intake::ReportQuota;
pub use registry::{LatencyHistogram, RegistryStats};
pub use rules::jobs::{FINISHED_KEPT, MAX_OPEN_PER_AGENT, PROGRESS_STEP};
pub use runtime::{
    AgentHandle, Beat, BeatError, RegisterError, Runtime, RuntimeConfig, RuntimeError,
};
pub use sink::{DeadLetter, LogSink, Sink, SinkConfig, SinkError, SinkFilter, SinkStatus, StartAt};
#[cfg(any(test, feature = "test-util"))]
pub use store::FailingStore;
pub use store::{MemStore, Retention, Store, StoreError};
