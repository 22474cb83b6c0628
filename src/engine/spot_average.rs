//! The 30-day average Spot price per (zone, type), for savings estimates (issue #18).
//!
//! A Spot price record holds from its timestamp until the next record of the same (zone, type), so the
//! average is weighted by time over the window `[now - 30 d, now]`: the last record before the window
//! holds from the window's start, a series whose first record is inside the window is averaged from
//! that record on (nothing is known before it), and a series with one record averages to that record.
//! Only estimates use the average: ranking keeps the current price, which is what a launch pays.

use std::collections::BTreeMap;

use crate::engine::snapshot::{CapacityType, Snapshot};

/// The averaging window: 30 days, in seconds.
pub const WINDOW_SECS: i64 = 30 * 24 * 3600;

/// One record of a Spot price history (DescribeSpotPriceHistory, Linux/UNIX).
#[derive(Debug, Clone, PartialEq)]
pub struct SpotPricePoint {
    /// Availability zone.
    pub zone: String,
    /// Instance type.
    pub instance_type: String,
    /// When the price took effect, seconds since the epoch.
    pub at: i64,
    /// USD per hour.
    pub price: f64,
}

/// Average Spot prices of one region, by (zone, instance type), USD per hour.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpotAverages {
    /// The region the zones belong to.
    pub region: String,
    /// (zone, instance type) -> average USD per hour.
    pub prices: BTreeMap<(String, String), f64>,
}

impl SpotAverages {
    /// The average of `instance_type` in `zone` of `region`, if there is a history for it.
    pub fn get(&self, region: &str, zone: &str, instance_type: &str) -> Option<f64> {
        if region != self.region {
            return None;
        }
        self.prices
            .get(&(zone.to_string(), instance_type.to_string()))
            .copied()
    }
}

/// The time-weighted average per (zone, type) of `points` over `[now - window, now]`, in any order.
/// Records with a negative or non-finite price are ignored; a record stamped after `now` (clock skew)
/// counts as taking effect at `now`.
pub fn averages(
    points: &[SpotPricePoint],
    now: i64,
    window: i64,
) -> BTreeMap<(String, String), f64> {
    let mut series: BTreeMap<(String, String), Vec<(i64, f64)>> = BTreeMap::new();
    for p in points
        .iter()
        .filter(|p| p.price.is_finite() && p.price >= 0.0)
    {
        series
            .entry((p.zone.clone(), p.instance_type.clone()))
            .or_default()
            .push((p.at.min(now), p.price));
    }
    series
        .into_iter()
        .filter_map(|(key, s)| time_weighted(s, now.saturating_sub(window), now).map(|a| (key, a)))
        .collect()
}

/// Time-weighted average of one series over `[start, now]`; `None` for an empty series.
fn time_weighted(mut series: Vec<(i64, f64)>, start: i64, now: i64) -> Option<f64> {
    // Stable: of two records with the same timestamp, the later one in the answer holds.
    series.sort_by_key(|&(at, _)| at);
    // The last record at or before the window's start holds from the start; older ones do not count.
    let first = series.iter().rposition(|&(at, _)| at <= start).unwrap_or(0);
    let series = &series[first..];
    let (&(first_at, _), &(_, last_price)) = (series.first()?, series.last()?);
    let begin = first_at.max(start);
    let span = now - begin;
    if span <= 0 {
        return Some(last_price);
    }
    let mut weighted = 0.0;
    for (i, &(at, price)) in series.iter().enumerate() {
        let until = series.get(i + 1).map_or(now, |&(next, _)| next);
        let from = at.max(begin);
        weighted += price * (until - from).max(0) as f64;
    }
    Some(weighted / span as f64)
}

