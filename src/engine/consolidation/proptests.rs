//! Property tests of the planner on random small clusters: the indexed planner agrees with the naive one,
//! and an independent replay of every plan finds no overcommitted node, no pinned, do-not-disrupt or
//! DaemonSet pod moved, no PDB allowance exceeded, no constraint the planner models broken at placement
//! (node selector and affinity, taints, anti-affinity and affinity on any topology key, spreads), and
//! savings >= 0. Replacements of every plan under random offers are replayed the same way: each new
//! node becomes a node with the offer's labels, its zone and a hostname of its own, the replaced nodes
//! leave, and the moved pods land on it one by one, each checked as kube-scheduler would.
//!
//! The replay is an oracle: every rule it applies (label selectors, node selector terms, tolerations,
//! PDB coverage, the fill limit, inter-pod terms, spreads) is written here from the Kubernetes rules,
//! without calling the product's helpers (`LabelSelector::matches`, `Pod::accepts_node`,
//! `tolerates_all`, `Pdb::covers`, `Options::max_fill`, ...), so a bug in those cannot hide itself.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::scenario::Rng;
use super::*;
use crate::engine::savings::SpotTarget;
use crate::engine::snapshot::{
    AntiAffinityTerm, CapacityType, LABEL_HOSTNAME, LABEL_ZONE, LabelSelector, Labels, Node,
    NodeOperator, NodeRequirement, NodeSelectorTerm, OwnerKind, Pdb, Pod, PodAffinityTerm,
    Resources, SelectorOperator, Taint, TaintEffect, Toleration, TolerationOperator, TopologyKey,
    TopologySpread,
};

const MIB: u64 = 1 << 20;
const NAMESPACES: [&str; 3] = ["default", "team", "kube-system"];
const APPS: [&str; 4] = ["a", "b", "c", "d"];
const RACK: &str = "example.com/rack";

fn random_node(rng: &mut Rng, i: usize) -> Node {
    let cpu = *rng.pick(&[1000u64, 2000, 4000]);
    let memory = *rng.pick(&[2u64, 4, 8]) * 1024 * MIB;
    let pods = *rng.pick(&[3u32, 5, 110]);
    let mut node = Node::new(
        format!("n{i}"),
        Resources {
            cpu_millis: cpu,
            memory_bytes: memory,
            pods,
        },
    );
    if !rng.chance(0.1) {
        let zone = *rng.pick(&["a", "b", "c"]);
        node.zone = Some(zone.into());
        node.labels.insert(LABEL_ZONE.into(), zone.into());
    }
    node.labels
        .insert("arch".into(), (*rng.pick(&["amd64", "arm64"])).into());
    if rng.chance(0.7) {
        node.labels
            .insert(RACK.into(), (*rng.pick(&["r1", "r2"])).into());
    }
    if rng.chance(0.2) {
        let effect = *rng.pick(&[
            TaintEffect::NoSchedule,
            TaintEffect::NoExecute,
            TaintEffect::PreferNoSchedule,
        ]);
        node.taints.push(Taint {
            key: "dedicated".into(),
            value: "x".into(),
            effect,
        });
    }
    node.unschedulable = rng.chance(0.1);
    node.do_not_disrupt = rng.chance(0.05);
    node.capacity_type = if rng.chance(0.5) {
        CapacityType::Spot
    } else {
        CapacityType::OnDemand
    };
    node.hourly_price = (!rng.chance(0.1)).then(|| 0.01 + rng.unit());
    node
}

fn selector(rng: &mut Rng) -> LabelSelector {
    if rng.chance(0.1) {
        LabelSelector::default()
    } else {
        LabelSelector::labels([("app", *rng.pick(&APPS))])
    }
}

