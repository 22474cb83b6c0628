//! Consolidation planner: which nodes can go, where their pods land, what that saves, and why every other
//! node stays (DESIGN.md section 4).
//!
//! # Algorithm
//! 1. **Classify** every node. A node is *kept* outright when it is annotated do-not-disrupt, cordoned, or
//!    runs a pod that blocks it: a do-not-disrupt pod, a pod with a constraint the planner does not model
//!    (pod affinity with a namespaceSelector, spreads on other topology keys, host-bound storage... see
//!    [`Pod::unmodelled`]), a pod
//!    without a controller, a pod in an excluded namespace, a pod covered by two PDBs (the Eviction API
//!    refuses those) or by a PDB that allows no disruption. DaemonSet and static (mirror) pods never move
//!    and never block. In `WhenEmpty` mode only nodes without movable pods are candidates; in
//!    `WhenUnderutilized` mode also nodes whose utilization (the larger of requested CPU and memory over
//!    allocatable, all pods counted) is at most the threshold.
//! 2. **Order** candidates cheapest-to-empty first: empty nodes, then by utilization ascending, then by
//!    price descending (of two equally easy nodes, removing the dearer saves more), then by name.
//!    Destinations are tried in a fixed order: non-candidates, fullest first, then candidates, fullest
//!    first; so pods pile onto nodes that stay anyway and the emptiest nodes drain.
//! 3. **Simulate** each candidate in turn: it leaves the cluster (with its DaemonSet pods) and its movable
//!    pods are placed one by one, largest first, each on the first destination that accepts it (first-fit
//!    decreasing). A destination accepts a pod when its requests fit what is left of allocatable (after the
//!    aggressiveness headroom, below), it is not cordoned, the pod's node selector, required node affinity
//!    and tolerations match it, no required pod anti-affinity on any topology key (the pod's, or a placed
//!    pod's) is violated, its required pod affinity holds (every term's domain runs a pod matching all its
//!    terms; kube-scheduler's exception for the first pod of a self-attracting group included; see
//!    `affinity.rs`), and every `DoNotSchedule` topology spread constraint on zone or hostname holds, computed
//!    like kube-scheduler (eligible domains by node-affinity/taint policies, `minDomains`, skew counted on
//!    the cluster as it is at that moment). If every pod lands the removal is committed; otherwise it is
//!    rolled back and the node is kept with the pod that did not fit. A node that received pods is kept
//!    as a destination (it is never drained after being filled).
//! 4. **Limits**: PDB allowances are consumed across the whole plan (conservative: an allowance grows back
//!    only when replacements are Ready, which an offline plan cannot see); `nodes.min` stops removals;
//!    a budget of 0 stops them all. Otherwise the budget is the batch size: the plan is the end state and
//!    `batches` says how it is executed.
//!
//! Placement lookups use segment trees over the destination order, one per distinct set of node classes
//! a pod may use (node classes intern the labels pods select on, the repelling taints and the cordon), so
//! "first destination with this much free CPU and memory" is logarithmic, and spread counts are kept
//! incrementally per (namespace, selector). The same driver with linear scans is [`plan_naive`], the
//! benchmark baseline and the property tests' oracle.
//!
//! Replacement (k kept nodes replaced by one cheaper new node) is a second pass over the plan:
//! [`plan_replacements`]; it checks the moved pods' inter-pod terms against the new node's domains
//! with the same rules (`replace.rs`).
//!
//! # Not modelled
//! Preferred affinities and
//! `ScheduleAnyway` spreads are ignored (safe); pod priorities and preemption; volume topology (pods with
//! persistent volumes pin their node through [`Pod::unmodelled`]); the final skew of spreads after later
//! moves (kube-scheduler only checks at placement too); kube-scheduler may choose other destinations than
//! the plan, the plan shows that a valid one exists.
//!
//! # Aggressiveness
//! `aggressiveness` (0-100) sets how full a destination may become: its CPU and memory requests may reach
//! `80% + 20% x aggressiveness / 100` of allocatable (88% at the default 40, 100% at 100). Nodes already
//! fuller than that receive nothing; nothing is ever placed beyond allocatable.

mod affinity;
mod context;
mod indexed;
mod naive;
#[doc(hidden)]
pub mod packer;
mod replace;
#[doc(hidden)]
pub mod scenario;
mod tree;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use std::fmt;

