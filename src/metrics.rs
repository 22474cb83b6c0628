//! Prometheus metrics (prefix `cloudoptim_`, DESIGN.md section 9): one registry, every metric defined
//! here, and a guard that records a reconcile's duration when dropped.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

mod process;

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Errors building the metrics registry (only at start-up).
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// A metric could not be created or registered.
    #[error("registering metric: {0}")]
    Register(#[from] prometheus::Error),
}

/// Every metric CloudOptim exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// `cloudoptim_nodes{capacity_type,template}`.
    pub nodes: IntGaugeVec,
    /// `cloudoptim_node_hourly_cost_dollars{node,instance_type,zone,capacity_type}`.
    pub node_hourly_cost: GaugeVec,
    /// OpenCost-compatible `node_total_hourly_cost{node,instance_type,region,arch}`.
    pub node_total_hourly_cost: GaugeVec,
    /// `cloudoptim_estimated_savings_dollars_per_hour{policy}`.
    pub estimated_savings: GaugeVec,
    /// `cloudoptim_rightsizing_savings_dollars_per_month{policy}`: requests right-sizing would free.
    pub rightsizing_savings: GaugeVec,
    /// `cloudoptim_rightsizing_recommendations{policy}`: containers with a recommendation.
    pub rightsizing_recommendations: GaugeVec,
    /// `cloudoptim_rightsizing_changes_total{action,result}`: requests applied or reverted
    /// (`ok`, `error`, `dry_run`).
    pub rightsizing_changes: IntCounterVec,
    /// `cloudoptim_rightsizing_held{policy,reason}`: workloads with a recommendation Apply did not
    /// change this pass, by reason (ChangedRecently, Budget, BelowThreshold, DoNotDisrupt, ...).
    pub rightsizing_held: IntGaugeVec,
    /// `cloudoptim_interruptions_total{kind}`.
    pub interruptions: IntCounterVec,
    /// `cloudoptim_drains_total{result}`.
    pub drains: IntCounterVec,
    /// `cloudoptim_drain_duration_seconds`.
    pub drain_duration: HistogramVec,
    /// `cloudoptim_evictions_total{result}`.
    pub evictions: IntCounterVec,
    /// `cloudoptim_consolidation_actions_total{action,result}`.
    pub consolidation_actions: IntCounterVec,
    /// `cloudoptim_replacements_total{reason,result}`: replacements launched, done (the replaced
    /// nodes gone), aborted (the new node never became Ready) or failed to launch.
    pub replacements: IntCounterVec,
    /// `cloudoptim_hibernation_state{schedule}` (0 awake, 1 hibernating, 2 waking up, 3 suspended).
    pub hibernation_state: IntGaugeVec,
    /// `cloudoptim_risk_flags{source}`.
    pub risk_flags: IntGaugeVec,
    /// `cloudoptim_zombies{kind}`: tagged instances without a Node, and tagged available volumes,
    /// past their grace period.
    pub zombies: IntGaugeVec,
    /// `cloudoptim_reconcile_duration_seconds{controller}`.
    pub reconcile_duration: HistogramVec,
    /// `cloudoptim_reconcile_errors_total{controller,reason}`.
    pub reconcile_errors: IntCounterVec,
    /// `cloudoptim_aws_api_calls_total{op,result}`.
    pub aws_api_calls: IntCounterVec,
    /// `cloudoptim_spot_advisor_stale` (1 when the last refresh failed and an older copy is used).
    pub spot_advisor_stale: IntGaugeVec,
    /// `cloudoptim_spot_advisor_skipped_entries{reason}`: entries of the last fetched Spot Advisor feed
    /// left out as unusable, by reason (every reason present, 0 included).
    pub spot_advisor_skipped_entries: IntGaugeVec,
    /// `cloudoptim_on_demand_prices_source{region,source}`: 1 for where the region's on-demand prices
    /// in use came from (`live`, `last_good`, `embedded`), 0 for the others.
    pub on_demand_prices_source: IntGaugeVec,
    /// `cloudoptim_on_demand_prices_age_seconds{region}`: age of the fetched on-demand prices in use,
    /// as of the last ranking (absent while the catalog's table is used).
    pub on_demand_prices_age: IntGaugeVec,
    /// `cloudoptim_hub_reports_total{result}`: member reports received by the hub, by result
    /// (created, merged, duplicate, stale, invalid, unauthorized, forbidden, too_large).
    pub hub_reports: IntCounterVec,
    /// `cloudoptim_hub_watch_subscribers`: open watch (server-sent events) streams of the hub.
    pub hub_watch_subscribers: IntGauge,
    /// `cloudoptim_hub_flag_writes_total{op,result}`: SpotRiskFlag writes by the hub and the member
    /// mirror (op apply|delete, result ok|error).
    pub hub_flag_writes: IntCounterVec,
    /// `cloudoptim_hub_limited_total{limit}`: requests and connections the hub refused by a limit
    /// (`report_rate`, `requests`, `watches`, `flags`, `connections`).
    pub hub_limited: IntCounterVec,
    /// `cloudoptim_hub_connections`: open connections to the hub API.
    pub hub_connections: IntGauge,
    /// `cloudoptim_hub_tls_reloads_total{result}`: certificate reloads after the files changed.
    pub hub_tls_reloads: IntCounterVec,
    /// `cloudoptim_hub_watches_revoked_total`: watch streams ended because their token was revoked.
    pub hub_watches_revoked: IntCounter,
    /// `cloudoptim_leader`: 1 while this replica holds the leader lease (always 1 without election).
    pub leader: IntGauge,
    /// `cloudoptim_fenced_writes_total{target}`: writes refused because this replica did not hold the
    /// lease (target kubernetes|aws).
    pub fenced_writes: IntCounterVec,
    /// `cloudoptim_drains_in_progress`: drains holding one of the process-wide drain slots.
    pub drains_in_progress: IntGauge,
    /// `cloudoptim_interruption_held_nodes{kind}`: nodes CloudOptim holds cordoned for an
    /// interruption notice, by what the notice announced.
    pub interruption_held_nodes: IntGaugeVec,
    /// `cloudoptim_interruption_held_oldest_seconds{kind}`: how long the longest-held of them has been
    /// cordoned.
    pub interruption_held_oldest: IntGaugeVec,
    /// `cloudoptim_interruption_releases_total{kind}`: held nodes uncordoned once healthy again.
    pub interruption_releases: IntCounterVec,
    /// `cloudoptim_lifecycle_actions_total{outcome}`: Auto Scaling lifecycle actions completed with
    /// CONTINUE, by what came before (see [`LIFECYCLE_OUTCOMES`]).
    pub lifecycle_actions: IntCounterVec,
    /// `cloudoptim_build_info{version,commit}`: always 1.
    pub build_info: IntGaugeVec,
    /// `cloudoptim_interruption_message_age_seconds{kind}`: from SQS receiving a notice (its
    /// `SentTimestamp`) to CloudOptim receiving it.
    pub interruption_message_age: HistogramVec,
    /// `cloudoptim_interruption_cordon_latency_seconds{kind}`: from a notice's event time to its
    /// node's cordon.
    pub interruption_cordon_latency: HistogramVec,
    /// The per-node and per-policy series each policy exported last, so that series of nodes and
    /// policies that are gone are removed instead of being reported forever.
    owned: Arc<Mutex<BTreeMap<String, BTreeSet<Series>>>>,
}

