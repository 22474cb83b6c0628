//! `cloudoptim crds`: print every CRD as one multi-document YAML stream.

use clap::Args;

use super::CliError;

/// Arguments of `cloudoptim crds`.
#[derive(Debug, Args)]
pub struct CrdsArgs {}

/// Render all CRDs as a multi-document YAML stream (`---` between documents).
pub fn render() -> Result<String, CliError> {
    let mut out = String::new();
    for crd in crate::api::crds() {
        let yaml = serde_yaml::to_string(&crd)
            .map_err(|e| CliError::Failed(format!("serialising CRD: {e}")))?;
        out.push_str("---\n");
        out.push_str(&yaml);
    }
    Ok(out)
}

/// Print all CRDs to stdout.
pub fn run(_args: &CrdsArgs) -> Result<(), CliError> {
    print!("{}", render()?);
    Ok(())
}
