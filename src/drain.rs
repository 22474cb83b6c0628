//! Drain a node safely, for every controller that takes nodes away (consolidation, interruptions):
//!
//! 1. **Cordon and taint** ([`Drainer::cordon`]): `spec.unschedulable: true` plus the taint
//!    `<key>=<by>:NoSchedule` of a [`Marker`] (`cloudoptim.io/disrupted=consolidation`,
//!    `cloudoptim.io/interrupted=interruption`) and the annotations `<key>-at` (RFC 3339) and
//!    `<key>-reason`. The taint records who drains and why, so a restarted operator finds the nodes a
//!    crashed run left cordoned ([`Drainer::marked_nodes`]) and resumes or releases them. Writes are
//!    read-modify-write merge patches carrying `metadata.resourceVersion` (the API server answers 409 if
//!    the node changed meanwhile; we read again and retry), so other taints are never clobbered;
//!    re-cordoning a marked node writes nothing.
//! 2. **Evict** through the Eviction API, never by deleting pods, in the waves [`plan`] decides
//!    (non-critical first, critical last; DaemonSet, mirror, finished and terminating pods left alone;
//!    a do-not-disrupt pod blocks the drain before anything is evicted). Each eviction carries the pod's
//!    uid as a precondition, so a newer pod of the same name (a StatefulSet replica re-created
//!    elsewhere) is never evicted by a retry. HTTP 429 (a PodDisruptionBudget refuses) is retried with a
//!    doubling backoff (1 s up to 10 s) until the deadline; 404 means the pod is already gone.
//! 3. **Wait** until the evicted pods are gone from the node (polling `spec.nodeName=<node>`), then
//!    plan again: pods that arrived meanwhile are evicted too, and the critical wave goes last. Pods
//!    already terminating when the drain starts (a crashed run's evictions, someone's delete) are waited
//!    for too: a node is drained only when none is left, and a drain whose pods are still terminating at
//!    the deadline fails instead of letting the instance be terminated under them.
//! 4. **On the deadline** (or a blocked drain) stop; if the node is not going away, release it
//!    ([`Drainer::release`]: remove our taint and annotations, uncordon unless it was cordoned before
//!    we came or another CloudOptim drain still holds it) and report [`DrainOutcome::Failed`] naming the
//!    pods that remained and why.
//!
//! The client must not retry 429 itself: kube's default client resends a 429 up to 15 times with its
//! own backoff, which hides PDB refusals and overruns deadlines. Build it with [`eviction_client`].
//!
//! Every drain records `cloudoptim_drains_total{result=ok|blocked|failed|error}`,
//! `cloudoptim_drain_duration_seconds` and `cloudoptim_evictions_total{result}` (one per Eviction API
//! answer: `evicted`, `not_found`, `pdb_blocked`, `throttled`, `error`), and, with a recorder, the Node
//! Events `Cordoned`, `Drained` and `DrainFailed`.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, future, stream};
use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Client, Resource};
use serde_json::Value;
use tokio::time::Instant;

use crate::metrics::Metrics;
use crate::retry::Backoff;

mod mark;
pub mod plan;
mod pods;

pub use mark::{
    CORDONED_ANNOTATION, DISRUPTED_TAINT, INTERRUPTED_TAINT, MarkedNode, Marker, marked,
};
pub use plan::{Blocked, DrainPlan, PodFacts, PodRef, Skip};
pub use pods::pod_facts;

use mark::{NO_SCHEDULE, cordon_patch, release_patch};
use pods::{Eviction, eviction_body};

/// Attempts of one node write that keeps meeting 409 Conflict.
const CONFLICT_ATTEMPTS: u32 = 5;

