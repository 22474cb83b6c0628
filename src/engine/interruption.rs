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
//! - `EC2 Instance Launch Unsuccessful` (source `aws.autoscaling`): `detail.AutoScalingGroupName`.
//! - `EC2 Instance-terminate Lifecycle Action` / `EC2 Instance-launch Lifecycle Action` (source
//!   `aws.autoscaling`): the action in `detail`; also Auto Scaling's own notification form, see
//!   [`super::lifecycle`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::lifecycle::{self, LifecycleAction};

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
    /// An Auto Scaling group is terminating an instance and waits on a lifecycle hook (scale-in, AZ
    /// rebalance, capacity rebalance, instance refresh): drain it, then complete the action.
    LifecycleTerminate(LifecycleAction),
    /// An Auto Scaling group is launching an instance and waits on a lifecycle hook: completed at once.
    LifecycleLaunch(LifecycleAction),
    /// The `autoscaling:TEST_NOTIFICATION` Auto Scaling sends when a hook's notification target is set.
    LifecycleTest,
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
            NoticeKind::LifecycleTerminate(_) => "lifecycle_terminate",
            NoticeKind::LifecycleLaunch(_) => "lifecycle_launch",
            NoticeKind::LifecycleTest => "lifecycle_test",
        }
    }

    /// The lifecycle action the notice waits on, if any.
    pub fn lifecycle_action(&self) -> Option<&LifecycleAction> {
        match self {
            NoticeKind::LifecycleTerminate(action) | NoticeKind::LifecycleLaunch(action) => {
                Some(action)
            }
            _ => None,
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
    /// The envelope's `source` (`aws.ec2`, `aws.health`, `aws.autoscaling`).
    pub source: Option<String>,
    /// The envelope's `account`.
    pub account: Option<String>,
    /// The envelope's `region` (`None` for Auto Scaling's own lifecycle notifications, which name none).
    pub region: Option<String>,
}

/// Where genuine notices for this cluster come from: its account (the queue's, when the queue URL
/// names it) and its region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The AWS account id, if known.
    pub account: Option<String>,
    /// The cluster's region.
    pub region: String,
}

impl Origin {
    /// The origin of notices arriving on `queue_url` (`https://sqs.<region>.amazonaws.com/<account>/<name>`)
    /// for a cluster in `region`.
    pub fn of_queue(queue_url: &str, region: &str) -> Origin {
        let segments: Vec<&str> = queue_url.split('/').filter(|s| !s.is_empty()).collect();
        let account = segments
            .len()
            .checked_sub(2)
            .and_then(|i| segments.get(i))
            .filter(|a| a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit()))
            .map(|a| a.to_string());
        Origin {
            account,
            region: region.to_string(),
        }
    }
}

/// Why a well-formed notice is not believed. Each is counted and logged with the message id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// `source` is not the AWS service that sends this kind.
    #[error("source {found:?} does not send {kind} notices (expected {expected})")]
    Source {
        /// The kind.
        kind: &'static str,
        /// What the kind requires.
        expected: &'static str,
        /// What the message says.
        found: String,
    },
    /// `account` is not this cluster's.
    #[error("account {found:?} is not this cluster's ({expected})")]
    Account {
        /// This cluster's account.
        expected: String,
        /// What the message says.
        found: String,
    },
    /// `region` is not this cluster's.
    #[error("region {found:?} is not this cluster's ({expected})")]
    Region {
        /// This cluster's region.
        expected: String,
        /// What the message says.
        found: String,
    },
    /// The event is older than the notice it carries (e.g. a Spot warning older than 2 minutes).
    #[error("the event is {age_seconds} s old, older than its {limit_seconds} s notice")]
    Stale {
        /// Its age.
        age_seconds: i64,
        /// The notice it carried.
        limit_seconds: i64,
    },
    /// The event time lies in the future (beyond clock skew).
    #[error("the event time is {ahead_seconds} s in the future")]
    Future {
        /// How far ahead.
        ahead_seconds: i64,
    },
    /// No event time.
    #[error("the event has no time")]
    NoTime,
}

impl Refusal {
    /// The `kind` label of `cloudoptim_interruptions_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Refusal::Source { .. } => "refused_source",
            Refusal::Account { .. } => "refused_account",
            Refusal::Region { .. } => "refused_region",
            Refusal::Stale { .. } => "refused_stale",
            Refusal::Future { .. } | Refusal::NoTime => "refused_time",
        }
    }
}

