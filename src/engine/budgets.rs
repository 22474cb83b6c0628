//! Disruption budgets: how many nodes voluntary disruption may take at once.
//!
//! Semantics follow Karpenter's NodePool budgets, which users of `spec.disruption.budgets` already know:
//! - `nodes` is a count (`"3"`) or a percentage (`"10%"`) of the nodes in scope; a percentage is rounded
//!   **up** (`ceil(total * p / 100)`), so "10%" of 5 nodes allows 1, not 0.
//! - A budget with a `schedule` (5-field cron) is active for `duration` after each time the schedule fires,
//!   in its `timeZone` (IANA, default UTC); a budget without a schedule is always active. `schedule` and
//!   `duration` come together.
//! - A budget with `reasons` only limits those disruption reasons (`Empty`, `Underutilized`, `Drifted`,
//!   `Rightsized`: a workload rollout right-sizing starts, counted like a node).
//! - The most restrictive active budget wins. When the policy gives no budgets at all, the default is
//!   `nodes: "10%"` (DESIGN.md 3.2); an explicitly empty list means no limit.
//! - Budgets fail closed: the caller turns any [`BudgetError`] into "no voluntary disruption".

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Duration, NaiveDateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

/// Why a budget could not be understood. Messages name the offending text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    /// `nodes` is neither a non-negative integer nor a percentage 0-100%.
    #[error("nodes: {0:?} is not a node count (\"3\") or a percentage (\"10%\")")]
    Nodes(String),
    /// `schedule` is not a 5-field cron expression.
    #[error("schedule: {value:?} is not a 5-field cron expression: {why}")]
    Schedule {
        /// The schedule text.
        value: String,
        /// What is wrong.
        why: String,
    },
    /// `duration` is not a duration in the CRD grammar (the message says why).
    #[error("duration: {0}")]
    Duration(String),
    /// `schedule` without `duration` or the other way round.
    #[error("schedule and duration must be set together")]
    ScheduleWithoutDuration,
    /// `timeZone` is not an IANA time zone name.
    #[error("timeZone: {0:?} is not an IANA time zone")]
    TimeZone(String),
    /// A reason other than Empty, Underutilized, Drifted.
    #[error("reasons: {0:?} is not one of Empty, Underutilized, Drifted")]
    Reason(String),
}

/// How many nodes a budget allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetNodes {
    /// A fixed number of nodes.
    Count(u32),
    /// A percentage (0-100) of the nodes in scope, rounded up.
    Percent(u32),
}

impl FromStr for BudgetNodes {
    type Err = BudgetError;

    fn from_str(text: &str) -> Result<Self, BudgetError> {
        let bad = || BudgetError::Nodes(text.to_owned());
        let trimmed = text.trim();
        if let Some(number) = trimmed.strip_suffix('%') {
            let percent: u32 = number.parse().map_err(|_| bad())?;
            if percent > 100 {
                return Err(bad());
            }
            return Ok(BudgetNodes::Percent(percent));
        }
        trimmed.parse().map(BudgetNodes::Count).map_err(|_| bad())
    }
}

impl BudgetNodes {
    /// The number of nodes allowed out of `total` (percentages round up, like Karpenter).
    pub fn resolve(self, total: usize) -> usize {
        match self {
            BudgetNodes::Count(count) => count as usize,
            BudgetNodes::Percent(percent) => (total * percent as usize).div_ceil(100),
        }
    }
}

/// A voluntary disruption reason a budget can be limited to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DisruptionReason {
    /// Removing a node that runs only DaemonSet pods.
    Empty,
    /// Removing a node whose pods fit elsewhere.
    Underutilized,
    /// Replacing a node that no longer matches its template.
    Drifted,
    /// A rollout right-sizing starts (one workload's new requests): counted per workload.
    Rightsized,
}

impl FromStr for DisruptionReason {
    type Err = BudgetError;

