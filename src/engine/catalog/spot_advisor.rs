//! The public Spot Advisor feed (`spot-advisor-data.json`), in its own format:
//! `{"instance_types": {...}, "ranges": [...], "spot_advisor": {"<region>": {"Linux": {"<type>": {"s": 70,
//! "r": 1}}, "Windows": {...}}}}`.
//!
//! The feed is taken as AWS publishes it, and AWS changes it without notice: any region name, any
//! instance type name and any OS key are accepted (only `Linux` entries are kept), unknown fields are
//! ignored, and an entry that cannot be used (the real feed has had a negative savings `s`) is skipped
//! and reported in [`SpotAdvisor::skipped`] with its reason, never the whole feed. Only a document that
//! is not JSON, or has no `spot_advisor` object, is an error: an S3 error body must not pass for an
//! empty feed and blank every bucket.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde_json::Value;

use super::CatalogError;

/// The highest interruption bucket: `r` = 0..4 for <5%, 5-10%, 10-15%, 15-20%, >20%.
pub const MAX_BUCKET: u8 = 4;
/// The highest savings `s`, percent over on-demand.
pub const MAX_SAVINGS_PERCENT: u8 = 100;

/// Parsed Spot Advisor data: interruption buckets per (region, instance type), Linux only, and the
/// entries that were skipped.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpotAdvisor {
    ranges: Vec<AdvisorRange>,
    regions: BTreeMap<String, BTreeMap<String, AdvisorEntry>>,
    skipped: Vec<SkippedEntry>,
}

/// One Spot Advisor entry for an instance type in a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdvisorEntry {
    /// Interruption-frequency bucket `r`, 0..=4.
    pub bucket: u8,
    /// Savings over on-demand in percent (`s`, 0..=100), when the feed gives it.
    pub savings_percent: Option<u8>,
}

/// One row of the feed's `ranges` table: what a bucket means.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AdvisorRange {
    /// The bucket number `r`.
    pub index: u8,
    /// Human label, e.g. `<5%`.
    pub label: String,
    /// Upper bound of the interruption frequency, percent.
    #[serde(default)]
    pub max: u32,
}

/// A Linux entry (or a whole region's or Linux table) of the feed that was left out, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct SkippedEntry {
    /// The region key, e.g. `ca-central-1`.
    pub region: String,
    /// The instance type key; `None` when the region or its `Linux` table was unusable.
    pub instance_type: Option<String>,
    /// Why it was skipped.
    pub reason: SkipReason,
}

impl SkippedEntry {
    /// JSON path of what was skipped, e.g. `spot_advisor.ca-central-1.Linux.p5.48xlarge`.
    pub fn path(&self) -> String {
        match (&self.reason, &self.instance_type) {
            (SkipReason::RegionNotAnObject { .. }, _) => format!("spot_advisor.{}", self.region),
            (_, None) => format!("spot_advisor.{}.Linux", self.region),
            (_, Some(t)) => format!("spot_advisor.{}.Linux.{t}", self.region),
        }
    }
}

impl fmt::Display for SkippedEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path(), self.reason)
    }
}

/// Why a feed entry was skipped.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SkipReason {
    /// The region's value is not an object.
    #[error("the region is {found}, not an object")]
    RegionNotAnObject {
        /// What the feed has instead.
        found: JsonKind,
    },
    /// The region's `Linux` value is not an object.
    #[error("`Linux` is {found}, not an object")]
    LinuxNotAnObject {
        /// What the feed has instead.
        found: JsonKind,
    },
    /// The entry is not an object.
    #[error("the entry is {found}, not an object")]
    EntryNotAnObject {
        /// What the feed has instead.
        found: JsonKind,
    },
    /// The entry has no interruption bucket `r` (or it is null).
    #[error("no interruption bucket `r`")]
    MissingBucket,
    /// `r` or `s` is not a number.
    #[error("`{field}` is {found}, not a number")]
    WrongType {
        /// The field.
        field: EntryField,
        /// What the feed has instead.
        found: JsonKind,
    },
    /// `r` or `s` is a number with a fraction.
    #[error("`{field}` = {value} is not a whole number")]
    NotAWholeNumber {
        /// The field.
        field: EntryField,
        /// The feed's value.
        value: f64,
    },
    /// `r` is not a known bucket, or `s` is not a percentage.
    #[error("`{field}` = {value} is outside 0..={}", .field.max())]
    OutOfRange {
        /// The field.
        field: EntryField,
        /// The feed's value.
        value: f64,
    },
}

