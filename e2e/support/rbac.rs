//! Operators in the end-to-end tests run as the chart's ServiceAccount, under the chart's RBAC.
//!
//! The control plane has a user `e2e-operator` that may only impersonate. Each release namespace gets
//! the ServiceAccount, ClusterRole, Role and bindings `helm template` renders for it, and a kubeconfig
//! that impersonates that ServiceAccount; so a verb the chart forgets fails the test that needs it,
//! exactly as in a real install. The API server's audit log records every request of `e2e-operator`;
//! when an operator stops, the requests of its ServiceAccount are appended to
//! `$CARGO_TARGET_TMPDIR/rbac-used/`, which `e2e_rbac` compares with what the chart grants.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Mutex;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use super::{ControlPlane, aws, chart};

/// The release namespace of an operator started without one (no leader election).
pub const DEFAULT_NAMESPACE: &str = "cloudoptim-system";
/// The release namespace of the hubs the tests start.
pub const HUB_NAMESPACE: &str = "cloudoptim-hub";

/// The chart's two modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `cloudoptim run`.
    Operator,
    /// `cloudoptim hub`.
    Hub,
}

impl Mode {
    /// The chart's `mode` value.
    pub fn value(self) -> &'static str {
        match self {
            Mode::Operator => "operator",
            Mode::Hub => "hub",
        }
    }
}

/// Where the used requests of a mode are collected.
pub fn used_dir(mode: Mode) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("rbac-used")
        .join(mode.value())
}

/// Release name for `namespace` (one release, one ServiceAccount, one ClusterRole per namespace).
pub fn release(namespace: &str) -> String {
    let mut name = format!("co-{namespace}");
    name.truncate(50);
    name.trim_end_matches('-').to_string()
}

/// The username of the ServiceAccount the chart creates in `namespace`.
pub fn service_account(namespace: &str) -> String {
    format!("system:serviceaccount:{namespace}:{}", release(namespace))
}

/// The chart's RBAC objects and admission policies in `mode` for a release in `namespace`.
pub fn rendered_rbac(namespace: &str, mode: Mode) -> Vec<serde_json::Value> {
    rendered_rbac_with(namespace, mode, &[])
}

/// [`rendered_rbac`] with more chart values (e.g. `rightsizing.apply.enabled=true`).
pub fn rendered_rbac_with(namespace: &str, mode: Mode, values: &[&str]) -> Vec<serde_json::Value> {
    let region = format!("region={}", aws::REGION);
    let mode_value = format!("mode={}", mode.value());
    let mut all = vec!["clusterName=e2e", &region, &mode_value];
    all.extend_from_slice(values);
    chart::render(&release(namespace), namespace, &all)
        .into_iter()
        .filter(|o| {
            matches!(
                o["kind"].as_str(),
                Some(
                    "ServiceAccount"
                        | "ClusterRole"
                        | "ClusterRoleBinding"
                        | "Role"
                        | "RoleBinding"
                        | "ValidatingAdmissionPolicy"
                        | "ValidatingAdmissionPolicyBinding"
                )
            )
        })
        .collect()
}

fn blocking<F: std::future::Future<Output = ()> + Send + 'static>(make: impl FnOnce() -> F) {
    let future = make();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(future);
    })
    .join()
    .expect("RBAC installed");
}

async fn admin(kubeconfig: PathBuf) -> Client {
    let kubeconfig = Kubeconfig::read_from(kubeconfig).expect("kubeconfig readable");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig valid");
    Client::try_from(config).expect("client builds")
}

/// Let `e2e-operator` impersonate ServiceAccounts (and nothing else); called once per control plane.
pub async fn allow_impersonation(client: &Client) {
    let objects = [
        serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "e2e-impersonator"},
            "rules": [{"apiGroups": [""], "resources": ["users", "groups", "serviceaccounts"], "verbs": ["impersonate"]}]
        }),
        serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "e2e-impersonator"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "e2e-impersonator"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "e2e-operator"}]
        }),
    ];
    chart::apply(client, "default", objects.iter(), "cloudoptim-e2e", false).await;
}

impl ControlPlane {
    /// A client acting as the chart's ServiceAccount of a release in `namespace` (see
    /// [`ControlPlane::operator_kubeconfig`]).
    pub async fn operator_client(&self, namespace: &str) -> Client {
        admin(self.operator_kubeconfig(namespace)).await
    }