    fn from_str(text: &str) -> Result<Self, BudgetError> {
        match text {
            "Empty" => Ok(DisruptionReason::Empty),
            "Underutilized" => Ok(DisruptionReason::Underutilized),
            "Drifted" => Ok(DisruptionReason::Drifted),
            "Rightsized" => Ok(DisruptionReason::Rightsized),
            other => Err(BudgetError::Reason(other.to_owned())),
        }
    }
}

/// A budget as written in the policy, before parsing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BudgetSpec {
    /// `nodes`: `"10%"` or `"3"`.
    pub nodes: String,
    /// `schedule`: 5-field cron, or a macro like `@daily`.
    pub schedule: Option<String>,
    /// `duration`: how long the budget is active after each schedule hit, e.g. `"8h"`.
    pub duration: Option<String>,
    /// `timeZone`: IANA name, default UTC.
    pub time_zone: Option<String>,
    /// `reasons`: empty means every reason.
    pub reasons: Vec<String>,
}

/// A parsed, checked budget.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    /// Nodes allowed.
    pub nodes: BudgetNodes,
    /// When the budget is active; `None` = always.
    pub window: Option<Window>,
    /// Reasons it limits; empty = every reason.
    pub reasons: Vec<DisruptionReason>,
}

/// A recurring activity window: `duration` after each time `schedule` fires, in `time_zone`.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// When the window opens.
    pub schedule: Cron,
    /// How long it stays open.
    pub duration: Duration,
    /// Time zone the schedule is read in.
    pub time_zone: Tz,
}

impl TryFrom<&BudgetSpec> for Budget {
    type Error = BudgetError;

    fn try_from(spec: &BudgetSpec) -> Result<Self, BudgetError> {
        let nodes = spec.nodes.parse()?;
        let window = match (&spec.schedule, &spec.duration) {
            (None, None) => None,
            (Some(schedule), Some(duration)) => Some(Window {
                schedule: schedule.parse()?,
                duration: parse_duration(duration)?,
                time_zone: parse_time_zone(spec.time_zone.as_deref())?,
            }),
            _ => return Err(BudgetError::ScheduleWithoutDuration),
        };
        let reasons = spec
            .reasons
            .iter()
            .map(|r| r.parse())
            .collect::<Result<_, _>>()?;
        Ok(Budget {
            nodes,
            window,
            reasons,
        })
    }
}

fn parse_time_zone(name: Option<&str>) -> Result<Tz, BudgetError> {
    match name {
        None | Some("") => Ok(Tz::UTC),
        Some(name) => name
            .parse()
            .map_err(|_| BudgetError::TimeZone(name.to_owned())),
    }
}

impl Budget {
    /// Is this budget in force at `at`?
    pub fn is_active(&self, at: DateTime<Utc>) -> bool {
        self.window
            .as_ref()
            .is_none_or(|window| window.contains(at))
    }

    /// Does this budget limit disruptions for `reason`?
    pub fn applies_to(&self, reason: DisruptionReason) -> bool {
        self.reasons.is_empty() || self.reasons.contains(&reason)
    }
}

impl Window {
    /// Is `at` within `duration` after some firing of the schedule (the firing minute included)?
    ///
    /// Walks back minute by minute over the duration, reading each minute in the window's time zone, so
    /// daylight-saving gaps and repeats behave like wall clocks do. Durations are capped at 31 days.
    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        let Some(start) = at.with_second(0).and_then(|t| t.with_nanosecond(0)) else {
            return false;
        };
        // A firing `back` minutes before `start` covers `at` when fire + duration > at.
        let reach = (at - start + self.duration).min(Duration::days(31));
        (0..)
            .map(Duration::minutes)
            .take_while(|back| *back < reach)
            .any(|back| {
                let instant = start - back;
                let local = self
                    .time_zone
                    .from_utc_datetime(&instant.naive_utc())
                    .naive_local();
                self.schedule.matches(&local)
            })
    }
}

