//! Scheduling-style packing of pending pods onto new nodes (not a public API): the workload of
//! Karpenter's provisioning benchmark, for the side-by-side comparison of DESIGN.md section 11
//! (`bench/karpenter-compare.sh`).
//!
//! Pods are taken largest first (CPU, then memory, as Karpenter sorts them) and put on the first open
//! node that has room and satisfies the constraints the planner models: hostname anti-affinity (both
//! ways), required pod affinity on zone (kube-scheduler's rule: a zone that runs a pod matching all the
//! terms, or any zone when no such pod is placed yet and the pod matches its own terms), `DoNotSchedule`
//! topology spread on zone (every zone of the offering is a domain) and hostname (a new node is always a
//! possible domain, so the hostname minimum is 0). Open nodes are as large as the largest instance type;
//! when none accepts a pod, a new node is opened in the zone its zone spreads prefer. Pods whose
//! affinity finds no zone on the first pass (their targets come later in the order) get a second pass
//! after all others. At the end every node takes the cheapest instance type that holds its pods.
//!
//! First fit uses the planner's max segment trees, one per (constraint signature, zone): a node that
//! refuses a signature (anti-affinity or hostname spread) refuses it forever, so it is disabled in that
//! signature's tree and never visited again; zone spreads pick the allowed zones up front. Each pod
//! costs a few logarithmic lookups, whatever the mix.

use crate::engine::snapshot::{
    LabelSelector, Labels, Resources, SelectorOperator, SelectorRequirement, TopologyKey,
    TopologySpread,
};

use super::context::{FxMap, Interner};
use super::tree::{DISABLED, FitTree};

/// An instance type: what it holds and where it is offered at what price.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceShape {
    /// Name.
    pub name: String,
    /// CPU and memory of the machine, and its pod slots (the per-type pod cap).
    pub capacity: Resources,
    /// CPU and memory reserved for the system (kubelet, eviction threshold); `pods` is ignored.
    pub overhead: Resources,
    /// Where it can be launched; a type without an available offering in a zone is never used there.
    pub offerings: Vec<Offering>,
}

impl InstanceShape {
    /// What pods may use: capacity less overhead, all pod slots.
    pub fn allocatable(&self) -> Resources {
        Resources {
            cpu_millis: self
                .capacity
                .cpu_millis
                .saturating_sub(self.overhead.cpu_millis),
            memory_bytes: self
                .capacity
                .memory_bytes
                .saturating_sub(self.overhead.memory_bytes),
            pods: self.capacity.pods,
        }
    }

    /// The cheapest available offering in `zone` (Spot first on equal prices).
    pub fn cheapest_offering(&self, zone: usize) -> Option<&Offering> {
        self.offerings
            .iter()
            .filter(|o| o.available && o.zone == zone)
            .min_by(|a, b| a.price.total_cmp(&b.price).then(b.spot.cmp(&a.spot)))
    }
}

/// One (zone, capacity type) in which a type can be launched.
#[derive(Debug, Clone, PartialEq)]
pub struct Offering {
    /// Index into the zones.
    pub zone: usize,
    /// Spot (`true`) or on-demand.
    pub spot: bool,
    /// USD per hour.
    pub price: f64,
    /// Whether it can be launched now.
    pub available: bool,
}

/// A pending pod (all in one namespace).
#[derive(Debug, Clone, PartialEq)]
pub struct PendingPod {
    /// Requests (`pods` = 1).
    pub requests: Resources,
    /// Labels.
    pub labels: Labels,
    /// `DoNotSchedule` spreads on zone or hostname.
    pub spread: Vec<TopologySpread>,
    /// Required anti-affinity on hostname: selectors of pods it may not share a node with.
    pub anti_affinity: Vec<LabelSelector>,
    /// Required pod affinity on zone: selectors of the pods (one pod matching all of them) whose zone
    /// it must run in.
    pub zone_affinity: Vec<LabelSelector>,
}

