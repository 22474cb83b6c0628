//! The hub's HTTP API (DESIGN.md section 7):
//!
//! - `POST /v1/flags` a member's report -> 202 `{"name", "result"}`; 401 unknown or missing token,
//!   403 a `clusterId` other than the token's, 413 a body over 64 KiB, 400 a body that is not a valid
//!   report (the message names the field), 429 with `Retry-After` when the member sends reports
//!   faster than its rate or has too many requests in flight, 422 when the report would make the
//!   member a reporter of more active flags than `--max-flags-per-member`.
//! - `GET /v1/flags?region=R` -> `{"flags": [...]}`, the active flags shown to the member (its own,
//!   and the others' once confirmed; see `hub::limits`).
//! - `GET /v1/flags/watch?region=R` -> server-sent events (see `hub::watch`); 429 beyond
//!   `--max-watches-per-member`.
//! - `/healthz`, `/readyz`, `/metrics` without authentication.
//!
//! Every error is JSON `{"error": "..."}`. Tokens never reach a log line.

use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use super::limits::{Limited, Slot};
use super::report::{FlagView, parse_report};
use super::state::{HubState, now_ms};
use super::store::Outcome;
use super::watch::{self, Watcher};

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
    /// A per-member rate or concurrency limit.
    #[error(transparent)]
    Limited(#[from] Limited),
    /// The report would make the member a reporter of too many active flags.
    #[error(
        "member {member:?} already reports {limit} active flags, the most one member may \
         (the hub's --max-flags-per-member); this report was not counted"
    )]
    TooManyFlags {
        /// The member.
        member: String,
        /// The limit.
        limit: usize,
    },
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
            ApiError::Limited(limited) => limited.metric_label(),
            ApiError::TooManyFlags { .. } => "flags",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotReady => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Limited(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::TooManyFlags { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = axum::Json(json!({"error": self.to_string()}));
        let mut response = (self.status(), body).into_response();
        let headers = response.headers_mut();
        match &self {
            ApiError::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::Limited(limited) => {
                headers.insert(header::RETRY_AFTER, limited.retry_after_secs().into());
            }
            _ => {}
        }
        response
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

/// The member presenting the request's bearer token, and the token.
fn authenticate(hub: &HubState, headers: &HeaderMap) -> Result<(String, Vec<u8>), ApiError> {
    let header = headers
        .get(header::AUTHORIZATION)
        .ok_or(ApiError::Unauthorized)?;
    let token = super::auth::bearer(header.as_bytes()).ok_or(ApiError::Unauthorized)?;
    let member = hub.member(token).ok_or(ApiError::Unauthorized)?;
    Ok((member, token.to_vec()))
}

/// Count a refusal by a limit in `cloudoptim_hub_limited_total`.
fn limited(hub: &HubState, error: ApiError) -> ApiError {
    if matches!(error, ApiError::Limited(_) | ApiError::TooManyFlags { .. }) {
        let label = error.metric_label();
        hub.metrics().hub_limited.with_label_values(&[label]).inc();
    }
    error
}

/// An authenticated member's request slot.
fn admit(hub: &HubState, headers: &HeaderMap) -> Result<(String, Slot), ApiError> {
    let (member, _) = authenticate(hub, headers)?;
    let slot = hub
        .gates()
        .request(&member)
        .map_err(|e| limited(hub, e.into()))?;
    Ok((member, slot))
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
    let (member, _slot) = admit(hub, request.headers())?;
    hub.gates()
        .report(&member, Instant::now())
        .map_err(|e| limited(hub, e.into()))?;
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
    if outcome == Outcome::OverFlagLimit {
        let limit = hub.gates().limits().max_flags_per_member;
        return Err(limited(hub, ApiError::TooManyFlags { member, limit }));
    }
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
    let (member, _slot) = admit(&hub, &headers)?;
    let flags: Vec<FlagView> = hub
        .active_for(&member, query.region.as_deref())
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
    let (member, token) = authenticate(&hub, &headers)?;
    let slot = hub
        .gates()
        .watch(&member)
        .map_err(|e| limited(&hub, e.into()))?;
    let watcher = Watcher {
        member,
        token,
        slot,
    };
    let stream = watch::stream(hub, watcher, query.region);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::auth::Tokens;
    use crate::metrics::Metrics;
    use axum::http::Request as HttpRequest;

    fn hub() -> HubState {
        let metrics = Metrics::new().expect("metrics");
        let hub = HubState::new(1800, tokens(), metrics);
        hub.set_ready();
        hub
    }

    fn tokens() -> Tokens {
        Tokens::from_pairs([("prod-eu", "tok-eu"), ("prod-us", "tok-us")])
    }

    fn limited_hub(limits: crate::hub::limits::Limits) -> HubState {
        let metrics = Metrics::new().expect("metrics");
        let hub = HubState::with_limits(1800, tokens(), metrics, limits);
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

    fn watcher(hub: &HubState, member: &str, token: &str) -> Watcher {
        Watcher {
            member: member.into(),
            token: token.as_bytes().to_vec(),
            slot: hub.gates().watch(member).expect("slot"),
        }
    }

    #[tokio::test]
    async fn the_watch_stream_starts_with_the_active_set_then_synced() {
        use futures::StreamExt;
        let hub = hub();
        post(&hub, Some("tok-eu"), report("prod-eu")).await;
        let watcher = watcher(&hub, "prod-eu", "tok-eu");
        let mut stream = Box::pin(watch::stream(
            hub.clone(),
            watcher,
            Some("us-east-1".into()),
        ));
        let _first = stream.next().await.expect("flag event");
        let _synced = stream.next().await.expect("synced event");
        let mut later = report("prod-eu");
        later = later.replace("m5.large", "c5.large");
        post(&hub, Some("tok-eu"), later).await;
        let change = stream.next().await.expect("change event");
        assert!(format!("{change:?}").contains("c5.large"), "{change:?}");
    }

    fn report_of(cluster: &str, instance_type: &str) -> String {
        report(cluster).replace("m5.large", instance_type)
    }

    #[tokio::test]
    async fn a_member_sending_faster_than_its_rate_gets_429_and_another_member_does_not() {
        use crate::hub::limits::Limits;
        let hub = limited_hub(Limits {
            reports_per_second: 0.5,
            report_burst: 2,
            ..Limits::default()
        });
        for _ in 0..2 {
            assert_eq!(
                post(&hub, Some("tok-eu"), report("prod-eu")).await.0,
                StatusCode::ACCEPTED
            );
        }
        let request = HttpRequest::post("/v1/flags")
            .header("authorization", "Bearer tok-eu")
            .body(Body::from(report("prod-eu")))
            .expect("request");
        let response = post_flag(State(hub.clone()), request).await;
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        assert_eq!(
            post(&hub, Some("tok-us"), report("prod-us")).await.0,
            StatusCode::ACCEPTED
        );
        let limited = hub
            .metrics()
            .hub_limited
            .with_label_values(&["report_rate"])
            .get();
        assert_eq!(limited, 1);
    }

    #[tokio::test]
    async fn a_report_beyond_the_flag_limit_is_refused_naming_the_limit() {
        use crate::hub::limits::Limits;
        let hub = limited_hub(Limits {
            max_flags_per_member: 1,
            ..Limits::default()
        });
        assert_eq!(
            post(&hub, Some("tok-eu"), report("prod-eu")).await.0,
            StatusCode::ACCEPTED
        );
        let (status, answer) = post(&hub, Some("tok-eu"), report_of("prod-eu", "c5.large")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(answer.contains("--max-flags-per-member"), "{answer}");
        assert_eq!(hub.active(None).len(), 1);
    }

    #[tokio::test]
    async fn a_single_members_flag_reaches_another_member_only_once_confirmed() {
        use futures::StreamExt;
        let hub = hub();
        post(&hub, Some("tok-eu"), report("prod-eu")).await;
        assert_eq!(
            hub.active_for("prod-eu", None).len(),
            1,
            "the reporter sees it"
        );
        assert!(hub.active_for("prod-us", None).is_empty(), "others do not");
        let watcher = watcher(&hub, "prod-us", "tok-us");
        let mut stream = Box::pin(watch::stream(hub.clone(), watcher, None));
        let synced = format!("{:?}", stream.next().await.expect("synced"));
        assert!(
            synced.contains("synced") && synced.contains(":0}"),
            "{synced}"
        );
        post(&hub, Some("tok-us"), report("prod-us")).await;
        let confirmed = format!("{:?}", stream.next().await.expect("confirmed flag"));
        assert!(
            confirmed.contains("prod-eu") && confirmed.contains("prod-us"),
            "{confirmed}"
        );
    }

    #[tokio::test]
    async fn a_watch_ends_when_its_token_is_revoked_and_not_when_another_changes() {
        use crate::hub::limits::Limits;
        use futures::StreamExt;
        let hub = limited_hub(Limits {
            max_watches_per_member: 1,
            ..Limits::default()
        });
        let watcher = watcher(&hub, "prod-eu", "tok-eu");
        let mut stream = Box::pin(watch::stream(hub.clone(), watcher, None));
        let _synced = stream.next().await.expect("synced");
        hub.set_tokens(Tokens::from_pairs([
            ("prod-eu", "tok-eu"),
            ("prod-us", "new-us"),
        ]));
        post(&hub, Some("tok-eu"), report("prod-eu")).await;
        assert!(
            stream.next().await.is_some(),
            "still open after another member's rotation"
        );
        hub.set_tokens(Tokens::from_pairs([("prod-eu", "rotated-eu")]));
        let end = tokio::time::timeout(Duration::from_secs(5), stream.next()).await;
        assert!(matches!(end, Ok(None)), "the watch ended");
        assert_eq!(hub.metrics().hub_watches_revoked.get(), 1);
        assert!(
            hub.gates().watch("prod-eu").is_ok(),
            "its slot was given back"
        );
    }
}
