//! The protocol's error codes, and a frame that could not be decoded.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use vigil_actors::{AdminError, BeatError, RegisterError, RuntimeError};

/// Error codes of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The line is not a JSON object.
    BadFrame,
    /// The line is longer than the frame limit.
    FrameTooLarge,
    /// The frame's `type` is not one the protocol knows (on HTTP: a method the route does not
    /// take).
    UnknownType,
    /// A required field is absent.
    MissingField,
    /// A field has the wrong type or a value outside its bounds.
    InvalidField,
    /// The first frame was not `hello`.
    HelloRequired,
    /// `hello` asked for a protocol version this server does not speak.
    UnsupportedProtocol,
    /// The token is wrong or missing.
    Unauthorized,
    /// The role may not do this, or an HTTP request names a host or origin that is not allowed.
    Forbidden,
    /// The connection never registered this agent.
    NotRegistered,
    /// Another connection owns this agent.
    NotOwner,
    /// Another live connection owns the id being registered (and `takeover` was not set).
    Conflict,
    /// No agent has this id.
    UnknownAgent,
    /// The connection sends faster than its rate limit; slow down and resend.
    RateLimited,
    /// The server cannot take this now (a queue is full or the store is failing).
    Overloaded,
    /// Something went wrong inside the server.
    Internal,
    /// A code of a later version of the protocol, which this one does not know (read by a
    /// client only; the server never sends it).
    #[serde(other)]
    Other,
}

impl std::fmt::Display for ErrorCode {
    /// The code as the protocol writes it (`not_owner`, ...).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match serde_json::to_value(self) {
            Ok(Value::String(s)) => f.write_str(&s),
            _ => write!(f, "{self:?}"),
        }
    }
}

/// A frame that could not be decoded: the error to answer with (echoing `ref` when the frame
/// had a readable one).
#[derive(Debug, Clone, PartialEq)]
pub struct FrameError {
    /// The error code to answer with.
    pub code: ErrorCode,
    /// What was wrong, for a person.
    pub message: String,
    /// The frame's `ref`, when it could be read; `None` otherwise.
    pub reference: Option<Value>,
}

impl FrameError {
    pub(super) fn new(
        code: ErrorCode,
        message: impl Into<String>,
        reference: Option<Value>,
    ) -> Self {
        Self {
            code,
            message: message.into(),
            reference,
        }
    }
}

// What each of the core's errors is on the wire: the one place these codes are chosen.

impl From<&AdminError> for ErrorCode {
    fn from(e: &AdminError) -> Self {
        match e {
            AdminError::UnknownAgent(_) => ErrorCode::UnknownAgent,
            AdminError::InvalidField(_) => ErrorCode::InvalidField,
            AdminError::Forbidden(_) => ErrorCode::Forbidden,
            AdminError::Unavailable(_) => ErrorCode::Internal,
            AdminError::Overloaded(_) => ErrorCode::Overloaded,
        }
    }
}

impl From<&RegisterError> for ErrorCode {
    fn from(e: &RegisterError) -> Self {
        match e {
            RegisterError::MissingField(_) => ErrorCode::MissingField,
            RegisterError::InvalidField(_) => ErrorCode::InvalidField,
            RegisterError::Unavailable(_) => ErrorCode::Internal,
            RegisterError::Overloaded(_) => ErrorCode::Overloaded,
        }
    }
}

impl From<&BeatError> for ErrorCode {
    /// A connection sends frames for agents it registered: an agent it no longer has is
    /// `not_owner` when someone took it over, `not_registered` when nobody has it. An agent
    /// whose actor is restarting is `internal`; the session says `not_registered` instead once
    /// it has found that the agent left.
    fn from(e: &BeatError) -> Self {
        match e {
            BeatError::Superseded(_) => ErrorCode::NotOwner,
            BeatError::UnknownAgent(_) => ErrorCode::NotRegistered,
            BeatError::NotSupervised(_) => ErrorCode::Internal,
        }
    }
}

impl From<&RuntimeError> for ErrorCode {
    fn from(e: &RuntimeError) -> Self {
        match e {
            RuntimeError::Overloaded(_) => ErrorCode::Overloaded,
            _ => ErrorCode::Internal,
        }
    }
}
