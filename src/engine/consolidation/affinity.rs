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
//!
//! The same rules for a node that does not exist yet (the replacement pass, [`own_terms_allow`] and
//! [`repelled_by`]): its hostname is a domain of its own, its zone is the offer's, other keys take the
//! offer's labels; a key the offer does not carry is unknown, so it satisfies no affinity and may
//! clash with any anti-affinity (the pod is refused).

use crate::engine::snapshot::{
    LABEL_HOSTNAME, LABEL_ZONE, LabelSelector, Labels, Pod, PodAffinityTerm, PodId, Snapshot,
};

use super::context::{Context, FxMap, Interner, Rows};
use super::replace::Offer;

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

/// Where a pod runs as the replacement pass sees it: a node of the snapshot or a new node.
#[derive(Debug, Clone, Copy)]
pub(super) enum Place<'a> {
    /// A node of the snapshot, by its labels.
    Node(&'a Labels),
    /// The `host`-th new node of the replacement pass, launched from `offer`.
    New {
        /// Its index among the new nodes: its hostname domain, shared with no other node.
        host: usize,
        /// What it is launched from: its zone and the labels it will carry.
        offer: &'a Offer,
    },
}

/// A node's domain of one topology key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Domain<'a> {
    /// The node lacks the label: in no domain.
    Absent,
    /// The label's value.
    Value(&'a str),
    /// A new node's hostname: unlike any other node's.
    Host(usize),
    /// A new node's label the offer does not model: it may carry any value, or none.
    Unknown,
}

impl<'a> Place<'a> {
    fn domain(self, key: &str) -> Domain<'a> {
        match self {
            Place::Node(labels) => labels.get(key).map_or(Domain::Absent, |v| Domain::Value(v)),
            Place::New { host, .. } if key == LABEL_HOSTNAME => Domain::Host(host),
            Place::New { offer, .. } if key == LABEL_ZONE => Domain::Value(&offer.zone),
            Place::New { offer, .. } => offer
                .labels
                .get(key)
                .map_or(Domain::Unknown, |v| Domain::Value(v)),
        }
    }
}

/// Certainly one domain: both known and equal.
fn same(a: Domain<'_>, b: Domain<'_>) -> bool {
    match (a, b) {
        (Domain::Value(x), Domain::Value(y)) => x == y,
        (Domain::Host(x), Domain::Host(y)) => x == y,
        _ => false,
    }
}

/// Possibly one domain: the same, or one unknown while the other is a domain.
fn may_share(a: Domain<'_>, b: Domain<'_>) -> bool {
    same(a, b)
        || matches!((a, b), (Domain::Unknown, d) | (d, Domain::Unknown) if d != Domain::Absent)
}

/// Why a pod may not go to a new node now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// Required anti-affinity (the pod's own, on a key other than the hostname) would break: no later
    /// placement can mend that.
    AntiAffinity,
    /// Required pod affinity does not hold yet: it may once the pods it wants have landed.
    PodAffinity,
}

/// kube-scheduler's rules (module docs) for `pod`'s own required terms, anti-affinity on keys other than
/// the hostname and pod affinity on any key, on `target` among `placed` pods. The planner's rules, with
/// one difference a node that does not exist yet brings: a label of the new node the offer does not
/// model satisfies no affinity and may clash with any anti-affinity.
pub(super) fn own_terms_allow<'a>(
    pod: &Pod,
    target: Place<'a>,
    placed: impl Iterator<Item = (&'a Pod, Place<'a>)>,
) -> Result<(), Refusal> {
    let terms = &pod.pod_affinity;
    let wanted: Vec<Domain<'a>> = terms
        .iter()
        .map(|t| target.domain(&t.topology_key))
        .collect();
    if wanted
        .iter()
        .any(|d| matches!(d, Domain::Absent | Domain::Unknown))
    {
        return Err(Refusal::PodAffinity);
    }
    let mut satisfied = vec![false; terms.len()];
    let mut present = false;
    for (q, at) in placed {
        let repelled = pod.topology_anti_affinity.iter().any(|t| {
            selects(pod, t, q)
                && may_share(at.domain(&t.topology_key), target.domain(&t.topology_key))
        });
        if repelled {
            return Err(Refusal::AntiAffinity);
        }
        if terms.is_empty() || !terms.iter().all(|t| selects(pod, t, q)) {
            continue;
        }
        for (i, t) in terms.iter().enumerate() {
            let domain = at.domain(&t.topology_key);
            present |= domain != Domain::Absent;
            satisfied[i] |= same(domain, wanted[i]);
        }
    }
    let first_of_its_group = !present && terms.iter().all(|t| selects(pod, t, pod));
    if satisfied.iter().all(|s| *s) || first_of_its_group {
        Ok(())
    } else {
        Err(Refusal::PodAffinity)
    }
}

/// Symmetry: does an anti-affinity term (on a key other than the hostname) of one of `owners` select
/// `pod` on `target`?
pub(super) fn repelled_by<'a>(
    pod: &Pod,
    target: Place<'a>,
    mut owners: impl Iterator<Item = (&'a Pod, Place<'a>)>,
) -> bool {
    owners.any(|(q, at)| {
        q.topology_anti_affinity.iter().any(|t| {
            selects(q, t, pod)
                && may_share(at.domain(&t.topology_key), target.domain(&t.topology_key))
        })
    })
}

/// Does `owner`'s term select `other` (its namespaces, or the owner's own, and its selector)?
pub(super) fn selects(owner: &Pod, term: &PodAffinityTerm, other: &Pod) -> bool {
    let in_scope = if term.namespaces.is_empty() {
        other.namespace == owner.namespace
    } else {
        term.namespaces.contains(&other.namespace)
    };
    in_scope && term.selector.matches(&other.labels)
}
