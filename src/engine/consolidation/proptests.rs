//! Property tests of the planner on random small clusters: the indexed planner agrees with the naive one,
//! and an independent replay of every plan (written from the Kubernetes rules, not from the planner's
//! code) finds no overcommitted node, no pinned, do-not-disrupt or DaemonSet pod moved, no PDB allowance
//! exceeded, no constraint the planner models broken at placement, and savings >= 0.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::scenario::Rng;
use super::*;
use crate::engine::snapshot::{
    AntiAffinityTerm, CapacityType, LABEL_ZONE, LabelSelector, Node, NodeOperator, NodeRequirement,
    NodeSelectorTerm, OwnerKind, Pdb, Pod, Resources, Taint, TaintEffect, Toleration,
    TolerationOperator, TopologyKey, TopologySpread, tolerates_all,
};

const MIB: u64 = 1 << 20;
const NAMESPACES: [&str; 3] = ["default", "team", "kube-system"];
const APPS: [&str; 4] = ["a", "b", "c", "d"];

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
    pod.do_not_disrupt = rng.chance(0.02);
    if rng.chance(0.02) {
        pod.unmodelled.push("required pod affinity".into());
    }
    pod
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

/// The cluster as the replay sees it: which nodes are alive, where each pod is (None = gone).
struct World<'s> {
    s: &'s Snapshot,
    alive: Vec<bool>,
    at: Vec<Option<usize>>,
}

impl World<'_> {
    fn used(&self, node: usize) -> Resources {
        self.s
            .pods
            .iter()
            .zip(&self.at)
            .filter(|(_, at)| **at == Some(node))
            .fold(Resources::default(), |acc, (p, _)| {
                acc.saturating_add(p.requests)
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

    /// Every rule kube-scheduler would apply that the planner claims to model.
    fn admits(&self, pod: &Pod, target: usize, fill: f64) -> Result<(), String> {
        let n = &self.s.nodes[target];
        if !self.alive[target] || n.unschedulable {
            return Err(format!("{} is gone or cordoned", n.name));
        }
        if !pod.accepts_node(&n.labels, &n.taints) {
            return Err(format!("{} does not accept {}", n.name, pod.key()));
        }
        let after = self.used(target).saturating_add(pod.requests);
        let a = n.allocatable;
        if after.pods > a.pods
            || after.cpu_millis > (a.cpu_millis as f64 * fill).floor() as u64
            || after.memory_bytes > (a.memory_bytes as f64 * fill).floor() as u64
        {
            return Err(format!("{} overcommitted by {}", n.name, pod.key()));
        }
        let repels = |x: &Pod, y: &Pod| {
            x.anti_affinity.iter().any(|t| {
                let namespaces: Vec<&str> = if t.namespaces.is_empty() {
                    vec![x.namespace.as_str()]
                } else {
                    t.namespaces.iter().map(String::as_str).collect()
                };
                namespaces.contains(&y.namespace.as_str()) && t.selector.matches(&y.labels)
            })
        };
        if self
            .pods_on(target)
            .any(|q| repels(pod, q) || repels(q, pod))
        {
            return Err(format!(
                "anti-affinity broken by {} on {}",
                pod.key(),
                n.name
            ));
        }
        let needs_zone = pod
            .topology_spread
            .iter()
            .any(|c| c.key == TopologyKey::Zone);
        for c in &pod.topology_spread {
            let domain = |m: &Node| match c.key {
                TopologyKey::Zone => m.zone.clone(),
                TopologyKey::Hostname => Some(m.name.clone()),
            };
            let eligible = |i: usize| {
                let m = &self.s.nodes[i];
                self.alive[i]
                    && (!c.honor_node_affinity || pod.matches_node_labels(&m.labels))
                    && (!c.honor_node_taints || tolerates_all(&pod.tolerations, &m.taints))
                    && (!needs_zone || m.zone.is_some())
            };
            let mut counts: BTreeMap<String, u64> = BTreeMap::new();
            for i in (0..self.s.nodes.len()).filter(|&i| eligible(i)) {
                if let Some(d) = domain(&self.s.nodes[i]) {
                    let matching = self
                        .pods_on(i)
                        .filter(|q| q.namespace == pod.namespace && c.selector.matches(&q.labels));
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
                + u64::from(c.selector.matches(&pod.labels));
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
        let pdbs = s.pdbs.iter().filter(|b| b.covers(p)).count();
        if p.do_not_disrupt
            || !p.unmodelled.is_empty()
            || p.owner == OwnerKind::None
            || o.excluded_namespaces.contains(&p.namespace)
            || pdbs > 1
        {
            return Err(format!("moved pinned pod {}", p.key()));
        }
    }
    for r in &plan.removals {
        let has_moves = plan.moves.iter().any(|m| m.from == r.node);
        if has_moves && r.utilization > o.utilization_threshold {
            return Err(format!("removed node above threshold: {}", r.utilization));
        }
    }
    for pdb in &s.pdbs {
        let used = plan
            .moves
            .iter()
            .filter(|m| pdb.covers(&s.pods[m.pod.index()]))
            .count();
        if used > pdb.disruptions_allowed as usize {
            return Err(format!(
                "PDB {} exceeded: {used} > {}",
                pdb.key(),
                pdb.disruptions_allowed
            ));
        }
    }
    // Replay: each removal takes its node (and its pods) away, then places its pods one by one.
    let mut world = World {
        s,
        alive: vec![true; s.nodes.len()],
        at: s.pods.iter().map(|p| Some(p.node.index())).collect(),
    };
    let fill = o.max_fill();
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
            world.admits(pod, m.to.index(), fill)?;
            world.at[m.pod.index()] = Some(m.to.index());
        }
    }
    for n in 0..s.nodes.len() {
        let received = plan.moves.iter().any(|m| m.to.index() == n);
        if received && !world.used(n).fits_within(s.nodes[n].allocatable) {
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
    }

    #[test]
    fn scenario_plans_are_valid(seed in any::<u64>(), nodes in 5usize..40) {
        let s = scenario::generate(seed, nodes, nodes * 18);
        let o = Options { budget: Some(3), ..Options::default() };
        let fast = plan(&s, &o).map_err(|e| TestCaseError::fail(e.to_string()))?;
        if let Err(why) = verify(&s, &o, &fast) {
            return Err(TestCaseError::fail(why));
        }
        prop_assert_eq!(fast, plan_naive(&s, &o).map_err(|e| TestCaseError::fail(e.to_string()))?);
    }
}

#[test]
fn random_clusters_exercise_removals_moves_and_every_refusal() {
    // Guard against a generator so constrained that the properties hold vacuously.
    let (mut removals, mut moves) = (0, 0);
    let mut refusals: BTreeMap<String, usize> = BTreeMap::new();
    for seed in 0..300u64 {
        let s = random_snapshot(seed, 6, 20, 2);
        let p = plan(
            &s,
            &Options {
                budget: Some(3),
                ..Options::default()
            },
        )
        .unwrap();
        removals += p.removals.len();
        moves += p.moves.len();
        for k in &p.kept {
            if let KeepReason::NoRoom { why, .. } = k.reason {
                *refusals.entry(format!("{why:?}")).or_insert(0) += 1;
            }
        }
    }
    assert!(
        removals > 100 && moves > 50,
        "removals {removals}, moves {moves}"
    );
    assert_eq!(
        refusals.len(),
        5,
        "every kind of refusal occurs: {refusals:?}"
    );
}