use crate::engine::budgets::BudgetNodes;
use crate::engine::snapshot::{NodeId, Pod, PodId, Snapshot, SnapshotError};

use context::Context;
pub use replace::{
    NEW_NODE_PODS, Offer, ReplaceOptions, ReplaceReason, Replacement, kubelet_allocatable, offers,
    plan_replacements,
};

/// When the planner may remove nodes (`spec.consolidation.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Never.
    Off,
    /// Only nodes that run nothing but DaemonSet and static pods.
    WhenEmpty,
    /// Empty nodes and nodes at or below the utilization threshold whose pods fit elsewhere.
    #[default]
    WhenUnderutilized,
}

/// Planner settings, resolved from an OptimizationPolicy (defaults per DESIGN.md 3.2).
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Consolidation mode.
    pub mode: Mode,
    /// Nodes with utilization at or below this (0..1) are candidates in `WhenUnderutilized` mode.
    pub utilization_threshold: f64,
    /// 0-100: how full destinations may become (see the module docs).
    pub aggressiveness: u8,
    /// `nodes.min`: never plan below this many nodes.
    pub min_nodes: usize,
    /// Pods in these namespaces are not evicted, so their nodes are kept (DaemonSet and static pods
    /// excepted).
    pub excluded_namespaces: Vec<String>,
    /// Nodes disrupted at once (the batch size), already resolved from the budgets
    /// ([`crate::engine::budgets`]); 0 stops all removals. `None` = the default budget, 10% of the
    /// snapshot's nodes rounded up.
    pub budget: Option<usize>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            mode: Mode::WhenUnderutilized,
            utilization_threshold: 0.5,
            aggressiveness: 40,
            min_nodes: 0,
            excluded_namespaces: ["kube-system", "kube-public", "kube-node-lease"]
                .map(String::from)
                .to_vec(),
            budget: None,
        }
    }
}

impl Options {
    /// The fraction of allocatable CPU and memory a destination may be filled to.
    pub fn max_fill(&self) -> f64 {
        0.8 + 0.2 * f64::from(self.aggressiveness.min(100)) / 100.0
    }

    /// The batch size for a snapshot of `nodes` nodes.
    pub fn batch_size(&self, nodes: usize) -> usize {
        self.budget
            .unwrap_or_else(|| BudgetNodes::Percent(10).resolve(nodes))
    }
}

/// The planner's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Nodes to remove, in the order they were planned.
    pub removals: Vec<Removal>,
    /// Every pod that moves, grouped by removed node in removal order.
    pub moves: Vec<Move>,
    /// Every node that stays, in node order, with the reason.
    pub kept: Vec<Kept>,
    /// `removals` in batches of the budget size, in order.
    pub batches: Vec<Vec<NodeId>>,
    /// Sum of the removed nodes' hourly prices (unpriced nodes count 0).
    pub savings_hourly: f64,
    /// The batch size used.
    pub budget: usize,
}

/// A node the plan removes.
#[derive(Debug, Clone, PartialEq)]
pub struct Removal {
    /// The node.
    pub node: NodeId,
    /// Its utilization before the plan (0..1).
    pub utilization: f64,
    /// How many of its pods move (0 for an empty node).
    pub pods_moved: usize,
}

impl Removal {
    /// Why the node can go, for people: "empty" or "utilization 0.21, 7 pods fit elsewhere".
    pub fn describe(&self) -> String {
        if self.pods_moved == 0 {
            "empty (only DaemonSet or static pods)".to_owned()
        } else {
            let pods = match self.pods_moved {
                1 => "its pod fits".to_owned(),
                n => format!("its {n} pods fit"),
            };
            format!("utilization {:.2}, {pods} elsewhere", self.utilization)
        }
    }
}

/// One pod's move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Move {
    /// The pod.
    pub pod: PodId,
    /// The node it leaves (removed by the plan).
    pub from: NodeId,
    /// The node it lands on (kept).
    pub to: NodeId,
}

/// A node the plan keeps.
#[derive(Debug, Clone, PartialEq)]
pub struct Kept {
    /// The node.
    pub node: NodeId,
    /// Why.
    pub reason: KeepReason,
}

