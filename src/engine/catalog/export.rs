//! Writing a catalog directory from live data (`cloudoptim catalog export`): the text of the four
//! files, in the format [`Catalog::from_dir`](super::Catalog::from_dir) reads, for one region.
//!
//! Decisions written down here:
//! - Types whose architecture is neither `x86_64` nor `arm64`, or that report 0 vCPUs, are left out
//!   (the catalog cannot hold them); prices of types left out are left out too.
//! - `instance-types.csv` carries the `current_generation` column as the API reports it.
//! - `spot-advisor.json` holds only the region's Linux entries and the feed's `ranges`, in the feed's
//!   own format, so the directory stays small and still reads as the public feed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde_json::{Map, Value, json};

use super::{Arch, LiveInstanceType, SpotAdvisor};

/// The text of the four files of a catalog directory.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportedCatalog {
    /// `instance-types.csv`.
    pub instance_types: String,
    /// `on-demand-prices.csv`.
    pub on_demand_prices: String,
    /// `spot-prices.csv`.
    pub spot_prices: String,
    /// `spot-advisor.json`.
    pub spot_advisor: String,
    /// How many rows each file has, for the command's summary: types, on-demand, spot, advisor.
    pub counts: [usize; 4],
}

/// What a region's catalog is made of.
#[derive(Debug, Clone, Copy)]
pub struct ExportInput<'a> {
    /// The region, e.g. `eu-west-3`.
    pub region: &'a str,
    /// DescribeInstanceTypes.
    pub instance_types: &'a [LiveInstanceType],
    /// On-demand USD/hour by type (the Price List API).
    pub on_demand: &'a BTreeMap<String, f64>,
    /// Latest Spot price per (zone, type).
    pub spot_prices: &'a [(String, String, f64)],
    /// The Spot Advisor feed.
    pub advisor: &'a SpotAdvisor,
}

/// The four files for `input.region`.
pub fn export(input: &ExportInput<'_>) -> ExportedCatalog {
    let mut types: Vec<&LiveInstanceType> = input
        .instance_types
        .iter()
        .filter(|t| Arch::parse(&t.arch).is_some() && t.vcpu > 0 && t.name.contains('.'))
        .collect();
    types.sort_by(|a, b| a.name.cmp(&b.name));
    types.dedup_by(|a, b| a.name == b.name);
    let known: BTreeSet<&str> = types.iter().map(|t| t.name.as_str()).collect();

    let mut instance_types =
        String::from("instance_type,family,arch,vcpu,memory_mib,gpu,current_generation\n");
    for t in &types {
        let family = t.name.split('.').next().unwrap_or_default();
        let _ = writeln!(
            instance_types,
            "{},{family},{},{},{},{},{}",
            t.name, t.arch, t.vcpu, t.memory_mib, t.gpu, t.current_generation
        );
    }

    let mut on_demand_prices = String::from("region,instance_type,price\n");
    let mut on_demand_rows = 0;
    for (name, price) in input.on_demand {
        if known.contains(name.as_str()) {
            let _ = writeln!(on_demand_prices, "{},{name},{price}", input.region);
            on_demand_rows += 1;
        }
    }

    let mut spot: Vec<&(String, String, f64)> = input
        .spot_prices
        .iter()
        .filter(|(zone, name, _)| known.contains(name.as_str()) && zone.starts_with(input.region))
        .collect();
    spot.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    spot.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
    let mut spot_prices = String::from("region,zone,instance_type,price\n");
    for (zone, name, price) in &spot {
        let _ = writeln!(spot_prices, "{},{zone},{name},{price}", input.region);
    }

    let mut linux = Map::new();
    for (name, entry) in input.advisor.entries(input.region) {
        let mut value = Map::new();
        value.insert("r".into(), json!(entry.bucket));
        if let Some(s) = entry.savings_percent {
            value.insert("s".into(), json!(s));
        }
        linux.insert(name.to_string(), Value::Object(value));
    }
    let advisor_rows = linux.len();
    let ranges: Vec<Value> = input
        .advisor
        .ranges()
        .iter()
        .map(|r| json!({"index": r.index, "label": r.label, "max": r.max}))
        .collect();
    let feed = json!({
        "ranges": ranges,
        "spot_advisor": {input.region: {"Linux": Value::Object(linux)}},
    });
    let spot_advisor = serde_json::to_string_pretty(&feed).unwrap_or_default() + "\n";

    ExportedCatalog {
        counts: [types.len(), on_demand_rows, spot.len(), advisor_rows],
        instance_types,
        on_demand_prices,
        spot_prices,
        spot_advisor,
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Catalog, CatalogText, parse_spot_advisor};
    use super::*;

    fn live(name: &str, arch: &str, vcpu: u32, gpu: u32) -> LiveInstanceType {
        LiveInstanceType {
            name: name.into(),
            vcpu,
            memory_mib: 16384,
            arch: arch.into(),
            gpu,
            current_generation: true,
        }
    }

    #[test]
    fn the_exported_files_read_back_as_the_same_catalog() {
        let types = [
            live("g5.xlarge", "x86_64", 4, 1),
            live("m7g.large", "arm64", 2, 0),
            live("t1.micro", "i386", 1, 0),
        ];
        let on_demand = BTreeMap::from([
            ("g5.xlarge".to_string(), 1.123),
            ("m7g.large".to_string(), 0.0952),
            ("t1.micro".to_string(), 0.02),
        ]);
        let spot = [
            ("eu-west-3a".to_string(), "g5.xlarge".to_string(), 0.45),
            ("eu-west-3b".to_string(), "m7g.large".to_string(), 0.03),
        ];
        let advisor = parse_spot_advisor(
            r#"{"ranges":[{"index":0,"label":"<5%","max":5}],
                "spot_advisor":{"eu-west-3":{"Linux":{"g5.xlarge":{"s":60,"r":2}}},
                                "us-east-1":{"Linux":{"m7g.large":{"s":60,"r":1}}}}}"#,
        )
        .expect("feed");
        let out = export(&ExportInput {
            region: "eu-west-3",
            instance_types: &types,
            on_demand: &on_demand,
            spot_prices: &spot,
            advisor: &advisor,
        });
        assert_eq!(out.counts, [2, 2, 2, 1]);
        let catalog = Catalog::parse(&CatalogText {
            dir: "exported",
            instance_types: &out.instance_types,
            on_demand_prices: &out.on_demand_prices,
            spot_prices: &out.spot_prices,
            spot_advisor: &out.spot_advisor,
        })
        .expect("the exported catalog parses");
        assert_eq!(catalog.instance_type("g5.xlarge").map(|t| t.gpu), Some(1));
        assert_eq!(
            catalog.on_demand_price("eu-west-3", "g5.xlarge"),
            Some(1.123)
        );
        assert_eq!(
            catalog.spot_price("eu-west-3", "eu-west-3a", "g5.xlarge"),
            Some(0.45)
        );
        assert_eq!(catalog.advisor_bucket("eu-west-3", "g5.xlarge"), Some(2));
        assert_eq!(catalog.zones("eu-west-3"), vec!["eu-west-3a", "eu-west-3b"]);
        assert!(catalog.instance_type("t1.micro").is_none());
    }
}
