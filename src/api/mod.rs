//! Custom resource types of CloudOptim: group `cloudoptim.io`, version `v1alpha1` (DESIGN.md section 3).
//!
//! Every kind is cluster-scoped, has a short name, printer columns, a status subresource with
//! `observedGeneration` and `conditions` (a list-map keyed on `type`, so server-side apply merges them),
//! and CEL rules (`x-kubernetes-validations`) for the cross-field checks the API server can enforce at
//! admission. What CEL cannot check becomes a `Ready=False` condition written by the controller.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub mod common;
pub mod file;
pub mod hibernation;
pub mod node_template;
pub mod policy;
pub mod risk_flag;

pub use common::{CapacityType, Taint, TaintEffect};
pub use hibernation::{HibernationSchedule, HibernationScheduleSpec, HibernationScheduleStatus};
pub use node_template::{NodeTemplate, NodeTemplateSpec, NodeTemplateStatus};
pub use policy::{OptimizationPolicy, OptimizationPolicySpec, OptimizationPolicyStatus};
pub use risk_flag::{SpotRiskFlag, SpotRiskFlagSpec, SpotRiskFlagStatus};

/// API group of every CloudOptim kind.
pub const GROUP: &str = "cloudoptim.io";
/// API version served and stored.
pub const VERSION: &str = "v1alpha1";

/// Every CRD of CloudOptim, sorted by name, which is also the order of the files in crds/ (one per
/// kind, named `<plural>.cloudoptim.io.yaml`), so `cat crds/*.yaml` equals `cloudoptim crds`.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        HibernationSchedule::crd(),
        NodeTemplate::crd(),
        OptimizationPolicy::crd(),
        SpotRiskFlag::crd(),
    ]
}

#[cfg(test)]
mod tests;
