//! Replacement: after the removal plan, nodes it keeps for a reason that does not pin them (above the
//! threshold, a pod with no room elsewhere, not empty in `WhenEmpty` mode) may be replaced, k at a time,
//! by one new node of a type the caller offers (the NodeTemplate's ranking, best first), when the new
//! node is cheaper than the k it replaces by a margin and every pod of theirs provably fits on it.
//!
//! # Rules
//! - Candidates: priced, not removed, not a destination of the removal plan (its pods are in motion),
//!   kept for [`KeepReason::AboveThreshold`], [`KeepReason::NotEmpty`] or [`KeepReason::NoRoom`]. They
//!   are taken in the removal plan's own order: lowest utilization first, then the dearer first.
//! - A set of k candidates (prefixes of that order, the largest first: more nodes per new node saves
//!   more) is replaced by the cheapest offer (the caller's order breaks ties) whose node would cost at
//!   most `(1 - margin)` of the k nodes together and on which every movable pod of the k fits. The
//!   cheapest, not the first by rank: a node launched as the first by rank could be replaced again by
//!   a cheaper one a pass later (the end-to-end test saw exactly that churn). Offers come from the
//!   ranking, so pairs the Spot risk ranking flags are not among them. It must hold:
//!   - the pods' requests plus the DaemonSet pods of the fullest replaced node (DaemonSets run on the
//!     new node too) within `max_fill` of the offer's allocatable CPU and memory, and its pod slots;
//!   - each pod's node selector, required node affinity and tolerations accept the offer's labels and
//!     taints;
//!   - no required hostname anti-affinity between two of the pods (they would share one node);
//!   - required pod affinity and anti-affinity on other keys, with the removal planner's rules
//!     (`affinity.rs`): the replaced nodes leave with their pods, which then land on the new node
//!     one by one (a pod whose affinity wants a pod that lands later waits for it), each checked
//!     against the cluster as the plan and the earlier replacements leave it. The new node's
//!     hostname is a domain of its own, its zone the offer's, other keys the offer's labels; a key
//!     the offer does not carry is unknown and refuses the pod. `pods` lists them in that order;
//!     DaemonSet pods are not checked against them;
//!   - no pod with a `DoNotSchedule` topology spread (not modelled for a new node: such a pod pins its
//!     node for replacement, which is safe).
//! - Every PDB covering a moved pod must allow a disruption after the removal plan, and a replacement
//!   takes what it allows (one replacement per PDB at a time). It need not allow all the moves at
//!   once: the new node is Ready before the first eviction, so the drain evicts at the PDB's pace (the
//!   API server enforces it, the drain retries until `drainTimeout`), as Karpenter's does. Removals
//!   are planned stricter (every move within the allowance) because they add no capacity. The node count never goes below `nodes.min`. k is not bounded by the disruption budget:
//!   the new node is Ready before any replaced node is touched, and the replaced nodes then drain in
//!   batches of the budget, like removals.
//! - A Spot offer is taken only while the end state's Spot nodes stay within the policy's split: at
//!   most `percentage`% of the nodes above the on-demand base, or no more Spot nodes than before.
//! - **Spot mix convergence** ([`ReplaceReason::SpotMix`]), after those: while the end state has fewer
//!   Spot nodes than the policy's split asks for (`percentage`% of the nodes above the on-demand base),
//!   kept on-demand nodes nothing pins (and that receive no pods) are replaced one for one by the
//!   cheapest Spot offer cheaper than them on which their pods fit, the biggest saving first, within the PDB
//!   allowances left. A policy raised from 30% to 80% Spot, or a fallback to on-demand that ended, so
//!   converges; never below the on-demand base.
//! - Savings are counted once: the removed nodes' prices (the plan) plus, per replacement, the replaced
//!   nodes' prices minus the new node's.

use std::collections::{BTreeMap, BTreeSet};

use super::affinity::{self, Place, Refusal};
use super::{KeepReason, Options, Plan};
use crate::engine::catalog::{Arch, Catalog};
use crate::engine::ranking::RankedCandidate;
use crate::engine::savings::SpotTarget;
use crate::engine::snapshot::{
    CapacityType, Labels, NodeId, OwnerKind, PodId, Resources, Snapshot, Taint,
};

/// A node the caller can launch: one (instance type, zone, capacity type) of the ranking.
#[derive(Debug, Clone, PartialEq)]
pub struct Offer {
    /// e.g. `m6i.2xlarge`.
    pub instance_type: String,
    /// Availability zone.
    pub zone: String,
    /// Spot or on-demand.
    pub capacity_type: CapacityType,
    /// USD per hour.
    pub hourly: f64,
    /// What pods may request on it (capacity minus the kubelet's reservations).
    pub allocatable: Resources,
    /// The labels a node of this offer carries (zone, instance type, capacity type, architecture, the
    /// template's labels); not the hostname, which a new node does not have yet.
    pub labels: Labels,
    /// The taints it is registered with (the template's).
    pub taints: Vec<Taint>,
}

