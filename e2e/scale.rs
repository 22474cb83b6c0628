//! Scale run of the OptimizationPolicy controller (issue: 1,000 nodes / 20,000 pods watched; report the
//! operator's RSS after a plan and its peak RSS (VmHWM, the kernel's high-water mark for the operator
//! process), and the plan time, measured and projected to 5,000 nodes / 100,000 pods, target peak <
//! 256 MiB there). Ignored in the normal suite; `bench/scale.sh` runs it and checks the peak; the test
//! itself prints, asserting only that the operator saw the whole cluster.
//!
//! The cluster is its own API server with kwok and no controller-manager or scheduler, so nothing acts on
//! the objects: 1,000 kwok nodes backed by moto instances in 10 Auto Scaling groups, and 20,000 pods
//! bound directly to them (`spec.nodeName`), owned by (inert) ReplicaSets so the planner may move them.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cloudoptim::api::OptimizationPolicy;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{Api, PostParams};
use serde_json::json;
use support::nodes::FakeNode;
use support::operator::{Operator, eventually};
use support::{Moto, aws, unique};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A `kB` field of `/proc/<pid>/status` in MiB (0 when unreadable).
fn status_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Resident memory now.
fn rss_mib(pid: u32) -> f64 {
    status_mib(pid, "VmRSS:")
}

/// Peak resident memory since the process started (the kernel's high-water mark).
fn peak_mib(pid: u32) -> f64 {
    status_mib(pid, "VmHWM:")
}

/// The `plan_ms` of the operator's latest "policy reconciled" log line with `nodes` nodes.
fn plan_ms(log: &str, nodes: usize) -> Option<f64> {
    log.lines()
        .rev()
        .filter(|l| l.contains("policy reconciled"))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["nodes"].as_u64() == Some(nodes as u64))
        .find_map(|v| v["plan_ms"].as_f64())
}

