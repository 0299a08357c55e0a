//! Frames from the server, as a client reads them.

use serde::Deserialize;
use serde_json::Value;

/// The server's `welcome`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Welcome {
    pub protocol: u64,
    pub session: String,
    pub server: String,
    pub heartbeat_interval_ms: u64,
    pub time: String,
}

/// A frame from the server.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    Welcome(Welcome),
    Registered {
        id: String,
        status: String,
        heartbeat_interval_ms: u64,
        incarnation: u64,
        #[serde(rename = "ref", default)]
        reference: Option<Value>,
    },
    Ack {
        #[serde(rename = "ref", default)]
        reference: Option<Value>,
    },
    Pong {
        time: String,
        #[serde(rename = "ref", default)]
        reference: Option<Value>,
    },
    Deregistered {
        id: String,
        #[serde(rename = "ref", default)]
        reference: Option<Value>,
    },
    Evicted {
        id: String,
        reason: String,
    },
    Error {
        code: String,
        message: String,
        #[serde(rename = "ref", default)]
        reference: Option<Value>,
    },
    /// A frame of another role or a later version (`event`, `snapshot`, `command`, ...).
    #[serde(other)]
    Other,
}
