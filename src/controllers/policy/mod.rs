//! The OptimizationPolicy controller: every `consolidation.interval`, read (nodes, pods and PDBs from
//! reflectors that keep only what the engine reads; the selected NodeTemplates' Auto Scaling groups)
//! -> validate (durations, budgets: an unparsable budget fails closed) -> plan (engine: consolidation
//! planner, budgets, savings, zombies) -> act (resume drains a crash left behind, then drain one
//! budget-sized batch and TerminateInstanceInAutoScalingGroup with ShouldDecrementDesiredCapacity;
//! zombies in Delete mode) -> status, Events, metrics. `dryRun` plans and reports, and acts on nothing.
//!
//! The policy's Spot percentage and on-demand base are applied by the NodeTemplate controller (it owns
//! the groups' MixedInstancesPolicy); this controller owns removing nodes.

mod act;
mod cache;
mod consolidate;
mod plan;
mod read;
mod replace;
mod rightsizing;
mod settings;
mod status;
#[cfg(test)]
mod tests;
mod zombie;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, PersistentVolume, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, ListParams};
use kube::core::{Selector, SelectorExt};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use tokio::sync::Mutex;

use super::node_template::group_selector;
use super::{Context, apply_status, condition, labels_of, retry_failed};
use crate::api::policy::{
    ConsolidationMode, ConsolidationStatus, CostStatus, DisruptionReason as ApiReason, NodeCounts,
    OptimizationPolicyStatus, PlannedReplacement, RealizedSavings, ZombieMode, ZombieStatus,
};
use crate::api::{NodeTemplate, OptimizationPolicy};
use crate::cloud::{CLUSTER_TAG, Cloud, CloudError, GroupSelector};
use crate::drain::{DISRUPTED_TAINT, DrainError, DrainOptions, Drainer, Marker};
use crate::engine::budgets::{self, Budget, BudgetSpec, DisruptionReason};
use crate::engine::consolidation::{self, Mode, Options};
use crate::engine::savings::{self, HOURS_PER_MONTH, SpotTarget};
use crate::engine::zombies::{self, InstanceFacts, ZombieKind};
use crate::k8s;
use crate::metrics::Series;

pub use crate::k8s::instance_id;
pub(crate) use cache::reflect;
pub use cache::{PodCache, Stores, node_store, strip_node, strip_pdb, strip_pod};
use cache::{release_freed_memory, watch_pods};
use consolidate::pass;
pub use settings::{Settings, batch_limit, parse_duration, replace_limit, settings};
use zombie::handle_zombies;

pub const CONTROLLER: &str = "policy";

/// Why a reconcile failed. Spec problems wait for a change; the rest are retried.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field cannot be used.
    #[error("spec.{field}: {message}")]
    Invalid {
        /// Field path under spec.
        field: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// A budget cannot be parsed: no voluntary disruption until it is fixed.
    #[error(
        "spec.disruption.budgets[{index}].{message}; no node is disrupted until the budget is fixed"
    )]
    Budget {
        /// Index of the budget.
        index: usize,
        /// What is wrong.
        message: String,
    },
    /// A selected NodeTemplate is also selected by another policy.
    #[error(
        "NodeTemplate {template} is also selected by OptimizationPolicy {other}; neither acts on it until only one selects it"
    )]
    Conflict {
        /// The template.
        template: String,
        /// The other policy.
        other: String,
    },
    /// Another, older policy already right-sizes the cluster's workloads.
    #[error(
        "spec.rightsizing.mode: OptimizationPolicy {other} (older) already right-sizes this cluster's workloads, and right-sizing is cluster-wide; set rightsizing.mode: Off here or there. This policy does nothing until then"
    )]
    RightsizingConflict {
        /// The policy that owns right-sizing.
        other: String,
    },
    /// The cluster's objects could not be turned into a snapshot.
    #[error("reading the cluster: {0}")]
    Snapshot(String),
    /// The planner refused the snapshot.
    #[error("planning: {0}")]
    Plan(String),
    /// An AWS call failed.
    #[error(transparent)]
    Cloud(#[from] CloudError),
    /// A Kubernetes API call failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A drain could not be carried out.
    #[error(transparent)]
    Drain(#[from] DrainError),
    /// Right-sizing could not read Prometheus (the message names the URL).
    #[error("right-sizing: {0}; nothing was changed")]
    Prometheus(#[from] crate::prometheus::PromError),
}

impl Error {
    /// The `Ready=False` reason, also the metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Invalid { .. } => "InvalidPolicy",
            Error::Budget { .. } => "InvalidBudget",
            Error::Conflict { .. } | Error::RightsizingConflict { .. } => "ConflictingPolicies",
            Error::Snapshot(_) => "InvalidClusterState",
            Error::Plan(_) => "PlanFailed",
            Error::Cloud(CloudError::AccessDenied { .. }) => "AccessDenied",
            Error::Cloud(CloudError::Throttled { .. }) => "AwsThrottled",
            Error::Cloud(_) => "AwsError",
            Error::Kube(_) => "KubernetesError",
            Error::Drain(_) => "DrainError",
            Error::Prometheus(_) => "PrometheusUnavailable",
        }
    }

    /// What to do after a failure: a spec this policy alone makes invalid waits for a change to it
    /// (the watch wakes the reconcile); a conflict with another policy is looked at again in 5 minutes;
    /// the rest is retried in 15 s.
    fn action(&self) -> Action {
        match self {
            Error::Invalid { .. } | Error::Budget { .. } => Action::await_change(),
            Error::Conflict { .. } | Error::RightsizingConflict { .. } => {
                Action::requeue(Duration::from_secs(300))
            }
            _ => Action::requeue(Duration::from_secs(15)),
        }
    }
}

