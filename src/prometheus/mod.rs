//! Reading container usage from the Prometheus a cluster already runs (issue #17, item 1).
//!
//! - [`client`]: the HTTP API (`/api/v1/query`, `/api/v1/query_range`) over the project's one HTTP
//!   client, with a bearer token, a CA bundle, a client certificate (mutual TLS) and a timeout; errors tell an unreachable server from a
//!   refused query and from a query that matched nothing.
//! - [`response`]: the API's JSON (vector and matrix results) as plain series.
//! - [`queries`]: the PromQL for CPU (`container_cpu_usage_seconds_total` rate), memory
//!   (`container_memory_working_set_bytes`), OOM kills (kube-state-metrics
//!   `kube_pod_container_status_last_terminated_reason`) and owners (`kube_pod_owner`,
//!   `kube_replicaset_owner`, `kube_job_owner`), and the step that keeps a range query bounded.
//! - [`usage`]: series grouped per workload container into the engine's
//!   [`crate::engine::rightsizing::ContainerUsage`] inputs (pure).

pub mod client;
pub mod queries;
pub mod read;
pub mod response;
pub mod usage;

pub use client::{PromError, Prometheus, PrometheusAccess, PrometheusOptions};
pub use response::{ResponseError, Series};
