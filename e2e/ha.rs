//! Production HA, tested the way users deploy: the chart is rendered by helm into a namespace other
//! than `cloudoptim`, its RBAC is installed, and two replicas are started exactly as the kubelet would
//! start the container (the Deployment's args and env, downward-API values filled in, the service
//! account's token as the only credential). Then:
//! - both replicas become Ready and exactly one leads, with its Lease in the release namespace, and it
//!   works under the chart's RBAC (NodeTemplate ranked, the group written);
//! - a rolling restart (a third replica started, the leader sent SIGTERM) hands over through the
//!   released Lease in well under the lease duration;
//! - the leader frozen with SIGSTOP is replaced by the standby, and after SIGCONT it writes nothing:
//!   checked by outside observers, the API server's audit log and moto's request log, not by the
//!   operator's own account;
//! - a leader cut off from the API server (a proxy turned into a black hole: requests hang) steps down
//!   by its own clock and exits before the standby can take the lease.
//!
//! One scenario per test binary: operators reconcile every cluster-scoped object they see.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cloudoptim::api::{NodeTemplate, OptimizationPolicy};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use serde_json::json;
use support::operator::{Operator, eventually};
use support::proxy::Proxy;
use support::{ControlPlane, Moto, aws, free_port, repo_root, unique};

/// The operator's lease duration (LeaseConfig::new).
const LEASE_DURATION: Duration = Duration::from_secs(15);
const WAIT: Duration = Duration::from_secs(90);

/// One release of the chart: its namespace, name, and the objects rendered for a metrics port.
struct Release {
    name: String,
    namespace: String,
    values: Vec<String>,
}

impl Release {
    fn render(&self, metrics_port: u16) -> Vec<serde_json::Value> {
        let mut values = self.values.clone();
        values.push(format!("metrics.port={metrics_port}"));
        let values: Vec<&str> = values.iter().map(String::as_str).collect();
        support::chart::render(&self.name, &self.namespace, &values)
    }
}

/// Server-side apply every rendered object but the Deployment (its pods are what the test starts).
async fn install_all_but_the_deployment(
    client: &kube::Client,
    namespace: &str,
    objects: &[serde_json::Value],
) {
    let objects = objects.iter().filter(|o| o["kind"] != "Deployment");
    support::chart::apply(client, namespace, objects, "helm", false).await;
}

/// A kubeconfig whose only credential is a token of the chart's service account.
async fn service_account_kubeconfig(
    cp: &ControlPlane,
    client: &kube::Client,
    release: &Release,
) -> PathBuf {
    let request: TokenRequest = serde_json::from_value(json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"audiences": [], "expirationSeconds": 3600}
    }))
    .expect("token request");
    let token = Api::<ServiceAccount>::namespaced(client.clone(), &release.namespace)
        .create_token_request(&release.name, &PostParams::default(), &request)
        .await
        .expect("a token for the chart's service account")
        .status
        .expect("token status")
        .token;
    let admin_token = std::fs::read_to_string(cp.dir.join("token")).expect("admin token");
    let kubeconfig = std::fs::read_to_string(cp.kubeconfig()).expect("kubeconfig");
    assert!(kubeconfig.contains(admin_token.trim()));
    let path = cp.dir.join(format!("{}.kubeconfig", release.name));
    std::fs::write(&path, kubeconfig.replace(admin_token.trim(), &token)).expect("written");
    path
}

/// Start one replica from the rendered Deployment as the kubelet would.
fn start_replica(
    cp: &ControlPlane,
    release: &Release,
    pod: &str,
    kubeconfig: &std::path::Path,
) -> Operator {
    let metrics_port = free_port();
    let rendered = release.render(metrics_port);
    let container = support::chart::operator_container(&rendered);
    let args = support::chart::operator_args(&rendered);
    assert!(
        args.contains(&format!("--metrics-addr=0.0.0.0:{metrics_port}")),
        "{args:?}"
    );
    let mut env: Vec<(String, String)> = container["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| {
            let name = e["name"].as_str().expect("env name").to_string();
            let value = match e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                Some("metadata.namespace") => release.namespace.clone(),
                Some("metadata.name") => pod.to_string(),
                Some(other) => panic!("the test cannot fill in fieldRef {other}"),
                None => e["value"].as_str().expect("env value").to_string(),
            };
            (name, value)
        })
        .collect();
    // What the cluster provides and a laptop does not: the in-cluster API access (here a kubeconfig
    // holding the service account's token) and IRSA credentials (here moto's).
    env.push(("KUBECONFIG".into(), kubeconfig.display().to_string()));
    env.push(("AWS_ACCESS_KEY_ID".into(), aws::ACCESS_KEY.into()));
    env.push(("AWS_SECRET_ACCESS_KEY".into(), aws::SECRET_KEY.into()));
    Operator::launch(cp, &args, &env, metrics_port)
}

