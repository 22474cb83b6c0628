//! What one member may ask of the hub, so a member (or whoever stole its token) cannot starve the
//! others, flood every cluster's etcd with flags, or steer the fleet alone:
//!
//! - reports: a token bucket per member (`--reports-per-second`, `--report-burst`); an empty bucket is
//!   answered 429 with `Retry-After`;
//! - requests and watches in flight: a count per member (`--max-requests-per-member`,
//!   `--max-watches-per-member`), a slot held for as long as the request or the watch lives;
//! - distinct active flags a member reports into ([`Limits::max_flags_per_member`], enforced by the
//!   store): a report that would add one more is refused with 422;
//! - confirmation ([`Limits::confirmations`]): a flag is shown to the other members only once that
//!   many distinct members reported it; the reporters always see it.
//!
//! All of it is plain data and clocks passed in, unit-tested here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The hub's per-member limits.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Reports a member may send per second, sustained.
    pub reports_per_second: f64,
    /// Reports a member may send at once after being quiet (the bucket's size).
    pub report_burst: u32,
    /// Distinct active flags one member may be a reporter of.
    pub max_flags_per_member: usize,
    /// Concurrent watch streams per member.
    pub max_watches_per_member: usize,
    /// Concurrent other requests per member.
    pub max_requests_per_member: usize,
    /// Distinct reporting members a flag needs before the other members see it (1 = at once).
    pub confirmations: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            reports_per_second: 50.0,
            report_burst: 200,
            max_flags_per_member: 100,
            max_watches_per_member: 4,
            max_requests_per_member: 16,
            confirmations: 2,
        }
    }
}

impl Limits {
    /// No limit at all and every flag shown at once (benchmarks, tests of other behaviour).
    pub fn unlimited() -> Limits {
        Limits {
            reports_per_second: f64::INFINITY,
            report_burst: u32::MAX,
            max_flags_per_member: usize::MAX,
            max_watches_per_member: usize::MAX,
            max_requests_per_member: usize::MAX,
            confirmations: 1,
        }
    }
}

/// A refusal by a per-member limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Limited {
    /// The member's report bucket is empty.
    #[error("report rate limit of this member exceeded; retry in {} s", retry_secs(*retry_after))]
    Rate {
        /// When the next report would be accepted.
        retry_after: Duration,
    },
    /// The member already has its maximum of watches open.
    #[error("this member already has {limit} open watches (the hub's --max-watches-per-member)")]
    Watches {
        /// The limit.
        limit: usize,
    },
    /// The member already has its maximum of requests in flight.
    #[error(
        "this member already has {limit} requests in flight (the hub's --max-requests-per-member)"
    )]
    Requests {
        /// The limit.
        limit: usize,
    },
}

impl Limited {
    /// Short label for `cloudoptim_hub_limited_total{limit}`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Limited::Rate { .. } => "report_rate",
            Limited::Watches { .. } => "watches",
            Limited::Requests { .. } => "requests",
        }
    }

    /// Seconds for the `Retry-After` header.
    pub fn retry_after_secs(&self) -> u64 {
        match self {
            Limited::Rate { retry_after } => retry_secs(*retry_after),
            Limited::Watches { .. } => 5,
            Limited::Requests { .. } => 1,
        }
    }
}

