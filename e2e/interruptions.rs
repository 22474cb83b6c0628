//! Spot interruption intake end to end: EventBridge-shaped messages (the real shapes) sent to a moto SQS
//! queue are read by the real `cloudoptim run` binary, which taints, cordons and drains the named kwok
//! nodes through the real API server and scheduler, raises SpotRiskFlags, handles a duplicate once, and
//! deletes (and counts) malformed and unknown messages. Auto Scaling lifecycle hooks: a terminating
//! instance's node is drained before the hook is completed with CONTINUE (the operator reaches AWS
//! through [`support::hooks::HookEndpoint`], which answers the two lifecycle calls moto lacks).
//!
//! `interruption_burst` (ignored; run by `bench/interruptions.sh`) sends 200 warnings at once and prints
//! the p50/p99 time from sending to the node being cordoned. It prints; it asserts only that all were
//! cordoned.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cloudoptim::api::SpotRiskFlag;
use cloudoptim::api::risk_flag::{FlagSource, RiskReason};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;
use support::hooks::{Call, HookEndpoint};
use support::nodes::FakeNode;
use support::operator::{Operator, eventually};
use support::{ControlPlane, Moto, aws, create_namespace, unique};

const WAIT: Duration = Duration::from_secs(60);
const TAINT: &str = "cloudoptim.io/interrupted";

fn spot_warning(id: &str, instance: &str) -> String {
    json!({
        "version": "0", "id": id, "detail-type": "EC2 Spot Instance Interruption Warning",
        "source": "aws.ec2", "account": "123456789012",
        "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "region": aws::REGION, "resources": [format!("arn:aws:ec2:{}a:instance/{instance}", aws::REGION)],
        "detail": {"instance-id": instance, "instance-action": "terminate"}
    })
    .to_string()
}

fn rebalance(id: &str, instance: &str) -> String {
    json!({
        "version": "0", "id": id, "detail-type": "EC2 Instance Rebalance Recommendation",
        "source": "aws.ec2", "account": "123456789012",
        "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "region": aws::REGION, "resources": [format!("arn:aws:ec2:{}b:instance/{instance}", aws::REGION)],
        "detail": {"instance-id": instance}
    })
    .to_string()
}

fn state_change(id: &str, instance: &str, state: &str) -> String {
    json!({
        "version": "0", "id": id, "detail-type": "EC2 Instance State-change Notification",
        "source": "aws.ec2", "account": "123456789012",
        "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "region": aws::REGION, "resources": [],
        "detail": {"instance-id": instance, "state": state}
    })
    .to_string()
}

fn health(id: &str, instance: &str) -> String {
    json!({
        "version": "0", "id": id, "detail-type": "AWS Health Event", "source": "aws.health",
        "account": "123456789012",
        "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "region": aws::REGION, "resources": [instance],
        "detail": {"eventArn": "arn:aws:health:us-east-1::event/EC2/AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED/x",
            "service": "EC2", "eventTypeCode": "AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED",
            "eventTypeCategory": "scheduledChange",
            "affectedEntities": [{"entityValue": instance}]}
    })
    .to_string()
}

/// A fake instance id, unique in this process.
fn instance_id(n: usize) -> String {
    format!("i-0{:08x}{:08x}", std::process::id(), n)
}

async fn send(sqs: &aws_sdk_sqs::Client, url: &str, body: String) {
    sqs.send_message()
        .queue_url(url)
        .message_body(body)
        .send()
        .await
        .expect("send message");
}

async fn queue_empty(sqs: &aws_sdk_sqs::Client, url: &str) -> bool {
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
        .send()
        .await
        .expect("queue attributes");
    let get = |name: aws_sdk_sqs::types::QueueAttributeName| {
        attributes
            .attributes()
            .and_then(|a| a.get(&name))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(1)
    };
    get(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages) == 0
        && get(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible) == 0
}

