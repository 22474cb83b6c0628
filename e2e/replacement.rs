//! Replacement (replace before delete) end to end: the real `cloudoptim run` binary against a real API
//! server, kube-controller-manager, kube-scheduler and kwok, with moto behind it. Three on-demand
//! m5.4xlarge kwok nodes, backed by the moto instances of one Auto Scaling group, each run six 1.5-vCPU
//! pods of a Deployment (about 57% requested: no node can be emptied into the others). The operator
//! launches one cheaper node into the group and, once it is Ready, drains and removes the three.
//!
//! The harness plays the kubelet: a task joins a kwok Node (its size from the catalog, its providerID
//! the instance) for each instance the operator launches, but only while `join` is on.
//!
//! Phases, against one policy:
//! 1. join off: the operator launches a replacement and is killed (SIGKILL) right after the launch; the
//!    restarted operator finds it from its tags alone, and at the Ready deadline terminates it (the group
//!    shrinks back) and leaves the old nodes as they were: none cordoned, all pods where they were;
//! 2. join on: the next replacement's node joins; the operator drains the three nodes (killed again at
//!    the first cordon, restarted) and removes them through the group with decrement; all eighteen pods
//!    run on the new node, the scheduler never found a pod unschedulable, the PDB never let more than
//!    one pod be unavailable, and AWS shows one instance in the group with no replacement tag left.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::Duration;

use cloudoptim::api::OptimizationPolicy;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;
use support::nodes::FakeNode;
use support::operator::{Operator, eventually};
use support::{ControlPlane, Moto, aws, create_namespace, unique};

const WAIT: Duration = Duration::from_secs(120);
const CLUSTER: &str = "e2e";
const TAINT: &str = "cloudoptim.io/disrupted";
const REPLICAS: i32 = 18;

/// Instances of this cluster the operator launched as replacements (tag `cloudoptim.io/replaces`
/// still set or not): (id, instance type, zone, state, tags).
async fn launched(
    sdk: &aws_config::SdkConfig,
    known: &BTreeSet<String>,
) -> Vec<(String, String, String, String, BTreeMap<String, String>)> {
    let out = aws_sdk_ec2::Client::new(sdk)
        .describe_instances()
        .send()
        .await
        .expect("describe instances");
    out.reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter_map(|i| {
            let id = i.instance_id()?.to_string();
            let tags: BTreeMap<String, String> = i
                .tags()
                .iter()
                .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
                .collect();
            (!known.contains(&id)
                && tags.get("cloudoptim.io/cluster").map(String::as_str) == Some(CLUSTER))
            .then(|| {
                (
                    id,
                    i.instance_type()
                        .map(|t| t.as_str().to_string())
                        .unwrap_or_default(),
                    i.placement()
                        .and_then(|p| p.availability_zone())
                        .unwrap_or_default()
                        .to_string(),
                    i.state()
                        .and_then(|s| s.name())
                        .map(|n| n.as_str().to_string())
                        .unwrap_or_default(),
                    tags,
                )
            })
        })
        .collect()
}

/// The group's (desired capacity, instance ids).
async fn group_state(sdk: &aws_config::SdkConfig, group: &str) -> (i32, BTreeSet<String>) {
    let g = aws::describe_group(sdk, group).await.expect("group");
    (
        g.desired_capacity().unwrap_or(-1),
        g.instances()
            .iter()
            .filter_map(|i| i.instance_id().map(str::to_string))
            .collect(),
    )
}

/// Pods of the Deployment: (running, total live, the nodes they run on).
async fn web_pods(client: &Client, ns: &str) -> (usize, usize, BTreeSet<String>) {
    let pods = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels("app=web"))
        .await
        .expect("pods")
        .items;
    let live: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    let on_nodes: Vec<String> = live
        .iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .filter_map(|p| p.spec.as_ref()?.node_name.clone())
        .collect();
    (on_nodes.len(), live.len(), on_nodes.into_iter().collect())
}

fn cordoned(node: &Node) -> bool {
    let spec = node.spec.as_ref();
    spec.and_then(|s| s.unschedulable).unwrap_or(false)
        || spec
            .and_then(|s| s.taints.as_ref())
            .is_some_and(|t| t.iter().any(|t| t.key == TAINT))
}

async fn events(client: &Client, name: &str) -> Vec<(String, String)> {
    Api::<Event>::all(client.clone())
        .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
        .await
        .expect("events")
        .items
        .into_iter()
        .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
        .collect()
}

