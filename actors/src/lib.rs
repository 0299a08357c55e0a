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
//! - [`fsm`]: the pure liveness state machine (`step(input, now) -> effects`).
//! - `agent`: the AgentActor, which executes the state machine's effects.
//! - `cell`: what an agent actor shares with heartbeat callers (the fast path).
//! - `wheel`: the deadline wheel, one task holding every agent's pending deadline.
//! - [`lag`]: local health awareness (the runtime's own scheduling lag).
//! - [`health`]: the fleet health check, its alerter and the mass-failure guard (pure).
//! - `health_task`: the task that runs the health check every `check_interval`.
//! - `fleet`: the FleetSupervisor — spawns, links, finds and restarts agent actors.
//! - `registry`: the RegistryActor — sequencer, group commit, live view, queries.
//! - `durable`: answers held until durable, and the backpressure the edges read.
//! - `pipeline`: the registry's write pipeline (pure): the log lane, the side lane, retries.
//! - `registry_stats`: the registry's counters and latency histogram.
//! - [`broadcaster`]: the BroadcasterActor — subscribers, filters, resume, lag.
//! - [`store`]: the `Store` trait, the in-memory store, the conformance suite.
//! - [`admin`]: admin requests, responses and errors.
//! - [`runtime`]: the `Runtime` value that owns all of the above.

pub mod admin;
mod agent;
pub mod broadcaster;
mod cell;
pub mod clock;
mod durable;
mod fleet;
pub mod fsm;
pub mod health;
mod health_task;
mod intake;
mod jobs;
pub mod lag;
pub mod model;
mod pipeline;
mod registry;
mod registry_stats;
pub mod runtime;
pub mod sink;
pub mod store;
mod wheel;

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
pub use intake::ReportQuota;
pub use jobs::{FINISHED_KEPT, MAX_OPEN_PER_AGENT, PROGRESS_STEP};
pub use lag::LagConfig;
pub use model::*;
pub use registry::{LatencyHistogram, RegistryStats};
pub use runtime::{
    AgentHandle, Beat, BeatError, RegisterError, Runtime, RuntimeConfig, RuntimeError,
};
pub use sink::{DeadLetter, LogSink, Sink, SinkConfig, SinkError, SinkFilter, SinkStatus, StartAt};
pub use store::{FailingStore, MemStore, Retention, Store, StoreError};
