//! The Helm chart rendered by the real helm binary, for tests that install or launch what it renders.

use std::process::Command;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::discovery::{Discovery, Scope};

use super::repo_root;

/// The helm binary built by setup.sh, if any.
pub fn helm() -> Option<String> {
    let path = super::peer_env_public("CLOUDOPTIM_HELM")?;
    std::path::Path::new(&path).exists().then_some(path)
}

/// The helm binary, or skip (`None`) / fail with `CLOUDOPTIM_E2E_REQUIRED=1` when it is not built.
pub fn require_helm() -> Option<String> {
    helm().or_else(|| super::missing("CLOUDOPTIM_HELM (helm)"))
}

/// Run helm with `args` (its cache and config kept out of the user's home).
pub fn helm_run(args: &[&str]) -> std::process::Output {
    let helm = helm().expect("helm available");
    Command::new(helm)
        .args(args)
        .env(
            "HELM_CACHE_HOME",
            std::env::temp_dir().join("cloudoptim-helm-cache"),
        )
        .env(
            "HELM_CONFIG_HOME",
            std::env::temp_dir().join("cloudoptim-helm-config"),
        )
        .output()
        .expect("helm runs")
}

/// `helm template <release> charts/cloudoptim --namespace <namespace> --set <values>...`, as objects.
pub fn render(release: &str, namespace: &str, values: &[&str]) -> Vec<serde_json::Value> {
    let chart = repo_root().join("charts/cloudoptim");
    let mut args = vec![
        "template",
        release,
        chart.to_str().expect("utf-8 path"),
        "--namespace",
        namespace,
    ];
    for v in values {
        args.extend(["--set", v]);
    }
    let out = helm_run(&args);
    assert!(
        out.status.success(),
        "helm template failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    serde_yaml::Deserializer::from_str(&text)
        .filter_map(|doc| {
            let value: Option<serde_json::Value> =
                serde::Deserialize::deserialize(doc).expect("rendered YAML parses");
            value.filter(|v| !v.is_null())
        })
        .collect()
}

/// The first container of the rendered Deployment.
pub fn operator_container(objects: &[serde_json::Value]) -> serde_json::Value {
    objects
        .iter()
        .find(|o| o["kind"] == "Deployment")
        .expect("a Deployment is rendered")["spec"]["template"]["spec"]["containers"][0]
        .clone()
}

/// The arguments of the rendered Deployment's first container.
pub fn operator_args(objects: &[serde_json::Value]) -> Vec<String> {
    operator_container(objects)["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string arg").to_string())
        .collect()
}

/// Server-side apply rendered `objects` in `namespace` as field manager `manager` (`dry_run`: only
/// have the API server validate them); panics naming an object the API server refuses.
pub async fn apply<'o>(
    client: &kube::Client,
    namespace: &str,
    objects: impl IntoIterator<Item = &'o serde_json::Value>,
    manager: &str,
    dry_run: bool,
) {
    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .expect("discovery");
    let mut params = PatchParams::apply(manager);
    if dry_run {
        params = params.dry_run();
    }
    for object in objects {
        let object: DynamicObject = serde_json::from_value(object.clone()).expect("an object");
        let types = object.types.clone().expect("apiVersion and kind");
        let gvk = kube::api::GroupVersionKind::try_from(&types).expect("gvk");
        let (resource, capabilities) = discovery
            .resolve_gvk(&gvk)
            .unwrap_or_else(|| panic!("{gvk:?} is served"));
        let api: Api<DynamicObject> = match capabilities.scope {
            Scope::Namespaced => Api::namespaced_with(client.clone(), namespace, &resource),
            Scope::Cluster => Api::all_with(client.clone(), &resource),
        };
        let name = object.metadata.name.clone().expect("named");
        api.patch(&name, &params, &Patch::Apply(&object))
            .await
            .unwrap_or_else(|e| panic!("{} {name} rejected by the API server: {e}", types.kind));
    }
}
