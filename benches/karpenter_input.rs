//! The packer on Karpenter's own benchmark input (`bench/karpenter-compare.sh`): reads the JSON that
//! the Go side wrote from Karpenter's `makeDiversePods` and `fake.InstanceTypes(400)` (see
//! `bench/karpenter/zz_cloudoptim_compare_test.go`), converts it to the packer's types (outside the
//! timer, as Karpenter builds its pods, scheduler and topology outside its timer), and times
//! `packer::pack` once cold (the first call in this process) and `CLOUDOPTIM_WARM` times warm. Prints
//! one line per call, in the Go side's format:
//! `compare side=cloudoptim run=cold|warm seconds=S pods=P nodes=N cost=C`.
//!
//! Without `CLOUDOPTIM_INPUT` (a plain `cargo bench`) it prints a note and does nothing.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

use cloudoptim::engine::consolidation::packer::{self, InstanceShape, Offering, PendingPod};
use cloudoptim::engine::snapshot::{LabelSelector, Resources, TopologyKey, TopologySpread};
use serde::Deserialize;

#[derive(Deserialize)]
struct Term {
    key: String,
    #[serde(default)]
    max_skew: u32,
    match_labels: BTreeMap<String, String>,
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
    }
}
