//! Schedule tests: validation, DST examples, properties, and a year against a brute-force reference.

use super::*;
use chrono::{Offset, Timelike};
use proptest::prelude::*;

const BERLIN: &str = "Europe/Berlin";
const NEW_YORK: &str = "America/New_York";
const LORD_HOWE: &str = "Australia/Lord_Howe";

fn spec(zone: &str, windows: &[&str], prewarm_minutes: u32) -> ScheduleSpec {
    ScheduleSpec {
        time_zone: zone.into(),
        weekly_matrix: None,
        awake: Some(windows.iter().map(|w| w.to_string()).collect()),
        prewarm_minutes,
    }
}

fn schedule(zone: &str, windows: &[&str], prewarm_minutes: u32) -> CompiledSchedule {
    compile(&spec(zone, windows, prewarm_minutes)).unwrap()
}

fn matrix_schedule(zone: &str, matrix: Vec<u8>, prewarm_minutes: u32) -> CompiledSchedule {
    compile(&ScheduleSpec {
        time_zone: zone.into(),
        weekly_matrix: Some(matrix),
        awake: None,
        prewarm_minutes,
    })
    .unwrap()
}

fn at(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339)
        .unwrap()
        .with_timezone(&Utc)
}

/// Transitions as (UTC, local, new state, action) strings, for assertions that read like a timetable.
fn timetable(
    schedule: &CompiledSchedule,
    from: &str,
    to: &str,
) -> Vec<(String, String, State, Action)> {
    schedule
        .transitions(at(from), at(to))
        .into_iter()
        .map(|t| {
            (
                t.instant.to_rfc3339(),
                t.local.to_rfc3339(),
                t.state,
                t.action,
            )
        })
        .collect()
}

fn row(utc: &str, local: &str, state: State, action: Action) -> (String, String, State, Action) {
    (at(utc).to_rfc3339(), local.to_string(), state, action)
}

use Action::*;
use State::*;

// ---- validation ----

#[test]
fn an_unknown_time_zone_names_the_field_and_suggests_the_closest_zone() {
    let err = compile(&spec("Europe/Berln", &["Mon 08:00-09:00"], 30)).unwrap_err();
    assert_eq!(err.field(), "timeZone");
    assert_eq!(
        err.to_string(),
        "timeZone: unknown IANA time zone \"Europe/Berln\"; use a name like Europe/Berlin"
    );
    let err = compile(&spec("Mars/Olympus", &["Mon 08:00-09:00"], 30)).unwrap_err();
    assert!(
        err.to_string()
            .contains("use a name like Europe/Berlin, America/New_York or UTC")
    );
}

#[test]
fn a_matrix_of_167_entries_is_rejected_with_the_expected_shape() {
    let err = compile(&ScheduleSpec {
        time_zone: "UTC".into(),
        weekly_matrix: Some(vec![1; 167]),
        awake: None,
        prewarm_minutes: 0,
    })
    .unwrap_err();
    assert_eq!(err, ScheduleError::MatrixLength { len: 167 });
    assert!(
        err.to_string()
            .starts_with("weeklyMatrix: has 167 entries but needs 168")
    );
}

#[test]
fn a_matrix_value_other_than_0_or_1_names_its_index() {
    let mut matrix = vec![0; 168];
    matrix[30] = 2;
    let err = compile(&ScheduleSpec {
        time_zone: "UTC".into(),
        weekly_matrix: Some(matrix),
        awake: None,
        prewarm_minutes: 0,
    })
    .unwrap_err();
    assert_eq!(err.field(), "weeklyMatrix[30]");
    assert!(
        err.to_string()
            .starts_with("weeklyMatrix[30]: value 2 is not 0 or 1")
    );
}

#[test]
fn an_unparsable_window_quotes_it_and_shows_the_grammar() {
    let err = compile(&spec(BERLIN, &["Mon-Fri 07:30-20:30", "Sat 9-17"], 30)).unwrap_err();
    assert_eq!(err.field(), "awake[1]");
    assert_eq!(err.reason(), "InvalidAwakeWindow");
    let message = err.to_string();
    assert!(
        message.starts_with("awake[1]: cannot parse \"Sat 9-17\": expected a time HH:MM"),
        "{message}"
    );
    assert!(message.contains("\"DAY[-DAY] HH:MM-HH:MM\""), "{message}");
    assert!(message.contains("\"DAY HH:MM-DAY HH:MM\""), "{message}");
}

