//! Series grouped per workload container: the samples of every pod of a workload's container
//! together, and its OOM kills with the memory used at each (pure; no I/O).
//!
//! An OOM kill is a rise of `kube_pod_container_status_last_terminated_reason{reason="OOMKilled"}` to
//! 1 (or a series that starts at 1: the kill came at or before the window's start). The memory used at
//! the kill is the larger of the container's memory limit and the highest working set the pod's
//! container showed up to that time; a kill with neither is not counted (nothing to size from).

use std::collections::{BTreeMap, BTreeSet};

use super::response::Series;
use crate::engine::rightsizing::{OomKill, OwnerRef, Sample, Workload, resolve_owner};

/// The series right-sizing reads (see [`super::queries`]).
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// CPU cores per (namespace, pod, container).
    pub cpu: Vec<Series>,
    /// Working set bytes per (namespace, pod, container).
    pub memory: Vec<Series>,
    /// The last-terminated-reason-OOMKilled gauge per (namespace, pod, container).
    pub oom_killed: Vec<Series>,
    /// Memory limits, bytes, per (namespace, pod, container).
    pub memory_limits: Vec<Series>,
}

/// What was seen of one container of one workload.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observation {
    /// CPU samples of all its pods.
    pub cpu: Vec<Sample>,
    /// Memory samples of all its pods.
    pub memory: Vec<Sample>,
    /// OOM kills of any of its pods.
    pub oom_kills: Vec<OomKill>,
    /// The pods seen.
    pub pods: BTreeSet<String>,
}

/// Observations per (workload, container), and the pods no workload was found for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Grouped {
    /// Per workload and container name.
    pub containers: BTreeMap<(Workload, String), Observation>,
    /// (namespace, pod) of series left out: no owner, or not a workload.
    pub unresolved: BTreeSet<(String, String)>,
}

type Key = (String, String, String);

fn key(series: &Series) -> Key {
    (
        series.label("namespace").to_owned(),
        series.label("pod").to_owned(),
        series.label("container").to_owned(),
    )
}

/// Group `observed` by the workload `resolve(namespace, pod)` names.
pub fn group(observed: &Observed, resolve: impl Fn(&str, &str) -> Option<Workload>) -> Grouped {
    let mut grouped = Grouped::default();
    let target = |k: &Key, grouped: &mut Grouped| -> Option<(Workload, String)> {
        match resolve(&k.0, &k.1) {
            Some(w) => Some((w, k.2.clone())),
            None => {
                grouped.unresolved.insert((k.0.clone(), k.1.clone()));
                None
            }
        }
    };
    let mut peaks: BTreeMap<Key, Vec<Sample>> = BTreeMap::new();
    for (series, is_cpu) in observed
        .cpu
        .iter()
        .map(|s| (s, true))
        .chain(observed.memory.iter().map(|s| (s, false)))
    {
        let k = key(series);
        let Some(at) = target(&k, &mut grouped) else {
            continue;
        };
        let entry = grouped.containers.entry(at).or_default();
        entry.pods.insert(k.1.clone());
        if is_cpu {
            entry.cpu.extend_from_slice(&series.samples);
        } else {
            entry.memory.extend_from_slice(&series.samples);
            peaks
                .entry(k)
                .or_default()
                .extend_from_slice(&series.samples);
        }
    }
    let limits: BTreeMap<Key, u64> = observed
        .memory_limits
        .iter()
        .map(|s| {
            let peak = s.samples.iter().map(|p| p.value).fold(f64::NAN, f64::max);
            (key(s), peak)
        })
        .filter(|(_, v)| v.is_finite() && *v > 0.0)
        .map(|(k, v)| (k, v as u64))
        .collect();
    for series in &observed.oom_killed {
        let k = key(series);
        let Some(at) = target(&k, &mut grouped) else {
            continue;
        };
        for kill_at in kill_times(&series.samples) {
            let seen = peaks
                .get(&k)
                .into_iter()
                .flatten()
                .filter(|s| s.at <= kill_at && s.value.is_finite())
                .map(|s| s.value as u64)
                .max();
            let used = seen.max(limits.get(&k).copied());
            if let Some(memory_bytes) = used {
                let entry = grouped.containers.entry(at.clone()).or_default();
                entry.pods.insert(k.1.clone());
                entry.oom_kills.push(OomKill {
                    at: kill_at,
                    memory_bytes,
                });
            }
        }
    }
    grouped
}

/// The times the gauge rose to 1 (its first sample counts when it starts at 1).
fn kill_times(samples: &[Sample]) -> Vec<i64> {
    let mut sorted = samples.to_vec();
    sorted.sort_by_key(|s| s.at);
    let mut was_set = false;
    let mut times = Vec::new();
    for sample in sorted {
        let set = sample.value >= 1.0;
        if set && !was_set {
            times.push(sample.at);
        }
        was_set = set;
    }
    times
}

/// Owners as kube-state-metrics reports them: pods (`kube_pod_owner`) and the ReplicaSets' and Jobs'
/// own owners (`kube_replicaset_owner`, `kube_job_owner`).
#[derive(Debug, Clone, Default)]
pub struct Owners {
    pods: BTreeMap<(String, String), OwnerRef>,
    parents: BTreeMap<String, BTreeMap<(String, String), OwnerRef>>,
}

