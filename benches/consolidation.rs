//! Consolidation planner benchmark (DESIGN.md section 11: plan 5,000 nodes / 100,000 pods < 1 s, one
//! core), and the scheduling-style packer on Karpenter's benchmark shape.
//!
//! The cluster is the seeded scale scenario (`engine::consolidation::scenario`, seed 42): three zones,
//! general, arm64 and tainted batch pools, DaemonSets on every node, Deployments with zone spread,
//! hostname anti-affinity, hostname spread and zone pod affinity, StatefulSets, PDBs, many underutilised
//! nodes. The time is the whole `plan()` call (interning and index building included), single-threaded.
//!
//! The baseline is `plan_naive`: the same decisions (the property tests check the plans are identical)
//! computed the straightforward way: for each pod, scan the destinations in order and check every
//! constraint from the raw objects, recounting topology-spread domains by walking every live node's
//! pods. It is quadratic, so it is measured on smaller clusters of the same shape (500 / 10,000 and
//! 1,000 / 20,000) next to the indexed planner on the same clusters; the ratio is only ever computed
//! between runs on the same cluster, never extrapolated.
//!
//! `packing`: `engine::consolidation::packer` on Karpenter's fake instance types (`karpenter_types(400)`:
//! overhead, pod caps, Spot and on-demand offerings in three zones) and 20,000 pending pods of the
//! Karpenter benchmark's five mixes drawn by CloudOptim's own generator (seed 42). A quick local figure
//! only: the comparison with Karpenter runs both on one input file (`bench/karpenter-compare.sh`,
//! `benches/karpenter_input.rs`).
//!
//! With `--bench`, after the criterion groups, it prints `ratio` lines for scripts:
//! `cargo bench --bench consolidation | grep '^ratio'`. A filter argument (`cargo bench --bench
//! consolidation -- packing`) limits both the criterion groups and the ratio lines.

use std::hint::black_box;
use std::time::{Duration, Instant};

use cloudoptim::engine::consolidation::{Options, packer, plan, plan_naive, scenario};
use criterion::Criterion;

const SEED: u64 = 42;
const TARGET: Duration = Duration::from_secs(1);
/// (nodes, pods) of the target scenario.
const FULL: (usize, usize) = (5_000, 100_000);
/// Sizes where the naive baseline runs next to the indexed planner.
const COMPARED: [(usize, usize); 2] = [(500, 10_000), (1_000, 20_000)];
/// Karpenter's benchmark shape.
const PACK_TYPES: usize = 400;
const PACK_PODS: usize = 20_000;

fn median_of(runs: usize, mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort_unstable();
    times[runs / 2]
}

/// The first argument that is not a flag: criterion's benchmark filter.
fn filter() -> Option<String> {
    std::env::args().skip(1).find(|a| !a.starts_with('-'))
}

fn wanted(name: &str) -> bool {
    filter().is_none_or(|f| name.contains(&f))
}

fn main() {
    let mut c = Criterion::default()
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(10)
        .configure_from_args();
    let ratios = std::env::args().any(|a| a == "--bench");
    if wanted("consolidation") {
        consolidation(&mut c, ratios);
    }
    if wanted("packing") {
        packing(&mut c, ratios);
    }
    c.final_summary();
}

fn consolidation(c: &mut Criterion, ratios: bool) {
    let options = Options::default();
    let full = scenario::generate(SEED, FULL.0, FULL.1);
    let small: Vec<_> = COMPARED
        .iter()
        .map(|&(n, p)| scenario::generate(SEED, n, p))
        .collect();
    // The two planners must agree before their speed means anything.
    for s in &small {
        assert_eq!(
            plan(s, &options).ok(),
            plan_naive(s, &options).ok(),
            "indexed and naive plans differ"
        );
    }
    let mut group = c.benchmark_group(format!(
        "consolidation/{} nodes {} pods",
        full.nodes.len(),
        full.pods.len()
    ));
    group.bench_function("plan", |b| b.iter(|| plan(black_box(&full), &options)));
    group.finish();
    for s in &small {
        let mut group = c.benchmark_group(format!(
            "consolidation/{} nodes {} pods",
            s.nodes.len(),
            s.pods.len()
        ));
        group.bench_function("plan", |b| b.iter(|| plan(black_box(s), &options)));
        group.bench_function("naive", |b| b.iter(|| plan_naive(black_box(s), &options)));
        group.finish();
    }
    if !ratios {
        return;
    }
    let secs = |d: Duration| d.as_secs_f64();
    let full_plan = plan(&full, &options).ok();
    let removed = full_plan.as_ref().map_or(0, |p| p.removals.len());
    let moved = full_plan.as_ref().map_or(0, |p| p.moves.len());
    let fast = median_of(11, || drop(black_box(plan(&full, &options))));
    println!("measured consolidation_plan_s {:.4}", secs(fast));
    println!(
        "ratio consolidation_vs_target: plan {} nodes / {} pods ({removed} nodes removed, {moved} pods \
         moved) {:.3} s, target {:.0} s, target/plan = {:.1}x",
        full.nodes.len(),
        full.pods.len(),
        secs(fast),
        secs(TARGET),
        secs(TARGET) / secs(fast)
    );
    for s in &small {
        let fast = median_of(21, || drop(black_box(plan(s, &options))));
        let slow = median_of(5, || drop(black_box(plan_naive(s, &options))));
        println!(
            "ratio consolidation_vs_naive: {} nodes / {} pods: plan {:.2} ms, naive {:.2} ms, naive/plan \
             = {:.1}x",
            s.nodes.len(),
            s.pods.len(),
            secs(fast) * 1e3,
            secs(slow) * 1e3,
            secs(slow) / secs(fast)
        );
    }
}

fn packing(c: &mut Criterion, ratios: bool) {
    let types = packer::karpenter_types(PACK_TYPES);
    let pods = packer::karpenter_pods(PACK_PODS, SEED);
    let packing = packer::pack(&pods, &types, 3);
    assert!(packing.unschedulable.is_empty(), "every pod fits a type");
    let mut group = c.benchmark_group(format!("packing/{PACK_TYPES} types {PACK_PODS} pods"));
    group.bench_function("pack", |b| {
        b.iter(|| packer::pack(black_box(&pods), &types, 3))
    });
    group.finish();
    if !ratios {
        return;
    }
    let time = median_of(11, || drop(black_box(packer::pack(&pods, &types, 3))));
    let pods_per_sec = PACK_PODS as f64 / time.as_secs_f64();
    println!(
        "packing: {PACK_PODS} pods on {PACK_TYPES} types ({} nodes, {:.2} USD/h) {:.2} ms = {pods_per_sec:.0} \
         pods/s (own draws; Karpenter on identical input: bench/karpenter-compare.sh)",
        packing.nodes.len(),
        packing.hourly_cost(),
        time.as_secs_f64() * 1e3,
    );
}
