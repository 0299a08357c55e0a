//! The runtime's own tasks and helpers: alerts, the lag probe, sinks' control replies and
//! log source.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};

use super::emit_alert;
use crate::admin::{AdminError, AdminResponse};
use crate::broadcaster::{SubscribeOptions, Subscription};
use crate::clock::Clock;
use crate::model::Severity;
use crate::registry::Query;
use crate::registry::RegistryHandle;
use crate::rules::lag::LagMonitor;
use crate::sink::LogSource;

/// Measures the runtime's own scheduling lag and raises `runtime_lagging` once per episode.
pub(super) async fn probe_lag(lag: Arc<LagMonitor>, registry: RegistryHandle, clock: Clock) {
    let period = lag.config().probe_interval;
    let mut lagging = false;
    loop {
        let planned = Instant::now() + period;
        tokio::time::sleep_until(planned).await;
        let now = Instant::now();
        lag.observe(now.saturating_duration_since(planned), now);
        let now_lagging = lag.lagging(now);
        if now_lagging && !lagging {
            lagging = true;
            let (estimate, cap) = (lag.estimate(now), lag.config().max_slack);
            warn!(
                lag_ms = estimate.as_millis() as u64,
                max_slack_ms = cap.as_millis() as u64,
                "runtime is lagging; deadlines extended"
            );
            let detail = match estimate > cap {
                false => format!(
                    "the runtime's scheduling lag is {} ms; deadlines are extended by it",
                    estimate.as_millis()
                ),
                true => format!(
                    "the runtime's scheduling lag is {} ms; deadlines are extended by at most \
                     {} ms (lag_max_slack), so agents may be reported late or wrongly",
                    estimate.as_millis(),
                    cap.as_millis()
                ),
            };
            emit_alert(
                &registry,
                &clock,
                Severity::High,
                "runtime_lagging",
                None,
                detail,
            );
        } else if !now_lagging && lagging {
            lagging = false;
            info!("runtime lag back to normal");
        }
    }
}

/// A sink task's answer, within 30 s: a sink in the middle of a delivery answers after it, and
/// a replay delivers every dead letter first.
pub(super) async fn control_reply<T>(
    sink: &str,
    rx: tokio::sync::oneshot::Receiver<T>,
) -> Result<T, AdminError> {
    match tokio::time::timeout(Duration::from_secs(30), rx).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(_)) => Err(AdminError::Unavailable(format!("sink {sink} has stopped"))),
        Err(_) => Err(AdminError::Unavailable(format!(
            "sink {sink} did not answer within 30 s (it is delivering); try again"
        ))),
    }
}

/// A sink's view of the runtime: subscriptions and the last seq, through the registry.
pub(super) struct RegistrySource {
    pub(super) registry: RegistryHandle,
    pub(super) call_timeout: Duration,
}

#[async_trait::async_trait]
impl LogSource for RegistrySource {
    async fn subscribe(&self, opts: SubscribeOptions) -> Option<Subscription> {
        self.registry.subscribe(opts, self.call_timeout).await
    }

    async fn last_seq(&self) -> Option<u64> {
        match self.registry.query(Query::Stats, self.call_timeout).await {
            // The last seq durable and published: a sink starting "now" must not start past
            // events that a crash could still give to others.
            Some(Ok(AdminResponse::Registry(r))) => Some(r.durable_seq),
            _ => None,
        }
    }
}
