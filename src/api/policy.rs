//! `OptimizationPolicy` (short name `opol`): the cluster policy - how far to optimise, and with what
//! safety (DESIGN.md section 3.2).

// kube's `printcolumn(...)` attributes repeat the same keys on purpose.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{DURATION_PATTERN, conditions_schema, default_true};

/// Desired state of an OptimizationPolicy: the Spot mix, node bounds, consolidation, disruption
/// budgets, right-sizing, zombie detection and interruption handling for the NodeTemplates it selects.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "cloudoptim.io",
    version = "v1alpha1",
    kind = "OptimizationPolicy",
    shortname = "opol",
    category = "cloudoptim",
    status = "OptimizationPolicyStatus",
    doc = "Cluster policy: Spot percentage, node bounds, consolidation, disruption budgets, right-sizing, zombies and interruption handling.",
    printcolumn(name = "Nodes", type_ = "integer", json_path = ".status.nodes.total"),
    printcolumn(
        name = "Spot%",
        type_ = "integer",
        json_path = ".status.nodes.spotPercentage"
    ),
    printcolumn(name = "$/h", type_ = "number", json_path = ".status.cost.hourly"),
    printcolumn(
        name = "Savings%",
        type_ = "number",
        json_path = ".status.cost.savingsPercent"
    ),
    printcolumn(
        name = "DryRun",
        type_ = "boolean",
        json_path = ".spec.dryRun",
        priority = 1
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
pub struct OptimizationPolicySpec {
    /// Selects the NodeTemplates this policy governs (by their labels). Empty selects all. A template
    /// selected by two policies is acted on by neither.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_template_selector: Option<LabelSelector>,
    /// Spot / on-demand mix.
    #[serde(default)]
    pub spot: SpotSettings,
    /// Node count bounds across the selected templates.
    #[serde(default)]
    pub nodes: NodeBounds,
    /// Bin-packing pods onto fewer nodes.
    #[serde(default)]
    pub consolidation: Consolidation,
    /// Limits on voluntary disruption.
    #[serde(default)]
    pub disruption: Disruption,
    /// Container request recommendations from Prometheus usage.
    #[serde(default)]
    pub rightsizing: Rightsizing,
    /// Tagged instances with no Node and unattached tagged volumes.
    #[serde(default)]
    pub zombies: Zombies,
    /// Spot interruption handling.
    #[serde(default)]
    pub interruptions: Interruptions,
    /// Plan, record Events and metrics, and change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// Spot / on-demand mix of the selected Auto Scaling groups.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SpotSettings {
    /// Percentage of capacity above `onDemandBase` that runs on Spot (0-100). Above 90 is allowed and
    /// recorded with a warning event.
    #[serde(default = "default_spot_percentage")]
    #[schemars(range(min = 0, max = 100))]
    pub percentage: u32,
    /// Number of nodes that always run on-demand.
    #[serde(default)]
    #[schemars(range(max = 10000))]
    pub on_demand_base: u32,
    /// Fall back to on-demand when Spot capacity is not available.
    #[serde(default = "default_true")]
    pub fallback_to_on_demand: bool,
    /// After a fallback, return to Spot after this long (duration such as `30m`).
    #[serde(default = "default_restore")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub restore_to_spot_after: String,
}

impl Default for SpotSettings {
    fn default() -> Self {
        SpotSettings {
            percentage: default_spot_percentage(),
            on_demand_base: 0,
            fallback_to_on_demand: true,
            restore_to_spot_after: default_restore(),
        }
    }
}

fn default_spot_percentage() -> u32 {
    70
}
fn default_restore() -> String {
    "30m".into()
}

/// Node count bounds.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("!has(self.min) || !has(self.max) || self.min <= self.max").message("spec.nodes: min must be <= max"))]
pub struct NodeBounds {
    /// Never go below this many nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 100000))]
    pub min: Option<u32>,
    /// Never go above this many nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 100000))]
    pub max: Option<u32>,
}

/// Consolidation settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Consolidation {
    /// Off, WhenEmpty (remove only nodes with no movable pods) or WhenUnderutilized (also move pods).
    #[serde(default)]
    pub mode: ConsolidationMode,
    /// A node whose requested CPU and memory are both below this fraction of allocatable is a candidate.
    #[serde(default = "default_utilization")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub utilization_threshold: f64,
    /// 0-100: how much churn is acceptable for a saving (higher = more moves per dollar).
    #[serde(default = "default_aggressiveness")]
    #[schemars(range(min = 0, max = 100))]
    pub aggressiveness: u32,
    /// A node must have been a candidate this long before it is consolidated.
    #[serde(default = "default_five_minutes")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub consolidate_after: String,
    /// How often the consolidation plan is computed.
    #[serde(default = "default_five_minutes")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub interval: String,
    /// Replace before delete: k nodes by one cheaper node, on-demand nodes by Spot ones toward
    /// `spot.percentage` (see README "Replacement and convergence").
    #[serde(default)]
    pub replacement: ReplacementSettings,
}