/// How one drain runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainOptions {
    /// How long the drain may take, from its start; then it stops.
    pub timeout: Duration,
    /// The caller removes the node afterwards: a failed drain leaves it cordoned. Otherwise a failed or
    /// blocked drain releases the node.
    pub node_going_away: bool,
    /// How often the pods of the node are listed while waiting for evicted pods to go.
    pub poll_interval: Duration,
    /// First wait after a refused eviction; doubles after each refusal.
    pub backoff_initial: Duration,
    /// Longest wait between two attempts to evict one pod. The API server's `Retry-After` on a PDB
    /// refusal is a fixed 10 s hint that knows nothing of when the budget frees up, so it is not used:
    /// the doubling backoff retries sooner at first and never waits longer than this cap.
    pub backoff_max: Duration,
    /// Evictions of one node in flight at once.
    pub eviction_concurrency: usize,
}

impl DrainOptions {
    /// Drain within `timeout`; `node_going_away` says whether the caller removes the node afterwards.
    pub fn new(timeout: Duration, node_going_away: bool) -> Self {
        DrainOptions {
            timeout,
            node_going_away,
            ..DrainOptions::default()
        }
    }
}

impl Default for DrainOptions {
    /// `drainTimeout`'s default of 10 minutes, node kept, 500 ms polls, backoff 1 s doubling to 10 s.
    fn default() -> Self {
        DrainOptions {
            timeout: Duration::from_secs(600),
            node_going_away: false,
            poll_interval: Duration::from_millis(500),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(10),
            eviction_concurrency: 16,
        }
    }
}

/// A pod still on the node when the drain stopped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stuck {
    /// Which pod.
    pub pod: PodRef,
    /// The last answer of the Eviction API, or what the pod was still doing.
    pub why: String,
}

/// How a drain ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DrainOutcome {
    /// Every evictable pod is gone; the node stays cordoned and tainted for the caller to remove.
    Drained,
    /// Do-not-disrupt pods forbid the drain; nothing (further) was evicted.
    Blocked {
        /// Every pod that forbids it.
        pods: Vec<PodRef>,
    },
    /// The deadline passed, or an eviction was refused for good, with pods still on the node.
    Failed {
        /// The pods that remained, each with why.
        remaining: Vec<Stuck>,
    },
}

/// What a drain did, for the caller's status, Events and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainReport {
    /// Node name.
    pub node: String,
    /// How it ended.
    pub outcome: DrainOutcome,
    /// Pods whose eviction the API server accepted (or that were already gone), in order.
    pub evicted: Vec<PodRef>,
    /// Pods left on the node by rule (DaemonSet, mirror, finished, terminating) in the last plan.
    pub skipped: Vec<(PodRef, Skip)>,
    /// How long it took.
    pub elapsed: Duration,
    /// The node was released (uncordoned, our taint removed) because the drain did not complete and
    /// the node is not going away.
    pub released: bool,
}

impl DrainReport {
    /// The drain completed.
    pub fn is_drained(&self) -> bool {
        self.outcome == DrainOutcome::Drained
    }

    /// `ok`, `blocked` or `failed`: the `result` label of `drains_total`.
    pub fn metric_label(&self) -> &'static str {
        match self.outcome {
            DrainOutcome::Drained => "ok",
            DrainOutcome::Blocked { .. } => "blocked",
            DrainOutcome::Failed { .. } => "failed",
        }
    }

    /// The Event reason: `Drained` or `DrainFailed`.
    pub fn event_reason(&self) -> &'static str {
        if self.is_drained() {
            "Drained"
        } else {
            "DrainFailed"
        }
    }
}

impl fmt::Display for DrainReport {
    /// One line a person can act on, used as the Event note.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        match &self.outcome {
            DrainOutcome::Drained => write!(
                f,
                "Drained node {}: evicted {} pods in {secs:.1}s",
                self.node,
                self.evicted.len()
            )?,
            DrainOutcome::Blocked { pods } => write!(
                f,
                "Drain of node {} blocked by do-not-disrupt pod(s) {}",
                self.node,
                join(pods.iter().map(PodRef::to_string))
            )?,
            DrainOutcome::Failed { remaining } => write!(
                f,
                "Drain of node {} stopped after {secs:.1}s with {} pod(s) remaining: {}",
                self.node,
                remaining.len(),
                join(remaining.iter().map(|s| format!("{} ({})", s.pod, s.why)))
            )?,
        }
        if !self.skipped.is_empty() {
            let skipped = self.skipped.iter().map(|(p, why)| format!("{p} ({why})"));
            write!(f, "; left alone: {}", join(skipped))?;
        }
        if self.released {
            write!(f, "; node uncordoned")?;
        }
        Ok(())
    }
}

