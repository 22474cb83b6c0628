//! Workloads: Deployments, StatefulSets and CronJobs in the target namespaces, read, put to sleep
//! and woken (one write each, marker and count together).

use super::*;

/// Kinds of workload that sleep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Deployment,
    StatefulSet,
    CronJob,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Deployment => "Deployment",
            Kind::StatefulSet => "StatefulSet",
            Kind::CronJob => "CronJob",
        }
    }
}

/// One workload as the decision needs it.
#[derive(Debug, Clone)]
struct Workload {
    kind: Kind,
    namespace: String,
    name: String,
    resource_version: Option<String>,
    replicas: i32,
    saved: Option<i32>,
    excluded: bool,
}

fn workload_of(
    kind: Kind,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    replicas: i32,
    schedule: &str,
    excluded_names: &[String],
) -> Workload {
    let name = meta.name.clone().unwrap_or_default();
    let ours = meta
        .labels
        .as_ref()
        .and_then(|l| l.get(HIBERNATED_BY_LABEL))
        .is_some_and(|v| v == schedule);
    let annotations = meta.annotations.clone().unwrap_or_default();
    let saved = ours.then(|| {
        annotations
            .get(ORIGINAL_REPLICAS)
            .and_then(|v| v.trim().parse::<i32>().ok())
            .filter(|v| *v >= 0)
            // An unreadable saved count: keep the current one rather than guess.
            .unwrap_or(replicas)
    });
    Workload {
        kind,
        namespace: meta.namespace.clone().unwrap_or_default(),
        excluded: excluded_names.contains(&name)
            || annotations
                .get(HIBERNATE_ANNOTATION)
                .is_some_and(|v| v == "false"),
        name,
        resource_version: meta.resource_version.clone(),
        replicas,
        saved,
    }
}

async fn list_workloads(
    client: &kube::Client,
    namespace: Option<&str>,
    params: &ListParams,
    schedule: &str,
    excluded_names: &[String],
) -> Result<Vec<Workload>, Error> {
    fn api<K>(client: &kube::Client, namespace: Option<&str>) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let mut out = Vec::new();
    for d in api::<Deployment>(client, namespace).list(params).await? {
        let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        out.push(workload_of(
            Kind::Deployment,
            &d.metadata,
            replicas,
            schedule,
            excluded_names,
        ));
    }
    for s in api::<StatefulSet>(client, namespace).list(params).await? {
        let replicas = s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        out.push(workload_of(
            Kind::StatefulSet,
            &s.metadata,
            replicas,
            schedule,
            excluded_names,
        ));
    }
    for c in api::<CronJob>(client, namespace).list(params).await? {
        let suspended = c.spec.as_ref().and_then(|s| s.suspend).unwrap_or(false);
        out.push(workload_of(
            Kind::CronJob,
            &c.metadata,
            if suspended { 0 } else { 1 },
            schedule,
            excluded_names,
        ));
    }
    Ok(out)
}

/// One merge patch per step: marker and count change together, guarded by the resourceVersion read.
async fn patch_workload(
    client: &kube::Client,
    workload: &Workload,
    schedule: &str,
    step: WorkloadStep,
) -> Result<(), Error> {
    let (marker, count) = match step {
        WorkloadStep::Nothing => return Ok(()),
        WorkloadStep::Sleep { original } => (
            json!({"labels": {HIBERNATED_BY_LABEL: schedule}, "annotations": {ORIGINAL_REPLICAS: original.to_string()}}),
            Some(0),
        ),
        WorkloadStep::Restore { replicas } => (
            json!({"labels": {HIBERNATED_BY_LABEL: null}, "annotations": {ORIGINAL_REPLICAS: null}}),
            Some(replicas),
        ),
        WorkloadStep::KeepManual { .. } => (
            json!({"labels": {HIBERNATED_BY_LABEL: null}, "annotations": {ORIGINAL_REPLICAS: null}}),
            None,
        ),
    };
    let mut patch = json!({ "metadata": marker });
    patch["metadata"]["resourceVersion"] = json!(workload.resource_version);
    if let Some(count) = count {
        patch["spec"] = match workload.kind {
            Kind::CronJob => json!({"suspend": count == 0}),
            _ => json!({"replicas": count}),
        };
    }
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    let (ns, name) = (workload.namespace.as_str(), workload.name.as_str());
    match workload.kind {
        Kind::Deployment => {
            Api::<Deployment>::namespaced(client.clone(), ns)
                .patch(name, &params, &Patch::Merge(&patch))
                .await?;
        }
        Kind::StatefulSet => {
            Api::<StatefulSet>::namespaced(client.clone(), ns)
                .patch(name, &params, &Patch::Merge(&patch))
                .await?;
        }
        Kind::CronJob => {
            Api::<CronJob>::namespaced(client.clone(), ns)
                .patch(name, &params, &Patch::Merge(&patch))
                .await?;
        }
    }
    Ok(())
}

