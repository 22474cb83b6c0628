//! On-demand prices from the Price List API and `cloudoptim catalog export`, against real peers: the
//! real SDK client talks to a local endpoint serving recorded GetProducts shapes (moto has no `pricing`
//! backend), and `catalog export` reads EC2 from moto. The exported catalog then ranks a GPU template
//! in a region outside us-east-1.

mod support;

use std::path::Path;
use std::process::Command;

use cloudoptim::cloud::Cloud;
use cloudoptim::cloud::aws::{AwsCloud, AwsOptions};
use cloudoptim::engine::catalog::ProductProblem;
use support::pricing::PricingEndpoint;

const REGION: &str = "eu-west-3";

#[tokio::test]
async fn the_sdk_client_pages_retries_throttling_and_skips_malformed_products() {
    let endpoint = PricingEndpoint::start().await;
    let metrics = cloudoptim::metrics::Metrics::new().expect("metrics");
    let options = AwsOptions {
        region: REGION.into(),
        pricing_endpoint_url: Some(endpoint.url.clone()),
        static_credentials: Some((
            support::aws::ACCESS_KEY.into(),
            support::aws::SECRET_KEY.into(),
        )),
        ..AwsOptions::default()
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
