//! Plain-data cluster model: the nodes, pods and PodDisruptionBudgets the consolidation planner reasons
//! about.
//!
//! Nothing here knows Kubernetes API types: `crate::k8s` turns Nodes, Pods and
//! PodDisruptionBudgets into these values, and tests build them by hand. Nodes and pods refer to each other
//! by dense `u32` indices ([`NodeId`], [`PodId`]) so a 5,000-node / 100,000-pod cluster stays small and
//! fast to index.
//!
//! Quantities are integers: CPU in millicores, memory in bytes. Prices are USD per hour and are filled in
//! by the caller (from the catalog); the engine never looks prices up itself.

use std::collections::BTreeMap;
use std::sync::Arc;

/// Labels (or a node selector): key -> value, sorted so equal maps hash and compare equal.
pub type Labels = BTreeMap<String, String>;

/// The well-known label carrying a node's host name (the `hostname` topology domain).
pub const LABEL_HOSTNAME: &str = "kubernetes.io/hostname";
/// The well-known label carrying a node's availability zone (the `zone` topology domain).
pub const LABEL_ZONE: &str = "topology.kubernetes.io/zone";

/// Index of a node in [`Snapshot::nodes`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u32);

/// Index of a pod in [`Snapshot::pods`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodId(pub u32);

impl NodeId {
    /// The index as `usize`, for slice access.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl PodId {
    /// The index as `usize`, for slice access.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// How a node is billed: the same type the ranking uses.
pub use super::ranking::CapacityType;

/// An amount of the three resources the scheduler counts: CPU, memory and pod slots.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Resources {
    /// CPU in millicores (`1` vCPU = `1000`).
    pub cpu_millis: u64,
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// Pod slots (a pod's request is 1; a node's allocatable is its `pods` capacity).
    pub pods: u32,
}

impl Resources {
    /// A pod's request: `cpu_millis` millicores, `memory_bytes` bytes and one pod slot.
    pub fn pod(cpu_millis: u64, memory_bytes: u64) -> Self {
        Resources {
            cpu_millis,
            memory_bytes,
            pods: 1,
        }
    }

    /// Component-wise sum, saturating instead of overflowing.
    pub fn saturating_add(self, other: Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_add(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_add(other.memory_bytes),
            pods: self.pods.saturating_add(other.pods),
        }
    }

    /// True when every component of `self` is at most the same component of `limit`.
    pub fn fits_within(self, limit: Resources) -> bool {
        self.cpu_millis <= limit.cpu_millis
            && self.memory_bytes <= limit.memory_bytes
            && self.pods <= limit.pods
    }
}

/// What a taint does to pods that do not tolerate it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TaintEffect {
    /// New pods are not scheduled onto the node.
    NoSchedule,
    /// The scheduler avoids the node but may still use it (ignored by the planner).
    PreferNoSchedule,
    /// New pods are not scheduled and running ones are evicted.
    NoExecute,
}

/// A node taint.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Taint {
    /// Taint key.
    pub key: String,
    /// Taint value (may be empty).
    pub value: String,
    /// Taint effect.
    pub effect: TaintEffect,
}

impl Taint {
    /// True for the effects that keep a pod off the node (`NoSchedule`, `NoExecute`).
    pub fn repels(&self) -> bool {
        matches!(
            self.effect,
            TaintEffect::NoSchedule | TaintEffect::NoExecute
        )
    }
}

/// How a toleration compares its value with a taint's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TolerationOperator {
    /// Key and value must be equal (the Kubernetes default).
    Equal,
    /// Any value; with an empty key, any taint at all.
    Exists,
}

/// A pod toleration.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Toleration {
    /// Taint key to tolerate; empty with operator `Exists` tolerates every key.
    pub key: String,
    /// Comparison operator.
    pub operator: TolerationOperator,
    /// Value compared with operator `Equal`.
    pub value: String,
    /// Effect to tolerate; `None` tolerates every effect.
    pub effect: Option<TaintEffect>,
}

