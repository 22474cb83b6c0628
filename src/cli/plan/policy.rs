//! The parts of an OptimizationPolicy (`--policy FILE`) that `plan` uses, read into a small private
//! struct (camelCase, defaults per DESIGN.md 3.2) so the command does not depend on the CRD types.

use std::path::Path;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::engine::budgets::{self, Budget, BudgetSpec, DisruptionReason};
use crate::engine::consolidation::{Mode, Options};
use crate::engine::savings::SpotTarget;

/// What `plan` takes from a policy, checked.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Policy {
    /// Where it came from ("defaults" or the file).
    pub(super) source: String,
    pub(super) mode: Mode,
    pub(super) utilization_threshold: f64,
    pub(super) aggressiveness: u8,
    pub(super) min_nodes: usize,
    pub(super) max_nodes: Option<usize>,
    pub(super) spot: SpotTarget,
    pub(super) excluded_namespaces: Vec<String>,
    /// `None`: the policy gave no budgets, so the default 10% applies.
    pub(super) budgets: Option<Vec<Budget>>,
    /// The budget text, for the report.
    pub(super) budget_text: Vec<String>,
}

impl Default for Policy {
    fn default() -> Self {
        let options = Options::default();
        Policy {
            source: "defaults".to_owned(),
            mode: options.mode,
            utilization_threshold: options.utilization_threshold,
            aggressiveness: options.aggressiveness,
            min_nodes: 0,
            max_nodes: None,
            spot: SpotTarget {
                percentage: 70,
                on_demand_base: 0,
            },
            excluded_namespaces: options.excluded_namespaces,
            budgets: None,
            budget_text: vec!["10%".to_owned()],
        }
    }
}

impl Policy {
    /// Planner options for a snapshot of `nodes` nodes at `at` (budgets with schedules are evaluated then).
    pub(super) fn options(&self, nodes: usize, at: DateTime<Utc>) -> Options {
        let defaults = budgets::default_budgets();
        let budgets = self.budgets.as_deref().unwrap_or(&defaults);
        let allowed = |reason| budgets::allowed_disruptions(budgets, nodes, at, reason);
        let limit = match self.mode {
            Mode::WhenEmpty => allowed(DisruptionReason::Empty),
            _ => match (
                allowed(DisruptionReason::Empty),
                allowed(DisruptionReason::Underutilized),
            ) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
        };
        Options {
            mode: self.mode,
            utilization_threshold: self.utilization_threshold,
            aggressiveness: self.aggressiveness,
            min_nodes: self.min_nodes,
            excluded_namespaces: self.excluded_namespaces.clone(),
            // No applicable budget: nothing limits the batch size.
            budget: Some(limit.unwrap_or(nodes.max(1))),
        }
    }
}

