//! The HibernationSchedule controller: compile the timetable (engine) -> the state wanted now
//! (suspend and override first) -> workloads and node groups stepped towards it one write each
//! (engine::hibernation decides each step) -> status, Events, metric -> requeue at the next transition.
//!
//! The reconcile is level-triggered: it does not replay transitions, it makes the targets match the
//! state wanted now. What was saved lives on the objects themselves (workload label + annotation, group
//! tags), so a crash between any two writes, an upgrade, or a lost status is resumed by the next
//! reconcile. Sleep order is workloads then node groups; wake order node groups then workloads.
//! A finalizer restores everything the schedule holds when it is deleted.

mod groups;
mod status;
#[cfg(test)]
mod tests;
mod timetable;
mod workloads;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::core::{Selector, SelectorExt};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::node_template::{HIBERNATED_BY_TAG, group_selector};
use super::{Context, FIELD_MANAGER, apply_status, condition, labels_of, retry_failed};
use crate::api::NodeTemplate;
use crate::api::hibernation::{
    HibernationSchedule, HibernationScheduleStatus, HibernationState, NextTransition,
    OverrideState, SavedGroup, SavedWorkload,
};
use crate::cloud::{AutoScalingGroup, Cloud, CloudError, GroupSelector, GroupUpdate};
use crate::engine::hibernation::{
    GroupMarks, GroupStep, GroupView, Sizes, WorkloadStep, WorkloadView, group_step, workload_step,
};
use crate::engine::schedule::{self, CompiledSchedule, ScheduleError, ScheduleSpec, State};

/// Name of this controller in metrics.
pub const CONTROLLER: &str = "hibernation";
/// Annotation that keeps an object awake when set to "false".
pub use crate::names::HIBERNATE_ANNOTATION;
/// Label on a workload held asleep, value = schedule name (selectable: "everything this schedule holds").
pub use crate::names::HIBERNATED_BY as HIBERNATED_BY_LABEL;
/// Group tag: the schedule that saved the group's sizes (first write of a sleep).
pub use crate::names::HIBERNATING_FOR_TAG;
/// Finalizer that restores what the schedule holds before it goes away.
pub use crate::names::HIBERNATION_FINALIZER as FINALIZER;
/// Annotation with the replica count to restore.
pub use crate::names::ORIGINAL_REPLICAS;
/// Group tag: the saved sizes, `min/max/desired`.
pub use crate::names::ORIGINAL_SIZE_TAG;
/// Longest wait between reconciles when no transition is due (drift from people, new workloads).
const RESYNC: Duration = Duration::from_secs(600);

/// Why a reconcile failed. Spec problems wait for a change; the rest are retried.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The timetable is invalid.
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    /// The name cannot be used as the label value that marks held workloads.
    #[error(
        "metadata.name: {0} is longer than 63 characters; it is the value of the {HIBERNATED_BY_LABEL} label on held workloads, so use a shorter name"
    )]
    NameTooLong(String),
    /// A selector cannot be parsed.
    #[error("spec.targets.{0}: {1}")]
    BadSelector(&'static str, String),
    /// An AWS call failed.
    #[error(transparent)]
    Cloud(#[from] CloudError),
    /// A Kubernetes API call failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// Adding or removing the finalizer failed.
    #[error("finalizer: {0}")]
    Finalizer(String),
    /// The schedule names the namespace CloudOptim runs in.
    #[error(
        "spec.targets.namespaces: {0} is the namespace CloudOptim runs in; the operator never hibernates itself (it would not wake anything up again), so remove it"
    )]
    TargetsOperator(String),
    /// The schedule names a protected namespace (`--protected-namespaces`, chart
    /// `workloadGuard.protectedNamespaces`).
    #[error(
        "spec.targets.namespaces: {0} is a protected namespace (kube-system and the chart's workloadGuard.protectedNamespaces) that CloudOptim never hibernates; remove it"
    )]
    TargetsProtected(String),
}

impl Error {
    /// The `Ready=False` reason, also the metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Schedule(e) => e.reason(),
            Error::NameTooLong(_) => "InvalidName",
            Error::BadSelector(..) => "InvalidSelector",
            Error::Cloud(CloudError::AccessDenied { .. }) => "AccessDenied",
            Error::Cloud(CloudError::Throttled { .. }) => "AwsThrottled",
            Error::Cloud(_) => "AwsError",
            Error::Kube(_) => "KubernetesError",
            Error::Finalizer(_) => "FinalizerError",
            Error::TargetsOperator(_) => "TargetsOperator",
            Error::TargetsProtected(_) => "TargetsProtected",
        }
    }

    /// What to do after a failure: a schedule its own spec makes invalid waits for a change to it;
    /// the rest is retried in 10 s.
    fn action(&self) -> Action {
        match self {
            Error::Schedule(_)
            | Error::NameTooLong(_)
            | Error::BadSelector(..)
            | Error::TargetsOperator(_)
            | Error::TargetsProtected(_) => Action::await_change(),
            _ => Action::requeue(Duration::from_secs(10)),
        }
    }
}

use groups::step_groups;
pub use timetable::{Wanted, compile, wanted};
use timetable::{metric_value, next_transition, requeue_after};
use workloads::step_workloads;

/// What one pass did (or, in dry-run, would do).
#[derive(Debug, Default)]
struct Done {
    slept_workloads: Vec<String>,
    woke_workloads: Vec<String>,
    kept_manual: Vec<String>,
    slept_groups: Vec<String>,
    woke_groups: Vec<String>,
    held_by_other: Vec<String>,
    /// Targeted groups left awake because CloudOptim's own pods run on them.
    hosting_operator: Vec<String>,
    saved_workloads: Vec<SavedWorkload>,
    saved_groups: Vec<SavedGroup>,
}