fn random_pod(rng: &mut Rng, i: usize) -> Pod {
    let namespace = *rng.pick(&[
        "default",
        "default",
        "default",
        "team",
        "team",
        "team",
        "kube-system",
    ]);
    let cpu = *rng.pick(&[0u64, 50, 100, 250, 500, 1000]);
    let memory = *rng.pick(&[0u64, 128, 512, 1024]) * MIB;
    let mut pod = Pod::new(
        namespace,
        &format!("p{i}"),
        NodeId(0),
        Resources::pod(cpu, memory),
    );
    std::sync::Arc::make_mut(&mut pod.labels).insert("app".into(), (*rng.pick(&APPS)).into());
    pod.owner = match rng.below(50) {
        0..=31 => OwnerKind::ReplicaSet,
        32..=35 => OwnerKind::StatefulSet,
        36..=41 => OwnerKind::DaemonSet,
        42 | 43 => OwnerKind::Job,
        44 => OwnerKind::None,
        45 | 46 => OwnerKind::Static,
        _ => OwnerKind::Other,
    };
    if rng.chance(0.15) {
        pod.node_selector
            .insert("arch".into(), (*rng.pick(&["amd64", "arm64"])).into());
    }
    if rng.chance(0.1) {
        let operator = *rng.pick(&[NodeOperator::In, NodeOperator::NotIn, NodeOperator::Exists]);
        pod.node_affinity = Some(vec![NodeSelectorTerm {
            match_expressions: vec![NodeRequirement {
                key: LABEL_ZONE.into(),
                operator,
                values: vec!["a".into(), "b".into()],
            }],
        }]);
    }
    if rng.chance(0.2) {
        let any = rng.chance(0.5);
        std::sync::Arc::make_mut(&mut pod.tolerations).push(Toleration {
            key: if any {
                String::new()
            } else {
                "dedicated".into()
            },
            operator: if any {
                TolerationOperator::Exists
            } else {
                TolerationOperator::Equal
            },
            value: if any { String::new() } else { "x".into() },
            effect: None,
        });
    }
    if rng.chance(0.2) {
        let namespaces = if rng.chance(0.3) {
            vec![(*rng.pick(&NAMESPACES)).to_owned()]
        } else {
            vec![]
        };
        pod.anti_affinity.push(AntiAffinityTerm {
            selector: selector(rng),
            namespaces,
        });
    }
    for (p, key) in [(0.3, TopologyKey::Zone), (0.2, TopologyKey::Hostname)] {
        if rng.chance(p) {
            pod.topology_spread.push(TopologySpread {
                max_skew: 1 + rng.below(2) as u32,
                key,
                selector: selector(rng),
                min_domains: rng.chance(0.2).then(|| 1 + rng.below(4) as u32),
                honor_node_affinity: !rng.chance(0.2),
                honor_node_taints: rng.chance(0.2),
            });
        }
    }
    let keys = [LABEL_ZONE, LABEL_HOSTNAME, RACK];
    if rng.chance(0.15) {
        for _ in 0..1 + usize::from(rng.chance(0.2)) {
            let key = *rng.pick(&keys);
            pod.pod_affinity.push(pod_term(rng, key));
        }
    }
    if rng.chance(0.1) {
        let key = *rng.pick(&keys);
        pod.topology_anti_affinity.push(pod_term(rng, key));
    }
    pod.do_not_disrupt = rng.chance(0.02);
    if rng.chance(0.02) {
        pod.unmodelled.push("persistent volume claim data".into());
    }
    pod
}

fn pod_term(rng: &mut Rng, key: &str) -> PodAffinityTerm {
    PodAffinityTerm {
        topology_key: key.into(),
        selector: selector(rng),
        namespaces: if rng.chance(0.2) {
            vec![(*rng.pick(&NAMESPACES)).to_owned()]
        } else {
            vec![]
        },
    }
}

/// A random cluster whose initial placement never exceeds allocatable.
fn random_snapshot(seed: u64, nodes: usize, pods: usize, pdbs: usize) -> Snapshot {
    let mut rng = Rng::new(seed);
    let nodes: Vec<Node> = (0..nodes).map(|i| random_node(&mut rng, i)).collect();
    let mut used = vec![Resources::default(); nodes.len()];
    let mut placed = Vec::new();
    for i in 0..pods {
        let mut pod = random_pod(&mut rng, i);
        let start = rng.below(nodes.len());
        let fits = (0..nodes.len())
            .map(|k| (start + k) % nodes.len())
            .find(|&n| {
                used[n]
                    .saturating_add(pod.requests)
                    .fits_within(nodes[n].allocatable)
            });
        if let Some(n) = fits {
            used[n] = used[n].saturating_add(pod.requests);
            pod.node = NodeId(n as u32);
            placed.push(pod);
        }
    }
    let pdbs = (0..pdbs)
        .map(|i| Pdb {
            namespace: (*rng.pick(&NAMESPACES)).into(),
            name: format!("pdb{i}"),
            selector: selector(&mut rng),
            disruptions_allowed: rng.below(4) as u32,
        })
        .collect();
    Snapshot {
        nodes,
        pods: placed,
        pdbs,
    }
}

/// `s` with pod affinity or anti-affinity on a random key added to about a third of its pods, so that
/// nearly every move meets an inter-pod term.
fn with_inter_pod_terms(mut s: Snapshot, seed: u64) -> Snapshot {
    let mut rng = Rng::new(seed ^ 0x7E57);
    for pod in &mut s.pods {
        if rng.chance(0.35) {
            let key = *rng.pick(&[LABEL_ZONE, LABEL_HOSTNAME, RACK]);
            let term = pod_term(&mut rng, key);
            if rng.chance(0.5) {
                pod.pod_affinity.push(term);
            } else {
                pod.topology_anti_affinity.push(term);
            }
        }
    }
    s
}

fn random_options(rng: &mut Rng) -> Options {
    Options {
        mode: *rng.pick(&[
            Mode::WhenUnderutilized,
            Mode::WhenUnderutilized,
            Mode::WhenEmpty,
            Mode::Off,
        ]),
        utilization_threshold: *rng.pick(&[0.3, 0.5, 0.8, 1.0]),
        aggressiveness: rng.below(101) as u8,
        min_nodes: rng.below(4),
        excluded_namespaces: if rng.chance(0.5) {
            Options::default().excluded_namespaces
        } else {
            vec![]
        },
        budget: if rng.chance(0.3) {
            None
        } else {
            Some(rng.below(4))
        },
    }
}

