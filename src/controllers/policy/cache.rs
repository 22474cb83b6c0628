//! The reflectors the controller plans from: Nodes, Pods and PDBs reduced to what the engine and the
//! drain read (a pod cache sharing label maps and tolerations between pods).

use super::*;

const KEPT_ANNOTATIONS: [&str; 6] = [
    k8s::DO_NOT_DISRUPT,
    "karpenter.sh/do-not-disrupt",
    "cluster-autoscaler.kubernetes.io/safe-to-evict",
    k8s::MIRROR,
    crate::names::DISRUPTED_AT_ANNOTATION,
    crate::names::DISRUPTED_REASON_ANNOTATION,
];

fn strip_meta(meta: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) {
    meta.managed_fields = None;
    meta.finalizers = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.retain(|k, _| KEPT_ANNOTATIONS.contains(&k.as_str()));
    }
}

/// A Node with only name, labels, kept annotations, providerID, taints, unschedulable and allocatable.
pub fn strip_node(node: &mut Node) {
    strip_meta(&mut node.metadata);
    if let Some(status) = node.status.as_mut() {
        *status = k8s_openapi::api::core::v1::NodeStatus {
            allocatable: status.allocatable.take(),
            capacity: if status.allocatable.is_none() {
                status.capacity.take()
            } else {
                None
            },
            ..Default::default()
        };
    }
}

/// A Pod with only what scheduling and draining read: placement rules, requests, owner, phase.
pub fn strip_pod(pod: &mut Pod) {
    strip_meta(&mut pod.metadata);
    if let Some(spec) = pod.spec.as_mut() {
        let slim = |c: &mut k8s_openapi::api::core::v1::Container| {
            *c = k8s_openapi::api::core::v1::Container {
                name: std::mem::take(&mut c.name),
                resources: c.resources.take().map(|r| {
                    k8s_openapi::api::core::v1::ResourceRequirements {
                        requests: r.requests,
                        ..Default::default()
                    }
                }),
                restart_policy: c.restart_policy.take(),
                ..Default::default()
            };
        };
        spec.containers.iter_mut().for_each(slim);
        if let Some(init) = spec.init_containers.as_mut() {
            init.iter_mut().for_each(slim);
        }
        spec.ephemeral_containers = None;
        if let Some(volumes) = spec.volumes.as_mut() {
            volumes.retain(|v| {
                v.host_path.is_some()
                    || v.persistent_volume_claim.is_some()
                    || v.ephemeral.is_some()
            });
            for v in volumes.iter_mut() {
                *v = k8s_openapi::api::core::v1::Volume {
                    name: std::mem::take(&mut v.name),
                    host_path: v.host_path.take(),
                    persistent_volume_claim: v.persistent_volume_claim.take(),
                    ephemeral: v.ephemeral.take().map(|_| Default::default()),
                    ..Default::default()
                };
            }
        }
    }
    if let Some(status) = pod.status.as_mut() {
        *status = k8s_openapi::api::core::v1::PodStatus {
            phase: status.phase.take(),
            ..Default::default()
        };
    }
}

/// A PDB without managed fields.
pub fn strip_pdb(pdb: &mut PodDisruptionBudget) {
    strip_meta(&mut pdb.metadata);
}

/// The stores the controller plans from.
pub struct Stores {
    /// Nodes.
    pub nodes: Store<Node>,
    /// Pods, already in the engine's form.
    pub pods: Arc<PodCache>,
    /// PodDisruptionBudgets.
    pub pdbs: Store<PodDisruptionBudget>,
}

/// A pod as the planner needs it: its node's name and the engine pod, or why it could not be read.
type PodEntry = (Arc<str>, Result<crate::engine::snapshot::Pod, String>);

/// Every scheduled, unfinished pod of the cluster in the engine's form, kept by a watch. Whole Pod
/// objects are several KiB each even stripped (k8s-openapi's structs are wide); the engine's form is a
/// fraction of that, which is what keeps the operator's memory in proportion at 100,000 pods.
#[derive(Default)]
pub struct PodCache {
    pub(super) pods: std::sync::RwLock<HashMap<String, PodEntry>>,
}

/// One shared copy of each distinct label map and toleration list: the pods of a ReplicaSet carry the
/// same labels, and almost every pod the same two default tolerations.
#[derive(Default)]
struct Interner {
    labels: std::collections::HashSet<Arc<crate::engine::snapshot::Labels>>,
    tolerations: std::collections::HashSet<Arc<Vec<crate::engine::snapshot::Toleration>>>,
    nodes: std::collections::HashSet<Arc<str>>,
}

