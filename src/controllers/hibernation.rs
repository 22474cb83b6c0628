//! The HibernationSchedule controller: compile the timetable (engine) -> the state wanted now
//! (suspend and override first) -> workloads and node groups stepped towards it one write each
//! (engine::hibernation decides each step) -> status, Events, metric -> requeue at the next transition.
//!
//! The reconcile is level-triggered: it does not replay transitions, it makes the targets match the
//! state wanted now. What was saved lives on the objects themselves (workload label + annotation, group
//! tags), so a crash between any two writes, an upgrade, or a lost status is resumed by the next
//! reconcile. Sleep order is workloads then node groups; wake order node groups then workloads.
//! A finalizer restores everything the schedule holds when it is deleted.

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

    fn retry_after(&self) -> Duration {
        match self {
            Error::Schedule(_)
            | Error::NameTooLong(_)
            | Error::BadSelector(..)
            | Error::TargetsOperator(_)
            | Error::TargetsProtected(_) => RESYNC,
            _ => Duration::from_secs(10),
        }
    }
}

/// What the schedule wants now.
#[derive(Debug, Clone, PartialEq)]
pub struct Wanted {
    /// The state reported in status.
    pub state: HibernationState,
    /// Workloads at zero.
    pub workloads_asleep: bool,
    /// Node groups at zero.
    pub nodes_asleep: bool,
    /// The next change (instant, state entered), if any.
    pub next: Option<(DateTime<Utc>, HibernationState)>,
}

fn state_of(state: State) -> HibernationState {
    match state {
        State::Awake => HibernationState::Awake,
        State::Hibernating => HibernationState::Hibernating,
        State::WakingUp => HibernationState::WakingUp,
    }
}

/// The state wanted at `now`: `suspend` wins, then an unexpired `override`, then the timetable.
pub fn wanted(
    schedule: &HibernationSchedule,
    compiled: &CompiledSchedule,
    now: DateTime<Utc>,
) -> Wanted {
    let spec = &schedule.spec;
    let of = |state: HibernationState, next| Wanted {
        state,
        workloads_asleep: matches!(
            state,
            HibernationState::Hibernating | HibernationState::WakingUp
        ),
        nodes_asleep: state == HibernationState::Hibernating,
        next,
    };
    if spec.suspend {
        return of(HibernationState::Suspended, None);
    }
    if let Some(o) = &spec.override_ {
        let until = DateTime::<Utc>::from_timestamp(o.until.0.as_second(), 0);
        if let Some(until) = until.filter(|u| *u > now) {
            let state = match o.state {
                OverrideState::Awake => HibernationState::Awake,
                OverrideState::Hibernating => HibernationState::Hibernating,
            };
            return of(state, Some((until, state_of(compiled.state_at(until)))));
        }
    }
    let next = compiled
        .next_transition(now)
        .map(|t| (t.instant, state_of(t.state)));
    of(state_of(compiled.state_at(now)), next)
}

/// Compile the spec's timetable.
pub fn compile(schedule: &HibernationSchedule) -> Result<CompiledSchedule, ScheduleError> {
    let spec = &schedule.spec;
    schedule::compile(&ScheduleSpec {
        time_zone: spec.time_zone.clone(),
        weekly_matrix: spec.weekly_matrix.clone(),
        awake: spec.awake.clone(),
        prewarm_minutes: spec.prewarm_minutes,
    })
}

/// Kinds of workload that sleep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Deployment,
    StatefulSet,
    CronJob,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Deployment => "Deployment",
            Kind::StatefulSet => "StatefulSet",
            Kind::CronJob => "CronJob",
        }
    }
}

/// One workload as the decision needs it.
#[derive(Debug, Clone)]
struct Workload {
    kind: Kind,
    namespace: String,
    name: String,
    resource_version: Option<String>,
    replicas: i32,
    saved: Option<i32>,
    excluded: bool,
}

