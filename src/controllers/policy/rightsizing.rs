//! rightsizing (`spec.rightsizing`, issue #17): read container usage from the policy's Prometheus and
//! the workloads (Deployments, StatefulSets, DaemonSets, CronJobs) -> validate the settings ->
//! recommend (engine) -> decide what Apply changes or a revert restores (engine) -> annotate each
//! workload with its recommendation (`cloudoptim.io/recommended-requests`, written only when it
//! changes), patch the requests (`mode: Apply`), Events and metrics -> the top 20 in
//! `status.recommendations`.
//!
//! The read runs before anything else of the pass acts: an unreachable Prometheus (or a refused query)
//! fails the pass, so the policy turns `Ready=False` naming the URL and nothing is changed. In dry run
//! the recommendations and the changes Apply would make go to the status and Events only. Bare
//! ReplicaSets and Jobs are recommended in the status only. Every patch carries the resourceVersion it
//! was decided on: a workload changed in between is left for the next pass (HTTP 409), never
//! overwritten.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ObjectReference, Pod as CorePod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams};

use super::*;
use crate::api::policy::{Recommendation as StatusRecommendation, RightsizingMode};
use crate::engine::rightsizing::apply::{
    self, Action as Change, Control, Rules, Skip, Written, cpu_text, memory_text,
};
use crate::engine::rightsizing::{
    Confidence, Recommendation, Settings as RsSettings, Workload, WorkloadKind,
};
use crate::http::client::Proxies;
use crate::k8s::PodWorkload;
use crate::names::{
    RECOMMENDED_REQUESTS, RIGHTSIZED_AT, RIGHTSIZING_CONTROL, RIGHTSIZING_PREVIOUS,
};
use crate::prometheus::Prometheus;
use crate::prometheus::read::Read;

/// Recommendations kept in the status.
pub(super) const STATUS_TOP: usize = 20;

/// What the read step found: the usage, the workloads, the settings.
pub(super) struct Usage {
    mode: RightsizingMode,
    settings: RsSettings,
    read: Read,
    templates: Vec<PodWorkload>,
    /// Each workload as Apply sees it.
    states: Vec<apply::State>,
    /// Each workload's resourceVersion and `cloudoptim.io/recommended-requests`, as read.
    seen: BTreeMap<Workload, (Option<String>, Option<String>)>,
}

/// `spec.rightsizing` checked: `None` when the mode is Off; errors name the field.
pub(super) fn validate(
    policy: &OptimizationPolicy,
    apply_allowed: bool,
) -> Result<Option<(RsSettings, String, Duration)>, Error> {
    let spec = &policy.spec.rightsizing;
    let invalid = |field: &str, message: String| Error::Invalid {
        field: format!("rightsizing.{field}"),
        message,
    };
    match spec.mode {
        RightsizingMode::Off => return Ok(None),
        RightsizingMode::Recommend => {}
        RightsizingMode::Apply if !apply_allowed => {
            return Err(invalid(
                "mode",
                "Apply is not enabled in this install: the operator runs without --rightsizing-apply; set the chart value rightsizing.apply.enabled=true (it also lets the workload guard accept changes to container resources), or use Recommend".into(),
            ));
        }
        RightsizingMode::Apply => {}
    }
    let url = spec.prometheus_url.clone().ok_or_else(|| {
        invalid(
            "prometheusUrl",
            "modes Recommend and Apply need the Prometheus that holds container usage, e.g. http://prometheus.monitoring:9090".into(),
        )
    })?;
    let settings = crate::k8s::rightsizing_settings(spec).map_err(|message| {
        let message = message.trim_start_matches("spec.");
        match message.split_once(": ") {
            Some((field, rest)) => Error::Invalid {
                field: field.to_string(),
                message: rest.to_string(),
            },
            None => invalid("", message.to_string()),
        }
    })?;
    let window = parse_duration("rightsizing.window", &spec.window)?;
    Ok(Some((settings, url, window)))
}