impl Interner {
    fn node(&mut self, name: &mut Arc<str>) {
        match self.nodes.get(&**name) {
            Some(shared) => *name = shared.clone(),
            None => {
                self.nodes.insert(name.clone());
            }
        }
    }

    fn intern(&mut self, pod: &mut crate::engine::snapshot::Pod) {
        match self.labels.get(&*pod.labels) {
            Some(shared) => pod.labels = shared.clone(),
            None => {
                self.labels.insert(pod.labels.clone());
            }
        }
        match self.tolerations.get(&*pod.tolerations) {
            Some(shared) => pod.tolerations = shared.clone(),
            None => {
                self.tolerations.insert(pod.tolerations.clone());
            }
        }
    }

    /// Forget maps no pod uses any more (only the interner holds them).
    fn sweep(&mut self) {
        self.labels.retain(|l| Arc::strong_count(l) > 1);
        self.tolerations.retain(|t| Arc::strong_count(t) > 1);
        self.nodes.retain(|n| Arc::strong_count(n) > 1);
    }
}

fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

fn pod_entry(pod: &Pod) -> Option<PodEntry> {
    let node = pod
        .spec
        .as_ref()?
        .node_name
        .clone()
        .filter(|n| !n.is_empty())?;
    match k8s::engine_pod(pod) {
        Ok(Some((node, pod))) => Some((node.into(), Ok(pod))),
        Ok(None) => None,
        Err(e) => Some((node.into(), Err(e.to_string()))),
    }
}

fn apply_pod(map: &mut HashMap<String, PodEntry>, interner: &mut Interner, pod: &Pod) {
    match pod_entry(pod) {
        Some(mut entry) => {
            interner.node(&mut entry.0);
            if let Ok(engine_pod) = entry.1.as_mut() {
                interner.intern(engine_pod);
            }
            map.insert(pod_key(pod), entry);
        }
        None => {
            map.remove(&pod_key(pod));
        }
    }
}

/// Watch every pod into a [`PodCache`]; the receiver turns true after the first full list.
pub(super) fn watch_pods(api: Api<Pod>) -> (Arc<PodCache>, tokio::sync::watch::Receiver<bool>) {
    let cache = Arc::new(PodCache::default());
    let (ready_tx, ready_rx) = tokio::sync::watch::channel(false);
    let writer = cache.clone();
    tokio::spawn(async move {
        let stream =
            watcher::watcher(api, watcher::Config::default().page_size(500)).default_backoff();
        futures::pin_mut!(stream);
        let mut relist: Option<HashMap<String, PodEntry>> = None;
        let mut interner = Interner::default();
        let mut changes = 0usize;
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Init) => relist = Some(HashMap::new()),
                Ok(watcher::Event::InitApply(pod)) => match relist.as_mut() {
                    Some(map) => apply_pod(map, &mut interner, &pod),
                    None => {
                        if let Ok(mut map) = writer.pods.write() {
                            apply_pod(&mut map, &mut interner, &pod);
                        }
                    }
                },
                Ok(watcher::Event::InitDone) => {
                    if let (Some(fresh), Ok(mut map)) = (relist.take(), writer.pods.write()) {
                        *map = fresh;
                    }
                    interner.sweep();
                    let _ = ready_tx.send(true);
                }
                Ok(watcher::Event::Apply(pod)) => {
                    if let Ok(mut map) = writer.pods.write() {
                        apply_pod(&mut map, &mut interner, &pod);
                    }
                }
                Ok(watcher::Event::Delete(pod)) => {
                    if let Ok(mut map) = writer.pods.write() {
                        map.remove(&pod_key(&pod));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "watching pods"),
            }
            changes += 1;
            if changes.is_multiple_of(10_000) {
                interner.sweep();
            }
        }
    });
    (cache, ready_rx)
}

/// Start a reflector for `api` whose objects are reduced by `strip`; returns its store.
pub(crate) fn reflect<K>(api: Api<K>, strip: fn(&mut K)) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher::watcher(api, watcher::Config::default().page_size(500)).modify(strip),
    )
    .default_backoff()
    .for_each(|_| futures::future::ready(()));
    tokio::spawn(stream);
    reader
}

/// One watch of the cluster's Nodes (stripped) for the whole process: the policy controller and the
/// interruption intake share it.
pub fn node_store(client: &kube::Client) -> Store<Node> {
    reflect(Api::<Node>::all(client.clone()), strip_node)
}

/// Hand memory freed after a plan (the snapshot, the planner's indexes) back to the OS. glibc keeps
/// freed small allocations in the process otherwise, and the operator's RSS would stay at the peak of
/// its largest plan.
pub(super) fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory at the top of glibc's heaps; it touches no live
    // allocation and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
