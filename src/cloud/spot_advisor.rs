//! The public Spot Advisor feed: fetched from a URL (https, http, or `file://` for air-gapped mirrors),
//! refreshed every 6 hours, the last good copy kept when a refresh fails (reported by
//! `cloudoptim_spot_advisor_stale` and by the caller's condition), the embedded sample used only when
//! no copy was ever fetched, with a warning.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use tokio::sync::RwLock;

use crate::engine::catalog::{SpotAdvisor, parse_spot_advisor};
use crate::metrics::Metrics;

/// The public feed's address.
pub const DEFAULT_URL: &str = "https://spot-bid-advisor.s3.amazonaws.com/spot-advisor-data.json";
/// How often the feed is refreshed.
pub const REFRESH: Duration = Duration::from_secs(6 * 3600);
/// The largest body accepted (the real feed is about 1 MB).
const MAX_BYTES: usize = 32 * 1024 * 1024;

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// The URL is not http(s) or file.
    #[error("--spot-advisor-url {0:?}: use an https://, http:// or file:// URL")]
    BadUrl(String),
    /// Reading a file:// URL failed.
    #[error("reading {path}: {source}")]
    File {
        /// Path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The HTTP request failed.
    #[error("fetching {url}: {message}")]
    Http {
        /// URL.
        url: String,
        /// Cause.
        message: String,
    },
    /// The body is not Spot Advisor JSON.
    #[error("parsing {url}: {message}")]
    Parse {
        /// URL.
        url: String,
        /// Cause.
        message: String,
    },
}

/// Where the advisor data in use came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Fetched at the last refresh.
    Fresh,
    /// The last refresh failed; an older fetched copy is in use.
    Stale,
    /// Never fetched; the embedded sample data is in use.
    Sample,
}

/// Fetch the feed once.
pub async fn fetch(url: &str) -> Result<SpotAdvisor, FeedError> {
    let body = if let Some(path) = url.strip_prefix("file://") {
        tokio::fs::read_to_string(path)
            .await
            .map_err(|source| FeedError::File {
                path: path.to_string(),
                source,
            })?
    } else if url.starts_with("https://") || url.starts_with("http://") {
        http_get(url).await?
    } else {
        return Err(FeedError::BadUrl(url.to_string()));
    };
    parse_spot_advisor(&body).map_err(|e| FeedError::Parse {
        url: url.to_string(),
        message: e.to_string(),
    })
}

async fn http_get(url: &str) -> Result<String, FeedError> {
    let err = |message: String| FeedError::Http {
        url: url.to_string(),
        message,
    };
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| err(format!("loading CA certificates: {e}")))?
        .https_or_http()
        .enable_http1()
        .build();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, Empty<Bytes>>(connector);
    let uri: hyper::Uri = url.parse().map_err(|e| err(format!("invalid URL: {e}")))?;
    let response = tokio::time::timeout(Duration::from_secs(30), client.get(uri))
        .await
        .map_err(|_| err("timed out after 30 s".into()))?
        .map_err(|e| err(e.to_string()))?;
    if !response.status().is_success() {
        return Err(err(format!("HTTP {}", response.status())));
    }
    let body = Limited::new(response.into_body(), MAX_BYTES)
        .collect()
        .await
        .map_err(|e| err(e.to_string()))?
        .to_bytes();
    String::from_utf8(body.to_vec()).map_err(|_| err("body is not UTF-8".into()))
}

/// The advisor data in use, refreshed on demand when older than `REFRESH`.
#[derive(Clone)]
pub struct AdvisorCache {
    url: String,
    metrics: Metrics,
    state: Arc<RwLock<Option<Cached>>>,
}

/// The advisor data, when it was (last tried to be) fetched, and its freshness.
type Cached = (Arc<SpotAdvisor>, Instant, Freshness);

impl AdvisorCache {
    /// A cache for `url` (nothing fetched yet).
    pub fn new(url: impl Into<String>, metrics: Metrics) -> AdvisorCache {
        AdvisorCache {
            url: url.into(),
            metrics,
            state: Arc::new(RwLock::new(None)),
        }
    }

    /// The current advisor data and its freshness, fetching when due. `None` data means "use the
    /// embedded sample" (never fetched successfully).
    pub async fn get(&self) -> (Option<Arc<SpotAdvisor>>, Freshness) {
        if let Some((data, fetched, freshness)) = self.state.read().await.as_ref()
            && fetched.elapsed() < REFRESH
        {
            return (Some(data.clone()), *freshness);
        }
        let mut state = self.state.write().await;
        match fetch(&self.url).await {
            Ok(advisor) => {
                let data = Arc::new(advisor);
                *state = Some((data.clone(), Instant::now(), Freshness::Fresh));
                self.metrics
                    .spot_advisor_stale
                    .with_label_values(&["feed"])
                    .set(0);
                (Some(data), Freshness::Fresh)
            }
            Err(e) => {
                self.metrics
                    .spot_advisor_stale
                    .with_label_values(&["feed"])
                    .set(1);
                match state.as_mut() {
                    Some((data, fetched, freshness)) => {
                        tracing::warn!(error = %e, "Spot Advisor refresh failed; keeping the last good copy");
                        // Retry at the next refresh interval, not on every reconcile.
                        *fetched = Instant::now();
                        *freshness = Freshness::Stale;
                        (Some(data.clone()), Freshness::Stale)
                    }
                    None => {
                        tracing::warn!(error = %e, "Spot Advisor feed unavailable; using the embedded SAMPLE data");
                        (None, Freshness::Sample)
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FEED: &str = r#"{"instance_types": {"m5.large": {"emr": true, "cores": 2, "ram_gb": 8.0}},
        "ranges": [{"index": 0, "label": "<5%", "dots": 0, "max": 5}],
        "spot_advisor": {"us-east-1": {"Linux": {"m5.large": {"s": 70, "r": 1}}}}}"#;

    fn temp_file(name: &str, body: &str) -> String {
        let path =
            std::env::temp_dir().join(format!("cloudoptim-advisor-{}-{name}", std::process::id()));
        std::fs::write(&path, body).expect("temp file written");
        path.display().to_string()
    }

    #[tokio::test]
    async fn a_file_url_is_fetched_and_parsed() {
        let path = temp_file("ok.json", FEED);
        let advisor = fetch(&format!("file://{path}")).await.expect("feed parses");
        assert_eq!(advisor.bucket("us-east-1", "m5.large"), Some(1));
    }

    #[tokio::test]
    async fn bad_urls_and_bodies_are_named_in_the_error() {
        let err = fetch("ftp://mirror/feed.json")
            .await
            .expect_err("ftp is refused");
        assert!(err.to_string().contains("ftp://mirror/feed.json"));
        let path = temp_file("bad.json", "{not json");
        let err = fetch(&format!("file://{path}"))
            .await
            .expect_err("bad JSON");
        assert!(err.to_string().contains(&path), "{err}");
    }

    #[tokio::test]
    async fn without_any_good_copy_the_cache_says_sample() {
        let metrics = Metrics::new().expect("metrics");
        let cache = AdvisorCache::new("file:///nonexistent/cloudoptim/feed.json", metrics.clone());
        let (data, freshness) = cache.get().await;
        assert!(data.is_none());
        assert_eq!(freshness, Freshness::Sample);
        assert!(
            metrics
                .render()
                .contains("cloudoptim_spot_advisor_stale{source=\"feed\"} 1")
        );
    }
}
