//! What both placers share: per-node usage and limits, pod roles, PDB membership, the static keep
//! reasons, the candidate order and the destination order.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};

use crate::engine::snapshot::{Labels, NodeId, OwnerKind, PodId, Resources, Snapshot};

use super::{KeepReason, Mode, Options};

/// A small, fast, non-cryptographic hasher (the Fx hash used by rustc) for integer and short-string keys.
#[derive(Default, Clone, Copy)]
pub(super) struct FxHasher {
    hash: u64,
}

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    fn finish(&self) -> u64 {
        self.hash
    }
}

/// A `HashMap` with [`FxHasher`].
pub(super) type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// Dense ids for equal values.
pub(super) struct Interner<K> {
    ids: FxMap<K, u32>,
    items: Vec<K>,
}

impl<K: Hash + Eq + Clone> Interner<K> {
    pub(super) fn new() -> Self {
        Interner {
            ids: FxMap::default(),
            items: Vec::new(),
        }
    }

    /// The id of `key`, allocating the next one for a new key.
    pub(super) fn intern(&mut self, key: K) -> u32 {
        if let Some(&id) = self.ids.get(&key) {
            return id;
        }
        let id = self.items.len() as u32;
        self.ids.insert(key.clone(), id);
        self.items.push(key);
        id
    }

    /// The id of `key`, if interned.
    pub(super) fn get(&self, key: &K) -> Option<u32> {
        self.ids.get(key).copied()
    }

    /// Every interned value, by id.
    pub(super) fn items(&self) -> &[K] {
        &self.items
    }
}

/// Rows of values in one allocation (compressed sparse rows).
#[derive(Debug, Clone)]
pub(super) struct Rows<T = u32> {
    offsets: Vec<u32>,
    items: Vec<T>,
}

impl<T: Copy + Default> Rows<T> {
    /// Build `rows` rows from `(row, item)` pairs; items keep their order within a row.
    pub(super) fn from_pairs(rows: usize, pairs: &[(u32, T)]) -> Rows<T> {
        let mut offsets = vec![0u32; rows + 1];
        for &(row, _) in pairs {
            offsets[row as usize + 1] += 1;
        }
        for i in 0..rows {
            offsets[i + 1] += offsets[i];
        }
        let mut next = offsets.clone();
        let mut items = vec![T::default(); pairs.len()];
        for &(row, item) in pairs {
            let slot = &mut next[row as usize];
            items[*slot as usize] = item;
            *slot += 1;
        }
        Rows { offsets, items }
    }

    /// Row `row` (empty when out of range).
    pub(super) fn row(&self, row: usize) -> &[T] {
        match (self.offsets.get(row), self.offsets.get(row + 1)) {
            (Some(&start), Some(&end)) => &self.items[start as usize..end as usize],
            _ => &[],
        }
    }
}

/// Pods with equal namespace and labels share a label set, so selectors are evaluated once per set.
pub(super) struct LabelSets<'a> {
    /// Label set of each pod.
    pub(super) of_pod: Vec<u32>,
    /// (namespace id, labels) of each set.
    pub(super) sets: Vec<(u32, &'a Labels)>,
    /// Namespace names, by id.
    pub(super) namespaces: Interner<&'a str>,
    /// Sets of each namespace.
    pub(super) by_namespace: Rows,
}

impl<'a> LabelSets<'a> {
    fn new(snapshot: &'a Snapshot) -> Self {
        let mut namespaces = Interner::new();
        let mut sets = Interner::new();
        let of_pod = snapshot
            .pods
            .iter()
            .map(|pod| {
                let namespace = namespaces.intern(pod.namespace.as_str());
                sets.intern((namespace, &*pod.labels))
            })
            .collect();
        let sets = sets.items().to_vec();
        let pairs: Vec<(u32, u32)> = sets
            .iter()
            .enumerate()
            .map(|(i, (ns, _))| (*ns, i as u32))
            .collect();
        let by_namespace = Rows::from_pairs(namespaces.items().len(), &pairs);
        LabelSets {
            of_pod,
            sets,
            namespaces,
            by_namespace,
        }
    }

    /// Sets in namespace `name` (none if no pod lives there).
    pub(super) fn in_namespace(&self, name: &str) -> &[u32] {
        self.namespaces
            .get(&name)
            .map_or(&[], |ns| self.by_namespace.row(ns as usize))
    }
}

/// Capacity bookkeeping for a node: what placements may fill it to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Limit {
    pub(super) cpu_millis: u64,
    pub(super) memory_bytes: u64,
    pub(super) pods: u32,
}

impl Limit {
    /// Can `used + request` stay within this limit?
    pub(super) fn admits(&self, used: Resources, request: Resources) -> bool {
        used.saturating_add(request).fits_within(Resources {
            cpu_millis: self.cpu_millis,
            memory_bytes: self.memory_bytes,
            pods: self.pods,
        })
    }
}

