//! Admission on the real API server: every CEL rule in `crds/` is exercised by a rejected object (with
//! its message) next to an accepted one, and every duration field accepts `1d`, `14d` and `90m` and
//! rejects what the one duration grammar rejects. The unit tests in `src/api/tests.rs` check the same
//! schemas through kube-cel; this is the real evaluator, so a rule kube-cel and Kubernetes disagree on
//! cannot pass unnoticed.

mod support;

use cloudoptim::api::{HibernationSchedule, NodeTemplate, OptimizationPolicy, SpotRiskFlag};
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::ApiResource;
use serde_json::Value;
use support::{ControlPlane, repo_root, unique};

const NODE_TEMPLATE: &str = include_str!("../examples/nodetemplate.yaml");
const POLICY: &str = include_str!("../examples/optimizationpolicy.yaml");
const SCHEDULE: &str = include_str!("../examples/hibernationschedule.yaml");
const FLAG: &str = include_str!("../examples/spotriskflag.yaml");

/// One admission case: an example with its spec patched (top-level keys replaced; null removes), and
/// the error text expected (`None`: accepted).
struct Case {
    kind: &'static str,
    patch: String,
    rejected_with: Option<&'static str>,
}

fn case(kind: &'static str, patch: &str, rejected_with: Option<&'static str>) -> Case {
    Case {
        kind,
        patch: patch.to_string(),
        rejected_with,
    }
}

fn object(kind: &str, patch: &str) -> (Value, ApiResource) {
    let (example, resource) = match kind {
        "NodeTemplate" => (NODE_TEMPLATE, ApiResource::erase::<NodeTemplate>(&())),
        "OptimizationPolicy" => (POLICY, ApiResource::erase::<OptimizationPolicy>(&())),
        "HibernationSchedule" => (SCHEDULE, ApiResource::erase::<HibernationSchedule>(&())),
        "SpotRiskFlag" => (FLAG, ApiResource::erase::<SpotRiskFlag>(&())),
        other => panic!("no example for {other}"),
    };
    let mut value: Value = serde_yaml::from_str(example).expect("example parses");
    let patch: Value = serde_yaml::from_str(patch).expect("patch parses");
    let spec = value["spec"].as_object_mut().expect("spec is a map");
    for (k, v) in patch.as_object().expect("patch is a map") {
        if v.is_null() {
            spec.remove(k);
        } else {
            spec.insert(k.clone(), v.clone());
        }
    }
    value["metadata"] = serde_json::json!({"name": unique("admission")});
    (value, resource)
}

fn matrix(value: u8, at: usize) -> String {
    let mut m = vec![1u8; 168];
    m[at] = value;
    format!("{{awake: null, weeklyMatrix: {m:?}}}")
}

