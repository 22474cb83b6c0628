//! Interruption notices (DESIGN.md section 6): what an EventBridge message delivered through SQS says,
//! what to do about it, and which messages were already handled. Pure: the controller passes the
//! message body and the clock.
//!
//! Shapes (EventBridge envelope: `id`, `detail-type`, `source`, `time`, `resources`, `detail`):
//! - `EC2 Spot Instance Interruption Warning`: `detail.instance-id`, `detail.instance-action`.
//! - `EC2 Instance Rebalance Recommendation`: `detail.instance-id`.
//! - `EC2 Instance State-change Notification`: `detail.instance-id`, `detail.state`.
//! - `AWS Health Event` with `detail.eventTypeCategory: scheduledChange` (source `aws.health`):
//!   instances in `detail.affectedEntities[].entityValue` or in `resources`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::Value;

/// What a notice announces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoticeKind {
    /// EC2 will reclaim the Spot instance in 2 minutes.
    SpotInterruption,
    /// EC2 recommends moving off the Spot instance (elevated risk).
    Rebalance,
    /// The instance changed state (`stopping`, `stopped`, `shutting-down`, `terminated`, ...).
    StateChange(String),
    /// AWS Health scheduled maintenance for the instance.
    ScheduledChange,
    /// An Auto Scaling group could not launch an instance (`EC2 Instance Launch Unsuccessful`);
    /// `spot_capacity` when the reason is a lack of Spot capacity (the group falls back to on-demand).
    LaunchFailed {
        /// The Auto Scaling group.
        group: String,
        /// The failure is about Spot capacity.
        spot_capacity: bool,
    },
}

impl NoticeKind {
    /// The `kind` label of `cloudoptim_interruptions_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            NoticeKind::SpotInterruption => "spot_interruption",
            NoticeKind::Rebalance => "rebalance",
            NoticeKind::StateChange(_) => "state_change",
            NoticeKind::ScheduledChange => "scheduled_change",
            NoticeKind::LaunchFailed { .. } => "launch_failed",
        }
    }
}

/// One parsed notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// EventBridge event id (the dedupe key).
    pub event_id: String,
    /// What it announces.
    pub kind: NoticeKind,
    /// The instances concerned.
    pub instance_ids: Vec<String>,
    /// When the event happened (RFC 3339 `time`), unix milliseconds.
    pub time_millis: Option<i64>,
}

/// A message that is not a notice CloudOptim acts on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoticeError {
    /// Not JSON, or missing a field the kind requires.
    #[error("malformed interruption message: {0}")]
    Malformed(String),
    /// Well-formed, but not one of the four kinds.
    #[error(
        "unknown event type {0:?}; only Spot interruption warnings, rebalance recommendations, instance state changes and AWS Health scheduled changes are handled"
    )]
    Unknown(String),
}

impl NoticeError {
    /// The `kind` label of `cloudoptim_interruptions_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            NoticeError::Malformed(_) => "malformed",
            NoticeError::Unknown(_) => "unknown",
        }
    }
}

fn text<'v>(value: &'v Value, pointer: &str) -> Option<&'v str> {
    value.pointer(pointer).and_then(Value::as_str)
}

fn instance(detail_id: Option<&str>) -> Result<Vec<String>, NoticeError> {
    match detail_id {
        Some(id) if id.starts_with("i-") => Ok(vec![id.to_string()]),
        Some(id) => Err(NoticeError::Malformed(format!(
            "detail.instance-id {id:?} is not an instance id"
        ))),
        None => Err(NoticeError::Malformed("detail.instance-id missing".into())),
    }
}

