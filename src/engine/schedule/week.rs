//! The weekly pattern in local wall-clock minutes: merged awake intervals and the wake/sleep boundaries
//! they imply. Boundaries are computed once at compile time so that building a timeline is a loop
//! over a handful of numbers per week.

use std::ops::Range;

/// Minutes in a day.
pub(super) const MINUTES_PER_DAY: u32 = 24 * 60;
/// Minutes in a week; minute-of-week 0 is Monday 00:00 local time.
pub(super) const MINUTES_PER_WEEK: u32 = 7 * MINUTES_PER_DAY;

/// An awake span in local minutes-of-week, half-open. `end` may pass the end of the week (up to one
/// week after `start`) when the span wraps into the next Monday.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Span {
    /// First awake minute, `0..MINUTES_PER_WEEK`.
    pub start: u32,
    /// First minute after the span, `start < end <= start + MINUTES_PER_WEEK`.
    pub end: u32,
}

/// A local wall-clock minute-of-week at which the schedule changes state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Boundary {
    /// Minute of the week, `0..MINUTES_PER_WEEK`.
    pub minute: u32,
    /// `true` when the schedule wakes here, `false` when it goes to sleep.
    pub wake: bool,
}

/// A week of awake intervals, merged, with the boundaries between them in ascending order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct WeekPattern {
    awake: Vec<Range<u32>>,
    boundaries: Vec<Boundary>,
}

impl WeekPattern {
    /// The pattern of a set of awake spans; spans that touch or overlap merge, including across the
    /// end of the week (Sunday 24:00 touches Monday 00:00).
    pub(super) fn from_spans(spans: impl IntoIterator<Item = Span>) -> Self {
        let mut pieces: Vec<Range<u32>> = Vec::new();
        for span in spans {
            if span.end <= MINUTES_PER_WEEK {
                pieces.push(span.start..span.end);
            } else {
                pieces.push(span.start..MINUTES_PER_WEEK);
                pieces.push(0..(span.end - MINUTES_PER_WEEK).min(MINUTES_PER_WEEK));
            }
        }
        pieces.retain(|piece| !piece.is_empty());
        pieces.sort_by_key(|piece| piece.start);
        let mut awake: Vec<Range<u32>> = Vec::with_capacity(pieces.len());
        for piece in pieces {
            match awake.last_mut() {
                Some(last) if piece.start <= last.end => last.end = last.end.max(piece.end),
                _ => awake.push(piece),
            }
        }
        let boundaries = boundaries_of(&awake);
        WeekPattern { awake, boundaries }
    }

    /// The pattern of a 168-cell hourly matrix (already validated: 168 cells of 0 or 1).
    pub(super) fn from_matrix(cells: &[u8]) -> Self {
        let hours = (0u32..).zip(cells).filter(|(_, cell)| **cell == 1);
        Self::from_spans(hours.map(|(hour, _)| Span {
            start: hour * 60,
            end: hour * 60 + 60,
        }))
    }

    /// Merged awake intervals in local minutes-of-week, ascending, neither touching nor overlapping.
    pub(super) fn awake(&self) -> &[Range<u32>] {
        &self.awake
    }

    /// Wake and sleep boundaries in ascending minute order; they alternate around the week. Empty for a
    /// schedule that is always awake or always asleep.
    pub(super) fn boundaries(&self) -> &[Boundary] {
        &self.boundaries
    }

    /// Whether the whole week is awake.
    pub(super) fn always_awake(&self) -> bool {
        self.awake.first() == Some(&(0..MINUTES_PER_WEEK))
    }
}

/// Boundaries of merged intervals. An interval that starts at Monday 00:00 while another ends at
/// Sunday 24:00 is one interval across the week's end, so neither edge is a boundary.
fn boundaries_of(awake: &[Range<u32>]) -> Vec<Boundary> {
    let (Some(first), Some(last)) = (awake.first(), awake.last()) else {
        return Vec::new();
    };
    let wraps = first.start == 0 && last.end == MINUTES_PER_WEEK;
    let mut boundaries = Vec::with_capacity(awake.len() * 2);
    for interval in awake {
        if !(wraps && interval.start == 0) {
            boundaries.push(Boundary {
                minute: interval.start,
                wake: true,
            });
        }
        if !(wraps && interval.end == MINUTES_PER_WEEK) {
            boundaries.push(Boundary {
                minute: interval.end % MINUTES_PER_WEEK,
                wake: false,
            });
        }
    }
    boundaries.sort_by_key(|boundary| boundary.minute);
    boundaries
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(start: u32, end: u32) -> Span {
        Span { start, end }
    }

    #[test]
    fn touching_and_overlapping_spans_merge() {
        let week = WeekPattern::from_spans([
            span(100, 200),
            span(200, 300),
            span(250, 400),
            span(500, 600),
        ]);
        assert_eq!(week.awake(), &[100..400, 500..600]);
    }

    #[test]
    fn a_span_past_sunday_wraps_into_monday_and_merges_with_it() {
        let week = WeekPattern::from_spans([
            span(MINUTES_PER_WEEK - 60, MINUTES_PER_WEEK + 60),
            span(60, 120),
        ]);
        assert_eq!(
            week.awake(),
            &[0..120, MINUTES_PER_WEEK - 60..MINUTES_PER_WEEK]
        );
        assert_eq!(
            week.boundaries(),
            &[
                Boundary {
                    minute: 120,
                    wake: false
                },
                Boundary {
                    minute: MINUTES_PER_WEEK - 60,
                    wake: true
                },
            ]
        );
    }

    #[test]
    fn an_interval_ending_sunday_midnight_sleeps_at_monday_zero() {
        let week = WeekPattern::from_spans([span(600, MINUTES_PER_WEEK)]);
        assert_eq!(
            week.boundaries(),
            &[
                Boundary {
                    minute: 0,
                    wake: false
                },
                Boundary {
                    minute: 600,
                    wake: true
                }
            ]
        );
    }

    #[test]
    fn the_whole_week_has_no_boundaries() {
        let week = WeekPattern::from_spans([span(0, 5000), span(5000, MINUTES_PER_WEEK)]);
        assert!(week.always_awake());
        assert!(week.boundaries().is_empty());
        let asleep = WeekPattern::from_spans([]);
        assert!(!asleep.always_awake());
        assert!(asleep.boundaries().is_empty());
    }

    #[test]
    fn matrix_cells_are_hours_and_adjacent_hours_merge() {
        let mut cells = vec![0u8; 168];
        cells[7] = 1;
        cells[8] = 1;
        cells[167] = 1;
        let week = WeekPattern::from_matrix(&cells);
        assert_eq!(
            week.awake(),
            &[420..540, MINUTES_PER_WEEK - 60..MINUTES_PER_WEEK]
        );
    }
}