fn join(items: impl Iterator<Item = String>) -> String {
    items.collect::<Vec<_>>().join(", ")
}

/// Why a drain could not be carried out at all.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    /// The Kubernetes client could not be built.
    #[error("building the eviction client: {0}")]
    Client(#[source] kube::Error),
    /// The node does not exist (any more).
    #[error("node {0} not found")]
    NodeNotFound(String),
    /// A Kubernetes API call failed.
    #[error("node {node}: {action}: {source}")]
    Kube {
        /// Node name.
        node: String,
        /// What we were doing ("cordoning", "listing pods").
        action: &'static str,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Every attempt to write the node met a concurrent change.
    #[error("node {node}: {action}: still conflicting after {CONFLICT_ATTEMPTS} attempts")]
    Conflict {
        /// Node name.
        node: String,
        /// What we were doing.
        action: &'static str,
    },
    /// Every drain slot of the process stayed busy until this drain's deadline.
    #[error(
        "node {node}: no drain slot free within {waited:?} (--max-concurrent-drains bounds drains per process)"
    )]
    NoSlot {
        /// Node name.
        node: String,
        /// How long it waited.
        waited: Duration,
    },
}

impl DrainError {
    /// Short label for metrics and conditions.
    pub fn metric_label(&self) -> &'static str {
        match self {
            DrainError::Client(_) => "ClientError",
            DrainError::NodeNotFound(_) => "NodeNotFound",
            DrainError::Kube { .. } => "KubernetesError",
            DrainError::Conflict { .. } => "Conflict",
            DrainError::NoSlot { .. } => "NoDrainSlot",
        }
    }

    /// The node is gone: for a caller removing it anyway, that is success.
    pub fn is_not_found(&self) -> bool {
        matches!(self, DrainError::NodeNotFound(_))
    }
}

/// A client for [`Drainer`]: `config` with kube's built-in retry turned off, so a 429 from a
/// PodDisruptionBudget reaches the drainer (which backs off within its deadline) instead of being
/// resent up to 15 times inside the client.
/// Its writes pass `fence` (leader election; [`crate::fence::Fence::open`] without one).
pub fn eviction_client(
    mut config: kube::Config,
    fence: crate::fence::Fence,
) -> Result<Client, DrainError> {
    config.default_retry = false;
    crate::fence::fenced_client(config, fence).map_err(DrainError::Client)
}

/// Decrements `drains_in_progress` when a drain ends, however it ends.
struct InProgress<'a>(&'a Metrics);

impl Drop for InProgress<'_> {
    fn drop(&mut self) {
        self.0.drains_in_progress.dec();
    }
}

/// Carries out drains. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct Drainer {
    client: Client,
    metrics: Metrics,
    recorder: Option<Recorder>,
    /// Process-wide bound on drains running at once (consolidation and interruptions together).
    slots: Arc<tokio::sync::Semaphore>,
}

/// Drains running at once per process unless set otherwise ([`Drainer::with_max_concurrent`]).
pub const DEFAULT_MAX_CONCURRENT_DRAINS: usize = 10;

impl Drainer {
    /// A drainer using `client`, which must be built by [`eviction_client`] (no built-in retry of 429).
    pub fn new(client: Client, metrics: Metrics) -> Self {
        Drainer {
            client,
            metrics,
            recorder: None,
            slots: Arc::new(tokio::sync::Semaphore::new(DEFAULT_MAX_CONCURRENT_DRAINS)),
        }
    }

    /// At most `max` drains at once in this process, whoever asks (at least one). Each drain polls
    /// its node's pods every `poll_interval`, so this bounds the API requests a burst of interruptions
    /// or a large consolidation causes.
    pub fn with_max_concurrent(mut self, max: usize) -> Self {
        self.slots = Arc::new(tokio::sync::Semaphore::new(max.max(1)));
        self
    }

