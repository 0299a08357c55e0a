//! Admin operations as the surfaces take them: the protocol's `admin` frame (TCP and
//! WebSocket) and the REST endpoints both run [`admin_op`].

use serde_json::Value;
use vigil_actors::{AdminError, AdminRequest};

use crate::protocol::{self, ErrorCode};
use crate::serve::hub::Hub;
use crate::serve::{connectionless, forward};

/// Runs one admin operation (`op` and its `args`, as the protocol's `admin` frame and the
/// REST endpoints give them) and returns its data, or the protocol's error code and message.
/// On a cluster, a write about an agent another node owns is answered by that node, and a
/// sink's replay by the node that delivers the sinks.
pub async fn admin_op(hub: &Hub, op: &str, mut args: Value) -> Result<Value, (ErrorCode, String)> {
    if let Some(answer) = forward::to_owner(hub, op, &args).await {
        return answer;
    }
    if let Some(answer) = forward::to_keeper(hub, op, &args).await {
        return answer;
    }
    let sent_on = args.clone();
    if let Some(a) = args.as_object_mut() {
        a.remove(forward::FORWARDED_BY);
    }
    let rt = hub.runtime();
    // The outbound channels are the runtime's, not the actors': answered here.
    match op {
        "sinks" => return to_value(rt.sinks().await),
        "dead_letters" => {
            let sink = sink_arg(op, &args)?;
            return to_value(rt.dead_letters(&sink).await.map_err(admin_error)?);
        }
        "replay" => {
            let sink = sink_arg(op, &args)?;
            let id = match &args["id"] {
                Value::Null => None,
                v => Some(v.as_u64().ok_or_else(|| {
                    (
                        ErrorCode::InvalidField,
                        "admin replay: id must be a dead letter's id".to_string(),
                    )
                })?),
            };
            let (delivered, held) = rt
                .replay_dead_letters(&sink, id)
                .await
                .map_err(admin_error)?;
            return Ok(serde_json::json!({ "sink": sink, "delivered": delivered, "held": held }));
        }
        _ => {}
    }
    // An agent's request another node sent on (never taken from anyone else).
    if connectionless::FORWARDED_OPS.contains(&op) && sent_on.get(forward::FORWARDED_BY).is_some() {
        return connectionless::run(hub, op, &args, true).await;
    }
    let req = protocol::admin_request(op, args)?;
    let stats = matches!(req, AdminRequest::Stats);
    let res = rt.admin(req).await.map_err(admin_error)?;
    let missed = forward::to_peers(hub, op, &sent_on).await;
    if !missed.is_empty() {
        let missed: Vec<String> = missed
            .into_iter()
            .map(|(node, why)| format!("node {node}: {why}"))
            .collect();
        return Err((
            ErrorCode::Internal,
            format!(
                "{op} took effect on this node but not on every node of the cluster ({})",
                missed.join("; ")
            ),
        ));
    }
    let mut v = to_value(res)?;
    if stats {
        v["sinks"] = to_value(rt.sinks().await)?;
    }
    Ok(v)
}

fn to_value(v: impl serde::Serialize) -> Result<Value, (ErrorCode, String)> {
    serde_json::to_value(v).map_err(|e| (ErrorCode::Internal, e.to_string()))
}

fn sink_arg(op: &str, args: &Value) -> Result<String, (ErrorCode, String)> {
    match &args["sink"] {
        Value::String(s) => Ok(s.clone()),
        Value::Null => Err((
            ErrorCode::MissingField,
            format!("admin {op}: missing field `sink`"),
        )),
        _ => Err((
            ErrorCode::InvalidField,
            format!("admin {op}: sink must be a string"),
        )),
    }
}

fn admin_error(e: AdminError) -> (ErrorCode, String) {
    (ErrorCode::from(&e), e.to_string())
}
