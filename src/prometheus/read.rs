//! One read of everything right-sizing needs from Prometheus, for one namespace (or all), over a window
//! ending now: CPU and memory ranges at the bounded step, OOM kills over the same range, memory limits
//! and owners at the end.

use std::time::Duration;

use super::client::{PromError, Prometheus, or_empty};
use super::queries;
use super::usage::{Observed, Owners};

/// What [`read`] returns.
#[derive(Debug, Clone, Default)]
pub struct Read {
    /// The usage series.
    pub observed: Observed,
    /// Pod owners.
    pub owners: Owners,
    /// The step the ranges were read at.
    pub step: Duration,
}

/// Read `window` up to `end` (seconds since the epoch). No CPU or memory data at all is
/// [`PromError::NoData`]; no OOM kill, limit or owner is fine.
pub async fn read(
    prom: &Prometheus,
    namespace: Option<&str>,
    window: Duration,
    end: i64,
) -> Result<Read, PromError> {
    let step = queries::step_for(window);
    let start = end - window.as_secs() as i64;
    let range = |q: String| async move { prom.query_range(&q, start, end, step).await };
    let cpu = range(queries::cpu(namespace, step)).await?;
    let memory = range(queries::memory(namespace, step)).await?;
    let oom_killed = or_empty(range(queries::oom_killed(namespace)).await)?;
    let at = Some(end);
    let memory_limits = or_empty(prom.query(&queries::memory_limits(namespace), at).await)?;
    let pods = or_empty(
        prom.query(&queries::pod_owners(namespace, window), at)
            .await,
    )?;
    let replicasets = or_empty(
        prom.query(&queries::replicaset_owners(namespace, window), at)
            .await,
    )?;
    let jobs = or_empty(
        prom.query(&queries::job_owners(namespace, window), at)
            .await,
    )?;
    Ok(Read {
        observed: Observed {
            cpu,
            memory,
            oom_killed,
            memory_limits,
        },
        owners: Owners::from_series(&pods, &replicasets, &jobs),
        step,
    })
}
