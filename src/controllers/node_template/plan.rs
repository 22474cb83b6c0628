//! plan (pure): the policy mix a template gets, the engine's requirements and weights, the flagged
//! pairs left out, the overrides written, the status of candidates and groups.

use super::*;

/// The Spot mix a template gets from the policy that selects it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct PolicyMix {
    pub(super) spot_percentage: u32,
    pub(super) on_demand_base: u32,
}

/// The OptimizationPolicy that governs a template's groups.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Governing {
    /// Its name.
    pub(super) name: String,
    /// The Spot mix it asks for.
    pub(super) mix: PolicyMix,
    /// `spec.dryRun`: nothing the policy governs may change, the groups included.
    pub(super) dry_run: bool,
}

pub(super) fn engine_requirements(spec: &crate::api::node_template::Requirements) -> Requirements {
    use crate::api::node_template::Architecture;
    Requirements {
        families: spec.families.clone(),
        exclude_types: spec.exclude_types.clone(),
        architectures: spec
            .architectures
            .iter()
            .map(|a| match a {
                Architecture::X86_64 => Arch::X86_64,
                Architecture::Arm64 => Arch::Arm64,
            })
            .collect(),
        min_vcpu: spec.min_vcpu,
        max_vcpu: spec.max_vcpu,
        min_memory_gib: spec.min_memory_gib,
        max_memory_gib: spec.max_memory_gib,
        min_gpus: spec.min_gpus,
        max_gpus: spec.max_gpus,
        zones: spec.zones.clone(),
        capacity_types: spec
            .capacity_types
            .iter()
            .map(|c| match c {
                CapacityType::Spot => ranking::CapacityType::Spot,
                CapacityType::OnDemand => ranking::CapacityType::OnDemand,
            })
            .collect(),
        current_generation_only: spec.current_generation_only,
        max_types: spec.max_types,
    }
}

pub(super) fn weights(template: &NodeTemplate) -> Result<Weights, Error> {
    match template.spec.weights {
        Some(w) => Weights::new(w.price, w.risk).map_err(Error::Requirements),
        None => Ok(match template.spec.strategy {
            Strategy::Cheapest => ranking::Strategy::Cheapest,
            Strategy::Balanced => ranking::Strategy::Balanced,
            Strategy::Stable => ranking::Strategy::Stable,
        }
        .weights()),
    }
}

pub(super) fn allowed(spec: &crate::api::node_template::Requirements) -> Allowed {
    let spot = spec.capacity_types.is_empty() || spec.capacity_types.contains(&CapacityType::Spot);
    let on_demand =
        spec.capacity_types.is_empty() || spec.capacity_types.contains(&CapacityType::OnDemand);
    match (spot, on_demand) {
        (true, false) => Allowed::SpotOnly,
        (false, true) => Allowed::OnDemandOnly,
        _ => Allowed::Both,
    }
}

/// The policy selecting this template, `None` when none does, an error when several do.
pub(super) fn policy_for(
    template: &NodeTemplate,
    policies: &[OptimizationPolicy],
) -> Result<Option<Governing>, Error> {
    let labels = labels_of(&template.metadata);
    let mut selecting = Vec::new();
    for policy in policies {
        let selector = policy
            .spec
            .node_template_selector
            .clone()
            .unwrap_or_default();
        let selector = Selector::try_from(selector)
            .map_err(|e| Error::BadSelector(policy.name_any(), e.to_string()))?;
        if selector.matches(&labels) {
            selecting.push(policy);
        }
    }
    match selecting.as_slice() {
        [] => Ok(None),
        [policy] => Ok(Some(Governing {
            name: policy.name_any(),
            mix: PolicyMix {
                spot_percentage: policy.spec.spot.percentage,
                on_demand_base: policy.spec.spot.on_demand_base,
            },
            dry_run: policy.spec.dry_run,
        })),
        many => Err(Error::ConflictingPolicies(
            many.iter()
                .map(|p| p.name_any())
                .collect::<Vec<_>>()
                .join(", "),
        )),
    }
}

