//! Pure rules, free of actors, tasks and I/O: each is a value and a function of its inputs
//! (and of the time it is given), tested on its own.
//!
//! - [`backoff`]: how long every retry loop waits after failures in a row.
//! - [`fsm`]: the liveness state machine (`step(input, now) -> effects`).
//! - `jobs`: the jobs each agent reports, and which reports become events.
//! - [`health`]: the fleet health check, its alerter and the mass-failure guard.
//! - [`lag`]: the runtime's own scheduling lag, and how far it stretches deadlines.
//! - [`replay`]: what a persisted event does to its agent's record (restore, a cluster
//!   node's view of the fleet).
//! - `writes`: when the registry flushes a group of events, whether a checkpoint is full, and
//!   what the store's queryable copy of the agents needs next.

pub mod backoff;
pub mod fsm;
pub mod health;
pub(crate) mod jobs;
pub mod lag;
pub mod replay;
pub(crate) mod writes;
