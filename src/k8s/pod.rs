//! A Pod in the engine's terms: its effective requests (as kube-scheduler counts them), owner and whether it may be disrupted.

use super::*;

pub(super) const KARPENTER_DO_NOT_DISRUPT: &str = "karpenter.sh/do-not-disrupt";

pub(super) const SAFE_TO_EVICT: &str = "cluster-autoscaler.kubernetes.io/safe-to-evict";

/// One pod in the engine's form, for callers that keep pods between snapshots (the operator's watch
/// stores these instead of whole Pod objects): the name of its node and the pod, or `None` for a pod
/// the planner does not count (finished, or not scheduled yet). The pod's `node` is a placeholder that
/// [`assemble`] sets.
pub fn engine_pod(pod: &core::Pod) -> Result<Option<(String, Pod)>, TranslateError> {
    let path = format!(
        "Pod {}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or("?")
    );
    let Some(node) = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .filter(|n| !n.is_empty())
    else {
        return Ok(None);
    };
    let ids: HashMap<String, NodeId> = [(node.clone(), NodeId(0))].into();
    let mut skipped = Skipped::default();
    Ok(pod_from(pod, &path, &ids, &mut skipped)?.map(|p| (node, p)))
}

/// A pod asks not to be disrupted: `cloudoptim.io/do-not-disrupt: "true"`, Karpenter's
/// `karpenter.sh/do-not-disrupt: "true"` or cluster-autoscaler's `safe-to-evict: "false"`. The planner
/// and the drain ([`crate::drain`]) share this one rule.
pub fn pod_forbids_disruption(metadata: &meta::ObjectMeta) -> bool {
    annotated_true(metadata, DO_NOT_DISRUPT)
        || annotated_true(metadata, KARPENTER_DO_NOT_DISRUPT)
        || metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(SAFE_TO_EVICT))
            .is_some_and(|v| v == "false")
}

pub(super) fn annotated_true(metadata: &meta::ObjectMeta, key: &str) -> bool {
    metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .is_some_and(|v| v == "true")
}

pub(super) fn pod_from(
    pod: &core::Pod,
    path: &str,
    node_ids: &HashMap<String, NodeId>,
    skipped: &mut Skipped,
) -> Result<Option<Pod>, TranslateError> {
    let name = name_of(&pod.metadata, path)?;
    let namespace = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_owned());
    if matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    ) {
        skipped.finished_pods += 1;
        return Ok(None);
    }
    let Some(spec) = pod.spec.as_ref() else {
        return Err(error(format!("{path}.spec"), "missing"));
    };
    let Some(node_name) = spec.node_name.as_deref().filter(|n| !n.is_empty()) else {
        skipped.pending_pods += 1;
        return Ok(None);
    };
    let Some(&node) = node_ids.get(node_name) else {
        skipped.pods_on_unknown_nodes += 1;
        return Ok(None);
    };
    let labels: Labels = pod.metadata.labels.clone().unwrap_or_default();
    let mut out = Pod::new(&namespace, &name, node, pod_requests(spec, path)?);
    out.owner = owner_kind(&pod.metadata);
    out.node_selector = spec.node_selector.clone().unwrap_or_default();
    out.tolerations = std::sync::Arc::new(tolerations(spec, path)?);
    out.do_not_disrupt = pod_forbids_disruption(&pod.metadata);
    let mut unmodelled = Vec::new();
    if let Some(affinity) = &spec.affinity {
        let at = format!("{path}.spec.affinity");
        out.node_affinity = node_affinity(affinity, &at, &mut unmodelled)?;
        let pods = pod_affinities(affinity, &at, &labels, &mut unmodelled)?;
        out.anti_affinity = pods.hostname_anti;
        out.topology_anti_affinity = pods.topology_anti;
        out.pod_affinity = pods.affinity;
    }
    out.topology_spread = spreads(spec, path, &labels, &mut unmodelled)?;
    for volume in spec.volumes.iter().flatten() {
        if volume.host_path.is_some() {
            unmodelled.push(format!("hostPath volume {}", volume.name));
        }
        if let Some(claim) = &volume.persistent_volume_claim {
            unmodelled.push(format!("persistent volume claim {}", claim.claim_name));
        }
        if volume.ephemeral.is_some() {
            unmodelled.push(format!("ephemeral volume {}", volume.name));
        }
    }
    out.unmodelled = unmodelled;
    out.labels = std::sync::Arc::new(labels);
    Ok(Some(out))
}

