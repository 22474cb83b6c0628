//! Risk-weighted ranking of (instance type, zone, capacity type) candidates (DESIGN.md section 4).
//!
//! `score = w_price * price_norm + w_risk * risk`, lower is better, where `p` is the price per vCPU-hour
//! (spot price for spot, on-demand price for on-demand), `price_norm = (p - p_min) / (p_max - p_min)` over
//! the candidate set (0 when all prices are equal), and `risk = r / 4` for spot (`r` = Spot Advisor bucket,
//! missing data = 1.0) and 0 for on-demand. Ties: lower `p`, then instance type, then zone (then spot
//! before on-demand, so the order is total).
//!
//! Decisions written down here:
//! - A risk flag (an active SpotRiskFlag) covers the *spot* candidate of its (zone, type): interruptions
//!   and spot capacity errors say nothing about on-demand capacity, which stays a candidate. Flagged
//!   candidates are removed before normalising; if that leaves none, they all stay, marked `flagged`.
//! - On-demand candidates exist in every zone of the region (the catalog has no per-zone on-demand
//!   offering list); spot candidates exist where the catalog has a spot price for the (zone, type).
//! - Prices per vCPU-hour that differ by less than one part in 10^9 count as equal, so rounding noise
//!   cannot stretch to the full 0..1 range.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::catalog::{Arch, Catalog, InstanceType, MAX_BUCKET, Region};

/// Spot or on-demand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum CapacityType {
    /// EC2 Spot capacity.
    #[serde(rename = "spot")]
    Spot,
    /// EC2 on-demand capacity.
    #[serde(rename = "on-demand")]
    OnDemand,
}

impl CapacityType {
    /// The Kubernetes/Karpenter spelling: `spot` or `on-demand`.
    pub fn as_str(self) -> &'static str {
        match self {
            CapacityType::Spot => "spot",
            CapacityType::OnDemand => "on-demand",
        }
    }
}

impl fmt::Display for CapacityType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Preset ranking weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Strategy {
    /// Price 0.8, risk 0.2.
    Cheapest,
    /// Price 0.6, risk 0.4.
    #[default]
    Balanced,
    /// Price 0.3, risk 0.7.
    Stable,
}

impl Strategy {
    /// The strategy's (price, risk) weights.
    pub fn weights(self) -> Weights {
        let (price, risk) = match self {
            Strategy::Cheapest => (0.8, 0.2),
            Strategy::Balanced => (0.6, 0.4),
            Strategy::Stable => (0.3, 0.7),
        };
        Weights { price, risk }
    }
}

/// Weights of the normalised price and of the interruption risk; each in 0..=1, summing to 1.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Weights {
    /// Weight of `price_norm`.
    pub price: f64,
    /// Weight of `risk`.
    pub risk: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Strategy::default().weights()
    }
}

impl Weights {
    /// Explicit weights: each must be in 0..=1 and they must sum to 1 (within 0.001, as the CRD's CEL rule).
    pub fn new(price: f64, risk: f64) -> Result<Weights, RankError> {
        for (field, value) in [("weights.price", price), ("weights.risk", risk)] {
            if !(0.0..=1.0).contains(&value) {
                return Err(RankError::invalid(
                    field,
                    format!("{value} is not between 0 and 1"),
                ));
            }
        }
        if (price + risk - 1.0).abs() > 0.001 {
            return Err(RankError::invalid(
                "weights",
                format!("price + risk = {} but must be 1", price + risk),
            ));
        }
        Ok(Weights { price, risk })
    }
}

/// What capacity may be used: a NodeTemplate's `spec.requirements` as plain data. Empty lists mean "any".
#[derive(Debug, Clone, PartialEq)]
pub struct Requirements {
    /// Instance families allowed, e.g. `m5`, `c7g`.
    pub families: Vec<String>,
    /// Instance types never used, e.g. `m5.24xlarge`.
    pub exclude_types: Vec<String>,
    /// CPU architectures allowed.
    pub architectures: Vec<Arch>,
    /// Minimum vCPUs per instance.
    pub min_vcpu: Option<u32>,
    /// Maximum vCPUs per instance.
    pub max_vcpu: Option<u32>,
    /// Minimum memory per instance, GiB.
    pub min_memory_gib: Option<f64>,
    /// Maximum memory per instance, GiB.
    pub max_memory_gib: Option<f64>,
    /// Minimum GPUs per instance (e.g. 1 for GPU nodes).
    pub min_gpus: Option<u32>,
    /// Maximum GPUs per instance (0 keeps GPU types out).
    pub max_gpus: Option<u32>,
    /// Availability zones allowed.
    pub zones: Vec<String>,
    /// Capacity types allowed.
    pub capacity_types: Vec<CapacityType>,
    /// Only current-generation instance types (default true).
    pub current_generation_only: bool,
    /// How many distinct instance types [`Ranking::top_instance_types`] callers should write (default 20,
    /// 1..=40).
    pub max_types: u32,
}

impl Default for Requirements {
    fn default() -> Self {
        Requirements {
            families: Vec::new(),
            exclude_types: Vec::new(),
            architectures: Vec::new(),
            min_vcpu: None,
            max_vcpu: None,
            min_memory_gib: None,
            max_memory_gib: None,
            min_gpus: None,
            max_gpus: None,
            zones: Vec::new(),
            capacity_types: Vec::new(),
            current_generation_only: true,
            max_types: 20,
        }
    }
}

