//! The protocol's error codes, and a frame that could not be decoded.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Error codes of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadFrame,
    FrameTooLarge,
    UnknownType,
    MissingField,
    InvalidField,
    HelloRequired,
    UnsupportedProtocol,
    Unauthorized,
    Forbidden,
    NotRegistered,
    NotOwner,
    Conflict,
    UnknownAgent,
    RateLimited,
    Overloaded,
    Internal,
}

/// A frame that could not be decoded: the error to answer with (echoing `ref` when the frame
/// had a readable one).
#[derive(Debug, Clone, PartialEq)]
pub struct FrameError {
    pub code: ErrorCode,
    pub message: String,
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
