//! The hub's HTTP API (DESIGN.md section 7):
//!
//! - `POST /v1/flags` a member's report -> 202 `{"name", "result"}`; 401 unknown or missing token,
//!   403 a `clusterId` other than the token's, 413 a body over 64 KiB, 400 a body that is not a valid
//!   report (the message names the field).
//! - `GET /v1/flags?region=R` -> `{"flags": [...]}`, the active flags.
//! - `GET /v1/flags/watch?region=R` -> server-sent events: `flag` (raised or changed) for every active
//!   flag, then `synced` (the initial set is complete), then `flag` / `expired` as they happen.
//! - `/healthz`, `/readyz`, `/metrics` without authentication.
//!
//! Every error is JSON `{"error": "..."}`. Tokens never reach a log line.

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::Stream;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast;

use super::report::{FlagView, parse_report};
use super::state::{Change, HubState, now_ms};
use super::store::Flag;

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A refused request: status and a message for the JSON body.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No or unknown bearer token.
    #[error("missing or unknown bearer token")]
    Unauthorized,
    /// A member reporting as another cluster.
    #[error("clusterId {claimed:?} does not match the token's cluster {member:?}")]
    Forbidden {
        /// The body's clusterId.
        claimed: String,
        /// The token's cluster.
        member: String,
    },
    /// Body over [`MAX_BODY_BYTES`].
    #[error("request body larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
    /// Not a valid report.
    #[error("{0}")]
    BadRequest(String),
    /// Flags not loaded yet.
    #[error("hub is starting: flags not loaded yet")]
    NotReady,
}

impl ApiError {
    /// Short label for `cloudoptim_hub_reports_total{result}`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden { .. } => "forbidden",
            ApiError::TooLarge => "too_large",
            ApiError::BadRequest(_) => "invalid",
            ApiError::NotReady => "not_ready",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotReady => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = axum::Json(json!({"error": self.to_string()}));
        if matches!(self, ApiError::Unauthorized) {
            let challenge = [(header::WWW_AUTHENTICATE, "Bearer")];
            return (self.status(), challenge, body).into_response();
        }
        (self.status(), body).into_response()
    }
}

/// The hub's routes over `state`.
pub fn router(state: HubState) -> Router {
    Router::new()
        .route("/v1/flags", post(post_flag).get(list_flags))
        .route("/v1/flags/watch", get(watch_flags))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route(
            "/metrics",
            get(|State(hub): State<HubState>| async move { hub.metrics().render() }),
        )
        .with_state(state)
}

async fn readyz(State(hub): State<HubState>) -> Response {
    if hub.is_ready() {
        (StatusCode::OK, "ready").into_response()
    } else {
        ApiError::NotReady.into_response()
    }
}

/// The member presenting the request's bearer token.
fn authenticate(hub: &HubState, headers: &HeaderMap) -> Result<String, ApiError> {
    let header = headers
        .get(header::AUTHORIZATION)
        .ok_or(ApiError::Unauthorized)?;
    let token = super::auth::bearer(header.as_bytes()).ok_or(ApiError::Unauthorized)?;
    hub.member(token).ok_or(ApiError::Unauthorized)
}

async fn post_flag(State(hub): State<HubState>, request: Request) -> Response {
    let result = accept(&hub, request).await;
    let label = match &result {
        Ok((_, outcome)) => outcome,
        Err(e) => e.metric_label(),
    };
    hub.metrics().hub_reports.with_label_values(&[label]).inc();
    match result {
        Ok((name, outcome)) => (
            StatusCode::ACCEPTED,
            axum::Json(json!({"name": name, "result": outcome})),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

async fn accept(hub: &HubState, request: Request) -> Result<(String, &'static str), ApiError> {
    let member = authenticate(hub, request.headers())?;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES) {
        return Err(ApiError::TooLarge);
    }
    let body = read_body(request.into_body()).await?;
    let report = parse_report(&body, now_ms()).map_err(|e| ApiError::BadRequest(e.0))?;
    if report.cluster != member {
        return Err(ApiError::Forbidden {
            claimed: report.cluster,
            member,
        });
    }
    let name = report.key.name();
    let outcome = hub.accept(report);
    Ok((name, outcome.label()))
}

async fn read_body(body: Body) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|e| {
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            while let Some(err) = source {
                if err.is::<http_body_util::LengthLimitError>() {
                    return ApiError::TooLarge;
                }
                source = err.source();
            }
            ApiError::BadRequest(format!("reading the request body: {e}"))
        })
}

/// `?region=` of the list and watch endpoints.
#[derive(Debug, Deserialize)]
struct RegionQuery {
    region: Option<String>,
}

async fn list_flags(
    State(hub): State<HubState>,
    headers: HeaderMap,
    Query(query): Query<RegionQuery>,
) -> Result<Response, ApiError> {
    authenticate(&hub, &headers)?;
    let flags: Vec<FlagView> = hub
        .active(query.region.as_deref())
        .iter()
        .map(FlagView::from)
        .collect();
    Ok(axum::Json(json!({"flags": flags})).into_response())
}

