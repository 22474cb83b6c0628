//! The real `cloudoptim hub` binary as a child process: started against an API server with member
//! tokens in a directory (as a mounted Secret would hold them), serving TLS with a certificate signed
//! by a CA made for the test (or plain HTTP with `--insecure-plain-http` when a test asks for it),
//! spoken to over HTTP/1.1 by a client that verifies the certificate against that CA.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use cloudoptim::hub::client::{HubClient, HubTls, SseEvent, SseParser};
use serde_json::Value;

use super::{ControlPlane, free_port, unique, watchdog};

const WAIT: Duration = Duration::from_secs(30);

pub const TOKEN_A: &str = "token-of-member-a";
pub const TOKEN_B: &str = "token-of-member-b";

/// A CA made for one hub and the hub's certificate (for `127.0.0.1` and `localhost`), as files.
pub struct TestCa {
    /// The CA certificate (what members pass as `--hub-ca-file`).
    pub ca_file: PathBuf,
    /// The hub's certificate chain (`--tls-cert-file`).
    pub cert_file: PathBuf,
    /// The hub's key (`--tls-key-file`).
    pub key_file: PathBuf,
    /// A client configuration trusting only the CA.
    pub client: Arc<rustls::ClientConfig>,
}

impl TestCa {
    pub fn new(dir: &std::path::Path) -> TestCa {
        std::fs::create_dir_all(dir).expect("tls dir");
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "cloudoptim e2e CA");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA cert");
        let key = rcgen::KeyPair::generate().expect("hub key");
        let params = rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
            .expect("hub params");
        let cert = params.signed_by(&key, &ca).expect("hub cert");
        let files = TestCa {
            ca_file: dir.join("ca.crt"),
            cert_file: dir.join("tls.crt"),
            key_file: dir.join("tls.key"),
            client: client_config(ca.der().clone()),
        };
        std::fs::write(&files.ca_file, ca.pem()).expect("ca.crt");
        std::fs::write(&files.cert_file, cert.pem()).expect("tls.crt");
        std::fs::write(&files.key_file, key.serialize_pem()).expect("tls.key");
        files
    }
}

fn client_config(ca: rustls::pki_types::CertificateDer<'static>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).expect("CA root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// How a test hub is started.
pub struct HubOptions<'a> {
    /// Flags live this long (seconds).
    pub ttl: u32,
    /// `(cluster id, token)` per member.
    pub members: &'a [(&'a str, &'a str)],
    /// TLS (the default) or `--insecure-plain-http`.
    pub tls: bool,
    /// More `cloudoptim hub` flags (limits, `--confirmations`).
    pub args: &'a [&'a str],
}

/// A byte stream to the hub, TLS or not.
trait Conn: Read + Write + Send {}
impl<T: Read + Write + Send> Conn for T {}

/// A running `cloudoptim hub`; killed on drop.
pub struct Hub {
    child: Option<Child>,
    /// Port of its API (loopback).
    pub port: u16,
    /// Its CA and certificate (None: plain HTTP).
    pub ca: Option<TestCa>,
    args: Vec<String>,
    kubeconfig: PathBuf,
    /// The control plane's directory (its audit log).
    cp_dir: PathBuf,
    /// The tokens directory (the mounted Secret): remove or rewrite a file to revoke a member.
    pub tokens: PathBuf,
    log: PathBuf,
}

impl Hub {
    /// Start a TLS hub with members `member-a` and `member-b` (tokens [`TOKEN_A`], [`TOKEN_B`]) and
    /// wait until it is ready.
    pub fn start(cp: &ControlPlane, ttl: u32) -> Hub {
        // One token file ends in a newline, as `kubectl create secret --from-file` often leaves it.
        let a = format!("{TOKEN_A}\n");
        Hub::start_with_tokens(cp, ttl, &[("member-a", &a), ("member-b", TOKEN_B)])
    }

