//! On-demand prices from the Price List API and `cloudoptim catalog export`, against real peers: the
//! real SDK client talks to a local endpoint serving recorded GetProducts shapes (moto has no `pricing`
//! backend), and `catalog export` reads EC2 from moto. The exported catalog then ranks a GPU template
//! in a region outside us-east-1. The running operator prices on-demand candidates from that endpoint
//! and names the source in a NodeTemplate's Ready message and in its metrics.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cloudoptim::api::{CapacityType, NodeTemplate};
use cloudoptim::cloud::Cloud;
use cloudoptim::cloud::aws::{AwsCloud, AwsOptions};
use cloudoptim::engine::catalog::ProductProblem;
use kube::api::{Api, PostParams};
use serde_json::json;
use support::operator::{Operator, eventually};
use support::pricing::PricingEndpoint;

const REGION: &str = "eu-west-3";

#[tokio::test]
async fn the_sdk_client_pages_retries_throttling_and_skips_malformed_products() {
    let endpoint = PricingEndpoint::start().await;
    let metrics = cloudoptim::metrics::Metrics::new().expect("metrics");
    // Only the Price List API is called: every client may point at the recorded endpoint.
    let options = AwsOptions {
        region: REGION.into(),
        pricing_endpoint_url: Some(endpoint.url.clone()),
        ..support::aws::options(&endpoint.url)
    };
    let cloud = AwsCloud::connect(&options, metrics.clone()).await;

    let prices = cloud
        .on_demand_prices(REGION)
        .await
        .expect("prices after one retry");

    let got: Vec<(&str, f64)> = prices
        .prices
        .iter()
        .map(|(t, p)| (t.as_str(), *p))
        .collect();
    assert_eq!(
        got,
        vec![
            ("g5.xlarge", 1.229),
            ("m5.large", 0.112),
            ("m7g.large", 0.0952),
            ("r5.large", 0.148)
        ],
        "both pages are read"
    );
    let problems: Vec<&ProductProblem> = prices.skipped.iter().map(|s| &s.problem).collect();
    assert_eq!(
        problems,
        vec![
            &ProductProblem::BadPrice("N/A".into()),
            &ProductProblem::NotJson
        ],
        "the malformed products are skipped and named"
    );
    let seen = endpoint.seen.lock().unwrap();
    assert_eq!(seen.bodies.len(), 3, "throttled once, then two pages");
    assert!(
        seen.targets
            .iter()
            .all(|t| t == "AWSPriceListService.GetProducts"),
        "{:?}",
        seen.targets
    );
    assert!(
        seen.authorizations
            .iter()
            .all(|a| a.contains("/us-east-1/pricing/aws4_request")),
        "the Price List API is signed for us-east-1 whatever the cluster's region: {:?}",
        seen.authorizations
    );
    let first = &seen.bodies[1];
    assert_eq!(first["ServiceCode"], "AmazonEC2");
    let filters = first["Filters"].as_array().expect("filters");
    assert!(
        filters
            .iter()
            .any(|f| f["Field"] == "regionCode" && f["Value"] == REGION),
        "{filters:?}"
    );
    assert!(
        seen.bodies[2]["NextToken"].is_string(),
        "page 2 asks with the token"
    );
    assert_eq!(
        metrics
            .aws_api_calls
            .with_label_values(&["GetProducts", "ok"])
            .get(),
        1
    );
}