pub(super) fn owner_kind(metadata: &meta::ObjectMeta) -> OwnerKind {
    if metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(MIRROR))
    {
        return OwnerKind::Static;
    }
    let controller = metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true));
    match controller.map(|o| o.kind.as_str()) {
        None => OwnerKind::None,
        Some("ReplicaSet") => OwnerKind::ReplicaSet,
        Some("StatefulSet") => OwnerKind::StatefulSet,
        Some("DaemonSet") => OwnerKind::DaemonSet,
        Some("Job") => OwnerKind::Job,
        Some("Node") => OwnerKind::Static,
        Some(_) => OwnerKind::Other,
    }
}

/// CPU (millicores) and memory (bytes) a container asks for: its requests, or its limits when a
/// request is missing (what API defaulting does).
pub(super) fn container_requests(
    c: &core::Container,
    at: &str,
) -> Result<(u64, u64), TranslateError> {
    let resources = c.resources.as_ref();
    let requests = resources.and_then(|r| r.requests.as_ref());
    let limits = resources.and_then(|r| r.limits.as_ref());
    let one = |key: &str, parse: Parse| -> Result<u64, TranslateError> {
        match quantity(requests, key, &format!("{at}.requests"), parse)? {
            Some(v) => Ok(v),
            None => Ok(quantity(limits, key, &format!("{at}.limits"), parse)?.unwrap_or(0)),
        }
    };
    Ok((
        one("cpu", parse_cpu_millis)?,
        one("memory", parse_memory_bytes)?,
    ))
}

/// kube-scheduler's effective pod request (see the module docs).
pub(super) fn pod_requests(spec: &core::PodSpec, path: &str) -> Result<Resources, TranslateError> {
    let add = |a: (u64, u64), b: (u64, u64)| (a.0.saturating_add(b.0), a.1.saturating_add(b.1));
    let max = |a: (u64, u64), b: (u64, u64)| (a.0.max(b.0), a.1.max(b.1));
    let mut containers = (0, 0);
    for (i, c) in spec.containers.iter().enumerate() {
        containers = add(
            containers,
            container_requests(c, &format!("{path}.spec.containers[{i}].resources"))?,
        );
    }
    let (mut sidecars, mut init) = ((0, 0), (0, 0));
    for (i, c) in spec.init_containers.iter().flatten().enumerate() {
        let r = container_requests(c, &format!("{path}.spec.initContainers[{i}].resources"))?;
        if c.restart_policy.as_deref() == Some("Always") {
            sidecars = add(sidecars, r);
            init = max(init, sidecars);
        } else {
            init = max(init, add(sidecars, r));
        }
    }
    let mut total = max(add(containers, sidecars), init);
    let pod_level = spec.resources.as_ref().and_then(|r| r.requests.as_ref());
    let at = format!("{path}.spec.resources.requests");
    if let Some(cpu) = quantity(pod_level, "cpu", &at, parse_cpu_millis)? {
        total.0 = cpu;
    }
    if let Some(memory) = quantity(pod_level, "memory", &at, parse_memory_bytes)? {
        total.1 = memory;
    }
    let overhead = spec.overhead.as_ref();
    let at = format!("{path}.spec.overhead");
    total = add(
        total,
        (
            quantity(overhead, "cpu", &at, parse_cpu_millis)?.unwrap_or(0),
            quantity(overhead, "memory", &at, parse_memory_bytes)?.unwrap_or(0),
        ),
    );
    Ok(Resources::pod(total.0, total.1))
}
