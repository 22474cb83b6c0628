//! `cloudoptim snapshot`: write the current cluster (kubeconfig) as a Kubernetes List of Nodes, Pods and
//! PodDisruptionBudgets that `cloudoptim plan --snapshot` reads, with only what the planner needs: the
//! same reduction the operator's reflectors apply (no managed fields, no container images, env or
//! probes, no unrelated annotations), so a snapshot is small and carries no secrets from pod specs.

use std::io::Write;

use clap::Args;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, ListParams};
use serde_json::{Value, json};

use super::CliError;
use crate::controllers::policy::{strip_node, strip_pdb, strip_pod};

/// Arguments of `cloudoptim snapshot`.
#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// File to write (`-` for stdout).
    #[arg(short = 'o', long = "output", default_value = "-")]
    pub output: String,
}

/// Read the cluster and write the List.
pub fn run(args: &SnapshotArgs) -> Result<(), CliError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Failed(format!("starting tokio: {e}")))?;
    let list = runtime.block_on(collect())?;
    let text =
        serde_yaml::to_string(&list).map_err(|e| CliError::Failed(format!("writing YAML: {e}")))?;
    if args.output == "-" {
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .map_err(|e| CliError::Failed(format!("writing stdout: {e}")))?;
    } else {
        std::fs::write(&args.output, text)
            .map_err(|e| CliError::Failed(format!("-o {}: {e}", args.output)))?;
        eprintln!(
            "wrote {} items to {}; next: cloudoptim plan --snapshot {}",
            list["items"].as_array().map_or(0, Vec::len),
            args.output,
            args.output
        );
    }
    Ok(())
}

async fn collect() -> Result<Value, CliError> {
    let client = kube::Client::try_default().await.map_err(|e| {
        CliError::Failed(format!(
            "connecting to Kubernetes (kubeconfig or in-cluster): {e}"
        ))
    })?;
    let failed = |what: &str, e: kube::Error| CliError::Failed(format!("listing {what}: {e}"));
    let params = ListParams::default();
    let mut items = Vec::new();
    for mut node in Api::<Node>::all(client.clone())
        .list(&params)
        .await
        .map_err(|e| failed("nodes", e))?
    {
        strip_node(&mut node);
        items.push(item("Node", "v1", &node)?);
    }
    for mut pod in Api::<Pod>::all(client.clone())
        .list(&params)
        .await
        .map_err(|e| failed("pods", e))?
    {
        strip_pod(&mut pod);
        items.push(item("Pod", "v1", &pod)?);
    }
    for mut pdb in Api::<PodDisruptionBudget>::all(client)
        .list(&params)
        .await
        .map_err(|e| failed("poddisruptionbudgets", e))?
    {
        strip_pdb(&mut pdb);
        items.push(item("PodDisruptionBudget", "policy/v1", &pdb)?);
    }
    Ok(json!({"apiVersion": "v1", "kind": "List", "items": items}))
}

fn item(kind: &str, api_version: &str, object: &impl serde::Serialize) -> Result<Value, CliError> {
    let mut value =
        serde_json::to_value(object).map_err(|e| CliError::Failed(format!("{kind}: {e}")))?;
    if let Some(map) = value.as_object_mut() {
        map.insert("apiVersion".into(), json!(api_version));
        map.insert("kind".into(), json!(kind));
    }
    Ok(value)
}
