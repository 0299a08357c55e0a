//! Exponential backoff: how long to wait after failures in a row. One rule for every retry
//! loop: the registry's store writes, a sink's deliveries, the client's and `vigil watch`'s
//! reconnections.

use std::time::Duration;

use rand::Rng;

/// How a wait is spread, so that many parties that failed together do not retry together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// Exactly the exponential delay (one writer retrying its own store).
    None,
    /// Half fixed, half random: never a tight loop, and spread.
    Equal,
    /// Anywhere from zero to the delay: the widest spread (a fleet that lost its server).
    Full,
}

/// The delay doubles from `min` after each failure in a row, up to `max`, and is spread by
/// its [`Jitter`]. Its own count of failures: [`Backoff::fail`] and [`Backoff::reset`].
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    jitter: Jitter,
    failures: u32,
}

impl Backoff {
    /// A backoff from `min` to `max` (a `max` below `min` is taken as `min`).
    pub fn new(min: Duration, max: Duration, jitter: Jitter) -> Self {
        Self {
            min,
            max: max.max(min),
            jitter,
            failures: 0,
        }
    }

    /// The delay after `failures` failures in a row, before jitter: `min` after the first,
    /// doubled after each further one, at most `max`.
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(30);
        self.min.saturating_mul(1u32 << doublings).min(self.max)
    }

    /// The wait after `failures` failures in a row, jitter applied.
    pub fn wait(&self, failures: u32) -> Duration {
        let d = self.delay(failures);
        match self.jitter {
            Jitter::None => d,
            Jitter::Equal => d / 2 + (d / 2).mul_f64(rand::rng().random::<f64>()),
            Jitter::Full => d.mul_f64(rand::rng().random::<f64>()),
        }
    }

    /// Counts one more failure and returns the wait before the next attempt.
    pub fn fail(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        self.wait(self.failures)
    }

    /// A success: the next failure waits `min` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Failures in a row so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_delay_doubles_from_min_to_max_and_a_success_starts_again() {
        let mut b = Backoff::new(50 * MS, 400 * MS, Jitter::None);
        let waits: Vec<Duration> = (0..6).map(|_| b.fail()).collect();
        assert_eq!(
            waits,
            [50 * MS, 100 * MS, 200 * MS, 400 * MS, 400 * MS, 400 * MS]
        );
        assert_eq!(b.failures(), 6);
        b.reset();
        assert_eq!(b.fail(), 50 * MS);
        // Far past the doublings that fit: still the cap, no overflow.
        assert_eq!(b.delay(u32::MAX), 400 * MS);
        assert_eq!(
            Backoff::new(MS, Duration::MAX, Jitter::None).delay(40),
            MS * (1 << 30)
        );
    }

    #[test]
    fn jitter_stays_within_its_share_of_the_delay() {
        let equal = Backoff::new(100 * MS, 100 * MS, Jitter::Equal);
        let full = Backoff::new(100 * MS, 100 * MS, Jitter::Full);
        let (mut e_min, mut f_min) = (Duration::MAX, Duration::MAX);
        for _ in 0..1000 {
            let (e, f) = (equal.wait(1), full.wait(1));
            assert!((50 * MS..=100 * MS).contains(&e), "{e:?}");
            assert!(f <= 100 * MS, "{f:?}");
            (e_min, f_min) = (e_min.min(e), f_min.min(f));
        }
        // Spread: 1,000 draws do not all land on the delay.
        assert!(e_min < 90 * MS && f_min < 50 * MS, "{e_min:?} {f_min:?}");
    }
}
