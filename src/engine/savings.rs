//! What a cluster costs now and after a plan (DESIGN.md section 4, "Savings").
//!
//! - A node costs its hourly price (spot price for spot nodes, filled by the caller from the catalog);
//!   nodes without a known price count 0 and are listed in [`CostReport::unpriced_nodes`].
//! - Monthly = hourly x 730 (the seed's convention).
//! - Optimised cost = the kept nodes, plus the policy's spot mix: when kept nodes above `onDemandBase` are
//!   less spot than `spot.percentage`, the on-demand nodes whose conversion saves most (same type, same
//!   zone, at the spot price) are counted as spot. The number of spot nodes is rounded down, in favour of
//!   on-demand, as EC2 Auto Scaling does. A cluster already above the target is left as it is (the
//!   estimate never adds cost). Nodes annotated do-not-disrupt, and the `pinned` nodes the caller names
//!   (e.g. nodes the planner keeps for a pinned pod or a PDB), are never converted: converting a node
//!   means replacing it.
//! - "Savings vs on-demand" compares the optimised cost with the current nodes all billed on demand.

use crate::engine::snapshot::{CapacityType, NodeId, Snapshot};

/// Hours in a month, for monthly figures.
pub const HOURS_PER_MONTH: f64 = 730.0;

/// The spot / on-demand mix a policy asks for (`spec.spot`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpotTarget {
    /// Percentage (0-100) of nodes above the base that should be spot.
    pub percentage: u32,
    /// Nodes that stay on demand regardless.
    pub on_demand_base: usize,
}

/// Node counts and hourly cost by capacity type.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CapacityMix {
    /// Spot nodes.
    pub spot_nodes: usize,
    /// On-demand nodes.
    pub on_demand_nodes: usize,
    /// Hourly cost of the spot nodes.
    pub spot_hourly: f64,
    /// Hourly cost of the on-demand nodes.
    pub on_demand_hourly: f64,
}

impl CapacityMix {
    /// Hourly cost of all nodes.
    pub fn hourly(&self) -> f64 {
        self.spot_hourly + self.on_demand_hourly
    }

    /// Share of nodes on spot, 0-100 (0 for no nodes).
    pub fn spot_percent(&self) -> f64 {
        let total = self.spot_nodes + self.on_demand_nodes;
        if total == 0 {
            0.0
        } else {
            100.0 * self.spot_nodes as f64 / total as f64
        }
    }

    fn add(&mut self, capacity: CapacityType, hourly: f64) {
        match capacity {
            CapacityType::Spot => {
                self.spot_nodes += 1;
                self.spot_hourly += hourly;
            }
            CapacityType::OnDemand => {
                self.on_demand_nodes += 1;
                self.on_demand_hourly += hourly;
            }
        }
    }
}

/// Current vs optimised cost.
#[derive(Debug, Clone, PartialEq)]
pub struct CostReport {
    /// What the cluster costs now, per hour.
    pub current_hourly: f64,
    /// What it costs after the plan and the spot mix, per hour.
    pub optimized_hourly: f64,
    /// `current_hourly - optimized_hourly` (never negative).
    pub savings_hourly: f64,
    /// `savings_hourly x 730`.
    pub savings_monthly: f64,
    /// Savings as a percentage of the current cost (0 when the current cost is 0).
    pub savings_percent: f64,
    /// Part of the savings from removing nodes.
    pub consolidation_hourly: f64,
    /// Part of the savings from replacing nodes with cheaper new ones (their price minus the new
    /// nodes').
    pub replacement_hourly: f64,
    /// Part of the savings from moving kept on-demand nodes to spot.
    pub spot_mix_hourly: f64,
    /// Current nodes by capacity type.
    pub current_mix: CapacityMix,
    /// Kept nodes by capacity type, after the spot mix.
    pub optimized_mix: CapacityMix,
    /// The current nodes if all were on demand, per hour.
    pub on_demand_equivalent_hourly: f64,
    /// Optimised cost vs the on-demand equivalent, as a percentage saved.
    pub savings_vs_on_demand_percent: f64,
    /// Kept on-demand nodes counted as spot in the optimised cost.
    pub spot_conversions: Vec<NodeId>,
    /// Nodes without a known price (counted as 0).
    pub unpriced_nodes: Vec<NodeId>,
}

fn price(value: Option<f64>) -> Option<f64> {
    value.filter(|p| p.is_finite() && *p >= 0.0)
}

/// Cost of `snapshot` now and after `plan`: its removals gone, and the kept nodes that the plan does not
/// pin following `target`.
pub fn estimate_plan(
    snapshot: &Snapshot,
    plan: &crate::engine::consolidation::Plan,
    target: Option<SpotTarget>,
) -> CostReport {
    estimate_with_replacements(snapshot, plan, &[], target)
}