impl Default for Consolidation {
    fn default() -> Self {
        Consolidation {
            mode: ConsolidationMode::default(),
            utilization_threshold: default_utilization(),
            aggressiveness: default_aggressiveness(),
            consolidate_after: default_five_minutes(),
            interval: default_five_minutes(),
            replacement: ReplacementSettings::default(),
        }
    }
}

/// How nodes are replaced.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplacementSettings {
    /// Launch replacements (default true). False: replacements are planned and shown in
    /// status.plannedReplacements, never carried out; only removals happen.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// The new node must cost at most (1 - margin) of the nodes it replaces.
    #[serde(default = "default_margin")]
    #[schemars(range(min = 0.0, max = 0.9))]
    pub margin: f64,
    /// How long the new node has to become Ready after its launch; past it, the new instance is
    /// terminated and the old nodes are left as they were.
    #[serde(default = "default_ready_timeout")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub ready_timeout: String,
}

impl Default for ReplacementSettings {
    fn default() -> Self {
        ReplacementSettings {
            enabled: true,
            margin: default_margin(),
            ready_timeout: default_ready_timeout(),
        }
    }
}

fn default_margin() -> f64 {
    0.1
}
fn default_ready_timeout() -> String {
    "10m".into()
}

fn default_utilization() -> f64 {
    0.5
}
fn default_aggressiveness() -> u32 {
    40
}
fn default_five_minutes() -> String {
    "5m".into()
}

/// Consolidation mode.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum ConsolidationMode {
    /// No consolidation.
    Off,
    /// Remove nodes with no movable pods only.
    WhenEmpty,
    /// Move pods off under-utilised nodes and remove them.
    #[default]
    WhenUnderutilized,
}

/// Limits on voluntary disruption (consolidation, zombies); interruptions are not voluntary.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Disruption {
    /// Budgets; the most restrictive active one applies. Default: one budget of `nodes: "10%"`.
    #[serde(default = "default_budgets")]
    #[schemars(length(max = 50))]
    pub budgets: Vec<Budget>,
    /// Pods in these namespaces are never evicted; their nodes are kept.
    #[serde(default = "default_exclude_namespaces")]
    pub exclude_namespaces: Vec<String>,
    /// How long a drain may take before it is abandoned and the node uncordoned.
    #[serde(default = "default_drain_timeout")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub drain_timeout: String,
}

impl Default for Disruption {
    fn default() -> Self {
        Disruption {
            budgets: default_budgets(),
            exclude_namespaces: default_exclude_namespaces(),
            drain_timeout: default_drain_timeout(),
        }
    }
}

fn default_budgets() -> Vec<Budget> {
    vec![Budget {
        nodes: "10%".into(),
        schedule: None,
        duration: None,
        time_zone: default_utc(),
        reasons: Vec::new(),
    }]
}
fn default_exclude_namespaces() -> Vec<String> {
    ["kube-system", "kube-public", "kube-node-lease"]
        .map(String::from)
        .to_vec()
}
fn default_drain_timeout() -> String {
    "10m".into()
}
fn default_utc() -> String {
    "UTC".into()
}

