//! `cloudoptim hub`: the multi-cluster Spot risk hub.

use std::net::SocketAddr;

use clap::Args;

use super::CliError;

/// Arguments of `cloudoptim hub`.
#[derive(Debug, Args)]
pub struct HubArgs {
    /// Address the hub API listens on.
    #[arg(long, default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Directory (a mounted Secret) with one file per member cluster: file name = cluster id,
    /// content = its bearer token.
    #[arg(long, env = "CLOUDOPTIM_HUB_TOKENS_DIR")]
    pub tokens_dir: Option<std::path::PathBuf>,
    /// Seconds a flag stays active after it was last reported.
    #[arg(long, default_value_t = 1800)]
    pub flag_ttl_seconds: u64,
}

/// Hub mode is delivered by the interruptions-and-hub issue.
pub fn run(_args: &HubArgs) -> Result<(), CliError> {
    Err(CliError::NotImplemented("hub"))
}
