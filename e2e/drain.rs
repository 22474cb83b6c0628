//! The drain (`cloudoptim::drain`) against the real peers: API server, controller-manager (Deployment,
//! DaemonSet and disruption controllers), scheduler and kwok nodes. Every test has its own namespace and
//! its own kwok nodes carrying a label only they have; every pod selects that label, so tests sharing
//! the cluster never land on each other's nodes.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use cloudoptim::drain::{
    DISRUPTED_TAINT, DrainOptions, DrainOutcome, Drainer, INTERRUPTED_TAINT, Marker, Skip,
    eviction_client, marked,
};
use cloudoptim::metrics::Metrics;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::events::{Recorder, Reporter};
use kube::{Client, Config};
use serde_json::json;
use support::nodes::FakeNode;
use support::operator::eventually;
use support::{ControlPlane, unique};

const WAIT: Duration = Duration::from_secs(60);
/// The label that pins a test's pods to that test's nodes.
const PIN: &str = "cloudoptim.io/e2e-drain";

/// One test's namespace, nodes and drainer.
struct Scenario {
    client: Client,
    namespace: String,
    id: String,
    drainer: Drainer,
    metrics: Metrics,
}

impl Scenario {
    async fn new(cp: &ControlPlane) -> Scenario {
        let client = cp.client().await;
        let namespace = support::create_namespace(&client, "drain").await;
        let kubeconfig = Kubeconfig::read_from(cp.kubeconfig()).expect("kubeconfig readable");
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("kubeconfig valid");
        let metrics = Metrics::new().expect("metrics");
        let reporter = Reporter {
            controller: "cloudoptim".into(),
            instance: None,
        };
        let eviction = eviction_client(config, cloudoptim::fence::Fence::open())
            .expect("eviction client builds");
        let drainer = Drainer::new(eviction.clone(), metrics.clone())
            .with_recorder(Recorder::new(eviction, reporter));
        Scenario {
            client,
            namespace,
            id: unique("d"),
            drainer,
            metrics,
        }
    }

    /// A fresh kwok node only this scenario's pods select; returns its name.
    async fn node(&self, n: usize) -> String {
        let name = format!("{}-node-{n}", self.id);
        let instance = format!("i-{:017x}", 0xd000 + n);
        let mut node = FakeNode::new(&name, "us-east-1a", &instance);
        node.labels.insert(PIN.into(), self.id.clone());
        node.create(&self.client).await;
        name
    }

    fn pod_template(&self, app: &str, annotations: &BTreeMap<String, String>) -> serde_json::Value {
        json!({
            "metadata": {"labels": {"app": app}, "annotations": annotations},
            "spec": {
                "nodeSelector": {PIN: self.id},
                "containers": [{"name": "c", "image": "fake",
                                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]
            }
        })
    }

    async fn deployment(&self, app: &str, replicas: i32) {
        let deployment: Deployment = serde_json::from_value(json!({
            "metadata": {"name": app, "namespace": self.namespace},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": app}},
                "template": self.pod_template(app, &BTreeMap::new()),
            }
        }))
        .expect("deployment");
        Api::<Deployment>::namespaced(self.client.clone(), &self.namespace)
            .create(&PostParams::default(), &deployment)
            .await
            .expect("deployment created");
    }

    async fn daemon_set(&self, app: &str) {
        let daemon_set: DaemonSet = serde_json::from_value(json!({
            "metadata": {"name": app, "namespace": self.namespace},
            "spec": {
                "selector": {"matchLabels": {"app": app}},
                "template": self.pod_template(app, &BTreeMap::new()),
            }
        }))
        .expect("daemonset");
        Api::<DaemonSet>::namespaced(self.client.clone(), &self.namespace)
            .create(&PostParams::default(), &daemon_set)
            .await
            .expect("daemonset created");
    }

    /// A bare pod annotated `cloudoptim.io/do-not-disrupt: "true"`.
    async fn do_not_disrupt_pod(&self, name: &str) {
        let annotations = BTreeMap::from([(
            "cloudoptim.io/do-not-disrupt".to_string(),
            "true".to_string(),
        )]);
        let mut pod = self.pod_template(name, &annotations);
        pod["metadata"]["name"] = json!(name);
        let pod: Pod = serde_json::from_value(pod).expect("pod");
        self.pods()
            .create(&PostParams::default(), &pod)
            .await
            .expect("pod created");
    }

