//! The operator's command-line clients, and the command's own log.
//!
//! - [`agents`]: `vigil agents`, the operator's commands about agents.
//! - [`sinks`]: `vigil sinks`, the outbound channels and their dead letters.
//! - [`policy`]: `vigil policy`, a kind's heartbeat policy.
//! - [`call`]: one admin operation, the request all three send.
//! - [`watch`]: `vigil watch`, a terminal monitor that resumes without gaps.
//! - [`conn`]: the flags every client shares: address, token, TLS.
//! - [`logs`]: vigil's own log on stderr, as text or JSON lines.
//! - [`render`]: answers and frames as text for an operator.

pub mod agents;
pub mod call;
pub mod conn;
pub mod logs;
pub mod policy;
pub mod render;
pub mod sinks;
pub mod watch;
