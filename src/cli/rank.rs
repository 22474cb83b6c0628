//! `cloudoptim rank`: ranked Spot candidates for a region.

use std::path::PathBuf;

use clap::Args;

use super::{CliError, OutputFormat};

/// Arguments of `cloudoptim rank`.
#[derive(Debug, Args)]
pub struct RankArgs {
    /// AWS region, e.g. us-east-1.
    #[arg(long)]
    pub region: String,
    /// Catalog directory. Default: the embedded sample catalog.
    #[arg(long)]
    pub catalog: Option<PathBuf>,
    /// A NodeTemplate YAML whose requirements and strategy apply.
    #[arg(long)]
    pub template: Option<PathBuf>,
    /// A YAML list (or multi-document stream) of SpotRiskFlag objects; flagged candidates are left out.
    #[arg(long)]
    pub flags: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

/// Delivered by the decision-engine issue.
pub fn run(_args: &RankArgs) -> Result<(), CliError> {
    Err(CliError::NotImplemented("rank"))
}
