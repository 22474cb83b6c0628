//! act: carry out a decision - release left-behind drains over budget, report a dry run, drain and
//! remove nodes - and record Events.

use super::plan::{Decision, Removal};
use super::read::Inputs;
use super::replace::{self, Done};
use super::*;

/// What one pass carried out.
#[derive(Default)]
pub(super) struct Acted {
    /// Notes for the status message.
    pub(super) notes: Vec<String>,
    /// The last consolidation, if this pass removed nodes.
    pub(super) last: Option<ConsolidationStatus>,
    /// Nodes removed (replaced ones included).
    pub(super) nodes_removed: u32,
    /// USD per hour the removals (not the replacements) saved.
    pub(super) saved_hourly: f64,
    /// What the replacement steps did.
    pub(super) replacements: Done,
}

/// Carry out `decision`.
pub(super) async fn act<C: Cloud>(
    pctx: &PolicyContext<C>,
    policy: &OptimizationPolicy,
    settings: &Settings,
    inputs: &Inputs,
    decision: &Decision,
    dry_run: bool,
) -> Acted {
    let mut acted = Acted::default();
    let notes = &mut acted.notes;
    let reference = policy.object_ref(&());
    if dry_run {
        if let Some(note) = dry_run_note(inputs, decision) {
            pctx.base
                .event(&reference, false, "ConsolidationPlanned", note.clone())
                .await;
            notes.push(note);
        }
        if !inputs.replacements.is_empty() {
            notes.push(format!(
                "dry run: {} replacements in flight left as they are",
                inputs.replacements.len()
            ));
        }
        return acted;
    }
    release_over_budget(pctx, &reference, decision, notes).await;
    notes.extend(decision.notes.iter().cloned());
    if !decision.removals.is_empty() {
        let (removed, moved, saved, more) = remove_nodes(
            pctx,
            &decision.removals,
            settings,
            "underutilized or empty; pods fit elsewhere",
        )
        .await;
        notes.extend(more);
        if removed > 0 {
            let note = format!("removed {removed} nodes, moved {moved} pods, saving ${saved:.4}/h");
            pctx.base
                .event(&reference, false, "Consolidated", note.clone())
                .await;
            notes.push(note);
            acted.last = Some(ConsolidationStatus {
                time: Time(k8s_openapi::jiff::Timestamp::now()),
                nodes_removed: removed,
                pods_moved: moved,
                saved_hourly: (saved * 10_000.0).round() / 10_000.0,
            });
            acted.nodes_removed += removed;
            acted.saved_hourly += saved;
        }
    }
    if !decision.replace_drains.is_empty() {
        // Their savings are counted when the replacement finishes (new node's price subtracted).
        let (removed, _, _, more) = remove_nodes(
            pctx,
            &decision.replace_drains,
            settings,
            "replaced by a cheaper node (replace before delete)",
        )
        .await;
        notes.extend(more);
        acted.nodes_removed += removed;
    }
    acted.replacements = replace::advance(pctx, &reference, inputs, decision, notes).await;
    let mut candidates = pctx.candidates.lock().await;
    for removal in &decision.removals {
        candidates.remove(&removal.node);
    }
    acted
}

/// What a dry run would have removed.
fn dry_run_note(inputs: &Inputs, decision: &Decision) -> Option<String> {
    let plan = &decision.plan;
    if plan.removals.is_empty() {
        return None;
    }
    let names: Vec<&str> = plan
        .removals
        .iter()
        .map(|r| inputs.snapshot.nodes[r.node.index()].name.as_str())
        .collect();
    Some(format!(
        "dry run: would remove {} nodes ({}), moving {} pods, saving ${:.4}/h; nothing changed",
        names.len(),
        names.join(", "),
        plan.moves.len(),
        plan.savings_hourly
    ))
}

/// Release the left-behind drains the budget no longer allows (Event DrainReleased).
async fn release_over_budget<C: Cloud>(
    pctx: &PolicyContext<C>,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    decision: &Decision,
    notes: &mut Vec<String>,
) {
    let mut released = Vec::new();
    for node in &decision.over_budget {
        match pctx.drainer.release(node, DISRUPTED_TAINT).await {
            Ok(()) => released.push(node.as_str()),
            Err(e) => notes.push(format!("could not release {node}: {e}")),
        }
    }
    if !released.is_empty() {
        let note = format!(
            "released {} (a previous run was draining them; the budget now allows {} at once)",
            released.join(", "),
            decision.resumable
        );
        pctx.base
            .event(reference, false, "DrainReleased", note.clone())
            .await;
        notes.push(note);
    }
}

