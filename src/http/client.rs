//! The one outbound HTTP client (reqwest over rustls with ring), used by the Spot Advisor fetch and the
//! hub member client.
//!
//! Requests go through the proxy that `HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY` name (upper case
//! first, then lower case, as curl reads them), except to the hosts, domains and CIDRs in `NO_PROXY`,
//! the usual egress setup on EKS. The variables are read once into [`Proxies`] and given to the
//! builder explicitly, so tests pass their own values instead of changing the process's environment.
//! Redirects are not followed (neither caller expects one, and the hub's token must not follow one).

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::{Certificate, ClientBuilder, NoProxy, Proxy};

/// Why a client could not be built or a body read.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The CA bundle could not be used.
    #[error("CA file {path}: {message}")]
    Ca {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The client certificate or its key could not be used.
    #[error("client certificate {cert} with key {key}: {message}")]
    Identity {
        /// The certificate file (PEM).
        cert: PathBuf,
        /// The key file (PEM).
        key: PathBuf,
        /// Why.
        message: String,
    },
    /// A proxy variable holds no usable URL.
    #[error("{variable}={url:?}: {source}")]
    Proxy {
        /// The variable (`HTTPS_PROXY`, …).
        variable: &'static str,
        /// Its value.
        url: String,
        /// Why.
        source: reqwest::Error,
    },
    /// reqwest refused the configuration (for example no usable system CA certificates).
    #[error("building the HTTP client: {}", chain(.0))]
    Build(#[source] reqwest::Error),
    /// The body is larger than the caller accepts.
    #[error("body larger than {max} bytes")]
    TooLarge {
        /// The limit.
        max: usize,
    },
    /// The body could not be read to its end.
    #[error("reading the body: {}", chain(.0))]
    Body(#[source] reqwest::Error),
}

/// The proxies to use, as the standard variables name them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Proxies {
    /// Proxy for `https://` URLs (`HTTPS_PROXY`).
    pub https: Option<String>,
    /// Proxy for `http://` URLs (`HTTP_PROXY`).
    pub http: Option<String>,
    /// Proxy for both when the specific one is unset (`ALL_PROXY`).
    pub all: Option<String>,
    /// Comma-separated hosts, domains (`.example.com` or `example.com`), IPs and CIDRs reached
    /// directly, `*` for all (`NO_PROXY`).
    pub no_proxy: Option<String>,
}

impl Proxies {
    /// The proxies this process's environment names.
    pub fn from_env() -> Proxies {
        Proxies::from_vars(|name| std::env::var(name).ok())
    }

    /// The proxies `var` names, looking up each variable in upper then lower case; empty values
    /// count as unset.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Proxies {
        let first = |upper: &str| {
            [upper.to_string(), upper.to_ascii_lowercase()]
                .iter()
                .filter_map(|name| var(name))
                .map(|value| value.trim().to_string())
                .find(|value| !value.is_empty())
        };
        Proxies {
            https: first("HTTPS_PROXY"),
            http: first("HTTP_PROXY"),
            all: first("ALL_PROXY"),
            no_proxy: first("NO_PROXY"),
        }
    }

    /// Replace the builder's own environment lookup with these proxies.
    fn apply(&self, builder: ClientBuilder) -> Result<ClientBuilder, HttpError> {
        // The first matching proxy wins, so ALL_PROXY comes last as the fallback.
        let rules: [(&'static str, &Option<String>, ProxyFor); 3] = [
            ("HTTPS_PROXY", &self.https, Proxy::https::<String>),
            ("HTTP_PROXY", &self.http, Proxy::http::<String>),
            ("ALL_PROXY", &self.all, Proxy::all::<String>),
        ];
        let mut builder = builder.no_proxy();
        for (variable, url, proxy_for) in rules {
            let Some(url) = url else { continue };
            let proxy = proxy_for(url.clone()).map_err(|source| HttpError::Proxy {
                variable,
                url: url.clone(),
                source,
            })?;
            let no_proxy = self.no_proxy.as_deref().and_then(NoProxy::from_string);
            builder = builder.proxy(proxy.no_proxy(no_proxy));
        }
        Ok(builder)
    }
}

/// `Proxy::https`, `Proxy::http` or `Proxy::all`.
type ProxyFor = fn(String) -> reqwest::Result<Proxy>;

/// What a caller needs from its client.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// Where requests go through.
    pub proxies: Proxies,
    /// Trust only the CA certificates in this PEM bundle instead of the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Present this client certificate (PEM certificate chain, PEM private key) when the server
    /// asks: mutual TLS.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// Refuse `http://` URLs.
    pub https_only: bool,
    /// Time to open a connection (TCP, and the proxy's tunnel when there is one).
    pub connect_timeout: Option<Duration>,
    /// Time for a whole request, body included (leave unset for streams).
    pub timeout: Option<Duration>,
    /// Idle pooled connections are closed after this long.
    pub pool_idle_timeout: Option<Duration>,
}

