//! The narrow cloud interface: exactly the AWS calls CloudOptim makes (DESIGN.md section 5), as plain
//! data in and out. `aws.rs` implements it with the AWS SDK (tested against a moto server); `fake.rs`
//! is an in-memory implementation that records calls and can be told to fail, for fast decision tests.
//!
//! Never GetSpotPlacementScores: interruption risk comes from the public Spot Advisor data.

use std::collections::BTreeMap;
use std::future::Future;

pub use crate::engine::catalog::OnDemandPrices;
pub use crate::engine::lifecycle::LifecycleAction;
pub use crate::engine::spot_average::SpotPricePoint;

#[cfg(feature = "aws")]
pub mod aws;
pub mod fake;
pub mod iam;
pub mod rate;
pub mod spot_advisor;

/// Why an AWS call failed, with the operation and the AWS request id when there is one.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CloudError {
    /// The call was throttled and the SDK's retries ran out.
    #[error(
        "{op}: throttled by AWS (request id {request_id:?}); retried with backoff, will try again"
    )]
    Throttled {
        /// Operation, e.g. `DescribeAutoScalingGroups`.
        op: &'static str,
        /// AWS request id.
        request_id: Option<String>,
    },
    /// The object does not exist.
    #[error("{op}: {what} not found (request id {request_id:?})")]
    NotFound {
        /// Operation.
        op: &'static str,
        /// What was missing.
        what: String,
        /// AWS request id.
        request_id: Option<String>,
    },
    /// The credentials lack a permission; the chart's IAM policy lists every action needed.
    #[error(
        "{op}: access denied (request id {request_id:?}); grant the action in the IAM policy shipped in charts/cloudoptim"
    )]
    AccessDenied {
        /// Operation.
        op: &'static str,
        /// AWS request id.
        request_id: Option<String>,
    },
    /// Anything else.
    #[error("{op}: {message} (request id {request_id:?})")]
    Other {
        /// Operation.
        op: &'static str,
        /// The error as AWS or the SDK described it.
        message: String,
        /// AWS request id.
        request_id: Option<String>,
    },
}

impl CloudError {
    /// A short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            CloudError::Throttled { .. } => "throttled",
            CloudError::NotFound { .. } => "not_found",
            CloudError::AccessDenied { .. } => "access_denied",
            CloudError::Other { .. } => "error",
        }
    }
}

/// Result of a cloud call.
pub type CloudResult<T> = Result<T, CloudError>;

/// The tag that marks this cluster's instances, volumes and groups: `cloudoptim.io/cluster=<name>`.
/// Nothing without it (with this cluster's name as value) is ever terminated or deleted.
pub use crate::names::CLUSTER_TAG;

/// An EC2 instance type as DescribeInstanceTypes reports it: the engine's own type, so the live
/// catalog takes it as it comes.
pub use crate::engine::catalog::LiveInstanceType;

/// The latest Spot price of a type in a zone.
#[derive(Debug, Clone, PartialEq)]
pub struct SpotPrice {
    /// Availability zone.
    pub zone: String,
    /// Instance type.
    pub instance_type: String,
    /// USD per hour, Linux.
    pub price: f64,
}

/// An EC2 instance carrying the cluster tag.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    /// `i-...`.
    pub id: String,
    /// Instance type.
    pub instance_type: String,
    /// Availability zone.
    pub zone: String,
    /// `pending`, `running`, `stopping`, ...
    pub state: String,
    /// `spot` when it is a Spot instance.
    pub spot: bool,
    /// Launch time, seconds since the epoch.
    pub launched_at: Option<i64>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
}

/// An unattached (`available`) EBS volume carrying the cluster tag.
#[derive(Debug, Clone, PartialEq)]
pub struct Volume {
    /// `vol-...`.
    pub id: String,
    /// Size, GiB.
    pub size_gib: i32,
    /// Volume type, e.g. `gp3`.
    pub volume_type: String,
    /// Availability zone.
    pub zone: String,
    /// Creation time, seconds since the epoch.
    pub created_at: Option<i64>,
}

/// How an Auto Scaling group mixes instance types and purchase options.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MixedInstances {
    /// Instance type overrides, in priority order.
    pub overrides: Vec<String>,
    /// Nodes always on-demand.
    pub on_demand_base: i32,
    /// Percentage of capacity above the base that is on-demand.
    pub on_demand_percentage_above_base: i32,
    /// Spot allocation strategy, e.g. `capacity-optimized-prioritized`.
    pub spot_allocation_strategy: Option<String>,
}

