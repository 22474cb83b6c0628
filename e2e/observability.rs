//! The dashboard and the alerts against a real Prometheus: it scrapes the real `cloudoptim run` (one
//! policy over a moto group of kwok nodes, a hibernation schedule, an interruption queue, a hub member)
//! and the real `cloudoptim hub`, evaluates `charts/cloudoptim/files/alerts.yaml` (the file the chart's
//! PrometheusRule carries), and every query of `charts/cloudoptim/files/dashboards/queries.txt` (the
//! dashboard's own queries, kept in sync by scripts/check-observability.sh) must return data; no alert
//! may be pending or firing on this healthy cluster.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use cloudoptim::api::{HibernationSchedule, NodeTemplate, OptimizationPolicy};
use kube::api::{Api, PostParams};
use serde_json::json;
use support::hub::{Hub, HubOptions};
use support::nodes::FakeNode;
use support::operator::{Operator, eventually};
use support::prometheus::{Job, Prometheus};
use support::{ControlPlane, Moto, aws, create_namespace, repo_root, unique};

const WAIT: Duration = Duration::from_secs(90);
const CLUSTER: &str = "cluster-obs";
/// The job names the chart's ServiceMonitor gives (the alerts' default `job="cloudoptim"`).
const JOB: &str = "cloudoptim";
const HUB_JOB: &str = "cloudoptim-hub";

/// Queries that show data only after an event this healthy scenario does not produce, and why.
const AFTER_AN_EVENT: [(&str, &str); 1] = [(
    "sum by (controller, reason) (increase(cloudoptim_reconcile_errors_total",
    "a reconcile error's reason is known only when one happens; the panel's other query (or vector(0)) shows 0",
)];

/// (panel title, query with the variables substituted) of every dashboard query.
fn dashboard_queries() -> Vec<(String, String)> {
    let text =
        std::fs::read_to_string(repo_root().join("charts/cloudoptim/files/dashboards/queries.txt"))
            .expect("queries.txt");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let mut fields = l.splitn(3, '\t');
            let (_, title, expr) = (fields.next(), fields.next(), fields.next());
            let expr = expr
                .expect("<panel> TAB <title> TAB <expr>")
                .replace("$hub_job", HUB_JOB)
                .replace("$job", JOB)
                .replace("$__rate_interval", "1m");
            (title.unwrap_or_default().to_string(), expr)
        })
        .collect()
}

fn spot_warning(instance: &str, zone: &str) -> String {
    json!({
        "version": "0", "id": unique("evt-obs"), "detail-type": "EC2 Spot Instance Interruption Warning",
        "source": "aws.ec2", "account": "123456789012",
        "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "region": aws::REGION, "resources": [format!("arn:aws:ec2:{zone}:instance/{instance}")],
        "detail": {"instance-id": instance, "instance-action": "terminate"}
    })
    .to_string()
}

async fn create<K>(client: &kube::Client, value: serde_json::Value)
where
    K: kube::Resource<Scope = k8s_openapi::ClusterResourceScope>
        + serde::de::DeserializeOwned
        + serde::Serialize
        + Clone
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let object: K = serde_json::from_value(value).expect("object");
    Api::<K>::all(client.clone())
        .create(&PostParams::default(), &object)
        .await
        .expect("object created");
}

