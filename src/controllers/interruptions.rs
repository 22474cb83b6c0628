//! Interruption intake (DESIGN.md section 6): long-poll the SQS queue of every OptimizationPolicy that
//! names one, and for each EventBridge message: parse (engine) -> dedupe by event id (5 minutes) ->
//! map the instance to its Node (providerID) -> taint `cloudoptim.io/interrupted` and cordon -> delete
//! the message (only once the cordon is written) -> drain by the deadline (the node is going away) ->
//! raise a SpotRiskFlag for the (zone, instance type) and report it to the hub.
//!
//! Throughput: several receivers per queue and a bounded pool of handlers, so 200 simultaneous warnings
//! are cordoned in parallel; each handler's critical path is one node write. Unknown and malformed
//! messages are counted, logged with their message id and deleted: they never crash the intake and never
//! come back. A message whose cordon failed is not deleted; SQS delivers it again after its visibility
//! timeout, and the dedupe forgets it so the redelivery is handled.

mod release;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tokio::sync::{RwLock, Semaphore};

use super::node_template::group_selector;
use super::policy::{instance_id, parse_duration};
use super::{Context, FIELD_MANAGER};
use crate::api::policy::RebalanceAction;
use crate::api::risk_flag::{FlagSource, RiskReason, SpotRiskFlag, SpotRiskFlagSpec};
use crate::api::{NodeTemplate, OptimizationPolicy};
use crate::cloud::{Cloud, GroupSelector, QueueMessage};
use crate::drain::{DrainOptions, Drainer, Marker};
use crate::engine::interruption::{
    Dedupe, Notice, NoticeKind, Origin, RebalancePolicy, Response, cap_health, check, parse,
    respond,
};
use crate::engine::mix::{SPOT_FALLBACK_ANNOTATION, with_fallback};
use crate::hub::client::{HubClient, LocalReport};
use crate::retry::Backoff;

/// How long an event id is remembered.
pub const DEDUPE_TTL: Duration = Duration::from_secs(300);
/// How long a flag stays active after it was last seen (DESIGN.md 3.4).
pub const FLAG_TTL: Duration = Duration::from_secs(1800);
/// Handlers running at once (each one writes one node, then drains in the background).
const HANDLERS: usize = 64;
/// Long-poll receivers per queue.
const RECEIVERS: usize = 4;
/// How often the set of queues is re-read from the policies.
const RESCAN: Duration = Duration::from_secs(10);
/// `interruptions.releaseAfter` when no policy names a queue any more (its default).
const DEFAULT_RELEASE_AFTER: Duration = Duration::from_secs(1800);

/// What a queue's policy says.
#[derive(Debug, Clone)]
struct QueueSettings {
    rebalance: RebalancePolicy,
    deadline: Duration,
    /// `interruptions.releaseAfter`: when a node held for a notice is given back once healthy.
    release_after: Duration,
    dry_run: bool,
    /// `spot.fallbackToOnDemand`: how long a group stays on on-demand after a Spot capacity error
    /// (`spot.restoreToSpotAfter`), or `None` when the policy does not fall back.
    fallback: Option<Duration>,
    /// The policy's checked settings (its disruption budgets), when they are valid.
    policy: Option<super::policy::Settings>,
}

impl QueueSettings {
    /// The most instances one AWS Health event may name: what the policy's budgets allow at once over
    /// `nodes` nodes (at least 1; `nodes` when the budgets are invalid or absent).
    fn health_cap(&self, nodes: usize) -> usize {
        self.policy
            .as_ref()
            .map_or(nodes, |s| {
                super::policy::batch_limit(s, nodes, chrono::Utc::now())
            })
            .max(1)
    }
}

/// The receivers of one queue and the settings they read.
type Receivers = (Arc<RwLock<QueueSettings>>, Vec<tokio::task::JoinHandle<()>>);

/// What is left to do once a message is handled and deleted.
struct FollowUp {
    notice: Notice,
    nodes: Vec<Arc<Node>>,
    response: Response,
    settings: QueueSettings,
}

/// Shared state of the intake.
pub struct Intake<C: Cloud> {
    ctx: Arc<Context<C>>,
    drainer: Drainer,
    hub: Option<HubClient>,
    nodes: Store<Node>,
    dedupe: Mutex<Dedupe>,
    handlers: Arc<Semaphore>,
    /// Flag writes are serialised so concurrent reports of one (zone, type) all count.
    flags: tokio::sync::Mutex<()>,
}