/// [`estimate_plan`] with `replacements` carried out too: the replaced nodes go, the new nodes come (as
/// offered: the Spot mix is not applied to them), each saving counted once.
pub fn estimate_with_replacements(
    snapshot: &Snapshot,
    plan: &crate::engine::consolidation::Plan,
    replacements: &[crate::engine::consolidation::Replacement],
    target: Option<SpotTarget>,
) -> CostReport {
    let removed: Vec<NodeId> = plan.removals.iter().map(|r| r.node).collect();
    let replaced: Vec<NodeId> = replacements
        .iter()
        .flat_map(|r| r.replace.iter().copied())
        .collect();
    let pinned: Vec<NodeId> = plan
        .kept
        .iter()
        .filter(|k| k.reason.pins_node())
        .map(|k| k.node)
        .chain(replaced.iter().copied())
        .collect();
    let gone: Vec<NodeId> = removed.iter().chain(&replaced).copied().collect();
    let added: Vec<(CapacityType, f64)> = replacements
        .iter()
        .map(|r| (r.with.capacity_type, r.with.hourly))
        .collect();
    let mut report = estimate_with_added(snapshot, &gone, &pinned, &added, target);
    let replaced_hourly: f64 = replaced
        .iter()
        .filter_map(|id| price(snapshot.nodes.get(id.index())?.hourly_price))
        .sum();
    report.consolidation_hourly = (report.consolidation_hourly - replaced_hourly).max(0.0);
    report.replacement_hourly = replaced_hourly - added.iter().map(|(_, h)| h).sum::<f64>();
    report
}

/// Cost of `snapshot` now and once `removed` are gone and the kept nodes (except `pinned` ones) follow
/// `target`.
pub fn estimate(
    snapshot: &Snapshot,
    removed: &[NodeId],
    pinned: &[NodeId],
    target: Option<SpotTarget>,
) -> CostReport {
    estimate_with_added(snapshot, removed, pinned, &[], target)
}

/// [`estimate`] with new nodes (capacity type, hourly price) added to the kept ones before the spot
/// target is applied, so that new Spot nodes count toward it and are not converted twice.
fn estimate_with_added(
    snapshot: &Snapshot,
    removed: &[NodeId],
    pinned: &[NodeId],
    added: &[(CapacityType, f64)],
    target: Option<SpotTarget>,
) -> CostReport {
    let flags = |ids: &[NodeId]| {
        let mut set = vec![false; snapshot.nodes.len()];
        for id in ids {
            if let Some(slot) = set.get_mut(id.index()) {
                *slot = true;
            }
        }
        set
    };
    let is_removed = flags(removed);
    let is_pinned = flags(pinned);
    let mut current_mix = CapacityMix::default();
    let mut kept_mix = CapacityMix::default();
    let mut on_demand_equivalent = 0.0;
    let mut unpriced_nodes = Vec::new();
    for (i, node) in snapshot.nodes.iter().enumerate() {
        let hourly = price(node.hourly_price);
        if hourly.is_none() {
            unpriced_nodes.push(NodeId(i as u32));
        }
        let hourly = hourly.unwrap_or(0.0);
        current_mix.add(node.capacity_type, hourly);
        on_demand_equivalent += price(node.on_demand_price).unwrap_or(hourly);
        if !is_removed[i] {
            kept_mix.add(node.capacity_type, hourly);
        }
    }
    let removed_hourly = current_mix.hourly() - kept_mix.hourly();
    for &(capacity, hourly) in added {
        kept_mix.add(capacity, hourly);
    }
    let (spot_conversions, spot_mix_hourly, optimized_mix) =
        apply_spot_target(snapshot, &is_removed, &is_pinned, kept_mix, target);
    let current_hourly = current_mix.hourly();
    let optimized_hourly = optimized_mix.hourly();
    let savings_hourly = (current_hourly - optimized_hourly).max(0.0);
    let percent = |saved: f64, base: f64| {
        if base > 0.0 {
            100.0 * saved / base
        } else {
            0.0
        }
    };
    CostReport {
        current_hourly,
        optimized_hourly,
        savings_hourly,
        savings_monthly: savings_hourly * HOURS_PER_MONTH,
        savings_percent: percent(savings_hourly, current_hourly),
        consolidation_hourly: removed_hourly.max(0.0),
        replacement_hourly: 0.0,
        spot_mix_hourly,
        current_mix,
        optimized_mix,
        on_demand_equivalent_hourly: on_demand_equivalent,
        savings_vs_on_demand_percent: percent(
            (on_demand_equivalent - optimized_hourly).max(0.0),
            on_demand_equivalent,
        ),
        spot_conversions,
        unpriced_nodes,
    }
}

