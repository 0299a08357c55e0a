//! The wire protocol, version 1 (`docs/protocol.md`): line framing, and client lines decoded
//! into typed frames or a protocol error with its code.
//!
//! Decoding is in three steps, each with its own error: the line (too long → `frame_too_large`,
//! see [`framing`]), the JSON object (`bad_frame`), then the frame of its `type`
//! (`unknown_type`, `missing_field`, `invalid_field`). Unknown fields are ignored. A frame that
//! fails to decode is answered and changes nothing.

mod beats;
mod error;
pub mod framing;
pub mod limits;
mod server_frame;
#[cfg(test)]
mod tests;

pub use beats::BeatIds;
pub use error::{ErrorCode, FrameError};
pub use server_frame::{EvictedReason, Received, ServerFrame, Welcome, SERVER_NAME};

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use vigil_actors::{AgentId, Filter, Metrics, Reported};

/// The protocol version this server speaks.
pub const PROTOCOL_VERSION: u64 = 1;

/// A connection's role, chosen in `hello`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A supervised agent: registers itself, then sends heartbeats, activity and jobs.
    Agent,
    /// An observer: subscribes to the fleet's events.
    Monitor,
    /// An operator: runs admin operations.
    Admin,
}

impl Role {
    /// The role's name on the wire (`agent`, `monitor`, `admin`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Monitor => "monitor",
            Role::Admin => "admin",
        }
    }
}

/// `hello`: the first frame on a connection; chooses the role and authenticates.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Hello {
    /// The protocol version the client speaks (this server speaks [`PROTOCOL_VERSION`]).
    pub protocol: u64,
    /// What the connection will do.
    pub role: Role,
    /// The token for the role; `None` when none is sent (refused if the role's tokens are
    /// configured).
    #[serde(default)]
    pub token: Option<String>,
    /// The client's free-form name and version (e.g. `my-agent/2.1`), for logs; `None` when
    /// not sent.
    #[serde(default)]
    pub client: Option<String>,
    /// Extensions of protocol 1 the client would use (e.g. [`FEATURE_BEATS`]); `welcome` names
    /// those the server grants. Empty when not sent: plain protocol 1.
    #[serde(default)]
    pub features: Vec<String>,
}

/// The feature that lets an agent connection send `beats`: many healthy heartbeats in one
/// frame.
pub const FEATURE_BEATS: &str = "beats";

/// `register`: the connection takes ownership of an agent, which goes `online`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Register {
    /// The agent's id (1-128 characters of `A-Za-z0-9._:-`).
    #[serde(deserialize_with = "agent_id")]
    pub id: AgentId,
    /// A display name; `None` when not sent.
    #[serde(default)]
    pub name: Option<String>,
    /// The agent's kind, which selects its policy; `None` means `"default"`.
    #[serde(default)]
    pub kind: Option<String>,
    /// Free-form string labels (empty when not sent).
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// What the agent says it can do (empty when not sent).
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// The interval the agent promises between heartbeats, in ms; `None` takes the configured
    /// default. Must lie within the configured minimum and maximum.
    #[serde(default)]
    pub heartbeat_interval_ms: Option<u64>,
    /// Take the agent over from another live connection instead of failing with `conflict`.
    #[serde(default)]
    pub takeover: bool,
}

impl Register {
    /// The registration this frame asks for; `connectionless` when no connection will hold
    /// the agent (it registered over HTTP).
    pub fn registration(self, connectionless: bool) -> vigil_actors::Registration {
        vigil_actors::Registration {
            id: Some(self.id),
            name: self.name,
            kind: self.kind,
            metadata: self.metadata,
            capabilities: self.capabilities,
            heartbeat_interval: self
                .heartbeat_interval_ms
                .map(std::time::Duration::from_millis),
            connectionless,
        }
    }
}

/// `heartbeat`: the agent is alive, with its self-reported health.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Heartbeat {
    /// The agent the heartbeat is for (owned by this connection).
    #[serde(deserialize_with = "agent_id")]
    pub id: AgentId,
    /// The agent's own view of its health (`healthy` when not sent).
    #[serde(default)]
    pub status: Reported,
    /// Numeric figures the agent reports; `None` when not sent.
    #[serde(default)]
    pub metrics: Option<Metrics>,
    /// What the agent is doing now; `None` when not sent.
    #[serde(default)]
    pub activity: Option<String>,
}

/// `beats` (with [`FEATURE_BEATS`]): one healthy heartbeat for each agent, as a `heartbeat`
/// frame with only its `id` would be.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Beats {
    /// The agents (each owned by this connection).
    pub ids: BeatIds,
}

