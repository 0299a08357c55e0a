//! The runtime's clock: monotonic instants (tokio's, so tests can pause and advance time) and
//! the wall-clock time stamped on events and records. Only the actors read it; the state
//! machine is handed `now`.

use chrono::{DateTime, Duration as ChronoDuration, DurationRound, Utc};
use tokio::time::Instant;

/// Maps monotonic instants to wall-clock timestamps and to compact nanosecond stamps.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base: Instant,
    base_utc: DateTime<Utc>,
}

impl Clock {
    /// A clock whose epoch is now.
    pub fn start() -> Self {
        Self {
            base: Instant::now(),
            base_utc: Utc::now(),
        }
    }

    /// The current monotonic instant (tokio's: paused and advanced in tests).
    pub fn now(&self) -> Instant {
        Instant::now()
    }

    /// Wall-clock time of an instant, to the millisecond (the protocol's precision).
    pub fn utc(&self, at: Instant) -> DateTime<Utc> {
        let since = at.saturating_duration_since(self.base);
        let t = self.base_utc + ChronoDuration::from_std(since).unwrap_or(ChronoDuration::zero());
        t.duration_trunc(ChronoDuration::milliseconds(1))
            .unwrap_or(t)
    }

    /// The clock's epoch.
    pub fn base(&self) -> Instant {
        self.base
    }
}
