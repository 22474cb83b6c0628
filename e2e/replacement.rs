//! Replacement (replace before delete) end to end: the real `cloudoptim run` binary against a real API
//! server, kube-controller-manager, kube-scheduler and kwok, with moto behind it. Three on-demand
//! m5.4xlarge kwok nodes, backed by the moto instances of one Auto Scaling group, each run six 1.5-vCPU
//! pods of a Deployment (about 57% requested: no node can be emptied into the others). The operator
//! launches one cheaper node into the group and, once it is Ready, drains and removes the three.
//!
//! The harness plays the kubelet: a task joins a kwok Node (its size from the catalog, its providerID
//! the instance) for each instance the operator launches, but only while `join` is on.
//!
//! The operator runs as the chart runs it: two replicas with the chart's rendered arguments, electing
//! a leader through their Lease.
//!
//! Phases, against one policy:
//! 1. join off: the leader launches a replacement and is killed (SIGKILL) right after the launch; the
//!    standby takes over and finds it from its tags alone, and at the Ready deadline terminates it (the group
//!    shrinks back) and leaves the old nodes as they were: none cordoned, all pods where they were.
//!    Then (phase 1b in the code) the next replacement gets a Node no kubelet runs (never Ready)
//!    with a pod bound to it: past the deadline the operator waits rather than terminate it under
//!    the pod, and once the pod is deleted it aborts;
//! 2. join on: the next replacement's node joins; the operator drains the three nodes (killed again at
//!    the first cordon; the standby goes on) and removes them through the group with decrement; all eighteen pods
//!    run on the new node, the scheduler never found a pod unschedulable, the PDB never let more than
//!    one pod be unavailable, and AWS shows one instance in the group with no replacement tag left;
//! 3. a second pool converges to a Spot mix one replacement at a time, and moto's request log shows
//!    one DescribeInstances per policy pass.

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
use support::{ControlPlane, Moto, aws, create_namespace, events, unique};

const WAIT: Duration = Duration::from_secs(120);
const CLUSTER: &str = "e2e";
const TAINT: &str = "cloudoptim.io/disrupted";
const REPLICAS: i32 = 18;

/// An instance of this cluster the operator launched.
#[derive(Debug, Clone)]
struct Launched {
    id: String,
    instance_type: String,
    zone: String,
    state: String,
    spot: bool,
    tags: BTreeMap<String, String>,
}