/// read: usage from Prometheus over the window, and the cluster's workloads. `None` when the mode is
/// Off.
pub(super) async fn read<C: Cloud>(
    policy: &OptimizationPolicy,
    pctx: &PolicyContext<C>,
) -> Result<Option<Usage>, Error> {
    let config = &pctx.base.config;
    let Some((settings, url, window)) = validate(policy, config.rightsizing_apply)? else {
        return Ok(None);
    };
    let options = config.prometheus.options(&url, Proxies::from_env())?;
    let prom = Prometheus::new(&options)?;
    let read = crate::prometheus::read::read(&prom, None, window, Utc::now().timestamp()).await?;
    // The policy's excluded namespaces and the operator's protected ones (which the chart's workload
    // guard refuses anyway): never annotated, never changed.
    let excluded: BTreeSet<&str> = policy
        .spec
        .disruption
        .exclude_namespaces
        .iter()
        .chain(&config.protected_namespaces)
        .map(String::as_str)
        .collect();
    let mut found = Found::default();
    read_workloads(&pctx.base.client, &excluded, &mut found).await?;
    Ok(Some(Usage {
        mode: policy.spec.rightsizing.mode,
        settings,
        read,
        templates: found.templates,
        states: found.states,
        seen: found.seen,
    }))
}

#[derive(Default)]
struct Found {
    templates: Vec<PodWorkload>,
    states: Vec<apply::State>,
    seen: BTreeMap<Workload, (Option<String>, Option<String>)>,
}

/// One workload object as read: its kind, metadata, pod template, replicas and whether a rollout is
/// still going on.
struct Object<'a> {
    kind: WorkloadKind,
    meta: &'a ObjectMeta,
    template: Option<&'a PodTemplateSpec>,
    replicas: i32,
    rolling_out: bool,
}

/// Every Deployment, StatefulSet, DaemonSet and CronJob: its pod template as running "pods" of the
/// workload (once per replica, so the savings count each replica) and its Apply state.
async fn read_workloads(
    client: &kube::Client,
    excluded: &BTreeSet<&str>,
    found: &mut Found,
) -> Result<(), Error> {
    let list = ListParams::default();
    let behind = |meta: &ObjectMeta, observed: Option<i64>| {
        observed.unwrap_or(0) < meta.generation.unwrap_or(0)
    };
    for d in Api::<Deployment>::all(client.clone()).list(&list).await? {
        let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let status = d.status.clone().unwrap_or_default();
        let rolling_out = behind(&d.metadata, status.observed_generation)
            || status.updated_replicas.unwrap_or(0) < replicas
            || status.available_replicas.unwrap_or(0) < replicas;
        found.add(
            Object {
                kind: WorkloadKind::Deployment,
                meta: &d.metadata,
                template: d.spec.as_ref().map(|s| &s.template),
                replicas,
                rolling_out,
            },
            excluded,
        );
    }
    for s in Api::<StatefulSet>::all(client.clone()).list(&list).await? {
        let replicas = s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let status = s.status.clone().unwrap_or_default();
        let rolling_out = behind(&s.metadata, status.observed_generation)
            || status.updated_replicas.unwrap_or(0) < replicas
            || status.current_revision != status.update_revision;
        found.add(
            Object {
                kind: WorkloadKind::StatefulSet,
                meta: &s.metadata,
                template: s.spec.as_ref().map(|s| &s.template),
                replicas,
                rolling_out,
            },
            excluded,
        );
    }
    for d in Api::<DaemonSet>::all(client.clone()).list(&list).await? {
        let status = d.status.clone().unwrap_or_default();
        let rolling_out = behind(&d.metadata, status.observed_generation)
            || status.updated_number_scheduled.unwrap_or(0) < status.desired_number_scheduled
            || status.number_unavailable.unwrap_or(0) > 0;
        found.add(
            Object {
                kind: WorkloadKind::DaemonSet,
                meta: &d.metadata,
                template: d.spec.as_ref().map(|s| &s.template),
                replicas: status.desired_number_scheduled.max(1),
                rolling_out,
            },
            excluded,
        );
    }
    for c in Api::<CronJob>::all(client.clone()).list(&list).await? {
        found.add(
            Object {
                kind: WorkloadKind::CronJob,
                meta: &c.metadata,
                template: c
                    .spec
                    .as_ref()
                    .and_then(|s| s.job_template.spec.as_ref())
                    .map(|j| &j.template),
                replicas: 1,
                rolling_out: false,
            },
            excluded,
        );
    }
    Ok(())
}

