//! `NodeTemplate` (short name `ntpl`): what capacity may be used, and which Auto Scaling groups it
//! governs (DESIGN.md section 3.1).

// kube's `printcolumn(...)` attributes repeat the same keys on purpose.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{CapacityType, Taint, conditions_schema, default_true};

/// Desired state of a NodeTemplate: instance constraints bound to Auto Scaling groups. Its controller
/// ranks the allowed instance types by risk-weighted price and writes the ranking into the groups'
/// MixedInstancesPolicy.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "cloudoptim.io",
    version = "v1alpha1",
    kind = "NodeTemplate",
    shortname = "ntpl",
    category = "cloudoptim",
    status = "NodeTemplateStatus",
    doc = "Instance constraints bound to Auto Scaling groups; CloudOptim writes the ranked instance types into the groups' MixedInstancesPolicy.",
    printcolumn(name = "Strategy", type_ = "string", json_path = ".spec.strategy"),
    printcolumn(
        name = "Best",
        type_ = "string",
        json_path = ".status.candidates[0].instanceType",
        description = "Best-ranked instance type"
    ),
    printcolumn(
        name = "Zone",
        type_ = "string",
        json_path = ".status.candidates[0].zone",
        description = "Zone of the best-ranked candidate"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.disk)").message("spec.disk: not supported: the root volume comes from the Auto Scaling group's launch template; remove spec.disk"))]
#[x_kube(validation = Rule::new("!has(self.labels) || size(self.labels) == 0").message("spec.labels: not acted on yet (node replacement, issue #16): a node's labels come from its launch template; remove spec.labels"))]
#[x_kube(validation = Rule::new("!has(self.taints) || size(self.taints) == 0").message("spec.taints: not acted on yet (node replacement, issue #16): a node's taints come from its launch template; remove spec.taints"))]
pub struct NodeTemplateSpec {
    /// The Auto Scaling groups this template governs: exactly one of `names` or `tagSelector`.
    pub auto_scaling_groups: AutoScalingGroupSelector,
    /// Which instance types may be used.
    #[serde(default)]
    pub requirements: Requirements,
    /// Ranking strategy: Cheapest (price 0.8, risk 0.2), Balanced (0.6, 0.4) or Stable (0.3, 0.7).
    #[serde(default)]
    pub strategy: Strategy,
    /// Explicit ranking weights; when set they override `strategy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<RankingWeights>,
    /// Root volume of the nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<Disk>,
    /// Labels expected on this template's nodes (the planner uses them to know where pods may go).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Taints expected on this template's nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taints: Vec<Taint>,
}

/// How a NodeTemplate finds its Auto Scaling groups.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.names) != has(self.tagSelector)").message("spec.autoScalingGroups: set exactly one of names or tagSelector"))]
pub struct AutoScalingGroupSelector {
    /// Auto Scaling group names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 100))]
    pub names: Option<Vec<String>>,
    /// Every Auto Scaling group carrying all of these tags (key: value) is governed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag_selector: Option<BTreeMap<String, String>>,
}

/// Instance constraints. An empty list means "any".
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.minVcpu) || !has(self.maxVcpu) || self.minVcpu <= self.maxVcpu").message("spec.requirements: minVcpu must be <= maxVcpu"))]
#[x_kube(validation = Rule::new("!has(self.minMemoryGiB) || !has(self.maxMemoryGiB) || self.minMemoryGiB <= self.maxMemoryGiB").message("spec.requirements: minMemoryGiB must be <= maxMemoryGiB"))]
#[x_kube(validation = Rule::new("!has(self.minGpus) || !has(self.maxGpus) || self.minGpus <= self.maxGpus").message("spec.requirements: minGpus must be <= maxGpus"))]
pub struct Requirements {
    /// Instance families allowed, e.g. `m5`, `m6i`, `c7g`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub families: Vec<String>,
    /// Instance types never used, e.g. `m5.24xlarge`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_types: Vec<String>,
    /// CPU architectures allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub architectures: Vec<Architecture>,
    /// Minimum vCPUs per instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1024))]
    pub min_vcpu: Option<u32>,
    /// Maximum vCPUs per instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1024))]
    pub max_vcpu: Option<u32>,
    /// Minimum memory per instance, GiB.
    #[serde(
        default,
        rename = "minMemoryGiB",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 0.0, max = 32768.0))]
    pub min_memory_gib: Option<f64>,
    /// Maximum memory per instance, GiB.
    #[serde(
        default,
        rename = "maxMemoryGiB",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 0.0, max = 32768.0))]
    pub max_memory_gib: Option<f64>,
    /// Minimum GPUs per instance (DescribeInstanceTypes `GpuInfo`), e.g. 1 for GPU nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 64))]
    pub min_gpus: Option<u32>,
    /// Maximum GPUs per instance; 0 keeps GPU instance types out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 64))]
    pub max_gpus: Option<u32>,
    /// Availability zones allowed, e.g. `us-east-1a`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<String>,
    /// Capacity types allowed: `spot`, `on-demand`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capacity_types: Vec<CapacityType>,
    /// Only current-generation instance types.
    #[serde(default = "default_true")]
    pub current_generation_only: bool,
    /// How many ranked instance types are written as MixedInstancesPolicy overrides.
    #[serde(default = "default_max_types")]
    #[schemars(range(min = 1, max = 40))]
    pub max_types: u32,
}