/// Clock skew tolerated for event times ahead of ours.
pub const MAX_SKEW_SECONDS: i64 = 300;

/// The service that sends a kind, and how long after the event it may still be acted on.
fn provenance(kind: &NoticeKind) -> (&'static str, i64) {
    match kind {
        // The two-minute warning: past it the instance is gone.
        NoticeKind::SpotInterruption => ("aws.ec2", 120),
        NoticeKind::Rebalance => ("aws.ec2", 30 * 60),
        NoticeKind::StateChange(_) => ("aws.ec2", 10 * 60),
        // Scheduled changes are announced days ahead; a day-old announcement still stands.
        NoticeKind::ScheduledChange => ("aws.health", 24 * 3600),
        NoticeKind::LaunchFailed { .. } => ("aws.autoscaling", 30 * 60),
        // A hook holds the instance for its heartbeat timeout, 1 h by default.
        NoticeKind::LifecycleTerminate(_) => ("aws.autoscaling", lifecycle::NOTICE_SECONDS),
        NoticeKind::LifecycleLaunch(_) => ("aws.autoscaling", lifecycle::NOTICE_SECONDS),
        NoticeKind::LifecycleTest => ("aws.autoscaling", lifecycle::NOTICE_SECONDS),
    }
}

/// Check a parsed notice against this cluster's origin and the clock (`now_millis`).
pub fn check(notice: &Notice, origin: &Origin, now_millis: i64) -> Result<(), Refusal> {
    let (expected, limit_seconds) = provenance(&notice.kind);
    let source = notice.source.clone().unwrap_or_default();
    if source != expected {
        return Err(Refusal::Source {
            kind: notice.kind.metric_label(),
            expected,
            found: source,
        });
    }
    if let Some(account) = &origin.account {
        let found = notice.account.clone().unwrap_or_default();
        if &found != account {
            return Err(Refusal::Account {
                expected: account.clone(),
                found,
            });
        }
    }
    // Auto Scaling's own lifecycle notifications name no region; every other kind must name this one.
    let direct_lifecycle = notice.region.is_none()
        && matches!(
            notice.kind,
            NoticeKind::LifecycleTerminate(_)
                | NoticeKind::LifecycleLaunch(_)
                | NoticeKind::LifecycleTest
        );
    let region = notice.region.clone().unwrap_or_default();
    if region != origin.region && !direct_lifecycle {
        return Err(Refusal::Region {
            expected: origin.region.clone(),
            found: region,
        });
    }
    let time = notice.time_millis.ok_or(Refusal::NoTime)?;
    let age_seconds = (now_millis - time) / 1000;
    if age_seconds < -MAX_SKEW_SECONDS {
        return Err(Refusal::Future {
            ahead_seconds: -age_seconds,
        });
    }
    if age_seconds > limit_seconds {
        return Err(Refusal::Stale {
            age_seconds,
            limit_seconds,
        });
    }
    Ok(())
}

/// Keep at most `cap` instances of an AWS Health event (the policy's budget), so one message cannot
/// cordon and drain a whole cluster; returns the instances left out (AWS's own maintenance still
/// happens to them; they are logged and counted). Other kinds name one instance and are unchanged.
pub fn cap_health(notice: &mut Notice, cap: usize) -> Vec<String> {
    if notice.kind != NoticeKind::ScheduledChange || notice.instance_ids.len() <= cap {
        return Vec::new();
    }
    notice.instance_ids.split_off(cap)
}

/// A message that is not a notice CloudOptim acts on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoticeError {
    /// Not JSON, or missing a field the kind requires.
    #[error("malformed interruption message: {0}")]
    Malformed(String),
    /// Well-formed, but not a kind CloudOptim reads.
    #[error(
        "unknown event type {0:?}; only Spot interruption warnings, rebalance recommendations, instance state changes, AWS Health scheduled changes, Auto Scaling launch failures and lifecycle actions are handled"
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
    if lifecycle::is_direct(&value) {
        return lifecycle::parse_direct(&value);
    }
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
        "EC2 Instance-terminate Lifecycle Action" => {
            let action = lifecycle_detail(&value, lifecycle::Transition::Terminating)?;
            let instances = vec![action.instance.clone()];
            (NoticeKind::LifecycleTerminate(action), instances)
        }
        "EC2 Instance-launch Lifecycle Action" => {
            let action = lifecycle_detail(&value, lifecycle::Transition::Launching)?;
            let instances = vec![action.instance.clone()];
            (NoticeKind::LifecycleLaunch(action), instances)
        }
        other => return Err(NoticeError::Unknown(other.to_string())),
    };
    // A lifecycle action is known by its token, whichever path delivered it.
    let event_id = kind
        .lifecycle_action()
        .map_or(event_id, lifecycle::event_id);
    Ok(Notice {
        event_id,
        kind,
        instance_ids,
        time_millis,
        source: text(&value, "/source").map(str::to_string),
        account: text(&value, "/account").map(str::to_string),
        region: text(&value, "/region").map(str::to_string),
    })
}