fn workload_of(
    kind: Kind,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    replicas: i32,
    schedule: &str,
    excluded_names: &[String],
) -> Workload {
    let name = meta.name.clone().unwrap_or_default();
    let ours = meta
        .labels
        .as_ref()
        .and_then(|l| l.get(HIBERNATED_BY_LABEL))
        .is_some_and(|v| v == schedule);
    let annotations = meta.annotations.clone().unwrap_or_default();
    let saved = ours.then(|| {
        annotations
            .get(ORIGINAL_REPLICAS)
            .and_then(|v| v.trim().parse::<i32>().ok())
            .filter(|v| *v >= 0)
            // An unreadable saved count: keep the current one rather than guess.
            .unwrap_or(replicas)
    });
    Workload {
        kind,
        namespace: meta.namespace.clone().unwrap_or_default(),
        excluded: excluded_names.contains(&name)
            || annotations
                .get(HIBERNATE_ANNOTATION)
                .is_some_and(|v| v == "false"),
        name,
        resource_version: meta.resource_version.clone(),
        replicas,
        saved,
    }
}

async fn list_workloads(
    client: &kube::Client,
    namespace: Option<&str>,
    params: &ListParams,
    schedule: &str,
    excluded_names: &[String],
) -> Result<Vec<Workload>, Error> {
    fn api<K>(client: &kube::Client, namespace: Option<&str>) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let mut out = Vec::new();
    for d in api::<Deployment>(client, namespace).list(params).await? {
        let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        out.push(workload_of(
            Kind::Deployment,
            &d.metadata,
            replicas,
            schedule,
            excluded_names,
        ));
    }
    for s in api::<StatefulSet>(client, namespace).list(params).await? {
        let replicas = s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        out.push(workload_of(
            Kind::StatefulSet,
            &s.metadata,
            replicas,
            schedule,
            excluded_names,
        ));
    }
    for c in api::<CronJob>(client, namespace).list(params).await? {
        let suspended = c.spec.as_ref().and_then(|s| s.suspend).unwrap_or(false);
        out.push(workload_of(
            Kind::CronJob,
            &c.metadata,
            if suspended { 0 } else { 1 },
            schedule,
            excluded_names,
        ));
    }
    Ok(out)
}

/// One merge patch per step: marker and count change together, guarded by the resourceVersion read.
async fn patch_workload(
    client: &kube::Client,
    workload: &Workload,
    schedule: &str,
    step: WorkloadStep,
) -> Result<(), Error> {
    let (marker, count) = match step {
        WorkloadStep::Nothing => return Ok(()),
        WorkloadStep::Sleep { original } => (
            json!({"labels": {HIBERNATED_BY_LABEL: schedule}, "annotations": {ORIGINAL_REPLICAS: original.to_string()}}),
            Some(0),
        ),
        WorkloadStep::Restore { replicas } => (
            json!({"labels": {HIBERNATED_BY_LABEL: null}, "annotations": {ORIGINAL_REPLICAS: null}}),
            Some(replicas),
        ),
        WorkloadStep::KeepManual { .. } => (
            json!({"labels": {HIBERNATED_BY_LABEL: null}, "annotations": {ORIGINAL_REPLICAS: null}}),
            None,
        ),
    };
    let mut patch = json!({ "metadata": marker });
    patch["metadata"]["resourceVersion"] = json!(workload.resource_version);
    if let Some(count) = count {
        patch["spec"] = match workload.kind {
            Kind::CronJob => json!({"suspend": count == 0}),
            _ => json!({"replicas": count}),
        };
    }
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    let (ns, name) = (workload.namespace.as_str(), workload.name.as_str());
    match workload.kind {
        Kind::Deployment => {
            Api::<Deployment>::namespaced(client.clone(), ns)
                .patch(name, &params, &Patch::Merge(&patch))
                .await?;
        }
        Kind::StatefulSet => {
            Api::<StatefulSet>::namespaced(client.clone(), ns)
                .patch(name, &params, &Patch::Merge(&patch))
                .await?;
        }
        Kind::CronJob => {
            Api::<CronJob>::namespaced(client.clone(), ns)
                .patch(name, &params, &Patch::Merge(&patch))
                .await?;
        }
    }
    Ok(())
}