async fn lease_holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt("cloudoptim-leader")
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty())
}

fn leads(operator: &Operator) -> bool {
    operator.metric("cloudoptim_leader") == 1.0
}

/// Writes in the API server's audit log made by `identity` (its User-Agent) at or after `since`.
fn audited_writes(
    cp: &ControlPlane,
    identity: &str,
    since: Option<chrono::DateTime<chrono::Utc>>,
) -> Vec<String> {
    let log = std::fs::read_to_string(cp.dir.join("logs/audit.log")).unwrap_or_default();
    let agent = format!("({identity})");
    log.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|e| e["userAgent"].as_str().is_some_and(|a| a.contains(&agent)))
        .filter(|e| {
            let at = e["requestReceivedTimestamp"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
            match (since, at) {
                (None, _) => true,
                (Some(since), Some(at)) => at >= since,
                (Some(_), None) => true,
            }
        })
        .map(|e| {
            format!(
                "{} {} {}",
                e["requestReceivedTimestamp"], e["verb"], e["requestURI"]
            )
        })
        .collect()
}

#[tokio::test]
async fn chart_faithful_replicas_lead_once_hand_over_on_restart_and_a_frozen_leader_writes_nothing()
{
    let Some(cp) = ControlPlane::shared() else {
        return;
    };
    let Some(moto) = Moto::start() else { return };
    if support::chart::require_helm().is_none() {
        return;
    }
    let client = cp.client().await;
    let sdk = aws::sdk_config(&moto.endpoint).await;

    // AWS side: one tagged group; Kubernetes side: a NodeTemplate bound to it and a policy that
    // re-plans every 2 s (so the leader writes its status all the time).
    let pool = unique("pool");
    let template_id = aws::launch_template(&sdk, &unique("lt")).await;
    let group = format!("{pool}-a");
    let tags = [
        ("cloudoptim.io/pool", pool.as_str()),
        ("cloudoptim.io/cluster", "e2e"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    aws::create_group(&sdk, &group, &template_id, 1, &tags).await;
    let policy: OptimizationPolicy = serde_json::from_value(json!({
        "apiVersion": "cloudoptim.io/v1alpha1", "kind": "OptimizationPolicy",
        "metadata": {"name": unique("ha")},
        "spec": {"nodeTemplateSelector": {"matchLabels": {"pool": pool}},
                 "consolidation": {"interval": "2s"}}
    }))
    .expect("policy");
    Api::<OptimizationPolicy>::all(client.clone())
        .create(&PostParams::default(), &policy)
        .await
        .expect("policy created");
    let template_name = unique("ha");
    let template: NodeTemplate = serde_json::from_value(json!({
        "apiVersion": "cloudoptim.io/v1alpha1", "kind": "NodeTemplate",
        "metadata": {"name": template_name, "labels": {"pool": pool}},
        "spec": {"autoScalingGroups": {"tagSelector": {"cloudoptim.io/pool": pool}},
                 "requirements": {"families": ["c6i", "m7i", "m6a"], "minVcpu": 2, "maxVcpu": 8}}
    }))
    .expect("template");
    let templates: Api<NodeTemplate> = Api::all(client.clone());
    templates
        .create(&PostParams::default(), &template)
        .await
        .expect("template created");

    // The chart, in a namespace that is not `cloudoptim`, with its RBAC installed for real.
    let namespace = support::create_namespace(&client, "team-ops").await;
    let advisor = repo_root().join("data/catalog/spot-advisor.json");
    let release = Release {
        name: unique("co"),
        namespace: namespace.clone(),
        values: vec![
            "clusterName=e2e".into(),
            format!("region={}", aws::REGION),
            format!("aws.endpointUrl={}", moto.endpoint),
            format!("aws.spotAdvisorUrl=file://{}", advisor.display()),
            "replicas=2".into(),
        ],
    };
    install_all_but_the_deployment(&client, &namespace, &release.render(8080)).await;
    let kubeconfig = service_account_kubeconfig(cp, &client, &release).await;

    // Two replicas: both Ready, exactly one leads, the Lease is in the release namespace.
    let pods = [
        format!("{}-7c9d-a", release.name),
        format!("{}-7c9d-b", release.name),
        format!("{}-5f2e-c", release.name),
    ];
    let mut replicas = vec![
        start_replica(cp, &release, &pods[0], &kubeconfig),
        start_replica(cp, &release, &pods[1], &kubeconfig),
    ];
    for replica in &mut replicas {
        replica.wait_until_ready(WAIT);
    }
    let leases: Api<Lease> = Api::namespaced(client.clone(), &namespace);
    let holder = eventually(WAIT, "a replica to lead", || async {
        lease_holder(&leases).await
    })
    .await;
    let leader = pods
        .iter()
        .position(|p| *p == holder)
        .expect("holder is one of the pods");
    eventually(WAIT, "exactly one leader gauge", || async {
        let gauges: Vec<bool> = replicas.iter().map(leads).collect();
        (gauges.iter().filter(|l| **l).count() == 1 && gauges[leader]).then_some(())
    })
    .await;
    assert!(
        replicas.iter().all(Operator::is_ready),
        "every replica is Ready, not only the leader"
    );

    // The leader works under the chart's RBAC: the template is ranked and the group written.
    eventually(WAIT, "the NodeTemplate to be Ready", || async {
        let t = templates.get(&template_name).await.ok()?;
        let ready = t
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Ready")?;
        (ready.status == "True").then_some(())
    })
    .await;
    let written = aws::describe_group(&sdk, &group).await.expect("group");
    assert!(
        !aws::overrides(&written).is_empty(),
        "the leader wrote the ranked overrides"
    );

    // Rolling restart: a new replica starts (Ready as a standby), the old leader gets SIGTERM and
    // releases the Lease; the handover is far shorter than the lease duration.
    replicas.push(start_replica(cp, &release, &pods[2], &kubeconfig));
    replicas[2].wait_until_ready(WAIT);
    assert!(!leads(&replicas[2]), "the new replica waits as a standby");
    let stopped_at = Instant::now();
    replicas[leader].signal(libc::SIGTERM);
    let old = pods[leader].clone();
    let new_holder = eventually(WAIT, "another replica to take the lease", || async {
        lease_holder(&leases).await.filter(|h| *h != old)
    })
    .await;
    let gap = stopped_at.elapsed();
    eprintln!("rolling restart: {old} -> {new_holder} in {gap:?}");
    assert!(
        gap < LEASE_DURATION,
        "handover took {gap:?}, not below the lease duration"
    );
    let status = replicas[leader]
        .wait_exit(Duration::from_secs(30))
        .expect("the old leader exits after SIGTERM");
    assert!(status.success(), "graceful shutdown exits 0: {status}");

    // Freeze the new leader: the standby takes over after the lease expires; the frozen one, resumed,
    // writes nothing anywhere and exits.
    let frozen = pods.iter().position(|p| *p == new_holder).expect("a pod");
    let standby = [0, 1, 2]
        .into_iter()
        .find(|i| *i != leader && *i != frozen)
        .expect("a standby");
    eventually(WAIT, "the new leader to write", || async {
        (!audited_writes(cp, &pods[frozen], None).is_empty()).then_some(())
    })
    .await;
    replicas[frozen].signal(libc::SIGSTOP);
    let frozen_at = Instant::now();
    let taken = eventually(
        WAIT,
        "the standby to take over from the frozen leader",
        || async { lease_holder(&leases).await.filter(|h| *h == pods[standby]) },
    )
    .await;
    eprintln!(
        "frozen leader replaced by {taken} after {:?}",
        frozen_at.elapsed()
    );
    moto.start_recording();
    let resumed_at = chrono::Utc::now();
    replicas[frozen].signal(libc::SIGCONT);
    let status = replicas[frozen]
        .wait_exit(Duration::from_secs(30))
        .expect("the resumed replica sees the loss and exits");
    assert!(
        !status.success(),
        "losing the lease is an error exit: {status}"
    );
    let writes = audited_writes(cp, &pods[frozen], Some(resumed_at));
    assert!(
        writes.is_empty(),
        "the resumed old leader wrote to the API server:\n{}\n{}",
        writes.join("\n"),
        replicas[frozen].log_tail()
    );
    let aws_writes: Vec<String> = moto
        .recorded_requests()
        .into_iter()
        .filter(|(agent, _)| agent.contains(&format!("app/{}", pods[frozen])))
        .map(|(_, op)| op)
        .filter(|op| !cloudoptim::fence::is_read_only_operation(op))
        .collect();
    assert!(
        aws_writes.is_empty(),
        "the resumed old leader wrote to AWS: {aws_writes:?}"
    );
    let refused = replicas[frozen].log().matches("write refused").count();
    eprintln!("writes the resumed replica's fence refused: {refused}");
    eventually(WAIT, "the standby to lead and keep writing", || async {
        (leads(&replicas[standby])
            && !audited_writes(cp, &pods[standby], Some(resumed_at)).is_empty())
        .then_some(())
    })
    .await;

    // A leader cut off from the API server (its requests hang: neither answer nor error) steps down by
    // its own clock before the standby can take the lease. P reaches the API server through a proxy
    // that the test turns into a black hole; Q connects directly.
    let text = std::fs::read_to_string(&kubeconfig).expect("kubeconfig");
    let api_port: u16 = text
        .split("https://127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|p| p.parse().ok())
        .expect("API server port in the kubeconfig");
    let proxy = Proxy::start(api_port);
    let proxied = cp.dir.join(format!("{}-proxied.kubeconfig", release.name));
    std::fs::write(
        &proxied,
        text.replace(
            &format!("https://127.0.0.1:{api_port}"),
            &format!("https://127.0.0.1:{}", proxy.port),
        ),
    )
    .expect("written");
    let (p_name, q_name) = (
        format!("{}-9a1b-p", release.name),
        format!("{}-9a1b-q", release.name),
    );
    let mut p = start_replica(cp, &release, &p_name, &proxied);
    p.wait_until_ready(WAIT);
    replicas[standby].signal(libc::SIGTERM);
    eventually(WAIT, "P to lead", || async {
        (lease_holder(&leases).await.as_deref() == Some(p_name.as_str()) && leads(&p)).then_some(())
    })
    .await;
    let mut q = start_replica(cp, &release, &q_name, &kubeconfig);
    q.wait_until_ready(WAIT);
    assert!(!leads(&q), "Q waits as a standby");
    let cut = Instant::now();
    proxy.blackhole();
    let mut p_exited = None;
    let mut q_took = None;
    while (p_exited.is_none() || q_took.is_none()) && cut.elapsed() < Duration::from_secs(60) {
        if p_exited.is_none()
            && let Some(status) = p.wait_exit(Duration::ZERO)
        {
            assert!(
                !status.success(),
                "a leader that lost the lease exits non-zero: {status}"
            );
            p_exited = Some(cut.elapsed());
        }
        if q_took.is_none() && lease_holder(&leases).await.as_deref() == Some(q_name.as_str()) {
            q_took = Some(cut.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("API cut off: P exited after {p_exited:?}, Q took the lease after {q_took:?}");
    let (Some(p_exited), Some(q_took)) = (p_exited, q_took) else {
        panic!(
            "P exited {p_exited:?}, Q took over {q_took:?}; P's log:\n{}",
            p.log_tail()
        );
    };
    assert!(
        p_exited < q_took,
        "the cut-off leader must stop before the standby can act: exited {p_exited:?}, taken {q_took:?}"
    );
    assert!(
        p.log().contains("stepping down") || p.log().contains("timed out"),
        "P stepped down by its renew deadline:\n{}",
        p.log_tail()
    );
}
