//! The `awake` window grammar (kube-downscaler's, plus overnight spans across days):
//!
//! ```text
//! window   = days SP time "-" time        ; "Mon-Fri 07:30-20:30", "Sun 02:30-06:00"
//!          | day SP time "-" day SP time  ; "Fri 22:00-Mon 06:00"
//! days     = day [ "-" day ]              ; an inclusive range that may wrap: "Fri-Mon"
//! day      = "Mon" | "Tue" | "Wed" | "Thu" | "Fri" | "Sat" | "Sun"   ; any letter case
//! time     = H[H] ":" MM                  ; 00:00 .. 24:00, 24:00 = end of the day
//! ```
//!
//! A hand-written parser rather than a regex: the crate has no regex dependency, and a cursor can
//! say precisely which part of a window is wrong. Spaces around `-` are tolerated.

use super::week::{MINUTES_PER_DAY, MINUTES_PER_WEEK, Span};

/// The grammar, quoted in every parse error so the user can fix the window without the docs.
pub(super) const GRAMMAR: &str = "expected \"DAY[-DAY] HH:MM-HH:MM\" (e.g. \"Mon-Fri 07:30-20:30\", \
\"Sat-Sun 00:00-24:00\", overnight \"Mon-Fri 22:00-06:00\") or \"DAY HH:MM-DAY HH:MM\" (e.g. \
\"Fri 22:00-Mon 06:00\"); days Mon Tue Wed Thu Fri Sat Sun, the end is exclusive, 24:00 is the end of the day";

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Parse one awake window into the local spans it covers (one per day for a day range).
/// The error is the reason, without the window or the grammar (the caller adds both).
pub(super) fn parse_window(text: &str) -> Result<Vec<Span>, String> {
    let mut cursor = Cursor { rest: text.trim() };
    if cursor.rest.is_empty() {
        return Err("the window is empty".into());
    }
    let first_day = cursor.day()?;
    cursor.skip_spaces();
    let last_day = if cursor.eat('-') {
        cursor.skip_spaces();
        Some(cursor.day()?)
    } else {
        None
    };
    cursor.skip_spaces();
    let start = cursor.time()?;
    if start == MINUTES_PER_DAY {
        return Err("24:00 can only end a window; start at 00:00 of the next day".into());
    }
    cursor.skip_spaces();
    if !cursor.eat('-') {
        return Err(format!(
            "expected \"-\" after the start time, found {}",
            cursor.describe_rest()
        ));
    }
    cursor.skip_spaces();
    let spans = if cursor.at_letter() {
        if last_day.is_some() {
            return Err("a window that ends on another day takes one start day, e.g. \"Fri 22:00-Mon 06:00\"".into());
        }
        let end_day = cursor.day()?;
        cursor.skip_spaces();
        let end = cursor.time()?;
        cursor.finish()?;
        vec![across_days(first_day, start, end_day, end)?]
    } else {
        let end = cursor.time()?;
        cursor.finish()?;
        daily(first_day, last_day.unwrap_or(first_day), start, end)?
    };
    Ok(spans)
}

/// `start..end` on each day of `first..=last` (wrapping the week); an end before the start crosses
/// midnight into the next day.
fn daily(first: u32, last: u32, start: u32, end: u32) -> Result<Vec<Span>, String> {
    if start == end {
        return Err("the start and end times are equal; a whole day is 00:00-24:00".into());
    }
    let day_count = (last + 7 - first) % 7 + 1;
    let length = if end > start {
        end - start
    } else {
        end + MINUTES_PER_DAY - start
    };
    Ok((0..day_count)
        .map(|offset| {
            let day_start = (first + offset) % 7 * MINUTES_PER_DAY + start;
            Span {
                start: day_start,
                end: day_start + length,
            }
        })
        .collect())
}

