//! The operator's command-line clients, and the command's own log.
//!
//! - [`agents`]: `vigil agents`, the operator's commands over the admin role.
//! - [`watch`]: `vigil watch`, a terminal monitor that resumes without gaps.
//! - [`conn`]: the flags both share: address, token, TLS.
//! - [`logs`]: vigil's own log on stderr, as text or JSON lines.
//! - [`render`]: answers and frames as text for an operator.

pub mod agents;
pub mod conn;
pub mod logs;
pub mod render;
pub mod watch;
