use std::collections::BTreeMap;

use super::*;
use crate::engine::snapshot::{Node, Resources};

const HOUR: i64 = 3600;
const DAY: i64 = 24 * HOUR;

fn web() -> Workload {
    Workload {
        namespace: "shop".into(),
        kind: WorkloadKind::Deployment,
        name: "web".into(),
    }
}

/// One sample an hour for `hours`, value `f(hour)`.
fn hourly(hours: i64, f: impl Fn(i64) -> f64) -> Vec<Sample> {
    (0..hours)
        .map(|h| Sample {
            at: 1_700_000_000 + h * HOUR,
            value: f(h),
        })
        .collect()
}

fn usage(cpu: Vec<Sample>, memory: Vec<Sample>) -> ContainerUsage {
    ContainerUsage {
        workload: web(),
        container: "app".into(),
        replicas: 3,
        current: Requests {
            cpu_millis: Some(1000),
            memory_bytes: Some(2 * GIB),
        },
        cpu,
        memory,
        oom_kills: vec![],
    }
}

#[test]
fn percentile_is_nearest_rank_and_ignores_bad_values() {
    let samples = hourly(100, |h| (h + 1) as f64);
    assert_eq!(percentile(&samples, 95.0), Some(95.0));
    assert_eq!(percentile(&samples, 99.0), Some(99.0));
    assert_eq!(percentile(&samples, 100.0), Some(100.0));
    let mut bad = hourly(3, |_| f64::NAN);
    bad.push(Sample { at: 0, value: -1.0 });
    assert_eq!(percentile(&bad, 95.0), None);
}

#[test]
fn steady_usage_gets_percentile_times_buffer() {
    // p95 of 1..=100 millicores-as-cores/1000 is 0.095 cores -> x1.2 = 114m.
    let cpu = hourly(14 * 24, |h| ((h % 100) + 1) as f64 / 1000.0);
    let memory = hourly(14 * 24, |_| 500.0 * MIB as f64);
    let rec = recommend(&usage(cpu, memory), &Settings::default(), None);
    assert_eq!(rec.recommended.cpu_millis, Some(114));
    assert_eq!(rec.recommended.memory_bytes, Some(600 * MIB));
    assert_eq!(rec.confidence, Confidence::High);
    assert!(!rec.oom_bumped);
}

#[test]
fn float_noise_does_not_add_a_millicore_or_a_mib() {
    let rec = recommend(
        &usage(hourly(48, |_| 0.1), hourly(48, |_| 300.0 * MIB as f64)),
        &Settings::default(),
        None,
    );
    assert_eq!(rec.recommended.cpu_millis, Some(120));
    assert_eq!(rec.recommended.memory_bytes, Some(360 * MIB));
}

#[test]
fn idle_containers_get_the_floors() {
    let rec = recommend(
        &usage(hourly(48, |_| 0.0), hourly(48, |_| 1.0)),
        &Settings::default(),
        None,
    );
    assert_eq!(rec.recommended.cpu_millis, Some(10));
    assert_eq!(rec.recommended.memory_bytes, Some(32 * MIB));
    assert_eq!(rec.confidence, Confidence::Low);
}

#[test]
fn under_a_day_of_data_recommends_nothing() {
    let rec = recommend(
        &usage(hourly(20, |_| 0.5), hourly(20, |_| 1e9)),
        &Settings::default(),
        None,
    );
    assert_eq!(rec.confidence, Confidence::None);
    assert_eq!(rec.recommended, Requests::default());
    assert_eq!(rec.target(), rec.current);
}

#[test]
fn an_oom_kill_bumps_memory_at_once_even_without_enough_data() {
    let mut young = usage(hourly(5, |_| 0.5), hourly(5, |_| 100.0 * MIB as f64));
    young.current.memory_bytes = Some(256 * MIB);
    young.oom_kills.push(OomKill {
        at: 1_700_000_000 + 4 * HOUR,
        memory_bytes: 256 * MIB,
    });
    let rec = recommend(&young, &Settings::default(), None);
    assert_eq!(rec.confidence, Confidence::None);
    assert_eq!(rec.recommended.cpu_millis, None);
    // 256Mi x 1.2 = 307.2Mi < 256Mi + 100Mi = 356Mi.
    assert_eq!(rec.recommended.memory_bytes, Some(356 * MIB));
    assert!(rec.oom_bumped);
}

#[test]
fn an_oom_kill_is_never_undercut_by_low_usage() {
    let mut killed = usage(
        hourly(14 * 24, |_| 0.2),
        hourly(14 * 24, |_| 200.0 * MIB as f64),
    );
    killed.oom_kills.push(OomKill {
        at: 1_700_000_000 + 3 * DAY,
        memory_bytes: GIB,
    });
    let rec = recommend(&killed, &Settings::default(), None);
    // 1Gi x 1.2 = 1228.8Mi, rounded up to 1229Mi; beats 1Gi + 100Mi and 200Mi x 1.2.
    assert_eq!(rec.recommended.memory_bytes, Some(1229 * MIB));
    assert!(rec.oom_bumped);
}

#[test]
fn confidence_follows_the_span_of_the_data() {
    assert_eq!(Confidence::from_span(23 * HOUR), Confidence::None);
    assert_eq!(Confidence::from_span(DAY), Confidence::Low);
    assert_eq!(Confidence::from_span(3 * DAY), Confidence::Medium);
    assert_eq!(Confidence::from_span(7 * DAY), Confidence::High);
}

