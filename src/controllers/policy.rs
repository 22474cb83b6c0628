//! The OptimizationPolicy controller: every `consolidation.interval`, read (nodes, pods and PDBs from
//! reflectors that keep only what the engine reads; the selected NodeTemplates' Auto Scaling groups)
//! -> validate (durations, budgets: an unparsable budget fails closed) -> plan (engine: consolidation
//! planner, budgets, savings, zombies) -> act (resume drains a crash left behind, then drain one
//! budget-sized batch and TerminateInstanceInAutoScalingGroup with ShouldDecrementDesiredCapacity;
//! zombies in Delete mode) -> status, Events, metrics. `dryRun` plans and reports, and acts on nothing.
//!
//! The policy's Spot percentage and on-demand base are applied by the NodeTemplate controller (it owns
//! the groups' MixedInstancesPolicy); this controller owns removing nodes.

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
    OptimizationPolicyStatus, ZombieMode, ZombieStatus,
};
use crate::api::{NodeTemplate, OptimizationPolicy};
use crate::cloud::{CLUSTER_TAG, Cloud, CloudError, GroupSelector};
use crate::drain::{DISRUPTED_TAINT, DrainError, DrainOptions, Drainer, Marker};
use crate::engine::budgets::{self, Budget, BudgetSpec, DisruptionReason};
use crate::engine::consolidation::{self, Mode, Options};
use crate::engine::savings::{self, HOURS_PER_MONTH, SpotTarget};
use crate::engine::zombies::{self, InstanceFacts, ZombieKind};
use crate::metrics::Series;
use crate::translate;

/// Name of this controller in metrics.
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
}

impl Error {
    /// The `Ready=False` reason, also the metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Invalid { .. } => "InvalidPolicy",
            Error::Budget { .. } => "InvalidBudget",
            Error::Conflict { .. } => "ConflictingPolicies",
            Error::Snapshot(_) => "InvalidClusterState",
            Error::Plan(_) => "PlanFailed",
            Error::Cloud(CloudError::AccessDenied { .. }) => "AccessDenied",
            Error::Cloud(CloudError::Throttled { .. }) => "AwsThrottled",
            Error::Cloud(_) => "AwsError",
            Error::Kube(_) => "KubernetesError",
            Error::Drain(_) => "DrainError",
        }
    }

    fn retry_after(&self) -> Duration {
        match self {
            Error::Invalid { .. } | Error::Budget { .. } | Error::Conflict { .. } => {
                Duration::from_secs(300)
            }
            _ => Duration::from_secs(15),
        }
    }
}

/// `90s`, `5m`, `1h30m`, `14d` (the CRD's duration grammar, [`crate::engine::duration`]) as a
/// Duration; the error names the field.
pub fn parse_duration(field: &str, text: &str) -> Result<Duration, Error> {
    crate::engine::duration::parse(text).map_err(|e| Error::Invalid {
        field: field.to_string(),
        message: e.to_string(),
    })
}

/// A policy's settings, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Planner options (the budget is resolved per run).
    pub options: Options,
    /// Parsed budgets.
    pub budgets: Vec<Budget>,
    /// How often to plan.
    pub interval: Duration,
    /// How long a node must be a removal candidate before it is removed.
    pub consolidate_after: Duration,
    /// How long a drain may take.
    pub drain_timeout: Duration,
    /// Zombie grace period.
    pub zombie_grace: Duration,
    /// `nodes.max`.
    pub max_nodes: Option<usize>,
    /// The Spot mix, for the savings estimate.
    pub spot: SpotTarget,
}

/// Check a policy's spec and turn it into settings; errors name the field.
pub fn settings(policy: &OptimizationPolicy) -> Result<Settings, Error> {
    let spec = &policy.spec;
    let mode = match spec.consolidation.mode {
        ConsolidationMode::Off => Mode::Off,
        ConsolidationMode::WhenEmpty => Mode::WhenEmpty,
        ConsolidationMode::WhenUnderutilized => Mode::WhenUnderutilized,
    };
    let mut parsed = Vec::new();
    for (index, budget) in spec.disruption.budgets.iter().enumerate() {
        let reasons = budget
            .reasons
            .iter()
            .map(|r| match r {
                ApiReason::Empty => "Empty",
                ApiReason::Underutilized => "Underutilized",
                // The planner does not replace nodes; a Replaced-only budget limits nothing it does.
                ApiReason::Replaced => "Drifted",
            })
            .map(str::to_string)
            .collect();
        let spec = BudgetSpec {
            nodes: budget.nodes.clone(),
            schedule: budget.schedule.clone(),
            duration: budget.duration.clone(),
            time_zone: Some(budget.time_zone.clone()),
            reasons,
        };
        parsed.push(Budget::try_from(&spec).map_err(|e| Error::Budget {
            index,
            message: e.to_string(),
        })?);
    }
    // Read by the interruption intake; checked here so a bad value is this policy's Ready=False.
    parse_duration(
        "interruptions.drainDeadline",
        &spec.interruptions.drain_deadline,
    )?;
    parse_duration(
        "interruptions.releaseAfter",
        &spec.interruptions.release_after,
    )?;
    parse_duration("spot.restoreToSpotAfter", &spec.spot.restore_to_spot_after)?;
    let (min, max) = (spec.nodes.min, spec.nodes.max);
    if let (Some(min), Some(max)) = (min, max)
        && min > max
    {
        return Err(Error::Invalid {
            field: "nodes".into(),
            message: format!("min {min} is above max {max}"),
        });
    }
    Ok(Settings {
        options: Options {
            mode,
            utilization_threshold: spec.consolidation.utilization_threshold,
            aggressiveness: u8::try_from(spec.consolidation.aggressiveness.min(100)).unwrap_or(100),
            min_nodes: min.map_or(0, |m| m as usize),
            excluded_namespaces: spec.disruption.exclude_namespaces.clone(),
            budget: None,
        },
        budgets: parsed,
        interval: parse_duration("consolidation.interval", &spec.consolidation.interval)?
            .max(Duration::from_secs(1)),
        consolidate_after: parse_duration(
            "consolidation.consolidateAfter",
            &spec.consolidation.consolidate_after,
        )?,
        drain_timeout: parse_duration("disruption.drainTimeout", &spec.disruption.drain_timeout)?,
        zombie_grace: parse_duration("zombies.gracePeriod", &spec.zombies.grace_period)?,
        max_nodes: max.map(|m| m as usize),
        spot: SpotTarget {
            percentage: spec.spot.percentage,
            on_demand_base: spec.spot.on_demand_base as usize,
        },
    })
}

