//! The member side of the hub (DESIGN.md section 7): push each local flag to the hub and mirror the
//! hub's active flags into local SpotRiskFlags with `source: Hub`, which ranking already excludes.
//!
//! Pushing never blocks the caller: [`HubClient::report`] puts the report on a bounded queue (the oldest
//! is dropped when full) and a background task sends it, retrying with backoff while the hub is down.
//! Mirroring follows the hub's watch stream, reconnecting with backoff; after each (re)connect the hub
//! sends the whole active set, and mirrored flags the hub no longer has are deleted. A flag raised
//! here (`source: Local`) that outlives the hub's copy is left as it is.
//!
//! Transport: HTTPS only, verified against the system's roots or a private CA bundle
//! ([`HubTls::ca_file`], `--hub-ca-file`); an `http://` URL is refused unless [`HubTls::insecure`]
//! (`--hub-insecure`) is set, since the bearer token would cross the network in clear. Connecting
//! gives up after [`CONNECT_TIMEOUT`], a request's answer after [`REQUEST_TIMEOUT`]. Requests go through
//! the proxy `HTTPS_PROXY` names unless `NO_PROXY` lists the hub's host ([`crate::http::client`]); delays
//! between attempts come from [`crate::retry::Backoff`], with jitter so members do not reconnect in
//! lockstep after a hub restart.
//!
//! The operator wires it with [`run_member`].

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams};
use reqwest::Method;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderName};
use tokio::sync::Notify;

use super::persist::{self, PersistError};
use super::report::FlagView;
use super::store::Flag;
use crate::api::risk_flag::{FlagSource, RiskReason, SpotRiskFlag};
use crate::http::client::{self, ClientOptions, HttpError, Proxies};
use crate::metrics::Metrics;
use crate::retry::Backoff;

/// Reports kept while the hub is unreachable; beyond this the oldest is dropped.
pub const QUEUE_CAPACITY: usize = 1024;
/// Label on every flag the mirror writes.
pub use crate::names::MIRROR_LABEL;
/// No bytes (the hub sends a keep-alive every 15 s) for this long: the watch is reconnected.
const IDLE_TIMEOUT: Duration = Duration::from_secs(45);
/// Mirror writes are batched this long, so a busy flag is written a few times a second at most.
const MIRROR_BATCH: Duration = Duration::from_millis(200);
/// How often mirrored flags are checked for expiry, whether or not the hub is reachable.
const EXPIRY_CHECK: Duration = Duration::from_secs(5);
/// Time to open a TCP connection to the hub.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time for the hub's answer to start (a watch's body then streams on).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle pooled connections are closed after this long.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// The first retry or reconnect delay; it doubles up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(200);
/// The longest retry or reconnect delay (before jitter).
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Each delay is lengthened by up to this share of itself.
const BACKOFF_JITTER: f64 = 0.25;

