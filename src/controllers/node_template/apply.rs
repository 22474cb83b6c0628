//! One pass: read the groups, policies and flags -> validate -> rank and build each group's
//! MixedInstancesPolicy (pure, `plan.rs`) -> write the groups that differ -> the status.

use super::*;

/// What a pass reads.
struct Read {
    policies: Vec<OptimizationPolicy>,
    flags: Vec<SpotRiskFlag>,
    groups: Vec<AutoScalingGroup>,
}

async fn read<C: Cloud>(template: &NodeTemplate, ctx: &Context<C>) -> Result<Read, Error> {
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
    Ok(Read {
        policies,
        flags,
        groups,
    })
}

pub(super) async fn plan_and_apply<C: Cloud>(
    template: &NodeTemplate,
    ctx: &Context<C>,
) -> Result<Outcome, Error> {
    let read = read(template, ctx).await?;
    // validate
    let governing = policy_for(template, &read.policies)?;
    let (requirements, weights) = ranking_inputs(&template.spec).map_err(Error::Requirements)?;
    // Dry run (the process flag, or the governing policy's) writes nothing into the groups.
    let dry_run = ctx.config.dry_run || governing.as_ref().is_some_and(|g| g.dry_run);
    let now = chrono::Utc::now().timestamp();
    let (flagged, next_expiry) = active_flags(&read.flags, &ctx.config.region, now);
    ctx.metrics
        .risk_flags
        .with_label_values(&["local"])
        .set(local_flags(&read.flags, now));
    // plan
    let snapshot = ctx.catalog.view(&ctx.cloud).await?;
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
    let desired = desired_groups(template, &read.groups, governing.as_ref(), &top, now);
    // apply
    let mut updated = Vec::new();
    for (group, (mixed, _)) in read.groups.iter().zip(&desired) {
        if differs(group.mixed.as_ref(), mixed) && !dry_run {
            ctx.cloud
                .update_group(&GroupUpdate {
                    name: group.name.clone(),
                    mixed: Some(mixed.clone()),
                    launch_template: group.launch_template.clone(),
                    ..GroupUpdate::default()
                })
                .await?;
            updated.push(group.name.clone());
        }
    }
    // status
    let fallbacks: Vec<(String, i64)> = read
        .groups
        .iter()
        .zip(&desired)
        .filter_map(|(g, (_, until))| until.map(|u| (g.name.clone(), u)))
        .collect();
    let note = note(
        &ranking,
        &top,
        governing.as_ref(),
        ctx.config.dry_run,
        &snapshot,
        &fallbacks,
    );
    Ok(Outcome {
        candidates: candidate_status(&ranking),
        groups: read
            .groups
            .iter()
            .zip(&desired)
            .map(|(g, (mixed, _))| group_status(g, Some(mixed)))
            .collect(),
        updated,
        requeue: requeue_for(next_expiry, &fallbacks, now),
        note,
    })
}
