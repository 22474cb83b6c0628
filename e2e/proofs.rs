//! Proofs that the real peers behave the way CloudOptim depends on: admission runs our CEL rules,
//! status is written by server-side apply, evictions honour PodDisruptionBudgets (429), the real
//! scheduler re-places an evicted Deployment pod onto another kwok node.

mod support;

use cloudoptim::cloud::CLUSTER_TAG;

use std::time::Duration;

use cloudoptim::api::{HibernationSchedule, NodeTemplate, OptimizationPolicy, SpotRiskFlag};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, EvictParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::await_condition;
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use serde_json::json;
use support::nodes::FakeNode;
use support::{ControlPlane, unique};

const WAIT: Duration = Duration::from_secs(60);

/// Create an object from an example file under a new name, with a server-side dry run or for real.
async fn create_example<K>(client: &Client, file: &str, dry_run: bool) -> Result<K, kube::Error>
where
    K: Resource<Scope = k8s_openapi::ClusterResourceScope, DynamicType = ()>
        + DeserializeOwned
        + serde::Serialize
        + Clone
        + std::fmt::Debug,
{
    let text = std::fs::read_to_string(support::repo_root().join(file)).expect("example readable");
    let mut object: K = serde_yaml::from_str(&text).expect("example parses");
    object.meta_mut().name = Some(unique("example"));
    let api: Api<K> = Api::all(client.clone());
    api.create(
        &PostParams {
            dry_run,
            ..PostParams::default()
        },
        &object,
    )
    .await
}

#[tokio::test]
async fn examples_are_admitted_by_the_real_api_server() {
    let Some(cp) = ControlPlane::shared() else {
        return;
    };
    let client = cp.client().await;
    create_example::<NodeTemplate>(&client, "examples/nodetemplate.yaml", true)
        .await
        .expect("NodeTemplate example admitted");
    create_example::<OptimizationPolicy>(&client, "examples/optimizationpolicy.yaml", true)
        .await
        .expect("policy example admitted");
    create_example::<HibernationSchedule>(&client, "examples/hibernationschedule.yaml", true)
        .await
        .expect("schedule example admitted");
    create_example::<SpotRiskFlag>(&client, "examples/spotriskflag.yaml", true)
        .await
        .expect("flag example admitted");
}

#[tokio::test]
async fn cel_rule_rejects_a_bad_policy_with_the_rule_message() {
    let Some(cp) = ControlPlane::shared() else {
        return;
    };
    let api: Api<OptimizationPolicy> = Api::all(cp.client().await);
    let bad: OptimizationPolicy = serde_json::from_value(json!({
        "apiVersion": "cloudoptim.io/v1alpha1", "kind": "OptimizationPolicy",
        "metadata": {"name": unique("bad-policy")},
        "spec": {"nodes": {"min": 10, "max": 3}}
    }))
    .expect("object builds");
    let err = api
        .create(&PostParams::default(), &bad)
        .await
        .expect_err("min > max must be rejected");
    let kube::Error::Api(status) = err else {
        panic!("expected an API error, got {err:?}")
    };
    assert_eq!(status.code, 422, "{status:?}");
    assert!(
        status.message.contains("spec.nodes: min must be <= max"),
        "{}",
        status.message
    );

    let bad_matrix: HibernationSchedule = serde_json::from_value(json!({
        "apiVersion": "cloudoptim.io/v1alpha1", "kind": "HibernationSchedule",
        "metadata": {"name": unique("bad-schedule")},
        "spec": {"timeZone": "Europe/Berlin", "weeklyMatrix": vec![2; 168]}
    }))
    .expect("object builds");
    let api: Api<HibernationSchedule> = Api::all(cp.client().await);
    let err = api
        .create(&PostParams::default(), &bad_matrix)
        .await
        .expect_err("2 is not a matrix value");
    assert!(
        err.to_string()
            .contains("every entry must be 0 (hibernating) or 1 (awake)"),
        "{err}"
    );
}