/// What can go wrong talking to the hub.
#[derive(Debug, thiserror::Error)]
pub enum HubClientError {
    /// The hub URL is not usable.
    #[error("hub URL {url:?}: {message}")]
    BadUrl {
        /// The URL.
        url: String,
        /// Why.
        message: String,
    },
    /// The CA bundle could not be used.
    #[error("hub CA file {path}: {message}")]
    Ca {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// The token file could not be read or is empty.
    #[error("hub token file {path}: {message}")]
    Token {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// The HTTP client could not be built (for example no usable system CA certificates, or a proxy
    /// variable that is not a URL).
    #[error("hub client: {0}")]
    Client(#[source] HttpError),
    /// The request did not get an answer.
    #[error("hub request failed: {0}")]
    Transport(String),
    /// The hub answered with an error status.
    #[error("hub answered HTTP {status}: {body}")]
    Status {
        /// HTTP status.
        status: u16,
        /// The answer's body (the hub's JSON error).
        body: String,
    },
    /// A mirrored flag could not be written.
    #[error(transparent)]
    Persist(#[from] PersistError),
}

impl HubClientError {
    /// Whether sending the same request again may succeed (transport errors, 5xx, 429).
    pub fn is_retryable(&self) -> bool {
        match self {
            HubClientError::Transport(_) => true,
            HubClientError::Status { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}

/// A flag seen by this cluster, to push to the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReport {
    /// AWS region.
    pub region: String,
    /// Availability zone.
    pub zone: String,
    /// EC2 instance type.
    pub instance_type: String,
    /// What was seen.
    pub reason: RiskReason,
    /// When it was seen (the same time for a retried report, so the hub counts it once).
    pub observed_at: Timestamp,
}

/// How the member reaches the hub.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HubTls {
    /// PEM bundle of the CA(s) that signed the hub's certificate (a private CA); `None` trusts the
    /// system's roots.
    pub ca_file: Option<std::path::PathBuf>,
    /// Allow an `http://` hub URL (the token then crosses the network in clear).
    pub insecure: bool,
}

impl HubTls {
    /// The HTTP client's options: this CA (or the system's roots), HTTPS only unless insecure, the
    /// environment's proxies, the connect timeout.
    fn client_options(&self) -> ClientOptions {
        ClientOptions {
            proxies: Proxies::from_env(),
            ca_file: self.ca_file.clone(),
            identity: None,
            https_only: !self.insecure,
            connect_timeout: Some(CONNECT_TIMEOUT),
            timeout: None,
            pool_idle_timeout: Some(POOL_IDLE_TIMEOUT),
        }
    }
}

impl From<HttpError> for HubClientError {
    fn from(error: HttpError) -> HubClientError {
        match error {
            HttpError::Ca { path, message } => HubClientError::Ca {
                path: path.display().to_string(),
                message,
            },
            other => HubClientError::Client(other),
        }
    }
}

/// A connection to the hub (cheap to clone).
#[derive(Clone)]
pub struct HubClient {
    inner: Arc<Inner>,
}

struct Inner {
    base: String,
    token: String,
    http: reqwest::Client,
    queue: Mutex<VecDeque<LocalReport>>,
    queued: Notify,
    dropped: AtomicU64,
}

impl std::fmt::Debug for HubClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubClient")
            .field("url", &self.inner.base)
            .finish_non_exhaustive()
    }
}

impl HubClient {
    /// A client of the hub at `url` (https://) authenticating with `token`, trusting the system's
    /// roots.
    pub fn new(url: &str, token: &str) -> Result<HubClient, HubClientError> {
        HubClient::with_tls(url, token, &HubTls::default())
    }

    /// A client of the hub at `url` authenticating with `token`; `tls` says which CA to trust and
    /// whether `http://` is allowed.
    pub fn with_tls(url: &str, token: &str, tls: &HubTls) -> Result<HubClient, HubClientError> {
        let bad = |message: String| HubClientError::BadUrl {
            url: url.to_string(),
            message,
        };
        let base = url.trim_end_matches('/').to_string();
        let uri: hyper::Uri = base.parse().map_err(|e| bad(format!("{e}")))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(bad(
                "expected http://host[:port] or https://host[:port]".into()
            ));
        }
        if uri.scheme_str() == Some("http") && !tls.insecure {
            return Err(bad(
                "plain http:// would send this cluster's token in clear; use https:// or set \
                 --hub-insecure (CLOUDOPTIM_HUB_INSECURE=true)"
                    .into(),
            ));
        }
        let http = client::client(&tls.client_options())?;
        Ok(HubClient {
            inner: Arc::new(Inner {
                base,
                token: token.trim().to_string(),
                http,
                queue: Mutex::new(VecDeque::new()),
                queued: Notify::new(),
                dropped: AtomicU64::new(0),
            }),
        })
    }

    /// A client whose token is read from `path` (`--hub-token-file`).
    pub fn from_token_file(
        url: &str,
        path: &std::path::Path,
        tls: &HubTls,
    ) -> Result<HubClient, HubClientError> {
        let token_err = |message: String| HubClientError::Token {
            path: path.display().to_string(),
            message,
        };
        let token = std::fs::read_to_string(path).map_err(|e| token_err(e.to_string()))?;
        if token.trim().is_empty() {
            return Err(token_err("empty".into()));
        }
        HubClient::with_tls(url, &token, tls)
    }

    /// Queue a report for the hub and return at once; when the queue is full the oldest report is
    /// dropped (the newest is the most useful to the fleet).
    pub fn report(&self, report: LocalReport) {
        let mut queue = self.lock_queue();
        if queue.len() >= QUEUE_CAPACITY {
            queue.pop_front();
            let dropped = self.inner.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(dropped, "hub report queue full; dropped the oldest report");
        }
        queue.push_back(report);
        drop(queue);
        self.inner.queued.notify_one();
    }

    /// Reports waiting to be sent.
    pub fn queued(&self) -> usize {
        self.lock_queue().len()
    }

    /// Reports dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    fn lock_queue(&self) -> std::sync::MutexGuard<'_, VecDeque<LocalReport>> {
        self.inner
            .queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// One authenticated request, answered within [`REQUEST_TIMEOUT`] (the body may stream longer).
    async fn call(
        &self,
        method: Method,
        path: &str,
        header: (HeaderName, &str),
        body: Option<String>,
    ) -> Result<reqwest::Response, HubClientError> {
        let mut request = self
            .inner
            .http
            .request(method, format!("{}{path}", self.inner.base))
            .header(AUTHORIZATION, format!("Bearer {}", self.inner.token))
            .header(header.0, header.1);
        if let Some(body) = body {
            request = request.body(body);
        }
        tokio::time::timeout(REQUEST_TIMEOUT, request.send())
            .await
            .map_err(|_| HubClientError::Transport("timed out".into()))?
            .map_err(|e| HubClientError::Transport(client::chain(&e)))
    }

    /// Send one report now (no queue, no retry).
    pub async fn send(&self, cluster_id: &str, report: &LocalReport) -> Result<(), HubClientError> {
        let body = serde_json::json!({
            "clusterId": cluster_id, "region": report.region, "zone": report.zone,
            "instanceType": report.instance_type, "reason": report.reason,
            "observedAt": report.observed_at.to_string(),
        });
        let json = (CONTENT_TYPE, "application/json");
        let response = self
            .call(Method::POST, "/v1/flags", json, Some(body.to_string()))
            .await?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body = response.text().await.unwrap_or_default();
        Err(HubClientError::Status {
            status: status.as_u16(),
            body,
        })
    }

    /// Send queued reports until `shutdown`, oldest first; a report is retried with backoff while the
    /// error is retryable and dropped (with an error log) when the hub refuses it.
    pub async fn push(&self, cluster_id: &str, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX).with_jitter(BACKOFF_JITTER);
        loop {
            let front = self.lock_queue().front().cloned();
            let Some(report) = front else {
                tokio::select! {
                    _ = self.inner.queued.notified() => continue,
                    _ = &mut shutdown => return,
                }
            };
            match self.send(cluster_id, &report).await {
                Ok(()) => {
                    backoff.reset();
                    self.remove_front(&report);
                }
                Err(e) if e.is_retryable() => {
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in = ?delay, "hub report not delivered");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {},
                        _ = &mut shutdown => return,
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, zone = %report.zone, instance_type = %report.instance_type, "hub refused a report; dropping it");
                    self.remove_front(&report);
                }
            }
        }
    }

    /// Remove `sent` if it is still at the front (it may have been dropped by an overflow meanwhile).
    fn remove_front(&self, sent: &LocalReport) {
        let mut queue = self.lock_queue();
        if queue.front() == Some(sent) {
            queue.pop_front();
        }
    }

    /// The hub's active flags of `region` (one `GET /v1/flags`).
    pub async fn list(&self, region: &str) -> Result<Vec<FlagView>, HubClientError> {
        let path = format!("/v1/flags?region={region}");
        let json = (ACCEPT, "application/json");
        let response = self.call(Method::GET, &path, json, None).await?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| HubClientError::Transport(client::chain(&e)))?;
        if !status.is_success() {
            return Err(HubClientError::Status {
                status: status.as_u16(),
                body: String::from_utf8_lossy(&body).into_owned(),
            });
        }
        #[derive(serde::Deserialize)]
        struct Listing {
            flags: Vec<FlagView>,
        }
        serde_json::from_slice::<Listing>(&body)
            .map(|l| l.flags)
            .map_err(|e| HubClientError::Transport(format!("unexpected answer: {e}")))
    }

    /// Mirror the hub's flags of `region` into local SpotRiskFlags until `shutdown`, reconnecting
    /// with backoff.
    pub async fn mirror(
        &self,
        client: kube::Client,
        region: &str,
        metrics: Metrics,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let mut mirror = Mirror::new(Api::all(client), metrics);
        let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX).with_jitter(BACKOFF_JITTER);
        loop {
            let result = tokio::select! {
                result = self.follow(region, &mut mirror, &mut backoff) => result,
                _ = &mut shutdown => return,
            };
            let delay = backoff.next_delay();
            match result {
                Ok(()) => tracing::info!(retry_in = ?delay, "hub watch ended; reconnecting"),
                Err(e) => tracing::warn!(error = %e, retry_in = ?delay, "hub watch failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {},
                _ = &mut shutdown => return,
            }
        }
    }

    /// One watch connection: apply its events until it ends.
    async fn follow(
        &self,
        region: &str,
        mirror: &mut Mirror,
        backoff: &mut Backoff,
    ) -> Result<(), HubClientError> {
        let path = format!("/v1/flags/watch?region={region}");
        let sse = (ACCEPT, "text/event-stream");
        let mut response = self.call(Method::GET, &path, sse, None).await?;
        if !response.status().is_success() {
            return Err(HubClientError::Status {
                status: response.status().as_u16(),
                body: String::new(),
            });
        }
        let mut parser = SseParser::default();
        mirror.connected();
        let mut batch = tokio::time::interval(MIRROR_BATCH);
        let mut expiry = tokio::time::interval(EXPIRY_CHECK);
        let mut idle = Box::pin(tokio::time::sleep(IDLE_TIMEOUT));
        loop {
            tokio::select! {
                chunk = response.chunk() => {
                    let chunk = chunk.map_err(|e| HubClientError::Transport(client::chain(&e)))?;
                    let Some(data) = chunk else { return Ok(()) };
                    idle.as_mut().reset(tokio::time::Instant::now() + IDLE_TIMEOUT);
                    for event in parser.push(&data) {
                        if mirror.event(&event) {
                            backoff.reset();
                        }
                    }
                }
                _ = batch.tick() => mirror.write().await,
                _ = expiry.tick() => mirror.expire_local().await,
                _ = &mut idle => return Err(HubClientError::Transport(format!("no data for {IDLE_TIMEOUT:?}"))),
            }
        }
    }
}

