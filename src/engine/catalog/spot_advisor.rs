//! The public Spot Advisor feed (`spot-advisor-data.json`), in its own format:
//! `{"instance_types": {...}, "ranges": [...], "spot_advisor": {"<region>": {"Linux": {"<type>": {"s": 70,
//! "r": 1}}, "Windows": {...}}}}`. Only Linux entries are kept; unknown fields are ignored so the feed may
//! grow without breaking us.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::CatalogError;

/// The highest interruption bucket: `r` = 0..4 for <5%, 5-10%, 10-15%, 15-20%, >20%.
pub const MAX_BUCKET: u8 = 4;

/// Parsed Spot Advisor data: interruption buckets per (region, instance type), Linux only.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpotAdvisor {
    ranges: Vec<AdvisorRange>,
    regions: BTreeMap<String, BTreeMap<String, AdvisorEntry>>,
}

/// One Spot Advisor entry for an instance type in a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdvisorEntry {
    /// Interruption-frequency bucket `r`, 0..=4.
    pub bucket: u8,
    /// Savings over on-demand in percent (`s`), when the feed gives it.
    pub savings_percent: Option<u8>,
}

/// One row of the feed's `ranges` table: what a bucket means.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AdvisorRange {
    /// The bucket number `r`.
    pub index: u8,
    /// Human label, e.g. `<5%`.
    pub label: String,
    /// Upper bound of the interruption frequency, percent.
    #[serde(default)]
    pub max: u32,
}

#[derive(Deserialize)]
struct Feed {
    #[serde(default)]
    ranges: Vec<AdvisorRange>,
    #[serde(default)]
    spot_advisor: BTreeMap<String, RegionFeed>,
}

#[derive(Deserialize)]
struct RegionFeed {
    #[serde(rename = "Linux", default)]
    linux: BTreeMap<String, EntryFeed>,
}

#[derive(Deserialize)]
struct EntryFeed {
    r: u8,
    #[serde(default)]
    s: Option<u8>,
}

/// Parses the Spot Advisor feed JSON (a file or a URL body). Errors say `spot-advisor.json`; use
/// [`SpotAdvisor::parse`] to name the source differently.
pub fn parse_spot_advisor(json: &str) -> Result<SpotAdvisor, CatalogError> {
    SpotAdvisor::parse(super::SPOT_ADVISOR_FILE, json)
}

impl SpotAdvisor {
    /// Parses the Spot Advisor feed JSON; `source` (a path or URL) names it in errors.
    pub fn parse(source: &str, json: &str) -> Result<SpotAdvisor, CatalogError> {
        let feed: Feed = serde_json::from_str(json).map_err(|e| CatalogError::Json {
            file: source.to_string(),
            line: e.line(),
            column: e.column(),
            problem: e.to_string(),
        })?;
        let mut regions = BTreeMap::new();
        for (region, region_feed) in feed.spot_advisor {
            let mut entries = BTreeMap::new();
            for (instance_type, entry) in region_feed.linux {
                if entry.r > MAX_BUCKET {
                    return Err(CatalogError::Entry {
                        file: source.to_string(),
                        path: format!("spot_advisor.{region}.Linux.{instance_type}.r"),
                        problem: format!("bucket {} is out of range", entry.r),
                        fix: format!(
                            "write a bucket from 0 to {MAX_BUCKET} (<5%, 5-10%, 10-15%, 15-20%, >20%)"
                        ),
                    });
                }
                entries.insert(
                    instance_type,
                    AdvisorEntry {
                        bucket: entry.r,
                        savings_percent: entry.s,
                    },
                );
            }
            regions.insert(region, entries);
        }
        Ok(SpotAdvisor {
            ranges: feed.ranges,
            regions,
        })
    }

    /// The entry of `instance_type` in `region`, if the feed has one.
    pub fn entry(&self, region: &str, instance_type: &str) -> Option<&AdvisorEntry> {
        self.regions.get(region)?.get(instance_type)
    }

    /// The interruption bucket (0..=4) of `instance_type` in `region`, if the feed has one.
    pub fn bucket(&self, region: &str, instance_type: &str) -> Option<u8> {
        self.entry(region, instance_type).map(|e| e.bucket)
    }

    /// The regions the feed covers, sorted.
    pub fn regions(&self) -> impl Iterator<Item = &str> {
        self.regions.keys().map(String::as_str)
    }

    /// Every (instance type, entry) of `region`, sorted by instance type.
    pub fn entries(&self, region: &str) -> impl Iterator<Item = (&str, &AdvisorEntry)> {
        self.regions
            .get(region)
            .into_iter()
            .flatten()
            .map(|(t, e)| (t.as_str(), e))
    }

    /// The feed's `ranges` table (what each bucket means), as given.
    pub fn ranges(&self) -> &[AdvisorRange] {
        &self.ranges
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FEED: &str = r#"{
        "global_rate": "<10%",
        "instance_types": {"m5.large": {"emr": true, "cores": 2, "ram_gb": 8.0}},
        "ranges": [{"index":0,"label":"<5%","dots":0,"max":5},{"index":4,"label":">20%","dots":4,"max":100}],
        "spot_advisor": {
            "us-east-1": {
                "Linux": {"m5.large": {"s": 70, "r": 1}, "c5.large": {"s": 60, "r": 4}},
                "Windows": {"m5.large": {"s": 50, "r": 3}}
            },
            "eu-west-1": {"Windows": {"m5.large": {"s": 50, "r": 2}}}
        }
    }"#;

    #[test]
    fn parses_linux_entries_and_ignores_windows_and_unknown_fields() {
        let advisor = parse_spot_advisor(FEED).unwrap();
        assert_eq!(advisor.bucket("us-east-1", "m5.large"), Some(1));
        assert_eq!(
            advisor
                .entry("us-east-1", "c5.large")
                .unwrap()
                .savings_percent,
            Some(60)
        );
        assert_eq!(advisor.bucket("eu-west-1", "m5.large"), None);
        assert_eq!(advisor.ranges()[1].label, ">20%");
        assert_eq!(
            advisor.regions().collect::<Vec<_>>(),
            ["eu-west-1", "us-east-1"]
        );
    }

    #[test]
    fn bucket_out_of_range_names_the_json_path() {
        let json = r#"{"spot_advisor": {"us-east-1": {"Linux": {"m5.large": {"s": 70, "r": 7}}}}}"#;
        let err = parse_spot_advisor(json).unwrap_err().to_string();
        assert!(
            err.contains("spot-advisor.json: spot_advisor.us-east-1.Linux.m5.large.r"),
            "{err}"
        );
        assert!(err.contains("0 to 4"), "{err}");
    }

    #[test]
    fn malformed_json_names_line_and_column() {
        let err = SpotAdvisor::parse(
            "feed.json",
            "{\n\"spot_advisor\": {\"us-east-1\": {\"Linux\": {\"m5.large\": {\"r\": \"high\"}}}}}",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("feed.json: line 2"), "{err}");
    }

    #[test]
    fn empty_object_is_an_empty_feed() {
        let advisor = parse_spot_advisor("{}").unwrap();
        assert_eq!(advisor.regions().count(), 0);
    }
}