/// What the policy controller shares between reconciles.
pub struct PolicyContext<C: Cloud> {
    /// The common context.
    pub base: Arc<Context<C>>,
    /// Reflector stores.
    pub stores: Stores,
    /// Drains nodes (client without built-in 429 retry).
    pub drainer: Drainer,
    /// Since when each node has been a removal candidate (for `consolidateAfter`).
    candidates: Mutex<BTreeMap<String, Instant>>,
    /// The controller's own store of policies (which ones still exist, for their metric series).
    policies: Option<Store<OptimizationPolicy>>,
}

async fn write_status(
    ctx: &Context<impl Cloud>,
    name: &str,
    status: &OptimizationPolicyStatus,
) -> Result<(), Error> {
    Ok(apply_status::<OptimizationPolicy>(&ctx.client, name, status).await?)
}

/// Reconcile one OptimizationPolicy.
pub async fn reconcile<C: Cloud>(
    policy: Arc<OptimizationPolicy>,
    pctx: Arc<PolicyContext<C>>,
) -> Result<Action, Error> {
    let ctx = &pctx.base;
    let _timer = ctx.metrics.reconcile_timer(CONTROLLER);
    if let Some(store) = &pctx.policies {
        // Series of deleted policies (and their nodes) go with them.
        ctx.metrics
            .retain_owners(|p| store.get(&ObjectRef::new(p)).is_some());
    }
    let name = policy.name_any();
    let generation = policy.metadata.generation;
    let previous = policy.status.clone().unwrap_or_default();
    match pass(&policy, &pctx).await {
        Ok(outcome) => {
            let mut status = outcome.status;
            status.conditions = vec![condition(
                &previous.conditions,
                "Ready",
                true,
                "Planned",
                outcome.message.clone(),
                generation,
            )];
            write_status(ctx, &name, &status).await?;
            let (nodes, pods, took) = outcome.planned;
            release_freed_memory();
            tracing::info!(policy = %name, nodes, pods, plan_ms = took.as_secs_f64() * 1000.0, message = %outcome.message, "policy reconciled");
            Ok(Action::requeue(outcome.requeue))
        }
        Err(error) => {
            let ready = ctx
                .not_ready(
                    CONTROLLER,
                    &policy.object_ref(&()),
                    &previous.conditions,
                    generation,
                    error.reason(),
                    error.to_string(),
                )
                .await;
            let status = OptimizationPolicyStatus {
                observed_generation: generation,
                conditions: vec![ready],
                ..previous.clone()
            };
            write_status(ctx, &name, &status).await?;
            tracing::warn!(policy = %name, error = %error, "OptimizationPolicy not ready");
            Ok(error.action())
        }
    }
}

/// Retry after a failure the reconcile could not record.
pub fn error_policy<C: Cloud>(
    policy: Arc<OptimizationPolicy>,
    error: &Error,
    pctx: Arc<PolicyContext<C>>,
) -> Action {
    retry_failed(
        &pctx.base.metrics,
        CONTROLLER,
        error.reason(),
        &policy.name_any(),
        error,
        Duration::from_secs(15),
    )
}

/// A hash of what others change on a policy (not its status): generation, labels, annotations and
/// deletion.
fn changed_by_others(policy: &OptimizationPolicy) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let meta = policy.meta();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    meta.generation.hash(&mut hasher);
    meta.labels.hash(&mut hasher);
    meta.annotations.hash(&mut hasher);
    meta.deletion_timestamp
        .as_ref()
        .map(|t| t.0)
        .hash(&mut hasher);
    Some(hasher.finish())
}

/// Run the controller until `shutdown` resolves; `nodes` is the shared store of [`node_store`].
pub async fn run<C: Cloud>(
    ctx: Arc<Context<C>>,
    drainer: Drainer,
    nodes: Store<Node>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let (pods, mut pods_ready) = watch_pods(Api::<Pod>::all(client.clone()));
    let stores = Stores {
        nodes,
        pods,
        pdbs: reflect(Api::<PodDisruptionBudget>::all(client.clone()), strip_pdb),
    };
    let pods_listed = pods_ready.wait_for(|r| *r).await.is_ok();
    for (what, ready) in [
        ("nodes", stores.nodes.wait_until_ready().await.is_ok()),
        ("pods", pods_listed),
        ("pdbs", stores.pdbs.wait_until_ready().await.is_ok()),
    ] {
        if !ready {
            tracing::warn!(what, "reflector stopped before its first list");
        }
    }
    // Only what a person or another controller changes wakes a policy: its spec (generation), labels,
    // annotations or deletion. Its own status write does not, or every interval would run two full
    // passes (each reading AWS) a moment apart; the requeue drives the next pass.
    let (reader, writer) = reflector::store();
    let policies = watcher::watcher(
        Api::<OptimizationPolicy>::all(client),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(writer)
    .applied_objects()
    .predicate_filter(changed_by_others, Default::default());
    let controller = Controller::for_stream(policies, reader);
    let pctx = Arc::new(PolicyContext {
        base: ctx,
        stores,
        drainer,
        candidates: Mutex::new(BTreeMap::new()),
        policies: Some(controller.store()),
    });
    controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, pctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(policy = %object.name, "reconciled"),
                Err(e) => tracing::warn!(error = %e, "OptimizationPolicy controller"),
            }
        })
        .await;
}