/// Nodes that may be disrupted for `reason` at `at`: the minimum over active, applicable budgets, each
/// resolved against `total_nodes`. `None` when no budget limits it.
pub fn allowed_disruptions(
    budgets: &[Budget],
    total_nodes: usize,
    at: DateTime<Utc>,
    reason: DisruptionReason,
) -> Option<usize> {
    budgets
        .iter()
        .filter(|b| b.applies_to(reason) && b.is_active(at))
        .map(|b| b.nodes.resolve(total_nodes))
        .min()
}

/// The budget DESIGN.md 3.2 applies when a policy has none: `nodes: "10%"`, always active.
pub fn default_budgets() -> Vec<Budget> {
    vec![Budget {
        nodes: BudgetNodes::Percent(10),
        window: None,
        reasons: Vec::new(),
    }]
}

/// Parse a budget's `duration` in the one CRD grammar ([`super::duration`]): `30m`, `1h30m`, `1d`.
pub fn parse_duration(text: &str) -> Result<Duration, BudgetError> {
    let parsed = super::duration::parse(text).map_err(|e| BudgetError::Duration(e.to_string()))?;
    Duration::from_std(parsed).map_err(|_| BudgetError::Duration(text.to_owned()))
}

/// A 5-field cron schedule (minute hour day-of-month month day-of-week), as in crontab(5): `*`, lists,
/// ranges, steps, month and weekday names, and the macros `@yearly`, `@annually`, `@monthly`, `@weekly`,
/// `@daily`, `@midnight`, `@hourly`. Like cron, when both day fields are restricted a day matches if
/// either does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minutes: u64,
    hours: u64,
    days_of_month: u64,
    months: u64,
    days_of_week: u64,
    dom_restricted: bool,
    dow_restricted: bool,
}

impl FromStr for Cron {
    type Err = BudgetError;

    fn from_str(text: &str) -> Result<Self, BudgetError> {
        let bad = |why: &str| BudgetError::Schedule {
            value: text.to_owned(),
            why: why.to_owned(),
        };
        let expanded = match text.trim() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other if other.starts_with('@') => return Err(bad("unknown macro")),
            other => other,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let [minute, hour, dom, month, dow] = fields.as_slice() else {
            return Err(bad(&format!("expected 5 fields, found {}", fields.len())));
        };
        const MONTHS: &[&str] = &[
            "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
        ];
        const DAYS: &[&str] = &["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
        let field = |text: &str, name: &str, min, max, names: &[&str], name_base| {
            parse_field(text, min, max, names, name_base)
                .map_err(|why| bad(&format!("{name} field: {why}")))
        };
        let mut days_of_week = field(dow, "day-of-week", 0, 7, DAYS, 0)?;
        if days_of_week & (1 << 7) != 0 {
            days_of_week |= 1; // 7 is Sunday too
        }
        Ok(Cron {
            minutes: field(minute, "minute", 0, 59, &[], 0)?,
            hours: field(hour, "hour", 0, 23, &[], 0)?,
            days_of_month: field(dom, "day-of-month", 1, 31, &[], 0)?,
            months: field(month, "month", 1, 12, MONTHS, 1)?,
            days_of_week,
            dom_restricted: !dom.starts_with('*'),
            dow_restricted: !dow.starts_with('*'),
        })
    }
}

/// Parse one cron field into a bit set of allowed values.
fn parse_field(
    text: &str,
    min: u32,
    max: u32,
    names: &[&str],
    name_base: u32,
) -> Result<u64, String> {
    let value = |token: &str| -> Result<u32, String> {
        let lower = token.to_ascii_lowercase();
        if let Some(i) = names.iter().position(|n| *n == lower) {
            return Ok(i as u32 + name_base);
        }
        let v: u32 = token
            .parse()
            .map_err(|_| format!("{token:?} is not a number"))?;
        if v < min || v > max {
            return Err(format!("{v} is outside {min}-{max}"));
        }
        Ok(v)
    };
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step
                    .parse()
                    .map_err(|_| format!("step {step:?} is not a number"))?;
                if step == 0 {
                    return Err("step 0".to_owned());
                }
                (range, step)
            }
            None => (part, 1),
        };
        let (lo, hi) = match range {
            "*" => (min, max),
            _ => match range.split_once('-') {
                Some((a, b)) => (value(a)?, value(b)?),
                // "5/15" means "from 5 to the end, every 15" as in Vixie cron.
                None if step > 1 => (value(range)?, max),
                None => {
                    let v = value(range)?;
                    (v, v)
                }
            },
        };
        if lo > hi {
            return Err(format!("range {lo}-{hi} is backwards"));
        }
        bits |= (lo..=hi)
            .step_by(step as usize)
            .fold(0u64, |acc, v| acc | (1 << v));
    }
    Ok(bits)
}