/// The interruption policy; it selects only NodeTemplates labelled `e2e-pool=<pool>` (the Spot
/// fallback phase's template), so its Spot split is what such a template's groups get.
async fn policy(client: &Client, url: &str, pool: &str) {
    let policy: cloudoptim::api::OptimizationPolicy = serde_json::from_value(json!({
        "apiVersion": "cloudoptim.io/v1alpha1", "kind": "OptimizationPolicy",
        "metadata": {"name": unique("interruptions")},
        "spec": {
            "nodeTemplateSelector": {"matchLabels": {"e2e-pool": pool}},
            "consolidation": {"mode": "Off"},
            "zombies": {"mode": "Off"},
            "interruptions": {"queueUrl": url, "rebalance": "Cordon", "drainDeadline": "60s", "releaseAfter": "3s"},
            "spot": {"fallbackToOnDemand": true, "restoreToSpotAfter": "20s"}
        }
    }))
    .expect("policy");
    Api::<cloudoptim::api::OptimizationPolicy>::all(client.clone())
        .create(&PostParams::default(), &policy)
        .await
        .expect("policy created");
}

fn marked(node: &Node) -> bool {
    node.spec.as_ref().is_some_and(|s| {
        s.unschedulable == Some(true)
            && s.taints
                .as_ref()
                .is_some_and(|t| t.iter().any(|t| t.key == TAINT))
    })
}

async fn node(client: &Client, name: &str) -> Node {
    Api::<Node>::all(client.clone())
        .get(name)
        .await
        .expect("node")
}

async fn pods_on(client: &Client, ns: &str, node: &str) -> usize {
    Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
        .await
        .expect("pods")
        .items
        .len()
}

/// A node cordoned for a rebalance recommendation is given back once its instance is running and the
/// node Ready and the policy's `releaseAfter` has passed; a node whose instance stopped stays held.
/// (A phase of the test below, with its operator: one operator per cluster, as in production.)
async fn rebalance_cordon_released_when_healthy(
    client: &Client,
    sdk: &aws_config::SdkConfig,
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    operator: &Operator,
) {
    let zone = format!("{}a", aws::REGION);
    let cluster = [("cloudoptim.io/cluster", "e2e")];
    let healthy_id = aws::run_instance(sdk, &zone, &cluster).await;
    let stopped_id = aws::run_instance(sdk, &zone, &cluster).await;
    let healthy = unique("held-healthy");
    let stopped = unique("held-stopped");
    // Of the instances' type, so the rebalance's SpotRiskFlag is not the warning's (m5.large).
    for (name, id) in [(&healthy, &healthy_id), (&stopped, &stopped_id)] {
        let mut fake = FakeNode::new(name, &zone, id);
        fake.instance_type = "c6i.large".into();
        fake.create(client).await;
    }
    aws_sdk_ec2::Client::new(sdk)
        .stop_instances()
        .instance_ids(&stopped_id)
        .send()
        .await
        .expect("stop instance");
    send(sqs, url, rebalance(&unique("evt-rebalance"), &healthy_id)).await;
    send(
        sqs,
        url,
        state_change(&unique("evt-stop"), &stopped_id, "stopping"),
    )
    .await;
    for name in [&healthy, &stopped] {
        eventually(WAIT, &format!("{name} held"), || async {
            marked(&node(client, name).await).then_some(())
        })
        .await;
    }
    let held = |kind: &str| {
        operator.metric(&format!(
            "cloudoptim_interruption_held_nodes{{kind=\"{kind}\"}}"
        ))
    };
    // Released: taint and cordon gone, counted, an Event on the node.
    eventually(WAIT, "the healthy node released", || async {
        let n = node(client, &healthy).await;
        let spec = n.spec.clone().unwrap_or_default();
        (!marked(&n)
            && spec.unschedulable != Some(true)
            && !spec
                .taints
                .unwrap_or_default()
                .iter()
                .any(|t| t.key == TAINT))
        .then_some(())
    })
    .await;
    // (The gauges count every held node the operator sees, other tests' included.)
    eventually(
        WAIT,
        "the release counted and the stopped node held",
        || async {
            (operator.metric("cloudoptim_interruption_releases_total{kind=\"rebalance\"}") == 1.0
                && held("state_change") >= 1.0)
                .then_some(())
        },
    )
    .await;
    let events = Api::<k8s_openapi::api::events::v1::Event>::all(client.clone())
        .list(&ListParams::default())
        .await
        .expect("events");
    assert!(
        events
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("InterruptionReleased")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(healthy.as_str())),
        "an InterruptionReleased event on {healthy}"
    );
    // The stopped one is still held: its instance is not running.
    assert!(
        marked(&node(client, &stopped).await),
        "{stopped} released while its instance is stopped"
    );
    assert_eq!(
        operator.metric("cloudoptim_interruption_releases_total{kind=\"state_change\"}"),
        0.0
    );
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// An EventBridge `EC2 Instance-terminate Lifecycle Action` (the user guide's shape).
fn terminate_action(token: &str, group: &str, hook: &str, instance: &str) -> String {
    json!({
        "version": "0", "id": unique("evt-lifecycle"),
        "detail-type": "EC2 Instance-terminate Lifecycle Action", "source": "aws.autoscaling",
        "account": "123456789012", "time": now(), "region": aws::REGION,
        "resources": [format!("arn:aws:autoscaling:{}:123456789012:autoScalingGroup:59fcbb81-bd5f-4e0a-b8ef-6e8e36a7b5c8:autoScalingGroupName/{group}", aws::REGION)],
        "detail": {"LifecycleActionToken": token, "AutoScalingGroupName": group,
            "LifecycleHookName": hook, "EC2InstanceId": instance,
            "LifecycleTransition": "autoscaling:EC2_INSTANCE_TERMINATING",
            "Origin": "AutoScalingGroup", "Destination": "EC2"}
    })
    .to_string()
}