#[tokio::test]
async fn defaults_are_applied_by_the_api_server() {
    let Some(cp) = ControlPlane::shared() else {
        return;
    };
    let api: Api<OptimizationPolicy> = Api::all(cp.client().await);
    let name = unique("defaults");
    let empty: OptimizationPolicy = serde_json::from_value(json!({
        "apiVersion": "cloudoptim.io/v1alpha1", "kind": "OptimizationPolicy",
        "metadata": {"name": name}, "spec": {}
    }))
    .expect("object builds");
    api.create(&PostParams::default(), &empty)
        .await
        .expect("empty spec admitted");
    let stored: serde_json::Value = Api::<kube::api::DynamicObject>::all_with(
        api.clone().into_client(),
        &kube::api::ApiResource::erase::<OptimizationPolicy>(&()),
    )
    .get(&name)
    .await
    .map(|o| serde_json::to_value(o).expect("serialises"))
    .expect("stored");
    assert_eq!(stored["spec"]["spot"]["percentage"], 70);
    assert_eq!(stored["spec"]["disruption"]["budgets"][0]["nodes"], "10%");
}

#[tokio::test]
async fn status_is_written_by_server_side_apply_with_our_field_manager() {
    let Some(cp) = ControlPlane::shared() else {
        return;
    };
    let client = cp.client().await;
    let created: NodeTemplate = create_example(&client, "examples/nodetemplate.yaml", false)
        .await
        .expect("created");
    let name = created.metadata.name.clone().expect("named");
    let api: Api<NodeTemplate> = Api::all(client);
    let condition = |status: &str, reason: &str| Condition {
        type_: "Ready".into(),
        status: status.into(),
        reason: reason.into(),
        message: "proof".into(),
        last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        ),
        observed_generation: created.metadata.generation,
    };
    let patch = |c: Condition| {
        json!({"apiVersion": "cloudoptim.io/v1alpha1", "kind": "NodeTemplate",
               "status": {"observedGeneration": created.metadata.generation, "conditions": [c]}})
    };
    let params = PatchParams::apply("cloudoptim").force();
    api.patch_status(
        &name,
        &params,
        &Patch::Apply(patch(condition("False", "NoMatchingTypes"))),
    )
    .await
    .expect("status applied");
    api.patch_status(
        &name,
        &params,
        &Patch::Apply(patch(condition("True", "Ranked"))),
    )
    .await
    .expect("status re-applied");
    let stored = api.get(&name).await.expect("read back");
    let status = stored.status.expect("status written");
    assert_eq!(status.observed_generation, created.metadata.generation);
    assert_eq!(status.conditions.len(), 1, "conditions merge by type");
    assert_eq!(status.conditions[0].reason, "Ranked");
    let managers = stored.metadata.managed_fields.unwrap_or_default();
    assert!(
        managers
            .iter()
            .any(|m| m.manager.as_deref() == Some("cloudoptim")
                && m.subresource.as_deref() == Some("status")),
        "field manager cloudoptim owns the status: {managers:?}"
    );
}

/// A namespace with `nodes` fresh kwok nodes and a Deployment of `replicas` pods labelled `app=<name>`.
struct Scenario {
    client: Client,
    namespace: String,
    app: String,
    nodes: Vec<String>,
}