#[tokio::test]
async fn prometheus_scrapes_operator_and_hub_every_dashboard_query_has_data_no_alert_fires() {
    let Some(cp) = ControlPlane::shared() else {
        return;
    };
    let Some(cp_hub) = support::api_only_cluster("obs-hub").await else {
        return;
    };
    let Some(moto) = Moto::start() else { return };
    let client = cp.client().await;
    let sdk = aws::sdk_config(&moto.endpoint).await;

    // AWS: one group of two instances, a kwok node for each; an interruption queue.
    let pool = unique("obs");
    let launch = aws::launch_template(&sdk, &unique("lt")).await;
    let group_tags = BTreeMap::from([
        ("cloudoptim.io/cluster".to_string(), CLUSTER.to_string()),
        ("e2e-pool".to_string(), pool.clone()),
    ]);
    aws::create_group(&sdk, &pool, &launch, 2, &group_tags).await;
    let described = aws::describe_group(&sdk, &pool)
        .await
        .expect("the group exists");
    let instances: Vec<(String, String)> = described
        .instances()
        .iter()
        .filter_map(|i| {
            Some((
                i.instance_id()?.to_string(),
                i.availability_zone()?.to_string(),
            ))
        })
        .collect();
    assert_eq!(instances.len(), 2, "moto launched the group's instances");
    for (n, (id, zone)) in instances.iter().enumerate() {
        let name = format!("{pool}-{n}");
        let mut node = FakeNode::new(&name, zone, id);
        // One Spot and one on-demand node: both capacity types on the dashboard.
        node.capacity_type = if n == 0 { "spot" } else { "on-demand" }.into();
        node.labels.insert("e2e-pool".into(), pool.clone());
        node.create(&client).await;
    }
    let (sqs, url) = aws::queue(&sdk, "obs-interruptions").await;

    // The custom resources: a template over the group, a policy with the queue (consolidation off,
    // zombies reported), a schedule awake all week for an empty namespace.
    create::<NodeTemplate>(&client, json!({
        "apiVersion": "cloudoptim.io/v1alpha1", "kind": "NodeTemplate",
        "metadata": {"name": pool, "labels": {"pool": pool}},
        "spec": {"autoScalingGroups": {"tagSelector": {"e2e-pool": pool}}, "requirements": {"families": ["m5"], "currentGenerationOnly": false}}
    }))
    .await;
    create::<OptimizationPolicy>(
        &client,
        json!({
            "apiVersion": "cloudoptim.io/v1alpha1", "kind": "OptimizationPolicy",
            "metadata": {"name": pool},
            "spec": {
                "nodeTemplateSelector": {"matchLabels": {"pool": pool}},
                "consolidation": {"mode": "Off", "interval": "2s"},
                "zombies": {"mode": "Report"},
                "interruptions": {"queueUrl": url, "drainDeadline": "60s"}
            }
        }),
    )
    .await;
    let sleepy = create_namespace(&client, "obs-hib").await;
    create::<HibernationSchedule>(&client, json!({
        "apiVersion": "cloudoptim.io/v1alpha1", "kind": "HibernationSchedule",
        "metadata": {"name": pool},
        "spec": {"timeZone": "UTC", "awake": ["Mon-Sun 00:00-24:00"], "targets": {"namespaces": [sleepy]}}
    }))
    .await;

    // The hub, and the operator as its member.
    let hub = Hub::start_with(
        &cp_hub,
        HubOptions {
            ttl: 600,
            members: &[(CLUSTER, "token-obs")],
            tls: true,
            args: &["--confirmations=1"],
        },
    );
    let token = cp.dir.join(unique("token-obs"));
    std::fs::write(&token, "token-obs").expect("token");
    let mut args = hub.member_args();
    args.extend(["--hub-token-file".into(), token.display().to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let operator = Operator::start(cp, &moto, CLUSTER, &args);

    // Prometheus scraping both, with the chart's alert rules.
    let rules = repo_root().join("charts/cloudoptim/files/alerts.yaml");
    let Some(prometheus) = Prometheus::start(
        &cp.dir.join(unique("prometheus")),
        &[
            Job {
                name: JOB,
                targets: vec![format!("127.0.0.1:{}", operator.metrics_port)],
            },
            Job {
                name: HUB_JOB,
                targets: vec![format!("127.0.0.1:{}", hub.metrics_port())],
            },
        ],
        &[&rules],
    ) else {
        return;
    };
    eventually(WAIT, "Prometheus scraping both jobs", || async {
        let up = prometheus.query("sum(up) == 2").await.ok()?;
        (!up.is_empty()).then_some(())
    })
    .await;

    // An interruption for the Spot node: cordon, drain, a flag, a report to the hub.
    sqs.send_message()
        .queue_url(&url)
        .message_body(spot_warning(&instances[0].0, &instances[0].1))
        .send()
        .await
        .expect("send message");
    eventually(WAIT, "the notice handled and its flag reported to the hub", || async {
        let handled = prometheus
            .query("cloudoptim_interruption_cordon_latency_seconds_count{kind=\"spot_interruption\"} > 0")
            .await
            .ok()?;
        let reported = prometheus
            .query("cloudoptim_hub_reports_total{job=\"cloudoptim-hub\",result=\"created\"} > 0")
            .await
            .ok()?;
        (!handled.is_empty() && !reported.is_empty()).then_some(())
    })
    .await;

    // Every dashboard query has data (the scenario's series may need a scrape or two more).
    let queries = dashboard_queries();
    assert!(
        queries.len() >= 40,
        "queries.txt lists the dashboard's queries"
    );
    let mut missing = Vec::new();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        missing.clear();
        for (title, expr) in &queries {
            if AFTER_AN_EVENT
                .iter()
                .any(|(prefix, _)| expr.starts_with(prefix))
            {
                continue;
            }
            match prometheus.query(expr).await {
                Ok(result) if !result.is_empty() => {}
                Ok(_) => missing.push(format!("{title}: {expr}: no data")),
                Err(e) => missing.push(format!("{title}: {e}")),
            }
        }
        if missing.is_empty() || std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    assert!(
        missing.is_empty(),
        "dashboard queries without data:\n{}\noperator log:\n{}\nprometheus log:\n{}",
        missing.join("\n"),
        operator.log_tail(),
        prometheus.log_tail()
    );

    // The rules loaded (all eight) and none is pending or firing on this healthy cluster.
    let rules_text = std::fs::read_to_string(&rules).expect("alerts.yaml");
    let rule_count = rules_text.matches("- alert:").count();
    assert!(rule_count >= 8, "alerts.yaml holds the alerts");
    let active = prometheus.query("ALERTS").await.expect("ALERTS");
    assert!(
        active.is_empty(),
        "alerts pending or firing on a healthy cluster: {active:?}"
    );
    let groups = prometheus.get("/api/v1/rules").await.expect("rules API");
    let evaluated: usize = groups["data"]["groups"]
        .as_array()
        .map(|gs| {
            gs.iter()
                .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                .filter(|r| r["health"] == "ok")
                .count()
        })
        .unwrap_or(0);
    assert_eq!(
        evaluated, rule_count,
        "every alert rule is loaded and evaluates cleanly: {groups}"
    );
}