/// A node the packing opens.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedNode {
    /// Index into the instance types.
    pub instance_type: usize,
    /// Index into the zones.
    pub zone: usize,
    /// The offering it launches with: Spot or on-demand.
    pub spot: bool,
    /// USD per hour of that offering.
    pub price: f64,
    /// Indices of its pods.
    pub pods: Vec<usize>,
}

/// The result.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Packing {
    /// New nodes.
    pub nodes: Vec<PackedNode>,
    /// Pods no instance type can hold.
    pub unschedulable: Vec<usize>,
}

impl Packing {
    /// USD per hour of all new nodes.
    pub fn hourly_cost(&self) -> f64 {
        self.nodes.iter().map(|n| n.price).sum()
    }
}

/// A topology spread of a pod, interned.
struct Group {
    zone: bool,
    max_skew: u32,
    selector: u32,
}

/// What decides whether a node can take a pod apart from capacity and zones: pods with equal
/// signatures are refused by the same nodes, and a node that refuses a signature refuses it forever
/// (resident pods only accumulate), so each signature keeps its own first-fit trees.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
struct Signature {
    /// The pod's anti-affinity selectors.
    own_anti: Vec<u32>,
    /// Anti-affinity selectors (of any pod) that match the pod.
    repelled_by: Vec<u32>,
    /// Hostname spreads: (selector, maxSkew, pod matches its own selector).
    hostname: Vec<(u32, u32, bool)>,
}

struct State {
    node_zone: Vec<usize>,
    /// Position of each node among the nodes of its zone (its leaf in the zone's trees).
    node_leaf: Vec<usize>,
    zone_len: Vec<usize>,
    used: Vec<Resources>,
    pods_on: Vec<Vec<usize>>,
    /// Anti-affinity selectors of the pods on each node.
    anti_on: Vec<Vec<u32>>,
    /// Per selector: matching pods per zone and per node.
    zone_counts: Vec<Vec<u64>>,
    node_counts: Vec<FxMap<u32, u32>>,
    /// Per signature, per zone: free capacity of the nodes that accept the signature.
    trees: Vec<Vec<FitTree>>,
}

impl State {
    fn refuses(&self, signature: &Signature, node: usize) -> bool {
        let count = |s: u32| {
            self.node_counts[s as usize]
                .get(&(node as u32))
                .copied()
                .unwrap_or(0)
        };
        signature.own_anti.iter().any(|&s| count(s) > 0)
            || signature
                .repelled_by
                .iter()
                .any(|s| self.anti_on[node].contains(s))
            || signature
                .hostname
                .iter()
                .any(|&(s, skew, own)| count(s) + u32::from(own) > skew)
    }

    /// Recompute `node`'s leaf in every signature's tree of its zone.
    fn refresh(&mut self, signatures: &[Signature], node: usize, limits: &[Resources]) {
        let used = self.used[node];
        let largest = limits[self.node_zone[node]];
        let free = if used.pods >= largest.pods {
            DISABLED
        } else {
            (
                signed(largest.cpu_millis) - signed(used.cpu_millis),
                signed(largest.memory_bytes) - signed(used.memory_bytes),
            )
        };
        let (zone, leaf) = (self.node_zone[node], self.node_leaf[node]);
        for (i, signature) in signatures.iter().enumerate() {
            let value = if self.refuses(signature, node) {
                DISABLED
            } else {
                free
            };
            self.trees[i][zone].set(leaf, value);
        }
    }

    fn open(&mut self, signatures: &[Signature], zone: usize, limits: &[Resources]) -> usize {
        let node = self.used.len();
        self.node_zone.push(zone);
        self.node_leaf.push(self.zone_len[zone]);
        self.zone_len[zone] += 1;
        self.used.push(Resources::default());
        self.pods_on.push(Vec::new());
        self.anti_on.push(Vec::new());
        for trees in &mut self.trees {
            trees[zone].ensure_len(self.zone_len[zone]);
        }
        self.refresh(signatures, node, limits);
        node
    }
}

