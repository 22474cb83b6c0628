//! The PromQL right-sizing reads, and the step that keeps each range query bounded.
//!
//! Every query aggregates `by (namespace, pod, container)` so a series is one container of one pod;
//! the pause container (`container="POD"`) and the pod-level cgroup (`container=""`) are left out.

use std::time::Duration;

/// Most points a range query returns per series (Prometheus refuses more than 11,000).
pub const MAX_POINTS: u64 = 10_000;
/// The smallest step: one minute (finer than most scrape intervals is noise).
pub const MIN_STEP_SECONDS: u64 = 60;

/// The step for a range query over `window`: at most [`MAX_POINTS`] points, a whole number of
/// minutes, at least [`MIN_STEP_SECONDS`]. 14 days gives 3 minutes (6,720 points).
pub fn step_for(window: Duration) -> Duration {
    let seconds = window.as_secs().div_ceil(MAX_POINTS).max(MIN_STEP_SECONDS);
    Duration::from_secs(seconds.div_ceil(60) * 60)
}

/// Label matchers every container query carries, plus `namespace="..."` when given.
fn matchers(namespace: Option<&str>) -> String {
    let mut m = String::from(r#"container!="",container!="POD""#);
    if let Some(ns) = namespace {
        m.push_str(&format!(r#",namespace="{}""#, escape(ns)));
    }
    m
}

fn escape(value: &str) -> String {
    value.replace('\\', r"\\").replace('"', "\\\"")
}

/// CPU cores used: the rate of `container_cpu_usage_seconds_total` over twice the step (at least
/// 5 minutes, so a sample is never missed between two points).
pub fn cpu(namespace: Option<&str>, step: Duration) -> String {
    let range = (step.as_secs() * 2).max(300);
    format!(
        "sum by (namespace, pod, container) (rate(container_cpu_usage_seconds_total{{{}}}[{range}s]))",
        matchers(namespace)
    )
}

/// Memory working set, bytes (the peak of the step, so a short spike is kept).
pub fn memory(namespace: Option<&str>, step: Duration) -> String {
    format!(
        "max by (namespace, pod, container) (max_over_time(container_memory_working_set_bytes{{{}}}[{}s]))",
        matchers(namespace),
        step.as_secs()
    )
}

/// 1 while a container's last termination was an OOMKill (kube-state-metrics).
pub fn oom_killed(namespace: Option<&str>) -> String {
    let ns = namespace
        .map(|n| format!(r#",namespace="{}""#, escape(n)))
        .unwrap_or_default();
    format!(
        r#"max by (namespace, pod, container) (kube_pod_container_status_last_terminated_reason{{reason="OOMKilled"{ns}}})"#
    )
}

/// Memory limits of containers, bytes (kube-state-metrics): what an OOM-killed container used.
pub fn memory_limits(namespace: Option<&str>) -> String {
    let ns = namespace
        .map(|n| format!(r#",namespace="{}""#, escape(n)))
        .unwrap_or_default();
    format!(
        r#"max by (namespace, pod, container) (kube_pod_container_resource_limits{{resource="memory"{ns}}})"#
    )
}

/// Each pod's owner over the window (kube-state-metrics `kube_pod_owner`), pods gone since included.
pub fn pod_owners(namespace: Option<&str>, window: Duration) -> String {
    owners("kube_pod_owner", "pod", namespace, window)
}

/// Each ReplicaSet's owner (a Deployment) over the window.
pub fn replicaset_owners(namespace: Option<&str>, window: Duration) -> String {
    owners("kube_replicaset_owner", "replicaset", namespace, window)
}

/// Each Job's owner (a CronJob) over the window.
pub fn job_owners(namespace: Option<&str>, window: Duration) -> String {
    owners("kube_job_owner", "job_name", namespace, window)
}

fn owners(metric: &str, object: &str, namespace: Option<&str>, window: Duration) -> String {
    let ns = namespace
        .map(|n| format!(r#"namespace="{}""#, escape(n)))
        .unwrap_or_default();
    format!(
        "max by (namespace, {object}, owner_kind, owner_name) (max_over_time({metric}{{{ns}}}[{}s]))",
        window.as_secs()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fourteen_days_are_read_every_three_minutes() {
        let step = step_for(Duration::from_secs(14 * 86_400));
        assert_eq!(step, Duration::from_secs(180));
        assert!(14 * 86_400 / step.as_secs() <= MAX_POINTS);
    }

    #[test]
    fn short_windows_use_a_one_minute_step_and_long_ones_stay_bounded() {
        assert_eq!(step_for(Duration::from_secs(3600)), Duration::from_secs(60));
        let year = Duration::from_secs(366 * 86_400);
        assert!(year.as_secs() / step_for(year).as_secs() <= MAX_POINTS);
    }

    #[test]
    fn queries_name_the_metrics_and_escape_the_namespace() {
        let step = Duration::from_secs(180);
        let cpu = cpu(Some(r#"a"b"#), step);
        assert!(
            cpu.contains("rate(container_cpu_usage_seconds_total{"),
            "{cpu}"
        );
        assert!(cpu.contains(r#"namespace="a\"b""#), "{cpu}");
        assert!(cpu.contains("[360s]"), "{cpu}");
        assert!(memory(None, step).contains("container_memory_working_set_bytes"));
        assert!(oom_killed(None).contains(r#"reason="OOMKilled""#));
        assert!(pod_owners(None, Duration::from_secs(86_400)).contains("kube_pod_owner{}[86400s]"));
    }
}
