//! Right-sizing against a real Prometheus: 14 days of samples from a seeded generator (steady, diurnal,
//! spiky, OOM-killed and too-new workloads, plus a CronJob's pod), written as OpenMetrics, backfilled
//! with `promtool tsdb create-blocks-from openmetrics` into the TSDB of a real Prometheus, then read
//! with CloudOptim's own client and queries (the bounded step, owner resolution through ReplicaSets and
//! Jobs) and sized by the engine. The expected values are computed here from the generator's
//! parameters, not copied from a run. Then the real operator runs `mode: Recommend` and `mode: Apply`
//! on the same data against real workloads (see the last test).

mod support;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cloudoptim::api::OptimizationPolicy;
use cloudoptim::engine::rightsizing::{
    Confidence, ContainerUsage, GIB, MIB, Recommendation, Requests, Settings, WorkloadKind,
    recommend_all,
};
use cloudoptim::names::{
    RECOMMENDED_REQUESTS as RECOMMENDED, RIGHTSIZED_AT, RIGHTSIZING_CONTROL as CONTROL,
    RIGHTSIZING_PREVIOUS as PREVIOUS,
};
use cloudoptim::prometheus::read::read;
use cloudoptim::prometheus::usage::group;
use cloudoptim::prometheus::{PromError, Prometheus, PrometheusOptions};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use support::nodes::FakeNode;
use support::operator::{Operator, eventually};
use support::prometheus::Prometheus as PrometheusServer;
use support::{ControlPlane, Moto, peer_env_public, unique};

const NAMESPACE: &str = "shop";
const STEP: i64 = 120;
const DAY: i64 = 86_400;
const WINDOW: i64 = 14 * DAY;
const WAIT: Duration = Duration::from_secs(90);

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

/// promtool, or skip (`None`) / fail with `CLOUDOPTIM_E2E_REQUIRED=1` when it is not installed.
fn promtool() -> Option<String> {
    peer_env_public("CLOUDOPTIM_PROMTOOL").or_else(|| {
        support::missing::<String>(
            "CLOUDOPTIM_PROMTOOL (promtool, from the Debian package prometheus)",
        )
    })
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
    let Some(promtool) = promtool() else {
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

/// A pod template of one container `name` with these requests and limits.
fn template(app: &str, container: &str, requests: Value, limits: Option<Value>) -> Value {
    let mut resources = json!({"requests": requests});
    if let Some(limits) = limits {
        resources["limits"] = limits;
    }
    json!({
        "metadata": {"labels": {"app": app}},
        "spec": {
            "containers": [{"name": container, "image": "registry.example/app:1", "resources": resources}],
            "terminationGracePeriodSeconds": 0
        }
    })
}

/// The generator's workloads as real objects in `shop`: `web` (2 replicas, limits set), `db`
/// (do-not-disrupt on its pod template), `agent` (a DaemonSet), `api` (OOM-killed at its 512Mi limit),
/// `fresh` (too new) and the CronJob `report`.
async fn create_workloads(client: &kube::Client) {
    let one = json!({"cpu": "1", "memory": "1Gi"});
    let deployments = [
        (
            "web",
            2,
            template(
                "web",
                "web",
                one.clone(),
                Some(json!({"cpu": "2", "memory": "2Gi"})),
            ),
        ),
        (
            "api",
            1,
            template(
                "api",
                "api",
                json!({"cpu": "100m", "memory": "512Mi"}),
                Some(json!({"memory": "512Mi"})),
            ),
        ),
        ("fresh", 1, template("fresh", "fresh", one.clone(), None)),
    ];
    for (name, replicas, template) in deployments {
        let object: Deployment = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}}, "template": template}
        }))
        .expect("deployment");
        Api::<Deployment>::namespaced(client.clone(), NAMESPACE)
            .create(&PostParams::default(), &object)
            .await
            .expect("deployment created");
    }
    let mut db = template("db", "postgres", json!({"cpu": "1", "memory": "2Gi"}), None);
    db["metadata"]["annotations"] = json!({"karpenter.sh/do-not-disrupt": "true"});
    let db: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "db"},
        "spec": {"replicas": 1, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}}, "template": db}
    }))
    .expect("statefulset");
    Api::<StatefulSet>::namespaced(client.clone(), NAMESPACE)
        .create(&PostParams::default(), &db)
        .await
        .expect("statefulset created");
    let agent: DaemonSet = serde_json::from_value(json!({
        "metadata": {"name": "agent"},
        "spec": {"selector": {"matchLabels": {"app": "agent"}},
                 "template": template("agent", "agent", json!({"cpu": "500m", "memory": "2Gi"}), None)}
    }))
    .expect("daemonset");
    Api::<DaemonSet>::namespaced(client.clone(), NAMESPACE)
        .create(&PostParams::default(), &agent)
        .await
        .expect("daemonset created");
    let mut job = template("report", "report", one, None);
    job["spec"]["restartPolicy"] = "Never".into();
    let report: CronJob = serde_json::from_value(json!({
        "metadata": {"name": "report"},
        "spec": {"schedule": "0 0 1 1 *", "jobTemplate": {"spec": {"template": job}}}
    }))
    .expect("cronjob");
    Api::<CronJob>::namespaced(client.clone(), NAMESPACE)
        .create(&PostParams::default(), &report)
        .await
        .expect("cronjob created");
}