impl Requirements {
    /// Checks the cross-field rules; the error names the field (`requirements.maxVcpu`, ...).
    pub fn validate(&self) -> Result<(), RankError> {
        if let (Some(min), Some(max)) = (self.min_vcpu, self.max_vcpu)
            && min > max
        {
            return Err(RankError::invalid(
                "requirements.maxVcpu",
                format!("{max} is less than minVcpu {min}"),
            ));
        }
        for (field, value) in [
            ("requirements.minMemoryGiB", self.min_memory_gib),
            ("requirements.maxMemoryGiB", self.max_memory_gib),
        ] {
            if let Some(v) = value
                && !(v.is_finite() && v >= 0.0)
            {
                return Err(RankError::invalid(
                    field,
                    format!("{v} is not a size in GiB"),
                ));
            }
        }
        if let (Some(min), Some(max)) = (self.min_memory_gib, self.max_memory_gib)
            && min > max
        {
            return Err(RankError::invalid(
                "requirements.maxMemoryGiB",
                format!("{max} is less than minMemoryGiB {min}"),
            ));
        }
        if let (Some(min), Some(max)) = (self.min_gpus, self.max_gpus)
            && min > max
        {
            return Err(RankError::invalid(
                "requirements.maxGpus",
                format!("{max} is less than minGpus {min}"),
            ));
        }
        if !(1..=40).contains(&self.max_types) {
            return Err(RankError::invalid(
                "requirements.maxTypes",
                format!("{} is not between 1 and 40", self.max_types),
            ));
        }
        Ok(())
    }

    /// True when the instance type itself (not its zone or capacity type) is allowed.
    pub fn admits(&self, t: &InstanceType) -> bool {
        TypeFilter::ALL.iter().all(|filter| filter.keeps(self, t))
    }

    /// True when `capacity_type` is allowed.
    pub fn allows_capacity(&self, capacity_type: CapacityType) -> bool {
        self.capacity_types.is_empty() || self.capacity_types.contains(&capacity_type)
    }

    /// True when `zone` is allowed.
    pub fn allows_zone(&self, zone: &str) -> bool {
        self.zones.is_empty() || self.zones.iter().any(|z| z == zone)
    }
}

/// A (zone, instance type) covered by an active SpotRiskFlag of the ranked region.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FlaggedPair {
    /// Availability zone, e.g. `us-east-1a`.
    pub zone: String,
    /// Instance type, e.g. `m5.large`.
    pub instance_type: String,
}

/// One ranked candidate. Names borrow from the catalog, so ranking allocates no strings.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RankedCandidate<'c> {
    /// Instance type, e.g. `m6i.large`.
    pub instance_type: &'c str,
    /// Availability zone.
    pub zone: &'c str,
    /// Spot or on-demand.
    pub capacity_type: CapacityType,
    /// Price of this candidate (spot or on-demand), USD per hour.
    pub price_per_hour: f64,
    /// `price_per_hour / vcpu`: the `p` of the formula.
    pub price_per_vcpu_hour: f64,
    /// `(p - p_min) / (p_max - p_min)` over the ranked set, 0..=1.
    pub price_norm: f64,
    /// `r / 4` for spot (1.0 without advisor data), 0 for on-demand.
    pub risk: f64,
    /// Spot Advisor bucket `r` (0..=4) of a spot candidate; `None` for on-demand or without advisor data.
    pub risk_bucket: Option<u8>,
    /// `w_price * price_norm + w_risk * risk`, 0..=1, lower is better.
    pub score: f64,
    /// True when an active risk flag covers this candidate (only when every candidate is flagged).
    pub flagged: bool,
    /// Spot price of the (zone, type), USD per hour, when known (also on on-demand candidates).
    pub spot_price: Option<f64>,
    /// On-demand price of the type in the region, USD per hour, when known (also on spot candidates).
    pub on_demand_price: Option<f64>,
}

/// The result of [`rank`]: every candidate meeting the requirements, best first.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranking<'c> {
    /// The ranked candidates, best (lowest score) first.
    pub candidates: Vec<RankedCandidate<'c>>,
    /// The weights used.
    pub weights: Weights,
    /// How many flagged spot candidates were left out.
    pub flagged_removed: usize,
}

impl<'c> Ranking<'c> {
    /// The first `max_types` distinct instance types in rank order (the Auto Scaling group overrides).
    pub fn top_instance_types(&self, max_types: usize) -> Vec<&'c str> {
        let mut types: Vec<&'c str> = Vec::with_capacity(max_types);
        for candidate in &self.candidates {
            if types.len() == max_types {
                break;
            }
            if !types.contains(&candidate.instance_type) {
                types.push(candidate.instance_type);
            }
        }
        types
    }

    /// True when every candidate is flagged (the "nothing else is left" fallback).
    pub fn all_flagged(&self) -> bool {
        self.candidates.first().is_some_and(|c| c.flagged)
    }
}