/// An Auto Scaling group.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AutoScalingGroup {
    /// Group name.
    pub name: String,
    /// Minimum size.
    pub min: i32,
    /// Maximum size.
    pub max: i32,
    /// Desired capacity.
    pub desired: i32,
    /// Instance ids in the group.
    pub instances: Vec<String>,
    /// Availability zones.
    pub zones: Vec<String>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// The MixedInstancesPolicy, when the group has one.
    pub mixed: Option<MixedInstances>,
    /// The launch template the group (or its MixedInstancesPolicy) uses.
    pub launch_template: Option<LaunchTemplateRef>,
    /// The group's subnets (VPCZoneIdentifier); empty for groups placed by zone only.
    pub subnets: Vec<String>,
}

/// One instance launched outside a group's own scaling (a replacement), adopted by the group after.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Launch {
    /// The group's launch template (and version).
    pub template: LaunchTemplateRef,
    /// Overrides the template's instance type.
    pub instance_type: String,
    /// Availability zone.
    pub zone: String,
    /// The group's subnets: the one in `zone` is used; none: placed by zone (default VPC).
    pub subnets: Vec<String>,
    /// Spot (one-time request, terminate on interruption) or on-demand.
    pub spot: bool,
    /// Tags set on the instance (and its volumes) in the launch call itself.
    pub tags: BTreeMap<String, String>,
}

/// A launch template reference.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LaunchTemplateRef {
    /// Template id.
    pub id: Option<String>,
    /// Template name.
    pub name: Option<String>,
    /// Version, e.g. `$Latest`.
    pub version: Option<String>,
}

/// Which groups to describe.
#[derive(Debug, Clone, PartialEq)]
pub enum GroupSelector {
    /// By name.
    Names(Vec<String>),
    /// Every group carrying all of these tags.
    Tags(BTreeMap<String, String>),
}

/// A change to an Auto Scaling group; `None` fields are left as they are.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GroupUpdate {
    /// Group name.
    pub name: String,
    /// New MixedInstancesPolicy (overrides and distribution).
    pub mixed: Option<MixedInstances>,
    /// The launch template to keep in the MixedInstancesPolicy (from the group as described).
    pub launch_template: Option<LaunchTemplateRef>,
    /// New minimum size.
    pub min: Option<i32>,
    /// New maximum size.
    pub max: Option<i32>,
    /// New desired capacity.
    pub desired: Option<i32>,
}

/// A message received from an SQS queue.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueMessage {
    /// SQS message id.
    pub id: String,
    /// Receipt handle, needed to delete it.
    pub receipt: String,
    /// Body (EventBridge JSON).
    pub body: String,
    /// When SQS received it (its `SentTimestamp`), Unix milliseconds.
    pub sent_millis: Option<i64>,
}

/// How a lifecycle action is completed (CompleteLifecycleAction's `LifecycleActionResult`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifecycleResult {
    /// `CONTINUE`: the group goes on launching or terminating the instance.
    Continue,
    /// `ABANDON`: a launching instance is terminated; a terminating one is terminated all the same.
    Abandon,
}

impl LifecycleResult {
    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            LifecycleResult::Continue => "CONTINUE",
            LifecycleResult::Abandon => "ABANDON",
        }
    }
}

