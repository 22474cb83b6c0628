//! Translation of Kubernetes objects (Nodes, Pods, PodDisruptionBudgets) into the engine snapshot model
//! ([`crate::engine::snapshot`]). This is the only place that knows both `k8s_openapi` and the engine.
//!
//! Sources: a Kubernetes List as `kubectl get nodes,pods,poddisruptionbudgets -A -o yaml` (or `-o json`)
//! writes it ([`from_list_text`]; also a multi-document stream of Lists or single objects; other kinds are
//! counted and ignored), or objects already in memory ([`engine_pod`] and [`assemble`], for controllers).
//!
//! Decisions written down here:
//! - Node instance type, zone and region come from `node.kubernetes.io/instance-type`,
//!   `topology.kubernetes.io/zone` and `topology.kubernetes.io/region` (the `beta`/`failure-domain`
//!   spellings as fallbacks); without a region label it is the zone minus its last letter
//!   (`us-east-1a` -> `us-east-1`). Capacity type: `karpenter.sh/capacity-type`, then
//!   `eks.amazonaws.com/capacityType`, then `cloudoptim.io/capacity-type` (`spot`/`SPOT` is spot;
//!   `on-demand`, `ON_DEMAND`, `reserved`, `CAPACITY_BLOCK` are billed on demand); no label = on-demand.
//! - Allocatable comes from `status.allocatable` (falling back to `status.capacity`); pods default to 110.
//! - Pod requests follow kube-scheduler: max(sum of containers + sidecars, each init container on top of
//!   the sidecars started before it), pod-level `spec.resources` when set, plus `spec.overhead`; a
//!   container without a request for a resource but with a limit requests the limit.
//! - Pending (no `nodeName`) and finished (`Succeeded`/`Failed`) pods take no room and are left out, as
//!   are pods on nodes missing from the List; [`Skipped`] counts them.
//! - Constraints the planner does not model pin the pod's node, with the reason: required pod affinity,
//!   anti-affinity or spreads on other topology keys, anti-affinity with a `namespaceSelector`, node
//!   affinity `matchFields`, `hostPath` volumes and persistent volume claims (a List of nodes, pods and
//!   PDBs does not say where a volume lives; it may be a local volume). `emptyDir` is fine.
//! - Do-not-disrupt: `cloudoptim.io/do-not-disrupt: "true"` (and Karpenter's `karpenter.sh/do-not-disrupt`,
//!   and cluster-autoscaler's `safe-to-evict: "false"` on pods) on nodes and pods.
//! - A PDB's allowance is `status.disruptionsAllowed`; without a status it is computed from
//!   `minAvailable`/`maxUnavailable` over the pods it selects, all assumed healthy (percentages round up,
//!   as the disruption controller does). A PDB without a selector selects nothing and is dropped.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Deserialize;
use serde_json::Value;

use crate::engine::catalog::Catalog;
use crate::engine::snapshot::{
    AntiAffinityTerm, CapacityType, LABEL_HOSTNAME, LabelSelector, Labels, Node, NodeId,
    NodeOperator, NodeRequirement, NodeSelectorTerm, OwnerKind, Pdb, Pod, Resources,
    SelectorOperator, SelectorRequirement, Snapshot, Taint, TaintEffect, Toleration,
    TolerationOperator, TopologyKey, TopologySpread,
};

/// Annotation (on nodes and pods) that keeps CloudOptim from disrupting them.
pub use crate::names::DO_NOT_DISRUPT;
const KARPENTER_DO_NOT_DISRUPT: &str = "karpenter.sh/do-not-disrupt";
const SAFE_TO_EVICT: &str = "cluster-autoscaler.kubernetes.io/safe-to-evict";
/// Annotation the kubelet puts on the API copy (mirror pod) of a static pod.
pub const MIRROR: &str = "kubernetes.io/config.mirror";
const CAPACITY_LABELS: [&str; 3] = [
    "karpenter.sh/capacity-type",
    "eks.amazonaws.com/capacityType",
    crate::names::CAPACITY_TYPE_LABEL,
];

/// Input that cannot be understood: where (`items[3].spec.containers[0].resources.requests.cpu`) and
/// what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranslateError {
    /// Path inside the input; empty for errors about the whole document (syntax).
    pub path: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl fmt::Display for TranslateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for TranslateError {}

fn error(path: impl Into<String>, message: impl Into<String>) -> TranslateError {
    TranslateError {
        path: path.into(),
        message: message.into(),
    }
}

/// What the translation left out, for the report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Skipped {
    /// Pods without a node.
    pub pending_pods: usize,
    /// Pods in phase Succeeded or Failed.
    pub finished_pods: usize,
    /// Pods bound to a node the input does not contain.
    pub pods_on_unknown_nodes: usize,
    /// PDBs without a selector.
    pub pdbs_without_selector: usize,
    /// Items of other kinds, by kind.
    pub other_kinds: BTreeMap<String, usize>,
}

/// A snapshot and what was left out of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Translated {
    /// The cluster model (prices not filled: see [`apply_prices`]).
    pub snapshot: Snapshot,
    /// What was left out.
    pub skipped: Skipped,
}

/// One object and the path that names it in error messages.
enum Object {
    Node(Box<core::Node>),
    Pod(Box<core::Pod>),
    Pdb(Box<PodDisruptionBudget>),
}

