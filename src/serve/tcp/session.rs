//! A connection's session after the handshake: each frame handled by its role, the agents it
//! owns, a monitor's subscription, an admin's operations.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;
use smol_str::SmolStr;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::Instrument;
use vigil_actors::{
    AgentHandle, AgentId, Beat, BeatError, InputHold, JobReport, ReportQuota, Status,
};

use super::applied::Applied;
use super::bucket::Bucket;
use super::out::Out;
use super::Shared;
use crate::protocol::limits::{check_activity, check_job};
use crate::protocol::{
    self, error_line, ClientFrame, ErrorCode, EvictedReason, Frame, Role, ServerFrame,
};
use crate::serve::forward;
use crate::serve::monitoring::Monitoring;
use crate::serve::owners::{Claimant, Conn, Control};

pub(super) struct Session {
    pub(super) shared: Arc<Shared>,
    pub(super) conn: u64,
    pub(super) role: Role,
    pub(super) out: mpsc::Sender<Out>,
    /// Looked up on every heartbeat; SipHash, as the ids are the client's choice. Keyed by
    /// the id's text, held in the table itself when short (as most ids are): a lookup reads
    /// no other memory to compare it.
    pub(super) owned: HashMap<SmolStr, AgentHandle>,
    pub(super) bad: u32,
    pub(super) bucket: Option<Bucket>,
    /// The monitor side: ping, subscribe, unsubscribe, admin.
    pub(super) monitoring: Monitoring<String>,
    /// Heartbeats taken since the shared counter was last added to.
    pub(super) beats: u64,
    /// The connection asked for `beats` at hello (`FEATURE_BEATS`).
    pub(super) batched: bool,
    /// Bounds the activity and job reports this connection has waiting for the registry.
    pub(super) reports: ReportQuota,
    /// How far this connection's input has been applied: its agents' deadlines wait for it.
    pub(super) applied: Arc<Applied>,
}

impl Session {
    async fn send(&self, line: String) {
        let _ = self.out.send(line.into()).await;
    }

    async fn error(&self, code: ErrorCode, msg: &str, reference: &Option<Value>) {
        self.send(error_line(code, msg, reference.as_ref())).await;
    }

    /// Handles one item; `false` closes the connection.
    pub(super) async fn handle(
        &mut self,
        item: Result<Option<Frame>, protocol::FrameError>,
        ctl: &mpsc::UnboundedSender<Control>,
    ) -> bool {
        let frame = match item {
            Ok(None) => return true,
            Ok(Some(f)) => f,
            Err(e) => return self.bad_frame(e.code, &e.message, &e.reference).await,
        };
        if let Some(b) = &mut self.bucket {
            let cost = match &frame.body {
                ClientFrame::Beats(beats) => beats.ids.len(),
                _ => 1,
            };
            if !b.take(cost) {
                let msg = format!(
                    "more than {} frames (or heartbeats) per second; frame refused",
                    self.shared.cfg.rate_limit
                );
                return self
                    .bad_frame(ErrorCode::RateLimited, &msg, &frame.reference)
                    .await;
            }
        }
        self.bad = 0;
        let reference = frame.reference;
        if let Some(needed) = frame.body.role() {
            if needed != self.role {
                let msg = format!("this frame needs the {needed:?} role").to_lowercase();
                self.error(ErrorCode::Forbidden, &msg, &reference).await;
                return true;
            }
        }
        match frame.body {
            ClientFrame::Hello(_) => {
                self.error(ErrorCode::InvalidField, "already said hello", &reference)
                    .await
            }
            ClientFrame::Register(r) => self.register(r, reference, ctl).await,
            ClientFrame::Heartbeat(h) => {
                if let Some(Err(msg)) = h.activity.as_deref().map(|a| check_activity(a, None)) {
                    self.error(ErrorCode::InvalidField, &msg, &reference).await;
                    return true;
                }
                let beat = Beat {
                    reported: h.status,
                    metrics: h.metrics,
                };
                match self
                    .owned
                    .get(h.id.as_str())
                    .map(|handle| handle.heartbeat(beat))
                {
                    Some(Ok(())) => {
                        self.beats += 1;
                        if let Some(a) = h.activity {
                            let rt = &self.shared.rt;
                            let _ = rt
                                .report_activity_within(&self.reports, &h.id, a, None)
                                .await;
                        }
                        self.ack(&reference).await
                    }
                    Some(Err(e)) => self.beat_failed(&h.id, e, &reference).await,
                    None => self.not_owned(&h.id, &reference).await,
                }
            }
            ClientFrame::Beats(b) => self.beats(b, reference).await,
            ClientFrame::Activity(a) => {
                if !self.owns(&a.id) {
                    self.not_owned(&a.id, &reference).await;
                } else if let Err(msg) = check_activity(&a.activity, a.detail.as_deref()) {
                    self.error(ErrorCode::InvalidField, &msg, &reference).await;
                } else {
                    let rt = &self.shared.rt;
                    let (activity, detail) = (a.activity, a.detail);
                    match rt
                        .report_activity_within(&self.reports, &a.id, activity, detail)
                        .await
                    {
                        Ok(()) => self.ack(&reference).await,
                        Err(e) => self.beat_failed(&a.id, e, &reference).await,
                    }
                }
            }
            ClientFrame::Job(j) => {
                if !self.owns(&j.id) {
                    self.not_owned(&j.id, &reference).await;
                } else if let Err(msg) = check_job(&j) {
                    self.error(ErrorCode::InvalidField, &msg, &reference).await;
                } else {
                    let report = JobReport {
                        job: j.job,
                        state: j.state,
                        progress: j.progress,
                        error: j.error,
                    };
                    match self
                        .shared
                        .rt
                        .report_job_within(&self.reports, &j.id, report)
                        .await
                    {
                        Ok(()) => self.ack(&reference).await,
                        Err(e) => self.beat_failed(&j.id, e, &reference).await,
                    }
                }
            }
            ClientFrame::Deregister(d) => {
                if !self.owns(&d.id) {
                    self.not_owned(&d.id, &reference).await;
                    return true;
                }
                match self.shared.rt.deregister(&d.id).await {
                    Ok(_) => {
                        self.disown(&d.id);
                        let id = d.id.as_str().to_owned();
                        let deregistered = ServerFrame::Deregistered { id };
                        self.send(deregistered.line(reference.as_ref())).await;
                    }
                    Err(e) => {
                        self.error(ErrorCode::Internal, &e.to_string(), &reference)
                            .await
                    }
                }
            }
            monitor @ (ClientFrame::Ping
            | ClientFrame::Subscribe(_)
            | ClientFrame::Unsubscribe
            | ClientFrame::Admin(_)) => {
                // The role was checked above; a full writer closes nothing here (the reader
                // ends the connection).
                let _ = self.monitoring.handle(monitor, &reference, true).await;
            }
        }
        true
    }

