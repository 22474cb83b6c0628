//! Handling one message: parse, believe, dedupe, cordon, then (off the critical path) drain and flag.

use super::*;

impl<C: Cloud> Intake<C> {
    /// Handle one message: cordon, then delete it once the cordon is durable. Returns what is left to
    /// do off the critical path (drain, flag), so the handler slot is free for the next message.
    pub(super) async fn handle(
        self: &Arc<Self>,
        queue: &str,
        message: QueueMessage,
        settings: QueueSettings,
    ) -> Option<FollowUp> {
        let notice = self.believe(queue, &message, &settings).await?;
        self.count(notice.kind.metric_label());
        if let Some(sent) = message.sent_millis {
            let age = (chrono::Utc::now().timestamp_millis() - sent).max(0) as f64 / 1000.0;
            self.ctx
                .metrics
                .interruption_message_age
                .with_label_values(&[notice.kind.metric_label()])
                .observe(age);
        }
        if let NoticeKind::LaunchFailed {
            group,
            spot_capacity,
        } = &notice.kind
        {
            self.launch_failed(queue, &message, &notice, group, *spot_capacity, &settings)
                .await;
            return None;
        }
        if matches!(
            notice.kind,
            NoticeKind::LifecycleLaunch(_) | NoticeKind::LifecycleTest
        ) {
            self.lifecycle_at_once(queue, &message, &notice).await;
            return None;
        }
        let response = respond(&notice.kind, settings.rebalance);
        let Some(acted) = self.cordon_named(&notice, response, &settings).await else {
            // A cordon failed: the message stays for SQS to deliver again, and is handled again.
            if let Ok(mut d) = self.dedupe.lock() {
                d.forget(&notice.event_id);
            }
            return None;
        };
        // A terminate hook's message stays (hidden) until its action is completed: if this replica
        // dies mid-drain, SQS delivers it again and the next leader resumes the drain and completes it.
        let held = if matches!(notice.kind, NoticeKind::LifecycleTerminate(_)) {
            Some((queue.to_string(), message))
        } else {
            self.delete(queue, &message).await;
            None
        };
        Some(FollowUp {
            notice,
            nodes: acted,
            response,
            settings,
            held,
        })
    }

    /// The notice a message carries if CloudOptim believes and has not seen it: parsed, from this
    /// cluster's account and region, in time, a Health event capped to the budget, not a duplicate.
    /// Anything else is counted, logged with the message id, and deleted.
    async fn believe(
        &self,
        queue: &str,
        message: &QueueMessage,
        settings: &QueueSettings,
    ) -> Option<Notice> {
        let mut notice = match parse(&message.body) {
            Ok(notice) => notice,
            Err(e) => {
                self.count(e.metric_label());
                tracing::warn!(message_id = %message.id, error = %e, "dropping an SQS message CloudOptim does not act on");
                self.delete(queue, message).await;
                return None;
            }
        };
        let origin = Origin::of_queue(queue, &self.ctx.config.region);
        if let Err(refusal) = check(&notice, &origin, chrono::Utc::now().timestamp_millis()) {
            self.count(refusal.metric_label());
            tracing::warn!(message_id = %message.id, event_id = %notice.event_id, reason = %refusal, "refusing an SQS message");
            self.delete(queue, message).await;
            return None;
        }
        let cap = settings.health_cap(self.nodes.state().len());
        let left_out = cap_health(&mut notice, cap);
        if !left_out.is_empty() {
            self.count("capped");
            tracing::warn!(message_id = %message.id, event_id = %notice.event_id, cap, left_out = ?left_out, "an AWS Health event names more instances than the policy's budget; acting on the first only");
        }
        let first = self
            .dedupe
            .lock()
            .map(|mut d| d.first(&notice.event_id, Instant::now()))
            .unwrap_or(true);
        if !first {
            self.count("duplicate");
            tracing::debug!(event_id = %notice.event_id, "duplicate interruption notice");
            self.delete(queue, message).await;
            return None;
        }
        Some(notice)
    }

