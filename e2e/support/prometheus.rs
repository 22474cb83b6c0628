//! The real Prometheus (the Debian package `setup.sh` installs) scraping test processes, and its HTTP
//! query API.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, peer_env_public, watchdog};

/// A running Prometheus; killed on drop.
pub struct Prometheus {
    child: Child,
    /// Port of its HTTP API (loopback).
    pub port: u16,
    log: std::path::PathBuf,
}

/// One scrape job: its name and `host:port` targets.
pub struct Job<'a> {
    /// The `job` label.
    pub name: &'a str,
    /// `127.0.0.1:<port>` of each /metrics endpoint.
    pub targets: Vec<String>,
}

impl Prometheus {
    /// Start Prometheus in `dir` scraping `jobs` every second and evaluating `rules` (rule files) every
    /// second; `None` (or a panic with `CLOUDOPTIM_E2E_REQUIRED=1`) when Prometheus is not installed.
    pub fn start(dir: &Path, jobs: &[Job<'_>], rules: &[&Path]) -> Option<Prometheus> {
        Self::start_with(dir, jobs, rules, &[])
    }

    /// [`Prometheus::start`] with more command-line flags (e.g. `--web.config.file=...`).
    pub fn start_with(
        dir: &Path,
        jobs: &[Job<'_>],
        rules: &[&Path],
        flags: &[String],
    ) -> Option<Prometheus> {
        let Some(binary) = peer_env_public("CLOUDOPTIM_PROMETHEUS") else {
            return super::missing("CLOUDOPTIM_PROMETHEUS (the Debian package prometheus)");
        };
        std::fs::create_dir_all(dir).expect("prometheus dir");
        let scrape: Vec<serde_json::Value> = jobs
            .iter()
            .map(|j| serde_json::json!({"job_name": j.name, "static_configs": [{"targets": j.targets}]}))
            .collect();
        let config = serde_json::json!({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": rules.iter().map(|r| r.display().to_string()).collect::<Vec<_>>(),
            "scrape_configs": scrape,
        });
        // JSON is YAML: Prometheus reads it as its config file.
        let file = dir.join("prometheus.yml");
        std::fs::write(&file, config.to_string()).expect("prometheus config");
        let port = free_port();
        let log = dir.join("prometheus.log");
        let child = Command::new(binary)
            .arg(format!("--config.file={}", file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(flags)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("prometheus log"))
            .spawn()
            .expect("prometheus starts");
        watchdog(&format!("kill -9 {} 2>/dev/null", child.id()));
        Some(Prometheus { child, port, log })
    }

    /// The result vector of an instant query (`None` while Prometheus does not answer, or when the
    /// query is refused: the error is in the returned string).
    pub async fn query(&self, query: &str) -> Result<Vec<serde_json::Value>, String> {
        let body = self
            .get(&format!("/api/v1/query?query={}", encode(query)))
            .await?;
        if body["status"] != "success" {
            return Err(format!("query {query} refused: {body}"));
        }
        Ok(body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// GET `path` of the HTTP API, as JSON.
    pub async fn get(&self, path: &str) -> Result<serde_json::Value, String> {
        let response = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{}{path}", self.port))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| format!("prometheus unreachable: {e}"))?;
        let text = response
            .text()
            .await
            .map_err(|e| format!("prometheus answer: {e}"))?;
        serde_json::from_str(&text).map_err(|e| format!("prometheus answer {text}: {e}"))
    }

    /// The last lines of Prometheus's log (for failure messages).
    pub fn log_tail(&self) -> String {
        super::log_tail(&self.log)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encoding of a query parameter (RFC 3986 unreserved characters kept).
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
