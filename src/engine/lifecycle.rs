//! Auto Scaling lifecycle hooks: what a lifecycle action message says, in either of the two forms it
//! reaches the queue in, and how long CloudOptim may hold the action. Pure.
//!
//! - EventBridge (rule on `aws.autoscaling`, detail-type `EC2 Instance-terminate Lifecycle Action` or
//!   `EC2 Instance-launch Lifecycle Action`): the envelope of every other notice, the action in
//!   `detail` ([`action`] reads it; [`super::interruption::parse`] the envelope).
//! - Auto Scaling's own notification (the hook's `NotificationTargetARN` is the queue): a bare JSON
//!   body with `Service: "AWS Auto Scaling"`, the action's fields at the top level plus `AccountId`,
//!   `RequestId` and `Time`, and no region; or the `autoscaling:TEST_NOTIFICATION` Auto Scaling sends
//!   when the hook is created ([`parse_direct`]).
//!
//! Either way the dedupe key of an action is its `LifecycleActionToken`, so one action delivered
//! twice, or through both paths, is handled once.

use std::time::Duration;

use serde_json::Value;

use super::interruption::{Notice, NoticeError, NoticeKind};

/// The `Service` of Auto Scaling's own notifications.
pub const DIRECT_SERVICE: &str = "AWS Auto Scaling";
/// The `source` a direct notification stands for (the service EventBridge would name).
pub const SOURCE: &str = "aws.autoscaling";

/// How long after its time a lifecycle message is still acted on: the default heartbeat timeout
/// (3600 s). An action older than that has ended with its default result unless the hook's timeout is
/// longer, and completing it would at best fail; the message is refused as stale.
pub const NOTICE_SECONDS: i64 = 3600;

/// How often a running drain records a heartbeat on the hook. Every heartbeat restarts the hook's
/// timeout, so any hook whose heartbeat timeout is above this stays open while the drain runs (the
/// README asks for 300 s; the smallest AWS allows is 30 s, which needs this to stay below it).
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(20);
const _: () = assert!(
    HEARTBEAT_INTERVAL.as_secs() < 30,
    "below the smallest heartbeat timeout"
);

/// The shortest global timeout a hook can have: 100 times the smallest heartbeat timeout (30 s).
/// However often it is heartbeated, Auto Scaling ends the action then, so no drain runs longer.
pub const GLOBAL_TIMEOUT_FLOOR: Duration = Duration::from_secs(100 * 30);

/// One lifecycle action of an Auto Scaling group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleAction {
    /// The Auto Scaling group.
    pub group: String,
    /// The lifecycle hook.
    pub hook: String,
    /// The action's token (CompleteLifecycleAction and RecordLifecycleActionHeartbeat name it).
    pub token: String,
    /// The instance launching or terminating.
    pub instance: String,
}

/// Which way the instance is going.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// `autoscaling:EC2_INSTANCE_LAUNCHING`.
    Launching,
    /// `autoscaling:EC2_INSTANCE_TERMINATING`.
    Terminating,
}

fn field<'v>(object: &'v Value, name: &str) -> Result<&'v str, NoticeError> {
    object
        .get(name)
        .and_then(Value::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| NoticeError::Malformed(format!("lifecycle action: {name} missing")))
}

/// The action an object (an EventBridge `detail`, or a direct notification) describes, and its
/// transition.
pub fn action(object: &Value) -> Result<(Transition, LifecycleAction), NoticeError> {
    let transition = match field(object, "LifecycleTransition")? {
        "autoscaling:EC2_INSTANCE_LAUNCHING" => Transition::Launching,
        "autoscaling:EC2_INSTANCE_TERMINATING" => Transition::Terminating,
        other => {
            return Err(NoticeError::Malformed(format!(
                "lifecycle action: unknown LifecycleTransition {other:?}"
            )));
        }
    };
    let instance = field(object, "EC2InstanceId")?;
    if !instance.starts_with("i-") {
        return Err(NoticeError::Malformed(format!(
            "lifecycle action: EC2InstanceId {instance:?} is not an instance id"
        )));
    }
    Ok((
        transition,
        LifecycleAction {
            group: field(object, "AutoScalingGroupName")?.to_string(),
            hook: field(object, "LifecycleHookName")?.to_string(),
            token: field(object, "LifecycleActionToken")?.to_string(),
            instance: instance.to_string(),
        },
    ))
}

