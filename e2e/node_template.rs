//! The NodeTemplate controller end to end: the real `cloudoptim run` binary against a real API server
//! and a moto server turns a NodeTemplate into ranked MixedInstancesPolicies, updates a group only when
//! the ranking changes, honours SpotRiskFlags until they expire, and reports a missing group.
//!
//! One scenario per test binary: the operator reconciles every (cluster-scoped) template it sees, so
//! the phases run in order against one operator and one moto server.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use cloudoptim::api::{NodeTemplate, OptimizationPolicy, SpotRiskFlag};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use support::operator::{Operator, eventually};
use support::{ControlPlane, Moto, aws, unique};

const WAIT: Duration = Duration::from_secs(60);

fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn ready_condition(api: &Api<NodeTemplate>, name: &str) -> Option<(String, String, String)> {
    let template = api.get(name).await.ok()?;
    let status = template.status?;
    if status.observed_generation != template.metadata.generation {
        return None;
    }
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready")?;
    Some((
        ready.status.clone(),
        ready.reason.clone(),
        ready.message.clone(),
    ))
}

#[tokio::test]
async fn node_template_controller_writes_ranked_mixed_instances_policies() {
    let Some(cp) = ControlPlane::shared() else {
        return;
    };
    let Some(moto) = Moto::start() else { return };
    moto.start_recording();
    let client = cp.client().await;
    let sdk = aws::sdk_config(&moto.endpoint).await;
    let pool = unique("pool");
    let template_id = aws::launch_template(&sdk, &unique("lt")).await;
    let pool_tags = tags(&[
        ("cloudoptim.io/pool", &pool),
        ("cloudoptim.io/cluster", "e2e"),
    ]);
    aws::create_group(&sdk, &format!("{pool}-a"), &template_id, 1, &pool_tags).await;
    aws::create_group(&sdk, &format!("{pool}-b"), &template_id, 1, &pool_tags).await;
    aws::create_group(
        &sdk,
        &format!("{pool}-other"),
        &template_id,
        1,
        &tags(&[("cloudoptim.io/pool", "other")]),
    )
    .await;

    let policy: OptimizationPolicy = serde_json::from_value(json!({
        "apiVersion": "cloudoptim.io/v1alpha1", "kind": "OptimizationPolicy",
        "metadata": {"name": unique("policy")},
        "spec": {"nodeTemplateSelector": {"matchLabels": {"pool": pool}}, "spot": {"percentage": 70, "onDemandBase": 2}}
    }))
    .expect("policy");
    Api::<OptimizationPolicy>::all(client.clone())
        .create(&PostParams::default(), &policy)
        .await
        .expect("policy created");
    let name = unique("general");
    let template: NodeTemplate = serde_json::from_value(json!({
        "apiVersion": "cloudoptim.io/v1alpha1", "kind": "NodeTemplate",
        "metadata": {"name": name, "labels": {"pool": pool}},
        "spec": {
            "autoScalingGroups": {"tagSelector": {"cloudoptim.io/pool": pool}},
            "requirements": {"families": ["m5", "m6i", "c5", "c6i", "r5"], "minVcpu": 2, "maxVcpu": 8, "maxTypes": 6}
        }
    }))
    .expect("template");
    let templates: Api<NodeTemplate> = Api::all(client.clone());
    templates
        .create(&PostParams::default(), &template)
        .await
        .expect("template created");

    let mut operator = Operator::start(cp, &moto, "e2e", &[]);

    // Phase 1: both tagged groups get the ranked overrides and the policy's spot split.
    let (status, reason, message) =
        eventually(WAIT, "Ready=True", || ready_condition(&templates, &name)).await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "Ranked"),
        "{message}\n{}",
        operator.log_tail()
    );
    // moto has no Price List API: the fetch fails (its HTTP status named) and the embedded table
    // prices on-demand.
    assert!(
        message.contains(
            "; on-demand prices: embedded catalog (the Price List API failed: GetProducts: HTTP "
        ),
        "{message}"
    );
    let stored = templates.get(&name).await.expect("template");
    let ranked_types: Vec<String> = {
        let mut seen = Vec::new();
        for c in &stored.status.as_ref().expect("status").candidates {
            if !seen.contains(&c.instance_type) {
                seen.push(c.instance_type.clone());
            }
        }
        seen
    };
    assert!(!ranked_types.is_empty());
    let mut bases = Vec::new();
    for group_name in [format!("{pool}-a"), format!("{pool}-b")] {
        let group = aws::describe_group(&sdk, &group_name)
            .await
            .expect("group exists");
        let overrides = aws::overrides(&group);
        assert!(
            !overrides.is_empty() && overrides.len() <= 6,
            "{group_name}: {overrides:?}"
        );
        let families = ["m5", "m6i", "c5", "c6i", "r5"];
        assert!(
            overrides
                .iter()
                .all(|t| families.iter().any(|f| t.starts_with(&format!("{f}.")))),
            "{overrides:?}"
        );
        let shown = ranked_types.len().min(overrides.len());
        assert_eq!(
            overrides[..shown],
            ranked_types[..shown],
            "overrides follow the ranking order"
        );
        let distribution = group
            .mixed_instances_policy()
            .and_then(|p| p.instances_distribution())
            .expect("distribution");
        assert_eq!(
            distribution.on_demand_percentage_above_base_capacity(),
            Some(30)
        );
        assert_eq!(
            distribution.spot_allocation_strategy(),
            Some("capacity-optimized-prioritized")
        );
        bases.push(distribution.on_demand_base_capacity().unwrap_or(-1));
    }
    assert_eq!(
        bases.iter().sum::<i32>(),
        2,
        "the on-demand base is split across the groups: {bases:?}"
    );
    let other = aws::describe_group(&sdk, &format!("{pool}-other"))
        .await
        .expect("other group");
    assert!(
        aws::overrides(&other).is_empty(),
        "an unselected group is never touched"
    );

    // `kubectl get ntpl` shows the ranking through the printer columns.
    if let Some(kubectl) = support::peer_env_public("CLOUDOPTIM_KUBECTL") {
        let out = std::process::Command::new(kubectl)
            .args(["get", "ntpl", &name, "--kubeconfig"])
            .arg(cp.kubeconfig())
            .output()
            .expect("kubectl runs");
        let table = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let header = table.lines().next().unwrap_or_default();
        for column in ["STRATEGY", "BEST", "ZONE", "READY"] {
            assert!(header.contains(column), "{table}");
        }
        assert!(
            table.contains(&ranked_types[0]) && table.contains("True"),
            "{table}"
        );
    }

    // Phase 2: reconciling again with nothing changed updates nothing.
    let updates = operator
        .metric("cloudoptim_aws_api_calls_total{op=\"UpdateAutoScalingGroup\",result=\"ok\"}");
    assert_eq!(updates, 2.0, "one update per group");
    let reconciles = "cloudoptim_reconcile_duration_seconds_count{controller=\"node_template\"}";
    let before = operator.metric(reconciles);
    let touch = json!({"metadata": {"annotations": {"e2e/touch": "1"}}});
    templates
        .patch(&name, &PatchParams::default(), &Patch::Merge(&touch))
        .await
        .expect("touched");
    eventually(WAIT, "a second reconcile", || async {
        (operator.metric(reconciles) > before).then_some(())
    })
    .await;
    let after = operator
        .metric("cloudoptim_aws_api_calls_total{op=\"UpdateAutoScalingGroup\",result=\"ok\"}");
    assert_eq!(
        after, 2.0,
        "no churn: a second reconcile with the same ranking writes nothing"
    );

    // Phase 3: a SpotRiskFlag on the best type in every zone removes it; its expiry brings it back.
    let best = ranked_types[0].clone();
    let flags: Api<SpotRiskFlag> = Api::all(client.clone());
    let expires = Timestamp::now() + SignedDuration::from_secs(20);
    for zone in ["a", "b", "c", "d", "e", "f"] {
        let zone = format!("{}{zone}", aws::REGION);
        let flag: SpotRiskFlag = serde_json::from_value(json!({
            "apiVersion": "cloudoptim.io/v1alpha1", "kind": "SpotRiskFlag",
            "metadata": {"name": format!("{}.{zone}.{best}", aws::REGION)},
            "spec": {"region": aws::REGION, "zone": zone, "instanceType": best, "reason": "SpotInterruption",
                     "firstSeen": Timestamp::now().to_string(), "lastSeen": Timestamp::now().to_string(),
                     "count": 1, "expiresAt": expires.to_string()}
        }))
        .expect("flag");
        flags
            .create(&PostParams::default(), &flag)
            .await
            .expect("flag created");
    }
    let group_a = format!("{pool}-a");
    eventually(WAIT, "the flagged type to leave the overrides", || async {
        let group = aws::describe_group(&sdk, &group_a).await?;
        let overrides = aws::overrides(&group);
        (!overrides.is_empty() && !overrides.contains(&best)).then_some(())
    })
    .await;
    eventually(
        WAIT,
        "the flagged type to come back after expiry",
        || async {
            let group = aws::describe_group(&sdk, &group_a).await?;
            aws::overrides(&group)
                .first()
                .is_some_and(|t| *t == best)
                .then_some(())
        },
    )
    .await;
    for zone in ["a", "b", "c", "d", "e", "f"] {
        let _ = flags
            .delete(
                &format!("{}.{}{zone}.{best}", aws::REGION, aws::REGION),
                &DeleteParams::default(),
            )
            .await;
    }

    // Phase 4: a template bound to a group that does not exist is Ready=False naming it, and the
    // controller goes on with the others.
    let broken = unique("broken");
    let missing_group = format!("{pool}-missing");
    let template: NodeTemplate = serde_json::from_value(json!({
        "apiVersion": "cloudoptim.io/v1alpha1", "kind": "NodeTemplate",
        "metadata": {"name": broken},
        "spec": {"autoScalingGroups": {"names": [missing_group]}}
    }))
    .expect("template");
    templates
        .create(&PostParams::default(), &template)
        .await
        .expect("created");
    let (status, reason, message) =
        eventually(WAIT, "Ready=False on the broken template", || async {
            ready_condition(&templates, &broken)
                .await
                .filter(|(s, _, _)| s == "False")
        })
        .await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "AutoScalingGroupNotFound")
    );
    assert!(message.contains(&missing_group), "{message}");
    let good = ready_condition(&templates, &name)
        .await
        .expect("still reported");
    assert_eq!(good.0, "True", "the healthy template is unaffected");
    assert!(
        operator.metric(
            "cloudoptim_aws_api_calls_total{op=\"DescribeAutoScalingGroups\",result=\"ok\"}"
        ) > 0.0
    );
    // Phase 5: a policy in dry run changes nothing in its groups; a template no policy selects keeps
    // each group's Spot/on-demand split (only the ranked types are written; a group that had no
    // MixedInstancesPolicy stays all on-demand).
    let dry_pool = unique("pool");
    let dry_group = format!("{dry_pool}-a");
    aws::create_group(
        &sdk,
        &dry_group,
        &template_id,
        1,
        &tags(&[("cloudoptim.io/pool", &dry_pool)]),
    )
    .await;
    aws::set_mixed(&sdk, &dry_group, &template_id, &["m5.large"], 1, 100).await;
    let sized = |g: aws_sdk_autoscaling::types::AutoScalingGroup| {
        (
            aws::split(&g),
            g.min_size(),
            g.max_size(),
            g.desired_capacity(),
        )
    };
    let before = sized(aws::describe_group(&sdk, &dry_group).await.expect("group"));
    let dry_policy: OptimizationPolicy = serde_json::from_value(json!({
        "apiVersion": "cloudoptim.io/v1alpha1", "kind": "OptimizationPolicy",
        "metadata": {"name": unique("dry")},
        "spec": {"nodeTemplateSelector": {"matchLabels": {"pool": dry_pool}}, "dryRun": true,
                 "spot": {"percentage": 90, "onDemandBase": 0}}
    }))
    .expect("policy");
    Api::<OptimizationPolicy>::all(client.clone())
        .create(&PostParams::default(), &dry_policy)
        .await
        .expect("dry-run policy created");
    let keep_pool = unique("pool");
    let kept = format!("{keep_pool}-mixed");
    let plain = format!("{keep_pool}-plain");
    for g in [&kept, &plain] {
        aws::create_group(
            &sdk,
            g,
            &template_id,
            1,
            &tags(&[("cloudoptim.io/pool", &keep_pool)]),
        )
        .await;
    }
    aws::set_mixed(&sdk, &kept, &template_id, &["m5.large"], 1, 100).await;
    let mut names = Vec::new();
    for pool in [&dry_pool, &keep_pool] {
        let name = unique("phase5");
        let template: NodeTemplate = serde_json::from_value(json!({
            "apiVersion": "cloudoptim.io/v1alpha1", "kind": "NodeTemplate",
            "metadata": {"name": name, "labels": {"pool": pool}},
            "spec": {
                "autoScalingGroups": {"tagSelector": {"cloudoptim.io/pool": pool}},
                "requirements": {"families": ["c6i", "m7i", "m6a"], "minVcpu": 2, "maxVcpu": 8, "maxTypes": 4}
            }
        }))
        .expect("template");
        templates
            .create(&PostParams::default(), &template)
            .await
            .expect("created");
        names.push(name);
    }
    let (status, _, message) = eventually(WAIT, "the dry-run template ranked", || async {
        ready_condition(&templates, &names[0])
            .await
            .filter(|(s, _, _)| s == "True")
    })
    .await;
    assert!(message.contains("dry run"), "{status}: {message}");
    let (_, _, message) = eventually(WAIT, "the unselected template ranked", || async {
        ready_condition(&templates, &names[1])
            .await
            .filter(|(s, _, _)| s == "True")
    })
    .await;
    assert!(
        message.contains("no OptimizationPolicy selects"),
        "{message}"
    );
    let (overrides, base, percent) = eventually(WAIT, "the kept group's ranked types", || async {
        let split = aws::split(&aws::describe_group(&sdk, &kept).await?);
        (split.0.len() > 1).then_some(split)
    })
    .await;
    assert_eq!(
        (base, percent),
        (Some(1), Some(100)),
        "the split stays as the user set it: {overrides:?}"
    );
    let (plain_overrides, base, percent) =
        eventually(WAIT, "the plain group's ranked types", || async {
            let split = aws::split(&aws::describe_group(&sdk, &plain).await?);
            (!split.0.is_empty()).then_some(split)
        })
        .await;
    assert_eq!(
        (base, percent),
        (Some(0), Some(100)),
        "a group that had no MixedInstancesPolicy stays all on-demand: {plain_overrides:?}"
    );
    // The dry-run group was reconciled (the template is Ready after it) and is exactly as before.
    let after = sized(aws::describe_group(&sdk, &dry_group).await.expect("group"));
    assert_eq!(
        after, before,
        "dry run: the group's policy and sizes are unchanged"
    );
    // A duration the CRD pattern admits but no arithmetic should see: Ready=False naming the field, the
    // operator unharmed.
    let huge = unique("huge");
    let policy: OptimizationPolicy = serde_json::from_value(json!({
        "apiVersion": "cloudoptim.io/v1alpha1", "kind": "OptimizationPolicy",
        "metadata": {"name": huge},
        "spec": {"nodeTemplateSelector": {"matchLabels": {"pool": unique("none")}},
                 "disruption": {"drainTimeout": "999999999999d",
                                "budgets": [{"nodes": "1", "schedule": "0 9 * * *", "duration": "1d"}]}}
    }))
    .expect("policy");
    let policies: Api<OptimizationPolicy> = Api::all(client.clone());
    policies
        .create(&PostParams::default(), &policy)
        .await
        .expect("admitted: the pattern allows it");
    let (reason, message) = eventually(WAIT, "the huge duration reported", || async {
        let p = policies.get(&huge).await.ok()?;
        let ready = p
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Ready")?;
        (ready.status == "False").then_some((ready.reason, ready.message))
    })
    .await;
    assert_eq!(reason, "InvalidPolicy", "{message}");
    assert!(
        message.contains("disruption.drainTimeout") && message.contains("366d"),
        "{message}"
    );
    assert!(
        operator.get("/healthz").is_some_and(|(c, _)| c == 200) && operator.is_ready(),
        "the operator is unharmed"
    );
    operator.kill();

    // An outside observer's view: every AWS request the operator made (moto's request log) is granted
    // by the shipped IAM policy.
    let made = moto.assert_operator_actions_allowed();
    assert!(
        made.contains("autoscaling:UpdateAutoScalingGroup"),
        "{made:?}"
    );
}
