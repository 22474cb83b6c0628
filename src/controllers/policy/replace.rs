//! Replacement, replace before delete (see `engine::replacement` for the states): read the
//! replacements in flight from their instances' tags, launch new ones, and move each one step on.
//! Nothing about a replacement is kept in memory: a restarted operator reads the same tags.

use super::plan::Decision;
use super::read::Inputs;
use super::*;
use crate::cloud::{Instance, Launch};
use crate::engine::replacement::{NodeState, Record, RecordError, Step};
use crate::names::{REPLACEMENT_POLICY_TAG, REPLACES_TAG};

/// A replacement in flight, as AWS and the API server show it.
#[derive(Debug, Clone)]
pub(super) struct InFlight {
    /// The new instance.
    pub(super) instance: Instance,
    /// Its tags read back (an unreadable record is reported, never acted on).
    pub(super) record: Result<Record, RecordError>,
    /// Its Node's name, once one registered.
    pub(super) node: Option<String>,
    /// Its Node's state.
    pub(super) node_state: NodeState,
    /// Workload pods on its Node, counted only while the Node is not Ready (see [`pods_at_stake`]).
    pub(super) pods_on_new: usize,
}

/// A replacement to launch.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Start {
    /// The nodes it replaces.
    pub(super) names: Vec<String>,
    /// What its tags record.
    pub(super) record: Record,
    /// The launch.
    pub(super) launch: Launch,
}

/// This policy's replacements in flight: running `instances` (this cluster's) tagged with a
/// replacement of `policy`, with their Nodes' readiness (read from the API server: the node cache keeps
/// no conditions).
pub(super) async fn read_in_flight<C: Cloud>(
    ctx: &Context<C>,
    policy: &str,
    nodes_by_instance: &BTreeMap<String, String>,
    instances: &[crate::cloud::Instance],
) -> Result<Vec<InFlight>, Error> {
    let nodes = Api::<Node>::all(ctx.client.clone());
    let mut found = Vec::new();
    for instance in instances {
        let live = matches!(instance.state.as_str(), "pending" | "running");
        let mine = instance
            .tags
            .get(REPLACEMENT_POLICY_TAG)
            .map(String::as_str)
            == Some(policy);
        if !live || !mine || !instance.tags.contains_key(REPLACES_TAG) {
            continue;
        }
        let Some(record) = Record::from_tags(&instance.tags) else {
            continue;
        };
        let node = nodes_by_instance.get(&instance.id).cloned();
        let node_state = match &node {
            None => NodeState::Missing,
            Some(name) => match nodes.get_opt(name).await? {
                Some(n) if node_ready(&n) => NodeState::Ready,
                Some(_) => NodeState::NotReady,
                None => NodeState::Missing,
            },
        };
        let pods_on_new = match (&node, node_state) {
            (Some(name), NodeState::NotReady) => pods_at_stake(ctx, name).await?,
            _ => 0,
        };
        found.push(InFlight {
            instance: instance.clone(),
            record,
            node,
            node_state,
            pods_on_new,
        });
    }
    Ok(found)
}

/// The pods an abort would kill on a new Node that is not Ready: those a drain would evict (the drain's
/// own rule, [`crate::drain::PodFacts::evictable`]). Read from the API server (the pod cache keeps no
/// deletion marks), and only for a replacement whose Node is not Ready, which is rare and short.
async fn pods_at_stake<C: Cloud>(ctx: &Context<C>, node: &str) -> Result<usize, Error> {
    let pods = Api::<Pod>::all(ctx.client.clone())
        .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
        .await?;
    Ok(pods
        .items
        .iter()
        .filter(|p| crate::drain::pod_facts(p).evictable())
        .count())
}

/// The Node's `Ready` condition is True.
fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// What the replacement steps of one pass did, for the status.
#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct Done {
    /// Replacements finished.
    pub(super) replaced: u32,
    /// Replacements aborted.
    pub(super) aborted: u32,
    /// Their savings, USD per hour.
    pub(super) saved_hourly: f64,
    /// Instances launched in this pass.
    pub(super) launched: Vec<(String, Start)>,
}