impl Toleration {
    /// Kubernetes' `ToleratesTaint`: does this toleration cover `taint`?
    pub fn tolerates(&self, taint: &Taint) -> bool {
        if self.effect.is_some_and(|effect| effect != taint.effect) {
            return false;
        }
        if self.key.is_empty() {
            return self.operator == TolerationOperator::Exists;
        }
        if self.key != taint.key {
            return false;
        }
        match self.operator {
            TolerationOperator::Exists => true,
            TolerationOperator::Equal => self.value == taint.value,
        }
    }
}

/// True when `tolerations` cover every taint in `taints` that repels pods.
pub fn tolerates_all(tolerations: &[Toleration], taints: &[Taint]) -> bool {
    taints
        .iter()
        .filter(|taint| taint.repels())
        .all(|taint| tolerations.iter().any(|t| t.tolerates(taint)))
}

/// Operator of a label-selector requirement (pod selectors, PDB selectors).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SelectorOperator {
    /// The label's value is one of `values`.
    In,
    /// The label is absent or its value is none of `values`.
    NotIn,
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

/// One requirement of a [`LabelSelector`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SelectorRequirement {
    /// Label key.
    pub key: String,
    /// Operator.
    pub operator: SelectorOperator,
    /// Values for `In` / `NotIn`.
    pub values: Vec<String>,
}

impl SelectorRequirement {
    /// Does `labels` satisfy this requirement?
    pub fn matches(&self, labels: &Labels) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            SelectorOperator::In => value.is_some_and(|v| self.values.contains(v)),
            SelectorOperator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            SelectorOperator::Exists => value.is_some(),
            SelectorOperator::DoesNotExist => value.is_none(),
        }
    }
}

/// A Kubernetes label selector. The empty selector matches every pod (a `null` selector, which matches
/// none, is dropped by the translation instead of being represented).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LabelSelector {
    /// `matchLabels`: every key must have exactly this value.
    pub match_labels: Labels,
    /// `matchExpressions`: every requirement must hold.
    pub match_expressions: Vec<SelectorRequirement>,
}

impl LabelSelector {
    /// A selector of `matchLabels` only.
    pub fn labels<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        LabelSelector {
            match_labels: pairs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            match_expressions: Vec::new(),
        }
    }

    /// Does `labels` satisfy every term of this selector?
    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| r.matches(labels))
    }
}

/// Operator of a node-selector requirement (required node affinity).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NodeOperator {
    /// The label's value is one of `values`.
    In,
    /// The label is absent or its value is none of `values`.
    NotIn,
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
    /// The label's value, as an integer, is greater than the single value.
    Gt,
    /// The label's value, as an integer, is less than the single value.
    Lt,
}

/// One requirement of a [`NodeSelectorTerm`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeRequirement {
    /// Node label key.
    pub key: String,
    /// Operator.
    pub operator: NodeOperator,
    /// Values (`In`/`NotIn`: the set; `Gt`/`Lt`: one integer).
    pub values: Vec<String>,
}

impl NodeRequirement {
    /// Does a node with `labels` satisfy this requirement?
    pub fn matches(&self, labels: &Labels) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            NodeOperator::In => value.is_some_and(|v| self.values.contains(v)),
            NodeOperator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            NodeOperator::Exists => value.is_some(),
            NodeOperator::DoesNotExist => value.is_none(),
            NodeOperator::Gt | NodeOperator::Lt => {
                let (Some(value), [bound]) = (value, self.values.as_slice()) else {
                    return false;
                };
                let (Ok(value), Ok(bound)) = (value.parse::<i64>(), bound.parse::<i64>()) else {
                    return false;
                };
                if self.operator == NodeOperator::Gt {
                    value > bound
                } else {
                    value < bound
                }
            }
        }
    }
}

/// A term of required node affinity: all requirements must hold. A term without requirements matches no
/// node (Kubernetes semantics).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeSelectorTerm {
    /// `matchExpressions`.
    pub match_expressions: Vec<NodeRequirement>,
}

impl NodeSelectorTerm {
    /// Does a node with `labels` satisfy this term?
    pub fn matches(&self, labels: &Labels) -> bool {
        !self.match_expressions.is_empty()
            && self.match_expressions.iter().all(|r| r.matches(labels))
    }
}

