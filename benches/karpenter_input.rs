//! The packer on Karpenter's own benchmark input (`bench/karpenter-compare.sh`): reads the JSON that
//! the Go side wrote from Karpenter's `makeDiversePods` and `fake.InstanceTypes(400)` (see
//! `bench/karpenter/zz_cloudoptim_compare_test.go`), converts it to the packer's types (outside the
//! timer, as Karpenter builds its pods, scheduler and topology outside its timer), and times
//! `packer::pack` once cold (the first call in this process) and `CLOUDOPTIM_WARM` times warm. Prints
//! one line per call, in the Go side's format:
//! `compare side=cloudoptim run=cold|warm seconds=S pods=P nodes=N cost=C`.
//!
//! After the timed runs, `validate` checks the cold run's packing against the input's semantics, with
//! its own code (it uses none of the product's selector or constraint helpers), panics on any violation
//! and prints `compare side=cloudoptim valid=yes checks=N strict_final_skew_over=K` (K: see `Report`).
//! See `validate` for the exact rules. `CLOUDOPTIM_TAMPER=dup|overfill|offering|anti|affinity|spread`
//! breaks one rule in the packing before validating it, to show that the run then fails.
//!
//! Without `CLOUDOPTIM_INPUT` (a plain `cargo bench`) it prints a note and does nothing.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

use cloudoptim::engine::consolidation::packer::{
    self, InstanceShape, Offering, Packing, PendingPod,
};
use cloudoptim::engine::snapshot::{LabelSelector, Resources, TopologyKey, TopologySpread};
use serde::Deserialize;

#[derive(Deserialize)]
struct Term {
    key: String,
    #[serde(default)]
    max_skew: u32,
    match_labels: BTreeMap<String, String>,
    /// Spreads only; the Go side writes none, as every spread of `makeDiversePods` is DoNotSchedule.
    #[serde(default = "do_not_schedule")]
    when_unsatisfiable: String,
}

fn do_not_schedule() -> String {
    "DoNotSchedule".to_owned()
}

#[derive(Deserialize)]
struct Pod {
    cpu_millis: u64,
    memory_bytes: u64,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    spread: Option<Vec<Term>>,
    #[serde(default)]
    affinity: Option<Vec<Term>>,
    #[serde(default)]
    anti_affinity: Option<Vec<Term>>,
}

#[derive(Deserialize)]
struct Offer {
    zone: String,
    capacity_type: String,
    price: f64,
    available: bool,
}

#[derive(Deserialize)]
struct Type {
    name: String,
    cpu_millis: u64,
    memory_bytes: u64,
    pods: u32,
    overhead_cpu_millis: u64,
    overhead_memory_bytes: u64,
    offerings: Vec<Offer>,
}

#[derive(Deserialize)]
struct Input {
    source: String,
    zones: Vec<String>,
    types: Vec<Type>,
    pods: Vec<Pod>,
}

fn selector(term: &Term) -> LabelSelector {
    LabelSelector {
        match_labels: term.match_labels.clone(),
        match_expressions: Vec::new(),
    }
}

