//! Real test peers for the end-to-end tests: a Kubernetes control plane (etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler, kwok) and a moto server, all started by the tests.
//!
//! The binaries are built and cached by `e2e/tools/setup.sh`, which writes `env.sh` with their
//! paths; `scripts/test.sh` sources it. The control plane is started by `e2e/tools/control-plane.sh`
//! (one source of truth for the flags) once per test binary and shared by its tests; every test makes
//! its own `kube::Client` (a client belongs to one tokio runtime) and its own uniquely named objects.
//! A watchdog process stops the peers when the test binary exits, even on panic or abort.
//!
//! Without the peers the tests are skipped with a message saying why, unless
//! `CLOUDOPTIM_E2E_REQUIRED=1` (CI), where a missing peer fails the test.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, Config};

pub mod aws;
pub mod chart;
pub mod hooks;
pub mod hub;
pub mod nodes;
pub mod operator;
pub mod pricing;
pub mod prometheus;
pub mod proxy;
pub mod rbac;

/// Path of the repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn required() -> bool {
    std::env::var("CLOUDOPTIM_E2E_REQUIRED").is_ok_and(|v| v == "1")
}

/// Skip (return `None`) or fail, depending on `CLOUDOPTIM_E2E_REQUIRED`, when a peer is missing.
pub(crate) fn missing<T>(what: &str) -> Option<T> {
    if required() {
        panic!("e2e peer unavailable: {what} (CLOUDOPTIM_E2E_REQUIRED=1); run e2e/tools/setup.sh");
    }
    eprintln!("SKIPPED: e2e peer unavailable: {what}; run scripts/test.sh (it builds the peers)");
    None
}

/// The variable `name`, from the environment or from the cache's env.sh written by setup.sh.
fn peer_env(name: &str) -> Option<String> {
    if let Ok(v) = std::env::var(name) {
        return Some(v);
    }
    let cache = std::env::var("CLOUDOPTIM_E2E_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/cloudoptim-e2e")
        });
    let env_sh = std::fs::read_to_string(cache.join("env.sh")).ok()?;
    env_sh.lines().find_map(|line| {
        let rest = line
            .trim()
            .strip_prefix("export ")?
            .strip_prefix(name)?
            .strip_prefix('=')?;
        Some(rest.trim_matches(|c| c == '"' || c == '\'').to_string())
    })
}

/// A peer's path from the environment or the cache's env.sh.
pub fn peer_env_public(name: &str) -> Option<String> {
    peer_env(name)
}

/// Start a watchdog that runs `cleanup` (a shell command) once this process exits.
pub fn watchdog(cleanup: &str) {
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {cleanup}",
        pid = std::process::id()
    );
    let _ = Command::new("setsid")
        .args(["bash", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}

/// A unique suffix for object names within this test binary.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id() % 100_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Create a namespace with a unique name starting with `prefix`; returns its name.
pub async fn create_namespace(client: &Client, prefix: &str) -> String {
    let name = unique(prefix);
    let namespace: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))
            .expect("namespace object");
    Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .create(&kube::api::PostParams::default(), &namespace)
        .await
        .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
    name
}

/// A running control plane shared by the tests of one test binary.
pub struct ControlPlane {
    /// Directory holding kubeconfig, token, logs.
    pub dir: PathBuf,
}