/// Kubernetes label selector semantics: every matchLabels pair present, every expression true.
fn selector_matches(selector: &LabelSelector, labels: &Labels) -> bool {
    let pairs = selector
        .match_labels
        .iter()
        .all(|(k, v)| labels.get(k).is_some_and(|x| x == v));
    let expressions = selector.match_expressions.iter().all(|r| {
        let value = labels.get(&r.key);
        let listed = value.is_some_and(|v| r.values.iter().any(|x| x == v));
        match r.operator {
            SelectorOperator::In => listed,
            SelectorOperator::NotIn => !listed,
            SelectorOperator::Exists => value.is_some(),
            SelectorOperator::DoesNotExist => value.is_none(),
        }
    });
    pairs && expressions
}

/// nodeSelector and required node affinity (terms ORed, expressions ANDed, an empty term matches
/// nothing); only the operators the generator uses.
fn node_labels_ok(pod: &Pod, labels: &Labels) -> bool {
    let selector = pod
        .node_selector
        .iter()
        .all(|(k, v)| labels.get(k).is_some_and(|x| x == v));
    let affinity = match &pod.node_affinity {
        None => true,
        Some(terms) => terms.iter().any(|term| {
            !term.match_expressions.is_empty()
                && term.match_expressions.iter().all(|r| {
                    let value = labels.get(&r.key);
                    let listed = value.is_some_and(|v| r.values.contains(v));
                    match r.operator {
                        NodeOperator::In => listed,
                        NodeOperator::NotIn => !listed,
                        NodeOperator::Exists => value.is_some(),
                        NodeOperator::DoesNotExist => value.is_none(),
                        NodeOperator::Gt | NodeOperator::Lt => {
                            unreachable!("the generator uses no Gt/Lt")
                        }
                    }
                })
        }),
    };
    selector && affinity
}

/// Every NoSchedule/NoExecute taint is tolerated: same key (or an empty key with Exists), same value
/// for Equal, same effect when the toleration names one.
fn taints_ok(pod: &Pod, taints: &[Taint]) -> bool {
    taints
        .iter()
        .filter(|t| matches!(t.effect, TaintEffect::NoSchedule | TaintEffect::NoExecute))
        .all(|taint| {
            pod.tolerations.iter().any(|t| {
                let effect = t.effect.is_none_or(|e| e == taint.effect);
                let key = match (t.key.as_str(), t.operator) {
                    ("", TolerationOperator::Exists) => true,
                    ("", TolerationOperator::Equal) => false,
                    (k, TolerationOperator::Exists) => k == taint.key,
                    (k, TolerationOperator::Equal) => k == taint.key && t.value == taint.value,
                };
                effect && key
            })
        })
}

/// A PDB covers the pods of its namespace its selector matches.
fn pdb_covers(pdb: &Pdb, pod: &Pod) -> bool {
    pdb.namespace == pod.namespace && selector_matches(&pdb.selector, &pod.labels)
}

/// `aggressiveness` 0-100 sets the fill limit from 80% to 100% of allocatable.
fn fill_limit(aggressiveness: u8, allocatable: u64) -> u64 {
    let fill = 0.8 + 0.2 * f64::from(aggressiveness.min(100)) / 100.0;
    (allocatable as f64 * fill).floor() as u64
}

/// Does `owner`'s inter-pod term select `other`: in the listed namespaces (or the owner's own) and
/// matched by the selector?
fn term_selects(owner: &Pod, selector: &LabelSelector, namespaces: &[String], other: &Pod) -> bool {
    let in_scope = if namespaces.is_empty() {
        other.namespace == owner.namespace
    } else {
        namespaces.contains(&other.namespace)
    };
    in_scope && selector_matches(selector, &other.labels)
}

/// The cluster as the replay sees it: which nodes are alive, where each pod is (None = gone).
struct World<'s> {
    s: &'s Snapshot,
    alive: Vec<bool>,
    at: Vec<Option<usize>>,
}