impl Default for Requirements {
    fn default() -> Self {
        Requirements {
            families: Vec::new(),
            exclude_types: Vec::new(),
            architectures: Vec::new(),
            min_vcpu: None,
            max_vcpu: None,
            min_memory_gib: None,
            max_memory_gib: None,
            min_gpus: None,
            max_gpus: None,
            zones: Vec::new(),
            capacity_types: Vec::new(),
            current_generation_only: true,
            max_types: default_max_types(),
        }
    }
}

fn default_max_types() -> u32 {
    20
}

/// CPU architecture, with EC2's names.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Architecture {
    /// 64-bit x86 (Intel, AMD).
    #[serde(rename = "x86_64")]
    X86_64,
    /// 64-bit Arm (Graviton).
    #[serde(rename = "arm64")]
    Arm64,
}

/// Ranking strategy: preset weights of price and interruption risk.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum Strategy {
    /// Weights (price 0.8, risk 0.2).
    Cheapest,
    /// Weights (price 0.6, risk 0.4).
    #[default]
    Balanced,
    /// Weights (price 0.3, risk 0.7).
    Stable,
}

/// Explicit ranking weights; each between 0 and 1, and they sum to 1.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.price + self.risk >= 0.999 && self.price + self.risk <= 1.001").message("spec.weights: price + risk must sum to 1"))]
pub struct RankingWeights {
    /// Weight of the normalised price per vCPU-hour.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub price: f64,
    /// Weight of the interruption risk (Spot Advisor bucket / 4).
    #[schemars(range(min = 0.0, max = 1.0))]
    pub risk: f64,
}

/// Root volume of a template's nodes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Disk {
    /// EBS volume type.
    #[serde(default, rename = "type")]
    pub volume_type: VolumeType,
    /// Size in GiB.
    #[serde(default = "default_disk_size", rename = "sizeGiB")]
    #[schemars(range(min = 8, max = 16384))]
    pub size_gib: u32,
}

fn default_disk_size() -> u32 {
    100
}

/// EBS volume types allowed for node root volumes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum VolumeType {
    /// General purpose SSD, 3rd generation (the default).
    #[default]
    Gp3,
    /// General purpose SSD, 2nd generation.
    Gp2,
    /// Provisioned IOPS SSD.
    Io1,
    /// Provisioned IOPS SSD, 2nd generation.
    Io2,
}

/// Observed state of a NodeTemplate.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeTemplateStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The top 10 ranked candidates, best first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<CandidateStatus>,
    /// The Auto Scaling groups this template governs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<GroupStatus>,
    /// When the ranking was last computed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_ranked: Option<Time>,
    /// Conditions: `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
}

/// One ranked (instance type, zone, capacity type) candidate.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CandidateStatus {
    /// Instance type, e.g. `m6i.large`.
    pub instance_type: String,
    /// Availability zone.
    pub zone: String,
    /// Capacity type of this candidate.
    pub capacity_type: CapacityType,
    /// Spot price, USD per hour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spot_price: Option<f64>,
    /// On-demand price, USD per hour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_demand_price: Option<f64>,
    /// Spot Advisor interruption bucket 0..4 (<5%, 5-10%, 10-15%, 15-20%, >20%); absent when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk_bucket: Option<u8>,
    /// Risk-weighted score; lower is better.
    pub score: f64,
    /// True when an active SpotRiskFlag covers this candidate.
    #[serde(default)]
    pub flagged: bool,
}

/// One governed Auto Scaling group.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupStatus {
    /// Auto Scaling group name.
    pub name: String,
    /// Desired capacity.
    pub desired: i32,
    /// Minimum size.
    pub min: i32,
    /// Maximum size.
    pub max: i32,
    /// Percentage of capacity above the on-demand base that is Spot.
    pub spot_percentage: i32,
    /// Number of instances in the group.
    pub instances: i32,
}
