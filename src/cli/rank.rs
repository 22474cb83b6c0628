//! `cloudoptim rank`: ranked Spot and on-demand candidates for a region (DESIGN.md sections 4 and 8).
//!
//! The NodeTemplate and SpotRiskFlag files are read into small private structs holding only the fields
//! used here, so this command does not depend on the CRD types' Kubernetes plumbing.

use std::collections::HashSet;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use clap::Args;
use serde::Deserialize;

use super::{CliError, OutputFormat};
use crate::api::{NodeTemplate, NodeTemplateSpec};
use crate::controllers::node_template::ranking_inputs;
use crate::engine::catalog::Catalog;
use crate::engine::ranking::{
    CapacityType, FlaggedPair, RankError, RankedCandidate, Ranking, Requirements, Weights, rank,
};

/// Rows shown by the table output when `--limit` is not given.
const DEFAULT_TABLE_ROWS: usize = 20;

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
    /// Show only the best N candidates. Default: 20 for the table, all for JSON.
    #[arg(long)]
    pub limit: Option<usize>,
}

/// Ranks the candidates of `--region` and prints them best first.
pub fn run(args: &RankArgs) -> Result<(), CliError> {
    let loaded;
    let catalog = match &args.catalog {
        Some(dir) => {
            loaded = super::load_catalog(dir)
                .map_err(|e| CliError::BadInput(format!("--catalog: {e}")))?;
            &loaded
        }
        None => Catalog::embedded(),
    };
    if !super::catalog_covers(catalog, &args.region) {
        let flag = match &args.catalog {
            Some(dir) => format!("--catalog {}", dir.display()),
            None => "the embedded catalog".to_string(),
        };
        return Err(super::region_not_in_catalog(&args.region, catalog, &flag));
    }
    let template = match &args.template {
        Some(path) => load_template(path)?,
        None => Template::defaults()?,
    };
    let flags = match &args.flags {
        Some(path) => load_flags(path, &args.region, Utc::now())?,
        None => Vec::new(),
    };
    let ranking = rank(
        catalog,
        &args.region,
        &template.requirements,
        template.weights,
        &flags,
    )
    .map_err(|e| rank_error(e, args.template.as_deref()))?;
    let report = Report {
        args,
        catalog,
        template: &template,
        flags: flags.len(),
        ranking: &ranking,
    };
    let mut out = BufWriter::new(io::stdout().lock());
    let written = match args.output {
        OutputFormat::Json => report.write_json(&mut out),
        OutputFormat::Table => report.write_table(&mut out),
    };
    match written.and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
            Err(CliError::Failed(format!("writing the ranking: {e}")))
        }
        _ => Ok(()),
    }
}

fn rank_error(error: RankError, template: Option<&Path>) -> CliError {
    match (error, template) {
        (RankError::Invalid { field, problem }, Some(path)) => {
            CliError::BadInput(format!("{}: spec.{field}: {problem}", path.display()))
        }
        (error @ RankError::NoCandidates { .. }, Some(path)) => {
            CliError::BadInput(format!("{error} (spec.requirements of {})", path.display()))
        }
        (error, _) => CliError::BadInput(error.to_string()),
    }
}

/// What a NodeTemplate contributes to a ranking.
struct Template {
    requirements: Requirements,
    weights: Weights,
    /// How the weights were chosen, for the table's header.
    weights_source: String,
}

impl Template {
    /// What an empty NodeTemplate asks for: the CRD's defaults.
    fn defaults() -> Result<Template, CliError> {
        template_from_text("kind: NodeTemplate\nspec: {}", None)
    }
}

fn read(path: &Path, flag: &str) -> Result<String, CliError> {
    std::fs::read_to_string(path)
        .map_err(|e| CliError::BadInput(format!("{flag} {}: {e}", path.display())))
}

fn load_template(path: &Path) -> Result<Template, CliError> {
    template_from_text(&read(path, "--template")?, Some(path))
}

