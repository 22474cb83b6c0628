//! The intake's decisions for one message, driven by the fake Cloud (the queue) and recorded Nodes in
//! a reflector store; the Kubernetes API is a stub that refuses every request and records it, so a
//! test also shows which decisions write nothing.

use std::collections::VecDeque;

use http_body_util::Full;
use hyper::body::Bytes;
use kube::runtime::reflector;
use serde_json::json;

use super::*;
use crate::cloud::fake::FakeCloud;
use crate::controllers::RunConfig;
use crate::controllers::catalog::LiveCatalog;
use crate::engine::catalog::Catalog;
use crate::metrics::Metrics;

const QUEUE: &str = "https://sqs.us-east-1.amazonaws.com/123456789012/cloudoptim";
const INSTANCE: &str = "i-0abc";

/// Requests the stub API server was asked, as `METHOD path`.
type Asked = Arc<Mutex<Vec<String>>>;

/// A client whose API server answers 503 to everything.
fn refusing_client() -> (kube::Client, Asked) {
    let asked: Asked = Arc::default();
    let seen = asked.clone();
    let service = tower::service_fn(move |request: hyper::Request<kube::client::Body>| {
        seen.lock()
            .expect("asked")
            .push(format!("{} {}", request.method(), request.uri().path()));
        let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
            "message": "no API server in unit tests", "reason": "ServiceUnavailable", "code": 503});
        let response = hyper::Response::builder()
            .status(503)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(status.to_string())))
            .expect("response");
        async move { Ok::<_, std::convert::Infallible>(response) }
    });
    (kube::Client::new(service, "default"), asked)
}

fn node(name: &str, instance: &str) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {
            "topology.kubernetes.io/zone": "us-east-1a",
            "node.kubernetes.io/instance-type": "m5.large"}},
        "spec": {"providerID": format!("aws:///us-east-1a/{instance}")}
    }))
    .expect("node")
}

struct Harness {
    intake: Arc<Intake<FakeCloud>>,
    cloud: FakeCloud,
    asked: Asked,
}

impl Harness {
    fn with_nodes(nodes: Vec<Node>) -> Harness {
        let (client, asked) = refusing_client();
        let cloud = FakeCloud::default();
        let metrics = Metrics::new().expect("metrics");
        let advisor = crate::cloud::spot_advisor::AdvisorCache::new(
            "file:///nonexistent/cloudoptim/feed.json",
            metrics.clone(),
        );
        let catalog = LiveCatalog::new(
            Arc::new(Catalog::embedded().clone()),
            "us-east-1",
            advisor,
            metrics.clone(),
        );
        let config = RunConfig {
            cluster_name: "prod".into(),
            region: "us-east-1".into(),
            dry_run: false,
            zombie_grace_floors: (600, 3600),
            interruption_hold_floor: Duration::from_secs(180),
            own_namespace: None,
            own_pod: None,
            protected_namespaces: vec!["kube-system".into()],
            rightsizing_apply: false,
            prometheus: Default::default(),
        };
        let ctx = Context::new(
            client.clone(),
            cloud.clone(),
            metrics.clone(),
            config,
            catalog,
        );
        let (store, mut writer) = reflector::store::<Node>();
        for node in nodes {
            writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(node));
        }
        let intake = Arc::new(Intake {
            ctx,
            drainer: Drainer::new(client, metrics),
            hub: None,
            nodes: store,
            dedupe: Mutex::new(Dedupe::new(DEDUPE_TTL)),
            handlers: Arc::new(Semaphore::new(HANDLERS)),
            flags: tokio::sync::Mutex::new(()),
        });
        Harness {
            intake,
            cloud,
            asked,
        }
    }

    /// Put `body` on the fake queue and handle it as a receiver would.
    async fn handle(&self, id: &str, body: String, settings: QueueSettings) -> Option<FollowUp> {
        let message = QueueMessage {
            id: id.into(),
            receipt: format!("r-{id}"),
            body,
            sent_millis: None,
        };
        self.cloud
            .state()
            .queues
            .insert(QUEUE.into(), VecDeque::from([message.clone()]));
        self.intake.handle(QUEUE, message, settings).await
    }

    fn deleted(&self) -> bool {
        self.cloud.state().queues[QUEUE].is_empty()
    }

    fn counted(&self, kind: &str) -> u64 {
        self.intake
            .ctx
            .metrics
            .interruptions
            .with_label_values(&[kind])
            .get()
    }

    fn api_requests(&self) -> Vec<String> {
        self.asked.lock().expect("asked").clone()
    }
}

