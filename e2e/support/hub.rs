//! The real `cloudoptim hub` binary as a child process: started against an API server with member
//! tokens in a directory (as a mounted Secret would hold them), spoken to over plain HTTP/1.1.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cloudoptim::hub::client::{SseEvent, SseParser};
use serde_json::Value;

use super::{ControlPlane, free_port, unique, watchdog};

const WAIT: Duration = Duration::from_secs(30);

pub const TOKEN_A: &str = "token-of-member-a";
pub const TOKEN_B: &str = "token-of-member-b";

/// A running `cloudoptim hub`; killed on drop.
pub struct Hub {
    child: Option<Child>,
    /// Port of its API (loopback).
    pub port: u16,
    ttl: u32,
    kubeconfig: PathBuf,
    tokens: PathBuf,
    log: PathBuf,
}

impl Hub {
    /// Start a hub with members `member-a` and `member-b` (tokens [`TOKEN_A`], [`TOKEN_B`]) and wait
    /// until it is ready.
    pub fn start(cp: &ControlPlane, ttl: u32) -> Hub {
        // One token file ends in a newline, as `kubectl create secret --from-file` often leaves it.
        let a = format!("{TOKEN_A}\n");
        Hub::start_with_tokens(cp, ttl, &[("member-a", &a), ("member-b", TOKEN_B)])
    }

    /// Start a hub storing its flags in `cp`, with one `(cluster id, token)` per member, flags living
    /// `ttl` seconds; wait until it is ready.
    pub fn start_with_tokens(cp: &ControlPlane, ttl: u32, members: &[(&str, &str)]) -> Hub {
        let tokens = cp.dir.join(unique("hub-tokens"));
        std::fs::create_dir_all(&tokens).expect("tokens dir");
        for (cluster, token) in members {
            std::fs::write(tokens.join(cluster), token).expect("token file");
        }
        let port = free_port();
        let mut hub = Hub {
            child: None,
            port,
            ttl,
            kubeconfig: cp.kubeconfig(),
            log: cp.dir.join(format!("hub-{port}.log")),
            tokens,
        };
        hub.spawn();
        hub
    }

    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("hub log file");
        let child = Command::new(env!("CARGO_BIN_EXE_cloudoptim"))
            .args([
                "--log-format",
                "json",
                "--log-level",
                "info,cloudoptim=debug",
                "hub",
            ])
            .arg(format!("--listen=127.0.0.1:{}", self.port))
            .arg(format!("--metrics-addr=127.0.0.1:{}", free_port()))
            .arg(format!("--tokens-dir={}", self.tokens.display()))
            .arg(format!("--flag-ttl-seconds={}", self.ttl))
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("cloudoptim hub starts");
        watchdog(&format!("kill {} 2>/dev/null", child.id()));
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        while self.request("GET", "/readyz", None, None).0 != 200 {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("cloudoptim hub exited with {status}:\n{}", self.log_tail());
            }
            assert!(
                Instant::now() < deadline,
                "hub not ready:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL the hub (a crash: nothing is flushed on the way out) and start it again.
    pub fn crash_and_restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// One HTTP/1.1 request: (status, body); status 0 when nothing answered.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (u16, String) {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return (0, String::new());
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let body = body.unwrap_or("");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: hub\r\nConnection: close\r\n{auth}\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        if stream.write_all(head.as_bytes()).is_err() || stream.write_all(body.as_bytes()).is_err()
        {
            return (0, String::new());
        }
        read_response(&mut stream)
    }

    pub fn post(&self, token: Option<&str>, report: &Value) -> (u16, String) {
        self.request("POST", "/v1/flags", token, Some(&report.to_string()))
    }

    pub fn list(&self, region: &str) -> Vec<Value> {
        let (status, body) = self.request(
            "GET",
            &format!("/v1/flags?region={region}"),
            Some(TOKEN_A),
            None,
        );
        assert_eq!(status, 200, "{body}");
        let body: Value = serde_json::from_str(&body).expect("JSON list");
        body["flags"].as_array().cloned().unwrap_or_default()
    }

    /// Open the watch stream; its events arrive on the returned channel.
    pub fn watch(&self, region: &str) -> mpsc::Receiver<SseEvent> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("hub reachable");
        // HTTP/1.0: the event stream is delimited by the connection, not chunked.
        write!(
            stream,
            "GET /v1/flags/watch?region={region} HTTP/1.0\r\nAuthorization: Bearer {TOKEN_B}\r\n\r\n"
        )
        .expect("request sent");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut parser = SseParser::default();
            let mut buffer = [0u8; 4096];
            while let Ok(n) = stream.read(&mut buffer) {
                if n == 0 {
                    return;
                }
                for event in parser.push(&buffer[..n]) {
                    if tx.send(event).is_err() {
                        return;
                    }
                }
            }
        });
        rx
    }

    pub fn log_tail(&self) -> String {
        super::log_tail(&self.log)
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- cloudoptim hub log (last lines) ---\n{}",
                self.log_tail()
            );
        }
        self.kill();
    }
}

/// Read a whole HTTP/1.1 answer: (status, body).
pub fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response);
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}
