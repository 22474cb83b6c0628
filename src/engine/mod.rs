//! Pure decisions over plain data. Nothing in this module tree may import `kube`, `k8s_openapi` or any
//! `aws_sdk_*` crate: controllers translate cluster and AWS objects into these types, call one function,
//! and turn the returned plan into API calls. Every decision is unit-testable in milliseconds.

pub mod budgets;
pub mod catalog;
pub mod consolidation;
pub mod duration;
pub mod hibernation;
pub mod interruption;
pub mod lifecycle;
pub mod mix;
pub mod ranking;
pub mod release;
pub mod replacement;
pub mod rightsizing;
pub mod savings;
pub mod schedule;
pub mod snapshot;
pub mod spot_average;
pub mod zombies;
