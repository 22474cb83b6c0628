//! Types shared by several kinds: conditions, capacity types, taints, and schema helpers.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// Regular expression for the durations CloudOptim accepts: a sequence of number+unit pairs with
/// units ms, s, m, h, d, e.g. `90s`, `5m`, `1h30m`, `14d`. The same grammar as the parser every
/// controller and `plan` use ([`crate::engine::duration`]).
pub const DURATION_PATTERN: &str = crate::engine::duration::PATTERN;

/// Schema of `status.conditions`: the standard `metav1.Condition` list, declared as a list-map keyed
/// on `type` so that server-side apply merges one condition at a time.
pub fn conditions_schema(generator: &mut SchemaGenerator) -> Schema {
    let items = generator.subschema_for::<Condition>();
    json_schema!({
        "type": "array",
        "description": "Latest observations of the object's state. `Ready` is True when the last reconcile \
                        succeeded; a False `Ready` carries a reason naming the field or cause.",
        "items": items,
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
    })
}

/// Whether capacity is Spot or on-demand.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
pub enum CapacityType {
    /// EC2 Spot capacity: cheaper, can be reclaimed with a 2-minute warning.
    #[serde(rename = "spot")]
    Spot,
    /// EC2 on-demand capacity.
    #[serde(rename = "on-demand")]
    OnDemand,
}

/// The effect of a taint, as in `core/v1` Taint.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum TaintEffect {
    /// New pods that do not tolerate the taint are not scheduled.
    NoSchedule,
    /// The scheduler tries not to place pods that do not tolerate the taint.
    PreferNoSchedule,
    /// Running pods that do not tolerate the taint are evicted.
    NoExecute,
}

/// A taint expected on the nodes of a template.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Taint {
    /// Taint key, e.g. `dedicated`.
    #[schemars(length(min = 1, max = 316))]
    pub key: String,
    /// Taint value (optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Taint effect.
    pub effect: TaintEffect,
}

/// Default for `bool` fields whose default is true.
pub(crate) fn default_true() -> bool {
    true
}