/// Why a ranking could not be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RankError {
    /// The catalog has no prices for the region.
    #[error("region `{region}` is not in the catalog; known regions: {}", known.join(", "))]
    UnknownRegion {
        /// The region asked for.
        region: String,
        /// The regions the catalog has.
        known: Vec<String>,
    },
    /// No (type, zone, capacity type) meets the requirements; `reason` names the fields that emptied the set.
    #[error("requirements match no instance type in {region}: {reason}")]
    NoCandidates {
        /// The region ranked.
        region: String,
        /// Which requirement fields left nothing, e.g. `946 types in the catalog; families [x9] leaves 0`.
        reason: String,
    },
    /// A requirement or weight is invalid.
    #[error("{field}: {problem}")]
    Invalid {
        /// The field, e.g. `requirements.maxVcpu` or `weights.price`.
        field: String,
        /// What is wrong.
        problem: String,
    },
}

impl RankError {
    fn invalid(field: &str, problem: String) -> RankError {
        RankError::Invalid {
            field: field.to_string(),
            problem,
        }
    }
}

/// Ranks every (instance type, zone, capacity type) of `region` that meets `requirements`, best first.
/// `flags` are the (zone, type) pairs of active SpotRiskFlags in this region.
pub fn rank<'c>(
    catalog: &'c Catalog,
    region: &str,
    requirements: &Requirements,
    weights: Weights,
    flags: &[FlaggedPair],
) -> Result<Ranking<'c>, RankError> {
    requirements.validate()?;
    let prices = catalog
        .region(region)
        .ok_or_else(|| RankError::UnknownRegion {
            region: region.to_string(),
            known: catalog.regions().map(str::to_string).collect(),
        })?;
    let zones: Vec<usize> = (0..prices.zones.len())
        .filter(|&z| requirements.allows_zone(&prices.zones[z].name))
        .collect();
    let flagged = FlagIndex::new(catalog, prices, flags);
    let (mut kept, mut removed) = (Vec::new(), Vec::new());
    for (ti, t) in catalog.types().iter().enumerate() {
        if requirements.admits(t) {
            push_candidates(
                prices,
                &zones,
                (ti, t),
                requirements,
                &flagged,
                &mut kept,
                &mut removed,
            );
        }
    }
    let flagged_removed = if kept.is_empty() {
        kept = removed;
        kept.iter_mut().for_each(|c| c.flagged = true);
        0
    } else {
        removed.len()
    };
    if kept.is_empty() {
        return Err(RankError::NoCandidates {
            region: region.to_string(),
            reason: explain_empty(catalog, prices, requirements),
        });
    }
    score(&mut kept, weights);
    kept.sort_unstable_by(rank_order);
    Ok(Ranking {
        candidates: kept,
        weights,
        flagged_removed,
    })
}

/// The flagged (zone index, type index) pairs of one region, as a bitmap.
struct FlagIndex {
    types: usize,
    bits: Vec<bool>,
}

impl FlagIndex {
    fn new(catalog: &Catalog, prices: &Region, flags: &[FlaggedPair]) -> FlagIndex {
        let types = catalog.types().len();
        let mut bits = Vec::new();
        for flag in flags {
            let zone = prices.zones.iter().position(|z| z.name == flag.zone);
            if let (Some(z), Some(t)) = (zone, catalog.type_index(&flag.instance_type)) {
                bits.resize(prices.zones.len() * types, false);
                bits[z * types + t] = true;
            }
        }
        FlagIndex { types, bits }
    }

    fn contains(&self, zone: usize, instance_type: usize) -> bool {
        !self.bits.is_empty() && self.bits[zone * self.types + instance_type]
    }
}

fn push_candidates<'c>(
    prices: &'c Region,
    zones: &[usize],
    (ti, t): (usize, &'c InstanceType),
    requirements: &Requirements,
    flags: &FlagIndex,
    kept: &mut Vec<RankedCandidate<'c>>,
    removed: &mut Vec<RankedCandidate<'c>>,
) {
    let on_demand = prices.on_demand[ti];
    let bucket = prices.advisor[ti];
    let vcpu = f64::from(t.vcpu);
    let want_spot = requirements.allows_capacity(CapacityType::Spot);
    let want_on_demand = requirements.allows_capacity(CapacityType::OnDemand);
    for &zi in zones {
        let zone = &prices.zones[zi];
        let spot = zone.spot[ti];
        let candidate = |capacity_type, price: f64, risk, risk_bucket| RankedCandidate {
            instance_type: &t.name,
            zone: &zone.name,
            capacity_type,
            price_per_hour: price,
            price_per_vcpu_hour: price / vcpu,
            price_norm: 0.0,
            risk,
            risk_bucket,
            score: 0.0,
            flagged: false,
            spot_price: spot,
            on_demand_price: on_demand,
        };
        if let (true, Some(price)) = (want_spot, spot) {
            let risk = bucket.map_or(1.0, |r| f64::from(r) / f64::from(MAX_BUCKET));
            let target = if flags.contains(zi, ti) {
                &mut *removed
            } else {
                &mut *kept
            };
            target.push(candidate(CapacityType::Spot, price, risk, bucket));
        }
        if let (true, Some(price)) = (want_on_demand, on_demand) {
            kept.push(candidate(CapacityType::OnDemand, price, 0.0, None));
        }
    }
}

