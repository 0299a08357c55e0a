//! Where and how a client connects: address, token, TLS, timing.

use std::sync::Arc;
use std::time::Duration;

use tokio_rustls::rustls;

use super::ClientError;

/// The host part of `host:port` (`[::1]:7400` gives `::1`): the name a server's certificate
/// is checked against unless another is given.
pub fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// TLS for a client: which roots to trust and the name to check the certificate against.
#[derive(Clone)]
pub struct ClientTls {
    /// The rustls settings: the trusted roots.
    pub config: Arc<rustls::ClientConfig>,
    /// The name the server's certificate must carry.
    pub server_name: String,
}

impl ClientTls {
    /// Trusts the certificates in `pem` (e.g. a private CA or a self-signed server certificate).
    pub fn with_root_pem(pem: &[u8], server_name: impl Into<String>) -> Result<Self, ClientError> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::CertificateDer;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| ClientError::Tls(e.to_string()))?;
            roots
                .add(cert)
                .map_err(|e| ClientError::Tls(e.to_string()))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            config: Arc::new(config),
            server_name: server_name.into(),
        })
    }
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `host:port`.
    pub addr: String,
    /// The token sent in `hello`; `None` sends none.
    pub token: Option<String>,
    /// Sent in `hello` as `client`.
    pub client_name: String,
    /// TLS settings; `None` connects over plain TCP.
    pub tls: Option<ClientTls>,
    /// How long each step of connecting may take: TCP, TLS, the wait for `welcome` (default 5 s).
    pub connect_timeout: Duration,
    /// Reconnection backoff: the first wait, and the most it grows to (doubling, full jitter).
    pub backoff_min: Duration,
    /// The longest wait between reconnection attempts (default 30 s).
    pub backoff_max: Duration,
    /// Beat every `interval × beat_ratio` ...
    pub beat_ratio: f64,
    /// ... ± this share of it, drawn for each period.
    pub jitter: f64,
    /// Extensions of protocol 1 asked for in `hello` (`welcome.features` says which were
    /// granted); none by default.
    pub features: Vec<String>,
}

impl ClientConfig {
    /// Settings to connect to `addr` (`host:port`) without a token or TLS; the defaults: connect
    /// timeout 5 s, backoff 100 ms to 30 s, beat ratio 0.75, jitter 0.1.
    pub fn new(addr: impl Into<String>) -> Self {
        Self {
            addr: addr.into(),
            token: None,
            client_name: concat!("vigil-client/", env!("CARGO_PKG_VERSION")).into(),
            tls: None,
            connect_timeout: Duration::from_secs(5),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
            beat_ratio: 0.75,
            jitter: 0.1,
            features: Vec::new(),
        }
    }

    /// Sends `token` in `hello`.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Connects over TLS.
    pub fn tls(mut self, tls: ClientTls) -> Self {
        self.tls = Some(tls);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn the_tls_name_defaults_to_the_host() {
        assert_eq!(host_of("example.com:7400"), "example.com");
        assert_eq!(host_of("[::1]:7400"), "::1");
        assert_eq!(host_of("127.0.0.1:7400"), "127.0.0.1");
    }
}