/// Exactly the AWS calls CloudOptim makes. Every instance or volume acted on must carry the cluster tag:
/// callers pass the tag and implementations filter by it, so nothing untagged is ever returned.
pub trait Cloud: Send + Sync + 'static {
    /// DescribeInstanceTypes (all pages).
    fn instance_types(&self) -> impl Future<Output = CloudResult<Vec<LiveInstanceType>>> + Send;
    /// DescribeSpotPriceHistory for the last hour, Linux/UNIX; the latest price per (zone, type).
    fn spot_prices(
        &self,
        instance_types: &[String],
    ) -> impl Future<Output = CloudResult<Vec<SpotPrice>>> + Send;
    /// DescribeSpotPriceHistory from `since` (seconds since the epoch) to now, Linux/UNIX, all pages, for
    /// exactly `instance_types`: every record, including the one in effect at `since`. An empty list asks
    /// for nothing and answers nothing (never every type of the region).
    fn spot_price_history(
        &self,
        instance_types: &[String],
        since: i64,
    ) -> impl Future<Output = CloudResult<Vec<SpotPricePoint>>> + Send;
    /// Price List API GetProducts (service `AmazonEC2`, all pages): the hourly Linux, shared-tenancy,
    /// no-pre-installed-software on-demand prices of `region`, and the products that could not be read.
    /// The Price List API answers from us-east-1 (or ap-south-1, eu-central-1) whatever `region` is.
    fn on_demand_prices(
        &self,
        region: &str,
    ) -> impl Future<Output = CloudResult<OnDemandPrices>> + Send;
    /// DescribeAvailabilityZones: zone names of the region.
    fn zones(&self) -> impl Future<Output = CloudResult<Vec<String>>> + Send;
    /// DescribeInstances filtered by the cluster tag key.
    fn instances(
        &self,
        tag_key: &str,
        tag_value: &str,
    ) -> impl Future<Output = CloudResult<Vec<Instance>>> + Send;
    /// DescribeVolumes with status `available` and the cluster tag key.
    fn available_volumes(
        &self,
        tag_key: &str,
        tag_value: &str,
    ) -> impl Future<Output = CloudResult<Vec<Volume>>> + Send;
    /// TerminateInstances.
    fn terminate_instances(&self, ids: &[String]) -> impl Future<Output = CloudResult<()>> + Send;
    /// DeleteVolume.
    fn delete_volume(&self, id: &str) -> impl Future<Output = CloudResult<()>> + Send;
    /// CreateSnapshot of a volume, the snapshot tagged with `tags`; returns the snapshot id.
    fn create_snapshot(
        &self,
        volume_id: &str,
        description: &str,
        tags: &BTreeMap<String, String>,
    ) -> impl Future<Output = CloudResult<String>> + Send;
    /// DescribeAutoScalingGroups (all pages).
    fn groups(
        &self,
        selector: &GroupSelector,
    ) -> impl Future<Output = CloudResult<Vec<AutoScalingGroup>>> + Send;
    /// UpdateAutoScalingGroup.
    fn update_group(&self, update: &GroupUpdate) -> impl Future<Output = CloudResult<()>> + Send;
    /// CreateOrUpdateTags (`Some(value)`) and DeleteTags (`None`) on one Auto Scaling group: the
    /// durable marker hibernation keeps on a group it put to sleep (`cloudoptim.io/hibernated-by` and
    /// the saved sizes), so a restart or an upgrade still knows what to restore.
    fn tag_group(
        &self,
        name: &str,
        tags: &BTreeMap<String, Option<String>>,
    ) -> impl Future<Output = CloudResult<()>> + Send;
    /// TerminateInstanceInAutoScalingGroup.
    /// RunInstances: one instance as `launch` says, tagged in the same call; its id.
    fn launch(&self, launch: &Launch) -> impl Future<Output = CloudResult<String>> + Send;
    /// AttachInstances: the group adopts `instance_id` (its desired capacity grows by one).
    fn attach_to_group(
        &self,
        group: &str,
        instance_id: &str,
    ) -> impl Future<Output = CloudResult<()>> + Send;
    /// DeleteTags on an instance.
    fn untag_instance(
        &self,
        instance_id: &str,
        keys: &[String],
    ) -> impl Future<Output = CloudResult<()>> + Send;
    fn terminate_in_group(
        &self,
        instance_id: &str,
        decrement_desired: bool,
    ) -> impl Future<Output = CloudResult<()>> + Send;
    /// CompleteLifecycleAction of the action's group and hook, naming the action by its token (the
    /// instance id alone would name whatever action the instance is in now, perhaps a later one).
    fn complete_lifecycle_action(
        &self,
        action: &LifecycleAction,
        result: LifecycleResult,
    ) -> impl Future<Output = CloudResult<()>> + Send;
    /// RecordLifecycleActionHeartbeat: restart the hook's heartbeat timeout while the action runs.
    fn record_lifecycle_action_heartbeat(
        &self,
        action: &LifecycleAction,
    ) -> impl Future<Output = CloudResult<()>> + Send;
    /// SQS ReceiveMessage (long poll).
    fn receive(
        &self,
        queue_url: &str,
        max: i32,
        wait_seconds: i32,
    ) -> impl Future<Output = CloudResult<Vec<QueueMessage>>> + Send;
    /// SQS DeleteMessage.
    fn delete_message(
        &self,
        queue_url: &str,
        receipt: &str,
    ) -> impl Future<Output = CloudResult<()>> + Send;
    /// SQS ChangeMessageVisibility: keep a message being worked on hidden `seconds` more.
    fn change_message_visibility(
        &self,
        queue_url: &str,
        receipt: &str,
        seconds: i32,
    ) -> impl Future<Output = CloudResult<()>> + Send;
}
