//! Auto Scaling lifecycle-hook calls for tests: moto 5.2.5 implements PutLifecycleHook and
//! DescribeLifecycleHooks but not CompleteLifecycleAction nor RecordLifecycleActionHeartbeat (its
//! server answers them with a bare HTTP 500). This endpoint stands in front of moto: it answers those
//! two itself, over Auto Scaling's real query protocol (form body in, XML out), after checking with
//! moto that the group has the named hook (as AWS does: a `ValidationError` otherwise), and records
//! each call; every other request is forwarded to moto unchanged. So the operator's real SDK client
//! (signing, retries, error parsing) is what the tests exercise.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

/// Run when a CompleteLifecycleAction arrives, before it is answered (the operator waits): what the
/// test wants to know of the world at that moment, e.g. the node's pods.
pub type Probe = Arc<
    dyn Fn(BTreeMap<String, String>) -> Pin<Box<dyn Future<Output = String> + Send>> + Send + Sync,
>;

/// One lifecycle call the endpoint answered.
#[derive(Debug, Clone)]
pub struct Call {
    /// `CompleteLifecycleAction` or `RecordLifecycleActionHeartbeat`.
    pub action: String,
    /// The request's parameters (`AutoScalingGroupName`, `LifecycleHookName`,
    /// `LifecycleActionToken`, `LifecycleActionResult`, ...).
    pub params: BTreeMap<String, String>,
    /// When it arrived.
    pub at: Instant,
    /// What the probe said, for a CompleteLifecycleAction while one was set.
    pub probe: Option<String>,
}

#[derive(Clone)]
struct Shared {
    moto: String,
    http: reqwest::Client,
    calls: Arc<Mutex<Vec<Call>>>,
    probe: Arc<Mutex<Option<Probe>>>,
}

/// A running endpoint.
pub struct HookEndpoint {
    /// `http://127.0.0.1:PORT`: the operator's AWS endpoint.
    pub url: String,
    shared: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HookEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HookEndpoint {
    /// Start on a free local port in front of `moto` (its endpoint URL), in the current runtime.
    pub async fn start(moto: &str) -> HookEndpoint {
        let shared = Shared {
            moto: moto.trim_end_matches('/').to_string(),
            http: reqwest::Client::new(),
            calls: Arc::default(),
            probe: Arc::default(),
        };
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("hook endpoint binds");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("hook endpoint serves");
        });
        HookEndpoint { url, shared, task }
    }

    /// Every lifecycle call answered so far.
    pub fn calls(&self) -> Vec<Call> {
        self.shared.calls.lock().expect("calls").clone()
    }

    /// Run `probe` at every CompleteLifecycleAction from now on.
    pub fn set_probe(&self, probe: Probe) {
        *self.shared.probe.lock().expect("probe") = Some(probe);
    }
}

const LIFECYCLE_CALLS: [&str; 2] = ["CompleteLifecycleAction", "RecordLifecycleActionHeartbeat"];

async fn handle(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = form(&body);
    match params.get("Action") {
        Some(action) if LIFECYCLE_CALLS.contains(&action.as_str()) => {
            lifecycle(&shared, action.clone(), params).await
        }
        _ => forward(&shared, method, &uri, &headers, body).await,
    }
}

/// A query-protocol body as its parameters.
fn form(body: &[u8]) -> BTreeMap<String, String> {
    let text = String::from_utf8_lossy(body);
    format!("/?{text}")
        .parse::<Uri>()
        .ok()
        .and_then(|uri| Query::<BTreeMap<String, String>>::try_from_uri(&uri).ok())
        .map(|q| q.0)
        .unwrap_or_default()
}

async fn lifecycle(shared: &Shared, action: String, params: BTreeMap<String, String>) -> Response {
    let at = Instant::now();
    let (group, hook) = (
        params
            .get("AutoScalingGroupName")
            .cloned()
            .unwrap_or_default(),
        params.get("LifecycleHookName").cloned().unwrap_or_default(),
    );
    if !has_hook(shared, &group, &hook).await {
        return xml(
            StatusCode::BAD_REQUEST,
            format!(
                "<ErrorResponse xmlns=\"http://autoscaling.amazonaws.com/doc/2011-01-01/\"><Error><Type>Sender</Type><Code>ValidationError</Code><Message>No active Lifecycle Action found with hook {hook} in group {group}</Message></Error><RequestId>e2e-hooks</RequestId></ErrorResponse>"
            ),
        );
    }
    let probe = shared.probe.lock().expect("probe").clone();
    let note = match probe {
        Some(probe) if action == "CompleteLifecycleAction" => Some(probe(params.clone()).await),
        _ => None,
    };
    shared.calls.lock().expect("calls").push(Call {
        action: action.clone(),
        params,
        at,
        probe: note,
    });
    xml(
        StatusCode::OK,
        format!(
            "<{action}Response xmlns=\"http://autoscaling.amazonaws.com/doc/2011-01-01/\"><{action}Result/><ResponseMetadata><RequestId>e2e-hooks</RequestId></ResponseMetadata></{action}Response>"
        ),
    )
}

/// Whether moto knows hook `hook` on group `group` (DescribeLifecycleHooks, which moto implements).
async fn has_hook(shared: &Shared, group: &str, hook: &str) -> bool {
    let body = format!(
        "Action=DescribeLifecycleHooks&Version=2011-01-01&AutoScalingGroupName={group}&LifecycleHookNames.member.1={hook}"
    );
    let answer = shared
        .http
        .post(format!("{}/", shared.moto))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        // moto routes by the SigV4 credential scope's service; it does not check signatures.
        .header(
            header::AUTHORIZATION,
            "AWS4-HMAC-SHA256 Credential=testing/20250101/us-east-1/autoscaling/aws4_request, SignedHeaders=host, Signature=0",
        )
        .body(body)
        .send()
        .await;
    match answer {
        Ok(response) => response.text().await.is_ok_and(|text| {
            text.contains(&format!("<LifecycleHookName>{hook}</LifecycleHookName>"))
        }),
        Err(_) => false,
    }
}

fn xml(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/xml")], body).into_response()
}

async fn forward(
    shared: &Shared,
    method: Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut request = shared
        .http
        .request(method, format!("{}{path}", shared.moto))
        .body(body);
    for (name, value) in headers {
        if name != header::HOST && name != header::CONTENT_LENGTH {
            request = request.header(name, value);
        }
    }
    match request.send().await {
        Ok(response) => {
            let status = response.status();
            let mut out = HeaderMap::new();
            for (name, value) in response.headers() {
                if name != header::TRANSFER_ENCODING
                    && name != header::CONNECTION
                    && name != header::CONTENT_LENGTH
                {
                    out.append(name, value.clone());
                }
            }
            let bytes = response.bytes().await.unwrap_or_default();
            (status, out, bytes).into_response()
        }
        Err(e) => (StatusCode::BAD_GATEWAY, format!("moto: {e}")).into_response(),
    }
}