/// The CompleteLifecycleAction the hook endpoint answered for `token`, once it came.
async fn completion(hooks: &HookEndpoint, token: &str) -> Call {
    eventually(
        WAIT,
        &format!("CompleteLifecycleAction {token}"),
        || async {
            hooks.calls().into_iter().find(|c| {
                c.action == "CompleteLifecycleAction"
                    && c.params.get("LifecycleActionToken").map(String::as_str) == Some(token)
            })
        },
    )
    .await
}

/// Auto Scaling lifecycle hooks (a phase of the test below): a group in moto with a terminate hook
/// and a launch hook; its instance is a kwok node running pods. The terminate action (EventBridge
/// form) gets the node cordoned and drained, and only then the action completed with CONTINUE (the
/// endpoint looks at the node and its pods when the completion arrives, before answering). A launch
/// action in Auto Scaling's own notification form is completed at once; the test notification is
/// deleted and counted.
async fn lifecycle_hooks_drain_before_completing(
    client: &Client,
    sdk: &aws_config::SdkConfig,
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    operator: &Operator,
    hooks: &HookEndpoint,
) {
    let group = unique("hooked");
    let template = aws::launch_template(sdk, &unique("lt-hooked")).await;
    let tags = BTreeMap::from([("cloudoptim.io/cluster".to_string(), "e2e".to_string())]);
    aws::create_group(sdk, &group, &template, 1, &tags).await;
    let autoscaling = aws_sdk_autoscaling::Client::new(sdk);
    for (hook, transition) in [
        ("drain", "autoscaling:EC2_INSTANCE_TERMINATING"),
        ("warm-up", "autoscaling:EC2_INSTANCE_LAUNCHING"),
    ] {
        autoscaling
            .put_lifecycle_hook()
            .auto_scaling_group_name(&group)
            .lifecycle_hook_name(hook)
            .lifecycle_transition(transition)
            .heartbeat_timeout(300)
            .default_result("CONTINUE")
            .send()
            .await
            .expect("put lifecycle hook");
    }
    let instance = aws::describe_group(sdk, &group)
        .await
        .and_then(|g| g.instances().first()?.instance_id().map(str::to_string))
        .expect("the group's instance");
    let name = unique("hooked-node");
    let mut fake = FakeNode::new(&name, &format!("{}a", aws::REGION), &instance);
    fake.labels.insert("e2e-hooked".into(), name.clone());
    fake.create(client).await;
    let ns = create_namespace(client, "hook").await;
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "app"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "app"}},
            "template": {"metadata": {"labels": {"app": "app"}}, "spec": {
                "nodeSelector": {"e2e-hooked": name},
                "terminationGracePeriodSeconds": 0,
                "containers": [{"name": "c", "image": "pause"}]
            }}
        }
    }))
    .expect("deployment");
    Api::<Deployment>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &deployment)
        .await
        .expect("deployment created");
    eventually(WAIT, "two pods on the hooked node", || async {
        (pods_on(client, &ns, &name).await == 2).then_some(())
    })
    .await;
    let (probe_client, probe_ns, probe_node) = (client.clone(), ns.clone(), name.clone());
    hooks.set_probe(std::sync::Arc::new(move |_params| {
        let (client, ns, name) = (probe_client.clone(), probe_ns.clone(), probe_node.clone());
        Box::pin(async move {
            format!(
                "pods={} cordoned={}",
                pods_on(&client, &ns, &name).await,
                marked(&node(&client, &name).await)
            )
        })
    }));

    let token = unique("token-terminate");
    send(
        sqs,
        url,
        terminate_action(&token, &group, "drain", &instance),
    )
    .await;
    let completed = completion(hooks, &token).await;
    assert_eq!(
        completed.probe.as_deref(),
        Some("pods=0 cordoned=true"),
        "the node was cordoned and drained before the hook was completed"
    );
    for (param, value) in [
        ("AutoScalingGroupName", group.as_str()),
        ("LifecycleHookName", "drain"),
        ("LifecycleActionResult", "CONTINUE"),
    ] {
        assert_eq!(
            completed.params.get(param).map(String::as_str),
            Some(value),
            "{param}"
        );
    }
    eventually(WAIT, "the terminate action counted", || async {
        (operator.metric("cloudoptim_lifecycle_actions_total{outcome=\"drained\"}") == 1.0
            && operator.metric("cloudoptim_interruptions_total{kind=\"lifecycle_terminate\"}")
                == 1.0)
            .then_some(())
    })
    .await;
    eventually(
        WAIT,
        "a LifecycleActionCompleted event on the node",
        || async {
            Api::<k8s_openapi::api::events::v1::Event>::all(client.clone())
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .into_iter()
                .find(|e| {
                    e.reason.as_deref() == Some("LifecycleActionCompleted")
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref())
                            == Some(name.as_str())
                })
        },
    )
    .await;

    // Auto Scaling's own notification form: a launch action, completed at once.
    let launch_token = unique("token-launch");
    let direct = json!({
        "Origin": "EC2", "LifecycleHookName": "warm-up", "Destination": "AutoScalingGroup",
        "AccountId": "123456789012", "RequestId": unique("req"),
        "LifecycleTransition": "autoscaling:EC2_INSTANCE_LAUNCHING",
        "AutoScalingGroupName": group, "Service": "AWS Auto Scaling", "Time": now(),
        "EC2InstanceId": instance_id(60), "LifecycleActionToken": launch_token
    });
    send(sqs, url, direct.to_string()).await;
    let launched = completion(hooks, &launch_token).await;
    assert_eq!(
        launched
            .params
            .get("LifecycleActionResult")
            .map(String::as_str),
        Some("CONTINUE")
    );
    assert_eq!(
        launched.params.get("LifecycleHookName").map(String::as_str),
        Some("warm-up")
    );

    // The test notification Auto Scaling sends when a hook's notification target is set.
    let test = json!({
        "AccountId": "123456789012", "RequestId": unique("req"),
        "AutoScalingGroupARN": format!("arn:aws:autoscaling:{}:123456789012:autoScalingGroup:042cba90-ad2f-431c-9b4d-6d9055bcc9fb:autoScalingGroupName/{group}", aws::REGION),
        "AutoScalingGroupName": group, "Service": "AWS Auto Scaling",
        "Event": "autoscaling:TEST_NOTIFICATION", "Time": now()
    });
    send(sqs, url, test.to_string()).await;
    eventually(
        WAIT,
        "the test notification counted and every message deleted",
        || async {
            (operator.metric("cloudoptim_interruptions_total{kind=\"lifecycle_test\"}") == 1.0
                && operator.metric("cloudoptim_lifecycle_actions_total{outcome=\"launch\"}") == 1.0
                && queue_empty(sqs, url).await)
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        hooks
            .calls()
            .iter()
            .filter(|c| c.action == "CompleteLifecycleAction")
            .count(),
        2,
        "the test notification completes nothing: {:?}",
        hooks.calls()
    );
}

