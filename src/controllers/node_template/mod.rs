//! The NodeTemplate controller: resolve the bound Auto Scaling groups -> rank the allowed instance types
//! (engine) with active SpotRiskFlags left out -> build each group's MixedInstancesPolicy (top `maxTypes`
//! overrides in rank order, capacity-optimized-prioritized, the on-demand base and Spot percentage of
//! the OptimizationPolicy that selects the template) -> update a group only when it differs -> status.
//!
//! This controller owns the groups' MixedInstancesPolicy and nothing else: sizes belong to hibernation
//! and to consolidation.

mod apply;
mod plan;
#[cfg(test)]
mod tests;

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

    /// What to do after a failure: requirements the template alone makes invalid wait for a change
    /// to it; no matching type, a conflict or a bad selector of a policy (other objects, or the live
    /// catalog, may change) are looked at again at the re-rank interval; a missing group in a minute;
    /// the rest in 15 s.
    fn action(&self) -> Action {
        match self {
            Error::Requirements(RankError::NoCandidates { .. })
            | Error::ConflictingPolicies(_)
            | Error::BadSelector(..) => Action::requeue(RERANK_INTERVAL),
            Error::Requirements(_) => Action::await_change(),
            Error::GroupsNotFound(_) => Action::requeue(Duration::from_secs(60)),
            _ => Action::requeue(Duration::from_secs(15)),
        }
    }
}

use apply::plan_and_apply;
pub use plan::ranking_inputs;
use plan::*;

/// What one reconcile decided.
struct Outcome {
    candidates: Vec<CandidateStatus>,
    groups: Vec<GroupStatus>,
    updated: Vec<String>,
    requeue: Duration,
    note: String,
}

pub(crate) fn group_selector(template: &NodeTemplate) -> GroupSelector {
    let binding = &template.spec.auto_scaling_groups;
    match (&binding.names, &binding.tag_selector) {
        (Some(names), _) => GroupSelector::Names(names.clone()),
        (None, Some(tags)) => GroupSelector::Tags(tags.clone()),
        (None, None) => GroupSelector::Names(Vec::new()),
    }
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
            Ok(error.action())
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