async fn watch_flags(
    State(hub): State<HubState>,
    headers: HeaderMap,
    Query(query): Query<RegionQuery>,
) -> Result<Response, ApiError> {
    authenticate(&hub, &headers)?;
    let stream = watch_stream(hub, query.region);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// Counts a watch subscriber for as long as its stream lives.
struct Subscriber(HubState);

impl Subscriber {
    fn new(hub: HubState) -> Subscriber {
        hub.metrics().hub_watch_subscribers.inc();
        Subscriber(hub)
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.0.metrics().hub_watch_subscribers.dec();
    }
}

struct Watch {
    subscriber: Subscriber,
    region: Option<String>,
    pending: std::collections::VecDeque<Event>,
    changes: broadcast::Receiver<Change>,
}

impl Watch {
    fn queue_snapshot(&mut self, flags: &[Flag]) {
        self.pending.extend(flags.iter().map(|f| event("flag", f)));
        self.pending.push_back(
            Event::default()
                .event("synced")
                .data(json!({"count": flags.len()}).to_string()),
        );
    }

    fn wants(&self, change: &Change) -> bool {
        self.region
            .as_deref()
            .is_none_or(|r| change.flag().key.region == r)
    }
}

fn event(kind: &str, flag: &Flag) -> Event {
    let data = serde_json::to_string(&FlagView::from(flag)).unwrap_or_default();
    Event::default().event(kind).data(data)
}

/// The active set, `synced`, then every change; a subscriber that fell behind gets the set again.
fn watch_stream(
    hub: HubState,
    region: Option<String>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let (flags, changes) = hub.subscribe(region.as_deref());
    let mut watch = Watch {
        subscriber: Subscriber::new(hub),
        region,
        pending: Default::default(),
        changes,
    };
    watch.queue_snapshot(&flags);
    futures::stream::unfold(watch, |mut watch| async move {
        loop {
            if let Some(event) = watch.pending.pop_front() {
                return Some((Ok(event), watch));
            }
            match watch.changes.recv().await {
                Ok(change) if watch.wants(&change) => {
                    let event = match &change {
                        Change::Upsert(flag) => event("flag", flag),
                        Change::Expired(flag) => event("expired", flag),
                    };
                    return Some((Ok(event), watch));
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let flags = watch.subscriber.0.active(watch.region.as_deref());
                    watch.queue_snapshot(&flags);
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::auth::Tokens;
    use crate::metrics::Metrics;
    use axum::http::Request as HttpRequest;

    fn hub() -> HubState {
        let metrics = Metrics::new().expect("metrics");
        let hub = HubState::new(1800, Tokens::from_pairs([("prod-eu", "tok-eu")]), metrics);
        hub.set_ready();
        hub
    }

    fn report(cluster: &str) -> String {
        let at = k8s_openapi::jiff::Timestamp::now();
        json!({"clusterId": cluster, "region": "us-east-1", "zone": "us-east-1a",
               "instanceType": "m5.large", "reason": "SpotInterruption", "observedAt": at.to_string()})
        .to_string()
    }

    async fn post(hub: &HubState, token: Option<&str>, body: String) -> (StatusCode, String) {
        let mut request = HttpRequest::post("/v1/flags").header("content-type", "application/json");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let request = request.body(Body::from(body)).expect("request");
        match accept(hub, request).await {
            Ok((_, outcome)) => (StatusCode::ACCEPTED, outcome.to_string()),
            Err(e) => (e.status(), e.to_string()),
        }
    }

    #[tokio::test]
    async fn a_member_report_is_accepted_once() {
        let hub = hub();
        let body = report("prod-eu");
        let (status, answer) = post(&hub, Some("tok-eu"), body.clone()).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
        assert_eq!(answer, "created");
        let (_, answer) = post(&hub, Some("tok-eu"), body).await;
        assert_eq!(answer, "duplicate");
        assert_eq!(hub.active(None)[0].count, 1);
    }

    #[tokio::test]
    async fn unknown_or_missing_tokens_are_refused_with_401() {
        let hub = hub();
        assert_eq!(
            post(&hub, None, report("prod-eu")).await.0,
            StatusCode::UNAUTHORIZED
        );
        let (status, _) = post(&hub, Some("nope"), report("prod-eu")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn reporting_as_another_cluster_is_forbidden() {
        let (status, answer) = post(&hub(), Some("tok-eu"), report("prod-us")).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    }

    #[tokio::test]
    async fn a_body_over_64_kib_is_refused_with_413() {
        let body = format!("{{\"pad\": \"{}\"}}", "x".repeat(MAX_BODY_BYTES));
        assert_eq!(
            post(&hub(), Some("tok-eu"), body).await.0,
            StatusCode::PAYLOAD_TOO_LARGE
        );
    }

    #[tokio::test]
    async fn an_invalid_report_is_refused_with_400_naming_the_field() {
        let body = report("prod-eu").replace("us-east-1a", "eu-west-1a");
        let (status, answer) = post(&hub(), Some("tok-eu"), body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(answer.contains("zone: "), "{answer}");
    }

    #[tokio::test]
    async fn the_watch_stream_starts_with_the_active_set_then_synced() {
        use futures::StreamExt;
        let hub = hub();
        post(&hub, Some("tok-eu"), report("prod-eu")).await;
        let mut stream = Box::pin(watch_stream(hub.clone(), Some("us-east-1".into())));
        let _first = stream.next().await.expect("flag event");
        let _synced = stream.next().await.expect("synced event");
        let mut later = report("prod-eu");
        later = later.replace("m5.large", "c5.large");
        post(&hub, Some("tok-eu"), later).await;
        let change = stream.next().await.expect("change event");
        assert!(format!("{change:?}").contains("c5.large"), "{change:?}");
    }
}
