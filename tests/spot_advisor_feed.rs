//! The Spot Advisor parser on a real copy of the public feed (`tests/data/spot-advisor/`, see its
//! SOURCE.md): the feed as AWS publishes it must parse, with its odd entries skipped and counted.

use cloudoptim::engine::catalog::{
    Catalog, EntryField, LiveData, SkipReason, SpotAdvisor, parse_spot_advisor,
};

const FEED: &str = include_str!("data/spot-advisor/spot-advisor-data.json");

fn real_feed() -> SpotAdvisor {
    parse_spot_advisor(FEED).expect("the real feed parses")
}

/// Linux entries in the raw document, counted without the parser.
fn raw_linux_entries() -> usize {
    let doc: serde_json::Value = serde_json::from_str(FEED).expect("the copy is JSON");
    doc["spot_advisor"]
        .as_object()
        .expect("spot_advisor is an object")
        .values()
        .map(|region| region["Linux"].as_object().map_or(0, |linux| linux.len()))
        .sum()
}

#[test]
fn the_real_feed_parses_with_every_region() {
    let advisor = real_feed();
    let regions: Vec<_> = advisor.regions().collect();
    assert_eq!(regions.len(), 33, "{regions:?}");
    for region in [
        "us-east-1",
        "eu-west-1",
        "ap-south-1",
        "ca-central-1",
        "mx-central-1",
    ] {
        assert!(regions.contains(&region), "{region} missing: {regions:?}");
    }
    assert_eq!(advisor.ranges().len(), 5);
}

#[test]
fn the_real_feed_yields_many_entries_in_the_big_regions() {
    let advisor = real_feed();
    for (region, at_least) in [("us-east-1", 800), ("eu-west-1", 700), ("ap-south-1", 500)] {
        let n = advisor.entries(region).count();
        assert!(
            n >= at_least,
            "{region}: {n} Linux entries, expected at least {at_least}"
        );
    }
    let us = advisor
        .entry("us-east-1", "m5.large")
        .expect("m5.large in us-east-1");
    assert_eq!((us.bucket, us.savings_percent), (3, Some(66)));
    let mut buckets = [0usize; 5];
    for (_, entry) in advisor.entries("us-east-1") {
        buckets[usize::from(entry.bucket)] += 1;
    }
    assert!(
        buckets.iter().all(|&n| n > 0),
        "every bucket occurs: {buckets:?}"
    );
}

#[test]
fn the_real_feeds_one_negative_savings_is_skipped_and_counted() {
    let advisor = real_feed();
    let skipped = advisor.skipped();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert_eq!(skipped[0].region, "ca-central-1");
    assert_eq!(skipped[0].instance_type.as_deref(), Some("p5.48xlarge"));
    assert_eq!(
        skipped[0].reason,
        SkipReason::OutOfRange {
            field: EntryField::Savings,
            value: -62.0
        }
    );
    assert_eq!(advisor.bucket("ca-central-1", "p5.48xlarge"), None);
    assert!(advisor.entries("ca-central-1").count() >= 500);
}

#[test]
fn every_linux_entry_of_the_real_feed_is_kept_or_skipped() {
    let advisor = real_feed();
    let kept: usize = advisor.regions().map(|r| advisor.entries(r).count()).sum();
    assert_eq!(raw_linux_entries(), 14_962);
    assert_eq!(kept + advisor.skipped().len(), raw_linux_entries());
}

#[test]
fn the_real_feed_gives_the_catalog_real_buckets() {
    let live = LiveData {
        advisor: Some(real_feed()),
        ..LiveData::default()
    };
    let catalog = Catalog::embedded().with_live("us-east-1", &live);
    assert_eq!(catalog.advisor_bucket("us-east-1", "m5.large"), Some(3));
}
