//! Which `Host` an HTTP request may name when it is let in without a token (a role whose
//! token list is empty, on loopback). A page the operator's browser opened can rebind its own
//! name to 127.0.0.1 and then send requests that pass an `Origin` check (both name the page's
//! host); it cannot make the browser send `Host: localhost`. So: localhost, 127.0.0.1 and
//! [::1] with any port, and the names in `[server] allowed_hosts`.

use axum::http::{header, HeaderMap};

use super::error::ApiError;
use crate::protocol::ErrorCode;

/// The names every loopback server answers to.
const LOOPBACK: &[&str] = &["localhost", "127.0.0.1", "[::1]"];

/// A `Host` value split into its name (lowercase, IPv6 in brackets) and port.
fn split(host: &str) -> (String, Option<&str>) {
    let host = host.trim();
    let (name, port) = if host.starts_with('[') {
        match host.find(']') {
            Some(end) => (&host[..=end], host[end + 1..].strip_prefix(':')),
            None => (host, None),
        }
    } else {
        match host.rsplit_once(':') {
            Some((n, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => (n, Some(p)),
            _ => (host, None),
        }
    };
    (name.to_ascii_lowercase(), port)
}

/// Whether `host` (a `Host` header's value) is one this server answers without a token.
pub(crate) fn allowed(host: &str, extra: &[String]) -> bool {
    let (name, port) = split(host);
    if name.is_empty() {
        return false;
    }
    if LOOPBACK.contains(&name.as_str()) {
        return true;
    }
    extra.iter().any(|e| {
        let (e_name, e_port) = split(e);
        e_name == name && (e_port.is_none() || e_port == port)
    })
}

/// Refuses a request whose `Host` is not [`allowed`] (403, `forbidden`).
pub(crate) fn check(headers: &HeaderMap, extra: &[String]) -> Result<(), ApiError> {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if allowed(host, extra) {
        return Ok(());
    }
    Err(ApiError::new(
        ErrorCode::Forbidden,
        format!(
            "Host {host:?} is not a name of this server: without a token only localhost, \
             127.0.0.1, [::1] and [server] allowed_hosts are answered"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_with_any_port_and_configured_names_pass() {
        for h in [
            "localhost",
            "localhost:7401",
            "LOCALHOST:1",
            "127.0.0.1:7401",
            "[::1]:7401",
            "[::1]",
        ] {
            assert!(allowed(h, &[]), "{h}");
        }
        for h in [
            "",
            "evil.example:7401",
            "127.0.0.1.evil.example",
            "localhost.evil.example:7401",
            "[::2]:7401",
            "127.0.0.2",
        ] {
            assert!(!allowed(h, &[]), "{h}");
        }
        let extra = vec!["vigil.lan".to_string(), "proxy.lan:8443".to_string()];
        assert!(allowed("vigil.lan:7401", &extra));
        assert!(allowed("Vigil.LAN", &extra));
        assert!(allowed("proxy.lan:8443", &extra));
        assert!(!allowed("proxy.lan:9000", &extra));
        assert!(!allowed("other.lan", &extra));
    }
}
