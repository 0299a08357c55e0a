//! The runtime's health check: a task that every `check_interval` reads the live view, runs
//! the pure [`crate::rules::health::check`], and turns what its [`Alerter`] says is new into `alert`
//! events. The `health_report` admin operation reads the view the same way.
//!
//! The view is read from the registry a page at a time (`Query::List` after the last id of
//! the previous page), so at 100k agents the registry is never held for more than one page:
//! events go on being sequenced between pages. A report is therefore not one instant's
//! snapshot; each record in it is consistent, and an agent changing during the read is judged
//! as of the page it was read in. Mass offline is not judged here (see `registry.rs`).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, warn};

use crate::admin::{AdminError, AdminResponse};
use crate::clock::Clock;
use crate::registry::emit_alert;
use crate::registry::Query;
use crate::registry::RegistryHandle;
use crate::rules::health::{Alerter, HealthConfig, HealthReport};

/// Records per read of the registry.
const PAGE: usize = 1000;

/// A report on the whole fleet (or, with `own`, on the agents this node supervises) as of
/// now.
pub(crate) async fn report(
    registry: &RegistryHandle,
    clock: &Clock,
    cfg: &HealthConfig,
    call_timeout: Duration,
    own: bool,
) -> Result<HealthReport, AdminError> {
    let mut report = HealthReport::new(clock.utc(clock.now()));
    let mut after = None;
    loop {
        let query = Query::List {
            kind: None,
            status: None,
            limit: PAGE,
            after: after.take(),
            own,
        };
        let page = match registry.query(query, call_timeout).await {
            Some(Ok(AdminResponse::Agents(page))) => page,
            Some(Err(e)) => return Err(e),
            _ => return Err(AdminError::Unavailable("registry did not answer".into())),
        };
        report.scan(&page, cfg);
        match page.last() {
            Some(last) if page.len() == PAGE => after = Some(last.id.clone()),
            _ => return Ok(report),
        }
    }
}

/// Checks the fleet every `check_interval` (the first check one interval after the start) and
/// emits each new high-severity finding as an `alert` about its agent.
pub(crate) async fn run(
    registry: RegistryHandle,
    clock: Clock,
    cfg: Arc<HealthConfig>,
    call_timeout: Duration,
) {
    let mut alerter = Alerter::new();
    let mut ticks =
        tokio::time::interval_at(Instant::now() + cfg.check_interval, cfg.check_interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        // On a cluster, each node checks the agents it supervises: one alert per finding.
        let report = match report(&registry, &clock, &cfg, call_timeout, true).await {
            Ok(r) => r,
            Err(e) => {
                // Nothing is forgotten: the next complete check decides.
                warn!(error = %e, "health check skipped: the fleet could not be read");
                continue;
            }
        };
        let s = &report.summary;
        debug!(
            total = s.total,
            online = s.online,
            degraded = s.degraded,
            offline = s.offline,
            findings = report.agents.len(),
            "health check"
        );
        for f in alerter.update(&report) {
            warn!(agent = %f.id, issue = %f.issue, detail = %f.detail, "health alert");
            emit_alert(
                &registry,
                &clock,
                f.severity,
                f.issue.as_str(),
                Some(f.id.clone()),
                format!("agent {}: {}", f.id, f.detail),
            );
        }
    }
}
