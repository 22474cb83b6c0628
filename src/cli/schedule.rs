//! `cloudoptim schedule`: transitions of a HibernationSchedule, or its state at an instant.
//!
//! The file is read as the controller reads the object: into the CRD's own spec type
//! ([`crate::api::file`]), then compiled by the controller's own step
//! ([`crate::controllers::hibernation::compile`]), so the CLI and the operator refuse the same
//! schedules with the same messages, each naming the field.

use std::fmt::Write as _;
use std::path::Path;
use std::path::PathBuf;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use clap::Args;
use serde::Serialize;

use super::{CliError, OutputFormat};
use crate::api::file::read;
use crate::api::{HibernationSchedule, HibernationScheduleSpec};
use crate::controllers::hibernation;
use crate::engine::schedule::{CompiledSchedule, Transition};

/// The longest listing `--days` accepts (ten years).
const MAX_DAYS: u32 = 3660;

/// Arguments of `cloudoptim schedule`.
#[derive(Debug, Args)]
pub struct ScheduleArgs {
    /// A HibernationSchedule YAML (the custom resource itself).
    #[arg(long)]
    pub file: PathBuf,
    /// List transitions starting at this instant (RFC 3339). Default: now.
    #[arg(long, conflicts_with = "at")]
    pub from: Option<String>,
    /// Number of days to list transitions for.
    #[arg(long, default_value_t = 7)]
    pub days: u32,
    /// Print the state at this instant (RFC 3339) as one word: Awake, Hibernating or WakingUp.
    #[arg(long)]
    pub at: Option<String>,
    /// Output format of the transition list.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

/// Print the state at `--at`, or list the transitions from `--from` (default now) for `--days` days.
pub fn run(args: &ScheduleArgs) -> Result<(), CliError> {
    let loaded = load(&args.file)?;
    for note in &loaded.notes {
        eprintln!("note: {note}");
    }
    if let Some(at) = &args.at {
        let instant = parse_instant("--at", at)?;
        println!("{}", loaded.schedule.state_at(instant));
        return Ok(());
    }
    let from = match &args.from {
        Some(from) => parse_instant("--from", from)?,
        None => Utc::now(),
    };
    let to = listing_end(from, args.days)?;
    let transitions = loaded.schedule.transitions(from, to);
    let output = match args.output {
        OutputFormat::Table => table(&loaded.schedule, from, to, &transitions),
        OutputFormat::Json => json(&transitions)?,
    };
    print!("{output}");
    Ok(())
}

/// A compiled schedule and what the listing does not show (suspend, override).
pub(super) struct Loaded {
    pub(super) schedule: CompiledSchedule,
    pub(super) notes: Vec<String>,
}

/// Read and check `--file FILE`. Errors name the file and the field.
pub(super) fn load(path: &Path) -> Result<Loaded, CliError> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|err| CliError::BadInput(format!("{shown}: cannot read: {err}")))?;
    parse(&text).map_err(|err| CliError::BadInput(format!("{shown}: {err}")))
}

/// A HibernationSchedule document, read into the CRD's spec and compiled by the controller's step.
fn parse(text: &str) -> Result<Loaded, String> {
    let file = read::<HibernationSchedule, HibernationScheduleSpec>(text, |_| {})?;
    let object = HibernationSchedule::new(&file.name, file.spec);
    // The controller's messages name the field relative to `spec`.
    let schedule = hibernation::compile(&object).map_err(|err| format!("spec.{err}"))?;
    Ok(Loaded {
        schedule,
        notes: notes(&object.spec),
    })
}

/// What the timetable listing leaves out: `suspend` and an `override`.
fn notes(spec: &HibernationScheduleSpec) -> Vec<String> {
    let mut notes = Vec::new();
    if spec.suspend {
        notes.push("spec.suspend is true: the operator does not act on this schedule; shown is its timetable".into());
    }
    if let Some(held) = &spec.override_ {
        notes.push(format!(
            "spec.override holds {:?} until {}; shown is the timetable without it",
            held.state, held.until.0
        ));
    }
    notes
}

fn parse_instant(flag: &str, text: &str) -> Result<DateTime<Utc>, CliError> {
    DateTime::parse_from_rfc3339(text)
        .map(|instant| instant.with_timezone(&Utc))
        .map_err(|err| {
            CliError::BadInput(format!(
                "{flag}: \"{text}\" is not an RFC 3339 instant ({err}); use e.g. 2024-03-31T01:30:00Z or \
                 2024-03-31T03:30:00+02:00"
            ))
        })
}

