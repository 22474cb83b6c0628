//! Properties of [`recommend`] on random usage: never below the floors, never below the OOM bump of
//! any kill, the same answer on every run and for any order of the samples.

use proptest::prelude::*;

use super::*;

fn samples(max_len: usize, max_value: f64) -> impl Strategy<Value = Vec<Sample>> {
    prop::collection::vec((0i64..30 * 86_400, 0.0..max_value), 0..max_len).prop_map(|v| {
        v.into_iter()
            .map(|(at, value)| Sample { at, value })
            .collect()
    })
}

fn usages() -> impl Strategy<Value = ContainerUsage> {
    (
        samples(200, 16.0),
        samples(200, 64.0 * GIB as f64),
        prop::collection::vec((0i64..30 * 86_400, 0u64..32 * GIB), 0..3),
        prop::option::of(0u64..64_000),
        prop::option::of(0u64..64 * GIB),
        1u32..50,
    )
        .prop_map(
            |(cpu, memory, kills, cpu_now, mem_now, replicas)| ContainerUsage {
                workload: Workload {
                    namespace: "ns".into(),
                    kind: WorkloadKind::Deployment,
                    name: "w".into(),
                },
                container: "c".into(),
                replicas,
                current: Requests {
                    cpu_millis: cpu_now,
                    memory_bytes: mem_now,
                },
                cpu,
                memory,
                oom_kills: kills
                    .into_iter()
                    .map(|(at, memory_bytes)| OomKill { at, memory_bytes })
                    .collect(),
            },
        )
}

fn settings() -> impl Strategy<Value = Settings> {
    (
        50.0..=100.0f64,
        50.0..=100.0f64,
        0.0..2.0f64,
        1u64..500,
        1u64..512,
        1.0..4.0f64,
        0u64..512,
    )
        .prop_map(
            |(cpu_p, mem_p, buffer, min_cpu, min_mib, factor, oom_mib)| Settings {
                cpu_percentile: cpu_p,
                memory_percentile: mem_p,
                buffer,
                min_cpu_millis: min_cpu,
                min_memory_bytes: min_mib * MIB,
                oom_factor: factor,
                oom_minimum_bytes: oom_mib * MIB,
            },
        )
}

proptest! {
    #[test]
    fn never_below_floors_or_the_peak_after_an_oom(usage in usages(), settings in settings()) {
        let rec = recommend(&usage, &settings, None);
        if let Some(cpu) = rec.recommended.cpu_millis {
            prop_assert!(cpu >= settings.min_cpu_millis);
        }
        if let Some(memory) = rec.recommended.memory_bytes {
            prop_assert!(memory >= settings.min_memory_bytes);
        }
        for kill in &usage.oom_kills {
            let memory = rec.recommended.memory_bytes.expect("an OOM kill always gives memory");
            prop_assert!(memory as f64 >= kill.memory_bytes as f64 * settings.oom_factor);
            prop_assert!(memory >= kill.memory_bytes + settings.oom_minimum_bytes);
            prop_assert!(memory as f64 >= kill.memory_bytes as f64 * 1.2 || settings.oom_factor < 1.2);
        }
        if rec.confidence == Confidence::None && usage.oom_kills.is_empty() {
            prop_assert_eq!(rec.recommended, Requests::default());
        }
    }

    #[test]
    fn the_percentile_x_buffer_is_covered(usage in usages(), settings in settings()) {
        let rec = recommend(&usage, &settings, None);
        if let (Some(cpu), Some(p)) = (rec.recommended.cpu_millis, percentile(&usage.cpu, settings.cpu_percentile)) {
            prop_assert!(cpu as f64 >= p * (1.0 + settings.buffer) * 1000.0 - 1e-6);
        }
        if let (Some(mem), Some(p)) = (rec.recommended.memory_bytes, percentile(&usage.memory, settings.memory_percentile))
            && rec.confidence != Confidence::None
        {
            prop_assert!(mem as f64 >= p * (1.0 + settings.buffer) - 1.0);
        }
    }

    #[test]
    fn stable_under_repeated_runs_and_sample_order(usage in usages(), settings in settings(), seed in any::<u64>()) {
        let prices = UnitPrices { per_vcpu_hour: 0.03, per_gib_hour: 0.004 };
        let first = recommend(&usage, &settings, Some(&prices));
        prop_assert_eq!(&first, &recommend(&usage, &settings, Some(&prices)));
        let mut shuffled = usage.clone();
        let rotate = |v: &mut Vec<Sample>| if !v.is_empty() { let k = (seed as usize) % v.len(); v.rotate_left(k); v.reverse(); };
        rotate(&mut shuffled.cpu);
        rotate(&mut shuffled.memory);
        shuffled.oom_kills.reverse();
        prop_assert_eq!(first, recommend(&shuffled, &settings, Some(&prices)));
    }
}
