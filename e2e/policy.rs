//! The OptimizationPolicy controller end to end: the real `cloudoptim run` binary against a real API
//! server, kube-controller-manager, kube-scheduler and kwok, with a moto server behind it. Ten kwok
//! nodes are backed by moto instances in two Auto Scaling groups; Deployments with PDBs run on them.
//!
//! Phases, in order, against one operator (it reconciles every cluster-scoped policy it sees):
//! dry run changes nothing and says what it would do; consolidation drains one node at a time (budget
//! 1, watched for the whole run) down to `nodes.min`, every evicted pod is re-placed by the real
//! scheduler, a PDB with maxUnavailable 0 and a do-not-disrupt pod pin their nodes and the status says
//! why; the operator is killed in the middle of a drain and, restarted, finishes it and leaves no node
//! cordoned; zombies are reported, then (mode Delete) only this cluster's tagged ones are removed.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::time::Duration;

use cloudoptim::api::OptimizationPolicy;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use support::nodes::FakeNode;
use support::operator::{Operator, eventually};
use support::{ControlPlane, Moto, aws, create_namespace, events, unique};

const WAIT: Duration = Duration::from_secs(90);
const CLUSTER: &str = "e2e";
const TAINT: &str = "cloudoptim.io/disrupted";
const CORDONED_BY_US: &str = cloudoptim::drain::CORDONED_ANNOTATION;
/// The zombie grace floors (10m instances, 1h volumes) lowered so the zombie phase runs in seconds;
/// the floors themselves are unit-tested in `engine::zombies`.
const ZOMBIE_FLOORS_OFF: &[&str] = &[
    "--zombie-grace-floor-instances=0s",
    "--zombie-grace-floor-volumes=0s",
];

fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// (instance id, zone) of every instance in a group.
async fn group_instances(sdk: &aws_config::SdkConfig, group: &str) -> Vec<(String, String)> {
    let g = aws::describe_group(sdk, group).await.expect("group");
    g.instances()
        .iter()
        .filter_map(|i| {
            Some((
                i.instance_id()?.to_string(),
                i.availability_zone()?.to_string(),
            ))
        })
        .collect()
}

async fn instance_state(sdk: &aws_config::SdkConfig, id: &str) -> String {
    aws_sdk_ec2::Client::new(sdk)
        .describe_instances()
        .instance_ids(id)
        .send()
        .await
        .expect("describe instances")
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .find_map(|i| i.state()?.name().map(|n| n.as_str().to_string()))
        .unwrap_or_default()
}

async fn deployment(client: &Client, ns: &str, name: &str, replicas: i32, spec: serde_json::Value) {
    let mut template_spec = json!({
        "containers": [{"name": "c", "image": "pause", "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}}}],
        "terminationGracePeriodSeconds": 0
    });
    if let (Some(t), Some(extra)) = (template_spec.as_object_mut(), spec.as_object()) {
        t.extend(extra.clone());
    }
    let object: Deployment = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": template_spec}
        }
    }))
    .expect("deployment");
    Api::<Deployment>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &object)
        .await
        .expect("deployment created");
}

async fn pdb(client: &Client, ns: &str, app: &str, max_unavailable: i32) {
    let object: PodDisruptionBudget = serde_json::from_value(json!({
        "metadata": {"name": format!("{app}-pdb")},
        "spec": {"maxUnavailable": max_unavailable, "selector": {"matchLabels": {"app": app}}}
    }))
    .expect("pdb");
    Api::<PodDisruptionBudget>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &object)
        .await
        .expect("pdb created");
}

/// Pods of `app` that are Running on a node, and the total.
async fn running(client: &Client, ns: &str, app: &str) -> (usize, usize, BTreeSet<String>) {
    let pods = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .expect("pods")
        .items;
    let live: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    let running: Vec<&&Pod> = live
        .iter()
        .filter(|p| {
            p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                && p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some()
        })
        .collect();
    let nodes = running
        .iter()
        .filter_map(|p| p.spec.as_ref()?.node_name.clone())
        .collect();
    (running.len(), live.len(), nodes)
}

