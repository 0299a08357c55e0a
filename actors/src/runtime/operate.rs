//! What operators and programs call: subscriptions, admin, stats, health, alerts, sinks.

use std::sync::Arc;
use std::time::Duration;

use ractor::rpc::CallResult;
use tokio::time::Instant;

use super::{control_reply, emit_alert, Runtime, RuntimeError};
use crate::admin::{AdminError, AdminRequest, AdminResponse, Stats};
use crate::broadcaster::{SubscribeOptions, Subscription};
use crate::fleet::FleetMsg;
use crate::model::Severity;
use crate::rules::health::HealthReport;
use crate::rules::lag::InputHold;
use crate::sink::{Control, DeadLetter, LogSource, Sink, SinkConfig, SinkHandle, SinkStatus};

impl Runtime {
    /// Subscribes to events: optionally a snapshot first, or a replay `since` a seq.
    /// While the store fails (or too many events wait for it) a new subscription is refused
    /// with [`RuntimeError::Overloaded`]: it could show nothing new, and a snapshot would
    /// hold a copy of the fleet until the store recovers.
    pub async fn subscribe(&self, opts: SubscribeOptions) -> Result<Subscription, RuntimeError> {
        if let Some(why) = self.backpressure.refuse_write() {
            return Err(RuntimeError::Overloaded(why));
        }
        self.source
            .subscribe(opts)
            .await
            .ok_or_else(|| match self.backpressure.refuse_write() {
                Some(why) => RuntimeError::Overloaded(why),
                None => RuntimeError::Unavailable("subscription not answered".into()),
            })
    }

    /// The cluster node this runtime is, if it is one.
    pub fn node_id(&self) -> Option<&str> {
        self.node.as_ref().map(|n| &**n.me())
    }

    /// On a cluster node: the other node that owns agent `id` (its last registration was
    /// there, and it has not left), if one does. A registration here without `takeover` is
    /// refused with `conflict` when that node holds a live connection for it, as it is when
    /// another connection of one node owns the agent.
    pub fn owned_elsewhere(&self, id: &crate::model::AgentId) -> Option<String> {
        self.node
            .as_ref()
            .and_then(|n| n.owned_elsewhere(id))
            .map(|o| o.to_string())
    }

    /// On a cluster node: where node `node` takes connections, as its lease advertises it.
    pub fn node_address(&self, node: &str) -> Option<String> {
        self.node.as_ref().and_then(|n| n.address(node))
    }

    /// The seq an event of the log had in this runtime's own numbering (which its agents'
    /// registrations carry: `AgentHandle::registered_seq`): on one node, `seq` itself; on a
    /// cluster node, for one of its own newest events, the seq its registry gave it before
    /// the shared log numbered it `seq`.
    pub fn own_seq(&self, seq: u64) -> Option<u64> {
        match &self.node {
            None => Some(seq),
            Some(n) => n.local_seq(seq),
        }
    }

    /// On a cluster node: the other nodes that advertise an address and are alive as this
    /// node last judged their leases, by id.
    pub fn live_peers(&self) -> Vec<String> {
        self.node
            .as_ref()
            .map(|n| n.live_peers())
            .unwrap_or_default()
    }

    /// On a cluster node: whether it keeps the fleet's checkpoint and delivers the sinks now
    /// (one node at a time does); false on a single node.
    pub fn keeps(&self) -> bool {
        self.sink_duty.as_ref().is_some_and(|d| *d.borrow())
    }

    /// On a cluster node: the node that keeps the fleet's checkpoint and delivers the sinks,
    /// as this node last saw it (perhaps itself).
    pub fn keeper(&self) -> Option<String> {
        self.node
            .as_ref()
            .and_then(|n| n.keeper())
            .map(|k| k.to_string())
    }

    /// Whether this runtime supervises agent `id` (on a cluster node: this node owns it).
    pub fn supervises(&self, id: &crate::model::AgentId) -> bool {
        self.directory.read().contains_key(id)
    }

    /// Why the store's durability is weaker than "durable before visible" (a sync mode that
    /// does not flush every commit), if it is.
    pub fn durability_warning(&self) -> Option<String> {
        self.store.durability_warning()
    }

    /// Sends an admin message and waits for its answer.
    pub async fn admin(&self, req: AdminRequest) -> Result<AdminResponse, AdminError> {
        if matches!(req, AdminRequest::SetPolicy { .. }) {
            return self.set_policy(req).await;
        }
        self.ask_fleet(req).await
    }

    /// Changes a kind's policy, then saves it: it outlives the process, and a node of a
    /// cluster that starts later starts with it.
    async fn set_policy(&self, req: AdminRequest) -> Result<AdminResponse, AdminError> {
        let _order = self.policy_saves.lock().await;
        let answer = self.ask_fleet(req).await?;
        if let AdminResponse::Policy { kind, policy } = &answer {
            let saved = crate::model::SavedPolicy {
                kind: kind.clone(),
                policy: policy.clone(),
                base: (**self.configured.for_kind(kind)).clone(),
            };
            self.store.put_policy(&saved).await.map_err(|e| {
                AdminError::Unavailable(format!(
                    "the policy of kind {kind} took effect, but it could not be saved, so a \
                     restart would not keep it: {e}"
                ))
            })?;
        }
        Ok(answer)
    }

