//! What hibernation does to one workload or one Auto Scaling group, as a pure decision over what the
//! controller observed (DESIGN.md 3.3). The controller applies the returned step with one write each,
//! so every crash leaves a state that one of these rules takes forward.
//!
//! # Workloads
//!
//! A workload put to sleep gets, in the same write as `replicas: 0`, the label
//! `cloudoptim.io/hibernated-by=<schedule>` and the annotation `cloudoptim.io/original-replicas`. The
//! label makes "everything this schedule holds" one list call (restore on wake, on deletion, or when a
//! namespace stops being targeted); the annotation keeps the count with the object, so a restart, an
//! upgrade or losing the schedule's status loses nothing. A CronJob counts as 1 replica when it runs
//! and 0 when suspended.
//!
//! A count changed by a person while the workload sleeps wins: it is not put back to 0, and at wake it
//! is left as set (the marker is removed and an Event says so).
//!
//! # Groups
//!
//! A group goes to sleep in two writes: first the tags `cloudoptim.io/hibernating-for=<schedule>` and
//! `cloudoptim.io/original-size=<min>/<max>/<desired>` (one CreateOrUpdateTags call), then sizes 0 and
//! the tag `cloudoptim.io/hibernated-by=<schedule>`. A group tagged "hibernating-for" but not
//! "hibernated-by" was left between the two by a crash and is taken to 0; a group tagged
//! "hibernated-by" whose sizes are no longer 0 was changed by a person and is left as set.

use serde::Serialize;

/// Sizes of an Auto Scaling group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Sizes {
    /// Minimum size.
    pub min: i32,
    /// Maximum size.
    pub max: i32,
    /// Desired capacity.
    pub desired: i32,
}

impl Sizes {
    /// All zero.
    pub const ZERO: Sizes = Sizes {
        min: 0,
        max: 0,
        desired: 0,
    };

    /// The tag form, `min/max/desired`.
    pub fn to_tag(self) -> String {
        format!("{}/{}/{}", self.min, self.max, self.desired)
    }

    /// Parse the tag form; `None` when it is not three non-negative integers with min <= desired <= max.
    pub fn from_tag(value: &str) -> Option<Sizes> {
        let mut parts = value.split('/').map(|p| p.trim().parse::<i32>().ok());
        let (min, max, desired) = (parts.next()??, parts.next()??, parts.next()??);
        let sizes = Sizes { min, max, desired };
        (parts.next().is_none() && min >= 0 && min <= desired && desired <= max).then_some(sizes)
    }
}

/// What the controller saw of one workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkloadView {
    /// Current replicas (CronJob: 1 running, 0 suspended).
    pub replicas: i32,
    /// The saved count, when this schedule's marker is on the object.
    pub saved: Option<i32>,
    /// The schedule targets it now (namespace targeted, not excluded).
    pub targeted: bool,
}

/// What to do with one workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkloadStep {
    /// Leave it.
    Nothing,
    /// Mark it with `original` and scale it to 0 (one write).
    Sleep {
        /// The count to restore later.
        original: i32,
    },
    /// Scale it back to `replicas` and remove the marker (one write).
    Restore {
        /// The saved count.
        replicas: i32,
    },
    /// Remove the marker, leave the count a person set while it slept (one write, plus an Event).
    KeepManual {
        /// The count the person set.
        replicas: i32,
        /// The count that was saved.
        saved: i32,
    },
}

/// The step for one workload when the schedule wants workloads asleep (`asleep`) or awake.
pub fn workload_step(asleep: bool, view: WorkloadView) -> WorkloadStep {
    match (asleep && view.targeted, view.saved) {
        // Running and not ours yet: save and sleep. Already at 0: nothing to restore later, leave it.
        (true, None) if view.replicas > 0 => WorkloadStep::Sleep {
            original: view.replicas,
        },
        (true, None) => WorkloadStep::Nothing,
        // Ours: asleep, or scaled up by a person while asleep (who wins; settled at wake).
        (true, Some(_)) => WorkloadStep::Nothing,
        (false, Some(saved)) if view.replicas == 0 => WorkloadStep::Restore { replicas: saved },
        (false, Some(saved)) => WorkloadStep::KeepManual {
            replicas: view.replicas,
            saved,
        },
        (false, None) => WorkloadStep::Nothing,
    }
}