    /// Answers a refused frame; `false` (close) after `max_bad_frames` in a row.
    async fn bad_frame(&mut self, code: ErrorCode, msg: &str, reference: &Option<Value>) -> bool {
        self.bad += 1;
        tracing::debug!(%code, error = msg, in_a_row = self.bad, "frame refused");
        self.error(code, msg, reference).await;
        if self.bad >= self.shared.cfg.max_bad_frames {
            self.error(
                ErrorCode::BadFrame,
                "too many bad frames in a row; closing",
                &None,
            )
            .await;
            return false;
        }
        true
    }

    /// Acknowledges a frame that carried a `ref`.
    async fn ack(&self, reference: &Option<Value>) {
        if reference.is_some() {
            self.send(ServerFrame::Ack.line(reference.as_ref())).await
        }
    }

    /// Answers a frame about an agent this connection does not own.
    async fn not_owned(&self, id: &AgentId, reference: &Option<Value>) {
        let (code, msg) = self.not_owned_error(id.as_str());
        self.error(code, msg, reference).await;
    }

    fn not_owned_error(&self, id: &str) -> (ErrorCode, &'static str) {
        match self.shared.hub.owners.held(id) {
            true => (ErrorCode::NotOwner, "another connection owns this agent"),
            false => (
                ErrorCode::NotRegistered,
                "this agent is not registered on this connection",
            ),
        }
    }

    /// A `beats` frame: each id's heartbeat as a plain `heartbeat` would take it; an error
    /// for each id refused (its message starting with the id), an `ack` (with `ref`) when none
    /// was.
    async fn beats(&mut self, b: crate::protocol::Beats, reference: Option<Value>) {
        if !self.batched {
            let msg = "beats: ask for the feature at hello (\"features\": [\"beats\"])";
            self.error(ErrorCode::UnknownType, msg, &reference).await;
            return;
        }
        let mut refused = false;
        // The frame's beats came together: one reading of the clock for all of them (an
        // error written back between two of them does not make the later ones later).
        let now = Instant::now();
        for id in b.ids.iter() {
            let (code, msg) = match self.owned.get(id) {
                Some(handle) => match handle.heartbeat_at(Beat::healthy(), now) {
                    Ok(()) => {
                        self.beats += 1;
                        continue;
                    }
                    Err(e) => {
                        let id = handle.id().clone();
                        self.beat_failure(&id, e)
                    }
                },
                None => {
                    let (code, msg) = self.not_owned_error(id);
                    (code, msg.to_string())
                }
            };
            refused = true;
            self.error(code, &format!("{id}: {msg}"), &reference).await;
        }
        if !refused {
            self.ack(&reference).await;
        }
    }

    /// Whether this connection owns `id` now: it registered it, and no later registration
    /// (a takeover whose notice has not come yet) superseded that.
    fn owns(&mut self, id: &AgentId) -> bool {
        match self.owned.get(id.as_str()) {
            Some(h) if h.is_current() => true,
            Some(_) => {
                self.disown(id);
                false
            }
            None => false,
        }
    }

    /// A report the runtime did not take: the agent's actor is gone (it left, was evicted, or
    /// is restarting after a crash).
    async fn beat_failed(&mut self, id: &AgentId, e: BeatError, reference: &Option<Value>) {
        let (code, msg) = self.beat_failure(id, e);
        self.error(code, &msg, reference).await
    }