#[test]
fn exactly_one_of_matrix_and_awake_must_be_set() {
    let mut both = spec(BERLIN, &["Mon 08:00-09:00"], 30);
    both.weekly_matrix = Some(vec![0; 168]);
    assert_eq!(
        compile(&both).unwrap_err(),
        ScheduleError::BothMatrixAndAwake
    );
    let mut neither = both.clone();
    neither.weekly_matrix = None;
    neither.awake = None;
    let err = compile(&neither).unwrap_err();
    assert_eq!(err, ScheduleError::NeitherMatrixNorAwake);
    assert!(err.to_string().contains("set exactly one"));
}

#[test]
fn prewarm_over_60_minutes_is_rejected_and_60_is_accepted() {
    let err = compile(&spec(BERLIN, &["Mon 08:00-09:00"], 61)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "prewarmMinutes: 61 is more than 60; use 0 to 60"
    );
    assert_eq!(
        schedule(BERLIN, &["Mon 08:00-09:00"], 60).prewarm_minutes(),
        60
    );
}

#[test]
fn overlapping_and_touching_windows_merge() {
    let s = schedule(
        "UTC",
        &["Mon 08:00-12:00", "Mon 11:00-13:00", "Mon 13:00-14:00"],
        0,
    );
    assert_eq!(s.awake_intervals().to_vec(), vec![480..840; 1]);
}

// ---- plain weeks ----

#[test]
fn office_hours_in_berlin_before_and_after_spring_forward() {
    let s = schedule(BERLIN, &["Mon-Fri 07:30-20:30"], 30);
    assert_eq!(
        timetable(&s, "2024-03-29T00:00:00Z", "2024-04-02T00:00:00Z"),
        vec![
            row(
                "2024-03-29T06:00:00Z",
                "2024-03-29T07:00:00+01:00",
                WakingUp,
                WakeNodes
            ),
            row(
                "2024-03-29T06:30:00Z",
                "2024-03-29T07:30:00+01:00",
                Awake,
                WakeWorkloads
            ),
            row(
                "2024-03-29T19:30:00Z",
                "2024-03-29T20:30:00+01:00",
                Hibernating,
                SleepWorkloadsThenNodes
            ),
            row(
                "2024-04-01T05:00:00Z",
                "2024-04-01T07:00:00+02:00",
                WakingUp,
                WakeNodes
            ),
            row(
                "2024-04-01T05:30:00Z",
                "2024-04-01T07:30:00+02:00",
                Awake,
                WakeWorkloads
            ),
            row(
                "2024-04-01T18:30:00Z",
                "2024-04-01T20:30:00+02:00",
                Hibernating,
                SleepWorkloadsThenNodes
            ),
        ]
    );
}

#[test]
fn office_hours_in_berlin_across_fall_back() {
    let s = schedule(BERLIN, &["Mon-Fri 07:30-20:30"], 30);
    assert_eq!(
        timetable(&s, "2024-10-25T12:00:00Z", "2024-10-28T12:00:00Z"),
        vec![
            row(
                "2024-10-25T18:30:00Z",
                "2024-10-25T20:30:00+02:00",
                Hibernating,
                SleepWorkloadsThenNodes
            ),
            row(
                "2024-10-28T06:00:00Z",
                "2024-10-28T07:00:00+01:00",
                WakingUp,
                WakeNodes
            ),
            row(
                "2024-10-28T06:30:00Z",
                "2024-10-28T07:30:00+01:00",
                Awake,
                WakeWorkloads
            ),
        ]
    );
}

