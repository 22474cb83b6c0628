//! The two renderings of a plan: a table for people and JSON for tools.

use std::io::{self, Write};

use serde_json::{Value, json};

use crate::engine::consolidation::{Kept, ReplaceReason};
use crate::engine::savings::{CapacityMix, HOURS_PER_MONTH};
use crate::engine::snapshot::{Node, NodeId, Snapshot};

use super::Analysis;

/// Pods listed in the table before "-o json for all".
const TABLE_MOVES: usize = 25;

fn node_name(snapshot: &Snapshot, id: NodeId) -> &str {
    snapshot
        .nodes
        .get(id.index())
        .map_or("?", |n| n.name.as_str())
}

fn budget_text(a: &Analysis<'_>) -> String {
    let batch = a.plan.budget;
    format!(
        "budget {} -> {batch} nodes per batch",
        a.policy.budget_text.join(", ")
    )
}

/// `$1,234.56`.
pub(super) fn dollars(value: f64, decimals: usize) -> String {
    let text = format!("{:.*}", decimals, value.abs());
    let (whole, fraction) = text.split_once('.').unwrap_or((&text, ""));
    let mut grouped = String::new();
    for (i, c) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    let sign = if value < 0.0 { "-" } else { "" };
    if fraction.is_empty() {
        format!("{sign}${grouped}")
    } else {
        format!("{sign}${grouped}.{fraction}")
    }
}

fn price(node: &Node) -> String {
    node.hourly_price
        .map_or_else(|| "?".to_owned(), |p| format!("{p:.4}"))
}

fn mix_text(mix: &CapacityMix) -> String {
    format!(
        "{} ({} spot / {} on-demand)",
        mix.spot_nodes + mix.on_demand_nodes,
        mix.spot_nodes,
        mix.on_demand_nodes
    )
}

/// The report for people.
pub(super) fn write_table(a: &Analysis<'_>, out: &mut impl Write) -> io::Result<()> {
    let s = &a.translated.snapshot;
    let skipped = &a.translated.skipped;
    writeln!(out, "CloudOptim plan for {}", a.source)?;
    let mut not_counted = Vec::new();
    if skipped.pending_pods > 0 {
        not_counted.push(format!("{} pending", skipped.pending_pods));
    }
    if skipped.finished_pods > 0 {
        not_counted.push(format!("{} finished", skipped.finished_pods));
    }
    if skipped.pods_on_unknown_nodes > 0 {
        not_counted.push(format!(
            "{} on nodes not in the list",
            skipped.pods_on_unknown_nodes
        ));
    }
    let not_counted = if not_counted.is_empty() {
        String::new()
    } else {
        format!(" (not counted: {})", not_counted.join(", "))
    };
    writeln!(
        out,
        "  {} nodes, {} pods{not_counted}, {} PDBs, region {}",
        s.nodes.len(),
        s.pods.len(),
        s.pdbs.len(),
        a.region.as_deref().unwrap_or("unknown")
    )?;
    if a.catalog.is_sample() {
        writeln!(
            out,
            "  Prices: sample data (embedded catalog; its spot prices and Spot Advisor buckets are generated, \
             not market data); use --catalog DIR for real prices"
        )?;
    } else {
        writeln!(out, "  Prices: catalog {}", a.catalog_label)?;
    }
    let p = &a.policy;
    writeln!(
        out,
        "  Policy: {} -- {}, utilization threshold {:.2}, aggressiveness {}, {}, spot {}% above {} on-demand nodes, nodes.min {}",
        p.source,
        a.options.mode,
        p.utilization_threshold,
        p.aggressiveness,
        budget_text(a),
        p.spot.percentage,
        p.spot.on_demand_base,
        p.min_nodes
    )?;
    write_cost(a, out)?;
    write_removals(a, out)?;
    write_replacements(a, out)?;
    write_moves(a, out)?;
    write_kept(a, out)?;
    write_ranking(a, out)?;
    match &a.rightsizing {
        Some(r) => super::rightsizing_report::write_table(
            r,
            &a.policy.rightsizing,
            a.cost.optimized_hourly,
            a.plan.removals.len(),
            out,
        ),
        None => Ok(()),
    }
}