impl Owners {
    /// From the series of [`super::queries::pod_owners`], [`super::queries::replicaset_owners`] and
    /// [`super::queries::job_owners`]. `owner_kind="<none>"` means no owner.
    pub fn from_series(pods: &[Series], replicasets: &[Series], jobs: &[Series]) -> Owners {
        let owner = |s: &Series| {
            let kind = s.label("owner_kind");
            (!kind.is_empty() && kind != "<none>").then(|| OwnerRef {
                kind: kind.to_owned(),
                name: s.label("owner_name").to_owned(),
            })
        };
        let mut owners = Owners::default();
        for s in pods {
            if let Some(o) = owner(s) {
                let at = (s.label("namespace").to_owned(), s.label("pod").to_owned());
                owners.pods.insert(at, o);
            }
        }
        for (series, kind, label) in [
            (replicasets, "ReplicaSet", "replicaset"),
            (jobs, "Job", "job_name"),
        ] {
            for s in series {
                if let Some(o) = owner(s) {
                    owners
                        .parents
                        .entry(s.label("namespace").to_owned())
                        .or_default()
                        .insert((kind.to_owned(), s.label(label).to_owned()), o);
                }
            }
        }
        owners
    }

    /// The workload of `namespace/pod`, if it has one.
    pub fn workload(&self, namespace: &str, pod: &str) -> Option<Workload> {
        let empty = BTreeMap::new();
        let parents = self.parents.get(namespace).unwrap_or(&empty);
        let owner = self.pods.get(&(namespace.to_owned(), pod.to_owned()));
        resolve_owner(namespace, pod, owner, parents).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::rightsizing::WorkloadKind;

    fn series(labels: &[(&str, &str)], points: &[(i64, f64)]) -> Series {
        Series {
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            samples: points
                .iter()
                .map(|&(at, value)| Sample { at, value })
                .collect(),
        }
    }

    fn container(pod: &str) -> Vec<(&'static str, String)> {
        vec![
            ("namespace", "shop".into()),
            ("pod", pod.into()),
            ("container", "app".into()),
        ]
    }

    fn labelled(pod: &str, points: &[(i64, f64)]) -> Series {
        let labels = container(pod);
        let refs: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        series(&refs, points)
    }

    fn owners() -> Owners {
        Owners::from_series(
            &[
                series(
                    &[
                        ("namespace", "shop"),
                        ("pod", "web-abc-1"),
                        ("owner_kind", "ReplicaSet"),
                        ("owner_name", "web-abc"),
                    ],
                    &[(0, 1.0)],
                ),
                series(
                    &[
                        ("namespace", "shop"),
                        ("pod", "web-def-2"),
                        ("owner_kind", "ReplicaSet"),
                        ("owner_name", "web-def"),
                    ],
                    &[(0, 1.0)],
                ),
                series(
                    &[
                        ("namespace", "shop"),
                        ("pod", "static"),
                        ("owner_kind", "<none>"),
                        ("owner_name", "<none>"),
                    ],
                    &[(0, 1.0)],
                ),
            ],
            &[
                series(
                    &[
                        ("namespace", "shop"),
                        ("replicaset", "web-abc"),
                        ("owner_kind", "Deployment"),
                        ("owner_name", "web"),
                    ],
                    &[(0, 1.0)],
                ),
                series(
                    &[
                        ("namespace", "shop"),
                        ("replicaset", "web-def"),
                        ("owner_kind", "Deployment"),
                        ("owner_name", "web"),
                    ],
                    &[(0, 1.0)],
                ),
            ],
            &[],
        )
    }

    #[test]
    fn pods_of_two_replicasets_of_one_deployment_are_one_workload() {
        let observed = Observed {
            cpu: vec![
                labelled("web-abc-1", &[(0, 0.1)]),
                labelled("web-def-2", &[(60, 0.2)]),
            ],
            memory: vec![labelled("static", &[(0, 1.0)])],
            ..Observed::default()
        };
        let o = owners();
        let grouped = group(&observed, |ns, pod| o.workload(ns, pod));
        assert_eq!(grouped.containers.len(), 1);
        let ((workload, name), seen) = grouped.containers.iter().next().expect("one");
        assert_eq!(
            (workload.kind, workload.name.as_str(), name.as_str()),
            (WorkloadKind::Deployment, "web", "app")
        );
        assert_eq!(seen.cpu.len(), 2);
        assert_eq!(seen.pods.len(), 2);
        assert!(
            grouped
                .unresolved
                .contains(&("shop".to_string(), "static".to_string()))
        );
    }

    #[test]
    fn an_oom_kill_is_the_rise_of_the_gauge_sized_by_the_peak_before_it_or_the_limit() {
        let observed = Observed {
            memory: vec![labelled(
                "web-abc-1",
                &[(0, 100.0), (60, 900.0), (180, 2000.0)],
            )],
            oom_killed: vec![labelled(
                "web-abc-1",
                &[(0, 0.0), (120, 1.0), (180, 1.0), (240, 0.0), (300, 1.0)],
            )],
            ..Observed::default()
        };
        let o = owners();
        let grouped = group(&observed, |ns, pod| o.workload(ns, pod));
        let seen = grouped.containers.values().next().expect("one");
        let kills: Vec<(i64, u64)> = seen
            .oom_kills
            .iter()
            .map(|k| (k.at, k.memory_bytes))
            .collect();
        assert_eq!(kills, vec![(120, 900), (300, 2000)]);
        let limited = Observed {
            memory_limits: vec![labelled("web-abc-1", &[(0, 4096.0)])],
            ..observed
        };
        let grouped = group(&limited, |ns, pod| o.workload(ns, pod));
        let seen = grouped.containers.values().next().expect("one");
        assert!(seen.oom_kills.iter().all(|k| k.memory_bytes == 4096));
    }
}
