//! `cloudoptim snapshot`: write the current cluster as a List for `cloudoptim plan`.

use clap::Args;

use super::CliError;

/// Arguments of `cloudoptim snapshot`.
#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// File to write (`-` for stdout).
    #[arg(short = 'o', long = "output", default_value = "-")]
    pub output: String,
}

/// Snapshotting a live cluster is delivered with the OptimizationPolicy controller issue.
pub fn run(_args: &SnapshotArgs) -> Result<(), CliError> {
    Err(CliError::NotImplemented("snapshot"))
}