fn write_cost(a: &Analysis<'_>, out: &mut impl Write) -> io::Result<()> {
    let c = &a.cost;
    writeln!(out)?;
    writeln!(
        out,
        "{:<26} {:>14} {:>14} {:>14}",
        "COST", "NOW", "OPTIMISED", "SAVED"
    )?;
    writeln!(
        out,
        "  {:<24} {:>14} {:>14} {:>14} ({:.1}%)",
        "per hour",
        dollars(c.current_hourly, 4),
        dollars(c.optimized_hourly, 4),
        dollars(c.savings_hourly, 4),
        c.savings_percent
    )?;
    writeln!(
        out,
        "  {:<24} {:>14} {:>14} {:>14}",
        format!("per month (x{HOURS_PER_MONTH})"),
        dollars(c.current_hourly * HOURS_PER_MONTH, 2),
        dollars(c.optimized_hourly * HOURS_PER_MONTH, 2),
        dollars(c.savings_monthly, 2)
    )?;
    writeln!(
        out,
        "  nodes now: {}; optimised: {}",
        mix_text(&c.current_mix),
        mix_text(&c.optimized_mix)
    )?;
    writeln!(
        out,
        "  from consolidation: {} nodes removed, {}/h; {} replaced by {} cheaper, {}/h; from the spot mix: {} on-demand nodes to spot, {}/h",
        a.plan.removals.len(),
        dollars(c.consolidation_hourly, 4),
        a.replacements
            .iter()
            .map(|r| r.replace.len())
            .sum::<usize>(),
        a.replacements.len(),
        dollars(c.replacement_hourly, 4),
        c.spot_conversions.len(),
        dollars(c.spot_mix_hourly, 4)
    )?;
    writeln!(
        out,
        "  vs the same nodes all on-demand ({}/h): the optimised cluster saves {:.1}%",
        dollars(c.on_demand_equivalent_hourly, 4),
        c.savings_vs_on_demand_percent
    )?;
    if !c.unpriced_nodes.is_empty() {
        writeln!(
            out,
            "  {} nodes have no price in the catalog and count $0",
            c.unpriced_nodes.len()
        )?;
    }
    if let Some(h) = &a.hibernation {
        writeln!(
            out,
            "  with hibernation ({}, {}): nodes down {:.1} h of 168 a week ({:.1}%, averaged over 52 weeks)",
            h.source,
            h.time_zone,
            h.asleep_fraction * 168.0,
            h.asleep_fraction * 100.0
        )?;
        writeln!(
            out,
            "    optimised cluster {}/h on average, {} more saved per hour ({}/month)",
            dollars(h.average_hourly, 4),
            dollars(h.savings_hourly, 4),
            dollars(h.savings_hourly * HOURS_PER_MONTH, 2)
        )?;
    }
    if let Some(max) = a
        .policy
        .max_nodes
        .filter(|m| a.translated.snapshot.nodes.len() > *m)
    {
        writeln!(
            out,
            "  note: the cluster has more nodes than the policy's nodes.max {max}"
        )?;
    }
    Ok(())
}