impl SkipReason {
    /// Every value [`SkipReason::metric_label`] returns, for metrics that must show zeros too.
    pub const METRIC_LABELS: [&'static str; 4] = [
        "not_an_object",
        "missing_bucket",
        "wrong_type",
        "out_of_range",
    ];

    /// A short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            SkipReason::RegionNotAnObject { .. }
            | SkipReason::LinuxNotAnObject { .. }
            | SkipReason::EntryNotAnObject { .. } => "not_an_object",
            SkipReason::MissingBucket => "missing_bucket",
            SkipReason::WrongType { .. } | SkipReason::NotAWholeNumber { .. } => "wrong_type",
            SkipReason::OutOfRange { .. } => "out_of_range",
        }
    }
}

/// A field of an entry that is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryField {
    /// `r`, the interruption bucket, 0..=[`MAX_BUCKET`].
    Bucket,
    /// `s`, savings over on-demand, 0..=[`MAX_SAVINGS_PERCENT`].
    Savings,
}

impl EntryField {
    /// The largest value allowed.
    pub fn max(self) -> u8 {
        match self {
            EntryField::Bucket => MAX_BUCKET,
            EntryField::Savings => MAX_SAVINGS_PERCENT,
        }
    }
}

impl fmt::Display for EntryField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EntryField::Bucket => "r",
            EntryField::Savings => "s",
        })
    }
}

/// The kind of a JSON value, to say what the feed has where something else was expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonKind {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool,
    /// A number.
    Number,
    /// A string.
    String,
    /// An array.
    Array,
    /// An object.
    Object,
}

impl JsonKind {
    /// The kind of `value`.
    pub fn of(value: &Value) -> JsonKind {
        match value {
            Value::Null => JsonKind::Null,
            Value::Bool(_) => JsonKind::Bool,
            Value::Number(_) => JsonKind::Number,
            Value::String(_) => JsonKind::String,
            Value::Array(_) => JsonKind::Array,
            Value::Object(_) => JsonKind::Object,
        }
    }
}

impl fmt::Display for JsonKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JsonKind::Null => "null",
            JsonKind::Bool => "a boolean",
            JsonKind::Number => "a number",
            JsonKind::String => "a string",
            JsonKind::Array => "an array",
            JsonKind::Object => "an object",
        })
    }
}

/// The top level; `instance_types`, `global_rate` and whatever AWS adds are ignored unparsed.
#[derive(Deserialize)]
struct Feed {
    #[serde(default)]
    ranges: Option<Value>,
    #[serde(default)]
    spot_advisor: Option<Value>,
}

/// Parses the Spot Advisor feed JSON (a file or a URL body). Errors say `spot-advisor.json`; use
/// [`SpotAdvisor::parse`] to name the source differently.
pub fn parse_spot_advisor(json: &str) -> Result<SpotAdvisor, CatalogError> {
    SpotAdvisor::parse(super::SPOT_ADVISOR_FILE, json)
}

impl SpotAdvisor {
    /// Parses the Spot Advisor feed JSON; `source` (a path or URL) names it in errors. Unusable entries
    /// are skipped (see [`SpotAdvisor::skipped`]); only a document that is not JSON or has no
    /// `spot_advisor` object is an error.
    pub fn parse(source: &str, json: &str) -> Result<SpotAdvisor, CatalogError> {
        let feed: Feed = serde_json::from_str(json).map_err(|e| CatalogError::Json {
            file: source.to_string(),
            line: e.line(),
            column: e.column(),
            problem: e.to_string(),
        })?;
        let Some(Value::Object(table)) = feed.spot_advisor else {
            return Err(CatalogError::NoAdvisorTable {
                file: source.to_string(),
                found: feed.spot_advisor.as_ref().map(JsonKind::of),
            });
        };
        let mut advisor = SpotAdvisor {
            ranges: feed.ranges.as_ref().map(parse_ranges).unwrap_or_default(),
            ..SpotAdvisor::default()
        };
        for (region, value) in &table {
            advisor.add_region(region, value);
        }
        Ok(advisor)
    }

