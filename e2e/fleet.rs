//! Multi-cluster risk sharing end to end, three processes and three API servers: member A (`cloudoptim
//! run` on the full control plane with kwok) receives a Spot interruption warning through moto SQS and
//! raises a SpotRiskFlag; it pushes the flag to the hub (`cloudoptim hub` on its own API server); the
//! hub streams it to member B (`cloudoptim run` on a third API server), which mirrors it and leaves the
//! instance type out of its NodeTemplate's Auto Scaling group overrides; when the hub's (shortened) TTL
//! passes, B's mirrored flag expires and the type comes back.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cloudoptim::api::NodeTemplate;
use kube::api::{Api, PostParams};
use serde_json::json;
use support::hub::{Hub, HubOptions};
use support::nodes::FakeNode;
use support::operator::{Operator, eventually};
use support::{ControlPlane, Moto, aws, unique};

const WAIT: Duration = Duration::from_secs(60);
/// The hub's flag TTL in this test (production: 1800 s).
const HUB_TTL_SECONDS: u32 = 25;

#[tokio::test]
async fn a_flag_raised_in_member_a_reaches_member_b_and_expires() {
    let Some(cp_a) = ControlPlane::shared() else {
        return;
    };
    let Some(cp_b) = support::api_only_cluster("member-b").await else {
        return;
    };
    let Some(cp_hub) = support::api_only_cluster("hub").await else {
        return;
    };
    let Some(moto) = Moto::start() else { return };
    // Over TLS (the members trust the test's CA with --hub-ca-file). One member's warning reaching
    // the other at once is the point here, so the confirmation rule is off (--confirmations=1).
    let hub = Hub::start_with(
        &cp_hub,
        HubOptions {
            ttl: HUB_TTL_SECONDS,
            members: &[("cluster-a", "token-a"), ("cluster-b", "token-b")],
            tls: true,
            args: &["--confirmations=1"],
        },
    );
    let token_a = cp_a.dir.join(unique("token-a"));
    std::fs::write(&token_a, "token-a").expect("token a");
    let token_b = cp_b.dir.join(unique("token-b"));
    std::fs::write(&token_b, "token-b").expect("token b");
    let sdk = aws::sdk_config(&moto.endpoint).await;

    // Member B: one group, a template restricted to one zone, ranked and written by B's operator.
    let client_b = cp_b.client().await;
    let zone = format!("{}a", aws::REGION);
    let group = unique("fleet-b");
    let launch = aws::launch_template(&sdk, &unique("lt")).await;
    aws::create_group(&sdk, &group, &launch, 1, &BTreeMap::new()).await;
    let template: NodeTemplate = serde_json::from_value(json!({
        "apiVersion": "cloudoptim.io/v1alpha1", "kind": "NodeTemplate",
        "metadata": {"name": unique("fleet")},
        "spec": {
            "autoScalingGroups": {"names": [group]},
            "requirements": {"families": ["m5", "m6i", "c5", "c6i"], "zones": [zone], "minVcpu": 2, "maxVcpu": 4, "maxTypes": 5}
        }
    }))
    .expect("template");
    Api::<NodeTemplate>::all(client_b.clone())
        .create(&PostParams::default(), &template)
        .await
        .expect("template created");
    let member_args = hub.member_args();
    let mut hub_flags: Vec<&str> = member_args.iter().map(String::as_str).collect();
    hub_flags.push("--hub-token-file");
    let token_b_arg = token_b.display().to_string();
    let mut args_b: Vec<&str> = hub_flags.to_vec();
    args_b.push(&token_b_arg);
    let _member_b = Operator::start(&cp_b, &moto, "cluster-b", &args_b);
    let best = eventually(WAIT, "B's group ranked", || async {
        let g = aws::describe_group(&sdk, &group).await?;
        aws::overrides(&g).first().cloned()
    })
    .await;

    // Member A: a kwok node of that type in that zone, and a policy reading A's interruption queue.
    let client_a = cp_a.client().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let queue = sqs
        .create_queue()
        .queue_name(unique("fleet-a"))
        .send()
        .await
        .expect("queue")
        .queue_url()
        .expect("url")
        .to_string();
    let node_name = unique("fleet-a-node");
    let instance = format!("i-0{:016x}", std::process::id());
    let mut node = FakeNode::new(&node_name, &zone, &instance);
    node.instance_type = best.clone();
    node.create(&client_a).await;
    let policy: cloudoptim::api::OptimizationPolicy = serde_json::from_value(json!({
        "apiVersion": "cloudoptim.io/v1alpha1", "kind": "OptimizationPolicy",
        "metadata": {"name": unique("fleet-a")},
        "spec": {
            "nodeTemplateSelector": {"matchLabels": {"none": "none"}},
            "consolidation": {"mode": "Off"}, "zombies": {"mode": "Off"},
            "interruptions": {"queueUrl": queue}
        }
    }))
    .expect("policy");
    Api::<cloudoptim::api::OptimizationPolicy>::all(client_a.clone())
        .create(&PostParams::default(), &policy)
        .await
        .expect("policy created");
    let token_a_arg = token_a.display().to_string();
    let mut args_a: Vec<&str> = hub_flags.to_vec();
    args_a.push(&token_a_arg);
    let _member_a = Operator::start(cp_a, &moto, "cluster-a", &args_a);

    // The warning in A; B's overrides lose the type.
    let warning = json!({
        "version": "0", "id": unique("fleet-evt"), "detail-type": "EC2 Spot Instance Interruption Warning",
        "source": "aws.ec2", "account": "123456789012",
        "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "region": aws::REGION, "resources": [], "detail": {"instance-id": instance, "instance-action": "terminate"}
    });
    let sent = Instant::now();
    sqs.send_message()
        .queue_url(&queue)
        .message_body(warning.to_string())
        .send()
        .await
        .expect("send warning");
    eventually(WAIT, "B's overrides without the flagged type", || async {
        let g = aws::describe_group(&sdk, &group).await?;
        let overrides = aws::overrides(&g);
        (!overrides.is_empty() && !overrides.contains(&best)).then_some(())
    })
    .await;
    let propagated = sent.elapsed();
    let mirrored = Api::<cloudoptim::api::SpotRiskFlag>::all(client_b.clone())
        .get(&format!("{}.{zone}.{best}", aws::REGION))
        .await
        .expect("B holds the mirrored flag");
    assert_eq!(
        mirrored.spec.source,
        cloudoptim::api::risk_flag::FlagSource::Hub
    );
    assert!(
        mirrored.spec.clusters.contains(&"cluster-a".to_string()),
        "{:?}",
        mirrored.spec
    );
    println!(
        "fleet propagation: warning sent to A's queue -> {best} left out of B's overrides in {:.2} s (target < 2 s from A's flag)",
        propagated.as_secs_f64()
    );

    // The hub's TTL passes: B's mirrored flag expires and the type comes back.
    eventually(
        Duration::from_secs(u64::from(HUB_TTL_SECONDS) + 60),
        "the type back in B's overrides after the TTL",
        || async {
            let g = aws::describe_group(&sdk, &group).await?;
            aws::overrides(&g).contains(&best).then_some(())
        },
    )
    .await;
}