fn write_removals(a: &Analysis<'_>, out: &mut impl Write) -> io::Result<()> {
    let s = &a.translated.snapshot;
    writeln!(out)?;
    if a.plan.removals.is_empty() {
        return writeln!(out, "REMOVE no nodes");
    }
    writeln!(
        out,
        "REMOVE {} NODES in {} batches of up to {}",
        a.plan.removals.len(),
        a.plan.batches.len(),
        a.plan.budget
    )?;
    writeln!(
        out,
        "  {:<5} {:<28} {:<12} {:<11} {:<9} {:>7}  WHY",
        "BATCH", "NODE", "TYPE", "ZONE", "CAPACITY", "$/HOUR"
    )?;
    let mut index = 0;
    for (b, batch) in a.plan.batches.iter().enumerate() {
        for _ in batch {
            let r = &a.plan.removals[index];
            index += 1;
            let n = &s.nodes[r.node.index()];
            writeln!(
                out,
                "  {:<5} {:<28} {:<12} {:<11} {:<9} {:>7}  {}",
                b + 1,
                n.name,
                n.instance_type.as_deref().unwrap_or("?"),
                n.zone.as_deref().unwrap_or("?"),
                n.capacity_type.as_str(),
                price(n),
                r.describe()
            )?;
        }
    }
    Ok(())
}

fn write_replacements(a: &Analysis<'_>, out: &mut impl Write) -> io::Result<()> {
    let s = &a.translated.snapshot;
    if a.replacements.is_empty() {
        return Ok(());
    }
    writeln!(out)?;
    writeln!(
        out,
        "REPLACE {} NODES WITH {} (each new node is launched and Ready before the ones it replaces drain)",
        a.replacements
            .iter()
            .map(|r| r.replace.len())
            .sum::<usize>(),
        a.replacements.len()
    )?;
    for r in &a.replacements {
        let replaced: Vec<&str> = r.replace.iter().map(|id| node_name(s, *id)).collect();
        writeln!(
            out,
            "  {} -> 1 {} {} {} at {}/h (was {}/h), saving {}/h{}; {} pods move: {}",
            replaced.len(),
            r.with.instance_type,
            r.with.zone,
            r.with.capacity_type.as_str(),
            dollars(r.with.hourly, 4),
            dollars(r.replaced_hourly, 4),
            dollars(r.savings_hourly, 4),
            match r.reason {
                ReplaceReason::Consolidation => "",
                ReplaceReason::SpotMix => " (to the policy's Spot split)",
            },
            r.pods.len(),
            replaced.join(", ")
        )?;
    }
    Ok(())
}

fn write_moves(a: &Analysis<'_>, out: &mut impl Write) -> io::Result<()> {
    let s = &a.translated.snapshot;
    if a.plan.moves.is_empty() {
        return Ok(());
    }
    writeln!(out)?;
    writeln!(out, "MOVE {} PODS", a.plan.moves.len())?;
    writeln!(out, "  {:<44} {:<28} TO", "POD", "FROM")?;
    for m in a.plan.moves.iter().take(TABLE_MOVES) {
        writeln!(
            out,
            "  {:<44} {:<28} {}",
            s.pods[m.pod.index()].key(),
            node_name(s, m.from),
            node_name(s, m.to)
        )?;
    }
    if a.plan.moves.len() > TABLE_MOVES {
        writeln!(
            out,
            "  (showing {TABLE_MOVES} of {}; -o json lists every move)",
            a.plan.moves.len()
        )?;
    }
    Ok(())
}

fn write_kept(a: &Analysis<'_>, out: &mut impl Write) -> io::Result<()> {
    let s = &a.translated.snapshot;
    writeln!(out)?;
    writeln!(out, "KEEP {} NODES", a.plan.kept.len())?;
    writeln!(out, "  {:<28} {:<12} {:<9} WHY", "NODE", "TYPE", "CAPACITY")?;
    let conversions = &a.cost.spot_conversions;
    for Kept { node, reason } in &a.plan.kept {
        let n = &s.nodes[node.index()];
        let converted = if conversions.contains(node) {
            "; to spot (policy mix)"
        } else {
            ""
        };
        writeln!(
            out,
            "  {:<28} {:<12} {:<9} {}{converted}",
            n.name,
            n.instance_type.as_deref().unwrap_or("?"),
            n.capacity_type.as_str(),
            reason.describe(s)
        )?;
    }
    Ok(())
}

