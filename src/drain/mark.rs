//! The mark a drain leaves on its node, and how it is set and removed: pure functions from the Node
//! read to the merge patch to write. Every patch carries the `metadata.resourceVersion` it was computed
//! from, so the API server refuses it (409) if the node changed meanwhile, and a list in a merge patch
//! (the taints) replaces the whole list, which is only safe under that precondition.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Taint};
use serde_json::{Value, json};

/// Set on a node when CloudOptim flipped `spec.unschedulable`, so releasing it uncordons only what
/// CloudOptim cordoned.
pub use crate::names::CORDONED_ANNOTATION;
/// Taint key of voluntary disruption (consolidation).
pub use crate::names::DISRUPTED_TAINT;
/// Taint key of involuntary disruption (Spot interruptions, rebalance, scheduled events).
pub use crate::names::INTERRUPTED_TAINT;
/// The effect of every CloudOptim drain taint.
pub(super) const NO_SCHEDULE: &str = "NoSchedule";

/// Who drains a node and why; written on the node as a taint and two annotations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    /// Taint key, e.g. [`DISRUPTED_TAINT`]; also the prefix of the annotations `<key>-at`, `<key>-reason`.
    pub taint_key: String,
    /// Taint value naming who drains (`consolidation`, `interruption`); a valid label value.
    pub by: String,
    /// Why, for people and for a restarted operator: annotation `<key>-reason`.
    pub reason: String,
}

impl Marker {
    /// Consolidation's marker: `cloudoptim.io/disrupted=consolidation:NoSchedule`.
    pub fn consolidation(reason: impl Into<String>) -> Self {
        Marker {
            taint_key: DISRUPTED_TAINT.to_owned(),
            by: "consolidation".to_owned(),
            reason: reason.into(),
        }
    }

    /// The interruption handler's marker: `cloudoptim.io/interrupted=interruption:NoSchedule`.
    pub fn interruption(reason: impl Into<String>) -> Self {
        Marker {
            taint_key: INTERRUPTED_TAINT.to_owned(),
            by: "interruption".to_owned(),
            reason: reason.into(),
        }
    }
}

fn at_annotation(taint_key: &str) -> String {
    format!("{taint_key}-at")
}

fn reason_annotation(taint_key: &str) -> String {
    format!("{taint_key}-reason")
}

/// A node carrying a CloudOptim drain taint: what a restarted operator picks up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkedNode {
    /// Node name.
    pub name: String,
    /// Who drains it (the taint value).
    pub by: String,
    /// Why (annotation `<key>-reason`), when recorded.
    pub reason: Option<String>,
    /// When the mark was set (annotation `<key>-at`, RFC 3339), when recorded.
    pub since: Option<String>,
    /// `spec.unschedulable`.
    pub unschedulable: bool,
}

/// The node's mark for `taint_key`, if it carries that taint.
pub fn marked(node: &Node, taint_key: &str) -> Option<MarkedNode> {
    let spec = node.spec.as_ref()?;
    let taint = spec
        .taints
        .iter()
        .flatten()
        .find(|t| t.key == taint_key && t.effect == NO_SCHEDULE)?;
    let annotation = |key: String| {
        node.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(&key))
            .cloned()
    };
    Some(MarkedNode {
        name: node.metadata.name.clone().unwrap_or_default(),
        by: taint.value.clone().unwrap_or_default(),
        reason: annotation(reason_annotation(taint_key)),
        since: annotation(at_annotation(taint_key)),
        unschedulable: spec.unschedulable == Some(true),
    })
}