/// The namespaces the schedule targets now.
async fn target_namespaces(
    client: &kube::Client,
    schedule: &HibernationSchedule,
    own_namespace: Option<&str>,
    protected: &[String],
) -> Result<BTreeSet<String>, Error> {
    let targets = &schedule.spec.targets;
    let mut namespaces: BTreeSet<String> = targets.namespaces.iter().cloned().collect();
    if let Some(selector) = &targets.namespace_selector {
        let selector = Selector::try_from(selector.clone())
            .map_err(|e| Error::BadSelector("namespaceSelector", e.to_string()))?;
        let listed = Api::<Namespace>::all(client.clone())
            .list(&ListParams::default().labels_from(&selector))
            .await?;
        namespaces.extend(listed.items.iter().map(|n| n.name_any()));
    }
    for excluded in &targets.exclude.namespaces {
        namespaces.remove(excluded);
    }
    // The operator's own namespace never sleeps, whatever selects it.
    if let Some(own) = own_namespace {
        namespaces.remove(own);
    }
    // Nor do the protected ones (kube-system by default).
    for p in protected {
        namespaces.remove(p);
    }
    Ok(namespaces)
}

/// The Auto Scaling groups the operator's replicas run on: its own pod (`--identity`, the pod name)
/// and the pods of the same release in its namespace, their Nodes' instances, and those instances'
/// `aws:autoscaling:groupName` tag. Empty when any of it cannot be found (not running in a pod).
async fn operator_groups<C: Cloud>(ctx: &Context<C>) -> BTreeSet<String> {
    let (Some(namespace), Some(pod)) = (&ctx.config.own_namespace, &ctx.config.own_pod) else {
        return BTreeSet::new();
    };
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), namespace);
    let Ok(Some(me)) = pods.get_opt(pod).await else {
        return BTreeSet::new();
    };
    let mut node_names: BTreeSet<String> = me
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .into_iter()
        .collect();
    if let Some(instance) = me.labels().get("app.kubernetes.io/instance")
        && let Ok(peers) = pods
            .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={instance}")))
            .await
    {
        node_names.extend(
            peers
                .items
                .iter()
                .filter_map(|p| p.spec.as_ref()?.node_name.clone()),
        );
    }
    let nodes = Api::<Node>::all(ctx.client.clone());
    let mut instances = BTreeSet::new();
    for name in &node_names {
        if let Ok(Some(node)) = nodes.get_opt(name).await
            && let Some(id) = node
                .spec
                .as_ref()
                .and_then(|s| s.provider_id.as_deref())
                .and_then(super::policy::instance_id)
        {
            instances.insert(id.to_string());
        }
    }
    if instances.is_empty() {
        return BTreeSet::new();
    }
    match ctx
        .cloud
        .instances(crate::cloud::CLUSTER_TAG, &ctx.config.cluster_name)
        .await
    {
        Ok(list) => list
            .into_iter()
            .filter(|i| instances.contains(&i.id))
            .filter_map(|i| i.tags.get("aws:autoscaling:groupName").cloned())
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "describing the instances CloudOptim runs on");
            BTreeSet::new()
        }
    }
}

