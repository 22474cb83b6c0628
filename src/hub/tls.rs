//! The hub's server certificate: PEM files (a mounted `kubernetes.io/tls` Secret's `tls.crt` and
//! `tls.key`, as cert-manager writes them), read at start and read again whenever their content
//! changes, so a renewed certificate is served without a restart. A reload that fails (a half-written
//! Secret, a key that does not match) keeps the certificate in use and is retried at the next check.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::ring as provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Why the certificate could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file holds no usable PEM item.
    #[error("{path}: {message}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The key is not usable or does not belong to the certificate.
    #[error("{key} does not fit {cert}: {source}")]
    Key {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// Why.
        source: rustls::Error,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(#[source] rustls::Error),
}

/// Where the certificate chain and its key are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// PEM certificate chain, leaf first (`tls.crt`).
    pub cert: PathBuf,
    /// PEM private key (`tls.key`: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// The certificate in use, replaced when the files change.
#[derive(Debug)]
pub struct ReloadingCert {
    files: CertFiles,
    current: RwLock<(Vec<u8>, Arc<CertifiedKey>)>,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Both files' bytes: what a change is detected on (a Secret update swaps a symlink, so modification
/// times are not reliable).
fn contents(files: &CertFiles) -> Result<Vec<u8>, TlsError> {
    let mut both = read(&files.cert)?;
    both.extend_from_slice(&read(&files.key)?);
    Ok(both)
}

/// Parse and check a certificate chain and its key.
pub fn load(files: &CertFiles) -> Result<CertifiedKey, TlsError> {
    let pem_err = |path: &Path, message: String| TlsError::Pem {
        path: path.to_path_buf(),
        message,
    };
    let cert_pem = read(&files.cert)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(&files.cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(pem_err(&files.cert, "no CERTIFICATE in it".into()));
    }
    let key_pem = read(&files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| pem_err(&files.key, format!("no private key: {e}")))?;
    let key_err = |source| TlsError::Key {
        cert: files.cert.clone(),
        key: files.key.clone(),
        source,
    };
    let signing = provider::sign::any_supported_type(&key).map_err(key_err)?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(key_err)?;
    Ok(certified)
}

impl ReloadingCert {
    /// Load the files now (a failure here stops the hub from starting).
    pub fn new(files: CertFiles) -> Result<ReloadingCert, TlsError> {
        let seen = contents(&files)?;
        let key = load(&files)?;
        Ok(ReloadingCert {
            files,
            current: RwLock::new((seen, Arc::new(key))),
        })
    }

    /// Load the files again if their content changed; `Ok(true)` when a new certificate is in use.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let seen = contents(&self.files)?;
        if self.lock_read().0 == seen {
            return Ok(false);
        }
        let key = Arc::new(load(&self.files)?);
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = (seen, key);
        Ok(true)
    }

    fn lock_read(&self) -> std::sync::RwLockReadGuard<'_, (Vec<u8>, Arc<CertifiedKey>)> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The rustls server configuration serving this certificate (HTTP/1.1, TLS 1.2 and 1.3, ring).
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let mut config =
            rustls::ServerConfig::builder_with_provider(Arc::new(provider::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(TlsError::Config)?
                .with_no_client_auth()
                .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// The certificate served now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.lock_read().1.clone()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate for `localhost` and its key, PEM.
    fn pair() -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        let cert = params.self_signed(&key).expect("cert");
        (cert.pem(), key.serialize_pem())
    }

    fn files(name: &str) -> CertFiles {
        let dir =
            std::env::temp_dir().join(format!("cloudoptim-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        CertFiles {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
        }
    }

    fn write(files: &CertFiles, (cert, key): &(String, String)) {
        std::fs::write(&files.cert, cert).expect("cert");
        std::fs::write(&files.key, key).expect("key");
    }

    #[test]
    fn a_matching_pair_loads_and_a_key_of_another_certificate_is_refused() {
        let files = files("pair");
        let (cert, key) = pair();
        write(&files, &(cert.clone(), key));
        assert!(load(&files).is_ok());
        let (_, other_key) = pair();
        write(&files, &(cert, other_key));
        assert!(matches!(load(&files), Err(TlsError::Key { .. })));
        std::fs::write(&files.cert, "nothing\n").expect("cert");
        let refused = load(&files).expect_err("no certificate");
        assert!(refused.to_string().contains("tls.crt"), "{refused}");
    }

    #[test]
    fn changed_files_are_served_after_a_reload_and_broken_ones_keep_the_old_certificate() {
        let files = files("reload");
        write(&files, &pair());
        let cert = ReloadingCert::new(files.clone()).expect("loads");
        let first = cert.current().cert[0].clone();
        assert!(!cert.reload_if_changed().expect("unchanged"));
        let renewed = pair();
        write(&files, &renewed);
        assert!(cert.reload_if_changed().expect("reloaded"));
        let second = cert.current().cert[0].clone();
        assert_ne!(first, second);
        std::fs::write(&files.key, "half written").expect("key");
        assert!(cert.reload_if_changed().is_err());
        assert_eq!(
            cert.current().cert[0],
            second,
            "still serving the renewed one"
        );
    }
}