/// Plays the kubelet: while `join` is on, every running replacement instance without a Node gets one
/// (sized from the catalog, labelled like the pool's nodes).
fn kubelet(
    client: Client,
    sdk: aws_config::SdkConfig,
    pool: String,
    known: BTreeSet<String>,
    join: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut joined = BTreeSet::new();
        let mut tick = tokio::time::interval(Duration::from_millis(300));
        loop {
            tick.tick().await;
            if !join.load(Ordering::SeqCst) {
                continue;
            }
            for (id, instance_type, zone, state, tags) in launched(&sdk, &known).await {
                if state != "running" && state != "pending" || joined.contains(&id) {
                    continue;
                }
                let Some(t) =
                    cloudoptim::engine::catalog::Catalog::embedded().instance_type(&instance_type)
                else {
                    panic!(
                        "the operator launched {instance_type}, which the catalog does not know"
                    );
                };
                let mut node = FakeNode::new(&format!("{pool}-new-{}", joined.len()), &zone, &id);
                node.instance_type = instance_type.clone();
                // The policy asks for 0% Spot: every replacement is on-demand.
                node.capacity_type = "on-demand".into();
                assert!(tags.contains_key("cloudoptim.io/cluster"));
                node.cpu = format!("{}m", t.vcpu * 1000 - 110);
                node.memory = format!("{}Mi", t.memory_mib * 90 / 100);
                node.labels.insert("e2e-pool".into(), pool.clone());
                node.create(&client).await;
                joined.insert(id);
            }
        }
    })
}