/// The notice kind of an action.
pub fn kind(transition: Transition, action: LifecycleAction) -> NoticeKind {
    match transition {
        Transition::Launching => NoticeKind::LifecycleLaunch(action),
        Transition::Terminating => NoticeKind::LifecycleTerminate(action),
    }
}

/// The dedupe key of an action: its token, whichever path it came by.
pub fn event_id(action: &LifecycleAction) -> String {
    format!("lifecycle:{}", action.token)
}

/// Is this body one of Auto Scaling's own notifications?
pub fn is_direct(value: &Value) -> bool {
    value.get("Service").and_then(Value::as_str) == Some(DIRECT_SERVICE)
}

/// The region an Auto Scaling ARN names (`arn:aws:autoscaling:<region>:...`).
fn region_of_arn(arn: &str) -> Option<String> {
    arn.split(':')
        .nth(3)
        .filter(|r| !r.is_empty())
        .map(str::to_string)
}

/// Parse a direct notification (`Service: "AWS Auto Scaling"`). It carries no region except a test
/// notification's group ARN, so [`super::interruption::check`] checks the region only when one is named.
pub fn parse_direct(value: &Value) -> Result<Notice, NoticeError> {
    let time_millis = value
        .get("Time")
        .and_then(Value::as_str)
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.timestamp_millis());
    let account = value
        .get("AccountId")
        .and_then(Value::as_str)
        .map(str::to_string);
    let (event_id, kind, instance_ids, region) = match value.get("Event").and_then(Value::as_str) {
        Some("autoscaling:TEST_NOTIFICATION") => (
            format!("lifecycle-test:{}", field(value, "RequestId")?),
            NoticeKind::LifecycleTest,
            Vec::new(),
            value
                .get("AutoScalingGroupARN")
                .and_then(Value::as_str)
                .and_then(region_of_arn),
        ),
        Some(other) => return Err(NoticeError::Unknown(format!("Auto Scaling {other}"))),
        None => {
            let (transition, action) = action(value)?;
            (
                event_id(&action),
                kind(transition, action.clone()),
                vec![action.instance],
                None,
            )
        }
    };
    Ok(Notice {
        event_id,
        kind,
        instance_ids,
        time_millis,
        source: Some(SOURCE.to_string()),
        account,
        region,
    })
}

