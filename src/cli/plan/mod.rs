//! `cloudoptim plan`: the offline what-if report (DESIGN.md section 8).
//!
//! Reads a Kubernetes List of Nodes, Pods and PodDisruptionBudgets (or the bundled example), prices the
//! nodes from the catalog, applies an OptimizationPolicy (or the defaults), runs the consolidation
//! planner and the savings estimate, ranks spot candidates for the cluster's region, and prints a table
//! or JSON. Nothing here talks to a cluster or to AWS.

mod policy;
mod report;
mod rightsizing_report;
mod usage;

use std::collections::BTreeMap;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use clap::Args;

use super::{CliError, OutputFormat};
use crate::engine::catalog::{Arch, Catalog};
use crate::engine::consolidation::{self, Offer, Options, Plan, ReplaceOptions, Replacement};
use crate::engine::ranking::{self, CapacityType, RankedCandidate, Requirements, Strategy};
use crate::engine::savings::{self, CostReport};
use crate::engine::snapshot::Snapshot;
use crate::k8s::{self, Translated};

use policy::Policy;

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
    /// A HibernationSchedule YAML: also estimate what sleeping the (optimised) cluster's nodes on
    /// that timetable saves, averaged over the next 52 weeks.
    #[arg(long)]
    pub hibernation: Option<PathBuf>,
    /// Container usage (a JSON object of Prometheus range-query answers, or a CSV): add a right-sizing
    /// section (requests now and recommended per workload container) and what consolidation saves
    /// after right-sizing. The policy's `spec.rightsizing` settings apply.
    #[arg(long)]
    pub usage: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

/// What a hibernation schedule adds to the plan.
struct Hibernation {
    source: String,
    time_zone: String,
    /// Share of the time the node groups are down.
    asleep_fraction: f64,
    /// The optimised cluster's average cost per hour with the schedule.
    average_hourly: f64,
    /// What the schedule saves on top of the optimised cost, per hour (average).
    savings_hourly: f64,
}

fn hibernation_estimate(
    path: &Path,
    optimized_hourly: f64,
    now: DateTime<Utc>,
) -> Result<Hibernation, CliError> {
    let loaded = super::schedule::load(path)?;
    let until = now + chrono::TimeDelta::weeks(52);
    let asleep_fraction =
        loaded
            .schedule
            .fraction_in(crate::engine::schedule::State::Hibernating, now, until);
    Ok(Hibernation {
        source: path.display().to_string(),
        time_zone: loaded.schedule.time_zone().to_string(),
        asleep_fraction,
        average_hourly: optimized_hourly * (1.0 - asleep_fraction),
        savings_hourly: optimized_hourly * asleep_fraction,
    })
}

/// The bundled example cluster, so `cloudoptim plan` works from any directory.
const BUNDLED_SNAPSHOT: &str = include_str!("../../../examples/snapshot.yaml");
/// How `plan` names the bundled example.
const BUNDLED_NAME: &str = "examples/snapshot.yaml (bundled example)";
/// Spot candidates per zone in the report.
const RANKED_PER_ZONE: usize = 3;

/// Everything the report shows.
struct Analysis<'c> {
    source: String,
    catalog: &'c Catalog,
    catalog_label: String,
    policy: Policy,
    options: Options,
    translated: Translated,
    plan: Plan,
    replacements: Vec<Replacement>,
    cost: CostReport,
    region: Option<String>,
    ranking: Vec<RankedCandidate<'c>>,
    ranking_note: Option<String>,
    hibernation: Option<Hibernation>,
    rightsizing: Option<RightsizingSection>,
}

/// What `--usage` adds.
struct RightsizingSection {
    /// The usage file.
    source: String,
    /// The recommendations.
    found: k8s::Rightsized,
    /// The consolidation plan with the recommended requests.
    plan: Plan,
    /// Its cost.
    cost: CostReport,
}