/// Nodes that may be disrupted now for consolidation, from the budgets: the most restrictive active one
/// for the reasons the mode produces; no budget active = the whole scope.
pub fn batch_limit(settings: &Settings, nodes: usize, now: chrono::DateTime<Utc>) -> usize {
    let allowed = |reason| budgets::allowed_disruptions(&settings.budgets, nodes, now, reason);
    let limit = match settings.options.mode {
        Mode::WhenEmpty => allowed(DisruptionReason::Empty),
        _ => match (
            allowed(DisruptionReason::Empty),
            allowed(DisruptionReason::Underutilized),
        ) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        },
    };
    limit.unwrap_or(nodes)
}

/// The EC2 instance id in a providerID such as `aws:///us-east-1a/i-0abc`.
pub fn instance_id(provider_id: &str) -> Option<&str> {
    provider_id
        .rsplit('/')
        .next()
        .filter(|id| id.starts_with("i-"))
}

// ---- reflectors: keep only what the engine and the drain read -------------------------------------

const KEPT_ANNOTATIONS: [&str; 6] = [
    translate::DO_NOT_DISRUPT,
    "karpenter.sh/do-not-disrupt",
    "cluster-autoscaler.kubernetes.io/safe-to-evict",
    translate::MIRROR,
    crate::names::DISRUPTED_AT_ANNOTATION,
    crate::names::DISRUPTED_REASON_ANNOTATION,
];

fn strip_meta(meta: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) {
    meta.managed_fields = None;
    meta.finalizers = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.retain(|k, _| KEPT_ANNOTATIONS.contains(&k.as_str()));
    }
}

/// A Node with only name, labels, kept annotations, providerID, taints, unschedulable and allocatable.
pub fn strip_node(node: &mut Node) {
    strip_meta(&mut node.metadata);
    if let Some(status) = node.status.as_mut() {
        *status = k8s_openapi::api::core::v1::NodeStatus {
            allocatable: status.allocatable.take(),
            capacity: if status.allocatable.is_none() {
                status.capacity.take()
            } else {
                None
            },
            ..Default::default()
        };
    }
}

/// A Pod with only what scheduling and draining read: placement rules, requests, owner, phase.
pub fn strip_pod(pod: &mut Pod) {
    strip_meta(&mut pod.metadata);
    if let Some(spec) = pod.spec.as_mut() {
        let slim = |c: &mut k8s_openapi::api::core::v1::Container| {
            *c = k8s_openapi::api::core::v1::Container {
                name: std::mem::take(&mut c.name),
                resources: c.resources.take().map(|r| {
                    k8s_openapi::api::core::v1::ResourceRequirements {
                        requests: r.requests,
                        ..Default::default()
                    }
                }),
                restart_policy: c.restart_policy.take(),
                ..Default::default()
            };
        };
        spec.containers.iter_mut().for_each(slim);
        if let Some(init) = spec.init_containers.as_mut() {
            init.iter_mut().for_each(slim);
        }
        spec.ephemeral_containers = None;
        if let Some(volumes) = spec.volumes.as_mut() {
            volumes.retain(|v| {
                v.host_path.is_some()
                    || v.persistent_volume_claim.is_some()
                    || v.ephemeral.is_some()
            });
            for v in volumes.iter_mut() {
                *v = k8s_openapi::api::core::v1::Volume {
                    name: std::mem::take(&mut v.name),
                    host_path: v.host_path.take(),
                    persistent_volume_claim: v.persistent_volume_claim.take(),
                    ephemeral: v.ephemeral.take().map(|_| Default::default()),
                    ..Default::default()
                };
            }
        }
    }
    if let Some(status) = pod.status.as_mut() {
        *status = k8s_openapi::api::core::v1::PodStatus {
            phase: status.phase.take(),
            ..Default::default()
        };
    }
}

/// A PDB without managed fields.
pub fn strip_pdb(pdb: &mut PodDisruptionBudget) {
    strip_meta(&mut pdb.metadata);
}

/// The stores the controller plans from.
pub struct Stores {
    /// Nodes.
    pub nodes: Store<Node>,
    /// Pods, already in the engine's form.
    pub pods: Arc<PodCache>,
    /// PodDisruptionBudgets.
    pub pdbs: Store<PodDisruptionBudget>,
}

/// A pod as the planner needs it: its node's name and the engine pod, or why it could not be read.
type PodEntry = (Arc<str>, Result<crate::engine::snapshot::Pod, String>);

/// Every scheduled, unfinished pod of the cluster in the engine's form, kept by a watch. Whole Pod
/// objects are several KiB each even stripped (k8s-openapi's structs are wide); the engine's form is a
/// fraction of that, which is what keeps the operator's memory in proportion at 100,000 pods.
#[derive(Default)]
pub struct PodCache {
    pods: std::sync::RwLock<HashMap<String, PodEntry>>,
}

/// One shared copy of each distinct label map and toleration list: the pods of a ReplicaSet carry the
/// same labels, and almost every pod the same two default tolerations.
#[derive(Default)]
struct Interner {
    labels: std::collections::HashSet<Arc<crate::engine::snapshot::Labels>>,
    tolerations: std::collections::HashSet<Arc<Vec<crate::engine::snapshot::Toleration>>>,
    nodes: std::collections::HashSet<Arc<str>>,
}

