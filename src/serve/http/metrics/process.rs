//! The process's own figures under the standard names of the Prometheus process collector
//! (`process_cpu_seconds_total`, `process_resident_memory_bytes`, ...), read from `/proc/self`
//! at scrape time. Linux only: elsewhere `/metrics` has no `process_*` family.

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

/// Clock ticks per second in `/proc/<pid>/stat` (`USER_HZ`): 100 on every Linux ABI, as the
/// Prometheus process collector also assumes.
const USER_HZ: f64 = 100.0;

/// What the process collector reports, as read from `/proc`.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Figures {
    /// User and system CPU time, in seconds.
    pub cpu_seconds: f64,
    /// Resident set size, in bytes.
    pub resident_bytes: u64,
    /// Virtual memory size, in bytes.
    pub virtual_bytes: u64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// The soft limit on open file descriptors (`None` when unlimited or unreadable).
    pub max_fds: Option<u64>,
    /// When the process started, in seconds since the Unix epoch.
    pub start_time_seconds: f64,
}

impl Figures {
    /// The figures of this process; `None` (and a debug line) when `/proc` cannot be read.
    pub(super) fn read() -> Option<Self> {
        let read = |path: &str| match std::fs::read_to_string(path) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::debug!(path, error = %e, "process metrics unavailable");
                None
            }
        };
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        parse(
            &read("/proc/self/stat")?,
            &read("/proc/self/status")?,
            &read("/proc/stat")?,
            &read("/proc/self/limits")?,
            open_fds,
        )
    }

    /// Registers the figures in `reg` (a registry with the prefix `process`).
    pub(super) fn register(&self, reg: &mut Registry) {
        let cpu = Counter::<f64, AtomicU64>::default();
        cpu.inc_by(self.cpu_seconds);
        reg.register_with_unit(
            "cpu",
            "Total user and system CPU time spent in seconds",
            Unit::Seconds,
            cpu,
        );
        reg.register_with_unit(
            "resident_memory",
            "Resident memory size in bytes",
            Unit::Bytes,
            super::gauge(saturating_i64(self.resident_bytes)),
        );
        reg.register_with_unit(
            "virtual_memory",
            "Virtual memory size in bytes",
            Unit::Bytes,
            super::gauge(saturating_i64(self.virtual_bytes)),
        );
        reg.register(
            "open_fds",
            "Number of open file descriptors",
            super::gauge(saturating_i64(self.open_fds)),
        );
        if let Some(max) = self.max_fds {
            reg.register(
                "max_fds",
                "Maximum number of open file descriptors",
                super::gauge(saturating_i64(max)),
            );
        }
        let start: Gauge<f64, AtomicU64> = super::gauge_f(self.start_time_seconds);
        reg.register_with_unit(
            "start_time",
            "Start time of the process since unix epoch in seconds",
            Unit::Seconds,
            start,
        );
    }
}

fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The figures from the text of `/proc/self/stat`, `/proc/self/status`, `/proc/stat` and
/// `/proc/self/limits`.
fn parse(stat: &str, status: &str, system: &str, limits: &str, open_fds: u64) -> Option<Figures> {
    // The command name (field 2) is in parentheses and may hold spaces or parentheses: the
    // fields that follow start after the last `)`, with field 3 (state) at index 0.
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    let (utime, stime, start_ticks, vsize) = (field(14)?, field(15)?, field(22)?, field(23)?);
    // Resident size in kB from `status`: the same pages as `stat`'s field 24, without having
    // to know the page size.
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())?;
    let boot = system
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse::<u64>().ok())?;
    let max_fds = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok());
    Some(Figures {
        cpu_seconds: (utime + stime) as f64 / USER_HZ,
        resident_bytes: rss_kb.saturating_mul(1024),
        virtual_bytes: vsize,
        open_fds,
        max_fds,
        start_time_seconds: boot as f64 + start_ticks as f64 / USER_HZ,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "4242 (vigil (x) y) S 1 4242 4242 0 -1 4194560 2000 0 0 0 250 130 0 0 \
                        20 0 9 0 123456 987654321 2048 18446744073709551615 1 1 0 0 0 0 0 0 0 \
                        0 0 0 17 1 0 0 0 0 0";
    const STATUS: &str = "Name:\tvigil\nVmPeak:\t  999 kB\nVmRSS:\t    8192 kB\nThreads:\t9\n";
    const SYSTEM: &str = "cpu  1 2 3 4\nbtime 1700000000\nprocesses 77\n";
    const LIMITS: &str = "Limit                     Soft Limit           Hard Limit           Units\n\
                          Max cpu time              unlimited            unlimited            seconds\n\
                          Max open files            1024                 524288               files\n";

    #[test]
    fn the_figures_come_from_the_right_fields() {
        let f = parse(STAT, STATUS, SYSTEM, LIMITS, 12).unwrap();
        assert_eq!(
            f,
            Figures {
                cpu_seconds: 3.8,
                resident_bytes: 8192 * 1024,
                virtual_bytes: 987654321,
                open_fds: 12,
                max_fds: Some(1024),
                start_time_seconds: 1700000000.0 + 1234.56,
            }
        );
    }

    #[test]
    fn an_unlimited_or_missing_limit_leaves_max_fds_out() {
        let unlimited = LIMITS.replace("1024  ", "unlimited");
        assert_eq!(
            parse(STAT, STATUS, SYSTEM, &unlimited, 1).unwrap().max_fds,
            None
        );
        assert_eq!(parse(STAT, STATUS, SYSTEM, "", 1).unwrap().max_fds, None);
    }

    #[test]
    fn a_truncated_stat_gives_nothing_rather_than_wrong_figures() {
        assert_eq!(
            parse("4242 (vigil) S 1 2 3", STATUS, SYSTEM, LIMITS, 1),
            None
        );
        assert_eq!(parse("no parenthesis", STATUS, SYSTEM, LIMITS, 1), None);
        assert_eq!(parse(STAT, "Name:\tvigil\n", SYSTEM, LIMITS, 1), None);
    }

    #[test]
    fn this_process_can_be_read() {
        let f = Figures::read().expect("/proc is readable on Linux");
        assert!(f.resident_bytes > 0 && f.virtual_bytes >= f.resident_bytes);
        assert!(f.open_fds > 0);
        assert!(f.start_time_seconds > 1.5e9, "{f:?}");
    }
}