#[test]
fn office_hours_in_new_york_across_both_switches() {
    let s = schedule(NEW_YORK, &["Mon-Fri 09:00-17:00"], 0);
    assert_eq!(
        timetable(&s, "2024-03-08T15:00:00Z", "2024-03-11T14:00:00Z"),
        vec![
            row(
                "2024-03-08T22:00:00Z",
                "2024-03-08T17:00:00-05:00",
                Hibernating,
                SleepWorkloadsThenNodes
            ),
            row(
                "2024-03-11T13:00:00Z",
                "2024-03-11T09:00:00-04:00",
                Awake,
                WakeNodesThenWorkloads
            ),
        ]
    );
    assert_eq!(
        timetable(&s, "2024-11-01T15:00:00Z", "2024-11-04T15:00:00Z"),
        vec![
            row(
                "2024-11-01T21:00:00Z",
                "2024-11-01T17:00:00-04:00",
                Hibernating,
                SleepWorkloadsThenNodes
            ),
            row(
                "2024-11-04T14:00:00Z",
                "2024-11-04T09:00:00-05:00",
                Awake,
                WakeNodesThenWorkloads
            ),
        ]
    );
}

#[test]
fn an_overnight_weekend_span_wraps_the_week() {
    let s = schedule("UTC", &["Fri 22:00-Mon 06:00"], 0);
    assert_eq!(
        timetable(&s, "2024-01-01T00:00:00Z", "2024-01-08T00:00:00Z"),
        vec![
            row(
                "2024-01-01T06:00:00Z",
                "2024-01-01T06:00:00+00:00",
                Hibernating,
                SleepWorkloadsThenNodes
            ),
            row(
                "2024-01-05T22:00:00Z",
                "2024-01-05T22:00:00+00:00",
                Awake,
                WakeNodesThenWorkloads
            ),
        ]
    );
    assert_eq!(s.state_at(at("2024-01-07T12:00:00Z")), Awake);
}

// ---- pre-warm ----

#[test]
fn prewarm_is_real_time_even_when_the_clock_jumps_in_between() {
    // Wake at 03:00 on the spring-forward Sunday: 60 real minutes earlier the wall clock read 01:00.
    let s = schedule(BERLIN, &["Sun 03:00-10:00"], 60);
    assert_eq!(
        timetable(&s, "2024-03-30T12:00:00Z", "2024-03-31T12:00:00Z"),
        vec![
            row(
                "2024-03-31T00:00:00Z",
                "2024-03-31T01:00:00+01:00",
                WakingUp,
                WakeNodes
            ),
            row(
                "2024-03-31T01:00:00Z",
                "2024-03-31T03:00:00+02:00",
                Awake,
                WakeWorkloads
            ),
            row(
                "2024-03-31T08:00:00Z",
                "2024-03-31T10:00:00+02:00",
                Hibernating,
                SleepWorkloadsThenNodes
            ),
        ]
    );
}

#[test]
fn a_sleep_shorter_than_the_prewarm_keeps_the_nodes_up() {
    let s = schedule("UTC", &["Mon 08:00-12:00", "Mon 12:20-18:00"], 30);
    assert_eq!(
        timetable(&s, "2024-01-01T10:00:00Z", "2024-01-01T13:00:00Z"),
        vec![
            row(
                "2024-01-01T12:00:00Z",
                "2024-01-01T12:00:00+00:00",
                WakingUp,
                SleepWorkloads
            ),
            row(
                "2024-01-01T12:20:00Z",
                "2024-01-01T12:20:00+00:00",
                Awake,
                WakeWorkloads
            ),
        ]
    );
}

#[test]
fn with_prewarm_zero_a_wake_is_one_transition() {
    let s = schedule("UTC", &["Mon 08:00-18:00"], 0);
    let wake = s.next_transition(at("2024-01-01T00:00:00Z")).unwrap();
    assert_eq!(
        (wake.instant, wake.state, wake.action),
        (at("2024-01-01T08:00:00Z"), Awake, WakeNodesThenWorkloads)
    );
    assert_eq!(s.state_at(at("2024-01-01T07:59:00Z")), Hibernating);
}

#[test]
fn always_awake_never_sleeps_nor_prewarms_and_always_asleep_never_wakes() {
    let awake = schedule(BERLIN, &["Mon-Sun 00:00-24:00"], 30);
    let asleep = matrix_schedule(BERLIN, vec![0; 168], 30);
    let all_ones = matrix_schedule(BERLIN, vec![1; 168], 30);
    for instant in [
        "2024-03-31T01:00:00Z",
        "2024-10-27T00:30:00Z",
        "2024-06-01T12:00:00Z",
    ] {
        assert_eq!(awake.state_at(at(instant)), Awake);
        assert_eq!(all_ones.state_at(at(instant)), Awake);
        assert_eq!(asleep.state_at(at(instant)), Hibernating);
    }
    for s in [&awake, &asleep, &all_ones] {
        assert_eq!(s.next_transition(at("2024-01-01T00:00:00Z")), None);
        assert!(
            s.transitions(at("2024-01-01T00:00:00Z"), at("2025-01-01T00:00:00Z"))
                .is_empty()
        );
    }
}

