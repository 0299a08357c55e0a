//! vigil: the server, its surfaces and its command line, over the supervision core
//! ([`vigil_actors`]).
//!
//! # Layout
//!
//! - [`client`]: a Rust client for protocol v1 (agents written in Rust, the simulator).
//! - [`server`]: the TCP listener for protocol v1.
//! - [`simulate`]: `vigil simulate`, simulated agents over TCP (also the ingest load).
//! - [`admin_cli`]: `vigil agents`, the operator's commands over the admin role.
//! - [`watch`]: `vigil watch`, a terminal monitor that resumes without gaps.
//! - [`config`]: the TOML configuration (defaults, file, environment, flags).
//! - [`bench`], [`bench_store`], [`bench_ingest`]: the benchmark scenarios behind `vigil bench`.
//! - [`storm`]: `vigil storm`, the crash-test workload.
//! - [`store`]: opens the configured store (`store.url`).
//! - [`protocol`]: the wire protocol v1: line framing and typed client frames.
//! - [`net`]: accepted sockets: TCP keepalive, the per-IP connection cap, the idle timeout.
//! - [`redact`]: secrets kept out of printed configuration and served errors.
//! - `main.rs`: the `vigil` command (serve, bench, simulate, agents, watch, config check).

pub mod admin_cli;
pub mod bench;
pub mod bench_fanout;
pub mod bench_ingest;
pub mod bench_memory;
pub mod bench_store;
pub mod client;
pub mod config;
pub mod dashboard;
pub mod hosts;
pub mod http;
pub mod metrics;
pub mod monitor;
pub mod net;
pub mod protocol;
pub mod redact;
pub mod server;
pub mod simulate;
pub mod sinks;
pub mod store;
pub mod storm;
pub mod watch;

pub use vigil_actors as core;
