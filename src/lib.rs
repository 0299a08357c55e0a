//! vigil: the server, its surfaces and its command line, over the supervision core
//! ([`vigil_actors`]).
//!
//! # Layout
//!
//! - [`config`]: the TOML configuration (defaults, file, environment, flags).
//! - [`bench`]: the benchmark scenarios behind `vigil bench`.
//! - `main.rs`: the `vigil` command (serve, bench, config check).

pub mod bench;
pub mod config;

pub use vigil_actors as core;