impl Interner {
    fn node(&mut self, name: &mut Arc<str>) {
        match self.nodes.get(&**name) {
            Some(shared) => *name = shared.clone(),
            None => {
                self.nodes.insert(name.clone());
            }
        }
    }

    fn intern(&mut self, pod: &mut crate::engine::snapshot::Pod) {
        match self.labels.get(&*pod.labels) {
            Some(shared) => pod.labels = shared.clone(),
            None => {
                self.labels.insert(pod.labels.clone());
            }
        }
        match self.tolerations.get(&*pod.tolerations) {
            Some(shared) => pod.tolerations = shared.clone(),
            None => {
                self.tolerations.insert(pod.tolerations.clone());
            }
        }
    }

    /// Forget maps no pod uses any more (only the interner holds them).
    fn sweep(&mut self) {
        self.labels.retain(|l| Arc::strong_count(l) > 1);
        self.tolerations.retain(|t| Arc::strong_count(t) > 1);
        self.nodes.retain(|n| Arc::strong_count(n) > 1);
    }
}

fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

fn pod_entry(pod: &Pod) -> Option<PodEntry> {
    let node = pod
        .spec
        .as_ref()?
        .node_name
        .clone()
        .filter(|n| !n.is_empty())?;
    match translate::engine_pod(pod) {
        Ok(Some((node, pod))) => Some((node.into(), Ok(pod))),
        Ok(None) => None,
        Err(e) => Some((node.into(), Err(e.to_string()))),
    }
}

fn apply_pod(map: &mut HashMap<String, PodEntry>, interner: &mut Interner, pod: &Pod) {
    match pod_entry(pod) {
        Some(mut entry) => {
            interner.node(&mut entry.0);
            if let Ok(engine_pod) = entry.1.as_mut() {
                interner.intern(engine_pod);
            }
            map.insert(pod_key(pod), entry);
        }
        None => {
            map.remove(&pod_key(pod));
        }
    }
}

/// Watch every pod into a [`PodCache`]; the receiver turns true after the first full list.
fn watch_pods(api: Api<Pod>) -> (Arc<PodCache>, tokio::sync::watch::Receiver<bool>) {
    let cache = Arc::new(PodCache::default());
    let (ready_tx, ready_rx) = tokio::sync::watch::channel(false);
    let writer = cache.clone();
    tokio::spawn(async move {
        let stream =
            watcher::watcher(api, watcher::Config::default().page_size(500)).default_backoff();
        futures::pin_mut!(stream);
        let mut relist: Option<HashMap<String, PodEntry>> = None;
        let mut interner = Interner::default();
        let mut changes = 0usize;
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Init) => relist = Some(HashMap::new()),
                Ok(watcher::Event::InitApply(pod)) => match relist.as_mut() {
                    Some(map) => apply_pod(map, &mut interner, &pod),
                    None => {
                        if let Ok(mut map) = writer.pods.write() {
                            apply_pod(&mut map, &mut interner, &pod);
                        }
                    }
                },
                Ok(watcher::Event::InitDone) => {
                    if let (Some(fresh), Ok(mut map)) = (relist.take(), writer.pods.write()) {
                        *map = fresh;
                    }
                    interner.sweep();
                    let _ = ready_tx.send(true);
                }
                Ok(watcher::Event::Apply(pod)) => {
                    if let Ok(mut map) = writer.pods.write() {
                        apply_pod(&mut map, &mut interner, &pod);
                    }
                }
                Ok(watcher::Event::Delete(pod)) => {
                    if let Ok(mut map) = writer.pods.write() {
                        map.remove(&pod_key(&pod));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "watching pods"),
            }
            changes += 1;
            if changes.is_multiple_of(10_000) {
                interner.sweep();
            }
        }
    });
    (cache, ready_rx)
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

// ---- reconcile -------------------------------------------------------------------------------------

/// What one reconcile found and did.
struct Outcome {
    status: OptimizationPolicyStatus,
    message: String,
    requeue: Duration,
    /// Nodes and pods planned, and how long the planner took (for logs and the scale run).
    planned: (usize, usize, Duration),
}

/// The templates this policy acts on, or a conflict with another policy.
fn selected_templates<'t>(
    policy: &OptimizationPolicy,
    policies: &[OptimizationPolicy],
    templates: &'t [NodeTemplate],
) -> Result<Vec<&'t NodeTemplate>, Error> {
    let selector_of = |p: &OptimizationPolicy| {
        Selector::try_from(p.spec.node_template_selector.clone().unwrap_or_default()).map_err(|e| {
            Error::Invalid {
                field: "nodeTemplateSelector".into(),
                message: e.to_string(),
            }
        })
    };
    let mine = selector_of(policy)?;
    let mut selected = Vec::new();
    for template in templates {
        let labels = labels_of(&template.metadata);
        if !mine.matches(&labels) {
            continue;
        }
        for other in policies
            .iter()
            .filter(|p| p.name_any() != policy.name_any())
        {
            if selector_of(other).is_ok_and(|s| s.matches(&labels)) {
                return Err(Error::Conflict {
                    template: template.name_any(),
                    other: other.name_any(),
                });
            }
        }
        selected.push(template);
    }
    Ok(selected)
}

fn previous_zombies(status: &OptimizationPolicyStatus) -> BTreeMap<(ZombieKind, String), i64> {
    status
        .zombies
        .iter()
        .map(|z| {
            let kind = if z.kind == "Volume" {
                ZombieKind::Volume
            } else {
                ZombieKind::Instance
            };
            ((kind, z.id.clone()), z.since.0.as_second())
        })
        .collect()
}

