//! On-demand prices of the cluster's region from the AWS Price List API (`pricing:GetProducts`
//! through [`Cloud::on_demand_prices`]), refreshed every 12 h, the last good copy kept when a refresh
//! fails, the catalog's own table (embedded or `--catalog`) used while no fetch ever succeeded.
//!
//! Shaped like the Spot Advisor cache ([`crate::cloud::spot_advisor::AdvisorCache`]): the fetch runs
//! outside the state's lock with one total deadline (every page together), callers that find another
//! one refreshing get the prices in hand at once (only the very first answer is waited for, so the
//! first ranking uses live prices when the API answers), and a failure is retried after a backoff
//! (30 s, doubling, at most 12 h), never on every reconcile. Where the prices came from and how old
//! they are is reported as a [`PriceSource`], in `cloudoptim_on_demand_prices_source{region,source}`
//! and `cloudoptim_on_demand_prices_age_seconds{region}`.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::cloud::{Cloud, CloudError};
use crate::metrics::Metrics;
use crate::retry::Backoff;

/// How often the prices are fetched again after a success (AWS changes them a few times a year).
pub const REFRESH: Duration = Duration::from_secs(12 * 3600);
/// The longest one whole fetch (every GetProducts page and the SDK's retries) may take.
pub const FETCH_DEADLINE: Duration = Duration::from_secs(60);
/// The first retry after a failure; it doubles up to [`REFRESH`].
const FIRST_BACKOFF: Duration = Duration::from_secs(30);

/// USD per hour by instance type.
pub type Prices = BTreeMap<String, f64>;

/// Why a fetch gave no prices.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FetchError {
    /// The Price List API call failed.
    #[error(transparent)]
    Cloud(#[from] CloudError),
    /// The pages did not all arrive in time.
    #[error("GetProducts: no complete answer within {0:?}")]
    Deadline(Duration),
    /// The answer held no usable price for the region (it would blank the region's table).
    #[error("GetProducts: no Linux on-demand price for {0} in the answer")]
    Empty(String),
}

/// Where the on-demand prices in use came from, and how old they are.
#[derive(Debug, Clone, PartialEq)]
pub enum PriceSource {
    /// Fetched from the Price List API, the last attempt a success.
    Live {
        /// Time since the fetch.
        age: Duration,
    },
    /// The last refresh failed; an older fetched copy is in use.
    LastGood {
        /// Time since the copy was fetched.
        age: Duration,
        /// Why the last refresh failed.
        error: FetchError,
    },
    /// Never fetched successfully: the catalog's own table is in use.
    Embedded {
        /// What the table is, e.g. `embedded catalog`.
        table: &'static str,
        /// Why the fetch failed (`None`: not tried yet).
        error: Option<FetchError>,
    },
}

impl PriceSource {
    /// Every value of the `source` label.
    pub const METRIC_LABELS: [&'static str; 3] = ["live", "last_good", "embedded"];

    /// The `source` label of `cloudoptim_on_demand_prices_source`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            PriceSource::Live { .. } => "live",
            PriceSource::LastGood { .. } => "last_good",
            PriceSource::Embedded { .. } => "embedded",
        }
    }

    /// The age of fetched prices (`None`: the catalog's table, whose age is not known).
    pub fn age(&self) -> Option<Duration> {
        match self {
            PriceSource::Live { age } | PriceSource::LastGood { age, .. } => Some(*age),
            PriceSource::Embedded { .. } => None,
        }
    }
}

/// How a person reads an age: `40 s`, `12 min`, `5 h`.
fn human(age: Duration) -> String {
    let secs = age.as_secs();
    match secs {
        0..120 => format!("{secs} s"),
        120..7200 => format!("{} min", secs / 60),
        _ => format!("{} h", secs / 3600),
    }
}

impl fmt::Display for PriceSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PriceSource::Live { age } => {
                write!(f, "live from the Price List API ({} old)", human(*age))
            }
            PriceSource::LastGood { age, error } => write!(
                f,
                "last good copy from the Price List API ({} old; the last refresh failed: {error})",
                human(*age)
            ),
            PriceSource::Embedded {
                table,
                error: Some(error),
            } => write!(f, "{table} (the Price List API failed: {error})"),
            PriceSource::Embedded { table, error: None } => {
                write!(f, "{table} (the Price List API not asked yet)")
            }
        }
    }
}

/// The on-demand prices of one region, fetched when due.
pub struct OnDemandCache {
    region: String,
    /// What the fallback table is called in messages.
    table: &'static str,
    metrics: Metrics,
    deadline: Duration,
    state: std::sync::Mutex<State>,
    refreshing: tokio::sync::Mutex<()>,
}