/// Runs the what-if report and prints it.
pub fn run(args: &PlanArgs) -> Result<(), CliError> {
    let (source, text) = match &args.snapshot {
        Some(path) => (path.display().to_string(), read(path, "--snapshot")?),
        None => (BUNDLED_NAME.to_owned(), BUNDLED_SNAPSHOT.to_owned()),
    };
    let loaded;
    let (catalog, catalog_label) = match &args.catalog {
        Some(dir) => {
            loaded = crate::cli::load_catalog(dir)
                .map_err(|e| CliError::BadInput(format!("--catalog {}: {e}", dir.display())))?;
            (&loaded, dir.display().to_string())
        }
        None => (Catalog::embedded(), "embedded".to_owned()),
    };
    let policy = match &args.policy {
        Some(path) => {
            let mut policy = policy::load(path).map_err(CliError::BadInput)?;
            policy.source = path.display().to_string();
            policy
        }
        None => Policy::default(),
    };
    let now = Utc::now();
    let mut analysis =
        analyse(source, &text, catalog, catalog_label, policy, now).map_err(CliError::BadInput)?;
    if let Some(path) = &args.hibernation {
        analysis.hibernation = Some(hibernation_estimate(
            path,
            analysis.cost.optimized_hourly,
            now,
        )?);
    }
    if let Some(path) = &args.usage {
        analysis.rightsizing = Some(rightsizing_section(&analysis, path, &text, now)?);
    }
    let mut out = BufWriter::new(io::stdout().lock());
    let written = match args.output {
        OutputFormat::Json => report::write_json(&analysis, &mut out),
        OutputFormat::Table => report::write_table(&analysis, &mut out),
    };
    match written.and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
            Err(CliError::Failed(format!("writing the plan: {e}")))
        }
        _ => Ok(()),
    }
}

fn read(path: &Path, flag: &str) -> Result<String, CliError> {
    std::fs::read_to_string(path)
        .map_err(|e| CliError::BadInput(format!("{flag} {}: cannot read: {e}", path.display())))
}

/// Translate, price, plan, estimate and rank. Errors name the input.
fn analyse<'c>(
    source: String,
    text: &str,
    catalog: &'c Catalog,
    catalog_label: String,
    policy: Policy,
    now: DateTime<Utc>,
) -> Result<Analysis<'c>, String> {
    let mut translated = k8s::from_list_text(text).map_err(|e| format!("{source}: {e}"))?;
    if translated.snapshot.nodes.is_empty() {
        return Err(format!(
            "{source}: no Node items; expected the output of `kubectl get nodes,pods,poddisruptionbudgets -A -o yaml`"
        ));
    }
    if let Some(region) = main_region(&translated)
        && !crate::cli::catalog_covers(catalog, &region)
    {
        let flag = match catalog_label.as_str() {
            "embedded" => "the embedded catalog".to_string(),
            dir => format!("--catalog {dir}"),
        };
        return Err(crate::cli::region_not_in_catalog(&region, catalog, &flag).to_string());
    }
    k8s::apply_prices(&mut translated.snapshot, catalog);
    let snapshot = &translated.snapshot;
    let options = policy.options(snapshot.nodes.len(), now);
    let region = main_region(&translated);
    let (plan, replacements, cost) =
        optimise(snapshot, catalog, &policy, &options, region.as_deref())
            .map_err(|e| format!("{source}: {e}"))?;
    let (ranking, ranking_note) = match &region {
        Some(region) => top_spot_per_zone(catalog, region, &translated),
        None => (
            Vec::new(),
            Some("no node has a region or zone label".to_owned()),
        ),
    };
    Ok(Analysis {
        source,
        catalog,
        catalog_label,
        policy,
        options,
        translated,
        plan,
        replacements,
        cost,
        region,
        ranking,
        ranking_note,
        hibernation: None,
        rightsizing: None,
    })
}

/// The consolidation plan, its replacements and the cost estimate of `snapshot` under `options`.
fn optimise(
    snapshot: &Snapshot,
    catalog: &Catalog,
    policy: &Policy,
    options: &Options,
    region: Option<&str>,
) -> Result<(Plan, Vec<Replacement>, CostReport), consolidation::PlanError> {
    let plan = consolidation::plan(snapshot, options)?;
    let replacements = match region {
        Some(region) => consolidation::plan_replacements(
            snapshot,
            &plan,
            options,
            &ReplaceOptions {
                spot: Some(policy.spot),
                ..ReplaceOptions::with_offers(replacement_offers(catalog, region, snapshot))
            },
        ),
        None => Vec::new(),
    };
    let cost =
        savings::estimate_with_replacements(snapshot, &plan, &replacements, Some(policy.spot));
    Ok((plan, replacements, cost))
}

