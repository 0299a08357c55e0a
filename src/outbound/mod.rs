//! The configured outbound channels (`[[sinks]]` in `config/vigil.toml`): webhooks and logs,
//! run by the core's sink machinery ([`vigil_actors::sink`]): durable cursors, retries with
//! backoff and jitter, dead letters, per-channel status.
//!
//! A webhook delivery is one `POST` of `{"sink": NAME, "events": [...]}` where each event is
//! the monitor stream's event object (`"type": "event"`, `seq`, ...), plus `title` when the
//! sink has a title template. With a `secret`, `X-Vigil-Signature: sha256=<hex>` carries the
//! HMAC-SHA256 of the body. 2xx is delivered; 408, 429, 5xx and network errors are retried;
//! any other status (a redirect too: they are not followed) is a rejection and the batch
//! becomes a dead letter at once.

mod webhook;

use std::sync::Arc;

use vigil_actors::{LogSink, Runtime, Sink};

use crate::config::SinkSection;
pub use webhook::{signature, WebhookSink};

impl SinkSection {
    /// The sink itself.
    pub fn build(&self) -> Result<Arc<dyn Sink>, String> {
        self.validate()?;
        Ok(match self.kind.as_str() {
            "webhook" => Arc::new(WebhookSink::new(self)?),
            _ => Arc::new(LogSink {
                name: self.name.clone(),
            }),
        })
    }
}

/// Starts every configured sink on `rt`.
pub async fn start(rt: &Runtime, sinks: &[SinkSection]) -> anyhow::Result<()> {
    for s in sinks {
        let sink = s.build().map_err(anyhow::Error::msg)?;
        rt.add_sink(s.config(), sink).await?;
    }
    Ok(())
}