// ---- DST gaps and repeats ----

#[test]
fn a_window_inside_the_spring_forward_gap_never_wakes_that_day() {
    let s = schedule(BERLIN, &["Sun 02:15-02:45"], 30);
    assert!(timetable(&s, "2024-03-30T12:00:00Z", "2024-03-31T12:00:00Z").is_empty());
    assert_eq!(s.state_at(at("2024-03-31T01:00:00Z")), Hibernating);
    // The Sunday before, it is an ordinary window.
    assert_eq!(
        timetable(&s, "2024-03-23T12:00:00Z", "2024-03-24T12:00:00Z").len(),
        3
    );
}

#[test]
fn a_boundary_inside_the_gap_fires_at_the_first_instant_after_it() {
    let s = schedule(BERLIN, &["Sun 01:30-02:30"], 0);
    assert_eq!(
        timetable(&s, "2024-03-30T12:00:00Z", "2024-03-31T12:00:00Z"),
        vec![
            row(
                "2024-03-31T00:30:00Z",
                "2024-03-31T01:30:00+01:00",
                Awake,
                WakeNodesThenWorkloads
            ),
            row(
                "2024-03-31T01:00:00Z",
                "2024-03-31T03:00:00+02:00",
                Hibernating,
                SleepWorkloadsThenNodes
            ),
        ]
    );
}

#[test]
fn a_repeated_time_at_fall_back_fires_once_at_its_first_occurrence() {
    // Berlin 2024-10-27: 02:00-03:00 happens at +02:00 and again at +01:00.
    let s = schedule(BERLIN, &["Sun 02:30-06:00"], 0);
    assert_eq!(
        timetable(&s, "2024-10-26T12:00:00Z", "2024-10-27T12:00:00Z"),
        vec![
            row(
                "2024-10-27T00:30:00Z",
                "2024-10-27T02:30:00+02:00",
                Awake,
                WakeNodesThenWorkloads
            ),
            row(
                "2024-10-27T05:00:00Z",
                "2024-10-27T06:00:00+01:00",
                Hibernating,
                SleepWorkloadsThenNodes
            ),
        ]
    );
}

#[test]
fn after_a_sleep_in_the_repeated_hour_the_second_pass_stays_asleep() {
    let s = schedule(NEW_YORK, &["Sun 00:00-01:30"], 0);
    // 01:30 EDT = 05:30Z; the wall clock reads 01:15 again at 06:15Z (EST), inside the window by the
    // clock, but nothing fires twice.
    assert_eq!(
        timetable(&s, "2024-11-03T04:30:00Z", "2024-11-03T12:00:00Z"),
        vec![row(
            "2024-11-03T05:30:00Z",
            "2024-11-03T01:30:00-04:00",
            Hibernating,
            SleepWorkloadsThenNodes
        )]
    );
    assert_eq!(s.state_at(at("2024-11-03T06:15:00Z")), Hibernating);
}

#[test]
fn lord_howe_half_hour_gap_and_repeat() {
    // 2024-10-06 02:00 (+10:30) jumps to 02:30 (+11:00), at 2024-10-05T15:30Z.
    let gap = schedule(LORD_HOWE, &["Sun 02:10-02:20", "Sun 02:15-03:00"], 0);
    assert_eq!(
        timetable(&gap, "2024-10-05T12:00:00Z", "2024-10-06T12:00:00Z"),
        vec![
            row(
                "2024-10-05T15:30:00Z",
                "2024-10-06T02:30:00+11:00",
                Awake,
                WakeNodesThenWorkloads
            ),
            row(
                "2024-10-05T16:00:00Z",
                "2024-10-06T03:00:00+11:00",
                Hibernating,
                SleepWorkloadsThenNodes
            ),
        ]
    );
    // 2024-04-07 02:00 (+11:00) falls back to 01:30 (+10:30): 01:30-02:00 happens twice.
    let repeat = schedule(LORD_HOWE, &["Sun 01:45-02:15"], 15);
    assert_eq!(
        timetable(&repeat, "2024-04-06T12:00:00Z", "2024-04-07T12:00:00Z"),
        vec![
            row(
                "2024-04-06T14:30:00Z",
                "2024-04-07T01:30:00+11:00",
                WakingUp,
                WakeNodes
            ),
            row(
                "2024-04-06T14:45:00Z",
                "2024-04-07T01:45:00+11:00",
                Awake,
                WakeWorkloads
            ),
            row(
                "2024-04-06T15:45:00Z",
                "2024-04-07T02:15:00+10:30",
                Hibernating,
                SleepWorkloadsThenNodes
            ),
        ]
    );
}