/// Who created a pod; decides whether it may be moved and whether it blocks its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OwnerKind {
    /// A ReplicaSet (pods of a Deployment).
    ReplicaSet,
    /// A StatefulSet.
    StatefulSet,
    /// A DaemonSet: never moved, never a blocker (it runs on every node anyway).
    DaemonSet,
    /// A Job (or a CronJob's Job).
    Job,
    /// Another controller (ReplicationController, a custom resource...): it recreates the pod.
    Other,
    /// No controller: an evicted pod would not come back, so it pins its node.
    None,
    /// A static (mirror) pod managed by the kubelet: ignored entirely.
    Static,
}

/// The topology domains the planner models for pod spreading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TopologyKey {
    /// `topology.kubernetes.io/zone`.
    Zone,
    /// `kubernetes.io/hostname`: every node is its own domain.
    Hostname,
}

impl TopologyKey {
    /// The label key.
    pub fn label(self) -> &'static str {
        match self {
            TopologyKey::Zone => LABEL_ZONE,
            TopologyKey::Hostname => LABEL_HOSTNAME,
        }
    }
}

/// A topology spread constraint with `whenUnsatisfiable: DoNotSchedule` (the only kind that can refuse a
/// placement; `ScheduleAnyway` is dropped by the translation).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TopologySpread {
    /// `maxSkew` (>= 1).
    pub max_skew: u32,
    /// `topologyKey`.
    pub key: TopologyKey,
    /// Which pods (in the pod's namespace) are counted; `matchLabelKeys` are already folded in.
    pub selector: LabelSelector,
    /// `minDomains`: with fewer eligible domains the global minimum counts as 0.
    pub min_domains: Option<u32>,
    /// `nodeAffinityPolicy: Honor` (the default): only nodes matching the pod's node selector and
    /// required node affinity are domains.
    pub honor_node_affinity: bool,
    /// `nodeTaintsPolicy: Honor` (default `Ignore`): only nodes whose taints the pod tolerates are domains.
    pub honor_node_taints: bool,
}

/// A required pod anti-affinity term with `topologyKey: kubernetes.io/hostname`: no pod matching
/// `selector` in `namespaces` may run on the same node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AntiAffinityTerm {
    /// Pods the term repels.
    pub selector: LabelSelector,
    /// Namespaces where `selector` applies; empty means the pod's own namespace.
    pub namespaces: Vec<String>,
}

/// A required inter-pod affinity or anti-affinity term on any node label as topology key (zone,
/// hostname, rack...): the node's value of `topology_key` names its domain. Affinity: the pod may only
/// run in a domain that runs a pod matching `selector` in `namespaces`; anti-affinity: only in a domain
/// that runs none. A node without the label is in no domain.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PodAffinityTerm {
    /// The node label whose values are the domains.
    pub topology_key: String,
    /// Pods the term selects (`matchLabelKeys` / `mismatchLabelKeys` already folded in).
    pub selector: LabelSelector,
    /// Namespaces where `selector` applies; empty means the pod's own namespace.
    pub namespaces: Vec<String>,
}

/// A node of the cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Node name (also its hostname domain).
    pub name: String,
    /// EC2 instance type, from `node.kubernetes.io/instance-type`.
    pub instance_type: Option<String>,
    /// Availability zone, from `topology.kubernetes.io/zone`.
    pub zone: Option<String>,
    /// Region, from `topology.kubernetes.io/region` or derived from the zone.
    pub region: Option<String>,
    /// Spot or on-demand.
    pub capacity_type: CapacityType,
    /// What pods may request in total (`status.allocatable`).
    pub allocatable: Resources,
    /// Node labels.
    pub labels: Labels,
    /// Node taints.
    pub taints: Vec<Taint>,
    /// What the node costs per hour (spot price for spot nodes), filled by the caller from the catalog.
    pub hourly_price: Option<f64>,
    /// What the same instance type costs on demand in this region, for "savings vs on-demand".
    pub on_demand_price: Option<f64>,
    /// What the same instance type costs as spot in this zone, for the spot-mix estimate.
    pub spot_price: Option<f64>,
    /// Cordoned (`spec.unschedulable`): never a destination and never removed by the planner.
    pub unschedulable: bool,
    /// Annotated `cloudoptim.io/do-not-disrupt: "true"`: never removed.
    pub do_not_disrupt: bool,
}

