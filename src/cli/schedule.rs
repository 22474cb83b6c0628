//! `cloudoptim schedule`: transitions of a HibernationSchedule, or its state at an instant.

use std::path::PathBuf;

use clap::Args;

use super::{CliError, OutputFormat};

/// Arguments of `cloudoptim schedule`.
#[derive(Debug, Args)]
pub struct ScheduleArgs {
    /// A HibernationSchedule YAML (the custom resource itself).
    #[arg(long)]
    pub file: PathBuf,
    /// List transitions starting at this instant (RFC 3339).
    #[arg(long, conflicts_with = "at")]
    pub from: Option<String>,
    /// Number of days to list transitions for.
    #[arg(long, default_value_t = 7)]
    pub days: u32,
    /// Print the state at this instant (RFC 3339) as one word: Awake, Hibernating or WakingUp.
    #[arg(long)]
    pub at: Option<String>,
    /// Output format of the transition list.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

/// Delivered by the hibernation issue.
pub fn run(_args: &ScheduleArgs) -> Result<(), CliError> {
    Err(CliError::NotImplemented("schedule"))
}
