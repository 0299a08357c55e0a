//! Local health awareness: the runtime measures its own scheduling lag, and while it is high,
//! deadlines are extended by it, so a starved supervisor does not blame its agents (after
//! memberlist's Lifeguard).
//!
//! Four sources feed the estimate: a probe task that sleeps a fixed period and measures how
//! late it wakes; the deadline wheel, which measures how late it wakes for a deadline; the
//! readers of the agents' input (each connection, through a [`Backlog`]), which measure how
//! long they have been behind it: a beat waiting in a socket's buffer is a beat the agent sent
//! and the runtime has not read, not a silence; and input held ([`LagMonitor::hold`]): a
//! connection woken by its input and not yet run, or one whose frames wait behind a
//! registration it is making, holds its agents' beats from that moment, and the age of the
//! oldest hold counts while it lasts, before anyone has read what it holds. The estimate is
//! the largest lateness seen in the current and previous window, or the oldest hold's age if
//! larger; it counts as lag (and becomes slack) only above the threshold.
//!
//! Those are the runtime's measures of itself. One question is asked of each agent's own
//! input as well, when a deadline is about to pass for want of a beat: has its connection
//! applied everything that reached the server by then ([`BeatSource`])? Until it has, the
//! deadline waits (up to `max_slack`), whatever the estimate says: a backlog of one connection
//! is never taken for the silence of its agents, however short or long it is.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// Settings of the lag monitor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LagConfig {
    /// Off: deadlines are never extended and no `runtime_lagging` alert is raised.
    pub enabled: bool,
    /// How often the probe task measures its own wake-up lateness.
    pub probe_interval: Duration,
    /// Lateness below this is normal scheduling noise.
    pub threshold: Duration,
    /// How long an observation counts (between one and two windows).
    pub window: Duration,
    /// The most deadlines are extended by. A runtime late by more than this cannot vouch for
    /// its agents any longer: detection goes on (late), and `runtime_lagging` says why.
    pub max_slack: Duration,
}

impl Default for LagConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            probe_interval: Duration::from_millis(50),
            threshold: Duration::from_millis(50),
            window: Duration::from_secs(2),
            max_slack: Duration::from_secs(5),
        }
    }
}

#[derive(Debug)]
struct Windows {
    started: Instant,
    current: Duration,
    previous: Duration,
}

/// The shared lag estimate.
#[derive(Debug)]
pub struct LagMonitor {
    config: LagConfig,
    windows: Mutex<Windows>,
    /// Input held now: since when, and a number telling holds of one instant apart.
    held: Mutex<Holds>,
}

#[derive(Debug, Default)]
struct Holds {
    next: u64,
    since: BTreeSet<(Instant, u64)>,
}

/// Agents' input held since a moment (see [`LagMonitor::hold`]); dropping it lets go, and
/// how long it was held is recorded as lateness.
#[derive(Debug)]
#[must_use = "the input counts as held only while this lives"]
pub struct InputHold {
    held: Option<(Arc<LagMonitor>, (Instant, u64))>,
}

impl InputHold {
    /// A hold of nothing (the monitor is off, or there is no monitor).
    pub fn none() -> Self {
        InputHold { held: None }
    }
}

impl Drop for InputHold {
    fn drop(&mut self) {
        if let Some((monitor, key)) = self.held.take() {
            monitor.held.lock().since.remove(&key);
            let now = Instant::now();
            monitor.observe(now.saturating_duration_since(key.0), now);
        }
    }
}

/// Where an agent's beats come in (its connection), as the deadline wheel asks it.
pub trait BeatSource: Send + Sync + std::fmt::Debug {
    /// Whether everything that reached the server on this input by `at` has been read and
    /// its beats applied; true as well once the input has closed (nothing more comes by it).
    fn applied_through(&self, at: Instant) -> bool;
}

