//! vigil: the server, its surfaces and its command line, over the supervision core
//! ([`vigil_actors`]).
//!
//! # Layout
//!
//! - [`protocol`]: the wire protocol v1: line framing, typed client frames, limits, error codes.
//! - [`serve`]: the listeners (TCP in [`serve::tcp`], HTTP in [`serve::http`]) and what they
//!   share: the monitor hub, who holds each agent, admin operations, tokens, TLS, accepted
//!   sockets, the store.
//! - [`outbound`]: the configured outbound channels (webhooks and logs).
//! - [`client`]: a Rust client for protocol v1 (agents written in Rust, the simulator).
//! - [`cli`]: the operator's clients: `vigil agents` and `vigil watch`; the command's own log
//!   (text or JSON lines).
//! - [`tools`]: `vigil simulate`, `vigil storm` and the scenarios behind `vigil bench`.
//! - [`config`]: the TOML configuration (defaults, file, environment, flags), redaction.
//! - `main.rs`: the `vigil` command (serve, bench, simulate, agents, watch, config check,
//!   completions, man).

#![warn(missing_docs, unreachable_pub)]

#[cfg(feature = "cli")]
pub mod cli;
pub mod client;
#[cfg(feature = "server")]
pub mod config;
#[cfg(feature = "server")]
pub mod outbound;
pub mod protocol;
#[cfg(feature = "server")]
pub mod serve;
#[cfg(feature = "cli")]
pub mod tools;

pub use vigil_actors as core;
