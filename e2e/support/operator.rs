//! The real `cloudoptim run` binary as a child process against the test peers.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{ControlPlane, Moto, aws, free_port, repo_root, watchdog};

/// A running operator; killed on drop.
pub struct Operator {
    child: Child,
    /// Control plane directory and release namespace, to record the ServiceAccount's requests.
    rbac: Option<(std::path::PathBuf, String)>,
    /// Port of /metrics, /healthz, /readyz.
    pub metrics_port: u16,
    log: std::path::PathBuf,
}

impl Operator {
    /// Start `cloudoptim run` with `extra` arguments and wait until /readyz answers 200.
    pub fn start(cp: &ControlPlane, moto: &Moto, cluster: &str, extra: &[&str]) -> Operator {
        let mut operator = Self::start_unready(cp, moto, cluster, extra);
        operator.wait_ready(Duration::from_secs(60));
        operator
    }

    /// Start `cloudoptim run` and wait only until its HTTP server answers /healthz.
    pub fn start_unready(
        cp: &ControlPlane,
        moto: &Moto,
        cluster: &str,
        extra: &[&str],
    ) -> Operator {
        let metrics_port = free_port();
        let advisor = repo_root().join("data/catalog/spot-advisor.json");
        let namespace = namespace_arg(extra).unwrap_or(super::rbac::DEFAULT_NAMESPACE.to_string());
        let mut command = Command::new(env!("CARGO_BIN_EXE_cloudoptim"));
        command
            .args([
                "--log-format",
                "json",
                "--log-level",
                "info,cloudoptim=debug",
                "run",
            ])
            .args(["--cluster-name", cluster, "--region", aws::REGION])
            .arg(format!("--metrics-addr=127.0.0.1:{metrics_port}"))
            .arg(format!("--spot-advisor-url=file://{}", advisor.display()))
            .args(extra)
            .env("KUBECONFIG", cp.operator_kubeconfig(&namespace))
            .env("AWS_ENDPOINT_URL", &moto.endpoint)
            .env("AWS_ACCESS_KEY_ID", aws::ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", aws::SECRET_KEY)
            .env_remove("AWS_PROFILE");
        Self::spawn(cp, command, metrics_port, namespace)
    }

    /// Spawn `command` (logging to a file under the control plane's directory), stop it when the test
    /// process exits, and wait until /healthz answers on `metrics_port`.
    fn spawn(
        cp: &ControlPlane,
        mut command: Command,
        metrics_port: u16,
        namespace: String,
    ) -> Operator {
        let log = cp.dir.join(format!("operator-{metrics_port}.log"));
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("operator log file"))
            .spawn()
            .expect("cloudoptim starts");
        watchdog(&format!("kill -9 {} 2>/dev/null", child.id()));
        let mut operator = Operator {
            child,
            rbac: Some((cp.dir.clone(), namespace)),
            metrics_port,
            log,
        };
        operator.wait_for("/healthz", Duration::from_secs(60));
        operator
    }

    /// Start the binary exactly as a kubelet would start the container: `args` and `env` and nothing
    /// else (a clean environment but PATH), logging to a file; wait until /healthz answers on
    /// `metrics_port` (which `args` must configure).
    pub fn launch(
        cp: &ControlPlane,
        args: &[String],
        env: &[(String, String)],
        metrics_port: u16,
    ) -> Operator {
        let mut command = Command::new(env!("CARGO_BIN_EXE_cloudoptim"));
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        // The caller's KUBECONFIG holds a real token of the chart's ServiceAccount (e2e_ha).
        let mut operator = Self::spawn(cp, command, metrics_port, String::new());
        operator.rbac = None;
        operator
    }

    /// Whether /readyz answers 200.
    pub fn is_ready(&self) -> bool {
        self.get("/readyz").is_some_and(|(code, _)| code == 200)
    }

    /// Send `signal` (e.g. `libc::SIGSTOP`) to the process.
    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits");
        // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal})");
    }

    /// Wait up to `timeout` for the process to exit; its status, or `None` if it still runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_ready(&mut self, timeout: Duration) {
        self.wait_for("/readyz", timeout);
    }

    /// Wait up to `timeout` until /readyz answers 200 (panics with the log otherwise).
    pub fn wait_until_ready(&mut self, timeout: Duration) {
        self.wait_for("/readyz", timeout);
    }

    fn wait_for(&mut self, path: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("cloudoptim run exited with {status}:\n{}", self.log_tail());
            }
            if self.get(path).is_some_and(|(code, _)| code == 200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "operator {path} not 200 in {timeout:?}:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// GET a path from the operator's HTTP server: (status code, body).
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.metrics_port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let code = response.split_whitespace().nth(1)?.parse().ok()?;
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Some((code, body))
    }

    /// The value of one metric series (exact label set as rendered), 0 when absent.
    pub fn metric(&self, series: &str) -> f64 {
        let (_, body) = self.get("/metrics").unwrap_or_default();
        body.lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|rest| rest.trim().parse().ok())
            })
            .unwrap_or(0.0)
    }

    /// Process id of the operator (for its memory use).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The whole log of the operator.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last lines of the operator's log (for failure messages).
    pub fn log_tail(&self) -> String {
        super::log_tail(&self.log)
    }

    /// Stop the operator with SIGKILL (a crash) and wait for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- cloudoptim run log (last lines) ---\n{}",
                self.log_tail()
            );
        }
        self.kill();
        if let Some((dir, namespace)) = &self.rbac {
            ControlPlane { dir: dir.clone() }
                .record_rbac_use(namespace, super::rbac::Mode::Operator);
        }
    }
}

/// The release namespace an operator's arguments name (`--namespace`/`--lease-namespace`).
fn namespace_arg(args: &[&str]) -> Option<String> {
    args.iter().enumerate().find_map(|(i, a)| {
        for flag in ["--namespace", "--lease-namespace"] {
            if let Some(v) = a.strip_prefix(&format!("{flag}=")) {
                return Some(v.to_string());
            }
            if *a == flag {
                return args.get(i + 1).map(|v| v.to_string());
            }
        }
        None
    })
}

/// Poll `check` every 200 ms until it returns `Some`, or panic with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tick.tick().await;
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
    }
}
