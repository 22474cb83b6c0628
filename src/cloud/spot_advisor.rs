//! The public Spot Advisor feed: fetched from a URL (https, http, or `file://` for air-gapped mirrors),
//! refreshed every 6 hours, the last good copy kept when a refresh fails (reported by
//! `cloudoptim_spot_advisor_stale` and by the caller's condition), the embedded sample used only when
//! no copy was ever fetched, with a warning. Entries the parser skipped as unusable are counted in
//! `cloudoptim_spot_advisor_skipped_entries{reason}` and summed up in one warning per refresh.
//! HTTP goes through the proxy `HTTPS_PROXY`/`HTTP_PROXY` name unless `NO_PROXY` excludes the host
//! ([`crate::http::client`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::engine::catalog::{SkipReason, SpotAdvisor, name_a_few, parse_spot_advisor};
use crate::http::client::{self, ClientOptions, Proxies};
use crate::metrics::Metrics;
use crate::retry::Backoff;

/// The public feed's address.
pub const DEFAULT_URL: &str = "https://spot-bid-advisor.s3.amazonaws.com/spot-advisor-data.json";
/// How often the feed is refreshed.
pub const REFRESH: Duration = Duration::from_secs(6 * 3600);
/// The largest body accepted (the real feed is about 1 MB).
const MAX_BYTES: usize = 32 * 1024 * 1024;
/// The longest one HTTP fetch may take, body included.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

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

/// Fetch the feed once, through the proxies this process's environment names.
pub async fn fetch(url: &str) -> Result<SpotAdvisor, FeedError> {
    fetch_through(url, &Proxies::from_env()).await
}

/// Fetch the feed once, through `proxies`.
pub async fn fetch_through(url: &str, proxies: &Proxies) -> Result<SpotAdvisor, FeedError> {
    let body = if let Some(path) = url.strip_prefix("file://") {
        tokio::fs::read_to_string(path)
            .await
            .map_err(|source| FeedError::File {
                path: path.to_string(),
                source,
            })?
    } else if url.starts_with("https://") || url.starts_with("http://") {
        http_get(url, proxies).await?
    } else {
        return Err(FeedError::BadUrl(url.to_string()));
    };
    parse_spot_advisor(&body).map_err(|e| FeedError::Parse {
        url: url.to_string(),
        message: e.to_string(),
    })
}

async fn http_get(url: &str, proxies: &Proxies) -> Result<String, FeedError> {
    let err = |message: String| FeedError::Http {
        url: url.to_string(),
        message,
    };
    let options = ClientOptions {
        proxies: proxies.clone(),
        timeout: Some(HTTP_TIMEOUT),
        ..ClientOptions::default()
    };
    let http = client::client(&options).map_err(|e| err(e.to_string()))?;
    let response = http.get(url).send().await.map_err(|e| {
        if e.is_timeout() {
            err(format!("timed out after {HTTP_TIMEOUT:?}"))
        } else {
            err(client::chain(&e))
        }
    })?;
    if !response.status().is_success() {
        return Err(err(format!("HTTP {}", response.status())));
    }
    let body = client::body_capped(response, MAX_BYTES)
        .await
        .map_err(|e| err(e.to_string()))?;
    String::from_utf8(body).map_err(|_| err("body is not UTF-8".into()))
}

/// The advisor data in use, refreshed on demand when older than `REFRESH`.
///
/// A refresh runs outside the state's lock and has one total deadline (headers and body together), so
/// a blocked egress or a stalled body never holds other reconciles: while one caller refreshes, the
/// others get the copy in use at once (only the very first fetch is waited for, so the first ranking
/// uses the feed, bounded by the same deadline). A failure is retried after a backoff (30 s, doubling,
/// at most `REFRESH`), not on every reconcile.
#[derive(Clone)]
pub struct AdvisorCache {
    url: String,
    metrics: Metrics,
    deadline: Duration,
    state: Arc<std::sync::Mutex<State>>,
    refreshing: Arc<tokio::sync::Mutex<()>>,
}

/// What the cache holds.
struct State {
    data: Option<Arc<SpotAdvisor>>,
    freshness: Freshness,
    /// When the next fetch is due (`None`: never tried).
    next_attempt: Option<Instant>,
    /// Delays after failed attempts, reset by a success.
    backoff: Backoff,
}

