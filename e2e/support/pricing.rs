//! A Price List API endpoint for tests: moto has no `pricing` backend, so this serves recorded
//! GetProducts response shapes (`tests/data/pricing/`, see its SOURCE.md) over the API's real wire
//! protocol (AWS JSON 1.1: `POST /` with `X-Amz-Target: AWSPriceListService.GetProducts`), so the real
//! SDK client (signing, retries, pagination, error parsing) is what the tests exercise.
//!
//! The first request is answered with a 400 `ThrottlingException` (the SDK must retry it); then
//! page 1 (with a `NextToken`), then page 2 for that token. The recorded products are eu-west-3's;
//! [`PricingEndpoint::start_for_region`] serves them as another region's (same types and prices).

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

/// What the endpoint saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Every request body, in order (the throttled one included).
    pub bodies: Vec<serde_json::Value>,
    /// Every `Authorization` header (SigV4: names the signing region and service).
    pub authorizations: Vec<String>,
    /// Every `X-Amz-Target` header.
    pub targets: Vec<String>,
}

/// A running endpoint.
pub struct PricingEndpoint {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// What it saw.
    pub seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PricingEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn data(name: &str) -> String {
    let path = super::repo_root().join("tests/data/pricing").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The recorded region of the products.
const RECORDED_REGION: &str = "eu-west-3";

/// A recorded page with its products' `regionCode` set to `region`.
fn page_for(name: &str, region: &str) -> String {
    data(name).replace(
        &format!(r#"\"regionCode\":\"{RECORDED_REGION}\""#),
        &format!(r#"\"regionCode\":\"{region}\""#),
    )
}

/// The NextToken of page 1.
fn page_one_token() -> String {
    let page: serde_json::Value = serde_json::from_str(&data("get-products-page-1.json")).unwrap();
    page["NextToken"].as_str().unwrap().to_string()
}

fn json_11(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/x-amz-json-1.1")],
        body,
    )
        .into_response()
}

impl PricingEndpoint {
    /// Start on a free local port, inside the current tokio runtime.
    pub async fn start() -> PricingEndpoint {
        Self::start_for_region(RECORDED_REGION).await
    }

    /// [`PricingEndpoint::start`], the products answered as `region`'s.
    pub async fn start_for_region(region: &str) -> PricingEndpoint {
        let region = region.to_string();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let state = seen.clone();
        let app = Router::new().route(
            "/",
            post(move |headers: HeaderMap, body: Bytes| {
                let seen = state.clone();
                let region = region.clone();
                async move {
                    let header = |name: &str| {
                        headers
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_string()
                    };
                    let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                    let first = {
                        let mut seen = seen.lock().unwrap();
                        seen.bodies.push(body.clone());
                        seen.authorizations.push(header("authorization"));
                        seen.targets.push(header("x-amz-target"));
                        seen.bodies.len() == 1
                    };
                    if header("x-amz-target") != "AWSPriceListService.GetProducts" {
                        return json_11(
                            StatusCode::BAD_REQUEST,
                            r#"{"__type":"UnknownOperationException"}"#.into(),
                        );
                    }
                    if first {
                        return json_11(StatusCode::BAD_REQUEST, data("throttling-exception.json"));
                    }
                    let page = match body["NextToken"].as_str() {
                        None => "get-products-page-1.json",
                        Some(token) if token == page_one_token() => "get-products-page-2.json",
                        Some(_) => {
                            return json_11(
                                StatusCode::BAD_REQUEST,
                                r#"{"__type":"InvalidNextTokenException","Message":"bad token"}"#
                                    .into(),
                            );
                        }
                    };
                    json_11(StatusCode::OK, page_for(page, &region))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a local port");
        let url = format!("http://{}", listener.local_addr().expect("local address"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        PricingEndpoint { url, seen, task }
    }
}