    /// Adds the Linux entries of one region; other OS keys are not ours to judge.
    fn add_region(&mut self, region: &str, value: &Value) {
        let skip = |instance_type: Option<&str>, reason| SkippedEntry {
            region: region.to_string(),
            instance_type: instance_type.map(str::to_string),
            reason,
        };
        let Value::Object(systems) = value else {
            let found = JsonKind::of(value);
            self.skipped
                .push(skip(None, SkipReason::RegionNotAnObject { found }));
            return;
        };
        let entries = self.regions.entry(region.to_string()).or_default();
        match systems.get("Linux") {
            None => {}
            Some(Value::Object(linux)) => {
                for (instance_type, entry) in linux {
                    match parse_entry(entry) {
                        Ok(entry) => {
                            entries.insert(instance_type.clone(), entry);
                        }
                        Err(reason) => self.skipped.push(skip(Some(instance_type), reason)),
                    }
                }
            }
            Some(other) => {
                let found = JsonKind::of(other);
                self.skipped
                    .push(skip(None, SkipReason::LinuxNotAnObject { found }));
            }
        }
    }

    /// The entry of `instance_type` in `region`, if the feed has a usable one.
    pub fn entry(&self, region: &str, instance_type: &str) -> Option<&AdvisorEntry> {
        self.regions.get(region)?.get(instance_type)
    }

    /// The interruption bucket (0..=4) of `instance_type` in `region`, if the feed has one.
    pub fn bucket(&self, region: &str, instance_type: &str) -> Option<u8> {
        self.entry(region, instance_type).map(|e| e.bucket)
    }

    /// The regions the feed covers, sorted.
    pub fn regions(&self) -> impl Iterator<Item = &str> {
        self.regions.keys().map(String::as_str)
    }

    /// Every (instance type, entry) of `region`, sorted by instance type.
    pub fn entries(&self, region: &str) -> impl Iterator<Item = (&str, &AdvisorEntry)> {
        self.regions
            .get(region)
            .into_iter()
            .flatten()
            .map(|(t, e)| (t.as_str(), e))
    }

    /// The feed's `ranges` table (what each bucket means), as given; rows that do not fit
    /// [`AdvisorRange`] are left out (nothing is decided from this table).
    pub fn ranges(&self) -> &[AdvisorRange] {
        &self.ranges
    }

    /// The Linux entries (or whole regions) left out because they could not be used, in feed order.
    pub fn skipped(&self) -> &[SkippedEntry] {
        &self.skipped
    }
}

/// The first `named` skipped entries with their reasons, and how many more there are: what a warning
/// says, so a feed with thousands of odd entries does not flood the log.
pub fn name_a_few(skipped: &[SkippedEntry], named: usize) -> String {
    let listed: Vec<String> = skipped
        .iter()
        .take(named)
        .map(ToString::to_string)
        .collect();
    match skipped.len().saturating_sub(named) {
        0 => listed.join("; "),
        more => format!("{}; and {more} more", listed.join("; ")),
    }
}

/// One Linux entry: `r` must be a bucket, `s` (optional) a percentage; other fields are ignored.
fn parse_entry(value: &Value) -> Result<AdvisorEntry, SkipReason> {
    let Value::Object(fields) = value else {
        return Err(SkipReason::EntryNotAnObject {
            found: JsonKind::of(value),
        });
    };
    let bucket = match fields.get("r") {
        None | Some(Value::Null) => return Err(SkipReason::MissingBucket),
        Some(r) => whole_number(EntryField::Bucket, r)?,
    };
    let savings_percent = match fields.get("s") {
        None | Some(Value::Null) => None,
        Some(s) => Some(whole_number(EntryField::Savings, s)?),
    };
    Ok(AdvisorEntry {
        bucket,
        savings_percent,
    })
}

/// `value` as a whole number from 0 to `field.max()` (`2.0` counts as whole).
fn whole_number(field: EntryField, value: &Value) -> Result<u8, SkipReason> {
    let Some(number) = value.as_f64() else {
        return Err(SkipReason::WrongType {
            field,
            found: JsonKind::of(value),
        });
    };
    if number.fract() != 0.0 {
        return Err(SkipReason::NotAWholeNumber {
            field,
            value: number,
        });
    }
    if !(0.0..=f64::from(field.max())).contains(&number) {
        return Err(SkipReason::OutOfRange {
            field,
            value: number,
        });
    }
    // In 0..=100 and whole: the conversion is exact.
    Ok(number as u8)
}

