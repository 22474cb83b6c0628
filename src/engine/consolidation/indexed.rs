//! The fast placer: interned node classes and pod signatures, one [`FitTree`] per distinct set of
//! acceptable node classes, incremental topology-spread counts, resident lists for hostname
//! anti-affinity and per-domain counts for other pod affinity and anti-affinity ([`PodTerms`]).

use crate::engine::snapshot::{
    LabelSelector, Labels, NodeId, NodeSelectorTerm, PodId, Resources, Taint, Toleration,
    TopologyKey, tolerates_all,
};

use super::affinity::PodTerms;
use super::context::{Context, FxMap, Interner, Rows};
use super::tree::{DISABLED, FitTree};
use super::{NoRoom, Placer};

/// Marker for "node has no zone label".
pub(super) const NO_ZONE: u32 = u32::MAX;

/// A topology spread constraint of a pod, in interned form.
#[derive(Debug, Clone, Copy, Default)]
struct Spread {
    /// Spread group: (namespace, selector) whose pods are counted.
    group: u32,
    /// Zone (true) or hostname (false).
    zone: bool,
    max_skew: u32,
    /// 0 when unset.
    min_domains: u32,
    /// Domain set: node classes that count as domains.
    domain: u32,
    /// The pod itself matches the selector (adds 1 to its target's count).
    self_match: bool,
    /// The pod has a zone constraint, so nodes without a zone label are no domain for any of its spreads.
    needs_zone: bool,
}

/// Live nodes of a domain set.
#[derive(Debug, Clone, Default)]
struct DomainAlive {
    total: u32,
    with_zone: u32,
    per_zone: Vec<u32>,
}

/// A spread constraint's numbers for one `find` call (they do not depend on the target).
#[derive(Debug, Clone)]
enum SpreadNumbers {
    Zone { counts: Vec<u64>, min: u64 },
    Hostname { min: u64 },
}

pub(super) struct IndexedPlacer<'c, 'a> {
    context: &'c Context<'a>,
    class_of: Vec<u32>,
    zone_of: Vec<u32>,
    zones: usize,
    pod_tree: Vec<u32>,
    pod_spreads: Rows<Spread>,
    pod_terms: Rows<u32>,
    term_matches: Vec<Vec<u32>>,
    set_groups: Rows<u32>,
    domain_member: Vec<Vec<bool>>,
    class_domains: Rows<u32>,
    trees: Vec<FitTree>,
    tree_nodes: Vec<Vec<NodeId>>,
    node_leaves: Rows<(u32, u32)>,
    alive: Vec<bool>,
    used: Vec<Resources>,
    residents: Vec<Vec<PodId>>,
    anti_residents: Vec<u32>,
    terms: PodTerms,
    group_counts: Vec<FxMap<u32, u32>>,
    domain_alive: Vec<DomainAlive>,
    current: Option<NodeId>,
    undo: Vec<(PodId, NodeId)>,
}

type ClassKey<'a> = (Vec<(&'a str, &'a str)>, Vec<&'a Taint>, bool);
type SignatureKey<'a> = (
    &'a Labels,
    &'a Option<Vec<NodeSelectorTerm>>,
    &'a [Toleration],
);

