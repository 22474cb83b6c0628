//! The drain's view of pods and of the Eviction API: what a Pod means for the plan ([`pod_facts`]), the
//! eviction request, and what each answer of the API server means for the drain ([`Eviction`]).

use k8s_openapi::api::core::v1::Pod;
use serde_json::json;

use super::plan::{PodFacts, PodRef};
use crate::k8s;

/// The drain's view of a pod.
pub fn pod_facts(pod: &Pod) -> PodFacts {
    let meta = &pod.metadata;
    let mut facts = PodFacts::new(
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default(),
        meta.uid.as_deref().unwrap_or_default(),
    );
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    facts.finished = matches!(phase, Some("Succeeded" | "Failed"));
    facts.terminating = meta.deletion_timestamp.is_some();
    facts.mirror = meta
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(k8s::MIRROR));
    facts.daemon_set = meta
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && o.kind == "DaemonSet");
    facts.do_not_disrupt = k8s::pod_forbids_disruption(meta);
    if let Some(spec) = &pod.spec {
        facts.priority = spec.priority.unwrap_or(0);
        facts.priority_class = spec.priority_class_name.clone();
    }
    facts
}

/// The body of the POST to a pod's `eviction` subresource, with the pod's uid as a precondition so that
/// a newer pod of the same name (a StatefulSet replica re-created elsewhere) is never evicted by a retry.
/// Built here because kube's `Api::evict` sends `delete_options` (snake case), which the API server
/// ignores, so its preconditions never apply.
pub(super) fn eviction_body(pod: &PodRef) -> Vec<u8> {
    json!({
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": pod.name, "namespace": pod.namespace},
        "deleteOptions": {"preconditions": {"uid": pod.uid}},
    })
    .to_string()
    .into_bytes()
}

/// What one answer of the Eviction API means for the drain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Eviction {
    /// 200/201: the pod is being deleted.
    Accepted,
    /// 404, or 409 on the uid precondition: the pod we meant is gone.
    Gone,
    /// Not evicted; `retry` says whether trying again may help.
    Refused {
        /// What the API server said.
        message: String,
        /// 429, 5xx, transport errors: yes. Other 4xx (forbidden, invalid): no.
        retry: bool,
        /// `metric_label` of the refusal.
        label: &'static str,
    },
}

impl Eviction {
    pub(super) fn of(result: Result<(), kube::Error>) -> Self {
        let status = match result {
            Ok(()) => return Eviction::Accepted,
            Err(kube::Error::Api(status)) => status,
            Err(other) => {
                return Eviction::Refused {
                    message: other.to_string(),
                    retry: true,
                    label: "error",
                };
            }
        };
        let message = refusal_message(&status);
        match status.code {
            404 => Eviction::Gone,
            409 if message.to_ascii_lowercase().contains("precondition") => Eviction::Gone,
            429 if status_names_budget(&status) => Eviction::Refused {
                message,
                retry: true,
                label: "pdb_blocked",
            },
            429 => Eviction::Refused {
                message,
                retry: true,
                label: "throttled",
            },
            409 | 500..=599 => Eviction::Refused {
                message,
                retry: true,
                label: "error",
            },
            _ => Eviction::Refused {
                message,
                retry: false,
                label: "error",
            },
        }
    }

    pub(super) fn metric_label(&self) -> &'static str {
        match self {
            Eviction::Accepted => "evicted",
            Eviction::Gone => "not_found",
            Eviction::Refused { label, .. } => label,
        }
    }
}

/// A 429 from a PodDisruptionBudget has a `DisruptionBudget` cause naming the budget.
fn status_names_budget(status: &kube::core::Status) -> bool {
    status
        .details
        .as_ref()
        .is_some_and(|d| d.causes.iter().any(|c| c.reason == "DisruptionBudget"))
}

