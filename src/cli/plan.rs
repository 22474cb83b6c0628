//! `cloudoptim plan`: the offline what-if report.

use std::path::PathBuf;

use clap::Args;

use super::{CliError, OutputFormat};

/// Arguments of `cloudoptim plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// A Kubernetes List of Nodes, Pods and PodDisruptionBudgets (`kubectl get
    /// nodes,pods,poddisruptionbudgets -A -o yaml`). Default: the bundled example cluster.
    #[arg(long)]
    pub snapshot: Option<PathBuf>,
    /// Catalog directory (instance-types.csv, on-demand-prices.csv, spot-prices.csv,
    /// spot-advisor.json). Default: the embedded sample catalog.
    #[arg(long)]
    pub catalog: Option<PathBuf>,
    /// An OptimizationPolicy YAML whose spot, consolidation and disruption settings apply.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

/// Delivered by the decision-engine issue.
pub fn run(_args: &PlanArgs) -> Result<(), CliError> {
    Err(CliError::NotImplemented("plan"))
}