/// Whose hibernation markers a group carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMarks {
    /// `cloudoptim.io/hibernating-for`: the schedule that saved its sizes.
    pub saving_for: Option<String>,
    /// `cloudoptim.io/original-size`, parsed.
    pub saved: Option<Sizes>,
    /// `cloudoptim.io/hibernated-by`: the schedule that took it to 0.
    pub held_by: Option<String>,
}

/// What the controller saw of one Auto Scaling group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupView {
    /// Current sizes.
    pub sizes: Sizes,
    /// Markers on the group.
    pub marks: GroupMarks,
    /// The schedule targets it now (through a selected NodeTemplate).
    pub targeted: bool,
}

/// What to do with one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupStep {
    /// Leave it.
    Nothing,
    /// Another schedule holds it: leave it and say so.
    HeldByOther(String),
    /// Save `sizes` in tags (first write), then go to 0 and tag it held (second write).
    Sleep {
        /// The sizes to save.
        sizes: Sizes,
    },
    /// Sizes were saved by a run that stopped before scaling: go to 0 and tag it held.
    FinishSleep,
    /// Restore `sizes`, then remove the markers.
    Restore {
        /// The saved sizes.
        sizes: Sizes,
    },
    /// Sizes were changed while asleep (or already restored): only remove the markers.
    Unmark {
        /// The saved sizes were not restored because the group had been changed by a person.
        changed: bool,
    },
}

