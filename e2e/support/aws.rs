//! AWS SDK clients pointed at a moto server, and fixtures: launch templates and Auto Scaling groups.

use std::collections::BTreeMap;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_autoscaling::types::{LaunchTemplateSpecification, Tag};
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
use cloudoptim::cloud::aws::AwsOptions;

/// The region every e2e test uses.
pub const REGION: &str = "us-east-1";
/// Dummy credentials moto accepts.
pub const ACCESS_KEY: &str = "testing";
/// Dummy secret.
pub const SECRET_KEY: &str = "testing";

/// A new SQS queue named `<prefix>-<unique>`: the client and the queue URL.
pub async fn queue(sdk: &SdkConfig, prefix: &str) -> (aws_sdk_sqs::Client, String) {
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let url = sqs
        .create_queue()
        .queue_name(super::unique(prefix))
        .send()
        .await
        .expect("create queue")
        .queue_url()
        .expect("queue url")
        .to_string();
    (sqs, url)
}

/// SDK config for `endpoint` (a moto server).
pub async fn sdk_config(endpoint: &str) -> SdkConfig {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(endpoint)
        .http_client(http)
        .credentials_provider(aws_sdk_ec2::config::Credentials::new(
            ACCESS_KEY, SECRET_KEY, None, None, "e2e",
        ))
        .load()
        .await
}

/// CloudOptim's own AWS options for `endpoint` (a moto server, or a proxy in front of one): the e2e
/// region and the dummy credentials, every SDK client pointed at `endpoint`.
pub fn options(endpoint: &str) -> AwsOptions {
    AwsOptions {
        region: REGION.into(),
        endpoint_url: Some(endpoint.into()),
        static_credentials: Some((ACCESS_KEY.into(), SECRET_KEY.into())),
        ..AwsOptions::default()
    }
}

/// The first image moto knows (any will do for its instances).
async fn image_id(ec2: &aws_sdk_ec2::Client) -> String {
    ec2.describe_images()
        .send()
        .await
        .expect("describe images")
        .images()
        .first()
        .and_then(|i| i.image_id().map(str::to_string))
        .unwrap_or_else(|| "ami-12c6146b".to_string())
}

/// A launch template for test groups; returns its id.
pub async fn launch_template(config: &SdkConfig, name: &str) -> String {
    let ec2 = aws_sdk_ec2::Client::new(config);
    let image = image_id(&ec2).await;
    ec2.create_launch_template()
        .launch_template_name(name)
        .launch_template_data(
            aws_sdk_ec2::types::RequestLaunchTemplateData::builder()
                .image_id(image)
                .instance_type(aws_sdk_ec2::types::InstanceType::M5Large)
                .build(),
        )
        .send()
        .await
        .expect("create launch template")
        .launch_template()
        .and_then(|t| t.launch_template_id().map(str::to_string))
        .expect("launch template id")
}

/// Create an Auto Scaling group with `size` instances, tagged with `tags`.
pub async fn create_group(
    config: &SdkConfig,
    name: &str,
    template_id: &str,
    size: i32,
    tags: &BTreeMap<String, String>,
) {
    let autoscaling = aws_sdk_autoscaling::Client::new(config);
    let mut request = autoscaling
        .create_auto_scaling_group()
        .auto_scaling_group_name(name)
        .launch_template(
            LaunchTemplateSpecification::builder()
                .launch_template_id(template_id)
                .version("$Latest")
                .build(),
        )
        .min_size(0)
        .max_size(size.max(1) * 2)
        .desired_capacity(size)
        .availability_zones(format!("{REGION}a"))
        .availability_zones(format!("{REGION}b"));
    for (key, value) in tags {
        request = request.tags(
            Tag::builder()
                .key(key)
                .value(value)
                .resource_id(name)
                .resource_type("auto-scaling-group")
                .propagate_at_launch(true)
                .build(),
        );
    }
    request
        .send()
        .await
        .unwrap_or_else(|e| panic!("create group {name}: {e:?}"));
}