/// Every group the schedule targets now (`true`) or still holds from before (`false`), by name.
async fn groups_in_scope<C: Cloud>(
    ctx: &Context<C>,
    schedule: &HibernationSchedule,
) -> Result<BTreeMap<String, (AutoScalingGroup, bool)>, Error> {
    let mut groups = BTreeMap::new();
    let held = ctx
        .cloud
        .groups(&GroupSelector::Tags(
            [(HIBERNATING_FOR_TAG.to_string(), schedule.name_any())].into(),
        ))
        .await?;
    for group in held {
        groups.insert(group.name.clone(), (group, false));
    }
    if let Some(selector) = &schedule.spec.targets.node_template_selector {
        let selector = Selector::try_from(selector.clone())
            .map_err(|e| Error::BadSelector("nodeTemplateSelector", e.to_string()))?;
        let templates = Api::<NodeTemplate>::all(ctx.client.clone())
            .list(&ListParams::default())
            .await?;
        for template in templates
            .items
            .iter()
            .filter(|t| selector.matches(&labels_of(&t.metadata)))
        {
            let selector = group_selector(template);
            if matches!(&selector, GroupSelector::Names(n) if n.is_empty()) {
                continue;
            }
            for group in ctx.cloud.groups(&selector).await? {
                groups.insert(group.name.clone(), (group, true));
            }
        }
    }
    Ok(groups)
}

fn view_of(group: &AutoScalingGroup, targeted: bool) -> GroupView {
    GroupView {
        sizes: Sizes {
            min: group.min,
            max: group.max,
            desired: group.desired,
        },
        marks: GroupMarks {
            saving_for: group.tags.get(HIBERNATING_FOR_TAG).cloned(),
            saved: group
                .tags
                .get(ORIGINAL_SIZE_TAG)
                .and_then(|v| Sizes::from_tag(v)),
            held_by: group.tags.get(HIBERNATED_BY_TAG).cloned(),
        },
        targeted,
    }
}

fn unmark_tags() -> BTreeMap<String, Option<String>> {
    [HIBERNATING_FOR_TAG, ORIGINAL_SIZE_TAG, HIBERNATED_BY_TAG]
        .into_iter()
        .map(|k| (k.to_string(), None))
        .collect()
}

async fn apply_group_step<C: Cloud>(
    ctx: &Context<C>,
    name: &str,
    schedule: &str,
    step: &GroupStep,
) -> Result<(), Error> {
    let zero = |name: &str| GroupUpdate {
        name: name.to_string(),
        min: Some(0),
        max: Some(0),
        desired: Some(0),
        ..GroupUpdate::default()
    };
    let held = [(HIBERNATED_BY_TAG.to_string(), Some(schedule.to_string()))].into();
    match step {
        GroupStep::Nothing | GroupStep::HeldByOther(_) => {}
        GroupStep::Sleep { sizes } => {
            let saving = [
                (HIBERNATING_FOR_TAG.to_string(), Some(schedule.to_string())),
                (ORIGINAL_SIZE_TAG.to_string(), Some(sizes.to_tag())),
            ]
            .into();
            ctx.cloud.tag_group(name, &saving).await?;
            ctx.cloud.update_group(&zero(name)).await?;
            ctx.cloud.tag_group(name, &held).await?;
        }
        GroupStep::FinishSleep => {
            ctx.cloud.update_group(&zero(name)).await?;
            ctx.cloud.tag_group(name, &held).await?;
        }
        GroupStep::Restore { sizes } => {
            ctx.cloud
                .update_group(&GroupUpdate {
                    name: name.to_string(),
                    min: Some(sizes.min),
                    max: Some(sizes.max),
                    desired: Some(sizes.desired),
                    ..GroupUpdate::default()
                })
                .await?;
            ctx.cloud.tag_group(name, &unmark_tags()).await?;
        }
        GroupStep::Unmark { .. } => ctx.cloud.tag_group(name, &unmark_tags()).await?,
    }
    Ok(())
}

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

