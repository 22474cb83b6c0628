//! The multi-cluster Spot risk hub (DESIGN.md section 7) and its member-side client.
//!
//! - [`store`]: the pure merge / expiry rules over plain data (one flag per region, zone, type).
//! - [`report`]: the wire format and the validation of a member's report.
//! - [`auth`]: member bearer tokens from a mounted Secret, compared in constant time.
//! - [`state`]: the process's shared state (store, tokens, limits, change broadcast, readiness).
//! - [`limits`]: what one member may ask (report rate, requests and watches in flight, flags held,
//!   confirmation before a flag reaches the other members).
//! - [`server`]: the HTTP API (axum); [`watch`]: its server-sent-events watch.
//! - [`listen`]: connections: TLS ([`tls`], reloaded when the certificate files change), the
//!   connection cap, header-read and idle timeouts.
//! - [`persist`]: SpotRiskFlag objects in the hub's cluster: load, write-behind, watch, sweep.
//! - [`client`]: the member side: push local flags, mirror the hub's flags locally.
//!
//! The hub serves HTTPS; plain HTTP only with `--insecure-plain-http` (behind a mesh that encrypts).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use kube::Api;

use crate::api::SpotRiskFlag;
use crate::metrics::Metrics;
use crate::retry::Backoff;

pub mod auth;
pub mod client;
pub mod limits;
pub mod listen;
pub mod persist;
pub mod report;
pub mod server;
pub mod state;
pub mod store;
pub mod tls;
pub mod watch;

use auth::Tokens;
use limits::Limits;
use listen::Serving;
use state::HubState;
use tls::{CertFiles, ReloadingCert};

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
    /// The server certificate; `None` serves plain HTTP (`--insecure-plain-http`).
    pub tls: Option<CertFiles>,
    /// How often the tokens directory and the certificate files are read again (a rotated Secret
    /// is picked up without a restart; a removed or changed token ends that member's watches).
    pub reload_interval: Duration,
    /// Time for the TLS handshake and each request's headers.
    pub header_read_timeout: Duration,
    /// A connection with no traffic for this long is closed.
    pub idle_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// Per-member limits.
    pub limits: Limits,
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
    /// The certificate could not be loaded.
    #[error("TLS certificate: {0}")]
    Tls(#[from] tls::TlsError),
}

/// Run the hub until `shutdown` resolves: load the flags, serve the API, write changes behind,
/// follow the other replicas, sweep expired flags; flush once more before returning.
pub async fn serve(
    config: HubConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), HubError> {
    let tokens = Tokens::read_dir(&config.tokens_dir)?;
    let cert = config
        .tls
        .clone()
        .map(|files| ReloadingCert::new(files).map(std::sync::Arc::new))
        .transpose()?;
    let serving = Serving {
        tls: cert
            .as_ref()
            .map(ReloadingCert::server_config)
            .transpose()?,
        header_read_timeout: config.header_read_timeout,
        idle_timeout: config.idle_timeout,
        max_connections: config.max_connections,
    };
    let metrics = Metrics::new()?;
    let client = kube::Client::try_default().await.map_err(HubError::Kube)?;
    let api: Api<SpotRiskFlag> = Api::all(client);
    let members = tokens.len();
    let limits = config.limits.clone();
    let hub = HubState::with_limits(config.flag_ttl_seconds, tokens, metrics.clone(), limits);
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
    tracing::info!(listen = %config.listen, tls = cert.is_some(), ttl_seconds = config.flag_ttl_seconds, limits = ?config.limits, "cloudoptim hub starting");
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
    let reload = tokio::spawn(reload(config.clone(), cert, hub.clone()));
    hub.set_ready();
    tracing::info!(members, "hub ready");
    let router = server::router(hub.clone());
    listen::serve(listener, router, serving, hub.metrics().clone(), shutdown).await;
    tracing::info!("hub shutting down: writing pending flags");
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), flusher).await;
    watch.abort();
    reload.abort();
    if let Some(probes) = probes {
        probes.abort();
    }
    Ok(())
}

/// Load the stored flags, retrying with backoff while the API server is unreachable (the hub stays
/// unready meanwhile).
async fn load_until_done(api: &Api<SpotRiskFlag>, hub: &HubState) {
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    loop {
        match persist::load(api, hub).await {
            Ok(loaded) => {
                tracing::info!(loaded, "loaded stored flags");
                return;
            }
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, retry_in = ?delay, "loading stored flags failed");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Read the tokens and the certificate again every `reload_interval`.
async fn reload(config: HubConfig, cert: Option<std::sync::Arc<ReloadingCert>>, hub: HubState) {
    let mut tick = tokio::time::interval(config.reload_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        match Tokens::read_dir(&config.tokens_dir) {
            Ok(tokens) => hub.set_tokens(tokens),
            // Keep the tokens we have: a Secret being rewritten can be empty for a moment.
            Err(e) => {
                tracing::warn!(error = %e, "reloading member tokens failed; keeping the old ones")
            }
        }
        if let Some(cert) = &cert {
            let result = match cert.reload_if_changed() {
                Ok(false) => continue,
                Ok(true) => {
                    tracing::info!("hub TLS certificate reloaded");
                    "ok"
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reloading the TLS certificate failed; serving the old one");
                    "error"
                }
            };
            let reloads = &hub.metrics().hub_tls_reloads;
            reloads.with_label_values(&[result]).inc();
        }
    }
}
