//! `cloudoptim hub`: the multi-cluster Spot risk hub (DESIGN.md section 7; the code is in `crate::hub`).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

use super::CliError;
use crate::hub::{HubConfig, HubError};

/// Arguments of `cloudoptim hub`.
#[derive(Debug, Args)]
pub struct HubArgs {
    /// Address the hub API listens on (plain HTTP: terminate TLS in front of it).
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
    };
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|e| CliError::Failed(format!("starting tokio: {e}")))?;
    let result = runtime.block_on(crate::hub::serve(config, shutdown_signal()));
    // Open watch streams and retrying API calls are abandoned, not awaited.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    result.map_err(|e| match e {
        HubError::Tokens(e) => CliError::BadInput(format!("--tokens-dir: {e}")),
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