/// Convert the kept on-demand nodes that save most until the spot target is met.
fn apply_spot_target(
    snapshot: &Snapshot,
    is_removed: &[bool],
    is_pinned: &[bool],
    kept: CapacityMix,
    target: Option<SpotTarget>,
) -> (Vec<NodeId>, f64, CapacityMix) {
    let Some(target) = target else {
        return (Vec::new(), 0.0, kept);
    };
    let total = kept.spot_nodes + kept.on_demand_nodes;
    let above_base = total.saturating_sub(target.on_demand_base);
    let wanted_spot = above_base * target.percentage.min(100) as usize / 100;
    let missing = wanted_spot.saturating_sub(kept.spot_nodes);
    let mut options: Vec<(NodeId, f64, f64)> = snapshot
        .nodes
        .iter()
        .enumerate()
        .filter(|(i, n)| {
            !is_removed[*i]
                && !is_pinned[*i]
                && n.capacity_type == CapacityType::OnDemand
                && !n.do_not_disrupt
        })
        .filter_map(|(i, n)| {
            let now = price(n.hourly_price)?;
            let spot = price(n.spot_price)?;
            (spot < now).then_some((NodeId(i as u32), now, spot))
        })
        .collect();
    options.sort_by(|a, b| (b.1 - b.2).total_cmp(&(a.1 - a.2)).then(a.0.cmp(&b.0)));
    options.truncate(missing);
    let mut mix = kept;
    let mut saved = 0.0;
    for &(_, now, spot) in &options {
        mix.on_demand_nodes -= 1;
        mix.on_demand_hourly -= now;
        mix.spot_nodes += 1;
        mix.spot_hourly += spot;
        saved += now - spot;
    }
    (
        options.into_iter().map(|(id, _, _)| id).collect(),
        saved,
        mix,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::snapshot::{Node, Resources};

    fn node(name: &str, capacity: CapacityType, hourly: f64, on_demand: f64, spot: f64) -> Node {
        let mut n = Node::new(name, Resources::default());
        n.capacity_type = capacity;
        n.hourly_price = Some(hourly);
        n.on_demand_price = Some(on_demand);
        n.spot_price = Some(spot);
        n
    }

    fn cluster() -> Snapshot {
        Snapshot {
            nodes: vec![
                node("od-big", CapacityType::OnDemand, 1.0, 1.0, 0.3),
                node("od-small", CapacityType::OnDemand, 0.2, 0.2, 0.1),
                node("spot", CapacityType::Spot, 0.3, 1.0, 0.3),
            ],
            pods: vec![],
            pdbs: vec![],
        }
    }

    #[test]
    fn removing_nodes_saves_their_price_monthly_at_730_hours() {
        let r = estimate(&cluster(), &[NodeId(1)], &[], None);
        assert!((r.current_hourly - 1.5).abs() < 1e-9);
        assert!((r.optimized_hourly - 1.3).abs() < 1e-9);
        assert!((r.savings_monthly - 0.2 * 730.0).abs() < 1e-9);
        assert!((r.savings_percent - 100.0 * 0.2 / 1.5).abs() < 1e-9);
        assert_eq!(
            (r.current_mix.spot_nodes, r.current_mix.on_demand_nodes),
            (1, 2)
        );
        assert!((r.on_demand_equivalent_hourly - 2.2).abs() < 1e-9);
    }

    #[test]
    fn spot_target_converts_the_on_demand_nodes_that_save_most() {
        // 3 kept nodes, base 0, 70% -> 2 spot wanted, 1 present: convert od-big (saves 0.7).
        let target = Some(SpotTarget {
            percentage: 70,
            on_demand_base: 0,
        });
        let r = estimate(&cluster(), &[], &[], target);
        assert_eq!(r.spot_conversions, [NodeId(0)]);
        assert!((r.spot_mix_hourly - 0.7).abs() < 1e-9);
        assert!((r.optimized_hourly - 0.8).abs() < 1e-9);
        assert_eq!(r.optimized_mix.spot_nodes, 2);
        let r = estimate(&cluster(), &[], &[NodeId(0)], target);
        assert_eq!(
            r.spot_conversions,
            [NodeId(1)],
            "a pinned node is not replaced"
        );
    }

    #[test]
    fn spot_count_rounds_down_and_respects_the_on_demand_base() {
        let target = SpotTarget {
            percentage: 100,
            on_demand_base: 2,
        };
        let r = estimate(&cluster(), &[], &[], Some(target));
        assert!(
            r.spot_conversions.is_empty(),
            "3 nodes - base 2 = 1 spot wanted, 1 present"
        );
        let r = estimate(
            &cluster(),
            &[],
            &[],
            Some(SpotTarget {
                percentage: 50,
                on_demand_base: 0,
            }),
        );
        assert!(
            r.spot_conversions.is_empty(),
            "50% of 3 rounds down to 1 spot"
        );
    }

    #[test]
    fn savings_are_never_negative_and_unpriced_nodes_are_reported() {
        let mut s = cluster();
        s.nodes[2].hourly_price = None;
        let r = estimate(
            &s,
            &[],
            &[],
            Some(SpotTarget {
                percentage: 0,
                on_demand_base: 0,
            }),
        );
        assert_eq!(r.savings_hourly, 0.0);
        assert_eq!(r.unpriced_nodes, [NodeId(2)]);
        let empty = estimate(&Snapshot::default(), &[], &[], None);
        assert_eq!(empty.savings_percent, 0.0);
    }
}