/// Fills `price_norm` and `score` over the whole set.
fn score(candidates: &mut [RankedCandidate<'_>], weights: Weights) {
    let (min, max) = candidates
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), c| {
            (lo.min(c.price_per_vcpu_hour), hi.max(c.price_per_vcpu_hour))
        });
    let range = max - min;
    let all_equal = range <= max * 1e-9;
    for c in candidates {
        c.price_norm = if all_equal {
            0.0
        } else {
            (c.price_per_vcpu_hour - min) / range
        };
        c.score = (weights.price * c.price_norm + weights.risk * c.risk).clamp(0.0, 1.0);
    }
}

/// Score, then lower `p`, then instance type, then zone, then spot before on-demand.
fn rank_order(a: &RankedCandidate<'_>, b: &RankedCandidate<'_>) -> Ordering {
    a.score
        .total_cmp(&b.score)
        .then(a.price_per_vcpu_hour.total_cmp(&b.price_per_vcpu_hour))
        .then_with(|| a.instance_type.cmp(b.instance_type))
        .then_with(|| a.zone.cmp(b.zone))
        .then(a.capacity_type.cmp(&b.capacity_type))
}

/// Names the requirement fields that left no candidate, filter by filter (only on the error path).
fn explain_empty(catalog: &Catalog, prices: &Region, req: &Requirements) -> String {
    let mut left: Vec<&InstanceType> = catalog.types().iter().collect();
    let mut steps = vec![format!("{} types in the catalog", left.len())];
    for filter in TypeFilter::ALL {
        let before = left.len();
        left.retain(|t| filter.keeps(req, t));
        if left.len() < before {
            steps.push(format!("{} leaves {}", filter.describe(req), left.len()));
        }
        if left.is_empty() {
            return steps.join("; ");
        }
    }
    let region_zones: Vec<&str> = prices.zones.iter().map(|z| z.name.as_str()).collect();
    if !region_zones.iter().any(|z| req.allows_zone(z)) {
        let known = if region_zones.is_empty() {
            "none".to_string()
        } else {
            region_zones.join(", ")
        };
        steps.push(format!(
            "zones {} are not zones of the region (known: {known})",
            list(&req.zones)
        ));
    } else {
        let capacity: Vec<&str> = req.capacity_types.iter().map(|c| c.as_str()).collect();
        steps.push(format!(
            "none of the {} remaining types has a price in the region for capacityTypes {}",
            left.len(),
            if capacity.is_empty() {
                "[spot, on-demand]".to_string()
            } else {
                list(&capacity)
            }
        ));
    }
    steps.join("; ")
}

/// `[a, b]`.
fn list<T: fmt::Display>(items: &[T]) -> String {
    let items: Vec<String> = items.iter().map(T::to_string).collect();
    format!("[{}]", items.join(", "))
}

/// The requirement fields that judge an instance type on its own, in the order errors report them.
#[derive(Debug, Clone, Copy)]
enum TypeFilter {
    CurrentGeneration,
    Families,
    ExcludeTypes,
    Architectures,
    Vcpu,
    Memory,
    Gpus,
}

impl TypeFilter {
    const ALL: [TypeFilter; 7] = [
        TypeFilter::CurrentGeneration,
        TypeFilter::Families,
        TypeFilter::ExcludeTypes,
        TypeFilter::Architectures,
        TypeFilter::Vcpu,
        TypeFilter::Memory,
        TypeFilter::Gpus,
    ];

    fn keeps(self, req: &Requirements, t: &InstanceType) -> bool {
        match self {
            TypeFilter::CurrentGeneration => !req.current_generation_only || t.current_generation,
            TypeFilter::Families => req.families.is_empty() || req.families.contains(&t.family),
            TypeFilter::ExcludeTypes => !req.exclude_types.contains(&t.name),
            TypeFilter::Architectures => {
                req.architectures.is_empty() || req.architectures.contains(&t.arch)
            }
            TypeFilter::Vcpu => {
                req.min_vcpu.is_none_or(|min| t.vcpu >= min)
                    && req.max_vcpu.is_none_or(|max| t.vcpu <= max)
            }
            TypeFilter::Memory => {
                req.min_memory_gib.is_none_or(|min| t.memory_gib() >= min)
                    && req.max_memory_gib.is_none_or(|max| t.memory_gib() <= max)
            }
            TypeFilter::Gpus => {
                req.min_gpus.is_none_or(|min| t.gpu >= min)
                    && req.max_gpus.is_none_or(|max| t.gpu <= max)
            }
        }
    }