fn settings(dry_run: bool) -> QueueSettings {
    QueueSettings {
        rebalance: RebalancePolicy::Cordon,
        deadline: Duration::from_secs(90),
        release_after: DEFAULT_RELEASE_AFTER,
        dry_run,
        fallback: None,
        policy: None,
    }
}

/// An EventBridge notice of `detail_type` for `instance`, sent now from `region`.
fn notice(id: &str, detail_type: &str, instance: &str, region: &str) -> String {
    json!({
        "version": "0", "id": id, "detail-type": detail_type, "source": "aws.ec2",
        "account": "123456789012", "region": region,
        "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "resources": [format!("arn:aws:ec2:{region}a:instance/{instance}")],
        "detail": {"instance-id": instance, "instance-action": "terminate"}
    })
    .to_string()
}

fn spot_warning(id: &str, instance: &str) -> String {
    notice(
        id,
        "EC2 Spot Instance Interruption Warning",
        instance,
        "us-east-1",
    )
}

#[tokio::test]
async fn a_spot_warning_for_a_node_of_the_cluster_is_drained_and_its_message_deleted() {
    let harness = Harness::with_nodes(vec![node("ip-10-0-1-5", INSTANCE)]);

    let follow = harness
        .handle("m1", spot_warning("e1", INSTANCE), settings(true))
        .await
        .expect("a follow-up");

    assert_eq!(follow.response, Response::Drain);
    let named: Vec<String> = follow.nodes.iter().map(|n| n.name_any()).collect();
    assert_eq!(named, ["ip-10-0-1-5"]);
    assert!(harness.deleted());
    assert_eq!(harness.counted("spot_interruption"), 1);
    assert!(
        harness.api_requests().is_empty(),
        "a dry run writes nothing"
    );
}

#[tokio::test]
async fn a_rebalance_recommendation_follows_the_policys_rebalance_setting() {
    let harness = Harness::with_nodes(vec![node("ip-10-0-1-5", INSTANCE)]);
    let rebalance = |id| {
        notice(
            id,
            "EC2 Instance Rebalance Recommendation",
            INSTANCE,
            "us-east-1",
        )
    };
    let ignore = QueueSettings {
        rebalance: RebalancePolicy::Ignore,
        ..settings(true)
    };

    let cordon = harness.handle("m1", rebalance("e1"), settings(true)).await;
    let ignored = harness.handle("m2", rebalance("e2"), ignore).await;

    assert_eq!(cordon.map(|f| f.response), Some(Response::Cordon));
    assert_eq!(ignored.map(|f| f.response), Some(Response::Nothing));
    assert_eq!(harness.counted("rebalance"), 2);
}

#[tokio::test]
async fn a_notice_seen_before_is_deleted_and_counted_as_a_duplicate() {
    let harness = Harness::with_nodes(vec![node("ip-10-0-1-5", INSTANCE)]);
    harness
        .handle("m1", spot_warning("e1", INSTANCE), settings(true))
        .await;

    let again = harness
        .handle("m2", spot_warning("e1", INSTANCE), settings(true))
        .await;

    assert!(again.is_none());
    assert!(harness.deleted());
    assert_eq!(harness.counted("duplicate"), 1);
}

#[tokio::test]
async fn a_malformed_message_or_one_from_another_region_is_deleted_and_not_acted_on() {
    let harness = Harness::with_nodes(vec![node("ip-10-0-1-5", INSTANCE)]);
    let elsewhere = notice(
        "e1",
        "EC2 Spot Instance Interruption Warning",
        INSTANCE,
        "eu-west-1",
    );

    let malformed = harness
        .handle("m1", "{not json".into(), settings(false))
        .await;
    let malformed_deleted = harness.deleted();
    let refused = harness.handle("m2", elsewhere, settings(false)).await;

    assert!(malformed.is_none() && refused.is_none());
    assert!(malformed_deleted && harness.deleted());
    assert_eq!(harness.counted("malformed"), 1);
    assert_eq!(harness.counted("refused_region"), 1);
    assert!(harness.api_requests().is_empty(), "nothing is cordoned");
}

#[tokio::test]
async fn a_warning_for_an_instance_that_is_no_node_here_is_deleted_with_nothing_to_do() {
    let harness = Harness::with_nodes(vec![node("ip-10-0-1-5", INSTANCE)]);

    let follow = harness
        .handle("m1", spot_warning("e1", "i-0other"), settings(false))
        .await
        .expect("a follow-up");

    assert!(follow.nodes.is_empty());
    assert!(harness.deleted());
    assert!(harness.api_requests().is_empty());
}

