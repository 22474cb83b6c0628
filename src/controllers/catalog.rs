//! The catalog the controllers rank with: on-demand prices from the bundled catalog (or `--catalog`;
//! the EC2 APIs CloudOptim may call have no on-demand prices), instance types from
//! DescribeInstanceTypes (cached 6 h), Spot prices from DescribeSpotPriceHistory (cached 5 min) and
//! interruption buckets from the Spot Advisor feed (cached 6 h, last good copy kept).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use crate::cloud::spot_advisor::{AdvisorCache, Freshness};
use crate::cloud::{Cloud, CloudError, InstanceTypeInfo, SpotPrice};
use crate::engine::catalog::{Catalog, LiveData, LiveInstanceType};

const TYPES_TTL: Duration = Duration::from_secs(6 * 3600);
const PRICES_TTL: Duration = Duration::from_secs(5 * 60);

/// Cached live data and the catalog built from it.
pub struct LiveCatalog {
    base: Arc<Catalog>,
    region: String,
    advisor: AdvisorCache,
    types: Mutex<Option<(Instant, Arc<Vec<InstanceTypeInfo>>)>>,
    prices: Mutex<Option<(Instant, Arc<Vec<SpotPrice>>)>>,
}

/// A catalog ready for ranking, and how fresh its Spot Advisor data is.
pub struct Snapshot {
    /// The merged catalog.
    pub catalog: Arc<Catalog>,
    /// Freshness of the interruption buckets.
    pub advisor: Freshness,
}

impl LiveCatalog {
    /// A live catalog over `base` for `region`.
    pub fn new(
        base: Arc<Catalog>,
        region: impl Into<String>,
        advisor: AdvisorCache,
    ) -> LiveCatalog {
        LiveCatalog {
            base,
            region: region.into(),
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

    /// The merged catalog, refreshing whatever is due.
    pub async fn snapshot<C: Cloud>(&self, cloud: &C) -> Result<Snapshot, CloudError> {
        let types = Self::cached(&self.types, TYPES_TTL, cloud.instance_types()).await?;
        let prices = Self::cached(&self.prices, PRICES_TTL, cloud.spot_prices(&[])).await?;
        let (advisor, freshness) = self.advisor.get().await;
        let live = LiveData {
            instance_types: types
                .iter()
                .map(|t| LiveInstanceType {
                    name: t.name.clone(),
                    vcpu: t.vcpu,
                    memory_mib: t.memory_mib,
                    arch: t.arch.clone(),
                    gpu: t.gpu,
                    current_generation: t.current_generation,
                })
                .collect(),
            spot_prices: prices
                .iter()
                .map(|p| (p.zone.clone(), p.instance_type.clone(), p.price))
                .collect(),
            advisor: advisor.as_deref().cloned(),
            on_demand: None,
        };
        Ok(Snapshot {
            catalog: Arc::new(self.base.with_live(&self.region, &live)),
            advisor: freshness,
        })
    }
}
