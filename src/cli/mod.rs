//! The operator's command-line clients.
//!
//! - [`agents`]: `vigil agents`, the operator's commands over the admin role.
//! - [`watch`]: `vigil watch`, a terminal monitor that resumes without gaps.
//! - [`conn`]: the flags both share: address, token, TLS.
//! - [`render`]: answers and frames as text for an operator.

pub mod agents;
pub mod conn;
pub mod render;
pub mod watch;