#[tokio::test]
async fn a_cordon_the_api_server_refuses_keeps_the_message_and_forgets_the_event_for_the_redelivery()
 {
    let harness = Harness::with_nodes(vec![node("ip-10-0-1-5", INSTANCE)]);

    let follow = harness
        .handle("m1", spot_warning("e1", INSTANCE), settings(false))
        .await;

    assert!(follow.is_none(), "nothing to drain before the cordon holds");
    assert!(!harness.deleted(), "SQS delivers the message again");
    assert_eq!(harness.api_requests(), ["GET /api/v1/nodes/ip-10-0-1-5"]);
    let first_again = harness
        .intake
        .dedupe
        .lock()
        .expect("dedupe")
        .first("e1", Instant::now());
    assert!(
        first_again,
        "the redelivery is handled, not dropped as a duplicate"
    );
}

/// An EventBridge lifecycle action of group `asg-a`, hook `drain`, for `instance`, sent now.
fn lifecycle(token: &str, transition: &str, instance: &str) -> String {
    let detail_type = if transition.ends_with("TERMINATING") {
        "EC2 Instance-terminate Lifecycle Action"
    } else {
        "EC2 Instance-launch Lifecycle Action"
    };
    json!({
        "version": "0", "id": format!("evt-{token}"), "detail-type": detail_type,
        "source": "aws.autoscaling", "account": "123456789012", "region": "us-east-1",
        "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "resources": ["arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:59fcbb81-bd5f-4e0a-b8ef-6e8e36a7b5c8:autoScalingGroupName/asg-a"],
        "detail": {"LifecycleActionToken": token, "AutoScalingGroupName": "asg-a",
            "LifecycleHookName": "drain", "EC2InstanceId": instance,
            "LifecycleTransition": transition, "Origin": "AutoScalingGroup", "Destination": "EC2"}
    })
    .to_string()
}

const TERMINATING: &str = "autoscaling:EC2_INSTANCE_TERMINATING";

impl Harness {
    fn aws_calls(&self) -> Vec<String> {
        self.cloud.state().calls.clone()
    }

    fn lifecycle_outcome(&self, outcome: &str) -> u64 {
        self.intake
            .ctx
            .metrics
            .lifecycle_actions
            .with_label_values(&[outcome])
            .get()
    }

    /// Handle `body`, then run its follow-up as the receiver does.
    async fn handle_through(&self, id: &str, body: String, settings: QueueSettings) {
        if let Some(follow) = self.handle(id, body, settings).await {
            self.intake.follow_up(follow).await;
        }
    }
}

#[tokio::test]
async fn a_launch_action_is_completed_at_once_and_its_message_deleted() {
    let harness = Harness::with_nodes(vec![]);

    let follow = harness
        .handle(
            "m1",
            lifecycle("t1", "autoscaling:EC2_INSTANCE_LAUNCHING", "i-0new"),
            settings(false),
        )
        .await;

    assert!(follow.is_none());
    assert!(harness.deleted());
    assert_eq!(
        harness.aws_calls(),
        [
            "CompleteLifecycleAction asg-a drain t1 CONTINUE",
            "DeleteMessage r-m1"
        ]
    );
    assert_eq!(harness.counted("lifecycle_launch"), 1);
    assert_eq!(harness.lifecycle_outcome("launch"), 1);
}

