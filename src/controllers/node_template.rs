//! The NodeTemplate controller: resolve the bound Auto Scaling groups -> rank the allowed instance types
//! (engine) with active SpotRiskFlags left out -> build each group's MixedInstancesPolicy (top `maxTypes`
//! overrides in rank order, capacity-optimized-prioritized, the on-demand base and Spot percentage of
//! the OptimizationPolicy that selects the template) -> update a group only when it differs -> status.
//!
//! This controller owns the groups' MixedInstancesPolicy and nothing else: sizes belong to hibernation
//! and to consolidation.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams};
use kube::core::{Selector, SelectorExt};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};

use super::{Context, apply_status, condition, labels_of, retry_failed};
use crate::api::node_template::{CandidateStatus, GroupStatus, Strategy};
use crate::api::{
    CapacityType, NodeTemplate, NodeTemplateStatus, OptimizationPolicy, SpotRiskFlag,
};
use crate::cloud::{
    AutoScalingGroup, Cloud, CloudError, GroupSelector, GroupUpdate, MixedInstances,
};
use crate::engine::catalog::Arch;
use crate::engine::mix::{
    Allowed, SPOT_ALLOCATION_STRATEGY, SPOT_FALLBACK_ANNOTATION, desired_mix, fallback_until,
    keep_split, split_base,
};
use crate::engine::ranking::{self, FlaggedPair, RankError, Ranking, Requirements, Weights};

/// Name of this controller in metrics.
pub const CONTROLLER: &str = "node_template";
/// How often a template is re-ranked when nothing changes (Spot prices are cached for 5 minutes).
pub const RERANK_INTERVAL: Duration = Duration::from_secs(300);
/// The tag hibernation puts on a group it holds at zero.
pub use crate::names::HIBERNATED_BY as HIBERNATED_BY_TAG;

/// Why a reconcile failed. Spec problems wait for a change; the rest are retried.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No group matches the binding.
    #[error("spec.autoScalingGroups: {0}")]
    GroupsNotFound(String),
    /// The requirements are invalid or match nothing.
    #[error("spec.requirements: {0}")]
    Requirements(RankError),
    /// Two policies select this template.
    #[error(
        "selected by more than one OptimizationPolicy ({0}); neither acts on it until only one selects it"
    )]
    ConflictingPolicies(String),
    /// A policy's selector cannot be parsed.
    #[error("OptimizationPolicy {0}: spec.nodeTemplateSelector: {1}")]
    BadSelector(String, String),
    /// An AWS call failed.
    #[error(transparent)]
    Cloud(#[from] CloudError),
    /// A Kubernetes API call failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

impl Error {
    /// The `Ready=False` reason, also the metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::GroupsNotFound(_) => "AutoScalingGroupNotFound",
            Error::Requirements(RankError::NoCandidates { .. }) => "NoMatchingInstanceTypes",
            Error::Requirements(_) => "InvalidRequirements",
            Error::ConflictingPolicies(_) => "ConflictingPolicies",
            Error::BadSelector(..) => "InvalidPolicySelector",
            Error::Cloud(CloudError::AccessDenied { .. }) => "AccessDenied",
            Error::Cloud(CloudError::Throttled { .. }) => "AwsThrottled",
            Error::Cloud(_) => "AwsError",
            Error::Kube(_) => "KubernetesError",
        }
    }

    /// How soon to try again.
    fn retry_after(&self) -> Duration {
        match self {
            Error::Requirements(_) | Error::ConflictingPolicies(_) | Error::BadSelector(..) => {
                RERANK_INTERVAL
            }
            Error::GroupsNotFound(_) => Duration::from_secs(60),
            _ => Duration::from_secs(15),
        }
    }
}

/// The Spot mix a template gets from the policy that selects it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct PolicyMix {
    spot_percentage: u32,
    on_demand_base: u32,
}