async fn step_workloads<C: Cloud>(
    ctx: &Context<C>,
    schedule: &HibernationSchedule,
    asleep: bool,
    done: &mut Done,
) -> Result<(), Error> {
    let name = schedule.name_any();
    let excluded_names = &schedule.spec.targets.exclude.names;
    let namespaces = if asleep {
        target_namespaces(
            &ctx.client,
            schedule,
            ctx.config.own_namespace.as_deref(),
            &ctx.config.protected_namespaces,
        )
        .await?
    } else {
        BTreeSet::new()
    };
    // Everything this schedule holds, wherever it is, plus everything in the targeted namespaces.
    let held = ListParams::default().labels(&format!("{HIBERNATED_BY_LABEL}={name}"));
    let mut workloads: BTreeMap<(Kind, String, String), Workload> = BTreeMap::new();
    for w in list_workloads(&ctx.client, None, &held, &name, excluded_names).await? {
        workloads.insert((w.kind, w.namespace.clone(), w.name.clone()), w);
    }
    for ns in &namespaces {
        for w in list_workloads(
            &ctx.client,
            Some(ns),
            &ListParams::default(),
            &name,
            excluded_names,
        )
        .await?
        {
            workloads.insert((w.kind, w.namespace.clone(), w.name.clone()), w);
        }
    }
    for w in workloads.values() {
        let view = WorkloadView {
            replicas: w.replicas,
            saved: w.saved,
            targeted: namespaces.contains(&w.namespace) && !w.excluded,
        };
        let step = workload_step(asleep, view);
        let label = format!("{}/{}/{}", w.kind.as_str(), w.namespace, w.name);
        if !ctx.config.dry_run {
            patch_workload(&ctx.client, w, &name, step).await?;
        }
        let saved = match step {
            WorkloadStep::Sleep { original } => {
                done.slept_workloads.push(label);
                Some(original)
            }
            WorkloadStep::Restore { .. } => {
                done.woke_workloads.push(label);
                None
            }
            WorkloadStep::KeepManual { replicas, saved } => {
                let note = format!(
                    "{label} was scaled to {replicas} while asleep (saved count {saved}); keeping the count it was given"
                );
                ctx.event(&schedule.object_ref(&()), false, "ManualChangeKept", note)
                    .await;
                done.kept_manual.push(label);
                None
            }
            WorkloadStep::Nothing => w.saved,
        };
        if let Some(replicas) = saved {
            done.saved_workloads.push(SavedWorkload {
                kind: w.kind.as_str().to_string(),
                namespace: w.namespace.clone(),
                name: w.name.clone(),
                replicas,
            });
        }
    }
    Ok(())
}