/// A disruption budget: at most `nodes` nodes disrupted at once, optionally only inside a window
/// that opens on `schedule` (cron, in `timeZone`) and lasts `duration`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.schedule) == has(self.duration)").message("spec.disruption.budgets[]: schedule and duration must be set together"))]
pub struct Budget {
    /// Nodes that may be disrupted at once: a count (`"3"`) or a percentage of the nodes (`"10%"`).
    #[schemars(pattern(r"^((100|[1-9]?[0-9])%|[0-9]+)$"))]
    pub nodes: String,
    /// Cron schedule (5 fields) at which the budget's window opens, e.g. `0 9 * * 1-5`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// How long the window stays open, e.g. `8h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub duration: Option<String>,
    /// IANA time zone of `schedule`.
    #[serde(default = "default_utc")]
    pub time_zone: String,
    /// Disruption reasons the budget applies to; empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<DisruptionReason>,
}

/// Why a node is voluntarily disrupted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum DisruptionReason {
    /// The node has no movable pods.
    Empty,
    /// The node's pods fit elsewhere.
    Underutilized,
    /// The node is replaced by a cheaper one.
    Replaced,
    /// Right-sizing (`mode: Apply`) rolls a workload out with new requests; each workload rolling out
    /// counts as one against `nodes`.
    Rightsized,
}

/// Right-sizing of container requests from observed usage.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.mode == 'Off' || has(self.prometheusUrl)").message("spec.rightsizing: modes Recommend and Apply need prometheusUrl"))]
pub struct Rightsizing {
    /// Off, Recommend (status, Events, metrics and the `cloudoptim.io/recommended-requests`
    /// annotation on Deployments, StatefulSets, DaemonSets and CronJobs) or Apply (Recommend, and the
    /// requests patched into the workloads: more than 10% change, once a day, budgets, revert with
    /// `cloudoptim.io/rightsizing: revert`; needs the chart's `rightsizing.apply.enabled`).
    /// Cluster-wide: only the oldest policy with a mode other than Off right-sizes; any other one is
    /// Ready=False (ConflictingPolicies) until one of them is set to Off.
    #[serde(default)]
    pub mode: RightsizingMode,
    /// Prometheus base URL, e.g. `http://prometheus.monitoring:9090`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^https?://.+"))]
    pub prometheus_url: Option<String>,
    /// Usage window, e.g. `14d`.
    #[serde(default = "default_window")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub window: String,
    /// CPU usage percentile the request is based on.
    #[serde(default = "default_cpu_percentile")]
    #[schemars(range(min = 50, max = 100))]
    pub cpu_percentile: u32,
    /// Memory usage percentile the request is based on.
    #[serde(default = "default_memory_percentile")]
    #[schemars(range(min = 50, max = 100))]
    pub memory_percentile: u32,
    /// Head-room added on top of the percentile, e.g. `20%`.
    #[serde(default = "default_safety_buffer")]
    #[schemars(pattern(r"^[0-9]{1,3}%$"))]
    pub safety_buffer: String,
    /// Smallest CPU request recommended (quantity).
    #[serde(default = "default_min_cpu")]
    pub min_cpu: String,
    /// Smallest memory request recommended (quantity).
    #[serde(default = "default_min_memory")]
    pub min_memory: String,
    /// Memory bump after an OOMKill in the window.
    #[serde(default)]
    pub oom_bump: OomBump,
}

impl Default for Rightsizing {
    fn default() -> Self {
        Rightsizing {
            mode: RightsizingMode::default(),
            prometheus_url: None,
            window: default_window(),
            cpu_percentile: default_cpu_percentile(),
            memory_percentile: default_memory_percentile(),
            safety_buffer: default_safety_buffer(),
            min_cpu: default_min_cpu(),
            min_memory: default_min_memory(),
            oom_bump: OomBump::default(),
        }
    }
}

fn default_window() -> String {
    "14d".into()
}
fn default_cpu_percentile() -> u32 {
    95
}
fn default_memory_percentile() -> u32 {
    99
}
fn default_safety_buffer() -> String {
    "20%".into()
}
fn default_min_cpu() -> String {
    "10m".into()
}
fn default_min_memory() -> String {
    "32Mi".into()
}

/// Right-sizing mode.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum RightsizingMode {
    /// No recommendations (the default).
    #[default]
    Off,
    /// Recommendations in status, Events, metrics and a workload annotation; nothing is patched.
    Recommend,
    /// Recommendations applied to the workloads' requests (limits in proportion), within the safety
    /// rules; needs the operator flag `--rightsizing-apply` (chart `rightsizing.apply.enabled`).
    Apply,
}