impl World<'_> {
    /// (cpu, memory, pods) requested on `node`.
    fn used(&self, node: usize) -> (u64, u64, u64) {
        self.pods_on(node).fold((0, 0, 0), |(c, m, n), p| {
            (
                c + p.requests.cpu_millis,
                m + p.requests.memory_bytes,
                n + u64::from(p.requests.pods),
            )
        })
    }

    fn pods_on(&self, node: usize) -> impl Iterator<Item = &Pod> {
        self.s
            .pods
            .iter()
            .zip(&self.at)
            .filter(move |(_, at)| **at == Some(node))
            .map(|(p, _)| p)
    }

    /// Every pod on a live node, with the node's index.
    fn placed(&self) -> impl Iterator<Item = (usize, &Pod)> {
        self.s
            .pods
            .iter()
            .zip(&self.at)
            .filter_map(|(p, at)| at.filter(|&n| self.alive[n]).map(|n| (n, p)))
    }

    /// Are nodes `a` and `b` in the same domain of `key` (both labelled, equal values)?
    fn same_domain(&self, key: &str, a: usize, b: usize) -> bool {
        let value = |n: usize| self.s.nodes[n].labels.get(key);
        value(a).is_some_and(|v| value(b) == Some(v))
    }

    /// Every rule kube-scheduler would apply that the planner claims to model.
    fn admits(&self, pod: &Pod, target: usize, aggressiveness: u8) -> Result<(), String> {
        let n = &self.s.nodes[target];
        if !self.alive[target] || n.unschedulable {
            return Err(format!("{} is gone or cordoned", n.name));
        }
        if !node_labels_ok(pod, &n.labels) || !taints_ok(pod, &n.taints) {
            return Err(format!("{} does not accept {}", n.name, pod.key()));
        }
        let (cpu, memory, pods) = self.used(target);
        let a = n.allocatable;
        if pods + 1 > u64::from(a.pods)
            || cpu + pod.requests.cpu_millis > fill_limit(aggressiveness, a.cpu_millis)
            || memory + pod.requests.memory_bytes > fill_limit(aggressiveness, a.memory_bytes)
        {
            return Err(format!("{} overcommitted by {}", n.name, pod.key()));
        }
        self.inter_pod_terms_hold(pod, target)?;
        self.spreads_hold(pod, target)
    }

    /// Anti-affinity (hostname and other keys, both directions) and affinity (kube-scheduler's rule,
    /// with its exception for the first pod of a group that attracts itself).
    fn inter_pod_terms_hold(&self, pod: &Pod, target: usize) -> Result<(), String> {
        let name = &self.s.nodes[target].name;
        for (m, q) in self.placed() {
            let hostname_anti = |x: &Pod, y: &Pod| {
                m == target
                    && x.anti_affinity
                        .iter()
                        .any(|t| term_selects(x, &t.selector, &t.namespaces, y))
            };
            let topology_anti = |x: &Pod, y: &Pod| {
                x.topology_anti_affinity.iter().any(|t| {
                    self.same_domain(&t.topology_key, m, target)
                        && term_selects(x, &t.selector, &t.namespaces, y)
                })
            };
            if hostname_anti(pod, q)
                || hostname_anti(q, pod)
                || topology_anti(pod, q)
                || topology_anti(q, pod)
            {
                return Err(format!(
                    "anti-affinity between {} and {} on {name}",
                    pod.key(),
                    q.key()
                ));
            }
        }
        let terms = &pod.pod_affinity;
        if terms.is_empty() {
            return Ok(());
        }
        let labels = &self.s.nodes[target].labels;
        if terms.iter().any(|t| !labels.contains_key(&t.topology_key)) {
            return Err(format!(
                "{name} lacks a key of {}'s pod affinity",
                pod.key()
            ));
        }
        let all_terms = |q: &Pod| {
            terms
                .iter()
                .all(|t| term_selects(pod, &t.selector, &t.namespaces, q))
        };
        let each_term_met = terms.iter().all(|t| {
            self.placed()
                .any(|(m, q)| self.same_domain(&t.topology_key, m, target) && all_terms(q))
        });
        let any_match = self.placed().any(|(m, q)| {
            all_terms(q)
                && terms
                    .iter()
                    .any(|t| self.s.nodes[m].labels.contains_key(&t.topology_key))
        });
        if each_term_met || (!any_match && all_terms(pod)) {
            Ok(())
        } else {
            Err(format!("pod affinity of {} broken on {name}", pod.key()))
        }
    }

    /// `DoNotSchedule` spreads on zone and hostname, counted on eligible live nodes.
    fn spreads_hold(&self, pod: &Pod, target: usize) -> Result<(), String> {
        let n = &self.s.nodes[target];
        let needs_zone = pod
            .topology_spread
            .iter()
            .any(|c| c.key == TopologyKey::Zone);
        for c in &pod.topology_spread {
            let domain = |m: &Node| match c.key {
                TopologyKey::Zone => m.labels.get(LABEL_ZONE).cloned(),
                TopologyKey::Hostname => Some(m.name.clone()),
            };
            let eligible = |i: usize| {
                let m = &self.s.nodes[i];
                self.alive[i]
                    && (!c.honor_node_affinity || node_labels_ok(pod, &m.labels))
                    && (!c.honor_node_taints || taints_ok(pod, &m.taints))
                    && (!needs_zone || m.labels.contains_key(LABEL_ZONE))
            };
            let mut counts: BTreeMap<String, u64> = BTreeMap::new();
            for i in (0..self.s.nodes.len()).filter(|&i| eligible(i)) {
                if let Some(d) = domain(&self.s.nodes[i]) {
                    let matching = self.pods_on(i).filter(|q| {
                        q.namespace == pod.namespace && selector_matches(&c.selector, &q.labels)
                    });
                    *counts.entry(d).or_insert(0) += matching.count() as u64;
                }
            }
            let Some(target_domain) = domain(n) else {
                return Err(format!("{} has no {:?} domain", n.name, c.key));
            };
            let min = if (counts.len() as u32) < c.min_domains.unwrap_or(0) {
                0
            } else {
                counts.values().copied().min().unwrap_or(0)
            };
            let count = counts.get(&target_domain).copied().unwrap_or(0)
                + u64::from(selector_matches(&c.selector, &pod.labels));
            if count.saturating_sub(min) > u64::from(c.max_skew) {
                return Err(format!(
                    "{:?} spread of {} broken on {}",
                    c.key,
                    pod.key(),
                    n.name
                ));
            }
        }
        Ok(())
    }
}