/// The merge patch that cordons and marks `node` (`None` when it already is), preconditioned on the
/// resourceVersion read. `now` is the RFC 3339 time recorded as `<key>-at` on a first mark.
pub(super) fn cordon_patch(node: &Node, marker: &Marker, now: &str) -> Option<Value> {
    let spec = node.spec.clone().unwrap_or_default();
    let taints = spec.taints.unwrap_or_default();
    let annotations = node.metadata.annotations.clone().unwrap_or_default();
    let unschedulable = spec.unschedulable == Some(true);
    let ours = Taint {
        key: marker.taint_key.clone(),
        value: Some(marker.by.clone()),
        effect: NO_SCHEDULE.to_owned(),
        time_added: None,
    };
    let at = at_annotation(&marker.taint_key);
    let reason = reason_annotation(&marker.taint_key);
    let tainted = taints
        .iter()
        .any(|t| t.key == ours.key && t.effect == ours.effect && t.value == ours.value);
    if unschedulable
        && tainted
        && annotations.contains_key(&at)
        && annotations.get(&reason) == Some(&marker.reason)
    {
        return None;
    }
    let mut new_taints: Vec<Taint> = taints
        .into_iter()
        .filter(|t| !(t.key == ours.key && t.effect == ours.effect))
        .collect();
    new_taints.push(ours);
    let mut new_annotations = BTreeMap::from([(reason, json!(marker.reason))]);
    if !annotations.contains_key(&at) {
        new_annotations.insert(at, json!(now));
    }
    if !unschedulable {
        new_annotations.insert(CORDONED_ANNOTATION.to_owned(), json!("true"));
    }
    Some(json!({
        "metadata": {
            "resourceVersion": node.metadata.resource_version,
            "annotations": new_annotations,
        },
        "spec": {"unschedulable": true, "taints": new_taints},
    }))
}