#[test]
fn lord_howe_office_hours_across_the_half_hour_switches() {
    let s = schedule(LORD_HOWE, &["Mon-Fri 08:00-18:00"], 30);
    assert_eq!(
        timetable(&s, "2024-04-05T00:00:00Z", "2024-04-08T00:00:00Z"),
        vec![
            row(
                "2024-04-05T07:00:00Z",
                "2024-04-05T18:00:00+11:00",
                Hibernating,
                SleepWorkloadsThenNodes
            ),
            row(
                "2024-04-07T21:00:00Z",
                "2024-04-08T07:30:00+10:30",
                WakingUp,
                WakeNodes
            ),
            row(
                "2024-04-07T21:30:00Z",
                "2024-04-08T08:00:00+10:30",
                Awake,
                WakeWorkloads
            ),
        ]
    );
}

// ---- next_transition ----

#[test]
fn next_transition_is_strictly_after_the_instant() {
    let s = schedule(BERLIN, &["Mon-Fri 07:30-20:30"], 30);
    let first = s.next_transition(at("2024-03-29T00:00:00Z")).unwrap();
    assert_eq!(first.instant, at("2024-03-29T06:00:00Z"));
    let second = s.next_transition(first.instant).unwrap();
    assert_eq!(second.instant, at("2024-03-29T06:30:00Z"));
    // From Friday evening the next one is Monday's pre-warm, three days later.
    let monday = s.next_transition(at("2024-03-29T19:30:00Z")).unwrap();
    assert_eq!(monday.local.to_rfc3339(), "2024-04-01T07:00:00+02:00");
}

#[test]
fn next_transition_skips_weeks_whose_only_window_falls_into_a_gap() {
    let s = schedule(BERLIN, &["Sun 02:15-02:45"], 0);
    let next = s.next_transition(at("2024-03-30T00:00:00Z")).unwrap();
    assert_eq!(next.local.to_rfc3339(), "2024-04-07T02:15:00+02:00");
}

// ---- the reference: brute force, minute by minute ----

/// Minute-by-minute reference for the UTC minutes `start..start + minutes`, built only from the tz
/// database's UTC offsets and the awake set, without the engine's boundary mapping:
/// - the state of a minute is whether its local wall-clock minute is awake;
/// - a wall-clock minute the clock already showed earlier (the second pass through a repeated hour)
///   fires nothing again, so it keeps the previous minute's state; a skipped local time needs no rule:
///   the first minute after the gap simply reads the wall clock after it;
/// - a minute is `WakingUp` when it is asleep and an awake minute follows within `prewarm` minutes.
fn brute_force(
    tz: Tz,
    awake: &dyn Fn(u32) -> bool,
    prewarm: i64,
    start: DateTime<Utc>,
    minutes: i64,
) -> Vec<State> {
    // A day of warm-up so a start inside a repeated hour is recognised; prewarm of look-ahead.
    let warm_up = 24 * 60;
    let total = warm_up + minutes + prewarm + 1;
    let mut base = Vec::with_capacity(usize::try_from(total).unwrap());
    let mut latest_local = None;
    for i in 0..total {
        let instant = start + TimeDelta::minutes(i - warm_up);
        let offset = i64::from(
            tz.offset_from_utc_datetime(&instant.naive_utc())
                .fix()
                .local_minus_utc(),
        );
        let local = instant.timestamp() + offset;
        let repeated = latest_local.is_some_and(|latest| local <= latest);
        latest_local = latest_local.max(Some(local));
        let awake_now = match base.last() {
            Some(&previous) if repeated => previous,
            _ => {
                // 1970-01-01 was a Thursday: day 3 of a Monday-first week.
                let minute_of_week =
                    (local.div_euclid(60) + 3 * 24 * 60).rem_euclid(i64::from(MINUTES_PER_WEEK));
                awake(u32::try_from(minute_of_week).unwrap())
            }
        };
        base.push(awake_now);
    }
    let mut states = vec![Hibernating; base.len()];
    let mut next_awake: Option<usize> = None;
    for i in (0..base.len()).rev() {
        states[i] = if base[i] {
            next_awake = Some(i);
            Awake
        } else if next_awake.is_some_and(|j| (j - i) as i64 <= prewarm) {
            WakingUp
        } else {
            Hibernating
        };
    }
    let first = usize::try_from(warm_up).unwrap();
    states[first..first + usize::try_from(minutes).unwrap()].to_vec()
}