async fn node_named(client: &Client, name: &str) -> Option<Node> {
    Api::<Node>::all(client.clone())
        .get_opt(name)
        .await
        .ok()
        .flatten()
}

async fn pool_nodes(client: &Client, pool: &str) -> Vec<Node> {
    Api::<Node>::all(client.clone())
        .list(&ListParams::default().labels(&format!("e2e-pool={pool}")))
        .await
        .expect("nodes")
        .items
}

fn tainted(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|t| t.iter().any(|t| t.key == TAINT))
}

#[tokio::test]
async fn policy_consolidates_safely_resumes_after_a_crash_and_handles_zombies() {
    let Some(cp) = ControlPlane::shared() else {
        return;
    };
    let Some(moto) = Moto::start() else { return };
    moto.start_recording();
    let client = cp.client().await;
    let sdk = aws::sdk_config(&moto.endpoint).await;
    let pool = unique("pool");
    let launch = aws::launch_template(&sdk, &unique("lt")).await;
    let group_tags = tags(&[("cloudoptim.io/cluster", CLUSTER), ("e2e-pool", &pool)]);
    let groups = [format!("{pool}-a"), format!("{pool}-b")];
    for group in &groups {
        aws::create_group(&sdk, group, &launch, 5, &group_tags).await;
    }

    // Ten kwok nodes, one per moto instance.
    let mut names = Vec::new();
    let mut instance_of = BTreeMap::new();
    for group in &groups {
        for (id, zone) in group_instances(&sdk, group).await {
            let name = format!("{pool}-{}", names.len());
            let mut node = FakeNode::new(&name, &zone, &id);
            node.capacity_type = "on-demand".into();
            node.labels.insert("e2e-pool".into(), pool.clone());
            node.create(&client).await;
            instance_of.insert(name.clone(), id);
            names.push(name);
        }
    }
    assert_eq!(names.len(), 10, "moto launched 5 instances per group");
    let ns = create_namespace(&client, "opol").await;
    let on_pool = json!({"e2e-pool": pool});
    // Six web pods spread over the nodes; a guarded pod whose PDB allows nothing, pinned to node 3; a
    // do-not-disrupt pod pinned to node 5.
    deployment(
        &client,
        &ns,
        "web",
        6,
        json!({"nodeSelector": on_pool, "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": {"matchLabels": {"app": "web"}}}]}),
    )
    .await;
    // The web PDB allows all six at once: the planner keeps a node holding more pods of a PDB than it
    // allows, and where the scheduler re-places evicted web pods (ScheduleAnyway) is not ours to fix,
    // so a smaller allowance made the end state depend on placement.
    pdb(&client, &ns, "web", 6).await;
    deployment(
        &client,
        &ns,
        "guarded",
        1,
        json!({"nodeSelector": {"kubernetes.io/hostname": names[3]}}),
    )
    .await;
    pdb(&client, &ns, "guarded", 0).await;
    deployment(
        &client,
        &ns,
        "pinned",
        1,
        json!({"nodeSelector": {"kubernetes.io/hostname": names[5]}}),
    )
    .await;
    Api::<Deployment>::namespaced(client.clone(), &ns)
        .patch(
            "pinned",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"template": {"metadata": {"annotations": {"cloudoptim.io/do-not-disrupt": "true"}}}}})),
        )
        .await
        .expect("annotate pinned");
    // A DaemonSet pod on node 0 under a PDB that allows nothing: removing node 0 would kill it without
    // asking the PDB, so node 0 is pinned (until the PDB goes, before phase 3).
    let agent: k8s_openapi::api::apps::v1::DaemonSet = serde_json::from_value(json!({
        "metadata": {"name": "agent"},
        "spec": {
            "selector": {"matchLabels": {"app": "agent"}},
            "template": {"metadata": {"labels": {"app": "agent"}}, "spec": {
                "nodeSelector": {"kubernetes.io/hostname": names[0]},
                "containers": [{"name": "c", "image": "pause", "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}],
                "terminationGracePeriodSeconds": 0
            }}
        }
    }))
    .expect("daemonset");
    Api::<k8s_openapi::api::apps::v1::DaemonSet>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &agent)
        .await
        .expect("daemonset created");
    pdb(&client, &ns, "agent", 0).await;
    eventually(WAIT, "all pods running", || async {
        let web = running(&client, &ns, "web").await;
        let guarded = running(&client, &ns, "guarded").await;
        let pinned = running(&client, &ns, "pinned").await;
        let agent = running(&client, &ns, "agent").await;
        (web.0 == 6 && guarded.0 == 1 && pinned.0 == 1 && pinned.1 == 1 && agent.0 == 1)
            .then_some(())
    })
    .await;
    // The groups as they are before the operator starts (dry run must leave them so).
    let mut groups_before = Vec::new();
    for group in &groups {
        let g = aws::describe_group(&sdk, group).await.expect("group");
        groups_before.push((
            aws::split(&g),
            g.min_size(),
            g.max_size(),
            g.desired_capacity(),
        ));
    }

    // A zombie of this cluster (instance and volume), and look-alikes that are not ours.
    let ec2 = aws_sdk_ec2::Client::new(&sdk);
    let run = |cluster: Option<&'static str>| {
        let ec2 = ec2.clone();
        async move {
            let mut request = ec2
                .run_instances()
                .image_id("ami-12c6146b")
                .instance_type(aws_sdk_ec2::types::InstanceType::M5Large)
                .min_count(1)
                .max_count(1);
            if let Some(cluster) = cluster {
                request = request.tag_specifications(
                    aws_sdk_ec2::types::TagSpecification::builder()
                        .resource_type(aws_sdk_ec2::types::ResourceType::Instance)
                        .tags(
                            aws_sdk_ec2::types::Tag::builder()
                                .key("cloudoptim.io/cluster")
                                .value(cluster)
                                .build(),
                        )
                        .build(),
                );
            }
            request.send().await.expect("run instance").instances()[0]
                .instance_id()
                .expect("id")
                .to_string()
        }
    };
    let zombie = run(Some(CLUSTER)).await;
    let foreign = run(Some("another-cluster")).await;
    let untagged = run(None).await;
    let volume = |tagged: bool| {
        let ec2 = ec2.clone();
        async move {
            let mut request = ec2
                .create_volume()
                .availability_zone(format!("{}a", aws::REGION))
                .size(10);
            if tagged {
                request = request.tag_specifications(
                    aws_sdk_ec2::types::TagSpecification::builder()
                        .resource_type(aws_sdk_ec2::types::ResourceType::Volume)
                        .tags(
                            aws_sdk_ec2::types::Tag::builder()
                                .key("cloudoptim.io/cluster")
                                .value(CLUSTER)
                                .build(),
                        )
                        .build(),
                );
            }
            request
                .send()
                .await
                .expect("create volume")
                .volume_id()
                .expect("id")
                .to_string()
        }
    };
    let zombie_volume = volume(true).await;
    let other_volume = volume(false).await;
    // A tagged, unattached volume that a PersistentVolume names (a StatefulSet scaled to zero leaves
    // exactly this): it holds data and is never a zombie.
    let claimed_volume = volume(true).await;
    let pv: k8s_openapi::api::core::v1::PersistentVolume = serde_json::from_value(json!({
        "metadata": {"name": unique("data")},
        "spec": {"capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteOnce"],
                 "persistentVolumeReclaimPolicy": "Retain",
                 "csi": {"driver": "ebs.csi.aws.com", "volumeHandle": claimed_volume}}
    }))
    .expect("pv");
    Api::<k8s_openapi::api::core::v1::PersistentVolume>::all(client.clone())
        .create(&PostParams::default(), &pv)
        .await
        .expect("pv created");

    let template_name = unique("general");
    let template: cloudoptim::api::NodeTemplate = serde_json::from_value(json!({
        "apiVersion": "cloudoptim.io/v1alpha1", "kind": "NodeTemplate",
        "metadata": {"name": template_name, "labels": {"pool": pool}},
        "spec": {"autoScalingGroups": {"tagSelector": {"e2e-pool": pool}}, "requirements": {"families": ["m5"]}}
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
            "nodes": {"min": 3},
            "consolidation": {"interval": "2s", "consolidateAfter": "0s", "utilizationThreshold": 0.8},
            "disruption": {"budgets": [{"nodes": "1"}], "drainTimeout": "60s"},
            "zombies": {"mode": "Report", "gracePeriod": "0s"},
            "dryRun": true
        }
    }))
    .expect("policy");
    let policies: Api<OptimizationPolicy> = Api::all(client.clone());
    policies
        .create(&PostParams::default(), &policy)
        .await
        .expect("policy created");

    // Watch the pool's nodes for the whole run: never more than one draining at once (budget 1).
    let (most_draining, watch) =
        support::nodes::watch_most(&client, &format!("e2e-pool={pool}"), tainted);

    let mut operator = Operator::start(cp, &moto, CLUSTER, ZOMBIE_FLOORS_OFF);

    // Phase 1: dry run. It plans and says so; nothing is drained or terminated.
    eventually(WAIT, "ConsolidationPlanned event", || async {
        events(&client, &name)
            .await
            .into_iter()
            .find(|(r, m)| r == "ConsolidationPlanned" && m.contains("dry run"))
    })
    .await;
    let (status, message) = eventually(WAIT, "dry-run status", || async {
        support::policy_ready(&policies, &name)
            .await
            .map(|(s, _, m)| (s, m))
            .filter(|(_, m)| m.contains("dry run"))
    })
    .await;
    assert_eq!(status, "True", "{message}");
    // moto answers DescribeSpotPriceHistory for the nodes' type in every zone: every node has an average.
    assert!(
        message.contains("cost estimated at 30-day average Spot prices"),
        "{message}"
    );
    let p = policies.get(&name).await.expect("policy");
    let st = p.status.expect("status");
    assert_eq!(st.nodes.as_ref().map(|n| n.total), Some(10), "{st:?}");
    assert!(
        st.cost
            .as_ref()
            .is_some_and(|c| c.hourly > 0.0 && c.savings_hourly > 0.0),
        "{st:?}"
    );
    assert_eq!(pool_nodes(&client, &pool).await.len(), 10);
    assert!(!pool_nodes(&client, &pool).await.iter().any(tainted));
    // Dry run: the groups' sizes and MixedInstancesPolicy are as they were (consolidation changed
    // nothing through them; the NodeTemplate side of dry run is checked in e2e_node_template).
    let mut groups_now = Vec::new();
    for group in &groups {
        let g = aws::describe_group(&sdk, group).await.expect("group");
        groups_now.push((
            aws::split(&g),
            g.min_size(),
            g.max_size(),
            g.desired_capacity(),
        ));
    }
    assert_eq!(
        groups_now, groups_before,
        "dry run: the groups are unchanged"
    );
    // Zombies are reported: this cluster's instance and volume only.
    let zombies: BTreeSet<String> = st.zombies.iter().map(|z| z.id.clone()).collect();
    assert_eq!(
        zombies,
        [zombie.clone(), zombie_volume.clone()].into(),
        "{:?}",
        st.zombies
    );

    // Phase 2: act. One node at a time down to nodes.min = 3; node 3 (PDB) and node 5
    // (do-not-disrupt) stay and the status says why.
    policies
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"dryRun": false}})),
        )
        .await
        .expect("dry run off");
    eventually(
        Duration::from_secs(240),
        "consolidated to 3 nodes",
        || async {
            let nodes = pool_nodes(&client, &pool).await;
            (nodes.len() == 3 && !nodes.iter().any(tainted)).then_some(())
        },
    )
    .await;
    let left: BTreeSet<String> = pool_nodes(&client, &pool)
        .await
        .iter()
        .map(|n| n.name_any())
        .collect();
    assert_eq!(
        left,
        [names[0].clone(), names[3].clone(), names[5].clone()].into(),
        "the DaemonSet-PDB, PDB and do-not-disrupt nodes stay"
    );
    eventually(WAIT, "every evicted pod re-placed and running", || async {
        let web = running(&client, &ns, "web").await;
        (web.0 == 6 && web.1 == 6 && web.2.is_subset(&left)).then_some(())
    })
    .await;
    for (node, id) in &instance_of {
        if !left.contains(node) {
            let state = instance_state(&sdk, id).await;
            assert!(
                state == "terminated" || state == "shutting-down",
                "{node} ({id}) is {state}"
            );
        }
    }
    let (status, message) = eventually(WAIT, "status explains the kept nodes", || async {
        support::policy_ready(&policies, &name)
            .await
            .map(|(s, _, m)| (s, m))
            .filter(|(_, m)| m.contains("plan removes 0"))
    })
    .await;
    assert_eq!(status, "True");
    // Metric series follow the nodes: a removed node's cost series are gone from /metrics (sums over
    // them would otherwise keep counting it), the kept nodes' are there.
    let (_, exposition) = operator.get("/metrics").expect("metrics");
    for node in instance_of.keys() {
        let series = format!("node=\"{node}\"");
        assert_eq!(
            exposition.contains(&series),
            left.contains(node),
            "{node}: series present only while the node exists"
        );
    }
    assert!(
        message.contains(&format!("PDB {ns}/guarded-pdb allows 0 disruptions")),
        "{message}"
    );
    assert!(message.contains("do-not-disrupt pod"), "{message}");
    assert!(
        message.contains(&format!(
            "{} kept: pinned: DaemonSet pod {ns}/agent-",
            names[0]
        )) && message.contains(&format!(
            "covered by PDB {ns}/agent-pdb, which allows 0 disruptions"
        )),
        "{message}"
    );
    let st = policies
        .get(&name)
        .await
        .expect("p")
        .status
        .expect("status");
    let last = st.last_consolidation.expect("last consolidation");
    assert!(
        last.nodes_removed >= 1 && last.saved_hourly > 0.0,
        "{last:?}"
    );
    assert_eq!(st.nodes.map(|n| n.total), Some(3));
    let reasons: Vec<String> = events(&client, &name)
        .await
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert!(reasons.iter().any(|r| r == "Consolidated"), "{reasons:?}");
    // `kubectl get opol` shows nodes, spot %, $/h and savings through the printer columns.
    if let Some(kubectl) = support::peer_env_public("CLOUDOPTIM_KUBECTL") {
        let out = std::process::Command::new(kubectl)
            .args(["get", "opol", &name, "--kubeconfig"])
            .arg(cp.kubeconfig())
            .output()
            .expect("kubectl runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let table = String::from_utf8_lossy(&out.stdout);
        let mut lines = table.lines();
        let header: Vec<&str> = lines
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        let row: Vec<&str> = lines
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        assert_eq!(
            header,
            ["NAME", "NODES", "SPOT%", "$/H", "SAVINGS%", "READY", "AGE"],
            "{table}"
        );
        assert_eq!(row.get(1), Some(&"3"), "{table}");
        assert!(
            row.get(3)
                .and_then(|v| v.parse::<f64>().ok())
                .is_some_and(|v| v > 0.0),
            "{table}"
        );
        assert_eq!(row.get(5), Some(&"True"), "{table}");
    }
    assert_eq!(
        most_draining.load(Ordering::SeqCst),
        1,
        "budget 1: exactly one node drained at a time"
    );

    // The DaemonSet's PDB goes: node 0 is an ordinary node again for phase 3.
    Api::<PodDisruptionBudget>::namespaced(client.clone(), &ns)
        .delete("agent-pdb", &Default::default())
        .await
        .expect("agent PDB deleted");

    // Phase 3: killed mid-drain. Web pods get a finalizer so an evicted pod stays Terminating and the
    // drain waits; the operator is killed then, the finalizers are removed, and a new operator
    // finishes the drain and leaves nothing cordoned.
    Api::<Deployment>::namespaced(client.clone(), &ns)
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"template": {"metadata": {"finalizers": ["e2e.cloudoptim.io/hold"]}}}})),
        )
        .await
        .expect("finalizer on web pods");
    eventually(WAIT, "web rolled out with the finalizer", || async {
        let pods = Api::<Pod>::namespaced(client.clone(), &ns)
            .list(&ListParams::default().labels("app=web"))
            .await
            .ok()?
            .items;
        let held = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| p.finalizers().iter().any(|f| f == "e2e.cloudoptim.io/hold"))
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .count();
        (held == 6).then_some(())
    })
    .await;
    let release_all = || async {
        let api = Api::<Pod>::namespaced(client.clone(), &ns);
        for pod in api.list(&ListParams::default()).await.expect("pods").items {
            if !pod.finalizers().is_empty() {
                let _ = api
                    .patch(
                        &pod.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
                    )
                    .await;
            }
        }
    };
    policies
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"nodes": {"min": 2}}})),
        )
        .await
        .expect("nodes.min 2");
    let draining = eventually(WAIT, "a drain stuck on a terminating pod", || async {
        let node = pool_nodes(&client, &pool).await.into_iter().find(tainted)?;
        let pods = Api::<Pod>::namespaced(client.clone(), &ns)
            .list(&ListParams::default().labels("app=web"))
            .await
            .ok()?
            .items;
        pods.iter()
            .any(|p| {
                p.metadata.deletion_timestamp.is_some()
                    && p.spec.as_ref().and_then(|s| s.node_name.as_deref())
                        == Some(&node.name_any())
            })
            .then(|| node.name_any())
    })
    .await;
    operator.kill();
    assert!(
        pool_nodes(&client, &pool)
            .await
            .iter()
            .any(|n| n.name_any() == draining && tainted(n)),
        "the killed operator left {draining} cordoned and tainted"
    );
    release_all().await;
    Api::<Deployment>::namespaced(client.clone(), &ns)
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"template": {"metadata": {"finalizers": null}}}})),
        )
        .await
        .expect("finalizer removed from the template");
    let operator = Operator::start(cp, &moto, CLUSTER, ZOMBIE_FLOORS_OFF);
    eventually(
        Duration::from_secs(120),
        "the interrupted drain finished",
        || async {
            let nodes = pool_nodes(&client, &pool).await;
            (!nodes.iter().any(|n| n.name_any() == draining) && !nodes.iter().any(tainted))
                .then_some(())
        },
    )
    .await;
    let id = &instance_of[&draining];
    let state = instance_state(&sdk, id).await;
    assert!(
        state == "terminated" || state == "shutting-down",
        "{draining} ({id}) is {state}"
    );
    eventually(WAIT, "web back to 6 running pods", || async {
        (running(&client, &ns, "web").await.0 == 6).then_some(())
    })
    .await;
    release_all().await;

    // Phase 4: zombies in Delete mode: only this cluster's tagged instance and volume go.
    policies
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"zombies": {"mode": "Delete"}}})),
        )
        .await
        .expect("zombies Delete");
    eventually(WAIT, "the zombie instance terminated", || async {
        let state = instance_state(&sdk, &zombie).await;
        (state == "terminated" || state == "shutting-down").then_some(())
    })
    .await;
    eventually(WAIT, "the zombie volume deleted", || async {
        let left = ec2
            .describe_volumes()
            .send()
            .await
            .ok()?
            .volumes()
            .iter()
            .any(|v| v.volume_id() == Some(zombie_volume.as_str()));
        (!left).then_some(())
    })
    .await;
    assert_eq!(instance_state(&sdk, &foreign).await, "running");
    assert_eq!(instance_state(&sdk, &untagged).await, "running");
    // The deleted zombie volume left a snapshot tagged with the cluster and the volume; the volume a
    // PersistentVolume names is still there.
    let snapshots = ec2
        .describe_snapshots()
        .owner_ids("self")
        .send()
        .await
        .expect("snapshots");
    assert!(
        snapshots
            .snapshots()
            .iter()
            .any(|s| s.volume_id() == Some(zombie_volume.as_str())
                && s.tags().iter().any(
                    |t| t.key() == Some("cloudoptim.io/cluster") && t.value() == Some(CLUSTER)
                )),
        "a snapshot of {zombie_volume} before its deletion: {:?}",
        snapshots.snapshots()
    );
    let volumes = ec2.describe_volumes().send().await.expect("volumes");
    assert!(
        volumes
            .volumes()
            .iter()
            .any(|v| v.volume_id() == Some(other_volume.as_str())),
        "the untagged volume stays"
    );
    assert!(
        volumes
            .volumes()
            .iter()
            .any(|v| v.volume_id() == Some(claimed_volume.as_str())),
        "the volume a PersistentVolume names stays in Delete mode"
    );
    let reasons: Vec<String> = events(&client, &name)
        .await
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert!(reasons.iter().any(|r| r == "ZombieFound"), "{reasons:?}");
    assert!(
        operator
            .metric("cloudoptim_consolidation_actions_total{action=\"terminate\",result=\"ok\"}")
            >= 1.0
    );
    assert!(
        operator.metric("cloudoptim_consolidation_actions_total{action=\"verify\",result=\"ok\"}")
            >= 1.0,
        "the group no longer lists the terminated instance"
    );
    watch.abort();

    // Phase 5: a drain a previous run left behind, over today's budget (now 0), is released, not
    // resumed: node 3 looks as a crash would leave it (cordoned, consolidation's taint).
    policies
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"disruption": {"budgets": [{"nodes": "0"}]}}})),
        )
        .await
        .expect("budget 0");
    let left_behind = names[3].clone();
    let mut marked_node = Api::<Node>::all(client.clone())
        .get(&left_behind)
        .await
        .expect("node 3");
    let spec = marked_node.spec.get_or_insert_with(Default::default);
    spec.unschedulable = Some(true);
    spec.taints.get_or_insert_with(Vec::new).push(
        serde_json::from_value(
            json!({"key": TAINT, "value": "consolidation", "effect": "NoSchedule"}),
        )
        .expect("taint"),
    );
    marked_node
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .extend([
            (
                format!("{TAINT}-reason"),
                "left behind by a crash".to_string(),
            ),
            (format!("{TAINT}-at"), chrono::Utc::now().to_rfc3339()),
            // What the drainer records when it is the one that cordoned.
            (CORDONED_BY_US.to_string(), "true".to_string()),
        ]);
    Api::<Node>::all(client.clone())
        .replace(&left_behind, &PostParams::default(), &marked_node)
        .await
        .expect("node 3 marked");
    eventually(WAIT, "the left-behind drain released", || async {
        let n = node_named(&client, &left_behind).await?;
        let cordoned = n.spec.as_ref().and_then(|s| s.unschedulable) == Some(true);
        (!tainted(&n) && !cordoned).then_some(())
    })
    .await;
    let reasons: Vec<String> = events(&client, &name)
        .await
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert!(reasons.iter().any(|r| r == "DrainReleased"), "{reasons:?}");
    assert_eq!(
        instance_state(&sdk, &instance_of[&left_behind]).await,
        "running",
        "not drained and terminated: the budget is 0"
    );

    // `cloudoptim snapshot` writes this cluster as a List that `cloudoptim plan` reads.
    let file = cp.dir.join("snapshot.yaml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cloudoptim"))
        .args(["snapshot", "-o"])
        .arg(&file)
        .env("KUBECONFIG", cp.kubeconfig())
        .output()
        .expect("snapshot runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&file).expect("snapshot written");
    assert!(
        !text.contains("managedFields") && !text.contains("image: pause"),
        "stripped"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cloudoptim"))
        .args(["plan", "-o", "json", "--snapshot"])
        .arg(&file)
        .output()
        .expect("plan runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("plan JSON");
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .expect("nodes")
        .items
        .len();
    assert_eq!(report["nodes"].as_u64(), Some(nodes as u64), "{report}");

    // An outside observer's view: every AWS request the operator made (moto's request log) is granted
    // by the shipped IAM policy.
    let made = moto.assert_operator_actions_allowed();
    assert!(made.contains("ec2:DeleteVolume"), "{made:?}");
}