/// The rows of `ranges` that fit [`AdvisorRange`].
fn parse_ranges(value: &Value) -> Vec<AdvisorRange> {
    let Value::Array(rows) = value else {
        return Vec::new();
    };
    rows.iter()
        .filter_map(|row| AdvisorRange::deserialize(row).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FEED: &str = r#"{
        "global_rate": "<10%",
        "instance_types": {"m5.large": {"emr": true, "cores": 2, "ram_gb": 8.0}},
        "ranges": [{"index":0,"label":"<5%","dots":0,"max":5},{"index":4,"label":">20%","dots":4,"max":100}],
        "spot_advisor": {
            "us-east-1": {
                "Linux": {"m5.large": {"s": 70, "r": 1}, "c5.large": {"s": 60, "r": 4}},
                "Windows": {"m5.large": {"s": 50, "r": 3}}
            },
            "eu-west-1": {"Windows": {"m5.large": {"s": 50, "r": 2}}}
        }
    }"#;

    /// A feed of one region whose Linux table is `linux`.
    fn linux(linux: &str) -> SpotAdvisor {
        parse_spot_advisor(&format!(
            r#"{{"spot_advisor": {{"us-east-1": {{"Linux": {linux}}}}}}}"#
        ))
        .expect("a feed with odd entries still parses")
    }

    /// The single skipped entry's reason, with the good entry `m5.large` kept beside it.
    fn only_skip(advisor: &SpotAdvisor) -> &SkipReason {
        assert_eq!(
            advisor.bucket("us-east-1", "m5.large"),
            Some(1),
            "{advisor:?}"
        );
        assert_eq!(advisor.skipped().len(), 1, "{:?}", advisor.skipped());
        &advisor.skipped()[0].reason
    }

    #[test]
    fn parses_linux_entries_and_ignores_windows_and_unknown_fields() {
        let advisor = parse_spot_advisor(FEED).unwrap();
        assert_eq!(advisor.bucket("us-east-1", "m5.large"), Some(1));
        assert_eq!(
            advisor
                .entry("us-east-1", "c5.large")
                .unwrap()
                .savings_percent,
            Some(60)
        );
        assert_eq!(advisor.bucket("eu-west-1", "m5.large"), None);
        assert_eq!(advisor.ranges()[1].label, ">20%");
        assert_eq!(
            advisor.regions().collect::<Vec<_>>(),
            ["eu-west-1", "us-east-1"]
        );
        assert!(advisor.skipped().is_empty());
    }

    #[test]
    fn unknown_regions_os_keys_types_and_fields_are_accepted() {
        let advisor = parse_spot_advisor(
            r#"{"future_key": [1, 2], "spot_advisor": {
                "xx-mars-9": {"Linux": {"zz99.mega": {"s": 12, "r": 3, "p": "new"}},
                              "macOS": {"zz99.mega": "anything"}, "RHEL": 42}}}"#,
        )
        .unwrap();
        assert_eq!(
            advisor.entry("xx-mars-9", "zz99.mega"),
            Some(&AdvisorEntry {
                bucket: 3,
                savings_percent: Some(12)
            })
        );
        assert!(advisor.skipped().is_empty(), "{:?}", advisor.skipped());
    }

    #[test]
    fn negative_savings_skips_the_entry_and_keeps_the_rest() {
        let advisor =
            linux(r#"{"m5.large": {"s": 70, "r": 1}, "p5.48xlarge": {"s": -62, "r": 0}}"#);
        assert_eq!(
            only_skip(&advisor),
            &SkipReason::OutOfRange {
                field: EntryField::Savings,
                value: -62.0
            }
        );
        assert_eq!(advisor.bucket("us-east-1", "p5.48xlarge"), None);
        assert_eq!(
            advisor.skipped()[0].to_string(),
            "spot_advisor.us-east-1.Linux.p5.48xlarge: `s` = -62 is outside 0..=100"
        );
    }

    #[test]
    fn savings_above_100_is_skipped() {
        let advisor = linux(r#"{"m5.large": {"s": 70, "r": 1}, "x.large": {"s": 101, "r": 1}}"#);
        assert_eq!(only_skip(&advisor).metric_label(), "out_of_range");
    }

    #[test]
    fn unknown_bucket_is_skipped_with_the_allowed_range() {
        let advisor = linux(r#"{"m5.large": {"s": 70, "r": 1}, "x.large": {"s": 10, "r": 7}}"#);
        let reason = only_skip(&advisor);
        assert_eq!(
            reason,
            &SkipReason::OutOfRange {
                field: EntryField::Bucket,
                value: 7.0
            }
        );
        assert_eq!(reason.to_string(), "`r` = 7 is outside 0..=4");
    }

    #[test]
    fn negative_bucket_is_skipped() {
        let advisor = linux(r#"{"m5.large": {"s": 70, "r": 1}, "x.large": {"r": -1}}"#);
        assert_eq!(only_skip(&advisor).metric_label(), "out_of_range");
    }

    #[test]
    fn bucket_of_the_wrong_type_is_skipped() {
        let advisor = linux(r#"{"m5.large": {"s": 70, "r": 1}, "x.large": {"s": 1, "r": "high"}}"#);
        assert_eq!(
            only_skip(&advisor),
            &SkipReason::WrongType {
                field: EntryField::Bucket,
                found: JsonKind::String
            }
        );
    }

    #[test]
    fn fractional_savings_is_skipped_and_whole_floats_are_accepted() {
        let advisor =
            linux(r#"{"m5.large": {"s": 70.0, "r": 1.0}, "x.large": {"s": 7.5, "r": 1}}"#);
        assert_eq!(
            only_skip(&advisor),
            &SkipReason::NotAWholeNumber {
                field: EntryField::Savings,
                value: 7.5
            }
        );
        assert_eq!(
            advisor
                .entry("us-east-1", "m5.large")
                .unwrap()
                .savings_percent,
            Some(70)
        );
    }

    #[test]
    fn missing_bucket_is_skipped_and_missing_savings_is_not() {
        let advisor = linux(
            r#"{"m5.large": {"r": 1}, "x.large": {"s": 50}, "y.large": {"s": null, "r": null}}"#,
        );
        assert_eq!(
            advisor
                .entry("us-east-1", "m5.large")
                .unwrap()
                .savings_percent,
            None
        );
        let reasons: Vec<_> = advisor.skipped().iter().map(|s| &s.reason).collect();
        assert_eq!(
            reasons,
            [&SkipReason::MissingBucket, &SkipReason::MissingBucket]
        );
    }

    #[test]
    fn an_entry_that_is_not_an_object_is_skipped() {
        let advisor = linux(r#"{"m5.large": {"s": 70, "r": 1}, "x.large": [1, 2]}"#);
        assert_eq!(
            only_skip(&advisor),
            &SkipReason::EntryNotAnObject {
                found: JsonKind::Array
            }
        );
    }

    #[test]
    fn an_unusable_region_or_linux_table_is_skipped_and_other_regions_kept() {
        let advisor = parse_spot_advisor(
            r#"{"spot_advisor": {"us-east-1": {"Linux": {"m5.large": {"r": 1}}},
                "odd-1": "soon", "odd-2": {"Linux": [], "Windows": {}}}}"#,
        )
        .unwrap();
        assert_eq!(advisor.bucket("us-east-1", "m5.large"), Some(1));
        let skipped: Vec<_> = advisor.skipped().iter().map(|s| s.to_string()).collect();
        assert_eq!(
            skipped,
            [
                "spot_advisor.odd-1: the region is a string, not an object",
                "spot_advisor.odd-2.Linux: `Linux` is an array, not an object",
            ]
        );
    }

    #[test]
    fn odd_ranges_rows_are_left_out() {
        let advisor = parse_spot_advisor(
            r#"{"ranges": [{"index": 0, "label": "<5%", "max": 5}, {"index": -1}],
                "spot_advisor": {}}"#,
        )
        .unwrap();
        assert_eq!(advisor.ranges().len(), 1);
    }

    #[test]
    fn a_document_without_a_spot_advisor_object_is_an_error() {
        for (json, found) in [
            ("{}", "missing"),
            (r#"{"Code": "AccessDenied"}"#, "missing"),
            (r#"{"spot_advisor": []}"#, "an array"),
        ] {
            let err = parse_spot_advisor(json).unwrap_err().to_string();
            assert!(
                err.contains("spot-advisor.json: no `spot_advisor` object") && err.contains(found),
                "{json}: {err}"
            );
        }
    }

    #[test]
    fn malformed_json_names_line_and_column() {
        let err = SpotAdvisor::parse("feed.json", "{\n\"spot_advisor\": {\"us-east-1\": ")
            .unwrap_err()
            .to_string();
        assert!(err.contains("feed.json: line 2"), "{err}");
    }

    #[test]
    fn an_empty_spot_advisor_object_is_an_empty_feed() {
        let advisor = parse_spot_advisor(r#"{"spot_advisor": {}}"#).unwrap();
        assert_eq!(advisor.regions().count(), 0);
    }
}