/// The engine's state at every minute of `start..start + minutes`, walking its transition list once,
/// after checking the list's own invariants.
fn engine_states(schedule: &CompiledSchedule, start: DateTime<Utc>, minutes: i64) -> Vec<State> {
    let end = start + TimeDelta::minutes(minutes);
    let transitions = schedule.transitions(start, end);
    check_transitions(schedule, start, &transitions);
    let mut state = schedule.state_at(start - TimeDelta::seconds(1));
    let mut next = transitions.iter().peekable();
    (0..minutes)
        .map(|i| {
            let instant = start + TimeDelta::minutes(i);
            while let Some(t) = next.next_if(|t| t.instant <= instant) {
                state = t.state;
            }
            state
        })
        .collect()
}

/// Transitions are strictly increasing, each starts from the state the previous one set, never
/// repeats a state, carries the action for its pair of states, and agrees with `state_at` on both
/// sides of its instant and with `next_transition` just before it.
fn check_transitions(
    schedule: &CompiledSchedule,
    start: DateTime<Utc>,
    transitions: &[Transition],
) {
    let mut previous_state = schedule.state_at(start - TimeDelta::seconds(1));
    let mut previous_instant = start - TimeDelta::seconds(1);
    for t in transitions {
        assert!(t.instant > previous_instant, "not increasing: {t:?}");
        assert_eq!(t.instant.second(), 0, "off the minute grid: {t:?}");
        assert_eq!(t.previous, previous_state, "{t:?}");
        assert_ne!(t.previous, t.state, "{t:?}");
        assert_eq!(t.action, Action::between(t.previous, t.state));
        assert_eq!(
            t.local,
            t.instant
                .with_timezone(&schedule.time_zone())
                .fixed_offset()
        );
        assert_eq!(schedule.state_at(t.instant), t.state, "{t:?}");
        assert_eq!(
            schedule.state_at(t.instant - TimeDelta::seconds(1)),
            t.previous,
            "{t:?}"
        );
        assert_eq!(
            schedule
                .next_transition(t.instant - TimeDelta::seconds(1))
                .as_ref(),
            Some(t)
        );
        if schedule.prewarm.is_zero() {
            assert_ne!(t.state, WakingUp, "{t:?}");
        } else {
            assert_ne!(
                (t.previous, t.state),
                (Hibernating, Awake),
                "wake without pre-warm: {t:?}"
            );
        }
        assert_ne!((t.previous, t.state), (WakingUp, Hibernating), "{t:?}");
        previous_state = t.state;
        previous_instant = t.instant;
    }
}

fn assert_matches_brute_force(
    schedule: &CompiledSchedule,
    awake: &dyn Fn(u32) -> bool,
    start: DateTime<Utc>,
    minutes: i64,
) {
    let prewarm = schedule.prewarm.num_minutes();
    let expected = brute_force(schedule.time_zone(), awake, prewarm, start, minutes);
    let actual = engine_states(schedule, start, minutes);
    if let Some(i) = (0..expected.len()).find(|&i| expected[i] != actual[i]) {
        let instant = start + TimeDelta::minutes(i as i64);
        panic!(
            "{} at {instant} ({}): engine says {}, brute force says {}",
            schedule.time_zone(),
            instant.with_timezone(&schedule.time_zone()),
            actual[i],
            expected[i]
        );
    }
}

