//! The Prometheus HTTP API client: `query` (instant) and `query_range`, over the project's one HTTP
//! client ([`crate::http::client`]: proxies, CA bundle, client certificate for mutual TLS, timeouts),
//! with an optional bearer token.

use std::path::PathBuf;
use std::time::Duration;

use super::response::{self, ResponseError, Series};
use crate::http::client::{self, ClientOptions, HttpError, Proxies, chain};

/// Largest answer read (a bounded range query over a namespace stays well below it).
pub const MAX_BODY: usize = 256 << 20;
/// Default time for one query, body included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How to reach Prometheus.
#[derive(Debug, Clone)]
pub struct PrometheusOptions {
    /// Base URL, e.g. `http://prometheus.monitoring:9090` (a path prefix is kept).
    pub url: String,
    /// Sent as `Authorization: Bearer <token>`.
    pub bearer_token: Option<String>,
    /// Trust only the CA certificates in this PEM bundle.
    pub ca_file: Option<PathBuf>,
    /// Mutual TLS: the client certificate (PEM) and its key (PEM).
    pub identity: Option<(PathBuf, PathBuf)>,
    /// Time for one query, body included.
    pub timeout: Duration,
    /// Proxies (the environment's by default).
    pub proxies: Proxies,
}

impl PrometheusOptions {
    /// Defaults for `url`: no token, system roots, 30 s, no proxy.
    pub fn new(url: impl Into<String>) -> PrometheusOptions {
        PrometheusOptions {
            url: url.into(),
            bearer_token: None,
            ca_file: None,
            identity: None,
            timeout: DEFAULT_TIMEOUT,
            proxies: Proxies::default(),
        }
    }
}

/// How the operator reaches a policy's Prometheus beyond its URL: operator flags
/// (`--prometheus-bearer-token-file`, `--prometheus-ca-file`, `--prometheus-client-cert-file` with
/// `--prometheus-client-key-file`), set from the chart's `rightsizing.prometheus` values. Files, not
/// CRD fields: a policy cannot point the operator at a secret, and nothing secret is in the API.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PrometheusAccess {
    /// Bearer token file, read again for every pass (projected tokens rotate).
    pub bearer_token_file: Option<PathBuf>,
    /// CA bundle (PEM) that signs Prometheus's certificate.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM) for mutual TLS.
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl PrometheusAccess {
    /// The options for `url`, with the token read now.
    pub fn options(&self, url: &str, proxies: Proxies) -> Result<PrometheusOptions, PromError> {
        let bearer_token = match &self.bearer_token_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| PromError::Token {
                        path: path.clone(),
                        message: e.to_string(),
                    })?
                    .trim()
                    .to_string(),
            ),
            None => None,
        };
        Ok(PrometheusOptions {
            bearer_token,
            ca_file: self.ca_file.clone(),
            identity: self.identity.clone(),
            proxies,
            ..PrometheusOptions::new(url)
        })
    }
}

/// Why a query gave no series.
#[derive(Debug, thiserror::Error)]
pub enum PromError {
    /// The client could not be built (CA file, proxy).
    #[error("Prometheus client for {url}: {source}")]
    Client {
        /// The base URL.
        url: String,
        /// Why.
        source: HttpError,
    },
    /// The bearer token file could not be read (the token itself is never in a message).
    #[error("Prometheus bearer token file {path}: {message}; check --prometheus-bearer-token-file")]
    Token {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// No answer: connection refused, DNS, TLS or timeout.
    #[error(
        "Prometheus at {url} is unreachable: {message}; check rightsizing.prometheusUrl and that the operator may reach it"
    )]
    Unreachable {
        /// The base URL.
        url: String,
        /// Why.
        message: String,
    },
    /// An HTTP error that is not a Prometheus answer (401/403: the token; 404: the URL's path).
    #[error("Prometheus at {url} answered HTTP {status}: {message}")]
    Http {
        /// The base URL.
        url: String,
        /// The status code.
        status: u16,
        /// The start of the body.
        message: String,
    },
    /// Prometheus refused the query (`bad_data`: PromQL error; `execution`, `timeout`, ...).
    #[error("Prometheus at {url} refused query {query}: {source}")]
    BadQuery {
        /// The base URL.
        url: String,
        /// The PromQL.
        query: String,
        /// Its words.
        source: ResponseError,
    },
    /// The query matched no series.
    #[error("Prometheus at {url} has no data for {query}")]
    NoData {
        /// The base URL.
        url: String,
        /// The PromQL.
        query: String,
    },
    /// The body was not the API's JSON.
    #[error("Prometheus at {url}: unexpected answer to {query}: {message}")]
    Decode {
        /// The base URL.
        url: String,
        /// The PromQL.
        query: String,
        /// Why.
        message: String,
    },
}