/// The group as moto reports it.
pub async fn describe_group(
    config: &SdkConfig,
    name: &str,
) -> Option<aws_sdk_autoscaling::types::AutoScalingGroup> {
    aws_sdk_autoscaling::Client::new(config)
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(name)
        .send()
        .await
        .expect("describe groups")
        .auto_scaling_groups()
        .first()
        .cloned()
}

/// Instance-type overrides of a group's MixedInstancesPolicy, in order.
pub fn overrides(group: &aws_sdk_autoscaling::types::AutoScalingGroup) -> Vec<String> {
    group
        .mixed_instances_policy()
        .and_then(|p| p.launch_template())
        .map(|lt| {
            lt.overrides()
                .iter()
                .filter_map(|o| o.instance_type().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Give `name` a MixedInstancesPolicy: `overrides` on the launch template, `on_demand_base` and
/// `on_demand_percent` above it (what a user's existing group looks like).
pub async fn set_mixed(
    config: &SdkConfig,
    name: &str,
    template_id: &str,
    overrides: &[&str],
    on_demand_base: i32,
    on_demand_percent: i32,
) {
    use aws_sdk_autoscaling::types::{
        InstancesDistribution, LaunchTemplate, LaunchTemplateOverrides, MixedInstancesPolicy,
    };
    let mut template = LaunchTemplate::builder().launch_template_specification(
        LaunchTemplateSpecification::builder()
            .launch_template_id(template_id)
            .version("$Latest")
            .build(),
    );
    for t in overrides {
        template = template.overrides(LaunchTemplateOverrides::builder().instance_type(*t).build());
    }
    aws_sdk_autoscaling::Client::new(config)
        .update_auto_scaling_group()
        .auto_scaling_group_name(name)
        .mixed_instances_policy(
            MixedInstancesPolicy::builder()
                .launch_template(template.build())
                .instances_distribution(
                    InstancesDistribution::builder()
                        .on_demand_base_capacity(on_demand_base)
                        .on_demand_percentage_above_base_capacity(on_demand_percent)
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap_or_else(|e| panic!("set mixed instances policy of {name}: {e:?}"));
}

/// (overrides, on-demand base, on-demand percentage above base) of a group, for comparisons.
pub fn split(
    group: &aws_sdk_autoscaling::types::AutoScalingGroup,
) -> (Vec<String>, Option<i32>, Option<i32>) {
    let distribution = group
        .mixed_instances_policy()
        .and_then(|p| p.instances_distribution());
    (
        overrides(group),
        distribution.and_then(|d| d.on_demand_base_capacity()),
        distribution.and_then(|d| d.on_demand_percentage_above_base_capacity()),
    )
}

/// Run one instance in `zone` carrying `tags`; its id.
pub async fn run_instance(config: &SdkConfig, zone: &str, tags: &[(&str, &str)]) -> String {
    let ec2 = aws_sdk_ec2::Client::new(config);
    let image = image_id(&ec2).await;
    let tags = aws_sdk_ec2::types::TagSpecification::builder()
        .resource_type(aws_sdk_ec2::types::ResourceType::Instance)
        .set_tags(Some(
            tags.iter()
                .map(|(k, v)| aws_sdk_ec2::types::Tag::builder().key(*k).value(*v).build())
                .collect(),
        ))
        .build();
    ec2.run_instances()
        .image_id(image)
        .instance_type(aws_sdk_ec2::types::InstanceType::C6iLarge)
        .min_count(1)
        .max_count(1)
        .placement(
            aws_sdk_ec2::types::Placement::builder()
                .availability_zone(zone)
                .build(),
        )
        .tag_specifications(tags)
        .send()
        .await
        .expect("run instances")
        .instances()
        .first()
        .and_then(|i| i.instance_id().map(str::to_string))
        .expect("instance id")
}