/// Replay `plan` on `s`, whose first `existing` nodes are the cluster (any after them are new nodes of
/// replacements, not there yet): each removal takes its node (and its pods) away, then places its pods
/// one by one, each checked as kube-scheduler would.
fn replay_removals<'s>(
    s: &'s Snapshot,
    existing: usize,
    o: &Options,
    plan: &Plan,
) -> Result<World<'s>, String> {
    let removed: BTreeSet<usize> = plan.removals.iter().map(|r| r.node.index()).collect();
    let mut world = World {
        s,
        alive: (0..s.nodes.len()).map(|n| n < existing).collect(),
        at: s.pods.iter().map(|p| Some(p.node.index())).collect(),
    };
    for r in &plan.removals {
        let n = r.node.index();
        world.alive[n] = false;
        for (i, p) in s.pods.iter().enumerate() {
            if p.node.index() == n {
                world.at[i] = None;
            }
        }
        for m in plan.moves.iter().filter(|m| m.from == r.node) {
            let pod = &s.pods[m.pod.index()];
            if removed.contains(&m.to.index()) {
                return Err(format!("{} lands on a removed node", pod.key()));
            }
            world.admits(pod, m.to.index(), o.aggressiveness)?;
            world.at[m.pod.index()] = Some(m.to.index());
        }
    }
    Ok(world)
}

/// A pod no plan may move: do-not-disrupt, unmodelled constraints, no controller, an excluded
/// namespace, or covered by more than one PDB.
fn pinned(s: &Snapshot, o: &Options, p: &Pod) -> bool {
    p.do_not_disrupt
        || !p.unmodelled.is_empty()
        || p.owner == OwnerKind::None
        || o.excluded_namespaces.contains(&p.namespace)
        || s.pdbs.iter().filter(|b| pdb_covers(b, p)).count() > 1
}

/// Check `plan` against `s` and `o` from first principles.
fn verify(s: &Snapshot, o: &Options, plan: &Plan) -> Result<(), String> {
    let removed: BTreeSet<usize> = plan.removals.iter().map(|r| r.node.index()).collect();
    if removed.len() != plan.removals.len() {
        return Err("a node is removed twice".into());
    }
    let kept: BTreeSet<usize> = plan.kept.iter().map(|k| k.node.index()).collect();
    if kept.len() != plan.kept.len()
        || kept.len() + removed.len() != s.nodes.len()
        || !kept.is_disjoint(&removed)
    {
        return Err("every node must be removed or kept exactly once".into());
    }
    if o.mode == Mode::Off && !removed.is_empty() {
        return Err("mode Off removed nodes".into());
    }
    if o.mode == Mode::WhenEmpty && !plan.moves.is_empty() {
        return Err("mode WhenEmpty moved pods".into());
    }
    if !removed.is_empty() && s.nodes.len() - removed.len() < o.min_nodes {
        return Err("went below nodes.min".into());
    }
    for &n in &removed {
        let node = &s.nodes[n];
        if node.do_not_disrupt || node.unschedulable {
            return Err(format!("removed protected node {}", node.name));
        }
    }
    // Exactly the movable pods of removed nodes move, and none of them is pinned.
    let expected: BTreeSet<usize> = s
        .pods
        .iter()
        .enumerate()
        .filter(|(_, p)| removed.contains(&p.node.index()))
        .filter(|(_, p)| !matches!(p.owner, OwnerKind::DaemonSet | OwnerKind::Static))
        .map(|(i, _)| i)
        .collect();
    let moved: BTreeSet<usize> = plan.moves.iter().map(|m| m.pod.index()).collect();
    if moved != expected || moved.len() != plan.moves.len() {
        return Err(format!(
            "moved {moved:?}, expected the movable pods of removed nodes {expected:?}"
        ));
    }
    for &i in &moved {
        let p = &s.pods[i];
        if pinned(s, o, p) {
            return Err(format!("moved pinned pod {}", p.key()));
        }
    }
    for r in &plan.removals {
        let has_moves = plan.moves.iter().any(|m| m.from == r.node);
        let n = &s.nodes[r.node.index()];
        let on_it = s.pods.iter().filter(|p| p.node == r.node);
        let (cpu, memory) = on_it.fold((0u64, 0u64), |(c, m), p| {
            (c + p.requests.cpu_millis, m + p.requests.memory_bytes)
        });
        let share = |used: u64, total: u64| match (used, total) {
            (0, _) => 0.0,
            (_, 0) => 1.0,
            (u, t) => u as f64 / t as f64,
        };
        let utilization =
            share(cpu, n.allocatable.cpu_millis).max(share(memory, n.allocatable.memory_bytes));
        if has_moves && utilization > o.utilization_threshold {
            return Err(format!("removed node above threshold: {utilization}"));
        }
    }
    for pdb in &s.pdbs {
        let used = plan
            .moves
            .iter()
            .filter(|m| pdb_covers(pdb, &s.pods[m.pod.index()]))
            .count();
        if used > pdb.disruptions_allowed as usize {
            return Err(format!(
                "PDB {} exceeded: {used} > {}",
                pdb.key(),
                pdb.disruptions_allowed
            ));
        }
    }
    let world = replay_removals(s, s.nodes.len(), o, plan)?;
    for n in 0..s.nodes.len() {
        let received = plan.moves.iter().any(|m| m.to.index() == n);
        let (cpu, memory, pods) = world.used(n);
        let a = s.nodes[n].allocatable;
        if received && (cpu > a.cpu_millis || memory > a.memory_bytes || pods > u64::from(a.pods)) {
            return Err(format!("{} overcommitted at the end", s.nodes[n].name));
        }
    }
    let expected_savings: f64 = plan
        .removals
        .iter()
        .filter_map(|r| s.nodes[r.node.index()].hourly_price)
        .sum();
    if plan.savings_hourly < 0.0 || (plan.savings_hourly - expected_savings).abs() > 1e-9 {
        return Err(format!(
            "savings {} != {expected_savings}",
            plan.savings_hourly
        ));
    }
    let flat: Vec<NodeId> = plan.batches.iter().flatten().copied().collect();
    let order: Vec<NodeId> = plan.removals.iter().map(|r| r.node).collect();
    if flat != order
        || plan
            .batches
            .iter()
            .any(|b| b.is_empty() || b.len() > plan.budget)
    {
        return Err("batches do not split the removals by the budget".into());
    }
    Ok(())
}

