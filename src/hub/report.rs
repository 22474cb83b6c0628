//! The hub's wire format: the body of `POST /v1/flags`, checked field by field so a 400 names the
//! field, and the JSON shape of a flag in `GET /v1/flags` and the watch stream.

use std::collections::BTreeSet;

use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::store::{Flag, FlagKey, Report};
use crate::api::risk_flag::RiskReason;

/// Fields of a report body; any other field is refused.
const FIELDS: [&str; 6] = [
    "clusterId",
    "region",
    "zone",
    "instanceType",
    "reason",
    "observedAt",
];

/// How far in the future `observedAt` may be (clock skew between clusters).
pub const MAX_SKEW_SECONDS: i64 = 300;

/// A report body that cannot be accepted; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidReport(pub String);

fn invalid(field: &str, message: impl std::fmt::Display) -> InvalidReport {
    InvalidReport(format!("{field}: {message}"))
}

/// Parse and validate a report body at `now_ms` (Unix milliseconds).
pub fn parse_report(body: &[u8], now_ms: i64) -> Result<Report, InvalidReport> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| InvalidReport(format!("body is not valid JSON: {e}")))?;
    let Value::Object(object) = value else {
        return Err(InvalidReport("body must be a JSON object".into()));
    };
    if let Some(unknown) = object.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(invalid(
            unknown,
            format!("unknown field; expected only {}", FIELDS.join(", ")),
        ));
    }
    let cluster = string(&object, "clusterId")?;
    check_cluster_id(cluster).map_err(|m| invalid("clusterId", m))?;
    let region = string(&object, "region")?;
    check_region(region)?;
    let zone = string(&object, "zone")?;
    check_zone(region, zone)?;
    let instance_type = string(&object, "instanceType")?;
    check_instance_type(instance_type)?;
    let reason = parse_reason(string(&object, "reason")?)?;
    let observed = string(&object, "observedAt")?;
    let observed: Timestamp = observed.parse().map_err(|_| {
        invalid(
            "observedAt",
            format!("{observed:?} is not an RFC 3339 time such as 2026-11-23T10:00:00Z"),
        )
    })?;
    let observed_ms = observed.as_millisecond();
    if observed_ms > now_ms + MAX_SKEW_SECONDS * 1000 {
        return Err(invalid(
            "observedAt",
            format!("{observed} is more than {MAX_SKEW_SECONDS} s in the future"),
        ));
    }
    Ok(Report {
        cluster: cluster.to_string(),
        key: FlagKey {
            region: region.to_string(),
            zone: zone.to_string(),
            instance_type: instance_type.to_string(),
        },
        reason,
        observed_ms,
    })
}

fn string<'a>(object: &'a Map<String, Value>, field: &str) -> Result<&'a str, InvalidReport> {
    match object.get(field) {
        None => Err(invalid(field, "missing")),
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(invalid(field, format!("expected a string, found {other}"))),
    }
}

fn lower_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// A cluster id: what a token file may be named and what a flag lists: 1-63 characters of lowercase
/// letters, digits, `-` and `.`, starting and ending with a letter or digit.
pub fn check_cluster_id(id: &str) -> Result<(), String> {
    let ok = (1..=63).contains(&id.len())
        && id.chars().all(|c| lower_alnum(c) || c == '-' || c == '.')
        && id.starts_with(lower_alnum)
        && id.ends_with(lower_alnum);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{id:?} is not a cluster id (1-63 of a-z, 0-9, '-', '.', starting and ending with a letter or digit)"
        ))
    }
}

/// A region such as `us-east-1`: lowercase words and a number, joined by `-`.
fn check_region(region: &str) -> Result<(), InvalidReport> {
    let parts: Vec<&str> = region.split('-').collect();
    let ok = region.len() <= 32
        && parts.len() >= 3
        && parts[0].len() == 2
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(lower_alnum))
        && parts[0].chars().all(|c| c.is_ascii_lowercase())
        && parts[parts.len() - 1].chars().all(|c| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "region",
            format!("{region:?} is not an AWS region such as us-east-1"),
        ))
    }
}