async fn handle_zombies<C: Cloud>(
    pctx: &PolicyContext<C>,
    policy: &OptimizationPolicy,
    dry_run: bool,
    settings: &Settings,
    all_node_ids: &BTreeSet<String>,
    previous: &OptimizationPolicyStatus,
    prices: &crate::engine::catalog::Catalog,
) -> Result<(Vec<ZombieStatus>, Vec<String>), Error> {
    let ctx = &pctx.base;
    let spec = &policy.spec.zombies;
    if spec.mode == ZombieMode::Off {
        return Ok((Vec::new(), Vec::new()));
    }
    let cluster = &ctx.config.cluster_name;
    let instances = ctx.cloud.instances(CLUSTER_TAG, cluster).await?;
    let region = &ctx.config.region;
    let facts: Vec<InstanceFacts> = instances
        .iter()
        .map(|i| InstanceFacts {
            id: i.id.clone(),
            state: i.state.clone(),
            hourly: prices.on_demand_price(region, &i.instance_type),
        })
        .collect();
    let (volumes, referenced) = if spec.volumes {
        let volumes = ctx
            .cloud
            .available_volumes(CLUSTER_TAG, cluster)
            .await?
            .into_iter()
            .map(|v| v.id)
            .collect();
        // Read before anything is judged: if the references cannot be read, nothing is deleted.
        (volumes, referenced_volumes(&ctx.client).await?)
    } else {
        (Vec::new(), BTreeSet::new())
    };
    let seen = previous_zombies(previous);
    let now = Utc::now().timestamp();
    let grace = zombies::Grace::with_floors(
        i64::try_from(settings.zombie_grace.as_secs()).unwrap_or(i64::MAX),
        ctx.config.zombie_grace_floors,
    );
    let found = zombies::find(
        &facts,
        all_node_ids,
        &volumes,
        &referenced,
        &seen,
        now,
        grace,
    );
    let mut notes = Vec::new();
    let reference = policy.object_ref(&());
    for kind in [ZombieKind::Instance, ZombieKind::Volume] {
        let count = found.iter().filter(|z| z.kind == kind && z.due).count();
        ctx.metrics
            .zombies
            .with_label_values(&[kind.as_str()])
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }
    let mut kept = Vec::new();
    for zombie in &found {
        let kind_grace = match zombie.kind {
            ZombieKind::Instance => grace.instances,
            ZombieKind::Volume => grace.volumes,
        };
        let was_due = seen
            .get(&(zombie.kind, zombie.id.clone()))
            .is_some_and(|since| now - since >= kind_grace);
        if zombie.due && !was_due {
            ctx.event(
                &reference,
                true,
                "ZombieFound",
                format!(
                    "{} {} carries {CLUSTER_TAG}={cluster} and has had no Node for {}s{}",
                    zombie.kind.as_str(),
                    zombie.id,
                    now - zombie.since,
                    if spec.mode == ZombieMode::Delete {
                        if dry_run {
                            "; dry run: not deleted"
                        } else {
                            "; deleting it"
                        }
                    } else {
                        "; zombies.mode is Report: not deleted"
                    }
                ),
            )
            .await;
        }
        let mut gone = false;
        if zombie.due && spec.mode == ZombieMode::Delete && !dry_run {
            let (action, result) = match zombie.kind {
                ZombieKind::Instance => (
                    "zombie_terminate",
                    ctx.cloud
                        .terminate_instances(std::slice::from_ref(&zombie.id))
                        .await,
                ),
                ZombieKind::Volume => (
                    "zombie_delete_volume",
                    snapshot_then_delete(ctx, &zombie.id, spec.snapshot_before_delete, &mut notes)
                        .await,
                ),
            };
            let label = if result.is_ok() { "ok" } else { "error" };
            ctx.metrics
                .consolidation_actions
                .with_label_values(&[action, label])
                .inc();
            match result {
                Ok(()) => {
                    gone = true;
                    notes.push(format!("deleted zombie {}", zombie.id));
                    ctx.event(
                        &reference,
                        false,
                        "ZombieDeleted",
                        format!("{} {} deleted", zombie.kind.as_str(), zombie.id),
                    )
                    .await;
                }
                Err(e) => notes.push(format!("could not delete zombie {}: {e}", zombie.id)),
            }
        }
        if !gone {
            kept.push(ZombieStatus {
                kind: zombie.kind.as_str().to_string(),
                id: zombie.id.clone(),
                since: Time(
                    k8s_openapi::jiff::Timestamp::from_second(zombie.since)
                        .unwrap_or_else(|_| k8s_openapi::jiff::Timestamp::now()),
                ),
                hourly_cost: zombie.hourly,
            });
        }
    }
    Ok((kept, notes))
}

