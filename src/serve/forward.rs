//! Admin writes about an agent another node of a cluster owns are sent to that node, so an
//! operator may ask any node: the owner's agent actor makes the change, and its answer is the
//! caller's. So are the requests of an agent held by no connection (`connectionless`). A
//! sink's `replay` goes to the node that delivers the sinks. A policy change is made on every
//! node. A registration without `takeover` of an agent another node owns asks
//! that node whether it holds a live connection for it (only that makes a conflict, as on one
//! node).
//!
//! The forwarded request is the same `admin` frame, over the owner's agent listener (the
//! address its lease advertises; over TLS when the listeners take it, trusting
//! `[cluster] peer_ca`), with the first admin token of `[auth]`. It carries
//! `forwarded_by`: a node never forwards a request forwarded to it (a view that is a moment
//! behind answers `unknown_agent` rather than sending it round).

use std::time::Duration;

use serde_json::{json, Value};
use vigil_actors::AgentId;

use crate::client::{ClientConfig, Connection};
use crate::protocol::{ErrorCode, Role, ServerFrame};
use crate::serve::hub::Hub;
use crate::serve::owners::Claimant;

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
    Some(answer_of(hub, &owner, &format!("owns agent {id}"), op, args).await)
}

/// When `op` is a sink's `replay` and another node delivers the sinks (and `args` was not
/// forwarded here already), that node's answer to it.
pub(crate) async fn to_keeper(
    hub: &Hub,
    op: &str,
    args: &Value,
) -> Option<Result<Value, (ErrorCode, String)>> {
    if op != "replay" || args.get(FORWARDED_BY).is_some() {
        return None;
    }
    let rt = hub.runtime();
    if rt.keeps() {
        return None;
    }
    let keeper = rt.keeper().filter(|k| Some(k.as_str()) != rt.node_id())?;
    Some(answer_of(hub, &keeper, "delivers the sinks", op, args).await)
}

/// Node `to`'s answer to `op` (`to` being the node that `what`), within [`LIMIT`].
pub(crate) async fn answer_of(
    hub: &Hub,
    to: &str,
    what: &str,
    op: &str,
    args: &Value,
) -> Result<Value, (ErrorCode, String)> {
    let me = hub.runtime().node_id().unwrap_or("?").to_string();
    match tokio::time::timeout(LIMIT, forward(hub, &me, to, what, op, args)).await {
        Ok(r) => r,
        Err(_) => Err((
            ErrorCode::Internal,
            format!("node {to}, which {what}, did not answer within {LIMIT:?}"),
        )),
    }
}

/// After `op` took effect on this node: when it is a change every node makes for itself
/// (`set_policy`) and was not forwarded here, the same change sent to every other live node;
/// the nodes that did not make it, with why.
pub(crate) async fn to_peers(hub: &Hub, op: &str, args: &Value) -> Vec<(String, String)> {
    if op != "set_policy" || args.get(FORWARDED_BY).is_some() {
        return Vec::new();
    }
    let rt = hub.runtime();
    let me = rt.node_id().unwrap_or("?").to_string();
    let sends = rt.live_peers().into_iter().map(|peer| {
        let me = me.clone();
        async move {
            let r =
                tokio::time::timeout(LIMIT, forward(hub, &me, &peer, "is live", op, args)).await;
            match r {
                Ok(Ok(_)) => None,
                Ok(Err((_, why))) => Some((peer, why)),
                Err(_) => Some((peer, format!("no answer within {LIMIT:?}"))),
            }
        }
    });
    futures::future::join_all(sends)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// How long a registration waits for the owner to say whether it holds the agent.
const ASK_LIMIT: Duration = Duration::from_secs(1);

/// A registration of agent `id` by `by` (over TCP or HTTP), claimed in the listeners' table
/// if it may go ahead; the `conflict` message if not. Without `takeover` it is refused when a
/// live connection holds the agent: one of this node's, or, on a cluster, one of the node
/// that owns it (or that node cannot be asked whether it holds one).
pub(crate) async fn claim_registration(
    hub: &Hub,
    id: &AgentId,
    by: Claimant<'_>,
    takeover: bool,
) -> Result<(), String> {
    if !takeover {
        if let Some(msg) = held_elsewhere(hub, id).await {
            return Err(msg);
        }
    }
    hub.owners.claim(id, by, takeover).map_err(|_| {
        "a live connection holds this agent (register with takeover to take it)".to_string()
    })
}

/// When another node of the cluster owns agent `id` and holds a live connection for it (or
/// cannot be asked whether it does), the `conflict` message naming that node.
async fn held_elsewhere(hub: &Hub, id: &AgentId) -> Option<String> {
    let node = hub.runtime().owned_elsewhere(id)?;
    let why = match owner_holds(hub, &node, id).await {
        Some(false) => return None,
        Some(true) => "holds a live connection for it",
        None => "owns it and could not be asked whether it holds a connection",
    };
    Some(format!(
        "node {node} of the cluster {why} (register with takeover to take it)"
    ))
}

/// Whether node `owner` holds a live connection for agent `id` (its own `get`, forwarded);
/// `None` when it could not be asked or did not answer within [`ASK_LIMIT`] (it may be dead:
/// its agents are adopted within a lease).
async fn owner_holds(hub: &Hub, owner: &str, id: &AgentId) -> Option<bool> {
    let me = hub.runtime().node_id().unwrap_or("?").to_string();
    let args = json!({ "id": id.as_str() });
    let asked = forward(hub, &me, owner, "owns the agent", "get", &args);
    match tokio::time::timeout(ASK_LIMIT, asked).await {
        Ok(Ok(record)) => record["connected"].as_bool(),
        _ => None,
    }
}

/// Sends `op` to node `to` (the node that `what`, for the error) as node `me`; its answer.
async fn forward(
    hub: &Hub,
    me: &str,
    to: &str,
    what: &str,
    op: &str,
    args: &Value,
) -> Result<Value, (ErrorCode, String)> {
    let failed = |why: String| {
        (
            ErrorCode::Internal,
            format!("node {to}, which {what}, could not be sent the request: {why}"),
        )
    };
    let addr = hub
        .runtime()
        .node_address(to)
        .ok_or_else(|| failed("its address is not known yet".into()))?;
    let mut cfg = ClientConfig::new(addr.clone());
    if let Some(peers) = hub.peers() {
        cfg.token = peers.token.clone();
        cfg.tls = peers.tls.clone().map(|mut tls| {
            tls.server_name = peers
                .name
                .clone()
                .unwrap_or_else(|| crate::client::host_of(&addr).to_string());
            tls
        });
    }
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