/// `activity`: the agent says what it is doing.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Activity {
    /// The agent (owned by this connection).
    #[serde(deserialize_with = "agent_id")]
    pub id: AgentId,
    /// `idle`, `working`, `tool_calling`, `error`, `completed`, or another short string.
    pub activity: String,
    /// More about the activity; `None` when not sent.
    #[serde(default)]
    pub detail: Option<String>,
}

pub use vigil_actors::JobState;

/// `job`: a job of the agent changed state or progressed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Job {
    /// The agent the job runs on (owned by this connection).
    #[serde(deserialize_with = "agent_id")]
    pub id: AgentId,
    /// The job's id (1-128 bytes).
    pub job: String,
    /// The job's new state.
    pub state: JobState,
    /// How far the job is, from 0 to 1; `None` when not sent.
    #[serde(default)]
    pub progress: Option<f64>,
    /// The job's result (any JSON); `None` when not sent.
    #[serde(default)]
    pub result: Option<Value>,
    /// Why the job failed; `None` when not sent.
    #[serde(default)]
    pub error: Option<String>,
}

/// `deregister`: the agent leaves for good and the connection gives it up.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Deregister {
    /// The agent (owned by this connection).
    #[serde(deserialize_with = "agent_id")]
    pub id: AgentId,
    /// Why it leaves, for the event log; `None` when not sent.
    #[serde(default)]
    pub reason: Option<String>,
}

/// `subscribe`: start (or replace) the connection's subscription to the fleet's events.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Subscribe {
    /// The topics to receive (`agents`, `jobs`, `stats`, `alerts`); `None`: every event and no
    /// `stats` frames.
    #[serde(default)]
    pub topics: Option<Vec<String>>,
    /// Which agents' events to receive (every agent by default).
    #[serde(default)]
    pub filter: Filter,
    /// Replay the retained events with a seq greater than this one first; `None`: live events only.
    #[serde(default)]
    pub since: Option<u64>,
    /// Send a `snapshot` of the fleet first.
    #[serde(default)]
    pub snapshot: bool,
}

/// `admin`: an operator's operation.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Admin {
    /// The operation (`list`, `get`, `events`, `evict`, `set_status`, `maintenance`, `set_policy`,
    /// `stats`, `health_report`).
    pub op: String,
    /// The operation's arguments (`null` when not sent).
    #[serde(default)]
    pub args: Value,
}

/// A decoded client frame.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientFrame {
    /// See [`Hello`].
    Hello(Hello),
    /// See [`Register`].
    Register(Register),
    /// See [`Heartbeat`].
    Heartbeat(Heartbeat),
    /// See [`Beats`].
    Beats(Beats),
    /// See [`Activity`].
    Activity(Activity),
    /// See [`Job`].
    Job(Job),
    /// See [`Deregister`].
    Deregister(Deregister),
    /// `ping`: answered with `pong`; keeps a quiet connection open.
    Ping,
    /// See [`Subscribe`].
    Subscribe(Subscribe),
    /// `unsubscribe`: end the connection's subscription.
    Unsubscribe,
    /// See [`Admin`].
    Admin(Admin),
}

impl ClientFrame {
    /// The roles that may send this frame (`None`: any role, after the handshake).
    pub fn role(&self) -> Option<Role> {
        match self {
            ClientFrame::Hello(_) | ClientFrame::Ping => None,
            ClientFrame::Register(_)
            | ClientFrame::Heartbeat(_)
            | ClientFrame::Beats(_)
            | ClientFrame::Activity(_)
            | ClientFrame::Job(_)
            | ClientFrame::Deregister(_) => Some(Role::Agent),
            ClientFrame::Subscribe(_) | ClientFrame::Unsubscribe => Some(Role::Monitor),
            ClientFrame::Admin(_) => Some(Role::Admin),
        }
    }
}

/// A decoded frame with its `ref`.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// The frame's `ref` (a string or a number), echoed by the reply; `None` when not sent.
    pub reference: Option<Value>,
    /// The frame itself.
    pub body: ClientFrame,
}

fn agent_id<'de, D: serde::Deserializer<'de>>(d: D) -> Result<AgentId, D::Error> {
    let s = String::deserialize(d)?;
    AgentId::new(&s)
        .map_err(|_| serde::de::Error::custom("id must be 1-128 characters of A-Z a-z 0-9 . _ : -"))
}

