//! The purchase-option mix of Auto Scaling groups: which instance types a group may launch, in rank
//! order, and how much of it is on-demand. Pure: the NodeTemplate controller translates the result into
//! a MixedInstancesPolicy.

/// The Spot allocation strategy CloudOptim writes: it honours the override order (our ranking) while
/// still preferring pools with spare capacity.
pub const SPOT_ALLOCATION_STRATEGY: &str = "capacity-optimized-prioritized";

/// The desired mix of one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMix {
    /// Instance types, best first.
    pub overrides: Vec<String>,
    /// Instances that are always on-demand.
    pub on_demand_base: i32,
    /// Percentage of capacity above the base that is on-demand.
    pub on_demand_percentage_above_base: i32,
}

/// Which purchase options a template allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowed {
    /// Spot and on-demand.
    Both,
    /// Spot only.
    SpotOnly,
    /// On-demand only.
    OnDemandOnly,
}

/// Split a policy-wide on-demand base across `groups` groups: every group gets `base / groups`, and
/// the first `base % groups` one more, so the sum is exactly `base`.
pub fn split_base(base: u32, groups: usize) -> Vec<u32> {
    let Ok(n) = u32::try_from(groups) else {
        return Vec::new();
    };
    if n == 0 {
        return Vec::new();
    }
    (0..n).map(|i| base / n + u32::from(i < base % n)).collect()
}

/// The desired mix for a group: the ranked types, its share of the on-demand base, and the Spot
/// percentage of the policy (or 0 / 100 when the template allows only one purchase option).
pub fn desired_mix(
    ranked_types: &[&str],
    spot_percentage: u32,
    group_base: u32,
    allowed: Allowed,
) -> GroupMix {
    let spot = match allowed {
        Allowed::Both => spot_percentage.min(100),
        Allowed::SpotOnly => 100,
        Allowed::OnDemandOnly => 0,
    };
    GroupMix {
        overrides: ranked_types.iter().map(|t| t.to_string()).collect(),
        on_demand_base: if allowed == Allowed::SpotOnly {
            0
        } else {
            clamp_i32(group_base)
        },
        on_demand_percentage_above_base: clamp_i32(100 - spot),
    }
}

/// The mix of a group no policy governs: the ranked types, with the on-demand base and percentage the
/// group already has (a ranking must never move a group to Spot on its own).
pub fn keep_split(
    ranked_types: &[&str],
    on_demand_base: i32,
    on_demand_percentage_above_base: i32,
) -> GroupMix {
    GroupMix {
        overrides: ranked_types.iter().map(|t| t.to_string()).collect(),
        on_demand_base,
        on_demand_percentage_above_base,
    }
}

/// NodeTemplate annotation holding the groups on on-demand after a Spot capacity error: a JSON object
/// `{"<group>": "<RFC 3339 time to restore Spot>"}`, written by the interruption intake from an
/// EventBridge "EC2 Instance Launch Unsuccessful" event and read by the NodeTemplate controller.
pub use crate::names::SPOT_FALLBACK_ANNOTATION;

/// Until when (unix seconds) `group` stays on on-demand, if the annotation says so and it is still in
/// the future at `now`. A malformed annotation means no fallback.
pub fn fallback_until(annotation: Option<&str>, group: &str, now: i64) -> Option<i64> {
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(annotation?).ok()?;
    let until = map.get(group)?.as_str()?;
    let until = chrono::DateTime::parse_from_rfc3339(until)
        .ok()?
        .timestamp();
    (until > now).then_some(until)
}

/// The annotation with `group` on on-demand until `until` (unix seconds), expired entries dropped.
pub fn with_fallback(annotation: Option<&str>, group: &str, until: i64, now: i64) -> String {
    let mut map: serde_json::Map<String, serde_json::Value> = annotation
        .and_then(|a| serde_json::from_str(a).ok())
        .unwrap_or_default();
    map.retain(|g, _| fallback_until(annotation, g, now).is_some());
    let text = chrono::DateTime::from_timestamp(until, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default();
    map.insert(group.to_string(), serde_json::Value::String(text));
    serde_json::Value::Object(map).to_string()
}

fn clamp_i32(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_is_split_exactly_with_the_remainder_first() {
        assert_eq!(split_base(5, 2), vec![3, 2]);
        assert_eq!(split_base(2, 3), vec![1, 1, 0]);
        assert_eq!(split_base(0, 2), vec![0, 0]);
        assert!(split_base(3, 0).is_empty());
        for base in 0..50 {
            for groups in 1..7 {
                assert_eq!(split_base(base, groups).iter().sum::<u32>(), base);
            }
        }
    }

    #[test]
    fn spot_percentage_becomes_on_demand_above_base() {
        let mix = desired_mix(&["m6i.large", "m5.large"], 70, 2, Allowed::Both);
        assert_eq!(mix.overrides, ["m6i.large", "m5.large"]);
        assert_eq!(mix.on_demand_base, 2);
        assert_eq!(mix.on_demand_percentage_above_base, 30);
    }

    #[test]
    fn a_single_purchase_option_overrides_the_policy_percentage() {
        assert_eq!(
            desired_mix(&["c7g.large"], 70, 2, Allowed::SpotOnly).on_demand_percentage_above_base,
            0
        );
        assert_eq!(
            desired_mix(&["c7g.large"], 70, 2, Allowed::SpotOnly).on_demand_base,
            0
        );
        assert_eq!(
            desired_mix(&["c7g.large"], 70, 2, Allowed::OnDemandOnly)
                .on_demand_percentage_above_base,
            100
        );
    }

    #[test]
    fn fallback_entries_expire_and_bad_annotations_mean_no_fallback() {
        let a = with_fallback(None, "g1", 1_000, 0);
        assert_eq!(fallback_until(Some(&a), "g1", 999), Some(1_000));
        assert_eq!(fallback_until(Some(&a), "g1", 1_000), None);
        assert_eq!(fallback_until(Some(&a), "g2", 0), None);
        let b = with_fallback(Some(&a), "g2", 5_000, 2_000);
        assert_eq!(
            fallback_until(Some(&b), "g1", 0),
            None,
            "expired entry dropped"
        );
        assert_eq!(fallback_until(Some(&b), "g2", 2_000), Some(5_000));
        assert_eq!(fallback_until(Some("not json"), "g1", 0), None);
    }
}
