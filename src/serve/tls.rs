//! TLS for the listeners: a rustls server configuration from PEM files.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file's path.
        path: String,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// A PEM file holds no certificate or key, or a malformed one.
    #[error("{path}: {message}")]
    Pem {
        /// The file's path.
        path: String,
        /// What is wrong with it.
        message: String,
    },
    /// rustls refused the certificate chain or the key.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// A TLS server configuration from a certificate chain and a private key (PEM files).
pub fn tls_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| TlsError::Read {
            path: p.display().to_string(),
            source,
        })
    };
    let pem_err = |p: &Path, e: rustls::pki_types::pem::Error| TlsError::Pem {
        path: p.display().to_string(),
        message: e.to_string(),
    };
    let cert_pem = read(cert)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(cert, e))?;
    if chain.is_empty() {
        return Err(TlsError::Pem {
            path: cert.display().to_string(),
            message: "no certificate in the file".into(),
        });
    }
    let key_pem = read(key)?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| pem_err(key, e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)?;
    Ok(Arc::new(cfg))
}