/// Run the member side until `shutdown`: push queued reports (as `cluster_id`) and mirror the hub's
/// flags of `region` into local SpotRiskFlags with `source: Hub`. Call it from `cloudoptim run` when
/// `--hub-url` is set, with `HubClient::from_token_file(url, --hub-token-file, tls)`, and give the same
/// `HubClient` (it is `Clone`) to whatever raises local flags so it can call [`HubClient::report`].
/// Both halves survive hub outages; neither blocks anything else.
pub async fn run_member(
    client: kube::Client,
    hub: HubClient,
    cluster_id: String,
    region: String,
    metrics: Metrics,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let push = hub.push(&cluster_id, stopped());
    let mirror = hub.mirror(client, &region, metrics, stopped());
    let stop = async {
        shutdown.await;
        let _ = stop_tx.send(true);
    };
    tokio::join!(push, mirror, stop);
}

/// Local state of the mirror: the hub's current view and what was last written here.
struct Mirror {
    api: Api<SpotRiskFlag>,
    metrics: Metrics,
    /// The hub's active flags, by name.
    known: HashMap<String, Flag>,
    /// Names received since the last connect, until `synced`.
    syncing: Option<HashMap<String, Flag>>,
    /// Names to write (apply or delete) at the next batch.
    pending: BTreeSet<String>,
    /// Flags as last applied here.
    applied: HashMap<String, Flag>,
    /// Delete mirrored flags that are not in `known` at the next batch (after a sync).
    prune: bool,
}