fn cases() -> Vec<Case> {
    let mut cases = vec![
        // NodeTemplate
        case("NodeTemplate", "{}", None),
        case(
            "NodeTemplate",
            "{autoScalingGroups: {names: [a], tagSelector: {k: v}}}",
            Some("spec.autoScalingGroups: set exactly one of names or tagSelector"),
        ),
        case(
            "NodeTemplate",
            "{autoScalingGroups: {}}",
            Some("spec.autoScalingGroups: set exactly one of names or tagSelector"),
        ),
        case(
            "NodeTemplate",
            "{requirements: {minVcpu: 16, maxVcpu: 2}}",
            Some("spec.requirements: minVcpu must be <= maxVcpu"),
        ),
        case(
            "NodeTemplate",
            "{requirements: {minVcpu: 2, maxVcpu: 2}}",
            None,
        ),
        case(
            "NodeTemplate",
            "{requirements: {minMemoryGiB: 64, maxMemoryGiB: 8}}",
            Some("spec.requirements: minMemoryGiB must be <= maxMemoryGiB"),
        ),
        case(
            "NodeTemplate",
            "{requirements: {minMemoryGiB: 8, maxMemoryGiB: 64}}",
            None,
        ),
        case(
            "NodeTemplate",
            "{requirements: {minGpus: 4, maxGpus: 1}}",
            Some("spec.requirements: minGpus must be <= maxGpus"),
        ),
        case(
            "NodeTemplate",
            "{requirements: {minGpus: 1, maxGpus: 8}}",
            None,
        ),
        case(
            "NodeTemplate",
            "{weights: {price: 0.7, risk: 0.7}}",
            Some("spec.weights: price + risk must sum to 1"),
        ),
        case("NodeTemplate", "{weights: {price: 0.25, risk: 0.75}}", None),
        // Fields nothing acts on yet are refused with the reason, not silently kept.
        case(
            "NodeTemplate",
            "{disk: {type: gp3, sizeGiB: 100}}",
            Some(
                "spec.disk: not supported: the root volume comes from the Auto Scaling group's launch template; remove spec.disk",
            ),
        ),
        case(
            "NodeTemplate",
            "{labels: {team: a}}",
            Some(
                "spec.labels: not acted on yet (node replacement, issue #16): a node's labels come from its launch template; remove spec.labels",
            ),
        ),
        case(
            "NodeTemplate",
            "{taints: [{key: gpu, effect: NoSchedule}]}",
            Some(
                "spec.taints: not acted on yet (node replacement, issue #16): a node's taints come from its launch template; remove spec.taints",
            ),
        ),
        // OptimizationPolicy
        case("OptimizationPolicy", "{}", None),
        case(
            "OptimizationPolicy",
            "{disruption: {budgets: [{nodes: \"1\", schedule: \"0 9 * * *\"}]}}",
            Some("spec.disruption.budgets[]: schedule and duration must be set together"),
        ),
        case(
            "OptimizationPolicy",
            "{nodes: {min: 10, max: 3}}",
            Some("spec.nodes: min must be <= max"),
        ),
        case("OptimizationPolicy", "{nodes: {min: 3, max: 3}}", None),
        case(
            "OptimizationPolicy",
            "{rightsizing: {mode: Recommend}}",
            Some("spec.rightsizing: modes Recommend and Apply need prometheusUrl"),
        ),
        case(
            "OptimizationPolicy",
            "{rightsizing: {mode: Recommend, prometheusUrl: \"http://prometheus:9090\"}}",
            None,
        ),
        case(
            "OptimizationPolicy",
            "{rightsizing: {mode: Apply, prometheusUrl: \"http://prometheus:9090\"}}",
            None,
        ),
        case(
            "OptimizationPolicy",
            "{rightsizing: {mode: Apply}}",
            Some("spec.rightsizing: modes Recommend and Apply need prometheusUrl"),
        ),
        case(
            "OptimizationPolicy",
            "{disruption: {budgets: [{nodes: \"1\", reasons: [Rightsized]}]}}",
            None,
        ),
        case("OptimizationPolicy", "{rightsizing: {mode: Off}}", None),
        case(
            "OptimizationPolicy",
            "{consolidation: {replacement: {margin: 0.95}}}",
            Some("should be less than or equal to 0.9"),
        ),
        case(
            "OptimizationPolicy",
            "{consolidation: {replacement: {margin: 0.2, enabled: false}}}",
            None,
        ),
        // HibernationSchedule
        case("HibernationSchedule", "{}", None),
        case(
            "HibernationSchedule",
            &matrix(2, 5),
            Some("spec.weeklyMatrix: every entry must be 0 (hibernating) or 1 (awake)"),
        ),
        case("HibernationSchedule", &matrix(0, 5), None),
        case(
            "HibernationSchedule",
            &format!("{{weeklyMatrix: {:?}}}", vec![1u8; 168]),
            Some("spec: set exactly one of weeklyMatrix or awake"),
        ),
        case(
            "HibernationSchedule",
            "{awake: null}",
            Some("spec: set exactly one of weeklyMatrix or awake"),
        ),
        // SpotRiskFlag
        case("SpotRiskFlag", "{}", None),
        case(
            "SpotRiskFlag",
            "{zone: eu-west-1a}",
            Some("spec.zone must be a zone of spec.region, e.g. us-east-1a in us-east-1"),
        ),
    ];
    // Durations: the one grammar (digits + ms|s|m|h|d), in every duration field the CRD has.
    let fields = [
        "{consolidation: {consolidateAfter: DUR}}",
        "{consolidation: {interval: DUR}}",
        "{disruption: {drainTimeout: DUR}}",
        "{disruption: {budgets: [{nodes: \"1\", schedule: \"0 9 * * *\", duration: DUR}]}}",
        "{zombies: {gracePeriod: DUR}}",
        "{interruptions: {drainDeadline: DUR}}",
        "{spot: {restoreToSpotAfter: DUR}}",
        "{consolidation: {replacement: {readyTimeout: DUR}}}",
    ];
    for field in fields {
        for good in ["1d", "14d", "90m", "1h30m"] {
            cases.push(case(
                "OptimizationPolicy",
                &field.replace("DUR", good),
                None,
            ));
        }
        for bad in ["1.5h", "10", "1w"] {
            cases.push(case(
                "OptimizationPolicy",
                &field.replace("DUR", &format!("\"{bad}\"")),
                Some("should match"),
            ));
        }
    }
    cases
}