fn awake_lookup(schedule: &CompiledSchedule) -> Vec<bool> {
    let mut awake = vec![false; MINUTES_PER_WEEK as usize];
    for interval in schedule.awake_intervals() {
        for minute in interval.clone() {
            awake[minute as usize] = true;
        }
    }
    awake
}

/// Windows with boundaries in and around the early-Sunday DST switches of all three zones (Berlin
/// 02:00-03:00, New York 01:00-03:00, Lord Howe 01:30-02:30), over midnight, and across the week end.
const DST_HEAVY_WINDOWS: [&str; 7] = [
    "Mon-Fri 07:30-20:30",
    "Sat 23:50-Sun 01:15",
    "Sun 01:40-01:50",
    "Sun 02:10-02:20",
    "Sun 02:40-03:30",
    "Wed-Thu 22:00-01:00",
    "Sun 23:00-Mon 00:30",
];

#[test]
fn a_full_year_matches_the_brute_force_in_three_zones() {
    let start = at("2024-01-01T00:00:00Z");
    let minutes = 366 * 24 * 60;
    let mut matrix = vec![0u8; 168];
    for (hour, cell) in matrix.iter_mut().enumerate() {
        // Office hours plus scattered early-Sunday hours, with single-hour sleeps shorter than a prewarm.
        let (day, hour_of_day) = (hour / 24, hour % 24);
        *cell = u8::from(
            (day < 5 && (8..18).contains(&hour_of_day) && hour_of_day != 12)
                || (day == 6 && hour_of_day % 2 == 1),
        );
    }
    for zone in [BERLIN, NEW_YORK, LORD_HOWE] {
        for prewarm in [0, 45] {
            let windows = schedule(zone, &DST_HEAVY_WINDOWS, prewarm);
            let lookup = awake_lookup(&windows);
            assert_matches_brute_force(&windows, &|minute| lookup[minute as usize], start, minutes);
        }
        let hourly = matrix_schedule(zone, matrix.clone(), 60);
        assert_matches_brute_force(
            &hourly,
            &|minute| matrix[(minute / 60) as usize] == 1,
            start,
            minutes,
        );
    }
}

// ---- properties ----

const ZONES: [&str; 8] = [
    BERLIN,
    NEW_YORK,
    LORD_HOWE,
    "UTC",
    "America/St_Johns",
    "Asia/Kolkata",
    "Pacific/Apia",
    "Europe/London",
];

/// Times of day that sit on, inside and around DST switches, mixed with arbitrary minutes.
fn time_of_day() -> impl Strategy<Value = u32> {
    prop_oneof![
        prop::sample::select(vec![
            0, 60, 90, 105, 120, 130, 135, 150, 179, 180, 210, 1440
        ]),
        0u32..=1440,
    ]
}

