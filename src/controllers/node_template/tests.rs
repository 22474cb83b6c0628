use std::collections::BTreeMap;

use super::*;
use serde_json::json;

fn template(labels: &[(&str, &str)]) -> NodeTemplate {
    let mut t: NodeTemplate =
        serde_yaml::from_str(include_str!("../../../examples/nodetemplate.yaml")).expect("example");
    t.metadata.labels = Some(
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    );
    t
}

fn policy(name: &str, selector: serde_json::Value, percentage: u32) -> OptimizationPolicy {
    serde_json::from_value(json!({
            "apiVersion": "cloudoptim.io/v1alpha1", "kind": "OptimizationPolicy",
            "metadata": {"name": name},
            "spec": {"nodeTemplateSelector": selector, "spot": {"percentage": percentage, "onDemandBase": 3}}
        }))
        .expect("policy")
}

#[test]
fn the_selecting_policy_supplies_the_spot_mix() {
    let t = template(&[("pool", "general")]);
    let policies = [
        policy("a", json!({"matchLabels": {"pool": "general"}}), 80),
        policy("b", json!({"matchLabels": {"pool": "gpu"}}), 10),
    ];
    assert_eq!(
        policy_for(&t, &policies)
            .expect("one policy")
            .map(|g| g.mix),
        Some(PolicyMix {
            spot_percentage: 80,
            on_demand_base: 3
        })
    );
    assert_eq!(
        policy_for(&t, &[]).expect("no policy is not an error"),
        None,
        "no selecting policy: no Spot mix is imposed on the groups"
    );
}

#[test]
fn a_group_status_reports_the_split_written_or_kept() {
    let group = AutoScalingGroup {
        name: "g".into(),
        mixed: Some(MixedInstances {
            on_demand_percentage_above_base: 40,
            ..MixedInstances::default()
        }),
        ..AutoScalingGroup::default()
    };
    assert_eq!(group_status(&group, None).spot_percentage, 60);
    let written = MixedInstances {
        on_demand_percentage_above_base: 10,
        ..MixedInstances::default()
    };
    assert_eq!(group_status(&group, Some(&written)).spot_percentage, 90);
    let plain = AutoScalingGroup::default();
    assert_eq!(group_status(&plain, None).spot_percentage, 0);
}

#[test]
fn two_selecting_policies_are_a_conflict_naming_both() {
    let t = template(&[("pool", "general")]);
    let policies = [
        policy("a", json!({}), 80),
        policy("b", json!({"matchLabels": {"pool": "general"}}), 10),
    ];
    let err = policy_for(&t, &policies).expect_err("conflict");
    assert_eq!(err.reason(), "ConflictingPolicies");
    assert!(err.to_string().contains("a, b"), "{err}");
}

#[test]
fn missing_named_groups_are_listed() {
    let found = [AutoScalingGroup {
        name: "a".into(),
        ..AutoScalingGroup::default()
    }];
    let selector = GroupSelector::Names(vec!["a".into(), "b".into()]);
    assert_eq!(
        missing_groups(&selector, &found).as_deref(),
        Some("Auto Scaling group(s) not found: b")
    );
    let tags = GroupSelector::Tags([("k".to_string(), "v".to_string())].into());
    assert!(missing_groups(&tags, &[]).is_some_and(|m| m.contains("k=v")));
    assert!(missing_groups(&tags, &found).is_none());
}

#[test]
fn expired_and_foreign_flags_are_ignored_and_the_next_expiry_is_known() {
    let flag = |zone: &str, expires: i64| -> SpotRiskFlag {
        let ts = |s: i64| {
            k8s_openapi::jiff::Timestamp::from_second(s)
                .expect("timestamp")
                .to_string()
        };
        serde_json::from_value(json!({
                "apiVersion": "cloudoptim.io/v1alpha1", "kind": "SpotRiskFlag", "metadata": {"name": zone},
                "spec": {"region": zone.trim_end_matches(char::is_alphabetic), "zone": zone, "instanceType": "m5.large",
                         "reason": "SpotInterruption", "firstSeen": ts(0), "lastSeen": ts(0), "count": 1, "expiresAt": ts(expires)}
            }))
            .expect("flag")
    };
    let flags = [
        flag("us-east-1a", 1_000),
        flag("us-east-1b", 500),
        flag("us-east-1c", 10),
        flag("eu-west-1a", 900),
    ];
    let (pairs, next) = active_flags(&flags, "us-east-1", 100);
    assert_eq!(pairs.len(), 2);
    assert_eq!(next, Some(500));
}

