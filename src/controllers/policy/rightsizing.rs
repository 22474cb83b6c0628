//! rightsizing (`spec.rightsizing.mode: Recommend`, issue #17): read container usage from the
//! policy's Prometheus and the workloads' pod templates -> validate the settings -> recommend (engine)
//! -> annotate each Deployment, StatefulSet and CronJob with a recommendation
//! (`cloudoptim.io/recommended-requests`), record an Event -> the top 20 in `status.recommendations`.
//!
//! The read runs before anything else of the pass acts: an unreachable Prometheus (or a refused query)
//! fails the pass, so the policy turns `Ready=False` naming the URL and nothing is changed. In dry run
//! the recommendations go to the status and an Event only; no workload is annotated. DaemonSets and
//! bare ReplicaSets and Jobs are recommended in the status but not annotated (the operator may patch
//! only Deployments, StatefulSets and CronJobs). `mode: Apply` is refused at admission (not done yet).

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{Pod as CorePod, PodTemplateSpec};
use kube::api::{Patch, PatchParams};

use super::*;
use crate::api::policy::{Recommendation as StatusRecommendation, RightsizingMode};
use crate::engine::rightsizing::{
    Confidence, Recommendation, Settings as RsSettings, WorkloadKind,
};
use crate::http::client::Proxies;
use crate::k8s::PodWorkload;
use crate::names::RECOMMENDED_REQUESTS;
use crate::prometheus::read::Read;
use crate::prometheus::{Prometheus, PrometheusOptions};

/// Recommendations kept in the status.
pub(super) const STATUS_TOP: usize = 20;

/// What the read step found: the usage, the workloads' pod templates, the settings.
pub(super) struct Usage {
    settings: RsSettings,
    read: Read,
    templates: Vec<PodWorkload>,
}