impl Mirror {
    fn new(api: Api<SpotRiskFlag>, metrics: Metrics) -> Mirror {
        Mirror {
            api,
            metrics,
            known: HashMap::new(),
            syncing: None,
            pending: BTreeSet::new(),
            applied: HashMap::new(),
            prune: false,
        }
    }

    fn connected(&mut self) {
        self.syncing = Some(HashMap::new());
    }

    /// Take in one event; returns whether it was a well-formed hub event.
    fn event(&mut self, event: &SseEvent) -> bool {
        match event.event.as_str() {
            "flag" | "expired" => {
                let Ok(view) = serde_json::from_str::<FlagView>(&event.data) else {
                    tracing::warn!(event = %event.event, "malformed flag event from the hub");
                    return false;
                };
                let flag = Flag::from(&view);
                if event.event == "flag" {
                    if let Some(syncing) = self.syncing.as_mut() {
                        syncing.insert(view.name.clone(), flag.clone());
                    }
                    self.known.insert(view.name.clone(), flag);
                } else {
                    self.known.remove(&view.name);
                }
                self.pending.insert(view.name);
                true
            }
            "synced" => {
                if let Some(synced) = self.syncing.take() {
                    self.known = synced;
                    self.pending.extend(self.known.keys().cloned());
                    self.prune = true;
                }
                true
            }
            _ => false,
        }
    }