/// Parse a List (YAML or JSON; a multi-document stream of Lists or objects also works).
pub fn from_list_text(text: &str) -> Result<Translated, TranslateError> {
    let documents = documents(text)?;
    let many = documents.len() > 1;
    let mut objects = Vec::new();
    let mut skipped = Skipped::default();
    for (d, document) in documents.into_iter().enumerate() {
        let root = if many {
            format!("documents[{d}]")
        } else {
            String::new()
        };
        collect(document, &root, &mut objects, &mut skipped)?;
    }
    translate(objects, skipped)
}

fn documents(text: &str) -> Result<Vec<Value>, TranslateError> {
    if text.trim_start().starts_with('{') {
        return serde_json::from_str(text)
            .map(|v| vec![v])
            .map_err(|e| error("", format!("not valid JSON: {e}")));
    }
    let mut documents = Vec::new();
    for document in serde_yaml::Deserializer::from_str(text) {
        let value =
            Value::deserialize(document).map_err(|e| error("", format!("not valid YAML: {e}")))?;
        if !value.is_null() {
            documents.push(value);
        }
    }
    Ok(documents)
}

fn join(root: &str, field: &str) -> String {
    if root.is_empty() {
        field.to_owned()
    } else {
        format!("{root}.{field}")
    }
}

/// Turn one document (a List or a single object) into typed objects.
fn collect(
    document: Value,
    root: &str,
    objects: &mut Vec<(String, Object)>,
    skipped: &mut Skipped,
) -> Result<(), TranslateError> {
    let Value::Object(mut map) = document else {
        return Err(error(
            root,
            "expected a Kubernetes List (kind: List, items: [...]) or object",
        ));
    };
    match map.remove("items") {
        Some(Value::Array(items)) => {
            for (i, item) in items.into_iter().enumerate() {
                let path = join(root, &format!("items[{i}]"));
                if let Some(object) = typed(item, &path, skipped)? {
                    objects.push((path, object));
                }
            }
            Ok(())
        }
        Some(Value::Null) => Ok(()),
        Some(_) => Err(error(join(root, "items"), "expected a list of objects")),
        None if map.contains_key("kind") => {
            let path = if root.is_empty() {
                "(document)".to_owned()
            } else {
                root.to_owned()
            };
            if let Some(object) = typed(Value::Object(map), &path, skipped)? {
                objects.push((path, object));
            }
            Ok(())
        }
        None => Err(error(
            root,
            "expected a Kubernetes List (kind: List, items: [...]) or object",
        )),
    }
}

/// Deserialize one item by its kind; `None` for kinds we ignore.
fn typed(
    mut item: Value,
    path: &str,
    skipped: &mut Skipped,
) -> Result<Option<Object>, TranslateError> {
    let kind = match item.get("kind") {
        Some(Value::String(kind)) => kind.clone(),
        _ => {
            return Err(error(
                format!("{path}.kind"),
                "missing; expected Node, Pod or PodDisruptionBudget",
            ));
        }
    };
    quantities_to_strings(&mut item, &kind);
    let object = match kind.as_str() {
        "Node" => Object::Node(Box::new(decode(item, path)?)),
        "Pod" => Object::Pod(Box::new(decode(item, path)?)),
        "PodDisruptionBudget" => {
            // policy/v1beta1 has the same fields we read.
            if let Some(version) = item.get_mut("apiVersion") {
                *version = Value::String("policy/v1".to_owned());
            }
            Object::Pdb(Box::new(decode(item, path)?))
        }
        other => {
            *skipped.other_kinds.entry(other.to_owned()).or_insert(0) += 1;
            return Ok(None);
        }
    };
    Ok(Some(object))
}

/// Deserialize `item` as `T`; on failure, re-read it through serde_yaml, which names the failing field.
fn decode<T: serde::de::DeserializeOwned>(item: Value, path: &str) -> Result<T, TranslateError> {
    match serde_json::from_value::<T>(item.clone()) {
        Ok(value) => Ok(value),
        Err(first) => {
            let detail = serde_yaml::to_string(&item)
                .ok()
                .and_then(|text| serde_yaml::from_str::<T>(&text).err())
                .map(|e| strip_location(&e.to_string()))
                .unwrap_or_else(|| first.to_string());
            match detail.split_once(": ") {
                Some((field, message)) if !field.contains(' ') => {
                    Err(error(format!("{path}.{field}"), message))
                }
                _ => Err(error(path, detail)),
            }
        }
    }
}

