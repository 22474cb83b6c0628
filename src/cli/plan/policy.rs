//! `--policy FILE`: the OptimizationPolicy read into the CRD's own type (so its defaults are the CRD's)
//! and checked by the controller's own validate step ([`crate::controllers::policy::settings`]), so
//! `plan` and the operator cannot disagree about one policy.

use std::path::Path;

use chrono::{DateTime, Utc};

use crate::api::OptimizationPolicy;
use crate::api::policy::OptimizationPolicySpec;
use crate::controllers::policy::{Settings, batch_limit, settings};
use crate::engine::consolidation::Options;
use crate::engine::savings::SpotTarget;

/// What `plan` takes from a policy, checked.
#[derive(Debug, Clone)]
pub(super) struct Policy {
    /// Where it came from ("defaults" or the file).
    pub(super) source: String,
    /// The settings the controller would run with.
    pub(super) settings: Settings,
    pub(super) utilization_threshold: f64,
    pub(super) aggressiveness: u8,
    pub(super) min_nodes: usize,
    pub(super) max_nodes: Option<usize>,
    pub(super) spot: SpotTarget,
    /// The budget text, for the report.
    pub(super) budget_text: Vec<String>,
    /// `spec.rightsizing`, checked (used with `--usage`).
    pub(super) rightsizing: crate::engine::rightsizing::Settings,
}

impl Default for Policy {
    fn default() -> Self {
        // An empty spec takes the CRD's defaults, which always pass the checks (a unit test says so).
        parse("kind: OptimizationPolicy\nspec: {}")
            .unwrap_or_else(|e| unreachable!("CRD defaults are valid: {e}"))
    }
}

impl Policy {
    /// Planner options for a snapshot of `nodes` nodes at `at` (budgets with schedules are evaluated then).
    pub(super) fn options(&self, nodes: usize, at: DateTime<Utc>) -> Options {
        Options {
            budget: Some(batch_limit(&self.settings, nodes, at)),
            ..self.settings.options.clone()
        }
    }
}

/// Read and check `--policy FILE`. Errors name the file and the field.
pub(super) fn load(path: &Path) -> Result<Policy, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Parse a policy document (the OptimizationPolicy object): the CRD's schema for the shape, then the
/// checks the API server's admission makes (ranges), then the controller's.
pub(super) fn parse(text: &str) -> Result<Policy, String> {
    let file = crate::api::file::read::<OptimizationPolicy, OptimizationPolicySpec>(text, |_| {})?;
    from_crd(&OptimizationPolicy::new(&file.name, file.spec))
}

/// The checks admission makes with the CRD's schema, for a file that never met the API server.
fn admission(spec: &OptimizationPolicySpec) -> Result<(), String> {
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
    if aggressiveness > 100 {
        return Err(format!(
            "spec.consolidation.aggressiveness: {aggressiveness} is outside 0..100"
        ));
    }
    Ok(())
}

fn from_crd(policy: &OptimizationPolicy) -> Result<Policy, String> {
    admission(&policy.spec)?;
    let settings = settings(policy).map_err(|e| e.to_string())?;
    let rightsizing = crate::k8s::rightsizing_settings(&policy.spec.rightsizing)?;
    let budget_text = policy
        .spec
        .disruption
        .budgets
        .iter()
        .map(|b| match (&b.schedule, &b.duration) {
            (Some(s), Some(d)) => format!("{} during {d} after \"{s}\"", b.nodes),
            _ => b.nodes.clone(),
        })
        .collect();
    Ok(Policy {
        source: "defaults".to_owned(),
        utilization_threshold: settings.options.utilization_threshold,
        aggressiveness: settings.options.aggressiveness,
        min_nodes: settings.options.min_nodes,
        max_nodes: settings.max_nodes,
        spot: settings.spot,
        budget_text,
        settings,
        rightsizing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::consolidation::Mode;

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
            (
                p.settings.options.mode,
                p.utilization_threshold,
                p.aggressiveness
            ),
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
            p.settings.options.excluded_namespaces,
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
             \n  disruption:\n    excludeNamespaces: [ops]\n    budgets:\n    - nodes: \"2\"\n    - nodes: \"0\"\n      schedule: \"0 9 * * mon-fri\"\n      duration: 8h\n",
        )
        .unwrap();
        assert_eq!(p.settings.options.mode, Mode::WhenEmpty);
        assert_eq!((p.min_nodes, p.max_nodes), (3, Some(50)));
        assert_eq!(
            p.spot,
            SpotTarget {
                percentage: 90,
                on_demand_base: 2
            }
        );
        assert_eq!(p.settings.options.excluded_namespaces, ["ops"]);
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
            // Checked by the controller's validate step, which `plan` shares.
            (
                "spec: {interruptions: {drainDeadline: soon}}",
                "spec.interruptions.drainDeadline",
            ),
            (
                "spec: {zombies: {gracePeriod: 1x}}",
                "spec.zombies.gracePeriod",
            ),
        ];
        for (text, expected) in cases {
            let text = if text.starts_with("kind:") {
                text.to_string()
            } else {
                format!("kind: OptimizationPolicy\n{text}")
            };
            let message = parse(&text).unwrap_err();
            assert!(message.contains(expected), "{text}: {message}");
        }
    }
}
