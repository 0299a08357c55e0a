//! Serving: the agents' TCP listener and the HTTP listener, and the wiring they share.
//!
//! - [`tcp`]: the TCP listener for protocol v1.
//! - [`http`]: the HTTP listener: REST, WebSocket, SSE, metrics, the dashboard.
//! - [`hub`]: what every monitor surface shares (subscriptions, frames, counters).
//! - [`admin`]: the admin operations behind the `admin` frame and the REST API.
//! - `monitoring`: `ping`, `subscribe`, `unsubscribe` and `admin`, answered once for the TCP
//!   listener and the WebSocket.
//! - `outgoing`: a monitor connection's queue of replies and its subscription, read by its
//!   one writer task.
//! - `forward`: admin writes sent to the node of a cluster that owns their agent.
//! - `connectionless`: the beats, job reports and departures of agents held by no
//!   connection (the HTTP agent routes; forwarded to the node that supervises the agent).
//! - `owners`: which agents a TCP connection holds, and the handles of those registered over
//!   HTTP; both listeners claim agents there.
//! - `auth`: token checks, in constant time.
//! - [`tls`]: the listeners' TLS configuration from PEM files.
//! - [`net`]: accepted sockets: TCP keepalive, the per-IP connection cap, the idle timeout.
//! - [`store`]: opens the configured store (`store.url`).

pub mod admin;
pub(crate) mod auth;
mod connectionless;
mod forward;
pub mod http;
pub mod hub;
pub(crate) mod monitoring;
pub mod net;
pub(crate) mod outgoing;
pub(crate) mod owners;
mod settings;
pub mod store;
pub mod tcp;
pub mod tls;