/// Instances of this cluster not in `known`: the ones the operator launched (as replacements; their
/// replacement tags may be gone once done).
async fn launched(sdk: &aws_config::SdkConfig, known: &BTreeSet<String>) -> Vec<Launched> {
    let out = aws_sdk_ec2::Client::new(sdk)
        .describe_instances()
        .send()
        .await
        .expect("describe instances");
    out.reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter_map(|i| {
            let tags: BTreeMap<String, String> = i
                .tags()
                .iter()
                .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
                .collect();
            let l = Launched {
                id: i.instance_id()?.to_string(),
                instance_type: i.instance_type()?.as_str().to_string(),
                zone: i.placement()?.availability_zone()?.to_string(),
                state: i.state()?.name()?.as_str().to_string(),
                spot: i.instance_lifecycle().is_some_and(|l| l.as_str() == "spot"),
                tags,
            };
            let ours = l.tags.get("cloudoptim.io/cluster").map(String::as_str) == Some(CLUSTER);
            (ours && !known.contains(&l.id)).then_some(l)
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

/// The operator arguments the chart renders for a release in `namespace`, less those the harness
/// sets itself (subcommand, logging, metrics address; cluster and region, checked equal to its own).
fn chart_operator_args(namespace: &str) -> Vec<String> {
    let rendered = support::chart::render(
        &support::rbac::release(namespace),
        namespace,
        &[
            &format!("clusterName={CLUSTER}"),
            &format!("region={}", aws::REGION),
        ],
    );
    let all = support::chart::operator_args(&rendered);
    for own in [
        format!("--cluster-name={CLUSTER}"),
        format!("--region={}", aws::REGION),
    ] {
        assert!(all.contains(&own), "{own} in {all:?}");
    }
    let harness = ["--log-", "--metrics-addr=", "--cluster-name=", "--region="];
    let args: Vec<String> = all
        .into_iter()
        .filter(|a| a != "run" && !harness.iter().any(|h| a.starts_with(h)))
        .collect();
    assert!(args.iter().any(|a| a == "--leader-elect"), "{args:?}");
    args
}

/// Replacement `id` was aborted: terminated and out of the group, which holds its `originals` and
/// otherwise only replacements of ours (with decrement: the group launched no instance of its own). The
/// next replacement may be launched a moment later (while no Node joins, each is aborted in turn), so
/// the group's size is not the test.
async fn aborted(
    sdk: &aws_config::SdkConfig,
    group: &str,
    originals: &BTreeSet<String>,
    id: &str,
) -> bool {
    let mine = launched(sdk, originals).await;
    let state = mine.iter().find(|l| l.id == id).map(|l| l.state.as_str());
    let replacements: BTreeSet<&str> = mine
        .iter()
        .filter(|l| l.tags.contains_key("cloudoptim.io/replaces"))
        .map(|l| l.id.as_str())
        .collect();
    let (_, instances) = group_state(sdk, group).await;
    matches!(state, Some("terminated" | "shutting-down"))
        && !instances.contains(id)
        && originals.is_subset(&instances)
        && instances
            .iter()
            .all(|i| originals.contains(i) || replacements.contains(i.as_str()))
}

/// Assert that an Event `reason` about `object` mentions `text`.
async fn assert_event(client: &Client, object: &str, reason: &str, text: &str) {
    let all = events(client, object).await;
    assert!(
        all.iter().any(|(r, m)| r == reason && m.contains(text)),
        "no {reason} Event mentioning {text}: {all:?}"
    );
}

/// The index of the replica that leads (its `cloudoptim_leader` gauge is 1), once exactly one does.
async fn leader(replicas: &[Operator]) -> usize {
    eventually(WAIT, "exactly one leader", || async {
        let leading: Vec<usize> = replicas
            .iter()
            .enumerate()
            .filter(|(_, r)| r.metric("cloudoptim_leader") == 1.0)
            .map(|(i, _)| i)
            .collect();
        (leading.len() == 1).then(|| leading[0])
    })
    .await
}

/// Pods of the web Deployment: (running, total live, the nodes they run on).
async fn web_pods(client: &Client, ns: &str) -> (usize, usize, BTreeSet<String>) {
    app_pods(client, ns, "web").await
}

/// Pods of Deployment `app`: (running, total live, the nodes they run on).
async fn app_pods(client: &Client, ns: &str, app: &str) -> (usize, usize, BTreeSet<String>) {
    let pods = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&format!("app={app}")))
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

/// Scale Deployment `app` to `per_node` pods on each of `targets`, in turn, with every node of `all`
/// but the target cordoned (the scheduler packs; this spreads), then uncordon `all`.
async fn place(
    client: &Client,
    ns: &str,
    app: &str,
    all: &[String],
    targets: &[String],
    per_node: usize,
) {
    let nodes_api: Api<Node> = Api::all(client.clone());
    let cordon = |name: String, on: bool| {
        let nodes_api = nodes_api.clone();
        async move {
            nodes_api
                .patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"unschedulable": on}})),
                )
                .await
                .expect("cordon for placement");
        }
    };
    for (step, open) in targets.iter().enumerate() {
        for name in all {
            cordon(name.clone(), name != open).await;
        }
        // The node lifecycle controller removes the unschedulable taint a little after the uncordon;
        // scaling before that would make the scheduler report the pods unschedulable for a moment.
        eventually(WAIT, "the open node without taints", || async {
            let node = nodes_api.get(open).await.ok()?;
            let taints = node.spec.and_then(|s| s.taints).unwrap_or_default();
            taints.is_empty().then_some(())
        })
        .await;
        let replicas = per_node * (step + 1);
        Api::<Deployment>::namespaced(client.clone(), ns)
            .patch(
                app,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": replicas}})),
            )
            .await
            .expect("scale");
        eventually(WAIT, &format!("{replicas} {app} pods running"), || async {
            let (running, live, _) = app_pods(client, ns, app).await;
            (running == replicas && live == replicas).then_some(())
        })
        .await;
    }
    for name in all {
        cordon(name.clone(), false).await;
    }
    // The deployment controller reports the last step's pods a little after they run (seconds on a
    // loaded machine): an observer started before that would read the previous step's count as pods
    // lost.
    let replicas = (per_node * targets.len()) as i32;
    eventually(
        WAIT,
        &format!("{app} reports {replicas} available"),
        || async {
            let d = Api::<Deployment>::namespaced(client.clone(), ns)
                .get(app)
                .await
                .ok()?;
            let status = d.status?;
            (status.observed_generation == d.metadata.generation
                && status.available_replicas == Some(replicas))
            .then_some(())
        },
    )
    .await;
}

