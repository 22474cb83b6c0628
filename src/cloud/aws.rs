//! `Cloud` implemented with the AWS SDK for Rust. Retries with jittered backoff come from the SDK's
//! standard retry mode; on top of that every call takes a token from the EC2 bucket of its kind, and
//! is counted in `cloudoptim_aws_api_calls_total{op,result}`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use aws_config::{BehaviorVersion, Region, SdkConfig, retry::RetryConfig};
use aws_sdk_autoscaling::types as asg;
use aws_sdk_ec2::types as ec2;
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_types::request_id::RequestId;

use super::rate::{Ec2Limits, TokenBucket};
use super::{
    AutoScalingGroup, Cloud, CloudError, CloudResult, GroupSelector, GroupUpdate, Instance, Launch,
    LifecycleAction, LifecycleResult, LiveInstanceType, MixedInstances, OnDemandPrices,
    QueueMessage, SpotPrice, SpotPricePoint, Volume,
};
use crate::fence::{AwsFence, Fence};
use crate::metrics::Metrics;
use crate::names::REPLACES_TAG;

/// How to reach AWS.
#[derive(Debug, Clone, Default)]
pub struct AwsOptions {
    /// Region, e.g. `us-east-1`.
    pub region: String,
    /// Endpoint override (tests against moto, private endpoints); `AWS_ENDPOINT_URL` also works.
    pub endpoint_url: Option<String>,
    /// Endpoint override for the Price List API only (moto has none; tests serve their own).
    pub pricing_endpoint_url: Option<String>,
    /// Assume this role (with an external id) on top of the default credential chain.
    pub assume_role: Option<AssumeRole>,
    /// Static credentials (tests and development only); otherwise the default chain (IRSA, env, ...).
    pub static_credentials: Option<(String, String)>,
}

/// STS AssumeRole parameters.
#[derive(Debug, Clone)]
pub struct AssumeRole {
    /// Role ARN.
    pub role_arn: String,
    /// External id the role's trust policy requires.
    pub external_id: Option<String>,
}

/// The AWS SDK clients CloudOptim uses.
#[derive(Clone)]
pub struct AwsCloud {
    ec2: aws_sdk_ec2::Client,
    autoscaling: aws_sdk_autoscaling::Client,
    sqs: aws_sdk_sqs::Client,
    pricing: aws_sdk_pricing::Client,
    limits: Arc<Ec2Limits>,
    metrics: Metrics,
}

async fn sdk_config(options: &AwsOptions) -> SdkConfig {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(options.region.clone()))
        .http_client(http)
        .retry_config(RetryConfig::standard().with_max_attempts(5));
    if let Some(url) = &options.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    if let Some((key, secret)) = &options.static_credentials {
        loader = loader.credentials_provider(aws_sdk_ec2::config::Credentials::new(
            key, secret, None, None, "static",
        ));
    }
    let base = loader.load().await;
    let Some(role) = &options.assume_role else {
        return base;
    };
    let mut provider = aws_config::sts::AssumeRoleProvider::builder(&role.role_arn)
        .session_name("cloudoptim")
        .configure(&base);
    if let Some(id) = &role.external_id {
        provider = provider.external_id(id);
    }
    base.into_builder()
        .credentials_provider(aws_sdk_ec2::config::SharedCredentialsProvider::new(
            provider.build().await,
        ))
        .build()
}

