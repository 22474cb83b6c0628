//! The 30-day Spot price history of the instance types in use, for savings estimates (issue #18): the
//! OptimizationPolicy status estimates with the time-weighted 30-day average per (zone, type)
//! ([`crate::engine::spot_average`]); ranking keeps the latest prices.
//!
//! Histories are fetched with [`Cloud::spot_price_history`] only for the types a policy's nodes run
//! (never every type of the region), kept per type for 6 h, and a type whose history is missing (never
//! fetched successfully, or AWS has no record) is estimated at its latest price. A failed fetch keeps
//! the histories in hand and is not tried again for [`RETRY`]; one fetch has a [`FETCH_DEADLINE`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::cloud::{Cloud, CloudError, SpotPricePoint};
use crate::engine::spot_average::{self, SpotAverages, WINDOW_SECS};

/// How long a type's fetched history is used before it is fetched again.
pub const REFRESH: Duration = Duration::from_secs(6 * 3600);
/// The longest one fetch (every page and the SDK's retries) may take.
pub const FETCH_DEADLINE: Duration = Duration::from_secs(60);
/// After a failed fetch, how long before the next attempt.
pub const RETRY: Duration = Duration::from_secs(10 * 60);

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

#[derive(Default)]
struct State {
    /// Instance type -> (when fetched, its records).
    histories: BTreeMap<String, (Instant, Vec<SpotPricePoint>)>,
    /// The last failure and when the next attempt may be made.
    failed: Option<(HistoryError, Instant)>,
}

/// Spot price histories of one region, per instance type.
pub struct SpotHistoryCache {
    region: String,
    state: Mutex<State>,
}

impl SpotHistoryCache {
    /// An empty cache for `region`.
    pub fn new(region: impl Into<String>) -> SpotHistoryCache {
        SpotHistoryCache {
            region: region.into(),
            state: Mutex::new(State::default()),
        }
    }

    /// The 30-day averages of `types` as of `now` (seconds since the epoch), fetching the histories that
    /// are missing or older than [`REFRESH`]. The lock is held during a fetch (at most
    /// [`FETCH_DEADLINE`]), so concurrent passes do not fetch the same types twice.
    pub async fn averages<C: Cloud>(
        &self,
        cloud: &C,
        types: &BTreeSet<String>,
        now: i64,
    ) -> Averages {
        let mut state = self.state.lock().await;
        let due: Vec<String> = types
            .iter()
            .filter(|t| {
                state
                    .histories
                    .get(*t)
                    .is_none_or(|(at, _)| at.elapsed() >= REFRESH)
            })
            .cloned()
            .collect();
        let retry_pending = state
            .failed
            .as_ref()
            .is_some_and(|(_, next)| Instant::now() < *next);
        if !due.is_empty() && !retry_pending {
            let fetch = cloud.spot_price_history(&due, now.saturating_sub(WINDOW_SECS));
            let result = match tokio::time::timeout(FETCH_DEADLINE, fetch).await {
                Ok(Ok(records)) => Ok(records),
                Ok(Err(e)) => Err(HistoryError::Cloud(e)),
                Err(_) => Err(HistoryError::Deadline(FETCH_DEADLINE)),
            };
            match result {
                Ok(records) => {
                    let fetched = Instant::now();
                    for t in &due {
                        let mine = records
                            .iter()
                            .filter(|r| &r.instance_type == t)
                            .cloned()
                            .collect();
                        state.histories.insert(t.clone(), (fetched, mine));
                    }
                    state.failed = None;
                }
                Err(e) => {
                    tracing::warn!(error = %e, types = due.len(), "Spot price history not refreshed; savings estimates use the latest Spot prices where no history is in hand");
                    state.failed = Some((e, Instant::now() + RETRY));
                }
            }
        }
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
            error: state.failed.as_ref().map(|(e, _)| e.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
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

    #[tokio::test(start_paused = true)]
    async fn a_failed_fetch_keeps_the_histories_in_hand_and_waits_before_trying_again() {
        let cloud = cloud_with_history();
        let cache = SpotHistoryCache::new("us-east-1");
        cache.averages(&cloud, &types(&["m5.large"]), NOW).await;
        tokio::time::advance(REFRESH).await;
        cloud.state().fail_next = Some(CloudError::Other {
            op: "DescribeSpotPriceHistory",
            message: "boom".into(),
            request_id: None,
        });

        let failed = cache
            .averages(&cloud, &types(&["m5.large", "c5.large"]), NOW)
            .await;
        let again = cache
            .averages(&cloud, &types(&["m5.large", "c5.large"]), NOW)
            .await;

        assert!(failed.error.is_some());
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
        assert_eq!(cloud.state().spot_history_requests.len(), 2, "no retry yet");
        assert_eq!(again.error, failed.error);
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