    /// Start a TLS hub storing its flags in `cp`, with one `(cluster id, token)` per member, flags
    /// living `ttl` seconds; wait until it is ready.
    pub fn start_with_tokens(cp: &ControlPlane, ttl: u32, members: &[(&str, &str)]) -> Hub {
        Hub::start_with(
            cp,
            HubOptions {
                ttl,
                members,
                tls: true,
                args: &[],
            },
        )
    }

    /// Start a hub as `options` say; wait until it is ready.
    pub fn start_with(cp: &ControlPlane, options: HubOptions<'_>) -> Hub {
        let mut hub = Hub::prepare(cp, &options);
        hub.spawn();
        hub
    }

    /// Everything but the process: tokens, certificates, flags.
    pub fn prepare(cp: &ControlPlane, options: &HubOptions<'_>) -> Hub {
        let tokens = cp.dir.join(unique("hub-tokens"));
        std::fs::create_dir_all(&tokens).expect("tokens dir");
        for (cluster, token) in options.members {
            std::fs::write(tokens.join(cluster), token).expect("token file");
        }
        let port = free_port();
        let ca = options
            .tls
            .then(|| TestCa::new(&cp.dir.join(unique("hub-tls"))));
        let mut args = vec![
            format!("--listen=127.0.0.1:{port}"),
            format!("--metrics-addr=127.0.0.1:{}", free_port()),
            format!("--tokens-dir={}", tokens.display()),
            format!("--flag-ttl-seconds={}", options.ttl),
            // Revocations are picked up within a second in tests (production: 10 s).
            "--reload-seconds=1".into(),
        ];
        match &ca {
            Some(ca) => {
                args.push(format!("--tls-cert-file={}", ca.cert_file.display()));
                args.push(format!("--tls-key-file={}", ca.key_file.display()));
            }
            None => args.push("--insecure-plain-http".into()),
        }
        args.extend(options.args.iter().map(|a| a.to_string()));
        Hub {
            child: None,
            port,
            ca,
            args,
            // As the chart's hub-mode ServiceAccount, under the chart's hub-mode RBAC.
            kubeconfig: cp
                .service_account_kubeconfig(super::rbac::HUB_NAMESPACE, super::rbac::Mode::Hub),
            log: cp.dir.join(format!("hub-{port}.log")),
            cp_dir: cp.dir.clone(),
            tokens,
        }
    }

    /// The `cloudoptim hub` command with `args` (and the logging flags).
    pub fn command(&self, args: &[String]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_cloudoptim"));
        command
            .args([
                "--log-format",
                "json",
                "--log-level",
                "info,cloudoptim=debug",
                "hub",
            ])
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env_remove("CLOUDOPTIM_HUB_INSECURE_PLAIN_HTTP")
            .stdin(Stdio::null());
        command
    }

    /// The flags this hub is started with.
    pub fn args(&self) -> &[String] {
        &self.args
    }

    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("hub log file");
        let child = self
            .command(&self.args)
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

    /// Port of the hub's /metrics (from its `--metrics-addr`).
    pub fn metrics_port(&self) -> u16 {
        self.args
            .iter()
            .find_map(|a| a.strip_prefix("--metrics-addr=127.0.0.1:")?.parse().ok())
            .expect("the hub is started with --metrics-addr")
    }