impl<C: Cloud> Intake<C> {
    fn node_for(&self, instance: &str) -> Option<Arc<Node>> {
        self.nodes.state().into_iter().find(|n| {
            n.spec
                .as_ref()
                .and_then(|s| s.provider_id.as_deref())
                .and_then(instance_id)
                == Some(instance)
        })
    }

    fn count(&self, kind: &str) {
        self.ctx
            .metrics
            .interruptions
            .with_label_values(&[kind])
            .inc();
    }

    async fn delete(&self, queue: &str, message: &QueueMessage) {
        if let Err(e) = self.ctx.cloud.delete_message(queue, &message.receipt).await {
            tracing::warn!(message_id = %message.id, error = %e, "could not delete an SQS message; it will be delivered again and deduplicated");
        }
    }

    /// Handle one message: cordon, then delete it once the cordon is durable. Returns what is left to
    /// do off the critical path (drain, flag), so the handler slot is free for the next message.
    async fn handle(
        self: &Arc<Self>,
        queue: &str,
        message: QueueMessage,
        settings: QueueSettings,
    ) -> Option<FollowUp> {
        let mut notice = match parse(&message.body) {
            Ok(notice) => notice,
            Err(e) => {
                self.count(e.metric_label());
                tracing::warn!(message_id = %message.id, error = %e, "dropping an SQS message CloudOptim does not act on");
                self.delete(queue, &message).await;
                return None;
            }
        };
        // Believe only what this cluster's account and region could have sent, in time.
        let origin = Origin::of_queue(queue, &self.ctx.config.region);
        if let Err(refusal) = check(&notice, &origin, chrono::Utc::now().timestamp_millis()) {
            self.count(refusal.metric_label());
            tracing::warn!(message_id = %message.id, event_id = %notice.event_id, reason = %refusal, "refusing an SQS message");
            self.delete(queue, &message).await;
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
            self.delete(queue, &message).await;
            return None;
        }
        self.count(notice.kind.metric_label());
        if let NoticeKind::LaunchFailed {
            group,
            spot_capacity,
        } = &notice.kind
        {
            let done = match (spot_capacity, settings.fallback, settings.dry_run) {
                (true, Some(restore), false) => self.fall_back(group, restore).await,
                _ => {
                    tracing::info!(group = %group, spot_capacity, fallback = settings.fallback.is_some(), dry_run = settings.dry_run, "launch failure noted; no fallback");
                    Ok(())
                }
            };
            match done {
                Ok(()) => self.delete(queue, &message).await,
                Err(e) => {
                    tracing::warn!(group = %group, error = %e, "could not record the Spot fallback; the message stays for a retry");
                    if let Ok(mut d) = self.dedupe.lock() {
                        d.forget(&notice.event_id);
                    }
                }
            }
            return None;
        }
        let response = respond(&notice.kind, settings.rebalance);
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
            }
            tracing::info!(node = %name, instance = %id, kind = notice.kind.metric_label(), response = ?response, dry_run = settings.dry_run, "interruption notice");
            acted.push(node);
        }
        if !durable {
            if let Ok(mut d) = self.dedupe.lock() {
                d.forget(&notice.event_id);
            }
            return None;
        }
        self.delete(queue, &message).await;
        Some(FollowUp {
            notice,
            nodes: acted,
            response,
            settings,
        })
    }

    /// Drain and flag what a handled message named.
    async fn follow_up(self: &Arc<Self>, follow: FollowUp) {
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

    /// Put `group` on on-demand for `restore`: annotate every NodeTemplate bound to it (the NodeTemplate
    /// controller owns the group's MixedInstancesPolicy and applies it, then restores Spot at the end).
    async fn fall_back(&self, group: &str, restore: Duration) -> Result<(), kube::Error> {
        let ctx = &self.ctx;
        let api: Api<NodeTemplate> = Api::all(ctx.client.clone());
        let now = chrono::Utc::now().timestamp();
        let until = now + i64::try_from(restore.as_secs()).unwrap_or(i64::MAX / 2);
        let mut bound = 0;
        for template in api.list(&ListParams::default()).await?.items {
            let binds = match group_selector(&template) {
                GroupSelector::Names(names) => names.iter().any(|n| n == group),
                selector @ GroupSelector::Tags(_) => match ctx.cloud.groups(&selector).await {
                    Ok(groups) => groups.iter().any(|g| g.name == group),
                    Err(e) => {
                        tracing::warn!(template = %template.name_any(), error = %e, "could not resolve the template's groups");
                        false
                    }
                },
            };
            if !binds {
                continue;
            }
            bound += 1;
            let current = template
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(SPOT_FALLBACK_ANNOTATION))
                .map(String::as_str);
            let value = with_fallback(current, group, until, now);
            api.patch(
                &template.name_any(),
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"metadata": {"annotations": {SPOT_FALLBACK_ANNOTATION: value}}}),
                ),
            )
            .await?;
            ctx.event(
                &template.object_ref(&()),
                true,
                "SpotFallback",
                format!(
                    "Auto Scaling group {group} could not get Spot capacity; on-demand until Spot is tried again in {}s (spot.restoreToSpotAfter)",
                    restore.as_secs()
                ),
            )
            .await;
        }
        if bound == 0 {
            tracing::info!(
                group,
                "Spot capacity error for a group no NodeTemplate binds"
            );
        }
        Ok(())
    }

    async fn raise_flag(
        &self,
        notice: &Notice,
        node: &Node,
        reason: RiskReason,
    ) -> Result<(), kube::Error> {
        let labels = node.labels();
        let (Some(zone), Some(instance_type)) = (
            labels.get("topology.kubernetes.io/zone"),
            labels.get("node.kubernetes.io/instance-type"),
        ) else {
            tracing::info!(node = %node.name_any(), "no zone or instance-type label: no SpotRiskFlag");
            return Ok(());
        };
        let ctx = &self.ctx;
        let region = ctx.config.region.clone();
        let name = format!("{region}.{zone}.{instance_type}");
        let observed = notice
            .time_millis
            .and_then(|ms| Timestamp::from_millisecond(ms).ok())
            .unwrap_or_else(Timestamp::now);
        let _serial = self.flags.lock().await;
        let api: Api<SpotRiskFlag> = Api::all(ctx.client.clone());
        let existing = api.get_opt(&name).await?;
        let (first_seen, count, mut clusters) = match &existing {
            Some(flag) if flag.spec.expires_at.0 > Timestamp::now() => (
                flag.spec.first_seen.0.min(observed),
                flag.spec.count.saturating_add(1),
                flag.spec.clusters.clone(),
            ),
            _ => (observed, 1, Vec::new()),
        };
        if !clusters.contains(&ctx.config.cluster_name) {
            clusters.push(ctx.config.cluster_name.clone());
            clusters.sort();
        }
        let last_seen = existing
            .as_ref()
            .map_or(observed, |f| f.spec.last_seen.0.max(observed));
        let ttl = SignedDuration::from_secs(i64::try_from(FLAG_TTL.as_secs()).unwrap_or(1800));
        let spec = SpotRiskFlagSpec {
            region: region.clone(),
            zone: zone.clone(),
            instance_type: instance_type.clone(),
            reason,
            first_seen: Time(first_seen),
            last_seen: Time(last_seen),
            count,
            clusters,
            expires_at: Time(last_seen.checked_add(ttl).unwrap_or(last_seen)),
            source: FlagSource::Local,
        };
        let patch = json!({
            "apiVersion": "cloudoptim.io/v1alpha1",
            "kind": "SpotRiskFlag",
            "metadata": {"name": name},
            "spec": spec,
        });
        api.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
        drop(_serial);
        ctx.event(
            &node.object_ref(&()),
            true,
            "RiskFlagRaised",
            format!(
                "{:?} for {instance_type} in {zone}: SpotRiskFlag {name} (count {count}); ranking avoids it for 30 minutes",
                reason
            ),
        )
        .await;
        if let Some(hub) = &self.hub {
            hub.report(LocalReport {
                region,
                zone: zone.clone(),
                instance_type: instance_type.clone(),
                reason,
                observed_at: observed,
            });
        }
        Ok(())
    }
}