    /// Also record the Node Events `Cordoned`, `Drained` and `DrainFailed`.
    pub fn with_recorder(mut self, recorder: Recorder) -> Self {
        self.recorder = Some(recorder);
        self
    }

    /// Drain `node`: cordon and mark it, evict its pods, wait until they are gone, all within
    /// `options.timeout`. A blocked or failed drain releases the node unless `options.node_going_away`.
    /// `Err` only when the drain could not be carried out (node missing, API unreachable); the node is
    /// then released on a best-effort basis under the same rule.
    pub async fn drain(
        &self,
        node: &str,
        marker: &Marker,
        options: &DrainOptions,
    ) -> Result<DrainReport, DrainError> {
        let started = Instant::now();
        let deadline = started + options.timeout;
        // Wait for a slot within the drain's own deadline; the semaphore is never closed.
        let Ok(Ok(_slot)) =
            tokio::time::timeout_at(deadline, self.slots.clone().acquire_owned()).await
        else {
            let error = DrainError::NoSlot {
                node: node.to_owned(),
                waited: options.timeout,
            };
            return Err(self.abandon(node, marker, options, error).await);
        };
        self.metrics.drains_in_progress.inc();
        let _in_progress = InProgress(&self.metrics);
        let result = match self.cordon(node, marker).await {
            Ok(()) => self.empty(node, deadline, options).await,
            Err(e) => Err(e),
        };
        let elapsed = started.elapsed();
        self.metrics
            .drain_duration
            .with_label_values(&[] as &[&str])
            .observe(elapsed.as_secs_f64());
        match result {
            Ok(emptied) => Ok(self.report(node, marker, options, emptied, elapsed).await),
            Err(e) => Err(self.abandon(node, marker, options, e).await),
        }
    }