    /// The field(s) and their values, e.g. `minVcpu 200` or `families [m5, c7g]`.
    fn describe(self, req: &Requirements) -> String {
        let bounds = |min_name: &str, min: Option<String>, max_name: &str, max: Option<String>| {
            let parts: Vec<String> = [(min_name, min), (max_name, max)]
                .into_iter()
                .filter_map(|(name, value)| value.map(|v| format!("{name} {v}")))
                .collect();
            parts.join(", ")
        };
        match self {
            TypeFilter::CurrentGeneration => "currentGenerationOnly true".to_string(),
            TypeFilter::Families => format!("families {}", list(&req.families)),
            TypeFilter::ExcludeTypes => format!("excludeTypes {}", list(&req.exclude_types)),
            TypeFilter::Architectures => format!("architectures {}", list(&req.architectures)),
            TypeFilter::Vcpu => bounds(
                "minVcpu",
                req.min_vcpu.map(|v| v.to_string()),
                "maxVcpu",
                req.max_vcpu.map(|v| v.to_string()),
            ),
            TypeFilter::Memory => bounds(
                "minMemoryGiB",
                req.min_memory_gib.map(|v| v.to_string()),
                "maxMemoryGiB",
                req.max_memory_gib.map(|v| v.to_string()),
            ),
            TypeFilter::Gpus => bounds(
                "minGpus",
                req.min_gpus.map(|v| v.to_string()),
                "maxGpus",
                req.max_gpus.map(|v| v.to_string()),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::catalog::tests::catalog;
    use proptest::prelude::{any, prop_assert, proptest};
    use proptest::strategy::Strategy as _;

    const ADVISOR_EMPTY: &str = r#"{"spot_advisor": {}}"#;

    /// Two zones, three current types and one previous-generation type.
    fn fixture() -> Catalog {
        catalog(
            "m5.large,m5,x86_64,2,8192,0\nc6g.xlarge,c6g,arm64,4,8192,0\n\
             r6i.2xlarge,r6i,x86_64,8,65536,0\nm4.large,m4,x86_64,2,8192,0\n",
            "r-1,m5.large,0.096\nr-1,c6g.xlarge,0.136\nr-1,r6i.2xlarge,0.504\nr-1,m4.large,0.1\n",
            "r-1,r-1a,m5.large,0.04\nr-1,r-1b,m5.large,0.03\nr-1,r-1a,c6g.xlarge,0.05\n\
             r-1,r-1b,c6g.xlarge,0.06\nr-1,r-1a,r6i.2xlarge,0.16\nr-1,r-1b,r6i.2xlarge,0.1\n\
             r-1,r-1a,m4.large,0.01\n",
            r#"{"spot_advisor":{"r-1":{"Linux":{"m5.large":{"r":0},"c6g.xlarge":{"r":4},"r6i.2xlarge":{"r":3}}}}}"#,
        )
    }

    fn spot_only() -> Requirements {
        Requirements {
            capacity_types: vec![CapacityType::Spot],
            ..Requirements::default()
        }
    }

    fn find<'a>(
        r: &'a Ranking<'_>,
        t: &str,
        zone: &str,
        ct: CapacityType,
    ) -> &'a RankedCandidate<'a> {
        r.candidates
            .iter()
            .find(|c| c.instance_type == t && c.zone == zone && c.capacity_type == ct)
            .unwrap_or_else(|| panic!("no candidate {t} {zone} {ct}"))
    }

    fn flag(zone: &str, t: &str) -> FlaggedPair {
        FlaggedPair {
            zone: zone.to_string(),
            instance_type: t.to_string(),
        }
    }

    #[test]
    fn strategies_map_to_the_design_weights() {
        assert_eq!(
            Strategy::Cheapest.weights(),
            Weights {
                price: 0.8,
                risk: 0.2
            }
        );
        assert_eq!(
            Strategy::Balanced.weights(),
            Weights {
                price: 0.6,
                risk: 0.4
            }
        );
        assert_eq!(
            Strategy::Stable.weights(),
            Weights {
                price: 0.3,
                risk: 0.7
            }
        );
        assert_eq!(Weights::default(), Strategy::Balanced.weights());
    }

    #[test]
    fn explicit_weights_must_be_in_range_and_sum_to_one() {
        assert!(Weights::new(0.5, 0.5).is_ok());
        let err = Weights::new(1.2, -0.2).unwrap_err().to_string();
        assert!(err.starts_with("weights.price:"), "{err}");
        let err = Weights::new(0.5, 0.4).unwrap_err().to_string();
        assert!(
            err.starts_with("weights:") && err.contains("must be 1"),
            "{err}"
        );
    }

    #[test]
    fn score_is_the_weighted_sum_of_normalised_price_and_risk() {
        let c = fixture();
        let r = rank(
            &c,
            "r-1",
            &spot_only(),
            Weights::new(0.6, 0.4).unwrap(),
            &[],
        )
        .unwrap();
        // p per vCPU-hour over the spot set: min 0.0125 (c6g r-1a, r6i r-1b), max 0.02 (m5 and r6i
        // r-1a), range 0.0075.
        let m5a = find(&r, "m5.large", "r-1a", CapacityType::Spot);
        assert!((m5a.price_per_vcpu_hour - 0.02).abs() < 1e-12);
        assert!((m5a.price_norm - 1.0).abs() < 1e-12);
        assert_eq!((m5a.risk, m5a.risk_bucket), (0.0, Some(0)));
        assert!((m5a.score - 0.6).abs() < 1e-12);
        let c6g = find(&r, "c6g.xlarge", "r-1b", CapacityType::Spot);
        assert!(
            (c6g.price_norm - 1.0 / 3.0).abs() < 1e-12,
            "{}",
            c6g.price_norm
        );
        assert!((c6g.score - (0.6 / 3.0 + 0.4 * 1.0)).abs() < 1e-12);
        let r6i = find(&r, "r6i.2xlarge", "r-1b", CapacityType::Spot);
        assert_eq!(
            (r6i.price_norm, r6i.risk, r6i.risk_bucket),
            (0.0, 0.75, Some(3))
        );
        assert!((r6i.score - 0.4 * 0.75).abs() < 1e-12, "{}", r6i.score);
    }

    #[test]
    fn heavier_risk_weight_prefers_the_stable_candidate() {
        let c = fixture();
        let cheapest = rank(&c, "r-1", &spot_only(), Strategy::Cheapest.weights(), &[]).unwrap();
        let stable = rank(&c, "r-1", &spot_only(), Strategy::Stable.weights(), &[]).unwrap();
        // r6i r-1b is the cheapest per vCPU but bucket 3; m5 r-1b costs a third of the range more, bucket 0.
        let best =
            |r: &Ranking<'_>| format!("{} {}", r.candidates[0].instance_type, r.candidates[0].zone);
        assert_eq!(best(&cheapest), "r6i.2xlarge r-1b");
        assert_eq!(best(&stable), "m5.large r-1b");
    }

    #[test]
    fn on_demand_has_zero_risk_and_its_own_price() {
        let c = fixture();
        let r = rank(&c, "r-1", &Requirements::default(), Weights::default(), &[]).unwrap();
        let od = find(&r, "m5.large", "r-1a", CapacityType::OnDemand);
        assert_eq!(
            (od.risk, od.risk_bucket, od.price_per_hour),
            (0.0, None, 0.096)
        );
        assert_eq!(
            (od.spot_price, od.on_demand_price),
            (Some(0.04), Some(0.096))
        );
        // On-demand exists in every zone, spot where a spot price exists.
        assert_eq!(r.candidates.len(), 3 * 2 + 3 * 2);
    }

    #[test]
    fn missing_advisor_data_counts_as_full_risk() {
        let c = catalog(
            "m5.large,m5,x86_64,2,8192,0\n",
            "",
            "r-1,r-1a,m5.large,0.04\n",
            ADVISOR_EMPTY,
        );
        let r = rank(&c, "r-1", &Requirements::default(), Weights::default(), &[]).unwrap();
        assert_eq!(r.candidates[0].risk, 1.0);
        assert_eq!(r.candidates[0].risk_bucket, None);
    }

    #[test]
    fn all_equal_prices_normalise_to_zero() {
        let c = catalog(
            "m5.large,m5,x86_64,2,8192,0\nm5.xlarge,m5,x86_64,4,16384,0\n",
            "",
            "r-1,r-1a,m5.large,0.04\nr-1,r-1a,m5.xlarge,0.08\n",
            r#"{"spot_advisor":{"r-1":{"Linux":{"m5.large":{"r":2},"m5.xlarge":{"r":2}}}}}"#,
        );
        let r = rank(
            &c,
            "r-1",
            &Requirements::default(),
            Strategy::Cheapest.weights(),
            &[],
        )
        .unwrap();
        for candidate in &r.candidates {
            assert_eq!(candidate.price_norm, 0.0);
            assert!((candidate.score - 0.2 * 0.5).abs() < 1e-12);
        }
    }

    #[test]
    fn ties_break_on_price_then_type_then_zone() {
        // Equal risk; with price weight 0 every score ties at 0.25.
        let c = catalog(
            "b.large,b,x86_64,2,8192,0\na.large,a,x86_64,2,8192,0\n",
            "",
            "r-1,r-1b,a.large,0.04\nr-1,r-1a,a.large,0.04\nr-1,r-1a,b.large,0.04\nr-1,r-1c,b.large,0.02\n",
            r#"{"spot_advisor":{"r-1":{"Linux":{"a.large":{"r":1},"b.large":{"r":1}}}}}"#,
        );
        let r = rank(
            &c,
            "r-1",
            &Requirements::default(),
            Weights::new(0.0, 1.0).unwrap(),
            &[],
        )
        .unwrap();
        let order: Vec<(&str, &str)> = r
            .candidates
            .iter()
            .map(|c| (c.instance_type, c.zone))
            .collect();
        assert_eq!(
            order,
            [
                ("b.large", "r-1c"),
                ("a.large", "r-1a"),
                ("a.large", "r-1b"),
                ("b.large", "r-1a")
            ]
        );
    }

    #[test]
    fn flagged_spot_pair_is_removed_before_normalising() {
        let c = fixture();
        let w = Weights::new(1.0, 0.0).unwrap();
        // The two dearest pairs (0.02 per vCPU-hour) plus flags that match nothing in the catalog.
        let flags = [
            flag("r-1a", "m5.large"),
            flag("r-1a", "r6i.2xlarge"),
            flag("r-1z", "m5.large"),
            flag("r-1a", "x9.huge"),
        ];
        let r = rank(&c, "r-1", &spot_only(), w, &flags).unwrap();
        assert_eq!(r.flagged_removed, 2);
        assert_eq!(r.candidates.len(), 4);
        assert!(
            !r.candidates
                .iter()
                .any(|c| c.zone == "r-1a" && c.instance_type != "c6g.xlarge")
        );
        assert!(r.candidates.iter().all(|c| !c.flagged));
        // p_max is now 0.015 (m5 and c6g r-1b), not the removed 0.02.
        assert_eq!(
            find(&r, "m5.large", "r-1b", CapacityType::Spot).price_norm,
            1.0
        );
    }

    #[test]
    fn flags_leave_the_on_demand_candidate_of_the_pair() {
        let c = fixture();
        let r = rank(
            &c,
            "r-1",
            &Requirements::default(),
            Weights::default(),
            &[flag("r-1a", "m5.large")],
        )
        .unwrap();
        assert!(!r.candidates.iter().any(|c| c.instance_type == "m5.large"
            && c.zone == "r-1a"
            && c.capacity_type == CapacityType::Spot));
        assert!(!find(&r, "m5.large", "r-1a", CapacityType::OnDemand).flagged);
    }

    #[test]
    fn when_every_candidate_is_flagged_they_all_stay_marked() {
        let c = fixture();
        let req = Requirements {
            families: vec!["m5".into()],
            ..spot_only()
        };
        let r = rank(
            &c,
            "r-1",
            &req,
            Weights::default(),
            &[flag("r-1a", "m5.large"), flag("r-1b", "m5.large")],
        )
        .unwrap();
        assert_eq!(r.candidates.len(), 2);
        assert!(r.all_flagged());
        assert!(r.candidates.iter().all(|c| c.flagged));
        assert_eq!(r.flagged_removed, 0);
    }

    #[test]
    fn requirement_filters_each_narrow_the_set() {
        let c = fixture();
        let types = |req: Requirements| {
            let r = rank(&c, "r-1", &req, Weights::default(), &[]).unwrap();
            let mut t: Vec<&str> = r.candidates.iter().map(|c| c.instance_type).collect();
            t.sort_unstable();
            t.dedup();
            t.join(" ")
        };
        let d = Requirements::default;
        assert_eq!(types(d()), "c6g.xlarge m5.large r6i.2xlarge");
        assert_eq!(
            types(Requirements {
                current_generation_only: false,
                ..d()
            }),
            "c6g.xlarge m4.large m5.large r6i.2xlarge"
        );
        assert_eq!(
            types(Requirements {
                families: vec!["m5".into(), "r6i".into()],
                ..d()
            }),
            "m5.large r6i.2xlarge"
        );
        assert_eq!(
            types(Requirements {
                exclude_types: vec!["m5.large".into()],
                ..d()
            }),
            "c6g.xlarge r6i.2xlarge"
        );
        assert_eq!(
            types(Requirements {
                architectures: vec![Arch::Arm64],
                ..d()
            }),
            "c6g.xlarge"
        );
        assert_eq!(
            types(Requirements {
                min_vcpu: Some(4),
                ..d()
            }),
            "c6g.xlarge r6i.2xlarge"
        );
        assert_eq!(
            types(Requirements {
                max_vcpu: Some(4),
                ..d()
            }),
            "c6g.xlarge m5.large"
        );
        assert_eq!(
            types(Requirements {
                min_memory_gib: Some(9.0),
                ..d()
            }),
            "r6i.2xlarge"
        );
        assert_eq!(
            types(Requirements {
                max_memory_gib: Some(8.0),
                ..d()
            }),
            "c6g.xlarge m5.large"
        );
        assert_eq!(
            types(Requirements {
                max_gpus: Some(0),
                ..d()
            }),
            "c6g.xlarge m5.large r6i.2xlarge",
            "no fixture type has a GPU"
        );
        let r = rank(
            &c,
            "r-1",
            &Requirements {
                zones: vec!["r-1b".into()],
                ..d()
            },
            Weights::default(),
            &[],
        )
        .unwrap();
        assert!(r.candidates.iter().all(|c| c.zone == "r-1b"));
        let od = Requirements {
            capacity_types: vec![CapacityType::OnDemand],
            ..d()
        };
        let r = rank(&c, "r-1", &od, Weights::default(), &[]).unwrap();
        assert!(
            r.candidates
                .iter()
                .all(|c| c.capacity_type == CapacityType::OnDemand)
        );
    }

    #[test]
    fn no_candidates_names_the_field_that_emptied_the_set() {
        let c = fixture();
        let req = Requirements {
            families: vec!["x9".into()],
            ..Requirements::default()
        };
        let err = rank(&c, "r-1", &req, Weights::default(), &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("requirements match no instance type in r-1"),
            "{err}"
        );
        assert!(err.contains("families [x9] leaves 0"), "{err}");
        let req = Requirements {
            zones: vec!["r-1q".into()],
            ..Requirements::default()
        };
        let err = rank(&c, "r-1", &req, Weights::default(), &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("zones [r-1q] are not zones of the region (known: r-1a, r-1b)"),
            "{err}"
        );
    }

    #[test]
    fn unknown_region_lists_the_known_ones() {
        let err = rank(
            &fixture(),
            "mars-1",
            &Requirements::default(),
            Weights::default(),
            &[],
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "region `mars-1` is not in the catalog; known regions: r-1"
        );
    }

    #[test]
    fn invalid_requirements_name_the_field() {
        let req = Requirements {
            min_vcpu: Some(8),
            max_vcpu: Some(4),
            ..Requirements::default()
        };
        let err = rank(&fixture(), "r-1", &req, Weights::default(), &[])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("requirements.maxVcpu:"), "{err}");
        let req = Requirements {
            max_types: 41,
            ..Requirements::default()
        };
        assert!(
            req.validate()
                .unwrap_err()
                .to_string()
                .starts_with("requirements.maxTypes:")
        );
    }

    #[test]
    fn top_instance_types_are_distinct_and_in_rank_order() {
        let c = fixture();
        let r = rank(&c, "r-1", &spot_only(), Strategy::Stable.weights(), &[]).unwrap();
        assert_eq!(r.top_instance_types(2), ["m5.large", "r6i.2xlarge"]);
        assert_eq!(r.top_instance_types(10).len(), 3);
    }

    #[test]
    fn embedded_catalog_ranks_us_east_1() {
        let c = Catalog::embedded();
        let r = rank(
            c,
            "us-east-1",
            &Requirements::default(),
            Weights::default(),
            &[],
        )
        .unwrap();
        assert!(r.candidates.len() > 800 * 6);
        assert!(r.candidates.windows(2).all(|w| w[0].score <= w[1].score));
    }

    /// A random catalog: per type (vcpu, on-demand price, advisor bucket or none, spot prices per zone).
    fn arb_catalog() -> impl proptest::strategy::Strategy<Value = (Catalog, Vec<FlaggedPair>)> {
        let zone_price = proptest::option::weighted(0.8, 0.001f64..5.0);
        let one_type = (
            1u32..64,
            proptest::option::of(0.01f64..10.0),
            proptest::option::of(0u8..=4),
            proptest::collection::vec(zone_price, 3),
        );
        (
            proptest::collection::vec(one_type, 1..12),
            proptest::collection::vec((0usize..3, 0usize..12), 0..10),
        )
            .prop_map(|(types, flags)| {
                let (mut t, mut od, mut spot, mut adv) =
                    (String::new(), String::new(), String::new(), Vec::new());
                for (i, (vcpu, on_demand, bucket, zones)) in types.iter().enumerate() {
                    t.push_str(&format!("f{i}.large,f{i},x86_64,{vcpu},4096,0\n"));
                    if let Some(p) = on_demand {
                        od.push_str(&format!("r-1,f{i}.large,{p}\n"));
                    }
                    for (z, price) in zones.iter().enumerate() {
                        if let Some(p) = price {
                            spot.push_str(&format!(
                                "r-1,r-1{},f{i}.large,{p}\n",
                                ['a', 'b', 'c'][z]
                            ));
                        }
                    }
                    if let Some(r) = bucket {
                        adv.push(format!("\"f{i}.large\":{{\"r\":{r}}}"));
                    }
                }
                let advisor = format!(
                    "{{\"spot_advisor\":{{\"r-1\":{{\"Linux\":{{{}}}}}}}}}",
                    adv.join(",")
                );
                let flags = flags
                    .into_iter()
                    .map(|(z, i)| {
                        flag(
                            &format!("r-1{}", ['a', 'b', 'c'][z]),
                            &format!("f{i}.large"),
                        )
                    })
                    .collect();
                (catalog(&t, &od, &spot, &advisor), flags)
            })
    }

    proptest! {
        #[test]
        fn ranking_invariants_hold((c, flags) in arb_catalog(), price_weight in 0.0f64..=1.0, spot in any::<bool>()) {
            let req = if spot { spot_only() } else { Requirements::default() };
            let weights = Weights::new(price_weight, 1.0 - price_weight).unwrap();
            let Ok(r) = rank(&c, "r-1", &req, weights, &flags) else { return Ok(()); };
            prop_assert!(!r.candidates.is_empty());
            for c in &r.candidates {
                prop_assert!((0.0..=1.0).contains(&c.score), "score {}", c.score);
                prop_assert!((0.0..=1.0).contains(&c.price_norm));
            }
            prop_assert!(r.candidates.windows(2).all(|w| rank_order(&w[0], &w[1]) != Ordering::Greater));
            let is_flagged = |c: &RankedCandidate<'_>| c.capacity_type == CapacityType::Spot
                && flags.iter().any(|f| f.zone == c.zone && f.instance_type == c.instance_type);
            if r.all_flagged() {
                prop_assert!(r.candidates.iter().all(|c| c.flagged && is_flagged(c)));
            } else {
                prop_assert!(r.candidates.iter().all(|c| !c.flagged && !is_flagged(c)));
            }
        }
    }

    #[test]
    fn min_gpus_keeps_only_gpu_types_and_names_the_field_when_none_has_one() {
        let c = catalog(
            "m5.large,m5,x86_64,2,8192,0\ng5.xlarge,g5,x86_64,4,16384,1\n",
            "r-1,m5.large,0.096\nr-1,g5.xlarge,1.006\n",
            "r-1,r-1a,m5.large,0.04\nr-1,r-1a,g5.xlarge,0.4\n",
            ADVISOR_EMPTY,
        );
        let gpu = Requirements {
            min_gpus: Some(1),
            ..Requirements::default()
        };
        let ranked = rank(&c, "r-1", &gpu, Weights::default(), &[]).expect("a GPU type ranks");
        assert!(
            ranked
                .candidates
                .iter()
                .all(|c| c.instance_type == "g5.xlarge")
        );
        assert!(!ranked.candidates.is_empty());
        let four = Requirements {
            min_gpus: Some(4),
            ..Requirements::default()
        };
        let err = rank(&c, "r-1", &four, Weights::default(), &[]).unwrap_err();
        assert!(err.to_string().contains("minGpus 4"), "{err}");
        let inverted = Requirements {
            min_gpus: Some(2),
            max_gpus: Some(1),
            ..Requirements::default()
        };
        assert!(
            inverted
                .validate()
                .unwrap_err()
                .to_string()
                .contains("maxGpus")
        );
    }
}