/// How long the drain of a terminating instance may run, `elapsed` after the action's time: the
/// policy's `drainDeadline` from the action's time, never past [`GLOBAL_TIMEOUT_FLOOR`] (the hook
/// ends then whatever CloudOptim does), and at least 10 s.
pub fn drain_timeout(deadline: Duration, elapsed: Duration) -> Duration {
    deadline
        .min(GLOBAL_TIMEOUT_FLOOR)
        .saturating_sub(elapsed)
        .max(Duration::from_secs(10))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::interruption::{Origin, RebalancePolicy, Response, check, parse, respond};
    use serde_json::json;

    const QUEUE: &str = "https://sqs.us-west-2.amazonaws.com/123456789012/cloudoptim-prod";

    /// The EventBridge event of the Auto Scaling user guide ("Amazon EventBridge events for Amazon EC2
    /// Auto Scaling", EC2 Instance-terminate Lifecycle Action).
    fn eventbridge_terminate() -> Value {
        json!({
            "version": "0",
            "id": "468fddd6-9b83-4dc5-8c87-d5a1d1f58f2f",
            "detail-type": "EC2 Instance-terminate Lifecycle Action",
            "source": "aws.autoscaling",
            "account": "123456789012",
            "time": "2015-12-22T18:43:48Z",
            "region": "us-west-2",
            "resources": [
                "arn:aws:autoscaling:us-west-2:123456789012:autoScalingGroup:59fcbb81-bd5f-4e0a-b8ef-6e8e36a7b5c8:autoScalingGroupName/my-asg"
            ],
            "detail": {
                "LifecycleActionToken": "630aa23f-48eb-45e7-aba6-799ea6093a0f",
                "AutoScalingGroupName": "my-asg",
                "LifecycleHookName": "my-lifecycle-hook",
                "EC2InstanceId": "i-1234567890abcdef0",
                "LifecycleTransition": "autoscaling:EC2_INSTANCE_TERMINATING",
                "NotificationMetadata": "additional-info",
                "Origin": "AutoScalingGroup",
                "Destination": "EC2"
            }
        })
    }

    /// The message Auto Scaling itself sends to an SQS notification target (the user guide's
    /// "Receive notifications" example).
    fn direct_launch() -> Value {
        json!({
            "Origin": "EC2",
            "LifecycleHookName": "my-lifecycle-hook",
            "Destination": "AutoScalingGroup",
            "AccountId": "123456789012",
            "RequestId": "4b1ebc39-61ab-e33b-43a1-3d6a5e9a4cf8",
            "LifecycleTransition": "autoscaling:EC2_INSTANCE_LAUNCHING",
            "AutoScalingGroupName": "my-asg",
            "Service": "AWS Auto Scaling",
            "Time": "2021-01-19T00:36:26.533Z",
            "EC2InstanceId": "i-0ae2bf52bc6d0b5ce",
            "LifecycleActionToken": "33d9ae22-5a7d-4e52-a8b1-aaf5fd8e4bd1"
        })
    }

    /// The test message Auto Scaling sends when the notification target is set.
    fn test_notification() -> Value {
        json!({
            "AccountId": "123456789012",
            "RequestId": "6d5c5a2e-6a7e-4a4f-9b6a-6e5bc8a1f5d1",
            "AutoScalingGroupARN": "arn:aws:autoscaling:us-west-2:123456789012:autoScalingGroup:042cba90-ad2f-431c-9b4d-6d9055bcc9fb:autoScalingGroupName/my-asg",
            "AutoScalingGroupName": "my-asg",
            "Service": "AWS Auto Scaling",
            "Event": "autoscaling:TEST_NOTIFICATION",
            "Time": "2021-01-19T00:35:52.359Z"
        })
    }

    fn millis(rfc3339: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(rfc3339)
            .expect("time")
            .timestamp_millis()
    }

    fn origin() -> Origin {
        Origin::of_queue(QUEUE, "us-west-2")
    }

    #[test]
    fn an_eventbridge_terminate_action_is_drained_and_keyed_by_its_token() {
        let notice = parse(&eventbridge_terminate().to_string()).expect("parses");
        let action = LifecycleAction {
            group: "my-asg".into(),
            hook: "my-lifecycle-hook".into(),
            token: "630aa23f-48eb-45e7-aba6-799ea6093a0f".into(),
            instance: "i-1234567890abcdef0".into(),
        };
        assert_eq!(notice.kind, NoticeKind::LifecycleTerminate(action));
        assert_eq!(notice.instance_ids, ["i-1234567890abcdef0"]);
        assert_eq!(
            notice.event_id,
            "lifecycle:630aa23f-48eb-45e7-aba6-799ea6093a0f"
        );
        assert_eq!(notice.kind.metric_label(), "lifecycle_terminate");
        assert_eq!(
            respond(&notice.kind, RebalancePolicy::Ignore),
            Response::Drain
        );
        let at = millis("2015-12-22T18:43:48Z");
        assert_eq!(check(&notice, &origin(), at + 60_000), Ok(()));
    }

    #[test]
    fn a_direct_launch_action_names_no_region_and_is_believed_from_this_account() {
        let notice = parse(&direct_launch().to_string()).expect("parses");
        assert!(matches!(&notice.kind, NoticeKind::LifecycleLaunch(a)
            if a.group == "my-asg" && a.instance == "i-0ae2bf52bc6d0b5ce"
                && a.token == "33d9ae22-5a7d-4e52-a8b1-aaf5fd8e4bd1"));
        assert_eq!(notice.source.as_deref(), Some("aws.autoscaling"));
        assert_eq!(notice.region, None);
        assert_eq!(
            respond(&notice.kind, RebalancePolicy::Drain),
            Response::Nothing
        );
        let at = millis("2021-01-19T00:36:26.533Z");
        assert_eq!(check(&notice, &origin(), at), Ok(()));
        let mut foreign = direct_launch();
        foreign["AccountId"] = json!("999999999999");
        let foreign = parse(&foreign.to_string()).expect("parses");
        assert_eq!(
            check(&foreign, &origin(), at).map_err(|e| e.metric_label()),
            Err("refused_account")
        );
    }

    #[test]
    fn the_same_action_by_both_paths_has_one_dedupe_key() {
        let mut direct = direct_launch();
        direct["LifecycleTransition"] = json!("autoscaling:EC2_INSTANCE_TERMINATING");
        direct["LifecycleActionToken"] = json!("630aa23f-48eb-45e7-aba6-799ea6093a0f");
        let direct = parse(&direct.to_string()).expect("direct");
        let bridged = parse(&eventbridge_terminate().to_string()).expect("eventbridge");
        assert_eq!(direct.event_id, bridged.event_id);
    }

    #[test]
    fn a_test_notification_is_its_own_kind_with_the_region_of_its_group() {
        let notice = parse(&test_notification().to_string()).expect("parses");
        assert_eq!(notice.kind, NoticeKind::LifecycleTest);
        assert_eq!(notice.kind.metric_label(), "lifecycle_test");
        assert!(notice.instance_ids.is_empty());
        assert_eq!(notice.region.as_deref(), Some("us-west-2"));
        let at = millis("2021-01-19T00:35:52.359Z");
        assert_eq!(check(&notice, &origin(), at), Ok(()));
        let elsewhere = Origin::of_queue(QUEUE, "eu-west-1");
        assert_eq!(
            check(&notice, &elsewhere, at).map_err(|e| e.metric_label()),
            Err("refused_region")
        );
    }

    #[test]
    fn lifecycle_messages_are_stale_after_the_default_heartbeat_timeout() {
        let notice = parse(&eventbridge_terminate().to_string()).expect("parses");
        let at = millis("2015-12-22T18:43:48Z");
        assert_eq!(check(&notice, &origin(), at + 3_600_000), Ok(()));
        assert_eq!(
            check(&notice, &origin(), at + 3_601_000).map_err(|e| e.metric_label()),
            Err("refused_stale")
        );
        let mut forged = eventbridge_terminate();
        forged["source"] = json!("aws.ec2");
        let forged = parse(&forged.to_string()).expect("parses");
        assert_eq!(
            check(&forged, &origin(), at).map_err(|e| e.metric_label()),
            Err("refused_source")
        );
        let mut elsewhere = eventbridge_terminate();
        elsewhere["region"] = json!("eu-west-1");
        let elsewhere = parse(&elsewhere.to_string()).expect("parses");
        assert_eq!(
            check(&elsewhere, &origin(), at).map_err(|e| e.metric_label()),
            Err("refused_region"),
            "an EventBridge event names its region, so it must be this cluster's"
        );
    }

    #[test]
    fn incomplete_or_contradictory_actions_are_malformed_and_other_events_unknown() {
        for field in [
            "LifecycleActionToken",
            "AutoScalingGroupName",
            "LifecycleHookName",
            "EC2InstanceId",
            "LifecycleTransition",
        ] {
            let mut event = eventbridge_terminate();
            event["detail"]
                .as_object_mut()
                .expect("detail")
                .remove(field);
            let error = parse(&event.to_string()).expect_err(field);
            assert_eq!(error.metric_label(), "malformed", "{field}");
            assert!(error.to_string().contains(field), "{error}");
            let mut direct = direct_launch();
            direct.as_object_mut().expect("body").remove(field);
            assert_eq!(
                parse(&direct.to_string()).expect_err(field).metric_label(),
                "malformed"
            );
        }
        let mut launch_as_terminate = eventbridge_terminate();
        launch_as_terminate["detail"]["LifecycleTransition"] =
            json!("autoscaling:EC2_INSTANCE_LAUNCHING");
        assert_eq!(
            parse(&launch_as_terminate.to_string())
                .expect_err("contradiction")
                .metric_label(),
            "malformed"
        );
        let mut other = test_notification();
        other["Event"] = json!("autoscaling:EC2_INSTANCE_LAUNCH");
        assert_eq!(
            parse(&other.to_string()).expect_err("other").metric_label(),
            "unknown"
        );
    }

    #[test]
    fn the_drain_runs_until_the_deadline_but_never_past_the_hooks_global_timeout() {
        let s = Duration::from_secs;
        assert_eq!(drain_timeout(s(90), s(5)), s(85));
        assert_eq!(drain_timeout(s(90), s(100)), s(10), "at least 10 s");
        assert_eq!(drain_timeout(s(24 * 3600), s(0)), GLOBAL_TIMEOUT_FLOOR);
    }
}