/// The only topology keys Karpenter's benchmark uses are zone and hostname; affinity is on zone and
/// anti-affinity on hostname there, which is what the packer models.
fn convert(input: &Input) -> Result<(Vec<PendingPod>, Vec<InstanceShape>), String> {
    let zone = |name: &str| {
        input
            .zones
            .iter()
            .position(|z| z == name)
            .ok_or(format!("offering in unknown zone {name}"))
    };
    let mut types = Vec::new();
    for t in &input.types {
        let mut offerings = Vec::new();
        for o in &t.offerings {
            offerings.push(Offering {
                zone: zone(&o.zone)?,
                spot: o.capacity_type == "spot",
                price: o.price,
                available: o.available,
            });
        }
        types.push(InstanceShape {
            name: t.name.clone(),
            capacity: Resources {
                cpu_millis: t.cpu_millis,
                memory_bytes: t.memory_bytes,
                pods: t.pods,
            },
            overhead: Resources {
                cpu_millis: t.overhead_cpu_millis,
                memory_bytes: t.overhead_memory_bytes,
                pods: 0,
            },
            offerings,
        });
    }
    let mut pods = Vec::new();
    for p in &input.pods {
        let mut spread = Vec::new();
        for s in p.spread.iter().flatten() {
            if s.when_unsatisfiable != "DoNotSchedule" {
                return Err(format!(
                    "a {} spread; the packer models DoNotSchedule",
                    s.when_unsatisfiable
                ));
            }
            spread.push(TopologySpread {
                max_skew: s.max_skew,
                key: match s.key.as_str() {
                    "zone" => TopologyKey::Zone,
                    "hostname" => TopologyKey::Hostname,
                    other => return Err(format!("spread on {other}")),
                },
                selector: selector(s),
                min_domains: None,
                honor_node_affinity: true,
                honor_node_taints: false,
            });
        }
        let only = |terms: &Option<Vec<Term>>, key: &str| -> Result<Vec<LabelSelector>, String> {
            terms
                .iter()
                .flatten()
                .map(|t| {
                    (t.key == key)
                        .then(|| selector(t))
                        .ok_or(format!("a term on {} where the packer models {key}", t.key))
                })
                .collect()
        };
        pods.push(PendingPod {
            requests: Resources::pod(p.cpu_millis, p.memory_bytes),
            labels: p.labels.clone(),
            spread,
            anti_affinity: only(&p.anti_affinity, "hostname")?,
            zone_affinity: only(&p.affinity, "zone")?,
        });
    }
    Ok((pods, types))
}

fn main() {
    let Ok(path) = std::env::var("CLOUDOPTIM_INPUT") else {
        println!("karpenter_input: CLOUDOPTIM_INPUT not set; run bench/karpenter-compare.sh");
        return;
    };
    let warm: usize = std::env::var("CLOUDOPTIM_WARM")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let input: Input = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    let (pods, types) = convert(&input).unwrap_or_else(|e| panic!("{path}: {e}"));
    eprintln!(
        "karpenter_input: {} ({} pods, {} types, {} zones)",
        input.source,
        pods.len(),
        types.len(),
        input.zones.len()
    );
    let mut cold = None;
    for run in 0..=warm {
        let start = Instant::now();
        let packing = black_box(packer::pack(black_box(&pods), &types, input.zones.len()));
        let seconds = start.elapsed().as_secs_f64();
        assert!(
            packing.unschedulable.is_empty(),
            "{} pods unschedulable",
            packing.unschedulable.len()
        );
        let placed: usize = packing.nodes.iter().map(|n| n.pods.len()).sum();
        println!(
            "compare side=cloudoptim run={} seconds={seconds:.6} pods={placed} nodes={} cost={:.4}",
            if run == 0 { "cold" } else { "warm" },
            packing.nodes.len(),
            packing.hourly_cost()
        );
        cold.get_or_insert(packing);
    }
    // Outside the timed region, once: the cold run's result.
    if let Some(mut packing) = cold {
        if let Ok(kind) = std::env::var("CLOUDOPTIM_TAMPER") {
            tamper(&input, &mut packing, &kind);
        }
        let report = validate(&input, &packing);
        println!(
            "compare side=cloudoptim valid=yes checks={} strict_final_skew_over={}",
            report.checks, report.strict_over
        );
    }
}

// The validator: the packing against the input's own semantics (Kubernetes' and Karpenter's), written
// here from the JSON alone; it calls none of the product's selector, constraint or fit helpers.

/// What `validate` counted.
struct Report {
    /// Individual checks made (all passed, or `validate` panicked).
    checks: u64,
    /// Informational, not a violation: DoNotSchedule spreads (distinct key, selector, maxSkew) whose
    /// final counts of ALL matching pods have max - min > maxSkew over the eligible domains. Kubernetes
    /// checks skew only when it places a pod that carries the spread; pods that match the selector
    /// without carrying it are counted but never checked, so they may leave such a final skew.
    strict_over: usize,
}