    async fn pdb(&self, app: &str, max_unavailable: i32) {
        let pdb: PodDisruptionBudget = serde_json::from_value(json!({
            "metadata": {"name": app, "namespace": self.namespace},
            "spec": {"maxUnavailable": max_unavailable, "selector": {"matchLabels": {"app": app}}}
        }))
        .expect("pdb");
        let api: Api<PodDisruptionBudget> = Api::namespaced(self.client.clone(), &self.namespace);
        api.create(&PostParams::default(), &pdb)
            .await
            .expect("pdb created");
        eventually(WAIT, "the disruption controller to process the PDB", || {
            let api = api.clone();
            async move {
                let pdb = api.get(app).await.ok()?;
                let status = pdb.status?;
                (status.observed_generation == pdb.metadata.generation
                    && status.disruptions_allowed == 0)
                    .then_some(())
            }
        })
        .await;
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The running, not terminating pods of `app`, as (name, uid, node).
    async fn running(&self, app: &str) -> Vec<(String, String, String)> {
        let params = ListParams::default().labels(&format!("app={app}"));
        let pods = self.pods().list(&params).await.expect("list pods").items;
        pods.into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .map(|p| {
                (
                    p.metadata.name.unwrap_or_default(),
                    p.metadata.uid.unwrap_or_default(),
                    p.spec.and_then(|s| s.node_name).unwrap_or_default(),
                )
            })
            .collect()
    }

    /// Wait until exactly `n` pods of `app` run, all on `node`; returns them.
    async fn running_on(&self, app: &str, n: usize, node: &str) -> Vec<(String, String, String)> {
        let what = format!("{n} pods of {app} running on {node}");
        eventually(WAIT, &what, || async {
            let pods = self.running(app).await;
            (pods.len() == n && pods.iter().all(|(_, _, on)| on == node)).then_some(pods)
        })
        .await
    }

    /// Wait until the node is Ready and carries no `node.kubernetes.io/*` taint.
    async fn ready(&self, name: &str) {
        let what = format!("node {name} Ready without not-ready taints");
        eventually(WAIT, &what, || async {
            let node = self.get_node(name).await;
            let ready = node
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            let taints = node.spec.and_then(|s| s.taints).unwrap_or_default();
            let tainted = taints
                .iter()
                .any(|t| t.key.starts_with("node.kubernetes.io/"));
            (ready && !tainted).then_some(())
        })
        .await;
    }

    async fn get_node(&self, name: &str) -> Node {
        Api::<Node>::all(self.client.clone())
            .get(name)
            .await
            .expect("node exists")
    }

    fn metric(&self, series: &str) -> f64 {
        self.metrics
            .render()
            .lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0)
    }
}

fn unschedulable(node: &Node) -> bool {
    node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true)
}