fn write_ranking(a: &Analysis<'_>, out: &mut impl Write) -> io::Result<()> {
    writeln!(out)?;
    if let Some(note) = &a.ranking_note {
        return writeln!(out, "SPOT CANDIDATES: {note}");
    }
    writeln!(
        out,
        "TOP SPOT CANDIDATES PER ZONE (cloudoptim rank, Balanced weights, sized like the cluster's nodes, \
         no burstable types; lower score is better)"
    )?;
    writeln!(
        out,
        "  {:<12} {:<16} {:>10} {:>12} {:>6} {:>6}",
        "ZONE", "INSTANCE TYPE", "$/HOUR", "$/VCPU-HOUR", "RISK", "SCORE"
    )?;
    let mut zones: Vec<&str> = a.ranking.iter().map(|c| c.zone).collect();
    zones.sort_unstable();
    zones.dedup();
    for zone in zones {
        for c in a.ranking.iter().filter(|c| c.zone == zone) {
            writeln!(
                out,
                "  {:<12} {:<16} {:>10.4} {:>12.5} {:>6.2} {:>6.3}",
                c.zone, c.instance_type, c.price_per_hour, c.price_per_vcpu_hour, c.risk, c.score
            )?;
        }
    }
    Ok(())
}

/// Dollars to 6 decimals and percentages to 2, so sums do not show float noise (0.30000000000000004).
fn dollars_json(value: f64) -> f64 {
    (value * 1e6).round() / 1e6
}

