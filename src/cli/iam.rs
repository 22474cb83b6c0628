//! `cloudoptim iam-policy`: print the operator's least-privilege IAM policy for one cluster.

use clap::Args;

use super::CliError;
use crate::cloud::iam::{PolicyParams, render};

/// Arguments of `cloudoptim iam-policy`.
#[derive(Debug, Args)]
pub struct IamArgs {
    /// The cluster's `cloudoptim.io/cluster` tag value (the chart's `clusterName`).
    #[arg(long)]
    pub cluster_name: String,
    /// AWS region of the cluster.
    #[arg(long)]
    pub region: String,
    /// 12-digit AWS account id.
    #[arg(long)]
    pub account_id: String,
    /// Name of the interruption queue; default `cloudoptim-<cluster-name>`.
    #[arg(long)]
    pub queue_name: Option<String>,
    /// ARN of the nodes' IAM role (the instance profile in the groups' launch templates). Updating a
    /// group's instance types needs iam:PassRole on it; omit when the templates carry no profile.
    #[arg(long)]
    pub node_role_arn: Option<String>,
    /// AWS partition.
    #[arg(long, default_value = "aws")]
    pub partition: String,
}

/// Print the rendered policy.
pub fn run(args: &IamArgs) -> Result<(), CliError> {
    let params = PolicyParams {
        queue_name: args
            .queue_name
            .clone()
            .unwrap_or_else(|| format!("cloudoptim-{}", args.cluster_name)),
        cluster_name: args.cluster_name.clone(),
        region: args.region.clone(),
        account_id: args.account_id.clone(),
        node_role_arn: args.node_role_arn.clone(),
        partition: args.partition.clone(),
    };
    let policy = render(&params).map_err(|e| CliError::BadInput(e.to_string()))?;
    println!("{policy}");
    Ok(())
}