    /// The hub's URL.
    pub fn url(&self) -> String {
        let scheme = if self.ca.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The member-side settings reaching this hub (its CA; `--hub-insecure` for a plain hub).
    pub fn client_tls(&self) -> HubTls {
        HubTls {
            ca_file: self.ca.as_ref().map(|ca| ca.ca_file.clone()),
            insecure: self.ca.is_none(),
        }
    }

    /// A member client of this hub.
    pub fn client(&self, token: &str) -> HubClient {
        HubClient::with_tls(&self.url(), token, &self.client_tls()).expect("hub client")
    }

    /// The `cloudoptim run` flags reaching this hub, after `--hub-url`.
    pub fn member_args(&self) -> Vec<String> {
        let mut args = vec!["--hub-url".to_string(), self.url()];
        match &self.ca {
            Some(ca) => args.extend(["--hub-ca-file".into(), ca.ca_file.display().to_string()]),
            None => args.push("--hub-insecure".into()),
        }
        args
    }

    /// A connection speaking the hub's protocol (TLS verified against its CA, or plain).
    fn connect(&self) -> Option<Box<dyn Conn>> {
        let tcp = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        tcp.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        match &self.ca {
            None => Some(Box::new(tcp)),
            Some(ca) => {
                let name = rustls::pki_types::ServerName::try_from("127.0.0.1").ok()?;
                let tls = rustls::ClientConnection::new(ca.client.clone(), name).ok()?;
                Some(Box::new(rustls::StreamOwned::new(tls, tcp)))
            }
        }
    }

    /// One HTTP/1.1 request: (status, body); status 0 when nothing answered.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (u16, String) {
        let (status, _, body) = self.exchange(method, path, token, body);
        (status, body)
    }

    /// One HTTP/1.1 request: (status, response head, body); status 0 when nothing answered.
    pub fn exchange(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (u16, String, String) {
        let Some(mut stream) = self.connect() else {
            return (0, String::new(), String::new());
        };
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
            return (0, String::new(), String::new());
        }
        read_response(&mut stream)
    }

    /// Send `raw` bytes over a hub connection (TLS when the hub serves it) and read the answer.
    pub fn send_raw(&self, raw: &str) -> (u16, String) {
        let mut stream = self.connect().expect("hub reachable");
        stream.write_all(raw.as_bytes()).expect("request sent");
        let (status, _, body) = read_response(&mut stream);
        (status, body)
    }

    /// A plain-HTTP request to the port, whatever the hub serves: (status, raw answer).
    pub fn plain_request(&self, path: &str) -> (u16, String) {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return (0, String::new());
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let head = format!("GET {path} HTTP/1.1\r\nHost: hub\r\nConnection: close\r\n\r\n");
        if stream.write_all(head.as_bytes()).is_err() {
            return (0, String::new());
        }
        let mut raw = Vec::new();
        let _ = stream.read_to_end(&mut raw);
        let raw = String::from_utf8_lossy(&raw).into_owned();
        (status_of(&raw), raw)
    }

    pub fn post(&self, token: Option<&str>, report: &Value) -> (u16, String) {
        self.request("POST", "/v1/flags", token, Some(&report.to_string()))
    }

    /// The flags `member-a` is shown.
    pub fn list(&self, region: &str) -> Vec<Value> {
        self.list_as(TOKEN_A, region)
    }

    /// The flags the member of `token` is shown.
    pub fn list_as(&self, token: &str, region: &str) -> Vec<Value> {
        let path = format!("/v1/flags?region={region}");
        let (status, body) = self.request("GET", &path, Some(token), None);
        assert_eq!(status, 200, "{body}");
        let body: Value = serde_json::from_str(&body).expect("JSON list");
        body["flags"].as_array().cloned().unwrap_or_default()
    }

    /// Open the watch stream as the member of `token`; its events arrive on the returned channel,
    /// which disconnects when the hub ends the stream.
    pub fn watch(&self, token: &str, region: &str) -> mpsc::Receiver<SseEvent> {
        let mut stream = self.connect().expect("hub reachable");
        // HTTP/1.0: the event stream is delimited by the connection, not chunked.
        write!(
            stream,
            "GET /v1/flags/watch?region={region} HTTP/1.0\r\nAuthorization: Bearer {token}\r\n\r\n"
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
        ControlPlane {
            dir: self.cp_dir.clone(),
        }
        .record_rbac_use(super::rbac::HUB_NAMESPACE, super::rbac::Mode::Hub);
    }
}

fn status_of(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Read a whole HTTP/1.1 answer: (status, head, body).
fn read_response(stream: &mut dyn Read) -> (u16, String, String) {
    let mut response = Vec::new();
    // A TLS peer closing without close_notify is an error after the answer was read: keep it.
    let _ = stream.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (status_of(head), head.to_string(), body.to_string())
}
