//! When a node cordoned for an interruption notice is given back.
//!
//! The intake taints and cordons a node for every notice it acts on. For a Spot interruption the
//! instance goes away and the Node with it; but a rebalance recommendation (policy `Cordon` or
//! `Drain`), a scheduled reboot or a stop/start leaves a healthy instance behind, and a cordon kept
//! for good is a node paid for and never used (consolidation skips cordoned nodes). So a held node is
//! released once its instance is `running`, its Node `Ready`, and the mark is older than the policy's
//! `interruptions.releaseAfter`, never earlier than [`MIN_HOLD`] (the notice window, so a drain the
//! notice started has finished or failed by then).

use std::time::Duration;

/// No release before this age, whatever `releaseAfter` says: the 2-minute notice plus the drain
/// deadline's slack (the operator's `--interruption-hold-floor`; tests lower it).
pub const MIN_HOLD: Duration = Duration::from_secs(180);

/// What the notice behind a mark announced (the first word of the mark's reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkKind {
    /// A Spot interruption warning.
    SpotInterruption,
    /// A rebalance recommendation.
    Rebalance,
    /// An instance state change (stopping, stopped, ...).
    StateChange,
    /// An AWS Health scheduled change (reboot, retirement).
    ScheduledChange,
    /// An Auto Scaling group terminating the instance (lifecycle hook): never released, the instance
    /// goes once the hook is completed or times out.
    LifecycleTerminate,
    /// A reason CloudOptim did not write (kept as it is).
    Unknown,
}

impl MarkKind {
    /// The kind from a mark's reason, e.g. `rebalance for i-0abc (event 1234)`.
    pub fn of_reason(reason: Option<&str>) -> MarkKind {
        match reason.and_then(|r| r.split_whitespace().next()) {
            Some("spot_interruption") => MarkKind::SpotInterruption,
            Some("rebalance") => MarkKind::Rebalance,
            Some("state_change") => MarkKind::StateChange,
            Some("scheduled_change") => MarkKind::ScheduledChange,
            Some("lifecycle_terminate") => MarkKind::LifecycleTerminate,
            _ => MarkKind::Unknown,
        }
    }

    /// The `kind` label of the held-nodes metrics.
    pub fn metric_label(self) -> &'static str {
        match self {
            MarkKind::SpotInterruption => "spot_interruption",
            MarkKind::Rebalance => "rebalance",
            MarkKind::StateChange => "state_change",
            MarkKind::ScheduledChange => "scheduled_change",
            MarkKind::LifecycleTerminate => "lifecycle_terminate",
            MarkKind::Unknown => "unknown",
        }
    }
}

/// What is known of one held node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held<'a> {
    /// What put it on hold.
    pub kind: MarkKind,
    /// How long ago the mark was set; `None` when the time annotation is missing or unreadable.
    pub age: Option<Duration>,
    /// The instance's EC2 state (`running`, `stopped`, ...); `None` when EC2 does not know it.
    pub instance_state: Option<&'a str>,
    /// The Node's `Ready` condition is `True`.
    pub node_ready: bool,
}

/// The decision for one held node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Keep the cordon, for this reason.
    Keep(KeepReason),
    /// Remove the taint and uncordon.
    Release,
}

/// Why a held node stays cordoned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepReason {
    /// The instance is not running (stopped, terminating, gone): the node is still away.
    InstanceNotRunning,
    /// Its Auto Scaling group is terminating the instance: it is going, whatever EC2 says now.
    GoingAway,
    /// The Node is not Ready yet.
    NodeNotReady,
    /// Younger than the hold.
    Holding,
    /// No time recorded, or a mark CloudOptim did not write: a person decides.
    NotOurs,
}