    /// Write what changed since the last batch.
    async fn write(&mut self) {
        let now = super::state::now();
        if std::mem::take(&mut self.prune) {
            match self.mirrored().await {
                Ok(local) => {
                    for (name, _) in local {
                        if !self.known.contains_key(&name) {
                            self.pending.insert(name);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "listing mirrored flags failed");
                    self.prune = true;
                }
            }
        }
        let pending = std::mem::take(&mut self.pending);
        for name in pending {
            let result = match self.known.get(&name).filter(|f| f.is_active(now)).cloned() {
                Some(flag) if self.applied.get(&name) == Some(&flag) => Ok(()),
                Some(flag) => self.apply(&name, flag).await,
                None => self.delete_mirrored(&name).await,
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, flag = %name, "mirroring a hub flag failed; retrying");
                self.pending.insert(name);
            }
        }
        let active = self.known.values().filter(|f| f.is_active(now)).count();
        self.metrics
            .risk_flags
            .with_label_values(&["hub"])
            .set(i64::try_from(active).unwrap_or(i64::MAX));
    }

    async fn apply(&mut self, name: &str, flag: Flag) -> Result<(), HubClientError> {
        let local = self
            .api
            .get_opt(name)
            .await
            .map_err(|e| PersistError::Apply {
                name: name.to_string(),
                source: e,
            })?;
        let newer_local = local.is_some_and(|l| {
            l.spec.source == FlagSource::Local && l.spec.expires_at.0.as_second() > flag.expires_at
        });
        if !newer_local {
            let labels = BTreeMap::from([(MIRROR_LABEL.to_string(), "true".to_string())]);
            let result = persist::apply(&self.api, &flag, FlagSource::Hub, labels).await;
            self.record("apply", result.is_ok());
            result?;
        }
        self.applied.insert(name.to_string(), flag);
        Ok(())
    }

    async fn delete_mirrored(&mut self, name: &str) -> Result<(), HubClientError> {
        self.applied.remove(name);
        let local = self
            .api
            .get_opt(name)
            .await
            .map_err(|e| PersistError::Delete {
                name: name.to_string(),
                source: e,
            })?;
        if local.is_some_and(|l| l.spec.source == FlagSource::Hub) {
            let result = persist::delete(&self.api, name).await;
            self.record("delete", result.is_ok());
            result?;
        }
        Ok(())
    }

    /// Mirrored flags in this cluster, by name.
    async fn mirrored(&self) -> Result<Vec<(String, SpotRiskFlag)>, kube::Error> {
        let list = self
            .api
            .list(&ListParams::default().labels(&format!("{MIRROR_LABEL}=true")))
            .await?;
        Ok(list
            .items
            .into_iter()
            .filter(|f| f.spec.source == FlagSource::Hub)
            .filter_map(|f| f.metadata.name.clone().map(|n| (n, f)))
            .collect())
    }

