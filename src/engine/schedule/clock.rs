//! Local wall-clock time to UTC under the schedule's DST rules: a local time that does not exist (a
//! spring-forward gap) fires at the first instant after the gap; a repeated local time (fall back)
//! fires at its first occurrence. Both rules keep the mapping monotonic (a later local time never maps
//! to an earlier instant), which is what lets the timeline keep boundaries in local order.

use chrono::{DateTime, NaiveDateTime, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;

/// The longest gap searched for. tzdata's longest is Pacific/Apia skipping 2011-12-30 (24 hours).
const LONGEST_GAP_HOURS: i64 = 48;

/// The instant a local wall-clock boundary fires at.
pub(super) fn fire_instant(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    match tz.from_local_datetime(&local).earliest() {
        Some(instant) => instant.with_timezone(&Utc),
        None => after_gap(tz, local),
    }
}

/// The first instant after the gap containing `local`: the instant whose wall-clock time is the first
/// existing local time after `local`. tzdata only exposes local-to-instant lookups, so that local time
/// is found by bisection (to the second) between `local` and an hour-stepped probe that exists.
fn after_gap(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    let exists = |seconds: i64| {
        tz.from_local_datetime(&(local + TimeDelta::seconds(seconds)))
            .earliest()
    };
    // Seconds after `local`: `missing` does not exist, `present` does.
    let mut missing = 0;
    let mut present = None;
    for hours in 1..=LONGEST_GAP_HOURS {
        if let Some(instant) = exists(hours * 3600) {
            present = Some((hours * 3600, instant));
            break;
        }
        missing = hours * 3600;
    }
    let Some((mut present, mut instant)) = present else {
        // No tz database has a gap this long; reading the local time as UTC keeps the timeline going.
        return local.and_utc();
    };
    while present - missing > 1 {
        let middle = missing + (present - missing) / 2;
        match exists(middle) {
            Some(found) => (present, instant) = (middle, found),
            None => missing = middle,
        }
    }
    instant.with_timezone(&Utc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn local(y: i32, m: u32, d: u32, h: u32, min: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(y, m, d)
            .unwrap()
            .and_hms_opt(h, min, 0)
            .unwrap()
    }

    fn utc(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
        local(y, m, d, h, min).and_utc()
    }

    #[test]
    fn an_ordinary_local_time_maps_by_its_offset() {
        assert_eq!(
            fire_instant(Tz::Europe__Berlin, local(2024, 7, 1, 9, 0)),
            utc(2024, 7, 1, 7, 0)
        );
    }

    #[test]
    fn a_time_in_the_spring_forward_gap_fires_when_the_gap_ends() {
        // Berlin 2024-03-31: 02:00 CET jumps to 03:00 CEST at 01:00 UTC.
        for minute in [0, 1, 30, 59] {
            assert_eq!(
                fire_instant(Tz::Europe__Berlin, local(2024, 3, 31, 2, minute)),
                utc(2024, 3, 31, 1, 0)
            );
        }
        assert_eq!(
            fire_instant(Tz::Europe__Berlin, local(2024, 3, 31, 3, 0)),
            utc(2024, 3, 31, 1, 0)
        );
        // Lord Howe 2024-10-06: 02:00 (+10:30) jumps to 02:30 (+11:00) at 15:30 UTC the day before.
        assert_eq!(
            fire_instant(Tz::Australia__Lord_Howe, local(2024, 10, 6, 2, 10)),
            utc(2024, 10, 5, 15, 30)
        );
        // Apia skipped the whole of 2011-12-30.
        assert_eq!(
            fire_instant(Tz::Pacific__Apia, local(2011, 12, 30, 12, 0)),
            utc(2011, 12, 30, 10, 0)
        );
    }

    #[test]
    fn a_repeated_time_fires_at_its_first_occurrence() {
        // New York 2024-11-03: 01:00-02:00 happens at -04:00 and again at -05:00.
        assert_eq!(
            fire_instant(Tz::America__New_York, local(2024, 11, 3, 1, 30)),
            utc(2024, 11, 3, 5, 30)
        );
        // Lord Howe 2024-04-07: 01:30-02:00 happens at +11:00 and again at +10:30.
        assert_eq!(
            fire_instant(Tz::Australia__Lord_Howe, local(2024, 4, 7, 1, 45)),
            utc(2024, 4, 6, 14, 45)
        );
    }
}
