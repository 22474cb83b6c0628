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

/// validate: what a template asks of the ranking, checked: its requirements and its weights (given, or
/// its strategy's). `cloudoptim rank --template` runs this same step.
pub fn ranking_inputs(
    spec: &crate::api::NodeTemplateSpec,
) -> Result<(Requirements, Weights), RankError> {
    let requirements = engine_requirements(&spec.requirements);
    requirements.validate()?;
    let weights = match spec.weights {
        Some(w) => Weights::new(w.price, w.risk)?,
        None => match spec.strategy {
            Strategy::Cheapest => ranking::Strategy::Cheapest,
            Strategy::Balanced => ranking::Strategy::Balanced,
            Strategy::Stable => ranking::Strategy::Stable,
        }
        .weights(),
    };
    Ok((requirements, weights))
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

/// SpotRiskFlags raised in this cluster and still active.
pub(super) fn local_flags(flags: &[SpotRiskFlag], now: i64) -> i64 {
    let local = flags
        .iter()
        .filter(|f| {
            f.spec.source == crate::api::risk_flag::FlagSource::Local
                && f.spec.expires_at.0.as_second() > now
        })
        .count();
    i64::try_from(local).unwrap_or(i64::MAX)
}

/// Each group's MixedInstancesPolicy, and until when it is on on-demand after a Spot capacity error.
/// With a governing policy: its Spot split (0% Spot during a fallback), its on-demand base split over
/// the groups. Without one: the split each group has stays and only the ranked types change (a group
/// without a MixedInstancesPolicy launches on-demand only, and keeps doing so).
pub(super) fn desired_groups(
    template: &NodeTemplate,
    groups: &[AutoScalingGroup],
    governing: Option<&Governing>,
    top: &[&str],
    now: i64,
) -> Vec<(MixedInstances, Option<i64>)> {
    let bases = split_base(governing.map_or(0, |g| g.mix.on_demand_base), groups.len());
    let annotation = template
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(SPOT_FALLBACK_ANNOTATION))
        .map(String::as_str);
    groups
        .iter()
        .zip(bases)
        .map(|(group, base)| {
            let fallback = fallback_until(annotation, &group.name, now);
            let target = match governing {
                Some(g) => desired_mix(
                    top,
                    if fallback.is_some() {
                        0
                    } else {
                        g.mix.spot_percentage
                    },
                    base,
                    allowed(&template.spec.requirements),
                ),
                None => match &group.mixed {
                    Some(current) => keep_split(
                        top,
                        current.on_demand_base,
                        current.on_demand_percentage_above_base,
                    ),
                    None => keep_split(top, 0, 100),
                },
            };
            let mixed = MixedInstances {
                overrides: target.overrides,
                on_demand_base: target.on_demand_base,
                on_demand_percentage_above_base: target.on_demand_percentage_above_base,
                spot_allocation_strategy: Some(SPOT_ALLOCATION_STRATEGY.to_string()),
            };
            (mixed, fallback)
        })
        .collect()
}

/// Re-rank when Spot prices may have moved, or as soon as a flag expires or a fallback ends.
pub(super) fn requeue_for(
    next_expiry: Option<i64>,
    fallbacks: &[(String, i64)],
    now: i64,
) -> Duration {
    next_expiry
        .into_iter()
        .chain(fallbacks.iter().map(|(_, until)| *until))
        .min()
        .map(|at| Duration::from_secs(u64::try_from(at - now).unwrap_or(0) + 1))
        .map_or(RERANK_INTERVAL, |d| d.min(RERANK_INTERVAL))
}

/// The Ready message of a ranked template.
pub(super) fn note(
    ranking: &Ranking<'_>,
    top: &[&str],
    governing: Option<&Governing>,
    process_dry_run: bool,
    snapshot: &crate::controllers::catalog::CatalogView,
    fallbacks: &[(String, i64)],
) -> String {
    use crate::cloud::spot_advisor::Freshness;
    let stale = match snapshot.advisor {
        Freshness::Fresh => "",
        Freshness::Stale => "; Spot Advisor refresh failed, using the last good copy",
        Freshness::Sample => "; Spot Advisor feed unavailable, using SAMPLE buckets",
    };
    let fallback_note: String = fallbacks
        .iter()
        .map(|(g, until)| {
            let at = chrono::DateTime::from_timestamp(*until, 0)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_default();
            format!("; {g} on on-demand after a Spot capacity error until {at}")
        })
        .collect();
    let governance = match governing {
        None => {
            "; no OptimizationPolicy selects this template: the groups keep their Spot/on-demand \
                 split, only the ranked instance types are written"
                .to_string()
        }
        Some(g) if g.dry_run => format!(
            "; OptimizationPolicy {} is in dry run: the groups are not changed",
            g.name
        ),
        Some(_) if process_dry_run => "; --dry-run: the groups are not changed".to_string(),
        Some(g) => format!("; Spot mix from OptimizationPolicy {}", g.name),
    };
    format!(
        "{} candidates, {} flagged left out, top {}{}{}; on-demand prices: {}{}",
        ranking.candidates.len(),
        ranking.flagged_removed,
        top.iter().take(3).copied().collect::<Vec<_>>().join(", "),
        governance,
        stale,
        snapshot.prices,
        fallback_note
    )
}