impl Cron {
    /// Does the schedule fire at this wall-clock minute?
    pub fn matches(&self, local: &NaiveDateTime) -> bool {
        let bit = |set: u64, v: u32| set & (1 << v) != 0;
        let dom = bit(self.days_of_month, local.day());
        let dow = bit(self.days_of_week, local.weekday().num_days_from_sunday());
        let day = if self.dom_restricted && self.dow_restricted {
            dom || dow
        } else {
            dom && dow
        };
        bit(self.minutes, local.minute())
            && bit(self.hours, local.hour())
            && bit(self.months, local.month())
            && day
    }
}

impl fmt::Display for BudgetNodes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BudgetNodes::Count(n) => write!(f, "{n}"),
            BudgetNodes::Percent(p) => write!(f, "{p}%"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .map(|t| t.with_timezone(&Utc))
            .unwrap()
    }

    fn budget(
        nodes: &str,
        schedule: Option<&str>,
        duration: Option<&str>,
        tz: Option<&str>,
    ) -> Budget {
        let spec = BudgetSpec {
            nodes: nodes.into(),
            schedule: schedule.map(Into::into),
            duration: duration.map(Into::into),
            time_zone: tz.map(Into::into),
            reasons: vec![],
        };
        Budget::try_from(&spec).unwrap()
    }

    #[test]
    fn percentages_round_up_like_karpenter() {
        assert_eq!(BudgetNodes::Percent(10).resolve(5), 1);
        assert_eq!(BudgetNodes::Percent(10).resolve(40), 4);
        assert_eq!(BudgetNodes::Percent(10).resolve(41), 5);
        assert_eq!(BudgetNodes::Percent(0).resolve(41), 0);
        assert_eq!(BudgetNodes::Percent(100).resolve(7), 7);
        assert_eq!(BudgetNodes::Count(3).resolve(1), 3);
    }

    #[test]
    fn nodes_parse_counts_and_percentages_and_reject_garbage() {
        assert_eq!("3".parse(), Ok(BudgetNodes::Count(3)));
        assert_eq!("10%".parse(), Ok(BudgetNodes::Percent(10)));
        assert!("101%".parse::<BudgetNodes>().is_err());
        assert!("-1".parse::<BudgetNodes>().is_err());
        assert!("ten".parse::<BudgetNodes>().is_err());
        assert!("".parse::<BudgetNodes>().is_err());
    }

    #[test]
    fn durations_follow_the_crd_grammar() {
        assert_eq!(parse_duration("30m"), Ok(Duration::minutes(30)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::minutes(90)));
        assert_eq!(parse_duration("1d"), Ok(Duration::days(1)));
        assert_eq!(parse_duration("14d"), Ok(Duration::days(14)));
        assert_eq!(parse_duration("0s"), Ok(Duration::zero()));
        for bad in ["", "10", "0", "1.5h", "h", "-1h", "1h 30m", "999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn cron_fields_support_lists_ranges_steps_and_names() {
        let cron: Cron = "*/15 9-17 * * mon-fri".parse().unwrap();
        let at = |s: &str| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap();
        assert!(cron.matches(&at("2025-01-06 09:45"))); // Monday
        assert!(!cron.matches(&at("2025-01-06 09:46")));
        assert!(!cron.matches(&at("2025-01-05 10:00"))); // Sunday
        assert!(!cron.matches(&at("2025-01-06 18:00")));
        let sunday7: Cron = "0 0 * * 7".parse().unwrap();
        assert!(sunday7.matches(&at("2025-01-05 00:00")));
    }

    #[test]
    fn cron_with_both_day_fields_matches_either() {
        let cron: Cron = "0 0 1 * mon".parse().unwrap();
        let at = |s: &str| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap();
        assert!(cron.matches(&at("2025-02-01 00:00"))); // the 1st, a Saturday
        assert!(cron.matches(&at("2025-02-03 00:00"))); // a Monday
        assert!(!cron.matches(&at("2025-02-04 00:00")));
    }

    #[test]
    fn cron_rejects_bad_expressions() {
        for bad in [
            "* * * *",
            "60 * * * *",
            "* * 0 * *",
            "*/0 * * * *",
            "5-1 * * * *",
            "@often",
            "x * * * *",
        ] {
            assert!(bad.parse::<Cron>().is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn scheduled_budget_is_active_only_inside_its_window() {
        let b = budget("0", Some("0 9 * * mon-fri"), Some("8h"), None);
        assert!(b.is_active(utc("2025-01-06T09:00:00Z")));
        assert!(b.is_active(utc("2025-01-06T16:59:59Z")));
        assert!(!b.is_active(utc("2025-01-06T17:00:00Z")));
        assert!(!b.is_active(utc("2025-01-06T08:59:00Z")));
        assert!(!b.is_active(utc("2025-01-05T10:00:00Z")));
    }

    #[test]
    fn scheduled_budget_reads_its_time_zone() {
        let b = budget("0", Some("0 9 * * *"), Some("1h"), Some("America/New_York"));
        assert!(b.is_active(utc("2025-01-06T14:30:00Z"))); // 09:30 EST
        assert!(!b.is_active(utc("2025-01-06T09:30:00Z")));
        assert!(b.is_active(utc("2025-07-07T13:30:00Z"))); // 09:30 EDT
    }

    #[test]
    fn most_restrictive_active_applicable_budget_wins() {
        let mut only_drift = budget("0", None, None, None);
        only_drift.reasons = vec![DisruptionReason::Drifted];
        let budgets = vec![
            budget("10%", None, None, None),
            budget("2", None, None, None),
            only_drift,
        ];
        let at = utc("2025-01-06T09:00:00Z");
        assert_eq!(
            allowed_disruptions(&budgets, 100, at, DisruptionReason::Underutilized),
            Some(2)
        );
        assert_eq!(
            allowed_disruptions(&budgets, 100, at, DisruptionReason::Drifted),
            Some(0)
        );
        assert_eq!(
            allowed_disruptions(&[], 100, at, DisruptionReason::Empty),
            None
        );
    }

    #[test]
    fn schedule_without_duration_and_bad_fields_fail_closed() {
        let spec = BudgetSpec {
            nodes: "1".into(),
            schedule: Some("@daily".into()),
            ..Default::default()
        };
        assert_eq!(
            Budget::try_from(&spec),
            Err(BudgetError::ScheduleWithoutDuration)
        );
        let spec = BudgetSpec {
            nodes: "1".into(),
            schedule: Some("@daily".into()),
            duration: Some("1h".into()),
            time_zone: Some("Mars/Olympus".into()),
            reasons: vec![],
        };
        assert!(matches!(
            Budget::try_from(&spec),
            Err(BudgetError::TimeZone(_))
        ));
        let spec = BudgetSpec {
            nodes: "1".into(),
            reasons: vec!["Bored".into()],
            ..Default::default()
        };
        assert!(matches!(
            Budget::try_from(&spec),
            Err(BudgetError::Reason(_))
        ));
    }
}