#[tokio::test]
async fn interruption_notices_taint_cordon_drain_and_flag() {
    let Some(cp) = ControlPlane::shared() else {
        return;
    };
    let Some(moto) = Moto::start() else { return };
    let client = cp.client().await;
    let sdk = aws::sdk_config(&moto.endpoint).await;
    let (sqs, url) = aws::queue(&sdk, "cloudoptim-interruptions").await;
    let pool = unique("pool");
    let zones = ["a", "b", "c", "a"].map(|z| format!("{}{z}", aws::REGION));
    let mut names = Vec::new();
    let mut ids = Vec::new();
    for (i, zone) in zones.iter().enumerate() {
        let name = format!("{pool}-{i}");
        let id = instance_id(i);
        let mut fake = FakeNode::new(&name, zone, &id);
        fake.labels.insert("e2e-pool".into(), pool.clone());
        fake.create(&client).await;
        names.push(name);
        ids.push(id);
    }
    let ns = create_namespace(&client, "intr").await;
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "app"},
        "spec": {
            "replicas": 8,
            "selector": {"matchLabels": {"app": "app"}},
            "template": {"metadata": {"labels": {"app": "app"}}, "spec": {
                "nodeSelector": {"e2e-pool": pool},
                "terminationGracePeriodSeconds": 0,
                "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                    "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "app"}}}],
                "containers": [{"name": "c", "image": "pause", "resources": {"requests": {"cpu": "100m"}}}]
            }}
        }
    }))
    .expect("deployment");
    Api::<Deployment>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &deployment)
        .await
        .expect("deployment created");
    eventually(WAIT, "two pods on every node", || async {
        for name in &names {
            if pods_on(&client, &ns, name).await < 2 {
                return None;
            }
        }
        Some(())
    })
    .await;
    let fallback_pool = unique("fallback-pool");
    policy(&client, &url, &fallback_pool).await;
    // The hold floor lowered (production: 3 min) so the release phase can see a cordon given back;
    // AWS through the hook endpoint in front of moto.
    let hooks = HookEndpoint::start(&moto.endpoint).await;
    let endpoint = format!("--aws-endpoint-url={}", hooks.url);
    let operator = Operator::start(
        cp,
        &moto,
        "e2e",
        &["--interruption-hold-floor=0s", &endpoint],
    );

    let spot_id = unique("evt-spot");
    send(&sqs, &url, spot_warning(&spot_id, &ids[0])).await;
    send(&sqs, &url, spot_warning(&spot_id, &ids[0])).await; // duplicate delivery
    send(&sqs, &url, rebalance(&unique("evt-rebalance"), &ids[1])).await;
    send(
        &sqs,
        &url,
        state_change(&unique("evt-state"), &ids[2], "shutting-down"),
    )
    .await;
    send(&sqs, &url, health(&unique("evt-health"), &ids[3])).await;
    send(&sqs, &url, "this is not an EventBridge event".to_string()).await;
    send(
        &sqs,
        &url,
        json!({"id": unique("evt-other"), "detail-type": "EC2 AMI State Change", "source": "aws.ec2", "detail": {}})
            .to_string(),
    )
    .await;

    // Every named node is tainted and cordoned; the going-away ones are drained, the rebalanced one is
    // only cordoned (policy rebalance: Cordon).
    for name in &names {
        eventually(WAIT, &format!("{name} tainted and cordoned"), || async {
            marked(&node(&client, name).await).then_some(())
        })
        .await;
    }
    for i in [0, 2, 3] {
        eventually(WAIT, &format!("{} drained", names[i]), || async {
            (pods_on(&client, &ns, &names[i]).await == 0).then_some(())
        })
        .await;
    }
    assert_eq!(
        pods_on(&client, &ns, &names[1]).await,
        2,
        "rebalance: cordon only"
    );

    // Flags for the Spot warning and the rebalance, raised locally.
    let flags: Api<SpotRiskFlag> = Api::all(client.clone());
    let spot_flag = eventually(WAIT, "SpotRiskFlag for the warning", || async {
        flags
            .get_opt(&format!("{}.{}.m5.large", aws::REGION, zones[0]))
            .await
            .ok()
            .flatten()
    })
    .await;
    assert_eq!(spot_flag.spec.reason, RiskReason::SpotInterruption);
    assert_eq!(spot_flag.spec.source, FlagSource::Local);
    assert_eq!(
        spot_flag.spec.count, 1,
        "the duplicate was not counted: {:?}",
        spot_flag.spec
    );
    assert_eq!(spot_flag.spec.clusters, vec!["e2e".to_string()]);
    let rebalance_flag = eventually(WAIT, "SpotRiskFlag for the rebalance", || async {
        flags
            .get_opt(&format!("{}.{}.m5.large", aws::REGION, zones[1]))
            .await
            .ok()
            .flatten()
    })
    .await;
    assert_eq!(rebalance_flag.spec.reason, RiskReason::Rebalance);

    // Every message was deleted, the bad ones counted, the duplicate handled once.
    eventually(WAIT, "the queue drained", || async {
        queue_empty(&sqs, &url).await.then_some(())
    })
    .await;
    let count = |kind: &str| {
        operator.metric(&format!(
            "cloudoptim_interruptions_total{{kind=\"{kind}\"}}"
        ))
    };
    eventually(WAIT, "all kinds counted", || async {
        (count("malformed") == 1.0 && count("unknown") == 1.0 && count("duplicate") == 1.0)
            .then_some(())
    })
    .await;
    for kind in [
        "spot_interruption",
        "rebalance",
        "state_change",
        "scheduled_change",
    ] {
        assert_eq!(count(kind), 1.0, "{kind}");
    }
    // moto stamps each message's SentTimestamp; the operator measured its age and the cordon latency.
    for kind in ["spot_interruption", "rebalance", "state_change"] {
        assert_eq!(
            operator.metric(&format!(
                "cloudoptim_interruption_message_age_seconds_count{{kind=\"{kind}\"}}"
            )),
            1.0,
            "{kind}"
        );
    }
    assert_eq!(
        operator.metric(
            "cloudoptim_interruption_cordon_latency_seconds_count{kind=\"spot_interruption\"}"
        ),
        1.0
    );

    // Forged or stale messages: refused by origin and time, counted, deleted, and nothing touched.
    let bystander = format!("{pool}-bystander");
    let bystander_id = instance_id(50);
    FakeNode::new(&bystander, &zones[0], &bystander_id)
        .create(&client)
        .await;
    let forged = |pointer: &str, value: serde_json::Value| {
        let mut v: serde_json::Value =
            serde_json::from_str(&spot_warning(&unique("evt-forged"), &bystander_id))
                .expect("json");
        *v.pointer_mut(pointer).expect("field") = value;
        v.to_string()
    };
    let stamp = |t: chrono::DateTime<chrono::Utc>| {
        json!(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
    };
    for body in [
        forged("/account", json!("999999999999")),
        forged("/region", json!("eu-west-1")),
        forged("/source", json!("my.app")),
        forged(
            "/time",
            stamp(chrono::Utc::now() - chrono::TimeDelta::minutes(10)),
        ),
        forged(
            "/time",
            stamp(chrono::Utc::now() + chrono::TimeDelta::hours(1)),
        ),
    ] {
        send(&sqs, &url, body).await;
    }
    eventually(WAIT, "the forged messages refused and deleted", || async {
        let refused = [
            "refused_account",
            "refused_region",
            "refused_source",
            "refused_stale",
            "refused_time",
        ]
        .iter()
        .all(|k| count(k) == 1.0);
        (refused && queue_empty(&sqs, &url).await).then_some(())
    })
    .await;
    assert!(
        !marked(&node(&client, &bystander).await),
        "no forged message cordoned the node it named"
    );

    // A Spot capacity error from Auto Scaling: the group goes to on-demand, then back to its Spot
    // split after spot.restoreToSpotAfter (20 s here).
    let group = unique("fallback");
    let launch = aws::launch_template(&sdk, &unique("lt")).await;
    aws::create_group(&sdk, &group, &launch, 1, &BTreeMap::new()).await;
    let template: cloudoptim::api::NodeTemplate = serde_json::from_value(json!({
        "apiVersion": "cloudoptim.io/v1alpha1", "kind": "NodeTemplate",
        "metadata": {"name": unique("fallback"), "labels": {"e2e-pool": fallback_pool}},
        "spec": {"autoScalingGroups": {"names": [group]}, "requirements": {"families": ["m6i", "c6i"]}}
    }))
    .expect("template");
    Api::<cloudoptim::api::NodeTemplate>::all(client.clone())
        .create(&PostParams::default(), &template)
        .await
        .expect("template created");
    let on_demand = || async {
        aws::describe_group(&sdk, &group)
            .await?
            .mixed_instances_policy()?
            .instances_distribution()?
            .on_demand_percentage_above_base_capacity()
    };
    eventually(WAIT, "the group ranked with its Spot split", || async {
        (on_demand().await == Some(30)).then_some(())
    })
    .await;
    let failure = json!({
        "version": "0", "id": unique("evt-launch"), "detail-type": "EC2 Instance Launch Unsuccessful",
        "source": "aws.autoscaling", "account": "123456789012",
        "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "region": aws::REGION, "resources": [],
        "detail": {"StatusCode": "Failed", "AutoScalingGroupName": group,
            "StatusMessage": "Could not launch Spot Instances. InsufficientInstanceCapacity - There is no Spot capacity available that matches your request. Launching EC2 instance failed.",
            "Details": {"Availability Zone": format!("{}a", aws::REGION)}}
    });
    send(&sqs, &url, failure.to_string()).await;
    let fell_back = Instant::now();
    eventually(WAIT, "the group on on-demand", || async {
        (on_demand().await == Some(100)).then_some(())
    })
    .await;
    eventually(
        Duration::from_secs(90),
        "the Spot split restored",
        || async { (on_demand().await == Some(30)).then_some(()) },
    )
    .await;
    assert!(
        fell_back.elapsed() >= Duration::from_secs(15),
        "restored after restoreToSpotAfter, not before ({:?})",
        fell_back.elapsed()
    );
    assert_eq!(count("launch_failed"), 1.0);
    assert_eq!(
        operator.metric("cloudoptim_risk_flags{source=\"local\"}"),
        2.0,
        "the two local flags are active"
    );

    rebalance_cordon_released_when_healthy(&client, &sdk, &sqs, &url, &operator).await;
    lifecycle_hooks_drain_before_completing(&client, &sdk, &sqs, &url, &operator, &hooks).await;
}

