//! What both peers' binaries measure the same way: a sample's quantiles, a process's CPU
//! time, and the machine they ran on (as vigil's bench JSON records them), and durations
//! written as seconds.

use std::time::Duration;

use serde::Serialize;

/// Latency quantiles of a sample, in ms (nearest rank, as vigil's bench computes them).
#[derive(Debug, Default, Serialize)]
pub struct Quantiles {
    pub n: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Quantiles {
    /// The quantiles of `v`, each turned into ms by `ms`.
    pub fn of<T: Copy + Ord>(mut v: Vec<T>, ms: impl Fn(T) -> f64) -> Self {
        if v.is_empty() {
            return Self::default();
        }
        v.sort_unstable();
        let at = |q: f64| ms(v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1]);
        Quantiles {
            n: v.len(),
            p50_ms: at(0.5),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        }
    }
}

/// User plus system CPU time of a process (`self` or a PID), from `/proc/<pid>/stat` (clock
/// ticks of 10 ms).
pub fn cpu_of(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// The machine a run was on.
#[derive(Debug, Serialize)]
pub struct Machine {
    cpus: usize,
    model: String,
    memory_kib: u64,
}

impl Machine {
    pub fn read() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let model = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")
                    .and_then(|r| r.split(':').nth(1))
            })
            .unwrap_or("unknown")
            .trim()
            .to_string();
        let memory_kib = std::fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|r| r.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            model,
            memory_kib,
        }
    }
}

/// A duration in a report as seconds (`#[serde(with = "measure::secs")]`).
pub mod secs {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_by_nearest_rank() {
        let q = Quantiles::of((1..=100u32).map(|x| x * 1000).collect(), |us| {
            us as f64 / 1e3
        });
        assert_eq!(
            (q.n, q.p50_ms, q.p99_ms, q.max_ms),
            (100, 50.0, 99.0, 100.0)
        );
    }
}
