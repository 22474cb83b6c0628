//! Carrying out a replacement, replace before delete, as a state machine over what AWS and the API
//! server show (pure: no kube or AWS types). The state is the new instance's own tags, written in the
//! launch call itself (see `names::REPLACES_TAG`), so a restarted operator resumes from what it finds:
//!
//! 1. launched (tagged) -> attached to the group (AttachInstances; desired capacity + 1);
//! 2. attached -> its Node Ready, within `ready_timeout` of the launch; if the deadline passes first,
//!    the new instance is terminated (with decrement) and the replaced nodes are left untouched,
//!    unless workload pods run on it (a drain that gave up moved them): it is never terminated under
//!    them, and waits until it is Ready again or Kubernetes has moved them;
//! 3. Ready -> the replaced nodes are drained and terminated with decrement (the budget and PDBs apply
//!    as for any removal);
//! 4. none of them left -> the replacement tags are removed: done.
//!
//! Once a replaced node has been drained or removed, the replacement is never rolled back: the old
//! capacity is going, and terminating the new node too would only leave pods pending.

use std::collections::BTreeMap;

use crate::engine::consolidation::ReplaceReason;
use crate::names::{
    CLUSTER_TAG, REPLACED_HOURLY_TAG, REPLACEMENT_GROUP_TAG, REPLACEMENT_HOURLY_TAG,
    REPLACEMENT_POLICY_TAG, REPLACEMENT_REASON_TAG, REPLACES_TAG,
};

/// A replacement as its instance's tags record it.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The policy that launched it.
    pub policy: String,
    /// The Auto Scaling group that adopts it (the group of the first replaced node).
    pub group: String,
    /// Instance ids of the nodes it replaces.
    pub replaces: Vec<String>,
    /// Why.
    pub reason: ReplaceReason,
    /// What the replaced nodes cost together, USD per hour.
    pub replaced_hourly: f64,
    /// What the new node costs, USD per hour.
    pub hourly: f64,
}

/// Why an instance's replacement tags cannot be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RecordError {
    /// A tag is missing or unreadable.
    #[error(
        "tag {tag}: {problem}; remove the cloudoptim.io/replace* tags from the instance to let it go, or terminate it"
    )]
    Tag { tag: &'static str, problem: String },
}

impl Record {
    /// The tags that record it, the cluster's included.
    pub fn tags(&self, cluster: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            (CLUSTER_TAG.to_string(), cluster.to_string()),
            (REPLACES_TAG.to_string(), self.replaces.join(" ")),
            (REPLACEMENT_POLICY_TAG.to_string(), self.policy.clone()),
            (REPLACEMENT_GROUP_TAG.to_string(), self.group.clone()),
            (
                REPLACEMENT_REASON_TAG.to_string(),
                self.reason.as_str().to_string(),
            ),
            (
                REPLACED_HOURLY_TAG.to_string(),
                format!("{:.4}", self.replaced_hourly),
            ),
            (
                REPLACEMENT_HOURLY_TAG.to_string(),
                format!("{:.4}", self.hourly),
            ),
        ])
    }

    /// The tag keys removed when it is done (all but the cluster's).
    pub fn done_keys() -> Vec<String> {
        [
            REPLACES_TAG,
            REPLACEMENT_POLICY_TAG,
            REPLACEMENT_GROUP_TAG,
            REPLACEMENT_REASON_TAG,
            REPLACED_HOURLY_TAG,
            REPLACEMENT_HOURLY_TAG,
        ]
        .map(str::to_string)
        .to_vec()
    }

    /// Read a record back from an instance's tags: `None` when the instance is no replacement in
    /// flight (no `cloudoptim.io/replaces` tag).
    pub fn from_tags(tags: &BTreeMap<String, String>) -> Option<Result<Record, RecordError>> {
        let replaces = tags.get(REPLACES_TAG)?;
        let text = |tag: &'static str| {
            tags.get(tag)
                .filter(|v| !v.is_empty())
                .cloned()
                .ok_or(RecordError::Tag {
                    tag,
                    problem: "missing".into(),
                })
        };
        let number = |tag: &'static str| {
            text(tag)?.parse::<f64>().map_err(|e| RecordError::Tag {
                tag,
                problem: format!("not a number: {e}"),
            })
        };
        let read = || {
            let replaces: Vec<String> = replaces.split_whitespace().map(str::to_string).collect();
            if replaces.is_empty() {
                return Err(RecordError::Tag {
                    tag: REPLACES_TAG,
                    problem: "names no instance".into(),
                });
            }
            let reason = match text(REPLACEMENT_REASON_TAG)?.as_str() {
                "consolidation" => ReplaceReason::Consolidation,
                "spotMix" => ReplaceReason::SpotMix,
                other => {
                    return Err(RecordError::Tag {
                        tag: REPLACEMENT_REASON_TAG,
                        problem: format!("unknown reason {other:?}"),
                    });
                }
            };
            Ok(Record {
                policy: text(REPLACEMENT_POLICY_TAG)?,
                group: text(REPLACEMENT_GROUP_TAG)?,
                replaces,
                reason,
                replaced_hourly: number(REPLACED_HOURLY_TAG)?,
                hourly: number(REPLACEMENT_HOURLY_TAG)?,
            })
        };
        Some(read())
    }

    /// USD per hour the replacement saves once done.
    pub fn savings_hourly(&self) -> f64 {
        self.replaced_hourly - self.hourly
    }
}