impl Scenario {
    async fn new(cp: &ControlPlane, nodes: usize, replicas: i32) -> Scenario {
        let client = cp.client().await;
        let namespace = support::create_namespace(&client, "proof").await;
        let app = unique("app");
        let mut names = Vec::new();
        for i in 0..nodes {
            let name = format!("{app}-node-{i}");
            let zone = ["us-east-1a", "us-east-1b"][i % 2];
            let mut node = FakeNode::new(&name, zone, &format!("i-{:017x}", 0xabc000 + i));
            node.labels.insert("proof".into(), app.clone());
            node.create(&client).await;
            names.push(name);
        }
        let deployment: Deployment = serde_json::from_value(json!({
            "metadata": {"name": app, "namespace": namespace},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": app}},
                "template": {
                    "metadata": {"labels": {"app": app}},
                    "spec": {
                        "nodeSelector": {"proof": app},
                        "containers": [{"name": "c", "image": "fake", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]
                    }
                }
            }
        }))
        .expect("deployment");
        Api::<Deployment>::namespaced(client.clone(), &namespace)
            .create(&PostParams::default(), &deployment)
            .await
            .expect("deployment created");
        Scenario {
            client,
            namespace,
            app,
            nodes: names,
        }
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Wait until `n` pods of the app are Running on a node, and return them.
    async fn running_pods(&self, n: usize) -> Vec<Pod> {
        let lp = ListParams::default().labels(&format!("app={}", self.app));
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut watch = tokio::time::interval(Duration::from_millis(200));
        loop {
            watch.tick().await;
            let pods = self.pods().list(&lp).await.expect("list pods").items;
            let running: Vec<Pod> = pods
                .into_iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .collect();
            if running.len() == n {
                return running;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{n} running pods of {} not reached in {WAIT:?}",
                self.app
            );
        }
    }

    async fn create_pdb(&self, max_unavailable: i32) -> Api<PodDisruptionBudget> {
        let pdb: PodDisruptionBudget = serde_json::from_value(json!({
            "metadata": {"name": self.app, "namespace": self.namespace},
            "spec": {"maxUnavailable": max_unavailable, "selector": {"matchLabels": {"app": self.app}}}
        }))
        .expect("pdb");
        let api: Api<PodDisruptionBudget> = Api::namespaced(self.client.clone(), &self.namespace);
        api.create(&PostParams::default(), &pdb)
            .await
            .expect("pdb created");
        api
    }
}

/// Wait until the disruption controller reports `allowed` disruptions for the PDB.
async fn pdb_allows(api: &Api<PodDisruptionBudget>, name: &str, allowed: i32) {
    let cond = move |pdb: Option<&PodDisruptionBudget>| {
        pdb.and_then(|p| p.status.as_ref()).is_some_and(|s| {
            s.disruptions_allowed == allowed && s.observed_generation == p_generation(pdb)
        })
    };
    tokio::time::timeout(WAIT, await_condition(api.clone(), name, cond))
        .await
        .unwrap_or_else(|_| panic!("PDB {name} never allowed {allowed} disruptions"))
        .expect("watching the PDB");
}

fn p_generation(pdb: Option<&PodDisruptionBudget>) -> Option<i64> {
    pdb.and_then(|p| p.metadata.generation)
}

#[tokio::test]
async fn eviction_is_refused_with_429_by_a_pdb_without_allowance_and_allowed_with_one() {
    let Some(cp) = ControlPlane::shared() else {
        return;
    };
    let scenario = Scenario::new(cp, 2, 2).await;
    let pods = scenario.running_pods(2).await;
    let pdb_api = scenario.create_pdb(0).await;
    pdb_allows(&pdb_api, &scenario.app, 0).await;

    let victim = pods[0].metadata.name.clone().expect("pod name");
    let err = scenario
        .pods()
        .evict(&victim, &EvictParams::default())
        .await
        .expect_err("PDB must block the eviction");
    let kube::Error::Api(status) = err else {
        panic!("expected an API error, got {err:?}")
    };
    assert_eq!(status.code, 429, "{status:?}");

    let patch = json!({"spec": {"maxUnavailable": 1}});
    pdb_api
        .patch(
            &scenario.app,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .expect("pdb patched");
    pdb_allows(&pdb_api, &scenario.app, 1).await;
    scenario
        .pods()
        .evict(&victim, &EvictParams::default())
        .await
        .expect("eviction allowed by the PDB");
}

#[tokio::test]
async fn evicted_deployment_pod_is_rescheduled_onto_another_kwok_node() {
    let Some(cp) = ControlPlane::shared() else {
        return;
    };
    let scenario = Scenario::new(cp, 2, 1).await;
    let pod = scenario.running_pods(1).await.remove(0);
    let first_node = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .expect("scheduled");
    assert!(
        scenario.nodes.contains(&first_node),
        "placed on one of the scenario's nodes"
    );

    let nodes: Api<Node> = Api::all(scenario.client.clone());
    let cordon = json!({"spec": {"unschedulable": true}});
    nodes
        .patch(&first_node, &PatchParams::default(), &Patch::Merge(&cordon))
        .await
        .expect("cordoned");
    let name = pod.metadata.name.clone().expect("pod name");
    scenario
        .pods()
        .evict(&name, &EvictParams::default())
        .await
        .expect("evicted");

    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let replacement = scenario.running_pods(1).await.remove(0);
        if replacement.metadata.name.as_deref() != Some(name.as_str()) {
            let node = replacement
                .spec
                .and_then(|s| s.node_name)
                .expect("scheduled");
            assert_ne!(node, first_node, "the replacement avoids the cordoned node");
            assert!(scenario.nodes.contains(&node));
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no replacement pod");
    }
}

#[tokio::test]
async fn the_aws_sdk_creates_a_group_in_moto_and_cloudoptim_sees_its_instances() {
    use cloudoptim::cloud::aws::AwsCloud;
    use cloudoptim::cloud::{Cloud, GroupSelector};
    let Some(moto) = support::Moto::start() else {
        return;
    };
    let sdk = support::aws::sdk_config(&moto.endpoint).await;
    let template = support::aws::launch_template(&sdk, "proof").await;
    let tags = [("cloudoptim.io/cluster".to_string(), "proof".to_string())].into();
    support::aws::create_group(&sdk, "proof-asg", &template, 2, &tags).await;

    let metrics = cloudoptim::metrics::Metrics::new().expect("metrics");
    let options = support::aws::options(&moto.endpoint);
    let cloud = AwsCloud::connect(&options, metrics.clone()).await;
    let groups = cloud
        .groups(&GroupSelector::Tags(tags.clone()))
        .await
        .expect("describe groups");
    assert_eq!(groups.len(), 1);
    assert_eq!(
        groups[0].instances.len(),
        2,
        "moto launched the desired capacity"
    );
    let instances = cloud
        .instances(CLUSTER_TAG, "proof")
        .await
        .expect("describe instances");
    for id in &groups[0].instances {
        assert!(
            instances.iter().any(|i| &i.id == id),
            "instance {id} carries the propagated cluster tag"
        );
    }
    let missing = cloud
        .groups(&GroupSelector::Names(vec!["nope".into()]))
        .await
        .expect("describe");
    assert!(missing.is_empty());
    assert!(metrics.render().contains(
        "cloudoptim_aws_api_calls_total{op=\"DescribeAutoScalingGroups\",result=\"ok\"} 2"
    ));
    moto.reset();
    let after_reset = cloud
        .groups(&GroupSelector::Tags(tags))
        .await
        .expect("describe after reset");
    assert!(after_reset.is_empty(), "reset clears moto's state");
}

#[tokio::test]
async fn the_aws_sdk_reads_the_spot_price_history_of_only_the_types_asked_for_from_moto() {
    use cloudoptim::cloud::Cloud;
    use cloudoptim::cloud::aws::AwsCloud;
    use cloudoptim::engine::spot_average::{WINDOW_SECS, averages};
    let Some(moto) = support::Moto::start() else {
        return;
    };
    let metrics = cloudoptim::metrics::Metrics::new().expect("metrics");
    let options = support::aws::options(&moto.endpoint);
    let cloud = AwsCloud::connect(&options, metrics.clone()).await;
    let now = chrono::Utc::now().timestamp();

    let records = cloud
        .spot_price_history(&["m5.large".to_string()], now - WINDOW_SECS)
        .await
        .expect("describe spot price history");
    let nothing = cloud
        .spot_price_history(&[], now - WINDOW_SECS)
        .await
        .expect("an empty list asks for nothing");

    assert!(!records.is_empty(), "moto has m5.large offerings");
    assert!(records.iter().all(|r| r.instance_type == "m5.large"));
    assert!(nothing.is_empty());
    // moto ignores StartTime and dates every record 2006: the record before the window holds, so the
    // average is its price.
    for (key, average) in averages(&records, now, WINDOW_SECS) {
        assert!((average - 0.00001).abs() < 1e-12, "{key:?}: {average}");
    }
    assert!(metrics.render().contains(
        "cloudoptim_aws_api_calls_total{op=\"DescribeSpotPriceHistory\",result=\"ok\"} 1"
    ));
}
