//! CloudOptim: a Kubernetes operator that keeps AWS clusters on the cheapest capacity that is safe.
//!
//! The crate is one library with one binary (`cloudoptim`). Module layout follows DESIGN.md section 1:
//! `api` holds the CRD types, `engine` the pure decisions (no kube or AWS types), `cloud` the narrow AWS
//! interface, `k8s` turns Kubernetes objects into engine values, `controllers` the reconcilers, `hub` the multi-cluster risk-sharing service.

pub mod api;
pub mod cli;
pub mod cloud;
pub mod controllers;
pub mod drain;
pub mod engine;
pub mod fence;
pub mod http;
pub mod hub;
pub mod k8s;
pub mod metrics;
pub mod names;
pub mod prometheus;
pub mod retry;
pub mod telemetry;