/// 1-4 random offers in the zones of [`random_node`], some carrying the rack label, some tainted.
fn random_replace_options(rng: &mut Rng) -> ReplaceOptions {
    let offers = (0..1 + rng.below(4))
        .map(|i| {
            let zone = *rng.pick(&["a", "b", "c"]);
            let mut labels = Labels::from([
                (LABEL_ZONE.to_owned(), zone.to_owned()),
                (
                    "arch".to_owned(),
                    (*rng.pick(&["amd64", "arm64"])).to_owned(),
                ),
            ]);
            if rng.chance(0.5) {
                labels.insert(RACK.into(), (*rng.pick(&["r1", "r2"])).into());
            }
            let taints = if rng.chance(0.2) {
                vec![Taint {
                    key: "dedicated".into(),
                    value: "x".into(),
                    effect: TaintEffect::NoSchedule,
                }]
            } else {
                vec![]
            };
            Offer {
                instance_type: format!("t{i}"),
                zone: zone.into(),
                capacity_type: *rng.pick(&[CapacityType::Spot, CapacityType::OnDemand]),
                hourly: 0.01 + rng.unit(),
                allocatable: Resources {
                    cpu_millis: *rng.pick(&[2000u64, 4000, 8000]),
                    memory_bytes: *rng.pick(&[4u64, 8, 16]) * 1024 * MIB,
                    pods: 110,
                },
                labels,
                taints,
            }
        })
        .collect();
    ReplaceOptions {
        offers,
        margin: *rng.pick(&[0.0, 0.1]),
        max_nodes: 1 + rng.below(5),
        spot: rng.chance(0.6).then(|| SpotTarget {
            percentage: *rng.pick(&[0u32, 50, 100]),
            on_demand_base: rng.below(3),
        }),
    }
}

/// Does a pod's term `key` have a known value on a new node of `offer`: the hostname (its own), the
/// zone (the offer's) or one of the offer's labels?
fn offer_models(offer: &Offer, key: &str) -> bool {
    key == LABEL_HOSTNAME || key == LABEL_ZONE || offer.labels.contains_key(key)
}