/// Make the targets match `wanted`: sleep workloads before nodes, wake nodes before workloads.
async fn converge<C: Cloud>(
    ctx: &Context<C>,
    schedule: &HibernationSchedule,
    wanted: &Wanted,
) -> Result<Done, Error> {
    let mut done = Done::default();
    if wanted.nodes_asleep {
        step_workloads(ctx, schedule, wanted.workloads_asleep, &mut done).await?;
        step_groups(ctx, schedule, wanted.nodes_asleep, &mut done).await?;
    } else {
        step_groups(ctx, schedule, wanted.nodes_asleep, &mut done).await?;
        step_workloads(ctx, schedule, wanted.workloads_asleep, &mut done).await?;
    }
    Ok(done)
}

async fn write_status(
    ctx: &Context<impl Cloud>,
    name: &str,
    status: &HibernationScheduleStatus,
) -> Result<(), Error> {
    Ok(apply_status::<HibernationSchedule>(&ctx.client, name, status).await?)
}

async fn apply<C: Cloud>(
    schedule: &HibernationSchedule,
    ctx: &Context<C>,
) -> Result<Action, Error> {
    let name = schedule.name_any();
    let generation = schedule.metadata.generation;
    let previous = schedule.status.clone().unwrap_or_default();
    let outcome = async {
        status::validate(schedule, &ctx.config)?;
        let compiled = compile(schedule)?;
        let wanted = wanted(schedule, &compiled, Utc::now());
        let done = converge(ctx, schedule, &wanted).await?;
        Ok::<_, Error>((compiled, wanted, done))
    }
    .await;
    let (compiled, wanted, done) = match outcome {
        Ok(outcome) => outcome,
        Err(error) => {
            let ready = ctx
                .not_ready(
                    CONTROLLER,
                    &schedule.object_ref(&()),
                    &previous.conditions,
                    generation,
                    error.reason(),
                    error.to_string(),
                )
                .await;
            let status = HibernationScheduleStatus {
                observed_generation: generation,
                conditions: vec![ready],
                ..previous.clone()
            };
            write_status(ctx, &name, &status).await?;
            tracing::warn!(schedule = %name, error = %error, "HibernationSchedule not ready");
            return Ok(error.action());
        }
    };
    ctx.metrics
        .hibernation_state
        .with_label_values(&[name.as_str()])
        .set(metric_value(wanted.state));
    status::events(ctx, schedule, &wanted, &done).await;
    let message = status::ready_message(schedule, &ctx.config, &wanted, &done);
    tracing::info!(schedule = %name, state = ?wanted.state, slept = done.slept_workloads.len() + done.slept_groups.len(), woke = done.woke_workloads.len() + done.woke_groups.len(), "hibernation reconciled");
    let status = HibernationScheduleStatus {
        observed_generation: generation,
        state: Some(wanted.state),
        next_transition: next_transition(&compiled, wanted.next),
        saved_workloads: done.saved_workloads,
        saved_groups: done.saved_groups,
        conditions: vec![condition(
            &previous.conditions,
            "Ready",
            true,
            "Scheduled",
            message,
            generation,
        )],
    };
    write_status(ctx, &name, &status).await?;
    Ok(Action::requeue(requeue_after(
        wanted.next.map(|(at, _)| at),
        Utc::now(),
    )))
}

/// Deleting a schedule restores everything it holds (groups first, then workloads).
async fn cleanup<C: Cloud>(
    schedule: &HibernationSchedule,
    ctx: &Context<C>,
) -> Result<Action, Error> {
    let awake = Wanted {
        state: HibernationState::Awake,
        workloads_asleep: false,
        nodes_asleep: false,
        next: None,
    };
    // Only what this schedule marked: targets are ignored, markers are authoritative.
    let mut unscoped = schedule.clone();
    unscoped.spec.targets.node_template_selector = None;
    let done = converge(ctx, &unscoped, &awake).await?;
    ctx.metrics
        .hibernation_state
        .remove_label_values(&[schedule.name_any().as_str()])
        .ok();
    tracing::info!(schedule = %schedule.name_any(), groups = done.woke_groups.len(), workloads = done.woke_workloads.len(), "schedule deleted; restored what it held");
    Ok(Action::await_change())
}

/// Reconcile one HibernationSchedule.
pub async fn reconcile<C: Cloud>(
    schedule: Arc<HibernationSchedule>,
    ctx: Arc<Context<C>>,
) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile_timer(CONTROLLER);
    let api: Api<HibernationSchedule> = Api::all(ctx.client.clone());
    finalizer(&api, FINALIZER, schedule, |event| async {
        match event {
            Finalizer::Apply(schedule) => apply(&schedule, &ctx).await,
            Finalizer::Cleanup(schedule) => cleanup(&schedule, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(e.to_string()))
}

/// Retry after a failure the reconcile could not record.
pub fn error_policy<C: Cloud>(
    schedule: Arc<HibernationSchedule>,
    error: &Error,
    ctx: Arc<Context<C>>,
) -> Action {
    retry_failed(
        &ctx.metrics,
        CONTROLLER,
        error.reason(),
        &schedule.name_any(),
        error,
        Duration::from_secs(10),
    )
}

/// Run the controller until `shutdown` resolves.
pub async fn run<C: Cloud>(
    ctx: Arc<Context<C>>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let schedules: Api<HibernationSchedule> = Api::all(ctx.client.clone());
    Controller::new(schedules, watcher::Config::default())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(schedule = %object.name, "reconciled"),
                Err(e) => tracing::warn!(error = %e, "HibernationSchedule controller"),
            }
        })
        .await;
}