/// Pack `pods` onto new nodes of `types` across `zones` zones.
pub fn pack(pods: &[PendingPod], types: &[InstanceShape], zones: usize) -> Packing {
    let zones = zones.max(1);
    // Per zone, the size of an open node there (zero where no type is offered).
    let limits: Vec<Resources> = (0..zones).map(|z| largest(types, z)).collect();
    // Selectors (spread, anti-affinity, affinity) are evaluated once per distinct label set.
    let conjunctions: Vec<Option<LabelSelector>> =
        pods.iter().map(|p| conjunction(&p.zone_affinity)).collect();
    let mut selectors: Interner<&LabelSelector> = Interner::new();
    let mut label_sets: Interner<&Labels> = Interner::new();
    let pod_set: Vec<u32> = pods.iter().map(|p| label_sets.intern(&p.labels)).collect();
    let spreads: Vec<Vec<Group>> = pods
        .iter()
        .map(|p| {
            p.spread
                .iter()
                .map(|s| Group {
                    zone: s.key == TopologyKey::Zone,
                    max_skew: s.max_skew,
                    selector: selectors.intern(&s.selector),
                })
                .collect()
        })
        .collect();
    let anti: Vec<Vec<u32>> = pods
        .iter()
        .map(|p| {
            p.anti_affinity
                .iter()
                .map(|s| selectors.intern(s))
                .collect()
        })
        .collect();
    let affinity: Vec<Option<u32>> = conjunctions
        .iter()
        .map(|c| c.as_ref().map(|s| selectors.intern(s)))
        .collect();
    let matches: Vec<Vec<bool>> = selectors
        .items()
        .iter()
        .map(|s| label_sets.items().iter().map(|l| s.matches(l)).collect())
        .collect();
    let pod_selectors: Vec<Vec<u32>> = pod_set
        .iter()
        .map(|&set| {
            (0..matches.len() as u32)
                .filter(|&s| matches[s as usize][set as usize])
                .collect()
        })
        .collect();
    let mut anti_selectors: Vec<u32> = anti.iter().flatten().copied().collect();
    anti_selectors.sort_unstable();
    anti_selectors.dedup();
    let mut signatures: Interner<Signature> = Interner::new();
    let pod_signature: Vec<u32> = (0..pods.len())
        .map(|p| {
            let set = pod_set[p] as usize;
            let mut own_anti = anti[p].clone();
            own_anti.sort_unstable();
            own_anti.dedup();
            let repelled_by = anti_selectors
                .iter()
                .copied()
                .filter(|&s| matches[s as usize][set])
                .collect();
            let mut hostname: Vec<(u32, u32, bool)> = spreads[p]
                .iter()
                .filter(|g| !g.zone)
                .map(|g| (g.selector, g.max_skew, matches[g.selector as usize][set]))
                .collect();
            hostname.sort_unstable();
            signatures.intern(Signature {
                own_anti,
                repelled_by,
                hostname,
            })
        })
        .collect();
    let signatures = signatures.items().to_vec();

    let mut order: Vec<usize> = (0..pods.len()).collect();
    order.sort_by(|&a, &b| {
        let (x, y) = (pods[a].requests, pods[b].requests);
        y.cpu_millis
            .cmp(&x.cpu_millis)
            .then(y.memory_bytes.cmp(&x.memory_bytes))
            .then(a.cmp(&b))
    });
    let mut state = State {
        node_zone: Vec::new(),
        node_leaf: Vec::new(),
        zone_len: vec![0; zones],
        used: Vec::new(),
        pods_on: Vec::new(),
        anti_on: Vec::new(),
        zone_counts: vec![vec![0; zones]; matches.len()],
        node_counts: (0..matches.len()).map(|_| FxMap::default()).collect(),
        trees: signatures
            .iter()
            .map(|_| (0..zones).map(|_| FitTree::new(1)).collect())
            .collect(),
    };
    let mut zone_nodes: Vec<Vec<usize>> = vec![Vec::new(); zones];
    let mut unschedulable = Vec::new();
    let mut deferred = Vec::new();
    let passes = [order, Vec::new()];
    for (pass, mut batch) in passes.into_iter().enumerate() {
        if pass == 1 {
            batch = std::mem::take(&mut deferred);
        }
        for p in batch {
            let request = pods[p].requests;
            let set = pod_set[p] as usize;
            let allowed: Vec<usize> = (0..zones)
                .filter(|&z| {
                    let attracted = affinity[p].is_none_or(|a| {
                        let counts = &state.zone_counts[a as usize];
                        if counts.iter().all(|c| *c == 0) {
                            matches[a as usize][set]
                        } else {
                            counts[z] > 0
                        }
                    });
                    attracted
                        && request.fits_within(limits[z])
                        && spreads[p].iter().filter(|g| g.zone).all(|g| {
                            let counts = &state.zone_counts[g.selector as usize];
                            let min = counts.iter().copied().min().unwrap_or(0);
                            counts[z] + u64::from(matches[g.selector as usize][set]) - min
                                <= u64::from(g.max_skew)
                        })
                })
                .collect();
            if allowed.is_empty() && pass == 0 && affinity[p].is_some() {
                deferred.push(p);
                continue;
            }
            if allowed.is_empty() {
                unschedulable.push(p);
                continue;
            }
            let (cpu, memory) = (signed(request.cpu_millis), signed(request.memory_bytes));
            let signature = pod_signature[p] as usize;
            // First fit in opening order across the allowed zones.
            let existing = allowed
                .iter()
                .filter_map(|&z| {
                    state.trees[signature][z]
                        .first_fit(0, cpu, memory)
                        .map(|leaf| zone_nodes[z][leaf])
                })
                .min();
            let node = match existing {
                Some(node) => node,
                None => {
                    let zone = best_zone(&state, &spreads[p], &matches, set, &allowed);
                    let node = state.open(&signatures, zone, &limits);
                    zone_nodes[zone].push(node);
                    node
                }
            };
            state.used[node] = state.used[node].saturating_add(request);
            state.pods_on[node].push(p);
            for &s in &anti[p] {
                if !state.anti_on[node].contains(&s) {
                    state.anti_on[node].push(s);
                }
            }
            let zone = state.node_zone[node];
            for &s in &pod_selectors[p] {
                state.zone_counts[s as usize][zone] += 1;
                *state.node_counts[s as usize]
                    .entry(node as u32)
                    .or_insert(0) += 1;
            }
            state.refresh(&signatures, node, &limits);
        }
    }
    let mut nodes = Vec::with_capacity(state.used.len());
    for ((used, pods), zone) in state.used.iter().zip(state.pods_on).zip(state.node_zone) {
        match cheapest(types, *used, zone) {
            Some((instance_type, offering)) => nodes.push(PackedNode {
                instance_type,
                zone,
                spot: offering.spot,
                price: offering.price,
                pods,
            }),
            // Only when no single type is as large as the zone's component-wise largest.
            None => unschedulable.extend(pods),
        }
    }
    Packing {
        nodes,
        unschedulable,
    }
}