/// What replacement may use.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplaceOptions {
    /// Offers in the caller's preference order (the ranking: price and interruption risk).
    pub offers: Vec<Offer>,
    /// The new node must cost at most `(1 - margin)` of the nodes it replaces (default 0.10).
    pub margin: f64,
    /// The most nodes one new node replaces.
    pub max_nodes: usize,
    /// The policy's Spot split; `None`: Spot offers are not limited.
    pub spot: Option<SpotTarget>,
}

impl ReplaceOptions {
    /// The defaults with these offers: a 10% margin, up to 5 nodes per replacement, no Spot limit.
    pub fn with_offers(offers: Vec<Offer>) -> ReplaceOptions {
        ReplaceOptions {
            offers,
            margin: 0.10,
            max_nodes: 5,
            spot: None,
        }
    }
}

/// Why a replacement is planned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplaceReason {
    /// k nodes by one cheaper node: fewer, cheaper nodes.
    Consolidation,
    /// An on-demand node by a Spot node while the Spot share is below the policy's split.
    SpotMix,
}

impl ReplaceReason {
    /// `consolidation` or `spotMix` (JSON), as people read it in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            ReplaceReason::Consolidation => "consolidation",
            ReplaceReason::SpotMix => "spotMix",
        }
    }
}

/// k nodes replaced by one new node.
#[derive(Debug, Clone, PartialEq)]
pub struct Replacement {
    /// Why.
    pub reason: ReplaceReason,
    /// The nodes replaced, in plan order.
    pub replace: Vec<NodeId>,
    /// The new node.
    pub with: Offer,
    /// The pods that move to it, in an order in which each may land there.
    pub pods: Vec<PodId>,
    /// What the replaced nodes cost together, USD per hour.
    pub replaced_hourly: f64,
    /// `replaced_hourly - with.hourly`.
    pub savings_hourly: f64,
}

/// The replacements for `plan` of `snapshot` (see the module docs). Pure and deterministic.
pub fn plan_replacements(
    snapshot: &Snapshot,
    plan: &Plan,
    options: &Options,
    replace: &ReplaceOptions,
) -> Vec<Replacement> {
    let mut state = State::new(snapshot, plan, options, replace);
    let mut candidates = state.candidates(plan);
    let mut replacements = Vec::new();
    while !candidates.is_empty() {
        let most = candidates
            .len()
            .min(replace.max_nodes)
            .min(state.removable());
        let found = (1..=most)
            .rev()
            .find_map(|k| state.try_replace(&candidates[..k]).map(|r| (k, r)));
        match found {
            Some((k, replacement)) => {
                state.commit(&replacement);
                candidates.drain(..k);
                replacements.push(replacement);
            }
            // The first candidate cannot be replaced, alone or with the next ones: go on without it.
            None => {
                candidates.remove(0);
            }
        }
    }
    let converted = state.converge(plan, &replacements);
    replacements.extend(converted);
    replacements
}

/// What the plan left: PDB allowances, node counts, Spot nodes.
struct State<'a> {
    snapshot: &'a Snapshot,
    replace: &'a ReplaceOptions,
    max_fill: f64,
    min_nodes: usize,
    /// Allowance left per PDB after the removal plan (and earlier replacements).
    pdb_left: Vec<u32>,
    /// Nodes in the end state.
    nodes: usize,
    /// Spot nodes in the end state.
    spot_nodes: usize,
    /// Pods per node (movable ones and DaemonSet ones).
    movable: BTreeMap<NodeId, Vec<PodId>>,
    daemons: BTreeMap<NodeId, Resources>,
    /// Where each pod runs in the end state so far.
    site: Vec<Site>,
    /// The new nodes of the replacements committed so far, in order ([`Site::New`] indexes them).
    new_nodes: Vec<Offer>,
    /// Pods owning anti-affinity terms on keys other than the hostname.
    anti_owners: Vec<PodId>,
    /// Some pod has required pod affinity or such anti-affinity (else those checks are skipped).
    inter_pod_terms: bool,
    /// Nodes the removal plan moves pods to, whatever their keep reason says (a node above the
    /// threshold receives pods and stays `AboveThreshold`): never replaced.
    receiving: BTreeSet<NodeId>,
}

/// Where a pod runs in the end state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Site {
    /// A node of the snapshot.
    Node(NodeId),
    /// The i-th new node.
    New(usize),
    /// Nowhere: a DaemonSet or static pod of a removed or replaced node.
    Gone,
}