/// Shared, read-only planning context.
pub(super) struct Context<'a> {
    pub(super) snapshot: &'a Snapshot,
    /// Requests of all pods per node.
    pub(super) used: Vec<Resources>,
    /// What placements may fill each node to (allocatable after headroom).
    pub(super) limits: Vec<Limit>,
    /// max(cpu, memory) requested / allocatable per node.
    pub(super) utilization: Vec<f64>,
    /// Pods per node, all of them, in pod order.
    pub(super) residents: Rows,
    /// Whether a pod moves with its node (not DaemonSet, not static).
    pub(super) movable: Vec<bool>,
    /// Movable pods per node, largest first.
    movable_sorted: Rows<PodId>,
    /// PDBs covering each pod.
    pdbs: Rows,
    /// Label sets.
    pub(super) label_sets: LabelSets<'a>,
    /// Reasons fixed before any simulation (`None` = candidate).
    pub(super) static_reasons: Vec<Option<KeepReason>>,
    /// Candidates, cheapest to empty first.
    pub(super) candidates: Vec<NodeId>,
    /// Destinations in first-fit order (every node; the placers skip dead and cordoned ones).
    pub(super) destinations: Vec<NodeId>,
}

impl<'a> Context<'a> {
    pub(super) fn new(snapshot: &'a Snapshot, options: &Options) -> Self {
        let nodes = snapshot.nodes.len();
        let used = snapshot.requested_per_node();
        let fill = options.max_fill();
        let limits = snapshot
            .nodes
            .iter()
            .map(|n| Limit {
                cpu_millis: (n.allocatable.cpu_millis as f64 * fill).floor() as u64,
                memory_bytes: (n.allocatable.memory_bytes as f64 * fill).floor() as u64,
                pods: n.allocatable.pods,
            })
            .collect();
        let utilization: Vec<f64> = snapshot
            .nodes
            .iter()
            .zip(&used)
            .map(|(n, u)| utilization(n.allocatable, *u))
            .collect();
        let pairs: Vec<(u32, u32)> = snapshot
            .pods
            .iter()
            .enumerate()
            .map(|(i, p)| (p.node.0, i as u32))
            .collect();
        let residents = Rows::from_pairs(nodes, &pairs);
        let movable: Vec<bool> = snapshot
            .pods
            .iter()
            .map(|p| !matches!(p.owner, OwnerKind::DaemonSet | OwnerKind::Static))
            .collect();
        let movable_sorted = sorted_movable(snapshot, &movable);
        let label_sets = LabelSets::new(snapshot);
        let pdbs = pdb_membership(snapshot, &label_sets);
        let mut context = Context {
            snapshot,
            used,
            limits,
            utilization,
            residents,
            movable,
            movable_sorted,
            pdbs,
            label_sets,
            static_reasons: Vec::new(),
            candidates: Vec::new(),
            destinations: Vec::new(),
        };
        context.static_reasons = (0..nodes)
            .map(|i| context.static_reason(NodeId(i as u32), options))
            .collect();
        context.order();
        context
    }

    /// Movable pods of `node`, largest first.
    pub(super) fn movable_pods(&self, node: NodeId) -> &[PodId] {
        self.movable_sorted.row(node.index())
    }

    /// PDB indices covering `pod`.
    pub(super) fn pod_pdbs(&self, pod: PodId) -> &[u32] {
        self.pdbs.row(pod.index())
    }

    /// The reason a node can never be a candidate, or `None`.
    fn static_reason(&self, node: NodeId, options: &Options) -> Option<KeepReason> {
        let n = &self.snapshot.nodes[node.index()];
        if options.mode == Mode::Off {
            return Some(KeepReason::ModeOff);
        }
        if n.do_not_disrupt {
            return Some(KeepReason::NodeDoNotDisrupt);
        }
        if n.unschedulable {
            return Some(KeepReason::Cordoned);
        }
        for &pod in self.residents.row(node.index()) {
            if let Some(reason) = self.pod_blocker(PodId(pod), options) {
                return Some(reason);
            }
        }
        let movable = self.movable_pods(node).len();
        if movable == 0 {
            return None;
        }
        let utilization = self.utilization[node.index()];
        match options.mode {
            Mode::WhenEmpty => Some(KeepReason::NotEmpty { pods: movable }),
            _ if utilization > options.utilization_threshold => Some(KeepReason::AboveThreshold {
                utilization,
                threshold: options.utilization_threshold,
            }),
            _ => None,
        }
    }

    /// Why this pod keeps its node, if it does.
    fn pod_blocker(&self, id: PodId, options: &Options) -> Option<KeepReason> {
        if !self.movable[id.index()] {
            return self.daemonset_pdb(id);
        }
        let pod = &self.snapshot.pods[id.index()];
        if pod.do_not_disrupt {
            return Some(KeepReason::PodDoNotDisrupt(id));
        }
        if let Some(what) = pod.unmodelled.first() {
            return Some(KeepReason::Unmodelled {
                pod: id,
                what: what.clone(),
            });
        }
        if pod.owner == OwnerKind::None {
            return Some(KeepReason::NoController(id));
        }
        if options.excluded_namespaces.contains(&pod.namespace) {
            return Some(KeepReason::ExcludedNamespace(id));
        }
        match self.pod_pdbs(id) {
            [] => None,
            [pdb] => {
                let allowed = self.snapshot.pdbs[*pdb as usize].disruptions_allowed;
                (allowed == 0).then_some(KeepReason::Pdb {
                    pdb: *pdb as usize,
                    allowed,
                    used: 0,
                })
            }
            _ => Some(KeepReason::MultiplePdbs(id)),
        }
    }

