//! The per-connection rate limit.

use tokio::time::Instant;

/// A connection's token bucket.
pub(super) struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    pub(super) fn new(rate: u32, burst: u32) -> Option<Self> {
        (rate > 0).then(|| Self {
            rate: rate as f64,
            burst: burst.max(1) as f64,
            tokens: burst.max(1) as f64,
            at: Instant::now(),
        })
    }

    /// Takes `n` tokens (a frame, or a `beats` frame's heartbeats), all or none.
    pub(super) fn take(&mut self, n: usize) -> bool {
        let now = Instant::now();
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        let n = n.max(1) as f64;
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}
