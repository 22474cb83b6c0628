//! What a vCPU and a GiB of requests cost per hour in this cluster.
//!
//! A node's price pays for its CPU and its memory together. It is split in the proportion OpenCost
//! uses by default ($0.031611 per vCPU-hour to $0.004237 per GiB-hour: one vCPU costs as much as
//! [`VCPU_TO_GIB`] GiB), scaled so that the cluster's nodes, priced per vCPU and per GiB of their
//! allocatable, cost exactly what they cost: per_vcpu = sum(price) / sum(vcpu + gib / VCPU_TO_GIB).

use super::{GIB, HOURS_PER_MONTH, Requests};
use crate::engine::snapshot::Node;

/// GiB of memory that cost as much as one vCPU (OpenCost's default prices, 0.031611 / 0.004237).
pub const VCPU_TO_GIB: f64 = 0.031611 / 0.004237;

/// Hourly cost of one vCPU and one GiB of requests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UnitPrices {
    /// Dollars per vCPU-hour.
    pub per_vcpu_hour: f64,
    /// Dollars per GiB-hour.
    pub per_gib_hour: f64,
}

impl UnitPrices {
    /// The unit prices of the priced nodes with allocatable CPU or memory; `None` if there is none.
    pub fn of_nodes(nodes: &[Node]) -> Option<UnitPrices> {
        let mut dollars = 0.0;
        let mut units = 0.0;
        for node in nodes {
            let Some(price) = node.hourly_price.filter(|p| p.is_finite() && *p > 0.0) else {
                continue;
            };
            let vcpu = node.allocatable.cpu_millis as f64 / 1000.0;
            let gib = node.allocatable.memory_bytes as f64 / GIB as f64;
            if vcpu + gib > 0.0 {
                dollars += price;
                units += vcpu + gib / VCPU_TO_GIB;
            }
        }
        (units > 0.0).then(|| UnitPrices {
            per_vcpu_hour: dollars / units,
            per_gib_hour: dollars / units / VCPU_TO_GIB,
        })
    }

    /// Dollars a month freed by going from `current` to `recommended` on `replicas` pods; a field
    /// unset on either side counts as unchanged.
    pub fn monthly(&self, current: &Requests, recommended: &Requests, replicas: u32) -> f64 {
        let delta = |now: Option<u64>, new: Option<u64>| match (now, new) {
            (Some(now), Some(new)) => now as f64 - new as f64,
            _ => 0.0,
        };
        let vcpu = delta(current.cpu_millis, recommended.cpu_millis) / 1000.0;
        let gib = delta(current.memory_bytes, recommended.memory_bytes) / GIB as f64;
        (vcpu * self.per_vcpu_hour + gib * self.per_gib_hour) * replicas as f64 * HOURS_PER_MONTH
    }
}
