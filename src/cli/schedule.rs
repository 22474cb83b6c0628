//! `cloudoptim schedule`: transitions of a HibernationSchedule, or its state at an instant.
//!
//! The file is read with a private serde view of just the fields that decide *when* (not the CRD type):
//! the CLI then needs nothing from the Kubernetes types and can name the exact field in every error.

use std::fmt::Write as _;
use std::path::Path;
use std::path::PathBuf;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use clap::Args;
use serde::{Deserialize, Serialize};

use super::{CliError, OutputFormat};
use crate::engine::schedule::{
    self, CompiledSchedule, DEFAULT_PREWARM_MINUTES, ScheduleSpec, Transition,
};

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

/// What kind of object the file holds.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Header {
    api_version: Option<String>,
    kind: Option<String>,
}

/// The parts of a HibernationSchedule that `schedule` reads; everything else is ignored.
#[derive(Debug, Deserialize)]
struct Document {
    spec: SpecFields,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpecFields {
    time_zone: String,
    #[serde(default)]
    weekly_matrix: Option<Vec<u8>>,
    #[serde(default)]
    awake: Option<Vec<String>>,
    #[serde(default = "default_prewarm")]
    prewarm_minutes: u32,
    #[serde(default)]
    suspend: bool,
    #[serde(default, rename = "override")]
    override_: Option<OverrideFields>,
}

#[derive(Debug, Deserialize)]
struct OverrideFields {
    state: String,
    until: String,
}

fn default_prewarm() -> u32 {
    DEFAULT_PREWARM_MINUTES
}

const API_VERSION: &str = "cloudoptim.io/v1alpha1";
const KIND: &str = "HibernationSchedule";

pub(super) fn load(path: &Path) -> Result<Loaded, CliError> {
    let shown = path.display();
    let bad = |message: String| CliError::BadInput(format!("{shown}: {message}"));
    let text = std::fs::read_to_string(path).map_err(|err| bad(format!("cannot read: {err}")))?;
    // The kind first, so that another kind of object is not reported as a schedule with bad fields.
    let header: Header = serde_yaml::from_str(&text).map_err(|err| bad(err.to_string()))?;
    for (field, found, expected) in [
        ("kind", &header.kind, KIND),
        ("apiVersion", &header.api_version, API_VERSION),
    ] {
        match found.as_deref() {
            Some(found) if found == expected => {}
            Some(found) => {
                return Err(bad(format!(
                    "{field}: expected {expected}, found \"{found}\""
                )));
            }
            None => return Err(bad(format!("{field}: missing; expected {expected}"))),
        }
    }
    let document: Document = serde_yaml::from_str(&text).map_err(|err| bad(err.to_string()))?;
    let spec = document.spec;
    let schedule = schedule::compile(&ScheduleSpec {
        time_zone: spec.time_zone,
        weekly_matrix: spec.weekly_matrix,
        awake: spec.awake,
        prewarm_minutes: spec.prewarm_minutes,
    })
    .map_err(|err| bad(format!("spec.{err}")))?;
    let mut notes = Vec::new();
    if spec.suspend {
        notes.push("spec.suspend is true: the operator does not act on this schedule; shown is its timetable".into());
    }
    if let Some(held) = spec.override_ {
        notes.push(format!(
            "spec.override holds {} until {}; shown is the timetable without it",
            held.state, held.until
        ));
    }
    Ok(Loaded { schedule, notes })
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