impl Found {
    fn add(&mut self, object: Object<'_>, excluded: &BTreeSet<&str>) {
        let meta = object.meta;
        let (Some(name), Some(template)) = (meta.name.clone(), object.template) else {
            return;
        };
        let namespace = meta.namespace.clone().unwrap_or_default();
        let workload = Workload {
            namespace: namespace.clone(),
            kind: object.kind,
            name: name.clone(),
        };
        let annotations = meta.annotations.clone().unwrap_or_default();
        let pod = CorePod {
            metadata: ObjectMeta {
                name: Some(format!("{name}-template")),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            spec: template.spec.clone(),
            status: None,
        };
        if let Ok(mut as_pod) = crate::k8s::pod_workload(
            &pod,
            &format!("{} {namespace}/{name}", object.kind.as_str()),
        ) {
            as_pod.workload = Some(workload.clone());
            as_pod.running = true;
            for i in 0..object.replicas.max(0) {
                let mut replica = as_pod.clone();
                replica.name = format!("{}-{i}", replica.name);
                self.templates.push(replica);
            }
        }
        let mut control =
            Control::from_annotation(annotations.get(RIGHTSIZING_CONTROL).map(String::as_str));
        let previous = match annotations.get(RIGHTSIZING_PREVIOUS) {
            None => BTreeMap::new(),
            Some(text) => serde_json::from_str(text).unwrap_or_else(|e| {
                // Never overwrite a record that cannot be read: the original values would be lost.
                control = Control::Out(format!("unreadable {RIGHTSIZING_PREVIOUS}: {e}"));
                BTreeMap::new()
            }),
        };
        let changed_at = annotations
            .get(RIGHTSIZED_AT)
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc));
        let containers = template
            .spec
            .as_ref()
            .map(|s| {
                s.containers
                    .iter()
                    .map(crate::k8s::applied_container)
                    .collect()
            })
            .unwrap_or_default();
        self.states.push(apply::State {
            workload: workload.clone(),
            containers,
            control,
            do_not_disrupt: crate::k8s::pod_forbids_disruption(meta)
                || template
                    .metadata
                    .as_ref()
                    .is_some_and(crate::k8s::pod_forbids_disruption),
            excluded: excluded.contains(namespace.as_str()),
            rolling_out: object.rolling_out && changed_at.is_some(),
            changed_at,
            previous,
        });
        self.seen.insert(
            workload,
            (
                meta.resource_version.clone(),
                annotations.get(RECOMMENDED_REQUESTS).cloned(),
            ),
        );
    }
}

/// plan (pure): the recommendations for the usage, priced at `nodes`, largest saving first; only those
/// with enough data (or an OOM bump) that change something.
pub(super) fn plan(usage: &Usage, nodes: &[crate::engine::snapshot::Node]) -> Vec<Recommendation> {
    let found = crate::k8s::recommendations(
        &usage.read.observed,
        Some(&usage.read.owners),
        &usage.templates,
        nodes,
        &usage.settings,
    );
    found
        .recommendations
        .into_iter()
        .filter(|r| r.confidence != Confidence::None || r.oom_bumped)
        .filter(|r| r.target() != r.current)
        .collect()
}

/// decide (pure): what Apply changes and what is reverted this pass. In Recommend mode only reverts
/// (a workload changed while the policy was on Apply can still be put back).
pub(super) fn decide(
    usage: &Usage,
    recs: &[Recommendation],
    now: chrono::DateTime<Utc>,
    rollouts_allowed: Option<usize>,
) -> Vec<(Workload, Change)> {
    let rules = Rules {
        rollouts_allowed,
        ..Rules::default()
    };
    let recs: &[Recommendation] = if usage.mode == RightsizingMode::Apply {
        recs
    } else {
        &[]
    };
    apply::decide(&usage.states, recs, now, &rules)
}

