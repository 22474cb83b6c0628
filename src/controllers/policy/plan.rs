//! plan: pure. From what was read, the policy's settings, the time and the candidates' history, what
//! this pass does: which drains resume and which are released, which nodes are removed.

use super::read::Inputs;
use super::replace::{InFlight, Start};
use super::*;
use crate::engine::consolidation::Plan;
use crate::engine::replacement::{self, Facts, Record, Step};
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
    /// Replacements the planner proposes after the removals, with the names of the nodes they
    /// replace (none while replacements are in flight).
    pub(super) replacements: Vec<(consolidation::Replacement, Vec<String>)>,
    /// The next step of each replacement in flight (index into `Inputs::replacements`).
    pub(super) steps: Vec<(usize, Step)>,
    /// Replaced nodes to drain and remove now (their replacement is Ready).
    pub(super) replace_drains: Vec<Removal>,
    /// Replacements to launch in this pass.
    pub(super) launches: Vec<Start>,
    /// Why planned replacements are not launched (group full, no launch template, budget).
    pub(super) notes: Vec<String>,
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
    // Nodes replacements in flight are replacing belong to those replacements: neither resumed nor
    // released here, and counted against the budget.
    let replacing = replacing_nodes(inputs);
    let mut in_flight: Vec<String> = inputs
        .marked
        .iter()
        .filter(|n| !replacing.contains(*n))
        .cloned()
        .collect();
    let over_budget = in_flight.split_off(in_flight.len().min(resumable));
    let mut options = settings.options.clone();
    options.budget = Some(limit.saturating_sub(in_flight.len() + replacing.len()));
    // One consolidation action at a time: while replacements are in flight, their new nodes look
    // empty and their old ones look replaceable, so nothing new is planned to act on.
    let busy = !inputs.replacements.is_empty();
    let plan = consolidation::plan(snapshot, &options).map_err(|e| Error::Plan(e.to_string()))?;
    // Estimates use the 30-day average where there is a history; the plan itself ranks with current
    // prices. The copy has the same nodes in the same order, so the plan's node ids hold.
    let (averaged_snapshot, averaged) =
        spot_average::reprice(snapshot, &inputs.spot_averages.averages);
    let cost = savings::estimate_plan(&averaged_snapshot, &plan, Some(settings.spot));
    let replacements = if busy || settings.options.mode == Mode::Off || inputs.offers.is_empty() {
        Vec::new()
    } else {
        consolidation::plan_replacements(
            snapshot,
            &plan,
            &options,
            &consolidation::ReplaceOptions {
                spot: Some(settings.spot),
                margin: settings.replace_margin,
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
    let mut ready = ready_candidates(inputs, &plan, candidates, settings, &options, clock);
    if busy {
        ready.clear();
    }
    let removals: Vec<Removal> = if settings.options.mode == Mode::Off {
        Vec::new()
    } else {
        in_flight
            .iter()
            .chain(ready.iter())
            .filter_map(|n| removal(inputs, n))
            .collect()
    };
    let steps = steps(inputs, settings, now);
    let replace_drains = steps
        .iter()
        .filter_map(|(_, step)| match step {
            Step::Drain(ids) => Some(ids),
            _ => None,
        })
        .flatten()
        .filter_map(|id| removal(inputs, inputs.nodes_by_instance.get(id)?))
        .collect();
    let left = replace_limit(settings, snapshot.nodes.len(), now)
        .saturating_sub(in_flight.len() + replacing.len());
    let (launches, notes) = if busy || !removals.is_empty() || !settings.replace {
        retain_replacements(candidates, &[]);
        (Vec::new(), Vec::new())
    } else {
        launches(inputs, settings, &replacements, candidates, clock, left)
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
        steps,
        replace_drains,
        launches,
        notes,
    })
}

/// The nodes the replacements in flight replace (those still with a Node).
fn replacing_nodes(inputs: &Inputs) -> BTreeSet<String> {
    inputs
        .replacements
        .iter()
        .filter_map(|r| r.record.as_ref().ok())
        .flat_map(|r| &r.replaces)
        .filter_map(|id| inputs.nodes_by_instance.get(id).cloned())
        .collect()
}

/// Each replacement in flight's next step, from what the groups and Nodes show.
fn steps(inputs: &Inputs, settings: &Settings, now: chrono::DateTime<Utc>) -> Vec<(usize, Step)> {
    let timeout = i64::try_from(settings.replace_ready_timeout.as_secs()).unwrap_or(i64::MAX);
    inputs
        .replacements
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let record = r.record.as_ref().ok()?;
            Some((
                i,
                replacement::next_step(&facts(inputs, r, record, now), timeout),
            ))
        })
        .collect()
}