impl Node {
    /// A node with the given name and allocatable resources, on-demand, without labels, taints or price.
    pub fn new(name: impl Into<String>, allocatable: Resources) -> Self {
        let name = name.into();
        let mut labels = Labels::new();
        labels.insert(LABEL_HOSTNAME.to_owned(), name.clone());
        Node {
            name,
            instance_type: None,
            zone: None,
            region: None,
            capacity_type: CapacityType::OnDemand,
            allocatable,
            labels,
            taints: Vec::new(),
            hourly_price: None,
            on_demand_price: None,
            spot_price: None,
            unschedulable: false,
            do_not_disrupt: false,
        }
    }
}

/// A pod bound to a node (pending and finished pods are not part of a snapshot).
#[derive(Debug, Clone, PartialEq)]
pub struct Pod {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The node it runs on.
    pub node: NodeId,
    /// Effective requests (containers, init containers, sidecars and overhead combined); `pods` is 1.
    pub requests: Resources,
    /// Controller kind.
    pub owner: OwnerKind,
    /// Pod labels (shared: pods of one ReplicaSet carry the same map, so caches keep one copy).
    pub labels: Arc<Labels>,
    /// `spec.nodeSelector`.
    pub node_selector: Labels,
    /// Required node affinity: the node must match at least one term. `None` = no requirement.
    pub node_affinity: Option<Vec<NodeSelectorTerm>>,
    /// Tolerations (shared like the labels: most pods carry the same two defaults).
    pub tolerations: Arc<Vec<Toleration>>,
    /// Required pod anti-affinity terms on `kubernetes.io/hostname`.
    pub anti_affinity: Vec<AntiAffinityTerm>,
    /// Required pod affinity terms, on any topology key. kube-scheduler's rule: a node qualifies when,
    /// for every term, its domain runs a pod that matches all the terms; when no pod in the cluster
    /// matches them all, a pod matching its own terms may go to any node that has every key.
    pub pod_affinity: Vec<PodAffinityTerm>,
    /// Required pod anti-affinity terms on topology keys other than `kubernetes.io/hostname` (those
    /// are in `anti_affinity`).
    pub topology_anti_affinity: Vec<PodAffinityTerm>,
    /// Topology spread constraints with `whenUnsatisfiable: DoNotSchedule` on zone or hostname.
    pub topology_spread: Vec<TopologySpread>,
    /// Annotated `cloudoptim.io/do-not-disrupt: "true"`: its node is never removed.
    pub do_not_disrupt: bool,
    /// Constraints the planner does not model, each a short phrase ("hostPath volume logs"); any entry
    /// pins the pod's node.
    pub unmodelled: Vec<String>,
}

impl Pod {
    /// A ReplicaSet-owned pod on `node` with the given requests and nothing else.
    pub fn new(namespace: &str, name: &str, node: NodeId, requests: Resources) -> Self {
        Pod {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            node,
            requests,
            owner: OwnerKind::ReplicaSet,
            labels: Arc::default(),
            node_selector: Labels::new(),
            node_affinity: None,
            tolerations: Arc::default(),
            anti_affinity: Vec::new(),
            pod_affinity: Vec::new(),
            topology_anti_affinity: Vec::new(),
            topology_spread: Vec::new(),
            do_not_disrupt: false,
            unmodelled: Vec::new(),
        }
    }

    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Does a node with these labels and taints satisfy the pod's node selector, required node affinity
    /// and tolerations? (Capacity, cordons and pod-to-pod constraints are checked elsewhere.)
    pub fn accepts_node(&self, labels: &Labels, taints: &[Taint]) -> bool {
        self.matches_node_labels(labels) && tolerates_all(&self.tolerations, taints)
    }

    /// Node selector and required node affinity only.
    pub fn matches_node_labels(&self, labels: &Labels) -> bool {
        self.node_selector
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self
                .node_affinity
                .as_ref()
                .is_none_or(|terms| terms.iter().any(|term| term.matches(labels)))
    }
}