    /// A DaemonSet pod covered by a PDB that allows no disruption pins its node: removing the node
    /// kills the pod without asking the PDB (Karpenter refuses to disrupt such a node too).
    fn daemonset_pdb(&self, id: PodId) -> Option<KeepReason> {
        if self.snapshot.pods[id.index()].owner != OwnerKind::DaemonSet {
            return None;
        }
        self.pod_pdbs(id)
            .iter()
            .map(|pdb| *pdb as usize)
            .find(|pdb| self.snapshot.pdbs[*pdb].disruptions_allowed == 0)
            .map(|pdb| KeepReason::DaemonSetPdb { pod: id, pdb })
    }

    /// Fill `candidates` and `destinations`.
    fn order(&mut self) {
        let price = |n: NodeId| {
            self.snapshot.nodes[n.index()]
                .hourly_price
                .filter(|p| p.is_finite() && *p > 0.0)
                .unwrap_or(0.0)
        };
        let name = |n: NodeId| self.snapshot.nodes[n.index()].name.as_str();
        let mut candidates: Vec<NodeId> = (0..self.snapshot.nodes.len() as u32)
            .map(NodeId)
            .filter(|n| self.static_reasons[n.index()].is_none())
            .collect();
        candidates.sort_by(|&a, &b| {
            let empty = |n: NodeId| self.movable_pods(n).is_empty();
            empty(b)
                .cmp(&empty(a))
                .then(self.utilization[a.index()].total_cmp(&self.utilization[b.index()]))
                .then(price(b).total_cmp(&price(a)))
                .then(name(a).cmp(name(b)))
                .then(a.cmp(&b))
        });
        let mut kept: Vec<NodeId> = (0..self.snapshot.nodes.len() as u32)
            .map(NodeId)
            .filter(|n| self.static_reasons[n.index()].is_some())
            .collect();
        kept.sort_by(|&a, &b| {
            self.utilization[b.index()]
                .total_cmp(&self.utilization[a.index()])
                .then(name(a).cmp(name(b)))
                .then(a.cmp(&b))
        });
        self.destinations = kept
            .into_iter()
            .chain(candidates.iter().rev().copied())
            .collect();
        self.candidates = candidates;
    }
}

/// max(requested CPU / allocatable CPU, requested memory / allocatable memory).
pub(super) fn utilization(allocatable: Resources, used: Resources) -> f64 {
    let ratio = |used: u64, total: u64| match (used, total) {
        (0, _) => 0.0,
        (_, 0) => 1.0,
        (u, t) => u as f64 / t as f64,
    };
    ratio(used.cpu_millis, allocatable.cpu_millis)
        .max(ratio(used.memory_bytes, allocatable.memory_bytes))
}

/// Movable pods per node, largest first (CPU plus memory at 4 GiB per vCPU), then by pod order.
fn sorted_movable(snapshot: &Snapshot, movable: &[bool]) -> Rows<PodId> {
    let size = |id: PodId| {
        let r = snapshot.pods[id.index()].requests;
        u128::from(r.cpu_millis) * (4 << 30) + u128::from(r.memory_bytes) * 1000
    };
    let mut pairs: Vec<(u32, PodId)> = snapshot
        .pods
        .iter()
        .enumerate()
        .filter(|(i, _)| movable[*i])
        .map(|(i, p)| (p.node.0, PodId(i as u32)))
        .collect();
    pairs.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then(size(b.1).cmp(&size(a.1)))
            .then(a.1.cmp(&b.1))
    });
    Rows::from_pairs(snapshot.nodes.len(), &pairs)
}

/// PDBs covering each pod, evaluated once per label set of the PDB's namespace.
fn pdb_membership(snapshot: &Snapshot, label_sets: &LabelSets<'_>) -> Rows {
    let mut set_pdbs: FxMap<u32, Vec<u32>> = FxMap::default();
    for (i, pdb) in snapshot.pdbs.iter().enumerate() {
        for &set in label_sets.in_namespace(&pdb.namespace) {
            if pdb.selector.matches(label_sets.sets[set as usize].1) {
                set_pdbs.entry(set).or_default().push(i as u32);
            }
        }
    }
    let mut pairs = Vec::new();
    for (pod, set) in label_sets.of_pod.iter().enumerate() {
        for &pdb in set_pdbs.get(set).map_or(&[][..], Vec::as_slice) {
            pairs.push((pod as u32, pdb));
        }
    }
    Rows::from_pairs(snapshot.pods.len(), &pairs)
}