/// The namespaces the schedule targets now.
pub(super) async fn target_namespaces(
    client: &kube::Client,
    schedule: &HibernationSchedule,
    own_namespace: Option<&str>,
    protected: &[String],
) -> Result<BTreeSet<String>, Error> {
    let targets = &schedule.spec.targets;
    let mut namespaces: BTreeSet<String> = targets.namespaces.iter().cloned().collect();
    if let Some(selector) = &targets.namespace_selector {
        let selector = Selector::try_from(selector.clone())
            .map_err(|e| Error::BadSelector("namespaceSelector", e.to_string()))?;
        let listed = Api::<Namespace>::all(client.clone())
            .list(&ListParams::default().labels_from(&selector))
            .await?;
        namespaces.extend(listed.items.iter().map(|n| n.name_any()));
    }
    for excluded in &targets.exclude.namespaces {
        namespaces.remove(excluded);
    }
    // The operator's own namespace never sleeps, whatever selects it.
    if let Some(own) = own_namespace {
        namespaces.remove(own);
    }
    // Nor do the protected ones (kube-system by default).
    for p in protected {
        namespaces.remove(p);
    }
    Ok(namespaces)
}

pub(super) async fn step_workloads<C: Cloud>(
    ctx: &Context<C>,
    schedule: &HibernationSchedule,
    asleep: bool,
    done: &mut Done,
) -> Result<(), Error> {
    let name = schedule.name_any();
    let excluded_names = &schedule.spec.targets.exclude.names;
    let namespaces = if asleep {
        target_namespaces(
            &ctx.client,
            schedule,
            ctx.config.own_namespace.as_deref(),
            &ctx.config.protected_namespaces,
        )
        .await?
    } else {
        BTreeSet::new()
    };
    // Everything this schedule holds, wherever it is, plus everything in the targeted namespaces.
    let held = ListParams::default().labels(&format!("{HIBERNATED_BY_LABEL}={name}"));
    let mut workloads: BTreeMap<(Kind, String, String), Workload> = BTreeMap::new();
    for w in list_workloads(&ctx.client, None, &held, &name, excluded_names).await? {
        workloads.insert((w.kind, w.namespace.clone(), w.name.clone()), w);
    }
    for ns in &namespaces {
        for w in list_workloads(
            &ctx.client,
            Some(ns),
            &ListParams::default(),
            &name,
            excluded_names,
        )
        .await?
        {
            workloads.insert((w.kind, w.namespace.clone(), w.name.clone()), w);
        }
    }
    for w in workloads.values() {
        let view = WorkloadView {
            replicas: w.replicas,
            saved: w.saved,
            targeted: namespaces.contains(&w.namespace) && !w.excluded,
        };
        let step = workload_step(asleep, view);
        let label = format!("{}/{}/{}", w.kind.as_str(), w.namespace, w.name);
        if !ctx.config.dry_run {
            patch_workload(&ctx.client, w, &name, step).await?;
        }
        let saved = match step {
            WorkloadStep::Sleep { original } => {
                done.slept_workloads.push(label);
                Some(original)
            }
            WorkloadStep::Restore { .. } => {
                done.woke_workloads.push(label);
                None
            }
            WorkloadStep::KeepManual { replicas, saved } => {
                let note = format!(
                    "{label} was scaled to {replicas} while asleep (saved count {saved}); keeping the count it was given"
                );
                ctx.event(&schedule.object_ref(&()), false, "ManualChangeKept", note)
                    .await;
                done.kept_manual.push(label);
                None
            }
            WorkloadStep::Nothing => w.saved,
        };
        if let Some(replicas) = saved {
            done.saved_workloads.push(SavedWorkload {
                kind: w.kind.as_str().to_string(),
                namespace: w.namespace.clone(),
                name: w.name.clone(),
                replicas,
            });
        }
    }
    Ok(())
}