/// Every CEL rule message in the generated CRDs.
fn cel_messages() -> Vec<String> {
    fn walk(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::Array(rules)) = map.get("x-kubernetes-validations") {
                    out.extend(
                        rules
                            .iter()
                            .filter_map(|r| r["message"].as_str().map(str::to_string)),
                    );
                }
                map.values().for_each(|v| walk(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(repo_root().join("crds")).expect("crds/") {
        let text = std::fs::read_to_string(entry.expect("entry").path()).expect("readable");
        let value: Value = serde_yaml::from_str(&text).expect("CRD parses");
        walk(&value, &mut out);
    }
    out
}

#[tokio::test]
async fn every_cel_rule_and_duration_is_enforced_by_the_real_api_server() {
    let Some(cp) = ControlPlane::shared() else {
        return;
    };
    let client = cp.client().await;
    let cases = cases();
    let messages = cel_messages();
    assert!(messages.len() >= 10, "{messages:?}");
    for message in &messages {
        assert!(
            cases
                .iter()
                .any(|c| c.rejected_with == Some(message.as_str())),
            "CEL rule {message:?} has no rejecting case here"
        );
    }
    let mut failures = Vec::new();
    for c in &cases {
        let (value, resource) = object(c.kind, &c.patch);
        let object: DynamicObject = serde_json::from_value(value).expect("object");
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
        let result = api
            .create(
                &PostParams {
                    dry_run: true,
                    ..PostParams::default()
                },
                &object,
            )
            .await;
        match (result, c.rejected_with) {
            (Ok(_), None) => {}
            (Err(e), Some(expected)) if e.to_string().contains(expected) => {}
            (Ok(_), Some(expected)) => failures.push(format!(
                "{} {}: accepted, expected rejection with {expected:?}",
                c.kind, c.patch
            )),
            (Err(e), expected) => failures.push(format!(
                "{} {}: {e} (expected {expected:?})",
                c.kind, c.patch
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The chart's workload guard, enforced by the API server: the operator's ServiceAccount (RBAC:
/// `patch` on Deployments) may scale a Deployment and write its own cloudoptim.io/ marks, but not
/// change the pod template or someone else's labels, and nothing in kube-system.
#[tokio::test]
async fn the_workload_guard_lets_the_operator_scale_but_never_rewrite_a_workload() {
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::ResourceExt;
    use kube::api::{Patch, PatchParams};
    let Some(cp) = ControlPlane::shared() else {
        return;
    };
    if support::chart::require_helm().is_none() {
        return;
    }
    let admin = cp.client().await;
    let release_ns = support::create_namespace(&admin, "guard").await;
    let operator = cp.operator_client(&release_ns).await;
    let workloads = support::create_namespace(&admin, "guard-apps").await;
    let deployment = |ns: &str| -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": ns, "labels": {"team": "a"}},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}
        }))
        .expect("deployment")
    };
    for ns in [workloads.as_str(), "kube-system"] {
        Api::<Deployment>::namespaced(admin.clone(), ns)
            .create(&PostParams::default(), &deployment(ns))
            .await
            .unwrap_or_else(|e| panic!("deployment in {ns}: {e}"));
    }
    let as_operator = Api::<Deployment>::namespaced(operator.clone(), &workloads);
    let patch = |value: Value| Patch::Merge(value);
    let params = PatchParams::default();
    // An admission policy takes effect a moment after it is created: wait for it with dry runs.
    let evil = serde_json::json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "evil"}]}}}});
    support::operator::eventually(
        std::time::Duration::from_secs(30),
        "the workload guard in force",
        || async {
            as_operator
                .patch(
                    "web",
                    &PatchParams::default().dry_run(),
                    &Patch::Merge(evil.clone()),
                )
                .await
                .is_err()
                .then_some(())
        },
    )
    .await;
    // What hibernation writes: allowed.
    as_operator
        .patch(
            "web",
            &params,
            &patch(serde_json::json!({
                "metadata": {"labels": {"cloudoptim.io/hibernated-by": "nights"},
                             "annotations": {"cloudoptim.io/original-replicas": "2"}},
                "spec": {"replicas": 0}
            })),
        )
        .await
        .expect("the operator may scale and mark a workload");
    // What it must never do.
    let refused = [
        (
            serde_json::json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "evil"}]}}}}),
            "never the pod template",
        ),
        (
            serde_json::json!({"metadata": {"labels": {"team": "b"}}}),
            "only its own cloudoptim.io/ labels",
        ),
    ];
    for (body, message) in refused {
        match as_operator
            .patch("web", &params, &patch(body.clone()))
            .await
        {
            Err(kube::Error::Api(e)) => {
                assert!(e.message.contains(message), "{body}: {}", e.message);
            }
            other => panic!("{body} was not refused: {other:?}"),
        }
    }
    match Api::<Deployment>::namespaced(operator.clone(), "kube-system")
        .patch(
            "web",
            &params,
            &patch(serde_json::json!({"spec": {"replicas": 0}})),
        )
        .await
    {
        Err(kube::Error::Api(e)) => {
            assert!(e.message.contains("protected namespace"), "{}", e.message)
        }
        other => panic!("scaling in kube-system was not refused: {other:?}"),
    }
    let web = Api::<Deployment>::namespaced(admin.clone(), &workloads)
        .get("web")
        .await
        .expect("web");
    assert_eq!(web.spec.as_ref().and_then(|s| s.replicas), Some(0));
    assert_eq!(web.labels().get("team").map(String::as_str), Some("a"));
}