/// Drop serde_yaml's " at line L column C" (it refers to the re-serialized item, not the user's file).
fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// Hand-written Lists often say `cpu: 2`; Kubernetes quantities are strings. Convert numbers found
/// where quantities live so they parse (kubectl itself always quotes them).
fn quantities_to_strings(item: &mut Value, kind: &str) {
    fn fix_map(map: Option<&mut Value>) {
        if let Some(Value::Object(map)) = map {
            for value in map.values_mut() {
                if let Value::Number(n) = value {
                    *value = Value::String(n.to_string());
                }
            }
        }
    }
    fn fix_containers(list: Option<&mut Value>) {
        if let Some(Value::Array(containers)) = list {
            for c in containers {
                if let Some(resources) = c.get_mut("resources") {
                    fix_map(resources.get_mut("requests"));
                    fix_map(resources.get_mut("limits"));
                }
            }
        }
    }
    match kind {
        "Node" => {
            if let Some(status) = item.get_mut("status") {
                fix_map(status.get_mut("allocatable"));
                fix_map(status.get_mut("capacity"));
            }
        }
        "Pod" => {
            if let Some(spec) = item.get_mut("spec") {
                fix_containers(spec.get_mut("containers"));
                fix_containers(spec.get_mut("initContainers"));
                fix_map(spec.get_mut("overhead"));
                if let Some(resources) = spec.get_mut("resources") {
                    fix_map(resources.get_mut("requests"));
                    fix_map(resources.get_mut("limits"));
                }
            }
        }
        _ => {}
    }
}

fn translate(
    objects: Vec<(String, Object)>,
    mut skipped: Skipped,
) -> Result<Translated, TranslateError> {
    let mut snapshot = Snapshot::default();
    let mut node_ids: HashMap<String, NodeId> = HashMap::new();
    for (path, object) in &objects {
        if let Object::Node(node) = object {
            push_node(&mut snapshot, &mut node_ids, node, path)?;
        }
    }
    for (path, object) in &objects {
        if let Object::Pod(pod) = object
            && let Some(pod) = pod_from(pod, path, &node_ids, &mut skipped)?
        {
            snapshot.pods.push(pod);
        }
    }
    for (path, object) in &objects {
        if let Object::Pdb(pdb) = object {
            push_pdb(&mut snapshot, &mut skipped, pdb, path)?;
        }
    }
    Ok(Translated { snapshot, skipped })
}

/// Add a Node to the snapshot (a name seen twice is an error naming the path).
fn push_node(
    snapshot: &mut Snapshot,
    node_ids: &mut HashMap<String, NodeId>,
    node: &core::Node,
    path: &str,
) -> Result<(), TranslateError> {
    let node = node_from(node, path)?;
    if node_ids.contains_key(&node.name) {
        return Err(error(
            format!("{path}.metadata.name"),
            format!("node {:?} appears twice", node.name),
        ));
    }
    node_ids.insert(node.name.clone(), NodeId(snapshot.nodes.len() as u32));
    snapshot.nodes.push(node);
    Ok(())
}

/// Add a PDB to the snapshot (after its pods); one without a selector is counted and left out.
fn push_pdb(
    snapshot: &mut Snapshot,
    skipped: &mut Skipped,
    pdb: &PodDisruptionBudget,
    path: &str,
) -> Result<(), TranslateError> {
    match pdb_from(pdb, path, &snapshot.pods)? {
        Some(pdb) => snapshot.pdbs.push(pdb),
        None => skipped.pdbs_without_selector += 1,
    }
    Ok(())
}

/// One pod in the engine's form, for callers that keep pods between snapshots (the operator's watch
/// stores these instead of whole Pod objects): the name of its node and the pod, or `None` for a pod
/// the planner does not count (finished, or not scheduled yet). The pod's `node` is a placeholder that
/// [`assemble`] sets.
pub fn engine_pod(pod: &core::Pod) -> Result<Option<(String, Pod)>, TranslateError> {
    let path = format!(
        "Pod {}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or("?")
    );
    let Some(node) = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .filter(|n| !n.is_empty())
    else {
        return Ok(None);
    };
    let ids: HashMap<String, NodeId> = [(node.clone(), NodeId(0))].into();
    let mut skipped = Skipped::default();
    Ok(pod_from(pod, &path, &ids, &mut skipped)?.map(|p| (node, p)))
}

/// A snapshot from Nodes, pods already in the engine's form (with their node names, from
/// [`engine_pod`]) and PDBs, without copying the Kubernetes objects. Pods on nodes not in `nodes` are
/// left out and counted.
/// Snapshot nodes are in the order of `nodes`.
pub fn assemble<'a>(
    nodes: impl IntoIterator<Item = &'a core::Node>,
    pods: impl IntoIterator<Item = (&'a str, &'a Pod)>,
    pdbs: impl IntoIterator<Item = &'a PodDisruptionBudget>,
) -> Result<Translated, TranslateError> {
    let mut snapshot = Snapshot::default();
    let mut skipped = Skipped::default();
    let mut node_ids: HashMap<String, NodeId> = HashMap::new();
    for node in nodes {
        let path = format!("Node {}", node.metadata.name.as_deref().unwrap_or("?"));
        push_node(&mut snapshot, &mut node_ids, node, &path)?;
    }
    for (node, pod) in pods {
        match node_ids.get(node) {
            Some(&id) => {
                let mut pod = pod.clone();
                pod.node = id;
                snapshot.pods.push(pod);
            }
            None => skipped.pods_on_unknown_nodes += 1,
        }
    }
    for pdb in pdbs {
        let path = format!(
            "PodDisruptionBudget {}/{}",
            pdb.metadata.namespace.as_deref().unwrap_or("default"),
            pdb.metadata.name.as_deref().unwrap_or("?")
        );
        push_pdb(&mut snapshot, &mut skipped, pdb, &path)?;
    }
    Ok(Translated { snapshot, skipped })
}