/// Check `replacements` of `plan` from first principles: each replaces kept, unprotected nodes no
/// earlier step touched by one cheaper new node that holds exactly their movable pods (capacity with
/// their DaemonSets, labels, taints, PDBs, nodes.min), and a replay lands those pods on it one by one in
/// the listed order, each meeting its inter-pod terms as kube-scheduler would, on a snapshot where every
/// new node is a node with the offer's labels, its zone and a hostname of its own.
fn verify_replacements(
    s: &Snapshot,
    o: &Options,
    plan: &Plan,
    replace: &ReplaceOptions,
    replacements: &[Replacement],
) -> Result<(), String> {
    let existing = s.nodes.len();
    let mut x = s.clone();
    for (j, r) in replacements.iter().enumerate() {
        let mut node = Node::new(format!("(new node {j})"), r.with.allocatable);
        node.labels.extend(r.with.labels.clone());
        node.labels.insert(LABEL_ZONE.into(), r.with.zone.clone());
        node.zone = Some(r.with.zone.clone());
        node.taints = r.with.taints.clone();
        x.nodes.push(node);
    }
    let mut world = replay_removals(&x, existing, o, plan)?;
    let removed: BTreeSet<usize> = plan.removals.iter().map(|r| r.node.index()).collect();
    let destinations: BTreeSet<usize> = plan.moves.iter().map(|m| m.to.index()).collect();
    let mut touched = removed.clone();
    let mut live = existing - removed.len();
    let mut pdb_left: Vec<u32> = s
        .pdbs
        .iter()
        .map(|b| {
            let used = plan
                .moves
                .iter()
                .filter(|m| pdb_covers(b, &s.pods[m.pod.index()]))
                .count() as u32;
            b.disruptions_allowed.saturating_sub(used)
        })
        .collect();
    for (j, r) in replacements.iter().enumerate() {
        let new = existing + j;
        let mut price = 0.0;
        for id in &r.replace {
            let n = &s.nodes[id.index()];
            if !touched.insert(id.index()) {
                return Err(format!("{} removed or replaced already", n.name));
            }
            if destinations.contains(&id.index()) {
                return Err(format!(
                    "{} replaced while it receives pods of the plan",
                    n.name
                ));
            }
            if n.do_not_disrupt || n.unschedulable {
                return Err(format!("replaced protected node {}", n.name));
            }
            price += n
                .hourly_price
                .ok_or(format!("replaced unpriced node {}", n.name))?;
        }
        let movable = |p: &Pod| !matches!(p.owner, OwnerKind::DaemonSet | OwnerKind::Static);
        let expected: BTreeSet<usize> = (0..s.pods.len())
            .filter(|&i| r.replace.contains(&s.pods[i].node) && movable(&s.pods[i]))
            .collect();
        let moved: BTreeSet<usize> = r.pods.iter().map(|p| p.index()).collect();
        if moved != expected || moved.len() != r.pods.len() {
            return Err(format!(
                "replacement moves {moved:?}, expected {expected:?}"
            ));
        }
        let offer = &r.with;
        // The DaemonSet pods of the fullest replaced node run on the new node too.
        let (mut cpu, mut memory, mut slots) = (0u64, 0u64, 0u64);
        for id in &r.replace {
            let daemons = s.pods.iter().filter(|p| p.node == *id && !movable(p));
            let (c, m, n) = daemons.fold((0, 0, 0), |(c, m, n), p| {
                (
                    c + p.requests.cpu_millis,
                    m + p.requests.memory_bytes,
                    n + u64::from(p.requests.pods),
                )
            });
            if (c, m) > (cpu, memory) {
                (cpu, memory, slots) = (c, m, n);
            }
        }
        for &i in &moved {
            let p = &s.pods[i];
            if pinned(s, o, p) || !p.topology_spread.is_empty() {
                return Err(format!(
                    "replacement moves pinned or spread pod {}",
                    p.key()
                ));
            }
            if !node_labels_ok(p, &offer.labels) || !taints_ok(p, &offer.taints) {
                return Err(format!(
                    "{} does not accept {}",
                    offer.instance_type,
                    p.key()
                ));
            }
            cpu += p.requests.cpu_millis;
            memory += p.requests.memory_bytes;
            slots += u64::from(p.requests.pods);
        }
        let a = offer.allocatable;
        if cpu > fill_limit(o.aggressiveness, a.cpu_millis)
            || memory > fill_limit(o.aggressiveness, a.memory_bytes)
            || slots > u64::from(a.pods)
        {
            return Err(format!("new node {} overcommitted", offer.instance_type));
        }
        for (b, left) in s.pdbs.iter().zip(&mut pdb_left) {
            let used = moved.iter().filter(|&&i| pdb_covers(b, &s.pods[i])).count() as u32;
            if used > 0 && *left == 0 {
                return Err(format!("PDB {} allows no more disruptions", b.key()));
            }
            *left = left.saturating_sub(used);
        }
        let live_after = live + 1 - r.replace.len();
        if live_after < o.min_nodes.min(live) {
            return Err("a replacement went below nodes.min".into());
        }
        live = live_after;
        let cheap_enough = match r.reason {
            ReplaceReason::Consolidation => offer.hourly <= price * (1.0 - replace.margin),
            ReplaceReason::SpotMix => {
                offer.capacity_type == CapacityType::Spot
                    && offer.hourly < price
                    && r.replace.len() == 1
            }
        };
        if !cheap_enough
            || (r.replaced_hourly - price).abs() > 1e-9
            || (r.savings_hourly - (price - offer.hourly)).abs() > 1e-9
        {
            return Err(format!(
                "replacement by {} does not save as claimed",
                offer.instance_type
            ));
        }
        // The replay: the replaced nodes leave with their pods, which land on the new node in order.
        for id in &r.replace {
            world.alive[id.index()] = false;
            for (i, p) in s.pods.iter().enumerate() {
                if p.node == *id {
                    world.at[i] = None;
                }
            }
        }
        world.alive[new] = true;
        for id in &r.pods {
            unknown_domain_clash(&world, &s.pods[id.index()], offer)?;
            world.inter_pod_terms_hold(&s.pods[id.index()], new)?;
            world.at[id.index()] = Some(new);
        }
    }
    Ok(())
}

/// A new node of `offer` has no known value for a term's key the offer does not model: the real node
/// may share any resident's domain. So `pod` must own no pod affinity on such a key, and no
/// anti-affinity on one (its own, or a resident's selecting it) may meet a resident whose node has it.
fn unknown_domain_clash(world: &World<'_>, pod: &Pod, offer: &Offer) -> Result<(), String> {
    if let Some(t) = pod
        .pod_affinity
        .iter()
        .find(|t| !offer_models(offer, &t.topology_key))
    {
        return Err(format!(
            "{}'s pod affinity on {} cannot be known to hold",
            pod.key(),
            t.topology_key
        ));
    }
    for (m, q) in world.placed() {
        let clash = |owner: &Pod, other: &Pod| {
            owner.topology_anti_affinity.iter().any(|t| {
                !offer_models(offer, &t.topology_key)
                    && world.s.nodes[m].labels.contains_key(&t.topology_key)
                    && term_selects(owner, &t.selector, &t.namespaces, other)
            })
        };
        if clash(pod, q) || clash(q, pod) {
            return Err(format!(
                "anti-affinity between {} and {} on a key {} does not model",
                pod.key(),
                q.key(),
                offer.instance_type
            ));
        }
    }
    Ok(())
}