struct Checker {
    checks: u64,
    violations: Vec<String>,
}

impl Checker {
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        self.checks += 1;
        if !ok {
            self.violations.push(what());
        }
    }
}

/// `matchLabels` semantics: every pair is among the labels (an empty selector selects every pod).
fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The topology domain of a node for a key: the zone index, or the node itself for hostname.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
enum Domain {
    Zone(usize),
    Host(usize),
}

fn domain(key: &str, node: usize, zone: usize) -> Domain {
    match key {
        "zone" => Domain::Zone(zone),
        "hostname" => Domain::Host(node),
        other => panic!("validator: unknown topology key {other}"),
    }
}

fn when_schedule(term: &Term) -> bool {
    term.when_unsatisfiable == "DoNotSchedule"
}

/// Checks `packing` (the result for `input.pods` on `input.types`) and panics listing the violations:
///
/// 1. Placement: nothing unschedulable; every pod index on exactly one node.
/// 2. Per node: its type exists; the sum of its pods' CPU and memory requests plus the type's overhead
///    is within the type's capacity; its pod count is within the type's pod cap; its offering (zone,
///    capacity type) exists for the type, is available, and has the node's price.
/// 3. Required anti-affinity (any key; hostname here): no pod shares a topology domain with another pod
///    its term selects. Kubernetes checks both the incoming pod's terms and the existing pods' terms,
///    so whichever of the two came second was refused; the pod itself is not an existing pod when it
///    is placed, so a term that selects its own pod forbids a second such pod, not the pod.
/// 4. Required pod affinity (any key; zone here), kube-scheduler's rule for each placement: every term
///    is satisfied by an already placed pod in the pod's domain, or, when no placed pod matches all
///    the terms and the pod matches them itself, the pod may be first. A final placement is valid
///    when some order satisfies this; the validator builds one: first the pods that must be first
///    (unsupported, self-matching, chosen greedily, each placed only while no placed pod matches its
///    terms), then the pods without affinity, then, to a fixpoint, every affinity pod whose terms are
///    satisfied by placed pods. A pod left over is a violation. (So pods with self-affinity on zone
///    and nothing else matching them must all end in one zone.)
/// 5. DoNotSchedule topology spread, order-free, for each distinct (key, selector, maxSkew) and domain D: the
///    number of pods in D that carry it and match its selector is at most maxSkew + min, min being
///    the fewest pods matching the selector (carrying it or not) in an eligible domain. This is what
///    the scheduling-time rule (count in D + 1 - min <= maxSkew when placing such a pod) implies for
///    any order: the last of them placed in D saw the others, and min only grows. Eligible domains:
///    for zone, every zone in which some type has an available offering (Karpenter's domains; the
///    set is fixed, counts only grow; kube-scheduler would count only zones that have nodes, whose
///    min is never lower); for hostname, min is 0 (Karpenter's rule while provisioning: a new node is
///    always a possible domain), so at most maxSkew such pods per node. What the final state cannot
///    show is the skew a carrier saw when matching pods without the spread came after it; that part
///    is `Report::strict_over`, reported, not enforced.
/// 6. DoNotSchedule topology spread, replayed: in the order Karpenter's scheduler and the packer take
///    pods (CPU, then memory, descending), every pod carrying a spread passes the scheduling-time rule
///    against the pods placed before it (domains and min as in 5). Passing shows that kube-scheduler
///    could have produced the final spread counts; 5 is what any order would need.
fn validate(input: &Input, packing: &Packing) -> Report {
    let mut c = Checker {
        checks: 0,
        violations: Vec::new(),
    };
    let pods = &input.pods;
    let n = pods.len();

    // 1. Every pod placed exactly once.
    c.check(packing.unschedulable.is_empty(), || {
        format!("{} pods unschedulable", packing.unschedulable.len())
    });
    let mut node_of: Vec<Option<usize>> = vec![None; n];
    for (i, node) in packing.nodes.iter().enumerate() {
        for &p in &node.pods {
            c.check(p < n, || format!("node {i}: pod index {p} out of range"));
            if p < n {
                let before = node_of[p].replace(i);
                c.check(before.is_none(), || {
                    format!("pod {p} on node {} and node {i}", before.unwrap_or(i))
                });
            }
        }
    }
    for (p, node) in node_of.iter().enumerate() {
        c.check(node.is_some(), || format!("pod {p} placed on no node"));
    }
    if !c.violations.is_empty() {
        fail(&c); // the constraint checks below need every pod on one node
    }

    // 2. Capacity, pod cap, offering.
    let offered_zones: Vec<usize> = (0..input.zones.len())
        .filter(|&z| {
            input.types.iter().any(|t| {
                t.offerings
                    .iter()
                    .any(|o| o.available && o.zone == input.zones[z])
            })
        })
        .collect();
    for (i, node) in packing.nodes.iter().enumerate() {
        let Some(t) = input.types.get(node.instance_type) else {
            c.check(false, || {
                format!("node {i}: no type {}", node.instance_type)
            });
            continue;
        };
        let Some(zone) = input.zones.get(node.zone) else {
            c.check(false, || format!("node {i}: no zone {}", node.zone));
            continue;
        };
        let on: Vec<&Pod> = node.pods.iter().filter_map(|&p| pods.get(p)).collect();
        let cpu: u64 = on.iter().map(|p| p.cpu_millis).sum::<u64>() + t.overhead_cpu_millis;
        let memory: u64 = on.iter().map(|p| p.memory_bytes).sum::<u64>() + t.overhead_memory_bytes;
        c.check(cpu <= t.cpu_millis, || {
            format!(
                "node {i} ({}): cpu {cpu}m with overhead > {}m",
                t.name, t.cpu_millis
            )
        });
        c.check(memory <= t.memory_bytes, || {
            format!(
                "node {i} ({}): memory {memory} with overhead > {}",
                t.name, t.memory_bytes
            )
        });
        c.check(on.len() <= t.pods as usize, || {
            format!("node {i} ({}): {} pods > cap {}", t.name, on.len(), t.pods)
        });
        let capacity_type = if node.spot { "spot" } else { "on-demand" };
        c.check(
            t.offerings.iter().any(|o| {
                o.available
                    && &o.zone == zone
                    && o.capacity_type == capacity_type
                    && o.price == node.price
            }),
            || {
                format!(
                    "node {i} ({}): no available {capacity_type} offering in {zone} at {}",
                    t.name, node.price
                )
            },
        );
    }

    // Pods per domain, for the constraint checks.
    let pod_domain = |key: &str, p: usize| {
        let node = node_of[p].expect("placed");
        domain(key, node, packing.nodes[node].zone)
    };
    let mut members: BTreeMap<Domain, Vec<usize>> = BTreeMap::new();
    for p in 0..n {
        for key in ["zone", "hostname"] {
            members.entry(pod_domain(key, p)).or_default().push(p);
        }
    }

    // 3. Anti-affinity: no other pod in the domain is selected by a term.
    for (p, pod) in pods.iter().enumerate() {
        for term in pod.anti_affinity.iter().flatten() {
            for &q in &members[&pod_domain(&term.key, p)] {
                c.check(q == p || !selects(&term.match_labels, &pods[q].labels), || {
                    format!(
                        "anti-affinity: pod {p} (term {:?} on {}) shares {:?} with pod {q} {:?}",
                        term.match_labels,
                        term.key,
                        pod_domain(&term.key, p),
                        pods[q].labels
                    )
                });
            }
        }
    }

    // 4. Affinity: some order in which every placement passes kube-scheduler's rule.
    let terms: Vec<&Term> = {
        let mut all: Vec<&Term> = pods
            .iter()
            .flat_map(|p| p.affinity.iter().flatten())
            .collect();
        all.sort_by(|a, b| (&a.key, &a.match_labels).cmp(&(&b.key, &b.match_labels)));
        all.dedup_by(|a, b| (&a.key, &a.match_labels) == (&b.key, &b.match_labels));
        all
    };
    let term_index = |t: &Term| {
        terms
            .iter()
            .position(|u| u.key == t.key && u.match_labels == t.match_labels)
            .expect("interned")
    };
    let pod_terms: Vec<Vec<usize>> = pods
        .iter()
        .map(|p| p.affinity.iter().flatten().map(term_index).collect())
        .collect();
    let matches_all = |q: usize, of: usize| {
        pod_terms[of]
            .iter()
            .all(|&t| selects(&terms[t].match_labels, &pods[q].labels))
    };
    let with_affinity: Vec<usize> = (0..n).filter(|&p| !pod_terms[p].is_empty()).collect();
    // Simulates the order (seeds, pods without affinity, affinity pods to a fixpoint); returns the
    // affinity pods left over and the seeds that could not be first.
    let simulate = |seeds: &[usize]| -> (Vec<usize>, Vec<usize>) {
        let mut placed = vec![false; n];
        let mut placed_list: Vec<usize> = Vec::new();
        // Per term: placed matching pods per domain.
        let mut counts: Vec<BTreeMap<Domain, u64>> = vec![BTreeMap::new(); terms.len()];
        let place = |q: usize,
                     placed: &mut Vec<bool>,
                     list: &mut Vec<usize>,
                     counts: &mut Vec<BTreeMap<Domain, u64>>| {
            placed[q] = true;
            list.push(q);
            for (t, term) in terms.iter().enumerate() {
                if selects(&term.match_labels, &pods[q].labels) {
                    *counts[t].entry(pod_domain(&term.key, q)).or_insert(0) += 1;
                }
            }
        };
        let mut waiting: Vec<usize> = seeds.to_vec();
        loop {
            let before = waiting.len();
            waiting.retain(|&s| {
                if placed_list.iter().any(|&q| matches_all(q, s)) {
                    return true;
                }
                place(s, &mut placed, &mut placed_list, &mut counts);
                false
            });
            if waiting.is_empty() || waiting.len() == before {
                break;
            }
        }
        // A seed that cannot be first is a violation; it is placed anyway, after the others, so
        // that the pods it supports are not reported too.
        let bad_seeds = waiting;
        for &s in &bad_seeds {
            place(s, &mut placed, &mut placed_list, &mut counts);
        }
        for (p, own) in pod_terms.iter().enumerate() {
            if own.is_empty() {
                place(p, &mut placed, &mut placed_list, &mut counts);
            }
        }
        let mut left: Vec<usize> = with_affinity
            .iter()
            .copied()
            .filter(|&p| !placed[p])
            .collect();
        loop {
            let before = left.len();
            let mut next = Vec::new();
            for &p in &left {
                let supported = pod_terms[p].iter().all(|&t| {
                    counts[t]
                        .get(&pod_domain(&terms[t].key, p))
                        .is_some_and(|&k| k > 0)
                });
                if supported {
                    place(p, &mut placed, &mut placed_list, &mut counts);
                } else {
                    next.push(p);
                }
            }
            left = next;
            if left.is_empty() || left.len() == before {
                break;
            }
        }
        (left, bad_seeds)
    };
    let mut seeds: Vec<usize> = Vec::new();
    let (mut left, mut bad_seeds) = simulate(&seeds);
    while let Some(&p) = left.iter().find(|&&p| matches_all(p, p)) {
        seeds.push(p);
        (left, bad_seeds) = simulate(&seeds);
    }
    for &p in &with_affinity {
        c.check(!left.contains(&p), || {
            format!(
                "affinity: pod {p} {:?} in {:?}: no pod matching its terms {:?} there before it, and it does not match them itself",
                pods[p].labels,
                pod_domain(&terms[pod_terms[p][0]].key, p),
                pod_terms[p].iter().map(|&t| &terms[t].match_labels).collect::<Vec<_>>()
            )
        });
        c.check(!bad_seeds.contains(&p), || {
            let key = &terms[pod_terms[p][0]].key;
            let elsewhere: Vec<_> = seeds
                .iter()
                .filter(|&&s| s != p && matches_all(s, p))
                .map(|&s| (s, pod_domain(key, s)))
                .collect();
            format!(
                "affinity: pod {p} {:?} in {:?} has no pod matching its terms in its domain before it, so it must be the first such pod, but so must {elsewhere:?}",
                pods[p].labels,
                pod_domain(key, p)
            )
        });
    }

    // 5. Topology spread.
    let mut constraints: Vec<(&str, &BTreeMap<String, String>, u32)> = pods
        .iter()
        .flat_map(|p| p.spread.iter().flatten())
        .filter(|t| when_schedule(t))
        .map(|t| (t.key.as_str(), &t.match_labels, t.max_skew))
        .collect();
    constraints.sort();
    constraints.dedup();
    let mut strict_over = 0;
    for &(key, selector, max_skew) in &constraints {
        let eligible: Vec<Domain> = match key {
            "zone" => offered_zones.iter().map(|&z| Domain::Zone(z)).collect(),
            _ => (0..packing.nodes.len()).map(Domain::Host).collect(),
        };
        let mut matching: BTreeMap<Domain, u64> = eligible.iter().map(|&d| (d, 0)).collect();
        let mut carrying: BTreeMap<Domain, u64> = BTreeMap::new();
        for (p, pod) in pods.iter().enumerate() {
            if !selects(selector, &pod.labels) {
                continue;
            }
            let d = pod_domain(key, p);
            *matching.entry(d).or_insert(0) += 1;
            let carries = pod.spread.iter().flatten().any(|t| {
                when_schedule(t)
                    && t.key == key
                    && &t.match_labels == selector
                    && t.max_skew == max_skew
            });
            if carries {
                *carrying.entry(d).or_insert(0) += 1;
            }
        }
        let on_eligible = eligible.iter().map(|d| matching[d]);
        let min_final = on_eligible.clone().min().unwrap_or(0);
        let max_final = on_eligible.max().unwrap_or(0);
        if max_final - min_final > u64::from(max_skew) {
            strict_over += 1;
        }
        let min = if key == "zone" { min_final } else { 0 };
        for (d, &k) in &carrying {
            c.check(eligible.contains(d), || {
                format!("spread {key} {selector:?}: pods in ineligible domain {d:?}")
            });
            c.check(k <= u64::from(max_skew) + min, || {
                format!(
                    "spread {key} {selector:?} maxSkew {max_skew}: {k} pods carrying it and matching it in {d:?}, min over eligible domains {min} (matching per domain: {:?})",
                    if key == "zone" { Some(&matching) } else { None }
                )
            });
        }
    }

    // 6. Topology spread replayed in the order both schedulers take pods (largest first: CPU, then
    // memory, descending; input order on ties): each pod that carries a DoNotSchedule spread passes
    // the scheduling-time rule when it is placed, count in its domain (placed pods matching the
    // selector) + 1 if it matches the selector itself - min <= maxSkew, min as in 5 but over the
    // pods placed so far.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| {
        (pods[b].cpu_millis, pods[b].memory_bytes, a).cmp(&(
            pods[a].cpu_millis,
            pods[a].memory_bytes,
            b,
        ))
    });
    let mut selectors: Vec<(&str, &BTreeMap<String, String>)> =
        constraints.iter().map(|&(k, s, _)| (k, s)).collect();
    selectors.dedup();
    let mut counts: Vec<BTreeMap<Domain, u64>> = selectors
        .iter()
        .map(|&(key, _)| match key {
            "zone" => offered_zones
                .iter()
                .map(|&z| (Domain::Zone(z), 0))
                .collect(),
            _ => BTreeMap::new(),
        })
        .collect();
    for &p in &order {
        for t in pods[p].spread.iter().flatten().filter(|t| when_schedule(t)) {
            let i = selectors
                .iter()
                .position(|&(k, s)| k == t.key && s == &t.match_labels)
                .expect("interned");
            let d = pod_domain(&t.key, p);
            let count = counts[i].get(&d).copied().unwrap_or(0);
            let own = u64::from(selects(&t.match_labels, &pods[p].labels));
            let min = if t.key == "zone" {
                counts[i].values().copied().min().unwrap_or(0)
            } else {
                0
            };
            c.check(count + own <= u64::from(t.max_skew) + min, || {
                format!(
                    "spread replay: pod {p} {:?} ({} {:?} maxSkew {}) into {d:?} with {count} matching there before it (+{own} itself), min {min}",
                    pods[p].labels, t.key, t.match_labels, t.max_skew
                )
            });
        }
        for (i, &(key, selector)) in selectors.iter().enumerate() {
            if selects(selector, &pods[p].labels) {
                *counts[i].entry(pod_domain(key, p)).or_insert(0) += 1;
            }
        }
    }

    if !c.violations.is_empty() {
        fail(&c);
    }
    Report {
        checks: c.checks,
        strict_over,
    }
}