/// Whole seconds, rounded up, at least 1 (what `Retry-After` can say).
fn retry_secs(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// A token bucket: `capacity` tokens, refilled at `rate` per second, one taken per report.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: f64,
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`.
    pub fn new(rate: f64, capacity: u32, now: Instant) -> TokenBucket {
        let capacity = f64::from(capacity.max(1));
        TokenBucket {
            capacity,
            rate,
            tokens: capacity,
            last: now,
        }
    }

    /// Take one token at `now`, or say how long until one is there.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        self.last = now.max(self.last);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        let wait = (1.0 - self.tokens) / self.rate;
        Err(Duration::try_from_secs_f64(wait).unwrap_or(Duration::from_secs(3600)))
    }
}

#[derive(Debug)]
struct Usage {
    reports: TokenBucket,
    watches: usize,
    requests: usize,
}

/// Which per-member count a [`Slot`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotKind {
    Watch,
    Request,
}

/// Per-member usage (cheap to clone). Keys are authenticated member ids only, so the map is bounded
/// by the number of tokens.
#[derive(Debug, Clone)]
pub struct MemberGates {
    limits: Arc<Limits>,
    usage: Arc<Mutex<HashMap<String, Usage>>>,
}

/// One request or watch in flight; gives its place back when dropped.
#[derive(Debug)]
pub struct Slot {
    gates: MemberGates,
    member: String,
    kind: SlotKind,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(usage) = self.gates.lock().get_mut(&self.member) {
            let count = match self.kind {
                SlotKind::Watch => &mut usage.watches,
                SlotKind::Request => &mut usage.requests,
            };
            *count = count.saturating_sub(1);
        }
    }
}

impl MemberGates {
    /// Gates enforcing `limits`.
    pub fn new(limits: Limits) -> MemberGates {
        MemberGates {
            limits: Arc::new(limits),
            usage: Arc::default(),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Usage>> {
        self.usage
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn usage<'a>(
        &self,
        map: &'a mut HashMap<String, Usage>,
        member: &str,
        now: Instant,
    ) -> &'a mut Usage {
        map.entry(member.to_string()).or_insert_with(|| Usage {
            reports: TokenBucket::new(
                self.limits.reports_per_second,
                self.limits.report_burst,
                now,
            ),
            watches: 0,
            requests: 0,
        })
    }

    /// Take one report from `member`'s bucket at `now`.
    pub fn report(&self, member: &str, now: Instant) -> Result<(), Limited> {
        let mut map = self.lock();
        self.usage(&mut map, member, now)
            .reports
            .take(now)
            .map_err(|retry_after| Limited::Rate { retry_after })
    }

    /// A watch slot of `member`.
    pub fn watch(&self, member: &str) -> Result<Slot, Limited> {
        self.slot(member, SlotKind::Watch)
    }

    /// A request slot of `member`.
    pub fn request(&self, member: &str) -> Result<Slot, Limited> {
        self.slot(member, SlotKind::Request)
    }

    fn slot(&self, member: &str, kind: SlotKind) -> Result<Slot, Limited> {
        let mut map = self.lock();
        let usage = self.usage(&mut map, member, Instant::now());
        let (count, limit, refusal) = match kind {
            SlotKind::Watch => {
                let limit = self.limits.max_watches_per_member;
                (&mut usage.watches, limit, Limited::Watches { limit })
            }
            SlotKind::Request => {
                let limit = self.limits.max_requests_per_member;
                (&mut usage.requests, limit, Limited::Requests { limit })
            }
        };
        if *count >= limit {
            return Err(refusal);
        }
        *count += 1;
        drop(map);
        Ok(Slot {
            gates: self.clone(),
            member: member.to_string(),
            kind,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bucket_allows_the_burst_then_refuses_with_the_time_to_the_next_token() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(2.0, 3, t0);
        for _ in 0..3 {
            assert_eq!(bucket.take(t0), Ok(()));
        }
        let wait = bucket.take(t0).expect_err("empty");
        assert_eq!(wait, Duration::from_millis(500));
    }

    #[test]
    fn the_bucket_refills_at_the_rate_and_never_beyond_its_capacity() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(10.0, 2, t0);
        assert!(bucket.take(t0).is_ok() && bucket.take(t0).is_ok());
        assert!(bucket.take(t0).is_err());
        assert!(bucket.take(t0 + Duration::from_millis(100)).is_ok());
        let later = t0 + Duration::from_secs(60);
        assert!(bucket.take(later).is_ok() && bucket.take(later).is_ok());
        assert!(bucket.take(later).is_err(), "capacity 2, not 600");
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up_and_at_least_one() {
        assert_eq!(retry_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_secs(Duration::from_secs(3)), 3);
        assert_eq!(retry_secs(Duration::ZERO), 1);
    }

    #[test]
    fn one_members_flood_leaves_another_members_bucket_alone() {
        let gates = MemberGates::new(Limits {
            reports_per_second: 1.0,
            report_burst: 2,
            ..Limits::default()
        });
        let now = Instant::now();
        assert!(gates.report("a", now).is_ok() && gates.report("a", now).is_ok());
        let refused = gates.report("a", now).expect_err("a is throttled");
        assert_eq!(refused.metric_label(), "report_rate");
        assert_eq!(refused.retry_after_secs(), 1);
        assert!(gates.report("b", now).is_ok(), "b unaffected");
    }

    #[test]
    fn watch_slots_are_capped_per_member_and_given_back_on_drop() {
        let gates = MemberGates::new(Limits {
            max_watches_per_member: 2,
            ..Limits::default()
        });
        let first = gates.watch("a").expect("first");
        let _second = gates.watch("a").expect("second");
        assert_eq!(
            gates.watch("a").expect_err("third"),
            Limited::Watches { limit: 2 }
        );
        assert!(gates.watch("b").is_ok(), "another member has its own slots");
        drop(first);
        assert!(gates.watch("a").is_ok(), "a closed watch frees its slot");
    }

    #[test]
    fn request_slots_are_counted_apart_from_watches() {
        let gates = MemberGates::new(Limits {
            max_requests_per_member: 1,
            max_watches_per_member: 1,
            ..Limits::default()
        });
        let _watch = gates.watch("a").expect("watch");
        let request = gates.request("a").expect("request");
        let refused = gates.request("a").expect_err("second request");
        assert!(refused.to_string().contains("--max-requests-per-member"));
        drop(request);
        assert!(gates.request("a").is_ok());
    }
}
