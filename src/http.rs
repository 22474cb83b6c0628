//! The operator's small HTTP server: `/metrics` (Prometheus text), `/healthz` (process alive) and
//! `/readyz` (leader elected and controllers started); [`client`] is the one outbound HTTP client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use crate::metrics::Metrics;

pub mod client;

#[derive(Clone)]
struct Probes {
    metrics: Metrics,
    ready: Arc<AtomicBool>,
}

/// Bind `addr` and serve the probes and metrics in the background.
pub async fn serve_probes(
    addr: SocketAddr,
    metrics: Metrics,
    ready: Arc<AtomicBool>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let app = Router::new()
        .route(
            "/metrics",
            get(|State(p): State<Probes>| async move { p.metrics.render() }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(p): State<Probes>| async move {
                if p.ready.load(Ordering::Relaxed) {
                    (StatusCode::OK, "ready")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not leader yet")
                }
            }),
        )
        .with_state(Probes { metrics, ready });
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    }))
}
