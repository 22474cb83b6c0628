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
    NodeOperator, NodeRequirement, NodeSelectorTerm, OwnerKind, Pdb, Pod, PodAffinityTerm,
    Resources, SelectorOperator, SelectorRequirement, Snapshot, Taint, TaintEffect, Toleration,
    TolerationOperator, TopologyKey, TopologySpread,
};

mod constraints;
mod node;
mod pdb;
mod pod;
mod prices;
mod quantity;
mod rightsizing;
mod snapshot;
mod usage;

use constraints::*;
pub use node::*;
use pdb::*;
pub use pod::*;
pub use prices::*;
pub use quantity::*;
pub use rightsizing::*;
pub use snapshot::*;
pub use usage::{Rightsized, recommendations, resized};

/// Annotation (on nodes and pods) that keeps CloudOptim from disrupting them.
pub use crate::names::DO_NOT_DISRUPT;

/// Annotation the kubelet puts on the API copy (mirror pod) of a static pod.
pub const MIRROR: &str = "kubernetes.io/config.mirror";

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

pub(super) fn name_of(metadata: &meta::ObjectMeta, path: &str) -> Result<String, TranslateError> {
    match metadata.name.as_deref() {
        Some(name) if !name.is_empty() => Ok(name.to_owned()),
        _ => Err(error(format!("{path}.metadata.name"), "missing")),
    }
}

pub(super) fn label_path(path: &str, key: &str) -> String {
    format!("{path}.metadata.labels[{key:?}]")
}

#[cfg(test)]
mod tests;
