use super::*;
use serde_json::json;

fn policy(spec: serde_json::Value) -> OptimizationPolicy {
    serde_json::from_value(json!({
        "apiVersion": "cloudoptim.io/v1alpha1",
        "kind": "OptimizationPolicy",
        "metadata": {"name": "p"},
        "spec": spec,
    }))
    .expect("policy")
}

#[test]
fn durations_follow_the_crd_pattern() {
    assert_eq!(
        parse_duration("f", "90s").ok(),
        Some(Duration::from_secs(90))
    );
    assert_eq!(
        parse_duration("f", "1h30m").ok(),
        Some(Duration::from_secs(5400))
    );
    assert_eq!(
        parse_duration("f", "14d").ok(),
        Some(Duration::from_secs(14 * 86400))
    );
    assert_eq!(
        parse_duration("f", "500ms").ok(),
        Some(Duration::from_millis(500))
    );
    for bad in ["", "5", "m5", "5x", "1.5h"] {
        let e = parse_duration("consolidation.interval", bad).expect_err(bad);
        assert!(
            e.to_string().starts_with("spec.consolidation.interval:"),
            "{e}"
        );
    }
}

#[test]
fn day_durations_are_accepted_everywhere_and_huge_ones_are_invalid_not_a_panic() {
    let p = policy(json!({
        "consolidation": {"consolidateAfter": "1d", "interval": "90m"},
        "disruption": {"drainTimeout": "14d", "budgets": [
            {"nodes": "1", "schedule": "0 9 * * *", "duration": "1d"}
        ]},
        "zombies": {"gracePeriod": "2d"}
    }));
    let s = settings(&p).expect("1d, 14d and 90m are valid everywhere");
    assert_eq!(s.drain_timeout, Duration::from_secs(14 * 86_400));
    assert_eq!(s.consolidate_after, Duration::from_secs(86_400));
    let p = policy(json!({"disruption": {"drainTimeout": "999999999999d"}}));
    let e = settings(&p).expect_err("out of range");
    assert_eq!(e.reason(), "InvalidPolicy");
    assert!(e.to_string().contains("disruption.drainTimeout"), "{e}");
    assert!(e.to_string().contains("366d"), "{e}");
    let p = policy(json!({"disruption": {"budgets": [
        {"nodes": "1", "schedule": "0 9 * * *", "duration": "999999999999d"}
    ]}}));
    assert_eq!(
        settings(&p).expect_err("out of range").reason(),
        "InvalidBudget"
    );
}

#[test]
fn an_unparsable_budget_fails_closed_naming_it() {
    let p = policy(json!({"disruption": {"budgets": [
        {"nodes": "1"},
        {"nodes": "2", "schedule": "not cron", "duration": "1h"}
    ]}}));
    let e = settings(&p).expect_err("bad budget");
    assert_eq!(e.reason(), "InvalidBudget");
    assert!(e.to_string().contains("budgets[1].schedule"), "{e}");
    assert!(e.to_string().contains("no node is disrupted"), "{e}");
}

#[test]
fn the_batch_is_the_most_restrictive_active_budget() {
    let p = policy(json!({"disruption": {"budgets": [{"nodes": "50%"}, {"nodes": "1"}]}}));
    let s = settings(&p).expect("settings");
    assert_eq!(batch_limit(&s, 10, Utc::now()), 1);
    let p = policy(json!({}));
    let s = settings(&p).expect("settings");
    assert_eq!(
        batch_limit(&s, 10, Utc::now()),
        1,
        "default 10% of 10, rounded up"
    );
    assert_eq!(batch_limit(&s, 25, Utc::now()), 3);
    let p = policy(json!({"disruption": {"budgets": [{"nodes": "0"}]}}));
    assert_eq!(batch_limit(&settings(&p).expect("s"), 10, Utc::now()), 0);
}

#[test]
fn provider_ids_name_the_instance() {
    assert_eq!(instance_id("aws:///us-east-1a/i-0abc"), Some("i-0abc"));
    assert_eq!(instance_id("kind://docker/x"), None);
}

