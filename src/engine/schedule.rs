//! Weekly hibernation schedules (DESIGN.md 3.3): compile a spec into a timeline of states and the
//! transitions between them, in the schedule's IANA time zone.
//!
//! # Why the timeline is built this way
//!
//! People write schedules in local wall-clock time ("Mon-Fri 07:30-20:30 in Berlin"), but a
//! controller needs UTC instants to requeue at, and DST makes the two disagree twice a year. So the
//! week is kept as what people wrote — merged awake intervals in local minutes-of-week, plus the wake
//! and sleep boundaries between them — and only the *boundaries* are mapped to UTC, week by week,
//! through chrono-tz. A question about one instant builds the boundaries of the few local weeks
//! around it (a handful of numbers each) instead of scanning minutes, so `next_transition` costs
//! microseconds however far away the next boundary is.
//!
//! # DST semantics, and why they are defined on boundaries
//!
//! A boundary whose local time does not exist (spring-forward gap) fires at the first instant after
//! the gap; a boundary whose local time happens twice (fall back) fires once, at its first occurrence.
//! Both rules map local time to UTC monotonically, so boundaries stay in local order. The state at any
//! instant is then *defined* as the state set by the last transition at or before it: during the
//! second pass through a repeated hour nothing fires again, so the state holds; boundaries that land
//! on the same instant (several local times inside one gap) are applied in local order and only their
//! net effect is a transition, so an awake window that lies entirely inside a gap never wakes anything.
//! Defining the state by transitions rather than by "is this wall-clock time inside a window" is what
//! makes a controller that requeues on `next_transition` agree with `state_at` at every instant.
//!
//! # Pre-warm
//!
//! Nodes wake `prewarmMinutes` of real time before each workload wake instant (state `WakingUp`), so
//! the prewarm is computed on the UTC timeline, after the DST mapping: it is always exactly that many
//! minutes, even across a DST change. When a sleep is shorter than the prewarm, the nodes never go
//! down: the schedule goes from `Awake` straight to `WakingUp` (workloads sleep, nodes stay).
//! A schedule awake the whole week never sleeps and never pre-warms; one never awake never wakes.

mod clock;
#[cfg(test)]
mod tests;
mod week;
mod window;

use std::fmt;
use std::ops::Range;

use chrono::{
    DateTime, Datelike, Days, FixedOffset, NaiveDate, NaiveTime, TimeDelta, TimeZone, Utc,
};
use chrono_tz::Tz;
use serde::Serialize;

use week::{Boundary, MINUTES_PER_WEEK, WeekPattern};

/// Default of `prewarmMinutes` when a schedule does not set it.
pub const DEFAULT_PREWARM_MINUTES: u32 = 30;
/// Largest accepted `prewarmMinutes`.
pub const MAX_PREWARM_MINUTES: u32 = 60;
/// Cells of a `weeklyMatrix`: 7 days x 24 hours, Monday 00:00 first.
pub const MATRIX_CELLS: usize = 168;

/// Weeks of boundaries built before the week of the first instant asked about, so the state in force
/// at that instant (and the sleep before a pre-warm) is known.
const WEEKS_BEFORE: u64 = 2;
/// Weeks built after the week of the last instant asked about, so a wake just after it (and thus its
/// pre-warm, or a short sleep) is known.
const WEEKS_AFTER: u64 = 1;
/// How far `next_transition` looks before giving up (only a schedule whose every boundary falls into
/// DST gaps for this long could have none; such a schedule has no next transition worth waiting for).
const NEXT_TRANSITION_HORIZON_WEEKS: i64 = 64;

/// A schedule as written by the user, before validation: the fields of a HibernationSchedule's spec
/// that decide *when*.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleSpec {
    /// IANA time zone, e.g. `Europe/Berlin` (`spec.timeZone`).
    pub time_zone: String,
    /// 168 hourly cells, Monday 00:00 first, 1 = awake, 0 = hibernating (`spec.weeklyMatrix`).
    pub weekly_matrix: Option<Vec<u8>>,
    /// Awake windows such as `Mon-Fri 07:30-20:30` (`spec.awake`).
    pub awake: Option<Vec<String>>,
    /// Minutes of real time before each wake at which nodes are woken (`spec.prewarmMinutes`, 0-60).
    pub prewarm_minutes: u32,
}