impl LagMonitor {
    /// A monitor with no lateness seen yet; its first window starts at `now`.
    pub fn new(config: LagConfig, now: Instant) -> Self {
        Self {
            config,
            windows: Mutex::new(Windows {
                started: now,
                current: Duration::ZERO,
                previous: Duration::ZERO,
            }),
            held: Mutex::new(Holds::default()),
        }
    }

    /// Agents' input is held from `since` until the returned hold is dropped: beats the
    /// runtime has received (or been woken for) and not yet applied. While it lasts, its age
    /// is lag, so no deadline passes for want of what it holds.
    pub fn hold(self: &Arc<Self>, since: Instant) -> InputHold {
        if !self.config.enabled {
            return InputHold::none();
        }
        let mut held = self.held.lock();
        let key = (since, held.next);
        held.next += 1;
        held.since.insert(key);
        InputHold {
            held: Some((self.clone(), key)),
        }
    }

    /// The monitor's settings.
    pub fn config(&self) -> &LagConfig {
        &self.config
    }

    fn rotate(&self, w: &mut Windows, now: Instant) {
        let elapsed = now.saturating_duration_since(w.started);
        if elapsed >= self.config.window * 2 {
            w.previous = Duration::ZERO;
            w.current = Duration::ZERO;
            w.started = now;
        } else if elapsed >= self.config.window {
            w.previous = w.current;
            w.current = Duration::ZERO;
            w.started += self.config.window;
        }
    }

    /// Records that something meant to run at `now - lateness` ran at `now`.
    pub fn observe(&self, lateness: Duration, now: Instant) {
        if !self.config.enabled {
            return;
        }
        let mut w = self.windows.lock();
        self.rotate(&mut w, now);
        w.current = w.current.max(lateness);
    }

    /// The current lag estimate, whether or not it is above the threshold.
    pub fn estimate(&self, now: Instant) -> Duration {
        let oldest = self.held.lock().since.first().map(|k| k.0);
        let held = oldest.map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        let mut w = self.windows.lock();
        self.rotate(&mut w, now);
        w.current.max(w.previous).max(held)
    }

    /// Whether the runtime lags now (the estimate is above the threshold).
    pub fn lagging(&self, now: Instant) -> bool {
        self.config.enabled && self.estimate(now) > self.config.threshold
    }

    /// How much every deadline is extended now: the lag estimate when it is above the
    /// threshold (at most `max_slack`), otherwise zero.
    pub fn slack(&self, now: Instant) -> Duration {
        if !self.config.enabled {
            return Duration::ZERO;
        }
        let lag = self.estimate(now);
        if lag > self.config.threshold {
            lag.min(self.config.max_slack)
        } else {
            Duration::ZERO
        }
    }
}

/// One reader's backlog: since when it has been reading without catching up with its input.
///
/// A read that fills the whole buffer it was given means more is waiting; a read that does
/// not, or a read that finds nothing (it would wait), means the reader caught up. While it is
/// behind, the oldest data it has not read arrived after it fell behind, so the time since is
/// a bound on how late that data will be read.
#[derive(Debug, Default, Clone)]
pub struct Backlog {
    since: Option<Instant>,
}

impl Backlog {
    /// A read at `now` that filled its buffer (`full`) or did not; how long the reader has been
    /// behind, up to this read (zero when it was not).
    pub fn read(&mut self, full: bool, now: Instant) -> Duration {
        let behind = self.behind(now);
        self.since = match full {
            true => self.since.or(Some(now)),
            false => None,
        };
        behind
    }

    /// A read at `now` found nothing waiting: the reader caught up; how long it was behind.
    pub fn caught_up(&mut self, now: Instant) -> Duration {
        let behind = self.behind(now);
        self.since = None;
        behind
    }