/// Move each replacement in flight one step on (the drains of `Step::Drain` are run by the caller
/// with the other removals), then launch the new ones.
pub(super) async fn advance<C: Cloud>(
    pctx: &PolicyContext<C>,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    inputs: &Inputs,
    decision: &Decision,
    notes: &mut Vec<String>,
) -> Done {
    let mut done = Done::default();
    for r in &inputs.replacements {
        if let Err(e) = &r.record {
            notes.push(format!("instance {}: {e}", r.instance.id));
        }
    }
    for (index, step) in &decision.steps {
        let r = &inputs.replacements[*index];
        let Ok(record) = &r.record else { continue };
        let id = &r.instance.id;
        match step {
            Step::Attach => attach(pctx, id, record, notes).await,
            Step::WaitReady { left_secs } => notes.push(format!(
                "replacement {id} ({}) waits for its node to be Ready ({left_secs}s left)",
                r.instance.instance_type
            )),
            Step::WaitDraining => notes.push(format!(
                "replacement {id} ({}) is not Ready while the nodes it replaces are going; waiting",
                r.instance.instance_type
            )),
            Step::WaitPods { pods } => {
                // A Warning Event as well: the policy plans nothing else until this resolves (the
                // recorder folds repeats into one series).
                let note = format!(
                    "replacement {id} ({}) is not Ready but runs {pods} pod(s): it is not \
                     terminated under them; waiting for it to be Ready or for Kubernetes to move them",
                    r.instance.instance_type
                );
                pctx.base
                    .event(reference, true, "ReplacementWaiting", note.clone())
                    .await;
                notes.push(note);
            }
            Step::Drain(_) => {}
            Step::Abort => {
                if abort(pctx, reference, inputs, r, record, notes).await {
                    done.aborted += 1;
                }
            }
            Step::Finish => {
                if finish(pctx, reference, r, record, notes).await {
                    done.replaced += 1;
                    done.saved_hourly += record.savings_hourly();
                }
            }
        }
    }
    for start in &decision.launches {
        if let Some(id) = launch(pctx, reference, start, notes).await {
            done.launched.push((id, start.clone()));
        }
    }
    done
}

/// Count one replacement outcome.
fn count<C: Cloud>(pctx: &PolicyContext<C>, record: &Record, result: &str) {
    pctx.base
        .metrics
        .replacements
        .with_label_values(&[record.reason.as_str(), result])
        .inc();
}

/// Launch one replacement and have its group adopt it at once (a crash in between leaves a tagged
/// instance the next pass attaches, or terminates at the deadline).
async fn launch<C: Cloud>(
    pctx: &PolicyContext<C>,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    start: &Start,
    notes: &mut Vec<String>,
) -> Option<String> {
    let ctx = &pctx.base;
    let record = &start.record;
    let what = format!(
        "{} {} in {} (${:.4}/h) to replace {} (${:.4}/h, {})",
        if start.launch.spot {
            "Spot"
        } else {
            "on-demand"
        },
        start.launch.instance_type,
        start.launch.zone,
        record.hourly,
        start.names.join(", "),
        record.replaced_hourly,
        record.reason.as_str()
    );
    let id = match ctx.cloud.launch(&start.launch).await {
        Ok(id) => id,
        Err(e) => {
            count(pctx, record, "error");
            let note = format!("could not launch {what}: {e}");
            ctx.event(reference, true, "ReplacementFailed", note.clone())
                .await;
            notes.push(note);
            return None;
        }
    };
    count(pctx, record, "launched");
    let note = format!("launched {id}: {what}");
    ctx.event(reference, false, "ReplacementLaunched", note.clone())
        .await;
    notes.push(note);
    attach(pctx, &id, record, notes).await;
    Some(id)
}

/// AttachInstances; a failure is retried next pass (until the deadline aborts the replacement).
async fn attach<C: Cloud>(
    pctx: &PolicyContext<C>,
    id: &str,
    record: &Record,
    notes: &mut Vec<String>,
) {
    let result = pctx.base.cloud.attach_to_group(&record.group, id).await;
    pctx.base
        .metrics
        .consolidation_actions
        .with_label_values(&["attach", if result.is_ok() { "ok" } else { "error" }])
        .inc();
    if let Err(e) = result {
        notes.push(format!(
            "{id}: group {} did not adopt it yet: {e}",
            record.group
        ));
    }
}

