//! HibernationSchedule end to end: the real `cloudoptim run` binary against a real API server (with
//! kube-controller-manager) and a moto server puts two namespaces' workloads and one Auto Scaling group
//! to sleep and wakes them, keeps a count a person changed, survives a crash, resumes the states a crash
//! between two writes leaves behind, restores everything when the schedule is deleted, and wakes on a
//! timetable boundary computed from now.
//!
//! One scenario per test binary: the operator reconciles every (cluster-scoped) schedule it sees, so
//! the phases run in order against one operator and one moto server.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{Datelike, Timelike, Utc};
use cloudoptim::api::HibernationSchedule;
use cloudoptim::api::hibernation::HibernationState;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::Event;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use support::operator::{Operator, eventually};
use support::{ControlPlane, Moto, aws, create_namespace, unique};

const WAIT: Duration = Duration::from_secs(60);

async fn deployment(client: &Client, ns: &str, name: &str, replicas: i32, keep_awake: bool) {
    let annotations = if keep_awake {
        json!({"cloudoptim.io/hibernate": "false"})
    } else {
        json!({})
    };
    let object: Deployment = serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": annotations},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                // No node carries this label: the pods stay Pending, which is all this test needs.
                "spec": {"nodeSelector": {"e2e/none": "none"}, "containers": [{"name": "c", "image": "pause"}]}
            }
        }
    }))
    .expect("deployment");
    Api::<Deployment>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &object)
        .await
        .expect("deployment created");
}

async fn statefulset(client: &Client, ns: &str, name: &str, replicas: i32) {
    let object: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "serviceName": name,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"nodeSelector": {"e2e/none": "none"}, "containers": [{"name": "c", "image": "pause"}]}
            }
        }
    }))
    .expect("statefulset");
    Api::<StatefulSet>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &object)
        .await
        .expect("statefulset created");
}

async fn cronjob(client: &Client, ns: &str, name: &str) {
    let object: CronJob = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "schedule": "0 3 * * *",
            "jobTemplate": {"spec": {"template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "c", "image": "pause"}]
            }}}}
        }
    }))
    .expect("cronjob");
    Api::<CronJob>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &object)
        .await
        .expect("cronjob created");
}

/// (replicas, saved annotation) of a Deployment.
async fn deploy_state(client: &Client, ns: &str, name: &str) -> (i32, Option<String>) {
    let d = Api::<Deployment>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .expect("deployment");
    (
        d.spec.and_then(|s| s.replicas).unwrap_or(1),
        d.metadata
            .annotations
            .and_then(|a| a.get("cloudoptim.io/original-replicas").cloned()),
    )
}

async fn sts_replicas(client: &Client, ns: &str, name: &str) -> i32 {
    Api::<StatefulSet>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .expect("statefulset")
        .spec
        .and_then(|s| s.replicas)
        .unwrap_or(1)
}

async fn cron_suspended(client: &Client, ns: &str, name: &str) -> bool {
    Api::<CronJob>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .expect("cronjob")
        .spec
        .and_then(|s| s.suspend)
        .unwrap_or(false)
}

/// (min, max, desired, tags) of a group in moto.
async fn group_state(
    sdk: &aws_config::SdkConfig,
    name: &str,
) -> (i32, i32, i32, BTreeMap<String, String>) {
    let g = aws::describe_group(sdk, name).await.expect("group exists");
    let tags = g
        .tags()
        .iter()
        .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
        .collect();
    (
        g.min_size().unwrap_or(-1),
        g.max_size().unwrap_or(-1),
        g.desired_capacity().unwrap_or(-1),
        tags,
    )
}

async fn state_of(api: &Api<HibernationSchedule>, name: &str) -> Option<HibernationState> {
    let s = api.get(name).await.ok()?;
    let status = s.status?;
    (status.observed_generation == s.metadata.generation).then_some(status.state)?
}

async fn set_override(api: &Api<HibernationSchedule>, name: &str, state: &str, seconds: i64) {
    let until = (Utc::now() + chrono::TimeDelta::seconds(seconds))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"override": {"state": state, "until": until}}})),
    )
    .await
    .expect("override set");
}

const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

