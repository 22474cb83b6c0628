//! The one retry delay policy of CloudOptim's loops (the SQS receive loop, eviction retries, the hub
//! member's push and watch, the hub's start-up load, the Spot Advisor refresh): the delay doubles from
//! a first value up to a cap and starts over after a success.
//!
//! The doubling sequence is `backon`'s exponential backoff (already in the tree through kube-runtime).
//! Jitter is added here instead of by `backon`, whose jitter adds up to 100 % of the delay: the hub's
//! members only need spreading by a quarter, and the other loops want none (their delays are logged as
//! `retry_in` and documented).

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// Doubling delays between `first` and `max`, with optional jitter; [`Backoff::reset`] after a
/// success.
#[derive(Debug)]
pub struct Backoff {
    builder: ExponentialBuilder,
    delays: ExponentialBackoff,
    max: Duration,
    jitter: f64,
}

impl Backoff {
    /// Delays `first`, `2 × first`, `4 × first`, … never above `max` (a `first` above `max` is used
    /// once as it is).
    pub fn new(first: Duration, max: Duration) -> Backoff {
        let builder = ExponentialBuilder::new()
            .with_factor(2.0)
            .with_min_delay(first)
            .with_max_delay(max)
            .without_max_times();
        Backoff {
            builder,
            delays: builder.build(),
            max,
            jitter: 0.0,
        }
    }

    /// The same delays, each lengthened by a random share of itself of at most `fraction` (0 to 1), so
    /// that many clients failing together do not retry in lockstep.
    pub fn with_jitter(mut self, fraction: f64) -> Backoff {
        self.jitter = fraction.clamp(0.0, 1.0);
        self
    }

    /// The delay to wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        // Without a limit on attempts the sequence never ends; `max` is only a fallback.
        let delay = self.delays.next().unwrap_or(self.max);
        if self.jitter > 0.0 {
            delay + delay.mul_f64(fastrand::f64() * self.jitter)
        } else {
            delay
        }
    }

    /// Start over from the first delay (after a success).
    pub fn reset(&mut self) {
        self.delays = self.builder.build();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn delays_double_from_the_first_up_to_the_cap() {
        let mut backoff = Backoff::new(secs(1.0), secs(30.0));
        let delays: Vec<Duration> = (0..8).map(|_| backoff.next_delay()).collect();
        let expected = [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0].map(secs);
        assert_eq!(delays, expected);
    }

    #[test]
    fn reset_starts_over_from_the_first_delay() {
        let mut backoff = Backoff::new(secs(1.0), secs(10.0));
        for _ in 0..5 {
            backoff.next_delay();
        }
        backoff.reset();
        assert_eq!(backoff.next_delay(), secs(1.0));
        assert_eq!(backoff.next_delay(), secs(2.0));
    }

    #[test]
    fn jitter_lengthens_each_delay_by_at_most_its_fraction() {
        let mut backoff = Backoff::new(Duration::from_millis(200), secs(30.0)).with_jitter(0.25);
        let first = backoff.next_delay();
        assert!(first >= Duration::from_millis(200) && first <= Duration::from_millis(250));
        for _ in 0..20 {
            backoff.next_delay();
        }
        let capped = backoff.next_delay();
        assert!(capped >= secs(30.0) && capped <= secs(37.5), "{capped:?}");
    }

    #[test]
    fn a_first_delay_above_the_cap_is_used_once_then_the_cap() {
        let mut backoff = Backoff::new(secs(20.0), secs(10.0));
        assert_eq!(backoff.next_delay(), secs(20.0));
        assert_eq!(backoff.next_delay(), secs(10.0));
    }
}
