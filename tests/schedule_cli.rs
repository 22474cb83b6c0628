//! `cloudoptim schedule` end to end: the built binary on HibernationSchedule files in a temp dir.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A schedule file that is removed when dropped.
struct ScheduleFile(PathBuf);

impl ScheduleFile {
    fn new(spec: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "cloudoptim-schedule-cli-{}-{}.yaml",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let path = std::env::temp_dir().join(name);
        let yaml = format!(
            "apiVersion: cloudoptim.io/v1alpha1\nkind: HibernationSchedule\nmetadata:\n  name: test\nspec:\n{spec}"
        );
        std::fs::write(&path, yaml).unwrap();
        ScheduleFile(path)
    }
}

impl Drop for ScheduleFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

const BERLIN_OFFICE: &str = "  timeZone: Europe/Berlin\n  awake:\n    - \"Mon-Fri 07:30-20:30\"\n  prewarmMinutes: 30\n  targets:\n    namespaces: [dev]\n";

fn schedule(file: &ScheduleFile, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cloudoptim"))
        .arg("schedule")
        .arg("--file")
        .arg(&file.0)
        .args(args)
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

#[test]
fn at_prints_the_state_as_one_word() {
    let file = ScheduleFile::new(BERLIN_OFFICE);
    for (instant, state) in [
        // Monday 2024-04-01 (CEST): pre-warm starts 07:00, workloads wake 07:30.
        ("2024-04-01T05:15:00Z", "WakingUp"),
        ("2024-04-01T07:45:00+02:00", "Awake"),
        ("2024-04-06T12:00:00Z", "Hibernating"),
    ] {
        let output = schedule(&file, &["--at", instant]);
        assert!(output.status.success(), "{}", stderr(&output));
        assert_eq!(stdout(&output), format!("{state}\n"), "at {instant}");
    }
}

#[test]
fn from_lists_the_transitions_in_json() {
    let file = ScheduleFile::new(BERLIN_OFFICE);
    let output = schedule(
        &file,
        &[
            "--from",
            "2024-03-29T00:00:00Z",
            "--days",
            "4",
            "-o",
            "json",
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let listed: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    let row = |utc: &str, local: &str, state: &str, action: &str| serde_json::json!({"utc": utc, "local": local, "state": state, "action": action});
    assert_eq!(
        listed,
        serde_json::json!([
            row(
                "2024-03-29T06:00:00Z",
                "2024-03-29T07:00:00+01:00",
                "WakingUp",
                "WakeNodes"
            ),
            row(
                "2024-03-29T06:30:00Z",
                "2024-03-29T07:30:00+01:00",
                "Awake",
                "WakeWorkloads"
            ),
            row(
                "2024-03-29T19:30:00Z",
                "2024-03-29T20:30:00+01:00",
                "Hibernating",
                "SleepWorkloadsThenNodes"
            ),
            row(
                "2024-04-01T05:00:00Z",
                "2024-04-01T07:00:00+02:00",
                "WakingUp",
                "WakeNodes"
            ),
            row(
                "2024-04-01T05:30:00Z",
                "2024-04-01T07:30:00+02:00",
                "Awake",
                "WakeWorkloads"
            ),
            row(
                "2024-04-01T18:30:00Z",
                "2024-04-01T20:30:00+02:00",
                "Hibernating",
                "SleepWorkloadsThenNodes"
            ),
        ])
    );
}

#[test]
fn the_table_shows_utc_local_state_and_action() {
    let file = ScheduleFile::new(BERLIN_OFFICE);
    let output = schedule(&file, &["--from", "2024-03-29T00:00:00Z", "--days", "1"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(
        text.contains("state at 2024-03-29T00:00:00Z: Hibernating"),
        "{text}"
    );
    assert!(
        text.lines().any(|line| line.split_whitespace().eq([
            "2024-03-29T06:00:00Z",
            "2024-03-29T07:00:00+01:00",
            "WakingUp",
            "WakeNodes"
        ])),
        "{text}"
    );
}

#[test]
fn without_from_or_at_it_lists_from_now() {
    let file = ScheduleFile::new(BERLIN_OFFICE);
    let output = schedule(&file, &["-o", "json"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let listed: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    // A week always has five working days: 15 transitions, give or take the edges of the week.
    let count = listed.as_array().unwrap().len();
    assert!((12..=18).contains(&count), "{listed}");
}

fn assert_bad_input(spec: &str, expected: &[&str]) {
    let file = ScheduleFile::new(spec);
    let output = schedule(&file, &["--at", "2024-04-01T05:15:00Z"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stdout(&output).is_empty());
    let message = stderr(&output);
    assert!(message.contains(&file.0.display().to_string()), "{message}");
    for part in expected {
        assert!(message.contains(part), "expected {part:?} in {message}");
    }
}

#[test]
fn a_bad_time_zone_exits_2_naming_the_field() {
    assert_bad_input(
        "  timeZone: Europe/Berln\n  awake: [\"Mon-Fri 07:30-20:30\"]\n",
        &["spec.timeZone: unknown IANA time zone \"Europe/Berln\"; use a name like Europe/Berlin"],
    );
}

#[test]
fn a_matrix_of_167_entries_exits_2_naming_the_field() {
    let cells = vec!["1"; 167].join(", ");
    assert_bad_input(
        &format!("  timeZone: UTC\n  weeklyMatrix: [{cells}]\n"),
        &["spec.weeklyMatrix: has 167 entries but needs 168"],
    );
}

#[test]
fn an_unparsable_window_exits_2_quoting_it() {
    assert_bad_input(
        "  timeZone: UTC\n  awake:\n    - \"Mon-Fri 07:30-20:30\"\n    - \"Weekends 10:00-12:00\"\n",
        &[
            "spec.awake[1]: cannot parse \"Weekends 10:00-12:00\"",
            "\"DAY[-DAY] HH:MM-HH:MM\"",
        ],
    );
}

#[test]
fn a_bad_instant_exits_2_naming_the_flag() {
    let file = ScheduleFile::new(BERLIN_OFFICE);
    let output = schedule(&file, &["--at", "tomorrow"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("--at: \"tomorrow\" is not an RFC 3339 instant"),
        "{}",
        stderr(&output)
    );
}
