//! Kubernetes quantities (`250m`, `512Mi`, `1e3`) as millicores, bytes and counts, rounded up.

use super::*;

/// A resource map of a container (`requests`, `limits`).
pub(super) type QuantityMap = BTreeMap<String, Quantity>;
/// A quantity parser ([`parse_cpu_millis`], [`parse_memory_bytes`]).
pub(super) type Parse = fn(&str) -> Result<u64, String>;

/// `map[key]` parsed, with `{at}.{key}` in the error; `None` when absent.
pub(super) fn quantity(
    map: Option<&QuantityMap>,
    key: &str,
    at: &str,
    parse: Parse,
) -> Result<Option<u64>, TranslateError> {
    map.and_then(|m| m.get(key))
        .map(|q| parse(&q.0).map_err(|m| error(format!("{at}.{key}"), m)))
        .transpose()
}

pub(super) const QUANTITY_EXPECTED: &str = r#"(expected e.g. "250m", "2", "512Mi", "1G" or "1e3")"#;

/// Parse a CPU quantity into millicores, rounding up like Kubernetes (`"250m"` -> 250, `"2"` -> 2000,
/// `"0.1"` -> 100, `"1n"` -> 1).
pub fn parse_cpu_millis(text: &str) -> Result<u64, String> {
    parse_quantity(text, 3)
}

/// Parse a memory quantity into bytes, rounding up (`"512Mi"`, `"1G"`, `"1e3"`, `"129e6"`).
pub fn parse_memory_bytes(text: &str) -> Result<u64, String> {
    parse_quantity(text, 0)
}

pub(super) fn parse_count(text: &str) -> Result<u64, String> {
    parse_quantity(text, 0)
}

/// Parse a Kubernetes quantity (`<sign><digits>[.<digits>]<suffix>`, suffix a binary SI `Ki..Ei`, a
/// decimal SI `n u m k M G T P E` or an exponent `e3`/`E-2`) and return `ceil(value * 10^scale)`.
/// Negative values are rejected: requests and capacities cannot be negative.
pub fn parse_quantity(text: &str, scale: i32) -> Result<u64, String> {
    let bad = || format!("{text:?} is not a quantity {QUANTITY_EXPECTED}");
    let (negative, rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let number_len = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(number_len);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
        return Err(bad());
    }
    let digits = format!("{whole}{fraction}");
    let digits = digits.trim_start_matches('0');
    if digits.len() > 38 {
        return Err(format!("{text:?} has too many digits"));
    }
    let mantissa: u128 = if digits.is_empty() {
        0
    } else {
        digits.parse().map_err(|_| bad())?
    };
    let (exp10, exp2): (i32, u32) = match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        _ => {
            let exponent = suffix.strip_prefix(['e', 'E']).ok_or_else(bad)?;
            let valid = !exponent.is_empty()
                && exponent.trim_start_matches(['+', '-']).len() + 1 >= exponent.len()
                && exponent
                    .trim_start_matches(['+', '-'])
                    .bytes()
                    .all(|b| b.is_ascii_digit());
            let value: i32 = if valid {
                exponent.parse().map_err(|_| bad())?
            } else {
                return Err(bad());
            };
            if value.abs() > 100 {
                return Err(format!("{text:?} is out of range"));
            }
            (value, 0)
        }
    };
    if negative && mantissa != 0 {
        return Err(format!("{text:?} must not be negative"));
    }
    let too_large = || format!("{text:?} is too large");
    let mut value = mantissa.checked_mul(1u128 << exp2).ok_or_else(too_large)?;
    let exponent = exp10 + scale - fraction.len() as i32;
    if exponent >= 0 {
        for _ in 0..exponent {
            value = value.checked_mul(10).ok_or_else(too_large)?;
        }
    } else {
        let mut left = -exponent;
        while left > 0 {
            let step = left.min(38);
            value = value.div_ceil(10u128.pow(step as u32));
            left -= step;
        }
    }
    u64::try_from(value).map_err(|_| too_large())
}