/// Why a pod could not be placed on any other node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoRoom {
    /// No other live node matches its node selector, required node affinity and tolerations.
    NoMatchingNode,
    /// Matching nodes exist, but none has enough free CPU, memory or pod slots.
    Capacity,
    /// Nodes with room exist, but each would violate a zone topology spread constraint.
    ZoneSpread,
    /// Nodes with room exist, but each would violate a hostname topology spread constraint.
    HostnameSpread,
    /// Nodes with room exist, but each would violate required pod anti-affinity (the pod's or a
    /// resident's).
    AntiAffinity,
    /// Nodes with room exist, but none is in a domain that runs the pods its required pod affinity
    /// selects.
    PodAffinity,
}

/// Why a node is kept.
#[derive(Debug, Clone, PartialEq)]
pub enum KeepReason {
    /// Consolidation mode is Off.
    ModeOff,
    /// The node is annotated do-not-disrupt.
    NodeDoNotDisrupt,
    /// The node is cordoned.
    Cordoned,
    /// It runs a do-not-disrupt pod.
    PodDoNotDisrupt(PodId),
    /// It runs a pod with a constraint the planner does not model.
    Unmodelled {
        /// The pod.
        pod: PodId,
        /// The constraint, e.g. "hostPath volume logs".
        what: String,
    },
    /// It runs a pod without a controller.
    NoController(PodId),
    /// It runs a pod in an excluded namespace.
    ExcludedNamespace(PodId),
    /// It runs a pod covered by more than one PDB.
    MultiplePdbs(PodId),
    /// It runs a DaemonSet pod whose PDB allows no disruption (removing the node would kill it).
    DaemonSetPdb {
        /// The DaemonSet pod.
        pod: PodId,
        /// Index into [`Snapshot::pdbs`].
        pdb: usize,
    },
    /// Moving its pods would exceed a PDB's allowance.
    Pdb {
        /// Index into [`Snapshot::pdbs`].
        pdb: usize,
        /// The PDB's allowed disruptions.
        allowed: u32,
        /// Disruptions of this PDB already used by earlier removals in the plan.
        used: u32,
    },
    /// Utilization above the threshold.
    AboveThreshold {
        /// The node's utilization.
        utilization: f64,
        /// The threshold.
        threshold: f64,
    },
    /// Mode `WhenEmpty` and the node has movable pods.
    NotEmpty {
        /// Movable pods on it.
        pods: usize,
    },
    /// It receives pods from removed nodes.
    Destination {
        /// How many.
        pods: usize,
    },
    /// Removing it would go below `nodes.min`.
    NodesMin(usize),
    /// The disruption budget allows no node now.
    BudgetZero,
    /// One of its pods fits nowhere else.
    NoRoom {
        /// The pod.
        pod: PodId,
        /// Why.
        why: NoRoom,
    },
}

/// `1 pod`, `2 pods`.
fn count(n: impl Into<u64>, noun: &str) -> String {
    match n.into() {
        1 => format!("1 {noun}"),
        n => format!("{n} {noun}s"),
    }
}

impl KeepReason {
    /// True for reasons that hold the node in place whatever the plan does (protection, pinned pods,
    /// PDBs, cordon, mode Off): such a node can be neither removed nor replaced.
    pub fn pins_node(&self) -> bool {
        !matches!(
            self,
            KeepReason::AboveThreshold { .. }
                | KeepReason::NotEmpty { .. }
                | KeepReason::Destination { .. }
                | KeepReason::NodesMin(_)
                | KeepReason::BudgetZero
                | KeepReason::NoRoom { .. }
        )
    }

