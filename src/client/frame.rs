//! Frames from the server, as a client reads them.

use serde::Deserialize;
use serde_json::Value;

/// The server's `welcome`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Welcome {
    /// The protocol version the server speaks.
    pub protocol: u64,
    /// The session's id.
    pub session: String,
    /// The server's name and version (e.g. `vigil/0.1.0`).
    pub server: String,
    /// The default heartbeat interval, in ms.
    pub heartbeat_interval_ms: u64,
    /// The server's clock (RFC 3339, UTC, milliseconds).
    pub time: String,
}

/// A frame from the server.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// The answer to `hello`.
    Welcome(Welcome),
    /// An agent is registered.
    Registered {
        /// The agent's id.
        id: String,
        /// The agent's status now (e.g. `online`).
        status: String,
        /// The heartbeat interval the server holds the agent to, in ms.
        heartbeat_interval_ms: u64,
        /// The registration's number: 1 the first time, one more at each registration since.
        incarnation: u64,
        /// The `ref` of the frame answered; `None` if it had none.
        #[serde(rename = "ref", default)]
        reference: Option<Value>,
    },
    /// A frame with a `ref` was taken.
    Ack {
        /// The `ref` of the frame answered.
        #[serde(rename = "ref", default)]
        reference: Option<Value>,
    },
    /// The answer to `ping`.
    Pong {
        /// The server's clock (RFC 3339, UTC, milliseconds).
        time: String,
        /// The `ref` of the `ping`; `None` if it had none.
        #[serde(rename = "ref", default)]
        reference: Option<Value>,
    },
    /// An agent left at this connection's request.
    Deregistered {
        /// The agent's id.
        id: String,
        /// The `ref` of the `deregister`; `None` if it had none.
        #[serde(rename = "ref", default)]
        reference: Option<Value>,
    },
    /// The connection lost an agent; frames for it now get `not_registered`.
    Evicted {
        /// The agent's id.
        id: String,
        /// Why: `taken_over` (another connection registered it) or `evicted` (an operator).
        reason: String,
    },
    /// A frame was refused, or something went wrong.
    Error {
        /// The error code (`invalid_field`, `not_owner`, ...).
        code: String,
        /// What was wrong, for a person.
        message: String,
        /// The `ref` of the frame refused; `None` if it had none.
        #[serde(rename = "ref", default)]
        reference: Option<Value>,
    },
    /// A frame of another role or a later version (`event`, `snapshot`, `command`, ...).
    #[serde(other)]
    Other,
}