impl ControlPlane {
    /// The shared control plane with every component (etcd, apiserver, controller-manager,
    /// scheduler, kwok), started on first use; `None` when skipped.
    pub fn shared() -> Option<&'static ControlPlane> {
        static CP: OnceLock<Option<ControlPlane>> = OnceLock::new();
        CP.get_or_init(Self::start).as_ref()
    }

    fn start() -> Option<ControlPlane> {
        for var in [
            "CLOUDOPTIM_KUBE_APISERVER",
            "CLOUDOPTIM_ETCD",
            "CLOUDOPTIM_KWOK",
        ] {
            if peer_env(var).is_none_or(|p| !Path::new(&p).exists()) {
                return missing(&format!("{var} (no binary)"));
            }
        }
        let dir = std::env::temp_dir().join(unique("cloudoptim-e2e-cp"));
        let script = repo_root().join("e2e/tools/control-plane.sh");
        let stop = format!(
            "{} stop {} >/dev/null 2>&1; rm -rf {}",
            script.display(),
            dir.display(),
            dir.display()
        );
        watchdog(&stop);
        let mut cmd = Command::new(&script);
        cmd.arg("start").arg(&dir);
        for var in [
            "CLOUDOPTIM_KUBE_APISERVER",
            "CLOUDOPTIM_KUBE_CONTROLLER_MANAGER",
            "CLOUDOPTIM_KUBE_SCHEDULER",
            "CLOUDOPTIM_ETCD",
            "CLOUDOPTIM_KWOK",
        ] {
            if let Some(v) = peer_env(var) {
                cmd.env(var, v);
            }
        }
        let out = cmd.output().expect("control-plane.sh runs");
        if !out.status.success() {
            panic!(
                "control plane failed to start:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let cp = ControlPlane { dir };
        install_crds_blocking(&cp);
        Some(cp)
    }

    /// Path of the admin kubeconfig.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// A new admin client (bound to the calling test's runtime).
    pub async fn client(&self) -> Client {
        let kubeconfig = Kubeconfig::read_from(self.kubeconfig()).expect("kubeconfig readable");
        let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("kubeconfig valid");
        // kube's default retry resends a 429 up to 15 times (minutes for a PDB-blocked eviction);
        // the tests observe the API server's answers as they are.
        config.default_retry = false;
        Client::try_from(config).expect("client builds")
    }
}

fn install_crds_blocking(cp: &ControlPlane) {
    // Called from inside a test's runtime: install from a thread with a runtime of its own.
    let kubeconfig = cp.kubeconfig();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let kubeconfig = Kubeconfig::read_from(kubeconfig).expect("kubeconfig readable");
            let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .expect("kubeconfig valid");
            install_crds(&Client::try_from(config).expect("client builds")).await;
        });
    })
    .join()
    .expect("CRDs installed");
}

