//! The built-in sink that writes events to the log.

use std::sync::Arc;

use async_trait::async_trait;
use tracing::info;

use super::{Sink, SinkError};
use crate::model::Event;

/// A sink that writes each event as a structured `tracing` event (target `vigil::sink`).
#[derive(Debug, Default)]
pub struct LogSink {
    /// The sink's name, written with each event (field `sink`).
    pub name: String,
}

#[async_trait]
impl Sink for LogSink {
    async fn deliver(&self, events: &[Arc<Event>]) -> Result<(), SinkError> {
        for e in events {
            let to = e.body.status_after().map(|s| s.as_str());
            let from = e.body.status_before().map(|s| s.as_str());
            info!(
                target: "vigil::sink",
                sink = %self.name,
                seq = e.seq,
                at = %e.at,
                event = ?e.body.kind(),
                agent = e.agent.as_ref().map(|a| a.as_str()),
                kind = e.kind.as_deref(),
                from,
                to,
                "event"
            );
        }
        Ok(())
    }
}