fn name_of(metadata: &meta::ObjectMeta, path: &str) -> Result<String, TranslateError> {
    match metadata.name.as_deref() {
        Some(name) if !name.is_empty() => Ok(name.to_owned()),
        _ => Err(error(format!("{path}.metadata.name"), "missing")),
    }
}

/// A pod asks not to be disrupted: `cloudoptim.io/do-not-disrupt: "true"`, Karpenter's
/// `karpenter.sh/do-not-disrupt: "true"` or cluster-autoscaler's `safe-to-evict: "false"`. The planner
/// and the drain ([`crate::drain`]) share this one rule.
pub fn pod_forbids_disruption(metadata: &meta::ObjectMeta) -> bool {
    annotated_true(metadata, DO_NOT_DISRUPT)
        || annotated_true(metadata, KARPENTER_DO_NOT_DISRUPT)
        || metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(SAFE_TO_EVICT))
            .is_some_and(|v| v == "false")
}

fn annotated_true(metadata: &meta::ObjectMeta, key: &str) -> bool {
    metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .is_some_and(|v| v == "true")
}

fn label_path(path: &str, key: &str) -> String {
    format!("{path}.metadata.labels[{key:?}]")
}

fn node_from(node: &core::Node, path: &str) -> Result<Node, TranslateError> {
    let name = name_of(&node.metadata, path)?;
    let labels: Labels = node.metadata.labels.clone().unwrap_or_default();
    let first = |keys: &[&str]| keys.iter().find_map(|k| labels.get(*k).cloned());
    let zone = first(&[
        "topology.kubernetes.io/zone",
        "failure-domain.beta.kubernetes.io/zone",
    ]);
    let region = first(&[
        "topology.kubernetes.io/region",
        "failure-domain.beta.kubernetes.io/region",
    ])
    .or_else(|| zone.as_deref().and_then(region_of_zone));
    let mut capacity_type = CapacityType::OnDemand;
    if let Some((key, value)) = CAPACITY_LABELS
        .iter()
        .find_map(|k| labels.get(*k).map(|v| (*k, v)))
    {
        capacity_type = match value.to_ascii_lowercase().replace('_', "-").as_str() {
            "spot" => CapacityType::Spot,
            "on-demand" | "ondemand" | "reserved" | "capacity-block" => CapacityType::OnDemand,
            _ => {
                return Err(error(
                    label_path(path, key),
                    format!("{value:?} is not a capacity type (expected spot or on-demand)"),
                ));
            }
        };
    }
    let status = node.status.as_ref();
    let (resources, field) = match status.and_then(|s| s.allocatable.as_ref()) {
        Some(a) => (Some(a), "allocatable"),
        None => (status.and_then(|s| s.capacity.as_ref()), "capacity"),
    };
    let Some(resources) = resources else {
        return Err(error(
            format!("{path}.status.allocatable"),
            "missing (expected cpu, memory and pods)",
        ));
    };
    let at = format!("{path}.status.{field}");
    let required = |key: &str, parse: Parse| -> Result<u64, TranslateError> {
        quantity(Some(resources), key, &at, parse)?
            .ok_or_else(|| error(format!("{at}.{key}"), "missing"))
    };
    let pods = quantity(Some(resources), "pods", &at, parse_count)?.unwrap_or(110);
    let allocatable = Resources {
        cpu_millis: required("cpu", parse_cpu_millis)?,
        memory_bytes: required("memory", parse_memory_bytes)?,
        pods: u32::try_from(pods).unwrap_or(u32::MAX),
    };
    let spec = node.spec.as_ref();
    let taints = spec
        .and_then(|s| s.taints.as_ref())
        .map(|taints| {
            taints
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    let effect = taint_effect(&t.effect).ok_or_else(|| {
                        error(
                            format!("{path}.spec.taints[{i}].effect"),
                            effect_expected(&t.effect),
                        )
                    })?;
                    Ok(Taint {
                        key: t.key.clone(),
                        value: t.value.clone().unwrap_or_default(),
                        effect,
                    })
                })
                .collect::<Result<Vec<_>, TranslateError>>()
        })
        .transpose()?
        .unwrap_or_default();
    let mut out = Node::new(name, allocatable);
    // Keep the node's own hostname label when it has one; Node::new set it to the name.
    out.labels.extend(labels.clone());
    if !labels.contains_key(LABEL_HOSTNAME) {
        out.labels
            .insert(LABEL_HOSTNAME.to_owned(), out.name.clone());
    }
    out.instance_type = first(&[
        "node.kubernetes.io/instance-type",
        "beta.kubernetes.io/instance-type",
    ]);
    out.zone = zone;
    out.region = region;
    out.capacity_type = capacity_type;
    out.taints = taints;
    out.unschedulable = spec.and_then(|s| s.unschedulable).unwrap_or(false);
    out.do_not_disrupt = annotated_true(&node.metadata, DO_NOT_DISRUPT)
        || annotated_true(&node.metadata, KARPENTER_DO_NOT_DISRUPT);
    Ok(out)
}

/// `us-east-1a` -> `us-east-1`: an AWS availability zone is its region plus one letter.
pub fn region_of_zone(zone: &str) -> Option<String> {
    let mut chars = zone.chars();
    let last = chars.next_back()?;
    let before = chars.clone().next_back()?;
    (last.is_ascii_lowercase() && before.is_ascii_digit()).then(|| chars.as_str().to_owned())
}

