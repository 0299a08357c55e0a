//! The frames the server sends (`docs/protocol.md`): one type, written by the TCP listener, the
//! WebSocket and the monitor streams, and read by [`crate::client`] and `vigil watch`.
//!
//! A frame is written as one JSON object with its keys in alphabetical order, `type` and `ref`
//! among them: it becomes a [`Value`] first (whose map keeps its keys sorted), then text.
//! `event` frames are the exception: they are the hottest frame, serialized once per event
//! straight to text ([`ServerFrame::event_text`]), `type` first and the event's fields in
//! their declared order. The golden tests pin the bytes of every frame.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use vigil_actors::{AgentRecord, Event, Status};

use super::ErrorCode;

/// What the server calls itself in `welcome`.
pub const SERVER_NAME: &str = concat!("vigil/", env!("CARGO_PKG_VERSION"));

/// The answer to `hello`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Welcome {
    /// The protocol version the server speaks.
    pub protocol: u64,
    /// The session's id (the TCP listener's; `None` on the WebSocket).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// The server's name and version (e.g. `vigil/0.1.0`, [`SERVER_NAME`]).
    pub server: String,
    /// The default heartbeat interval, in ms (the TCP listener's; `None` on the WebSocket).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_interval_ms: Option<u64>,
    /// The server's clock (RFC 3339, UTC, milliseconds).
    pub time: String,
    /// The extensions of protocol 1 the client asked for at `hello` that the server grants
    /// (left out when none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
}

/// A frame from the server. The `ref` of the frame it answers is not part of it: the writer
/// adds it ([`ServerFrame::line`]), the reader takes it apart ([`Received`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame<'a> {
    /// The answer to `hello`.
    Welcome(Welcome),
    /// The answer to `ping`.
    Pong {
        /// The server's clock (RFC 3339, UTC, milliseconds).
        time: String,
    },
    /// A frame with a `ref` was taken.
    Ack,
    /// An admin operation's answer.
    Result {
        /// Whether the operation succeeded.
        ok: bool,
        /// The operation's answer.
        data: Value,
    },
    /// An agent is registered (sent once its registration is durable).
    Registered {
        /// The agent's id.
        id: String,
        /// The agent's status now.
        status: Status,
        /// The heartbeat interval the server holds the agent to, in ms.
        heartbeat_interval_ms: u64,
        /// The registration's number: 1 the first time, one more at each registration since.
        incarnation: u64,
    },
    /// An agent left at its connection's request.
    Deregistered {
        /// The agent's id.
        id: String,
    },
    /// The connection lost an agent.
    Evicted {
        /// The agent's id.
        id: String,
        /// Why the connection lost it.
        reason: EvictedReason,
    },
    /// A frame was refused, or something went wrong.
    Error {
        /// What kind of error.
        code: ErrorCode,
        /// What was wrong, for a person.
        message: String,
    },
    /// The fleet as a subscription starts: every agent, the unfinished jobs (with the `jobs`
    /// topic) and the latest counts.
    Snapshot {
        /// The fleet is as of this event's seq; the events after it follow.
        seq: u64,
        /// Every agent the subscription's filter selects.
        agents: Cow<'a, [AgentRecord]>,
        /// The unfinished jobs of those agents (with the `jobs` topic or no topics; else empty).
        jobs: Vec<Value>,
        /// The latest counts.
        stats: Value,
    },
    /// One event of the log (or, with no `seq`, an alert that is not persisted).
    Event(Cow<'a, Event>),
    /// The fleet's counts, sent when they change: the map of counts and `at`.
    Stats(Value),
    /// The subscriber fell behind; its subscription ended after `last_seq`.
    Lagged {
        /// The seq of the last event the subscriber was sent; resume with `since` = this.
        last_seq: u64,
    },
    /// The events after the subscriber's seq are gone; it starts again from a snapshot.
    ResyncRequired {
        /// The oldest seq still retained.
        oldest: u64,
    },
    /// A frame of a later version of the protocol, which this one does not know (read only).
    #[serde(other)]
    Other,
}

/// Why a connection lost an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvictedReason {
    /// Another connection registered it with `takeover`.
    TakenOver,
    /// An operator evicted it.
    Evicted,
    /// A reason of a later version of the protocol (read only).
    #[serde(other)]
    Other,
}

impl ServerFrame<'_> {
    /// The frame as a JSON object, with the `ref` of the frame it answers.
    pub fn to_value(&self, reference: Option<&Value>) -> Value {
        // Every field is a string, a number, a bool or a map with string keys: nothing here
        // can fail to become a `Value`.
        let mut v = serde_json::to_value(self).expect("a server frame is plain JSON");
        if let Some(r) = reference {
            v["ref"] = r.clone();
        }
        v
    }

    /// The frame as text, without a line ending (a WebSocket message, an SSE event's data).
    pub fn text(&self, reference: Option<&Value>) -> String {
        self.to_value(reference).to_string()
    }

    /// The frame as one line (with its line ending).
    pub fn line(&self, reference: Option<&Value>) -> String {
        let mut s = self.text(reference);
        s.push('\n');
        s
    }

    /// An `event` frame as text: `type` first, then the event's fields in their declared
    /// order (no detour through a sorted map: this is written once per event and shared by
    /// every subscriber).
    pub fn event_text(event: &Event) -> serde_json::Result<String> {
        serde_json::to_string(&ServerFrame::Event(Cow::Borrowed(event)))
    }
}

/// A frame as a client reads it: the frame, and the `ref` of the client's frame it answers.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    /// The frame.
    pub frame: ServerFrame<'static>,
    /// The `ref` of the frame answered; `None` if it had none (or the frame answers nothing).
    pub reference: Option<Value>,
}

impl Received {
    /// Reads a frame from its JSON object.
    pub fn from_value(mut value: Value) -> serde_json::Result<Self> {
        let reference = value
            .as_object_mut()
            .and_then(|m| m.remove("ref"))
            .filter(|r| !r.is_null());
        Ok(Received {
            frame: ServerFrame::deserialize(value)?,
            reference,
        })
    }
}

#[cfg(test)]
mod golden;
