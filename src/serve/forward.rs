//! Admin writes about an agent another node of a cluster owns are sent to that node, so an
//! operator may ask any node: the owner's agent actor makes the change, and its answer is the
//! caller's.
//!
//! The forwarded request is the same `admin` frame, over the owner's agent listener (the
//! address its lease advertises), with the first admin token of `[auth]`. It carries
//! `forwarded_by`: a node never forwards a request forwarded to it (a view that is a moment
//! behind answers `unknown_agent` rather than sending it round).

use std::time::Duration;

use serde_json::{json, Value};
use vigil_actors::AgentId;

use crate::client::{ClientConfig, Connection};
use crate::protocol::{ErrorCode, Role, ServerFrame};
use crate::serve::hub::Hub;

/// The argument that marks a forwarded request (and names the node that sent it).
pub(crate) const FORWARDED_BY: &str = "forwarded_by";

/// How long the owner has to answer.
const LIMIT: Duration = Duration::from_secs(15);

/// When `op` is a write about an agent another node owns (and `args` was not forwarded here
/// already), that node's answer to it.
pub(crate) async fn to_owner(
    hub: &Hub,
    op: &str,
    args: &Value,
) -> Option<Result<Value, (ErrorCode, String)>> {
    if !matches!(op, "evict" | "set_status" | "maintenance") || args.get(FORWARDED_BY).is_some() {
        return None;
    }
    let rt = hub.runtime();
    let id = AgentId::new(args["id"].as_str()?).ok()?;
    if rt.supervises(&id) {
        return None;
    }
    let owner = rt.owned_elsewhere(&id)?;
    let me = rt.node_id().unwrap_or("?").to_string();
    Some(
        match tokio::time::timeout(LIMIT, forward(hub, &me, &owner, op, args)).await {
            Ok(r) => r,
            Err(_) => Err((
                ErrorCode::Internal,
                format!("node {owner}, which owns agent {id}, did not answer within {LIMIT:?}"),
            )),
        },
    )
}

async fn forward(
    hub: &Hub,
    me: &str,
    owner: &str,
    op: &str,
    args: &Value,
) -> Result<Value, (ErrorCode, String)> {
    let failed = |why: String| {
        (
            ErrorCode::Internal,
            format!("node {owner} owns this agent, and the request could not be sent to it: {why}"),
        )
    };
    let addr = hub
        .runtime()
        .node_address(owner)
        .ok_or_else(|| failed("its address is not known yet".into()))?;
    let mut cfg = ClientConfig::new(addr);
    cfg.token = hub.peer_token().map(str::to_string);
    cfg.client_name = format!("vigil node {me}");
    let mut conn = Connection::connect(&cfg, Role::Admin)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let mut args = args.clone();
    args[FORWARDED_BY] = json!(me);
    conn.send(&json!({"type": "admin", "op": op, "args": args, "ref": 1}))
        .await
        .map_err(|e| failed(e.to_string()))?;
    loop {
        match conn.recv().await.map_err(|e| failed(e.to_string()))? {
            Some(r) => match r.frame {
                ServerFrame::Result { data, .. } => return Ok(data),
                ServerFrame::Error { code, message } => return Err((code, message)),
                _ => continue,
            },
            None => return Err(failed("it closed the connection".into())),
        }
    }
}
