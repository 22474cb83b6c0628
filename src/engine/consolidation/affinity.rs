//! Required inter-pod affinity and anti-affinity on any topology key (a node label), for the indexed
//! placer: terms interned once, each node's domain per key, and per-domain counts of the pods each term
//! selects (and, for anti-affinity, of the pods that own it), kept up to date as pods leave and land.
//!
//! kube-scheduler's rules (InterPodAffinity filter), which the naive placer checks by scanning:
//! - **affinity**: the target must have every term's key; for every term, the target's domain must run
//!   a pod that matches *all* of the pod's terms. When no pod matching them all runs on a node with one
//!   of the keys, a pod that matches its own terms may go to any node with every key (the first pod of
//!   a group that attracts itself).
//! - **anti-affinity** (the pod's own terms): no pod the term selects runs in the target's domain.
//! - **symmetry**: no pod in the target's domain (of its term's key) owns an anti-affinity term that
//!   selects the pod.
//!
//! Required anti-affinity on `kubernetes.io/hostname` keeps its faster resident scan in the indexed
//! placer ([`crate::engine::snapshot::Pod::anti_affinity`]); everything else is here.

use crate::engine::snapshot::{LabelSelector, Labels, PodAffinityTerm, PodId, Snapshot};

use super::context::{Context, FxMap, Interner, Rows};

/// A node without the key's label: in no domain.
const NO_DOMAIN: u32 = u32::MAX;

/// The interned pod-to-pod terms of a snapshot and their live counts.
pub(super) struct PodTerms {
    /// `[key][node]`: the node's domain for the key, or [`NO_DOMAIN`].
    node_domain: Vec<Vec<u32>>,
    /// Affinity group of each pod (its whole list of affinity terms), `u32::MAX` for none.
    pod_group: Vec<u32>,
    /// Keys of each group's terms.
    group_keys: Vec<Vec<u32>>,
    /// Groups each label set matches (every term of the group), ascending.
    set_groups: Rows,
    /// `[group][term]`: domain -> pods matching the group.
    group_counts: Vec<Vec<FxMap<u32, u32>>>,
    /// Per group: matching pods on live nodes that have at least one of the group's keys.
    group_present: Vec<u32>,
    /// Key of each anti-affinity term.
    anti_key: Vec<u32>,
    /// Anti-affinity terms each pod owns.
    pod_anti: Rows,
    /// Anti-affinity terms selecting each label set.
    set_anti: Rows,
    /// Per anti term: domain -> pods it selects.
    anti_selected: Vec<FxMap<u32, u32>>,
    /// Per anti term: domain -> pods that own it.
    anti_owners: Vec<FxMap<u32, u32>>,
}

