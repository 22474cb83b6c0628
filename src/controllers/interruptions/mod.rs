//! Interruption intake (DESIGN.md section 6): long-poll the SQS queue of every OptimizationPolicy that
//! names one, and for each EventBridge message: parse (engine) -> dedupe by event id (5 minutes) ->
//! map the instance to its Node (providerID) -> taint `cloudoptim.io/interrupted` and cordon -> delete
//! the message (only once the cordon is written) -> drain by the deadline (the node is going away) ->
//! raise a SpotRiskFlag for the (zone, instance type) and report it to the hub. An Auto Scaling
//! lifecycle hook's terminating instance is drained the same way, with heartbeats on the hook, and
//! the action then completed (`lifecycle.rs`).
//!
//! Throughput: several receivers per queue and a bounded pool of handlers, so 200 simultaneous warnings
//! are cordoned in parallel; each handler's critical path is one node write. Unknown and malformed
//! messages are counted, logged with their message id and deleted: they never crash the intake and never
//! come back. A message whose cordon failed is not deleted; SQS delivers it again after its visibility
//! timeout, and the dedupe forgets it so the redelivery is handled.

mod flags;
mod handle;
mod lifecycle;
mod release;
#[cfg(test)]
mod tests;

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
use super::policy::parse_duration;
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
use crate::k8s::node_instance_id;
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
    /// The message, not deleted yet (a terminate hook's, until its action is completed).
    held: Option<(String, QueueMessage)>,
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
    pub(super) fn node_for(&self, instance: &str) -> Option<Arc<Node>> {
        self.nodes
            .state()
            .into_iter()
            .find(|n| node_instance_id(n) == Some(instance))
    }

    pub(super) fn count(&self, kind: &str) {
        self.ctx
            .metrics
            .interruptions
            .with_label_values(&[kind])
            .inc();
    }

    pub(super) async fn delete(&self, queue: &str, message: &QueueMessage) {
        if let Err(e) = self.ctx.cloud.delete_message(queue, &message.receipt).await {
            tracing::warn!(message_id = %message.id, error = %e, "could not delete an SQS message; it will be delivered again and deduplicated");
        }
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