/// The `kind` label of the interruption metrics: every notice kind the intake reads.
pub const NOTICE_KINDS: [&str; 8] = [
    "spot_interruption",
    "rebalance",
    "state_change",
    "scheduled_change",
    "launch_failed",
    "lifecycle_terminate",
    "lifecycle_launch",
    "lifecycle_test",
];

/// The `outcome` label of `cloudoptim_lifecycle_actions_total`: how a lifecycle action ended.
pub const LIFECYCLE_OUTCOMES: [&str; 6] = [
    "drained",
    "drain_failed",
    "not_a_node",
    "launch",
    "dry_run",
    "complete_failed",
];

/// One labelled series a policy's reconcile exports.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Series {
    /// `cloudoptim_node_hourly_cost_dollars{node,instance_type,zone,capacity_type}`.
    NodeHourlyCost([String; 4]),
    /// `node_total_hourly_cost{node,instance_type,region,arch}`.
    NodeTotalHourlyCost([String; 4]),
    /// `cloudoptim_nodes{capacity_type,template}`.
    Nodes([String; 2]),
    /// `cloudoptim_estimated_savings_dollars_per_hour{policy}`.
    EstimatedSavings(String),
    /// `cloudoptim_rightsizing_savings_dollars_per_month{policy}` and
    /// `cloudoptim_rightsizing_recommendations{policy}`.
    Rightsizing(String),
}

