//! `cloudoptim catalog export`: writes a catalog directory (the four files `--catalog` reads) for one
//! region from the live AWS APIs and the Spot Advisor feed, so `rank` and `plan` run offline on real
//! data for any region: DescribeInstanceTypes (every family the region offers, GPUs included),
//! DescribeSpotPriceHistory (the last hour, Linux/UNIX), the Price List API (on-demand prices) and
//! the public Spot Advisor feed.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use super::CliError;
use crate::cloud::aws::{AwsCloud, AwsOptions};
use crate::cloud::spot_advisor::{self, DEFAULT_URL};
use crate::cloud::{Cloud, CloudError};
use crate::engine::catalog::{
    ExportInput, ExportedCatalog, INSTANCE_TYPES_FILE, LiveInstanceType, ON_DEMAND_PRICES_FILE,
    SPOT_ADVISOR_FILE, SPOT_PRICES_FILE, export,
};
use crate::metrics::Metrics;

/// Arguments of `cloudoptim catalog`.
#[derive(Debug, Args)]
pub struct CatalogArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: CatalogCommand,
}

/// The `catalog` subcommands.
#[derive(Debug, Subcommand)]
pub enum CatalogCommand {
    /// Write a catalog directory for one region from the live AWS APIs and the Spot Advisor feed.
    Export(ExportArgs),
}

/// Arguments of `cloudoptim catalog export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// AWS region, e.g. eu-west-3.
    #[arg(long)]
    pub region: String,
    /// Directory to write (created if missing; the four files in it are replaced).
    #[arg(long)]
    pub out: PathBuf,
    /// EC2 endpoint override (private endpoints, tests against moto).
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub aws_endpoint_url: Option<String>,
    /// Price List API endpoint override; by default the API's us-east-1 endpoint, which answers for
    /// every region.
    #[arg(long, env = "CLOUDOPTIM_PRICING_ENDPOINT_URL")]
    pub pricing_endpoint_url: Option<String>,
    /// Spot Advisor feed URL (https://, http:// or file:// for an air-gapped mirror).
    #[arg(long, env = "CLOUDOPTIM_SPOT_ADVISOR_URL", default_value = DEFAULT_URL)]
    pub spot_advisor_url: String,
}

/// Runs a `catalog` subcommand.
pub fn run(args: &CatalogArgs) -> Result<(), CliError> {
    match &args.command {
        CatalogCommand::Export(export) => run_export(export),
    }
}

fn run_export(args: &ExportArgs) -> Result<(), CliError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Failed(format!("starting the async runtime: {e}")))?;
    let files = runtime.block_on(fetch_and_export(args))?;
    write_dir(&args.out, &files)?;
    let [types, on_demand, spot, advisor] = files.counts;
    println!(
        "wrote {}: {types} instance types, {on_demand} on-demand prices, {spot} spot prices, \
         {advisor} Spot Advisor entries for {}",
        args.out.display(),
        args.region
    );
    Ok(())
}

async fn fetch_and_export(args: &ExportArgs) -> Result<ExportedCatalog, CliError> {
    let metrics = Metrics::new().map_err(|e| CliError::Failed(e.to_string()))?;
    let options = AwsOptions {
        region: args.region.clone(),
        endpoint_url: args.aws_endpoint_url.clone(),
        pricing_endpoint_url: args.pricing_endpoint_url.clone(),
        ..AwsOptions::default()
    };
    let cloud = AwsCloud::connect(&options, metrics).await;
    let failed = |e: CloudError| CliError::Failed(e.to_string());
    let types = cloud.instance_types().await.map_err(failed)?;
    let spot = cloud.spot_prices(&[]).await.map_err(failed)?;
    let on_demand = cloud.on_demand_prices(&args.region).await.map_err(failed)?;
    if !on_demand.skipped.is_empty() {
        let first = &on_demand.skipped[0];
        tracing::warn!(
            skipped = on_demand.skipped.len(),
            first_sku = first.sku.as_deref().unwrap_or("unknown"),
            first_problem = %first.problem,
            "Price List products that could not be read were skipped"
        );
    }
    if on_demand.prices.is_empty() {
        tracing::warn!(
            region = %args.region,
            "the Price List API returned no on-demand price: only Spot candidates will rank"
        );
    }
    let advisor = spot_advisor::fetch(&args.spot_advisor_url)
        .await
        .map_err(|e| CliError::Failed(e.to_string()))?;
    let live_types: Vec<LiveInstanceType> = types
        .into_iter()
        .map(|t| LiveInstanceType {
            name: t.name,
            vcpu: t.vcpu,
            memory_mib: t.memory_mib,
            arch: t.arch,
            gpu: t.gpu,
            current_generation: t.current_generation,
        })
        .collect();
    let spot: Vec<(String, String, f64)> = spot
        .into_iter()
        .map(|p| (p.zone, p.instance_type, p.price))
        .collect();
    Ok(export(&ExportInput {
        region: &args.region,
        instance_types: &live_types,
        on_demand: &on_demand.prices,
        spot_prices: &spot,
        advisor: &advisor,
    }))
}

fn write_dir(dir: &Path, files: &ExportedCatalog) -> Result<(), CliError> {
    let failed = |path: &Path, e: std::io::Error| {
        CliError::Failed(format!("--out: writing {}: {e}", path.display()))
    };
    std::fs::create_dir_all(dir).map_err(|e| failed(dir, e))?;
    for (name, text) in [
        (INSTANCE_TYPES_FILE, &files.instance_types),
        (ON_DEMAND_PRICES_FILE, &files.on_demand_prices),
        (SPOT_PRICES_FILE, &files.spot_prices),
        (SPOT_ADVISOR_FILE, &files.spot_advisor),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| failed(&path, e))?;
    }
    Ok(())
}