impl<'a> State<'a> {
    fn new(
        snapshot: &'a Snapshot,
        plan: &Plan,
        options: &Options,
        replace: &'a ReplaceOptions,
    ) -> State<'a> {
        let removed: BTreeSet<NodeId> = plan.removals.iter().map(|r| r.node).collect();
        let mut pdb_left: Vec<u32> = snapshot
            .pdbs
            .iter()
            .map(|p| p.disruptions_allowed)
            .collect();
        for m in &plan.moves {
            let pod = &snapshot.pods[m.pod.index()];
            for (i, pdb) in snapshot.pdbs.iter().enumerate() {
                if pdb.covers(pod) {
                    pdb_left[i] = pdb_left[i].saturating_sub(1);
                }
            }
        }
        let mut site: Vec<Site> = snapshot
            .pods
            .iter()
            .map(|p| match removed.contains(&p.node) {
                true => Site::Gone,
                false => Site::Node(p.node),
            })
            .collect();
        for m in &plan.moves {
            site[m.pod.index()] = Site::Node(m.to);
        }
        let anti_owners: Vec<PodId> = (0..snapshot.pods.len())
            .filter(|&i| !snapshot.pods[i].topology_anti_affinity.is_empty())
            .map(|i| PodId(i as u32))
            .collect();
        let inter_pod_terms =
            !anti_owners.is_empty() || snapshot.pods.iter().any(|p| !p.pod_affinity.is_empty());
        let mut movable: BTreeMap<NodeId, Vec<PodId>> = BTreeMap::new();
        let mut daemons: BTreeMap<NodeId, Resources> = BTreeMap::new();
        for (i, pod) in snapshot.pods.iter().enumerate() {
            match pod.owner {
                OwnerKind::DaemonSet | OwnerKind::Static => {
                    let d = daemons.entry(pod.node).or_default();
                    *d = d.saturating_add(pod.requests);
                }
                _ => movable.entry(pod.node).or_default().push(PodId(i as u32)),
            }
        }
        let live = |id: &NodeId| !removed.contains(id);
        let nodes = (0..snapshot.nodes.len())
            .map(|i| NodeId(i as u32))
            .filter(live)
            .count();
        let spot_nodes = (0..snapshot.nodes.len())
            .map(|i| NodeId(i as u32))
            .filter(|id| live(id) && snapshot.nodes[id.index()].capacity_type == CapacityType::Spot)
            .count();
        State {
            snapshot,
            replace,
            max_fill: options.max_fill(),
            min_nodes: options.min_nodes,
            pdb_left,
            nodes,
            spot_nodes,
            movable,
            daemons,
            site,
            new_nodes: Vec::new(),
            anti_owners,
            inter_pod_terms,
            receiving: plan.moves.iter().map(|m| m.to).collect(),
        }
    }

    /// Candidates in the removal plan's order of ease: lowest utilization, then the dearer node.
    fn candidates(&self, plan: &Plan) -> Vec<NodeId> {
        let requested = self.snapshot.requested_per_node();
        let mut candidates: Vec<(f64, f64, NodeId)> = plan
            .kept
            .iter()
            .filter(|k| {
                matches!(
                    k.reason,
                    KeepReason::AboveThreshold { .. }
                        | KeepReason::NotEmpty { .. }
                        | KeepReason::NoRoom { .. }
                ) && !self.receiving.contains(&k.node)
            })
            .filter_map(|k| {
                let node = &self.snapshot.nodes[k.node.index()];
                let price = node.hourly_price?;
                let used = requested[k.node.index()];
                let utilization = ratio(used.cpu_millis, node.allocatable.cpu_millis)
                    .max(ratio(used.memory_bytes, node.allocatable.memory_bytes));
                Some((utilization, price, k.node))
            })
            .collect();
        candidates.sort_by(|a, b| {
            a.0.total_cmp(&b.0)
                .then(b.1.total_cmp(&a.1))
                .then(a.2.cmp(&b.2))
        });
        candidates.into_iter().map(|(_, _, id)| id).collect()
    }

    /// How many nodes may go (k nodes replaced by one removes k - 1) before `nodes.min`.
    fn removable(&self) -> usize {
        self.nodes.saturating_sub(self.min_nodes) + 1
    }

    fn try_replace(&self, nodes: &[NodeId]) -> Option<Replacement> {
        let replaced_hourly: f64 = nodes
            .iter()
            .filter_map(|id| self.snapshot.nodes[id.index()].hourly_price)
            .sum();
        let pods: Vec<PodId> = nodes
            .iter()
            .flat_map(|id| self.movable.get(id).cloned().unwrap_or_default())
            .collect();
        if !self.pods_may_share_a_new_node(&pods) || !self.pdbs_allow(&pods) {
            return None;
        }
        let requests = self.on_new_node(nodes, &pods);
        let spot_before = nodes
            .iter()
            .filter(|id| self.snapshot.nodes[id.index()].capacity_type == CapacityType::Spot)
            .count();
        // The cheapest that qualifies (the first of equals): one picked by rank could itself be
        // replaced by a cheaper qualifying offer a pass later, churning a node for a small saving.
        let offer = self
            .replace
            .offers
            .iter()
            .filter(|offer| {
                offer.hourly <= replaced_hourly * (1.0 - self.replace.margin)
                    && self.fits(offer, nodes, &pods, requests)
                    && self.spot_allows(offer, nodes.len(), spot_before)
            })
            .min_by(|a, b| a.hourly.total_cmp(&b.hourly))?;
        let pods = self.landing_order(offer, nodes, &pods)?;
        Some(Replacement {
            reason: ReplaceReason::Consolidation,
            replace: nodes.to_vec(),
            with: offer.clone(),
            pods,
            replaced_hourly,
            savings_hourly: replaced_hourly - offer.hourly,
        })
    }

    /// What a new node replacing `nodes` must hold: `pods`' requests plus the DaemonSet pods of the
    /// fullest of `nodes` (DaemonSets run on the new node too).
    fn on_new_node(&self, nodes: &[NodeId], pods: &[PodId]) -> Resources {
        let daemons = nodes
            .iter()
            .filter_map(|id| self.daemons.get(id))
            .copied()
            .max_by_key(|r| (r.cpu_millis, r.memory_bytes))
            .unwrap_or_default();
        pods.iter().fold(daemons, |sum, id| {
            sum.saturating_add(self.snapshot.pods[id.index()].requests)
        })
    }

    /// Do `pods` of the replaced `nodes` fit a new node of `offer`: its capacity, its labels and taints,
    /// and the inter-pod terms in its domains?
    fn fits(&self, offer: &Offer, nodes: &[NodeId], pods: &[PodId], requests: Resources) -> bool {
        let cap = |v: u64| (v as f64 * self.max_fill).floor() as u64;
        requests.cpu_millis <= cap(offer.allocatable.cpu_millis)
            && requests.memory_bytes <= cap(offer.allocatable.memory_bytes)
            && requests.pods <= offer.allocatable.pods
            && pods
                .iter()
                .all(|id| self.snapshot.pods[id.index()].accepts_node(&offer.labels, &offer.taints))
            && self.landing_order(offer, nodes, pods).is_some()
    }

    /// An order in which `pods` land on a new node of `offer` once `nodes` have left, each with its
    /// required pod affinity and anti-affinity met (see the module docs); `None` if there is none.
    /// A pod whose affinity does not hold yet is tried again after the others have landed.
    fn landing_order(&self, offer: &Offer, nodes: &[NodeId], pods: &[PodId]) -> Option<Vec<PodId>> {
        if !self.inter_pod_terms {
            return Some(pods.to_vec());
        }
        let target = Place::New {
            host: self.new_nodes.len(),
            offer,
        };
        let mut landed: Vec<PodId> = Vec::with_capacity(pods.len());
        let mut waiting = pods.to_vec();
        while !waiting.is_empty() {
            let before = waiting.len();
            let mut still = Vec::new();
            for id in waiting {
                match self.admits(id, target, nodes, &landed) {
                    Ok(()) => landed.push(id),
                    Err(Refusal::PodAffinity) => still.push(id),
                    Err(Refusal::AntiAffinity) => return None,
                }
            }
            if still.len() == before {
                return None;
            }
            waiting = still;
        }
        Some(landed)
    }

    /// May pod `id` land on `target` while `nodes` are gone and `landed` are on it already?
    fn admits(
        &self,
        id: PodId,
        target: Place<'_>,
        nodes: &[NodeId],
        landed: &[PodId],
    ) -> Result<(), Refusal> {
        let pod = &self.snapshot.pods[id.index()];
        let on_target = |q: &PodId| (&self.snapshot.pods[q.index()], target);
        if !pod.pod_affinity.is_empty() || !pod.topology_anti_affinity.is_empty() {
            let placed = (0..self.snapshot.pods.len()).map(|i| PodId(i as u32));
            let placed = self
                .placed(placed, nodes)
                .chain(landed.iter().map(on_target));
            affinity::own_terms_allow(pod, target, placed)?;
        }
        let owners = self.placed(self.anti_owners.iter().copied(), nodes);
        let owners = owners.chain(landed.iter().map(on_target));
        if affinity::repelled_by(pod, target, owners) {
            return Err(Refusal::AntiAffinity);
        }
        Ok(())
    }

    /// `pods` with where they run in the end state so far, leaving out those gone or on `leaving`.
    fn placed<'s>(
        &'s self,
        pods: impl Iterator<Item = PodId> + 's,
        leaving: &'s [NodeId],
    ) -> impl Iterator<Item = (&'s crate::engine::snapshot::Pod, Place<'s>)> + 's {
        pods.filter_map(move |id| {
            let place = match self.site[id.index()] {
                Site::Node(n) if leaving.contains(&n) => return None,
                Site::Node(n) => Place::Node(&self.snapshot.nodes[n.index()].labels),
                Site::New(host) => Place::New {
                    host,
                    offer: &self.new_nodes[host],
                },
                Site::Gone => return None,
            };
            Some((&self.snapshot.pods[id.index()], place))
        })
    }

    /// No pod with a spread constraint; no two pods kept apart by required hostname anti-affinity (the
    /// only kind the snapshot carries).
    fn pods_may_share_a_new_node(&self, pods: &[PodId]) -> bool {
        let pod = |id: &PodId| &self.snapshot.pods[id.index()];
        pods.iter().all(|a| {
            let a = pod(a);
            a.topology_spread.is_empty()
                && a.anti_affinity.iter().all(|term| {
                    pods.iter().map(pod).all(|b| {
                        let in_scope = if term.namespaces.is_empty() {
                            b.namespace == a.namespace
                        } else {
                            term.namespaces.contains(&b.namespace)
                        };
                        std::ptr::eq(a, b) || !(in_scope && term.selector.matches(&b.labels))
                    })
                })
        })
    }

    /// Every PDB covering one of `pods` allows a disruption now (see the module docs).
    fn pdbs_allow(&self, pods: &[PodId]) -> bool {
        self.snapshot.pdbs.iter().enumerate().all(|(i, pdb)| {
            self.pdb_left[i] > 0
                || !pods
                    .iter()
                    .any(|id| pdb.covers(&self.snapshot.pods[id.index()]))
        })
    }

    fn spot_allows(&self, offer: &Offer, replaced: usize, spot_replaced: usize) -> bool {
        let (CapacityType::Spot, Some(target)) = (offer.capacity_type, self.replace.spot) else {
            return true;
        };
        let nodes_after = self.nodes + 1 - replaced;
        let spot_after = self.spot_nodes + 1 - spot_replaced;
        let allowed =
            nodes_after.saturating_sub(target.on_demand_base) * target.percentage as usize / 100;
        spot_after <= allowed || spot_after <= self.spot_nodes
    }

    /// Spot mix convergence: while the end state's Spot share is below the policy's split (of the
    /// nodes above the on-demand base), kept on-demand nodes that nothing pins (and that receive no
    /// pods) are replaced one for one by a cheaper Spot node on which their pods fit, the biggest saving
    /// first. Never below the on-demand base.
    fn converge(&mut self, plan: &Plan, done: &[Replacement]) -> Vec<Replacement> {
        let Some(target) = self.replace.spot else {
            return Vec::new();
        };
        let taken: BTreeSet<NodeId> = done.iter().flat_map(|r| r.replace.clone()).collect();
        let mut options: Vec<Replacement> = plan
            .kept
            .iter()
            .filter(|k| {
                !k.reason.pins_node()
                    && !matches!(k.reason, KeepReason::Destination { .. })
                    && !taken.contains(&k.node)
                    && !self.receiving.contains(&k.node)
                    && self.snapshot.nodes[k.node.index()].capacity_type == CapacityType::OnDemand
            })
            .filter_map(|k| self.to_spot(k.node))
            .collect();
        options.sort_by(|a, b| {
            b.savings_hourly
                .total_cmp(&a.savings_hourly)
                .then(a.replace.cmp(&b.replace))
        });
        let mut converted = Vec::new();
        for option in options {
            let wanted = self.nodes.saturating_sub(target.on_demand_base)
                * target.percentage.min(100) as usize
                / 100;
            if self.spot_nodes >= wanted {
                break;
            }
            // Conversions committed since moved pods: the inter-pod terms are checked again now.
            let Some(option) = self.to_spot(option.replace[0]) else {
                continue;
            };
            if self.pdbs_allow(&option.pods) {
                self.commit(&option);
                converted.push(option);
            }
        }
        converted
    }

    /// The cheapest Spot offer, cheaper than `node`, on which its pods fit.
    fn to_spot(&self, node: NodeId) -> Option<Replacement> {
        let price = self.snapshot.nodes[node.index()].hourly_price?;
        let pods = self.movable.get(&node).cloned().unwrap_or_default();
        if !self.pods_may_share_a_new_node(&pods) {
            return None;
        }
        let requests = self.on_new_node(&[node], &pods);
        // The cheapest, as for consolidation: a dearer first-ranked Spot node would be replaced again
        // by a cheaper one a pass later (the end-to-end convergence saw that churn).
        let offer = self
            .replace
            .offers
            .iter()
            .filter(|o| {
                o.capacity_type == CapacityType::Spot
                    && o.hourly < price
                    && self.fits(o, &[node], &pods, requests)
            })
            .min_by(|a, b| a.hourly.total_cmp(&b.hourly))?;
        let pods = self.landing_order(offer, &[node], &pods)?;
        Some(Replacement {
            reason: ReplaceReason::SpotMix,
            replace: vec![node],
            with: offer.clone(),
            pods,
            replaced_hourly: price,
            savings_hourly: price - offer.hourly,
        })
    }

    fn commit(&mut self, replacement: &Replacement) {
        let host = self.new_nodes.len();
        for site in &mut self.site {
            if matches!(site, Site::Node(n) if replacement.replace.contains(n)) {
                *site = Site::Gone;
            }
        }
        for id in &replacement.pods {
            self.site[id.index()] = Site::New(host);
        }
        self.new_nodes.push(replacement.with.clone());
        for (i, pdb) in self.snapshot.pdbs.iter().enumerate() {
            let used = replacement
                .pods
                .iter()
                .filter(|id| pdb.covers(&self.snapshot.pods[id.index()]))
                .count() as u32;
            self.pdb_left[i] = self.pdb_left[i].saturating_sub(used);
        }
        let spot_replaced = replacement
            .replace
            .iter()
            .filter(|id| self.snapshot.nodes[id.index()].capacity_type == CapacityType::Spot)
            .count();
        self.nodes = self.nodes + 1 - replacement.replace.len();
        self.spot_nodes = self.spot_nodes
            + usize::from(replacement.with.capacity_type == CapacityType::Spot)
            - spot_replaced;
    }
}