/// `spec.rightsizing` checked: `None` when the mode is Off; errors name the field.
pub(super) fn validate(
    policy: &OptimizationPolicy,
) -> Result<Option<(RsSettings, String, Duration)>, Error> {
    let spec = &policy.spec.rightsizing;
    let invalid = |field: &str, message: String| Error::Invalid {
        field: format!("rightsizing.{field}"),
        message,
    };
    match spec.mode {
        RightsizingMode::Off => return Ok(None),
        RightsizingMode::Recommend => {}
        RightsizingMode::Apply => {
            return Err(invalid(
                "mode",
                "Apply is not implemented yet (issue #17); use Recommend".into(),
            ));
        }
    }
    let url = spec.prometheus_url.clone().ok_or_else(|| {
        invalid(
            "prometheusUrl",
            "mode Recommend needs the Prometheus that holds container usage, e.g. http://prometheus.monitoring:9090".into(),
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

/// read: usage from Prometheus over the window, and the pod templates of the cluster's Deployments,
/// StatefulSets and CronJobs. `None` when the mode is Off.
pub(super) async fn read<C: Cloud>(
    policy: &OptimizationPolicy,
    pctx: &PolicyContext<C>,
) -> Result<Option<Usage>, Error> {
    let Some((settings, url, window)) = validate(policy)? else {
        return Ok(None);
    };
    let options = PrometheusOptions {
        proxies: Proxies::from_env(),
        ..PrometheusOptions::new(&url)
    };
    let prom = Prometheus::new(&options)?;
    let read = crate::prometheus::read::read(&prom, None, window, Utc::now().timestamp()).await?;
    let templates = workload_templates(&pctx.base.client).await?;
    Ok(Some(Usage {
        settings,
        read,
        templates,
    }))
}

/// Every Deployment's, StatefulSet's and CronJob's pod template as a running "pod" of the workload,
/// once per replica (so the savings count each replica).
async fn workload_templates(client: &kube::Client) -> Result<Vec<PodWorkload>, Error> {
    let mut out = Vec::new();
    let list = ListParams::default();
    for d in Api::<Deployment>::all(client.clone()).list(&list).await? {
        let spec = d.spec.as_ref();
        let replicas = spec.and_then(|s| s.replicas).unwrap_or(1);
        let template = spec.map(|s| s.template.clone());
        push_template(
            &mut out,
            &d.metadata,
            WorkloadKind::Deployment,
            template,
            replicas,
        );
    }
    for s in Api::<StatefulSet>::all(client.clone()).list(&list).await? {
        let spec = s.spec.as_ref();
        let replicas = spec.and_then(|s| s.replicas).unwrap_or(1);
        let template = spec.map(|s| s.template.clone());
        push_template(
            &mut out,
            &s.metadata,
            WorkloadKind::StatefulSet,
            template,
            replicas,
        );
    }
    for c in Api::<CronJob>::all(client.clone()).list(&list).await? {
        let template = c
            .spec
            .as_ref()
            .and_then(|s| s.job_template.spec.as_ref())
            .map(|j| j.template.clone());
        push_template(&mut out, &c.metadata, WorkloadKind::CronJob, template, 1);
    }
    Ok(out)
}

fn push_template(
    out: &mut Vec<PodWorkload>,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    kind: WorkloadKind,
    template: Option<PodTemplateSpec>,
    replicas: i32,
) {
    let (Some(name), Some(template)) = (meta.name.clone(), template) else {
        return;
    };
    let namespace = meta.namespace.clone().unwrap_or_default();
    let pod = CorePod {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(format!("{name}-template")),
            namespace: Some(namespace.clone()),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    };
    let Ok(mut workload) =
        crate::k8s::pod_workload(&pod, &format!("{} {namespace}/{name}", kind.as_str()))
    else {
        return;
    };
    workload.workload = Some(crate::engine::rightsizing::Workload {
        namespace,
        kind,
        name,
    });
    workload.running = true;
    for i in 0..replicas.max(0) {
        let mut replica = workload.clone();
        replica.name = format!("{}-{i}", replica.name);
        out.push(replica);
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

/// `250m`, `2`.
fn cpu_text(millis: u64) -> String {
    if millis.is_multiple_of(1000) {
        format!("{}", millis / 1000)
    } else {
        format!("{millis}m")
    }
}

/// `360Mi`.
fn memory_text(bytes: u64) -> String {
    format!("{}Mi", bytes.div_ceil(crate::engine::rightsizing::MIB))
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
pub(super) fn annotations(
    recs: &[Recommendation],
) -> BTreeMap<crate::engine::rightsizing::Workload, String> {
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

/// act: annotate the workloads (not in dry run), record one Event; returns the notes for the Ready
/// message and the status recommendations.
pub(super) async fn act<C: Cloud>(
    pctx: &PolicyContext<C>,
    policy: &OptimizationPolicy,
    recs: &[Recommendation],
    dry_run: bool,
) -> (Vec<String>, Vec<StatusRecommendation>) {
    let mut notes = Vec::new();
    let client = &pctx.base.client;
    let mut annotated = 0;
    if !dry_run {
        for (workload, value) in annotations(recs) {
            let patch =
                serde_json::json!({"metadata": {"annotations": {RECOMMENDED_REQUESTS: value}}});
            let params = PatchParams::default();
            let (ns, name) = (workload.namespace.as_str(), workload.name.as_str());
            let result = match workload.kind {
                WorkloadKind::Deployment => Api::<Deployment>::namespaced(client.clone(), ns)
                    .patch(name, &params, &Patch::Merge(&patch))
                    .await
                    .map(drop),
                WorkloadKind::StatefulSet => Api::<StatefulSet>::namespaced(client.clone(), ns)
                    .patch(name, &params, &Patch::Merge(&patch))
                    .await
                    .map(drop),
                WorkloadKind::CronJob => Api::<CronJob>::namespaced(client.clone(), ns)
                    .patch(name, &params, &Patch::Merge(&patch))
                    .await
                    .map(drop),
                _ => continue,
            };
            match result {
                Ok(()) => annotated += 1,
                Err(e) => notes.push(format!("annotating {workload}: {e}")),
            }
        }
    }
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
    let note = format!(
        "{}right-sizing: {} container recommendations, ${total:.2}/month of requests freed; {}{}",
        if dry_run { "dry run: " } else { "" },
        recs.len(),
        if dry_run {
            "no workload annotated".to_string()
        } else {
            format!("{annotated} workloads annotated {RECOMMENDED_REQUESTS}")
        },
        top.unwrap_or_default()
    );
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::rightsizing::{GIB, MIB, Requests, Sample, Workload};
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
        assert!(validate(&policy("{mode: Off}")).expect("valid").is_none());
        let no_url = validate(&policy("{mode: Recommend}")).expect_err("refused");
        assert!(
            no_url
                .to_string()
                .starts_with("spec.rightsizing.prometheusUrl:"),
            "{no_url}"
        );
        let bad = validate(&policy(
            "{mode: Recommend, prometheusUrl: 'http://p:9090', minCpu: x}",
        ))
        .expect_err("refused");
        assert!(
            bad.to_string().starts_with("spec.rightsizing.minCpu:"),
            "{bad}"
        );
        assert!(
            matches!(bad, Error::Invalid { .. }),
            "waits for a change to the spec"
        );
        let apply = validate(&policy("{mode: Apply, prometheusUrl: 'http://p:9090'}"))
            .expect_err("refused");
        assert!(apply.to_string().contains("not implemented"), "{apply}");
        let (settings, url, window) = validate(&policy(
            "{mode: Recommend, prometheusUrl: 'http://p:9090', window: 7d}",
        ))
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