/// Why a spec cannot be compiled. Every message starts with the field (as written in YAML, relative
/// to `spec`) and says how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// `timeZone` is not a name in the IANA tz database.
    #[error("timeZone: unknown IANA time zone \"{name}\"; use a name like {suggestion}")]
    UnknownTimeZone {
        /// The name given.
        name: String,
        /// The closest valid name, or examples of valid names.
        suggestion: String,
    },
    /// Both `weeklyMatrix` and `awake` are set.
    #[error("weeklyMatrix: set together with awake; set exactly one of weeklyMatrix or awake")]
    BothMatrixAndAwake,
    /// Neither `weeklyMatrix` nor `awake` is set.
    #[error(
        "awake: neither awake nor weeklyMatrix is set; set exactly one, e.g. awake: [\"Mon-Fri 07:30-20:30\"]"
    )]
    NeitherMatrixNorAwake,
    /// `weeklyMatrix` does not have 168 entries.
    #[error(
        "weeklyMatrix: has {len} entries but needs 168 (7 days x 24 hours, index = day*24 + hour, Monday 00:00 first)"
    )]
    MatrixLength {
        /// Number of entries given.
        len: usize,
    },
    /// An entry of `weeklyMatrix` is neither 0 nor 1.
    #[error("weeklyMatrix[{index}]: value {value} is not 0 or 1 (1 = awake, 0 = hibernating)")]
    MatrixValue {
        /// Index of the entry.
        index: usize,
        /// The value given.
        value: u8,
    },
    /// An entry of `awake` does not follow the window grammar.
    #[error("awake[{index}]: cannot parse \"{window}\": {reason}; {grammar}", grammar = window::GRAMMAR)]
    Window {
        /// Index of the window in `awake`.
        index: usize,
        /// The window as written.
        window: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `prewarmMinutes` is more than 60.
    #[error("prewarmMinutes: {minutes} is more than 60; use 0 to 60")]
    PrewarmTooLong {
        /// The value given.
        minutes: u32,
    },
}

impl ScheduleError {
    /// The offending field, relative to `spec`, e.g. `awake[2]`: for status conditions and events.
    pub fn field(&self) -> String {
        match self {
            ScheduleError::UnknownTimeZone { .. } => "timeZone".into(),
            ScheduleError::BothMatrixAndAwake | ScheduleError::MatrixLength { .. } => {
                "weeklyMatrix".into()
            }
            ScheduleError::NeitherMatrixNorAwake => "awake".into(),
            ScheduleError::MatrixValue { index, .. } => format!("weeklyMatrix[{index}]"),
            ScheduleError::Window { index, .. } => format!("awake[{index}]"),
            ScheduleError::PrewarmTooLong { .. } => "prewarmMinutes".into(),
        }
    }

    /// A short PascalCase label for condition reasons and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            ScheduleError::UnknownTimeZone { .. } => "UnknownTimeZone",
            ScheduleError::BothMatrixAndAwake | ScheduleError::NeitherMatrixNorAwake => {
                "MatrixOrAwake"
            }
            ScheduleError::MatrixLength { .. } | ScheduleError::MatrixValue { .. } => {
                "InvalidWeeklyMatrix"
            }
            ScheduleError::Window { .. } => "InvalidAwakeWindow",
            ScheduleError::PrewarmTooLong { .. } => "InvalidPrewarm",
        }
    }
}

/// What the targets of a schedule are doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum State {
    /// Workloads and nodes are up.
    Awake,
    /// Workloads are scaled to zero and node groups are at zero.
    Hibernating,
    /// Node groups are up (or coming up) for the next wake; workloads are still at zero.
    WakingUp,
}