fn taint_effect(text: &str) -> Option<TaintEffect> {
    match text {
        "NoSchedule" => Some(TaintEffect::NoSchedule),
        "PreferNoSchedule" => Some(TaintEffect::PreferNoSchedule),
        "NoExecute" => Some(TaintEffect::NoExecute),
        _ => None,
    }
}

fn effect_expected(text: &str) -> String {
    format!("{text:?} is not a taint effect (expected NoSchedule, PreferNoSchedule or NoExecute)")
}

fn pod_from(
    pod: &core::Pod,
    path: &str,
    node_ids: &HashMap<String, NodeId>,
    skipped: &mut Skipped,
) -> Result<Option<Pod>, TranslateError> {
    let name = name_of(&pod.metadata, path)?;
    let namespace = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_owned());
    if matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    ) {
        skipped.finished_pods += 1;
        return Ok(None);
    }
    let Some(spec) = pod.spec.as_ref() else {
        return Err(error(format!("{path}.spec"), "missing"));
    };
    let Some(node_name) = spec.node_name.as_deref().filter(|n| !n.is_empty()) else {
        skipped.pending_pods += 1;
        return Ok(None);
    };
    let Some(&node) = node_ids.get(node_name) else {
        skipped.pods_on_unknown_nodes += 1;
        return Ok(None);
    };
    let labels: Labels = pod.metadata.labels.clone().unwrap_or_default();
    let mut out = Pod::new(&namespace, &name, node, pod_requests(spec, path)?);
    out.owner = owner_kind(&pod.metadata);
    out.node_selector = spec.node_selector.clone().unwrap_or_default();
    out.tolerations = std::sync::Arc::new(tolerations(spec, path)?);
    out.do_not_disrupt = pod_forbids_disruption(&pod.metadata);
    let mut unmodelled = Vec::new();
    if let Some(affinity) = &spec.affinity {
        let at = format!("{path}.spec.affinity");
        out.node_affinity = node_affinity(affinity, &at, &mut unmodelled)?;
        let required_affinity = affinity.pod_affinity.as_ref().and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
        if required_affinity.is_some_and(|terms| !terms.is_empty()) {
            unmodelled.push("required pod affinity".to_owned());
        }
        out.anti_affinity = anti_affinity(affinity, &at, &labels, &mut unmodelled)?;
    }
    out.topology_spread = spreads(spec, path, &labels, &mut unmodelled)?;
    for volume in spec.volumes.iter().flatten() {
        if volume.host_path.is_some() {
            unmodelled.push(format!("hostPath volume {}", volume.name));
        }
        if let Some(claim) = &volume.persistent_volume_claim {
            unmodelled.push(format!("persistent volume claim {}", claim.claim_name));
        }
        if volume.ephemeral.is_some() {
            unmodelled.push(format!("ephemeral volume {}", volume.name));
        }
    }
    out.unmodelled = unmodelled;
    out.labels = std::sync::Arc::new(labels);
    Ok(Some(out))
}

fn owner_kind(metadata: &meta::ObjectMeta) -> OwnerKind {
    if metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(MIRROR))
    {
        return OwnerKind::Static;
    }
    let controller = metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true));
    match controller.map(|o| o.kind.as_str()) {
        None => OwnerKind::None,
        Some("ReplicaSet") => OwnerKind::ReplicaSet,
        Some("StatefulSet") => OwnerKind::StatefulSet,
        Some("DaemonSet") => OwnerKind::DaemonSet,
        Some("Job") => OwnerKind::Job,
        Some("Node") => OwnerKind::Static,
        Some(_) => OwnerKind::Other,
    }
}

type QuantityMap = BTreeMap<String, Quantity>;
type Parse = fn(&str) -> Result<u64, String>;

/// `map[key]` parsed, with `{at}.{key}` in the error; `None` when absent.
fn quantity(
    map: Option<&QuantityMap>,
    key: &str,
    at: &str,
    parse: Parse,
) -> Result<Option<u64>, TranslateError> {
    map.and_then(|m| m.get(key))
        .map(|q| parse(&q.0).map_err(|m| error(format!("{at}.{key}"), m)))
        .transpose()
}

/// CPU (millicores) and memory (bytes) a container asks for: its requests, or its limits when a
/// request is missing (what API defaulting does).
fn container_requests(c: &core::Container, at: &str) -> Result<(u64, u64), TranslateError> {
    let resources = c.resources.as_ref();
    let requests = resources.and_then(|r| r.requests.as_ref());
    let limits = resources.and_then(|r| r.limits.as_ref());
    let one = |key: &str, parse: Parse| -> Result<u64, TranslateError> {
        match quantity(requests, key, &format!("{at}.requests"), parse)? {
            Some(v) => Ok(v),
            None => Ok(quantity(limits, key, &format!("{at}.limits"), parse)?.unwrap_or(0)),
        }
    };
    Ok((
        one("cpu", parse_cpu_millis)?,
        one("memory", parse_memory_bytes)?,
    ))
}