/// One selector matching exactly the pods every one of `terms` matches (`None` without terms).
fn conjunction(terms: &[LabelSelector]) -> Option<LabelSelector> {
    match terms {
        [] => None,
        [one] => Some(one.clone()),
        many => Some(LabelSelector {
            match_labels: Labels::new(),
            match_expressions: many
                .iter()
                .flat_map(|t| {
                    let pairs = t.match_labels.iter().map(|(k, v)| SelectorRequirement {
                        key: k.clone(),
                        operator: SelectorOperator::In,
                        values: vec![v.clone()],
                    });
                    pairs.chain(t.match_expressions.iter().cloned())
                })
                .collect(),
        }),
    }
}

fn signed(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The component-wise largest allocatable of the types offered in `zone` (the size of an open node
/// there; zero when none is). When one type is the largest in every dimension, as in every real family,
/// each node fits it; otherwise a node may hold more than any one type, and its pods are reported
/// unschedulable rather than overcommitted.
fn largest(types: &[InstanceShape], zone: usize) -> Resources {
    types
        .iter()
        .filter(|t| t.cheapest_offering(zone).is_some())
        .map(InstanceShape::allocatable)
        .fold(Resources::default(), |a, b| Resources {
            cpu_millis: a.cpu_millis.max(b.cpu_millis),
            memory_bytes: a.memory_bytes.max(b.memory_bytes),
            pods: a.pods.max(b.pods),
        })
}

/// The type and offering in `zone` with the lowest price whose allocatable holds `used` (the first type
/// on ties).
fn cheapest(types: &[InstanceShape], used: Resources, zone: usize) -> Option<(usize, &Offering)> {
    types
        .iter()
        .enumerate()
        .filter(|(_, t)| used.fits_within(t.allocatable()))
        .filter_map(|(i, t)| Some((i, t.cheapest_offering(zone)?)))
        .min_by(|a, b| a.1.price.total_cmp(&b.1.price).then(a.0.cmp(&b.0)))
}

/// The zone where the pod's zone spreads are least loaded (first zone on ties).
fn best_zone(
    state: &State,
    spreads: &[Group],
    matches: &[Vec<bool>],
    set: usize,
    allowed: &[usize],
) -> usize {
    allowed
        .iter()
        .copied()
        .min_by_key(|&z| {
            spreads
                .iter()
                .filter(|g| g.zone)
                .map(|g| {
                    state.zone_counts[g.selector as usize][z]
                        + u64::from(matches[g.selector as usize][set])
                })
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

/// Karpenter's benchmark instance types (`fake.InstanceTypes`): type `i` has `i + 1` vCPU, `2(i + 1)`
/// GiB and `10(i + 1)` pod slots, 100m CPU and 10 MiB reserved, and five offerings at one price
/// (0.1 per vCPU plus 0.1 per 10^9 bytes of memory): Spot in zones 0 and 1, on-demand in zones 0, 1
/// and 2.
pub fn karpenter_types(count: usize) -> Vec<InstanceShape> {
    (0..count)
        .map(|i| {
            let size = i as u64 + 1;
            let memory_bytes = (size * 2) << 30;
            let price = 0.1 * size as f64 + 0.1 * memory_bytes as f64 / 1e9;
            let offer = |zone, spot| Offering {
                zone,
                spot,
                price,
                available: true,
            };
            InstanceShape {
                name: format!("fake-it-{i}"),
                capacity: Resources {
                    cpu_millis: size * 1000,
                    memory_bytes,
                    pods: (i as u32 + 1) * 10,
                },
                overhead: Resources {
                    cpu_millis: 100,
                    memory_bytes: 10 << 20,
                    pods: 0,
                },
                offerings: vec![
                    offer(0, true),
                    offer(1, true),
                    offer(0, false),
                    offer(1, false),
                    offer(2, false),
                ],
            }
        })
        .collect()
}

/// The five pod mixes of Karpenter's `makeDiversePods`, in equal parts and in its order: generic pods,
/// zone spread, hostname spread (maxSkew 1, selector on a random `my-label` value), zone self-affinity
/// (`my-affininity` = a random value, required affinity to pods with the same value, as Karpenter spells
/// the key) and hostname anti-affinity (`app: nginx`, all repelling each other); CPU from
/// {100, 250, 500, 1000, 1500}m and memory from {100, 256, 512, 1024, 2048, 4096}Mi, seeded (CloudOptim's
/// own generator: the same distributions as Karpenter's, not the same draws).
pub fn karpenter_pods(count: usize, seed: u64) -> Vec<PendingPod> {
    let mut rng = super::scenario::Rng::new(seed);
    let values = ["a", "b", "c", "d", "e", "f", "g"];
    let label = |rng: &mut super::scenario::Rng| {
        let mut l = Labels::new();
        l.insert("my-label".into(), (*rng.pick(&values)).into());
        l
    };
    let mut pods = Vec::with_capacity(count);
    for i in 0..count {
        let cpu = *rng.pick(&[100u64, 250, 500, 1000, 1500]);
        let memory = *rng.pick(&[100u64, 256, 512, 1024, 2048, 4096]) << 20;
        let mut pod = PendingPod {
            requests: Resources::pod(cpu, memory),
            labels: label(&mut rng),
            spread: Vec::new(),
            anti_affinity: Vec::new(),
            zone_affinity: Vec::new(),
        };
        let kind = i * 5 / count.max(1);
        match kind {
            0 => {}
            1 | 2 => pod.spread.push(TopologySpread {
                max_skew: 1,
                key: if kind == 1 {
                    TopologyKey::Zone
                } else {
                    TopologyKey::Hostname
                },
                selector: LabelSelector {
                    match_labels: label(&mut rng),
                    match_expressions: Vec::new(),
                },
                min_domains: None,
                honor_node_affinity: true,
                honor_node_taints: false,
            }),
            3 => {
                let value = *rng.pick(&values);
                pod.labels = Labels::from([("my-affininity".to_owned(), value.to_owned())]);
                pod.zone_affinity
                    .push(LabelSelector::labels([("my-affininity", value)]));
            }
            _ => {
                pod.labels = Labels::from([("app".to_owned(), "nginx".to_owned())]);
                pod.anti_affinity
                    .push(LabelSelector::labels([("app", "nginx")]));
            }
        }
        pods.push(pod);
    }
    pods
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    /// Pods whose spread selectors match only pods with the same constraint, so placement-time checks
    /// imply the final state: zone skew <= maxSkew, at most maxSkew matching pods per node.
    fn separable_pods(count: usize) -> Vec<PendingPod> {
        let mut pods = karpenter_pods(count, 7);
        for (i, pod) in pods.iter_mut().enumerate() {
            if !pod.zone_affinity.is_empty() {
                continue;
            }
            let value = ["a", "b", "c"][i % 3];
            let key = match (
                pod.spread.first().map(|s| s.key),
                pod.anti_affinity.is_empty(),
            ) {
                (Some(TopologyKey::Zone), _) => "zone-group",
                (Some(TopologyKey::Hostname), _) => "host-group",
                (None, true) => "generic",
                (None, false) => continue,
            };
            pod.labels = Labels::from([(key.to_owned(), value.to_owned())]);
            for s in &mut pod.spread {
                s.selector = LabelSelector::labels([(key, value)]);
            }
        }
        pods
    }

    fn verify(pods: &[PendingPod], types: &[InstanceShape], packing: &Packing, zones: usize) {
        let mut seen = vec![false; pods.len()];
        for n in &packing.nodes {
            let used = n.pods.iter().fold(Resources::default(), |a, &p| {
                a.saturating_add(pods[p].requests)
            });
            let chosen = &types[n.instance_type];
            assert!(used.fits_within(chosen.allocatable()), "node overcommitted");
            assert_eq!(
                chosen.cheapest_offering(n.zone).map(|o| o.price),
                Some(n.price),
                "the node pays its type's cheapest offering in its zone"
            );
            assert!(
                types.iter().all(|t| !used.fits_within(t.allocatable())
                    || t.cheapest_offering(n.zone)
                        .is_none_or(|o| o.price >= n.price)),
                "a cheaper type would do"
            );
            for &p in &n.pods {
                assert!(!seen[p], "pod placed twice");
                seen[p] = true;
                for &q in n.pods.iter().filter(|&&q| q != p) {
                    assert!(
                        !pods[p]
                            .anti_affinity
                            .iter()
                            .any(|s| s.matches(&pods[q].labels)),
                        "anti-affinity"
                    );
                }
            }
        }
        for &p in &packing.unschedulable {
            seen[p] = true;
        }
        let zone_of: BTreeMap<usize, usize> = packing
            .nodes
            .iter()
            .flat_map(|n| n.pods.iter().map(move |&p| (p, n.zone)))
            .collect();
        for (&p, &zone) in &zone_of {
            for s in &pods[p].zone_affinity {
                // Final-state form of the rule: a matching pod in its zone, or none anywhere else.
                let matching: Vec<(usize, usize)> = zone_of
                    .iter()
                    .filter(|(q, _)| **q != p && s.matches(&pods[**q].labels))
                    .map(|(q, z)| (*q, *z))
                    .collect();
                assert!(
                    matching.iter().any(|(_, z)| *z == zone)
                        || (matching.is_empty() && s.matches(&pods[p].labels)),
                    "pod {p} in zone {zone} away from its affinity: {matching:?}"
                );
            }
        }
        assert!(seen.iter().all(|s| *s), "every pod placed or reported");
        for pod in pods {
            for s in &pod.spread {
                let count = |n: &PackedNode| {
                    n.pods
                        .iter()
                        .filter(|&&q| s.selector.matches(&pods[q].labels))
                        .count()
                };
                if s.key == TopologyKey::Zone {
                    let per_zone: Vec<usize> = (0..zones)
                        .map(|z| {
                            packing
                                .nodes
                                .iter()
                                .filter(|n| n.zone == z)
                                .map(count)
                                .sum()
                        })
                        .collect();
                    let (lo, hi) = (
                        per_zone.iter().min().unwrap(),
                        per_zone.iter().max().unwrap(),
                    );
                    assert!(hi - lo <= s.max_skew as usize, "zone skew {per_zone:?}");
                } else {
                    assert!(
                        packing
                            .nodes
                            .iter()
                            .all(|n| count(n) <= s.max_skew as usize),
                        "hostname spread"
                    );
                }
            }
        }
    }

    #[test]
    fn packings_are_valid_and_use_the_cheapest_fitting_type() {
        let types = karpenter_types(400);
        let pods = separable_pods(3000);
        let packing = pack(&pods, &types, 3);
        assert!(packing.unschedulable.is_empty());
        verify(&pods, &types, &packing, 3);
        let anti = pods.iter().filter(|p| !p.anti_affinity.is_empty()).count();
        assert!(
            packing.nodes.len() >= anti,
            "anti-affine pods need a node each"
        );
    }

    #[test]
    fn the_karpenter_shaped_workload_is_deterministic_and_fully_placed() {
        let types = karpenter_types(400);
        let pods = karpenter_pods(2000, 42);
        assert_eq!(pods, karpenter_pods(2000, 42));
        let packing = pack(&pods, &types, 3);
        assert!(packing.unschedulable.is_empty());
        assert_eq!(
            packing.nodes.iter().map(|n| n.pods.len()).sum::<usize>(),
            2000
        );
    }

    #[test]
    fn zone_self_affinity_keeps_each_group_in_one_zone_and_waits_for_its_targets() {
        let types = karpenter_types(10);
        let pods = separable_pods(1000);
        let packing = pack(&pods, &types, 3);
        assert!(packing.unschedulable.is_empty());
        verify(&pods, &types, &packing, 3);
        let mut zones: BTreeMap<&str, BTreeSet<usize>> = BTreeMap::new();
        for n in &packing.nodes {
            for &p in &n.pods {
                if let Some(v) = pods[p].labels.get("my-affininity") {
                    zones.entry(v).or_default().insert(n.zone);
                }
            }
        }
        assert!(zones.len() > 3, "several groups: {zones:?}");
        assert!(zones.values().all(|z| z.len() == 1), "{zones:?}");
        // A pod attracted to pods that come later in the order (smaller ones) waits for them.
        let mut follower = pods[0].clone();
        follower.requests = Resources::pod(4000, 1 << 30);
        follower.labels = Labels::new();
        follower.zone_affinity = vec![LabelSelector::labels([("role", "leader")])];
        let mut leader = pods[0].clone();
        leader.labels = Labels::from([("role".to_owned(), "leader".to_owned())]);
        leader.zone_affinity.clear();
        leader.spread.clear();
        leader.anti_affinity.clear();
        let lonely = PendingPod {
            zone_affinity: vec![LabelSelector::labels([("role", "nobody")])],
            ..follower.clone()
        };
        let pods = [follower, leader, lonely];
        let packing = pack(&pods, &types, 3);
        assert_eq!(packing.unschedulable, [2], "nothing matches the third pod");
        verify(
            &pods[..2],
            &types,
            &Packing {
                unschedulable: vec![],
                ..packing
            },
            3,
        );
    }

    fn generic_pods(count: usize, cpu_millis: u64) -> Vec<PendingPod> {
        (0..count)
            .map(|_| PendingPod {
                requests: Resources::pod(cpu_millis, 100 << 20),
                labels: Labels::new(),
                spread: Vec::new(),
                anti_affinity: Vec::new(),
                zone_affinity: Vec::new(),
            })
            .collect()
    }

    fn shape(
        cpu_millis: u64,
        pods: u32,
        overhead_millis: u64,
        offerings: Vec<Offering>,
    ) -> InstanceShape {
        InstanceShape {
            name: format!("t-{cpu_millis}"),
            capacity: Resources {
                cpu_millis,
                memory_bytes: 64 << 30,
                pods,
            },
            overhead: Resources {
                cpu_millis: overhead_millis,
                memory_bytes: 0,
                pods: 0,
            },
            offerings,
        }
    }

    fn on_demand(zone: usize, price: f64) -> Offering {
        Offering {
            zone,
            spot: false,
            price,
            available: true,
        }
    }

    #[test]
    fn overhead_takes_room_from_every_node() {
        // 2000m less 500m of overhead holds three 500m pods, not four.
        let types = [shape(2000, 100, 500, vec![on_demand(0, 1.0)])];
        let packing = pack(&generic_pods(10, 500), &types, 1);
        assert!(packing.unschedulable.is_empty());
        assert_eq!(packing.nodes.len(), 4);
        assert!(packing.nodes.iter().all(|n| n.pods.len() <= 3));
    }

    #[test]
    fn a_types_pod_cap_bounds_its_nodes() {
        let types = [shape(64_000, 2, 0, vec![on_demand(0, 1.0)])];
        let packing = pack(&generic_pods(10, 100), &types, 1);
        assert_eq!(packing.nodes.len(), 5);
        assert!(packing.nodes.iter().all(|n| n.pods.len() == 2));
    }

    #[test]
    fn nodes_open_only_where_a_type_is_offered_and_pay_its_cheapest_offering() {
        let spot = Offering {
            spot: true,
            price: 0.3,
            ..on_demand(1, 0.3)
        };
        let types = [shape(
            4000,
            100,
            0,
            vec![on_demand(1, 1.0), spot, on_demand(2, 0.9)],
        )];
        let packing = pack(&generic_pods(6, 1000), &types, 3);
        assert!(packing.unschedulable.is_empty());
        assert_eq!(packing.nodes.len(), 2);
        assert!(
            packing
                .nodes
                .iter()
                .all(|n| n.zone == 1 && n.spot && n.price == 0.3)
        );
        assert!((packing.hourly_cost() - 0.6).abs() < 1e-9);
        // Unavailable offerings do not count.
        let mut gone = types.clone();
        gone[0]
            .offerings
            .iter_mut()
            .for_each(|o| o.available = false);
        assert_eq!(pack(&generic_pods(2, 1000), &gone, 3).unschedulable, [0, 1]);
    }

    #[test]
    fn the_cheapest_type_in_the_nodes_zone_is_chosen() {
        // The small type is cheaper but not offered in zone 0, where the pods go first.
        let types = [
            shape(2000, 100, 0, vec![on_demand(1, 0.1)]),
            shape(8000, 100, 0, vec![on_demand(0, 0.5), on_demand(1, 0.5)]),
        ];
        let packing = pack(&generic_pods(1, 1000), &types, 2);
        assert_eq!(packing.nodes.len(), 1);
        assert_eq!(packing.nodes[0].zone, 0);
        assert_eq!(packing.nodes[0].instance_type, 1);
    }

    #[test]
    fn pods_larger_than_every_type_are_unschedulable() {
        let types = karpenter_types(2);
        let mut pods = karpenter_pods(4, 1);
        pods[0].requests = Resources::pod(5000, 1);
        let packing = pack(&pods, &types, 3);
        assert_eq!(packing.unschedulable, [0]);
        assert_eq!(pack(&pods, &[], 3).unschedulable.len(), 4);
    }
}
