//! A Rust client for protocol v1 (`docs/protocol.md`), for agents written in Rust and for the
//! simulator.
//!
//! Two levels:
//! - [`Connection`]: one socket (TCP or TLS) after the `hello`/`welcome` handshake; send frames
//!   (or pre-built lines, for load generation) and receive typed [`ServerFrame`]s, the same
//!   type the server writes them with.
//! - [`AgentClient`]: supervised agents in a background task: it connects, registers them,
//!   heartbeats each on its own schedule with jitter, reconnects with exponential backoff and
//!   registers them again (with `takeover`, so a half-open old connection cannot hold them),
//!   and reports what happens as typed [`ClientEvent`]s.
//!
//! ```no_run
//! # async fn f() -> Result<(), vigil::client::ClientError> {
//! use vigil::client::{AgentClient, AgentSpec, ClientConfig, ClientEvent};
//! let mut client = AgentClient::start(
//!     ClientConfig::new("127.0.0.1:7400"),
//!     vec![AgentSpec::new("worker-1").kind("worker")],
//! )?;
//! while let Some(ev) = client.next_event().await {
//!     if let ClientEvent::Registered { id, .. } = ev {
//!         client.activity(&id, "working", None).await;
//!         break;
//!     }
//! }
//! client.stop().await;
//! # Ok(()) }
//! ```
//!
//! Heartbeat timing: the server counts a beat as missed when none arrived within the interval
//! (plus the policy's grace, 0 by default). A client that beat exactly every interval would be
//! late whenever the network or either scheduler hiccups, so each agent beats every
//! `interval × beat_ratio` (0.75 by default), each period drawn with ±`jitter` (10%) so that
//! agents started together spread out instead of beating in lockstep.

mod agent;
mod config;
mod connection;

pub use crate::protocol::{ErrorCode, EvictedReason, Received, ServerFrame, Welcome};
pub use agent::{AgentClient, AgentSpec, ClientEvent};
pub use config::{host_of, ClientConfig, ClientTls};
pub use connection::{Connection, FrameReader, FrameWriter};

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Reading or writing the socket failed, or the connection could not be made.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The TLS setup or handshake failed.
    #[error("TLS: {0}")]
    Tls(String),
    /// A step took too long; the step is named.
    #[error("timed out: {0}")]
    Timeout(&'static str),
    /// The server answered with an `error` frame.
    #[error("the server refused: {code}: {message}")]
    Refused {
        /// The error code (`unauthorized`, `conflict`, ...).
        code: ErrorCode,
        /// The server's explanation.
        message: String,
    },
    /// The server sent something the client did not expect.
    #[error("unexpected from the server: {0}")]
    Protocol(String),
    /// The server closed the connection.
    #[error("the connection closed")]
    Closed,
}
