//! validate: a policy's settings, checked (durations, budgets, the batch the budgets allow now).

use super::*;

/// `90s`, `5m`, `1h30m`, `14d` (the CRD's duration grammar, [`crate::engine::duration`]) as a
/// Duration; the error names the field.
pub fn parse_duration(field: &str, text: &str) -> Result<Duration, Error> {
    crate::engine::duration::parse(text).map_err(|e| Error::Invalid {
        field: field.to_string(),
        message: e.to_string(),
    })
}

/// A policy's settings, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Planner options (the budget is resolved per run).
    pub options: Options,
    /// Parsed budgets.
    pub budgets: Vec<Budget>,
    /// How often to plan.
    pub interval: Duration,
    /// How long a node must be a removal candidate before it is removed.
    pub consolidate_after: Duration,
    /// How long a drain may take.
    pub drain_timeout: Duration,
    /// Zombie grace period.
    pub zombie_grace: Duration,
    /// `nodes.max`.
    pub max_nodes: Option<usize>,
    /// The Spot mix, for the savings estimate.
    pub spot: SpotTarget,
    /// The margin a replacement must beat.
    pub replace_margin: f64,
    /// Replacements are carried out (`consolidation.replacement.enabled`).
    pub replace: bool,
    /// How long a new node has to become Ready.
    pub replace_ready_timeout: Duration,
}

/// Check a policy's spec and turn it into settings; errors name the field.
pub fn settings(policy: &OptimizationPolicy) -> Result<Settings, Error> {
    let spec = &policy.spec;
    let mode = match spec.consolidation.mode {
        ConsolidationMode::Off => Mode::Off,
        ConsolidationMode::WhenEmpty => Mode::WhenEmpty,
        ConsolidationMode::WhenUnderutilized => Mode::WhenUnderutilized,
    };
    let mut parsed = Vec::new();
    for (index, budget) in spec.disruption.budgets.iter().enumerate() {
        let reasons = budget
            .reasons
            .iter()
            .map(|r| match r {
                ApiReason::Empty => "Empty",
                ApiReason::Underutilized => "Underutilized",
                // Replacements are budgeted under the engine's replace-a-node reason.
                ApiReason::Replaced => "Drifted",
                ApiReason::Rightsized => "Rightsized",
            })
            .map(str::to_string)
            .collect();
        let spec = BudgetSpec {
            nodes: budget.nodes.clone(),
            schedule: budget.schedule.clone(),
            duration: budget.duration.clone(),
            time_zone: Some(budget.time_zone.clone()),
            reasons,
        };
        parsed.push(Budget::try_from(&spec).map_err(|e| Error::Budget {
            index,
            message: e.to_string(),
        })?);
    }
    // Read by the interruption intake; checked here so a bad value is this policy's Ready=False.
    parse_duration(
        "interruptions.drainDeadline",
        &spec.interruptions.drain_deadline,
    )?;
    parse_duration(
        "interruptions.releaseAfter",
        &spec.interruptions.release_after,
    )?;
    parse_duration("spot.restoreToSpotAfter", &spec.spot.restore_to_spot_after)?;
    let (min, max) = (spec.nodes.min, spec.nodes.max);
    if let (Some(min), Some(max)) = (min, max)
        && min > max
    {
        return Err(Error::Invalid {
            field: "nodes".into(),
            message: format!("min {min} is above max {max}"),
        });
    }
    Ok(Settings {
        options: Options {
            mode,
            utilization_threshold: spec.consolidation.utilization_threshold,
            aggressiveness: u8::try_from(spec.consolidation.aggressiveness.min(100)).unwrap_or(100),
            min_nodes: min.map_or(0, |m| m as usize),
            excluded_namespaces: spec.disruption.exclude_namespaces.clone(),
            budget: None,
        },
        budgets: parsed,
        interval: parse_duration("consolidation.interval", &spec.consolidation.interval)?
            .max(Duration::from_secs(1)),
        consolidate_after: parse_duration(
            "consolidation.consolidateAfter",
            &spec.consolidation.consolidate_after,
        )?,
        drain_timeout: parse_duration("disruption.drainTimeout", &spec.disruption.drain_timeout)?,
        zombie_grace: parse_duration("zombies.gracePeriod", &spec.zombies.grace_period)?,
        max_nodes: max.map(|m| m as usize),
        spot: SpotTarget {
            percentage: spec.spot.percentage,
            on_demand_base: spec.spot.on_demand_base as usize,
        },
        replace_margin: spec.consolidation.replacement.margin.clamp(0.0, 0.9),
        replace: spec.consolidation.replacement.enabled,
        replace_ready_timeout: parse_duration(
            "consolidation.replacement.readyTimeout",
            &spec.consolidation.replacement.ready_timeout,
        )?,
    })
}

/// Nodes that may be disrupted now for consolidation, from the budgets: the most restrictive active one
/// for the reasons the mode produces; no budget active = the whole scope.
pub fn batch_limit(settings: &Settings, nodes: usize, now: chrono::DateTime<Utc>) -> usize {
    let allowed = |reason| budgets::allowed_disruptions(&settings.budgets, nodes, now, reason);
    let limit = match settings.options.mode {
        Mode::WhenEmpty => allowed(DisruptionReason::Empty),
        _ => match (
            allowed(DisruptionReason::Empty),
            allowed(DisruptionReason::Underutilized),
        ) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        },
    };
    limit.unwrap_or(nodes)
}

/// Nodes that may be replaced now: the removal limit, and the budgets for `Replaced` as well.
pub fn replace_limit(settings: &Settings, nodes: usize, now: chrono::DateTime<Utc>) -> usize {
    let removals = batch_limit(settings, nodes, now);
    budgets::allowed_disruptions(&settings.budgets, nodes, now, DisruptionReason::Drifted)
        .map_or(removals, |r| r.min(removals))
}