/// The merge patch that removes the mark of `taint_key` (`None` when there is none) and uncordons the
/// node when CloudOptim cordoned it and no other CloudOptim mark remains.
pub(super) fn release_patch(node: &Node, taint_key: &str) -> Option<Value> {
    let spec = node.spec.clone().unwrap_or_default();
    let taints = spec.taints.unwrap_or_default();
    let annotations = node.metadata.annotations.clone().unwrap_or_default();
    let at = at_annotation(taint_key);
    let reason = reason_annotation(taint_key);
    let (ours, kept): (Vec<Taint>, Vec<Taint>) = taints
        .into_iter()
        .partition(|t| t.key == taint_key && t.effect == NO_SCHEDULE);
    let other_mark = kept
        .iter()
        .any(|t| t.effect == NO_SCHEDULE && annotations.contains_key(&at_annotation(&t.key)));
    let uncordon = !other_mark && annotations.contains_key(CORDONED_ANNOTATION);
    let mut removed = BTreeMap::new();
    for key in [at, reason] {
        if annotations.contains_key(&key) {
            removed.insert(key, Value::Null);
        }
    }
    if uncordon {
        removed.insert(CORDONED_ANNOTATION.to_owned(), Value::Null);
    }
    if ours.is_empty() && removed.is_empty() {
        return None;
    }
    let mut patch = json!({
        "metadata": {
            "resourceVersion": node.metadata.resource_version,
            "annotations": removed,
        },
        "spec": {"taints": if kept.is_empty() { Value::Null } else { json!(kept) }},
    });
    if uncordon {
        patch["spec"]["unschedulable"] = Value::Null;
    }
    Some(patch)
}
#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NodeSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn node(unschedulable: bool, taints: Vec<Taint>, annotations: &[(&str, &str)]) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some("n1".into()),
                resource_version: Some("42".into()),
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..ObjectMeta::default()
            },
            spec: Some(NodeSpec {
                unschedulable: unschedulable.then_some(true),
                taints: Some(taints),
                ..NodeSpec::default()
            }),
            status: None,
        }
    }

    fn taint(key: &str, value: &str) -> Taint {
        Taint {
            key: key.into(),
            value: Some(value.into()),
            effect: NO_SCHEDULE.into(),
            time_added: None,
        }
    }

    /// The node after a merge patch (RFC 7386) is applied to it.
    fn apply(node: &Node, patch: &Value) -> Node {
        fn merge(target: &mut Value, patch: &Value) {
            let Value::Object(fields) = patch else {
                *target = patch.clone();
                return;
            };
            if !target.is_object() {
                *target = json!({});
            }
            for (key, value) in fields {
                if value.is_null() {
                    target.as_object_mut().expect("object").remove(key);
                } else {
                    merge(&mut target[key], value);
                }
            }
        }
        let mut value = serde_json::to_value(node).expect("serialises");
        merge(&mut value, patch);
        serde_json::from_value(value).expect("still a node")
    }

    fn consolidation() -> Marker {
        Marker::consolidation("underutilised: 2 pods fit elsewhere")
    }

    #[test]
    fn cordon_adds_our_taint_and_keeps_the_others() {
        let before = node(false, vec![taint("gpu", "true")], &[]);
        let patch =
            cordon_patch(&before, &consolidation(), "2025-01-01T00:00:00Z").expect("a write");
        assert_eq!(
            patch["metadata"]["resourceVersion"], "42",
            "optimistic lock"
        );
        let after = apply(&before, &patch);
        let spec = after.spec.as_ref().expect("spec");
        assert_eq!(spec.unschedulable, Some(true));
        assert_eq!(
            spec.taints.as_deref(),
            Some(
                &[
                    taint("gpu", "true"),
                    taint(DISRUPTED_TAINT, "consolidation")
                ][..]
            )
        );
        let mark = marked(&after, DISRUPTED_TAINT).expect("marked");
        assert_eq!(mark.by, "consolidation");
        assert_eq!(
            mark.reason.as_deref(),
            Some("underutilised: 2 pods fit elsewhere")
        );
        assert_eq!(mark.since.as_deref(), Some("2025-01-01T00:00:00Z"));
    }

    #[test]
    fn cordoning_a_marked_node_again_writes_nothing() {
        let before = node(false, vec![], &[]);
        let once = apply(
            &before,
            &cordon_patch(&before, &consolidation(), "t1").expect("write"),
        );
        assert_eq!(cordon_patch(&once, &consolidation(), "t2"), None);
    }

    #[test]
    fn a_new_reason_updates_the_mark_but_keeps_when_it_started() {
        let before = node(false, vec![], &[]);
        let once = apply(
            &before,
            &cordon_patch(&before, &consolidation(), "t1").expect("write"),
        );
        let again = cordon_patch(&once, &Marker::consolidation("retry"), "t2").expect("write");
        let twice = apply(&once, &again);
        let mark = marked(&twice, DISRUPTED_TAINT).expect("marked");
        assert_eq!(
            (mark.since.as_deref(), mark.reason.as_deref()),
            (Some("t1"), Some("retry"))
        );
        let ours = twice.spec.and_then(|s| s.taints).unwrap_or_default();
        assert_eq!(ours.len(), 1, "one taint per key: {ours:?}");
    }

    #[test]
    fn release_restores_the_node_as_it_was() {
        let before = node(false, vec![taint("gpu", "true")], &[("team", "a")]);
        let cordoned = apply(
            &before,
            &cordon_patch(&before, &consolidation(), "t").expect("write"),
        );
        let released = apply(
            &cordoned,
            &release_patch(&cordoned, DISRUPTED_TAINT).expect("write"),
        );
        assert_eq!(released.spec, before.spec);
        assert_eq!(released.metadata.annotations, before.metadata.annotations);
        assert_eq!(
            release_patch(&released, DISRUPTED_TAINT),
            None,
            "idempotent"
        );
    }

    #[test]
    fn release_keeps_a_cordon_that_was_there_before_us() {
        let before = node(true, vec![], &[]);
        let cordoned = apply(
            &before,
            &cordon_patch(&before, &consolidation(), "t").expect("write"),
        );
        let released = apply(
            &cordoned,
            &release_patch(&cordoned, DISRUPTED_TAINT).expect("write"),
        );
        assert_eq!(released.spec.and_then(|s| s.unschedulable), Some(true));
    }

    #[test]
    fn release_keeps_the_cordon_while_another_cloudoptim_drain_holds_the_node() {
        let before = node(false, vec![], &[]);
        let consolidating = apply(
            &before,
            &cordon_patch(&before, &consolidation(), "t").expect("write"),
        );
        let interrupted = apply(
            &consolidating,
            &cordon_patch(&consolidating, &Marker::interruption("spot warning"), "t")
                .expect("write"),
        );
        let released = apply(
            &interrupted,
            &release_patch(&interrupted, DISRUPTED_TAINT).expect("write"),
        );
        assert_eq!(
            released.spec.as_ref().and_then(|s| s.unschedulable),
            Some(true)
        );
        assert!(marked(&released, INTERRUPTED_TAINT).is_some());
        assert!(marked(&released, DISRUPTED_TAINT).is_none());
    }

    #[test]
    fn only_nodes_with_our_taint_are_marked() {
        assert!(marked(&node(true, vec![taint("other", "x")], &[]), DISRUPTED_TAINT).is_none());
        let mark = marked(
            &node(true, vec![taint(INTERRUPTED_TAINT, "interruption")], &[]),
            INTERRUPTED_TAINT,
        )
        .expect("marked");
        assert_eq!(
            (mark.by.as_str(), mark.reason, mark.unschedulable),
            ("interruption", None, true)
        );
    }
}