fn cloudoptim(args: &[&str], envs: &[(&str, &str)]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cloudoptim"))
        .args(args)
        .envs(envs.iter().copied())
        .env("AWS_ACCESS_KEY_ID", support::aws::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", support::aws::SECRET_KEY)
        .env_remove("AWS_PROFILE")
        .output()
        .expect("cloudoptim runs")
}

fn ok(output: &std::process::Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_export_ranks_a_gpu_template_outside_us_east_1() {
    let Some(moto) = support::Moto::start() else {
        return;
    };
    let endpoint = PricingEndpoint::start().await;
    let dir = std::env::temp_dir().join(support::unique("cloudoptim-catalog-export"));
    let feed = support::repo_root().join("tests/data/spot-advisor/spot-advisor-data.json");
    let (moto_url, pricing_url) = (moto.endpoint.clone(), endpoint.url.clone());
    let out = dir.clone();
    let export = tokio::task::spawn_blocking(move || {
        cloudoptim(
            &[
                "catalog",
                "export",
                "--region",
                REGION,
                "--out",
                out.to_str().unwrap(),
                "--aws-endpoint-url",
                &moto_url,
                "--pricing-endpoint-url",
                &pricing_url,
                "--spot-advisor-url",
                &format!("file://{}", feed.display()),
            ],
            &[],
        )
    })
    .await
    .unwrap();
    let summary = ok(&export, "catalog export");
    assert!(summary.contains(REGION), "{summary}");
    for file in [
        "instance-types.csv",
        "on-demand-prices.csv",
        "spot-prices.csv",
        "spot-advisor.json",
    ] {
        assert!(dir.join(file).exists(), "{file} written");
    }
    let types = std::fs::read_to_string(dir.join("instance-types.csv")).unwrap();
    assert!(
        types
            .lines()
            .any(|l| l.starts_with("g4dn.xlarge,g4dn,x86_64,4,16384,1,")),
        "GPU count from GpuInfo"
    );
    let on_demand = std::fs::read_to_string(dir.join("on-demand-prices.csv")).unwrap();
    assert!(
        on_demand.contains("eu-west-3,m5.large,0.112"),
        "{on_demand}"
    );

    let template = dir.join("gpu-template.yaml");
    std::fs::write(
        &template,
        "apiVersion: cloudoptim.io/v1alpha1\nkind: NodeTemplate\nmetadata: {name: gpu}\n\
         spec:\n  requirements:\n    minGpus: 1\n    capacityTypes: [spot]\n",
    )
    .unwrap();
    let ranked = ok(
        &cloudoptim(&rank_args(&dir, Some(&template)), &[]),
        "rank --template gpu",
    );
    let candidates: Vec<serde_json::Value> = serde_json::from_str(&ranked).expect("json");
    assert!(!candidates.is_empty(), "a GPU template ranks");
    for c in &candidates {
        let name = c["instanceType"].as_str().unwrap();
        let gpus = types
            .lines()
            .find(|l| l.starts_with(&format!("{name},")))
            .and_then(|l| l.split(',').nth(5))
            .unwrap();
        assert_ne!(gpus, "0", "{name} has no GPU");
        assert!(c["zone"].as_str().unwrap().starts_with(REGION));
    }
    let all = ok(
        &cloudoptim(&rank_args(&dir, None), &[]),
        "rank without a template",
    );
    assert!(all.contains("eu-west-3"));
    let _ = std::fs::remove_dir_all(&dir);
}

fn rank_args<'a>(dir: &'a Path, template: Option<&'a Path>) -> Vec<&'a str> {
    let mut args = vec![
        "rank",
        "--region",
        REGION,
        "--catalog",
        dir.to_str().unwrap(),
        "-o",
        "json",
    ];
    if let Some(t) = template {
        args.extend(["--template", t.to_str().unwrap()]);
    }
    args
}

#[test]
fn rank_for_a_region_the_embedded_catalog_lacks_names_catalog_export() {
    let output = cloudoptim(&["rank", "--region", "ap-southeast-4"], &[]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cloudoptim catalog export --region ap-southeast-4 --out DIR"),
        "{stderr}"
    );
}

/// The Ready condition's (status, message) once it is about the template's current generation.
async fn ready(api: &Api<NodeTemplate>, name: &str) -> Option<(String, String)> {
    let template = api.get(name).await.ok()?;
    let status = template.status?;
    if status.observed_generation != template.metadata.generation {
        return None;
    }
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready")?;
    Some((ready.status.clone(), ready.message.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_prices_on_demand_from_the_price_list_api_and_says_so() {
    let Some(cp) = support::ControlPlane::shared() else {
        return;
    };
    let Some(moto) = support::Moto::start() else {
        return;
    };
    let region = support::aws::REGION;
    let endpoint = PricingEndpoint::start_for_region(region).await;
    let sdk = support::aws::sdk_config(&moto.endpoint).await;
    let pool = support::unique("priced");
    let launch_template = support::aws::launch_template(&sdk, &support::unique("lt")).await;
    let tags = [("cloudoptim.io/pool", pool.as_str())]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    support::aws::create_group(&sdk, &format!("{pool}-a"), &launch_template, 1, &tags).await;
    let name = support::unique("priced");
    let template: NodeTemplate = serde_json::from_value(json!({
        "apiVersion": "cloudoptim.io/v1alpha1", "kind": "NodeTemplate",
        "metadata": {"name": name},
        "spec": {
            "autoScalingGroups": {"tagSelector": {"cloudoptim.io/pool": pool}},
            "requirements": {"families": ["m5", "r5"], "minVcpu": 2, "maxVcpu": 2, "currentGenerationOnly": false, "capacityTypes": ["on-demand"]}
        }
    }))
    .expect("template");
    let templates: Api<NodeTemplate> = Api::all(cp.client().await);
    templates
        .create(&PostParams::default(), &template)
        .await
        .expect("template created");

    let operator = Operator::start(
        cp,
        &moto,
        "e2e-pricing",
        &["--pricing-endpoint-url", &endpoint.url],
    );

    let (status, message) = eventually(Duration::from_secs(90), "Ready", || {
        ready(&templates, &name)
    })
    .await;
    assert_eq!(status, "True", "{message}\n{}", operator.log_tail());
    assert!(
        message.contains("; on-demand prices: live from the Price List API ("),
        "{message}"
    );
    let stored = templates.get(&name).await.expect("template");
    let on_demand: Vec<(String, Option<f64>)> = stored
        .status
        .expect("status")
        .candidates
        .into_iter()
        .filter(|c| c.capacity_type == CapacityType::OnDemand)
        .map(|c| (c.instance_type, c.on_demand_price))
        .collect();
    assert!(
        on_demand.contains(&("m5.large".to_string(), Some(0.112))),
        "ranked with the Price List's m5.large price, not the embedded 0.096: {on_demand:?}"
    );
    let (_, metrics) = operator.get("/metrics").expect("/metrics answers");
    for (source, value) in [("live", 1), ("last_good", 0), ("embedded", 0)] {
        let line = format!(
            "cloudoptim_on_demand_prices_source{{region=\"{region}\",source=\"{source}\"}} {value}"
        );
        assert!(metrics.contains(&line), "{line} in:\n{metrics}");
    }
    let age = operator.metric(&format!(
        "cloudoptim_on_demand_prices_age_seconds{{region=\"{region}\"}}"
    ));
    assert!(
        metrics.contains("cloudoptim_on_demand_prices_age_seconds{") && age < 300.0,
        "{age}"
    );
    let seen = endpoint.seen.lock().unwrap();
    assert_eq!(
        seen.bodies.len(),
        3,
        "one fetch (throttled once, two pages), not one per reconcile"
    );
}