impl PromError {
    /// Short label for metrics and condition reasons.
    pub fn label(&self) -> &'static str {
        match self {
            PromError::Client { .. } => "client",
            PromError::Token { .. } => "token",
            PromError::Unreachable { .. } => "unreachable",
            PromError::Http { .. } => "http",
            PromError::BadQuery { .. } => "bad_query",
            PromError::NoData { .. } => "no_data",
            PromError::Decode { .. } => "decode",
        }
    }
}

/// Empty instead of [`PromError::NoData`]: for queries where nothing is a fine answer (no OOM kill).
pub fn or_empty(result: Result<Vec<Series>, PromError>) -> Result<Vec<Series>, PromError> {
    match result {
        Err(PromError::NoData { .. }) => Ok(Vec::new()),
        other => other,
    }
}

/// A Prometheus server.
#[derive(Debug, Clone)]
pub struct Prometheus {
    url: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Prometheus {
    /// A client for `options.url`.
    pub fn new(options: &PrometheusOptions) -> Result<Prometheus, PromError> {
        let http = client::client(&ClientOptions {
            proxies: options.proxies.clone(),
            ca_file: options.ca_file.clone(),
            identity: options.identity.clone(),
            connect_timeout: Some(options.timeout.min(Duration::from_secs(10))),
            timeout: Some(options.timeout),
            ..ClientOptions::default()
        })
        .map_err(|source| PromError::Client {
            url: options.url.clone(),
            source,
        })?;
        Ok(Prometheus {
            url: options.url.trim_end_matches('/').to_owned(),
            token: options.bearer_token.clone(),
            http,
        })
    }

    /// The base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// An instant query at `time` (seconds since the epoch; `None`: now).
    pub async fn query(&self, query: &str, time: Option<i64>) -> Result<Vec<Series>, PromError> {
        let mut params = vec![("query", query.to_owned())];
        if let Some(time) = time {
            params.push(("time", time.to_string()));
        }
        self.get("/api/v1/query", query, &params).await
    }

    /// A range query from `start` to `end` (seconds since the epoch) every `step`.
    pub async fn query_range(
        &self,
        query: &str,
        start: i64,
        end: i64,
        step: Duration,
    ) -> Result<Vec<Series>, PromError> {
        let params = [
            ("query", query.to_owned()),
            ("start", start.to_string()),
            ("end", end.to_string()),
            ("step", format!("{}s", step.as_secs().max(1))),
        ];
        self.get("/api/v1/query_range", query, &params).await
    }

    async fn get(
        &self,
        path: &str,
        query: &str,
        params: &[(&str, String)],
    ) -> Result<Vec<Series>, PromError> {
        let mut request = self.http.get(format!("{}{path}", self.url)).query(params);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let unreachable = |e: &dyn std::error::Error| PromError::Unreachable {
            url: self.url.clone(),
            message: chain(e),
        };
        let response = request.send().await.map_err(|e| unreachable(&e))?;
        let status = response.status();
        let body = client::body_capped(response, MAX_BODY)
            .await
            .map_err(|e| unreachable(&e))?;
        let decode = |message: String| PromError::Decode {
            url: self.url.clone(),
            query: query.to_owned(),
            message,
        };
        let json: serde_json::Value = match serde_json::from_slice(&body) {
            Ok(json) => json,
            Err(_) if !status.is_success() => {
                return Err(PromError::Http {
                    url: self.url.clone(),
                    status: status.as_u16(),
                    message: String::from_utf8_lossy(&body).chars().take(200).collect(),
                });
            }
            Err(e) => return Err(decode(format!("not JSON: {e}"))),
        };
        let series = response::parse(&json).map_err(|e| match e {
            ResponseError::Refused { .. } => PromError::BadQuery {
                url: self.url.clone(),
                query: query.to_owned(),
                source: e,
            },
            ResponseError::Shape { .. } => decode(e.to_string()),
        })?;
        if series.is_empty() {
            return Err(PromError::NoData {
                url: self.url.clone(),
                query: query.to_owned(),
            });
        }
        Ok(series)
    }
}

#[cfg(test)]
mod tests;
