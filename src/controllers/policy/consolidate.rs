//! One consolidation pass: read -> validate -> plan -> act -> status (each step its own file).

use super::*;

/// What one reconcile found and did.
pub(super) struct Outcome {
    pub(super) status: OptimizationPolicyStatus,
    pub(super) message: String,
    pub(super) requeue: Duration,
    /// Nodes and pods planned, and how long the planner took (for logs and the scale run).
    pub(super) planned: (usize, usize, Duration),
}

/// One pass over the policy.
pub(super) async fn pass<C: Cloud>(
    policy: &OptimizationPolicy,
    pctx: &PolicyContext<C>,
) -> Result<Outcome, Error> {
    let ctx = &pctx.base;
    let previous = policy.status.clone().unwrap_or_default();
    let settings = settings(policy)?;
    let dry_run = policy.spec.dry_run || ctx.config.dry_run;
    let inputs = read::read(policy, pctx).await?;
    // Before anything acts: an unreachable Prometheus fails the pass and changes nothing.
    let usage = rightsizing::read(policy, pctx).await?;
    let started = Instant::now();
    let decision = {
        let mut candidates = pctx.candidates.lock().await;
        plan::decide(
            &inputs,
            &settings,
            &mut candidates,
            Utc::now(),
            Instant::now(),
        )?
    };
    let planned = (
        inputs.snapshot.nodes.len(),
        inputs.snapshot.pods.len(),
        started.elapsed(),
    );
    let acted = act::act(pctx, policy, &settings, &inputs, &decision, dry_run).await;
    let mut notes = acted.notes.clone();
    if let Some(max) = settings
        .max_nodes
        .filter(|m| inputs.snapshot.nodes.len() > *m)
    {
        notes.push(format!(
            "{} nodes are above nodes.max {max}; CloudOptim only removes nodes, lower the groups' MaxSize",
            inputs.snapshot.nodes.len()
        ));
    }
    let (zombies, zombie_notes) =
        handle_zombies(pctx, policy, dry_run, &settings, &inputs, &previous).await?;
    notes.extend(zombie_notes);
    let recs = usage
        .as_ref()
        .map(|usage| rightsizing::plan(usage, &inputs.snapshot.nodes));
    let mut recommendations = Vec::new();
    if let (Some(usage), Some(recs)) = (&usage, &recs) {
        // Each rollout right-sizing starts counts against the budgets like one node.
        let rollouts = budgets::allowed_disruptions(
            &settings.budgets,
            inputs.snapshot.nodes.len(),
            Utc::now(),
            DisruptionReason::Rightsized,
        );
        let changes = rightsizing::decide(usage, recs, Utc::now(), rollouts);
        let (more, status) = rightsizing::act(pctx, policy, usage, recs, &changes, dry_run).await;
        notes.extend(more);
        recommendations = status;
    }
    status::export_metrics(ctx, &policy.name_any(), &inputs, &decision, recs.as_deref());
    let in_flight = !inputs.replacements.is_empty() || !acted.replacements.launched.is_empty();
    let mut status = status::build_status(policy, &previous, &inputs, &decision, &acted, zombies);
    status.recommendations = recommendations;
    let message = status::message(&status, &inputs, &decision, dry_run, &notes);
    // A replacement in flight is looked at again soon: its deadline and its drains do not wait for
    // the next planning interval.
    let requeue = if in_flight {
        settings.interval.min(Duration::from_secs(15))
    } else {
        settings.interval
    };
    Ok(Outcome {
        status,
        message,
        requeue,
        planned,
    })
}