/// The status form of the top recommendations.
pub(super) fn status_recommendations(recs: &[Recommendation]) -> Vec<StatusRecommendation> {
    recs.iter()
        .take(STATUS_TOP)
        .map(|r| {
            let target = r.target();
            StatusRecommendation {
                namespace: r.workload.namespace.clone(),
                workload: format!("{}/{}", r.workload.kind.as_str(), r.workload.name),
                container: r.container.clone(),
                cpu_request: r.current.cpu_millis.map(cpu_text),
                recommended_cpu: target.cpu_millis.map(cpu_text).unwrap_or_default(),
                memory_request: r.current.memory_bytes.map(memory_text),
                recommended_memory: target.memory_bytes.map(memory_text).unwrap_or_default(),
                monthly_savings: (r.monthly_savings * 100.0).round() / 100.0,
            }
        })
        .collect()
}

/// The annotation value per workload: `{"<container>":{"cpu":"120m","memory":"360Mi"},...}`.
pub(super) fn annotations(recs: &[Recommendation]) -> BTreeMap<Workload, String> {
    let mut by_workload: BTreeMap<_, serde_json::Map<String, serde_json::Value>> = BTreeMap::new();
    for r in recs {
        let target = r.target();
        let mut value = serde_json::Map::new();
        if let Some(cpu) = target.cpu_millis {
            value.insert("cpu".into(), cpu_text(cpu).into());
        }
        if let Some(memory) = target.memory_bytes {
            value.insert("memory".into(), memory_text(memory).into());
        }
        by_workload
            .entry(r.workload.clone())
            .or_default()
            .insert(r.container.clone(), value.into());
    }
    by_workload
        .into_iter()
        .map(|(w, m)| (w, serde_json::Value::Object(m).to_string()))
        .collect()
}

/// The strategic-merge patch of a change: the container fields (merged by container name), the
/// annotations, and the resourceVersion it was decided on.
pub(super) fn change_patch(
    kind: WorkloadKind,
    set: &BTreeMap<String, Written>,
    annotations: serde_json::Value,
    resource_version: Option<&str>,
) -> serde_json::Value {
    let containers: Vec<serde_json::Value> = set
        .iter()
        .map(|(name, w)| {
            let pick = |pairs: [(&str, &Option<String>); 2]| {
                pairs
                    .into_iter()
                    .filter_map(|(k, v)| Some((k.to_string(), serde_json::Value::from(v.clone()?))))
                    .collect::<serde_json::Map<_, _>>()
            };
            let mut resources = serde_json::Map::new();
            let requests = pick([("cpu", &w.cpu_request), ("memory", &w.memory_request)]);
            let limits = pick([("cpu", &w.cpu_limit), ("memory", &w.memory_limit)]);
            if !requests.is_empty() {
                resources.insert("requests".into(), requests.into());
            }
            if !limits.is_empty() {
                resources.insert("limits".into(), limits.into());
            }
            serde_json::json!({"name": name, "resources": resources})
        })
        .collect();
    let pod_spec = serde_json::json!({"template": {"spec": {"containers": containers}}});
    let spec = if kind == WorkloadKind::CronJob {
        serde_json::json!({"jobTemplate": {"spec": pod_spec}})
    } else {
        pod_spec
    };
    let mut metadata = serde_json::json!({"annotations": annotations});
    if let Some(rv) = resource_version {
        metadata["resourceVersion"] = rv.into();
    }
    serde_json::json!({"metadata": metadata, "spec": spec})
}