    /// The reason as a sentence fragment, with pod and PDB names from `snapshot`.
    pub fn describe(&self, snapshot: &Snapshot) -> String {
        let pod = |id: &PodId| {
            snapshot
                .pods
                .get(id.index())
                .map_or_else(|| format!("#{}", id.0), Pod::key)
        };
        match self {
            KeepReason::ModeOff => "consolidation mode is Off".to_owned(),
            KeepReason::NodeDoNotDisrupt => "node annotated do-not-disrupt".to_owned(),
            KeepReason::Cordoned => {
                "cordoned (unschedulable); left to whoever cordoned it".to_owned()
            }
            KeepReason::PodDoNotDisrupt(p) => format!("do-not-disrupt pod {}", pod(p)),
            KeepReason::Unmodelled { pod: p, what } => {
                format!("pinned: pod {} has {what} (not modelled)", pod(p))
            }
            KeepReason::NoController(p) => {
                format!(
                    "pinned: pod {} has no controller (an evicted pod would not come back)",
                    pod(p)
                )
            }
            KeepReason::ExcludedNamespace(p) => {
                let namespace = snapshot
                    .pods
                    .get(p.index())
                    .map_or("?", |x| x.namespace.as_str());
                format!("pod {} is in excluded namespace {namespace}", pod(p))
            }
            KeepReason::MultiplePdbs(p) => {
                format!(
                    "pod {} is covered by more than one PDB (the Eviction API refuses it)",
                    pod(p)
                )
            }
            KeepReason::DaemonSetPdb { pod: p, pdb } => {
                let name = snapshot
                    .pdbs
                    .get(*pdb)
                    .map_or_else(|| format!("#{pdb}"), |p| p.key());
                format!(
                    "pinned: DaemonSet pod {} is covered by PDB {name}, which allows 0 disruptions \
                     (removing the node would kill it without asking the PDB)",
                    pod(p)
                )
            }
            KeepReason::Pdb { pdb, allowed, used } => {
                let name = snapshot
                    .pdbs
                    .get(*pdb)
                    .map_or_else(|| format!("#{pdb}"), |p| p.key());
                let allows = count(*allowed, "disruption");
                if *used == 0 {
                    format!("PDB {name} allows {allows}")
                } else {
                    format!("PDB {name} allows {allows}, {used} already used by this plan")
                }
            }
            KeepReason::AboveThreshold {
                utilization,
                threshold,
            } => {
                format!("utilization {utilization:.2} above threshold {threshold:.2}")
            }
            KeepReason::NotEmpty { pods } => {
                format!(
                    "not empty ({}; mode WhenEmpty)",
                    count(*pods as u64, "movable pod")
                )
            }
            KeepReason::Destination { pods } => {
                format!("receives {} from removed nodes", count(*pods as u64, "pod"))
            }
            KeepReason::NodesMin(min) => format!("nodes.min {min} reached"),
            KeepReason::BudgetZero => {
                "budget exhausted: the disruption budget allows 0 nodes now".to_owned()
            }
            KeepReason::NoRoom { pod: p, why } => {
                let p = pod(p);
                match why {
                    NoRoom::NoMatchingNode => {
                        format!("no other node accepts pod {p} (node selector, affinity or taints)")
                    }
                    NoRoom::Capacity => format!("no room for pod {p} elsewhere"),
                    NoRoom::ZoneSpread => {
                        format!("no room for pod {p} elsewhere without breaking its zone spread")
                    }
                    NoRoom::HostnameSpread => {
                        format!(
                            "no room for pod {p} elsewhere without breaking its hostname spread"
                        )
                    }
                    NoRoom::AntiAffinity => {
                        format!("no room for pod {p} elsewhere without breaking pod anti-affinity")
                    }
                    NoRoom::PodAffinity => {
                        format!(
                            "no room for pod {p} elsewhere next to the pods its pod affinity requires"
                        )
                    }
                }
            }
        }
    }
}

/// The planner could not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The snapshot's references do not hold together.
    #[error("invalid snapshot: {0}")]
    Snapshot(#[from] SnapshotError),
}

/// Plan consolidation of `snapshot` under `options` with the indexed planner.
pub fn plan(snapshot: &Snapshot, options: &Options) -> Result<Plan, PlanError> {
    snapshot.validate()?;
    let context = Context::new(snapshot, options);
    let placer = indexed::IndexedPlacer::new(&context);
    Ok(drive(&context, options, placer))
}

/// The same plan computed with linear scans and no incremental state: the benchmark baseline and the
/// test oracle. Quadratic; use on small snapshots.
#[doc(hidden)]
pub fn plan_naive(snapshot: &Snapshot, options: &Options) -> Result<Plan, PlanError> {
    snapshot.validate()?;
    let context = Context::new(snapshot, options);
    let placer = naive::NaivePlacer::new(&context);
    Ok(drive(&context, options, placer))
}

/// What both placers implement: a transactional "what if this node left" simulation.
trait Placer {
    /// `candidate` and its pods leave the cluster (tentatively).
    fn begin(&mut self, candidate: NodeId);
    /// The first destination in order that accepts `pod` now.
    fn find(&mut self, pod: PodId) -> Result<NodeId, NoRoom>;
    /// Put `pod` on `to` (tentatively).
    fn place(&mut self, pod: PodId, to: NodeId);
    /// Make the candidate's removal and the placements since `begin` final.
    fn commit(&mut self);
    /// Undo everything since `begin`.
    fn rollback(&mut self);
}