impl State {
    /// The state's name, as printed by the CLI and written to status.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Awake => "Awake",
            State::Hibernating => "Hibernating",
            State::WakingUp => "WakingUp",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// What a controller does at a transition, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Action {
    /// `Awake` -> `Hibernating`: scale workloads to zero, then node groups to zero.
    SleepWorkloadsThenNodes,
    /// `Awake` -> `WakingUp`: the sleep is shorter than the pre-warm, so only workloads sleep and the
    /// nodes stay up for the wake that follows.
    SleepWorkloads,
    /// `Hibernating` -> `WakingUp`: pre-warm starts; restore node groups, workloads stay at zero.
    WakeNodes,
    /// `WakingUp` -> `Awake`: restore workloads (nodes are already up).
    WakeWorkloads,
    /// `Hibernating` -> `Awake` (pre-warm 0): restore node groups, then workloads.
    WakeNodesThenWorkloads,
}

impl Action {
    /// The action's name, as printed by the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::SleepWorkloadsThenNodes => "SleepWorkloadsThenNodes",
            Action::SleepWorkloads => "SleepWorkloads",
            Action::WakeNodes => "WakeNodes",
            Action::WakeWorkloads => "WakeWorkloads",
            Action::WakeNodesThenWorkloads => "WakeNodesThenWorkloads",
        }
    }

    /// The action that takes the targets from `previous` to `next` (two different states).
    fn between(previous: State, next: State) -> Action {
        match (previous, next) {
            (State::Awake, State::WakingUp) => Action::SleepWorkloads,
            (State::Hibernating, State::WakingUp) => Action::WakeNodes,
            (State::WakingUp, State::Awake) => Action::WakeWorkloads,
            (State::Hibernating, State::Awake) => Action::WakeNodesThenWorkloads,
            // Never produced from WakingUp (a pre-warm always ends in a wake); sleeping workloads that
            // already sleep is harmless, so the full sleep is the safe answer.
            (_, State::Hibernating)
            | (State::Awake, State::Awake)
            | (State::WakingUp, State::WakingUp) => Action::SleepWorkloadsThenNodes,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A change of state at an instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// When it happens.
    pub instant: DateTime<Utc>,
    /// The same instant on the schedule's wall clock (with the offset in force then). For a boundary
    /// inside a spring-forward gap this is the first local time after the gap.
    pub local: DateTime<FixedOffset>,
    /// The state before.
    pub previous: State,
    /// The state from this instant on.
    pub state: State,
    /// What to do.
    pub action: Action,
}

/// A validated schedule, ready to answer "what state at t" and "what happens next".
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledSchedule {
    tz: Tz,
    week: WeekPattern,
    prewarm: TimeDelta,
}

/// Validate a spec and compile it; the error names the field and the fix.
pub fn compile(spec: &ScheduleSpec) -> Result<CompiledSchedule, ScheduleError> {
    let tz = parse_time_zone(&spec.time_zone)?;
    let week = match (&spec.weekly_matrix, &spec.awake) {
        (Some(_), Some(_)) => return Err(ScheduleError::BothMatrixAndAwake),
        (None, None) => return Err(ScheduleError::NeitherMatrixNorAwake),
        (Some(matrix), None) => week_of_matrix(matrix)?,
        (None, Some(windows)) => week_of_windows(windows)?,
    };
    if spec.prewarm_minutes > MAX_PREWARM_MINUTES {
        return Err(ScheduleError::PrewarmTooLong {
            minutes: spec.prewarm_minutes,
        });
    }
    Ok(CompiledSchedule {
        tz,
        week,
        prewarm: TimeDelta::minutes(i64::from(spec.prewarm_minutes)),
    })
}

fn parse_time_zone(name: &str) -> Result<Tz, ScheduleError> {
    name.parse::<Tz>()
        .map_err(|_| ScheduleError::UnknownTimeZone {
            name: name.to_string(),
            suggestion: closest_time_zone(name)
                .unwrap_or_else(|| "Europe/Berlin, America/New_York or UTC".into()),
        })
}

/// The valid zone name a typo most likely meant: same letters in another case, or at most two edits.
fn closest_time_zone(name: &str) -> Option<String> {
    let wanted = name.to_ascii_lowercase();
    chrono_tz::TZ_VARIANTS
        .iter()
        .map(|tz| {
            (
                edit_distance(&wanted, &tz.name().to_ascii_lowercase()),
                tz.name(),
            )
        })
        .filter(|(distance, _)| *distance <= 2)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, name)| name.to_string())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substituted = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substituted.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

