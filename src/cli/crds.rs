//! `cloudoptim crds`: print every CRD as one multi-document YAML stream, or write one file per kind.

use std::path::PathBuf;

use clap::Args;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

use super::CliError;

/// Arguments of `cloudoptim crds`.
#[derive(Debug, Args)]
pub struct CrdsArgs {
    /// Write one file per kind (`<plural>.cloudoptim.io.yaml`) into this directory instead of
    /// printing the stream (how crds/ in the repository is generated).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// One CRD as a YAML document starting with `---`.
fn document(crd: &CustomResourceDefinition) -> Result<String, CliError> {
    let yaml = serde_yaml::to_string(crd)
        .map_err(|e| CliError::Failed(format!("serialising CRD {:?}: {e}", crd.metadata.name)))?;
    Ok(format!("---\n{yaml}"))
}

/// Render all CRDs as a multi-document YAML stream.
pub fn render() -> Result<String, CliError> {
    crate::api::crds().iter().map(document).collect()
}

/// Print all CRDs to stdout, or write them into `--dir`.
pub fn run(args: &CrdsArgs) -> Result<(), CliError> {
    let Some(dir) = &args.dir else {
        print!("{}", render()?);
        return Ok(());
    };
    std::fs::create_dir_all(dir)
        .map_err(|e| CliError::Failed(format!("creating {}: {e}", dir.display())))?;
    for crd in crate::api::crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let path = dir.join(format!("{name}.yaml"));
        std::fs::write(&path, document(&crd)?)
            .map_err(|e| CliError::Failed(format!("writing {}: {e}", path.display())))?;
    }
    Ok(())
}
