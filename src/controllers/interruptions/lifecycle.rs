//! Auto Scaling lifecycle hooks: the group waits on CloudOptim before it launches or terminates an
//! instance. A terminating instance's node was cordoned like a Spot warning's (and the message deleted
//! once that was durable); here it is drained, with a heartbeat on the hook while the drain runs, and
//! the action completed with CONTINUE however the drain ended (the instance goes either way). Launch
//! actions, instances that are no node of this cluster and dry runs are completed at once.
//!
//! Dry run completes hooks too: CONTINUE is the result the group takes anyway (the hook's default
//! result, as the README asks), only without waiting for the heartbeat timeout; holding it would make
//! every scale-in and scale-out of the group wait because CloudOptim is only watching.

use super::*;
use crate::cloud::{LifecycleAction, LifecycleResult};
use crate::engine::lifecycle::{HEARTBEAT_INTERVAL, drain_timeout};

impl<C: Cloud> Intake<C> {
    /// A launch action or a test notification: nothing to drain. The action is completed, the
    /// message deleted (also when the completion fails: the hook then ends at its timeout).
    pub(super) async fn lifecycle_at_once(
        &self,
        queue: &str,
        message: &QueueMessage,
        notice: &Notice,
    ) {
        if let NoticeKind::LifecycleLaunch(action) = &notice.kind {
            self.complete(action, "launch").await;
        } else {
            tracing::info!(message_id = %message.id, event_id = %notice.event_id, "Auto Scaling test notification acknowledged");
        }
        self.delete(queue, message).await;
    }

    /// A terminating instance whose node is cordoned: drain it (if it is a node and this is no dry
    /// run) with heartbeats, complete the action with CONTINUE, and only then delete the message (kept
    /// hidden meanwhile), so a replica that dies mid-drain leaves the message for the next leader.
    pub(super) async fn lifecycle_terminating(&self, follow: &FollowUp, action: &LifecycleAction) {
        self.terminating(follow, action).await;
        if let Some((queue, message)) = &follow.held {
            self.delete(queue, message).await;
        }
    }

    async fn terminating(&self, follow: &FollowUp, action: &LifecycleAction) {
        let (notice, settings) = (&follow.notice, &follow.settings);
        let Some(node) = follow.nodes.first() else {
            self.complete(action, "not_a_node").await;
            return;
        };
        let name = node.name_any();
        if settings.dry_run {
            tracing::info!(node = %name, group = %action.group, instance = %action.instance, "dry run: would drain the node before its group terminates the instance");
            self.complete(action, "dry_run").await;
            return;
        }
        let elapsed = notice
            .time_millis
            .map(|t| chrono::Utc::now().timestamp_millis() - t)
            .and_then(|ms| u64::try_from(ms).ok())
            .map_or(Duration::ZERO, Duration::from_millis);
        let options = DrainOptions::new(drain_timeout(settings.deadline, elapsed), true);
        let marker = Marker::interruption(format!(
            "{} for {} (event {})",
            notice.kind.metric_label(),
            action.instance,
            notice.event_id
        ));
        let held = follow
            .held
            .as_ref()
            .map(|(queue, message)| (queue.as_str(), message.receipt.as_str()));
        let drained = with_heartbeats(
            &self.ctx.cloud,
            action,
            held,
            self.drainer.drain(&name, &marker, &options),
        )
        .await;
        let (outcome, summary) = match &drained {
            Ok(report) if report.is_drained() => ("drained", report.to_string()),
            Ok(report) => ("drain_failed", report.to_string()),
            Err(e) => ("drain_failed", format!("the drain could not run: {e}")),
        };
        if outcome != "drained" {
            tracing::warn!(node = %name, group = %action.group, instance = %action.instance, "{summary}; completing the lifecycle action anyway, the instance is going");
        }
        let completed = self.complete(action, outcome).await;
        self.ctx
            .event(
                &node.object_ref(&()),
                outcome != "drained" || !completed,
                "LifecycleActionCompleted",
                format!(
                    "Auto Scaling group {} is terminating {}: {summary}; lifecycle hook {} {}",
                    action.group,
                    action.instance,
                    action.hook,
                    if completed {
                        "completed with CONTINUE"
                    } else {
                        "could not be completed and ends at its heartbeat timeout"
                    }
                ),
            )
            .await;
    }

    /// CompleteLifecycleAction CONTINUE, counted by `outcome` (or `complete_failed`); whether it was
    /// completed.
    async fn complete(&self, action: &LifecycleAction, outcome: &'static str) -> bool {
        let result = self
            .ctx
            .cloud
            .complete_lifecycle_action(action, LifecycleResult::Continue)
            .await;
        let label = match &result {
            Ok(()) => {
                tracing::info!(group = %action.group, hook = %action.hook, instance = %action.instance, outcome, "lifecycle action completed with CONTINUE");
                outcome
            }
            Err(e) => {
                tracing::warn!(group = %action.group, hook = %action.hook, instance = %action.instance, outcome, error = %e, "could not complete the lifecycle action; it ends at the hook's heartbeat timeout with its default result");
                "complete_failed"
            }
        };
        self.ctx
            .metrics
            .lifecycle_actions
            .with_label_values(&[label])
            .inc();
        result.is_ok()
    }
}

/// How long each heartbeat keeps a held message hidden: past the next heartbeat, with room for a slow
/// one; if the replica dies, SQS shows the message again this long after the last heartbeat.
const HELD_VISIBILITY_SECONDS: i32 = 3 * HEARTBEAT_INTERVAL.as_secs() as i32;

/// Run `work`, recording a heartbeat on `action` every [`HEARTBEAT_INTERVAL`] until it ends, and keeping
/// the `held` message (queue URL, receipt) hidden as long (a failed heartbeat is logged; the next one
/// may still keep the hook open).
pub(super) async fn with_heartbeats<C: Cloud, T>(
    cloud: &C,
    action: &LifecycleAction,
    held: Option<(&str, &str)>,
    work: impl std::future::Future<Output = T>,
) -> T {
    let mut work = std::pin::pin!(work);
    let start = tokio::time::Instant::now() + HEARTBEAT_INTERVAL;
    let mut ticks = tokio::time::interval_at(start, HEARTBEAT_INTERVAL);
    loop {
        tokio::select! {
            result = &mut work => return result,
            _ = ticks.tick() => {
                if let Err(e) = cloud.record_lifecycle_action_heartbeat(action).await {
                    tracing::warn!(group = %action.group, instance = %action.instance, error = %e, "lifecycle heartbeat failed; the hook ends at its heartbeat timeout unless a later one succeeds");
                }
                if let Some((queue, receipt)) = held
                    && let Err(e) = cloud
                        .change_message_visibility(queue, receipt, HELD_VISIBILITY_SECONDS)
                        .await
                {
                    tracing::warn!(instance = %action.instance, error = %e, "could not keep the lifecycle message hidden; SQS may deliver it again (a duplicate is dropped)");
                }
            }
        }
    }
}