/// Map an SDK error to a `CloudError`, keeping the operation and request id.
fn classify<E>(op: &'static str, err: SdkError<E, HttpResponse>) -> CloudError
where
    E: aws_sdk_ec2::error::ProvideErrorMetadata + std::error::Error + 'static,
    SdkError<E, HttpResponse>: RequestId,
{
    let mut request_id = err.request_id().map(str::to_string);
    let (code, message) = match &err {
        SdkError::ServiceError(service) => {
            let e = service.err();
            // Query-protocol APIs (EC2, Auto Scaling) carry the request id in the error body.
            request_id = e.meta().request_id().map(str::to_string).or(request_id);
            let code = e.code().unwrap_or_default().to_string();
            let message = match e.message() {
                Some(message) => message.to_string(),
                // An answer that is no AWS error (an endpoint that does not serve the API, e.g.
                // moto's for the Price List) would read as nothing: its HTTP status says something.
                None if code.is_empty() => format!(
                    "HTTP {} without an AWS error code or message",
                    service.raw().status().as_u16()
                ),
                None => String::new(),
            };
            (code, message)
        }
        other => (
            String::new(),
            aws_smithy_types::error::display::DisplayErrorContext(other).to_string(),
        ),
    };
    match code.as_str() {
        "Throttling"
        | "ThrottlingException"
        | "RequestLimitExceeded"
        | "TooManyRequestsException" => CloudError::Throttled { op, request_id },
        "UnauthorizedOperation" | "AccessDenied" | "AccessDeniedException" | "AuthFailure" => {
            CloudError::AccessDenied { op, request_id }
        }
        c if c.contains("NotFound") || c == "AWS.SimpleQueueService.NonExistentQueue" => {
            CloudError::NotFound {
                op,
                what: message,
                request_id,
            }
        }
        _ => CloudError::Other {
            op,
            message: if code.is_empty() {
                message
            } else {
                format!("{code}: {message}")
            },
            request_id,
        },
    }
}

/// The Region whose Price List API endpoint is used: the API lives only in us-east-1, ap-south-1 and
/// eu-central-1 and answers for every region, so the cluster's region is not used here.
pub const PRICING_REGION: &str = "us-east-1";

/// The Price List API client: read-only, so it needs no fence.
fn pricing_client(config: &SdkConfig, options: &AwsOptions) -> aws_sdk_pricing::Client {
    let mut builder =
        aws_sdk_pricing::config::Builder::from(config).region(Region::new(PRICING_REGION));
    if let Some(url) = &options.pricing_endpoint_url {
        builder = builder.endpoint_url(url);
    }
    aws_sdk_pricing::Client::from_conf(builder.build())
}

/// A TERM_MATCH filter of GetProducts.
fn term(field: &str, value: &str) -> Result<aws_sdk_pricing::types::Filter, CloudError> {
    aws_sdk_pricing::types::Filter::builder()
        .r#type(aws_sdk_pricing::types::FilterType::TermMatch)
        .field(field)
        .value(value)
        .build()
        .map_err(|e| CloudError::Other {
            op: "GetProducts",
            message: e.to_string(),
            request_id: None,
        })
}

impl AwsCloud {
    /// Build the SDK clients (loads credentials lazily; nothing is called yet).
    pub async fn connect(options: &AwsOptions, metrics: Metrics) -> AwsCloud {
        Self::connect_fenced(options, metrics, Fence::open(), None).await
    }

    /// [`AwsCloud::connect`] with every mutating call passing `fence` (leader election), and
    /// `app_name` (e.g. the pod name) in the User-Agent of every request.
    pub async fn connect_fenced(
        options: &AwsOptions,
        metrics: Metrics,
        fence: Fence,
        app_name: Option<&str>,
    ) -> AwsCloud {
        let mut config = sdk_config(options).await;
        if let Some(name) =
            app_name.and_then(|n| aws_types::app_name::AppName::new(n.to_string()).ok())
        {
            config = config.into_builder().app_name(name).build();
        }
        let interceptor = AwsFence(fence);
        AwsCloud {
            ec2: aws_sdk_ec2::Client::from_conf(
                aws_sdk_ec2::config::Builder::from(&config)
                    .interceptor(interceptor.clone())
                    .build(),
            ),
            autoscaling: aws_sdk_autoscaling::Client::from_conf(
                aws_sdk_autoscaling::config::Builder::from(&config)
                    .interceptor(interceptor.clone())
                    .build(),
            ),
            sqs: aws_sdk_sqs::Client::from_conf(
                aws_sdk_sqs::config::Builder::from(&config)
                    .interceptor(interceptor)
                    .build(),
            ),
            pricing: pricing_client(&config, options),
            limits: Arc::new(Ec2Limits::default()),
            metrics,
        }
    }

    /// A call whose answer CloudOptim does not need: wait for a token from `bucket` (EC2 calls), send,
    /// map the error, count it.
    async fn act<O, E>(
        &self,
        op: &'static str,
        bucket: Option<&TokenBucket>,
        send: impl std::future::Future<Output = Result<O, SdkError<E, HttpResponse>>>,
    ) -> CloudResult<()>
    where
        E: aws_sdk_ec2::error::ProvideErrorMetadata + std::error::Error + 'static,
        SdkError<E, HttpResponse>: RequestId,
    {
        if let Some(bucket) = bucket {
            bucket.acquire().await;
        }
        let result = send.await.map(|_| ()).map_err(|e| classify(op, e));
        self.count(op, result)
    }

    /// The subnet of `subnets` in `zone` (DescribeSubnets); `None` when the group names no subnet (it
    /// is placed by zone). A group with subnets but none in `zone` is an error naming both.
    async fn subnet_in(&self, subnets: &[String], zone: &str) -> CloudResult<Option<String>> {
        const OP: &str = "DescribeSubnets";
        if subnets.is_empty() {
            return Ok(None);
        }
        self.limits.describe.acquire().await;
        let result = self
            .ec2
            .describe_subnets()
            .set_subnet_ids(Some(subnets.to_vec()))
            .send()
            .await
            .map_err(|e| classify(OP, e))
            .and_then(|out| {
                out.subnets()
                    .iter()
                    .find(|s| s.availability_zone() == Some(zone))
                    .and_then(|s| s.subnet_id())
                    .map(|s| Some(s.to_string()))
                    .ok_or_else(|| CloudError::Other {
                        op: OP,
                        message: format!(
                            "none of the group's subnets ({}) is in {zone}",
                            subnets.join(", ")
                        ),
                        request_id: None,
                    })
            });
        self.count(OP, result)
    }

    /// Count one call and pass its result through.
    fn count<T>(&self, op: &'static str, result: CloudResult<T>) -> CloudResult<T> {
        let label = match &result {
            Ok(_) => "ok",
            Err(e) => e.metric_label(),
        };
        self.metrics
            .aws_api_calls
            .with_label_values(&[op, label])
            .inc();
        result
    }
}

fn tags_of_ec2(tags: &[ec2::Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .filter_map(|t| {
            Some((
                t.key()?.to_string(),
                t.value().unwrap_or_default().to_string(),
            ))
        })
        .collect()
}

fn mixed_of(policy: &asg::MixedInstancesPolicy) -> MixedInstances {
    let distribution = policy.instances_distribution();
    MixedInstances {
        overrides: policy
            .launch_template()
            .map(|lt| {
                lt.overrides()
                    .iter()
                    .filter_map(|o| o.instance_type().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
        on_demand_base: distribution
            .and_then(|d| d.on_demand_base_capacity())
            .unwrap_or(0),
        on_demand_percentage_above_base: distribution
            .and_then(|d| d.on_demand_percentage_above_base_capacity())
            .unwrap_or(100),
        spot_allocation_strategy: distribution
            .and_then(|d| d.spot_allocation_strategy().map(str::to_string)),
    }
}

fn group_of(g: &asg::AutoScalingGroup) -> AutoScalingGroup {
    AutoScalingGroup {
        name: g.auto_scaling_group_name().unwrap_or_default().to_string(),
        min: g.min_size().unwrap_or(0),
        max: g.max_size().unwrap_or(0),
        desired: g.desired_capacity().unwrap_or(0),
        instances: g
            .instances()
            .iter()
            .filter_map(|i| i.instance_id().map(str::to_string))
            .collect(),
        zones: g.availability_zones().to_vec(),
        tags: g
            .tags()
            .iter()
            .filter_map(|t| {
                Some((
                    t.key()?.to_string(),
                    t.value().unwrap_or_default().to_string(),
                ))
            })
            .collect(),
        mixed: g.mixed_instances_policy().map(mixed_of),
        launch_template: g
            .mixed_instances_policy()
            .and_then(|p| p.launch_template())
            .and_then(|lt| lt.launch_template_specification())
            .or(g.launch_template())
            .map(|spec| super::LaunchTemplateRef {
                id: spec.launch_template_id().map(str::to_string),
                name: spec.launch_template_name().map(str::to_string),
                version: spec.version().map(str::to_string),
            }),
        subnets: g
            .vpc_zone_identifier()
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
    }
}

fn policy_for(update: &GroupUpdate, mixed: &MixedInstances) -> asg::MixedInstancesPolicy {
    let mut template = asg::LaunchTemplate::builder();
    if let Some(lt) = &update.launch_template {
        template = template.launch_template_specification(
            asg::LaunchTemplateSpecification::builder()
                .set_launch_template_id(lt.id.clone())
                .set_launch_template_name(if lt.id.is_some() {
                    None
                } else {
                    lt.name.clone()
                })
                .set_version(lt.version.clone())
                .build(),
        );
    }
    for instance_type in &mixed.overrides {
        template = template.overrides(
            asg::LaunchTemplateOverrides::builder()
                .instance_type(instance_type)
                .build(),
        );
    }
    asg::MixedInstancesPolicy::builder()
        .launch_template(template.build())
        .instances_distribution(
            asg::InstancesDistribution::builder()
                .on_demand_base_capacity(mixed.on_demand_base)
                .on_demand_percentage_above_base_capacity(mixed.on_demand_percentage_above_base)
                .set_spot_allocation_strategy(mixed.spot_allocation_strategy.clone())
                .build(),
        )
        .build()
}

impl Cloud for AwsCloud {
    async fn instance_types(&self) -> CloudResult<Vec<LiveInstanceType>> {
        const OP: &str = "DescribeInstanceTypes";
        self.limits.describe.acquire().await;
        let pages: Result<Vec<_>, _> = self
            .ec2
            .describe_instance_types()
            .into_paginator()
            .send()
            .try_collect()
            .await;
        let result = pages.map_err(|e| classify(OP, e)).map(|pages| {
            pages
                .iter()
                .flat_map(|p| p.instance_types())
                .filter_map(|t| {
                    Some(LiveInstanceType {
                        name: t.instance_type()?.as_str().to_string(),
                        vcpu: t
                            .v_cpu_info()
                            .and_then(|v| v.default_v_cpus())
                            .unwrap_or(0)
                            .max(0) as u32,
                        memory_mib: t
                            .memory_info()
                            .and_then(|m| m.size_in_mib())
                            .unwrap_or(0)
                            .max(0) as u64,
                        // Old types list `i386` first; the catalog keeps x86_64 or arm64.
                        arch: t
                            .processor_info()
                            .map(|p| p.supported_architectures())
                            .and_then(|archs| {
                                archs
                                    .iter()
                                    .find(|a| matches!(a.as_str(), "x86_64" | "arm64"))
                                    .or(archs.first())
                            })
                            .map(|a| a.as_str().to_string())
                            .unwrap_or_default(),
                        gpu: t
                            .gpu_info()
                            .map(|g| {
                                g.gpus()
                                    .iter()
                                    .filter_map(|d| d.count())
                                    .sum::<i32>()
                                    .max(0) as u32
                            })
                            .unwrap_or(0),
                        current_generation: t.current_generation().unwrap_or(true),
                    })
                })
                .collect()
        });
        self.count(OP, result)
    }

    async fn spot_prices(&self, instance_types: &[String]) -> CloudResult<Vec<SpotPrice>> {
        const OP: &str = "DescribeSpotPriceHistory";
        self.limits.describe.acquire().await;
        let since =
            aws_sdk_ec2::primitives::DateTime::from_secs(chrono::Utc::now().timestamp() - 3600);
        let pages: Result<Vec<_>, _> = self
            .ec2
            .describe_spot_price_history()
            .start_time(since)
            .product_descriptions("Linux/UNIX")
            .into_paginator()
            .send()
            .try_collect()
            .await;
        let wanted: std::collections::HashSet<&str> =
            instance_types.iter().map(String::as_str).collect();
        let result = pages.map_err(|e| classify(OP, e)).map(|pages| {
            // Latest price per (zone, type).
            let mut latest: HashMap<(String, String), (i64, f64)> = HashMap::new();
            for p in pages.iter().flat_map(|p| p.spot_price_history()) {
                let (Some(zone), Some(t), Some(price)) =
                    (p.availability_zone(), p.instance_type(), p.spot_price())
                else {
                    continue;
                };
                if !wanted.is_empty() && !wanted.contains(t.as_str()) {
                    continue;
                }
                let Ok(price) = price.parse::<f64>() else {
                    continue;
                };
                let at = p.timestamp().map(|t| t.secs()).unwrap_or(0);
                let entry = latest
                    .entry((zone.to_string(), t.as_str().to_string()))
                    .or_insert((at, price));
                if at > entry.0 {
                    *entry = (at, price);
                }
            }
            latest
                .into_iter()
                .map(|((zone, instance_type), (_, price))| SpotPrice {
                    zone,
                    instance_type,
                    price,
                })
                .collect()
        });
        self.count(OP, result)
    }

    async fn spot_price_history(
        &self,
        instance_types: &[String],
        since: i64,
    ) -> CloudResult<Vec<SpotPricePoint>> {
        const OP: &str = "DescribeSpotPriceHistory";
        // A modest number of types per request keeps each request small; an empty list asks for nothing.
        const TYPES_PER_REQUEST: usize = 50;
        let mut records = Vec::new();
        for chunk in instance_types.chunks(TYPES_PER_REQUEST) {
            self.limits.describe.acquire().await;
            let pages: Result<Vec<_>, _> = self
                .ec2
                .describe_spot_price_history()
                .start_time(aws_sdk_ec2::primitives::DateTime::from_secs(since))
                .product_descriptions("Linux/UNIX")
                .set_instance_types(Some(
                    chunk
                        .iter()
                        .map(|t| ec2::InstanceType::from(t.as_str()))
                        .collect(),
                ))
                .into_paginator()
                .send()
                .try_collect()
                .await;
            let pages = self.count(OP, pages.map_err(|e| classify(OP, e)))?;
            for p in pages.iter().flat_map(|p| p.spot_price_history()) {
                let (Some(zone), Some(t), Some(price), Some(at)) = (
                    p.availability_zone(),
                    p.instance_type(),
                    p.spot_price(),
                    p.timestamp(),
                ) else {
                    continue;
                };
                let Ok(price) = price.parse::<f64>() else {
                    continue;
                };
                records.push(SpotPricePoint {
                    zone: zone.to_string(),
                    instance_type: t.as_str().to_string(),
                    at: at.secs(),
                    price,
                });
            }
        }
        Ok(records)
    }

    async fn on_demand_prices(&self, region: &str) -> CloudResult<OnDemandPrices> {
        const OP: &str = "GetProducts";
        let result = async {
            let mut request = self
                .pricing
                .get_products()
                .service_code("AmazonEC2")
                .format_version("aws_v1")
                .max_results(100);
            for (field, value) in [
                ("regionCode", region),
                ("operatingSystem", "Linux"),
                ("tenancy", "Shared"),
                ("preInstalledSw", "NA"),
                ("capacitystatus", "Used"),
            ] {
                request = request.filters(term(field, value)?);
            }
            let mut pages = request.into_paginator().send();
            let mut prices = OnDemandPrices::default();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| classify(OP, e))?;
                prices.add_page(region, page.price_list());
            }
            Ok(prices)
        }
        .await;
        self.count(OP, result)
    }

    async fn zones(&self) -> CloudResult<Vec<String>> {
        const OP: &str = "DescribeAvailabilityZones";
        self.limits.describe.acquire().await;
        let result = self
            .ec2
            .describe_availability_zones()
            .send()
            .await
            .map_err(|e| classify(OP, e))
            .map(|out| {
                out.availability_zones()
                    .iter()
                    .filter_map(|z| z.zone_name().map(str::to_string))
                    .collect()
            });
        self.count(OP, result)
    }

    async fn instances(&self, tag_key: &str, tag_value: &str) -> CloudResult<Vec<Instance>> {
        const OP: &str = "DescribeInstances";
        self.limits.describe.acquire().await;
        let pages: Result<Vec<_>, _> = self
            .ec2
            .describe_instances()
            .filters(
                ec2::Filter::builder()
                    .name(format!("tag:{tag_key}"))
                    .values(tag_value)
                    .build(),
            )
            .into_paginator()
            .send()
            .try_collect()
            .await;
        let result = pages.map_err(|e| classify(OP, e)).map(|pages| {
            pages
                .iter()
                .flat_map(|p| p.reservations())
                .flat_map(|r| r.instances())
                .filter(|i| {
                    i.tags()
                        .iter()
                        .any(|t| t.key() == Some(tag_key) && t.value() == Some(tag_value))
                })
                .filter_map(|i| {
                    Some(Instance {
                        id: i.instance_id()?.to_string(),
                        instance_type: i
                            .instance_type()
                            .map(|t| t.as_str().to_string())
                            .unwrap_or_default(),
                        zone: i
                            .placement()
                            .and_then(|p| p.availability_zone())
                            .unwrap_or_default()
                            .to_string(),
                        state: i
                            .state()
                            .and_then(|s| s.name())
                            .map(|n| n.as_str().to_string())
                            .unwrap_or_default(),
                        spot: i.instance_lifecycle().is_some_and(|l| l.as_str() == "spot"),
                        launched_at: i.launch_time().map(|t| t.secs()),
                        tags: tags_of_ec2(i.tags()),
                    })
                })
                .collect()
        });
        self.count(OP, result)
    }

    async fn available_volumes(&self, tag_key: &str, tag_value: &str) -> CloudResult<Vec<Volume>> {
        const OP: &str = "DescribeVolumes";
        self.limits.describe.acquire().await;
        let pages: Result<Vec<_>, _> = self
            .ec2
            .describe_volumes()
            .filters(
                ec2::Filter::builder()
                    .name("status")
                    .values("available")
                    .build(),
            )
            .filters(
                ec2::Filter::builder()
                    .name(format!("tag:{tag_key}"))
                    .values(tag_value)
                    .build(),
            )
            .into_paginator()
            .send()
            .try_collect()
            .await;
        let result = pages.map_err(|e| classify(OP, e)).map(|pages| {
            pages
                .iter()
                .flat_map(|p| p.volumes())
                .filter(|v| {
                    v.tags()
                        .iter()
                        .any(|t| t.key() == Some(tag_key) && t.value() == Some(tag_value))
                })
                .filter_map(|v| {
                    Some(Volume {
                        id: v.volume_id()?.to_string(),
                        size_gib: v.size().unwrap_or(0),
                        volume_type: v
                            .volume_type()
                            .map(|t| t.as_str().to_string())
                            .unwrap_or_default(),
                        zone: v.availability_zone().unwrap_or_default().to_string(),
                        created_at: v.create_time().map(|t| t.secs()),
                    })
                })
                .collect()
        });
        self.count(OP, result)
    }

    async fn terminate_instances(&self, ids: &[String]) -> CloudResult<()> {
        self.act(
            "TerminateInstances",
            Some(&self.limits.mutating),
            self.ec2
                .terminate_instances()
                .set_instance_ids(Some(ids.to_vec()))
                .send(),
        )
        .await
    }

    async fn delete_volume(&self, id: &str) -> CloudResult<()> {
        self.act(
            "DeleteVolume",
            Some(&self.limits.mutating),
            self.ec2.delete_volume().volume_id(id).send(),
        )
        .await
    }

    async fn create_snapshot(
        &self,
        volume_id: &str,
        description: &str,
        tags: &BTreeMap<String, String>,
    ) -> CloudResult<String> {
        self.limits.mutating.acquire().await;
        let tags = ec2::TagSpecification::builder()
            .resource_type(ec2::ResourceType::Snapshot)
            .set_tags(Some(
                tags.iter()
                    .map(|(k, v)| ec2::Tag::builder().key(k).value(v).build())
                    .collect(),
            ))
            .build();
        let result = self
            .ec2
            .create_snapshot()
            .volume_id(volume_id)
            .description(description)
            .tag_specifications(tags)
            .send()
            .await
            .map_err(|e| classify("CreateSnapshot", e))
            .and_then(|out| {
                out.snapshot_id()
                    .map(str::to_string)
                    .ok_or_else(|| CloudError::Other {
                        op: "CreateSnapshot",
                        message: format!("no snapshot id returned for {volume_id}"),
                        request_id: None,
                    })
            });
        self.count("CreateSnapshot", result)
    }

    async fn groups(&self, selector: &GroupSelector) -> CloudResult<Vec<AutoScalingGroup>> {
        const OP: &str = "DescribeAutoScalingGroups";
        self.limits.describe.acquire().await;
        let mut request = self.autoscaling.describe_auto_scaling_groups();
        match selector {
            GroupSelector::Names(names) => {
                request = request.set_auto_scaling_group_names(Some(names.clone()))
            }
            GroupSelector::Tags(tags) => {
                for (key, value) in tags {
                    request = request.filters(
                        asg::Filter::builder()
                            .name(format!("tag:{key}"))
                            .values(value)
                            .build(),
                    );
                }
            }
        }
        let pages: Result<Vec<_>, _> = request.into_paginator().send().try_collect().await;
        let result = pages.map_err(|e| classify(OP, e)).map(|pages| {
            pages
                .iter()
                .flat_map(|p| p.auto_scaling_groups())
                .map(group_of)
                // Filters are applied again here: not every endpoint honours tag filters.
                .filter(|g| match selector {
                    GroupSelector::Names(names) => names.contains(&g.name),
                    GroupSelector::Tags(tags) => tags.iter().all(|(k, v)| g.tags.get(k) == Some(v)),
                })
                .collect()
        });
        self.count(OP, result)
    }

    async fn update_group(&self, update: &GroupUpdate) -> CloudResult<()> {
        let request = self
            .autoscaling
            .update_auto_scaling_group()
            .auto_scaling_group_name(&update.name)
            .set_mixed_instances_policy(update.mixed.as_ref().map(|m| policy_for(update, m)))
            .set_min_size(update.min)
            .set_max_size(update.max)
            .set_desired_capacity(update.desired);
        self.act(
            "UpdateAutoScalingGroup",
            Some(&self.limits.mutating),
            request.send(),
        )
        .await
    }

    async fn tag_group(
        &self,
        name: &str,
        tags: &BTreeMap<String, Option<String>>,
    ) -> CloudResult<()> {
        let tag = |key: &str, value: Option<&str>| {
            asg::Tag::builder()
                .resource_id(name)
                .resource_type("auto-scaling-group")
                .key(key)
                .set_value(value.map(str::to_string))
                .propagate_at_launch(false)
                .build()
        };
        let set: Vec<_> = tags
            .iter()
            .filter_map(|(k, v)| v.as_deref().map(|v| tag(k, Some(v))))
            .collect();
        let delete: Vec<_> = tags
            .iter()
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| tag(k, None))
            .collect();
        if !set.is_empty() {
            self.act(
                "CreateOrUpdateTags",
                Some(&self.limits.mutating),
                self.autoscaling
                    .create_or_update_tags()
                    .set_tags(Some(set))
                    .send(),
            )
            .await?;
        }
        if !delete.is_empty() {
            self.act(
                "DeleteTags",
                Some(&self.limits.mutating),
                self.autoscaling.delete_tags().set_tags(Some(delete)).send(),
            )
            .await?;
        }
        Ok(())
    }

    async fn launch(&self, launch: &Launch) -> CloudResult<String> {
        const OP: &str = "RunInstances";
        let subnet = self.subnet_in(&launch.subnets, &launch.zone).await?;
        let template = &launch.template;
        let spec = ec2::LaunchTemplateSpecification::builder()
            .set_launch_template_id(template.id.clone())
            .set_launch_template_name(if template.id.is_some() {
                None
            } else {
                template.name.clone()
            })
            .set_version(template.version.clone())
            .build();
        let tags: Vec<ec2::Tag> = launch
            .tags
            .iter()
            .map(|(k, v)| ec2::Tag::builder().key(k).value(v).build())
            .collect();
        let tagged = |kind: ec2::ResourceType| {
            ec2::TagSpecification::builder()
                .resource_type(kind)
                .set_tags(Some(tags.clone()))
                .build()
        };
        // One token per launch: the SDK's own retries of this request cannot start a second instance.
        let token = format!(
            "cloudoptim-{}-{}",
            launch
                .tags
                .get(REPLACES_TAG)
                .map(String::as_str)
                .unwrap_or("launch")
                .replace(' ', "-"),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        );
        let mut request = self
            .ec2
            .run_instances()
            .launch_template(spec)
            .instance_type(ec2::InstanceType::from(launch.instance_type.as_str()))
            .min_count(1)
            .max_count(1)
            .client_token(token.chars().take(64).collect::<String>())
            .tag_specifications(tagged(ec2::ResourceType::Instance))
            .tag_specifications(tagged(ec2::ResourceType::Volume));
        request = match subnet {
            Some(subnet) => request.subnet_id(subnet),
            None => request.placement(
                ec2::Placement::builder()
                    .availability_zone(&launch.zone)
                    .build(),
            ),
        };
        if launch.spot {
            request = request.instance_market_options(
                ec2::InstanceMarketOptionsRequest::builder()
                    .market_type(ec2::MarketType::Spot)
                    .spot_options(
                        ec2::SpotMarketOptions::builder()
                            .spot_instance_type(ec2::SpotInstanceType::OneTime)
                            .instance_interruption_behavior(
                                ec2::InstanceInterruptionBehavior::Terminate,
                            )
                            .build(),
                    )
                    .build(),
            );
        }
        self.limits.mutating.acquire().await;
        let result = request
            .send()
            .await
            .map_err(|e| classify(OP, e))
            .and_then(|out| {
                out.instances()
                    .first()
                    .and_then(|i| i.instance_id())
                    .map(str::to_string)
                    .ok_or_else(|| CloudError::Other {
                        op: OP,
                        message: "the answer names no instance".into(),
                        request_id: None,
                    })
            });
        self.count(OP, result)
    }

    async fn attach_to_group(&self, group: &str, instance_id: &str) -> CloudResult<()> {
        self.act(
            "AttachInstances",
            Some(&self.limits.mutating),
            self.autoscaling
                .attach_instances()
                .auto_scaling_group_name(group)
                .instance_ids(instance_id)
                .send(),
        )
        .await
    }

    async fn untag_instance(&self, instance_id: &str, keys: &[String]) -> CloudResult<()> {
        self.act(
            "DeleteTags",
            Some(&self.limits.mutating),
            self.ec2
                .delete_tags()
                .resources(instance_id)
                .set_tags(Some(
                    keys.iter()
                        .map(|k| ec2::Tag::builder().key(k).build())
                        .collect(),
                ))
                .send(),
        )
        .await
    }

    async fn terminate_in_group(
        &self,
        instance_id: &str,
        decrement_desired: bool,
    ) -> CloudResult<()> {
        self.act(
            "TerminateInstanceInAutoScalingGroup",
            Some(&self.limits.mutating),
            self.autoscaling
                .terminate_instance_in_auto_scaling_group()
                .instance_id(instance_id)
                .should_decrement_desired_capacity(decrement_desired)
                .send(),
        )
        .await
    }

    async fn complete_lifecycle_action(
        &self,
        action: &LifecycleAction,
        result: LifecycleResult,
    ) -> CloudResult<()> {
        self.act(
            "CompleteLifecycleAction",
            Some(&self.limits.mutating),
            self.autoscaling
                .complete_lifecycle_action()
                .auto_scaling_group_name(&action.group)
                .lifecycle_hook_name(&action.hook)
                .lifecycle_action_token(&action.token)
                .lifecycle_action_result(result.as_str())
                .send(),
        )
        .await
    }

    async fn record_lifecycle_action_heartbeat(&self, action: &LifecycleAction) -> CloudResult<()> {
        self.act(
            "RecordLifecycleActionHeartbeat",
            Some(&self.limits.mutating),
            self.autoscaling
                .record_lifecycle_action_heartbeat()
                .auto_scaling_group_name(&action.group)
                .lifecycle_hook_name(&action.hook)
                .lifecycle_action_token(&action.token)
                .send(),
        )
        .await
    }

    async fn receive(
        &self,
        queue_url: &str,
        max: i32,
        wait_seconds: i32,
    ) -> CloudResult<Vec<QueueMessage>> {
        const OP: &str = "ReceiveMessage";
        let result = self
            .sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(max.clamp(1, 10))
            .wait_time_seconds(wait_seconds.clamp(0, 20))
            .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::SentTimestamp)
            .send()
            .await
            .map_err(|e| classify(OP, e))
            .map(|out| {
                out.messages()
                    .iter()
                    .filter_map(|m| {
                        Some(QueueMessage {
                            id: m.message_id()?.to_string(),
                            receipt: m.receipt_handle()?.to_string(),
                            body: m.body().unwrap_or_default().to_string(),
                            sent_millis: m
                                .attributes()
                                .and_then(|a| {
                                    a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::SentTimestamp)
                                })
                                .and_then(|t| t.parse().ok()),
                        })
                    })
                    .collect()
            });
        self.count(OP, result)
    }

    async fn delete_message(&self, queue_url: &str, receipt: &str) -> CloudResult<()> {
        self.act(
            "DeleteMessage",
            None,
            self.sqs
                .delete_message()
                .queue_url(queue_url)
                .receipt_handle(receipt)
                .send(),
        )
        .await
    }

    async fn change_message_visibility(
        &self,
        queue_url: &str,
        receipt: &str,
        seconds: i32,
    ) -> CloudResult<()> {
        self.act(
            "ChangeMessageVisibility",
            None,
            self.sqs
                .change_message_visibility()
                .queue_url(queue_url)
                .receipt_handle(receipt)
                .visibility_timeout(seconds.clamp(0, 43_200))
                .send(),
        )
        .await
    }
}
