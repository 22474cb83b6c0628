//! The catalog the controllers rank with: on-demand prices from the Price List API (refreshed every
//! 12 h, last good copy kept, the bundled catalog's or `--catalog`'s table until a fetch succeeds;
//! [`on_demand`]), instance types from DescribeInstanceTypes (cached 6 h), Spot prices from
//! DescribeSpotPriceHistory (cached 5 min) and interruption buckets from the Spot Advisor feed (cached
//! 6 h, last good copy kept). Savings estimates also use the 30-day average Spot price of the types in
//! use ([`spot_history`], cached 6 h per type).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

pub mod on_demand;
pub mod spot_history;

pub use on_demand::{OnDemandCache, PriceSource};
pub use spot_history::{Averages, HistoryError, SpotHistoryCache};

use crate::cloud::spot_advisor::{AdvisorCache, Freshness};
use crate::cloud::{Cloud, CloudError, SpotPrice};
use crate::engine::catalog::{Catalog, LiveData, LiveInstanceType};
use crate::metrics::Metrics;

const TYPES_TTL: Duration = Duration::from_secs(6 * 3600);
const PRICES_TTL: Duration = Duration::from_secs(5 * 60);

/// Cached live data and the catalog built from it.
pub struct LiveCatalog {
    base: Arc<Catalog>,
    region: String,
    advisor: AdvisorCache,
    on_demand: OnDemandCache,
    spot_history: SpotHistoryCache,
    types: Mutex<Option<(Instant, Arc<Vec<LiveInstanceType>>)>>,
    prices: Mutex<Option<(Instant, Arc<Vec<SpotPrice>>)>>,
}

/// A catalog ready for ranking, and how fresh its Spot Advisor data and on-demand prices are.
pub struct CatalogView {
    /// The merged catalog.
    pub catalog: Arc<Catalog>,
    /// Freshness of the interruption buckets.
    pub advisor: Freshness,
    /// Where the region's on-demand prices came from, and their age.
    pub prices: PriceSource,
}

impl LiveCatalog {
    /// A live catalog over `base` for `region`.
    pub fn new(
        base: Arc<Catalog>,
        region: impl Into<String>,
        advisor: AdvisorCache,
        metrics: Metrics,
    ) -> LiveCatalog {
        let region = region.into();
        // The embedded catalog is the sample one; a `--catalog` directory never is.
        let table = if base.is_sample() {
            "embedded catalog"
        } else {
            "--catalog table"
        };
        LiveCatalog {
            on_demand: OnDemandCache::new(region.clone(), table, metrics),
            spot_history: SpotHistoryCache::new(region.clone()),
            base,
            region,
            advisor,
            types: Mutex::new(None),
            prices: Mutex::new(None),
        }
    }

    async fn cached<T, F>(
        slot: &Mutex<Option<(Instant, Arc<T>)>>,
        ttl: Duration,
        fetch: F,
    ) -> Result<Arc<T>, CloudError>
    where
        F: std::future::Future<Output = Result<T, CloudError>>,
    {
        let mut slot = slot.lock().await;
        if let Some((at, value)) = slot.as_ref()
            && at.elapsed() < ttl
        {
            return Ok(value.clone());
        }
        match fetch.await {
            Ok(value) => {
                let value = Arc::new(value);
                *slot = Some((Instant::now(), value.clone()));
                Ok(value)
            }
            // A failed refresh keeps serving the previous value until the next attempt.
            Err(e) => slot.as_ref().map(|(_, v)| v.clone()).ok_or(e),
        }
    }

    /// The 30-day average Spot prices of `instance_types` (the types a policy's nodes run), for savings
    /// estimates; types without a history are left out (estimated at their latest price).
    pub async fn spot_averages<C: Cloud>(
        &self,
        cloud: &C,
        instance_types: &std::collections::BTreeSet<String>,
    ) -> Averages {
        self.spot_history
            .averages(cloud, instance_types, chrono::Utc::now().timestamp())
            .await
    }

    /// The merged catalog, refreshing whatever is due.
    pub async fn view<C: Cloud>(&self, cloud: &C) -> Result<CatalogView, CloudError> {
        let types = Self::cached(&self.types, TYPES_TTL, cloud.instance_types()).await?;
        let prices = Self::cached(&self.prices, PRICES_TTL, cloud.spot_prices(&[])).await?;
        let (advisor, freshness) = self.advisor.get().await;
        let (on_demand, prices_source) = self.on_demand.get(cloud).await;
        let live = LiveData {
            instance_types: types.to_vec(),
            spot_prices: prices
                .iter()
                .map(|p| (p.zone.clone(), p.instance_type.clone(), p.price))
                .collect(),
            advisor: advisor.as_deref().cloned(),
            on_demand: on_demand.as_deref().cloned(),
        };
        Ok(CatalogView {
            catalog: Arc::new(self.base.with_live(&self.region, &live)),
            advisor: freshness,
            prices: prices_source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::OnDemandPrices;
    use crate::cloud::fake::FakeCloud;

    const REGION: &str = "us-east-1";

    fn live_catalog() -> LiveCatalog {
        let metrics = Metrics::new().expect("metrics");
        let advisor =
            AdvisorCache::new("file:///nonexistent/cloudoptim/feed.json", metrics.clone());
        LiveCatalog::new(
            Arc::new(Catalog::embedded().clone()),
            REGION,
            advisor,
            metrics,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn live_on_demand_prices_replace_the_catalogs_and_the_snapshot_says_live() {
        let cloud = FakeCloud::default();
        cloud.state().on_demand.insert(
            REGION.into(),
            OnDemandPrices {
                prices: [("m5.large".to_string(), 0.5)].into(),
                skipped: Vec::new(),
            },
        );

        let snapshot = live_catalog().view(&cloud).await.expect("snapshot");

        assert_eq!(
            snapshot.catalog.on_demand_price(REGION, "m5.large"),
            Some(0.5)
        );
        assert_eq!(
            snapshot.prices,
            PriceSource::Live {
                age: Duration::ZERO
            }
        );
    }

    #[tokio::test]
    async fn without_live_prices_the_embedded_table_prices_and_the_snapshot_says_embedded() {
        let cloud = FakeCloud::default();

        let snapshot = live_catalog().view(&cloud).await.expect("snapshot");

        assert_eq!(
            snapshot.catalog.on_demand_price(REGION, "m5.large"),
            Catalog::embedded().on_demand_price(REGION, "m5.large")
        );
        assert!(
            matches!(
                snapshot.prices,
                PriceSource::Embedded {
                    table: "embedded catalog",
                    error: Some(_)
                }
            ),
            "{:?}",
            snapshot.prices
        );
    }
}