/// Parse an SQS message body holding an EventBridge event.
pub fn parse(body: &str) -> Result<Notice, NoticeError> {
    let value: Value =
        serde_json::from_str(body).map_err(|e| NoticeError::Malformed(format!("not JSON: {e}")))?;
    let event_id = text(&value, "/id")
        .filter(|id| !id.is_empty())
        .ok_or_else(|| NoticeError::Malformed("id missing".into()))?
        .to_string();
    let detail_type = text(&value, "/detail-type")
        .ok_or_else(|| NoticeError::Malformed("detail-type missing".into()))?;
    let time_millis = text(&value, "/time")
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.timestamp_millis());
    let (kind, instance_ids) = match detail_type {
        "EC2 Spot Instance Interruption Warning" => (
            NoticeKind::SpotInterruption,
            instance(text(&value, "/detail/instance-id"))?,
        ),
        "EC2 Instance Rebalance Recommendation" => (
            NoticeKind::Rebalance,
            instance(text(&value, "/detail/instance-id"))?,
        ),
        "EC2 Instance State-change Notification" => {
            let state = text(&value, "/detail/state")
                .ok_or_else(|| NoticeError::Malformed("detail.state missing".into()))?;
            (
                NoticeKind::StateChange(state.to_string()),
                instance(text(&value, "/detail/instance-id"))?,
            )
        }
        "AWS Health Event"
            if text(&value, "/detail/eventTypeCategory") == Some("scheduledChange") =>
        {
            let mut ids: Vec<String> = value
                .pointer("/detail/affectedEntities")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|e| e.get("entityValue").and_then(Value::as_str))
                .chain(
                    value
                        .get("resources")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .filter_map(|r| r.rsplit('/').next()),
                )
                .filter(|id| id.starts_with("i-"))
                .map(str::to_string)
                .collect();
            ids.sort();
            ids.dedup();
            if ids.is_empty() {
                return Err(NoticeError::Malformed(
                    "AWS Health scheduled change names no instance".into(),
                ));
            }
            (NoticeKind::ScheduledChange, ids)
        }
        "EC2 Instance Launch Unsuccessful" => {
            let group = text(&value, "/detail/AutoScalingGroupName")
                .filter(|g| !g.is_empty())
                .ok_or_else(|| {
                    NoticeError::Malformed("detail.AutoScalingGroupName missing".into())
                })?;
            let message = text(&value, "/detail/StatusMessage").unwrap_or_default();
            (
                NoticeKind::LaunchFailed {
                    group: group.to_string(),
                    spot_capacity: is_spot_capacity_error(message),
                },
                Vec::new(),
            )
        }
        other => return Err(NoticeError::Unknown(other.to_string())),
    };
    Ok(Notice {
        event_id,
        kind,
        instance_ids,
        time_millis,
    })
}

/// Does an Auto Scaling launch failure message say Spot capacity was missing?
pub fn is_spot_capacity_error(message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    lower.contains("spot")
        && [
            "insufficientinstancecapacity",
            "capacity",
            "maxspotinstancecountexceeded",
            "unfulfillablecapacity",
            "spotmaxpricetoolow",
        ]
        .iter()
        .any(|needle| lower.contains(needle))
}

/// What a rebalance recommendation does (the policy's `interruptions.rebalance`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebalancePolicy {
    /// Nothing.
    Ignore,
    /// Cordon only.
    Cordon,
    /// Cordon and drain.
    Drain,
}

/// What to do with a node a notice names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Response {
    /// Nothing (e.g. a state change to `running`).
    Nothing,
    /// Taint and cordon.
    Cordon,
    /// Taint, cordon, and drain by the deadline; the node is going away.
    Drain,
}

/// The response to a notice.
pub fn respond(kind: &NoticeKind, rebalance: RebalancePolicy) -> Response {
    match kind {
        NoticeKind::SpotInterruption | NoticeKind::ScheduledChange => Response::Drain,
        NoticeKind::Rebalance => match rebalance {
            RebalancePolicy::Ignore => Response::Nothing,
            RebalancePolicy::Cordon => Response::Cordon,
            RebalancePolicy::Drain => Response::Drain,
        },
        NoticeKind::LaunchFailed { .. } => Response::Nothing,
        NoticeKind::StateChange(state) => match state.as_str() {
            "stopping" | "stopped" | "shutting-down" | "terminated" => Response::Drain,
            _ => Response::Nothing,
        },
    }
}

/// Event ids seen in the last `ttl` (5 minutes in the operator): a redelivered or duplicated message is
/// handled once. An id is forgotten again when handling it failed, so the redelivery is handled.
#[derive(Debug)]
pub struct Dedupe {
    ttl: Duration,
    seen: HashMap<String, Instant>,
}

impl Dedupe {
    /// An empty set with this time to live.
    pub fn new(ttl: Duration) -> Dedupe {
        Dedupe {
            ttl,
            seen: HashMap::new(),
        }
    }

    /// True the first time `id` is offered within the TTL (and records it), false for a duplicate.
    pub fn first(&mut self, id: &str, now: Instant) -> bool {
        let ttl = self.ttl;
        self.seen.retain(|_, at| now.duration_since(*at) < ttl);
        if self.seen.contains_key(id) {
            return false;
        }
        self.seen.insert(id.to_string(), now);
        true
    }