impl<'c, 'a> IndexedPlacer<'c, 'a> {
    pub(super) fn new(context: &'c Context<'a>) -> Self {
        let snapshot = context.snapshot;
        let placeable: Vec<PodId> = context
            .candidates
            .iter()
            .flat_map(|&c| context.movable_pods(c).iter().copied())
            .collect();

        // Node classes: the labels placeable pods select on, the repelling taints, the cordon.
        let mut keys: Vec<&str> = placeable
            .iter()
            .flat_map(|p| {
                let pod = &snapshot.pods[p.index()];
                let selector = pod.node_selector.keys().map(String::as_str);
                let affinity = pod
                    .node_affinity
                    .iter()
                    .flatten()
                    .flat_map(|t| &t.match_expressions);
                selector
                    .chain(affinity.map(|r| r.key.as_str()))
                    .collect::<Vec<_>>()
            })
            .collect();
        keys.sort_unstable();
        keys.dedup();
        let mut classes: Interner<ClassKey<'a>> = Interner::new();
        let mut representative: Vec<NodeId> = Vec::new();
        let class_of: Vec<u32> = snapshot
            .nodes
            .iter()
            .enumerate()
            .map(|(i, node)| {
                let labels = keys
                    .iter()
                    .filter_map(|k| {
                        node.labels
                            .get_key_value(*k)
                            .map(|(k, v)| (k.as_str(), v.as_str()))
                    })
                    .collect();
                let mut taints: Vec<&Taint> = node.taints.iter().filter(|t| t.repels()).collect();
                taints.sort();
                taints.dedup();
                let class = classes.intern((labels, taints, node.unschedulable));
                if class as usize == representative.len() {
                    representative.push(NodeId(i as u32));
                }
                class
            })
            .collect();
        let class_count = classes.items().len();

        // Zones.
        let mut zone_names: Interner<&str> = Interner::new();
        let zone_of: Vec<u32> = snapshot
            .nodes
            .iter()
            .map(|n| n.zone.as_deref().map_or(NO_ZONE, |z| zone_names.intern(z)))
            .collect();
        let zones = zone_names.items().len();

        // Pod signatures and their node-class compatibility.
        let mut signatures: Interner<SignatureKey<'a>> = Interner::new();
        let mut signature_pod: Vec<PodId> = Vec::new();
        let mut pod_signature = vec![u32::MAX; snapshot.pods.len()];
        for &p in &placeable {
            let pod = &snapshot.pods[p.index()];
            let s = signatures.intern((
                &pod.node_selector,
                &pod.node_affinity,
                pod.tolerations.as_slice(),
            ));
            if s as usize == signature_pod.len() {
                signature_pod.push(p);
            }
            pod_signature[p.index()] = s;
        }
        let affinity_rows: Vec<Vec<bool>> = signature_pod
            .iter()
            .map(|p| {
                let pod = &snapshot.pods[p.index()];
                representative
                    .iter()
                    .map(|n| pod.matches_node_labels(&snapshot.nodes[n.index()].labels))
                    .collect()
            })
            .collect();
        let toleration_rows: Vec<Vec<bool>> = signature_pod
            .iter()
            .map(|p| {
                let pod = &snapshot.pods[p.index()];
                representative
                    .iter()
                    .map(|n| tolerates_all(&pod.tolerations, &snapshot.nodes[n.index()].taints))
                    .collect()
            })
            .collect();

        // Placement trees: one per distinct placement row.
        let mut rows: Interner<Vec<bool>> = Interner::new();
        let signature_tree: Vec<u32> = (0..signature_pod.len())
            .map(|s| {
                let row = (0..class_count)
                    .map(|c| {
                        let unschedulable = snapshot.nodes[representative[c].index()].unschedulable;
                        affinity_rows[s][c] && toleration_rows[s][c] && !unschedulable
                    })
                    .collect();
                rows.intern(row)
            })
            .collect();
        let pod_tree: Vec<u32> = pod_signature
            .iter()
            .map(|&s| signature_tree.get(s as usize).copied().unwrap_or(u32::MAX))
            .collect();
        let mut tree_nodes: Vec<Vec<NodeId>> = vec![Vec::new(); rows.items().len()];
        let mut leaf_pairs: Vec<(u32, (u32, u32))> = Vec::new();
        for &node in &context.destinations {
            for (t, row) in rows.items().iter().enumerate() {
                if row[class_of[node.index()] as usize] {
                    leaf_pairs.push((node.0, (t as u32, tree_nodes[t].len() as u32)));
                    tree_nodes[t].push(node);
                }
            }
        }
        let node_leaves = Rows::from_pairs(snapshot.nodes.len(), &leaf_pairs);
        let trees = tree_nodes
            .iter()
            .map(|nodes| FitTree::new(nodes.len()))
            .collect();

        // Spread groups, domain sets and anti-affinity terms.
        let label_sets = &context.label_sets;
        let mut groups: Interner<(u32, &'a LabelSelector)> = Interner::new();
        let mut domains: Interner<Vec<bool>> = Interner::new();
        let mut spread_pairs: Vec<(u32, Spread)> = Vec::new();
        for &p in &placeable {
            let pod = &snapshot.pods[p.index()];
            let s = pod_signature[p.index()] as usize;
            let set = label_sets.of_pod[p.index()];
            let namespace = label_sets.sets[set as usize].0;
            let needs_zone = pod
                .topology_spread
                .iter()
                .any(|t| t.key == TopologyKey::Zone);
            for spread in &pod.topology_spread {
                let row = (0..class_count)
                    .map(|c| {
                        (!spread.honor_node_affinity || affinity_rows[s][c])
                            && (!spread.honor_node_taints || toleration_rows[s][c])
                    })
                    .collect();
                spread_pairs.push((
                    p.0,
                    Spread {
                        group: groups.intern((namespace, &spread.selector)),
                        zone: spread.key == TopologyKey::Zone,
                        max_skew: spread.max_skew,
                        min_domains: spread.min_domains.unwrap_or(0),
                        domain: domains.intern(row),
                        self_match: spread.selector.matches(&pod.labels),
                        needs_zone,
                    },
                ));
            }
        }
        let pod_spreads = Rows::from_pairs(snapshot.pods.len(), &spread_pairs);
        let mut group_pairs: Vec<(u32, u32)> = Vec::new();
        for (g, (namespace, selector)) in groups.items().iter().enumerate() {
            for &set in label_sets.by_namespace.row(*namespace as usize) {
                if selector.matches(label_sets.sets[set as usize].1) {
                    group_pairs.push((set, g as u32));
                }
            }
        }
        let set_groups = Rows::from_pairs(label_sets.sets.len(), &group_pairs);
        let domain_member: Vec<Vec<bool>> = domains.items().to_vec();
        let class_domain_pairs: Vec<(u32, u32)> = domain_member
            .iter()
            .enumerate()
            .flat_map(|(d, row)| {
                row.iter()
                    .enumerate()
                    .filter(|(_, m)| **m)
                    .map(move |(c, _)| (c as u32, d as u32))
            })
            .collect();
        let class_domains = Rows::from_pairs(class_count, &class_domain_pairs);

        let mut terms: Interner<(&'a LabelSelector, Vec<&'a str>)> = Interner::new();
        let mut term_pairs: Vec<(u32, u32)> = Vec::new();
        for (i, pod) in snapshot.pods.iter().enumerate() {
            for term in &pod.anti_affinity {
                let mut namespaces: Vec<&str> = if term.namespaces.is_empty() {
                    vec![pod.namespace.as_str()]
                } else {
                    term.namespaces.iter().map(String::as_str).collect()
                };
                namespaces.sort_unstable();
                namespaces.dedup();
                term_pairs.push((i as u32, terms.intern((&term.selector, namespaces))));
            }
        }
        let pod_terms = Rows::from_pairs(snapshot.pods.len(), &term_pairs);
        let topology_terms = PodTerms::new(context, &placeable);
        let term_matches = terms
            .items()
            .iter()
            .map(|(selector, namespaces)| {
                let mut sets: Vec<u32> = namespaces
                    .iter()
                    .flat_map(|ns| label_sets.in_namespace(ns))
                    .copied()
                    .filter(|&set| selector.matches(label_sets.sets[set as usize].1))
                    .collect();
                sets.sort_unstable();
                sets
            })
            .collect();

        let mut placer = IndexedPlacer {
            context,
            class_of,
            zone_of,
            zones,
            pod_tree,
            pod_spreads,
            pod_terms,
            term_matches,
            set_groups,
            domain_member,
            class_domains,
            trees,
            tree_nodes,
            node_leaves,
            alive: vec![true; snapshot.nodes.len()],
            used: context.used.clone(),
            residents: Vec::new(),
            anti_residents: vec![0; snapshot.nodes.len()],
            terms: topology_terms,
            group_counts: Vec::new(),
            domain_alive: Vec::new(),
            current: None,
            undo: Vec::new(),
        };
        placer.init_dynamic(groups.items().len());
        placer
    }

    fn init_dynamic(&mut self, groups: usize) {
        let snapshot = self.context.snapshot;
        self.residents = (0..snapshot.nodes.len())
            .map(|n| {
                self.context
                    .residents
                    .row(n)
                    .iter()
                    .map(|&p| PodId(p))
                    .collect()
            })
            .collect();
        self.group_counts = vec![FxMap::default(); groups];
        for (i, pod) in snapshot.pods.iter().enumerate() {
            if !self.pod_terms.row(i).is_empty() {
                self.anti_residents[pod.node.index()] += 1;
            }
            self.count_pod(PodId(i as u32), pod.node, true);
        }
        self.domain_alive = vec![
            DomainAlive {
                total: 0,
                with_zone: 0,
                per_zone: vec![0; self.zones]
            };
            self.domain_member.len()
        ];
        for n in 0..snapshot.nodes.len() {
            self.count_domain(NodeId(n as u32), true);
            self.refresh(NodeId(n as u32));
        }
    }

    /// Add (or remove) `pod` at `node` in every spread group it belongs to.
    fn count_pod(&mut self, pod: PodId, node: NodeId, add: bool) {
        let set = self.context.label_sets.of_pod[pod.index()] as usize;
        self.terms.count(pod, set as u32, node.index(), add);
        for &g in self.set_groups.row(set) {
            let counts = &mut self.group_counts[g as usize];
            if add {
                *counts.entry(node.0).or_insert(0) += 1;
            } else if let Some(c) = counts.get_mut(&node.0) {
                *c -= 1;
                if *c == 0 {
                    counts.remove(&node.0);
                }
            }
        }
    }

    /// Add (or remove) `node` as a live member of its domain sets.
    fn count_domain(&mut self, node: NodeId, add: bool) {
        let zone = self.zone_of[node.index()];
        for &d in self.class_domains.row(self.class_of[node.index()] as usize) {
            let alive = &mut self.domain_alive[d as usize];
            let step = |v: &mut u32| if add { *v += 1 } else { *v -= 1 };
            step(&mut alive.total);
            if zone != NO_ZONE {
                step(&mut alive.with_zone);
                step(&mut alive.per_zone[zone as usize]);
            }
        }
    }

    /// Recompute `node`'s leaves from its liveness and usage.
    fn refresh(&mut self, node: NodeId) {
        let i = node.index();
        let limit = self.context.limits[i];
        let used = self.used[i];
        let value = if !self.alive[i] || used.pods >= limit.pods {
            DISABLED
        } else {
            (
                free(limit.cpu_millis, used.cpu_millis),
                free(limit.memory_bytes, used.memory_bytes),
            )
        };
        for &(tree, leaf) in self.node_leaves.row(i) {
            self.trees[tree as usize].set(leaf as usize, value);
        }
    }

    fn is_domain(&self, spread: &Spread, node: u32) -> bool {
        let n = node as usize;
        self.alive[n]
            && self.domain_member[spread.domain as usize][self.class_of[n] as usize]
            && (!spread.needs_zone || self.zone_of[n] != NO_ZONE)
    }

    fn spread_numbers(&self, spread: &Spread) -> SpreadNumbers {
        let alive = &self.domain_alive[spread.domain as usize];
        let counts = &self.group_counts[spread.group as usize];
        if spread.zone {
            let mut per_zone = vec![0u64; self.zones];
            for (&node, &count) in counts {
                if self.is_domain(spread, node) {
                    per_zone[self.zone_of[node as usize] as usize] += u64::from(count);
                }
            }
            let live_zones = (0..self.zones).filter(|&z| alive.per_zone[z] > 0);
            let domains = live_zones.clone().count();
            let min = if domains < spread.min_domains as usize {
                0
            } else {
                live_zones.map(|z| per_zone[z]).min().unwrap_or(0)
            };
            return SpreadNumbers::Zone {
                counts: per_zone,
                min,
            };
        }
        let total = if spread.needs_zone {
            alive.with_zone
        } else {
            alive.total
        };
        if total < spread.min_domains {
            return SpreadNumbers::Hostname { min: 0 };
        }
        let (occupied, smallest) = counts
            .iter()
            .filter(|(node, _)| self.is_domain(spread, **node))
            .fold((0u32, u64::MAX), |(k, m), (_, &c)| {
                (k + 1, m.min(u64::from(c)))
            });
        let min = if occupied == 0 || occupied < total {
            0
        } else {
            smallest
        };
        SpreadNumbers::Hostname { min }
    }

    fn anti_affinity_ok(&self, pod: PodId, node: NodeId) -> bool {
        let own = self.pod_terms.row(pod.index());
        if own.is_empty() && self.anti_residents[node.index()] == 0 {
            return true;
        }
        let sets = &self.context.label_sets.of_pod;
        let matches =
            |term: u32, set: u32| self.term_matches[term as usize].binary_search(&set).is_ok();
        let mine = sets[pod.index()];
        self.residents[node.index()].iter().all(|&q| {
            let theirs = sets[q.index()];
            !own.iter().any(|&t| matches(t, theirs))
                && !self
                    .pod_terms
                    .row(q.index())
                    .iter()
                    .any(|&t| matches(t, mine))
        })
    }

    fn check(
        &self,
        pod: PodId,
        node: NodeId,
        numbers: &mut [Option<SpreadNumbers>],
    ) -> Result<(), NoRoom> {
        let set = self.context.label_sets.of_pod[pod.index()];
        if !self.anti_affinity_ok(pod, node) || !self.terms.anti_affinity_ok(pod, set, node.index())
        {
            return Err(NoRoom::AntiAffinity);
        }
        if !self.terms.affinity_ok(pod, set, node.index()) {
            return Err(NoRoom::PodAffinity);
        }
        for (spread, slot) in self
            .pod_spreads
            .row(pod.index())
            .iter()
            .zip(numbers.iter_mut())
        {
            let numbers = slot.get_or_insert_with(|| self.spread_numbers(spread));
            let own = u64::from(spread.self_match);
            let (count, min, kind) = match numbers {
                SpreadNumbers::Zone { counts, min } => {
                    let zone = self.zone_of[node.index()];
                    if zone == NO_ZONE {
                        return Err(NoRoom::ZoneSpread);
                    }
                    (counts[zone as usize], *min, NoRoom::ZoneSpread)
                }
                SpreadNumbers::Hostname { min } => {
                    let count = self.group_counts[spread.group as usize]
                        .get(&node.0)
                        .copied()
                        .unwrap_or(0);
                    (u64::from(count), *min, NoRoom::HostnameSpread)
                }
            };
            if (count + own).saturating_sub(min) > u64::from(spread.max_skew) {
                return Err(kind);
            }
        }
        Ok(())
    }
}

/// `limit - used` as a signed amount (negative when already over).
fn free(limit: u64, used: u64) -> i64 {
    let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    clamp(limit) - clamp(used)
}

impl Placer for IndexedPlacer<'_, '_> {
    fn begin(&mut self, candidate: NodeId) {
        self.current = Some(candidate);
        self.alive[candidate.index()] = false;
        self.refresh(candidate);
        self.count_domain(candidate, false);
        for i in 0..self.residents[candidate.index()].len() {
            let pod = self.residents[candidate.index()][i];
            self.count_pod(pod, candidate, false);
        }
    }

