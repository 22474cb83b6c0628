//! The baseline placer: for every pod, scan the destinations in order and check every constraint from the
//! raw snapshot, recounting spread domains by walking every live node's pods. No interning, no index, no
//! incremental counts. It makes the same decisions as the indexed placer, so it is both the benchmark
//! baseline and the property tests' oracle.

use std::collections::BTreeMap;

use crate::engine::snapshot::{
    Node, NodeId, Pod, PodAffinityTerm, PodId, Resources, TopologyKey, TopologySpread,
    tolerates_all,
};

use super::affinity::selects;
use super::context::Context;
use super::{NoRoom, Placer};

pub(super) struct NaivePlacer<'c, 'a> {
    context: &'c Context<'a>,
    alive: Vec<bool>,
    used: Vec<Resources>,
    residents: Vec<Vec<PodId>>,
    /// Some pod has anti-affinity on a key other than the hostname (else that check is skipped).
    topology_anti: bool,
    current: Option<NodeId>,
    undo: Vec<(PodId, NodeId)>,
}

impl<'c, 'a> NaivePlacer<'c, 'a> {
    pub(super) fn new(context: &'c Context<'a>) -> Self {
        let snapshot = context.snapshot;
        let mut residents = vec![Vec::new(); snapshot.nodes.len()];
        for (i, pod) in snapshot.pods.iter().enumerate() {
            residents[pod.node.index()].push(PodId(i as u32));
        }
        NaivePlacer {
            context,
            alive: vec![true; snapshot.nodes.len()],
            used: snapshot.requested_per_node(),
            residents,
            topology_anti: snapshot
                .pods
                .iter()
                .any(|p| !p.topology_anti_affinity.is_empty()),
            current: None,
            undo: Vec::new(),
        }
    }

    fn pod(&self, id: PodId) -> &'a Pod {
        &self.context.snapshot.pods[id.index()]
    }

    fn node(&self, id: NodeId) -> &'a Node {
        &self.context.snapshot.nodes[id.index()]
    }

    fn check(&self, id: PodId, node: NodeId) -> Result<(), NoRoom> {
        let pod = self.pod(id);
        for &other in &self.residents[node.index()] {
            let q = self.pod(other);
            if repels(pod, q) || repels(q, pod) {
                return Err(NoRoom::AntiAffinity);
            }
        }
        self.check_topology_anti_affinity(pod, node)?;
        self.check_pod_affinity(pod, node)?;
        let needs_zone = pod
            .topology_spread
            .iter()
            .any(|s| s.key == TopologyKey::Zone);
        for spread in &pod.topology_spread {
            self.check_spread(pod, spread, needs_zone, node)?;
        }
        Ok(())
    }

    /// Pods on live nodes, with their node.
    fn placed(&self) -> impl Iterator<Item = (&'a Node, &'a Pod)> + '_ {
        let nodes = &self.context.snapshot.nodes;
        (0..nodes.len())
            .filter(|&m| self.alive[m])
            .flat_map(move |m| {
                self.residents[m]
                    .iter()
                    .map(move |&q| (&nodes[m], self.pod(q)))
            })
    }

    /// Anti-affinity on keys other than the hostname: the pod's own terms, and every placed pod's.
    fn check_topology_anti_affinity(&self, pod: &Pod, target: NodeId) -> Result<(), NoRoom> {
        if !self.topology_anti {
            return Ok(());
        }
        let labels = &self.node(target).labels;
        let same_domain = |term: &PodAffinityTerm, m: &Node| {
            labels
                .get(&term.topology_key)
                .is_some_and(|v| m.labels.get(&term.topology_key) == Some(v))
        };
        for (m, q) in self.placed() {
            let mine = pod
                .topology_anti_affinity
                .iter()
                .any(|t| same_domain(t, m) && selects(pod, t, q));
            let theirs = q
                .topology_anti_affinity
                .iter()
                .any(|t| same_domain(t, m) && selects(q, t, pod));
            if mine || theirs {
                return Err(NoRoom::AntiAffinity);
            }
        }
        Ok(())
    }

    /// Required pod affinity, kube-scheduler's rule (see [`super::affinity`]).
    fn check_pod_affinity(&self, pod: &Pod, target: NodeId) -> Result<(), NoRoom> {
        let terms = &pod.pod_affinity;
        if terms.is_empty() {
            return Ok(());
        }
        let labels = &self.node(target).labels;
        let Some(values) = terms
            .iter()
            .map(|t| labels.get(&t.topology_key))
            .collect::<Option<Vec<_>>>()
        else {
            return Err(NoRoom::PodAffinity);
        };
        let mut satisfied = vec![false; terms.len()];
        let mut present = false;
        for (m, q) in self.placed() {
            if !terms.iter().all(|t| selects(pod, t, q)) {
                continue;
            }
            for (i, t) in terms.iter().enumerate() {
                if let Some(v) = m.labels.get(&t.topology_key) {
                    present = true;
                    satisfied[i] |= v == values[i];
                }
            }
        }
        let first_of_its_group = !present && terms.iter().all(|t| selects(pod, t, pod));
        if satisfied.iter().all(|s| *s) || first_of_its_group {
            Ok(())
        } else {
            Err(NoRoom::PodAffinity)
        }
    }

    fn check_spread(
        &self,
        pod: &Pod,
        spread: &TopologySpread,
        needs_zone: bool,
        target: NodeId,
    ) -> Result<(), NoRoom> {
        let is_domain = |m: &Node| {
            (!spread.honor_node_affinity || pod.matches_node_labels(&m.labels))
                && (!spread.honor_node_taints || tolerates_all(&pod.tolerations, &m.taints))
                && (!needs_zone || m.zone.is_some())
        };
        let count_on = |m: usize| {
            self.residents[m]
                .iter()
                .filter(|&&q| {
                    let q = self.pod(q);
                    q.namespace == pod.namespace && spread.selector.matches(&q.labels)
                })
                .count() as u64
        };
        let own = u64::from(spread.selector.matches(&pod.labels));
        let nodes = &self.context.snapshot.nodes;
        let domains = (0..nodes.len()).filter(|&m| self.alive[m] && is_domain(&nodes[m]));
        let (count, min, kind) = match spread.key {
            TopologyKey::Zone => {
                let Some(zone) = self.node(target).zone.as_deref() else {
                    return Err(NoRoom::ZoneSpread);
                };
                let mut per_zone: BTreeMap<&str, u64> = BTreeMap::new();
                for m in domains {
                    if let Some(z) = nodes[m].zone.as_deref() {
                        *per_zone.entry(z).or_insert(0) += count_on(m);
                    }
                }
                let min = if per_zone.len() < spread.min_domains.unwrap_or(0) as usize {
                    0
                } else {
                    per_zone.values().copied().min().unwrap_or(0)
                };
                (
                    per_zone.get(zone).copied().unwrap_or(0),
                    min,
                    NoRoom::ZoneSpread,
                )
            }
            TopologyKey::Hostname => {
                let counts: Vec<u64> = domains.map(count_on).collect();
                let min = if counts.len() < spread.min_domains.unwrap_or(0) as usize {
                    0
                } else {
                    counts.iter().copied().min().unwrap_or(0)
                };
                (count_on(target.index()), min, NoRoom::HostnameSpread)
            }
        };
        if (count + own).saturating_sub(min) > u64::from(spread.max_skew) {
            Err(kind)
        } else {
            Ok(())
        }
    }
}

