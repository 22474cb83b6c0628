//! Right-sizing inputs from Kubernetes values: the policy's `spec.rightsizing` as engine settings, and
//! each pod of a snapshot with its workload and its containers' requests.
//!
//! A pod's workload comes from its controller owner reference. A snapshot holds no ReplicaSets, so a
//! ReplicaSet is taken for its Deployment when the pod's `pod-template-hash` label is the end of the
//! ReplicaSet's name (`web-5d8f7c` with hash `5d8f7c` is Deployment `web`), which is how the
//! Deployment controller names them. A Job stays a Job (a CronJob's Jobs carry no label naming it).

use super::*;
use crate::api::policy::Rightsizing;
use crate::engine::rightsizing::{Requests, Settings, Workload, WorkloadKind, apply};

/// The label the Deployment controller puts on a ReplicaSet's pods.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";

/// `spec.rightsizing` as engine settings; errors name the field.
pub fn rightsizing_settings(spec: &Rightsizing) -> Result<Settings, String> {
    let field = |name: &str, message: String| format!("spec.rightsizing.{name}: {message}");
    let buffer = spec
        .safety_buffer
        .strip_suffix('%')
        .and_then(|n| n.parse::<u32>().ok())
        .ok_or_else(|| {
            field(
                "safetyBuffer",
                format!(
                    "{:?} is not a percentage; use e.g. \"20%\"",
                    spec.safety_buffer
                ),
            )
        })?;
    let settings = Settings {
        cpu_percentile: f64::from(spec.cpu_percentile),
        memory_percentile: f64::from(spec.memory_percentile),
        buffer: f64::from(buffer) / 100.0,
        min_cpu_millis: parse_cpu_millis(&spec.min_cpu).map_err(|m| field("minCpu", m))?,
        min_memory_bytes: parse_memory_bytes(&spec.min_memory)
            .map_err(|m| field("minMemory", m))?,
        oom_factor: spec.oom_bump.factor,
        oom_minimum_bytes: parse_memory_bytes(&spec.oom_bump.minimum)
            .map_err(|m| field("oomBump.minimum", m))?,
    };
    crate::engine::duration::parse(&spec.window).map_err(|e| field("window", e.to_string()))?;
    settings
        .checked()
        .map_err(|e| format!("spec.rightsizing.{e}"))
}

/// One container of a pod: its name, requests and memory limit.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerRequests {
    /// Name.
    pub name: String,
    /// Requests (CPU millicores, memory bytes).
    pub requests: Requests,
    /// Memory limit, bytes.
    pub memory_limit: Option<u64>,
}

/// A pod, its workload (if it has one) and its containers.
#[derive(Debug, Clone, PartialEq)]
pub struct PodWorkload {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The workload, when its owner is one.
    pub workload: Option<Workload>,
    /// The name of its owner object (a ReplicaSet, a Job, ...), to match pods gone since by name.
    pub owner_name: Option<String>,
    /// Its regular containers (not init containers).
    pub containers: Vec<ContainerRequests>,
    /// It runs on a node (scheduled and not finished): it counts as a replica.
    pub running: bool,
}

/// Every Pod of a List (the text `from_list_text` reads) with its workload.
pub fn pod_workloads(text: &str) -> Result<Vec<PodWorkload>, TranslateError> {
    let documents = documents(text)?;
    let mut objects = Vec::new();
    let mut skipped = Skipped::default();
    for (d, document) in documents.into_iter().enumerate() {
        collect(
            document,
            &format!("documents[{d}]"),
            &mut objects,
            &mut skipped,
        )?;
    }
    let mut pods = Vec::new();
    for (path, object) in objects {
        if let Object::Pod(pod) = object {
            pods.push(pod_workload(&pod, &path)?);
        }
    }
    Ok(pods)
}

