//! Webhooks: event batches POSTed as JSON, signed with HMAC-SHA256.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use vigil_actors::{async_trait, Event, Sink, SinkError};

use crate::config::SinkSection;

/// HTTP POST of event batches, signed.
pub struct WebhookSink {
    name: String,
    url: String,
    /// The URL as errors show it (scheme and host: its path or query may hold a key, and a
    /// sink's errors are readable with a monitor token).
    shown: String,
    secret: Option<String>,
    title: Option<String>,
    client: reqwest::Client,
    headers: reqwest::header::HeaderMap,
}

impl WebhookSink {
    /// A sink for the `[[sinks]]` entry `s`; an error when a header is invalid or the HTTP client
    /// cannot be built.
    pub fn new(s: &SinkSection) -> Result<Self, String> {
        let mut headers = reqwest::header::HeaderMap::new();
        for (k, v) in &s.headers {
            let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
                .map_err(|e| format!("sink {}: header {k:?}: {e}", s.name))?;
            let value = reqwest::header::HeaderValue::from_str(v)
                .map_err(|e| format!("sink {}: header {k:?}: {e}", s.name))?;
            headers.insert(name, value);
        }
        if !headers.contains_key(reqwest::header::CONTENT_TYPE) {
            headers.insert(
                reqwest::header::CONTENT_TYPE,
                reqwest::header::HeaderValue::from_static("application/json"),
            );
        }
        let mut client = reqwest::Client::builder();
        if let Some(ca) = &s.ca {
            let pem = std::fs::read(ca)
                .map_err(|e| format!("sink {}: ca {}: {e}", s.name, ca.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("sink {}: ca {}: {e}", s.name, ca.display()))?;
            if certs.is_empty() {
                return Err(format!(
                    "sink {}: ca {}: no certificate in the file",
                    s.name,
                    ca.display()
                ));
            }
            for c in certs {
                client = client.add_root_certificate(c);
            }
        }
        // A redirect would turn the POST into a bodiless GET whose 2xx looked like a
        // delivery: redirects are not followed, and a 3xx is a rejection.
        let client = client
            .redirect(reqwest::redirect::Policy::none())
            .timeout(s.timeout)
            .connect_timeout(s.timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("vigil/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("sink {}: {e}", s.name))?;
        Ok(Self {
            name: s.name.clone(),
            url: s.url.clone().unwrap_or_default(),
            shown: crate::config::redact::url_origin(s.url.as_deref().unwrap_or_default()),
            secret: s.secret.clone(),
            title: s.title.clone(),
            client,
            headers,
        })
    }

    /// The request body for `events`.
    pub fn body(&self, events: &[Arc<Event>]) -> Result<String, serde_json::Error> {
        let mut list = Vec::with_capacity(events.len());
        for e in events {
            let mut v = serde_json::to_value(&**e)?;
            v["type"] = json!("event");
            if let Some(t) = &self.title {
                v["title"] = json!(render_title(t, &v));
            }
            list.push(v);
        }
        serde_json::to_string(&json!({ "sink": self.name, "events": list }))
    }
}

/// `sha256=<hex of HMAC-SHA256(secret, body)>`, the `X-Vigil-Signature` header.
pub fn signature(secret: &str, body: &[u8]) -> String {
    // An HMAC takes a key of any length; `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    };
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in tag {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

fn render_title(template: &str, event: &Value) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) => {
                let key = &after[..close];
                match &event[key] {
                    Value::String(s) => out.push_str(s),
                    Value::Null => {}
                    v => out.push_str(&v.to_string()),
                }
                rest = &after[close + 1..];
            }
            None => {
                out.push_str(&rest[open..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

#[async_trait]
impl Sink for WebhookSink {
    async fn deliver(&self, events: &[Arc<Event>]) -> Result<(), SinkError> {
        let body = self
            .body(events)
            .map_err(|e| SinkError::Reject(format!("body not serializable: {e}")))?;
        let mut req = self.client.post(&self.url).headers(self.headers.clone());
        if let Some(secret) = &self.secret {
            req = req.header("X-Vigil-Signature", signature(secret, body.as_bytes()));
        }
        let resp = req
            .body(body)
            .send()
            .await
            .map_err(|e| SinkError::Retry(format!("{}: {}", self.shown, describe(e))))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let msg = format!("{} answered {status}", self.shown);
        if status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429 {
            Err(SinkError::Retry(msg))
        } else {
            Err(SinkError::Reject(msg))
        }
    }
}

/// A request error with its cause (reqwest's own message stops at "error sending request"),
/// without the URL.
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut s = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(c) = source {
        s.push_str(": ");
        s.push_str(&c.to_string());
        source = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_in_hex() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    fn webhook(url: &str) -> WebhookSink {
        let t: toml::Table = format!("name = \"w\"\ntype = \"webhook\"\nurl = \"{url}\"\n")
            .parse()
            .unwrap();
        let section: SinkSection = toml::Value::Table(t).try_into().unwrap();
        WebhookSink::new(&section).unwrap()
    }

    #[tokio::test]
    async fn delivery_errors_show_the_webhook_url_as_its_origin_only() {
        // Refused: nothing listens on this port once the listener is dropped.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let sink = webhook(&format!(
            "http://127.0.0.1:{port}/hooks/key-s3cret?token=q-s3cret"
        ));
        let e = sink.deliver(&[]).await.unwrap_err().to_string();
        assert!(!e.contains("s3cret"), "{e}");
        assert!(e.contains(&format!("http://127.0.0.1:{port}")), "{e}");
        // Answered with an error status.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 64 * 1024];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(
                    b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                )
                .await;
        });
        let sink = webhook(&format!("http://{addr}/hooks/key-s3cret"));
        let e = sink.deliver(&[]).await.unwrap_err().to_string();
        assert!(!e.contains("s3cret"), "{e}");
        assert!(e.contains("404"), "{e}");
        server.await.unwrap();
    }

    #[test]
    fn titles_fill_their_placeholders() {
        let e = json!({"agent":"a1","kind":"worker","to":"offline","seq":7,"reason":"heartbeat_missed"});
        assert_eq!(
            render_title("{agent} ({kind}) is {to} #{seq}: {reason}{nothing} {", &e),
            "a1 (worker) is offline #7: heartbeat_missed {"
        );
    }
}