/// Breaks one rule on purpose (`CLOUDOPTIM_TAMPER=dup|overfill|offering|anti|affinity|spread`), to
/// show that the validator catches it: the run must then fail.
fn tamper(input: &Input, packing: &mut Packing, kind: &str) {
    let pods = &input.pods;
    let node_with = |packing: &Packing, skip: Option<usize>, f: &dyn Fn(&Pod) -> bool| {
        packing.nodes.iter().enumerate().find_map(|(i, n)| {
            let p = *n.pods.iter().find(|&&p| f(&pods[p]))?;
            (Some(i) != skip).then_some((i, p))
        })
    };
    let move_pod = |packing: &mut Packing, p: usize, from: usize, to: usize| {
        packing.nodes[from].pods.retain(|&q| q != p);
        packing.nodes[to].pods.push(p);
    };
    match kind {
        "dup" => {
            let p = packing.nodes[0].pods[0];
            packing.nodes[1].pods.push(p);
        }
        "overfill" => {
            let moved = std::mem::take(&mut packing.nodes[1].pods);
            packing.nodes[0].pods.extend(moved);
        }
        "offering" => {
            packing.nodes[0].zone = input.zones.len() - 1;
            packing.nodes[0].spot = true;
        }
        "anti" => {
            let anti = |p: &Pod| p.anti_affinity.as_ref().is_some_and(|a| !a.is_empty());
            let (a, _) = node_with(packing, None, &anti).expect("an anti-affinity pod");
            let (b, p) = node_with(packing, Some(a), &anti).expect("two");
            move_pod(packing, p, b, a);
        }
        "affinity" => {
            let with = |p: &Pod| p.affinity.as_ref().is_some_and(|a| !a.is_empty());
            let (a, p) = node_with(packing, None, &with).expect("an affinity pod");
            let zone = packing.nodes[a].zone;
            let to = packing
                .nodes
                .iter()
                .position(|n| n.zone != zone)
                .expect("another zone");
            move_pod(packing, p, a, to);
        }
        "spread" => {
            // Every carrier of one zone spread onto the first node of one zone.
            let first = pods
                .iter()
                .find_map(|p| p.spread.iter().flatten().find(|t| t.key == "zone"))
                .expect("a zone spread");
            let carries = |p: &Pod| {
                p.spread.iter().flatten().any(|t| {
                    t.key == "zone"
                        && t.match_labels == first.match_labels
                        && selects(&t.match_labels, &p.labels)
                })
            };
            let to = 0;
            while let Some((from, p)) = node_with(packing, Some(to), &carries) {
                move_pod(packing, p, from, to);
            }
        }
        other => panic!("CLOUDOPTIM_TAMPER={other}: unknown"),
    }
}

fn fail(c: &Checker) -> ! {
    for v in c.violations.iter().take(20) {
        eprintln!("violation: {v}");
    }
    println!(
        "compare side=cloudoptim valid=no checks={} violations={}",
        c.checks,
        c.violations.len()
    );
    panic!(
        "the packing is invalid: {} violation(s), first: {}",
        c.violations.len(),
        c.violations[0]
    );
}
