//! The 30-day Spot price history of the instance types in use, for savings estimates (issue #18): the
//! OptimizationPolicy status estimates with the time-weighted 30-day average per (zone, type)
//! ([`crate::engine::spot_average`]); ranking keeps the latest prices.
//!
//! Histories are fetched with [`Cloud::spot_price_history`] only for the types a policy's nodes run
//! (never every type of the region), kept per type for 6 h, and a type whose history is missing (never
//! fetched successfully, or AWS has no record) is estimated at its latest price.
//!
//! Shaped like the on-demand cache ([`super::on_demand`]): one caller fetches, outside the state's lock
//! and within [`FETCH_DEADLINE`]; callers that find a fetch running answer at once with the histories
//! in hand (a type being fetched is estimated at its latest price until the fetch lands). A failed fetch
//! keeps the histories in hand and is retried after a backoff ([`FIRST_BACKOFF`], doubling, at most
//! [`MAX_BACKOFF`]), never on every reconcile.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use crate::cloud::{Cloud, CloudError, SpotPricePoint};
use crate::engine::spot_average::{self, SpotAverages, WINDOW_SECS};
use crate::retry::Backoff;

/// How long a type's fetched history is used before it is fetched again.
pub const REFRESH: Duration = Duration::from_secs(6 * 3600);
/// The longest one fetch (every page and the SDK's retries) may take.
pub const FETCH_DEADLINE: Duration = Duration::from_secs(60);
/// The first wait after a failed fetch; it doubles up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(30);
/// The longest wait between failed fetches.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10 * 60);

/// Why the histories in use could not be refreshed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HistoryError {
    /// DescribeSpotPriceHistory failed.
    #[error(transparent)]
    Cloud(#[from] CloudError),
    /// The pages did not all arrive in time.
    #[error("DescribeSpotPriceHistory: no complete answer within {0:?}")]
    Deadline(Duration),
}

/// The averages for one set of types, and why some may be missing.
#[derive(Debug, Clone, PartialEq)]
pub struct Averages {
    /// Average Spot price per (zone, type) of the types asked for that have a history.
    pub averages: SpotAverages,
    /// The last fetch's failure, until a fetch succeeds.
    pub error: Option<HistoryError>,
}

struct State {
    /// Instance type -> (when fetched, its records).
    histories: BTreeMap<String, (Instant, Vec<SpotPricePoint>)>,
    /// The last failure, until a fetch succeeds.
    error: Option<HistoryError>,
    /// No fetch before this instant (set by a failure).
    retry_at: Option<Instant>,
    /// Delays after failed fetches, reset by a success.
    backoff: Backoff,
}

impl State {
    /// The types of `types` whose history is missing or older than [`REFRESH`]; none while a failed
    /// fetch's backoff runs.
    fn due(&self, types: &BTreeSet<String>) -> Vec<String> {
        if self.retry_at.is_some_and(|at| Instant::now() < at) {
            return Vec::new();
        }
        types
            .iter()
            .filter(|t| {
                self.histories
                    .get(*t)
                    .is_none_or(|(at, _)| at.elapsed() >= REFRESH)
            })
            .cloned()
            .collect()
    }
}

/// Spot price histories of one region, per instance type.
pub struct SpotHistoryCache {
    region: String,
    state: Mutex<State>,
    /// Held by the one caller that fetches.
    refreshing: tokio::sync::Mutex<()>,
}

