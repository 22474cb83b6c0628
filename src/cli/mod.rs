//! The `cloudoptim` command line: one subcommand per mode (DESIGN.md section 8).
//!
//! Each subcommand lives in its own file with its clap arguments and a `run` function. `main.rs` only
//! parses arguments, sets up logging and dispatches here.

use clap::{Parser, Subcommand, ValueEnum};

use crate::engine::catalog::{Catalog, CatalogError, name_a_few};

#[cfg(feature = "aws")]
pub mod catalog;
pub mod crds;
pub mod hub;
pub mod iam;
pub mod plan;
pub mod rank;
#[cfg(feature = "aws")]
pub mod run;
pub mod schedule;
pub mod snapshot;

/// Exit code for bad input (a file or flag the user gave that cannot be understood).
pub const EXIT_BAD_INPUT: i32 = 2;
/// Exit code for a command that a later release implements.
pub const EXIT_NOT_IMPLEMENTED: i32 = 3;

/// CloudOptim: run AWS Kubernetes clusters on Spot capacity cheaply and safely.
#[derive(Debug, Parser)]
#[command(name = "cloudoptim", version = env!("CLOUDOPTIM_VERSION_TEXT"), about, long_about = None)]
pub struct Cli {
    /// Log format: `pretty` for people, `json` for log pipelines.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Pretty, env = "CLOUDOPTIM_LOG_FORMAT")]
    pub log_format: LogFormat,

    /// Log filter in `RUST_LOG` syntax, e.g. `info,cloudoptim=debug`.
    #[arg(long, global = true, default_value = "info", env = "RUST_LOG")]
    pub log_level: String,

    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable, coloured when stderr is a terminal.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// Output format of the report commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum OutputFormat {
    /// A table for people.
    #[default]
    Table,
    /// Machine-readable JSON.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the operator: reconcile NodeTemplates, OptimizationPolicies and HibernationSchedules in the
    /// cluster of the current kubeconfig (or in-cluster config) and handle Spot interruptions.
    #[cfg(feature = "aws")]
    Run(Box<run::RunArgs>),
    /// Run the multi-cluster hub that aggregates Spot risk flags reported by member clusters.
    Hub(hub::HubArgs),
    /// Offline what-if report: current vs optimised cost, consolidation plan and Spot ranking for a
    /// cluster snapshot, using bundled price data. Needs no cluster and no AWS account.
    Plan(plan::PlanArgs),
    /// Rank Spot and on-demand candidates (instance type x zone) by risk-weighted price for a region.
    Rank(rank::RankArgs),
    /// Build a catalog directory for `--catalog` from the live AWS APIs (`catalog export`).
    #[cfg(feature = "aws")]
    Catalog(catalog::CatalogArgs),
    /// Write the current cluster's nodes, pods and PodDisruptionBudgets as a List for `plan`.
    Snapshot(snapshot::SnapshotArgs),
    /// Show the transitions of a HibernationSchedule, or its state at one instant.
    Schedule(schedule::ScheduleArgs),
    /// Print every CustomResourceDefinition of CloudOptim as one multi-document YAML stream.
    Crds(crds::CrdsArgs),
    /// Print the operator's least-privilege IAM policy for one cluster: every write scoped to this
    /// cluster's tag value, account, region and interruption queue.
    IamPolicy(iam::IamArgs),
}

/// The outcome of a subcommand, mapped to a process exit code by `main`.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The user's input (file or flag) is invalid; the message names the input and the field.
    #[error("{0}")]
    BadInput(String),
    /// The command exists but a later release implements it.
    #[error("`cloudoptim {0}` is not implemented yet")]
    NotImplemented(&'static str),
    /// Anything else that went wrong while running.
    #[error("{0}")]
    Failed(String),
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::BadInput(_) => EXIT_BAD_INPUT,
            CliError::NotImplemented(_) => EXIT_NOT_IMPLEMENTED,
            CliError::Failed(_) => 1,
        }
    }
}

/// How many skipped Spot Advisor entries a warning names.
const SKIPPED_NAMED: usize = 3;

/// Reads a `--catalog` directory; entries of its `spot-advisor.json` that cannot be used are skipped
/// (a real copy of the public feed has some) and named in one warning.
pub fn load_catalog(dir: &std::path::Path) -> Result<Catalog, CatalogError> {
    let catalog = Catalog::from_dir(dir)?;
    let skipped = catalog.advisor_skipped();
    if !skipped.is_empty() {
        tracing::warn!(
            catalog = %dir.display(),
            skipped = skipped.len(),
            entries = %name_a_few(skipped, SKIPPED_NAMED),
            "spot-advisor.json: unusable entries skipped (no bucket for them); the rest is in use"
        );
    }
    Ok(catalog)
}

/// The error for a region `catalog` has no prices for (`catalog_flag`: how the user chose the
/// catalog), naming the command that builds a catalog for it.
pub fn region_not_in_catalog(region: &str, catalog: &Catalog, catalog_flag: &str) -> CliError {
    let known: Vec<&str> = catalog
        .regions()
        .filter(|r| !catalog.zones(r).is_empty())
        .collect();
    CliError::BadInput(format!(
        "region {region}: {catalog_flag} has no prices for it (it has: {}). Fix: build a catalog for \
         it from the live AWS APIs with `cloudoptim catalog export --region {region} --out DIR` and \
         pass `--catalog DIR`",
        known.join(", ")
    ))
}

/// True when `catalog` can rank `region`: it has Spot prices, hence zones, there.
pub fn catalog_covers(catalog: &Catalog, region: &str) -> bool {
    !catalog.zones(region).is_empty()
}

/// Dispatch a parsed command line.
pub fn dispatch(command: Command) -> Result<(), CliError> {
    match command {
        #[cfg(feature = "aws")]
        Command::Run(args) => run::run(&args),
        Command::Hub(args) => hub::run(&args),
        Command::Plan(args) => plan::run(&args),
        Command::Rank(args) => rank::run(&args),
        #[cfg(feature = "aws")]
        Command::Catalog(args) => catalog::run(&args),
        Command::Snapshot(args) => snapshot::run(&args),
        Command::Schedule(args) => schedule::run(&args),
        Command::Crds(args) => crds::run(&args),
        Command::IamPolicy(args) => iam::run(&args),
    }
}