async fn step_groups<C: Cloud>(
    ctx: &Context<C>,
    schedule: &HibernationSchedule,
    asleep: bool,
    done: &mut Done,
) -> Result<(), Error> {
    let name = schedule.name_any();
    let in_scope = groups_in_scope(ctx, schedule).await?;
    let own = if in_scope.values().any(|(_, targeted)| *targeted) {
        operator_groups(ctx).await
    } else {
        BTreeSet::new()
    };
    for (group, targeted) in in_scope.values() {
        // The groups CloudOptim's own pods run on never sleep: it would not wake anything up again.
        let targeted = if *targeted && own.contains(&group.name) {
            done.hosting_operator.push(group.name.clone());
            &false
        } else {
            targeted
        };
        let view = view_of(group, *targeted);
        let step = group_step(&name, asleep, &view);
        if !ctx.config.dry_run {
            apply_group_step(ctx, &group.name, &name, &step).await?;
        }
        let saved = match &step {
            GroupStep::Sleep { sizes } => {
                done.slept_groups.push(group.name.clone());
                Some(*sizes)
            }
            GroupStep::FinishSleep => {
                done.slept_groups.push(group.name.clone());
                view.marks.saved
            }
            GroupStep::Restore { .. } => {
                done.woke_groups.push(group.name.clone());
                None
            }
            GroupStep::Unmark { changed } => {
                if *changed {
                    let note = format!(
                        "Auto Scaling group {} was resized to {}/{}/{} (min/max/desired) while asleep; keeping the sizes it was given",
                        group.name, group.min, group.max, group.desired
                    );
                    ctx.event(&schedule.object_ref(&()), false, "ManualChangeKept", note)
                        .await;
                }
                None
            }
            GroupStep::HeldByOther(other) => {
                done.held_by_other
                    .push(format!("{} (held by {other})", group.name));
                None
            }
            GroupStep::Nothing => view.marks.saved.filter(|_| view.marks.held_by.is_some()),
        };
        if let Some(sizes) = saved {
            done.saved_groups.push(SavedGroup {
                name: group.name.clone(),
                min: sizes.min,
                max: sizes.max,
                desired: sizes.desired,
            });
        }
    }
    Ok(())
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

fn metric_value(state: HibernationState) -> i64 {
    match state {
        HibernationState::Awake => 0,
        HibernationState::Hibernating => 1,
        HibernationState::WakingUp => 2,
        HibernationState::Suspended => 3,
    }
}

fn next_transition(
    compiled: &CompiledSchedule,
    next: Option<(DateTime<Utc>, HibernationState)>,
) -> Option<NextTransition> {
    let (at, state) = next?;
    Some(NextTransition {
        utc: at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        local: at
            .with_timezone(&compiled.time_zone())
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        state,
    })
}

/// How long until the next thing to do: the next transition (just after it), at most `RESYNC`.
fn requeue_after(next: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Duration {
    next.and_then(|at| (at - now).to_std().ok())
        .map_or(RESYNC, |d| (d + Duration::from_millis(200)).min(RESYNC))
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
    let now = Utc::now();
    let outcome = async {
        if name.len() > 63 {
            return Err(Error::NameTooLong(name.clone()));
        }
        if let Some(own) = ctx.config.own_namespace.as_ref()
            && schedule.spec.targets.namespaces.contains(own)
        {
            return Err(Error::TargetsOperator(own.clone()));
        }
        if let Some(p) = ctx
            .config
            .protected_namespaces
            .iter()
            .find(|p| schedule.spec.targets.namespaces.contains(p))
        {
            return Err(Error::TargetsProtected(p.clone()));
        }
        let compiled = compile(schedule)?;
        let wanted = wanted(schedule, &compiled, now);
        let done = converge(ctx, schedule, &wanted).await?;
        Ok((compiled, wanted, done))
    }
    .await;
    match outcome {
        Ok((compiled, wanted, done)) => {
            ctx.metrics
                .hibernation_state
                .with_label_values(&[name.as_str()])
                .set(metric_value(wanted.state));
            let reference = schedule.object_ref(&());
            let dry = if ctx.config.dry_run { "(dry run) " } else { "" };
            if !done.slept_workloads.is_empty() || !done.slept_groups.is_empty() {
                let note = format!(
                    "{dry}{:?}: scaled to 0 {} workloads [{}] and {} node groups [{}]",
                    wanted.state,
                    done.slept_workloads.len(),
                    done.slept_workloads.join(", "),
                    done.slept_groups.len(),
                    done.slept_groups.join(", ")
                );
                ctx.event(&reference, false, "Hibernated", note).await;
            }
            if !done.woke_workloads.is_empty() || !done.woke_groups.is_empty() {
                let note = format!(
                    "{dry}{:?}: restored {} node groups [{}] and {} workloads [{}]",
                    wanted.state,
                    done.woke_groups.len(),
                    done.woke_groups.join(", "),
                    done.woke_workloads.len(),
                    done.woke_workloads.join(", ")
                );
                ctx.event(&reference, false, "Woke", note).await;
            }
            let mut message = match &wanted.next {
                Some((at, state)) => format!("{:?} until {at} ({state:?} next)", wanted.state),
                None => format!("{:?}, no transition ahead", wanted.state),
            };
            if !done.hosting_operator.is_empty() {
                message.push_str(&format!(
                    "; Auto Scaling group {} runs CloudOptim itself and never sleeps",
                    done.hosting_operator.join(", ")
                ));
            }
            if !done.held_by_other.is_empty() {
                message.push_str(&format!(
                    "; left alone, another schedule holds them: {}",
                    done.held_by_other.join(", ")
                ));
            }
            if let Some(own) = &ctx.config.own_namespace
                && schedule.spec.targets.namespace_selector.is_some()
            {
                message.push_str(&format!(
                    "; namespace {own} (CloudOptim itself) never sleeps"
                ));
            }
            if ctx.config.dry_run {
                message.push_str("; dry run: nothing changed");
            }
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
            tracing::info!(schedule = %name, state = ?wanted.state, slept = done.slept_workloads.len() + done.slept_groups.len(), woke = done.woke_workloads.len() + done.woke_groups.len(), "hibernation reconciled");
            Ok(Action::requeue(requeue_after(
                wanted.next.map(|(at, _)| at),
                Utc::now(),
            )))
        }
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
            Ok(Action::requeue(error.retry_after()))
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(spec: serde_json::Value) -> HibernationSchedule {
        serde_json::from_value(json!({
            "apiVersion": "cloudoptim.io/v1alpha1",
            "kind": "HibernationSchedule",
            "metadata": {"name": "nights"},
            "spec": spec,
        }))
        .expect("valid schedule")
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("rfc3339")
            .with_timezone(&Utc)
    }

    #[test]
    fn the_timetable_decides_unless_suspended_or_overridden() {
        // Awake Mon-Fri 08:00-18:00 Berlin, pre-warm 30 min. Monday 2026-11-23 is in CET (+01:00).
        let base = json!({"timeZone": "Europe/Berlin", "awake": ["Mon-Fri 08:00-18:00"], "prewarmMinutes": 30});
        let s = schedule(base.clone());
        let c = compile(&s).expect("compiles");
        let night = wanted(&s, &c, at("2026-11-23T05:00:00Z"));
        assert_eq!(night.state, HibernationState::Hibernating);
        assert!(night.workloads_asleep && night.nodes_asleep);
        assert_eq!(
            night.next,
            Some((at("2026-11-23T06:30:00Z"), HibernationState::WakingUp))
        );
        let prewarm = wanted(&s, &c, at("2026-11-23T06:45:00Z"));
        assert_eq!(prewarm.state, HibernationState::WakingUp);
        assert!(prewarm.workloads_asleep && !prewarm.nodes_asleep);
        let day = wanted(&s, &c, at("2026-11-23T10:00:00Z"));
        assert!(!day.workloads_asleep && !day.nodes_asleep);

        let mut suspended = base.clone();
        suspended["suspend"] = json!(true);
        let s = schedule(suspended);
        let w = wanted(&s, &c, at("2026-11-23T05:00:00Z"));
        assert_eq!(w.state, HibernationState::Suspended);
        assert!(!w.workloads_asleep && !w.nodes_asleep && w.next.is_none());

        let mut overridden = base.clone();
        overridden["override"] = json!({"state": "Awake", "until": "2026-11-23T06:00:00Z"});
        let s = schedule(overridden);
        let w = wanted(&s, &c, at("2026-11-23T05:00:00Z"));
        assert_eq!(w.state, HibernationState::Awake);
        assert_eq!(
            w.next,
            Some((at("2026-11-23T06:00:00Z"), HibernationState::Hibernating))
        );
        // An expired override is ignored.
        let w = wanted(&s, &c, at("2026-11-23T06:00:01Z"));
        assert_eq!(w.state, HibernationState::Hibernating);
    }

    #[test]
    fn requeue_is_just_after_the_next_transition_and_never_longer_than_the_resync() {
        let now = at("2026-11-23T05:00:00Z");
        assert_eq!(
            requeue_after(Some(at("2026-11-23T05:00:10Z")), now),
            Duration::from_millis(10_200)
        );
        assert_eq!(requeue_after(Some(at("2026-11-24T05:00:00Z")), now), RESYNC);
        assert_eq!(requeue_after(None, now), RESYNC);
    }
}