/// A NodeTemplate's ranking inputs, read and checked as the controller reads and checks them
/// ([`crate::api::file`], [`crate::controllers::node_template::ranking_inputs`]). `rank` needs no
/// groups, so a file without `spec.autoScalingGroups` is taken as if it named none.
fn template_from_text(text: &str, path: Option<&Path>) -> Result<Template, CliError> {
    let shown = path.map_or_else(|| "--template".into(), |p| p.display().to_string());
    let file = crate::api::file::read::<NodeTemplate, NodeTemplateSpec>(text, |spec| {
        spec.entry("autoScalingGroups")
            .or_insert_with(|| serde_json::json!({}));
    })
    .map_err(|e| CliError::BadInput(format!("{shown}: {e}")))?;
    let (requirements, weights) = ranking_inputs(&file.spec).map_err(|e| rank_error(e, path))?;
    let weights_source = match file.spec.weights {
        Some(_) => "spec.weights".to_string(),
        None => format!("strategy {:?}", file.spec.strategy),
    };
    Ok(Template {
        requirements,
        weights,
        weights_source,
    })
}

#[derive(Deserialize)]
struct FlagDoc {
    #[serde(default)]
    kind: Option<String>,
    spec: FlagSpec,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FlagSpec {
    region: String,
    zone: String,
    instance_type: String,
    #[serde(default)]
    expires_at: Option<String>,
}

/// The (zone, type) pairs of the flags in `path` that belong to `region` and have not expired at `now`.
/// The file is a YAML list, a `kind: List` with `items`, or a stream of documents (each a flag or a list).
/// A flag without `spec.expiresAt` counts as active.
fn load_flags(path: &Path, region: &str, now: DateTime<Utc>) -> Result<Vec<FlaggedPair>, CliError> {
    let text = read(path, "--flags")?;
    let bad = |place: &str, what: String| {
        CliError::BadInput(format!("{}: {place}: {what}", path.display()))
    };
    let mut pairs = Vec::new();
    for (d, document) in serde_yaml::Deserializer::from_str(&text).enumerate() {
        let place = format!("document {}", d + 1);
        let value =
            serde_yaml::Value::deserialize(document).map_err(|e| bad(&place, e.to_string()))?;
        for (i, item) in flag_items(value)
            .map_err(|e| bad(&place, e))?
            .into_iter()
            .enumerate()
        {
            let place = format!("{place}, item {}", i + 1);
            let flag: FlagDoc =
                serde_yaml::from_value(item).map_err(|e| bad(&place, e.to_string()))?;
            if let Some(kind) = flag.kind.filter(|k| k != "SpotRiskFlag") {
                return Err(bad(
                    &place,
                    format!("kind: expected SpotRiskFlag, found {kind}"),
                ));
            }
            let spec = flag.spec;
            if let Some(expires_at) = &spec.expires_at {
                let at = DateTime::parse_from_rfc3339(expires_at).map_err(|e| {
                    bad(
                        &place,
                        format!("spec.expiresAt: `{expires_at}` is not an RFC 3339 time ({e})"),
                    )
                })?;
                if at <= now {
                    continue;
                }
            }
            if spec.region == region {
                pairs.push(FlaggedPair {
                    zone: spec.zone,
                    instance_type: spec.instance_type,
                });
            }
        }
    }
    Ok(pairs)
}

/// The flag objects of one YAML document.
fn flag_items(value: serde_yaml::Value) -> Result<Vec<serde_yaml::Value>, String> {
    use serde_yaml::Value;
    match value {
        Value::Null => Ok(Vec::new()),
        Value::Sequence(items) => Ok(items),
        Value::Mapping(mut map) if map.get("kind").and_then(Value::as_str) == Some("List") => {
            match map.remove("items") {
                Some(Value::Sequence(items)) => Ok(items),
                Some(Value::Null) | None => Ok(Vec::new()),
                Some(_) => Err("items: expected a list of SpotRiskFlag objects".into()),
            }
        }
        Value::Mapping(map) => Ok(vec![Value::Mapping(map)]),
        _ => Err("expected a SpotRiskFlag, a list of them, or a `kind: List`".into()),
    }
}

/// Everything the output needs.
struct Report<'a> {
    args: &'a RankArgs,
    catalog: &'a Catalog,
    template: &'a Template,
    flags: usize,
    ranking: &'a Ranking<'a>,
}