/// The API server's message plus its causes ("The disruption budget web needs 2 healthy pods ...").
fn refusal_message(status: &kube::core::Status) -> String {
    let causes = status
        .details
        .as_ref()
        .map(|d| {
            d.causes
                .iter()
                .map(|c| c.message.clone())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let head = format!(
        "HTTP {}: {}",
        status.code,
        status.message.trim_end_matches('.')
    );
    if causes.is_empty() {
        head
    } else {
        format!("{head}: {}", causes.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
    use serde_json::Value;

    fn pod(annotations: &[(&str, &str)]) -> Pod {
        Pod {
            metadata: ObjectMeta {
                namespace: Some("app".into()),
                name: Some("web-1".into()),
                uid: Some("u-1".into()),
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec::default()),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                ..PodStatus::default()
            }),
        }
    }

    #[test]
    fn pod_facts_read_the_fields_the_plan_needs() {
        let mut p = pod(&[("cloudoptim.io/do-not-disrupt", "true"), (k8s::MIRROR, "x")]);
        p.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        p.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "apps/v1".into(),
            kind: "DaemonSet".into(),
            name: "agent".into(),
            uid: "ds".into(),
            controller: Some(true),
            block_owner_deletion: None,
        }]);
        if let Some(spec) = p.spec.as_mut() {
            spec.priority = Some(7);
            spec.priority_class_name = Some("system-node-critical".into());
        }
        let facts = pod_facts(&p);
        assert_eq!(facts.pod.to_string(), "app/web-1");
        assert_eq!(facts.pod.uid, "u-1");
        assert!(facts.do_not_disrupt && facts.mirror && facts.terminating && facts.daemon_set);
        assert!(facts.critical());
        assert_eq!(facts.priority, 7);
        assert!(!facts.finished);
    }

    #[test]
    fn a_plain_running_pod_is_evictable() {
        let facts = pod_facts(&pod(&[]));
        assert_eq!(facts, PodFacts::new("app", "web-1", "u-1"));
    }

    fn api_error(code: u16, message: &str, cause: Option<&str>) -> Result<(), kube::Error> {
        let causes: Vec<Value> = cause
            .map(|reason| {
                json!({"reason": reason,
                       "message": "The disruption budget web needs 2 healthy pods and has 2 currently"})
            })
            .into_iter()
            .collect();
        let status = json!({"code": code, "message": message, "details": {"causes": causes}});
        Err(kube::Error::Api(Box::new(
            serde_json::from_value(status).expect("a Status"),
        )))
    }

    #[test]
    fn a_pdb_refusal_is_retried_and_names_the_budget() {
        let answer = Eviction::of(api_error(
            429,
            "Cannot evict pod as it would violate the pod's disruption budget.",
            Some("DisruptionBudget"),
        ));
        assert_eq!(answer.metric_label(), "pdb_blocked");
        let Eviction::Refused { message, retry, .. } = answer else {
            panic!("refused")
        };
        assert!(retry);
        assert!(
            message.contains("disruption budget web needs 2"),
            "{message}"
        );
    }

    #[test]
    fn a_missing_or_replaced_pod_counts_as_gone() {
        assert_eq!(
            Eviction::of(api_error(404, "not found", None)),
            Eviction::Gone
        );
        let replaced = api_error(
            409,
            "Precondition failed: UID in precondition: a, UID in object meta: b",
            None,
        );
        assert_eq!(Eviction::of(replaced), Eviction::Gone);
    }

    #[test]
    fn forbidden_is_not_retried_but_server_errors_are() {
        let forbidden = Eviction::of(api_error(403, "forbidden", None));
        assert!(matches!(forbidden, Eviction::Refused { retry: false, .. }));
        let busy = Eviction::of(api_error(503, "unavailable", None));
        assert!(matches!(busy, Eviction::Refused { retry: true, .. }));
        let throttled = Eviction::of(api_error(429, "too many requests", None));
        assert_eq!(throttled.metric_label(), "throttled");
    }
}