/// Read `--usage FILE`, recommend, and plan again with the recommended requests.
fn rightsizing_section(
    analysis: &Analysis<'_>,
    path: &Path,
    snapshot_text: &str,
    now: DateTime<Utc>,
) -> Result<RightsizingSection, CliError> {
    let source = path.display().to_string();
    let bad = |e: String| CliError::BadInput(format!("--usage {source}: {e}"));
    let file = usage::parse(&read(path, "--usage")?).map_err(bad)?;
    let pods = k8s::pod_workloads(snapshot_text)
        .map_err(|e| CliError::BadInput(format!("{}: {e}", analysis.source)))?;
    let snapshot = &analysis.translated.snapshot;
    let found = k8s::recommendations(
        &file.observed,
        file.owners.as_ref(),
        &pods,
        &snapshot.nodes,
        &analysis.policy.rightsizing,
    );
    if found.recommendations.is_empty() {
        return Err(bad(format!(
            "no container of a running workload in the snapshot has usage data \
             ({} pods without a workload, {} workload containers not running now); \
             the namespace and pod labels must name pods of the snapshot",
            found.unresolved, found.gone
        )));
    }
    let resized = k8s::resized(snapshot, &pods, &found.recommendations);
    let options = analysis.policy.options(resized.nodes.len(), now);
    let (plan, _, cost) = optimise(
        &resized,
        analysis.catalog,
        &analysis.policy,
        &options,
        analysis.region.as_deref(),
    )
    .map_err(|e| CliError::BadInput(format!("{}: {e}", analysis.source)))?;
    Ok(RightsizingSection {
        source,
        found,
        plan,
        cost,
    })
}

/// The region most nodes are in.
fn main_region(translated: &Translated) -> Option<String> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for node in &translated.snapshot.nodes {
        if let Some(region) = node.region.as_deref() {
            *counts.entry(region).or_insert(0) += 1;
        }
    }
    counts
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(a.0)))
        .map(|(r, _)| r.to_owned())
}

/// The catalog's families without the burstable `t*` ones (CPU credits make them poor nodes for packed
/// clusters).
fn packing_families(catalog: &Catalog) -> Vec<String> {
    let mut families: Vec<String> = catalog
        .instance_types()
        .filter(|t| !t.family.starts_with('t'))
        .map(|t| t.family.clone())
        .collect();
    families.sort_unstable();
    families.dedup();
    families
}

/// What a replacement may launch: the region's current-generation, non-burstable types in the cluster's
/// zones and architectures, Spot and on-demand, ranked with Balanced weights (as a NodeTemplate with
/// default requirements would), each with the labels a node of it carries.
fn replacement_offers(catalog: &Catalog, region: &str, snapshot: &Snapshot) -> Vec<Offer> {
    let nodes = &snapshot.nodes;
    let mut zones: Vec<String> = nodes.iter().filter_map(|n| n.zone.clone()).collect();
    zones.sort_unstable();
    zones.dedup();
    let mut architectures: Vec<Arch> = nodes
        .iter()
        .filter_map(|n| catalog.instance_type(n.instance_type.as_deref()?))
        .map(|t| t.arch)
        .collect();
    architectures.sort_unstable_by_key(|a| a.to_string());
    architectures.dedup();
    let families = packing_families(catalog);
    let requirements = Requirements {
        families,
        zones,
        architectures,
        min_vcpu: Some(2),
        max_types: 40,
        ..Requirements::default()
    };
    let Ok(ranked) = ranking::rank(
        catalog,
        region,
        &requirements,
        Strategy::Balanced.weights(),
        &[],
    ) else {
        return Vec::new();
    };
    consolidation::offers(
        catalog,
        region,
        &ranked.candidates,
        consolidation::NEW_NODE_PODS,
    )
}