    /// Release the node if the drain did not complete and the node stays; record and return the report.
    async fn report(
        &self,
        node: &str,
        marker: &Marker,
        options: &DrainOptions,
        emptied: Emptied,
        elapsed: Duration,
    ) -> DrainReport {
        let released = emptied.outcome != DrainOutcome::Drained
            && !options.node_going_away
            && match self.release(node, &marker.taint_key).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(node, error = %e, "could not release node after an unfinished drain");
                    false
                }
            };
        let report = DrainReport {
            node: node.to_owned(),
            outcome: emptied.outcome,
            evicted: emptied.evicted,
            skipped: emptied.skipped,
            elapsed,
            released,
        };
        self.metrics
            .drains
            .with_label_values(&[report.metric_label()])
            .inc();
        tracing::info!(node, result = report.metric_label(), "{report}");
        let warning = !report.is_drained();
        self.event(node, warning, report.event_reason(), report.to_string())
            .await;
        report
    }

    /// A drain that could not be carried out: count it and, if the node stays, release it (best effort).
    async fn abandon(
        &self,
        node: &str,
        marker: &Marker,
        options: &DrainOptions,
        error: DrainError,
    ) -> DrainError {
        self.metrics.drains.with_label_values(&["error"]).inc();
        if !options.node_going_away
            && !error.is_not_found()
            && let Err(e) = self.release(node, &marker.taint_key).await
        {
            tracing::warn!(node, error = %e, "could not release node after a drain error");
        }
        error
    }

    /// Drain every node in `nodes`, at most `concurrency` at once (at least one); results in completion
    /// order, each with its node name.
    pub async fn drain_many(
        &self,
        nodes: &[String],
        concurrency: usize,
        marker: &Marker,
        options: &DrainOptions,
    ) -> Vec<(String, Result<DrainReport, DrainError>)> {
        // Owned names, not `&String`: a closure over borrowed items makes the future's `Send` depend on
        // a higher-ranked lifetime that rustc cannot prove when a controller spawns it.
        stream::iter(nodes.iter().cloned())
            .map(|node| async move {
                let result = self.drain(&node, marker, options).await;
                (node, result)
            })
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await
    }

    /// Cordon `node` and set `marker`'s taint and annotations, leaving every other taint as it is.
    /// Idempotent: a node already marked by `marker.taint_key` keeps its original `<key>-at`, and a node
    /// already cordoned and marked is not written at all.
    pub async fn cordon(&self, node: &str, marker: &Marker) -> Result<(), DrainError> {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let changed = self
            .update_node(node, "cordoning", |n| cordon_patch(n, marker, &now))
            .await?;
        if changed {
            let note = format!(
                "Cordoned node {node} and tainted it {}={}:{NO_SCHEDULE}: {}",
                marker.taint_key, marker.by, marker.reason
            );
            tracing::info!(node, "{note}");
            self.event(node, false, "Cordoned", note).await;
        }
        Ok(())
    }

    /// Undo [`Drainer::cordon`] for `taint_key`: remove the taint and its annotations and uncordon the
    /// node, unless it was cordoned before CloudOptim came or another CloudOptim drain still holds it.
    /// Idempotent; a missing node is fine.
    pub async fn release(&self, node: &str, taint_key: &str) -> Result<(), DrainError> {
        match self
            .update_node(node, "releasing", |n| release_patch(n, taint_key))
            .await
        {
            Err(DrainError::NodeNotFound(_)) => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Every node carrying the drain taint `taint_key`: after a restart, the drains a previous run left
    /// behind, to resume or release.
    pub async fn marked_nodes(&self, taint_key: &str) -> Result<Vec<MarkedNode>, DrainError> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let list = nodes
            .list(&ListParams::default())
            .await
            .map_err(|source| DrainError::Kube {
                node: "*".to_owned(),
                action: "listing nodes",
                source,
            })?;
        Ok(list
            .items
            .iter()
            .filter_map(|n| marked(n, taint_key))
            .collect())
    }

    /// Evict the node's pods wave by wave until none is left to evict, the plan is blocked, or the
    /// deadline passes.
    async fn empty(
        &self,
        node: &str,
        deadline: Instant,
        options: &DrainOptions,
    ) -> Result<Emptied, DrainError> {
        let mut evicted = Vec::new();
        loop {
            let pods = self.pods_on(node).await?;
            let facts: Vec<PodFacts> = pods.iter().map(pod_facts).collect();
            let plan = match plan::plan(&facts) {
                Ok(plan) => plan,
                Err(Blocked { pods }) => {
                    let outcome = DrainOutcome::Blocked { pods };
                    return Ok(Emptied::new(outcome, evicted, vec![]));
                }
            };
            let Some(wave) = plan.waves.first() else {
                // Pods still shutting down (evicted by a run that crashed, or deleted by someone) keep
                // the node busy: it is drained only once they are gone, and not at all if they are
                // still there at the deadline (terminating the instance would kill them mid-shutdown).
                let terminating: Vec<PodRef> = facts
                    .iter()
                    .filter(|f| f.terminating && !f.finished && !f.daemon_set && !f.mirror)
                    .map(|f| f.pod.clone())
                    .collect();
                let lingering = if terminating.is_empty() {
                    terminating
                } else {
                    self.wait_gone(node, &terminating, deadline, options)
                        .await?
                };
                if !lingering.is_empty() {
                    let remaining = stuck(&lingering, "still terminating at the deadline");
                    let outcome = DrainOutcome::Failed { remaining };
                    return Ok(Emptied::new(outcome, evicted, plan.skipped));
                }
                return Ok(Emptied::new(DrainOutcome::Drained, evicted, plan.skipped));
            };
            if Instant::now() >= deadline {
                let remaining = stuck(&wave.pods, "not evicted before the deadline");
                let outcome = DrainOutcome::Failed { remaining };
                return Ok(Emptied::new(outcome, evicted, plan.skipped));
            }
            let refused = self.evict_wave(&wave.pods, deadline, options).await;
            let refused_uids: HashSet<&str> = refused.iter().map(|s| s.pod.uid.as_str()).collect();
            let accepted: Vec<PodRef> = wave
                .pods
                .iter()
                .filter(|p| !refused_uids.contains(p.uid.as_str()))
                .cloned()
                .collect();
            evicted.extend(accepted.iter().cloned());
            let lingering = self.wait_gone(node, &accepted, deadline, options).await?;
            if refused.is_empty() && lingering.is_empty() {
                continue;
            }
            let mut remaining = refused;
            remaining.extend(stuck(
                &lingering,
                "evicted, still terminating at the deadline",
            ));
            let outcome = DrainOutcome::Failed { remaining };
            return Ok(Emptied::new(outcome, evicted, plan.skipped));
        }
    }

    /// Evict every pod of one wave (a bounded number at once); the pods whose eviction was not
    /// accepted by the deadline, or was refused for good, with the last answer.
    async fn evict_wave(
        &self,
        pods: &[PodRef],
        deadline: Instant,
        options: &DrainOptions,
    ) -> Vec<Stuck> {
        stream::iter(pods.iter().cloned())
            .map(|pod| async move {
                let why = self.evict(&pod, deadline, options).await.err()?;
                Some(Stuck { pod, why })
            })
            .buffer_unordered(options.eviction_concurrency.max(1))
            .filter_map(future::ready)
            .collect()
            .await
    }

    /// Evict one pod, retrying refusals with backoff until the deadline. `Err` carries the last answer.
    async fn evict(
        &self,
        pod: &PodRef,
        deadline: Instant,
        options: &DrainOptions,
    ) -> Result<(), String> {
        let mut backoff = Backoff::new(options.backoff_initial, options.backoff_max);
        loop {
            let answer = Eviction::of(self.request_eviction(pod).await);
            self.metrics
                .evictions
                .with_label_values(&[answer.metric_label()])
                .inc();
            let why = match answer {
                Eviction::Accepted | Eviction::Gone => return Ok(()),
                Eviction::Refused {
                    message,
                    retry: false,
                    ..
                } => return Err(message),
                Eviction::Refused { message, .. } => message,
            };
            let now = Instant::now();
            if now >= deadline {
                return Err(why);
            }
            let delay = backoff.next_delay();
            tracing::debug!(pod = %pod, why, ?delay, "eviction refused; retrying");
            tokio::time::sleep_until((now + delay).min(deadline)).await;
        }
    }

    /// POST the pod's `eviction` subresource (see [`pods::eviction_body`] for why not `Api::evict`).
    async fn request_eviction(&self, pod: &PodRef) -> Result<(), kube::Error> {
        let request = kube::core::Request::new(Pod::url_path(&(), Some(&pod.namespace)))
            .create_subresource(
                "eviction",
                &pod.name,
                &PostParams::default(),
                eviction_body(pod),
            )
            .map_err(kube::Error::BuildRequest)?;
        self.client
            .request::<kube::core::Status>(request)
            .await
            .map(|_| ())
    }

    /// Poll until none of `pods` is on the node any more, or the deadline; the pods still there.
    /// A failed list is retried at the next poll: a blip must not abort a drain.
    async fn wait_gone(
        &self,
        node: &str,
        pods: &[PodRef],
        deadline: Instant,
        options: &DrainOptions,
    ) -> Result<Vec<PodRef>, DrainError> {
        let mut waiting: Vec<PodRef> = pods.to_vec();
        loop {
            match self.pods_on(node).await {
                Ok(current) => {
                    let present: HashSet<&str> = current
                        .iter()
                        .filter_map(|p| p.metadata.uid.as_deref())
                        .collect();
                    waiting.retain(|p| present.contains(p.uid.as_str()));
                    if waiting.is_empty() {
                        return Ok(waiting);
                    }
                }
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(e) => tracing::warn!(node, error = %e, "listing pods while draining; retrying"),
            }
            if Instant::now() >= deadline {
                return Ok(waiting);
            }
            tokio::time::sleep_until((Instant::now() + options.poll_interval).min(deadline)).await;
        }
    }

    async fn pods_on(&self, node: &str) -> Result<Vec<Pod>, DrainError> {
        let pods: Api<Pod> = Api::all(self.client.clone());
        let params = ListParams::default().fields(&format!("spec.nodeName={node}"));
        pods.list(&params)
            .await
            .map(|list| list.items)
            .map_err(|source| DrainError::Kube {
                node: node.to_owned(),
                action: "listing pods",
                source,
            })
    }

    /// Read the node, compute a merge patch with `change` (`None`: nothing to do) and write it under the
    /// read's resourceVersion; on 409 read again. `Ok(true)` when something was written.
    async fn update_node(
        &self,
        node: &str,
        action: &'static str,
        change: impl Fn(&Node) -> Option<Value>,
    ) -> Result<bool, DrainError> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let kube_error = |source| DrainError::Kube {
            node: node.to_owned(),
            action,
            source,
        };
        for _ in 0..CONFLICT_ATTEMPTS {
            let current = match nodes.get(node).await {
                Ok(n) => n,
                Err(kube::Error::Api(s)) if s.code == 404 => {
                    return Err(DrainError::NodeNotFound(node.to_owned()));
                }
                Err(e) => return Err(kube_error(e)),
            };
            let Some(patch) = change(&current) else {
                return Ok(false);
            };
            match nodes
                .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(kube::Error::Api(s)) if s.code == 404 => {
                    return Err(DrainError::NodeNotFound(node.to_owned()));
                }
                Err(e) => return Err(kube_error(e)),
            }
        }
        Err(DrainError::Conflict {
            node: node.to_owned(),
            action,
        })
    }

    pub(crate) async fn event(&self, node: &str, warning: bool, reason: &str, note: String) {
        let Some(recorder) = &self.recorder else {
            return;
        };
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_owned(),
            note: Some(note),
            action: reason.to_owned(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&event, &node_reference(node)).await {
            tracing::warn!(node, error = %e, reason, "could not record event");
        }
    }
}