#[tokio::test]
#[ignore = "benchmark: run by bench/interruptions.sh"]
async fn interruption_burst() {
    let Some(cp) = ControlPlane::shared() else {
        return;
    };
    let Some(moto) = Moto::start() else { return };
    let client = cp.client().await;
    let sdk = aws::sdk_config(&moto.endpoint).await;
    let (sqs, url) = aws::queue(&sdk, "cloudoptim-interruptions").await;
    let count: usize = std::env::var("CLOUDOPTIM_BURST")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let pool = unique("burst");
    let mut ids = BTreeMap::new();
    for i in 0..count {
        let name = format!("{pool}-{i}");
        let id = instance_id(100_000 + i);
        let zone = format!("{}{}", aws::REGION, ["a", "b", "c"][i % 3]);
        let mut fake = FakeNode::new(&name, &zone, &id);
        fake.labels.insert("e2e-pool".into(), pool.clone());
        fake.create(&client).await;
        ids.insert(name, id);
    }
    policy(&client, &url, &unique("none")).await;
    let _operator = Operator::start(cp, &moto, "e2e", &[]);
    // Watch cordons as they happen.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let nodes: Api<Node> = Api::all(client.clone());
    let selector = format!("e2e-pool={pool}");
    let watch = tokio::spawn(async move {
        let stream = watcher::watcher(nodes, watcher::Config::default().labels(&selector))
            .default_backoff()
            .applied_objects();
        futures::pin_mut!(stream);
        while let Some(Ok(node)) = stream.next().await {
            if marked(&node) {
                let _ = tx.send((node.name_any(), Instant::now()));
            }
        }
    });
    // The API server's own request counter, read before and after: the load the burst caused.
    let requests_before = apiserver_requests(&client).await;
    let burst_started = Instant::now();
    // Send all warnings as fast as SQS takes them (batches of 10).
    let bodies: Vec<(String, String)> = ids
        .iter()
        .map(|(name, id)| (name.clone(), spot_warning(&unique("burst-evt"), id)))
        .collect();
    let mut sent_at = BTreeMap::new();
    for chunk in bodies.chunks(10) {
        let mut batch = sqs.send_message_batch().queue_url(&url);
        for (i, (_, body)) in chunk.iter().enumerate() {
            batch = batch.entries(
                aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(body)
                    .build()
                    .expect("entry"),
            );
        }
        batch.send().await.expect("send batch");
        let at = Instant::now();
        for (name, _) in chunk {
            sent_at.insert(name.clone(), at);
        }
    }
    let mut latencies = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen.len() < count && Instant::now() < deadline {
        if let Ok(Some((name, at))) = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await
            && seen.insert(name.clone())
            && let Some(sent) = sent_at.get(&name)
        {
            latencies.push(at.saturating_duration_since(*sent));
        }
    }
    watch.abort();
    // Let the drains the burst started run for a while (each polls its node's pods), then count.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let window = burst_started.elapsed().as_secs_f64();
    let requests = apiserver_requests(&client).await - requests_before;
    println!(
        "interruption burst API load: {requests:.0} API server requests in {window:.1} s ({:.0}/s, every client; --max-concurrent-drains bounds the drains)",
        requests / window
    );
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or_default()
    };
    println!(
        "interruption burst: {} warnings, {} cordoned; send->cordon p50 {:.3} s, p99 {:.3} s, max {:.3} s (target p99 < 2 s)",
        count,
        seen.len(),
        pct(0.50).as_secs_f64(),
        pct(0.99).as_secs_f64(),
        latencies.last().copied().unwrap_or_default().as_secs_f64()
    );
    assert_eq!(seen.len(), count, "every warned node was cordoned");
}

/// The sum of the API server's `apiserver_request_total` counters (every request it served).
async fn apiserver_requests(client: &kube::Client) -> f64 {
    let request = hyper::Request::get("/metrics")
        .body(Vec::new())
        .expect("request");
    let text = client
        .request_text(request)
        .await
        .expect("API server metrics");
    text.lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}