    fn beat_failure(&mut self, id: &AgentId, e: BeatError) -> (ErrorCode, String) {
        let mut code = ErrorCode::from(&e);
        if let BeatError::Superseded(_) = e {
            // Taken over (its notice may not have come yet): no longer this connection's
            // (nor its claim, should a registration that claimed nothing have superseded it).
            self.disown(id);
        } else if self.shared.rt.agent(id).is_none() {
            // It left while its frame was on the way.
            self.disown(id);
            code = ErrorCode::NotRegistered;
        }
        (code, e.to_string())
    }

    async fn register(
        &mut self,
        r: protocol::Register,
        reference: Option<Value>,
        ctl: &mpsc::UnboundedSender<Control>,
    ) {
        let id = r.id.clone();
        if !self.owned.contains_key(id.as_str())
            && self.owned.len() >= self.shared.cfg.max_agents_per_connection
        {
            let msg = format!(
                "at most {} agents per connection",
                self.shared.cfg.max_agents_per_connection
            );
            self.error(ErrorCode::Overloaded, &msg, &reference).await;
            return;
        }
        // Ownership: claim the id, or refuse, or take it over (the holder is told). On a
        // cluster, a live connection on the node that owns it counts as one here.
        let me = Conn {
            id: self.conn,
            tx: ctl.clone(),
        };
        // The frames read after this one (this connection's other agents' beats among them)
        // wait while the registration is made, behind every other connection's: they are
        // held input, and no deadline passes for want of them (docs/decisions.md).
        let held = match self.owned.is_empty() {
            true => InputHold::none(),
            false => self.shared.rt.hold_input(),
        };
        let claimed = forward::claim_registration(
            &self.shared.hub,
            &id,
            Claimant::Connection(&me),
            r.takeover,
        )
        .await;
        if let Err(msg) = claimed {
            drop(held);
            self.error(ErrorCode::Conflict, &msg, &reference).await;
            return;
        }
        let reg = r.registration(false);
        let registered = self.shared.rt.register_sequenced(reg).await;
        drop(held);
        match registered {
            Ok((handle, seq)) => {
                let reply = ServerFrame::Registered {
                    id: id.as_str().to_owned(),
                    status: Status::Online,
                    heartbeat_interval_ms: handle.heartbeat_interval().as_millis() as u64,
                    incarnation: handle.incarnation(),
                };
                handle.attach_source(self.applied.clone());
                self.owned.insert(SmolStr::new(id.as_str()), handle);
                // `registered` goes out once the event is durable; the connection's other
                // frames (its other agents' beats, more registrations) are served meanwhile.
                let (rt, out) = (self.shared.rt.clone(), self.out.clone());
                let answer = async move {
                    let text = match rt.wait_durable(seq).await {
                        Ok(()) => reply.line(reference.as_ref()),
                        Err(e) => error_line((&e).into(), &e.to_string(), reference.as_ref()),
                    };
                    let _ = out.send(text.into()).await;
                };
                tokio::spawn(answer.in_current_span());
            }
            Err(e) => {
                if !self.owned.contains_key(id.as_str()) {
                    self.disown(&id);
                }
                self.error((&e).into(), &e.to_string(), &reference).await;
            }
        }
    }

    pub(super) async fn control(&mut self, ctl: Control) {
        match ctl {
            Control::TakenOver(id) => {
                if self.owned.remove(id.as_str()).is_some() {
                    let evicted = ServerFrame::Evicted {
                        id: id.as_str().to_owned(),
                        reason: EvictedReason::TakenOver,
                    };
                    self.send(evicted.line(None)).await;
                }
            }
            Control::Evicted(id, seq) => {
                // An eviction before this connection's registration of the agent (it came
                // back at once) is not about the registration it holds now.
                let current = self.owned.get(id.as_str()).map(|h| h.registered_seq());
                if current.is_some_and(|registered| registered < seq) {
                    self.disown(&id);
                    let evicted = ServerFrame::Evicted {
                        id: id.as_str().to_owned(),
                        reason: EvictedReason::Evicted,
                    };
                    self.send(evicted.line(None)).await;
                }
            }
        }
    }

    /// Drops this connection's claim on `id` (if it still holds it).
    fn disown(&mut self, id: &AgentId) {
        self.owned.remove(id.as_str());
        self.shared.hub.owners.release(id, self.conn);
    }

    /// The connection is gone: its claims are released and, unless the listener is stopping,
    /// its agents are disconnected (their deadlines run on).
    pub(super) fn closed(&mut self, disconnect: bool) {
        self.monitoring.end();
        // Only an agent this connection still holds is disconnected: after a takeover the
        // new holder's agent stays as it is (whether or not the notice came).
        let owners = &self.shared.hub.owners;
        let owned = self.owned.drain().map(|(_, h)| (h.id().clone(), h));
        owners.release_all(self.conn, owned, |handle| {
            if disconnect {
                let _ = handle.disconnected();
            }
        });
    }
}
