//! Right-sizing against a real Prometheus: 14 days of samples from a seeded generator (steady, diurnal,
//! spiky, OOM-killed and too-new workloads, plus a CronJob's pod), written as OpenMetrics, backfilled
//! with `promtool tsdb create-blocks-from openmetrics` into the TSDB of a real Prometheus, then read
//! with CloudOptim's own client and queries (the bounded step, owner resolution through ReplicaSets and
//! Jobs) and sized by the engine. The expected values are computed here from the generator's
//! parameters, not copied from a run.

mod support;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cloudoptim::engine::rightsizing::{
    Confidence, ContainerUsage, GIB, MIB, Recommendation, Requests, Settings, WorkloadKind,
    recommend_all,
};
use cloudoptim::prometheus::read::read;
use cloudoptim::prometheus::usage::group;
use cloudoptim::prometheus::{PromError, Prometheus, PrometheusOptions};
use support::operator::eventually;
use support::prometheus::Prometheus as PrometheusServer;
use support::{peer_env_public, unique};

const NAMESPACE: &str = "shop";
const STEP: i64 = 120;
const DAY: i64 = 86_400;
const WINDOW: i64 = 14 * DAY;

/// xorshift64*: the same noise on every run.
struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// 1 +- `spread`.
    fn jitter(&mut self, spread: f64) -> f64 {
        1.0 + spread * (2.0 * self.unit() - 1.0)
    }
}

/// One generated pod: its owner, how long it has existed, CPU cores and memory bytes at a time.
struct PodGen {
    pod: &'static str,
    container: &'static str,
    owner: (&'static str, &'static str),
    since: i64,
    cpu: fn(i64, &mut Rng) -> f64,
    memory: fn(i64, &mut Rng) -> f64,
    memory_limit: Option<u64>,
    oom_killed_after: Option<i64>,
}

const STEADY_CPU: f64 = 0.2;
const STEADY_MEMORY: f64 = 200.0 * MIB as f64;
const DIURNAL_CPU: (f64, f64) = (0.5, 0.4);
const DIURNAL_MEMORY: (f64, f64) = (GIB as f64, 256.0 * MIB as f64);
const SPIKY_CPU: f64 = 0.05;
const SPIKY_MEMORY: (f64, f64) = (100.0 * MIB as f64, 800.0 * MIB as f64);
const OOM_MEMORY: f64 = 400.0 * MIB as f64;
const OOM_LIMIT: u64 = 512 * MIB;
const NOISE: f64 = 0.02;

fn diurnal(t: i64, (mean, amplitude): (f64, f64)) -> f64 {
    mean + amplitude * (2.0 * std::f64::consts::PI * t as f64 / DAY as f64).sin()
}

fn pods() -> Vec<PodGen> {
    let steady = PodGen {
        pod: "web-5d8f7c-aaaaa",
        container: "web",
        owner: ("ReplicaSet", "web-5d8f7c"),
        since: WINDOW,
        cpu: |_, r| STEADY_CPU * r.jitter(NOISE),
        memory: |_, r| STEADY_MEMORY * r.jitter(NOISE),
        memory_limit: None,
        oom_killed_after: None,
    };
    vec![
        PodGen {
            pod: "web-5d8f7c-bbbbb",
            ..steady
        },
        steady,
        PodGen {
            pod: "db-0",
            container: "postgres",
            owner: ("StatefulSet", "db"),
            since: WINDOW,
            cpu: |t, r| diurnal(t, DIURNAL_CPU) * r.jitter(NOISE),
            memory: |t, _| diurnal(t, DIURNAL_MEMORY),
            memory_limit: None,
            oom_killed_after: None,
        },
        PodGen {
            pod: "agent-x7k2p",
            container: "agent",
            owner: ("DaemonSet", "agent"),
            since: WINDOW,
            // A spike every 100th step (1% of the time): above the CPU p95, inside the memory p99.
            cpu: |t, _| {
                if (t / STEP) % 100 == 0 {
                    1.0
                } else {
                    SPIKY_CPU
                }
            },
            memory: |t, _| {
                if (t / STEP) % 50 < 1 {
                    SPIKY_MEMORY.1
                } else {
                    SPIKY_MEMORY.0
                }
            },
            memory_limit: None,
            oom_killed_after: None,
        },
        PodGen {
            pod: "api-7c9d44-ccccc",
            container: "api",
            owner: ("ReplicaSet", "api-7c9d44"),
            since: WINDOW,
            cpu: |_, r| 0.1 * r.jitter(NOISE),
            memory: |_, _| OOM_MEMORY,
            memory_limit: Some(OOM_LIMIT),
            oom_killed_after: Some(10 * DAY),
        },
        PodGen {
            pod: "fresh-9f8e7d-ddddd",
            container: "fresh",
            owner: ("ReplicaSet", "fresh-9f8e7d"),
            since: 12 * 3600,
            cpu: |_, _| 1.0,
            memory: |_, _| GIB as f64,
            memory_limit: None,
            oom_killed_after: None,
        },
        PodGen {
            pod: "report-28999200-eeeee",
            container: "report",
            owner: ("Job", "report-28999200"),
            since: 2 * DAY,
            cpu: |_, r| 0.3 * r.jitter(NOISE),
            memory: |_, _| 64.0 * MIB as f64,
            memory_limit: None,
            oom_killed_after: None,
        },
    ]
}