fn week_of_matrix(matrix: &[u8]) -> Result<WeekPattern, ScheduleError> {
    if matrix.len() != MATRIX_CELLS {
        return Err(ScheduleError::MatrixLength { len: matrix.len() });
    }
    if let Some((index, &value)) = matrix.iter().enumerate().find(|(_, value)| **value > 1) {
        return Err(ScheduleError::MatrixValue { index, value });
    }
    Ok(WeekPattern::from_matrix(matrix))
}

fn week_of_windows(windows: &[String]) -> Result<WeekPattern, ScheduleError> {
    let mut spans = Vec::new();
    for (index, text) in windows.iter().enumerate() {
        let parsed = window::parse_window(text).map_err(|reason| ScheduleError::Window {
            index,
            window: text.clone(),
            reason,
        })?;
        spans.extend(parsed);
    }
    Ok(WeekPattern::from_spans(spans))
}

/// The state in force before the first transition of a built range, and the transitions.
struct Timeline {
    initial: State,
    transitions: Vec<Transition>,
}

impl CompiledSchedule {
    /// The schedule's time zone.
    pub fn time_zone(&self) -> Tz {
        self.tz
    }

    /// The pre-warm, in minutes.
    pub fn prewarm_minutes(&self) -> u32 {
        u32::try_from(self.prewarm.num_minutes()).unwrap_or(MAX_PREWARM_MINUTES)
    }

    /// The awake intervals of the week in local wall-clock minutes (0 = Monday 00:00, end exclusive),
    /// merged and ascending. An interval ending at 10080 continues into one starting at 0.
    pub fn awake_intervals(&self) -> &[Range<u32>] {
        self.week.awake()
    }

    /// The state at `instant`: the state set by the last transition at or before it.
    pub fn state_at(&self, instant: DateTime<Utc>) -> State {
        let timeline = self.timeline(instant, instant);
        timeline
            .transitions
            .iter()
            .take_while(|transition| transition.instant <= instant)
            .last()
            .map_or(timeline.initial, |transition| transition.state)
    }

    /// The first transition strictly after `after`, or `None` for a schedule that never changes state
    /// (always awake or always asleep).
    pub fn next_transition(&self, after: DateTime<Utc>) -> Option<Transition> {
        if self.week.boundaries().is_empty() {
            return None;
        }
        let mut horizon = TimeDelta::weeks(1);
        while horizon <= TimeDelta::weeks(NEXT_TRANSITION_HORIZON_WEEKS) {
            let until = after.checked_add_signed(horizon)?;
            let found = self
                .timeline(after, until)
                .transitions
                .into_iter()
                .find(|transition| transition.instant > after);
            if found.is_some() {
                return found;
            }
            horizon = horizon * 2;
        }
        None
    }

