//! Seeded, realistic cluster generator for benchmarks and scale tests (not a public API).
//!
//! Shape: three zones of us-east-1; a general pool of m5/c5/r5/m6i nodes, an arm64 pool (m7g) and a
//! tainted batch pool; about 60% spot; three DaemonSets on every node; Deployments of 2-60 replicas (a few
//! of 200) with a realistic spread of CPU and memory requests, 40% with zone topology spread, 25% with
//! hostname anti-affinity, 10% with hostname spread, 8% with required zone pod affinity to the previous
//! Deployment (the service they call), some pinned to arm64 or the batch pool; a few StatefulSets with
//! volumes, bare pods, do-not-disrupt pods and pods with a hostPath volume; PDBs on a third of the
//! Deployments. Nodes are filled to a per-node target between 10% and 90% so many are
//! underutilized, and never beyond allocatable. The same seed gives the same snapshot.

use crate::engine::snapshot::{
    AntiAffinityTerm, CapacityType, LABEL_ZONE, LabelSelector, Labels, Node, NodeId, OwnerKind,
    Pdb, Pod, PodAffinityTerm, Resources, Taint, TaintEffect, Toleration, TolerationOperator,
    TopologyKey, TopologySpread,
};

/// SplitMix64: a tiny, good-enough seeded generator (no dependency).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// One element of a non-empty slice.
    pub fn pick<'s, T>(&mut self, items: &'s [T]) -> &'s T {
        &items[self.below(items.len())]
    }
}

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;
const ZONES: [&str; 3] = ["us-east-1a", "us-east-1b", "us-east-1c"];

/// (instance type, vCPU, memory GiB, on-demand $/h).
const GENERAL: &[(&str, u64, u64, f64)] = &[
    ("m5.large", 2, 8, 0.096),
    ("m5.xlarge", 4, 16, 0.192),
    ("m5.2xlarge", 8, 32, 0.384),
    ("m5.4xlarge", 16, 64, 0.768),
    ("c5.xlarge", 4, 8, 0.17),
    ("c5.2xlarge", 8, 16, 0.34),
    ("r5.xlarge", 4, 32, 0.252),
    ("r5.2xlarge", 8, 64, 0.504),
    ("m6i.xlarge", 4, 16, 0.192),
    ("m6i.2xlarge", 8, 32, 0.384),
];
const ARM: &[(&str, u64, u64, f64)] = &[
    ("m7g.xlarge", 4, 16, 0.1632),
    ("m7g.2xlarge", 8, 32, 0.3264),
];
const BATCH: &[(&str, u64, u64, f64)] = &[("c5.4xlarge", 16, 32, 0.68)];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Pool {
    General,
    Arm,
    Batch,
}

/// Generate a cluster of `nodes` nodes and `pods` pods (DaemonSet pods included) from `seed`.
pub fn generate(seed: u64, nodes: usize, pods: usize) -> crate::engine::snapshot::Snapshot {
    let mut rng = Rng::new(seed);
    let mut builder = Builder {
        rng: Rng::new(seed ^ 0x5EED),
        ..Builder::default()
    };
    for i in 0..nodes {
        let pool = match rng.below(100) {
            0..=84 => Pool::General,
            85..=94 => Pool::Arm,
            _ => Pool::Batch,
        };
        builder.add_node(i, pool, &mut rng);
    }
    builder.add_daemonsets(pods);
    let mut workload = 0;
    let mut fruitless = 0;
    // Stop when the cluster is full: many workloads in a row that placed nothing.
    while builder.pods.len() < pods && fruitless < 100 {
        let before = builder.pods.len();
        builder.add_workload(workload, pods, &mut rng);
        fruitless = if builder.pods.len() == before {
            fruitless + 1
        } else {
            0
        };
        workload += 1;
    }
    crate::engine::snapshot::Snapshot {
        nodes: builder.nodes,
        pods: builder.pods,
        pdbs: builder.pdbs,
    }
}

#[derive(Default)]
struct Builder {
    rng: Rng,
    nodes: Vec<Node>,
    pools: Vec<Pool>,
    /// Requests placed so far per node.
    used: Vec<Resources>,
    /// Per-node fill target (fraction of allocatable).
    target: Vec<f64>,
    pods: Vec<Pod>,
    pdbs: Vec<Pdb>,
    /// Nodes per (pool, zone).
    by_pool_zone: Vec<Vec<usize>>,
}

impl Default for Rng {
    fn default() -> Self {
        Rng::new(0)
    }
}

fn pool_index(pool: Pool, zone: usize) -> usize {
    let p = match pool {
        Pool::General => 0,
        Pool::Arm => 1,
        Pool::Batch => 2,
    };
    p * ZONES.len() + zone
}