/// (requests, limits) of the first container of a Deployment, as written.
async fn deployment_resources(
    client: &kube::Client,
    name: &str,
) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let d = Api::<Deployment>::namespaced(client.clone(), NAMESPACE)
        .get(name)
        .await
        .expect("deployment");
    let resources = d
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|s| s.containers.into_iter().next())
        .and_then(|c| c.resources)
        .unwrap_or_default();
    let text =
        |m: Option<BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>| {
            m.unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect::<BTreeMap<_, _>>()
        };
    (text(resources.requests), text(resources.limits))
}

fn annotation(meta: &ObjectMeta, key: &str) -> Option<String> {
    meta.annotations.as_ref()?.get(key).cloned()
}

fn quantity_millis(text: &str) -> u64 {
    cloudoptim::k8s::parse_cpu_millis(text).expect("cpu quantity")
}

fn quantity_bytes(text: &str) -> u64 {
    cloudoptim::k8s::parse_memory_bytes(text).expect("memory quantity")
}

/// The real operator, started with the arguments the chart renders for `rightsizing.apply.enabled`,
/// running as the chart's ServiceAccount under the chart's RBAC and workload guard (rendered with the
/// same values), against the backfilled Prometheus and real workloads on kwok nodes:
/// Recommend annotates and patches nothing; Apply in dry run changes nothing; Apply changes requests
/// (limits in proportion, the old values recorded), holding rollouts back under a `Rightsized`
/// budget of 1, never a do-not-disrupt workload or one without enough data, raises the OOM-killed one's
/// memory; the guard refuses the operator anything but resources; a revert restores the workload
/// and Apply leaves it alone afterwards; a policy whose Prometheus is unreachable is Ready=False
/// naming the URL.
#[tokio::test]
async fn the_operator_recommends_applies_within_its_rules_and_reverts() {
    let Some(promtool) = promtool() else {
        return;
    };
    let Some(cp) = ControlPlane::shared() else {
        return;
    };
    let Some(moto) = Moto::start() else { return };
    if support::chart::require_helm().is_none() {
        return;
    }
    let client = cp.client().await;
    let dir = std::env::temp_dir().join(unique("cloudoptim-rightsizing-operator"));
    let end = chrono::Utc::now().timestamp() / 60 * 60;
    backfill(&promtool, &dir, &openmetrics(end));
    let Some(server) = PrometheusServer::start(&dir, &[], &[]) else {
        return;
    };
    let url = format!("http://127.0.0.1:{}", server.port);

    let shop: Namespace =
        serde_json::from_value(json!({"metadata": {"name": NAMESPACE}})).expect("namespace");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &shop)
        .await
        .expect("namespace shop");
    let mut node = FakeNode::new("rightsizing-node", "us-east-1a", "i-0rightsizing0000001");
    node.cpu = "64".into();
    node.memory = "256Gi".into();
    node.create(&client).await;
    create_workloads(&client).await;

    // The chart's arguments for Apply, and its RBAC and guard rendered with the same values.
    let values = ["rightsizing.apply.enabled=true"];
    let release_ns = support::create_namespace(&client, "rightsizing-op").await;
    let rendered = support::chart::render(
        &support::rbac::release(&release_ns),
        &release_ns,
        &["clusterName=e2e", "region=us-east-1", values[0]],
    );
    let chart_args: Vec<String> = support::chart::operator_args(&rendered)
        .into_iter()
        .filter(|a| a.starts_with("--rightsizing") || a.starts_with("--prometheus"))
        .collect();
    assert_eq!(chart_args, ["--rightsizing-apply"], "the chart's flag");
    cp.service_account_kubeconfig_with(&release_ns, support::rbac::Mode::Operator, &values);
    let namespace_arg = format!("--namespace={release_ns}");
    let mut args = vec![namespace_arg.as_str()];
    args.extend(chart_args.iter().map(String::as_str));
    let operator = Operator::start(cp, &moto, "e2e", &args);

    let policies: Api<OptimizationPolicy> = Api::all(client.clone());
    let policy: OptimizationPolicy = serde_json::from_value(json!({
        "apiVersion": "cloudoptim.io/v1alpha1", "kind": "OptimizationPolicy",
        "metadata": {"name": "rightsize"},
        "spec": {
            "nodeTemplateSelector": {"matchLabels": {"pool": "rightsizing-none"}},
            "consolidation": {"mode": "Off", "interval": "3s"},
            "zombies": {"mode": "Off"},
            "disruption": {"budgets": [{"nodes": "1", "reasons": ["Rightsized"]}]},
            "rightsizing": {"mode": "Recommend", "prometheusUrl": url}
        }
    }))
    .expect("policy");
    policies
        .create(&PostParams::default(), &policy)
        .await
        .expect("policy created");

    // Recommend: every kind annotated, nothing patched.
    let deployments = Api::<Deployment>::namespaced(client.clone(), NAMESPACE);
    let daemonsets = Api::<DaemonSet>::namespaced(client.clone(), NAMESPACE);
    let cronjobs = Api::<CronJob>::namespaced(client.clone(), NAMESPACE);
    let recommended = eventually(WAIT, "recommendations annotated", || async {
        let web = deployments.get("web").await.ok()?;
        let agent = daemonsets.get("agent").await.ok()?;
        let report = cronjobs.get("report").await.ok()?;
        let web_value = annotation(&web.metadata, RECOMMENDED)?;
        annotation(&agent.metadata, RECOMMENDED)?;
        annotation(&report.metadata, RECOMMENDED)?;
        Some(web_value)
    })
    .await;
    let recommended: Value = serde_json::from_str(&recommended).expect("JSON annotation");
    let web_cpu = quantity_millis(recommended["web"]["cpu"].as_str().expect("cpu"));
    near(
        web_cpu,
        STEADY_CPU * 1.2 * 1000.0,
        0.03,
        "recommended web CPU",
    );
    let original = deployment_resources(&client, "web").await;
    assert_eq!(original.0["cpu"], "1", "Recommend patches nothing");
    let status = policies
        .get("rightsize")
        .await
        .expect("policy")
        .status
        .expect("status");
    assert!(
        status
            .recommendations
            .iter()
            .any(|r| r.workload == "Deployment/web"),
        "{:?}",
        status.recommendations
    );

    // Apply in dry run: says what it would do, changes nothing.
    policies
        .patch(
            "rightsize",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"dryRun": true, "rightsizing": {"mode": "Apply"}}})),
        )
        .await
        .expect("dry run Apply");
    eventually(WAIT, "dry run reports the changes", || async {
        let (_, _, message) = support::policy_ready(&policies, "rightsize").await?;
        message.contains("would apply").then_some(())
    })
    .await;
    assert_eq!(deployment_resources(&client, "web").await, original);
    assert_eq!(
        operator.metric(r#"cloudoptim_rightsizing_changes_total{action="apply",result="ok"}"#),
        0.0
    );

    // Apply: one rollout at a time (budget 1 for Rightsized), watched from the status.
    policies
        .patch(
            "rightsize",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"dryRun": false}})),
        )
        .await
        .expect("Apply");
    let held_by_budget = std::sync::atomic::AtomicBool::new(false);
    eventually(
        Duration::from_secs(150),
        "web, api, agent and report right-sized",
        || {
            let (deployments, daemonsets, cronjobs, policies, held) = (
                &deployments,
                &daemonsets,
                &cronjobs,
                &policies,
                &held_by_budget,
            );
            async move {
                if let Some((_, _, message)) = support::policy_ready(policies, "rightsize").await
                    && message.contains("Budget")
                {
                    held.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                let stamped = |meta: &ObjectMeta| annotation(meta, RIGHTSIZED_AT).is_some();
                (stamped(&deployments.get("web").await.ok()?.metadata)
                    && stamped(&deployments.get("api").await.ok()?.metadata)
                    && stamped(&daemonsets.get("agent").await.ok()?.metadata)
                    && stamped(&cronjobs.get("report").await.ok()?.metadata))
                .then_some(())
            }
        },
    )
    .await;
    assert!(
        held_by_budget.load(std::sync::atomic::Ordering::Relaxed),
        "a Rightsized budget of 1 held a rollout back at least once"
    );

    let (requests, limits) = deployment_resources(&client, "web").await;
    let cpu = quantity_millis(&requests["cpu"]);
    assert_eq!(cpu, web_cpu, "the recommendation was applied");
    assert_eq!(
        quantity_millis(&limits["cpu"]),
        2 * cpu,
        "the CPU limit moved in proportion"
    );
    let memory = quantity_bytes(&requests["memory"]);
    near(memory, STEADY_MEMORY * 1.2, 0.03, "applied web memory");
    let limit = quantity_bytes(&limits["memory"]);
    assert!(
        (2 * memory..2 * memory + MIB).contains(&limit),
        "memory limit {limit} is about twice {memory}"
    );
    let web = deployments.get("web").await.expect("web");
    let previous: Value =
        serde_json::from_str(&annotation(&web.metadata, PREVIOUS).expect("record")).expect("JSON");
    assert_eq!(
        previous,
        json!({"web": {"cpuRequest": "1", "memoryRequest": "1Gi", "cpuLimit": "2", "memoryLimit": "2Gi"}})
    );
    let (api_requests, api_limits) = deployment_resources(&client, "api").await;
    let bumped = (OOM_LIMIT as f64 * 1.2 / MIB as f64).ceil() as u64 * MIB;
    assert_eq!(quantity_bytes(&api_requests["memory"]), bumped, "OOM bump");
    assert_eq!(
        quantity_bytes(&api_limits["memory"]),
        bumped,
        "limit follows"
    );
    assert_eq!(
        deployment_resources(&client, "fresh").await.0["cpu"],
        "1",
        "too little data: untouched"
    );
    let db = Api::<StatefulSet>::namespaced(client.clone(), NAMESPACE)
        .get("db")
        .await
        .expect("db");
    assert!(
        annotation(&db.metadata, RIGHTSIZED_AT).is_none(),
        "do-not-disrupt: untouched"
    );
    assert!(
        support::events(&client, "web")
            .await
            .iter()
            .any(|(reason, _)| reason == "RightsizingApplied"),
        "an Event on the workload"
    );
    assert!(
        operator.metric(r#"cloudoptim_rightsizing_changes_total{action="apply",result="ok"}"#)
            >= 4.0
    );

    // The guard (Apply enabled) lets the operator's ServiceAccount change resources only.
    let as_operator =
        Api::<Deployment>::namespaced(cp.operator_client(&release_ns).await, NAMESPACE);
    let image =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "evil"}]}}}});
    match as_operator
        .patch("web", &PatchParams::default(), &Patch::Strategic(image))
        .await
    {
        Err(kube::Error::Api(e)) => assert!(
            e.message.contains("never a container's image"),
            "{}",
            e.message
        ),
        other => panic!("an image change as the operator was not refused: {other:?}"),
    }

    // Revert: the recorded values come back, and Apply leaves the workload alone from then on.
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {CONTROL: "revert"}}})),
        )
        .await
        .expect("revert asked");
    eventually(WAIT, "web reverted", || async {
        let web = deployments.get("web").await.ok()?;
        (annotation(&web.metadata, CONTROL).as_deref() == Some("reverted")).then_some(())
    })
    .await;
    assert_eq!(deployment_resources(&client, "web").await, original);
    let web = deployments.get("web").await.expect("web");
    assert!(annotation(&web.metadata, PREVIOUS).is_none());
    assert!(annotation(&web.metadata, RIGHTSIZED_AT).is_none());
    let opted_out = r#"cloudoptim_rightsizing_held{policy="rightsize",reason="OptedOut"}"#;
    eventually(WAIT, "a pass that holds web back", || async {
        (operator.metric(opted_out) >= 1.0).then_some(())
    })
    .await;
    assert_eq!(
        deployment_resources(&client, "web").await,
        original,
        "not applied again"
    );

    // An unreachable Prometheus: Ready=False naming the URL.
    let down = format!("http://127.0.0.1:{}", support::free_port());
    let unreachable: OptimizationPolicy = serde_json::from_value(json!({
        "apiVersion": "cloudoptim.io/v1alpha1", "kind": "OptimizationPolicy",
        "metadata": {"name": "rightsize-down"},
        "spec": {
            "nodeTemplateSelector": {"matchLabels": {"pool": "rightsizing-down"}},
            "consolidation": {"mode": "Off", "interval": "3s"},
            "zombies": {"mode": "Off"},
            "rightsizing": {"mode": "Apply", "prometheusUrl": down}
        }
    }))
    .expect("policy");
    policies
        .create(&PostParams::default(), &unreachable)
        .await
        .expect("policy created");
    // Right-sizing is cluster-wide: while the older policy has it on, the new one is refused as a
    // whole, naming the owner and the fix.
    let (_, reason, message) = eventually(WAIT, "the second owner refused", || async {
        support::policy_ready(&policies, "rightsize-down")
            .await
            .filter(|(s, _, _)| s == "False")
    })
    .await;
    assert_eq!(reason, "ConflictingPolicies", "{message}");
    assert!(
        message.contains("OptimizationPolicy rightsize (older)")
            && message.contains("rightsizing.mode: Off"),
        "{message}"
    );
    // The older one turns right-sizing off; the new one (woken by a change: a conflict is otherwise
    // looked at again in 5 minutes) now owns it, and its Prometheus is unreachable.
    policies
        .patch(
            "rightsize",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"rightsizing": {"mode": "Off"}}})),
        )
        .await
        .expect("right-sizing off on the older policy");
    policies
        .patch(
            "rightsize-down",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"e2e/wake": "1"}}})),
        )
        .await
        .expect("woken");
    let (status, reason, message) = eventually(WAIT, "Ready=False unreachable", || async {
        support::policy_ready(&policies, "rightsize-down")
            .await
            .filter(|(s, r, _)| s == "False" && r != "ConflictingPolicies")
    })
    .await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "PrometheusUnavailable"),
        "{message}"
    );
    assert!(message.contains(&down), "{message}");
    for name in ["rightsize", "rightsize-down"] {
        let _ = policies.delete(name, &Default::default()).await;
    }
    drop(operator);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Mutual TLS to a real Prometheus (`--web.config.file` with `RequireAndVerifyClientCert`): with the