/// The lifecycle action in an EventBridge event's `detail`, whose transition must be the one its
/// detail-type names.
fn lifecycle_detail(
    value: &Value,
    expected: lifecycle::Transition,
) -> Result<LifecycleAction, NoticeError> {
    let detail = value
        .get("detail")
        .ok_or_else(|| NoticeError::Malformed("detail missing".into()))?;
    let (transition, action) = lifecycle::action(detail)?;
    if transition != expected {
        return Err(NoticeError::Malformed(format!(
            "detail.LifecycleTransition is {transition:?}, the detail-type says {expected:?}"
        )));
    }
    Ok(action)
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
        NoticeKind::LaunchFailed { .. }
        | NoticeKind::LifecycleLaunch(_)
        | NoticeKind::LifecycleTest => Response::Nothing,
        // The group terminates the instance once the hook is completed (or times out).
        NoticeKind::LifecycleTerminate(_) => Response::Drain,
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
    fn forged_notices_are_refused_by_origin_time_and_size() {
        let origin = Origin::of_queue(
            "https://sqs.us-east-1.amazonaws.com/123456789012/cloudoptim-prod",
            "us-east-1",
        );
        assert_eq!(origin.account.as_deref(), Some("123456789012"));
        let at = chrono::DateTime::parse_from_rfc3339("2026-11-23T10:00:00Z")
            .expect("time")
            .timestamp_millis();
        let genuine = parse(&spot("e1", "i-0abc")).expect("spot");
        assert_eq!(check(&genuine, &origin, at + 60_000), Ok(()));
        let with = |pointer: &str, value: serde_json::Value| {
            let mut v: serde_json::Value =
                serde_json::from_str(&spot("e1", "i-0abc")).expect("json");
            *v.pointer_mut(pointer).expect("field") = value;
            parse(&v.to_string()).expect("parses")
        };
        let refused = |n: &Notice, now: i64| check(n, &origin, now).err().map(|e| e.metric_label());
        assert_eq!(
            refused(&with("/source", json!("my.app")), at),
            Some("refused_source")
        );
        assert_eq!(
            refused(&with("/account", json!("999999999999")), at),
            Some("refused_account")
        );
        assert_eq!(
            refused(&with("/region", json!("eu-west-1")), at),
            Some("refused_region")
        );
        assert_eq!(
            refused(&genuine, at + 121_000),
            Some("refused_stale"),
            "past its 2-minute notice"
        );
        assert_eq!(
            refused(&genuine, at - 600_000),
            Some("refused_time"),
            "10 minutes in the future"
        );
        assert_eq!(
            refused(&genuine, at - 60_000),
            None,
            "a minute of skew is tolerated"
        );
        let health = json!({"id": "h", "detail-type": "AWS Health Event", "source": "aws.health",
            "account": "123456789012", "region": "us-east-1", "time": "2026-11-23T10:00:00Z",
            "resources": ["i-1", "i-2", "i-3"], "detail": {"eventTypeCategory": "scheduledChange"}});
        let mut health = parse(&health.to_string()).expect("health");
        assert_eq!(check(&health, &origin, at), Ok(()));
        assert_eq!(cap_health(&mut health, 2), vec!["i-3".to_string()]);
        assert_eq!(health.instance_ids, ["i-1", "i-2"]);
        let mut one = genuine.clone();
        assert!(
            cap_health(&mut one, 0).is_empty(),
            "only Health events are capped"
        );
        // A queue URL without an account (a local mirror) checks everything else.
        let local = Origin::of_queue("http://localhost:9324/queue/q", "us-east-1");
        assert_eq!(local.account, None);
        assert_eq!(
            check(&with("/account", json!("999999999999")), &local, at),
            Ok(())
        );
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