/// The fields every frame has; a first pass over the line reads only these (the others are
/// skipped, not built), then the frame of that type is read straight from the bytes.
#[derive(Deserialize)]
struct Head {
    /// Present-but-null is kept apart from absent (it is `invalid_field`, not `missing_field`).
    #[serde(rename = "type", default, deserialize_with = "present")]
    ty: Option<Value>,
    #[serde(rename = "ref", default)]
    reference: Option<Value>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

fn typed<T: DeserializeOwned>(
    ty: &str,
    line: &[u8],
    reference: &Option<Value>,
) -> Result<T, FrameError> {
    serde_json::from_slice(line).map_err(|e| {
        let msg = e.to_string();
        let code = if msg.starts_with("missing field") {
            ErrorCode::MissingField
        } else {
            ErrorCode::InvalidField
        };
        FrameError::new(code, format!("{ty}: {msg}"), reference.clone())
    })
}

/// Decodes one line. An empty (or all-whitespace) line is `Ok(None)`: it is ignored.
pub fn decode(line: &[u8]) -> Result<Option<Frame>, FrameError> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    // Checked first: serde would also read a struct from an array.
    if line.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(FrameError::new(
            ErrorCode::BadFrame,
            "a frame must be a JSON object",
            None,
        ));
    }
    let head: Head = serde_json::from_slice(line).map_err(|e| {
        FrameError::new(ErrorCode::BadFrame, format!("not a JSON object: {e}"), None)
    })?;
    let reference = match head.reference {
        None => None,
        Some(r @ (Value::String(_) | Value::Number(_))) => Some(r),
        Some(_) => {
            return Err(FrameError::new(
                ErrorCode::InvalidField,
                "ref must be a string or a number",
                None,
            ))
        }
    };
    let ty = match head.ty {
        Some(Value::String(t)) => t,
        Some(_) => {
            return Err(FrameError::new(
                ErrorCode::InvalidField,
                "type must be a string",
                reference,
            ))
        }
        None => {
            return Err(FrameError::new(
                ErrorCode::MissingField,
                "every frame needs a type",
                reference,
            ))
        }
    };
    let body = match ty.as_str() {
        "hello" => ClientFrame::Hello(typed(&ty, line, &reference)?),
        "register" => ClientFrame::Register(typed(&ty, line, &reference)?),
        "heartbeat" => ClientFrame::Heartbeat(typed(&ty, line, &reference)?),
        "beats" => ClientFrame::Beats(typed(&ty, line, &reference)?),
        "activity" => ClientFrame::Activity(typed(&ty, line, &reference)?),
        "job" => ClientFrame::Job(typed(&ty, line, &reference)?),
        "deregister" => ClientFrame::Deregister(typed(&ty, line, &reference)?),
        "ping" => ClientFrame::Ping,
        "subscribe" => ClientFrame::Subscribe(typed(&ty, line, &reference)?),
        "unsubscribe" => ClientFrame::Unsubscribe,
        "admin" => ClientFrame::Admin(typed(&ty, line, &reference)?),
        other => {
            let shown: String = other.chars().take(64).collect();
            return Err(FrameError::new(
                ErrorCode::UnknownType,
                format!("unknown frame type {shown:?}"),
                reference,
            ));
        }
    };
    Ok(Some(Frame { reference, body }))
}

/// An admin frame's `op` and `args` as the core's request, or the protocol's error. `args`
/// may be left out, or given as an empty object (as a generic client sends it) for an op that
/// takes none.
pub fn admin_request(
    op: &str,
    args: Value,
) -> Result<vigil_actors::AdminRequest, (ErrorCode, String)> {
    let parse = |args: Option<Value>| {
        let mut req = serde_json::Map::new();
        req.insert("op".into(), Value::String(op.into()));
        if let Some(args) = args.filter(|a| !a.is_null()) {
            req.insert("args".into(), args);
        }
        serde_json::from_value::<vigil_actors::AdminRequest>(Value::Object(req))
    };
    let empty = args.as_object().is_some_and(|m| m.is_empty());
    match parse(Some(args)) {
        Ok(req) => Ok(req),
        Err(e) => match empty.then(|| parse(None)) {
            Some(Ok(req)) => Ok(req),
            _ => {
                let msg = e.to_string();
                let code = match msg.starts_with("missing field") {
                    true => ErrorCode::MissingField,
                    false => ErrorCode::InvalidField,
                };
                Err((code, format!("admin {op}: {msg}")))
            }
        },
    }
}

/// The `error` frame for a decoding failure (or any protocol error), as one line.
pub fn error_line(code: ErrorCode, message: &str, reference: Option<&Value>) -> String {
    ServerFrame::Error {
        code,
        message: message.to_string(),
    }
    .line(reference)
}