    /// Every transition at or after `from` and before `to`, in time order.
    pub fn transitions(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<Transition> {
        if to <= from {
            return Vec::new();
        }
        self.timeline(from, to)
            .transitions
            .into_iter()
            .filter(|transition| transition.instant >= from && transition.instant < to)
            .collect()
    }

    /// The share of `from..to` (0..=1) spent in `state`, e.g. how much of a year the node groups are
    /// down (`Hibernating`): what hibernation saves, as a fraction of the cost of running them.
    pub fn fraction_in(&self, state: State, from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
        if to <= from {
            return 0.0;
        }
        let mut current = self.state_at(from);
        let mut since = from;
        let mut inside = TimeDelta::zero();
        for transition in self.transitions(from, to) {
            if current == state {
                inside += transition.instant - since;
            }
            current = transition.state;
            since = transition.instant;
        }
        if current == state {
            inside += to - since;
        }
        inside.num_seconds() as f64 / (to - from).num_seconds() as f64
    }

    /// The transitions of the local weeks around `from..=to`: boundaries mapped to UTC, collapsed
    /// where they coincide, then expanded with pre-warm.
    fn timeline(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Timeline {
        let raw = self.fire_instants(from, to);
        let Some(first) = raw.first() else {
            let initial = if self.week.always_awake() {
                State::Awake
            } else {
                State::Hibernating
            };
            return Timeline {
                initial,
                transitions: Vec::new(),
            };
        };
        // Boundaries alternate, so the state before the first one is the opposite of what it sets.
        let initially_awake = !first.1;
        let mut awake = initially_awake;
        let mut changes: Vec<(DateTime<Utc>, bool)> = Vec::with_capacity(raw.len());
        for group in raw.chunk_by(|a, b| a.0 == b.0) {
            let Some(&(instant, wakes)) = group.last() else {
                continue;
            };
            if wakes != awake {
                changes.push((instant, wakes));
                awake = wakes;
            }
        }
        let initial = if initially_awake {
            State::Awake
        } else {
            State::Hibernating
        };
        Timeline {
            initial,
            transitions: self.with_prewarm(initial, &changes),
        }
    }

    /// When each boundary of the local weeks around `from..=to` fires, in local (and so time) order.
    fn fire_instants(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<(DateTime<Utc>, bool)> {
        let boundaries = self.week.boundaries();
        if boundaries.is_empty() {
            return Vec::new();
        }
        let first_monday =
            monday_of(self.local_date(from)).checked_sub_days(Days::new(7 * WEEKS_BEFORE));
        let last_monday =
            monday_of(self.local_date(to)).checked_add_days(Days::new(7 * WEEKS_AFTER));
        let (Some(mut monday), Some(last_monday)) = (first_monday, last_monday) else {
            return Vec::new();
        };
        let mut fired = Vec::new();
        while monday <= last_monday {
            let week_start = monday.and_time(NaiveTime::MIN);
            fired.extend(boundaries.iter().map(|&Boundary { minute, wake }| {
                let local = week_start + TimeDelta::minutes(i64::from(minute));
                (clock::fire_instant(self.tz, local), wake)
            }));
            let Some(next) = monday.checked_add_days(Days::new(7)) else {
                break;
            };
            monday = next;
        }
        fired
    }

    fn local_date(&self, instant: DateTime<Utc>) -> NaiveDate {
        self.tz.from_utc_datetime(&instant.naive_utc()).date_naive()
    }

    /// Turn wake/sleep changes into transitions: a wake preceded by `prewarm` of `WakingUp` (or, when
    /// the sleep before it is shorter than that, a sleep straight into `WakingUp`).
    fn with_prewarm(&self, initial: State, changes: &[(DateTime<Utc>, bool)]) -> Vec<Transition> {
        let prewarms = !self.prewarm.is_zero();
        let mut state = initial;
        let mut transitions = Vec::with_capacity(changes.len() * 3 / 2);
        let mut enter = |instant: DateTime<Utc>, next: State, state: &mut State| {
            transitions.push(Transition {
                instant,
                local: instant.with_timezone(&self.tz).fixed_offset(),
                previous: *state,
                state: next,
                action: Action::between(*state, next),
            });
            *state = next;
        };
        for (index, &(instant, wakes)) in changes.iter().enumerate() {
            if wakes {
                if prewarms && state == State::Hibernating {
                    enter(instant - self.prewarm, State::WakingUp, &mut state);
                }
                enter(instant, State::Awake, &mut state);
            } else {
                let wake_is_close = changes
                    .get(index + 1)
                    .is_some_and(|&(wake, _)| wake - self.prewarm <= instant);
                let next = if prewarms && wake_is_close {
                    State::WakingUp
                } else {
                    State::Hibernating
                };
                enter(instant, next, &mut state);
            }
        }
        transitions
    }
}

fn monday_of(date: NaiveDate) -> NaiveDate {
    let since_monday = u64::from(date.weekday().num_days_from_monday());
    date.checked_sub_days(Days::new(since_monday))
        .unwrap_or(date)
}

// Keep the public constant and the internal week length in one place.
const _: () = assert!(MINUTES_PER_WEEK == MATRIX_CELLS as u32 * 60);