/// `app: cpu 1 -> 250m, memory 1Gi -> 360Mi` for each container.
fn describe(from: &BTreeMap<String, Written>, to: &BTreeMap<String, Written>) -> String {
    to.iter()
        .map(|(name, w)| {
            let was = from.get(name).cloned().unwrap_or_default();
            let mut parts = Vec::new();
            for (what, old, new) in [
                ("cpu", &was.cpu_request, &w.cpu_request),
                ("memory", &was.memory_request, &w.memory_request),
                ("cpu limit", &was.cpu_limit, &w.cpu_limit),
                ("memory limit", &was.memory_limit, &w.memory_limit),
            ] {
                if let Some(new) = new {
                    parts.push(format!("{what} {} -> {new}", old.as_deref().unwrap_or("-")));
                }
            }
            format!("{name}: {}", parts.join(", "))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn object_ref(w: &Workload) -> ObjectReference {
    let api_version = match w.kind {
        WorkloadKind::CronJob | WorkloadKind::Job => "batch/v1",
        _ => "apps/v1",
    };
    ObjectReference {
        api_version: Some(api_version.into()),
        kind: Some(w.kind.as_str().into()),
        namespace: Some(w.namespace.clone()),
        name: Some(w.name.clone()),
        ..Default::default()
    }
}

/// Strategic-merge `patch` into the workload.
async fn patch_workload(
    client: &kube::Client,
    w: &Workload,
    patch: &serde_json::Value,
) -> Result<(), kube::Error> {
    let params = PatchParams {
        field_manager: Some(crate::controllers::FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    let patch = Patch::Strategic(patch);
    let (ns, name) = (w.namespace.as_str(), w.name.as_str());
    match w.kind {
        WorkloadKind::Deployment => Api::<Deployment>::namespaced(client.clone(), ns)
            .patch(name, &params, &patch)
            .await
            .map(drop),
        WorkloadKind::StatefulSet => Api::<StatefulSet>::namespaced(client.clone(), ns)
            .patch(name, &params, &patch)
            .await
            .map(drop),
        WorkloadKind::DaemonSet => Api::<DaemonSet>::namespaced(client.clone(), ns)
            .patch(name, &params, &patch)
            .await
            .map(drop),
        WorkloadKind::CronJob => Api::<CronJob>::namespaced(client.clone(), ns)
            .patch(name, &params, &patch)
            .await
            .map(drop),
        WorkloadKind::ReplicaSet | WorkloadKind::Job => Ok(()),
    }
}

/// What one pass changed, for the Ready message and the metrics.
#[derive(Default)]
struct Tally {
    annotated: usize,
    applied: usize,
    reverted: usize,
    failed: usize,
    held: BTreeMap<&'static str, usize>,
}

/// act: annotate the workloads whose recommendation changed, carry out `changes` (not in dry run),
/// record Events and metrics; returns the notes for the Ready message and the status
/// recommendations.
pub(super) async fn act<C: Cloud>(
    pctx: &PolicyContext<C>,
    policy: &OptimizationPolicy,
    usage: &Usage,
    recs: &[Recommendation],
    changes: &[(Workload, Change)],
    dry_run: bool,
) -> (Vec<String>, Vec<StatusRecommendation>) {
    let mut notes = Vec::new();
    let mut tally = Tally::default();
    if !dry_run {
        tally.annotated = annotate(pctx, usage, recs, &mut notes).await;
    }
    for (workload, change) in changes {
        let Some((action, patch, summary)) = prepare(usage, workload, change) else {
            if let Change::Skip(skip) = change {
                *tally.held.entry(skip.reason()).or_default() += 1;
                if let Skip::OptedOut(why) = skip
                    && why.starts_with("unreadable")
                {
                    notes.push(format!("right-sizing leaves {workload} alone: {why}"));
                }
            }
            continue;
        };
        if dry_run {
            pctx.base
                .metrics
                .rightsizing_changes
                .with_label_values(&[action, "dry_run"])
                .inc();
            notes.push(format!("dry run: would {action} {workload}: {summary}"));
            continue;
        }
        carry_out(
            pctx, workload, action, &patch, &summary, &mut tally, &mut notes,
        )
        .await;
    }
    for reason in Skip::REASONS {
        pctx.base
            .metrics
            .rightsizing_held
            .with_label_values(&[&policy.name_any(), reason])
            .set(tally.held.get(reason).copied().unwrap_or(0) as i64);
    }
    let note = summary_note(usage.mode, recs, &tally, dry_run);
    if !recs.is_empty() {
        pctx.base
            .event(
                &policy.object_ref(&()),
                false,
                "RightsizingRecommended",
                note.clone(),
            )
            .await;
    }
    notes.push(note);
    (notes, status_recommendations(recs))
}

/// Write `cloudoptim.io/recommended-requests` where it changed, on the kinds Apply may patch and
/// outside excluded namespaces; returns how many were written.
async fn annotate<C: Cloud>(
    pctx: &PolicyContext<C>,
    usage: &Usage,
    recs: &[Recommendation],
    notes: &mut Vec<String>,
) -> usize {
    let excluded: BTreeSet<&Workload> = usage
        .states
        .iter()
        .filter(|s| s.excluded)
        .map(|s| &s.workload)
        .collect();
    let mut annotated = 0;
    for (workload, value) in annotations(recs) {
        let written = usage.seen.get(&workload).and_then(|(_, a)| a.as_deref());
        if written == Some(value.as_str())
            || excluded.contains(&workload)
            || !workload.kind.patchable()
        {
            continue;
        }
        let patch = serde_json::json!({"metadata": {"annotations": {RECOMMENDED_REQUESTS: value}}});
        match patch_workload(&pctx.base.client, &workload, &patch).await {
            Ok(()) => annotated += 1,
            Err(e) => notes.push(format!("annotating {workload}: {e}")),
        }
    }
    annotated
}

/// The action (`apply`, `revert`), its patch and a summary of the change; `None` for a skip.
fn prepare(
    usage: &Usage,
    workload: &Workload,
    change: &Change,
) -> Option<(&'static str, serde_json::Value, String)> {
    let current: BTreeMap<String, Written> = usage
        .states
        .iter()
        .find(|s| &s.workload == workload)
        .map(|s| {
            s.containers
                .iter()
                .map(|c| (c.name.clone(), c.written.clone()))
                .collect()
        })
        .unwrap_or_default();
    let version = usage.seen.get(workload).and_then(|(v, _)| v.as_deref());
    match change {
        Change::Skip(_) => None,
        Change::Apply {
            set, previous, oom, ..
        } => {
            let annotations = serde_json::json!({
                RIGHTSIZING_PREVIOUS: serde_json::to_string(previous).unwrap_or_default(),
                RIGHTSIZED_AT: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            });
            let oom = if *oom { " (OOM bump)" } else { "" };
            Some((
                "apply",
                change_patch(workload.kind, set, annotations, version),
                format!("{}{oom}", describe(&current, set)),
            ))
        }
        Change::Revert { set } => {
            let annotations = serde_json::json!({
                RIGHTSIZING_PREVIOUS: null,
                RIGHTSIZED_AT: null,
                RIGHTSIZING_CONTROL: "reverted",
            });
            let summary = if set.is_empty() {
                "nothing was recorded to restore".to_string()
            } else {
                describe(&current, set)
            };
            Some((
                "revert",
                change_patch(workload.kind, set, annotations, version),
                summary,
            ))
        }
    }
}

/// Patch one change into its workload, then count it, record its Event on the workload and its
/// metric.
async fn carry_out<C: Cloud>(
    pctx: &PolicyContext<C>,
    workload: &Workload,
    action: &'static str,
    patch: &serde_json::Value,
    summary: &str,
    tally: &mut Tally,
    notes: &mut Vec<String>,
) {
    let (reason, warning, note, result) = match patch_workload(&pctx.base.client, workload, patch)
        .await
    {
        Ok(()) if action == "apply" => {
            tally.applied += 1;
            (
                "RightsizingApplied",
                false,
                format!(
                    "{summary}; previous values in {RIGHTSIZING_PREVIOUS}; to undo: kubectl annotate {} {} {RIGHTSIZING_CONTROL}=revert",
                    workload.kind.as_str().to_lowercase(),
                    workload.name
                ),
                "ok",
            )
        }
        Ok(()) => {
            tally.reverted += 1;
            (
                "RightsizingReverted",
                false,
                format!(
                    "{summary}; {RIGHTSIZING_CONTROL} set to reverted, remove it to let Apply manage the workload again"
                ),
                "ok",
            )
        }
        Err(e) => {
            tally.failed += 1;
            let why = match &e {
                kube::Error::Api(s) if s.code == 409 => {
                    "it changed since it was read; decided again next pass".to_string()
                }
                kube::Error::Api(s) => format!("HTTP {}: {}", s.code, s.message),
                e => e.to_string(),
            };
            notes.push(format!("right-sizing could not {action} {workload}: {why}"));
            (
                "RightsizingFailed",
                true,
                format!("could not {action} ({summary}): {why}"),
                "error",
            )
        }
    };
    pctx.base
        .metrics
        .rightsizing_changes
        .with_label_values(&[action, result])
        .inc();
    pctx.base
        .event(&object_ref(workload), warning, reason, note)
        .await;
}

/// The pass's right-sizing line of the Ready message.
fn summary_note(
    mode: RightsizingMode,
    recs: &[Recommendation],
    tally: &Tally,
    dry_run: bool,
) -> String {
    let total: f64 = recs.iter().map(|r| r.monthly_savings).sum();
    let top = recs.first().map(|r| {
        let target = r.target();
        format!(
            "; top: {} {} cpu {} -> {}, memory {} -> {}",
            r.workload,
            r.container,
            r.current.cpu_millis.map_or("-".into(), cpu_text),
            target.cpu_millis.map_or("-".into(), cpu_text),
            r.current.memory_bytes.map_or("-".into(), memory_text),
            target.memory_bytes.map_or("-".into(), memory_text),
        )
    });
    let mut note = format!(
        "{}right-sizing: {} container recommendations, ${total:.2}/month of requests freed; {}{}",
        if dry_run { "dry run: " } else { "" },
        recs.len(),
        if dry_run {
            "no workload annotated".to_string()
        } else {
            format!(
                "{} workloads annotated {RECOMMENDED_REQUESTS}",
                tally.annotated
            )
        },
        top.unwrap_or_default()
    );
    if mode == RightsizingMode::Apply || tally.reverted + tally.failed > 0 {
        note.push_str(&format!(
            "; applied {}, reverted {}, failed {}",
            tally.applied, tally.reverted, tally.failed
        ));
        if !tally.held.is_empty() {
            let held: Vec<String> = tally.held.iter().map(|(k, n)| format!("{k} {n}")).collect();
            note.push_str(&format!(", held: {}", held.join(", ")));
        }
    }
    note
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::rightsizing::{GIB, MIB, Requests, Sample};
    use crate::k8s::ContainerRequests;
    use crate::prometheus::response::Series;
    use crate::prometheus::usage::{Observed, Owners};

    fn policy(rightsizing: &str) -> OptimizationPolicy {
        let text = format!(
            "apiVersion: cloudoptim.io/v1alpha1\nkind: OptimizationPolicy\nmetadata: {{name: p}}\nspec: {{rightsizing: {rightsizing}}}"
        );
        serde_yaml::from_str(&text).expect("policy")
    }

    #[test]
    fn validate_names_the_field_and_off_reads_nothing() {
        assert!(
            validate(&policy("{mode: Off}"), false)
                .expect("valid")
                .is_none()
        );
        let no_url = validate(&policy("{mode: Recommend}"), false).expect_err("refused");
        assert!(
            no_url
                .to_string()
                .starts_with("spec.rightsizing.prometheusUrl:"),
            "{no_url}"
        );
        let bad = validate(
            &policy("{mode: Recommend, prometheusUrl: 'http://p:9090', minCpu: x}"),
            false,
        )
        .expect_err("refused");
        assert!(
            bad.to_string().starts_with("spec.rightsizing.minCpu:"),
            "{bad}"
        );
        assert!(
            matches!(bad, Error::Invalid { .. }),
            "waits for a change to the spec"
        );
        let apply = "{mode: Apply, prometheusUrl: 'http://p:9090'}";
        let refused = validate(&policy(apply), false).expect_err("refused without the flag");
        assert!(
            refused.to_string().starts_with("spec.rightsizing.mode:")
                && refused.to_string().contains("rightsizing.apply.enabled"),
            "{refused}"
        );
        assert!(validate(&policy(apply), true).expect("valid").is_some());
        let (settings, url, window) = validate(
            &policy("{mode: Recommend, prometheusUrl: 'http://p:9090', window: 7d}"),
            false,
        )
        .expect("valid")
        .expect("on");
        assert_eq!(url, "http://p:9090");
        assert_eq!(window, Duration::from_secs(7 * 86_400));
        assert_eq!(settings.cpu_percentile, 95.0);
    }

    fn series(pod: &str, value: f64) -> Series {
        Series {
            labels: [("namespace", "shop"), ("pod", pod), ("container", "app")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            samples: (0..72)
                .map(|h| Sample {
                    at: h * 3600,
                    value,
                })
                .collect(),
        }
    }

    fn template(kind: WorkloadKind, name: &str) -> PodWorkload {
        PodWorkload {
            namespace: "shop".into(),
            name: format!("{name}-template-0"),
            workload: Some(Workload {
                namespace: "shop".into(),
                kind,
                name: name.into(),
            }),
            owner_name: None,
            containers: vec![ContainerRequests {
                name: "app".into(),
                requests: Requests {
                    cpu_millis: Some(1000),
                    memory_bytes: Some(GIB),
                },
                memory_limit: None,
            }],
            running: true,
        }
    }

    fn owner(pod: &str, kind: &str, name: &str) -> Series {
        Series {
            labels: [
                ("namespace", "shop"),
                ("pod", pod),
                ("owner_kind", kind),
                ("owner_name", name),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            samples: vec![Sample { at: 0, value: 1.0 }],
        }
    }

    #[test]
    fn usage_becomes_status_recommendations_and_one_annotation_per_workload() {
        let rs = Series {
            labels: [
                ("namespace", "shop"),
                ("replicaset", "web-abc"),
                ("owner_kind", "Deployment"),
                ("owner_name", "web"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            samples: vec![Sample { at: 0, value: 1.0 }],
        };
        let usage = Usage {
            mode: RightsizingMode::Recommend,
            states: Vec::new(),
            seen: BTreeMap::new(),
            settings: RsSettings::default(),
            read: Read {
                observed: Observed {
                    cpu: vec![series("web-abc-1", 0.1), series("db-0", 0.9)],
                    memory: vec![
                        series("web-abc-1", 300.0 * MIB as f64),
                        series("db-0", GIB as f64),
                    ],
                    ..Observed::default()
                },
                owners: Owners::from_series(
                    &[
                        owner("web-abc-1", "ReplicaSet", "web-abc"),
                        owner("db-0", "StatefulSet", "db"),
                    ],
                    &[rs],
                    &[],
                ),
                step: Duration::from_secs(60),
            },
            templates: vec![
                template(WorkloadKind::Deployment, "web"),
                template(WorkloadKind::StatefulSet, "db"),
            ],
        };
        let recs = plan(&usage, &[]);
        assert_eq!(recs.len(), 2, "{recs:#?}");
        let web = recs.iter().find(|r| r.workload.name == "web").expect("web");
        assert_eq!(web.recommended.cpu_millis, Some(120));
        let status = status_recommendations(&recs);
        let web_status = status
            .iter()
            .find(|s| s.workload == "Deployment/web")
            .expect("web");
        assert_eq!(
            (
                web_status.cpu_request.as_deref(),
                web_status.recommended_cpu.as_str()
            ),
            (Some("1"), "120m")
        );
        assert_eq!(web_status.recommended_memory, "360Mi");
        let annotations = annotations(&recs);
        let value: serde_json::Value = serde_json::from_str(
            annotations
                .iter()
                .find(|(w, _)| w.name == "web")
                .map(|(_, v)| v.as_str())
                .expect("web annotated"),
        )
        .expect("JSON");
        assert_eq!(
            value,
            serde_json::json!({"app": {"cpu": "120m", "memory": "360Mi"}})
        );
    }
}