#[tokio::test]
#[ignore = "scale run: bench/scale.sh"]
async fn scale_run() {
    let nodes = env_usize("CLOUDOPTIM_SCALE_NODES", 1000);
    let pods_per_node = env_usize("CLOUDOPTIM_SCALE_PODS_PER_NODE", 20);
    let Some(cp) = support::cluster_with("scale", "etcd apiserver kwok").await else {
        return;
    };
    let Some(moto) = Moto::start() else { return };
    let client = cp.client().await;
    let sdk = aws::sdk_config(&moto.endpoint).await;
    let started = Instant::now();

    // Groups and their instances.
    let pool = unique("scale");
    let launch = aws::launch_template(&sdk, &unique("lt")).await;
    let groups = nodes.div_ceil(100);
    let mut instances = Vec::new();
    for g in 0..groups {
        let name = format!("{pool}-{g}");
        let size = (nodes - g * 100).min(100) as i32;
        let tags = [("scale-pool".to_string(), pool.clone())].into();
        aws::create_group(&sdk, &name, &launch, size, &tags).await;
        let group = aws::describe_group(&sdk, &name).await.expect("group");
        instances.extend(group.instances().iter().filter_map(|i| {
            Some((
                i.instance_id()?.to_string(),
                i.availability_zone()?.to_string(),
            ))
        }));
    }
    assert_eq!(instances.len(), nodes, "moto launched every instance");
    let groups_done = started.elapsed();

    // Nodes.
    let node_names: Vec<String> = (0..nodes).map(|i| format!("{pool}-n{i}")).collect();
    futures::stream::iter(node_names.iter().zip(&instances))
        .for_each_concurrent(32, |(name, (id, zone))| {
            let client = client.clone();
            async move {
                let mut node = FakeNode::new(name, zone, id);
                node.instance_type = "m5.4xlarge".into();
                node.cpu = "16".into();
                node.memory = "64Gi".into();
                node.create(&client).await;
            }
        })
        .await;
    let nodes_done = started.elapsed();

    // ReplicaSets (inert: no controller-manager) owning pods bound to the nodes.
    let ns = "scale";
    let _ = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}})).expect("ns"),
        )
        .await;
    let _ = Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "default"}})).expect("sa"),
        )
        .await;
    let total_pods = nodes * pods_per_node;
    let sets = total_pods.div_ceil(100);
    let mut owners = BTreeMap::new();
    for s in 0..sets {
        let name = format!("rs-{s}");
        let rs: ReplicaSet = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"replicas": 100, "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "c", "image": "pause"}]}}}
        }))
        .expect("rs");
        let created = Api::<ReplicaSet>::namespaced(client.clone(), ns)
            .create(&PostParams::default(), &rs)
            .await
            .expect("rs created");
        owners.insert(s, created.metadata.uid.expect("uid"));
    }
    let pod_api = Api::<Pod>::namespaced(client.clone(), ns);
    futures::stream::iter(0..total_pods)
        .for_each_concurrent(64, |i| {
            let pod_api = pod_api.clone();
            let set = i / 100;
            let owner = owners[&set].clone();
            let node = node_names[i % nodes].clone();
            async move {
                let pod: Pod = serde_json::from_value(json!({
                    "metadata": {"name": format!("p-{i}"), "labels": {"app": format!("rs-{set}")},
                        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                            "name": format!("rs-{set}"), "uid": owner, "controller": true}]},
                    "spec": {"nodeName": node, "automountServiceAccountToken": false,
                        "containers": [{"name": "c", "image": "pause",
                            "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}}}]}
                }))
                .expect("pod");
                pod_api
                    .create(&PostParams::default(), &pod)
                    .await
                    .unwrap_or_else(|e| panic!("pod {i}: {e}"));
            }
        })
        .await;
    let pods_done = started.elapsed();

    // The operator, a template over the groups and a dry-run policy over the template.
    let template: cloudoptim::api::NodeTemplate = serde_json::from_value(json!({
        "apiVersion": "cloudoptim.io/v1alpha1", "kind": "NodeTemplate",
        "metadata": {"name": "scale", "labels": {"pool": pool}},
        "spec": {"autoScalingGroups": {"tagSelector": {"scale-pool": pool}}, "requirements": {"families": ["m5", "m6i"]}}
    }))
    .expect("template");
    Api::<cloudoptim::api::NodeTemplate>::all(client.clone())
        .create(&PostParams::default(), &template)
        .await
        .expect("template");
    let operator = Operator::start(&cp, &moto, "scale", &[]);
    let idle_rss = rss_mib(operator.pid());
    // The watches' stores fill in the background; give them time before planning starts.
    let watched = eventually(Duration::from_secs(120), "stores filled", || async {
        let before = rss_mib(operator.pid());
        tokio::time::sleep(Duration::from_secs(3)).await;
        let after = rss_mib(operator.pid());
        (after > idle_rss * 1.5 && (after - before).abs() < 2.0).then_some(after)
    })
    .await;
    let policy: OptimizationPolicy = serde_json::from_value(json!({
        "apiVersion": "cloudoptim.io/v1alpha1", "kind": "OptimizationPolicy",
        "metadata": {"name": "scale"},
        "spec": {"nodeTemplateSelector": {"matchLabels": {"pool": pool}}, "dryRun": true,
            "consolidation": {"interval": "20s"}, "zombies": {"mode": "Off"}}
    }))
    .expect("policy");
    Api::<OptimizationPolicy>::all(client.clone())
        .create(&PostParams::default(), &policy)
        .await
        .expect("policy");
    let policies: Api<OptimizationPolicy> = Api::all(client.clone());
    eventually(
        Duration::from_secs(600),
        "the policy saw every node",
        || async {
            let status = policies.get("scale").await.ok()?.status?;
            (status.nodes?.total as usize == nodes).then_some(())
        },
    )
    .await;
    let first_plan = plan_ms(&operator.log(), nodes);
    let after_plan = rss_mib(operator.pid());
    // A second reconcile with the stores warm.
    let count = |o: &Operator| {
        o.metric("cloudoptim_reconcile_duration_seconds_count{controller=\"policy\"}")
    };
    let after_first = count(&operator);
    eventually(Duration::from_secs(120), "a second plan", || async {
        (count(&operator) > after_first).then_some(())
    })
    .await;
    let rss = rss_mib(operator.pid());
    let peak = peak_mib(operator.pid());
    let plan = plan_ms(&operator.log(), nodes)
        .or(first_plan)
        .unwrap_or(f64::NAN);
    let reconcile_s = operator
        .metric("cloudoptim_reconcile_duration_seconds_sum{controller=\"policy\"}")
        / count(&operator).max(1.0);
    let factor = 5000.0 / nodes as f64;
    let projected = idle_rss + (rss - idle_rss) * factor;
    let projected_peak = idle_rss + (peak - idle_rss) * factor;
    println!(
        "scale run: {nodes} nodes, {total_pods} pods (setup: groups {:.0} s, nodes {:.0} s, pods {:.0} s)",
        groups_done.as_secs_f64(),
        (nodes_done - groups_done).as_secs_f64(),
        (pods_done - nodes_done).as_secs_f64()
    );
    println!(
        "scale run: RSS at start {idle_rss:.1} MiB, with the cluster watched {watched:.1} MiB, after the first plan {after_plan:.1} MiB"
    );
    println!(
        "scale run: operator RSS {rss:.1} MiB (idle {idle_rss:.1} MiB); projected at 5,000 nodes / 100,000 pods: {projected:.1} MiB (linear in objects; target < 256 MiB, ratio {:.2})",
        projected / 256.0
    );
    // bench/scale.sh and bench/run.sh read this line and check the peak against the target.
    println!(
        "scale run: peak RSS (VmHWM) {peak:.1} MiB at {nodes} nodes / {total_pods} pods; projected linearly \
         to 5,000 nodes / 100,000 pods: {projected_peak:.1} MiB (target < 256 MiB peak)"
    );
    println!(
        "scale run: plan {plan:.1} ms for {nodes} nodes / {total_pods} pods; mean policy reconcile {reconcile_s:.2} s (includes AWS calls and the status write)"
    );
}
