//! What the runtime's calls can fail with.

use crate::store::StoreError;

/// Errors of the runtime as a whole.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The configuration (a policy, the health settings, a sink) is invalid; the message says
    /// why.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// An actor of the runtime could not be started.
    #[error("actor could not start: {0}")]
    Spawn(String),
    /// The runtime (or one of its actors) did not answer in time, or is gone.
    #[error("runtime is not answering: {0}")]
    Unavailable(String),
    /// Too many events wait for the store (or it is failing); try again later.
    #[error("overloaded: {0}")]
    Overloaded(String),
}

/// Why a registration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    /// A required field (the id) is missing.
    #[error("missing field {0}")]
    MissingField(String),
    /// A field is invalid (the heartbeat interval outside the runtime's bounds, ...); the
    /// message says which.
    #[error("{0}")]
    InvalidField(String),
    /// The runtime did not answer in time, or is stopping.
    #[error("runtime unavailable: {0}")]
    Unavailable(String),
    /// Too many events wait for the store; try again later.
    #[error("overloaded: {0}")]
    Overloaded(String),
}