#[test]
fn stripped_pods_keep_what_the_planner_reads_and_drop_the_rest() {
    let mut pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "a", "namespace": "n", "annotations": {
                "cloudoptim.io/do-not-disrupt": "true", "kubectl.kubernetes.io/last-applied-configuration": "{...}"},
                "managedFields": [{"manager": "x"}], "labels": {"app": "a"}},
            "spec": {"nodeName": "node-1", "nodeSelector": {"k": "v"},
                "containers": [{"name": "c", "image": "big", "env": [{"name": "E", "value": "x"}],
                    "resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "1"}}}],
                "volumes": [{"name": "cfg", "configMap": {"name": "c"}}, {"name": "data", "persistentVolumeClaim": {"claimName": "d"}}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .expect("pod");
    strip_pod(&mut pod);
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    assert!(annotations.contains_key("cloudoptim.io/do-not-disrupt"));
    assert_eq!(annotations.len(), 1);
    assert!(pod.metadata.managed_fields.is_none());
    let spec = pod.spec.as_ref().expect("spec");
    assert_eq!(spec.node_name.as_deref(), Some("node-1"));
    assert!(spec.node_selector.is_some());
    let c = &spec.containers[0];
    assert!(c.image.is_none() && c.env.is_none());
    let r = c.resources.as_ref().expect("resources");
    assert!(r.requests.is_some() && r.limits.is_none());
    let volumes = spec.volumes.as_ref().expect("volumes");
    assert_eq!(volumes.len(), 1);
    assert!(volumes[0].persistent_volume_claim.is_some());
    assert_eq!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Running")
    );
    assert!(pod.status.as_ref().is_some_and(|s| s.conditions.is_none()));
    // The stripped pod still translates.
    let (node, _) = k8s::engine_pod(&pod)
        .expect("translates")
        .expect("a scheduled pod counts");
    assert_eq!(node, "node-1");
}

// ---- the plan step, driven by plain data (no API server, no AWS) ----------------------------------

mod decide {
    use super::*;
    use crate::controllers::policy::plan::decide;
    use crate::controllers::policy::read::Inputs;
    use crate::engine::snapshot::{self as model, NodeId, Resources};

    const GIB: u64 = 1 << 30;

    /// Three 4 vCPU nodes in group `g`: `busy-0` and `busy-1` half full, `idle` empty; `marked` are
    /// drains a previous run left behind.
    fn inputs(marked: &[&str]) -> Inputs {
        let names = ["busy-0", "busy-1", "idle"];
        let scope = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                Arc::new(
                    serde_json::from_value::<Node>(json!({
                        "metadata": {"name": name},
                        "spec": {"providerID": format!("aws:///us-east-1a/i-{i}")}
                    }))
                    .expect("node"),
                )
            })
            .collect();
        let nodes = names
            .iter()
            .map(|name| {
                let mut n = model::Node::new(
                    *name,
                    Resources {
                        cpu_millis: 4000,
                        memory_bytes: 16 * GIB,
                        pods: 110,
                    },
                );
                n.hourly_price = Some(0.2);
                n
            })
            .collect();
        let pods = (0..2)
            .map(|i| {
                model::Pod::new(
                    "app",
                    &format!("web-{i}"),
                    NodeId(i),
                    Resources::pod(1500, 4 * GIB),
                )
            })
            .collect();
        Inputs {
            templates: 1,
            owners: (0..3)
                .map(|i| (format!("i-{i}"), ("t".to_string(), "g".to_string())))
                .collect(),
            scope,
            all_node_ids: (0..3).map(|i| format!("i-{i}")).collect(),
            snapshot: model::Snapshot {
                nodes,
                pods,
                pdbs: vec![],
            },
            catalog: Arc::new(crate::engine::catalog::Catalog::embedded().clone()),
            spot_averages: crate::controllers::catalog::Averages {
                averages: Default::default(),
                error: None,
            },
            marked: marked.iter().map(|s| s.to_string()).collect(),
            offers: Vec::new(),
            groups: BTreeMap::from([(
                "g".to_string(),
                crate::cloud::AutoScalingGroup {
                    name: "g".into(),
                    max: 10,
                    desired: 3,
                    instances: (0..3).map(|i| format!("i-{i}")).collect(),
                    zones: vec!["us-east-1a".into()],
                    launch_template: Some(crate::cloud::LaunchTemplateRef {
                        id: Some("lt-1".into()),
                        name: None,
                        version: Some("$Latest".into()),
                    }),
                    ..Default::default()
                },
            )]),
            nodes_by_instance: names
                .iter()
                .enumerate()
                .map(|(i, n)| (format!("i-{i}"), n.to_string()))
                .collect(),
            replacements: Vec::new(),
            instances: Vec::new(),
            policies: BTreeSet::new(),
            cluster: "c1".into(),
            policy: "p".into(),
        }
    }

    /// One on-demand 4 vCPU node at $0.25/h: it holds both busy nodes' pods.
    fn cheaper_offer() -> crate::engine::consolidation::Offer {
        crate::engine::consolidation::Offer {
            instance_type: "m6i.xlarge".into(),
            zone: "us-east-1a".into(),
            capacity_type: crate::engine::ranking::CapacityType::OnDemand,
            hourly: 0.25,
            allocatable: crate::engine::consolidation::kubelet_allocatable(4, 16 * 1024, 110),
            labels: Default::default(),
            taints: Vec::new(),
        }
    }

    fn settings_of(spec: serde_json::Value) -> Settings {
        settings(&policy(spec)).expect("valid policy")
    }

    #[test]
    fn busy_nodes_a_cheaper_offer_can_hold_are_planned_for_replacement_not_touched() {
        // Above a 0.3 threshold, busy-0 and busy-1 ($0.2/h each) stay; one 4 vCPU node at $0.25/h
        // holds both their pods. `idle` is removed as before.
        let settings = settings_of(json!({"consolidation": {"utilizationThreshold": 0.3}}));
        let mut inputs = inputs(&[]);
        inputs.offers = vec![cheaper_offer()];
        let decision = decide(
            &inputs,
            &settings,
            &mut BTreeMap::new(),
            Utc::now(),
            Instant::now(),
        )
        .expect("plans");
        let planned = decision.planned_replacements();
        assert_eq!(planned.len(), 1, "{planned:?}");
        assert_eq!(planned[0].replace, ["busy-0", "busy-1"]);
        assert_eq!(planned[0].instance_type, "m6i.xlarge");
        assert!((planned[0].savings_hourly - 0.15).abs() < 1e-9);
        // Planned only: nothing about them is removed in this pass, and the estimate is unchanged.
        assert!(
            decision
                .removals
                .iter()
                .all(|r| r.node != "busy-0" && r.node != "busy-1")
        );
        // Mode Off plans none.
        let off = settings_of(json!({"consolidation": {"mode": "Off"}}));
        let none = decide(
            &inputs,
            &off,
            &mut BTreeMap::new(),
            Utc::now(),
            Instant::now(),
        )
        .expect("plans");
        assert!(none.replacements.is_empty());
    }

    #[test]
    fn replacement_enabled_false_plans_and_reports_but_never_launches() {
        // Only the two busy nodes: nothing to remove, so a waited replacement launches this pass.
        let mut inputs = inputs(&[]);
        inputs.scope.truncate(2);
        inputs.snapshot.nodes.truncate(2);
        inputs.offers = vec![cheaper_offer()];
        let decide_with = |replacement: serde_json::Value| {
            let settings = settings_of(json!({
                "consolidation": {
                    "utilizationThreshold": 0.3, "consolidateAfter": "0s", "replacement": replacement
                },
                "disruption": {"budgets": [{"nodes": "2"}]}
            }));
            decide(
                &inputs,
                &settings,
                &mut BTreeMap::new(),
                Utc::now(),
                Instant::now(),
            )
            .expect("plans")
        };
        let on = decide_with(json!({"enabled": true}));
        assert_eq!(on.planned_replacements().len(), 1);
        assert_eq!(on.launches.len(), 1, "enabled, it launches: {:?}", on.notes);
        let off = decide_with(json!({"enabled": false}));
        assert_eq!(
            off.planned_replacements().len(),
            1,
            "disabled: still planned and reported in the status"
        );
        assert!(off.launches.is_empty(), "disabled: nothing is launched");
    }

    #[test]
    fn an_empty_node_is_removed_only_after_consolidate_after() {
        let settings = settings_of(json!({"consolidation": {"consolidateAfter": "60s"}}));
        let inputs = inputs(&[]);
        let mut candidates = BTreeMap::new();
        let t0 = Instant::now();
        let first = decide(&inputs, &settings, &mut candidates, Utc::now(), t0).expect("plans");
        assert!(
            first.removals.is_empty(),
            "a new candidate waits: {:?}",
            first.removals
        );
        assert!(candidates.contains_key("idle"), "{candidates:?}");
        let later = decide(
            &inputs,
            &settings,
            &mut candidates,
            Utc::now(),
            t0 + Duration::from_secs(61),
        )
        .expect("plans");
        let removed: Vec<_> = later.removals.iter().map(|r| r.node.as_str()).collect();
        assert!(removed.contains(&"idle"), "{removed:?}");
        let idle = later
            .removals
            .iter()
            .find(|r| r.node == "idle")
            .expect("idle");
        assert_eq!(
            (idle.instance.as_str(), idle.group.as_str(), idle.hourly),
            ("i-2", "g", 0.2)
        );
    }

    #[test]
    fn left_behind_drains_resume_within_the_budget_and_the_rest_are_released() {
        let budget_one = json!({"disruption": {"budgets": [{"nodes": "1"}]}});
        let settings = settings_of(budget_one);
        let decision = decide(
            &inputs(&["busy-0", "busy-1"]),
            &settings,
            &mut BTreeMap::new(),
            Utc::now(),
            Instant::now(),
        )
        .expect("plans");
        assert_eq!(decision.limit, 1);
        assert_eq!(decision.in_flight, vec!["busy-0".to_string()]);
        assert_eq!(decision.over_budget, vec!["busy-1".to_string()]);
        assert_eq!(
            decision
                .removals
                .iter()
                .map(|r| r.node.as_str())
                .collect::<Vec<_>>(),
            vec!["busy-0"],
            "only the resumed drain: new candidates wait consolidateAfter"
        );
    }

    #[test]
    fn with_consolidation_off_nothing_is_removed_and_every_left_behind_drain_is_released() {
        let settings = settings_of(json!({"consolidation": {"mode": "Off"}}));
        let decision = decide(
            &inputs(&["busy-0"]),
            &settings,
            &mut BTreeMap::new(),
            Utc::now(),
            Instant::now(),
        )
        .expect("plans");
        assert!(decision.removals.is_empty());
        assert!(decision.in_flight.is_empty());
        assert_eq!(decision.over_budget, vec!["busy-0".to_string()]);
    }

    #[test]
    fn savings_are_estimated_at_the_30_day_average_and_the_latest_price_without_history() {
        let mut inputs = inputs(&[]);
        for n in &mut inputs.snapshot.nodes {
            n.region = Some("us-east-1".into());
            n.zone = Some("us-east-1a".into());
            n.capacity_type = model::CapacityType::Spot;
        }
        inputs.snapshot.nodes[0].instance_type = Some("m5.xlarge".into());
        inputs.spot_averages.averages = crate::engine::spot_average::SpotAverages {
            region: "us-east-1".into(),
            prices: [(("us-east-1a".into(), "m5.xlarge".into()), 0.1)].into(),
        };
        let settings = settings_of(json!({}));

        let decision = decide(
            &inputs,
            &settings,
            &mut BTreeMap::new(),
            Utc::now(),
            Instant::now(),
        )
        .expect("plans");

        assert_eq!(decision.averaged, 1);
        assert!(
            (decision.cost.current_hourly - (0.1 + 0.2 + 0.2)).abs() < 1e-9,
            "busy-0 at its average, the others at their latest price: {}",
            decision.cost.current_hourly
        );
        assert_eq!(
            inputs.snapshot.nodes[0].hourly_price,
            Some(0.2),
            "the plan itself keeps the latest price"
        );
        assert_eq!(
            crate::controllers::policy::status::estimate_prices(&inputs, &decision),
            "cost estimated at 30-day average Spot prices for 1 of 3 nodes, the latest Spot price for \
             the others (no Spot price history for their zone and type)"
        );
    }

    #[test]
    fn a_node_outside_the_selected_groups_is_never_removed() {
        let settings = settings_of(json!({"consolidation": {"consolidateAfter": "0s"}}));
        let mut inputs = inputs(&[]);
        inputs.owners.remove("i-2");
        let decision = decide(
            &inputs,
            &settings,
            &mut BTreeMap::new(),
            Utc::now(),
            Instant::now(),
        )
        .expect("plans");
        assert!(
            decision.removals.iter().all(|r| r.node != "idle"),
            "{:?}",
            decision.removals
        );
    }
}

