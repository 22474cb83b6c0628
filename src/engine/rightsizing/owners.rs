//! Which workload a pod belongs to, from owner references (the pod's, and its ReplicaSet's or Job's):
//! a ReplicaSet owned by a Deployment is that Deployment, a Job owned by a CronJob is that CronJob.
//! A bare ReplicaSet or Job is its own workload; a pod with no owner, or owned by something else, has
//! no workload to right-size.

use std::collections::BTreeMap;

/// Kinds of workload whose requests can be right-sized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WorkloadKind {
    /// apps/v1 Deployment.
    Deployment,
    /// apps/v1 StatefulSet.
    StatefulSet,
    /// apps/v1 DaemonSet.
    DaemonSet,
    /// apps/v1 ReplicaSet with no Deployment.
    ReplicaSet,
    /// batch/v1 CronJob.
    CronJob,
    /// batch/v1 Job with no CronJob.
    Job,
}

impl WorkloadKind {
    /// The Kubernetes kind.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::StatefulSet => "StatefulSet",
            WorkloadKind::DaemonSet => "DaemonSet",
            WorkloadKind::ReplicaSet => "ReplicaSet",
            WorkloadKind::CronJob => "CronJob",
            WorkloadKind::Job => "Job",
        }
    }

    /// A kind whose pod template CloudOptim may patch (annotate, apply): not a bare ReplicaSet or
    /// Job, whose template nothing reads again.
    pub fn patchable(self) -> bool {
        !matches!(self, WorkloadKind::ReplicaSet | WorkloadKind::Job)
    }

    /// The kind named `kind`, if it is one.
    pub fn parse(kind: &str) -> Option<WorkloadKind> {
        [
            WorkloadKind::Deployment,
            WorkloadKind::StatefulSet,
            WorkloadKind::DaemonSet,
            WorkloadKind::ReplicaSet,
            WorkloadKind::CronJob,
            WorkloadKind::Job,
        ]
        .into_iter()
        .find(|k| k.as_str() == kind)
    }
}

/// A workload: namespace, kind, name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Workload {
    /// Namespace.
    pub namespace: String,
    /// Kind.
    pub kind: WorkloadKind,
    /// Name.
    pub name: String,
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.namespace, self.kind.as_str(), self.name)
    }
}

/// An owner reference: kind and name (same namespace as the owned object).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OwnerRef {
    /// Kind, e.g. `ReplicaSet`.
    pub kind: String,
    /// Name.
    pub name: String,
}

/// Why a pod has no workload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OwnerError {
    /// No owner reference.
    #[error("pod {namespace}/{pod} has no owner: nothing to right-size")]
    NoOwner {
        /// Namespace.
        namespace: String,
        /// Pod.
        pod: String,
    },
    /// Owned by a kind that is not a workload (e.g. a Node for static pods).
    #[error("pod {namespace}/{pod} is owned by a {kind}, not a workload CloudOptim right-sizes")]
    Unsupported {
        /// Namespace.
        namespace: String,
        /// Pod.
        pod: String,
        /// The owner's kind.
        kind: String,
    },
}

/// The workload of pod `namespace/pod` owned by `owner`; `parents` maps a (kind, name) of a ReplicaSet
/// or Job in the namespace to its own owner, where it has one.
pub fn resolve_owner(
    namespace: &str,
    pod: &str,
    owner: Option<&OwnerRef>,
    parents: &BTreeMap<(String, String), OwnerRef>,
) -> Result<Workload, OwnerError> {
    let Some(owner) = owner else {
        return Err(OwnerError::NoOwner {
            namespace: namespace.into(),
            pod: pod.into(),
        });
    };
    let parent = parents.get(&(owner.kind.clone(), owner.name.clone()));
    let (kind, name) = match (owner.kind.as_str(), parent) {
        ("ReplicaSet", Some(p)) if p.kind == "Deployment" => (WorkloadKind::Deployment, &p.name),
        ("Job", Some(p)) if p.kind == "CronJob" => (WorkloadKind::CronJob, &p.name),
        (kind, _) => match WorkloadKind::parse(kind) {
            Some(k) if k != WorkloadKind::Deployment && k != WorkloadKind::CronJob => {
                (k, &owner.name)
            }
            _ => {
                return Err(OwnerError::Unsupported {
                    namespace: namespace.into(),
                    pod: pod.into(),
                    kind: owner.kind.clone(),
                });
            }
        },
    };
    Ok(Workload {
        namespace: namespace.into(),
        kind,
        name: name.clone(),
    })
}