/// Does one of `pod`'s anti-affinity terms match `other`?
fn repels(pod: &Pod, other: &Pod) -> bool {
    pod.anti_affinity.iter().any(|term| {
        let in_scope = if term.namespaces.is_empty() {
            other.namespace == pod.namespace
        } else {
            term.namespaces.contains(&other.namespace)
        };
        in_scope && term.selector.matches(&other.labels)
    })
}

impl Placer for NaivePlacer<'_, '_> {
    fn begin(&mut self, candidate: NodeId) {
        self.current = Some(candidate);
        self.alive[candidate.index()] = false;
    }

    fn find(&mut self, id: PodId) -> Result<NodeId, NoRoom> {
        let pod = self.pod(id);
        let mut any_match = false;
        let mut refused = None;
        for &node in &self.context.destinations {
            let n = self.node(node);
            if !self.alive[node.index()]
                || n.unschedulable
                || !pod.accepts_node(&n.labels, &n.taints)
            {
                continue;
            }
            any_match = true;
            if !self.context.limits[node.index()].admits(self.used[node.index()], pod.requests) {
                continue;
            }
            match self.check(id, node) {
                Ok(()) => return Ok(node),
                Err(why) => refused = Some(why),
            }
        }
        Err(refused.unwrap_or(if any_match {
            NoRoom::Capacity
        } else {
            NoRoom::NoMatchingNode
        }))
    }

    fn place(&mut self, pod: PodId, to: NodeId) {
        let request = self.pod(pod).requests;
        self.used[to.index()] = self.used[to.index()].saturating_add(request);
        self.residents[to.index()].push(pod);
        self.undo.push((pod, to));
    }

    fn commit(&mut self) {
        self.undo.clear();
        self.current = None;
    }

    fn rollback(&mut self) {
        while let Some((pod, to)) = self.undo.pop() {
            let request = self.pod(pod).requests;
            let used = &mut self.used[to.index()];
            used.cpu_millis -= request.cpu_millis;
            used.memory_bytes -= request.memory_bytes;
            used.pods -= request.pods;
            self.residents[to.index()].pop();
        }
        if let Some(candidate) = self.current.take() {
            self.alive[candidate.index()] = true;
        }
    }
}