/// kube-scheduler's effective pod request (see the module docs).
fn pod_requests(spec: &core::PodSpec, path: &str) -> Result<Resources, TranslateError> {
    let add = |a: (u64, u64), b: (u64, u64)| (a.0.saturating_add(b.0), a.1.saturating_add(b.1));
    let max = |a: (u64, u64), b: (u64, u64)| (a.0.max(b.0), a.1.max(b.1));
    let mut containers = (0, 0);
    for (i, c) in spec.containers.iter().enumerate() {
        containers = add(
            containers,
            container_requests(c, &format!("{path}.spec.containers[{i}].resources"))?,
        );
    }
    let (mut sidecars, mut init) = ((0, 0), (0, 0));
    for (i, c) in spec.init_containers.iter().flatten().enumerate() {
        let r = container_requests(c, &format!("{path}.spec.initContainers[{i}].resources"))?;
        if c.restart_policy.as_deref() == Some("Always") {
            sidecars = add(sidecars, r);
            init = max(init, sidecars);
        } else {
            init = max(init, add(sidecars, r));
        }
    }
    let mut total = max(add(containers, sidecars), init);
    let pod_level = spec.resources.as_ref().and_then(|r| r.requests.as_ref());
    let at = format!("{path}.spec.resources.requests");
    if let Some(cpu) = quantity(pod_level, "cpu", &at, parse_cpu_millis)? {
        total.0 = cpu;
    }
    if let Some(memory) = quantity(pod_level, "memory", &at, parse_memory_bytes)? {
        total.1 = memory;
    }
    let overhead = spec.overhead.as_ref();
    let at = format!("{path}.spec.overhead");
    total = add(
        total,
        (
            quantity(overhead, "cpu", &at, parse_cpu_millis)?.unwrap_or(0),
            quantity(overhead, "memory", &at, parse_memory_bytes)?.unwrap_or(0),
        ),
    );
    Ok(Resources::pod(total.0, total.1))
}

fn tolerations(spec: &core::PodSpec, path: &str) -> Result<Vec<Toleration>, TranslateError> {
    spec.tolerations
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, t)| {
            let at = format!("{path}.spec.tolerations[{i}]");
            let operator = match t.operator.as_deref() {
                None | Some("") | Some("Equal") => TolerationOperator::Equal,
                Some("Exists") => TolerationOperator::Exists,
                Some(other) => {
                    return Err(error(
                        format!("{at}.operator"),
                        format!("{other:?} is not Equal or Exists"),
                    ));
                }
            };
            let effect = match t.effect.as_deref() {
                None | Some("") => None,
                Some(e) => Some(
                    taint_effect(e)
                        .ok_or_else(|| error(format!("{at}.effect"), effect_expected(e)))?,
                ),
            };
            Ok(Toleration {
                key: t.key.clone().unwrap_or_default(),
                operator,
                value: t.value.clone().unwrap_or_default(),
                effect,
            })
        })
        .collect()
}

fn node_affinity(
    affinity: &core::Affinity,
    at: &str,
    unmodelled: &mut Vec<String>,
) -> Result<Option<Vec<NodeSelectorTerm>>, TranslateError> {
    let Some(selector) = affinity.node_affinity.as_ref().and_then(|n| {
        n.required_during_scheduling_ignored_during_execution
            .as_ref()
    }) else {
        return Ok(None);
    };
    let mut terms = Vec::new();
    for (t, term) in selector.node_selector_terms.iter().enumerate() {
        let term_at = format!(
            "{at}.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[{t}]"
        );
        if term.match_fields.as_ref().is_some_and(|f| !f.is_empty()) {
            unmodelled.push("required node affinity on fields (matchFields)".to_owned());
        }
        let mut expressions = Vec::new();
        for (e, r) in term.match_expressions.iter().flatten().enumerate() {
            let operator = match r.operator.as_str() {
                "In" => NodeOperator::In,
                "NotIn" => NodeOperator::NotIn,
                "Exists" => NodeOperator::Exists,
                "DoesNotExist" => NodeOperator::DoesNotExist,
                "Gt" => NodeOperator::Gt,
                "Lt" => NodeOperator::Lt,
                other => {
                    return Err(error(
                        format!("{term_at}.matchExpressions[{e}].operator"),
                        format!("{other:?} is not In, NotIn, Exists, DoesNotExist, Gt or Lt"),
                    ));
                }
            };
            expressions.push(NodeRequirement {
                key: r.key.clone(),
                operator,
                values: r.values.clone().unwrap_or_default(),
            });
        }
        terms.push(NodeSelectorTerm {
            match_expressions: expressions,
        });
    }
    Ok(Some(terms))
}

