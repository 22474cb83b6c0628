//! One pass: read the groups, policies and flags -> rank -> write each group's MixedInstancesPolicy
//! when it differs -> the status.

use super::*;

pub(super) async fn plan_and_apply<C: Cloud>(
    template: &NodeTemplate,
    ctx: &Context<C>,
) -> Result<Outcome, Error> {
    // read
    let policies = Api::<OptimizationPolicy>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let flags = Api::<SpotRiskFlag>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let selector = group_selector(template);
    let mut groups = ctx.cloud.groups(&selector).await?;
    groups.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(message) = missing_groups(&selector, &groups) {
        return Err(Error::GroupsNotFound(message));
    }
    // validate
    let governing = policy_for(template, &policies)?;
    // Dry run (the process flag, or the governing policy's) writes nothing into the groups.
    let dry_run = ctx.config.dry_run || governing.as_ref().is_some_and(|g| g.dry_run);
    let requirements = engine_requirements(&template.spec.requirements);
    let weights = weights(template)?;
    let now = chrono::Utc::now().timestamp();
    let (flagged, next_expiry) = active_flags(&flags, &ctx.config.region, now);
    let local = flags
        .iter()
        .filter(|f| {
            f.spec.source == crate::api::risk_flag::FlagSource::Local
                && f.spec.expires_at.0.as_second() > now
        })
        .count();
    ctx.metrics
        .risk_flags
        .with_label_values(&["local"])
        .set(i64::try_from(local).unwrap_or(i64::MAX));
    // plan
    let snapshot = ctx.catalog.snapshot(&ctx.cloud).await?;
    let ranking = ranking::rank(
        &snapshot.catalog,
        &ctx.config.region,
        &requirements,
        weights,
        &flagged,
    )
    .map_err(Error::Requirements)?;
    let max_types = usize::try_from(template.spec.requirements.max_types).unwrap_or(20);
    let top = override_types(&ranking, &flagged, max_types);
    let bases = split_base(
        governing.as_ref().map_or(0, |g| g.mix.on_demand_base),
        groups.len(),
    );
    // apply
    let mut updated = Vec::new();
    let mut statuses = Vec::new();
    let fallback_annotation = template
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(SPOT_FALLBACK_ANNOTATION))
        .map(String::as_str);
    let mut fallbacks = Vec::new();
    for (group, base) in groups.iter().zip(bases) {
        // After a Spot capacity error the group runs on on-demand until the fallback ends.
        let fallback = fallback_until(fallback_annotation, &group.name, now);
        if let Some(until) = fallback {
            fallbacks.push((group.name.clone(), until));
        }
        let target = match &governing {
            Some(governing) => {
                let spot_percentage = if fallback.is_some() {
                    0
                } else {
                    governing.mix.spot_percentage
                };
                desired_mix(
                    &top,
                    spot_percentage,
                    base,
                    allowed(&template.spec.requirements),
                )
            }
            // No policy: the split the group has stays; only the ranked types change. A group without
            // a MixedInstancesPolicy launches on-demand only, and keeps doing so (100% on-demand).
            None => match &group.mixed {
                Some(current) => keep_split(
                    &top,
                    current.on_demand_base,
                    current.on_demand_percentage_above_base,
                ),
                None => keep_split(&top, 0, 100),
            },
        };
        let desired = MixedInstances {
            overrides: target.overrides,
            on_demand_base: target.on_demand_base,
            on_demand_percentage_above_base: target.on_demand_percentage_above_base,
            spot_allocation_strategy: Some(SPOT_ALLOCATION_STRATEGY.to_string()),
        };
        if differs(group.mixed.as_ref(), &desired) && !dry_run {
            ctx.cloud
                .update_group(&GroupUpdate {
                    name: group.name.clone(),
                    mixed: Some(desired.clone()),
                    launch_template: group.launch_template.clone(),
                    ..GroupUpdate::default()
                })
                .await?;
            updated.push(group.name.clone());
        }
        statuses.push(group_status(group, Some(&desired)));
    }
    // Re-rank when Spot prices may have moved, or as soon as a flag expires.
    let next_change = next_expiry
        .into_iter()
        .chain(fallbacks.iter().map(|(_, until)| *until))
        .min();
    let requeue = next_change
        .map(|at| Duration::from_secs(u64::try_from(at - now).unwrap_or(0) + 1))
        .map_or(RERANK_INTERVAL, |d| d.min(RERANK_INTERVAL));
    let stale = match snapshot.advisor {
        crate::cloud::spot_advisor::Freshness::Fresh => "",
        crate::cloud::spot_advisor::Freshness::Stale => {
            "; Spot Advisor refresh failed, using the last good copy"
        }
        crate::cloud::spot_advisor::Freshness::Sample => {
            "; Spot Advisor feed unavailable, using SAMPLE buckets"
        }
    };
    let fallback_note: String = fallbacks
        .iter()
        .map(|(g, until)| {
            let at = chrono::DateTime::from_timestamp(*until, 0)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_default();
            format!("; {g} on on-demand after a Spot capacity error until {at}")
        })
        .collect();
    let governance = match &governing {
        None => {
            "; no OptimizationPolicy selects this template: the groups keep their Spot/on-demand \
                 split, only the ranked instance types are written"
                .to_string()
        }
        Some(g) if g.dry_run => format!(
            "; OptimizationPolicy {} is in dry run: the groups are not changed",
            g.name
        ),
        Some(_) if ctx.config.dry_run => "; --dry-run: the groups are not changed".to_string(),
        Some(g) => format!("; Spot mix from OptimizationPolicy {}", g.name),
    };
    let note = format!(
        "{} candidates, {} flagged left out, top {}{}{}; on-demand prices: {}{}",
        ranking.candidates.len(),
        ranking.flagged_removed,
        top.iter().take(3).copied().collect::<Vec<_>>().join(", "),
        governance,
        stale,
        snapshot.prices,
        fallback_note
    );
    Ok(Outcome {
        candidates: candidate_status(&ranking),
        groups: statuses,
        updated,
        requeue,
        note,
    })
}