/// A Deployment of `app` with no replicas yet, its pods requesting `cpu` and `memory`.
async fn deployment(client: &Client, ns: &str, app: &str, cpu: &str, memory: &str) {
    let object: Deployment = serde_json::from_value(json!({
        "metadata": {"name": app},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": app}},
            "template": {"metadata": {"labels": {"app": app}}, "spec": {
                "containers": [{"name": "c", "image": app, "resources": {"requests": {"cpu": cpu, "memory": memory}}}],
                "terminationGracePeriodSeconds": 0
            }}
        }
    }))
    .expect("deployment");
    Api::<Deployment>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &object)
        .await
        .expect("deployment created");
}

fn cordoned(node: &Node) -> bool {
    let spec = node.spec.as_ref();
    spec.and_then(|s| s.unschedulable).unwrap_or(false)
        || spec
            .and_then(|s| s.taints.as_ref())
            .is_some_and(|t| t.iter().any(|t| t.key == TAINT))
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
            for l in launched(&sdk, &known).await {
                let Launched {
                    id,
                    instance_type,
                    zone,
                    state,
                    spot,
                    tags,
                } = l;
                let replacement = tags.contains_key("cloudoptim.io/replaces");
                if !replacement || state != "running" && state != "pending" || joined.contains(&id)
                {
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
                node.capacity_type = if spot { "spot" } else { "on-demand" }.into();
                // Labelled like the pool of the group that adopts it.
                let group = tags
                    .get("cloudoptim.io/replacement-group")
                    .cloned()
                    .unwrap_or_default();
                let pool = if group.ends_with("-b") {
                    format!("{pool}-b")
                } else {
                    pool.clone()
                };
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
    deployment(&client, &ns, "web", "1500m", "2Gi").await;
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
    let order: Vec<String> = old_nodes.iter().cloned().collect();
    place(&client, &ns, "web", &order, &order, 6).await;
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

    // The operator as the chart runs it: two replicas with the arguments the chart renders (leader
    // election among them), their Lease in the release namespace and their own pod names, as the
    // downward API gives them.
    let release_ns = create_namespace(&client, "repl-op").await;
    let chart_args = chart_operator_args(&release_ns);
    let replica = |pod: &str| {
        let mut args = chart_args.clone();
        args.push(format!("--namespace={release_ns}"));
        args.push(format!("--identity={pod}"));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Operator::start(cp, &moto, CLUSTER, &args)
    };
    let mut replicas = vec![replica("cloudoptim-a"), replica("cloudoptim-b")];

    // Phase 1: the first replacement is launched; the leader dies (SIGKILL) right after.
    let first = eventually(WAIT, "a replacement launched", || async {
        launched(&sdk, &originals).await.into_iter().next()
    })
    .await;
    let lead = leader(&replicas).await;
    replicas.remove(lead).kill();
    let (first_id, first_type, first_tags) = (first.id, first.instance_type, first.tags);
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

    // The standby takes over once the Lease expires and knows the replacement from its tags alone: it
    // never becomes Ready, so at the deadline it is terminated through the group and nothing else
    // changes. The Deployment's new pod joins as the next standby.
    leader(&replicas).await;
    replicas.push(replica("cloudoptim-c"));
    eventually(WAIT, "the unready replacement terminated", || async {
        aborted(&sdk, &group, &originals, &first_id)
            .await
            .then_some(())
    })
    .await;
    assert_event(&client, &name, "ReplacementAborted", &first_id).await;
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

    // Phase 1b: a new node that runs a pod is never terminated under it. The next replacement gets a
    // Node that no kubelet runs (not kwok's: never Ready), and a pod is bound to it, as a drain that
    // gave up may have left there. Past the deadline the operator waits instead of aborting; once the
    // pod is gone, it aborts.
    let second = eventually(WAIT, "the next replacement launched", || async {
        launched(&sdk, &originals)
            .await
            .into_iter()
            .find(|l| l.id != first_id && l.state == "running")
    })
    .await;
    let mut unready = FakeNode::new(&format!("{pool}-unready"), &second.zone, &second.id).to_node();
    unready.metadata.annotations = None;
    if let Some(labels) = unready.metadata.labels.as_mut() {
        labels.insert("e2e-pool".into(), pool.clone());
    }
    Api::<Node>::all(client.clone())
        .create(&PostParams::default(), &unready)
        .await
        .expect("unready node created");
    let stuck: Pod = serde_json::from_value(json!({
        "metadata": {"name": "stuck"},
        "spec": {"nodeName": unready.name_any(), "terminationGracePeriodSeconds": 0,
                 "containers": [{"name": "c", "image": "stuck"}]}
    }))
    .expect("pod");
    let pods_api = Api::<Pod>::namespaced(client.clone(), &ns);
    pods_api
        .create(&PostParams::default(), &stuck)
        .await
        .expect("pod bound to the unready node");
    eventually(
        WAIT,
        "the operator waits for the pod past the deadline",
        || async {
            let (_, _, message) = support::policy_ready(&policies, &name).await?;
            message
                .contains(&format!(
                    "{} ({}) is not Ready but runs 1 pod(s)",
                    second.id, second.instance_type
                ))
                .then_some(())
        },
    )
    .await;
    assert_event(&client, &name, "ReplacementWaiting", &second.id).await;
    // Seen from AWS at that moment, past the 20 s deadline: still running, still in the group.
    let (desired, instances) = group_state(&sdk, &group).await;
    assert_eq!(desired, 4, "the group still holds the replacement");
    assert!(instances.contains(&second.id));
    pods_api
        .delete("stuck", &kube::api::DeleteParams::default().grace_period(0))
        .await
        .expect("pod deleted");
    eventually(WAIT, "the emptied replacement aborted", || async {
        let gone = Api::<Node>::all(client.clone())
            .get_opt(&unready.name_any())
            .await
            .ok()?
            .is_none();
        (gone && aborted(&sdk, &group, &originals, &second.id).await).then_some(())
    })
    .await;
    // (Not its Event: repeats of a reason fold into the first one's series, which names the first.)
    assert_eq!(web_pods(&client, &ns).await.2, old_nodes, "no pod moved");

    // Phase 2: nodes join now. The leader is killed at the first cordon of a replaced node; the
    // standby finishes: the three old nodes go, all pods run on the new one.
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
    let lead = leader(&replicas).await;
    replicas.remove(lead).kill();
    // The standby leads once the Lease expires; the Deployment's new pod then joins as the standby.
    leader(&replicas).await;
    replicas.push(replica("cloudoptim-d"));
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
    // At least the one phase 1 saw (a replacement launched between the abort and the harness turning
    // joins on may be aborted too; each abort left the old nodes as they were).
    assert!(realized.replacements_aborted >= 1, "{realized:?}");
    assert!(realized.nodes_removed >= 3, "{realized:?}");
    assert!(realized.saved_hourly > 0.0, "{realized:?}");
    let new = launched(&sdk, &originals)
        .await
        .into_iter()
        .find(|l| l.state == "running")
        .expect("the new instance runs");
    let (new_id, new_type, tags) = (new.id, new.instance_type, new.tags);
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
    assert_event(&client, &name, "Replaced", &new_id).await;
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
    // The replica that finished it counted it (no leader was killed since).
    let operator = &replicas[leader(&replicas).await];
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

    // Phase 3: Spot mix convergence. A second pool of four on-demand m5.xlarge, one pod each, under its
    // own template and policy (0% Spot, nodes.min 4, budget 1), is raised to 100% Spot above an
    // on-demand base of 1: three of its nodes are replaced one at a time by Spot nodes, never more than
    // one in disruption, and the base stays on-demand. (Not 80%: moto 5.2.5 computes a mixed group's
    // size with the on-demand share rounded down, so at 80% a group of 4 shrinks to 3 on its own; a
    // base plus 100% above it is exact at every size.)
    // From here on, moto's log also counts the operator's DescribeInstances against its policy
    // passes: each pass describes the cluster's instances once, for reading, replacement and the
    // zombie sweep together.
    moto.start_recording();
    let passes =
        || operator.metric(r#"cloudoptim_reconcile_duration_seconds_count{controller="policy"}"#);
    let passes_before = passes();
    let pool_b = format!("{pool}-b");
    let tags_b: BTreeMap<String, String> = [
        ("cloudoptim.io/cluster".to_string(), CLUSTER.to_string()),
        ("e2e-pool".to_string(), pool_b.clone()),
    ]
    .into();
    aws::create_group(&sdk, &pool_b, &launch, 4, &tags_b).await;
    let (_, originals_b) = group_state(&sdk, &pool_b).await;
    let g = aws::describe_group(&sdk, &pool_b).await.expect("group");
    let mut nodes_b = Vec::new();
    for (i, instance) in g.instances().iter().enumerate() {
        let name = format!("{pool_b}-{i}");
        let mut node = FakeNode::new(
            &name,
            instance.availability_zone().expect("zone"),
            instance.instance_id().expect("id"),
        );
        node.instance_type = "m5.xlarge".into();
        node.capacity_type = "on-demand".into();
        node.cpu = "3920m".into();
        node.memory = "14Gi".into();
        node.labels.insert("e2e-pool".into(), pool_b.clone());
        node.create(&client).await;
        nodes_b.push(name);
    }
    deployment(&client, &ns, "api", "500m", "1Gi").await;
    let mut everyone = nodes_b.clone();
    everyone.push(new_node.name_any());
    place(&client, &ns, "api", &everyone, &nodes_b, 1).await;
    let template_b: cloudoptim::api::NodeTemplate = serde_json::from_value(json!({
        "apiVersion": "cloudoptim.io/v1alpha1", "kind": "NodeTemplate",
        "metadata": {"name": unique("spotty"), "labels": {"pool": pool_b}},
        "spec": {"autoScalingGroups": {"tagSelector": {"e2e-pool": pool_b}},
                 "requirements": {"families": ["m5"], "currentGenerationOnly": false}}
    }))
    .expect("template");
    Api::<cloudoptim::api::NodeTemplate>::all(client.clone())
        .create(&PostParams::default(), &template_b)
        .await
        .expect("template created");
    let name_b = unique("spotmix");
    let policy_b: OptimizationPolicy = serde_json::from_value(json!({
        "apiVersion": "cloudoptim.io/v1alpha1", "kind": "OptimizationPolicy",
        "metadata": {"name": name_b},
        "spec": {
            "nodeTemplateSelector": {"matchLabels": {"pool": pool_b}},
            "spot": {"percentage": 0},
            "nodes": {"min": 4},
            "consolidation": {"interval": "2s", "consolidateAfter": "0s",
                              "replacement": {"readyTimeout": "60s"}},
            "disruption": {"budgets": [{"nodes": "1"}], "drainTimeout": "60s"}
        }
    }))
    .expect("policy");
    policies
        .create(&PostParams::default(), &policy_b)
        .await
        .expect("policy created");
    eventually(
        WAIT,
        "the second policy sees four on-demand nodes",
        || async {
            let st = policies.get(&name_b).await.ok()?.status?;
            (st.nodes
                .as_ref()
                .is_some_and(|n| n.total == 4 && n.spot == 0))
            .then_some(())
        },
    )
    .await;
    // Budget 1, watched for the whole convergence: never two of the pool's nodes in disruption.
    let (most_disrupted, watch_b) =
        support::nodes::watch_most(&client, &format!("e2e-pool={pool_b}"), cordoned);
    policies
        .patch(
            &name_b,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"spot": {"percentage": 100, "onDemandBase": 1}}})),
        )
        .await
        .expect("raise to 100% Spot above a base of 1");
    let most_in_flight = Arc::new(AtomicI32::new(0));
    let known: BTreeSet<String> = originals.union(&originals_b).cloned().collect();
    eventually(
        Duration::from_secs(300),
        "the second pool converged to 3 Spot of 4",
        || async {
            let in_flight = launched(&sdk, &known)
                .await
                .iter()
                .filter(|l| l.state == "running" && l.tags.contains_key("cloudoptim.io/replaces"))
                .count() as i32;
            most_in_flight.fetch_max(in_flight, Ordering::SeqCst);
            let nodes = Api::<Node>::all(client.clone())
                .list(&ListParams::default().labels(&format!("e2e-pool={pool_b}")))
                .await
                .ok()?
                .items;
            let spot = nodes
                .iter()
                .filter(|n| {
                    n.labels()
                        .get("karpenter.sh/capacity-type")
                        .map(String::as_str)
                        == Some("spot")
                })
                .count();
            let (desired, instances) = group_state(&sdk, &pool_b).await;
            (nodes.len() == 4
                && spot == 3
                && desired == 4
                && instances.len() == 4
                && in_flight == 0)
                .then_some(())
        },
    )
    .await;
    assert!(
        most_disrupted.load(Ordering::SeqCst) <= 1,
        "budget 1 exceeded"
    );
    assert_eq!(
        most_in_flight.load(Ordering::SeqCst),
        1,
        "one replacement at a time"
    );
    // AWS and the Nodes show the end first; the status is written at the end of the operator's next
    // pass, so it is waited for (CI saw it one pass behind: the last replacement still Draining).
    let st = eventually(
        WAIT,
        "the status caught up: three replacements done, none in flight",
        || async {
            let st = policies.get(&name_b).await.ok()?.status?;
            (st.replacements_in_flight.is_empty()
                && st.realized_savings.as_ref().map(|r| r.replacements) == Some(3))
            .then_some(st)
        },
    )
    .await;
    assert_eq!(st.nodes.as_ref().map(|n| n.spot), Some(3), "{st:?}");
    // Events of one reason are folded into a series (one object, the first note), so their count is
    // not the replacements': the metric is.
    assert!(
        events(&client, &name_b)
            .await
            .iter()
            .any(|(r, m)| r == "Replaced" && m.contains("spotMix")),
        "{:?}",
        events(&client, &name_b).await
    );
    assert_eq!(
        operator.metric("cloudoptim_replacements_total{reason=\"spotMix\",result=\"replaced\"}"),
        3.0
    );
    let (running, live, _) = app_pods(&client, &ns, "api").await;
    assert_eq!((running, live), (4, 4), "every api pod runs");
    // Converged means it stays: the status reports nothing more to do (no plan, nothing in flight).
    let st = eventually(WAIT, "the converged policy plans nothing more", || async {
        let st = policies.get(&name_b).await.ok()?.status?;
        (st.planned_replacements.is_empty() && st.replacements_in_flight.is_empty()).then_some(st)
    })
    .await;
    assert_eq!(
        st.nodes.as_ref().map(|n| (n.total, n.spot)),
        Some((4, 3)),
        "{st:?}"
    );
    // The log is read before the count: a pass that described but has not finished yet is the only
    // slack (two policies may each have one in flight).
    let describes = moto
        .recorded_requests()
        .iter()
        .filter(|(agents, op)| agents.contains("app/") && op == "DescribeInstances")
        .count() as f64;
    let passes_during = passes() - passes_before;
    assert!(passes_during >= 5.0, "{passes_during} policy passes");
    assert!(
        describes >= 1.0 && describes <= passes_during + 2.0,
        "{describes} DescribeInstances calls in {passes_during} policy passes"
    );
    watch_b.abort();
    kubelet.abort();
    watch.abort();
}