fn label_selector(
    selector: &meta::LabelSelector,
    at: &str,
) -> Result<LabelSelector, TranslateError> {
    let match_expressions = selector
        .match_expressions
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, r)| {
            let operator = match r.operator.as_str() {
                "In" => SelectorOperator::In,
                "NotIn" => SelectorOperator::NotIn,
                "Exists" => SelectorOperator::Exists,
                "DoesNotExist" => SelectorOperator::DoesNotExist,
                other => {
                    return Err(error(
                        format!("{at}.matchExpressions[{i}].operator"),
                        format!("{other:?} is not In, NotIn, Exists or DoesNotExist"),
                    ));
                }
            };
            Ok(SelectorRequirement {
                key: r.key.clone(),
                operator,
                values: r.values.clone().unwrap_or_default(),
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(LabelSelector {
        match_labels: selector.match_labels.clone().unwrap_or_default(),
        match_expressions,
    })
}

/// `matchLabelKeys` / `mismatchLabelKeys`: the pod's own value of each key, ANDed into the selector.
fn add_label_keys(
    selector: &mut LabelSelector,
    keys: Option<&Vec<String>>,
    labels: &Labels,
    operator: SelectorOperator,
) {
    for key in keys.into_iter().flatten() {
        if let Some(value) = labels.get(key) {
            selector.match_expressions.push(SelectorRequirement {
                key: key.clone(),
                operator,
                values: vec![value.clone()],
            });
        }
    }
}

fn anti_affinity(
    affinity: &core::Affinity,
    at: &str,
    labels: &Labels,
    unmodelled: &mut Vec<String>,
) -> Result<Vec<AntiAffinityTerm>, TranslateError> {
    let terms = affinity.pod_anti_affinity.as_ref().and_then(|a| {
        a.required_during_scheduling_ignored_during_execution
            .as_ref()
    });
    let mut out = Vec::new();
    for (i, term) in terms.into_iter().flatten().enumerate() {
        let term_at =
            format!("{at}.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[{i}]");
        if term.topology_key != LABEL_HOSTNAME {
            unmodelled.push(format!(
                "required pod anti-affinity on {}",
                term.topology_key
            ));
            continue;
        }
        if term.namespace_selector.is_some() {
            unmodelled.push("required pod anti-affinity with a namespaceSelector".to_owned());
            continue;
        }
        // A null labelSelector matches no pod: the term constrains nothing.
        let Some(selector) = &term.label_selector else {
            continue;
        };
        let mut selector = label_selector(selector, &format!("{term_at}.labelSelector"))?;
        add_label_keys(
            &mut selector,
            term.match_label_keys.as_ref(),
            labels,
            SelectorOperator::In,
        );
        add_label_keys(
            &mut selector,
            term.mismatch_label_keys.as_ref(),
            labels,
            SelectorOperator::NotIn,
        );
        out.push(AntiAffinityTerm {
            selector,
            namespaces: term.namespaces.clone().unwrap_or_default(),
        });
    }
    Ok(out)
}

fn spreads(
    spec: &core::PodSpec,
    path: &str,
    labels: &Labels,
    unmodelled: &mut Vec<String>,
) -> Result<Vec<TopologySpread>, TranslateError> {
    let mut out = Vec::new();
    for (i, c) in spec
        .topology_spread_constraints
        .iter()
        .flatten()
        .enumerate()
    {
        let at = format!("{path}.spec.topologySpreadConstraints[{i}]");
        if c.when_unsatisfiable != "DoNotSchedule" {
            continue;
        }
        let key = match c.topology_key.as_str() {
            "topology.kubernetes.io/zone" => TopologyKey::Zone,
            LABEL_HOSTNAME => TopologyKey::Hostname,
            other => {
                unmodelled.push(format!("topology spread on {other}"));
                continue;
            }
        };
        let Some(selector) = &c.label_selector else {
            continue;
        };
        let mut selector = label_selector(selector, &format!("{at}.labelSelector"))?;
        add_label_keys(
            &mut selector,
            c.match_label_keys.as_ref(),
            labels,
            SelectorOperator::In,
        );
        let max_skew = u32::try_from(c.max_skew)
            .ok()
            .filter(|s| *s >= 1)
            .ok_or_else(|| {
                error(
                    format!("{at}.maxSkew"),
                    format!("{} is not a positive integer", c.max_skew),
                )
            })?;
        out.push(TopologySpread {
            max_skew,
            key,
            selector,
            min_domains: c.min_domains.and_then(|m| u32::try_from(m).ok()),
            honor_node_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
            honor_node_taints: c.node_taints_policy.as_deref() == Some("Honor"),
        });
    }
    Ok(out)
}

fn pdb_from(
    pdb: &PodDisruptionBudget,
    path: &str,
    pods: &[Pod],
) -> Result<Option<Pdb>, TranslateError> {
    let name = name_of(&pdb.metadata, path)?;
    let namespace = pdb
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_owned());
    let spec = pdb.spec.as_ref();
    let Some(selector) = spec.and_then(|s| s.selector.as_ref()) else {
        return Ok(None);
    };
    let selector = label_selector(selector, &format!("{path}.spec.selector"))?;
    let mut out = Pdb {
        namespace,
        name,
        selector,
        disruptions_allowed: 0,
    };
    out.disruptions_allowed = match &pdb.status {
        Some(status) => u32::try_from(status.disruptions_allowed).unwrap_or(0),
        None => {
            let expected = pods.iter().filter(|p| out.covers(p)).count() as u64;
            let scaled = |v: &IntOrString, field: &str| -> Result<u64, TranslateError> {
                match v {
                    IntOrString::Int(n) => Ok(u64::try_from(*n).unwrap_or(0)),
                    IntOrString::String(s) => s
                        .strip_suffix('%')
                        .and_then(|p| p.parse::<u64>().ok())
                        .map(|p| (expected * p).div_ceil(100))
                        .ok_or_else(|| {
                            error(
                                format!("{path}.spec.{field}"),
                                format!("{s:?} is not a count or a percentage"),
                            )
                        }),
                }
            };
            let allowed = match (
                spec.and_then(|s| s.max_unavailable.as_ref()),
                spec.and_then(|s| s.min_available.as_ref()),
            ) {
                (Some(max), _) => scaled(max, "maxUnavailable")?,
                (None, Some(min)) => expected.saturating_sub(scaled(min, "minAvailable")?),
                (None, None) => expected,
            };
            u32::try_from(allowed).unwrap_or(u32::MAX)
        }
    };
    Ok(Some(out))
}

const QUANTITY_EXPECTED: &str = r#"(expected e.g. "250m", "2", "512Mi", "1G" or "1e3")"#;

/// Parse a CPU quantity into millicores, rounding up like Kubernetes (`"250m"` -> 250, `"2"` -> 2000,
/// `"0.1"` -> 100, `"1n"` -> 1).
pub fn parse_cpu_millis(text: &str) -> Result<u64, String> {
    parse_quantity(text, 3)
}

/// Parse a memory quantity into bytes, rounding up (`"512Mi"`, `"1G"`, `"1e3"`, `"129e6"`).
pub fn parse_memory_bytes(text: &str) -> Result<u64, String> {
    parse_quantity(text, 0)
}

fn parse_count(text: &str) -> Result<u64, String> {
    parse_quantity(text, 0)
}

/// Parse a Kubernetes quantity (`<sign><digits>[.<digits>]<suffix>`, suffix a binary SI `Ki..Ei`, a
/// decimal SI `n u m k M G T P E` or an exponent `e3`/`E-2`) and return `ceil(value * 10^scale)`.
/// Negative values are rejected: requests and capacities cannot be negative.
pub fn parse_quantity(text: &str, scale: i32) -> Result<u64, String> {
    let bad = || format!("{text:?} is not a quantity {QUANTITY_EXPECTED}");
    let (negative, rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let number_len = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(number_len);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
        return Err(bad());
    }
    let digits = format!("{whole}{fraction}");
    let digits = digits.trim_start_matches('0');
    if digits.len() > 38 {
        return Err(format!("{text:?} has too many digits"));
    }
    let mantissa: u128 = if digits.is_empty() {
        0
    } else {
        digits.parse().map_err(|_| bad())?
    };
    let (exp10, exp2): (i32, u32) = match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        _ => {
            let exponent = suffix.strip_prefix(['e', 'E']).ok_or_else(bad)?;
            let valid = !exponent.is_empty()
                && exponent.trim_start_matches(['+', '-']).len() + 1 >= exponent.len()
                && exponent
                    .trim_start_matches(['+', '-'])
                    .bytes()
                    .all(|b| b.is_ascii_digit());
            let value: i32 = if valid {
                exponent.parse().map_err(|_| bad())?
            } else {
                return Err(bad());
            };
            if value.abs() > 100 {
                return Err(format!("{text:?} is out of range"));
            }
            (value, 0)
        }
    };
    if negative && mantissa != 0 {
        return Err(format!("{text:?} must not be negative"));
    }
    let too_large = || format!("{text:?} is too large");
    let mut value = mantissa.checked_mul(1u128 << exp2).ok_or_else(too_large)?;
    let exponent = exp10 + scale - fraction.len() as i32;
    if exponent >= 0 {
        for _ in 0..exponent {
            value = value.checked_mul(10).ok_or_else(too_large)?;
        }
    } else {
        let mut left = -exponent;
        while left > 0 {
            let step = left.min(38);
            value = value.div_ceil(10u128.pow(step as u32));
            left -= step;
        }
    }
    u64::try_from(value).map_err(|_| too_large())
}