/// A copy of `snapshot` whose Spot prices are `averages` where there is one (the node's hourly price
/// too for Spot nodes), for estimating savings; other nodes keep their current prices. Returns the copy
/// and how many nodes were given an average.
pub fn reprice(snapshot: &Snapshot, averages: &SpotAverages) -> (Snapshot, usize) {
    let mut copy = snapshot.clone();
    let mut repriced = 0;
    for node in &mut copy.nodes {
        let (Some(region), Some(zone), Some(instance_type)) = (
            node.region.as_deref(),
            node.zone.as_deref(),
            node.instance_type.as_deref(),
        ) else {
            continue;
        };
        let Some(average) = averages.get(region, zone, instance_type) else {
            continue;
        };
        node.spot_price = Some(average);
        if node.capacity_type == CapacityType::Spot {
            node.hourly_price = Some(average);
        }
        repriced += 1;
    }
    (copy, repriced)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::snapshot::{Node, Resources};

    const DAY: i64 = 24 * 3600;
    const NOW: i64 = 1_800_000_000;

    fn point(zone: &str, instance_type: &str, at: i64, price: f64) -> SpotPricePoint {
        SpotPricePoint {
            zone: zone.into(),
            instance_type: instance_type.into(),
            at,
            price,
        }
    }

    fn average_of(points: &[SpotPricePoint]) -> Option<f64> {
        averages(points, NOW, WINDOW_SECS)
            .get(&("us-east-1a".to_string(), "m5.large".to_string()))
            .copied()
    }

    fn close(actual: Option<f64>, expected: f64) {
        let actual = actual.expect("an average");
        assert!((actual - expected).abs() < 1e-9, "{actual} != {expected}");
    }

    #[test]
    fn each_price_holds_until_the_next_one_weighted_by_time() {
        // 0.10 for 20 days then 0.40 for 10 days: (0.10 x 20 + 0.40 x 10) / 30 = 0.20.
        let points = [
            point("us-east-1a", "m5.large", NOW - 30 * DAY, 0.10),
            point("us-east-1a", "m5.large", NOW - 10 * DAY, 0.40),
        ];
        close(average_of(&points), 0.20);
    }

    #[test]
    fn unsorted_records_give_the_same_average_as_sorted_ones() {
        let points = [
            point("us-east-1a", "m5.large", NOW - 10 * DAY, 0.40),
            point("us-east-1a", "m5.large", NOW - 30 * DAY, 0.10),
        ];
        close(average_of(&points), 0.20);
    }

    #[test]
    fn a_record_before_the_window_holds_from_the_windows_start_and_older_ones_do_not_count() {
        let points = [
            point("us-east-1a", "m5.large", NOW - 90 * DAY, 9.0),
            point("us-east-1a", "m5.large", NOW - 45 * DAY, 0.10),
            point("us-east-1a", "m5.large", NOW - 15 * DAY, 0.30),
        ];
        close(average_of(&points), 0.20);
    }

    #[test]
    fn a_single_record_is_the_average_inside_or_before_the_window() {
        close(
            average_of(&[point("us-east-1a", "m5.large", NOW - 3 * DAY, 0.07)]),
            0.07,
        );
        close(
            average_of(&[point("us-east-1a", "m5.large", NOW - 400 * DAY, 0.05)]),
            0.05,
        );
        close(
            average_of(&[point("us-east-1a", "m5.large", NOW, 0.06)]),
            0.06,
        );
    }

    #[test]
    fn a_series_starting_inside_the_window_is_averaged_from_its_first_record() {
        // Nothing is known before NOW - 10 d: 0.10 for 5 days, 0.30 for 5 days.
        let points = [
            point("us-east-1a", "m5.large", NOW - 10 * DAY, 0.10),
            point("us-east-1a", "m5.large", NOW - 5 * DAY, 0.30),
        ];
        close(average_of(&points), 0.20);
    }

    #[test]
    fn records_in_the_future_count_from_now_and_bad_prices_are_ignored() {
        let points = [
            point("us-east-1a", "m5.large", NOW - 40 * DAY, 0.10),
            point("us-east-1a", "m5.large", NOW - 20 * DAY, f64::NAN),
            point("us-east-1a", "m5.large", NOW - 10 * DAY, -1.0),
            point("us-east-1a", "m5.large", NOW + DAY, 5.0),
        ];
        close(average_of(&points), 0.10);
        assert_eq!(
            average_of(&[point("us-east-1a", "m5.large", NOW, f64::INFINITY)]),
            None
        );
    }

    #[test]
    fn each_zone_and_type_is_averaged_on_its_own() {
        let points = [
            point("us-east-1a", "m5.large", NOW - DAY, 0.10),
            point("us-east-1b", "m5.large", NOW - DAY, 0.20),
            point("us-east-1a", "c5.large", NOW - DAY, 0.30),
        ];
        let all = averages(&points, NOW, WINDOW_SECS);
        assert_eq!(all.len(), 3);
        close(
            all.get(&("us-east-1b".to_string(), "m5.large".to_string()))
                .copied(),
            0.20,
        );
    }

    fn node(name: &str, capacity: CapacityType, zone: &str) -> Node {
        let mut n = Node::new(name, Resources::default());
        n.capacity_type = capacity;
        n.region = Some("us-east-1".into());
        n.zone = Some(zone.into());
        n.instance_type = Some("m5.large".into());
        n.on_demand_price = Some(0.096);
        n.spot_price = Some(0.04);
        n.hourly_price = Some(match capacity {
            CapacityType::Spot => 0.04,
            CapacityType::OnDemand => 0.096,
        });
        n
    }

    #[test]
    fn reprice_uses_the_average_where_there_is_one_and_keeps_the_latest_elsewhere() {
        let snapshot = Snapshot {
            nodes: vec![
                node("spot", CapacityType::Spot, "us-east-1a"),
                node("od", CapacityType::OnDemand, "us-east-1a"),
                node("no-history", CapacityType::Spot, "us-east-1b"),
            ],
            pods: vec![],
            pdbs: vec![],
        };
        let averages = SpotAverages {
            region: "us-east-1".into(),
            prices: [(("us-east-1a".into(), "m5.large".into()), 0.03)].into(),
        };

        let (copy, repriced) = reprice(&snapshot, &averages);

        assert_eq!(repriced, 2);
        assert_eq!(
            (copy.nodes[0].hourly_price, copy.nodes[0].spot_price),
            (Some(0.03), Some(0.03))
        );
        assert_eq!(
            (copy.nodes[1].hourly_price, copy.nodes[1].spot_price),
            (Some(0.096), Some(0.03)),
            "an on-demand node keeps its price; its conversion is estimated at the average"
        );
        assert_eq!(copy.nodes[2], snapshot.nodes[2]);
    }

    #[test]
    fn averages_of_another_region_are_not_used() {
        let averages = SpotAverages {
            region: "eu-west-1".into(),
            prices: [(("us-east-1a".into(), "m5.large".into()), 0.03)].into(),
        };
        assert_eq!(averages.get("us-east-1", "us-east-1a", "m5.large"), None);
    }
}
