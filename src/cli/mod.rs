//! The operator's command-line clients.
//!
//! - [`agents`]: `vigil agents`, the operator's commands over the admin role.
//! - [`watch`]: `vigil watch`, a terminal monitor that resumes without gaps.

pub mod agents;
pub mod watch;
