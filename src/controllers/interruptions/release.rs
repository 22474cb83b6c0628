//! The cordon's lifecycle: a node held for an interruption notice whose instance stayed is given back
//! (decision in [`crate::engine::release`]), and what is held is exported as metrics.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::{Api, ResourceExt};

use super::Intake;
use crate::cloud::{CLUSTER_TAG, Cloud};
use crate::drain::{INTERRUPTED_TAINT, MarkedNode, marked};
use crate::engine::release::{Decision, Held, MarkKind, decide};
use crate::k8s::node_instance_id;

fn ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn age(since: Option<&str>, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let since = chrono::DateTime::parse_from_rfc3339(since?).ok()?;
    (now - since.with_timezone(&chrono::Utc)).to_std().ok()
}

impl<C: Cloud> Intake<C> {
    /// Export what is held, and release what is healthy again and held long enough.
    pub(super) async fn sweep(&self, release_after: Duration) {
        let now = chrono::Utc::now();
        let Some(held) = self.held_nodes().await else {
            return;
        };
        export(&self.ctx.metrics, &held, now);
        if held.is_empty() || self.ctx.config.dry_run {
            return;
        }
        self.release_healthy(held, release_after, now).await;
    }

    /// The nodes carrying CloudOptim's interruption taint, read whole (the shared Node store keeps
    /// what planning needs, not annotations or conditions); `None` when one cannot be read.
    async fn held_nodes(&self) -> Option<Vec<(Node, MarkedNode)>> {
        let tainted: Vec<String> = self
            .nodes
            .state()
            .iter()
            .filter(|n| marked(n, INTERRUPTED_TAINT).is_some())
            .map(|n| n.name_any())
            .collect();
        let api: Api<Node> = Api::all(self.ctx.client.clone());
        let mut held = Vec::new();
        for name in tainted {
            match api.get_opt(&name).await {
                Ok(Some(node)) => {
                    if let Some(mark) = marked(&node, INTERRUPTED_TAINT) {
                        held.push((node, mark));
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(node = %name, error = %e, "reading a held node; retrying next round");
                    return None;
                }
            }
        }
        Some(held)
    }

    /// Release each held node whose instance runs, whose Node is Ready and whose cordon is old enough.
    async fn release_healthy(
        &self,
        held: Vec<(Node, MarkedNode)>,
        release_after: Duration,
        now: chrono::DateTime<chrono::Utc>,
    ) {
        let metrics = &self.ctx.metrics;
        let states: HashMap<String, String> = match self
            .ctx
            .cloud
            .instances(CLUSTER_TAG, &self.ctx.config.cluster_name)
            .await
        {
            Ok(list) => list.into_iter().map(|i| (i.id, i.state)).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "describing instances to release held nodes; retrying next round");
                return;
            }
        };
        let floor = self.ctx.config.interruption_hold_floor;
        for (node, mark) in held {
            let instance = node_instance_id(&node);
            let kind = MarkKind::of_reason(mark.reason.as_deref());
            let facts = Held {
                kind,
                age: age(mark.since.as_deref(), now),
                instance_state: instance.and_then(|id| states.get(id)).map(String::as_str),
                node_ready: ready(&node),
            };
            let decision = decide(&facts, release_after, floor);
            tracing::debug!(node = %mark.name, ?decision, ?facts, "held node");
            if decision != Decision::Release {
                continue;
            }
            match self
                .drainer
                .release(&node.name_any(), INTERRUPTED_TAINT)
                .await
            {
                Ok(()) => {
                    metrics
                        .interruption_releases
                        .with_label_values(&[kind.metric_label()])
                        .inc();
                    let note = format!(
                        "uncordoned: the instance is running and the node Ready again after {} ({})",
                        kind.metric_label(),
                        mark.reason.as_deref().unwrap_or("no reason recorded"),
                    );
                    tracing::info!(node = %mark.name, "{note}");
                    self.drainer
                        .event(&mark.name, false, "InterruptionReleased", note)
                        .await;
                }
                Err(e) => {
                    tracing::warn!(node = %mark.name, error = %e, "could not release a held node; retrying next round")
                }
            }
        }
    }
}

/// `interruption_held_nodes{kind}` and `interruption_held_oldest_seconds{kind}` (every kind, zeros
/// included, so a released node's series goes back to 0).
fn export(
    metrics: &crate::metrics::Metrics,
    held: &[(Node, MarkedNode)],
    now: chrono::DateTime<chrono::Utc>,
) {
    let mut by_kind: BTreeMap<&'static str, (i64, i64)> = [
        MarkKind::SpotInterruption,
        MarkKind::Rebalance,
        MarkKind::StateChange,
        MarkKind::ScheduledChange,
        MarkKind::LifecycleTerminate,
        MarkKind::Unknown,
    ]
    .into_iter()
    .map(|k| (k.metric_label(), (0, 0)))
    .collect();
    for (_, mark) in held {
        let kind = MarkKind::of_reason(mark.reason.as_deref());
        let seconds = age(mark.since.as_deref(), now).map_or(0, |d| d.as_secs() as i64);
        let entry = by_kind.entry(kind.metric_label()).or_default();
        *entry = (entry.0 + 1, entry.1.max(seconds));
    }
    for (kind, (count, oldest)) in &by_kind {
        metrics
            .interruption_held_nodes
            .with_label_values(&[kind])
            .set(*count);
        metrics
            .interruption_held_oldest
            .with_label_values(&[kind])
            .set(*oldest);
    }
}
