//! `SpotRiskFlag` (short name `srf`): shared interruption memory (DESIGN.md section 3.4).

// kube's `printcolumn(...)` attributes repeat the same keys on purpose.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::conditions_schema;

/// An interruption (or capacity error) seen for an instance type in a zone. While the flag is active
/// (until `expiresAt`, 30 minutes after `lastSeen`), ranking leaves that (zone, type) out unless nothing
/// else is left. Named `<region>.<zone>.<instance-type>`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "cloudoptim.io",
    version = "v1alpha1",
    kind = "SpotRiskFlag",
    shortname = "srf",
    category = "cloudoptim",
    status = "SpotRiskFlagStatus",
    doc = "Interruption memory for one (zone, instance type), shared across clusters through the hub; expires 30 minutes after it was last seen.",
    printcolumn(name = "Zone", type_ = "string", json_path = ".spec.zone"),
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.instanceType"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".spec.reason"),
    printcolumn(name = "Count", type_ = "integer", json_path = ".spec.count"),
    printcolumn(name = "Source", type_ = "string", json_path = ".spec.source"),
    printcolumn(name = "Expires", type_ = "string", json_path = ".spec.expiresAt")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.zone.startsWith(self.region)").message("spec.zone must be a zone of spec.region, e.g. us-east-1a in us-east-1"))]
pub struct SpotRiskFlagSpec {
    /// AWS region, e.g. `us-east-1`.
    #[schemars(length(min = 1, max = 32))]
    pub region: String,
    /// Availability zone, e.g. `us-east-1a`.
    #[schemars(length(min = 1, max = 40))]
    pub zone: String,
    /// EC2 instance type, e.g. `m5.large`.
    #[schemars(length(min = 1, max = 64))]
    pub instance_type: String,
    /// What was seen.
    pub reason: RiskReason,
    /// First report.
    pub first_seen: Time,
    /// Latest report.
    pub last_seen: Time,
    /// Reports merged into this flag.
    #[schemars(range(min = 1))]
    pub count: u32,
    /// Ids of the clusters that reported it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<String>,
    /// When the flag stops applying (lastSeen + 30 minutes).
    pub expires_at: Time,
    /// Where this cluster learnt of it: raised here (`Local`) or mirrored from the hub (`Hub`).
    #[serde(default)]
    pub source: FlagSource,
}

/// What raised a flag.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RiskReason {
    /// An EC2 Spot Instance Interruption Warning.
    SpotInterruption,
    /// An EC2 Instance Rebalance Recommendation.
    Rebalance,
    /// Spot capacity was not available when launching.
    CapacityError,
}

/// Where a flag came from.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum FlagSource {
    /// Raised by this cluster's operator.
    #[default]
    Local,
    /// Mirrored from the hub.
    Hub,
}

/// Observed state of a SpotRiskFlag.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SpotRiskFlagStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Conditions: `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
}