/// What is known about one replacement in flight.
fn facts(inputs: &Inputs, r: &InFlight, record: &Record, now: chrono::DateTime<Utc>) -> Facts {
    let running =
        |id: &String| inputs.owners.contains_key(id) || inputs.nodes_by_instance.contains_key(id);
    Facts {
        attached: inputs
            .groups
            .values()
            .any(|g| g.instances.contains(&r.instance.id)),
        node: r.node_state,
        age_secs: r
            .instance
            .launched_at
            .map_or(0, |at| (now.timestamp() - at).max(0)),
        replaced: record.replaces.len(),
        remaining: record
            .replaces
            .iter()
            .filter(|id| running(id))
            .cloned()
            .collect(),
        draining: record.replaces.iter().any(|id| {
            inputs
                .nodes_by_instance
                .get(id)
                .is_some_and(|n| inputs.marked.contains(n))
        }),
        pods_on_new: r.pods_on_new,
    }
}

/// The key under which a planned replacement waits `consolidateAfter` in the candidates map (node
/// names cannot hold a `:`).
fn replace_key(names: &[String]) -> String {
    format!("replace:{}", names.join(","))
}

/// Keep only the replacement candidates still planned (`keys`).
fn retain_replacements(candidates: &mut BTreeMap<String, Instant>, keys: &[String]) {
    candidates.retain(|k, _| !k.starts_with("replace:") || keys.contains(k));
}

/// The planned replacements to launch now: waited `consolidateAfter`, within the `left` nodes the
/// budgets allow, on a group that can adopt one more instance. Also the notes on the ones held back.
fn launches(
    inputs: &Inputs,
    settings: &Settings,
    planned: &[(consolidation::Replacement, Vec<String>)],
    candidates: &mut BTreeMap<String, Instant>,
    clock: Instant,
    mut left: usize,
) -> (Vec<Start>, Vec<String>) {
    let keys: Vec<String> = planned
        .iter()
        .map(|(_, names)| replace_key(names))
        .collect();
    retain_replacements(candidates, &keys);
    let (mut starts, mut notes) = (Vec::new(), Vec::new());
    let mut growth: BTreeMap<&str, i32> = BTreeMap::new();
    for ((r, names), key) in planned.iter().zip(&keys) {
        let since = *candidates.entry(key.clone()).or_insert(clock);
        if clock.saturating_duration_since(since) < settings.consolidate_after {
            continue;
        }
        if r.replace.len() > left {
            notes.push(format!(
                "replacing {} waits: the budget allows {left} more nodes in disruption",
                names.join(", ")
            ));
            continue;
        }
        match start(inputs, r, names, &mut growth) {
            Ok(s) => {
                left -= r.replace.len();
                starts.push(s);
            }
            Err(note) => notes.push(note),
        }
    }
    (starts, notes)
}

/// The launch of one planned replacement into the group of its first replaced node, or why not.
fn start<'i>(
    inputs: &'i Inputs,
    r: &consolidation::Replacement,
    names: &[String],
    growth: &mut BTreeMap<&'i str, i32>,
) -> Result<Start, String> {
    let ids: Vec<String> = names.iter().filter_map(|n| inputs.instance_of(n)).collect();
    let what = format!("replacing {}", names.join(", "));
    let group = ids
        .first()
        .and_then(|id| inputs.owners.get(id))
        .and_then(|(_, g)| inputs.groups.get(g))
        .filter(|_| ids.len() == names.len())
        .ok_or_else(|| format!("{what}: a replaced node is no longer in a selected group"))?;
    let grown = growth.entry(group.name.as_str()).or_insert(0);
    if group.desired + *grown + 1 > group.max {
        return Err(format!(
            "{what}: group {} is at MaxSize {}; raise it by one so it can adopt the new node",
            group.name, group.max
        ));
    }
    if !group.zones.is_empty() && !group.zones.contains(&r.with.zone) {
        return Err(format!(
            "{what}: group {} has no subnet in {}",
            group.name, r.with.zone
        ));
    }
    let template = group.launch_template.clone().ok_or_else(|| {
        format!(
            "{what}: group {} names no launch template (launch configurations are not supported)",
            group.name
        )
    })?;
    *grown += 1;
    let record = Record {
        policy: inputs.policy.clone(),
        group: group.name.clone(),
        replaces: ids,
        reason: r.reason,
        replaced_hourly: r.replaced_hourly,
        hourly: r.with.hourly,
    };
    // The group's own tags, as it would propagate them to an instance it launched (EKS and cost
    // allocation read them); not AWS's or CloudOptim's group bookkeeping.
    let mut tags: BTreeMap<String, String> = group
        .tags
        .iter()
        .filter(|(k, _)| !k.starts_with("aws:") && !k.starts_with("cloudoptim.io/"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    tags.extend(record.tags(&inputs.cluster));
    Ok(Start {
        names: names.to_vec(),
        record,
        launch: crate::cloud::Launch {
            template,
            instance_type: r.with.instance_type.clone(),
            zone: r.with.zone.clone(),
            subnets: group.subnets.clone(),
            spot: r.with.capacity_type == crate::engine::ranking::CapacityType::Spot,
            tags,
        },
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
    candidates.retain(|n, _| n.starts_with("replace:") || current.contains(n));
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
