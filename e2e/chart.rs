//! The Helm chart: linted and rendered by a real helm binary, and every rendered object accepted by a
//! real API server (server-side apply, dry run), in both modes. A missing required value fails the
//! render with a message naming it.

mod support;

use support::{ControlPlane, repo_root};

use support::chart::{helm, helm_run};

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
    if helm().is_none() {
        assert!(
            std::env::var("CLOUDOPTIM_E2E_REQUIRED").as_deref() != Ok("1"),
            "helm is required in CI"
        );
        eprintln!("SKIPPED: no helm binary");
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
        let chart_copy = repo_root().join("charts/cloudoptim/crds").join(name);
        assert_eq!(
            std::fs::read_to_string(&path).expect("readable"),
            std::fs::read_to_string(&chart_copy).unwrap_or_default(),
            "{} differs from crds/; run scripts/update-crds.sh",
            chart_copy.display()
        );
    }
}