impl Metrics {
    /// Create and register every metric in a new registry.
    pub fn new() -> Result<Metrics, MetricsError> {
        let registry = Registry::new();
        let counter =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, MetricsError> {
                let metric =
                    IntCounterVec::new(Opts::new(format!("cloudoptim_{name}"), help), labels)?;
                registry.register(Box::new(metric.clone()))?;
                Ok(metric)
            };
        let int_gauge =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntGaugeVec, MetricsError> {
                let metric =
                    IntGaugeVec::new(Opts::new(format!("cloudoptim_{name}"), help), labels)?;
                registry.register(Box::new(metric.clone()))?;
                Ok(metric)
            };
        let gauge = |name: &str, help: &str, labels: &[&str]| -> Result<GaugeVec, MetricsError> {
            let metric = GaugeVec::new(Opts::new(name.to_string(), help), labels)?;
            registry.register(Box::new(metric.clone()))?;
            Ok(metric)
        };
        let histogram = |name: &str,
                         help: &str,
                         labels: &[&str],
                         buckets: Vec<f64>|
         -> Result<HistogramVec, MetricsError> {
            let metric = HistogramVec::new(
                HistogramOpts::new(format!("cloudoptim_{name}"), help).buckets(buckets),
                labels,
            )?;
            registry.register(Box::new(metric.clone()))?;
            Ok(metric)
        };
        let fast = vec![0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
        let slow = vec![1.0, 5.0, 10.0, 30.0, 60.0, 90.0, 120.0, 300.0, 600.0];
        // Notices give two minutes: the buckets resolve that window.
        let notice = vec![
            0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 90.0, 120.0, 300.0,
        ];
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        registry.register(Box::new(process::ProcessCollector::new(started)?))?;
        Ok(Metrics {
            nodes: int_gauge(
                "nodes",
                "Nodes by capacity type and NodeTemplate.",
                &["capacity_type", "template"],
            )?,
            node_hourly_cost: gauge(
                "cloudoptim_node_hourly_cost_dollars",
                "Hourly cost of a node, USD.",
                &["node", "instance_type", "zone", "capacity_type"],
            )?,
            node_total_hourly_cost: gauge(
                "node_total_hourly_cost",
                "OpenCost-compatible total hourly cost of a node, USD.",
                &["node", "instance_type", "region", "arch"],
            )?,
            estimated_savings: gauge(
                "cloudoptim_estimated_savings_dollars_per_hour",
                "Estimated savings against the same nodes on-demand, USD per hour.",
                &["policy"],
            )?,
            rightsizing_savings: gauge(
                "cloudoptim_rightsizing_savings_dollars_per_month",
                "Requests right-sizing recommends freeing, priced per vCPU and GiB, USD per month.",
                &["policy"],
            )?,
            rightsizing_recommendations: gauge(
                "cloudoptim_rightsizing_recommendations",
                "Containers with a right-sizing recommendation.",
                &["policy"],
            )?,
            rightsizing_changes: counter(
                "rightsizing_changes_total",
                "Right-sizing changes to workloads' requests, by action (apply, revert) and result (ok, error, dry_run).",
                &["action", "result"],
            )?,
            rightsizing_held: int_gauge(
                "rightsizing_held",
                "Workloads whose recommendation right-sizing Apply did not carry out in the last pass, by reason.",
                &["policy", "reason"],
            )?,
            interruptions: counter(
                "interruptions_total",
                "Interruption notices handled, by kind.",
                &["kind"],
            )?,
            drains: counter("drains_total", "Node drains, by result.", &["result"])?,
            drain_duration: histogram(
                "drain_duration_seconds",
                "Time to drain a node.",
                &[],
                slow,
            )?,
            evictions: counter(
                "evictions_total",
                "Pod evictions through the Eviction API, by result.",
                &["result"],
            )?,
            consolidation_actions: counter(
                "consolidation_actions_total",
                "Consolidation actions, by action and result.",
                &["action", "result"],
            )?,
            replacements: counter(
                "replacements_total",
                "Node replacements (replace before delete), by reason (consolidation, spotMix) and result (launched, replaced, aborted, error).",
                &["reason", "result"],
            )?,
            hibernation_state: int_gauge(
                "hibernation_state",
                "State of a HibernationSchedule: 0 Awake, 1 Hibernating, 2 WakingUp, 3 Suspended.",
                &["schedule"],
            )?,
            risk_flags: int_gauge(
                "risk_flags",
                "Active SpotRiskFlags, by source.",
                &["source"],
            )?,
            zombies: int_gauge(
                "zombies",
                "Tagged instances without a Node and tagged available volumes past their grace period.",
                &["kind"],
            )?,
            reconcile_duration: histogram(
                "reconcile_duration_seconds",
                "Duration of one reconcile, by controller.",
                &["controller"],
                fast,
            )?,
            reconcile_errors: counter(
                "reconcile_errors_total",
                "Failed reconciles, by controller and error reason.",
                &["controller", "reason"],
            )?,
            aws_api_calls: counter(
                "aws_api_calls_total",
                "AWS API calls, by operation and result.",
                &["op", "result"],
            )?,
            spot_advisor_stale: int_gauge(
                "spot_advisor_stale",
                "1 when the last Spot Advisor refresh failed and an older copy is in use.",
                &["source"],
            )?,
            spot_advisor_skipped_entries: int_gauge(
                "spot_advisor_skipped_entries",
                "Entries of the last fetched Spot Advisor feed skipped as unusable, by reason.",
                &["reason"],
            )?,
            on_demand_prices_source: int_gauge(
                "on_demand_prices_source",
                "1 for the source of a region's on-demand prices in use (live, last_good, embedded), 0 for the others.",
                &["region", "source"],
            )?,
            on_demand_prices_age: int_gauge(
                "on_demand_prices_age_seconds",
                "Age of a region's fetched on-demand prices in use, seconds, as of the last ranking.",
                &["region"],
            )?,
            hub_reports: counter(
                "hub_reports_total",
                "Risk reports received by the hub, by result.",
                &["result"],
            )?,
            hub_watch_subscribers: {
                let metric = IntGauge::new(
                    "cloudoptim_hub_watch_subscribers",
                    "Open watch streams (server-sent events) of the hub.",
                )?;
                registry.register(Box::new(metric.clone()))?;
                metric
            },
            hub_flag_writes: counter(
                "hub_flag_writes_total",
                "SpotRiskFlag writes of the hub and the member mirror, by operation and result.",
                &["op", "result"],
            )?,
            hub_limited: counter(
                "hub_limited_total",
                "Requests and connections the hub refused by a limit, by limit.",
                &["limit"],
            )?,
            hub_connections: {
                let metric = IntGauge::new(
                    "cloudoptim_hub_connections",
                    "Open connections to the hub API.",
                )?;
                registry.register(Box::new(metric.clone()))?;
                metric
            },
            hub_tls_reloads: counter(
                "hub_tls_reloads_total",
                "Reloads of the hub's TLS certificate after its files changed, by result.",
                &["result"],
            )?,
            hub_watches_revoked: {
                let metric = IntCounter::new(
                    "cloudoptim_hub_watches_revoked_total",
                    "Hub watch streams ended because their member token was removed or changed.",
                )?;
                registry.register(Box::new(metric.clone()))?;
                metric
            },
            leader: {
                let metric = IntGauge::new(
                    "cloudoptim_leader",
                    "1 while this replica holds the leader lease and may act.",
                )?;
                registry.register(Box::new(metric.clone()))?;
                metric
            },
            fenced_writes: counter(
                "fenced_writes_total",
                "Writes refused because this replica did not hold the leader lease, by target.",
                &["target"],
            )?,
            drains_in_progress: {
                let metric = IntGauge::new(
                    "cloudoptim_drains_in_progress",
                    "Drains running now (bounded process-wide by --max-concurrent-drains).",
                )?;
                registry.register(Box::new(metric.clone()))?;
                metric
            },
            interruption_held_nodes: int_gauge(
                "interruption_held_nodes",
                "Nodes CloudOptim holds cordoned for an interruption notice, by notice kind.",
                &["kind"],
            )?,
            interruption_held_oldest: int_gauge(
                "interruption_held_oldest_seconds",
                "How long the longest-held node of each notice kind has been cordoned, seconds.",
                &["kind"],
            )?,
            interruption_releases: counter(
                "interruption_releases_total",
                "Nodes cordoned for an interruption notice and uncordoned once healthy again.",
                &["kind"],
            )?,
            lifecycle_actions: counter(
                "lifecycle_actions_total",
                "Auto Scaling lifecycle actions completed with CONTINUE, by outcome: drained, drain_failed, not_a_node, launch, dry_run; complete_failed when the completion itself failed.",
                &["outcome"],
            )?,
            build_info: int_gauge(
                "build_info",
                "Always 1: the version and commit this binary was built from.",
                &["version", "commit"],
            )?,
            interruption_message_age: histogram(
                "interruption_message_age_seconds",
                "Seconds from SQS receiving an interruption notice to CloudOptim receiving it.",
                &["kind"],
                notice.clone(),
            )?,
            interruption_cordon_latency: histogram(
                "interruption_cordon_latency_seconds",
                "Seconds from an interruption notice's event time to its node's cordon.",
                &["kind"],
                notice,
            )?,
            owned: Arc::default(),
            registry,
        }
        .initialised())
    }

    /// Series that exist from the start, at zero, so that `rate()` and `increase()` see the first
    /// event and dashboards show 0 rather than "no data".
    fn initialised(self) -> Metrics {
        self.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), env!("CLOUDOPTIM_COMMIT_TEXT")])
            .set(1);
        for kind in NOTICE_KINDS {
            self.interruptions.with_label_values(&[kind]);
            self.interruption_message_age.with_label_values(&[kind]);
            self.interruption_cordon_latency.with_label_values(&[kind]);
        }
        for kind in ["spot_interruption", "rebalance"] {
            self.interruption_releases.with_label_values(&[kind]);
        }
        for outcome in LIFECYCLE_OUTCOMES {
            self.lifecycle_actions.with_label_values(&[outcome]);
        }
        for result in ["ok", "blocked", "failed", "error"] {
            self.drains.with_label_values(&[result]);
        }
        self.evictions.with_label_values(&["evicted"]);
        for controller in ["policy", "node_template", "hibernation"] {
            self.reconcile_duration.with_label_values(&[controller]);
        }
        for target in ["kubernetes", "aws"] {
            self.fenced_writes.with_label_values(&[target]);
        }
        for action in ["apply", "revert"] {
            for result in ["ok", "error", "dry_run"] {
                self.rightsizing_changes
                    .with_label_values(&[action, result]);
            }
        }
        for reason in ["consolidation", "spotMix"] {
            for result in ["launched", "replaced", "aborted", "error"] {
                self.replacements.with_label_values(&[reason, result]);
            }
        }
        for result in ["ok", "error"] {
            self.consolidation_actions
                .with_label_values(&["terminate", result]);
            for op in ["apply", "delete"] {
                self.hub_flag_writes.with_label_values(&[op, result]);
            }
        }
        for result in [
            "created",
            "merged",
            "duplicate",
            "stale",
            "invalid",
            "unauthorized",
            "forbidden",
            "too_large",
        ] {
            self.hub_reports.with_label_values(&[result]);
        }
        for limit in ["report_rate", "requests", "watches", "flags", "connections"] {
            self.hub_limited.with_label_values(&[limit]);
        }
        self
    }

    /// Record that `owner` (a policy) now exports exactly `series`; every series no owner exports any
    /// more (a consolidated node, a node of another type now) is removed from the registry.
    pub fn replace_owned(&self, owner: &str, series: BTreeSet<Series>) {
        let Ok(mut owned) = self.owned.lock() else {
            return;
        };
        let previous = owned.insert(owner.to_string(), series).unwrap_or_default();
        self.remove_unowned(&owned, previous);
    }

    /// Forget every owner for which `alive` is false (a deleted policy), removing its series.
    pub fn retain_owners(&self, alive: impl Fn(&str) -> bool) {
        let Ok(mut owned) = self.owned.lock() else {
            return;
        };
        let gone: Vec<String> = owned.keys().filter(|o| !alive(o)).cloned().collect();
        let mut dropped = BTreeSet::new();
        for owner in gone {
            dropped.extend(owned.remove(&owner).unwrap_or_default());
        }
        self.remove_unowned(&owned, dropped);
    }

    fn remove_unowned(
        &self,
        owned: &BTreeMap<String, BTreeSet<Series>>,
        candidates: BTreeSet<Series>,
    ) {
        for series in candidates {
            if owned.values().any(|s| s.contains(&series)) {
                continue;
            }
            // Removing a series that is not there (never set) is not an error worth reporting.
            let _ = match &series {
                Series::NodeHourlyCost(l) => self
                    .node_hourly_cost
                    .remove_label_values(&l.each_ref().map(String::as_str)),
                Series::NodeTotalHourlyCost(l) => self
                    .node_total_hourly_cost
                    .remove_label_values(&l.each_ref().map(String::as_str)),
                Series::Nodes(l) => self
                    .nodes
                    .remove_label_values(&l.each_ref().map(String::as_str)),
                Series::EstimatedSavings(policy) => {
                    self.estimated_savings.remove_label_values(&[policy])
                }
                Series::Rightsizing(policy) => {
                    for reason in crate::engine::rightsizing::apply::Skip::REASONS {
                        let _ = self.rightsizing_held.remove_label_values(&[policy, reason]);
                    }
                    let _ = self
                        .rightsizing_recommendations
                        .remove_label_values(&[policy]);
                    self.rightsizing_savings.remove_label_values(&[policy])
                }
            };
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        // Encoding into a Vec cannot fail for the text format.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        String::from_utf8_lossy(&buffer).into_owned()
    }

    /// Start timing a reconcile of `controller`; the duration is recorded when the guard drops.
    pub fn reconcile_timer(&self, controller: &'static str) -> ReconcileTimer {
        ReconcileTimer {
            histogram: self.reconcile_duration.clone(),
            controller,
            start: Instant::now(),
        }
    }
}

