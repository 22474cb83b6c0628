//! `cloudoptim hub`: the multi-cluster Spot risk hub (DESIGN.md section 7; the code is in `crate::hub`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::CliError;
use crate::hub::limits::Limits;
use crate::hub::tls::CertFiles;
use crate::hub::{HubConfig, HubError};

/// Arguments of `cloudoptim hub`.
#[derive(Debug, Args)]
pub struct HubArgs {
    /// Address the hub API listens on (HTTPS with --tls-cert-file/--tls-key-file).
    #[arg(long, default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Address of the /metrics, /healthz and /readyz server (they are also served on --listen).
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Directory (a mounted Secret) with one file per member cluster: file name = cluster id,
    /// content = its bearer token. Read again every 10 s.
    #[arg(long, env = "CLOUDOPTIM_HUB_TOKENS_DIR")]
    pub tokens_dir: Option<PathBuf>,
    /// Seconds a flag stays active after it was last reported.
    #[arg(long, default_value_t = 1800, value_parser = clap::value_parser!(u32).range(1..))]
    pub flag_ttl_seconds: u32,
    /// PEM certificate chain of the hub (a kubernetes.io/tls Secret's tls.crt); re-read when it
    /// changes.
    #[arg(long, env = "CLOUDOPTIM_HUB_TLS_CERT_FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of the certificate (tls.key).
    #[arg(long, env = "CLOUDOPTIM_HUB_TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,
    /// Serve plain HTTP without TLS: member tokens then cross the network in clear. Only behind
    /// something that encrypts (a service mesh with mTLS).
    #[arg(
        long,
        env = "CLOUDOPTIM_HUB_INSECURE_PLAIN_HTTP",
        conflicts_with = "tls_cert_file"
    )]
    pub insecure_plain_http: bool,
    /// Seconds between reads of the tokens directory and the certificate files.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=3600))]
    pub reload_seconds: u32,
    /// Seconds for the TLS handshake and for each request's headers.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=600))]
    pub header_read_timeout_seconds: u32,
    /// Seconds without traffic after which a connection is closed (more than the watch keep-alive
    /// of 15 s).
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u32).range(20..=3600))]
    pub idle_timeout_seconds: u32,
    /// Connections served at once; more are closed at once.
    #[arg(long, env = "CLOUDOPTIM_HUB_MAX_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Reports per second one member may send, sustained (429 with Retry-After beyond).
    #[arg(long, env = "CLOUDOPTIM_HUB_REPORTS_PER_SECOND", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub reports_per_second: u32,
    /// Reports one member may send at once after a quiet spell.
    #[arg(long, env = "CLOUDOPTIM_HUB_REPORT_BURST", default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    pub report_burst: u32,
    /// Distinct active flags one member may report (422 beyond).
    #[arg(long, env = "CLOUDOPTIM_HUB_MAX_FLAGS_PER_MEMBER", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_flags_per_member: u32,
    /// Open watches one member may hold (429 beyond).
    #[arg(long, env = "CLOUDOPTIM_HUB_MAX_WATCHES_PER_MEMBER", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_watches_per_member: u32,
    /// Other requests one member may have in flight (429 beyond).
    #[arg(long, env = "CLOUDOPTIM_HUB_MAX_REQUESTS_PER_MEMBER", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_requests_per_member: u32,
    /// Distinct members that must report a flag before the other members are shown it (the
    /// reporters always are). 1 shares a single member's flag with the fleet at once.
    #[arg(long, env = "CLOUDOPTIM_HUB_CONFIRMATIONS", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub confirmations: u32,
}

impl HubArgs {
    fn limits(&self) -> Limits {
        let count = |n: u32| usize::try_from(n).unwrap_or(usize::MAX);
        Limits {
            reports_per_second: f64::from(self.reports_per_second),
            report_burst: self.report_burst,
            max_flags_per_member: count(self.max_flags_per_member),
            max_watches_per_member: count(self.max_watches_per_member),
            max_requests_per_member: count(self.max_requests_per_member),
            confirmations: count(self.confirmations),
        }
    }

    /// The certificate files, or plain HTTP only when asked for by name.
    fn tls(&self) -> Result<Option<CertFiles>, CliError> {
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => Ok(Some(CertFiles {
                cert: cert.clone(),
                key: key.clone(),
            })),
            _ if self.insecure_plain_http => {
                tracing::warn!(
                    "serving plain HTTP (--insecure-plain-http): member tokens cross the network in clear"
                );
                Ok(None)
            }
            _ => Err(CliError::BadInput(
                "the hub serves HTTPS: give --tls-cert-file and --tls-key-file (PEM), or \
                 --insecure-plain-http to serve plain HTTP behind something that encrypts"
                    .into(),
            )),
        }
    }
}

/// Run the hub until SIGTERM / Ctrl-C.
pub fn run(args: &HubArgs) -> Result<(), CliError> {
    let tokens_dir = args.tokens_dir.clone().ok_or_else(|| {
        CliError::BadInput("--tokens-dir is required (or CLOUDOPTIM_HUB_TOKENS_DIR)".into())
    })?;
    let config = HubConfig {
        listen: args.listen,
        metrics_addr: (args.metrics_addr != args.listen).then_some(args.metrics_addr),
        tokens_dir,
        flag_ttl_seconds: i64::from(args.flag_ttl_seconds),
        tls: args.tls()?,
        reload_interval: Duration::from_secs(args.reload_seconds.into()),
        header_read_timeout: Duration::from_secs(args.header_read_timeout_seconds.into()),
        idle_timeout: Duration::from_secs(args.idle_timeout_seconds.into()),
        max_connections: usize::try_from(args.max_connections).unwrap_or(usize::MAX),
        limits: args.limits(),
    };
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|e| CliError::Failed(format!("starting tokio: {e}")))?;
    let result = runtime.block_on(crate::hub::serve(config, shutdown_signal()));
    // Open watch streams and retrying API calls are abandoned, not awaited.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    result.map_err(|e| match e {
        HubError::Tokens(e) => CliError::BadInput(format!("--tokens-dir: {e}")),
        HubError::Tls(e) => CliError::BadInput(format!("--tls-cert-file/--tls-key-file: {e}")),
        other => CliError::Failed(other.to_string()),
    })
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
        return;
    }
    let _ = tokio::signal::ctrl_c().await;
}