/// What the cache holds.
struct State {
    /// The last good prices and when they were fetched.
    fetched: Option<(Instant, Arc<Prices>)>,
    /// Why the last attempt failed (`None` after a success or before any attempt).
    error: Option<FetchError>,
    /// When the next fetch is due (`None`: never tried).
    next_attempt: Option<Instant>,
    /// Delays after failed attempts, reset by a success.
    backoff: Backoff,
}

/// The state as one caller sees it.
struct Current {
    prices: Option<Arc<Prices>>,
    source: PriceSource,
    due: bool,
    never_tried: bool,
}

impl OnDemandCache {
    /// A cache for `region` (nothing fetched yet); `table` names the fallback in messages.
    pub fn new(region: impl Into<String>, table: &'static str, metrics: Metrics) -> OnDemandCache {
        OnDemandCache {
            region: region.into(),
            table,
            metrics,
            deadline: FETCH_DEADLINE,
            state: std::sync::Mutex::new(State {
                fetched: None,
                error: None,
                next_attempt: None,
                backoff: Backoff::new(FIRST_BACKOFF, REFRESH),
            }),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    /// The same cache with another total fetch deadline (tests).
    pub fn with_deadline(mut self, deadline: Duration) -> OnDemandCache {
        self.deadline = deadline;
        self
    }

    fn current(&self) -> Current {
        let Ok(s) = self.state.lock() else {
            return Current {
                prices: None,
                source: PriceSource::Embedded {
                    table: self.table,
                    error: None,
                },
                due: false,
                never_tried: false,
            };
        };
        let now = Instant::now();
        let source = match (&s.fetched, &s.error) {
            (Some((at, _)), None) => PriceSource::Live { age: now - *at },
            (Some((at, _)), Some(error)) => PriceSource::LastGood {
                age: now - *at,
                error: error.clone(),
            },
            (None, error) => PriceSource::Embedded {
                table: self.table,
                error: error.clone(),
            },
        };
        Current {
            prices: s.fetched.as_ref().map(|(_, p)| p.clone()),
            source,
            due: s.next_attempt.is_none_or(|at| now >= at),
            never_tried: s.next_attempt.is_none(),
        }
    }

    /// The prices to use (`None`: keep the catalog's table) and where they came from, fetching when
    /// due; the metrics are set from the answer.
    pub async fn get<C: Cloud>(&self, cloud: &C) -> (Option<Arc<Prices>>, PriceSource) {
        let first = self.current();
        if first.due {
            let guard = match self.refreshing.try_lock() {
                Ok(guard) => Some(guard),
                // Someone else is fetching: use what is there, except before the very first answer.
                Err(_) if first.never_tried => Some(self.refreshing.lock().await),
                Err(_) => None,
            };
            if guard.is_some() && self.current().due {
                self.refresh(cloud).await;
            }
        }
        let Current { prices, source, .. } = self.current();
        self.report(&source);
        (prices, source)
    }

    /// One fetch within the deadline, then the state updated (the lock is not held while fetching).
    async fn refresh<C: Cloud>(&self, cloud: &C) {
        let result = match tokio::time::timeout(self.deadline, cloud.on_demand_prices(&self.region))
            .await
        {
            Ok(Ok(prices)) if prices.prices.is_empty() => {
                Err(FetchError::Empty(self.region.clone()))
            }
            Ok(Ok(prices)) => {
                if !prices.skipped.is_empty() {
                    tracing::warn!(region = %self.region, skipped = prices.skipped.len(), "Price List API: unreadable products skipped; the rest of the prices are in use");
                }
                Ok(prices.prices)
            }
            Ok(Err(e)) => Err(FetchError::Cloud(e)),
            Err(_) => Err(FetchError::Deadline(self.deadline)),
        };
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let now = Instant::now();
        match result {
            Ok(prices) => {
                tracing::info!(region = %self.region, types = prices.len(), "on-demand prices fetched from the Price List API");
                state.fetched = Some((now, Arc::new(prices)));
                state.error = None;
                state.backoff.reset();
                state.next_attempt = Some(now + REFRESH);
            }
            Err(e) => {
                let retry_in = state.backoff.next_delay();
                state.next_attempt = Some(now + retry_in);
                if state.fetched.is_some() {
                    tracing::warn!(region = %self.region, error = %e, ?retry_in, "on-demand price refresh failed; keeping the last good copy");
                } else {
                    tracing::warn!(region = %self.region, error = %e, ?retry_in, table = self.table, "Price List API unavailable; pricing on-demand from the catalog's table");
                }
                state.error = Some(e);
            }
        }
    }

    /// One source series at 1, the others at 0; the age series only while fetched prices are in use.
    fn report(&self, source: &PriceSource) {
        for label in PriceSource::METRIC_LABELS {
            self.metrics
                .on_demand_prices_source
                .with_label_values(&[&self.region, label])
                .set(i64::from(label == source.metric_label()));
        }
        let age = &self.metrics.on_demand_prices_age;
        match source.age() {
            Some(age_now) => age
                .with_label_values(&[&self.region])
                .set(i64::try_from(age_now.as_secs()).unwrap_or(i64::MAX)),
            // Nothing fetched: no age to report (the source series says `embedded`).
            None => {
                let _ = age.remove_label_values(&[&self.region]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::OnDemandPrices;
    use crate::cloud::fake::FakeCloud;

    const REGION: &str = "eu-west-3";
    const HOUR: Duration = Duration::from_secs(3600);

    fn cloud_with(price: f64) -> FakeCloud {
        let cloud = FakeCloud::default();
        set_price(&cloud, price);
        cloud
    }

    fn set_price(cloud: &FakeCloud, price: f64) {
        cloud.state().on_demand.insert(
            REGION.into(),
            OnDemandPrices {
                prices: BTreeMap::from([("m5.large".to_string(), price)]),
                skipped: Vec::new(),
            },
        );
    }

    fn cache() -> (OnDemandCache, Metrics) {
        let metrics = Metrics::new().expect("metrics");
        (
            OnDemandCache::new(REGION, "embedded catalog", metrics.clone()),
            metrics,
        )
    }

    fn price(prices: &Option<Arc<Prices>>) -> Option<f64> {
        prices.as_ref().and_then(|p| p.get("m5.large").copied())
    }

    fn fetches(cloud: &FakeCloud) -> usize {
        cloud.state().on_demand_fetches
    }

    fn throttled() -> CloudError {
        CloudError::Throttled {
            op: "GetProducts",
            request_id: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_fetched_table_is_live_and_not_fetched_again_for_12_hours() {
        let cloud = cloud_with(0.112);
        let (cache, _) = cache();

        let (prices, source) = cache.get(&cloud).await;
        assert_eq!(price(&prices), Some(0.112));
        assert_eq!(
            source,
            PriceSource::Live {
                age: Duration::ZERO
            }
        );

        tokio::time::advance(11 * HOUR).await;
        for _ in 0..5 {
            cache.get(&cloud).await;
        }
        let (_, source) = cache.get(&cloud).await;
        assert_eq!(source, PriceSource::Live { age: 11 * HOUR });
        assert_eq!(fetches(&cloud), 1, "one fetch, whatever the callers");

        set_price(&cloud, 0.120);
        tokio::time::advance(HOUR).await;
        let (prices, source) = cache.get(&cloud).await;
        assert_eq!(fetches(&cloud), 2, "due again after 12 h");
        assert_eq!(price(&prices), Some(0.120));
        assert_eq!(
            source,
            PriceSource::Live {
                age: Duration::ZERO
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn without_any_good_fetch_the_catalog_table_is_used_and_retried_only_after_the_backoff() {
        let cloud = FakeCloud::default();
        cloud.state().fail_next = Some(throttled());
        let (cache, _) = cache();

        let (prices, source) = cache.get(&cloud).await;
        assert!(prices.is_none(), "keep the catalog's table");
        assert_eq!(
            source,
            PriceSource::Embedded {
                table: "embedded catalog",
                error: Some(FetchError::Cloud(throttled())),
            }
        );
        for _ in 0..5 {
            cache.get(&cloud).await;
        }
        assert_eq!(fetches(&cloud), 1, "no fetch per call during the backoff");

        tokio::time::advance(FIRST_BACKOFF).await;
        let (_, source) = cache.get(&cloud).await;
        assert_eq!(fetches(&cloud), 2, "retried after 30 s");
        assert_eq!(
            source,
            PriceSource::Embedded {
                table: "embedded catalog",
                error: Some(FetchError::Empty(REGION.into())),
            },
            "an answer without prices for the region is a failure, not an empty table"
        );

        tokio::time::advance(FIRST_BACKOFF).await;
        cache.get(&cloud).await;
        assert_eq!(fetches(&cloud), 2, "the second delay is 60 s");
        tokio::time::advance(FIRST_BACKOFF).await;
        cache.get(&cloud).await;
        assert_eq!(fetches(&cloud), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_refresh_keeps_the_last_good_copy_until_a_fetch_succeeds() {
        let cloud = cloud_with(0.112);
        let (cache, _) = cache();
        cache.get(&cloud).await;

        tokio::time::advance(REFRESH).await;
        cloud.state().fail_next = Some(throttled());
        let (prices, source) = cache.get(&cloud).await;
        assert_eq!(price(&prices), Some(0.112), "the last good copy");
        assert_eq!(
            source,
            PriceSource::LastGood {
                age: REFRESH,
                error: FetchError::Cloud(throttled()),
            }
        );

        set_price(&cloud, 0.120);
        tokio::time::advance(FIRST_BACKOFF).await;
        let (prices, source) = cache.get(&cloud).await;
        assert_eq!(price(&prices), Some(0.120));
        assert_eq!(
            source,
            PriceSource::Live {
                age: Duration::ZERO
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_fetch_slower_than_the_deadline_fails_at_the_deadline() {
        let cloud = cloud_with(0.112);
        cloud.state().on_demand_delay = Some(10 * FETCH_DEADLINE);
        let (cache, _) = cache();
        let started = Instant::now();

        let (prices, source) = cache.get(&cloud).await;

        assert_eq!(started.elapsed(), FETCH_DEADLINE);
        assert!(prices.is_none());
        assert_eq!(
            source,
            PriceSource::Embedded {
                table: "embedded catalog",
                error: Some(FetchError::Deadline(FETCH_DEADLINE)),
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn callers_do_not_wait_for_a_refresh_another_caller_runs() {
        let cloud = cloud_with(0.112);
        let (cache, _) = cache();
        cache.get(&cloud).await;
        tokio::time::advance(REFRESH).await;
        let held = cache.refreshing.lock().await;

        let (prices, source) = cache.get(&cloud).await;

        assert_eq!(price(&prices), Some(0.112), "the copy in hand, at once");
        assert_eq!(source, PriceSource::Live { age: REFRESH });
        assert_eq!(fetches(&cloud), 1);
        drop(held);
    }

    #[tokio::test(start_paused = true)]
    async fn the_metrics_name_the_one_source_in_use_and_the_age_of_fetched_prices() {
        let cloud = FakeCloud::default();
        let (cache, metrics) = cache();
        cache.get(&cloud).await;
        let age = format!("cloudoptim_on_demand_prices_age_seconds{{region=\"{REGION}\"}}");
        let text = metrics.render();
        assert!(
            text.contains(&format!("{REGION}\",source=\"embedded\"}} 1")),
            "{text}"
        );
        assert!(text.contains(&format!("{REGION}\",source=\"live\"}} 0")));
        assert!(
            !text.contains(&age),
            "no age for the catalog's table: {text}"
        );

        set_price(&cloud, 0.112);
        tokio::time::advance(FIRST_BACKOFF).await;
        cache.get(&cloud).await;
        tokio::time::advance(2 * HOUR).await;
        cache.get(&cloud).await;
        let text = metrics.render();
        assert!(
            text.contains(&format!("{REGION}\",source=\"live\"}} 1")),
            "{text}"
        );
        assert!(text.contains(&format!("{REGION}\",source=\"embedded\"}} 0")));
        assert!(text.contains(&format!("{REGION}\",source=\"last_good\"}} 0")));
        assert!(text.contains(&format!("{age} 7200")), "{text}");
    }

    #[test]
    fn the_message_names_the_source_its_age_and_the_failure() {
        let error = FetchError::Cloud(throttled());
        assert_eq!(
            PriceSource::Live { age: 2 * HOUR }.to_string(),
            "live from the Price List API (2 h old)"
        );
        assert_eq!(
            PriceSource::Live {
                age: Duration::from_secs(90)
            }
            .to_string(),
            "live from the Price List API (90 s old)"
        );
        let last_good = PriceSource::LastGood {
            age: Duration::from_secs(13 * 60),
            error: error.clone(),
        }
        .to_string();
        assert!(
            last_good.starts_with(
                "last good copy from the Price List API (13 min old; the last refresh failed: GetProducts: throttled"
            ),
            "{last_good}"
        );
        let embedded = PriceSource::Embedded {
            table: "embedded catalog",
            error: Some(error),
        }
        .to_string();
        assert!(
            embedded
                .starts_with("embedded catalog (the Price List API failed: GetProducts: throttled"),
            "{embedded}"
        );
    }
}