#[tokio::test]
async fn hibernation_sleeps_and_wakes_workloads_and_node_groups() {
    let Some(cp) = ControlPlane::shared() else {
        return;
    };
    let Some(moto) = Moto::start() else { return };
    moto.start_recording();
    let client = cp.client().await;
    let sdk = aws::sdk_config(&moto.endpoint).await;
    let schedules: Api<HibernationSchedule> = Api::all(client.clone());

    // A schedule driven by the timetable alone, in its own namespace: asleep now, awake from the next
    // minute boundary (UTC, no pre-warm). Checked at the end, after the other phases.
    let timed_ns = create_namespace(&client, "hib-timed").await;
    deployment(&client, &timed_ns, "api", 2, false).await;
    // At least 90 s away, so the operator (started after the rest of the setup) puts the namespace to
    // sleep before it; on a minute, as windows have minute precision.
    let boundary = {
        let soon = Utc::now() + chrono::TimeDelta::seconds(90);
        let next = soon + chrono::TimeDelta::seconds(60 - i64::from(soon.second()));
        next.with_nanosecond(0).expect("whole second")
    };
    let end = boundary + chrono::TimeDelta::minutes(30);
    let window = if end.date_naive() == boundary.date_naive() {
        format!(
            "{day}-{day} {:02}:{:02}-{:02}:{:02}",
            boundary.hour(),
            boundary.minute(),
            end.hour(),
            end.minute(),
            day = DAYS[boundary.weekday().num_days_from_monday() as usize]
        )
    } else {
        let day = DAYS[boundary.weekday().num_days_from_monday() as usize];
        format!(
            "{day}-{day} {:02}:{:02}-24:00",
            boundary.hour(),
            boundary.minute()
        )
    };
    let timed = unique("timed");
    let object: HibernationSchedule = serde_json::from_value(json!({
        "apiVersion": "cloudoptim.io/v1alpha1", "kind": "HibernationSchedule",
        "metadata": {"name": timed},
        "spec": {"timeZone": "UTC", "awake": [window], "prewarmMinutes": 0, "targets": {"namespaces": [timed_ns]}}
    }))
    .expect("timed schedule");
    schedules
        .create(&PostParams::default(), &object)
        .await
        .expect("timed schedule created");

    // Two targeted namespaces (one by name, one by label), one that is not.
    let ns_a = create_namespace(&client, "hib-a").await;
    let ns_b = create_namespace(&client, "hib-b").await;
    let ns_c = create_namespace(&client, "hib-c").await;
    let team = unique("team");
    Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .patch(
            &ns_b,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"team": team}}})),
        )
        .await
        .expect("label namespace");
    deployment(&client, &ns_a, "web", 2, false).await;
    deployment(&client, &ns_a, "keep", 2, true).await;
    cronjob(&client, &ns_a, "report").await;
    statefulset(&client, &ns_b, "db", 1).await;
    deployment(&client, &ns_c, "other", 2, false).await;
    // The namespace the operator runs in, selected by the same label: it never sleeps.
    let ns_op = create_namespace(&client, "hib-op").await;
    Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .patch(
            &ns_op,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"team": team}}})),
        )
        .await
        .expect("label operator namespace");
    deployment(&client, &ns_op, "cloudoptim", 2, false).await;
    let own = format!("--namespace={ns_op}");

    let group = unique("hib-grp");
    let launch = aws::launch_template(&sdk, &unique("lt")).await;
    aws::create_group(&sdk, &group, &launch, 2, &BTreeMap::new()).await;
    let (min0, max0, desired0, _) = group_state(&sdk, &group).await;
    // The group CloudOptim's own pod runs on: its instance carries the cluster tag, a kwok Node
    // stands for it, and a pod of the operator's release (named like the operator's identity) is bound
    // to that Node.
    let op_group = unique("hib-op-grp");
    aws::create_group(
        &sdk,
        &op_group,
        &launch,
        1,
        &[("cloudoptim.io/cluster".to_string(), "e2e".to_string())].into(),
    )
    .await;
    let op_instance = aws::describe_group(&sdk, &op_group)
        .await
        .expect("operator's group")
        .instances()
        .first()
        .and_then(|i| i.instance_id().map(str::to_string))
        .expect("an instance in the operator's group");
    let op_node = unique("hib-op-node");
    support::nodes::FakeNode::new(&op_node, &format!("{}a", aws::REGION), &op_instance)
        .create(&client)
        .await;
    let op_pod = unique("cloudoptim-pod");
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
        "metadata": {"name": op_pod, "labels": {"app.kubernetes.io/instance": "cloudoptim"}},
        "spec": {"nodeName": op_node, "containers": [{"name": "c", "image": "cloudoptim"}]}
    }))
    .expect("pod");
    Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), &ns_op)
        .create(&PostParams::default(), &pod)
        .await
        .expect("operator pod created");
    let identity = format!("--identity={op_pod}");
    let pool = unique("pool");
    let template: cloudoptim::api::NodeTemplate = serde_json::from_value(json!({
        "apiVersion": "cloudoptim.io/v1alpha1", "kind": "NodeTemplate",
        "metadata": {"name": unique("dev"), "labels": {"pool": pool}},
        "spec": {"autoScalingGroups": {"names": [group, op_group]}, "requirements": {"families": ["m5"]}}
    }))
    .expect("template");
    Api::<cloudoptim::api::NodeTemplate>::all(client.clone())
        .create(&PostParams::default(), &template)
        .await
        .expect("template created");

    // Always awake by the timetable; held asleep by an override for the first phases.
    let name = unique("nights");
    let until = (Utc::now() + chrono::TimeDelta::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let object: HibernationSchedule = serde_json::from_value(json!({
        "apiVersion": "cloudoptim.io/v1alpha1", "kind": "HibernationSchedule",
        "metadata": {"name": name},
        "spec": {
            "timeZone": "Europe/Berlin",
            "awake": ["Mon-Sun 00:00-24:00"],
            "override": {"state": "Hibernating", "until": until},
            "targets": {
                "namespaces": [ns_a],
                "namespaceSelector": {"matchLabels": {"team": team}},
                "nodeTemplateSelector": {"matchLabels": {"pool": pool}}
            }
        }
    }))
    .expect("schedule");
    schedules
        .create(&PostParams::default(), &object)
        .await
        .expect("schedule created");

    let mut operator = Operator::start(cp, &moto, "e2e", &[&own, &identity]);

    // Phase 1: asleep. Workloads first (saved on each object), then the group (saved in its tags).
    eventually(WAIT, "schedule Hibernating", || async {
        (state_of(&schedules, &name).await == Some(HibernationState::Hibernating)).then_some(())
    })
    .await;
    assert_eq!(
        deploy_state(&client, &ns_a, "web").await,
        (0, Some("2".into()))
    );
    assert_eq!(sts_replicas(&client, &ns_b, "db").await, 0);
    assert!(cron_suspended(&client, &ns_a, "report").await);
    assert_eq!(deploy_state(&client, &ns_a, "keep").await, (2, None));
    assert_eq!(deploy_state(&client, &ns_c, "other").await, (2, None));
    assert_eq!(
        deploy_state(&client, &ns_op, "cloudoptim").await,
        (2, None),
        "the operator's own namespace never sleeps, though the selector matches it"
    );
    let ready = |schedule: HibernationSchedule| {
        schedule
            .status
            .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Ready"))
            .map(|c| (c.status, c.reason, c.message))
    };
    let (_, _, message) = ready(schedules.get(&name).await.expect("schedule")).expect("Ready");
    assert!(
        message.contains(&format!(
            "namespace {ns_op} (CloudOptim itself) never sleeps"
        )),
        "{message}"
    );
    assert!(
        message.contains(&format!(
            "Auto Scaling group {op_group} runs CloudOptim itself and never sleeps"
        )),
        "{message}"
    );
    assert_eq!(
        group_state(&sdk, &op_group).await.2,
        1,
        "the group the operator runs on stays awake"
    );
    // A schedule that names the operator's namespace is refused, and changes nothing.
    let selfish = unique("selfish");
    let object: HibernationSchedule = serde_json::from_value(json!({
        "apiVersion": "cloudoptim.io/v1alpha1", "kind": "HibernationSchedule",
        "metadata": {"name": selfish},
        "spec": {"timeZone": "UTC", "awake": ["Mon-Sun 00:00-24:00"],
                 "override": {"state": "Hibernating", "until": until},
                 "targets": {"namespaces": [ns_op]}}
    }))
    .expect("schedule");
    schedules
        .create(&PostParams::default(), &object)
        .await
        .expect("schedule created");
    let (status, reason, message) = eventually(WAIT, "the selfish schedule refused", || async {
        ready(schedules.get(&selfish).await.ok()?).filter(|(s, _, _)| s == "False")
    })
    .await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "TargetsOperator"),
        "{message}"
    );
    assert!(message.contains(&ns_op), "{message}");
    assert_eq!(deploy_state(&client, &ns_op, "cloudoptim").await, (2, None));
    schedules
        .delete(&selfish, &Default::default())
        .await
        .expect("selfish schedule deleted");
    let (min, max, desired, tags) = group_state(&sdk, &group).await;
    assert_eq!((min, max, desired), (0, 0, 0));
    assert_eq!(tags.get("cloudoptim.io/hibernated-by"), Some(&name));
    assert_eq!(
        tags.get("cloudoptim.io/original-size"),
        Some(&format!("{min0}/{max0}/{desired0}"))
    );
    let status = schedules
        .get(&name)
        .await
        .expect("schedule")
        .status
        .expect("status");
    assert_eq!(status.saved_groups.len(), 1, "{status:?}");
    assert_eq!(status.saved_groups[0].desired, desired0);
    assert!(
        status
            .saved_workloads
            .iter()
            .any(|w| w.kind == "Deployment" && w.name == "web" && w.replicas == 2),
        "{status:?}"
    );
    assert_eq!(
        operator.metric(&format!(
            "cloudoptim_hibernation_state{{schedule=\"{name}\"}}"
        )),
        1.0
    );

    // The timetable schedule holds its namespace asleep until its boundary.
    eventually(
        WAIT,
        "the timed namespace asleep before its boundary",
        || async {
            (deploy_state(&client, &timed_ns, "api").await == (0, Some("2".into()))).then_some(())
        },
    )
    .await;
    assert!(
        Utc::now() < boundary,
        "setup took longer than the boundary's margin"
    );

    // Phase 2: a person scales the sleeping StatefulSet; then the operator crashes and restarts.
    Api::<StatefulSet>::namespaced(client.clone(), &ns_b)
        .patch(
            "db",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .expect("person scales db");
    operator.kill();
    let operator = Operator::start(cp, &moto, "e2e", &[&own, &identity]);
    // The restarted operator reconciles (status written again) and keeps everything asleep, db at 3.
    eventually(
        WAIT,
        "restarted operator reconciled both schedules",
        || async {
            (operator
                .metric("cloudoptim_reconcile_duration_seconds_count{controller=\"hibernation\"}")
                >= 2.0)
                .then_some(())
        },
    )
    .await;
    assert_eq!(deploy_state(&client, &ns_a, "web").await.0, 0);
    assert_eq!(sts_replicas(&client, &ns_b, "db").await, 3);
    assert_eq!(group_state(&sdk, &group).await.2, 0);

    // Phase 3: the override ends in 3 s; the operator wakes at that instant, nodes then workloads.
    set_override(&schedules, &name, "Hibernating", 3).await;
    eventually(WAIT, "schedule Awake", || async {
        (state_of(&schedules, &name).await == Some(HibernationState::Awake)).then_some(())
    })
    .await;
    assert_eq!(deploy_state(&client, &ns_a, "web").await, (2, None));
    assert!(!cron_suspended(&client, &ns_a, "report").await);
    assert_eq!(
        sts_replicas(&client, &ns_b, "db").await,
        3,
        "the person's count wins"
    );
    let (min, max, desired, tags) = group_state(&sdk, &group).await;
    assert_eq!((min, max, desired), (min0, max0, desired0));
    assert!(
        !tags.keys().any(|k| k.starts_with("cloudoptim.io/hib")),
        "{tags:?}"
    );
    let events = support::events(&client, &name).await;
    for reason in ["Hibernated", "Woke", "ManualChangeKept"] {
        assert!(
            events.iter().any(|(r, _)| r == reason),
            "{reason}: {events:?}"
        );
    }
    assert!(
        events
            .iter()
            .any(|(r, m)| r == "ManualChangeKept" && m.contains("StatefulSet") && m.contains("db")),
        "{events:?}"
    );

    // Phase 4: the states a crash between two writes leaves: the group's sizes saved but not yet 0,
    // one workload already asleep. The operator is stopped while they are made, then resumes them.
    drop(operator);
    let autoscaling = aws_sdk_autoscaling::Client::new(&sdk);
    let tag = |k: &str, v: &str| {
        aws_sdk_autoscaling::types::Tag::builder()
            .resource_id(&group)
            .resource_type("auto-scaling-group")
            .key(k)
            .value(v)
            .propagate_at_launch(false)
            .build()
    };
    autoscaling
        .create_or_update_tags()
        .tags(tag("cloudoptim.io/hibernating-for", &name))
        .tags(tag(
            "cloudoptim.io/original-size",
            &format!("{min0}/{max0}/{desired0}"),
        ))
        .send()
        .await
        .expect("tags");
    Api::<Deployment>::namespaced(client.clone(), &ns_a)
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({
                "metadata": {"labels": {"cloudoptim.io/hibernated-by": name}, "annotations": {"cloudoptim.io/original-replicas": "2"}},
                "spec": {"replicas": 0}
            })),
        )
        .await
        .expect("half-slept web");
    set_override(&schedules, &name, "Hibernating", 3600).await;
    let _operator = Operator::start(cp, &moto, "e2e", &[&own, &identity]);
    eventually(WAIT, "group taken to 0 after the crash", || async {
        let (_, _, desired, tags) = group_state(&sdk, &group).await;
        (desired == 0 && tags.get("cloudoptim.io/hibernated-by") == Some(&name)).then_some(())
    })
    .await;
    assert_eq!(
        deploy_state(&client, &ns_a, "web").await,
        (0, Some("2".into()))
    );
    assert!(cron_suspended(&client, &ns_a, "report").await);
    let (min, max, _, tags) = group_state(&sdk, &group).await;
    assert_eq!((min, max), (0, 0));
    assert_eq!(
        tags.get("cloudoptim.io/original-size"),
        Some(&format!("{min0}/{max0}/{desired0}")),
        "the saved sizes are the ones from before the crash"
    );

    // Phase 5: deleting the schedule restores everything it holds, then the finalizer lets it go.
    schedules
        .delete(&name, &DeleteParams::default())
        .await
        .expect("delete schedule");
    eventually(WAIT, "schedule gone", || async {
        schedules.get_opt(&name).await.ok()?.is_none().then_some(())
    })
    .await;
    assert_eq!(deploy_state(&client, &ns_a, "web").await, (2, None));
    assert!(!cron_suspended(&client, &ns_a, "report").await);
    assert_eq!(sts_replicas(&client, &ns_b, "db").await, 3);
    let (min, max, desired, tags) = group_state(&sdk, &group).await;
    assert_eq!((min, max, desired), (min0, max0, desired0));
    assert!(
        !tags.keys().any(|k| k.starts_with("cloudoptim.io/hib")),
        "{tags:?}"
    );

    // Phase 6: the timetable schedule woke its namespace at its boundary, not before.
    eventually(Duration::from_secs(240), "timed schedule Awake", || async {
        (state_of(&schedules, &timed).await == Some(HibernationState::Awake)).then_some(())
    })
    .await;
    let woke_at = Utc::now();
    let woke_event = Api::<Event>::all(client.clone())
        .list(&ListParams::default().fields(&format!("involvedObject.name={timed},reason=Woke")))
        .await
        .expect("events")
        .items
        .into_iter()
        .find_map(|e| e.event_time.map(|t| t.0.as_millisecond()))
        .expect("a Woke event with its time");
    assert!(
        woke_event >= boundary.timestamp_millis(),
        "woke at {woke_event} ms, before the boundary {boundary}"
    );
    assert_eq!(deploy_state(&client, &timed_ns, "api").await, (2, None));
    let events = support::events(&client, &timed).await;
    assert!(events.iter().any(|(r, _)| r == "Hibernated"), "{events:?}");
    assert!(events.iter().any(|(r, _)| r == "Woke"), "{events:?}");
    eprintln!(
        "timetable wake: Event {:.3} s after the boundary {boundary}, observed by the test {:.1} s after",
        (woke_event - boundary.timestamp_millis()) as f64 / 1000.0,
        (woke_at - boundary).num_milliseconds() as f64 / 1000.0
    );
    let timed_status = schedules
        .get(&timed)
        .await
        .expect("timed")
        .status
        .expect("status");
    let next = timed_status.next_transition.expect("next transition");
    assert_eq!(next.state, HibernationState::Hibernating);
    assert!(
        next.utc.ends_with('Z') && next.local.ends_with('Z'),
        "{next:?}"
    );

    // An outside observer's view: every AWS request the operator made (moto's request log) is granted
    // by the shipped IAM policy.
    let made = moto.assert_operator_actions_allowed();
    assert!(made.contains("autoscaling:CreateOrUpdateTags"), "{made:?}");
}