/// EBS volume ids named by a PersistentVolume (in-tree `awsElasticBlockStore` or CSI
/// `volumeHandle`, any phase) or a VolumeSnapshotContent (`source.volumeHandle`; none when the
/// snapshot CRDs are not installed). An error (the list failed) means no volume may be deleted.
async fn referenced_volumes(client: &kube::Client) -> Result<BTreeSet<String>, Error> {
    let mut ids = BTreeSet::new();
    let pvs = Api::<PersistentVolume>::all(client.clone())
        .list(&ListParams::default())
        .await?;
    for pv in &pvs.items {
        let Some(spec) = &pv.spec else { continue };
        let handles = [
            spec.csi.as_ref().map(|c| c.volume_handle.as_str()),
            spec.aws_elastic_block_store
                .as_ref()
                .map(|e| e.volume_id.as_str()),
        ];
        ids.extend(
            handles
                .into_iter()
                .flatten()
                .filter_map(zombies::ebs_volume_id)
                .map(str::to_string),
        );
    }
    let resource = kube::core::ApiResource::from_gvk_with_plural(
        &kube::core::GroupVersionKind::gvk(
            "snapshot.storage.k8s.io",
            "v1",
            "VolumeSnapshotContent",
        ),
        "volumesnapshotcontents",
    );
    match Api::<kube::core::DynamicObject>::all_with(client.clone(), &resource)
        .list(&ListParams::default())
        .await
    {
        Ok(contents) => ids.extend(contents.items.iter().filter_map(|c| {
            c.data["spec"]["source"]["volumeHandle"]
                .as_str()
                .and_then(zombies::ebs_volume_id)
                .map(str::to_string)
        })),
        // The snapshot CRDs are not installed: no snapshot content can name a volume.
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    Ok(ids)
}

/// Delete a zombie volume, after a snapshot of it when `snapshot` (the volume stays if the snapshot
/// is refused).
async fn snapshot_then_delete<C: Cloud>(
    ctx: &Context<C>,
    volume: &str,
    snapshot: bool,
    notes: &mut Vec<String>,
) -> Result<(), CloudError> {
    if snapshot {
        let tags = BTreeMap::from([
            (CLUSTER_TAG.to_string(), ctx.config.cluster_name.clone()),
            (
                crate::names::ZOMBIE_VOLUME_TAG.to_string(),
                volume.to_string(),
            ),
        ]);
        let description = format!("CloudOptim: last copy of zombie volume {volume}");
        let id = ctx
            .cloud
            .create_snapshot(volume, &description, &tags)
            .await?;
        notes.push(format!("snapshot {id} of zombie {volume}"));
    }
    ctx.cloud.delete_volume(volume).await
}

/// A node to remove: its name, instance id, Auto Scaling group and price per hour.
struct Removal {
    node: String,
    instance: String,
    group: String,
    hourly: f64,
}

/// Drain `nodes` in parallel; terminate each drained one through its group (shrinking it), check the
/// group no longer holds it, and delete its Node. Returns (nodes removed, pods moved, $/h saved, notes).
async fn remove_nodes<C: Cloud>(
    pctx: &PolicyContext<C>,
    nodes: &[Removal],
    settings: &Settings,
    reason: &str,
) -> (u32, u32, f64, Vec<String>) {
    let ctx = &pctx.base;
    let names: Vec<String> = nodes.iter().map(|r| r.node.clone()).collect();
    let marker = Marker::consolidation(reason);
    // A drain that does not finish releases the node: consolidation only removes drained nodes.
    let options = DrainOptions::new(settings.drain_timeout, false);
    // One task per node (the batch is already budget-sized): owned data, so the reconcile stays Send.
    let mut tasks = tokio::task::JoinSet::new();
    for name in names {
        let (drainer, marker, options) = (pctx.drainer.clone(), marker.clone(), options.clone());
        tasks.spawn(async move {
            let report = drainer.drain(&name, &marker, &options).await;
            (name, report)
        });
    }
    let mut reports = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(done) => reports.push(done),
            Err(e) => tracing::warn!(error = %e, "drain task failed"),
        }
    }
    let (mut removed, mut moved, mut saved, mut notes) = (0u32, 0u32, 0.0, Vec::new());
    for (node, report) in reports {
        let Some(Removal {
            instance,
            group,
            hourly,
            ..
        }) = nodes.iter().find(|r| r.node == node)
        else {
            continue;
        };
        match report {
            Ok(report) if report.is_drained() => {
                let result = ctx.cloud.terminate_in_group(instance, true).await;
                let label = if result.is_ok() { "ok" } else { "error" };
                ctx.metrics
                    .consolidation_actions
                    .with_label_values(&["terminate", label])
                    .inc();
                match result {
                    Ok(()) => {
                        // Verify: the group no longer counts the instance.
                        let held = ctx
                            .cloud
                            .groups(&GroupSelector::Names(vec![group.clone()]))
                            .await
                            .map(|gs| gs.iter().any(|g| g.instances.contains(instance)));
                        let verified = match held {
                            Ok(false) => "ok",
                            Ok(true) => {
                                notes.push(format!(
                                    "{node}: {instance} still listed in {group} after termination"
                                ));
                                "pending"
                            }
                            Err(_) => "error",
                        };
                        ctx.metrics
                            .consolidation_actions
                            .with_label_values(&["verify", verified])
                            .inc();
                        removed += 1;
                        moved += u32::try_from(report.evicted.len()).unwrap_or(u32::MAX);
                        saved += hourly;
                        // The instance is going; its Node would linger NotReady until the cloud
                        // node controller notices.
                        let deleted = Api::<Node>::all(ctx.client.clone())
                            .delete(&node, &DeleteParams::default())
                            .await;
                        if let Err(e) = deleted {
                            tracing::warn!(node, error = %e, "could not delete the Node of a terminated instance");
                        }
                    }
                    Err(e) => {
                        notes.push(format!("{node}: drained but not terminated: {e}"));
                        // Leave it cordoned: the next run retries the termination.
                    }
                }
            }
            Ok(report) => notes.push(format!("{node}: {report}")),
            Err(e) => notes.push(format!("{node}: {e}")),
        }
    }
    (removed, moved, saved, notes)
}