/// Active flags of this region, as (zone, type) pairs, and the earliest expiry among them.
pub(super) fn active_flags(
    flags: &[SpotRiskFlag],
    region: &str,
    now: i64,
) -> (Vec<FlaggedPair>, Option<i64>) {
    let active: Vec<&SpotRiskFlag> = flags
        .iter()
        .filter(|f| f.spec.region == region && f.spec.expires_at.0.as_second() > now)
        .collect();
    let next_expiry = active.iter().map(|f| f.spec.expires_at.0.as_second()).min();
    let pairs = active
        .iter()
        .map(|f| FlaggedPair {
            zone: f.spec.zone.clone(),
            instance_type: f.spec.instance_type.clone(),
        })
        .collect();
    (pairs, next_expiry)
}

/// The instance types to write as overrides, best first. Ranking keeps the on-demand candidate of a
/// flagged (zone, type); the overrides are shared by Spot and on-demand launches, so a type is left out
/// here wherever it is flagged, unless nothing else is left.
pub(super) fn override_types<'c>(
    ranking: &Ranking<'c>,
    flagged: &[FlaggedPair],
    max_types: usize,
) -> Vec<&'c str> {
    let is_flagged = |t: &str, z: &str| flagged.iter().any(|f| f.instance_type == t && f.zone == z);
    let mut types: Vec<&'c str> = Vec::with_capacity(max_types);
    for c in &ranking.candidates {
        if types.len() == max_types {
            break;
        }
        if !types.contains(&c.instance_type) && !is_flagged(c.instance_type, c.zone) {
            types.push(c.instance_type);
        }
    }
    if types.is_empty() {
        return ranking.top_instance_types(max_types);
    }
    types
}

pub(super) fn candidate_status(ranking: &Ranking<'_>) -> Vec<CandidateStatus> {
    ranking
        .candidates
        .iter()
        .take(10)
        .map(|c| CandidateStatus {
            instance_type: c.instance_type.to_string(),
            zone: c.zone.to_string(),
            capacity_type: match c.capacity_type {
                ranking::CapacityType::Spot => CapacityType::Spot,
                ranking::CapacityType::OnDemand => CapacityType::OnDemand,
            },
            spot_price: c.spot_price,
            on_demand_price: c.on_demand_price,
            risk_bucket: c.risk_bucket,
            score: (c.score * 10_000.0).round() / 10_000.0,
            flagged: c.flagged,
        })
        .collect()
}

pub(super) fn missing_groups(
    selector: &GroupSelector,
    found: &[AutoScalingGroup],
) -> Option<String> {
    match selector {
        GroupSelector::Names(names) => {
            let missing: Vec<&str> = names
                .iter()
                .filter(|n| !found.iter().any(|g| &g.name == *n))
                .map(String::as_str)
                .collect();
            (!missing.is_empty() || names.is_empty())
                .then(|| format!("Auto Scaling group(s) not found: {}", missing.join(", ")))
        }
        GroupSelector::Tags(tags) => found.is_empty().then(|| {
            let tags: Vec<String> = tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("no Auto Scaling group carries the tags {}", tags.join(", "))
        }),
    }
}

/// A group's status line: its sizes, and the Spot share of `mix` (the one written or kept), else of
/// its current MixedInstancesPolicy (0 without one).
pub(super) fn group_status(group: &AutoScalingGroup, mix: Option<&MixedInstances>) -> GroupStatus {
    let on_demand = mix
        .or(group.mixed.as_ref())
        .map_or(100, |m| m.on_demand_percentage_above_base);
    GroupStatus {
        name: group.name.clone(),
        desired: group.desired,
        min: group.min,
        max: group.max,
        spot_percentage: 100 - on_demand,
        instances: i32::try_from(group.instances.len()).unwrap_or(i32::MAX),
    }
}

pub(super) fn differs(current: Option<&MixedInstances>, desired: &MixedInstances) -> bool {
    current != Some(desired)
}
