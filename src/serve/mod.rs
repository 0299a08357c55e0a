//! Serving: the agents' TCP listener and the HTTP listener, and what they share (the monitor
//! hub, accepted sockets, the store they serve).
//!
//! - [`tcp`]: the TCP listener for protocol v1.
//! - [`http`]: the HTTP listener: REST, WebSocket, SSE, metrics, the dashboard.
//! - [`hub`]: what every monitor surface shares (subscriptions, frames, counters).
//! - [`net`]: accepted sockets: TCP keepalive, the per-IP connection cap, the idle timeout.
//! - [`store`]: opens the configured store (`store.url`).

pub mod http;
pub mod hub;
pub mod net;
pub mod store;
pub mod tcp;