#[test]
fn the_crd_percentile_and_buffer_are_used() {
    let settings = Settings {
        cpu_percentile: 50.0,
        buffer: 0.0,
        ..Settings::default()
    };
    let cpu = hourly(100, |h| (h + 1) as f64 / 100.0);
    let rec = recommend(&usage(cpu, hourly(100, |_| GIB as f64)), &settings, None);
    assert_eq!(rec.recommended.cpu_millis, Some(500));
    assert_eq!(rec.recommended.memory_bytes, Some(GIB));
}

#[test]
fn out_of_range_settings_are_refused_naming_the_field() {
    let bad = Settings {
        memory_percentile: 101.0,
        ..Settings::default()
    };
    let message = bad.checked().expect_err("refused").to_string();
    assert!(message.contains("memoryPercentile"), "{message}");
    let negative = Settings {
        buffer: -0.1,
        ..Settings::default()
    };
    assert!(matches!(negative.checked(), Err(SettingsError::Buffer(_))));
}

fn node(cpu_millis: u64, gib: u64, price: f64) -> Node {
    let mut node = Node::new(
        "n",
        Resources {
            cpu_millis,
            memory_bytes: gib * GIB,
            pods: 110,
        },
    );
    node.hourly_price = Some(price);
    node
}

#[test]
fn unit_prices_add_back_up_to_the_node_prices() {
    let nodes = [node(2000, 8, 0.096), node(4000, 32, 0.252)];
    let prices = UnitPrices::of_nodes(&nodes).expect("priced");
    let back: f64 = [(2.0, 8.0), (4.0, 32.0)]
        .iter()
        .map(|(v, g)| v * prices.per_vcpu_hour + g * prices.per_gib_hour)
        .sum();
    assert!((back - 0.348).abs() < 1e-9, "{back}");
    assert!((prices.per_vcpu_hour / prices.per_gib_hour - prices::VCPU_TO_GIB).abs() < 1e-9);
    assert_eq!(UnitPrices::of_nodes(&[]), None);
}

#[test]
fn savings_price_the_freed_requests_for_every_replica() {
    let prices = UnitPrices {
        per_vcpu_hour: 0.04,
        per_gib_hour: 0.005,
    };
    let cpu = hourly(14 * 24, |_| 0.25);
    let memory = hourly(14 * 24, |_| 512.0 * MIB as f64);
    let rec = recommend(&usage(cpu, memory), &Settings::default(), Some(&prices));
    // 1000m -> 300m and 2Gi -> 615Mi (512Mi x 1.2 = 614.4Mi), 3 replicas, 730 h.
    assert_eq!(rec.recommended.cpu_millis, Some(300));
    assert_eq!(rec.recommended.memory_bytes, Some(615 * MIB));
    let freed_gib = (2048.0 - 615.0) / 1024.0;
    let expected = (0.7 * 0.04 + freed_gib * 0.005) * 3.0 * 730.0;
    assert!((rec.monthly_savings - expected).abs() < 1e-9);
}

#[test]
fn recommend_all_puts_the_largest_saving_first() {
    let prices = UnitPrices {
        per_vcpu_hour: 0.04,
        per_gib_hour: 0.005,
    };
    let small = usage(hourly(48, |_| 0.9), hourly(48, |_| GIB as f64));
    let mut big = usage(hourly(48, |_| 0.1), hourly(48, |_| GIB as f64));
    big.container = "sidecar".into();
    let all = recommend_all(&[small, big], &Settings::default(), Some(&prices));
    assert_eq!(all[0].container, "sidecar");
    assert!(all[0].monthly_savings > all[1].monthly_savings);
}

#[test]
fn pods_resolve_to_their_workloads() {
    let parents: BTreeMap<(String, String), OwnerRef> = [
        (("ReplicaSet", "web-5d8f"), ("Deployment", "web")),
        (("Job", "backup-2891"), ("CronJob", "backup")),
    ]
    .into_iter()
    .map(|((k, n), (pk, pn))| {
        (
            (k.to_string(), n.to_string()),
            OwnerRef {
                kind: pk.into(),
                name: pn.into(),
            },
        )
    })
    .collect();
    let owner = |kind: &str, name: &str| OwnerRef {
        kind: kind.into(),
        name: name.into(),
    };
    let resolve =
        |o: OwnerRef| resolve_owner("ns", "p", Some(&o), &parents).map(|w| (w.kind, w.name));
    let expect = |kind, name: &str| Ok((kind, name.to_string()));
    assert_eq!(
        resolve(owner("ReplicaSet", "web-5d8f")),
        expect(WorkloadKind::Deployment, "web")
    );
    assert_eq!(
        resolve(owner("Job", "backup-2891")),
        expect(WorkloadKind::CronJob, "backup")
    );
    assert_eq!(
        resolve(owner("StatefulSet", "db")),
        expect(WorkloadKind::StatefulSet, "db")
    );
    assert_eq!(
        resolve(owner("DaemonSet", "agent")),
        expect(WorkloadKind::DaemonSet, "agent")
    );
    assert_eq!(
        resolve(owner("ReplicaSet", "bare")),
        expect(WorkloadKind::ReplicaSet, "bare")
    );
    assert_eq!(
        resolve(owner("Job", "once")),
        expect(WorkloadKind::Job, "once")
    );
    assert!(matches!(
        resolve_owner("ns", "p", Some(&owner("Node", "n1")), &parents),
        Err(OwnerError::Unsupported { .. })
    ));
    assert!(matches!(
        resolve_owner("ns", "p", None, &parents),
        Err(OwnerError::NoOwner { .. })
    ));
}
