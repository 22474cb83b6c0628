//! Throttling: a proxy in front of moto answers `Throttling` for chosen Auto Scaling calls. The SDK's
//! retries absorb a short burst (the call succeeds, counted `ok`); a long one surfaces as
//! `CloudError::Throttled` with the request id, counted `throttled` in `cloudoptim_aws_api_calls_total`.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{Request, Response, StatusCode};
use cloudoptim::cloud::aws::{AwsCloud, AwsOptions};
use cloudoptim::cloud::{Cloud, CloudError, GroupSelector};
use http_body_util::BodyExt;

#[derive(Clone)]
struct Proxy {
    upstream: String,
    /// How many more DescribeAutoScalingGroups requests to throttle.
    throttle: Arc<AtomicUsize>,
    /// DescribeAutoScalingGroups requests seen.
    seen: Arc<AtomicUsize>,
    /// Every request body, in order.
    bodies: Arc<std::sync::Mutex<Vec<String>>>,
}

const THROTTLED: &str = "<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code>\
<Message>Rate exceeded</Message></Error><RequestId>e2e-throttled-request</RequestId></ErrorResponse>";

async fn forward(State(proxy): State<Proxy>, request: Request<Body>) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let body: Bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if let Ok(mut bodies) = proxy.bodies.lock() {
        bodies.push(String::from_utf8_lossy(&body).into_owned());
    }
    if String::from_utf8_lossy(&body).contains("Action=DescribeAutoScalingGroups") {
        proxy.seen.fetch_add(1, Ordering::SeqCst);
        let throttle = proxy
            .throttle
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if throttle {
            return Response::builder()
                .status(StatusCode::BAD_REQUEST)
                .header("content-type", "text/xml")
                .header("x-amzn-requestid", "e2e-throttled-request")
                .body(Body::from(THROTTLED))
                .expect("response");
        }
    }
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<Bytes>>();
    let uri = format!(
        "{}{}",
        proxy.upstream,
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    );
    let mut upstream = hyper::Request::builder().method(parts.method).uri(uri);
    for (name, value) in &parts.headers {
        if name != "host" {
            upstream = upstream.header(name, value);
        }
    }
    let response = client
        .request(
            upstream
                .body(http_body_util::Full::new(body))
                .expect("request"),
        )
        .await
        .expect("moto answers");
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Response::from_parts(parts, Body::from(body))
}

/// A proxy in front of `upstream` throttling the next `throttle` DescribeAutoScalingGroups calls.
async fn start_proxy(upstream: &str, throttle: usize) -> (Proxy, std::net::SocketAddr) {
    let proxy = Proxy {
        upstream: upstream.to_string(),
        throttle: Arc::new(AtomicUsize::new(throttle)),
        seen: Arc::new(AtomicUsize::new(0)),
        bodies: Arc::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let app = axum::Router::new()
        .fallback(forward)
        .with_state(proxy.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (proxy, address)
}

#[tokio::test]
async fn assume_role_goes_through_sts_with_the_external_id() {
    use cloudoptim::cloud::aws::AssumeRole;
    let Some(moto) = support::Moto::start() else {
        return;
    };
    let (proxy, address) = start_proxy(&moto.endpoint, 0).await;
    let options = AwsOptions {
        assume_role: Some(AssumeRole {
            role_arn: "arn:aws:iam::123456789012:role/cloudoptim".into(),
            external_id: Some("fleet-42".into()),
        }),
        ..support::aws::options(&format!("http://{address}"))
    };
    let metrics = cloudoptim::metrics::Metrics::new().expect("metrics");
    let cloud = AwsCloud::connect(&options, metrics).await;
    cloud
        .groups(&GroupSelector::Names(vec!["none".into()]))
        .await
        .expect("a call with the assumed role");
    let bodies = proxy.bodies.lock().expect("bodies").clone();
    let assume = bodies
        .iter()
        .position(|b| b.contains("Action=AssumeRole"))
        .unwrap_or_else(|| panic!("no AssumeRole call: {bodies:?}"));
    assert!(
        bodies[assume].contains("ExternalId=fleet-42"),
        "{}",
        bodies[assume]
    );
    assert!(
        bodies[assume].contains("cloudoptim"),
        "role and session name sent"
    );
    let describe = bodies
        .iter()
        .position(|b| b.contains("Action=DescribeAutoScalingGroups"))
        .expect("the describe call");
    assert!(assume < describe, "credentials are assumed before the call");
}

#[tokio::test]
async fn throttled_calls_are_retried_and_counted() {
    let Some(moto) = support::Moto::start() else {
        return;
    };
    let (proxy, address) = start_proxy(&moto.endpoint, 2).await;
    let metrics = cloudoptim::metrics::Metrics::new().expect("metrics");
    let options = support::aws::options(&format!("http://{address}"));
    let cloud = AwsCloud::connect(&options, metrics.clone()).await;
    let selector = GroupSelector::Names(vec!["none".into()]);

    cloud
        .groups(&selector)
        .await
        .expect("two throttles are absorbed by the SDK's retries");
    assert_eq!(
        proxy.seen.load(Ordering::SeqCst),
        3,
        "two throttled attempts and one that went through"
    );
    assert!(metrics.render().contains(
        "cloudoptim_aws_api_calls_total{op=\"DescribeAutoScalingGroups\",result=\"ok\"} 1"
    ));

    proxy.throttle.store(100, Ordering::SeqCst);
    let err = cloud
        .groups(&selector)
        .await
        .expect_err("a long burst surfaces");
    assert!(
        matches!(&err, CloudError::Throttled { op: "DescribeAutoScalingGroups", request_id: Some(id) } if id == "e2e-throttled-request"),
        "{err:?}"
    );
    assert!(metrics.render().contains(
        "cloudoptim_aws_api_calls_total{op=\"DescribeAutoScalingGroups\",result=\"throttled\"} 1"
    ));
}