impl PodTerms {
    /// Intern the terms of `placeable` pods' affinity and of every pod's anti-affinity; nothing is
    /// counted yet (see [`PodTerms::count`]).
    pub(super) fn new<'a>(context: &Context<'a>, placeable: &[PodId]) -> PodTerms {
        let snapshot = context.snapshot;
        let sets = &context.label_sets;
        let mut keys: Interner<&'a str> = Interner::new();
        let mut resolve = |owner: &str, term: &'a PodAffinityTerm| -> (u32, Vec<String>) {
            let mut namespaces: Vec<String> = if term.namespaces.is_empty() {
                vec![owner.to_owned()]
            } else {
                term.namespaces.clone()
            };
            namespaces.sort_unstable();
            namespaces.dedup();
            (keys.intern(term.topology_key.as_str()), namespaces)
        };
        let mut groups: Interner<Vec<(u32, &LabelSelector, Vec<String>)>> = Interner::new();
        let mut pod_group = vec![u32::MAX; snapshot.pods.len()];
        for &p in placeable {
            let pod = &snapshot.pods[p.index()];
            if pod.pod_affinity.is_empty() {
                continue;
            }
            let group = pod
                .pod_affinity
                .iter()
                .map(|t| {
                    let (key, namespaces) = resolve(&pod.namespace, t);
                    (key, &t.selector, namespaces)
                })
                .collect();
            pod_group[p.index()] = groups.intern(group);
        }
        let mut anti: Interner<(u32, &LabelSelector, Vec<String>)> = Interner::new();
        let mut anti_pairs: Vec<(u32, u32)> = Vec::new();
        for (i, pod) in snapshot.pods.iter().enumerate() {
            for t in &pod.topology_anti_affinity {
                let (key, namespaces) = resolve(&pod.namespace, t);
                anti_pairs.push((i as u32, anti.intern((key, &t.selector, namespaces))));
            }
        }
        let node_domain = domains(snapshot, keys.items());
        let selects = |selector: &LabelSelector, namespaces: &[String], set: u32| {
            let (ns, labels) = sets.sets[set as usize];
            namespaces
                .iter()
                .any(|n| sets.namespaces.get(&n.as_str()) == Some(ns))
                && selector.matches(labels)
        };
        let set_count = sets.sets.len();
        let mut group_pairs = Vec::new();
        for (g, terms) in groups.items().iter().enumerate() {
            for set in 0..set_count as u32 {
                if terms.iter().all(|(_, s, n)| selects(s, n, set)) {
                    group_pairs.push((set, g as u32));
                }
            }
        }
        let mut set_anti_pairs = Vec::new();
        for (t, (_, s, n)) in anti.items().iter().enumerate() {
            for set in 0..set_count as u32 {
                if selects(s, n, set) {
                    set_anti_pairs.push((set, t as u32));
                }
            }
        }
        let group_keys: Vec<Vec<u32>> = groups
            .items()
            .iter()
            .map(|terms| terms.iter().map(|(k, _, _)| *k).collect())
            .collect();
        PodTerms {
            node_domain,
            pod_group,
            group_counts: group_keys
                .iter()
                .map(|k| vec![FxMap::default(); k.len()])
                .collect(),
            group_present: vec![0; group_keys.len()],
            group_keys,
            set_groups: Rows::from_pairs(set_count, &group_pairs),
            anti_key: anti.items().iter().map(|(k, _, _)| *k).collect(),
            pod_anti: Rows::from_pairs(snapshot.pods.len(), &anti_pairs),
            set_anti: Rows::from_pairs(set_count, &set_anti_pairs),
            anti_selected: vec![FxMap::default(); anti.items().len()],
            anti_owners: vec![FxMap::default(); anti.items().len()],
        }
    }

    /// Count (or uncount) `pod` of label set `set` on `node`.
    pub(super) fn count(&mut self, pod: PodId, set: u32, node: usize, add: bool) {
        for &g in self.set_groups.row(set as usize) {
            let mut present = false;
            for (i, &key) in self.group_keys[g as usize].iter().enumerate() {
                let domain = self.node_domain[key as usize][node];
                if domain != NO_DOMAIN {
                    present = true;
                    step(&mut self.group_counts[g as usize][i], domain, add);
                }
            }
            if present {
                let n = &mut self.group_present[g as usize];
                *n = if add { *n + 1 } else { *n - 1 };
            }
        }
        for &t in self.set_anti.row(set as usize) {
            let domain = self.node_domain[self.anti_key[t as usize] as usize][node];
            if domain != NO_DOMAIN {
                step(&mut self.anti_selected[t as usize], domain, add);
            }
        }
        for &t in self.pod_anti.row(pod.index()) {
            let domain = self.node_domain[self.anti_key[t as usize] as usize][node];
            if domain != NO_DOMAIN {
                step(&mut self.anti_owners[t as usize], domain, add);
            }
        }
    }

    /// Does `pod` (label set `set`) owning anti terms, or selected by others', fit `node`'s domains?
    pub(super) fn anti_affinity_ok(&self, pod: PodId, set: u32, node: usize) -> bool {
        let clear = |t: u32, counts: &[FxMap<u32, u32>]| {
            let domain = self.node_domain[self.anti_key[t as usize] as usize][node];
            domain == NO_DOMAIN || !counts[t as usize].contains_key(&domain)
        };
        self.pod_anti
            .row(pod.index())
            .iter()
            .all(|&t| clear(t, &self.anti_selected))
            && self
                .set_anti
                .row(set as usize)
                .iter()
                .all(|&t| clear(t, &self.anti_owners))
    }

    /// Does `node` satisfy `pod`'s required pod affinity (see the module docs)?
    pub(super) fn affinity_ok(&self, pod: PodId, set: u32, node: usize) -> bool {
        let g = self.pod_group[pod.index()];
        if g == u32::MAX {
            return true;
        }
        let mut satisfied = true;
        for (i, &key) in self.group_keys[g as usize].iter().enumerate() {
            let domain = self.node_domain[key as usize][node];
            if domain == NO_DOMAIN {
                return false;
            }
            satisfied &= self.group_counts[g as usize][i].contains_key(&domain);
        }
        satisfied
            || (self.group_present[g as usize] == 0
                && self.set_groups.row(set as usize).binary_search(&g).is_ok())
    }
}

/// Add or remove one at `domain`, dropping entries that reach 0 (so presence is `contains_key`).
fn step(counts: &mut FxMap<u32, u32>, domain: u32, add: bool) {
    if add {
        *counts.entry(domain).or_insert(0) += 1;
    } else if let Some(c) = counts.get_mut(&domain) {
        *c -= 1;
        if *c == 0 {
            counts.remove(&domain);
        }
    }
}

/// `[key][node]`: each node's domain (its interned label value) for each key.
fn domains(snapshot: &Snapshot, keys: &[&str]) -> Vec<Vec<u32>> {
    keys.iter()
        .map(|key| {
            let mut values: Interner<&str> = Interner::new();
            snapshot
                .nodes
                .iter()
                .map(|n| {
                    n.labels
                        .get(*key)
                        .map_or(NO_DOMAIN, |v| values.intern(v.as_str()))
                })
                .collect()
        })
        .collect()
}

/// Nodes whose movable pods the replacement pass must leave alone because of inter-pod terms it does
/// not check for a new node: a pod with required pod affinity or with anti-affinity on a key other than
/// the hostname, or a pod that such an anti-affinity term (anyone's) selects. Hostname anti-affinity
/// between the moved pods is checked by the replacement pass itself. Per node: the first such pod.
pub(super) fn pinned_for_replacement(snapshot: &Snapshot) -> Vec<Option<PodId>> {
    let mut terms: Interner<(&str, &PodAffinityTerm)> = Interner::new();
    for pod in &snapshot.pods {
        for term in &pod.topology_anti_affinity {
            terms.intern((pod.namespace.as_str(), term));
        }
    }
    let mut selected: FxMap<(&str, &Labels), bool> = FxMap::default();
    let mut pinned = vec![None; snapshot.nodes.len()];
    for (i, pod) in snapshot.pods.iter().enumerate() {
        let is_selected = *selected
            .entry((pod.namespace.as_str(), &*pod.labels))
            .or_insert_with(|| {
                terms.items().iter().any(|(owner, term)| {
                    let in_scope = if term.namespaces.is_empty() {
                        pod.namespace == *owner
                    } else {
                        term.namespaces.contains(&pod.namespace)
                    };
                    in_scope && term.selector.matches(&pod.labels)
                })
            });
        if is_selected || !pod.pod_affinity.is_empty() || !pod.topology_anti_affinity.is_empty() {
            pinned[pod.node.index()].get_or_insert(PodId(i as u32));
        }
    }
    pinned
}