async fn receive_loop<C: Cloud>(
    intake: Arc<Intake<C>>,
    queue: String,
    settings: Arc<RwLock<QueueSettings>>,
) {
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    loop {
        match intake.ctx.cloud.receive(&queue, 10, 20).await {
            Ok(messages) => {
                backoff.reset();
                for message in messages {
                    let Ok(permit) = intake.handlers.clone().acquire_owned().await else {
                        return;
                    };
                    let (intake, queue) = (intake.clone(), queue.clone());
                    let settings = settings.read().await.clone();
                    tokio::spawn(async move {
                        let follow = intake.handle(&queue, message, settings).await;
                        drop(permit);
                        if let Some(follow) = follow {
                            intake.follow_up(follow).await;
                        }
                    });
                }
            }
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::warn!(queue = %queue, error = %e, retry_in = ?delay, "receiving interruption notices");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

fn settings_of(
    policy: &OptimizationPolicy,
    global_dry_run: bool,
) -> Option<(String, QueueSettings)> {
    let spec = &policy.spec.interruptions;
    let queue = spec.queue_url.clone()?;
    let deadline = match parse_duration("interruptions.drainDeadline", &spec.drain_deadline) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(policy = %policy.name_any(), error = %e, "using 90s");
            Duration::from_secs(90)
        }
    };
    let release_after = parse_duration("interruptions.releaseAfter", &spec.release_after)
        .unwrap_or(DEFAULT_RELEASE_AFTER);
    Some((
        queue,
        QueueSettings {
            release_after,
            rebalance: match spec.rebalance {
                RebalanceAction::Ignore => RebalancePolicy::Ignore,
                RebalanceAction::Cordon => RebalancePolicy::Cordon,
                RebalanceAction::Drain => RebalancePolicy::Drain,
            },
            deadline,
            dry_run: global_dry_run || policy.spec.dry_run,
            policy: super::policy::settings(policy).ok(),
            fallback: policy.spec.spot.fallback_to_on_demand.then(|| {
                parse_duration(
                    "spot.restoreToSpotAfter",
                    &policy.spec.spot.restore_to_spot_after,
                )
                .unwrap_or(Duration::from_secs(1800))
            }),
        },
    ))
}

/// Run the intake until `shutdown` resolves: keep one set of receivers per queue named by a policy.
/// `nodes` is the process's shared Node store ([`super::policy::node_store`]).
pub async fn run<C: Cloud>(
    ctx: Arc<Context<C>>,
    drainer: Drainer,
    hub: Option<HubClient>,
    nodes: Store<Node>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    if nodes.wait_until_ready().await.is_err() {
        tracing::warn!("node reflector stopped before its first list");
    }
    let intake = Arc::new(Intake {
        ctx: ctx.clone(),
        drainer,
        hub,
        nodes,
        dedupe: Mutex::new(Dedupe::new(DEDUPE_TTL)),
        handlers: Arc::new(Semaphore::new(HANDLERS)),
        flags: tokio::sync::Mutex::new(()),
    });
    let mut queues: HashMap<String, Receivers> = HashMap::new();
    tokio::pin!(shutdown);
    let mut release_after = DEFAULT_RELEASE_AFTER;
    loop {
        match Api::<OptimizationPolicy>::all(ctx.client.clone())
            .list(&ListParams::default())
            .await
        {
            Ok(list) => {
                let wanted: HashMap<String, QueueSettings> = list
                    .items
                    .iter()
                    .filter_map(|p| settings_of(p, ctx.config.dry_run))
                    .collect();
                // Several policies with queues: the longest hold wins (the cautious one).
                release_after = wanted
                    .values()
                    .map(|s| s.release_after)
                    .max()
                    .unwrap_or(DEFAULT_RELEASE_AFTER);
                queues.retain(|url, (_, tasks)| {
                    let keep = wanted.contains_key(url);
                    if !keep {
                        tracing::info!(queue = %url, "no policy names this queue any more; stopping its receivers");
                        tasks.iter().for_each(|t| t.abort());
                    }
                    keep
                });
                for (url, settings) in wanted {
                    if let Some((current, _)) = queues.get(&url) {
                        *current.write().await = settings;
                        continue;
                    }
                    tracing::info!(queue = %url, "receiving interruption notices");
                    let shared = Arc::new(RwLock::new(settings));
                    let tasks = (0..RECEIVERS)
                        .map(|_| {
                            tokio::spawn(receive_loop(intake.clone(), url.clone(), shared.clone()))
                        })
                        .collect();
                    queues.insert(url, (shared, tasks));
                }
            }
            Err(e) => tracing::warn!(error = %e, "listing OptimizationPolicies for their queues"),
        }
        intake.sweep(release_after).await;
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(RESCAN) => {}
        }
    }
    for (_, (_, tasks)) in queues {
        tasks.iter().for_each(|t| t.abort());
    }
}