/// The longest a whole fetch (connect, headers, body) may take.
pub const FETCH_DEADLINE: Duration = Duration::from_secs(20);
/// The first retry after a failure; it doubles up to [`REFRESH`].
const FIRST_BACKOFF: Duration = Duration::from_secs(30);
/// How many skipped entries the refresh warning names (the metric counts them all).
const NAMED_IN_WARNING: usize = 3;

impl AdvisorCache {
    /// A cache for `url` (nothing fetched yet).
    pub fn new(url: impl Into<String>, metrics: Metrics) -> AdvisorCache {
        AdvisorCache {
            url: url.into(),
            metrics,
            deadline: FETCH_DEADLINE,
            state: Arc::new(std::sync::Mutex::new(State {
                data: None,
                freshness: Freshness::Sample,
                next_attempt: None,
                backoff: Backoff::new(FIRST_BACKOFF, REFRESH),
            })),
            refreshing: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// The same cache with another total fetch deadline (tests).
    pub fn with_deadline(mut self, deadline: Duration) -> AdvisorCache {
        self.deadline = deadline;
        self
    }

    fn current(&self) -> (Option<Arc<SpotAdvisor>>, Freshness, bool, bool) {
        match self.state.lock() {
            Ok(s) => (
                s.data.clone(),
                s.freshness,
                s.next_attempt.is_none_or(|at| Instant::now() >= at),
                s.next_attempt.is_none(),
            ),
            Err(_) => (None, Freshness::Sample, false, false),
        }
    }

    /// The current advisor data and its freshness, fetching when due. `None` data means "use the
    /// embedded sample" (never fetched successfully).
    pub async fn get(&self) -> (Option<Arc<SpotAdvisor>>, Freshness) {
        let (data, freshness, due, never_tried) = self.current();
        if !due {
            return (data, freshness);
        }
        let guard = match self.refreshing.try_lock() {
            Ok(guard) => guard,
            // Someone else is fetching: use what is there, except before the very first answer.
            Err(_) if never_tried => self.refreshing.lock().await,
            Err(_) => return (data, freshness),
        };
        let (_, _, due, _) = self.current();
        if due {
            self.refresh().await;
        }
        drop(guard);
        let (data, freshness, _, _) = self.current();
        (data, freshness)
    }

    /// One fetch within the deadline, then the state updated (the lock is not held while fetching).
    async fn refresh(&self) {
        let result = match tokio::time::timeout(self.deadline, fetch(&self.url)).await {
            Ok(result) => result,
            Err(_) => Err(FeedError::Http {
                url: self.url.clone(),
                message: format!("no complete answer within {:?}", self.deadline),
            }),
        };
        if let Ok(advisor) = &result {
            self.report_skipped(advisor);
        }
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        match result {
            Ok(advisor) => {
                state.data = Some(Arc::new(advisor));
                state.freshness = Freshness::Fresh;
                state.backoff.reset();
                state.next_attempt = Some(Instant::now() + REFRESH);
                self.metrics
                    .spot_advisor_stale
                    .with_label_values(&["feed"])
                    .set(0);
            }
            Err(e) => {
                let backoff = state.backoff.next_delay();
                state.next_attempt = Some(Instant::now() + backoff);
                self.metrics
                    .spot_advisor_stale
                    .with_label_values(&["feed"])
                    .set(1);
                if state.data.is_some() {
                    state.freshness = Freshness::Stale;
                    tracing::warn!(error = %e, retry_in = ?backoff, "Spot Advisor refresh failed; keeping the last good copy");
                } else {
                    state.freshness = Freshness::Sample;
                    tracing::warn!(error = %e, retry_in = ?backoff, "Spot Advisor feed unavailable; using the embedded SAMPLE data");
                }
            }
        }
    }

    /// Sets the skipped-entries gauge for every reason and, when any were skipped, logs one warning
    /// naming a few: a feed with thousands of odd entries must not flood the log.
    fn report_skipped(&self, advisor: &SpotAdvisor) {
        let skipped = advisor.skipped();
        for label in SkipReason::METRIC_LABELS {
            let n = skipped
                .iter()
                .filter(|s| s.reason.metric_label() == label)
                .count();
            self.metrics
                .spot_advisor_skipped_entries
                .with_label_values(&[label])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        if !skipped.is_empty() {
            tracing::warn!(
                url = %self.url,
                skipped = skipped.len(),
                entries = %name_a_few(skipped, NAMED_IN_WARNING),
                "Spot Advisor feed: unusable entries skipped (no bucket for them); the rest of the feed is in use"
            );
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

    /// The real copy of the public feed kept with the tests (see its SOURCE.md).
    fn real_feed_url() -> String {
        format!(
            "file://{}/tests/data/spot-advisor/spot-advisor-data.json",
            env!("CARGO_MANIFEST_DIR")
        )
    }

    #[tokio::test]
    async fn the_real_feed_is_used_and_its_skipped_entry_counted_by_reason() {
        let metrics = Metrics::new().expect("metrics");
        let cache = AdvisorCache::new(real_feed_url(), metrics.clone());
        let (data, freshness) = cache.get().await;
        assert_eq!(freshness, Freshness::Fresh);
        let advisor = data.expect("the real feed is in use, not the sample");
        assert_eq!(advisor.bucket("us-east-1", "m5.large"), Some(3));
        let rendered = metrics.render();
        for (reason, n) in [
            ("out_of_range", 1),
            ("wrong_type", 0),
            ("missing_bucket", 0),
            ("not_an_object", 0),
        ] {
            let line =
                format!("cloudoptim_spot_advisor_skipped_entries{{reason=\"{reason}\"}} {n}");
            assert!(rendered.contains(&line), "{line} in:\n{rendered}");
        }
    }

    #[tokio::test]
    async fn a_clean_feed_sets_the_skipped_gauge_back_to_zero() {
        let metrics = Metrics::new().expect("metrics");
        metrics
            .spot_advisor_skipped_entries
            .with_label_values(&["out_of_range"])
            .set(5);
        let path = temp_file("clean.json", FEED);
        let cache = AdvisorCache::new(format!("file://{path}"), metrics.clone());
        assert_eq!(cache.get().await.1, Freshness::Fresh);
        assert!(
            metrics
                .render()
                .contains("cloudoptim_spot_advisor_skipped_entries{reason=\"out_of_range\"} 0")
        );
    }

    #[test]
    fn the_warning_names_three_entries_and_counts_the_rest() {
        let feed = r#"{"spot_advisor": {"us-east-1": {"Linux": {
            "a.large": {"r": 9}, "b.large": {"r": 9}, "c.large": {"s": -1, "r": 0},
            "d.large": {"r": "x"}, "e.large": {}, "m5.large": {"r": 1}}}}}"#;
        let advisor = parse_spot_advisor(feed).expect("parses");
        let summary = name_a_few(advisor.skipped(), NAMED_IN_WARNING);
        assert!(
            summary.starts_with("spot_advisor.us-east-1.Linux.a.large: `r` = 9 is outside 0..=4; "),
            "{summary}"
        );
        assert!(summary.contains("c.large"), "{summary}");
        assert!(!summary.contains("d.large"), "{summary}");
        assert!(summary.ends_with("; and 2 more"), "{summary}");
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

    /// A server that answers every connection with headers promising a large body, one byte of it,
    /// and then nothing; counts connections.
    fn stalling_server() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use std::io::Write;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/feed.json", listener.local_addr().expect("addr"));
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = connections.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for mut stream in listener.incoming().flatten() {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                // Read the request, then answer with headers and one byte of the promised body.
                let mut request = Vec::new();
                let mut byte = [0u8; 1];
                while !request.ends_with(b"\r\n\r\n") {
                    match std::io::Read::read(&mut stream, &mut byte) {
                        Ok(1) => request.push(byte[0]),
                        _ => break,
                    }
                }
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n{");
                let _ = stream.flush();
                held.push(stream);
            }
        });
        (url, connections)
    }