impl Builder {
    fn add_node(&mut self, i: usize, pool: Pool, rng: &mut Rng) {
        let types = match pool {
            Pool::General => GENERAL,
            Pool::Arm => ARM,
            Pool::Batch => BATCH,
        };
        let &(instance_type, vcpu, memory_gib, on_demand) = rng.pick(types);
        let zone = rng.below(ZONES.len());
        let spot = rng.chance(0.6);
        let name = format!("ip-10-{}-{}-{}.ec2.internal", zone, i / 250, i % 250);
        let mut node = Node::new(
            name,
            Resources {
                cpu_millis: vcpu * 1000 - 80 - vcpu * 10,
                memory_bytes: memory_gib * GIB * 92 / 100,
                pods: if vcpu <= 2 { 29 } else { 58 },
            },
        );
        node.instance_type = Some(instance_type.to_owned());
        node.zone = Some(ZONES[zone].to_owned());
        node.region = Some("us-east-1".to_owned());
        node.capacity_type = if spot {
            CapacityType::Spot
        } else {
            CapacityType::OnDemand
        };
        node.on_demand_price = Some(on_demand);
        node.spot_price = Some((on_demand * 0.35 * 10_000.0).round() / 10_000.0);
        node.hourly_price = if spot {
            node.spot_price
        } else {
            node.on_demand_price
        };
        let labels = [
            ("node.kubernetes.io/instance-type", instance_type),
            (LABEL_ZONE, ZONES[zone]),
            ("topology.kubernetes.io/region", "us-east-1"),
            ("karpenter.sh/capacity-type", node.capacity_type.as_str()),
            (
                "kubernetes.io/arch",
                if pool == Pool::Arm { "arm64" } else { "amd64" },
            ),
            (
                "pool",
                ["general", "arm", "batch"][pool_index(pool, 0) / ZONES.len()],
            ),
        ];
        node.labels
            .extend(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        if pool == Pool::Batch {
            node.taints.push(Taint {
                key: "dedicated".into(),
                value: "batch".into(),
                effect: TaintEffect::NoSchedule,
            });
        }
        // Many nodes are underutilized: a third below 30%, a third 30-60%, the rest up to 90%.
        let target = match rng.below(3) {
            0 => 0.1 + 0.2 * rng.unit(),
            1 => 0.3 + 0.3 * rng.unit(),
            _ => 0.6 + 0.3 * rng.unit(),
        };
        let slot = pool_index(pool, zone);
        if self.by_pool_zone.len() <= slot {
            self.by_pool_zone
                .resize(pool_index(Pool::Batch, ZONES.len() - 1) + 1, Vec::new());
        }
        self.by_pool_zone[slot].push(i);
        self.nodes.push(node);
        self.pools.push(pool);
        self.used.push(Resources::default());
        self.target.push(target);
    }

    fn add_daemonsets(&mut self, budget: usize) {
        let daemonsets = [
            ("kube-system", "aws-node", 25, 64 * MIB),
            ("kube-system", "kube-proxy", 100, 128 * MIB),
            ("monitoring", "node-exporter", 50, 64 * MIB),
        ];
        for n in 0..self.nodes.len() {
            for (namespace, name, cpu, memory) in daemonsets {
                if self.pods.len() >= budget {
                    return;
                }
                let pod_name = format!("{name}-{n:05}");
                let mut pod = Pod::new(
                    namespace,
                    &pod_name,
                    NodeId(n as u32),
                    Resources::pod(cpu, memory),
                );
                pod.owner = OwnerKind::DaemonSet;
                std::sync::Arc::make_mut(&mut pod.labels).insert("app".into(), name.into());
                std::sync::Arc::make_mut(&mut pod.tolerations).push(Toleration {
                    key: String::new(),
                    operator: TolerationOperator::Exists,
                    value: String::new(),
                    effect: None,
                });
                self.used[n] = self.used[n].saturating_add(pod.requests);
                self.pods.push(pod);
            }
        }
    }

    fn add_workload(&mut self, index: usize, budget: usize, rng: &mut Rng) {
        let left = budget - self.pods.len();
        let replicas = if rng.chance(0.02) {
            200
        } else {
            2 + rng.below(59)
        }
        .min(left);
        let namespace = format!("team-{}", index % 40);
        let name = format!("svc-{index}");
        let cpu = *rng.pick(&[25u64, 50, 50, 100, 100, 100, 200, 250, 500]);
        let memory = *rng.pick(&[64u64, 128, 128, 256, 256, 256, 512, 512, 1024]) * MIB;
        let pool = match rng.below(100) {
            0..=89 => Pool::General,
            90..=95 => Pool::Arm,
            _ => Pool::Batch,
        };
        let stateful = rng.chance(0.015);
        let selector = LabelSelector::labels([("app", name.as_str())]);
        let mut template = Pod::new(&namespace, &name, NodeId(0), Resources::pod(cpu, memory));
        std::sync::Arc::make_mut(&mut template.labels).insert("app".into(), name.clone());
        std::sync::Arc::make_mut(&mut template.labels).insert(
            "pod-template-hash".into(),
            format!("{:x}", rng.next_u64() & 0xffff_ffff),
        );
        template.owner = if stateful {
            OwnerKind::StatefulSet
        } else {
            OwnerKind::ReplicaSet
        };
        match pool {
            Pool::General => {}
            Pool::Arm => {
                template
                    .node_selector
                    .insert("kubernetes.io/arch".into(), "arm64".into());
            }
            Pool::Batch => {
                template.node_selector.insert("pool".into(), "batch".into());
                std::sync::Arc::make_mut(&mut template.tolerations).push(Toleration {
                    key: "dedicated".into(),
                    operator: TolerationOperator::Equal,
                    value: "batch".into(),
                    effect: Some(TaintEffect::NoSchedule),
                });
            }
        }
        let zone_spread = rng.chance(0.4);
        let anti = replicas <= 20 && rng.chance(0.25);
        if zone_spread {
            template
                .topology_spread
                .push(spread(TopologyKey::Zone, 1, &selector));
        }
        if anti {
            template.anti_affinity.push(AntiAffinityTerm {
                selector: selector.clone(),
                namespaces: vec![],
            });
        } else if rng.chance(0.1) {
            template
                .topology_spread
                .push(spread(TopologyKey::Hostname, 2, &selector));
        }
        if index > 0 && rng.chance(0.08) {
            // Next to the service it calls: required zone affinity to the previous Deployment.
            let other = index - 1;
            template.pod_affinity.push(PodAffinityTerm {
                topology_key: LABEL_ZONE.into(),
                selector: LabelSelector::labels([("app", format!("svc-{other}").as_str())]),
                namespaces: vec![format!("team-{}", other % 40)],
            });
        }
        if stateful {
            template
                .unmodelled
                .push("persistent volume claim data".into());
        }
        let first = self.pods.len();
        for r in 0..replicas {
            let mut pod = template.clone();
            pod.name = if stateful {
                format!("{name}-{r}")
            } else {
                format!("{name}-{:05x}", rng.next_u64() & 0xfffff)
            };
            if rng.chance(0.0005) {
                pod.do_not_disrupt = true;
            }
            if rng.chance(0.0005) {
                pod.owner = OwnerKind::None;
            }
            if rng.chance(0.0005) {
                pod.unmodelled.push("hostPath volume logs".into());
            }
            let Some(node) = self.place(&pod, pool, r, anti, first) else {
                continue;
            };
            pod.node = NodeId(node as u32);
            self.used[node] = self.used[node].saturating_add(pod.requests);
            self.pods.push(pod);
        }
        if !stateful && rng.chance(0.33) {
            let allowed = if rng.chance(0.1) {
                0
            } else {
                (replicas as u32 / 4).max(1)
            };
            self.pdbs.push(Pdb {
                namespace,
                name,
                selector,
                disruptions_allowed: allowed,
            });
        }
    }

    /// A node for replica `r`: its zone round-robin, under the node's fill target, not next to a sibling
    /// when anti-affine; falls back to any node of the pool with room.
    fn place(
        &mut self,
        pod: &Pod,
        pool: Pool,
        r: usize,
        anti: bool,
        first: usize,
    ) -> Option<usize> {
        let fits = |b: &Builder, n: usize, fill: f64| {
            let a = b.nodes[n].allocatable;
            let u = b.used[n].saturating_add(pod.requests);
            u.pods <= a.pods
                && (u.cpu_millis as f64) <= a.cpu_millis as f64 * fill
                && (u.memory_bytes as f64) <= a.memory_bytes as f64 * fill
                && (!anti || !b.pods[first..].iter().any(|p| p.node.index() == n))
        };
        let zone = r % ZONES.len();
        for z in (0..ZONES.len()).map(|k| (zone + k) % ZONES.len()) {
            let candidates = &self.by_pool_zone[pool_index(pool, z)];
            if candidates.is_empty() {
                continue;
            }
            for _ in 0..24 {
                let n = candidates[self.rng.below(candidates.len())];
                if fits(self, n, self.target[n]) {
                    return Some(n);
                }
            }
        }
        let all: Vec<usize> = (0..ZONES.len())
            .flat_map(|z| self.by_pool_zone[pool_index(pool, z)].clone())
            .collect();
        let start = self.rng.below(all.len().max(1));
        (0..all.len())
            .map(|k| all[(start + k) % all.len()])
            .find(|&n| fits(self, n, 1.0))
    }
}

fn spread(key: TopologyKey, max_skew: u32, selector: &LabelSelector) -> TopologySpread {
    TopologySpread {
        max_skew,
        key,
        selector: selector.clone(),
        min_domains: None,
        honor_node_affinity: true,
        honor_node_taints: false,
    }
}

/// Labels from pairs (test and scenario helper).
pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_cluster_and_never_overcommitted() {
        let a = generate(7, 60, 1200);
        let b = generate(7, 60, 1200);
        assert_eq!(a, b);
        assert_eq!(a.nodes.len(), 60);
        assert!(
            a.pods.len() <= 1200 && a.pods.len() > 1000,
            "{} pods",
            a.pods.len()
        );
        a.validate().unwrap();
        for (node, used) in a.nodes.iter().zip(a.requested_per_node()) {
            assert!(
                used.fits_within(node.allocatable),
                "{} overcommitted",
                node.name
            );
        }
        for pod in &a.pods {
            let node = &a.nodes[pod.node.index()];
            assert!(
                pod.accepts_node(&node.labels, &node.taints),
                "{} misplaced",
                pod.key()
            );
        }
    }
}