/// What emptying a node came to, before the node is released and the drain reported.
struct Emptied {
    outcome: DrainOutcome,
    evicted: Vec<PodRef>,
    skipped: Vec<(PodRef, Skip)>,
}

impl Emptied {
    fn new(outcome: DrainOutcome, evicted: Vec<PodRef>, skipped: Vec<(PodRef, Skip)>) -> Self {
        Emptied {
            outcome,
            evicted,
            skipped,
        }
    }
}

fn stuck(pods: &[PodRef], why: &str) -> Vec<Stuck> {
    pods.iter()
        .map(|pod| Stuck {
            pod: pod.clone(),
            why: why.to_owned(),
        })
        .collect()
}

/// An Event's reference to a Node (cluster-scoped: the recorder writes into `default`).
fn node_reference(node: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".to_owned()),
        kind: Some("Node".to_owned()),
        name: Some(node.to_owned()),
        ..ObjectReference::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Compiles only if a drain can run in a spawned task (its future is `Send + 'static` once the
    /// arguments are owned), which is how controllers run drains.
    #[allow(dead_code)]
    fn drains_can_be_spawned(drainer: Drainer, marker: Marker, options: DrainOptions) {
        let many = drainer.clone();
        let (marker2, options2) = (marker.clone(), options.clone());
        tokio::spawn(async move { drainer.drain("n1", &marker, &options).await });
        tokio::spawn(async move { many.drain_many(&[], 2, &marker2, &options2).await });
    }

    #[test]
    fn the_report_names_the_pods_that_remained() {
        let pod = PodRef {
            namespace: "app".into(),
            name: "web-1".into(),
            uid: "u".into(),
        };
        let report = DrainReport {
            node: "n1".into(),
            outcome: DrainOutcome::Failed {
                remaining: vec![Stuck {
                    pod: pod.clone(),
                    why: "HTTP 429: PDB".into(),
                }],
            },
            evicted: vec![],
            skipped: vec![(pod, Skip::DaemonSet)],
            elapsed: Duration::from_secs(5),
            released: true,
        };
        assert_eq!(
            report.to_string(),
            "Drain of node n1 stopped after 5.0s with 1 pod(s) remaining: app/web-1 (HTTP 429: PDB); \
             left alone: app/web-1 (DaemonSet); node uncordoned"
        );
        assert_eq!(
            (report.metric_label(), report.event_reason()),
            ("failed", "DrainFailed")
        );
    }
}