    /// The error the cache's fetch ends with, within its deadline.
    async fn fetch_error(cache: &AdvisorCache) -> String {
        match tokio::time::timeout(cache.deadline, fetch(&cache.url)).await {
            Ok(Ok(_)) => "fetched".into(),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no complete answer within {:?}", cache.deadline),
        }
    }

    #[tokio::test]
    async fn a_stalled_body_ends_at_the_deadline_and_is_not_retried_on_every_call() {
        let (url, connections) = stalling_server();
        let metrics = Metrics::new().expect("metrics");
        let cache = AdvisorCache::new(url, metrics).with_deadline(Duration::from_millis(300));
        let (data, freshness) = cache.get().await;
        assert!(data.is_none());
        assert_eq!(freshness, Freshness::Sample);
        let error = fetch_error(&cache).await;
        assert!(error.contains("no complete answer within"), "{error}");
        for _ in 0..5 {
            assert_eq!(cache.get().await.1, Freshness::Sample);
        }
        assert_eq!(
            connections.load(std::sync::atomic::Ordering::SeqCst),
            2,
            "one fetch by the cache (then backoff, whatever the callers), one by fetch_error"
        );
    }

    /// A server on loopback that records the first line of every request and answers it: a
    /// `CONNECT` (an https:// URL through a proxy) with 403, anything else with `FEED`. As a proxy it
    /// sees `GET http://host/path HTTP/1.1`; as the origin, `GET /path HTTP/1.1`.
    async fn recording_server() -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let record = record.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match stream.read(&mut byte).await {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    let head = String::from_utf8_lossy(&head);
                    let line = head.lines().next().unwrap_or_default().to_string();
                    let answer = if line.starts_with("CONNECT ") {
                        "HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n".to_string()
                    } else {
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{FEED}",
                            FEED.len()
                        )
                    };
                    record.lock().expect("lock").push(line);
                    let _ = stream.write_all(answer.as_bytes()).await;
                });
            }
        });
        (url, seen)
    }

    fn lines(seen: &std::sync::Mutex<Vec<String>>) -> Vec<String> {
        seen.lock().expect("lock").clone()
    }

    #[tokio::test]
    async fn an_http_feed_is_fetched_through_the_http_proxy() {
        let (proxy, seen) = recording_server().await;
        let proxies = Proxies::from_vars(|name| (name == "HTTP_PROXY").then(|| proxy.clone()));
        let url = "http://feed.example.invalid/spot-advisor-data.json";
        let advisor = fetch_through(url, &proxies).await.expect("fetched");
        assert_eq!(advisor.bucket("us-east-1", "m5.large"), Some(1));
        assert_eq!(lines(&seen), [format!("GET {url} HTTP/1.1")]);
    }

    #[tokio::test]
    async fn an_https_feed_is_tunnelled_through_the_https_proxy() {
        let (proxy, seen) = recording_server().await;
        let proxies = Proxies::from_vars(|name| (name == "https_proxy").then(|| proxy.clone()));
        let url = "https://feed.example.invalid/spot-advisor-data.json";
        let refused = fetch_through(url, &proxies)
            .await
            .expect_err("the proxy says 403");
        assert!(matches!(refused, FeedError::Http { .. }), "{refused}");
        assert_eq!(lines(&seen), ["CONNECT feed.example.invalid:443 HTTP/1.1"]);
    }

    #[tokio::test]
    async fn a_host_in_no_proxy_is_fetched_directly() {
        let (proxy, through_proxy) = recording_server().await;
        let (origin, direct) = recording_server().await;
        let url = format!("{origin}/spot-advisor-data.json");
        let proxies = Proxies {
            http: Some(proxy),
            no_proxy: Some("localhost,127.0.0.1".into()),
            ..Proxies::default()
        };
        fetch_through(&url, &proxies).await.expect("fetched");
        assert!(lines(&through_proxy).is_empty());
        assert_eq!(lines(&direct), ["GET /spot-advisor-data.json HTTP/1.1"]);
    }

    #[tokio::test]
    async fn without_a_proxy_the_feed_is_fetched_directly() {
        let (origin, direct) = recording_server().await;
        let url = format!("{origin}/spot-advisor-data.json");
        fetch_through(&url, &Proxies::default())
            .await
            .expect("fetched");
        assert_eq!(lines(&direct), ["GET /spot-advisor-data.json HTTP/1.1"]);
    }

    #[tokio::test]
    async fn callers_do_not_wait_for_a_refresh_another_caller_runs() {
        let metrics = Metrics::new().expect("metrics");
        let path = temp_file("refresh.json", FEED);
        let cache = AdvisorCache::new(format!("file://{path}"), metrics);
        assert_eq!(cache.get().await.1, Freshness::Fresh);
        // Make the refresh due and hold the refresh lock as another caller would.
        if let Ok(mut state) = cache.state.lock() {
            state.next_attempt = Some(Instant::now());
        }
        let held = cache.refreshing.clone().lock_owned().await;
        let (data, freshness) = cache.get().await;
        assert!(data.is_some(), "the copy in use, at once");
        assert_eq!(freshness, Freshness::Fresh);
        drop(held);
    }
}