    fn find(&mut self, pod: PodId) -> Result<NodeId, NoRoom> {
        let tree = self.pod_tree[pod.index()] as usize;
        let request = self.context.snapshot.pods[pod.index()].requests;
        let (cpu, memory) = (free(request.cpu_millis, 0), free(request.memory_bytes, 0));
        let mut numbers = vec![None; self.pod_spreads.row(pod.index()).len()];
        let mut start = 0;
        let mut refused = None;
        while let Some(leaf) = self.trees[tree].first_fit(start, cpu, memory) {
            let node = self.tree_nodes[tree][leaf];
            match self.check(pod, node, &mut numbers) {
                Ok(()) => return Ok(node),
                Err(why) => refused = Some(why),
            }
            start = leaf + 1;
        }
        Err(refused.unwrap_or_else(|| {
            if self.tree_nodes[tree].iter().any(|n| self.alive[n.index()]) {
                NoRoom::Capacity
            } else {
                NoRoom::NoMatchingNode
            }
        }))
    }

    fn place(&mut self, pod: PodId, to: NodeId) {
        let request = self.context.snapshot.pods[pod.index()].requests;
        self.used[to.index()] = self.used[to.index()].saturating_add(request);
        self.residents[to.index()].push(pod);
        if !self.pod_terms.row(pod.index()).is_empty() {
            self.anti_residents[to.index()] += 1;
        }
        self.count_pod(pod, to, true);
        self.refresh(to);
        self.undo.push((pod, to));
    }

    fn commit(&mut self) {
        self.undo.clear();
        self.current = None;
    }

    fn rollback(&mut self) {
        while let Some((pod, to)) = self.undo.pop() {
            let request = self.context.snapshot.pods[pod.index()].requests;
            let used = &mut self.used[to.index()];
            used.cpu_millis -= request.cpu_millis;
            used.memory_bytes -= request.memory_bytes;
            used.pods -= request.pods;
            self.residents[to.index()].pop();
            if !self.pod_terms.row(pod.index()).is_empty() {
                self.anti_residents[to.index()] -= 1;
            }
            self.count_pod(pod, to, false);
            self.refresh(to);
        }
        if let Some(candidate) = self.current.take() {
            self.alive[candidate.index()] = true;
            self.refresh(candidate);
            self.count_domain(candidate, true);
            for i in 0..self.residents[candidate.index()].len() {
                let pod = self.residents[candidate.index()][i];
                self.count_pod(pod, candidate, true);
            }
        }
    }
}
