//! The Helm chart: linted and rendered by a real helm binary, and every rendered object accepted by a
//! real API server (server-side apply, dry run), in both modes. A missing required value fails the
//! render with a message naming it. The CRD upgrade path (README "Upgrading the CRDs"), both ways, on
//! the real API server: an older NodeTemplate CRD installed, an object created, the current CRD
//! applied; the object stays and the new fields are served.

mod support;

use std::path::Path;
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::runtime::wait::{await_condition, conditions};
use serde_json::json;
use support::{ControlPlane, repo_root, unique};

use support::chart::helm_run;

fn render(namespace: &str, values: &[&str]) -> Vec<serde_json::Value> {
    support::chart::render("cloudoptim", namespace, values)
}

async fn server_side_dry_run(
    client: &kube::Client,
    namespace: &str,
    objects: &[serde_json::Value],
) {
    support::chart::apply(client, namespace, objects, "helm-e2e", true).await;
}

#[tokio::test]
async fn chart_lints_renders_and_every_object_is_accepted_by_the_api_server() {
    let Some(cp) = ControlPlane::shared() else {
        return;
    };
    if support::chart::require_helm().is_none() {
        return;
    }
    let chart = repo_root().join("charts/cloudoptim");
    let lint = helm_run(&[
        "lint",
        chart.to_str().expect("utf-8"),
        "--set",
        "clusterName=e2e",
        "--set",
        "region=us-east-1",
    ]);
    assert!(
        lint.status.success(),
        "helm lint: {}",
        String::from_utf8_lossy(&lint.stdout)
    );

    let client = cp.client().await;
    let namespace = support::create_namespace(&client, "chart").await;

    let operator = render(
        &namespace,
        &[
            "clusterName=e2e",
            "region=us-east-1",
            "hub.url=https://hub",
            "hub.tokenSecret=t",
            "hub.caSecret=hub-ca",
        ],
    );
    let kinds: Vec<&str> = operator.iter().filter_map(|o| o["kind"].as_str()).collect();
    for kind in [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
    ] {
        assert!(
            kinds.contains(&kind),
            "operator mode renders a {kind}: {kinds:?}"
        );
    }
    let deployment = operator
        .iter()
        .find(|o| o["kind"] == "Deployment")
        .expect("deployment");
    let args = deployment["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(
        args.contains("--leader-elect") && args.contains("--cluster-name=e2e"),
        "{args}"
    );
    assert!(
        args.contains("--hub-ca-file=/var/run/cloudoptim/hub-ca/ca.crt"),
        "{args}"
    );
    server_side_dry_run(&client, &namespace, &operator).await;

    // Every optional value at once (scripts/check-chart.sh checks each landed): still accepted. The
    // Prometheus Operator's kinds are not served here: rendered only.
    let values = repo_root().join("charts/cloudoptim/ci/all-options-values.yaml");
    let out = helm_run(&[
        "template",
        "cloudoptim",
        chart.to_str().expect("utf-8"),
        "--namespace",
        &namespace,
        "-f",
        values.to_str().expect("utf-8"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all: Vec<serde_json::Value> =
        serde_yaml::Deserializer::from_str(&String::from_utf8(out.stdout).expect("utf-8"))
            .filter_map(|doc| serde::Deserialize::deserialize(doc).ok())
            .filter(|o: &serde_json::Value| !o.is_null())
            .collect();
    let monitors = ["ServiceMonitor", "PodMonitor"];
    assert!(
        monitors
            .iter()
            .all(|kind| all.iter().any(|o| o["kind"] == *kind))
    );
    let served: Vec<serde_json::Value> = all
        .into_iter()
        .filter(|o| !monitors.iter().any(|kind| o["kind"] == *kind))
        .collect();
    server_side_dry_run(&client, &namespace, &served).await;

    let hub = render(&namespace, &["mode=hub"]);
    let hub_args = hub
        .iter()
        .find(|o| o["kind"] == "Deployment")
        .expect("hub deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
        .to_string();
    assert!(
        hub_args.contains("\"hub\"") && hub_args.contains("--tokens-dir"),
        "{hub_args}"
    );
    assert!(
        hub_args.contains("--tls-cert-file=") && hub_args.contains("--max-flags-per-member="),
        "the hub serves TLS with its limits: {hub_args}"
    );
    server_side_dry_run(&client, &namespace, &hub).await;

    // cert-manager writes the Secret the hub mounts (its CRD is not in this API server: rendered only).
    let managed = render(
        &namespace,
        &[
            "mode=hub",
            "hubServer.tls.certManager.enabled=true",
            "hubServer.tls.certManager.issuerRef.name=fleet-ca",
            "hubServer.tls.certManager.issuerRef.kind=ClusterIssuer",
        ],
    );
    let certificate = managed
        .iter()
        .find(|o| o["kind"] == "Certificate")
        .expect("a cert-manager Certificate");
    assert_eq!(certificate["spec"]["secretName"], "cloudoptim-hub-tls");
    assert_eq!(certificate["spec"]["issuerRef"]["name"], "fleet-ca");
    let plain = render(
        &namespace,
        &["mode=hub", "hubServer.insecurePlainHttp=true"],
    );
    let plain_args = plain
        .iter()
        .find(|o| o["kind"] == "Deployment")
        .expect("hub deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
        .to_string();
    assert!(
        plain_args.contains("--insecure-plain-http") && !plain_args.contains("--tls-cert-file"),
        "{plain_args}"
    );

    let out = helm_run(&["template", "cloudoptim", chart.to_str().expect("utf-8")]);
    assert!(
        !out.status.success(),
        "operator mode without clusterName must not render"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("clusterName and region are required"));
}

#[test]
fn chart_crds_are_the_generated_ones() {
    for entry in std::fs::read_dir(repo_root().join("crds")).expect("crds/") {
        let path = entry.expect("entry").path();
        let name = path.file_name().expect("file name");
        let generated = std::fs::read_to_string(&path).expect("readable");
        let chart_copy = repo_root().join("charts/cloudoptim/crds").join(name);
        assert_eq!(
            generated,
            std::fs::read_to_string(&chart_copy).unwrap_or_default(),
            "{} differs from crds/; run scripts/update-crds.sh",
            chart_copy.display()
        );
        // The crds chart: the same CRD, annotated so that `helm uninstall` keeps it.
        let kept = repo_root()
            .join("charts/cloudoptim-crds/templates")
            .join(name);
        assert_eq!(
            generated.replacen(
                "\nmetadata:\n",
                "\nmetadata:\n  annotations:\n    helm.sh/resource-policy: keep\n",
                1
            ),
            std::fs::read_to_string(&kept).unwrap_or_default(),
            "{} differs from crds/; run scripts/update-crds.sh",
            kept.display()
        );
    }
}

/// The NodeTemplate CRD text `text` moved to API group `group` (so this test never touches the CRDs
/// the other tests use), and, when `old`, without the fields `requirements.minGpus`/`maxGpus` and
/// their CEL rule: the CRD as it was before commit a242ffa added them.
fn node_template_crd(text: &str, group: &str, old: bool) -> String {
    let mut crd: serde_json::Value = serde_yaml::from_str(text).expect("CRD YAML");
    crd["metadata"]["name"] = json!(format!("nodetemplates.{group}"));
    crd["spec"]["group"] = json!(group);
    if old {
        let requirements = &mut crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
            ["spec"]["properties"]["requirements"];
        let properties = requirements["properties"].as_object_mut().expect("fields");
        assert!(properties.remove("minGpus").is_some() && properties.remove("maxGpus").is_some());
        requirements["x-kubernetes-validations"]
            .as_array_mut()
            .expect("CEL rules")
            .retain(|rule| !rule["rule"].as_str().unwrap_or_default().contains("Gpus"));
    }
    serde_yaml::to_string(&crd).expect("YAML")
}

/// A chart directory holding the crds chart's Chart.yaml and `crd` as its only template.
fn crds_chart(crd: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(unique("cloudoptim-crds-chart"));
    std::fs::create_dir_all(dir.join("templates")).expect("chart dir");
    let chart = repo_root().join("charts/cloudoptim-crds/Chart.yaml");
    std::fs::copy(chart, dir.join("Chart.yaml")).expect("Chart.yaml");
    std::fs::write(dir.join("templates/nodetemplates.yaml"), crd).expect("template");
    dir
}

async fn established(client: &kube::Client, group: &str) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = format!("nodetemplates.{group}");
    tokio::time::timeout(
        Duration::from_secs(30),
        await_condition(crds, &name, conditions::is_crd_established()),
    )
    .await
    .unwrap_or_else(|_| panic!("CRD {name} not established in 30 s"))
    .expect("watch");
}

/// Create a NodeTemplate (examples/nodetemplate.yaml) asking for `minGpus: 1` under the old CRD:
/// the field is pruned, so the old CRD really lacks it. Returns the object's uid.
async fn create_under_old_crd(api: &Api<DynamicObject>, group: &str) -> String {
    let example =
        std::fs::read_to_string(repo_root().join("examples/nodetemplate.yaml")).expect("example");
    let mut object: serde_json::Value = serde_yaml::from_str(&example).expect("example YAML");
    object["apiVersion"] = json!(format!("{group}/v1alpha1"));
    object["spec"]["requirements"]["minGpus"] = json!(1);
    let object: DynamicObject = serde_json::from_value(object).expect("object");
    let created = api
        .create(&PostParams::default(), &object)
        .await
        .expect("created under the old CRD");
    assert!(
        created.data["spec"]["requirements"]
            .get("minGpus")
            .is_none(),
        "the old CRD prunes minGpus: {:?}",
        created.data["spec"]["requirements"]
    );
    created.metadata.uid.expect("uid")
}

/// After the upgrade: the object is the same one, and minGpus is now stored and served.
async fn served_after_upgrade(api: &Api<DynamicObject>, uid: &str) {
    let patch = json!({"spec": {"requirements": {"minGpus": 1}}});
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let object = api
            .patch("general", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("the object is still there after the upgrade");
        assert_eq!(object.metadata.uid.as_deref(), Some(uid), "the same object");
        if object.data["spec"]["requirements"]["minGpus"] == 1 {
            let read = api.get("general").await.expect("read back");
            assert_eq!(read.data["spec"]["requirements"]["minGpus"], 1);
            assert_eq!(
                read.data["spec"]["strategy"], "Balanced",
                "the rest is kept"
            );
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "minGpus still pruned 30 s after the CRD upgrade: {:?}",
            object.data["spec"]["requirements"]
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn node_templates(client: &kube::Client, group: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk(group, "v1alpha1", "NodeTemplate");
    Api::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(&gvk, "nodetemplates"),
    )
}

fn helm_ok(args: &[&str]) {
    let out = helm_run(args);
    assert!(
        out.status.success(),
        "helm {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn crd_upgrade_keeps_objects_and_serves_new_fields() {
    let Some(cp) = ControlPlane::shared() else {
        return;
    };
    if support::chart::require_helm().is_none() {
        return;
    }
    let client = cp.client().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let parse =
        |crd: &str| -> CustomResourceDefinition { serde_yaml::from_str(crd).expect("a CRD") };

    // 1. `kubectl apply --server-side -f crds/`: the old CRD, an object, then crds/ as it is now.
    let group = format!("{}.upgrade.cloudoptim.io", unique("kubectl"));
    let current =
        std::fs::read_to_string(repo_root().join("crds/nodetemplates.cloudoptim.io.yaml"))
            .expect("crds/");
    let name = format!("nodetemplates.{group}");
    let params = PatchParams::apply("kubectl").force();
    let old = parse(&node_template_crd(&current, &group, true));
    crds.patch(&name, &params, &Patch::Apply(&old))
        .await
        .expect("old CRD");
    established(&client, &group).await;
    let api = node_templates(&client, &group);
    let uid = create_under_old_crd(&api, &group).await;
    let new = parse(&node_template_crd(&current, &group, false));
    crds.patch(&name, &params, &Patch::Apply(&new))
        .await
        .expect("current CRD applied server-side over the old one");
    served_after_upgrade(&api, &uid).await;

    // 2. `helm upgrade` of charts/cloudoptim-crds: installed at the old CRD, upgraded to the chart.
    let group = format!("{}.upgrade.cloudoptim.io", unique("helm"));
    let release = unique("crds");
    let kubeconfig = cp.kubeconfig();
    let kubeconfig = kubeconfig.to_str().expect("utf-8");
    let template = std::fs::read_to_string(
        repo_root().join("charts/cloudoptim-crds/templates/nodetemplates.cloudoptim.io.yaml"),
    )
    .expect("crds chart");
    let old_chart = crds_chart(&node_template_crd(&template, &group, true));
    let new_chart = crds_chart(&node_template_crd(&template, &group, false));
    let chart_arg = |dir: &Path| dir.to_str().expect("utf-8").to_string();
    helm_ok(&[
        "install",
        &release,
        &chart_arg(&old_chart),
        "--kubeconfig",
        kubeconfig,
        "-n",
        "default",
    ]);
    established(&client, &group).await;
    let api = node_templates(&client, &group);
    let uid = create_under_old_crd(&api, &group).await;
    helm_ok(&[
        "upgrade",
        &release,
        &chart_arg(&new_chart),
        "--kubeconfig",
        kubeconfig,
        "-n",
        "default",
    ]);
    served_after_upgrade(&api, &uid).await;
    // helm.sh/resource-policy: keep: uninstalling the release leaves the CRD, hence the objects.
    helm_ok(&[
        "uninstall",
        &release,
        "--kubeconfig",
        kubeconfig,
        "-n",
        "default",
    ]);
    crds.get(&format!("nodetemplates.{group}"))
        .await
        .expect("the CRD is kept after helm uninstall");
    assert_eq!(
        api.get("general")
            .await
            .expect("the object too")
            .metadata
            .uid
            .as_deref(),
        Some(uid.as_str())
    );
    for dir in [old_chart, new_chart] {
        let _ = std::fs::remove_dir_all(dir);
    }
}