#[tokio::test]
async fn drain_evicts_deployment_pods_which_the_scheduler_replaces_elsewhere_and_keeps_daemon_pods()
{
    let Some(cp) = ControlPlane::shared() else {
        return;
    };
    let s = Scenario::new(cp).await;
    let first = s.node(0).await;
    s.deployment("web", 2).await;
    s.daemon_set("agent").await;
    let web = s.running_on("web", 2, &first).await;
    let agent = s.running_on("agent", 1, &first).await;
    let second = s.node(1).await;

    let options = DrainOptions::new(WAIT, true);
    let report = s
        .drainer
        .drain(
            &first,
            &Marker::consolidation("e2e: empty the node"),
            &options,
        )
        .await
        .expect("drain runs");

    assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
    let mut evicted: Vec<&str> = report.evicted.iter().map(|p| p.name.as_str()).collect();
    let mut expected: Vec<&str> = web.iter().map(|(name, _, _)| name.as_str()).collect();
    evicted.sort();
    expected.sort();
    assert_eq!(evicted, expected, "both web pods evicted, nothing else");
    assert!(
        report
            .skipped
            .iter()
            .any(|(p, why)| p.name == agent[0].0 && *why == Skip::DaemonSet),
        "{report}"
    );
    let node = s.get_node(&first).await;
    assert!(unschedulable(&node), "a drained node stays cordoned");
    let mark = marked(&node, DISRUPTED_TAINT).expect("tainted cloudoptim.io/disrupted");
    assert_eq!(mark.by, "consolidation");
    assert_eq!(mark.reason.as_deref(), Some("e2e: empty the node"));

    s.running_on("web", 2, &second).await;
    let agents = s.running("agent").await;
    assert!(
        agents.contains(&agent[0]),
        "the DaemonSet pod still runs on the drained node: {agents:?}"
    );
    assert_eq!(s.metric("cloudoptim_drains_total{result=\"ok\"}"), 1.0);
    assert_eq!(
        s.metric("cloudoptim_evictions_total{result=\"evicted\"}"),
        2.0
    );
    assert_eq!(s.metric("cloudoptim_drain_duration_seconds_count"), 1.0);

    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(s.client.clone(), "default");
    eventually(WAIT, "Cordoned and Drained events on the node", || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        let reasons: Vec<String> = list
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(&first))
            .filter_map(|e| e.reason)
            .collect();
        (reasons.contains(&"Cordoned".to_string()) && reasons.contains(&"Drained".to_string()))
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn pdb_without_allowance_fails_the_drain_at_the_deadline_and_the_node_is_released() {
    let Some(cp) = ControlPlane::shared() else {
        return;
    };
    let s = Scenario::new(cp).await;
    let first = s.node(0).await;
    s.deployment("web", 1).await;
    let web = s.running_on("web", 1, &first).await;
    s.node(1).await;
    s.pdb("web", 0).await;

    let options = DrainOptions::new(Duration::from_secs(5), false);
    let report = s
        .drainer
        .drain(&first, &Marker::consolidation("e2e: blocked"), &options)
        .await
        .expect("drain runs");

    let DrainOutcome::Failed { remaining } = &report.outcome else {
        panic!("expected a failed drain: {report}")
    };
    assert_eq!(remaining.len(), 1, "{report}");
    assert_eq!(remaining[0].pod.name, web[0].0);
    assert!(
        remaining[0].why.contains("disruption budget"),
        "the reason names the PDB refusal: {report}"
    );
    assert!(report.released, "{report}");
    assert!(report.elapsed < Duration::from_secs(15), "{report}");
    let node = s.get_node(&first).await;
    assert!(!unschedulable(&node), "uncordoned");
    assert!(marked(&node, DISRUPTED_TAINT).is_none(), "taint removed");
    assert_eq!(s.running("web").await, web, "the pod was not evicted");
    assert!(s.metric("cloudoptim_evictions_total{result=\"pdb_blocked\"}") >= 2.0);
    assert_eq!(s.metric("cloudoptim_drains_total{result=\"failed\"}"), 1.0);
}

#[tokio::test]
async fn do_not_disrupt_pod_blocks_the_drain_and_nothing_is_evicted() {
    let Some(cp) = ControlPlane::shared() else {
        return;
    };
    let s = Scenario::new(cp).await;
    let first = s.node(0).await;
    s.deployment("web", 1).await;
    s.do_not_disrupt_pod("pinned").await;
    let web = s.running_on("web", 1, &first).await;
    let pinned = s.running_on("pinned", 1, &first).await;

    let options = DrainOptions::new(WAIT, false);
    let report = s
        .drainer
        .drain(&first, &Marker::consolidation("e2e: pinned"), &options)
        .await
        .expect("drain runs");

    let DrainOutcome::Blocked { pods } = &report.outcome else {
        panic!("expected a blocked drain: {report}")
    };
    let names: Vec<String> = pods.iter().map(|p| p.to_string()).collect();
    assert_eq!(names, [format!("{}/pinned", s.namespace)]);
    assert!(report.evicted.is_empty(), "{report}");
    assert!(report.to_string().contains("pinned"), "{report}");
    assert_eq!(s.running("web").await, web);
    assert_eq!(s.running("pinned").await, pinned);
    let node = s.get_node(&first).await;
    assert!(!unschedulable(&node) && marked(&node, DISRUPTED_TAINT).is_none());
    assert_eq!(s.metric("cloudoptim_drains_total{result=\"blocked\"}"), 1.0);
    // No eviction was even requested: every evictions_total series (they start at 0) is still 0.
    let text = s.metrics.render();
    let requested: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("cloudoptim_evictions_total{") && !l.ends_with(" 0"))
        .collect();
    assert!(requested.is_empty(), "{requested:?}");
    assert_eq!(
        s.metric("cloudoptim_evictions_total{result=\"evicted\"}"),
        0.0
    );
}

