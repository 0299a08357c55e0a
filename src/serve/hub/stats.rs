//! `stats` frames: one task per [`Hub`] counts at most once per `stats_interval` and hands a
//! new frame to every subscriber of the `stats` topic only when a count changed.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use serde_json::{json, Value};
use tokio::sync::watch;
use tracing::{info, warn};

use super::{FrameText, Hub};
use crate::protocol::ServerFrame;

/// The latest `stats` frame: its counts (with `at`) and its text, written once for every
/// subscriber.
#[derive(Debug)]
pub struct LatestStats {
    /// The counts and `at`, as a snapshot carries them.
    pub counts: Value,
    /// The `stats` frame.
    pub frame: FrameText,
}

/// The server's clock as frames write it (RFC 3339, UTC, milliseconds).
pub(crate) fn now_text() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Starts the task that counts for `hub` every `interval` (at least 10 ms) until the hub is
/// gone, sending each changed frame on `tx`.
pub(super) fn spawn(
    hub: Weak<Hub>,
    interval: Duration,
    tx: watch::Sender<Option<Arc<LatestStats>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last: Option<Value> = None;
        // Whether the last tick could not count (said once, not on every tick).
        let mut failing = false;
        loop {
            tick.tick().await;
            let Some(hub) = hub.upgrade() else { return };
            let counts = match hub.counts().await {
                Ok(counts) => counts,
                Err(why) => {
                    if !failing {
                        warn!(error = %why, "no stats frame this time: the counts could not be read");
                    }
                    failing = true;
                    continue;
                }
            };
            if std::mem::take(&mut failing) {
                info!("the counts of stats frames can be read again");
            }
            if last.as_ref() == Some(&counts) {
                continue;
            }
            let mut at_now = counts.clone();
            at_now["at"] = json!(now_text());
            last = Some(counts);
            let latest = LatestStats {
                frame: ServerFrame::Stats(at_now.clone()).text(None).into(),
                counts: at_now,
            };
            if tx.send(Some(Arc::new(latest))).is_err() {
                return;
            }
        }
    })
}

impl Hub {
    /// The counts a `stats` frame carries (without `type` and `at`).
    async fn counts(&self) -> Result<Value, String> {
        let stats = self
            .rt
            .stats()
            .await
            .map_err(|e| format!("the runtime's stats: {e}"))?;
        let mut counts = json!({
            "agents": stats.registry.agents,
            "jobs": stats.registry.jobs,
            "connections": self.tcp_connections.load(Ordering::Relaxed)
                + self.http_streams.load(Ordering::Relaxed),
            "subscribers": self.subscribers.load(Ordering::Relaxed),
        });
        // The outbound channels' status, when there are any (the dashboard shows them).
        let sinks = self.rt.sinks().await;
        if !sinks.is_empty() {
            counts["sinks"] =
                serde_json::to_value(sinks).map_err(|e| format!("the sinks' status: {e}"))?;
        }
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_actors::{MemStore, Runtime, RuntimeConfig};

    /// The task once started before its hub was whole, found nothing to count and ended:
    /// that hub's subscribers never had a `stats` frame.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_hub_computes_its_stats() {
        let rt = Arc::new(
            Runtime::start(RuntimeConfig::default(), MemStore::new())
                .await
                .expect("a runtime"),
        );
        for i in 0..100 {
            let hub = Hub::new(rt.clone(), Duration::from_millis(10));
            let computed = tokio::time::timeout(Duration::from_secs(10), async {
                while hub.latest_stats().is_none() {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await;
            assert!(computed.is_ok(), "hub {i} never computed a stats frame");
        }
    }

    /// A hub dropped takes its task with it.
    #[tokio::test]
    async fn the_task_ends_with_its_hub() {
        let rt = Arc::new(
            Runtime::start(RuntimeConfig::default(), MemStore::new())
                .await
                .expect("a runtime"),
        );
        let hub = Hub::new(rt, Duration::from_millis(10));
        let mut stats = hub.stats.clone();
        drop(hub);
        let ended = tokio::time::timeout(Duration::from_secs(10), async {
            while stats.changed().await.is_ok() {}
        })
        .await;
        assert!(ended.is_ok(), "the stats task outlived its hub");
    }
}
