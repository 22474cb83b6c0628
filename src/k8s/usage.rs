//! Right-sizing from usage series and the pods (or pod templates) of the cluster, shared by `plan
//! --usage FILE` and the OptimizationPolicy controller: per workload container, requests now and
//! recommended, and the snapshot with the recommended requests (to plan consolidation after it).
//!
//! Pods in the usage series resolve to workloads through the file's owner series when it has them,
//! else through the snapshot: a pod of the snapshot by its owner, a pod gone since by its name minus
//! its last `-suffix` matching a snapshot pod's owner (a ReplicaSet's or StatefulSet's pods). Current
//! requests and replicas come from the workload's running pods in the snapshot; a workload with none is
//! left out (counted in `gone`).

use std::collections::BTreeMap;

use crate::engine::rightsizing::{
    Confidence, ContainerUsage, Recommendation, Sample, Settings, UnitPrices, Workload,
    recommend_all,
};
use crate::engine::snapshot::{Node, Snapshot};
use crate::k8s::PodWorkload;
use crate::prometheus::response::Series;
use crate::prometheus::usage::{self, Observed, Owners};

/// What right-sizing finds in a snapshot and a usage file.
#[derive(Debug, Clone)]
pub struct Rightsized {
    /// Recommendations of the workloads running now, largest monthly saving first.
    pub recommendations: Vec<Recommendation>,
    /// Workload containers in the usage file with no running pod in the snapshot.
    pub gone: usize,
    /// Pods in the usage file with no workload (no owner, or not found in the snapshot).
    pub unresolved: usize,
    /// The unit prices used.
    pub prices: Option<UnitPrices>,
}

impl Rightsized {
    /// Dollars a month the requests free, over recommendations with enough data.
    pub fn monthly_savings(&self) -> f64 {
        self.recommendations.iter().map(|r| r.monthly_savings).sum()
    }
}

/// Recommendations for the running workloads of `pods` from `observed` (pods resolved through
/// `owners` first, when given), priced at `nodes`.
pub fn recommendations(
    observed: &Observed,
    owners: Option<&Owners>,
    pods: &[PodWorkload],
    nodes: &[Node],
    settings: &Settings,
) -> Rightsized {
    let by_name: BTreeMap<(&str, &str), &PodWorkload> = pods
        .iter()
        .map(|p| ((p.namespace.as_str(), p.name.as_str()), p))
        .collect();
    let by_owner: BTreeMap<(&str, &str), &Workload> = pods
        .iter()
        .filter_map(|p| {
            Some((
                (p.namespace.as_str(), p.owner_name.as_deref()?),
                p.workload.as_ref()?,
            ))
        })
        .collect();
    let from_snapshot = |namespace: &str, pod: &str| -> Option<Workload> {
        if let Some(p) = by_name.get(&(namespace, pod)) {
            return p.workload.clone();
        }
        let (owner, _) = pod.rsplit_once('-')?;
        by_owner.get(&(namespace, owner)).map(|w| (*w).clone())
    };
    let mut observed = observed.clone();
    observed.memory_limits.extend(snapshot_limits(pods));
    let grouped = usage::group(&observed, |namespace, pod| {
        owners
            .and_then(|o| o.workload(namespace, pod))
            .or_else(|| from_snapshot(namespace, pod))
    });
    let running = running_by_workload(pods);
    let mut usages = Vec::new();
    let mut gone = 0;
    for ((workload, container), seen) in grouped.containers {
        let Some(replicas) = running.get(&workload) else {
            gone += 1;
            continue;
        };
        let current = replicas
            .iter()
            .flat_map(|p| &p.containers)
            .find(|c| c.name == container)
            .map(|c| c.requests)
            .unwrap_or_default();
        usages.push(ContainerUsage {
            workload,
            container,
            replicas: replicas.len() as u32,
            current,
            cpu: seen.cpu,
            memory: seen.memory,
            oom_kills: seen.oom_kills,
        });
    }
    let prices = UnitPrices::of_nodes(nodes);
    Rightsized {
        recommendations: recommend_all(&usages, settings, prices.as_ref()),
        gone,
        unresolved: grouped.unresolved.len(),
        prices,
    }
}

/// The snapshot's memory limits as series, so an OOM kill is sized by the limit it hit.
fn snapshot_limits(pods: &[PodWorkload]) -> Vec<Series> {
    pods.iter()
        .flat_map(|p| {
            p.containers.iter().filter_map(move |c| {
                let limit = c.memory_limit?;
                Some(Series {
                    labels: [
                        ("namespace", p.namespace.clone()),
                        ("pod", p.name.clone()),
                        ("container", c.name.clone()),
                    ]
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect(),
                    samples: vec![Sample {
                        at: 0,
                        value: limit as f64,
                    }],
                })
            })
        })
        .collect()
}

/// Running pods per workload, sorted by name (the first one's requests are "now").
fn running_by_workload(pods: &[PodWorkload]) -> BTreeMap<Workload, Vec<&PodWorkload>> {
    let mut running: BTreeMap<Workload, Vec<&PodWorkload>> = BTreeMap::new();
    for pod in pods.iter().filter(|p| p.running) {
        if let Some(w) = &pod.workload {
            running.entry(w.clone()).or_default().push(pod);
        }
    }
    for list in running.values_mut() {
        list.sort_by(|a, b| a.name.cmp(&b.name));
    }
    running
}

/// `snapshot` with every running pod of a recommended workload asking for the recommended requests
/// instead of its current ones (only where both are set, as the savings count them).
pub fn resized(
    snapshot: &Snapshot,
    pods: &[PodWorkload],
    recommendations: &[Recommendation],
) -> Snapshot {
    let targets: BTreeMap<(&Workload, &str), &Recommendation> = recommendations
        .iter()
        .filter(|r| r.confidence != Confidence::None || r.oom_bumped)
        .map(|r| ((&r.workload, r.container.as_str()), r))
        .collect();
    let by_name: BTreeMap<(&str, &str), &PodWorkload> = pods
        .iter()
        .map(|p| ((p.namespace.as_str(), p.name.as_str()), p))
        .collect();
    let mut out = snapshot.clone();
    for pod in out.pods.iter_mut() {
        let Some(spec) = by_name.get(&(pod.namespace.as_str(), pod.name.as_str())) else {
            continue;
        };
        let Some(workload) = &spec.workload else {
            continue;
        };
        for container in &spec.containers {
            let Some(rec) = targets.get(&(workload, container.name.as_str())) else {
                continue;
            };
            let requests = &mut pod.requests;
            shift(
                &mut requests.cpu_millis,
                container.requests.cpu_millis,
                rec.recommended.cpu_millis,
            );
            shift(
                &mut requests.memory_bytes,
                container.requests.memory_bytes,
                rec.recommended.memory_bytes,
            );
        }
    }
    out
}

/// `total` with one container's `now` request replaced by `new`, when both are set.
fn shift(total: &mut u64, now: Option<u64>, new: Option<u64>) {
    if let (Some(now), Some(new)) = (now, new) {
        *total = total.saturating_sub(now).saturating_add(new);
    }
}