/// The new node as the API server shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    /// No Node names the instance yet.
    Missing,
    /// Registered, not Ready.
    NotReady,
    /// Ready.
    Ready,
}

/// What is known about one replacement in flight.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    /// The group lists the new instance.
    pub attached: bool,
    /// The new instance's Node.
    pub node: NodeState,
    /// Seconds since the launch.
    pub age_secs: i64,
    /// How many instances it replaces.
    pub replaced: usize,
    /// Replaced instances still running (in the group, or with a Node).
    pub remaining: Vec<String>,
    /// Some replaced node is already marked for removal (a drain started).
    pub draining: bool,
    /// Workload pods (not DaemonSet, not mirror, not terminating) running on the new node: a drain
    /// that gave up (and uncordoned the old nodes) may have moved some there already.
    pub pods_on_new: usize,
}

/// The next step of a replacement.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Have the group adopt the new instance.
    Attach,
    /// Wait for the new Node to be Ready; `left_secs` before the deadline.
    WaitReady { left_secs: i64 },
    /// The deadline passed and nothing was disrupted yet: terminate the new instance, leave the old.
    Abort,
    /// Drain and remove these replaced instances' nodes.
    Drain(Vec<String>),
    /// The new node is not Ready, but the old capacity is already going: wait, never roll back.
    WaitDraining,
    /// The deadline passed but the new node runs `pods` workload pods: terminating it would kill them
    /// without a PodDisruptionBudget's say. Wait until the node is Ready again or Kubernetes has
    /// evicted them (a NotReady node's pods go after their `tolerationSeconds`); then abort.
    WaitPods { pods: usize },
    /// Everything replaced is gone: remove the replacement tags.
    Finish,
}

/// The next step for `facts`, with `ready_timeout_secs` for the new node to become Ready.
pub fn next_step(facts: &Facts, ready_timeout_secs: i64) -> Step {
    let started = facts.draining || facts.remaining.len() < facts.replaced;
    let late = facts.age_secs >= ready_timeout_secs;
    if !attached_or_done(facts) {
        return if late {
            abort_unless_pods(facts)
        } else {
            Step::Attach
        };
    }
    match facts.node {
        NodeState::Ready if facts.remaining.is_empty() => Step::Finish,
        NodeState::Ready => Step::Drain(facts.remaining.clone()),
        _ if started => Step::WaitDraining,
        _ if late => abort_unless_pods(facts),
        _ => Step::WaitReady {
            left_secs: ready_timeout_secs - facts.age_secs,
        },
    }
}

/// Past the deadline: abort, unless workload pods run on the new node (never terminated under them).
fn abort_unless_pods(facts: &Facts) -> Step {
    match facts.pods_on_new {
        0 => Step::Abort,
        pods => Step::WaitPods { pods },
    }
}

