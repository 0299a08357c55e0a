//! What the runtime's calls can fail with.

use crate::store::StoreError;

/// Errors of the runtime as a whole.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("actor could not start: {0}")]
    Spawn(String),
    #[error("runtime is not answering: {0}")]
    Unavailable(String),
    #[error("overloaded: {0}")]
    Overloaded(String),
}

/// Why a registration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    #[error("missing field {0}")]
    MissingField(String),
    #[error("{0}")]
    InvalidField(String),
    #[error("runtime unavailable: {0}")]
    Unavailable(String),
    /// Too many events wait for the store; try again later.
    #[error("overloaded: {0}")]
    Overloaded(String),
}