async fn plan_and_act<C: Cloud>(
    policy: &OptimizationPolicy,
    pctx: &PolicyContext<C>,
) -> Result<Outcome, Error> {
    let ctx = &pctx.base;
    let previous = policy.status.clone().unwrap_or_default();
    // validate
    let settings = settings(policy)?;
    let dry_run = policy.spec.dry_run || ctx.config.dry_run;
    // read
    let policies = Api::<OptimizationPolicy>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let templates = Api::<NodeTemplate>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let selected = selected_templates(policy, &policies, &templates)?;
    // instance id -> (template, group)
    let mut owners: BTreeMap<String, (String, String)> = BTreeMap::new();
    for template in &selected {
        let selector = group_selector(template);
        for group in ctx.cloud.groups(&selector).await? {
            for instance in &group.instances {
                owners.insert(instance.clone(), (template.name_any(), group.name.clone()));
            }
        }
    }
    let all_nodes = pctx.stores.nodes.state();
    let all_node_ids: BTreeSet<String> = all_nodes
        .iter()
        .filter_map(|n| n.spec.as_ref()?.provider_id.as_deref())
        .filter_map(instance_id)
        .map(str::to_string)
        .collect();
    let scope: Vec<Arc<Node>> = all_nodes
        .into_iter()
        .filter(|n| {
            n.spec
                .as_ref()
                .and_then(|s| s.provider_id.as_deref())
                .and_then(instance_id)
                .is_some_and(|id| owners.contains_key(id))
        })
        .collect();
    let names: BTreeSet<String> = scope.iter().map(|n| n.name_any()).collect();
    let pdbs = pctx.stores.pdbs.state();
    let mut translated = {
        let cache = pctx
            .stores
            .pods
            .pods
            .read()
            .map_err(|_| Error::Snapshot("the pod cache is poisoned".into()))?;
        let mut pods = Vec::new();
        for (node, pod) in cache
            .values()
            .filter(|(node, _)| names.contains(node.as_ref()))
        {
            match pod {
                Ok(pod) => pods.push((node.as_ref(), pod)),
                Err(message) => return Err(Error::Snapshot(message.clone())),
            }
        }
        translate::assemble(scope.iter().map(|n| &**n), pods, pdbs.iter().map(|p| &**p))
            .map_err(|e| Error::Snapshot(e.to_string()))?
    };
    let catalog = ctx.catalog.snapshot(&ctx.cloud).await?;
    translate::apply_prices(&mut translated.snapshot, &*catalog.catalog);
    let snapshot = &translated.snapshot;
    let instance_of = |name: &str| -> Option<String> {
        scope
            .iter()
            .find(|n| n.name_any() == name)
            .and_then(|n| n.spec.as_ref()?.provider_id.as_deref())
            .and_then(instance_id)
            .map(str::to_string)
    };
    // Drains a previous run (or a crash) left behind.
    let mut in_flight: Vec<String> = scope
        .iter()
        .filter_map(|n| crate::drain::marked(n, DISRUPTED_TAINT))
        .filter(|m| m.by == "consolidation")
        .map(|m| m.name)
        .collect();
    // plan
    let now = Utc::now();
    let limit = batch_limit(&settings, snapshot.nodes.len(), now);
    // Resumed drains count against today's budget: the ones over it (the budget shrank, a window
    // closed, consolidation was turned off) are released, not drained.
    let resumable = if settings.options.mode == Mode::Off {
        0
    } else {
        limit
    };
    let over_budget = in_flight.split_off(in_flight.len().min(resumable));
    let mut options = settings.options.clone();
    options.budget = Some(limit.saturating_sub(in_flight.len()));
    let planning = Instant::now();
    let plan = consolidation::plan(snapshot, &options).map_err(|e| Error::Plan(e.to_string()))?;
    let planned = (
        snapshot.nodes.len(),
        snapshot.pods.len(),
        planning.elapsed(),
    );
    let cost = savings::estimate_plan(snapshot, &plan, Some(settings.spot));
    // Candidates must stay candidates for consolidateAfter.
    let ready: Vec<String> = {
        let mut candidates = pctx.candidates.lock().await;
        let current: BTreeSet<String> = plan
            .removals
            .iter()
            .map(|r| snapshot.nodes[r.node.index()].name.clone())
            .collect();
        candidates.retain(|n, _| current.contains(n));
        let clock = Instant::now();
        for name in &current {
            candidates.entry(name.clone()).or_insert(clock);
        }
        plan.batches
            .iter()
            .flatten()
            .map(|id| snapshot.nodes[id.index()].name.clone())
            .filter(|n| {
                candidates
                    .get(n)
                    .is_some_and(|since| since.elapsed() >= settings.consolidate_after)
            })
            .take(options.budget.unwrap_or(0))
            .collect()
    };
    let mut notes = Vec::new();
    let reference = policy.object_ref(&());
    let mut last = previous.last_consolidation.clone();
    // act
    if !dry_run && !over_budget.is_empty() {
        let mut released = Vec::new();
        for node in &over_budget {
            match pctx.drainer.release(node, DISRUPTED_TAINT).await {
                Ok(()) => released.push(node.as_str()),
                Err(e) => notes.push(format!("could not release {node}: {e}")),
            }
        }
        if !released.is_empty() {
            let note = format!(
                "released {} (a previous run was draining them; the budget now allows {resumable} at once)",
                released.join(", ")
            );
            ctx.event(&reference, false, "DrainReleased", note.clone())
                .await;
            notes.push(note);
        }
    }
    if dry_run {
        if !plan.removals.is_empty() {
            let names: Vec<&str> = plan
                .removals
                .iter()
                .map(|r| snapshot.nodes[r.node.index()].name.as_str())
                .collect();
            let note = format!(
                "dry run: would remove {} nodes ({}), moving {} pods, saving ${:.4}/h; nothing changed",
                names.len(),
                names.join(", "),
                plan.moves.len(),
                plan.savings_hourly
            );
            ctx.event(&reference, false, "ConsolidationPlanned", note.clone())
                .await;
            notes.push(note);
        }
    } else if settings.options.mode != Mode::Off {
        let price_of = |name: &str| {
            snapshot
                .nodes
                .iter()
                .find(|n| n.name == name)
                .and_then(|n| n.hourly_price)
                .unwrap_or(0.0)
        };
        let work: Vec<Removal> = in_flight
            .iter()
            .chain(ready.iter())
            .filter_map(|n| {
                let instance = instance_of(n)?;
                Some(Removal {
                    node: n.clone(),
                    group: owners.get(&instance)?.1.clone(),
                    hourly: price_of(n),
                    instance,
                })
            })
            .collect();
        if !work.is_empty() {
            let (removed, moved, saved, more) = remove_nodes(
                pctx,
                &work,
                &settings,
                "underutilized or empty; pods fit elsewhere",
            )
            .await;
            notes.extend(more);
            if removed > 0 {
                let note =
                    format!("removed {removed} nodes, moved {moved} pods, saving ${saved:.4}/h");
                ctx.event(&reference, false, "Consolidated", note.clone())
                    .await;
                notes.push(note);
                last = Some(ConsolidationStatus {
                    time: Time(k8s_openapi::jiff::Timestamp::now()),
                    nodes_removed: removed,
                    pods_moved: moved,
                    saved_hourly: (saved * 10_000.0).round() / 10_000.0,
                });
            }
        }
        for removal in &work {
            pctx.candidates.lock().await.remove(&removal.node);
        }
    }
    if let Some(max) = settings.max_nodes.filter(|m| snapshot.nodes.len() > *m) {
        notes.push(format!(
            "{} nodes are above nodes.max {max}; CloudOptim only removes nodes, lower the groups' MaxSize",
            snapshot.nodes.len()
        ));
    }
    let (zombies, zombie_notes) = handle_zombies(
        pctx,
        policy,
        dry_run,
        &settings,
        &all_node_ids,
        &previous,
        &catalog.catalog,
    )
    .await?;
    notes.extend(zombie_notes);
    // metrics
    let policy_name = policy.name_any();
    ctx.metrics
        .estimated_savings
        .with_label_values(&[policy_name.as_str()])
        .set(cost.savings_hourly);
    let mut exported = BTreeSet::from([Series::EstimatedSavings(policy_name.clone())]);
    let mut by_template: BTreeMap<(String, &'static str), i64> = BTreeMap::new();
    // `assemble` keeps the order of `scope`: snapshot node i is scope node i.
    for (node, n) in scope.iter().zip(&snapshot.nodes) {
        let id = node
            .spec
            .as_ref()
            .and_then(|s| s.provider_id.as_deref())
            .and_then(instance_id)
            .unwrap_or_default();
        let template = owners.get(id).map_or("", |(t, _)| t.as_str()).to_string();
        let capacity = n.capacity_type.as_str();
        *by_template.entry((template, capacity)).or_insert(0) += 1;
        let price = n.hourly_price.unwrap_or(0.0);
        let instance_type = n.instance_type.as_deref().unwrap_or("");
        let cost_labels = [
            n.name.clone(),
            instance_type.to_string(),
            n.zone.clone().unwrap_or_default(),
            capacity.to_string(),
        ];
        ctx.metrics
            .node_hourly_cost
            .with_label_values(&cost_labels.each_ref().map(String::as_str))
            .set(price);
        exported.insert(Series::NodeHourlyCost(cost_labels));
        let arch = n
            .labels
            .get("kubernetes.io/arch")
            .map_or("", String::as_str);
        let total_labels = [
            n.name.clone(),
            instance_type.to_string(),
            n.region.clone().unwrap_or_default(),
            arch.to_string(),
        ];
        ctx.metrics
            .node_total_hourly_cost
            .with_label_values(&total_labels.each_ref().map(String::as_str))
            .set(price);
        exported.insert(Series::NodeTotalHourlyCost(total_labels));
    }
    for ((template, capacity), count) in by_template {
        ctx.metrics
            .nodes
            .with_label_values(&[capacity, template.as_str()])
            .set(count);
        exported.insert(Series::Nodes([capacity.to_string(), template]));
    }
    // Series of nodes this policy no longer has (consolidated, reclaimed) are removed.
    ctx.metrics.replace_owned(&policy_name, exported);
    // status
    let spot = u32::try_from(cost.current_mix.spot_nodes).unwrap_or(u32::MAX);
    let on_demand = u32::try_from(cost.current_mix.on_demand_nodes).unwrap_or(u32::MAX);
    let total = spot + on_demand;
    let round = |v: f64| (v * 10_000.0).round() / 10_000.0;
    let status = OptimizationPolicyStatus {
        observed_generation: policy.metadata.generation,
        nodes: Some(NodeCounts {
            total,
            spot,
            on_demand,
            spot_percentage: (spot * 100).checked_div(total).unwrap_or(0),
        }),
        cost: Some(CostStatus {
            hourly: round(cost.current_hourly),
            monthly: round(cost.current_hourly * HOURS_PER_MONTH),
            savings_hourly: round(cost.savings_hourly),
            savings_monthly: round(cost.savings_hourly * HOURS_PER_MONTH),
            savings_percent: (cost.savings_percent * 10.0).round() / 10.0,
        }),
        last_consolidation: last,
        recommendations: previous.recommendations.clone(),
        zombies,
        conditions: Vec::new(),
    };
    let kept_notes: Vec<String> = plan
        .kept
        .iter()
        .filter(|k| k.reason.pins_node())
        .take(5)
        .map(|k| {
            format!(
                "{} kept: {}",
                snapshot.nodes[k.node.index()].name,
                k.reason.describe(snapshot)
            )
        })
        .collect();
    let mut message = format!(
        "{} nodes in scope ({} templates); plan removes {} (budget {} at once, {} in flight){}",
        total,
        selected.len(),
        plan.removals.len(),
        limit,
        in_flight.len(),
        if dry_run { "; dry run" } else { "" }
    );
    for note in notes.iter().chain(kept_notes.iter()) {
        message.push_str("; ");
        message.push_str(note);
    }
    Ok(Outcome {
        status,
        message,
        requeue: settings.interval,
        planned,
    })
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
    match plan_and_act(&policy, &pctx).await {
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
            Ok(Action::requeue(error.retry_after()))
        }
    }
}

