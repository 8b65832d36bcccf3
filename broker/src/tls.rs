//! TLS certificates: [`TlsFiles`] (the PEM certificate chain and private key of `[tls]`),
//! read and checked once into a rustls [`ServerConfig`] with the ring provider, with errors
//! that name the file and say what is wrong with it ([`TlsError`]).
//!
//! Used by the embedded broker's TLS listeners (which rmqtt builds again from the same files:
//! checking them here first turns its terse errors into ours) and by the CSM's HTTPS. Not
//! here: client certificates (not supported), certificate generation (`iotctl gencert`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
/// The rustls server configuration [`TlsFiles::server_config`] makes.
pub use rustls::ServerConfig;

/// The server certificate chain and its private key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server certificate first, then any intermediate CA certificates.
    pub cert_file: PathBuf,
    /// The private key of the server certificate (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// Why a certificate or key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate (a `-----BEGIN CERTIFICATE-----` block): is `tls.cert_file` the certificate?")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no PEM private key (a `-----BEGIN PRIVATE KEY-----`, `RSA PRIVATE KEY` or `EC PRIVATE KEY` block): is `tls.key_file` the key?")]
    NoKey { path: PathBuf },
    #[error("{path} is not valid PEM: {reason}")]
    Pem { path: PathBuf, reason: String },
    #[error("the private key in {key} does not belong to the certificate in {cert}: use the key the certificate was made for")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("the certificate {cert} and key {key} cannot be used: {reason}")]
    Invalid {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
}

impl TlsFiles {
    pub fn new(cert_file: impl Into<PathBuf>, key_file: impl Into<PathBuf>) -> Self {
        Self {
            cert_file: cert_file.into(),
            key_file: key_file.into(),
        }
    }

    /// Reads and checks both files: each must hold PEM of the right kind, and the key must be
    /// the certificate's.
    pub fn check(&self) -> Result<(), TlsError> {
        self.server_config(Vec::new()).map(|_| ())
    }

    /// A rustls server configuration (ring provider, TLS 1.2 and 1.3, no client
    /// certificates) offering the ALPN protocols `alpn` (e.g. `http/1.1`), in that order.
    pub fn server_config(&self, alpn: Vec<Vec<u8>>) -> Result<Arc<ServerConfig>, TlsError> {
        let chain = self.certificates()?;
        let key = self.key()?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| self.invalid(e))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| match e {
                rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch {
                    cert: self.cert_file.clone(),
                    key: self.key_file.clone(),
                },
                e => self.invalid(e),
            })?;
        config.alpn_protocols = alpn;
        Ok(Arc::new(config))
    }

    fn certificates(&self) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        let path = &self.cert_file;
        let bytes = read(path, "certificate file")?;
        let chain = CertificateDer::pem_slice_iter(&bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem_error(path, e))?;
        if chain.is_empty() {
            return Err(TlsError::NoCertificate { path: path.clone() });
        }
        Ok(chain)
    }

    fn key(&self) -> Result<PrivateKeyDer<'static>, TlsError> {
        let path = &self.key_file;
        let bytes = read(path, "key file")?;
        PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
            pem::Error::NoItemsFound => TlsError::NoKey { path: path.clone() },
            e => pem_error(path, e),
        })
    }

    fn invalid(&self, e: rustls::Error) -> TlsError {
        TlsError::Invalid {
            cert: self.cert_file.clone(),
            key: self.key_file.clone(),
            reason: e.to_string(),
        }
    }
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

fn pem_error(path: &Path, e: pem::Error) -> TlsError {
    TlsError::Pem {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate and its key (P-256), made with `openssl req -x509` once; the
    /// second key belongs to nothing here.
    const CERT: &str = include_str!("../tests/data/tls/cert.pem");
    const KEY: &str = include_str!("../tests/data/tls/key.pem");
    const OTHER_KEY: &str = include_str!("../tests/data/tls/other-key.pem");

    fn files(dir: &Path, cert: &str, key: &str) -> TlsFiles {
        let c = dir.join("c.pem");
        let k = dir.join("k.pem");
        std::fs::write(&c, cert).unwrap();
        std::fs::write(&k, key).unwrap();
        TlsFiles::new(c, k)
    }

    #[test]
    fn errors_name_the_file_and_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        files(d, CERT, KEY).check().unwrap();

        let err = |f: TlsFiles| f.check().unwrap_err().to_string();
        let text = err(TlsFiles::new(d.join("nope.pem"), d.join("k.pem")));
        assert!(
            text.contains("cannot read the TLS certificate file") && text.contains("nope.pem"),
            "{text}"
        );
        let text = err(files(d, KEY, KEY));
        assert!(text.contains("no PEM certificate"), "{text}");
        let text = err(files(d, CERT, CERT));
        assert!(text.contains("no PEM private key"), "{text}");
        let text = err(files(d, CERT, OTHER_KEY));
        assert!(
            text.contains("does not belong to the certificate"),
            "{text}"
        );
        let text = err(files(d, "-----BEGIN CERTIFICATE-----\nnot base64!\n", KEY));
        assert!(text.contains("not valid PEM"), "{text}");
    }
}
