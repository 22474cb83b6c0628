//! The one duration grammar of CloudOptim, used by the CRD pattern ([`PATTERN`]), every controller and
//! `cloudoptim plan`: one or more `<digits><unit>` pairs with units `ms`, `s`, `m`, `h`, `d`, e.g. `90s`,
//! `5m`, `1h30m`, `14d`. Arithmetic is checked and values above [`MAX`] are refused, so no spec can
//! make a later multiplication or deadline overflow.

use std::time::Duration;

/// The regular expression the CRDs use for every duration field. Keep it equal to what [`parse`]
/// accepts (a unit test checks both on the same samples).
pub const PATTERN: &str = r"^([0-9]+(ms|s|m|h|d))+$";

/// The longest duration any field may hold: 366 days.
pub const MAX: Duration = Duration::from_secs(366 * 86_400);

/// Why a text is not a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Not in the grammar.
    #[error(
        "{0:?} is not a duration; use digits and a unit (ms, s, m, h, d), e.g. 90s, 5m, 1h30m or 14d"
    )]
    Syntax(String),
    /// In the grammar, but longer than [`MAX`].
    #[error("{0:?} is longer than the maximum 366d; use a shorter duration")]
    TooLong(String),
}

/// Parse `text` in the CRD grammar.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let syntax = || DurationError::Syntax(text.to_owned());
    let too_long = || DurationError::TooLong(text.to_owned());
    let mut rest = text;
    if rest.is_empty() {
        return Err(syntax());
    }
    let mut total_ms: u128 = 0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(syntax)?;
        if digits == 0 {
            return Err(syntax());
        }
        let (number, tail) = rest.split_at(digits);
        // More digits than any valid value needs is out of range, not a syntax error.
        let number: u128 = number.parse().map_err(|_| too_long())?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let ms_per_unit: u128 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(syntax()),
        };
        total_ms = number
            .checked_mul(ms_per_unit)
            .and_then(|ms| total_ms.checked_add(ms))
            .ok_or_else(too_long)?;
        rest = tail;
    }
    if total_ms > MAX.as_millis() {
        return Err(too_long());
    }
    let ms = u64::try_from(total_ms).map_err(|_| too_long())?;
    Ok(Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crd_grammar_parses() {
        let s = Duration::from_secs;
        assert_eq!(parse("90s"), Ok(s(90)));
        assert_eq!(parse("1h30m"), Ok(s(5_400)));
        assert_eq!(parse("1d"), Ok(s(86_400)));
        assert_eq!(parse("14d"), Ok(s(14 * 86_400)));
        assert_eq!(parse("90m"), Ok(s(5_400)));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
        assert_eq!(parse("366d"), Ok(MAX));
    }

    #[test]
    fn text_outside_the_grammar_is_a_syntax_error() {
        for bad in [
            "", "0", "10", "h", "-1h", "1.5h", "1h 30m", " 5m", "5m ", "1w", "5us",
        ] {
            assert_eq!(
                parse(bad),
                Err(DurationError::Syntax(bad.into())),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn huge_values_are_out_of_range_never_an_overflow() {
        for big in [
            "367d",
            "999999999999d",
            "99999999999999999999999999999999999999999d",
            "184467440737095516160ms",
            "300d300d",
        ] {
            assert_eq!(
                parse(big),
                Err(DurationError::TooLong(big.into())),
                "{big:?}"
            );
        }
    }

    #[test]
    fn the_parser_and_the_crd_pattern_agree() {
        let pattern = regex::Regex::new(PATTERN).expect("pattern compiles");
        let samples = [
            "90s",
            "1h30m",
            "14d",
            "1d",
            "500ms",
            "0s",
            "5m",
            "",
            "0",
            "10",
            "1.5h",
            "1h 30m",
            "5us",
            "1w",
            "-1h",
            "d",
            "1dd",
            "1msm",
            "3h2m1s500ms",
        ];
        for sample in samples {
            assert_eq!(
                pattern.is_match(sample),
                parse(sample).is_ok(),
                "{sample:?}: pattern and parser disagree"
            );
        }
    }
}