#[tokio::test]
async fn a_test_notification_is_deleted_and_counted_with_nothing_completed() {
    let harness = Harness::with_nodes(vec![]);
    let test = json!({"AccountId": "123456789012", "RequestId": "r-1",
        "AutoScalingGroupARN": "arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:042cba90-ad2f-431c-9b4d-6d9055bcc9fb:autoScalingGroupName/asg-a",
        "AutoScalingGroupName": "asg-a", "Service": "AWS Auto Scaling",
        "Event": "autoscaling:TEST_NOTIFICATION",
        "Time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)});

    harness
        .handle_through("m1", test.to_string(), settings(false))
        .await;

    assert!(harness.deleted());
    assert_eq!(harness.aws_calls(), ["DeleteMessage r-m1"]);
    assert_eq!(harness.counted("lifecycle_test"), 1);
}

#[tokio::test]
async fn a_terminating_instance_that_is_no_node_here_is_completed_at_once() {
    let harness = Harness::with_nodes(vec![node("ip-10-0-1-5", INSTANCE)]);

    harness
        .handle_through(
            "m1",
            lifecycle("t1", TERMINATING, "i-0other"),
            settings(false),
        )
        .await;

    assert!(harness.deleted());
    assert_eq!(
        harness.aws_calls(),
        // The message goes only once the action is completed (a replica dying before leaves it).
        [
            "CompleteLifecycleAction asg-a drain t1 CONTINUE",
            "DeleteMessage r-m1"
        ]
    );
    assert_eq!(harness.lifecycle_outcome("not_a_node"), 1);
    assert!(harness.api_requests().is_empty());
}

/// A replica that dies between handling a terminate hook and completing it (the follow-up never
/// runs) leaves the message in the queue, so SQS delivers it to the next leader; a Spot warning's
/// message, by contrast, goes as soon as its cordon is durable.
#[tokio::test]
async fn a_terminate_hooks_message_stays_queued_until_its_action_is_completed() {
    let harness = Harness::with_nodes(vec![node("ip-10-0-1-5", INSTANCE)]);
    let follow = harness
        .handle(
            "m1",
            lifecycle("t1", TERMINATING, "i-0other"),
            settings(false),
        )
        .await
        .expect("a terminate hook has a follow-up");
    assert!(!harness.deleted(), "{:?}", harness.aws_calls());
    assert!(harness.aws_calls().is_empty());
    // The replica lives on: the action is completed, then the message deleted.
    harness.intake.follow_up(follow).await;
    assert!(harness.deleted());
    assert_eq!(
        harness.aws_calls(),
        [
            "CompleteLifecycleAction asg-a drain t1 CONTINUE",
            "DeleteMessage r-m1"
        ]
    );
}

#[tokio::test]
async fn in_dry_run_a_terminating_node_is_not_touched_but_the_action_is_completed() {
    let harness = Harness::with_nodes(vec![node("ip-10-0-1-5", INSTANCE)]);

    harness
        .handle_through("m1", lifecycle("t1", TERMINATING, INSTANCE), settings(true))
        .await;

    assert!(
        harness.api_requests().is_empty(),
        "a dry run writes nothing"
    );
    assert_eq!(
        harness.aws_calls(),
        // The message goes only once the action is completed (a replica dying before leaves it).
        [
            "CompleteLifecycleAction asg-a drain t1 CONTINUE",
            "DeleteMessage r-m1"
        ]
    );
    assert_eq!(harness.counted("lifecycle_terminate"), 1);
    assert_eq!(harness.lifecycle_outcome("dry_run"), 1);
}

#[tokio::test]
async fn a_terminating_node_whose_cordon_is_refused_keeps_the_message_and_the_action_open() {
    let harness = Harness::with_nodes(vec![node("ip-10-0-1-5", INSTANCE)]);

    harness
        .handle_through(
            "m1",
            lifecycle("t1", TERMINATING, INSTANCE),
            settings(false),
        )
        .await;

    assert!(!harness.deleted(), "SQS delivers the message again");
    assert!(
        harness.aws_calls().is_empty(),
        "nothing completed before the node is cordoned"
    );
}

#[tokio::test]
async fn an_action_delivered_twice_is_completed_once() {
    let harness = Harness::with_nodes(vec![]);
    let launch = || lifecycle("t1", "autoscaling:EC2_INSTANCE_LAUNCHING", "i-0new");

    harness
        .handle_through("m1", launch(), settings(false))
        .await;
    harness
        .handle_through("m2", launch(), settings(false))
        .await;

    assert_eq!(harness.counted("duplicate"), 1);
    assert_eq!(harness.lifecycle_outcome("launch"), 1);
}

/// A drain that outlasts several heartbeat intervals keeps the hook open: one heartbeat per interval
/// while it runs, none after it ends (virtual time: the clock advances only when everything waits).
#[tokio::test(start_paused = true)]
async fn a_long_drain_records_a_heartbeat_every_interval_until_it_ends() {
    use crate::engine::lifecycle::HEARTBEAT_INTERVAL;
    let cloud = FakeCloud::default();
    let action = crate::cloud::LifecycleAction {
        group: "asg-a".into(),
        hook: "drain".into(),
        token: "tok-1".into(),
        instance: "i-0abc".into(),
    };
    let drain = tokio::time::sleep(HEARTBEAT_INTERVAL * 3 + HEARTBEAT_INTERVAL / 2);
    super::lifecycle::with_heartbeats(&cloud, &action, Some(("q", "r-1")), async {
        drain.await;
        "drained"
    })
    .await;
    tokio::time::sleep(HEARTBEAT_INTERVAL * 4).await;
    let beats: Vec<String> = cloud
        .state()
        .calls
        .iter()
        .filter(|c| c.starts_with("RecordLifecycleActionHeartbeat"))
        .cloned()
        .collect();
    assert_eq!(
        beats,
        vec!["RecordLifecycleActionHeartbeat asg-a drain tok-1".to_string(); 3]
    );
    // The held message is kept hidden as long: one visibility extension per heartbeat.
    let hidden = cloud
        .state()
        .calls
        .iter()
        .filter(|c| c.starts_with("ChangeMessageVisibility r-1 60"))
        .count();
    assert_eq!(hidden, 3);
}