/// The best spot candidates of each zone the cluster uses, in rank order: Balanced weights over
/// current-generation, non-burstable types (CPU credits make `t*` types poor nodes for packed clusters)
/// sized like the cluster's nodes (their vCPU range; at least 2).
fn top_spot_per_zone<'c>(
    catalog: &'c Catalog,
    region: &str,
    translated: &Translated,
) -> (Vec<RankedCandidate<'c>>, Option<String>) {
    let families = packing_families(catalog);
    let sizes: Vec<u32> = translated
        .snapshot
        .nodes
        .iter()
        .filter_map(|n| {
            n.instance_type
                .as_deref()
                .and_then(|t| catalog.instance_type(t))
        })
        .map(|t| t.vcpu)
        .collect();
    let requirements = Requirements {
        families,
        min_vcpu: Some(sizes.iter().copied().min().unwrap_or(2).max(2)),
        max_vcpu: sizes.iter().copied().max().filter(|m| *m >= 2),
        ..Requirements::default()
    };
    let weights = Strategy::Balanced.weights();
    let ranked = match ranking::rank(catalog, region, &requirements, weights, &[]) {
        Ok(ranked) => ranked,
        Err(e) => return (Vec::new(), Some(format!("ranking unavailable: {e}"))),
    };
    let zones: Vec<&str> = translated
        .snapshot
        .nodes
        .iter()
        .filter_map(|n| n.zone.as_deref())
        .collect();
    let mut taken: BTreeMap<&str, usize> = BTreeMap::new();
    let top = ranked
        .candidates
        .into_iter()
        .filter(|c| c.capacity_type == CapacityType::Spot && zones.contains(&c.zone))
        .filter(|c| {
            let n = taken.entry(c.zone).or_insert(0);
            *n += 1;
            *n <= RANKED_PER_ZONE
        })
        .collect();
    (top, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundled() -> Analysis<'static> {
        let now = DateTime::parse_from_rfc3339("2025-01-06T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        analyse(
            BUNDLED_NAME.into(),
            BUNDLED_SNAPSHOT,
            Catalog::embedded(),
            "embedded".into(),
            Policy::default(),
            now,
        )
        .unwrap()
    }

    #[test]
    fn the_bundled_example_prices_every_node_and_saves_money() {
        let a = bundled();
        assert_eq!(a.translated.snapshot.nodes.len(), 40);
        assert!(
            a.cost.unpriced_nodes.is_empty(),
            "every example type is in the sample catalog"
        );
        assert!(
            a.plan.removals.len() >= 5,
            "the example has many underutilised nodes"
        );
        assert!(a.cost.savings_hourly > 0.0);
        assert_eq!(a.region.as_deref(), Some("us-east-1"));
        assert_eq!(a.ranking.len(), 3 * RANKED_PER_ZONE);
        assert_eq!(a.options.budget, Some(4));
    }

    #[test]
    fn the_bundled_example_shows_every_kind_of_keep_reason_it_was_built_for() {
        let a = bundled();
        let reasons: Vec<String> = a
            .plan
            .kept
            .iter()
            .map(|k| k.reason.describe(&a.translated.snapshot))
            .collect();
        for expected in [
            "PDB payments/api allows 0 disruptions",
            "do-not-disrupt pod payments/ledger-writer",
            "in excluded namespace kube-system",
            "cordoned",
            "has no controller",
            "persistent volume claim",
        ] {
            assert!(
                reasons.iter().any(|r| r.contains(expected)),
                "no kept node says {expected:?}: {reasons:#?}"
            );
        }
    }

    #[test]
    fn the_bundled_examples_indexer_pods_move_only_next_to_a_cache_pod() {
        // indexer has required pod affinity to app=cache on the hostname.
        let a = bundled();
        let s = &a.translated.snapshot;
        let app = |p: &crate::engine::snapshot::Pod| p.labels.get("app").cloned();
        let indexer_moves: Vec<_> = a
            .plan
            .moves
            .iter()
            .filter(|m| app(&s.pods[m.pod.index()]).as_deref() == Some("indexer"))
            .collect();
        assert!(!indexer_moves.is_empty(), "the example moves indexer pods");
        // Where each pod ends up: its move's destination, or where it is.
        let end = |i: usize| {
            a.plan
                .moves
                .iter()
                .find(|m| m.pod.index() == i)
                .map_or(s.pods[i].node, |m| m.to)
        };
        for m in indexer_moves {
            let next_to_cache = (0..s.pods.len())
                .any(|i| app(&s.pods[i]).as_deref() == Some("cache") && end(i) == m.to);
            assert!(next_to_cache, "{m:?} lands on a node without a cache pod");
        }
    }

    #[test]
    fn empty_lists_are_bad_input() {
        let err = analyse(
            "x.yaml".into(),
            "kind: List\nitems: []\n",
            Catalog::embedded(),
            "e".into(),
            Policy::default(),
            Utc::now(),
        );
        assert!(
            err.err()
                .is_some_and(|e| e.starts_with("x.yaml: no Node items"))
        );
    }
}