fn percent_json(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

fn mix_json(mix: &CapacityMix) -> Value {
    json!({
        "spotNodes": mix.spot_nodes,
        "onDemandNodes": mix.on_demand_nodes,
        "spotHourly": dollars_json(mix.spot_hourly),
        "onDemandHourly": dollars_json(mix.on_demand_hourly),
        "spotPercent": percent_json(mix.spot_percent()),
    })
}

/// The report for tools.
pub(super) fn write_json(a: &Analysis<'_>, out: &mut impl Write) -> io::Result<()> {
    let s = &a.translated.snapshot;
    let c = &a.cost;
    let names = |ids: &[NodeId]| {
        ids.iter()
            .map(|&id| node_name(s, id).to_owned())
            .collect::<Vec<_>>()
    };
    let removals: Vec<Value> = a
        .plan
        .removals
        .iter()
        .map(|r| {
            let n = &s.nodes[r.node.index()];
            json!({
                "name": n.name,
                "instanceType": n.instance_type,
                "zone": n.zone,
                "capacityType": n.capacity_type.as_str(),
                "hourlyPrice": n.hourly_price,
                "utilization": r.utilization,
                "podsMoved": r.pods_moved,
                "reason": r.describe(),
            })
        })
        .collect();
    let skipped = &a.translated.skipped;
    let document = json!({
        "snapshot": a.source,
        "catalog": a.catalog_label,
        "sampleData": a.catalog.is_sample(),
        "region": a.region,
        "nodes": s.nodes.len(),
        "pods": s.pods.len(),
        "pdbs": s.pdbs.len(),
        "skipped": {
            "pendingPods": skipped.pending_pods,
            "finishedPods": skipped.finished_pods,
            "podsOnUnknownNodes": skipped.pods_on_unknown_nodes,
            "pdbsWithoutSelector": skipped.pdbs_without_selector,
            "otherKinds": skipped.other_kinds,
        },
        "policy": {
            "source": a.policy.source,
            "mode": a.options.mode.to_string(),
            "utilizationThreshold": a.options.utilization_threshold,
            "aggressiveness": a.options.aggressiveness,
            "nodesMin": a.options.min_nodes,
            "budgets": a.policy.budget_text,
            "batchSize": a.plan.budget,
            "spotPercentage": a.policy.spot.percentage,
            "onDemandBase": a.policy.spot.on_demand_base,
            "excludeNamespaces": a.options.excluded_namespaces,
        },
        "cost": {
            "currentHourly": dollars_json(c.current_hourly),
            "optimizedHourly": dollars_json(c.optimized_hourly),
            "savingsHourly": dollars_json(c.savings_hourly),
            // From the rounded hourly figure, so monthly = hourly x 730 holds in the output.
            "savingsMonthly": dollars_json(dollars_json(c.savings_hourly) * HOURS_PER_MONTH),
            "savingsPercent": percent_json(c.savings_percent),
            "currentMonthly": dollars_json(c.current_hourly * HOURS_PER_MONTH),
            "optimizedMonthly": dollars_json(c.optimized_hourly * HOURS_PER_MONTH),
            "consolidationHourly": dollars_json(c.consolidation_hourly),
            "replacementHourly": dollars_json(c.replacement_hourly),
            "spotMixHourly": dollars_json(c.spot_mix_hourly),
            "onDemandEquivalentHourly": dollars_json(c.on_demand_equivalent_hourly),
            "savingsVsOnDemandPercent": percent_json(c.savings_vs_on_demand_percent),
        },
        "mix": { "current": mix_json(&c.current_mix), "optimized": mix_json(&c.optimized_mix) },
        "removeNodes": names(&a.plan.removals.iter().map(|r| r.node).collect::<Vec<_>>()),
        "removals": removals,
        "replacements": a.replacements.iter().map(|r| json!({
            "reason": r.reason.as_str(),
            "replace": names(&r.replace),
            "with": {
                "instanceType": r.with.instance_type,
                "zone": r.with.zone,
                "capacityType": r.with.capacity_type.as_str(),
                "hourly": dollars_json(r.with.hourly),
            },
            "replacedHourly": dollars_json(r.replaced_hourly),
            "savingsHourly": dollars_json(r.savings_hourly),
            "podsMoved": r.pods.len(),
        })).collect::<Vec<_>>(),
        "keptNodes": a.plan.kept.iter().map(|k| json!({
            "name": node_name(s, k.node),
            "reason": k.reason.describe(s),
        })).collect::<Vec<_>>(),
        "moves": a.plan.moves.iter().map(|m| {
            let pod = &s.pods[m.pod.index()];
            json!({
                "namespace": pod.namespace,
                "pod": pod.name,
                "from": node_name(s, m.from),
                "to": node_name(s, m.to),
            })
        }).collect::<Vec<_>>(),
        "batches": a.plan.batches.iter().map(|b| names(b)).collect::<Vec<_>>(),
        "spotConversions": names(&c.spot_conversions),
        "unpricedNodes": names(&c.unpriced_nodes),
        "ranking": a.ranking,
        "rankingNote": a.ranking_note,
        "hibernation": a.hibernation.as_ref().map(|h| json!({
            "schedule": h.source,
            "timeZone": h.time_zone,
            "asleepHoursPerWeek": (h.asleep_fraction * 168.0 * 100.0).round() / 100.0,
            "asleepPercent": percent_json(h.asleep_fraction * 100.0),
            "averageHourly": dollars_json(h.average_hourly),
            "savingsHourly": dollars_json(h.savings_hourly),
            "savingsMonthly": dollars_json(dollars_json(h.savings_hourly) * HOURS_PER_MONTH),
        })),
        "rightsizing": a.rightsizing.as_ref().map(|r| super::rightsizing_report::json(r, a.cost.optimized_hourly)),
    });
    serde_json::to_writer_pretty(&mut *out, &document)?;
    writeln!(out)
}

#[cfg(test)]
mod tests {
    use super::dollars;

    #[test]
    fn dollars_group_thousands() {
        assert_eq!(dollars(1234567.891, 2), "$1,234,567.89");
        assert_eq!(dollars(0.5, 4), "$0.5000");
        assert_eq!(dollars(-12.0, 0), "-$12");
        assert_eq!(dollars(999.0, 2), "$999.00");
    }
}