/// A zone of `region`: the region followed by a zone suffix such as `a` or `-bos-1a` (Local Zones).
fn check_zone(region: &str, zone: &str) -> Result<(), InvalidReport> {
    let Some(suffix) = zone.strip_prefix(region) else {
        return Err(invalid(
            "zone",
            format!("{zone:?} is not a zone of region {region} (e.g. {region}a)"),
        ));
    };
    let ok = zone.len() <= 40
        && !suffix.is_empty()
        && suffix.chars().all(|c| lower_alnum(c) || c == '-')
        && suffix.ends_with(|c: char| c.is_ascii_lowercase())
        && !suffix.contains("--");
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "zone",
            format!("{zone:?} is not a zone of region {region} (e.g. {region}a)"),
        ))
    }
}

/// An instance type such as `m5.large`, `u-6tb1.metal` or `mac2-m2pro.metal`: family `.` size.
fn check_instance_type(instance_type: &str) -> Result<(), InvalidReport> {
    let word = |s: &str| {
        !s.is_empty()
            && s.chars().all(|c| lower_alnum(c) || c == '-')
            && s.starts_with(lower_alnum)
            && s.ends_with(lower_alnum)
    };
    let ok = instance_type.len() <= 64
        && instance_type.split_once('.').is_some_and(|(family, size)| {
            family.starts_with(|c: char| c.is_ascii_lowercase()) && word(family) && word(size)
        });
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "instanceType",
            format!("{instance_type:?} is not an EC2 instance type such as m5.large"),
        ))
    }
}

fn parse_reason(reason: &str) -> Result<RiskReason, InvalidReport> {
    match reason {
        "SpotInterruption" => Ok(RiskReason::SpotInterruption),
        "Rebalance" => Ok(RiskReason::Rebalance),
        "CapacityError" => Ok(RiskReason::CapacityError),
        other => Err(invalid(
            "reason",
            format!("{other:?} is not one of SpotInterruption, Rebalance, CapacityError"),
        )),
    }
}

/// A flag as the API shows it (also what members read from the watch stream).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FlagView {
    /// The SpotRiskFlag name, `<region>.<zone>.<instance-type>`.
    pub name: String,
    /// AWS region.
    pub region: String,
    /// Availability zone.
    pub zone: String,
    /// EC2 instance type.
    pub instance_type: String,
    /// Reason of the latest report.
    pub reason: RiskReason,
    /// First report, RFC 3339.
    pub first_seen: Timestamp,
    /// Latest report, RFC 3339.
    pub last_seen: Timestamp,
    /// Distinct reports merged.
    pub count: u32,
    /// Reporting cluster ids, sorted.
    pub clusters: Vec<String>,
    /// When the flag stops applying, RFC 3339.
    pub expires_at: Timestamp,
}

fn timestamp(seconds: i64) -> Timestamp {
    Timestamp::from_second(seconds).unwrap_or(Timestamp::MAX)
}

impl From<&Flag> for FlagView {
    fn from(flag: &Flag) -> FlagView {
        FlagView {
            name: flag.key.name(),
            region: flag.key.region.clone(),
            zone: flag.key.zone.clone(),
            instance_type: flag.key.instance_type.clone(),
            reason: flag.reason,
            first_seen: timestamp(flag.first_seen),
            last_seen: timestamp(flag.last_seen),
            count: flag.count,
            clusters: flag.clusters.iter().cloned().collect(),
            expires_at: timestamp(flag.expires_at),
        }
    }
}