// ---- the plan step from plain data: each group's MixedInstancesPolicy and the requeue -------------

fn group(name: &str, mixed: Option<MixedInstances>) -> AutoScalingGroup {
    AutoScalingGroup {
        name: name.into(),
        mixed,
        ..AutoScalingGroup::default()
    }
}

#[test]
fn a_governed_template_gets_the_policy_split_and_its_base_is_shared_by_the_groups() {
    let t = template(&[("pool", "general")]);
    let policies = [policy("p", json!({"matchLabels": {"pool": "general"}}), 70)];
    let governing = policy_for(&t, &policies).expect("valid").expect("governed");
    let groups = [group("a", None), group("b", None)];
    let desired = desired_groups(
        &t,
        &groups,
        Some(&governing),
        &["m7i.large", "c6i.large"],
        0,
    );
    let bases: Vec<i32> = desired.iter().map(|(m, _)| m.on_demand_base).collect();
    assert_eq!(
        bases.iter().sum::<i32>(),
        3,
        "the policy's base 3, split: {bases:?}"
    );
    for (mixed, fallback) in &desired {
        assert_eq!(mixed.on_demand_percentage_above_base, 30);
        assert_eq!(
            mixed.overrides.first().map(String::as_str),
            Some("m7i.large")
        );
        assert_eq!(*fallback, None);
    }
}

#[test]
fn without_a_policy_each_group_keeps_its_split_and_a_plain_group_stays_on_demand() {
    let t = template(&[("pool", "nobody-selects-this")]);
    let current = MixedInstances {
        overrides: vec!["m5.large".into()],
        on_demand_base: 1,
        on_demand_percentage_above_base: 25,
        spot_allocation_strategy: None,
    };
    let groups = [group("mixed", Some(current)), group("plain", None)];
    let desired = desired_groups(&t, &groups, None, &["c6i.large"], 0);
    assert_eq!(
        (
            desired[0].0.on_demand_base,
            desired[0].0.on_demand_percentage_above_base
        ),
        (1, 25)
    );
    assert_eq!(desired[0].0.overrides, vec!["c6i.large".to_string()]);
    assert_eq!(
        (
            desired[1].0.on_demand_base,
            desired[1].0.on_demand_percentage_above_base
        ),
        (0, 100)
    );
}

#[test]
fn a_spot_fallback_puts_its_group_on_demand_until_it_ends_and_the_requeue_follows_it() {
    let mut t = template(&[("pool", "general")]);
    let now = 1_000_000;
    t.metadata.annotations = Some(
        [(
            SPOT_FALLBACK_ANNOTATION.to_string(),
            json!({"a": chrono::DateTime::from_timestamp(now + 120, 0).expect("time").to_rfc3339()})
                .to_string(),
        )]
        .into(),
    );
    let policies = [policy("p", json!({"matchLabels": {"pool": "general"}}), 70)];
    let governing = policy_for(&t, &policies).expect("valid").expect("governed");
    let groups = [group("a", None), group("b", None)];
    let desired = desired_groups(&t, &groups, Some(&governing), &["m7i.large"], now);
    assert_eq!(
        desired[0].0.on_demand_percentage_above_base, 100,
        "a falls back"
    );
    assert_eq!(desired[0].1, Some(now + 120));
    assert_eq!(
        desired[1].0.on_demand_percentage_above_base, 30,
        "b keeps Spot"
    );
    let fallbacks = [("a".to_string(), now + 120)];
    assert_eq!(requeue_for(None, &fallbacks, now), Duration::from_secs(121));
    assert_eq!(
        requeue_for(Some(now + 10), &fallbacks, now),
        Duration::from_secs(11)
    );
    assert_eq!(requeue_for(None, &[], now), RERANK_INTERVAL);
}
