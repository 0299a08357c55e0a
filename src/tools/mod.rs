//! Workloads and measurements: the simulator, the crash-test storm, the benchmarks.
//!
//! - [`simulate`]: `vigil simulate`, simulated agents over TCP (also the ingest load).
//! - [`storm`]: `vigil storm`, the crash-test workload.
//! - [`bench`](mod@bench): the benchmark scenarios behind `vigil bench`.

pub mod bench;
pub mod simulate;
pub mod storm;