/// Memory bump after an OOMKill: the memory request is never below the memory used at the kill (its
/// limit, or the highest working set before it) x `factor`, nor below that usage + `minimum`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OomBump {
    /// Multiplier, e.g. 1.2.
    #[serde(default = "default_oom_factor")]
    #[schemars(range(min = 1.0, max = 4.0))]
    pub factor: f64,
    /// Minimum increase (quantity), e.g. `100Mi`.
    #[serde(default = "default_oom_minimum")]
    pub minimum: String,
}

impl Default for OomBump {
    fn default() -> Self {
        OomBump {
            factor: default_oom_factor(),
            minimum: default_oom_minimum(),
        }
    }
}

fn default_oom_factor() -> f64 {
    1.2
}
fn default_oom_minimum() -> String {
    "100Mi".into()
}

/// Zombie detection: EC2 instances carrying the cluster tag with no Node, and unattached tagged volumes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Zombies {
    /// Off, Report (status, Events, metrics) or Delete (terminate / delete tagged zombies).
    #[serde(default)]
    pub mode: ZombieMode,
    /// An instance must have had no Node for this long to be a zombie.
    #[serde(default = "default_grace")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub grace_period: String,
    /// Also look for `available` EBS volumes carrying the cluster tag. A volume a PersistentVolume or a
    /// VolumeSnapshotContent names is never a zombie; volumes wait at least 1h, instances at least 10m,
    /// whatever `gracePeriod` says.
    #[serde(default = "default_true")]
    pub volumes: bool,
    /// In Delete mode, snapshot a zombie volume (CreateSnapshot, tagged with the cluster and the volume
    /// id) before deleting it; the volume is deleted only once the snapshot was accepted.
    #[serde(default = "default_true")]
    pub snapshot_before_delete: bool,
}

impl Default for Zombies {
    fn default() -> Self {
        Zombies {
            mode: ZombieMode::default(),
            grace_period: default_grace(),
            volumes: true,
            snapshot_before_delete: true,
        }
    }
}

fn default_grace() -> String {
    "30m".into()
}

/// Zombie handling mode.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum ZombieMode {
    /// Not looked for.
    Off,
    /// Reported in status, Events and metrics.
    #[default]
    Report,
    /// Terminated / deleted (only objects carrying the cluster tag).
    Delete,
}

/// Spot interruption handling.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Interruptions {
    /// SQS queue URL fed by the EventBridge rules for Spot interruption warnings, rebalance
    /// recommendations, instance state changes and AWS Health scheduled changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^https?://.+"))]
    pub queue_url: Option<String>,
    /// What a rebalance recommendation does: Ignore, Cordon or Drain.
    #[serde(default)]
    pub rebalance: RebalanceAction,
    /// Pods must be gone this long after the interruption warning (inside the 2-minute notice).
    #[serde(default = "default_drain_deadline")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub drain_deadline: String,
    /// A node cordoned for a notice whose instance stays (a rebalance recommendation, a scheduled
    /// reboot, a stop/start) is uncordoned once its instance is running, its Node Ready, and the
    /// cordon is this old (never before the 3-minute notice window has passed).
    #[serde(default = "default_release_after")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub release_after: String,
}

impl Default for Interruptions {
    fn default() -> Self {
        Interruptions {
            queue_url: None,
            rebalance: RebalanceAction::default(),
            drain_deadline: default_drain_deadline(),
            release_after: default_release_after(),
        }
    }
}

fn default_release_after() -> String {
    "30m".into()
}

fn default_drain_deadline() -> String {
    "90s".into()
}

/// Response to a rebalance recommendation.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum RebalanceAction {
    /// Do nothing.
    Ignore,
    /// Cordon the node so no new pods land on it.
    #[default]
    Cordon,
    /// Cordon and drain the node.
    Drain,
}