#[tokio::test]
async fn a_node_left_cordoned_is_found_by_its_taint_and_released_without_touching_other_taints() {
    let Some(cp) = ControlPlane::shared() else {
        return;
    };
    let s = Scenario::new(cp).await;
    let name = s.node(0).await;
    // The node lifecycle controller taints a new node not-ready until kwok reports it Ready; wait, so
    // the only writers of the taints below are this test and the drainer.
    s.ready(&name).await;
    let team_taint =
        json!({"spec": {"taints": [{"key": "team", "value": "a", "effect": "NoSchedule"}]}});
    Api::<Node>::all(s.client.clone())
        .patch(&name, &PatchParams::default(), &Patch::Merge(&team_taint))
        .await
        .expect("team taint set");

    let marker = Marker::interruption("e2e: spot interruption warning");
    s.drainer.cordon(&name, &marker).await.expect("cordoned");
    s.drainer.cordon(&name, &marker).await.expect("idempotent");

    let found = s
        .drainer
        .marked_nodes(INTERRUPTED_TAINT)
        .await
        .expect("listed");
    let mark = found
        .iter()
        .find(|m| m.name == name)
        .expect("the restarted operator finds the node");
    assert_eq!(mark.by, "interruption");
    assert_eq!(
        mark.reason.as_deref(),
        Some("e2e: spot interruption warning")
    );
    assert!(mark.since.is_some() && mark.unschedulable);
    let others = s
        .drainer
        .marked_nodes(DISRUPTED_TAINT)
        .await
        .expect("listed");
    assert!(others.iter().all(|m| m.name != name));
    let taints = |node: &Node| -> Vec<String> {
        let taints = node.spec.as_ref().and_then(|s| s.taints.clone());
        // The node lifecycle controller adds and removes `node.kubernetes.io/unschedulable` itself.
        taints
            .unwrap_or_default()
            .into_iter()
            .filter(|t| !t.key.starts_with("node.kubernetes.io/"))
            .map(|t| format!("{}={}", t.key, t.value.unwrap_or_default()))
            .collect()
    };
    let node = s.get_node(&name).await;
    assert_eq!(
        taints(&node),
        ["team=a", "cloudoptim.io/interrupted=interruption"]
    );

    s.drainer
        .release(&name, INTERRUPTED_TAINT)
        .await
        .expect("released");
    let node = s.get_node(&name).await;
    assert!(!unschedulable(&node));
    assert_eq!(taints(&node), ["team=a"]);
    let found = s
        .drainer
        .marked_nodes(INTERRUPTED_TAINT)
        .await
        .expect("listed");
    assert!(found.iter().all(|m| m.name != name));
}

#[tokio::test]
async fn many_nodes_drain_in_parallel_within_the_pool() {
    let Some(cp) = ControlPlane::shared() else {
        return;
    };
    let s = Scenario::new(cp).await;
    let nodes = [s.node(0).await, s.node(1).await];
    s.deployment("web", 4).await;
    eventually(WAIT, "4 web pods running", || async {
        (s.running("web").await.len() == 4).then_some(())
    })
    .await;
    s.node(2).await;

    let options = DrainOptions::new(WAIT, true);
    let marker = Marker::consolidation("e2e: many");
    let results = s.drainer.drain_many(&nodes, 2, &marker, &options).await;

    assert_eq!(results.len(), 2);
    for (node, result) in &results {
        let report = result.as_ref().expect("drain runs");
        assert_eq!(&report.node, node);
        assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
        assert!(unschedulable(&s.get_node(node).await));
    }
    let evicted: usize = results
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .map(|r| r.evicted.len())
        .sum();
    assert_eq!(evicted, 4, "every web pod was on one of the two nodes");
    s.running_on("web", 4, &format!("{}-node-2", s.id)).await;
    assert_eq!(s.metric("cloudoptim_drains_total{result=\"ok\"}"), 2.0);
}

#[tokio::test]
async fn pods_still_terminating_keep_the_node_undrained_until_they_are_gone() {
    let Some(cp) = ControlPlane::shared() else {
        return;
    };
    let s = Scenario::new(cp).await;
    let node = s.node(0).await;
    // A pod a previous run evicted whose shutdown is held (a finalizer): deleted, still on the node.
    let mut pod = s.pod_template("held", &BTreeMap::new());
    pod["metadata"]["name"] = json!("held");
    pod["metadata"]["finalizers"] = json!(["e2e.cloudoptim.io/hold"]);
    let pod: Pod = serde_json::from_value(pod).expect("pod");
    s.pods()
        .create(&PostParams::default(), &pod)
        .await
        .expect("pod created");
    s.running_on("held", 1, &node).await;
    s.pods()
        .delete("held", &Default::default())
        .await
        .expect("deleted");
    let options = DrainOptions::new(Duration::from_secs(3), false);
    let report = s
        .drainer
        .drain(&node, &Marker::consolidation("e2e: terminating"), &options)
        .await
        .expect("drain runs");
    let DrainOutcome::Failed { remaining } = &report.outcome else {
        panic!("a node with a pod still terminating is not drained: {report}")
    };
    assert_eq!(remaining[0].pod.name, "held", "{report}");
    assert!(remaining[0].why.contains("still terminating"), "{report}");
    assert!(report.released, "{report}");
    // Once the pod is gone the node drains.
    s.pods()
        .patch(
            "held",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .expect("finalizer removed");
    let report = s
        .drainer
        .drain(&node, &Marker::consolidation("e2e: terminating"), &options)
        .await
        .expect("drain runs");
    assert!(report.is_drained(), "{report}");
}