#[tokio::test]
async fn three_busy_nodes_become_one_cheaper_node_replace_before_delete_and_crash_safe() {
    let Some(cp) = ControlPlane::shared() else {
        return;
    };
    let Some(moto) = Moto::start() else { return };
    moto.start_recording();
    let client = cp.client().await;
    let sdk = aws::sdk_config(&moto.endpoint).await;
    let pool = unique("pool");
    let launch = aws::launch_template(&sdk, &unique("lt")).await;
    let group = format!("{pool}-a");
    let group_tags: BTreeMap<String, String> = [
        ("cloudoptim.io/cluster".to_string(), CLUSTER.to_string()),
        ("e2e-pool".to_string(), pool.clone()),
    ]
    .into();
    aws::create_group(&sdk, &group, &launch, 3, &group_tags).await;
    let (desired, originals) = group_state(&sdk, &group).await;
    assert_eq!((desired, originals.len()), (3, 3));

    // Three on-demand m5.4xlarge nodes, one per instance.
    let g = aws::describe_group(&sdk, &group).await.expect("group");
    let mut old_nodes = BTreeSet::new();
    for (i, instance) in g.instances().iter().enumerate() {
        let name = format!("{pool}-{i}");
        let mut node = FakeNode::new(
            &name,
            instance.availability_zone().expect("zone"),
            instance.instance_id().expect("id"),
        );
        node.instance_type = "m5.4xlarge".into();
        node.capacity_type = "on-demand".into();
        node.cpu = "15890m".into();
        node.memory = "62Gi".into();
        node.labels.insert("e2e-pool".into(), pool.clone());
        node.create(&client).await;
        old_nodes.insert(name);
    }
    let ns = create_namespace(&client, "repl").await;
    let web: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                "containers": [{"name": "c", "image": "web", "resources": {"requests": {"cpu": "1500m", "memory": "2Gi"}}}],
                "terminationGracePeriodSeconds": 0
            }}
        }
    }))
    .expect("deployment");
    Api::<Deployment>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &web)
        .await
        .expect("deployment created");
    let pdb: PodDisruptionBudget = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "web"}}}
    }))
    .expect("pdb");
    Api::<PodDisruptionBudget>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &pdb)
        .await
        .expect("pdb created");
    // Six pods on each node: the scheduler packs, so each step scales up with only one node open.
    let nodes_api: Api<Node> = Api::all(client.clone());
    let order: Vec<String> = old_nodes.iter().cloned().collect();
    for (step, open) in order.iter().enumerate() {
        for name in &order {
            let patch = json!({"spec": {"unschedulable": name != open}});
            nodes_api
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .expect("cordon for placement");
        }
        // The node lifecycle controller removes the unschedulable taint a little after the uncordon;
        // scaling before that would make the scheduler report the pods unschedulable for a moment.
        eventually(WAIT, "the open node without taints", || async {
            let node = nodes_api.get(open).await.ok()?;
            let taints = node.spec.and_then(|s| s.taints).unwrap_or_default();
            taints.is_empty().then_some(())
        })
        .await;
        let replicas = 6 * (step + 1);
        Api::<Deployment>::namespaced(client.clone(), &ns)
            .patch(
                "web",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": replicas}})),
            )
            .await
            .expect("scale");
        eventually(WAIT, &format!("{replicas} web pods running"), || async {
            let (running, live, _) = web_pods(&client, &ns).await;
            (running == replicas && live == replicas).then_some(())
        })
        .await;
    }
    for name in &order {
        nodes_api
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"unschedulable": false}})),
            )
            .await
            .expect("uncordon");
    }
    let (_, _, before) = web_pods(&client, &ns).await;
    assert_eq!(before, old_nodes, "six pods on each node");

    // Outside observers for the whole run: the fewest available web pods (the PDB allows one down),
    // and pods the scheduler could not place.
    let fewest_available = Arc::new(AtomicI32::new(REPLICAS));
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
    let watch = {
        let fewest = fewest_available.clone();
        tokio::spawn(async move {
            let stream = watcher::watcher(
                deployments,
                watcher::Config::default().fields("metadata.name=web"),
            )
            .default_backoff()
            .applied_objects();
            futures::pin_mut!(stream);
            while let Some(Ok(d)) = stream.next().await {
                let available = d.status.and_then(|s| s.available_replicas).unwrap_or(0);
                fewest.fetch_min(available, Ordering::SeqCst);
            }
        })
    };

    let template: cloudoptim::api::NodeTemplate = serde_json::from_value(json!({
        "apiVersion": "cloudoptim.io/v1alpha1", "kind": "NodeTemplate",
        "metadata": {"name": unique("general"), "labels": {"pool": pool}},
        "spec": {"autoScalingGroups": {"tagSelector": {"e2e-pool": pool}},
                 "requirements": {"families": ["m5", "c6a", "c6i"], "currentGenerationOnly": false}}
    }))
    .expect("template");
    Api::<cloudoptim::api::NodeTemplate>::all(client.clone())
        .create(&PostParams::default(), &template)
        .await
        .expect("template created");
    let name = unique("cluster");
    let policy: OptimizationPolicy = serde_json::from_value(json!({
        "apiVersion": "cloudoptim.io/v1alpha1", "kind": "OptimizationPolicy",
        "metadata": {"name": name},
        "spec": {
            "nodeTemplateSelector": {"matchLabels": {"pool": pool}},
            "spot": {"percentage": 0},
            "consolidation": {"interval": "2s", "consolidateAfter": "0s",
                              "replacement": {"readyTimeout": "20s"}},
            "disruption": {"budgets": [{"nodes": "3"}], "drainTimeout": "60s"},
            "zombies": {"mode": "Report", "gracePeriod": "0s"}
        }
    }))
    .expect("policy");
    let policies: Api<OptimizationPolicy> = Api::all(client.clone());
    policies
        .create(&PostParams::default(), &policy)
        .await
        .expect("policy created");

    let join = Arc::new(AtomicBool::new(false));
    let kubelet = kubelet(
        client.clone(),
        sdk.clone(),
        pool.clone(),
        originals.clone(),
        join.clone(),
    );

    // Phase 1: the first replacement is launched; the operator dies right after.
    let mut operator = Operator::start(cp, &moto, CLUSTER, &[]);
    let first = eventually(WAIT, "a replacement launched", || async {
        launched(&sdk, &originals).await.into_iter().next()
    })
    .await;
    operator.kill();
    let (first_id, first_type, _, _, first_tags) = first;
    assert_eq!(
        first_tags
            .get("cloudoptim.io/replaces")
            .map(|v| v.split(' ').map(str::to_string).collect::<BTreeSet<_>>()),
        Some(originals.clone()),
        "the launch call tagged it with the instances it replaces: {first_tags:?}"
    );
    assert_eq!(
        first_tags.get("cloudoptim.io/replacement-policy"),
        Some(&name)
    );
    assert_eq!(
        first_tags.get("e2e-pool"),
        Some(&pool),
        "the group's own tags travel with it"
    );
    let catalog = cloudoptim::engine::catalog::Catalog::embedded();
    let price = |t: &str| catalog.on_demand_price(aws::REGION, t).expect("priced");
    assert!(
        price(&first_type) <= 0.9 * 3.0 * price("m5.4xlarge"),
        "{first_type} is cheaper than three m5.4xlarge by the margin"
    );

    // Restarted, the operator knows the replacement from its tags alone: it never becomes Ready, so at
    // the deadline it is terminated through the group and nothing else changes.
    let mut operator = Operator::start(cp, &moto, CLUSTER, &[]);
    eventually(WAIT, "the unready replacement terminated", || async {
        let (desired, instances) = group_state(&sdk, &group).await;
        let state = launched(&sdk, &originals)
            .await
            .into_iter()
            .find(|l| l.0 == first_id)
            .map(|l| l.3);
        (matches!(state.as_deref(), Some("terminated" | "shutting-down"))
            && desired == 3
            && instances == originals)
            .then_some(())
    })
    .await;
    assert!(
        events(&client, &name)
            .await
            .iter()
            .any(|(r, m)| r == "ReplacementAborted" && m.contains(&first_id)),
        "{:?}",
        events(&client, &name).await
    );
    for node in Api::<Node>::all(client.clone())
        .list(&ListParams::default().labels(&format!("e2e-pool={pool}")))
        .await
        .expect("nodes")
        .items
    {
        assert!(
            !cordoned(&node),
            "an aborted replacement left {} cordoned",
            node.name_any()
        );
    }
    assert_eq!(web_pods(&client, &ns).await.2, old_nodes, "no pod moved");

    // Phase 2: nodes join now. Killed at the first cordon of a replaced node, restarted, the operator
    // finishes: the three old nodes go, all pods run on the new one.
    join.store(true, Ordering::SeqCst);
    eventually(WAIT, "a replaced node cordoned", || async {
        let nodes = Api::<Node>::all(client.clone())
            .list(&ListParams::default().labels(&format!("e2e-pool={pool}")))
            .await
            .ok()?
            .items;
        nodes
            .iter()
            .any(|n| old_nodes.contains(&n.name_any()) && cordoned(n))
            .then_some(())
    })
    .await;
    operator.kill();
    let operator = Operator::start(cp, &moto, CLUSTER, &[]);
    let new_node = eventually(
        Duration::from_secs(240),
        "the three nodes replaced by one",
        || async {
            let (desired, instances) = group_state(&sdk, &group).await;
            let (running, live, on) = web_pods(&client, &ns).await;
            let nodes: Vec<Node> = Api::<Node>::all(client.clone())
                .list(&ListParams::default().labels(&format!("e2e-pool={pool}")))
                .await
                .ok()?
                .items;
            let done = desired == 1
                && instances.len() == 1
                && instances.is_disjoint(&originals)
                && nodes.len() == 1
                && running == REPLICAS as usize
                && live == REPLICAS as usize
                && on.len() == 1;
            done.then(|| nodes[0].clone())
        },
    )
    .await;
    assert!(!cordoned(&new_node));
    // Done: the replacement tags are gone from the new instance (the cluster's stays).
    let status = eventually(WAIT, "the replacement recorded as done", || async {
        let p = policies.get(&name).await.ok()?;
        let st = p.status?;
        let done = st
            .realized_savings
            .as_ref()
            .is_some_and(|r| r.replacements == 1 && st.replacements_in_flight.is_empty());
        done.then_some(st)
    })
    .await;
    let realized = status.realized_savings.expect("realized");
    assert_eq!(realized.replacements_aborted, 1, "{realized:?}");
    assert!(realized.nodes_removed >= 3, "{realized:?}");
    assert!(realized.saved_hourly > 0.0, "{realized:?}");
    let (new_id, new_type, _, _, tags) = launched(&sdk, &originals)
        .await
        .into_iter()
        .find(|l| l.3 == "running")
        .expect("the new instance runs");
    assert!(
        !tags.keys().any(|k| k.starts_with("cloudoptim.io/replace")),
        "{tags:?}"
    );
    let expected = 3.0 * price("m5.4xlarge") - price(&new_type);
    assert!(
        (realized.saved_hourly - expected).abs() < 0.01,
        "saved {} vs three m5.4xlarge minus one {new_type} = {expected}",
        realized.saved_hourly
    );
    assert!(
        events(&client, &name)
            .await
            .iter()
            .any(|(r, m)| r == "Replaced" && m.contains(&new_id)),
        "{:?}",
        events(&client, &name).await
    );
    // Outside observers: the PDB held, and no pod was ever unschedulable (the new node was Ready
    // before any old one was drained).
    assert!(
        fewest_available.load(Ordering::SeqCst) >= REPLICAS - 1,
        "available web pods fell to {}",
        fewest_available.load(Ordering::SeqCst)
    );
    let unschedulable: Vec<(String, String)> = Api::<Event>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("FailedScheduling"))
        .map(|e| {
            (
                e.involved_object.name.unwrap_or_default(),
                e.message.unwrap_or_default(),
            )
        })
        .collect();
    assert!(unschedulable.is_empty(), "{unschedulable:?}");
    assert_eq!(
        operator
            .metric("cloudoptim_replacements_total{reason=\"consolidation\",result=\"replaced\"}"),
        1.0
    );
    // AWS saw the launch, the adoption, the terminations with decrement and the untagging, all
    // within the shipped IAM policy.
    let actions = moto.assert_operator_actions_allowed();
    for action in [
        "ec2:RunInstances",
        "autoscaling:AttachInstances",
        "autoscaling:TerminateInstanceInAutoScalingGroup",
        "ec2:DeleteTags",
    ] {
        assert!(actions.contains(action), "{action} not in {actions:?}");
    }
    kubelet.abort();
    watch.abort();
}