impl ClientOptions {
    /// Defaults with the proxies of this process's environment.
    pub fn from_env() -> ClientOptions {
        ClientOptions {
            proxies: Proxies::from_env(),
            ..ClientOptions::default()
        }
    }
}

/// A client configured by `options`.
pub fn client(options: &ClientOptions) -> Result<reqwest::Client, HttpError> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .https_only(options.https_only)
        .tcp_nodelay(true);
    builder = options.proxies.apply(builder)?;
    if let Some(path) = &options.ca_file {
        builder = builder.tls_built_in_root_certs(false);
        for cert in ca_bundle(path)? {
            builder = builder.add_root_certificate(cert);
        }
    }
    if let Some((cert, key)) = &options.identity {
        builder = builder.identity(identity(cert, key)?);
    }
    if let Some(timeout) = options.connect_timeout {
        builder = builder.connect_timeout(timeout);
    }
    if let Some(timeout) = options.timeout {
        builder = builder.timeout(timeout);
    }
    if let Some(idle) = options.pool_idle_timeout {
        builder = builder.pool_idle_timeout(idle);
    }
    builder.build().map_err(HttpError::Build)
}

/// The certificates of a PEM bundle; one that holds none is refused.
fn ca_bundle(path: &Path) -> Result<Vec<Certificate>, HttpError> {
    let ca_err = |message: String| HttpError::Ca {
        path: path.to_path_buf(),
        message,
    };
    let pem = std::fs::read(path).map_err(|e| ca_err(e.to_string()))?;
    let certs = Certificate::from_pem_bundle(&pem).map_err(|e| ca_err(chain(&e)))?;
    if certs.is_empty() {
        return Err(ca_err("no CERTIFICATE in it".into()));
    }
    Ok(certs)
}

/// A client identity from a PEM certificate chain and a PEM private key (PKCS#8, PKCS#1 or SEC1).
fn identity(cert: &Path, key: &Path) -> Result<reqwest::Identity, HttpError> {
    let err = |message: String| HttpError::Identity {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        message,
    };
    let mut pem = std::fs::read(cert).map_err(|e| err(format!("{}: {e}", cert.display())))?;
    pem.push(b'\n');
    pem.extend(std::fs::read(key).map_err(|e| err(format!("{}: {e}", key.display())))?);
    reqwest::Identity::from_pem(&pem).map_err(|e| err(chain(&e)))
}

/// The whole body, refused as soon as it passes `max` bytes.
pub async fn body_capped(
    mut response: reqwest::Response,
    max: usize,
) -> Result<Vec<u8>, HttpError> {
    if response
        .content_length()
        .is_some_and(|length| length > max as u64)
    {
        return Err(HttpError::TooLarge { max });
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(HttpError::Body)? {
        if body.len() + chunk.len() > max {
            return Err(HttpError::TooLarge { max });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// An error and its causes on one line (reqwest's own message names only the URL).
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn proxies_are_read_upper_case_first_then_lower_case_and_empty_means_unset() {
        let proxies = Proxies::from_vars(vars(&[
            ("HTTPS_PROXY", "http://upper:3128"),
            ("https_proxy", "http://lower:3128"),
            ("http_proxy", "http://plain:3128"),
            ("ALL_PROXY", " "),
            ("no_proxy", "169.254.169.254,.svc,10.0.0.0/8"),
        ]));
        assert_eq!(
            proxies,
            Proxies {
                https: Some("http://upper:3128".into()),
                http: Some("http://plain:3128".into()),
                all: None,
                no_proxy: Some("169.254.169.254,.svc,10.0.0.0/8".into()),
            }
        );
    }

    #[test]
    fn an_unusable_proxy_url_is_refused_naming_the_variable() {
        let options = ClientOptions {
            proxies: Proxies::from_vars(vars(&[("HTTPS_PROXY", "http://[::1")])),
            ..ClientOptions::default()
        };
        let refused = client(&options).expect_err("refused");
        assert!(refused.to_string().contains("HTTPS_PROXY"), "{refused}");
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused_naming_the_file() {
        let path = std::env::temp_dir().join(format!("cloudoptim-http-ca-{}", std::process::id()));
        std::fs::write(&path, "not a certificate\n").expect("write");
        let options = ClientOptions {
            ca_file: Some(path.clone()),
            ..ClientOptions::default()
        };
        let refused = client(&options).expect_err("refused");
        let _ = std::fs::remove_file(&path);
        assert!(matches!(refused, HttpError::Ca { .. }), "{refused}");
        assert!(
            refused.to_string().contains("cloudoptim-http-ca"),
            "{refused}"
        );
    }
}
