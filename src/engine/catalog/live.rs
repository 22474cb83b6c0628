//! Overlaying live data on a catalog: instance types from DescribeInstanceTypes, Spot prices from
//! DescribeSpotPriceHistory and buckets from the Spot Advisor feed replace the bundled sample values for
//! one region; on-demand prices from the Price List API replace the bundled ones when there are any.

use std::collections::BTreeMap;

use super::{Arch, Catalog, InstanceType, SpotAdvisor, Zone, is_previous_generation_family};

/// An instance type as the EC2 API describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveInstanceType {
    /// e.g. `m5.large`.
    pub name: String,
    /// vCPUs.
    pub vcpu: u32,
    /// Memory, MiB.
    pub memory_mib: u64,
    /// `x86_64` or `arm64` (others are ignored).
    pub arch: String,
    /// GPUs.
    pub gpu: u32,
    /// Whether AWS lists it as current generation.
    pub current_generation: bool,
}

/// Live data for one region.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LiveData {
    /// Instance types offered in the region (empty: keep the catalog's).
    pub instance_types: Vec<LiveInstanceType>,
    /// Latest Spot price per (zone, instance type), USD per hour (empty: keep the catalog's).
    pub spot_prices: Vec<(String, String, f64)>,
    /// The Spot Advisor feed (None: keep the catalog's buckets).
    pub advisor: Option<SpotAdvisor>,
    /// On-demand USD/hour by instance type from the Price List API (None: keep the catalog's).
    pub on_demand: Option<BTreeMap<String, f64>>,
}

impl Catalog {
    /// A copy of this catalog with `live` data replacing the values of `region`. Types the catalog does
    /// not know are added (they have no on-demand price, so they can only be Spot candidates). The copy
    /// is not "sample" once live Spot prices are in.
    pub fn with_live(&self, region: &str, live: &LiveData) -> Catalog {
        let mut catalog = self.clone();
        for t in &live.instance_types {
            let Some(arch) = Arch::parse(&t.arch) else {
                continue;
            };
            let family = t.name.split('.').next().unwrap_or_default().to_string();
            let current_generation =
                t.current_generation && !is_previous_generation_family(&family);
            let fresh = InstanceType {
                name: t.name.clone(),
                family,
                arch,
                vcpu: t.vcpu,
                memory_mib: t.memory_mib,
                gpu: t.gpu,
                current_generation,
            };
            match catalog.index.get(&t.name) {
                Some(&i) => catalog.types[i] = fresh,
                None => catalog.push_type(fresh),
            }
        }
        if !live.spot_prices.is_empty() {
            let n = catalog.types.len();
            let mut zones: Vec<Zone> = Vec::new();
            for (zone, instance_type, price) in &live.spot_prices {
                let Some(&i) = catalog.index.get(instance_type) else {
                    continue;
                };
                let position = match zones.iter().position(|z| &z.name == zone) {
                    Some(p) => p,
                    None => {
                        zones.push(Zone {
                            name: zone.clone(),
                            spot: vec![None; n],
                        });
                        zones.len() - 1
                    }
                };
                zones[position].spot[i] = Some(*price);
            }
            zones.sort_by(|a, b| a.name.cmp(&b.name));
            catalog.region_mut(region).zones = zones;
            catalog.sample = false;
        }
        if let Some(on_demand) = &live.on_demand {
            let index = catalog.index.clone();
            let target = catalog.region_mut(region);
            target.on_demand.iter_mut().for_each(|p| *p = None);
            for (instance_type, price) in on_demand {
                if let Some(&i) = index.get(instance_type) {
                    target.on_demand[i] = Some(*price);
                }
            }
        }
        if let Some(advisor) = &live.advisor {
            let index = catalog.index.clone();
            let target = catalog.region_mut(region);
            target.advisor.iter_mut().for_each(|b| *b = None);
            for (instance_type, entry) in advisor.entries(region) {
                if let Some(&i) = index.get(instance_type) {
                    target.advisor[i] = Some(entry.bucket);
                }
            }
        }
        catalog.regions.sort_by(|a, b| a.name.cmp(&b.name));
        catalog
    }

    /// Append a type, growing every per-type vector.
    fn push_type(&mut self, t: InstanceType) {
        self.index.insert(t.name.clone(), self.types.len());
        self.types.push(t);
        for region in &mut self.regions {
            region.on_demand.push(None);
            region.advisor.push(None);
            for zone in &mut region.zones {
                zone.spot.push(None);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live_price(zone: &str, t: &str, price: f64) -> (String, String, f64) {
        (zone.to_string(), t.to_string(), price)
    }

    #[test]
    fn live_spot_prices_replace_the_sample_ones_for_the_region_only() {
        let base = Catalog::embedded();
        let live = LiveData {
            spot_prices: vec![live_price("us-east-1a", "m5.large", 0.0123)],
            ..LiveData::default()
        };
        let merged = base.with_live("us-east-1", &live);
        assert_eq!(
            merged.spot_price("us-east-1", "us-east-1a", "m5.large"),
            Some(0.0123)
        );
        assert_eq!(
            merged.spot_price("us-east-1", "us-east-1b", "m5.large"),
            None,
            "zones without live prices are gone"
        );
        assert_eq!(
            merged.on_demand_price("us-east-1", "m5.large"),
            base.on_demand_price("us-east-1", "m5.large")
        );
        assert!(!merged.is_sample());
        let other = base
            .regions()
            .find(|r| *r != "us-east-1")
            .expect("a second region");
        assert_eq!(merged.zones(other), base.zones(other));
    }

    #[test]
    fn unknown_live_types_are_added_and_priced_only_from_live_on_demand_prices() {
        let live = LiveData {
            instance_types: vec![LiveInstanceType {
                name: "zz9.large".into(),
                vcpu: 2,
                memory_mib: 8192,
                arch: "arm64".into(),
                gpu: 0,
                current_generation: true,
            }],
            spot_prices: vec![live_price("us-east-1a", "zz9.large", 0.02)],
            advisor: None,
            on_demand: Some(BTreeMap::from([("m5.large".to_string(), 0.5)])),
        };
        let merged = Catalog::embedded().with_live("us-east-1", &live);
        assert_eq!(merged.on_demand_price("us-east-1", "m5.large"), Some(0.5));
        assert_eq!(
            merged.on_demand_price("us-east-1", "c5.large"),
            None,
            "live on-demand prices replace the region's table"
        );
        assert_eq!(merged.instance_type("zz9.large").map(|t| t.vcpu), Some(2));
        assert_eq!(merged.on_demand_price("us-east-1", "zz9.large"), None);
        assert_eq!(
            merged.spot_price("us-east-1", "us-east-1a", "zz9.large"),
            Some(0.02)
        );
    }

    #[test]
    fn a_live_advisor_feed_replaces_the_buckets() {
        let feed = r#"{"spot_advisor": {"us-east-1": {"Linux": {"m5.large": {"s": 70, "r": 4}}}}}"#;
        let advisor = super::super::parse_spot_advisor(feed).expect("feed parses");
        let live = LiveData {
            advisor: Some(advisor),
            ..LiveData::default()
        };
        let merged = Catalog::embedded().with_live("us-east-1", &live);
        assert_eq!(merged.advisor_bucket("us-east-1", "m5.large"), Some(4));
        assert_eq!(
            merged.advisor_bucket("us-east-1", "c5.large"),
            None,
            "types missing from the feed lose their sample bucket"
        );
    }
}