    /// Forget `id` (its handling failed; the message will come back).
    pub fn forget(&mut self, id: &str) {
        self.seen.remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spot(id: &str, instance: &str) -> String {
        json!({
            "version": "0", "id": id, "detail-type": "EC2 Spot Instance Interruption Warning",
            "source": "aws.ec2", "account": "123456789012", "time": "2026-11-23T10:00:00Z",
            "region": "us-east-1", "resources": [format!("arn:aws:ec2:us-east-1a:instance/{instance}")],
            "detail": {"instance-id": instance, "instance-action": "terminate"}
        })
        .to_string()
    }

    #[test]
    fn the_four_kinds_parse_from_their_real_shapes() {
        let n = parse(&spot("e1", "i-0abc")).expect("spot");
        assert_eq!(n.kind, NoticeKind::SpotInterruption);
        assert_eq!(n.instance_ids, vec!["i-0abc"]);
        let at = chrono::DateTime::parse_from_rfc3339("2026-11-23T10:00:00Z").expect("time");
        assert_eq!(n.time_millis, Some(at.timestamp_millis()));
        let rebalance = json!({"id": "e2", "detail-type": "EC2 Instance Rebalance Recommendation",
            "source": "aws.ec2", "time": "2026-11-23T10:00:00Z", "detail": {"instance-id": "i-1"}});
        assert_eq!(
            parse(&rebalance.to_string()).expect("rebalance").kind,
            NoticeKind::Rebalance
        );
        let state = json!({"id": "e3", "detail-type": "EC2 Instance State-change Notification",
            "source": "aws.ec2", "detail": {"instance-id": "i-2", "state": "shutting-down"}});
        assert_eq!(
            parse(&state.to_string()).expect("state").kind,
            NoticeKind::StateChange("shutting-down".into())
        );
        let health = json!({"id": "e4", "detail-type": "AWS Health Event", "source": "aws.health",
            "resources": ["i-4"], "detail": {"service": "EC2", "eventTypeCategory": "scheduledChange",
            "affectedEntities": [{"entityValue": "i-3"}, {"entityValue": "i-4"}]}});
        let n = parse(&health.to_string()).expect("health");
        assert_eq!(n.kind, NoticeKind::ScheduledChange);
        assert_eq!(n.instance_ids, vec!["i-3", "i-4"]);
    }

    #[test]
    fn bad_and_foreign_messages_are_classified_not_fatal() {
        assert_eq!(
            parse("not json").expect_err("x").metric_label(),
            "malformed"
        );
        assert_eq!(parse("{}").expect_err("x").metric_label(), "malformed");
        let no_instance = json!({"id": "e", "detail-type": "EC2 Spot Instance Interruption Warning", "detail": {}});
        assert!(
            parse(&no_instance.to_string())
                .expect_err("x")
                .to_string()
                .contains("instance-id")
        );
        let other = json!({"id": "e", "detail-type": "EC2 AMI State Change", "detail": {}});
        assert_eq!(
            parse(&other.to_string()).expect_err("x").metric_label(),
            "unknown"
        );
        let health = json!({"id": "e", "detail-type": "AWS Health Event", "detail": {"eventTypeCategory": "issue"}});
        assert_eq!(
            parse(&health.to_string()).expect_err("x").metric_label(),
            "unknown"
        );
    }

    #[test]
    fn responses_follow_the_policy() {
        assert_eq!(
            respond(&NoticeKind::SpotInterruption, RebalancePolicy::Ignore),
            Response::Drain
        );
        assert_eq!(
            respond(&NoticeKind::Rebalance, RebalancePolicy::Ignore),
            Response::Nothing
        );
        assert_eq!(
            respond(&NoticeKind::Rebalance, RebalancePolicy::Cordon),
            Response::Cordon
        );
        assert_eq!(
            respond(&NoticeKind::Rebalance, RebalancePolicy::Drain),
            Response::Drain
        );
        assert_eq!(
            respond(
                &NoticeKind::StateChange("running".into()),
                RebalancePolicy::Cordon
            ),
            Response::Nothing
        );
        assert_eq!(
            respond(
                &NoticeKind::StateChange("stopped".into()),
                RebalancePolicy::Cordon
            ),
            Response::Drain
        );
    }

    #[test]
    fn duplicates_within_the_ttl_are_handled_once_and_failures_are_retried() {
        let mut d = Dedupe::new(Duration::from_secs(300));
        let t0 = Instant::now();
        assert!(d.first("a", t0));
        assert!(!d.first("a", t0 + Duration::from_secs(299)));
        assert!(d.first("a", t0 + Duration::from_secs(300)));
        d.forget("a");
        assert!(d.first("a", t0 + Duration::from_secs(301)));
    }

    #[test]
    fn launch_failures_name_the_group_and_spot_capacity_errors_are_recognised() {
        let failed = json!({"id": "e5", "detail-type": "EC2 Instance Launch Unsuccessful",
            "source": "aws.autoscaling", "detail": {"AutoScalingGroupName": "spot-a",
            "StatusCode": "Failed",
            "StatusMessage": "Could not launch Spot Instances. InsufficientInstanceCapacity - There is no Spot capacity available that matches your request. Launching EC2 instance failed."}});
        let n = parse(&failed.to_string()).expect("launch failure");
        assert_eq!(
            n.kind,
            NoticeKind::LaunchFailed {
                group: "spot-a".into(),
                spot_capacity: true
            }
        );
        assert!(n.instance_ids.is_empty());
        assert!(!is_spot_capacity_error(
            "The requested configuration is currently not supported. Launching EC2 instance failed."
        ));
        let no_group =
            json!({"id": "e6", "detail-type": "EC2 Instance Launch Unsuccessful", "detail": {}});
        assert_eq!(
            parse(&no_group.to_string()).expect_err("x").metric_label(),
            "malformed"
        );
    }
}