#[test]
fn a_spec_error_waits_for_a_change_and_the_rest_is_retried() {
    let invalid = Error::Invalid {
        field: "nodes".into(),
        message: "min 3 is above max 1".into(),
    };
    assert_eq!(invalid.action(), Action::await_change());
    let conflict = Error::Conflict {
        template: "t".into(),
        other: "q".into(),
    };
    assert_eq!(conflict.action(), Action::requeue(Duration::from_secs(300)));
    assert_eq!(
        Error::Plan("x".into()).action(),
        Action::requeue(Duration::from_secs(15))
    );
}

#[test]
fn one_policy_owns_right_sizing_the_oldest() {
    let make = |name: &str, created: &str, mode: &str| {
        serde_json::from_value::<OptimizationPolicy>(json!({
            "apiVersion": "cloudoptim.io/v1alpha1",
            "kind": "OptimizationPolicy",
            "metadata": {"name": name, "creationTimestamp": created},
            "spec": {"rightsizing": {"mode": mode}},
        }))
        .expect("policy")
    };
    let old = make("old", "2026-01-01T00:00:00Z", "Apply");
    let young = make("young", "2026-02-01T00:00:00Z", "Recommend");
    let off = make("earliest-off", "2025-01-01T00:00:00Z", "Off");
    let all = [old.clone(), young.clone(), off.clone()];
    assert!(read::rightsizing_owner(&old, &all).is_ok());
    let refused = read::rightsizing_owner(&young, &all).expect_err("a second owner");
    assert!(matches!(&refused, Error::RightsizingConflict { other } if other == "old"));
    assert_eq!(refused.reason(), "ConflictingPolicies");
    assert!(
        refused.to_string().contains("rightsizing.mode: Off"),
        "{refused}"
    );
    // A policy with right-sizing off is never refused for it, and does not own it.
    assert!(read::rightsizing_owner(&off, &all).is_ok());
    // Same age: the first by name owns it.
    let twin = make("a-twin", "2026-01-01T00:00:00Z", "Recommend");
    let pair = [old.clone(), twin.clone()];
    assert!(read::rightsizing_owner(&twin, &pair).is_ok());
    assert!(read::rightsizing_owner(&old, &pair).is_err());
    // The owner being deleted hands over.
    let mut leaving = old.clone();
    leaving.metadata.deletion_timestamp = old.metadata.creation_timestamp.clone();
    assert!(read::rightsizing_owner(&young, &[leaving, young.clone()]).is_ok());
}

#[test]
fn only_changes_by_others_wake_a_policy() {
    let base = policy(json!({"dryRun": true}));
    let mut status_only = base.clone();
    status_only.status = Some(OptimizationPolicyStatus {
        observed_generation: Some(7),
        ..Default::default()
    });
    status_only.metadata.resource_version = Some("99".into());
    assert_eq!(changed_by_others(&base), changed_by_others(&status_only));
    let mut spec = base.clone();
    spec.metadata.generation = Some(2);
    let mut annotated = base.clone();
    annotated.metadata.annotations = Some([("a".to_string(), "b".to_string())].into());
    let mut labelled = base.clone();
    labelled.metadata.labels = Some([("a".to_string(), "b".to_string())].into());
    let mut deleted = base.clone();
    deleted.metadata.deletion_timestamp = base
        .metadata
        .creation_timestamp
        .clone()
        .or(Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)));
    for changed in [spec, annotated, labelled, deleted] {
        assert_ne!(changed_by_others(&base), changed_by_others(&changed));
    }
}