    /// How long the reader has been behind as of `now` (zero when it is not).
    pub fn behind(&self, now: Instant) -> Duration {
        self.since
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_reader_is_behind_from_its_first_full_read_until_it_catches_up() {
        let mut b = Backlog::default();
        let t0 = Instant::now();
        assert_eq!(b.read(false, t0), Duration::ZERO, "caught up");
        assert_eq!(b.read(true, t0), Duration::ZERO, "falls behind now");
        let ms = Duration::from_millis;
        assert_eq!(b.read(true, t0 + ms(300)), ms(300));
        assert_eq!(b.behind(t0 + ms(400)), ms(400));
        // The last read up to the end of its input: it was behind until then, and is no more.
        assert_eq!(b.read(false, t0 + ms(700)), ms(700));
        assert_eq!(b.behind(t0 + ms(800)), Duration::ZERO);
        // Behind again, then a read that finds nothing waiting.
        b.read(true, t0 + ms(1000));
        assert_eq!(b.caught_up(t0 + ms(1050)), ms(50));
        assert_eq!(
            b.caught_up(t0 + ms(5000)),
            Duration::ZERO,
            "idle is not behind"
        );
    }

    #[test]
    fn slack_is_zero_below_threshold_and_the_lag_above_it() {
        let t0 = Instant::now();
        let m = LagMonitor::new(LagConfig::default(), t0);
        m.observe(Duration::from_millis(10), t0);
        assert_eq!(m.slack(t0), Duration::ZERO);
        m.observe(Duration::from_millis(300), t0);
        assert_eq!(m.slack(t0), Duration::from_millis(300));
        // Still counted in the next window, forgotten after two.
        assert_eq!(
            m.slack(t0 + Duration::from_secs(3)),
            Duration::from_millis(300)
        );
        assert_eq!(m.slack(t0 + Duration::from_secs(5)), Duration::ZERO);
    }

    #[test]
    fn slack_stops_at_its_cap_while_the_lag_is_still_reported() {
        let t0 = Instant::now();
        let m = LagMonitor::new(LagConfig::default(), t0);
        m.observe(Duration::from_secs(60), t0);
        assert_eq!(m.slack(t0), LagConfig::default().max_slack);
        assert_eq!(m.estimate(t0), Duration::from_secs(60));
        assert!(m.lagging(t0));
    }

    #[tokio::test(start_paused = true)]
    async fn held_input_is_lag_while_held_and_lateness_after() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let m = Arc::new(LagMonitor::new(LagConfig::default(), t0));
        let first = m.hold(t0);
        tokio::time::advance(ms(100)).await;
        let second = m.hold(Instant::now());
        tokio::time::advance(ms(200)).await;
        // Nothing was observed yet: the oldest hold's age is the lag.
        assert_eq!(m.slack(Instant::now()), ms(300));
        drop(first);
        tokio::time::advance(ms(400)).await;
        // The first is let go after 300 ms (now lateness seen); the second is 600 ms old.
        assert_eq!(m.slack(Instant::now()), ms(600));
        drop(second);
        assert_eq!(
            m.slack(Instant::now()),
            ms(600),
            "its lateness stays for a window"
        );
        tokio::time::advance(ms(5_000)).await;
        assert_eq!(m.slack(Instant::now()), Duration::ZERO);
        // A short hold is ordinary pace, not lag.
        let short = m.hold(Instant::now());
        tokio::time::advance(ms(10)).await;
        assert_eq!(m.slack(Instant::now()), Duration::ZERO);
        drop(short);
    }

    #[test]
    fn disabled_monitor_never_gives_slack() {
        let t0 = Instant::now();
        let m = LagMonitor::new(
            LagConfig {
                enabled: false,
                ..LagConfig::default()
            },
            t0,
        );
        m.observe(Duration::from_secs(5), t0);
        assert_eq!(m.slack(t0), Duration::ZERO);
        let m = Arc::new(m);
        let _held = m.hold(t0);
        assert_eq!(m.slack(t0 + Duration::from_secs(5)), Duration::ZERO);
    }
}