/// operator's options (CA file, client certificate and key files) the query is answered; without the
/// client certificate the TLS handshake is refused and the error names the URL; a token file that
/// cannot be read is named, and a readable one is trimmed.
#[tokio::test]
async fn prometheus_behind_mutual_tls_is_read_with_the_operators_certificate_files() {
    use cloudoptim::prometheus::PrometheusAccess;
    let dir = std::env::temp_dir().join(unique("cloudoptim-prometheus-mtls"));
    std::fs::create_dir_all(&dir).expect("dir");
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "cloudoptim e2e Prometheus CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA cert");
    let issue = |names: Vec<String>, file: &str| {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(names)
            .expect("params")
            .signed_by(&key, &ca)
            .expect("cert");
        std::fs::write(dir.join(format!("{file}.crt")), cert.pem()).expect("cert file");
        std::fs::write(dir.join(format!("{file}.key")), key.serialize_pem()).expect("key file");
    };
    issue(vec!["127.0.0.1".into(), "localhost".into()], "server");
    issue(vec!["cloudoptim".into()], "client");
    std::fs::write(dir.join("ca.crt"), ca.pem()).expect("ca file");
    let web = json!({"tls_server_config": {
        "cert_file": dir.join("server.crt"), "key_file": dir.join("server.key"),
        "client_auth_type": "RequireAndVerifyClientCert", "client_ca_file": dir.join("ca.crt")
    }});
    std::fs::write(dir.join("web.yml"), web.to_string()).expect("web config");
    let flag = format!("--web.config.file={}", dir.join("web.yml").display());
    let Some(server) = PrometheusServer::start_with(&dir, &[], &[], &[flag]) else {
        return;
    };
    let url = format!("https://127.0.0.1:{}", server.port);
    let access = PrometheusAccess {
        bearer_token_file: None,
        ca_file: Some(dir.join("ca.crt")),
        identity: Some((dir.join("client.crt"), dir.join("client.key"))),
    };
    let with_cert = access.options(&url, Default::default()).expect("options");
    let prom = Prometheus::new(&with_cert).expect("client");
    let answer = eventually(
        Duration::from_secs(60),
        "Prometheus answering over mTLS",
        || async { prom.query("vector(42)", None).await.ok() },
    )
    .await;
    assert_eq!(answer[0].samples[0].value, 42.0);

    let without = PrometheusAccess {
        identity: None,
        ..access.clone()
    };
    let prom = Prometheus::new(&without.options(&url, Default::default()).expect("options"))
        .expect("client");
    let refused = prom
        .query("vector(42)", None)
        .await
        .expect_err("no client certificate");
    assert!(
        matches!(refused, PromError::Unreachable { .. }) && refused.to_string().contains(&url),
        "{refused}"
    );

    let missing = PrometheusAccess {
        bearer_token_file: Some(dir.join("no-such-token")),
        ..access.clone()
    };
    let error = missing
        .options(&url, Default::default())
        .expect_err("no token file");
    assert!(error.to_string().contains("no-such-token"), "{error}");
    std::fs::write(dir.join("token"), "s3cret-token\n").expect("token file");
    let with_token = PrometheusAccess {
        bearer_token_file: Some(dir.join("token")),
        ..access
    }
    .options(&url, Default::default())
    .expect("options");
    assert_eq!(with_token.bearer_token.as_deref(), Some("s3cret-token"));
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