/// Apply every CloudOptim CRD (server-side apply) and wait until each is Established.
pub async fn install_crds(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in cloudoptim::api::crds() {
        let name = crd.metadata.name.clone().expect("CRD has a name");
        api.patch(
            &name,
            &PatchParams::apply("cloudoptim-e2e").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap_or_else(|e| panic!("CRD {name} rejected by the API server: {e}"));
        tokio::time::timeout(
            Duration::from_secs(30),
            await_condition(api.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .unwrap_or_else(|_| panic!("CRD {name} not established in 30 s"))
        .expect("watching the CRD");
    }
}

/// A moto server (EC2, Auto Scaling, SQS, STS) on a free loopback port, one per test; stopped on drop.
pub struct Moto {
    /// Endpoint URL, e.g. `http://127.0.0.1:40123`.
    pub endpoint: String,
    child: Child,
}

impl Moto {
    /// Start a fresh moto server; `None` when skipped.
    pub fn start() -> Option<Moto> {
        let Some(bin) = peer_env("CLOUDOPTIM_MOTO_SERVER").filter(|p| Path::new(p).exists()) else {
            return missing("CLOUDOPTIM_MOTO_SERVER (no moto_server)");
        };
        let port = free_port();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION", "true")
            // The request log (only written once a test starts recording) stays out of the work tree.
            .env(
                "MOTO_RECORDER_FILEPATH",
                std::env::temp_dir().join(format!("cloudoptim-moto-{port}.recording")),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server starts");
        watchdog(&format!("kill {} 2>/dev/null", child.id()));
        let endpoint = format!("http://127.0.0.1:{port}");
        wait_until_listening(port, Duration::from_secs(60));
        Some(Moto { endpoint, child })
    }

    /// Reset all moto state (`POST /moto-api/reset`).
    pub fn reset(&self) {
        let status = Command::new("curl")
            .args([
                "-fsS",
                "-X",
                "POST",
                &format!("{}/moto-api/reset", self.endpoint),
            ])
            .stdout(Stdio::null())
            .status()
            .expect("curl runs");
        assert!(status.success(), "moto reset failed");
    }

    fn curl(&self, method: &str, path: &str) -> String {
        let out = Command::new("curl")
            .args(["-fsS", "-X", method, &format!("{}{path}", self.endpoint)])
            .output()
            .expect("curl runs");
        assert!(out.status.success(), "moto {method} {path} failed");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Start moto's request log afresh: every AWS request from now on is recorded, headers included.
    pub fn start_recording(&self) {
        self.curl("POST", "/moto-api/recorder/reset-recording");
        self.curl("POST", "/moto-api/recorder/start-recording");
    }

    /// The requests recorded since [`Moto::start_recording`]: (User-Agent and X-Amz-User-Agent, which
    /// carries the SDK's `app/<name>`; operation name).
    pub fn recorded_requests(&self) -> Vec<(String, String)> {
        self.curl("GET", "/moto-api/recorder/download-recording")
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .map(|entry| {
                let header = |name: &str| {
                    entry["headers"]
                        .as_object()
                        .and_then(|h| {
                            h.iter()
                                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                                .and_then(|(_, v)| v.as_str())
                        })
                        .unwrap_or_default()
                        .to_string()
                };
                let agents = format!("{} {}", header("User-Agent"), header("X-Amz-User-Agent"));
                (agents, operation_of(&entry, &header("X-Amz-Target")))
            })
            .collect()
    }
}

impl Moto {
    /// Every AWS action the operator made since recording started, as `service:Operation` (the
    /// service from the SigV4 credential scope), taken from moto's own request log.
    pub fn operator_actions(&self) -> std::collections::BTreeSet<String> {
        self.curl("GET", "/moto-api/recorder/download-recording")
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter_map(|entry| {
                let headers = entry["headers"].as_object()?;
                let header = |name: &str| {
                    headers
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(name))
                        .and_then(|(_, v)| v.as_str())
                        .unwrap_or_default()
                        .to_string()
                };
                let agents = format!("{} {}", header("User-Agent"), header("X-Amz-User-Agent"));
                // The operator always names itself (`app/<identity>`); the tests' own SDK clients don't.
                if !agents.contains("app/") {
                    return None;
                }
                // Credential=KEY/DATE/REGION/SERVICE/aws4_request
                let auth = header("Authorization");
                let service = auth
                    .split("Credential=")
                    .nth(1)?
                    .split('/')
                    .nth(3)?
                    .to_string();
                Some(format!(
                    "{service}:{}",
                    operation_of(&entry, &header("X-Amz-Target"))
                ))
            })
            .collect()
    }

    /// Assert that every AWS action the operator made (as moto recorded it) is granted by the IAM
    /// policy the chart ships, and return them.
    pub fn assert_operator_actions_allowed(&self) -> std::collections::BTreeSet<String> {
        let policy = cloudoptim::cloud::iam::render(&cloudoptim::cloud::iam::PolicyParams {
            cluster_name: "e2e".into(),
            region: aws::REGION.into(),
            account_id: "123456789012".into(),
            queue_name: "q".into(),
            node_role_arn: None,
            partition: "aws".into(),
        })
        .expect("policy renders");
        let granted =
            cloudoptim::cloud::iam::actions(&serde_json::from_str(&policy).expect("policy json"));
        let made = self.operator_actions();
        assert!(!made.is_empty(), "moto recorded no operator request");
        let denied: Vec<_> = made.iter().filter(|a| !granted.contains(*a)).collect();
        assert!(
            denied.is_empty(),
            "the operator called {denied:?}, which charts/cloudoptim/files/iam-policy.json does not grant"
        );
        made
    }
}

/// The AWS operation of a recorded request: `X-Amz-Target` (JSON protocols such as SQS), else the
/// query protocol's `Action=` in the body or URL (EC2, Auto Scaling).
fn operation_of(entry: &serde_json::Value, target: &str) -> String {
    if let Some((_, op)) = target.rsplit_once('.') {
        return op.to_string();
    }
    let body = entry["body"].as_str().unwrap_or_default();
    let body = if entry["body_encoded"].as_bool() == Some(true) {
        decode_base64(body)
    } else {
        body.to_string()
    };
    let url = entry["url"].as_str().unwrap_or_default();
    body.split('&')
        .chain(url.split(['?', '&']))
        .find_map(|pair| pair.strip_prefix("Action="))
        .unwrap_or("unknown")
        .to_string()
}

fn decode_base64(text: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::new();
    for c in text.bytes().filter(|c| *c != b'=') {
        let Some(value) = ALPHABET.iter().position(|a| *a == c) else {
            continue;
        };
        bits = (bits << 6) | value as u32;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Block until something accepts connections on `port` (readiness of a started peer).
fn wait_until_listening(port: u16, timeout: Duration) {
    let deadline = std::time::Instant::now() + timeout;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "port {port} not listening after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One more API server (etcd + kube-apiserver only, no nodes) with the CRDs installed: another cluster
/// for multi-cluster tests (a hub's, or a second member's). Stopped when the test binary exits.
pub async fn api_only_cluster(prefix: &str) -> Option<ControlPlane> {
    ControlPlane::shared()?;
    cluster_with(prefix, "etcd apiserver").await
}

/// A cluster of its own with only `components` (see control-plane.sh), e.g. "etcd apiserver kwok" for a
/// scale run without controllers acting on the objects it creates; CRDs installed.
pub async fn cluster_with(prefix: &str, components: &str) -> Option<ControlPlane> {
    for var in ["CLOUDOPTIM_KUBE_APISERVER", "CLOUDOPTIM_ETCD"] {
        if peer_env(var).is_none_or(|p| !Path::new(&p).exists()) {
            return missing(&format!("{var} (no binary)"));
        }
    }
    let dir = std::env::temp_dir().join(unique(&format!("cloudoptim-e2e-{prefix}")));
    let script = repo_root().join("e2e/tools/control-plane.sh");
    watchdog(&format!(
        "{} stop {dir} >/dev/null 2>&1; rm -rf {dir}",
        script.display(),
        dir = dir.display()
    ));
    let started = dir.clone();
    let components = components.to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(&script)
            .arg("start")
            .arg(&started)
            .env("CLOUDOPTIM_E2E_COMPONENTS", components)
            .envs(
                [
                    "CLOUDOPTIM_KUBE_APISERVER",
                    "CLOUDOPTIM_ETCD",
                    "CLOUDOPTIM_KWOK",
                    "CLOUDOPTIM_KUBE_SCHEDULER",
                    "CLOUDOPTIM_KUBE_CONTROLLER_MANAGER",
                ]
                .into_iter()
                .filter_map(|v| peer_env(v).map(|p| (v, p))),
            )
            .output()
            .expect("control-plane.sh runs")
    })
    .await
    .expect("start joined");
    assert!(
        out.status.success(),
        "extra API server failed to start:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cluster = ControlPlane { dir };
    install_crds(&cluster.client().await).await;
    Some(cluster)
}

/// The last 40 lines of a child process's log file (for failure messages).
pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// (reason, message) of the Events about the object named `name` (any kind, any namespace).
pub async fn events(client: &Client, name: &str) -> Vec<(String, String)> {
    Api::<k8s_openapi::api::core::v1::Event>::all(client.clone())
        .list(&kube::api::ListParams::default().fields(&format!("involvedObject.name={name}")))
        .await
        .expect("events")
        .items
        .into_iter()
        .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
        .collect()
}

/// The Ready condition of OptimizationPolicy `name`: (status, reason, message).
pub async fn policy_ready(
    api: &Api<cloudoptim::api::OptimizationPolicy>,
    name: &str,
) -> Option<(String, String, String)> {
    let policy = api.get(name).await.ok()?;
    let c = policy
        .status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")?;
    Some((c.status, c.reason, c.message))
}
