//! `HibernationSchedule` (short name `hib`): when a cluster, or part of it, sleeps (DESIGN.md 3.3).

// kube's `printcolumn(...)` attributes repeat the same keys on purpose.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::conditions_schema;

/// Desired state of a HibernationSchedule: a weekly timetable in an IANA time zone. Asleep, targeted
/// Deployments and StatefulSets are scaled to 0, CronJobs suspended, and targeted node groups set to 0;
/// awake, everything is restored (node groups `prewarmMinutes` before the workloads).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "cloudoptim.io",
    version = "v1alpha1",
    kind = "HibernationSchedule",
    shortname = "hib",
    category = "cloudoptim",
    status = "HibernationScheduleStatus",
    doc = "Weekly sleep and wake of workloads and node groups in an IANA time zone, with pre-warm.",
    validation = Rule::new("has(self.spec.weeklyMatrix) != has(self.spec.awake)").message("spec: set exactly one of weeklyMatrix or awake"),
    printcolumn(name = "TimeZone", type_ = "string", json_path = ".spec.timeZone"),
    printcolumn(name = "State", type_ = "string", json_path = ".status.state"),
    printcolumn(name = "Next", type_ = "string", json_path = ".status.nextTransition.local", description = "Next transition, local time"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct HibernationScheduleSpec {
    /// IANA time zone the timetable is written in, e.g. `Europe/Berlin`. Times are local wall-clock
    /// times: a time skipped by a DST change fires at the first instant after the gap, a repeated
    /// time fires once.
    #[schemars(length(min = 1, max = 64))]
    pub time_zone: String,
    /// 168 hourly cells, Monday 00:00 first (index = day * 24 + hour): 1 = awake, 0 = hibernating.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 168, max = 168))]
    #[x_kube(validation = Rule::new("self.all(v, v == 0 || v == 1)").message("spec.weeklyMatrix: every entry must be 0 (hibernating) or 1 (awake)"))]
    pub weekly_matrix: Option<Vec<u8>>,
    /// Awake windows such as `Mon-Fri 07:30-20:30`, `Sat-Sun 00:00-24:00` or `Fri 22:00-Mon 06:00`;
    /// the end is exclusive, 24:00 is the end of the day; outside every window the cluster sleeps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 50))]
    pub awake: Option<Vec<String>>,
    /// Minutes before each wake time at which node groups are restored, so nodes are Ready when the
    /// workloads come back (0-60).
    #[serde(default = "default_prewarm")]
    #[schemars(range(min = 0, max = 60))]
    pub prewarm_minutes: u32,
    /// What sleeps.
    #[serde(default)]
    pub targets: Targets,
    /// Stop acting: nothing is put to sleep; a sleeping cluster is woken.
    #[serde(default)]
    pub suspend: bool,
    /// Hold a state until a time, e.g. "wake up now until 18:00".
    #[serde(default, rename = "override", skip_serializing_if = "Option::is_none")]
    pub override_: Option<Override>,
}

fn default_prewarm() -> u32 {
    30
}

/// What a schedule puts to sleep.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Targets {
    /// NodeTemplates whose Auto Scaling groups go to 0 and back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_template_selector: Option<LabelSelector>,
    /// Namespaces (by label) whose Deployments, StatefulSets and CronJobs sleep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Namespaces (by name) whose Deployments, StatefulSets and CronJobs sleep.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// What never sleeps (in addition to objects annotated `cloudoptim.io/hibernate: "false"`).
    #[serde(default)]
    pub exclude: Exclusions,
}

/// Objects that never sleep.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Exclusions {
    /// Workload names never scaled down.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    /// Namespaces never scaled down.
    #[serde(default = "default_excluded_namespaces")]
    pub namespaces: Vec<String>,
}

impl Default for Exclusions {
    fn default() -> Self {
        Exclusions {
            names: Vec::new(),
            namespaces: default_excluded_namespaces(),
        }
    }
}

fn default_excluded_namespaces() -> Vec<String> {
    vec!["kube-system".into()]
}

/// A state held until a time.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Override {
    /// The state to hold.
    pub state: OverrideState,
    /// When the override ends (RFC 3339).
    pub until: Time,
}

/// A state an override can hold.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum OverrideState {
    /// Everything awake.
    Awake,
    /// Everything asleep.
    Hibernating,
}

/// Observed state of a HibernationSchedule.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HibernationScheduleStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Current state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<HibernationState>,
    /// The next transition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_transition: Option<NextTransition>,
    /// Replica counts saved when workloads went to sleep (also kept in the
    /// `cloudoptim.io/original-replicas` annotation on each object).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub saved_workloads: Vec<SavedWorkload>,
    /// Auto Scaling group sizes saved when node groups went to sleep.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub saved_groups: Vec<SavedGroup>,
    /// Conditions: `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
}

/// State of a schedule.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum HibernationState {
    /// Everything runs.
    Awake,
    /// Workloads and node groups are at zero.
    Hibernating,
    /// Node groups are back, workloads follow at the wake time.
    WakingUp,
    /// `spec.suspend` is true.
    Suspended,
}

/// The next transition of a schedule.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NextTransition {
    /// When, UTC (RFC 3339).
    pub utc: String,
    /// When, in the schedule's time zone (RFC 3339 with offset).
    pub local: String,
    /// The state entered.
    pub state: HibernationState,
}

/// A workload's replica count saved at sleep.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SavedWorkload {
    /// `Deployment`, `StatefulSet` or `CronJob`.
    pub kind: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Replicas before sleep (for a CronJob: 1 if it was not suspended, else 0).
    pub replicas: i32,
}

/// An Auto Scaling group's sizes saved at sleep.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SavedGroup {
    /// Auto Scaling group name.
    pub name: String,
    /// Minimum size before sleep.
    pub min: i32,
    /// Maximum size before sleep.
    pub max: i32,
    /// Desired capacity before sleep.
    pub desired: i32,
}