fn listing_end(from: DateTime<Utc>, days: u32) -> Result<DateTime<Utc>, CliError> {
    if days == 0 || days > MAX_DAYS {
        return Err(CliError::BadInput(format!(
            "--days: {days} is out of range; use 1 to {MAX_DAYS}"
        )));
    }
    from.checked_add_signed(TimeDelta::days(i64::from(days)))
        .ok_or_else(|| {
            CliError::BadInput(format!(
                "--from: {from} plus {days} days is past the supported dates"
            ))
        })
}

fn utc_text(transition: &Transition) -> String {
    transition
        .instant
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn local_text(transition: &Transition) -> String {
    transition.local.to_rfc3339_opts(SecondsFormat::Secs, false)
}

fn table(
    schedule: &CompiledSchedule,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    transitions: &[Transition],
) -> String {
    let secs = |instant: DateTime<Utc>| instant.to_rfc3339_opts(SecondsFormat::Secs, true);
    let mut out = format!(
        "time zone {}, prewarm {} min; state at {}: {}\n",
        schedule.time_zone(),
        schedule.prewarm_minutes(),
        secs(from),
        schedule.state_at(from)
    );
    if transitions.is_empty() {
        let _ = writeln!(out, "no transitions before {}", secs(to));
        return out;
    }
    let _ = writeln!(out, "{:<22}{:<27}{:<13}ACTION", "UTC", "LOCAL", "STATE");
    for transition in transitions {
        let _ = writeln!(
            out,
            "{:<22}{:<27}{:<13}{}",
            utc_text(transition),
            local_text(transition),
            transition.state,
            transition.action
        );
    }
    out
}

/// One transition in the JSON listing (fields in reading order).
#[derive(Serialize)]
struct Row {
    utc: String,
    local: String,
    state: &'static str,
    action: &'static str,
}

fn json(transitions: &[Transition]) -> Result<String, CliError> {
    let rows: Vec<Row> = transitions
        .iter()
        .map(|transition| Row {
            utc: utc_text(transition),
            local: local_text(transition),
            state: transition.state.as_str(),
            action: transition.action.as_str(),
        })
        .collect();
    let mut text =
        serde_json::to_string_pretty(&rows).map_err(|err| CliError::Failed(err.to_string()))?;
    text.push('\n');
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "apiVersion: cloudoptim.io/v1alpha1\nkind: HibernationSchedule\n";

    fn parsed(spec: &str) -> Result<Loaded, String> {
        parse(&format!("{HEAD}spec: {spec}\n"))
    }

    #[test]
    fn a_schedule_without_prewarm_takes_the_crd_default() {
        let loaded = parsed("{timeZone: UTC, awake: ['Mon-Fri 08:00-18:00']}").unwrap();
        assert_eq!(loaded.schedule.prewarm_minutes(), 30);
        assert!(loaded.notes.is_empty());
    }

    #[test]
    fn suspend_and_override_become_notes() {
        let loaded = parsed(
            "{timeZone: UTC, awake: ['Mon 08:00-18:00'], suspend: true, \
             override: {state: Awake, until: '2024-04-01T18:00:00Z'}}",
        )
        .unwrap();
        assert_eq!(loaded.notes.len(), 2, "{:?}", loaded.notes);
        assert!(loaded.notes[0].starts_with("spec.suspend is true"));
        assert!(
            loaded.notes[1].contains("holds Awake until 2024-04-01T18:00:00Z"),
            "{}",
            loaded.notes[1]
        );
    }

    #[test]
    fn the_wrong_kind_an_unknown_field_and_a_bad_timetable_name_the_field() {
        for (text, expected) in [
            (
                "kind: NodeTemplate\n".to_string(),
                "kind: expected HibernationSchedule, found NodeTemplate",
            ),
            (
                format!("{HEAD}spec: {{timeZone: UTC, awake: ['Mon 08:00-18:00'], prewarm: 5}}"),
                "spec.prewarm: unknown field",
            ),
            (
                format!("{HEAD}spec: {{awake: ['Mon 08:00-18:00']}}"),
                "missing field `timeZone`",
            ),
            (
                format!(
                    "{HEAD}spec: {{timeZone: UTC, awake: ['Mon 08:00-18:00'], prewarmMinutes: 61}}"
                ),
                "spec.prewarmMinutes: 61 is more than 60",
            ),
            (
                format!("{HEAD}spec: {{timeZone: UTC}}"),
                "spec.awake: neither awake nor weeklyMatrix is set",
            ),
        ] {
            let err = parse(&text).err().unwrap_or_default();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }
}