/// The OpenMetrics text of every series from `end - WINDOW` to `end`, families contiguous, each
/// series in time order (as promtool wants them).
fn openmetrics(end: i64) -> String {
    let start = end - WINDOW;
    let mut out = String::new();
    let labels = |p: &PodGen| {
        format!(
            r#"namespace="{NAMESPACE}",pod="{}",container="{}""#,
            p.pod, p.container
        )
    };
    let times = |p: &PodGen| {
        (end - p.since..=end)
            .step_by(STEP as usize)
            .filter(move |t| *t >= start)
    };
    out.push_str("# TYPE container_cpu_usage_seconds counter\n");
    for (i, p) in pods().iter().enumerate() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ i as u64);
        let mut total = 0.0;
        for t in times(p) {
            total += (p.cpu)(t, &mut rng) * STEP as f64;
            writeln!(
                out,
                "container_cpu_usage_seconds_total{{{}}} {total} {t}",
                labels(p)
            )
            .unwrap();
        }
    }
    // The pause container and the pod cgroup: filtered out by the queries.
    for t in (start..=end).step_by(STEP as usize) {
        let total = (t - start) as f64 * 5.0;
        writeln!(out, r#"container_cpu_usage_seconds_total{{namespace="{NAMESPACE}",pod="web-5d8f7c-aaaaa",container="POD"}} {total} {t}"#).unwrap();
    }
    out.push_str("# TYPE container_memory_working_set_bytes gauge\n");
    for (i, p) in pods().iter().enumerate() {
        let mut rng = Rng(0xD1B5_4A32_D192_ED03 ^ i as u64);
        for t in times(p) {
            let bytes = (p.memory)(t, &mut rng).round();
            writeln!(
                out,
                "container_memory_working_set_bytes{{{}}} {bytes} {t}",
                labels(p)
            )
            .unwrap();
        }
    }
    out.push_str("# TYPE kube_pod_container_status_last_terminated_reason gauge\n");
    for p in pods().iter() {
        if let Some(after) = p.oom_killed_after {
            for t in times(p) {
                let killed = u8::from(t >= start + after);
                writeln!(out, r#"kube_pod_container_status_last_terminated_reason{{{},reason="OOMKilled"}} {killed} {t}"#, labels(p)).unwrap();
            }
        }
    }
    // Info series: every 30 minutes and at the end (instant queries look back 5 minutes).
    let sparse = |since: i64| {
        (end - since.min(WINDOW)..=end)
            .step_by(1800)
            .chain([end])
            .collect::<Vec<_>>()
    };
    out.push_str("# TYPE kube_pod_container_resource_limits gauge\n");
    for p in pods().iter() {
        if let Some(limit) = p.memory_limit {
            for t in sparse(p.since) {
                writeln!(out, r#"kube_pod_container_resource_limits{{{},resource="memory",unit="byte"}} {limit} {t}"#, labels(p)).unwrap();
            }
        }
    }
    out.push_str("# TYPE kube_pod_owner gauge\n");
    for p in pods().iter() {
        for t in sparse(p.since) {
            writeln!(out, r#"kube_pod_owner{{namespace="{NAMESPACE}",pod="{}",owner_kind="{}",owner_name="{}",owner_is_controller="true"}} 1 {t}"#, p.pod, p.owner.0, p.owner.1).unwrap();
        }
    }
    out.push_str("# TYPE kube_replicaset_owner gauge\n");
    for (rs, deployment) in [
        ("web-5d8f7c", "web"),
        ("api-7c9d44", "api"),
        ("fresh-9f8e7d", "fresh"),
    ] {
        for t in sparse(WINDOW) {
            writeln!(out, r#"kube_replicaset_owner{{namespace="{NAMESPACE}",replicaset="{rs}",owner_kind="Deployment",owner_name="{deployment}",owner_is_controller="true"}} 1 {t}"#).unwrap();
        }
    }
    out.push_str("# TYPE kube_job_owner gauge\n");
    for t in sparse(2 * DAY) {
        writeln!(out, r#"kube_job_owner{{namespace="{NAMESPACE}",job_name="report-28999200",owner_kind="CronJob",owner_name="report",owner_is_controller="true"}} 1 {t}"#).unwrap();
    }
    out.push_str("# EOF\n");
    out
}

/// Backfill `text` into `data` (a TSDB directory) with promtool.
fn backfill(promtool: &str, dir: &Path, text: &str) {
    let file = dir.join("usage.om");
    std::fs::create_dir_all(dir.join("data")).expect("tsdb dir");
    std::fs::write(&file, text).expect("openmetrics file");
    let output = Command::new(promtool)
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&file)
        .arg(dir.join("data"))
        .output()
        .expect("promtool runs");
    assert!(
        output.status.success(),
        "promtool failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn near(actual: u64, expected: f64, tolerance: f64, what: &str) {
    let ratio = actual as f64 / expected;
    assert!(
        (1.0 - tolerance..=1.0 + tolerance).contains(&ratio),
        "{what}: {actual} is not within {:.0}% of {expected:.0}",
        tolerance * 100.0
    );
}

fn find<'r>(recs: &'r [Recommendation], kind: WorkloadKind, name: &str) -> &'r Recommendation {
    recs.iter()
        .find(|r| r.workload.kind == kind && r.workload.name == name)
        .unwrap_or_else(|| panic!("no recommendation for {kind:?} {name}: {recs:#?}"))
}

#[tokio::test]
async fn fourteen_days_backfilled_into_prometheus_give_the_expected_recommendations() {
    let Some(promtool) = peer_env_public("CLOUDOPTIM_PROMTOOL").or_else(|| {
        support::missing::<String>(
            "CLOUDOPTIM_PROMTOOL (promtool, from the Debian package prometheus)",
        )
    }) else {
        return;
    };
    let dir = std::env::temp_dir().join(unique("cloudoptim-rightsizing-prometheus"));
    // Whole minutes, so the series end exactly where the queries do.
    let end = chrono::Utc::now().timestamp() / 60 * 60;
    backfill(&promtool, &dir, &openmetrics(end));
    let Some(server) = PrometheusServer::start(&dir, &[], &[]) else {
        return;
    };
    let url = format!("http://127.0.0.1:{}", server.port);
    let prom = Prometheus::new(&PrometheusOptions::new(&url)).expect("client");
    let window = Duration::from_secs(WINDOW as u64);
    let read = eventually(
        Duration::from_secs(60),
        "Prometheus serving the backfilled blocks",
        || async { read(&prom, Some(NAMESPACE), window, end).await.ok() },
    )
    .await;
    assert_eq!(
        read.step,
        Duration::from_secs(180),
        "14 days at the bounded step"
    );
    let grouped = group(&read.observed, |ns, pod| read.owners.workload(ns, pod));
    assert!(
        grouped.unresolved.is_empty(),
        "every pod resolves: {:?}",
        grouped.unresolved
    );
    let usages: Vec<ContainerUsage> = grouped
        .containers
        .into_iter()
        .map(|((workload, container), seen)| ContainerUsage {
            workload,
            container,
            replicas: seen.pods.len() as u32,
            current: Requests {
                cpu_millis: Some(1000),
                memory_bytes: Some(2 * GIB),
            },
            cpu: seen.cpu,
            memory: seen.memory,
            oom_kills: seen.oom_kills,
        })
        .collect();
    let recs = recommend_all(&usages, &Settings::default(), None);
    assert_eq!(
        recs.len(),
        6,
        "web, db, agent, api, fresh, report: {recs:#?}"
    );

    let steady = find(&recs, WorkloadKind::Deployment, "web");
    assert_eq!(steady.replicas, 2, "both pods of the ReplicaSet");
    assert_eq!(steady.confidence, Confidence::High);
    let cpu = |r: &Recommendation| r.recommended.cpu_millis.expect("cpu");
    let memory = |r: &Recommendation| r.recommended.memory_bytes.expect("memory");
    // p95 of the steady load is within its noise: 0.2 cores x (1 + 2%) x 1.2.
    near(cpu(steady), STEADY_CPU * 1.2 * 1000.0, 0.03, "steady CPU");
    near(memory(steady), STEADY_MEMORY * 1.2, 0.03, "steady memory");

    // Diurnal: the p95 of mean + amplitude x sin is mean + amplitude x cos(0.05 pi).
    let db = find(&recs, WorkloadKind::StatefulSet, "db");
    let p95 = DIURNAL_CPU.0 + DIURNAL_CPU.1 * (0.05 * std::f64::consts::PI).cos();
    near(cpu(db), p95 * 1.2 * 1000.0, 0.04, "diurnal CPU");
    let p99 = DIURNAL_MEMORY.0 + DIURNAL_MEMORY.1 * (0.01 * std::f64::consts::PI).cos();
    near(memory(db), p99 * 1.2, 0.02, "diurnal memory");

    // Spiky: 1% CPU spikes stay above p95; 2% memory spikes are inside p99.
    let agent = find(&recs, WorkloadKind::DaemonSet, "agent");
    assert!(
        cpu(agent) < 300,
        "CPU spikes 1% of the time are above p95: {}m",
        cpu(agent)
    );
    near(memory(agent), SPIKY_MEMORY.1 * 1.2, 0.01, "spiky memory");

    // OOM-killed at its 512Mi limit: 512Mi x 1.2 rounded up to a MiB, above 400Mi x 1.2.
    let api = find(&recs, WorkloadKind::Deployment, "api");
    assert!(api.oom_bumped, "{api:?}");
    assert_eq!(
        memory(api),
        (OOM_LIMIT as f64 * 1.2 / MIB as f64).ceil() as u64 * MIB
    );

    // Too new: nothing recommended.
    let fresh = find(&recs, WorkloadKind::Deployment, "fresh");
    assert_eq!(fresh.confidence, Confidence::None);
    assert_eq!(fresh.recommended, Requests::default());

    // A CronJob's pod, through its Job: two days of data.
    let report = find(&recs, WorkloadKind::CronJob, "report");
    assert_eq!(report.confidence, Confidence::Low);

    let by_workload: BTreeMap<String, u64> = recs
        .iter()
        .filter_map(|r| Some((r.workload.to_string(), r.recommended.cpu_millis?)))
        .collect();
    eprintln!("recommended CPU: {by_workload:?}");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_unreachable_prometheus_is_reported_with_its_url() {
    let port = support::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let prom = Prometheus::new(&PrometheusOptions::new(&url)).expect("client");
    let error = read(&prom, None, Duration::from_secs(DAY as u64), 1_764_000_000)
        .await
        .expect_err("nothing listens there");
    assert!(matches!(error, PromError::Unreachable { .. }), "{error}");
    assert!(error.to_string().contains(&url), "{error}");
}
