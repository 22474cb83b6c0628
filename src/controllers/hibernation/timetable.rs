//! validate and plan (pure): the compiled timetable, the state wanted now, the next transition.

use super::*;

/// What the schedule wants now.
#[derive(Debug, Clone, PartialEq)]
pub struct Wanted {
    /// The state reported in status.
    pub state: HibernationState,
    /// Workloads at zero.
    pub workloads_asleep: bool,
    /// Node groups at zero.
    pub nodes_asleep: bool,
    /// The next change (instant, state entered), if any.
    pub next: Option<(DateTime<Utc>, HibernationState)>,
}

pub(super) fn state_of(state: State) -> HibernationState {
    match state {
        State::Awake => HibernationState::Awake,
        State::Hibernating => HibernationState::Hibernating,
        State::WakingUp => HibernationState::WakingUp,
    }
}

/// The state wanted at `now`: `suspend` wins, then an unexpired `override`, then the timetable.
pub fn wanted(
    schedule: &HibernationSchedule,
    compiled: &CompiledSchedule,
    now: DateTime<Utc>,
) -> Wanted {
    let spec = &schedule.spec;
    let of = |state: HibernationState, next| Wanted {
        state,
        workloads_asleep: matches!(
            state,
            HibernationState::Hibernating | HibernationState::WakingUp
        ),
        nodes_asleep: state == HibernationState::Hibernating,
        next,
    };
    if spec.suspend {
        return of(HibernationState::Suspended, None);
    }
    if let Some(o) = &spec.override_ {
        let until = DateTime::<Utc>::from_timestamp(o.until.0.as_second(), 0);
        if let Some(until) = until.filter(|u| *u > now) {
            let state = match o.state {
                OverrideState::Awake => HibernationState::Awake,
                OverrideState::Hibernating => HibernationState::Hibernating,
            };
            return of(state, Some((until, state_of(compiled.state_at(until)))));
        }
    }
    let next = compiled
        .next_transition(now)
        .map(|t| (t.instant, state_of(t.state)));
    of(state_of(compiled.state_at(now)), next)
}

/// Compile the spec's timetable.
pub fn compile(schedule: &HibernationSchedule) -> Result<CompiledSchedule, ScheduleError> {
    let spec = &schedule.spec;
    schedule::compile(&ScheduleSpec {
        time_zone: spec.time_zone.clone(),
        weekly_matrix: spec.weekly_matrix.clone(),
        awake: spec.awake.clone(),
        prewarm_minutes: spec.prewarm_minutes,
    })
}

pub(super) fn metric_value(state: HibernationState) -> i64 {
    match state {
        HibernationState::Awake => 0,
        HibernationState::Hibernating => 1,
        HibernationState::WakingUp => 2,
        HibernationState::Suspended => 3,
    }
}

pub(super) fn next_transition(
    compiled: &CompiledSchedule,
    next: Option<(DateTime<Utc>, HibernationState)>,
) -> Option<NextTransition> {
    let (at, state) = next?;
    Some(NextTransition {
        utc: at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        local: at
            .with_timezone(&compiled.time_zone())
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        state,
    })
}

/// How long until the next thing to do: the next transition (just after it), at most `RESYNC`.
pub(super) fn requeue_after(next: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Duration {
    next.and_then(|at| (at - now).to_std().ok())
        .map_or(RESYNC, |d| (d + Duration::from_millis(200)).min(RESYNC))
}