/// Drain `nodes` in parallel; terminate each drained one through its group (shrinking it), check the
/// group no longer holds it, and delete its Node. Returns (nodes removed, pods moved, $/h saved, notes).
async fn remove_nodes<C: Cloud>(
    pctx: &PolicyContext<C>,
    nodes: &[Removal],
    settings: &Settings,
    reason: &str,
) -> (u32, u32, f64, Vec<String>) {
    let reports = drain_all(pctx, nodes, settings, reason).await;
    let (mut removed, mut moved, mut saved, mut notes) = (0u32, 0u32, 0.0, Vec::new());
    for (node, report) in reports {
        let Some(removal) = nodes.iter().find(|r| r.node == node) else {
            continue;
        };
        match report {
            Ok(report) if report.is_drained() => {
                match terminate(&pctx.base, removal, &mut notes).await {
                    Ok(()) => {
                        removed += 1;
                        moved += u32::try_from(report.evicted.len()).unwrap_or(u32::MAX);
                        saved += removal.hourly;
                    }
                    // Left cordoned: the next run retries the termination.
                    Err(e) => notes.push(format!("{node}: drained but not terminated: {e}")),
                }
            }
            Ok(report) => notes.push(format!("{node}: {report}")),
            Err(e) => notes.push(format!("{node}: {e}")),
        }
    }
    (removed, moved, saved, notes)
}

/// Drain every node of the batch at once (one task per node: the batch is already budget-sized; owned
/// data, so the reconcile stays Send). A drain that does not finish releases its node.
async fn drain_all<C: Cloud>(
    pctx: &PolicyContext<C>,
    nodes: &[Removal],
    settings: &Settings,
    reason: &str,
) -> Vec<(String, Result<crate::drain::DrainReport, DrainError>)> {
    let marker = Marker::consolidation(reason);
    let options = DrainOptions::new(settings.drain_timeout, false);
    let mut tasks = tokio::task::JoinSet::new();
    for removal in nodes {
        let (drainer, marker, options) = (pctx.drainer.clone(), marker.clone(), options.clone());
        let name = removal.node.clone();
        tasks.spawn(async move {
            let report = drainer.drain(&name, &marker, &options).await;
            (name, report)
        });
    }
    let mut reports = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(done) => reports.push(done),
            Err(e) => tracing::warn!(error = %e, "drain task failed"),
        }
    }
    reports
}

/// Terminate a drained node's instance through its group (shrinking it), check the group no longer
/// holds it, and delete its Node (it would linger NotReady until the cloud node controller notices).
async fn terminate<C: Cloud>(
    ctx: &Context<C>,
    removal: &Removal,
    notes: &mut Vec<String>,
) -> Result<(), CloudError> {
    let Removal {
        node,
        instance,
        group,
        ..
    } = removal;
    let result = ctx.cloud.terminate_in_group(instance, true).await;
    let label = if result.is_ok() { "ok" } else { "error" };
    ctx.metrics
        .consolidation_actions
        .with_label_values(&["terminate", label])
        .inc();
    result?;
    let held = ctx
        .cloud
        .groups(&GroupSelector::Names(vec![group.clone()]))
        .await
        .map(|gs| gs.iter().any(|g| g.instances.contains(instance)));
    let verified = match held {
        Ok(false) => "ok",
        Ok(true) => {
            notes.push(format!(
                "{node}: {instance} still listed in {group} after termination"
            ));
            "pending"
        }
        Err(_) => "error",
    };
    ctx.metrics
        .consolidation_actions
        .with_label_values(&["verify", verified])
        .inc();
    let deleted = Api::<Node>::all(ctx.client.clone())
        .delete(node, &DeleteParams::default())
        .await;
    if let Err(e) = deleted {
        tracing::warn!(node, error = %e, "could not delete the Node of a terminated instance");
    }
    Ok(())
}
