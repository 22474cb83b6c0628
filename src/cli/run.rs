//! `cloudoptim run`: the operator (controller mode).

use std::net::SocketAddr;

use clap::Args;

use super::CliError;

/// Arguments of `cloudoptim run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Name of this cluster; instances and volumes are acted on only when they carry its cluster tag.
    #[arg(long, env = "CLOUDOPTIM_CLUSTER_NAME")]
    pub cluster_name: Option<String>,
    /// AWS region of the cluster.
    #[arg(long, env = "AWS_REGION")]
    pub region: Option<String>,
    /// URL of the CloudOptim hub to share Spot risk flags with (optional).
    #[arg(long, env = "CLOUDOPTIM_HUB_URL")]
    pub hub_url: Option<String>,
    /// File holding this cluster's bearer token for the hub.
    #[arg(long, env = "CLOUDOPTIM_HUB_TOKEN_FILE")]
    pub hub_token_file: Option<std::path::PathBuf>,
    /// Address of the /metrics and /healthz server.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Elect a leader through a coordination.k8s.io Lease so only one replica acts.
    #[arg(long)]
    pub leader_elect: bool,
    /// Plan, record Events and metrics, and change nothing (overrides every policy's dryRun).
    #[arg(long)]
    pub dry_run: bool,
}

/// Controller mode is delivered by the NodeTemplate controller issue.
pub fn run(_args: &RunArgs) -> Result<(), CliError> {
    Err(CliError::NotImplemented("run"))
}
