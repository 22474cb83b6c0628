//! Controllers: thin runtime wiring around the pure engine. Each controller is a pipeline
//! read -> validate -> plan (engine) -> apply -> status, shares one `Context`, writes status with
//! server-side apply (field manager `cloudoptim`) and records Events and metrics for every action.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use crate::cloud::Cloud;
use crate::metrics::Metrics;

pub mod catalog;
pub mod hibernation;
pub mod interruptions;
pub mod leader;
pub mod node_template;
pub mod policy;

/// The field manager of every write CloudOptim makes.
pub const FIELD_MANAGER: &str = "cloudoptim";

/// Settings of one operator process.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Cluster name: the cluster tag key is `cloudoptim.io/cluster` with this value... and instances are
    /// acted on only when they carry it.
    pub cluster_name: String,
    /// AWS region of the cluster.
    pub region: String,
    /// Change nothing anywhere, whatever the policies say.
    pub dry_run: bool,
    /// The least zombie grace periods in seconds, (instances, volumes), whatever a policy says
    /// (defaults [`crate::engine::zombies::MIN_INSTANCE_GRACE`], [`crate::engine::zombies::MIN_VOLUME_GRACE`]).
    pub zombie_grace_floors: (i64, i64),
    /// The least time a node cordoned for an interruption notice stays cordoned, whatever a policy's
    /// interruptions.releaseAfter says (default [`crate::engine::release::MIN_HOLD`]).
    pub interruption_hold_floor: std::time::Duration,
    /// The namespace the operator runs in (POD_NAMESPACE or the service account's namespace file):
    /// hibernation never puts it to sleep.
    pub own_namespace: Option<String>,
    /// The operator's pod name (`--identity` / POD_NAME): hibernation never puts the groups its
    /// replicas run on to sleep.
    pub own_pod: Option<String>,
    /// Namespaces hibernation never touches (`--protected-namespaces`, default kube-system).
    pub protected_namespaces: Vec<String>,
    /// `rightsizing.mode: Apply` may patch workloads' requests (`--rightsizing-apply`; the chart's
    /// `rightsizing.apply.enabled` also opens the workload guard for container resources).
    pub rightsizing_apply: bool,
    /// Token, CA and client certificate files for every policy's Prometheus.
    pub prometheus: crate::prometheus::PrometheusAccess,
}

/// What every reconcile gets.
pub struct Context<C: Cloud> {
    /// Kubernetes client.
    pub client: Client,
    /// The AWS calls.
    pub cloud: C,
    /// Metrics registry.
    pub metrics: Metrics,
    /// Event recorder.
    pub recorder: Recorder,
    /// Process settings.
    pub config: RunConfig,
    /// Instance types, prices and Spot Advisor data, live where possible.
    pub catalog: catalog::LiveCatalog,
}

impl<C: Cloud> Context<C> {
    /// A context with a recorder reporting as `cloudoptim`.
    pub fn new(
        client: Client,
        cloud: C,
        metrics: Metrics,
        config: RunConfig,
        catalog: catalog::LiveCatalog,
    ) -> Arc<Self> {
        let reporter = Reporter {
            controller: "cloudoptim".into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Arc::new(Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            cloud,
            metrics,
            config,
            catalog,
        })
    }

    /// The `Ready=False` condition of a failed reconcile: counted in `reconcile_errors_total`, and a
    /// Warning Event when the reason or message is new (not on every retry).
    pub async fn not_ready(
        &self,
        controller: &'static str,
        object: &k8s_openapi::api::core::v1::ObjectReference,
        previous: &[Condition],
        generation: Option<i64>,
        reason: &str,
        message: String,
    ) -> Condition {
        self.metrics
            .reconcile_errors
            .with_label_values(&[controller, reason])
            .inc();
        if previous
            .iter()
            .all(|c| c.reason != reason || c.message != message)
        {
            self.event(object, true, reason, message.clone()).await;
        }
        condition(previous, "Ready", false, reason, message, generation)
    }

    /// Record an Event about `object`; failures are logged, never fatal.
    pub async fn event(
        &self,
        object: &k8s_openapi::api::core::v1::ObjectReference,
        warning: bool,
        reason: &str,
        note: String,
    ) {
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_string(),
            note: Some(truncate_note(note)),
            action: reason.to_string(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, object).await {
            tracing::warn!(error = %e, reason, "could not record event");
        }
    }
}

/// The API server refuses an Event whose note is longer than 1024 bytes: keep the start, cut at a
/// character boundary, and say it was cut.
fn truncate_note(note: String) -> String {
    const MAX: usize = 1024;
    if note.len() <= MAX {
        return note;
    }
    let mut end = MAX - 3;
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &note[..end])
}

/// Server-side apply `status` to the cluster-scoped object `name` of kind `K`, as field manager
/// `cloudoptim` (forced: the status is ours).
pub async fn apply_status<K>(
    client: &Client,
    name: &str,
    status: &impl serde::Serialize,
) -> Result<(), kube::Error>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    kube::Api::<K>::all(client.clone())
        .patch_status(
            name,
            &kube::api::PatchParams::apply(FIELD_MANAGER).force(),
            &kube::api::Patch::Apply(&patch),
        )
        .await?;
    Ok(())
}

/// What every controller's `error_policy` does: count the failure, log it, retry after `retry`.
pub fn retry_failed(
    metrics: &Metrics,
    controller: &'static str,
    reason: &str,
    object: &str,
    error: &dyn std::fmt::Display,
    retry: std::time::Duration,
) -> kube::runtime::controller::Action {
    metrics
        .reconcile_errors
        .with_label_values(&[controller, reason])
        .inc();
    tracing::warn!(controller, object, error = %error, "reconcile failed");
    kube::runtime::controller::Action::requeue(retry)
}

/// A condition for status, keeping the previous transition time when the status did not change.
pub fn condition(
    previous: &[Condition],
    type_: &str,
    ok: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
) -> Condition {
    let status = if ok { "True" } else { "False" };
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(k8s_openapi::jiff::Timestamp::now()));
    Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message: message.into(),
        last_transition_time,
        observed_generation: generation,
    }
}

/// Labels of an object, or an empty map.
pub fn labels_of(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> BTreeMap<String, String> {
    meta.labels.clone().unwrap_or_default()
}

#[cfg(test)]
mod note_tests {
    #[test]
    fn an_event_note_is_cut_to_what_the_api_server_accepts_at_a_character_boundary() {
        assert_eq!(super::truncate_note("short".into()), "short");
        let long = "é".repeat(700);
        let cut = super::truncate_note(long);
        assert!(cut.len() <= 1024 && cut.ends_with("..."), "{}", cut.len());
    }
}