/// Hand memory freed after a plan (the snapshot, the planner's indexes) back to the OS. glibc keeps
/// freed small allocations in the process otherwise, and the operator's RSS would stay at the peak of
/// its largest plan.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory at the top of glibc's heaps; it touches no live
    // allocation and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
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

/// Start a reflector for `api` whose objects are reduced by `strip`; returns its store.
pub(crate) fn reflect<K>(api: Api<K>, strip: fn(&mut K)) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher::watcher(api, watcher::Config::default().page_size(500)).modify(strip),
    )
    .default_backoff()
    .for_each(|_| futures::future::ready(()));
    tokio::spawn(stream);
    reader
}

/// One watch of the cluster's Nodes (stripped) for the whole process: the policy controller and the
/// interruption intake share it.
pub fn node_store(client: &kube::Client) -> Store<Node> {
    reflect(Api::<Node>::all(client.clone()), strip_node)
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
    let controller = Controller::new(
        Api::<OptimizationPolicy>::all(client),
        watcher::Config::default(),
    );
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(spec: serde_json::Value) -> OptimizationPolicy {
        serde_json::from_value(json!({
            "apiVersion": "cloudoptim.io/v1alpha1",
            "kind": "OptimizationPolicy",
            "metadata": {"name": "p"},
            "spec": spec,
        }))
        .expect("policy")
    }

    #[test]
    fn durations_follow_the_crd_pattern() {
        assert_eq!(
            parse_duration("f", "90s").ok(),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            parse_duration("f", "1h30m").ok(),
            Some(Duration::from_secs(5400))
        );
        assert_eq!(
            parse_duration("f", "14d").ok(),
            Some(Duration::from_secs(14 * 86400))
        );
        assert_eq!(
            parse_duration("f", "500ms").ok(),
            Some(Duration::from_millis(500))
        );
        for bad in ["", "5", "m5", "5x", "1.5h"] {
            let e = parse_duration("consolidation.interval", bad).expect_err(bad);
            assert!(
                e.to_string().starts_with("spec.consolidation.interval:"),
                "{e}"
            );
        }
    }

    #[test]
    fn day_durations_are_accepted_everywhere_and_huge_ones_are_invalid_not_a_panic() {
        let p = policy(json!({
            "consolidation": {"consolidateAfter": "1d", "interval": "90m"},
            "disruption": {"drainTimeout": "14d", "budgets": [
                {"nodes": "1", "schedule": "0 9 * * *", "duration": "1d"}
            ]},
            "zombies": {"gracePeriod": "2d"}
        }));
        let s = settings(&p).expect("1d, 14d and 90m are valid everywhere");
        assert_eq!(s.drain_timeout, Duration::from_secs(14 * 86_400));
        assert_eq!(s.consolidate_after, Duration::from_secs(86_400));
        let p = policy(json!({"disruption": {"drainTimeout": "999999999999d"}}));
        let e = settings(&p).expect_err("out of range");
        assert_eq!(e.reason(), "InvalidPolicy");
        assert!(e.to_string().contains("disruption.drainTimeout"), "{e}");
        assert!(e.to_string().contains("366d"), "{e}");
        let p = policy(json!({"disruption": {"budgets": [
            {"nodes": "1", "schedule": "0 9 * * *", "duration": "999999999999d"}
        ]}}));
        assert_eq!(
            settings(&p).expect_err("out of range").reason(),
            "InvalidBudget"
        );
    }

    #[test]
    fn an_unparsable_budget_fails_closed_naming_it() {
        let p = policy(json!({"disruption": {"budgets": [
            {"nodes": "1"},
            {"nodes": "2", "schedule": "not cron", "duration": "1h"}
        ]}}));
        let e = settings(&p).expect_err("bad budget");
        assert_eq!(e.reason(), "InvalidBudget");
        assert!(e.to_string().contains("budgets[1].schedule"), "{e}");
        assert!(e.to_string().contains("no node is disrupted"), "{e}");
    }

    #[test]
    fn the_batch_is_the_most_restrictive_active_budget() {
        let p = policy(json!({"disruption": {"budgets": [{"nodes": "50%"}, {"nodes": "1"}]}}));
        let s = settings(&p).expect("settings");
        assert_eq!(batch_limit(&s, 10, Utc::now()), 1);
        let p = policy(json!({}));
        let s = settings(&p).expect("settings");
        assert_eq!(
            batch_limit(&s, 10, Utc::now()),
            1,
            "default 10% of 10, rounded up"
        );
        assert_eq!(batch_limit(&s, 25, Utc::now()), 3);
        let p = policy(json!({"disruption": {"budgets": [{"nodes": "0"}]}}));
        assert_eq!(batch_limit(&settings(&p).expect("s"), 10, Utc::now()), 0);
    }

    #[test]
    fn provider_ids_name_the_instance() {
        assert_eq!(instance_id("aws:///us-east-1a/i-0abc"), Some("i-0abc"));
        assert_eq!(instance_id("kind://docker/x"), None);
    }

    #[test]
    fn stripped_pods_keep_what_the_planner_reads_and_drop_the_rest() {
        let mut pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "a", "namespace": "n", "annotations": {
                "cloudoptim.io/do-not-disrupt": "true", "kubectl.kubernetes.io/last-applied-configuration": "{...}"},
                "managedFields": [{"manager": "x"}], "labels": {"app": "a"}},
            "spec": {"nodeName": "node-1", "nodeSelector": {"k": "v"},
                "containers": [{"name": "c", "image": "big", "env": [{"name": "E", "value": "x"}],
                    "resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "1"}}}],
                "volumes": [{"name": "cfg", "configMap": {"name": "c"}}, {"name": "data", "persistentVolumeClaim": {"claimName": "d"}}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .expect("pod");
        strip_pod(&mut pod);
        let annotations = pod.metadata.annotations.clone().unwrap_or_default();
        assert!(annotations.contains_key("cloudoptim.io/do-not-disrupt"));
        assert_eq!(annotations.len(), 1);
        assert!(pod.metadata.managed_fields.is_none());
        let spec = pod.spec.as_ref().expect("spec");
        assert_eq!(spec.node_name.as_deref(), Some("node-1"));
        assert!(spec.node_selector.is_some());
        let c = &spec.containers[0];
        assert!(c.image.is_none() && c.env.is_none());
        let r = c.resources.as_ref().expect("resources");
        assert!(r.requests.is_some() && r.limits.is_none());
        let volumes = spec.volumes.as_ref().expect("volumes");
        assert_eq!(volumes.len(), 1);
        assert!(volumes[0].persistent_volume_claim.is_some());
        assert_eq!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Running")
        );
        assert!(pod.status.as_ref().is_some_and(|s| s.conditions.is_none()));
        // The stripped pod still translates.
        let (node, _) = translate::engine_pod(&pod)
            .expect("translates")
            .expect("a scheduled pod counts");
        assert_eq!(node, "node-1");
    }
}