fn hhmm(minutes: u32) -> String {
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

const DAY_NAMES: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// A window in either form of the grammar (some are invalid, e.g. equal start and end; those are
/// skipped by the property).
fn window_text() -> impl Strategy<Value = String> {
    let weighted_day = prop_oneof![3 => Just(6usize), 1 => 0usize..7];
    prop_oneof![
        (
            weighted_day.clone(),
            0usize..7,
            time_of_day(),
            time_of_day()
        )
            .prop_map(|(first, span, start, end)| {
                format!(
                    "{}-{} {}-{}",
                    DAY_NAMES[first],
                    DAY_NAMES[(first + span) % 7],
                    hhmm(start),
                    hhmm(end)
                )
            }),
        (weighted_day, time_of_day(), 0usize..7, time_of_day()).prop_map(
            |(day, start, end_day, end)| {
                format!(
                    "{} {}-{} {}",
                    DAY_NAMES[day],
                    hhmm(start),
                    DAY_NAMES[end_day],
                    hhmm(end)
                )
            }
        ),
    ]
}

/// A start a few days before a typical DST switch (March, April, October or November) of some year.
fn start_instant() -> impl Strategy<Value = DateTime<Utc>> {
    (
        2010i32..2031,
        prop::sample::select(vec![3u32, 4, 9, 10, 11]),
        1u32..29,
        0i64..1440,
    )
        .prop_map(|(year, month, day, minute)| {
            NaiveDate::from_ymd_opt(year, month, day)
                .unwrap()
                .and_time(NaiveTime::MIN)
                .and_utc()
                + TimeDelta::minutes(minute)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn every_instant_has_one_state_agreeing_with_the_transitions_and_the_brute_force(
        zone in prop::sample::select(ZONES.to_vec()),
        windows in prop::collection::vec(window_text(), 1..4),
        prewarm in prop_oneof![Just(0u32), Just(60u32), 0u32..=60],
        start in start_instant(),
    ) {
        let spec = ScheduleSpec {
            time_zone: zone.into(),
            weekly_matrix: None,
            awake: Some(windows),
            prewarm_minutes: prewarm,
        };
        let compiled = compile(&spec);
        prop_assume!(compiled.is_ok());
        let Ok(schedule) = compiled else { unreachable!() };
        let lookup = awake_lookup(&schedule);
        assert_matches_brute_force(&schedule, &|minute| lookup[minute as usize], start, 10 * 24 * 60);
    }

    #[test]
    fn hourly_matrices_agree_with_the_brute_force(
        zone in prop::sample::select(ZONES.to_vec()),
        matrix in prop::collection::vec(prop_oneof![3 => Just(0u8), 1 => Just(1u8)], 168),
        prewarm in 0u32..=60,
        start in start_instant(),
    ) {
        let schedule = matrix_schedule(zone, matrix.clone(), prewarm);
        assert_matches_brute_force(&schedule, &|minute| matrix[(minute / 60) as usize] == 1, start, 10 * 24 * 60);
    }

    #[test]
    fn state_at_any_instant_is_set_by_the_last_transition_at_or_before_it(
        zone in prop::sample::select(ZONES.to_vec()),
        windows in prop::collection::vec(window_text(), 1..4),
        prewarm in 0u32..=60,
        start in start_instant(),
        probes in prop::collection::vec(0i64..(10 * 24 * 3600), 20),
    ) {
        let compiled = compile(&spec(zone, &windows.iter().map(String::as_str).collect::<Vec<_>>(), prewarm));
        prop_assume!(compiled.is_ok());
        let Ok(schedule) = compiled else { unreachable!() };
        let before = schedule.state_at(start - TimeDelta::seconds(1));
        let transitions = schedule.transitions(start, start + TimeDelta::days(10));
        for probe in probes {
            let instant = start + TimeDelta::seconds(probe);
            let expected = transitions.iter().take_while(|t| t.instant <= instant).last().map_or(before, |t| t.state);
            prop_assert_eq!(schedule.state_at(instant), expected, "at {}", instant);
            let next = transitions.iter().find(|t| t.instant > instant);
            if let Some(next) = next {
                let found = schedule.next_transition(instant);
                prop_assert_eq!(found.as_ref(), Some(next));
            }
        }
    }
}

#[test]
fn fraction_in_a_state_adds_up_to_the_awake_windows_and_to_one() {
    // Awake Mon-Fri 07:30-20:30 Berlin (65 h a week), pre-warm 30 min (2.5 h WakingUp a week).
    let schedule = compile(&ScheduleSpec {
        time_zone: "Europe/Berlin".into(),
        weekly_matrix: None,
        awake: Some(vec!["Mon-Fri 07:30-20:30".into()]),
        prewarm_minutes: 30,
    })
    .expect("compiles");
    // A week without a DST change, starting on a Monday at local midnight.
    let from = chrono::DateTime::parse_from_rfc3339("2026-11-23T00:00:00+01:00")
        .expect("instant")
        .with_timezone(&chrono::Utc);
    let to = from + chrono::TimeDelta::weeks(1);
    let week = 168.0;
    let awake = schedule.fraction_in(State::Awake, from, to) * week;
    let waking = schedule.fraction_in(State::WakingUp, from, to) * week;
    let asleep = schedule.fraction_in(State::Hibernating, from, to) * week;
    assert!((awake - 65.0).abs() < 1e-9, "{awake}");
    assert!((waking - 2.5).abs() < 1e-9, "{waking}");
    assert!((asleep - 100.5).abs() < 1e-9, "{asleep}");
    assert_eq!(schedule.fraction_in(State::Awake, to, from), 0.0);
}