/// The new node was not Ready in time and nothing was disrupted yet: terminate it (through the
/// group, shrinking it, when the group holds it) and delete its Node; the old nodes stay as they are.
async fn abort<C: Cloud>(
    pctx: &PolicyContext<C>,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    inputs: &Inputs,
    r: &InFlight,
    record: &Record,
    notes: &mut Vec<String>,
) -> bool {
    let ctx = &pctx.base;
    let id = &r.instance.id;
    let attached = inputs.groups.values().any(|g| g.instances.contains(id));
    let result = if attached {
        ctx.cloud.terminate_in_group(id, true).await
    } else {
        ctx.cloud
            .terminate_instances(std::slice::from_ref(id))
            .await
    };
    if let Err(e) = result {
        notes.push(format!("could not terminate replacement {id}: {e}"));
        return false;
    }
    if let Some(node) = &r.node {
        let deleted = Api::<Node>::all(ctx.client.clone())
            .delete(node, &DeleteParams::default())
            .await;
        if let Err(e) = deleted {
            tracing::warn!(node, error = %e, "could not delete the Node of an aborted replacement");
        }
    }
    count(pctx, record, "aborted");
    let note = format!(
        "replacement {id} ({}) was not Ready in time: terminated; {} left as they were",
        r.instance.instance_type,
        record.replaces.join(", ")
    );
    ctx.event(reference, true, "ReplacementAborted", note.clone())
        .await;
    notes.push(note);
    true
}

/// The replaced nodes are gone: remove the replacement tags.
async fn finish<C: Cloud>(
    pctx: &PolicyContext<C>,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    r: &InFlight,
    record: &Record,
    notes: &mut Vec<String>,
) -> bool {
    let ctx = &pctx.base;
    let id = &r.instance.id;
    if let Err(e) = ctx.cloud.untag_instance(id, &Record::done_keys()).await {
        notes.push(format!("replacement {id} is done but its tags stay: {e}"));
        return false;
    }
    count(pctx, record, "replaced");
    let note = format!(
        "replaced {} (${:.4}/h) with {id} ({}, ${:.4}/h), saving ${:.4}/h ({})",
        record.replaces.join(", "),
        record.replaced_hourly,
        r.instance.instance_type,
        record.hourly,
        record.savings_hourly(),
        record.reason.as_str()
    );
    ctx.event(reference, false, "Replaced", note.clone()).await;
    notes.push(note);
    true
}

/// The replacements in flight as the status shows them (those launched in this pass included).
pub(super) fn in_flight_status(
    inputs: &Inputs,
    decision: &Decision,
    done: &Done,
) -> Vec<crate::api::policy::ReplacementInFlight> {
    let phase = |step: Option<&Step>| match step {
        Some(Step::Drain(_) | Step::WaitDraining) => "Draining",
        Some(Step::Finish) => "Finishing",
        _ => "Launched",
    };
    let mut shown: Vec<_> = inputs
        .replacements
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let record = r.record.as_ref().ok()?;
            let step = decision.steps.iter().find(|(j, _)| *j == i).map(|(_, s)| s);
            if matches!(step, Some(Step::Abort | Step::Finish)) {
                return None;
            }
            Some(crate::api::policy::ReplacementInFlight {
                instance: r.instance.id.clone(),
                instance_type: r.instance.instance_type.clone(),
                reason: record.reason.as_str().to_string(),
                replace: record.replaces.clone(),
                phase: phase(step).to_string(),
            })
        })
        .collect();
    shown.extend(
        done.launched
            .iter()
            .map(|(id, start)| crate::api::policy::ReplacementInFlight {
                instance: id.clone(),
                instance_type: start.launch.instance_type.clone(),
                reason: start.record.reason.as_str().to_string(),
                replace: start.record.replaces.clone(),
                phase: "Launched".to_string(),
            }),
    );
    shown
}