/// The replacements of `p` under random offers, checked.
fn replacements_hold(
    s: &Snapshot,
    o: &Options,
    p: &Plan,
    seed: u64,
) -> Result<Vec<Replacement>, String> {
    let replace = random_replace_options(&mut Rng::new(seed ^ 0x5EED));
    let r = plan_replacements(s, p, o, &replace);
    verify_replacements(s, o, p, &replace, &r)
        .map_err(|why| format!("{why}\nreplacements: {r:#?}"))?;
    Ok(r)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn plans_are_valid_and_match_the_naive_planner(
        seed in any::<u64>(),
        nodes in 1usize..8,
        pods in 0usize..40,
        pdbs in 0usize..3,
    ) {
        let s = random_snapshot(seed, nodes, pods, pdbs);
        let o = random_options(&mut Rng::new(seed ^ 0xABCD));
        let fast = plan(&s, &o).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let slow = plan_naive(&s, &o).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&fast, &slow);
        if let Err(why) = verify(&s, &o, &fast) {
            return Err(TestCaseError::fail(format!("{why}\nplan: {fast:#?}")));
        }
        replacements_hold(&s, &o, &fast, seed).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn plans_under_dense_inter_pod_terms_are_valid_and_match_the_naive_planner(
        seed in any::<u64>(),
        nodes in 2usize..9,
        pods in 5usize..40,
    ) {
        let s = with_inter_pod_terms(random_snapshot(seed, nodes, pods, 1), seed);
        let o = Options { budget: Some(4), utilization_threshold: 0.8, ..Options::default() };
        let fast = plan(&s, &o).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let slow = plan_naive(&s, &o).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&fast, &slow);
        if let Err(why) = verify(&s, &o, &fast) {
            return Err(TestCaseError::fail(format!("{why}\nplan: {fast:#?}")));
        }
        replacements_hold(&s, &o, &fast, seed).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn scenario_plans_are_valid(seed in any::<u64>(), nodes in 5usize..40) {
        let s = scenario::generate(seed, nodes, nodes * 18);
        let o = Options { budget: Some(3), ..Options::default() };
        let fast = plan(&s, &o).map_err(|e| TestCaseError::fail(e.to_string()))?;
        if let Err(why) = verify(&s, &o, &fast) {
            return Err(TestCaseError::fail(why));
        }
        replacements_hold(&s, &o, &fast, seed).map_err(TestCaseError::fail)?;
        prop_assert_eq!(fast, plan_naive(&s, &o).map_err(|e| TestCaseError::fail(e.to_string()))?);
    }
}

#[test]
fn random_clusters_exercise_removals_moves_and_every_refusal() {
    // Guard against a generator so constrained that the properties hold vacuously.
    let (mut removals, mut moves, mut affine_moves) = (0, 0, 0);
    let mut refusals: BTreeMap<String, usize> = BTreeMap::new();
    for seed in 0..300u64 {
        let s = random_snapshot(seed, 6, 20, 2);
        let o = Options {
            budget: Some(3),
            ..Options::default()
        };
        let p = plan(&s, &o).unwrap();
        if let Err(why) = verify(&s, &o, &p) {
            panic!("seed {seed}: {why}");
        }
        removals += p.removals.len();
        moves += p.moves.len();
        affine_moves += p
            .moves
            .iter()
            .filter(|m| {
                let pod = &s.pods[m.pod.index()];
                !pod.pod_affinity.is_empty() || !pod.topology_anti_affinity.is_empty()
            })
            .count();
        for k in &p.kept {
            if let KeepReason::NoRoom { why, .. } = k.reason {
                *refusals.entry(format!("{why:?}")).or_insert(0) += 1;
            }
        }
    }
    assert!(
        removals > 100 && moves > 50 && affine_moves > 10,
        "removals {removals}, moves {moves}, moves under inter-pod terms {affine_moves}"
    );
    assert_eq!(
        refusals.len(),
        6,
        "every kind of refusal occurs: {refusals:?}"
    );
}

#[test]
fn random_clusters_exercise_replacements_under_inter_pod_terms() {
    // Guard against offers so far from the clusters that the replacement replay holds vacuously.
    let (mut replacements, mut affine_pods) = (0, 0);
    for seed in 0..300u64 {
        let mut s = with_inter_pod_terms(random_snapshot(seed, 8, 30, 1), seed);
        // Spreads pin a node for replacement; without them most nodes are candidates.
        for pod in &mut s.pods {
            pod.topology_spread.clear();
        }
        // Only empty nodes are removed: every other node is a replacement candidate.
        let o = Options {
            budget: Some(3),
            utilization_threshold: 0.0,
            ..Options::default()
        };
        let p = plan(&s, &o).unwrap();
        let r =
            replacements_hold(&s, &o, &p, seed).unwrap_or_else(|why| panic!("seed {seed}: {why}"));
        replacements += r.len();
        affine_pods += r
            .iter()
            .flat_map(|r| &r.pods)
            .filter(|id| {
                let pod = &s.pods[id.index()];
                !pod.pod_affinity.is_empty() || !pod.topology_anti_affinity.is_empty()
            })
            .count();
    }
    assert!(
        replacements > 50 && affine_pods > 20,
        "replacements {replacements}, moved pods under inter-pod terms {affine_pods}"
    );
}