/// A PodDisruptionBudget.
#[derive(Debug, Clone, PartialEq)]
pub struct Pdb {
    /// Namespace (it only selects pods of its namespace).
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Which pods it protects.
    pub selector: LabelSelector,
    /// How many of its pods may be evicted now (`status.disruptionsAllowed`).
    pub disruptions_allowed: u32,
}

impl Pdb {
    /// Does this budget cover `pod`?
    pub fn covers(&self, pod: &Pod) -> bool {
        self.namespace == pod.namespace && self.selector.matches(&pod.labels)
    }

    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// A whole cluster at one instant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Nodes; [`NodeId`] indexes this vector.
    pub nodes: Vec<Node>,
    /// Pods bound to nodes; [`PodId`] indexes this vector.
    pub pods: Vec<Pod>,
    /// PodDisruptionBudgets.
    pub pdbs: Vec<Pdb>,
}

/// A snapshot whose references do not hold together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// A pod names a node index that does not exist.
    #[error("pod {pod} refers to node index {node}, but the snapshot has {nodes} nodes")]
    UnknownNode {
        /// `namespace/name` of the pod.
        pod: String,
        /// The bad index.
        node: u32,
        /// Number of nodes.
        nodes: usize,
    },
    /// More nodes or pods than a `u32` index can address.
    #[error("snapshot too large: {0} objects (at most {max})", max = u32::MAX)]
    TooLarge(usize),
}

impl Snapshot {
    /// Check that every pod refers to an existing node and ids fit in `u32`.
    pub fn validate(&self) -> Result<(), SnapshotError> {
        for len in [self.nodes.len(), self.pods.len()] {
            if u32::try_from(len).is_err() {
                return Err(SnapshotError::TooLarge(len));
            }
        }
        match self
            .pods
            .iter()
            .find(|pod| pod.node.index() >= self.nodes.len())
        {
            Some(pod) => Err(SnapshotError::UnknownNode {
                pod: pod.key(),
                node: pod.node.0,
                nodes: self.nodes.len(),
            }),
            None => Ok(()),
        }
    }

    /// The node called `name`, if any (linear search; for tests and small tools).
    pub fn node_named(&self, name: &str) -> Option<NodeId> {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .and_then(|i| u32::try_from(i).ok())
            .map(NodeId)
    }

    /// The pod `namespace/name`, if any (linear search; for tests and small tools).
    pub fn pod_named(&self, namespace: &str, name: &str) -> Option<PodId> {
        self.pods
            .iter()
            .position(|p| p.namespace == namespace && p.name == name)
            .and_then(|i| u32::try_from(i).ok())
            .map(PodId)
    }