    /// A group could not launch: on a Spot capacity error (and a policy that falls back) its
    /// templates go on-demand; the message is deleted once that is recorded.
    async fn launch_failed(
        &self,
        queue: &str,
        message: &QueueMessage,
        notice: &Notice,
        group: &str,
        spot_capacity: bool,
        settings: &QueueSettings,
    ) {
        let done = match (spot_capacity, settings.fallback, settings.dry_run) {
            (true, Some(restore), false) => self.fall_back(group, restore).await,
            _ => {
                tracing::info!(group = %group, spot_capacity, fallback = settings.fallback.is_some(), dry_run = settings.dry_run, "launch failure noted; no fallback");
                Ok(())
            }
        };
        match done {
            Ok(()) => self.delete(queue, message).await,
            Err(e) => {
                tracing::warn!(group = %group, error = %e, "could not record the Spot fallback; the message stays for a retry");
                if let Ok(mut d) = self.dedupe.lock() {
                    d.forget(&notice.event_id);
                }
            }
        }
    }

    /// Taint and cordon the Node of every instance the notice names (unless the response is nothing or
    /// a dry run); the Nodes acted on, or `None` when a cordon could not be written.
    async fn cordon_named(
        &self,
        notice: &Notice,
        response: Response,
        settings: &QueueSettings,
    ) -> Option<Vec<Arc<Node>>> {
        let mut durable = true;
        let mut acted = Vec::new();
        for id in &notice.instance_ids {
            let Some(node) = self.node_for(id) else {
                tracing::info!(instance = %id, event_id = %notice.event_id, "interruption notice for an instance that is not a node of this cluster");
                continue;
            };
            let name = node.name_any();
            if response != Response::Nothing && !settings.dry_run {
                let marker = Marker::interruption(format!(
                    "{} for {id} (event {})",
                    notice.kind.metric_label(),
                    notice.event_id
                ));
                if let Err(e) = self.drainer.cordon(&name, &marker).await {
                    tracing::warn!(node = %name, error = %e, "could not cordon an interrupted node; the message stays for a retry");
                    durable = false;
                    continue;
                }
                if let Some(at) = notice.time_millis {
                    let latency =
                        (chrono::Utc::now().timestamp_millis() - at).max(0) as f64 / 1000.0;
                    self.ctx
                        .metrics
                        .interruption_cordon_latency
                        .with_label_values(&[notice.kind.metric_label()])
                        .observe(latency);
                }
            }
            tracing::info!(node = %name, instance = %id, kind = notice.kind.metric_label(), response = ?response, dry_run = settings.dry_run, "interruption notice");
            acted.push(node);
        }
        durable.then_some(acted)
    }

    /// Drain and flag what a handled message named.
    pub(super) async fn follow_up(self: &Arc<Self>, follow: FollowUp) {
        if let NoticeKind::LifecycleTerminate(action) = &follow.notice.kind {
            self.lifecycle_terminating(&follow, action).await;
            return;
        }
        for node in &follow.nodes {
            self.after_cordon(&follow.notice, node, follow.response, &follow.settings)
                .await;
        }
    }

    /// Drain (in the background), then flag and hub report: after the message is gone, off the
    /// critical path.
    async fn after_cordon(
        self: &Arc<Self>,
        notice: &Notice,
        node: &Node,
        response: Response,
        settings: &QueueSettings,
    ) {
        if settings.dry_run {
            return;
        }
        if response == Response::Drain {
            let elapsed = notice
                .time_millis
                .map(|t| chrono::Utc::now().timestamp_millis() - t)
                .and_then(|ms| u64::try_from(ms).ok())
                .map_or(Duration::ZERO, Duration::from_millis);
            let timeout = settings
                .deadline
                .saturating_sub(elapsed)
                .max(Duration::from_secs(10));
            let marker = Marker::interruption(format!(
                "{} (event {})",
                notice.kind.metric_label(),
                notice.event_id
            ));
            let (drainer, name) = (self.drainer.clone(), node.name_any());
            tokio::spawn(async move {
                let options = DrainOptions::new(timeout, true);
                match drainer.drain(&name, &marker, &options).await {
                    Ok(report) => tracing::info!(node = %name, "{report}"),
                    Err(e) => {
                        tracing::warn!(node = %name, error = %e, "drain after an interruption failed")
                    }
                }
            });
        }
        let reason = match notice.kind {
            NoticeKind::SpotInterruption => Some(RiskReason::SpotInterruption),
            NoticeKind::Rebalance => Some(RiskReason::Rebalance),
            _ => None,
        };
        if let Some(reason) = reason
            && let Err(e) = self.raise_flag(notice, node, reason).await
        {
            tracing::warn!(node = %node.name_any(), error = %e, "could not raise the SpotRiskFlag");
        }
    }
}
