//! Ranking benchmark (DESIGN.md section 11: ~800 types x 6 zones < 5 ms).
//!
//! Ranks every type of the embedded catalog in us-east-1 (946 types, 898 current generation, x 6 zones x
//! spot and on-demand: 10,776 candidates) with three active risk flags, next to a naive baseline in the
//! same run. The baseline is the straightforward implementation through the catalog's public API only:
//! owned `String`s for every candidate, a hash lookup per price, a fresh zone list per type and a linear
//! scan of the flags per candidate; the formula and the sort are the same. With `--bench`, after the
//! criterion groups, it prints one line per measure with the target ratio, for scripts:
//! `cargo bench --bench ranking | grep '^ratio'`.

use std::cmp::Ordering;
use std::hint::black_box;
use std::time::{Duration, Instant};

use cloudoptim::engine::catalog::Catalog;
use cloudoptim::engine::ranking::{FlaggedPair, Requirements, Weights, rank};
use criterion::Criterion;

const REGION: &str = "us-east-1";
const TARGET: Duration = Duration::from_millis(5);

fn flags() -> Vec<FlaggedPair> {
    [
        ("us-east-1a", "m5.large"),
        ("us-east-1b", "c6i.xlarge"),
        ("us-east-1c", "m7g.2xlarge"),
    ]
    .into_iter()
    .map(|(zone, t)| FlaggedPair {
        zone: zone.to_string(),
        instance_type: t.to_string(),
    })
    .collect()
}

/// What the naive baseline returns per candidate.
struct NaiveCandidate {
    instance_type: String,
    zone: String,
    capacity_type: String,
    price_per_vcpu_hour: f64,
    price_norm: f64,
    risk: f64,
    score: f64,
    flagged: bool,
}

/// The same ranking, written the obvious way against the public API.
fn naive_rank(
    catalog: &Catalog,
    req: &Requirements,
    w: Weights,
    flags: &[FlaggedPair],
) -> Vec<NaiveCandidate> {
    let mut all = Vec::new();
    for t in catalog.instance_types().filter(|t| req.admits(t)) {
        for zone in catalog
            .zones(REGION)
            .into_iter()
            .filter(|z| req.allows_zone(z))
        {
            let candidate =
                |capacity_type: &str, price: f64, risk: f64, flagged: bool| NaiveCandidate {
                    instance_type: t.name.clone(),
                    zone: zone.clone(),
                    capacity_type: capacity_type.to_string(),
                    price_per_vcpu_hour: price / f64::from(t.vcpu),
                    price_norm: 0.0,
                    risk,
                    score: 0.0,
                    flagged,
                };
            if let Some(price) = catalog.spot_price(REGION, &zone, &t.name) {
                let risk = catalog
                    .advisor_bucket(REGION, &t.name)
                    .map_or(1.0, |r| f64::from(r) / 4.0);
                let flagged = flags
                    .iter()
                    .any(|f| f.zone == zone && f.instance_type == t.name);
                all.push(candidate("spot", price, risk, flagged));
            }
            if let Some(price) = catalog.on_demand_price(REGION, &t.name) {
                all.push(candidate("on-demand", price, 0.0, false));
            }
        }
    }
    let mut kept: Vec<NaiveCandidate> = all.into_iter().filter(|c| !c.flagged).collect();
    let p_min = kept
        .iter()
        .map(|c| c.price_per_vcpu_hour)
        .fold(f64::INFINITY, f64::min);
    let p_max = kept
        .iter()
        .map(|c| c.price_per_vcpu_hour)
        .fold(f64::NEG_INFINITY, f64::max);
    for c in &mut kept {
        c.price_norm = if p_max > p_min {
            (c.price_per_vcpu_hour - p_min) / (p_max - p_min)
        } else {
            0.0
        };
        c.score = w.price * c.price_norm + w.risk * c.risk;
    }
    kept.sort_by(|a, b| {
        a.score
            .partial_cmp(&b.score)
            .unwrap_or(Ordering::Equal)
            .then(
                a.price_per_vcpu_hour
                    .partial_cmp(&b.price_per_vcpu_hour)
                    .unwrap_or(Ordering::Equal),
            )
            .then_with(|| a.instance_type.cmp(&b.instance_type))
            .then_with(|| a.zone.cmp(&b.zone))
            .then_with(|| a.capacity_type.cmp(&b.capacity_type))
    });
    kept
}

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

fn main() {
    let catalog = Catalog::embedded();
    let req = Requirements::default();
    let weights = Weights::default();
    let flags = flags();

    // Both implementations must agree before their speed means anything.
    let fast = rank(catalog, REGION, &req, weights, &flags)
        .map(|r| r.candidates)
        .unwrap_or_default();
    let naive = naive_rank(catalog, &req, weights, &flags);
    assert_eq!(fast.len(), naive.len(), "same candidate count");
    assert!(
        fast.iter()
            .zip(&naive)
            .all(|(a, b)| a.instance_type == b.instance_type && a.zone == b.zone)
    );

    let mut c = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(20)
        .configure_from_args();
    let mut group = c.benchmark_group(format!("ranking/{REGION} {} candidates", fast.len()));
    group.bench_function("rank", |b| {
        b.iter(|| rank(black_box(catalog), REGION, &req, weights, &flags))
    });
    group.bench_function("naive", |b| {
        b.iter(|| naive_rank(black_box(catalog), &req, weights, &flags))
    });
    group.finish();
    c.final_summary();

    if std::env::args().any(|a| a == "--bench") {
        let fast = median_of(51, || {
            drop(black_box(rank(catalog, REGION, &req, weights, &flags)))
        });
        let slow = median_of(21, || {
            drop(black_box(naive_rank(catalog, &req, weights, &flags)))
        });
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!("measured ranking_ms {:.4}", ms(fast));
        println!(
            "ratio ranking_vs_target: rank {:.3} ms, target {:.0} ms, target/rank = {:.1}x",
            ms(fast),
            ms(TARGET),
            TARGET.as_secs_f64() / fast.as_secs_f64()
        );
        println!(
            "ratio ranking_vs_naive: rank {:.3} ms, naive {:.3} ms, naive/rank = {:.1}x",
            ms(fast),
            ms(slow),
            slow.as_secs_f64() / fast.as_secs_f64()
        );
    }
}