/// The step for one group when the schedule (named `schedule`) wants node groups asleep or awake.
pub fn group_step(schedule: &str, asleep: bool, view: &GroupView) -> GroupStep {
    let marks = &view.marks;
    let owner = marks.saving_for.as_ref().or(marks.held_by.as_ref());
    if let Some(owner) = owner.filter(|o| o.as_str() != schedule) {
        return GroupStep::HeldByOther(owner.clone());
    }
    let ours = owner.is_some();
    match (asleep && view.targeted, ours, marks.saved) {
        (true, false, _) if view.sizes == Sizes::ZERO => GroupStep::Nothing,
        (true, false, _) => GroupStep::Sleep { sizes: view.sizes },
        // Held: asleep, or changed by a person while asleep (who wins).
        (true, true, _) if marks.held_by.is_some() => GroupStep::Nothing,
        (true, true, Some(_)) => GroupStep::FinishSleep,
        // Marked but the saved sizes are unreadable: nothing safe to do but forget the marker.
        (true, true, None) => GroupStep::Unmark { changed: false },
        (false, false, _) => GroupStep::Nothing,
        (false, true, Some(saved)) if view.sizes == Sizes::ZERO && saved != Sizes::ZERO => {
            GroupStep::Restore { sizes: saved }
        }
        (false, true, saved) => GroupStep::Unmark {
            // Restored already (a crash before unmarking) or never taken down: no change by a person.
            changed: marks.held_by.is_some()
                && saved.is_some_and(|s| s != view.sizes)
                && view.sizes != Sizes::ZERO,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(replicas: i32, saved: Option<i32>, targeted: bool) -> WorkloadView {
        WorkloadView {
            replicas,
            saved,
            targeted,
        }
    }

    #[test]
    fn workloads_sleep_once_and_wake_to_the_saved_count() {
        assert_eq!(
            workload_step(true, w(3, None, true)),
            WorkloadStep::Sleep { original: 3 }
        );
        // Already asleep (restart): nothing.
        assert_eq!(
            workload_step(true, w(0, Some(3), true)),
            WorkloadStep::Nothing
        );
        // Wake.
        assert_eq!(
            workload_step(false, w(0, Some(3), true)),
            WorkloadStep::Restore { replicas: 3 }
        );
        // Not targeted, never touched.
        assert_eq!(
            workload_step(true, w(3, None, false)),
            WorkloadStep::Nothing
        );
        assert_eq!(
            workload_step(false, w(3, None, true)),
            WorkloadStep::Nothing
        );
        // Already at 0 and not ours: nothing to save, nothing to restore.
        assert_eq!(workload_step(true, w(0, None, true)), WorkloadStep::Nothing);
    }

    #[test]
    fn a_person_who_scaled_a_sleeping_workload_wins() {
        assert_eq!(
            workload_step(true, w(5, Some(3), true)),
            WorkloadStep::Nothing
        );
        assert_eq!(
            workload_step(false, w(5, Some(3), true)),
            WorkloadStep::KeepManual {
                replicas: 5,
                saved: 3
            }
        );
    }

    #[test]
    fn a_workload_no_longer_targeted_is_restored_while_the_rest_sleeps() {
        assert_eq!(
            workload_step(true, w(0, Some(2), false)),
            WorkloadStep::Restore { replicas: 2 }
        );
    }

    fn g(
        sizes: Sizes,
        saving: Option<&str>,
        saved: Option<Sizes>,
        held: Option<&str>,
    ) -> GroupView {
        GroupView {
            sizes,
            marks: GroupMarks {
                saving_for: saving.map(str::to_string),
                saved,
                held_by: held.map(str::to_string),
            },
            targeted: true,
        }
    }

    const S: Sizes = Sizes {
        min: 1,
        max: 5,
        desired: 3,
    };

    #[test]
    fn groups_sleep_in_two_writes_and_resume_between_them() {
        assert_eq!(
            group_step("a", true, &g(S, None, None, None)),
            GroupStep::Sleep { sizes: S }
        );
        // Crash after the tags, before the scale: finish.
        assert_eq!(
            group_step("a", true, &g(S, Some("a"), Some(S), None)),
            GroupStep::FinishSleep
        );
        assert_eq!(
            group_step("a", true, &g(Sizes::ZERO, Some("a"), Some(S), Some("a"))),
            GroupStep::Nothing
        );
        assert_eq!(
            group_step("a", false, &g(Sizes::ZERO, Some("a"), Some(S), Some("a"))),
            GroupStep::Restore { sizes: S }
        );
        // Crash after restoring, before unmarking: only unmark, no "changed" claim.
        assert_eq!(
            group_step("a", false, &g(S, Some("a"), Some(S), Some("a"))),
            GroupStep::Unmark { changed: false }
        );
        // Crash after saving, woken before scaling: unmark.
        assert_eq!(
            group_step("a", false, &g(S, Some("a"), Some(S), None)),
            GroupStep::Unmark { changed: false }
        );
    }

    #[test]
    fn a_group_changed_while_asleep_is_left_and_another_schedules_group_is_not_touched() {
        let raised = Sizes {
            min: 0,
            max: 2,
            desired: 2,
        };
        assert_eq!(
            group_step("a", true, &g(raised, Some("a"), Some(S), Some("a"))),
            GroupStep::Nothing
        );
        assert_eq!(
            group_step("a", false, &g(raised, Some("a"), Some(S), Some("a"))),
            GroupStep::Unmark { changed: true }
        );
        assert_eq!(
            group_step("a", true, &g(Sizes::ZERO, Some("b"), Some(S), Some("b"))),
            GroupStep::HeldByOther("b".into())
        );
        assert_eq!(
            group_step("a", true, &g(Sizes::ZERO, None, None, None)),
            GroupStep::Nothing
        );
    }

    #[test]
    fn sizes_round_trip_through_the_tag_and_bad_tags_are_refused() {
        assert_eq!(Sizes::from_tag(&S.to_tag()), Some(S));
        for bad in ["", "1/2", "1/2/3/4", "a/b/c", "3/1/2", "-1/2/1"] {
            assert_eq!(Sizes::from_tag(bad), None, "{bad}");
        }
    }
}