/// Pod slots of a new node in a replacement: the kubelet's default (the EKS AMI's ENI-based limit is
/// at least this for the sizes a replacement uses).
pub const NEW_NODE_PODS: u32 = 110;

/// The offers of ranked candidates (best first): each with the allocatable of
/// [`kubelet_allocatable`] for `max_pods` pods and the well-known labels a node of it carries (instance
/// type, zone, region, architecture as Kubernetes names it, OS, and the capacity type in Karpenter's and
/// EKS's spelling). Candidates whose type the catalog lacks are left out.
pub fn offers(
    catalog: &Catalog,
    region: &str,
    candidates: &[RankedCandidate<'_>],
    max_pods: u32,
) -> Vec<Offer> {
    candidates
        .iter()
        .filter_map(|c| {
            let t = catalog.instance_type(c.instance_type)?;
            let (capacity, eks_capacity) = match c.capacity_type {
                CapacityType::Spot => ("spot", "SPOT"),
                CapacityType::OnDemand => ("on-demand", "ON_DEMAND"),
            };
            // Kubernetes names x86_64 `amd64`.
            let arch = match t.arch {
                Arch::X86_64 => "amd64",
                Arch::Arm64 => "arm64",
            };
            let labels = [
                ("node.kubernetes.io/instance-type", c.instance_type),
                ("topology.kubernetes.io/zone", c.zone),
                ("topology.kubernetes.io/region", region),
                ("kubernetes.io/arch", arch),
                ("kubernetes.io/os", "linux"),
                ("karpenter.sh/capacity-type", capacity),
                ("eks.amazonaws.com/capacityType", eks_capacity),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            Some(Offer {
                instance_type: c.instance_type.to_string(),
                zone: c.zone.to_string(),
                capacity_type: c.capacity_type,
                hourly: c.price_per_hour,
                allocatable: kubelet_allocatable(t.vcpu, t.memory_mib, max_pods),
                labels,
                taints: Vec::new(),
            })
        })
        .collect()
}

/// What pods may request on a new node of `vcpu` vCPUs and `memory_mib` MiB with `max_pods` pod slots:
/// the EKS-optimized AMI's kubelet reservations (kube-reserved CPU: 6% of the first core, 1% of the
/// second, 0.5% of the third and fourth, 0.25% of each further one; memory: 255 MiB + 11 MiB per pod;
/// the eviction threshold of 100 MiB).
pub fn kubelet_allocatable(vcpu: u32, memory_mib: u64, max_pods: u32) -> Resources {
    let cores = u64::from(vcpu);
    // Reserved millicores, in tenths of a millicore to keep the 0.25% steps exact.
    let tenths = 600 * cores.min(1)
        + 100 * cores.saturating_sub(1).min(1)
        + 50 * cores.saturating_sub(2).min(2)
        + 25 * cores.saturating_sub(4);
    let reserved_mib = 255 + 11 * u64::from(max_pods) + 100;
    Resources {
        cpu_millis: (cores * 1000).saturating_sub(tenths.div_ceil(10)),
        memory_bytes: memory_mib.saturating_sub(reserved_mib) * (1 << 20),
        pods: max_pods,
    }
}

fn ratio(used: u64, of: u64) -> f64 {
    if of == 0 {
        1.0
    } else {
        used as f64 / of as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::consolidation::{Mode, plan};
    use crate::engine::snapshot::{AntiAffinityTerm, LabelSelector, Node, Pdb, Pod};

    const GIB: u64 = 1 << 30;

    /// `n` on-demand m5.4xlarge-sized nodes (16 vCPU, 64 GiB) at $0.768/h, each running `pods` pods of
    /// 1.5 vCPU and 2 GiB (9 vCPU, 56%, with six: above the 0.5 threshold, and two such nodes do not
    /// fit into one).
    fn cluster(n: usize, pods: usize) -> Snapshot {
        let mut s = Snapshot::default();
        for i in 0..n {
            let mut node = Node::new(
                format!("n{i}"),
                Resources {
                    cpu_millis: 16_000,
                    memory_bytes: 64 * GIB,
                    pods: 110,
                },
            );
            node.hourly_price = Some(0.768);
            node.zone = Some("us-east-1a".into());
            s.nodes.push(node);
            for p in 0..pods {
                let mut pod = Pod::new(
                    "app",
                    &format!("web-{i}-{p}"),
                    NodeId(i as u32),
                    Resources::pod(1500, 2 * GIB),
                );
                pod.labels = std::sync::Arc::new(Labels::from([("app".into(), "web".into())]));
                s.pods.push(pod);
            }
        }
        s
    }

    fn offer(name: &str, vcpu: u32, memory_gib: u64, hourly: f64, capacity: CapacityType) -> Offer {
        Offer {
            instance_type: name.into(),
            zone: "us-east-1a".into(),
            capacity_type: capacity,
            hourly,
            allocatable: kubelet_allocatable(vcpu, memory_gib * 1024, 110),
            labels: Labels::from([("topology.kubernetes.io/zone".into(), "us-east-1a".into())]),
            taints: Vec::new(),
        }
    }

    fn offers() -> Vec<Offer> {
        vec![
            // Too small for three nodes' pods (27 vCPU), right for one or two.
            offer("m5.2xlarge", 8, 32, 0.384, CapacityType::OnDemand),
            offer("c6i.8xlarge", 32, 64, 1.36, CapacityType::OnDemand),
            offer("m5.12xlarge", 48, 192, 2.304, CapacityType::OnDemand),
        ]
    }

    fn replacements(s: &Snapshot, options: &Options, replace: &ReplaceOptions) -> Vec<Replacement> {
        let plan = plan(s, options).expect("plan");
        plan_replacements(s, &plan, options, replace)
    }

    fn names(s: &Snapshot, ids: &[NodeId]) -> Vec<String> {
        ids.iter()
            .map(|id| s.nodes[id.index()].name.clone())
            .collect()
    }

    #[test]
    fn three_busy_nodes_become_one_cheaper_node_that_holds_all_their_pods() {
        let s = cluster(3, 6);
        let options = Options {
            budget: Some(3),
            ..Options::default()
        };
        let plan = plan(&s, &options).expect("plan");
        assert!(plan.removals.is_empty(), "no node can be removed: {plan:?}");
        let r = plan_replacements(&s, &plan, &options, &ReplaceOptions::with_offers(offers()));
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!(names(&s, &r[0].replace), ["n0", "n1", "n2"]);
        assert_eq!(r[0].with.instance_type, "c6i.8xlarge");
        assert_eq!(r[0].pods.len(), 18);
        assert!((r[0].savings_hourly - (3.0 * 0.768 - 1.36)).abs() < 1e-9);
    }

    #[test]
    fn the_margin_max_nodes_and_nodes_min_limit_what_is_replaced() {
        let s = cluster(3, 6);
        let options = Options {
            budget: Some(3),
            ..Options::default()
        };
        // 1.36 is 59% of 2.304: a 45% margin refuses it; two nodes ($1.536) fit m5.12xlarge? No: it is
        // dearer. One node alone: m5.2xlarge is too small (9 vCPU). Nothing.
        let strict = ReplaceOptions {
            margin: 0.45,
            ..ReplaceOptions::with_offers(offers())
        };
        assert!(replacements(&s, &options, &strict).is_empty());
        // At most two nodes per new node (18 vCPU fits c6i.8xlarge, $1.36 < 0.9 x $1.536). The budget
        // (1 node at a time) does not bound k: the replaced nodes drain one by one after the new node.
        let one_at_a_time = Options {
            budget: Some(1),
            ..Options::default()
        };
        let two = ReplaceOptions {
            max_nodes: 2,
            ..ReplaceOptions::with_offers(offers())
        };
        let r = replacements(&s, &one_at_a_time, &two);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].replace.len(), 2);
        assert_eq!(
            replacements(&s, &one_at_a_time, &ReplaceOptions::with_offers(offers()))[0]
                .replace
                .len(),
            3
        );
        // nodes.min 3: three nodes may not become one, nor two.
        let min_three = Options {
            budget: Some(3),
            min_nodes: 3,
            ..Options::default()
        };
        assert!(replacements(&s, &min_three, &ReplaceOptions::with_offers(offers())).is_empty());
    }

    #[test]
    fn pods_must_accept_the_new_node_and_may_not_repel_each_other() {
        // A node selector the offers do not carry.
        let mut s = cluster(3, 6);
        s.pods[0].node_selector = Labels::from([("pool".into(), "gpu".into())]);
        let options = Options {
            budget: Some(3),
            ..Options::default()
        };
        let r = replacements(&s, &options, &ReplaceOptions::with_offers(offers()));
        assert!(
            r.iter().all(|r| !r.replace.contains(&NodeId(0))),
            "n0's pod selects pool=gpu: {r:?}"
        );
        // Hostname anti-affinity between web pods: two of them cannot share the new node.
        let mut s = cluster(3, 6);
        s.pods[0].anti_affinity = vec![AntiAffinityTerm {
            selector: LabelSelector::labels([("app", "web")]),
            namespaces: Vec::new(),
        }];
        let r = replacements(&s, &options, &ReplaceOptions::with_offers(offers()));
        assert!(r.iter().all(|r| !r.replace.contains(&NodeId(0))), "{r:?}");
    }

    #[test]
    fn the_cheapest_qualifying_offer_is_taken_not_the_first_ranked() {
        let s = cluster(3, 6);
        let options = Options {
            budget: Some(3),
            ..Options::default()
        };
        // Ranked first but dearer: taking it would leave a cheaper 1-for-1 replacement for later.
        let ranked = vec![
            offer("m5.8xlarge", 32, 128, 1.536, CapacityType::OnDemand),
            offer("c6a.8xlarge", 32, 64, 1.224, CapacityType::OnDemand),
        ];
        let r = replacements(&s, &options, &ReplaceOptions::with_offers(ranked.clone()));
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!(r[0].with.instance_type, "c6a.8xlarge");
        // And the node it launches is not worth replacing again.
        let mut after = cluster(1, 18);
        after.nodes[0].allocatable = kubelet_allocatable(32, 64 * 1024, 110);
        after.nodes[0].hourly_price = Some(1.224);
        let again = replacements(&after, &options, &ReplaceOptions::with_offers(ranked));
        assert!(again.is_empty(), "{again:?}");
    }

    #[test]
    fn a_pdb_must_allow_a_disruption_and_is_used_by_one_replacement_at_a_time() {
        let with_pdb = |allowed| {
            let mut s = cluster(3, 6);
            s.pdbs.push(Pdb {
                namespace: "app".into(),
                name: "web".into(),
                selector: LabelSelector::labels([("app", "web")]),
                disruptions_allowed: allowed,
            });
            s
        };
        let options = Options {
            budget: Some(3),
            ..Options::default()
        };
        // One disruption allowed: the three nodes' 18 pods move to the Ready new node at its pace.
        let r = replacements(
            &with_pdb(1),
            &options,
            &ReplaceOptions::with_offers(offers()),
        );
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].pods.len(), 18);
        // None allowed: nothing moves.
        let r = replacements(
            &with_pdb(0),
            &options,
            &ReplaceOptions::with_offers(offers()),
        );
        assert!(r.is_empty(), "{r:?}");
    }

    #[test]
    fn a_spot_offer_is_taken_only_within_the_policys_spot_split() {
        let s = cluster(3, 6);
        let options = Options {
            budget: Some(3),
            ..Options::default()
        };
        let spot_first = vec![
            offer("c6i.8xlarge", 32, 64, 0.6, CapacityType::Spot),
            offer("c6i.8xlarge", 32, 64, 1.36, CapacityType::OnDemand),
        ];
        let with = |percentage| ReplaceOptions {
            spot: Some(SpotTarget {
                percentage,
                on_demand_base: 0,
            }),
            ..ReplaceOptions::with_offers(spot_first.clone())
        };
        assert_eq!(
            replacements(&s, &options, &with(100))[0].with.capacity_type,
            CapacityType::Spot
        );
        // 0% Spot: the on-demand offer instead.
        assert_eq!(
            replacements(&s, &options, &with(0))[0].with.capacity_type,
            CapacityType::OnDemand
        );
    }

    #[test]
    fn pinned_and_removed_nodes_are_never_replaced() {
        let mut s = cluster(3, 6);
        s.nodes[1].do_not_disrupt = true;
        let options = Options {
            budget: Some(3),
            mode: Mode::WhenUnderutilized,
            ..Options::default()
        };
        let r = replacements(&s, &options, &ReplaceOptions::with_offers(offers()));
        assert!(r.iter().all(|r| !r.replace.contains(&NodeId(1))), "{r:?}");
        // Light nodes: the removal plan takes one, the others receive its pods; nothing is replaced
        // twice and no destination is replaced.
        let s = cluster(3, 2);
        let plan = plan(&s, &options).expect("plan");
        let r = plan_replacements(&s, &plan, &options, &ReplaceOptions::with_offers(offers()));
        let removed: Vec<NodeId> = plan.removals.iter().map(|r| r.node).collect();
        for rep in &r {
            for id in &rep.replace {
                assert!(!removed.contains(id));
                assert!(
                    !plan.kept.iter().any(
                        |k| k.node == *id && matches!(k.reason, KeepReason::Destination { .. })
                    )
                );
            }
        }
    }

    #[test]
    fn on_demand_nodes_converge_to_the_spot_split_above_the_base() {
        let s = cluster(4, 6);
        let options = Options {
            budget: Some(4),
            ..Options::default()
        };
        // Same-size offers only, the Spot one 6% cheaper: below the 10% margin of a replacement for
        // cost, so only convergence to the split moves nodes to Spot.
        let same_size = vec![
            offer("m5.4xlarge", 16, 64, 0.72, CapacityType::Spot),
            offer("m5.4xlarge", 16, 64, 0.768, CapacityType::OnDemand),
        ];
        let with = |percentage, base| ReplaceOptions {
            spot: Some(SpotTarget {
                percentage,
                on_demand_base: base,
            }),
            ..ReplaceOptions::with_offers(same_size.clone())
        };
        let spot = |r: &[Replacement]| {
            assert!(r.iter().all(|r| r.reason == ReplaceReason::SpotMix
                && r.replace.len() == 1
                && r.with.capacity_type == CapacityType::Spot));
            r.len()
        };
        assert_eq!(spot(&replacements(&s, &options, &with(50, 0))), 2);
        assert_eq!(spot(&replacements(&s, &options, &with(100, 0))), 4);
        // Two nodes stay on demand whatever the split: 50% of the two above the base.
        assert_eq!(spot(&replacements(&s, &options, &with(50, 2))), 1);
        assert_eq!(spot(&replacements(&s, &options, &with(0, 0))), 0);
        // No Spot target: nothing converges.
        assert!(
            replacements(
                &s,
                &options,
                &ReplaceOptions::with_offers(same_size.clone())
            )
            .is_empty()
        );
        // A node already Spot counts toward the split.
        let mut s = cluster(4, 6);
        s.nodes[0].capacity_type = CapacityType::Spot;
        s.nodes[0].hourly_price = Some(0.72);
        let r = replacements(&s, &options, &with(50, 0));
        assert_eq!(spot(&r), 1);
        assert!(!r[0].replace.contains(&NodeId(0)));
    }

    #[test]
    fn kubelet_reservations_follow_the_eks_ami() {
        // m5.large: 2 vCPU, 8 GiB, 29 pods: 70m reserved; 255 + 11 x 29 + 100 = 674 MiB.
        let a = kubelet_allocatable(2, 8192, 29);
        assert_eq!(a.cpu_millis, 1930);
        assert_eq!(a.memory_bytes, (8192 - 674) * (1 << 20));
        // 16 vCPU: 60 + 10 + 2 x 5 + 12 x 2.5 = 110m.
        assert_eq!(kubelet_allocatable(16, 65536, 110).cpu_millis, 15_890);
    }
}