#[derive(Debug, Deserialize)]
struct Document {
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    spec: Spec,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Spec {
    #[serde(default)]
    spot: Spot,
    #[serde(default)]
    nodes: Nodes,
    #[serde(default)]
    consolidation: Consolidation,
    #[serde(default)]
    disruption: Disruption,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Spot {
    #[serde(default = "seventy")]
    percentage: u32,
    #[serde(default)]
    on_demand_base: u32,
}

impl Default for Spot {
    fn default() -> Self {
        Spot {
            percentage: 70,
            on_demand_base: 0,
        }
    }
}

fn seventy() -> u32 {
    70
}

#[derive(Debug, Default, Deserialize)]
struct Nodes {
    #[serde(default)]
    min: Option<u32>,
    #[serde(default)]
    max: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Consolidation {
    #[serde(default)]
    mode: ModeDoc,
    #[serde(default = "half")]
    utilization_threshold: f64,
    #[serde(default = "forty")]
    aggressiveness: u32,
}

impl Default for Consolidation {
    fn default() -> Self {
        Consolidation {
            mode: ModeDoc::default(),
            utilization_threshold: 0.5,
            aggressiveness: 40,
        }
    }
}

fn half() -> f64 {
    0.5
}

fn forty() -> u32 {
    40
}

#[derive(Debug, Default, Deserialize)]
enum ModeDoc {
    Off,
    WhenEmpty,
    #[default]
    WhenUnderutilized,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Disruption {
    #[serde(default)]
    budgets: Option<Vec<BudgetDoc>>,
    #[serde(default)]
    exclude_namespaces: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BudgetDoc {
    nodes: NodesValue,
    #[serde(default)]
    schedule: Option<String>,
    #[serde(default)]
    duration: Option<String>,
    #[serde(default)]
    time_zone: Option<String>,
    #[serde(default)]
    reasons: Vec<String>,
}

/// `nodes: 3` and `nodes: "3"` both mean three nodes.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum NodesValue {
    Count(u64),
    Text(String),
}

/// Read and check `--policy FILE`. Errors name the file and the field.
pub(super) fn load(path: &Path) -> Result<Policy, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Parse a policy document (the OptimizationPolicy object).
pub(super) fn parse(text: &str) -> Result<Policy, String> {
    let document: Document = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
    if let Some(kind) = document
        .kind
        .as_deref()
        .filter(|k| *k != "OptimizationPolicy")
    {
        return Err(format!("kind: expected OptimizationPolicy, found {kind}"));
    }
    let spec = document.spec;
    if spec.spot.percentage > 100 {
        return Err(format!(
            "spec.spot.percentage: {} is above 100",
            spec.spot.percentage
        ));
    }
    let threshold = spec.consolidation.utilization_threshold;
    if !(0.0..=1.0).contains(&threshold) {
        return Err(format!(
            "spec.consolidation.utilizationThreshold: {threshold} is outside 0..1"
        ));
    }
    let aggressiveness = spec.consolidation.aggressiveness;
    let aggressiveness = u8::try_from(aggressiveness)
        .ok()
        .filter(|a| *a <= 100)
        .ok_or_else(|| {
            format!("spec.consolidation.aggressiveness: {aggressiveness} is outside 0..100")
        })?;
    if let (Some(min), Some(max)) = (spec.nodes.min, spec.nodes.max)
        && min > max
    {
        return Err(format!("spec.nodes: min {min} is above max {max}"));
    }
    let (budgets, budget_text) = match spec.disruption.budgets {
        None => (None, vec!["10%".to_owned()]),
        Some(docs) => {
            let mut budgets = Vec::new();
            let mut texts = Vec::new();
            for (i, doc) in docs.into_iter().enumerate() {
                let nodes = match doc.nodes {
                    NodesValue::Count(n) => n.to_string(),
                    NodesValue::Text(t) => t,
                };
                let spec = BudgetSpec {
                    nodes: nodes.clone(),
                    schedule: doc.schedule.clone(),
                    duration: doc.duration.clone(),
                    time_zone: doc.time_zone,
                    reasons: doc.reasons,
                };
                let budget = Budget::try_from(&spec)
                    .map_err(|e| format!("spec.disruption.budgets[{i}].{e}"))?;
                budgets.push(budget);
                texts.push(match (doc.schedule, doc.duration) {
                    (Some(s), Some(d)) => format!("{nodes} during {d} after \"{s}\""),
                    _ => nodes,
                });
            }
            (Some(budgets), texts)
        }
    };
    Ok(Policy {
        source: String::new(),
        mode: match spec.consolidation.mode {
            ModeDoc::Off => Mode::Off,
            ModeDoc::WhenEmpty => Mode::WhenEmpty,
            ModeDoc::WhenUnderutilized => Mode::WhenUnderutilized,
        },
        utilization_threshold: threshold,
        aggressiveness,
        min_nodes: spec.nodes.min.unwrap_or(0) as usize,
        max_nodes: spec.nodes.max.map(|m| m as usize),
        spot: SpotTarget {
            percentage: spec.spot.percentage,
            on_demand_base: spec.spot.on_demand_base as usize,
        },
        excluded_namespaces: spec
            .disruption
            .exclude_namespaces
            .unwrap_or_else(|| Options::default().excluded_namespaces),
        budgets,
        budget_text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2025-01-06T10:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap()
    }

    #[test]
    fn absent_fields_take_the_design_defaults() {
        let p = parse("apiVersion: cloudoptim.io/v1alpha1\nkind: OptimizationPolicy\nmetadata: {name: p}\nspec: {}\n")
            .unwrap();
        assert_eq!(
            (p.mode, p.utilization_threshold, p.aggressiveness),
            (Mode::WhenUnderutilized, 0.5, 40)
        );
        assert_eq!(
            p.spot,
            SpotTarget {
                percentage: 70,
                on_demand_base: 0
            }
        );
        assert_eq!(
            p.excluded_namespaces,
            ["kube-system", "kube-public", "kube-node-lease"]
        );
        assert_eq!(
            p.options(40, at()).budget,
            Some(4),
            "default budget 10% of 40"
        );
        assert_eq!(p.options(41, at()).budget, Some(5), "percentages round up");
    }

    #[test]
    fn fields_are_read_in_camel_case() {
        let p = parse(
            "kind: OptimizationPolicy\nspec:\n  spot: {percentage: 90, onDemandBase: 2}\n  nodes: {min: 3, max: 50}\n\
             \n  consolidation: {mode: WhenEmpty, utilizationThreshold: 0.3, aggressiveness: 100}\n\
             \n  disruption:\n    excludeNamespaces: [ops]\n    budgets:\n    - nodes: 2\n    - nodes: \"0\"\n      schedule: \"0 9 * * mon-fri\"\n      duration: 8h\n",
        )
        .unwrap();
        assert_eq!(p.mode, Mode::WhenEmpty);
        assert_eq!((p.min_nodes, p.max_nodes), (3, Some(50)));
        assert_eq!(
            p.spot,
            SpotTarget {
                percentage: 90,
                on_demand_base: 2
            }
        );
        assert_eq!(p.excluded_namespaces, ["ops"]);
        assert_eq!(
            p.options(40, at()).budget,
            Some(0),
            "Monday 10:00 is inside the freeze window"
        );
        let evening = DateTime::parse_from_rfc3339("2025-01-06T20:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(p.options(40, evening).budget, Some(2));
    }

    #[test]
    fn an_empty_budget_list_means_no_limit() {
        let p = parse("kind: OptimizationPolicy\nspec: {disruption: {budgets: []}}\n").unwrap();
        assert_eq!(p.options(40, at()).budget, Some(40));
    }

    #[test]
    fn bad_fields_are_named() {
        let cases = [
            (
                "spec: {spot: {percentage: 120}}",
                "spec.spot.percentage: 120 is above 100",
            ),
            (
                "spec: {consolidation: {utilizationThreshold: 2}}",
                "spec.consolidation.utilizationThreshold",
            ),
            (
                "spec: {consolidation: {aggressiveness: 300}}",
                "spec.consolidation.aggressiveness",
            ),
            (
                "spec: {nodes: {min: 5, max: 2}}",
                "spec.nodes: min 5 is above max 2",
            ),
            (
                "spec: {disruption: {budgets: [{nodes: ten}]}}",
                "spec.disruption.budgets[0].nodes",
            ),
            (
                "spec: {consolidation: {mode: Sometimes}}",
                "spec.consolidation.mode",
            ),
            ("kind: NodeTemplate", "kind: expected OptimizationPolicy"),
        ];
        for (text, expected) in cases {
            let message = parse(text).unwrap_err();
            assert!(message.contains(expected), "{text}: {message}");
        }
    }
}
