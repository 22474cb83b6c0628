//! Client-side token buckets that keep CloudOptim under EC2's documented request-rate buckets
//! (mutating actions: 50 burst, 5 per second; non-mutating: 100 burst, 20 per second), so a busy
//! operator slows itself down instead of throttling every other EC2 client in the account.

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

/// A token bucket: `capacity` tokens, refilled at `per_second`.
#[derive(Debug)]
pub struct TokenBucket {
    capacity: f64,
    per_second: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(capacity: u32, per_second: u32) -> TokenBucket {
        TokenBucket {
            capacity: f64::from(capacity),
            per_second: f64::from(per_second),
            state: Mutex::new((f64::from(capacity), Instant::now())),
        }
    }

    /// Take one token, waiting for the refill when the bucket is empty.
    pub async fn acquire(&self) {
        let mut state = self.state.lock().await;
        let (tokens, last) = *state;
        let now = Instant::now();
        let refilled =
            (tokens + now.duration_since(last).as_secs_f64() * self.per_second).min(self.capacity);
        if refilled >= 1.0 {
            *state = (refilled - 1.0, now);
            return;
        }
        // Hold the lock while waiting so callers are served in order.
        let wait = Duration::from_secs_f64((1.0 - refilled) / self.per_second);
        tokio::time::sleep(wait).await;
        *state = (0.0, now + wait);
    }
}

/// The two EC2 buckets.
#[derive(Debug)]
pub struct Ec2Limits {
    /// Mutating actions (UpdateAutoScalingGroup, TerminateInstances, CreateTags, ...).
    pub mutating: TokenBucket,
    /// Describe* actions.
    pub describe: TokenBucket,
}

impl Default for Ec2Limits {
    fn default() -> Self {
        Ec2Limits {
            mutating: TokenBucket::new(50, 5),
            describe: TokenBucket::new(100, 20),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_passes_then_calls_are_paced_at_the_refill_rate() {
        let bucket = TokenBucket::new(3, 2);
        let start = Instant::now();
        for _ in 0..3 {
            bucket.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO, "the burst is free");
        bucket.acquire().await;
        bucket.acquire().await;
        // Two more tokens at 2 per second take one second of (paused, virtual) time.
        assert_eq!(start.elapsed(), Duration::from_secs(1));
    }
}