/// The OptimizationPolicy that governs a template's groups.
#[derive(Debug, Clone, PartialEq)]
struct Governing {
    /// Its name.
    name: String,
    /// The Spot mix it asks for.
    mix: PolicyMix,
    /// `spec.dryRun`: nothing the policy governs may change, the groups included.
    dry_run: bool,
}

/// What one reconcile decided.
struct Outcome {
    candidates: Vec<CandidateStatus>,
    groups: Vec<GroupStatus>,
    updated: Vec<String>,
    requeue: Duration,
    note: String,
}

fn engine_requirements(spec: &crate::api::node_template::Requirements) -> Requirements {
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

fn weights(template: &NodeTemplate) -> Result<Weights, Error> {
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

fn allowed(spec: &crate::api::node_template::Requirements) -> Allowed {
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
fn policy_for(
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
fn active_flags(flags: &[SpotRiskFlag], region: &str, now: i64) -> (Vec<FlaggedPair>, Option<i64>) {
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
fn override_types<'c>(
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

fn candidate_status(ranking: &Ranking<'_>) -> Vec<CandidateStatus> {
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

pub(crate) fn group_selector(template: &NodeTemplate) -> GroupSelector {
    let binding = &template.spec.auto_scaling_groups;
    match (&binding.names, &binding.tag_selector) {
        (Some(names), _) => GroupSelector::Names(names.clone()),
        (None, Some(tags)) => GroupSelector::Tags(tags.clone()),
        (None, None) => GroupSelector::Names(Vec::new()),
    }
}

fn missing_groups(selector: &GroupSelector, found: &[AutoScalingGroup]) -> Option<String> {
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
fn group_status(group: &AutoScalingGroup, mix: Option<&MixedInstances>) -> GroupStatus {
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

fn differs(current: Option<&MixedInstances>, desired: &MixedInstances) -> bool {
    current != Some(desired)
}

async fn plan_and_apply<C: Cloud>(
    template: &NodeTemplate,
    ctx: &Context<C>,
) -> Result<Outcome, Error> {
    // read
    let policies = Api::<OptimizationPolicy>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let flags = Api::<SpotRiskFlag>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let selector = group_selector(template);
    let mut groups = ctx.cloud.groups(&selector).await?;
    groups.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(message) = missing_groups(&selector, &groups) {
        return Err(Error::GroupsNotFound(message));
    }
    // validate
    let governing = policy_for(template, &policies)?;
    // Dry run (the process flag, or the governing policy's) writes nothing into the groups.
    let dry_run = ctx.config.dry_run || governing.as_ref().is_some_and(|g| g.dry_run);
    let requirements = engine_requirements(&template.spec.requirements);
    let weights = weights(template)?;
    let now = chrono::Utc::now().timestamp();
    let (flagged, next_expiry) = active_flags(&flags, &ctx.config.region, now);
    let local = flags
        .iter()
        .filter(|f| {
            f.spec.source == crate::api::risk_flag::FlagSource::Local
                && f.spec.expires_at.0.as_second() > now
        })
        .count();
    ctx.metrics
        .risk_flags
        .with_label_values(&["local"])
        .set(i64::try_from(local).unwrap_or(i64::MAX));
    // plan
    let snapshot = ctx.catalog.snapshot(&ctx.cloud).await?;
    let ranking = ranking::rank(
        &snapshot.catalog,
        &ctx.config.region,
        &requirements,
        weights,
        &flagged,
    )
    .map_err(Error::Requirements)?;
    let max_types = usize::try_from(template.spec.requirements.max_types).unwrap_or(20);
    let top = override_types(&ranking, &flagged, max_types);
    let bases = split_base(
        governing.as_ref().map_or(0, |g| g.mix.on_demand_base),
        groups.len(),
    );
    // apply
    let mut updated = Vec::new();
    let mut statuses = Vec::new();
    let fallback_annotation = template
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(SPOT_FALLBACK_ANNOTATION))
        .map(String::as_str);
    let mut fallbacks = Vec::new();
    for (group, base) in groups.iter().zip(bases) {
        // After a Spot capacity error the group runs on on-demand until the fallback ends.
        let fallback = fallback_until(fallback_annotation, &group.name, now);
        if let Some(until) = fallback {
            fallbacks.push((group.name.clone(), until));
        }
        let target = match &governing {
            Some(governing) => {
                let spot_percentage = if fallback.is_some() {
                    0
                } else {
                    governing.mix.spot_percentage
                };
                desired_mix(
                    &top,
                    spot_percentage,
                    base,
                    allowed(&template.spec.requirements),
                )
            }
            // No policy: the split the group has stays; only the ranked types change. A group without
            // a MixedInstancesPolicy launches on-demand only, and keeps doing so (100% on-demand).
            None => match &group.mixed {
                Some(current) => keep_split(
                    &top,
                    current.on_demand_base,
                    current.on_demand_percentage_above_base,
                ),
                None => keep_split(&top, 0, 100),
            },
        };
        let desired = MixedInstances {
            overrides: target.overrides,
            on_demand_base: target.on_demand_base,
            on_demand_percentage_above_base: target.on_demand_percentage_above_base,
            spot_allocation_strategy: Some(SPOT_ALLOCATION_STRATEGY.to_string()),
        };
        if differs(group.mixed.as_ref(), &desired) && !dry_run {
            ctx.cloud
                .update_group(&GroupUpdate {
                    name: group.name.clone(),
                    mixed: Some(desired.clone()),
                    launch_template: group.launch_template.clone(),
                    ..GroupUpdate::default()
                })
                .await?;
            updated.push(group.name.clone());
        }
        statuses.push(group_status(group, Some(&desired)));
    }
    // Re-rank when Spot prices may have moved, or as soon as a flag expires.
    let next_change = next_expiry
        .into_iter()
        .chain(fallbacks.iter().map(|(_, until)| *until))
        .min();
    let requeue = next_change
        .map(|at| Duration::from_secs(u64::try_from(at - now).unwrap_or(0) + 1))
        .map_or(RERANK_INTERVAL, |d| d.min(RERANK_INTERVAL));
    let stale = match snapshot.advisor {
        crate::cloud::spot_advisor::Freshness::Fresh => "",
        crate::cloud::spot_advisor::Freshness::Stale => {
            "; Spot Advisor refresh failed, using the last good copy"
        }
        crate::cloud::spot_advisor::Freshness::Sample => {
            "; Spot Advisor feed unavailable, using SAMPLE buckets"
        }
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
    let governance = match &governing {
        None => {
            "; no OptimizationPolicy selects this template: the groups keep their Spot/on-demand \
                 split, only the ranked instance types are written"
                .to_string()
        }
        Some(g) if g.dry_run => format!(
            "; OptimizationPolicy {} is in dry run: the groups are not changed",
            g.name
        ),
        Some(_) if ctx.config.dry_run => "; --dry-run: the groups are not changed".to_string(),
        Some(g) => format!("; Spot mix from OptimizationPolicy {}", g.name),
    };
    let note = format!(
        "{} candidates, {} flagged left out, top {}{}{}; on-demand prices: {}{}",
        ranking.candidates.len(),
        ranking.flagged_removed,
        top.iter().take(3).copied().collect::<Vec<_>>().join(", "),
        governance,
        stale,
        snapshot.prices,
        fallback_note
    );
    Ok(Outcome {
        candidates: candidate_status(&ranking),
        groups: statuses,
        updated,
        requeue,
        note,
    })
}

async fn write_status(
    api: &Api<NodeTemplate>,
    template: &NodeTemplate,
    status: &NodeTemplateStatus,
) -> Result<(), Error> {
    Ok(
        apply_status::<NodeTemplate>(&api.clone().into_client(), &template.name_any(), status)
            .await?,
    )
}

/// Reconcile one NodeTemplate.
pub async fn reconcile<C: Cloud>(
    template: Arc<NodeTemplate>,
    ctx: Arc<Context<C>>,
) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile_timer(CONTROLLER);
    let api: Api<NodeTemplate> = Api::all(ctx.client.clone());
    let previous = template.status.clone().unwrap_or_default();
    let generation = template.metadata.generation;
    let reference = template.object_ref(&());
    match plan_and_apply(&template, &ctx).await {
        Ok(outcome) => {
            let status = NodeTemplateStatus {
                observed_generation: generation,
                candidates: outcome.candidates,
                groups: outcome.groups,
                last_ranked: Some(Time(k8s_openapi::jiff::Timestamp::now())),
                conditions: vec![condition(
                    &previous.conditions,
                    "Ready",
                    true,
                    "Ranked",
                    outcome.note.clone(),
                    generation,
                )],
            };
            if !outcome.updated.is_empty() {
                let note = format!(
                    "MixedInstancesPolicy of {} updated: {}",
                    outcome.updated.join(", "),
                    outcome.note
                );
                ctx.event(&reference, false, "RankingUpdated", note).await;
            }
            write_status(&api, &template, &status).await?;
            tracing::info!(template = %template.name_any(), updated = ?outcome.updated, note = %outcome.note, "ranked");
            Ok(Action::requeue(outcome.requeue))
        }
        Err(error) => {
            let ready = ctx
                .not_ready(
                    CONTROLLER,
                    &reference,
                    &previous.conditions,
                    generation,
                    error.reason(),
                    error.to_string(),
                )
                .await;
            let status = NodeTemplateStatus {
                observed_generation: generation,
                conditions: vec![ready],
                ..previous.clone()
            };
            write_status(&api, &template, &status).await?;
            tracing::warn!(template = %template.name_any(), error = %error, "NodeTemplate not ready");
            Ok(Action::requeue(error.retry_after()))
        }
    }
}

/// Retry after a failure the reconcile could not record (status write failed).
pub fn error_policy<C: Cloud>(
    template: Arc<NodeTemplate>,
    error: &Error,
    ctx: Arc<Context<C>>,
) -> Action {
    retry_failed(
        &ctx.metrics,
        CONTROLLER,
        error.reason(),
        &template.name_any(),
        error,
        Duration::from_secs(15),
    )
}

/// Run the controller until `shutdown` resolves. Policy and flag changes re-rank every template.
pub async fn run<C: Cloud>(
    ctx: Arc<Context<C>>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let templates: Api<NodeTemplate> = Api::all(client.clone());
    let policies = watcher::watcher(
        Api::<OptimizationPolicy>::all(client.clone()),
        watcher::Config::default(),
    )
    .filter_map(|e| async move { e.ok().map(|_| ()) });
    let flags = watcher::watcher(Api::<SpotRiskFlag>::all(client), watcher::Config::default())
        .filter_map(|e| async move { e.ok().map(|_| ()) });
    Controller::new(templates, watcher::Config::default())
        .reconcile_all_on(futures::stream::select(policies, flags))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(template = %object.name, "reconciled"),
                Err(e) => tracing::warn!(error = %e, "NodeTemplate controller"),
            }
        })
        .await;
}

/// Group tags as a map (used by hibernation to respect its marker).
pub fn hibernated_by(group: &AutoScalingGroup) -> Option<&String> {
    group.tags.get(HIBERNATED_BY_TAG)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use serde_json::json;

    fn template(labels: &[(&str, &str)]) -> NodeTemplate {
        let mut t: NodeTemplate =
            serde_yaml::from_str(include_str!("../../examples/nodetemplate.yaml"))
                .expect("example");
        t.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        );
        t
    }

    fn policy(name: &str, selector: serde_json::Value, percentage: u32) -> OptimizationPolicy {
        serde_json::from_value(json!({
            "apiVersion": "cloudoptim.io/v1alpha1", "kind": "OptimizationPolicy",
            "metadata": {"name": name},
            "spec": {"nodeTemplateSelector": selector, "spot": {"percentage": percentage, "onDemandBase": 3}}
        }))
        .expect("policy")
    }

    #[test]
    fn the_selecting_policy_supplies_the_spot_mix() {
        let t = template(&[("pool", "general")]);
        let policies = [
            policy("a", json!({"matchLabels": {"pool": "general"}}), 80),
            policy("b", json!({"matchLabels": {"pool": "gpu"}}), 10),
        ];
        assert_eq!(
            policy_for(&t, &policies)
                .expect("one policy")
                .map(|g| g.mix),
            Some(PolicyMix {
                spot_percentage: 80,
                on_demand_base: 3
            })
        );
        assert_eq!(
            policy_for(&t, &[]).expect("no policy is not an error"),
            None,
            "no selecting policy: no Spot mix is imposed on the groups"
        );
    }

    #[test]
    fn a_group_status_reports_the_split_written_or_kept() {
        let group = AutoScalingGroup {
            name: "g".into(),
            mixed: Some(MixedInstances {
                on_demand_percentage_above_base: 40,
                ..MixedInstances::default()
            }),
            ..AutoScalingGroup::default()
        };
        assert_eq!(group_status(&group, None).spot_percentage, 60);
        let written = MixedInstances {
            on_demand_percentage_above_base: 10,
            ..MixedInstances::default()
        };
        assert_eq!(group_status(&group, Some(&written)).spot_percentage, 90);
        let plain = AutoScalingGroup::default();
        assert_eq!(group_status(&plain, None).spot_percentage, 0);
    }

    #[test]
    fn two_selecting_policies_are_a_conflict_naming_both() {
        let t = template(&[("pool", "general")]);
        let policies = [
            policy("a", json!({}), 80),
            policy("b", json!({"matchLabels": {"pool": "general"}}), 10),
        ];
        let err = policy_for(&t, &policies).expect_err("conflict");
        assert_eq!(err.reason(), "ConflictingPolicies");
        assert!(err.to_string().contains("a, b"), "{err}");
    }

    #[test]
    fn missing_named_groups_are_listed() {
        let found = [AutoScalingGroup {
            name: "a".into(),
            ..AutoScalingGroup::default()
        }];
        let selector = GroupSelector::Names(vec!["a".into(), "b".into()]);
        assert_eq!(
            missing_groups(&selector, &found).as_deref(),
            Some("Auto Scaling group(s) not found: b")
        );
        let tags = GroupSelector::Tags([("k".to_string(), "v".to_string())].into());
        assert!(missing_groups(&tags, &[]).is_some_and(|m| m.contains("k=v")));
        assert!(missing_groups(&tags, &found).is_none());
    }

    #[test]
    fn expired_and_foreign_flags_are_ignored_and_the_next_expiry_is_known() {
        let flag = |zone: &str, expires: i64| -> SpotRiskFlag {
            let ts = |s: i64| {
                k8s_openapi::jiff::Timestamp::from_second(s)
                    .expect("timestamp")
                    .to_string()
            };
            serde_json::from_value(json!({
                "apiVersion": "cloudoptim.io/v1alpha1", "kind": "SpotRiskFlag", "metadata": {"name": zone},
                "spec": {"region": zone.trim_end_matches(char::is_alphabetic), "zone": zone, "instanceType": "m5.large",
                         "reason": "SpotInterruption", "firstSeen": ts(0), "lastSeen": ts(0), "count": 1, "expiresAt": ts(expires)}
            }))
            .expect("flag")
        };
        let flags = [
            flag("us-east-1a", 1_000),
            flag("us-east-1b", 500),
            flag("us-east-1c", 10),
            flag("eu-west-1a", 900),
        ];
        let (pairs, next) = active_flags(&flags, "us-east-1", 100);
        assert_eq!(pairs.len(), 2);
        assert_eq!(next, Some(500));
    }
}