/// The group lists the instance (or nothing is left to replace, so it no longer matters).
fn attached_or_done(facts: &Facts) -> bool {
    facts.attached || (facts.remaining.is_empty() && facts.node == NodeState::Ready)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            policy: "cluster".into(),
            group: "asg-a".into(),
            replaces: vec!["i-1".into(), "i-2".into(), "i-3".into()],
            reason: ReplaceReason::Consolidation,
            replaced_hourly: 2.304,
            hourly: 1.224,
        }
    }

    fn facts() -> Facts {
        Facts {
            attached: true,
            node: NodeState::Missing,
            age_secs: 30,
            replaced: 3,
            remaining: vec!["i-1".into(), "i-2".into(), "i-3".into()],
            draining: false,
            pods_on_new: 0,
        }
    }

    #[test]
    fn the_tags_read_back_as_the_same_record() {
        let tags = record().tags("c1");
        assert_eq!(tags.get(CLUSTER_TAG).map(String::as_str), Some("c1"));
        assert_eq!(Record::from_tags(&tags), Some(Ok(record())));
        assert!((record().savings_hourly() - 1.08).abs() < 1e-9);
        // Done: every replacement tag goes, the cluster's stays.
        let mut done = tags.clone();
        for key in Record::done_keys() {
            done.remove(&key);
        }
        assert_eq!(done.keys().collect::<Vec<_>>(), vec![CLUSTER_TAG]);
        assert_eq!(Record::from_tags(&done), None);
    }

    #[test]
    fn a_damaged_record_names_the_tag() {
        let mut tags = record().tags("c1");
        tags.insert(REPLACED_HOURLY_TAG.into(), "lots".into());
        let err = Record::from_tags(&tags)
            .expect("a replacement")
            .unwrap_err();
        assert!(err.to_string().contains(REPLACED_HOURLY_TAG), "{err}");
        tags.remove(REPLACEMENT_GROUP_TAG);
        let err = Record::from_tags(&tags)
            .expect("a replacement")
            .unwrap_err();
        assert!(err.to_string().contains(REPLACEMENT_GROUP_TAG), "{err}");
        tags.insert(REPLACES_TAG.into(), " ".into());
        assert!(Record::from_tags(&tags).expect("a replacement").is_err());
    }

    #[test]
    fn launched_then_attached_then_waits_for_ready() {
        let f = Facts {
            attached: false,
            ..facts()
        };
        assert_eq!(next_step(&f, 600), Step::Attach);
        assert_eq!(next_step(&facts(), 600), Step::WaitReady { left_secs: 570 });
        let registered = Facts {
            node: NodeState::NotReady,
            ..facts()
        };
        assert_eq!(
            next_step(&registered, 600),
            Step::WaitReady { left_secs: 570 }
        );
    }

    #[test]
    fn never_ready_in_time_is_aborted_before_anything_is_disrupted() {
        for node in [NodeState::Missing, NodeState::NotReady] {
            let late = Facts {
                node,
                age_secs: 600,
                ..facts()
            };
            assert_eq!(next_step(&late, 600), Step::Abort);
        }
        // Never attached (a crash between the launch and the attach) and late: aborted as well.
        let orphan = Facts {
            attached: false,
            age_secs: 601,
            ..facts()
        };
        assert_eq!(next_step(&orphan, 600), Step::Abort);
    }

    #[test]
    fn ready_drains_the_replaced_nodes_then_finishes() {
        let ready = Facts {
            node: NodeState::Ready,
            age_secs: 5_000,
            ..facts()
        };
        assert_eq!(
            next_step(&ready, 600),
            Step::Drain(vec!["i-1".into(), "i-2".into(), "i-3".into()])
        );
        let one_left = Facts {
            remaining: vec!["i-3".into()],
            draining: true,
            ..ready.clone()
        };
        assert_eq!(next_step(&one_left, 600), Step::Drain(vec!["i-3".into()]));
        let gone = Facts {
            remaining: Vec::new(),
            ..ready
        };
        assert_eq!(next_step(&gone, 600), Step::Finish);
    }

    #[test]
    fn once_the_old_capacity_is_going_it_is_never_rolled_back() {
        for node in [NodeState::Missing, NodeState::NotReady] {
            let f = Facts {
                node,
                age_secs: 10_000,
                draining: true,
                ..facts()
            };
            assert_eq!(next_step(&f, 600), Step::WaitDraining);
            let f = Facts {
                remaining: vec!["i-3".into()],
                draining: false,
                ..f
            };
            assert_eq!(next_step(&f, 600), Step::WaitDraining, "{f:?}");
        }
    }

    #[test]
    fn a_new_node_that_runs_pods_is_never_terminated_under_them() {
        // A drain gave up and uncordoned the old nodes (so nothing reads as started), but six pods it
        // moved run on the new node, which then turned NotReady: terminating it would kill them.
        for node in [NodeState::Missing, NodeState::NotReady] {
            for attached in [true, false] {
                let f = Facts {
                    node,
                    attached,
                    age_secs: 10_000,
                    pods_on_new: 6,
                    ..facts()
                };
                assert_eq!(next_step(&f, 600), Step::WaitPods { pods: 6 }, "{f:?}");
                // Once Kubernetes has moved them, the abort goes ahead.
                let empty = Facts {
                    pods_on_new: 0,
                    ..f
                };
                assert_eq!(next_step(&empty, 600), Step::Abort, "{empty:?}");
            }
        }
        // Before the deadline it simply waits for Ready, and a Ready node drains as before.
        let early = Facts {
            node: NodeState::NotReady,
            pods_on_new: 6,
            ..facts()
        };
        assert_eq!(next_step(&early, 600), Step::WaitReady { left_secs: 570 });
        let ready = Facts {
            node: NodeState::Ready,
            ..early
        };
        assert_eq!(
            next_step(&ready, 600),
            Step::Drain(vec!["i-1".into(), "i-2".into(), "i-3".into()])
        );
    }
}