    /// Sum of every pod's requests per node, indexed by [`NodeId`].
    pub fn requested_per_node(&self) -> Vec<Resources> {
        let mut used = vec![Resources::default(); self.nodes.len()];
        for pod in &self.pods {
            if let Some(slot) = used.get_mut(pod.node.index()) {
                *slot = slot.saturating_add(pod.requests);
            }
        }
        used
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn taint(key: &str, value: &str, effect: TaintEffect) -> Taint {
        Taint {
            key: key.into(),
            value: value.into(),
            effect,
        }
    }

    fn toleration(
        key: &str,
        op: TolerationOperator,
        value: &str,
        effect: Option<TaintEffect>,
    ) -> Toleration {
        Toleration {
            key: key.into(),
            operator: op,
            value: value.into(),
            effect,
        }
    }

    #[test]
    fn toleration_with_empty_key_and_exists_tolerates_everything() {
        let t = toleration("", TolerationOperator::Exists, "", None);
        assert!(t.tolerates(&taint("gpu", "true", TaintEffect::NoSchedule)));
        assert!(t.tolerates(&taint("x", "", TaintEffect::NoExecute)));
    }

    #[test]
    fn toleration_with_empty_key_and_equal_tolerates_nothing() {
        let t = toleration("", TolerationOperator::Equal, "", None);
        assert!(!t.tolerates(&taint("gpu", "", TaintEffect::NoSchedule)));
    }

    #[test]
    fn toleration_equal_needs_same_value_and_effect() {
        let t = toleration(
            "gpu",
            TolerationOperator::Equal,
            "true",
            Some(TaintEffect::NoSchedule),
        );
        assert!(t.tolerates(&taint("gpu", "true", TaintEffect::NoSchedule)));
        assert!(!t.tolerates(&taint("gpu", "false", TaintEffect::NoSchedule)));
        assert!(!t.tolerates(&taint("gpu", "true", TaintEffect::NoExecute)));
    }

    #[test]
    fn prefer_no_schedule_taints_do_not_repel() {
        let taints = [taint("soft", "", TaintEffect::PreferNoSchedule)];
        assert!(tolerates_all(&[], &taints));
        let hard = [taint("hard", "", TaintEffect::NoExecute)];
        assert!(!tolerates_all(&[], &hard));
    }

    #[test]
    fn label_selector_operators_follow_kubernetes() {
        let l = labels(&[("app", "web"), ("tier", "front")]);
        let req = |key: &str, operator, values: &[&str]| SelectorRequirement {
            key: key.into(),
            operator,
            values: values.iter().map(|v| v.to_string()).collect(),
        };
        assert!(req("app", SelectorOperator::In, &["web", "api"]).matches(&l));
        assert!(!req("app", SelectorOperator::NotIn, &["web"]).matches(&l));
        assert!(req("missing", SelectorOperator::NotIn, &["web"]).matches(&l));
        assert!(req("tier", SelectorOperator::Exists, &[]).matches(&l));
        assert!(req("missing", SelectorOperator::DoesNotExist, &[]).matches(&l));
        assert!(
            LabelSelector::default().matches(&l),
            "empty selector matches everything"
        );
        assert!(!LabelSelector::labels([("app", "api")]).matches(&l));
    }

    #[test]
    fn node_requirement_gt_lt_compare_integers_and_fail_on_absent_labels() {
        let l = labels(&[("cpu-count", "8")]);
        let req = |operator, value: &str| NodeRequirement {
            key: "cpu-count".into(),
            operator,
            values: vec![value.into()],
        };
        assert!(req(NodeOperator::Gt, "4").matches(&l));
        assert!(!req(NodeOperator::Gt, "8").matches(&l));
        assert!(req(NodeOperator::Lt, "16").matches(&l));
        assert!(!req(NodeOperator::Lt, "abc").matches(&l));
        assert!(!req(NodeOperator::Gt, "1").matches(&Labels::new()));
    }

    #[test]
    fn node_selector_term_without_expressions_matches_nothing() {
        assert!(!NodeSelectorTerm::default().matches(&labels(&[("a", "b")])));
    }

    #[test]
    fn pod_accepts_node_checks_selector_affinity_and_taints() {
        let mut pod = Pod::new("ns", "p", NodeId(0), Resources::pod(100, 100));
        pod.node_selector = labels(&[("arch", "arm64")]);
        pod.node_affinity = Some(vec![NodeSelectorTerm {
            match_expressions: vec![NodeRequirement {
                key: "zone".into(),
                operator: NodeOperator::In,
                values: vec!["a".into(), "b".into()],
            }],
        }]);
        let good = labels(&[("arch", "arm64"), ("zone", "b")]);
        assert!(pod.accepts_node(&good, &[]));
        assert!(!pod.accepts_node(&labels(&[("arch", "arm64"), ("zone", "c")]), &[]));
        assert!(!pod.accepts_node(&labels(&[("arch", "amd64"), ("zone", "a")]), &[]));
        assert!(!pod.accepts_node(&good, &[taint("dedicated", "db", TaintEffect::NoSchedule)]));
    }

    #[test]
    fn validate_rejects_pods_on_unknown_nodes() {
        let snapshot = Snapshot {
            nodes: vec![Node::new("n0", Resources::default())],
            pods: vec![Pod::new("ns", "p", NodeId(3), Resources::pod(1, 1))],
            pdbs: vec![],
        };
        assert!(matches!(
            snapshot.validate(),
            Err(SnapshotError::UnknownNode { node: 3, .. })
        ));
    }
}