impl Report<'_> {
    fn shown(&self, default: usize) -> &[RankedCandidate<'_>] {
        let candidates = &self.ranking.candidates;
        &candidates[..self.args.limit.unwrap_or(default).min(candidates.len())]
    }

    fn write_json(&self, out: &mut impl Write) -> io::Result<()> {
        serde_json::to_writer_pretty(&mut *out, self.shown(usize::MAX))?;
        writeln!(out)
    }

    fn write_table(&self, out: &mut impl Write) -> io::Result<()> {
        let candidates = &self.ranking.candidates;
        let types: HashSet<&str> = candidates.iter().map(|c| c.instance_type).collect();
        let weights = self.template.weights;
        writeln!(
            out,
            "Ranking for {}: {} candidates ({} instance types), {} (price {}, risk {}); lower score is better.",
            self.args.region,
            candidates.len(),
            types.len(),
            self.template.weights_source,
            weights.price,
            weights.risk
        )?;
        if self.catalog.is_sample() {
            writeln!(
                out,
                "Catalog: embedded sample data. Spot prices and Spot Advisor buckets are generated by a \
                 documented rule, not market data (data/catalog/README.md); use --catalog DIR for real data."
            )?;
        } else if let Some(dir) = &self.args.catalog {
            writeln!(out, "Catalog: {}", dir.display())?;
        }
        if self.args.flags.is_some() {
            let removed = self.ranking.flagged_removed;
            writeln!(
                out,
                "Risk flags: {} active in this region; {removed} flagged spot candidates left out.",
                self.flags
            )?;
        }
        if self.ranking.all_flagged() {
            writeln!(
                out,
                "Every candidate is flagged: they are kept (nothing else is left) and marked FLAGGED."
            )?;
        }
        writeln!(out)?;
        writeln!(
            out,
            "{:>4}  {:<16} {:<12} {:<9} {:>5} {:>8} {:>10} {:>10} {:>6} {:>10} {:>6}",
            "RANK",
            "INSTANCE TYPE",
            "ZONE",
            "CAPACITY",
            "VCPU",
            "MEM GIB",
            "$/HOUR",
            "$/VCPU-H",
            "P-NORM",
            "RISK",
            "SCORE"
        )?;
        let shown = self.shown(DEFAULT_TABLE_ROWS);
        for (i, c) in shown.iter().enumerate() {
            self.write_row(out, i + 1, c)?;
        }
        if shown.len() < candidates.len() {
            writeln!(
                out,
                "\nShowing {} of {}; --limit N for more, -o json for every field.",
                shown.len(),
                candidates.len()
            )?;
        }
        Ok(())
    }

    fn write_row(
        &self,
        out: &mut impl Write,
        rank: usize,
        c: &RankedCandidate<'_>,
    ) -> io::Result<()> {
        let (vcpu, memory) = self
            .catalog
            .instance_type(c.instance_type)
            .map_or((0, 0.0), |t| (t.vcpu, t.memory_gib()));
        let risk = match (c.capacity_type, c.risk_bucket) {
            (CapacityType::OnDemand, _) => format!("{:.2}", c.risk),
            (CapacityType::Spot, Some(r)) => format!("{:.2} (r{r})", c.risk),
            (CapacityType::Spot, None) => format!("{:.2} (r?)", c.risk),
        };
        writeln!(
            out,
            "{rank:>4}  {:<16} {:<12} {:<9} {vcpu:>5} {memory:>8.1} {:>10.6} {:>10.6} {:>6.3} {risk:>10} {:>6.3}{}",
            c.instance_type,
            c.zone,
            c.capacity_type.as_str(),
            c.price_per_hour,
            c.price_per_vcpu_hour,
            c.price_norm,
            c.score,
            if c.flagged { "  FLAGGED" } else { "" }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::catalog::Arch;
    use crate::engine::ranking::Strategy;

    fn temp_file(name: &str, content: &str) -> PathBuf {
        let path =
            std::env::temp_dir().join(format!("cloudoptim-rank-{}-{name}", std::process::id()));
        std::fs::write(&path, content).unwrap();
        path
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-23T10:20:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    const FLAG: &str = "apiVersion: cloudoptim.io/v1alpha1\nkind: SpotRiskFlag\nspec:\n  region: us-east-1\n  \
                        zone: us-east-1a\n  instanceType: m5.large\n  expiresAt: \"2026-11-23T10:35:00Z\"\n";

    #[test]
    fn flags_are_read_from_a_list_a_kind_list_and_a_document_stream() {
        let list = FLAG
            .lines()
            .map(|l| format!("  {l}"))
            .collect::<Vec<_>>()
            .join("\n")
            .replacen("  ", "- ", 1);
        let kind_list = format!("kind: List\nitems:\n{list}\n");
        let stream = format!("{FLAG}---\n{}", FLAG.replace("us-east-1a", "us-east-1b"));
        for (name, text, expected) in [
            ("list", list.as_str(), 1),
            ("kindlist", &kind_list, 1),
            ("stream", &stream, 2),
        ] {
            let path = temp_file(name, text);
            let pairs = load_flags(&path, "us-east-1", now()).unwrap();
            assert_eq!(pairs.len(), expected, "{name}: {text}");
            assert_eq!(
                pairs[0],
                FlaggedPair {
                    zone: "us-east-1a".into(),
                    instance_type: "m5.large".into()
                }
            );
            std::fs::remove_file(path).unwrap();
        }
    }

    #[test]
    fn expired_flags_and_other_regions_are_ignored() {
        let text = format!(
            "{}---\n{}",
            FLAG.replace("10:35", "10:19"),
            FLAG.replace("region: us-east-1", "region: eu-west-1")
        );
        let path = temp_file("ignored", &text);
        assert!(load_flags(&path, "us-east-1", now()).unwrap().is_empty());
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn bad_flag_names_document_item_and_field() {
        let path = temp_file(
            "bad-flag",
            &format!(
                "{FLAG}---\n{}",
                FLAG.replace("2026-11-23T10:35:00Z", "soon")
            ),
        );
        let err = load_flags(&path, "us-east-1", now())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("document 2, item 1: spec.expiresAt: `soon`"),
            "{err}"
        );
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn template_fields_become_requirements_and_weights() {
        let path = temp_file(
            "template",
            "apiVersion: cloudoptim.io/v1alpha1\nkind: NodeTemplate\nmetadata: {name: t}\nspec:\n  \
             autoScalingGroups: {names: [a]}\n  requirements:\n    families: [m5]\n    minMemoryGiB: 4\n    \
             capacityTypes: [spot]\n    architectures: [arm64]\n    currentGenerationOnly: false\n  \
             strategy: Stable\n",
        );
        let t = load_template(&path).unwrap();
        assert_eq!(t.requirements.families, ["m5"]);
        assert_eq!(t.requirements.min_memory_gib, Some(4.0));
        assert_eq!(t.requirements.capacity_types, [CapacityType::Spot]);
        assert_eq!(t.requirements.architectures, [Arch::Arm64]);
        assert!(!t.requirements.current_generation_only);
        assert_eq!(t.weights, Strategy::Stable.weights());
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn template_errors_name_the_field_path() {
        let head = "apiVersion: cloudoptim.io/v1alpha1\nkind: NodeTemplate\nspec:\n";
        let cases = [
            (
                "  requirements:\n    minVcpu: four\n",
                "spec.requirements.minVcpu",
            ),
            (
                "  requirements:\n    minVCPU: 4\n",
                "unknown field `minVCPU`",
            ),
            (
                "  requirements:\n    minVcpu: 8\n    maxVcpu: 4\n",
                "spec.requirements.maxVcpu",
            ),
            (
                "  weights: {price: 0.9, risk: 0.3}\n",
                "spec.weights: price + risk",
            ),
            ("  strategy: Fastest\n", "spec.strategy"),
        ];
        for (i, (body, expected)) in cases.into_iter().enumerate() {
            let path = temp_file(&format!("bad-template-{i}"), &format!("{head}{body}"));
            let err = load_template(&path).err().unwrap().to_string();
            assert!(err.contains(expected), "{body}: {err}");
            assert!(err.contains(&path.display().to_string()), "{err}");
            std::fs::remove_file(path).unwrap();
        }
    }
}
