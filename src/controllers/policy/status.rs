//! status: the metrics one pass exports and the status it writes, built from what was read and
//! decided.

use super::act::Acted;
use super::plan::Decision;
use super::read::{Inputs, node_instance};
use super::*;

/// Export the policy's savings and its nodes' cost and counts; series of nodes it no longer has go.
pub(super) fn export_metrics<C: Cloud>(
    ctx: &Context<C>,
    policy: &str,
    inputs: &Inputs,
    decision: &Decision,
    rightsizing: Option<&[crate::engine::rightsizing::Recommendation]>,
) {
    let metrics = &ctx.metrics;
    metrics
        .estimated_savings
        .with_label_values(&[policy])
        .set(decision.cost.savings_hourly);
    let mut exported = BTreeSet::from([Series::EstimatedSavings(policy.to_string())]);
    if let Some(recs) = rightsizing {
        let total: f64 = recs.iter().map(|r| r.monthly_savings).sum();
        metrics
            .rightsizing_savings
            .with_label_values(&[policy])
            .set(total);
        metrics
            .rightsizing_recommendations
            .with_label_values(&[policy])
            .set(recs.len() as f64);
        exported.insert(Series::Rightsizing(policy.to_string()));
    }
    let mut by_template: BTreeMap<(String, &'static str), i64> = BTreeMap::new();
    // `assemble` keeps the order of `scope`: snapshot node i is scope node i.
    for (node, n) in inputs.scope.iter().zip(&inputs.snapshot.nodes) {
        let id = node_instance(node).unwrap_or_default();
        let template = inputs
            .owners
            .get(id)
            .map_or("", |(t, _)| t.as_str())
            .to_string();
        let capacity = n.capacity_type.as_str();
        *by_template.entry((template, capacity)).or_insert(0) += 1;
        let price = n.hourly_price.unwrap_or(0.0);
        let instance_type = n.instance_type.as_deref().unwrap_or("");
        let cost_labels = [
            n.name.clone(),
            instance_type.to_string(),
            n.zone.clone().unwrap_or_default(),
            capacity.to_string(),
        ];
        metrics
            .node_hourly_cost
            .with_label_values(&cost_labels.each_ref().map(String::as_str))
            .set(price);
        exported.insert(Series::NodeHourlyCost(cost_labels));
        let arch = n
            .labels
            .get("kubernetes.io/arch")
            .map_or("", String::as_str);
        let total_labels = [
            n.name.clone(),
            instance_type.to_string(),
            n.region.clone().unwrap_or_default(),
            arch.to_string(),
        ];
        metrics
            .node_total_hourly_cost
            .with_label_values(&total_labels.each_ref().map(String::as_str))
            .set(price);
        exported.insert(Series::NodeTotalHourlyCost(total_labels));
    }
    for ((template, capacity), count) in by_template {
        metrics
            .nodes
            .with_label_values(&[capacity, template.as_str()])
            .set(count);
        exported.insert(Series::Nodes([capacity.to_string(), template]));
    }
    metrics.replace_owned(policy, exported);
}

/// The status of one pass (conditions are added by the reconcile).
pub(super) fn build_status(
    policy: &OptimizationPolicy,
    previous: &OptimizationPolicyStatus,
    inputs: &Inputs,
    decision: &Decision,
    acted: &Acted,
    zombies: Vec<ZombieStatus>,
) -> OptimizationPolicyStatus {
    let cost = &decision.cost;
    let spot = u32::try_from(cost.current_mix.spot_nodes).unwrap_or(u32::MAX);
    let on_demand = u32::try_from(cost.current_mix.on_demand_nodes).unwrap_or(u32::MAX);
    let total = spot + on_demand;
    let round = |v: f64| (v * 10_000.0).round() / 10_000.0;
    OptimizationPolicyStatus {
        observed_generation: policy.metadata.generation,
        nodes: Some(NodeCounts {
            total,
            spot,
            on_demand,
            spot_percentage: (spot * 100).checked_div(total).unwrap_or(0),
        }),
        cost: Some(CostStatus {
            hourly: round(cost.current_hourly),
            monthly: round(cost.current_hourly * HOURS_PER_MONTH),
            savings_hourly: round(cost.savings_hourly),
            savings_monthly: round(cost.savings_hourly * HOURS_PER_MONTH),
            savings_percent: (cost.savings_percent * 10.0).round() / 10.0,
        }),
        last_consolidation: acted
            .last
            .clone()
            .or_else(|| previous.last_consolidation.clone()),
        planned_replacements: decision.planned_replacements(),
        replacements_in_flight: super::replace::in_flight_status(
            inputs,
            decision,
            &acted.replacements,
        ),
        realized_savings: realized(previous.realized_savings.as_ref(), acted),
        recommendations: previous.recommendations.clone(),
        zombies,
        conditions: Vec::new(),
    }
}

/// The savings realised so far: the previous total plus what this pass did (none until something is
/// done).
fn realized(previous: Option<&RealizedSavings>, acted: &Acted) -> Option<RealizedSavings> {
    let done = &acted.replacements;
    let acted_now = acted.nodes_removed > 0 || done.replaced > 0 || done.aborted > 0;
    if !acted_now {
        return previous.cloned();
    }
    let mut total = previous.cloned().unwrap_or_default();
    total.nodes_removed += acted.nodes_removed;
    total.replacements += done.replaced;
    total.replacements_aborted += done.aborted;
    total.saved_hourly = ((total.saved_hourly + acted.saved_hourly + done.saved_hourly) * 10_000.0)
        .round()
        / 10_000.0;
    Some(total)
}

/// The Ready message: the pass in one line, then its notes and the nodes the plan keeps and why.
pub(super) fn message(
    status: &OptimizationPolicyStatus,
    inputs: &Inputs,
    decision: &Decision,
    dry_run: bool,
    notes: &[String],
) -> String {
    let snapshot = &inputs.snapshot;
    let total = status.nodes.as_ref().map_or(0, |n| n.total);
    let kept = decision
        .plan
        .kept
        .iter()
        .filter(|k| k.reason.pins_node())
        .take(5)
        .map(|k| {
            format!(
                "{} kept: {}",
                snapshot.nodes[k.node.index()].name,
                k.reason.describe(snapshot)
            )
        });
    let mut message = format!(
        "{} nodes in scope ({} templates); plan removes {} (budget {} at once, {} in flight){}",
        total,
        inputs.templates,
        decision.plan.removals.len(),
        decision.limit,
        decision.in_flight.len(),
        if dry_run { "; dry run" } else { "" }
    );
    if !decision.replacements.is_empty() {
        message.push_str(&format!(
            "; {} replacements planned (status.plannedReplacements), ${:.4}/h more",
            decision.replacements.len(),
            decision.replacement_savings()
        ));
    }
    if !status.replacements_in_flight.is_empty() {
        message.push_str(&format!(
            "; {} replacements in flight (status.replacementsInFlight)",
            status.replacements_in_flight.len()
        ));
    }
    if let Some(r) = &status.realized_savings {
        message.push_str(&format!(
            "; realised so far: {} nodes removed, {} replacements, ${:.4}/h saved",
            r.nodes_removed, r.replacements, r.saved_hourly
        ));
    }
    message.push_str("; ");
    message.push_str(&estimate_prices(inputs, decision));
    for note in notes.iter().cloned().chain(kept) {
        message.push_str("; ");
        message.push_str(&note);
    }
    message
}

/// Which Spot prices the status cost and savings were estimated with.
pub(super) fn estimate_prices(inputs: &Inputs, decision: &Decision) -> String {
    let nodes = inputs.snapshot.nodes.len();
    let why = match &inputs.spot_averages.error {
        Some(e) => format!("Spot price history unavailable: {e}"),
        None => "no Spot price history for their zone and type".to_string(),
    };
    match decision.averaged {
        0 => format!("cost estimated at the latest Spot prices ({why})"),
        n if n == nodes => "cost estimated at 30-day average Spot prices".to_string(),
        n => format!(
            "cost estimated at 30-day average Spot prices for {n} of {nodes} nodes, the latest Spot price for the others ({why})"
        ),
    }
}
