//! The client against a small HTTP server that answers as Prometheus does (the real one is in
//! `e2e/rightsizing.rs`).

use std::collections::HashMap;

use axum::Router;
use axum::extract::Query;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use serde_json::json;

use super::*;

async fn answer(
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> (StatusCode, String) {
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer s3cret") {
        return (StatusCode::UNAUTHORIZED, "Unauthorized".into());
    }
    let query = params.get("query").cloned().unwrap_or_default();
    let body = match query.as_str() {
        "up" => json!({"status": "success", "data": {"resultType": "matrix", "result": [
            {"metric": {"pod": "p", "step": params.get("step").cloned().unwrap_or_default()},
             "values": [[1700000000, "1"], [1700000060, "2"]]}]}}),
        "nothing" => json!({"status": "success", "data": {"resultType": "vector", "result": []}}),
        _ => {
            let error = json!({"status": "error", "errorType": "bad_data", "error": "parse error"});
            return (StatusCode::BAD_REQUEST, error.to_string());
        }
    };
    (StatusCode::OK, body.to_string())
}

async fn server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = Router::new()
        .route("/prefix/api/v1/query_range", get(answer))
        .route("/prefix/api/v1/query", get(answer));
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/prefix/")
}

fn with_token(url: &str) -> Prometheus {
    let mut options = PrometheusOptions::new(url);
    options.bearer_token = Some("s3cret".into());
    Prometheus::new(&options).expect("client")
}

#[tokio::test]
async fn a_range_query_sends_the_token_and_step_and_returns_series() {
    let prom = with_token(&server().await);
    let series = prom
        .query_range("up", 1_700_000_000, 1_700_000_060, Duration::from_secs(60))
        .await
        .expect("series");
    assert_eq!(series[0].label("step"), "60s");
    assert_eq!(series[0].samples.len(), 2);
}

#[tokio::test]
async fn a_missing_token_is_an_http_error_with_its_status() {
    let url = server().await;
    let prom = Prometheus::new(&PrometheusOptions::new(&url)).expect("client");
    let refused = prom.query("up", None).await.expect_err("refused");
    assert!(
        matches!(refused, PromError::Http { status: 401, .. }),
        "{refused}"
    );
}

#[tokio::test]
async fn a_bad_query_and_no_data_are_told_apart() {
    let prom = with_token(&server().await);
    let bad = prom.query("sum(", None).await.expect_err("refused");
    assert!(matches!(bad, PromError::BadQuery { .. }), "{bad}");
    assert!(bad.to_string().contains("parse error"), "{bad}");
    let none = prom.query("nothing", None).await.expect_err("no data");
    assert!(matches!(none, PromError::NoData { .. }), "{none}");
    assert_eq!(or_empty(Err(none)).expect("empty").len(), 0);
}

#[tokio::test]
async fn an_unreachable_server_names_its_url() {
    // Bind then drop: the port is closed when the client connects.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    drop(listener);
    let prom = Prometheus::new(&PrometheusOptions::new(&url)).expect("client");
    let down = prom.query("up", None).await.expect_err("unreachable");
    assert!(matches!(down, PromError::Unreachable { .. }), "{down}");
    assert!(down.to_string().contains(&url), "{down}");
    assert_eq!(down.label(), "unreachable");
}
