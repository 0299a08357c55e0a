//! What an agent held by no connection may do after registering: beat, report a job, leave.
//! The HTTP agent routes take these requests; on a cluster, a node that receives one for an
//! agent another node supervises sends it there (an `admin` frame of the internal operation
//! `heartbeat`, `job` or `deregister`, marked `forwarded_by`), so that a cron job behind a
//! load balancer may reach any node. Both paths run the functions here, and answer with the
//! protocol's error codes.

use std::sync::atomic::Ordering;

use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use vigil_actors::{AdminError, AgentHandle, AgentId, Beat, BeatError, JobReport};

use crate::protocol::limits::{check_activity, check_job};
use crate::protocol::{self, ErrorCode};
use crate::serve::forward;
use crate::serve::hub::Hub;
use crate::serve::owners::Unavailable;

/// A refusal: the protocol's code and why.
pub(crate) type Refusal = (ErrorCode, String);

/// The operations another node may forward here, with the request's fields as `args`.
pub(crate) const FORWARDED_OPS: [&str; 3] = ["heartbeat", "job", "deregister"];

/// Runs `op` (one of [`FORWARDED_OPS`]) for the agent `body["id"]` (`body`: the request's
/// JSON object). `forwarded`: another node sent it (it is never sent on again).
pub(crate) async fn run(
    hub: &Hub,
    op: &str,
    body: &Value,
    forwarded: bool,
) -> Result<Value, Refusal> {
    match op {
        "heartbeat" => heartbeat(hub, body, forwarded).await,
        "job" => job(hub, body, forwarded).await,
        "deregister" => deregister(hub, body, forwarded).await,
        other => Err((
            ErrorCode::Internal,
            format!("{other} is not an agent's request"),
        )),
    }
}

/// A heartbeat, with its status, metrics and activity.
async fn heartbeat(hub: &Hub, body: &Value, forwarded: bool) -> Result<Value, Refusal> {
    let h: protocol::Heartbeat = frame("heartbeat", body)?;
    if let Some(Err(msg)) = h.activity.as_deref().map(|a| check_activity(a, None)) {
        return Err((ErrorCode::InvalidField, msg));
    }
    let handle = match agent_handle(hub, &h.id, "heartbeat", body, forwarded).await? {
        Found::Here(h) => h,
        Found::Answered(a) => return Ok(a),
    };
    let beat = Beat {
        reported: h.status,
        metrics: h.metrics,
    };
    handle
        .heartbeat(beat)
        .map_err(|e| beat_failed(hub, &h.id, e))?;
    hub.heartbeats.fetch_add(1, Ordering::Relaxed);
    if let Some(a) = h.activity {
        hub.runtime()
            .report_activity_within(&hub.reports, &h.id, a, None)
            .await
            .map_err(|e| beat_failed(hub, &h.id, e))?;
    }
    Ok(json!({ "id": h.id.as_str() }))
}

/// A report on one of the agent's jobs.
async fn job(hub: &Hub, body: &Value, forwarded: bool) -> Result<Value, Refusal> {
    let j: protocol::Job = frame("job", body)?;
    check_job(&j).map_err(|msg| (ErrorCode::InvalidField, msg))?;
    if let Found::Answered(a) = agent_handle(hub, &j.id, "job", body, forwarded).await? {
        return Ok(a);
    }
    let report = JobReport {
        job: j.job.clone(),
        state: j.state,
        progress: j.progress,
        error: j.error,
    };
    hub.runtime()
        .report_job_within(&hub.reports, &j.id, report)
        .await
        .map_err(|e| beat_failed(hub, &j.id, e))?;
    Ok(json!({ "id": j.id.as_str(), "job": j.job }))
}

/// The agent leaves (`left`); answered once its `deregistered` event is durable.
async fn deregister(hub: &Hub, body: &Value, forwarded: bool) -> Result<Value, Refusal> {
    let d: protocol::Deregister = frame("deregister", body)?;
    if let Found::Answered(a) = agent_handle(hub, &d.id, "deregister", body, forwarded).await? {
        return Ok(a);
    }
    match hub.runtime().deregister(&d.id).await {
        Ok(_) => {
            hub.owners.forget_http(&d.id);
            Ok(json!({ "id": d.id.as_str() }))
        }
        Err(AdminError::UnknownAgent(_)) => {
            hub.owners.forget_http(&d.id);
            Err(not_registered())
        }
        Err(e) => Err(((&e).into(), e.to_string())),
    }
}

/// Where a request for an agent goes.
enum Found {
    /// This node supervises the agent, and no connection holds it: act through its handle.
    Here(AgentHandle),
    /// Another node supervises it and took the request: its answer.
    Answered(Value),
}

/// The handle through which a request acts on agent `id`, the answer of the node that
/// supervises it, or why neither.
async fn agent_handle(
    hub: &Hub,
    id: &AgentId,
    op: &str,
    body: &Value,
    forwarded: bool,
) -> Result<Found, Refusal> {
    let rt = hub.runtime();
    match hub.owners.over_http(rt, id) {
        Ok(h) => Ok(Found::Here(h)),
        Err(Unavailable::Held) => Err((
            ErrorCode::NotOwner,
            "a live connection holds this agent (register it with takeover to take it)".into(),
        )),
        Err(Unavailable::Unknown) => match rt.owned_elsewhere(id) {
            Some(node) if !forwarded => {
                let what = format!("supervises agent {id}");
                forward::answer_of(hub, &node, &what, op, body)
                    .await
                    .map(Found::Answered)
            }
            // A view a moment behind the sender's: it may have moved again.
            Some(node) => Err((
                ErrorCode::NotOwner,
                format!("node {node} of the cluster supervises this agent"),
            )),
            None => Err(not_registered()),
        },
    }
}

/// A body read as the protocol's frame `kind`, with its decoding errors (`missing_field`,
/// `invalid_field`).
pub(crate) fn frame<T: DeserializeOwned>(kind: &str, body: &Value) -> Result<T, Refusal> {
    T::deserialize(body).map_err(|e| {
        let msg = e.to_string();
        let code = match msg.starts_with("missing field") {
            true => ErrorCode::MissingField,
            false => ErrorCode::InvalidField,
        };
        (code, format!("{kind}: {msg}"))
    })
}

fn not_registered() -> Refusal {
    (
        ErrorCode::NotRegistered,
        "this agent is not registered (POST /api/v1/agents registers it)".into(),
    )
}

/// A beat or report the runtime did not take: the agent left meanwhile (`not_registered`),
/// was registered again (`not_owner`), or its actor is restarting (`internal`).
fn beat_failed(hub: &Hub, id: &AgentId, e: BeatError) -> Refusal {
    if matches!(e, BeatError::Superseded(_)) {
        return (ErrorCode::NotOwner, e.to_string());
    }
    if hub.runtime().agent(id).is_none() {
        hub.owners.forget_http(id);
        return not_registered();
    }
    ((&e).into(), e.to_string())
}
