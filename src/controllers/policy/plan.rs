//! plan: pure. From what was read, the policy's settings, the time and the candidates' history, what
//! this pass does: which drains resume and which are released, which nodes are removed.

use super::read::Inputs;
use super::*;
use crate::engine::consolidation::Plan;
use crate::engine::savings::CostReport;
use crate::engine::spot_average;

/// A node to remove: its name, instance id, Auto Scaling group and price per hour.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Removal {
    pub(super) node: String,
    pub(super) instance: String,
    pub(super) group: String,
    pub(super) hourly: f64,
}

/// What one pass decided.
pub(super) struct Decision {
    /// Nodes the budgets allow in disruption at once.
    pub(super) limit: usize,
    /// Of the drains a previous run left, how many may resume (0 with consolidation Off).
    pub(super) resumable: usize,
    /// Left-behind drains that resume.
    pub(super) in_flight: Vec<String>,
    /// Left-behind drains over today's budget: released, not drained.
    pub(super) over_budget: Vec<String>,
    /// The planner's plan.
    pub(super) plan: Plan,
    /// Cost now and after the plan, estimated at the 30-day average Spot prices where there are some.
    pub(super) cost: CostReport,
    /// How many nodes' Spot prices in the estimate are 30-day averages (the rest: the latest price).
    pub(super) averaged: usize,
    /// Nodes removed in this pass: resumed drains, then candidates that waited consolidateAfter.
    pub(super) removals: Vec<Removal>,
    /// Replacements the planner proposes after the removals (planned only, not carried out), with the
    /// names of the nodes they replace.
    pub(super) replacements: Vec<(consolidation::Replacement, Vec<String>)>,
}

impl Decision {
    /// The planned replacements as the status shows them.
    pub(super) fn planned_replacements(&self) -> Vec<PlannedReplacement> {
        let round = |v: f64| (v * 10_000.0).round() / 10_000.0;
        self.replacements
            .iter()
            .map(|(r, names)| PlannedReplacement {
                reason: r.reason.as_str().to_string(),
                replace: names.clone(),
                instance_type: r.with.instance_type.clone(),
                zone: r.with.zone.clone(),
                capacity_type: r.with.capacity_type.as_str().to_string(),
                hourly: round(r.with.hourly),
                savings_hourly: round(r.savings_hourly),
            })
            .collect()
    }

    /// What the planned replacements would save together, USD per hour.
    pub(super) fn replacement_savings(&self) -> f64 {
        self.replacements
            .iter()
            .map(|(r, _)| r.savings_hourly)
            .sum()
    }
}

/// Decide this pass. `candidates` (node -> since when it has been a removal candidate) is updated:
/// nodes the plan no longer removes leave it, new ones enter it at `clock`.
pub(super) fn decide(
    inputs: &Inputs,
    settings: &Settings,
    candidates: &mut BTreeMap<String, Instant>,
    now: chrono::DateTime<Utc>,
    clock: Instant,
) -> Result<Decision, Error> {
    let snapshot = &inputs.snapshot;
    let limit = batch_limit(settings, snapshot.nodes.len(), now);
    // Resumed drains count against today's budget: the ones over it (the budget shrank, a window
    // closed, consolidation was turned off) are released, not drained.
    let resumable = if settings.options.mode == Mode::Off {
        0
    } else {
        limit
    };
    let mut in_flight = inputs.marked.clone();
    let over_budget = in_flight.split_off(in_flight.len().min(resumable));
    let mut options = settings.options.clone();
    options.budget = Some(limit.saturating_sub(in_flight.len()));
    let plan = consolidation::plan(snapshot, &options).map_err(|e| Error::Plan(e.to_string()))?;
    // Estimates use the 30-day average where there is a history; the plan itself ranks with current
    // prices. The copy has the same nodes in the same order, so the plan's node ids hold.
    let (averaged_snapshot, averaged) =
        spot_average::reprice(snapshot, &inputs.spot_averages.averages);
    let cost = savings::estimate_plan(&averaged_snapshot, &plan, Some(settings.spot));
    let replacements = if settings.options.mode == Mode::Off || inputs.offers.is_empty() {
        Vec::new()
    } else {
        consolidation::plan_replacements(
            snapshot,
            &plan,
            &options,
            &consolidation::ReplaceOptions {
                spot: Some(settings.spot),
                ..consolidation::ReplaceOptions::with_offers(inputs.offers.clone())
            },
        )
        .into_iter()
        .map(|r| {
            let names = r
                .replace
                .iter()
                .map(|id| snapshot.nodes[id.index()].name.clone())
                .collect();
            (r, names)
        })
        .collect()
    };
    let ready = ready_candidates(inputs, &plan, candidates, settings, &options, clock);
    let removals = if settings.options.mode == Mode::Off {
        Vec::new()
    } else {
        in_flight
            .iter()
            .chain(ready.iter())
            .filter_map(|n| removal(inputs, n))
            .collect()
    };
    Ok(Decision {
        limit,
        resumable,
        in_flight,
        over_budget,
        plan,
        cost,
        averaged,
        removals,
        replacements,
    })
}

/// The planned removals that have been candidates for `consolidateAfter`, at most the budget left.
fn ready_candidates(
    inputs: &Inputs,
    plan: &Plan,
    candidates: &mut BTreeMap<String, Instant>,
    settings: &Settings,
    options: &Options,
    clock: Instant,
) -> Vec<String> {
    let snapshot = &inputs.snapshot;
    let current: BTreeSet<String> = plan
        .removals
        .iter()
        .map(|r| snapshot.nodes[r.node.index()].name.clone())
        .collect();
    candidates.retain(|n, _| current.contains(n));
    for name in &current {
        candidates.entry(name.clone()).or_insert(clock);
    }
    plan.batches
        .iter()
        .flatten()
        .map(|id| snapshot.nodes[id.index()].name.clone())
        .filter(|n| {
            candidates.get(n).is_some_and(|since| {
                clock.saturating_duration_since(*since) >= settings.consolidate_after
            })
        })
        .take(options.budget.unwrap_or(0))
        .collect()
}

/// The removal of node `name`: its instance, group and price; `None` when it is not in a selected group.
fn removal(inputs: &Inputs, name: &str) -> Option<Removal> {
    let instance = inputs.instance_of(name)?;
    let hourly = inputs
        .snapshot
        .nodes
        .iter()
        .find(|n| n.name == name)
        .and_then(|n| n.hourly_price)
        .unwrap_or(0.0);
    Some(Removal {
        node: name.to_string(),
        group: inputs.owners.get(&instance)?.1.clone(),
        hourly,
        instance,
    })
}