/// Observed state of an OptimizationPolicy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OptimizationPolicyStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Node counts of the selected templates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<NodeCounts>,
    /// Estimated cost and savings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<CostStatus>,
    /// The last consolidation that removed nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_consolidation: Option<ConsolidationStatus>,
    /// Replacements the planner proposes: nodes kept only because they are too full to empty
    /// elsewhere, replaced k at a time by one cheaper new node on which all their pods fit, and
    /// on-demand nodes replaced by Spot ones toward the split (`cloudoptim plan` shows the same).
    /// Carried out unless `dryRun` or `consolidation.replacement.enabled: false`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub planned_replacements: Vec<PlannedReplacement>,
    /// Replacements being carried out: launched, waiting for the new node, draining the old ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replacements_in_flight: Vec<ReplacementInFlight>,
    /// What this policy's removals and replacements have saved so far (next to `cost`, the estimate
    /// of what the plan would still save).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realized_savings: Option<RealizedSavings>,
    /// Top 20 right-sizing recommendations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recommendations: Vec<Recommendation>,
    /// Zombie instances and volumes found.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zombies: Vec<ZombieStatus>,
    /// Conditions: `Ready`, `Degraded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
}

/// Node counts by capacity type.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeCounts {
    /// All nodes of the selected templates.
    pub total: u32,
    /// Spot nodes.
    pub spot: u32,
    /// On-demand nodes.
    pub on_demand: u32,
    /// Spot nodes as a percentage of all nodes.
    pub spot_percentage: u32,
}

/// Estimated cost, USD.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CostStatus {
    /// Current cost per hour.
    pub hourly: f64,
    /// Current cost per month (hourly x 730).
    pub monthly: f64,
    /// Savings per hour against the same nodes on-demand.
    pub savings_hourly: f64,
    /// Savings per month.
    pub savings_monthly: f64,
    /// Savings as a percentage of the on-demand cost.
    pub savings_percent: f64,
}

/// One planned replacement.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlannedReplacement {
    /// `consolidation` (k nodes by one cheaper node) or `spotMix` (an on-demand node by a Spot node,
    /// toward the policy's split).
    pub reason: String,
    /// The nodes it replaces.
    pub replace: Vec<String>,
    /// The new node's instance type.
    pub instance_type: String,
    /// Its zone.
    pub zone: String,
    /// `spot` or `on-demand`.
    pub capacity_type: String,
    /// Its price, USD per hour.
    pub hourly: f64,
    /// The replaced nodes' price minus the new node's, USD per hour.
    pub savings_hourly: f64,
}

/// A replacement being carried out.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplacementInFlight {
    /// The new instance.
    pub instance: String,
    /// Its instance type.
    pub instance_type: String,
    /// `consolidation` or `spotMix`.
    pub reason: String,
    /// Instance ids of the nodes it replaces.
    pub replace: Vec<String>,
    /// `Launched` (waiting for the group to adopt it or for its node to be Ready), `Draining` (the
    /// old nodes are going) or `Finishing`.
    pub phase: String,
}

/// Savings realised by the operator's own actions, cumulative.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RealizedSavings {
    /// Nodes removed by consolidation (replaced nodes included).
    pub nodes_removed: u32,
    /// Replacements done.
    pub replacements: u32,
    /// Replacements aborted (the new node was not Ready in time; the old nodes were kept).
    pub replacements_aborted: u32,
    /// USD per hour saved: removed nodes' price, and replaced nodes' price minus their replacement's.
    pub saved_hourly: f64,
}

/// The last consolidation.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsolidationStatus {
    /// When it finished.
    pub time: Time,
    /// Nodes removed.
    pub nodes_removed: u32,
    /// Pods moved.
    pub pods_moved: u32,
    /// Cost saved, USD per hour.
    pub saved_hourly: f64,
}

/// A container request recommendation.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Recommendation {
    /// Namespace of the workload.
    pub namespace: String,
    /// Workload, as `Kind/name`.
    pub workload: String,
    /// Container name.
    pub container: String,
    /// Current CPU request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_request: Option<String>,
    /// Recommended CPU request.
    pub recommended_cpu: String,
    /// Current memory request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_request: Option<String>,
    /// Recommended memory request.
    pub recommended_memory: String,
    /// Estimated saving, USD per month.
    pub monthly_savings: f64,
}

/// A zombie instance or volume.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ZombieStatus {
    /// `Instance` or `Volume`.
    pub kind: String,
    /// EC2 id.
    pub id: String,
    /// First seen as a zombie.
    pub since: Time,
    /// Estimated cost, USD per hour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hourly_cost: Option<f64>,
}