    /// [`ControlPlane::service_account_kubeconfig`] in operator mode.
    pub fn operator_kubeconfig(&self, namespace: &str) -> PathBuf {
        self.service_account_kubeconfig(namespace, Mode::Operator)
    }

    /// A kubeconfig acting as the chart's ServiceAccount of a release in `namespace` (one mode per
    /// namespace), after installing the namespace and the chart's RBAC for it (once).
    pub fn service_account_kubeconfig(&self, namespace: &str, mode: Mode) -> PathBuf {
        self.service_account_kubeconfig_with(namespace, mode, &[])
    }

    /// [`ControlPlane::service_account_kubeconfig`] with the RBAC and admission policies rendered
    /// with more chart `values`; the first call for a namespace decides its values.
    pub fn service_account_kubeconfig_with(
        &self,
        namespace: &str,
        mode: Mode,
        values: &[&str],
    ) -> PathBuf {
        static DONE: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
        let path = self.dir.join(format!("operator-{namespace}.kubeconfig"));
        let key = path.display().to_string();
        let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
        if done.contains(&key) {
            return path;
        }
        let objects = rendered_rbac_with(namespace, mode, values);
        let (kubeconfig, ns) = (self.kubeconfig(), namespace.to_string());
        blocking(move || async move {
            let client = admin(kubeconfig).await;
            let namespace: k8s_openapi::api::core::v1::Namespace =
                serde_json::from_value(serde_json::json!({"metadata": {"name": ns}}))
                    .expect("namespace");
            let api = kube::Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone());
            match api.create(&Default::default(), &namespace).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => panic!("creating namespace {ns}: {e}"),
            }
            // Every control plane (also the API-only ones of multi-cluster tests) needs it.
            allow_impersonation(&client).await;
            chart::apply(&client, &ns, objects.iter(), "cloudoptim-e2e", false).await;
        });
        let base = std::fs::read_to_string(self.dir.join("operator.kubeconfig"))
            .expect("operator.kubeconfig (control-plane.sh)");
        let mut config: serde_yaml::Value = serde_yaml::from_str(&base).expect("kubeconfig yaml");
        let user = &mut config["users"][0]["user"];
        user["as"] = service_account(namespace).into();
        user["as-groups"] = serde_yaml::Value::Sequence(vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{namespace}").into(),
            "system:authenticated".into(),
        ]);
        std::fs::write(
            &path,
            serde_yaml::to_string(&config).expect("kubeconfig yaml"),
        )
        .expect("operator kubeconfig written");
        done.insert(key);
        path
    }

    /// Append the requests the audit log holds for `namespace`'s ServiceAccount to
    /// [`used_dir`] of `mode`: one `verb group resource[/subresource] code` line per request.
    pub fn record_rbac_use(&self, namespace: &str, mode: Mode) {
        let Ok(text) = std::fs::read_to_string(self.dir.join("logs/audit.log")) else {
            return;
        };
        let user = service_account(namespace);
        let lines: BTreeSet<String> = text
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|e| e["impersonatedUser"]["username"] == user.as_str())
            .filter_map(|e| {
                let object = e.get("objectRef")?;
                let resource = object["resource"].as_str()?;
                let resource = match object["subresource"].as_str() {
                    Some(sub) => format!("{resource}/{sub}"),
                    None => resource.to_string(),
                };
                let group = object["apiGroup"].as_str().unwrap_or("");
                let group = if group.is_empty() { "core" } else { group };
                let code = e["responseStatus"]["code"].as_i64().unwrap_or(0);
                let verb = e["verb"].as_str()?;
                let mut used = vec![format!("{verb} {group} {resource} {code}")];
                // A server-side apply that creates the object (201) is authorized as `create` too.
                if verb == "patch" && code == 201 {
                    used.push(format!("create {group} {resource} {code}"));
                }
                Some(used)
            })
            .flatten()
            .collect();
        let dir = used_dir(mode);
        if lines.is_empty() || std::fs::create_dir_all(&dir).is_err() {
            return;
        }
        let file = dir.join(format!("{}-{namespace}.txt", std::process::id()));
        let mut all: BTreeSet<String> = std::fs::read_to_string(&file)
            .map(|t| t.lines().map(str::to_string).collect())
            .unwrap_or_default();
        all.extend(lines);
        let text: String = all.into_iter().map(|l| l + "\n").collect();
        let _ = std::fs::write(file, text);
    }
}
