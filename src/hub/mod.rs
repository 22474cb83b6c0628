//! The multi-cluster Spot risk hub (DESIGN.md section 7) and its member-side client.
//!
//! - [`store`]: the pure merge / expiry rules over plain data (one flag per region, zone, type).
//! - [`report`]: the wire format and the validation of a member's report.
//! - [`auth`]: member bearer tokens from a mounted Secret, compared in constant time.
//! - [`state`]: the process's shared state (store, tokens, change broadcast, readiness).
//! - [`server`]: the HTTP API (axum), including the server-sent-events watch.
//! - [`persist`]: SpotRiskFlag objects in the hub's cluster: load, write-behind, watch, sweep.
//! - [`client`]: the member side: push local flags, mirror the hub's flags locally.
//!
//! The hub serves plain HTTP; put TLS in front of it (ingress, load balancer or mesh).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use kube::Api;

use crate::api::SpotRiskFlag;
use crate::metrics::Metrics;

pub mod auth;
pub mod client;
pub mod persist;
pub mod report;
pub mod server;
pub mod state;
pub mod store;

use auth::Tokens;
use state::HubState;

/// How often the tokens directory is read again (a rotated Secret is picked up without a restart).
const TOKENS_RELOAD: Duration = Duration::from_secs(10);

/// Settings of one hub process.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Address of the API (and of `/healthz`, `/readyz`, `/metrics`).
    pub listen: SocketAddr,
    /// Address of a second server with only `/healthz`, `/readyz`, `/metrics` (for probes and
    /// scraping without exposing them with the API).
    pub metrics_addr: Option<SocketAddr>,
    /// The mounted tokens Secret.
    pub tokens_dir: PathBuf,
    /// Seconds a flag stays active after it was last reported.
    pub flag_ttl_seconds: i64,
}

/// Why the hub could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The tokens could not be read.
    #[error(transparent)]
    Tokens(#[from] auth::TokensError),
    /// No Kubernetes client.
    #[error("connecting to Kubernetes (kubeconfig or in-cluster): {0}")]
    Kube(#[source] kube::Error),
    /// An address could not be bound.
    #[error("listening on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The metrics registry could not be built.
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    /// The API server stopped.
    #[error("hub API server: {0}")]
    Serve(#[source] std::io::Error),
}

/// Run the hub until `shutdown` resolves: load the flags, serve the API, write changes behind,
/// follow the other replicas, sweep expired flags; flush once more before returning.
pub async fn serve(
    config: HubConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), HubError> {
    let tokens = Tokens::read_dir(&config.tokens_dir)?;
    let metrics = Metrics::new()?;
    let client = kube::Client::try_default().await.map_err(HubError::Kube)?;
    let api: Api<SpotRiskFlag> = Api::all(client);
    let members = tokens.len();
    let hub = HubState::new(config.flag_ttl_seconds, tokens, metrics.clone());
    let bind = |addr: SocketAddr| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| HubError::Bind { addr, source })
    };
    let listener = bind(config.listen).await?;
    let probes = match config.metrics_addr {
        Some(addr) => Some(
            crate::http::serve_probes(addr, metrics, hub.ready_flag())
                .await
                .map_err(|source| HubError::Bind { addr, source })?,
        ),
        None => None,
    };
    tracing::info!(listen = %config.listen, ttl_seconds = config.flag_ttl_seconds, "cloudoptim hub starting");
    load_until_done(&api, &hub).await;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let flusher = tokio::spawn(persist::flusher(api.clone(), hub.clone(), stopped()));
    let watch = tokio::spawn(persist::watch(api, hub.clone()));
    let reload = tokio::spawn(reload_tokens(config.tokens_dir.clone(), hub.clone()));
    hub.set_ready();
    tracing::info!(members, "hub ready");
    let served = tokio::select! {
        served = axum::serve(listener, server::router(hub)) => served.map_err(HubError::Serve),
        _ = shutdown => Ok(()),
    };
    tracing::info!("hub shutting down: writing pending flags");
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), flusher).await;
    watch.abort();
    reload.abort();
    if let Some(probes) = probes {
        probes.abort();
    }
    served
}

/// Load the stored flags, retrying with backoff while the API server is unreachable (the hub stays
/// unready meanwhile).
async fn load_until_done(api: &Api<SpotRiskFlag>, hub: &HubState) {
    let mut delay = Duration::from_millis(500);
    loop {
        match persist::load(api, hub).await {
            Ok(loaded) => {
                tracing::info!(loaded, "loaded stored flags");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?delay, "loading stored flags failed");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
}

async fn reload_tokens(dir: PathBuf, hub: HubState) {
    let mut tick = tokio::time::interval(TOKENS_RELOAD);
    tick.tick().await;
    loop {
        tick.tick().await;
        match Tokens::read_dir(&dir) {
            Ok(tokens) => hub.set_tokens(tokens),
            // Keep the tokens we have: a Secret being rewritten can be empty for a moment.
            Err(e) => {
                tracing::warn!(error = %e, "reloading member tokens failed; keeping the old ones")
            }
        }
    }
}