/// The candidate loop shared by both placers.
fn drive(context: &Context<'_>, options: &Options, mut placer: impl Placer) -> Plan {
    let snapshot = context.snapshot;
    let nodes = snapshot.nodes.len();
    let budget = options.batch_size(nodes);
    let mut kept: Vec<Option<KeepReason>> = context.static_reasons.clone();
    let mut received = vec![0usize; nodes];
    let mut pdb_used = vec![0u32; snapshot.pdbs.len()];
    let mut removals = Vec::new();
    let mut moves = Vec::new();
    let mut remaining = nodes;

    for &candidate in &context.candidates {
        let index = candidate.index();
        if budget == 0 {
            kept[index] = Some(KeepReason::BudgetZero);
            continue;
        }
        if remaining <= options.min_nodes {
            kept[index] = Some(KeepReason::NodesMin(options.min_nodes));
            continue;
        }
        if received[index] > 0 {
            kept[index] = Some(KeepReason::Destination {
                pods: received[index],
            });
            continue;
        }
        let pods = context.movable_pods(candidate);
        if let Some(reason) = pdb_shortfall(context, pods, &pdb_used) {
            kept[index] = Some(reason);
            continue;
        }
        placer.begin(candidate);
        let mut planned = Vec::with_capacity(pods.len());
        let mut failure = None;
        for &pod in pods {
            match placer.find(pod) {
                Ok(to) => {
                    placer.place(pod, to);
                    planned.push(Move {
                        pod,
                        from: candidate,
                        to,
                    });
                }
                Err(why) => {
                    failure = Some(KeepReason::NoRoom { pod, why });
                    break;
                }
            }
        }
        if let Some(reason) = failure {
            placer.rollback();
            kept[index] = Some(reason);
            continue;
        }
        placer.commit();
        for m in &planned {
            received[m.to.index()] += 1;
            for &pdb in context.pod_pdbs(m.pod) {
                pdb_used[pdb as usize] += 1;
            }
        }
        remaining -= 1;
        removals.push(Removal {
            node: candidate,
            utilization: context.utilization[index],
            pods_moved: planned.len(),
        });
        moves.extend(planned);
    }

    let removed: Vec<bool> = {
        let mut removed = vec![false; nodes];
        for r in &removals {
            removed[r.node.index()] = true;
        }
        removed
    };
    let kept = (0..nodes)
        .filter(|&i| !removed[i])
        .map(|i| Kept {
            node: NodeId(i as u32),
            // A candidate that received pods after it was evaluated is still a destination.
            reason: match kept[i].take() {
                Some(reason) => reason,
                None => KeepReason::Destination { pods: received[i] },
            },
        })
        .collect();
    let savings_hourly = removals
        .iter()
        .filter_map(|r| snapshot.nodes[r.node.index()].hourly_price)
        .filter(|p| p.is_finite() && *p > 0.0)
        .sum();
    let batches = if budget == 0 {
        Vec::new()
    } else {
        removals
            .chunks(budget)
            .map(|c| c.iter().map(|r| r.node).collect())
            .collect()
    };
    Plan {
        removals,
        moves,
        kept,
        batches,
        savings_hourly,
        budget,
    }
}

/// The first PDB whose remaining allowance cannot cover the candidate's pods.
fn pdb_shortfall(context: &Context<'_>, pods: &[PodId], used: &[u32]) -> Option<KeepReason> {
    let mut needed: Vec<(u32, u32)> = Vec::new();
    for &pod in pods {
        for &pdb in context.pod_pdbs(pod) {
            match needed.iter_mut().find(|(p, _)| *p == pdb) {
                Some((_, n)) => *n += 1,
                None => needed.push((pdb, 1)),
            }
        }
    }
    needed.into_iter().find_map(|(pdb, n)| {
        let pdb = pdb as usize;
        let allowed = context.snapshot.pdbs[pdb].disruptions_allowed;
        (used[pdb] + n > allowed).then_some(KeepReason::Pdb {
            pdb,
            allowed,
            used: used[pdb],
        })
    })
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Off => "Off",
            Mode::WhenEmpty => "WhenEmpty",
            Mode::WhenUnderutilized => "WhenUnderutilized",
        })
    }
}