    async fn ask_fleet(&self, req: AdminRequest) -> Result<AdminResponse, AdminError> {
        match self
            .fleet
            .call(|reply| FleetMsg::Admin(req, reply), Some(self.call_timeout))
            .await
        {
            Ok(CallResult::Success(r)) => r,
            _ => Err(AdminError::Unavailable("fleet supervisor".into())),
        }
    }

    /// Runtime-wide counters.
    pub async fn stats(&self) -> Result<Stats, AdminError> {
        match self.admin(AdminRequest::Stats).await? {
            AdminResponse::Stats(s) => Ok(*s),
            other => Err(AdminError::Unavailable(format!(
                "unexpected answer {other:?}"
            ))),
        }
    }

    /// False while the store is failing (writes are being retried).
    pub fn store_healthy(&self) -> bool {
        self.backpressure
            .store_ok
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The current scheduling-lag estimate.
    pub fn lag(&self) -> Duration {
        self.lag.estimate(Instant::now())
    }

    /// A reader of the agents' input (a connection; see [`crate::lag::Backlog`]) has been
    /// `behind` it: the beats waiting there are the runtime's delay, not the agents' silence,
    /// so deadlines are extended by it as by scheduling lag, and `runtime_lagging` says so
    /// above the threshold.
    pub fn observe_backlog(&self, behind: Duration) {
        self.lag.observe(behind, Instant::now());
    }

    /// Agents' input is held from now until the hold is dropped: a reader woken by its input
    /// and not yet run, or frames read and waiting behind a registration. Deadlines are
    /// extended by the oldest hold's age while it lasts (before anyone has read what it
    /// holds), and by how long it lasted after (see [`crate::lag`]).
    pub fn hold_input(&self) -> InputHold {
        self.lag.hold(Instant::now())
    }

    /// Fault injection for tests: records an observed scheduling lag, as the probe would.
    #[doc(hidden)]
    pub fn inject_lag(&self, lag: Duration) {
        self.lag.observe(lag, Instant::now());
    }

    /// The fleet's health as of now: a summary by status and every finding (the same check
    /// the health task runs every `check_interval`).
    pub async fn health_report(&self) -> Result<HealthReport, AdminError> {
        match self.admin(AdminRequest::HealthReport).await? {
            AdminResponse::Health(r) => Ok(*r),
            other => Err(AdminError::Unavailable(format!(
                "unexpected answer {other:?}"
            ))),
        }
    }

    /// Emits an alert event (sequenced and persisted like any other).
    pub fn alert(&self, severity: Severity, issue: &str, detail: String) {
        emit_alert(&self.registry, &self.clock, severity, issue, None, detail);
    }

    /// Adds an outbound channel (see [`crate::sink`]): it resumes from its saved cursor, or
    /// starts as `cfg.start` says.
    pub async fn add_sink(&self, cfg: SinkConfig, sink: Arc<dyn Sink>) -> Result<(), RuntimeError> {
        cfg.validate().map_err(RuntimeError::Config)?;
        let mut sinks = self.sinks.lock().await;
        if sinks.iter().any(|s| s.name == cfg.name) {
            return Err(RuntimeError::Config(format!(
                "a sink named {} already exists",
                cfg.name
            )));
        }
        let source = self.source.clone();
        let duty = self.sink_duty.clone();
        sinks.push(SinkHandle::spawn(
            cfg,
            sink,
            source,
            self.store.clone(),
            duty,
        ));
        Ok(())
    }

    /// Every sink's status, with its lag behind the last durable (published) event.
    pub async fn sinks(&self) -> Vec<SinkStatus> {
        let last = self.source.last_seq().await;
        let sinks = self.sinks.lock().await;
        sinks
            .iter()
            .map(|s| {
                let mut st = s.status.lock().clone();
                // (A sink on standby is another node's to deliver: it is not behind here.)
                if let (Some(last), false) = (last, st.state == "standby") {
                    st.lag = last.saturating_sub(st.delivered_seq);
                }
                st
            })
            .collect()
    }

    /// The dead letters a sink holds.
    pub async fn dead_letters(&self, sink: &str) -> Result<Vec<DeadLetter>, AdminError> {
        let control = self.sink_control(sink).await?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        control
            .send(Control::DeadLetters(tx))
            .await
            .map_err(|_| AdminError::Unavailable(format!("sink {sink} has stopped")))?;
        control_reply(sink, rx).await
    }

    /// Delivers a sink's dead letters again (all, or the one with `id`); returns how many
    /// were delivered and how many are still held. The events keep their seqs (receivers that
    /// de-duplicate by seq may see them after later ones).
    pub async fn replay_dead_letters(
        &self,
        sink: &str,
        id: Option<u64>,
    ) -> Result<(usize, usize), AdminError> {
        let control = self.sink_control(sink).await?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        control
            .send(Control::Replay(id, tx))
            .await
            .map_err(|_| AdminError::Unavailable(format!("sink {sink} has stopped")))?;
        control_reply(sink, rx)
            .await?
            .map_err(AdminError::InvalidField)
    }

    pub(super) async fn sink_control(
        &self,
        sink: &str,
    ) -> Result<tokio::sync::mpsc::Sender<Control>, AdminError> {
        self.sinks
            .lock()
            .await
            .iter()
            .find(|s| s.name == sink)
            .map(|s| s.control.clone())
            .ok_or_else(|| AdminError::InvalidField(format!("unknown sink {sink}")))
    }
}