impl SpotHistoryCache {
    /// An empty cache for `region`.
    pub fn new(region: impl Into<String>) -> SpotHistoryCache {
        SpotHistoryCache {
            region: region.into(),
            state: Mutex::new(State {
                histories: BTreeMap::new(),
                error: None,
                retry_at: None,
                backoff: Backoff::new(FIRST_BACKOFF, MAX_BACKOFF),
            }),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The lock is never held across an await or a panic-prone call; a poisoned state is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The 30-day averages of `types` as of `now` (seconds since the epoch), first fetching the
    /// histories that are missing or older than [`REFRESH`] unless another caller is fetching.
    pub async fn averages<C: Cloud>(
        &self,
        cloud: &C,
        types: &BTreeSet<String>,
        now: i64,
    ) -> Averages {
        if !self.state().due(types).is_empty() {
            // One caller fetches; the others answer at once with what is in hand.
            if let Ok(_fetching) = self.refreshing.try_lock() {
                // Due again under the fetch lock: another caller may have just fetched.
                let due = self.state().due(types);
                if !due.is_empty() {
                    self.refresh(cloud, &due, now).await;
                }
            }
        }
        self.in_hand(types, now)
    }

    /// One fetch of `due` within the deadline, then the state updated (not locked while fetching).
    async fn refresh<C: Cloud>(&self, cloud: &C, due: &[String], now: i64) {
        let fetch = cloud.spot_price_history(due, now.saturating_sub(WINDOW_SECS));
        let result = match tokio::time::timeout(FETCH_DEADLINE, fetch).await {
            Ok(Ok(records)) => Ok(records),
            Ok(Err(e)) => Err(HistoryError::Cloud(e)),
            Err(_) => Err(HistoryError::Deadline(FETCH_DEADLINE)),
        };
        let mut state = self.state();
        match result {
            Ok(records) => {
                let fetched = Instant::now();
                for t in due {
                    let mine = records
                        .iter()
                        .filter(|r| &r.instance_type == t)
                        .cloned()
                        .collect();
                    state.histories.insert(t.clone(), (fetched, mine));
                }
                state.error = None;
                state.retry_at = None;
                state.backoff.reset();
            }
            Err(e) => {
                let retry_in = state.backoff.next_delay();
                tracing::warn!(error = %e, types = due.len(), ?retry_in, "Spot price history not refreshed; savings estimates use the latest Spot prices where no history is in hand");
                state.retry_at = Some(Instant::now() + retry_in);
                state.error = Some(e);
            }
        }
    }

    /// The averages of the histories in hand for `types`.
    fn in_hand(&self, types: &BTreeSet<String>, now: i64) -> Averages {
        let state = self.state();
        let records: Vec<SpotPricePoint> = types
            .iter()
            .filter_map(|t| state.histories.get(t))
            .flat_map(|(_, records)| records.iter().cloned())
            .collect();
        Averages {
            averages: SpotAverages {
                region: self.region.clone(),
                prices: spot_average::averages(&records, now, WINDOW_SECS),
            },
            error: state.error.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::task::Poll;

    use tokio::sync::Notify;

    use super::*;
    use crate::cloud::fake::FakeCloud;

    const NOW: i64 = 1_800_000_000;
    const DAY: i64 = 24 * 3600;

    fn record(instance_type: &str, at: i64, price: f64) -> SpotPricePoint {
        SpotPricePoint {
            zone: "us-east-1a".into(),
            instance_type: instance_type.into(),
            at,
            price,
        }
    }

    fn types(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn cloud_with_history() -> FakeCloud {
        let cloud = FakeCloud::default();
        cloud.state().spot_history = vec![
            record("m5.large", NOW - 40 * DAY, 0.02),
            record("m5.large", NOW - 15 * DAY, 0.04),
            record("c5.large", NOW - DAY, 0.05),
            record("r5.large", NOW - DAY, 0.07),
        ];
        cloud
    }

    #[tokio::test(start_paused = true)]
    async fn only_the_types_in_use_are_fetched_and_averaged_over_30_days() {
        let cloud = cloud_with_history();
        let cache = SpotHistoryCache::new("us-east-1");

        let got = cache
            .averages(&cloud, &types(&["m5.large", "c5.large"]), NOW)
            .await;

        assert_eq!(
            cloud.state().spot_history_requests,
            [vec!["c5.large".to_string(), "m5.large".to_string()]]
        );
        let m5 = got.averages.get("us-east-1", "us-east-1a", "m5.large");
        assert!(m5.is_some_and(|p| (p - 0.03).abs() < 1e-9), "{m5:?}");
        assert_eq!(got.averages.prices.len(), 2, "r5.large is not in use");
        assert_eq!(got.error, None);
    }

    #[tokio::test(start_paused = true)]
    async fn histories_are_kept_6_hours_and_only_new_types_are_fetched_meanwhile() {
        let cloud = cloud_with_history();
        let cache = SpotHistoryCache::new("us-east-1");
        cache.averages(&cloud, &types(&["m5.large"]), NOW).await;

        tokio::time::advance(Duration::from_secs(3600)).await;
        cache
            .averages(&cloud, &types(&["m5.large", "c5.large"]), NOW)
            .await;
        tokio::time::advance(REFRESH).await;
        cache.averages(&cloud, &types(&["m5.large"]), NOW).await;

        assert_eq!(
            cloud.state().spot_history_requests,
            [
                vec!["m5.large".to_string()],
                vec!["c5.large".to_string()],
                vec!["m5.large".to_string()]
            ]
        );
    }

    fn boom() -> CloudError {
        CloudError::Other {
            op: "DescribeSpotPriceHistory",
            message: "boom".into(),
            request_id: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_fetch_keeps_the_histories_in_hand_and_backs_off_before_trying_again() {
        let cloud = cloud_with_history();
        let cache = SpotHistoryCache::new("us-east-1");
        let in_use = types(&["m5.large", "c5.large"]);
        cache.averages(&cloud, &types(&["m5.large"]), NOW).await;
        tokio::time::advance(REFRESH).await;
        cloud.state().fail_next = Some(boom());

        let failed = cache.averages(&cloud, &in_use, NOW).await;
        let during_backoff = cache.averages(&cloud, &in_use, NOW).await;
        tokio::time::advance(FIRST_BACKOFF).await;
        let retried = cache.averages(&cloud, &in_use, NOW).await;

        assert_eq!(failed.error, Some(HistoryError::Cloud(boom())));
        assert!(
            failed
                .averages
                .get("us-east-1", "us-east-1a", "m5.large")
                .is_some(),
            "the older m5.large history is still used"
        );
        assert_eq!(
            failed.averages.get("us-east-1", "us-east-1a", "c5.large"),
            None,
            "no history: the estimate falls back to the latest price"
        );
        assert_eq!(during_backoff, failed, "no retry during the backoff");
        assert_eq!(cloud.state().spot_history_requests.len(), 3);
        assert_eq!(retried.error, None, "retried after {FIRST_BACKOFF:?}");
        assert_eq!(retried.averages.prices.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_caller_answers_with_the_copy_in_hand_while_a_slow_fetch_runs() {
        let cloud = cloud_with_history();
        let cache = SpotHistoryCache::new("us-east-1");
        let m5 = types(&["m5.large"]);
        let before = cache.averages(&cloud, &m5, NOW).await;
        tokio::time::advance(REFRESH).await;
        let gate = Arc::new(Notify::new());
        cloud.state().spot_history_gate = Some(gate.clone());
        cloud.state().spot_history = vec![record("m5.large", NOW - DAY, 0.09)];

        let slow = cache.averages(&cloud, &m5, NOW);
        tokio::pin!(slow);
        assert!(
            futures::poll!(&mut slow).is_pending(),
            "the first caller waits on the fake's answer"
        );
        let second = cache.averages(&cloud, &m5, NOW);
        tokio::pin!(second);
        let Poll::Ready(second) = futures::poll!(&mut second) else {
            panic!("the second caller waited for the first caller's fetch");
        };
        gate.notify_one();
        let first = slow.await;

        assert_eq!(second, before, "the copy in hand, at once");
        assert_eq!(
            cloud.state().spot_history_requests.len(),
            2,
            "one fetch for both callers"
        );
        let m5_now = first.averages.get("us-east-1", "us-east-1a", "m5.large");
        assert!(
            m5_now.is_some_and(|p| (p - 0.09).abs() < 1e-9),
            "{m5_now:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn no_type_in_use_asks_for_nothing() {
        let cloud = cloud_with_history();
        let got = SpotHistoryCache::new("us-east-1")
            .averages(&cloud, &BTreeSet::new(), NOW)
            .await;
        assert!(got.averages.prices.is_empty());
        assert!(cloud.state().spot_history_requests.is_empty());
    }
}