/// Records a reconcile's duration when dropped.
pub struct ReconcileTimer {
    histogram: HistogramVec,
    controller: &'static str,
    start: Instant,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram
            .with_label_values(&[self.controller])
            .observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the sample line that starts with `series` (name and labels).
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
    }

    #[test]
    fn build_info_process_metrics_and_zeroed_series_exist_before_any_event() {
        let text = Metrics::new().expect("registry builds").render();
        let build = format!(
            "cloudoptim_build_info{{commit=\"{}\",version=\"{}\"}}",
            env!("CLOUDOPTIM_COMMIT_TEXT"),
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(sample(&text, &build), Some(1.0), "{text}");
        assert!(sample(&text, "process_resident_memory_bytes").is_some_and(|b| b > 1e6));
        assert!(sample(&text, "process_open_fds").is_some_and(|n| n >= 3.0));
        assert!(sample(&text, "process_start_time_seconds").is_some_and(|s| s > 1.7e9));
        assert!(text.contains("# TYPE process_cpu_seconds_total counter"));
        for zero in [
            "cloudoptim_drains_total{result=\"failed\"}",
            "cloudoptim_interruptions_total{kind=\"spot_interruption\"}",
            "cloudoptim_interruption_message_age_seconds_count{kind=\"rebalance\"}",
            "cloudoptim_interruption_cordon_latency_seconds_count{kind=\"spot_interruption\"}",
        ] {
            assert_eq!(sample(&text, zero), Some(0.0), "{zero} in\n{text}");
        }
    }

    #[test]
    fn every_metric_is_exported_with_the_prefix_once_touched() {
        let metrics = Metrics::new().expect("registry builds");
        metrics
            .aws_api_calls
            .with_label_values(&["DescribeAutoScalingGroups", "ok"])
            .inc();
        {
            let _timer = metrics.reconcile_timer("node_template");
        }
        let text = metrics.render();
        assert!(text.contains(
            "cloudoptim_aws_api_calls_total{op=\"DescribeAutoScalingGroups\",result=\"ok\"} 1"
        ));
        assert!(text.contains(
            "cloudoptim_reconcile_duration_seconds_count{controller=\"node_template\"} 1"
        ));
    }

    #[test]
    fn series_of_gone_nodes_and_policies_are_removed() {
        let metrics = Metrics::new().expect("registry builds");
        let node = |name: &str| Series::Nodes([name.to_string(), "t".to_string()]);
        let set = |metrics: &Metrics, series: &Series| {
            if let Series::Nodes(l) = series {
                metrics.nodes.with_label_values(&[&l[0], &l[1]]).set(1);
            }
        };
        for s in [node("spot"), node("on-demand")] {
            set(&metrics, &s);
        }
        metrics.replace_owned("a", [node("spot"), node("on-demand")].into());
        set(&metrics, &node("spot"));
        metrics.replace_owned("b", [node("spot")].into());
        metrics.replace_owned("a", [node("spot")].into());
        let text = metrics.render();
        assert!(text.contains("capacity_type=\"spot\""), "{text}");
        assert!(!text.contains("capacity_type=\"on-demand\""), "{text}");
        metrics.retain_owners(|o| o == "b");
        assert!(
            metrics.render().contains("capacity_type=\"spot\""),
            "still owned by b"
        );
        metrics.retain_owners(|_| false);
        assert!(
            !metrics.render().contains("cloudoptim_nodes{"),
            "no owner left"
        );
    }
}