impl From<&FlagView> for Flag {
    fn from(view: &FlagView) -> Flag {
        Flag {
            key: FlagKey {
                region: view.region.clone(),
                zone: view.zone.clone(),
                instance_type: view.instance_type.clone(),
            },
            reason: view.reason,
            first_seen: view.first_seen.as_second(),
            last_seen: view.last_seen.as_second(),
            count: view.count,
            clusters: view.clusters.iter().cloned().collect::<BTreeSet<_>>(),
            expires_at: view.expires_at.as_second(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW_MS: i64 = 1_800_000_000_000;

    fn body() -> Value {
        json!({"clusterId": "prod-eu", "region": "us-east-1", "zone": "us-east-1a",
               "instanceType": "m5.large", "reason": "SpotInterruption",
               "observedAt": "2027-01-15T08:00:00Z"})
    }

    fn parse(value: &Value) -> Result<Report, InvalidReport> {
        parse_report(value.to_string().as_bytes(), NOW_MS)
    }

    fn error_with(field: &str, value: Value) -> String {
        let mut body = body();
        body[field] = value;
        parse(&body).expect_err("refused").0
    }

    #[test]
    fn a_well_formed_report_parses() {
        let report = parse(&body()).expect("valid");
        assert_eq!(report.cluster, "prod-eu");
        assert_eq!(report.key.name(), "us-east-1.us-east-1a.m5.large");
        assert_eq!(report.reason, RiskReason::SpotInterruption);
        assert_eq!(report.observed_ms, NOW_MS);
    }

    #[test]
    fn an_unknown_field_is_named() {
        let mut body = body();
        body["nodeName"] = json!("ip-10-0-0-1");
        let err = parse(&body).expect_err("refused").0;
        assert!(err.starts_with("nodeName: unknown field"), "{err}");
    }

    #[test]
    fn a_missing_field_is_named() {
        let mut body = body();
        body.as_object_mut().expect("object").remove("zone");
        assert_eq!(parse(&body).expect_err("refused").0, "zone: missing");
    }

    #[test]
    fn a_field_of_the_wrong_type_is_named() {
        assert!(error_with("region", json!(7)).starts_with("region: expected a string"));
    }

    #[test]
    fn a_zone_outside_the_region_is_refused() {
        assert!(error_with("zone", json!("eu-west-1a")).starts_with("zone: "));
        assert!(error_with("zone", json!("us-east-1")).starts_with("zone: "));
        assert!(
            parse(&{
                let mut b = body();
                b["zone"] = json!("us-east-1-bos-1a");
                b
            })
            .is_ok()
        );
    }

    #[test]
    fn instance_types_must_look_like_family_dot_size() {
        for bad in ["m5", "m5.", ".large", "M5.large", "m5.large.x", "m5 large"] {
            assert!(
                error_with("instanceType", json!(bad)).starts_with("instanceType: "),
                "{bad}"
            );
        }
        for good in ["u-6tb1.metal", "mac2-m2pro.metal", "c7gn.16xlarge"] {
            let mut b = body();
            b["instanceType"] = json!(good);
            assert!(parse(&b).is_ok(), "{good}");
        }
    }

    #[test]
    fn regions_must_look_like_aws_regions() {
        for bad in ["us", "useast1", "US-EAST-1", "us-east-x", "us--1"] {
            assert!(
                error_with("region", json!(bad)).starts_with("region: "),
                "{bad}"
            );
        }
    }

    #[test]
    fn reason_must_be_one_of_the_enum() {
        let err = error_with("reason", json!("Meteor"));
        assert!(err.contains("reason: \"Meteor\" is not one of"), "{err}");
    }

    #[test]
    fn observed_at_must_be_rfc3339_and_not_in_the_future() {
        assert!(error_with("observedAt", json!("yesterday")).starts_with("observedAt: "));
        assert!(error_with("observedAt", json!("2030-01-01T00:00:00Z")).contains("future"));
    }

    #[test]
    fn cluster_ids_are_dns_like() {
        assert!(error_with("clusterId", json!("../etc")).starts_with("clusterId: "));
        assert!(error_with("clusterId", json!("")).starts_with("clusterId: "));
    }

    #[test]
    fn not_json_or_not_an_object_is_refused() {
        assert!(parse_report(b"{", NOW_MS).is_err());
        assert_eq!(
            parse_report(b"[]", NOW_MS).expect_err("refused").0,
            "body must be a JSON object"
        );
    }

    #[test]
    fn a_view_round_trips_to_the_same_flag() {
        let flag = Flag {
            key: FlagKey {
                region: "us-east-1".into(),
                zone: "us-east-1a".into(),
                instance_type: "m5.large".into(),
            },
            reason: RiskReason::Rebalance,
            first_seen: 1_800_000_000,
            last_seen: 1_800_000_100,
            count: 4,
            clusters: ["a".to_string(), "b".to_string()].into(),
            expires_at: 1_800_001_900,
        };
        let view = FlagView::from(&flag);
        let json = serde_json::to_value(&view).expect("serialises");
        assert_eq!(json["firstSeen"], "2027-01-15T08:00:00Z");
        assert_eq!(json["instanceType"], "m5.large");
        let back: FlagView = serde_json::from_value(json).expect("parses");
        assert_eq!(Flag::from(&back), flag);
    }
}