/// Decide whether to release a held node after `release_after`, never before `floor` (normally
/// [`MIN_HOLD`]).
pub fn decide(held: &Held<'_>, release_after: Duration, floor: Duration) -> Decision {
    let Some(age) = held.age else {
        return Decision::Keep(KeepReason::NotOurs);
    };
    match held.kind {
        MarkKind::Unknown => return Decision::Keep(KeepReason::NotOurs),
        MarkKind::LifecycleTerminate => return Decision::Keep(KeepReason::GoingAway),
        _ => {}
    }
    if held.instance_state != Some("running") {
        return Decision::Keep(KeepReason::InstanceNotRunning);
    }
    if !held.node_ready {
        return Decision::Keep(KeepReason::NodeNotReady);
    }
    if age < release_after.max(floor) {
        return Decision::Keep(KeepReason::Holding);
    }
    Decision::Release
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(kind: MarkKind, age_s: u64, state: Option<&str>, ready: bool) -> Held<'_> {
        Held {
            kind,
            age: Some(Duration::from_secs(age_s)),
            instance_state: state,
            node_ready: ready,
        }
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn a_rebalance_cordon_is_released_once_healthy_and_old_enough() {
        let h = held(MarkKind::Rebalance, 3601, Some("running"), true);
        assert_eq!(decide(&h, HOUR, MIN_HOLD), Decision::Release);
        let young = held(MarkKind::Rebalance, 3599, Some("running"), true);
        assert_eq!(
            decide(&young, HOUR, MIN_HOLD),
            Decision::Keep(KeepReason::Holding)
        );
    }

    #[test]
    fn a_stopped_or_unready_node_is_kept_however_old() {
        for (state, ready, why) in [
            (Some("stopped"), true, KeepReason::InstanceNotRunning),
            (Some("shutting-down"), true, KeepReason::InstanceNotRunning),
            (None, true, KeepReason::InstanceNotRunning),
            (Some("running"), false, KeepReason::NodeNotReady),
        ] {
            let h = held(MarkKind::StateChange, 86_400, state, ready);
            assert_eq!(decide(&h, Duration::ZERO, MIN_HOLD), Decision::Keep(why));
        }
    }

    #[test]
    fn the_notice_window_is_a_floor_and_foreign_marks_are_left_alone() {
        let h = held(MarkKind::ScheduledChange, 60, Some("running"), true);
        assert_eq!(
            decide(&h, Duration::ZERO, MIN_HOLD),
            Decision::Keep(KeepReason::Holding)
        );
        let h = held(MarkKind::ScheduledChange, 181, Some("running"), true);
        assert_eq!(decide(&h, Duration::ZERO, MIN_HOLD), Decision::Release);
        let foreign = held(MarkKind::Unknown, 86_400, Some("running"), true);
        assert_eq!(
            decide(&foreign, Duration::ZERO, MIN_HOLD),
            Decision::Keep(KeepReason::NotOurs)
        );
        let undated = Held {
            age: None,
            ..held(MarkKind::Rebalance, 0, Some("running"), true)
        };
        assert_eq!(
            decide(&undated, Duration::ZERO, MIN_HOLD),
            Decision::Keep(KeepReason::NotOurs)
        );
    }

    #[test]
    fn the_kind_is_read_from_the_reason_the_intake_writes() {
        assert_eq!(
            MarkKind::of_reason(Some("rebalance for i-1 (event e)")),
            MarkKind::Rebalance
        );
        assert_eq!(
            MarkKind::of_reason(Some("state_change (event e)")),
            MarkKind::StateChange
        );
        assert_eq!(MarkKind::of_reason(Some("manual")), MarkKind::Unknown);
        let terminating = MarkKind::of_reason(Some("lifecycle_terminate for i-1 (event e)"));
        assert_eq!(terminating, MarkKind::LifecycleTerminate);
        assert_eq!(
            decide(
                &held(terminating, 7200, Some("running"), true),
                Duration::ZERO,
                MIN_HOLD
            ),
            Decision::Keep(KeepReason::GoingAway),
            "a group terminating the instance is never undone"
        );
        assert_eq!(MarkKind::of_reason(None), MarkKind::Unknown);
    }
}