    /// Delete mirrored flags past their expiry (also while the hub is unreachable).
    async fn expire_local(&mut self) {
        let now = super::state::now();
        self.known.retain(|_, f| f.is_active(now));
        match self.mirrored().await {
            Ok(local) => {
                for (name, flag) in local {
                    if flag.spec.expires_at.0.as_second() <= now {
                        self.pending.insert(name);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "listing mirrored flags failed"),
        }
    }

    fn record(&self, op: &str, ok: bool) {
        self.metrics
            .hub_flag_writes
            .with_label_values(&[op, if ok { "ok" } else { "error" }])
            .inc();
    }
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` field (`message` when absent).
    pub event: String,
    /// The `data:` lines joined by newlines.
    pub data: String,
}

/// Incremental parser of a `text/event-stream` body (the subset the hub sends: `event`, `data`,
/// comments).
#[derive(Debug, Default)]
pub struct SseParser {
    buffer: Vec<u8>,
    event: Option<String>,
    data: Vec<String>,
}

impl SseParser {
    /// Feed bytes; returns the events completed by them.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        self.buffer.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buffer.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if !self.data.is_empty() || self.event.is_some() {
                    events.push(SseEvent {
                        event: self.event.take().unwrap_or_else(|| "message".into()),
                        data: std::mem::take(&mut self.data).join("\n"),
                    });
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => self.event = Some(value.to_string()),
                "data" => self.data.push(value.to_string()),
                _ => {}
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_split_across_chunks_are_reassembled() {
        let mut parser = SseParser::default();
        assert!(parser.push(b"event: flag\ndata: {\"a\"").is_empty());
        let events = parser.push(b":1}\n\n: keep-alive\n\nevent: synced\r\ndata: {}\r\n\r\n");
        assert_eq!(
            events,
            vec![
                SseEvent {
                    event: "flag".into(),
                    data: "{\"a\":1}".into()
                },
                SseEvent {
                    event: "synced".into(),
                    data: "{}".into()
                },
            ]
        );
    }

    #[test]
    fn data_lines_of_one_event_are_joined() {
        let mut parser = SseParser::default();
        let events = parser.push(b"data: a\ndata: b\n\n");
        assert_eq!(events[0].data, "a\nb");
        assert_eq!(events[0].event, "message");
    }

    #[test]
    fn a_full_queue_drops_the_oldest_report_and_never_blocks() {
        let hub = HubClient::new("https://127.0.0.1:1", "t").expect("client");
        let report = |i: i64| LocalReport {
            region: "us-east-1".into(),
            zone: "us-east-1a".into(),
            instance_type: "m5.large".into(),
            reason: RiskReason::SpotInterruption,
            observed_at: Timestamp::from_second(1_800_000_000 + i).expect("time"),
        };
        for i in 0..(QUEUE_CAPACITY as i64 + 3) {
            hub.report(report(i));
        }
        assert_eq!(hub.queued(), QUEUE_CAPACITY);
        assert_eq!(hub.dropped(), 3);
        assert_eq!(hub.lock_queue().front(), Some(&report(3)));
    }

    #[test]
    fn only_http_urls_are_accepted() {
        assert!(HubClient::new("ftp://hub", "t").is_err());
        assert!(HubClient::new("not a url", "t").is_err());
        assert!(HubClient::new("https://hub.example.com/", "t").is_ok());
    }

    #[test]
    fn a_plain_http_url_is_refused_unless_insecure_is_set_and_the_error_names_the_flag() {
        let refused = HubClient::new("http://hub.example.com", "t").expect_err("refused");
        assert!(refused.to_string().contains("--hub-insecure"), "{refused}");
        let insecure = HubTls {
            insecure: true,
            ..HubTls::default()
        };
        assert!(HubClient::with_tls("http://hub.example.com", "t", &insecure).is_ok());
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused_naming_the_file() {
        let path = std::env::temp_dir().join(format!("cloudoptim-empty-ca-{}", std::process::id()));
        std::fs::write(&path, "not a certificate\n").expect("write");
        let tls = HubTls {
            ca_file: Some(path.clone()),
            insecure: false,
        };
        let refused =
            HubClient::with_tls("https://hub.example.com", "t", &tls).expect_err("refused");
        let _ = std::fs::remove_file(&path);
        assert!(matches!(refused, HubClientError::Ca { .. }), "{refused}");
        assert!(
            refused.to_string().contains("cloudoptim-empty-ca"),
            "{refused}"
        );
    }

    #[test]
    fn retryable_errors_are_transport_5xx_and_429() {
        let status = |status| HubClientError::Status {
            status,
            body: String::new(),
        };
        assert!(HubClientError::Transport("x".into()).is_retryable());
        assert!(status(503).is_retryable());
        assert!(status(429).is_retryable());
        assert!(!status(401).is_retryable());
        assert!(!status(400).is_retryable());
    }
}