/// Prices per instance type and zone, for [`apply_prices`].
pub trait PriceBook {
    /// On-demand USD per hour of `instance_type` in `region`.
    fn on_demand(&self, region: &str, instance_type: &str) -> Option<f64>;
    /// Spot USD per hour of `instance_type` in `zone` of `region`.
    fn spot(&self, region: &str, zone: &str, instance_type: &str) -> Option<f64>;
}

impl PriceBook for Catalog {
    fn on_demand(&self, region: &str, instance_type: &str) -> Option<f64> {
        self.on_demand_price(region, instance_type)
    }
    fn spot(&self, region: &str, zone: &str, instance_type: &str) -> Option<f64> {
        self.spot_price(region, zone, instance_type)
    }
}

/// Fill every node's prices from `book`: its hourly price (spot price for spot nodes), the on-demand
/// price of its type in its region, and the spot price of its type in its zone. Nodes without instance
/// type or region stay unpriced.
pub fn apply_prices(snapshot: &mut Snapshot, book: &impl PriceBook) {
    for node in &mut snapshot.nodes {
        let (Some(instance_type), Some(region)) =
            (node.instance_type.as_deref(), node.region.as_deref())
        else {
            continue;
        };
        node.on_demand_price = book.on_demand(region, instance_type);
        node.spot_price = node
            .zone
            .as_deref()
            .and_then(|zone| book.spot(region, zone, instance_type));
        node.hourly_price = match node.capacity_type {
            CapacityType::Spot => node.spot_price,
            CapacityType::OnDemand => node.on_demand_price,
        };
    }
}

#[cfg(test)]
mod tests;