/// One pod with its workload and containers' requests.
pub fn pod_workload(pod: &core::Pod, path: &str) -> Result<PodWorkload, TranslateError> {
    let name = name_of(&pod.metadata, path)?;
    let namespace = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let owner = pod
        .metadata
        .owner_references
        .as_ref()
        .and_then(|o| o.iter().find(|r| r.controller == Some(true)).or(o.first()));
    let hash = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(POD_TEMPLATE_HASH));
    let workload = owner.and_then(|o| {
        let (kind, name) = match (o.kind.as_str(), hash) {
            ("ReplicaSet", Some(h)) => match o.name.strip_suffix(&format!("-{h}")) {
                Some(deployment) => (WorkloadKind::Deployment, deployment.to_owned()),
                None => (WorkloadKind::ReplicaSet, o.name.clone()),
            },
            (kind, _) => (WorkloadKind::parse(kind)?, o.name.clone()),
        };
        Some(Workload {
            namespace: namespace.clone(),
            kind,
            name,
        })
    });
    let spec = pod.spec.as_ref();
    let mut containers = Vec::new();
    for (i, c) in spec
        .map(|s| s.containers.as_slice())
        .unwrap_or(&[])
        .iter()
        .enumerate()
    {
        let at = format!("{path}.spec.containers[{i}].resources");
        let resources = c.resources.as_ref();
        let requests = resources.and_then(|r| r.requests.as_ref());
        let limits = resources.and_then(|r| r.limits.as_ref());
        containers.push(ContainerRequests {
            name: c.name.clone(),
            requests: Requests {
                cpu_millis: quantity(requests, "cpu", &format!("{at}.requests"), parse_cpu_millis)?,
                memory_bytes: quantity(
                    requests,
                    "memory",
                    &format!("{at}.requests"),
                    parse_memory_bytes,
                )?,
            },
            memory_limit: quantity(
                limits,
                "memory",
                &format!("{at}.limits"),
                parse_memory_bytes,
            )?,
        });
    }
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    let scheduled = spec
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    Ok(PodWorkload {
        namespace,
        name,
        workload,
        owner_name: owner.map(|o| o.name.clone()),
        containers,
        running: scheduled && !matches!(phase, Some("Succeeded" | "Failed")),
    })
}

/// A container's resources as `mode: Apply` sees them: as written and parsed (an unparsable quantity counts as not set: Apply
/// leaves that field alone).
pub fn applied_container(c: &core::Container) -> apply::Container {
    let resources = c.resources.clone().unwrap_or_default();
    let text =
        |map: &Option<
            BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
        >,
         key: &str| map.as_ref().and_then(|m| m.get(key)).map(|q| q.0.clone());
    let written = apply::Written {
        cpu_request: text(&resources.requests, "cpu"),
        memory_request: text(&resources.requests, "memory"),
        cpu_limit: text(&resources.limits, "cpu"),
        memory_limit: text(&resources.limits, "memory"),
    };
    let cpu = |t: &Option<String>| t.as_deref().and_then(|t| parse_cpu_millis(t).ok());
    let memory = |t: &Option<String>| t.as_deref().and_then(|t| parse_memory_bytes(t).ok());
    apply::Container {
        name: c.name.clone(),
        requests: Requests {
            cpu_millis: cpu(&written.cpu_request),
            memory_bytes: memory(&written.memory_request),
        },
        limits: Requests {
            cpu_millis: cpu(&written.cpu_limit),
            memory_bytes: memory(&written.memory_limit),
        },
        written,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &str = r#"
kind: List
items:
- kind: Pod
  metadata:
    name: web-5d8f7c-abcde
    namespace: shop
    labels: {pod-template-hash: 5d8f7c}
    ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: web-5d8f7c, uid: u, controller: true}]
  spec:
    nodeName: n1
    containers:
    - name: app
      resources: {requests: {cpu: 500m, memory: 1Gi}, limits: {memory: 2Gi}}
    - name: sidecar
- kind: Pod
  metadata:
    name: db-0
    namespace: shop
    ownerReferences: [{apiVersion: apps/v1, kind: StatefulSet, name: db, uid: u, controller: true}]
  spec: {containers: [{name: db}]}
- kind: Pod
  metadata: {name: static, namespace: kube-system}
  spec: {nodeName: n1, containers: [{name: c}]}
"#;

    #[test]
    fn pods_get_their_workload_and_requests() {
        let pods = pod_workloads(LIST).expect("parsed");
        let web = &pods[0];
        let workload = web.workload.as_ref().expect("web has a workload");
        assert_eq!(
            (workload.kind, workload.name.as_str()),
            (WorkloadKind::Deployment, "web")
        );
        assert_eq!(web.containers[0].requests.cpu_millis, Some(500));
        assert_eq!(web.containers[0].memory_limit, Some(2 << 30));
        assert_eq!(web.containers[1].requests, Requests::default());
        assert!(web.running);
        let db = pods[1].workload.as_ref().expect("db has a workload");
        assert_eq!(db.kind, WorkloadKind::StatefulSet);
        assert!(!pods[1].running, "not scheduled");
        assert_eq!(pods[2].workload, None);
    }

    #[test]
    fn crd_settings_become_engine_settings_and_bad_fields_are_named() {
        let mut spec = Rightsizing::default();
        let settings = rightsizing_settings(&spec).expect("defaults are valid");
        assert_eq!(settings.cpu_percentile, 95.0);
        assert_eq!(settings.buffer, 0.2);
        spec.min_memory = "lots".into();
        let refused = rightsizing_settings(&spec).expect_err("refused");
        assert!(
            refused.starts_with("spec.rightsizing.minMemory:"),
            "{refused}"
        );
        let mut spec = Rightsizing::default();
        spec.oom_bump.factor = 9.0;
        let refused = rightsizing_settings(&spec).expect_err("refused");
        assert!(
            refused.starts_with("spec.rightsizing.oomBump.factor"),
            "{refused}"
        );
    }
}