/// From a day and time to a day and time, wrapping the week when the end is not after the start.
fn across_days(start_day: u32, start: u32, end_day: u32, end: u32) -> Result<Span, String> {
    let from = start_day * MINUTES_PER_DAY + start;
    let mut to = end_day * MINUTES_PER_DAY + end;
    if to == from {
        return Err("the start and the end are the same time of the week".into());
    }
    if to < from {
        to += MINUTES_PER_WEEK;
    }
    Ok(Span {
        start: from,
        end: to,
    })
}

struct Cursor<'a> {
    rest: &'a str,
}

impl Cursor<'_> {
    fn skip_spaces(&mut self) {
        self.rest = self.rest.trim_start();
    }

    fn eat(&mut self, expected: char) -> bool {
        match self.rest.strip_prefix(expected) {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        }
    }

    fn at_letter(&self) -> bool {
        self.rest.starts_with(|c: char| c.is_ascii_alphabetic())
    }

    fn take_while(&mut self, keep: impl Fn(char) -> bool) -> &str {
        let len = self
            .rest
            .find(|c: char| !keep(c))
            .unwrap_or(self.rest.len());
        let (taken, rest) = self.rest.split_at(len);
        self.rest = rest;
        taken
    }

    fn describe_rest(&self) -> String {
        if self.rest.is_empty() {
            "the end of the window".into()
        } else {
            format!("\"{}\"", self.rest)
        }
    }

    /// A day name, as 0 = Monday .. 6 = Sunday.
    fn day(&mut self) -> Result<u32, String> {
        let found = self.describe_rest();
        let word = self
            .take_while(|c| c.is_ascii_alphabetic())
            .to_ascii_lowercase();
        if word.is_empty() {
            return Err(format!("expected a day (Mon..Sun), found {found}"));
        }
        (0u32..)
            .zip(DAYS)
            .find(|(_, day)| *day == word)
            .map(|(index, _)| index)
            .ok_or_else(|| {
                format!("\"{word}\" is not a day; use Mon, Tue, Wed, Thu, Fri, Sat or Sun")
            })
    }

    /// A time of day `H[H]:MM` as minutes after midnight, 0..=1440.
    fn time(&mut self) -> Result<u32, String> {
        let found = self.describe_rest();
        let bad = || format!("expected a time HH:MM, found {found}");
        let hours = self.take_while(|c| c.is_ascii_digit());
        if hours.is_empty() || hours.len() > 2 {
            return Err(bad());
        }
        let hours: u32 = hours.parse().map_err(|_| bad())?;
        if !self.eat(':') {
            return Err(bad());
        }
        let minutes = self.take_while(|c| c.is_ascii_digit());
        if minutes.len() != 2 {
            return Err(bad());
        }
        let minutes: u32 = minutes.parse().map_err(|_| bad())?;
        if minutes > 59 || hours > 24 || (hours == 24 && minutes > 0) {
            return Err(format!(
                "{hours:02}:{minutes:02} is not a time of day (00:00 to 24:00)"
            ));
        }
        Ok(hours * 60 + minutes)
    }

    fn finish(&mut self) -> Result<(), String> {
        self.skip_spaces();
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "unexpected \"{}\" after the window (a time zone per window is not supported; set timeZone)",
                self.rest
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MON: u32 = 0;
    const FRI: u32 = 4 * MINUTES_PER_DAY;
    const SAT: u32 = 5 * MINUTES_PER_DAY;
    const SUN: u32 = 6 * MINUTES_PER_DAY;

    fn span(start: u32, end: u32) -> Span {
        Span { start, end }
    }

    fn hm(hours: u32, minutes: u32) -> u32 {
        hours * 60 + minutes
    }

    #[test]
    fn a_day_range_gives_one_span_per_day() {
        let spans = parse_window("Mon-Fri 07:30-20:30").unwrap();
        let expected: Vec<Span> = (0..5)
            .map(|day| {
                span(
                    day * MINUTES_PER_DAY + hm(7, 30),
                    day * MINUTES_PER_DAY + hm(20, 30),
                )
            })
            .collect();
        assert_eq!(spans, expected);
    }

    #[test]
    fn a_single_day_means_that_day_to_itself() {
        assert_eq!(
            parse_window("Sun 02:30-06:00").unwrap(),
            parse_window("Sun-Sun 02:30-06:00").unwrap()
        );
        assert_eq!(
            parse_window("Sun-Sun 15:30-16:00").unwrap(),
            vec![span(SUN + hm(15, 30), SUN + hm(16, 0))]
        );
    }

    #[test]
    fn twenty_four_hundred_is_the_end_of_the_day() {
        assert_eq!(
            parse_window("Sat-Sun 00:00-24:00").unwrap(),
            vec![
                span(SAT, SAT + MINUTES_PER_DAY),
                span(SUN, SUN + MINUTES_PER_DAY)
            ]
        );
    }

    #[test]
    fn day_ranges_wrap_around_the_week() {
        let days: Vec<u32> = parse_window("Fri-Mon 08:00-18:00")
            .unwrap()
            .iter()
            .map(|s| s.start / MINUTES_PER_DAY)
            .collect();
        assert_eq!(days, vec![4, 5, 6, 0]);
    }

    #[test]
    fn an_end_before_the_start_crosses_midnight() {
        let spans = parse_window("Mon-Fri 22:00-06:00").unwrap();
        assert_eq!(spans.len(), 5);
        assert_eq!(spans[0], span(MON + hm(22, 0), MINUTES_PER_DAY + hm(6, 0)));
        assert_eq!(spans[4], span(FRI + hm(22, 0), SAT + hm(6, 0)));
    }

    #[test]
    fn an_overnight_span_runs_from_day_and_time_to_day_and_time_wrapping_the_week() {
        assert_eq!(
            parse_window("Fri 22:00-Mon 06:00").unwrap(),
            vec![span(FRI + hm(22, 0), MINUTES_PER_WEEK + hm(6, 0))]
        );
        assert_eq!(
            parse_window("Mon 00:00-Sun 24:00").unwrap(),
            vec![span(0, MINUTES_PER_WEEK)]
        );
        assert_eq!(
            parse_window("Sat 10:00-Sun 24:00").unwrap(),
            vec![span(SAT + hm(10, 0), MINUTES_PER_WEEK)]
        );
    }

    #[test]
    fn day_names_ignore_case_and_spaces_around_dashes_are_tolerated() {
        assert_eq!(
            parse_window("mon - FRI  07:30 - 20:30").unwrap(),
            parse_window("Mon-Fri 07:30-20:30").unwrap()
        );
        assert_eq!(
            parse_window(" Fri 22:00 - Mon 06:00 ").unwrap(),
            parse_window("Fri 22:00-Mon 06:00").unwrap()
        );
        assert_eq!(
            parse_window("Mon 7:05-9:00").unwrap(),
            vec![span(hm(7, 5), hm(9, 0))]
        );
    }

    fn reason(window: &str) -> String {
        parse_window(window).unwrap_err()
    }

    #[test]
    fn malformed_windows_say_what_is_wrong() {
        assert!(reason("").contains("empty"));
        assert!(reason("Mon-Fry 07:30-20:30").contains("\"fry\" is not a day"));
        assert!(reason("07:30-20:30").contains("expected a day"));
        assert!(reason("Mon-Fri 7:3-20:30").contains("expected a time HH:MM"));
        assert!(reason("Mon-Fri 07:30").contains("expected \"-\""));
        assert!(reason("Mon-Fri 07:30-25:00").contains("25:00 is not a time of day"));
        assert!(reason("Mon-Fri 07:60-20:00").contains("07:60 is not a time of day"));
        assert!(reason("Mon-Fri 24:00-06:00").contains("24:00 can only end"));
        assert!(reason("Mon 08:00-08:00").contains("equal"));
        assert!(reason("Mon 08:00-Mon 08:00").contains("same time"));
        assert!(reason("Mon-Tue 22:00-Wed 06:00").contains("one start day"));
        assert!(reason("Mon-Fri 07:30-20:30 Europe/Berlin").contains("set timeZone"));
    }
}
